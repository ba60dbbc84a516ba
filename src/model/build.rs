/*!
From configuration and arrays to [`Layer`]s, with every shape checked.

Both formats implement [`WeightSource`]: given a layer and which part of it (the layer itself, its
recurrent cell, a `Bidirectional`'s forward or backward copy, a `TimeDistributed`'s inner layer), it
lists the arrays in `get_weights()` order, each with its shape and the place it came from, without
reading any data. [`build`] walks the layers in data-flow order, tracking the shape that flows between
them, so a kernel whose input dimension does not match what the previous layer produces is reported at
load time; only once every array of a layer has the shape its configuration implies are they read
([`WeightSource::read`]), so a file cannot make the loader decode more than the model's weights.
*/

use super::config::{LayerSpec, ModelSpec, activation_name, shape_list};
use super::h5::ArrayInfo;
use super::layers::{Padding, conv::Conv1d, pool::Pool1d};
use super::{Layer, LayerKind, Recurrent, RecurrentCell, SUPPORTED_CLASSES};
use crate::cell::DtypePolicy;
use crate::error::shape_str;
use crate::io::RawArray;
use serde_json::{Map, Value};

/// Which arrays of a layer to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The layer's own arrays (Dense).
    Own,
    /// A recurrent layer's cell.
    Cell,
    /// The forward copy inside a `Bidirectional`.
    Forward,
    /// The backward copy inside a `Bidirectional`.
    Backward,
    /// The layer inside a `TimeDistributed`.
    Inner,
    /// Cell i of an `RNN([cells])` (`StackedRNNCells`).
    StackedCell(usize),
}

/// An array not yet read: where it is (an HDF5 path, also for messages), its shape and its dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where the array is, e.g. `layers/lstm/cell/vars/0`.
    pub path: String,
    /// The shape the file declares.
    pub shape: Vec<usize>,
    /// `float16`, `float32` or `float64`.
    pub dtype: &'static str,
}

impl Located {
    /// The array at `path` with the shape and type `info` gives.
    pub fn new(path: String, info: ArrayInfo) -> Located {
        Located {
            path,
            shape: info.shape,
            dtype: info.dtype,
        }
    }
}

/// Where a format keeps each layer's arrays.
pub trait WeightSource {
    /// The arrays of `part` of `layer`, in `get_weights()` order (kernel, recurrent kernel, bias), with
    /// their shapes but not their data. An empty list when the file has none for it.
    fn arrays(&mut self, layer: &LayerSpec, part: Part) -> Result<Vec<Located>, String>;

    /// Reads an array [`WeightSource::arrays`] listed, once its shape has been checked. Allocates no
    /// more than that shape needs, and refuses an array whose stored shape is not `array.shape`.
    fn read(&mut self, array: &Located) -> Result<RawArray, String>;
}

/// Classes that do nothing at inference.
const IDENTITY_CLASSES: &[&str] = &[
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
];

/// The layers, input shape and all, of a parsed configuration with its weights.
pub struct Built {
    /// The model's input shape, batch first (empty when unknown).
    pub input_shape: Vec<Option<usize>>,
    /// The layers in data-flow order.
    pub layers: Vec<Layer>,
}

/// Builds each layer in data-flow order. A layer `run` cannot compute (see [`unsupported_reason`]) is
/// kept as [`LayerKind::Unsupported`] with its reason, its weights unread and its output shape unknown, so
/// that `inspect` still shows the whole model; `run` refuses it by name
/// ([`super::SavedModel::check_runnable`]).
pub fn build(
    spec: &ModelSpec,
    source: &mut dyn WeightSource,
    keras2: bool,
) -> Result<Built, String> {
    let mut cur: Option<Vec<Option<usize>>> = declared_input_shape(spec);
    let declared = cur.clone();
    let graph = spec.graph.as_ref();
    // Per built layer, the shape of each of its outputs (main output first, then returned states).
    let mut shapes: Vec<Vec<Option<Shape>>> = Vec::with_capacity(spec.layers.len());
    let mut layers = Vec::with_capacity(spec.layers.len());
    for (i, l) in spec.layers.iter().enumerate() {
        let label = format!("layer '{}' ({})", l.name, l.class_name);
        let inputs: Vec<Option<Shape>> = match graph {
            Some(g) => g.calls[i]
                .args
                .iter()
                .map(|s| {
                    shapes
                        .get(s.layer)
                        .and_then(|o| o.get(s.tensor))
                        .cloned()
                        .flatten()
                })
                .collect(),
            None => vec![cur.clone()],
        };
        if graph.is_some() {
            cur = inputs.first().cloned().flatten();
        }
        if let Some(why) = unsupported_reason(l) {
            cur = None;
            shapes.push(vec![None]);
            layers.push(Layer {
                name: l.name.clone(),
                class_name: l.class_name.clone(),
                kind: LayerKind::Unsupported,
                output_shape: None,
                unsupported: Some(why),
                policy: None,
            });
            continue;
        }
        let (mut kind, mut out) =
            build_one(l, source, keras2, cur.as_deref()).map_err(|e| format!("{label}: {e}"))?;
        let policy = layer_policy(l);
        match &mut kind {
            LayerKind::Recurrent(r) => r.policy = policy,
            LayerKind::StackedRecurrent(cells) => cells.iter_mut().for_each(|r| r.policy = policy),
            LayerKind::Bidirectional {
                forward, backward, ..
            } => {
                forward.policy = policy;
                backward.policy = policy;
            }
            _ => {}
        }
        if let LayerKind::Merge { op, axis } = &kind {
            out = merge_shape(*op, *axis, &inputs).map_err(|e| format!("{label}: {e}"))?;
        }
        if let LayerKind::Dot { axes, .. } = &kind
            && let [Some(x), Some(y)] = inputs.as_slice()
        {
            let res = |s: &Shape, a: i64| if a < 0 { s.len() as i64 + a } else { a };
            let (ax, ay) = (res(x, axes.0), res(y, axes.1));
            let mut o: Shape = vec![x[0]];
            o.extend(
                x.iter()
                    .enumerate()
                    .filter(|&(i, _)| i != 0 && i as i64 != ax)
                    .map(|(_, d)| *d),
            );
            o.extend(
                y.iter()
                    .enumerate()
                    .filter(|&(i, _)| i != 0 && i as i64 != ay)
                    .map(|(_, d)| *d),
            );
            if o.len() == 1 {
                o.push(Some(1));
            }
            out = Some(o);
        }
        if let LayerKind::Attention { .. } = &kind {
            // (batch, Tq, value features)
            out = match (
                inputs.first().cloned().flatten(),
                inputs.get(1).cloned().flatten(),
            ) {
                (Some(mut q), Some(v)) if q.len() == 3 && v.len() == 3 => {
                    q[2] = v[2];
                    Some(q)
                }
                _ => None,
            };
        }
        let mut outs = vec![out.clone()];
        if let (LayerKind::Attention { .. }, Some(g)) = (&kind, graph)
            && g.calls[i]
                .flags
                .iter()
                .any(|f| f == "return_attention_scores")
        {
            // The scores: (batch, Tq, Tv), Tv from the key (or the value).
            let q = inputs.first().cloned().flatten();
            let k = inputs.get(2).or(inputs.get(1)).cloned().flatten();
            outs.push(match (q, k) {
                (Some(q), Some(k)) if q.len() == 3 && k.len() == 3 => Some(vec![q[0], q[1], k[1]]),
                _ => None,
            });
        }
        if let LayerKind::Bidirectional {
            forward,
            backward,
            merge_mode,
        } = &kind
        {
            // Keras's outputs: [merged] or, with merge_mode=None, [forward, backward]; then with
            // return_state the forward copy's states and the backward copy's.
            let seq = |r: &super::Recurrent| {
                cur.as_ref().map(|s| {
                    if r.return_sequences {
                        vec![s[0], s.get(1).copied().flatten(), Some(r.units)]
                    } else {
                        vec![s[0], Some(r.units)]
                    }
                })
            };
            if merge_mode.is_none() {
                outs = vec![seq(forward), seq(backward)];
            }
            for r in [forward, backward].into_iter().filter(|r| r.return_state) {
                let state = cur.as_ref().map(|s| vec![s[0], Some(r.units)]);
                let n = if r.cell == RecurrentCell::Lstm { 2 } else { 1 };
                outs.extend(std::iter::repeat_n(state, n));
            }
        }
        let cells = match &kind {
            LayerKind::Recurrent(r) => std::slice::from_ref(r),
            LayerKind::StackedRecurrent(cells) => cells.as_slice(),
            _ => &[],
        };
        for r in cells.iter().filter(|r| r.return_state) {
            let state = cur.as_ref().map(|s| vec![s[0], Some(r.units)]);
            let n = if r.cell == RecurrentCell::Lstm { 2 } else { 1 };
            outs.extend(std::iter::repeat_n(state, n));
        }
        shapes.push(outs);
        cur = out.clone();
        layers.push(Layer {
            name: l.name.clone(),
            class_name: l.class_name.clone(),
            kind,
            output_shape: out,
            unsupported: policy_refusal(l),
            policy,
        });
    }
    let declared = match graph {
        Some(g) => g
            .inputs
            .first()
            .and_then(|&i| layers.get(i))
            .and_then(|l| l.output_shape.clone()),
        None => declared,
    };
    let input_shape = declared.unwrap_or_else(|| inferred_input_shape(&layers));
    // Without a declared input shape the first layers' output shapes could not be computed before the
    // first weighted layer; fill them in now that the input is known.
    if !input_shape.is_empty() {
        for layer in layers.iter_mut() {
            if layer.output_shape.is_some() {
                break;
            }
            if matches!(
                layer.kind,
                LayerKind::Input | LayerKind::Identity | LayerKind::Masking { .. }
            ) {
                layer.output_shape = Some(input_shape.clone());
            } else {
                break;
            }
        }
    }
    Ok(Built {
        input_shape,
        layers,
    })
}

/// A merge layer's output shape from its inputs' shapes (`None` when one is unknown).
fn merge_shape(
    op: super::layers::merge::MergeOp,
    axis: i64,
    inputs: &[Option<Shape>],
) -> Result<Option<Shape>, String> {
    use super::layers::merge::MergeOp;
    let Some(known) = inputs.iter().cloned().collect::<Option<Vec<Shape>>>() else {
        return Ok(None);
    };
    let first = known.first().ok_or("has no inputs")?;
    if known.iter().any(|s| s.len() != first.len()) {
        let all: Vec<String> = known.iter().map(|s| show_shape(s)).collect();
        return Err(format!(
            "merges tensors of different ranks: {}",
            all.join(", ")
        ));
    }
    if op != MergeOp::Concatenate {
        return Ok(Some(first.clone()));
    }
    let rank = first.len() as i64;
    let ax = if axis < 0 { rank + axis } else { axis };
    if ax <= 0 || ax >= rank {
        return Err(format!(
            "axis {axis} is not a non-batch axis of its {rank}-D inputs"
        ));
    }
    let ax = ax as usize;
    let mut out = first.clone();
    out[ax] = known
        .iter()
        .map(|s| s[ax])
        .try_fold(0usize, |acc, d| d.map(|d| acc + d));
    Ok(Some(out))
}

/// `data_format='channels_first'` (Keras's default, `channels_last`, when absent or null).
fn is_channels_first(cfg: &Map<String, Value>) -> bool {
    cfg.get("data_format").and_then(Value::as_str) == Some("channels_first")
}

/// What a user can do about a layer whose computation is Python code.
const CODE_WAY_FORWARD: &str = "its computation is Python code, which a saved model does not hold (and \
rnntrace would never execute); rebuild the model with built-in layers, or trace the recurrent layers \
alone: save keras.Model(model.input, model.get_layer(NAME).output) without this layer, or export a \
layer's weights with examples/export_keras.py and run `rnntrace lstm|gru`";

/// Why `run` cannot compute a layer (class, wrapped class or option), with the way forward; `None` when
/// it can.
pub fn unsupported_reason(l: &LayerSpec) -> Option<String> {
    let cfg = &l.config;
    let channels_first =
        || cfg.get("data_format").and_then(Value::as_str) == Some("channels_first");
    match l.class_name.as_str() {
        "InputLayer" | "Dense" | "Masking" | "Activation" | "Reshape" | "Embedding" | "ReLU"
        | "LeakyReLU" | "RepeatVector" | "ZeroPadding1D" | "Cropping1D" | "Concatenate" | "Add"
        | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" => None,
        "RNN" if cell_class(&inner_class(l, "cell")).is_some() => None,
        "RNN" if inner_class(l, "cell") == "StackedRNNCells" => match stacked_cells(l) {
            Ok(cells) => cells.iter().find_map(|(class, _)| {
                cell_class(class).is_none().then(|| {
                    format!(
                        "RNN([cells]) holds a {class}; rnntrace runs stacks of LSTMCell, GRUCell and SimpleRNNCell"
                    )
                })
            }),
            Err(e) => Some(e),
        },
        "Attention" | "AdditiveAttention" | "Dot" => None,
        c if RecurrentCell::from_class_name(c).is_some() || IDENTITY_CLASSES.contains(&c) => None,
        "Flatten"
            if channels_first() =>
        {
            Some(
                "data_format='channels_first' is not supported on Flatten; rnntrace flattens \
                  channels_last (batch, timesteps, channels) tensors"
                    .into(),
            )
        }
        "Flatten"
        | "Conv1D"
        | "MaxPooling1D"
        | "AveragePooling1D"
        | "GlobalAveragePooling1D"
        | "GlobalMaxPooling1D" => None,
        "BatchNormalization" | "LayerNormalization" | "Softmax" => {
            let last = match cfg.get("axis") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(-1),
                Some(Value::Array(a)) => a.len() == 1 && a[0].as_i64() == Some(-1),
                _ => false,
            };
            // tf-keras records a built layer's axis as a positive list ([2]); build_one checks it
            // against the input's rank.
            let positive_single = matches!(cfg.get("axis"), Some(Value::Array(a))
                if a.len() == 1 && a[0].as_i64().is_some_and(|v| v > 0))
                || cfg
                    .get("axis")
                    .and_then(Value::as_i64)
                    .is_some_and(|v| v > 0);
            if last || positive_single {
                None
            } else {
                Some(format!(
                    "axis {} is not supported; rnntrace normalises over the last axis only",
                    cfg.get("axis").map(Value::to_string).unwrap_or_default()
                ))
            }
        }
        "Permute" => {
            let dims: Option<Vec<i64>> = cfg
                .get("dims")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_i64).collect());
            match dims.as_deref() {
                Some([1, 2] | [2, 1]) => None,
                _ => Some(format!(
                    "dims {} is not supported; rnntrace permutes sequences (dims (2, 1) or (1, 2))",
                    cfg.get("dims").map(Value::to_string).unwrap_or_default()
                )),
            }
        }
        "Bidirectional" => {
            let inner = inner_class(l, "layer");
            RecurrentCell::from_class_name(&inner).is_none().then(|| {
                format!("Bidirectional({inner}) is not supported; Bidirectional must wrap an LSTM, GRU or SimpleRNN")
            })
        }
        "TimeDistributed" => {
            let inner = inner_class(l, "layer");
            (inner != "Dense").then(|| {
                format!("TimeDistributed({inner}) is not supported; TimeDistributed must wrap a Dense layer")
            })
        }
        "RNN" => {
            let cell = inner_class(l, "cell");
            cell_class(&cell).is_none().then(|| {
                format!(
                    "RNN({cell}) is not supported; RNN must wrap an LSTMCell, GRUCell or SimpleRNNCell, or a list of them"
                )
            })
        }
        "Lambda" => Some(format!("a Lambda layer: {CODE_WAY_FORWARD}")),
        "TFOpLambda" | "SlicingOpLambda" => Some(format!(
            "a TensorFlow operation recorded by tf-keras: {CODE_WAY_FORWARD}"
        )),
        other => {
            let custom = l.registered_name.as_deref().filter(|r| r.contains('>'));
            Some(match custom {
                Some(r) => {
                    format!("a custom layer class (registered as '{r}'): {CODE_WAY_FORWARD}")
                }
                None => format!(
                    "{other} is not a layer rnntrace computes; supported: {SUPPORTED_CLASSES}. If it is \
                     a custom class, {CODE_WAY_FORWARD}"
                ),
            })
        }
    }
}

/// A dtype policy `run` does not compute, refused by name: float64 (rnntrace computes in float32 or
/// float64, but a float64 policy's cast points are not emulated), quantized policies (`int8_from_…`,
/// `float8_from_…`) and any other name. float32 and the four policies of [`DtypePolicy`] are computed.
pub(crate) fn policy_refusal(l: &LayerSpec) -> Option<String> {
    if l.class_name == "InputLayer" {
        return None; // its dtype is the input tensor's (int32 ids, float32 values), not a policy
    }
    let name = dtype_policy(&l.config)?;
    if name == "float32" || DtypePolicy::from_name(&name).is_some() {
        return None;
    }
    Some(format!(
        "its dtype policy is '{name}', which rnntrace does not emulate (it computes float32, and \
         mixed_float16, float16, mixed_bfloat16 and bfloat16 as TensorFlow rounds them, and will not pass \
         other numbers off as {name} ones); to trace the model, rebuild it under \
         keras.mixed_precision.set_global_policy(\"float32\"), copy the weights with \
         set_weights(old.get_weights()) and save it again"
    ))
}

/// The dtype policy a layer computes under, when it is one of [`DtypePolicy`]'s (a wrapper's own policy:
/// `Bidirectional`, `TimeDistributed` and `RNN` cast their input to it and their inner layer shares it).
pub(crate) fn layer_policy(l: &LayerSpec) -> Option<DtypePolicy> {
    if l.class_name == "InputLayer" {
        return None;
    }
    DtypePolicy::from_name(&dtype_policy(&l.config)?)
}

/// A layer's dtype policy name: Keras 3 `{"class_name": "DTypePolicy", "config": {"name": …}}`, tf-keras
/// `{"class_name": "Policy", "config": {"name": …}}`, or a plain dtype string.
pub fn dtype_policy(cfg: &Map<String, Value>) -> Option<String> {
    match cfg.get("dtype")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m
            .get("config")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// The options an `RNN` layer gives its cell(s).
const RNN_OPTIONS: [&str; 6] = [
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "zero_output_for_mask",
    "time_major",
];

/// A cell of an `RNN([cells])`: its class name and its config.
pub type CellSpec = (String, Map<String, Value>);

/// The cells of an `RNN([cells])` layer (`StackedRNNCells`), in order: each one's class and config.
pub fn stacked_cells(l: &LayerSpec) -> Result<Vec<CellSpec>, String> {
    let cells = sub_config(&l.config, "cell")?
        .get("cells")
        .and_then(Value::as_array)
        .ok_or("its StackedRNNCells configuration has no list of cells")?;
    if cells.is_empty() {
        return Err("its StackedRNNCells holds no cells".into());
    }
    cells
        .iter()
        .map(|c| {
            let class = c.get("class_name").and_then(Value::as_str);
            let cfg = c.get("config").and_then(Value::as_object);
            match (class, cfg) {
                (Some(class), Some(cfg)) => Ok((class.to_string(), cfg.clone())),
                _ => Err("a cell of its StackedRNNCells has no class_name or config".to_string()),
            }
        })
        .collect()
}

/// The recurrent cell of a built-in cell class (`LSTMCell`, `GRUCell`, `SimpleRNNCell`).
fn cell_class(class: &str) -> Option<RecurrentCell> {
    RecurrentCell::from_class_name(class.strip_suffix("Cell")?)
}

fn inner_class(l: &LayerSpec, key: &str) -> String {
    l.config
        .get(key)
        .and_then(|v| v.get("class_name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// The input shape the configuration records: an InputLayer's `batch_shape` (Keras 3) or
/// `batch_input_shape` (Keras 2), the first layer's `batch_input_shape`/`batch_shape`/`input_shape`, or
/// the model's `build_input_shape`.
fn declared_input_shape(spec: &ModelSpec) -> Option<Vec<Option<usize>>> {
    let first = spec.layers.first()?;
    for key in ["batch_shape", "batch_input_shape"] {
        if let Some(s) = first.config.get(key).and_then(shape_list) {
            return Some(s);
        }
    }
    if let Some(s) = first.config.get("input_shape").and_then(shape_list) {
        let mut full = vec![None];
        full.extend(s);
        return Some(full);
    }
    spec.build_input_shape.as_ref().and_then(shape_list)
}

/// `[None, None, features]` (recurrent) or `[None, features]` (dense) from the first weighted layer.
fn inferred_input_shape(layers: &[Layer]) -> Vec<Option<usize>> {
    for l in layers {
        match &l.kind {
            LayerKind::Recurrent(r) | LayerKind::Bidirectional { forward: r, .. } => {
                return vec![None, None, Some(r.features)];
            }
            LayerKind::StackedRecurrent(cells) => {
                return vec![None, None, cells.first().map(|r| r.features)];
            }
            LayerKind::Dense { kernel, .. } => return vec![None, kernel.shape.first().copied()],
            LayerKind::TimeDistributedDense { kernel, .. } => {
                return vec![None, None, kernel.shape.first().copied()];
            }
            LayerKind::Embedding { .. } => return vec![None, None],
            LayerKind::Conv1D { kernel, spec, .. } => {
                return vec![None, None, kernel.shape.get(1).map(|c| c * spec.groups)];
            }
            LayerKind::Input | LayerKind::Identity | LayerKind::Masking { .. } => continue,
            _ => break,
        }
    }
    Vec::new()
}

type Shape = Vec<Option<usize>>;

fn build_one(
    l: &LayerSpec,
    source: &mut dyn WeightSource,
    keras2: bool,
    input: Option<&[Option<usize>]>,
) -> Result<(LayerKind, Option<Shape>), String> {
    let act = |v: Option<&Value>| -> Result<String, String> {
        let name = activation_name(v)?;
        Ok(if keras2 && name == "hard_sigmoid" {
            "hard_sigmoid_keras2".to_string()
        } else {
            name
        })
    };
    let same = input.map(<[Option<usize>]>::to_vec);
    match l.class_name.as_str() {
        "InputLayer" => {
            let own = ["batch_shape", "batch_input_shape"]
                .iter()
                .find_map(|k| l.config.get(*k).and_then(shape_list));
            Ok((LayerKind::Input, own.or(same)))
        }
        c if IDENTITY_CLASSES.contains(&c) => Ok((LayerKind::Identity, same)),
        "Masking" => {
            let mask_value = match l.config.get("mask_value") {
                None | Some(Value::Null) => 0.0,
                Some(v) => v.as_f64().ok_or("mask_value is not a number")?,
            };
            Ok((LayerKind::Masking { mask_value }, same))
        }
        "Activation" => Ok((
            LayerKind::Activation {
                activation: act(l.config.get("activation"))?,
            },
            same,
        )),
        "Flatten" => {
            if l.config.get("data_format").and_then(Value::as_str) == Some("channels_first") {
                return Err("data_format='channels_first' is not supported".into());
            }
            let out = input.map(|s| {
                let rest: Option<usize> = s
                    .iter()
                    .skip(1)
                    .try_fold(1usize, |acc, d| d.and_then(|d| acc.checked_mul(d)));
                vec![s.first().copied().flatten(), rest]
            });
            Ok((LayerKind::Flatten, out))
        }
        "Reshape" => {
            let target_shape: Vec<i64> = l
                .config
                .get("target_shape")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_i64).collect())
                .ok_or("target_shape is missing or not a list of integers")?;
            if target_shape.iter().filter(|&&d| d == -1).count() > 1
                || target_shape.iter().any(|&d| d < -1)
            {
                return Err(format!(
                    "target_shape {target_shape:?} is not a valid shape"
                ));
            }
            let out = input.map(|s| reshape_out(s, &target_shape)).transpose()?;
            Ok((LayerKind::Reshape { target_shape }, out))
        }
        c if super::layers::merge::MergeOp::from_class_name(c).is_some() => {
            let op = super::layers::merge::MergeOp::from_class_name(c).ok_or("not a merge")?;
            let axis = l.config.get("axis").and_then(Value::as_i64).unwrap_or(-1);
            Ok((LayerKind::Merge { op, axis }, same))
        }
        "RNN" if inner_class(l, "cell") == "StackedRNNCells" => {
            // RNN([cells]): each cell's own configuration plus the layer's sequence options; cell i reads
            // cell i−1's per-step output.
            let mut cells = Vec::new();
            let mut out = None;
            let mut cur: Option<Shape> = input.map(<[Option<usize>]>::to_vec);
            for (i, (class, cell_cfg)) in stacked_cells(l)?.into_iter().enumerate() {
                let cell = cell_class(&class).ok_or_else(|| {
                    format!("RNN([cells]) holds a {class}; rnntrace runs stacks of LSTMCell, GRUCell and SimpleRNNCell")
                })?;
                let mut cfg = cell_cfg;
                for key in RNN_OPTIONS {
                    if let Some(v) = l.config.get(key) {
                        cfg.insert(key.into(), v.clone());
                    }
                }
                let arrays = source.arrays(l, Part::StackedCell(i))?;
                let (r, o) = recurrent(cell, &cfg, arrays, cur.as_deref(), keras2, source)
                    .map_err(|e| format!("cell {i} ({class}): {e}"))?;
                cur = cur.map(|s| vec![s[0], s.get(1).copied().flatten(), Some(r.units)]);
                out = o;
                cells.push(r);
            }
            Ok((LayerKind::StackedRecurrent(cells), out))
        }
        "RNN" => {
            // RNN(cell): the cell's own configuration, plus the layer's sequence options.
            let class = inner_class(l, "cell");
            let cell =
                cell_class(&class).ok_or_else(|| format!("RNN({class}) is not supported"))?;
            let mut cfg = sub_config(&l.config, "cell")?.clone();
            for key in RNN_OPTIONS {
                if let Some(v) = l.config.get(key) {
                    cfg.insert(key.into(), v.clone());
                }
            }
            let arrays = source.arrays(l, Part::Cell)?;
            let (r, out) = recurrent(cell, &cfg, arrays, input, keras2, source)?;
            Ok((LayerKind::Recurrent(r), out))
        }
        "Dot" => {
            let axes = match l.config.get("axes") {
                Some(Value::Number(n)) => n.as_i64().map(|a| (a, a)),
                Some(Value::Array(a)) if a.len() == 2 => a[0].as_i64().zip(a[1].as_i64()),
                _ => None,
            }
            .ok_or("axes is not an integer or a pair of integers")?;
            Ok((
                LayerKind::Dot {
                    axes,
                    normalize: get_bool(&l.config, "normalize", false)?,
                },
                None,
            ))
        }
        "Attention" | "AdditiveAttention" => {
            let additive = l.class_name == "AdditiveAttention";
            let use_scale = get_bool(&l.config, "use_scale", additive)?;
            let concat = match l.config.get("score_mode").and_then(Value::as_str) {
                None | Some("dot") => false,
                Some("concat") if !additive => true,
                Some(other) => return Err(format!("score_mode '{other}' is not dot or concat")),
            };
            let mut names = Vec::new();
            if use_scale {
                names.push("scale");
            }
            if concat {
                names.push("concat_score_weight");
            }
            // A layer without weights has no group in a Keras 3 weights file.
            let arrays = if names.is_empty() {
                Vec::new()
            } else {
                let arrays = source.arrays(l, Part::Own)?;
                check_count(&arrays, names.len(), &names.join(", "))?;
                arrays
            };
            let dim = input.and_then(|s| s.last().copied().flatten());
            let mut it = arrays.iter();
            let scale = if use_scale { it.next() } else { None };
            let weight = if concat { it.next() } else { None };
            if let Some(a) = scale {
                let ok = if additive {
                    a.shape.len() == 1 && dim.is_none_or(|d| a.shape[0] == d)
                } else {
                    a.shape.iter().product::<usize>() == 1
                };
                if !ok {
                    return Err(format!("scale {} does not fit the layer", describe(a)));
                }
            }
            if let Some(a) = weight
                && a.shape.iter().product::<usize>() != 1
            {
                return Err(format!(
                    "concat_score_weight {} is not a scalar",
                    describe(a)
                ));
            }
            Ok((
                LayerKind::Attention {
                    additive,
                    concat,
                    scale: scale.map(|a| source.read(a)).transpose()?,
                    concat_score_weight: weight.map(|a| source.read(a)).transpose()?,
                },
                same,
            ))
        }
        "Softmax" => Ok((
            LayerKind::Activation {
                activation: "softmax".into(),
            },
            same,
        )),
        "ReLU" | "LeakyReLU" => {
            let num = |k: &str| -> Result<Option<f64>, String> {
                match l.config.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v
                        .as_f64()
                        .map(Some)
                        .ok_or_else(|| format!("{k} is {v}; expected a number")),
                }
            };
            let (negative_slope, max_value, threshold) = if l.class_name == "ReLU" {
                (
                    num("negative_slope")?.unwrap_or(0.0),
                    num("max_value")?,
                    num("threshold")?.unwrap_or(0.0),
                )
            } else {
                // Keras 3 names the slope negative_slope (default 0.3), tf-keras alpha.
                let slope = num("negative_slope")?.or(num("alpha")?).unwrap_or(0.3);
                (slope, None, 0.0)
            };
            Ok((
                LayerKind::Relu {
                    negative_slope,
                    max_value,
                    threshold,
                },
                same,
            ))
        }
        "Embedding" => {
            let arrays = source.arrays(l, Part::Own)?;
            check_count(&arrays, 1, "embeddings")?;
            let e = &arrays[0];
            let input_dim = get_usize(&l.config, "input_dim")?;
            let output_dim = get_usize(&l.config, "output_dim")?;
            if e.shape.len() != 2
                || input_dim.is_some_and(|d| d != e.shape[0])
                || output_dim.is_some_and(|d| d != e.shape[1])
            {
                return Err(format!(
                    "embeddings {} do not fit input_dim {} and output_dim {}",
                    describe(e),
                    opt(input_dim),
                    opt(output_dim)
                ));
            }
            if let Some(s) = input
                && s.len() != 2
            {
                return Err(format!(
                    "takes ids (batch, timesteps); it receives {}",
                    show_shape(s)
                ));
            }
            let out = input.map(|s| vec![s[0], s[1], Some(e.shape[1])]);
            Ok((
                LayerKind::Embedding {
                    embeddings: source.read(e)?,
                    mask_zero: get_bool(&l.config, "mask_zero", false)?,
                },
                out,
            ))
        }
        "Conv1D" => {
            // channels_first: the shapes are checked and inferred channels_last, then swapped back.
            let channels_first = is_channels_first(&l.config);
            let swapped = input.map(|s| super::layers::swap_channels_shape(s, channels_first));
            let input = swapped.as_deref();
            let use_bias = get_bool(&l.config, "use_bias", true)?;
            let what = if use_bias {
                "kernel, bias"
            } else {
                "kernel (use_bias=False)"
            };
            let arrays = source.arrays(l, Part::Own)?;
            check_count(&arrays, if use_bias { 2 } else { 1 }, what)?;
            let k = &arrays[0];
            let groups = get_usize(&l.config, "groups")?.unwrap_or(1).max(1);
            let spec = Conv1d {
                strides: get_int_or_single(&l.config, "strides")?.unwrap_or(1),
                dilation: get_int_or_single(&l.config, "dilation_rate")?.unwrap_or(1),
                padding: get_padding(&l.config, true)?,
                groups,
            };
            if spec.strides > 1 && spec.dilation > 1 {
                return Err(
                    "strides > 1 together with dilation_rate > 1 is not a valid Conv1D".into(),
                );
            }
            if k.shape.len() != 3 || k.shape[2] % groups != 0 {
                return Err(format!(
                    "kernel {} is not (kernel_size, channels / groups, filters) with groups={groups}",
                    describe(k)
                ));
            }
            if let Some(f) = get_usize(&l.config, "filters")?
                && f != k.shape[2]
            {
                return Err(format!(
                    "kernel {} has {} filters, but the layer has filters={f}",
                    describe(k),
                    k.shape[2]
                ));
            }
            let channels = k.shape[1] * groups;
            if let Some(s) = input {
                if s.len() != 3 {
                    return Err(format!(
                        "needs a 3-D input (batch, timesteps, channels); it receives {}",
                        show_shape(s)
                    ));
                }
                if let Some(c) = s[2]
                    && c != channels
                {
                    return Err(format!(
                        "kernel {} reads {channels} channels (groups={groups}), but the layer receives {c}",
                        describe(k)
                    ));
                }
            }
            if let Some(b) = arrays.get(1)
                && b.shape != [k.shape[2]]
            {
                return Err(format!(
                    "bias {} does not fit {} filters",
                    describe(b),
                    k.shape[2]
                ));
            }
            let taps = k.shape[0];
            let out = match input {
                Some(s) => {
                    let t = match s[1] {
                        Some(t) => Some(spec.out_len(t, taps).ok_or_else(|| {
                            format!("its kernel spans more than the {t} input steps")
                        })?),
                        None => None,
                    };
                    Some(vec![s[0], t, Some(k.shape[2])])
                }
                None => None,
            };
            Ok((
                LayerKind::Conv1D {
                    kernel: source.read(k)?,
                    bias: arrays.get(1).map(|b| source.read(b)).transpose()?,
                    spec,
                    activation: act(l.config.get("activation"))?,
                    channels_first,
                },
                out.map(|s| super::layers::swap_channels_shape(&s, channels_first)),
            ))
        }
        "MaxPooling1D" | "AveragePooling1D" => {
            let channels_first = is_channels_first(&l.config);
            let swapped = input.map(|s| super::layers::swap_channels_shape(s, channels_first));
            let input = swapped.as_deref();
            let size = get_int_or_single(&l.config, "pool_size")?.unwrap_or(2);
            let spec = Pool1d {
                size,
                strides: get_int_or_single(&l.config, "strides")?.unwrap_or(size),
                padding: get_padding(&l.config, false)?,
                max: l.class_name == "MaxPooling1D",
            };
            let out = match input {
                Some(s) if s.len() != 3 => {
                    return Err(format!(
                        "needs a 3-D input (batch, timesteps, channels); it receives {}",
                        show_shape(s)
                    ));
                }
                Some(s) => {
                    let t = match s[1] {
                        Some(t) => Some(spec.out_len(t).ok_or_else(|| {
                            format!("its pool_size {size} is longer than the {t} input steps")
                        })?),
                        None => None,
                    };
                    Some(vec![s[0], t, s[2]])
                }
                None => None,
            };
            Ok((
                LayerKind::Pool1D {
                    spec,
                    channels_first,
                },
                out.map(|s| super::layers::swap_channels_shape(&s, channels_first)),
            ))
        }
        "GlobalAveragePooling1D" | "GlobalMaxPooling1D" => {
            let keepdims = get_bool(&l.config, "keepdims", false)?;
            let channels_first = is_channels_first(&l.config);
            let swapped = input.map(|s| super::layers::swap_channels_shape(s, channels_first));
            let input = swapped.as_deref();
            let out = match input {
                Some(s) if s.len() != 3 => {
                    return Err(format!(
                        "needs a 3-D input (batch, timesteps, channels); it receives {}",
                        show_shape(s)
                    ));
                }
                Some(s) if keepdims && channels_first => Some(vec![s[0], s[2], Some(1)]),
                Some(s) if keepdims => Some(vec![s[0], Some(1), s[2]]),
                Some(s) => Some(vec![s[0], s[2]]),
                None => None,
            };
            Ok((
                LayerKind::GlobalPool1D {
                    max: l.class_name == "GlobalMaxPooling1D",
                    keepdims,
                    channels_first,
                },
                out,
            ))
        }
        "BatchNormalization" | "LayerNormalization" => {
            check_last_axis(&l.config, input)?;
            let bn = l.class_name == "BatchNormalization";
            // Keras 3's LayerNormalization(rms_scaling=True) always has gamma and never beta.
            let rms = !bn && get_bool(&l.config, "rms_scaling", false)?;
            let scale = get_bool(&l.config, "scale", true)? || rms;
            let center = get_bool(&l.config, "center", true)? && !rms;
            let mut names: Vec<&str> = Vec::new();
            if scale {
                names.push("gamma");
            }
            if center {
                names.push("beta");
            }
            if bn {
                names.extend(["moving_mean", "moving_variance"]);
            }
            let what = names.join(", ");
            // A LayerNormalization without gamma and beta has no group in a Keras 3 weights file.
            let arrays = if names.is_empty() {
                Vec::new()
            } else {
                let arrays = source.arrays(l, Part::Own)?;
                check_count(&arrays, names.len(), &what)?;
                arrays
            };
            let channels = match arrays.first() {
                Some(a) => a.shape.iter().product::<usize>(),
                None => input
                    .and_then(|s| s.last().copied().flatten())
                    .ok_or("needs a known number of channels")?,
            };
            for a in &arrays {
                if a.shape != [channels] {
                    return Err(format!(
                        "{} is not ({channels},) like the layer's other arrays ({what})",
                        describe(a)
                    ));
                }
            }
            if let Some(Some(c)) = input.and_then(|s| s.last().copied())
                && c != channels
            {
                return Err(format!(
                    "its arrays are for {channels} channels, but the layer receives {c}"
                ));
            }
            let mut read = Vec::with_capacity(arrays.len());
            for a in &arrays {
                read.push(Some(source.read(a)?));
            }
            let mut it = read.into_iter();
            let gamma = if scale { it.next().flatten() } else { None };
            let beta = if center { it.next().flatten() } else { None };
            let epsilon = match l.config.get("epsilon") {
                None | Some(Value::Null) => 1e-3,
                Some(v) => v.as_f64().ok_or("epsilon is not a number")?,
            };
            let kind = if bn {
                LayerKind::BatchNorm {
                    gamma,
                    beta,
                    moving_mean: it.next().flatten().ok_or("moving_mean is missing")?,
                    moving_variance: it.next().flatten().ok_or("moving_variance is missing")?,
                    epsilon,
                }
            } else {
                LayerKind::LayerNorm {
                    gamma,
                    beta,
                    epsilon,
                    rms_scaling: get_bool(&l.config, "rms_scaling", false)?,
                    channels,
                }
            };
            Ok((kind, same))
        }
        "RepeatVector" => {
            let n = get_usize(&l.config, "n")?.ok_or("n is missing")?;
            let out = match input {
                Some(s) if s.len() != 2 => {
                    return Err(format!(
                        "needs a 2-D input (batch, features); it receives {}",
                        show_shape(s)
                    ));
                }
                Some(s) => Some(vec![s[0], Some(n), s[1]]),
                None => None,
            };
            Ok((LayerKind::RepeatVector { n }, out))
        }
        "Permute" => {
            let swap = l
                .config
                .get("dims")
                .and_then(|d| d.get(0))
                .and_then(Value::as_i64)
                == Some(2);
            let out = match input {
                Some(s) if s.len() != 3 => {
                    return Err(format!(
                        "permutes a sequence (batch, timesteps, features); it receives {}",
                        show_shape(s)
                    ));
                }
                Some(s) if swap => Some(vec![s[0], s[2], s[1]]),
                _ => same,
            };
            Ok((LayerKind::Permute { swap }, out))
        }
        "ZeroPadding1D" | "Cropping1D" => {
            let key = if l.class_name == "ZeroPadding1D" {
                "padding"
            } else {
                "cropping"
            };
            let (left, right) = get_pair(&l.config, key)?;
            let out = match input {
                Some(s) if s.len() != 3 => {
                    return Err(format!(
                        "needs a 3-D input (batch, timesteps, features); it receives {}",
                        show_shape(s)
                    ));
                }
                Some(s) => {
                    let t = match s[1] {
                        Some(t) if key == "padding" => Some(t + left + right),
                        Some(t) if left + right < t => Some(t - left - right),
                        Some(t) => {
                            return Err(format!(
                                "crops {left} + {right} steps from sequences of {t}: nothing remains"
                            ));
                        }
                        None => None,
                    };
                    Some(vec![s[0], t, s[2]])
                }
                None => None,
            };
            let kind = if key == "padding" {
                LayerKind::ZeroPadding1D { left, right }
            } else {
                LayerKind::Cropping1D { left, right }
            };
            Ok((kind, out))
        }
        "Dense" => {
            let arrays = source.arrays(l, Part::Own)?;
            let (kernel, bias, out) = dense(&l.config, arrays, input, source)?;
            Ok((
                LayerKind::Dense {
                    kernel,
                    bias,
                    activation: act(l.config.get("activation"))?,
                },
                out,
            ))
        }
        "TimeDistributed" => {
            let inner = sub_config(&l.config, "layer")?;
            if let Some(s) = input
                && s.len() < 3
            {
                return Err(format!(
                    "needs an input with a time axis (batch, timesteps, features); it receives {}",
                    show_shape(s)
                ));
            }
            let arrays = source.arrays(l, Part::Inner)?;
            let (kernel, bias, out) = dense(inner, arrays, input, source)?;
            Ok((
                LayerKind::TimeDistributedDense {
                    kernel,
                    bias,
                    activation: act(inner.get("activation"))?,
                },
                out,
            ))
        }
        "Bidirectional" => {
            let fwd_cfg = sub_config(&l.config, "layer")?;
            let fwd_class = inner_class(l, "layer");
            let (bwd_cfg, bwd_class) = match l.config.get("backward_layer") {
                Some(b) if !b.is_null() => {
                    let class = b
                        .get("class_name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string();
                    (sub_config(&l.config, "backward_layer")?.clone(), class)
                }
                _ => {
                    // No explicit backward layer: Keras copies the forward one with go_backwards flipped
                    // (Keras 3 sets it to true; the same thing for every forward layer that is not
                    // itself reversed).
                    let mut c = fwd_cfg.clone();
                    let g = c
                        .get("go_backwards")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    c.insert(
                        "go_backwards".into(),
                        Value::Bool(if keras2 { !g } else { true }),
                    );
                    (c, fwd_class.clone())
                }
            };
            let bwd_cell = RecurrentCell::from_class_name(&bwd_class).ok_or_else(|| {
                format!("its backward layer is a {bwd_class}; expected an LSTM, GRU or SimpleRNN")
            })?;
            let fwd_cell = RecurrentCell::from_class_name(&fwd_class).ok_or_else(|| {
                format!("wraps a {fwd_class}; expected an LSTM, GRU or SimpleRNN")
            })?;
            let fa = source.arrays(l, Part::Forward)?;
            let ba = source.arrays(l, Part::Backward)?;
            let (mut forward, fout) = recurrent(fwd_cell, fwd_cfg, fa, input, keras2, source)
                .map_err(|e| format!("forward layer: {e}"))?;
            let (mut backward, _) = recurrent(bwd_cell, &bwd_cfg, ba, input, keras2, source)
                .map_err(|e| format!("backward layer: {e}"))?;
            if forward.return_sequences != backward.return_sequences {
                return Err("its forward and backward layers disagree on return_sequences".into());
            }
            if forward.go_backwards == backward.go_backwards {
                return Err("its forward and backward layers have the same go_backwards".into());
            }
            // Bidirectional forces zero_output_for_mask = return_sequences on both copies.
            forward.zero_output_for_mask = forward.return_sequences;
            backward.zero_output_for_mask = backward.return_sequences;
            let merge_mode = match l.config.get("merge_mode") {
                None => Some("concat".to_string()),
                Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => return Err(format!("merge_mode {other} is not a name")),
            };
            let out = match merge_mode.as_deref() {
                None => None,
                Some(m @ ("sum" | "mul" | "ave")) => {
                    if forward.units != backward.units {
                        return Err(format!(
                            "merge_mode '{m}' needs equal units; forward has {}, backward {}",
                            forward.units, backward.units
                        ));
                    }
                    fout
                }
                Some("concat") => fout.map(|mut s| {
                    if let Some(last) = s.last_mut() {
                        *last = Some(forward.units + backward.units);
                    }
                    s
                }),
                Some(other) => {
                    return Err(format!(
                        "merge_mode '{other}' is not one of concat, sum, mul, ave"
                    ));
                }
            };
            Ok((
                LayerKind::Bidirectional {
                    forward,
                    backward,
                    merge_mode,
                },
                out,
            ))
        }
        c => {
            let cell = RecurrentCell::from_class_name(c)
                .ok_or_else(|| format!("is not supported; supported: {SUPPORTED_CLASSES}"))?;
            let arrays = source.arrays(l, Part::Cell)?;
            let (r, out) = recurrent(cell, &l.config, arrays, input, keras2, source)?;
            Ok((LayerKind::Recurrent(r), out))
        }
    }
}

fn opt(v: Option<usize>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// A non-negative integer option (`None` when absent or null).
fn get_usize(cfg: &Map<String, Value>, key: &str) -> Result<Option<usize>, String> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|u| usize::try_from(u).ok())
            .map(Some)
            .ok_or_else(|| format!("{key} is {v}; expected a non-negative integer")),
    }
}

/// An option given as an integer or a one-element list (`kernel_size`, `strides`, `pool_size`), at
/// least 1.
fn get_int_or_single(cfg: &Map<String, Value>, key: &str) -> Result<Option<usize>, String> {
    let v = match cfg.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.len() == 1 => &a[0],
        Some(v) => v,
    };
    v.as_u64()
        .and_then(|u| usize::try_from(u).ok())
        .filter(|&u| u >= 1)
        .map(Some)
        .ok_or_else(|| format!("{key} is {v}; expected a positive integer"))
}

/// `(left, right)` from an integer (both sides) or a two-element list.
fn get_pair(cfg: &Map<String, Value>, key: &str) -> Result<(usize, usize), String> {
    let n = |v: &Value| v.as_u64().and_then(|u| usize::try_from(u).ok());
    match cfg.get(key) {
        None | Some(Value::Null) => Ok((1, 1)),
        Some(Value::Array(a)) if a.len() == 2 => match (n(&a[0]), n(&a[1])) {
            (Some(l), Some(r)) => Ok((l, r)),
            _ => Err(format!(
                "{key} is {}; expected two non-negative integers",
                Value::Array(a.clone())
            )),
        },
        Some(v) => n(v)
            .map(|x| (x, x))
            .ok_or_else(|| format!("{key} is {v}; expected an integer or two")),
    }
}

/// `padding`: valid, same, or (Conv1D only) causal.
fn get_padding(cfg: &Map<String, Value>, causal_ok: bool) -> Result<Padding, String> {
    let name = cfg
        .get("padding")
        .and_then(Value::as_str)
        .unwrap_or("valid");
    match Padding::parse(name) {
        Some(Padding::Causal) if !causal_ok => {
            Err("padding 'causal' is only valid for Conv1D".into())
        }
        Some(p) => Ok(p),
        None => Err(format!(
            "padding '{name}' is not one of valid, same{}",
            if causal_ok { ", causal" } else { "" }
        )),
    }
}

/// A normalisation's `axis` must be the input's last (`-1`, or tf-keras's resolved positive index).
fn check_last_axis(
    cfg: &Map<String, Value>,
    input: Option<&[Option<usize>]>,
) -> Result<(), String> {
    let axis = match cfg.get("axis") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_i64(),
        Some(v) => v.as_i64(),
    }
    .ok_or("axis is not an integer or a one-element list")?;
    match (axis, input) {
        (-1, _) | (_, None) => Ok(()),
        (a, Some(s)) if a > 0 && a as usize == s.len() - 1 => Ok(()),
        (a, Some(s)) => Err(format!(
            "axis {a} is not the last axis of its {}-D input; rnntrace normalises over the last axis only",
            s.len()
        )),
    }
}

fn sub_config<'a>(
    cfg: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Map<String, Value>, String> {
    cfg.get(key)
        .and_then(|v| v.get("config"))
        .and_then(Value::as_object)
        .ok_or_else(|| format!("its configuration has no {key}.config"))
}

fn get_bool(cfg: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("{key} is {other}; expected true or false")),
    }
}

fn get_units(cfg: &Map<String, Value>) -> Result<Option<usize>, String> {
    match cfg.get("units") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|u| usize::try_from(u).ok())
            .filter(|&u| u > 0)
            .map(Some)
            .ok_or_else(|| format!("units is {v}; expected a positive integer")),
    }
}

fn show_shape(s: &[Option<usize>]) -> String {
    let parts: Vec<String> = s
        .iter()
        .map(|d| d.map_or("None".to_string(), |d| d.to_string()))
        .collect();
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

fn describe(located: &Located) -> String {
    format!("{} at {}", shape_str(&located.shape), located.path)
}

/// A recurrent layer (or one direction of a Bidirectional) from its config and arrays.
fn recurrent(
    cell: RecurrentCell,
    cfg: &Map<String, Value>,
    arrays: Vec<Located>,
    input: Option<&[Option<usize>]>,
    keras2: bool,
    source: &mut dyn WeightSource,
) -> Result<(Recurrent, Option<Shape>), String> {
    let act = |key: &str, default: &str| -> Result<String, String> {
        let name = match cfg.get(key) {
            None => default.to_string(),
            v => activation_name(v)?,
        };
        Ok(if keras2 && name == "hard_sigmoid" {
            "hard_sigmoid_keras2".to_string()
        } else {
            name
        })
    };
    if get_bool(cfg, "time_major", false)? {
        return Err("time_major=True is not supported".into());
    }
    if let Some(s) = input
        && s.len() != 3
    {
        return Err(format!(
            "needs a 3-D input (batch, timesteps, features); it receives {}",
            show_shape(s)
        ));
    }
    let use_bias = get_bool(cfg, "use_bias", true)?;
    let blocks = cell.blocks();
    let expected_count = if use_bias { 3 } else { 2 };
    let what = if use_bias {
        "kernel, recurrent_kernel, bias"
    } else {
        "kernel, recurrent_kernel (use_bias=False)"
    };
    check_count(&arrays, expected_count, what)?;
    let mut it = arrays.into_iter();
    let (kernel, recurrent_kernel, bias) = match (it.next(), it.next(), it.next()) {
        (Some(k), Some(r), b) => (k, r, b),
        _ => return Err(format!("expected {what}")),
    };
    // Units: from the config, else from the recurrent kernel.
    let units = match get_units(cfg)? {
        Some(u) => u,
        None => *recurrent_kernel.shape.first().ok_or_else(|| {
            format!(
                "recurrent_kernel {} is not 2-D",
                describe(&recurrent_kernel)
            )
        })?,
    };
    let width = units.checked_mul(blocks).ok_or("units is too large")?;
    let cell_name = cell.class_name();
    if kernel.shape.len() != 2 || kernel.shape[1] != width {
        return Err(format!(
            "kernel {} does not fit a {cell_name} with {units} units; expected (features, {width})",
            describe(&kernel)
        ));
    }
    let features = kernel.shape[0];
    if let Some(Some(f)) = input.and_then(|s| s.last().copied())
        && f != features
    {
        return Err(format!(
            "kernel {} reads {features} features, but the layer receives {f}; expected ({f}, {width})",
            describe(&kernel)
        ));
    }
    if recurrent_kernel.shape != [units, width] {
        return Err(format!(
            "recurrent_kernel {} does not fit a {cell_name} with {units} units; expected {}",
            describe(&recurrent_kernel),
            shape_str(&[units, width])
        ));
    }
    let reset_after_cfg = match cfg.get("reset_after") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(format!("reset_after is {other}; expected true or false")),
    };
    let reset_after = match cell {
        RecurrentCell::Gru => reset_after_cfg.unwrap_or_else(|| {
            // Not recorded: the bias shape says; with no bias, Keras's default (true).
            bias.as_ref().is_none_or(|b| b.shape.len() == 2)
        }),
        _ => false,
    };
    if let Some(b) = &bias {
        let expected: Vec<usize> = if reset_after {
            vec![2, width]
        } else {
            vec![width]
        };
        if b.shape != expected {
            let variant = match cell {
                RecurrentCell::Gru if reset_after => {
                    " (reset_after=True: input bias and recurrent bias)"
                }
                RecurrentCell::Gru => " (reset_after=False)",
                _ => "",
            };
            return Err(format!(
                "bias {} does not fit a {cell_name} with {units} units{variant}; expected {}",
                describe(b),
                shape_str(&expected)
            ));
        }
    }
    let return_sequences = get_bool(cfg, "return_sequences", false)?;
    let r = Recurrent {
        cell,
        units,
        features,
        activation: act("activation", "tanh")?,
        recurrent_activation: match cell {
            RecurrentCell::SimpleRnn => String::new(),
            _ => act("recurrent_activation", "sigmoid")?,
        },
        use_bias,
        return_sequences,
        return_state: get_bool(cfg, "return_state", false)?,
        go_backwards: get_bool(cfg, "go_backwards", false)?,
        stateful: get_bool(cfg, "stateful", false)?,
        reset_after,
        zero_output_for_mask: get_bool(cfg, "zero_output_for_mask", false)?,
        kernel: source.read(&kernel)?,
        recurrent_kernel: source.read(&recurrent_kernel)?,
        bias: bias.map(|b| source.read(&b)).transpose()?,
        policy: None,
    };
    let out = input.map(|s| {
        if return_sequences {
            vec![s[0], s[1], Some(units)]
        } else {
            vec![s[0], Some(units)]
        }
    });
    Ok((r, out))
}

/// A Dense layer's kernel and bias from its config and arrays; the output shape replaces the last axis.
fn dense(
    cfg: &Map<String, Value>,
    arrays: Vec<Located>,
    input: Option<&[Option<usize>]>,
    source: &mut dyn WeightSource,
) -> Result<(RawArray, Option<RawArray>, Option<Shape>), String> {
    let use_bias = get_bool(cfg, "use_bias", true)?;
    let expected_count = if use_bias { 2 } else { 1 };
    let what = if use_bias {
        "kernel, bias"
    } else {
        "kernel (use_bias=False)"
    };
    check_count(&arrays, expected_count, what)?;
    let mut it = arrays.into_iter();
    let (kernel, bias) = match (it.next(), it.next()) {
        (Some(k), b) => (k, b),
        _ => return Err(format!("expected {what}")),
    };
    if kernel.shape.len() != 2 {
        return Err(format!(
            "kernel {} is not 2-D (in, units)",
            describe(&kernel)
        ));
    }
    let (fin, units) = (kernel.shape[0], kernel.shape[1]);
    if let Some(u) = get_units(cfg)?
        && u != units
    {
        return Err(format!(
            "kernel {} has {units} columns, but the layer has units={u}; expected ({fin}, {u})",
            describe(&kernel)
        ));
    }
    if let Some(s) = input {
        if s.len() < 2 {
            return Err(format!(
                "needs at least a 2-D input; it receives {}",
                show_shape(s)
            ));
        }
        if let Some(Some(f)) = s.last()
            && *f != fin
        {
            return Err(format!(
                "kernel {} reads {fin} values, but the layer receives {f}; expected ({f}, {units})",
                describe(&kernel)
            ));
        }
    }
    if let Some(b) = &bias
        && b.shape != [units]
    {
        return Err(format!(
            "bias {} does not fit a Dense with {units} units; expected ({units},)",
            describe(b)
        ));
    }
    let out = input.map(|s| {
        let mut o = s.to_vec();
        if let Some(last) = o.last_mut() {
            *last = Some(units);
        }
        o
    });
    let kernel = source.read(&kernel)?;
    let bias = bias.map(|b| source.read(&b)).transpose()?;
    Ok((kernel, bias, out))
}

/// The output shape of `Reshape(target)` on `input`.
fn reshape_out(input: &[Option<usize>], target: &[i64]) -> Result<Shape, String> {
    let batch = input.first().copied().flatten();
    let total: Option<usize> = input
        .iter()
        .skip(1)
        .try_fold(1usize, |acc, d| d.and_then(|d| acc.checked_mul(d)));
    let known: usize = target
        .iter()
        .filter(|&&d| d >= 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or("target_shape is too large")?;
    let mut out = vec![batch];
    for &d in target {
        if d == -1 {
            out.push(match total {
                Some(t) if known > 0 && t % known == 0 => Some(t / known),
                Some(t) => {
                    return Err(format!(
                        "cannot reshape {} values per sample into {target:?}",
                        t
                    ));
                }
                None => None,
            });
        } else {
            out.push(Some(d as usize));
        }
    }
    if let Some(t) = total
        && !target.contains(&-1)
        && t != known
    {
        return Err(format!(
            "cannot reshape {} into target_shape {target:?}: {t} values per sample, not {known}",
            show_shape(input)
        ));
    }
    Ok(out)
}

/// Checks that a layer stored as many weight arrays as its configuration implies (`what` names them).
fn check_count(arrays: &[Located], expected: usize, what: &str) -> Result<(), String> {
    if arrays.is_empty() {
        return Err(format!(
            "its weights are missing from the file; expected {what}"
        ));
    }
    if arrays.len() != expected {
        let found: Vec<String> = arrays.iter().map(describe).collect();
        return Err(format!(
            "has {} weight arrays; expected {expected} ({what}); found {}",
            arrays.len(),
            found.join("; ")
        ));
    }
    Ok(())
}
