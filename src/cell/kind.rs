/*!
What a cell is, apart from how it steps: which kind ([`CellKind`], with every per-cell fact the rest of the crate
asks: gate names and labels, whether there is a cell state), its validated weights ([`CellWeights`], in Keras
layout), and which implementation ran it ([`Kernels`]).
*/

use super::Real;
use ndarray::{Array1, Array2};

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

/// One gate block of a cell: its name in the trace and the labels every renderer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Short name, as recorded in the trace: `i`.
    pub name: &'static str,
    /// What it is: `input gate` (shown as `i (input gate)`).
    pub role: &'static str,
    /// The heading of its per-step table: `Input gate i`.
    pub label: &'static str,
    /// The title of its heat map: `input gate`, `candidate c̃`.
    pub chart: &'static str,
    /// The candidate block: Keras's `activation` applies to it, `recurrent_activation` to the others.
    pub candidate: bool,
}

const fn gate(
    name: &'static str,
    role: &'static str,
    label: &'static str,
    chart: &'static str,
    candidate: bool,
) -> Gate {
    Gate {
        name,
        role,
        label,
        chart,
        candidate,
    }
}

const LSTM_GATES: [Gate; 4] = [
    gate("i", "input gate", "Input gate i", "input gate", false),
    gate("f", "forget gate", "Forget gate f", "forget gate", false),
    gate(
        "c",
        "cell candidate",
        "Cell candidate c̃",
        "candidate c̃",
        true,
    ),
    gate("o", "output gate", "Output gate o", "output gate", false),
];
const GRU_GATES: [Gate; 3] = [
    gate("z", "update gate", "Update gate z", "update gate", false),
    gate("r", "reset gate", "Reset gate r", "reset gate", false),
    gate("h", "candidate", "Candidate h̃", "candidate h̃", true),
];
const SIMPLE_GATES: [Gate; 1] = [gate(
    "h",
    "new state",
    "New state h = act(x·W + h·U + b)",
    "new state h",
    false,
)];
const LSTM_NAMES: [&str; 4] = [
    LSTM_GATES[0].name,
    LSTM_GATES[1].name,
    LSTM_GATES[2].name,
    LSTM_GATES[3].name,
];
const GRU_NAMES: [&str; 3] = [GRU_GATES[0].name, GRU_GATES[1].name, GRU_GATES[2].name];
const SIMPLE_NAMES: [&str; 1] = [SIMPLE_GATES[0].name];

impl CellKind {
    /// The gate blocks of the concatenated kernels, in Keras's order.
    pub fn gates(self) -> &'static [Gate] {
        match self {
            CellKind::Lstm => &LSTM_GATES,
            CellKind::Gru => &GRU_GATES,
            CellKind::SimpleRnn => &SIMPLE_GATES,
        }
    }

    /// Number of gate blocks in the concatenated kernels.
    pub fn blocks(self) -> usize {
        self.gates().len()
    }

    /// Short gate names in block order, as used in the trace.
    pub fn gate_names(self) -> &'static [&'static str] {
        match self {
            CellKind::Lstm => &LSTM_NAMES,
            CellKind::Gru => &GRU_NAMES,
            CellKind::SimpleRnn => &SIMPLE_NAMES,
        }
    }

    /// Whether the cell carries a cell state `c` beside `h` (LSTM).
    pub fn has_cell_state(self) -> bool {
        matches!(self, CellKind::Lstm)
    }

    /// Whether the cell has Keras's `reset_after` choice (GRU).
    pub fn has_reset_after(self) -> bool {
        matches!(self, CellKind::Gru)
    }

    /// The name with its article, for messages: `an LSTM`, `a GRU`, `a SimpleRNN`.
    pub fn with_article(self) -> &'static str {
        match self {
            CellKind::Lstm => "an LSTM",
            CellKind::Gru => "a GRU",
            CellKind::SimpleRnn => "a SimpleRNN",
        }
    }

    /// Lower-case name: `lstm`, `gru` or `simple_rnn`.
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
    /// LSTM, GRU or SimpleRNN.
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
    /// LSTM with a projection (PyTorch `proj_size`): (units, proj), `h = (o ⊙ act(c))·P`; the hidden state
    /// then has `proj` values and `recurrent_kernel` is (proj, 4·units).
    pub projection: Option<Array2<T>>,
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
            projection: self.projection.as_ref().map(c),
        }
    }

    /// Width of the hidden state `h` (and of the layer's output): the projection's when there is one.
    pub fn h_units(&self) -> usize {
        self.projection.as_ref().map_or(self.units, |p| p.ncols())
    }

    /// The columns of gate block `k` (0-based, in Keras order).
    pub fn block(&self, k: usize) -> std::ops::Range<usize> {
        k * self.units..(k + 1) * self.units
    }
}

/// Which implementation computed a layer (or, asked of the engine, the best one allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The fused steps of [`crate::cell::fused`] on AVX-512 (float32, default activations).
    Avx512,
    /// The same fused steps on AVX2 with FMA.
    Avx2,
    /// The portable cells on `gemm` products.
    Portable,
}

impl Kernels {
    /// The name `--timings` and the `.npz` metadata report.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Avx512 => "avx512-fused",
            Kernels::Avx2 => "avx2-fused",
            Kernels::Portable => "portable",
        }
    }
}
