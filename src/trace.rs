/*!
What a run records: for every layer, sequence and processing step, the input row used, every gate's
pre-activation and activated value, the new state, and the layer output; plus the predictions.

Per-step arrays are **time-major**, `(step, sequence, …)`, steps in processing order (`input_index[t]` says
which input row step `t` read: they differ under `go_backwards`): each step's results are one contiguous
block, which is how the engine writes them without copying. Use the accessors for `(sequence, step)` views.
What was not recorded (`--record states|none`) is `None`. Renderers and writers consume this; it holds no
formatting.
*/

use crate::cell::{Activation, CellKind, Real};
use ndarray::{Array2, Array3, ArrayView1, s};

/// What a run keeps of each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Activated gates.
    pub gates: bool,
    /// Pre-activations.
    pub pre: bool,
    /// States h, c and the layer output.
    pub states: bool,
    /// With `states`: keep the cell state `c` of every step but not `h`'s nor the output's (the final states
    /// and last output are kept regardless). What the backward pass of an LSTM that returns only its last
    /// output reads: it saves one recorded array of the size of `c`.
    pub cell_only: bool,
}

impl Record {
    /// What either of two records keeps.
    pub fn union(self, other: Record) -> Record {
        Record {
            gates: self.gates || other.gates,
            pre: self.pre || other.pre,
            states: self.states || other.states,
            cell_only: self.cell_only && other.cell_only,
        }
    }

    /// Everything.
    pub const ALL: Record = Record {
        gates: true,
        pre: true,
        states: true,
        cell_only: false,
    };
    /// What a backward pass reads: everything, but an LSTM that returns only its last output keeps its `c`
    /// and not its `h` ([`Record::cell_only`]; the engine's caller decides where that applies).
    pub const BACKWARD: Record = Record {
        gates: true,
        pre: true,
        states: true,
        cell_only: true,
    };
    /// Gates and states, no pre-activations.
    pub const GATES: Record = Record {
        gates: true,
        pre: false,
        states: true,
        cell_only: false,
    };
    /// States and outputs, no gates.
    pub const STATES: Record = Record {
        gates: false,
        pre: false,
        states: true,
        cell_only: false,
    };
    /// Only what the predictions need.
    pub const NONE: Record = Record {
        gates: false,
        pre: false,
        states: false,
        cell_only: false,
    };
}

pub use crate::cell::Kernels;

/// A layer's recorded gates as the engine writes them: one `(steps, sequences, units)` array per gate block,
/// in gate order, each in standard layout (empty where not recorded). [`LayerTrace`] holds the same values
/// side by side; a backward pass reads these, which need no copy.
#[derive(Debug, Clone, Default)]
pub struct GateBlocks<T> {
    /// Pre-activations, one array per gate block.
    pub pre: Vec<Array3<T>>,
    /// Activated gates, one array per gate block.
    pub gates: Vec<Array3<T>>,
}

/// The trace of one recurrent layer.
#[derive(Debug, Clone)]
pub struct LayerTrace<T> {
    /// Layer name (`lstm`, `gru`, or the saved model's layer name).
    pub name: String,
    /// LSTM, GRU or SimpleRNN.
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
    /// Pre-activations, (steps, sequences, blocks·units), blocks in gate order.
    pub pre: Option<Array3<T>>,
    /// Activated gates, same layout as `pre`.
    pub gates: Option<Array3<T>>,
    /// Hidden state after each step, (steps, sequences, units).
    pub h: Option<Array3<T>>,
    /// Cell state after each step (LSTM only), (steps, sequences, units).
    pub c: Option<Array3<T>>,
    /// The layer's output after each step (Keras `return_sequences` output), (steps, sequences, units).
    pub out: Option<Array3<T>>,
    /// (steps, sequences): true where the step was masked and the state carried through unchanged.
    pub masked: Array2<bool>,
    /// The hidden state each sequence started from, (sequences, units).
    pub h0: Array2<T>,
    /// The cell state each sequence started from (LSTM only).
    pub c0: Option<Array2<T>>,
    /// The output after the last step, (sequences, units): what `return_sequences=False` returns.
    pub last_output: Array2<T>,
    /// The final hidden state, (sequences, units).
    pub final_h: Array2<T>,
    /// The final cell state (LSTM).
    pub final_c: Option<Array2<T>>,
    /// The implementation that computed it.
    pub kernels: Kernels,
    /// The Keras dtype policy the layer computed under, each op rounded to its compute type
    /// ([`crate::cell::rounding`]); `None`: in the run's own type (float32 or float64).
    pub policy: Option<crate::cell::DtypePolicy>,
}

impl<T: Real> LayerTrace<T> {
    /// Number of sequences.
    pub fn sequences(&self) -> usize {
        self.x.shape()[0]
    }

    /// Number of processing steps.
    pub fn steps(&self) -> usize {
        self.input_index.len()
    }

    /// True when gates and states were recorded (tables and JSON need both).
    pub fn is_complete(&self) -> bool {
        self.gates.is_some() && self.pre.is_some() && self.h.is_some() && self.out.is_some()
    }

    fn row<'a>(a: &'a Option<Array3<T>>, what: &str, seq: usize, t: usize) -> ArrayView1<'a, T> {
        match a {
            Some(a) => a.slice(s![t, seq, ..]),
            None => panic!("{what} was not recorded (check LayerTrace::is_complete first)"),
        }
    }

    /// The activated values of gate block `k` at (sequence, step).
    pub fn gate(&self, seq: usize, t: usize, k: usize) -> ArrayView1<'_, T> {
        Self::row(&self.gates, "gates", seq, t).slice_move(s![k * self.units..(k + 1) * self.units])
    }

    /// The pre-activation of gate block `k` at (sequence, step).
    pub fn pre_gate(&self, seq: usize, t: usize, k: usize) -> ArrayView1<'_, T> {
        Self::row(&self.pre, "pre-activations", seq, t)
            .slice_move(s![k * self.units..(k + 1) * self.units])
    }

    /// The hidden state after step `t` of `seq`.
    pub fn h_at(&self, seq: usize, t: usize) -> ArrayView1<'_, T> {
        Self::row(&self.h, "h", seq, t)
    }

    /// The cell state after step `t` of `seq` (LSTM).
    pub fn c_at(&self, seq: usize, t: usize) -> Option<ArrayView1<'_, T>> {
        self.c.as_ref().map(|c| c.slice(s![t, seq, ..]))
    }

    /// The layer output after step `t` of `seq`.
    pub fn out_at(&self, seq: usize, t: usize) -> ArrayView1<'_, T> {
        Self::row(&self.out, "outputs", seq, t)
    }

    /// Whether step `t` of `seq` was masked.
    pub fn is_masked(&self, seq: usize, t: usize) -> bool {
        self.masked[[t, seq]]
    }

    /// The input row read at processing step `t` of `seq`.
    pub fn x_at(&self, seq: usize, t: usize) -> ArrayView1<'_, T> {
        self.x.slice(s![seq, self.input_index[t], ..])
    }

    /// The hidden state before step `t` of `seq`.
    pub fn h_prev(&self, seq: usize, t: usize) -> ArrayView1<'_, T> {
        if t == 0 {
            self.h0.row(seq)
        } else {
            self.h_at(seq, t - 1)
        }
    }

    /// The cell state before step `t` of `seq` (LSTM).
    pub fn c_prev(&self, seq: usize, t: usize) -> Option<ArrayView1<'_, T>> {
        if t == 0 {
            self.c0.as_ref().map(|c| c.row(seq))
        } else {
            self.c_at(seq, t - 1)
        }
    }
}

impl<T: Real> LayerTrace<T> {
    /// The same trace restricted to sequences `rows` (in that order).
    pub fn select_sequences(&self, rows: &[usize]) -> LayerTrace<T> {
        use ndarray::Axis;
        let s3 = |a: &Option<Array3<T>>| a.as_ref().map(|a| a.select(Axis(1), rows));
        LayerTrace {
            x: self.x.select(Axis(0), rows),
            pre: s3(&self.pre),
            gates: s3(&self.gates),
            h: s3(&self.h),
            c: s3(&self.c),
            out: s3(&self.out),
            masked: if self.masked.nrows() == self.steps() {
                self.masked.select(Axis(1), rows)
            } else {
                self.masked.clone()
            },
            h0: self.h0.select(Axis(0), rows),
            c0: self.c0.as_ref().map(|c| c.select(Axis(0), rows)),
            last_output: self.last_output.select(Axis(0), rows),
            final_h: self.final_h.select(Axis(0), rows),
            final_c: self.final_c.as_ref().map(|c| c.select(Axis(0), rows)),
            ..self.clone()
        }
    }
}

/// What layers computed in, for headers and metadata: the dtype policies they computed under
/// (`mixed_float16`; several joined with `+`), else the run's type (`float32`, `float64`).
pub fn precision_of<T: Real>(layers: &[LayerTrace<T>]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for p in layers.iter().filter_map(|l| l.policy) {
        if !names.contains(&p.name()) {
            names.push(p.name());
        }
    }
    if names.is_empty() {
        T::NAME.to_string()
    } else {
        names.join("+")
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
