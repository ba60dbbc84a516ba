//! PyTorch checkpoint files (`torch.save` `.pt`/`.pth`, whole pickled modules, safetensors) and hostile
//! ones. Golden numbers: `fixtures/generate_torch_files.py` (real PyTorch, versions in
//! `fixtures/torch_files/VERSIONS.json`). Tolerance: 1e-5 absolute, no relative part — both sides compute
//! in float32 from the same stored weights; the differences seen are ~1e-7 (summation order).

use crate::{fixtures, rnntrace, run};
use std::path::PathBuf;

fn dir() -> PathBuf {
    fixtures().join("torch_files")
}

/// `run --model FILE --cell CELL` against PyTorch's output; extra args appended.
fn run_passes(file: &str, cell: &str, x: &str, expected: &str, extra: &[&str]) {
    let mut args = vec![
        "run",
        "--model",
        file,
        "--cell",
        cell,
        "--input",
        x,
        "--expected",
        expected,
        "--atol",
        "1e-5",
        "--rtol",
        "0",
        "-q",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(rnntrace().current_dir(dir()).args(&args));
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    assert!(out.starts_with("PASS"), "{args:?}: {out}");
}

#[test]
fn state_dicts_whole_modules_and_safetensors_match_pytorch() {
    for (file, cell, case) in [
        ("lstm_sd.pt", "lstm", "lstm_sd"),
        ("lstm_whole.pt", "lstm", "lstm_sd"),
        ("lstm_sd.safetensors", "lstm", "lstm_sd"),
        ("gru_bi.pth", "gru", "gru_bi"),
        ("lstm_f64.pt", "lstm", "lstm_f64"),
        ("lstm_f16.pt", "lstm", "lstm_f16"),
        ("gru_bf16.safetensors", "gru", "gru_bf16"),
        ("lstm_strided.pt", "lstm", "lstm_strided"),
        ("checkpoint.pt", "lstm", "checkpoint"),
        ("lstm_proj.pt", "lstm", "lstm_proj"),
        ("gru_p4.pt", "gru", "gru_p4"),
        ("gru_p5.pt", "gru", "gru_p5"),
        ("lstm_proj_bi.pt", "lstm", "lstm_proj_bi"),
    ] {
        let x = format!("{case}.x.npy");
        run_passes(file, cell, &x, &format!("{case}.out.npy"), &[]);
        let fc = if case == "checkpoint" {
            "model_state_dict.fc"
        } else {
            "fc"
        };
        run_passes(
            file,
            cell,
            &x,
            &format!("{case}.head.npy"),
            &["--dense", fc],
        );
    }
}

#[test]
fn lstm_command_reads_a_pt_file_and_its_linear_head() {
    let d = dir();
    let (code, out, err) = run(rnntrace().current_dir(&d).args([
        "lstm",
        "--weights",
        "lstm_sd.pt",
        "--input",
        "lstm_sd.x.npy",
        "--expected",
        "lstm_sd.out.npy",
        "--atol",
        "1e-5",
        "--rtol",
        "0",
        "-q",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("PASS"), "{out}");
    assert!(
        err.contains("nn.Linear layer(s) fc (5→2)") && err.contains("--dense fc"),
        "{err}"
    );
    for dense in ["fc", "lstm_sd.pt"] {
        let (code, out, err) = run(rnntrace().current_dir(&d).args([
            "gru",
            "--weights",
            "gru_bf16.safetensors",
            "--input",
            "gru_bf16.x.npy",
            "--expected",
            "gru_bf16.head.npy",
            "--atol",
            "1e-5",
            "--rtol",
            "0",
            "-q",
            "--dense",
            if dense == "fc" {
                "fc"
            } else {
                "gru_bf16.safetensors"
            },
        ]));
        assert_eq!(code, 0, "{dense}: {out}{err}");
    }
}

#[test]
fn several_recurrent_modules_need_module() {
    let d = dir();
    let (code, _, err) = run(rnntrace().current_dir(&d).args([
        "run",
        "--model",
        "seq2seq.pt",
        "--cell",
        "lstm",
        "--input",
        "seq2seq.enc.x.npy",
    ]));
    assert_eq!(code, 2);
    assert!(
        err.contains("seq2seq.pt")
            && err.contains("encoder (LSTM), decoder (GRU)")
            && err.contains("--module"),
        "{err}"
    );
    run_passes(
        "seq2seq.pt",
        "lstm",
        "seq2seq.enc.x.npy",
        "seq2seq.enc.out.npy",
        &["--module", "encoder"],
    );
    run_passes(
        "seq2seq.pt",
        "gru",
        "seq2seq.dec.x.npy",
        "seq2seq.dec.out.npy",
        &["--module", "decoder"],
    );
    let (code, out, err) = run(rnntrace().current_dir(&d).args([
        "gru",
        "--weights",
        "seq2seq.pt",
        "--module",
        "decoder",
        "--input",
        "seq2seq.dec.x.npy",
        "--expected",
        "seq2seq.dec.out.npy",
        "-q",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(rnntrace().current_dir(&d).args([
        "run",
        "--model",
        "seq2seq.pt",
        "--cell",
        "lstm",
        "--module",
        "attention",
        "--input",
        "seq2seq.enc.x.npy",
    ]));
    assert_eq!(code, 2);
    assert!(
        err.contains("--module attention") && err.contains("encoder"),
        "{err}"
    );
}

#[test]
fn pytorch_only_flags_are_refused_for_keras_models() {
    for flag in [
        &["--dense", "fc"][..],
        &["--module", "rnn"],
        &["--time-major"],
    ] {
        let mut args = vec!["run", "--model", "model.keras", "--input", "input.npy"];
        args.extend_from_slice(flag);
        let (code, _, err) = run(rnntrace()
            .current_dir(fixtures().join("models").join("activation_layer"))
            .args(&args));
        assert_eq!(code, 2, "{flag:?}: {err}");
        assert!(err.contains(flag[0]) && err.contains("--cell"), "{err}");
    }
}

#[test]
fn time_major_data_is_named_and_read_with_the_flag() {
    let d = dir();
    // Shapes (6, 2, 3) → (6, 2, 4): read batch-first, the shapes agree and the numbers fail: the hint names the fix.
    let (code, _, err) = run(rnntrace().current_dir(&d).args([
        "run",
        "--model",
        "lstm_time_major_whole.pt",
        "--cell",
        "lstm",
        "--input",
        "lstm_time_major.x.npy",
        "--expected",
        "lstm_time_major.out.npy",
        "-q",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("batch_first=False") && err.contains("--time-major"),
        "{err}"
    );
    for file in ["lstm_time_major_whole.pt", "lstm_time_major.pt"] {
        run_passes(
            file,
            "lstm",
            "lstm_time_major.x.npy",
            "lstm_time_major.out.npy",
            &["--time-major"],
        );
    }
    let (code, out, err) = run(rnntrace().current_dir(&d).args([
        "lstm",
        "--weights",
        "lstm_time_major.pt",
        "--time-major",
        "--input",
        "lstm_time_major.x.npy",
        "--expected",
        "lstm_time_major.out.npy",
        "-q",
    ]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn lstm_names_time_major_after_a_failed_comparison() {
    let d = dir();
    // The same time-major arrays through `lstm` (gru shares the path, src/commands/cell.rs): read batch-first the numbers fail, and the note names the flag.
    let (code, _, err) = run(rnntrace().current_dir(&d).args([
        "lstm",
        "--weights",
        "lstm_time_major.pt",
        "--input",
        "lstm_time_major.x.npy",
        "--expected",
        "lstm_time_major.out.npy",
        "-q",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("note: if --input and --expected are time-major")
            && err.contains("batch_first=False")
            && err.contains("pass --time-major"),
        "{err}"
    );
    // A passing comparison gets no such note.
    let (code, _, err) = run(rnntrace().current_dir(&d).args([
        "lstm",
        "--weights",
        "lstm_time_major.pt",
        "--time-major",
        "--input",
        "lstm_time_major.x.npy",
        "--expected",
        "lstm_time_major.out.npy",
        "-q",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("pass --time-major"), "{err}");
}

#[test]
fn inspect_summarises_a_pytorch_file() {
    let (code, out, err) =
        run(rnntrace()
            .current_dir(dir())
            .args(["inspect", "--weights", "lstm_whole.pt"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("whole pickled module __main__.Net"), "{out}");
    assert!(
        out.contains("rnn: nn.LSTM(input_size=3, hidden_size=5, num_layers=1), batch_first=True"),
        "{out}"
    );
    assert!(
        out.contains("fc: nn.Linear(in_features=5, out_features=2)"),
        "{out}"
    );
    assert!(out.contains("i input gate"), "{out}");
    let (code, out, err) =
        run(rnntrace()
            .current_dir(dir())
            .args(["inspect", "--weights", "seq2seq.pt"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("encoder: nn.LSTM(input_size=3, hidden_size=4"),
        "{out}"
    );
    assert!(
        out.contains("decoder: nn.GRU(input_size=4, hidden_size=4"),
        "{out}"
    );
    assert!(
        out.contains("out: nn.Linear(in_features=3, out_features=1)")
            && out.contains("--module NAME"),
        "{out}"
    );
    let (code, out, _) = run(rnntrace().current_dir(dir()).args([
        "inspect",
        "--weights",
        "seq2seq.pt",
        "--module",
        "decoder",
    ]));
    assert_eq!(code, 0);
    assert!(
        out.contains("GRU weights (PyTorch layout), 4 units, 4 input features"),
        "{out}"
    );
    let (code, out, _) =
        run(rnntrace()
            .current_dir(dir())
            .args(["inspect", "--weights", "gru_bi.pth"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("nn.GRU(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)"),
        "{out}"
    );
}

#[test]
fn hostile_and_refused_files_exit_2_with_one_line() {
    let d = dir();
    for (file, says) in [
        ("hostile/os_system.pt", "refuses global os.system"),
        ("hostile/posix_system_p4.pt", "refuses global posix.system"),
        ("hostile/eval_in_dict.pt", "refuses global builtins.eval"),
        (
            "hostile/huge_storage.pt",
            "claims a storage of 1000000000000 float32 elements",
        ),
        ("hostile/huge_shape.pt", "too many elements"),
        ("hostile/truncated.pt", "truncated or corrupt"),
        ("hostile/truncated_pickle.pt", "truncated data.pkl"),
        ("hostile/deep_marks.pt", "nests more than 1000 levels deep"),
        ("hostile/deep_dicts.pt", "more than 100 deep"),
        ("hostile/deep_lists.pt", "holds no tensors"),
        ("hostile/legacy_garbage.pt", "legacy (pre-1.6, non-zip)"),
        ("lstm_legacy.pt", "re-save it in the zip format"),
        ("hostile/bare_pickle.pt", "bare Python pickle"),
        ("hostile/opaque_module.pt", "save its state_dict()"),
        (
            "hostile/huge_header.safetensors",
            "header claims 1099511627776 bytes",
        ),
        (
            "hostile/huge_tensor.safetensors",
            "not a valid safetensors file",
        ),
    ] {
        for args in [
            vec![
                "run",
                "--model",
                file,
                "--cell",
                "lstm",
                "--input",
                "lstm_sd.x.npy",
            ],
            vec!["lstm", "--weights", file, "--input", "lstm_sd.x.npy"],
            vec!["inspect", "--weights", file],
        ] {
            let (code, out, err) = run(rnntrace().current_dir(&d).args(&args));
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(out.is_empty(), "{args:?}: {out}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains(file) && err.contains(says), "{args:?}: {err}");
            assert!(!err.contains("panicked") && !err.contains("pwned"), "{err}");
        }
    }
}

#[test]
fn proj_size_lstm_records_the_projected_h() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.npz");
    let (code, out, err) = run(rnntrace()
        .current_dir(dir())
        .args([
            "lstm",
            "--weights",
            "lstm_proj.pt",
            "--input",
            "lstm_proj.x.npy",
            "--expected",
            "lstm_proj.out.npy",
            "--atol",
            "1e-5",
            "--rtol",
            "0",
            "-q",
            "--trace",
        ])
        .arg(&trace));
    assert_eq!(code, 0, "{out}{err}");
    let z = std::fs::read(&trace).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(z)).unwrap();
    let mut get = |n: &str| {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(&format!("{n}.npy")).unwrap(), &mut buf)
            .unwrap();
        rnntrace::io::npy::parse(&buf).unwrap()
    };
    // (steps, sequences, proj) for h, (steps, sequences, hidden) for c.
    assert_eq!(get("state/h").shape, vec![5, 3, 2]);
    assert_eq!(get("state/c").shape, vec![5, 3, 6]);
    let (shape, want) = crate::npy(&dir().join("lstm_proj.out.npy"));
    assert_eq!(shape, vec![3, 5, 2]);
    let h = get("state/h");
    for b in 0..3 {
        for t in 0..5 {
            for j in 0..2 {
                let d = (h.data[(t * 3 + b) * 2 + j] - want[(b * 5 + t) * 2 + j]).abs();
                assert!(d < 1e-5, "h[{t},{b},{j}] off by {d}");
            }
        }
    }
}

/// `run --cell lstm --trace FILE.npz` on a bidirectional `proj_size` stack: every layer and direction
/// streamed, `h` as wide as the projection (`c` as the hidden size), the last layer's `h` the module's
/// output (within 1e-5: float32 against PyTorch's float32).
#[test]
fn run_npz_trace_of_a_projected_stack_has_projection_wide_h() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.npz");
    let (code, out, err) = run(rnntrace()
        .current_dir(dir())
        .args([
            "run",
            "--model",
            "lstm_proj_bi.pt",
            "--cell",
            "lstm",
            "--input",
            "lstm_proj_bi.x.npy",
            "--expected",
            "lstm_proj_bi.out.npy",
            "--atol",
            "1e-5",
            "-q",
            "--trace",
        ])
        .arg(&trace));
    assert_eq!(code, 0, "{out}{err}");
    let m = crate::output::npz_members(&trace);
    let (shape, want) = crate::npy(&dir().join("lstm_proj_bi.out.npy"));
    let (b, t, w) = (shape[0], shape[1], shape[2]);
    let p = w / 2;
    for l in ["l0", "l0_reverse", "l1", "l1_reverse"] {
        let h = &m[&format!("{l}/state/h")];
        assert_eq!(h.shape, vec![t, b, p], "{l}/state/h");
        let c = &m[&format!("{l}/state/c")];
        assert_eq!(c.shape[..2], [t, b], "{l}/state/c");
        assert!(c.shape[2] > p, "{l}/state/c is the hidden width");
    }
    // The forward direction of the last layer is the first half of the output.
    let h = &m["l1/state/h"];
    for bi in 0..b {
        for ti in 0..t {
            for j in 0..p {
                let d = (h.data[(ti * b + bi) * p + j] - want[(bi * t + ti) * w + j]).abs();
                assert!(d < 1e-5, "h[{ti},{bi},{j}] off by {d}");
            }
        }
    }
}
