/*!
PyTorch's `nn.LSTM` / `nn.GRU` state dicts, converted once, at load, to the Keras layout the cells use.

- `weight_ih_l{k}` (G·H, in) and `weight_hh_l{k}` (G·H, H) are transposed into `kernel` and `recurrent_kernel`.
- LSTM gate order i, f, g, o is Keras's i, f, c, o; the two biases add into one (`b_ih + b_hh`).
- GRU gate order r, z, n becomes Keras's z, r, h; the biases stay apart as Keras's `reset_after=True` (2, 3H)
  bias (row 0 `b_ih`, row 1 `b_hh`), which is exactly PyTorch's `n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))`.
- `_l{k}` picks the layer, `_reverse` the backward direction. `proj_size` LSTMs: `weight_hr_l{k}` (proj, hidden)
  becomes the cell's `projection` (hidden, proj), and `weight_hh_l{k}` is then (4·hidden, proj).
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
                "holds the parameters of {} recurrent modules ({}); pick one with --module NAME",
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
    let g = kind.blocks();
    let cell = kind.name().to_uppercase();
    // proj_size: weight_hr (proj, hidden) makes h = W_hr (o ⊙ tanh(c)); weight_hh is then (g·hidden, proj).
    let w_hr = get("weight_hr");
    if let Some(w) = w_hr
        && (kind != CellKind::Lstm
            || w.ndim() != 2
            || w.shape[0] == 0
            || w.shape[1] == 0
            || w.shape[0] >= w.shape[1])
    {
        return Err(src.error(format!(
            "weight_hr{sfx} has shape {}; expected (proj_size, hidden) with proj_size < hidden, for an nn.LSTM",
            w.shape_str()
        )));
    }
    let (hidden, hcols) = match w_hr {
        Some(w) => (w.shape[1], w.shape[0]),
        None => (
            w_hh.shape.get(1).copied().unwrap_or(0),
            w_hh.shape.get(1).copied().unwrap_or(0),
        ),
    };
    if w_hh.ndim() != 2 || w_hh.shape[0] == 0 || hidden == 0 || w_hh.shape[1] != hcols {
        return Err(src.error(format!(
            "weight_hh{sfx} has shape {}; expected ({g} × hidden, {})",
            w_hh.shape_str(),
            if w_hr.is_some() {
                "proj_size"
            } else {
                "hidden"
            }
        )));
    }
    if w_hh.shape[0] != g * hidden {
        let other = kind.other();
        let hint = if w_hr.is_none() && w_hh.shape[0] == other.blocks() * hidden {
            format!(
                ": these are {} weights; run `rnntrace {}`",
                other.name().to_uppercase(),
                other.name()
            )
        } else {
            String::new()
        };
        return Err(src.error(format!(
            "weight_hh{sfx} has shape {}; expected ({}, {hcols}) for a PyTorch {cell} with hidden size {hidden}{hint}",
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
        projection: w_hr.map(|w| {
            let (p, h) = (w.shape[0], w.shape[1]);
            Array2::from_shape_fn((h, p), |(i, j)| w.data[j * h + i])
        }),
    })
}

/// One recurrent module of a PyTorch file (`encoder.rnn.` holding `weight_ih_l0`, …).
#[derive(Debug, Clone)]
pub struct RecurrentModule {
    /// The attribute path without the trailing dot (`encoder.rnn`; empty for a bare `nn.LSTM` state dict).
    pub name: String,
    /// LSTM, GRU or RNN as the weight shapes say (None when they fit none).
    pub kind: Option<CellKind>,
    /// `num_layers`.
    pub layers: usize,
    /// `bidirectional`.
    pub bidirectional: bool,
    /// `hidden_size`.
    pub hidden: usize,
    /// `input_size`.
    pub input: usize,
    /// `proj_size` (0: none).
    pub proj: usize,
}

/// The recurrent modules a file holds, in file order.
pub fn recurrent_modules(src: &NamedArrays) -> Vec<RecurrentModule> {
    let mut out: Vec<RecurrentModule> = Vec::new();
    for p in prefixes_in_order(src) {
        let get = |n: &str| src.get(&format!("{p}{n}"));
        let layers = (0..)
            .take_while(|k| get(&format!("weight_ih_l{k}")).is_some())
            .count();
        let (Some(ih), Some(hh)) = (get("weight_ih_l0"), get("weight_hh_l0")) else {
            continue;
        };
        let proj = get("weight_hr_l0").map(|w| w.shape[0]).unwrap_or(0);
        let rows = ih.shape.first().copied().unwrap_or(0);
        let hidden = get("weight_hr_l0")
            .and_then(|w| w.shape.get(1).copied())
            .unwrap_or_else(|| hh.shape.get(1).copied().unwrap_or(0));
        let kind = match rows.checked_div(hidden) {
            Some(4) if rows % hidden == 0 => Some(CellKind::Lstm),
            Some(3) if rows % hidden == 0 => Some(CellKind::Gru),
            Some(1) if rows % hidden == 0 => Some(CellKind::SimpleRnn),
            _ => None,
        };
        out.push(RecurrentModule {
            name: p.trim_end_matches('.').to_string(),
            kind,
            layers,
            bidirectional: get("weight_ih_l0_reverse").is_some(),
            hidden,
            input: ih.shape.get(1).copied().unwrap_or(0),
            proj,
        });
    }
    out
}

fn prefixes_in_order(src: &NamedArrays) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for (n, _) in &src.arrays {
        if base(n).starts_with("weight_ih_l") {
            let p = n[..n.len() - base(n).len()].to_string();
            if !v.contains(&p) {
                v.push(p);
            }
        }
    }
    v
}

/// An `nn.Linear` found by its names: `PREFIX.weight` (out, in) and optionally `PREFIX.bias` (out,).
#[derive(Debug, Clone)]
pub struct LinearLayer {
    /// The attribute path (`fc`, `head.out`).
    pub name: String,
    /// in_features.
    pub inputs: usize,
    /// out_features.
    pub outputs: usize,
}

/// The 2-D `*.weight` tensors outside the recurrent modules: Linear layers (an `nn.Embedding` would show
/// here too; its shape tells them apart for a user).
pub fn linear_layers(src: &NamedArrays) -> Vec<LinearLayer> {
    let rec = prefixes(src);
    src.arrays
        .iter()
        .filter_map(|(n, w)| {
            let prefix = n.strip_suffix("weight")?;
            if !(prefix.is_empty() || prefix.ends_with('.'))
                || w.ndim() != 2
                || rec
                    .iter()
                    .any(|r| !r.is_empty() && prefix.starts_with(r.as_str()))
            {
                return None;
            }
            match src.get(&format!("{prefix}bias")) {
                Some(b) if b.shape != [w.shape[0]] => return None,
                _ => {}
            }
            Some(LinearLayer {
                name: prefix.trim_end_matches('.').to_string(),
                inputs: w.shape[1],
                outputs: w.shape[0],
            })
        })
        .collect()
}

/// The arrays of one recurrent module, prefix stripped (`encoder.weight_ih_l0` → `weight_ih_l0`).
/// `module` picks it by name (`encoder`, or `encoder.rnn` when the module sits deeper); without it the
/// file must hold exactly one, else the error names them. A file without PyTorch RNN names passes
/// through unchanged (and `module` is then a usage error).
pub fn select_module(src: NamedArrays, module: Option<&str>) -> Result<NamedArrays> {
    let mods = recurrent_modules(&src);
    if mods.is_empty() {
        return match module {
            None => Ok(src),
            Some(m) => Err(crate::Error::usage(format!(
                "--module {m}: {} holds no PyTorch recurrent module (no weight_ih_l0)",
                src.path.display()
            ))),
        };
    }
    let list = || {
        mods.iter()
            .map(|m| {
                format!(
                    "{} ({}{})",
                    if m.name.is_empty() {
                        "<top level>"
                    } else {
                        &m.name
                    },
                    m.kind.map(|k| k.display_name()).unwrap_or("RNN?"),
                    if m.layers > 1 {
                        format!(", {} layers", m.layers)
                    } else {
                        String::new()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match module {
        None if mods.len() == 1 => &mods[0],
        None => {
            return Err(src.error(format!(
                "holds {} recurrent modules: {}; pick one with --module NAME",
                mods.len(),
                list()
            )));
        }
        Some(m) => {
            let m = m.trim_end_matches('.');
            let exact: Vec<_> = mods.iter().filter(|r| r.name == m).collect();
            let under: Vec<_> = mods
                .iter()
                .filter(|r| r.name.starts_with(&format!("{m}.")))
                .collect();
            match (exact.as_slice(), under.as_slice()) {
                ([one], _) | ([], [one]) => *one,
                _ => {
                    return Err(crate::Error::usage(format!(
                        "--module {m}: {} holds no single recurrent module of that name; it holds: {}",
                        src.path.display(),
                        list()
                    )));
                }
            }
        }
    };
    if chosen.name.is_empty() {
        return Ok(src);
    }
    let prefix = format!("{}.", chosen.name);
    let arrays = src
        .arrays
        .iter()
        .filter_map(|(n, a)| {
            let rest = n.strip_prefix(&prefix)?;
            (!rest.contains('.')).then(|| (rest.to_string(), a.clone()))
        })
        .collect();
    Ok(NamedArrays {
        path: src.path.clone(),
        positional: false,
        arrays,
        meta: src.meta.clone(),
    })
}

/// Notes for a PyTorch file: what it is, its Linear layers and how to apply them.
pub fn notes(src: &NamedArrays, on_run: bool) -> Vec<String> {
    let mut v = Vec::new();
    let path = src.path.display();
    if let Some(c) = &src.meta.module_class {
        v.push(format!(
            "note: {path}: a whole pickled module ({c}); its parameters were read as data, its code was not run"
        ));
    }
    let lin = linear_layers(src);
    if !lin.is_empty() {
        let names = lin
            .iter()
            .map(|l| format!("{} ({}→{})", l.name, l.inputs, l.outputs))
            .collect::<Vec<_>>()
            .join(", ");
        let first = if lin[0].name.is_empty() {
            "weight"
        } else {
            &lin[0].name
        };
        v.push(format!(
            "note: {path} also holds nn.Linear layer(s) {names}; {}, apply one to the last step with --dense {first}",
            if on_run {
                "the comparison uses the recurrent module's own output"
            } else {
                "the trace stops at the recurrent layer"
            }
        ));
    }
    v
}

/// `nn.Linear` `name` of `src` as a Dense head taking `inputs` values: kernel = weightᵀ.
pub fn linear(src: &NamedArrays, name: &str, inputs: usize) -> Result<super::DenseWeights<f64>> {
    let name = name.trim_end_matches('.');
    let p = if name.is_empty() || name == "weight" {
        String::new()
    } else {
        format!("{name}.")
    };
    let lin = linear_layers(src);
    let w = src
        .get(&format!("{p}weight"))
        .filter(|w| w.ndim() == 2)
        .ok_or_else(|| {
            src.error(format!(
                "has no nn.Linear named '{name}' ({p}weight); its Linear layers: {}",
                if lin.is_empty() {
                    "none".to_string()
                } else {
                    lin.iter()
                        .map(|l| l.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })?;
    let (outs, ins) = (w.shape[0], w.shape[1]);
    if ins != inputs {
        return Err(src.error(format!(
            "nn.Linear '{name}' takes {ins} inputs (weight {}); the recurrent output has {inputs}",
            w.shape_str()
        )));
    }
    let kernel = Array2::from_shape_fn((ins, outs), |(i, o)| w.data[o * ins + i]);
    let bias = match src.get(&format!("{p}bias")) {
        None => None,
        Some(b) if b.shape == [outs] => Some(Array1::from(b.data.clone())),
        Some(b) => {
            return Err(src.error(format!(
                "nn.Linear '{name}' bias has shape {}; expected ({outs},)",
                b.shape_str()
            )));
        }
    };
    Ok(super::DenseWeights { kernel, bias })
}

/// A multi-line description of a PyTorch file for `inspect`.
pub fn summary(src: &NamedArrays) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {}{}, {} tensors",
        src.path.display(),
        src.meta.container.unwrap_or("PyTorch state dict"),
        src.meta
            .module_class
            .as_ref()
            .map(|c| format!(" (whole pickled module {c})"))
            .unwrap_or_default(),
        src.arrays.len()
    );
    for m in recurrent_modules(src) {
        let bf = src
            .meta
            .batch_first
            .iter()
            .find(|(p, _)| p.trim_end_matches('.') == m.name)
            .map(|(_, b)| format!(", batch_first={}", if *b { "True" } else { "False" }))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {}: nn.{}(input_size={}, hidden_size={}, num_layers={}{}{}){bf}",
            if m.name.is_empty() {
                "<top level>"
            } else {
                &m.name
            },
            match m.kind {
                Some(CellKind::Lstm) => "LSTM",
                Some(CellKind::Gru) => "GRU",
                Some(CellKind::SimpleRnn) => "RNN",
                None => "RNN?",
            },
            m.input,
            m.hidden,
            m.layers,
            if m.bidirectional {
                ", bidirectional=True"
            } else {
                ""
            },
            if m.proj > 0 {
                format!(", proj_size={}", m.proj)
            } else {
                String::new()
            },
        );
    }
    for l in linear_layers(src) {
        let _ = writeln!(
            s,
            "  {}: nn.Linear(in_features={}, out_features={}{})",
            if l.name.is_empty() {
                "<top level>"
            } else {
                &l.name
            },
            l.inputs,
            l.outputs,
            if src
                .get(&format!(
                    "{}{}bias",
                    l.name,
                    if l.name.is_empty() { "" } else { "." }
                ))
                .is_none()
            {
                ", bias=False"
            } else {
                ""
            }
        );
    }
    s
}
