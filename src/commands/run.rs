/*!
`rnntrace run`: a whole saved Keras model (or a PyTorch state dict as a stack) end to end. Loading is
[`crate::model`], computing is [`crate::runner`]; this file checks the command line against the model
before computing, and hands the report to [`crate::cli::output`].
*/

use crate::cell::{Activation, Real};
use crate::cli::args::{CellArg, FormatArg, PrecisionArg, RunArgs};
use crate::cli::job::{self, Env};
use crate::cli::load::{load_targets, series_input};
use crate::cli::output::{self, Outcome};
use crate::compare;
use crate::error::{Error, Result, shape_str};
use crate::io;
use crate::model::{self, LayerKind, SavedModel};
use crate::render::Report;
use crate::runner::{self, Tensor};
use crate::trace::{LayerTrace, Trace};
use crate::weights::{CellKind, DenseWeights, NamedArrays, pytorch};
use ndarray::Array2;
use std::path::{Path, PathBuf};

/// `rnntrace run --model …`.
pub fn run_model(a: &RunArgs, env: &Env) -> Result<Outcome> {
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
    if let Some(t) = a.trace.as_ref().filter(|t| {
        !t.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    }) {
        return Err(Error::usage(format!(
            "--trace {}: `run` writes JSON traces (FILE.json); .npz traces are for single layers (rnntrace lstm|gru)",
            t.display()
        )));
    }
    if let Some(cell) = a.cell {
        return run_torch(a, cell, env);
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
            PrecisionArg::F32 => run_as::<f32>(a, &model, xs, None, env),
            PrecisionArg::F64 => run_as::<f64>(a, &model, xs, None, env),
        };
    }
    let input = runner::split_named_input(&model, &a.input[0]).1;
    let raw = io::read_npy(&input)?;
    if let Some(x) = runner::embedding_input(&model, &raw, &input)? {
        return match a.precision {
            PrecisionArg::F32 => run_as::<f32>(a, &model, vec![x], None, env),
            PrecisionArg::F64 => run_as::<f64>(a, &model, vec![x], None, env),
        };
    }
    // The model's own input shape decides what the input is; without one, the first layer that says.
    let declared = model.input_shape.last().copied().flatten();
    let first_layer = model.compute_layers().find_map(|l| match &l.kind {
        LayerKind::Recurrent(r) => Some(r.features),
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
        let x = series_input(&raw, &input, a.window, f, &format!("the model expects {f}"))?;
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
        PrecisionArg::F32 => run_as::<f32>(a, &model, vec![x], None, env),
        PrecisionArg::F64 => run_as::<f64>(a, &model, vec![x], None, env),
    }
}

/// `run --model state.npz --cell lstm|gru`: a whole PyTorch module from its state dict.
fn run_torch(a: &RunArgs, cell: CellArg, env: &Env) -> Result<Outcome> {
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
    let x = series_input(&raw, input, a.window, f, &format!("layer 0 expects {f}"))?;
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
        PrecisionArg::F32 => run_as::<f32>(a, &model, x, torch, env),
        PrecisionArg::F64 => run_as::<f64>(a, &model, x, torch, env),
    }?;
    if matches!(outcome, Outcome::Mismatch) && !a.time_major && raw.ndim() == 3 {
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

/// Whether `wanted` names the traced layer `name` (a Bidirectional's `name/forward` answers to `name`).
fn names_layer(wanted: &str, name: &str) -> bool {
    wanted == name || name.split('/').next() == Some(wanted)
}

/// Runs the model on its inputs (one per model input, in the model's order), first on one sequence to check
/// what depends on the model (the layers `--layers` names, the number of outputs `--output-names` labels)
/// before the whole batch is computed or anything written.
fn compute<T: Real>(
    a: &RunArgs,
    model: &SavedModel,
    xs: Vec<Tensor<T>>,
    torch: Option<TorchStack>,
    env: &Env,
) -> Result<runner::ModelRun<T>> {
    let go = |xs: Vec<Tensor<T>>| {
        if model.graph.is_some() {
            return runner::run_graph_using::<T>(model, xs, env.kernels);
        }
        // Without a graph a model has one input (run_model and assemble_inputs checked the count).
        let Some(x) = xs.into_iter().next() else {
            return Err(Error::usage("--input: no input given"));
        };
        match (torch, x) {
            (Some((src, kind, head)), Tensor::Seq(x)) => {
                runner::run_torch_stack_using::<T>(src, kind, x, head, env.kernels)
            }
            (_, x) => runner::run_model_using::<T>(model, x, env.kernels),
        }
    };
    let wanted = wanted_layers(a);
    let names = output_names(a);
    if wanted.is_none() && names.is_empty() {
        return go(xs);
    }
    let first = xs
        .iter()
        .map(|x| match x {
            Tensor::Seq(v) => Tensor::Seq(v.slice(ndarray::s![0..1, .., ..]).to_owned()),
            Tensor::Flat(v) => Tensor::Flat(v.slice(ndarray::s![0..1, ..]).to_owned()),
        })
        .collect();
    let probe = go(first)?;
    if let Some(w) = &wanted {
        let traced: Vec<&str> = probe.layers.iter().map(|l| l.name.as_str()).collect();
        if let Some(name) = w.iter().find(|n| !traced.iter().any(|t| names_layer(n, t))) {
            return Err(Error::usage(format!(
                "--layers: no recurrent layer named '{name}'; the model has: {}",
                traced.join(", ")
            )));
        }
    }
    let outputs = probe.output.rows().ncols();
    if !names.is_empty() && names.len() != outputs {
        return Err(Error::usage(format!(
            "--output-names gives {} names; the model has {outputs} outputs per sequence",
            names.len()
        )));
    }
    go(xs)
}

/// Runs the model on `xs` (one tensor per model input, in the model's order; a PyTorch stack takes one),
/// compares every output given an `--expected`, and writes the report (the first output's predictions).
fn run_as<T: Real>(
    a: &RunArgs,
    model: &SavedModel,
    xs: Vec<Tensor<f64>>,
    torch: Option<TorchStack>,
    env: &Env,
) -> Result<Outcome> {
    let shape = xs.first().map(|x| x.shape()).unwrap_or_default();
    let n = shape.first().copied().unwrap_or(0);
    let features = *shape.last().unwrap_or(&0);
    // Everything that can be checked from the command line and the input, before computing.
    let mut display = job::display_options(&a.display, features)?;
    display.check_sequences(n)?;
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
    let xs = xs
        .into_iter()
        .map(|x| match x {
            Tensor::Seq(v) => Tensor::Seq(v.mapv(T::lit)),
            Tensor::Flat(v) => Tensor::Flat(v.mapv(T::lit)),
        })
        .collect();
    let run = compute(a, model, xs, torch, env)?;
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
            a.check.atol,
            a.check.rtol,
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
                a.check.atol,
                a.check.rtol,
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
    let trace = Trace {
        layers: run.layers,
        predictions,
        dense_activation,
    };
    // Per-step tables: the chosen layers, for the shown sequences.
    let wanted = wanted_layers(a);
    let rows = if a.format == FormatArg::Table {
        display.shown_sequences(n)
    } else {
        Vec::new()
    };
    let subsets: Vec<LayerTrace<T>> = trace
        .layers
        .iter()
        .filter(|l| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| names_layer(n, &l.name)))
        })
        .map(|l| l.select_sequences(&rows))
        .collect();
    let title = match torch {
        Some((_, kind, _)) => format!(
            "{} (PyTorch {} state dict, whole stack)",
            a.model.display(),
            kind.display_name()
        ),
        None => format!(
            "{} ({}, saved by Keras {})",
            a.model.display(),
            model.format.describe(),
            model.keras_version
        ),
    };
    let report = Report {
        trace: &trace,
        detail: subsets.iter().collect(),
        detail_rows: rows,
        expected,
        comparison,
        targets,
        window: a.window,
        display: &display,
        title,
    };
    output::write(
        &report,
        &output::Targets {
            format: a.format,
            json_trace: a.trace.as_deref(),
            plots: &a.plots,
            streamed: output::Streamed::default(),
            more_outputs: more,
            html: html.as_ref().map(|job| output::HtmlReport {
                job,
                trace: &trace,
                include_pre: false,
                ids: token_ids.clone(),
            }),
        },
    )
}

/// Compares one model output with an expected `.npy` (shapes may differ by axes of length 1); the
/// comparison and the expected values.
fn compare_output<T: Real>(
    p: &Path,
    out_shape: &[usize],
    ours: &Array2<T>,
    atol: f64,
    rtol: f64,
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
    Ok((
        compare::compare(&ours, &e.data, out_shape, atol, rtol),
        e.data,
    ))
}
