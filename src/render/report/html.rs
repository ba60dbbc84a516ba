/*!
Writes a [`ReportData`] as one self-contained HTML page: the template, styles and script of
`assets/report/` (embedded in the binary) and the data, with nothing fetched at view time.

Layout of the data in the page:
- `<script type="application/json" id="rnntrace-meta">`: the [`ReportData`] as JSON, every `<` written
  `\u003c` so no string can end the script element;
- one `<script type="application/octet-stream" id="blob-NAME">` per array, the array's little-endian bytes
  in base64 (standard alphabet, padded): `blob-input`, `blob-L{layer}-M{member}`, `blob-L{layer}-mask`.
  The page decodes them into `Float32Array`/`Float64Array` views without converting a value.
*/

use super::{NumArray, ReportData};
use crate::error::Result;
use crate::io::write::atomic_write;
use base64::engine::general_purpose::STANDARD;
use std::io::Write;
use std::path::Path;

const TEMPLATE: &str = include_str!("../../../assets/report/report.html");
const SCRIPT: &str = include_str!("../../../assets/report/report.js");
const STYLE: &str = include_str!("../../../assets/report/report.css");

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn blob(w: &mut dyn Write, id: &str, a: &NumArray) -> std::io::Result<()> {
    write!(
        w,
        "<script type=\"application/octet-stream\" id=\"blob-{id}\">"
    )?;
    {
        let mut enc = base64::write::EncoderWriter::new(&mut *w, &STANDARD);
        enc.write_all(&a.bytes)?;
        enc.finish()?;
    }
    w.write_all(b"</script>\n")
}

/// Writes the page to `w`.
pub fn write(data: &ReportData, w: &mut dyn Write) -> std::io::Result<()> {
    let meta = serde_json::to_string(data)
        .map_err(std::io::Error::other)?
        .replace('<', "\\u003c");
    let title = if data.title.is_empty() {
        "rnntrace report".to_string()
    } else {
        format!("rnntrace report: {}", data.title)
    };
    // The template's markers, in order of appearance.
    let mut rest = TEMPLATE;
    for marker in ["{{TITLE}}", "{{STYLE}}", "{{DATA}}", "{{SCRIPT}}"] {
        let (before, after) = rest
            .split_once(marker)
            .ok_or_else(|| std::io::Error::other(format!("report template lacks {marker}")))?;
        w.write_all(before.as_bytes())?;
        match marker {
            "{{TITLE}}" => w.write_all(escape(&title).as_bytes())?,
            "{{STYLE}}" => w.write_all(STYLE.as_bytes())?,
            "{{SCRIPT}}" => w.write_all(SCRIPT.replace("</script", "<\\/script").as_bytes())?,
            _ => {
                writeln!(
                    w,
                    "<script type=\"application/json\" id=\"rnntrace-meta\">{meta}</script>"
                )?;
                blob(w, "input", &data.input)?;
                for (i, l) in data.layers.iter().enumerate() {
                    for (j, m) in l.members.iter().enumerate() {
                        blob(w, &format!("L{i}-M{j}"), &m.data)?;
                    }
                    if let Some(mask) = &l.masked {
                        blob(w, &format!("L{i}-mask"), mask)?;
                    }
                }
            }
        }
        rest = after;
    }
    w.write_all(rest.as_bytes())
}

/// Writes the page to `path` atomically.
pub fn write_file(data: &ReportData, path: &Path) -> Result<()> {
    atomic_write(path, |w| write(data, w))
}
