/*!
The little HDF5 access the model formats need, over the pure-Rust `hdf5-reader` crate.

Everything is addressed by `/`-separated paths from the root. Existence is decided by listing a group's
members (never by matching the crate's error variants), so "not there" is `Ok(None)` and only a corrupt
file is an `Err`. Every dataset's size is checked against a bound derived from the file's size before
anything is allocated (the crate enforces the same bound again through `max_read_bytes`). Errors are
plain strings; the callers add the file's path.
*/

use super::MAX_WEIGHTS_BYTES;
use crate::error::shape_str;
use crate::io::RawArray;
use hdf5_reader::group::Group;
use hdf5_reader::{Datatype, Hdf5File, OpenOptions};

/// An HDF5 file held in memory.
pub struct H5 {
    file: Hdf5File,
    /// Largest number of bytes one dataset may decode to.
    max_bytes: u64,
}

/// The attributes, subgroups and datasets of one group.
#[derive(Debug, Default)]
pub struct Members {
    /// Names of the subgroups.
    pub groups: Vec<String>,
    /// Names of the datasets.
    pub datasets: Vec<String>,
}

impl H5 {
    /// Parses an HDF5 file from its bytes.
    pub fn open(bytes: Vec<u8>) -> Result<H5, String> {
        // A dataset may be compressed, so it may decode to more bytes than the file holds; deflate
        // cannot exceed about 1032:1.
        let max_bytes = (bytes.len() as u64)
            .saturating_mul(1032)
            .clamp(1 << 20, MAX_WEIGHTS_BYTES);
        let options = OpenOptions::default()
            .with_max_read_bytes(usize::try_from(max_bytes).unwrap_or(usize::MAX))
            .with_max_chunk_bytes(
                usize::try_from(max_bytes)
                    .unwrap_or(usize::MAX)
                    .min(256 << 20),
            );
        let len = bytes.len() as u64;
        let file = Hdf5File::from_vec_with_options(bytes, options)
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
        Ok(H5 { file, max_bytes })
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

    /// Reads a floating-point dataset (float16/32/64, either byte order) into a [`RawArray`].
    pub fn read_array(&self, path: &str) -> Result<RawArray, String> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| format!("cannot open dataset {path}: {e}"))?;
        let shape: Vec<usize> = ds
            .shape()
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| format!("dataset {path} has a dimension of {d}"))
            })
            .collect::<Result<_, _>>()?;
        let size = match ds.dtype() {
            Datatype::FloatingPoint { size, .. } if matches!(size, 2 | 4 | 8) => *size as u64,
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
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .filter(|&n| n.checked_mul(size).is_some_and(|b| b <= self.max_bytes))
            .ok_or_else(|| {
                format!(
                    "dataset {path} claims shape {}, more data than the file can hold",
                    shape_str(&shape)
                )
            })?;
        let data: Vec<f64> = match size {
            4 => ds
                .read_array::<f32>()
                .map(|a| a.iter().map(|&v| v as f64).collect()),
            8 => ds.read_array::<f64>().map(|a| a.iter().copied().collect()),
            _ => ds.read_native_bytes().map(|b| {
                b.chunks_exact(2)
                    .map(|c| half::f16::from_ne_bytes([c[0], c[1]]).to_f64())
                    .collect()
            }),
        }
        .map_err(|e| format!("cannot read dataset {path}: {e}"))?;
        if data.len() as u64 != count {
            return Err(format!(
                "dataset {path} decoded to {} values; its shape {} needs {count}",
                data.len(),
                shape_str(&shape)
            ));
        }
        let dtype = match size {
            2 => "float16",
            4 => "float32",
            _ => "float64",
        };
        Ok(RawArray::new(shape, data, dtype))
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
