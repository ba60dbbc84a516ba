//! Bad input: exit 2, one clear line naming the file, never a panic, never a partial output file.

use crate::{case_dir, rnntrace, run};
use std::path::{Path, PathBuf};

/// Runs `args` (relative to the lstm_weather_seed case dir unless absolute) and checks the error contract.
fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let (code, stdout, stderr) = run(rnntrace()
        .current_dir(case_dir("lstm_weather_seed"))
        .args(args));
    assert_eq!(
        code, 2,
        "args {args:?}: exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.is_empty(), "nothing on stdout on error: {stdout}");
    assert!(
        stderr.lines().count() <= 3,
        "short error expected: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr should contain {n:?}: {stderr}");
    }
    stderr
}

fn tmp_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_weights_file() {
    fails_with(
        &["lstm", "--weights", "nope.json", "--input", "input.npy"],
        &["nope.json", "no such file"],
    );
}

#[test]
fn gru_weights_given_to_lstm_say_which_cell_fits() {
    let gru = case_dir("gru_weather_seed").join("weights.json");
    fails_with(
        &["lstm", "--weights", s(&gru), "--input", "input.npy"],
        &[
            "recurrent_kernel has shape (4, 12)",
            "GRU weights",
            "rnntrace gru",
        ],
    );
}

#[test]
fn lstm_weights_given_to_gru_say_which_cell_fits() {
    fails_with(
        &["gru", "--weights", "weights.json", "--input", "input.npy"],
        &["(4, 16)", "LSTM weights", "rnntrace lstm"],
    );
}

#[test]
fn kernel_width_not_four_times_units() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp_file(
        tmp.path(),
        "w.json",
        b"[[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]], [[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]]]",
    );
    // recurrent (1, 16) says 16 = 4 x 4? No: units = 1 row, 16 != 4 -> message names both.
    fails_with(
        &["lstm", "--weights", s(&w), "--input", "input.npy"],
        &[
            "w.json",
            "recurrent_kernel has shape (1, 16)",
            "expected (1, 4)",
        ],
    );
    let w = tmp_file(tmp.path(), "w2.json", b"[[[1,2,3,4,5]], [[1,2,3,4]]]");
    fails_with(
        &["lstm", "--weights", s(&w), "--input", "input.npy"],
        &["kernel has shape (1, 5)", "expected (1, 4)"],
    );
}

#[test]
fn bias_of_wrong_length() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp_file(tmp.path(), "w.json", b"[[[1,2,3,4]], [[1,2,3,4]], [1,2,3]]");
    fails_with(
        &["lstm", "--weights", s(&w), "--input", "input.npy"],
        &["bias has shape (3,)", "expected (4,)"],
    );
    let w = tmp_file(tmp.path(), "g.json", b"[[[1,2,3]], [[1,2,3]], [1,2,3,4]]");
    fails_with(
        &["gru", "--weights", s(&w), "--input", "input.npy"],
        &["bias has shape (4,)", "(3,)", "(2, 3)"],
    );
}

#[test]
fn reset_after_flag_that_contradicts_the_bias() {
    let gru = case_dir("gru_weather_seed").join("weights.json");
    fails_with(
        &[
            "gru",
            "--weights",
            s(&gru),
            "--input",
            "input.npy",
            "--reset-after",
            "false",
        ],
        &["(2, 12)", "reset_after=True"],
    );
}

#[test]
fn features_do_not_match_the_kernel() {
    let other = case_dir("lstm_units1_seed").join("input.npy");
    fails_with(
        &["lstm", "--weights", "weights.json", "--input", s(&other)],
        &["input.npy", "has 2 features", "expects 3"],
    );
}

#[test]
fn dense_head_of_the_wrong_size() {
    let dense = case_dir("lstm_dense_softmax").join("dense.json");
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--dense",
            s(&dense),
        ],
        &[
            "dense.json",
            "Dense kernel has shape (6, 3)",
            "expected (4, outputs)",
        ],
    );
}

#[test]
fn expected_of_the_wrong_shape() {
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "3",
            "--dense",
            "dense.json",
            "--expected",
            "expected.npy",
        ],
        &["expected.npy", "shape (8, 1)", "(7, 1)"],
    );
}

#[test]
fn unknown_activation_lists_the_valid_ones() {
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--recurrent-activation",
            "hard_sigmod",
        ],
        &["hard_sigmod", "hard_sigmoid_keras2", "sigmoid"],
    );
}

#[test]
fn window_needs_a_series() {
    let seq3d = case_dir("lstm_go_backwards").join("input.npy");
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            s(&seq3d),
            "--window",
            "2",
        ],
        &["--window 2 needs a 2-D series"],
    );
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "10",
        ],
        &["has 10 rows", "--window 10"],
    );
}

#[test]
fn not_npy_files() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp_file(tmp.path(), "empty.npy", b"");
    fails_with(
        &["lstm", "--weights", "weights.json", "--input", s(&empty)],
        &["empty.npy", "empty"],
    );
    let text = tmp_file(tmp.path(), "text.npy", b"hello world, not numpy at all");
    fails_with(
        &["lstm", "--weights", "weights.json", "--input", s(&text)],
        &["text.npy", "magic"],
    );
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            s(tmp.path()),
        ],
        &["directory"],
    );
}

#[test]
fn truncated_npy() {
    let bytes = std::fs::read(case_dir("lstm_weather_seed").join("input.npy")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp_file(tmp.path(), "cut.npy", &bytes[..bytes.len() - 9]);
    fails_with(
        &["lstm", "--weights", "weights.json", "--input", s(&cut)],
        &["cut.npy", "truncated"],
    );
}

#[test]
fn absurd_header_shape_is_refused_without_allocating() {
    let bytes = crate::npy_bytes("<f4", &[4_000_000_000, 4_000_000_000, 3], &[0u8; 64]);
    let tmp = tempfile::tempdir().unwrap();
    let huge = tmp_file(tmp.path(), "huge.npy", &bytes);
    fails_with(
        &["lstm", "--weights", "weights.json", "--input", s(&huge)],
        &["huge.npy", "more elements"],
    );
}

#[test]
fn hostile_json() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp_file(
        tmp.path(),
        "deep.json",
        ("[".repeat(200_000) + &"]".repeat(200_000)).as_bytes(),
    );
    fails_with(
        &["lstm", "--weights", s(&deep), "--input", "input.npy"],
        &["deep.json", "JSON"],
    );
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let bin = tmp_file(tmp.path(), "garbage.json", &garbage);
    fails_with(
        &["lstm", "--weights", s(&bin), "--input", "input.npy"],
        &["garbage.json"],
    );
    let ragged = tmp_file(
        tmp.path(),
        "ragged.json",
        b"{\"kernel\": [[1, 2], [3]], \"recurrent_kernel\": [[1]]}",
    );
    fails_with(
        &["lstm", "--weights", s(&ragged), "--input", "input.npy"],
        &["ragged.json", "ragged"],
    );
    let strings = tmp_file(tmp.path(), "strings.json", b"[[[\"a\"]], [[1]]]");
    fails_with(
        &["lstm", "--weights", s(&strings), "--input", "input.npy"],
        &["strings.json", "string"],
    );
}

#[test]
fn weights_file_with_unexpected_names() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp_file(
        tmp.path(),
        "w.json",
        b"{\"kernal\": [[1,2,3,4]], \"recurrent_kernel\": [[1,2,3,4]]}",
    );
    fails_with(
        &["lstm", "--weights", s(&w), "--input", "input.npy"],
        &["kernal", "expected kernel, recurrent_kernel and bias"],
    );
    let w = tmp_file(
        tmp.path(),
        "four.json",
        b"[[[1,2,3,4]], [[1,2,3,4]], [1,2,3,4], [1]]",
    );
    fails_with(
        &["lstm", "--weights", s(&w), "--input", "input.npy"],
        &["holds 4 array"],
    );
}

#[test]
fn mask_of_the_wrong_shape() {
    let mask = case_dir("lstm_mask_file").join("mask.npy");
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--mask",
            s(&mask),
        ],
        &["mask.npy", "expected (8, 2)"],
    );
}

#[test]
fn initial_state_missing_c_for_lstm() {
    let st = case_dir("gru_initial_state_broadcast").join("initial_state.npz");
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--initial-state",
            s(&st),
        ],
        &["initial_state.npz"],
    );
}

#[test]
fn trace_output_never_overwrites_an_input() {
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--trace",
            "weights.json",
        ],
        &["weights.json", "input of this run"],
    );
}

#[test]
fn trace_into_a_missing_folder_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("no/such/dir/t.json");
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--trace",
            s(&target),
        ],
        &["does not exist"],
    );
    assert!(!target.exists());
}

#[test]
fn failed_run_leaves_an_existing_trace_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp_file(tmp.path(), "t.json", b"previous contents");
    fails_with(
        &[
            "lstm",
            "--weights",
            "missing.json",
            "--input",
            "input.npy",
            "--trace",
            s(&target),
        ],
        &["missing.json"],
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"previous contents");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );
}

#[test]
fn reset_after_is_refused_for_lstm() {
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--reset-after",
            "true",
        ],
        &["GRU layers only"],
    );
}

#[test]
fn non_finite_inputs_warn_and_still_run() {
    let (shape, mut vals) = crate::npy(&case_dir("gru_weather_seed").join("input.npy"));
    vals[7] = f64::NAN;
    let tmp = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = crate::npy_bytes("<f8", &shape, &payload);
    let p = tmp_file(tmp.path(), "nan.npy", &bytes);
    let dir = case_dir("gru_weather_seed");
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "gru",
            "--weights",
            "weights.json",
            "--window",
            "2",
            "--dense",
            "dense.json",
            "--expected",
            "expected.npy",
            "--input",
        ])
        .arg(&p));
    assert_eq!(code, 1, "NaN predictions never match: {out}");
    assert!(
        err.contains("warning")
            && err.contains("NaN")
            && err.contains("sequence 1, timestep 1, feature 1"),
        "{err}"
    );
    assert!(out.contains("NaN"), "tables show NaN");
}

/// Regression: relu and hard_sigmoid used Rust's max/min, which drop NaN, so a NaN weight vanished where
/// Keras propagates it. Now the predictions are NaN and a warning names the weight.
#[test]
fn nan_weight_propagates_through_relu_and_hard_sigmoid() {
    let dir = case_dir("lstm_weather_seed");
    let w: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("weights.json")).unwrap()).unwrap();
    let text = serde_json::to_string(&w).unwrap();
    // Replace the first kernel entry with NaN (Python's json token).
    let at = text.find(|c: char| c == '-' || c.is_ascii_digit()).unwrap();
    let end = at + text[at..].find([',', ']']).unwrap();
    let patched = format!("{}NaN{}", &text[..at], &text[end..]);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp_file(tmp.path(), "nan.json", patched.as_bytes());
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "lstm",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--activation",
            "relu",
            "--recurrent-activation",
            "hard_sigmoid",
            "--format",
            "json",
            "--weights",
        ])
        .arg(&p));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("kernel[0, 0] is NaN"), "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        t["predictions"][0][0].is_null(),
        "NaN predictions are written as null: {}",
        t["predictions"]
    );
}

/// Regression: a prefixed PyTorch state dict (a whole model's, keys like `rnn.weight_ih_l0`) was not
/// recognised.
#[test]
fn prefixed_pytorch_state_dict_is_read() {
    use std::io::Write;
    let dir = crate::fixtures().join("torch").join("gru_2layer");
    let arrays = rnntrace::io::npz::parse(&std::fs::read(dir.join("state.npz")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("model_state.npz");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    for (name, a) in &arrays {
        z.start_file(
            format!("encoder.rnn.{name}.npy"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        let payload: Vec<u8> = a
            .data
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect();
        z.write_all(&crate::npy_bytes("<f4", &a.shape, &payload))
            .unwrap();
    }
    z.start_file("head.weight.npy", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(&crate::npy_bytes("<f4", &[1, 5], &[0u8; 20]))
        .unwrap();
    z.finish().unwrap();
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "gru",
            "--input",
            "layer_input_l1.npy",
            "--layer",
            "1",
            "--expected",
            "h_seq_l1.npy",
            "-q",
            "--weights",
        ])
        .arg(&p));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_saved_model_given_as_weights_points_to_run() {
    let model = crate::fixtures()
        .join("models")
        .join("stacked_seed")
        .join("model.keras");
    fails_with(
        &["lstm", "--input", "input.npy", "--weights", s(&model)],
        &["saved Keras model", "rnntrace run --model"],
    );
}

/// Regression: a missing chart folder was found only after the trace file had been written.
#[test]
fn outputs_are_checked_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.json");
    let plot = tmp.path().join("nodir").join("p.png");
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--trace",
            s(&trace),
            "--plot",
            s(&plot),
        ],
        &["does not exist"],
    );
    assert!(
        !trace.exists(),
        "nothing written when a later output cannot be"
    );
}

/// Regression: JSON output into a closed pipe exited 2 ("Broken pipe") instead of quietly.
#[test]
fn json_output_into_a_closed_pipe_ends_quietly() {
    let dir = case_dir("lstm_weather_seed");
    // Far more JSON than a pipe buffers (64 KiB), so the write really meets the closed pipe.
    let tmp = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..400 * 10 * 3)
        .flat_map(|i| ((i % 17) as f32 * 0.1).to_le_bytes())
        .collect();
    let big = tmp_file(
        tmp.path(),
        "big.npy",
        &crate::npy_bytes("<f4", &[400, 10, 3], &payload),
    );
    let args: Vec<&std::ffi::OsStr> = [
        "lstm",
        "--weights",
        "weights.json",
        "--format",
        "json",
        "--input",
    ]
    .iter()
    .map(|s| std::ffi::OsStr::new(*s))
    .chain([big.as_os_str()])
    .collect();
    let (code, err) = crate::run_into_closed_pipe(&args, &dir);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn window_that_would_not_fit_in_memory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = 40_000usize;
    let payload: Vec<u8> = (0..rows * 3)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let p = tmp_file(
        tmp.path(),
        "long.npy",
        &crate::npy_bytes("<f4", &[rows, 3], &payload),
    );
    fails_with(
        &[
            "lstm",
            "--weights",
            "weights.json",
            "--window",
            "20000",
            "--input",
            s(&p),
        ],
        &["long.npy", "--window 20000", "shorter window"],
    );
}

/// A mistyped `RNNTRACE_KERNELS` is an error naming the variable and the value, not a silent default.
#[test]
fn unknown_rnntrace_kernels_value_is_a_usage_error() {
    let (code, out, err) = run(rnntrace().env("RNNTRACE_KERNELS", "portabel").arg("demo"));
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("RNNTRACE_KERNELS") && err.contains("portabel") && err.contains("portable"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
