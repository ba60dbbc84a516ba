/*!
The loaders the commands share: an input series cut into windows or checked against the layer, masks,
initial states, expected outputs and targets, each checked against the run's shapes with messages that
name the file.
*/

use super::job::Expected;
use crate::error::{Error, Result, shape_str};
use crate::io::{self, RawArray};
use crate::weights::{CellKind, CellWeights, load_arrays};
use ndarray::{Array2, Array3};
use std::path::Path;

pub(super) fn shape_input(
    raw: RawArray,
    path: &Path,
    window: Option<usize>,
    w: &CellWeights<f64>,
) -> Result<Array3<f64>> {
    let expects = format!(
        "the kernel expects {} (kernel {})",
        w.features,
        shape_str(&[w.kernel.nrows(), w.kernel.ncols()])
    );
    series_input(raw, path, window, w.features, &expects)
}

/// The most values `--window` may produce (2 GiB of f64).
pub const MAX_WINDOW_VALUES: usize = 1 << 28;

/// Shapes an input array into (sequences, timesteps, features): 3-D as is, 2-D as one sequence, or a 2-D
/// series cut into windows of `window` rows. `expects` completes "has N features per step; …".
pub fn series_input(
    raw: RawArray,
    path: &Path,
    window: Option<usize>,
    features: usize,
    expects: &str,
) -> Result<Array3<f64>> {
    // The shape as read, for messages; the values move into the array (no copy).
    let shape = raw.shape_str();
    let x = match (raw.ndim(), window) {
        (2, Some(k)) => {
            let (rows, f) = (raw.shape[0], raw.shape[1]);
            if k == 0 {
                return Err(Error::usage("--window must be at least 1"));
            }
            if rows <= k {
                return Err(Error::input(
                    path,
                    format!(
                        "has {rows} rows; --window {k} needs more than {k} (each window predicts the row after it)"
                    ),
                ));
            }
            let n = rows - k;
            // Windows overlap, so the cut series can be far larger than the file: refuse what would not fit.
            let cells = n
                .checked_mul(k)
                .and_then(|v| v.checked_mul(f))
                .unwrap_or(usize::MAX);
            if cells > MAX_WINDOW_VALUES {
                return Err(Error::input(
                    path,
                    format!(
                        "--window {k} over {rows} rows makes {n} windows × {k} rows × {f} features = {cells} values, more than the {MAX_WINDOW_VALUES} rnntrace holds at once; use a shorter window or cut the windows beforehand"
                    ),
                ));
            }
            let mut x = Array3::zeros((n, k, f));
            for i in 0..n {
                for t in 0..k {
                    for j in 0..f {
                        x[[i, t, j]] = raw.data[(i + t) * f + j];
                    }
                }
            }
            x
        }
        (_, Some(k)) => {
            return Err(Error::input(
                path,
                format!(
                    "has shape {}; --window {k} needs a 2-D series (rows, features)",
                    raw.shape_str()
                ),
            ));
        }
        (2, None) => {
            Array3::from_shape_vec((1, raw.shape[0], raw.shape[1]), raw.data).expect("2-D shape")
        }
        (3, None) => Array3::from_shape_vec((raw.shape[0], raw.shape[1], raw.shape[2]), raw.data)
            .expect("3-D shape"),
        _ => {
            return Err(Error::input(
                path,
                format!(
                    "has shape {}; expected (sequences, timesteps, features) or (timesteps, features)",
                    raw.shape_str()
                ),
            ));
        }
    };
    let (b, t, f) = x.dim();
    if b == 0 {
        return Err(Error::input(
            path,
            format!("has shape {}: it holds no sequences", shape),
        ));
    }
    if t == 0 {
        return Err(Error::input(
            path,
            format!("has shape {}: sequences have 0 timesteps", shape),
        ));
    }
    if f != features {
        return Err(Error::input(
            path,
            format!("has {f} features per step (shape {}); {expects}", shape),
        ));
    }
    Ok(x)
}

/// A mask (sequences, timesteps) of booleans or 0/1; 1-D for a single sequence.
pub fn load_mask(path: &Path, batch: usize, steps: usize) -> Result<Array2<bool>> {
    let raw = io::read_npy(path)?;
    let shape = match raw.ndim() {
        2 => (raw.shape[0], raw.shape[1]),
        1 if batch == 1 => (1, raw.shape[0]),
        _ => (usize::MAX, usize::MAX),
    };
    if shape != (batch, steps) {
        return Err(Error::input(
            path,
            format!(
                "mask has shape {}; expected ({batch}, {steps}) (sequences, timesteps)",
                raw.shape_str()
            ),
        ));
    }
    if let Some(v) = raw.data.iter().find(|v| **v != 0.0 && **v != 1.0) {
        return Err(Error::input(
            path,
            format!("mask holds {v}; expected booleans or 0/1"),
        ));
    }
    Ok(
        Array2::from_shape_vec(shape, raw.data.iter().map(|v| *v != 0.0).collect())
            .expect("shape checked"),
    )
}

/// Initial (h, c), each (sequences, units).
type InitialState = (Option<Array2<f64>>, Option<Array2<f64>>);

pub(super) fn load_initial_state(
    path: &Path,
    kind: CellKind,
    units: usize,
    batch: usize,
    carry: bool,
) -> Result<InitialState> {
    let src = load_arrays(path, &["h", "c"])?;
    let get = |name: &str, pos: usize| -> Option<&RawArray> {
        if src.positional {
            src.arrays.get(pos).map(|(_, a)| a)
        } else {
            src.get(name)
        }
    };
    let expand = |name: &str, a: &RawArray| -> Result<Array2<f64>> {
        match a.shape.as_slice() {
            [u] if *u == units => Ok(Array2::from_shape_fn((batch, units), |(_, j)| a.data[j])),
            [1, u] if *u == units => Ok(Array2::from_shape_fn((batch, units), |(_, j)| a.data[j])),
            [b, u] if *b == batch && *u == units && !carry => {
                Ok(Array2::from_shape_vec((batch, units), a.data.clone()).expect("shape checked"))
            }
            _ => Err(src.error(format!(
                "initial state '{name}' has shape {}; expected {}({units},)",
                a.shape_str(),
                if carry {
                    String::new()
                } else {
                    format!("({batch}, {units}) or ")
                }
            ))),
        }
    };
    let allowed = if kind.has_cell_state() { 2 } else { 1 };
    if src.positional && src.arrays.len() > allowed {
        return Err(src.error(format!(
            "holds {} arrays; an initial state is h{}",
            src.arrays.len(),
            if allowed == 2 { " and c" } else { "" }
        )));
    }
    if let Some((name, _)) = src
        .arrays
        .iter()
        .find(|(n, _)| !src.positional && n != "h" && n != "c")
    {
        return Err(src.error(format!(
            "holds an array named '{name}'; an initial state holds h (and c for an LSTM)"
        )));
    }
    let h = get("h", 0)
        .ok_or_else(|| src.error(format!("needs an array named h; found: {}", src.names())))?;
    let h = expand("h", h)?;
    let c = if kind.has_cell_state() {
        let c = get("c", 1).ok_or_else(|| {
            src.error(format!(
                "{} needs arrays h and c; found: {}",
                kind.with_article(),
                src.names()
            ))
        })?;
        Some(expand("c", c)?)
    } else {
        if get("c", 1).is_some() {
            return Err(src.error(format!(
                "holds a cell state c, but {} has only h",
                kind.with_article()
            )));
        }
        None
    };
    Ok((Some(h), c))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn load_expected(
    path: &Path,
    batch: usize,
    steps: usize,
    outputs: usize,
    no_dense: bool,
    units: usize,
    atol: f64,
    rtol: f64,
    time_major: bool,
) -> Result<Expected> {
    let mut raw = io::read_npy(path)?;
    if time_major {
        raw = raw.swap_leading_axes();
    }
    let s = raw.shape.as_slice();
    let per_prediction =
        s == [batch, outputs] || (outputs == 1 && s == [batch]) || (batch == 1 && s == [outputs]);
    let per_step = no_dense && s == [batch, steps, units];
    if !per_prediction && !per_step {
        let also = if no_dense {
            format!(", or ({batch}, {steps}, {units}) for return_sequences output")
        } else {
            String::new()
        };
        if no_dense && !time_major && s == [steps, batch, units] && steps != batch {
            return Err(Error::input(
                path,
                format!(
                    "expected output has shape {}: (timesteps, sequences, units), time-major as a PyTorch module with batch_first=False returns it; pass --time-major (it reads --input that way too)",
                    raw.shape_str()
                ),
            ));
        }
        // Shaped like a head's output ((batch, k) with k ≠ units) while no head was given.
        let head_hint = if no_dense && s.len() <= 2 && s.first() == Some(&batch) {
            "; it looks like the output of a Dense head: did you mean to pass --dense D.json?"
        } else {
            ""
        };
        return Err(Error::input(
            path,
            format!(
                "expected output has shape {}; the predictions have shape ({batch}, {outputs}){also}{head_hint}",
                raw.shape_str()
            ),
        ));
    }
    Ok(Expected {
        array: raw,
        sequences: per_step,
        atol,
        rtol,
    })
}

pub fn load_targets(
    path: &Path,
    batch: usize,
    outputs: usize,
    window: Option<usize>,
) -> Result<Array2<f64>> {
    let raw = io::read_npy(path)?;
    let (rows, width) = match raw.shape.as_slice() {
        [n] => (*n, 1),
        [n, w] => (*n, *w),
        _ => (usize::MAX, 0),
    };
    if width != outputs {
        return Err(Error::input(
            path,
            format!(
                "targets have shape {}; expected {} value(s) per sequence",
                raw.shape_str(),
                outputs
            ),
        ));
    }
    let offset = match window {
        Some(k) if rows == batch + k => k,
        _ if rows == batch => 0,
        Some(k) => {
            return Err(Error::input(
                path,
                format!(
                    "targets have {rows} rows; expected {} (the whole series) or {batch} (one per window)",
                    batch + k
                ),
            ));
        }
        None => {
            return Err(Error::input(
                path,
                format!("targets have {rows} rows; expected {batch}, one per sequence"),
            ));
        }
    };
    Ok(Array2::from_shape_fn((batch, width), |(i, j)| {
        raw.data[(i + offset) * width + j]
    }))
}

/// For `diagnose`, whose readings of the weights are validated by [`crate::weights::convention`]: the input
/// (after `--window`) and `--expected`, read and checked exactly as [`cell_job`] does for `weights`.
#[allow(clippy::too_many_arguments)]
pub fn load_data(
    input: &Path,
    window: Option<usize>,
    weights: &CellWeights<f64>,
    expected: &Path,
    outputs: usize,
    no_dense: bool,
    atol: f64,
    rtol: f64,
) -> Result<(Array3<f64>, Expected)> {
    let x = shape_input(io::read_npy(input)?, input, window, weights)?;
    let (batch, steps, _) = x.dim();
    let e = load_expected(
        expected,
        batch,
        steps,
        outputs,
        no_dense,
        weights.units,
        atol,
        rtol,
        false,
    )?;
    Ok((x, e))
}
