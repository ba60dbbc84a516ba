//! `rnntrace explain` against goldens from tf.GradientTape and torch.autograd
//! (`fixtures/generate_explain.py`, versions in `fixtures/explain/VERSIONS.json`).
//!
//! Tolerances (issue 14): gradients within 1e-4 of the largest |value| in float32 (the frameworks and
//! rnntrace sum in different orders and use different exp/tanh; 1e-4 leaves room for that over a few
//! dozen steps, and a wrong derivative is off by far more), 1e-9 in float64 against float64 autograd;
//! integrated gradients' completeness within 1% of |f(x) − f(b)|; saturation shares exactly equal to the
//! numpy recount over the framework's gates.

use super::{fixtures, npy, rnntrace, run};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn explain_dir() -> PathBuf {
    fixtures().join("explain")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(explain_dir())
        .expect("fixtures/explain")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").exists())
        .collect();
    v.sort();
    assert!(
        v.len() >= 20,
        "the generator writes 22 cases; found {}",
        v.len()
    );
    v
}

pub(super) fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Flattens nested JSON arrays of numbers.
pub(super) fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Null => vec![f64::NAN],
        other => panic!("not a number: {other}"),
    }
}

/// The largest |a − b| relative to the largest |b| (at least `floor`).
pub(super) fn rel_err(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Runs explain on one case with every method and returns (case.json, the JSON output).
fn run_case(dir: &Path, extra: &[&str]) -> (Value, Value) {
    let case = read_json(&dir.join("case.json"));
    let mut cmd = rnntrace();
    cmd.current_dir(dir).arg("explain");
    for a in case["args"].as_array().unwrap() {
        cmd.arg(a.as_str().unwrap());
    }
    cmd.args(["--input", "input.npy", "--format", "json"])
        .args(["--output", &case["output"].to_string()])
        .args(["--precision", case["precision"].as_str().unwrap()])
        .args(extra);
    if !extra.contains(&"--methods") {
        cmd.args(["--methods", "all"]);
    }
    if !extra.contains(&"--ig-steps") {
        cmd.args(["--ig-steps", &case["ig_steps"].to_string()]);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{}: {err}", dir.display());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (case, v)
}

/// Every case: predictions, gradients (TF, and torch where written), the initial-state term, input ×
/// gradient, integrated gradients and their completeness, occlusion, saturation shares.
#[test]
fn explain_matches_framework_goldens() {
    let mut worst = Vec::new();
    for dir in cases() {
        let (case, v) = run_case(&dir, &[]);
        let name = case["name"].as_str().unwrap().to_string();
        let f64_run = case["precision"] == "f64";
        let tol = if f64_run { 1e-9 } else { 1e-4 };
        assert_eq!(v["format"], "rnntrace-explain/1");
        assert_eq!(
            v["methods"],
            serde_json::json!([
                "gradient",
                "input_x_gradient",
                "integrated_gradients",
                "occlusion"
            ])
        );
        let (_, pred) = npy(&dir.join("pred.npy"));
        let e = rel_err(&flat(&v["prediction"]), &pred, 1.0);
        assert!(e < tol, "{name}: prediction off by {e}");
        let (_, bpred) = npy(&dir.join("baseline_pred.npy"));
        let e = rel_err(&flat(&v["baseline_prediction"]), &bpred, 1.0);
        assert!(e < tol, "{name}: baseline prediction off by {e}");

        let (shape, grad) = npy(&dir.join("grad.npy"));
        let got = flat(&v["attributions"]["gradient"]);
        let e = rel_err(&got, &grad, 0.0);
        worst.push((name.clone(), "gradient", e));
        assert!(
            e < tol,
            "{name}: gradient off by {e} (relative to the largest)"
        );
        let arr = v["attributions"]["gradient"].as_array().unwrap();
        assert_eq!(arr.len(), shape[0], "{name}: B");
        assert_eq!(arr[0].as_array().unwrap().len(), shape[1], "{name}: T");
        if dir.join("torch_grad.npy").exists() {
            let (_, tg) = npy(&dir.join("torch_grad.npy"));
            let e = rel_err(&got, &tg, 0.0);
            worst.push((name.clone(), "gradient vs torch", e));
            assert!(e < tol, "{name}: gradient off torch's by {e}");
        }
        if case["has_initial_state"] == true {
            let (_, h) = npy(&dir.join("h0_grad.npy"));
            let e = rel_err(&flat(&v["initial_state_gradient"]["h"]), &h, 0.0);
            worst.push((name.clone(), "h0 gradient", e));
            assert!(e < tol, "{name}: h0 gradient off by {e}");
            if dir.join("c0_grad.npy").exists() {
                let (_, c) = npy(&dir.join("c0_grad.npy"));
                let e = rel_err(&flat(&v["initial_state_gradient"]["c"]), &c, 0.0);
                assert!(e < tol, "{name}: c0 gradient off by {e}");
            } else {
                assert!(
                    v["initial_state_gradient"]["c"].is_null(),
                    "{name}: c0 of a cell without c"
                );
            }
            if dir.join("torch_h0_grad.npy").exists() {
                let (_, h) = npy(&dir.join("torch_h0_grad.npy"));
                let e = rel_err(&flat(&v["initial_state_gradient"]["h"]), &h, 0.0);
                assert!(e < tol, "{name}: h0 gradient off torch's by {e}");
            }
        }
        let (_, x) = npy(&dir.join("input.npy"));
        let ixg: Vec<f64> = grad.iter().zip(&x).map(|(g, x)| g * x).collect();
        let e = rel_err(&flat(&v["attributions"]["input_x_gradient"]), &ixg, 0.0);
        assert!(e < tol, "{name}: input × gradient off by {e}");

        let (_, ig) = npy(&dir.join("ig.npy"));
        let got_ig = flat(&v["attributions"]["integrated_gradients"]);
        let e = rel_err(&got_ig, &ig, 0.0);
        worst.push((name.clone(), "integrated gradients", e));
        assert!(e < tol, "{name}: integrated gradients off by {e}");
        let comp = flat(&v["completeness"]);
        // (Masking with a masked baseline makes f jump at the baseline: see the generator.)
        let defined = case["completeness_defined"] == true;
        for (b, c) in comp.iter().enumerate().filter(|_| defined) {
            let d = (pred[b] - bpred[b]).abs();
            assert!(
                c.abs() <= 0.01 * d,
                "{name}: sequence {b}: completeness gap {c} vs |f(x) − f(b)| {d}"
            );
        }

        let (_, occ) = npy(&dir.join("occlusion.npy"));
        let e = rel_err(&flat(&v["attributions"]["occlusion"]), &occ, 1e-3);
        worst.push((name.clone(), "occlusion", e));
        assert!(e < tol.max(1e-4), "{name}: occlusion off by {e}");

        if dir.join("saturation.json").exists() {
            let want = read_json(&dir.join("saturation.json"));
            let got = &v["units"][0]["saturation"];
            assert_eq!(
                got.as_object().unwrap().keys().collect::<Vec<_>>(),
                want.as_object().unwrap().keys().collect::<Vec<_>>(),
                "{name}: gates"
            );
            for (gate, sides) in want.as_object().unwrap() {
                for side in ["left", "right"] {
                    let (a, b) = (flat(&got[gate][side]), flat(&sides[side]));
                    assert!(
                        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12),
                        "{name}: saturation {gate} {side}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }
    for (n, what, e) in &worst {
        eprintln!("{n:40} {what:24} {e:.3e}");
    }
}

/// The units list covers every recurrent layer in model order (a Bidirectional gives two), with the
/// schema's fields; SimpleRNN has no gates and no timescale.
#[test]
fn units_follow_the_model() {
    let (_, v) = run_case(&explain_dir().join("model_bidir_mask_mul_ave"), &[]);
    let units = v["units"].as_array().unwrap();
    let layers: Vec<&str> = units.iter().map(|u| u["layer"].as_str().unwrap()).collect();
    assert_eq!(layers.len(), 4, "{layers:?}");
    assert!(
        layers[0].ends_with("/forward") && layers[1].ends_with("/backward"),
        "{layers:?}"
    );
    assert_eq!(
        units[0]["saturation"].as_object().unwrap().len(),
        2,
        "GRU z, r"
    );
    assert_eq!(flat(&units[0]["timescale"]["data"]).len(), 3);
    assert!(
        units[3]["timescale"].is_null(),
        "SimpleRNN has no keeping gate"
    );
    assert!(units[3]["saturation"].as_object().unwrap().is_empty());
    let (_, v) = run_case(
        &explain_dir().join("model_stack_masking_softmax"),
        &["--methods", "gradient"],
    );
    assert_eq!(v["methods"], serde_json::json!(["gradient"]));
    let attr = v["attributions"].as_object().unwrap();
    assert_eq!(
        attr.keys().collect::<Vec<_>>(),
        ["gradient"],
        "methods not asked for are absent"
    );
    assert!(v.get("completeness").is_none());
    // Padded (masked) steps get exactly zero.
    let g = &v["attributions"]["gradient"];
    assert!(
        flat(&g[1][0])
            .iter()
            .chain(flat(&g[1][1]).iter())
            .all(|&x| x == 0.0)
    );
}

/// Masked steps get zero gradient; go_backwards keeps attributions indexed by input row.
#[test]
fn masked_steps_get_nothing_and_rows_stay_in_input_order() {
    let (_, v) = run_case(
        &explain_dir().join("lstm_backwards_mask"),
        &["--methods", "gradient,occlusion"],
    );
    let g = &v["attributions"]["gradient"];
    // mask.npy: sequence 1 step 2, sequence 2 steps 0 and 6 are masked.
    for (b, t) in [(1, 2), (2, 0), (2, 6)] {
        assert!(flat(&g[b][t]).iter().all(|&x| x == 0.0), "({b}, {t})");
        assert_eq!(flat(&v["attributions"]["occlusion"][b])[t], 0.0);
    }
    // Under go_backwards the first input row is read last: it has the largest gradient of sequence 0.
    let rows: Vec<f64> = (0..7)
        .map(|t| flat(&g[0][t]).iter().map(|x| x.abs()).sum())
        .collect();
    assert!(rows[0] > rows[6], "{rows:?}");
}

/// Riemann rules are accepted and complete within 1%, as Gauss–Legendre is.
#[test]
fn every_integration_rule_is_complete() {
    let dir = explain_dir().join("lstm_softmax_init");
    for rule in [
        "riemann_left",
        "riemann_right",
        "riemann_middle",
        "riemann_trapezoid",
        "gausslegendre",
    ] {
        let (_, v) = run_case(&dir, &["--ig-method", rule, "--ig-steps", "200"]);
        let p = flat(&v["prediction"]);
        let b = flat(&v["baseline_prediction"]);
        for (i, c) in flat(&v["completeness"]).iter().enumerate() {
            assert!(c.abs() <= 0.01 * (p[i] - b[i]).abs(), "{rule}: {c}");
        }
    }
}

/// Tables, charts and the .npz a user would look at.
#[test]
fn tables_charts_and_npz() {
    let dir = explain_dir().join("gru_reset_after_mask");
    let tmp = tempfile::tempdir().unwrap();
    let (png, units, npz) = (
        tmp.path().join("a.png"),
        tmp.path().join("u.svg"),
        tmp.path().join("e.npz"),
    );
    let mut cmd = rnntrace();
    cmd.current_dir(&dir).args([
        "explain",
        "--cell",
        "gru",
        "--weights",
        "weights.npz",
        "--dense",
        "dense.npz",
        "--mask",
        "mask.npy",
        "--input",
        "input.npy",
        "--top",
        "4",
        "--sequence",
        "1",
        "--feature-names",
        "a,b,c",
    ]);
    cmd.arg("--plot")
        .arg(&png)
        .arg("--plot-units")
        .arg(&units)
        .arg("--save")
        .arg(&npz);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("top 4 contributions (integrated_gradients), sequence 1"),
        "{out}"
    );
    assert!(
        out.contains("2 (masked)"),
        "per-step totals mark masked steps:\n{out}"
    );
    assert!(out.contains("units of gru"), "{out}");
    assert!(out.contains("T data (mean z)"), "{out}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let svg = std::fs::read_to_string(&units).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Gate saturation"));
    let members = rnntrace::io::npz::parse(&std::fs::read(&npz).unwrap()).unwrap();
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "prediction",
        "attributions/gradient",
        "attributions/integrated_gradients",
        "attributions/occlusion",
        "completeness",
        "units/0/saturation/z/left",
    ] {
        assert!(
            names.iter().any(|n| n.trim_end_matches(".npy") == want),
            "{want} in {names:?}"
        );
    }
    let (_, grad) = npy(&dir.join("grad.npy"));
    let g = &members
        .iter()
        .find(|(n, _)| n.starts_with("attributions/gradient"))
        .unwrap()
        .1;
    assert!(rel_err(&g.data, &grad, 0.0) < 1e-4);
}

/// Bad input: exit 2 with one line naming the flag and what fits.
#[test]
fn bad_flags_name_what_fits() {
    let dir = explain_dir().join("lstm_softmax_init");
    let base = [
        "explain",
        "--cell",
        "lstm",
        "--weights",
        "weights.npz",
        "--dense",
        "dense.npz",
        "--input",
        "input.npy",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let bad_base = tmp.path().join("b.npy");
    std::fs::write(&bad_base, super::npy_bytes("<f8", &[2, 2], &[0u8; 32])).unwrap();
    for (extra, want) in [
        (
            vec!["--output", "3"],
            "--output 3 is out of range: the model has 3 outputs (--output 0..2)",
        ),
        (
            vec!["--methods", "gradient,shap"],
            "--methods: unknown method 'shap'",
        ),
        (
            vec!["--ig-method", "simpson"],
            "--ig-method: unknown rule 'simpson'",
        ),
        (
            vec!["--baseline", bad_base.to_str().unwrap()],
            "the file has shape (2, 2); the model takes a baseline of the input's shape (3, 7, 3)",
        ),
        (vec!["--sequence", "9"], "--sequence 9 is out of range"),
    ] {
        let mut cmd = rnntrace();
        cmd.current_dir(&dir).args(base).args(&extra);
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// A PyTorch file loads through the same weights sources as `lstm`/`gru` (module prefix and `--dense fc`
/// named inside it): the explained prediction is torch's own (`fixtures/generate_torch_files.py`), within
/// 1e-6 (float32 sums in a different order).
#[test]
fn pytorch_files_are_explained() {
    let dir = fixtures().join("torch_files");
    let mut cmd = rnntrace();
    cmd.current_dir(&dir).args([
        "explain",
        "--cell",
        "lstm",
        "--weights",
        "lstm_sd.pt",
        "--dense",
        "fc",
        "--input",
        "lstm_sd.x.npy",
        "--output",
        "1",
        "--methods",
        "gradient",
        "--format",
        "json",
    ]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let (shape, head) = npy(&dir.join("lstm_sd.head.npy"));
    assert_eq!(shape, [4, 2]);
    let want: Vec<f64> = head.chunks(2).map(|r| r[1]).collect();
    let got = flat(&v["prediction"]);
    assert!(rel_err(&got, &want, 1e-3) < 1e-6, "{got:?} vs {want:?}");
}

/// What explain cannot do is refused by name, before any output: --carry-state (sequences are explained
/// independently), and single-layer flags on a whole PyTorch module (`--model F --cell C`), which runs as
/// saved (PyTorch modules do not mask). (A proj_size LSTM is differentiated:
/// `pytorch_modules_match_torch_autograd`.)
#[test]
fn carried_state_and_single_layer_flags_on_modules_are_refused() {
    let dir = fixtures().join("torch_files");
    let tmp = tempfile::tempdir().unwrap();
    let save = tmp.path().join("e.npz");
    let mask = explain_dir().join("gru_reset_after_mask").join("mask.npy");
    let mask = mask.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--weights", "lstm_sd.pt", "--carry-state"],
            "--carry-state: explain treats every sequence independently",
        ),
        (
            vec!["--model", "lstm_sd.pt", "--mask", mask],
            "--mask applies to --weights (one layer); --model with --cell explains the whole PyTorch module",
        ),
    ] {
        let mut cmd = rnntrace();
        cmd.current_dir(&dir)
            .args(["explain", "--cell", "lstm"])
            .args(&args)
            .args(["--input", "lstm_sd.x.npy", "--save"])
            .arg(&save);
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(out.is_empty() && !save.exists(), "{args:?}: wrote output");
    }
}

/// --save, --plot and --plot-units go through the shared output checks: two on one path are refused.
#[test]
fn outputs_on_one_path_are_refused() {
    let dir = explain_dir().join("lstm_softmax_init");
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("a.png");
    let mut cmd = rnntrace();
    cmd.current_dir(&dir)
        .args(["explain", "--cell", "lstm", "--weights", "weights.npz"])
        .args(["--dense", "dense.npz", "--input", "input.npy", "--plot"])
        .arg(&png)
        .arg("--plot-units")
        .arg(tmp.path().join(".").join("a.png"));
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("are the same file"), "{err}");
    assert!(!png.exists());
}

#[test]
fn explain_refused_layers_it_does_not_differentiate_by_name() {
    // Real models `run` refuses (a Lambda): explain refuses them the same way, in one line naming the
    // layer and the way forward, never explained as if the layer were absent. (A float16 policy is
    // explained through its float32 computation: tests/cli/explain_float16.rs.)
    let dir = crate::fixtures().join("real_models");
    for (case, says) in [("lambda_layer", "'lambda' (Lambda)")] {
        let mut cmd = crate::rnntrace();
        cmd.current_dir(dir.join(case))
            .args(["explain", "--model", "model.keras"]);
        for i in model_inputs(&dir.join(case)) {
            cmd.args(["--input", &i]);
        }
        let (code, out, err) = crate::run(&mut cmd);
        assert_eq!(code, 2, "{case}: {err}");
        assert!(err.contains(says), "{case}: {err}");
        assert_eq!(err.lines().count(), 1, "{case}: {err}");
        assert!(out.is_empty(), "{case}");
    }
}

/// The `--input` arguments of a real_models fixture: `input.npy`, or `NAME=input_NAME.npy` per input.
fn model_inputs(dir: &Path) -> Vec<String> {
    if dir.join("input.npy").exists() {
        return vec!["input.npy".into()];
    }
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("input_") && n.ends_with(".npy"))
        .collect();
    v.sort();
    // Inputs Keras named `keras_tensor…` are given in order (their files sort in the model's order).
    v.into_iter()
        .map(|n| {
            let name = &n["input_".len()..n.len() - 4];
            if name.starts_with("keras_tensor") {
                n.clone()
            } else {
                format!("{name}={n}")
            }
        })
        .collect()
}

fn explain_models_dir() -> PathBuf {
    crate::fixtures().join("explain_models")
}

/// Runs explain on one whole-model case (every method) and returns (case.json, the JSON output).
pub(super) fn run_model_case(dir: &Path, extra: &[&str]) -> (Value, Value, String) {
    let case = read_json(&dir.join("case.json"));
    let inputs = case["inputs"].as_array().unwrap();
    let mut cmd = rnntrace();
    cmd.current_dir(dir)
        .args(["explain", "--model", "model.keras", "--format", "json"]);
    for i in inputs {
        let (name, file) = (i[0].as_str().unwrap(), i[1].as_str().unwrap());
        if inputs.len() > 1 {
            cmd.args(["--input", &format!("{name}={file}")]);
        } else {
            cmd.args(["--input", file]);
        }
    }
    cmd.args(["--output", &case["output"].to_string()])
        .args(["--precision", case["precision"].as_str().unwrap()])
        .args(["--ig-steps", &case["ig_steps"].to_string()])
        .args(extra);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{}: {err}", dir.display());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (case, v, err)
}

/// Whole models (`fixtures/generate_explain_models.py`): Embedding (attributions per token, summed over
/// the embedding dimensions), Conv1D in every geometry, pooling, global pooling with a mask,
/// normalisation, shape layers, every merge and Dot, a returned LSTM state (h and c) feeding a decoder,
/// two inputs (float32 and float64): prediction, baseline prediction, gradient, input × gradient,
/// integrated gradients (and completeness), occlusion per input against tf.GradientTape and Keras.
/// Tolerances as for the chain goldens: 1e-4 of the largest |value| in float32, 1e-9 in float64.
#[test]
fn explain_models_match_framework_goldens() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(explain_models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    // 16 from generate_explain_models.py, 2 from generate_explain_models_cf_mask.py, 2 from
    // generate_explain_models_states.py, 9 from generate_explain_models_h0.py.
    assert!(dirs.len() >= 29, "the generators write 29 cases: {dirs:?}");
    let mut worst = Vec::new();
    for dir in dirs {
        let (case, v, _) = run_model_case(&dir, &["--methods", "all"]);
        let name = case["name"].as_str().unwrap().to_string();
        let tol = if case["precision"] == "f64" {
            1e-9
        } else {
            1e-4
        };
        assert_eq!(v["format"], "rnntrace-explain/1", "{name}");
        let (_, pred) = npy(&dir.join("pred.npy"));
        let e = rel_err(&flat(&v["prediction"]), &pred, 1.0);
        assert!(e < tol, "{name}: prediction off by {e}");
        let (_, bpred) = npy(&dir.join("baseline_pred.npy"));
        let got_b = flat(&v["baseline_prediction"]);
        if bpred.iter().all(|b| b.is_nan()) {
            // GlobalAveragePooling1D over a fully masked baseline: Keras's NaN, JSON null.
            assert!(got_b.iter().all(|b| b.is_nan()), "{name}: {got_b:?}");
        } else {
            let e = rel_err(&got_b, &bpred, 1.0);
            assert!(e < tol, "{name}: baseline prediction off by {e}");
        }
        let inputs = case["inputs"].as_array().unwrap();
        let several = inputs.len() > 1;
        if several {
            let names: Vec<&str> = inputs.iter().map(|i| i[0].as_str().unwrap()).collect();
            assert_eq!(v["inputs"], serde_json::json!(names), "{name}");
        } else {
            assert!(v.get("inputs").is_none(), "{name}: single-input schema");
        }
        let mut ig_sum = vec![0.0; pred.len()];
        for i in inputs {
            let (input, kind) = (i[0].as_str().unwrap(), i[2].as_str().unwrap());
            let attr = if several {
                &v["attributions"][input]
            } else {
                &v["attributions"]
            };
            for (key, file) in [
                ("gradient", "grad"),
                ("input_x_gradient", "ixg"),
                ("integrated_gradients", "ig"),
                ("occlusion", "occ"),
            ] {
                let (shape, want) = npy(&dir.join(format!("{file}_{input}.npy")));
                let got = flat(&attr[key]);
                // (An input the output does not depend on has all-zero goldens: the floor keeps 0/0 out.)
                let floor = if key == "occlusion" { 1e-3 } else { 1e-300 };
                let e = rel_err(&got, &want, floor);
                worst.push((format!("{name}/{input}"), key, e));
                assert!(e < tol, "{name}: {input}: {key} off by {e}");
                // Shapes: tokens (B, T), a flat input (B, F), a sequence (B, T, F).
                let a = attr[key].as_array().unwrap();
                assert_eq!(a.len(), shape[0], "{name}: {key}: B");
                let depth = |mut x: &Value| {
                    let mut d = 0;
                    while let Value::Array(inner) = x {
                        d += 1;
                        x = &inner[0];
                    }
                    d
                };
                assert_eq!(
                    depth(&attr[key]),
                    shape.len(),
                    "{name}: {input}: {key} rank"
                );
                if key == "integrated_gradients" {
                    let per = got.len() / pred.len();
                    for (b, s) in ig_sum.iter_mut().enumerate() {
                        *s += got[b * per..(b + 1) * per].iter().sum::<f64>();
                    }
                }
                if kind == "tokens" && key != "occlusion" {
                    assert_eq!(shape.len(), 2, "{name}: per-token attributions");
                }
            }
        }
        // Integrated gradients over every input together: Σ ≈ f(x) − f(b) (the model's own report too).
        if case["completeness_defined"] == true {
            let comp = flat(&v["completeness"]);
            for (b, s) in ig_sum.iter().enumerate() {
                let d = (pred[b] - bpred[b]).abs();
                assert!(
                    (s - (pred[b] - bpred[b])).abs() <= 0.01 * d.max(1e-6),
                    "{name}: sequence {b}: Σ IG {s} vs f(x) − f(b) {}",
                    pred[b] - bpred[b]
                );
                assert!((comp[b] - (s - (pred[b] - bpred[b]))).abs() < 1e-3 * d.max(1.0));
            }
        }
    }
    for (n, what, e) in &worst {
        eprintln!("{n:50} {what:24} {e:.3e}");
    }
}

/// Every recurrent layer's initial-state gradient (`fixtures/generate_explain_models_h0.py`): for each
/// recurrent layer, Bidirectional direction, `RNN([cells])` cell and shared layer's call (`NAME@k`), in model
/// order, d output[K] / d (the initial state the layer received: zeros by default, or the tensor an
/// `initial_state` link gives it), against tf.GradientTape on a twin model whose recurrent layers take their
/// states from extra inputs fed zeros (added to a linked state). Graph models (Conv1D → LSTM → GRU,
/// Bidirectional beside a static branch, Embedding(mask_zero) → GRU(reset_after=False) →
/// SimpleRNN(go_backwards), a shared LSTM feeding stacked cells through links, a stateful LSTM run as one
/// batch from its reset state, a masked Bidirectional(GRU) started from linked states) and Keras stacks through
/// the chain explainer (LSTM → LSTM; Masking → Bidirectional(GRU) → LSTM(go_backwards)). Per entry and
/// state, within 1e-4 of that golden's largest |value| in float32 (the two sides sum and round in different
/// orders; a wrong term is off by far more), 1e-9 in float64 against a float64 tape. `initial_state_gradient`
/// is the first recurrent layer's entry (null when that layer is a Bidirectional), `--save` holds every
/// entry, and the table's row for each layer shows |∂y/∂h0| of the golden.
#[test]
fn explain_models_initial_state_gradients() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(explain_models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("initial_state.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 9, "the generator writes 9 cases: {dirs:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = Vec::new();
    for dir in dirs {
        let golden = read_json(&dir.join("initial_state.json"));
        let case = read_json(&dir.join("case.json"));
        let name = case["name"].as_str().unwrap().to_string();
        let save = tmp.path().join(format!("{name}.npz"));
        let (_, v, _) = run_model_case(
            &dir,
            &["--methods", "gradient", "--save", save.to_str().unwrap()],
        );
        let tol = if case["precision"] == "f64" {
            1e-9
        } else {
            1e-4
        };
        let inputs = case["inputs"].as_array().unwrap();
        // Several inputs: --save writes FILE-NAME.npz per input, each with the model's state terms.
        let save = if inputs.len() > 1 {
            tmp.path()
                .join(format!("{name}-{}.npz", inputs[0][0].as_str().unwrap()))
        } else {
            save
        };
        let saved = super::output::npz_members(&save);
        let want = golden["entries"].as_array().unwrap();
        let got = v["initial_state_gradients"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no initial_state_gradients"));
        let names = |a: &[Value]| -> Vec<String> {
            a.iter()
                .map(|e| e["layer"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(got), names(want), "{name}: layers and their order");
        let b = v["prediction"].as_array().unwrap().len();
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            let layer = w["layer"].as_str().unwrap();
            for which in ["h", "c"] {
                if w[which].is_null() {
                    assert!(g[which].is_null(), "{name}: {layer}: no {which} state");
                    assert!(
                        !saved.contains_key(&format!("initial_state_gradients/{k}/{which}")),
                        "{name}: {layer}: saved {which}"
                    );
                    continue;
                }
                let (shape, want_v) = npy(&dir.join(w[which].as_str().unwrap()));
                assert!(
                    want_v.iter().any(|x| x.abs() > 0.0),
                    "{name}: {layer}: an all-zero golden would pass vacuously"
                );
                assert_eq!(g[which].as_array().unwrap().len(), b, "{name}: {layer}: B");
                let got_v = flat(&g[which]);
                let e = rel_err(&got_v, &want_v, 0.0);
                worst.push((format!("{name}/{layer}"), which, e));
                assert!(e < tol, "{name}: {layer}: d y / d {which}0 off by {e}");
                let z = &saved[&format!("initial_state_gradients/{k}/{which}")];
                assert_eq!(z.shape, shape, "{name}: saved {which} of {layer}");
                assert!(
                    rel_err(&z.data, &got_v, 1e-300) < 1e-6,
                    "{name}: saved {which} of {layer}"
                );
            }
        }
        match golden["first"].as_u64() {
            Some(j) => {
                let first = &v["initial_state_gradient"];
                assert_eq!(first["h"], got[j as usize]["h"], "{name}: first layer's h");
                assert_eq!(first["c"], got[j as usize]["c"], "{name}: first layer's c");
            }
            None => assert!(
                v["initial_state_gradient"].is_null(),
                "{name}: the first recurrent layer is a Bidirectional: no single initial state"
            ),
        }
    }
    // The table: one row per layer, |∂y/∂h0| (L2 over units) of sequence 1.
    let dir = explain_models_dir().join("h0_shared_lstm_cells_linked");
    let (code, out, err) = run(rnntrace().current_dir(&dir).args([
        "explain",
        "--model",
        "model.keras",
        "--input",
        "a=a.npy",
        "--input",
        "b=b.npy",
        "--methods",
        "gradient",
        "--sequence",
        "1",
    ]));
    assert_eq!(code, 0, "{err}");
    // The model's terms (and unit tables) once, after both inputs' blocks (the JSON has them once).
    assert_eq!(out.matches("initial state terms").count(), 1, "{out}");
    assert_eq!(out.matches("units of enc ").count(), 1, "{out}");
    let last_input = out.find("input 'b'").expect("input b's block");
    assert!(
        out.find("initial state terms").unwrap() > last_input,
        "{out}"
    );
    let section = out
        .split("initial state terms, sequence 1")
        .nth(1)
        .unwrap_or_else(|| panic!("no initial state table: {out}"));
    let golden = read_json(&dir.join("initial_state.json"));
    for w in golden["entries"].as_array().unwrap() {
        let layer = w["layer"].as_str().unwrap();
        let row = section
            .lines()
            .find(|l| {
                l.trim_start_matches('│')
                    .trim()
                    .starts_with(&format!("{layer} "))
            })
            .unwrap_or_else(|| panic!("no row for {layer}: {section}"));
        let shown: f64 = row.split('┆').nth(1).unwrap().trim().parse().unwrap();
        let (shape, h) = npy(&dir.join(w["h"].as_str().unwrap()));
        let u = shape[1];
        let norm = h[u..2 * u].iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (shown - norm).abs() <= 1e-3 * norm,
            "{layer}: table shows {shown}, golden |∂y/∂h0| {norm}"
        );
    }
    // A layer the explained output does not depend on (the decoder, for the second output that reads only
    // the encoder's returned h) is listed with an all-zero term of its shape, as the tape's None.
    let dir = explain_models_dir().join("seq2seq_return_state_second_output");
    let (case, v, _) = run_model_case(&dir, &["--methods", "gradient"]);
    assert_eq!(case["output"], 3);
    let got = v["initial_state_gradients"].as_array().unwrap();
    assert_eq!(got.len(), 2, "encoder and decoder LSTMs");
    let b = v["prediction"].as_array().unwrap().len();
    for (k, e) in got.iter().enumerate() {
        for which in ["h", "c"] {
            assert_eq!(
                e[which].as_array().unwrap().len(),
                b,
                "entry {k} {which}: B"
            );
            let any = flat(&e[which]).iter().any(|x| *x != 0.0);
            assert_eq!(any, k == 0, "entry {k} ({}) {which}", e["layer"]);
        }
    }
    for (n, which, e) in &worst {
        eprintln!("{n:55} {which} {e:.3e}");
    }
}

/// Token inputs: padding ids under mask_zero get exactly zero attribution where the model skips them;
/// a baseline of token ids is looked up; ids outside the vocabulary in it exit 2; the table names the
/// token feature.
#[test]
fn explain_token_inputs() {
    let dir = explain_models_dir().join("text_embedding_bilstm_softmax");
    let (_, v, _) = run_model_case(
        &dir,
        &["--methods", "gradient,integrated-gradients,occlusion"],
    );
    let (_, ids) = npy(&dir.join("tokens.npy"));
    let g = flat(&v["attributions"]["gradient"]);
    let ig = flat(&v["attributions"]["integrated_gradients"]);
    let occ = flat(&v["attributions"]["occlusion"]);
    assert_eq!(g.len(), ids.len());
    for (k, id) in ids.iter().enumerate() {
        if *id == 0.0 {
            assert_eq!((g[k], ig[k], occ[k]), (0.0, 0.0, 0.0), "masked step {k}");
        } else {
            assert!(g[k] != 0.0, "kept step {k}");
        }
    }
    // Baseline ids: the padding id everywhere is what `zeros` means.
    let tmp = tempfile::tempdir().unwrap();
    let zeros = tmp.path().join("pad.npy");
    let t = ids.len() / 3;
    std::fs::write(&zeros, crate::npy_bytes("<i4", &[t], &vec![0u8; 4 * t])).unwrap();
    let (_, v2, _) = run_model_case(
        &dir,
        &[
            "--methods",
            "gradient,integrated-gradients,occlusion",
            "--baseline",
            zeros.to_str().unwrap(),
        ],
    );
    assert_eq!(v2["attributions"], v["attributions"]);
    assert_eq!(v2["baseline_prediction"], v["baseline_prediction"]);
    let bad = tmp.path().join("bad.npy");
    let mut payload = vec![0u8; 4 * t];
    payload[..4].copy_from_slice(&1000i32.to_le_bytes());
    std::fs::write(&bad, crate::npy_bytes("<i4", &[t], &payload)).unwrap();
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "explain",
            "--model",
            "model.keras",
            "--input",
            "tokens.npy",
            "--baseline",
        ])
        .arg(&bad));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--baseline") && err.contains("1000"), "{err}");
    assert!(out.is_empty());
    // The table: one feature, the token.
    let (code, out, err) = run(rnntrace().current_dir(&dir).args([
        "explain",
        "--model",
        "model.keras",
        "--input",
        "tokens.npy",
        "--methods",
        "gradient",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("token"), "{out}");
    // With a vocabulary the tables name each step's word, and the chart is drawn.
    let vocab = tmp.path().join("vocab.json");
    let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
    std::fs::write(&vocab, serde_json::to_string(&words).unwrap()).unwrap();
    let png = tmp.path().join("tokens.png");
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args(["explain", "--model", "model.keras", "--input", "tokens.npy"])
        .args(["--methods", "gradient", "--top", "3", "--tokens"])
        .arg(&vocab)
        .arg("--plot")
        .arg(&png));
    assert_eq!(code, 0, "{err}");
    let first_kept = ids[..t].iter().position(|&i| i != 0.0).unwrap();
    let top_rows: Vec<&str> = out.lines().filter(|l| l.contains("word")).collect();
    assert_eq!(top_rows.len(), 3, "{out}");
    assert!(
        ids[first_kept..t]
            .iter()
            .any(|&i| top_rows[0].contains(&format!("word{i} "))),
        "{out}"
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
}

/// Several inputs: attributions keyed by input name, one chart per input (FILE-NAME.png), a note saying
/// so; a wrong number of --input exits 2 naming the inputs.
#[test]
fn explain_several_inputs() {
    let dir = explain_models_dir().join("two_input_series_static");
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("attr.png");
    let (_, v, err) = run_model_case(
        &dir,
        &[
            "--methods",
            "gradient,occlusion",
            "--plot",
            png.to_str().unwrap(),
        ],
    );
    assert!(err.contains("2 inputs ('series', 'static')"), "{err}");
    for name in ["series", "static"] {
        assert!(v["attributions"][name]["gradient"].is_array(), "{name}");
        assert!(
            tmp.path().join(format!("attr-{name}.png")).exists(),
            "{name}"
        );
    }
    assert!(!png.exists());
    let (code, out, err) = run(rnntrace().current_dir(&dir).args([
        "explain",
        "--model",
        "model.keras",
        "--input",
        "series.npy",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("series, static"), "{err}");
    assert!(out.is_empty());
}

/// Every real model `run` computes (tests/cli/real_models.rs) is explained, its explained forward pass
/// equal to `run`'s (explain checks that itself and refuses otherwise) and its prediction equal to
/// `model.predict`'s within run's 1e-5; a Lambda and masks computed by keras.ops are refused (as `run` refuses
/// them), and so is what the graph explainer has no backward rule for, each by name; a mixed_float16 model
/// is explained through its float32 computation and says so (`policy`). channels_first layers, masks passed by hand (a boolean
/// model input, all its attributions zero), Bidirectional states (also with merge_mode=None, masked,
/// chained, Keras 2 files) and returned attention scores are explained.
#[test]
fn explain_covers_the_real_models() {
    let root = crate::fixtures().join("real_models");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut explained = 0;
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let refused = name == "lambda_layer" || name == "explicit_mask_ops";
        let file = if dir.join("model.keras").exists() {
            "model.keras"
        } else {
            "model.h5"
        };
        let mut cmd = rnntrace();
        cmd.current_dir(&dir)
            .args(["explain", "--model", file, "--format", "json"])
            .args(["--methods", "gradient,occlusion"]);
        for i in model_inputs(&dir) {
            cmd.args(["--input", &i]);
        }
        let (code, out, err) = run(&mut cmd);
        if refused {
            assert_eq!(code, 2, "{name}: {err}");
            assert_eq!(err.lines().count(), 1, "{name}: {err}");
            continue;
        }
        assert_eq!(code, 0, "{name}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        if name == "mixed_float16" {
            assert_eq!(v["policy"], "mixed_float16", "{name}");
            assert_eq!(v["computed_in"], "float32", "{name}");
        }
        let (shape, expected) = if dir.join("expected.npy").exists() {
            npy(&dir.join("expected.npy"))
        } else {
            (Vec::new(), Vec::new())
        };
        if shape.len() == 2 {
            let cols = shape[1];
            let want: Vec<f64> = expected.iter().step_by(cols).copied().collect();
            let e = rel_err(&flat(&v["prediction"]), &want, 1.0);
            assert!(e < 1e-5, "{name}: prediction off model.predict by {e}");
        }
        let grads: Vec<Vec<f64>> = match v["inputs"].as_array() {
            Some(names) => names
                .iter()
                .map(|n| flat(&v["attributions"][n.as_str().unwrap()]["gradient"]))
                .collect(),
            None => vec![flat(&v["attributions"]["gradient"])],
        };
        for g in grads {
            assert!(!g.is_empty() && g.iter().all(|x| x.is_finite()), "{name}");
        }
        explained += 1;
    }
    assert!(explained >= 71, "explained {explained}");
}

/// Whole PyTorch modules saved with torch.save (`explain --model model.pt --cell C [--dense fc]`: stacked,
/// bidirectional, a proj_size LSTM, float32 and float64) against torch.autograd: the prediction, the gradient with respect to
/// the input, and every layer's and direction's initial-state gradient (`initial_state_gradients`, in
/// PyTorch's h0 order; the first layer's also as `initial_state_gradient` when it is not bidirectional).
/// Tolerances as for the Keras goldens: 1e-4 of the largest value in float32, 1e-9 in float64.
#[test]
fn pytorch_modules_match_torch_autograd() {
    let root = fixtures().join("explain_torch");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/explain_torch")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 4, "the generator writes 4 PyTorch cases");
    let tmp = tempfile::tempdir().unwrap();
    for dir in dirs {
        let save = tmp.path().join(format!(
            "{}.npz",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let case = read_json(&dir.join("case.json"));
        let name = case["name"].as_str().unwrap().to_string();
        let tol = if case["precision"] == "f64" {
            1e-9
        } else {
            1e-4
        };
        let mut cmd = rnntrace();
        cmd.current_dir(&dir).arg("explain");
        for a in case["args"].as_array().unwrap() {
            cmd.arg(a.as_str().unwrap());
        }
        cmd.args(["--input", "input.npy", "--format", "json"])
            .args(["--output", &case["output"].to_string()])
            .args(["--precision", case["precision"].as_str().unwrap()])
            .args(["--methods", "gradient", "--save"])
            .arg(&save);
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{name}: {err}");
        let saved = super::output::npz_members(&save);
        let v: Value = serde_json::from_str(&out).unwrap();
        let (_, pred) = npy(&dir.join("pred.npy"));
        let e = rel_err(&flat(&v["prediction"]), &pred, 1.0);
        assert!(e < tol, "{name}: prediction off by {e}");
        let (shape, g) = npy(&dir.join("torch_grad.npy"));
        let e = rel_err(&flat(&v["attributions"]["gradient"]), &g, 0.0);
        assert!(e < tol, "{name}: gradient off torch's by {e}");
        let layers = v["initial_state_gradients"].as_array().unwrap();
        let n = case["layers"].as_u64().unwrap() as usize;
        assert_eq!(layers.len(), n, "{name}: one entry per layer and direction");
        let (hs, h0) = npy(&dir.join("torch_h0_grad.npy"));
        assert_eq!(hs, [n, shape[0], hs[2]]);
        let per = h0.len() / n;
        let c0 = dir
            .join("torch_c0_grad.npy")
            .exists()
            .then(|| npy(&dir.join("torch_c0_grad.npy")).1);
        for (k, l) in layers.iter().enumerate() {
            let want_h = &h0[k * per..(k + 1) * per];
            // Scaled by the largest over all layers: a deep layer's term may be small.
            let e = rel_err(
                &flat(&l["h"]),
                want_h,
                h0.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            );
            assert!(
                e < tol,
                "{name}: layer {k} ({}) h0 gradient off by {e}",
                l["layer"]
            );
            match &c0 {
                Some(c0) => {
                    let scale = c0.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    let per_c = c0.len() / n; // c has the units, h a proj_size projection's width
                    let e = rel_err(&flat(&l["c"]), &c0[k * per_c..(k + 1) * per_c], scale);
                    assert!(e < tol, "{name}: layer {k} c0 gradient off by {e}");
                }
                None => assert!(l["c"].is_null(), "{name}: a GRU has no c"),
            }
            assert!(
                flat(&l["h"]).iter().any(|v| v.abs() > 0.0),
                "{name}: layer {k}: an all-zero term would pass vacuously"
            );
            // --save holds the same terms.
            let z = &saved[&format!("initial_state_gradients/{k}/h")];
            assert_eq!(z.shape, [shape[0], hs[2]], "{name}: saved h of layer {k}");
            assert!(
                rel_err(&z.data, &flat(&l["h"]), 1e-300) < 1e-6,
                "{name}: saved h of layer {k}"
            );
            assert_eq!(
                saved.contains_key(&format!("initial_state_gradients/{k}/c")),
                c0.is_some(),
                "{name}: saved c of layer {k}"
            );
        }
        if !name.contains("bidir") {
            let e = rel_err(
                &flat(&v["initial_state_gradient"]["h"]),
                &h0[..per],
                h0.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            );
            assert!(
                e < tol,
                "{name}: first layer's initial_state_gradient off by {e}"
            );
        }
    }
}

/// A mask-only input (a boolean model input passed as `mask=`) has all-zero attributions by design: `--plot`
/// draws the other inputs' charts and says why it draws none for it (it drew an empty heat map).
#[test]
fn mask_only_input_gets_no_empty_chart() {
    let dir = crate::fixtures()
        .join("real_models")
        .join("explicit_mask_input");
    let tmp = tempfile::tempdir().unwrap();
    let plot = tmp.path().join("a.png");
    let (code, _, err) = run(rnntrace()
        .current_dir(&dir)
        .args(["explain", "--model", "model.keras"])
        .args([
            "--input",
            "x=input_x.npy",
            "--input",
            "steps=input_steps.npy",
        ])
        .arg("--plot")
        .arg(&plot)
        .arg("--quiet"));
    assert_eq!(code, 0, "{err}");
    assert!(tmp.path().join("a-x.png").exists(), "{err}");
    assert!(!tmp.path().join("a-steps.png").exists(), "{err}");
    assert!(
        err.contains("input 'steps' is read only as a mask"),
        "{err}"
    );
}

/// Regression: a NaN in `--input` gave a row of nulls (exit 0) through the chain explainer and "explain's
/// forward pass differs from `rnntrace run`'s … please report it" through the graph explainer; both now
/// refuse it with one line naming the input and where the value is.
#[test]
fn nan_input_gave_nulls_or_a_false_internal_error() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [
        fixtures()
            .join("explain")
            .join("model_stack_masking_softmax"),
        fixtures().join("real_models").join("masking_graph"),
    ] {
        let (shape, x) = npy(&dir.join("input.npy"));
        let f = shape[2];
        let mut vals: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        // Sequence 1, step 2, feature 1.
        vals[(shape[1] + 2) * f + 1] = f32::NAN;
        let p = tmp.path().join("nan_input.npy");
        let payload: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, super::npy_bytes("<f4", &shape, &payload)).unwrap();
        let (code, out, err) = run(rnntrace()
            .current_dir(&dir)
            .args(["explain", "--model", "model.keras", "--input"])
            .arg(&p));
        assert_eq!(code, 2, "{}: {out}{err}", dir.display());
        assert!(
            err.contains("--input")
                && err.contains("sequence 1, step 2, feature 1")
                && err.contains("not finite")
                && !err.contains("please report"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
