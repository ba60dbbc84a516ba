/*!
The Keras LSTM step: `z = x·W + h·U + b`; `i = σr(z_i)`, `f = σr(z_f)`, `c̃ = act(z_c)`, `o = σr(z_o)`;
`c' = f⊙c + i⊙c̃`; `h' = o⊙act(c')`, or with a projection (PyTorch `proj_size`) `h' = (o⊙act(c'))·P`, so
that `h` has `proj` values while `c` and the gates have `units`.
*/

use super::CellWeights;
use super::kernels::matmul;
use super::{Activation, Real, StepOut};
use ndarray::ArrayView2;

/// An LSTM cell: weights plus the two activations.
#[derive(Debug, Clone, Copy)]
pub struct LstmCell<'a, T> {
    /// Validated weights (kind LSTM).
    pub weights: &'a CellWeights<T>,
    /// Applied to the candidate and to the new cell state (Keras `activation`, default tanh).
    pub activation: Activation,
    /// Applied to the i, f and o gates (Keras `recurrent_activation`, default sigmoid).
    pub recurrent_activation: Activation,
}

impl<T: Real> LstmCell<'_, T> {
    /// Advances a block of sequences by one step.
    ///
    /// On entry `out.pre` holds this step's input projection `x·W + b` (rows, 4u); the step adds `h·U`
    /// to it in place. `h`, `c` are the previous state (rows, u), `h` (rows, proj) with a projection. All views are row-major with contiguous
    /// rows (the engine builds them so).
    pub fn step(&self, h: ArrayView2<'_, T>, c: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        let u = self.weights.units;
        let StepOut {
            mut pre,
            mut gates,
            h: mut h_new,
            c: mut c_new,
            mut scratch,
        } = out;
        matmul(
            pre.view_mut(),
            h,
            self.weights.recurrent_kernel.view(),
            true,
        );
        let (ra, act) = (self.recurrent_activation, self.activation);
        for r in 0..pre.nrows() {
            let (p, g) = (pre.row(r), gates.row_mut(r));
            let (Some(p), Some(g)) = (p.as_slice(), g.into_slice()) else {
                unreachable!("step buffers have contiguous rows")
            };
            if ra.is_elementwise() {
                ra.apply_into(&p[..2 * u], &mut g[..2 * u]);
            } else {
                ra.apply_into(&p[..u], &mut g[..u]);
                ra.apply_into(&p[u..2 * u], &mut g[u..2 * u]);
            }
            act.apply_into(&p[2 * u..3 * u], &mut g[2 * u..3 * u]);
            ra.apply_into(&p[3 * u..], &mut g[3 * u..]);
            let (ig, rest) = g.split_at(u);
            let (fg, rest) = rest.split_at(u);
            let (cg, og) = rest.split_at(u);
            let (Some(c_old), Some(cn), Some(hn), Some(ac)) = (
                c.row(r).to_slice(),
                c_new.row_mut(r).into_slice(),
                h_new.row_mut(r).into_slice(),
                scratch.row_mut(r).into_slice(),
            ) else {
                unreachable!("state buffers have contiguous rows")
            };
            for j in 0..u {
                cn[j] = fg[j] * c_old[j] + ig[j] * cg[j];
            }
            let ac = &mut ac[..u];
            act.apply_into(cn, ac);
            match &self.weights.projection {
                None => {
                    for j in 0..u {
                        hn[j] = og[j] * ac[j];
                    }
                }
                Some(p) => {
                    // m = o ⊙ act(c') (kept in the scratch row), then h' = m·P.
                    for j in 0..u {
                        ac[j] = og[j] * ac[j];
                    }
                    for (k, hk) in hn.iter_mut().enumerate() {
                        *hk = ac
                            .iter()
                            .zip(p.column(k).iter())
                            .fold(T::zero(), |s, (&m, &w)| s + m * w);
                    }
                }
            }
        }
    }
}
