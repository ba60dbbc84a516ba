/*!
The Keras `SimpleRNN` step: `h' = act(x·W + h·U + b)`. Its single block is recorded as gate `h` (the new
state), so it traces like the gated cells.
*/

use super::CellWeights;
use super::kernels::matmul;
use super::{Activation, Real, StepOut};
use ndarray::ArrayView2;

/// A SimpleRNN cell: weights plus its activation.
#[derive(Debug, Clone, Copy)]
pub struct SimpleRnnCell<'a, T> {
    /// Validated weights (kind SimpleRnn).
    pub weights: &'a CellWeights<T>,
    /// Keras `activation` (default tanh).
    pub activation: Activation,
}

impl<T: Real> SimpleRnnCell<'_, T> {
    /// Advances a block of sequences by one step: on entry `out.pre` holds `x·W + b` (rows, u); `h` is the
    /// previous state.
    pub fn step(&self, h: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        let StepOut {
            mut pre,
            mut gates,
            h: mut h_new,
            ..
        } = out;
        matmul(
            pre.view_mut(),
            h,
            self.weights.recurrent_kernel.view(),
            true,
        );
        gates.assign(&pre);
        self.activation.apply_rows(gates.view_mut());
        h_new.assign(&gates);
    }
}
