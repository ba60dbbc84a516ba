/*!
The default stdout output: per sequence and per timestep, grid tables of the input, the gates (one row per
gate, one column per unit) and the state update; then predictions against the framework and the truth, and a
verdict. Built with comfy-table; colour only when asked for (see [`crate::render::DisplayOptions`]).
*/

use super::Report;
use super::number::{fmt, fmt_change};
use super::text::{self, wrap};
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

/// Renders the whole table report: the heading, the summary of every prediction, the per-step tables of
/// the shown sequences, and the verdict. Every line fits `display.width` columns, except the unbreakable
/// (a single file name longer than the terminal).
pub fn render<T: Real>(r: &Report<'_, T>) -> String {
    let mut out = String::new();
    let d = r.display;
    let color = d.color;
    let layer = &r.trace.layers[r.trace.layers.len() - 1];
    let n = r.trace.predictions.nrows();
    let shown = &r.detail_rows;
    if !d.quiet {
        let _ = writeln!(out, "{}", wrap(&header_line(r, layer), d.width, 2));
        for l in r
            .detail
            .iter()
            .filter(|l| l.name != layer.name || l.kind != layer.kind)
        {
            let first = header_line(r, l)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let _ = writeln!(out, "{}", wrap(&first, d.width, 2));
        }
        summary(&mut out, r, color);
        for (row, &b) in shown.iter().enumerate() {
            sequence(&mut out, r, &r.detail, row, b, n, color);
        }
        if shown.len() < n {
            let _ = writeln!(
                out,
                "\n{}",
                wrap(
                    &format!(
                        "Per-step tables shown for {} of {n} sequences (numbered from 0); see others with \
                         --sequences 0,5,7, --sequences 10..20 (10 to 19), --sequences 10..=20 or \
                         --sequences all.",
                        shown.len()
                    ),
                    d.width,
                    0
                )
            );
        }
        if color {
            let _ = writeln!(
                out,
                "\n{}",
                wrap(
                    "Colours: gates ≥ 0.99 bold green (saturated open), ≤ 0.01 grey (saturated shut); \
                     state changes green when the state rose, red when it fell; errors beyond tolerance \
                     bold red (and marked ✗).",
                    d.width,
                    0
                )
            );
        }
    }
    if let Some(c) = &r.comparison {
        let gap = if d.quiet { "" } else { "\n" };
        let line = verdict_line(c, r);
        let line = if d.quiet {
            line
        } else {
            wrap(&line, d.width, 2)
        };
        let _ = writeln!(out, "{gap}{line}");
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
        "\n{} sequences × {} timesteps, precision {}; sequences, steps, units and rows are numbered from 0",
        l.sequences(),
        l.steps(),
        l.policy.map_or(T::NAME.to_string(), |p| format!(
            "{}, each op rounded to {} as TensorFlow rounds it",
            p.describe(),
            p.compute()
        ))
    );
    s
}

/// Width of a table of `cols` columns of the given content widths (UTF8_FULL_CONDENSED: one border or
/// separator between columns, one space of padding each side).
fn table_width(cols: &[usize]) -> usize {
    cols.len() + 1 + cols.iter().map(|w| w + 2).sum::<usize>()
}

/// How many value columns of content width `value_w` fit `width` beside a label column of `label_w`.
fn columns_that_fit(width: usize, label_w: usize, value_w: usize) -> usize {
    let fixed = table_width(&[label_w]);
    (width.saturating_sub(fixed) / (value_w + 3)).max(1)
}

/// A right-aligned value cell padded to `w` columns, so that a column keeps its width from step to step.
fn padded(s: String, w: usize) -> Cell {
    Cell::new(format!("{s:>w$}")).set_alignment(CellAlignment::Right)
}

/// A value cell: text, colour, bold.
type Value = (String, Option<Color>, bool);

/// The rows of a per-step table: label, then one value per unit (with colour).
struct Rows {
    rows: Vec<(String, Vec<Value>)>,
}

impl Rows {
    fn label_width(&self, title: &str) -> usize {
        self.rows
            .iter()
            .map(|(l, _)| text::width(l))
            .chain([text::width(title)])
            .max()
            .unwrap_or(0)
    }
    fn value_width(&self) -> usize {
        self.rows
            .iter()
            .flat_map(|(_, v)| v.iter().map(|(s, _, _)| text::width(s)))
            .max()
            .unwrap_or(0)
    }
    /// The table of `units`, the label column `label_w` wide and every unit column `w` wide.
    fn table(
        &self,
        title: &str,
        units: std::ops::Range<usize>,
        (label_w, w): (usize, usize),
        color: bool,
    ) -> Table {
        let mut t = new_table(color);
        let pad = |s: &str| format!("{s}{}", " ".repeat(label_w.saturating_sub(text::width(s))));
        let mut h = vec![Cell::new(pad(title))];
        h.extend(units.clone().map(|j| padded(format!("u{j}"), w)));
        t.set_header(h);
        for (label, vals) in &self.rows {
            let mut row = vec![Cell::new(pad(label))];
            row.extend(vals[units.clone()].iter().map(|(s, c, bold)| {
                let mut cell = padded(s.clone(), w);
                if color && let Some(c) = c {
                    cell = cell.fg(*c);
                }
                if color && *bold {
                    cell = cell.add_attribute(Attribute::Bold);
                }
                cell
            }));
            t.add_row(row);
        }
        t
    }
}

fn gate_value(v: f64, is_gate: bool) -> Value {
    let s = fmt(v);
    if !is_gate {
        (s, None, false)
    } else if v >= 0.99 {
        (s, Some(Color::Green), true)
    } else if v <= 0.01 {
        (s, Some(Color::DarkGrey), false)
    } else {
        (s, None, false)
    }
}

fn change_value(v: f64) -> Value {
    let c = if v == 0.0 || v.is_nan() {
        None
    } else if v > 0.0 {
        Some(Color::Green)
    } else {
        Some(Color::Red)
    };
    (fmt_change(v), c, false)
}

fn gate_rows<T: Real>(l: &LayerTrace<T>, dr: usize, t: usize, show_pre: bool) -> Rows {
    let mut rows = Vec::new();
    for (k, g) in l.kind.gates().iter().enumerate() {
        let is_gate = !g.candidate;
        rows.push((
            g.label.to_string(),
            l.gate(dr, t, k)
                .iter()
                .map(|v| gate_value(v.to_f(), is_gate))
                .collect(),
        ));
    }
    if show_pre && l.pre.is_some() {
        for (k, g) in l.kind.gates().iter().enumerate() {
            rows.push((
                format!("{} before activation", g.name),
                l.pre_gate(dr, t, k)
                    .iter()
                    .map(|v| (fmt(v.to_f()), None, false))
                    .collect(),
            ));
        }
    }
    Rows { rows }
}

fn state_rows<T: Real>(l: &LayerTrace<T>, dr: usize, t: usize) -> Rows {
    let mut rows = Vec::new();
    let mut add =
        |name: &str, prev: ndarray::ArrayView1<'_, T>, new: ndarray::ArrayView1<'_, T>| {
            rows.push((
                format!("{name} previous"),
                prev.iter().map(|v| (fmt(v.to_f()), None, false)).collect(),
            ));
            rows.push((
                format!("{name} new"),
                new.iter().map(|v| (fmt(v.to_f()), None, false)).collect(),
            ));
            rows.push((
                format!("{name} change"),
                prev.iter()
                    .zip(new.iter())
                    .map(|(p, q)| change_value(q.to_f() - p.to_f()))
                    .collect(),
            ));
        };
    if let (Some(cp), Some(c)) = (l.c_prev(dr, t), l.c_at(dr, t)) {
        add("c", cp, c);
    }
    add("h", l.h_prev(dr, t), l.h_at(dr, t));
    Rows { rows }
}

fn span(a: usize, b: usize) -> String {
    if a == b {
        format!("{a}")
    } else {
        format!("{a}–{b}")
    }
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
    let _ = writeln!(out, "{} ══", wrap(&head, d.width, 3));
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
        let total = l.x.shape()[1];
        let steps: Vec<usize> = d
            .shown_steps(total)
            .into_iter()
            .filter(|&t| t < l.steps())
            .collect();
        // Unit columns: the asked range (or from 0), at most --max-units, as many as fit; the same for every
        // step of the sequence, with columns of one width, so that the tables line up from step to step.
        let first = d
            .units
            .as_ref()
            .map_or(0, |u| u.start.min(l.units.saturating_sub(1)));
        let last = d
            .units
            .as_ref()
            .map_or(l.units, |u| u.end.min(l.units))
            .max(first + 1);
        let per_step: Vec<(Rows, Rows)> = steps
            .iter()
            .map(|&t| (gate_rows(l, dr, t, d.show_pre), state_rows(l, dr, t)))
            .collect();
        let label_w = per_step
            .iter()
            .map(|(g, s)| g.label_width("Gate").max(s.label_width("State")))
            .max()
            .unwrap_or(5);
        let value_w = per_step
            .iter()
            .map(|(g, s)| g.value_width().max(s.value_width()))
            .max()
            .unwrap_or(1)
            .max(text::width(&format!("u{}", last - 1)));
        let fit = columns_that_fit(d.width, label_w, value_w);
        let count = (last - first).min(d.max_units).min(fit);
        let units = first..first + count;
        if count < l.units {
            let why = if count == fit && count < (last - first).min(d.max_units) {
                format!("as many as fit {} columns", d.width)
            } else {
                format!("--max-units {}", d.max_units)
            };
            let mut note = format!(
                "(units {} of {} shown, {why}; ",
                span(units.start, units.end - 1),
                l.units
            );
            if units.end < l.units {
                let next_end = (units.end + count).min(l.units);
                let _ = write!(note, "--units {}..{next_end} shows the next", units.end);
            } else {
                let _ = write!(note, "--units 0..{} shows the first", count.min(l.units));
            }
            note.push_str("; the JSON trace has them all)");
            let _ = writeln!(out, "{}", wrap(&note, d.width, 1));
        }
        let mut prev: Option<usize> = None;
        for (&t, (g, s)) in steps.iter().zip(&per_step) {
            let gap_from = prev.map_or(0, |p| p + 1);
            if t > gap_from {
                let _ = writeln!(
                    out,
                    "\n{}",
                    wrap(
                        &format!(
                            "(steps {} not shown; --steps {}..{} shows them, --steps all every step)",
                            span(gap_from, t - 1),
                            gap_from,
                            t
                        ),
                        d.width,
                        1
                    )
                );
            }
            prev = Some(t);
            let ti = l.input_index[t];
            let masked = l.is_masked(dr, t);
            let _ = writeln!(
                out,
                "\n── Step {t} of {total} (0–{}), input row {ti}{}",
                total - 1,
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
            let _ = writeln!(
                out,
                "Gates\n{}",
                g.table("Gate", units.clone(), (label_w, value_w), color)
            );
            let _ = writeln!(
                out,
                "State\n{}",
                s.table("State", units.clone(), (label_w, value_w), color)
            );
        }
        if let Some(p) = prev
            && p + 1 < total
        {
            let recorded = format!("; --steps {}..{total} shows them", p + 1);
            let _ = writeln!(
                out,
                "\n{}",
                wrap(
                    &format!("(steps {} not shown{recorded})", span(p + 1, total - 1)),
                    d.width,
                    1
                )
            );
        }
    }
    prediction_table(out, r, b, color);
}

/// The prediction of sequence `b`: one row per metric, one column per output (the seeds' layout), as many
/// outputs as fit.
fn prediction_table<T: Real>(out: &mut String, r: &Report<'_, T>, b: usize, color: bool) {
    let d = r.display;
    let all = r.trace.predictions.ncols();
    let ours = |j: usize| r.trace.predictions[[b, j]].to_f();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let col = |f: &dyn Fn(usize) -> String| (0..all).map(f).collect::<Vec<_>>();
    rows.push(("Ours".into(), col(&|j| fmt(ours(j)))));
    if let Some(e) = &r.expected {
        rows.push(("Framework".into(), col(&|j| fmt(e[[b, j]]))));
        let c = r.comparison.as_ref();
        rows.push((
            "|Ours − Framework|".into(),
            col(&|j| {
                let err = (ours(j) - e[[b, j]]).abs();
                let bad =
                    c.is_some_and(|c| err.is_nan() || err > c.atol + c.rtol * e[[b, j]].abs());
                format!("{}{}", fmt(err), if bad { " ✗" } else { "" })
            }),
        ));
    }
    if let Some(y) = &r.targets {
        rows.push(("Actual".into(), col(&|j| fmt(y[[b, j]]))));
        rows.push((
            "Ours − Actual".into(),
            col(&|j| fmt_change(ours(j) - y[[b, j]])),
        ));
    }
    if let Some(sc) = &d.scaler {
        let unit = "original units";
        rows.push((
            format!("Ours ({unit})"),
            col(&|j| fmt(sc.inverse(ours(j), j))),
        ));
        if let Some(e) = &r.expected {
            rows.push((
                format!("Framework ({unit})"),
                col(&|j| fmt(sc.inverse(e[[b, j]], j))),
            ));
        }
        if let Some(y) = &r.targets {
            rows.push((
                format!("Actual ({unit})"),
                col(&|j| fmt(sc.inverse(y[[b, j]], j))),
            ));
            rows.push((
                format!("Ours − Actual ({unit})"),
                col(&|j| fmt_change(sc.inverse(ours(j), j) - sc.inverse(y[[b, j]], j))),
            ));
        }
    }
    let label_w = rows
        .iter()
        .map(|(l, _)| text::width(l))
        .chain([text::width("Metric")])
        .max()
        .unwrap_or(6);
    let value_w = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|s| text::width(s)))
        .chain((0..all).map(|j| text::width(&output_name(r, j))))
        .max()
        .unwrap_or(1);
    let outs = all
        .min(d.max_units)
        .min(columns_that_fit(d.width, label_w, value_w));
    let mut pt = new_table(color);
    let mut header = vec![Cell::new("Metric")];
    header.extend((0..outs).map(|j| padded(output_name(r, j), value_w)));
    pt.set_header(header);
    for (label, vals) in &rows {
        let mut row = vec![Cell::new(label)];
        row.extend(vals.iter().take(outs).map(|s| {
            let c = padded(s.clone(), value_w);
            if color && s.ends_with('✗') {
                c.fg(Color::Red).add_attribute(Attribute::Bold)
            } else {
                c
            }
        }));
        pt.add_row(row);
    }
    let what = match r.window {
        Some(k) => format!("Prediction for row {}", b + k),
        None => "Prediction".to_string(),
    };
    let _ = writeln!(out, "\n{what}\n{pt}");
    if outs < all {
        let _ = writeln!(
            out,
            "{}",
            wrap(
                &format!(
                    "(outputs 0–{} of {all} shown; the JSON trace (--format json) has them all)",
                    outs - 1
                ),
                d.width,
                1
            )
        );
    }
}

fn output_name<T: Real>(r: &Report<'_, T>, j: usize) -> String {
    r.display
        .output_names
        .get(j)
        .cloned()
        .unwrap_or_else(|| format!("y{j}"))
}

/// The columns of one output in the summary: (header, value per sequence, mismatch per sequence).
type Column = (String, Vec<String>, Vec<bool>);

fn summary_columns<T: Real>(r: &Report<'_, T>, j: usize, with_scaled: bool) -> Vec<Column> {
    let p = &r.trace.predictions;
    let n = p.nrows();
    let name = output_name(r, j);
    let none = vec![false; n];
    let ours: Vec<f64> = (0..n).map(|b| p[[b, j]].to_f()).collect();
    let mut cols: Vec<Column> = vec![(
        format!("{name}\nours"),
        ours.iter().map(|&v| fmt(v)).collect(),
        none.clone(),
    )];
    if let Some(e) = &r.expected {
        cols.push((
            format!("{name}\nframework"),
            (0..n).map(|b| fmt(e[[b, j]])).collect(),
            none.clone(),
        ));
    }
    if let Some(y) = &r.targets {
        cols.push((
            format!("{name}\nactual"),
            (0..n).map(|b| fmt(y[[b, j]])).collect(),
            none.clone(),
        ));
    }
    if let Some(e) = &r.expected {
        let mut bad = Vec::with_capacity(n);
        let vals = (0..n)
            .map(|b| {
                let err = (ours[b] - e[[b, j]]).abs();
                let is_bad = r
                    .comparison
                    .as_ref()
                    .is_some_and(|c| err.is_nan() || err > c.atol + c.rtol * e[[b, j]].abs());
                bad.push(is_bad);
                format!("{}{}", fmt(err), if is_bad { " ✗" } else { "" })
            })
            .collect();
        cols.push(("|ours −\nframework|".to_string(), vals, bad));
    }
    if with_scaled && let Some(sc) = &r.display.scaler {
        cols.push((
            format!("{name} ours\n(original units)"),
            (0..n).map(|b| fmt(sc.inverse(ours[b], j))).collect(),
            none.clone(),
        ));
        if let Some(y) = &r.targets {
            cols.push((
                format!("{name} actual\n(original units)"),
                (0..n).map(|b| fmt(sc.inverse(y[[b, j]], j))).collect(),
                none.clone(),
            ));
        }
    }
    cols
}

fn summary<T: Real>(out: &mut String, r: &Report<'_, T>, color: bool) {
    let d = r.display;
    let p = &r.trace.predictions;
    let n = p.nrows();
    let labels: Vec<String> = (0..n)
        .map(|b| match r.window {
            Some(k) => format!("{b} (row {})", b + k),
            None => format!("{b}"),
        })
        .collect();
    let label_w = labels
        .iter()
        .map(|l| text::width(l))
        .chain([text::width("Sequence")])
        .max()
        .unwrap_or(8);
    let col_w = |c: &Column| {
        c.0.lines()
            .map(text::width)
            .chain(c.1.iter().map(|s| text::width(s)))
            .max()
            .unwrap_or(1)
    };
    let widths = |cols: &[Column]| {
        let mut w = vec![label_w];
        w.extend(cols.iter().map(col_w));
        table_width(&w)
    };
    // As many outputs as fit (at least one); the original-unit columns only when they fit too.
    let all = p.ncols().min(d.max_units);
    let mut with_scaled = true;
    let mut outs = all;
    let mut cols: Vec<Column>;
    loop {
        cols = (0..outs)
            .flat_map(|j| summary_columns(r, j, with_scaled))
            .collect();
        if widths(&cols) <= d.width {
            break;
        }
        if outs > 1 {
            outs -= 1;
        } else if with_scaled && d.scaler.is_some() {
            with_scaled = false;
        } else {
            break;
        }
    }
    let mut t = new_table(color);
    let mut header = vec![Cell::new("Sequence")];
    header.extend(
        cols.iter()
            .map(|c| Cell::new(&c.0).set_alignment(CellAlignment::Right)),
    );
    t.set_header(header);
    for (b, label) in labels.iter().enumerate() {
        let mut row = vec![Cell::new(label)];
        row.extend(cols.iter().map(|c| {
            let cell = num_str(&c.1[b]);
            if color && c.2[b] {
                cell.fg(Color::Red).add_attribute(Attribute::Bold)
            } else {
                cell
            }
        }));
        t.add_row(row);
    }
    let _ = writeln!(out, "\nAll predictions\n{t}");
    let mut notes = Vec::new();
    if cols.iter().any(|c| c.2.iter().any(|&x| x))
        && let Some(c) = &r.comparison
    {
        notes.push(format!(
            "✗: beyond the tolerance, |ours − framework| > atol {:e} + rtol {:e} · |framework|",
            c.atol, c.rtol
        ));
    }
    if outs < p.ncols() {
        notes.push(format!(
            "(outputs 0–{} of {} shown; --format json has them all)",
            outs - 1,
            p.ncols()
        ));
    }
    if !with_scaled {
        notes.push(format!(
            "(values in original units left out to fit {} columns; the per-sequence tables show them)",
            d.width
        ));
    }
    for note in notes {
        let _ = writeln!(out, "{}", wrap(&note, d.width, 1));
    }
}

fn num_str(s: &str) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
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
    let why = c
        .tolerance
        .as_ref()
        .map_or(String::new(), |t| format!(" ({t})"));
    if c.passed {
        format!(
            "PASS: all {} values match the {what} within atol {:e} + rtol {:e}{why}; largest error {} at [{at}]",
            c.total,
            c.atol,
            c.rtol,
            fmt(c.max_abs_error)
        )
    } else {
        format!(
            "FAIL: {} of {} values differ from the {what} beyond atol {:e} + rtol {:e}{why}; largest error {} at [{at}] (ours {}, expected {})",
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
