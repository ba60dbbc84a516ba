//! What fits a terminal: every line of every command within COLUMNS (80 and 100), the default output of a
//! big batch short enough to read, and the step and unit selections the notes point to.

use crate::{case_dir, fixtures, rnntrace, run};
use std::path::Path;
use unicode_width::UnicodeWidthStr;

/// Writes a random LSTM layer (features 3, `units`), its input (n × steps × 3) and a Dense(1) head into
/// `dir`. The numbers only need to be plausible: these tests count lines and columns.
fn big_batch(dir: &Path, n: usize, steps: usize, units: usize) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut mat = |r: usize, c: usize, s: f64| -> Vec<Vec<f64>> {
        (0..r)
            .map(|_| (0..c).map(|_| next() * s).collect())
            .collect()
    };
    let kernel = mat(3, 4 * units, 0.5);
    let recurrent = mat(units, 4 * units, 0.5);
    let bias = mat(1, 4 * units, 0.1).remove(0);
    std::fs::write(
        dir.join("w.json"),
        serde_json::to_string(&(kernel, recurrent, bias)).unwrap(),
    )
    .unwrap();
    let dense = (mat(units, 1, 0.5), vec![0.1]);
    std::fs::write(dir.join("d.json"), serde_json::to_string(&dense).unwrap()).unwrap();
    let x: Vec<u8> = mat(n * steps, 3, 1.0)
        .into_iter()
        .flatten()
        .flat_map(|v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(
        dir.join("x.npy"),
        crate::npy_bytes("<f4", &[n, steps, 3], &x),
    )
    .unwrap();
}

/// Lines wider than `cols` (commands meant for copying, on lines of their own, are allowed to be).
fn too_wide(out: &str, cols: usize) -> Vec<String> {
    out.lines()
        .filter(|l| !l.trim_start().starts_with("rnntrace "))
        .filter(|l| UnicodeWidthStr::width(*l) > cols)
        .map(|l| format!("{} columns: {l}", UnicodeWidthStr::width(l)))
        .collect()
}

fn gru_case() -> Vec<&'static str> {
    vec![
        "gru",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--window",
        "2",
        "--dense",
        "dense.json",
        "--expected",
        "expected.npy",
        "--targets",
        "targets.npy",
        "--inverse-scale",
        "scaler.json",
        "--output-names",
        "Power",
        "--color",
        "never",
    ]
}

#[test]
fn every_line_fits_80_and_100_columns() {
    let big = tempfile::tempdir().unwrap();
    big_batch(big.path(), 20, 12, 16);
    let diag = fixtures().join("diagnose/lstm_keras2_hard_sigmoid");
    let model = fixtures().join("models/bidir_gru_ave_mul/model.keras");
    let stack = fixtures().join("models/gru_lstm_stack/model.keras");
    for cols in [80usize, 100] {
        let c = cols.to_string();
        let mut runs: Vec<(String, String)> = Vec::new();
        let mut go = |what: &str, cmd: &mut assert_cmd::Command| {
            let (code, out, err) = run(cmd.env("COLUMNS", &c));
            assert!(code == 0 || code == 1, "{what}: {err}");
            runs.push((what.to_string(), out));
        };
        go(
            "gru, every column",
            rnntrace()
                .current_dir(case_dir("gru_weather_seed"))
                .args(gru_case()),
        );
        go(
            "lstm, 16 units, no head",
            rnntrace().current_dir(big.path()).args([
                "lstm",
                "--weights",
                "w.json",
                "--input",
                "x.npy",
            ]),
        );
        go(
            "lstm, 16 units, head, all steps, pre-activations",
            rnntrace().current_dir(big.path()).args([
                "lstm",
                "--weights",
                "w.json",
                "--input",
                "x.npy",
                "--dense",
                "d.json",
                "--steps",
                "all",
                "--show-pre",
                "--max-units",
                "16",
            ]),
        );
        let charts = tempfile::tempdir().unwrap();
        for cell in ["lstm", "gru"] {
            go(
                "demo",
                rnntrace()
                    .current_dir(charts.path())
                    .args(["demo", cell, "--color", "never"]),
            );
        }
        go(
            "diagnose",
            rnntrace().args([
                "diagnose",
                "--cell",
                "lstm",
                "--weights",
                diag.join("weights.json").to_str().unwrap(),
                "--input",
                diag.join("input.npy").to_str().unwrap(),
                "--expected",
                diag.join("expected.npy").to_str().unwrap(),
            ]),
        );
        go(
            "inspect",
            rnntrace().args(["inspect", "--model", model.to_str().unwrap()]),
        );
        go(
            "run",
            rnntrace().current_dir(model.parent().unwrap()).args([
                "run",
                "--model",
                "model.keras",
                "--input",
                "input.npy",
                "--expected",
                "expected.npy",
            ]),
        );
        go(
            "explain",
            rnntrace().current_dir(stack.parent().unwrap()).args([
                "explain",
                "--model",
                "model.keras",
                "--input",
                "input.npy",
            ]),
        );
        for (what, out) in &runs {
            assert!(out.lines().count() > 5, "{what} printed too little: {out}");
            let wide = too_wide(out, cols);
            assert!(
                wide.is_empty(),
                "{what} at COLUMNS={cols}:\n{}",
                wide.join("\n")
            );
        }
        // The diagnosis's command is printed whole, on its own line.
        let diagnosis = &runs.iter().find(|(w, _)| w == "diagnose").unwrap().1;
        let cmd = diagnosis
            .lines()
            .find(|l| l.trim_start().starts_with("rnntrace lstm"))
            .expect("a command to copy");
        assert!(
            cmd.contains("--recurrent-activation hard_sigmoid_keras2"),
            "{cmd}"
        );
    }
}

#[test]
fn tables_show_as_many_units_as_fit_and_say_how_to_see_the_rest() {
    let big = tempfile::tempdir().unwrap();
    big_batch(big.path(), 2, 4, 16);
    let at = |cols: &str, extra: &[&str]| {
        let (code, out, err) = run(rnntrace()
            .current_dir(big.path())
            .env("COLUMNS", cols)
            .args(["lstm", "--weights", "w.json", "--input", "x.npy"])
            .args(extra));
        assert_eq!(code, 0, "{err}");
        out
    };
    let units = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("│ Gate"))
            .unwrap()
            .matches(" u")
            .count()
    };
    let narrow = at("80", &[]);
    let wide = at("160", &[]);
    assert!(units(&narrow) >= 3, "{narrow}");
    assert!(units(&wide) > units(&narrow), "{wide}");
    assert_eq!(units(&wide), 8, "--max-units 8 by default");
    let n = units(&narrow);
    assert!(
        narrow.contains(&format!("(units 0–{} of 16 shown", n - 1))
            && narrow.contains(&format!("--units {n}..")),
        "{narrow}"
    );
    let next = at("80", &["--units", &format!("{n}..{}", 2 * n)]);
    let header = next.lines().find(|l| l.starts_with("│ Gate")).unwrap();
    assert!(
        header.contains(&format!(" u{n} ")) && !header.contains(" u0 "),
        "{header}"
    );
}

#[test]
fn a_big_batch_prints_a_readable_default() {
    let big = tempfile::tempdir().unwrap();
    big_batch(big.path(), 300, 50, 16);
    let (code, out, err) = run(rnntrace().current_dir(big.path()).args([
        "lstm",
        "--weights",
        "w.json",
        "--input",
        "x.npy",
        "--dense",
        "d.json",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    let lines = out.lines().count();
    assert!(lines < 1000, "{lines} lines by default");
    // Summary first, then the first sequence: its first steps and the last ones before the prediction.
    let summary = out.find("All predictions").unwrap();
    let first = out.find("══ Sequence 0 of 300").unwrap();
    assert!(summary < first);
    assert_eq!(out.matches("══ Sequence").count(), 1);
    for t in [0, 1, 2, 47, 48, 49] {
        assert!(out.contains(&format!("── Step {t} of 50 ")), "step {t}");
    }
    assert!(!out.contains("── Step 3 of 50 "));
    assert!(out.contains("(steps 3–46 not shown; --steps 3..47 shows them"));
    // The range the note gives shows exactly those steps.
    let (_, more, _) = run(rnntrace().current_dir(big.path()).args([
        "lstm",
        "--weights",
        "w.json",
        "--input",
        "x.npy",
        "--steps",
        "3..47",
    ]));
    assert_eq!(more.matches("── Step ").count(), 44);
    assert!(more.contains("── Step 3 of 50 ") && more.contains("── Step 46 of 50 "));
    let (_, incl, _) = run(rnntrace().current_dir(big.path()).args([
        "lstm",
        "--weights",
        "w.json",
        "--input",
        "x.npy",
        "--steps",
        "10..=12",
    ]));
    assert_eq!(incl.matches("── Step ").count(), 3, "a..=b includes b");
    let (code, _, err) = run(rnntrace().current_dir(big.path()).args([
        "lstm",
        "--weights",
        "w.json",
        "--input",
        "x.npy",
        "--steps",
        "60..70",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("numbered 0 to 49"), "{err}");
}

#[test]
fn saturated_gates_keep_their_digits_and_mismatches_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    let case = case_dir("gru_weather_seed");
    // The framework's output with one value moved by 0.2: a mismatch the table must mark without colour.
    let (shape, mut values) = crate::npy(&case.join("expected.npy"));
    values[3] += 0.2;
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    let exp = dir.path().join("expected.npy");
    std::fs::write(&exp, crate::npy_bytes("<f4", &shape, &payload)).unwrap();
    let (code, out, _) = run(rnntrace().current_dir(&case).args([
        "gru",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--window",
        "2",
        "--dense",
        "dense.json",
        "--targets",
        "targets.npy",
        "--color",
        "never",
        "--expected",
        exp.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    let marked: Vec<&str> = out.lines().filter(|l| l.contains('✗')).collect();
    assert!(marked.iter().any(|l| l.starts_with("│ 3 (row 5)")), "{out}");
    assert!(out.contains("✗: beyond the tolerance"), "{out}");
    // The target 1 (exactly) prints with as many digits as its neighbours.
    assert!(out.contains(" 1.0000 "), "{out}");
    let (_, coloured, _) = run(rnntrace().current_dir(&case).args([
        "gru",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--color",
        "always",
    ]));
    assert!(
        coloured.contains("Colours:"),
        "a legend says what colours mean"
    );
}

#[test]
fn help_is_grouped_with_examples_and_fits_each_cell() {
    let help = |args: &[&str]| {
        let (code, out, err) = run(rnntrace().env("COLUMNS", "100").args(args));
        assert_eq!(code, 0, "{err}");
        out
    };
    let lstm = help(&["lstm", "--help"]);
    for heading in [
        "Input:",
        "Conventions:",
        "Head and comparison:",
        "Display:",
        "Charts:",
        "Output:",
        "Examples:",
    ] {
        assert!(lstm.contains(heading), "lstm --help lacks {heading}");
    }
    assert!(lstm.contains("-w, --weights") && lstm.contains("-i, --input"));
    assert!(lstm.contains("-e, --expected") && lstm.contains("-d, --dense"));
    assert!(lstm.contains("hard_sigmoid_keras2") && lstm.contains("softsign"));
    assert!(
        !lstm.contains("--reset-after"),
        "no GRU-only flag in lstm help"
    );
    let gru = help(&["gru", "--help"]);
    assert!(gru.contains("--reset-after"));
    assert!(!gru.contains("c_t"), "no LSTM-only text in gru help");
    for cmd in ["run", "inspect", "diagnose", "demo", "explain"] {
        assert!(help(&[cmd, "--help"]).contains("Examples:"), "{cmd}");
    }
    // The flags main added sit under read's headings.
    let heading_of = |help: &str, flag: &str| {
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag} missing"));
        help[..at]
            .lines()
            .rev()
            .find(|l| !l.starts_with(' ') && l.ends_with(':'))
            .map(str::to_string)
    };
    let explain = help(&["explain", "--help"]);
    assert!(explain.contains("-m, --model") && explain.contains("-i, --input"));
    for (flag, heading) in [
        ("--module <NAME>", "Input:"),
        ("--methods <LIST>", "Attribution:"),
        ("--dense <D>", "Head and comparison:"),
        ("--plot <FILE>", "Charts:"),
        ("--sequence <N>", "Display:"),
        ("--save <FILE.npz>", "Output:"),
    ] {
        assert_eq!(
            heading_of(&explain, flag).as_deref(),
            Some(heading),
            "explain {flag}"
        );
    }
    let run_help = help(&["run", "--help"]);
    for (flag, heading) in [
        ("--module <NAME>", "Input:"),
        ("--time-major", "Input:"),
        ("--dense <FILE|PREFIX>", "Head and comparison:"),
        ("--plot-layer <NAME>", "Charts:"),
        ("--report <FILE.html>", "Charts:"),
        ("--report-steps <A..B>", "Charts:"),
        ("--steps <", "Display:"),
    ] {
        assert_eq!(
            heading_of(&run_help, flag).as_deref(),
            Some(heading),
            "run {flag}"
        );
    }
    assert!(help(&["inspect", "--help"]).contains("--format"));
}

#[test]
fn inspect_prints_json_on_request() {
    let (code, out, err) = run(rnntrace().args([
        "inspect",
        "-w",
        case_dir("gru_weather_seed")
            .join("weights.json")
            .to_str()
            .unwrap(),
        "--cell",
        "gru",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "rnntrace-inspect/1");
    assert_eq!(v["units"], 4);
    assert_eq!(v["blocks"][0]["gate"], "z");
    let model = fixtures().join("models/functional_linear/model.keras");
    let (code, out, _) =
        run(rnntrace().args(["inspect", "-m", model.to_str().unwrap(), "--format", "json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total_params"], 138);
    assert_eq!(v["layers"][1]["recurrent"]["units"], 4);
}

#[test]
fn errors_point_to_the_fix() {
    let case = case_dir("gru_weather_seed");
    let err_of = |args: &[&str]| {
        let (code, _, err) = run(rnntrace().current_dir(&case).args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        err
    };
    let e = err_of(&["inspect", "-w", "weights.json", "--cell", "lstm"]);
    assert!(e.contains("--cell gru"), "{e}");
    let e = err_of(&["inspect"]);
    assert!(e.contains("--model") && e.contains("--weights"), "{e}");
    let e = err_of(&["run", "-m", "weights.json", "-i", "input.npy"]);
    assert!(e.contains("rnntrace gru --weights"), "{e}");
    let e = err_of(&[
        "gru",
        "-w",
        "weights.json",
        "-i",
        "input.npy",
        "--window",
        "2",
        "-e",
        "expected.npy",
    ]);
    assert!(e.contains("--dense"), "{e}");
    // A 1-column scaler on a layer of 4 units with no head would be applied to every unit: refused.
    let e = err_of(&[
        "gru",
        "-w",
        "weights.json",
        "-i",
        "input.npy",
        "--window",
        "2",
        "--inverse-scale",
        "scaler.json",
    ]);
    assert!(
        e.contains("scaler.json") && e.contains("one column per output"),
        "{e}"
    );
    // A 2-D input without --window is one sequence; the note says how to cut it into windows.
    let (code, _, err) = run(rnntrace().current_dir(&case).args([
        "gru",
        "-w",
        "weights.json",
        "-i",
        "input.npy",
        "-q",
    ]));
    assert_eq!(code, 0);
    assert!(err.contains("--window K"), "{err}");
}

#[test]
fn prediction_charts_show_points_residuals_and_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let case = case_dir("gru_weather_seed");
    let (shape, mut values) = crate::npy(&case.join("expected.npy"));
    values[3] += 0.2;
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    let exp = dir.path().join("expected.npy");
    std::fs::write(&exp, crate::npy_bytes("<f4", &shape, &payload)).unwrap();
    let svg = dir.path().join("p.svg");
    let (code, _, err) = run(rnntrace().current_dir(&case).args([
        "gru",
        "-w",
        "weights.json",
        "-i",
        "input.npy",
        "--window",
        "2",
        "-d",
        "dense.json",
        "-q",
        "-e",
        exp.to_str().unwrap(),
        "--plot-predictions",
        svg.to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("ours − framework"), "a residual panel");
    assert!(text.contains("beyond tolerance") && text.contains("1 value beyond"));
    // Without --expected or --targets the chart says what it draws.
    let (code, _, _) = run(rnntrace().current_dir(&case).args([
        "gru",
        "-w",
        "weights.json",
        "-i",
        "input.npy",
        "--window",
        "2",
        "-d",
        "dense.json",
        "-q",
        "--plot-predictions",
        svg.to_str().unwrap(),
    ]));
    assert_eq!(code, 0);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("ours only"));
}

#[test]
fn chart_choices_are_checked() {
    let case = case_dir("gru_weather_seed");
    let (code, _, err) = run(rnntrace().current_dir(&case).args([
        "gru",
        "-w",
        "weights.json",
        "-i",
        "input.npy",
        "--plot-sequence",
        "1",
    ]));
    assert_eq!(
        code, 2,
        "--plot-sequence without --plot-gates would be ignored"
    );
    assert!(err.contains("--plot-gates"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("s.svg");
    let model = fixtures().join("models/stacked_seed");
    let run_layer = |name: &str| {
        run(rnntrace().current_dir(&model).args([
            "run",
            "-m",
            "model.keras",
            "-i",
            "input.npy",
            "-q",
            "--plot",
            svg.to_str().unwrap(),
            "--plot-layer",
            name,
        ]))
    };
    let (code, _, err) = run_layer("lstm");
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_to_string(&svg)
            .unwrap()
            .contains("layer &apos;lstm&apos;")
    );
    let (code, _, _) = run_layer("lstm_1");
    assert_eq!(code, 0);
    assert!(
        std::fs::read_to_string(&svg)
            .unwrap()
            .contains("layer &apos;lstm_1&apos;")
    );
    let (code, _, err) = run_layer("nope");
    assert_eq!(code, 2);
    assert!(err.contains("lstm_1"), "{err}");
}

#[test]
fn long_heat_maps_say_how_columns_are_averaged_and_take_a_step_range() {
    let big = tempfile::tempdir().unwrap();
    big_batch(big.path(), 1, 1000, 4);
    let svg = big.path().join("g.svg");
    let draw = |extra: &[&str]| {
        let (code, _, err) = run(rnntrace()
            .current_dir(big.path())
            .args(["lstm", "-w", "w.json", "-i", "x.npy", "-q", "--plot-gates"])
            .arg(&svg)
            .args(extra));
        assert_eq!(code, 0, "{err}");
        std::fs::read_to_string(&svg).unwrap()
    };
    let all = draw(&[]);
    assert!(
        all.contains("each column is the mean of 5 consecutive steps"),
        "1000 steps in 200 columns"
    );
    let some = draw(&["--steps", "100..160"]);
    assert!(some.contains("steps 100–159 of 1000"));
    assert!(!some.contains("each column is the mean"));
}

/// The font's combining tilde sits at x-height and crossed h's ascender: the title keeps the letter and the
/// chart draws the tilde above it.
#[test]
fn the_candidate_tilde_is_drawn_clear_of_the_ascender() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("g.svg");
    let (code, _, err) = run(rnntrace()
        .current_dir(case_dir("gru_weather_seed"))
        .args([
            "gru",
            "-w",
            "weights.json",
            "-i",
            "input.npy",
            "-q",
            "--plot-gates",
        ])
        .arg(&svg));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("h: candidate h (tanh)"),
        "the letter without the combining mark"
    );
    assert!(
        !text.contains('\u{303}'),
        "no combining tilde left for the font to misplace"
    );
}

/// PyTorch arrays in parameters() order, or Keras arrays stored transposed: the message names the way out.
#[test]
fn pytorch_order_and_transposed_arrays_are_recognised_in_messages() {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("torch/lstm_2layer/state.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"];
    let positional: Vec<&serde_json::Value> = names.iter().map(|n| &state[*n]).collect();
    let pos = dir.path().join("pos.json");
    std::fs::write(&pos, serde_json::to_string(&positional).unwrap()).unwrap();
    // Keras's three arrays, each transposed: (4H, F), (4H, H), bias.
    let transposed = dir.path().join("t.json");
    std::fs::write(
        &transposed,
        serde_json::to_string(&[&state[names[0]], &state[names[1]], &state[names[2]]]).unwrap(),
    )
    .unwrap();
    let input = fixtures().join("torch/lstm_2layer/input.npy");
    for (w, want) in [
        (&pos, "--layout pytorch"),
        (&transposed, "looks transposed"),
    ] {
        let (code, _, err) = run(rnntrace().args(["lstm", "-w"]).arg(w).arg("-i").arg(&input));
        assert_eq!(code, 2);
        assert!(err.contains(want), "{err}");
    }
}
