/*!
`rnntrace demo`: the seeds' weather examples, from real Keras fixtures embedded in the binary.

The embedded files are written to a temporary folder and run through exactly the same command-line path as
`rnntrace lstm|gru`, so the demo exercises what users run.
*/

use crate::cli::args::{Cli, Command, DemoArgs, DemoCell};
use crate::cli::job::Env;
use crate::cli::output::Outcome;
use crate::error::{Error, Result};
use clap::Parser;

macro_rules! fixture {
    ($case:literal, $file:literal) => {
        (
            $file,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/cases/",
                $case,
                "/",
                $file
            )) as &[u8],
        )
    };
}

const LSTM_FILES: &[(&str, &[u8])] = &[
    fixture!("lstm_weather_seed", "weights.json"),
    fixture!("lstm_weather_seed", "dense.json"),
    fixture!("lstm_weather_seed", "input.npy"),
    fixture!("lstm_weather_seed", "expected.npy"),
    fixture!("lstm_weather_seed", "targets.npy"),
];

const GRU_FILES: &[(&str, &[u8])] = &[
    fixture!("gru_weather_seed", "weights.json"),
    fixture!("gru_weather_seed", "dense.json"),
    fixture!("gru_weather_seed", "input.npy"),
    fixture!("gru_weather_seed", "expected.npy"),
    fixture!("gru_weather_seed", "targets.npy"),
    fixture!("gru_weather_seed", "scaler.json"),
];

/// Runs the built-in example.
pub fn run_demo(d: &DemoArgs, env: &Env) -> Result<Outcome> {
    let (cell, files, title, note) = match d.cell {
        DemoCell::Lstm => (
            "lstm",
            LSTM_FILES,
            "Weather demo (seed 000: LSTM(4) → Dense(1) on raw inputs, trained 30 epochs in Keras 3.15)",
            "Note: the inputs are unscaled (humidity ≈ 60), exactly as the seed fed them, so most gates saturate at 0 or 1 \
             and every window predicts about the same value. Scaling inputs fixes that: see `rnntrace demo gru`.",
        ),
        DemoCell::Gru => (
            "gru",
            GRU_FILES,
            "Weather demo (seed 001: GRU(4) → Dense(1) on min-max-scaled inputs, trained 30 epochs in Keras 3.15)",
            "Predictions are in scaled units; the scaler.json of the seed maps them back to kWh (--inverse-scale).",
        ),
    };
    if d.display.feature_names.is_some() {
        return Err(Error::usage(
            "demo names its features itself (Temperature, Humidity, Wind Speed); --feature-names is for your own files (rnntrace lstm|gru)",
        ));
    }
    if !d.no_plots && !d.out_dir.is_dir() {
        std::fs::create_dir_all(&d.out_dir).map_err(|e| Error::output(d.out_dir.clone(), e))?;
    }
    let dir = tempfile::tempdir()
        .map_err(|e| Error::usage(format!("demo: cannot create a temporary folder: {e}")))?;
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes)
            .map_err(|e| Error::output(dir.path().join(name), e))?;
    }
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let mut argv: Vec<String> = vec!["rnntrace".into(), cell.into()];
    for (flag, file) in [
        ("--weights", "weights.json"),
        ("--input", "input.npy"),
        ("--dense", "dense.json"),
        ("--expected", "expected.npy"),
        ("--targets", "targets.npy"),
    ] {
        argv.push(flag.into());
        argv.push(p(file));
    }
    argv.extend(
        [
            "--window",
            "2",
            "--feature-names",
            "Temperature,Humidity,Wind Speed",
        ]
        .map(String::from),
    );
    if d.cell == DemoCell::Gru {
        argv.extend([
            "--inverse-scale".to_string(),
            p("scaler.json"),
            "--output-names".into(),
            "Power".into(),
        ]);
    } else {
        argv.extend(["--output-names", "Power (kWh)"].map(String::from));
    }
    argv.extend(display_args(d));
    if !d.no_plots {
        for (flag, file) in [
            ("--plot", "states"),
            ("--plot-predictions", "predictions"),
            ("--plot-gates", "gates"),
        ] {
            argv.push(flag.into());
            argv.push(
                d.out_dir
                    .join(format!("{cell}_{file}.png"))
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    let cli = Cli::try_parse_from(&argv).map_err(|e| Error::usage(format!("demo: {e}")))?;
    let (Command::Lstm(a) | Command::Gru(a)) = cli.command else {
        return Err(Error::usage(
            "demo: internal argument list did not build a cell command",
        ));
    };
    let kind = if d.cell == DemoCell::Lstm {
        crate::weights::CellKind::Lstm
    } else {
        crate::weights::CellKind::Gru
    };
    let job = crate::cli::job::cell_job(kind, &a, env)?;
    let table = !d.display.quiet && d.format == crate::cli::args::FormatArg::Table;
    if table {
        let note = crate::render::text::wrap(note, env.columns, 0);
        crate::cli::output::write_stdout(|w| writeln!(w, "{note}\n"))?;
    }
    let outcome = crate::commands::cell::execute(&job, title, std::time::Instant::now())?;
    if table && !d.no_plots {
        let charts = ["states", "predictions", "gates"].map(|f| {
            d.out_dir
                .join(format!("{cell}_{f}.png"))
                .display()
                .to_string()
        });
        let line =
            crate::render::text::wrap(&format!("Charts: {}", charts.join(", ")), env.columns, 2);
        crate::cli::output::write_stdout(|w| writeln!(w, "\n{line}"))?;
    }
    Ok(outcome)
}

/// The demo's own flags, passed through to the cell command.
fn display_args(d: &DemoArgs) -> Vec<String> {
    let mut v = Vec::new();
    let s = &d.display;
    if let Some(seq) = &s.sequences {
        v.extend(["--sequences".to_string(), seq.clone()]);
    }
    v.extend(["--max-units".to_string(), s.max_units.to_string()]);
    if let Some(n) = s.max_steps {
        v.extend(["--max-steps".to_string(), n.to_string()]);
    }
    if let Some(steps) = &s.steps {
        v.extend(["--steps".to_string(), steps.clone()]);
    }
    if let Some(units) = &s.units {
        v.extend(["--units".to_string(), units.clone()]);
    }
    if s.show_pre {
        v.push("--show-pre".into());
    }
    v.extend([
        "--color".to_string(),
        format!("{:?}", s.color).to_lowercase(),
    ]);
    if s.quiet {
        v.push("--quiet".into());
    }
    v.extend([
        "--format".to_string(),
        format!("{:?}", d.format).to_lowercase(),
    ]);
    if let Some(t) = &d.trace {
        v.extend(["--trace".to_string(), t.to_string_lossy().into_owned()]);
    }
    v
}
