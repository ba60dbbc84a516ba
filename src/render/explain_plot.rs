/*!
`rnntrace explain`'s charts. Each is computed first as plain data ([`AttributionChart`], from the report;
the units chart reads [`UnitReport`]s directly), then drawn through [`super::plot`]'s renderer (PNG or
SVG by extension, embedded font, atomic write).

- `--plot`: the input series of one sequence on top, and below it, on the same time axis, the attribution
  heat map (time × features; blue negative, red positive, symmetric scale) of the most complete method
  asked (integrated gradients, else input × gradient, else gradient).
- `--plot-units`: Karpathy et al.'s saturation scatter (one dot per unit and gate: share of steps
  left-saturated < 0.1 on x, right-saturated > 0.9 on y) and a histogram of the units' timescales.
*/

use super::explain_table::ExplainReport;
use super::plot::{DIM, DrawResult, GRID, PALETTE, RDBU, colormap, err, font, heading, render};
use crate::cell::Real;
use crate::error::Result;
use crate::explain::UnitReport;
use plotters::chart::ChartBuilder;
use plotters::coord::Shift;
use plotters::drawing::DrawingArea;
use plotters::element::{Circle, Rectangle, Text};
use plotters::prelude::{DrawingBackend, LineSeries};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontTransform, RGBColor};
use std::path::Path;

/// What the attribution chart shows.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionChart {
    /// Heading.
    pub title: String,
    /// Method shown.
    pub method: String,
    /// Feature names.
    pub features: Vec<String>,
    /// Input values, (steps, features).
    pub input: Vec<Vec<f64>>,
    /// Attributions, (steps, features).
    pub values: Vec<Vec<f64>>,
    /// Masked steps.
    pub masked: Vec<bool>,
    /// The colour scale is ±this.
    pub scale: f64,
    /// Per step, the token it holds (token inputs): written in the upper panel instead of an input
    /// series.
    pub step_labels: Option<Vec<String>>,
}

/// The chart's data for the report's sequence.
pub fn attribution_chart<T: Real>(r: &ExplainReport<'_, T>) -> AttributionChart {
    let seq = r.sequence;
    let e = r.e;
    let (name, a) = [
        ("integrated gradients", &e.integrated_gradients),
        ("input × gradient", &e.input_x_gradient),
        ("gradient", &e.gradient),
    ]
    .into_iter()
    .find_map(|(n, a)| a.as_ref().map(|a| (n, Some(a))))
    .unwrap_or(("occlusion", None));
    let (_, t, f) = r.x.dim();
    let values: Vec<Vec<f64>> = match a {
        Some(a) => (0..t)
            .map(|ti| (0..f).map(|j| a[[seq, ti, j]].to_f()).collect())
            .collect(),
        // Occlusion only: one row per step, the same value across features.
        None => (0..t)
            .map(|ti| {
                let v = e.occlusion.as_ref().map_or(0.0, |o| o[[seq, ti]].to_f());
                vec![v; f]
            })
            .collect(),
    };
    let scale = values
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    AttributionChart {
        title: match r.policy {
            Some(p) => format!(
                "Attributions of output {} — sequence {seq} ({} computation of a {} model)",
                r.output,
                r.precision,
                p.name()
            ),
            None => format!("Attributions of output {} — sequence {seq}", r.output),
        },
        method: name.into(),
        features: r.feature_names.clone(),
        input: (0..t)
            .map(|ti| (0..f).map(|j| r.x[[seq, ti, j]].to_f()).collect())
            .collect(),
        values,
        masked: (0..t)
            .map(|ti| r.mask.is_some_and(|m| !m[[seq, ti]]))
            .collect(),
        scale: if scale > 0.0 { scale } else { 1.0 },
        step_labels: r.step_labels.clone(),
    }
}

const W: u32 = 1100;

/// Timestep ticks: integers only.
fn int_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{:.0}", v)
    } else {
        String::new()
    }
}

fn attributions_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &AttributionChart,
) -> DrawResult {
    let top = heading(
        root,
        W,
        &c.title,
        &format!(
            "{} · blue negative, red positive, scale ±{:.3e}",
            c.method, c.scale
        ),
    )?;
    let (_, h) = root.dim_in_pixel();
    let body = root.clone().shrink((0, top), (W - 90, h - top as u32));
    let legend = root.clone().shrink((W - 90, top), (90, h - top as u32));
    let t = c.input.len();
    let f = c.features.len();
    let series_h = ((h - top as u32) as f64 * 0.38) as u32;
    let (upper, lower) = body.split_vertically(series_h);
    // The input series.
    let (lo, hi) = c
        .input
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo.min(0.0) - 1.0, hi.max(0.0) + 1.0)
    };
    let pad = (hi - lo) * 0.05;
    let mut ch = ChartBuilder::on(&upper)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(t as f64 - 0.5), (lo - pad)..(hi + pad))
        .map_err(err)?;
    let tokens = c.step_labels.is_some();
    ch.configure_mesh()
        .light_line_style(GRID)
        .label_style(font(12.0))
        .y_labels(if tokens { 0 } else { 10 })
        .y_desc(if tokens { "token" } else { "input" })
        .x_label_formatter(&int_label)
        .axis_desc_style(font(13.0))
        .draw()
        .map_err(err)?;
    for (ti, &m) in c.masked.iter().enumerate() {
        if m {
            ch.draw_series(std::iter::once(Rectangle::new(
                [(ti as f64 - 0.5, lo - pad), (ti as f64 + 0.5, hi + pad)],
                RGBColor(235, 235, 235).filled(),
            )))
            .map_err(err)?;
        }
    }
    if let Some(labels) = &c.step_labels {
        // Token inputs: the tokens themselves, one per step, over the same time axis.
        let mid = (lo + hi) / 2.0;
        for (ti, l) in labels.iter().enumerate().take(t) {
            ch.draw_series(std::iter::once(Text::new(
                l.clone(),
                (ti as f64, mid),
                font(13.0)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            )))
            .map_err(err)?;
        }
    }
    for j in (0..f.min(PALETTE.len())).filter(|_| c.step_labels.is_none()) {
        let col = PALETTE[j % PALETTE.len()];
        if t == 1 {
            // One step (a flat input): a line of one point would not show.
            ch.draw_series(std::iter::once(Circle::new(
                (0.0, c.input[0][j]),
                5,
                col.filled(),
            )))
            .map_err(err)?;
        }
        ch.draw_series(LineSeries::new(
            (0..t)
                .filter(|&ti| c.input[ti][j].is_finite())
                .map(|ti| (ti as f64, c.input[ti][j])),
            col.stroke_width(2),
        ))
        .map_err(err)?
        .label(c.features[j].clone())
        .legend(move |(x, y)| {
            plotters::element::PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
        });
    }
    if !tokens {
        ch.configure_series_labels()
            .label_font(font(12.0))
            .background_style(RGBColor(255, 255, 255).mix(0.8))
            .border_style(DIM)
            .draw()
            .map_err(err)?;
    }
    // The heat map, same time axis.
    let mut hm = ChartBuilder::on(&lower)
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(t as f64 - 0.5), -0.5f64..(f as f64 - 0.5))
        .map_err(err)?;
    let names = c.features.clone();
    hm.configure_mesh()
        .disable_mesh()
        .label_style(font(12.0))
        .x_desc("timestep (input row)")
        .x_label_formatter(&int_label)
        .axis_desc_style(font(13.0))
        .y_labels(f.min(30))
        .y_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    hm.draw_series(
        (0..t)
            .flat_map(|ti| (0..f).map(move |j| (ti, j)))
            .map(|(ti, j)| {
                let v = c.values[ti][j];
                let col = if v.is_finite() {
                    colormap(&RDBU, 0.5 + 0.5 * v / c.scale)
                } else {
                    RGBColor(150, 150, 150)
                };
                Rectangle::new(
                    [
                        (ti as f64 - 0.5, j as f64 - 0.5),
                        (ti as f64 + 0.5, j as f64 + 0.5),
                    ],
                    col.filled(),
                )
            }),
    )
    .map_err(err)?;
    // Colour bar.
    let (_, lh) = legend.dim_in_pixel();
    let (y0, y1) = (series_h as i32 + 20, lh as i32 - 50);
    let steps = 60;
    for k in 0..steps {
        let a = y0 + (y1 - y0) * k / steps;
        let b = y0 + (y1 - y0) * (k + 1) / steps;
        let col = colormap(&RDBU, 1.0 - k as f64 / (steps - 1) as f64);
        legend
            .draw(&Rectangle::new([(20, a), (40, b)], col.filled()))
            .map_err(err)?;
    }
    let st = font(11.0);
    legend
        .draw_text(&format!("+{:.2e}", c.scale), &st, (5, y0 - 16))
        .map_err(err)?;
    legend
        .draw_text(&format!("−{:.2e}", c.scale), &st, (5, y1 + 4))
        .map_err(err)?;
    legend
        .draw_text("0", &st, (45, (y0 + y1) / 2 - 6))
        .map_err(err)?;
    Ok(())
}

/// Draws the attribution chart to `path` (`.png` or `.svg`).
pub fn draw_attributions(c: &AttributionChart, path: &Path) -> Result<()> {
    let h = 720 + (c.features.len().saturating_sub(8) as u32 * 14).min(800);
    render(
        path,
        (W, h),
        |r| attributions_on(r, c),
        |r| attributions_on(r, c),
    )
}

fn units_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, units: &[UnitReport]) -> DrawResult {
    let top = heading(
        root,
        W,
        "Gate saturation and memory timescales",
        "each dot: one unit's gate; share of unmasked steps below 0.1 (x) and above 0.9 (y)",
    )?;
    let (_, h) = root.dim_in_pixel();
    let body = root.clone().shrink((0, top), (W, h - top as u32));
    let (left, right) = body.split_horizontally(W / 2);
    let mut ch = ChartBuilder::on(&left)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(err)?;
    ch.configure_mesh()
        .light_line_style(GRID)
        .label_style(font(12.0))
        .x_desc("fraction left-saturated (< 0.1)")
        .y_desc("fraction right-saturated (> 0.9)")
        .axis_desc_style(font(13.0))
        .draw()
        .map_err(err)?;
    // One colour per (layer, gate).
    let mut k = 0;
    for u in units {
        for s in &u.saturation {
            let col = PALETTE[k % PALETTE.len()];
            k += 1;
            ch.draw_series(
                s.left
                    .iter()
                    .zip(&s.right)
                    .map(move |(&l, &r)| Circle::new((l, r), 4, col.mix(0.75).filled())),
            )
            .map_err(err)?
            .label(format!("{} {}", u.layer, s.gate))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
        }
    }
    if k > 0 {
        ch.configure_series_labels()
            .label_font(font(12.0))
            .background_style(RGBColor(255, 255, 255).mix(0.85))
            .border_style(DIM)
            .draw()
            .map_err(err)?;
    }
    // Timescale histogram over log10 T (finite values), every layer stacked by colour.
    let all: Vec<(usize, f64)> = units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.timescale.as_ref().map(|t| (i, t)))
        .flat_map(|(i, t)| {
            t.data
                .iter()
                .filter(|v| v.is_finite() && **v > 0.0)
                .map(move |v| (i, v.log10()))
        })
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, v)| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo.floor().min(hi - 0.5), hi.ceil().max(lo + 0.5))
    } else {
        (0.0, 1.0)
    };
    let bins = 20usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![vec![0usize; bins]; units.len().max(1)];
    for &(i, v) in &all {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[i][b] += 1;
    }
    let max = (0..bins)
        .map(|b| counts.iter().map(|c| c[b]).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut hc = ChartBuilder::on(&right)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(lo..hi, 0f64..(max as f64 * 1.1))
        .map_err(err)?;
    hc.configure_mesh()
        .light_line_style(GRID)
        .label_style(font(12.0))
        .x_desc("timescale T = −1/ln(mean keep gate), steps (log10)")
        .y_desc("units")
        .x_label_formatter(&|v| format!("{:.3}", 10f64.powf(*v)))
        .axis_desc_style(font(13.0))
        .draw()
        .map_err(err)?;
    if all.is_empty() {
        right
            .draw_text(
                "no gated layer: no timescales",
                &font(14.0).color(&DIM),
                (120, 200),
            )
            .map_err(err)?;
    }
    let mut base = vec![0usize; bins];
    for (i, c) in counts.iter().enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        let rects: Vec<_> = (0..bins)
            .filter(|&b| c[b] > 0)
            .map(|b| {
                let x0 = lo + b as f64 * width;
                let r = Rectangle::new(
                    [(x0, base[b] as f64), (x0 + width, (base[b] + c[b]) as f64)],
                    col.mix(0.8).filled(),
                );
                base[b] += c[b];
                r
            })
            .collect();
        if !rects.is_empty() {
            hc.draw_series(rects)
                .map_err(err)?
                .label(units.get(i).map(|u| u.layer.clone()).unwrap_or_default())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        }
    }
    if !all.is_empty() {
        hc.configure_series_labels()
            .label_font(font(12.0))
            .background_style(RGBColor(255, 255, 255).mix(0.85))
            .border_style(DIM)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Draws the units chart to `path` (`.png` or `.svg`).
pub fn draw_units(units: &[UnitReport], path: &Path) -> Result<()> {
    render(
        path,
        (W, 560),
        |r| units_on(r, units),
        |r| units_on(r, units),
    )
}
