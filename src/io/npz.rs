/*!
`.npz` archives: a zip of `.npy` members, as `np.savez` writes them.

Members are read in archive order (so `np.savez(p, *arrays)` yields `arr_0, arr_1, …` in order); each
member's declared size is checked against a cap before it is decompressed, and its bytes go through the same
hardened [`super::npy::parse`].
*/

use super::{RawArray, npy};
use std::io::{Cursor, Read};

/// No member of a weights or input archive is trusted to decompress past this many bytes (4 GiB).
pub const MAX_MEMBER_BYTES: u64 = 4 << 30;

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
    let mut out = Vec::with_capacity(zip.len());
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
        if declared > MAX_MEMBER_BYTES || declared > (bytes.len() as u64).saturating_mul(1032) {
            return Err(format!(
                "member '{name}' claims {declared} bytes uncompressed; refusing to inflate it"
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
        out.push((key, array));
    }
    if out.is_empty() {
        return Err("archive holds no arrays".into());
    }
    Ok(out)
}
