//! Models under a dtype policy other than float32 (`fixtures/float16_models/`, written by real Keras 3.15 /
//! tf-keras 2.21 with `fixtures/generate_float16_models.py`). rnntrace computes them as TensorFlow does
//! (every op rounded to float16 or bfloat16 where TensorFlow rounds it; `fixtures/probe_float16_ops.py`
//! and `probe_bfloat16_ops.py` measured where), compares with the policy's tolerance (4 ulps of the compute
//! type at the largest expected value, rtol 0) and says which; the header says the precision.
//!
//! Measured: every case reproduces `model.predict` bit for bit (max |diff| 0), while the same models
//! computed in float32 are off by 4.6e-5 to 2.2e-3 (`float32_max_abs_diff` in each `case.json`). Each
//! test checks both: the verdict within the stated tolerance, and the measured error.

use crate::{fixtures, rnntrace, run};
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    fixtures().join("float16_models").join(name)
}

fn model_file(name: &str) -> &'static str {
    if dir(name).join("model.keras").exists() {
        "model.keras"
    } else {
        "model.h5"
    }
}

fn case_info(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("case.json")).unwrap()).unwrap()
}

/// `run --model … --input input.npy --expected expected.npy`: exit 0, `PASS` within the policy's stated
/// tolerance, and the JSON report's precision, tolerance and error as measured.
fn computed(name: &str) {
    let info = case_info(name);
    let policy = info["policy"].as_str().unwrap();
    let compute = if policy.contains("bfloat16") {
        "bfloat16"
    } else {
        "float16"
    };
    let args = [
        "run",
        "--model",
        model_file(name),
        "--input",
        "input.npy",
        "--expected",
        "expected.npy",
    ];
    let (code, out, err) = run(rnntrace().current_dir(dir(name)).args(args).arg("-q"));
    assert_eq!(code, 0, "{name}: {out}{err}");
    let why =
        format!("(a {policy} model's tolerance: 4 {compute} ulps at the largest expected value");
    assert!(
        out.starts_with("PASS") && out.contains(&why) && out.contains("rtol 0e0"),
        "{name}: {out}"
    );
    let (code, out, err) = run(rnntrace()
        .current_dir(dir(name))
        .args(args)
        .args(["--format", "json"]));
    assert_eq!(code, 0, "{name}: {err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["precision"], policy, "{name}");
    let c = &j["comparison"];
    assert_eq!(c["passed"], true, "{name}: {c}");
    assert_eq!(c["rtol"], 0.0, "{name}: {c}");
    // 4 ulps of the compute type at the largest expected value (float16: 2^-10 of it, bfloat16 2^-7).
    let top = info["expected_max_abs"].as_f64().unwrap();
    let bits = if compute == "float16" { 11 } else { 8 };
    let ulp = 2f64.powi(top.log2().floor() as i32 - (bits - 1));
    assert_eq!(c["atol"].as_f64().unwrap(), 4.0 * ulp, "{name}: {c}");
    let err = c["max_abs_error"].as_f64().unwrap();
    assert_eq!(err, 0.0, "{name}: max |diff| {err} (measured: bit for bit)");
    // Far closer than a float32 computation of the same model.
    assert!(
        err < info["float32_max_abs_diff"].as_f64().unwrap() / 2.0,
        "{name}: {err}"
    );
    for l in j["layers"].as_array().unwrap() {
        assert_eq!(l["dtype_policy"], policy, "{name}: {l}");
    }
}

macro_rules! float16_cases {
    ($($case:ident,)*) => {
        mod computed_and_matches_within_the_policy_tolerance {
            $(#[test] fn $case() { super::computed(stringify!($case)); })*
        }

        #[test]
        fn every_float16_fixture_is_tested() {
            let listed = [$(stringify!($case)),*];
            let mut dirs: Vec<String> = std::fs::read_dir(fixtures().join("float16_models"))
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            dirs.sort();
            assert!(dirs.len() >= 16, "fixtures missing: {dirs:?}");
            for d in &dirs {
                assert!(listed.contains(&d.as_str()), "fixture float16_models/{d} has no test");
            }
        }
    };
}

float16_cases! {
    mixed_lstm,
    mixed_gru,
    mixed_gru_reset_before,
    mixed_simple_rnn,
    mixed_bidirectional,
    mixed_embedding_lstm,
    mixed_conv1d_gru,
    mixed_no_float32_head,
    float16_lstm,
    bfloat16_lstm,
    tf_keras_mixed_lstm,
    mixed_lstm_large,
    mixed_conv1d_pool_lstm,
    mixed_attention,
    mixed_layernorm_gru,
    bfloat16_bidirectional_gru,
}

/// A float32 answer really is wrong for these models: what each case records (measured by Keras with
/// the float32 policy) is beyond the float32 tolerance of 1e-5, so running them in float32 would fail
/// (or, with a float16-sized tolerance, pass for the wrong reason): they must be computed as float16.
#[test]
fn a_float32_answer_would_fail_every_case() {
    for e in std::fs::read_dir(fixtures().join("float16_models")).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("case.json")).unwrap()).unwrap();
        let gap = info["float32_max_abs_diff"].as_f64().unwrap();
        let scale = info["expected_max_abs"].as_f64().unwrap();
        assert!(gap > 1e-5 + 1e-5 * scale, "{}: {gap}", p.display());
    }
}

/// The table header says the precision, in the title and on every layer, never "precision float32".
#[test]
fn the_header_says_the_precision() {
    for (name, policy, compute) in [
        (
            "mixed_lstm",
            "mixed_float16 (float16 compute, float32 variables)",
            "float16",
        ),
        (
            "float16_lstm",
            "float16 (float16 compute, float16 variables)",
            "float16",
        ),
        (
            "bfloat16_lstm",
            "mixed_bfloat16 (bfloat16 compute, float32 variables)",
            "bfloat16",
        ),
        (
            "tf_keras_mixed_lstm",
            "mixed_float16 (float16 compute, float32 variables)",
            "float16",
        ),
    ] {
        let (code, out, err) = run(rnntrace().current_dir(dir(name)).args([
            "run",
            "--model",
            model_file(name),
            "--input",
            "input.npy",
            "--expected",
            "expected.npy",
            "--color",
            "never",
        ]));
        assert_eq!(code, 0, "{name}: {err}");
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&format!("dtype policy {policy})"))
                && flat.contains(&format!(
                    "precision {policy}, each op rounded to {compute} as TensorFlow rounds it"
                ))
                && !flat.contains("precision float32"),
            "{name}: {out}"
        );
    }
}

/// `--timings` and the `.npz` trace's metadata say the precision too.
#[test]
fn timings_and_npz_metadata_say_the_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let npz = tmp.path().join("trace.npz");
    let (code, _, err) = run(rnntrace().current_dir(dir("mixed_gru")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "-q",
        "--timings",
        "--trace",
        npz.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    let timings: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(
        timings["precision"],
        "mixed_float16 (float16 compute, float32 variables)"
    );
    assert_eq!(timings["kernels"], "portable", "{timings}");
    let bytes = std::fs::read(&npz).unwrap();
    let meta = npz_metadata(&bytes);
    assert!(
        meta.contains("\"precision\":\"mixed_float16\"")
            && meta.contains("\"dtype_policy\":\"mixed_float16\""),
        "{meta}"
    );
}

/// The metadata member of an `.npz` (stored uncompressed: a 0-d UTF-32 array), as text.
fn npz_metadata(bytes: &[u8]) -> String {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut m = z.by_name("metadata.npy").unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut m, &mut raw).unwrap();
    raw.chunks_exact(4)
        .filter_map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .filter(|c| !c.is_control())
        .collect()
}

/// `--precision f64` would compute a model that never rounds: refused, exit 2, one line naming the policy.
#[test]
fn precision_f64_is_refused_naming_the_policy() {
    let (code, out, err) = run(rnntrace().current_dir(dir("mixed_bidirectional")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--precision",
        "f64",
    ]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--precision f64")
            && err.contains(
                "dtype policy mixed_float16 (float16 compute, float32 variables) (layer 'bidirectional' and 1 other)"
            )
            && err.contains("--precision f32 (the default)"),
        "{err}"
    );
}

/// `--atol`/`--rtol` replace the policy's tolerance (0 and 0 still pass: bit for bit), and the policy's
/// tolerance does fail a different model's output (`float16_lstm`'s, same shape), exit 1.
#[test]
fn given_tolerances_replace_the_policy_one_and_a_wrong_output_fails() {
    let (code, out, err) = run(rnntrace().current_dir(dir("mixed_lstm")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--expected",
        "expected.npy",
        "--atol",
        "0",
        "--rtol",
        "0",
        "-q",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("atol 0e0 + rtol 0e0;") && !out.contains("tolerance:"),
        "{out}"
    );
    let other = dir("float16_lstm").join("expected.npy");
    let (code, out, err) = run(rnntrace().current_dir(dir("mixed_lstm")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--expected",
        other.to_str().unwrap(),
        "-q",
    ]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("FAIL")
            && out.contains("(a mixed_float16 model's tolerance: 4 float16 ulps"),
        "{out}"
    );
}

/// `explain` explains every policy model here through its float32 computation (attribution goldens:
/// tests/cli/explain_float16.rs) and reports the model's own prediction under the policy next to it:
/// bit for bit `model.predict` (`expected.npy`), as `run` computes it.
#[test]
fn explain_reports_every_float16_model_with_its_policy_prediction() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("float16_models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 16, "{names:?}");
    for name in names {
        let info = case_info(&name);
        let (code, out, err) = run(rnntrace().current_dir(dir(&name)).args([
            "explain",
            "--model",
            model_file(&name),
            "--input",
            "input.npy",
            "--format",
            "json",
            "--methods",
            "gradient,occlusion",
        ]));
        assert_eq!(code, 0, "{name}: {err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["policy"], info["policy"], "{name}");
        assert_eq!(j["computed_in"], "float32", "{name}");
        let (shape, expected) = crate::npy(&dir(&name).join("expected.npy"));
        // Output 0 of each sequence (a sequence output's last step, as explain reads it).
        let per: usize = shape[1..].iter().product();
        let last = per - shape[shape.len() - 1];
        let want: Vec<f32> = (0..shape[0])
            .map(|b| expected[b * per + last] as f32)
            .collect();
        let got: Vec<f32> = j["policy_prediction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want, "{name}: policy_prediction vs model.predict");
        // The explained prediction is the float32 computation's: within the measured float32 distance.
        let pred: Vec<f64> = j["prediction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let far = pred
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - f64::from(*b)).abs())
            .fold(0.0, f64::max);
        let measured = info["float32_max_abs_diff"].as_f64().unwrap();
        assert!(
            far <= measured * 1.001 + 1e-7,
            "{name}: {far} vs {measured}"
        );
        let grads: Vec<f64> = j["attributions"]["gradient"]
            .to_string()
            .split(|c: char| "[],".contains(c))
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<f64>().unwrap())
            .collect();
        assert!(
            !grads.is_empty() && grads.iter().all(|g| g.is_finite()),
            "{name}"
        );
        assert!(err.contains("note: the model computes in"), "{name}: {err}");
    }
}

/// `inspect` says which layers compute under the policy (the float32 head is not among them).
#[test]
fn inspect_names_the_policy_and_its_layers() {
    let (code, out, err) = run(rnntrace().current_dir(dir("mixed_conv1d_gru")).args([
        "inspect",
        "--model",
        "model.keras",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "dtype policy mixed_float16 (float16 compute, float32 variables): conv1d, gru; `run` rounds every op of these layers to float16"
        ) && !flat.contains("cannot compute"),
        "{out}"
    );
}
