/*!
`rnntrace inspect`: what a saved model or a weights file holds (layers, shapes, parameters) and, per gate
block, the kernel and bias statistics that show a dead gate or a `unit_forget_bias`.
*/

use crate::cli::args::{ColorArg, FormatArg, InspectArgs};
use crate::cli::output::{Outcome, write_stdout};
use crate::error::{Error, Result};
use crate::model::{self, LayerKind, Recurrent};
use crate::render;
use crate::runner;
use crate::weights::{self, CellKind, CellWeights, keras::ResetAfter, pytorch};
use comfy_table::{Cell, CellAlignment, Table};
use std::io::IsTerminal;

/// A table that fits `width` columns: cells wrap at spaces when the terminal is too narrow.
fn table(color: bool, width: usize) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_width(width.min(u16::MAX as usize) as u16);
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
        LayerKind::StackedRecurrent(cells) => cells.iter().map(r).sum(),
        LayerKind::Bidirectional {
            forward, backward, ..
        } => r(forward) + r(backward),
        LayerKind::Dense { kernel, bias, .. }
        | LayerKind::TimeDistributedDense { kernel, bias, .. }
        | LayerKind::Conv1D { kernel, bias, .. } => {
            kernel.data.len() + bias.as_ref().map_or(0, |b| b.data.len())
        }
        LayerKind::Embedding { embeddings, .. } => embeddings.data.len(),
        LayerKind::BatchNorm {
            gamma,
            beta,
            moving_mean,
            moving_variance,
            ..
        } => [
            gamma.as_ref(),
            beta.as_ref(),
            Some(moving_mean),
            Some(moving_variance),
        ]
        .into_iter()
        .flatten()
        .map(|a| a.data.len())
        .sum(),
        LayerKind::LayerNorm { gamma, beta, .. } => [gamma, beta]
            .into_iter()
            .flatten()
            .map(|a| a.data.len())
            .sum(),
        _ => 0,
    }
}

/// `rnntrace inspect`.
pub fn inspect(a: &InspectArgs, env: &crate::cli::job::Env) -> Result<Outcome> {
    let width = env.columns;
    if a.format == FormatArg::Json {
        let v = inspect_json(a)?;
        return write_stdout(|w| {
            serde_json::to_writer_pretty(&mut *w, &v).map_err(std::io::Error::from)?;
            writeln!(w)
        })
        .map(|_| Outcome::Success);
    }
    let wrap = |s: String| render::text::wrap(&s, width, 2);
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
            "{}",
            wrap(format!(
                "{}: {}, saved by Keras {}{}; {}",
                path.display(),
                m.format.describe(),
                m.keras_version,
                if m.keras2 {
                    " (Keras 2 semantics: hard_sigmoid = clip(0.2x + 0.5, 0, 1))"
                } else {
                    ""
                },
                match m.graph.as_ref().filter(|g| g.inputs.len() > 1) {
                    Some(g) => format!(
                        "inputs {}; outputs {}",
                        g.inputs
                            .iter()
                            .map(|&i| format!(
                                "{} {}",
                                m.layers[i].name,
                                shape_opt(&m.layers[i].output_shape)
                            ))
                            .collect::<Vec<_>>()
                            .join(", "),
                        runner::output_names(&m, g.outputs.len()).join(", ")
                    ),
                    None => format!("input shape {}", shape_opt(&Some(m.input_shape.clone()))),
                }
            ))
        );
        let mut t = table(color, width);
        let mut header = vec!["Layer", "Class", "Output shape", "Params"];
        if m.graph.is_some() {
            header.push("Reads"); // a Functional graph: what each layer is called on
        }
        t.set_header(header);
        let mut total = 0;
        for (i, l) in m.layers.iter().enumerate() {
            // A shared layer's later calls (`encoder@1`) use the first call's weights: counted once.
            let shared = m.shared_call(i);
            let p = if shared.is_some() {
                0
            } else {
                params_of(&l.kind)
            };
            total += p;
            let mut row = vec![
                Cell::new(&l.name),
                Cell::new(&l.class_name),
                Cell::new(shape_opt(&l.output_shape)),
                match shared {
                    Some((base, _)) => right(format!("= {base}")),
                    None => right(p),
                },
            ];
            if let Some(g) = &m.graph {
                row.push(Cell::new(runner::describe_call(&m, g, i)));
            }
            t.add_row(row);
        }
        let _ = writeln!(out, "{t}\nTotal params: {total}");
        for p in runner::model_policies(&m) {
            let names: Vec<&str> = m
                .layers
                .iter()
                .filter(|l| l.policy == Some(p))
                .map(|l| l.name.as_str())
                .collect();
            let _ = writeln!(
                out,
                "{}",
                wrap(format!(
                    "dtype policy {}: {}; `run` rounds every op of {} to {} as TensorFlow does, the other \
                     layers compute in float32",
                    p.describe(),
                    names.join(", "),
                    if names.len() == 1 {
                        "it"
                    } else {
                        "these layers"
                    },
                    p.compute()
                ))
            );
        }
        for l in &m.layers {
            if let Some(why) = &l.unsupported {
                let _ = writeln!(
                    out,
                    "{}",
                    wrap(format!(
                        "`run` cannot compute layer '{}' ({}): {why}",
                        l.name, l.class_name
                    ))
                );
            }
        }
        if (0..m.layers.len()).any(|i| m.shared_call(i).is_some()) {
            let _ = writeln!(
                out,
                "{}",
                wrap(
                    "A layer called more than once (a shared layer) is listed once per call: its first \
                     call under its own name, call k as NAME@k (Keras's node k), reading the same weights \
                     (Params '= NAME'); `run` traces each call under that name."
                        .to_string()
                )
            );
        }
        for (i, l) in m.layers.iter().enumerate() {
            if m.shared_call(i).is_some() {
                continue; // the same weights as the first call, shown there
            }
            match &l.kind {
                LayerKind::Recurrent(r) => recurrent_blocks(&mut out, &l.name, r, color, width)?,
                LayerKind::StackedRecurrent(cells) => {
                    for (i, r) in cells.iter().enumerate() {
                        recurrent_blocks(
                            &mut out,
                            &format!("{}/cell_{i}", l.name),
                            r,
                            color,
                            width,
                        )?;
                    }
                }
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
                    recurrent_blocks(
                        &mut out,
                        &format!("{}/forward", l.name),
                        forward,
                        color,
                        width,
                    )?;
                    recurrent_blocks(
                        &mut out,
                        &format!("{}/backward", l.name),
                        backward,
                        color,
                        width,
                    )?;
                }
                _ => {}
            }
        }
    } else if let Some(wpath) = &a.weights {
        let full = weights::load_arrays(wpath, &["kernel", "recurrent_kernel", "bias"])?;
        let torch = pytorch::looks_like(&full);
        if torch {
            out.push_str(&pytorch::summary(&full));
        }
        if torch && a.module.is_none() && pytorch::recurrent_modules(&full).len() > 1 {
            out.push_str("(--module NAME shows one module's gate blocks)\n");
            write_stdout(|w| w.write_all(out.as_bytes()))?;
            return Ok(Outcome::Success);
        }
        let src = pytorch::select_module(full, a.module.as_deref())?;
        let inferred = pytorch::recurrent_modules(&src)
            .first()
            .and_then(|m| m.kind);
        let kind = match (a.cell, inferred) {
            (Some(cell), _) => cell.kind(),
            (None, Some(k @ (CellKind::Lstm | CellKind::Gru))) => k,
            (None, _) if torch => {
                write_stdout(|w| w.write_all(out.as_bytes()))?;
                return Ok(Outcome::Success);
            }
            (None, _) => {
                return Err(Error::usage(format!(
                    "inspect --weights {}: say which cell the weights belong to with --cell lstm|gru",
                    wpath.display()
                )));
            }
        };
        let layout = a.layout.layout();
        let opts = weights::ReadOptions {
            layout,
            layer: a.layer,
            reverse: a.reverse,
            reset_after: ResetAfter::Auto,
        };
        let (w, layout) = weights::read_cell(kind, &src, opts)?;
        let _ = writeln!(
            out,
            "{}",
            wrap(format!(
                "{}: {} weights ({} layout), {} units, {} input features{}",
                wpath.display(),
                kind.display_name(),
                layout.name(),
                w.units,
                w.features,
                if kind.has_reset_after() {
                    format!(
                        ", reset_after={}",
                        if w.reset_after { "True" } else { "False" }
                    )
                } else {
                    String::new()
                }
            ))
        );
        blocks_table(&mut out, &w, color, width);
    } else {
        return Err(Error::usage(
            "inspect needs --model MODEL (a .keras or .h5 file), or --weights W with --cell lstm|gru",
        ));
    }
    write_stdout(|w| w.write_all(out.as_bytes()))?;
    Ok(Outcome::Success)
}

fn recurrent_blocks(
    out: &mut String,
    name: &str,
    r: &Recurrent,
    color: bool,
    width: usize,
) -> Result<()> {
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
    let src = weights::NamedArrays {
        path: name.into(),
        positional: false,
        arrays,
        meta: Default::default(),
    };
    let ra = if kind.has_reset_after() && !r.reset_after {
        ResetAfter::False
    } else {
        ResetAfter::Auto
    };
    let w = weights::keras::from_arrays(kind, &src, ra)?;
    let line = format!(
        "{name} ({}): {} units; activation {}, recurrent activation {}{}; return_sequences={}, go_backwards={}{}",
        kind.display_name(),
        r.units,
        r.activation,
        r.recurrent_activation,
        if kind.has_reset_after() {
            format!(", reset_after={}", r.reset_after)
        } else {
            String::new()
        },
        r.return_sequences,
        r.go_backwards,
        if r.stateful { ", stateful" } else { "" }
    );
    let _ = writeln!(out, "\n{}", render::text::wrap(&line, width, 2));
    blocks_table(out, &w, color, width);
    Ok(())
}

/// One row per gate block: shapes, norms and bias statistics, so a dead gate or a unit_forget_bias shows.
fn blocks_table(out: &mut String, w: &CellWeights<f64>, color: bool, width: usize) {
    use std::fmt::Write as _;
    let labels: Vec<String> = w
        .kind
        .gates()
        .iter()
        .map(|g| format!("{} {}", g.name, g.role))
        .collect();
    let mut t = table(color, width);
    let shapes = format!(
        "Per gate block: kernel ({}, {u}), recurrent kernel ({u}, {u}), bias ({u},); ‖·‖: Frobenius norm",
        w.features,
        u = w.units
    );
    let _ = writeln!(out, "{}", render::text::wrap(&shapes, width, 2));
    let mut header = vec![
        "Block",
        "‖kernel‖",
        "‖recurrent‖",
        "Bias\nmean",
        "Bias\nmin … max",
    ];
    if w.recurrent_bias.is_some() {
        header.push("Recurrent\nbias mean");
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
            Cell::new(label),
            right(render::number::fmt(norm(kern))),
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

/// Per gate block of `w`: norms and bias statistics (the table's columns).
fn blocks_json(w: &CellWeights<f64>) -> serde_json::Value {
    let u = w.units;
    let norm = |m: ndarray::ArrayView2<'_, f64>| m.iter().map(|v| v * v).sum::<f64>().sqrt();
    let blocks: Vec<serde_json::Value> = w
        .kind
        .gates()
        .iter()
        .enumerate()
        .map(|(k, g)| {
            let cols = w.block(k);
            let stats = |b: &ndarray::Array1<f64>| {
                let v = b.slice(ndarray::s![cols.clone()]);
                serde_json::json!({
                    "mean": v.sum() / u as f64,
                    "min": v.iter().copied().fold(f64::INFINITY, f64::min),
                    "max": v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                })
            };
            serde_json::json!({
                "gate": g.name,
                "role": g.role,
                "kernel_norm": norm(w.kernel.slice(ndarray::s![.., cols.clone()])),
                "recurrent_kernel_norm": norm(w.recurrent_kernel.slice(ndarray::s![.., cols.clone()])),
                "bias": w.bias.as_ref().map(stats),
                "recurrent_bias": w.recurrent_bias.as_ref().map(stats),
            })
        })
        .collect();
    serde_json::json!({
        "cell": w.kind.name(),
        "units": w.units,
        "features": w.features,
        "reset_after": w.kind.has_reset_after().then_some(w.reset_after),
        "blocks": blocks,
    })
}

fn recurrent_json(r: &Recurrent) -> Result<serde_json::Value> {
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
    let src = weights::NamedArrays {
        path: "layer".into(),
        positional: false,
        arrays,
        meta: Default::default(),
    };
    let ra = if kind.has_reset_after() && !r.reset_after {
        ResetAfter::False
    } else {
        ResetAfter::Auto
    };
    let w = weights::keras::from_arrays(kind, &src, ra)?;
    let mut v = blocks_json(&w);
    v["activation"] = r.activation.clone().into();
    v["recurrent_activation"] = r.recurrent_activation.clone().into();
    v["return_sequences"] = r.return_sequences.into();
    v["go_backwards"] = r.go_backwards.into();
    v["stateful"] = r.stateful.into();
    Ok(v)
}

/// The summary `inspect` prints, as JSON (schema rnntrace-inspect/1).
fn inspect_json(a: &InspectArgs) -> Result<serde_json::Value> {
    if let Some(path) = &a.model {
        let m = model::load(path)?;
        let mut layers = Vec::new();
        let mut total = 0;
        for (i, l) in m.layers.iter().enumerate() {
            let shared = m.shared_call(i);
            let p = if shared.is_some() {
                0
            } else {
                params_of(&l.kind)
            };
            total += p;
            let mut v = serde_json::json!({
                "name": l.name,
                "class": l.class_name,
                "output_shape": l.output_shape,
                "params": p,
            });
            if let Some((base, k)) = shared {
                v["shares_weights_of"] = base.into();
                v["call"] = k.into();
            }
            match &l.kind {
                LayerKind::Recurrent(r) => v["recurrent"] = recurrent_json(r)?,
                LayerKind::Bidirectional {
                    forward,
                    backward,
                    merge_mode,
                } => {
                    v["merge_mode"] = merge_mode.clone().into();
                    v["forward"] = recurrent_json(forward)?;
                    v["backward"] = recurrent_json(backward)?;
                }
                _ => {}
            }
            layers.push(v);
        }
        return Ok(serde_json::json!({
            "schema": "rnntrace-inspect/1",
            "file": path.display().to_string(),
            "format": m.format.describe(),
            "keras_version": m.keras_version,
            "keras2_semantics": m.keras2,
            "input_shape": m.input_shape,
            "layers": layers,
            "total_params": total,
        }));
    }
    let (Some(wpath), Some(cell)) = (&a.weights, a.cell) else {
        return Err(Error::usage(
            "inspect needs --model MODEL (a .keras or .h5 file), or --weights W with --cell lstm|gru",
        ));
    };
    let src = weights::load_arrays(wpath, &["kernel", "recurrent_kernel", "bias"])?;
    let opts = weights::ReadOptions {
        layout: a.layout.layout(),
        layer: a.layer,
        reverse: a.reverse,
        reset_after: ResetAfter::Auto,
    };
    let (w, layout) = weights::read_cell(cell.kind(), &src, opts)?;
    let mut v = blocks_json(&w);
    v["schema"] = "rnntrace-inspect/1".into();
    v["file"] = wpath.display().to_string().into();
    v["layout"] = layout.name().into();
    Ok(v)
}
