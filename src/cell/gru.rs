/*!
The Keras GRU step, both variants (blocks z | r | h; `σr` the recurrent activation, `act` the activation).

`reset_after=True` (Keras 3 default, and PyTorch's layout): `mx = x·W + b_in`, `mh = h·U + b_rec`;
`z = σr(mx_z + mh_z)`, `r = σr(mx_r + mh_r)`, `h̃ = act(mx_h + r⊙mh_h)`.

`reset_after=False` (Keras ≤ 2.2): `z = σr(mx_z + h·U_z)`, `r = σr(mx_r + h·U_r)`, `h̃ = act(mx_h + (r⊙h)·U_h)`.

Update, both: `h' = z⊙h + (1−z)⊙h̃` (Keras's form, not the textbook's swapped one).
*/

use super::{Activation, Real, StepBuffers};
use crate::weights::CellWeights;
use ndarray::linalg::general_mat_mul;
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
    /// Advances every sequence of the batch by one step.
    ///
    /// `xp` is this step's input projection `x·W + b_in` (batch, 3u); `h` the previous state (batch, u).
    /// Writes `buf.pre`, `buf.gates` and `buf.h`.
    pub fn step(&self, xp: ArrayView2<T>, h: ArrayView2<T>, buf: &mut StepBuffers<T>) {
        let w = self.weights;
        let u = w.units;
        let (zr, hh) = (s![.., 0..2 * u], s![.., 2 * u..3 * u]);
        if w.reset_after {
            // scratch = h·U + b_rec, all three blocks.
            match &w.recurrent_bias {
                Some(b) => {
                    let dim = buf.scratch.raw_dim();
                    buf.scratch
                        .assign(&b.broadcast(dim).expect("bias has 3u values"))
                }
                None => buf.scratch.fill(T::zero()),
            }
            general_mat_mul(
                T::one(),
                &h,
                &w.recurrent_kernel,
                T::one(),
                &mut buf.scratch,
            );
            Zip::from(buf.pre.slice_mut(zr))
                .and(xp.slice(zr))
                .and(buf.scratch.slice(zr))
                .for_each(|p, &x, &m| *p = x + m);
            buf.gates.slice_mut(zr).assign(&buf.pre.slice(zr));
            self.activate_zr(buf, u);
            Zip::from(buf.pre.slice_mut(hh))
                .and(xp.slice(hh))
                .and(buf.gates.slice(s![.., u..2 * u]))
                .and(buf.scratch.slice(hh))
                .for_each(|p, &x, &r, &m| *p = x + r * m);
        } else {
            buf.pre.slice_mut(zr).assign(&xp.slice(zr));
            let mut pre_zr = buf.pre.slice_mut(zr);
            general_mat_mul(
                T::one(),
                &h,
                &w.recurrent_kernel.slice(zr),
                T::one(),
                &mut pre_zr,
            );
            buf.gates.slice_mut(zr).assign(&buf.pre.slice(zr));
            self.activate_zr(buf, u);
            // scratch[:, 0..u] = r ⊙ h
            Zip::from(buf.scratch.slice_mut(s![.., 0..u]))
                .and(buf.gates.slice(s![.., u..2 * u]))
                .and(h)
                .for_each(|rh, &r, &hv| *rh = r * hv);
            buf.pre.slice_mut(hh).assign(&xp.slice(hh));
            let rh = buf.scratch.slice(s![.., 0..u]);
            let mut pre_h = buf.pre.slice_mut(hh);
            general_mat_mul(
                T::one(),
                &rh,
                &w.recurrent_kernel.slice(hh),
                T::one(),
                &mut pre_h,
            );
        }
        buf.gates.slice_mut(hh).assign(&buf.pre.slice(hh));
        self.activation.apply_rows(buf.gates.slice_mut(hh));
        Zip::from(&mut buf.h)
            .and(h)
            .and(buf.gates.slice(s![.., 0..u]))
            .and(buf.gates.slice(hh))
            .for_each(|h_new, &h_old, &z, &cand| *h_new = z * h_old + (T::one() - z) * cand);
    }

    fn activate_zr(&self, buf: &mut StepBuffers<T>, u: usize) {
        for k in 0..2 {
            self.recurrent_activation
                .apply_rows(buf.gates.slice_mut(s![.., k * u..(k + 1) * u]));
        }
    }
}
