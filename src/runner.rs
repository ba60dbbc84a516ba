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

/// The validated cell weights of one recurrent layer.
fn cell_weights<T: Real>(model: &SavedModel, layer: &str, r: &Recurrent) -> Result<CellWeights<T>> {
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

/// What a model run records of its recurrent layers.
///
/// Every layer records what the next one needs (a `return_sequences` layer's output sequence, streamed into
/// the next layer's input block by block), what `keep` asks for in memory, and what the stream asks for.
pub struct Recording<'a, T> {
    /// What the returned traces hold. With [`Record::NONE`] each layer runs streamed
    /// ([`engine::STREAM_STEPS`] steps at a time), its trace holds only final states and outputs, and its
    /// input is not kept either (`x` has 0 timesteps); anything else keeps every step in memory.
    pub keep: Record,
    /// Receives every block of every recurrent layer as it is computed (an `.npz` trace).
    pub stream: Option<&'a mut dyn LayerSink<T>>,
}

impl<T> Recording<'_, T> {
    /// Everything in memory, nothing streamed: what [`run_model`] does.
    pub fn all() -> Recording<'static, T> {
        Recording {
            keep: Record::ALL,
            stream: None,
        }
    }
}

/// Receives the recorded steps of every recurrent layer of a model run.
pub trait LayerSink<T> {
    /// What to record of every layer for this sink.
    fn record(&self) -> Record;
    /// One block of steps of layer `layer` (its traced name: a Bidirectional's `name/forward`), the first
    /// being processing step `t0`.
    fn block(&mut self, layer: &str, t0: usize, stores: &engine::Stores<T>) -> Result<()>;
}

fn union(a: Record, b: Record) -> Record {
    Record {
        gates: a.gates || b.gates,
        pre: a.pre || b.pre,
        states: a.states || b.states,
    }
}

/// Runs one recurrent layer (or one direction of a Bidirectional) over `x`; with `sequence`, also returns
/// its `return_sequences` output in processing order `(batch, steps, units)`, zeros at masked steps when
/// `zero_output_for_mask`.
#[allow(clippy::too_many_arguments)]
fn run_recurrent<T: Real>(
    model: &SavedModel,
    name: &str,
    r: &Recurrent,
    x: ndarray::CowArray<'_, T, ndarray::Ix3>,
    mask: Option<&Array2<bool>>,
    kernels: Kernels,
    sequence: bool,
    rec: &mut Recording<'_, T>,
) -> Result<(LayerTrace<T>, Option<Array3<T>>)> {
    let w = cell_weights::<T>(model, name, r)?;
    let (batch, _, features) = x.dim();
    let carry_state = stateful_carry(model, name, r, batch)?;
    if features != w.features {
        return Err(Error::input(
            &model.path,
            format!(
                "layer '{name}' expects {} features per step; it receives {features}",
                w.features,
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
        x,
        mask: mask.map(|m| m.view()),
        h0: None,
        c0: None,
    };
    trace_layer(
        &w,
        &spec,
        input,
        kernels,
        sequence.then_some(r.zero_output_for_mask),
        rec,
    )
}

/// Runs `w` through the engine, recording what `rec` and the next layer need (`sequence`: the output
/// sequence is needed, zeroed at masked steps when `Some(true)`).
fn trace_layer<T: Real>(
    w: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    kernels: Kernels,
    sequence: Option<bool>,
    rec: &mut Recording<'_, T>,
) -> Result<(LayerTrace<T>, Option<Array3<T>>)> {
    let (batch, steps, features) = input.x.dim();
    let u = w.units;
    let mut record = rec.keep;
    if let Some(s) = rec.stream.as_ref() {
        record = union(record, s.record());
    }
    if sequence.is_some() {
        record = union(record, Record::STATES);
    }
    let lean = rec.keep == Record::NONE;
    let chunk = lean.then_some(engine::STREAM_STEPS);
    let mut seq_out = sequence.map(|_| Array3::<T>::zeros((batch, steps, u)));
    let zero_masked = sequence == Some(true);
    let name = spec.name.as_str();
    let stream = &mut rec.stream;
    let mut sink = |t0: usize, st: &engine::Stores<T>| -> Result<()> {
        if let Some(o) = seq_out.as_mut() {
            let src = st
                .out
                .as_ref()
                .or(st.h.as_ref())
                .expect("states are recorded when the output sequence is needed");
            for k in 0..st.steps() {
                for b in 0..batch {
                    let mut dst = o.slice_mut(s![b, t0 + k, ..]);
                    if zero_masked && st.masked[[k, b]] {
                        dst.fill(T::zero());
                    } else {
                        dst.assign(&src.slice(s![k, b, ..]));
                    }
                }
            }
        }
        if let Some(s) = stream.as_mut() {
            s.block(name, t0, st)?;
        }
        Ok(())
    };
    let mut l = engine::run_layer_using(w, spec, input, record, chunk, &mut sink, kernels)?;
    if lean {
        l.x = Array3::zeros((batch, 0, features));
    }
    Ok((l, seq_out))
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
    run_model_recording(model, x, kernels, &mut Recording::all())
}

/// [`run_model_using`] recording what `rec` asks for (and streaming it to `rec.stream`).
pub fn run_model_recording<T: Real>(
    model: &SavedModel,
    x: Tensor<T>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
) -> Result<ModelRun<T>> {
    let mut value = x;
    let mut mask: Option<Array2<bool>> = None;
    let mut layers = Vec::new();
    for layer in model.compute_layers() {
        let name = layer.name.as_str();
        let need_seq = |v: Tensor<T>| -> Result<Array3<T>> {
            match v {
                Tensor::Seq(a) => Ok(a),
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
                let x = need_seq(value)?;
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
                let x = need_seq(value)?;
                let (l, seq) = run_recurrent(
                    model,
                    name,
                    r,
                    x.into(),
                    mask.as_ref(),
                    kernels,
                    r.return_sequences,
                    rec,
                )?;
                let v = match seq {
                    Some(o) => Tensor::Seq(o),
                    None => Tensor::Flat(l.last_output.clone()),
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
                let x = need_seq(value)?;
                let mode = merge_mode.clone().unwrap_or_default();
                let fname = format!("{name}/forward");
                let bname = format!("{name}/backward");
                let (lf, of) = run_recurrent(
                    model,
                    &fname,
                    forward,
                    x.view().into(),
                    mask.as_ref(),
                    kernels,
                    forward.return_sequences,
                    rec,
                )?;
                let (lb, ob) = run_recurrent(
                    model,
                    &bname,
                    backward,
                    x.into(),
                    mask.as_ref(),
                    kernels,
                    forward.return_sequences,
                    rec,
                )?;
                let bad_mode = || {
                    Error::input(
                        &model.path,
                        format!(
                            "layer '{name}': merge_mode {mode:?} is not supported (concat, sum, mul, ave)"
                        ),
                    )
                };
                let v = if let (Some(of), Some(mut ob)) = (of, ob) {
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
/// (batch, timesteps, directions·hidden).
pub fn run_torch_stack<T: Real>(
    src: &NamedArrays,
    kind: CellKind,
    x: Array3<T>,
) -> Result<ModelRun<T>> {
    run_torch_stack_using(src, kind, x, Kernels::Avx512)
}

/// [`run_torch_stack`] with the kernels capped at `kernels`.
pub fn run_torch_stack_using<T: Real>(
    src: &NamedArrays,
    kind: CellKind,
    x: Array3<T>,
    kernels: Kernels,
) -> Result<ModelRun<T>> {
    run_torch_stack_recording(src, kind, x, kernels, &mut Recording::all())
}

/// [`run_torch_stack_using`] recording what `rec` asks for (and streaming it to `rec.stream`).
pub fn run_torch_stack_recording<T: Real>(
    src: &NamedArrays,
    kind: CellKind,
    x: Array3<T>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
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
            let (l, o) = trace_layer(&w, &spec, li, kernels, Some(false), rec)?;
            let mut o = o.expect("the output sequence was asked for");
            if reverse {
                o.invert_axis(Axis(1)); // back to time order
            }
            outs.push(o);
            layers.push(l);
        }
        let views: Vec<_> = outs.iter().map(|o| o.view()).collect();
        input = ndarray::concatenate(Axis(2), &views).map_err(|e| src.error(e.to_string()))?;
    }
    Ok(ModelRun {
        layers,
        output: Tensor::Seq(input),
    })
}
