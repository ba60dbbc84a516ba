/*!
`rnntrace explain` as text: the predictions, the top contributions of the shown sequence (step, feature,
value per method), its per-step totals (with occlusion), completeness, the initial-state term, and one unit
table per recurrent layer sorted by timescale (longest memory first). Also what every explain renderer
says of a model saved under a float16/bfloat16 dtype policy ([`PolicyView`]).
*/

use super::number::fmt;
use crate::cell::{DtypePolicy, Real};
use crate::explain::{Explanation, IgRule, Methods};
use comfy_table::{Cell, CellAlignment, Table};
use ndarray::{Array2, Array3, ArrayView2, s};
use std::fmt::Write;

/// What the explain renderers show.
#[derive(Debug, Clone)]
pub struct ExplainReport<'a, T> {
    /// The result.
    pub e: &'a Explanation<T>,
    /// The input, (sequences, timesteps, features).
    pub x: &'a Array3<T>,
    /// The mask, when one was given (true = used).
    pub mask: Option<&'a Array2<bool>>,
    /// The explained output.
    pub output: usize,
    /// The methods run.
    pub methods: Methods,
    /// One name per feature.
    pub feature_names: Vec<String>,
    /// The sequence tables and the heat map show.
    pub sequence: usize,
    /// Rows of the top-contributions table.
    pub top: usize,
    /// The model file or cell, for the heading.
    pub title: String,
    /// Integrated gradients' rule and steps.
    pub ig: (IgRule, usize),
    /// `float32` or `float64`.
    pub precision: &'static str,
    /// The terminal width the text fits (tables wrap their cells, prose its words).
    pub columns: usize,
    /// Per step of the shown sequence, what the step holds when it is one token (its word from
    /// `--tokens`, else its id): tables name it in place of the feature, charts write it above the step.
    /// How many model inputs the attributions are split over (1: one input). With several, each input's
    /// report holds its own attributions while completeness sums over all of them.
    pub inputs: usize,
    pub step_labels: Option<Vec<String>>,
    /// The model computes under a float16/bfloat16 dtype policy and `e` is of its float32 (float64)
    /// computation: what the renderers say about it.
    pub policy: Option<&'a PolicyView>,
}

/// A model saved under a float16/bfloat16 dtype policy, explained through the float32 (`--precision f64`:
/// float64) computation of the same weights: the real-valued function its policy rounds op by op. (The
/// rounded function is piecewise constant in the input, so its own gradient is zero or undefined almost
/// everywhere; `tf.GradientTape` on such a model returns a float16 rounding of the float32 gradient.)
#[derive(Debug, Clone)]
pub struct PolicyView {
    /// The policies its layers compute under, in model order without repeats.
    pub policies: Vec<DtypePolicy>,
    /// The explained output of every sequence computed under the policy, as `rnntrace run` computes it
    /// (bit for bit TensorFlow's `model.predict`); `None` when explain's input is not what `run` takes (a
    /// `--mask` is explain's own addition).
    pub prediction: Option<Vec<f32>>,
}

impl PolicyView {
    /// `mixed_float16` (several policies comma-separated, in model order).
    pub fn name(&self) -> String {
        self.policies
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The largest |explained prediction − policy prediction| over the sequences, and where (NaN-safe:
    /// a non-finite difference counts as infinite).
    pub fn largest_difference<T: Real>(&self, computed: &[T]) -> Option<(usize, f64)> {
        let p = self.prediction.as_ref()?;
        p.iter()
            .zip(computed)
            .map(|(&q, c)| {
                let d = (c.to_f() - f64::from(q)).abs();
                if d.is_nan() { f64::INFINITY } else { d }
            })
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// One line: which computation the attributions are of, and how far its prediction is from the
    /// policy's for `seq` and at worst.
    pub fn note<T: Real>(
        &self,
        computed: &[T],
        output: usize,
        seq: usize,
        precision: &str,
    ) -> String {
        let name = self.name();
        let head = format!(
            "the model computes in {name}; attributions are of its {precision} computation (the same \
             weights, no rounding)"
        );
        match (&self.prediction, self.largest_difference(computed)) {
            (Some(p), Some((worst, d))) => format!(
                "{head}: output {output} of sequence {seq}: {precision} {} vs {name} {}; largest \
                 difference {} (sequence {worst} of {})",
                fmt(computed[seq].to_f()),
                fmt(f64::from(p[seq])),
                fmt(d),
                p.len()
            ),
            _ => format!(
                "{head}; its {name} prediction is not shown: --mask is explain's own input, which the \
                 model (and `rnntrace run`) does not take"
            ),
        }
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.force_no_tty();
    t
}

/// A table of `head` and `rows` that fits `cols` columns: whole when it fits, else cut into tables of
/// consecutive columns, each repeating the first `keep` (the row labels). Cells are never wrapped, so a
/// number is never split across lines.
fn fitted(head: &[String], rows: &[Vec<Cell>], keep: usize, cols: usize) -> String {
    let render = |idx: &[usize]| {
        let mut t = table();
        t.set_header(idx.iter().map(|&i| head[i].clone()).collect::<Vec<_>>());
        for r in rows {
            t.add_row(idx.iter().map(|&i| r[i].clone()).collect::<Vec<_>>());
        }
        t.to_string()
    };
    let all: Vec<usize> = (0..head.len()).collect();
    let whole = render(&all);
    if super::text::max_line_width(&whole) <= cols || head.len() <= keep + 1 {
        return whole;
    }
    let mut parts = Vec::new();
    let mut cur: Vec<usize> = (0..keep).collect();
    for i in keep..head.len() {
        let mut trial = cur.clone();
        trial.push(i);
        if cur.len() > keep && super::text::max_line_width(&render(&trial)) > cols {
            parts.push(render(&cur));
            cur = (0..keep).chain([i]).collect();
        } else {
            cur = trial;
        }
    }
    parts.push(render(&cur));
    parts.join("\n")
}

/// `line` as it is when it fits `cols`, else word-wrapped with continuation lines indented.
fn fit(line: String, cols: usize) -> String {
    if super::text::max_line_width(&line) <= cols {
        line
    } else {
        super::text::wrap(&line, cols, 2)
    }
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

/// The (T, F) attribution maps of sequence `seq`, per method, in method order.
pub fn maps<'a, T: Real>(
    e: &'a Explanation<T>,
    seq: usize,
) -> Vec<(&'static str, ArrayView2<'a, T>)> {
    [
        ("gradient", &e.gradient),
        ("input_x_gradient", &e.input_x_gradient),
        ("integrated_gradients", &e.integrated_gradients),
    ]
    .into_iter()
    .filter_map(|(n, a)| a.as_ref().map(|a| (n, a.slice(s![seq, .., ..]))))
    .collect()
}

/// The whole text output of one explained input: [`render_input`] then [`render_model`].
pub fn render<T: Real>(r: &ExplainReport<'_, T>) -> String {
    render_input(r) + &render_model(r)
}

/// The text output of a model with several inputs: each input's block ([`render_input`]), then once
/// what belongs to the model (its explanation is one: completeness over every input together, the
/// initial-state terms, the unit tables), from the first report.
pub fn render_inputs<T: Real>(reports: &[ExplainReport<'_, T>]) -> String {
    let mut out = reports
        .iter()
        .map(render_input)
        .collect::<Vec<_>>()
        .join("\n");
    if let Some(first) = reports.first() {
        out += &render_model(first);
    }
    out
}

/// One input's part: the heading, the prediction, the top contributions and per-step totals of the shown
/// sequence.
pub fn render_input<T: Real>(r: &ExplainReport<'_, T>) -> String {
    let e = r.e;
    let seq = r.sequence;
    let mut out = String::new();
    let (b, t, _) = r.x.dim();
    let cols = r.columns;
    let _ = writeln!(
        out,
        "{}",
        fit(
            format!(
                "explain {}: output {} of {}, {b} sequence{} × {t} steps, {}",
                r.title,
                r.output,
                e.outputs,
                if b == 1 { "" } else { "s" },
                r.precision
            ),
            cols
        )
    );
    let _ = writeln!(
        out,
        "{}",
        fit(
            format!(
                "sequence {seq}: prediction {}   baseline prediction {}   difference {}",
                fmt(e.prediction[seq].to_f()),
                fmt(e.baseline_prediction[seq].to_f()),
                fmt(e.prediction[seq].to_f() - e.baseline_prediction[seq].to_f())
            ),
            cols
        )
    );
    if let Some(p) = r.policy {
        let note = p.note(&e.prediction.to_vec(), r.output, seq, r.precision);
        let _ = writeln!(out, "{}", fit(format!("note: {note}"), cols));
    }
    let masked = |ti: usize| r.mask.is_some_and(|m| !m[[seq, ti]]);
    let maps = maps(e, seq);
    for (name, m) in &maps {
        let mut cells: Vec<(usize, usize, f64)> = m
            .indexed_iter()
            .map(|((ti, j), v)| (ti, j, v.to_f()))
            .collect();
        cells.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        let mut tb = table();
        let what = if r.step_labels.is_some() {
            "token"
        } else {
            "feature"
        };
        tb.set_header(vec!["rank", "step", what, name]);
        for (k, (ti, j, v)) in cells.iter().take(r.top).enumerate() {
            tb.add_row(vec![
                right(k.to_string()),
                right(ti.to_string()),
                Cell::new(match &r.step_labels {
                    Some(l) => l.get(*ti).cloned().unwrap_or_default(),
                    None => r.feature_names[*j].clone(),
                }),
                right(fmt(*v)),
            ]);
        }
        let _ = writeln!(
            out,
            "\ntop {} contributions ({name}), sequence {seq}:\n{tb}",
            r.top.min(cells.len())
        );
    }
    if !maps.is_empty() || e.occlusion.is_some() {
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        let mut head = vec!["step".to_string()];
        head.extend(maps.iter().map(|(n, _)| format!("Σ {n}")));
        if e.occlusion.is_some() {
            head.push("occlusion".into());
        }

        for ti in 0..t {
            let mut row = vec![right(format!(
                "{ti}{}",
                if masked(ti) { " (masked)" } else { "" }
            ))];
            for (_, m) in &maps {
                row.push(right(fmt(m.row(ti).iter().map(|v| v.to_f()).sum())));
            }
            if let Some(o) = &e.occlusion {
                row.push(right(fmt(o[[seq, ti]].to_f())));
            }
            rows.push(row);
        }
        let tb = fitted(&head, &rows, 1, cols);
        let _ = writeln!(out, "\nper-step totals, sequence {seq}:\n{tb}");
    }
    out
}

/// The model's part, the same for every input: integrated gradients' completeness, the initial-state
/// terms of the shown sequence, and one unit table per recurrent layer.
pub fn render_model<T: Real>(r: &ExplainReport<'_, T>) -> String {
    let e = r.e;
    let seq = r.sequence;
    let cols = r.columns;
    let mut out = String::new();
    if let Some(c) = &e.completeness {
        let d = e.prediction[seq].to_f() - e.baseline_prediction[seq].to_f();
        let sum = c[seq].to_f() + d;
        let worst = c
            .iter()
            .zip(e.prediction.iter().zip(&e.baseline_prediction))
            .map(|(c, (p, q))| c.to_f().abs() / (p.to_f() - q.to_f()).abs().max(1e-12))
            .fold(0.0f64, f64::max);
        let _ = writeln!(
            out,
            "\n{}",
            fit(
                format!(
                    "integrated gradients ({}, {} steps): Σ attributions{} {} vs f(x) − f(baseline) {}: gap {} ({:.3}% ; worst over sequences {:.3}%)",
                    r.ig.0.name(),
                    r.ig.1,
                    if r.inputs > 1 {
                        format!(" over all {} inputs", r.inputs)
                    } else {
                        String::new()
                    },
                    fmt(sum),
                    fmt(d),
                    fmt(c[seq].to_f()),
                    100.0 * c[seq].to_f().abs() / d.abs().max(1e-12),
                    100.0 * worst
                ),
                cols
            )
        );
        if worst > 0.01 {
            let _ = writeln!(
                out,
                "{}",
                fit(
                    "note: a gap over 1% means more --ig-steps (kinked activations converge slowly), or a model that jumps at the baseline (Masking whose mask_value the baseline equals: every baseline step is masked, no point on the path is)".to_string(),
                    cols
                )
            );
        }
    }
    let norm = |a: ArrayView2<'_, T>| a.iter().map(|v| v.to_f() * v.to_f()).sum::<f64>().sqrt();
    if !e.initial_state_gradients.is_empty() {
        // Every recurrent layer (direction, cell, shared layer's call) in model order: the L2 norm of
        // d y / d h0 (and c0) for this sequence, and the largest single entry.
        let lstm = e
            .initial_state_gradients
            .iter()
            .any(|(_, _, c)| c.is_some());
        let mut head = vec![
            "layer".to_string(),
            "|∂y/∂h0|".into(),
            "max |∂y/∂h0ᵢ|".into(),
        ];
        if lstm {
            head.push("|∂y/∂c0|".into());
            head.push("max |∂y/∂c0ᵢ|".into());
        }
        let largest = |a: ArrayView2<'_, T>| a.iter().fold(0.0f64, |m, v| m.max(v.to_f().abs()));
        let rows: Vec<Vec<Cell>> = e
            .initial_state_gradients
            .iter()
            .map(|(name, h, c)| {
                let hs = h.slice(s![seq..seq + 1, ..]);
                let mut row = vec![
                    Cell::new(name),
                    right(fmt(norm(hs))),
                    right(fmt(largest(hs))),
                ];
                if lstm {
                    match c {
                        Some(c) => {
                            let cs = c.slice(s![seq..seq + 1, ..]);
                            row.push(right(fmt(norm(cs))));
                            row.push(right(fmt(largest(cs))));
                        }
                        None => row.extend([right("-".into()), right("-".into())]),
                    }
                }
                row
            })
            .collect();
        let line = format!(
            "initial state terms, sequence {seq}: the gradient of output {} with respect to each recurrent layer's initial state (the zeros it starts from, or the state an initial_state link gives it), model order:",
            r.output
        );
        let tb = fitted(&head, &rows, 1, cols);
        let _ = writeln!(out, "\n{}\n{tb}", fit(line, cols));
    } else if let Some((h, c)) = &e.initial_state_gradient {
        let line = format!(
            "initial state term, sequence {seq}: |∂y/∂h0| = {}{}",
            fmt(norm(h.slice(s![seq..seq + 1, ..]))),
            c.as_ref()
                .map(|c| format!("   |∂y/∂c0| = {}", fmt(norm(c.slice(s![seq..seq + 1, ..])))))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "\n{}", fit(line, cols));
    }
    for u in &e.units {
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        let mut head = vec!["unit".to_string()];
        let ts = u.timescale.as_ref();
        if let Some(ts) = ts {
            head.push(format!("T data (mean {})", ts.gate));
            head.push("T bias".into());
        }
        for sat in &u.saturation {
            head.push(format!("{} <0.1", sat.gate));
            head.push(format!("{} >0.9", sat.gate));
        }
        head.push("dead".into());

        let mut order: Vec<usize> = (0..u.units).collect();
        if let Some(ts) = ts {
            order.sort_by(|&a, &b| {
                let key = |j: usize| {
                    if ts.data[j].is_nan() {
                        f64::NEG_INFINITY
                    } else {
                        ts.data[j]
                    }
                };
                key(b).total_cmp(&key(a))
            });
        }
        for j in order {
            let mut row = vec![right(j.to_string())];
            if let Some(ts) = ts {
                row.push(right(format!(
                    "{} ({})",
                    fmt(ts.data[j]),
                    fmt(ts.mean_gate[j])
                )));
                row.push(right(
                    ts.bias
                        .as_ref()
                        .map(|b| fmt(b[j]))
                        .unwrap_or_else(|| "-".into()),
                ));
            }
            for sat in &u.saturation {
                row.push(right(format!("{:.1}%", 100.0 * sat.left[j])));
                row.push(right(format!("{:.1}%", 100.0 * sat.right[j])));
            }
            row.push(Cell::new(if u.dead.contains(&j) { "dead" } else { "" }));
            rows.push(row);
        }
        let line = format!(
            "units of {} ({}, {} units; saturation over unmasked steps of all sequences, sorted by timescale):",
            u.layer,
            u.kind.display_name(),
            u.units
        );
        let tb = fitted(&head, &rows, 1, cols);
        let _ = writeln!(out, "\n{}\n{tb}", fit(line, cols));
    }
    out
}
