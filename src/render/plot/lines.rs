/*!
Line charts with legends: layout, ranges, series (broken around non-finite values), min–max bands.
*/

#[allow(unused_imports)]
use super::*;

// ── line charts ──

pub(super) struct LegendItem {
    pub(super) name: String,
    pub(super) color: RGBColor,
    pub(super) dashed: bool,
    pub(super) marker: Marker,
    pub(super) band: bool,
}

pub(super) struct LinesLayout {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) legend: Vec<Vec<(LegendItem, i32)>>,
    pub(super) header: i32,
    pub(super) panel_h: u32,
    pub(super) y_area: u32,
}

pub(super) const LEGEND_FONT: f64 = 14.0;
pub(super) const LEGEND_SAMPLE: i32 = 30;
pub(super) const LEGEND_GAP: i32 = 22;
pub(super) const LEGEND_ROW: i32 = 24;

impl LinesLayout {
    pub(super) fn new(chart: &ChartData) -> LinesLayout {
        let width = 1200u32;
        let mut items: Vec<LegendItem> = Vec::new();
        for s in &chart.series {
            if !items.iter().any(|i| i.name == s.name && !i.band) {
                items.push(LegendItem {
                    name: s.name.clone(),
                    color: PALETTE[s.color % PALETTE.len()],
                    dashed: s.dashed,
                    marker: s.marker,
                    band: false,
                });
            }
            if s.band.is_some() && !items.iter().any(|i| i.band) {
                items.push(LegendItem {
                    name: "min–max over sequences".into(),
                    color: PALETTE[s.color % PALETTE.len()],
                    dashed: false,
                    marker: Marker::None,
                    band: true,
                });
            }
        }
        let style = font(LEGEND_FONT);
        let max_row = width as i32 - 40;
        let mut rows: Vec<Vec<(LegendItem, i32)>> = Vec::new();
        let mut row_w = 0;
        for item in items {
            let w = LEGEND_SAMPLE + 8 + text_width(&style, &item.name) + LEGEND_GAP;
            if rows.is_empty() || row_w + w > max_row {
                rows.push(Vec::new());
                row_w = 0;
            }
            row_w += w;
            if let Some(r) = rows.last_mut() {
                r.push((item, w));
            }
        }
        let top = if chart.subtitle.is_empty() { 54 } else { 78 };
        let header = top + rows.len() as i32 * LEGEND_ROW + 8;
        let n = chart.panels.len().max(1) as u32;
        let panel_h = match n {
            1 => 560,
            2 => 360,
            _ => 290,
        };
        // Every panel gets the same y label area so that the x axes line up.
        let tick = font(13.0);
        let mut widest = 0;
        for p in 0..chart.panels.len().max(1) {
            let (lo, hi) = y_range(chart, p);
            let (ticks, step) = nice_ticks(lo, hi, y_tick_count(panel_h));
            let max_abs = lo.abs().max(hi.abs());
            for t in ticks {
                widest = widest.max(text_width(&tick, &tick_label(t, step, max_abs)));
            }
        }
        LinesLayout {
            width,
            height: header as u32 + n * panel_h + 10,
            legend: rows,
            header,
            panel_h,
            y_area: (widest + 44).max(60) as u32,
        }
    }
}

pub(super) fn y_tick_count(panel_h: u32) -> usize {
    ((panel_h as usize).saturating_sub(60) / 50).clamp(4, 10)
}

/// The y range of panel `p` (finite values of lines and bands), padded.
pub(super) fn y_range(chart: &ChartData, p: usize) -> (f64, f64) {
    let ys = chart.series.iter().filter(|s| s.panel == p).flat_map(|s| {
        s.points.iter().map(|q| q.1).chain(
            s.band
                .iter()
                .flat_map(|b| b.iter().flat_map(|q| [q.1, q.2])),
        )
    });
    let (lo, hi) = finite_min_max(ys).unwrap_or((0.0, 1.0));
    let (lo, hi) = (lo.max(-1e300), hi.min(1e300));
    let span = hi - lo;
    if span <= 0.0 {
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        (lo - pad, hi + pad)
    } else {
        (lo - span * 0.06, hi + span * 0.06)
    }
}

pub(super) fn x_range(chart: &ChartData) -> (i64, i64) {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.0));
    match finite_min_max(xs) {
        Some((lo, hi)) => (lo.floor() as i64, hi.ceil() as i64),
        None => (0, 1),
    }
}

pub(super) fn lines_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ChartData,
    layout: &LinesLayout,
) -> DrawResult {
    let mut y = heading(root, layout.width, &chart.title, &chart.subtitle)?;
    draw_legend(root, layout, y)?;
    y = layout.header;
    let body = root
        .clone()
        .shrink((0, y), (layout.width, layout.height - y as u32));
    let n = chart.panels.len().max(1);
    let areas = body.split_evenly((n, 1));
    let (xlo, xhi) = x_range(chart);
    let plot_w = layout.width as i32 - layout.y_area as i32 - 40;
    let x_ticks = int_ticks(xlo, xhi, ((plot_w / 70) as usize).clamp(2, 20));
    let x_fmt = |v: &f64| format!("{v:.0}");
    for (p, area) in areas.iter().enumerate() {
        let last = p + 1 == n;
        let (ylo, yhi) = y_range(chart, p);
        let (y_ticks, ystep) = nice_ticks(ylo, yhi, y_tick_count(layout.panel_h));
        let max_abs = ylo.abs().max(yhi.abs());
        let y_fmt = move |v: &f64| tick_label(*v, ystep, max_abs);
        let title = chart.panels.get(p).cloned().unwrap_or_default();
        let mut builder = ChartBuilder::on(area);
        builder
            .margin_left(12)
            .margin_right(28)
            .margin_top(4)
            .margin_bottom(if last { 4 } else { 10 })
            .x_label_area_size(if last { 56 } else { 30 })
            .y_label_area_size(layout.y_area);
        if !title.is_empty() {
            builder.caption(&title, font(17.0));
        }
        let mut ctx = builder
            .build_cartesian_2d(
                TickAxis::new(xlo as f64 - 0.5, xhi as f64 + 0.5, x_ticks.clone()),
                TickAxis::new(ylo, yhi, y_ticks),
            )
            .map_err(err)?;
        let mut mesh = ctx.configure_mesh();
        mesh.bold_line_style(GRID)
            .axis_style(DIM)
            .label_style(font(13.0))
            .axis_desc_style(font(15.0))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .y_desc(&chart.y_label);
        if last {
            mesh.x_desc(&chart.x_label);
        }
        mesh.draw().map_err(err)?;
        for &sx in &chart.separators {
            ctx.draw_series(DashedLineSeries::new(
                vec![(sx, ylo), (sx, yhi)],
                5,
                4,
                ShapeStyle::from(RGBColor(120, 120, 120)).stroke_width(1),
            ))
            .map_err(err)?;
        }
        let series: Vec<&Series> = chart.series.iter().filter(|s| s.panel == p).collect();
        for s in &series {
            if let Some(band) = &s.band {
                draw_band(&mut ctx, band, PALETTE[s.color % PALETTE.len()])?;
            }
        }
        for s in &series {
            draw_series(&mut ctx, s, plot_w)?;
        }
        if series
            .iter()
            .all(|s| s.points.iter().all(|q| !q.1.is_finite()))
        {
            let (xr, yr) = ctx.plotting_area().get_pixel_range();
            root.draw_text(
                "no finite values to draw",
                &font(16.0)
                    .color(&DIM)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
                ((xr.start + xr.end) / 2, (yr.start + yr.end) / 2),
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

pub(super) fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    layout: &LinesLayout,
    top: i32,
) -> DrawResult {
    let style = font(LEGEND_FONT).pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in layout.legend.iter().enumerate() {
        let total: i32 = row.iter().map(|(_, w)| w).sum::<i32>() - LEGEND_GAP;
        let mut x = (layout.width as i32 - total) / 2;
        let cy = top + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        for (item, w) in row {
            let (x0, x1) = (x, x + LEGEND_SAMPLE);
            if item.band {
                root.draw(&Rectangle::new(
                    [(x0, cy - 7), (x1, cy + 7)],
                    item.color.mix(0.22).filled(),
                ))
                .map_err(err)?;
            } else {
                let line = ShapeStyle::from(item.color).stroke_width(2);
                if item.dashed {
                    for s in (x0..x1).step_by(10) {
                        root.draw(&PathElement::new(
                            vec![(s, cy), ((s + 6).min(x1), cy)],
                            line,
                        ))
                        .map_err(err)?;
                    }
                } else {
                    root.draw(&PathElement::new(vec![(x0, cy), (x1, cy)], line))
                        .map_err(err)?;
                }
                let c = ((x0 + x1) / 2, cy);
                let st = item.color.filled();
                match item.marker {
                    Marker::None => {}
                    Marker::Circle => root.draw(&Circle::new(c, 5, st)).map_err(err)?,
                    Marker::Square => root
                        .draw(&Rectangle::new(
                            [(c.0 - 4, c.1 - 4), (c.0 + 4, c.1 + 4)],
                            st,
                        ))
                        .map_err(err)?,
                    Marker::Triangle => root.draw(&TriangleMarker::new(c, 5, st)).map_err(err)?,
                    Marker::Cross => root
                        .draw(&Cross::new(
                            c,
                            5,
                            ShapeStyle::from(item.color).stroke_width(2),
                        ))
                        .map_err(err)?,
                }
            }
            root.draw_text(&item.name, &style, (x1 + 8, cy))
                .map_err(err)?;
            x += w;
        }
    }
    Ok(())
}

/// Splits points into runs of finite values.
pub(super) fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y.clamp(-1e300, 1e300)));
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

pub(super) fn draw_band<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Coords>,
    band: &[(f64, f64, f64)],
    color: RGBColor,
) -> DrawResult {
    let mut run: Vec<(f64, f64, f64)> = Vec::new();
    let mut flush = |run: &mut Vec<(f64, f64, f64)>| -> DrawResult {
        if run.len() >= 2 {
            let mut poly: Vec<(f64, f64)> = run.iter().map(|q| (q.0, q.2)).collect();
            poly.extend(run.iter().rev().map(|q| (q.0, q.1)));
            ctx.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.22).filled(),
            )))
            .map_err(err)?;
        } else if let Some(q) = run.first() {
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(q.0, q.1), (q.0, q.2)],
                ShapeStyle::from(color.mix(0.4)).stroke_width(6),
            )))
            .map_err(err)?;
        }
        run.clear();
        Ok(())
    };
    for &q in band {
        if q.0.is_finite() && q.1.is_finite() && q.2.is_finite() {
            run.push((q.0, q.1.clamp(-1e300, 1e300), q.2.clamp(-1e300, 1e300)));
        } else {
            flush(&mut run)?;
        }
    }
    flush(&mut run)
}

pub(super) fn draw_series<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Coords>,
    s: &Series,
    plot_w: i32,
) -> DrawResult {
    let color = PALETTE[s.color % PALETTE.len()];
    let width = if s.points.len() > 1500 { 1 } else { 2 };
    let line = ShapeStyle::from(color).stroke_width(width);
    // Separate points always get their markers (they are all there is to see).
    let show_markers =
        s.marker != Marker::None && (!s.joined || (s.points.len() as i32) * 8 <= plot_w);
    for run in finite_runs(&s.points) {
        if run.len() >= 2 && s.joined {
            if s.dashed {
                ctx.draw_series(DashedLineSeries::new(run.clone(), 8, 5, line))
                    .map_err(err)?;
            } else {
                ctx.draw_series(LineSeries::new(run.clone(), line))
                    .map_err(err)?;
            }
        }
        // An isolated point would be invisible without a marker.
        let marker = match (show_markers, run.len()) {
            (true, _) => s.marker,
            (false, 1) => Marker::Circle,
            _ => Marker::None,
        };
        let st = color.filled();
        match marker {
            Marker::None => {}
            Marker::Circle => {
                ctx.draw_series(run.iter().map(|&c| Circle::new(c, 5, st)))
                    .map_err(err)?;
            }
            Marker::Square => {
                ctx.draw_series(
                    run.iter()
                        .map(|&c| EmptyElement::at(c) + Rectangle::new([(-4, -4), (4, 4)], st)),
                )
                .map_err(err)?;
            }
            Marker::Triangle => {
                ctx.draw_series(run.iter().map(|&c| TriangleMarker::new(c, 5, st)))
                    .map_err(err)?;
            }
            Marker::Cross => {
                let cs = ShapeStyle::from(color).stroke_width(2);
                ctx.draw_series(run.iter().map(|&c| Cross::new(c, 5, cs)))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}
