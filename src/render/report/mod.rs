/*!
The interactive HTML report (`--report FILE.html`): a plain data model built from a [`Trace`], and the
writer that embeds it with the page's script and styles into one self-contained file.

This module owns what the report holds ([`ReportData`]: layers, members named as in the `.npz` trace,
sequences, processing steps, units, inputs, predictions, unit statistics, an optional generic "explain"
section) and how much of a run it holds (the value limit, and the notes saying what was left out). It
depends on the trace and the comparison only, never on the command line; [`html`] turns it into bytes and
`assets/report/` holds the page.
*/

pub mod html;

use crate::cell::Real;
use crate::compare::Comparison;
use crate::trace::{LayerTrace, Trace};
use crate::weights::CellKind;
use ndarray::{Array2, s};
use serde::Serialize;
use std::ops::Range;

/// The most per-step values a report embeds by default: 2²⁵ = 33,554,432 (128 MiB as float32, about
/// 180 MB of base64), enough for one 10,000-step sequence of a 512-unit LSTM with every gate and state.
/// Past it, whole sequences are left out first, then the steps at the end of the one sequence kept.
pub const MAX_VALUES: usize = 1 << 25;

/// Raw little-endian numbers with their NumPy dtype (`<f4` or `<f8`) and shape (C order).
#[derive(Debug, Clone, Serialize)]
pub struct NumArray {
    /// `<f4` (float32) or `<f8` (float64): the precision the run computed in, stored exactly.
    pub dtype: &'static str,
    /// Shape, C order.
    pub shape: Vec<usize>,
    /// The bytes (not serialised with the metadata: embedded apart as base64).
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// How a member's colour scale is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Values in `[lo, hi]`, lo ≥ 0: one hue from low to high.
    Sequential,
    /// Values of both signs: centred on zero, `lo = −hi`.
    Diverging,
}

/// One recorded quantity of a layer (`gates/i`, `pre/f`, `state/h`, `output`, …).
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The name the `.npz` trace gives it.
    pub name: String,
    /// Colour scale.
    pub scale: Scale,
    /// Low end of the colour scale.
    pub lo: f64,
    /// High end of the colour scale.
    pub hi: f64,
    /// (sequences kept, steps kept, units), sequence-major so one sequence is one contiguous block.
    pub data: NumArray,
}

/// Per-unit statistics, over the embedded sequences and steps.
#[derive(Debug, Clone, Serialize)]
pub struct UnitStats {
    /// Fraction of the unit's gate values (the gates using `recurrent_activation`: i, f, o / z, r) below
    /// 0.1 or above 0.9 (Karpathy et al. 2015); for a SimpleRNN, of |h| above 0.9. `None` without gates.
    pub saturation: Option<f64>,
    /// Mean of the gate that keeps the old state (LSTM `f`, GRU `z`); the page shows the timescale
    /// −1/ln(mean) in steps. `None` for a SimpleRNN or without gates.
    pub keep: Option<f64>,
    /// Variance of `state/h` (population).
    pub variance: Option<f64>,
}

/// One recurrent layer.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// Layer name.
    pub name: String,
    /// `lstm`, `gru` or `simple_rnn`.
    pub cell: &'static str,
    /// Rows of its maps: the state size (for `NAME/projection`, a projected LSTM's `h` and output, the
    /// projection's width).
    pub units: usize,
    /// Processed last step first.
    pub go_backwards: bool,
    /// For every processing step (all of them, not only the embedded ones), the input row it read.
    pub input_index: Vec<usize>,
    /// Recorded members, gates first, then states, then the output.
    pub members: Vec<Member>,
    /// One entry per unit.
    pub unit_stats: Vec<UnitStats>,
    /// (sequences kept, steps kept) 0/1 bytes, 1 = masked step (state carried through); `None` without a
    /// mask.
    pub masked: Option<NumArray>,
}

/// Predictions and what they are checked against, for every sequence of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Predictions {
    /// Output names (y0, y1, … when not given).
    pub names: Vec<String>,
    /// Ours, (sequences, outputs) row-major.
    pub ours: Vec<Option<f64>>,
    /// The framework's, same layout.
    pub expected: Option<Vec<Option<f64>>>,
    /// True values, same layout.
    pub targets: Option<Vec<Option<f64>>>,
    /// The comparison's verdict.
    pub comparison: Option<Comparison>,
}

/// A generic table in the explain section.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Heading.
    pub title: String,
    /// Column headings.
    pub columns: Vec<String>,
    /// Cells, as text.
    pub rows: Vec<Vec<String>>,
}

/// Attributions of one layer's units (the unit list can be sorted by them).
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    /// Layer name.
    pub layer: String,
    /// One value per unit.
    pub values: Vec<Option<f64>>,
}

/// What `explain` adds: per-unit attributions and analyses, shown when present.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Explain {
    /// Per-layer unit attributions.
    pub attributions: Vec<Attribution>,
    /// Analyses as tables.
    pub analyses: Vec<Analysis>,
    /// A model with several inputs: each input's attributions, shown one at a time (an input selector);
    /// empty for one input, whose tables are in `analyses`.
    pub inputs: Vec<ExplainInput>,
    /// A model with several inputs: the initial-state terms (the model's, not an input's), shown once after
    /// the inputs for the page's selected sequence; for one input they are a table of `analyses`.
    pub initial_state: Option<InitialStateTerms>,
}

/// The gradient of the explained output with respect to every recurrent layer's initial state, per
/// sequence: one row per layer (direction, cell, shared layer's call) in model order.
#[derive(Debug, Clone, Serialize)]
pub struct InitialStateTerms {
    /// Heading; the page appends the sequence.
    pub title: String,
    /// Column headings: layer, |∂y/∂h0|, max |∂y/∂h0ᵢ| (and the same of c0 when a layer is an LSTM).
    pub columns: Vec<String>,
    /// Per sequence of [`ReportData::sequences`], the rows, as text.
    pub rows: Vec<Vec<Vec<String>>>,
}

/// One model input's attributions in the explain section.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainInput {
    /// The model's name for the input.
    pub name: String,
    /// `sequence`, `tokens` (ids, one attribution per token), `flat` (one step) or `mask` (read only as
    /// a mask: every attribution 0).
    pub kind: &'static str,
    /// Steps (a flat input: 1).
    pub steps: usize,
    /// Feature names (a token input: `token`).
    pub feature_names: Vec<String>,
    /// Per sequence of [`ReportData::sequences`]: each step's label (the token for a token input),
    /// `None` where the sequence's attributions are not embedded.
    pub step_labels: Vec<Option<Vec<String>>>,
    /// Per sequence of [`ReportData::sequences`]: the input, steps × features row-major (token ids for
    /// a token input), `None` where not embedded.
    pub values: Vec<Option<Vec<Option<f64>>>>,
    /// Per method: per sequence, steps × features row-major, `None` where not embedded.
    pub maps: Vec<ExplainMap>,
    /// Which sequences are embedded, when not all are (the size limit): a note for the page.
    pub note: Option<String>,
    /// The input's tables: per step, per feature, top contributions.
    pub analyses: Vec<Analysis>,
}

/// One method's attribution maps of an input.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainMap {
    /// `gradient`, `input_x_gradient` or `integrated_gradients`.
    pub method: &'static str,
    /// Per sequence of [`ReportData::sequences`], steps × features row-major; `None`: not embedded.
    pub values: Vec<Option<Vec<Option<f64>>>>,
}

/// Everything a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    /// Schema: `rnntrace-report/1`.
    pub format: &'static str,
    /// Heading.
    pub title: String,
    /// `float32` or `float64`.
    pub precision: &'static str,
    /// Sequences in the run.
    pub total_sequences: usize,
    /// Original indices of the embedded sequences.
    pub sequences: Vec<usize>,
    /// Processing steps in the run.
    pub total_steps: usize,
    /// The embedded processing steps.
    pub steps: Range<usize>,
    /// Feature names (x0, x1, … when not given).
    pub feature_names: Vec<String>,
    /// The model's input for the embedded sequences, (sequences kept, timesteps, features), input order.
    pub input: NumArray,
    /// Per sequence kept and input row, a token to show (token models); `None` otherwise.
    pub tokens: Option<Vec<Vec<String>>>,
    /// `--window K`, when the input was cut from a series.
    pub window: Option<usize>,
    /// Recurrent layers in order (a projected LSTM as two: its gates and `c`, then `NAME/projection`).
    pub layers: Vec<Layer>,
    /// Predictions and the verdict.
    pub predictions: Predictions,
    /// Attributions and analyses (from `explain`).
    pub explain: Option<Explain>,
    /// What was left out, and how to narrow the selection.
    pub notes: Vec<String>,
}

/// What to put in a report.
#[derive(Debug, Clone)]
pub struct Options {
    /// Heading.
    pub title: String,
    /// Sequences to embed, as ranges of indices (`None`: all, as far as the limit allows); indices past
    /// the run are ignored.
    pub sequences: Option<Vec<Range<usize>>>,
    /// Processing steps to embed (`None`: all); clamped to the run.
    pub steps: Option<Range<usize>>,
    /// Embed the pre-activations (`pre/<gate>`) when recorded.
    pub include_pre: bool,
    /// The most per-step values to embed ([`MAX_VALUES`]).
    pub max_values: usize,
    /// Feature names (empty: x0, x1, …).
    pub feature_names: Vec<String>,
    /// Output names (empty: y0, y1, …).
    pub output_names: Vec<String>,
    /// `--window`.
    pub window: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            title: String::new(),
            sequences: None,
            steps: None,
            include_pre: false,
            max_values: MAX_VALUES,
            feature_names: Vec::new(),
            output_names: Vec::new(),
            window: None,
        }
    }
}

/// What the run checks its predictions against.
#[derive(Debug, Clone, Default)]
pub struct Checks<'a> {
    /// The framework's output, (sequences, outputs).
    pub expected: Option<&'a Array2<f64>>,
    /// True values, (sequences, outputs).
    pub targets: Option<&'a Array2<f64>>,
    /// The verdict.
    pub comparison: Option<&'a Comparison>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The recorded members of a layer: (npz name, values (steps, sequences, units) for a gate block or a
/// state).
fn members_of<T: Real>(l: &LayerTrace<T>, include_pre: bool) -> Members<'_, T> {
    let names = l.kind.gate_names();
    let mut out = Vec::new();
    if let Some(g) = &l.gates {
        for (k, n) in names.iter().enumerate() {
            out.push((format!("gates/{n}"), MemberSource::Block(g, k)));
        }
    }
    if include_pre && let Some(p) = &l.pre {
        for (k, n) in names.iter().enumerate() {
            out.push((format!("pre/{n}"), MemberSource::Block(p, k)));
        }
    }
    if let Some(h) = &l.h {
        out.push(("state/h".into(), MemberSource::Whole(h)));
    }
    if let Some(c) = &l.c {
        out.push(("state/c".into(), MemberSource::Whole(c)));
    }
    if l.masked.iter().any(|&m| m)
        && let Some(o) = &l.out
    {
        out.push(("output".into(), MemberSource::Whole(o)));
    }
    out
}

/// Members by their `.npz` names.
type Members<'a, T> = Vec<(String, MemberSource<'a, T>)>;

enum MemberSource<'a, T> {
    /// Gate block `k` of a (steps, sequences, blocks·units) array.
    Block(&'a ndarray::Array3<T>, usize),
    /// A (steps, sequences, width) array: `units` wide, or a projected LSTM's `h` and output, as wide as
    /// its projection.
    Whole(&'a ndarray::Array3<T>),
}

impl<T> MemberSource<'_, T> {
    /// Values per step and sequence.
    fn width(&self, units: usize) -> usize {
        match self {
            MemberSource::Block(..) => units,
            MemberSource::Whole(a) => a.shape()[2],
        }
    }
}

/// A layer's members grouped by width, each group shown as one report layer: one group, except for a
/// projected LSTM (PyTorch `proj_size`), whose `h` and output (the projection's width) are shown as a
/// second layer `NAME/projection` beside the gates and `c` (the state's width), since every row of a
/// layer's maps is one of its units.
fn member_groups<T: Real>(
    l: &LayerTrace<T>,
    include_pre: bool,
) -> Vec<(String, usize, Members<'_, T>)> {
    let (state, projected): (Vec<_>, Vec<_>) = members_of(l, include_pre)
        .into_iter()
        .partition(|(_, m)| m.width(l.units) == l.units);
    let mut groups = vec![(l.name.clone(), l.units, state)];
    if let Some((_, m)) = projected.first() {
        let width = m.width(l.units);
        groups.push((format!("{}/projection", l.name), width, projected));
    } else if let Some(h) = l.h.as_ref().filter(|h| h.shape()[2] != l.units) {
        // Nothing recorded, but the projection is still a layer of its own.
        groups.push((format!("{}/projection", l.name), h.shape()[2], Vec::new()));
    } else if l.final_h.ncols() != l.units {
        groups.push((
            format!("{}/projection", l.name),
            l.final_h.ncols(),
            Vec::new(),
        ));
    }
    groups
}

/// Builds the report of `trace`. Sequences and steps outside the limit are left out, with a note.
pub fn build<T: Real>(trace: &Trace<T>, checks: &Checks<'_>, opts: &Options) -> ReportData {
    let first = &trace.layers[0];
    let n = first.sequences();
    // One step axis for the page: the longest layer's (inputs of several lengths give layers of several
    // lengths; a shorter layer's steps past its end are shown blank and hatched, with a note).
    let total_steps = trace.layers.iter().map(|l| l.steps()).max().unwrap_or(0);
    let wanted: Vec<usize> = match &opts.sequences {
        Some(s) => s
            .iter()
            .flat_map(|r| r.start.min(n)..r.end.min(n))
            .collect(),
        None => (0..n).collect(),
    };
    let steps = match &opts.steps {
        Some(r) => r.start.min(total_steps)..r.end.min(total_steps),
        None => 0..total_steps,
    };
    let per_step: usize = trace
        .layers
        .iter()
        .flat_map(|l| {
            members_of(l, opts.include_pre)
                .into_iter()
                .map(|(_, m)| m.width(l.units))
        })
        .sum::<usize>()
        .max(1);
    let per_seq = per_step * steps.len();
    let budget = opts.max_values.max(1);
    let mut notes = Vec::new();
    let limit_text = format!(
        "a report holds at most {} recorded values ({:.1} MiB as {})",
        group(budget),
        (budget * T::BYTES) as f64 / (1 << 20) as f64,
        T::NAME
    );
    let mut sequences = wanted.clone();
    let mut steps = steps;
    if per_seq > 0 && wanted.len() * per_seq > budget {
        let fit = budget / per_seq;
        if fit >= 1 {
            sequences.truncate(fit);
            let left: Vec<usize> = wanted[fit..].to_vec();
            notes.push(format!(
                "Left out {} of {} sequences ({}): {limit_text}. Narrow the selection with --sequences \
                 (e.g. --sequences {}) or a step range (--report-steps A..B).",
                left.len(),
                wanted.len(),
                ranges_text(&left),
                ranges_text(&left[..fit.min(left.len())]).replace(", ", ",")
            ));
        } else {
            sequences.truncate(1);
            let keep = (budget / per_step).max(1);
            let cut = steps.start + keep..steps.end;
            steps = steps.start..steps.start + keep;
            if wanted.len() > 1 {
                notes.push(format!(
                    "Left out {} of {} sequences ({}): {limit_text}.",
                    wanted.len() - 1,
                    wanted.len(),
                    ranges_text(&wanted[1..])
                ));
            }
            notes.push(format!(
                "Left out processing steps {}..{} of sequence {} ({} steps): {limit_text}. Narrow the \
                 selection with --report-steps (e.g. --report-steps {}..{}) or fewer units.",
                cut.start,
                cut.end,
                sequences[0],
                cut.len(),
                cut.start,
                (cut.start + keep).min(cut.end)
            ));
        }
    }
    let kept_steps = steps.clone();
    for l in trace.layers.iter().filter(|l| l.steps() < kept_steps.end) {
        notes.push(format!(
            "Layer '{}' runs {} step{}, fewer than the longest layer's {total_steps}: its steps {}..{} are \
             blank (hatched).",
            l.name,
            l.steps(),
            if l.steps() == 1 { "" } else { "s" },
            l.steps().max(kept_steps.start),
            kept_steps.end
        ));
    }
    let layers = trace
        .layers
        .iter()
        .flat_map(|l| {
            member_groups(l, opts.include_pre)
                .into_iter()
                .map(|(name, width, sources)| {
                    build_layer(l, name, width, sources, &sequences, &kept_steps)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // The model's input: the first layer's.
    let f = first.features;
    let timesteps = first.x.shape()[1];
    let mut input = Vec::with_capacity(sequences.len() * timesteps * f * T::BYTES);
    for &b in &sequences {
        T::extend_le(
            first.x.index_axis(ndarray::Axis(0), b).iter().copied(),
            &mut input,
        );
    }
    let feature_names = if opts.feature_names.len() == f {
        opts.feature_names.clone()
    } else {
        (0..f).map(|j| format!("x{j}")).collect()
    };
    let p = &trace.predictions;
    let outputs = p.ncols();
    let names = if opts.output_names.len() == outputs {
        opts.output_names.clone()
    } else {
        (0..outputs).map(|j| format!("y{j}")).collect()
    };
    let flat = |a: &Array2<f64>| a.iter().map(|&v| finite(v)).collect::<Vec<_>>();
    let same_shape = |a: &&Array2<f64>| a.dim() == p.dim();
    ReportData {
        format: "rnntrace-report/1",
        title: opts.title.clone(),
        precision: T::NAME,
        total_sequences: n,
        sequences,
        total_steps,
        steps: kept_steps,
        feature_names,
        input: NumArray {
            dtype: T::DESCR,
            shape: vec![
                input.len() / (timesteps * f * T::BYTES).max(1),
                timesteps,
                f,
            ],
            bytes: input,
        },
        tokens: None,
        window: opts.window,
        layers,
        predictions: Predictions {
            names,
            ours: p.iter().map(|v| finite(v.to_f())).collect(),
            expected: checks.expected.filter(same_shape).map(flat),
            targets: checks.targets.filter(same_shape).map(flat),
            comparison: checks.comparison.cloned(),
        },
        explain: None,
        notes,
    }
}

/// One report layer: `sources` (all `u` wide) of layer `l`, named `name`.
fn build_layer<T: Real>(
    l: &LayerTrace<T>,
    name: String,
    u: usize,
    sources: Members<'_, T>,
    seqs: &[usize],
    steps: &Range<usize>,
) -> Layer {
    // The steps of `steps` this layer has (fewer than the page's when its input is shorter).
    let own = steps.start.min(l.steps())..steps.end.min(l.steps());
    let blank = steps.len() - own.len();
    // Each member's values in (sequence, step, unit) order over the layer's own steps, copied a unit row
    // at a time.
    let values: Vec<Vec<T>> = sources
        .iter()
        .map(|(_, src)| {
            let mut v = Vec::with_capacity(seqs.len() * own.len() * u);
            for &b in seqs {
                for t in own.clone() {
                    let row = match src {
                        MemberSource::Block(a, k) => a.slice(s![t, b, k * u..(k + 1) * u]),
                        MemberSource::Whole(a) => a.slice(s![t, b, ..]),
                    };
                    v.extend(row.iter().copied());
                }
            }
            v
        })
        .collect();
    let mut members = Vec::new();
    for ((name, _), v) in sources.iter().zip(&values) {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for f in v.iter().map(|x| x.to_f()).filter(|f| f.is_finite()) {
            lo = lo.min(f);
            hi = hi.max(f);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 0.0);
        }
        let (scale, lo, hi) = if lo >= 0.0 {
            (Scale::Sequential, 0.0, if hi <= 1.0 { 1.0 } else { hi })
        } else {
            let m = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
            (Scale::Diverging, -m, m)
        };
        // The page's steps past the layer's end are NaN: drawn blank and hatched (`masked`); the statistics
        // above and below read the layer's own steps only.
        let mut bytes = Vec::with_capacity(seqs.len() * steps.len() * u * T::BYTES);
        for k in 0..seqs.len() {
            let seq = &v[k * own.len() * u..(k + 1) * own.len() * u];
            T::extend_le(seq.iter().copied(), &mut bytes);
            T::extend_le(std::iter::repeat_n(T::lit(f64::NAN), blank * u), &mut bytes);
        }
        members.push(Member {
            name: name.clone(),
            scale,
            lo,
            hi,
            data: NumArray {
                dtype: T::DESCR,
                shape: vec![seqs.len(), steps.len(), u],
                bytes,
            },
        });
    }
    let has_mask = l.masked.iter().any(|&m| m) && l.masked.nrows() == l.steps();
    let masked = (has_mask || blank > 0).then(|| {
        let bytes: Vec<u8> = seqs
            .iter()
            .flat_map(|&b| steps.clone().map(move |t| (t, b)))
            .map(|(t, b)| (t >= l.steps() || (has_mask && l.masked[[t, b]])) as u8)
            .collect();
        NumArray {
            dtype: "|u1",
            shape: vec![seqs.len(), steps.len()],
            bytes,
        }
    });
    let names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
    Layer {
        name,
        cell: l.kind.name(),
        units: u,
        go_backwards: l.go_backwards,
        input_index: l.input_index.clone(),
        unit_stats: unit_stats(l.kind, u, &names, &values),
        members,
        masked,
    }
}

/// Per-unit statistics from the members' values (each in (sequence, step, unit) order).
fn unit_stats<T: Real>(
    kind: CellKind,
    u: usize,
    names: &[&str],
    values: &[Vec<T>],
) -> Vec<UnitStats> {
    let find = |n: &str| names.iter().position(|m| *m == n).map(|i| &values[i]);
    // Gates computed with recurrent_activation (range [0, 1]), and the one that keeps the old state.
    let (sat_gates, keep_gate, tanh_sat): (&[&str], Option<&str>, Option<&str>) = match kind {
        CellKind::Lstm => (&["gates/i", "gates/f", "gates/o"], Some("gates/f"), None),
        CellKind::Gru => (&["gates/z", "gates/r"], Some("gates/z"), None),
        CellKind::SimpleRnn => (&[], None, Some("state/h")),
    };
    // Accumulated over all cells at once, unit by unit in the innermost loop.
    let mut sat = vec![(0usize, 0usize); u];
    for g in sat_gates.iter().filter_map(|g| find(g)) {
        for (i, v) in g.iter().enumerate() {
            let s = &mut sat[i % u];
            s.1 += 1;
            if !(0.1..=0.9).contains(&v.to_f()) {
                s.0 += 1;
            }
        }
    }
    if let Some(h) = tanh_sat.and_then(find) {
        for (i, v) in h.iter().enumerate() {
            let s = &mut sat[i % u];
            s.1 += 1;
            if v.to_f().abs() > 0.9 {
                s.0 += 1;
            }
        }
    }
    let means = |a: &Vec<T>| {
        let mut sum = vec![0.0f64; u];
        for (i, v) in a.iter().enumerate() {
            sum[i % u] += v.to_f();
        }
        let n = (a.len() / u.max(1)).max(1) as f64;
        sum.into_iter().map(|s| s / n).collect::<Vec<_>>()
    };
    let keep = keep_gate
        .and_then(find)
        .filter(|a| !a.is_empty())
        .map(means);
    let variance = find("state/h").filter(|a| !a.is_empty()).map(|h| {
        let m = means(h);
        let mut ss = vec![0.0f64; u];
        for (i, v) in h.iter().enumerate() {
            let d = v.to_f() - m[i % u];
            ss[i % u] += d * d;
        }
        let n = (h.len() / u.max(1)).max(1) as f64;
        ss.into_iter().map(|s| s / n).collect::<Vec<_>>()
    });
    (0..u)
        .map(|j| UnitStats {
            saturation: (sat[j].1 > 0).then(|| sat[j].0 as f64 / sat[j].1 as f64),
            keep: keep.as_ref().and_then(|k| finite(k[j])),
            variance: variance.as_ref().and_then(|v| finite(v[j])),
        })
        .collect()
}

/// `12,345,678`.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `3..7, 9` for sorted indices (ranges half-open, as `--sequences` takes them).
fn ranges_text(v: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            v[i].to_string()
        } else {
            format!("{}..{}", v[i], v[j] + 1)
        });
        i = j + 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_half_open_like_the_sequences_flag() {
        assert_eq!(ranges_text(&[3, 4, 5, 9, 11, 12]), "3..6, 9, 11..13");
        assert_eq!(group(16777216), "16,777,216");
    }
}
