//! Golden tests: each case in fixtures/cases was written by real Keras; rnntrace must reproduce every
//! per-step state and every prediction.
//!
//! Tolerance: 1e-5 absolute. Both sides compute in float32, whose rounding step (ulp) is 6e-8 near 1 and
//! 4e-6 near 50 (the largest outputs here); summation order and the transcendental implementations
//! (Eigen's vs Rust's libm) differ by a few ulps per step, so honest agreement sits near 1e-6 and a real
//! bug (a wrong block, a missing bias, a swapped update) is orders of magnitude above 1e-5.

use crate::{case_dir, npy, rnntrace, run};
use serde_json::Value;
use std::path::Path;

fn manifest(name: &str) -> Value {
    let p = case_dir(name).join("case.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Largest |a − b|, failing the test with the place it happened if beyond `atol`.
fn assert_close(what: &str, ours: &[f64], theirs: &[f64], shape: &[usize], atol: f64) -> f64 {
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{what}: {} values vs Keras's {} (shape {shape:?})",
        ours.len(),
        theirs.len()
    );
    let mut worst = 0.0f64;
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let e = (a - b).abs();
        assert!(
            e <= atol,
            "{what}: element {i} of shape {shape:?}: ours {a}, Keras {b}, |diff| {e} > {atol}"
        );
        worst = worst.max(e);
    }
    worst
}

/// Flattens trace field `get(step)` over sequences and steps, (B, T, u) order.
fn collect_steps(trace: &Value, field: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for seq in trace["layers"][0]["sequences"].as_array().unwrap() {
        for step in seq["steps"].as_array().unwrap() {
            for v in step["state"][field].as_array().unwrap() {
                out.push(v.as_f64().expect("finite value"));
            }
        }
    }
    out
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

/// Runs one golden case in every weights format it ships, checking states and predictions.
pub fn check_case(name: &str) {
    let m = manifest(name);
    let dir = case_dir(name);
    let cell = m["cell"].as_str().unwrap();
    let atol = m["atol"].as_f64().unwrap_or(1e-5);
    let args = strings(&m["args"]);
    let (h_shape, h_seq) = npy(&dir.join(m["h_seq"].as_str().unwrap()));
    let c_seq = m["c_seq"].as_str().map(|c| npy(&dir.join(c)));
    let (e_shape, expected) = npy(&dir.join(m["expected"].as_str().unwrap()));
    let formats = strings(&m["weights"]);
    assert!(!formats.is_empty(), "{name}: no weights files");
    // Every format with the kernels this CPU gets (fused steps where they apply), and the first format
    // again with the AVX2 fused kernels (the portable ones on a CPU without AVX2) and with the portable
    // kernels, so every implementation meets the framework's numbers.
    let runs = formats
        .iter()
        .map(|w| (w, "auto"))
        .chain([(&formats[0], "avx2"), (&formats[0], "portable")]);
    for (w, kernels) in runs {
        let what = format!("{name} [{w}, {kernels} kernels]");
        let mut cmd = rnntrace();
        cmd.env("RNNTRACE_KERNELS", kernels);
        let (code, stdout, stderr) = run(cmd
            .current_dir(&dir)
            .arg(cell)
            .args([
                "--weights",
                w,
                "--input",
                m["input"].as_str().unwrap(),
                "--format",
                "json",
            ])
            .args(&args));
        assert_eq!(code, 0, "{what}: exit {code}\n{stderr}");
        let trace: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: bad JSON: {e}"));
        assert_close(
            &format!("{what} h per step"),
            &collect_steps(&trace, "h"),
            &h_seq,
            &h_shape,
            atol,
        );
        if let Some((c_shape, c_seq)) = &c_seq {
            assert_close(
                &format!("{what} c per step"),
                &collect_steps(&trace, "c"),
                c_seq,
                c_shape,
                atol,
            );
        }
        assert_close(
            &format!("{what} predictions"),
            &flat(&trace["predictions"]),
            &expected,
            &e_shape,
            atol,
        );
    }
    // The same run, compared by rnntrace itself: exit 0 and a PASS verdict.
    let (code, stdout, stderr) = run(rnntrace()
        .current_dir(&dir)
        .arg(cell)
        .args([
            "--weights",
            &formats[0],
            "--input",
            m["input"].as_str().unwrap(),
            "--quiet",
        ])
        .args(["--expected", m["expected"].as_str().unwrap()])
        .args(&args));
    assert_eq!(
        code, 0,
        "{name} --expected: exit {code}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("PASS"), "{name}: {stdout}");
    // Keras's own unit tests hard-code their expected outputs; those must hold too.
    if let Some(k) = m["extra"].get("keras_test_expected") {
        let (code, stdout, _) = run(rnntrace()
            .current_dir(&dir)
            .arg(cell)
            .args([
                "--weights",
                &formats[0],
                "--input",
                m["input"].as_str().unwrap(),
                "--format",
                "json",
            ])
            .args(&args));
        assert_eq!(code, 0);
        let trace: Value = serde_json::from_str(&stdout).unwrap();
        let theirs = flat(&k["output"]);
        let ours = flat(&trace["predictions"]);
        assert_close(
            &format!("{name} vs {}", k["test"]),
            &ours,
            &theirs,
            &[theirs.len()],
            1e-5,
        );
    }
}

macro_rules! golden {
    ($($case:ident),* $(,)?) => {
        $(#[test] fn $case() { check_case(stringify!($case)); })*
        /// Every case directory is listed above, so none is silently skipped.
        #[test]
        fn every_case_is_tested() {
            let listed = [$(stringify!($case)),*];
            let dir = crate::fixtures().join("cases");
            for e in std::fs::read_dir(&dir).unwrap() {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                if Path::new(&dir).join(&n).join("case.json").exists() {
                    assert!(listed.contains(&n.as_str()), "fixture case {n} has no golden test");
                }
            }
        }
    };
}

golden!(
    act_elu,
    act_exponential,
    act_gelu,
    act_leaky_relu,
    act_linear,
    act_relu6,
    act_selu,
    act_sigmoid,
    act_silu,
    act_softplus,
    act_softsign,
    act_tanh,
    gru_carry_state,
    gru_go_backwards,
    gru_hard_sigmoid,
    gru_hard_sigmoid_keras2,
    gru_initial_state_broadcast,
    gru_masking_value,
    gru_no_bias,
    gru_no_bias_reset_after_false,
    gru_reset_after_false,
    gru_reset_after_false_explicit,
    gru_reset_after_true_bias,
    gru_weather_seed,
    keras_test_gru_correctness,
    keras_test_gru_correctness_go_backwards,
    keras_test_gru_correctness_no_bias,
    keras_test_gru_correctness_reset_after_false,
    keras_test_gru_initial_state,
    keras_test_gru_initial_state_go_backwards,
    keras_test_gru_masking,
    keras_test_gru_masking_go_backwards,
    keras_test_gru_statefulness,
    keras_test_lstm_correctness,
    keras_test_lstm_correctness_go_backwards,
    keras_test_lstm_correctness_no_bias,
    keras_test_lstm_correctness_no_unit_forget_bias,
    keras_test_lstm_initial_state,
    keras_test_lstm_initial_state_go_backwards,
    keras_test_lstm_masking,
    keras_test_lstm_masking_go_backwards,
    keras_test_lstm_statefulness,
    lstm_carry_state,
    lstm_dense_softmax,
    lstm_float64,
    lstm_go_backwards,
    lstm_hard_sigmoid,
    lstm_hard_sigmoid_keras2,
    lstm_initial_state,
    lstm_initial_state_masked,
    lstm_mask_file,
    lstm_masking_value,
    lstm_no_bias,
    lstm_relu,
    lstm_units1_seed,
    lstm_weather_seed,
);

/// PyTorch fixtures (fixtures/generate_torch.py): every layer and direction of each state dict, in both
/// the .npz and JSON forms, against PyTorch's own per-step h (and c). Same 1e-5 tolerance and reasoning.
fn check_torch_case(name: &str) {
    let dir = crate::fixtures().join("torch").join(name);
    let m: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
    let cell = m["cell"].as_str().unwrap();
    for (sfx, files) in m["files"].as_object().unwrap() {
        let layer: String = sfx
            .trim_start_matches("_l")
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let reverse = sfx.ends_with("_reverse");
        let (h_shape, h_seq) = npy(&dir.join(files["h_seq"].as_str().unwrap()));
        let c_seq = files["c_seq"].as_str().map(|c| npy(&dir.join(c)));
        for w in ["state.npz", "state.json"] {
            let what = format!("torch {name}{sfx} [{w}]");
            let mut cmd = rnntrace();
            cmd.current_dir(&dir).arg(cell).args([
                "--weights",
                w,
                "--input",
                files["input"].as_str().unwrap(),
                "--layer",
                &layer,
                "--format",
                "json",
            ]);
            if reverse {
                cmd.arg("--reverse");
            }
            let (code, stdout, stderr) = run(&mut cmd);
            assert_eq!(code, 0, "{what}: {stderr}");
            let trace: Value = serde_json::from_str(&stdout).unwrap();
            assert_close(
                &format!("{what} h"),
                &collect_steps(&trace, "h"),
                &h_seq,
                &h_shape,
                1e-5,
            );
            if let Some((c_shape, c_seq)) = &c_seq {
                assert_close(
                    &format!("{what} c"),
                    &collect_steps(&trace, "c"),
                    c_seq,
                    c_shape,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn torch_lstm_2layer() {
    check_torch_case("lstm_2layer");
}
#[test]
fn torch_gru_2layer() {
    check_torch_case("gru_2layer");
}
#[test]
fn torch_lstm_bidirectional() {
    check_torch_case("lstm_bidirectional");
}
#[test]
fn torch_gru_bidirectional() {
    check_torch_case("gru_bidirectional");
}
#[test]
fn torch_lstm_no_bias() {
    check_torch_case("lstm_no_bias");
}
#[test]
fn torch_gru_no_bias() {
    check_torch_case("gru_no_bias");
}

/// ONNX-layout fixtures (fixtures/generate_onnx.py): W/R/B initializers of a PyTorch-exported ONNX model,
/// against onnxruntime's own per-step outputs, both directions. Same 1e-5 tolerance and reasoning.
fn check_onnx_case(name: &str) {
    let dir = crate::fixtures().join("onnx").join(name);
    let m: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
    let cell = m["cell"].as_str().unwrap();
    for d in 0..2 {
        let (shape, want) = npy(&dir.join(format!("h_seq_d{d}.npy")));
        let mut cmd = rnntrace();
        cmd.current_dir(&dir).arg(cell).args([
            "--weights",
            "weights.npz",
            "--input",
            "input.npy",
            "--layout",
            "onnx",
            "--format",
            "json",
        ]);
        if d == 1 {
            cmd.arg("--reverse");
        }
        if m["linear_before_reset"] == 1 {
            cmd.args(["--reset-after", "true"]);
        }
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{name} d{d}: {err}");
        let trace: Value = serde_json::from_str(&out).unwrap();
        assert_close(
            &format!("onnx {name} direction {d}"),
            &collect_steps(&trace, "h"),
            &want,
            &shape,
            1e-5,
        );
    }
}

#[test]
fn onnx_lstm_bidirectional() {
    check_onnx_case("lstm_bidirectional");
}
#[test]
fn onnx_gru_bidirectional_linear_before_reset() {
    check_onnx_case("gru_bidirectional");
}
