/*!
From command-line values to a validated job: every file is read and every shape checked here, once, with
messages that name the file. After this step nothing can fail on bad input.
*/

use crate::cell::Activation;
use crate::cli::{
    CellArgs, ColorArg, DisplayArgs, FormatArg, LayoutArg, PrecisionArg, ResetAfterArg,
};
use crate::engine::LayerSpec;
use crate::error::{Error, Result, shape_str};
use crate::io::{self, RawArray};
use crate::scaler::Scaler;
use crate::weights::keras::ResetAfter;
use crate::weights::{CellKind, CellWeights, DenseWeights, dense, load_arrays};
use ndarray::{Array2, Array3};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
    /// Notes for stderr (e.g. integer arrays converted to floats).
    pub notes: Vec<String>,
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
    /// Display settings.
    pub display: Display,
    /// What to keep of every step.
    pub record: crate::trace::Record,
    /// Print timings on stderr.
    pub timings: bool,
    /// Chart targets.
    pub plots: crate::cli::PlotArgs,
}

/// Validated display settings.
#[derive(Debug, Clone)]
pub struct Display {
    /// Feature names (empty: x0, x1, …).
    pub feature_names: Vec<String>,
    /// Which sequences get per-step tables (`None`: the first 3).
    pub sequences: Option<Vec<std::ops::Range<usize>>>,
    /// Max unit columns.
    pub max_units: usize,
    /// Max steps per sequence in per-step tables.
    pub max_steps: usize,
    /// Colour on.
    pub color: bool,
    /// Only errors and the verdict.
    pub quiet: bool,
    /// Names of the outputs (empty: y0, y1, …).
    pub output_names: Vec<String>,
    /// Maps predictions back to original units.
    pub scaler: Option<Scaler>,
}

impl Display {
    /// Validates display flags for a run of `n_features` features.
    pub fn from_args(d: &DisplayArgs, n_features: usize) -> Result<Display> {
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
            Some(s) => Some(parse_sequences(s)?),
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
        Ok(Display {
            feature_names,
            sequences,
            max_units: d.max_units,
            max_steps: d.max_steps.max(1),
            color,
            quiet: d.quiet,
            output_names: Vec::new(),
            scaler: None,
        })
    }
}

/// Parses `0,5,7`, `10..20`, `3..=5` or `all` into ranges (`all` is `0..usize::MAX`; clamped to the batch
/// when used, so a huge range costs nothing).
fn parse_sequences(s: &str) -> Result<Vec<std::ops::Range<usize>>> {
    let bad = || {
        Error::usage(format!(
            "--sequences '{s}': expected a list like 0,5,7, a range like 10..20, or all"
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
                    "--sequences '{s}': the range {part} is empty"
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

impl Display {
    /// Checks that `--sequences` names at least one of `n` sequences.
    pub fn check_sequences(&self, n: usize) -> Result<()> {
        match &self.sequences {
            Some(ranges) if ranges.iter().all(|r| r.start >= n) => Err(Error::usage(format!(
                "--sequences: the input holds {n} sequences (0..{}); none of the ones asked for exists",
                n.saturating_sub(1)
            ))),
            _ => Ok(()),
        }
    }
}

fn activation(flag: &str, name: &str) -> Result<Activation> {
    Activation::parse(name).map_err(|e| Error::usage(format!("--{flag}: {e}")))
}

/// Builds a job for `kind` from the command line.
pub fn cell_job(kind: CellKind, a: &CellArgs) -> Result<CellJob> {
    let act = activation("activation", &a.activation)?;
    let rec = activation("recurrent-activation", &a.recurrent_activation)?;
    let dense_act = activation("dense-activation", &a.dense_activation)?;
    if kind == CellKind::Lstm && a.reset_after != ResetAfterArg::Auto {
        return Err(Error::usage("--reset-after applies to GRU layers only"));
    }
    if a.dense.is_none() && a.dense_activation != "linear" {
        return Err(Error::usage("--dense-activation needs --dense"));
    }
    if a.mask.is_some() && a.mask_value.is_some() {
        return Err(Error::usage("give --mask or --mask-value, not both"));
    }
    if !(a.check.atol >= 0.0 && a.check.rtol >= 0.0) {
        return Err(Error::usage(
            "--atol and --rtol must be non-negative numbers",
        ));
    }
    let inputs: Vec<&Path> = [
        Some(&a.weights),
        Some(&a.input),
        a.initial_state.as_ref(),
        a.mask.as_ref(),
        a.dense.as_ref(),
        a.check.expected.as_ref(),
        a.check.targets.as_ref(),
        a.check.inverse_scale.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.as_path())
    .collect();
    check_outputs(&inputs, a.trace.as_deref(), &a.plots)?;
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

    let reset_after = match a.reset_after {
        ResetAfterArg::Auto => ResetAfter::Auto,
        ResetAfterArg::True => ResetAfter::True,
        ResetAfterArg::False => ResetAfter::False,
    };
    let src = load_arrays(&a.weights, &["kernel", "recurrent_kernel", "bias"])?;
    let layout = match a.layout {
        LayoutArg::Auto => None,
        LayoutArg::Keras => Some(crate::weights::Layout::Keras),
        LayoutArg::Pytorch => Some(crate::weights::Layout::Pytorch),
        LayoutArg::Onnx => Some(crate::weights::Layout::Onnx),
    };
    let opts = crate::weights::ReadOptions {
        layout,
        layer: a.layer,
        reverse: a.reverse,
        reset_after,
    };
    let (weights, _) = crate::weights::read_cell(kind, &src, opts)?;
    let mut notes = Vec::new();
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

    let raw = io::read_npy(&a.input)?;
    if raw.was_converted() {
        notes.push(format!(
            "note: {}: holds {} values; converted to floating point",
            a.input.display(),
            raw.dtype
        ));
    }
    let x = shape_input(&raw, &a.input, a.window, &weights)?;
    let (batch, steps, _) = x.dim();
    if a.plots.plot_gates.is_some() && a.plots.plot_sequence >= batch {
        return Err(Error::usage(format!(
            "--plot-sequence {} is out of range: the input holds {batch} sequences (0..{})",
            a.plots.plot_sequence,
            batch - 1
        )));
    }

    let mask = match &a.mask {
        None => None,
        Some(p) => Some(load_mask(p, batch, steps)?),
    };
    let (h0, c0) = match &a.initial_state {
        None => (None, None),
        Some(p) => load_initial_state(p, kind, weights.units, batch, a.carry_state)?,
    };
    let dense = match &a.dense {
        None => None,
        Some(p) => Some((dense::load(p, weights.units)?, dense_act)),
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
        .unwrap_or(weights.units);
    let expected = match &a.check.expected {
        None => None,
        Some(p) => Some(load_expected(
            p,
            batch,
            steps,
            outputs,
            dense.is_none(),
            weights.units,
            a.check.atol,
            a.check.rtol,
        )?),
    };
    let targets = match &a.check.targets {
        None => None,
        Some(p) => Some(load_targets(p, batch, outputs, a.window)?),
    };
    let mut display = Display::from_args(&a.display, weights.features)?;
    display.check_sequences(batch)?;
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
            go_backwards: a.go_backwards || a.reverse,
            carry_state: a.carry_state,
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
        precision: a.precision,
        output: OutputConfig {
            format: a.format,
            trace: a.trace.clone(),
            display,
            record: match a.record {
                crate::cli::RecordArg::All if a.record_pre => crate::trace::Record::ALL,
                crate::cli::RecordArg::All => crate::trace::Record::GATES,
                crate::cli::RecordArg::States => crate::trace::Record::STATES,
                crate::cli::RecordArg::None => crate::trace::Record::NONE,
            },
            timings: a.timings,
            plots: a.plots.clone(),
        },
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

/// Checks every output a command will write, before any work: none is an input, every folder exists,
/// chart names end in .png or .svg.
pub fn check_outputs(
    inputs: &[&Path],
    trace: Option<&Path>,
    plots: &crate::cli::PlotArgs,
) -> Result<()> {
    for out in [
        trace,
        plots.plot.as_deref(),
        plots.plot_predictions.as_deref(),
        plots.plot_gates.as_deref(),
    ] {
        check_not_input(out, inputs)?;
        if let Some(p) = out {
            crate::io::write::check_output(p)?;
        }
    }
    for (flag, p) in [
        ("--plot", &plots.plot),
        ("--plot-predictions", &plots.plot_predictions),
        ("--plot-gates", &plots.plot_gates),
    ] {
        if let Some(p) = p {
            crate::render::plot::image_format(flag, p)?;
        }
    }
    if let Some(r) = plots.report.as_deref() {
        check_not_input(Some(r), inputs)?;
        crate::io::write::check_output(r)?;
        if !r
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
        {
            return Err(Error::usage(format!(
                "--report {}: the file name must end in .html",
                r.display()
            )));
        }
        let others = [
            ("--trace", trace),
            ("--plot", plots.plot.as_deref()),
            ("--plot-predictions", plots.plot_predictions.as_deref()),
            ("--plot-gates", plots.plot_gates.as_deref()),
        ];
        for (flag, o) in others {
            if o.is_some_and(|o| same_file(o, r)) {
                return Err(Error::usage(format!(
                    "--report {} is also the {flag} output; give each output its own file",
                    r.display()
                )));
            }
        }
        report_steps(plots)?;
        report_max_values()?;
    }
    Ok(())
}

/// `RNNTRACE_REPORT_MAX_VALUES`, or the report's default limit.
fn report_max_values() -> Result<usize> {
    match std::env::var("RNNTRACE_REPORT_MAX_VALUES") {
        Err(_) => Ok(crate::render::report::MAX_VALUES),
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| {
                Error::usage(format!(
                    "RNNTRACE_REPORT_MAX_VALUES={v}: expected a positive number of values"
                ))
            }),
    }
}

/// True when two output paths name the same file (whether or not it exists yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::canonicalize(&dir)
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    a == b || (norm(a).is_some() && norm(a) == norm(b))
}

/// `--report-steps A..B` (half-open; `A..=B` inclusive), validated.
pub fn report_steps(plots: &crate::cli::PlotArgs) -> Result<Option<std::ops::Range<usize>>> {
    let Some(s) = plots.report_steps.as_deref() else {
        return Ok(None);
    };
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
    Ok(Some(a..end))
}

/// The report's options from the output flags of a run.
pub fn report_options(
    plots: &crate::cli::PlotArgs,
    display: &Display,
    title: String,
    window: Option<usize>,
    include_pre: bool,
) -> Result<crate::render::report::Options> {
    Ok(crate::render::report::Options {
        title,
        sequences: display.sequences.clone(),
        steps: report_steps(plots)?,
        include_pre,
        feature_names: display.feature_names.clone(),
        output_names: display.output_names.clone(),
        window,
        max_values: report_max_values()?,
    })
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

fn shape_input(
    raw: &RawArray,
    path: &Path,
    window: Option<usize>,
    w: &CellWeights<f64>,
) -> Result<Array3<f64>> {
    let expects = format!(
        "the kernel expects {} (kernel {})",
        w.features,
        shape_str(&[w.kernel.nrows(), w.kernel.ncols()])
    );
    series_input(raw, path, window, w.features, &expects)
}

/// The most values `--window` may produce (2 GiB of f64).
pub const MAX_WINDOW_VALUES: usize = 1 << 28;

/// Shapes an input array into (sequences, timesteps, features): 3-D as is, 2-D as one sequence, or a 2-D
/// series cut into windows of `window` rows. `expects` completes "has N features per step; …".
pub fn series_input(
    raw: &RawArray,
    path: &Path,
    window: Option<usize>,
    features: usize,
    expects: &str,
) -> Result<Array3<f64>> {
    let x = match (raw.ndim(), window) {
        (2, Some(k)) => {
            let (rows, f) = (raw.shape[0], raw.shape[1]);
            if k == 0 {
                return Err(Error::usage("--window must be at least 1"));
            }
            if rows <= k {
                return Err(Error::input(
                    path,
                    format!(
                        "has {rows} rows; --window {k} needs more than {k} (each window predicts the row after it)"
                    ),
                ));
            }
            let n = rows - k;
            // Windows overlap, so the cut series can be far larger than the file: refuse what would not fit.
            let cells = n
                .checked_mul(k)
                .and_then(|v| v.checked_mul(f))
                .unwrap_or(usize::MAX);
            if cells > MAX_WINDOW_VALUES {
                return Err(Error::input(
                    path,
                    format!(
                        "--window {k} over {rows} rows makes {n} windows × {k} rows × {f} features = {cells} values, more than the {MAX_WINDOW_VALUES} rnntrace holds at once; use a shorter window or cut the windows beforehand"
                    ),
                ));
            }
            let mut x = Array3::zeros((n, k, f));
            for i in 0..n {
                for t in 0..k {
                    for j in 0..f {
                        x[[i, t, j]] = raw.data[(i + t) * f + j];
                    }
                }
            }
            x
        }
        (_, Some(k)) => {
            return Err(Error::input(
                path,
                format!(
                    "has shape {}; --window {k} needs a 2-D series (rows, features)",
                    raw.shape_str()
                ),
            ));
        }
        (2, None) => Array3::from_shape_vec((1, raw.shape[0], raw.shape[1]), raw.data.clone())
            .expect("2-D shape"),
        (3, None) => {
            Array3::from_shape_vec((raw.shape[0], raw.shape[1], raw.shape[2]), raw.data.clone())
                .expect("3-D shape")
        }
        _ => {
            return Err(Error::input(
                path,
                format!(
                    "has shape {}; expected (sequences, timesteps, features) or (timesteps, features)",
                    raw.shape_str()
                ),
            ));
        }
    };
    let (b, t, f) = x.dim();
    if b == 0 {
        return Err(Error::input(
            path,
            format!("has shape {}: it holds no sequences", raw.shape_str()),
        ));
    }
    if t == 0 {
        return Err(Error::input(
            path,
            format!("has shape {}: sequences have 0 timesteps", raw.shape_str()),
        ));
    }
    if f != features {
        return Err(Error::input(
            path,
            format!(
                "has {f} features per step (shape {}); {expects}",
                raw.shape_str()
            ),
        ));
    }
    Ok(x)
}

fn load_mask(path: &Path, batch: usize, steps: usize) -> Result<Array2<bool>> {
    let raw = io::read_npy(path)?;
    let shape = match raw.ndim() {
        2 => (raw.shape[0], raw.shape[1]),
        1 if batch == 1 => (1, raw.shape[0]),
        _ => (usize::MAX, usize::MAX),
    };
    if shape != (batch, steps) {
        return Err(Error::input(
            path,
            format!(
                "mask has shape {}; expected ({batch}, {steps}) (sequences, timesteps)",
                raw.shape_str()
            ),
        ));
    }
    if let Some(v) = raw.data.iter().find(|v| **v != 0.0 && **v != 1.0) {
        return Err(Error::input(
            path,
            format!("mask holds {v}; expected booleans or 0/1"),
        ));
    }
    Ok(
        Array2::from_shape_vec(shape, raw.data.iter().map(|v| *v != 0.0).collect())
            .expect("shape checked"),
    )
}

/// Initial (h, c), each (sequences, units).
type InitialState = (Option<Array2<f64>>, Option<Array2<f64>>);

fn load_initial_state(
    path: &Path,
    kind: CellKind,
    units: usize,
    batch: usize,
    carry: bool,
) -> Result<InitialState> {
    let src = load_arrays(path, &["h", "c"])?;
    let get = |name: &str, pos: usize| -> Option<&RawArray> {
        if src.positional {
            src.arrays.get(pos).map(|(_, a)| a)
        } else {
            src.get(name)
        }
    };
    let expand = |name: &str, a: &RawArray| -> Result<Array2<f64>> {
        match a.shape.as_slice() {
            [u] if *u == units => Ok(Array2::from_shape_fn((batch, units), |(_, j)| a.data[j])),
            [1, u] if *u == units => Ok(Array2::from_shape_fn((batch, units), |(_, j)| a.data[j])),
            [b, u] if *b == batch && *u == units && !carry => {
                Ok(Array2::from_shape_vec((batch, units), a.data.clone()).expect("shape checked"))
            }
            _ => Err(src.error(format!(
                "initial state '{name}' has shape {}; expected {}({units},)",
                a.shape_str(),
                if carry {
                    String::new()
                } else {
                    format!("({batch}, {units}) or ")
                }
            ))),
        }
    };
    let allowed = if kind == CellKind::Lstm { 2 } else { 1 };
    if src.positional && src.arrays.len() > allowed {
        return Err(src.error(format!(
            "holds {} arrays; an initial state is h{}",
            src.arrays.len(),
            if allowed == 2 { " and c" } else { "" }
        )));
    }
    if let Some((name, _)) = src
        .arrays
        .iter()
        .find(|(n, _)| !src.positional && n != "h" && n != "c")
    {
        return Err(src.error(format!(
            "holds an array named '{name}'; an initial state holds h (and c for an LSTM)"
        )));
    }
    let h = get("h", 0)
        .ok_or_else(|| src.error(format!("needs an array named h; found: {}", src.names())))?;
    let h = expand("h", h)?;
    let c = match kind {
        CellKind::Lstm => {
            let c = get("c", 1).ok_or_else(|| {
                src.error(format!(
                    "an LSTM needs arrays h and c; found: {}",
                    src.names()
                ))
            })?;
            Some(expand("c", c)?)
        }
        CellKind::Gru | CellKind::SimpleRnn => {
            if get("c", 1).is_some() {
                return Err(src.error("holds a cell state c, but a GRU has only h"));
            }
            None
        }
    };
    Ok((Some(h), c))
}

#[allow(clippy::too_many_arguments)]
fn load_expected(
    path: &Path,
    batch: usize,
    steps: usize,
    outputs: usize,
    no_dense: bool,
    units: usize,
    atol: f64,
    rtol: f64,
) -> Result<Expected> {
    let raw = io::read_npy(path)?;
    let s = raw.shape.as_slice();
    let per_prediction =
        s == [batch, outputs] || (outputs == 1 && s == [batch]) || (batch == 1 && s == [outputs]);
    let per_step = no_dense && s == [batch, steps, units];
    if !per_prediction && !per_step {
        let also = if no_dense {
            format!(", or ({batch}, {steps}, {units}) for return_sequences output")
        } else {
            String::new()
        };
        return Err(Error::input(
            path,
            format!(
                "expected output has shape {}; the predictions have shape ({batch}, {outputs}){also}",
                raw.shape_str()
            ),
        ));
    }
    Ok(Expected {
        array: raw,
        sequences: per_step,
        atol,
        rtol,
    })
}

pub(crate) fn load_targets(
    path: &Path,
    batch: usize,
    outputs: usize,
    window: Option<usize>,
) -> Result<Array2<f64>> {
    let raw = io::read_npy(path)?;
    let (rows, width) = match raw.shape.as_slice() {
        [n] => (*n, 1),
        [n, w] => (*n, *w),
        _ => (usize::MAX, 0),
    };
    if width != outputs {
        return Err(Error::input(
            path,
            format!(
                "targets have shape {}; expected {} value(s) per sequence",
                raw.shape_str(),
                outputs
            ),
        ));
    }
    let offset = match window {
        Some(k) if rows == batch + k => k,
        _ if rows == batch => 0,
        Some(k) => {
            return Err(Error::input(
                path,
                format!(
                    "targets have {rows} rows; expected {} (the whole series) or {batch} (one per window)",
                    batch + k
                ),
            ));
        }
        None => {
            return Err(Error::input(
                path,
                format!("targets have {rows} rows; expected {batch}, one per sequence"),
            ));
        }
    };
    Ok(Array2::from_shape_fn((batch, width), |(i, j)| {
        raw.data[(i + offset) * width + j]
    }))
}

/// For `diagnose`, whose readings of the weights are validated by [`crate::weights::convention`]: the input
/// (after `--window`) and `--expected`, read and checked exactly as [`cell_job`] does for `weights`.
#[allow(clippy::too_many_arguments)]
pub fn load_data(
    input: &Path,
    window: Option<usize>,
    weights: &CellWeights<f64>,
    expected: &Path,
    outputs: usize,
    no_dense: bool,
    atol: f64,
    rtol: f64,
) -> Result<(Array3<f64>, Expected)> {
    let x = shape_input(&io::read_npy(input)?, input, window, weights)?;
    let (batch, steps, _) = x.dim();
    let e = load_expected(
        expected,
        batch,
        steps,
        outputs,
        no_dense,
        weights.units,
        atol,
        rtol,
    )?;
    Ok((x, e))
}
