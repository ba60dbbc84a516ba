/*!
Validated cell weights, and the loaders that produce them.

[`load_arrays`] reads any supported container into named arrays ([`sources`]); [`keras`] gives them meaning
(which array is the kernel, which gate block is which) and checks every shape once. The result,
[`CellWeights`], is in the one layout the cell math knows: Keras's row-vector layout with blocks in
Keras's gate order (LSTM i|f|c|o, GRU z|r|h). Layout conversions from other frameworks live in this module
and nowhere else.
*/

pub mod convention;
pub mod dense;
pub mod keras;
pub mod pytorch;
pub mod sources;

use crate::cell::Real;
use ndarray::{Array1, Array2};

pub use dense::DenseWeights;
pub use sources::{NamedArrays, load_arrays};

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Long short-term memory: gates i, f, c (candidate), o; state (h, c).
    Lstm,
    /// Gated recurrent unit: gates z, r, h (candidate); state h.
    Gru,
    /// Keras `SimpleRNN`: `h' = act(x·W + h·U + b)`; its one block is recorded as gate `h`.
    #[serde(rename = "simple_rnn")]
    SimpleRnn,
}

impl CellKind {
    /// Number of gate blocks in the concatenated kernels.
    pub fn blocks(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::SimpleRnn => 1,
        }
    }

    /// Short gate names in block order, as used in the trace.
    pub fn gate_names(self) -> &'static [&'static str] {
        match self {
            CellKind::Lstm => &["i", "f", "c", "o"],
            CellKind::Gru => &["z", "r", "h"],
            CellKind::SimpleRnn => &["h"],
        }
    }

    /// Lower-case name: `lstm` or `gru`.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
            CellKind::SimpleRnn => "simple_rnn",
        }
    }

    /// The name people write: `LSTM`, `GRU`, `SimpleRNN`.
    pub fn display_name(self) -> &'static str {
        match self {
            CellKind::Lstm => "LSTM",
            CellKind::Gru => "GRU",
            CellKind::SimpleRnn => "SimpleRNN",
        }
    }

    /// The other cell, for "these weights fit a GRU" hints.
    pub fn other(self) -> CellKind {
        match self {
            CellKind::Lstm => CellKind::Gru,
            CellKind::Gru => CellKind::Lstm,
            CellKind::SimpleRnn => CellKind::SimpleRnn,
        }
    }
}

/// One recurrent layer's weights, validated, in Keras layout.
#[derive(Debug, Clone)]
pub struct CellWeights<T> {
    /// LSTM or GRU.
    pub kind: CellKind,
    /// Number of units (the state size).
    pub units: usize,
    /// Number of input features.
    pub features: usize,
    /// (features, blocks·units): `x·W`.
    pub kernel: Array2<T>,
    /// (units, blocks·units): `h·U`.
    pub recurrent_kernel: Array2<T>,
    /// (blocks·units): the input-side bias (the only bias of an LSTM or a `reset_after=False` GRU).
    pub bias: Option<Array1<T>>,
    /// (blocks·units): the recurrent-side bias of a `reset_after=True` GRU (row 1 of Keras's (2, 3u) bias).
    pub recurrent_bias: Option<Array1<T>>,
    /// GRU only: whether the reset gate is applied after the recurrent product (Keras 3 default).
    pub reset_after: bool,
}

impl<T: Real> CellWeights<T> {
    /// Converts the element type (e.g. from the f64 the loaders produce to the f32 the frameworks use).
    pub fn cast<U: Real>(&self) -> CellWeights<U> {
        let c = |a: &Array2<T>| a.mapv(|v| U::lit(v.to_f()));
        let c1 = |a: &Array1<T>| a.mapv(|v| U::lit(v.to_f()));
        CellWeights {
            kind: self.kind,
            units: self.units,
            features: self.features,
            kernel: c(&self.kernel),
            recurrent_kernel: c(&self.recurrent_kernel),
            bias: self.bias.as_ref().map(c1),
            recurrent_bias: self.recurrent_bias.as_ref().map(c1),
            reset_after: self.reset_after,
        }
    }

    /// The columns of gate block `k` (0-based, in Keras order).
    pub fn block(&self, k: usize) -> std::ops::Range<usize> {
        k * self.units..(k + 1) * self.units
    }
}
