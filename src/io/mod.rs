/*!
Readers for the array containers users bring: `.npy`, `.npz` and JSON nested lists.

Each reader turns bytes into a [`RawArray`]: a shape and `f64` values in C order (every `f32` is exact in
`f64`). Readers check everything a hostile file could lie about (header sizes, element counts against the
real byte count, nesting depth, dtypes) before allocating, and never panic. They know nothing of cells;
the `weights` module gives the arrays their meaning.
*/

pub mod json;
pub mod npy;
pub mod npz;
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

    /// True when the values came from an integer or boolean array and were converted.
    pub fn was_converted(&self) -> bool {
        !(self.dtype.starts_with("float") || self.dtype == "json")
    }
}

/// Reads a whole file, turning the OS error into a message that names the file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return Err(Error::input(path, "is a directory; expected a file"));
    }
    std::fs::read(path).map_err(|e| Error::input(path, io_reason(&e)))
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
