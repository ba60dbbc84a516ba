//! `explain --model` on models saved under a float16/bfloat16 dtype policy (`fixtures/explain_float16/`,
//! written by Keras 3.15 / TensorFlow 2.21 with `fixtures/generate_explain_float16.py`): the attributions
//! are of the float32 computation of the same weights (the real-valued function the policy rounds op by
//! op; the rounded function is piecewise constant), checked against `tf.GradientTape` on the model rebuilt
//! under the float32 policy with the same weights (1e-4 of the largest value, as for every float32
//! golden); the model's own answer under its policy is reported next to it as `policy_prediction`, bit for
//! bit `model.predict` and `rnntrace run`.

use crate::{fixtures, npy, npy_bytes, rnntrace, run};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("explain_float16"))
        .expect("fixtures/explain_float16")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    dirs
}

fn dir(name: &str) -> PathBuf {
    fixtures().join("explain_float16").join(name)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Null => vec![f64::NAN],
        other => panic!("not a number: {other}"),
    }
}

/// The largest |a − b| relative to the largest |b| (at least `floor`).
fn rel_err(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// `explain --model model.keras` on a case with its input, output and IG steps, plus `extra`:
/// (case.json, exit code, stdout, stderr).
fn explain(d: &Path, extra: &[&str]) -> (Value, i32, String, String) {
    let case = read_json(&d.join("case.json"));
    let input = case["inputs"][0][1].as_str().unwrap().to_string();
    let mut cmd = rnntrace();
    cmd.current_dir(d)
        .args(["explain", "--model", "model.keras", "--input", &input])
        .args(["--output", &case["output"].to_string()])
        .args(["--ig-steps", &case["ig_steps"].to_string()])
        .args(extra);
    let (code, out, err) = run(&mut cmd);
    (case, code, out, err)
}

/// `rnntrace run`'s predictions, column `k`, as float32.
fn run_column(d: &Path, input: &str, k: usize) -> Vec<f32> {
    let (code, out, err) = run(rnntrace().current_dir(d).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        input,
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[k].as_f64().unwrap() as f32)
        .collect()
}

fn as_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Every case, every method: the attributions, predictions and completeness of the float32 computation
/// against tf.GradientTape on the float32 twin; `policy_prediction` bit for bit `model.predict` under the
/// policy and `rnntrace run`; one stderr note naming the policy and the computation explained.
#[test]
fn policy_models_are_explained_through_their_float32_computation() {
    let dirs = cases();
    assert!(dirs.len() >= 5, "the generator writes 5 cases: {dirs:?}");
    let mut policies = std::collections::BTreeSet::new();
    for d in dirs {
        let (case, code, out, err) = explain(&d, &["--format", "json", "--methods", "all"]);
        let name = case["name"].as_str().unwrap().to_string();
        assert_eq!(code, 0, "{name}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
        let policy = case["policy"].as_str().unwrap();
        policies.insert(policy.to_string());
        assert_eq!(v["format"], "rnntrace-explain/1", "{name}");
        assert_eq!(v["policy"], policy, "{name}");
        assert_eq!(v["computed_in"], "float32", "{name}");
        // The explained (float32) computation: 1e-4 of the largest value, as every float32 golden.
        let (_, pred) = npy(&d.join("pred.npy"));
        let got = flat(&v["prediction"]);
        let e = rel_err(&got, &pred, 1.0);
        assert!(e < 1e-4, "{name}: prediction off by {e}");
        let (_, bpred) = npy(&d.join("baseline_pred.npy"));
        let e = rel_err(&flat(&v["baseline_prediction"]), &bpred, 1.0);
        assert!(e < 1e-4, "{name}: baseline prediction off by {e}");
        let (input, kind) = (
            case["inputs"][0][0].as_str().unwrap(),
            case["inputs"][0][2].as_str().unwrap(),
        );
        for (key, file) in [
            ("gradient", "grad"),
            ("input_x_gradient", "ixg"),
            ("integrated_gradients", "ig"),
            ("occlusion", "occ"),
        ] {
            let (shape, want) = npy(&d.join(format!("{file}_{input}.npy")));
            let got = flat(&v["attributions"][key]);
            let floor = if key == "occlusion" { 1e-3 } else { 1e-300 };
            let e = rel_err(&got, &want, floor);
            assert!(e < 1e-4, "{name}: {key} off by {e}");
            if kind == "tokens" && key != "occlusion" {
                assert_eq!(shape.len(), 2, "{name}: per-token attributions");
            }
        }
        // Completeness refers to `prediction` (the explained computation), within 1%.
        let ig = flat(&v["attributions"]["integrated_gradients"]);
        let per = ig.len() / pred.len();
        for b in 0..pred.len() {
            let s: f64 = ig[b * per..(b + 1) * per].iter().sum();
            let d = pred[b] - bpred[b];
            assert!(
                (s - d).abs() <= 0.01 * d.abs().max(1e-6),
                "{name}: sequence {b}: Σ IG {s} vs {d}"
            );
        }
        // The policy's own answer: bit for bit model.predict and `run`, and not the explained one.
        let (_, ppred) = npy(&d.join("policy_pred.npy"));
        let got_p = as_f32(&flat(&v["policy_prediction"]));
        assert_eq!(got_p, as_f32(&ppred), "{name}: policy_prediction");
        let k = case["output"].as_u64().unwrap() as usize;
        let file = case["inputs"][0][1].as_str().unwrap();
        assert_eq!(got_p, run_column(&d, file, k), "{name}: vs run");
        let diff = got
            .iter()
            .zip(&got_p)
            .map(|(a, b)| (a - f64::from(*b)).abs())
            .fold(0.0, f64::max);
        let measured = case["float32_vs_policy_max_abs_diff"].as_f64().unwrap();
        assert!(diff > 0.0, "{name}: the policy rounds: its answer differs");
        assert!(
            (diff - measured).abs() <= 1e-4 * measured.max(1.0),
            "{name}: {diff} vs {measured}"
        );
        // One note on stderr (the JSON carries no prose).
        let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note:")).collect();
        assert_eq!(notes.len(), 1, "{name}: {err}");
        assert!(
            notes[0].contains(&format!("computes in {policy}"))
                && notes[0].contains("attributions are of its float32 computation")
                && notes[0].contains("largest difference"),
            "{name}: {err}"
        );
    }
    // The four policies Keras has below float32.
    assert_eq!(
        policies.into_iter().collect::<Vec<_>>(),
        ["bfloat16", "float16", "mixed_bfloat16", "mixed_float16"]
    );
}

/// `--precision f64`: the float64 computation of the same weights (within 1e-5 of the float32 goldens,
/// their own rounding), said as `computed_in`; the policy prediction stays `run`'s float32 one.
#[test]
fn policy_models_in_float64() {
    for name in ["mixed_float16_lstm", "mixed_float16_conv1d_gru"] {
        let d = dir(name);
        let (case, code, out, err) = explain(
            &d,
            &[
                "--format",
                "json",
                "--precision",
                "f64",
                "--methods",
                "gradient",
            ],
        );
        assert_eq!(code, 0, "{name}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["computed_in"], "float64", "{name}");
        let (_, pred) = npy(&d.join("pred.npy"));
        let e = rel_err(&flat(&v["prediction"]), &pred, 1.0);
        assert!(e < 1e-5, "{name}: {e}");
        let input = case["inputs"][0][0].as_str().unwrap();
        let (_, grad) = npy(&d.join(format!("grad_{input}.npy")));
        let e = rel_err(&flat(&v["attributions"]["gradient"]), &grad, 1e-300);
        assert!(e < 1e-4, "{name}: gradient {e}");
        let (_, ppred) = npy(&d.join("policy_pred.npy"));
        assert_eq!(as_f32(&flat(&v["policy_prediction"])), as_f32(&ppred));
        assert!(err.contains("float64 computation"), "{name}: {err}");
    }
}

/// An `.npz`'s numeric members and its (0-d unicode) string members, by name.
type Members = (Vec<(String, rnntrace::io::RawArray)>, Vec<(String, String)>);

/// Reads every member of an `.npz`: numbers through the project's reader, unicode strings decoded.
fn npz(path: &Path) -> Members {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let (mut nums, mut texts) = (Vec::new(), Vec::new());
    for i in 0..z.len() {
        let mut m = z.by_index(i).unwrap();
        let name = m.name().unwrap().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        m.read_to_end(&mut bytes).unwrap();
        let header = String::from_utf8_lossy(&bytes[10..128]).into_owned();
        if header.contains("'<U") {
            assert!(header.contains("'shape': ()"), "{name}: {header}");
            let text: String = bytes[128..]
                .chunks(4)
                .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap())
                .collect();
            texts.push((name, text));
        } else {
            nums.push((name, rnntrace::io::npy::parse(&bytes).unwrap()));
        }
    }
    (nums, texts)
}

/// The table says it in its heading lines (and stderr stays quiet), `--save` carries `policy`,
/// `computed_in` and `policy_prediction`, `--report` and `--plot` draw the float32 computation and say
/// so; a chain model (the LSTM) and a graph model (Conv1D → GRU) both.
#[test]
fn policy_model_table_save_report_plot() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, policy) in [
        ("mixed_float16_lstm", "mixed_float16"),
        ("mixed_float16_conv1d_gru", "mixed_float16"),
        ("bfloat16_gru", "bfloat16"),
    ] {
        let d = dir(name);
        let (npz_path, html, png) = (
            tmp.path().join(format!("{name}.npz")),
            tmp.path().join(format!("{name}.html")),
            tmp.path().join(format!("{name}.png")),
        );
        let extra: Vec<String> = vec![
            "--save".into(),
            npz_path.display().to_string(),
            "--report".into(),
            html.display().to_string(),
            "--plot".into(),
            png.display().to_string(),
        ];
        let extra: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
        let (case, code, out, err) = explain(&d, &extra);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(!err.contains("note:"), "{name}: the table says it: {err}");
        let notes: Vec<&str> = out.lines().filter(|l| l.starts_with("note:")).collect();
        assert_eq!(notes.len(), 1, "{name}: {out}");
        assert!(
            notes[0].starts_with(&format!("note: the model computes in {policy};")),
            "{name}: {out}"
        );
        let (nums, texts) = npz(&npz_path);
        assert!(
            texts.contains(&("policy".into(), policy.into()))
                && texts.contains(&("computed_in".into(), "float32".into())),
            "{name}: {texts:?}"
        );
        let member = |n: &str| {
            nums.iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("{name}: {n}"))
                .1
                .clone()
        };
        let (_, ppred) = npy(&d.join("policy_pred.npy"));
        let p = member("policy_prediction");
        assert_eq!(p.shape, vec![ppred.len()]);
        assert_eq!(as_f32(&p.data), as_f32(&ppred), "{name}");
        let (_, pred) = npy(&d.join("pred.npy"));
        assert!(rel_err(&member("prediction").data, &pred, 1.0) < 1e-4);
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(
            page.contains(&format!("prediction under {policy}"))
                && page.contains(&format!(
                    "float32 computation of a model saved under {policy}"
                )),
            "{name}: report"
        );
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{name}");
        assert_eq!(case["policy"], policy, "{name}");
    }
}

/// `--mask` is explain's own addition to the input, which the model (and `run`) does not take: the
/// attributions are explained with it, `policy_prediction` is null and the note says why.
#[test]
fn policy_model_with_a_hand_mask_has_no_policy_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let mask = tmp.path().join("mask.npy");
    let mut payload = vec![1u8; 3 * 8];
    payload[0] = 0;
    payload[1] = 0;
    std::fs::write(&mask, npy_bytes("|b1", &[3, 8], &payload)).unwrap();
    let d = dir("mixed_float16_lstm");
    let (_, code, out, err) = explain(
        &d,
        &[
            "--format",
            "json",
            "--methods",
            "gradient",
            "--mask",
            mask.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["policy"], "mixed_float16");
    assert!(v["policy_prediction"].is_null(), "{v}");
    let g = flat(&v["attributions"]["gradient"]);
    assert!(g[..6].iter().all(|&x| x == 0.0), "masked steps get nothing");
    assert!(err.contains("--mask is explain's own input"), "{err}");
}
