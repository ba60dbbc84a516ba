/*!
The little HDF5 access the model formats need, over the pure-Rust `hdf5-reader` crate.

Everything is addressed by `/`-separated paths from the root. Existence is decided by listing a group's
members (never by matching the crate's error variants), so "not there" is `Ok(None)` and only a corrupt
file is an `Err`. Errors are plain strings; the callers add the file's path.

A file is read from disk on demand ([`H5::from_file`]: only the headers and the arrays asked for are
ever in memory) or from bytes already in memory ([`H5::from_bytes`]). Arrays are read in two steps, so
that a hostile file cannot make the loader allocate more than the model needs: [`H5::array_info`] reads
a dataset's shape and type (and refuses one whose size exceeds a bound derived from the file's size, or
[`MAX_WEIGHTS_BYTES`]); the caller checks that shape against the layer's configuration; only then does
[`H5::read_array`] decode the data, into a buffer of exactly the expected size, after checking the shape
again. Chunks are decoded one at a time, each no larger than its dataset (or 1 MiB), and the total read
from one file is bounded by [`MAX_WEIGHTS_BYTES`] too.
*/

use super::MAX_WEIGHTS_BYTES;
use crate::error::shape_str;
use crate::io::RawArray;
use hdf5_reader::group::Group;
use hdf5_reader::storage::DynStorage;
use hdf5_reader::{BytesStorage, Dataset, Datatype, FileStorage, Hdf5File, OpenOptions};
use std::cell::Cell;
use std::sync::Arc;

/// An HDF5 file, in memory or read from disk on demand.
pub struct H5 {
    file: Hdf5File,
    /// Largest number of bytes one dataset may decode to.
    max_bytes: u64,
    /// Bytes of array data decoded so far (bounded by [`MAX_WEIGHTS_BYTES`]).
    read_bytes: Cell<u64>,
    /// Read from disk on demand rather than held in memory.
    on_disk: bool,
}

/// The attributes, subgroups and datasets of one group.
#[derive(Debug, Default)]
pub struct Members {
    /// Names of the subgroups.
    pub groups: Vec<String>,
    /// Names of the datasets.
    pub datasets: Vec<String>,
}

/// A floating-point dataset's shape and type, read without touching its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayInfo {
    /// The dataset's dimensions.
    pub shape: Vec<usize>,
    /// `float16`, `float32` or `float64`.
    pub dtype: &'static str,
}

/// A chunk may decode to at most this many bytes, or to its dataset's size when that is larger.
const MAX_SMALL_CHUNK_BYTES: u64 = 1 << 20;

impl H5 {
    /// Parses an HDF5 file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<H5, String> {
        H5::open(Arc::new(BytesStorage::new(bytes)), false)
    }

    /// Opens an HDF5 file on disk; its bytes are read when they are needed, never all at once.
    pub fn from_file(file: std::fs::File) -> Result<H5, String> {
        let storage =
            FileStorage::from_file(file).map_err(|e| format!("cannot read the HDF5 file: {e}"))?;
        H5::open(Arc::new(storage), true)
    }

    /// Whether the file is read from disk on demand ([`H5::from_file`]) rather than held in memory.
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    fn open(storage: DynStorage, on_disk: bool) -> Result<H5, String> {
        let len = storage.len();
        // A dataset may be compressed, so it may decode to more bytes than the file holds; deflate
        // cannot exceed about 1032:1.
        let max_bytes = len.saturating_mul(1032).clamp(1 << 20, MAX_WEIGHTS_BYTES);
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let options = OpenOptions::default()
            .with_max_read_bytes(max)
            .with_max_chunk_bytes(max.min(256 << 20))
            // Every array is read once: keeping decoded chunks (or a copy of a whole array) would only
            // double the memory an array needs.
            .with_chunk_cache_bytes(0);
        let file = Hdf5File::from_storage_with_options(storage, options)
            .map_err(|e| format!("not a readable HDF5 file: {e}"))?;
        // libhdf5 refuses a file shorter than the end-of-file address its superblock records; so do we
        // (the data a truncated file lost may be data that would be read later, or never).
        let sb = file.superblock();
        let eof = sb.base_address.saturating_add(sb.eof_address);
        if sb.eof_address != u64::MAX && eof > len {
            return Err(format!(
                "HDF5 file is truncated: its superblock says it ends at byte {eof}, but it has {len} bytes"
            ));
        }
        Ok(H5 {
            file,
            max_bytes,
            read_bytes: Cell::new(0),
            on_disk,
        })
    }

    /// The group at `path` (`""` or `"/"` is the root), `None` if any component is missing or not a group.
    pub fn group(&self, path: &str) -> Result<Option<Group>, String> {
        let mut group = self
            .file
            .root_group()
            .map_err(|e| format!("corrupt HDF5 root group: {e}"))?;
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let members = members_of(&group, &at)?;
            if !members.groups.iter().any(|g| g == part) {
                return Ok(None);
            }
            at.push('/');
            at.push_str(part);
            group = group
                .group(part)
                .map_err(|e| format!("corrupt HDF5 group {at}: {e}"))?;
        }
        Ok(Some(group))
    }

    /// The subgroups and datasets of the group at `path`; `None` if there is no such group.
    pub fn members(&self, path: &str) -> Result<Option<Members>, String> {
        match self.group(path)? {
            None => Ok(None),
            Some(g) => members_of(&g, path).map(Some),
        }
    }

    /// Whether `path` names a dataset.
    pub fn has_dataset(&self, path: &str) -> Result<bool, String> {
        let (parent, leaf) = split_path(path);
        Ok(match self.members(parent)? {
            Some(m) => m.datasets.iter().any(|d| d == leaf),
            None => false,
        })
    }

    /// A string attribute of the group at `group_path` (scalar, fixed-length or variable-length), or
    /// `None` if the group or the attribute is missing.
    pub fn attr_string(&self, group_path: &str, name: &str) -> Result<Option<String>, String> {
        let Some(group) = self.group(group_path)? else {
            return Ok(None);
        };
        let attrs = group
            .attributes()
            .map_err(|e| format!("corrupt attributes on {}: {e}", show(group_path)))?;
        let Some(attr) = attrs.into_iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        let strings = if attr.shape.is_empty() {
            attr.read_string().map(|s| vec![s])
        } else {
            attr.read_strings()
        }
        .map_err(|e| {
            format!(
                "attribute '{name}' on {} is not a string: {e}",
                show(group_path)
            )
        })?;
        match strings.as_slice() {
            [one] => Ok(Some(one.clone())),
            _ => Err(format!(
                "attribute '{name}' on {} holds {} strings; expected one",
                show(group_path),
                strings.len()
            )),
        }
    }

    /// A list-of-strings attribute as Keras writes them (`layer_names`, `weight_names`): an array of
    /// fixed- or variable-length strings; an empty list may be stored as an empty float array; a long
    /// list may be split into `name0`, `name1`, … (Keras's `save_attributes_to_hdf5_group`). `None` if
    /// the group or the attribute is missing.
    pub fn attr_strings(
        &self,
        group_path: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let Some(group) = self.group(group_path)? else {
            return Ok(None);
        };
        let attrs = group
            .attributes()
            .map_err(|e| format!("corrupt attributes on {}: {e}", show(group_path)))?;
        let read = |attr: &hdf5_reader::Attribute| -> Result<Vec<String>, String> {
            if !attr.shape.is_empty() && attr.num_elements().map_err(|e| e.to_string())? == 0 {
                return Ok(Vec::new());
            }
            let r = if attr.shape.is_empty() {
                attr.read_string().map(|s| vec![s])
            } else {
                attr.read_strings()
            };
            r.map_err(|e| {
                format!(
                    "attribute '{}' on {} is not a list of strings: {e}",
                    attr.name,
                    show(group_path)
                )
            })
        };
        if let Some(attr) = attrs.iter().find(|a| a.name == name) {
            return read(attr).map(Some);
        }
        let mut out = Vec::new();
        let mut found = false;
        for k in 0.. {
            let chunk = format!("{name}{k}");
            match attrs.iter().find(|a| a.name == chunk) {
                Some(attr) => {
                    found = true;
                    out.extend(read(attr)?);
                }
                None => break,
            }
        }
        Ok(found.then_some(out))
    }

    /// The shape and type of the floating-point (float16/32/64, either byte order; Keras 3's bfloat16)
    /// dataset at `path`,
    /// without reading its data. Refuses a dataset larger than one file of this size can hold, and a
    /// chunked dataset whose chunks are larger than the dataset itself (and 1 MiB).
    pub fn array_info(&self, path: &str) -> Result<ArrayInfo, String> {
        let ds = self.dataset(path)?;
        let (info, _) = self.checked_info(&ds, path)?;
        Ok(info)
    }

    /// Reads the floating-point dataset at `path`, whose shape must be `expected` (the shape
    /// [`H5::array_info`] returned, once the caller has checked it against the model's configuration).
    /// Exactly `expected`'s size is allocated for the values.
    pub fn read_array(&self, path: &str, expected: &[usize]) -> Result<RawArray, String> {
        let ds = self.dataset(path)?;
        let (info, count) = self.checked_info(&ds, path)?;
        if info.shape != expected {
            return Err(format!(
                "dataset {path} has shape {}; expected {}",
                shape_str(&info.shape),
                shape_str(expected)
            ));
        }
        let elem = elem_size(info.dtype);
        let total = self
            .read_bytes
            .get()
            .saturating_add(count.saturating_mul(elem));
        if total > MAX_WEIGHTS_BYTES {
            return Err(format!(
                "the arrays read so far, with dataset {path} {}, exceed {}; refusing to read more",
                shape_str(&info.shape),
                show_bytes(MAX_WEIGHTS_BYTES)
            ));
        }
        self.read_bytes.set(total);
        let n = usize::try_from(count).map_err(|_| format!("dataset {path} is too large"))?;
        let cannot = |e: hdf5_reader::error::Error| format!("cannot read dataset {path}: {e}");
        let data: Vec<f64> = match info.dtype {
            "float64" => {
                let mut v = vec![0f64; n];
                ds.read_into(&mut v).map_err(cannot)?;
                v
            }
            "float32" => {
                let mut v = vec![0f32; n];
                ds.read_into(&mut v).map_err(cannot)?;
                v.into_iter().map(f64::from).collect()
            }
            "bfloat16" => {
                // Opaque bytes are written as the values lie in memory: ml_dtypes' bfloat16 on the
                // little-endian machines Keras runs on.
                let mut b = vec![0u8; n * 2];
                ds.read_native_bytes_into(&mut b).map_err(cannot)?;
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                    .collect()
            }
            _ => {
                let mut b = vec![0u8; n * 2];
                ds.read_native_bytes_into(&mut b).map_err(cannot)?;
                b.chunks_exact(2)
                    .map(|c| half::f16::from_ne_bytes([c[0], c[1]]).to_f64())
                    .collect()
            }
        };
        Ok(RawArray::new(info.shape, data, info.dtype))
    }

    fn dataset(&self, path: &str) -> Result<Dataset, String> {
        self.file
            .dataset(path)
            .map_err(|e| format!("cannot open dataset {path}: {e}"))
    }

    /// The dataset's shape and type, and its element count, with every size checked.
    fn checked_info(&self, ds: &Dataset, path: &str) -> Result<(ArrayInfo, u64), String> {
        let shape: Vec<usize> = ds
            .shape()
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| format!("dataset {path} has a dimension of {d}"))
            })
            .collect::<Result<_, _>>()?;
        let dtype = match ds.dtype() {
            Datatype::FloatingPoint { size: 2, .. } => "float16",
            Datatype::FloatingPoint { size: 4, .. } => "float32",
            Datatype::FloatingPoint { size: 8, .. } => "float64",
            // Keras 3 saves a bfloat16 variable (a `bfloat16` dtype policy's) as 2-byte opaque values
            // marked with a `dtype="bfloat16"` attribute (`saving_lib.H5Entry.__setitem__`).
            Datatype::Opaque { size: 2, .. } if keras_bfloat16(ds) => "bfloat16",
            Datatype::FloatingPoint { size, .. } => {
                return Err(format!(
                    "dataset {path} holds {}-bit floats; expected float16, float32 or float64",
                    *size as u32 * 8
                ));
            }
            other => {
                return Err(format!(
                    "dataset {path} holds {}; expected floating-point weights",
                    describe_dtype(other)
                ));
            }
        };
        let elem = elem_size(dtype);
        let too_big = || {
            format!(
                "dataset {path} claims shape {}, more data than the file can hold",
                shape_str(&shape)
            )
        };
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(too_big)?;
        let bytes = count.checked_mul(elem).ok_or_else(too_big)?;
        if bytes > self.max_bytes {
            return Err(if self.max_bytes == MAX_WEIGHTS_BYTES {
                format!(
                    "dataset {path} claims shape {} ({}), more than the {} rnntrace reads from a \
                     weights file",
                    shape_str(&shape),
                    show_bytes(bytes),
                    show_bytes(MAX_WEIGHTS_BYTES)
                )
            } else {
                too_big()
            });
        }
        if let Some(chunk) = ds.chunks() {
            let chunk_bytes = chunk
                .iter()
                .try_fold(elem, |acc, &d| acc.checked_mul(u64::from(d)));
            if chunk_bytes.is_none_or(|c| c > bytes.max(MAX_SMALL_CHUNK_BYTES)) {
                let chunk: Vec<usize> = chunk.iter().map(|&d| d as usize).collect();
                return Err(format!(
                    "dataset {path} of shape {} is stored in chunks of shape {}, larger than the \
                     dataset itself; refusing to decode it",
                    shape_str(&shape),
                    shape_str(&chunk)
                ));
            }
        }
        Ok((ArrayInfo { shape, dtype }, count))
    }
}

/// Whether a dataset carries Keras 3's `dtype="bfloat16"` attribute.
fn keras_bfloat16(ds: &Dataset) -> bool {
    ds.attributes()
        .iter()
        .any(|a| a.name == "dtype" && a.read_string().is_ok_and(|s| s == "bfloat16"))
}

fn elem_size(dtype: &str) -> u64 {
    match dtype {
        "float16" | "bfloat16" => 2,
        "float32" => 4,
        _ => 8,
    }
}

/// A byte count as a user reads it: `3.0 GiB`, `768.0 MiB`, `4096 bytes`.
pub fn show_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

fn members_of(group: &Group, path: &str) -> Result<Members, String> {
    let (groups, datasets) = group
        .member_names()
        .map_err(|e| format!("corrupt HDF5 group {}: {e}", show(path)))?;
    Ok(Members { groups, datasets })
}

/// `("a/b", "c")` for `"a/b/c"`.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn show(path: &str) -> String {
    if path.trim_matches('/').is_empty() {
        "the root group".into()
    } else {
        format!("group {path}")
    }
}

fn describe_dtype(dtype: &Datatype) -> String {
    match dtype {
        Datatype::FixedPoint { size, signed, .. } => {
            format!("{}int{}", if *signed { "" } else { "u" }, *size as u32 * 8)
        }
        Datatype::String { .. } | Datatype::VarLen { .. } => "strings".into(),
        Datatype::Compound { .. } => "compound records".into(),
        _ => "a non-numeric type".into(),
    }
}
