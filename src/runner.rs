/*!
Runs a whole saved model (`rnntrace run --model`): the layers of a [`SavedModel`] in order, every recurrent
layer through the same engine as the single-cell commands (so it is traced the same way), masks propagated
as Keras propagates them.

Values flow as a [`Tensor`]: a sequence `(batch, timesteps, features)` or a flat `(batch, features)`, with
the Keras mask `(batch, timesteps)` riding along until a layer drops it.
*/

use crate::cell::Kernels;
use crate::cell::{Activation, Real};
use crate::engine::{self, LayerInput, LayerSpec};
use crate::error::{Error, Result};
use crate::model::{LayerKind, Recurrent, RecurrentCell, SavedModel};
use crate::trace::{LayerTrace, Record};
use crate::weights::keras::{ResetAfter, from_arrays};
use crate::weights::{CellKind, CellWeights, NamedArrays};
use ndarray::{Array2, Array3, ArrayView2, Axis, s};

/// A value between layers.
#[derive(Debug, Clone)]
pub enum Tensor<T> {
    /// `(batch, timesteps, features)`.
    Seq(Array3<T>),
    /// `(batch, features)`.
    Flat(Array2<T>),
}

impl<T: Real> Tensor<T> {
    /// The shape, batch first.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Tensor::Seq(a) => a.shape().to_vec(),
            Tensor::Flat(a) => a.shape().to_vec(),
        }
    }

    /// The values per sequence, flattened: `(batch, everything else)`.
    pub fn rows(&self) -> Array2<T> {
        match self {
            Tensor::Flat(a) => a.clone(),
            Tensor::Seq(a) => {
                let (b, t, f) = a.dim();
                a.to_shape((b, t * f))
                    .map(|v| v.to_owned())
                    .unwrap_or_else(|_| Array2::zeros((b, t * f)))
            }
        }
    }
}

/// The result of running a model.
#[derive(Debug, Clone)]
pub struct ModelRun<T> {
    /// Every recurrent layer (a Bidirectional appears as `name/forward` and `name/backward`).
    pub layers: Vec<LayerTrace<T>>,
    /// The model's output.
    pub output: Tensor<T>,
}

fn act(model: &SavedModel, layer: &str, name: &str) -> Result<Activation> {
    Activation::parse(name).map_err(|e| Error::input(&model.path, format!("layer '{layer}': {e}")))
}

/// The validated cell weights of one recurrent layer (also what `explain` differentiates).
pub fn cell_weights<T: Real>(
    model: &SavedModel,
    layer: &str,
    r: &Recurrent,
) -> Result<CellWeights<T>> {
    let kind = match r.cell {
        RecurrentCell::Lstm => CellKind::Lstm,
        RecurrentCell::Gru => CellKind::Gru,
        RecurrentCell::SimpleRnn => CellKind::SimpleRnn,
    };
    let mut arrays = vec![
        ("kernel".to_string(), r.kernel.clone()),
        ("recurrent_kernel".to_string(), r.recurrent_kernel.clone()),
    ];
    if let Some(b) = &r.bias {
        arrays.push(("bias".to_string(), b.clone()));
    }
    let src = NamedArrays {
        path: model.path.clone(),
        positional: false,
        arrays,
        meta: Default::default(),
    };
    let ra = if r.reset_after {
        ResetAfter::True
    } else {
        ResetAfter::False
    };
    let w = from_arrays(
        kind,
        &src,
        if kind.has_reset_after() {
            ra
        } else {
            ResetAfter::Auto
        },
    )
    .map_err(|e| Error::input(&model.path, format!("layer '{layer}': {}", strip_path(&e))))?;
    Ok(w.cast::<T>())
}

fn strip_path(e: &Error) -> String {
    match e {
        Error::Input { what, .. } => what.clone(),
        other => other.to_string(),
    }
}

/// Runs one recurrent layer (or one direction of a Bidirectional) over `x`.
fn run_recurrent<T: Real>(
    model: &SavedModel,
    name: &str,
    r: &Recurrent,
    x: &Array3<T>,
    mask: Option<&Array2<bool>>,
    kernels: Kernels,
) -> Result<LayerTrace<T>> {
    let w = cell_weights::<T>(model, name, r)?;
    let carry_state = stateful_carry(model, name, r, x.shape()[0])?;
    if x.shape()[2] != w.features {
        return Err(Error::input(
            &model.path,
            format!(
                "layer '{name}' expects {} features per step; it receives {}",
                w.features,
                x.shape()[2]
            ),
        ));
    }
    let spec = LayerSpec {
        name: name.to_string(),
        activation: act(model, name, &r.activation)?,
        recurrent_activation: if r.recurrent_activation.is_empty() {
            Activation::Sigmoid
        } else {
            act(model, name, &r.recurrent_activation)?
        },
        go_backwards: r.go_backwards,
        carry_state,
    };
    let input = LayerInput {
        x: x.view().into(),
        mask: mask.map(|m| m.view()),
        h0: None,
        c0: None,
    };
    let mut no_sink = |_: usize, _: &engine::Stores<T>| Ok(());
    engine::run_layer_using(&w, &spec, input, Record::ALL, None, &mut no_sink, kernels)
}

/// Whether a layer carries its state from one sequence to the next, as `model.predict` runs it.
///
/// A `stateful=True` layer keeps its state between the batches `predict` cuts the input into. With the
/// model's batch size 1 that is sequence k's final state starting sequence k+1 (`--carry-state`); when the
/// whole input is one batch nothing carries. Other splits (state carried per row across batches) are
/// refused rather than computed wrongly.
fn stateful_carry(model: &SavedModel, name: &str, r: &Recurrent, batch: usize) -> Result<bool> {
    if !r.stateful || batch <= 1 {
        return Ok(false);
    }
    match model.input_shape.first().copied().flatten() {
        Some(1) => Ok(true),
        Some(b) if b == batch => Ok(false),
        None => Ok(false),
        Some(b) => Err(Error::input(
            &model.path,
            format!(
                "layer '{name}' is stateful with batch size {b}; the input holds {batch} sequences: rnntrace carries state for batch size 1, or runs the input as one batch of {b}"
            ),
        )),
    }
}

/// The layer's return_sequences output in processing order, `(batch, steps, units)`, with zeros at masked
/// steps when the layer says `zero_output_for_mask`.
fn sequence_output<T: Real>(l: &LayerTrace<T>, zero_masked: bool) -> Array3<T> {
    let out = l
        .out
        .as_ref()
        .map(|o| o.view().permuted_axes([1, 0, 2]).to_owned());
    let mut out = out.unwrap_or_else(|| Array3::zeros((l.sequences(), l.steps(), l.units)));
    if zero_masked && l.masked.nrows() == l.steps() {
        for ((t, b), &m) in l.masked.indexed_iter() {
            if m {
                out.slice_mut(s![b, t, ..]).fill(T::zero());
            }
        }
    }
    out
}

/// `act(x·K + b)` on the last axis of a tensor.
fn dense<T: Real>(
    model: &SavedModel,
    name: &str,
    x: &Tensor<T>,
    k: &crate::io::RawArray,
    b: Option<&crate::io::RawArray>,
    a: &str,
) -> Result<Tensor<T>> {
    let activation = act(model, name, a)?;
    let kernel = Array2::from_shape_vec(
        (k.shape[0], k.shape[1]),
        k.data.iter().map(|v| T::lit(*v)).collect(),
    )
    .map_err(|_| {
        Error::input(
            &model.path,
            format!(
                "layer '{name}': kernel has shape {}; expected 2-D",
                k.shape_str()
            ),
        )
    })?;
    let w = crate::weights::DenseWeights {
        kernel,
        bias: b
            .map(|b| ndarray::Array1::from(b.data.iter().map(|v| T::lit(*v)).collect::<Vec<_>>())),
    };
    let check = |n: usize| {
        if n != w.kernel.nrows() {
            Err(Error::input(
                &model.path,
                format!(
                    "layer '{name}' expects {} inputs; it receives {n}",
                    w.kernel.nrows()
                ),
            ))
        } else {
            Ok(())
        }
    };
    match x {
        Tensor::Flat(a) => {
            check(a.ncols())?;
            Ok(Tensor::Flat(engine::dense(&w, activation, a.view())))
        }
        Tensor::Seq(a) => {
            let (bn, t, f) = a.dim();
            check(f)?;
            let flat = a
                .to_shape((bn * t, f))
                .map_err(|e| Error::input(&model.path, e.to_string()))?;
            let y = engine::dense(&w, activation, flat.view());
            let o = y.ncols();
            Ok(Tensor::Seq(
                y.into_shape_with_order((bn, t, o))
                    .map_err(|e| Error::input(&model.path, e.to_string()))?,
            ))
        }
    }
}

fn merge<T: Real>(mode: &str, f: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Option<Array2<T>> {
    Some(match mode {
        "concat" => ndarray::concatenate(Axis(1), &[f, b]).ok()?,
        "sum" => &f + &b,
        "mul" => &f * &b,
        "ave" => (&f + &b).mapv(|v| v * T::lit(0.5)),
        _ => return None,
    })
}

/// The old name of [`run_model`].
pub use self::run_model as run;

/// Runs every layer of `model` on `x`: a sequence batch, or a flat batch for models whose input is not a
/// sequence. The best kernels this CPU has run the layers ([`run_model_using`] to choose).
pub fn run_model<T: Real>(model: &SavedModel, x: Tensor<T>) -> Result<ModelRun<T>> {
    run_model_using(model, x, Kernels::Avx512)
}

/// [`run_model`] with the kernels capped at `kernels`.
pub fn run_model_using<T: Real>(
    model: &SavedModel,
    x: Tensor<T>,
    kernels: Kernels,
) -> Result<ModelRun<T>> {
    let mut value = x;
    let mut mask: Option<Array2<bool>> = None;
    let mut layers = Vec::new();
    for layer in model.compute_layers() {
        let name = layer.name.as_str();
        let need_seq = |v: &Tensor<T>| -> Result<Array3<T>> {
            match v {
                Tensor::Seq(a) => Ok(a.clone()),
                Tensor::Flat(a) => Err(Error::input(
                    &model.path,
                    format!(
                        "layer '{name}' ({}) needs a sequence (batch, timesteps, features); it receives shape {:?}",
                        layer.class_name,
                        a.shape()
                    ),
                )),
            }
        };
        value = match &layer.kind {
            LayerKind::Input | LayerKind::Identity => value,
            LayerKind::Masking { mask_value } => {
                let x = need_seq(&value)?;
                let m = engine::mask_from_value(x.view(), T::lit(*mask_value));
                let mut y = x;
                for ((b, t), &keep) in m.indexed_iter() {
                    if !keep {
                        y.slice_mut(s![b, t, ..]).fill(T::zero());
                    }
                }
                mask = Some(m);
                Tensor::Seq(y)
            }
            LayerKind::Recurrent(r) => {
                let x = need_seq(&value)?;
                let l = run_recurrent(model, name, r, &x, mask.as_ref(), kernels)?;
                let v = if r.return_sequences {
                    Tensor::Seq(sequence_output(&l, r.zero_output_for_mask))
                } else {
                    Tensor::Flat(l.last_output.clone())
                };
                if !r.return_sequences {
                    mask = None;
                }
                layers.push(l);
                v
            }
            LayerKind::Bidirectional {
                forward,
                backward,
                merge_mode,
            } => {
                let x = need_seq(&value)?;
                let mode = merge_mode.clone().unwrap_or_default();
                let fname = format!("{name}/forward");
                let bname = format!("{name}/backward");
                let lf = run_recurrent(model, &fname, forward, &x, mask.as_ref(), kernels)?;
                let lb = run_recurrent(model, &bname, backward, &x, mask.as_ref(), kernels)?;
                let bad_mode = || {
                    Error::input(
                        &model.path,
                        format!(
                            "layer '{name}': merge_mode {mode:?} is not supported (concat, sum, mul, ave)"
                        ),
                    )
                };
                let v = if forward.return_sequences {
                    let of = sequence_output(&lf, forward.zero_output_for_mask);
                    let mut ob = sequence_output(&lb, backward.zero_output_for_mask);
                    if backward.go_backwards {
                        ob.invert_axis(Axis(1)); // back to time order
                    }
                    let (bn, t, _) = of.dim();
                    let mut rows = Vec::with_capacity(bn * t);
                    for bi in 0..bn {
                        for ti in 0..t {
                            let m = merge(
                                &mode,
                                of.slice(s![bi, ti..ti + 1, ..]),
                                ob.slice(s![bi, ti..ti + 1, ..]),
                            )
                            .ok_or_else(bad_mode)?;
                            rows.extend(m.iter().copied());
                        }
                    }
                    let width = rows.len() / (bn * t).max(1);
                    Tensor::Seq(
                        Array3::from_shape_vec((bn, t, width), rows)
                            .map_err(|e| Error::input(&model.path, e.to_string()))?,
                    )
                } else {
                    mask = None;
                    Tensor::Flat(
                        merge(&mode, lf.last_output.view(), lb.last_output.view())
                            .ok_or_else(bad_mode)?,
                    )
                };
                layers.push(lf);
                layers.push(lb);
                v
            }
            LayerKind::Dense {
                kernel,
                bias,
                activation,
            }
            | LayerKind::TimeDistributedDense {
                kernel,
                bias,
                activation,
            } => dense(model, name, &value, kernel, bias.as_ref(), activation)?,
            LayerKind::Activation { activation } => {
                let a = act(model, name, activation)?;
                match value {
                    Tensor::Flat(mut v) => {
                        a.apply_rows(v.view_mut());
                        Tensor::Flat(v)
                    }
                    Tensor::Seq(v) => {
                        let (bn, t, f) = v.dim();
                        let mut flat = v
                            .into_shape_with_order((bn * t, f))
                            .map_err(|e| Error::input(&model.path, e.to_string()))?;
                        a.apply_rows(flat.view_mut());
                        Tensor::Seq(
                            flat.into_shape_with_order((bn, t, f))
                                .map_err(|e| Error::input(&model.path, e.to_string()))?,
                        )
                    }
                }
            }
            LayerKind::Flatten => {
                mask = None;
                Tensor::Flat(value.rows())
            }
            LayerKind::Reshape { target_shape } => {
                let rows = value.rows();
                let (bn, n) = rows.dim();
                let known: i64 = target_shape.iter().filter(|&&d| d > 0).product();
                let dims: Vec<usize> = target_shape
                    .iter()
                    .map(|&d| {
                        if d < 0 {
                            if known > 0 { n / known as usize } else { 0 }
                        } else {
                            d as usize
                        }
                    })
                    .collect();
                if dims.iter().product::<usize>() != n {
                    return Err(Error::input(
                        &model.path,
                        format!(
                            "layer '{name}': cannot reshape {n} values per sequence to {target_shape:?}"
                        ),
                    ));
                }
                mask = None;
                match dims.as_slice() {
                    [_] => Tensor::Flat(rows),
                    [t, f] => Tensor::Seq(
                        rows.into_shape_with_order((bn, *t, *f))
                            .map_err(|e| Error::input(&model.path, e.to_string()))?,
                    ),
                    _ => {
                        return Err(Error::input(
                            &model.path,
                            format!(
                                "layer '{name}': Reshape to {target_shape:?} is not supported (1 or 2 dimensions)"
                            ),
                        ));
                    }
                }
            }
        };
    }
    Ok(ModelRun {
        layers,
        output: value,
    })
}

/// Runs a whole PyTorch `nn.LSTM`/`nn.GRU` state dict: every layer `_l{k}` in order, both directions when
/// there are `_reverse` weights, each layer's input the concatenation `[forward, backward]` of the previous
/// layer's outputs in time order, as the module computes. The output is the module's `output`:
/// (batch, timesteps, directions·hidden), or with `head` (an `nn.Linear`) `head(output[:, -1, :])`.
pub fn run_torch_stack<T: Real>(
    src: &NamedArrays,
    kind: CellKind,
    x: Array3<T>,
    head: Option<&crate::weights::DenseWeights<f64>>,
) -> Result<ModelRun<T>> {
    run_torch_stack_using(src, kind, x, head, Kernels::Avx512)
}

/// [`run_torch_stack`] with the kernels capped at `kernels`.
pub fn run_torch_stack_using<T: Real>(
    src: &NamedArrays,
    kind: CellKind,
    x: Array3<T>,
    head: Option<&crate::weights::DenseWeights<f64>>,
    kernels: Kernels,
) -> Result<ModelRun<T>> {
    let names: Vec<&str> = src
        .arrays
        .iter()
        .map(|(n, _)| n.rsplit('.').next().unwrap_or(n))
        .collect();
    let layers_n = (0..)
        .take_while(|k| names.iter().any(|n| *n == format!("weight_ih_l{k}")))
        .count();
    if layers_n == 0 {
        return Err(src.error("holds no weight_ih_l0: not a PyTorch nn.LSTM/nn.GRU state dict"));
    }
    let bidirectional = names.iter().any(|n| n.ends_with("_reverse"));
    let mut input = x;
    let mut layers = Vec::new();
    for k in 0..layers_n {
        let mut outs = Vec::new();
        for reverse in if bidirectional {
            vec![false, true]
        } else {
            vec![false]
        } {
            let w = crate::weights::pytorch::from_state_dict(kind, src, k, reverse)?.cast::<T>();
            if w.features != input.shape()[2] {
                return Err(src.error(format!(
                    "layer {k} expects {} inputs; it receives {}",
                    w.features,
                    input.shape()[2]
                )));
            }
            let spec = LayerSpec {
                name: format!("l{k}{}", if reverse { "_reverse" } else { "" }),
                activation: Activation::Tanh,
                recurrent_activation: Activation::Sigmoid,
                go_backwards: reverse,
                carry_state: false,
            };
            let li = LayerInput {
                x: input.view().into(),
                mask: None,
                h0: None,
                c0: None,
            };
            let l = engine::run_layer_using(
                &w,
                &spec,
                li,
                Record::ALL,
                None,
                &mut |_, _| Ok(()),
                kernels,
            )?;
            let mut o = sequence_output(&l, false);
            if reverse {
                o.invert_axis(Axis(1)); // back to time order
            }
            outs.push(o);
            layers.push(l);
        }
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        input = ndarray::concatenate(Axis(2), &views).map_err(|e| src.error(e.to_string()))?;
    }
    let output = match head {
        None => Tensor::Seq(input),
        Some(d) => {
            // `fc(output[:, -1, :])`: the Linear on the last step of the module's output.
            let d = d.cast::<T>();
            let last = input.index_axis(Axis(1), input.shape()[1].saturating_sub(1));
            if last.ncols() != d.kernel.nrows() {
                return Err(src.error(format!(
                    "the nn.Linear head takes {} inputs; the recurrent output has {}",
                    d.kernel.nrows(),
                    last.ncols()
                )));
            }
            let mut y = last.dot(&d.kernel);
            if let Some(b) = &d.bias {
                for mut row in y.rows_mut() {
                    row.zip_mut_with(b, |v, &bv| *v = *v + bv);
                }
            }
            Tensor::Flat(y)
        }
    };
    Ok(ModelRun { layers, output })
}
