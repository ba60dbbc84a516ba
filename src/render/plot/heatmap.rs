/*!
Heat maps with colour maps (viridis for [0, 1] gates, red–blue for signed values) and colour bars.
*/

#[allow(unused_imports)]
use super::*;

// ── heat maps ──

pub(super) struct HeatLayout {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) cols: usize,
    pub(super) header: i32,
}

pub(super) const BAR_AREA: u32 = 110;

impl HeatLayout {
    pub(super) fn new(h: &GateHeatmaps) -> HeatLayout {
        let n = h.panels.len().max(1);
        let cols = if n == 4 { 2 } else { n.min(3) };
        let rows = n.div_ceil(cols);
        let panel_w: u32 = if cols >= 3 { 560 } else { 620 };
        let panel_h: u32 = 470;
        let header = if h.subtitle.is_empty() { 60 } else { 84 };
        HeatLayout {
            width: cols as u32 * panel_w,
            height: header as u32 + rows as u32 * panel_h + 8,
            cols,
            header,
        }
    }
}

/// Viridis, sampled at 9 points.
pub(super) const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];
/// Blue–white–red (ColorBrewer RdBu, reversed).
pub(crate) const RDBU: [(u8, u8, u8); 11] = [
    (5, 48, 97),
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
    (103, 0, 31),
];

pub(crate) fn colormap(map: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let f = t * (map.len() - 1) as f64;
    let i = (f.floor() as usize).min(map.len() - 2);
    let w = f - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * w).round() as u8;
    let (a, b) = (map[i], map[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

pub(super) fn heat_color(m: &Heatmap, v: f64) -> RGBColor {
    if !v.is_finite() {
        return NON_FINITE;
    }
    let t = (v - m.lo) / (m.hi - m.lo);
    colormap(if m.diverging { &RDBU } else { &VIRIDIS }, t)
}

pub(super) fn heatmaps_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &GateHeatmaps,
    layout: &HeatLayout,
) -> DrawResult {
    heading(root, layout.width, &h.title, &h.subtitle)?;
    let body = root.clone().shrink(
        (0, layout.header),
        (layout.width, layout.height - layout.header as u32),
    );
    if h.panels.is_empty() {
        return Ok(());
    }
    let rows = h.panels.len().div_ceil(layout.cols);
    let areas = body.split_evenly((rows, layout.cols));
    for (m, area) in h.panels.iter().zip(areas.iter()) {
        heatmap_on(root, area, h, m)?;
    }
    Ok(())
}

pub(super) fn heatmap_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    h: &GateHeatmaps,
    m: &Heatmap,
) -> DrawResult {
    let units = m.values.len();
    let steps = m.values.first().map(|r| r.len()).unwrap_or(0);
    let (aw, _) = area.dim_in_pixel();
    let (left, _) = area.split_horizontally(aw.saturating_sub(BAR_AREA));
    let tick_font = font(13.0);
    let unit_label_w = text_width(&tick_font, &units.saturating_sub(1).to_string());
    let mut builder = ChartBuilder::on(&left);
    builder
        .margin_left(8)
        .margin_right(6)
        .margin_top(12)
        .margin_bottom(10)
        .caption(&m.title, font(15.0))
        .x_label_area_size(48)
        .y_label_area_size((unit_label_w + 40) as u32);
    // y: unit u is drawn at units-1-u so that unit 0 is at the top, as in a matrix.
    let (pw, ph) = left.dim_in_pixel();
    let plot_w = pw as i32 - unit_label_w - 60;
    let plot_h = ph as i32 - 110;
    let x_ticks = int_ticks(
        1,
        steps.max(1) as i64,
        ((plot_w / 45) as usize).clamp(2, 16),
    );
    let unit_ticks = int_ticks(
        0,
        units.saturating_sub(1) as i64,
        ((plot_h / 24) as usize).clamp(2, 20),
    );
    let top = units.saturating_sub(1) as f64;
    let y_ticks: Vec<f64> = unit_ticks.iter().map(|u| top - u).collect();
    let mut ctx = builder
        .build_cartesian_2d(
            TickAxis::new(0.5, steps.max(1) as f64 + 0.5, x_ticks),
            TickAxis::new(-0.5, units.max(1) as f64 - 0.5, y_ticks),
        )
        .map_err(err)?;
    let x_fmt = |v: &f64| format!("{v:.0}");
    let y_fmt = |v: &f64| format!("{:.0}", top - v);
    ctx.configure_mesh()
        .disable_mesh()
        .axis_style(DIM)
        .label_style(tick_font.clone())
        .axis_desc_style(font(14.0))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc(&h.x_label)
        .y_desc(&h.y_label)
        .draw()
        .map_err(err)?;
    let cells = m.values.iter().enumerate().flat_map(|(u, row)| {
        let y = top - u as f64;
        row.iter().enumerate().map(move |(t, &v)| {
            Rectangle::new(
                [(t as f64 + 0.5, y + 0.5), (t as f64 + 1.5, y - 0.5)],
                heat_color(m, v).filled(),
            )
        })
    });
    ctx.draw_series(cells).map_err(err)?;
    // Masked steps: a dark bar just above the column.
    let (xr, yr) = ctx.plotting_area().get_pixel_range();
    if steps > 0 {
        let cw = (xr.end - xr.start) as f64 / steps as f64;
        for &s in &h.masked_steps {
            let x0 = xr.start + ((s as f64 - 1.0) * cw).round() as i32;
            let x1 = (xr.start + (s as f64 * cw).round() as i32 - 1).max(x0 + 1);
            root.draw(&Rectangle::new(
                [(x0, yr.start - 6), (x1, yr.start - 2)],
                INK.filled(),
            ))
            .map_err(err)?;
        }
    }
    colour_bar(root, m, xr.end + 18, yr.start, yr.end)
}

/// A vertical colour bar with ticks, at pixel column `x`, from `top` (m.hi) to `bottom` (m.lo).
pub(super) fn colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    m: &Heatmap,
    x: i32,
    top: i32,
    bottom: i32,
) -> DrawResult {
    let bw = 18;
    let len = (bottom - top).max(1);
    for py in top..bottom {
        let t = (bottom - py) as f64 / len as f64;
        let v = m.lo + t * (m.hi - m.lo);
        root.draw(&Rectangle::new(
            [(x, py), (x + bw, py + 1)],
            heat_color(m, v).filled(),
        ))
        .map_err(err)?;
    }
    root.draw(&Rectangle::new(
        [(x, top), (x + bw, bottom)],
        ShapeStyle::from(DIM).stroke_width(1),
    ))
    .map_err(err)?;
    let (ticks, step) = nice_ticks(m.lo, m.hi, 5);
    let max_abs = m.lo.abs().max(m.hi.abs());
    let style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
    let mut label_w = 0;
    for t in ticks {
        let py = bottom - (((t - m.lo) / (m.hi - m.lo)) * len as f64).round() as i32;
        root.draw(&PathElement::new(vec![(x + bw, py), (x + bw + 4, py)], DIM))
            .map_err(err)?;
        let label = tick_label(t, step, max_abs);
        label_w = label_w.max(text_width(&style, &label));
        root.draw_text(&label, &style, (x + bw + 7, py))
            .map_err(err)?;
    }
    // What the scale is, written along the bar.
    let caption = if m.fixed_scale {
        format!(
            "fixed scale: {} range {} to {}",
            m.activation,
            short(m.lo),
            short(m.hi)
        )
    } else {
        format!("scale from the data ({} is unbounded)", m.activation)
    };
    let vstyle = font(12.0)
        .color(&DIM)
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Center, VPos::Top));
    root.draw_text(
        &caption,
        &vstyle,
        (x + bw + 7 + label_w + 6, (top + bottom) / 2),
    )
    .map_err(err)?;
    if m.non_finite > 0 {
        let y = bottom + 14;
        root.draw(&Rectangle::new(
            [(x, y), (x + bw, y + 12)],
            NON_FINITE.filled(),
        ))
        .map_err(err)?;
        root.draw_text(
            "NaN/inf",
            &font(12.0).pos(Pos::new(HPos::Left, VPos::Center)),
            (x + bw + 5, y + 6),
        )
        .map_err(err)?;
    }
    Ok(())
}
