/*!
The whole-model commands: `run` (trace a saved Keras model end to end) and `inspect` (what a model or a
weights file holds). Loading is [`crate::model`], computing is [`crate::runner`]; this file validates the
command line against the model and writes the outputs, like [`crate::app`] does for single layers.
*/

pub mod explain;

use crate::app::{Outcome, write_stdout};
use crate::cell::{Activation, Real};
use crate::cli::{ColorArg, FormatArg, InspectArgs, PrecisionArg, RunArgs};
use crate::compare;
use crate::config::{Display, series_input};
use crate::error::{Error, Result, shape_str};
use crate::io;
use crate::model::{self, LayerKind, Recurrent, SavedModel};
use crate::render::{self, Report};
use crate::trace::{LayerTrace, Trace};
use crate::weights::CellKind;
use comfy_table::{Cell, CellAlignment, Table};
use ndarray::Array2;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// `rnntrace run --model …`.
pub fn run_model(a: &RunArgs, _started: Instant) -> Result<Outcome> {
    let mut inputs: Vec<&Path> = vec![&a.model, &a.input];
    inputs.extend(
        [&a.check.expected, &a.check.targets, &a.check.inverse_scale]
            .into_iter()
            .flatten()
            .map(|p| p.as_path()),
    );
    crate::config::check_outputs(&inputs, a.trace.as_deref(), &a.plots)?;
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
        return run_torch(a, cell);
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
        crate::runner::Tensor::Flat(
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
        crate::runner::Tensor::Seq(x)
    };
    match a.precision {
        PrecisionArg::F32 => run_as::<f32>(a, &model, x, None),
        PrecisionArg::F64 => run_as::<f64>(a, &model, x, None),
    }
}

/// `run --model state.npz --cell lstm|gru`: a whole PyTorch module from its state dict.
fn run_torch(a: &RunArgs, cell: crate::cli::CellArg) -> Result<Outcome> {
    let kind = match cell {
        crate::cli::CellArg::Lstm => CellKind::Lstm,
        crate::cli::CellArg::Gru => CellKind::Gru,
    };
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
    let x = crate::runner::Tensor::Seq(x);
    match a.precision {
        PrecisionArg::F32 => run_as::<f32>(a, &model, x, Some((&src, kind))),
        PrecisionArg::F64 => run_as::<f64>(a, &model, x, Some((&src, kind))),
    }
}

fn run_as<T: Real>(
    a: &RunArgs,
    model: &SavedModel,
    x: crate::runner::Tensor<f64>,
    torch: Option<(&crate::weights::NamedArrays, CellKind)>,
) -> Result<Outcome> {
    let shape = x.shape();
    let n = shape[0];
    let features = *shape.last().unwrap_or(&0);
    let x = match x {
        crate::runner::Tensor::Seq(v) => crate::runner::Tensor::Seq(v.mapv(T::lit)),
        crate::runner::Tensor::Flat(v) => crate::runner::Tensor::Flat(v.mapv(T::lit)),
    };
    let run = match (torch, x) {
        (Some((src, kind)), crate::runner::Tensor::Seq(x)) => {
            crate::runner::run_torch_stack::<T>(src, kind, x)?
        }
        (_, x) => crate::runner::run::<T>(model, x)?,
    };
    let out_shape = run.output.shape();
    let predictions = run.output.rows();
    let outputs = predictions.ncols();
    let mut display = Display::from_args(&a.display, features)?;
    display.check_sequences(n)?;
    if let Some(names) = &a.check.output_names {
        display.output_names = names.split(',').map(|s| s.trim().to_string()).collect();
    }
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
        Some(p) => Some(crate::config::load_targets(p, n, outputs, a.window)?),
    };
    if !display.output_names.is_empty() && display.output_names.len() != outputs {
        return Err(Error::usage(format!(
            "--output-names gives {} names; the model has {outputs} outputs per sequence",
            display.output_names.len()
        )));
    }
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
    let wanted: Option<Vec<String>> = a
        .layers
        .as_ref()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    if let Some(w) = &wanted {
        let names: Vec<&str> = trace.layers.iter().map(|l| l.name.as_str()).collect();
        for name in w {
            if !names
                .iter()
                .any(|n| n == name || n.split('/').next() == Some(name.as_str()))
            {
                return Err(Error::usage(format!(
                    "--layers: no recurrent layer named '{name}'; the model has: {}",
                    names.join(", ")
                )));
            }
        }
    }
    let rows = if a.format == FormatArg::Table {
        display.shown_sequences(n)
    } else {
        Vec::new()
    };
    let subsets: Vec<LayerTrace<T>> = trace
        .layers
        .iter()
        .filter(|l| {
            wanted.as_ref().is_none_or(|w| {
                w.iter()
                    .any(|n| *n == l.name || l.name.split('/').next() == Some(n.as_str()))
            })
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
        comparison: comparison.clone(),
        targets,
        window: a.window,
        display: &display,
        title,
    };
    if let Some(path) = &a.trace {
        crate::io::write::atomic_write(path, |w| render::json::write(&report, w))?;
    }
    let p = &a.plots;
    if let Some(path) = &p.plot {
        render::plot::draw_lines(&render::plot::state_norms(&trace, a.window), path)?;
    }
    if let Some(path) = &p.plot_predictions {
        render::plot::draw_lines(
            &render::plot::predictions(
                &trace,
                report.expected.as_ref(),
                report.targets.as_ref(),
                a.window,
            ),
            path,
        )?;
    }
    if let Some(path) = &p.plot_gates {
        if p.plot_sequence >= n {
            return Err(Error::usage(format!(
                "--plot-sequence {} is out of range: the input holds {n} sequences",
                p.plot_sequence
            )));
        }
        render::plot::draw_heatmaps(&render::plot::gates(&trace, p.plot_sequence), path)?;
    }
    match a.format {
        FormatArg::Json => write_stdout(|w| render::json::write(&report, w))?,
        FormatArg::Table => {
            let text = render::table::render(&report);
            write_stdout(|w| w.write_all(text.as_bytes()))?;
        }
    }
    Ok(match comparison {
        Some(c) if !c.passed => Outcome::Mismatch,
        _ => Outcome::Success,
    })
}

fn table(color: bool) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    if !color {
        t.force_no_tty();
    }
    t
}

fn right(s: impl ToString) -> Cell {
    Cell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

fn shape_opt(s: &Option<Vec<Option<usize>>>) -> String {
    match s {
        None => "?".into(),
        Some(v) => format!(
            "({})",
            v.iter()
                .map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "None".into()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn params_of(kind: &LayerKind) -> usize {
    let r = |r: &Recurrent| {
        r.kernel.data.len()
            + r.recurrent_kernel.data.len()
            + r.bias.as_ref().map_or(0, |b| b.data.len())
    };
    match kind {
        LayerKind::Recurrent(x) => r(x),
        LayerKind::Bidirectional {
            forward, backward, ..
        } => r(forward) + r(backward),
        LayerKind::Dense { kernel, bias, .. }
        | LayerKind::TimeDistributedDense { kernel, bias, .. } => {
            kernel.data.len() + bias.as_ref().map_or(0, |b| b.data.len())
        }
        _ => 0,
    }
}

/// `rnntrace inspect`.
pub fn inspect(a: &InspectArgs) -> Result<Outcome> {
    let color = match a.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    if let Some(path) = &a.model {
        let m = model::load(path)?;
        let _ = writeln!(
            out,
            "{}: {}, saved by Keras {}{}; input shape {}",
            path.display(),
            m.format.describe(),
            m.keras_version,
            if m.keras2 {
                " (Keras 2 semantics: hard_sigmoid = clip(0.2x + 0.5, 0, 1))"
            } else {
                ""
            },
            shape_opt(&Some(m.input_shape.clone()))
        );
        let mut t = table(color);
        t.set_header(vec!["Layer", "Class", "Output shape", "Params"]);
        let mut total = 0;
        for l in &m.layers {
            let p = params_of(&l.kind);
            total += p;
            t.add_row(vec![
                Cell::new(&l.name),
                Cell::new(&l.class_name),
                Cell::new(shape_opt(&l.output_shape)),
                right(p),
            ]);
        }
        let _ = writeln!(out, "{t}\nTotal params: {total}");
        for l in &m.layers {
            match &l.kind {
                LayerKind::Recurrent(r) => recurrent_blocks(&mut out, &l.name, r, color)?,
                LayerKind::Bidirectional {
                    forward,
                    backward,
                    merge_mode,
                } => {
                    let _ = writeln!(
                        out,
                        "\n{} ({}), merge_mode {}",
                        l.name,
                        l.class_name,
                        merge_mode.as_deref().unwrap_or("None")
                    );
                    recurrent_blocks(&mut out, &format!("{}/forward", l.name), forward, color)?;
                    recurrent_blocks(&mut out, &format!("{}/backward", l.name), backward, color)?;
                }
                _ => {}
            }
        }
    } else if let (Some(wpath), Some(cell)) = (&a.weights, a.cell) {
        let kind = match cell {
            crate::cli::CellArg::Lstm => CellKind::Lstm,
            crate::cli::CellArg::Gru => CellKind::Gru,
        };
        let src = crate::weights::load_arrays(wpath, &["kernel", "recurrent_kernel", "bias"])?;
        let layout = match a.layout {
            crate::cli::LayoutArg::Auto => None,
            crate::cli::LayoutArg::Keras => Some(crate::weights::Layout::Keras),
            crate::cli::LayoutArg::Pytorch => Some(crate::weights::Layout::Pytorch),
            crate::cli::LayoutArg::Onnx => Some(crate::weights::Layout::Onnx),
        };
        let opts = crate::weights::ReadOptions {
            layout,
            layer: a.layer,
            reverse: a.reverse,
            reset_after: crate::weights::keras::ResetAfter::Auto,
        };
        let (w, layout) = crate::weights::read_cell(kind, &src, opts)?;
        let _ = writeln!(
            out,
            "{}: {} weights ({} layout), {} units, {} input features{}",
            wpath.display(),
            kind.display_name(),
            layout.name(),
            w.units,
            w.features,
            if kind == CellKind::Gru {
                format!(
                    ", reset_after={}",
                    if w.reset_after { "True" } else { "False" }
                )
            } else {
                String::new()
            }
        );
        blocks_table(&mut out, &w, color);
    } else {
        return Err(Error::usage(
            "inspect needs --model, or --weights with --cell",
        ));
    }
    write_stdout(|w| w.write_all(out.as_bytes()))?;
    Ok(Outcome::Success)
}

fn recurrent_blocks(out: &mut String, name: &str, r: &Recurrent, color: bool) -> Result<()> {
    use std::fmt::Write as _;
    let kind = match r.cell {
        model::RecurrentCell::Lstm => CellKind::Lstm,
        model::RecurrentCell::Gru => CellKind::Gru,
        model::RecurrentCell::SimpleRnn => CellKind::SimpleRnn,
    };
    let mut arrays = vec![
        ("kernel".to_string(), r.kernel.clone()),
        ("recurrent_kernel".to_string(), r.recurrent_kernel.clone()),
    ];
    if let Some(b) = &r.bias {
        arrays.push(("bias".to_string(), b.clone()));
    }
    let src = crate::weights::NamedArrays {
        path: name.into(),
        positional: false,
        arrays,
    };
    let ra = if kind == CellKind::Gru && !r.reset_after {
        crate::weights::keras::ResetAfter::False
    } else {
        crate::weights::keras::ResetAfter::Auto
    };
    let w = crate::weights::keras::from_arrays(kind, &src, ra)?;
    let _ = writeln!(
        out,
        "\n{name} ({}): {} units; activation {}, recurrent activation {}{}; return_sequences={}, go_backwards={}{}",
        kind.display_name(),
        r.units,
        r.activation,
        r.recurrent_activation,
        if kind == CellKind::Gru {
            format!(", reset_after={}", r.reset_after)
        } else {
            String::new()
        },
        r.return_sequences,
        r.go_backwards,
        if r.stateful { ", stateful" } else { "" }
    );
    blocks_table(out, &w, color);
    Ok(())
}

/// One row per gate block: shapes, norms and bias statistics, so a dead gate or a unit_forget_bias shows.
fn blocks_table(out: &mut String, w: &crate::weights::CellWeights<f64>, color: bool) {
    use std::fmt::Write as _;
    let labels: &[&str] = match w.kind {
        CellKind::Lstm => &[
            "i (input gate)",
            "f (forget gate)",
            "c (cell candidate)",
            "o (output gate)",
        ],
        CellKind::Gru => &["z (update gate)", "r (reset gate)", "h (candidate)"],
        CellKind::SimpleRnn => &["h (new state)"],
    };
    let mut t = table(color);
    let mut header = vec![
        "Block",
        "Kernel",
        "‖kernel‖",
        "Recurrent",
        "‖recurrent‖",
        "Bias mean",
        "Bias min … max",
    ];
    if w.recurrent_bias.is_some() {
        header.push("Recurrent bias mean");
    }
    t.set_header(header);
    let u = w.units;
    let norm = |m: ndarray::ArrayView2<'_, f64>| m.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (k, label) in labels.iter().enumerate() {
        let cols = w.block(k);
        let kern = w.kernel.slice(ndarray::s![.., cols.clone()]);
        let rec = w.recurrent_kernel.slice(ndarray::s![.., cols.clone()]);
        let stats = |b: &ndarray::Array1<f64>| {
            let v = b.slice(ndarray::s![cols.clone()]);
            let mean = v.sum() / u as f64;
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (mean, lo, hi)
        };
        let mut row = vec![
            Cell::new(*label),
            Cell::new(shape_str(&[kern.nrows(), kern.ncols()])),
            right(render::number::fmt(norm(kern))),
            Cell::new(shape_str(&[rec.nrows(), rec.ncols()])),
            right(render::number::fmt(norm(rec))),
        ];
        match &w.bias {
            Some(b) => {
                let (mean, lo, hi) = stats(b);
                row.push(right(render::number::fmt(mean)));
                row.push(right(format!(
                    "{} … {}",
                    render::number::fmt(lo),
                    render::number::fmt(hi)
                )));
            }
            None => {
                row.push(right("no bias"));
                row.push(right(""));
            }
        }
        if let Some(rb) = &w.recurrent_bias {
            row.push(right(render::number::fmt(stats(rb).0)));
        }
        t.add_row(row);
    }
    let _ = writeln!(out, "{t}");
}
