/*!
Readers for the array containers users bring: `.npy`, `.npz`, JSON nested lists, PyTorch `torch.save`
archives ([`pickle`]) and safetensors files.

Each reader turns bytes into a [`RawArray`]: a shape and `f64` values in C order (every `f32` is exact in
`f64`). Readers check everything a hostile file could lie about (header sizes, element counts against the
real byte count, nesting depth, dtypes) before allocating, and never panic. They know nothing of cells;
the `weights` module gives the arrays their meaning.
*/

pub mod json;
pub mod npy;
pub mod npz;
pub mod npz_writer;
pub mod pickle;
pub mod safetensors;
pub mod stdio;
pub mod temp;
pub mod write;

use crate::error::{Error, Result, shape_str};
use std::path::Path;

/// A dense array as read from a file: shape plus values in row-major (C) order.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArray {
    /// Dimensions, outermost first. Empty for a scalar.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values in C order.
    pub data: Vec<f64>,
    /// The dtype as stored (`float32`, `float64`, `int64`, `bool`, `json`), for messages.
    pub dtype: String,
}

impl RawArray {
    /// Builds an array, checking that the shape matches the number of values.
    pub fn new(shape: Vec<usize>, data: Vec<f64>, dtype: impl Into<String>) -> RawArray {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        RawArray {
            shape,
            data,
            dtype: dtype.into(),
        }
    }

    /// The shape as a user reads it: `(3, 16)`.
    pub fn shape_str(&self) -> String {
        shape_str(&self.shape)
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The array with its first two axes swapped: time-major (timesteps, sequences, …) data, as PyTorch's
    /// `batch_first=False` modules take and return it, read as (sequences, timesteps, …). Arrays of fewer than
    /// 3 dimensions are returned as they are.
    pub fn swap_leading_axes(&self) -> RawArray {
        if self.shape.len() < 3 {
            return self.clone();
        }
        let (a, b) = (self.shape[0], self.shape[1]);
        let inner: usize = self.shape[2..].iter().product();
        let mut data = Vec::with_capacity(self.data.len());
        for j in 0..b {
            for i in 0..a {
                let at = (i * b + j) * inner;
                data.extend_from_slice(&self.data[at..at + inner]);
            }
        }
        let mut shape = self.shape.clone();
        shape.swap(0, 1);
        RawArray {
            shape,
            data,
            dtype: self.dtype.clone(),
        }
    }

    /// True when the values came from an integer or boolean array and were converted.
    pub fn was_converted(&self) -> bool {
        !(self.dtype.starts_with("float") || self.dtype == "json")
    }
}

/// The most read from an input that is not a regular file (a pipe, a FIFO, `/dev/zero`): such a source
/// has no size to check first, and could otherwise be read until memory runs out.
pub const MAX_STREAM_BYTES: u64 = 1 << 30;

/// Reads a whole file, turning the OS error into a message that names the file. A source that is not a
/// regular file is read up to [`MAX_STREAM_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    if path.is_dir() {
        return Err(Error::input(path, "is a directory; expected a file"));
    }
    let err = |e: std::io::Error| Error::input(path, io_reason(&e));
    let file = std::fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if meta.is_file() {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&file).read_to_end(&mut bytes).map_err(err)?;
        return Ok(bytes);
    }
    let mut bytes = Vec::new();
    file.take(MAX_STREAM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_STREAM_BYTES {
        return Err(Error::input(
            path,
            format!(
                "is not a regular file and gave more than {} MiB without ending; save the data to a file",
                MAX_STREAM_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// A short, lower-case reason for an I/O error ("no such file", "permission denied").
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".to_string(),
        PermissionDenied => "permission denied".to_string(),
        _ => {
            let s = e.to_string();
            // Drop the "(os error N)" tail: it tells a user nothing.
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s.to_lowercase(),
            }
        }
    }
}

/// Reads one `.npy` file from disk.
pub fn read_npy(path: &Path) -> Result<RawArray> {
    let bytes = read_file(path)?;
    npy::parse(&bytes).map_err(|what| Error::input(path, what))
}

#[cfg(test)]
mod props {
    //! Property tests: no byte string makes a reader panic, and valid files read back exactly.
    use super::{json, npy, npz};
    use proptest::prelude::*;

    use super::npy::header;

    /// A valid .npz holding one float32 array, as np.savez writes it (deflated here).
    fn small_npz() -> Vec<u8> {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("kernel.npy", opts).unwrap();
        let mut bytes = header("<f4", false, &[2, 3]);
        bytes.extend((0..6).flat_map(|i| (i as f32).to_le_bytes()));
        z.write_all(&bytes).unwrap();
        z.finish().unwrap();
        buf.into_inner()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        #[test]
        fn npy_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = npy::parse(&bytes);
        }

        #[test]
        fn npy_never_panics_after_a_valid_prefix(tail in proptest::collection::vec(any::<u8>(), 0..300),
                                                 descr in prop::sample::select(vec!["<f4", ">f8", "<i8", "|b1", "<U3", "<c8", "|O", "<f2", "<f16", "zz"]),
                                                 shape in proptest::collection::vec(0usize..1_000_000_000_000, 0..4),
                                                 fortran in any::<bool>()) {
            let mut bytes = header(descr, fortran, &shape);
            bytes.extend_from_slice(&tail);
            let _ = npy::parse(&bytes);
        }

        #[test]
        fn npz_reads_what_it_wrote(_x in 0..1u8) {
            let arrays = npz::parse(&small_npz()).unwrap();
            prop_assert_eq!(&arrays[0].0, "kernel");
            prop_assert_eq!(&arrays[0].1.shape, &vec![2, 3]);
        }

        #[test]
        fn npy_round_trips_f32(values in proptest::collection::vec(-1e30f32..1e30, 1..64), big in any::<bool>()) {
            let mut bytes = header(if big { ">f4" } else { "<f4" }, false, &[values.len()]);
            for v in &values {
                bytes.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
            }
            let a = npy::parse(&bytes).unwrap();
            prop_assert_eq!(a.data, values.iter().map(|v| *v as f64).collect::<Vec<_>>());
        }

        #[test]
        fn npz_never_panics_when_corrupted(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = small_npz();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let _ = npz::parse(&bytes);
        }

        #[test]
        fn npz_never_panics_on_any_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = npz::parse(&bytes);
            if bytes.len() >= 2 { bytes[0] = b'P'; bytes[1] = b'K'; }
            let _ = npz::parse(&bytes);
        }

        #[test]
        fn pickle_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(p) = super::pickle::unpickle(&bytes) {
                let _ = super::pickle::find_tensors(&p);
            }
        }

        #[test]
        fn torch_archives_never_panic_when_corrupted(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                                     cut in any::<usize>()) {
            let mut bytes = include_bytes!("../../fixtures/torch_files/lstm_whole.pt").to_vec();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let _ = super::pickle::parse_torch_zip(&bytes);
            let _ = super::pickle::parse_torch_zip(&bytes[..cut % bytes.len()]);
        }

        #[test]
        fn safetensors_never_panics_when_corrupted(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = include_bytes!("../../fixtures/torch_files/lstm_sd.safetensors").to_vec();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let _ = super::safetensors::parse(&bytes);
        }

        #[test]
        fn json_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = json::parse(&bytes);
        }

        #[test]
        fn json_never_panics_on_json_like_text(text in "[\\[\\]{}0-9.,:\" eNaIfinty-]{0,200}") {
            let _ = json::parse(text.as_bytes());
        }
    }
}
