//! `run --model` on the layers around the recurrent cells (issue 12): Embedding (masks included),
//! Conv1D, pooling, normalisation, RepeatVector, Permute, padding and cropping, and small versions of the
//! keras.io examples, each written by real Keras 3.15 / tf-keras 2.21 (fixtures/generate_real_models.py).
//! Tolerance 1e-5 (atol and rtol, rnntrace's default), as for the other float32 models (golden.rs): the
//! largest differences seen are below 5e-7 (LayerNormalization's rsqrt).

use crate::{fixtures, rnntrace, run};
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    fixtures().join("real_models").join(name)
}

fn model_file(name: &str) -> &'static str {
    if dir(name).join("model.keras").exists() {
        "model.keras"
    } else {
        "model.h5"
    }
}

/// `run --model … --input input.npy --expected expected.npy`: rnntrace's own verdict against
/// model.predict, and the largest error it reports.
fn passes(name: &str) {
    let (code, out, err) = run(rnntrace().current_dir(dir(name)).args([
        "run",
        "--model",
        model_file(name),
        "--input",
        "input.npy",
        "--expected",
        "expected.npy",
        "-q",
    ]));
    assert_eq!(code, 0, "{name}: {out}{err}");
    assert!(out.starts_with("PASS"), "{name}: {out}");
}

/// The fixtures with a test of their own below (several inputs or outputs, refusals, other input files).
const TESTED_BY_NAME: &[&str] = &[
    "lambda_layer",
    "mixed_float16",
    "two_input_concat",
    "tf_keras_two_input",
    "encoder_decoder",
    "tf_keras_encoder_decoder",
    "rnn_stacked_initial_state",
    "luong_dot_attention",
    "two_outputs",
    "attention_value_mask",
    "shared_siamese",
    "tf_keras_shared_siamese",
    "shared_embedding_mask",
    "attention_scores",
    "additive_attention_scores_causal",
    "tf_keras_attention_scores",
    "explicit_mask_input",
    "tf_keras_explicit_mask_input",
    "explicit_mask_ops",
];

/// One test per fixture that runs on `input.npy` (a failure names its fixture); and a check that every
/// fixture directory is listed here or in [`TESTED_BY_NAME`], so none is silently skipped.
macro_rules! real_model_cases {
    ($($case:ident),* $(,)?) => {
        mod passes_against_keras {
            $(#[test] fn $case() { super::passes(stringify!($case)); })*
        }

        #[test]
        fn every_real_model_fixture_is_tested() {
            let listed = [$(stringify!($case)),*];
            let mut dirs: Vec<String> = std::fs::read_dir(fixtures().join("real_models"))
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            dirs.sort();
            assert!(dirs.len() >= 50, "fixtures missing: {dirs:?}");
            for d in &dirs {
                assert!(
                    listed.contains(&d.as_str()) || TESTED_BY_NAME.contains(&d.as_str()),
                    "fixture real_models/{d} has no test"
                );
            }
            for d in TESTED_BY_NAME {
                assert!(dirs.iter().any(|x| x == d), "real_models/{d} is missing");
            }
        }
    };
}

real_model_cases!(
    embedding_lstm,
    embedding_mask_gru,
    embedding_mask_float_ids,
    imdb_bidirectional,
    imdb_bidirectional_mask,
    embedding_mask_through_dense,
    embedding_mask_gap,
    embedding_mask_gmp,
    embedding_mask_conv_drops,
    embedding_h5,
    tf_keras_embedding,
    functional_embedding_mask,
    conv1d_valid,
    conv1d_same_strides,
    conv1d_causal_dilation,
    conv1d_groups_nobias,
    conv1d_h5,
    tf_keras_conv1d,
    maxpool_avgpool,
    avgpool_same_stride1,
    conv_timeseries,
    batchnorm_lstm,
    layernorm_gru,
    addition_seq2seq,
    permute_pad_crop,
    // Functional graphs: returned states, merges, masks through merges, one input; RNN(cell).
    rnn_lstm_cell,
    rnn_simple_cell_h5,
    // RNN([cells]): two LSTM cells; GRU, SimpleRNN and LSTM cells with return_sequences, return_state
    // and go_backwards; an Embedding mask through GRU(reset_after=False) and LSTM cells; Keras 3 .h5;
    // tf-keras .h5 with go_backwards.
    rnn_stacked_cells,
    rnn_stacked_states,
    rnn_stacked_masked,
    rnn_stacked_h5,
    tf_keras_rnn_stacked,
    lstm_return_state,
    rs_return_state,
    merges,
    masked_merge,
    gru_state_into_gru,
    // Attention: self-attention; masked queries and keys; causal with a key and score_mode concat;
    // AdditiveAttention with and without scale.
    attention_unmasked,
    attention_masked_dot,
    attention_causal_concat,
    additive_attention,
    additive_attention_noscale,
    // Options and graphs beyond the first fixtures: rms_scaling, an even kernel with same padding and
    // dilation, pooling strides beyond the window, GAP keepdims, BatchNormalization on 2-D; a Masking
    // mask through a graph.
    layernorm_rms,
    conv_even_same,
    masking_graph,
    // Issue 12's last refusals: one Dense called three times and a Bidirectional called twice;
    // data_format='channels_first' on Conv1D (same/strides, causal/dilation), pooling and global pooling;
    // AdditiveAttention's scores used downstream; Bidirectional(return_state=True) with LSTM and GRU,
    // merge modes concat, sum and None, with a mask, in a chain, tf-keras .h5; a decoder called with
    // initial_state gets no mask from Keras 3 (it records none), but does from tf-keras.
    shared_dense_chain,
    channels_first,
    channels_first_causal,
    attention_scores_used,
    bidirectional_lstm_state,
    bidirectional_gru_state_masked,
    bidirectional_state_merge_none,
    tf_keras_bidirectional_state,
    tf_keras_bidirectional_gru_state_masked,
    bidirectional_state_chain,
);

/// Runs `run` on a case with another input file; returns (exit code, stderr).
fn run_with_input(name: &str, input: &str) -> (i32, String) {
    let (code, _, err) = run(rnntrace().current_dir(dir(name)).args([
        "run",
        "--model",
        model_file(name),
        "--input",
        input,
    ]));
    (code, err)
}

#[test]
fn out_of_range_and_fractional_ids_are_named() {
    let (code, err) = run_with_input("embedding_mask_gru", "input_out_of_range.npy");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("input_out_of_range.npy")
            && err.contains("sequence 1, step 2 holds the id 25, which is outside the vocabulary")
            && err.contains("0..20"),
        "{err}"
    );
    let (code, err) = run_with_input("embedding_mask_gru", "input_fractional.npy");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sequence 0, step 1 holds the id 2.5, which is not a whole number"),
        "{err}"
    );
}

#[test]
fn lambda_is_refused_by_name_with_the_way_forward() {
    let (code, err) = run_with_input("lambda_layer", "input.npy");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("layer 'lambda' (Lambda): a Lambda layer: its computation is Python code")
            && err.contains("examples/export_keras.py"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The model has no saved `predict` output (it was written when float16 was refused): it runs, computed
/// under its policy, and says so. `fixtures/float16_models/` has the compared cases.
#[test]
fn mixed_float16_runs_under_its_policy_never_in_float32() {
    let (code, out, err) = run(rnntrace().current_dir(dir("mixed_float16")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("precision mixed_float16 (float16 compute, float32 variables)")
            && !flat.contains("precision float32"),
        "{out}"
    );
}

#[test]
fn inspect_shows_the_whole_model_and_marks_what_run_cannot_compute() {
    let (code, out, err) = run(rnntrace().current_dir(dir("lambda_layer")).args([
        "inspect",
        "--model",
        "model.keras",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lambda") && out.contains("lstm"), "{out}");
    assert!(
        out.contains("`run` cannot compute layer 'lambda' (Lambda)"),
        "{out}"
    );
    let (code, out, err) = run(rnntrace().current_dir(dir("mixed_float16")).args([
        "inspect",
        "--model",
        "model.keras",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dtype policy mixed_float16 (float16 compute, float32 variables): lstm")
            && !out.contains("cannot compute"),
        "{out}"
    );
}

#[test]
fn inspect_counts_the_new_layers_parameters() {
    // Embedding(20, 4) = 80, GRU(3) on 4 features (reset_after) = 3·(4·3 + 3·3 + 2·3) = 81, Dense(1) = 4:
    // Keras's model.count_params() is 165.
    let (code, out, err) = run(rnntrace().current_dir(dir("embedding_mask_gru")).args([
        "inspect",
        "--model",
        "model.keras",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Total params: 165"), "{out}");
}

/// `run` with several `--input` arguments (as given) against expected.npy.
fn passes_with(name: &str, inputs: &[&str]) {
    let mut args = vec!["run", "--model", model_file(name)];
    for i in inputs {
        args.extend(["--input", i]);
    }
    args.extend(["--expected", "expected.npy", "-q"]);
    let (code, out, err) = run(rnntrace().current_dir(dir(name)).args(&args));
    assert_eq!(code, 0, "{name}: {out}{err}");
    assert!(out.starts_with("PASS"), "{name}: {out}");
}

#[test]
fn two_inputs_in_order() {
    passes_with("two_input_concat", &["input_seq.npy", "input_static.npy"]);
    passes_with("tf_keras_two_input", &["input_seq.npy", "input_static.npy"]);
}

#[test]
fn two_inputs_by_name_in_any_order() {
    passes_with(
        "two_input_concat",
        &["static=input_static.npy", "seq=input_seq.npy"],
    );
}

#[test]
fn encoder_decoder_passes_states_as_initial_state() {
    passes_with(
        "encoder_decoder",
        &["input_encoder_in.npy", "input_decoder_in.npy"],
    );
    passes_with(
        "tf_keras_encoder_decoder",
        &["input_encoder_in.npy", "input_decoder_in.npy"],
    );
}

#[test]
fn a_missing_or_misshapen_input_is_named() {
    let (code, _, err) = run(rnntrace().current_dir(dir("two_input_concat")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input_seq.npy",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("has 2 input(s) (seq, static); 1 --input given"),
        "{err}"
    );
    // Swapped without names: the static features do not fit the sequence input.
    let (code, _, err) = run(rnntrace().current_dir(dir("two_input_concat")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input_static.npy",
        "--input",
        "input_seq.npy",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("input_static.npy")
            && err.contains("input 'seq' of the model takes (batch, 6, 3)"),
        "{err}"
    );
}

#[test]
fn stacked_cells_feed_initial_states_per_cell() {
    // encoder RNN([LSTMCell, GRUCell], return_state) -> decoder RNN([LSTMCell, GRUCell]) with
    // initial_state=[[h, c], h2]: the states flow per cell, flattened in cell order.
    passes_with(
        "rnn_stacked_initial_state",
        &["input_keras_tensor.npy", "input_keras_tensor_1.npy"],
    );
}

#[test]
fn stacked_cells_are_traced_one_recurrent_layer_per_cell() {
    let (code, out, err) = run(rnntrace().current_dir(dir("rnn_stacked_states")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rnn/cell_0", "rnn/cell_1", "rnn/cell_2"], "{out}");
    // --layers picks one cell's tables, or all of them by the layer's name.
    let tables = |pick: &str| {
        let (code, out, err) = run(rnntrace().current_dir(dir("rnn_stacked_states")).args([
            "run",
            "--model",
            "model.keras",
            "--input",
            "input.npy",
            "--sequences",
            "0",
            "--layers",
            pick,
        ]));
        assert_eq!(code, 0, "{err}");
        out
    };
    let all = tables("rnn");
    for i in 0..3 {
        assert!(all.contains(&format!("── Layer 'rnn/cell_{i}'")), "{all}");
    }
    let one = tables("rnn/cell_1");
    assert!(one.contains("SimpleRNN layer 'rnn/cell_1'"), "{one}");
    assert!(
        !one.contains("GRU layer 'rnn/cell_0'") && !one.contains("Update gate"),
        "{one}"
    );
    // Cell 1 (SimpleRNN) reads cell 0's 4 units; cell 2 (LSTM) reads cell 1's 3.
    let (code, out, err) = run(rnntrace().current_dir(dir("rnn_stacked_states")).args([
        "inspect",
        "--model",
        "model.keras",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rnn/cell_0") && out.contains("rnn/cell_1") && out.contains("rnn/cell_2"),
        "{out}"
    );
}

#[test]
fn luong_attention_with_dot_layers() {
    passes_with(
        "luong_dot_attention",
        &["input_encoder_in.npy", "input_decoder_in.npy"],
    );
}

/// `run` on the two-output model with the given `--expected` files; (exit code, stdout, stderr).
fn two_outputs_with(expected: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "-q",
    ];
    for e in expected {
        args.extend(["--expected", e]);
    }
    run(rnntrace().current_dir(dir("two_outputs")).args(&args))
}

#[test]
fn several_outputs_are_each_compared_and_named() {
    let (code, out, err) = two_outputs_with(&["expected_0.npy", "expected_1.npy"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("output 'tags': PASS"), "{out}");
    assert!(out.contains("output 'label': PASS"), "{out}");
    // A wrong count names the outputs; a swapped order names the file whose shape does not fit.
    let (code, _, err) = two_outputs_with(&["expected_0.npy"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the model has 2 output(s) ('tags', 'label'): give one per output"),
        "{err}"
    );
    let (code, _, err) = two_outputs_with(&["expected_1.npy", "expected_0.npy"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("expected_0.npy: expected output has shape (4, 6, 2); the model's output has shape (4, 1)"),
        "{err}"
    );
}

#[test]
fn a_wrong_second_output_fails_the_run_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("label_off.npy");
    let (shape, mut values) = crate::npy(&dir("two_outputs").join("expected_1.npy"));
    values[2] += 0.01;
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    std::fs::write(&bad, crate::npy_bytes("<f4", &shape, &payload)).unwrap();
    let (code, out, err) = two_outputs_with(&["expected_0.npy", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("output 'tags': PASS"), "{out}");
    assert!(
        out.contains("output 'label': FAIL: 1 of 4 values differ"),
        "{out}"
    );
}

#[test]
fn attention_with_masked_values_and_two_inputs() {
    passes_with(
        "attention_value_mask",
        &["input_query.npy", "input_ids.npy"],
    );
}

#[test]
fn inspect_shows_a_graph_inputs_and_what_each_layer_reads() {
    // A wide terminal, so that the heading line is not wrapped.
    let (code, out, err) = run(rnntrace()
        .current_dir(dir("encoder_decoder"))
        .env("COLUMNS", "200")
        .args(["inspect", "--model", "model.keras", "--color", "never"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("inputs encoder_in (None, 5, 3), decoder_in (None, 4, 2); outputs 'dense'"),
        "{out}"
    );
    assert!(
        out.contains("decoder_in, initial_state=[lstm #1, lstm #2]"),
        "{out}"
    );
}

#[test]
fn layers_and_output_names_are_checked_on_a_model_with_two_inputs() {
    // `run` learns the layer names and the output count from a run on one sequence of every input.
    let with = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--model",
            "model.keras",
            "--input",
            "input_encoder_in.npy",
            "--input",
            "input_decoder_in.npy",
            "--expected",
            "expected.npy",
            "-q",
        ];
        args.extend(extra);
        run(rnntrace().current_dir(dir("encoder_decoder")).args(&args))
    };
    let (code, out, err) = with(&["--layers", "lstm_1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("PASS"), "{out}");
    let (code, _, err) = with(&["--layers", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--layers: no recurrent layer named 'nope'; the model has: lstm, lstm_1"),
        "{err}"
    );
    let (code, _, err) = with(&["--output-names", "a,b"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--output-names gives 2 names; the model has 12 outputs per sequence"),
        "{err}"
    );
}

#[test]
fn an_output_over_a_named_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.keras", "input_static.npy"] {
        std::fs::copy(dir("two_input_concat").join(f), tmp.path().join(f)).unwrap();
    }
    let seq = tmp.path().join("seq.png");
    std::fs::copy(dir("two_input_concat").join("input_seq.npy"), &seq).unwrap();
    let before = std::fs::read(&seq).unwrap();
    let (code, _, err) = run(rnntrace().current_dir(tmp.path()).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "seq=seq.png",
        "--input",
        "static=input_static.npy",
        "--plot",
        "seq.png",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("seq.png: is an input of this run; refusing to write over it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&seq).unwrap(), before);
}

/// A shared layer (a siamese encoder LSTM and its Dense projection, called on two inputs; a shared
/// Embedding(mask_zero) and GRU, each call with its own mask) reproduces model.predict, and each call is
/// traced under its own name: `encoder` for the first call, `encoder@1` for the second.
#[test]
fn shared_layers_compute_each_call_with_the_same_weights() {
    passes_with("shared_siamese", &["input_left.npy", "input_right.npy"]);
    passes_with(
        "tf_keras_shared_siamese",
        &["input_left.npy", "input_right.npy"],
    );
    passes_with(
        "shared_embedding_mask",
        &["input_question.npy", "input_answer.npy"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.json");
    let (code, _, err) = run(rnntrace().current_dir(dir("shared_siamese")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input_left.npy",
        "--input",
        "input_right.npy",
        "--trace",
        trace.to_str().unwrap(),
        "-q",
    ]));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let layers = doc["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["encoder", "encoder@1"]);
    // Same weights, different inputs: different states.
    let last = |l: &serde_json::Value| {
        l["sequences"][0]["steps"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
    };
    assert_ne!(last(&layers[0]), last(&layers[1]));
    // --layers NAME picks every call of a shared layer.
    let (code, out, err) = run(rnntrace().current_dir(dir("shared_siamese")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input_left.npy",
        "--input",
        "input_right.npy",
        "--layers",
        "encoder",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Layer 'encoder'") && out.contains("Layer 'encoder@1'"),
        "{out}"
    );
    // inspect lists each call, its weights counted once (Keras's count_params(): 128 + 15 + 10).
    let (code, out, err) = run(rnntrace()
        .current_dir(dir("shared_siamese"))
        .env("COLUMNS", "140")
        .args(["inspect", "--model", "model.keras", "--color", "never"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("encoder@1") && out.contains("= encoder"),
        "{out}"
    );
    assert!(out.contains("proj, proj@1, subtract"), "{out}");
    assert!(out.contains("Total params: 153"), "{out}");
}

/// Attention/AdditiveAttention with return_attention_scores=True: the scores are the layer's second
/// output (`'att' #1`, (batch, Tq, Tv)), each output compared with model.predict's.
#[test]
fn attention_scores_are_the_second_output() {
    for name in [
        "attention_scores",
        "additive_attention_scores_causal",
        "tf_keras_attention_scores",
    ] {
        let (code, out, err) = run(rnntrace().current_dir(dir(name)).args([
            "run",
            "--model",
            model_file(name),
            "--input",
            "input.npy",
            "--expected",
            "expected_0.npy",
            "--expected",
            "expected_1.npy",
            "-q",
        ]));
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("output 'pred': PASS"), "{name}: {out}");
        assert!(
            out.contains("output 'att' #1: PASS: all 294 values match"),
            "{name}: {out}"
        );
    }
}

/// `layer(x, mask=m)` with `m` a boolean model input: the mask file is that input (Keras 3 and tf-keras,
/// which records it in the node's kwargs); inspect shows the call's mask.
#[test]
fn a_mask_passed_by_hand_from_an_input_is_applied() {
    for name in ["explicit_mask_input", "tf_keras_explicit_mask_input"] {
        passes_with(name, &["input_x.npy", "input_steps.npy"]);
        passes_with(name, &["steps=input_steps.npy", "x=input_x.npy"]);
    }
    let (code, out, err) = run(rnntrace().current_dir(dir("explicit_mask_input")).args([
        "inspect",
        "--model",
        "model.keras",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("x, mask=steps"), "{out}");
}

/// A mask computed with keras.ops (not_equal, any) is not run: refused with exit 2, one line naming the
/// layer, the op and the way forward (a mask input), nothing computed.
#[test]
fn a_mask_computed_by_ops_is_refused_with_the_way_forward() {
    let (code, out, err) = run(rnntrace().current_dir(dir("explicit_mask_ops")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
    ]));
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("layer 'gru' (GRU) receives a mask computed by layer 'any' (Any)")
            && err.contains("keras.Input(shape=(timesteps,), dtype=\"bool\")"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

/// Several inputs in an `.npz` trace: `inputs/<name>` each, as given; the metadata names them.
#[test]
fn npz_trace_of_a_several_input_model_holds_every_input() {
    let tmp = tempfile::tempdir().unwrap();
    let npz = tmp.path().join("t.npz");
    let (code, out, err) = run(rnntrace().current_dir(dir("encoder_decoder")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input_encoder_in.npy",
        "--input",
        "input_decoder_in.npy",
        "--expected",
        "expected.npy",
        "--trace",
        npz.to_str().unwrap(),
        "-q",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let m = crate::output::npz_members(&npz);
    for (member, file) in [
        ("inputs/encoder_in", "input_encoder_in.npy"),
        ("inputs/decoder_in", "input_decoder_in.npy"),
    ] {
        let (shape, values) = crate::npy(&dir("encoder_decoder").join(file));
        let got = &m[member];
        assert_eq!(got.shape, shape, "{member}");
        assert_eq!(got.data, values, "{member}");
    }
    assert!(!m.contains_key("input"));
    // Both recurrent layers are there, and the output is the model's.
    assert!(m.contains_key("lstm/state/h") && m.contains_key("lstm_1/state/h"));
    let (shape, expected) = crate::npy(&dir("encoder_decoder").join("expected.npy"));
    assert_eq!(m["output"].shape, shape);
    let worst = m["output"]
        .data
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "{worst}");
}

/// Several outputs: the `.npz` trace keeps `output`/`predictions` as the first output's (the one-output
/// format) and adds `outputs/<name>` for each; the JSON trace adds `outputs`, each with its comparison.
#[test]
fn traces_hold_every_output_of_a_several_output_model() {
    let tmp = tempfile::tempdir().unwrap();
    let npz = tmp.path().join("t.npz");
    let json = tmp.path().join("t.json");
    for trace in [&npz, &json] {
        let (code, out, err) = run(rnntrace().current_dir(dir("attention_scores")).args([
            "run",
            "--model",
            "model.keras",
            "--input",
            "input.npy",
            "--expected",
            "expected_0.npy",
            "--expected",
            "expected_1.npy",
            "--trace",
            trace.to_str().unwrap(),
            "-q",
        ]));
        assert_eq!(code, 0, "{out}{err}");
    }
    let close = |got: &[f64], want: &[f64]| {
        got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5)
    };
    let (s0, e0) = crate::npy(&dir("attention_scores").join("expected_0.npy"));
    let (s1, e1) = crate::npy(&dir("attention_scores").join("expected_1.npy"));
    let m = crate::output::npz_members(&npz);
    assert_eq!(m["outputs/pred"].shape, s0);
    assert!(close(&m["outputs/pred"].data, &e0));
    assert_eq!(m["outputs/att#1"].shape, s1);
    assert!(close(&m["outputs/att#1"].data, &e1));
    assert!(close(&m["output"].data, &e0));
    assert!(m.contains_key("input") && !m.contains_key("outputs/input"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let outs = doc["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[1]["name"], "att#1");
    assert_eq!(outs[1]["shape"], serde_json::json!(s1));
    let values: Vec<f64> = outs[1]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(close(&values, &e1));
    assert_eq!(outs[1]["comparison"]["passed"], true);
    assert_eq!(outs[0]["comparison"]["passed"], true);
    // A one-output model's JSON trace has no `outputs`.
    let (code, _, err) = run(rnntrace().current_dir(dir("channels_first")).args([
        "run",
        "--model",
        "model.keras",
        "--input",
        "input.npy",
        "--trace",
        json.to_str().unwrap(),
        "-q",
    ]));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc.get("outputs").is_none());
}

/// inspect shows every new model (exit 0): channels_first shapes (batch, channels, steps), a
/// Bidirectional's returned states read downstream, attention scores read as output #1.
#[test]
fn inspect_shows_the_new_models() {
    for (name, wanted) in [
        ("channels_first", "(None, 4, 6)"),
        ("bidirectional_lstm_state", "bidirectional #1"),
        (
            "bidirectional_state_merge_none",
            "bidirectional, bidirectional #1",
        ),
        ("attention_scores_used", "additive_attention #1"),
        ("shared_dense_chain", "dense@2"),
    ] {
        let (code, out, err) = run(rnntrace()
            .current_dir(dir(name))
            .env("COLUMNS", "200")
            .args(["inspect", "--model", model_file(name), "--color", "never"]));
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains(wanted), "{name}: {out}");
    }
}

/// Inputs holding different numbers of sequences: the message named only the counts (`[3, 2]`); it now
/// names each input and its file.
#[test]
fn inputs_of_different_batch_sizes_are_named_with_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("real_models").join("encoder_decoder");
    let (shape, x) = super::npy(&dir.join("input_decoder_in.npy"));
    let per = shape[1] * shape[2];
    let payload: Vec<u8> = x[..2 * per]
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    let short = tmp.path().join("short_decoder.npy");
    std::fs::write(
        &short,
        super::npy_bytes("<f4", &[2, shape[1], shape[2]], &payload),
    )
    .unwrap();
    for cmd in ["run", "explain"] {
        let (code, _, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                cmd,
                "--model",
                "model.keras",
                "--input",
                "encoder_in=input_encoder_in.npy",
            ])
            .arg("--input")
            .arg(format!("decoder_in={}", short.display())));
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("different numbers of sequences")
                && err.contains("'encoder_in' (input_encoder_in.npy) 3")
                && err.contains("short_decoder.npy) 2"),
            "{cmd}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
    }
}
