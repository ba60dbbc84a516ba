/*!
`.npy` parsing on top of `npyz`, hardened against hostile headers.

Before `npyz` sees a header we check the magic, the version, the header length (capped like NumPy's
`max_header_size`), the nesting depth of the header literal and the element count (with overflow checks,
against the bytes actually present). Only then are elements decoded: floats of 2, 4 or 8 bytes in either
byte order, integers and booleans (converted, and the conversion is recorded in the dtype), Fortran order
transposed back to C order. Complex, string, object and structured dtypes are refused.
*/

use super::RawArray;
use npyz::{DType, Endianness, NpyFile, Order, TypeChar};

/// NumPy refuses headers longer than this by default (`max_header_size=10000`); so do we.
pub const MAX_HEADER_LEN: usize = 10_000;

/// The outcome of a parse: an array or a message saying what is wrong with the bytes.
pub type ParseResult<T> = std::result::Result<T, String>;

/// The bytes of a format-1.0 `.npy` header for an array of `descr` (e.g. `<f4`) and `shape`,
/// padded so the data starts on a 64-byte boundary, as NumPy writes it.
pub fn header(descr: &str, fortran_order: bool, shape: &[usize]) -> Vec<u8> {
    let shape_txt = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let order = if fortran_order { "True" } else { "False" };
    header_text(&format!(
        "{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_txt}, }}"
    ))
}

/// Pads a header dict literal and prefixes the magic, version and length.
fn header_text(dict: &str) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Parses a complete `.npy` file held in memory.
pub fn parse(bytes: &[u8]) -> ParseResult<RawArray> {
    if bytes.is_empty() {
        return Err("file is empty; expected a NumPy .npy array".into());
    }
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic at the start)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, prefix) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => {
            return Err(format!(
                ".npy format version {major}.{minor} is not supported (expected 1.0, 2.0 or 3.0)"
            ));
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!(
            "header claims {header_len} bytes; at most {MAX_HEADER_LEN} are accepted"
        ));
    }
    let data_start = prefix + header_len;
    if bytes.len() < data_start {
        return Err(format!(
            "truncated: header claims {header_len} bytes but the file has only {} after the prefix",
            bytes.len() - prefix
        ));
    }
    let text = std::str::from_utf8(&bytes[prefix..data_start])
        .map_err(|_| "header is not text".to_string())?;
    check_nesting(text)?;
    let shape = shape_from_header(text)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            format!(
                "header shape {} has more elements than can be addressed",
                fmt_shape(&shape)
            )
        })?;

    let file = NpyFile::new(bytes).map_err(|e| format!("invalid .npy header: {e}"))?;
    let ts = match file.dtype() {
        DType::Plain(ts) => ts,
        other => {
            return Err(format!(
                "dtype {} is a structured type; expected a plain numeric array",
                other.descr()
            ));
        }
    };
    let size = ts.size_field() as usize;
    let (kind, note) = match (ts.type_char(), size) {
        (TypeChar::Float, 2 | 4 | 8) => ("f", format!("float{}", size * 8)),
        (TypeChar::Int, 1 | 2 | 4 | 8) => ("i", format!("int{}", size * 8)),
        (TypeChar::Uint, 1 | 2 | 4 | 8) => ("u", format!("uint{}", size * 8)),
        (TypeChar::Bool, 1) => ("b", "bool".to_string()),
        (TypeChar::Complex, _) => {
            return Err(format!("dtype '{ts}' is complex; expected real numbers"));
        }
        (TypeChar::Object, _) => {
            return Err("dtype is object (pickled Python objects); expected numbers".into());
        }
        (TypeChar::ByteStr | TypeChar::UnicodeStr | TypeChar::RawData, _) => {
            return Err(format!(
                "dtype '{ts}' holds strings or bytes; expected numbers"
            ));
        }
        _ => {
            return Err(format!(
                "dtype '{ts}' is not supported; expected float32 or float64"
            ));
        }
    };
    let needed = count
        .checked_mul(size)
        .ok_or_else(|| format!("header shape {} is too large", fmt_shape(&shape)))?;
    let available = bytes.len() - data_start;
    if available < needed {
        return Err(format!(
            "truncated: header says shape {} ({count} × {size} bytes = {needed} bytes) but only {available} bytes of data follow",
            fmt_shape(&shape)
        ));
    }
    let raw = &bytes[data_start..data_start + needed];
    let big = ts.endianness() == Endianness::Big;
    let data: Vec<f64> = match (kind, size, big) {
        // The common cases, in a loop the compiler vectorises.
        ("f", 4, false) => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        ("f", 8, false) => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        _ => raw
            .chunks_exact(size.max(1))
            .map(|chunk| decode(kind, size, big, chunk))
            .collect(),
    };
    let data = if file.order() == Order::Fortran && shape.len() > 1 {
        fortran_to_c(&shape, &data)
    } else {
        data
    };
    Ok(RawArray::new(shape, data, note))
}

fn decode(kind: &str, size: usize, big: bool, b: &[u8]) -> f64 {
    macro_rules! num {
        ($t:ty, $n:expr) => {{
            let mut a = [0u8; $n];
            a.copy_from_slice(b);
            (if big {
                <$t>::from_be_bytes(a)
            } else {
                <$t>::from_le_bytes(a)
            }) as f64
        }};
    }
    match (kind, size) {
        ("f", 2) => {
            let bits = if big {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            };
            half::f16::from_bits(bits).to_f64()
        }
        ("f", 4) => num!(f32, 4),
        ("f", 8) => num!(f64, 8),
        ("i", 1) => b[0] as i8 as f64,
        ("i", 2) => num!(i16, 2),
        ("i", 4) => num!(i32, 4),
        ("i", 8) => num!(i64, 8),
        ("u", 1) | ("b", 1) => b[0] as f64,
        ("u", 2) => num!(u16, 2),
        ("u", 4) => num!(u32, 4),
        ("u", 8) => num!(u64, 8),
        _ => f64::NAN,
    }
}

/// Reorders column-major values into row-major order.
fn fortran_to_c(shape: &[usize], data: &[f64]) -> Vec<f64> {
    let n = data.len();
    let mut out = vec![0.0; n];
    // Fortran strides: stride[k] = product of shape[..k].
    let mut fstride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut idx = vec![0usize; shape.len()];
    for slot in out.iter_mut() {
        let src: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        *slot = data[src];
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// A valid header is a flat dict, with at most a shape tuple inside; refuse deep nesting before any parser recurses.
fn check_nesting(text: &str) -> ParseResult<()> {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > 8 {
                    return Err("header nests too deeply to be a .npy header".into());
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Extracts the `'shape': (..)` tuple so its element count can be checked before `npyz` multiplies it.
fn shape_from_header(text: &str) -> ParseResult<Vec<usize>> {
    // A key given twice would be read one way here and another by the dict parser: refuse it.
    for key in ["shape", "descr", "fortran_order"] {
        if text.matches(&format!("'{key}'")).count() + text.matches(&format!("\"{key}\"")).count()
            > 1
        {
            return Err(format!("header gives '{key}' twice"));
        }
    }
    let key = text
        .find("'shape'")
        .or_else(|| text.find("\"shape\""))
        .ok_or("header has no 'shape' entry")?;
    let rest = &text[key + 7..];
    let open = rest.find('(').ok_or("header 'shape' is not a tuple")?;
    let close = rest[open..]
        .find(')')
        .ok_or("header 'shape' tuple is not closed")?
        + open;
    let mut shape = Vec::new();
    for part in rest[open + 1..close].split(',') {
        let p = part.trim().trim_end_matches('L');
        if p.is_empty() {
            continue;
        }
        let d: usize = p
            .parse()
            .map_err(|_| format!("header shape entry '{p}' is not a non-negative integer"))?;
        shape.push(d);
    }
    Ok(shape)
}

fn fmt_shape(shape: &[usize]) -> String {
    crate::error::shape_str(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, payload: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut out = header_text(&format!(
            "{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}"
        ));
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_big_endian_and_fortran_order() {
        // The 2x3 matrix [[1,2,3],[4,5,6]] stored column-major as big-endian float64.
        let vals = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0];
        let payload: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = parse(&npy(">f8", true, "(2, 3)", &payload)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn absurd_shape_is_refused_before_allocating() {
        let err = parse(&npy(
            "<f4",
            false,
            "(4611686018427387904, 4611686018427387904)",
            &[],
        ))
        .unwrap_err();
        assert!(err.contains("more elements"), "{err}");
        let err = parse(&npy("<f4", false, "(1000000000,)", &[0; 16])).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn strings_and_complex_are_refused() {
        assert!(
            parse(&npy("<U3", false, "(1,)", &[0; 12]))
                .unwrap_err()
                .contains("strings")
        );
        assert!(
            parse(&npy("<c8", false, "(1,)", &[0; 8]))
                .unwrap_err()
                .contains("complex")
        );
    }

    #[test]
    fn integers_are_converted_and_say_so() {
        let payload: Vec<u8> = [3i64, -2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse(&npy("<i8", false, "(2,)", &payload)).unwrap();
        assert_eq!(a.data, vec![3.0, -2.0]);
        assert!(a.was_converted());
    }
}
