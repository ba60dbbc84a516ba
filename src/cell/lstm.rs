/*!
The Keras LSTM step: `z = x·W + h·U + b`; `i = σr(z_i)`, `f = σr(z_f)`, `c̃ = act(z_c)`, `o = σr(z_o)`;
`c' = f⊙c + i⊙c̃`; `h' = o⊙act(c')`.
*/

use super::{Activation, Real, StepBuffers};
use crate::weights::CellWeights;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, Zip, s};

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
    /// Advances every sequence of the batch by one step.
    ///
    /// `xp` is this step's input projection `x·W + b` (batch, 4u); `h`, `c` the previous state (batch, u).
    /// Writes `buf.pre`, `buf.gates`, `buf.h` and `buf.c`.
    pub fn step(
        &self,
        xp: ArrayView2<T>,
        h: ArrayView2<T>,
        c: ArrayView2<T>,
        buf: &mut StepBuffers<T>,
    ) {
        let u = self.weights.units;
        buf.pre.assign(&xp);
        general_mat_mul(
            T::one(),
            &h,
            &self.weights.recurrent_kernel,
            T::one(),
            &mut buf.pre,
        );
        buf.gates.assign(&buf.pre);
        for k in [0, 1, 3] {
            self.recurrent_activation
                .apply_rows(buf.gates.slice_mut(s![.., k * u..(k + 1) * u]));
        }
        self.activation
            .apply_rows(buf.gates.slice_mut(s![.., 2 * u..3 * u]));

        let g = &buf.gates;
        Zip::from(&mut buf.c)
            .and(c)
            .and(g.slice(s![.., 0..u]))
            .and(g.slice(s![.., u..2 * u]))
            .and(g.slice(s![.., 2 * u..3 * u]))
            .for_each(|c_new, &c_old, &i, &f, &cand| *c_new = f * c_old + i * cand);
        let mut act_c = buf.scratch.slice_mut(s![.., 0..u]);
        act_c.assign(&buf.c);
        self.activation.apply_rows(act_c.view_mut());
        Zip::from(&mut buf.h)
            .and(&act_c)
            .and(g.slice(s![.., 3 * u..4 * u]))
            .for_each(|h_new, &ac, &o| *h_new = o * ac);
    }
}
