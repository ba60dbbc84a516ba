/*!
Chart data, independent of pixels: what each chart shows ([`ChartData`], [`GateHeatmaps`]), computed from a
trace, so tests can check a chart without looking at it.
*/

#[allow(unused_imports)]
use super::*;

// ───────────────────────────────────────── chart data ─────────────────────────────────────────

/// The data a line chart shows, independent of pixels (for snapshot tests).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChartData {
    /// Heading.
    pub title: String,
    /// A line under the heading (what is averaged, what was left out); may be empty.
    pub subtitle: String,
    /// x axis description (shared by all panels).
    pub x_label: String,
    /// y axis description (shared by all panels).
    pub y_label: String,
    /// Panel titles, top to bottom; every series names its panel by index.
    pub panels: Vec<String>,
    /// The lines.
    pub series: Vec<Series>,
    /// x positions of faint vertical separators (sequence boundaries when the state is carried).
    pub separators: Vec<f64>,
}

/// One line of a [`ChartData`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Index into [`ChartData::panels`].
    pub panel: usize,
    /// (x, y); a non-finite y is a gap in the line.
    pub points: Vec<(f64, f64)>,
    /// (x, low, high): a shaded band (min–max over sequences), when the line is a mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// Palette index (the same index is the same colour in every panel).
    pub color: usize,
    /// Dashed rather than solid.
    pub dashed: bool,
    /// Marker drawn at each point when the points are few enough to tell apart.
    pub marker: Marker,
}

/// Point markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Marker {
    /// Line only.
    None,
    /// Filled circle.
    Circle,
    /// Filled square.
    Square,
    /// Filled triangle.
    Triangle,
    /// Diagonal cross.
    Cross,
}

/// The gate heat maps of one sequence: per gate, a units × steps matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateHeatmaps {
    /// Heading.
    pub title: String,
    /// A line under the heading; may be empty.
    pub subtitle: String,
    /// x axis description.
    pub x_label: String,
    /// y axis description.
    pub y_label: String,
    /// The sequence shown (0-based; clamped to the last sequence).
    pub sequence: usize,
    /// Processing steps that were masked (1-based).
    pub masked_steps: Vec<usize>,
    /// One panel per gate, in Keras gate order.
    pub panels: Vec<Heatmap>,
}

/// One gate's heat map.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Heatmap {
    /// Short gate name (`i`, `f`, `c`, `o`, `z`, `r`, `h`).
    pub gate: String,
    /// Panel title.
    pub title: String,
    /// The activation that produced the values.
    pub activation: String,
    /// Colour scale: values at or below `lo` get the first colour, at or above `hi` the last.
    pub lo: f64,
    /// Upper end of the colour scale.
    pub hi: f64,
    /// Whether the scale is the activation's fixed range (true) or taken from the data.
    pub fixed_scale: bool,
    /// Blue–white–red around 0 (true) or a sequential scale (false).
    pub diverging: bool,
    /// `values[unit][step]`; non-finite values are painted grey.
    pub values: Vec<Vec<f64>>,
    /// How many values are NaN or infinite.
    pub non_finite: usize,
}

/// The state-norm chart: ‖c_t‖ and ‖h_t‖ (GRU: ‖h_t‖) of the last layer against the step.
///
/// Up to [`MAX_LINES`] sequences get a line each (x = processing step, or with a window the input row
/// `k + input_index[t]`); more are summarised as the mean with a min–max band per step. A layer that carries
/// its state from one sequence to the next is one continuous line over the global step `k·T + t + 1`.
pub fn state_norms<T: Real>(trace: &Trace<T>, window: Option<usize>) -> ChartData {
    let Some(l) = trace.layers.last() else {
        return empty_chart("State norms", "no recurrent layer in the trace");
    };
    let Some(h) = &l.h else {
        return empty_chart("State norms", "the states were not recorded in this run");
    };
    let mut norms = Vec::new();
    if let Some(c) = &l.c {
        norms.push(norms_of(c));
    }
    norms.push(norms_of(h));
    state_norms_chart(l, &norms, window)
}

/// The state-norm chart of layer `l` from its norms, (sequences, steps) per state: ‖c_t‖ then ‖h_t‖ for an
/// LSTM, ‖h_t‖ alone otherwise. `l` gives the layer's facts only (its per-step arrays may be absent: the
/// norms can come from a streamed run, see [`super::feed`]).
pub(super) fn state_norms_chart<T: Real>(
    l: &LayerTrace<T>,
    norms: &[Array2<f64>],
    window: Option<usize>,
) -> ChartData {
    let labels: &[&str] = if norms.len() == 2 {
        &["cell state ‖c_t‖", "hidden state ‖h_t‖"]
    } else {
        &["hidden state ‖h_t‖"]
    };
    let (n, steps) = norms.last().map(|a| a.dim()).unwrap_or((0, 0));
    if norms.iter().any(|a| a.dim() != (n, steps)) {
        return empty_chart(
            "State norms",
            "the recorded states have inconsistent shapes",
        );
    }
    let what = if l.kind.has_cell_state() {
        "state norms"
    } else {
        "hidden-state norm"
    };
    let title = format!("{} {what}, layer '{}'", l.kind.display_name(), l.name);
    let mut chart = ChartData {
        title,
        subtitle: String::new(),
        x_label: "processing step".into(),
        y_label: "L2 norm".into(),
        panels: labels.iter().map(|t| t.to_string()).collect(),
        series: Vec::new(),
        separators: Vec::new(),
    };
    let mut notes = vec![format!(
        "{n} sequence{}, {steps} step{}, {} unit{}",
        plural(n),
        plural(steps),
        l.units,
        plural(l.units)
    )];
    let mark = |count: usize| {
        if count <= 60 {
            Marker::Circle
        } else {
            Marker::None
        }
    };
    if l.carry_state {
        chart.x_label =
            format!("step over the whole series (step t of sequence k → (k − 1)·{steps} + t)");
        notes.push("state carried from each sequence to the next".into());
        for (p, nm) in norms.iter().enumerate() {
            let points: Vec<(f64, f64)> = (0..n)
                .flat_map(|k| (0..steps).map(move |t| (k, t)))
                .map(|(k, t)| ((k * steps + t + 1) as f64, nm[[k, t]]))
                .collect();
            let marker = mark(points.len());
            chart.series.push(Series {
                name: "all sequences, one after another".into(),
                panel: p,
                points,
                band: None,
                color: 0,
                dashed: false,
                marker,
            });
        }
        if n > 1 && n <= 64 {
            chart.separators = (1..n).map(|k| (k * steps) as f64 + 0.5).collect();
            notes.push("dashed lines: sequence boundaries".into());
        }
    } else if n <= MAX_LINES {
        if let Some(k) = window {
            chart.x_label = match k {
                0 | 1 => "input row (sequence 1 reads row 0, sequence 2 row 1, …)".to_string(),
                _ => format!(
                    "input row (sequence 1 reads rows 0–{}, sequence 2 rows 1–{k}, …)",
                    k - 1
                ),
            };
        }
        for (p, nm) in norms.iter().enumerate() {
            for b in 0..n {
                let points: Vec<(f64, f64)> = (0..steps)
                    .map(|t| {
                        let x = match window {
                            Some(_) => (b + l.input_index.get(t).copied().unwrap_or(t)) as f64,
                            None => (t + 1) as f64,
                        };
                        (x, nm[[b, t]])
                    })
                    .collect();
                chart.series.push(Series {
                    name: format!("sequence {}", b + 1),
                    panel: p,
                    points,
                    band: None,
                    color: b,
                    dashed: false,
                    marker: mark(steps),
                });
            }
        }
    } else {
        notes.push(format!(
            "line: mean over the {n} sequences; shaded: min–max"
        ));
        for (p, nm) in norms.iter().enumerate() {
            let mut points = Vec::with_capacity(steps);
            let mut band = Vec::with_capacity(steps);
            for t in 0..steps {
                let x = (t + 1) as f64;
                let col: Vec<f64> = nm
                    .column(t)
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .collect();
                if col.is_empty() {
                    points.push((x, f64::NAN));
                    band.push((x, f64::NAN, f64::NAN));
                } else {
                    let mean = col.iter().sum::<f64>() / col.len() as f64;
                    let lo = col.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    points.push((x, mean));
                    band.push((x, lo, hi));
                }
            }
            chart.series.push(Series {
                name: format!("mean of {n} sequences"),
                panel: p,
                points,
                band: Some(band),
                color: 0,
                dashed: false,
                marker: mark(steps),
            });
        }
    }
    let bad: usize = norms
        .iter()
        .map(|a| a.iter().filter(|v| !v.is_finite()).count())
        .sum();
    if bad > 0 {
        notes.push(format!("{bad} non-finite norm{} not drawn", plural(bad)));
    }
    chart.subtitle = notes.join("; ");
    chart
}

/// The predictions chart: per output column (the first [`MAX_OUTPUTS`]), ours, the framework's expected
/// values and the actual targets against the sequence (1-based), or with a window against the predicted
/// row `b + K`.
pub fn predictions<T: Real>(
    trace: &Trace<T>,
    expected: Option<&Array2<f64>>,
    targets: Option<&Array2<f64>>,
    window: Option<usize>,
) -> ChartData {
    let p = &trace.predictions;
    let (n, outs) = p.dim();
    let shown = outs.min(MAX_OUTPUTS);
    let x_of = |b: usize| match window {
        Some(k) => (b + k) as f64,
        None => (b + 1) as f64,
    };
    let mark = |m: Marker| if n <= 60 { m } else { Marker::None };
    let mut chart = ChartData {
        title: "Predictions: ours, the framework's and the actual values".into(),
        subtitle: String::new(),
        x_label: match window {
            Some(k) => format!("predicted row (the row after each window of {k} input rows)"),
            None => "sequence".into(),
        },
        y_label: "value".into(),
        panels: (0..shown).map(|j| format!("output y{j}")).collect(),
        series: Vec::new(),
        separators: Vec::new(),
    };
    let mut what = vec!["ours".to_string()];
    if expected.is_some() {
        what.push("framework".into());
    }
    if targets.is_some() {
        what.push("actual".into());
    }
    chart.title = match what.len() {
        1 => "Predictions".into(),
        _ => format!("Predictions: {}", what.join(" vs ")),
    };
    let mut notes = vec![format!("{n} sequence{}", plural(n))];
    if outs > shown {
        notes.push(format!("showing the first {shown} of {outs} outputs"));
    }
    let column = |a: &Array2<f64>, j: usize| -> Vec<(f64, f64)> {
        (0..n)
            .map(|b| (x_of(b), a.get([b, j]).copied().unwrap_or(f64::NAN)))
            .collect()
    };
    let ours = p.mapv(|v| v.to_f());
    for j in 0..shown {
        chart.series.push(Series {
            name: "ours".into(),
            panel: j,
            points: column(&ours, j),
            band: None,
            color: 0,
            dashed: false,
            marker: mark(Marker::Circle),
        });
        if let Some(e) = expected {
            chart.series.push(Series {
                name: "framework".into(),
                panel: j,
                points: column(e, j),
                band: None,
                color: 1,
                dashed: true,
                marker: mark(Marker::Cross),
            });
        }
        if let Some(y) = targets {
            chart.series.push(Series {
                name: "actual".into(),
                panel: j,
                points: column(y, j),
                band: None,
                color: 2,
                dashed: false,
                marker: mark(Marker::Triangle),
            });
        }
    }
    let bad: usize = chart
        .series
        .iter()
        .map(|s| s.points.iter().filter(|p| !p.1.is_finite()).count())
        .sum();
    if bad > 0 {
        notes.push(format!("{bad} non-finite value{} not drawn", plural(bad)));
    }
    chart.subtitle = notes.join("; ");
    chart
}

/// The gate heat maps of one sequence (0-based, clamped to the last) of the last layer: per gate a
/// units × processing-steps matrix of activated values, on a colour scale fixed by the gate's activation
/// (σ-like: 0…1, tanh-like: −1…1) or, for unbounded activations, taken from the data.
pub fn gates<T: Real>(trace: &Trace<T>, sequence: usize) -> GateHeatmaps {
    let Some(l) = trace.layers.last() else {
        return GateHeatmaps {
            title: "Gate activations".into(),
            subtitle: "no recurrent layer in the trace".into(),
            x_label: "processing step".into(),
            y_label: "unit".into(),
            sequence: 0,
            masked_steps: Vec::new(),
            panels: Vec::new(),
        };
    };
    let n = l.sequences();
    let b = sequence.min(n.saturating_sub(1));
    let Some(recorded) = &l.gates else {
        return GateHeatmaps {
            title: format!(
                "{} gate activations, layer '{}'",
                l.kind.name().to_uppercase(),
                l.name
            ),
            subtitle: "the gates were not recorded in this run".into(),
            x_label: "processing step".into(),
            y_label: "unit".into(),
            sequence: b,
            masked_steps: Vec::new(),
            panels: Vec::new(),
        };
    };
    let masked: Vec<bool> = (0..l.masked.nrows())
        .map(|t| l.masked.get([t, b]).copied().unwrap_or(false))
        .collect();
    gates_chart(l, recorded, b, b, &masked)
}

/// The gate heat maps of sequence `sequence` of layer `l` (of `l.sequences()`), whose gates are column
/// `col` of `recorded` (steps, columns, blocks·units) and whose masked steps are `masked[t]`. `l` gives the
/// layer's facts; `recorded` may hold that one sequence only (from a streamed run, see [`super::feed`]).
pub(super) fn gates_chart<T: Real>(
    l: &LayerTrace<T>,
    recorded: &Array3<T>,
    col: usize,
    sequence: usize,
    masked: &[bool],
) -> GateHeatmaps {
    let n = l.sequences();
    let b = sequence;
    let steps = if n == 0 {
        0
    } else {
        l.steps().min(recorded.shape()[0])
    };
    let masked_steps: Vec<usize> = (0..steps)
        .filter(|&t| masked.get(t).copied().unwrap_or(false))
        .map(|t| t + 1)
        .collect();
    let panels = l
        .kind
        .gate_names()
        .iter()
        .enumerate()
        .map(|(k, g)| heatmap(l, recorded, col, steps, k, g))
        .collect();
    let kind = l.kind.name().to_uppercase();
    let mut notes = vec![format!(
        "{} unit{} (rows) × {steps} step{} (columns)",
        l.units,
        plural(l.units),
        plural(steps)
    )];
    if l.go_backwards {
        notes.push("go_backwards: step 1 read the last input row".into());
    }
    if !masked_steps.is_empty() {
        notes.push(format!(
            "masked steps (state carried through; dark bar above the column): {}",
            list(&masked_steps, 12)
        ));
    }
    notes.push("grey: NaN/inf".into());
    GateHeatmaps {
        title: format!(
            "{kind} gate activations, layer '{}', sequence {} of {n}",
            l.name,
            b + 1
        ),
        subtitle: notes.join("; "),
        x_label: "processing step".into(),
        y_label: "unit".into(),
        sequence: b,
        masked_steps,
        panels,
    }
}

/// Gate block `k` of sequence `b` from `gates` (steps, sequences, blocks·units) as values[unit][step].
pub(super) fn heatmap<T: Real>(
    l: &LayerTrace<T>,
    gates: &Array3<T>,
    b: usize,
    steps: usize,
    k: usize,
    g: &str,
) -> Heatmap {
    let u = l.units;
    let mut values = vec![vec![f64::NAN; steps]; u];
    for t in 0..steps {
        for (j, row) in values.iter_mut().enumerate() {
            if let Some(v) = gates.get([t, b, k * u + j]) {
                row[t] = v.to_f();
            }
        }
    }
    let non_finite = values.iter().flatten().filter(|v| !v.is_finite()).count();
    let gate = l.kind.gates()[k];
    let act = if gate.candidate {
        l.activation
    } else {
        l.recurrent_activation
    };
    let role = gate.chart;
    let (lo, hi, fixed, diverging) = match fixed_range(act) {
        Some((lo, hi)) => (lo, hi, true, lo < 0.0),
        None => {
            let (mut lo, mut hi) =
                finite_min_max(values.iter().flatten().copied()).unwrap_or((0.0, 1.0));
            let diverging = lo < 0.0 && hi > 0.0;
            if diverging {
                let m = lo.abs().max(hi.abs());
                (lo, hi) = (-m, m);
            } else if lo >= 0.0 {
                lo = 0.0;
            } else {
                hi = 0.0;
            }
            if hi - lo <= 0.0 || !(hi - lo).is_finite() {
                (lo, hi) = if hi - lo <= 0.0 {
                    (lo - 0.5, hi + 0.5)
                } else {
                    (-1e300, 1e300)
                };
            }
            (lo, hi, false, diverging)
        }
    };
    Heatmap {
        gate: g.to_string(),
        title: format!("{g}: {role} ({})", act.name()),
        activation: act.name().to_string(),
        lo,
        hi,
        fixed_scale: fixed,
        diverging,
        values,
        non_finite,
    }
}

/// The output range of a bounded activation.
pub(super) fn fixed_range(a: Activation) -> Option<(f64, f64)> {
    match a {
        Activation::Sigmoid
        | Activation::HardSigmoid
        | Activation::HardSigmoidKeras2
        | Activation::Softmax => Some((0.0, 1.0)),
        Activation::Tanh | Activation::Softsign => Some((-1.0, 1.0)),
        Activation::Relu6 => Some((0.0, 6.0)),
        _ => None,
    }
}

/// L2 norms over units of a (steps, sequences, units) array, as (sequences, steps).
pub(super) fn norms_of<T: Real>(a: &Array3<T>) -> Array2<f64> {
    a.map_axis(Axis(2), |v| {
        v.iter().map(|x| x.to_f() * x.to_f()).sum::<f64>().sqrt()
    })
    .reversed_axes()
}

pub(super) fn empty_chart(title: &str, why: &str) -> ChartData {
    ChartData {
        title: title.into(),
        subtitle: why.into(),
        x_label: "processing step".into(),
        y_label: "value".into(),
        panels: vec![String::new()],
        series: Vec::new(),
        separators: Vec::new(),
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn list(v: &[usize], max: usize) -> String {
    let mut s: Vec<String> = v.iter().take(max).map(|x| x.to_string()).collect();
    if v.len() > max {
        s.push(format!("… ({} in all)", v.len()));
    }
    s.join(", ")
}

pub(super) fn short(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e6 {
        format!("{v:.0}")
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

pub(super) fn finite_min_max(it: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    it.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}
