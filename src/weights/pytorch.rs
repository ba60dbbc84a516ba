/*!
PyTorch's `nn.LSTM` / `nn.GRU` state dicts, converted once, at load, to the Keras layout the cells use.

- `weight_ih_l{k}` (G·H, in) and `weight_hh_l{k}` (G·H, H) are transposed into `kernel` and `recurrent_kernel`.
- LSTM gate order i, f, g, o is Keras's i, f, c, o; the two biases add into one (`b_ih + b_hh`).
- GRU gate order r, z, n becomes Keras's z, r, h; the biases stay apart as Keras's `reset_after=True` (2, 3H)
  bias (row 0 `b_ih`, row 1 `b_hh`), which is exactly PyTorch's `n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))`.
- `_l{k}` picks the layer, `_reverse` the backward direction. `proj_size` LSTMs (`weight_hr_l{k}`) are refused.
*/

use super::{CellKind, CellWeights, NamedArrays};
use crate::error::Result;
use crate::io::RawArray;
use ndarray::{Array1, Array2};

/// True when the arrays carry PyTorch's RNN parameter names.
pub fn looks_like(src: &NamedArrays) -> bool {
    !src.positional
        && src
            .arrays
            .iter()
            .any(|(n, _)| base(n).starts_with("weight_ih_l"))
}

/// A parameter's name without its module prefix: `encoder.rnn.weight_ih_l0` → `weight_ih_l0` (a whole
/// model's `state_dict()` prefixes every parameter with the attribute path of its module).
fn base(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The module prefixes (`encoder.rnn.`) of the RNN parameters present, for the ambiguity check.
fn prefixes(src: &NamedArrays) -> Vec<String> {
    let mut v: Vec<String> = src
        .arrays
        .iter()
        .filter(|(n, _)| base(n).starts_with("weight_ih_l"))
        .map(|(n, _)| n[..n.len() - base(n).len()].to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The layers and directions present, for messages: `l0, l0_reverse, l1`.
fn available(src: &NamedArrays) -> String {
    let mut v: Vec<&str> = src
        .arrays
        .iter()
        .filter_map(|(n, _)| base(n).strip_prefix("weight_ih_"))
        .collect();
    v.sort();
    v.join(", ")
}

/// Converts layer `layer` (direction `reverse`) of a PyTorch state dict for `kind`.
pub fn from_state_dict(
    kind: CellKind,
    src: &NamedArrays,
    layer: usize,
    reverse: bool,
) -> Result<CellWeights<f64>> {
    let sfx = format!("_l{layer}{}", if reverse { "_reverse" } else { "" });
    let prefix =
        match prefixes(src).as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            many => {
                return Err(src.error(format!(
                "holds the parameters of {} recurrent modules ({}); save one module's state_dict()",
                many.len(),
                many.iter().map(|p| p.trim_end_matches('.')).collect::<Vec<_>>().join(", ")
            )));
            }
        };
    let get = |p: &str| src.get(&format!("{prefix}{p}{sfx}"));
    let w_ih = get("weight_ih").ok_or_else(|| {
        src.error(format!(
            "has no weight_ih{sfx}; this state dict holds: {}",
            available(src)
        ))
    })?;
    let w_hh = get("weight_hh")
        .ok_or_else(|| src.error(format!("has weight_ih{sfx} but no weight_hh{sfx}")))?;
    if get("weight_hr").is_some() {
        return Err(src.error(format!(
            "has weight_hr{sfx}: LSTMs with proj_size are not supported"
        )));
    }
    let g = kind.blocks();
    let cell = kind.name().to_uppercase();
    if w_hh.ndim() != 2 || w_hh.shape[0] == 0 || w_hh.shape[0] % w_hh.shape[1].max(1) != 0 {
        return Err(src.error(format!(
            "weight_hh{sfx} has shape {}; expected ({g} × hidden, hidden)",
            w_hh.shape_str()
        )));
    }
    let hidden = w_hh.shape[1];
    if w_hh.shape[0] != g * hidden {
        let other = kind.other();
        let hint = if w_hh.shape[0] == other.blocks() * hidden {
            format!(
                ": these are {} weights; use `rnntrace {}` (or --cell {} with run, inspect and diagnose)",
                other.name().to_uppercase(),
                other.name(),
                other.name()
            )
        } else {
            String::new()
        };
        return Err(src.error(format!(
            "weight_hh{sfx} has shape {}; expected ({}, {hidden}) for a PyTorch {cell} with hidden size {hidden}{hint}",
            w_hh.shape_str(),
            g * hidden
        )));
    }
    if w_ih.ndim() != 2 || w_ih.shape[0] != g * hidden || w_ih.shape[1] == 0 {
        return Err(src.error(format!(
            "weight_ih{sfx} has shape {}; expected ({}, input_size) for a PyTorch {cell} with hidden size {hidden}",
            w_ih.shape_str(),
            g * hidden
        )));
    }
    let bias = |name: &str| -> Result<Option<&RawArray>> {
        match get(name) {
            None => Ok(None),
            Some(b) if b.shape == [g * hidden] => Ok(Some(b)),
            Some(b) => Err(src.error(format!(
                "{name}{sfx} has shape {}; expected ({},)",
                b.shape_str(),
                g * hidden
            ))),
        }
    };
    let (b_ih, b_hh) = (bias("bias_ih")?, bias("bias_hh")?);
    // Keras block k takes PyTorch block order[k].
    let order: &[usize] = match kind {
        CellKind::Lstm => &[0, 1, 2, 3],
        CellKind::Gru => &[1, 0, 2],
        CellKind::SimpleRnn => &[0],
    };
    let transpose_blocks = |w: &RawArray| -> Array2<f64> {
        let cols = w.shape[1];
        Array2::from_shape_fn((cols, g * hidden), |(i, j)| {
            let (block, unit) = (j / hidden, j % hidden);
            w.data[(order[block] * hidden + unit) * cols + i]
        })
    };
    let reorder = |b: &RawArray| -> Array1<f64> {
        Array1::from_shape_fn(g * hidden, |j| {
            b.data[order[j / hidden] * hidden + j % hidden]
        })
    };
    let (bias, recurrent_bias) = match (kind, b_ih, b_hh) {
        (_, None, None) => (None, None),
        (CellKind::Lstm | CellKind::SimpleRnn, bi, bh) => {
            let zero = Array1::zeros(g * hidden);
            let s =
                bi.map(reorder).unwrap_or_else(|| zero.clone()) + bh.map(reorder).unwrap_or(zero);
            (Some(s), None)
        }
        (CellKind::Gru, bi, bh) => {
            let zero = || Array1::zeros(g * hidden);
            (
                Some(bi.map(reorder).unwrap_or_else(zero)),
                Some(bh.map(reorder).unwrap_or_else(zero)),
            )
        }
    };
    Ok(CellWeights {
        kind,
        units: hidden,
        features: w_ih.shape[1],
        kernel: transpose_blocks(w_ih),
        recurrent_kernel: transpose_blocks(w_hh),
        bias,
        recurrent_bias,
        reset_after: kind.has_reset_after(),
    })
}
