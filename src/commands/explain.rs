/*!
`rnntrace explain`: validates the command line, builds the [`Network`] the explainer differentiates (from
one layer's weights through [`job::cell_job`], exactly as `lstm`/`gru` read them, or from a saved Keras
model through [`crate::model`]), runs [`crate::explain::explain`] at the asked precision with the kernels
[`Env`] allows, and hands the result to the renderers (tables, JSON, `.npz`, charts) through
[`write_stdout`] and the renderers' atomic writers.

A model saved under a float16/bfloat16 dtype policy is explained through the float32 (float64) computation
of its weights ([`model::SavedModel::without_policies`]); its own answer under the policy, computed as
`run` computes it, is reported next to the explained one ([`policy_view`]).
*/

use super::explain_baselines::{Choice, Kind};
use crate::cell::{Activation, Kernels, Real};
use crate::cli::args::{
    CellArgs, CheckArgs, ColorArg, DisplayArgs, FormatArg, PlotArgs, PrecisionArg, RecordArg,
    ResetAfterArg,
};
use crate::cli::explain::{ExplainArgs, ExplainCell};
use crate::cli::job::{self, Env};
use crate::cli::load::{load_mask, series_input};
use crate::cli::output::{Outcome, write_stdout};
use crate::engine::LayerSpec;
use crate::error::{Error, Result, shape_str};
use crate::explain::{
    self, IgRule, InitialState, Merge, Methods, Network, Op, RecurrentOp, Request,
};
use crate::io;
use crate::model::{self, LayerKind, Recurrent};
use crate::render::explain_data;
use crate::render::explain_plot;
use crate::render::explain_table::{self, ExplainReport, PolicyView};
use crate::runner;
use crate::weights::{CellKind, DenseWeights};
use ndarray::{Array2, Array3, s};
use std::path::Path;

/// What is explained, in float64 as read (cast to the run precision later).
struct Problem {
    net: Network<f64>,
    x: Array3<f64>,
    mask: Option<Array2<bool>>,
    init: InitialState<f64>,
    /// For headings: the model file or the cell.
    title: String,
    notes: Vec<String>,
    /// A saved model under a float16/bfloat16 dtype policy, as saved (`net` is its float32 computation).
    policy_model: Option<model::SavedModel>,
    /// The model's input name (`--baseline NAME=…`), none for one layer's weights.
    input_name: Option<String>,
}

/// `rnntrace explain …`.
pub fn explain(a: &ExplainArgs, env: &Env) -> Result<Outcome> {
    let methods =
        Methods::parse(&a.methods).map_err(|e| Error::usage(format!("--methods: {e}")))?;
    let rule = explain::methods::RULES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(a.ig_method.trim()))
        .map(|(_, r)| *r)
        .ok_or_else(|| {
            Error::usage(format!(
                "--ig-method: unknown rule '{}'; valid: {}",
                a.ig_method,
                explain::methods::RULES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let min_steps = if rule == IgRule::RiemannTrapezoid {
        2
    } else {
        1
    };
    if a.ig_steps < min_steps {
        return Err(Error::usage(format!(
            "--ig-steps {}: {} needs at least {min_steps}",
            a.ig_steps,
            rule.name()
        )));
    }
    let baseline_files = super::explain_baselines::candidate_files(&a.baseline);
    let mut inputs: Vec<&Path> = a.input.iter().map(|p| p.as_path()).collect();
    inputs.extend(
        [
            &a.model,
            &a.weights,
            &a.initial_state,
            &a.mask,
            &a.dense,
            &a.tokens,
        ]
        .into_iter()
        .flatten()
        .map(|p| p.as_path()),
    );
    inputs.extend(baseline_files.iter().map(|p| p.as_path()));
    if a.convention.carry_state {
        return Err(Error::usage(
            "--carry-state: explain treats every sequence independently (each starts from --initial-state or zeros)",
        ));
    }
    let outs: Vec<(&str, &Path)> = [
        ("--save", &a.save),
        ("--plot", &a.plot),
        ("--plot-units", &a.plot_units),
        ("--report", &a.report),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
    .collect();
    job::check_output_set(&inputs, &outs)?;
    if let Some(p) = &a.save
        && !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
    {
        return Err(Error::usage(format!(
            "--save {}: the file name must end in .npz",
            p.display()
        )));
    }
    if let Some(p) = &a.report
        && !p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
    {
        return Err(Error::usage(format!(
            "--report {}: the file name must end in .html",
            p.display()
        )));
    }
    let max_values = match &a.report {
        Some(_) => env.report_max_values.clone().map_err(Error::usage)?,
        None => 0,
    };
    let vocab = a.tokens.as_deref().map(job::read_vocab).transpose()?;
    for (flag, p) in [("--plot", &a.plot), ("--plot-units", &a.plot_units)] {
        if let Some(p) = p {
            crate::render::plot::image_format(flag, p)?;
        }
    }
    let problem = match (&a.model, &a.weights) {
        (Some(m), _) if a.cell.is_some() => from_torch(a, m, env.kernels)?,
        (Some(m), _) => match from_model(a, m, env.kernels)? {
            Loaded::Chain(p) => p,
            Loaded::Graph(model, policy_model) => {
                return super::explain_model::explain_graph_model(
                    a,
                    (&model, policy_model.as_ref()),
                    (methods, rule),
                    (max_values, vocab.as_deref(), env.columns),
                    env.kernels,
                );
            }
        },
        (None, Some(w)) => from_weights(a, w, env)?,
        (None, None) => return Err(Error::usage("give --model or --weights with --cell")),
    };
    if a.input.len() != 1 {
        return Err(Error::usage(format!(
            "--input: the model has one input; {} given",
            a.input.len()
        )));
    }
    for n in &problem.notes {
        eprintln!("{n}");
    }
    match a.precision {
        PrecisionArg::F32 => run_as::<f32>(
            a,
            &problem,
            methods,
            rule,
            (max_values, vocab.as_deref(), env.columns),
        ),
        PrecisionArg::F64 => run_as::<f64>(
            a,
            &problem,
            methods,
            rule,
            (max_values, vocab.as_deref(), env.columns),
        ),
    }
}

fn from_weights(a: &ExplainArgs, w: &Path, env: &Env) -> Result<Problem> {
    let kind = match a.cell {
        Some(ExplainCell::Lstm) => CellKind::Lstm,
        Some(ExplainCell::Gru) => CellKind::Gru,
        Some(ExplainCell::SimpleRnn) => CellKind::SimpleRnn,
        None => return Err(Error::usage("--weights needs --cell lstm|gru|simple_rnn")),
    };
    // The single-layer flags are validated exactly as `rnntrace lstm|gru` validates them.
    let cell_args = CellArgs {
        weights: w.to_path_buf(),
        input: a.input[0].clone(),
        window: None,
        convention: a.convention.clone(),
        layout: a.layout,
        layer: a.layer,
        reverse: a.reverse,
        module: a.module.clone(),
        time_major: false,
        initial_state: a.initial_state.clone(),
        mask: a.mask.clone(),
        mask_value: a.mask_value,
        dense: a.dense.clone(),
        precision: a.precision,
        format: a.format,
        trace: None,
        record: RecordArg::All,
        record_pre: true,
        timings: false,
        name: None,
        check: CheckArgs {
            expected: Vec::new(),
            atol: None,
            rtol: None,
            targets: None,
            inverse_scale: None,
            output_names: None,
        },
        display: DisplayArgs {
            feature_names: a.feature_names.clone(),
            sequences: None,
            steps: None,
            max_steps: None,
            units: None,
            max_units: 8,
            show_pre: false,
            color: ColorArg::Never,
            quiet: a.quiet,
        },
        plots: PlotArgs::default(),
    };
    let job = job::cell_job(kind, &cell_args, env)?;
    let mut ops = Vec::new();
    if let Some(v) = job.mask_value {
        ops.push(Op::Masking { value: v });
    }
    ops.push(Op::Recurrent(RecurrentOp {
        weights: job.weights.clone(),
        spec: job.spec.clone(),
        return_sequences: false,
        zero_output_for_mask: false,
    }));
    if let Some((d, act)) = &job.dense {
        ops.push(Op::Dense {
            weights: d.clone(),
            activation: *act,
        });
    }
    Ok(Problem {
        net: Network {
            ops,
            kernels: job.kernels,
        },
        x: job.x.clone(),
        mask: job.mask.clone(),
        init: InitialState {
            h0: job.h0.clone(),
            c0: job.c0.clone(),
        },
        title: format!("{} {}", kind.display_name(), w.display()),
        notes: job.notes.clone(),
        policy_model: None,
        input_name: None,
    })
}

/// `--model state.pt --cell lstm|gru|simple_rnn`: a whole PyTorch module from its state dict, as `run` reads
/// it ([`crate::runner::run_torch_stack_recording`]): every layer, both directions of a bidirectional
/// module side by side (forward, then reverse), and the `--dense` nn.Linear head on the last step's output.
fn from_torch(a: &ExplainArgs, path: &Path, kernels: Kernels) -> Result<Problem> {
    use crate::weights::pytorch;
    let c = &a.convention;
    for (flag, set) in [
        ("--initial-state", a.initial_state.is_some()),
        ("--go-backwards", c.go_backwards),
        ("--reverse", a.reverse),
        ("--layer", a.layer != 0),
        ("--mask", a.mask.is_some()),
        ("--mask-value", a.mask_value.is_some()),
        ("--activation", c.activation != "tanh"),
        (
            "--recurrent-activation",
            c.recurrent_activation != "sigmoid",
        ),
        ("--reset-after", c.reset_after != ResetAfterArg::Auto),
        ("--dense-activation", c.dense_activation != "linear"),
    ] {
        if set {
            return Err(Error::usage(format!(
                "{flag} applies to --weights (one layer); --model with --cell explains the whole PyTorch module as saved"
            )));
        }
    }
    let kind = match a.cell {
        Some(ExplainCell::Lstm) => CellKind::Lstm,
        Some(ExplainCell::Gru) => CellKind::Gru,
        _ => CellKind::SimpleRnn,
    };
    let full = crate::weights::load_arrays(path, &[])?;
    let src = pytorch::select_module(full.clone(), a.module.as_deref())?;
    let module = pytorch::recurrent_modules(&src);
    let Some(m0) = module.first() else {
        return Err(
            src.error("holds no weight_ih_l0: not a PyTorch nn.LSTM/nn.GRU/nn.RNN state dict")
        );
    };
    let dirs: &[bool] = if m0.bidirectional {
        &[false, true]
    } else {
        &[false]
    };
    let mut ops = Vec::new();
    let mut width = 0;
    for k in 0..m0.layers {
        let mut pair = Vec::new();
        for &reverse in dirs {
            let weights = pytorch::from_state_dict(kind, &src, k, reverse)?;
            if k > 0 && weights.features != width {
                return Err(src.error(format!(
                    "layer {k} expects {} inputs; layer {} gives {width}",
                    weights.features,
                    k - 1
                )));
            }
            pair.push(RecurrentOp {
                spec: LayerSpec {
                    name: format!("l{k}{}", if reverse { "_reverse" } else { "" }),
                    activation: Activation::Tanh,
                    recurrent_activation: Activation::Sigmoid,
                    go_backwards: reverse,
                    carry_state: false,
                },
                weights,
                return_sequences: true,
                zero_output_for_mask: false,
            });
        }
        width = pair.iter().map(|r| r.weights.h_units()).sum();
        let mut it = pair.into_iter();
        let forward = it.next().expect("one direction at least");
        ops.push(match it.next() {
            Some(backward) => Op::Bidirectional {
                forward,
                backward,
                merge: crate::explain::network::Merge::Concat,
            },
            None => Op::Recurrent(forward),
        });
    }
    if let Some(d) = &a.dense {
        // The head reads the last step: a per-step Dense whose last step is the output explained.
        ops.push(Op::Dense {
            weights: crate::weights::dense::load_head(Path::new(d), &full, width)?,
            activation: Activation::Linear,
        });
    }
    let mut notes = Vec::new();
    for note in pytorch::notes(&full, true) {
        if a.dense.is_none() || !note.contains("nn.Linear") {
            notes.push(format!("rnntrace: {note}"));
        }
    }
    let f = m0.input;
    let input = match a.input.as_slice() {
        [one] => one,
        more => {
            return Err(Error::usage(format!(
                "{} is one recurrent module with one input; {} --input given",
                path.display(),
                more.len()
            )));
        }
    };
    let raw = io::read_npy(input)?;
    let x = series_input(raw, input, None, f, &format!("layer 0 expects {f}"))?;
    Ok(Problem {
        net: Network { ops, kernels },
        x,
        mask: None,
        init: InitialState::default(),
        title: path.display().to_string(),
        notes,
        policy_model: None,
        input_name: None,
    })
}

fn parse_act(path: &Path, layer: &str, name: &str) -> Result<Activation> {
    Activation::parse(name).map_err(|e| Error::input(path, format!("layer '{layer}': {e}")))
}

fn rec_op(m: &model::SavedModel, name: &str, r: &Recurrent) -> Result<RecurrentOp<f64>> {
    if r.stateful && m.input_shape.first().copied().flatten() == Some(1) {
        return Err(Error::input(
            &m.path,
            format!(
                "layer '{name}' is stateful with batch size 1 (each sequence starts from the previous one's state); explain treats sequences independently"
            ),
        ));
    }
    let weights = crate::runner::cell_weights::<f64>(m, name, r)?;
    Ok(RecurrentOp {
        weights,
        spec: LayerSpec {
            name: name.to_string(),
            activation: parse_act(&m.path, name, &r.activation)?,
            recurrent_activation: if r.recurrent_activation.is_empty() {
                Activation::Sigmoid
            } else {
                parse_act(&m.path, name, &r.recurrent_activation)?
            },
            go_backwards: r.go_backwards,
            carry_state: false,
        },
        return_sequences: r.return_sequences,
        zero_output_for_mask: r.zero_output_for_mask,
    })
}

fn dense_op(
    m: &model::SavedModel,
    name: &str,
    k: &io::RawArray,
    b: Option<&io::RawArray>,
    act: &str,
) -> Result<Op<f64>> {
    let [i, o] = k.shape[..] else {
        return Err(Error::input(
            &m.path,
            format!(
                "layer '{name}': kernel has shape {}; expected 2-D",
                k.shape_str()
            ),
        ));
    };
    Ok(Op::Dense {
        weights: DenseWeights {
            kernel: Array2::from_shape_vec((i, o), k.data.clone())
                .map_err(|e| Error::input(&m.path, e.to_string()))?,
            bias: b.map(|b| ndarray::Array1::from(b.data.clone())),
        },
        activation: parse_act(&m.path, name, act)?,
    })
}

/// A saved model for the chain explainer, or for the graph explainer ([`super::explain_model`]).
// The chain's problem holds its arrays inline; there is one per run.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Chain(Problem),
    /// The model explain differentiates, and the model as saved when it computes under a dtype policy.
    Graph(model::SavedModel, Option<model::SavedModel>),
}

fn from_model(a: &ExplainArgs, path: &Path, kernels: Kernels) -> Result<Loaded> {
    let c = &a.convention;
    for (flag, set) in [
        ("--initial-state", a.initial_state.is_some()),
        ("--dense", a.dense.is_some()),
        ("--go-backwards", c.go_backwards),
        ("--reverse", a.reverse),
        ("--mask-value", a.mask_value.is_some()),
        ("--module", a.module.is_some()),
        ("--activation", c.activation != "tanh"),
        (
            "--recurrent-activation",
            c.recurrent_activation != "sigmoid",
        ),
        ("--reset-after", c.reset_after != ResetAfterArg::Auto),
        ("--dense-activation", c.dense_activation != "linear"),
    ] {
        if set {
            return Err(Error::usage(format!(
                "{flag} applies to --weights; a saved model carries its own configuration"
            )));
        }
    }
    let m = model::load(path)?;
    // A layer `run` cannot compute (a Lambda, a custom class) cannot be explained either.
    m.check_runnable()?;
    // A model under a float16/bfloat16 policy rounds every op, a piecewise-constant function whose own
    // derivative is zero or undefined: explain differentiates the float32 computation of its weights
    // (what Keras computes with the same weights under the float32 policy) and reports the policy's
    // answer next to it.
    let (m, policy_model) = if m.layers.iter().any(|l| l.policy.is_some()) {
        (m.without_policies(), Some(m))
    } else {
        (m, None)
    };
    if !super::explain_model::chain_covers(&m) {
        return Ok(Loaded::Graph(m, policy_model));
    }
    if a.input.len() != 1 {
        return Err(Error::usage(format!(
            "{} has one input; {} --input given",
            path.display(),
            a.input.len()
        )));
    }
    let mut ops = Vec::new();
    let mut features = None;
    for layer in m.compute_layers() {
        let name = layer.name.as_str();
        let op = match &layer.kind {
            LayerKind::Input | LayerKind::Identity => continue,
            LayerKind::Masking { mask_value } => Op::Masking { value: *mask_value },
            LayerKind::Recurrent(r) => {
                features.get_or_insert(r.features);
                Op::Recurrent(rec_op(&m, name, r)?)
            }
            LayerKind::Bidirectional {
                forward,
                backward,
                merge_mode,
            } => {
                features.get_or_insert(forward.features);
                let mode = merge_mode.clone().unwrap_or_default();
                let merge = Merge::parse(&mode).ok_or_else(|| {
                    Error::input(
                        path,
                        format!(
                            "layer '{name}': merge_mode {mode:?} gives two outputs; explain needs one (concat, sum, mul, ave)"
                        ),
                    )
                })?;
                Op::Bidirectional {
                    forward: rec_op(&m, &format!("{name}/forward"), forward)?,
                    backward: rec_op(&m, &format!("{name}/backward"), backward)?,
                    merge,
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
            } => dense_op(&m, name, kernel, bias.as_ref(), activation)?,
            LayerKind::Activation { activation } => {
                Op::Activation(parse_act(path, name, activation)?)
            }
            LayerKind::Flatten => Op::Flatten,
            _ => {
                return Err(Error::input(
                    path,
                    format!(
                        "layer '{name}' ({}): explain differentiates Masking, LSTM, GRU, SimpleRNN, Bidirectional, Dense, TimeDistributed(Dense), Activation, Flatten and inference no-ops; `rnntrace run` computes the whole model",
                        layer.class_name
                    ),
                ));
            }
        };
        ops.push(op);
    }
    if !ops
        .iter()
        .any(|o| matches!(o, Op::Recurrent(_) | Op::Bidirectional { .. }))
    {
        return Err(Error::input(path, "holds no recurrent layer to explain"));
    }
    if m.input_shape.len() != 3 {
        return Err(Error::input(
            path,
            "takes no sequence input (batch, timesteps, features); explain attributes over timesteps",
        ));
    }
    let f = m
        .input_shape
        .last()
        .copied()
        .flatten()
        .or(features)
        .unwrap_or(0);
    let raw = io::read_npy(&a.input[0])?;
    let x = series_input(raw, &a.input[0], None, f, &format!("the model expects {f}"))?;
    if let Some(want) = m
        .input_shape
        .get(1)
        .copied()
        .flatten()
        .filter(|&w| w != x.shape()[1])
    {
        return Err(Error::input(
            &a.input[0],
            format!(
                "has {} timesteps per sequence; the model was built for {want}",
                x.shape()[1]
            ),
        ));
    }
    let mask = match &a.mask {
        None => None,
        Some(p) => Some(load_mask(p, x.dim().0, x.dim().1)?),
    };
    Ok(Loaded::Chain(Problem {
        net: Network { ops, kernels },
        x,
        mask,
        init: InitialState::default(),
        title: path.display().to_string(),
        notes: Vec::new(),
        policy_model,
        input_name: m
            .layers
            .iter()
            .find(|l| matches!(l.kind, LayerKind::Input))
            .map(|l| l.name.clone()),
    }))
}

fn cast_net<T: Real>(n: &Network<f64>) -> Network<T> {
    let rec = |r: &RecurrentOp<f64>| RecurrentOp {
        weights: r.weights.cast::<T>(),
        spec: r.spec.clone(),
        return_sequences: r.return_sequences,
        zero_output_for_mask: r.zero_output_for_mask,
    };
    Network {
        kernels: n.kernels,
        ops: n
            .ops
            .iter()
            .map(|o| match o {
                Op::Masking { value } => Op::Masking {
                    value: T::lit(*value),
                },
                Op::Recurrent(r) => Op::Recurrent(rec(r)),
                Op::Bidirectional {
                    forward,
                    backward,
                    merge,
                } => Op::Bidirectional {
                    forward: rec(forward),
                    backward: rec(backward),
                    merge: *merge,
                },
                Op::Dense {
                    weights,
                    activation,
                } => Op::Dense {
                    weights: weights.cast::<T>(),
                    activation: *activation,
                },
                Op::Activation(a) => Op::Activation(*a),
                Op::Flatten => Op::Flatten,
            })
            .collect(),
    }
}

/// The baseline, shaped like `x`.
/// A sequence input's baseline, `(batch, timesteps, features)`; `flat`: the input is `(batch,
/// features)`, held here as one step (a file is then `(batch, features)` or `(features)`). `input`: the
/// input's name for messages (several inputs).
/// Refuses an input holding NaN or ±inf (`what` names it): the prediction and every attribution would be
/// non-finite (a silent row of nulls in the JSON).
pub(super) fn finite_input<'a>(
    what: &str,
    values: impl Iterator<Item = &'a f64>,
    shape: &[usize],
) -> Result<()> {
    if let Some((i, v)) = values.enumerate().find(|(_, v)| !v.is_finite()) {
        // The flat index as (sequence, step, feature) / (sequence, feature).
        let mut at = Vec::with_capacity(shape.len());
        let mut rest = i;
        for d in shape.iter().rev() {
            at.push(rest % d.max(&1));
            rest /= d.max(&1);
        }
        at.reverse();
        let names = if shape.len() == 3 {
            vec!["sequence", "step", "feature"]
        } else {
            vec!["sequence", "feature"]
        };
        let pos: Vec<String> = names
            .iter()
            .zip(&at)
            .map(|(n, k)| format!("{n} {k}"))
            .collect();
        return Err(Error::usage(format!(
            "{what}: value {v} at {} is not finite; explain needs finite inputs (the prediction and every \
             attribution would be NaN)",
            pos.join(", ")
        )));
    }
    Ok(())
}

/// The steps both masks keep (true = used), when there is any mask.
pub(super) fn both_masks(
    a: Option<&Array2<bool>>,
    b: Option<&Array2<bool>>,
) -> Option<Array2<bool>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(ndarray::Zip::from(a).and(b).map_collect(|&x, &y| x && y)),
        (a, b) => a.or(b).cloned(),
    }
}

pub(super) fn baseline<T: Real>(
    choice: &Choice,
    x: &Array3<T>,
    mask: Option<&Array2<bool>>,
    input: Option<(&str, bool)>,
) -> Result<Array3<T>> {
    let (b, t, f) = x.dim();
    let flat = input.is_some_and(|(_, flat)| flat);
    match &choice.kind {
        Kind::Zeros => Ok(Array3::zeros((b, t, f))),
        Kind::Mean => {
            // Each feature's mean over every unmasked step of every sequence.
            let mut sum = vec![0f64; f];
            let mut n = 0usize;
            for bi in 0..b {
                for ti in 0..t {
                    if mask.is_some_and(|m| !m[[bi, ti]]) {
                        continue;
                    }
                    n += 1;
                    for (j, v) in x.slice(s![bi, ti, ..]).iter().enumerate() {
                        sum[j] += v.to_f();
                    }
                }
            }
            let n = n.max(1) as f64;
            Ok(Array3::from_shape_fn((b, t, f), |(_, _, j)| {
                T::lit(sum[j] / n)
            }))
        }
        Kind::File(p) => {
            if !p.exists() {
                return Err(Error::usage(format!(
                    "{}: no file {}; a baseline is zeros, mean (lower case) or an .npy file",
                    choice.flag,
                    p.display()
                )));
            }
            let raw = io::read_npy(p)?;
            if let Some(i) = raw.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::input(
                    p,
                    format!(
                        "{}{}: value {} at flat index {i} is not finite; a baseline must be finite numbers",
                        choice.flag,
                        input.map_or(String::new(), |(n, _)| format!(" (input '{n}')")),
                        raw.data[i]
                    ),
                ));
            }
            let cast = |v: &Vec<f64>| v.iter().map(|&v| T::lit(v)).collect::<Vec<_>>();
            let (whole, one) = if flat {
                (vec![b, f], vec![f])
            } else {
                (vec![b, t, f], vec![t, f])
            };
            if raw.shape == whole {
                Ok(Array3::from_shape_vec((b, t, f), cast(&raw.data)).expect("shape checked"))
            } else if raw.shape == one {
                let one = Array2::from_shape_vec((t, f), cast(&raw.data)).expect("shape checked");
                Ok(one
                    .broadcast((b, t, f))
                    .expect("broadcast over sequences")
                    .to_owned())
            } else {
                Err(Error::usage(format!(
                    "{}: the file has shape {}; {} takes a baseline of the input's shape {} or one {} {}",
                    choice.flag,
                    raw.shape_str(),
                    input.map_or("the model".to_string(), |(n, _)| format!("input '{n}'")),
                    shape_str(&whole),
                    if flat { "row" } else { "sequence" },
                    shape_str(&one)
                )))
            }
        }
    }
}

fn run_as<T: Real>(
    a: &ExplainArgs,
    p: &Problem,
    methods: Methods,
    rule: IgRule,
    (max_values, vocab, columns): (usize, Option<&[Option<String>]>, usize),
) -> Result<Outcome> {
    finite_input(
        &format!(
            "--input {}",
            a.input
                .first()
                .map_or(String::new(), |p| p.display().to_string())
        ),
        p.x.iter(),
        p.x.shape(),
    )?;
    let net = cast_net::<T>(&p.net);
    let x = p.x.mapv(|v| T::lit(v));
    let init = InitialState {
        h0: p.init.h0.as_ref().map(|h| h.mapv(|v| T::lit(v))),
        c0: p.init.c0.as_ref().map(|c| c.mapv(|v| T::lit(v))),
    };
    let (b, _, f) = x.dim();
    // How many outputs the model has (explain checks it against its forward pass in debug builds).
    let outputs = net.output_width(x.dim().1, f);
    if a.output >= outputs {
        return Err(Error::usage(format!(
            "--output {} is out of range: the model has {outputs} output{} (--output 0..{})",
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
    let feature_names: Vec<String> = match &a.feature_names {
        Some(n) => {
            let v: Vec<String> = n.split(',').map(|s| s.trim().to_string()).collect();
            if v.len() != f {
                return Err(Error::usage(format!(
                    "--feature-names gives {} names; the input has {f} features",
                    v.len()
                )));
            }
            v
        }
        None => (0..f).map(|j| format!("x{j}")).collect(),
    };
    let policy = match &p.policy_model {
        Some(pm) => Some(policy_view(
            pm,
            [&runner::Tensor::Seq(p.x.clone())],
            a,
            net.kernels,
        )?),
        None => None,
    };
    let names: Vec<String> = p.input_name.iter().cloned().collect();
    let choice = super::explain_baselines::resolve(&a.baseline, &names, &[false])?.remove(0);
    // `mean` skips the steps the model masks: --mask's, and a leading Masking layer's (or --mask-value's).
    let model_mask = match p.net.ops.first() {
        Some(Op::Masking { value }) => {
            Some(crate::engine::mask_from_value(x.view(), T::lit(*value)))
        }
        _ => None,
    };
    let used = both_masks(p.mask.as_ref(), model_mask.as_ref());
    let base = baseline(&choice, &x, used.as_ref(), None)?;
    let req = Request {
        output: a.output,
        methods,
        baseline: base,
        ig_steps: a.ig_steps,
        ig_rule: rule,
        pass_budget: 512 << 20,
    };
    let e = explain::explain(&net, &x, p.mask.as_ref(), &init, &req);
    let report = ExplainReport {
        e: &e,
        x: &x,
        mask: p.mask.as_ref(),
        output: a.output,
        methods,
        feature_names,
        sequence: a.sequence,
        top: a.top,
        title: p.title.clone(),
        ig: (rule, a.ig_steps),
        precision: T::NAME,
        columns,
        // A one-feature id series with a vocabulary: each step's token.
        step_labels: vocab.filter(|_| f == 1).map(|v| {
            x.slice(s![a.sequence, .., 0])
                .iter()
                .map(|id| crate::cli::output::token_of(v, id.to_f()))
                .collect()
        }),
        policy: policy.as_ref(),
        inputs: 1,
    };
    policy_note(a, &report);
    if let Some(path) = &a.save {
        explain_data::save_npz(&report, path, explain_data::AttrShape::Sequence)?;
    }
    if let Some(path) = &a.plot {
        explain_plot::draw_attributions(&explain_plot::attribution_chart(&report), path)?;
    }
    if let Some(path) = &a.plot_units {
        explain_plot::draw_units(&e.units, path)?;
    }
    if let Some(path) = &a.report {
        write_report(&net, &x, p, &init, &report, path, (max_values, vocab))?;
    }
    if !a.quiet {
        match a.format {
            FormatArg::Json => {
                let v = explain_data::json(&report);
                write_stdout(|w| {
                    serde_json::to_writer(&mut *w, &v).map_err(std::io::Error::other)?;
                    writeln!(w)
                })?;
            }
            FormatArg::Table => {
                let text = explain_table::render(&report);
                write_stdout(|w| w.write_all(text.as_bytes()))?;
            }
        }
    }
    Ok(Outcome::Success)
}

/// What explain reports of a model saved under a float16/bfloat16 policy (`policy_model`, as saved): its
/// policies, and output `--output` of every sequence of `inputs` computed under them as `rnntrace run`
/// computes them (float32 values, every op rounded where TensorFlow rounds it). `--mask` is explain's own
/// addition to the model's input, which `run` does not take: then there is no policy prediction to show.
pub(super) fn policy_view<'t>(
    policy_model: &model::SavedModel,
    inputs: impl IntoIterator<Item = &'t runner::Tensor<f64>>,
    a: &ExplainArgs,
    kernels: Kernels,
) -> Result<PolicyView> {
    let prediction = match a.mask {
        Some(_) => None,
        None => {
            // `run` computes a policy model in float32 values.
            let inputs: Vec<runner::Tensor<f32>> = inputs
                .into_iter()
                .map(|t| match t {
                    runner::Tensor::Seq(x) => runner::Tensor::Seq(x.mapv(|v| v as f32)),
                    runner::Tensor::Flat(x) => runner::Tensor::Flat(x.mapv(|v| v as f32)),
                })
                .collect();
            let rows = super::explain_model::run_outputs_for::<f32>(policy_model, inputs, kernels)?;
            // The explained computation has as many outputs (checked against --output before this).
            if a.output >= rows.ncols() {
                return Err(Error::input(
                    &policy_model.path,
                    "computes a different number of outputs under its dtype policy than without it; please report it",
                ));
            }
            Some(rows.column(a.output).to_vec())
        }
    };
    Ok(PolicyView {
        policies: runner::model_policies(policy_model),
        prediction,
    })
}

/// The one line that says a policy model's attributions are of its float32 (float64) computation, on
/// stderr when the table (which says it too) is not written.
pub(super) fn policy_note<T: Real>(a: &ExplainArgs, r: &ExplainReport<'_, T>) {
    if let Some(p) = r.policy
        && (a.quiet || a.format == FormatArg::Json)
    {
        eprintln!(
            "note: {}",
            p.note(&r.e.prediction.to_vec(), r.output, r.sequence, r.precision)
        );
    }
}

/// `--report FILE.html`: the forward pass explain differentiated, recorded again with every gate and
/// state, as a report whose explain section holds the attributions and unit analyses.
fn write_report<T: Real>(
    net: &Network<T>,
    x: &Array3<T>,
    p: &Problem,
    init: &InitialState<T>,
    r: &ExplainReport<'_, T>,
    path: &Path,
    (max_values, vocab): (usize, Option<&[Option<String>]>),
) -> Result<()> {
    use crate::render::report;
    let fwd = net.forward(x.clone(), p.mask.clone(), init, crate::trace::Record::ALL);
    let units = explain::units::head_contributions(net, &fwd, r.output);
    let trace = crate::trace::Trace {
        layers: fwd.recorded().into_iter().map(|r| r.full_trace()).collect(),
        predictions: fwd.output_rows(),
        dense_activation: None,
    };
    let opts = report::Options {
        title: format!("explain {}", p.title),
        include_pre: true,
        max_values,
        feature_names: r.feature_names.clone(),
        ..report::Options::default()
    };
    let mut data = report::build(&trace, &report::Checks::default(), &opts);
    data.explain = Some(explain_data::report_section(r, units));
    if let Some(vocab) = vocab {
        if x.dim().2 == 1 {
            data.tokens = Some(
                data.sequences
                    .iter()
                    .map(|&b| {
                        x.slice(s![b, .., 0])
                            .iter()
                            .map(|v| crate::cli::output::token_of(vocab, v.to_f()))
                            .collect()
                    })
                    .collect(),
            );
        } else {
            data.notes.push(format!(
                "--tokens: not shown, the input has {} features per step, not one token id",
                x.dim().2
            ));
        }
    }
    report::html::write_file(&data, path)
}
