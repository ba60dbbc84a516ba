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

pub use crate::cell::{CellKind, CellWeights};
pub use dense::DenseWeights;
pub use sources::{NamedArrays, SourceMeta, load_arrays};

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
