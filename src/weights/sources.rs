/*!
Reading a weights file, whatever its container, into arrays that are either named or positional.

Containers: a JSON list (`get_weights()` order) or object, an `.npz` (named, or `arr_0…` from
`np.savez(p, *arrays)`), a directory of `.npy` files, a PyTorch `torch.save` archive (`.pt`/`.pth`: a state
dict, a checkpoint dict, or a whole pickled module, read by [`crate::io::pickle`]) or a safetensors file. The container is recognised by its content, not
only its extension, so a misnamed file still gets a precise message.
*/

use crate::error::{Error, Result};
use crate::io::{self, RawArray, json};
use std::path::{Path, PathBuf};

/// Arrays read from one weights source.
#[derive(Debug, Clone)]
pub struct NamedArrays {
    /// The file or directory they came from (for messages).
    pub path: PathBuf,
    /// True when the arrays have no names, only an order (JSON list, `arr_0…` npz).
    pub positional: bool,
    /// The arrays in file order; names are empty when `positional`.
    pub arrays: Vec<(String, RawArray)>,
    /// What the container said about itself beyond the arrays (PyTorch files).
    pub meta: SourceMeta,
}

/// Facts a PyTorch file records besides its tensors.
#[derive(Debug, Clone, Default)]
pub struct SourceMeta {
    /// The class of a whole pickled module (`__main__.Net`), when the file is one.
    pub module_class: Option<String>,
    /// `batch_first` of each recurrent module of a whole pickled module, by attribute prefix (`rnn.`).
    pub batch_first: Vec<(String, bool)>,
    /// The container, for messages: `PyTorch archive`, `safetensors`, …
    pub container: Option<&'static str>,
}

impl NamedArrays {
    /// The array called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&RawArray> {
        self.arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// The names present, for "found: …" messages.
    pub fn names(&self) -> String {
        self.arrays
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// An input error about this source.
    pub fn error(&self, what: impl Into<String>) -> Error {
        Error::input(&self.path, what)
    }
}

/// True for a zip holding a Keras 3 model (`config.json` and `model.weights.h5`).
fn is_keras_archive(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map(|z| {
            z.file_names()
                .flatten()
                .any(|n| n == "model.weights.h5" || n == "config.json")
        })
        .unwrap_or(false)
}

/// What a file's first bytes say it is.
enum Container {
    Json,
    Npz,
    Torch,
    TorchLegacy,
    Pickle,
    Safetensors,
    Npy,
    Hdf5,
    Unknown,
}

fn sniff(bytes: &[u8], torch_ext: bool) -> Container {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if bytes.starts_with(b"PK") {
        if io::pickle::is_torch_zip(bytes) || (torch_ext && !io::npz::opens(bytes)) {
            Container::Torch
        } else {
            Container::Npz
        }
    } else if bytes.starts_with(io::pickle::LEGACY_MAGIC) {
        Container::TorchLegacy
    } else if bytes.len() > 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        Container::Pickle
    } else if io::safetensors::looks_like(bytes) {
        Container::Safetensors
    } else if bytes.starts_with(b"\x93NUMPY") {
        Container::Npy
    } else if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        Container::Hdf5
    } else if matches!(first, Some(b'[' | b'{' | b'"' | b'-' | b'0'..=b'9')) {
        // JSON (a top-level number or string is refused by the parser with a precise message).
        Container::Json
    } else {
        Container::Unknown
    }
}

/// Reads every array in a weights source. `expected` names the arrays a directory should hold.
pub fn load_arrays(path: &Path, expected: &[&str]) -> Result<NamedArrays> {
    if path.is_dir() {
        return load_dir(path, expected);
    }
    let bytes = io::read_file(path)?;
    if bytes.is_empty() {
        return Err(Error::input(
            path,
            "file is empty; expected a JSON list/object of arrays, an .npz archive or a directory of .npy files",
        ));
    }
    let err = |what: String| Error::input(path, what);
    let torch_ext = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["pt", "pth", "bin", "ckpt", "tar"].contains(&e.to_ascii_lowercase().as_str())
    });
    match sniff(&bytes, torch_ext) {
        Container::Json => match json::parse(&bytes).map_err(err)? {
            json::Document::List(arrays) => Ok(NamedArrays {
                path: path.to_path_buf(),
                positional: true,
                arrays: arrays.into_iter().map(|a| (String::new(), a)).collect(),
                meta: SourceMeta::default(),
            }),
            json::Document::Named(arrays) => Ok(NamedArrays { path: path.to_path_buf(), positional: false, arrays, meta: SourceMeta::default() }),
        },
        Container::Npz => {
            if is_keras_archive(&bytes) {
                return Err(err("is a saved Keras model (.keras), not loose weight arrays; run it with `rnntrace run --model`, or list it with `rnntrace inspect --model`".into()));
            }
            let arrays = io::npz::parse(&bytes).map_err(err)?;
            let positional = arrays.iter().enumerate().all(|(i, (n, _))| *n == format!("arr_{i}"));
            Ok(NamedArrays { path: path.to_path_buf(), positional, arrays, meta: SourceMeta::default() })
        }
        Container::Torch => {
            let t = io::pickle::parse_torch_zip(&bytes).map_err(err)?;
            Ok(NamedArrays {
                path: path.to_path_buf(),
                positional: false,
                arrays: t.tensors,
                meta: SourceMeta {
                    module_class: t.module_class,
                    batch_first: t.batch_first,
                    container: Some("PyTorch archive"),
                },
            })
        }
        Container::TorchLegacy => Err(err(
            "is a PyTorch file in the legacy (pre-1.6, non-zip) torch.save format, which rnntrace does not read; re-save it in the zip format: torch.save(torch.load(OLD, weights_only=True), NEW)".into(),
        )),
        Container::Pickle => Err(err(
            "is a bare Python pickle, not a torch.save zip archive (rnntrace never unpickles arbitrary files); save the weights with torch.save(model.state_dict(), PATH) or safetensors".into(),
        )),
        Container::Safetensors => {
            let arrays = io::safetensors::parse(&bytes).map_err(err)?;
            Ok(NamedArrays {
                path: path.to_path_buf(),
                positional: false,
                arrays,
                meta: SourceMeta { container: Some("safetensors"), ..SourceMeta::default() },
            })
        }
        Container::Npy => Err(err(format!(
            "is a single .npy array; expected several arrays ({}): a JSON list, an .npz archive or a directory of .npy files",
            expected.join(", ")
        ))),
        Container::Hdf5 => Err(err(
            "is an HDF5 file (a saved model? run it with `rnntrace run --model`); expected loose weight arrays: a JSON list, an .npz archive or a directory of .npy files".into(),
        )),
        Container::Unknown => Err(err(
            "is neither JSON, an .npz archive, a PyTorch .pt/.pth archive, a safetensors file nor a directory of .npy files (unrecognised content)".into(),
        )),
    }
}

fn load_dir(path: &Path, expected: &[&str]) -> Result<NamedArrays> {
    let mut arrays = Vec::new();
    for name in expected {
        let file = path.join(format!("{name}.npy"));
        if file.exists() {
            arrays.push((name.to_string(), io::read_npy(&file)?));
        }
    }
    if arrays.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(path)
            .map_err(|e| Error::input(path, io::io_reason(&e)))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        found.sort();
        found.truncate(12);
        return Err(Error::input(
            path,
            format!(
                "directory holds none of {}; found: {}",
                expected
                    .iter()
                    .map(|n| format!("{n}.npy"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            ),
        ));
    }
    Ok(NamedArrays {
        path: path.to_path_buf(),
        positional: false,
        arrays,
        meta: SourceMeta::default(),
    })
}
