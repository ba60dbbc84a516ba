/*!
`rnntrace lstm` and `rnntrace gru`: one layer from a validated [`CellJob`] through the engine and the
comparison to [`crate::cli::output`]. Long runs stream an `.npz` trace block by block; tables re-run only the
sequences and steps they show.
*/

use crate::cell::Real;
use crate::cli::args::{CellArgs, FormatArg, PrecisionArg};
use crate::cli::job::{self, CellJob, Env};
use crate::cli::output::{self, Outcome, Progress, warn_non_finite};
use crate::compare::{self, Comparison};
use crate::engine::{self, LayerInput, Stores};
use crate::error::Result;
use crate::render::{self, Report, plot};
use crate::trace::{LayerTrace, Record, Trace};
use crate::weights::{CellKind, CellWeights};
use ndarray::{Array2, Array3, Axis};
use std::path::Path;
use std::time::{Duration, Instant};

/// `rnntrace lstm|gru`: validates everything, then runs.
pub fn run_cell(kind: CellKind, a: &CellArgs, env: &Env) -> Result<Outcome> {
    let started = Instant::now();
    let job = job::cell_job(kind, a, env)?;
    let outcome = execute(&job, "", started)?;
    if matches!(outcome, Outcome::Mismatch) && job.time_major_hint {
        eprintln!(
            "rnntrace: note: if --input and --expected are time-major (timesteps, sequences, …), as a PyTorch module with batch_first=False takes and returns them, pass --time-major"
        );
    }
    Ok(outcome)
}

/// Runs a job at its precision and writes everything it asks for. `started` is when loading began.
pub fn execute(job: &CellJob, title: &str, started: Instant) -> Result<Outcome> {
    match job.precision {
        PrecisionArg::F32 => execute_as::<f32>(job, title, started),
        PrecisionArg::F64 => execute_as::<f64>(job, title, started),
    }
}

/// The numbers of a run, before anything is written.
pub struct Computed<T> {
    /// The trace (layers hold what was recorded in memory).
    pub trace: Trace<T>,
    /// Expected values shaped like the predictions (None when compared per step, or not given).
    pub expected: Option<Array2<f64>>,
    /// The verdict.
    pub comparison: Option<Comparison>,
}

/// The job's input, mask and initial state at precision `T`, restricted to `rows` when given.
struct Inputs<T> {
    x: Array3<T>,
    mask: Option<Array2<bool>>,
    h0: Option<Array2<T>>,
    c0: Option<Array2<T>>,
}

fn inputs<T: Real>(job: &CellJob, rows: Option<&[usize]>) -> Inputs<T> {
    let pick2 = |a: &Array2<f64>| match rows {
        Some(r) => a.select(Axis(0), r),
        None => a.clone(),
    };
    // Converted straight from the job's array (no intermediate copy of the whole input).
    let x = match rows {
        Some(r) => job.x.select(Axis(0), r).mapv(T::lit),
        None => job.x.mapv(T::lit),
    };
    let mask = match (&job.mask, job.mask_value) {
        (Some(m), _) => Some(match rows {
            Some(r) => m.select(Axis(0), r),
            None => m.clone(),
        }),
        (None, Some(v)) => Some(engine::mask_from_value(x.view(), T::lit(v))),
        (None, None) => None,
    };
    Inputs {
        x,
        mask,
        h0: job.h0.as_ref().map(|a| pick2(a).mapv(T::lit)),
        c0: job.c0.as_ref().map(|a| pick2(a).mapv(T::lit)),
    }
}

/// Runs the engine for a job with `record`; with `sink`, steps are streamed to it `chunk` at a time.
fn run_engine<T: Real>(
    job: &CellJob,
    rows: Option<&[usize]>,
    record: Record,
    stream: Option<(usize, &mut engine::Sink<'_, T>)>,
) -> Result<LayerTrace<T>> {
    run_prepared(
        job,
        &job.weights.cast::<T>(),
        inputs::<T>(job, rows),
        record,
        stream,
    )
}

/// [`run_engine`] on weights and inputs already converted to `T`.
fn run_prepared<T: Real>(
    job: &CellJob,
    w: &CellWeights<T>,
    inp: Inputs<T>,
    record: Record,
    stream: Option<(usize, &mut engine::Sink<'_, T>)>,
) -> Result<LayerTrace<T>> {
    let input = LayerInput {
        x: inp.x.into(),
        mask: inp.mask.as_ref().map(|m| m.view()),
        h0: inp.h0,
        c0: inp.c0,
    };
    match stream {
        Some((chunk, sink)) => {
            engine::run_layer_using(w, &job.spec, input, record, Some(chunk), sink, job.kernels)
        }
        None => engine::run_layer_using(
            w,
            &job.spec,
            input,
            record,
            None,
            &mut |_, _| Ok(()),
            job.kernels,
        ),
    }
}

/// Applies the head and the comparison to a finished layer.
fn finish<T: Real>(job: &CellJob, layer: LayerTrace<T>) -> Computed<T> {
    let last = layer.last_output.clone();
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
            // Per-step comparison needs every output: recorded, or recomputed here.
            let l = &trace.layers[0];
            let ours: Vec<f64> = match &l.out {
                Some(out) => (0..l.sequences())
                    .flat_map(|b| {
                        out.index_axis(Axis(1), b)
                            .iter()
                            .map(|v| v.to_f())
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                None => {
                    let full = run_engine::<T>(job, None, Record::STATES, None).ok();
                    full.and_then(|f| f.out)
                        .map(|out| {
                            (0..out.shape()[1])
                                .flat_map(|b| {
                                    out.index_axis(Axis(1), b)
                                        .iter()
                                        .map(|v| v.to_f())
                                        .collect::<Vec<_>>()
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                }
            };
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

/// Whether a layer holds the gates and states `r` keeps, and no more (pre-activations: at least).
fn holds<T: Real>(l: &LayerTrace<T>, r: Record) -> bool {
    l.gates.is_some() == r.gates && l.h.is_some() == r.states && (!r.pre || l.pre.is_some())
}

fn is_npz(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

fn execute_as<T: Real>(job: &CellJob, title: &str, started: Instant) -> Result<Outcome> {
    for note in &job.notes {
        eprintln!("rnntrace: {note}");
    }
    let out = &job.output;
    let npz_target = out.trace.as_deref().filter(|p| is_npz(p));
    // Converting the loaded input and weights to the precision of the run is part of loading.
    let weights = job.weights.cast::<T>();
    let inp = inputs::<T>(job, None);
    let load_s = started.elapsed();
    let mut write_time = Duration::ZERO;
    let compute_start = Instant::now();

    // Charts fed from the stream when the whole trace is not kept anyway (JSON needs all of it).
    let p = &out.plots;
    let wants_json =
        out.format == FormatArg::Json || out.trace.as_deref().is_some_and(|p| !is_npz(p));
    // A report needs the whole trace as --record keeps it: recorded by the main run (not streamed), unless
    // an .npz trace is streamed anyway.
    let keep_for_report = out.report.is_some() && npz_target.is_none();
    let mut feed = (!wants_json
        && !keep_for_report
        && (p.plot.is_some() || p.plot_gates.is_some()))
    .then(|| {
        let (sequences, steps, _) = job.x.dim();
        plot::ChartFeed::<T>::new(
            job.weights.kind,
            sequences,
            steps,
            job.weights.units,
            p.plot.is_some(),
            p.plot_gates
                .is_some()
                .then_some(p.plot_sequence.unwrap_or(0)),
        )
    });
    let (layer, npz) = match npz_target {
        _ if npz_target.is_none() && feed.is_some() => {
            let feed = feed.as_mut().expect("a chart feed");
            let record = feed.record();
            let progress = Progress::new(job.x.shape()[1]);
            let mut sink = |t0: usize, stores: &Stores<T>| -> Result<()> {
                feed.push(t0, stores);
                progress.set(t0 + stores.steps());
                Ok(())
            };
            let layer = run_prepared(
                job,
                &weights,
                inp,
                record,
                Some((engine::STREAM_STEPS, &mut sink)),
            )?;
            progress.finish();
            (layer, None)
        }
        Some(target) => {
            let (sequences, steps, _) = job.x.dim();
            let shape = render::npz::NpzRun {
                kind: job.weights.kind,
                sequences,
                steps,
                units: job.weights.units,
                h_units: job.weights.h_units(),
                masked: job.mask.is_some() || job.mask_value.is_some(),
            };
            let mut npz = render::npz::TraceNpz::<T>::new(target, shape, out.record)?;
            let progress = Progress::new(job.x.shape()[1]);
            // The blocks hold what the trace records and what the charts need; each takes its part.
            let record = match &feed {
                Some(f) => out.record.union(f.record()),
                None => out.record,
            };
            let mut sink = |t0: usize, stores: &Stores<T>| -> Result<()> {
                let t = Instant::now();
                npz.write_block(stores)?;
                write_time += t.elapsed();
                if let Some(f) = feed.as_mut() {
                    f.push(t0, stores);
                }
                progress.set(t0 + stores.steps());
                Ok(())
            };
            let layer = run_prepared(
                job,
                &weights,
                inp,
                record,
                Some((engine::STREAM_STEPS, &mut sink)),
            )?;
            progress.finish();
            (layer, Some(npz))
        }
        None => {
            // Tables and the predictions chart need only the predictions from the main run (the shown
            // sequences are traced apart); JSON needs everything, the report what --record keeps.
            let record = if wants_json || keep_for_report {
                out.record
            } else {
                Record::NONE
            };
            (run_prepared(job, &weights, inp, record, None)?, None)
        }
    };
    let computed = finish(job, layer);
    let compute_s = compute_start.elapsed().saturating_sub(write_time);
    warn_non_finite(&computed.trace);

    let write_start = Instant::now();
    if let Some(npz) = npz {
        npz.finish(job.window, &computed.trace, computed.comparison.as_ref())?;
    }
    let streamed = match &feed {
        Some(f) => output::Streamed {
            state_norms: f.state_norms(&computed.trace.layers[0], job.window),
            gates: f.gates(&computed.trace.layers[0], output::heat_steps(&out.display)),
        },
        None => output::Streamed::default(),
    };
    // JSON (file or stdout) needs complete per-step records, and so do charts not fed from the stream
    // when the main run did not keep what they draw; recompute what was not kept.
    let l0 = &computed.trace.layers[0];
    let charts_lack = feed.is_none()
        && ((p.plot.is_some() && l0.h.is_none()) || (p.plot_gates.is_some() && l0.gates.is_none()));
    let wants_json = wants_json || charts_lack;
    let n = computed.trace.predictions.nrows();
    let full;
    let json_trace: &Trace<T> = if wants_json && !computed.trace.layers[0].is_complete() {
        full = finish(job, run_engine::<T>(job, None, Record::ALL, None)?).trace;
        &full
    } else {
        &computed.trace
    };
    let detail_rows = if out.format == FormatArg::Table {
        out.display.shown_sequences(n)
    } else {
        Vec::new()
    };
    let detail_owned;
    // The tables show some steps: the run for them goes as far as the last one shown.
    let total_steps = job.x.shape()[1];
    let max_steps = out
        .display
        .shown_steps(total_steps)
        .last()
        .map_or(1, |&t| t + 1);
    let detail: &LayerTrace<T> = if detail_rows.is_empty()
        || (json_trace.layers[0].is_complete()
            && detail_rows.iter().enumerate().all(|(i, &b)| i == b)
            && json_trace.layers[0].steps() <= max_steps)
    {
        &json_trace.layers[0]
    } else if !job.spec.carry_state {
        // Only the shown sequences and steps: the recurrence is causal, so the first processing steps
        // need only the inputs they read.
        detail_owned = detail_run::<T>(job, &detail_rows, max_steps)?;
        &detail_owned
    } else {
        // State flows between sequences: a subset cannot be run on its own.
        let all = run_engine::<T>(job, None, Record::ALL, None)?;
        detail_owned = all.select_sequences(&detail_rows);
        &detail_owned
    };
    let report = Report {
        trace: json_trace,
        detail: vec![detail],
        detail_rows,
        expected: computed.expected.clone(),
        comparison: computed.comparison.clone(),
        targets: job.targets.clone(),
        window: job.window,
        display: &out.display,
        title: title.to_string(),
        outputs: Vec::new(),
    };
    // The report shows what --record kept: the main run's trace, or the JSON's when it holds the same; a
    // streamed .npz run kept nothing in memory, so it is run again.
    let report_owned;
    let html_trace = match &out.report {
        None => None,
        Some(_) if holds(&computed.trace.layers[0], out.record) => Some(&computed.trace),
        Some(_) if holds(&json_trace.layers[0], out.record) => Some(json_trace),
        Some(_) => {
            report_owned = finish(job, run_engine::<T>(job, None, out.record, None)?).trace;
            Some(&report_owned)
        }
    };
    let outcome = output::write(
        &report,
        &output::Targets {
            format: out.format,
            json_trace: out.trace.as_deref().filter(|p| !is_npz(p)),
            plots: &out.plots,
            plot_layer: None,
            streamed,
            more_outputs: output::MoreOutputs::default(),
            html: out
                .report
                .as_ref()
                .zip(html_trace)
                .map(|(job, trace)| output::HtmlReport {
                    job,
                    trace,
                    include_pre: out.record.pre,
                    ids: None,
                }),
        },
    )?;
    write_time += write_start.elapsed();
    if out.timings {
        eprintln!(
            "{}",
            serde_json::json!({
                "load_s": load_s.as_secs_f64(),
                "compute_s": compute_s.as_secs_f64(),
                "write_s": write_time.as_secs_f64(),
                "total_s": started.elapsed().as_secs_f64(),
                "kernels": computed.trace.layers[0].kernels.name(),
            })
        );
    }
    Ok(outcome)
}

/// A complete trace of sequences `rows` for their first `max_steps` processing steps (the tables never
/// show a later one).
fn detail_run<T: Real>(job: &CellJob, rows: &[usize], max_steps: usize) -> Result<LayerTrace<T>> {
    let w = job.weights.cast::<T>();
    let inp = inputs::<T>(job, Some(rows));
    let steps = inp.x.shape()[1];
    let n = steps.min(max_steps.max(1));
    // Processing step t reads row t (or T−1−t going backwards): keep just the rows the first n steps read.
    let offset = if job.spec.go_backwards { steps - n } else { 0 };
    let x = inp
        .x
        .slice(ndarray::s![.., offset..offset + n, ..])
        .to_owned();
    let mask = inp
        .mask
        .as_ref()
        .map(|m| m.slice(ndarray::s![.., offset..offset + n]).to_owned());
    let input = LayerInput {
        x: x.view().into(),
        mask: mask.as_ref().map(|m| m.view()),
        h0: inp.h0,
        c0: inp.c0,
    };
    let mut l = engine::run_layer_using(
        &w,
        &job.spec,
        input,
        Record::ALL,
        None,
        &mut |_, _| Ok(()),
        job.kernels,
    )?;
    l.x = inp.x;
    l.input_index.iter_mut().for_each(|i| *i += offset);
    Ok(l)
}
