//! `--report FILE.html`: the interactive report, opened in headless Chromium.
//!
//! Chromium is driven over the DevTools protocol with the `headless_chrome` crate (default features: it
//! never downloads a browser; it is pointed at Debian's `/usr/bin/chromium`, or `RNNTRACE_CHROMIUM`).
//! One browser is launched for the whole module and each test opens its own tab. A missing browser fails
//! the tests with the command that installs it. Every number the page shows is checked against the `.npz`
//! trace the same run wrote (or Keras's golden states), never against the page's own arithmetic.

use crate::{case_dir, fixtures, npy_bytes, rnntrace, run};
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Network, Runtime};
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn chromium_path() -> PathBuf {
    std::env::var_os("RNNTRACE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The module's browser, launched once.
fn browser() -> &'static Browser {
    static BROWSER: OnceLock<Browser> = OnceLock::new();
    BROWSER.get_or_init(|| {
        let path = chromium_path();
        assert!(
            path.is_file(),
            "the report tests need headless Chromium at {}: install it with \
             `apt-get update && apt-get install -y chromium` (Debian), or set RNNTRACE_CHROMIUM to its path",
            path.display()
        );
        let opts = LaunchOptions::default_builder()
            .path(Some(path.clone()))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1280, 900)))
            .idle_browser_timeout(Duration::from_secs(600))
            .build()
            .expect("launch options");
        let browser = Browser::new(opts).unwrap_or_else(|e| {
            panic!(
                "could not start {} ({e}); install Chromium with `apt-get update && apt-get install -y chromium`",
                path.display()
            )
        });
        // A static is never dropped, so the browser would outlive the test binary: kill it at exit.
        if let Some(pid) = browser.get_process_id() {
            BROWSER_PID.store(pid, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: registers a plain extern "C" function with no captured state.
            unsafe { libc::atexit(kill_browser) };
        }
        browser
    })
}

static BROWSER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn kill_browser() {
    let pid = BROWSER_PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill(2) on the browser this binary started; no memory is touched.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// One page open at a time: the browser tests share the machine with the timed tests of the suite.
static ONE_PAGE: Mutex<()> = Mutex::new(());

/// An open report: its tab, and what the page logged and requested.
struct Page {
    _turn: std::sync::MutexGuard<'static, ()>,
    tab: Arc<Tab>,
    problems: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Page {
    fn open(path: &Path) -> Page {
        let turn = ONE_PAGE.lock().unwrap_or_else(|e| e.into_inner());
        let tab = browser().new_tab().expect("new tab");
        tab.set_default_timeout(Duration::from_secs(60));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (p, r) = (problems.clone(), requests.clone());
        tab.add_event_listener(Arc::new(move |e: &Event| match e {
            Event::RuntimeExceptionThrown(x) => p
                .lock()
                .unwrap()
                .push(format!("page error: {:?}", x.params.exception_details)),
            Event::RuntimeConsoleAPICalled(x) => {
                let t = format!("{:?}", x.params.Type);
                if t.contains("Error") || t.contains("Warning") || t.contains("Assert") {
                    p.lock()
                        .unwrap()
                        .push(format!("console {t}: {:?}", x.params.args));
                }
            }
            Event::LogEntryAdded(x) => p.lock().unwrap().push(format!("log: {:?}", x.params.entry)),
            Event::NetworkRequestWillBeSent(x) => {
                r.lock().unwrap().push(x.params.request.url.clone());
            }
            _ => {}
        }))
        .unwrap();
        tab.enable_runtime().unwrap();
        tab.enable_log().unwrap();
        tab.call_method(Network::Enable {
            max_total_buffer_size: None,
            max_resource_buffer_size: None,
            max_post_data_size: None,
            report_direct_socket_traffic: None,
            enable_durable_messages: None,
        })
        .unwrap();
        let url = format!("file://{}", path.canonicalize().unwrap().display());
        tab.navigate_to(&url).unwrap();
        tab.wait_until_navigated().unwrap();
        let page = Page {
            _turn: turn,
            tab,
            problems,
            requests,
        };
        let start = Instant::now();
        while page.js("document.documentElement.dataset.ready === '1'") != Value::Bool(true) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the report never finished loading: {:?}",
                page.problems.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        page
    }

    /// Evaluates `expr` in the page and returns it as JSON.
    fn js(&self, expr: &str) -> Value {
        let r = self
            .tab
            .call_method(Runtime::Evaluate {
                expression: format!("JSON.stringify((() => {{ return ({expr}); }})())"),
                return_by_value: Some(true),
                generate_preview: None,
                silent: Some(false),
                await_promise: Some(false),
                include_command_line_api: None,
                user_gesture: Some(true),
                object_group: None,
                context_id: None,
                throw_on_side_effect: None,
                timeout: None,
                disable_breaks: None,
                repl_mode: None,
                allow_unsafe_eval_blocked_by_csp: None,
                unique_context_id: None,
                serialization_options: None,
            })
            .unwrap();
        if let Some(ex) = r.exception_details {
            panic!("{expr}: {ex:?}");
        }
        match r.result.value {
            Some(Value::String(s)) => serde_json::from_str(&s).unwrap(),
            _ => Value::Null,
        }
    }

    /// Moves the real mouse pointer to client coordinates (x, y).
    fn hover(&self, x: f64, y: f64) {
        self.tab
            .move_mouse_to_point(headless_chrome::browser::tab::point::Point { x, y })
            .unwrap();
    }

    /// Every request the page made stayed on file:// and nothing was logged as a problem.
    fn assert_clean(&self) {
        let reqs = self.requests.lock().unwrap();
        assert!(
            !reqs.is_empty(),
            "the page itself should have been observed"
        );
        for u in reqs.iter() {
            assert!(
                u.starts_with("file://") || u.starts_with("data:") || u.starts_with("blob:"),
                "the report made a request off file://: {u}"
            );
        }
        let p = self.problems.lock().unwrap();
        assert!(p.is_empty(), "console or page errors: {p:#?}");
    }

    /// Client coordinates of the centre of cell (step, unit) in the heat map of `member` of layer `li`,
    /// from the canvas's box, the visible window and the row order the page reports.
    fn cell_point(&self, li: usize, member: &str, step: usize, unit: usize) -> (f64, f64) {
        let v = self.js(&format!(
            "(() => {{ const c = document.querySelector('canvas.heatmap[data-layer=\"{li}\"][data-member=\"{member}\"]');
               const r = c.getBoundingClientRect(); c.scrollIntoView({{block: 'center'}});
               const q = c.getBoundingClientRect();
               return {{left: q.left + 1, top: q.top + 1, width: q.width - 2, height: q.height - 2,
                        view: rnntrace.view(), order: rnntrace.unitOrder({li})}}; }})()"
        ));
        let (from, to) = (
            v["view"]["from"].as_f64().unwrap(),
            v["view"]["to"].as_f64().unwrap(),
        );
        let order: Vec<u64> = v["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_u64().unwrap())
            .collect();
        let row = order.iter().position(|&u| u == unit as u64).unwrap() as f64;
        let x = v["left"].as_f64().unwrap()
            + (step as f64 - from + 0.5) / (to - from) * v["width"].as_f64().unwrap();
        let y = v["top"].as_f64().unwrap()
            + (row + 0.5) / order.len() as f64 * v["height"].as_f64().unwrap();
        (x, y)
    }

    /// Hovers the cell; returns the tooltip's value (read back at the run's precision, float32 here, so
    /// the shortest decimal the page prints must name exactly the recorded number) and its text.
    /// Asserts the tooltip names the step and unit hovered.
    fn hover_cell(&self, li: usize, member: &str, step: usize, unit: usize) -> (f64, String) {
        let (x, y) = self.cell_point(li, member, step, unit);
        self.hover(x, y);
        let t = self.js(
            "{v: document.querySelector('#tooltip .tt-value')?.textContent, step: document.querySelector('#tooltip .tt-step')?.textContent,
              unit: document.querySelector('#tooltip .tt-unit')?.textContent,
              text: document.getElementById('tooltip').innerText, hidden: document.getElementById('tooltip').hidden}",
        );
        assert_eq!(t["hidden"], false, "no tooltip at ({x}, {y})");
        let text = t["text"].as_str().unwrap().to_string();
        assert_eq!(t["step"], step.to_string(), "{text}");
        assert_eq!(t["unit"], unit.to_string(), "{text}");
        let v = t["v"].as_str().unwrap_or_else(|| panic!("{t}"));
        (v.parse::<f32>().unwrap() as f64, text)
    }

    /// Distinct colours in a heat map (a blank canvas has one).
    fn colours(&self, li: usize, member: &str) -> u64 {
        self.js(&format!(
            "(() => {{ rnntrace.drawEverything(); const c = document.querySelector('canvas.heatmap[data-layer=\"{li}\"][data-member=\"{member}\"]');
               const k = document.createElement('canvas'); k.width = c.width; k.height = c.height; const kc = k.getContext('2d', {{willReadFrequently: true}}); kc.drawImage(c, 0, 0); const d = kc.getImageData(0, 0, c.width, c.height).data; const s = new Set();
               for (let i = 0; i < d.length; i += 4) s.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]);
               return s.size; }})()"
        ))
        .as_u64()
        .unwrap()
    }

    /// A hash of a heat map's pixels.
    fn pixels(&self, li: usize, member: &str) -> u64 {
        self.js(&format!(
            "(() => {{ rnntrace.drawEverything(); const c = document.querySelector('canvas.heatmap[data-layer=\"{li}\"][data-member=\"{member}\"]');
               const k = document.createElement('canvas'); k.width = c.width; k.height = c.height; const kc = k.getContext('2d', {{willReadFrequently: true}}); kc.drawImage(c, 0, 0); const d = kc.getImageData(0, 0, c.width, c.height).data; let h = 2166136261;
               for (let i = 0; i < d.length; i++) h = Math.imul(h ^ d[i], 16777619) >>> 0; return h; }})()"
        ))
        .as_u64()
        .unwrap()
    }

    fn value(&self, layer: &str, member: &str, b: usize, t: usize, u: usize) -> Value {
        self.js(&format!(
            "rnntrace.value({layer:?}, {member:?}, {b}, {t}, {u})"
        ))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.tab.close(false);
    }
}

/// Reads an `.npz` trace: member name → (shape, values).
fn npz(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = HashMap::new();
    for i in 0..z.len() {
        let mut m = z.by_index(i).unwrap();
        let name = m.name().unwrap().trim_end_matches(".npy").to_string();
        if name == "metadata" {
            continue;
        }
        let mut bytes = Vec::new();
        m.read_to_end(&mut bytes).unwrap();
        let a = rnntrace::io::npy::parse(&bytes).unwrap();
        out.insert(name, (a.shape, a.data));
    }
    out
}

/// Deterministic pseudo-random numbers in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn matrix(&mut self, r: usize, c: usize, scale: f64) -> Value {
        Value::from(
            (0..r)
                .map(|_| (0..c).map(|_| self.next() * scale).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        )
    }
}

/// An LSTM or GRU layer with `units` units over `b` sequences × `t` steps × 3 features, written into
/// `dir`: (weights.json, input.npy).
fn synthetic(dir: &Path, gates: usize, units: usize, b: usize, t: usize) -> (PathBuf, PathBuf) {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let f = 3;
    let w = serde_json::json!({
        "kernel": rng.matrix(f, gates * units, 0.8),
        "recurrent_kernel": rng.matrix(units, gates * units, 0.5),
        "bias": rng.matrix(1, gates * units, 0.3)[0],
    });
    let wp = dir.join("weights.json");
    std::fs::write(&wp, w.to_string()).unwrap();
    let mut x = Vec::with_capacity(b * t * f * 4);
    for s in 0..b {
        for k in 0..t {
            let k = k as f64;
            for v in [
                (k / (8.0 + s as f64)).sin(),
                (k / 5.0 + s as f64).cos(),
                rng.next() * 0.4,
            ] {
                x.extend_from_slice(&(v as f32).to_le_bytes());
            }
        }
    }
    let xp = dir.join("input.npy");
    std::fs::write(&xp, npy_bytes("<f4", &[b, t, f], &x)).unwrap();
    (wp, xp)
}

#[test]
fn lstm_report_is_offline_small_drawn_and_shows_the_recorded_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, x) = synthetic(tmp.path(), 4, 16, 20, 500);
    let html = tmp.path().join("report.html");
    let trace = tmp.path().join("trace.npz");
    let (code, _, err) = run(rnntrace()
        .args([
            "lstm",
            "-q",
            "--feature-names",
            "wave,tide,noise",
            "--weights",
        ])
        .arg(&w)
        .arg("--input")
        .arg(&x)
        .arg("--trace")
        .arg(&trace)
        .arg("--report")
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let size = std::fs::metadata(&html).unwrap().len();
    assert!(
        size < 10_000_000,
        "20 × 500 × 16 LSTM report is {size} bytes"
    );
    let text = std::fs::read_to_string(&html).unwrap();
    for banned in ["http://", "https://", "<link", " src="] {
        assert!(!text.contains(banned), "the report references {banned}");
    }
    let t = npz(&trace);
    let page = Page::open(&html);
    // Every gate and state has a heat map, and each is drawn.
    for m in [
        "gates/i", "gates/f", "gates/c", "gates/o", "state/h", "state/c",
    ] {
        let n = page.colours(0, m);
        assert!(n > 20, "{m}: only {n} colours drawn");
    }
    assert_eq!(
        page.js("document.querySelectorAll('canvas.feature').length"),
        3
    );
    assert_eq!(
        page.js("[...document.querySelectorAll('canvas.feature')].map(c => c.getAttribute('aria-label')).join()"),
        "Input feature wave,Input feature tide,Input feature noise"
    );
    // The script API returns the .npz numbers exactly (time-major (T, B, U) there).
    let at = |m: &str, step: usize, b: usize, u: usize| {
        let (s, v) = &t[m];
        v[(step * s[1] + b) * s[2] + u]
    };
    for (m, b, step, u) in [
        ("gates/i", 0, 0, 0),
        ("gates/f", 3, 123, 7),
        ("gates/c", 19, 499, 15),
        ("gates/o", 11, 250, 2),
        ("state/h", 7, 42, 9),
        ("state/c", 19, 0, 4),
    ] {
        assert_eq!(
            page.value("lstm", m, b, step, u).as_f64().unwrap(),
            at(m, step, b, u),
            "{m} sequence {b} step {step} unit {u}"
        );
    }
    // By layer index too; unknown members are errors, not wrong numbers.
    assert_eq!(
        page.js("(() => { try { rnntrace.value(0, 'state/x', 0, 0, 0); return 'no error'; } catch (e) { return e.name; } })()"),
        "RangeError"
    );
    assert_eq!(
        page.js("rnntrace.value(0, 'state/c', 2, 17, 5)")
            .as_f64()
            .unwrap(),
        at("state/c", 17, 2, 5)
    );
    // Hovering a known cell shows its exact value and step (zoomed in so each step has its own columns).
    page.js("rnntrace.setView(0, 120)");
    for (m, step, u) in [("state/c", 37, 5), ("gates/f", 100, 12), ("state/h", 3, 0)] {
        let (v, text) = page.hover_cell(0, m, step, u);
        assert_eq!(v, at(m, step, 0, u), "{m} step {step} unit {u}: {text}");
        assert!(
            text.contains("input row") && text.contains("wave"),
            "{text}"
        );
    }
    // Another sequence through the picker.
    page.js("(() => { const s = document.getElementById('seq'); s.value = '5'; s.dispatchEvent(new Event('change')); })()");
    std::thread::sleep(Duration::from_millis(100));
    let (v, text) = page.hover_cell(0, "gates/o", 60, 3);
    assert_eq!(v, at("gates/o", 60, 5, 3), "{text}");
    assert!(text.contains("sequence 5"), "{text}");
    // Zoomed out over more steps than pixels, the page says it aggregates.
    page.js("rnntrace.setView(0, 500)");
    let w = page
        .js("document.querySelector('canvas.heatmap').width")
        .as_u64()
        .unwrap();
    let view_text = page.js("document.getElementById('view-text').textContent");
    if w < 500 {
        assert!(
            view_text.as_str().unwrap().contains("mean of"),
            "{view_text}"
        );
    }
    // The keyboard pans and zooms.
    page.js("rnntrace.setView(0, 100)");
    page.tab.press_key("ArrowRight").unwrap();
    assert_eq!(page.js("rnntrace.view().from"), 10);
    page.tab.press_key("0").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        page.js("rnntrace.view()"),
        serde_json::json!({"from": 0, "to": 500})
    );
    page.assert_clean();
}

#[test]
fn sorting_and_selection_change_what_is_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, x) = synthetic(tmp.path(), 4, 16, 6, 200);
    let html = tmp.path().join("r.html");
    let trace = tmp.path().join("t.npz");
    let (code, _, err) = run(rnntrace()
        .args(["lstm", "-q", "--weights"])
        .arg(&w)
        .arg("--input")
        .arg(&x)
        .arg("--trace")
        .arg(&trace)
        .arg("--report")
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let t = npz(&trace);
    let (shape, h) = &t["state/h"];
    let (steps, seqs, units) = (shape[0], shape[1], shape[2]);
    let page = Page::open(&html);
    page.js("rnntrace.setView(0, 200)");
    let before = page.pixels(0, "state/h");
    let (_, tip_before) = page.hover_cell(0, "state/h", 50, 0);
    // Sort by variance with the button: the rows follow the variance of state/h (from the .npz), highest
    // first, and the same pixel now shows another unit.
    let point = page.cell_point(0, "state/h", 50, 0);
    page.js("document.querySelector('#sort-buttons button[data-sort=variance]').click()");
    let order: Vec<usize> = serde_json::from_value(page.js("rnntrace.unitOrder(0)")).unwrap();
    let var = |u: usize| {
        let vals: Vec<f64> = (0..steps)
            .flat_map(|s| (0..seqs).map(move |b| (s, b)))
            .map(|(s, b)| h[(s * seqs + b) * units + u])
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64
    };
    for pair in order.windows(2) {
        assert!(
            var(pair[0]) >= var(pair[1]) - 1e-12,
            "unit {} (var {}) before unit {} (var {})",
            pair[0],
            var(pair[0]),
            pair[1],
            var(pair[1])
        );
    }
    assert_ne!(
        order[0], 0,
        "unit 0 is not the most variable unit of this layer"
    );
    assert_ne!(page.pixels(0, "state/h"), before, "sorting redrew nothing");
    page.hover(point.0, point.1);
    let tip_after = page
        .js("document.getElementById('tooltip').textContent")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        tip_after.contains(&format!("unit {}", order[0])) && tip_after != tip_before,
        "{tip_before} / {tip_after}"
    );
    // The first row of the unit list is that unit.
    assert_eq!(
        page.js("document.querySelector('#unit-table tbody tr').dataset.unit"),
        order[0].to_string()
    );
    // Selecting a unit in the list highlights it in the list and on every map of the layer.
    let maps_before: Vec<u64> = ["gates/i", "state/c"]
        .iter()
        .map(|m| page.pixels(0, m))
        .collect();
    page.js("document.querySelector('#unit-table tbody tr[data-unit=\"7\"]').click()");
    assert_eq!(page.js("rnntrace.selected(0)"), serde_json::json!([7]));
    assert_eq!(
        page.js("document.querySelector('#unit-table tbody tr[data-unit=\"7\"]').getAttribute('aria-selected')"),
        "true"
    );
    page.js("rnntrace.redrawMs()");
    for (m, p) in ["gates/i", "state/c"].iter().zip(maps_before) {
        assert_ne!(page.pixels(0, m), p, "{m} does not show the selection");
    }
    // LSTMVis select: units ≥ θ on state/h throughout steps 20..30 of sequence 0, then the ranges where
    // the same units do the same. Every match is checked against the .npz.
    // θ: the second-highest per-unit minimum over the range, so at least two units qualify.
    let hv = |s: usize, b: usize, u: usize| h[(s * seqs + b) * units + u];
    let mut mins: Vec<f64> = (0..units)
        .map(|u| (20..30).map(|s| hv(s, 0, u)).fold(f64::INFINITY, f64::min))
        .collect();
    mins.sort_by(|a, b| b.total_cmp(a));
    let theta = (mins[1] * 1000.0).floor() / 1000.0;
    page.js("rnntrace.setSequence(0)");
    page.js(&format!(
        "(() => {{ document.getElementById('sel-theta').value = '{theta}'; document.getElementById('sel-from').value = '20';
           document.getElementById('sel-to').value = '30'; document.getElementById('sel-pick').click(); }})()"
    ));
    let q: Vec<usize> = serde_json::from_value(page.js("rnntrace.selected(0)")).unwrap();
    let expect_q: Vec<usize> = (0..units)
        .filter(|&u| (20..30).all(|s| hv(s, 0, u) >= theta))
        .collect();
    assert_eq!(q, expect_q);
    assert!(!q.is_empty(), "no unit is on throughout: pick another θ");
    let jac = |s: usize, b: usize| {
        let on: Vec<usize> = (0..units).filter(|&u| hv(s, b, u) >= theta).collect();
        let inter = on.iter().filter(|u| q.contains(u)).count();
        inter as f64 / (on.len() + q.len() - inter) as f64
    };
    // The least overlap inside the query range: the query itself must then be found.
    let min_j = ((20..30).map(|s| jac(s, 0)).fold(1.0, f64::min) * 1000.0).floor() / 1000.0;
    let matches = page.js(&format!(
        "rnntrace.findMatches(0, 'state/h', {theta}, 20, 30, {min_j})"
    ));
    let rows = page
        .js("document.querySelectorAll('#match-table tbody tr').length")
        .as_u64()
        .unwrap();
    let ms = matches.as_array().unwrap();
    assert!(!ms.is_empty() && rows as usize == ms.len(), "{matches}");
    let mut last = f64::INFINITY;
    let mut has_query = false;
    for m in ms {
        let (b, from, to) = (
            m["sequence"].as_u64().unwrap() as usize,
            m["from"].as_u64().unwrap() as usize,
            m["to"].as_u64().unwrap() as usize,
        );
        assert!(to - from >= 5, "{m}: shorter than half the 10-step query");
        let js: Vec<f64> = (from..to).map(|s| jac(s, b)).collect();
        assert!(js.iter().all(|&j| j >= min_j), "{m}: {js:?}");
        // Maximal: the steps around the range do not match.
        assert!(from == 0 || jac(from - 1, b) < min_j, "{m}");
        assert!(to == steps || jac(to, b) < min_j, "{m}");
        let mean = js.iter().sum::<f64>() / js.len() as f64;
        assert!((m["jaccard"].as_f64().unwrap() - mean).abs() < 1e-12, "{m}");
        assert!(mean <= last + 1e-12, "not ranked by Jaccard");
        last = mean;
        has_query |= b == 0 && from <= 20 && to >= 30;
    }
    assert!(has_query, "the query range itself is a match: {matches}");
    page.assert_clean();
}

#[test]
fn gru_report_checks_keras_states_and_shows_the_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = case_dir("gru_masking_value");
    let html = tmp.path().join("gru.html");
    let (code, _, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "gru",
            "-q",
            "--weights",
            "weights.json",
            "--input",
            "input.npy",
            "--mask-value",
            "0",
            "--expected",
            "expected.npy",
            "--report",
        ])
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let page = Page::open(&html);
    // Keras's own h at every step (b, t, u) equals the report's state/h within float32 rounding of the
    // framework (1e-5, the suite's tolerance for float32 runs).
    let (shape, keras_h) = crate::npy(&dir.join("h_seq.npy"));
    let (b, t, u) = (shape[0], shape[1], shape[2]);
    let ours: Vec<Vec<Vec<f64>>> = serde_json::from_value(page.js(&format!(
        "Array.from({{length: {b}}}, (_, s) => Array.from({{length: {t}}}, (_, k) => Array.from({{length: {u}}}, (_, j) => rnntrace.value('gru', 'state/h', s, k, j))))"
    )))
    .unwrap();
    for s in 0..b {
        for k in 0..t {
            for j in 0..u {
                let want = keras_h[(s * t + k) * u + j];
                assert!(
                    (ours[s][k][j] - want).abs() <= 1e-5,
                    "h[{s}, {k}, {j}]: {} vs Keras {want}",
                    ours[s][k][j]
                );
            }
        }
    }
    // Masked steps carry a mask; the output member exists as in the .npz.
    let members = page.js("rnntrace.meta.layers[0].members.map(m => m.name)");
    assert_eq!(
        members,
        serde_json::json!(["gates/z", "gates/r", "gates/h", "state/h", "output"])
    );
    assert_eq!(
        page.js("document.getElementById('verdict').textContent"),
        "matches the framework"
    );
    let rows = page.js("document.querySelectorAll('#pred-table tbody tr').length");
    assert_eq!(rows.as_u64().unwrap() as usize, b);
    for m in ["gates/z", "state/h"] {
        assert!(page.colours(0, m) > 5, "{m} not drawn");
    }
    page.assert_clean();
}

#[test]
fn run_report_has_every_layer_of_a_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("models").join("gru_lstm_stack");
    let html = tmp.path().join("stack.html");
    let (code, _, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "run",
            "-q",
            "--model",
            "model.keras",
            "--input",
            "input.npy",
            "--expected",
            "expected.npy",
            "--report",
        ])
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let page = Page::open(&html);
    let layers = page.js("rnntrace.meta.layers.map(l => l.cell)");
    assert_eq!(layers, serde_json::json!(["gru", "lstm"]));
    let names: Vec<String> =
        serde_json::from_value(page.js("rnntrace.meta.layers.map(l => l.name)")).unwrap();
    assert_eq!(names, ["gru", "lstm"]);
    // Keras's per-layer outputs (saved by the generator): the GRU's whole sequence, the LSTM's last step.
    let outs = npz(&dir.join("layer_outputs.npz"));
    let (shape, gru) = &outs["gru"];
    let (b, t, u) = (shape[0], shape[1], shape[2]);
    for s in 0..b {
        for k in 0..t {
            for j in 0..u {
                let ours = page.value("gru", "state/h", s, k, j).as_f64().unwrap();
                assert!(
                    (ours - gru[(s * t + k) * u + j]).abs() <= 1e-5,
                    "gru h[{s},{k},{j}]"
                );
            }
        }
    }
    let (shape, lstm) = &outs["lstm"];
    for s in 0..shape[0] {
        for j in 0..shape[1] {
            let ours = page.value("lstm", "state/h", s, t - 1, j).as_f64().unwrap();
            assert!(
                (ours - lstm[s * shape[1] + j]).abs() <= 1e-5,
                "lstm h[{s},{j}]"
            );
        }
    }
    assert_eq!(
        page.js("document.querySelectorAll('canvas.heatmap').length"),
        3 + 1 + 4 + 2
    );
    page.assert_clean();
}

#[test]
fn report_past_its_limit_says_what_it_left_out_and_how_to_narrow() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, x) = synthetic(tmp.path(), 4, 16, 20, 500);
    let html = tmp.path().join("r.html");
    let trace = tmp.path().join("t.npz");
    let base = |c: &mut assert_cmd::Command| {
        c.args(["lstm", "-q", "--weights"])
            .arg(&w)
            .arg("--input")
            .arg(&x)
            .arg("--trace")
            .arg(&trace)
            .arg("--report")
            .arg(&html);
    };
    // 6 members × 16 units × 500 steps = 48,000 values a sequence: two fit in 100,000.
    let mut c = rnntrace();
    base(&mut c);
    let (code, _, err) = run(c.env("RNNTRACE_REPORT_MAX_VALUES", "100000"));
    assert_eq!(code, 0, "{err}");
    let t = npz(&trace);
    let page = Page::open(&html);
    let notes = page.js("document.getElementById('notes').textContent");
    let notes = notes.as_str().unwrap();
    assert!(
        notes.contains("Left out 18 of 20 sequences (2..20)") && notes.contains("--sequences"),
        "{notes}"
    );
    assert_eq!(
        page.js("rnntrace.meta.sequences"),
        serde_json::json!([0, 1])
    );
    assert_eq!(page.value("lstm", "state/h", 5, 10, 0), Value::Null);
    drop(page);
    // Narrowed: sequences 5 and 6, steps 100..300.
    let mut c = rnntrace();
    base(&mut c);
    let (code, _, err) = run(c.env("RNNTRACE_REPORT_MAX_VALUES", "100000").args([
        "--sequences",
        "5..7",
        "--report-steps",
        "100..300",
    ]));
    assert_eq!(code, 0, "{err}");
    let page = Page::open(&html);
    assert_eq!(page.js("document.getElementById('notes').hidden"), true);
    let (s, v) = &t["state/c"];
    assert_eq!(
        page.value("lstm", "state/c", 6, 150, 3).as_f64().unwrap(),
        v[(150 * s[1] + 6) * s[2] + 3]
    );
    assert_eq!(page.value("lstm", "state/c", 6, 50, 3), Value::Null);
    assert_eq!(
        page.js("rnntrace.view()"),
        serde_json::json!({"from": 100, "to": 300})
    );
    page.js("rnntrace.setView(100, 160)");
    let (val, text) = page.hover_cell(0, "state/c", 130, 9);
    assert_eq!(val, v[(130 * s[1] + 5) * s[2] + 9], "{text}");
    drop(page);
    // One sequence too long for the limit: its steps are cut, and the note names --report-steps.
    let mut c = rnntrace();
    base(&mut c);
    let (code, _, err) = run(c.env("RNNTRACE_REPORT_MAX_VALUES", "9600"));
    assert_eq!(code, 0, "{err}");
    let page = Page::open(&html);
    let notes = page.js("document.getElementById('notes').textContent");
    assert!(
        notes
            .as_str()
            .unwrap()
            .contains("Left out processing steps 100..500")
            && notes.as_str().unwrap().contains("--report-steps"),
        "{notes}"
    );
    page.assert_clean();
}

#[test]
fn report_outputs_are_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = case_dir("lstm_masking_value");
    let cases: [(&[&str], &str); 4] = [
        (&["--report", "r.png"], "must end in .html"),
        (&["--report", "input.npy"], "is an input"),
        (
            &["--report", "same.html", "--trace", "same.html"],
            "are the same file",
        ),
        (&["--report", "missing/r.html"], "does not exist"),
    ];
    for (args, want) in cases {
        let mut c = rnntrace();
        let (code, _, err) = run(c
            .current_dir(tmp.path())
            .args(["lstm", "-q", "--weights"])
            .arg(dir.join("weights.json"))
            .arg("--input")
            .arg(dir.join("input.npy"))
            .args(args.iter().map(|a| {
                if *a == "input.npy" {
                    dir.join("input.npy").display().to_string()
                } else {
                    a.to_string()
                }
            })));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The same file for --report and a chart.
    let (code, _, err) = run(rnntrace()
        .current_dir(tmp.path())
        .args(["lstm", "-q", "--weights"])
        .arg(dir.join("weights.json"))
        .arg("--input")
        .arg(dir.join("input.npy"))
        .args(["--report", "x.html", "--plot", "./x.html"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--plot"), "{err}");
    // Nothing was written.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // --report-steps needs a range.
    let (code, _, err) = run(rnntrace()
        .current_dir(tmp.path())
        .args(["lstm", "-q", "--weights"])
        .arg(dir.join("weights.json"))
        .arg("--input")
        .arg(dir.join("input.npy"))
        .args(["--report", "x.html", "--report-steps", "9..3"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--report-steps"), "{err}");
}

#[test]
fn long_runs_aggregate_columns_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, x) = synthetic(tmp.path(), 3, 5, 2, 4000);
    let html = tmp.path().join("long.html");
    let trace = tmp.path().join("long.npz");
    let (code, _, err) = run(rnntrace()
        .args(["gru", "-q", "--weights"])
        .arg(&w)
        .arg("--input")
        .arg(&x)
        .arg("--trace")
        .arg(&trace)
        .arg("--report")
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let t = npz(&trace);
    let page = Page::open(&html);
    assert_eq!(
        page.js("rnntrace.view()"),
        serde_json::json!({"from": 0, "to": 4000})
    );
    let text = page.js("document.getElementById('view-text').textContent");
    assert!(
        text.as_str()
            .unwrap()
            .contains("each column is the mean of"),
        "{text}"
    );
    assert!(page.colours(0, "gates/z") > 20);
    // The tooltip of a wide column gives the mean of exactly the steps it covers.
    let (px, py) = page.cell_point(0, "state/h", 2100, 3);
    page.hover(px, py);
    let tip = page.js(
        "({mean: document.querySelector('#tooltip .tt-agg')?.textContent, from: document.querySelector('#tooltip .tt-from')?.textContent,
           to: document.querySelector('#tooltip .tt-to')?.textContent, unit: document.querySelector('#tooltip .tt-unit')?.textContent})",
    );
    let get = |k: &str| {
        tip[k]
            .as_str()
            .unwrap_or_else(|| panic!("{tip}"))
            .to_string()
    };
    let (from, to): (usize, usize) = (get("from").parse().unwrap(), get("to").parse().unwrap());
    assert!(from <= 2100 && 2100 <= to && to > from, "{tip}");
    assert_eq!(get("unit"), "3");
    let (s, h) = &t["state/h"];
    let want = (from..=to).map(|k| h[(k * s[1]) * s[2] + 3]).sum::<f64>() / (to - from + 1) as f64;
    let shown: f64 = get("mean").parse().unwrap();
    assert!(
        (shown - want).abs() <= 1e-6 * want.abs().max(1e-3),
        "{shown} vs {want}"
    );
    // Zooming in with the keyboard reaches single steps.
    for _ in 0..6 {
        page.tab.press_key("+").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let v = page.js("rnntrace.view()");
    assert!(
        v["to"].as_u64().unwrap() - v["from"].as_u64().unwrap() <= 4000 / 64 + 1,
        "{v}"
    );
    let text = page.js("document.getElementById('view-text').textContent");
    assert!(!text.as_str().unwrap().contains("mean of"), "{text}");
    page.assert_clean();
}

/// The sections no command fills yet (`explain`'s attributions and analyses, tokens), built through the
/// library the way a producer would: they render, the unit list sorts by attribution, tokens show.
#[test]
fn explain_and_token_sections_render_when_present() {
    use rnntrace::cell::Activation;
    use rnntrace::engine::{LayerInput, LayerSpec, run_layer};
    use rnntrace::render::report::{self, Analysis, Attribution, Checks, Explain, Options};
    use rnntrace::weights::keras::{ResetAfter, from_arrays};
    use rnntrace::weights::{CellKind, load_arrays};
    let dir = case_dir("lstm_masking_value");
    let arrays = load_arrays(
        &dir.join("weights.json"),
        &["kernel", "recurrent_kernel", "bias"],
    )
    .unwrap();
    let weights = from_arrays(CellKind::Lstm, &arrays, ResetAfter::Auto)
        .unwrap()
        .cast::<f32>();
    let (shape, data) = crate::npy(&dir.join("input.npy"));
    let x = ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), data)
        .unwrap()
        .mapv(|v| v as f32);
    let spec = LayerSpec {
        name: "lstm".into(),
        activation: Activation::Tanh,
        recurrent_activation: Activation::Sigmoid,
        go_backwards: false,
        carry_state: false,
    };
    let layer = run_layer(
        &weights,
        &spec,
        LayerInput {
            x: x.view().into(),
            mask: None,
            h0: None,
            c0: None,
        },
    );
    let units = layer.units;
    let trace = rnntrace::trace::Trace {
        predictions: layer.last_output.clone(),
        layers: vec![layer],
        dense_activation: None,
    };
    let mut data = report::build(&trace, &Checks::default(), &Options::default());
    // Attribution rises with the unit index except unit 1, the largest.
    let attr: Vec<Option<f64>> = (0..units)
        .map(|u| Some(if u == 1 { 10.0 } else { u as f64 }))
        .collect();
    data.explain = Some(Explain {
        attributions: vec![Attribution {
            layer: "lstm".into(),
            values: attr,
        }],
        analyses: vec![Analysis {
            title: "Units that track <feature 0>".into(),
            columns: vec!["unit".into(), "correlation".into()],
            rows: vec![vec!["1".into(), "0.93".into()]],
        }],
        inputs: Vec::new(),
        initial_state: None,
    });
    data.tokens = Some(
        (0..shape[0])
            .map(|b| (0..shape[1]).map(|r| format!("t{b}_{r}")).collect())
            .collect(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("explain.html");
    report::html::write_file(&data, &html).unwrap();
    let page = Page::open(&html);
    assert_eq!(
        page.js("document.getElementById('explain-panel').hidden"),
        false
    );
    let text = page.js("document.getElementById('explain').innerText");
    assert!(
        text.as_str()
            .unwrap()
            .contains("Units that track <feature 0>")
            && text.as_str().unwrap().contains("0.93"),
        "{text}"
    );
    page.js("document.querySelector('#sort-buttons button[data-sort=attribution]').click()");
    let order: Vec<usize> = serde_json::from_value(page.js("rnntrace.unitOrder(0)")).unwrap();
    let mut want: Vec<usize> = (0..units).rev().filter(|&u| u != 1).collect();
    want.insert(0, 1);
    assert_eq!(order, want);
    // Tokens: a track above the features, and the token of the hovered step in the tooltip.
    assert_eq!(
        page.js("document.querySelectorAll('canvas.tokens').length"),
        1
    );
    page.js("rnntrace.setSequence(1)");
    page.js(&format!("rnntrace.setView(0, {})", shape[1]));
    let (_, tip) = page.hover_cell(0, "state/h", 2, 0);
    assert!(tip.contains("t1_2"), "{tip}");
    page.assert_clean();
}

#[test]
fn report_of_a_run_that_recorded_only_states_or_nothing_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = case_dir("lstm_masking_value");
    for (record, members) in [
        (
            "states",
            serde_json::json!(["state/h", "state/c", "output"]),
        ),
        ("none", serde_json::json!([])),
    ] {
        let html = tmp.path().join(format!("{record}.html"));
        let (code, _, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                "lstm",
                "-q",
                "--weights",
                "weights.json",
                "--input",
                "input.npy",
                "--mask-value",
                "0",
                "--record",
                record,
                "--report",
            ])
            .arg(&html));
        assert_eq!(code, 0, "{err}");
        let page = Page::open(&html);
        assert_eq!(
            page.js("rnntrace.meta.layers[0].members.map(m => m.name)"),
            members,
            "--record {record}"
        );
        if record == "none" {
            let text = page.js("document.getElementById('maps').innerText");
            assert!(
                text.as_str()
                    .unwrap()
                    .contains("Nothing per step was recorded"),
                "{text}"
            );
            assert_eq!(
                page.js("(document.querySelector('#sort-buttons button[data-sort=saturation]').click(), rnntrace.unitOrder(0).length)"),
                4
            );
        } else {
            assert!(page.colours(0, "state/c") > 5);
        }
        page.js("document.getElementById('sel-find').click()");
        page.assert_clean();
    }
}

/// A PyTorch LSTM with `proj_size`: `h` and the output are as wide as the projection (2), the gates and `c`
/// as the state (6). The page shows them as two layers, and its numbers are PyTorch's.
#[test]
fn projected_lstm_report_shows_h_at_the_projections_width() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("torch_files");
    let html = tmp.path().join("proj.html");
    let trace = tmp.path().join("t.npz");
    // With a streamed .npz trace too: the report's trace is then recorded apart.
    let (code, _, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "lstm",
            "-q",
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
            "--trace",
        ])
        .arg(&trace)
        .arg("--report")
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let page = Page::open(&html);
    assert_eq!(
        page.js("rnntrace.meta.layers.map(l => [l.name, l.units, l.members.map(m => m.name + ':' + m.data.shape.join('x'))])"),
        serde_json::json!([
            ["lstm", 6, ["gates/i:3x5x6", "gates/f:3x5x6", "gates/c:3x5x6", "gates/o:3x5x6", "state/c:3x5x6"]],
            ["lstm/projection", 2, ["state/h:3x5x2"]]
        ])
    );
    // PyTorch's output (batch_first, (3, 5, 2)) is h at every step.
    let (shape, want) = crate::npy(&dir.join("lstm_proj.out.npy"));
    assert_eq!(shape, vec![3, 5, 2]);
    for b in 0..3 {
        for t in 0..5 {
            for j in 0..2 {
                let ours = page
                    .value("lstm/projection", "state/h", b, t, j)
                    .as_f64()
                    .unwrap();
                let d = (ours - want[(b * 5 + t) * 2 + j]).abs();
                assert!(d <= 1e-5, "h[{b},{t},{j}] off by {d}");
            }
        }
    }
    // c matches the .npz trace of the same run, exactly (a float32 run; compared as float32, since the
    // JSON that carries the page's numbers to the test may be a unit off in the last f64 place).
    let z = npz(&trace);
    let (cs, c) = &z["state/c"];
    assert_eq!(cs, &vec![5, 3, 6]);
    for b in 0..3 {
        for t in 0..5 {
            for u in 0..6 {
                let ours = page.value("lstm", "state/c", b, t, u).as_f64().unwrap();
                assert_eq!(ours as f32, c[(t * 3 + b) * 6 + u] as f32, "c[{b},{t},{u}]");
            }
        }
    }
    for (li, m) in [(0, "gates/f"), (0, "state/c"), (1, "state/h")] {
        assert!(page.colours(li, m) > 2, "{m} not drawn");
    }
    assert_eq!(
        page.js("document.getElementById('verdict').textContent"),
        "matches the framework"
    );
    page.assert_clean();
}

/// `explain --report`: the explained run's trace (every gate, checked against Keras's saturation shares),
/// the explain section drawn, and the unit list sorted by each unit's share of the output's logit.
#[test]
fn explain_report_holds_the_trace_attributions_and_unit_analyses() {
    let dir = fixtures().join("explain").join("lstm_backwards_mask");
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("r.html");
    let save = tmp.path().join("e.npz");
    let (code, _, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "explain",
            "-q",
            "--cell",
            "lstm",
            "--weights",
            "weights.npz",
            "--go-backwards",
            "--mask",
            "mask.npy",
            "--dense",
            "dense.npz",
            "--input",
            "input.npy",
            "--save",
        ])
        .arg(&save)
        .arg("--report")
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let saved = npz(&save);
    let page = Page::open(&html);
    assert_eq!(
        page.js("document.getElementById('explain-panel').hidden"),
        false
    );
    let text = page.js("document.getElementById('explain').innerText");
    let text = text.as_str().unwrap();
    for want in [
        "Attribution per step, sequence 0",
        "Attribution per feature",
        "IG completeness",
        "saturation, timescales, dead",
        "Unit attribution",
    ] {
        assert!(text.contains(want), "{want} missing from: {text}");
    }
    assert_ne!(page.pixels(0, "gates/i"), 0, "gates/i not drawn");
    // Every gate value the report holds, against the saturation shares Keras's gates gave (unmasked steps,
    // processed backwards: step s reads row T−1−s).
    let (_, mask) = crate::npy(&dir.join("mask.npy"));
    let (xs, _) = crate::npy(&dir.join("input.npy"));
    let (b, t) = (xs[0], xs[1]);
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("saturation.json")).unwrap())
            .unwrap();
    let units = 4;
    for gate in ["i", "f", "o"] {
        let vals: Vec<Vec<f64>> = serde_json::from_value(page.js(&format!(
            "(() => {{ const o = []; for (let u = 0; u < {units}; u++) {{ const r = [];
               for (let b = 0; b < {b}; b++) for (let s = 0; s < {t}; s++)
                 if ({mask:?}[b * {t} + {t} - 1 - s] !== 0) r.push(rnntrace.value(0, 'gates/{gate}', b, s, u));
               o.push(r); }} return o; }})()"
        )))
        .unwrap();
        for (u, v) in vals.iter().enumerate() {
            let n = v.len() as f64;
            let left = v.iter().filter(|&&g| g < 0.1).count() as f64 / n;
            let right = v.iter().filter(|&&g| g > 0.9).count() as f64 / n;
            assert_eq!(
                left,
                golden[gate]["left"][u].as_f64().unwrap(),
                "{gate} unit {u}"
            );
            assert_eq!(
                right,
                golden[gate]["right"][u].as_f64().unwrap(),
                "{gate} unit {u}"
            );
        }
    }
    // The prediction the report shows is the one --save holds.
    let ours: Vec<Option<f64>> =
        serde_json::from_value(page.js(
            "JSON.parse(document.getElementById('rnntrace-meta').textContent).predictions.ours",
        ))
        .unwrap();
    let (_, saved_pred) = &saved["prediction"];
    assert_eq!(ours.len(), saved_pred.len());
    for (o, s) in ours.iter().zip(saved_pred) {
        // Both float32, from the same forward pass.
        assert!((o.unwrap() - s).abs() <= 1e-6, "{o:?} vs {s}");
    }
    // Attribution of unit u: mean over sequences of h_T[u]·K[u, 0], h_T from the report's own state/h.
    let dense = npz(&dir.join("dense.npz"));
    let k = &dense["kernel"].1;
    let attr: Vec<f64> = (0..units)
        .map(|u| {
            (0..b)
                .map(|bi| {
                    page.js(&format!(
                        "rnntrace.value(0, 'state/h', {bi}, {}, {u})",
                        t - 1
                    ))
                    .as_f64()
                    .unwrap()
                        * k[u]
                })
                .sum::<f64>()
                / b as f64
        })
        .collect();
    let before: Vec<usize> = serde_json::from_value(page.js("rnntrace.unitOrder(0)")).unwrap();
    page.js("document.querySelector('#sort-buttons button[data-sort=attribution]').click()");
    let order: Vec<usize> = serde_json::from_value(page.js("rnntrace.unitOrder(0)")).unwrap();
    let mut want: Vec<usize> = (0..units).collect();
    want.sort_by(|&a, &b| attr[b].total_cmp(&attr[a]));
    assert_eq!(order, want, "attributions {attr:?}");
    assert_ne!(
        order, before,
        "sorting by attribution did not reorder the units"
    );
    assert_eq!(
        page.js("document.querySelector('#unit-table tbody tr').dataset.unit"),
        order[0].to_string()
    );
    page.assert_clean();
}

/// `--tokens vocab.json` on a run of an Embedding model: the input track shows each step's token, from a
/// Keras `word_index` object (index 0, padding, has no entry and shows as `#0`) or a plain list.
#[test]
fn tokens_show_each_steps_token_and_bad_vocabularies_are_refused() {
    let dir = fixtures().join("real_models").join("embedding_lstm");
    let (shape, ids) = crate::npy(&dir.join("input.npy"));
    let t = shape[1];
    let tmp = tempfile::tempdir().unwrap();
    let word = |i: usize| format!("<w{i}>");
    let object: serde_json::Map<String, Value> =
        (1..20).map(|i| (word(i), Value::from(i))).collect();
    let list: Vec<String> = (0..20).map(word).collect();
    for (name, vocab) in [
        ("object", Value::Object(object)),
        ("list", Value::from(list)),
    ] {
        let vpath = tmp.path().join(format!("{name}.json"));
        std::fs::write(&vpath, vocab.to_string()).unwrap();
        let html = tmp.path().join(format!("{name}.html"));
        let (code, _, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                "run",
                "-q",
                "--model",
                "model.keras",
                "--input",
                "input.npy",
                "--tokens",
            ])
            .arg(&vpath)
            .arg("--report")
            .arg(&html));
        assert_eq!(code, 0, "{err}");
        let page = Page::open(&html);
        assert_eq!(
            page.js("document.querySelectorAll('canvas.tokens').length"),
            1
        );
        page.js("rnntrace.setSequence(1)");
        page.js(&format!("rnntrace.setView(0, {t})"));
        let id = ids[t + 2] as usize;
        let want = if id == 0 && name == "object" {
            "#0".to_string()
        } else {
            word(id)
        };
        let (_, tip) = page.hover_cell(0, "state/h", 2, 0);
        assert!(
            tip.contains(&want),
            "{name}: step 2 of sequence 1 is id {id}: {tip}"
        );
        page.assert_clean();
    }
    // A vocabulary that is not one: exit 2, one line naming the file, no report.
    for (name, text) in [
        ("bad.json", "{\"a\": -1}"),
        ("num.json", "42"),
        ("broken.json", "[\"a\", "),
    ] {
        let vpath = tmp.path().join(name);
        std::fs::write(&vpath, text).unwrap();
        let html = tmp.path().join("bad.html");
        let (code, _, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                "run",
                "-q",
                "--model",
                "model.keras",
                "--input",
                "input.npy",
                "--tokens",
            ])
            .arg(&vpath)
            .arg("--report")
            .arg(&html));
        assert_eq!(code, 2, "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(name) && err.contains("expected"), "{err}");
        assert!(!html.exists());
    }
}

/// `explain --report` on a model with several inputs (a token input and static features, each with its
/// own baseline): every input is reachable through the explain section's input selector, each section
/// shows that input's own numbers (its heat map's embedded values, its top contributions and per-step
/// table equal to `--format json`'s for the same run; the token input's steps labelled by token), the
/// heat map is drawn, it follows the report's sequence picker, and the page stays clean.
#[test]
fn explain_report_shows_every_input() {
    let dir = fixtures()
        .join("explain_models_baselines")
        .join("tokens_static_file_mean_baseline");
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("r.html");
    let args = [
        "explain",
        "--model",
        "model.keras",
        "--input",
        "tokens=tokens.npy",
        "--input",
        "static=static.npy",
        "--output",
        "2",
        "--baseline",
        "mean",
        "--baseline",
        "tokens=baseline_tokens.npy",
        "--top",
        "3",
    ];
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args(args)
        .args(["--format", "json", "--report"])
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let (_, ids) = crate::npy(&dir.join("tokens.npy"));
    let t = ids.len() / 3;
    let page = Page::open(&html);
    assert_eq!(
        page.js("rnntrace.explainInputs()"),
        serde_json::json!(["tokens", "static"])
    );
    let sci = |x: f64| format!("{x:.6e}");
    for (k, (name, feats)) in [("tokens", 1usize), ("static", 5usize)].iter().enumerate() {
        // Through the page's own control, as a user would.
        page.js(&format!(
            "(() => {{ const s = document.getElementById('explain-input'); s.value = '{k}'; s.dispatchEvent(new Event('change')); return 0; }})()"
        ));
        assert_eq!(page.js("rnntrace.explainInput()"), *name);
        let shown = page.js(
            "Array.from(document.querySelectorAll('.explain-input')).filter((s) => !s.hidden).map((s) => s.dataset.input)",
        );
        assert_eq!(shown, serde_json::json!([name]), "one section at a time");
        let ig = &v["attributions"][name]["integrated_gradients"];
        // The embedded numbers: every sequence, step and feature, equal to the JSON output's.
        for b in 0..3 {
            for s in 0..(if *name == "tokens" { t } else { 1 }) {
                for f in 0..*feats {
                    let want = match *name {
                        "tokens" => ig[b][s].as_f64().unwrap(),
                        _ => ig[b][f].as_f64().unwrap(),
                    };
                    let got = page.js(&format!(
                        "rnntrace.attribution('{name}', 'integrated_gradients', {b}, {s}, {f})"
                    ));
                    assert!(
                        (got.as_f64().unwrap() - want).abs() <= 1e-7 * want.abs().max(1e-30),
                        "{name} {b} {s} {f}: {got} vs {want}"
                    );
                }
            }
        }
        let text = page.js(&format!(
            "document.querySelector('.explain-input[data-input=\"{name}\"]').innerText"
        ));
        let text = text.as_str().unwrap();
        // The largest |IG| of sequence 0 heads the top contributions; the per-step sums are there.
        // Sequence 0: a token input's per step, a flat input's per feature.
        let row0: Vec<f64> = ig[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let top = row0
            .iter()
            .copied()
            .fold(0.0, |m: f64, x| if x.abs() > m.abs() { x } else { m });
        assert!(
            text.contains("Top 3 contributions (integrated_gradients), sequence 0"),
            "{text}"
        );
        assert!(text.contains(&sci(top)), "{name}: top {top} not in {text}");
        if *name == "tokens" {
            // Steps labelled by their token id (no --tokens vocabulary given).
            assert!(text.contains(&format!("0 · #{}", ids[0])), "{text}");
            assert!(text.contains(&sci(row0[1])), "{text}");
        } else {
            assert!(text.contains(&sci(row0.iter().sum::<f64>())), "{text}");
        }
        // The heat map is drawn (non-background pixels).
        let painted = page.js(&format!(
            "(() => {{ rnntrace.drawEverything(); const c = document.querySelector('.explain-input[data-input=\"{name}\"] canvas.explain-heat');
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
               for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }})()"
        ));
        assert!(
            painted.as_u64().unwrap() > 100,
            "{name}: heat map not drawn"
        );
    }
    // The sequence picker moves the heat map's legend to that sequence.
    page.js("(() => { rnntrace.setSequence(2); return 0; })()");
    let legend = page.js(
        "document.querySelector('.explain-input[data-input=\"static\"] .explain-legend').textContent",
    );
    assert!(legend.as_str().unwrap().contains("sequence 2"), "{legend}");
    page.assert_clean();
}

/// Regression: `run --report` (and `explain --report`) panicked (`index < dim`) when a later layer ran more
/// steps than the first one (an encoder–decoder's inputs of 5 and 4 steps), and silently cut a longer later
/// layer to the first one's steps. The page's step axis is now the longest layer's; a shorter layer shows
/// every one of its own steps, blank after its end, with a note.
#[test]
fn report_of_inputs_of_different_lengths_panicked() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["encoder_decoder", "luong_dot_attention"] {
        let dir = fixtures().join("real_models").join(case);
        let html = tmp.path().join(format!("{case}.html"));
        let npz_path = tmp.path().join(format!("{case}.npz"));
        let (code, _, err) = run(rnntrace()
            .current_dir(&dir)
            .args([
                "run",
                "-q",
                "--model",
                "model.keras",
                "--input",
                "encoder_in=input_encoder_in.npy",
                "--input",
                "decoder_in=input_decoder_in.npy",
                "--trace",
            ])
            .arg(&npz_path)
            .arg("--report")
            .arg(&html));
        assert_eq!(code, 0, "{case}: {err}");
        let trace = npz(&npz_path);
        let page = Page::open(&html);
        let names: Vec<String> =
            serde_json::from_value(page.js("rnntrace.meta.layers.map(l => l.name)")).unwrap();
        let longest = names
            .iter()
            .map(|n| trace[&format!("{n}/state/h")].0[0])
            .max()
            .unwrap();
        assert_eq!(page.js("rnntrace.meta.total_steps"), longest, "{case}");
        let mut shorter = 0;
        for name in &names {
            let (shape, h) = &trace[&format!("{name}/state/h")];
            let (t, b, u) = (shape[0], shape[1], shape[2]);
            for s in 0..b {
                for k in 0..t {
                    for j in 0..u {
                        let ours = page.value(name, "state/h", s, k, j).as_f64().unwrap();
                        let want = h[(k * b + s) * u + j];
                        assert!((ours - want).abs() <= 1e-6, "{case} {name} h[{s},{k},{j}]");
                    }
                }
            }
            if t < longest {
                shorter += 1;
                let notes = page.js("document.getElementById('notes').textContent");
                assert!(
                    notes
                        .as_str()
                        .unwrap()
                        .contains(&format!("Layer '{name}' runs {t} steps")),
                    "{case}: {notes}"
                );
            }
        }
        assert!(
            shorter > 0,
            "{case}: the fixture's layers all run the same steps"
        );
        page.assert_clean();
    }
}

/// A layer's initial-state terms: name, [|∂y/∂h0|, max |∂y/∂h0ᵢ|], the same of c0.
type StateRow = (String, [f64; 2], Option<[f64; 2]>);

/// The initial-state terms of `--format json` (`initial_state_gradients`) for sequence `b`, as the report
/// shows them: per layer, |∂y/∂h0| (L2 over units), max |∂y/∂h0ᵢ|, and the same of c0 (None: no c).
fn state_terms(v: &Value, b: usize) -> Vec<StateRow> {
    let stats = |a: &Value| -> [f64; 2] {
        let row: Vec<f64> = a[b]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        [
            row.iter().map(|x| x * x).sum::<f64>().sqrt(),
            row.iter().fold(0.0, |m: f64, x| m.max(x.abs())),
        ]
    };
    v["initial_state_gradients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["layer"].as_str().unwrap().to_string(),
                stats(&e["h"]),
                (!e["c"].is_null()).then(|| stats(&e["c"])),
            )
        })
        .collect()
}

/// A report table's rows (cells as text) against [`state_terms`]: the same layers in the same order, each
/// number within the 7 significant digits the page prints.
fn assert_state_rows(rows: &[Vec<String>], want: &[StateRow], what: &str) {
    assert_eq!(rows.len(), want.len(), "{what}: {rows:?}");
    let close = |cell: &str, w: f64| {
        let got: f64 = cell.parse().unwrap_or_else(|_| panic!("{what}: {cell:?}"));
        assert!(
            (got - w).abs() <= 1e-6 * w.abs().max(1e-30),
            "{what}: {got} vs {w}"
        );
    };
    let lstm = want.iter().any(|(_, _, c)| c.is_some());
    for (row, (layer, h, c)) in rows.iter().zip(want) {
        assert_eq!(&row[0], layer, "{what}");
        assert_eq!(row.len(), if lstm { 5 } else { 3 }, "{what}: {row:?}");
        close(&row[1], h[0]);
        close(&row[2], h[1]);
        match c {
            Some(c) => {
                close(&row[3], c[0]);
                close(&row[4], c[1]);
            }
            None if lstm => assert_eq!(&row[3..], ["—", "—"], "{what}: {layer} has no c"),
            None => {}
        }
    }
    assert!(
        want.iter().any(|(_, h, _)| h[0] > 0.0),
        "{what}: all-zero terms would pass vacuously"
    );
}

/// The explain section shows the initial-state terms, as `--format json` of the same run has them: with
/// several inputs once, after the inputs' blocks, for the page's selected sequence (following the sequence
/// picker like the inputs' heat maps); with one input as a table of `--sequence` among the others.
#[test]
fn explain_report_shows_initial_state_terms() {
    let tmp = tempfile::tempdir().unwrap();
    // Two inputs: a shared LSTM (two calls) feeding stacked LSTM and GRU cells (the GRU has no c).
    let dir = fixtures()
        .join("explain_models")
        .join("h0_shared_lstm_cells_linked");
    let html = tmp.path().join("two.html");
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "explain",
            "--model",
            "model.keras",
            "--input",
            "a=a.npy",
            "--input",
            "b=b.npy",
        ])
        .args(["--methods", "gradient", "--format", "json", "--report"])
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let batch = v["prediction"].as_array().unwrap().len();
    let page = Page::open(&html);
    // Once, after every input's block, none inside them.
    assert_eq!(
        page.js("document.querySelectorAll('#explain-initial-state').length"),
        1
    );
    assert_eq!(
        page.js(
            "Array.from(document.querySelectorAll('.explain-input')).every((s) =>
               s.compareDocumentPosition(document.getElementById('explain-initial-state')) & Node.DOCUMENT_POSITION_FOLLOWING)"
        ),
        true
    );
    assert_eq!(
        page.js(
            "Array.from(document.querySelectorAll('.explain-input')).some((s) => s.textContent.includes('Initial state'))"
        ),
        false
    );
    let read = "(() => { const s = document.getElementById('explain-initial-state');
        return { title: s.querySelector('h3').textContent,
                 head: Array.from(s.querySelectorAll('th')).map((c) => c.textContent),
                 rows: Array.from(s.querySelectorAll('tbody tr')).map((r) => Array.from(r.cells).map((c) => c.textContent)) }; })()";
    for b in (0..batch).rev() {
        page.js(&format!(
            "(() => {{ rnntrace.setSequence({b}); return 0; }})()"
        ));
        let shown = page.js(read);
        let title = shown["title"].as_str().unwrap();
        assert!(title.ends_with(&format!("sequence {b}")), "{title}");
        assert!(title.contains("output 0"), "{title}");
        assert_eq!(shown["head"][1], "|∂y/∂h0|");
        let rows: Vec<Vec<String>> = serde_json::from_value(shown["rows"].clone()).unwrap();
        assert_state_rows(
            &rows,
            &state_terms(&v, b),
            &format!("two inputs, sequence {b}"),
        );
    }
    page.assert_clean();
    drop(page); // one page at a time

    // One input (Conv1D → LSTM → GRU → Dense): a table of --sequence 2, before the unit tables.
    let dir = fixtures()
        .join("explain_models")
        .join("h0_conv_lstm_gru_dense");
    let html = tmp.path().join("one.html");
    let (code, out, err) = run(rnntrace()
        .current_dir(&dir)
        .args([
            "explain",
            "--model",
            "model.keras",
            "--input",
            "x.npy",
            "--sequence",
            "2",
        ])
        .args([
            "--methods",
            "gradient,integrated-gradients",
            "--format",
            "json",
            "--report",
        ])
        .arg(&html));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let page = Page::open(&html);
    let tables = page.js(
        "Array.from(document.querySelectorAll('#explain h3')).map((h) => {
           const t = h.nextElementSibling.tagName === 'TABLE' ? h.nextElementSibling : h.nextElementSibling.querySelector('table');
           return { title: h.textContent, rows: Array.from(t.querySelectorAll('tbody tr')).map((r) => Array.from(r.cells).map((c) => c.textContent)) }; })",
    );
    let tables = tables.as_array().unwrap();
    let at = tables
        .iter()
        .position(|t| {
            t["title"]
                .as_str()
                .unwrap()
                .starts_with("Initial state terms")
        })
        .unwrap_or_else(|| panic!("no initial state table: {tables:?}"));
    assert!(
        tables[at]["title"]
            .as_str()
            .unwrap()
            .ends_with("sequence 2"),
        "{}",
        tables[at]["title"]
    );
    let units = tables
        .iter()
        .position(|t| t["title"].as_str().unwrap().contains("saturation"))
        .unwrap();
    assert!(at < units, "initial state after the unit tables");
    let rows: Vec<Vec<String>> = serde_json::from_value(tables[at]["rows"].clone()).unwrap();
    assert_state_rows(&rows, &state_terms(&v, 2), "one input, sequence 2");
    assert_eq!(
        page.js("document.querySelectorAll('#explain-initial-state').length"),
        0
    );
    page.assert_clean();
}
