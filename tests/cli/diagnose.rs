//! `rnntrace diagnose`: each case in fixtures/diagnose was produced by a real framework with a convention
//! the user's flags do not state (see fixtures/generate_diagnose.py); diagnose must name it, say how to
//! rerun, and do it fast.

use crate::{case_dir, fixtures, rnntrace, run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Release builds (`cargo test --release`), small cases: the whole search must stay well under this. Debug
/// builds do not check wall-clock time (their speed says nothing; benches measure it).
const FAST: Duration = Duration::from_secs(5);

/// Every field a candidate reports.
const FIELDS: &[&str] = &[
    "activation",
    "recurrent_activation",
    "reset_after",
    "go_backwards",
    "gate_order",
    "carry_state",
    "dense_activation",
    "max_abs_error",
    "matches",
    "transposed",
    "gru_update",
];

fn diagnose_dir(name: &str) -> PathBuf {
    fixtures().join("diagnose").join(name)
}

fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join("diagnose"))
        .expect("fixtures/diagnose exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("case.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 15, "expected the diagnose fixtures, found {v:?}");
    v
}

fn manifest(dir: &Path) -> Value {
    let p = dir.join("case.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The arguments of a case's diagnose run (the user's flags included).
fn diagnose_args(m: &Value) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "diagnose".into(),
        "--cell".into(),
        m["cell"].as_str().unwrap().into(),
        "--weights".into(),
        m["weights"].as_str().unwrap().into(),
        "--input".into(),
        m["input"].as_str().unwrap().into(),
        "--expected".into(),
        m["expected"].as_str().unwrap().into(),
    ];
    a.extend(strings(&m["args"]));
    a
}

/// Runs diagnose in `dir` with `args`, timing it.
fn timed(dir: &Path, args: &[String]) -> (i32, String, String, Duration) {
    let t = Instant::now();
    let (code, out, err) = run(rnntrace().current_dir(dir).args(args));
    (code, out, err, t.elapsed())
}

fn json_of(name: &str, out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{name}: JSON output: {e}\n{out}"))
}

/// Diagnoses fixture `name` (JSON and text) and checks the best candidate against the fixture's manifest.
fn is_diagnosed_with_the_right_best_candidate(name: &str) {
    let name = name.to_string();
    {
        let dir = diagnose_dir(&name);
        let m = manifest(&dir);
        let want_code = m["exit_code"].as_i64().unwrap() as i32;
        let mut args = diagnose_args(&m);
        args.extend(["--format".to_string(), "json".to_string()]);
        let (code, out, err, took) = timed(&dir, &args);
        assert_eq!(code, want_code, "{name}: exit {code}\n{err}\n{out}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(
            cfg!(debug_assertions) || took < FAST,
            "{name}: took {took:?}"
        );
        let j = json_of(&name, &out);
        let best = &j["best"];
        for f in FIELDS {
            assert!(best.get(f).is_some(), "{name}: best lacks {f}: {best}");
        }
        assert_eq!(best["matches"].as_bool(), Some(want_code == 0), "{name}");
        if let Some(d) = m["diagnosis"].as_object() {
            for (k, v) in d {
                assert_eq!(&best[k], v, "{name}: best.{k}: {best}");
            }
            assert!(best["max_abs_error"].as_f64().unwrap() <= 1e-5, "{name}");
        }
        let cands = j["candidates"].as_array().unwrap();
        assert!(!cands.is_empty(), "{name}: no ranking");
        assert_eq!(&cands[0], best, "{name}: the best is the first candidate");
        for c in cands {
            for f in FIELDS {
                assert!(c.get(f).is_some(), "{name}: candidate lacks {f}: {c}");
            }
        }
        let div = &j["first_divergence"];
        if m["first_divergence"].as_bool().unwrap() {
            for k in ["sequence", "step", "gate", "unit", "ours", "best"] {
                assert!(
                    div.get(k).is_some(),
                    "{name}: first_divergence lacks {k}: {div}"
                );
            }
            let (a, b) = (div["ours"].as_f64(), div["best"].as_f64());
            if let (Some(a), Some(b)) = (a, b) {
                assert!(
                    (a - b).abs() > 1e-5,
                    "{name}: a divergence must differ: {div}"
                );
            }
        } else {
            assert!(div.is_null(), "{name}: expected no divergence: {div}");
        }

        // The text paragraph gives the advice a user can act on, with the same exit code.
        let (code, text, err, took) = timed(&dir, &diagnose_args(&m));
        assert_eq!(code, want_code, "{name}: text exit {code}\n{err}");
        assert!(
            cfg!(debug_assertions) || took < FAST,
            "{name}: text took {took:?}"
        );
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in strings(&m["advice"]) {
            assert!(
                flat.contains(&needle),
                "{name}: text should contain {needle:?}:\n{text}"
            );
        }
        assert!(
            text.contains("Ranking"),
            "{name}: the ranking is printed:\n{text}"
        );
    }
}

/// The flags outside the convention a case's user passes (--window, --dense, --mask-value).
fn data_args(m: &Value) -> Vec<String> {
    let args = strings(&m["args"]);
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if matches!(args[i].as_str(), "--window" | "--dense" | "--mask-value") {
            out.extend(args[i..i + 2].iter().cloned());
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Follows fixture `name`'s advice (its rerun command, with the rewritten weights) and checks it reproduces
/// the framework's output (fixtures with no match have no advice to follow).
fn following_the_advice_reproduces_the_expected_output(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let name = name.to_string();
    {
        let dir = diagnose_dir(&name);
        let m = manifest(&dir);
        if m["exit_code"].as_i64() != Some(0) {
            return;
        }
        let fixed = tmp.path().join(format!("{name}.json"));
        let mut args = diagnose_args(&m);
        args.extend([
            "--format".into(),
            "json".into(),
            "--write-weights".into(),
            fixed.to_str().unwrap().into(),
        ]);
        let (code, out, err, _) = timed(&dir, &args);
        assert_eq!(code, 0, "{name}: {err}");
        let j = json_of(&name, &out);
        let rerun = &j["rerun"];
        let weights = if rerun["weights_converted"].as_bool().unwrap() {
            fixed.to_str().unwrap().to_string()
        } else {
            m["weights"].as_str().unwrap().to_string()
        };
        assert!(fixed.is_file(), "{name}: --write-weights wrote nothing");
        let mut cmd: Vec<String> = vec![
            m["cell"].as_str().unwrap().into(),
            "--weights".into(),
            weights,
            "--input".into(),
            "input.npy".into(),
            "--expected".into(),
            "expected.npy".into(),
            "-q".into(),
        ];
        cmd.extend(data_args(&m));
        cmd.extend(strings(&rerun["flags"]));
        let (code, out, err) = run(rnntrace().current_dir(&dir).args(&cmd));
        assert_eq!(
            code,
            0,
            "{name}: `rnntrace {}` should reproduce the output\n{out}\n{err}",
            cmd.join(" ")
        );
        // The command in the paragraph is the same one.
        let command = rerun["command"].as_str().unwrap();
        for f in strings(&rerun["flags"]) {
            assert!(command.contains(&f), "{name}: {command} lacks {f}");
        }
    }
}

#[test]
fn right_flags_are_the_best_with_no_divergence() {
    let dir = diagnose_dir("lstm_correct_flags");
    let m = manifest(&dir);
    let mut args = diagnose_args(&m);
    args.extend(["--format".to_string(), "json".to_string()]);
    let (code, out, err, _) = timed(&dir, &args);
    assert_eq!(code, 0, "{err}");
    let j = json_of("lstm_correct_flags", &out);
    assert!(j["first_divergence"].is_null(), "{}", j["first_divergence"]);
    assert_eq!(j["best"]["differs_from_yours"], serde_json::json!([]));
    assert_eq!(j["yours"]["matches"], Value::Bool(true));
    assert_eq!(j["yours"]["runnable"], Value::Bool(true));
    assert!(
        j["rerun"]["flags"] == serde_json::json!(["--recurrent-activation", "hard_sigmoid_keras2"])
    );
}

#[test]
fn golden_cases_with_their_own_flags_are_confirmed() {
    // Real Keras outputs with the flags that reproduce them: diagnose must agree with the user.
    for name in [
        "lstm_weather_seed",
        "gru_reset_after_false",
        "gru_carry_state",
        "lstm_dense_softmax",
        "act_gelu",
        "gru_hard_sigmoid",
        "lstm_masking_value",
        "keras_test_gru_correctness_go_backwards",
    ] {
        let dir = case_dir(name);
        let m = manifest(&dir);
        let mut args: Vec<String> = vec![
            "diagnose".into(),
            "--cell".into(),
            m["cell"].as_str().unwrap().into(),
            "--weights".into(),
            "weights.json".into(),
            "--input".into(),
            "input.npy".into(),
            "--expected".into(),
            "expected.npy".into(),
            "--format".into(),
            "json".into(),
        ];
        let case_args = strings(&m["args"]);
        let mut i = 0;
        while i < case_args.len() {
            if case_args[i] == "--targets" {
                i += 2;
                continue;
            }
            args.push(case_args[i].clone());
            i += 1;
        }
        let (code, out, err, took) = timed(&dir, &args);
        assert_eq!(code, 0, "{name}: {err}\n{out}");
        assert!(
            cfg!(debug_assertions) || took < FAST,
            "{name}: took {took:?}"
        );
        let j = json_of(name, &out);
        assert_eq!(
            j["best"]["differs_from_yours"],
            serde_json::json!([]),
            "{name}: {}",
            j["best"]
        );
        assert!(j["first_divergence"].is_null(), "{name}");
    }
}

#[test]
fn no_match_still_ranks_and_exits_1() {
    let dir = diagnose_dir("lstm_no_match");
    let m = manifest(&dir);
    let mut args = diagnose_args(&m);
    args.extend(["--format".to_string(), "json".to_string()]);
    let (code, out, _, _) = timed(&dir, &args);
    assert_eq!(code, 1);
    let j = json_of("lstm_no_match", &out);
    assert_eq!(j["best"]["matches"], Value::Bool(false));
    let cands = j["candidates"].as_array().unwrap();
    assert!(cands.len() >= 3, "{cands:?}");
    assert!(cands.iter().all(|c| c["matches"] == Value::Bool(false)));
    let errs: Vec<f64> = cands
        .iter()
        .filter(|c| c["sequences_compared"] == j["sequences"])
        .map(|c| c["max_abs_error"].as_f64().unwrap())
        .collect();
    assert!(
        errs.windows(2).all(|w| w[0] <= w[1]),
        "ranked by error: {errs:?}"
    );
}

/// Bad input: exit 2, one line naming the file or flag, nothing on stdout, no panic.
fn fails_with(dir: &Path, args: &[String], needles: &[&str]) {
    let (code, out, err) = run(rnntrace().current_dir(dir).args(args));
    assert_eq!(code, 2, "{args:?}: exit {code}\n{out}\n{err}");
    assert!(out.is_empty(), "{args:?}: {out}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(
            err.contains(n),
            "{args:?}: stderr should contain {n:?}: {err}"
        );
    }
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let dir = diagnose_dir("lstm_relu");
    let args = |weights: &str, extra: &[&str]| -> Vec<String> {
        [
            "diagnose",
            "--cell",
            "lstm",
            "--weights",
            weights,
            "--input",
            "input.npy",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    fails_with(
        &dir,
        &args("weights.json", &["--expected", "nope.npy"]),
        &["nope.npy"],
    );
    // Expected output of another shape.
    let other = diagnose_dir("gru_return_sequences_go_backwards").join("expected.npy");
    fails_with(
        &dir,
        &args("weights.json", &["--expected", other.to_str().unwrap()]),
        &["expected.npy", "expected output has shape"],
    );
    fails_with(
        &dir,
        &args(
            "weights.json",
            &["--expected", "expected.npy", "--activation", "tanhh"],
        ),
        &["--activation", "unknown activation"],
    );
    fails_with(
        &dir,
        &args(
            "weights.json",
            &[
                "--expected",
                "expected.npy",
                "--dense-activation",
                "softmax",
            ],
        ),
        &["--dense-activation needs --dense"],
    );
    fails_with(
        &dir,
        &args(
            "weights.json",
            &[
                "--expected",
                "expected.npy",
                "--write-weights",
                "weights.json",
            ],
        ),
        &["weights.json", "refusing to write over it"],
    );
    // GRU weights diagnosed as an LSTM: the loader's message, which says which cell fits.
    let gru = diagnose_dir("gru_stateful").join("weights.json");
    fails_with(
        &dir,
        &args(gru.to_str().unwrap(), &["--expected", "expected.npy"]),
        &["weights.json", "GRU weights"],
    );
}

/// Per fixture, one module with its two tests (a failure names its fixture); and a check that every
/// fixture directory is listed, so none is silently skipped.
macro_rules! diagnose_cases {
    ($($case:ident),* $(,)?) => {
        $(mod $case {
            #[test]
            fn is_diagnosed_with_the_right_best_candidate() {
                super::is_diagnosed_with_the_right_best_candidate(stringify!($case));
            }
            #[test]
            fn following_the_advice_reproduces_the_expected_output() {
                super::following_the_advice_reproduces_the_expected_output(stringify!($case));
            }
        })*

        #[test]
        fn every_diagnose_fixture_is_tested() {
            let listed = [$(stringify!($case)),*];
            for n in cases() {
                assert!(listed.contains(&n.as_str()), "diagnose fixture {n} has no test");
            }
        }
    };
}

diagnose_cases!(
    gru_keras2_hard_sigmoid_reset_after_false,
    gru_no_bias_reset_after_false,
    gru_pytorch_gate_order,
    gru_return_sequences_go_backwards,
    gru_stateful,
    gru_textbook_update,
    lstm_correct_flags,
    lstm_dense_softmax_forgotten,
    lstm_go_backwards_masked,
    lstm_keras2_hard_sigmoid,
    lstm_no_match,
    lstm_onnx_gate_order,
    lstm_pytorch_state_dict,
    lstm_relu,
    lstm_spurious_flags,
    lstm_tf1_gate_order_go_backwards,
    lstm_transposed_kernel,
);
