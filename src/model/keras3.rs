/*!
`.keras` archives: a zip of `metadata.json`, `config.json` and `model.weights.h5`.

Keras 3 (and tf-keras ≥ 2.13, whose `.keras` is the same format) stores layer k's arrays in
`model.weights.h5` under `layers/<key>/`, where `<key>` is the snake_case class name, de-duplicated in
`model.layers` order (`lstm`, `lstm_1`; see [`super::config::to_snake_case`]):

| layer | arrays (`get_weights()` order) |
|---|---|
| LSTM / GRU / SimpleRNN | `layers/<key>/cell/vars/0, 1, 2` (kernel, recurrent_kernel, bias) |
| Bidirectional | `layers/<key>/forward_layer/cell/vars/…`, `layers/<key>/backward_layer/cell/vars/…` |
| Dense | `layers/<key>/vars/0, 1` (kernel, bias) |
| TimeDistributed(Dense) | `layers/<key>/layer/vars/0, 1` |

Keras 3 also writes a `name` attribute (the layer's name) on each `layers/<key>/vars` group; when it is
there it decides which group belongs to which layer, and the naming rule is the fallback (tf-keras writes
no such attribute). Optimizer state (`optimizer/vars/…`) is ignored.
*/

use super::build::{self, Located, Part, WeightSource};
use super::config::{self, LayerSpec};
use super::h5::{H5, show_bytes};
use super::{
    MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, MAX_WEIGHTS_IN_MEMORY, ModelFormat, SavedModel,
    major_version,
};
use crate::error::{Error, Result};
use crate::io::RawArray;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

/// The weights member of the archive.
const WEIGHTS_MEMBER: &str = "model.weights.h5";

/// Reads a `.keras` archive from `file`, `len` bytes long.
pub fn load(path: &Path, file: File, len: u64) -> Result<SavedModel> {
    let err = |what: String| Error::input(path, what);
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| err(format!("not a valid .keras archive (zip): {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| {
            n.map(|n| n.into_owned())
                .unwrap_or_else(|_| "<unreadable name>".into())
        })
        .collect();
    let has = |n: &str| names.iter().any(|m| m == n);
    if !has("config.json") {
        let hint = if names.iter().any(|n| n.ends_with(".npy")) {
            " (this looks like a NumPy .npz archive, not a model)"
        } else {
            ""
        };
        return Err(err(format!(
            "zip archive has no config.json, so it is not a Keras .keras model{hint}; members: {}",
            list(&names)
        )));
    }
    let config_text = read_text(&mut zip, "config.json", len).map_err(&err)?;
    let keras_version = if has("metadata.json") {
        let meta = read_text(&mut zip, "metadata.json", len).map_err(&err)?;
        let v: serde_json::Value = serde_json::from_str(&meta)
            .map_err(|e| err(format!("metadata.json is not valid JSON: {e}")))?;
        v.get("keras_version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    } else {
        "unknown".to_string()
    };
    // A .keras without a version is assumed to be Keras 3, whose format it is.
    let major = major_version(&keras_version);
    if major == Some(1) {
        return Err(err(format!(
            "was saved by Keras {keras_version}; only files from Keras 2 and 3 are supported"
        )));
    }
    let keras2 = major.is_some_and(|m| m < 3);
    let spec = config::parse(&config_text).map_err(|e| err(format!("config.json: {e}")))?;
    if !has(WEIGHTS_MEMBER) {
        let what = if has("model.weights.npz") {
            "its weights are in model.weights.npz (saved with weights_format=\"npz\"), which is not \
             supported; save with the default .h5 weights"
                .to_string()
        } else {
            format!("archive has no {WEIGHTS_MEMBER}; members: {}", list(&names))
        };
        return Err(err(what));
    }
    let h5 = open_weights(&mut zip, len).map_err(&err)?;
    let mut source = Store::new(h5).map_err(|e| err(format!("{WEIGHTS_MEMBER}: {e}")))?;
    let built = build::build(&spec, &mut source, keras2).map_err(err)?;
    Ok(SavedModel {
        path: path.to_path_buf(),
        format: ModelFormat::Keras3Zip,
        keras_version,
        keras2,
        input_shape: built.input_shape,
        layers: built.layers,
        graph: spec.graph,
    })
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Opens a member, refusing one that declares more than `cap` bytes uncompressed, or more than deflate
/// could produce from the whole archive. Returns it with its declared size.
fn open_member<'a, R: Read + Seek>(
    zip: &'a mut zip::ZipArchive<R>,
    name: &str,
    cap: u64,
    archive_len: u64,
) -> std::result::Result<(zip::read::ZipFile<'a, R>, u64), String> {
    let member = zip
        .by_name(name)
        .map_err(|e| format!("cannot open {name} in the archive: {e}"))?;
    let declared = member.size();
    if declared > cap {
        return Err(format!(
            "{name} inflates to {} ({declared} bytes, as the archive declares), more than the {} \
             rnntrace accepts; refusing to inflate it",
            show_bytes(declared),
            show_bytes(cap)
        ));
    }
    if declared > archive_len.saturating_mul(1032) {
        return Err(format!(
            "{name} claims {declared} bytes uncompressed, more than the archive's {archive_len} bytes \
             can hold; refusing to inflate it"
        ));
    }
    Ok((member, declared))
}

/// Copies a member's `declared` bytes into `out`, refusing a member that inflates to more or less.
fn inflate_into(
    member: &mut impl Read,
    name: &str,
    declared: u64,
    out: &mut impl std::io::Write,
) -> std::result::Result<(), String> {
    // One byte past the declared size is enough to catch a member that lies about it.
    let n = std::io::copy(&mut member.take(declared + 1), out)
        .map_err(|e| format!("{name} cannot be decompressed: {e}"))?;
    if n != declared {
        return Err(if n > declared {
            format!(
                "{name} inflates past the {declared} bytes its header declares; refusing to inflate \
                 it further"
            )
        } else {
            format!("{name} decompresses to {n} bytes, not the {declared} its header declares")
        });
    }
    Ok(())
}

/// Reads one member into memory (at most `cap` bytes).
fn read_member<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    cap: u64,
    archive_len: u64,
) -> std::result::Result<Vec<u8>, String> {
    let (mut member, declared) = open_member(zip, name, cap, archive_len)?;
    // Room for the one byte past `declared` that catches a lying header, so the buffer never grows.
    let mut buf = Vec::with_capacity(declared as usize + 1);
    inflate_into(&mut member, name, declared, &mut buf)?;
    Ok(buf)
}

/// Opens the weights member: inflated into memory when it is small, else into an anonymous temporary
/// file (removed when closed) from which the HDF5 reader reads only what it needs. Either way it may
/// not inflate past [`MAX_WEIGHTS_BYTES`].
fn open_weights<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    archive_len: u64,
) -> std::result::Result<H5, String> {
    open_weights_with(zip, archive_len, MAX_WEIGHTS_BYTES, MAX_WEIGHTS_IN_MEMORY)
}

/// [`open_weights`] with its bounds as arguments: at most `cap` bytes, in memory up to `in_memory`.
pub(super) fn open_weights_with<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    archive_len: u64,
    cap: u64,
    in_memory: u64,
) -> std::result::Result<H5, String> {
    let (mut member, declared) = open_member(zip, WEIGHTS_MEMBER, cap, archive_len)?;
    let h5 = if declared > in_memory
        && let Ok(mut file) = tempfile::tempfile()
    {
        inflate_into(&mut member, WEIGHTS_MEMBER, declared, &mut file)?;
        H5::from_file(file)
    } else {
        // Small, or no temporary file can be made: in memory (still at most `cap` bytes).
        let mut buf = Vec::new();
        buf.try_reserve_exact(declared as usize + 1).map_err(|_| {
            format!(
                "cannot allocate {} to inflate {WEIGHTS_MEMBER}",
                show_bytes(declared)
            )
        })?;
        inflate_into(&mut member, WEIGHTS_MEMBER, declared, &mut buf)?;
        H5::from_bytes(buf)
    };
    h5.map_err(|e| format!("{WEIGHTS_MEMBER}: {e}"))
}

fn read_text<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    archive_len: u64,
) -> std::result::Result<String, String> {
    let bytes = read_member(zip, name, MAX_JSON_BYTES, archive_len)?;
    String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8 text"))
}

/// Arrays from a Keras 3 `model.weights.h5`.
struct Store {
    h5: H5,
    /// Layer name → group under `layers/`, from the `name` attribute Keras 3 writes on `…/vars`.
    by_name: HashMap<String, String>,
}

impl Store {
    fn new(h5: H5) -> std::result::Result<Store, String> {
        let mut by_name = HashMap::new();
        if let Some(members) = h5.members("layers")? {
            for key in members.groups {
                if let Some(name) = h5.attr_string(&format!("layers/{key}/vars"), "name")? {
                    by_name.entry(name).or_insert(key);
                }
            }
        }
        Ok(Store { h5, by_name })
    }

    /// The datasets `0, 1, 2, …` of the group at `path`, in numeric order, shapes only (nothing is read);
    /// empty if there is no group.
    fn vars(&self, path: &str) -> std::result::Result<Vec<Located>, String> {
        let Some(members) = self.h5.members(path)? else {
            return Ok(Vec::new());
        };
        let mut indexed: Vec<(usize, &String)> = Vec::new();
        for d in &members.datasets {
            let i: usize = d
                .parse()
                .map_err(|_| format!("{WEIGHTS_MEMBER}: unexpected dataset {path}/{d}"))?;
            indexed.push((i, d));
        }
        indexed.sort();
        if let Some(missing) = (0..indexed.len()).find(|&pos| indexed[pos].0 != pos) {
            return Err(format!(
                "{WEIGHTS_MEMBER}: {path} has datasets {}; expected 0, 1, … without gaps (no {missing})",
                indexed
                    .iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        indexed
            .into_iter()
            .map(|(_, d)| {
                let p = format!("{path}/{d}");
                self.h5
                    .array_info(&p)
                    .map(|info| Located::new(p, info))
                    .map_err(|e| format!("{WEIGHTS_MEMBER}: {e}"))
            })
            .collect()
    }
}

impl WeightSource for Store {
    fn arrays(
        &mut self,
        layer: &LayerSpec,
        part: Part,
    ) -> std::result::Result<Vec<Located>, String> {
        let key = self
            .by_name
            .get(&layer.stored_name)
            .cloned()
            .unwrap_or_else(|| layer.weights_key.clone());
        let base = format!("layers/{key}");
        let path = match part {
            Part::Own => format!("{base}/vars"),
            Part::Cell => format!("{base}/cell/vars"),
            Part::Forward => format!("{base}/forward_layer/cell/vars"),
            Part::Backward => format!("{base}/backward_layer/cell/vars"),
            Part::Inner => format!("{base}/layer/vars"),
            Part::StackedCell(i) => {
                format!("{base}/cell/cells/{}/vars", stacked_cell_key(layer, i)?)
            }
        };
        let arrays = self.vars(&path)?;
        if arrays.is_empty() {
            let there = match self.h5.members(&base)? {
                Some(m) => format!(
                    "{base} holds {}",
                    if m.groups.is_empty() && m.datasets.is_empty() {
                        "nothing".to_string()
                    } else {
                        m.groups
                            .iter()
                            .chain(m.datasets.iter())
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                None => format!("there is no group {base}"),
            };
            return Err(format!(
                "its weights are missing: {WEIGHTS_MEMBER} has no arrays at {path} ({there})"
            ));
        }
        Ok(arrays)
    }

    fn read(&mut self, array: &Located) -> std::result::Result<RawArray, String> {
        self.h5
            .read_array(&array.path, &array.shape)
            .map_err(|e| format!("{WEIGHTS_MEMBER}: {e}"))
    }
}

/// Where Keras 3 saves cell `i` of an `RNN([cells])`: a list's children are named by their class in snake
/// case, the second of a class with `_1` and so on (`cells/lstm_cell`, `cells/gru_cell`, `cells/lstm_cell_1`).
fn stacked_cell_key(layer: &LayerSpec, i: usize) -> std::result::Result<String, String> {
    let cells = super::build::stacked_cells(layer)?;
    // Keras's to_snake_case: `_` before an uppercase letter that starts a lowercase run or follows a
    // lowercase letter or digit (LSTMCell → lstm_cell, SimpleRNNCell → simple_rnn_cell).
    let class = |c: &str| -> String {
        let chars: Vec<char> = c.chars().collect();
        let mut out = String::new();
        for (k, &ch) in chars.iter().enumerate() {
            if ch.is_ascii_uppercase() && k > 0 {
                let next_lower = chars.get(k + 1).is_some_and(char::is_ascii_lowercase);
                let prev = chars[k - 1];
                if next_lower || prev.is_ascii_lowercase() || prev.is_ascii_digit() {
                    out.push('_');
                }
            }
            out.push(ch.to_ascii_lowercase());
        }
        out
    };
    let (cls, _) = cells
        .get(i)
        .ok_or_else(|| format!("its StackedRNNCells has no cell {i}"))?;
    let name = class(cls);
    let before = cells[..i].iter().filter(|(c, _)| class(c) == name).count();
    Ok(if before == 0 {
        name
    } else {
        format!("{name}_{before}")
    })
}
