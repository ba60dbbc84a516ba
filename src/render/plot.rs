/*!
Charts: how the state norms evolve, predictions against the framework and the truth, and gate heat maps.

Each chart is first computed as plain data ([`ChartData`], [`GateHeatmaps`]) so that tests can check what a
chart shows without looking at pixels; `draw_*` then renders that data as PNG or SVG (picked by the file
extension, see [`image_format`]) in memory and writes it atomically. Text is set in DejaVu Sans, embedded in
the binary (`assets/DejaVuSans.ttf`, licence in `assets/DejaVuSans-LICENSE.txt`), so charts render on machines
without any fonts installed.

Non-finite values never stop a chart: lines break around them, heat maps paint them grey.
*/

use crate::cell::{Activation, Real};
use crate::error::{Error, Result};
use crate::io::write::atomic_write;
use crate::trace::{LayerTrace, Trace};
use crate::weights::CellKind;
use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use ndarray::{Array2, Array3, Axis};
use plotters::chart::{ChartBuilder, ChartContext};
use plotters::coord::Shift;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::{
    Circle, Cross, EmptyElement, PathElement, Polygon, Rectangle, TriangleMarker,
};
use plotters::prelude::{BitMapBackend, DashedLineSeries, DrawingBackend, LineSeries, SVGBackend};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    Color, FontDesc, FontFamily, FontStyle, FontTransform, RGBColor, ShapeStyle, TextStyle,
};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};
use std::path::Path;

/// How many sequences get a line each before the chart switches to mean and min–max band.
pub const MAX_LINES: usize = 8;
/// How many output columns the predictions chart shows.
pub const MAX_OUTPUTS: usize = 4;

/// The picture formats charts are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Bitmap.
    Png,
    /// Vector.
    Svg,
}

/// The format a chart file name asks for: `.png` or `.svg` (any case). `flag` (e.g. `--plot`) names the
/// flag in the error; pass `""` when there is none.
pub fn image_format(flag: &str, path: &Path) -> Result<ImageFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("svg") => Ok(ImageFormat::Svg),
        _ => {
            let who = if flag.is_empty() {
                path.display().to_string()
            } else {
                format!("{flag} {}", path.display())
            };
            Err(Error::usage(format!(
                "{who}: unsupported chart format; the file name must end in .png or .svg"
            )))
        }
    }
}

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
    /// values[unit][step]; non-finite values are painted grey.
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
    let mut states: Vec<(&str, &Array3<T>)> = Vec::new();
    if let Some(c) = &l.c {
        states.push(("cell state ‖c_t‖", c));
    }
    states.push(("hidden state ‖h_t‖", h));
    // (sequences, steps) per state.
    let norms: Vec<Array2<f64>> = states.iter().map(|(_, a)| norms_of(a)).collect();
    let (n, steps) = norms.last().map(|a| a.dim()).unwrap_or((0, 0));
    if norms.iter().any(|a| a.dim() != (n, steps)) {
        return empty_chart(
            "State norms",
            "the recorded states have inconsistent shapes",
        );
    }
    let title = match l.kind {
        CellKind::Lstm => format!("LSTM state norms, layer '{}'", l.name),
        CellKind::Gru => format!("GRU hidden-state norm, layer '{}'", l.name),
        CellKind::SimpleRnn => format!("SimpleRNN hidden-state norm, layer '{}'", l.name),
    };
    let mut chart = ChartData {
        title,
        subtitle: String::new(),
        x_label: "processing step".into(),
        y_label: "L2 norm".into(),
        panels: states.iter().map(|(t, _)| t.to_string()).collect(),
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
    let steps = if n == 0 {
        0
    } else {
        l.steps().min(recorded.shape()[0])
    };
    let masked_steps: Vec<usize> = (0..steps)
        .filter(|&t| l.masked.get([t, b]).copied().unwrap_or(false))
        .map(|t| t + 1)
        .collect();
    let panels = l
        .kind
        .gate_names()
        .iter()
        .enumerate()
        .map(|(k, g)| heatmap(l, recorded, b, steps, k, g))
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
fn heatmap<T: Real>(
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
    let candidate = matches!((l.kind, k), (CellKind::Lstm, 2) | (CellKind::Gru, 2));
    let act = if candidate {
        l.activation
    } else {
        l.recurrent_activation
    };
    let role = match (l.kind, k) {
        (CellKind::Lstm, 0) => "input gate",
        (CellKind::Lstm, 1) => "forget gate",
        (CellKind::Lstm, 2) => "candidate c̃",
        (CellKind::Lstm, _) => "output gate",
        (CellKind::Gru, 0) => "update gate",
        (CellKind::Gru, 1) => "reset gate",
        (CellKind::Gru, _) => "candidate h̃",
        (CellKind::SimpleRnn, _) => "new state h",
    };
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
fn fixed_range(a: Activation) -> Option<(f64, f64)> {
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
fn norms_of<T: Real>(a: &Array3<T>) -> Array2<f64> {
    a.map_axis(Axis(2), |v| {
        v.iter().map(|x| x.to_f() * x.to_f()).sum::<f64>().sqrt()
    })
    .reversed_axes()
}

fn empty_chart(title: &str, why: &str) -> ChartData {
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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn list(v: &[usize], max: usize) -> String {
    let mut s: Vec<String> = v.iter().take(max).map(|x| x.to_string()).collect();
    if v.len() > max {
        s.push(format!("… ({} in all)", v.len()));
    }
    s.join(", ")
}

fn short(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e6 {
        format!("{v:.0}")
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

fn finite_min_max(it: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    it.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

// ───────────────────────────────────────── drawing ─────────────────────────────────────────

pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const INK: RGBColor = RGBColor(30, 30, 30);
pub(crate) const DIM: RGBColor = RGBColor(90, 90, 90);
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
const NON_FINITE: RGBColor = RGBColor(150, 150, 150);
const WHITE: RGBColor = RGBColor(255, 255, 255);

static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font as plotters' `sans-serif` (once per process).
fn ensure_font() -> std::result::Result<(), String> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded".into())
    }
}

/// plotters' font size is 1.24 em (its SVG backend writes `font-size = size / 1.24`); [`Canvas`] follows.
const SIZE_PER_EM: f64 = 1.24;

/// Text `em` pixels per em, in both formats.
pub(crate) fn font(em: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::SansSerif,
        em * SIZE_PER_EM,
        FontStyle::Normal,
    ))
    .color(&INK)
}

/// Width in pixels of `text` in `style`, as [`Canvas`] sets it.
fn text_width(style: &TextStyle<'_>, text: &str) -> i32 {
    match embedded_font() {
        Some(f) => TextLayout::new(f, style.font.get_size(), text).width.ceil() as i32,
        None => (text.chars().count() as f64 * style.font.get_size() * 0.6) as i32,
    }
}

/// The embedded font, parsed once.
fn embedded_font() -> Option<&'static FontRef<'static>> {
    static FONT: std::sync::OnceLock<Option<FontRef<'static>>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
}

/// A line of text laid out in the embedded font at plotters' `size` (`size / 1.24` pixels per em, as in
/// its SVG output): glyphs with their pen positions, kerning applied.
struct TextLayout {
    scale: PxScale,
    glyphs: Vec<(GlyphId, f32)>,
    width: f32,
    ascent: f32,
    descent: f32,
}

impl TextLayout {
    fn new(font: &FontRef<'static>, size: f64, text: &str) -> TextLayout {
        let em = font.units_per_em().unwrap_or(2048.0);
        let px_per_em = (size / SIZE_PER_EM) as f32;
        let scale = PxScale::from(px_per_em * font.height_unscaled() / em);
        let sf = font.as_scaled(scale);
        let mut glyphs = Vec::with_capacity(text.len());
        let mut x = 0f32;
        let mut prev: Option<GlyphId> = None;
        for ch in text.chars() {
            let id = sf.glyph_id(ch);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            glyphs.push((id, x));
            x += sf.h_advance(id);
            prev = Some(id);
        }
        TextLayout {
            scale,
            glyphs,
            width: x,
            ascent: sf.ascent(),
            descent: sf.descent(),
        }
    }
}

/// The bitmap backend with its text drawn here rather than by plotters: plotters 0.3.7's ab_glyph
/// renderer drops each glyph's side bearing (uneven letter spacing) and cannot place combining marks.
/// Everything else is passed through.
pub(crate) struct Canvas<'a> {
    inner: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

type CanvasError<'a> = DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> DrawingBackend for Canvas<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> std::result::Result<(u32, u32), CanvasError<'a>> {
        let l = TextLayout::new(self.font, style.size(), text);
        Ok((l.width.ceil() as u32, (l.ascent - l.descent).ceil() as u32))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> std::result::Result<(), CanvasError<'a>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let l = TextLayout::new(self.font, style.size(), text);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -l.width / 2.0,
            HPos::Right => -l.width,
        };
        // Baseline, relative to `pos` before rotation.
        let base = match anchor.v_pos {
            VPos::Top => l.ascent,
            VPos::Center => (l.ascent + l.descent) / 2.0,
            VPos::Bottom => l.descent,
        };
        let trans = style.transform();
        let (w, h) = self.inner.get_size();
        let (w, h) = (w as i32, h as i32);
        for &(id, x) in &l.glyphs {
            let glyph = id.with_scale_and_position(l.scale, point(dx + x, base));
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let mut result = Ok(());
            let inner = &mut self.inner;
            outline.draw(|gx, gy, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (rx, ry) =
                    trans.transform(b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                let (px, py) = (pos.0 + rx, pos.1 + ry);
                if px >= 0 && py >= 0 && px < w && py < h {
                    let c = BackendColor {
                        alpha: color.alpha * f64::from(coverage.min(1.0)),
                        rgb: color.rgb,
                    };
                    result = inner.draw_pixel((px, py), c);
                }
            });
            result?;
        }
        Ok(())
    }
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

type Coords = Cartesian2d<TickAxis, TickAxis>;

/// A linear f64 axis whose ticks (and grid lines) are exactly the given values.
#[derive(Clone)]
struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl TickAxis {
    fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> TickAxis {
        TickAxis { lo, hi, ticks }
    }
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if !(span.is_finite() && span != 0.0) {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.lo) / span;
        let px = limit.0 as f64 + (limit.1 - limit.0) as f64 * t;
        // Far-off values saturate rather than wrap; NaN maps to 0 (never drawn: callers skip non-finite).
        px.round().clamp(-1e7, 1e7) as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}
pub(crate) type DrawResult = std::result::Result<(), String>;

/// Renders with `png` or `svg` (chosen by `path`'s extension) into memory, then writes atomically.
pub(crate) fn render(
    path: &Path,
    (w, h): (u32, u32),
    png: impl FnOnce(&DrawingArea<Canvas<'_>, Shift>) -> DrawResult,
    svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<()> {
    let format = image_format("", path)?;
    ensure_font().map_err(|e| Error::output(path, e))?;
    let bytes: Vec<u8> = match format {
        ImageFormat::Png => {
            let font = embedded_font()
                .ok_or_else(|| Error::output(path, "the embedded font could not be loaded"))?;
            let mut buf = vec![255u8; w as usize * h as usize * 3];
            {
                let canvas = Canvas {
                    inner: BitMapBackend::with_buffer(&mut buf, (w, h)),
                    font,
                };
                let root = canvas.into_drawing_area();
                root.fill(&WHITE).map_err(|e| Error::output(path, e))?;
                png(&root).map_err(|e| Error::output(path, e))?;
                root.present().map_err(|e| Error::output(path, e))?;
            }
            encode_png(&buf, w, h).map_err(|e| Error::output(path, e))?
        }
        ImageFormat::Svg => {
            let mut s = String::new();
            {
                let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
                root.fill(&WHITE).map_err(|e| Error::output(path, e))?;
                svg(&root).map_err(|e| Error::output(path, e))?;
                root.present().map_err(|e| Error::output(path, e))?;
            }
            s.into_bytes()
        }
    };
    atomic_write(path, |out| out.write_all(&bytes))
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// Draws a line chart ([`state_norms`], [`predictions`]) to `path` (`.png` or `.svg`).
pub fn draw_lines(chart: &ChartData, path: &Path) -> Result<()> {
    let layout = LinesLayout::new(chart);
    render(
        path,
        (layout.width, layout.height),
        |root| lines_on(root, chart, &layout),
        |root| lines_on(root, chart, &layout),
    )
}

/// The most heat-map cells an SVG may hold (a PNG has no limit: it is drawn pixel by pixel).
pub const MAX_SVG_CELLS: usize = 400_000;

/// Draws gate heat maps ([`gates`]) to `path` (`.png` or `.svg`).
pub fn draw_heatmaps(h: &GateHeatmaps, path: &Path) -> Result<()> {
    // An SVG draws one rectangle per cell: past a few hundred thousand it is megabytes no viewer opens.
    let cells: usize = h
        .panels
        .iter()
        .map(|p| p.values.iter().map(|r| r.len()).sum::<usize>())
        .sum();
    if matches!(image_format("--plot-gates", path)?, ImageFormat::Svg) && cells > MAX_SVG_CELLS {
        return Err(crate::error::Error::usage(format!(
            "--plot-gates {}: {cells} cells are too many for an SVG (at most {MAX_SVG_CELLS}); write a .png",
            path.display()
        )));
    }
    let layout = HeatLayout::new(h);
    render(
        path,
        (layout.width, layout.height),
        |root| heatmaps_on(root, h, &layout),
        |root| heatmaps_on(root, h, &layout),
    )
}

// ── shared pieces ──

/// Draws the heading and sub-heading; returns the y below them.
pub(crate) fn heading<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    width: u32,
    title: &str,
    subtitle: &str,
) -> std::result::Result<i32, String> {
    let cx = width as i32 / 2;
    let centre = Pos::new(HPos::Center, VPos::Top);
    root.draw_text(title, &font(22.0).pos(centre), (cx, 12))
        .map_err(err)?;
    let mut y = 50;
    if !subtitle.is_empty() {
        root.draw_text(subtitle, &font(14.0).color(&DIM).pos(centre), (cx, y))
            .map_err(err)?;
        y += 24;
    }
    Ok(y)
}

/// Integer ticks in [lo, hi], at most about `max` of them, on a 1-2-5 step.
fn int_ticks(lo: i64, hi: i64, max: usize) -> Vec<f64> {
    if hi < lo {
        return Vec::new();
    }
    let span = (hi - lo) as f64;
    let max = max.max(2) as f64;
    let mut step = 1i64;
    'outer: for mag in [1i64, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000] {
        for m in [1, 2, 5] {
            step = m * mag;
            if span / step as f64 <= max - 1.0 {
                break 'outer;
            }
        }
    }
    let first = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
    let mut v = Vec::new();
    let mut x = first;
    while x <= hi && v.len() < 1000 {
        v.push(x as f64);
        x += step;
    }
    v
}

/// "Nice" ticks covering [lo, hi]; returns the ticks and their step.
fn nice_ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let (ticks, step) = nice_ticks_once(lo, hi, max);
    if ticks.len() < 3 && max < 40 {
        return nice_ticks_once(lo, hi, max * 2);
    }
    (ticks, step)
}

fn nice_ticks_once(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return (vec![lo], 1.0);
    }
    let raw = span / max.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    let mut v = Vec::new();
    let mut i = 0.0;
    while v.len() < 100 {
        let x = (first + i) * step;
        if x > hi + step * 1e-9 {
            break;
        }
        v.push(if x.abs() < step * 1e-9 { 0.0 } else { x });
        i += 1.0;
    }
    (v, step)
}

/// Formats a tick value given the tick step.
fn tick_label(v: f64, step: f64, max_abs: f64) -> String {
    if max_abs >= 1e6 || (step < 1e-4 && max_abs < 1e-2) || (step < 1e-6) {
        if v == 0.0 {
            return "0".into();
        }
        let digits = (max_abs.log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
        return format!("{v:.digits$e}");
    }
    let decimals = (-(step.log10().floor())).clamp(0.0, 12.0) as usize;
    let decimals = if step * 10f64.powi(decimals as i32) % 1.0 > 1e-6 {
        decimals + 1
    } else {
        decimals
    };
    format!("{v:.decimals$}")
}

// ── line charts ──

struct LegendItem {
    name: String,
    color: RGBColor,
    dashed: bool,
    marker: Marker,
    band: bool,
}

struct LinesLayout {
    width: u32,
    height: u32,
    legend: Vec<Vec<(LegendItem, i32)>>,
    header: i32,
    panel_h: u32,
    y_area: u32,
}

const LEGEND_FONT: f64 = 14.0;
const LEGEND_SAMPLE: i32 = 30;
const LEGEND_GAP: i32 = 22;
const LEGEND_ROW: i32 = 24;

impl LinesLayout {
    fn new(chart: &ChartData) -> LinesLayout {
        let width = 1200u32;
        let mut items: Vec<LegendItem> = Vec::new();
        for s in &chart.series {
            if !items.iter().any(|i| i.name == s.name && !i.band) {
                items.push(LegendItem {
                    name: s.name.clone(),
                    color: PALETTE[s.color % PALETTE.len()],
                    dashed: s.dashed,
                    marker: s.marker,
                    band: false,
                });
            }
            if s.band.is_some() && !items.iter().any(|i| i.band) {
                items.push(LegendItem {
                    name: "min–max over sequences".into(),
                    color: PALETTE[s.color % PALETTE.len()],
                    dashed: false,
                    marker: Marker::None,
                    band: true,
                });
            }
        }
        let style = font(LEGEND_FONT);
        let max_row = width as i32 - 40;
        let mut rows: Vec<Vec<(LegendItem, i32)>> = Vec::new();
        let mut row_w = 0;
        for item in items {
            let w = LEGEND_SAMPLE + 8 + text_width(&style, &item.name) + LEGEND_GAP;
            if rows.is_empty() || row_w + w > max_row {
                rows.push(Vec::new());
                row_w = 0;
            }
            row_w += w;
            if let Some(r) = rows.last_mut() {
                r.push((item, w));
            }
        }
        let top = if chart.subtitle.is_empty() { 54 } else { 78 };
        let header = top + rows.len() as i32 * LEGEND_ROW + 8;
        let n = chart.panels.len().max(1) as u32;
        let panel_h = match n {
            1 => 560,
            2 => 360,
            _ => 290,
        };
        // Every panel gets the same y label area so that the x axes line up.
        let tick = font(13.0);
        let mut widest = 0;
        for p in 0..chart.panels.len().max(1) {
            let (lo, hi) = y_range(chart, p);
            let (ticks, step) = nice_ticks(lo, hi, y_tick_count(panel_h));
            let max_abs = lo.abs().max(hi.abs());
            for t in ticks {
                widest = widest.max(text_width(&tick, &tick_label(t, step, max_abs)));
            }
        }
        LinesLayout {
            width,
            height: header as u32 + n * panel_h + 10,
            legend: rows,
            header,
            panel_h,
            y_area: (widest + 44).max(60) as u32,
        }
    }
}

fn y_tick_count(panel_h: u32) -> usize {
    ((panel_h as usize).saturating_sub(60) / 50).clamp(4, 10)
}

/// The y range of panel `p` (finite values of lines and bands), padded.
fn y_range(chart: &ChartData, p: usize) -> (f64, f64) {
    let ys = chart.series.iter().filter(|s| s.panel == p).flat_map(|s| {
        s.points.iter().map(|q| q.1).chain(
            s.band
                .iter()
                .flat_map(|b| b.iter().flat_map(|q| [q.1, q.2])),
        )
    });
    let (lo, hi) = finite_min_max(ys).unwrap_or((0.0, 1.0));
    let (lo, hi) = (lo.max(-1e300), hi.min(1e300));
    let span = hi - lo;
    if span <= 0.0 {
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        (lo - pad, hi + pad)
    } else {
        (lo - span * 0.06, hi + span * 0.06)
    }
}

fn x_range(chart: &ChartData) -> (i64, i64) {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.0));
    match finite_min_max(xs) {
        Some((lo, hi)) => (lo.floor() as i64, hi.ceil() as i64),
        None => (0, 1),
    }
}

fn lines_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ChartData,
    layout: &LinesLayout,
) -> DrawResult {
    let mut y = heading(root, layout.width, &chart.title, &chart.subtitle)?;
    draw_legend(root, layout, y)?;
    y = layout.header;
    let body = root
        .clone()
        .shrink((0, y), (layout.width, layout.height - y as u32));
    let n = chart.panels.len().max(1);
    let areas = body.split_evenly((n, 1));
    let (xlo, xhi) = x_range(chart);
    let plot_w = layout.width as i32 - layout.y_area as i32 - 40;
    let x_ticks = int_ticks(xlo, xhi, ((plot_w / 70) as usize).clamp(2, 20));
    let x_fmt = |v: &f64| format!("{v:.0}");
    for (p, area) in areas.iter().enumerate() {
        let last = p + 1 == n;
        let (ylo, yhi) = y_range(chart, p);
        let (y_ticks, ystep) = nice_ticks(ylo, yhi, y_tick_count(layout.panel_h));
        let max_abs = ylo.abs().max(yhi.abs());
        let y_fmt = move |v: &f64| tick_label(*v, ystep, max_abs);
        let title = chart.panels.get(p).cloned().unwrap_or_default();
        let mut builder = ChartBuilder::on(area);
        builder
            .margin_left(12)
            .margin_right(28)
            .margin_top(4)
            .margin_bottom(if last { 4 } else { 10 })
            .x_label_area_size(if last { 56 } else { 30 })
            .y_label_area_size(layout.y_area);
        if !title.is_empty() {
            builder.caption(&title, font(17.0));
        }
        let mut ctx = builder
            .build_cartesian_2d(
                TickAxis::new(xlo as f64 - 0.5, xhi as f64 + 0.5, x_ticks.clone()),
                TickAxis::new(ylo, yhi, y_ticks),
            )
            .map_err(err)?;
        let mut mesh = ctx.configure_mesh();
        mesh.bold_line_style(GRID)
            .axis_style(DIM)
            .label_style(font(13.0))
            .axis_desc_style(font(15.0))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .y_desc(&chart.y_label);
        if last {
            mesh.x_desc(&chart.x_label);
        }
        mesh.draw().map_err(err)?;
        for &sx in &chart.separators {
            ctx.draw_series(DashedLineSeries::new(
                vec![(sx, ylo), (sx, yhi)],
                5,
                4,
                ShapeStyle::from(RGBColor(120, 120, 120)).stroke_width(1),
            ))
            .map_err(err)?;
        }
        let series: Vec<&Series> = chart.series.iter().filter(|s| s.panel == p).collect();
        for s in &series {
            if let Some(band) = &s.band {
                draw_band(&mut ctx, band, PALETTE[s.color % PALETTE.len()])?;
            }
        }
        for s in &series {
            draw_series(&mut ctx, s, plot_w)?;
        }
        if series
            .iter()
            .all(|s| s.points.iter().all(|q| !q.1.is_finite()))
        {
            let (xr, yr) = ctx.plotting_area().get_pixel_range();
            root.draw_text(
                "no finite values to draw",
                &font(16.0)
                    .color(&DIM)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
                ((xr.start + xr.end) / 2, (yr.start + yr.end) / 2),
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    layout: &LinesLayout,
    top: i32,
) -> DrawResult {
    let style = font(LEGEND_FONT).pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in layout.legend.iter().enumerate() {
        let total: i32 = row.iter().map(|(_, w)| w).sum::<i32>() - LEGEND_GAP;
        let mut x = (layout.width as i32 - total) / 2;
        let cy = top + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        for (item, w) in row {
            let (x0, x1) = (x, x + LEGEND_SAMPLE);
            if item.band {
                root.draw(&Rectangle::new(
                    [(x0, cy - 7), (x1, cy + 7)],
                    item.color.mix(0.22).filled(),
                ))
                .map_err(err)?;
            } else {
                let line = ShapeStyle::from(item.color).stroke_width(2);
                if item.dashed {
                    for s in (x0..x1).step_by(10) {
                        root.draw(&PathElement::new(
                            vec![(s, cy), ((s + 6).min(x1), cy)],
                            line,
                        ))
                        .map_err(err)?;
                    }
                } else {
                    root.draw(&PathElement::new(vec![(x0, cy), (x1, cy)], line))
                        .map_err(err)?;
                }
                let c = ((x0 + x1) / 2, cy);
                let st = item.color.filled();
                match item.marker {
                    Marker::None => {}
                    Marker::Circle => root.draw(&Circle::new(c, 5, st)).map_err(err)?,
                    Marker::Square => root
                        .draw(&Rectangle::new(
                            [(c.0 - 4, c.1 - 4), (c.0 + 4, c.1 + 4)],
                            st,
                        ))
                        .map_err(err)?,
                    Marker::Triangle => root.draw(&TriangleMarker::new(c, 5, st)).map_err(err)?,
                    Marker::Cross => root
                        .draw(&Cross::new(
                            c,
                            5,
                            ShapeStyle::from(item.color).stroke_width(2),
                        ))
                        .map_err(err)?,
                }
            }
            root.draw_text(&item.name, &style, (x1 + 8, cy))
                .map_err(err)?;
            x += w;
        }
    }
    Ok(())
}

/// Splits points into runs of finite values.
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y.clamp(-1e300, 1e300)));
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

fn draw_band<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Coords>,
    band: &[(f64, f64, f64)],
    color: RGBColor,
) -> DrawResult {
    let mut run: Vec<(f64, f64, f64)> = Vec::new();
    let mut flush = |run: &mut Vec<(f64, f64, f64)>| -> DrawResult {
        if run.len() >= 2 {
            let mut poly: Vec<(f64, f64)> = run.iter().map(|q| (q.0, q.2)).collect();
            poly.extend(run.iter().rev().map(|q| (q.0, q.1)));
            ctx.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.22).filled(),
            )))
            .map_err(err)?;
        } else if let Some(q) = run.first() {
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(q.0, q.1), (q.0, q.2)],
                ShapeStyle::from(color.mix(0.4)).stroke_width(6),
            )))
            .map_err(err)?;
        }
        run.clear();
        Ok(())
    };
    for &q in band {
        if q.0.is_finite() && q.1.is_finite() && q.2.is_finite() {
            run.push((q.0, q.1.clamp(-1e300, 1e300), q.2.clamp(-1e300, 1e300)));
        } else {
            flush(&mut run)?;
        }
    }
    flush(&mut run)
}

fn draw_series<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Coords>,
    s: &Series,
    plot_w: i32,
) -> DrawResult {
    let color = PALETTE[s.color % PALETTE.len()];
    let width = if s.points.len() > 1500 { 1 } else { 2 };
    let line = ShapeStyle::from(color).stroke_width(width);
    let show_markers = s.marker != Marker::None && (s.points.len() as i32) * 8 <= plot_w;
    for run in finite_runs(&s.points) {
        if run.len() >= 2 {
            if s.dashed {
                ctx.draw_series(DashedLineSeries::new(run.clone(), 8, 5, line))
                    .map_err(err)?;
            } else {
                ctx.draw_series(LineSeries::new(run.clone(), line))
                    .map_err(err)?;
            }
        }
        // An isolated point would be invisible without a marker.
        let marker = match (show_markers, run.len()) {
            (true, _) => s.marker,
            (false, 1) => Marker::Circle,
            _ => Marker::None,
        };
        let st = color.filled();
        match marker {
            Marker::None => {}
            Marker::Circle => {
                ctx.draw_series(run.iter().map(|&c| Circle::new(c, 5, st)))
                    .map_err(err)?;
            }
            Marker::Square => {
                ctx.draw_series(
                    run.iter()
                        .map(|&c| EmptyElement::at(c) + Rectangle::new([(-4, -4), (4, 4)], st)),
                )
                .map_err(err)?;
            }
            Marker::Triangle => {
                ctx.draw_series(run.iter().map(|&c| TriangleMarker::new(c, 5, st)))
                    .map_err(err)?;
            }
            Marker::Cross => {
                let cs = ShapeStyle::from(color).stroke_width(2);
                ctx.draw_series(run.iter().map(|&c| Cross::new(c, 5, cs)))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

// ── heat maps ──

struct HeatLayout {
    width: u32,
    height: u32,
    cols: usize,
    header: i32,
}

const BAR_AREA: u32 = 110;

impl HeatLayout {
    fn new(h: &GateHeatmaps) -> HeatLayout {
        let n = h.panels.len().max(1);
        let cols = if n == 4 { 2 } else { n.min(3) };
        let rows = n.div_ceil(cols);
        let panel_w: u32 = if cols >= 3 { 560 } else { 620 };
        let panel_h: u32 = 470;
        let header = if h.subtitle.is_empty() { 60 } else { 84 };
        HeatLayout {
            width: cols as u32 * panel_w,
            height: header as u32 + rows as u32 * panel_h + 8,
            cols,
            header,
        }
    }
}

/// Viridis, sampled at 9 points.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];
/// Blue–white–red (ColorBrewer RdBu, reversed).
pub(crate) const RDBU: [(u8, u8, u8); 11] = [
    (5, 48, 97),
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
    (103, 0, 31),
];

pub(crate) fn colormap(map: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let f = t * (map.len() - 1) as f64;
    let i = (f.floor() as usize).min(map.len() - 2);
    let w = f - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * w).round() as u8;
    let (a, b) = (map[i], map[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

fn heat_color(m: &Heatmap, v: f64) -> RGBColor {
    if !v.is_finite() {
        return NON_FINITE;
    }
    let t = (v - m.lo) / (m.hi - m.lo);
    colormap(if m.diverging { &RDBU } else { &VIRIDIS }, t)
}

fn heatmaps_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &GateHeatmaps,
    layout: &HeatLayout,
) -> DrawResult {
    heading(root, layout.width, &h.title, &h.subtitle)?;
    let body = root.clone().shrink(
        (0, layout.header),
        (layout.width, layout.height - layout.header as u32),
    );
    if h.panels.is_empty() {
        return Ok(());
    }
    let rows = h.panels.len().div_ceil(layout.cols);
    let areas = body.split_evenly((rows, layout.cols));
    for (m, area) in h.panels.iter().zip(areas.iter()) {
        heatmap_on(root, area, h, m)?;
    }
    Ok(())
}

fn heatmap_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    h: &GateHeatmaps,
    m: &Heatmap,
) -> DrawResult {
    let units = m.values.len();
    let steps = m.values.first().map(|r| r.len()).unwrap_or(0);
    let (aw, _) = area.dim_in_pixel();
    let (left, _) = area.split_horizontally(aw.saturating_sub(BAR_AREA));
    let tick_font = font(13.0);
    let unit_label_w = text_width(&tick_font, &units.saturating_sub(1).to_string());
    let mut builder = ChartBuilder::on(&left);
    builder
        .margin_left(8)
        .margin_right(6)
        .margin_top(12)
        .margin_bottom(10)
        .caption(&m.title, font(15.0))
        .x_label_area_size(48)
        .y_label_area_size((unit_label_w + 40) as u32);
    // y: unit u is drawn at units-1-u so that unit 0 is at the top, as in a matrix.
    let (pw, ph) = left.dim_in_pixel();
    let plot_w = pw as i32 - unit_label_w - 60;
    let plot_h = ph as i32 - 110;
    let x_ticks = int_ticks(
        1,
        steps.max(1) as i64,
        ((plot_w / 45) as usize).clamp(2, 16),
    );
    let unit_ticks = int_ticks(
        0,
        units.saturating_sub(1) as i64,
        ((plot_h / 24) as usize).clamp(2, 20),
    );
    let top = units.saturating_sub(1) as f64;
    let y_ticks: Vec<f64> = unit_ticks.iter().map(|u| top - u).collect();
    let mut ctx = builder
        .build_cartesian_2d(
            TickAxis::new(0.5, steps.max(1) as f64 + 0.5, x_ticks),
            TickAxis::new(-0.5, units.max(1) as f64 - 0.5, y_ticks),
        )
        .map_err(err)?;
    let x_fmt = |v: &f64| format!("{v:.0}");
    let y_fmt = |v: &f64| format!("{:.0}", top - v);
    ctx.configure_mesh()
        .disable_mesh()
        .axis_style(DIM)
        .label_style(tick_font.clone())
        .axis_desc_style(font(14.0))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc(&h.x_label)
        .y_desc(&h.y_label)
        .draw()
        .map_err(err)?;
    let cells = m.values.iter().enumerate().flat_map(|(u, row)| {
        let y = top - u as f64;
        row.iter().enumerate().map(move |(t, &v)| {
            Rectangle::new(
                [(t as f64 + 0.5, y + 0.5), (t as f64 + 1.5, y - 0.5)],
                heat_color(m, v).filled(),
            )
        })
    });
    ctx.draw_series(cells).map_err(err)?;
    // Masked steps: a dark bar just above the column.
    let (xr, yr) = ctx.plotting_area().get_pixel_range();
    if steps > 0 {
        let cw = (xr.end - xr.start) as f64 / steps as f64;
        for &s in &h.masked_steps {
            let x0 = xr.start + ((s as f64 - 1.0) * cw).round() as i32;
            let x1 = (xr.start + (s as f64 * cw).round() as i32 - 1).max(x0 + 1);
            root.draw(&Rectangle::new(
                [(x0, yr.start - 6), (x1, yr.start - 2)],
                INK.filled(),
            ))
            .map_err(err)?;
        }
    }
    colour_bar(root, m, xr.end + 18, yr.start, yr.end)
}

/// A vertical colour bar with ticks, at pixel column `x`, from `top` (m.hi) to `bottom` (m.lo).
fn colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    m: &Heatmap,
    x: i32,
    top: i32,
    bottom: i32,
) -> DrawResult {
    let bw = 18;
    let len = (bottom - top).max(1);
    for py in top..bottom {
        let t = (bottom - py) as f64 / len as f64;
        let v = m.lo + t * (m.hi - m.lo);
        root.draw(&Rectangle::new(
            [(x, py), (x + bw, py + 1)],
            heat_color(m, v).filled(),
        ))
        .map_err(err)?;
    }
    root.draw(&Rectangle::new(
        [(x, top), (x + bw, bottom)],
        ShapeStyle::from(DIM).stroke_width(1),
    ))
    .map_err(err)?;
    let (ticks, step) = nice_ticks(m.lo, m.hi, 5);
    let max_abs = m.lo.abs().max(m.hi.abs());
    let style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
    let mut label_w = 0;
    for t in ticks {
        let py = bottom - (((t - m.lo) / (m.hi - m.lo)) * len as f64).round() as i32;
        root.draw(&PathElement::new(vec![(x + bw, py), (x + bw + 4, py)], DIM))
            .map_err(err)?;
        let label = tick_label(t, step, max_abs);
        label_w = label_w.max(text_width(&style, &label));
        root.draw_text(&label, &style, (x + bw + 7, py))
            .map_err(err)?;
    }
    // What the scale is, written along the bar.
    let caption = if m.fixed_scale {
        format!(
            "fixed scale: {} range {} to {}",
            m.activation,
            short(m.lo),
            short(m.hi)
        )
    } else {
        format!("scale from the data ({} is unbounded)", m.activation)
    };
    let vstyle = font(12.0)
        .color(&DIM)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Top));
    root.draw_text(
        &caption,
        &vstyle,
        (x + bw + 7 + label_w + 6, (top + bottom) / 2),
    )
    .map_err(err)?;
    if m.non_finite > 0 {
        let y = bottom + 14;
        root.draw(&Rectangle::new(
            [(x, y), (x + bw, y + 12)],
            NON_FINITE.filled(),
        ))
        .map_err(err)?;
        root.draw_text(
            "NaN/inf",
            &font(12.0).pos(Pos::new(HPos::Left, VPos::Center)),
            (x + bw + 5, y + 6),
        )
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Activation;
    use ndarray::{Array2, Array3};

    /// A small trace: `n` sequences × `steps` steps × `units` units, values a smooth function of the indices.
    fn trace(kind: CellKind, n: usize, steps: usize, units: usize, carry: bool) -> Trace<f64> {
        let blocks = kind.blocks();
        let f = |b: usize, t: usize, j: usize| {
            ((b + 1) as f64 * 0.3 + t as f64 * 0.2 + j as f64 * 0.7).sin()
        };
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        // Time-major, as the engine records: (steps, sequences, …).
        let h = Array3::from_shape_fn((steps, n, units), |(t, b, j)| 0.5 * f(b, t, j));
        let c = Array3::from_shape_fn((steps, n, units), |(t, b, j)| 2.0 * f(b, t, j + 1));
        let pre = Array3::from_shape_fn((steps, n, blocks * units), |(t, b, k)| 3.0 * f(b, t, k));
        let gates = Array3::from_shape_fn((steps, n, blocks * units), |(t, b, k)| {
            let v = pre[[t, b, k]];
            if k / units == 2 { v.tanh() } else { sig(v) }
        });
        let last = |a: &Array3<f64>| a.index_axis(Axis(0), steps.saturating_sub(1)).to_owned();
        let lstm = kind == CellKind::Lstm;
        let layer = LayerTrace {
            name: kind.name().into(),
            kind,
            units,
            features: 2,
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            reset_after: (!lstm).then_some(true),
            go_backwards: false,
            carry_state: carry,
            input_index: (0..steps).collect(),
            x: Array3::zeros((n, steps, 2)),
            pre: Some(pre),
            gates: Some(gates),
            out: Some(h.clone()),
            masked: Array2::from_elem((steps, n), false),
            h0: Array2::zeros((n, units)),
            c0: lstm.then(|| Array2::zeros((n, units))),
            last_output: last(&h),
            final_h: last(&h),
            final_c: lstm.then(|| last(&c)),
            kernels: crate::trace::Kernels::Portable,
            h: Some(h),
            c: lstm.then_some(c),
        };
        let predictions = Array2::from_shape_fn((n, 2), |(b, j)| (b as f64 * 0.5 + j as f64).cos());
        Trace {
            layers: vec![layer],
            predictions,
            dense_activation: None,
        }
    }

    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn distinct_colours(rgb: &[u8]) -> usize {
        let mut set = std::collections::HashSet::new();
        for p in rgb.chunks(3) {
            set.insert((p[0], p[1], p[2]));
        }
        set.len()
    }

    fn count(rgb: &[u8], c: RGBColor) -> usize {
        rgb.chunks(3)
            .filter(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2))
            .count()
    }

    #[test]
    fn norms_one_line_per_sequence() {
        let tr = trace(CellKind::Lstm, 3, 4, 2, false);
        let c = state_norms(&tr, None);
        assert_eq!(c.panels, ["cell state ‖c_t‖", "hidden state ‖h_t‖"]);
        assert_eq!(c.series.len(), 6);
        let s = &c.series[4];
        assert_eq!((s.name.as_str(), s.panel, s.color), ("sequence 2", 1, 1));
        let want: f64 = (0..2)
            .map(|j| tr.layers[0].h.as_ref().unwrap()[[2, 1, j]].powi(2))
            .sum::<f64>()
            .sqrt();
        assert_eq!(s.points[2], (3.0, want));
        assert!(c.separators.is_empty());
    }

    #[test]
    fn norms_with_window_use_input_rows() {
        let mut tr = trace(CellKind::Gru, 3, 2, 2, false);
        tr.layers[0].input_index = vec![1, 0];
        let c = state_norms(&tr, Some(2));
        assert_eq!(c.panels, ["hidden state ‖h_t‖"]);
        let xs: Vec<f64> = c.series[2].points.iter().map(|p| p.0).collect();
        assert_eq!(xs, [3.0, 2.0]);
        assert!(c.x_label.starts_with("input row"));
    }

    #[test]
    fn norms_of_many_sequences_are_a_mean_with_band() {
        let tr = trace(CellKind::Lstm, 20, 5, 3, false);
        let c = state_norms(&tr, None);
        assert_eq!(c.series.len(), 2);
        let s = &c.series[1];
        let band = s.band.as_ref().unwrap();
        assert_eq!(band.len(), 5);
        for (p, b) in s.points.iter().zip(band) {
            assert!(b.1 <= p.1 && p.1 <= b.2);
        }
    }

    #[test]
    fn carried_state_is_one_line_over_global_steps() {
        let tr = trace(CellKind::Gru, 3, 4, 2, true);
        let c = state_norms(&tr, None);
        assert_eq!(c.series.len(), 1);
        let xs: Vec<f64> = c.series[0].points.iter().map(|p| p.0).collect();
        assert_eq!(xs, (1..=12).map(|v| v as f64).collect::<Vec<_>>());
        assert_eq!(c.separators, [4.5, 8.5]);
    }

    #[test]
    fn predictions_series() {
        let tr = trace(CellKind::Lstm, 4, 3, 2, false);
        let exp = tr.predictions.mapv(|v| v + 0.01);
        let y = Array2::from_elem((4, 2), 0.5);
        let c = predictions(&tr, Some(&exp), Some(&y), Some(3));
        assert_eq!(c.panels, ["output y0", "output y1"]);
        let names: Vec<&str> = c.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["ours", "framework", "actual", "ours", "framework", "actual"]
        );
        assert_eq!(c.series[3].points[1], (4.0, tr.predictions[[1, 1]]));
        assert_eq!(c.series[2].points[0], (3.0, 0.5));
        let wide = Trace {
            predictions: Array2::zeros((2, 7)),
            ..tr
        };
        let c = predictions(&wide, None, None, None);
        assert_eq!(c.panels.len(), 4);
        assert!(c.subtitle.contains("first 4 of 7"));
    }

    #[test]
    fn gate_heatmaps_have_fixed_scales() {
        let tr = trace(CellKind::Lstm, 2, 5, 3, false);
        let h = gates(&tr, 9);
        assert_eq!(h.sequence, 1);
        let names: Vec<&str> = h.panels.iter().map(|p| p.gate.as_str()).collect();
        assert_eq!(names, ["i", "f", "c", "o"]);
        assert_eq!(
            (h.panels[0].lo, h.panels[0].hi, h.panels[0].diverging),
            (0.0, 1.0, false)
        );
        assert_eq!(
            (h.panels[2].lo, h.panels[2].hi, h.panels[2].diverging),
            (-1.0, 1.0, true)
        );
        assert_eq!(h.panels[1].values.len(), 3);
        assert_eq!(
            h.panels[1].values[2][4],
            tr.layers[0].gates.as_ref().unwrap()[[4, 1, 3 + 2]]
        );
        let mut relu = tr.clone();
        relu.layers[0].activation = Activation::Relu;
        relu.layers[0]
            .gates
            .as_mut()
            .unwrap()
            .mapv_inplace(|v| v.max(0.0) * 4.0);
        let h = gates(&relu, 0);
        assert!(!h.panels[2].fixed_scale);
        assert_eq!(h.panels[2].lo, 0.0);
        assert!(h.panels[2].hi > 1.0);
    }

    #[test]
    fn draws_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let tr = trace(CellKind::Lstm, 3, 6, 4, false);
        let charts = [
            ("norms", state_norms(&tr, None)),
            ("pred", predictions(&tr, None, None, None)),
        ];
        for (name, chart) in &charts {
            let png = dir.path().join(format!("{name}.png"));
            draw_lines(chart, &png).unwrap();
            let (w, h, rgb) = decode(&png);
            assert_eq!(w, 1200);
            assert!(h >= 600, "{name}: height {h}");
            assert!(distinct_colours(&rgb) > 20, "{name}: looks blank");
            assert!(count(&rgb, PALETTE[0]) > 50, "{name}: no blue line");
            let svg = dir.path().join(format!("{name}.svg"));
            draw_lines(chart, &svg).unwrap();
            let text = std::fs::read_to_string(&svg).unwrap();
            assert!(text.starts_with("<svg") && text.contains("</svg>"));
            assert!(
                text.contains(&chart.title.replace('\'', "&apos;")) || text.contains("state norms")
            );
        }
        let h = gates(&tr, 0);
        let png = dir.path().join("gates.PNG");
        draw_heatmaps(&h, &png).unwrap();
        let (w, _, rgb) = decode(&png);
        assert_eq!(w, 1240);
        assert!(distinct_colours(&rgb) > 100);
        draw_heatmaps(&h, &dir.path().join("gates.svg")).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn non_finite_values_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut tr = trace(CellKind::Gru, 12, 6, 3, false);
        let l = &mut tr.layers[0];
        let h = l.h.as_mut().unwrap();
        h[[2, 0, 1]] = f64::NAN;
        h.index_axis_mut(Axis(0), 3).fill(f64::INFINITY);
        let g = l.gates.as_mut().unwrap();
        g[[1, 0, 0]] = f64::NAN;
        g[[2, 0, 7]] = f64::NEG_INFINITY;
        tr.predictions[[1, 0]] = f64::NAN;
        let c = state_norms(&tr, None);
        assert!(c.series[0].points[3].1.is_nan());
        assert!(c.subtitle.contains("non-finite"));
        draw_lines(&c, &dir.path().join("n.png")).unwrap();
        draw_lines(
            &predictions(&tr, None, None, None),
            &dir.path().join("p.svg"),
        )
        .unwrap();
        let h = gates(&tr, 0);
        assert_eq!(h.panels[0].non_finite, 1);
        assert_eq!(h.panels[2].non_finite, 1);
        let p = dir.path().join("g.png");
        draw_heatmaps(&h, &p).unwrap();
        let (_, _, rgb) = decode(&p);
        assert!(count(&rgb, NON_FINITE) > 20);
        // All values non-finite.
        tr.layers[0].h.as_mut().unwrap().fill(f64::NAN);
        draw_lines(&state_norms(&tr, None), &dir.path().join("all.png")).unwrap();
    }

    #[test]
    fn degenerate_traces_render() {
        let dir = tempfile::tempdir().unwrap();
        let tr = trace(CellKind::Lstm, 1, 1, 1, true);
        draw_lines(&state_norms(&tr, Some(1)), &dir.path().join("a.png")).unwrap();
        draw_lines(
            &predictions(&tr, None, None, Some(1)),
            &dir.path().join("b.png"),
        )
        .unwrap();
        draw_heatmaps(&gates(&tr, 0), &dir.path().join("c.png")).unwrap();
        let empty = Trace::<f32> {
            layers: Vec::new(),
            predictions: Array2::zeros((0, 1)),
            dense_activation: None,
        };
        draw_lines(&state_norms(&empty, None), &dir.path().join("d.png")).unwrap();
        draw_lines(
            &predictions(&empty, None, None, None),
            &dir.path().join("e.svg"),
        )
        .unwrap();
        draw_heatmaps(&gates(&empty, 0), &dir.path().join("f.png")).unwrap();
    }

    #[test]
    fn bad_extension_and_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let tr = trace(CellKind::Gru, 2, 3, 2, false);
        let c = state_norms(&tr, None);
        let e = draw_lines(&c, &dir.path().join("chart.jpg")).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("chart.jpg") && msg.contains(".png") && msg.contains(".svg"),
            "{msg}"
        );
        let e = image_format("--plot", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--plot x:"), "{e}");
        let e = draw_lines(&c, &dir.path().join("nope/chart.png")).unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e}");
        assert!(e.to_string().contains("does not exist"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn chart_data_serializes() {
        let tr = trace(CellKind::Gru, 2, 2, 1, false);
        let mut c = state_norms(&tr, None);
        c.series[0].points[0].1 = f64::NAN;
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["series"][0]["name"], "sequence 1");
        assert!(v["series"][0]["points"][0][1].is_null());
        assert_eq!(v["series"][0]["marker"], "circle");
    }

    #[test]
    fn ticks() {
        assert_eq!(int_ticks(1, 5, 10), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(int_ticks(1, 100, 6), [20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(
            int_ticks(0, 127, 10),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]
        );
        let (t, step) = nice_ticks(0.0, 1.0, 5);
        assert_eq!((t.len(), step), (6, 0.2));
        assert_eq!(tick_label(0.25, 0.25, 1.0), "0.25");
        assert_eq!(tick_label(2.0, 0.5, 3.0), "2.0");
        assert_eq!(tick_label(3e7, 1e7, 5e7), "3e7");
    }
}
