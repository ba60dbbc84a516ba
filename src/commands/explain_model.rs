/*!
`rnntrace explain --model` for the models that are more than a chain of recurrent layers and heads: builds
the [`Graph`] the explainer differentiates from a [`SavedModel`] (every layer `run` computes), reads the inputs exactly as `run` reads them (token
ids for an input that feeds an `Embedding`, `--input` repeated or `NAME=FILE` for several inputs), looks
token ids up (attributions are taken with respect to the embedding output and summed over its
dimensions per token), checks the explained forward pass against `run`'s own, and renders per input.

Token baselines (`--baseline`): `zeros` is the id 0 at every step, i.e. the padding row of the
embedding table (what Captum's `LayerIntegratedGradients` on the embedding layer uses by default: a zero
input looked up through the layer); `mean` the mean embedding row of the input's kept tokens; a FILE
holds baseline token ids. Masks along the integrated-gradients path and under occlusion stay the
input's (the embedding output is what is replaced, as Captum replaces it).
*/

use super::explain::baseline as seq_baseline;
use super::explain_baselines::{Choice, Kind};
use crate::cell::{Activation, Kernels, Real};
use crate::cli::explain::ExplainArgs;
use crate::cli::load::{load_mask, series_input};
use crate::cli::output::{Outcome, write_stdout};
use crate::engine::LayerSpec;
use crate::error::{Error, Result, shape_str};
use crate::explain::graph::{GOp, Graph, Node, Src};
use crate::explain::graph_methods::{self, Fed, GraphExplanation, GraphRequest};
use crate::explain::network::Value;
use crate::explain::{Explanation, IgRule, InitialState, Merge, Methods, RecurrentOp};
use crate::io;
use crate::model::layers::attention::Score;
use crate::model::layers::embedding;
use crate::model::{LayerKind, Recurrent, SavedModel};
use crate::render::explain_data;
use crate::render::explain_plot;
use crate::render::explain_table::{self, ExplainReport};
use crate::runner::{self, Tensor};
use crate::weights::DenseWeights;
use ndarray::{Array1, Array2, Array3, Axis, s};
use std::path::{Path, PathBuf};

/// Whether the chain explainer ([`crate::explain::Network`]) covers the model: no graph, and only
/// Masking, recurrent layers, Bidirectional with a merge, Dense, Activation, Flatten and no-ops.
pub fn chain_covers(m: &SavedModel) -> bool {
    m.graph.is_none()
        && m.compute_layers().all(|l| {
            matches!(
                l.kind,
                LayerKind::Input
                    | LayerKind::Identity
                    | LayerKind::Masking { .. }
                    | LayerKind::Recurrent(_)
                    | LayerKind::Bidirectional { .. }
                    | LayerKind::Dense { .. }
                    | LayerKind::TimeDistributedDense { .. }
                    | LayerKind::Activation { .. }
                    | LayerKind::Flatten
            )
        })
}

/// How a model input reaches the graph.
#[derive(Debug, Clone)]
enum InputKind<T> {
    /// `(batch, timesteps, features)` or `(batch, features)`, fed as read.
    Plain,
    /// Token ids looked up in `table` by the Embedding `name`.
    Tokens { table: Array2<T>, mask_zero: bool },
    /// Read only as a mask passed by hand (`layer(x, mask=m)`): a selector, not a quantity. Held at its
    /// value on every path point, baseline and occlusion (its baseline is itself) and never
    /// differentiated, so every attribution to it is zero; it is still reported, like every input.
    HeldMask,
}

/// The `mask_value` of a Masking layer reading the model input `input` directly (in a Sequential model or a
/// chain: a Masking first layer), if there is one.
fn masking_value(m: &SavedModel, input: &str) -> Option<f64> {
    let masking = |l: &crate::model::Layer| match l.kind {
        LayerKind::Masking { mask_value } => Some(mask_value),
        _ => None,
    };
    match &m.graph {
        Some(g) => {
            let k = *g
                .inputs
                .iter()
                .find(|&&k| m.layers.get(k).is_some_and(|l| l.name == input))?;
            m.layers.iter().enumerate().find_map(|(i, l)| {
                let call = g.calls.get(i)?;
                (call
                    .args
                    .first()
                    .is_some_and(|s| s.layer == k && s.tensor == 0))
                .then(|| masking(l))
                .flatten()
            })
        }
        None => m
            .layers
            .iter()
            .find(|l| !matches!(l.kind, LayerKind::Input))
            .and_then(masking),
    }
}

fn act(m: &SavedModel, layer: &str, name: &str) -> Result<Activation> {
    Activation::parse(name).map_err(|e| Error::input(&m.path, format!("layer '{layer}': {e}")))
}

fn rec_op<T: Real>(m: &SavedModel, name: &str, r: &Recurrent) -> Result<RecurrentOp<T>> {
    if r.stateful && m.input_shape.first().copied().flatten() == Some(1) {
        return Err(Error::input(
            &m.path,
            format!(
                "layer '{name}' is stateful with batch size 1 (each sequence starts from the previous one's state); explain treats sequences independently"
            ),
        ));
    }
    Ok(RecurrentOp {
        weights: runner::cell_weights::<T>(m, name, r)?,
        spec: LayerSpec {
            name: name.to_string(),
            activation: act(m, name, &r.activation)?,
            recurrent_activation: if r.recurrent_activation.is_empty() {
                Activation::Sigmoid
            } else {
                act(m, name, &r.recurrent_activation)?
            },
            go_backwards: r.go_backwards,
            carry_state: false,
        },
        return_sequences: r.return_sequences,
        zero_output_for_mask: r.zero_output_for_mask,
    })
}

fn vec_t<T: Real>(a: &io::RawArray) -> Vec<T> {
    a.data.iter().map(|v| T::lit(*v)).collect()
}

fn array2<T: Real>(a: &io::RawArray) -> Array2<T> {
    let (r, c) = (a.shape[0], a.shape[1]);
    Array2::from_shape_fn((r, c), |(i, j)| T::lit(a.data[i * c + j]))
}

/// One layer's operation.
fn op_of<T: Real>(m: &SavedModel, layer: &crate::model::Layer) -> Result<GOp<T>> {
    let name = layer.name.as_str();
    Ok(match &layer.kind {
        LayerKind::Input => GOp::Input,
        LayerKind::Identity => GOp::Identity,
        LayerKind::Masking { mask_value } => GOp::Masking(T::lit(*mask_value)),
        LayerKind::Recurrent(r) => GOp::Recurrent {
            op: rec_op(m, name, r)?,
            return_state: r.return_state,
        },
        LayerKind::Bidirectional {
            forward,
            backward,
            merge_mode,
        } => {
            // merge_mode=None: the two directions' sequences are the first two outputs.
            let merge = match merge_mode {
                None => None,
                Some(mode) => Some(Merge::parse(mode).ok_or_else(|| {
                    Error::input(
                        &m.path,
                        format!(
                            "layer '{name}': merge_mode {mode:?} is not supported (concat, sum, mul, ave)"
                        ),
                    )
                })?),
            };
            GOp::Bidirectional {
                forward: rec_op(m, &format!("{name}/forward"), forward)?,
                backward: rec_op(m, &format!("{name}/backward"), backward)?,
                merge,
                return_state: forward.return_state,
            }
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
        } => GOp::Dense {
            weights: DenseWeights {
                kernel: array2(kernel),
                bias: bias.as_ref().map(|b| Array1::from(vec_t::<T>(b))),
            },
            activation: act(m, name, activation)?,
        },
        LayerKind::Activation { activation } => GOp::Activation(act(m, name, activation)?),
        LayerKind::Relu {
            negative_slope,
            max_value,
            threshold,
        } => GOp::Relu {
            negative_slope: T::lit(*negative_slope),
            max_value: max_value.map(T::lit),
            threshold: T::lit(*threshold),
        },
        LayerKind::Flatten => GOp::Flatten,
        LayerKind::Reshape { target_shape } => GOp::Reshape(target_shape.clone()),
        LayerKind::Conv1D {
            kernel,
            bias,
            spec,
            activation,
            channels_first,
        } => {
            let (x, y, z) = (kernel.shape[0], kernel.shape[1], kernel.shape[2]);
            GOp::Conv1D {
                kernel: Array3::from_shape_fn((x, y, z), |(i, j, k)| {
                    T::lit(kernel.data[(i * y + j) * z + k])
                }),
                bias: bias.as_ref().map(|b| Array1::from(vec_t::<T>(b))),
                spec: *spec,
                activation: act(m, name, activation)?,
                channels_first: *channels_first,
            }
        }
        LayerKind::Pool1D {
            spec,
            channels_first,
        } => GOp::Pool1D(*spec, *channels_first),
        LayerKind::GlobalPool1D {
            max,
            keepdims,
            channels_first,
        } => GOp::GlobalPool {
            max: *max,
            keepdims: *keepdims,
            channels_first: *channels_first,
        },
        LayerKind::BatchNorm {
            gamma,
            beta,
            moving_mean,
            moving_variance,
            epsilon,
        } => GOp::BatchNorm {
            gamma: gamma.as_ref().map(vec_t),
            beta: beta.as_ref().map(vec_t),
            mean: vec_t(moving_mean),
            variance: vec_t(moving_variance),
            epsilon: T::lit(*epsilon),
        },
        LayerKind::LayerNorm {
            gamma,
            beta,
            epsilon,
            rms_scaling,
            channels,
        } => GOp::LayerNorm {
            gamma: gamma.as_ref().map(vec_t),
            beta: beta.as_ref().map(vec_t),
            epsilon: T::lit(*epsilon),
            rms_scaling: *rms_scaling,
            channels: *channels,
        },
        LayerKind::RepeatVector { n } => GOp::RepeatVector(*n),
        LayerKind::Permute { swap } => GOp::Permute(*swap),
        LayerKind::ZeroPadding1D { left, right } => GOp::ZeroPad(*left, *right),
        LayerKind::Cropping1D { left, right } => GOp::Crop(*left, *right),
        LayerKind::Merge { op, axis } => GOp::Merge {
            op: *op,
            axis: *axis,
            masked_extremum: !m.keras2,
        },
        LayerKind::Dot { axes, normalize } => GOp::Dot {
            axes: *axes,
            normalize: *normalize,
        },
        LayerKind::Embedding { .. } => {
            return Err(Error::input(
                &m.path,
                format!(
                    "layer '{name}' (Embedding) does not read a model input directly; explain attributes token inputs through the Embedding that reads them"
                ),
            ));
        }
        LayerKind::Attention {
            additive,
            concat,
            scale,
            concat_score_weight,
        } => {
            // The score as `run` builds it (crate::runner::run_graph).
            let first = |a: &Option<io::RawArray>| {
                a.as_ref().and_then(|a| a.data.first()).map(|v| T::lit(*v))
            };
            let score = if *additive {
                Score::Additive {
                    scale: scale.as_ref().map(vec_t),
                }
            } else if *concat {
                Score::Concat {
                    scale: first(scale),
                    weight: first(concat_score_weight).unwrap_or(T::one()),
                }
            } else {
                Score::Dot {
                    scale: first(scale),
                }
            };
            GOp::Attention {
                score,
                // set from the call's flags by `build`
                causal: false,
                return_scores: false,
            }
        }
        LayerKind::StackedRecurrent(cells) => {
            let n = cells.len();
            GOp::Stacked {
                cells: cells
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut op = rec_op(m, &format!("{name}/cell_{i}"), r)?;
                        // Inner cells hand their whole sequence to the next cell.
                        op.return_sequences = op.return_sequences || i + 1 < n;
                        Ok(op)
                    })
                    .collect::<Result<Vec<_>>>()?,
                return_state: cells.iter().any(|r| r.return_state),
            }
        }
        LayerKind::Unsupported => {
            return Err(Error::input(
                &m.path,
                format!(
                    "layer '{name}' ({}): {}",
                    layer.class_name,
                    layer.unsupported.as_deref().unwrap_or("not supported")
                ),
            ));
        }
    })
}

/// The graph of `m` at precision `T`, with how each model input is fed.
fn build<T: Real>(m: &SavedModel, kernels: Kernels) -> Result<(Graph<T>, Vec<InputKind<T>>)> {
    let mut nodes = Vec::with_capacity(m.layers.len() + 1);
    let (mut inputs, outputs);
    match &m.graph {
        Some(g) => {
            for (i, layer) in m.layers.iter().enumerate() {
                let call = &g.calls[i];
                let src = |s: &crate::model::config::Source| Src {
                    node: s.layer,
                    tensor: s.tensor,
                };
                let mut op = if matches!(layer.kind, LayerKind::Embedding { .. }) {
                    GOp::Input // fed with the looked-up ids (checked below)
                } else {
                    op_of(m, layer)?
                };
                if let GOp::Attention {
                    causal,
                    return_scores,
                    ..
                } = &mut op
                {
                    *causal = call.flags.iter().any(|f| f == "use_causal_mask");
                    *return_scores = call.flags.iter().any(|f| f == "return_attention_scores");
                }
                // A Keras 3 recurrent call that recorded no mask ran without one (as `run` runs it).
                let recurrent = matches!(
                    layer.kind,
                    LayerKind::Recurrent(_)
                        | LayerKind::StackedRecurrent(_)
                        | LayerKind::Bidirectional { .. }
                );
                nodes.push(Node {
                    name: layer.name.clone(),
                    op,
                    args: call.args.iter().map(src).collect(),
                    states: call.initial_state.iter().map(src).collect(),
                    masks: call.mask.iter().map(src).collect(),
                    drops_mask: recurrent && !call.mask_recorded && call.mask.is_empty(),
                });
            }
            inputs = g.inputs.clone();
            outputs = g
                .outputs
                .iter()
                .map(|s| Src {
                    node: s.layer,
                    tensor: s.tensor,
                })
                .collect();
        }
        None => {
            nodes.push(Node {
                name: "input".into(),
                op: GOp::Input,
                args: Vec::new(),
                states: Vec::new(),
                masks: Vec::new(),
                drops_mask: false,
            });
            for layer in m.compute_layers() {
                let prev = nodes.len() - 1;
                let op = if matches!(layer.kind, LayerKind::Embedding { .. }) {
                    if prev != 0 {
                        return Err(Error::input(
                            &m.path,
                            format!(
                                "layer '{}' (Embedding) is not the first layer; explain attributes token inputs through the Embedding that reads them",
                                layer.name
                            ),
                        ));
                    }
                    GOp::Input
                } else {
                    op_of(m, layer)?
                };
                nodes.push(Node {
                    name: layer.name.clone(),
                    op,
                    args: vec![Src {
                        node: prev,
                        tensor: 0,
                    }],
                    states: Vec::new(),
                    masks: Vec::new(),
                    drops_mask: false,
                });
            }
            inputs = vec![0];
            outputs = vec![Src {
                node: nodes.len() - 1,
                tensor: 0,
            }];
        }
    }
    // An input feeding an Embedding is fed through it: the Embedding node becomes the graph's input.
    let mut kinds = Vec::with_capacity(inputs.len());
    let layer_of = |node: usize| -> Option<&crate::model::Layer> {
        match &m.graph {
            Some(_) => m.layers.get(node),
            None => m.compute_layers().nth(node.wrapping_sub(1)),
        }
    };
    for slot in inputs.iter_mut() {
        let readers: Vec<usize> = (0..nodes.len())
            .filter(|&j| nodes[j].args.iter().any(|s| s.node == *slot))
            .collect();
        let as_mask = nodes
            .iter()
            .any(|n| n.masks.iter().any(|s| s.node == *slot));
        let as_state = nodes
            .iter()
            .any(|n| n.states.iter().any(|s| s.node == *slot));
        if as_mask && readers.is_empty() && !as_state {
            kinds.push(InputKind::HeldMask);
            continue;
        }
        let emb: Vec<usize> = readers
            .iter()
            .copied()
            .filter(|&j| layer_of(j).is_some_and(|l| matches!(l.kind, LayerKind::Embedding { .. })))
            .collect();
        if emb.is_empty() {
            kinds.push(InputKind::Plain);
            continue;
        }
        if as_mask {
            return Err(Error::input(
                &m.path,
                format!(
                    "input '{}' feeds an Embedding and is also passed by hand as a mask; explain attributes a token input through the one Embedding that reads it",
                    nodes[*slot].name
                ),
            ));
        }
        if readers.len() != 1 {
            return Err(Error::input(
                &m.path,
                format!(
                    "input '{}' feeds an Embedding and {} other layer(s); explain attributes a token input through the one Embedding that reads it",
                    nodes[*slot].name,
                    readers.len() - 1
                ),
            ));
        }
        let j = emb[0];
        let Some(LayerKind::Embedding {
            embeddings,
            mask_zero,
        }) = layer_of(j).map(|l| &l.kind)
        else {
            unreachable!("an Embedding")
        };
        nodes[j].args.clear();
        *slot = j;
        kinds.push(InputKind::Tokens {
            table: array2(embeddings),
            mask_zero: *mask_zero,
        });
    }
    // An Embedding that no model input feeds directly was not turned into an input.
    for (j, n) in nodes.iter().enumerate() {
        if matches!(n.op, GOp::Input) && !n.args.is_empty() && !inputs.contains(&j) {
            return Err(Error::input(
                &m.path,
                format!(
                    "layer '{}' (Embedding) does not read a model input directly; explain attributes token inputs through the Embedding that reads them",
                    n.name
                ),
            ));
        }
    }
    if !nodes.iter().any(|n| {
        matches!(
            n.op,
            GOp::Recurrent { .. } | GOp::Stacked { .. } | GOp::Bidirectional { .. }
        )
    }) {
        return Err(Error::input(&m.path, "holds no recurrent layer to explain"));
    }
    Ok((
        Graph {
            nodes,
            inputs,
            outputs,
            kernels,
        },
        kinds,
    ))
}

/// The model's inputs as `run` reads them: `(name, tensor)` per input in order.
fn read_inputs(a: &ExplainArgs, m: &SavedModel) -> Result<Vec<(String, Tensor<f64>)>> {
    let names: Vec<String> = match &m.graph {
        Some(g) => g.inputs.iter().map(|&i| m.layers[i].name.clone()).collect(),
        None => vec![
            m.layers
                .iter()
                .find(|l| matches!(l.kind, LayerKind::Input))
                .map_or("input".to_string(), |l| l.name.clone()),
        ],
    };
    if m.graph.is_some() {
        let mut given = Vec::with_capacity(a.input.len());
        for arg in &a.input {
            let (name, path) = runner::split_named_input(m, arg);
            given.push((name, io::read_npy(&path)?, path));
        }
        let xs = runner::assemble_inputs(m, given)?;
        return Ok(names.into_iter().zip(xs).collect());
    }
    if a.input.len() != 1 {
        return Err(Error::usage(format!(
            "{} has one input; {} --input given",
            m.path.display(),
            a.input.len()
        )));
    }
    let path = runner::split_named_input(m, &a.input[0]).1;
    let raw = io::read_npy(&path)?;
    if let Some(x) = runner::embedding_input(m, &raw, &path)? {
        return Ok(vec![(names[0].clone(), x)]);
    }
    if m.input_shape.len() == 2 {
        // A flat input (sequences, features), e.g. Dense → RepeatVector → LSTM.
        let f = m.input_shape[1];
        let (b, n) = match raw.shape.as_slice() {
            [b, n] => (*b, *n),
            [n] => (1, *n),
            _ => (0, 0),
        };
        if b == 0 || f.is_some_and(|f| f != n) {
            return Err(Error::input(
                &path,
                format!(
                    "has shape {}; the model takes (sequences, {})",
                    raw.shape_str(),
                    f.map_or("features".to_string(), |f| f.to_string())
                ),
            ));
        }
        let x = Array2::from_shape_vec((b, n), raw.data.clone())
            .map_err(|e| Error::input(&path, e.to_string()))?;
        return Ok(vec![(names[0].clone(), Tensor::Flat(x))]);
    }
    if m.input_shape.len() != 3 {
        return Err(Error::input(
            &m.path,
            "takes neither a sequence (batch, timesteps, features) nor a flat (batch, features) input",
        ));
    }
    let f = m.input_shape.last().copied().flatten().unwrap_or(0);
    let x = series_input(raw, &path, None, f, &format!("the model expects {f}"))?;
    if let Some(want) = m
        .input_shape
        .get(1)
        .copied()
        .flatten()
        .filter(|&w| w != x.shape()[1])
    {
        return Err(Error::input(
            &path,
            format!(
                "has {} timesteps per sequence; the model was built for {want}",
                x.shape()[1]
            ),
        ));
    }
    Ok(vec![(names[0].clone(), Tensor::Seq(x))])
}

/// What one input looks like to the renderers: `x` as (batch, steps, features) (token ids as one
/// feature, a flat input as one step), the mask, feature names.
struct Shown<T> {
    name: String,
    x: Array3<T>,
    mask: Option<Array2<bool>>,
    features: Vec<String>,
    tokens: bool,
    /// A `(batch, features)` input, shown as one step.
    flat: bool,
}

/// `rnntrace explain --model M` through the graph explainer.
pub fn explain_graph_model(
    a: &ExplainArgs,
    (m, policy_model): (&SavedModel, Option<&SavedModel>),
    (methods, rule): (Methods, IgRule),
    (max_values, vocab, columns): (usize, Option<&[Option<String>]>, usize),
    kernels: Kernels,
) -> Result<Outcome> {
    match a.precision {
        crate::cli::args::PrecisionArg::F32 => run_as::<f32>(
            a,
            (m, policy_model),
            (methods, rule),
            (max_values, vocab, columns),
            kernels,
        ),
        crate::cli::args::PrecisionArg::F64 => run_as::<f64>(
            a,
            (m, policy_model),
            (methods, rule),
            (max_values, vocab, columns),
            kernels,
        ),
    }
}

/// `run --model`'s outputs on `inputs`, every output's rows side by side (a sequence output's last step).
pub(super) fn run_outputs_for<T: Real>(
    m: &SavedModel,
    inputs: Vec<Tensor<T>>,
    kernels: Kernels,
) -> Result<Array2<T>> {
    // Only the outputs are read: nothing is recorded (each layer runs streamed, as `run --record none`).
    let mut rec = runner::Recording {
        keep: crate::trace::Record::NONE,
        stream: None,
    };
    let run = if m.graph.is_some() {
        runner::run_graph_recording(m, inputs, kernels, &mut rec)?
    } else {
        let x = inputs
            .into_iter()
            .next()
            .ok_or_else(|| Error::usage("--input: none given"))?;
        runner::run_model_recording(m, x, kernels, &mut rec)?
    };
    let parts: Vec<Array2<T>> = run
        .outputs
        .iter()
        .map(|t| match t {
            Tensor::Flat(a) => a.clone(),
            Tensor::Seq(a) => a.index_axis(Axis(1), a.dim().1 - 1).to_owned(),
        })
        .collect();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(1), &views).map_err(|e| Error::input(&m.path, e.to_string()))
}

fn run_as<T: Real>(
    a: &ExplainArgs,
    (m, policy_model): (&SavedModel, Option<&SavedModel>),
    (methods, rule): (Methods, IgRule),
    (max_values, vocab, columns): (usize, Option<&[Option<String>]>, usize),
    kernels: Kernels,
) -> Result<Outcome> {
    let (g, kinds) = build::<T>(m, kernels)?;
    let xs = read_inputs(a, m)?;
    for (name, t) in &xs {
        let what = format!("--input '{name}'");
        match t {
            Tensor::Seq(x) => super::explain::finite_input(&what, x.iter(), x.shape())?,
            Tensor::Flat(x) => super::explain::finite_input(&what, x.iter(), x.shape())?,
        }
    }
    let several = xs.len() > 1;
    if several && a.mask.is_some() {
        return Err(Error::usage(
            "--mask applies to a model with one sequence input; this model has several inputs",
        ));
    }
    let input_names: Vec<String> = xs.iter().map(|(n, _)| n.clone()).collect();
    let held: Vec<bool> = kinds
        .iter()
        .map(|k| matches!(k, InputKind::HeldMask))
        .collect();
    let choices = super::explain_baselines::resolve(&a.baseline, &input_names, &held)?;
    // What `run` computes, at this precision: the explained forward pass must give the same numbers.
    let run_inputs: Vec<Tensor<T>> = xs
        .iter()
        .map(|(_, t)| match t {
            Tensor::Seq(x) => Tensor::Seq(x.mapv(T::lit)),
            Tensor::Flat(x) => Tensor::Flat(x.mapv(T::lit)),
        })
        .collect();
    // `run` also checks every shape on the way. (A --mask is explain's own addition to the model's input,
    // which `run` does not take: then the outputs are not compared.)
    let run_rows = run_outputs_for::<T>(m, run_inputs, kernels)?;
    let outputs = run_rows.ncols();
    let run_rows = a.mask.is_none().then_some(run_rows);
    let b = xs[0].1.shape()[0];
    let mut fed: Vec<Fed<T>> = Vec::with_capacity(xs.len());
    let mut baselines: Vec<Value<T>> = Vec::with_capacity(xs.len());
    let mut shown: Vec<Shown<T>> = Vec::with_capacity(xs.len());
    for (((name, t), kind), choice) in xs.iter().zip(&kinds).zip(&choices) {
        match (kind, t) {
            (InputKind::Tokens { table, mask_zero }, Tensor::Flat(ids)) => {
                let e = embedding::lookup(table.view(), ids.view())
                    .map_err(|e| Error::input(&m.path, runner::bad_id(name, &e, table.nrows())))?;
                if a.mask.is_some() {
                    return Err(Error::usage(format!(
                        "--mask: input '{name}' holds token ids; its Embedding's mask_zero decides which steps are padding"
                    )));
                }
                let mask = mask_zero.then(|| embedding::mask_zero(ids.view()));
                let base = token_baseline(choice, name, table, ids, mask.as_ref())?;
                shown.push(Shown {
                    name: name.clone(),
                    x: ids.mapv(T::lit).insert_axis(Axis(2)),
                    mask: mask.clone(),
                    features: vec!["token".into()],
                    tokens: true,
                    flat: false,
                });
                baselines.push(Value::Seq(base));
                fed.push((Value::Seq(e), mask));
            }
            (InputKind::HeldMask, t) => {
                // Its own baseline: integrated gradients and occlusion leave it as given.
                let (x3, v) = match t {
                    Tensor::Flat(x) => (
                        x.mapv(T::lit).insert_axis(Axis(1)),
                        Value::Flat(x.mapv(T::lit)),
                    ),
                    Tensor::Seq(x) => (x.mapv(T::lit), Value::Seq(x.mapv(T::lit))),
                };
                let flat = matches!(v, Value::Flat(_));
                shown.push(Shown {
                    name: name.clone(),
                    features: feature_names(a, x3.dim().2, several)?,
                    x: x3,
                    mask: None,
                    tokens: false,
                    flat,
                });
                baselines.push(v.clone());
                fed.push((v, None));
            }
            (_, Tensor::Seq(x)) => {
                let x = x.mapv(T::lit);
                let mask = match &a.mask {
                    Some(p) => Some(load_mask(p, x.dim().0, x.dim().1)?),
                    None => None,
                };
                // `mean` skips the steps the model masks: --mask's and a Masking layer's on this input.
                let masked_by_layer = masking_value(m, name)
                    .map(|v| crate::engine::mask_from_value(x.view(), T::lit(v)));
                let used = super::explain::both_masks(mask.as_ref(), masked_by_layer.as_ref());
                let base = seq_baseline(choice, &x, used.as_ref(), Some((name.as_str(), false)))?;
                let f = x.dim().2;
                shown.push(Shown {
                    name: name.clone(),
                    x: x.clone(),
                    mask: mask.clone(),
                    features: feature_names(a, f, several)?,
                    tokens: false,
                    flat: false,
                });
                baselines.push(Value::Seq(base));
                fed.push((Value::Seq(x), mask));
            }
            (_, Tensor::Flat(x)) => {
                let x = x.mapv(T::lit);
                let x3 = x.clone().insert_axis(Axis(1));
                let base = seq_baseline(choice, &x3, None, Some((name.as_str(), true)))?;
                let f = x.ncols();
                shown.push(Shown {
                    name: name.clone(),
                    x: x3,
                    mask: None,
                    features: feature_names(a, f, several)?,
                    tokens: false,
                    flat: true,
                });
                baselines.push(Value::Flat(base.index_axis(Axis(1), 0).to_owned()));
                fed.push((Value::Flat(x), None));
            }
        }
    }
    let init = InitialState::default();
    // (The explained forward pass is checked against `run`'s after it ran, before anything is written: no
    // separate probe pass.)
    if a.output >= outputs {
        return Err(Error::usage(format!(
            "--output {} is out of range: the model has {outputs} output{} (--output 0..{}; several outputs count in the model's order, each its columns)",
            a.output,
            if outputs == 1 { "" } else { "s" },
            outputs.saturating_sub(1)
        )));
    }
    if a.sequence >= b {
        return Err(Error::usage(format!(
            "--sequence {} is out of range: the input holds {b} sequence{} (0..{})",
            a.sequence,
            if b == 1 { "" } else { "s" },
            b - 1
        )));
    }
    // Under a dtype policy: the model's own answer, as `run` computes it (m is its float32 computation).
    let policy = match policy_model {
        Some(pm) => Some(super::explain::policy_view(
            pm,
            xs.iter().map(|(_, t)| t),
            a,
            kernels,
        )?),
        None => None,
    };
    let req = GraphRequest {
        output: a.output,
        methods,
        baselines,
        ig_steps: a.ig_steps,
        ig_rule: rule,
        pass_budget: 512 << 20,
    };
    let ge = graph_methods::explain_graph(&g, &fed, &init, &req);
    if run_rows.as_ref().is_some_and(|r| *r != ge.rows) {
        return Err(Error::input(
            &m.path,
            "explain's forward pass differs from `rnntrace run`'s on this model; please report it (explain refuses rather than explain other numbers)",
        ));
    }
    let per: Vec<Explanation<T>> = (0..shown.len())
        .map(|j| per_input(&ge, j, shown[j].tokens))
        .collect();
    let title = m.path.display().to_string();
    let reports: Vec<ExplainReport<'_, T>> = per
        .iter()
        .zip(&shown)
        .map(|(e, sh)| ExplainReport {
            e,
            x: &sh.x,
            mask: sh.mask.as_ref(),
            output: a.output,
            methods,
            feature_names: sh.features.clone(),
            sequence: a.sequence,
            top: a.top,
            title: if several {
                format!("{title}, input '{}'", sh.name)
            } else {
                title.clone()
            },
            ig: (rule, a.ig_steps),
            precision: T::NAME,
            columns,
            step_labels: sh.tokens.then(|| {
                sh.x.slice(s![a.sequence, .., 0])
                    .iter()
                    .map(|v| match vocab {
                        Some(vocab) => crate::cli::output::token_of(vocab, v.to_f()),
                        None => format!("#{}", v.to_f()),
                    })
                    .collect()
            }),
            policy: policy.as_ref(),
            inputs: shown.len(),
        })
        .collect();
    super::explain::policy_note(a, &reports[0]);
    let suffixed = |p: &Path, j: usize| -> PathBuf {
        if !several {
            return p.to_path_buf();
        }
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = p
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        p.with_file_name(format!("{stem}-{}{ext}", shown[j].name))
    };
    if let Some(path) = &a.save {
        for (j, r) in reports.iter().enumerate() {
            let shape = if shown[j].tokens {
                explain_data::AttrShape::Tokens
            } else if shown[j].flat {
                explain_data::AttrShape::Flat
            } else {
                explain_data::AttrShape::Sequence
            };
            explain_data::save_npz(r, &suffixed(path, j), shape)?;
        }
    }
    if let Some(path) = &a.plot {
        for (j, r) in reports.iter().enumerate() {
            if matches!(kinds[j], InputKind::HeldMask) {
                // Its attributions are zero by construction: a chart of them would be an empty picture.
                eprintln!(
                    "note: input '{}' is read only as a mask (a selector, every attribution 0): no chart drawn for it",
                    shown[j].name
                );
                continue;
            }
            let mut chart = explain_plot::attribution_chart(r);
            if several {
                // Which input the chart is of, in its title.
                chart.title = format!("Input '{}': {}", shown[j].name, chart.title);
            }
            explain_plot::draw_attributions(&chart, &suffixed(path, j))?;
        }
    }
    if let Some(path) = &a.plot_units {
        explain_plot::draw_units(&ge.units, path)?;
    }
    if let Some(path) = &a.report {
        let kinds: Vec<&'static str> = shown
            .iter()
            .zip(&kinds)
            .map(|(sh, k)| match k {
                InputKind::HeldMask => "mask",
                _ if sh.tokens => "tokens",
                _ if sh.flat => "flat",
                _ => "sequence",
            })
            .collect();
        write_report(
            &g,
            &fed,
            (&reports, &shown, &kinds),
            path,
            (max_values, vocab),
        )?;
    }
    if several {
        let names: Vec<String> = shown.iter().map(|s| format!("'{}'", s.name)).collect();
        eprintln!(
            "note: {} inputs ({}): attributions per input{}",
            shown.len(),
            names.join(", "),
            if a.plot.is_some() || a.save.is_some() {
                "; --plot/--save write one file per input, FILE-NAME.ext"
            } else {
                ""
            }
        );
    }
    if !a.quiet {
        match a.format {
            crate::cli::args::FormatArg::Json => {
                let v = json(&reports, &shown);
                write_stdout(|w| {
                    serde_json::to_writer(&mut *w, &v).map_err(std::io::Error::other)?;
                    writeln!(w)
                })?;
            }
            crate::cli::args::FormatArg::Table => {
                let text = explain_table::render_inputs(&reports);
                write_stdout(|w| w.write_all(text.as_bytes()))?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn feature_names(a: &ExplainArgs, f: usize, several: bool) -> Result<Vec<String>> {
    match (&a.feature_names, several) {
        (Some(n), false) => {
            let v: Vec<String> = n.split(',').map(|s| s.trim().to_string()).collect();
            if v.len() != f {
                return Err(Error::usage(format!(
                    "--feature-names gives {} names; the input has {f} features",
                    v.len()
                )));
            }
            Ok(v)
        }
        (Some(_), true) => Err(Error::usage(
            "--feature-names applies to a model with one input; this model has several",
        )),
        (None, _) => Ok((0..f).map(|j| format!("x{j}")).collect()),
    }
}

/// A token input's baseline in embedding space, (batch, timesteps, dim).
fn token_baseline<T: Real>(
    choice: &Choice,
    input: &str,
    table: &Array2<T>,
    ids: &Array2<f64>,
    mask: Option<&Array2<bool>>,
) -> Result<Array3<T>> {
    let (b, t) = ids.dim();
    let d = table.ncols();
    match &choice.kind {
        Kind::Zeros => {
            let row = table.row(0);
            Ok(Array3::from_shape_fn((b, t, d), |(_, _, k)| row[k]))
        }
        Kind::Mean => {
            let mut sum = vec![0f64; d];
            let mut n = 0usize;
            for ((bi, ti), &id) in ids.indexed_iter() {
                if mask.is_some_and(|m| !m[[bi, ti]]) {
                    continue;
                }
                n += 1;
                for (k, v) in table.row(id as usize).iter().enumerate() {
                    sum[k] += v.to_f();
                }
            }
            let n = n.max(1) as f64;
            Ok(Array3::from_shape_fn((b, t, d), |(_, _, k)| {
                T::lit(sum[k] / n)
            }))
        }
        Kind::File(p) => {
            let raw = io::read_npy(p)?;
            let vocab = table.nrows();
            let base = match raw.shape.as_slice() {
                [bb, tt] if (*bb, *tt) == (b, t) => {
                    Array2::from_shape_vec((b, t), raw.data.clone()).expect("shape checked")
                }
                [tt] if *tt == t => Array2::from_shape_fn((b, t), |(_, j)| raw.data[j]),
                _ => {
                    return Err(Error::usage(format!(
                        "{}: input '{input}' holds token ids {}; the file has shape {} ({}): give baseline ids {} or one sequence {}, whole numbers in 0..{vocab}",
                        choice.flag,
                        shape_str(&[b, t]),
                        raw.shape_str(),
                        raw.dtype,
                        shape_str(&[b, t]),
                        shape_str(&[t])
                    )));
                }
            };
            embedding::lookup(table.view(), base.view()).map_err(|e| {
                Error::usage(format!(
                    "{}: input '{input}' takes token ids, whole numbers in 0..{vocab}; sequence {}, step {} of the file ({}) holds {}, which is {}: give baseline ids",
                    choice.flag,
                    e.sequence,
                    e.step,
                    raw.dtype,
                    e.value,
                    if e.value.fract() != 0.0 || !e.value.is_finite() {
                        "not a whole number"
                    } else {
                        "outside the vocabulary"
                    }
                ))
            })
        }
    }
}

/// The model part of a per-input title (`model.keras, input 'a'` → `model.keras`).
fn m_title(title: &str, input: &str) -> String {
    title
        .strip_suffix(&format!(", input '{input}'"))
        .unwrap_or(title)
        .to_string()
}

/// Input `j`'s part of a graph explanation in the chain explainer's shapes (token attributions summed
/// over the embedding dimensions, a flat input as one step).
fn per_input<T: Real>(ge: &GraphExplanation<T>, j: usize, tokens: bool) -> Explanation<T> {
    let a = &ge.inputs[j];
    let shape = |v: &Option<Value<T>>| {
        v.as_ref().map(|v| {
            if tokens {
                graph_methods::per_token(v)
            } else {
                match v {
                    Value::Seq(x) => x.clone(),
                    Value::Flat(x) => x.clone().insert_axis(Axis(1)),
                }
            }
        })
    };
    Explanation {
        prediction: ge.prediction.clone(),
        baseline_prediction: ge.baseline_prediction.clone(),
        gradient: shape(&a.gradient),
        input_x_gradient: shape(&a.input_x_gradient),
        integrated_gradients: shape(&a.integrated_gradients),
        completeness: ge.completeness.clone(),
        occlusion: a.occlusion.clone(),
        initial_state_gradient: ge.initial_state_gradient.clone(),
        initial_state_gradients: ge.initial_state_gradients.clone(),
        units: ge.units.clone(),
        outputs: ge.outputs,
    }
}

/// The `rnntrace-explain/1` document: the chain's schema for one input (a token input's attributions
/// `(batch, timesteps)`), `attributions` keyed by input name for several.
fn json<T: Real>(reports: &[ExplainReport<'_, T>], shown: &[Shown<T>]) -> serde_json::Value {
    use serde_json::Value as J;
    // A token input's (B, T, 1) becomes (B, T); a flat input's (B, 1, F) becomes (B, F).
    let squeeze = |v: J, sh: &Shown<T>| -> J {
        let flat_input = sh.flat;
        let J::Object(mut attr) = v else { return v };
        for (name, arr) in attr.iter_mut() {
            if name == "occlusion" {
                continue;
            }
            let J::Array(seqs) = arr else { continue };
            for s in seqs.iter_mut() {
                let J::Array(steps) = s else { continue };
                if sh.tokens {
                    for st in steps.iter_mut() {
                        if let J::Array(one) = st
                            && one.len() == 1
                        {
                            *st = one[0].clone();
                        }
                    }
                } else if flat_input && steps.len() == 1 {
                    *s = steps[0].clone();
                }
            }
        }
        J::Object(attr)
    };
    let mut doc = explain_data::json(&reports[0]);
    if let J::Object(d) = &mut doc {
        if reports.len() == 1 {
            let attr = d.remove("attributions").unwrap_or(J::Null);
            d.insert("attributions".into(), squeeze(attr, &shown[0]));
        } else {
            let mut by = serde_json::Map::new();
            for (r, sh) in reports.iter().zip(shown) {
                let mut one = explain_data::json(r);
                let attr = one
                    .as_object_mut()
                    .and_then(|o| o.remove("attributions"))
                    .unwrap_or(J::Null);
                by.insert(sh.name.clone(), squeeze(attr, sh));
            }
            d.insert("attributions".into(), J::Object(by));
            d.insert(
                "inputs".into(),
                J::Array(shown.iter().map(|s| J::String(s.name.clone())).collect()),
            );
        }
    }
    doc
}

/// `--report FILE.html` for a graph model: the recorded forward pass with the attributions (several
/// inputs: every input's, one section each behind the page's input selector).
fn write_report<T: Real>(
    g: &Graph<T>,
    fed: &[Fed<T>],
    (reports, shown, kinds): (&[ExplainReport<'_, T>], &[Shown<T>], &[&'static str]),
    path: &Path,
    (max_values, vocab): (usize, Option<&[Option<String>]>),
) -> Result<()> {
    use crate::render::report;
    let fwd = g.forward(
        fed.to_vec(),
        &InitialState::default(),
        crate::trace::Record::ALL,
    );
    let trace = crate::trace::Trace {
        layers: fwd.recorded().into_iter().map(|r| r.full_trace()).collect(),
        predictions: fwd.output_rows(),
        dense_activation: None,
    };
    let (r, sh) = (&reports[0], &shown[0]);
    let opts = report::Options {
        title: if reports.len() > 1 {
            format!("explain {}", m_title(&r.title, &sh.name))
        } else {
            format!("explain {}", r.title)
        },
        include_pre: true,
        max_values,
        feature_names: r.feature_names.clone(),
        ..report::Options::default()
    };
    let mut data = report::build(&trace, &report::Checks::default(), &opts);
    if reports.len() > 1 {
        let label = |v: &T| match vocab {
            Some(vocab) => crate::cli::output::token_of(vocab, v.to_f()),
            None => format!("#{}", v.to_f()),
        };
        let inputs: Vec<explain_data::ReportInput> = shown
            .iter()
            .zip(kinds.iter().copied())
            .map(|(sh, kind)| {
                let labels = sh.tokens.then(|| {
                    sh.x.outer_iter()
                        .map(|seq| seq.column(0).iter().map(label).collect())
                        .collect()
                });
                explain_data::ReportInput {
                    name: sh.name.clone(),
                    kind,
                    step_labels: labels,
                }
            })
            .collect();
        data.explain = Some(explain_data::report_section_inputs(
            reports,
            &inputs,
            &data.sequences,
            max_values,
        ));
        for n in data
            .explain
            .iter()
            .flat_map(|e| &e.inputs)
            .filter_map(|i| i.note.clone())
        {
            data.notes.push(n);
        }
        data.notes.push(format!(
            "{} inputs ({}): the Input charts and heat maps above show the recurrent layers' own inputs; each model input's attributions are in Explain, one input at a time",
            shown.len(),
            shown.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    } else {
        data.explain = Some(explain_data::report_section(r, None));
    }
    if let Some(vocab) = vocab {
        if sh.tokens {
            data.tokens = Some(
                data.sequences
                    .iter()
                    .map(|&b| {
                        sh.x.slice(s![b, .., 0])
                            .iter()
                            .map(|v| crate::cli::output::token_of(vocab, v.to_f()))
                            .collect()
                    })
                    .collect(),
            );
        } else if !shown.iter().any(|s| s.tokens) {
            data.notes
                .push("--tokens: not shown, the explained input holds no token ids".to_string());
        }
    }
    report::html::write_file(&data, path)
}
