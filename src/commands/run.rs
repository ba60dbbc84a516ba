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
use crate::weights::{CellKind, NamedArrays};
use ndarray::Array2;
use std::path::Path;

/// `rnntrace run --model …`.
pub fn run_model(a: &RunArgs, env: &Env) -> Result<Outcome> {
    let mut inputs: Vec<&Path> = vec![&a.model, &a.input];
    inputs.extend(
        [&a.check.expected, &a.check.targets, &a.check.inverse_scale]
            .into_iter()
            .flatten()
            .map(|p| p.as_path()),
    );
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
    let model = model::load(&a.model)?;
    let raw = io::read_npy(&a.input)?;
    // The model's own input shape decides what the input is; without one, the first layer that says.
    let declared = model.input_shape.last().copied().flatten();
    let first_layer = model.compute_layers().find_map(|l| match &l.kind {
        LayerKind::Recurrent(r) => Some(r.features),
        LayerKind::Bidirectional { forward, .. } => Some(forward.features),
        LayerKind::Dense { kernel, .. } | LayerKind::TimeDistributedDense { kernel, .. } => {
            kernel.shape.first().copied()
        }
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
                    &a.input,
                    format!(
                        "has shape {}; the model takes (batch, {f})",
                        raw.shape_str()
                    ),
                ));
            }
        };
        Tensor::Flat(
            ndarray::Array2::from_shape_vec((rows, f), raw.data.clone())
                .map_err(|e| Error::input(&a.input, e.to_string()))?,
        )
    } else {
        let x = series_input(
            &raw,
            &a.input,
            a.window,
            f,
            &format!("the model expects {f}"),
        )?;
        if let Some(want) = model
            .input_shape
            .get(1)
            .copied()
            .flatten()
            .filter(|&w| w != x.shape()[1] && a.window.is_none())
        {
            return Err(Error::input(
                &a.input,
                format!(
                    "has {} timesteps per sequence; the model was built for {want}",
                    x.shape()[1]
                ),
            ));
        }
        Tensor::Seq(x)
    };
    match a.precision {
        PrecisionArg::F32 => run_as::<f32>(a, &model, x, None, env),
        PrecisionArg::F64 => run_as::<f64>(a, &model, x, None, env),
    }
}

/// `run --model state.npz --cell lstm|gru`: a whole PyTorch module from its state dict.
fn run_torch(a: &RunArgs, cell: CellArg, env: &Env) -> Result<Outcome> {
    let kind = cell.kind();
    let src = crate::weights::load_arrays(&a.model, &[])?;
    let first = crate::weights::pytorch::from_state_dict(kind, &src, 0, false)?;
    let raw = io::read_npy(&a.input)?;
    let f = first.features;
    let x = series_input(&raw, &a.input, a.window, f, &format!("layer 0 expects {f}"))?;
    let model = SavedModel {
        path: a.model.clone(),
        format: model::ModelFormat::LegacyH5,
        keras_version: "PyTorch state dict".into(),
        keras2: false,
        input_shape: Vec::new(),
        layers: Vec::new(),
    };
    let x = Tensor::Seq(x);
    match a.precision {
        PrecisionArg::F32 => run_as::<f32>(a, &model, x, Some((&src, kind)), env),
        PrecisionArg::F64 => run_as::<f64>(a, &model, x, Some((&src, kind)), env),
    }
}

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

/// Runs the model, first on one sequence to check what depends on the model (the layers `--layers` names,
/// the number of outputs `--output-names` labels) before the whole batch is computed or anything written.
fn compute<T: Real>(
    a: &RunArgs,
    model: &SavedModel,
    x: Tensor<T>,
    torch: Option<(&NamedArrays, CellKind)>,
    env: &Env,
) -> Result<runner::ModelRun<T>> {
    let go = |x: Tensor<T>| match (torch, x) {
        (Some((src, kind)), Tensor::Seq(x)) => {
            runner::run_torch_stack_using::<T>(src, kind, x, env.kernels)
        }
        (_, x) => runner::run_model_using::<T>(model, x, env.kernels),
    };
    let wanted = wanted_layers(a);
    let names = output_names(a);
    if wanted.is_none() && names.is_empty() {
        return go(x);
    }
    let first = match &x {
        Tensor::Seq(v) => Tensor::Seq(v.slice(ndarray::s![0..1, .., ..]).to_owned()),
        Tensor::Flat(v) => Tensor::Flat(v.slice(ndarray::s![0..1, ..]).to_owned()),
    };
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
    go(x)
}

fn run_as<T: Real>(
    a: &RunArgs,
    model: &SavedModel,
    x: Tensor<f64>,
    torch: Option<(&NamedArrays, CellKind)>,
    env: &Env,
) -> Result<Outcome> {
    let shape = x.shape();
    let n = shape[0];
    let features = *shape.last().unwrap_or(&0);
    // Everything that can be checked from the command line and the input, before computing.
    let mut display = job::display_options(&a.display, features, env)?;
    display.check_sequences(n)?;
    if shape.len() == 3 {
        display.check_steps(shape[1])?;
    }
    job::check_plot_sequence(&a.plots, n)?;
    display.output_names = output_names(a);
    let x = match x {
        Tensor::Seq(v) => Tensor::Seq(v.mapv(T::lit)),
        Tensor::Flat(v) => Tensor::Flat(v.mapv(T::lit)),
    };
    let run = compute(a, model, x, torch, env)?;
    let out_shape = run.output.shape();
    let predictions = run.output.rows();
    let outputs = predictions.ncols();
    if let Some(p) = &a.check.inverse_scale {
        display.scaler = Some(crate::scaler::Scaler::load(p, outputs)?);
    }
    let (expected, comparison) = match &a.check.expected {
        None => (None, None),
        Some(p) => {
            let e = io::read_npy(p)?;
            let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            if e.shape != out_shape && squeeze(&e.shape) != squeeze(&out_shape) {
                return Err(Error::input(
                    p,
                    format!(
                        "expected output has shape {}; the model's output has shape {}",
                        e.shape_str(),
                        shape_str(&out_shape)
                    ),
                ));
            }
            let ours: Vec<f64> = predictions.iter().map(|v| v.to_f()).collect();
            let c = compare::compare(&ours, &e.data, &out_shape, a.check.atol, a.check.rtol);
            let exp = Array2::from_shape_vec((n, outputs), e.data.clone())
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
        Some((_, kind)) => format!(
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
            plot_layer,
        },
    )
}
