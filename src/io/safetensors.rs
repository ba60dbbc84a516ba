/*!
safetensors files (`safetensors.torch.save_file`, `save_model`), read with the `safetensors` crate.

The crate validates the header (JSON, offsets inside the buffer, byte counts matching shapes and dtypes);
this module adds a tighter header bound, an element budget, and the conversion of every float dtype
(float32/64, float16, bfloat16) and the integer ones to [`RawArray`]s, in file (offset) order.
*/

use super::RawArray;
use super::pickle::{Dtype, MAX_ELEMENTS};
use safetensors::SafeTensors;

/// A header longer than this is refused (the crate's own bound is 100 MB; a model of thousands of
/// tensors needs well under 1 MiB).
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// True when `bytes` start like a safetensors file: a little-endian header length, then `{`.
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.len() >= 10 && bytes[8] == b'{' && bytes[..8].iter().any(|&b| b != 0)
}

fn dtype(d: safetensors::Dtype) -> Result<Dtype, String> {
    use safetensors::Dtype as S;
    Ok(match d {
        S::F32 => Dtype::F32,
        S::F64 => Dtype::F64,
        S::F16 => Dtype::F16,
        S::BF16 => Dtype::Bf16,
        S::I64 => Dtype::I64,
        S::I32 => Dtype::I32,
        S::I16 => Dtype::I16,
        S::I8 => Dtype::I8,
        S::U8 => Dtype::U8,
        S::BOOL => Dtype::Bool,
        other => {
            return Err(format!(
                "dtype {other:?}, which rnntrace does not read (F32, F64, F16, BF16 and integer tensors are read)"
            ));
        }
    })
}

/// Parses a whole safetensors file into `(name, array)` pairs in the order the data lies in the file.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, RawArray)>, String> {
    if bytes.len() < 8 {
        return Err("is too short for a safetensors file (no 8-byte header length)".into());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "safetensors header claims {n} bytes; refusing more than {MAX_HEADER_BYTES}"
        ));
    }
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("is not a valid safetensors file: {e}"))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("is not a valid safetensors file: {e}"))?;
    let mut total = 0u64;
    let mut out = Vec::new();
    for name in meta.offset_keys() {
        let view = st
            .tensor(&name)
            .map_err(|e| format!("tensor '{name}': {e}"))?;
        let d = dtype(view.dtype()).map_err(|e| format!("tensor '{name}' has {e}"))?;
        let shape = view.shape().to_vec();
        let count = shape
            .iter()
            .try_fold(1u64, |a, &s| a.checked_mul(s as u64))
            .unwrap_or(u64::MAX);
        total = total.saturating_add(count);
        if total > MAX_ELEMENTS {
            return Err(format!(
                "tensors hold more than {MAX_ELEMENTS} elements in all; refusing"
            ));
        }
        let data = view.data();
        let es = d.size();
        if data.len() as u64 != count * es as u64 {
            return Err(format!(
                "tensor '{name}' has shape {shape:?} but {} bytes of {}",
                data.len(),
                d.name()
            ));
        }
        let values = data.chunks_exact(es).map(|c| d.decode(c, false)).collect();
        out.push((name, RawArray::new(shape, values, d.name())));
    }
    if out.is_empty() {
        return Err("safetensors file holds no tensors".into());
    }
    Ok(out)
}
