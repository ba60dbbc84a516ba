/*!
Whole saved Keras models: `.keras` archives (Keras 3, and tf-keras's own `.keras`) and legacy `.h5` files
(tf-keras / Keras 2, or Keras 3 asked for `.h5`), read without Python or C libraries.

[`load`] turns a file into a [`SavedModel`]: the layers in the order data flows through them, each with
its configuration and its weights as [`RawArray`]s in Keras's own layout (the layout `get_weights()`
returns), every shape checked against the configuration and against the previous layer's output.

How the file is read:
- [`keras3`]: the zip's `metadata.json` (Keras version), `config.json` (architecture) and
  `model.weights.h5`, where layer k's arrays sit under `layers/<snake_case class name, de-duplicated>/…`;
- [`legacy`]: the HDF5 root attributes `model_config` and `keras_version`, and `model_weights`, whose
  `layer_names` and per-layer `weight_names` attributes say where each array is;
- [`config`]: the architecture JSON, shared by both (Sequential, or a Functional model that is a linear
  chain);
- [`build`]: configuration plus arrays into [`Layer`]s, with every shape checked;
- [`h5`]: the small, bounded HDF5 access both formats need (the `hdf5-reader` crate, pure Rust).

Activation names are Keras's strings, except that `hard_sigmoid` in a file saved by Keras 1/2 (tf-keras)
becomes `hard_sigmoid_keras2`: Keras 2 defines it as `clip(0.2x + 0.5, 0, 1)`, Keras 3 as `relu6(x + 3) / 6`
(see [`crate::cell::activation`]).
*/

pub mod build;
pub mod config;
pub mod h5;
pub mod keras3;
pub mod layers;
pub mod legacy;

#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::io::RawArray;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Which container a model came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// A `.keras` zip: `metadata.json`, `config.json`, `model.weights.h5` (Keras 3, or tf-keras ≥ 2.13).
    Keras3Zip,
    /// A legacy HDF5 `.h5`: `model_config` and `keras_version` attributes, weights under `model_weights`.
    LegacyH5,
}

impl ModelFormat {
    /// A short description for messages and `inspect`: `.keras archive` or `legacy .h5`.
    pub fn describe(self) -> &'static str {
        match self {
            ModelFormat::Keras3Zip => ".keras archive",
            ModelFormat::LegacyH5 => "legacy .h5",
        }
    }
}

/// A saved model, ready to run: its layers in data-flow order with their weights.
#[derive(Debug, Clone)]
pub struct SavedModel {
    /// The file it was read from.
    pub path: PathBuf,
    /// The container format.
    pub format: ModelFormat,
    /// The Keras version that saved it (`metadata.json` or the `keras_version` attribute), e.g. `3.15.1`,
    /// `2.21.0`; `unknown` when the file does not say.
    pub keras_version: String,
    /// True when the file was saved by Keras 1/2 or tf-keras (any version below 3). Such a file's
    /// `hard_sigmoid` is Keras 2's `clip(0.2x + 0.5, 0, 1)`; [`load`] has already renamed it
    /// `hard_sigmoid_keras2` in every activation field.
    pub keras2: bool,
    /// The model's input shape, batch dimension first (`None` = not fixed), e.g. `[None, 32, 28]`.
    /// From the input layer's `batch_shape`/`batch_input_shape` when the file records one; otherwise
    /// inferred from the first weighted layer (`[None, None, features]` for a recurrent layer), or empty
    /// when nothing says.
    pub input_shape: Vec<Option<usize>>,
    /// The layers in the order data flows through them. Input layers are included (as
    /// [`LayerKind::Input`]) when the file's configuration lists one, which Keras 2 and 3 do for every
    /// model built with `keras.Input`.
    pub layers: Vec<Layer>,
    /// A Functional model that is not a linear chain (several inputs or outputs, branches, merges,
    /// returned states): which tensors each layer reads, indexed like `layers` (then in a topological
    /// order). `None` for a chain, run in `layers` order.
    pub graph: Option<config::GraphSpec>,
}

impl SavedModel {
    /// The same model computing in float32 throughout: every layer's float16/bfloat16 dtype policy
    /// dropped, its weights as stored (a float16 or bfloat16 value is exact in float32). This is the
    /// real-valued function a policy model rounds op by op, the one `explain` differentiates.
    pub fn without_policies(&self) -> SavedModel {
        let mut m = self.clone();
        for l in &mut m.layers {
            l.policy = None;
            match &mut l.kind {
                LayerKind::Recurrent(r) => r.policy = None,
                LayerKind::StackedRecurrent(cells) => {
                    cells.iter_mut().for_each(|r| r.policy = None)
                }
                LayerKind::Bidirectional {
                    forward, backward, ..
                } => {
                    forward.policy = None;
                    backward.policy = None;
                }
                _ => {}
            }
        }
        m
    }

    /// The same file, format and version, with no layers (for building a sub-model).
    pub fn clone_header(&self) -> SavedModel {
        SavedModel {
            path: self.path.clone(),
            format: self.format,
            keras_version: self.keras_version.clone(),
            keras2: self.keras2,
            input_shape: Vec::new(),
            layers: Vec::new(),
            graph: None,
        }
    }

    /// The layers that compute something: every layer but the input layers.
    pub fn compute_layers(&self) -> impl Iterator<Item = &Layer> {
        self.layers
            .iter()
            .filter(|l| !matches!(l.kind, LayerKind::Input))
    }

    /// Refuses a model with a layer `run` cannot compute: an [`Error::Input`] naming the first such layer
    /// and the way forward.
    pub fn check_runnable(&self) -> Result<()> {
        match self
            .layers
            .iter()
            .find_map(|l| l.unsupported.as_ref().map(|why| (l, why)))
        {
            Some((l, why)) => Err(Error::input(
                &self.path,
                format!("layer '{}' ({}): {why}", l.name, l.class_name),
            )),
            None => Ok(()),
        }
    }

    /// For a later call of a shared layer (`encoder@1`: call 1 of `encoder`, see [`config`]), the name of
    /// the layer whose weights it uses and the call's index; `None` for any other layer.
    pub fn shared_call(&self, i: usize) -> Option<(&str, usize)> {
        let l = self.layers.get(i)?;
        let (base, k) = l.name.rsplit_once('@')?;
        let k: usize = k.parse().ok()?;
        self.layers
            .iter()
            .any(|o| o.name == base && o.class_name == l.class_name)
            .then_some((base, k))
    }

    /// The output shape of the last layer (batch dimension first), when known.
    pub fn output_shape(&self) -> Option<&[Option<usize>]> {
        self.layers.last().and_then(|l| l.output_shape.as_deref())
    }
}

/// One layer of a saved model.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The layer's name (`lstm`, `lstm_1`, or whatever the user named it).
    pub name: String,
    /// Keras's class name (`LSTM`, `Bidirectional`, `TimeDistributed`, `Dropout`, …).
    pub class_name: String,
    /// What the layer does, with its weights.
    pub kind: LayerKind,
    /// The shape of the layer's output, batch dimension first (`None` entries are not fixed). `None` when
    /// it cannot be known (a `Bidirectional` with `merge_mode=None` returns two tensors, and everything
    /// after it).
    pub output_shape: Option<Vec<Option<usize>>>,
    /// Why `run` cannot compute this layer (a `Lambda`, a custom class, a float64 or quantized dtype
    /// policy), with the way forward; `None` when it can. `inspect` shows such a layer all the same.
    pub unsupported: Option<String>,
    /// The layer's Keras dtype policy when it computes below float32 (`mixed_float16`, `float16`,
    /// `mixed_bfloat16`, `bfloat16`): `run` rounds its variables, its input and every op's result to the
    /// compute type as TensorFlow does ([`crate::cell::rounding`]). `None`: float32.
    pub policy: Option<crate::cell::DtypePolicy>,
}

/// What a layer computes. Weights are in Keras's layout (kernel `(in, gates·units)`, row-vector math).
// A model has a handful of layers: the inline `Recurrent`s (no boxes to match through) cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum LayerKind {
    /// `InputLayer`: passes the model input on.
    Input,
    /// `LSTM`, `GRU` or `SimpleRNN`.
    Recurrent(Recurrent),
    /// `RNN([cells])` (`StackedRNNCells` of LSTMCell/GRUCell/SimpleRNNCell): each step runs the cells in
    /// order, cell i reading cell i−1's output; the layer's output is the last cell's, its states every
    /// cell's in order. Every cell carries the layer's sequence options (return_sequences, go_backwards, …).
    StackedRecurrent(Vec<Recurrent>),
    /// `Bidirectional(LSTM|GRU|SimpleRNN)`. `backward` has `go_backwards = true` (it reads the sequence last
    /// step first; with `return_sequences` Keras flips its output back to time order before merging).
    Bidirectional {
        /// The forward copy (its config is the wrapped layer's).
        forward: Recurrent,
        /// The backward copy.
        backward: Recurrent,
        /// `concat` (`[forward, backward]` on the last axis), `sum`, `mul`, `ave`, or `None` (two outputs).
        merge_mode: Option<String>,
    },
    /// `Dense`: `activation(x·kernel + bias)` on the last axis.
    Dense {
        /// `(in, units)`.
        kernel: RawArray,
        /// `(units,)`, absent for `use_bias=False`.
        bias: Option<RawArray>,
        /// Keras activation name.
        activation: String,
    },
    /// `TimeDistributed(Dense)`: the Dense applied at every timestep (the same as `Dense` on a 3-D input).
    TimeDistributedDense {
        /// `(in, units)`.
        kernel: RawArray,
        /// `(units,)`, absent for `use_bias=False`.
        bias: Option<RawArray>,
        /// Keras activation name.
        activation: String,
    },
    /// Layers that do nothing at inference: `Dropout`, `SpatialDropout1D`, `GaussianNoise`,
    /// `GaussianDropout`, `AlphaDropout`, `ActivityRegularization`.
    Identity,
    /// `Masking(mask_value)`: marks the steps whose features all equal `mask_value`; masked steps keep the
    /// recurrent state (see NUMERICS.md, "Masking").
    Masking {
        /// The padding value.
        mask_value: f64,
    },
    /// `Activation(name)`, elementwise (softmax: over the last axis).
    Activation {
        /// Keras activation name.
        activation: String,
    },
    /// `Flatten`: `(batch, a, b, …)` to `(batch, a·b·…)` in C order.
    Flatten,
    /// `Reshape(target_shape)`: the non-batch dimensions become `target_shape` (one entry may be -1).
    Reshape {
        /// As in the config, batch dimension excluded.
        target_shape: Vec<i64>,
    },
    /// `Embedding`: integer ids `(batch, timesteps)` to rows of `embeddings` `(input_dim, output_dim)`.
    Embedding {
        /// `(input_dim, output_dim)`.
        embeddings: RawArray,
        /// Id 0 is padding: the layer's mask is `ids != 0`.
        mask_zero: bool,
    },
    /// `Conv1D` (see [`layers::conv`]), then `activation`.
    Conv1D {
        /// `(kernel_size, channels / groups, filters)`.
        kernel: RawArray,
        /// `(filters,)`, absent for `use_bias=False`.
        bias: Option<RawArray>,
        /// Strides, dilation, padding, groups.
        spec: layers::conv::Conv1d,
        /// Keras activation name.
        activation: String,
        /// `data_format='channels_first'`: reads and writes `(batch, channels, timesteps)`.
        channels_first: bool,
    },
    /// `MaxPooling1D` / `AveragePooling1D`.
    Pool1D {
        /// Window, strides, padding, max or average.
        spec: layers::pool::Pool1d,
        /// `data_format='channels_first'`: reads and writes `(batch, channels, timesteps)`.
        channels_first: bool,
    },
    /// `GlobalAveragePooling1D` (mask-aware) / `GlobalMaxPooling1D`.
    GlobalPool1D {
        /// Max instead of mean.
        max: bool,
        /// `keepdims=True`: `(batch, 1, channels)` instead of `(batch, channels)` (channels first:
        /// `(batch, channels, 1)`).
        keepdims: bool,
        /// `data_format='channels_first'`: reads `(batch, channels, timesteps)`.
        channels_first: bool,
    },
    /// `BatchNormalization` at inference, over the last axis.
    BatchNorm {
        /// `(channels,)`, absent for `scale=False`.
        gamma: Option<RawArray>,
        /// `(channels,)`, absent for `center=False`.
        beta: Option<RawArray>,
        /// `(channels,)`.
        moving_mean: RawArray,
        /// `(channels,)`.
        moving_variance: RawArray,
        /// Added to the variance.
        epsilon: f64,
    },
    /// `LayerNormalization` over the last axis.
    LayerNorm {
        /// `(channels,)`, absent for `scale=False`.
        gamma: Option<RawArray>,
        /// `(channels,)`, absent for `center=False`.
        beta: Option<RawArray>,
        /// Added to the variance.
        epsilon: f64,
        /// `rms_scaling=True`: `x / sqrt(var + eps) · gamma` (Keras 3.15's definition).
        rms_scaling: bool,
        /// The number of channels.
        channels: usize,
    },
    /// `ReLU(max_value, negative_slope, threshold)` and `LeakyReLU(negative_slope)`:
    /// `x > threshold ? min(x, max_value) : negative_slope · (x − threshold)` (0 exactly at the threshold;
    /// [`layers::relu`]).
    Relu {
        /// Slope below the threshold.
        negative_slope: f64,
        /// Upper clip, if any.
        max_value: Option<f64>,
        /// Where the slope changes.
        threshold: f64,
    },
    /// `RepeatVector(n)`: `(batch, features)` to `(batch, n, features)`.
    RepeatVector {
        /// Repetitions.
        n: usize,
    },
    /// `Permute(dims)` on a sequence: `(2, 1)` swaps time and features; `(1, 2)` changes nothing.
    Permute {
        /// True for `(2, 1)`.
        swap: bool,
    },
    /// `ZeroPadding1D((left, right))`.
    ZeroPadding1D {
        /// Zero steps before.
        left: usize,
        /// Zero steps after.
        right: usize,
    },
    /// `Cropping1D((left, right))`.
    Cropping1D {
        /// Steps dropped at the start.
        left: usize,
        /// Steps dropped at the end.
        right: usize,
    },
    /// `Concatenate(axis)`, `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum` over the
    /// layer's input tensors (see [`layers::merge`]).
    Merge {
        /// Which operation.
        op: layers::merge::MergeOp,
        /// `Concatenate`'s axis as configured (-1: the last); unused by the others.
        axis: i64,
    },
    /// `Attention` (`score_mode` dot or concat) or `AdditiveAttention` (see [`layers::attention`]) on
    /// `[query, value]` or `[query, value, key]`.
    Attention {
        /// True for `AdditiveAttention`.
        additive: bool,
        /// `concat` (Attention's `score_mode="concat"`) instead of dot products.
        concat: bool,
        /// `scale` (`use_scale=True`): a scalar, or `(dim,)` for AdditiveAttention.
        scale: Option<RawArray>,
        /// `concat_score_weight` (score_mode concat).
        concat_score_weight: Option<RawArray>,
    },
    /// `Dot(axes, normalize)` of two tensors (see [`layers::merge::dot`]).
    Dot {
        /// The contracted axis of each input as configured (negative: from the end).
        axes: (i64, i64),
        /// L2-normalise along the axes first (cosine proximity).
        normalize: bool,
    },
    /// A layer `run` cannot compute ([`Layer::unsupported`] says why); its weights are not read.
    Unsupported,
}

/// Which recurrent cell a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentCell {
    /// `LSTM`: gate blocks i | f | c | o, state (h, c).
    Lstm,
    /// `GRU`: gate blocks z | r | h, state h.
    Gru,
    /// `SimpleRNN`: `h_t = activation(x·W + h·U + b)`, one block.
    SimpleRnn,
}

impl RecurrentCell {
    /// Number of gate blocks in the concatenated kernels (4, 3, 1).
    pub fn blocks(self) -> usize {
        match self {
            RecurrentCell::Lstm => 4,
            RecurrentCell::Gru => 3,
            RecurrentCell::SimpleRnn => 1,
        }
    }

    /// Keras's class name: `LSTM`, `GRU`, `SimpleRNN`.
    pub fn class_name(self) -> &'static str {
        match self {
            RecurrentCell::Lstm => "LSTM",
            RecurrentCell::Gru => "GRU",
            RecurrentCell::SimpleRnn => "SimpleRNN",
        }
    }

    /// The cell for a Keras class name, if it is one of the three.
    pub fn from_class_name(class_name: &str) -> Option<RecurrentCell> {
        match class_name {
            "LSTM" => Some(RecurrentCell::Lstm),
            "GRU" => Some(RecurrentCell::Gru),
            "SimpleRNN" => Some(RecurrentCell::SimpleRnn),
            _ => None,
        }
    }
}

/// A recurrent layer (or one direction of a `Bidirectional`): configuration and weights.
#[derive(Debug, Clone)]
pub struct Recurrent {
    /// LSTM, GRU or SimpleRNN.
    pub cell: RecurrentCell,
    /// Number of units (the state size).
    pub units: usize,
    /// Input features per step (the kernel's first dimension).
    pub features: usize,
    /// Candidate / output activation (Keras default `tanh`).
    pub activation: String,
    /// Gate activation (default `sigmoid`). Empty for `SimpleRNN`, which has no gates.
    pub recurrent_activation: String,
    /// Whether the layer has a bias (then `bias` is `Some`).
    pub use_bias: bool,
    /// Output every step `(batch, T, units)` instead of the last `(batch, units)`.
    pub return_sequences: bool,
    /// The layer also returns its final states (only the main output flows on in a linear model).
    pub return_state: bool,
    /// Process each sequence last step first.
    pub go_backwards: bool,
    /// State carries from one batch to the next (`stateful=True`).
    pub stateful: bool,
    /// GRU only: the reset gate is applied after the recurrent product (Keras 3's default). Always false
    /// for LSTM and SimpleRNN.
    pub reset_after: bool,
    /// At masked steps the output is zeros instead of the previous output (Keras forces this on both
    /// copies inside a `Bidirectional` with `return_sequences`).
    pub zero_output_for_mask: bool,
    /// `(features, blocks·units)`.
    pub kernel: RawArray,
    /// `(units, blocks·units)`.
    pub recurrent_kernel: RawArray,
    /// `(blocks·units,)`; for a `reset_after` GRU `(2, 3·units)`: row 0 input bias, row 1 recurrent bias.
    pub bias: Option<RawArray>,
    /// The layer's dtype policy when it computes below float32 (see [`Layer::policy`]).
    pub policy: Option<crate::cell::DtypePolicy>,
}

/// Every layer class `run` computes, for messages.
pub const SUPPORTED_CLASSES: &str = "InputLayer, LSTM, GRU, SimpleRNN, Bidirectional, Dense, \
TimeDistributed(Dense), Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout, \
ActivityRegularization, Masking, Activation, ReLU, LeakyReLU, Softmax, Flatten, Reshape, Embedding, \
Conv1D, MaxPooling1D, AveragePooling1D, GlobalAveragePooling1D, GlobalMaxPooling1D, BatchNormalization, \
LayerNormalization, RepeatVector, Permute, ZeroPadding1D, Cropping1D, Concatenate, Add, Subtract, \
Multiply, Average, Maximum, Minimum, Dot, Attention, AdditiveAttention, \
RNN(LSTMCell|GRUCell|SimpleRNNCell), RNN([cells]) of those cells";

/// No JSON member of a `.keras` archive is read past this many bytes (64 MiB).
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// The most weight data rnntrace reads from one model (1 GiB): a `.keras` archive's weights member may not
/// inflate past it, no dataset may decode past it, nor all the arrays read from one file together.
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 30;

/// A `.keras` archive's weights member up to this size (64 MiB) is inflated into memory; a larger one is
/// inflated into an anonymous temporary file, from which only the arrays are read.
pub const MAX_WEIGHTS_IN_MEMORY: u64 = 64 << 20;

const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// Reads a saved Keras model: a `.keras` archive or a legacy `.h5`, recognised by content.
///
/// The file is read as needed, never whole: a legacy `.h5`'s arrays are read from disk one at a time,
/// each after its shape has been checked against the configuration.
///
/// Errors are [`Error::Input`] naming `path`: unreadable or corrupt files, weights-only files, model
/// classes other than Sequential and linear Functional, unsupported layer classes (the message lists the
/// supported ones), missing weights, arrays whose shapes do not fit the configuration, and weights larger
/// than [`MAX_WEIGHTS_BYTES`]. Every string the file supplies (layer names, class names, activations,
/// the Keras version) reaches the model and the messages with its control characters escaped
/// ([`escape_controls`]).
pub fn load(path: &Path) -> Result<SavedModel> {
    match load_raw(path) {
        Ok(mut m) => {
            escape_model(&mut m);
            Ok(m)
        }
        Err(Error::Input { path, what }) => Err(Error::Input {
            path,
            what: escape_controls(&what),
        }),
        Err(e) => Err(e),
    }
}

fn load_raw(path: &Path) -> Result<SavedModel> {
    if path.is_dir() {
        let hint = if path.join("saved_model.pb").exists() {
            "is a TensorFlow SavedModel directory, which rnntrace cannot read; in Python, save the model \
             with model.save(\"model.keras\")"
        } else {
            "is a directory; expected a .keras or .h5 model file"
        };
        return Err(Error::input(path, hint));
    }
    let err = |what: String| Error::input(path, what);
    let io_err = |e: std::io::Error| Error::input(path, crate::io::io_reason(&e));
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let (mut file, len) = if meta.is_file() {
        (file, meta.len())
    } else {
        // A pipe (`--model <(…)`) cannot seek: copy it to an anonymous temporary file first.
        spool(file).map_err(|e| match e {
            Spool::Io(e) => io_err(e),
            Spool::TooLarge => err(format!(
                "is not a regular file and holds more than {}; save the model to a file",
                h5::show_bytes(MAX_SPOOLED_BYTES)
            )),
        })?
    };
    if len == 0 {
        return Err(err("file is empty; expected a .keras or .h5 model".into()));
    }
    let head = read_at(&mut file, 0, 8).map_err(io_err)?;
    if head.starts_with(b"PK") {
        keras3::load(path, file, len)
    } else if hdf5_signature_at(&mut file, len).map_err(io_err)?.is_some() {
        legacy::load(path, file)
    } else {
        Err(err(format!(
            "is neither a Keras .keras archive (zip) nor a Keras .h5 (HDF5) file; it starts with {}",
            describe_start(&head)
        )))
    }
}

/// The most a model given as a pipe may hold (4 GiB).
const MAX_SPOOLED_BYTES: u64 = 4 << 30;

enum Spool {
    Io(std::io::Error),
    TooLarge,
}

/// Copies a stream into an anonymous temporary file (at most [`MAX_SPOOLED_BYTES`]).
fn spool(mut stream: File) -> std::result::Result<(File, u64), Spool> {
    let mut tmp = tempfile::tempfile().map_err(Spool::Io)?;
    let n = std::io::copy(&mut stream.by_ref().take(MAX_SPOOLED_BYTES + 1), &mut tmp)
        .map_err(Spool::Io)?;
    if n > MAX_SPOOLED_BYTES {
        return Err(Spool::TooLarge);
    }
    tmp.seek(SeekFrom::Start(0)).map_err(Spool::Io)?;
    Ok((tmp, n))
}

/// Up to `n` bytes at `offset` (fewer at the end of the file).
fn read_at(file: &mut File, offset: u64, n: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(n);
    file.by_ref().take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The crate's one escaper for text from files ([`crate::error::printable`]), under the name the model
/// loaders use.
pub use crate::error::printable as escape_controls;

/// Escapes every string of a loaded model that came from the file.
fn escape_model(m: &mut SavedModel) {
    fn esc(s: &mut String) {
        *s = escape_controls(s);
    }
    fn esc_rec(r: &mut Recurrent) {
        esc(&mut r.activation);
        esc(&mut r.recurrent_activation);
    }
    esc(&mut m.keras_version);
    for l in &mut m.layers {
        esc(&mut l.name);
        esc(&mut l.class_name);
        match &mut l.kind {
            LayerKind::Recurrent(r) => esc_rec(r),
            LayerKind::StackedRecurrent(cells) => cells.iter_mut().for_each(esc_rec),
            LayerKind::Bidirectional {
                forward,
                backward,
                merge_mode,
            } => {
                esc_rec(forward);
                esc_rec(backward);
                if let Some(m) = merge_mode {
                    esc(m);
                }
            }
            LayerKind::Dense { activation, .. }
            | LayerKind::TimeDistributedDense { activation, .. }
            | LayerKind::Conv1D { activation, .. }
            | LayerKind::Activation { activation } => esc(activation),
            _ => {}
        }
        if let Some(why) = &mut l.unsupported {
            esc(why);
        }
    }
}

/// The offset of the HDF5 signature (0, or after a user block of 512·2^k bytes), if any.
fn hdf5_signature_at(file: &mut File, len: u64) -> std::io::Result<Option<u64>> {
    let mut at = 0u64;
    while at.saturating_add(HDF5_MAGIC.len() as u64) <= len {
        if read_at(file, at, HDF5_MAGIC.len())? == HDF5_MAGIC {
            return Ok(Some(at));
        }
        at = if at == 0 { 512 } else { at.saturating_mul(2) };
    }
    Ok(None)
}

/// The first bytes of a file as a user can recognise them (`"{\"clas"`, `0x93 4e 55 …`).
fn describe_start(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    if bytes.starts_with(b"\x93NUMPY") {
        return "a NumPy .npy header (this is an array, not a model)".into();
    }
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        head.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The major version in a version string (`"2.21.0"` → 2), if it starts with digits.
fn major_version(version: &str) -> Option<u64> {
    let digits: String = version
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}
