/*!
Legacy `.h5` models (`model.save("m.h5")` in Keras 2 / tf-keras, or in Keras 3).

The root group's attributes hold `model_config` (the architecture JSON) and `keras_version`; group
`model_weights` has the attribute `layer_names`, and each layer's group `model_weights/<layer name>` has
the attribute `weight_names`, listing its arrays in `get_weights()` order as paths relative to that group:

| saved by | a weight name |
|---|---|
| tf-keras 2.x | `lstm/lstm_cell/kernel:0`, `bidirectional/forward_gru/gru_cell/bias:0` |
| Keras 3 | `sequential/gru/gru_cell/kernel` (prefixed by the model's name, no `:0`) |

Those names are followed, never guessed. A `Bidirectional` lists the forward copy's arrays, then the
backward copy's. String attributes may be variable-length (h5py 3) or fixed-length (Keras 2.0–2.2 with
h5py 2), and a long list may be split into `layer_names0`, `layer_names1`, … ([`H5::attr_strings`]).
*/

use super::build::{self, Located, Part, WeightSource};
use super::config::{self, LayerSpec};
use super::h5::H5;
use super::{ModelFormat, SavedModel, major_version};
use crate::error::{Error, Result};
use crate::io::RawArray;
use std::fs::File;
use std::path::Path;

/// Reads a legacy `.h5` model from `file` (only the parts it needs: headers, attributes, the arrays).
pub fn load(path: &Path, file: File) -> Result<SavedModel> {
    let err = |what: String| Error::input(path, what);
    let h5 = H5::from_file(file).map_err(&err)?;
    let config_text = match h5.attr_string("/", "model_config").map_err(&err)? {
        Some(t) => t,
        None => {
            let what = if h5.attr_strings("/", "layer_names").map_err(&err)?.is_some()
                || h5.group("layers").map_err(&err)?.is_some()
            {
                "holds weights only (no model_config attribute), as model.save_weights writes them; \
                 load the file model.save() writes (.keras or .h5)"
            } else {
                "is an HDF5 file but not a Keras model: it has no model_config attribute"
            };
            return Err(err(what.into()));
        }
    };
    let keras_version = h5
        .attr_string("/", "keras_version")
        .map_err(&err)?
        .or(h5
            .attr_string("model_weights", "keras_version")
            .map_err(&err)?)
        .unwrap_or_else(|| "unknown".to_string());
    let major = major_version(&keras_version);
    if major == Some(1) {
        return Err(err(format!(
            "was saved by Keras {keras_version}; only files from Keras 2 and 3 are supported"
        )));
    }
    // Without a version, the legacy format means Keras 2 (Keras 3 always records its version).
    let keras2 = major.is_none_or(|m| m < 3);
    let spec = config::parse(&config_text).map_err(|e| err(format!("model_config: {e}")))?;
    let root = if h5.group("model_weights").map_err(&err)?.is_some() {
        "model_weights".to_string()
    } else {
        String::new()
    };
    let layer_names = h5
        .attr_strings(&root, "layer_names")
        .map_err(&err)?
        .ok_or_else(|| {
            err(format!(
                "has no layer_names attribute on {}; the weights cannot be located",
                if root.is_empty() {
                    "the root group"
                } else {
                    "model_weights"
                }
            ))
        })?;
    let mut source = Store {
        h5,
        root,
        layer_names,
    };
    let built = build::build(&spec, &mut source, keras2).map_err(err)?;
    Ok(SavedModel {
        path: path.to_path_buf(),
        format: ModelFormat::LegacyH5,
        keras_version,
        keras2,
        input_shape: built.input_shape,
        layers: built.layers,
        graph: spec.graph,
    })
}

/// Arrays located through `layer_names` and `weight_names`.
struct Store {
    h5: H5,
    /// `model_weights`, or `""` when the weights sit at the root.
    root: String,
    layer_names: Vec<String>,
}

impl Store {
    /// All of a layer's arrays, in `weight_names` order: shapes only, nothing is read.
    fn all(&self, layer: &LayerSpec) -> Result<Vec<Located>, String> {
        if !self.layer_names.iter().any(|n| n == &layer.stored_name) {
            return Ok(Vec::new());
        }
        let group = join(&self.root, &layer.stored_name);
        let names = self
            .h5
            .attr_strings(&group, "weight_names")?
            .ok_or_else(|| format!("group {group} has no weight_names attribute"))?;
        names
            .iter()
            .map(|w| {
                let p = join(&group, w);
                if !self.h5.has_dataset(&p)? {
                    return Err(format!(
                        "its weight '{w}' (listed in {group}'s weight_names) is missing: no dataset {p}"
                    ));
                }
                self.h5.array_info(&p).map(|info| Located::new(p, info))
            })
            .collect()
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

impl WeightSource for Store {
    fn arrays(&mut self, layer: &LayerSpec, part: Part) -> Result<Vec<Located>, String> {
        let all = self.all(layer)?;
        if all.is_empty() {
            return Err(format!(
                "its weights are missing: no group {} listed in layer_names",
                join(&self.root, &layer.stored_name)
            ));
        }
        match part {
            Part::Own | Part::Cell | Part::Inner => Ok(all),
            Part::StackedCell(i) => {
                // The layer's arrays are every cell's in order: kernel, recurrent kernel and (with
                // use_bias) bias for each.
                let counts = super::build::stacked_cells(layer)?
                    .iter()
                    .map(|(_, c)| {
                        if c.get("use_bias").and_then(serde_json::Value::as_bool) == Some(false) {
                            2
                        } else {
                            3
                        }
                    })
                    .collect::<Vec<usize>>();
                let total: usize = counts.iter().sum();
                if total != all.len() {
                    return Err(format!(
                        "has {} weight arrays; its {} stacked cells need {total}",
                        all.len(),
                        counts.len()
                    ));
                }
                let start: usize = counts[..i.min(counts.len())].iter().sum();
                Ok(all[start..start + counts.get(i).copied().unwrap_or(0)].to_vec())
            }
            Part::Forward | Part::Backward => {
                if all.len() % 2 != 0 {
                    return Err(format!(
                        "has {} weight arrays; a Bidirectional needs the same number for each direction",
                        all.len()
                    ));
                }
                let half = all.len() / 2;
                let mut all = all;
                let back = all.split_off(half);
                Ok(if part == Part::Forward { all } else { back })
            }
        }
    }

    fn read(&mut self, array: &Located) -> Result<RawArray, String> {
        self.h5.read_array(&array.path, &array.shape)
    }
}
