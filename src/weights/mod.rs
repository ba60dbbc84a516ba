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
pub mod onnx;
pub mod pytorch;
pub mod sources;

use crate::cell::Real;
use ndarray::{Array1, Array2};

pub use dense::DenseWeights;
pub use sources::{NamedArrays, SourceMeta, load_arrays};

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

/// The layout a weights file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `kernel`, `recurrent_kernel`, `bias` (or `get_weights()` order).
    Keras,
    /// `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, …
    Pytorch,
    /// ONNX initializers `W`, `R`, `B`.
    Onnx,
}

impl Layout {
    /// Recognises a layout by its array names.
    pub fn detect(src: &NamedArrays) -> Layout {
        if pytorch::looks_like(src) {
            Layout::Pytorch
        } else if onnx::looks_like(src) {
            Layout::Onnx
        } else {
            Layout::Keras
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Keras => "Keras",
            Layout::Pytorch => "PyTorch",
            Layout::Onnx => "ONNX",
        }
    }
}

/// How to read a weights file: layout (None: recognise it), which layer and direction, `reset_after`.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// The layout, or `None` to recognise it from the array names.
    pub layout: Option<Layout>,
    /// Layer of a multi-layer PyTorch state dict.
    pub layer: usize,
    /// The backward direction (PyTorch `_reverse`, ONNX direction 1).
    pub reverse: bool,
    /// GRU `reset_after` (for ONNX: `linear_before_reset`).
    pub reset_after: keras::ResetAfter,
}

/// Reads one cell's weights from `src` in whichever layout it is, converting to Keras layout once.
pub fn read_cell(
    kind: CellKind,
    src: &NamedArrays,
    o: ReadOptions,
) -> crate::Result<(CellWeights<f64>, Layout)> {
    let layout = o.layout.unwrap_or_else(|| Layout::detect(src));
    let usage = |m: &str| Err(crate::Error::usage(m));
    match layout {
        Layout::Keras => {
            if o.layer != 0 || o.reverse {
                return usage(
                    "--layer and --reverse select from PyTorch or ONNX weights; these weights are in Keras layout",
                );
            }
            Ok((keras::from_arrays(kind, src, o.reset_after)?, layout))
        }
        Layout::Pytorch => {
            if o.reset_after == keras::ResetAfter::False {
                return usage(
                    "PyTorch's GRU is reset_after=True; --reset-after false does not apply",
                );
            }
            Ok((
                pytorch::from_state_dict(kind, src, o.layer, o.reverse)?,
                layout,
            ))
        }
        Layout::Onnx => {
            if o.layer != 0 {
                return usage(
                    "--layer selects from PyTorch state dicts; an ONNX node holds one layer",
                );
            }
            let lbr = o.reset_after == keras::ResetAfter::True;
            Ok((onnx::from_onnx(kind, src, o.reverse, lbr)?, layout))
        }
    }
}
