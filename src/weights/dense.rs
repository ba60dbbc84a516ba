/*!
A Dense head: `y = act(h·K + b)`, kernel (units, outputs), bias (outputs,), as `layer.get_weights()` gives it.
*/

use super::keras::{mat, shape_of};
use super::load_arrays;
use crate::cell::Real;
use crate::error::Result;
use ndarray::{Array1, Array2};
use std::path::Path;

/// A validated Dense layer.
#[derive(Debug, Clone)]
pub struct DenseWeights<T> {
    /// (inputs, outputs).
    pub kernel: Array2<T>,
    /// (outputs,), absent for `use_bias=False`.
    pub bias: Option<Array1<T>>,
}

impl<T: Real> DenseWeights<T> {
    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.kernel.ncols()
    }

    /// Converts the element type.
    pub fn cast<U: Real>(&self) -> DenseWeights<U> {
        DenseWeights {
            kernel: self.kernel.mapv(|v| U::lit(v.to_f())),
            bias: self.bias.as_ref().map(|b| b.mapv(|v| U::lit(v.to_f()))),
        }
    }
}

/// Loads a Dense head named by `spec`: a file (as [`load`] reads it), or the name of an `nn.Linear` held
/// in the weights file `weights` (`fc` for `fc.weight`/`fc.bias`), or that same file when it holds one Linear.
pub fn load_head(
    spec: &Path,
    weights: &super::NamedArrays,
    inputs: usize,
) -> Result<DenseWeights<f64>> {
    let lin = super::pytorch::linear_layers(weights);
    let name = spec.to_string_lossy();
    if spec == weights.path {
        return match lin.as_slice() {
            [one] => super::pytorch::linear(weights, &one.name, inputs),
            _ => Err(weights.error(format!(
                "--dense names the weights file itself; it holds {} nn.Linear layers ({}); name one: --dense NAME",
                lin.len(),
                lin.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        };
    }
    if !spec.exists()
        && (lin.iter().any(|l| l.name == name) || weights.get(&format!("{name}.weight")).is_some())
    {
        return super::pytorch::linear(weights, &name, inputs);
    }
    if !spec.exists() && !lin.is_empty() {
        return Err(crate::Error::usage(format!(
            "--dense {name}: no such file, nor an nn.Linear of {} (it holds: {})",
            weights.path.display(),
            lin.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    load(spec, inputs)
}

/// Loads a Dense head from JSON (`[kernel, bias]` or `{kernel, bias}`) or `.npz`, checking it takes `inputs` values.
pub fn load(path: &Path, inputs: usize) -> Result<DenseWeights<f64>> {
    let src = load_arrays(path, &["kernel", "bias"])?;
    if src.get("weight").is_none() && src.get("kernel").is_none() && !src.positional {
        let lin = super::pytorch::linear_layers(&src);
        match lin.as_slice() {
            [one] => return super::pytorch::linear(&src, &one.name, inputs),
            [] => {}
            many => {
                return Err(src.error(format!(
                    "holds {} nn.Linear layers ({}); name one with --dense NAME and the file as the weights, or save one Linear's state_dict()",
                    many.len(),
                    many.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    if let Some(w) = src.get("weight") {
        // PyTorch nn.Linear: weight (out, in), y = x·Wᵀ + b.
        if w.ndim() != 2 || w.shape[1] != inputs {
            return Err(src.error(format!(
                "nn.Linear weight has shape {}; expected (outputs, {inputs}) to take the {inputs} outputs of the recurrent layer",
                shape_of(w)
            )));
        }
        let (outs, ins) = (w.shape[0], w.shape[1]);
        let kernel = Array2::from_shape_fn((ins, outs), |(i, o)| w.data[o * ins + i]);
        let bias = match src.get("bias") {
            None => None,
            Some(b) if b.data.len() == outs && b.ndim() == 1 => Some(Array1::from(b.data.clone())),
            Some(b) => {
                return Err(src.error(format!(
                    "nn.Linear bias has shape {}; expected ({outs},)",
                    shape_of(b)
                )));
            }
        };
        return Ok(DenseWeights { kernel, bias });
    }
    let (k, b) = if src.positional {
        match src.arrays.as_slice() {
            [(_, k)] => (k, None),
            [(_, k), (_, b)] => (k, Some(b)),
            other => {
                return Err(src.error(format!(
                    "holds {} array(s); expected a Dense layer's [kernel, bias] (or [kernel] with use_bias=False)",
                    other.len()
                )));
            }
        }
    } else {
        let k = src.get("kernel").ok_or_else(|| {
            src.error(format!(
                "needs an array named kernel; found: {}",
                src.names()
            ))
        })?;
        if let Some((name, _)) = src
            .arrays
            .iter()
            .find(|(n, _)| n != "kernel" && n != "bias")
        {
            return Err(src.error(format!(
                "holds an array named '{name}'; expected a Dense layer's kernel and bias"
            )));
        }
        (k, src.get("bias"))
    };
    if k.ndim() == 1 && k.shape[0] == inputs {
        // A (units,) kernel is a Dense(1) saved without its last axis; accept it as (units, 1).
    } else if k.ndim() != 2 || k.shape[0] != inputs {
        return Err(src.error(format!(
            "Dense kernel has shape {}; expected ({inputs}, outputs) to take the {inputs} outputs of the recurrent layer",
            shape_of(k)
        )));
    }
    let kernel = if k.ndim() == 1 {
        Array2::from_shape_vec((inputs, 1), k.data.clone()).expect("length checked above")
    } else {
        mat(k)
    };
    let outputs = kernel.ncols();
    if outputs == 0 {
        return Err(src.error(format!(
            "Dense kernel has shape {}: it has no outputs",
            shape_of(k)
        )));
    }
    let bias = match b {
        None => None,
        Some(b) if b.data.len() == outputs && b.ndim() <= 1 => Some(Array1::from(b.data.clone())),
        Some(b) => {
            return Err(src.error(format!(
                "Dense bias has shape {}; expected ({outputs},) to match kernel {}",
                shape_of(b),
                shape_of(k)
            )));
        }
    };
    Ok(DenseWeights { kernel, bias })
}
