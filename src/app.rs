/*!
Runs a validated job: engine, comparison, then the renderers and writers. The only place that touches
stdout, stderr and output files.
*/

use crate::cell::Real;
use crate::cli::{Cli, Command, FormatArg, PrecisionArg};
use crate::compare::{self, Comparison};
use crate::config::{self, CellJob};
use crate::engine::{self, LayerInput};
use crate::error::Result;
use crate::io::write::atomic_write;
use crate::render::{self, Report};
use crate::trace::Trace;
use crate::weights::CellKind;
use ndarray::Array2;
use std::io::Write;

/// How a successful run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything ran; any comparison passed.
    Success,
    /// Everything ran, but `--expected` found values outside tolerance.
    Mismatch,
}

impl Outcome {
    /// The process exit code: 0 or 1.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Mismatch => 1,
        }
    }
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Lstm(a) => {
            let job = config::cell_job(CellKind::Lstm, &a)?;
            execute(&job, "")
        }
        Command::Gru(a) => {
            let job = config::cell_job(CellKind::Gru, &a)?;
            execute(&job, "")
        }
        Command::Demo(d) => crate::demo::run(&d),
    }
}

/// Runs a job at its precision and writes everything it asks for.
pub fn execute(job: &CellJob, title: &str) -> Result<Outcome> {
    match job.precision {
        PrecisionArg::F32 => execute_as::<f32>(job, title),
        PrecisionArg::F64 => execute_as::<f64>(job, title),
    }
}

/// The numbers of a run, before anything is written.
pub struct Computed<T> {
    /// The trace.
    pub trace: Trace<T>,
    /// Expected values shaped like the predictions (None when compared per step, or not given).
    pub expected: Option<Array2<f64>>,
    /// The verdict.
    pub comparison: Option<Comparison>,
}

/// Runs the engine and the comparison for a job, at precision `T`.
pub fn compute<T: Real>(job: &CellJob) -> Computed<T> {
    let w = job.weights.cast::<T>();
    let x = job.x.mapv(T::lit);
    let mask = job.mask.clone().or_else(|| {
        job.mask_value
            .map(|v| engine::mask_from_value(x.view(), T::lit(v)))
    });
    let layer = engine::run_layer(
        &w,
        &job.spec,
        LayerInput {
            x: x.view(),
            mask: mask.as_ref().map(|m| m.view()),
            h0: job.h0.as_ref().map(|a| a.mapv(T::lit)),
            c0: job.c0.as_ref().map(|a| a.mapv(T::lit)),
        },
    );
    let last = layer.last_output();
    let (predictions, dense_activation) = match &job.dense {
        Some((d, act)) => (engine::dense(&d.cast::<T>(), *act, last.view()), Some(*act)),
        None => (last, None),
    };
    let trace = Trace {
        layers: vec![layer],
        predictions,
        dense_activation,
    };
    let (expected, comparison) = match &job.expected {
        None => (None, None),
        Some(e) if e.sequences => {
            let ours: Vec<f64> = trace.layers[0].out.iter().map(|v| v.to_f()).collect();
            (
                None,
                Some(compare::compare(
                    &ours,
                    &e.array.data,
                    &e.array.shape,
                    e.atol,
                    e.rtol,
                )),
            )
        }
        Some(e) => {
            let (b, o) = trace.predictions.dim();
            let ours: Vec<f64> = trace.predictions.iter().map(|v| v.to_f()).collect();
            let exp = Array2::from_shape_vec((b, o), e.array.data.clone())
                .expect("shape checked at load");
            let c = compare::compare(&ours, &e.array.data, &[b, o], e.atol, e.rtol);
            (Some(exp), Some(c))
        }
    };
    Computed {
        trace,
        expected,
        comparison,
    }
}

fn execute_as<T: Real>(job: &CellJob, title: &str) -> Result<Outcome> {
    for note in &job.notes {
        eprintln!("rnntrace: note: {note}");
    }
    let computed = compute::<T>(job);
    warn_non_finite(&computed.trace);
    let report = Report {
        trace: &computed.trace,
        expected: computed.expected.clone(),
        comparison: computed.comparison.clone(),
        targets: job.targets.clone(),
        window: job.window,
        display: &job.output.display,
        title: title.to_string(),
    };
    if let Some(path) = &job.output.trace {
        atomic_write(path, |w| render::json::write(&report, w))?;
    }
    match job.output.format {
        FormatArg::Json => write_stdout(|w| render::json::write(&report, w))?,
        FormatArg::Table => {
            let text = render::table::render(&report);
            write_stdout(|w| w.write_all(text.as_bytes()))?;
        }
    }
    Ok(match &computed.comparison {
        Some(c) if !c.passed => Outcome::Mismatch,
        _ => Outcome::Success,
    })
}

/// Writes to stdout; a closed pipe (`rnntrace … | head`) ends the output quietly.
pub fn write_stdout(fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    let r = fill(&mut lock).and_then(|_| lock.flush());
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::error::Error::output("<stdout>", e)),
    }
}

/// One warning on stderr naming the first place a NaN or infinity appears, if any.
fn warn_non_finite<T: Real>(trace: &Trace<T>) {
    for l in &trace.layers {
        if let Some(((b, t, j), v)) = l.x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            eprintln!(
                "rnntrace: warning: input holds {v} at sequence {b}, timestep {t}, feature {j}; it propagates through the trace"
            );
            return;
        }
        let names = l.kind.gate_names();
        if let Some(((b, t, k), v)) = l.pre.indexed_iter().find(|(_, v)| !v.is_finite()) {
            eprintln!(
                "rnntrace: warning: {v} first appears at sequence {b}, step {t}, gate {}, unit {} (pre-activation; check the weights)",
                names[k / l.units],
                k % l.units
            );
            return;
        }
        let state =
            l.h.indexed_iter()
                .find(|(_, v)| !v.is_finite())
                .map(|(i, v)| (i, *v, "h"));
        let state = state.or_else(|| {
            l.c.as_ref().and_then(|c| {
                c.indexed_iter()
                    .find(|(_, v)| !v.is_finite())
                    .map(|(i, v)| (i, *v, "c"))
            })
        });
        if let Some(((b, t, u), v, s)) = state {
            eprintln!(
                "rnntrace: warning: {v} first appears in state {s} at sequence {b}, step {t}, unit {u}"
            );
            return;
        }
    }
    if let Some(((b, j), v)) = trace
        .predictions
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
    {
        eprintln!(
            "rnntrace: warning: prediction {j} of sequence {b} is {v} (the Dense head overflowed)"
        );
    }
}
