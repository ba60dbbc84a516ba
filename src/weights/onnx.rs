/*!
ONNX's LSTM / GRU initializers, converted once, at load, to the Keras layout.

`W` (directions, G·H, input), `R` (directions, G·H, H), `B` (directions, 2·G·H: input biases, then recurrent
biases); `--reverse` picks direction 1. LSTM gates are stored i, o, f, c (Keras: i, f, c, o); GRU gates z, r,
h (as Keras). Biases: an LSTM's two add up. A GRU with `linear_before_reset=1` (what PyTorch exports) is
Keras's `reset_after=True`, with the biases kept apart; with ONNX's default `linear_before_reset=0` the
recurrent bias sits outside the reset product, so both add into Keras's `reset_after=False` input bias.
Peephole LSTMs (`P`) are refused.
*/

use super::{CellKind, CellWeights, NamedArrays};
use crate::error::Result;
use crate::io::RawArray;
use ndarray::{Array1, Array2};

fn find<'a>(src: &'a NamedArrays, name: &str, pos: usize) -> Option<&'a RawArray> {
    if src.positional {
        src.arrays.get(pos).map(|(_, a)| a)
    } else {
        src.arrays
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, a)| a)
    }
}

/// Converts direction `reverse as usize` of ONNX weights for `kind`; `linear_before_reset` is the GRU
/// attribute (ignored for LSTM).
pub fn from_onnx(
    kind: CellKind,
    src: &NamedArrays,
    reverse: bool,
    linear_before_reset: bool,
) -> Result<CellWeights<f64>> {
    if find(src, "P", 3).is_some_and(|p| p.ndim() == 2) && !src.positional {
        return Err(src.error("holds peephole weights P: LSTMs with peepholes are not supported"));
    }
    let w = find(src, "W", 0).ok_or_else(|| {
        src.error(format!(
            "needs ONNX arrays W, R (and B); found: {}",
            src.names()
        ))
    })?;
    let r = find(src, "R", 1).ok_or_else(|| {
        src.error(format!(
            "needs ONNX arrays W, R (and B); found: {}",
            src.names()
        ))
    })?;
    let b = find(src, "B", 2);
    let g = kind.blocks();
    let cell = kind.display_name();
    let dir = reverse as usize;
    if r.ndim() != 3 || r.shape[1] != g * r.shape[2] || r.shape[2] == 0 {
        return Err(src.error(format!(
            "R has shape {}; expected (directions, {g} × hidden, hidden) for an ONNX {cell}",
            r.shape_str()
        )));
    }
    let (dirs, hidden) = (r.shape[0], r.shape[2]);
    if dir >= dirs {
        return Err(src.error(format!(
            "--reverse needs 2 directions; R has shape {}",
            r.shape_str()
        )));
    }
    if w.ndim() != 3 || w.shape[0] != dirs || w.shape[1] != g * hidden || w.shape[2] == 0 {
        return Err(src.error(format!(
            "W has shape {}; expected ({dirs}, {}, input_size) for an ONNX {cell} with hidden size {hidden}",
            w.shape_str(),
            g * hidden
        )));
    }
    if let Some(b) = b.filter(|b| b.shape != [dirs, 2 * g * hidden]) {
        return Err(src.error(format!(
            "B has shape {}; expected ({dirs}, {})",
            b.shape_str(),
            2 * g * hidden
        )));
    }
    let input = w.shape[2];
    // Keras block k holds ONNX block order[k].
    let order: &[usize] = match kind {
        CellKind::Lstm => &[0, 2, 3, 1],
        CellKind::Gru => &[0, 1, 2],
        CellKind::SimpleRnn => &[0],
    };
    let gh = g * hidden;
    let kernel_of = |a: &RawArray, cols: usize| {
        Array2::from_shape_fn((cols, gh), |(i, j)| {
            a.data[dir * gh * cols + (order[j / hidden] * hidden + j % hidden) * cols + i]
        })
    };
    let bias_part = |b: &RawArray, part: usize| {
        Array1::from_shape_fn(gh, |j| {
            b.data[dir * 2 * gh + part * gh + order[j / hidden] * hidden + j % hidden]
        })
    };
    let reset_after = kind.has_reset_after() && linear_before_reset;
    let (bias, recurrent_bias) = match b {
        None => (None, None),
        Some(b) if reset_after => (Some(bias_part(b, 0)), Some(bias_part(b, 1))),
        Some(b) => (Some(bias_part(b, 0) + bias_part(b, 1)), None),
    };
    Ok(CellWeights {
        kind,
        units: hidden,
        features: input,
        kernel: kernel_of(w, input),
        recurrent_kernel: kernel_of(r, hidden),
        bias,
        recurrent_bias,
        reset_after,
        projection: None,
    })
}

/// True when the arrays are named like ONNX initializers: `W` and `R`, three-dimensional.
pub fn looks_like(src: &NamedArrays) -> bool {
    !src.positional
        && ["W", "R"].iter().all(|n| {
            src.arrays
                .iter()
                .any(|(k, a)| k.eq_ignore_ascii_case(n) && a.ndim() == 3)
        })
}
