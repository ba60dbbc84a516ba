/*!
Keras's weight layout: `kernel` (features, blocks·units), `recurrent_kernel` (units, blocks·units) and
`bias` ((blocks·units,), or (2, 3·units) for a `reset_after=True` GRU), blocks in Keras gate order.

This is where shapes are checked, once, with messages that say what was found, what was expected, and
(when the shapes fit the other cell) which command to run instead.
*/

use super::{CellKind, CellWeights, NamedArrays};
use crate::error::{Result, shape_str};
use crate::io::RawArray;
use ndarray::{Array1, Array2};

/// How the user asked to treat the GRU reset gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetAfter {
    /// Read it from the bias shape; with no bias, Keras's default (true).
    Auto,
    /// `reset_after=True`.
    True,
    /// `reset_after=False`.
    False,
}

/// The role an array plays, from its name: `kernel`, `lstm/lstm_cell/recurrent_kernel:0`, …
fn role(name: &str) -> Option<&'static str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.split(':').next().unwrap_or(base);
    match base {
        "kernel" => Some("kernel"),
        "recurrent_kernel" => Some("recurrent_kernel"),
        "bias" => Some("bias"),
        _ => None,
    }
}

/// Turns arrays in Keras layout into validated weights for `kind`.
pub fn from_arrays(
    kind: CellKind,
    src: &NamedArrays,
    reset_after: ResetAfter,
) -> Result<CellWeights<f64>> {
    let (kernel, recurrent, bias) = pick(src)?;
    let g = kind.blocks();
    let cell = kind.with_article();
    if kernel.ndim() != 2 {
        return Err(src.error(format!(
            "kernel has shape {}; expected 2-D (features, {g} × units)",
            kernel.shape_str()
        )));
    }
    if recurrent.ndim() != 2 {
        return Err(src.error(format!(
            "recurrent_kernel has shape {}; expected 2-D (units, {g} × units)",
            recurrent.shape_str()
        )));
    }
    let units = recurrent.shape[0];
    if units == 0 {
        return Err(src.error(format!(
            "recurrent_kernel has shape {}; a layer needs at least one unit",
            recurrent.shape_str()
        )));
    }
    if recurrent.shape[1] != g * units {
        let other = kind.other();
        let hint = if recurrent.shape[1] == other.blocks() * units {
            format!(
                ": these are {} weights ({} = {} × {units} units); run `rnntrace {}`",
                other.name().to_uppercase(),
                recurrent.shape[1],
                other.blocks(),
                other.name()
            )
        } else {
            String::new()
        };
        return Err(src.error(format!(
            "recurrent_kernel has shape {}; expected ({units}, {}) for {cell} with {units} units{hint}",
            recurrent.shape_str(),
            g * units
        )));
    }
    let features = kernel.shape[0];
    if kernel.shape[1] != g * units || features == 0 {
        return Err(src.error(format!(
            "kernel has shape {}; expected ({}, {}) for {cell} with {units} units (recurrent_kernel {})",
            kernel.shape_str(),
            features.max(1),
            g * units,
            recurrent.shape_str()
        )));
    }
    let (bias, recurrent_bias, reset_after) = match (kind, bias) {
        (CellKind::Lstm | CellKind::SimpleRnn, None) => (None, None, false),
        (CellKind::SimpleRnn, Some(b)) => {
            if b.shape != [units] {
                return Err(src.error(format!(
                    "bias has shape {}; expected ({units},) for a SimpleRNN with {units} units",
                    b.shape_str()
                )));
            }
            (Some(vec1(b)), None, false)
        }
        (CellKind::Lstm, Some(b)) => {
            if b.shape != [4 * units] {
                return Err(src.error(format!(
                    "bias has shape {}; expected ({},) for an LSTM with {units} units",
                    b.shape_str(),
                    4 * units
                )));
            }
            (Some(vec1(b)), None, false)
        }
        (CellKind::Gru, None) => (None, None, reset_after != ResetAfter::False),
        (CellKind::Gru, Some(b)) => {
            let n = 3 * units;
            if b.shape == [n] {
                if reset_after == ResetAfter::True {
                    return Err(src.error(format!(
                        "bias has shape ({n},), the layout of a reset_after=False GRU; --reset-after true needs a (2, {n}) bias"
                    )));
                }
                (Some(vec1(b)), None, false)
            } else if b.shape == [2, n] {
                if reset_after == ResetAfter::False {
                    return Err(src.error(format!(
                        "bias has shape (2, {n}), the layout of a reset_after=True GRU; --reset-after false needs a ({n},) bias"
                    )));
                }
                (
                    Some(Array1::from(b.data[..n].to_vec())),
                    Some(Array1::from(b.data[n..].to_vec())),
                    true,
                )
            } else {
                return Err(src.error(format!(
                    "bias has shape {}; expected ({n},) (reset_after=False) or (2, {n}) (reset_after=True) for a GRU with {units} units",
                    b.shape_str()
                )));
            }
        }
    };
    Ok(CellWeights {
        kind,
        units,
        features,
        kernel: mat(kernel),
        recurrent_kernel: mat(recurrent),
        bias,
        recurrent_bias,
        reset_after,
        projection: None,
    })
}

fn pick(src: &NamedArrays) -> Result<(&RawArray, &RawArray, Option<&RawArray>)> {
    if src.positional {
        return match src.arrays.as_slice() {
            [(_, k), (_, r)] => Ok((k, r, None)),
            [(_, k), (_, r), (_, b)] => Ok((k, r, Some(b))),
            other => Err(src.error(format!(
                "holds {} array(s); expected 3 (kernel, recurrent_kernel, bias) or 2 (use_bias=False), in layer.get_weights() order",
                other.len()
            ))),
        };
    }
    let mut kernel = None;
    let mut recurrent = None;
    let mut bias = None;
    for (name, a) in &src.arrays {
        let slot = match role(name) {
            Some("kernel") => &mut kernel,
            Some("recurrent_kernel") => &mut recurrent,
            Some("bias") => &mut bias,
            _ => {
                let hint = if name.starts_with("weight_ih") || name.starts_with("weight_hh") {
                    " (PyTorch state-dict names: pass --layout pytorch, or leave --layout auto)"
                } else {
                    ""
                };
                return Err(src.error(format!(
                    "holds an array named '{name}'; expected kernel, recurrent_kernel and bias{hint}"
                )));
            }
        };
        if slot.replace(a).is_some() {
            return Err(src.error(format!(
                "holds two arrays that both look like '{}'",
                role(name).unwrap_or(name)
            )));
        }
    }
    match (kernel, recurrent) {
        (Some(k), Some(r)) => Ok((k, r, bias)),
        _ => Err(src.error(format!(
            "needs arrays named kernel and recurrent_kernel (and bias unless use_bias=False); found: {}",
            if src.arrays.is_empty() { "nothing".to_string() } else { src.names() }
        ))),
    }
}

pub(crate) fn mat(a: &RawArray) -> Array2<f64> {
    Array2::from_shape_vec((a.shape[0], a.shape[1]), a.data.clone())
        .expect("shape checked by the caller")
}

fn vec1(a: &RawArray) -> Array1<f64> {
    Array1::from(a.data.clone())
}

/// A message fragment for a shape, re-exported for sibling loaders.
pub(crate) fn shape_of(a: &RawArray) -> String {
    shape_str(&a.shape)
}
