/*!
Axes: an f64 axis whose ticks are exactly the given values, and the tick maths (integer and "nice"
ticks, tick labels); plus the chart heading every chart draws.
*/

#[allow(unused_imports)]
use super::*;

pub(super) type Coords = Cartesian2d<TickAxis, TickAxis>;

/// A linear f64 axis whose ticks (and grid lines) are exactly the given values.
#[derive(Clone)]
pub(super) struct TickAxis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) ticks: Vec<f64>,
}

impl TickAxis {
    pub(super) fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> TickAxis {
        TickAxis { lo, hi, ticks }
    }
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if !(span.is_finite() && span != 0.0) {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.lo) / span;
        let px = limit.0 as f64 + (limit.1 - limit.0) as f64 * t;
        // Far-off values saturate rather than wrap; NaN maps to 0 (never drawn: callers skip non-finite).
        px.round().clamp(-1e7, 1e7) as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}
pub(crate) type DrawResult = std::result::Result<(), String>;

// ── shared pieces ──

/// Draws the heading and sub-heading; returns the y below them.
pub(crate) fn heading<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    width: u32,
    title: &str,
    subtitle: &str,
) -> std::result::Result<i32, String> {
    let cx = width as i32 / 2;
    let centre = Pos::new(HPos::Center, VPos::Top);
    root.draw_text(title, &font(22.0).pos(centre), (cx, 12))
        .map_err(err)?;
    let mut y = 50;
    if !subtitle.is_empty() {
        root.draw_text(subtitle, &font(14.0).color(&DIM).pos(centre), (cx, y))
            .map_err(err)?;
        y += 24;
    }
    Ok(y)
}

/// Integer ticks in [lo, hi], at most about `max` of them, on a 1-2-5 step.
pub(super) fn int_ticks(lo: i64, hi: i64, max: usize) -> Vec<f64> {
    if hi < lo {
        return Vec::new();
    }
    let span = (hi - lo) as f64;
    let max = max.max(2) as f64;
    let mut step = 1i64;
    'outer: for mag in [1i64, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000] {
        for m in [1, 2, 5] {
            step = m * mag;
            if span / step as f64 <= max - 1.0 {
                break 'outer;
            }
        }
    }
    let first = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
    let mut v = Vec::new();
    let mut x = first;
    while x <= hi && v.len() < 1000 {
        v.push(x as f64);
        x += step;
    }
    v
}

/// "Nice" ticks covering [lo, hi]; returns the ticks and their step.
pub(super) fn nice_ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let (ticks, step) = nice_ticks_once(lo, hi, max);
    if ticks.len() < 3 && max < 40 {
        return nice_ticks_once(lo, hi, max * 2);
    }
    (ticks, step)
}

pub(super) fn nice_ticks_once(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return (vec![lo], 1.0);
    }
    let raw = span / max.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    let mut v = Vec::new();
    let mut i = 0.0;
    while v.len() < 100 {
        let x = (first + i) * step;
        if x > hi + step * 1e-9 {
            break;
        }
        v.push(if x.abs() < step * 1e-9 { 0.0 } else { x });
        i += 1.0;
    }
    (v, step)
}

/// Formats a tick value given the tick step.
pub(super) fn tick_label(v: f64, step: f64, max_abs: f64) -> String {
    if max_abs >= 1e6 || (step < 1e-4 && max_abs < 1e-2) || (step < 1e-6) {
        if v == 0.0 {
            return "0".into();
        }
        let digits = (max_abs.log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
        return format!("{v:.digits$e}");
    }
    let decimals = (-(step.log10().floor())).clamp(0.0, 12.0) as usize;
    let decimals = if step * 10f64.powi(decimals as i32) % 1.0 > 1e-6 {
        decimals + 1
    } else {
        decimals
    };
    format!("{v:.decimals$}")
}
