/*!
The one writer every command hands its results to: the JSON trace file, the charts, the HTML report, stdout
(tables or JSON), warnings and progress on stderr, and the verdict as an [`Outcome`]. Commands compute and validate; they
write through here (the streamed `.npz` trace is the one exception: it is written block by block while the
engine runs, by [`crate::render::npz`]).
*/

use crate::cell::Real;
use crate::cli::args::{FormatArg, PlotArgs};
use crate::compare::Comparison;
use crate::error::{Error, Result};
use crate::io::write::atomic_write;
use crate::render::{self, Report, plot};
use crate::trace::Trace;
use ndarray::{Array2, Array3};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How a successful run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything ran; any comparison passed.
    Success,
    /// Everything ran, but `--expected` found values outside tolerance.
    Mismatch,
}

impl Outcome {
    /// The verdict of a comparison (none: success).
    pub fn of(comparison: Option<&crate::compare::Comparison>) -> Outcome {
        match comparison {
            Some(c) if !c.passed => Outcome::Mismatch,
            _ => Outcome::Success,
        }
    }

    /// The process exit code: 0 or 1.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Mismatch => 1,
        }
    }
}

/// Where a finished report goes, besides stdout.
pub struct Targets<'a, T> {
    /// What stdout gets.
    pub format: FormatArg,
    /// `--trace FILE.json` (an `.npz` trace is streamed while the engine runs).
    pub json_trace: Option<&'a Path>,
    /// The charts asked for. `plot_sequence` has been validated by the job.
    pub plots: &'a PlotArgs,
    /// The layer (index into the trace's layers) the state-norm and gate charts show; `None`: the last.
    pub plot_layer: Option<usize>,
    /// Charts already built from a streamed run ([`plot::ChartFeed`]); the others come from the report's
    /// trace.
    pub streamed: Streamed,
    /// A model with several outputs (`run`): the report shows the first; the others are named here.
    pub more_outputs: MoreOutputs,
    /// `--report FILE.html`.
    pub html: Option<HtmlReport<'a, T>>,
}

/// The outputs of a model besides the first, which the report holds.
#[derive(Default)]
pub struct MoreOutputs {
    /// Every output's name, in the model's order; empty when the model has one output.
    pub names: Vec<String>,
    /// The `--expected` comparisons of the outputs after the first, each with its output's name.
    pub compared: Vec<(String, Comparison)>,
}

/// What `--report` shows: the trace as `--record` kept it (the JSON trace may hold more).
pub struct HtmlReport<'a, T> {
    /// Where, and how much.
    pub job: &'a crate::cli::job::ReportJob,
    /// The run's trace, holding the gates and states `--record` asked for.
    pub trace: &'a Trace<T>,
    /// Whether the pre-activations go in (`--record-pre`).
    pub include_pre: bool,
    /// The token ids the model read, (sequences, timesteps), when they are not the first layer's input
    /// (an Embedding model); otherwise a one-feature first-layer input is taken as the ids.
    pub ids: Option<Array2<f64>>,
}

/// Charts built while the engine ran, from its blocks, when the trace itself was not kept.
#[derive(Default)]
pub struct Streamed {
    /// `--plot`.
    pub state_norms: Option<plot::ChartData>,
    /// `--plot-gates`.
    pub gates: Option<plot::GateHeatmaps>,
}

/// The processing steps `--plot-gates` covers: `--steps` from its first step to its last (all steps by
/// default).
pub fn heat_steps(display: &crate::render::DisplayOptions) -> std::ops::Range<usize> {
    match &display.steps {
        Some(r) if !r.is_empty() => {
            r.iter().map(|r| r.start).min().unwrap_or(0)..r.iter().map(|r| r.end).max().unwrap_or(0)
        }
        _ => 0..usize::MAX,
    }
}

/// Writes everything a command asked for from one finished report, then returns the verdict (a mismatch
/// when any compared output fails): the JSON trace, the three charts (`--output-names` label the prediction
/// panels), the HTML report, and stdout.
pub fn write<T: Real>(report: &Report<'_, T>, to: &Targets<'_, T>) -> Result<Outcome> {
    if let Some(path) = to.json_trace {
        atomic_write(path, |w| render::json::write(report, w))?;
    }
    let p = to.plots;
    // The per-layer charts draw the trace's last layer: a chosen layer is made the only one.
    let chosen;
    let layer_trace = match to.plot_layer {
        Some(i)
            if i + 1 < report.trace.layers.len()
                && (p.plot.is_some() || p.plot_gates.is_some()) =>
        {
            chosen = crate::trace::Trace {
                layers: vec![report.trace.layers[i].clone()],
                predictions: report.trace.predictions.clone(),
                dense_activation: report.trace.dense_activation,
            };
            &chosen
        }
        _ => report.trace,
    };
    let heat_steps = heat_steps(report.display);
    if let Some(path) = &p.plot {
        match &to.streamed.state_norms {
            Some(chart) => plot::draw_lines(chart, path)?,
            None => plot::draw_lines(&plot::state_norms(layer_trace, report.window), path)?,
        }
    }
    if let Some(path) = &p.plot_predictions {
        let mut chart = plot::predictions(
            report.trace,
            report.expected.as_ref(),
            report.targets.as_ref(),
            report.window,
        );
        for (panel, name) in chart.panels.iter_mut().zip(&report.display.output_names) {
            *panel = name.clone();
        }
        if let (Some(e), Some(c)) = (&report.expected, &report.comparison) {
            plot::add_residuals(&mut chart, report.trace, e, c.atol, c.rtol, report.window);
        }
        plot::draw_lines(&chart, path)?;
    }
    if let Some(path) = &p.plot_gates {
        match &to.streamed.gates {
            Some(maps) => plot::draw_heatmaps(maps, path)?,
            None => plot::draw_heatmaps(
                &plot::gates_over(layer_trace, p.plot_sequence.unwrap_or(0), heat_steps),
                path,
            )?,
        }
    }
    if let Some(html) = &to.html {
        write_html(report, html)?;
    }
    match to.format {
        FormatArg::Json => write_stdout(|w| render::json::write(report, w))?,
        FormatArg::Table => {
            let mut text = render::table::render(report);
            let more = &to.more_outputs;
            let width = report.display.width;
            if more.names.len() > 1 {
                let note = format!(
                    "note: the model has {} outputs ({}); the predictions shown are the first's",
                    more.names.len(),
                    more.names.join(", ")
                );
                text.push_str(&render::text::wrap(&note, width, 2));
                text.push('\n');
            }
            if !more.compared.is_empty() {
                // The report's verdict is the first output's; name it, then the others'.
                if let (Some(c), Some(first)) = (&report.comparison, more.names.first()) {
                    let line = render::table::verdict_line(c, report);
                    let line = format!("output {first}: {line}");
                    text.push_str(&render::text::wrap(&line, width, 2));
                    text.push('\n');
                }
                for (name, c) in &more.compared {
                    let line = render::table::verdict_line(c, report);
                    let line = format!("output {name}: {line}");
                    text.push_str(&render::text::wrap(&line, width, 2));
                    text.push('\n');
                }
            }
            write_stdout(|w| w.write_all(text.as_bytes()))?;
        }
    }
    let mut outcome = Outcome::of(report.comparison.as_ref());
    if to.more_outputs.compared.iter().any(|(_, c)| !c.passed) {
        outcome = Outcome::Mismatch;
    }
    Ok(outcome)
}

/// Writes the HTML report: `html.trace` with the run's title (or its first layer's name), sequences,
/// names and verdict.
fn write_html<T: Real>(report: &Report<'_, T>, html: &HtmlReport<'_, T>) -> Result<()> {
    let title = match report.title.as_str() {
        "" => html.trace.layers[0].name.clone(),
        t => t.to_string(),
    };
    let opts = render::report::Options {
        title,
        sequences: report.display.sequences.clone(),
        steps: html.job.steps.clone(),
        include_pre: html.include_pre,
        max_values: html.job.max_values,
        feature_names: report.display.feature_names.clone(),
        output_names: report.display.output_names.clone(),
        window: report.window,
    };
    let checks = render::report::Checks {
        expected: report.expected.as_ref(),
        targets: report.targets.as_ref(),
        comparison: report.comparison.as_ref(),
    };
    let mut data = render::report::build(html.trace, &checks, &opts);
    if let Some(vocab) = &html.job.tokens {
        let first = &html.trace.layers[0];
        let ids = html.ids.clone().or_else(|| {
            (first.features == 1)
                .then(|| first.x.index_axis(ndarray::Axis(2), 0).mapv(|v| v.to_f()))
        });
        match ids {
            Some(ids) => {
                data.tokens = Some(
                    data.sequences
                        .iter()
                        .map(|&b| ids.row(b).iter().map(|&v| token_of(vocab, v)).collect())
                        .collect(),
                )
            }
            None => data.notes.push(format!(
                "--tokens: not shown, the input has {} features per step, not one token id",
                first.features
            )),
        }
    }
    render::report::html::write_file(&data, &html.job.path)
}

/// The token of id `v`: the vocabulary's entry, or `#v` for an id it does not name.
pub fn token_of(vocab: &[Option<String>], v: f64) -> String {
    let known = (v.is_finite() && v >= 0.0 && v.fract() == 0.0)
        .then(|| vocab.get(v as usize).cloned().flatten())
        .flatten();
    known.unwrap_or_else(|| format!("#{v}"))
}

/// Writes to stdout; a closed pipe (`rnntrace … | head`) ends the output quietly, a closed stdout
/// (`>&-`) with something to print is an error: everything printed would be lost.
pub fn write_stdout(fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    if crate::io::stdio::stdout_closed() {
        let mut text = Vec::new();
        fill(&mut text).map_err(|e| Error::output("<stdout>", e))?;
        if text.is_empty() {
            return Ok(());
        }
        return Err(Error::output(
            "<stdout>",
            "is closed (started with >&-), so nothing can be printed; redirect it (> FILE or > /dev/null) or use --quiet",
        ));
    }
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    let r = fill(&mut lock).and_then(|_| lock.flush());
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::output("<stdout>", e)),
    }
}

/// A progress bar on stderr for long streamed runs, only on a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(steps: usize) -> Progress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:40}] {elapsed_precise}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        // Shown only once a run has taken a second.
        bar.enable_steady_tick(Duration::from_millis(250));
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        Progress(Some(bar))
    }

    pub fn set(&self, pos: usize) {
        if let Some(b) = &self.0 {
            if b.elapsed() > Duration::from_secs(1) && b.is_hidden() {
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            b.set_position(pos as u64);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// One warning on stderr naming the first place a NaN or infinity appears, if any.
pub fn warn_non_finite<T: Real>(trace: &Trace<T>) {
    for l in &trace.layers {
        if let Some(((b, t, j), v)) = l.x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            eprintln!(
                "rnntrace: warning: input holds {v} at sequence {b}, timestep {t}, feature {j}; it propagates through the trace"
            );
            return;
        }
        let names = l.kind.gate_names();
        if let Some(((t, b, k), v)) = l
            .pre
            .as_ref()
            .and_then(|p| p.indexed_iter().find(|(_, v)| !v.is_finite()))
        {
            eprintln!(
                "rnntrace: warning: {v} first appears at sequence {b}, step {t}, gate {}, unit {} (pre-activation; check the weights)",
                names[k / l.units],
                k % l.units
            );
            return;
        }
        let first_bad = |a: &Option<Array3<T>>| {
            a.as_ref().and_then(|a| {
                a.indexed_iter()
                    .find(|(_, v)| !v.is_finite())
                    .map(|(i, v)| (i, *v))
            })
        };
        let state = first_bad(&l.h)
            .map(|(i, v)| (i, v, "h"))
            .or_else(|| first_bad(&l.c).map(|(i, v)| (i, v, "c")));
        if let Some(((t, b, u), v, s)) = state {
            eprintln!(
                "rnntrace: warning: {v} first appears in state {s} at sequence {b}, step {t}, unit {u}"
            );
            return;
        }
        if let Some(((b, u), v)) = l.last_output.indexed_iter().find(|(_, v)| !v.is_finite()) {
            eprintln!("rnntrace: warning: the last output of sequence {b}, unit {u} is {v}");
            return;
        }
    }
    if let Some(((b, j), v)) = trace
        .predictions
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
    {
        eprintln!(
            "rnntrace: warning: prediction {j} of sequence {b} is {v} (made by the Dense head)"
        );
    }
}
