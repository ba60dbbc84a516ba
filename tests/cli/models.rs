//! `run --model` and `inspect` on saved models written by real Keras 3.15 and tf-keras 2.21
//! (fixtures/generate_models.py). Tolerance 1e-5, for the float32 reasons given in golden.rs.

use crate::{fixtures, npy, rnntrace, run};
use serde_json::Value;
use std::path::PathBuf;

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn model_file(name: &str) -> String {
    let dir = model_dir(name);
    for f in ["model.keras", "model.h5"] {
        if dir.join(f).exists() {
            return f.to_string();
        }
    }
    panic!("no model file in {}", dir.display());
}

/// Runs `run --model FILE --input input.npy --format json` in `dir` and returns the parsed trace.
fn run_json(dir: &std::path::Path, file: &str) -> Value {
    let (code, out, err) = run(rnntrace().current_dir(dir).args([
        "run",
        "--model",
        file,
        "--input",
        "input.npy",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{}: {err}", dir.display());
    serde_json::from_str(&out).unwrap()
}

/// Runs the model on its input and checks rnntrace's own verdict against Keras's model.predict.
fn passes(name: &str) {
    let dir = model_dir(name);
    let (code, out, err) = run(rnntrace().current_dir(&dir).args([
        "run",
        "--model",
        &model_file(name),
        "--input",
        "input.npy",
        "--expected",
        "expected.npy",
        "-q",
    ]));
    assert_eq!(code, 0, "{name}: {out}{err}");
    assert!(out.starts_with("PASS"), "{name}: {out}");
}

macro_rules! model_cases {
    ($($case:ident),* $(,)?) => {
        $(#[test] fn $case() { passes(stringify!($case)); })*
    };
}

model_cases!(
    stacked_seed,
    gru_lstm_stack,
    bidir_lstm_concat,
    bidir_gru_ave_mul,
    dropout_masking,
    dropout_masking_last,
    activation_layer,
    flatten,
    functional_linear,
    functional_masking,
    stateful_lstm,
    keras3_legacy_h5,
    keras3_legacy_h5_functional,
    tf_keras2_hard_sigmoid,
    tf_keras2_old_attributes,
    tf_keras2_zip,
    simple_rnn,
    tf_keras2_functional,
    stateful_batch1,
);

/// The stacked seed (the question that mixed up axes): the first LSTM's return_sequences output, step by
/// step, equals Keras's own output of that layer.
#[test]
#[allow(clippy::needless_range_loop)]
fn stacked_seed_first_layer_outputs_match_keras_per_step() {
    let dir = model_dir("stacked_seed");
    let t = run_json(&dir, "model.keras");
    let layers = t["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["name"], "lstm");
    assert_eq!(layers[1]["name"], "lstm_1");
    let arrays: std::collections::HashMap<String, rnntrace::io::RawArray> =
        rnntrace::io::npz::parse(&std::fs::read(dir.join("layer_outputs.npz")).unwrap())
            .unwrap()
            .into_iter()
            .collect();
    let keras = &arrays["lstm"];
    let (b, steps, u) = (keras.shape[0], keras.shape[1], keras.shape[2]);
    for s in 0..b {
        for k in 0..steps {
            let ours = &layers[0]["sequences"][s]["steps"][k]["output"];
            for j in 0..u {
                let v = ours[j].as_f64().unwrap();
                let e = keras.data[(s * steps + k) * u + j];
                assert!(
                    (v - e).abs() < 1e-5,
                    "lstm output [{s}, {k}, {j}]: ours {v}, Keras {e}"
                );
            }
        }
    }
    let expected = npy(&dir.join("expected.npy")).1;
    let preds: Vec<f64> = t["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    for (a, e) in preds.iter().zip(&expected) {
        assert!((a - e).abs() < 1e-5);
    }
}

#[test]
fn bidirectional_appears_as_two_directions() {
    let dir = model_dir("bidir_lstm_concat");
    let t = run_json(&dir, "model.keras");
    let names: Vec<&str> = t["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("/forward"))
            && names.iter().any(|n| n.ends_with("/backward")),
        "{names:?}"
    );
    let backward = t["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"].as_str().unwrap().ends_with("/backward"))
        .unwrap();
    assert_eq!(backward["go_backwards"], true);
}

#[test]
fn layers_flag_picks_the_tables() {
    let dir = model_dir("stacked_seed");
    let (code, out, _) = run(rnntrace().current_dir(&dir).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--layers",
        "lstm_1",
        "--sequences",
        "0",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0);
    assert!(out.contains("layer 'lstm_1'"));
    assert!(
        !out.contains("── Layer 'lstm' "),
        "only lstm_1 gets per-step tables"
    );
    let (code, _, err) = run(rnntrace().current_dir(&dir).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--layers",
        "nope",
    ]));
    assert_eq!(code, 2);
    assert!(
        err.contains("no recurrent layer named 'nope'") && err.contains("lstm_1"),
        "{err}"
    );
}

#[test]
fn conv1d_and_branching_once_refused_now_run() {
    // Named when Conv1D and branching graphs were refused; both now reproduce model.predict.
    passes("unsupported_conv1d");
    passes("functional_branching");
}

#[test]
fn keras2_hard_sigmoid_is_used_for_keras2_files() {
    let dir = model_dir("tf_keras2_hard_sigmoid");
    let t = run_json(&dir, "model.h5");
    assert!(
        t["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["recurrent_activation"] == "hard_sigmoid_keras2")
    );
}

#[test]
fn inspect_model_summarises_layers_and_gate_blocks() {
    let dir = model_dir("stacked_seed");
    let (code, out, err) = run(rnntrace().current_dir(&dir).args([
        "inspect",
        "--model",
        "model.keras",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    for needle in [
        "lstm_1",
        "LSTM",
        "Dense",
        "Total params",
        "f forget gate",
        "(None, 32, 5)",
        "‖recurrent‖",
    ] {
        assert!(out.contains(needle), "missing {needle}: {out}");
    }
    // Parameters as model.summary() counts them: 4·5·(28+5+1) + 4·5·(5+5+1) + 5·2+2.
    assert!(
        out.contains(&format!("Total params: {}", 4 * 5 * 34 + 4 * 5 * 11 + 12)),
        "{out}"
    );
}

#[test]
fn inspect_weights_file() {
    let dir = crate::case_dir("gru_weather_seed");
    let (code, out, _) = run(rnntrace().current_dir(&dir).args([
        "inspect",
        "--weights",
        "weights.json",
        "--cell",
        "gru",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0);
    assert!(
        out.contains("reset_after=True")
            && out.contains("z update gate")
            && out.contains("Recurrent")
            && out.contains("bias mean"),
        "{out}"
    );
}

#[test]
fn corrupt_model_files_are_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model_dir("stacked_seed").join("model.keras")).unwrap();
    for (name, content) in [
        ("cut.keras", bytes[..bytes.len() / 2].to_vec()),
        ("junk.keras", b"PK\x03\x04 garbage".to_vec()),
        ("empty.h5", Vec::new()),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        let (code, _, err) = run(rnntrace()
            .args(["run", "--input"])
            .arg(model_dir("stacked_seed").join("input.npy"))
            .arg("--model")
            .arg(&p));
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(name) && !err.contains("panicked"), "{err}");
    }
}

/// `run --model state.npz --cell …`: a whole PyTorch module (every layer, both directions) against the
/// module's own output (fixtures/generate_torch.py), 1e-5.
#[test]
fn pytorch_state_dicts_run_as_whole_stacks() {
    let root = crate::fixtures().join("torch");
    for (case, cell) in [
        ("lstm_2layer", "lstm"),
        ("gru_2layer", "gru"),
        ("lstm_bidirectional", "lstm"),
        ("gru_bidirectional", "gru"),
        ("lstm_no_bias", "lstm"),
        ("gru_no_bias", "gru"),
    ] {
        let dir = root.join(case);
        let (code, out, err) = run(rnntrace().current_dir(&dir).args([
            "run",
            "--model",
            "state.npz",
            "--cell",
            cell,
            "--input",
            "input.npy",
            "--expected",
            "output.npy",
            "-q",
        ]));
        assert_eq!(code, 0, "{case}: {out}{err}");
        assert!(out.starts_with("PASS"), "{case}: {out}");
    }
}

/// `--output-names` labels the prediction chart of `run` as it does for `lstm`/`gru`.
#[test]
fn run_output_names_label_the_prediction_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("p.svg");
    let (code, out, err) = run(rnntrace().current_dir(model_dir("stacked_seed")).args([
        "run",
        "--model",
        &model_file("stacked_seed"),
        "--input",
        "input.npy",
        "--expected",
        "expected.npy",
        "--output-names",
        "Alpha,Beta",
        "--plot-predictions",
        chart.to_str().unwrap(),
        "-q",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.contains("Alpha") && svg.contains("Beta"),
        "panels unnamed"
    );
}

/// `run` checks `--layers`, `--output-names` and `--plot-sequence` against the model and the input before
/// it writes anything: a bad value is exit 2 naming the flag, and no `--trace` file appears.
#[test]
fn run_checks_model_dependent_flags_before_writing() {
    for (flag, value, needle) in [
        (
            "--layers",
            "nope",
            "--layers: no recurrent layer named 'nope'",
        ),
        (
            "--output-names",
            "one",
            "--output-names gives 1 names; the model has 2 outputs",
        ),
        (
            "--plot-sequence",
            "9",
            "--plot-sequence 9 is out of range: the input holds 4 sequences",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let trace = tmp.path().join("t.json");
        let gates = tmp.path().join("g.png");
        let (code, out, err) = run(rnntrace().current_dir(model_dir("stacked_seed")).args([
            "run",
            "--model",
            &model_file("stacked_seed"),
            "--input",
            "input.npy",
            "--trace",
            trace.to_str().unwrap(),
            "--plot-gates",
            gates.to_str().unwrap(),
            flag,
            value,
        ]));
        assert_eq!(code, 2, "{flag}: {out}{err}");
        assert!(err.contains(needle), "{flag}: {err}");
        assert!(
            !trace.exists() && !gates.exists(),
            "{flag}: wrote before checking"
        );
    }
}

/// `run --trace FILE.npz` writes every recurrent layer under its traced name (a Bidirectional's directions
/// as `name/forward/…`, `name/backward/…`), streamed: every gate, pre-activation, state, output and mask
/// flag of every step equals the JSON trace of the same run (1e-6: the same float32 numbers, printed in
/// JSON with enough digits to round-trip), the model's input is the input file, its output is Keras's
/// model.predict (1e-5, as `passes`), and the members are the documented ones.
#[test]
fn run_npz_trace_holds_every_layer_and_matches_the_json_trace() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "bidir_lstm_concat",
        "dropout_masking",
        "gru_lstm_stack",
        "simple_rnn",
        "stateful_lstm",
        // A Functional graph: its recurrent layers stream through run_graph.
        "functional_branching",
    ] {
        let dir = model_dir(name);
        let file = model_file(name);
        let npz = tmp.path().join(format!("{name}.npz"));
        let (code, out, err) = run(rnntrace().current_dir(&dir).args([
            "run",
            "--model",
            &file,
            "--input",
            "input.npy",
            "--expected",
            "expected.npy",
            "--quiet",
            "--record-pre",
            "--trace",
            npz.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "{name}: {out}{err}");
        let m = crate::output::npz_members(&npz);
        let t = run_json(&dir, &file);
        let (xs, x) = npy(&dir.join("input.npy"));
        assert_eq!(m["input"].shape, xs, "{name}: input");
        for (a, b) in m["input"].data.iter().zip(&x) {
            assert!((a - b).abs() < 1e-6, "{name}: input {a} vs {b}");
        }
        let (es, e) = npy(&dir.join("expected.npy"));
        assert_eq!(
            m["output"].data.len(),
            es.iter().product::<usize>(),
            "{name}: output"
        );
        for (a, b) in m["output"].data.iter().zip(&e) {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-5 * b.abs(),
                "{name}: output {a} vs {b}"
            );
        }
        assert!(m.contains_key("predictions") && m.contains_key("metadata"));
        let layers = t["layers"].as_array().unwrap();
        assert!(!layers.is_empty());
        for l in layers {
            let lname = l["name"].as_str().unwrap();
            let u = l["units"].as_u64().unwrap() as usize;
            let seqs = l["sequences"].as_array().unwrap();
            let b = seqs.len();
            let gates: Vec<&str> = match l["cell"].as_str().unwrap() {
                "lstm" => vec!["i", "f", "c", "o"],
                "gru" => vec!["z", "r", "h"],
                _ => vec!["h"],
            };
            let member = |k: &str| {
                let key = format!("{lname}/{k}");
                m.get(&key).unwrap_or_else(|| {
                    let mut have: Vec<_> = m.keys().collect();
                    have.sort();
                    panic!("{name}: member {key} missing; have {have:?}")
                })
            };
            let steps = seqs[0]["steps"].as_array().unwrap().len();
            for k in [
                "last_output",
                "initial_state/h",
                "final_state/h",
                "input_index",
            ] {
                member(k);
            }
            for (s, seq) in seqs.iter().enumerate() {
                for (k, step) in seq["steps"].as_array().unwrap().iter().enumerate() {
                    let mut fields: Vec<(String, &Value)> = Vec::new();
                    for g in &gates {
                        fields.push((format!("gates/{g}"), &step["gates"][g]));
                        fields.push((format!("pre/{g}"), &step["pre"][g]));
                    }
                    fields.push(("state/h".into(), &step["state"]["h"]));
                    if l["cell"] == "lstm" {
                        fields.push(("state/c".into(), &step["state"]["c"]));
                    }
                    let masked = m.contains_key(&format!("{lname}/masked"));
                    if masked {
                        fields.push(("output".into(), &step["output"]));
                        assert_eq!(
                            member("masked").data[k * b + s] != 0.0,
                            step["masked"].as_bool().unwrap(),
                            "{name}: {lname}/masked[{k}, {s}]"
                        );
                    }
                    for (f, v) in fields {
                        let a = member(&f);
                        assert_eq!(a.shape, vec![steps, b, u], "{name}: {lname}/{f}");
                        for (j, v) in v.as_array().unwrap().iter().enumerate() {
                            let got = a.data[(k * b + s) * u + j];
                            assert!(
                                (got - v.as_f64().unwrap()).abs() < 1e-6,
                                "{name}: {lname}/{f}[{k}, {s}, {j}]: {got} vs {v}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `--record states` keeps states and no gates; `--record none` only the ends; without `--record-pre` no
/// pre-activations; the JSON-only trace extension is gone, and any other extension is refused (exit 2).
#[test]
fn run_npz_record_modes_and_bad_trace_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir("gru_lstm_stack");
    let file = model_file("gru_lstm_stack");
    for (mode, gates, states) in [
        ("all", true, true),
        ("states", false, true),
        ("none", false, false),
    ] {
        let npz = tmp.path().join(format!("{mode}.npz"));
        let (code, _, err) = run(rnntrace().current_dir(&dir).args([
            "run",
            "--model",
            &file,
            "--input",
            "input.npy",
            "-q",
            "--record",
            mode,
            "--trace",
            npz.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "{mode}: {err}");
        let m = crate::output::npz_members(&npz);
        let count = |pat: &str| m.keys().filter(|k| k.contains(pat)).count();
        assert_eq!(count("/gates/") > 0, gates, "{mode}: {:?}", m.keys());
        assert_eq!(count("/state/") > 0, states, "{mode}");
        assert_eq!(count("/pre/"), 0, "{mode}");
        assert!(count("/final_state/h") >= 2, "{mode}: both layers' ends");
    }
    let bad = tmp.path().join("t.csv");
    let (code, _, err) = run(rnntrace().current_dir(&dir).args([
        "run",
        "--model",
        &file,
        "--input",
        "input.npy",
        "--trace",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FILE.npz"), "{err}");
    assert!(!bad.exists());
}
