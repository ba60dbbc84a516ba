/*!
What a run records: for every layer, sequence and processing step, the input row used, every gate's
pre-activation and activated value, the new state, and the layer output; plus the predictions.

Arrays are batch-major, `(sequence, step, …)`, with steps in processing order (`input_index[t]` says which
input row step `t` read: they differ under `go_backwards`). Renderers and writers consume this; it holds no
formatting.
*/

use crate::cell::{Activation, Real};
use crate::weights::CellKind;
use ndarray::{Array2, Array3, ArrayView1, s};

/// The trace of one recurrent layer.
#[derive(Debug, Clone)]
pub struct LayerTrace<T> {
    /// Layer name (`lstm`, `gru`, or the saved model's layer name).
    pub name: String,
    /// LSTM or GRU.
    pub kind: CellKind,
    /// State size.
    pub units: usize,
    /// Input features per step.
    pub features: usize,
    /// Keras `activation`.
    pub activation: Activation,
    /// Keras `recurrent_activation`.
    pub recurrent_activation: Activation,
    /// GRU: whether the reset gate was applied after the recurrent product; `None` for LSTM.
    pub reset_after: Option<bool>,
    /// Whether the sequence was processed last step first.
    pub go_backwards: bool,
    /// Whether each sequence started from the previous sequence's final state.
    pub carry_state: bool,
    /// For processing step `t`, the input row it read.
    pub input_index: Vec<usize>,
    /// The layer's input, (sequences, timesteps, features), in input (time) order.
    pub x: Array3<T>,
    /// Pre-activations, (sequences, steps, blocks·units), blocks in gate order.
    pub pre: Array3<T>,
    /// Activated gates, same layout as `pre`.
    pub gates: Array3<T>,
    /// Hidden state after each step, (sequences, steps, units).
    pub h: Array3<T>,
    /// Cell state after each step (LSTM only).
    pub c: Option<Array3<T>>,
    /// The layer's output after each step (Keras `return_sequences` output, processing order).
    pub out: Array3<T>,
    /// The hidden state each sequence started from, (sequences, units).
    pub h0: Array2<T>,
    /// The cell state each sequence started from (LSTM only).
    pub c0: Option<Array2<T>>,
    /// (sequences, steps): true where the step was masked and the state carried through unchanged.
    pub masked: Array2<bool>,
}

impl<T: Real> LayerTrace<T> {
    /// Number of sequences.
    pub fn sequences(&self) -> usize {
        self.h.shape()[0]
    }

    /// Number of processing steps.
    pub fn steps(&self) -> usize {
        self.h.shape()[1]
    }

    /// The activated values of gate block `k` at (sequence, step).
    pub fn gate(&self, seq: usize, t: usize, k: usize) -> ArrayView1<'_, T> {
        self.gates
            .slice(s![seq, t, k * self.units..(k + 1) * self.units])
    }

    /// The pre-activation of gate block `k` at (sequence, step).
    pub fn pre_gate(&self, seq: usize, t: usize, k: usize) -> ArrayView1<'_, T> {
        self.pre
            .slice(s![seq, t, k * self.units..(k + 1) * self.units])
    }

    /// The input row read at processing step `t` of `seq`.
    pub fn x_at(&self, seq: usize, t: usize) -> ArrayView1<'_, T> {
        self.x.slice(s![seq, self.input_index[t], ..])
    }

    /// The hidden state before step `t` of `seq`.
    pub fn h_prev(&self, seq: usize, t: usize) -> ArrayView1<'_, T> {
        if t == 0 {
            self.h0.slice(s![seq, ..])
        } else {
            self.h.slice(s![seq, t - 1, ..])
        }
    }

    /// The cell state before step `t` of `seq` (LSTM).
    pub fn c_prev(&self, seq: usize, t: usize) -> Option<ArrayView1<'_, T>> {
        let c = self.c.as_ref()?;
        let c0 = self.c0.as_ref()?;
        Some(if t == 0 {
            c0.slice(s![seq, ..])
        } else {
            c.slice(s![seq, t - 1, ..])
        })
    }

    /// The layer's last output for every sequence, (sequences, units): what `return_sequences=False` returns.
    pub fn last_output(&self) -> Array2<T> {
        let t = self.steps() - 1;
        self.out.slice(s![.., t, ..]).to_owned()
    }
}

/// A whole run: the recurrent layers in order, then what the head made of the last one.
#[derive(Debug, Clone)]
pub struct Trace<T> {
    /// One entry per recurrent layer.
    pub layers: Vec<LayerTrace<T>>,
    /// The model's output: the Dense head applied to the last output, or the last output itself.
    pub predictions: Array2<T>,
    /// The Dense head's activation, when there is a head.
    pub dense_activation: Option<Activation>,
}
