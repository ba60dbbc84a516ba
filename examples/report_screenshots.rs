//! Screenshots of an interactive report (`--report FILE.html`) in headless Chromium, for looking at the
//! page: light and dark, whole run and zoomed in with a tooltip, units selected and a Select result.
//!
//!     cargo run --example report_screenshots -- report.html OUT_DIR
//!
//! Uses Debian's /usr/bin/chromium (or RNNTRACE_CHROMIUM), like the browser tests.

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions};
use std::path::PathBuf;
use std::time::Duration;

/// headless_chrome's errors (anyhow's) and std's, boxed.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(html), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: report_screenshots REPORT.html OUT_DIR".into());
    };
    let chromium = std::env::var_os("RNNTRACE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .sandbox(false)
            .window_size(Some((1280, 900)))
            .build()?,
    )?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(120));
    let url = format!("file://{}", std::fs::canonicalize(html)?.display());
    let t = std::time::Instant::now();
    tab.navigate_to(&url)?.wait_until_navigated()?;
    while tab
        .evaluate("document.documentElement.dataset.ready === '1'", false)?
        .value
        != Some(serde_json::Value::Bool(true))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("loaded and drawn in {:.2} s", t.elapsed().as_secs_f64());
    // Redraw times (every map, the inputs and the charts) at the whole run and zoomed in.
    let ms = tab.evaluate(
        "(() => { const n = rnntrace.meta.steps.end - rnntrace.meta.steps.start, s = rnntrace.meta.steps.start, r = [];
           const med = (f) => { const v = []; for (let k = 0; k < 7; k++) v.push(f()); v.sort((a, b) => a - b); return v[3].toFixed(1); };
           for (const w of [n, n / 4, 200, 50]) { rnntrace.setView(s + n / 3, s + n / 3 + w); r.push(Math.round(w) + ' steps: ' + med(() => rnntrace.redrawMs()) + ' ms (moving ' + med(() => rnntrace.redrawMs(false, true)) + ' ms)'); }
           return r.join(', '); })()",
        false,
    )?;
    println!("redraw: {}", ms.value.unwrap_or_default());
    let shot = |name: &str| -> Result<()> {
        std::thread::sleep(Duration::from_millis(200));
        let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)?;
        let p = PathBuf::from(out).join(name);
        std::fs::write(&p, png)?;
        println!("{}", p.display());
        Ok(())
    };
    for theme in ["light", "dark"] {
        tab.evaluate(
            &format!("document.documentElement.setAttribute('data-theme', '{theme}'); rnntrace.setView(0, 1e9); window.scrollTo(0, 0)"),
            false,
        )?;
        tab.evaluate("rnntrace.sortUnits('unit', 1)", false)?;
        shot(&format!("{theme}-overview.png"))?;
        // Zoomed, sorted by variance, two units selected, hovering a cell of state/c (or the last map).
        let steps = tab
            .evaluate("rnntrace.meta.steps.end", false)?
            .value
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        tab.evaluate(
            &format!("rnntrace.setView(0, {}); rnntrace.sortUnits('variance', -1); rnntrace.selectUnits(0, rnntrace.unitOrder(0).slice(0, 2))", steps.min(80)),
            false,
        )?;
        let pt = tab.evaluate(
            "(() => { const cs = document.querySelectorAll('canvas.heatmap'); const c = cs[cs.length - 1]; c.scrollIntoView({block: 'center'}); const r = c.getBoundingClientRect(); return JSON.stringify([r.left + r.width * 0.4, r.top + r.height * 0.3]); })()",
            false,
        )?;
        let xy: Vec<f64> = serde_json::from_str(pt.value.unwrap().as_str().unwrap())?;
        tab.move_mouse_to_point(headless_chrome::browser::tab::point::Point {
            x: xy[0],
            y: xy[1],
        })?;
        shot(&format!("{theme}-zoomed-hover.png"))?;
        tab.evaluate(
            "(() => { const l = rnntrace.meta.layers[0]; const m = l.members.some(m => m.name === 'state/h') ? 'state/h' : l.members[0].name; rnntrace.findMatches(0, m, 0.1, 10, 20, 0.3); document.getElementById('select-panel').scrollIntoView(); })()",
            false,
        )?;
        shot(&format!("{theme}-select.png"))?;
    }
    Ok(())
}
