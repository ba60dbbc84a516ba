/*!
The default stdout output: per sequence and per timestep, grid tables of the input, the gates (one row per
gate, one column per unit) and the state update; then predictions against the framework and the truth, and a
verdict. Built with comfy-table; colour only when asked for (see [`crate::render::DisplayOptions`]).
*/

use super::Report;
use super::number::{fmt, fmt_change};
use crate::cell::Real;
use crate::trace::LayerTrace;
use crate::weights::CellKind;
use comfy_table::{Attribute, Cell, CellAlignment, Color, Table};
use std::fmt::Write as _;

fn new_table(color: bool) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    if color {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t
}

fn num(v: f64) -> Cell {
    Cell::new(fmt(v)).set_alignment(CellAlignment::Right)
}

/// A gate value cell: saturated gates (≤ 0.01 or ≥ 0.99) stand out when colour is on.
fn gate_cell(v: f64, is_gate: bool, color: bool) -> Cell {
    let c = num(v);
    if !color || !is_gate {
        return c;
    }
    if v >= 0.99 {
        c.fg(Color::Green).add_attribute(Attribute::Bold)
    } else if v <= 0.01 {
        c.fg(Color::DarkGrey)
    } else {
        c
    }
}

fn change_cell(v: f64, color: bool) -> Cell {
    let c = Cell::new(fmt_change(v)).set_alignment(CellAlignment::Right);
    if !color || v == 0.0 || v.is_nan() {
        return c;
    }
    if v > 0.0 {
        c.fg(Color::Green)
    } else {
        c.fg(Color::Red)
    }
}

/// Renders the whole table report.
pub fn render<T: Real>(r: &Report<'_, T>) -> String {
    let mut out = String::new();
    let d = r.display;
    let color = d.color;
    let layer = &r.trace.layers[r.trace.layers.len() - 1];
    let n = r.trace.predictions.nrows();
    let shown = &r.detail_rows;
    if !d.quiet {
        let _ = writeln!(out, "{}", header_line(r, layer));
        for l in r
            .detail
            .iter()
            .filter(|l| l.name != layer.name || l.kind != layer.kind)
        {
            let _ = writeln!(
                out,
                "{}",
                header_line(r, l).lines().next().unwrap_or_default()
            );
        }
        for (row, &b) in shown.iter().enumerate() {
            sequence(&mut out, r, &r.detail, row, b, n, color);
        }
        if shown.len() < n {
            let _ = writeln!(
                out,
                "\nPer-step tables shown for {} of {n} sequences; see others with --sequences 0,5,7, --sequences 10..20 or --sequences all.",
                shown.len()
            );
        }
        summary(&mut out, r, color);
    }
    if let Some(c) = &r.comparison {
        let gap = if d.quiet { "" } else { "\n" };
        let _ = writeln!(out, "{gap}{}", verdict_line(c, r));
    }
    out
}

fn header_line<T: Real>(r: &Report<'_, T>, l: &LayerTrace<T>) -> String {
    let mut s = format!(
        "{}{} layer '{}': {} unit{}, {} features; activation {}{}",
        if r.title.is_empty() {
            String::new()
        } else {
            format!("{} — ", r.title)
        },
        l.kind.display_name(),
        crate::error::printable(&l.name),
        l.units,
        if l.units == 1 { "" } else { "s" },
        l.features,
        l.activation.name(),
        if l.kind == CellKind::SimpleRnn {
            String::new()
        } else {
            format!(", recurrent activation {}", l.recurrent_activation.name())
        }
    );
    if let Some(ra) = l.reset_after {
        let _ = write!(s, ", reset_after={}", if ra { "True" } else { "False" });
    }
    if l.go_backwards {
        s.push_str(", go_backwards");
    }
    s.push_str(if l.carry_state {
        "; state carried from each sequence to the next (stateful)"
    } else {
        "; every sequence starts from its own initial state (stateless, as model.predict)"
    });
    let _ = write!(
        s,
        "\n{} sequences × {} timesteps, precision {}",
        l.sequences(),
        l.steps(),
        T::NAME
    );
    s
}

fn unit_header(label: &str, units: usize, max: usize) -> Vec<Cell> {
    let mut h = vec![Cell::new(label)];
    h.extend(
        (0..units.min(max)).map(|j| Cell::new(format!("u{j}")).set_alignment(CellAlignment::Right)),
    );
    h
}

fn sequence<T: Real>(
    out: &mut String,
    r: &Report<'_, T>,
    layers: &[&LayerTrace<T>],
    dr: usize,
    b: usize,
    n: usize,
    color: bool,
) {
    let d = r.display;
    let mut head = format!("\n══ Sequence {b} of {n} (0–{})", n - 1);
    if let Some(k) = r.window {
        let _ = write!(
            head,
            ": input rows {}–{} → predicts row {}",
            b,
            b + k - 1,
            b + k
        );
    }
    let _ = writeln!(out, "{head} ══");
    for l in layers {
        if layers.len() > 1 {
            let _ = writeln!(
                out,
                "\n── Layer '{}' ({}, {} units)",
                crate::error::printable(&l.name),
                l.kind.display_name(),
                l.units
            );
        }
        let shown_units = l.units.min(d.max_units);
        for t in 0..l.steps() {
            let ti = l.input_index[t];
            let masked = l.is_masked(dr, t);
            let _ = writeln!(
                out,
                "\n── Step {t} of {} (0–{}), input row {ti}{}",
                l.x.shape()[1],
                l.x.shape()[1] - 1,
                if masked {
                    " — masked: state carried through unchanged"
                } else {
                    ""
                }
            );
            // Input.
            let x = l.x_at(dr, t);
            let mut it = new_table(color);
            it.set_header(vec!["Feature", "Value"]);
            let limit = 12usize;
            for (j, v) in x.iter().enumerate().take(limit) {
                let name = d
                    .feature_names
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| format!("x{j}"));
                it.add_row(vec![Cell::new(name), num(v.to_f())]);
            }
            let _ = writeln!(out, "Input\n{it}");
            if x.len() > limit {
                let _ = writeln!(
                    out,
                    "(+{} more features; the JSON trace has them all)",
                    x.len() - limit
                );
            }
            // Gates.
            let mut gt = new_table(color);
            gt.set_header(unit_header("Gate", l.units, d.max_units));
            for (k, label) in l.kind.gates().iter().map(|g| g.label).enumerate() {
                let is_gate =
                    !(label.starts_with("Cell candidate") || label.starts_with("Candidate"));
                let mut row = vec![Cell::new(label)];
                row.extend(
                    l.gate(dr, t, k)
                        .iter()
                        .take(shown_units)
                        .map(|v| gate_cell(v.to_f(), is_gate, color)),
                );
                gt.add_row(row);
            }
            let _ = writeln!(out, "Gates\n{gt}");
            // State.
            let mut st = new_table(color);
            st.set_header(unit_header("State", l.units, d.max_units));
            let mut add =
                |name: &str, prev: ndarray::ArrayView1<'_, T>, new: ndarray::ArrayView1<'_, T>| {
                    let mut r1 = vec![Cell::new(format!("{name} previous"))];
                    r1.extend(prev.iter().take(shown_units).map(|v| num(v.to_f())));
                    let mut r2 = vec![Cell::new(format!("{name} new"))];
                    r2.extend(new.iter().take(shown_units).map(|v| num(v.to_f())));
                    let mut r3 = vec![Cell::new(format!("{name} change"))];
                    r3.extend(
                        prev.iter()
                            .zip(new.iter())
                            .take(shown_units)
                            .map(|(p, q)| change_cell(q.to_f() - p.to_f(), color)),
                    );
                    st.add_row(r1);
                    st.add_row(r2);
                    st.add_row(r3);
                };
            if let (Some(cp), Some(c)) = (l.c_prev(dr, t), l.c_at(dr, t)) {
                add("Cell state c", cp, c);
            }
            add("Hidden state h", l.h_prev(dr, t), l.h_at(dr, t));
            let _ = writeln!(out, "State\n{st}");
            if l.units > shown_units {
                let _ = writeln!(
                    out,
                    "(showing units 0–{} of {}; --max-units {} shows all)",
                    shown_units - 1,
                    l.units,
                    l.units
                );
            }
        }
    }
    if let Some(l) = layers.iter().find(|l| l.steps() < l.x.shape()[1]) {
        let total = l.x.shape()[1];
        let _ = writeln!(
            out,
            "\n(steps {}–{} not shown; --max-steps {total} shows them)",
            l.steps(),
            total - 1
        );
    }
    // Prediction for this sequence: one row per metric, one column per output (the seeds' layout).
    // Wide outputs (a layer with no head) show their first --max-units columns, as the unit tables do.
    let outs = r.trace.predictions.ncols().min(r.display.max_units);
    let mut pt = new_table(color);
    let mut header = vec![Cell::new("Metric")];
    header.extend(
        (0..outs).map(|j| Cell::new(output_name(r, j)).set_alignment(CellAlignment::Right)),
    );
    pt.set_header(header);
    let ours = |j: usize| r.trace.predictions[[b, j]].to_f();
    let mut metric = |label: String, f: &dyn Fn(usize) -> Cell| {
        let mut row = vec![Cell::new(label)];
        row.extend((0..outs).map(f));
        pt.add_row(row);
    };
    let signed = |v: f64| Cell::new(fmt_change(v)).set_alignment(CellAlignment::Right);
    metric("Ours".into(), &|j| num(ours(j)));
    if let Some(e) = &r.expected {
        metric("Framework".into(), &|j| num(e[[b, j]]));
        metric("|Ours − Framework|".into(), &|j| {
            num((ours(j) - e[[b, j]]).abs())
        });
    }
    if let Some(y) = &r.targets {
        metric("Actual".into(), &|j| num(y[[b, j]]));
        metric("Ours − Actual".into(), &|j| signed(ours(j) - y[[b, j]]));
    }
    if let Some(sc) = &r.display.scaler {
        let unit = "original units";
        metric(format!("Ours ({unit})"), &|j| num(sc.inverse(ours(j), j)));
        if let Some(e) = &r.expected {
            metric(format!("Framework ({unit})"), &|j| {
                num(sc.inverse(e[[b, j]], j))
            });
        }
        if let Some(y) = &r.targets {
            metric(format!("Actual ({unit})"), &|j| {
                num(sc.inverse(y[[b, j]], j))
            });
            metric(format!("Ours − Actual ({unit})"), &|j| {
                signed(sc.inverse(ours(j), j) - sc.inverse(y[[b, j]], j))
            });
        }
    }
    let what = match r.window {
        Some(k) => format!("Prediction for row {}", b + k),
        None => "Prediction".to_string(),
    };
    let _ = writeln!(out, "\n{what}\n{pt}");
}

fn output_name<T: Real>(r: &Report<'_, T>, j: usize) -> String {
    r.display
        .output_names
        .get(j)
        .cloned()
        .unwrap_or_else(|| format!("y{j}"))
}

fn summary<T: Real>(out: &mut String, r: &Report<'_, T>, color: bool) {
    let p = &r.trace.predictions;
    let mut t = new_table(color);
    let mut header = vec!["Sequence".to_string()];
    let outs = p.ncols().min(r.display.max_units);
    for j in 0..outs {
        let name = output_name(r, j);
        header.push(format!("Ours {name}"));
        if r.expected.is_some() {
            header.push(format!("Framework {name}"));
        }
        if r.targets.is_some() {
            header.push(format!("Actual {name}"));
        }
        if r.expected.is_some() {
            header.push("|Ours − Framework|".to_string());
        }
        if r.display.scaler.is_some() {
            header.push(format!("Ours {name} (orig.)"));
            if r.targets.is_some() {
                header.push(format!("Actual {name} (orig.)"));
            }
        }
    }
    t.set_header(header);
    for b in 0..p.nrows() {
        let label = match r.window {
            Some(k) => format!("{b} (row {})", b + k),
            None => format!("{b}"),
        };
        let mut row = vec![Cell::new(label)];
        for j in 0..outs {
            let ours = p[[b, j]].to_f();
            row.push(num(ours));
            if let Some(e) = &r.expected {
                row.push(num(e[[b, j]]));
            }
            if let Some(y) = &r.targets {
                row.push(num(y[[b, j]]));
            }
            if let Some(e) = &r.expected {
                let err = (ours - e[[b, j]]).abs();
                let c = num(err);
                let bad = r
                    .comparison
                    .as_ref()
                    .map(|c| err.is_nan() || err > c.atol + c.rtol * e[[b, j]].abs())
                    .unwrap_or(false);
                row.push(if bad && color {
                    c.fg(Color::Red).add_attribute(Attribute::Bold)
                } else {
                    c
                });
            }
            if let Some(sc) = &r.display.scaler {
                row.push(num(sc.inverse(ours, j)));
                if let Some(y) = &r.targets {
                    row.push(num(sc.inverse(y[[b, j]], j)));
                }
            }
        }
        t.add_row(row);
    }
    let _ = writeln!(out, "\nAll predictions\n{t}");
    if p.ncols() > outs {
        let _ = writeln!(
            out,
            "(showing outputs 0–{} of {}; --max-units {} shows all)",
            outs - 1,
            p.ncols(),
            p.ncols()
        );
    }
}

/// The one-line verdict: `PASS: …` or `FAIL: …`.
pub fn verdict_line<T: Real>(c: &crate::compare::Comparison, r: &Report<'_, T>) -> String {
    let at = c
        .worst_index
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let what = if r.expected.is_some() || !c.worst_index.is_empty() {
        "framework output"
    } else {
        "expected"
    };
    if c.passed {
        format!(
            "PASS: all {} values match the {what} within atol {:e} + rtol {:e}; largest error {} at [{at}]",
            c.total,
            c.atol,
            c.rtol,
            fmt(c.max_abs_error)
        )
    } else {
        format!(
            "FAIL: {} of {} values differ from the {what} beyond atol {:e} + rtol {:e}; largest error {} at [{at}] (ours {}, expected {})",
            c.mismatches,
            c.total,
            c.atol,
            c.rtol,
            fmt(c.max_abs_error),
            fmt(c.worst_ours),
            fmt(c.worst_expected)
        )
    }
}
