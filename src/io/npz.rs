/*!
`.npz` archives: a zip of `.npy` members, as `np.savez` writes them.

Members are read in archive order (so `np.savez(p, *arrays)` yields `arr_0, arr_1, …` in order); each
member's declared size is checked against a cap before it is decompressed, and its bytes go through the same
hardened [`super::npy::parse`].
*/

use super::{RawArray, npy};
use std::io::{Cursor, Read};

/// No member of an archive is trusted to decompress past this many bytes (1 GiB: the kernels of a
/// 4096-unit LSTM take 0.5 GiB in float32).
pub const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// Nor the members together past this many (2 GiB).
pub const MAX_TOTAL_BYTES: u64 = 2 << 30;

/// True when `bytes` open as a zip archive at all.
pub fn opens(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(Cursor::new(bytes)).is_ok()
}

/// Parses an `.npz` held in memory into `(name without .npy, array)` pairs in archive order.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, RawArray)>, String> {
    if bytes.is_empty() {
        return Err("file is empty; expected a NumPy .npz archive".into());
    }
    if bytes.starts_with(b"\x93NUMPY") {
        return Err("is a single .npy array, not an .npz archive".into());
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a valid .npz (zip) archive: {e}"))?;
    let mut out: Vec<(String, RawArray)> = Vec::with_capacity(zip.len());
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| format!("corrupt .npz member #{i}: {e}"))?;
        if member.is_dir() {
            continue;
        }
        let name = member
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("member #{i}"));
        let declared = member.size();
        total = total.saturating_add(declared);
        if declared > MAX_MEMBER_BYTES
            || declared > (bytes.len() as u64).saturating_mul(1032)
            || total > MAX_TOTAL_BYTES
        {
            return Err(format!(
                "member '{name}' claims {declared} bytes uncompressed (archive total so far {total}); refusing to inflate more than {MAX_MEMBER_BYTES} per member or {MAX_TOTAL_BYTES} in all"
            ));
        }
        let mut buf = Vec::with_capacity(declared as usize);
        (&mut member)
            .take(declared + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("member '{name}' cannot be decompressed: {e}"))?;
        if buf.len() as u64 != declared {
            return Err(format!(
                "member '{name}' decompresses to {} bytes, not the {declared} its header declares",
                buf.len()
            ));
        }
        let array = npy::parse(&buf).map_err(|e| format!("member '{name}': {e}"))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("holds two members named '{key}'"));
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("holds two members named '{key}'"));
        }
        out.push((key, array));
    }
    if out.is_empty() {
        return Err("archive holds no arrays".into());
    }
    Ok(out)
}
