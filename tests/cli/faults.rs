//! Faults and limits (issue 17): interrupted runs, permissions, endless inputs, closed streams, folders
//! that cannot be written. Each test is named after what broke.

use super::{case_dir, npy_bytes, rnntrace, run};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("rnntrace")
}

/// A long run: the weather LSTM's weights on 256 random sequences of 4,000 steps, every gate recorded into
/// an `.npz` trace (hundreds of MB, several seconds even in a release build).
fn long_run(dir: &Path) -> Child {
    let (b, t, f) = (256usize, 4000usize, 3usize);
    let mut payload = Vec::with_capacity(b * t * f * 4);
    let mut s = 1u32;
    for _ in 0..b * t * f {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        payload.extend_from_slice(&((s >> 8) as f32 / (1u32 << 24) as f32).to_le_bytes());
    }
    std::fs::write(dir.join("x.npy"), npy_bytes("<f4", &[b, t, f], &payload)).unwrap();
    Command::new(bin())
        .current_dir(dir)
        .arg("lstm")
        .arg("--weights")
        .arg(case_dir("lstm_weather_seed").join("weights.json"))
        .args(["--input", "x.npy", "--trace", "out/t.npz", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs")
}

/// The temporary files in `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".rnntrace-") && n.ends_with(".tmp"))
        })
        .collect()
}

/// Waits until the run has written into its temporary trace file; returns that file.
fn wait_for_temp(dir: &Path, child: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(p) = temps(dir)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        {
            return p;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its trace file appeared");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no temporary trace file after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

#[test]
fn interrupted_trace_left_gigabytes_behind() {
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut child = long_run(tmp.path());
        wait_for_temp(&out, &mut child);
        signal(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
        assert!(left.is_empty(), "signal {sig} left {left:?}");
    }
}

#[test]
fn a_killed_run_s_temp_file_is_cleaned_by_the_next_run_into_that_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut child = long_run(tmp.path());
    let stale = wait_for_temp(&out, &mut child);
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    assert!(stale.exists(), "kill -9 cannot be caught: the file stays");
    let c = case_dir("lstm_weather_seed");
    let (code, _, err) = run(rnntrace()
        .current_dir(tmp.path())
        .arg("lstm")
        .arg("--weights")
        .arg(c.join("weights.json"))
        .arg("--input")
        .arg(c.join("input.npy"))
        .args(["--window", "2", "--quiet", "--trace", "out/small.json"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        !stale.exists(),
        "the stale temp file of a dead run is removed"
    );
    assert!(out.join("small.json").exists());
}

/// Runs the weather LSTM through `sh` with `umask` set, writing `--trace` and `--plot` into `dir`.
fn run_with_umask(umask: &str, dir: &Path) {
    let c = case_dir("lstm_weather_seed");
    let script = format!(
        "umask {umask} && exec '{}' lstm --weights '{}' --input '{}' --window 2 --quiet --trace t.json --plot p.png",
        bin().display(),
        c.join("weights.json").display(),
        c.join("input.npy").display()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn outputs_ignored_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    run_with_umask("077", tmp.path());
    assert_eq!(mode(&tmp.path().join("t.json")), 0o600);
    assert_eq!(mode(&tmp.path().join("p.png")), 0o600);
    run_with_umask("022", tmp.path());
    assert_eq!(
        mode(&tmp.path().join("t.json")),
        0o600,
        "an existing target keeps its mode"
    );
    let fresh = tempfile::tempdir().unwrap();
    run_with_umask("022", fresh.path());
    assert_eq!(mode(&fresh.path().join("t.json")), 0o644);
    std::fs::set_permissions(
        fresh.path().join("p.png"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    run_with_umask("077", fresh.path());
    assert_eq!(mode(&fresh.path().join("p.png")), 0o640);
}

#[test]
fn endless_inputs_were_read_until_memory_ran_out() {
    let c = case_dir("lstm_weather_seed");
    let w = c.join("weights.json");
    let x = c.join("input.npy");
    let zero = Path::new("/dev/zero");
    for (flag, args) in [
        (
            "--input",
            vec![("--weights", w.as_path()), ("--input", zero)],
        ),
        (
            "--weights",
            vec![("--weights", zero), ("--input", x.as_path())],
        ),
        (
            "--expected",
            vec![
                ("--weights", w.as_path()),
                ("--input", x.as_path()),
                ("--expected", zero),
            ],
        ),
        (
            "--inverse-scale",
            vec![
                ("--weights", w.as_path()),
                ("--input", x.as_path()),
                ("--inverse-scale", zero),
            ],
        ),
    ] {
        let mut cmd = rnntrace();
        cmd.args(["lstm", "--window", "2", "--quiet"]);
        for (f, p) in args {
            cmd.arg(f).arg(p);
        }
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(
            err.contains("/dev/zero") && err.contains("not a regular file"),
            "{flag}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{flag}: {err}");
    }
}

/// Runs a shell command line with the binary as `$B`; returns (exit code, stderr).
fn sh(line: &str) -> (i32, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .env("B", bin())
        .env("C", case_dir("lstm_weather_seed"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_exited_0_with_all_output_lost() {
    let run = "\"$B\" lstm --weights \"$C/weights.json\" --input \"$C/input.npy\" --window 2";
    let (code, err) = sh(&format!("{run} >&-"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("stdout") && err.contains("closed"), "{err}");
    // Nothing to print: nothing lost.
    let (code, err) = sh(&format!("{run} --quiet >&-"));
    assert_eq!(code, 0, "{err}");
    // An explicit /dev/null is a choice, not a fault.
    let (code, err) = sh(&format!("{run} > /dev/null"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_unwritable_folder_was_found_only_after_the_work() {
    // /proc exists and is a folder, but nobody, root included, can create a file in it.
    let c = case_dir("lstm_weather_seed");
    for flag in ["--trace", "--plot"] {
        let target = if flag == "--trace" {
            "/proc/rnntrace-probe.json"
        } else {
            "/proc/rnntrace-probe.png"
        };
        let (code, out, err) = run(rnntrace()
            .arg("lstm")
            .arg("--weights")
            .arg(c.join("weights.json"))
            .arg("--input")
            .arg(c.join("input.npy"))
            .args(["--window", "2", flag, target]));
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains(target), "{flag}: {err}");
        assert!(
            out.is_empty(),
            "{flag}: nothing is computed or printed first: {out}"
        );
    }
}

#[test]
fn fuzzing_from_a_fresh_clone_started_from_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(root.join("fuzz/seed-corpus.sh"))
        .arg(tmp.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
    let targets: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    assert!(targets.len() >= 4, "{targets:?}");
    for t in targets {
        let n = std::fs::read_dir(tmp.path().join(t)).map_or(0, |d| d.count());
        assert!(n > 0, "fuzz target {t} gets no seed files from fixtures/");
    }
}

/// Runs the binary to the end and returns (exit code, peak resident memory in MB) of that one process.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn peak_mb(cmd: &mut Command) -> (i32, f64) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 reaps exactly this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as f64 / 1024.0)
}

#[test]
fn charts_held_the_whole_trace_in_memory() {
    // 384 sequences × 1,500 steps of the 16-unit weather LSTM: the whole trace (gates and states) took
    // ~270 MB here before charts were fed from the stream; the charts need the norms (9 MB) and one
    // sequence's gates.
    let (b, t, f) = (384usize, 1500usize, 3usize);
    let payload: Vec<u8> = (0..b * t * f)
        .flat_map(|i| (((i * 7919) % 1000) as f32 / 1000.0).to_le_bytes())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("x.npy"),
        npy_bytes("<f4", &[b, t, f], &payload),
    )
    .unwrap();
    let (code, mb) = peak_mb(
        Command::new(bin())
            .current_dir(tmp.path())
            .arg("lstm")
            .arg("--weights")
            .arg(case_dir("lstm_weather_seed").join("weights.json"))
            .args(["--input", "x.npy", "--quiet", "--plot", "n.png"])
            .args(["--plot-gates", "g.png", "--plot-sequence", "300"]),
    );
    assert_eq!(code, 0);
    // About 60 MB on a quiet machine; once, under a fully loaded test run, it went past 150 MB (malloc's
    // per-thread arenas keep freed blocks as the threads interleave). Holding the whole trace took ~280 MB.
    assert!(mb < 200.0, "peak {mb:.0} MB for two charts");
    assert!(tmp.path().join("n.png").exists() && tmp.path().join("g.png").exists());
}

#[test]
fn streamed_charts_are_the_charts_of_the_trace() {
    // The same charts, drawn from the streamed blocks (charts alone, or beside an .npz trace) and from
    // the whole trace (a JSON trace keeps it): byte for byte the same pictures.
    let c = case_dir("gru_weather_seed");
    let tmp = tempfile::tempdir().unwrap();
    for (tag, extra) in [
        ("stream", vec![]),
        ("npz", vec!["--trace", "t.npz"]),
        ("json", vec!["--trace", "t.json"]),
    ] {
        let norms = format!("{tag}-n.png");
        let gates = format!("{tag}-g.png");
        let (code, _, err) = run(rnntrace()
            .current_dir(tmp.path())
            .arg("gru")
            .arg("--weights")
            .arg(c.join("weights.json"))
            .arg("--input")
            .arg(c.join("input.npy"))
            .args([
                "--window",
                "2",
                "--quiet",
                "--plot",
                &norms,
                "--plot-gates",
                &gates,
            ])
            .args(["--plot-sequence", "5"])
            .args(extra));
        assert_eq!(code, 0, "{tag}: {err}");
    }
    for chart in ["n", "g"] {
        let read =
            |tag: &str| std::fs::read(tmp.path().join(format!("{tag}-{chart}.png"))).unwrap();
        assert!(
            read("stream") == read("json"),
            "{chart}: streamed chart differs from the trace's"
        );
        assert!(
            read("npz") == read("json"),
            "{chart}: chart beside .npz differs from the trace's"
        );
    }
}

#[test]
fn two_outputs_on_one_path_were_accepted_and_the_last_won() {
    let c = case_dir("lstm_weather_seed");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    for (a, b) in [
        (["--plot", "x.png"], ["--plot-gates", "x.png"]),
        (["--plot", "x.png"], ["--plot-predictions", "sub/../x.png"]),
    ] {
        let (code, out, err) = run(rnntrace()
            .current_dir(tmp.path())
            .arg("lstm")
            .arg("--weights")
            .arg(c.join("weights.json"))
            .arg("--input")
            .arg(c.join("input.npy"))
            .args(["--window", "2"])
            .args(a)
            .args(b));
        assert_eq!(code, 2, "{a:?} {b:?}: {err}");
        assert!(
            err.contains("same file") && err.contains(a[0]) && err.contains(b[0]),
            "{err}"
        );
        assert!(out.is_empty());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "nothing written: {left:?}");
    }
}
