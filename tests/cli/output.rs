//! What a user sees and gets: verdicts, exit codes, trace files, tables, README commands.

use crate::{case_dir, rnntrace, run};
use serde_json::Value;
use std::path::Path;

fn weather_gru() -> assert_cmd::Command {
    let mut c = rnntrace();
    c.current_dir(case_dir("gru_weather_seed")).args([
        "gru",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--window",
        "2",
        "--dense",
        "dense.json",
    ]);
    c
}

/// Writes `values` as a little-endian float32 .npy.
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, crate::npy_bytes("<f4", shape, &payload)).unwrap();
}

#[test]
fn expected_mismatch_exits_1_and_names_the_worst_value() {
    let dir = tempfile::tempdir().unwrap();
    let (shape, mut vals) = crate::npy(&case_dir("gru_weather_seed").join("expected.npy"));
    vals[5] += 0.01;
    let bad = dir.path().join("bad.npy");
    write_npy(
        &bad,
        &shape,
        &vals.iter().map(|v| *v as f32).collect::<Vec<_>>(),
    );
    let (code, stdout, _) = run(weather_gru().arg("--expected").arg(&bad).arg("--quiet"));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL: 1 of 8 values"), "{stdout}");
    assert!(stdout.contains("at [5, 0]"), "{stdout}");
}

/// The LSTM seed carried state from one window to the next; Keras's stateless predict does not.
/// rnntrace must reproduce predict by default and show the seed's numbers differ.
#[test]
fn seed_carry_state_mistake_does_not_match_stateless_predict() {
    let (code, stdout, _) = run(weather_gru().args(["--expected", "expected.npy", "--quiet"]));
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) =
        run(weather_gru().args(["--expected", "expected.npy", "--quiet", "--carry-state"]));
    assert_eq!(
        code, 1,
        "carrying state must not match stateless predict: {stdout}"
    );
}

/// The GRU seed dropped row 1 of the (2, 3u) bias. With the recurrent bias zeroed the numbers move.
#[test]
fn gru_recurrent_bias_of_reset_after_is_used() {
    let dir = case_dir("gru_reset_after_true_bias");
    let w: Value =
        serde_json::from_slice(&std::fs::read(dir.join("weights.json")).unwrap()).unwrap();
    let mut w = w.as_array().unwrap().clone();
    let bias = w[2].as_array_mut().unwrap();
    let zeros: Vec<Value> = bias[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|_| Value::from(0.0))
        .collect();
    bias[1] = Value::Array(zeros);
    let tmp = tempfile::tempdir().unwrap();
    let dropped = tmp.path().join("dropped.json");
    std::fs::write(&dropped, serde_json::to_vec(&w).unwrap()).unwrap();
    let (code, _, _) = run(rnntrace().current_dir(&dir).args([
        "gru",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--expected",
        "expected.npy",
        "-q",
    ]));
    assert_eq!(code, 0);
    let (code, out, _) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "gru",
            "--input",
            "input.npy",
            "--expected",
            "expected.npy",
            "-q",
            "--weights",
        ])
        .arg(&dropped));
    assert_eq!(
        code, 1,
        "dropping the recurrent bias must change the result: {out}"
    );
}

#[test]
fn trace_file_is_the_json_trace_and_stdout_keeps_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.json");
    let (code, stdout, _) = run(weather_gru().arg("--trace").arg(&file));
    assert_eq!(code, 0);
    assert!(stdout.contains("Gates"), "tables on stdout");
    let from_file: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let (_, json_out, _) = run(weather_gru().args(["--format", "json"]));
    let from_stdout: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(from_file, from_stdout);
    assert_eq!(from_file["format"], "rnntrace-trace/1");
    let layer = &from_file["layers"][0];
    assert_eq!(layer["cell"], "gru");
    assert_eq!(layer["reset_after"], true);
    assert_eq!(layer["sequences"].as_array().unwrap().len(), 8);
    let step = &layer["sequences"][3]["steps"][1];
    for g in ["z", "r", "h"] {
        assert_eq!(step["gates"][g].as_array().unwrap().len(), 4);
        assert_eq!(step["pre"][g].as_array().unwrap().len(), 4);
    }
    // Window 3 covers rows 3..4: step 1 reads row 4 of the series.
    assert_eq!(step["input_index"], 1);
    let series = crate::npy(&case_dir("gru_weather_seed").join("input.npy")).1;
    let x: Vec<f64> = step["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (j, v) in x.iter().enumerate() {
        assert!((v - series[4 * 3 + j] as f32 as f64).abs() < 1e-6);
    }
}

#[test]
fn go_backwards_records_processing_order() {
    let dir = case_dir("lstm_go_backwards");
    let (code, out, _) = run(rnntrace().current_dir(&dir).args([
        "lstm",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--go-backwards",
        "--format",
        "json",
    ]));
    assert_eq!(code, 0);
    let t: Value = serde_json::from_str(&out).unwrap();
    let steps = t["layers"][0]["sequences"][0]["steps"].as_array().unwrap();
    let n = steps.len();
    for (k, s) in steps.iter().enumerate() {
        assert_eq!(s["t"], k);
        assert_eq!(s["input_index"], n - 1 - k);
    }
}

#[test]
fn tables_show_the_first_sequence_by_default_and_say_how_to_see_more() {
    let (code, out, _) = run(weather_gru().arg("--color=never"));
    assert_eq!(code, 0);
    assert_eq!(out.matches("══ Sequence").count(), 1);
    assert!(out.contains("Sequence 0 of 8"));
    assert!(out.contains("--sequences all"));
    assert!(out.contains("│ 7 (row 9)"), "summary covers every sequence");
    assert!(!out.contains("│ 8 (row"), "sequences are numbered from 0");
    assert!(
        out.find("All predictions").unwrap() < out.find("══ Sequence").unwrap(),
        "the summary comes first"
    );
    let (_, out, _) = run(weather_gru().args(["--sequences", "all"]));
    assert_eq!(out.matches("══ Sequence").count(), 8);
    let (_, out, _) = run(weather_gru().args(["--sequences", "2..4"]));
    assert!(
        out.contains("Sequence 2 of 8")
            && out.contains("Sequence 3 of 8")
            && !out.contains("Sequence 4 of 8")
            && !out.contains("Sequence 1 of 8"),
        "--sequences 2..4 shows sequences 2 and 3, numbered as the flag numbers them: {out}"
    );
    let (_, out, _) = run(weather_gru().args(["--sequences", "2..=4"]));
    assert_eq!(out.matches("══ Sequence").count(), 3, "2..=4 includes 4");
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let (_, plain, _) = run(&mut weather_gru());
    assert!(
        !plain.contains('\u{1b}'),
        "no escapes when stdout is not a terminal"
    );
    let (_, coloured, _) = run(weather_gru().arg("--color=always"));
    assert!(coloured.contains('\u{1b}'));
    let (_, no_color, _) = run(weather_gru().env("NO_COLOR", "1").arg("--color=auto"));
    assert!(!no_color.contains('\u{1b}'));
}

#[test]
fn quiet_prints_only_the_verdict() {
    let (code, out, err) = run(weather_gru().args(["--expected", "expected.npy", "-q"]));
    assert_eq!(code, 0);
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(out.starts_with("PASS"));
    assert!(err.is_empty());
}

/// Snapshots pin every printed digit, including the last-bit rounding of `|ours − framework|`, which
/// depends on the kernels (the AVX-512 fused steps sum in another order than the portable ones). They run
/// the portable kernels so the snapshot is the same on every CPU; the goldens check both.
fn portable(cmd: &mut assert_cmd::Command) -> &mut assert_cmd::Command {
    cmd.env("RNNTRACE_KERNELS", "portable")
}

#[test]
fn table_snapshot_weather_gru() {
    let (code, out, _) = run(portable(&mut weather_gru()).args([
        "--expected",
        "expected.npy",
        "--targets",
        "targets.npy",
        "--inverse-scale",
        "scaler.json",
        "--feature-names",
        "Temperature,Humidity,Wind Speed",
        "--output-names",
        "Power",
        "--sequences",
        "0",
        "--color",
        "never",
    ]));
    assert_eq!(code, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn table_snapshot_weather_lstm() {
    let (code, out, _) = run(
        portable(rnntrace().current_dir(case_dir("lstm_weather_seed"))).args([
            "lstm",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--window",
            "2",
            "--dense",
            "dense.json",
            "--expected",
            "expected.npy",
            "--targets",
            "targets.npy",
            "--sequences",
            "0",
            "--color",
            "never",
        ]),
    );
    assert_eq!(code, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn broken_pipe_ends_quietly() {
    let charts = tempfile::tempdir().unwrap();
    let args: Vec<&std::ffi::OsStr> = [
        "demo",
        "--sequences",
        "all",
        "--color",
        "never",
        "--out-dir",
    ]
    .iter()
    .map(|s| std::ffi::OsStr::new(*s))
    .chain([charts.path().as_os_str()])
    .collect();
    let (code, err) = crate::run_into_closed_pipe(&args, charts.path());
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn demo_runs_both_examples_and_passes() {
    for cell in ["lstm", "gru"] {
        let tmp = tempfile::tempdir().unwrap();
        let (code, out, err) = run(rnntrace()
            .current_dir(tmp.path())
            .args(["demo", cell, "--color", "never"]));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("PASS: all 8 values"), "{out}");
        assert!(out.contains("Temperature"));
        for chart in ["states", "predictions", "gates"] {
            let p = tmp.path().join(format!("rnntrace-demo/{cell}_{chart}.png"));
            assert!(
                p.exists() && png_facts(&p).2 > 20,
                "{} missing or blank",
                p.display()
            );
        }
    }
}

/// Every `rnntrace …` and `cargo run --example …` command in the README runs and succeeds.
#[test]
fn readme_commands_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut pending = String::new();
    // A verdict quoted in a code block after a command is what that command must print.
    let mut quoted: std::collections::HashMap<usize, String> = Default::default();
    for line in readme.lines() {
        let l = line.trim();
        let in_code_block = line.starts_with("    ");
        if in_code_block
            && pending.is_empty()
            && (l.starts_with("PASS:") || l.starts_with("FAIL:"))
            && !commands.is_empty()
        {
            quoted.insert(commands.len() - 1, l.to_string());
            continue;
        }
        if pending.is_empty()
            && !(in_code_block
                && (l.starts_with("rnntrace ") || l.starts_with("cargo run --example")))
        {
            continue;
        }
        let l = l.split("  #").next().unwrap().trim();
        match l.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(l);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(commands.len() >= 2, "README commands found: {commands:?}");
    assert!(!quoted.is_empty(), "the worked example quotes its verdict");
    for (i, cmd) in commands.into_iter().enumerate() {
        let words: Vec<String> = shell_words(&cmd);
        let (code, out, err) = if words[0] == "rnntrace" {
            let tmp = tempfile::tempdir().unwrap();
            let args: Vec<String> = words[1..]
                .iter()
                .map(|w| {
                    if w.starts_with("fixtures/") {
                        root.join(w).to_string_lossy().into_owned()
                    } else {
                        w.clone()
                    }
                })
                .collect();
            run(rnntrace().current_dir(tmp.path()).args(&args))
        } else {
            run(assert_cmd::Command::new(env!("CARGO"))
                .current_dir(root)
                .args(&words[1..]))
        };
        assert_eq!(code, 0, "README command failed: {cmd}\n{out}\n{err}");
        if let Some(v) = quoted.get(&i) {
            // The verdict may be wrapped to the terminal; which value is largest may differ between
            // CPUs' kernels (the README says so), its size may not.
            let printed = out.split_whitespace().collect::<Vec<_>>().join(" ");
            let upto = |s: &str| s.split(" at [").next().unwrap().to_string();
            assert!(
                printed.contains(&upto(v)),
                "README quotes\n{v}\nbut `{cmd}` prints\n{out}"
            );
        }
    }
}

/// `rnntrace demo` (the README's first command) writes its charts into rnntrace-demo/, a folder
/// .gitignore covers, creating a missing --out-dir; it refuses --feature-names, which it would ignore.
#[test]
fn demo_writes_charts_into_its_own_ignored_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = run(rnntrace().current_dir(tmp.path()).args(["demo", "-q"]));
    assert_eq!(code, 0, "{err}");
    assert!(tmp.path().join("rnntrace-demo/lstm_states.png").exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "nothing but the folder"
    );
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "/rnntrace-demo/"));
    let (code, _, err) = run(rnntrace().current_dir(tmp.path()).args([
        "demo",
        "gru",
        "-q",
        "--out-dir",
        "new/folder",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(tmp.path().join("new/folder/gru_gates.png").exists());
    let (code, _, err) =
        run(rnntrace()
            .current_dir(tmp.path())
            .args(["demo", "--feature-names", "a,b,c"]));
    assert_eq!(code, 2);
    assert!(err.contains("--feature-names"), "{err}");
}

/// Splits a README command line into words, honouring double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Decodes a PNG and returns (width, height, distinct colours among a sample of pixels).
fn png_facts(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    for chunk in buf[..info.buffer_size()].chunks(px).step_by(7) {
        colours.insert(chunk.to_vec());
    }
    (info.width, info.height, colours.len())
}

#[test]
fn charts_are_written_and_not_blank() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (
        tmp.path().join("s.png"),
        tmp.path().join("p.png"),
        tmp.path().join("g.png"),
        tmp.path().join("g.svg"),
    );
    let (code, _, err) = run(weather_gru()
        .args([
            "--expected",
            "expected.npy",
            "--targets",
            "targets.npy",
            "-q",
            "--plot-sequence",
            "3",
        ])
        .arg("--plot")
        .arg(&a)
        .arg("--plot-predictions")
        .arg(&b)
        .arg("--plot-gates")
        .arg(&c));
    assert_eq!(code, 0, "{err}");
    for p in [&a, &b, &c] {
        let (w, h, colours) = png_facts(p);
        assert!(w >= 600 && h >= 300, "{}: {w}x{h}", p.display());
        assert!(
            colours > 20,
            "{} looks blank: {colours} colours",
            p.display()
        );
    }
    let (code, _, err) = run(weather_gru().arg("-q").arg("--plot-gates").arg(&d));
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&d).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("update gate") && svg.contains("sequence 0 of 8"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}

#[test]
fn chart_errors_are_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope/s.png");
    let (code, out, err) = run(weather_gru().arg("--plot").arg(&missing));
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("does not exist") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!missing.exists());
    let (code, _, err) = run(weather_gru().arg("--plot").arg(tmp.path().join("s.jpg")));
    assert_eq!(code, 2);
    assert!(err.contains(".png or .svg"), "{err}");
    let (code, _, err) = run(weather_gru().args(["--plot-gates", "g.png", "--plot-sequence", "8"]));
    assert_eq!(code, 2);
    assert!(err.contains("--plot-sequence 8 is out of range"), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

/// The plotted series (not the pixels) of the weather GRU, rounded so float noise cannot flip them. Built
/// through the library with the portable kernels, so the snapshot is the same on every CPU.
#[test]
fn chart_series_snapshot_weather_gru() {
    use ndarray::{Array2, Array3};
    use rnntrace::engine::{self, LayerInput, LayerSpec, Stores};
    use rnntrace::trace::{Kernels, Record, Trace};
    use rnntrace::weights::{self, CellKind, ReadOptions, keras::ResetAfter};
    let dir = case_dir("gru_weather_seed");
    let src = weights::load_arrays(&dir.join("weights.json"), &[]).unwrap();
    let opts = ReadOptions {
        layout: None,
        layer: 0,
        reverse: false,
        reset_after: ResetAfter::Auto,
    };
    let w = weights::read_cell(CellKind::Gru, &src, opts)
        .unwrap()
        .0
        .cast::<f32>();
    // --window 2 over the (rows, features) series: window i is rows i, i+1 and predicts row i+2.
    let k = 2;
    let series = rnntrace::io::read_npy(&dir.join("input.npy")).unwrap();
    let (rows, f) = (series.shape[0], series.shape[1]);
    let n = rows - k;
    let x = Array3::from_shape_fn((n, k, f), |(i, t, j)| series.data[(i + t) * f + j] as f32);
    let spec = LayerSpec {
        name: "gru".into(),
        activation: rnntrace::cell::Activation::Tanh,
        recurrent_activation: rnntrace::cell::Activation::Sigmoid,
        go_backwards: false,
        carry_state: false,
    };
    let input = LayerInput {
        x: x.view().into(),
        mask: None,
        h0: None,
        c0: None,
    };
    let never = &mut |_: usize, _: &Stores<f32>| -> rnntrace::Result<()> { Ok(()) };
    let layer = engine::run_layer_using(
        &w,
        &spec,
        input,
        Record::ALL,
        None,
        never,
        Kernels::Portable,
    )
    .unwrap();
    let dense = weights::dense::load(&dir.join("dense.json"), w.units)
        .unwrap()
        .cast::<f32>();
    let act = rnntrace::cell::Activation::Linear;
    let predictions = engine::dense(&dense, act, layer.last_output.view());
    let trace = Trace {
        layers: vec![layer],
        predictions,
        dense_activation: Some(act),
    };
    let column = |name: &str, from: usize| {
        let a = rnntrace::io::read_npy(&dir.join(name)).unwrap();
        Array2::from_shape_fn((n, 1), |(i, _)| a.data[i + from])
    };
    let (expected, targets) = (column("expected.npy", 0), column("targets.npy", k));
    let round = |v: f64| (v * 1e5).round() / 1e5;
    let series = |chart: &rnntrace::render::plot::ChartData| {
        chart
            .series
            .iter()
            .map(|s| {
                format!(
                    "{}: {:?}",
                    s.name,
                    s.points
                        .iter()
                        .map(|(x, y)| (*x, round(*y)))
                        .collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let norms = rnntrace::render::plot::state_norms(&trace, Some(k));
    let preds =
        rnntrace::render::plot::predictions(&trace, Some(&expected), Some(&targets), Some(k));
    insta::assert_snapshot!(format!(
        "{}\n{}\n\n{}\n{}",
        norms.title,
        series(&norms),
        preds.title,
        series(&preds)
    ));
}

/// Text in charts comes from an embedded font: the binary must not link fontconfig or freetype.
#[test]
fn binary_links_no_font_libraries() {
    let Ok(out) = std::process::Command::new("ldd")
        .arg(assert_cmd::cargo::cargo_bin("rnntrace"))
        .output()
    else {
        return; // no ldd on this platform
    };
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(
        !libs.contains("fontconfig") && !libs.contains("freetype"),
        "{libs}"
    );
}

/// Reads an .npz written by rnntrace with the project's own reader (zip + .npy), keyed by member name.
/// The metadata member (a unicode string) is checked for presence and JSON content, not decoded as numbers.
pub(crate) fn npz_members(
    path: &Path,
) -> std::collections::HashMap<String, rnntrace::io::RawArray> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = std::collections::HashMap::new();
    for i in 0..z.len() {
        let mut m = z.by_index(i).unwrap();
        let name = m.name().unwrap().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        m.read_to_end(&mut bytes).unwrap();
        let array = if name == "metadata" {
            let text: String = bytes[128..]
                .chunks(4)
                .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap())
                .collect();
            let meta: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(meta["format"], "rnntrace-npz/1");
            rnntrace::io::RawArray::new(vec![], vec![0.0], "metadata")
        } else {
            rnntrace::io::npy::parse(&bytes).unwrap()
        };
        out.insert(name, array);
    }
    out
}

#[test]
fn npz_trace_holds_every_gate_time_major_and_matches_the_json_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let npz = tmp.path().join("t.npz");
    let dir = case_dir("lstm_masking_value");
    let base = [
        "lstm",
        "--weights",
        "weights.json",
        "--input",
        "input.npy",
        "--mask-value",
        "0",
    ];
    let (code, _, err) = run(rnntrace()
        .current_dir(&dir)
        .args(base)
        .args(["-q", "--record-pre", "--trace"])
        .arg(&npz));
    assert_eq!(code, 0, "{err}");
    let m = npz_members(&npz);
    let (_, json, _) = run(rnntrace()
        .current_dir(&dir)
        .args(base)
        .args(["--format", "json"]));
    let t: Value = serde_json::from_str(&json).unwrap();
    let seqs = t["layers"][0]["sequences"].as_array().unwrap();
    let (b, steps) = (seqs.len(), seqs[0]["steps"].as_array().unwrap().len());
    let u = t["layers"][0]["units"].as_u64().unwrap() as usize;
    for g in ["i", "f", "c", "o"] {
        assert_eq!(
            m[&format!("gates/{g}")].shape,
            vec![steps, b, u],
            "gates/{g} is (steps, sequences, units)"
        );
        assert!(m.contains_key(&format!("pre/{g}")));
    }
    for name in [
        "state/h",
        "state/c",
        "output",
        "masked",
        "input",
        "input_index",
        "predictions",
        "final_state/h",
        "metadata",
    ] {
        assert!(
            m.contains_key(name),
            "member {name} missing; have {:?}",
            m.keys().collect::<Vec<_>>()
        );
    }
    // Every gate and state equals the JSON trace's (same run, same numbers).
    for (s, seq) in seqs.iter().enumerate() {
        for (k, step) in seq["steps"].as_array().unwrap().iter().enumerate() {
            for (name, json_field) in [
                ("gates/f", &step["gates"]["f"]),
                ("state/c", &step["state"]["c"]),
                ("output", &step["output"]),
            ] {
                for (j, v) in json_field.as_array().unwrap().iter().enumerate() {
                    let got = m[name].data[(k * b + s) * u + j];
                    assert!(
                        (got - v.as_f64().unwrap()).abs() < 1e-6,
                        "{name}[{k}, {s}, {j}]: {got} vs {v}"
                    );
                }
            }
            assert_eq!(
                m["masked"].data[k * b + s] != 0.0,
                step["masked"].as_bool().unwrap()
            );
        }
    }
}

#[test]
fn record_modes_keep_what_they_say() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = case_dir("gru_weather_seed");
    for (mode, gates, states) in [
        ("all", true, true),
        ("states", false, true),
        ("none", false, false),
    ] {
        let npz = tmp.path().join(format!("{mode}.npz"));
        let (code, _, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                "gru",
                "--weights",
                "weights.json",
                "--input",
                "input.npy",
                "--window",
                "2",
                "--dense",
                "dense.json",
            ])
            .args([
                "--expected",
                "expected.npy",
                "-q",
                "--record",
                mode,
                "--trace",
            ])
            .arg(&npz));
        assert_eq!(code, 0, "{err}");
        let m = npz_members(&npz);
        assert_eq!(m.contains_key("gates/z"), gates, "{mode}");
        assert!(
            !m.contains_key("pre/z"),
            "pre-activations only with --record-pre"
        );
        assert_eq!(m.contains_key("state/h"), states, "{mode}");
        // Predictions are always there and are the same whatever is recorded.
        let expected = crate::npy(&dir.join("expected.npy")).1;
        for (a, e) in m["predictions"].data.iter().zip(&expected) {
            assert!((a - e).abs() < 1e-5);
        }
    }
}

#[test]
fn timings_are_one_json_line_on_stderr() {
    let (code, out, err) = run(weather_gru().args(["-q", "--timings"]));
    assert_eq!(code, 0);
    assert!(out.is_empty());
    let t: Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    for k in ["load_s", "compute_s", "write_s", "total_s"] {
        assert!(t[k].as_f64().unwrap() >= 0.0, "{k}");
    }
    assert!(t["total_s"].as_f64() >= t["compute_s"].as_f64());
}

/// The timings say which kernels ran: the fused steps for float32 with the activations they compute on a CPU
/// with AVX-512F (or AVX2 and FMA), the portable ones otherwise; `RNNTRACE_KERNELS` caps the choice. Every
/// choice passes.
#[test]
fn timings_name_the_kernels_and_rnntrace_kernels_caps_them() {
    let kernels = |extra: &[&str], env: &str| {
        let mut cmd = weather_gru();
        cmd.env("RNNTRACE_KERNELS", env);
        let (code, out, err) = run(cmd
            .args(["-q", "--timings", "--expected", "expected.npy"])
            .args(extra));
        // Another activation than the model's cannot match Keras: exit 1, a FAIL verdict.
        let changed = extra.contains(&"--recurrent-activation");
        assert_eq!(code, if changed { 1 } else { 0 }, "{out}{err}");
        assert!(
            out.starts_with(if changed { "FAIL" } else { "PASS" }),
            "{out}"
        );
        let line = err.lines().last().unwrap_or_default();
        let t: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {err}"));
        t["kernels"].as_str().unwrap().to_string()
    };
    let (has512, has2) = cpu();
    let avx2 = if has2 { "avx2-fused" } else { "portable" };
    let best = if has512 { "avx512-fused" } else { avx2 };
    assert_eq!(kernels(&[], "auto"), best);
    assert_eq!(kernels(&[], ""), best);
    assert_eq!(kernels(&[], "avx2"), avx2);
    assert_eq!(kernels(&[], "portable"), "portable");
    // float64 has fused steps too (f64 lanes).
    assert_eq!(kernels(&["--precision", "f64"], "auto"), best);
    assert_eq!(kernels(&["--precision", "f64"], "avx2"), avx2);
    assert_eq!(kernels(&["--precision", "f64"], "portable"), "portable");
    // hard_sigmoid (both), relu and linear have fused steps too; softsign has not.
    assert_eq!(
        kernels(&["--recurrent-activation", "hard_sigmoid"], "auto"),
        best
    );
    assert_eq!(
        kernels(&["--recurrent-activation", "softsign"], "auto"),
        "portable"
    );
}

/// Whether this CPU has (AVX-512F, AVX2 and FMA).
fn cpu() -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        (
            std::is_x86_feature_detected!("avx512f"),
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (false, false)
    }
}

#[test]
fn f64_precision_matches_keras_too() {
    let (code, out, _) =
        run(weather_gru().args(["--expected", "expected.npy", "-q", "--precision", "f64"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("PASS"));
}

/// Regression: long sequences made the per-step tables hold every step of every shown sequence in memory.
/// Tables now trace only the steps they show; those steps must be the same numbers as a full run's,
/// going backwards too.
#[test]
fn truncated_step_tables_show_the_same_numbers() {
    let dir = case_dir("lstm_go_backwards");
    let run_with = |extra: &[&str]| {
        let (code, out, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                "lstm",
                "--weights",
                "weights.json",
                "--input",
                "input.npy",
                "--go-backwards",
                "--sequences",
                "1",
                "--color",
                "never",
            ])
            .args(extra));
        assert_eq!(code, 0, "{err}");
        out
    };
    let full = run_with(&[]);
    let short = run_with(&["--max-steps", "2"]);
    let step2 = |s: &str| {
        s.split("── Step 1 of 6")
            .nth(1)
            .unwrap()
            .split("── Step 2")
            .next()
            .unwrap()
            .to_string()
    };
    assert!(
        short.contains("(steps 2–5 not shown; --steps 2..6 shows them)"),
        "{short}"
    );
    let (a, b) = (step2(&full), step2(&short));
    let cut = |s: &str| s.split("\n\n").next().unwrap().to_string();
    assert_eq!(cut(&a), cut(&b));
}

/// Regression: a huge --sequences range allocated one entry per index before clamping to the batch.
#[test]
fn huge_sequence_ranges_cost_nothing_and_empty_ones_are_errors() {
    let (code, out, _) =
        run(weather_gru().args(["--sequences", "0..100000000000", "--color", "never"]));
    assert_eq!(code, 0);
    assert_eq!(out.matches("══ Sequence").count(), 8);
    let (code, _, err) = run(weather_gru().args(["--sequences", "100"]));
    assert_eq!(code, 2);
    assert!(err.contains("holds 8 sequences"), "{err}");
    let (code, _, err) = run(weather_gru().args(["--sequences", "5..2"]));
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
}

/// Regression: the `.npz` trace's `masked` member flagged steps that were not masked. The engine reuses
/// its block of 4 steps, and a flag set in one block stayed set in the next. Nine steps make three blocks;
/// exactly the masked steps must be flagged.
#[test]
fn npz_masked_flags_do_not_leak_from_one_block_into_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, t, f) = (3, 9, 3);
    // Step (0, 0) and (2, 5) are all zeros (masked by --mask-value 0); every other value is non-zero.
    let masked_at = [(0, 0), (2, 5)];
    let values: Vec<f32> = (0..b * t * f)
        .map(|i| {
            let (seq, step) = (i / (t * f), (i / f) % t);
            if masked_at.contains(&(seq, step)) {
                0.0
            } else {
                0.1 + (i % 7) as f32 * 0.05
            }
        })
        .collect();
    let x = tmp.path().join("x.npy");
    write_npy(&x, &[b, t, f], &values);
    let npz = tmp.path().join("t.npz");
    let (code, _, err) = run(rnntrace()
        .arg("lstm")
        .arg("--weights")
        .arg(case_dir("lstm_masking_value").join("weights.json"))
        .arg("--input")
        .arg(&x)
        .args(["--mask-value", "0", "-q", "--trace"])
        .arg(&npz));
    assert_eq!(code, 0, "{err}");
    let m = npz_members(&npz);
    let flags = &m["masked"];
    assert_eq!(flags.shape, vec![t, b]);
    for step in 0..t {
        for seq in 0..b {
            let want = masked_at.contains(&(seq, step));
            assert_eq!(
                flags.data[step * b + seq] != 0.0,
                want,
                "step {step}, sequence {seq}"
            );
        }
    }
}
