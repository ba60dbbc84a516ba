/*!
`rnntrace run`: a whole saved Keras model (or a PyTorch state dict as a stack) end to end. Loading is
[`crate::model`], computing is [`crate::runner`]; this file checks the command line against the model
before computing, and hands the report to [`crate::cli::output`].
*/

use crate::cell::{Activation, Real};
use crate::cli::args::{CellArg, FormatArg, PrecisionArg, RunArgs};
use crate::cli::job::{self, Env};
use crate::cli::load::{load_targets, series_input};
use crate::cli::output::{self, Outcome, Progress};
use crate::compare;
use crate::engine::Stores;
use crate::error::{Error, Result, shape_str};
use crate::io;
use crate::model::{self, LayerKind, SavedModel};
use crate::render::Report;
use crate::render::npz::{ModelNpz, NpzLayer, NpzRun, NpzTensor};
use crate::runner::{self, LayerSink, Recording, Tensor};
use crate::trace::{LayerTrace, Record, Trace};
use crate::weights::{CellKind, DenseWeights, NamedArrays, pytorch};
use ndarray::{Array2, Axis};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `rnntrace run --model …`.
pub fn run_model(a: &RunArgs, env: &Env) -> Result<Outcome> {
    let started = Instant::now();
    // An `--input NAME=FILE` protects FILE too (whether NAME is an input is known only once loaded).
    let named: Vec<PathBuf> = a
        .input
        .iter()
        .filter_map(|p| p.to_str()?.split_once('=').map(|(_, f)| PathBuf::from(f)))
        .collect();
    let mut inputs: Vec<&Path> = vec![&a.model];
    inputs.extend(a.input.iter().chain(&named).map(|p| p.as_path()));
    inputs.extend(a.check.expected.iter().map(|p| p.as_path()));
    inputs.extend(
        [&a.check.targets, &a.check.inverse_scale]
            .into_iter()
            .flatten()
            .map(|p| p.as_path()),
    );
    inputs.extend(a.dense.as_deref().map(Path::new));
    job::check_outputs(&inputs, a.trace.as_deref(), &a.plots)?;
    if let Some(t) = a.trace.as_ref().filter(|t| !is_json(t) && !is_npz(t)) {
        return Err(Error::usage(format!(
            "--trace {}: the trace is written as FILE.json (the JSON schema) or FILE.npz (NumPy arrays); give one of those extensions",
            t.display()
        )));
    }
    if let Some(cell) = a.cell {
        return run_torch(a, cell, env, started);
    }
    let weights_file = a.model.extension().is_some_and(|e| {
        ["json", "npz", "npy"]
            .iter()
            .any(|w| e.eq_ignore_ascii_case(w))
    });
    if weights_file {
        return Err(Error::input(
            &a.model,
            "is a weights file, not a saved Keras model (.keras or .h5): trace one layer with \
             `rnntrace lstm --weights FILE` or `rnntrace gru --weights FILE`, or run a PyTorch state dict \
             whole with --cell lstm|gru",
        ));
    }
    for (flag, given) in [
        ("--dense", a.dense.is_some()),
        ("--module", a.module.is_some()),
        ("--time-major", a.time_major),
    ] {
        if given {
            return Err(Error::usage(format!(
                "{flag} applies to PyTorch files run with --cell lstm|gru; a saved Keras model carries its own layers"
            )));
        }
    }
    let model = model::load(&a.model)?;
    model.check_runnable()?;
    check_precision(a, &model)?;
    if a.input.len() > 1 || model.graph.as_ref().is_some_and(|g| g.inputs.len() > 1) {
        if a.window.is_some() {
            return Err(Error::usage(
                "--window cuts one series; it does not apply to a model with several inputs",
            ));
        }
        let mut given = Vec::with_capacity(a.input.len());
        for arg in &a.input {
            let (name, path) = runner::split_named_input(&model, arg);
            given.push((name, io::read_npy(&path)?, path));
        }
        let xs = runner::assemble_inputs(&model, given)?;
        return match a.precision {
            PrecisionArg::F32 => run_as::<f32>(a, &model, xs, None, env, started),
            PrecisionArg::F64 => run_as::<f64>(a, &model, xs, None, env, started),
        };
    }
    let input = runner::split_named_input(&model, &a.input[0]).1;
    let raw = io::read_npy(&input)?;
    if let Some(x) = runner::embedding_input(&model, &raw, &input)? {
        return match a.precision {
            PrecisionArg::F32 => run_as::<f32>(a, &model, vec![x], None, env, started),
            PrecisionArg::F64 => run_as::<f64>(a, &model, vec![x], None, env, started),
        };
    }
    // The model's own input shape decides what the input is; without one, the first layer that says.
    let declared = model.input_shape.last().copied().flatten();
    let first_layer = model.compute_layers().find_map(|l| match &l.kind {
        LayerKind::Recurrent(r) => Some(r.features),
        LayerKind::StackedRecurrent(cells) => cells.first().map(|r| r.features),
        LayerKind::Bidirectional { forward, .. } => Some(forward.features),
        LayerKind::Dense { kernel, .. } | LayerKind::TimeDistributedDense { kernel, .. } => {
            kernel.shape.first().copied()
        }
        LayerKind::Conv1D { kernel, spec, .. } => kernel.shape.get(1).map(|c| c * spec.groups),
        _ => None,
    });
    let f = declared
        .or(first_layer)
        .unwrap_or_else(|| raw.shape.last().copied().unwrap_or(0));
    let x = if model.input_shape.len() == 2 {
        // A model whose input is not a sequence: (batch, features).
        let rows = match raw.shape.as_slice() {
            [n, w] if *w == f => *n,
            [w] if *w == f => 1,
            _ => {
                return Err(Error::input(
                    &input,
                    format!(
                        "has shape {}; the model takes (batch, {f})",
                        raw.shape_str()
                    ),
                ));
            }
        };
        Tensor::Flat(
            ndarray::Array2::from_shape_vec((rows, f), raw.data.clone())
                .map_err(|e| Error::input(&input, e.to_string()))?,
        )
    } else {
        let x = series_input(raw, &input, a.window, f, &format!("the model expects {f}"))?;
        if let Some(want) = model
            .input_shape
            .get(1)
            .copied()
            .flatten()
            .filter(|&w| w != x.shape()[1] && a.window.is_none())
        {
            return Err(Error::input(
                &input,
                format!(
                    "has {} timesteps per sequence; the model was built for {want}",
                    x.shape()[1]
                ),
            ));
        }
        Tensor::Seq(x)
    };
    match a.precision {
        PrecisionArg::F32 => run_as::<f32>(a, &model, vec![x], None, env, started),
        PrecisionArg::F64 => run_as::<f64>(a, &model, vec![x], None, env, started),
    }
}

/// `, dtype policy mixed_float16 (float16 compute, float32 variables)` for a model under a policy.
fn policy_note(model: &SavedModel) -> String {
    runner::model_policies(model)
        .iter()
        .map(|p| format!(", dtype policy {}", p.describe()))
        .collect()
}

/// A model with layers under a float16/bfloat16 dtype policy is computed as TensorFlow computes it: float32
/// arithmetic, each op rounded to the compute type. `--precision f64` would compute another model (one
/// that never rounds), whose answer is neither Keras's nor closer to it, so it is refused.
fn check_precision(a: &RunArgs, model: &SavedModel) -> Result<()> {
    let Some(layer) = model.layers.iter().find(|l| l.policy.is_some()) else {
        return Ok(());
    };
    let p = layer.policy.expect("found above");
    let others = model.layers.iter().filter(|l| l.policy.is_some()).count() - 1;
    if a.precision == PrecisionArg::F64 {
        return Err(Error::usage(format!(
            "--precision f64: {} computes under the dtype policy {} (layer '{}'{}): rnntrace \
             computes it as TensorFlow does, in float32 arithmetic with every op rounded to {}, which is what \
             --precision f32 (the default) runs; a float64 computation would not be the model's answer",
            a.model.display(),
            p.describe(),
            layer.name,
            match others {
                0 => String::new(),
                1 => " and 1 other".to_string(),
                n => format!(" and {n} others"),
            },
            p.compute()
        )));
    }
    Ok(())
}

/// How many ulps of the compute type, at the largest expected value, a float16/bfloat16 model's output may
/// differ by (absolute; rtol 0). rnntrace rounds every op where TensorFlow does and reproduces the 16
/// models of `fixtures/float16_models/` bit for bit (an LSTM(64) over 40 steps included). What can still
/// differ on other models is the order of a product's float32 sum (gemm's blocking, not Eigen's): in the
/// rare case a sum lies within a float32 ulp of a float16 tie, one rounding flips by one ulp, which moves
/// the output by about an ulp; and the few layers computed in float32 and rounded once (pooling means,
/// merges of three or more tensors, concat/additive attention scores) may differ by a fraction of an ulp.
/// 4 ulps leave room for a few such differences. It is a check of the trace, not of the kind of
/// arithmetic: a float32 computation of these small models also lands within 0.1 to 2.3 ulps of
/// `model.predict` (each case's `float32_max_abs_diff`), which is why rnntrace never runs such a model in
/// float32.
pub const POLICY_TOLERANCE_ULPS: f64 = 4.0;

/// A comparison's `(atol, rtol, why)`: why only when it is not what the user gave.
type Tolerance = (f64, f64, Option<String>);

/// The tolerance of a comparison: `--atol`/`--rtol` when given; for a model under a dtype policy
/// otherwise [`POLICY_TOLERANCE_ULPS`] ulps of its (coarsest) compute type at the largest expected value,
/// with the reason; else the defaults.
fn tolerance(a: &RunArgs, model: &SavedModel, expected: &[f64]) -> Tolerance {
    let coarsest = runner::model_policies(model)
        .into_iter()
        .min_by_key(|p| p.significand_bits());
    match coarsest {
        Some(p) if a.check.atol.is_none() && a.check.rtol.is_none() => {
            let top = expected
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f64, |m, v| m.max(v.abs()));
            let atol = POLICY_TOLERANCE_ULPS * p.ulp(top);
            let why = format!(
                "a {} model's tolerance: {} {} ulps at the largest expected value {:.3}; give --atol/--rtol to choose",
                p.name(),
                POLICY_TOLERANCE_ULPS,
                p.compute(),
                top
            );
            (atol, 0.0, Some(why))
        }
        _ => (a.check.atol(), a.check.rtol(), None),
    }
}

/// `run --model state.npz --cell lstm|gru`: a whole PyTorch module from its state dict.
fn run_torch(a: &RunArgs, cell: CellArg, env: &Env, started: Instant) -> Result<Outcome> {
    let kind = cell.kind();
    let full = crate::weights::load_arrays(&a.model, &[])?;
    let src = pytorch::select_module(full.clone(), a.module.as_deref())?;
    let first = pytorch::from_state_dict(kind, &src, 0, false)?;
    let module = pytorch::recurrent_modules(&src);
    let width = module.first().map_or(first.units, |m| {
        (if m.proj > 0 { m.proj } else { m.hidden }) * if m.bidirectional { 2 } else { 1 }
    });
    let head = match &a.dense {
        None => None,
        Some(d) => Some(crate::weights::dense::load_head(
            Path::new(d),
            &full,
            width,
        )?),
    };
    for note in pytorch::notes(&full, true) {
        if head.is_none() || !note.contains("nn.Linear") {
            eprintln!("rnntrace: {note}");
        }
    }
    let [input] = a.input.as_slice() else {
        return Err(Error::usage("a PyTorch state dict takes one --input"));
    };
    let mut raw = io::read_npy(input)?;
    if a.time_major {
        raw = raw.swap_leading_axes();
    } else if src.meta.batch_first.iter().any(|(p, b)| {
        !*b && a
            .module
            .as_deref()
            .is_none_or(|m| p.trim_end_matches('.').starts_with(m))
    }) {
        eprintln!(
            "rnntrace: note: {}: the module was built with batch_first=False, so PyTorch feeds it (timesteps, sequences, features); if --input is saved that way, pass --time-major",
            a.model.display()
        );
    }
    let f = first.features;
    let raw_ndim = raw.ndim();
    let x = series_input(raw, input, a.window, f, &format!("layer 0 expects {f}"))?;
    let model = SavedModel {
        path: a.model.clone(),
        format: model::ModelFormat::LegacyH5,
        keras_version: "PyTorch state dict".into(),
        keras2: false,
        input_shape: Vec::new(),
        layers: Vec::new(),
        graph: None,
    };
    let x = vec![Tensor::Seq(x)];
    let torch = Some((&src, kind, head.as_ref()));
    let outcome = match a.precision {
        PrecisionArg::F32 => run_as::<f32>(a, &model, x, torch, env, started),
        PrecisionArg::F64 => run_as::<f64>(a, &model, x, torch, env, started),
    }?;
    if matches!(outcome, Outcome::Mismatch) && !a.time_major && raw_ndim == 3 {
        eprintln!(
            "rnntrace: note: if --input and --expected are time-major (timesteps, sequences, …), as a PyTorch module with batch_first=False takes and returns them, pass --time-major"
        );
    }
    Ok(outcome)
}

/// A PyTorch state dict run as a whole stack, with its optional nn.Linear head.
type TorchStack<'a> = (&'a NamedArrays, CellKind, Option<&'a DenseWeights<f64>>);

/// Names of the outputs from `--output-names` (empty when not given).
fn output_names(a: &RunArgs) -> Vec<String> {
    a.check
        .output_names
        .as_ref()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default()
}

/// The layers `--layers` names (None: all).
fn wanted_layers(a: &RunArgs) -> Option<Vec<String>> {
    a.layers
        .as_ref()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
}

/// Whether `wanted` names the traced layer `name` (a Bidirectional's `name/forward` answers to `name`, and
/// a shared layer's later calls `name@k` too).
fn names_layer(wanted: &str, name: &str) -> bool {
    let first = name.split('/').next().unwrap_or(name);
    wanted == name
        || first == wanted
        || first
            .rsplit_once('@')
            .is_some_and(|(base, k)| base == wanted && k.parse::<usize>().is_ok())
}

fn is_json(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn is_npz(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// Runs the model on its inputs (one per model input, in the model's order): a Functional graph, the
/// PyTorch stack, or the layers in order; recording what `rec` asks for.
fn go<T: Real>(
    model: &SavedModel,
    torch: Option<TorchStack>,
    xs: Vec<Tensor<T>>,
    env: &Env,
    rec: &mut Recording<'_, T>,
) -> Result<runner::ModelRun<T>> {
    if model.graph.is_some() {
        return runner::run_graph_recording::<T>(model, xs, env.kernels, rec);
    }
    // Without a graph a model has one input (run_model and assemble_inputs checked the count).
    let Some(x) = xs.into_iter().next() else {
        return Err(Error::usage("--input: no input given"));
    };
    match (torch, x) {
        (Some((src, kind, head)), Tensor::Seq(x)) => {
            runner::run_torch_stack_recording::<T>(src, kind, x, head, env.kernels, rec)
        }
        (_, x) => runner::run_model_recording::<T>(model, x, env.kernels, rec),
    }
}

/// The sequences `rows` of every input.
fn select_rows<T: Real>(xs: &[Tensor<T>], rows: &[usize]) -> Vec<Tensor<T>> {
    xs.iter()
        .map(|x| match x {
            Tensor::Seq(v) => Tensor::Seq(v.select(Axis(0), rows)),
            Tensor::Flat(v) => Tensor::Flat(v.select(Axis(0), rows)),
        })
        .collect()
}

/// What a run on one sequence says about the model: its recurrent layers (traced names, shapes, whether
/// masked) and its outputs per sequence.
struct Probe {
    layers: Vec<NpzLayer>,
    outputs: usize,
}

/// Notes which layers see a mask: their blocks carry an output array (recorded with states only then).
struct MaskProbe(Vec<(String, bool)>);

impl<T: Real> LayerSink<T> for MaskProbe {
    fn record(&self) -> Record {
        Record::STATES
    }
    fn block(&mut self, layer: &str, _: usize, s: &Stores<T>) -> Result<()> {
        if !self.0.iter().any(|(n, _)| n == layer) {
            self.0.push((layer.to_string(), s.out.is_some()));
        }
        Ok(())
    }
}

fn probe<T: Real>(
    model: &SavedModel,
    torch: Option<TorchStack>,
    xs: &[Tensor<T>],
    env: &Env,
    sequences: usize,
) -> Result<Probe> {
    let first = select_rows(xs, &[0]);
    let mut masks = MaskProbe(Vec::new());
    let run = go(
        model,
        torch,
        first,
        env,
        &mut Recording {
            keep: Record::NONE,
            stream: Some(&mut masks),
        },
    )?;
    let layers = run
        .layers
        .iter()
        .map(|l| NpzLayer {
            name: l.name.clone(),
            run: NpzRun {
                kind: l.kind,
                sequences,
                steps: l.steps(),
                units: l.units,
                h_units: l.final_h.ncols(),
                masked: masks.0.iter().any(|(n, m)| *n == l.name && *m),
            },
        })
        .collect();
    Ok(Probe {
        layers,
        outputs: run.output.rows().ncols(),
    })
}

/// Checks what depends on the model (the layers `--layers` names, the number of outputs `--output-names`
/// labels) from a probe, before the whole batch is computed or anything written.
fn check_probe(a: &RunArgs, probe: &Probe) -> Result<()> {
    if let Some(w) = &wanted_layers(a) {
        let traced: Vec<&str> = probe.layers.iter().map(|l| l.name.as_str()).collect();
        if let Some(name) = w.iter().find(|n| !traced.iter().any(|t| names_layer(n, t))) {
            return Err(Error::usage(format!(
                "--layers: no recurrent layer named '{name}'; the model has: {}",
                traced.join(", ")
            )));
        }
    }
    let names = output_names(a);
    if !names.is_empty() && names.len() != probe.outputs {
        return Err(Error::usage(format!(
            "--output-names gives {} names; the model has {} outputs per sequence",
            names.len(),
            probe.outputs
        )));
    }
    Ok(())
}

/// Streams every layer's blocks into the model's `.npz` trace, moving the progress bar.
struct NpzSink<T> {
    npz: ModelNpz<T>,
    record: Record,
    /// Each layer's first position on the progress bar.
    offsets: Vec<(String, usize)>,
    progress: Progress,
    write_time: Duration,
}

impl<T: Real> LayerSink<T> for NpzSink<T> {
    fn record(&self) -> Record {
        self.record
    }
    fn block(&mut self, layer: &str, t0: usize, s: &Stores<T>) -> Result<()> {
        let t = Instant::now();
        self.npz.write_block(layer, s)?;
        self.write_time += t.elapsed();
        let offset = self
            .offsets
            .iter()
            .find(|(n, _)| n == layer)
            .map_or(0, |(_, o)| *o);
        self.progress.set(offset + t0 + s.steps());
        Ok(())
    }
}

/// Whether a recurrent layer of the model is stateful (a subset of the sequences cannot run on its own).
fn any_stateful(model: &SavedModel) -> bool {
    model.layers.iter().any(|l| match &l.kind {
        LayerKind::Recurrent(r) => r.stateful,
        LayerKind::Bidirectional {
            forward, backward, ..
        } => forward.stateful || backward.stateful,
        _ => false,
    })
}

/// Runs the model on `xs` (one tensor per model input, in the model's order; a PyTorch stack takes one),
/// compares every output given an `--expected`, and writes the report (the first output's predictions).
fn run_as<T: Real>(
    a: &RunArgs,
    model: &SavedModel,
    xs: Vec<Tensor<f64>>,
    torch: Option<TorchStack>,
    env: &Env,
    started: Instant,
) -> Result<Outcome> {
    let shape = xs.first().map(|x| x.shape()).unwrap_or_default();
    let n = shape.first().copied().unwrap_or(0);
    let features = *shape.last().unwrap_or(&0);
    // Everything that can be checked from the command line and the input, before computing.
    let mut display = job::display_options(&a.display, features, env)?;
    display.check_sequences(n)?;
    if shape.len() == 3 {
        display.check_steps(shape[1])?;
    }
    job::check_plot_sequence(&a.plots, n)?;
    let html = job::report_job(&a.plots, env)?;
    // An Embedding model reads token ids (sequences, timesteps): the report's token track shows them.
    let token_ids = match xs.first() {
        Some(Tensor::Flat(ids)) if html.as_ref().is_some_and(|h| h.tokens.is_some()) => {
            Some(ids.clone())
        }
        _ => None,
    };
    display.output_names = output_names(a);
    let model_outputs = model.graph.as_ref().map_or(1, |g| g.outputs.len());
    let names = runner::output_names(model, model_outputs);
    if !a.check.expected.is_empty() && a.check.expected.len() != model_outputs {
        return Err(Error::usage(format!(
            "{} --expected file(s) given; the model has {model_outputs} output(s) ({}): give one per output, in that order",
            a.check.expected.len(),
            names.join(", ")
        )));
    }
    let npz_target = a.trace.as_deref().filter(|p| is_npz(p));
    let n_inputs = xs.len();
    let xs: Vec<Tensor<T>> = xs
        .into_iter()
        .map(|x| match x {
            Tensor::Seq(v) => Tensor::Seq(v.mapv(T::lit)),
            Tensor::Flat(v) => Tensor::Flat(v.mapv(T::lit)),
        })
        .collect();
    let load_s = started.elapsed();
    let compute_start = Instant::now();
    let wanted = wanted_layers(a);
    let probed = if wanted.is_some() || !display.output_names.is_empty() || npz_target.is_some() {
        let p = probe(model, torch, &xs, env, n)?;
        check_probe(a, &p)?;
        Some(p)
    } else {
        None
    };
    // Memory holds only what is shown: JSON, the HTML report and charts every step of every layer, tables
    // the shown sequences (run again below), --quiet nothing but what the next layer needs.
    let p = &a.plots;
    let full = a.format == FormatArg::Json
        || a.trace.as_deref().is_some_and(is_json)
        || html.is_some()
        || p.plot.is_some()
        || p.plot_predictions.is_some()
        || p.plot_gates.is_some();
    let keep = if full { Record::ALL } else { Record::NONE };
    let rows = if a.format == FormatArg::Table {
        display.shown_sequences(n)
    } else {
        Vec::new()
    };
    let detail_x =
        (!full && !rows.is_empty() && !any_stateful(model)).then(|| select_rows(&xs, &rows));
    let detail_full = !full && !rows.is_empty() && detail_x.is_none();
    let mut sink = match (npz_target, &probed) {
        (Some(target), Some(p)) => {
            let record = a.record.record(a.record_pre);
            // One input as before ((B, T, F), a flat input as (B, F, 1)); several each in its own shape.
            let names = runner::input_keys(model, xs.len());
            let owned: Vec<(String, Vec<usize>, Vec<T>)> = xs
                .iter()
                .zip(names)
                .map(|(x, name)| {
                    let mut shape = x.shape();
                    if xs.len() == 1 && shape.len() == 2 {
                        shape.push(1);
                    }
                    let values = match x {
                        Tensor::Seq(v) => v.iter().copied().collect(),
                        Tensor::Flat(v) => v.iter().copied().collect(),
                    };
                    (name, shape, values)
                })
                .collect();
            let inputs: Vec<NpzTensor<'_, T>> = owned
                .iter()
                .map(|(name, shape, values)| NpzTensor {
                    name: name.clone(),
                    shape: shape.clone(),
                    values,
                })
                .collect();
            let npz = ModelNpz::<T>::new(target, &p.layers, record, &inputs)?;
            let mut offsets = Vec::new();
            let mut total = 0;
            for l in &p.layers {
                offsets.push((l.name.clone(), total));
                total += l.run.steps;
            }
            Some(NpzSink {
                npz,
                record,
                offsets,
                progress: Progress::new(total),
                write_time: Duration::ZERO,
            })
        }
        _ => None,
    };
    let keep_x = detail_full.then(|| xs.clone());
    let run = go(
        model,
        torch,
        xs,
        env,
        &mut Recording {
            keep,
            stream: sink.as_mut().map(|s| s as &mut dyn LayerSink<T>),
        },
    )?;
    if let Some(s) = &sink {
        s.progress.finish();
    }
    let mut write_time = sink.as_ref().map_or(Duration::ZERO, |s| s.write_time);
    let out_shape = run.output.shape();
    let predictions = run.output.rows();
    let outputs = predictions.ncols();
    if let Some(p) = &a.check.inverse_scale {
        display.scaler = Some(crate::scaler::Scaler::load(p, outputs)?);
    }
    // The report's comparison is the first output's; the others' are compared here, each named.
    let mut more = output::MoreOutputs::default();
    if run.outputs.len() > 1 {
        more.names = names.clone();
    }
    for ((p, out), name) in a
        .check
        .expected
        .iter()
        .zip(&run.outputs)
        .zip(&names)
        .skip(1)
    {
        let (c, _) = compare_output(
            p,
            &out.shape(),
            &out.rows(),
            &|e| tolerance(a, model, e),
            a.time_major,
        )?;
        more.compared.push((name.clone(), c));
    }
    let (expected, comparison) = match a.check.expected.first() {
        None => (None, None),
        Some(p) => {
            let (c, e) = compare_output(
                p,
                &out_shape,
                &predictions,
                &|e| tolerance(a, model, e),
                a.time_major,
            )?;
            let exp = Array2::from_shape_vec((n, outputs), e)
                .map_err(|err| Error::input(p, err.to_string()))?;
            (Some(exp), Some(c))
        }
    };
    let targets = match &a.check.targets {
        None => None,
        Some(p) => Some(load_targets(p, n, outputs, a.window)?),
    };
    let dense_activation = model.compute_layers().last().and_then(|l| match &l.kind {
        LayerKind::Dense { activation, .. }
        | LayerKind::TimeDistributedDense { activation, .. } => Activation::parse(activation).ok(),
        _ => None,
    });
    if run.layers.is_empty() {
        return Err(Error::input(&a.model, "has no recurrent layer to trace"));
    }
    let policies = runner::model_policies(model);
    let precision = if policies.is_empty() {
        T::NAME.to_string()
    } else {
        policies
            .iter()
            .map(|p| p.describe())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let kernels: Vec<&str> = run.layers.iter().map(|l| l.kernels.name()).collect();
    let kernels = kernels.join(",");
    let trace = Trace {
        layers: run.layers,
        predictions,
        dense_activation,
    };
    let plot_layer = match &a.plot_layer {
        None => None,
        Some(name) => Some(
            trace
                .layers
                .iter()
                .position(|l| names_layer(name, &l.name))
                .ok_or_else(|| {
                    Error::usage(format!(
                        "--plot-layer {name}: the model's recurrent layers are {}",
                        trace
                            .layers
                            .iter()
                            .map(|l| crate::error::printable(&l.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
        ),
    };
    let compute_s = compute_start.elapsed().saturating_sub(write_time);
    let write_start = Instant::now();
    // Every output, named, with its comparison, when the model has several (the report's own fields
    // hold the first's).
    let keys = runner::output_keys(model, run.outputs.len());
    let mut compared = more.compared.iter().map(|(_, c)| c.clone());
    let all_outputs: Vec<crate::render::ModelOutput> = if run.outputs.len() > 1 {
        run.outputs
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(k, (o, name))| crate::render::ModelOutput {
                name: name.clone(),
                shape: o.shape(),
                values: o.rows().iter().map(|v| v.to_f()).collect(),
                comparison: if k == 0 {
                    comparison.clone()
                } else {
                    compared.next()
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    if let Some(s) = sink {
        let flat: Vec<Vec<T>> = run
            .outputs
            .iter()
            .map(|o| o.rows().iter().copied().collect())
            .collect();
        let more_npz: Vec<NpzTensor<'_, T>> = if run.outputs.len() > 1 {
            run.outputs
                .iter()
                .zip(&keys)
                .zip(&flat)
                .map(|((o, name), values)| NpzTensor {
                    name: name.clone(),
                    shape: o.shape(),
                    values,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut meta = serde_json::json!({
            "model": a.model.display().to_string(),
            "dense_activation": trace.dense_activation.map(|a| a.name()),
            "comparison": comparison,
            "window": a.window,
            "precision": if policies.is_empty() { T::NAME.to_string() } else {
                policies.iter().map(|p| p.name()).collect::<Vec<_>>().join("+")
            },
        });
        if n_inputs > 1 {
            meta["inputs"] = serde_json::json!(runner::input_keys(model, n_inputs));
        }
        if !all_outputs.is_empty() {
            meta["outputs"] = all_outputs
                .iter()
                .map(|o| {
                    serde_json::json!({"name": o.name, "member": format!("outputs/{}", o.name),
                        "shape": o.shape, "comparison": o.comparison})
                })
                .collect();
        }
        s.npz
            .finish(&trace.layers, &out_shape, &trace, &more_npz, meta)?;
    }
    // Per-step tables: the chosen layers, for the shown sequences.
    let chosen = |l: &&LayerTrace<T>| {
        wanted
            .as_ref()
            .is_none_or(|w| w.iter().any(|n| names_layer(n, &l.name)))
    };
    let detail_layers: Vec<LayerTrace<T>> = if let Some(dx) = detail_x {
        go(model, torch, dx, env, &mut Recording::all())?.layers
    } else if detail_full {
        let all = go(
            model,
            torch,
            keep_x.expect("kept for the detail run"),
            env,
            &mut Recording::all(),
        )?;
        all.layers
            .iter()
            .map(|l| l.select_sequences(&rows))
            .collect()
    } else {
        trace
            .layers
            .iter()
            .map(|l| l.select_sequences(&rows))
            .collect()
    };
    let subsets: Vec<&LayerTrace<T>> = detail_layers.iter().filter(chosen).collect();
    let title = match torch {
        Some((_, kind, _)) => format!(
            "{} (PyTorch {} state dict, whole stack)",
            a.model.display(),
            kind.display_name()
        ),
        None => format!(
            "{} ({}, saved by Keras {}{})",
            a.model.display(),
            model.format.describe(),
            model.keras_version,
            policy_note(model)
        ),
    };
    let report = Report {
        trace: &trace,
        detail: subsets,
        detail_rows: rows,
        expected,
        comparison,
        targets,
        window: a.window,
        display: &display,
        title,
        outputs: all_outputs,
    };
    let outcome = output::write(
        &report,
        &output::Targets {
            format: a.format,
            json_trace: a.trace.as_deref().filter(|p| is_json(p)),
            plots: &a.plots,
            plot_layer,
            streamed: output::Streamed::default(),
            more_outputs: more,
            html: html.as_ref().map(|job| output::HtmlReport {
                job,
                trace: &trace,
                include_pre: false,
                ids: token_ids.clone(),
            }),
        },
    )?;
    write_time += write_start.elapsed();
    if a.timings {
        eprintln!(
            "{}",
            serde_json::json!({
                "load_s": load_s.as_secs_f64(),
                "compute_s": compute_s.as_secs_f64(),
                "write_s": write_time.as_secs_f64(),
                "total_s": started.elapsed().as_secs_f64(),
                "kernels": kernels,
                "precision": precision,
            })
        );
    }
    Ok(outcome)
}

/// Compares one model output with an expected `.npy` (shapes may differ by axes of length 1); the
/// comparison and the expected values.
fn compare_output<T: Real>(
    p: &Path,
    out_shape: &[usize],
    ours: &Array2<T>,
    tolerance: &dyn Fn(&[f64]) -> Tolerance,
    time_major: bool,
) -> Result<(compare::Comparison, Vec<f64>)> {
    let mut e = io::read_npy(p)?;
    if time_major {
        e = e.swap_leading_axes();
    }
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if e.shape != out_shape && squeeze(&e.shape) != squeeze(out_shape) {
        if !time_major && e.swap_leading_axes().shape == out_shape {
            return Err(Error::input(
                p,
                format!(
                    "expected output has shape {}: time-major (timesteps, sequences, …), as a PyTorch module with batch_first=False returns it; the model's output has shape {}; pass --time-major (it reads --input that way too)",
                    e.shape_str(),
                    shape_str(out_shape)
                ),
            ));
        }
        return Err(Error::input(
            p,
            format!(
                "expected output has shape {}; the model's output has shape {}",
                e.shape_str(),
                shape_str(out_shape)
            ),
        ));
    }
    let ours: Vec<f64> = ours.iter().map(|v| v.to_f()).collect();
    let (atol, rtol, why) = tolerance(&e.data);
    let mut c = compare::compare(&ours, &e.data, out_shape, atol, rtol);
    c.tolerance = why;
    Ok((c, e.data))
}
