/*!
From command-line values to validated jobs: every file is read and every shape checked here, once, with
messages that name the file, and the environment is read here ([`Env`]) and passed down. After
[`cell_job`], an `lstm`/`gru` run cannot fail on bad input; `run` and `diagnose` use the shared loaders
([`check_outputs`] here, the loaders of [`crate::cli::load`]) and check what depends on the model themselves,
before computing.
*/

use crate::cell::{Activation, Kernels};
use crate::cli::args::{
    CellArgs, ColorArg, DisplayArgs, FormatArg, PlotArgs, PrecisionArg, ResetAfterArg,
};
use crate::engine::LayerSpec;
use crate::error::{Error, Result};
use crate::io::{self, RawArray};
use crate::render::DisplayOptions;
use crate::scaler::Scaler;
use crate::weights::{CellKind, CellWeights, DenseWeights, dense, load_arrays};
use ndarray::{Array2, Array3};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::load::{load_expected, load_initial_state, load_mask, load_targets, shape_input};

/// What the environment asks for, read once per process.
#[derive(Debug, Clone)]
pub struct Env {
    /// `RNNTRACE_KERNELS`: the best kernels a run may use.
    pub kernels: Kernels,
    /// The width tables and prose fit: `COLUMNS` when it is a positive number, else the width of the
    /// terminal stdout is, else [`DEFAULT_COLUMNS`].
    pub columns: usize,
    /// `RNNTRACE_REPORT_MAX_VALUES`: the most per-step values a `--report` embeds, or the usage error a
    /// bad value gives (only when a report is asked for: see [`report_job`]).
    pub report_max_values: std::result::Result<usize, String>,
}

/// The width output fits when neither `COLUMNS` nor a terminal says otherwise.
pub const DEFAULT_COLUMNS: usize = 100;

/// The narrowest width output is fitted to (narrower terminals get lines of this width).
const MIN_COLUMNS: usize = 40;

fn columns() -> usize {
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c > 0);
    let from_terminal = || {
        terminal_size::terminal_size_of(std::io::stdout())
            .map(|(terminal_size::Width(w), _)| w as usize)
            .filter(|&w| w > 0)
    };
    from_env
        .or_else(from_terminal)
        .unwrap_or(DEFAULT_COLUMNS)
        .max(MIN_COLUMNS)
}

impl Env {
    /// Reads `RNNTRACE_KERNELS`: `auto` (or unset or empty: the best this CPU has), `avx2`, `portable`;
    /// any other value is a usage error naming what was found.
    pub fn read() -> Result<Env> {
        let bad = |v: &dyn std::fmt::Debug| {
            Error::usage(format!(
                "RNNTRACE_KERNELS is {v:?}; expected auto, avx2 or portable"
            ))
        };
        let kernels = match std::env::var("RNNTRACE_KERNELS") {
            Err(std::env::VarError::NotPresent) => Kernels::Avx512,
            Ok(v) => match v.as_str() {
                "" | "auto" => Kernels::Avx512,
                "avx2" => Kernels::Avx2,
                "portable" => Kernels::Portable,
                other => return Err(bad(&other)),
            },
            Err(std::env::VarError::NotUnicode(v)) => return Err(bad(&v)),
        };
        let report_max_values = match std::env::var("RNNTRACE_REPORT_MAX_VALUES") {
            Err(std::env::VarError::NotPresent) => Ok(crate::render::report::MAX_VALUES),
            Ok(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| {
                    format!("RNNTRACE_REPORT_MAX_VALUES={v}: expected a positive number of values")
                }),
            Err(std::env::VarError::NotUnicode(v)) => Err(format!(
                "RNNTRACE_REPORT_MAX_VALUES is {v:?}; expected a positive number of values"
            )),
        };
        Ok(Env {
            kernels,
            report_max_values,
            columns: columns(),
        })
    }
}

/// `--report FILE.html`, validated: where it goes and what it holds (the title, sequences and names come
/// from the run).
#[derive(Debug, Clone)]
pub struct ReportJob {
    /// The page.
    pub path: PathBuf,
    /// `--report-steps`: the processing steps it holds (`None`: all that fit).
    pub steps: Option<std::ops::Range<usize>>,
    /// The most per-step values it embeds (`RNNTRACE_REPORT_MAX_VALUES`).
    pub max_values: usize,
    /// `--tokens`: token of each id (index → token; `None` where the vocabulary has no entry).
    pub tokens: Option<Vec<Option<String>>>,
}

/// Reads `--tokens vocab.json`: a list of tokens (index → token) or an object of token → index.
pub fn read_vocab(path: &Path) -> Result<Vec<Option<String>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(path, format!("cannot be read as text: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::input(
            path,
            format!("is not JSON ({e}); expected a list of tokens or an object token → index"),
        )
    })?;
    let bad = |what: String| {
        Error::input(
            path,
            format!(
                "{what}; expected a list of tokens (index → token) or an object token → index (Keras's tokenizer.word_index)"
            ),
        )
    };
    match v {
        serde_json::Value::Array(a) => a
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                serde_json::Value::String(s) => Ok(Some(s)),
                serde_json::Value::Null => Ok(None),
                other => Err(bad(format!("entry {i} is {other}, not a string"))),
            })
            .collect(),
        serde_json::Value::Object(o) => {
            let mut out: Vec<Option<String>> = Vec::new();
            for (tok, idx) in o {
                let i = idx.as_u64().filter(|&i| i < 1 << 24).ok_or_else(|| {
                    bad(format!("token {tok:?} maps to {idx}, not an index 0..2^24"))
                })? as usize;
                if out.len() <= i {
                    out.resize(i + 1, None);
                }
                if let Some(prev) = &out[i] {
                    return Err(bad(format!(
                        "index {i} is given to both {prev:?} and {tok:?}"
                    )));
                }
                out[i] = Some(tok);
            }
            Ok(out)
        }
        other => Err(bad(format!(
            "holds {}",
            match other {
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
    }
}

/// Validates `--report-steps` and `RNNTRACE_REPORT_MAX_VALUES` when a report is asked for (its path is
/// checked with the other outputs by [`check_outputs`]).
pub fn report_job(plots: &PlotArgs, env: &Env) -> Result<Option<ReportJob>> {
    let Some(path) = &plots.report else {
        return Ok(None);
    };
    let steps = match plots.report_steps.as_deref() {
        None => None,
        Some(s) => Some(report_steps(s)?),
    };
    let max_values = env.report_max_values.clone().map_err(Error::usage)?;
    let tokens = plots.tokens.as_deref().map(read_vocab).transpose()?;
    Ok(Some(ReportJob {
        path: path.clone(),
        steps,
        max_values,
        tokens,
    }))
}

/// `--report-steps A..B` (half-open; `A..=B` inclusive).
fn report_steps(s: &str) -> Result<std::ops::Range<usize>> {
    let bad = || {
        Error::usage(format!(
            "--report-steps '{s}': expected a range of processing steps like 100..600"
        ))
    };
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (b, inclusive) = match b.strip_prefix('=') {
        Some(b) => (b, true),
        None => (b, false),
    };
    let a: usize = a.trim().parse().map_err(|_| bad())?;
    let b: usize = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b.saturating_add(1) } else { b };
    if end <= a {
        return Err(Error::usage(format!(
            "--report-steps '{s}': the range is empty"
        )));
    }
    Ok(a..end)
}

/// A validated single-layer job, values in f64 (cast to the run precision later).
#[derive(Debug, Clone)]
pub struct CellJob {
    /// Validated layer weights.
    pub weights: CellWeights<f64>,
    /// Layer arguments.
    pub spec: LayerSpec,
    /// (sequences, timesteps, features), after --window.
    pub x: Array3<f64>,
    /// (sequences, timesteps), true = used; from --mask, or computed from --mask-value at run precision.
    pub mask: Option<Array2<bool>>,
    /// --mask-value.
    pub mask_value: Option<f64>,
    /// Initial states (sequences, units).
    pub h0: Option<Array2<f64>>,
    /// Initial cell state (LSTM).
    pub c0: Option<Array2<f64>>,
    /// Dense head and its activation.
    pub dense: Option<(DenseWeights<f64>, Activation)>,
    /// Expected output, already checked against the prediction shape.
    pub expected: Option<Expected>,
    /// True values per sequence, (sequences, outputs).
    pub targets: Option<Array2<f64>>,
    /// Window length, when the input was a series.
    pub window: Option<usize>,
    /// Run precision.
    pub precision: PrecisionArg,
    /// Where and how to write.
    pub output: OutputConfig,
    /// The best kernels the run may use (from [`Env`]).
    pub kernels: Kernels,
    /// Notes for stderr (e.g. integer arrays converted to floats).
    pub notes: Vec<String>,
    /// The input was read as a 3-D array without --time-major: a failed comparison suggests --time-major.
    pub time_major_hint: bool,
}

/// What `--expected` is compared against.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The array as read.
    pub array: RawArray,
    /// true: compared with every step's output (return_sequences); false: with the predictions.
    pub sequences: bool,
    /// Tolerances.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

/// Output settings shared by every command.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// stdout format.
    pub format: FormatArg,
    /// --trace target.
    pub trace: Option<PathBuf>,
    /// DisplayOptions settings.
    pub display: DisplayOptions,
    /// What to keep of every step.
    pub record: crate::trace::Record,
    /// Print timings on stderr.
    pub timings: bool,
    /// Chart targets.
    pub plots: PlotArgs,
    /// `--report`, validated.
    pub report: Option<ReportJob>,
}

/// Validates display flags for a run of `n_features` features.
pub fn display_options(d: &DisplayArgs, n_features: usize, env: &Env) -> Result<DisplayOptions> {
    let feature_names: Vec<String> = match &d.feature_names {
        None => Vec::new(),
        Some(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
    };
    if !feature_names.is_empty() && feature_names.len() != n_features {
        return Err(Error::usage(format!(
            "--feature-names gives {} names; the input has {n_features} features",
            feature_names.len()
        )));
    }
    let sequences = match d.sequences.as_deref() {
        None => None,
        Some(s) => Some(parse_ranges("sequences", s)?),
    };
    let steps = match (d.steps.as_deref(), d.max_steps) {
        (Some(s), _) => Some(parse_ranges("steps", s)?),
        (None, Some(0)) => return Err(Error::usage("--max-steps must be at least 1")),
        (None, Some(n)) => Some(std::iter::once(0..n).collect()),
        (None, None) => None,
    };
    let units = match d.units.as_deref() {
        None => None,
        Some(s) => match parse_ranges("units", s)?.as_slice() {
            [r] if r.end != usize::MAX => Some(r.clone()),
            _ => {
                return Err(Error::usage(format!(
                    "--units '{s}': expected one range like 8..16 (units 8 to 15) or 0..=3"
                )));
            }
        },
    };
    if d.max_units == 0 {
        return Err(Error::usage("--max-units must be at least 1"));
    }
    let color = match d.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    Ok(DisplayOptions {
        feature_names,
        sequences,
        max_units: d.max_units,
        steps,
        units,
        width: env.columns,
        show_pre: d.show_pre,
        color,
        quiet: d.quiet,
        output_names: Vec::new(),
        scaler: None,
    })
}

/// Parses `0,5,7`, `10..20` (half-open, as numpy and Rust), `3..=5` (inclusive) or `all` into ranges
/// (`all` is `0..usize::MAX`; clamped when used, so a huge range costs nothing). `flag` names the flag in
/// messages.
fn parse_ranges(flag: &str, s: &str) -> Result<Vec<std::ops::Range<usize>>> {
    let bad = || {
        Error::usage(format!(
            "--{flag} '{s}': expected a list like 0,5,7, a range like 10..20 (10 to 19) or 10..=20 (10 to 20), or all"
        ))
    };
    if s.trim() == "all" {
        return Ok(std::iter::once(0..usize::MAX).collect());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once("..") {
            let (b, inclusive) = match b.strip_prefix('=') {
                Some(b) => (b, true),
                None => (b, false),
            };
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            let end = if inclusive { b.saturating_add(1) } else { b };
            if end <= a {
                return Err(Error::usage(format!(
                    "--{flag} '{s}': the range {part} is empty (a..b stops before b; a..=b includes it)"
                )));
            }
            out.push(a..end);
        } else {
            let i: usize = part.parse().map_err(|_| bad())?;
            out.push(i..i.saturating_add(1));
        }
    }
    Ok(out)
}

/// An activation named on the command line by `--{flag}`.
pub fn activation(flag: &str, name: &str) -> Result<Activation> {
    Activation::parse(name).map_err(|e| Error::usage(format!("--{flag}: {e}")))
}

/// Builds a job for `kind` from the command line.
pub fn cell_job(kind: CellKind, a: &CellArgs, env: &Env) -> Result<CellJob> {
    let act = activation("activation", &a.convention.activation)?;
    let rec = activation("recurrent-activation", &a.convention.recurrent_activation)?;
    let dense_act = activation("dense-activation", &a.convention.dense_activation)?;
    if !kind.has_reset_after() && a.convention.reset_after != ResetAfterArg::Auto {
        return Err(Error::usage("--reset-after applies to GRU layers only"));
    }
    if a.dense.is_none() && a.convention.dense_activation != "linear" {
        return Err(Error::usage("--dense-activation needs --dense"));
    }
    if a.mask.is_some() && a.mask_value.is_some() {
        return Err(Error::usage("give --mask or --mask-value, not both"));
    }
    if !(a.check.atol() >= 0.0 && a.check.rtol() >= 0.0) {
        return Err(Error::usage(
            "--atol and --rtol must be non-negative numbers",
        ));
    }
    if a.check.expected.len() > 1 {
        return Err(Error::usage(
            "--expected is given more than once; a single layer has one output",
        ));
    }
    let inputs: Vec<&Path> = [
        Some(&a.weights),
        Some(&a.input),
        a.initial_state.as_ref(),
        a.mask.as_ref(),
        a.dense.as_ref(),
        a.check.expected.first(),
        a.check.targets.as_ref(),
        a.check.inverse_scale.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.as_path())
    .collect();
    check_outputs(&inputs, a.trace.as_deref(), &a.plots)?;
    let report = report_job(&a.plots, env)?;
    if let Some(t) = a.trace.as_deref() {
        let ext = t
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext != "json" && ext != "npz" {
            return Err(Error::usage(format!(
                "--trace {}: the file name must end in .json or .npz",
                t.display()
            )));
        }
    }

    let reset_after = a.convention.reset_after.reading();
    let full = load_arrays(&a.weights, &["kernel", "recurrent_kernel", "bias"])?;
    let src = crate::weights::pytorch::select_module(full.clone(), a.module.as_deref())?;
    let layout = a.layout.layout();
    let opts = crate::weights::ReadOptions {
        layout,
        layer: a.layer,
        reverse: a.reverse,
        reset_after,
    };
    let (weights, _) = crate::weights::read_cell(kind, &src, opts)?;
    let mut notes = crate::weights::pytorch::notes(&full, false);
    if a.dense.is_some() {
        notes.retain(|n| !n.contains("nn.Linear"));
    }
    if let Some(w) = weight_warning(&a.weights, &weights, a.precision == PrecisionArg::F32) {
        notes.push(format!("warning: {w}"));
    }
    for (name, arr) in &src.arrays {
        if arr.was_converted() {
            let what = if name.is_empty() {
                "an array".to_string()
            } else {
                format!("'{name}'")
            };
            notes.push(format!(
                "note: {}: {what} holds {} values; converted to floating point",
                a.weights.display(),
                arr.dtype
            ));
        }
    }

    let mut raw = io::read_npy(&a.input)?;
    if a.time_major {
        raw = raw.swap_leading_axes();
    }
    if raw.was_converted() {
        notes.push(format!(
            "note: {}: holds {} values; converted to floating point",
            a.input.display(),
            raw.dtype
        ));
    }
    let time_major_hint = raw.ndim() == 3 && !a.time_major && a.window.is_none();
    if raw.ndim() == 2 && a.window.is_none() {
        notes.push(format!(
            "note: {} is 2-D {}: read as one sequence of {} steps; for a series to cut into sliding windows, pass --window K",
            a.input.display(),
            raw.shape_str(),
            raw.shape[0]
        ));
    }
    let x = shape_input(raw, &a.input, a.window, &weights)?;
    let (batch, steps, _) = x.dim();
    check_plot_sequence(&a.plots, batch)?;

    let mask = match &a.mask {
        None => None,
        Some(p) => Some(load_mask(p, batch, steps)?),
    };
    let (h0, c0) = match &a.initial_state {
        None => (None, None),
        Some(_) if weights.projection.is_some() => {
            return Err(Error::usage(
                "--initial-state: not supported for a proj_size LSTM (h and c differ in width)",
            ));
        }
        Some(p) => load_initial_state(p, kind, weights.units, batch, a.convention.carry_state)?,
    };
    let dense = match &a.dense {
        None => None,
        Some(p) => Some((dense::load_head(p, &full, weights.h_units())?, dense_act)),
    };
    if let Some((d, _)) = &dense {
        let vals = d.kernel.iter().chain(d.bias.iter().flat_map(|b| b.iter()));
        if let Some(v) = vals.copied().find(|v| !v.is_finite()) {
            notes.push(format!(
                "warning: {}: the Dense head holds {v}; every prediction it touches will be {v}",
                a.dense
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
        }
    }
    let outputs = dense
        .as_ref()
        .map(|(d, _)| d.outputs())
        .unwrap_or(weights.h_units());
    let expected = match a.check.expected.first() {
        None => None,
        Some(p) => Some(load_expected(
            p,
            batch,
            steps,
            outputs,
            dense.is_none(),
            weights.h_units(),
            a.check.atol(),
            a.check.rtol(),
            a.time_major,
        )?),
    };
    let targets = match &a.check.targets {
        None => None,
        Some(p) => Some(load_targets(p, batch, outputs, a.window)?),
    };
    let mut display = display_options(&a.display, weights.features, env)?;
    display.check_sequences(batch)?;
    display.check_steps(steps)?;
    if let Some(names) = &a.check.output_names {
        display.output_names = names.split(',').map(|s| s.trim().to_string()).collect();
        if display.output_names.len() != outputs {
            return Err(Error::usage(format!(
                "--output-names gives {} names; the model has {outputs} outputs",
                display.output_names.len()
            )));
        }
    }
    if let Some(p) = &a.check.inverse_scale {
        display.scaler = Some(Scaler::load(p, outputs)?);
    }
    Ok(CellJob {
        spec: LayerSpec {
            name: a.name.clone().unwrap_or_else(|| kind.name().to_string()),
            activation: act,
            recurrent_activation: rec,
            go_backwards: a.convention.go_backwards || a.reverse,
            carry_state: a.convention.carry_state,
        },
        weights,
        x,
        mask,
        mask_value: a.mask_value,
        h0,
        c0,
        dense,
        expected,
        targets,
        window: a.window,
        time_major_hint,
        precision: a.precision,
        output: OutputConfig {
            format: a.format,
            trace: a.trace.clone(),
            display,
            record: a.record.record(a.record_pre),
            timings: a.timings,
            plots: a.plots.clone(),
            report,
        },
        kernels: env.kernels,
        notes,
    })
}

/// A warning naming the first weight that is NaN or infinite, or that float32 cannot hold, if any.
pub fn weight_warning(path: &Path, w: &CellWeights<f64>, f32_run: bool) -> Option<String> {
    let bad = |v: f64| !v.is_finite() || (f32_run && v.abs() > f32::MAX as f64);
    let what = |v: f64| {
        if v.is_finite() {
            format!("{v:e}, which overflows float32 to inf")
        } else {
            v.to_string()
        }
    };
    let gates = w.kind.gate_names();
    let place = |col: usize| {
        format!(
            "gate {}, unit {}",
            gates[(col / w.units).min(gates.len() - 1)],
            col % w.units
        )
    };
    for (name, m) in [
        ("kernel", &w.kernel),
        ("recurrent_kernel", &w.recurrent_kernel),
    ] {
        if let Some(((r, c), v)) = m.indexed_iter().find(|(_, v)| bad(**v)) {
            return Some(format!(
                "{}: {name}[{r}, {c}] is {} ({}); it propagates through the trace",
                path.display(),
                what(*v),
                place(c)
            ));
        }
    }
    for (name, b) in [("bias", &w.bias), ("recurrent bias", &w.recurrent_bias)] {
        if let Some((i, v)) = b
            .as_ref()
            .and_then(|b| b.indexed_iter().find(|(_, v)| bad(**v)))
        {
            return Some(format!(
                "{}: {name}[{i}] is {} ({}); it propagates through the trace",
                path.display(),
                what(*v),
                place(i)
            ));
        }
    }
    None
}

/// Checks every output a command will write, before any work: none is an input, no two share a path,
/// every folder exists and can be written, chart names end in .png or .svg, the report's in .html.
pub fn check_outputs(inputs: &[&Path], trace: Option<&Path>, plots: &PlotArgs) -> Result<()> {
    // The vocabulary is read too: no output may overwrite it.
    let mut with_vocab = inputs.to_vec();
    with_vocab.extend(plots.tokens.as_deref());
    let inputs = with_vocab.as_slice();
    let mut outs: Vec<(&str, &Path)> = Vec::new();
    outs.extend(trace.map(|p| ("--trace", p)));
    for (flag, p) in [
        ("--plot", &plots.plot),
        ("--plot-predictions", &plots.plot_predictions),
        ("--plot-gates", &plots.plot_gates),
    ] {
        if let Some(p) = p {
            crate::render::plot::image_format(flag, p)?;
            outs.push((flag, p));
        }
    }
    if let Some(r) = &plots.report {
        check_not_input(Some(r), inputs)?;
        let html = r
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
        if !html {
            return Err(Error::usage(format!(
                "--report {}: the file name must end in .html",
                r.display()
            )));
        }
        outs.push(("--report", r));
    }
    check_output_set(inputs, &outs)
}

/// Checks a command's outputs, each named by its flag: none is an input, no two name the same file (the
/// last would silently win), every folder exists and can be written.
pub fn check_output_set(inputs: &[&Path], outs: &[(&str, &Path)]) -> Result<()> {
    // The file a path will be: its folder resolved (links, `..`), then its name.
    let key = |p: &Path| {
        let dir = crate::io::temp::folder_of(p);
        std::fs::canonicalize(&dir)
            .unwrap_or(dir)
            .join(p.file_name().unwrap_or_default())
    };
    for (i, (flag, p)) in outs.iter().enumerate() {
        check_not_input(Some(p), inputs)?;
        if let Some((first, q)) = outs[..i].iter().find(|(_, q)| key(q) == key(p)) {
            return Err(Error::usage(format!(
                "{first} {} and {flag} {} are the same file; give each output its own path",
                q.display(),
                p.display()
            )));
        }
        crate::io::write::check_output(p)?;
    }
    Ok(())
}

/// Refuses a `--plot-sequence` outside the `n` sequences of the input when `--plot-gates` is asked for.
pub fn check_plot_sequence(plots: &PlotArgs, n: usize) -> Result<()> {
    if let Some(b) = plots.plot_sequence
        && b >= n
    {
        return Err(Error::usage(format!(
            "--plot-sequence {b} is out of range: the input holds {n} sequences, numbered 0 to {}",
            n.saturating_sub(1)
        )));
    }
    Ok(())
}

/// Refuses an output path that is one of the inputs.
pub fn check_not_input(out: Option<&Path>, inputs: &[&Path]) -> Result<()> {
    let Some(out) = out else { return Ok(()) };
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if let Some(o) = canon(out) {
        for i in inputs {
            if canon(i).as_ref() == Some(&o) {
                return Err(Error::usage(format!(
                    "{}: is an input of this run; refusing to write over it",
                    out.display()
                )));
            }
        }
    }
    Ok(())
}
