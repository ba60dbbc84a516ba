//! `rnntrace explain --model` with a baseline per input (`--baseline NAME=zeros|mean|FILE`), against
//! goldens from tf.GradientTape (`fixtures/generate_explain_models_baselines.py`, versions in
//! `fixtures/explain_models_baselines/VERSIONS.json`), and the refusals of baselines that do not fit.

use super::{fixtures, npy, npy_bytes, rnntrace, run};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    fixtures().join("explain_models_baselines")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Flattens nested JSON arrays of numbers.
fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

/// The largest |a − b| relative to the largest |b|.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1e-300, |m: f64, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The explain command of a case: every input as NAME=FILE, the case's output, its `--baseline`s.
fn command(dir: &Path, case: &Value) -> assert_cmd::Command {
    let mut cmd = rnntrace();
    cmd.current_dir(dir)
        .args(["explain", "--model", "model.keras", "--format", "json"]);
    for i in case["inputs"].as_array().unwrap() {
        cmd.arg("--input").arg(format!(
            "{}={}",
            i[0].as_str().unwrap(),
            i[1].as_str().unwrap()
        ));
    }
    cmd.args(["--output", &case["output"].to_string()]);
    for b in case["baselines"].as_array().unwrap() {
        cmd.args(["--baseline", b.as_str().unwrap()]);
    }
    cmd
}

/// Two-input functional models, one input's baseline a non-zero file (a series' one sequence broadcast
/// over the batch; a token input's baseline ids, looked up), the other's zeros or `mean` (the unnamed
/// default): prediction, baseline prediction, gradient, input × gradient, integrated gradients with the
/// default rule and steps (Gauss–Legendre, 50 nodes: the generator uses the same) and occlusion per
/// input within 1e-4 of the largest golden value (float32 through two recurrent layers); completeness
/// over both inputs within 1% of |f(x) − f(baselines)|. `--plot` draws one chart per input.
#[test]
fn explain_baselines_match_framework_goldens() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "the generator writes 2 cases: {dirs:?}");
    let tmp = tempfile::tempdir().unwrap();
    for dir in dirs {
        let case = read_json(&dir.join("case.json"));
        let name = case["name"].as_str().unwrap().to_string();
        // The goldens use rnntrace's defaults, which the command below does not set.
        assert_eq!(case["ig_steps"], 50, "{name}");
        assert_eq!(case["ig_method"], "gausslegendre", "{name}");
        let png = tmp.path().join(format!("{name}.png"));
        let (code, out, err) = run(command(&dir, &case).arg("--plot").arg(&png));
        assert_eq!(code, 0, "{name}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let (_, pred) = npy(&dir.join("pred.npy"));
        let (_, bpred) = npy(&dir.join("baseline_pred.npy"));
        assert!(rel_err(&flat(&v["prediction"]), &pred) < 1e-5, "{name}");
        let e = rel_err(&flat(&v["baseline_prediction"]), &bpred);
        assert!(e < 1e-5, "{name}: baseline prediction off by {e}");
        let mut ig_sum = vec![0.0; pred.len()];
        for i in case["inputs"].as_array().unwrap() {
            let input = i[0].as_str().unwrap();
            let attr = &v["attributions"][input];
            for (key, file) in [
                ("gradient", "grad"),
                ("input_x_gradient", "ixg"),
                ("integrated_gradients", "ig"),
                ("occlusion", "occ"),
            ] {
                let (_, want) = npy(&dir.join(format!("{file}_{input}.npy")));
                let got = flat(&attr[key]);
                let e = rel_err(&got, &want);
                eprintln!("{name:36} {input:8} {key:22} {e:.2e}");
                assert!(e < 1e-4, "{name}: {input}: {key} off by {e}");
                if key == "integrated_gradients" {
                    let per = got.len() / pred.len();
                    for (b, s) in ig_sum.iter_mut().enumerate() {
                        *s += got[b * per..(b + 1) * per].iter().sum::<f64>();
                    }
                }
            }
            assert!(
                tmp.path().join(format!("{name}-{input}.png")).exists(),
                "{name}: one chart per input"
            );
        }
        let comp = flat(&v["completeness"]);
        for (b, s) in ig_sum.iter().enumerate() {
            let d = pred[b] - bpred[b];
            assert!(d.abs() > 1e-3, "{name}: a baseline that explains something");
            assert!(
                (s - d).abs() <= 0.01 * d.abs(),
                "{name}: sequence {b}: Σ IG {s} vs f(x) − f(b) {d}"
            );
            assert!((comp[b] - (s - d)).abs() <= 1e-3 * d.abs(), "{name}");
        }
    }
}

/// The per-input syntax's meaning: a named `zeros` equals the default, an unnamed `mean` applies to
/// every input not named, and a one-sequence baseline file equals the same baseline for each sequence.
#[test]
fn explain_baseline_per_input_semantics() {
    let dir = cases_dir().join("two_input_series_file_baseline");
    let case = read_json(&dir.join("case.json"));
    let go = |extra: &[&str]| -> Value {
        let mut cmd = rnntrace();
        cmd.current_dir(&dir).args([
            "explain",
            "--model",
            "model.keras",
            "--input",
            "series.npy",
            "--input",
            "static.npy",
            "--output",
            "1",
            "--format",
            "json",
            "--methods",
            "integrated-gradients,occlusion",
        ]);
        let (code, out, err) = run(cmd.args(extra));
        assert_eq!(code, 0, "{extra:?}: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let zeros = go(&[]);
    assert_eq!(go(&["--baseline", "static=zeros"]), zeros);
    assert_eq!(go(&["--baseline", "zeros"]), zeros);
    // mean for static only = mean for both with series named back to zeros.
    assert_eq!(
        go(&["--baseline", "static=mean"]),
        go(&["--baseline", "mean", "--baseline", "series=zeros"])
    );
    assert_ne!(go(&["--baseline", "static=mean"]), zeros);
    // The case's (T, F) file, written out per sequence as (B, T, F), gives the same numbers.
    let (shape, one) = npy(&dir.join("baseline_series.npy"));
    let b = npy(&dir.join("series.npy")).0[0];
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full.npy");
    let payload: Vec<u8> = (0..b)
        .flat_map(|_| one.iter().flat_map(|v| (*v as f32).to_le_bytes()))
        .collect();
    std::fs::write(
        &full,
        crate::npy_bytes("<f4", &[b, shape[0], shape[1]], &payload),
    )
    .unwrap();
    assert_eq!(
        go(&["--baseline", &format!("series={}", full.display())]),
        go(&["--baseline", "series=baseline_series.npy"])
    );
    assert_eq!(case["baselines"][0], "series=baseline_series.npy");
}

/// Baselines that do not fit exit 2 with one line naming the flag, the input and what would fit, before
/// any output file is written.
#[test]
fn explain_baseline_refusals() {
    let dir = cases_dir().join("tokens_static_file_mean_baseline");
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, descr: &str, shape: &[usize], payload: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, crate::npy_bytes(descr, shape, &payload)).unwrap();
        p.display().to_string()
    };
    // Whole-number floats are ids (as for --input); 12.5 is not.
    let floats = write(
        "floats.npy",
        "<f4",
        &[8],
        (0..8)
            .flat_map(|k| (k as f32 + 0.5).to_le_bytes())
            .collect(),
    );
    let wrong = write("wrong.npy", "<f4", &[2, 2], vec![0; 16]);
    let static_row = write("row.npy", "<f4", &[5], vec![0; 20]);
    let out_of_vocab = write(
        "vocab.npy",
        "<i4",
        &[8],
        (0..8).flat_map(|k| (k * 10i32).to_le_bytes()).collect(),
    );
    let save = tmp.path().join("out.npz");
    for (extra, want) in [
        (
            vec![format!("tokens={floats}")],
            vec![
                "--baseline tokens=",
                "input 'tokens' takes token ids, whole numbers in 0..30",
                "holds 0.5, which is not a whole number",
            ],
        ),
        (
            vec![format!("tokens={out_of_vocab}")],
            vec![
                "input 'tokens'",
                "holds 30, which is outside the vocabulary",
            ],
        ),
        (
            vec![format!("tokens={wrong}")],
            vec![
                "input 'tokens' holds token ids (3, 8)",
                "has shape (2, 2)",
                "give baseline ids (3, 8) or one sequence (8,)",
            ],
        ),
        (
            vec![format!("static={wrong}")],
            vec![
                "--baseline static=",
                "the file has shape (2, 2); input 'static' takes",
                "a baseline of the input's shape (3, 5) or one row (5,)",
            ],
        ),
        (
            vec![format!("bogus={static_row}")],
            vec![
                "the model has no input 'bogus' (its inputs: tokens, static)",
                "NAME=zeros|mean|FILE.npy",
            ],
        ),
        (
            vec![static_row.clone()],
            vec![
                "the model has 2 inputs (tokens, static)",
                "say which one the file is for: --baseline NAME=",
            ],
        ),
        (
            vec!["static=mean".into(), "static=zeros".into()],
            vec!["input 'static' already has --baseline static=mean"],
        ),
        (
            vec!["zeros".into(), "mean".into()],
            vec!["--baseline zeros already gives the baseline of the inputs not named"],
        ),
        (vec!["tokens=".into()], vec!["no baseline after 'tokens='"]),
        // A keyword in the wrong case is a file name that does not exist: say so, with the flag.
        (
            vec!["static=ZEROS".into()],
            vec![
                "--baseline static=ZEROS: no file ZEROS",
                "zeros, mean (lower case) or an .npy file",
            ],
        ),
    ] {
        let mut cmd = rnntrace();
        cmd.current_dir(&dir).args([
            "explain",
            "--model",
            "model.keras",
            "--input",
            "tokens=tokens.npy",
            "--input",
            "static=static.npy",
        ]);
        cmd.arg("--save").arg(&save);
        for e in &extra {
            cmd.args(["--baseline", e]);
        }
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{extra:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{extra:?}: want {w:?} in {err}");
        }
        assert!(out.is_empty(), "{extra:?}");
        assert!(!save.exists(), "{extra:?}: no output after a refusal");
    }
    // A valid one-row file for the flat input is accepted.
    let (code, _, err) = run(rnntrace().current_dir(&dir).args([
        "explain",
        "--model",
        "model.keras",
        "--input",
        "tokens=tokens.npy",
        "--input",
        "static=static.npy",
        "--quiet",
        "--baseline",
        &format!("static={static_row}"),
    ]));
    assert_eq!(code, 0, "{err}");
}

/// Regression: `--baseline mean` averaged the padding steps a Masking layer masks (the help says "over every
/// unmasked step"): baseline_prediction and integrated gradients were those of another baseline. Now `mean`
/// equals a baseline file holding each feature's mean over the steps the model keeps, through the chain
/// explainer (Sequential Masking → LSTM → GRU) and the graph explainer (Functional Masking → branches).
#[test]
fn mean_baseline_counted_the_steps_a_masking_layer_masks() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [
        fixtures()
            .join("explain")
            .join("model_stack_masking_softmax"),
        fixtures().join("real_models").join("masking_graph"),
    ] {
        let (shape, x) = npy(&dir.join("input.npy"));
        let f = shape[2];
        // Each feature's mean over the kept steps (a step is masked when all its features equal 0.0, the
        // fixtures' mask_value), and over every step.
        let (mut kept, mut all) = (vec![0f64; f], vec![0f64; f]);
        let (mut nk, mut na) = (0usize, 0usize);
        for row in x.chunks(f) {
            na += 1;
            all.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            if row.iter().any(|&v| v != 0.0) {
                nk += 1;
                kept.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
        assert!(nk < na, "{}: no masked step in the fixture", dir.display());
        let file = |name: &str, sums: &[f64], n: usize| {
            let p = tmp.path().join(name);
            let one: Vec<f32> = (0..shape[1])
                .flat_map(|_| sums.iter().map(move |s| (s / n as f64) as f32))
                .collect();
            let payload: Vec<u8> = one.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&p, npy_bytes("<f4", &shape[1..], &payload)).unwrap();
            p
        };
        let kept_file = file("kept.npy", &kept, nk);
        let all_file = file("all.npy", &all, na);
        let explain = |baseline: &std::ffi::OsStr| {
            let (code, out, err) = run(rnntrace()
                .current_dir(&dir)
                .args(["explain", "--model", "model.keras", "--input", "input.npy"])
                .args([
                    "--methods",
                    "integrated-gradients",
                    "--format",
                    "json",
                    "--baseline",
                ])
                .arg(baseline));
            assert_eq!(code, 0, "{err}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let flat = |key: &serde_json::Value| -> Vec<f64> {
                fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
                    match v {
                        serde_json::Value::Array(a) => a.iter().for_each(|e| walk(e, out)),
                        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
                        _ => {}
                    }
                }
                let mut out = Vec::new();
                walk(key, &mut out);
                out
            };
            (
                flat(&v["baseline_prediction"]),
                flat(&v["attributions"]["integrated_gradients"]),
            )
        };
        let mean = explain("mean".as_ref());
        let kept = explain(kept_file.as_os_str());
        let all = explain(all_file.as_os_str());
        let close = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6)
        };
        assert!(
            close(&mean.0, &kept.0),
            "{}: {:?} vs {:?}",
            dir.display(),
            mean.0,
            kept.0
        );
        assert!(close(&mean.1, &kept.1), "{}: IG", dir.display());
        // The two baselines differ enough for the check to tell them apart.
        assert!(
            !close(&mean.0, &all.0),
            "{}: the fixture cannot tell",
            dir.display()
        );
    }
}

/// A baseline file holding NaN or ±inf is refused (it gave null predictions and attributions, exit 0).
#[test]
fn baseline_file_with_nan_gave_null_attributions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures()
        .join("explain")
        .join("model_stack_masking_softmax");
    let (shape, x) = npy(&dir.join("input.npy"));
    let mut vals: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    vals[7] = f32::NAN;
    let p = tmp.path().join("nan.npy");
    let payload: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&p, npy_bytes("<f4", &shape, &payload)).unwrap();
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "explain",
            "--model",
            "model.keras",
            "--input",
            "input.npy",
            "--baseline",
        ])
        .arg(&p));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("nan.npy") && err.contains("--baseline") && err.contains("not finite"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Regression: `--save` wrote a flat input's attributions as (batch, 1, features) while the JSON gives
/// (batch, features); the two now agree in shape and values.
#[test]
fn saved_flat_input_attributions_had_a_stray_step_axis() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cases_dir().join("two_input_series_file_baseline");
    let case = read_json(&dir.join("case.json"));
    let mut args: Vec<String> = vec!["explain".into(), "--model".into(), "model.keras".into()];
    for inp in case["inputs"].as_array().unwrap() {
        args.push("--input".into());
        args.push(format!(
            "{}={}",
            inp[0].as_str().unwrap(),
            inp[1].as_str().unwrap()
        ));
    }
    let save = tmp.path().join("s.npz");
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args(&args)
        .args(["--format", "json", "--save"])
        .arg(&save));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut flat_seen = false;
    for inp in case["inputs"].as_array().unwrap() {
        let name = inp[0].as_str().unwrap();
        let saved = super::output::npz_members(&tmp.path().join(format!("s-{name}.npz")));
        for method in ["gradient", "input_x_gradient", "integrated_gradients"] {
            let j = &v["attributions"][name][method];
            let rows = j.as_array().unwrap();
            let json_shape: Vec<usize> = if rows[0][0].is_array() {
                vec![
                    rows.len(),
                    rows[0].as_array().unwrap().len(),
                    rows[0][0].as_array().unwrap().len(),
                ]
            } else {
                vec![rows.len(), rows[0].as_array().unwrap().len()]
            };
            let raw = &saved[&format!("attributions/{method}")];
            assert_eq!(raw.shape, json_shape, "{name} {method}");
            assert!(
                raw.data
                    .iter()
                    .zip(flat(j))
                    .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)),
                "{name} {method}"
            );
            flat_seen |= inp[2] == "flat";
        }
    }
    assert!(flat_seen, "the fixture has no flat input");
}
