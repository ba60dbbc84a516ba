/*!
Charts: how the state norms evolve, predictions against the framework and the truth, and gate heat maps.

Each chart is first computed as plain data ([`ChartData`], [`GateHeatmaps`]) so that tests can check what a
chart shows without looking at pixels; `draw_*` then renders that data as PNG or SVG (picked by the file
extension, see [`image_format`]) in memory and writes it atomically. Text is set in DejaVu Sans, embedded in
the binary (`assets/DejaVuSans.ttf`, licence in `assets/DejaVuSans-LICENSE.txt`), so charts render on machines
without any fonts installed.

Non-finite values never stop a chart: lines break around them, heat maps paint them grey.

This file renders and writes; [`data`] computes what a chart shows, `canvas.rs` is the drawing surface and
font, `axis.rs` the tick maths, `lines.rs` and `heatmap.rs` draw the two kinds of chart.
*/

mod axis;
mod canvas;
pub mod data;
pub mod feed;
mod heatmap;
mod lines;

#[allow(unused_imports)]
use self::{axis::*, canvas::*, data::*, heatmap::*, lines::*};
pub use data::{ChartData, GateHeatmaps, Heatmap, Marker, Series, gates, predictions, state_norms};
pub use feed::ChartFeed;
// The drawing pieces `explain`'s charts ([`crate::render::explain_plot`]) share with these.
pub(crate) use self::axis::{DrawResult, heading};
pub(crate) use self::canvas::{DIM, GRID, PALETTE, err, font};
pub(crate) use self::heatmap::{RDBU, colormap};

use crate::cell::{Activation, Real};
use crate::error::{Error, Result};
use crate::io::write::atomic_write;
use crate::trace::{LayerTrace, Trace};
use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use ndarray::{Array2, Array3, Axis};
use plotters::chart::{ChartBuilder, ChartContext};
use plotters::coord::Shift;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::{
    Circle, Cross, EmptyElement, PathElement, Polygon, Rectangle, TriangleMarker,
};
use plotters::prelude::{BitMapBackend, DashedLineSeries, DrawingBackend, LineSeries, SVGBackend};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    Color, FontDesc, FontFamily, FontStyle, FontTransform, RGBColor, ShapeStyle, TextStyle,
};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};
use std::path::Path;

/// How many sequences get a line each before the chart switches to mean and min–max band.
pub const MAX_LINES: usize = 8;
/// How many output columns the predictions chart shows.
pub const MAX_OUTPUTS: usize = 4;

/// The picture formats charts are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Bitmap.
    Png,
    /// Vector.
    Svg,
}

/// The format a chart file name asks for: `.png` or `.svg` (any case). `flag` (e.g. `--plot`) names the
/// flag in the error; pass `""` when there is none.
pub fn image_format(flag: &str, path: &Path) -> Result<ImageFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("svg") => Ok(ImageFormat::Svg),
        _ => {
            let who = if flag.is_empty() {
                path.display().to_string()
            } else {
                format!("{flag} {}", path.display())
            };
            Err(Error::usage(format!(
                "{who}: unsupported chart format; the file name must end in .png or .svg"
            )))
        }
    }
}

/// Renders with `png` or `svg` (chosen by `path`'s extension) into memory, then writes atomically.
pub(crate) fn render(
    path: &Path,
    (w, h): (u32, u32),
    png: impl FnOnce(&DrawingArea<Canvas<'_>, Shift>) -> DrawResult,
    svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<()> {
    let format = image_format("", path)?;
    ensure_font().map_err(|e| Error::output(path, e))?;
    let bytes: Vec<u8> = match format {
        ImageFormat::Png => {
            let font = embedded_font()
                .ok_or_else(|| Error::output(path, "the embedded font could not be loaded"))?;
            let mut buf = vec![255u8; w as usize * h as usize * 3];
            {
                let canvas = Canvas {
                    inner: BitMapBackend::with_buffer(&mut buf, (w, h)),
                    font,
                };
                let root = canvas.into_drawing_area();
                root.fill(&WHITE).map_err(|e| Error::output(path, e))?;
                png(&root).map_err(|e| Error::output(path, e))?;
                root.present().map_err(|e| Error::output(path, e))?;
            }
            encode_png(&buf, w, h).map_err(|e| Error::output(path, e))?
        }
        ImageFormat::Svg => {
            let mut s = String::new();
            {
                let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
                root.fill(&WHITE).map_err(|e| Error::output(path, e))?;
                svg(&root).map_err(|e| Error::output(path, e))?;
                root.present().map_err(|e| Error::output(path, e))?;
            }
            s.into_bytes()
        }
    };
    atomic_write(path, |out| out.write_all(&bytes))
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// Draws a line chart ([`state_norms`], [`predictions`]) to `path` (`.png` or `.svg`).
pub fn draw_lines(chart: &ChartData, path: &Path) -> Result<()> {
    let layout = LinesLayout::new(chart);
    render(
        path,
        (layout.width, layout.height),
        |root| lines_on(root, chart, &layout),
        |root| lines_on(root, chart, &layout),
    )
}

/// The most heat-map cells an SVG may hold (a PNG has no limit: it is drawn pixel by pixel).
pub const MAX_SVG_CELLS: usize = 400_000;

/// Draws gate heat maps ([`gates`]) to `path` (`.png` or `.svg`).
pub fn draw_heatmaps(h: &GateHeatmaps, path: &Path) -> Result<()> {
    // An SVG draws one rectangle per cell: past a few hundred thousand it is megabytes no viewer opens.
    let cells: usize = h
        .panels
        .iter()
        .map(|p| p.values.iter().map(|r| r.len()).sum::<usize>())
        .sum();
    if matches!(image_format("--plot-gates", path)?, ImageFormat::Svg) && cells > MAX_SVG_CELLS {
        return Err(crate::error::Error::usage(format!(
            "--plot-gates {}: {cells} cells are too many for an SVG (at most {MAX_SVG_CELLS}); write a .png",
            path.display()
        )));
    }
    let layout = HeatLayout::new(h);
    render(
        path,
        (layout.width, layout.height),
        |root| heatmaps_on(root, h, &layout),
        |root| heatmaps_on(root, h, &layout),
    )
}

#[cfg(test)]
mod tests;
