/*!
The Keras GRU step, both variants (blocks z | r | h; `σr` the recurrent activation, `act` the activation).

`reset_after=True` (Keras 3 default, and PyTorch's layout): `mx = x·W + b_in`, `mh = h·U + b_rec`;
`z = σr(mx_z + mh_z)`, `r = σr(mx_r + mh_r)`, `h̃ = act(mx_h + r⊙mh_h)`.

`reset_after=False` (Keras ≤ 2.2): `z = σr(mx_z + h·U_z)`, `r = σr(mx_r + h·U_r)`, `h̃ = act(mx_h + (r⊙h)·U_h)`.

Update, both: `h' = z⊙h + (1−z)⊙h̃` (Keras's form, not the textbook's swapped one).
*/

use super::CellWeights;
use super::kernels::matmul;
use super::{Activation, Real, StepOut};
use ndarray::{ArrayView2, Zip, s};

/// A GRU cell: weights plus the two activations.
#[derive(Debug, Clone, Copy)]
pub struct GruCell<'a, T> {
    /// Validated weights (kind GRU); `reset_after` and the recurrent bias are in here.
    pub weights: &'a CellWeights<T>,
    /// Applied to the candidate (Keras `activation`, default tanh).
    pub activation: Activation,
    /// Applied to the z and r gates (Keras `recurrent_activation`, default sigmoid).
    pub recurrent_activation: Activation,
}

impl<T: Real> GruCell<'_, T> {
    /// Advances a block of sequences by one step.
    ///
    /// On entry `out.pre` holds this step's input projection `x·W + b_in` (rows, 3u), which the step turns
    /// into the pre-activations in place; `h` is the previous state (rows, u).
    pub fn step(&self, h: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        let w = self.weights;
        let u = w.units;
        let StepOut {
            mut pre,
            mut gates,
            h: mut h_new,
            mut scratch,
            ..
        } = out;
        let (zr, hh) = (s![.., 0..2 * u], s![.., 2 * u..3 * u]);
        if w.reset_after {
            // scratch = h·U + b_rec, all three blocks.
            match &w.recurrent_bias {
                Some(b) => scratch.rows_mut().into_iter().for_each(|mut r| r.assign(b)),
                None => scratch.fill(T::zero()),
            }
            matmul(scratch.view_mut(), h, w.recurrent_kernel.view(), true);
            Zip::from(pre.slice_mut(zr))
                .and(scratch.slice(zr))
                .for_each(|p, &m| *p = *p + m);
            gates.slice_mut(zr).assign(&pre.slice(zr));
            self.activate_zr(&mut gates, u);
            Zip::from(pre.slice_mut(hh))
                .and(gates.slice(s![.., u..2 * u]))
                .and(scratch.slice(hh))
                .for_each(|p, &r, &m| *p = *p + r * m);
        } else {
            matmul(pre.slice_mut(zr), h, w.recurrent_kernel.slice(zr), true);
            gates.slice_mut(zr).assign(&pre.slice(zr));
            self.activate_zr(&mut gates, u);
            // scratch[:, 0..u] = r ⊙ h
            Zip::from(scratch.slice_mut(s![.., 0..u]))
                .and(gates.slice(s![.., u..2 * u]))
                .and(h)
                .for_each(|rh, &r, &hv| *rh = r * hv);
            matmul(
                pre.slice_mut(hh),
                scratch.slice(s![.., 0..u]),
                w.recurrent_kernel.slice(hh),
                true,
            );
        }
        gates.slice_mut(hh).assign(&pre.slice(hh));
        self.activation.apply_rows(gates.slice_mut(hh));
        Zip::from(&mut h_new)
            .and(h)
            .and(gates.slice(s![.., 0..u]))
            .and(gates.slice(hh))
            .for_each(|hn, &ho, &z, &cand| *hn = z * ho + (T::one() - z) * cand);
    }

    fn activate_zr(&self, gates: &mut ndarray::ArrayViewMut2<'_, T>, u: usize) {
        if self.recurrent_activation.is_elementwise() {
            self.recurrent_activation
                .apply_rows(gates.slice_mut(s![.., 0..2 * u]));
        } else {
            for k in 0..2 {
                self.recurrent_activation
                    .apply_rows(gates.slice_mut(s![.., k * u..(k + 1) * u]));
            }
        }
    }
}
