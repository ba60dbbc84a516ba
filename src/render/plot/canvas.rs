/*!
The drawing surface: colours, the embedded DejaVu Sans font and its text layout, and [`Canvas`], the
bitmap backend that sets text in that font (so charts render without any system fonts).
*/

#[allow(unused_imports)]
use super::*;

// ───────────────────────────────────────── drawing ─────────────────────────────────────────

pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
pub(super) const INK: RGBColor = RGBColor(30, 30, 30);
pub(crate) const DIM: RGBColor = RGBColor(90, 90, 90);
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
pub(super) const NON_FINITE: RGBColor = RGBColor(150, 150, 150);
pub(super) const WHITE: RGBColor = RGBColor(255, 255, 255);

pub(super) static FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");

/// Registers the embedded font as plotters' `sans-serif` (once per process).
pub(super) fn ensure_font() -> std::result::Result<(), String> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded".into())
    }
}

/// plotters' font size is 1.24 em (its SVG backend writes `font-size = size / 1.24`); [`Canvas`] follows.
pub(super) const SIZE_PER_EM: f64 = 1.24;

/// Text `em` pixels per em, in both formats.
pub(crate) fn font(em: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::SansSerif,
        em * SIZE_PER_EM,
        FontStyle::Normal,
    ))
    .color(&INK)
}

/// Width in pixels of `text` in `style`, as [`Canvas`] sets it.
pub(super) fn text_width(style: &TextStyle<'_>, text: &str) -> i32 {
    match embedded_font() {
        Some(f) => TextLayout::new(f, style.font.get_size(), text).width.ceil() as i32,
        None => (text.chars().count() as f64 * style.font.get_size() * 0.6) as i32,
    }
}

/// The embedded font, parsed once.
pub(super) fn embedded_font() -> Option<&'static FontRef<'static>> {
    static FONT: std::sync::OnceLock<Option<FontRef<'static>>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
}

/// A line of text laid out in the embedded font at plotters' `size` (`size / 1.24` pixels per em, as in
/// its SVG output): glyphs with their pen positions, kerning applied.
pub(super) struct TextLayout {
    pub(super) scale: PxScale,
    pub(super) glyphs: Vec<(GlyphId, f32)>,
    pub(super) width: f32,
    pub(super) ascent: f32,
    pub(super) descent: f32,
}

impl TextLayout {
    pub(super) fn new(font: &FontRef<'static>, size: f64, text: &str) -> TextLayout {
        let em = font.units_per_em().unwrap_or(2048.0);
        let px_per_em = (size / SIZE_PER_EM) as f32;
        let scale = PxScale::from(px_per_em * font.height_unscaled() / em);
        let sf = font.as_scaled(scale);
        let mut glyphs = Vec::with_capacity(text.len());
        let mut x = 0f32;
        let mut prev: Option<GlyphId> = None;
        for ch in text.chars() {
            let id = sf.glyph_id(ch);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            glyphs.push((id, x));
            x += sf.h_advance(id);
            prev = Some(id);
        }
        TextLayout {
            scale,
            glyphs,
            width: x,
            ascent: sf.ascent(),
            descent: sf.descent(),
        }
    }
}

/// The bitmap backend with its text drawn here rather than by plotters: plotters 0.3.7's ab_glyph
/// renderer drops each glyph's side bearing (uneven letter spacing) and cannot place combining marks.
/// Everything else is passed through.
pub(crate) struct Canvas<'a> {
    pub(super) inner: BitMapBackend<'a>,
    pub(super) font: &'static FontRef<'static>,
}

pub(super) type CanvasError<'a> =
    DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> DrawingBackend for Canvas<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> std::result::Result<(), CanvasError<'a>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> std::result::Result<(u32, u32), CanvasError<'a>> {
        let l = TextLayout::new(self.font, style.size(), text);
        Ok((l.width.ceil() as u32, (l.ascent - l.descent).ceil() as u32))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> std::result::Result<(), CanvasError<'a>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let l = TextLayout::new(self.font, style.size(), text);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -l.width / 2.0,
            HPos::Right => -l.width,
        };
        // Baseline, relative to `pos` before rotation.
        let base = match anchor.v_pos {
            VPos::Top => l.ascent,
            VPos::Center => (l.ascent + l.descent) / 2.0,
            VPos::Bottom => l.descent,
        };
        let trans = style.transform();
        let (w, h) = self.inner.get_size();
        let (w, h) = (w as i32, h as i32);
        for &(id, x) in &l.glyphs {
            let glyph = id.with_scale_and_position(l.scale, point(dx + x, base));
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let mut result = Ok(());
            let inner = &mut self.inner;
            outline.draw(|gx, gy, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (rx, ry) =
                    trans.transform(b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                let (px, py) = (pos.0 + rx, pos.1 + ry);
                if px >= 0 && py >= 0 && px < w && py < h {
                    let c = BackendColor {
                        alpha: color.alpha * f64::from(coverage.min(1.0)),
                        rgb: color.rgb,
                    };
                    result = inner.draw_pixel((px, py), c);
                }
            });
            result?;
        }
        Ok(())
    }
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}
