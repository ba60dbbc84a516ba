/*!
Runs a whole saved model (`rnntrace run --model`): the layers of a [`SavedModel`] in order, every recurrent
layer through the same engine as the single-cell commands (so it is traced the same way), masks propagated
as Keras propagates them.

Values flow as a [`Tensor`]: a sequence `(batch, timesteps, features)` or a flat `(batch, features)`, with
the Keras mask `(batch, timesteps)` riding along until a layer drops it.

A layer under a float16/bfloat16 dtype policy ([`crate::model::Layer::policy`]) casts its input and its
variables to the compute type and rounds every op where TensorFlow does ([`crate::cell::rounding`]): the
recurrent layers through the engine's rounded cells, Dense, Conv1D, Embedding, activations and dot-product
Attention op by op here, every other layer's output rounded once (Keras computes the normalisations in
float32 and casts back).
*/

use crate::cell::Kernels;
use crate::cell::{Activation, DtypePolicy, Real};
use crate::engine::{self, LayerInput, LayerSpec};
use crate::error::{Error, Result};
use crate::model::{LayerKind, Recurrent, RecurrentCell, SavedModel, layers};
use crate::trace::{LayerTrace, Record};
use crate::weights::keras::{ResetAfter, from_arrays};
use crate::weights::{CellKind, CellWeights, NamedArrays};
use ndarray::{Array1, Array2, Array3, ArrayView2, Axis, s};

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
    /// The model's output (its first, when it has several).
    pub output: Tensor<T>,
    /// Every output of the model, in the model's order.
    pub outputs: Vec<Tensor<T>>,
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

/// Runs one recurrent layer (or one direction of a Bidirectional) over `x`; with `sequence`, also returns
/// its `return_sequences` output in processing order `(batch, steps, h_units)`, zeros at masked steps when
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
    run_recurrent_from(
        model,
        name,
        r,
        x,
        mask,
        (None, None),
        kernels,
        sequence,
        rec,
    )
}

/// [`run_recurrent`] from given initial states `(h0, c0)` (`initial_state=[h, c]`), zeros where absent.
#[allow(clippy::too_many_arguments)]
fn run_recurrent_from<T: Real>(
    model: &SavedModel,
    name: &str,
    r: &Recurrent,
    x: ndarray::CowArray<'_, T, ndarray::Ix3>,
    mask: Option<&Array2<bool>>,
    (h0, c0): (Option<Array2<T>>, Option<Array2<T>>),
    kernels: Kernels,
    sequence: bool,
    rec: &mut Recording<'_, T>,
) -> Result<(LayerTrace<T>, Option<Array3<T>>)> {
    let mut w = cell_weights::<T>(model, name, r)?;
    // Keras casts the variables, the input and the initial states to the compute type before use.
    let (x, h0, c0) = match r.policy {
        None => (x, h0, c0),
        Some(p) => {
            round_weights(&mut w, p);
            let round = |a: Array2<T>| a.mapv(|v| p.round(v));
            (
                ndarray::CowArray::from(x.mapv(|v| p.round(v))),
                h0.map(round),
                c0.map(round),
            )
        }
    };
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
        h0,
        c0,
    };
    trace_layer(
        &w,
        &spec,
        r.policy,
        input,
        kernels,
        sequence.then_some(r.zero_output_for_mask),
        rec,
    )
}

/// The weights of a layer under `p` in its compute type: Keras casts each variable once at use.
fn round_weights<T: Real>(w: &mut CellWeights<T>, p: DtypePolicy) {
    let r = |v: &mut T| *v = p.round(*v);
    w.kernel.map_inplace(r);
    w.recurrent_kernel.map_inplace(r);
    if let Some(b) = w.bias.as_mut() {
        b.map_inplace(r);
    }
    if let Some(b) = w.recurrent_bias.as_mut() {
        b.map_inplace(r);
    }
    if let Some(pr) = w.projection.as_mut() {
        pr.map_inplace(r);
    }
}

/// Every value of a tensor rounded to `p`'s compute type.
fn round_tensor<T: Real>(p: DtypePolicy, t: Tensor<T>) -> Tensor<T> {
    match t {
        Tensor::Seq(mut a) => {
            a.mapv_inplace(|v| p.round(v));
            Tensor::Seq(a)
        }
        Tensor::Flat(mut a) => {
            a.mapv_inplace(|v| p.round(v));
            Tensor::Flat(a)
        }
    }
}

/// The dtype policies the model's layers compute under, below float32, in layer order without repeats
/// (for headers, metadata and the tolerance); empty for a float32 model.
pub fn model_policies(model: &SavedModel) -> Vec<DtypePolicy> {
    let mut out: Vec<DtypePolicy> = Vec::new();
    for p in model.layers.iter().filter_map(|l| l.policy) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Runs `w` through the engine, recording what `rec` and the next layer need (`sequence`: the output
/// sequence is needed, zeroed at masked steps when `Some(true)`). The sequence is `h_units()` wide (a
/// projected LSTM's projection width).
fn trace_layer<T: Real>(
    w: &CellWeights<T>,
    spec: &LayerSpec,
    policy: Option<DtypePolicy>,
    input: LayerInput<'_, T>,
    kernels: Kernels,
    sequence: Option<bool>,
    rec: &mut Recording<'_, T>,
) -> Result<(LayerTrace<T>, Option<Array3<T>>)> {
    let (batch, steps, features) = input.x.dim();
    let hw = w.h_units();
    let mut record = rec.keep;
    if let Some(s) = rec.stream.as_ref() {
        record = record.union(s.record());
    }
    if sequence.is_some() {
        record = record.union(Record::STATES);
    }
    let lean = rec.keep == Record::NONE;
    let chunk = lean.then_some(engine::STREAM_STEPS);
    let mut seq_out = sequence.map(|_| Array3::<T>::zeros((batch, steps, hw)));
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
    let mut l =
        engine::run_layer_policy(w, spec, policy, input, record, chunk, &mut sink, kernels)?;
    if lean {
        l.x = Array3::zeros((batch, 0, features));
    }
    Ok((l, seq_out))
}

/// What an `RNN([cells])` computed: one trace per cell, the layer's output (the last cell's) with its mask,
/// and every cell's final states in order (`h`, plus `c` for an LSTM cell).
struct StackedRun<T> {
    traces: Vec<LayerTrace<T>>,
    output: Tensor<T>,
    states: Vec<Array2<T>>,
}

/// Runs an `RNN([cells])` as Keras does: at each step the cells run in order, cell i reading cell i−1's
/// output, and at a masked step every cell keeps its state. Cell i's whole sequence depends only on cell
/// i−1's, so the cells run one after the other over the whole sequence (each traced as `NAME/cell_i`), cell
/// i reading cell i−1's per-step output in time order. `initial` is the flat list Keras takes
/// (`initial_state=[h0, c0, h1, …]`), empty for zeros.
fn run_stacked<T: Real>(
    model: &SavedModel,
    name: &str,
    cells: &[Recurrent],
    (x, mask): (&Array3<T>, Option<&Array2<bool>>),
    initial: Vec<Array2<T>>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
) -> Result<StackedRun<T>> {
    let n_states = |r: &Recurrent| if r.cell == RecurrentCell::Lstm { 2 } else { 1 };
    let wanted: usize = cells.iter().map(n_states).sum();
    let bad = |what: String| Error::input(&model.path, format!("layer '{name}': {what}"));
    if !initial.is_empty() && initial.len() != wanted {
        return Err(bad(format!(
            "is given {} initial states; its cells take {wanted} ({})",
            initial.len(),
            cells
                .iter()
                .map(|r| r.cell.class_name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some(last) = cells.last() else {
        return Err(bad("holds no cells".into()));
    };
    let mut initial = initial.into_iter();
    let mut seq = x.clone();
    let mut top_sequence = None;
    let mut traces = Vec::with_capacity(cells.len());
    let mut states = Vec::with_capacity(wanted);
    for (i, r) in cells.iter().enumerate() {
        let cell_name = format!("{name}/cell_{i}");
        let mut take = || -> Result<Option<Array2<T>>> {
            match initial.next() {
                Some(a) if a.dim() == (seq.shape()[0], r.units) => Ok(Some(a)),
                Some(a) => Err(bad(format!(
                    "an initial state of cell {i} has shape {:?}; expected ({}, {})",
                    a.shape(),
                    seq.shape()[0],
                    r.units
                ))),
                None => Ok(None),
            }
        };
        let h0 = take()?;
        let c0 = if r.cell == RecurrentCell::Lstm {
            take()?
        } else {
            None
        };
        let inner = i + 1 < cells.len();
        let (l, out) = run_recurrent_from(
            model,
            &cell_name,
            r,
            seq.view().into(),
            mask,
            (h0, c0),
            kernels,
            inner || last.return_sequences,
            rec,
        )?;
        states.push(l.final_h.clone());
        if let Some(c) = &l.final_c {
            states.push(c.clone());
        }
        match out {
            // What cell i+1 reads at each step is cell i's output at that step (masked steps are skipped
            // by cell i+1 too, so what they hold does not matter); back to time order for a backward layer.
            Some(mut next) if inner => {
                if r.go_backwards {
                    next.invert_axis(Axis(1));
                }
                seq = next;
            }
            out => top_sequence = out,
        }
        traces.push(l);
    }
    let top = traces.last().ok_or_else(|| bad("holds no cells".into()))?;
    let output = match top_sequence {
        Some(o) if last.return_sequences => Tensor::Seq(o),
        _ => Tensor::Flat(top.last_output.clone()),
    };
    Ok(StackedRun {
        traces,
        output,
        states,
    })
}

/// How many of `layers` (from the first) run as one chain, block by block ([`engine::run_chain_using`]):
/// consecutive recurrent layers, each but the last returning sequences, when nothing is kept in memory
/// (`rec.keep` is [`Record::NONE`]: the `.npz` trace or predictions only). Each layer after the first reads
/// the one before in time order as it is computed, so none may run backwards (a `go_backwards` layer, like
/// a Bidirectional's backward half, needs its whole input first), none may be stateful (state carried
/// across sequences runs them one by one), and under a mask no intermediate layer may zero its masked
/// outputs (`zero_output_for_mask`; the chain reads the outputs as recorded). Everything else runs layer by
/// layer, holding the output sequence between layers (as does a layer under a float16/bfloat16 dtype
/// policy, whose input the runner casts and whose output it rounds).
fn chain_len<T>(layers: &[&crate::model::Layer], masked: bool, rec: &Recording<'_, T>) -> usize {
    if rec.keep != Record::NONE {
        return 0;
    }
    let mut n = 0;
    for l in layers {
        let LayerKind::Recurrent(r) = &l.kind else {
            break;
        };
        // A layer under a dtype policy runs alone: the runner casts its input and rounds its output.
        if r.go_backwards || r.stateful || l.policy.is_some() || r.policy.is_some() {
            break;
        }
        n += 1;
        if !r.return_sequences || (masked && r.zero_output_for_mask) {
            break;
        }
    }
    n
}

/// Runs `chain` (see [`chain_len`]) on `value`: every layer traced and streamed as [`apply`] would, one
/// block of each layer's outputs held at a time; returns the last layer's output (its whole sequence only
/// when it returns sequences, for the layers after the chain).
fn run_chain<T: Real>(
    model: &SavedModel,
    chain: &[&crate::model::Layer],
    value: Tensor<T>,
    mask: &mut Option<Array2<bool>>,
    layers: &mut Vec<LayerTrace<T>>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
) -> Result<Tensor<T>> {
    let recs: Vec<&Recurrent> = chain
        .iter()
        .map(|l| match &l.kind {
            LayerKind::Recurrent(r) => r,
            _ => unreachable!("chain_len admits recurrent layers only"),
        })
        .collect();
    let x = match value {
        Tensor::Seq(a) => a,
        Tensor::Flat(a) => {
            return Err(Error::input(
                &model.path,
                format!(
                    "layer '{}' ({}) needs a sequence (batch, timesteps, features); it receives shape {:?}",
                    chain[0].name,
                    chain[0].class_name,
                    a.shape()
                ),
            ));
        }
    };
    let (batch, steps, features) = x.dim();
    let mut weights = Vec::with_capacity(chain.len());
    let mut specs = Vec::with_capacity(chain.len());
    let mut width = features;
    for (l, r) in chain.iter().zip(&recs) {
        let w = cell_weights::<T>(model, &l.name, r)?;
        if w.features != width {
            return Err(Error::input(
                &model.path,
                format!(
                    "layer '{}' expects {} features per step; it receives {width}",
                    l.name, w.features,
                ),
            ));
        }
        width = w.h_units();
        specs.push(LayerSpec {
            name: l.name.clone(),
            activation: act(model, &l.name, &r.activation)?,
            recurrent_activation: if r.recurrent_activation.is_empty() {
                Activation::Sigmoid
            } else {
                act(model, &l.name, &r.recurrent_activation)?
            },
            go_backwards: false,
            carry_state: false,
        });
        weights.push(w);
    }
    let mut record = rec.keep;
    if let Some(s) = rec.stream.as_ref() {
        record = record.union(s.record());
    }
    let last = *recs.last().expect("a chain has layers");
    let top = chain.len() - 1;
    if last.return_sequences {
        record = record.union(Record::STATES);
    }
    let engine_layers: Vec<engine::ChainLayer<'_, T>> = weights
        .iter()
        .zip(&specs)
        .map(|(w, spec)| engine::ChainLayer {
            weights: w,
            spec,
            policy: None,
            record,
            h0: None,
            c0: None,
        })
        .collect();
    let mut seq_out = last
        .return_sequences
        .then(|| Array3::<T>::zeros((batch, steps, width)));
    let zero_masked = last.zero_output_for_mask;
    let stream = &mut rec.stream;
    let mut sink = |k: usize, t0: usize, st: &engine::Stores<T>| -> Result<()> {
        if let (Some(o), true) = (seq_out.as_mut(), k == top) {
            let src = st
                .out
                .as_ref()
                .or(st.h.as_ref())
                .expect("states are recorded when the output sequence is needed");
            for j in 0..st.steps() {
                for b in 0..batch {
                    let mut dst = o.slice_mut(s![b, t0 + j, ..]);
                    if zero_masked && st.masked[[j, b]] {
                        dst.fill(T::zero());
                    } else {
                        dst.assign(&src.slice(s![j, b, ..]));
                    }
                }
            }
        }
        if let Some(s) = stream.as_mut() {
            s.block(&specs[k].name, t0, st)?;
        }
        Ok(())
    };
    let mut traces = engine::run_chain_using(
        engine_layers,
        (x.into(), mask.as_ref().map(|m| m.view())),
        Some(engine::STREAM_STEPS),
        &mut sink,
        kernels,
    )?;
    traces[0].x = Array3::zeros((batch, 0, features));
    let top_trace = traces.last().expect("one trace per layer");
    let out = match seq_out {
        Some(o) => Tensor::Seq(o),
        None => {
            *mask = None;
            Tensor::Flat(top_trace.last_output.clone())
        }
    };
    layers.extend(traces);
    Ok(out)
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
    policy: Option<DtypePolicy>,
) -> Result<Tensor<T>> {
    let activation = act(model, name, a)?;
    // Under a policy the kernel and bias are cast to the compute type; `x·K` is rounded as a product,
    // then `r(· + b)`, then the activation in the compute type (Keras's Dense: matmul, add, activation).
    let lit = |v: &f64| match policy {
        Some(p) => p.round(T::lit(*v)),
        None => T::lit(*v),
    };
    let kernel = Array2::from_shape_vec((k.shape[0], k.shape[1]), k.data.iter().map(lit).collect())
        .map_err(|_| {
            Error::input(
                &model.path,
                format!(
                    "layer '{name}': kernel has shape {}; expected 2-D",
                    k.shape_str()
                ),
            )
        })?;
    let bias = b.map(|b| ndarray::Array1::from(b.data.iter().map(lit).collect::<Vec<_>>()));
    let (bias, rounded_bias) = match policy {
        Some(_) => (None, bias),
        None => (bias, None),
    };
    let w = crate::weights::DenseWeights { kernel, bias };
    let apply_dense = |x: ArrayView2<'_, T>| -> Array2<T> {
        match policy {
            None => engine::dense(&w, activation, x),
            Some(p) => {
                let mut y = engine::dense(&w, Activation::Linear, x);
                y.mapv_inplace(|v| p.matmul(v));
                if let Some(b) = &rounded_bias {
                    for mut row in y.rows_mut() {
                        row.zip_mut_with(b, |v, &bv| *v = p.round(*v + bv));
                    }
                }
                p.activate_rows(activation, y.view_mut());
                y
            }
        }
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
            Ok(Tensor::Flat(apply_dense(a.view())))
        }
        Tensor::Seq(a) => {
            let (bn, t, f) = a.dim();
            check(f)?;
            let flat = a
                .to_shape((bn * t, f))
                .map_err(|e| Error::input(&model.path, e.to_string()))?;
            let y = apply_dense(flat.view());
            let o = y.ncols();
            Ok(Tensor::Seq(
                y.into_shape_with_order((bn, t, o))
                    .map_err(|e| Error::input(&model.path, e.to_string()))?,
            ))
        }
    }
}

/// A Keras activation applied to a tensor (softmax over the last axis).
fn apply_activation<T: Real>(
    model: &SavedModel,
    name: &str,
    activation: &str,
    value: Tensor<T>,
    policy: Option<DtypePolicy>,
) -> Result<Tensor<T>> {
    let a = act(model, name, activation)?;
    let rows = |m: ndarray::ArrayViewMut2<'_, T>| match policy {
        Some(p) => p.activate_rows(a, m),
        None => a.apply_rows(m),
    };
    Ok(match value {
        Tensor::Flat(mut v) => {
            rows(v.view_mut());
            Tensor::Flat(v)
        }
        Tensor::Seq(mut v) => {
            for step in v.outer_iter_mut() {
                rows(step);
            }
            Tensor::Seq(v)
        }
    })
}

/// Applies `f` to a tensor's values in C order (the last axis innermost).
fn map_data<T: Real>(value: Tensor<T>, f: impl FnOnce(&mut [T])) -> Tensor<T> {
    match value {
        Tensor::Flat(a) => {
            let mut a = a.as_standard_layout().into_owned();
            if let Some(d) = a.as_slice_mut() {
                f(d);
            }
            Tensor::Flat(a)
        }
        Tensor::Seq(a) => {
            let mut a = a.as_standard_layout().into_owned();
            if let Some(d) = a.as_slice_mut() {
                f(d);
            }
            Tensor::Seq(a)
        }
    }
}

/// A normalisation's arrays must match the last axis of what it receives.
fn check_channels<T: Real>(model: &SavedModel, name: &str, v: &Tensor<T>, n: usize) -> Result<()> {
    let last = v.shape().last().copied().unwrap_or(0);
    if last == n {
        Ok(())
    } else {
        Err(Error::input(
            &model.path,
            format!("layer '{name}' normalises {n} channels; it receives {last}"),
        ))
    }
}

/// The message for an id that is no row of an embedding table.
pub fn bad_id(name: &str, e: &layers::embedding::BadId, vocab: usize) -> String {
    format!(
        "layer '{name}' (Embedding): sequence {}, step {} holds the id {}, which is {}; ids must be \
         whole numbers in 0..{vocab} (the layer's input_dim is {vocab})",
        e.sequence,
        e.step,
        e.value,
        if e.value.fract() != 0.0 || !e.value.is_finite() {
            "not a whole number"
        } else {
            "outside the vocabulary"
        }
    )
}

fn array1<T: Real>(a: &crate::io::RawArray) -> Array1<T> {
    Array1::from(a.data.iter().map(|v| T::lit(*v)).collect::<Vec<_>>())
}

/// A loaded 2-D array (the loader checked its shape).
fn array2<T: Real>(a: &crate::io::RawArray) -> Array2<T> {
    let (r, c) = (a.shape[0], a.shape[1]);
    Array2::from_shape_fn((r, c), |(i, j)| T::lit(a.data[i * c + j]))
}

/// A loaded 3-D array (the loader checked its shape).
fn array3<T: Real>(a: &crate::io::RawArray) -> Array3<T> {
    let (x, y, z) = (a.shape[0], a.shape[1], a.shape[2]);
    Array3::from_shape_fn((x, y, z), |(i, j, k)| T::lit(a.data[(i * y + j) * z + k]))
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

/// The input of a model whose first computing layer is an `Embedding`: token ids `(batch, timesteps)`
/// (one sequence may be given as `(timesteps,)`), of any integer or float dtype holding whole numbers,
/// each checked against the vocabulary here so that a bad id is reported against the input file.
/// `None` for other models.
pub fn embedding_input(
    model: &SavedModel,
    raw: &crate::io::RawArray,
    input: &std::path::Path,
) -> Result<Option<Tensor<f64>>> {
    let Some(layer) = model.compute_layers().next() else {
        return Ok(None);
    };
    let LayerKind::Embedding { embeddings, .. } = &layer.kind else {
        return Ok(None);
    };
    let steps = model.input_shape.get(1).copied().flatten();
    let (b, t) = match raw.shape.as_slice() {
        [b, t] => (*b, *t),
        [t] => (1, *t),
        _ => {
            return Err(Error::input(
                input,
                format!(
                    "has shape {}; the model's first layer '{}' (Embedding) takes token ids (batch, timesteps)",
                    raw.shape_str(),
                    layer.name
                ),
            ));
        }
    };
    if let Some(want) = steps.filter(|&w| w != t) {
        return Err(Error::input(
            input,
            format!("has {t} timesteps per sequence; the model was built for {want}"),
        ));
    }
    let ids = Array2::from_shape_vec((b, t), raw.data.clone())
        .map_err(|e| Error::input(input, e.to_string()))?;
    let vocab = embeddings.shape[0];
    if let Some(((sequence, step), &value)) = ids
        .indexed_iter()
        .find(|(_, v)| !(v.is_finite() && v.fract() == 0.0 && **v >= 0.0 && **v < vocab as f64))
    {
        let e = layers::embedding::BadId {
            sequence,
            step,
            value,
        };
        return Err(Error::input(input, bad_id(&layer.name, &e, vocab)));
    }
    Ok(Some(Tensor::Flat(ids)))
}

/// Computes one layer (not an input, not a merge) on `value`, updating the Keras mask that rides along
/// and appending the traces of its recurrent layers to `layers`.
fn apply<T: Real>(
    model: &SavedModel,
    layer: &crate::model::Layer,
    value: Tensor<T>,
    mask: &mut Option<Array2<bool>>,
    layers: &mut Vec<LayerTrace<T>>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
) -> Result<Tensor<T>> {
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
    // A layer under a float16/bfloat16 policy casts its (floating) input to the compute type; an
    // Embedding's input is integer ids.
    let policy = layer.policy;
    let value = match policy {
        Some(p) if !matches!(layer.kind, LayerKind::Embedding { .. }) => round_tensor(p, value),
        _ => value,
    };
    let in_type = |v: f64| match policy {
        Some(p) => p.round(T::lit(v)),
        None => T::lit(v),
    };
    let value = match &layer.kind {
        LayerKind::Input | LayerKind::Identity => value,
        LayerKind::Masking { mask_value } => {
            let x = need_seq(value)?;
            let m = engine::mask_from_value(x.view(), in_type(*mask_value));
            let mut y = x;
            for ((b, t), &keep) in m.indexed_iter() {
                if !keep {
                    y.slice_mut(s![b, t, ..]).fill(T::zero());
                }
            }
            *mask = Some(m);
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
                *mask = None;
            }
            layers.push(l);
            v
        }
        LayerKind::StackedRecurrent(cells) => {
            let x = need_seq(value)?;
            let run = run_stacked(
                model,
                name,
                cells,
                (&x, mask.as_ref()),
                Vec::new(),
                kernels,
                rec,
            )?;
            if !cells.last().is_some_and(|r| r.return_sequences) {
                *mask = None;
            }
            layers.extend(run.traces);
            run.output
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
                *mask = None;
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
        } => dense(
            model,
            name,
            &value,
            kernel,
            bias.as_ref(),
            activation,
            policy,
        )?,
        LayerKind::Activation { activation } => {
            apply_activation(model, name, activation, value, policy)?
        }
        LayerKind::Merge { .. } | LayerKind::Attention { .. } | LayerKind::Dot { .. } => {
            return Err(Error::input(
                &model.path,
                format!(
                    "layer '{name}' ({}) reads several tensors; it runs only in a Functional graph",
                    layer.class_name
                ),
            ));
        }
        LayerKind::Unsupported => {
            return Err(Error::input(
                &model.path,
                format!(
                    "layer '{name}' ({}): {}",
                    layer.class_name,
                    layer.unsupported.as_deref().unwrap_or("not supported")
                ),
            ));
        }
        LayerKind::Embedding {
            embeddings,
            mask_zero,
        } => {
            let ids = match &value {
                Tensor::Flat(a) => a.mapv(T::to_f),
                Tensor::Seq(a) => {
                    return Err(Error::input(
                        &model.path,
                        format!(
                            "layer '{name}' (Embedding) takes ids (batch, timesteps); it receives shape {:?}",
                            a.shape()
                        ),
                    ));
                }
            };
            let mut table = array2::<T>(embeddings);
            if let Some(p) = policy {
                table.mapv_inplace(|v| p.round(v));
            }
            let y = layers::embedding::lookup(table.view(), ids.view())
                .map_err(|e| Error::input(&model.path, bad_id(name, &e, table.nrows())))?;
            *mask = mask_zero.then(|| layers::embedding::mask_zero(ids.view()));
            Tensor::Seq(y)
        }
        LayerKind::Conv1D {
            kernel,
            bias,
            spec,
            activation,
            channels_first,
        } => {
            let x = layers::swap_channels(need_seq(value)?, *channels_first);
            let mut k = array3::<T>(kernel);
            if let Some(p) = policy {
                k.mapv_inplace(|v| p.round(v));
            }
            if x.shape()[2] != k.shape()[1] * spec.groups {
                return Err(Error::input(
                    &model.path,
                    format!(
                        "layer '{name}' expects {} channels per step; it receives {}",
                        k.shape()[1] * spec.groups,
                        x.shape()[2]
                    ),
                ));
            }
            if spec.out_len(x.shape()[1], k.shape()[0]).is_none() {
                return Err(Error::input(
                    &model.path,
                    format!(
                        "layer '{name}': its kernel spans more than the {} steps it receives",
                        x.shape()[1]
                    ),
                ));
            }
            let b = bias.as_ref().map(array1::<T>);
            let y = match policy {
                None => {
                    layers::conv::conv1d(x.view(), k.view(), b.as_ref().map(|b| b.view()), spec)
                }
                Some(p) => {
                    // The convolution's sums rounded as a product's, then r(· + b) (Keras's Conv1D:
                    // convolution, bias add, activation, each in the compute type).
                    let mut y = layers::conv::conv1d(x.view(), k.view(), None, spec);
                    y.mapv_inplace(|v| p.matmul(v));
                    if let Some(b) = &b {
                        for mut row in y.rows_mut() {
                            row.zip_mut_with(b, |v, &bv| *v = p.round(*v + p.round(bv)));
                        }
                    }
                    y
                }
            };
            *mask = None; // Conv1D does not support masking: Keras drops the mask
            let y = layers::swap_channels(y, *channels_first);
            apply_activation(model, name, activation, Tensor::Seq(y), policy)?
        }
        LayerKind::Pool1D {
            spec,
            channels_first,
        } => {
            let x = layers::swap_channels(need_seq(value)?, *channels_first);
            if spec.out_len(x.shape()[1]).is_none() {
                return Err(Error::input(
                    &model.path,
                    format!(
                        "layer '{name}': pool_size {} is longer than the {} steps it receives",
                        spec.size,
                        x.shape()[1]
                    ),
                ));
            }
            *mask = None; // pooling layers drop the mask in Keras
            Tensor::Seq(layers::swap_channels(
                layers::pool::pool1d(x.view(), spec),
                *channels_first,
            ))
        }
        LayerKind::GlobalPool1D {
            max,
            keepdims,
            channels_first,
        } => {
            // The mask is over timesteps, axis 1 once swapped to channels_last (Keras expands it on the
            // steps axis of either format).
            let x = layers::swap_channels(need_seq(value)?, *channels_first);
            // GlobalAveragePooling1D averages the kept steps; GlobalMaxPooling1D ignores the mask.
            let y = layers::pool::global_pool1d(x.view(), mask.as_ref().map(|m| m.view()), *max);
            *mask = None;
            if *keepdims {
                let (b, c) = y.dim();
                let kept = if *channels_first {
                    (b, c, 1)
                } else {
                    (b, 1, c)
                };
                Tensor::Seq(
                    y.into_shape_with_order(kept)
                        .map_err(|e| Error::input(&model.path, e.to_string()))?,
                )
            } else {
                Tensor::Flat(y)
            }
        }
        LayerKind::BatchNorm {
            gamma,
            beta,
            moving_mean,
            moving_variance,
            epsilon,
        } => {
            let v = |a: &crate::io::RawArray| a.data.iter().map(|x| T::lit(*x)).collect::<Vec<T>>();
            let (g, b) = (gamma.as_ref().map(v), beta.as_ref().map(v));
            let (m, var) = (v(moving_mean), v(moving_variance));
            check_channels(model, name, &value, m.len())?;
            map_data(value, |d| {
                layers::norm::batch_norm(d, g.as_deref(), b.as_deref(), &m, &var, T::lit(*epsilon))
            })
        }
        LayerKind::LayerNorm {
            gamma,
            beta,
            epsilon,
            rms_scaling,
            channels,
        } => {
            let v = |a: &crate::io::RawArray| a.data.iter().map(|x| T::lit(*x)).collect::<Vec<T>>();
            let (g, b) = (gamma.as_ref().map(v), beta.as_ref().map(v));
            check_channels(model, name, &value, *channels)?;
            map_data(value, |d| {
                layers::norm::layer_norm(
                    d,
                    *channels,
                    g.as_deref(),
                    b.as_deref(),
                    T::lit(*epsilon),
                    *rms_scaling,
                )
            })
        }
        LayerKind::Relu {
            negative_slope,
            max_value,
            threshold,
        } => {
            let relu = layers::relu::ReluLayer {
                negative_slope: in_type(*negative_slope),
                max_value: max_value.map(in_type),
                threshold: in_type(*threshold),
            };
            map_data(value, |d| d.iter_mut().for_each(|x| *x = relu.apply(*x)))
        }
        LayerKind::RepeatVector { n } => {
            *mask = None;
            match &value {
                Tensor::Flat(a) => Tensor::Seq(layers::shape::repeat_vector(a.view(), *n)),
                Tensor::Seq(a) => {
                    return Err(Error::input(
                        &model.path,
                        format!(
                            "layer '{name}' (RepeatVector) takes (batch, features); it receives shape {:?}",
                            a.shape()
                        ),
                    ));
                }
            }
        }
        LayerKind::Permute { swap } => {
            let x = need_seq(value)?;
            *mask = None;
            if *swap {
                Tensor::Seq(layers::shape::swap_time_features(x.view()))
            } else {
                Tensor::Seq(x)
            }
        }
        LayerKind::ZeroPadding1D { left, right } => {
            let x = need_seq(value)?;
            *mask = None;
            Tensor::Seq(layers::shape::zero_pad(x.view(), *left, *right))
        }
        LayerKind::Cropping1D { left, right } => {
            let x = need_seq(value)?;
            *mask = None;
            Tensor::Seq(layers::shape::crop(x.view(), *left, *right).ok_or_else(|| {
                Error::input(
                    &model.path,
                    format!(
                        "layer '{name}' crops {left} + {right} steps from sequences of {}: nothing remains",
                        x.shape()[1]
                    ),
                )
            })?)
        }
        LayerKind::Flatten => {
            *mask = None;
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
            *mask = None;
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
    // What the layer returns is in its compute type: a no-op for the layers computed op by op above, the
    // one rounding of the others (pooling, normalisation, which Keras computes in float32 and casts back,
    // reshaping).
    Ok(match policy {
        Some(p) => round_tensor(p, value),
        None => value,
    })
}

/// An `--input` argument: `NAME=FILE` when NAME is one of the model's input layers (a plain path that
/// happens to contain `=` stays a path), else a path.
pub fn split_named_input(
    model: &SavedModel,
    arg: &std::path::Path,
) -> (Option<String>, std::path::PathBuf) {
    let text = arg.to_string_lossy();
    if let Some((name, file)) = text.split_once('=')
        && model
            .layers
            .iter()
            .any(|l| matches!(l.kind, LayerKind::Input) && l.name == name)
    {
        return (Some(name.to_string()), std::path::PathBuf::from(file));
    }
    (None, arg.to_path_buf())
}

/// The inputs of a Functional graph in the model's input order, from the arrays given (each with the
/// name it was given as `NAME=FILE`, or none: then in order). Each array is read as its input layer
/// declares: ids `(batch, timesteps)` for an input that feeds an Embedding (checked against its
/// vocabulary), `(batch, features)` for a 2-D input, `(batch, timesteps, features)` for a 3-D one (one
/// sequence may drop the batch axis).
pub fn assemble_inputs(
    model: &SavedModel,
    given: Vec<(Option<String>, crate::io::RawArray, std::path::PathBuf)>,
) -> Result<Vec<Tensor<f64>>> {
    let inputs: Vec<usize> = match &model.graph {
        Some(g) => g.inputs.clone(),
        None => model
            .layers
            .iter()
            .position(|l| matches!(l.kind, LayerKind::Input))
            .into_iter()
            .collect(),
    };
    let names: Vec<&str> = inputs
        .iter()
        .map(|&i| model.layers[i].name.as_str())
        .collect();
    if given.len() != inputs.len() {
        return Err(Error::usage(format!(
            "{} has {} input(s) ({}); {} --input given: repeat --input in that order, or use --input NAME=FILE",
            model.path.display(),
            inputs.len(),
            names.join(", "),
            given.len()
        )));
    }
    let named = given.iter().filter(|g| g.0.is_some()).count();
    if named != 0 && named != given.len() {
        return Err(Error::usage(
            "--input: name every input (NAME=FILE) or none".to_string(),
        ));
    }
    let mut slots: Vec<Option<(crate::io::RawArray, std::path::PathBuf)>> =
        vec![None; inputs.len()];
    for (k, (name, raw, path)) in given.into_iter().enumerate() {
        let at = match &name {
            Some(n) => names.iter().position(|m| m == n).unwrap_or(k),
            None => k,
        };
        if slots[at].is_some() {
            return Err(Error::usage(format!(
                "--input: input '{}' is given twice",
                names[at]
            )));
        }
        slots[at] = Some((raw, path));
    }
    let mut out = Vec::with_capacity(inputs.len());
    let mut files = Vec::with_capacity(inputs.len());
    for (k, slot) in slots.into_iter().enumerate() {
        let (raw, path) =
            slot.ok_or_else(|| Error::usage(format!("--input: no file for input '{}'", names[k])))?;
        files.push(path.display().to_string());
        let layer = &model.layers[inputs[k]];
        let declared = layer.output_shape.clone().unwrap_or_default();
        // Does this input feed an Embedding?
        let embedding = model.graph.as_ref().and_then(|g| {
            g.calls.iter().enumerate().find_map(|(j, c)| {
                (c.args.first().is_some_and(|s| s.layer == inputs[k])
                    && matches!(model.layers[j].kind, LayerKind::Embedding { .. }))
                .then_some(j)
            })
        });
        let shape_err = |want: String| {
            Error::input(
                &path,
                format!(
                    "has shape {}; input '{}' of the model takes {want}",
                    raw.shape_str(),
                    layer.name
                ),
            )
        };
        let fits = |want: &[Option<usize>], got: &[usize]| {
            want.len() == got.len()
                && want
                    .iter()
                    .zip(got)
                    .skip(1)
                    .all(|(w, g)| w.is_none_or(|w| w == *g))
        };
        let t = if let Some(j) = embedding {
            let sub = SavedModel {
                layers: vec![model.layers[j].clone()],
                graph: None,
                input_shape: declared.clone(),
                ..model.clone_header()
            };
            match embedding_input(&sub, &raw, &path)? {
                Some(x) => x,
                None => unreachable!("an Embedding layer"),
            }
        } else {
            let mut shape = raw.shape.clone();
            if shape.len() + 1 == declared.len() {
                shape.insert(0, 1);
            }
            if !fits(&declared, &shape) {
                let want: Vec<String> = declared
                    .iter()
                    .skip(1)
                    .map(|d| d.map_or("any".to_string(), |d| d.to_string()))
                    .collect();
                return Err(shape_err(format!("(batch, {})", want.join(", "))));
            }
            match shape.as_slice() {
                [b, f] => Tensor::Flat(
                    Array2::from_shape_vec((*b, *f), raw.data)
                        .map_err(|e| Error::input(&path, e.to_string()))?,
                ),
                [b, t, f] => Tensor::Seq(
                    Array3::from_shape_vec((*b, *t, *f), raw.data)
                        .map_err(|e| Error::input(&path, e.to_string()))?,
                ),
                _ => return Err(shape_err("a 2-D or 3-D array".into())),
            }
        };
        out.push(t);
    }
    let batch: Vec<usize> = out.iter().map(|t| t.shape()[0]).collect();
    if batch.iter().any(|&b| b != batch[0]) {
        let each: Vec<String> = names
            .iter()
            .zip(&files)
            .zip(&batch)
            .map(|((n, f), b)| format!("'{n}' ({f}) {b}"))
            .collect();
        return Err(Error::usage(format!(
            "--input: the inputs hold different numbers of sequences: {}; every input needs one row per \
             sequence",
            each.join(", ")
        )));
    }
    Ok(out)
}

/// The old name of [`run_model`].
pub use self::run_model as run;

/// Runs every layer of `model` on `x`: a sequence batch, or a flat batch for models whose input is not a
/// sequence. A Functional model that is a graph runs through [`run_graph`] with `x` as its only input.
/// The best kernels this CPU has run the layers ([`run_model_using`] to choose).
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
    if model.graph.is_some() {
        return run_graph_recording(model, vec![x], kernels, rec);
    }
    let mut value = x;
    let mut mask: Option<Array2<bool>> = None;
    let mut layers = Vec::new();
    let list: Vec<&crate::model::Layer> = model.compute_layers().collect();
    let mut i = 0;
    while i < list.len() {
        let n = chain_len(&list[i..], mask.is_some(), rec);
        if n >= 2 {
            value = run_chain(
                model,
                &list[i..i + n],
                value,
                &mut mask,
                &mut layers,
                kernels,
                rec,
            )?;
            i += n;
        } else {
            value = apply(model, list[i], value, &mut mask, &mut layers, kernels, rec)?;
            i += 1;
        }
    }
    Ok(ModelRun {
        layers,
        outputs: vec![value.clone()],
        output: value,
    })
}

/// The names of a model's outputs for messages: `'layer'`, or `'layer' #k` for a layer's k-th output
/// (a returned state); `'output'` for a model without a graph.
pub fn output_names(model: &SavedModel, n: usize) -> Vec<String> {
    match &model.graph {
        Some(g) => g
            .outputs
            .iter()
            .map(|s| {
                let name = &model.layers[s.layer].name;
                if s.tensor == 0 {
                    format!("'{name}'")
                } else {
                    format!("'{name}' #{}", s.tensor)
                }
            })
            .collect(),
        None => (0..n).map(|k| format!("#{k}")).collect(),
    }
}

/// The names of a model's outputs for files (the `.npz` trace's `outputs/<name>`, the JSON trace's
/// `outputs`): the layer's name, or `layer#k` for the layer's output k (a returned state, attention
/// scores); `output` for a model without a graph.
pub fn output_keys(model: &SavedModel, n: usize) -> Vec<String> {
    match &model.graph {
        Some(g) => g
            .outputs
            .iter()
            .map(|s| {
                let name = &model.layers[s.layer].name;
                if s.tensor == 0 {
                    name.clone()
                } else {
                    format!("{name}#{}", s.tensor)
                }
            })
            .collect(),
        None => (0..n)
            .map(|k| {
                if k == 0 {
                    "output".into()
                } else {
                    format!("output#{k}")
                }
            })
            .collect(),
    }
}

/// The names of a model's inputs in order (its input layers'); `input` for a model without a graph.
pub fn input_keys(model: &SavedModel, n: usize) -> Vec<String> {
    match &model.graph {
        Some(g) => g
            .inputs
            .iter()
            .map(|&i| model.layers[i].name.clone())
            .collect(),
        None => (0..n)
            .map(|k| {
                if k == 0 {
                    "input".into()
                } else {
                    format!("input#{k}")
                }
            })
            .collect(),
    }
}

/// What layer `i` of a graph is called on, for `inspect`: `lstm, dense #1`, initial states as
/// `initial_state=[…]`.
pub fn describe_call(model: &SavedModel, g: &crate::model::config::GraphSpec, i: usize) -> String {
    let name = |s: &crate::model::config::Source| {
        let n = &model.layers[s.layer].name;
        if s.tensor == 0 {
            n.clone()
        } else {
            format!("{n} #{}", s.tensor)
        }
    };
    let call = &g.calls[i];
    let mut parts: Vec<String> = call.args.iter().map(name).collect();
    if !call.initial_state.is_empty() {
        let states: Vec<String> = call.initial_state.iter().map(name).collect();
        parts.push(format!("initial_state=[{}]", states.join(", ")));
    }
    if !call.mask.is_empty() {
        let masks: Vec<String> = call.mask.iter().map(name).collect();
        parts.push(format!("mask={}", masks.join(", ")));
    }
    parts.extend(call.flags.iter().map(|f| format!("{f}=True")));
    parts.join(", ")
}

/// A value between the layers of a graph, with the Keras mask it carries.
type Masked<T> = (Tensor<T>, Option<Array2<bool>>);

/// Runs a Functional model's graph ([`SavedModel::graph`]): `inputs` in the model's input order, every
/// layer in topological order reading the tensors its call names (a recurrent layer's returned states
/// included, `initial_state` passed on), masks propagated as Keras 3 propagates them (merges: `Add` and
/// the other elementwise merges keep the OR of their inputs' masks when every input has one,
/// `Concatenate` the OR with unmasked inputs counting as all-kept). The outputs are the model's, in
/// order. The best kernels this CPU has run the layers ([`run_graph_using`] to choose).
pub fn run_graph<T: Real>(model: &SavedModel, inputs: Vec<Tensor<T>>) -> Result<ModelRun<T>> {
    run_graph_using(model, inputs, Kernels::Avx512)
}

/// [`run_graph`] with the kernels capped at `kernels`.
pub fn run_graph_using<T: Real>(
    model: &SavedModel,
    inputs: Vec<Tensor<T>>,
    kernels: Kernels,
) -> Result<ModelRun<T>> {
    run_graph_recording(model, inputs, kernels, &mut Recording::all())
}

/// [`run_graph_using`] recording what `rec` asks for (and streaming it to `rec.stream`).
pub fn run_graph_recording<T: Real>(
    model: &SavedModel,
    inputs: Vec<Tensor<T>>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
) -> Result<ModelRun<T>> {
    let err = |what: String| Error::input(&model.path, what);
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| err("is not a Functional graph".into()))?;
    if inputs.len() != g.inputs.len() {
        let names: Vec<&str> = g
            .inputs
            .iter()
            .map(|&i| model.layers[i].name.as_str())
            .collect();
        return Err(Error::usage(format!(
            "{} has {} inputs ({}); {} given: repeat --input in the model's order, or use --input NAME=FILE",
            model.path.display(),
            names.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    let mut values: Vec<Vec<Masked<T>>> = vec![Vec::new(); model.layers.len()];
    for (&i, x) in g.inputs.iter().zip(inputs) {
        values[i] = vec![(x, None)];
    }
    let mut traces = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        let name = layer.name.as_str();
        if matches!(layer.kind, LayerKind::Input) {
            if values[i].is_empty() {
                return Err(err(format!(
                    "input layer '{name}' is not one of the model's inputs"
                )));
            }
            continue;
        }
        let call = &g.calls[i];
        let get = |s: &crate::model::config::Source, values: &Vec<Vec<Masked<T>>>| {
            values[s.layer].get(s.tensor).cloned().ok_or_else(|| {
                err(format!(
                    "layer '{name}' reads output #{} of layer '{}', which has {} output(s) here",
                    s.tensor,
                    model.layers[s.layer].name,
                    values[s.layer].len()
                ))
            })
        };
        // A layer under a float16/bfloat16 policy casts its floating inputs to the compute type (an
        // Embedding's are ids).
        let cast = |(t, m): Masked<T>| match layer.policy {
            Some(p) if !matches!(layer.kind, LayerKind::Embedding { .. }) => {
                (round_tensor(p, t), m)
            }
            _ => (t, m),
        };
        let args = call
            .args
            .iter()
            .map(|s| get(s, &values).map(cast))
            .collect::<Result<Vec<_>>>()?;
        let states = call
            .initial_state
            .iter()
            .map(|s| get(s, &values).map(cast))
            .collect::<Result<Vec<_>>>()?;
        let mut args = args;
        // A Keras 3 recurrent call that recorded no mask ran without one although its input carries a
        // mask (Keras 3 fills in `mask` only for calls with one tensor argument: not with initial_state).
        // Its sequence output still carries the input's mask onwards (compute_mask sees it).
        let recurrent = matches!(
            layer.kind,
            LayerKind::Recurrent(_)
                | LayerKind::StackedRecurrent(_)
                | LayerKind::Bidirectional { .. }
        );
        let unmasked = if recurrent && !call.mask_recorded && call.mask.is_empty() {
            args.first_mut().and_then(|a| a.1.take())
        } else {
            None
        };
        // A mask passed by hand (`layer(x, mask=m)`) replaces the propagated one: nonzero keeps the step.
        for (arg, s) in args.iter_mut().zip(&call.mask) {
            let (m, _) = get(s, &values)?;
            let steps = match &arg.0 {
                Tensor::Seq(a) => Some(a.dim().1),
                Tensor::Flat(_) => None,
            };
            match m {
                Tensor::Flat(m) if Some(m.ncols()) == steps && m.nrows() == arg.0.shape()[0] => {
                    arg.1 = Some(m.mapv(|v| v != T::zero()));
                }
                other => {
                    return Err(err(format!(
                        "layer '{name}' is given the mask '{}' of shape {:?}; a mask is (sequences, timesteps) = ({}, {})",
                        model.layers[s.layer].name,
                        other.shape(),
                        arg.0.shape()[0],
                        steps.map_or("?".to_string(), |t| t.to_string())
                    )));
                }
            }
        }
        let outs = match &layer.kind {
            LayerKind::Merge { op, axis } => vec![merge_tensors(model, name, *op, *axis, args)?],
            LayerKind::Dot { axes, normalize } => {
                let dyns: Vec<ndarray::ArrayD<T>> = args
                    .iter()
                    .map(|(t, _)| match t {
                        Tensor::Seq(a) => a.clone().into_dyn(),
                        Tensor::Flat(a) => a.clone().into_dyn(),
                    })
                    .collect();
                let [x, y] = dyns.as_slice() else {
                    return Err(err(format!(
                        "layer '{name}' (Dot) takes two tensors; it has {}",
                        dyns.len()
                    )));
                };
                let res = |n: usize, a: i64| if a < 0 { n as i64 + a } else { a };
                let (ax, ay) = (res(x.ndim(), axes.0), res(y.ndim(), axes.1));
                if ax < 1 || ay < 1 {
                    return Err(err(format!(
                        "layer '{name}': axes {axes:?} include the batch axis"
                    )));
                }
                let z =
                    layers::merge::dot(x.view(), y.view(), ax as usize, ay as usize, *normalize)
                        .map_err(|e| err(format!("layer '{name}': {e}")))?;
                // Keras's Dot does not support masks: the output carries none.
                let t = match z.ndim() {
                    2 => Tensor::Flat(z.into_dimensionality().map_err(|e| err(e.to_string()))?),
                    3 => Tensor::Seq(z.into_dimensionality().map_err(|e| err(e.to_string()))?),
                    n => {
                        return Err(err(format!(
                            "layer '{name}': a {n}-D result; rnntrace handles 2-D and 3-D tensors"
                        )));
                    }
                };
                vec![(t, None)]
            }
            LayerKind::Attention {
                additive,
                concat,
                scale,
                concat_score_weight,
            } => {
                let seqs = args
                    .iter()
                    .map(|(t, _)| match t {
                        Tensor::Seq(a) => Ok(a.view()),
                        Tensor::Flat(_) => Err(err(format!(
                            "layer '{name}' needs sequences (batch, timesteps, features)"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (q, v) = match seqs.as_slice() {
                    [q, v] | [q, v, _] => (*q, *v),
                    _ => {
                        return Err(err(format!(
                            "layer '{name}' is called on {} tensors; expected [query, value] or [query, value, key]",
                            seqs.len()
                        )));
                    }
                };
                let k = seqs.get(2).copied().unwrap_or(v);
                if q.dim().0 != v.dim().0 || q.dim().2 != k.dim().2 || k.dim().1 != v.dim().1 {
                    return Err(err(format!(
                        "layer '{name}': query {:?}, value {:?} and key {:?} do not fit",
                        q.shape(),
                        v.shape(),
                        k.shape()
                    )));
                }
                let first = |a: &Option<crate::io::RawArray>| {
                    a.as_ref().and_then(|a| a.data.first()).map(|v| T::lit(*v))
                };
                let score = if *additive {
                    layers::attention::Score::Additive {
                        scale: scale
                            .as_ref()
                            .map(|a| a.data.iter().map(|v| T::lit(*v)).collect()),
                    }
                } else if *concat {
                    layers::attention::Score::Concat {
                        scale: first(scale),
                        weight: first(concat_score_weight).unwrap_or(T::one()),
                    }
                } else {
                    layers::attention::Score::Dot {
                        scale: first(scale),
                    }
                };
                let q_mask = args[0].1.clone();
                let (y, scores) = layers::attention::attention(
                    q,
                    v,
                    k,
                    &score,
                    q_mask.as_ref().map(|m| m.view()),
                    args[1].1.as_ref().map(|m| m.view()),
                    call.flags.iter().any(|f| f == "use_causal_mask"),
                    layer.policy,
                );
                let mut outs = vec![(Tensor::Seq(y), q_mask)];
                if call.flags.iter().any(|f| f == "return_attention_scores") {
                    // Keras's second output: the softmax weights (batch, Tq, Tv), without a mask.
                    outs.push((Tensor::Seq(scores), None));
                }
                outs
            }
            LayerKind::Bidirectional {
                forward,
                backward,
                merge_mode,
            } if !states.is_empty() || forward.return_state || merge_mode.is_none() => {
                let (x, mask) = one_sequence(name, args, &err)?;
                let states = flat_states(name, states, &err)?;
                let (outs, run) = run_bidirectional(
                    model,
                    name,
                    (forward, backward, merge_mode.as_deref()),
                    (&x, mask),
                    states,
                    kernels,
                    rec,
                )?;
                traces.extend(run);
                outs
            }
            LayerKind::StackedRecurrent(cells)
                if !states.is_empty() || cells.iter().any(|r| r.return_state) =>
            {
                let (x, mask) = one_sequence(name, args, &err)?;
                let initial = flat_states(name, states, &err)?;
                let run = run_stacked(
                    model,
                    name,
                    cells,
                    (&x, mask.as_ref()),
                    initial,
                    kernels,
                    rec,
                )?;
                let keep_mask = cells.last().is_some_and(|r| r.return_sequences);
                let mut outs = vec![(run.output, if keep_mask { mask } else { None })];
                if cells.iter().any(|r| r.return_state) {
                    outs.extend(run.states.into_iter().map(|s| (Tensor::Flat(s), None)));
                }
                traces.extend(run.traces);
                outs
            }
            LayerKind::Recurrent(r) if !states.is_empty() || r.return_state => {
                let (x, mask) = one_sequence(name, args, &err)?;
                let wanted = if r.cell == RecurrentCell::Lstm { 2 } else { 1 };
                if !states.is_empty() && states.len() != wanted {
                    return Err(err(format!(
                        "layer '{name}' is given {} initial states; a {} takes {wanted}",
                        states.len(),
                        r.cell.class_name()
                    )));
                }
                let mut flat = states.into_iter().map(|(t, _)| match t {
                    Tensor::Flat(a) if a.dim() == (x.shape()[0], r.units) => Ok(a),
                    other => Err(err(format!(
                        "layer '{name}': an initial state has shape {:?}; expected ({}, {})",
                        other.shape(),
                        x.shape()[0],
                        r.units
                    ))),
                });
                let h0 = flat.next().transpose()?;
                let c0 = flat.next().transpose()?;
                let (l, seq) = run_recurrent_from(
                    model,
                    name,
                    r,
                    x.into(),
                    mask.as_ref(),
                    (h0, c0),
                    kernels,
                    r.return_sequences,
                    rec,
                )?;
                let mut outs = vec![match seq {
                    Some(o) => (Tensor::Seq(o), mask),
                    None => (Tensor::Flat(l.last_output.clone()), None),
                }];
                if r.return_state {
                    outs.push((Tensor::Flat(l.final_h.clone()), None));
                    if let Some(c) = &l.final_c {
                        outs.push((Tensor::Flat(c.clone()), None));
                    }
                }
                traces.push(l);
                outs
            }
            _ => {
                if args.len() != 1 || !states.is_empty() {
                    return Err(err(format!(
                        "layer '{name}' ({}) is called on {} tensors; rnntrace runs it on one",
                        layer.class_name,
                        args.len() + states.len()
                    )));
                }
                let Some((v, mut m)) = args.into_iter().next() else {
                    unreachable!("one argument")
                };
                let out = apply(model, layer, v, &mut m, &mut traces, kernels, rec)?;
                vec![(out, m)]
            }
        };
        let mut outs = outs;
        if let Some(m) = unmasked {
            let keep = |o: &mut Masked<T>| {
                if let Tensor::Seq(a) = &o.0
                    && a.dim().0 == m.nrows()
                    && a.dim().1 == m.ncols()
                {
                    o.1 = Some(m.clone());
                }
            };
            let seqs = match &layer.kind {
                LayerKind::Bidirectional {
                    merge_mode: None, ..
                } => 2,
                _ => 1,
            };
            outs.iter_mut().take(seqs).for_each(keep);
        }
        values[i] = match layer.policy {
            Some(p) => outs
                .into_iter()
                .map(|(t, m)| (round_tensor(p, t), m))
                .collect(),
            None => outs,
        };
    }
    let outputs =
        g.outputs
            .iter()
            .map(|s| {
                values[s.layer].get(s.tensor).map(|(t, _)| t.clone()).ok_or_else(|| {
                err(format!(
                    "the model's output is output #{} of layer '{}', which it does not have",
                    s.tensor, model.layers[s.layer].name
                ))
            })
            })
            .collect::<Result<Vec<_>>>()?;
    Ok(ModelRun {
        layers: traces,
        output: outputs[0].clone(),
        outputs,
    })
}

/// The one sequence a recurrent call reads, with its mask.
fn one_sequence<T: Real>(
    name: &str,
    args: Vec<Masked<T>>,
    err: &dyn Fn(String) -> Error,
) -> Result<(Array3<T>, Option<Array2<bool>>)> {
    let [(x, mask)]: [Masked<T>; 1] = args.try_into().map_err(|a: Vec<_>| {
        err(format!(
            "layer '{name}' reads {} tensors; expected one sequence",
            a.len()
        ))
    })?;
    match x {
        Tensor::Seq(x) => Ok((x, mask)),
        Tensor::Flat(_) => Err(err(format!(
            "layer '{name}' needs a sequence (batch, timesteps, features)"
        ))),
    }
}

/// A call's `initial_state` tensors, each `(sequences, units)`.
fn flat_states<T: Real>(
    name: &str,
    states: Vec<Masked<T>>,
    err: &dyn Fn(String) -> Error,
) -> Result<Vec<Array2<T>>> {
    states
        .into_iter()
        .map(|(t, _)| match t {
            Tensor::Flat(a) => Ok(a),
            other => Err(err(format!(
                "layer '{name}': an initial state has shape {:?}; expected (sequences, units)",
                other.shape()
            ))),
        })
        .collect()
}

/// A `Bidirectional` in a graph, as Keras returns it: `[merged]` (or `[forward, backward]` with
/// `merge_mode=None`), then with `return_state` the forward copy's final states and the backward copy's
/// (`[h, c]` each for an LSTM, `[h]` for GRU/SimpleRNN); the sequences carry the input's mask, the states
/// none. `initial_state` is split as Keras splits it: the first half for the forward copy, the rest for
/// the backward one. Also the two directions' traces (`name/forward`, `name/backward`).
#[allow(clippy::type_complexity)]
fn run_bidirectional<T: Real>(
    model: &SavedModel,
    name: &str,
    (forward, backward, merge_mode): (&Recurrent, &Recurrent, Option<&str>),
    (x, mask): (&Array3<T>, Option<Array2<bool>>),
    states: Vec<Array2<T>>,
    kernels: Kernels,
    rec: &mut Recording<'_, T>,
) -> Result<(Vec<Masked<T>>, Vec<LayerTrace<T>>)> {
    let err = |what: String| Error::input(&model.path, format!("layer '{name}': {what}"));
    let per = |r: &Recurrent| if r.cell == RecurrentCell::Lstm { 2 } else { 1 };
    let (nf, nb) = (per(forward), per(backward));
    if !states.is_empty() && states.len() != nf + nb {
        return Err(err(format!(
            "is given {} initial states; a Bidirectional({}) takes {} (forward's, then backward's)",
            states.len(),
            forward.cell.class_name(),
            nf + nb
        )));
    }
    let mut states = states.into_iter();
    let mut take = |r: &Recurrent, n: usize| -> Result<(Option<Array2<T>>, Option<Array2<T>>)> {
        let mut got: Vec<Array2<T>> = states.by_ref().take(n).collect();
        for s in &got {
            if s.dim() != (x.dim().0, r.units) {
                return Err(err(format!(
                    "an initial state has shape {:?}; expected ({}, {})",
                    s.shape(),
                    x.dim().0,
                    r.units
                )));
            }
        }
        let c = (got.len() > 1).then(|| got.remove(1));
        Ok((got.pop(), c))
    };
    let fs = take(forward, nf)?;
    let bs = take(backward, nb)?;
    let seqs = forward.return_sequences;
    let (lf, of) = run_recurrent_from(
        model,
        &format!("{name}/forward"),
        forward,
        x.view().into(),
        mask.as_ref(),
        fs,
        kernels,
        seqs,
        rec,
    )?;
    let (lb, ob) = run_recurrent_from(
        model,
        &format!("{name}/backward"),
        backward,
        x.view().into(),
        mask.as_ref(),
        bs,
        kernels,
        seqs,
        rec,
    )?;
    let (f, b) = match (of, ob) {
        (Some(f), Some(mut b)) => {
            if backward.go_backwards {
                b.invert_axis(Axis(1)); // back to time order
            }
            (Tensor::Seq(f), Tensor::Seq(b))
        }
        _ => (
            Tensor::Flat(lf.last_output.clone()),
            Tensor::Flat(lb.last_output.clone()),
        ),
    };
    let out_mask = if seqs { mask } else { None };
    let mut outs = match merge_mode {
        None => vec![(f, out_mask.clone()), (b, out_mask)],
        Some(mode) => {
            let bad = || {
                err(format!(
                    "merge_mode {mode:?} is not supported (concat, sum, mul, ave)"
                ))
            };
            let t = match (f, b) {
                (Tensor::Seq(f), Tensor::Seq(b)) => {
                    let (n, t, _) = f.dim();
                    let f2 = f
                        .to_shape((n * t, f.dim().2))
                        .map_err(|e| err(e.to_string()))?;
                    let b2 = b
                        .as_standard_layout()
                        .to_shape((n * t, b.dim().2))
                        .map_err(|e| err(e.to_string()))?
                        .to_owned();
                    let m = merge(mode, f2.view(), b2.view()).ok_or_else(bad)?;
                    let w = m.ncols();
                    Tensor::Seq(
                        m.as_standard_layout()
                            .into_owned()
                            .into_shape_with_order((n, t, w))
                            .map_err(|e| err(e.to_string()))?,
                    )
                }
                (Tensor::Flat(f), Tensor::Flat(b)) => {
                    Tensor::Flat(merge(mode, f.view(), b.view()).ok_or_else(bad)?)
                }
                _ => return Err(err("its two directions disagree in shape".into())),
            };
            vec![(t, out_mask)]
        }
    };
    for (r, l) in [(forward, &lf), (backward, &lb)] {
        if r.return_state {
            outs.push((Tensor::Flat(l.final_h.clone()), None));
            if let Some(c) = &l.final_c {
                outs.push((Tensor::Flat(c.clone()), None));
            }
        }
    }
    Ok((outs, vec![lf, lb]))
}

/// A merge layer on its inputs, with Keras 3's output mask.
fn merge_tensors<T: Real>(
    model: &SavedModel,
    name: &str,
    op: layers::merge::MergeOp,
    axis: i64,
    args: Vec<Masked<T>>,
) -> Result<Masked<T>> {
    use layers::merge::MergeOp;
    let err = |what: String| Error::input(&model.path, format!("layer '{name}': {what}"));
    let rank = args.first().map_or(0, |(t, _)| t.shape().len());
    let ax = if axis < 0 { rank as i64 + axis } else { axis };
    if op == MergeOp::Concatenate && (ax <= 0 || ax as usize >= rank) {
        return Err(err(format!(
            "axis {axis} is not a non-batch axis of {rank}-D inputs"
        )));
    }
    let arrays: Vec<ndarray::ArrayD<T>> = args
        .iter()
        .map(|(t, _)| match t {
            Tensor::Seq(a) => a.clone().into_dyn(),
            Tensor::Flat(a) => a.clone().into_dyn(),
        })
        .collect();
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    let y = layers::merge::merge(op, &views, ax.max(0) as usize).map_err(err)?;
    let masks: Vec<Option<&Array2<bool>>> = args.iter().map(|(_, m)| m.as_ref()).collect();
    // Keras 3's Maximum/Minimum substitute the accumulator for a masked operand (tf-keras ignores masks).
    let extremum = matches!(op, MergeOp::Maximum | MergeOp::Minimum)
        && !model.keras2
        && rank == 3
        && masks.iter().any(Option::is_some);
    let y = if extremum {
        let xs: Vec<ndarray::ArrayView3<'_, T>> = arrays
            .iter()
            .map(|a| {
                a.view()
                    .into_dimensionality()
                    .map_err(|e| err(e.to_string()))
            })
            .collect::<Result<_>>()?;
        layers::merge::fold_masked_extremum(op, &xs, &masks)
            .0
            .into_dyn()
    } else {
        y
    };
    let mask = if masks.iter().all(Option::is_none) || rank != 3 {
        None
    } else if op == MergeOp::Concatenate {
        let full = |k: usize| {
            masks[k].cloned().unwrap_or_else(|| {
                Array2::from_elem((arrays[k].shape()[0], arrays[k].shape()[1]), true)
            })
        };
        let all: Vec<Array2<bool>> = (0..masks.len()).map(full).collect();
        if ax == 1 {
            let v: Vec<_> = all.iter().map(|m| m.view()).collect();
            ndarray::concatenate(Axis(1), &v).ok()
        } else {
            all.into_iter()
                .reduce(|a, b| ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| x || y))
        }
    } else if masks.iter().any(Option::is_none) {
        None
    } else {
        masks
            .into_iter()
            .flatten()
            .cloned()
            .reduce(|a, b| ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| x || y))
    };
    let t = match y.ndim() {
        2 => Tensor::Flat(y.into_dimensionality().map_err(|e| err(e.to_string()))?),
        3 => Tensor::Seq(y.into_dimensionality().map_err(|e| err(e.to_string()))?),
        n => {
            return Err(err(format!(
                "a {n}-D result; rnntrace handles 2-D and 3-D tensors"
            )));
        }
    };
    Ok((t, mask))
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
    run_torch_stack_recording(src, kind, x, head, kernels, &mut Recording::all())
}

/// [`run_torch_stack_using`] recording what `rec` asks for (and streaming it to `rec.stream`).
pub fn run_torch_stack_recording<T: Real>(
    src: &NamedArrays,
    kind: CellKind,
    x: Array3<T>,
    head: Option<&crate::weights::DenseWeights<f64>>,
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
            let (l, o) = trace_layer(&w, &spec, None, li, kernels, Some(false), rec)?;
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
    Ok(ModelRun {
        layers,
        outputs: vec![output.clone()],
        output,
    })
}
