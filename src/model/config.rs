/*!
The architecture JSON (`config.json` in a `.keras`, the `model_config` attribute of an `.h5`).

Shape: `{"class_name": "Sequential" | "Functional" | "Model", "config": {"layers": [...]}}` (Keras 2.0–2.1
Sequential: `"config": [...]`), each layer `{"class_name", "config": {...}, "name"?, "inbound_nodes"?}`.
A Sequential model's layers run in list order. A Functional model that is a linear chain (one input, one
output, every other layer fed by exactly one tensor of the layer before it) is followed from the output
back to the input, so list order does not matter; any other directed acyclic graph becomes a
[`GraphSpec`] (several inputs and outputs, merges, returned states, `initial_state`, masks passed by
hand) in topological order. A shared layer (called more than once) first becomes one layer per call
([`expand_shared`]: call k of `name` is `name@k`, reading `name`'s weights).
Inbound references come in two encodings: Keras 3 (`{"args": [{"class_name": "__keras_tensor__", "config":
{"keras_history": [name, node, tensor]}}], "kwargs": {...}}`) and Keras 2 (`[[name, node, tensor, kwargs],
...]`).

Also here: each layer's group name in a Keras 3 weights file (snake_case class name, de-duplicated in
list order: `lstm`, `lstm_1`), and activations given as strings or as serialized objects.
*/

use serde_json::{Map, Value};

/// One layer as the configuration describes it.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// The layer's name.
    pub name: String,
    /// Keras's class name.
    pub class_name: String,
    /// The layer's `config` object.
    pub config: Map<String, Value>,
    /// The layer's group under `layers/` in a Keras 3 weights file, by Keras's naming rule.
    pub weights_key: String,
    /// Keras 3's `registered_name` (`package>ClassName` for a custom class), when recorded.
    pub registered_name: Option<String>,
    /// The layer's name in the file, where its weights are: `name`, except for the second and later calls
    /// of a shared layer (`name` `encoder@1`, `stored_name` `encoder`).
    pub stored_name: String,
}

/// A parsed model configuration.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// `Sequential`, `Functional` or `Model`.
    pub class_name: String,
    /// The layers in data-flow order.
    pub layers: Vec<LayerSpec>,
    /// `build_input_shape` / `build_config.input_shape` of the model, if recorded.
    pub build_input_shape: Option<Value>,
    /// A Functional model that is not a linear chain: its graph (`layers` are then in a topological
    /// order). `None` for Sequential models and linear chains.
    pub graph: Option<GraphSpec>,
}

/// Where a tensor comes from: output `tensor` of the layer at index `layer` of [`ModelSpec::layers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Index into the layer list.
    pub layer: usize,
    /// Which of the layer's outputs (0: the main one; a recurrent layer's states follow).
    pub tensor: usize,
}

/// What one layer's call reads.
#[derive(Debug, Clone, Default)]
pub struct CallSpec {
    /// The data tensors, in the call's order (a merge layer's list, an Attention's [query, value, key]).
    pub args: Vec<Source>,
    /// `initial_state=[…]` of a recurrent layer.
    pub initial_state: Vec<Source>,
    /// `mask=` passed by hand with a tensor of the model (`LSTM(...)(x, mask=m)`, `m` a
    /// `keras.Input(dtype="bool")` or another layer's output), one per data tensor in order; it replaces
    /// the mask that would have been propagated. Empty when Keras propagates the mask itself.
    pub mask: Vec<Source>,
    /// Whether the call received a mask, as far as the file says: a Keras 3 node records the `mask`
    /// Keras passed (propagated or by hand); a Keras 3 call without one got none, even when its input
    /// carries a mask (Keras 3 fills in `mask` only for a call with one tensor argument: not for a
    /// recurrent layer given `initial_state`). Always true for Keras 2 nodes, which do not record it.
    pub mask_recorded: bool,
    /// Boolean call arguments recorded with the call (`use_causal_mask`, `return_attention_scores`, …)
    /// that are true.
    pub flags: Vec<String>,
}

/// A Functional model's graph, over [`ModelSpec::layers`] in topological order.
#[derive(Debug, Clone)]
pub struct GraphSpec {
    /// The model's inputs in order (each an InputLayer's index).
    pub inputs: Vec<usize>,
    /// The model's outputs in order.
    pub outputs: Vec<Source>,
    /// Per layer (same index as [`ModelSpec::layers`]): what its call reads; empty for InputLayers.
    pub calls: Vec<CallSpec>,
}

/// Parses the architecture JSON text.
pub fn parse(text: &str) -> Result<ModelSpec, String> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| format!("model configuration is not valid JSON: {e}"))?;
    let obj = root
        .as_object()
        .ok_or("model configuration is not a JSON object")?;
    let class_name = obj
        .get("class_name")
        .and_then(Value::as_str)
        .ok_or("model configuration has no class_name")?
        .to_string();
    let config = obj
        .get("config")
        .ok_or("model configuration has no config")?;
    let functional = match class_name.as_str() {
        "Sequential" => false,
        "Functional" | "Model" => true,
        other => {
            return Err(format!(
                "model class '{other}' is not supported; expected a Sequential model or a Functional \
                 model (keras.Model(inputs, outputs)) whose layers form a linear chain"
            ));
        }
    };
    let (raw_layers, top) = match config {
        Value::Array(list) => (list.as_slice(), None),
        Value::Object(m) => (
            m.get("layers")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .ok_or("model configuration has no layer list (config.layers)")?,
            Some(m),
        ),
        _ => return Err("model configuration's config is neither an object nor a list".into()),
    };
    let mut layers = Vec::with_capacity(raw_layers.len());
    let mut used: Vec<(String, usize)> = Vec::new();
    for (i, raw) in raw_layers.iter().enumerate() {
        let lo = raw
            .as_object()
            .ok_or_else(|| format!("layer #{i} of the configuration is not an object"))?;
        let class = lo
            .get("class_name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("layer #{i} of the configuration has no class_name"))?;
        let cfg = match lo.get("config") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(format!(
                    "layer #{i} ({class}) has a config that is not an object"
                ));
            }
        };
        let name = lo
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| cfg.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| format!("layer_{i}"));
        layers.push(LayerSpec {
            weights_key: unique_key(&to_snake_case(class), &mut used),
            stored_name: name.clone(),
            name,
            class_name: class.to_string(),
            config: cfg,
            registered_name: lo
                .get("registered_name")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    let mut graph = None;
    // A shared layer's calls become nodes of their own (see [`expand_shared`]).
    let expanded = match (functional, top) {
        (true, Some(top)) => expand_shared(raw_layers, &layers, top),
        _ => None,
    };
    let (raw_layers, top): (&[Value], Option<&Map<String, Value>>) = match &expanded {
        Some((raws, specs, t)) => {
            layers = specs.clone();
            (raws.as_slice(), Some(t))
        }
        None => (raw_layers, top),
    };
    let order = if functional {
        let top = top.ok_or("functional model configuration has no layer graph")?;
        match linear_chain(raw_layers, &layers, top) {
            Ok(order) => order,
            Err(chain_error) => {
                let (order, g) = dag(raw_layers, &layers, top)
                    .map_err(|e| if e.is_empty() { chain_error } else { e })?;
                graph = Some(g);
                order
            }
        }
    } else {
        (0..layers.len()).collect()
    };
    let build_input_shape = top.and_then(|m| {
        m.get("build_input_shape")
            .filter(|v| !v.is_null())
            .cloned()
            .or_else(|| {
                obj.get("build_config")
                    .and_then(|b| b.get("input_shape"))
                    .filter(|v| !v.is_null())
                    .cloned()
            })
    });
    let mut by_index: Vec<Option<LayerSpec>> = layers.into_iter().map(Some).collect();
    let layers = order
        .into_iter()
        .filter_map(|i| by_index.get_mut(i).and_then(Option::take))
        .collect();
    Ok(ModelSpec {
        class_name,
        layers,
        build_input_shape,
        graph,
    })
}

/// A Functional model as a directed acyclic graph: the layers in a topological order (inputs first),
/// and for each its call's tensors re-indexed to that order. Layers that only compute a mask
/// (NotEqual/Any, recorded by Keras 3 for Masking and Embedding(mask_zero)) are left out: the runner
/// propagates masks itself, as Keras does, and the recorded ones are checked to be those.
/// An empty error means "not a graph either; report the chain's error".
fn dag(
    raw_layers: &[Value],
    layers: &[LayerSpec],
    top: &Map<String, Value>,
) -> Result<(Vec<usize>, GraphSpec), String> {
    let label = |i: usize| format!("layer '{}' ({})", layers[i].name, layers[i].class_name);
    // Names to indices once: a hostile file's layer count must not make the graph work quadratic.
    let by_name: std::collections::HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .rev()
        .map(|(k, l)| (l.name.as_str(), k))
        .collect();
    let index_of = |name: &str| by_name.get(name).copied();
    let ends = |key: &str| -> Vec<TensorRef> {
        let mut refs = Vec::new();
        if let Some(v) = top.get(key) {
            collect_refs_legacy_list(v, &mut refs);
        }
        refs
    };
    let source = |r: &TensorRef, at: usize| -> Result<Source, String> {
        let layer = index_of(&r.0)
            .ok_or_else(|| format!("{} reads from unknown layer '{}'", label(at), r.0))?;
        Ok(Source {
            layer,
            tensor: usize::try_from(r.2)
                .map_err(|_| format!("{} reads a negative tensor index", label(at)))?,
        })
    };
    // Keras 3 records the masks it propagates as op layers (NotEqual, LogicalOr, ExpandDims, ZerosLike,
    // a Concatenate op, Any, …) whose results reach layers as `mask=`. Those layers form the mask
    // subgraph: every layer whose outputs are consumed only as masks or by other mask-subgraph layers.
    let all_nodes: Vec<Vec<Node>> = raw_layers.iter().map(inbound_nodes).collect();
    let output_layers: Vec<String> = ends("output_layers").into_iter().map(|r| r.0).collect();
    let n = layers.len();
    // Per layer: how many data edges (args, initial states) reach it from consumers not yet known to be
    // mask-only, who those consumers' producers are, and whether any call reads it as `mask=`.
    let mut pending = vec![0usize; n];
    let mut mask_read = vec![false; n];
    let mut producers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (j, nodes) in all_nodes.iter().enumerate() {
        for node in nodes {
            for r in node.data.iter().chain(&node.initial_state) {
                if let Some(p) = index_of(&r.0) {
                    pending[p] += 1;
                    producers[j].push(p);
                }
            }
            for r in &node.mask {
                if let Some(p) = index_of(&r.0) {
                    mask_read[p] = true;
                }
            }
        }
    }
    let eligible =
        |i: usize| layers[i].class_name != "InputLayer" && !output_layers.contains(&layers[i].name);
    let mut in_mask = vec![false; n];
    let mut work: Vec<usize> = (0..n)
        .filter(|&i| mask_read[i] && pending[i] == 0 && eligible(i))
        .collect();
    while let Some(i) = work.pop() {
        if in_mask[i] {
            continue;
        }
        in_mask[i] = true;
        for &p in &producers[i] {
            pending[p] -= 1;
            if pending[p] == 0 && !in_mask[p] && eligible(p) {
                work.push(p);
            }
        }
    }
    if let Some(i) = (0..layers.len())
        .find(|&i| in_mask[i] && !MASK_GRAPH_OPS.contains(&layers[i].class_name.as_str()))
    {
        return Err(format!(
            "{} computes a mask passed explicitly to a layer; rnntrace propagates the masks of Masking \
             and Embedding(mask_zero=True) layers as Keras does, but does not run explicit mask \
             computations",
            label(i)
        ));
    }
    let is_mask_op = |i: usize| in_mask[i];
    let masking_layers: Vec<f64> = layers
        .iter()
        .filter(|l| masks_steps(l))
        .map(|l| {
            if l.class_name == "Masking" {
                l.config
                    .get("mask_value")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
            } else {
                0.0
            }
        })
        .collect();
    let mut calls: Vec<CallSpec> = vec![CallSpec::default(); layers.len()];
    let mut inputs = Vec::new();
    for r in ends("input_layers") {
        let i = index_of(&r.0)
            .ok_or_else(|| format!("the model's input layer '{}' is not in its layer list", r.0))?;
        inputs.push(i);
    }
    let mut outputs = Vec::new();
    for r in ends("output_layers") {
        let i = index_of(&r.0).ok_or_else(|| {
            format!(
                "the model's output layer '{}' is not in its layer list",
                r.0
            )
        })?;
        outputs.push(Source {
            layer: i,
            tensor: usize::try_from(r.2).unwrap_or(0),
        });
    }
    if inputs.is_empty() || outputs.is_empty() {
        return Err("the functional model lists no inputs or no outputs".into());
    }
    for (i, raw) in raw_layers.iter().enumerate() {
        let nodes = all_nodes[i].clone();
        if layers[i].class_name == "InputLayer" {
            continue;
        }
        if nodes.len() > 1 {
            return Err(format!(
                "{} is called {} times (a shared layer), which rnntrace does not run",
                label(i),
                nodes.len()
            ));
        }
        let Some(node) = nodes.into_iter().next() else {
            return Err(format!(
                "{} has no inbound layer and is not an input",
                label(i)
            ));
        };
        if is_mask_op(i) {
            // Without any masking layer, the consumer's explicit mask is what gets reported.
            if layers[i].class_name == "NotEqual" && !masking_layers.is_empty() {
                let constants: Vec<f64> = raw
                    .get("inbound_nodes")
                    .and_then(|n| n.get(0))
                    .and_then(|n| n.get("args"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                if constants.iter().any(|c| !masking_layers.contains(c)) {
                    return Err(format!(
                        "{} compares with {constants:?}, which is no Masking or Embedding(mask_zero) \
                         mask; only the masks those layers compute are supported",
                        label(i)
                    ));
                }
            }
            continue;
        }
        let mut explicit_mask = Vec::new();
        for m in &node.mask {
            let j = index_of(&m.0)
                .ok_or_else(|| format!("{} reads a mask from unknown layer '{}'", label(i), m.0))?;
            if !is_mask_op(j) {
                // A tensor of the model passed by hand (a boolean keras.Input, another layer's output).
                explicit_mask.push(source(m, i)?);
            } else if masking_layers.is_empty() {
                return Err(format!(
                    "{} receives a mask computed by {} (ops such as keras.ops.not_equal), which rnntrace \
                     does not run; give the mask as a model input instead (m = keras.Input(shape=(timesteps,), \
                     dtype=\"bool\"), then layer(x, mask=m), with the mask file as that --input), or let a \
                     Masking or Embedding(mask_zero=True) layer compute it",
                    label(i),
                    label(j)
                ));
            }
        }
        if !explicit_mask.is_empty() && explicit_mask.len() != node.data.len() {
            return Err(format!(
                "{} is given {} mask tensor(s) for {} input tensor(s); rnntrace needs one mask per input \
                 tensor when masks are passed by hand",
                label(i),
                explicit_mask.len(),
                node.data.len()
            ));
        }
        let mut args = Vec::new();
        for r in &node.data {
            let src = source(r, i)?;
            if is_mask_op(src.layer) {
                return Err(format!(
                    "{} reads a mask as data, which rnntrace does not run",
                    label(i)
                ));
            }
            args.push(src);
        }
        let mut initial_state = Vec::new();
        for r in &node.initial_state {
            initial_state.push(source(r, i)?);
        }
        // Keras 2 records a recurrent layer's initial states as extra inputs after the sequence.
        if initial_state.is_empty()
            && args.len() > 1
            && super::RecurrentCell::from_class_name(&layers[i].class_name).is_some()
        {
            initial_state = args.split_off(1);
        }
        calls[i] = CallSpec {
            args,
            initial_state,
            mask: explicit_mask,
            mask_recorded: !node.keras3 || !node.mask.is_empty(),
            flags: node.flags.clone(),
        };
    }
    // Kahn's algorithm, stable in list order (a heap of ready layers, smallest index first).
    let mut indegree = vec![0usize; n];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, c) in calls.iter().enumerate() {
        if is_mask_op(i) {
            continue;
        }
        for s in c.args.iter().chain(&c.initial_state).chain(&c.mask) {
            indegree[i] += 1;
            consumers[s.layer].push(i);
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| indegree[i] == 0 && !is_mask_op(i))
        .map(std::cmp::Reverse)
        .collect();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        placed[i] = true;
        order.push(i);
        for &j in &consumers[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    if let Some(i) = (0..n).find(|&i| !placed[i] && !is_mask_op(i)) {
        return Err(format!("{} is part of a cycle", label(i)));
    }
    for &i in &inputs {
        if layers[i].class_name != "InputLayer" {
            return Err(format!(
                "the model's input {} is not an InputLayer",
                label(i)
            ));
        }
    }
    // Re-index to the new order.
    let mut pos = vec![usize::MAX; n];
    for (k, &i) in order.iter().enumerate() {
        pos[i] = k;
    }
    let re = |s: &Source| Source {
        layer: pos[s.layer],
        tensor: s.tensor,
    };
    let new_calls = order
        .iter()
        .map(|&i| CallSpec {
            args: calls[i].args.iter().map(re).collect(),
            initial_state: calls[i].initial_state.iter().map(re).collect(),
            mask: calls[i].mask.iter().map(re).collect(),
            mask_recorded: calls[i].mask_recorded,
            flags: calls[i].flags.clone(),
        })
        .collect();
    let graph = GraphSpec {
        inputs: inputs.iter().map(|&i| pos[i]).collect(),
        outputs: outputs.iter().map(re).collect(),
        calls: new_calls,
    };
    Ok((order, graph))
}

/// A Functional model's raw layer entries, layer specs and top-level config, shared layers expanded.
type Expanded = (Vec<Value>, Vec<LayerSpec>, Map<String, Value>);

/// A Functional model whose layers are called more than once (a shared layer: a siamese encoder, one Dense
/// on two branches) as one whose every call is a layer of its own: call k > 0 of layer `name` becomes the
/// layer `name@k` (Keras's node index k of that layer), reading the same weights (`stored_name` and
/// `weights_key` are the original's), and every reference to `[name, k, tensor]` (Keras 3's
/// `keras_history`, Keras 2's inbound entries, the model's input and output lists) is rewritten to
/// `[name@k, 0, tensor]`. Node indices are the serialized ones, which Keras re-indexes to the calls inside
/// the model. `None` when no layer is called twice.
fn expand_shared(
    raw_layers: &[Value],
    layers: &[LayerSpec],
    top: &Map<String, Value>,
) -> Option<Expanded> {
    let calls = |raw: &Value| {
        raw.get("inbound_nodes")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let shared: std::collections::HashSet<&str> = raw_layers
        .iter()
        .zip(layers)
        .filter(|(raw, l)| l.class_name != "InputLayer" && calls(raw) > 1)
        .map(|(_, l)| l.name.as_str())
        .collect();
    if shared.is_empty() {
        return None;
    }
    // `[name, k, tensor, …]` with `name` shared and k > 0 → `[name@k, 0, tensor, …]`.
    let fix = |v: &mut Value| {
        if let Some(a) = v.as_array_mut()
            && let (Some(name), Some(k)) = (
                a.first().and_then(Value::as_str).map(str::to_string),
                a.get(1).and_then(Value::as_i64),
            )
            && k > 0
            && a.get(2).is_some_and(Value::is_i64)
            && shared.contains(name.as_str())
        {
            a[0] = Value::String(format!("{name}@{k}"));
            a[1] = Value::from(0);
        }
    };
    fn walk(v: &mut Value, fix: &dyn Fn(&mut Value), depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Object(m) => {
                if m.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") {
                    if let Some(h) = m.get_mut("config").and_then(|c| c.get_mut("keras_history")) {
                        fix(h);
                    }
                    return;
                }
                for x in m.values_mut() {
                    walk(x, fix, depth + 1);
                }
            }
            Value::Array(_) => {
                fix(v);
                if let Value::Array(a) = v {
                    for x in a {
                        walk(x, fix, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
    let mut raws = Vec::with_capacity(raw_layers.len());
    let mut specs = Vec::with_capacity(layers.len());
    for (raw, l) in raw_layers.iter().zip(layers) {
        let nodes: Vec<Value> = raw
            .get("inbound_nodes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !shared.contains(l.name.as_str()) {
            let mut r = raw.clone();
            if let Some(n) = r.get_mut("inbound_nodes") {
                walk(n, &fix, 0);
            }
            raws.push(r);
            specs.push(l.clone());
            continue;
        }
        for (k, node) in nodes.into_iter().enumerate() {
            let mut r = raw.clone();
            let mut spec = l.clone();
            let mut node = node;
            walk(&mut node, &fix, 0);
            if let Some(o) = r.as_object_mut() {
                o.insert("inbound_nodes".into(), Value::Array(vec![node]));
                if k > 0 {
                    o.insert("name".into(), Value::String(format!("{}@{k}", l.name)));
                }
            }
            if k > 0 {
                spec.name = format!("{}@{k}", l.name);
            }
            raws.push(r);
            specs.push(spec);
        }
    }
    let mut t = top.clone();
    for key in ["input_layers", "output_layers"] {
        if let Some(v) = t.get_mut(key) {
            walk(v, &fix, 0);
        }
    }
    Some((raws, specs, t))
}

/// Keras's `naming.to_snake_case`: drop non-word characters, then `_` before capitalised words and
/// between a lower-case letter and a capital (`SimpleRNN` → `simple_rnn`, `SpatialDropout1D` →
/// `spatial_dropout1d`).
pub fn to_snake_case(name: &str) -> String {
    let chars: Vec<char> = name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    let mut step1: Vec<char> = Vec::with_capacity(chars.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len()
            && chars[i] != '\n'
            && chars[i + 1].is_ascii_uppercase()
            && chars[i + 2].is_ascii_lowercase()
        {
            let mut j = i + 2;
            while j < chars.len() && chars[j].is_ascii_lowercase() {
                j += 1;
            }
            step1.push(chars[i]);
            step1.push('_');
            step1.extend_from_slice(&chars[i + 1..j]);
            i = j;
        } else {
            step1.push(chars[i]);
            i += 1;
        }
    }
    // re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    let mut out = String::with_capacity(step1.len() + 4);
    let mut i = 0;
    while i < step1.len() {
        if i + 1 < step1.len() && step1[i].is_ascii_lowercase() && step1[i + 1].is_ascii_uppercase()
        {
            out.push(step1[i]);
            out.push('_');
            out.push(step1[i + 1]);
            i += 2;
        } else {
            out.push(step1[i]);
            i += 1;
        }
    }
    out.to_lowercase()
}

/// Keras's `_get_unique_name`: the first `lstm` is `lstm`, the next `lstm_1`, then `lstm_2`.
fn unique_key(base: &str, used: &mut Vec<(String, usize)>) -> String {
    match used.iter_mut().find(|(n, _)| n == base) {
        Some((_, count)) => {
            *count += 1;
            format!("{base}_{count}")
        }
        None => {
            used.push((base.to_string(), 0));
            base.to_string()
        }
    }
}

/// A reference to a layer's output: (layer name, node index, tensor index).
type TensorRef = (String, i64, i64);

/// Orders a functional model's layers input → output, refusing anything but a linear chain.
fn linear_chain(
    raw_layers: &[Value],
    layers: &[LayerSpec],
    top: &Map<String, Value>,
) -> Result<Vec<usize>, String> {
    let label = |i: usize| format!("layer '{}' ({})", layers[i].name, layers[i].class_name);
    let index_of = |name: &str| layers.iter().position(|l| l.name == name);
    let ends = |key: &str| -> Result<Vec<TensorRef>, String> {
        let v = top
            .get(key)
            .ok_or_else(|| format!("functional model configuration has no {key}"))?;
        let mut refs = Vec::new();
        collect_refs_legacy_list(v, &mut refs);
        Ok(refs)
    };
    let inputs = ends("input_layers")?;
    let outputs = ends("output_layers")?;
    if inputs.len() != 1 {
        return Err(format!(
            "the model has {} inputs; only models with one input are supported",
            inputs.len()
        ));
    }
    if outputs.len() != 1 {
        return Err(format!(
            "the model has {} outputs; only models with one output are supported",
            outputs.len()
        ));
    }
    let input = index_of(&inputs[0].0).ok_or_else(|| {
        format!(
            "the model's input layer '{}' is not in its layer list",
            inputs[0].0
        )
    })?;
    let (out_name, _, out_tensor) = &outputs[0];
    let mut at = index_of(out_name)
        .ok_or_else(|| format!("the model's output layer '{out_name}' is not in its layer list"))?;
    if *out_tensor != 0 {
        return Err(format!(
            "the model's output is tensor #{out_tensor} of {}; only the main output of the last layer is \
             supported",
            label(at)
        ));
    }
    let mut chain = vec![at];
    while at != input {
        let nodes = inbound_nodes(&raw_layers[at]);
        if nodes.is_empty() {
            return Err(format!(
                "{} has no inbound layer but is not the model's input; only a linear chain of layers \
                 is supported",
                label(at)
            ));
        }
        if nodes.len() > 1 {
            return Err(format!(
                "{} is called {} times (a shared layer); only a linear chain of layers is supported",
                label(at),
                nodes.len()
            ));
        }
        let refs = &nodes[0].data;
        if refs.len() != 1 {
            let names: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
            return Err(format!(
                "{} takes {} inputs ({}); only a linear chain of layers is supported",
                label(at),
                refs.len(),
                names.join(", ")
            ));
        }
        let (prev_name, _, tensor) = &refs[0];
        let prev = index_of(prev_name)
            .ok_or_else(|| format!("{} reads from unknown layer '{prev_name}'", label(at)))?;
        if *tensor != 0 {
            return Err(format!(
                "{} reads output #{tensor} of {} (a returned state); only a linear chain of main outputs \
                 is supported",
                label(at),
                label(prev)
            ));
        }
        if chain.contains(&prev) {
            return Err(format!("{} is part of a cycle", label(prev)));
        }
        chain.push(prev);
        at = prev;
    }
    chain.reverse();
    // Masks: a layer on the chain may receive `mask=` only when a Masking layer comes before it (the
    // mask is then that layer's, which the runner recomputes), and the mask must come from the op
    // layers Keras records for it.
    let mask_ops: Vec<usize> = (0..layers.len())
        .filter(|i| !chain.contains(i) && MASK_OPS.contains(&layers[*i].class_name.as_str()))
        .collect();
    for (pos, &i) in chain.iter().enumerate() {
        let masks: Vec<TensorRef> = inbound_nodes(&raw_layers[i])
            .into_iter()
            .flat_map(|n| n.mask)
            .collect();
        if masks.is_empty() {
            continue;
        }
        let masked = chain[..pos].iter().any(|&j| masks_steps(&layers[j]));
        let from_ops = masks
            .iter()
            .all(|(name, _, _)| mask_ops.iter().any(|&j| &layers[j].name == name));
        if !masked || !from_ops {
            return Err(format!(
                "{} receives an explicit mask tensor; only the mask of a Masking layer or an \
                 Embedding(mask_zero=True) earlier in the chain is supported",
                label(i)
            ));
        }
    }
    // The recorded comparison must be a Masking layer's own (`x != mask_value`).
    let mask_values: Vec<f64> = chain
        .iter()
        .filter(|&&j| layers[j].class_name == "Masking")
        .map(|&j| {
            layers[j]
                .config
                .get("mask_value")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        })
        // Embedding(mask_zero=True) records its mask as NotEqual(ids, 0).
        .chain(
            chain
                .iter()
                .any(|&j| layers[j].class_name == "Embedding" && masks_steps(&layers[j]))
                .then_some(0.0),
        )
        .collect();
    for &j in mask_ops
        .iter()
        .filter(|&&j| layers[j].class_name == "NotEqual")
    {
        let constants: Vec<f64> = raw_layers[j]
            .get("inbound_nodes")
            .and_then(|n| n.get(0))
            .and_then(|n| n.get("args"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        if constants.iter().any(|c| !mask_values.contains(c)) {
            return Err(format!(
                "{} compares with {constants:?}, which is no Masking layer's mask_value; only the mask \
                 of a Masking layer is supported",
                label(j)
            ));
        }
    }
    if let Some(off) = (0..layers.len()).find(|i| !chain.contains(i) && !mask_ops.contains(i)) {
        return Err(format!(
            "{} is not on the path from the input to the output; only a linear chain of layers is \
             supported",
            label(off)
        ));
    }
    Ok(chain)
}

/// A layer that computes a mask from its input: `Masking`, or `Embedding` with `mask_zero=True`.
fn masks_steps(l: &LayerSpec) -> bool {
    match l.class_name.as_str() {
        "Masking" => true,
        "Embedding" => l.config.get("mask_zero").and_then(Value::as_bool) == Some(true),
        _ => false,
    }
}

/// What one call of a layer reads: its data tensors, and the mask tensors passed as `mask=`.
#[derive(Debug, Default, Clone)]
struct Node {
    data: Vec<TensorRef>,
    mask: Vec<TensorRef>,
    /// A Keras 3 node (`{"args", "kwargs"}`), which records the mask a call received.
    keras3: bool,
    initial_state: Vec<TensorRef>,
    flags: Vec<String>,
}

/// The inbound nodes of a functional layer entry.
fn inbound_nodes(raw: &Value) -> Vec<Node> {
    let Some(nodes) = raw.get("inbound_nodes").and_then(Value::as_array) else {
        return Vec::new();
    };
    nodes
        .iter()
        .map(|node| {
            let mut n = Node::default();
            match node {
                // Keras 3: {"args": [...], "kwargs": {...}}. Tensors in args, and in any kwarg but
                // `mask`, are data; Keras 3 records the mask a Masking layer computes as NotEqual/Any op
                // layers whose result reaches later layers as `mask=`.
                Value::Object(m) => {
                    n.keras3 = true;
                    if let Some(args) = m.get("args") {
                        collect_keras_tensors(args, &mut n.data, 0);
                    }
                    if let Some(Value::Object(kwargs)) = m.get("kwargs") {
                        for (k, v) in kwargs {
                            if v.as_bool() == Some(true) && k != "training" {
                                n.flags.push(k.clone());
                            }
                            let into = match k.as_str() {
                                "mask" => &mut n.mask,
                                "initial_state" => &mut n.initial_state,
                                _ => &mut n.data,
                            };
                            collect_keras_tensors(v, into, 0);
                        }
                    }
                }
                // Keras 2: [[name, node, tensor, kwargs], ...].
                Value::Array(entries) => {
                    collect_refs_legacy_list(node, &mut n.data);
                    for e in entries {
                        if let Some(Value::Object(kw)) = e.get(3) {
                            // A mask passed by hand: `{"mask": [name, node, tensor]}` (or a list).
                            if let Some(m) = kw.get("mask") {
                                collect_refs_legacy_list(m, &mut n.mask);
                            }
                            for (k, v) in kw {
                                if v.as_bool() == Some(true)
                                    && k != "training"
                                    && !n.flags.contains(k)
                                {
                                    n.flags.push(k.clone());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
            n
        })
        .collect()
}

/// Op layers Keras 3 records when it propagates masks through a graph (merges, Masking, Embedding).
const MASK_GRAPH_OPS: &[&str] = &[
    "NotEqual",
    "Any",
    "All",
    "LogicalOr",
    "LogicalAnd",
    "ExpandDims",
    "ZerosLike",
    "OnesLike",
    "Concatenate",
    "Squeeze",
    "Cast",
    "ConvertToTensor",
];

/// Op layers through which Keras 3 records a Masking layer's mask (`any(x != mask_value, axis=-1)`).
const MASK_OPS: &[&str] = &["NotEqual", "Any"];

/// Collects `keras_history` triples of every `__keras_tensor__` inside a Keras 3 node.
fn collect_keras_tensors(v: &Value, out: &mut Vec<TensorRef>, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(m) => {
            if m.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") {
                if let Some(r) = m
                    .get("config")
                    .and_then(|c| c.get("keras_history"))
                    .and_then(triple)
                {
                    out.push(r);
                }
                return;
            }
            for x in m.values() {
                collect_keras_tensors(x, out, depth + 1);
            }
        }
        Value::Array(a) => {
            for x in a {
                collect_keras_tensors(x, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// Collects `[name, node, tensor, ...]` entries from a Keras 2 list (or a single such triple).
fn collect_refs_legacy_list(v: &Value, out: &mut Vec<TensorRef>) {
    if let Some(r) = triple(v) {
        out.push(r);
        return;
    }
    if let Some(list) = v.as_array() {
        for x in list {
            if let Some(r) = triple(x) {
                out.push(r);
            } else if x.is_array() {
                collect_refs_legacy_list(x, out);
            }
        }
    }
}

/// `[name, node, tensor, ...]` as a reference.
fn triple(v: &Value) -> Option<TensorRef> {
    let a = v.as_array()?;
    let name = a.first()?.as_str()?;
    let node = a.get(1)?.as_i64()?;
    let tensor = a.get(2)?.as_i64()?;
    Some((name.to_string(), node, tensor))
}

/// An activation as a config gives it: a name, `null` (linear), or a serialized object
/// (`{"class_name": "function", "config": "relu"}`, `{"config": {"name": "relu"}}`).
pub fn activation_name(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok("linear".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Object(m)) => {
            if let Some(Value::String(s)) = m.get("config") {
                return Ok(s.clone());
            }
            if let Some(Value::String(s)) = m.get("config").and_then(|c| c.get("name"))
                && matches!(
                    m.get("class_name").and_then(Value::as_str),
                    Some("function") | None
                )
            {
                return Ok(s.clone());
            }
            let class = m.get("class_name").and_then(Value::as_str).unwrap_or("?");
            Err(format!(
                "activation given as a {class} object, which is not supported; use a named activation"
            ))
        }
        Some(other) => Err(format!("activation {other} is not a name")),
    }
}

/// A shape list from JSON (`[null, 32, 28]`), `None` entries for `null`.
pub fn shape_list(v: &Value) -> Option<Vec<Option<usize>>> {
    v.as_array()?
        .iter()
        .map(|d| match d {
            Value::Null => Some(None),
            Value::Number(n) => n.as_u64().and_then(|u| usize::try_from(u).ok()).map(Some),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_matches_keras() {
        for (class, key) in [
            ("LSTM", "lstm"),
            ("GRU", "gru"),
            ("SimpleRNN", "simple_rnn"),
            ("Bidirectional", "bidirectional"),
            ("TimeDistributed", "time_distributed"),
            ("SpatialDropout1D", "spatial_dropout1d"),
            ("Conv1D", "conv1d"),
            ("InputLayer", "input_layer"),
            ("ActivityRegularization", "activity_regularization"),
            ("GaussianNoise", "gaussian_noise"),
        ] {
            assert_eq!(to_snake_case(class), key, "{class}");
        }
    }

    #[test]
    fn keys_are_deduplicated_per_class_in_list_order() {
        let text = r#"{"class_name": "Sequential", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [null, 3, 2]}},
            {"class_name": "LSTM", "config": {"name": "a"}},
            {"class_name": "Dropout", "config": {"name": "d"}},
            {"class_name": "LSTM", "config": {"name": "b"}},
            {"class_name": "Dense", "config": {"name": "c"}},
            {"class_name": "LSTM", "config": {"name": "e"}}]}}"#;
        let spec = parse(text).unwrap();
        let keys: Vec<&str> = spec.layers.iter().map(|l| l.weights_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "input_layer",
                "lstm",
                "dropout",
                "lstm_1",
                "dense",
                "lstm_2"
            ]
        );
    }

    #[test]
    fn activations_as_strings_or_objects() {
        let v: Value = serde_json::json!({"module": "keras.activations", "class_name": "function",
                                          "config": "relu", "registered_name": "function"});
        assert_eq!(activation_name(Some(&v)).unwrap(), "relu");
        assert_eq!(activation_name(None).unwrap(), "linear");
        assert_eq!(activation_name(Some(&Value::Null)).unwrap(), "linear");
        let v: Value =
            serde_json::json!({"class_name": "LeakyReLU", "config": {"negative_slope": 0.3}});
        assert!(activation_name(Some(&v)).unwrap_err().contains("LeakyReLU"));
    }

    #[test]
    fn keras2_sequential_config_may_be_a_bare_list() {
        let text = r#"{"class_name": "Sequential", "config": [
            {"class_name": "LSTM", "config": {"name": "lstm_1", "batch_input_shape": [null, 5, 3]}}]}"#;
        let spec = parse(text).unwrap();
        assert_eq!(spec.layers.len(), 1);
        assert_eq!(spec.layers[0].name, "lstm_1");
    }

    #[test]
    fn legacy_functional_chain_is_followed_from_the_output() {
        // Listed out of order on purpose.
        let text = r#"{"class_name": "Model", "config": {"layers": [
            {"class_name": "Dense", "name": "d", "config": {"name": "d"}, "inbound_nodes": [[["l", 0, 0, {}]]]},
            {"class_name": "InputLayer", "name": "i", "config": {"name": "i"}, "inbound_nodes": []},
            {"class_name": "LSTM", "name": "l", "config": {"name": "l"}, "inbound_nodes": [[["i", 0, 0, {}]]]}],
            "input_layers": [["i", 0, 0]], "output_layers": [["d", 0, 0]]}}"#;
        let spec = parse(text).unwrap();
        let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["i", "l", "d"]);
    }

    #[test]
    fn state_outputs_make_a_graph_and_shared_layers_are_expanded() {
        let text = r#"{"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "name": "i", "config": {}, "inbound_nodes": []},
            {"class_name": "LSTM", "name": "l", "config": {}, "inbound_nodes": [[["i", 0, 0, {}]]]},
            {"class_name": "Dense", "name": "d", "config": {}, "inbound_nodes": [[["l", 0, 1, {}]]]}],
            "input_layers": [["i", 0, 0]], "output_layers": [["d", 0, 0]]}}"#;
        // A layer reading a returned state makes the model a graph; the state is output #1 of 'l'.
        let spec = parse(text).unwrap();
        let g = spec.graph.expect("a graph");
        let d = spec.layers.iter().position(|l| l.name == "d").unwrap();
        let l = spec.layers.iter().position(|l| l.name == "l").unwrap();
        assert_eq!(
            g.calls[d].args,
            [Source {
                layer: l,
                tensor: 1
            }]
        );
        let text = r#"{"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "name": "i", "config": {}, "inbound_nodes": []},
            {"class_name": "Dense", "name": "d", "config": {},
             "inbound_nodes": [[["i", 0, 0, {}]], [["i", 0, 0, {}]]]}],
            "input_layers": [["i", 0, 0]], "output_layers": [["d", 1, 0]]}}"#;
        // A shared layer: each call is a layer of its own, `d@1` the second, with d's weights.
        let spec = parse(text).unwrap();
        let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["i", "d", "d@1"]);
        assert_eq!(spec.layers[2].stored_name, "d");
        assert_eq!(spec.layers[2].weights_key, spec.layers[1].weights_key);
        let g = spec.graph.expect("a graph");
        assert_eq!(
            g.outputs,
            [Source {
                layer: 2,
                tensor: 0
            }]
        );
    }

    #[test]
    fn a_shared_layer_in_keras3_nodes_reads_each_call_by_node_index() {
        // x -> d -> d (node 1 reads node 0's output) -> out.
        let t = |from: &str, node: i64| {
            format!(
                r#"{{"class_name": "__keras_tensor__", "config": {{"keras_history": ["{from}", {node}, 0]}}}}"#
            )
        };
        let text = format!(
            r#"{{"class_name": "Functional", "config": {{"layers": [
            {{"class_name": "InputLayer", "name": "i", "config": {{}}, "inbound_nodes": []}},
            {{"class_name": "Dense", "name": "d", "config": {{}}, "inbound_nodes": [
                {{"args": [{}], "kwargs": {{}}}}, {{"args": [{}], "kwargs": {{}}}}]}},
            {{"class_name": "Add", "name": "add", "config": {{}}, "inbound_nodes": [
                {{"args": [[{}, {}]], "kwargs": {{}}}}]}}],
            "input_layers": [["i", 0, 0]], "output_layers": [["add", 0, 0]]}}}}"#,
            t("i", 0),
            t("d", 0),
            t("d", 1),
            t("i", 0)
        );
        let spec = parse(&text).unwrap();
        let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["i", "d", "d@1", "add"]);
        let g = spec.graph.expect("a graph");
        assert_eq!(
            g.calls[2].args,
            [Source {
                layer: 1,
                tensor: 0
            }]
        );
        assert_eq!(
            g.calls[3].args,
            [
                Source {
                    layer: 2,
                    tensor: 0
                },
                Source {
                    layer: 0,
                    tensor: 0
                }
            ]
        );
    }

    #[test]
    fn masks_must_come_from_a_masking_layer() {
        let layer = |class: &str, name: &str, node: &str| {
            format!(
                r#"{{"class_name": "{class}", "name": "{name}", "config": {{"mask_value": 0.0}}, "inbound_nodes": {node}}}"#
            )
        };
        let t = |from: &str| {
            format!(
                r#"{{"class_name": "__keras_tensor__", "config": {{"keras_history": ["{from}", 0, 0]}}}}"#
            )
        };
        let graph = |masking: bool| {
            let mut layers = vec![
                layer("InputLayer", "i", "[]"),
                layer(
                    "NotEqual",
                    "ne",
                    &format!(r#"[{{"args": [{}, 0.0], "kwargs": {{}}}}]"#, t("i")),
                ),
                layer(
                    "Any",
                    "any",
                    &format!(r#"[{{"args": [{}], "kwargs": {{}}}}]"#, t("ne")),
                ),
            ];
            let first = if masking {
                layers.push(layer(
                    "Masking",
                    "m",
                    &format!(r#"[{{"args": [{}], "kwargs": {{}}}}]"#, t("i")),
                ));
                "m"
            } else {
                "i"
            };
            layers.push(layer(
                "LSTM",
                "l",
                &format!(
                    r#"[{{"args": [{}], "kwargs": {{"mask": {}}}}}]"#,
                    t(first),
                    t("any")
                ),
            ));
            format!(
                r#"{{"class_name": "Functional", "config": {{"layers": [{}],
                    "input_layers": ["i", 0, 0], "output_layers": ["l", 0, 0]}}}}"#,
                layers.join(",")
            )
        };
        let spec = parse(&graph(true)).unwrap();
        let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["i", "m", "l"]);
        let e = parse(&graph(false)).unwrap_err();
        assert!(
            e.contains("layer 'l' (LSTM) receives a mask computed by layer 'any' (Any)"),
            "{e}"
        );
    }

    #[test]
    fn a_huge_graph_is_ordered_in_near_linear_time() {
        // 10,000 layers, listed last first, ending in a merge (so a graph, not a chain).
        let n = 10_000;
        let t = |from: &str| {
            format!(
                r#"{{"class_name": "__keras_tensor__", "config": {{"keras_history": ["{from}", 0, 0]}}}}"#
            )
        };
        let mut layers = vec![
            r#"{"class_name": "InputLayer", "name": "i", "config": {}, "inbound_nodes": []}"#
                .to_string(),
        ];
        for k in 0..n {
            let from = if k == 0 {
                "i".to_string()
            } else {
                format!("d{}", k - 1)
            };
            layers.push(format!(
                r#"{{"class_name": "Dense", "name": "d{k}", "config": {{}}, "inbound_nodes": [{{"args": [{}], "kwargs": {{}}}}]}}"#,
                t(&from)
            ));
        }
        layers.push(format!(
            r#"{{"class_name": "Add", "name": "add", "config": {{}}, "inbound_nodes": [{{"args": [[{}, {}]], "kwargs": {{}}}}]}}"#,
            t("i"),
            t(&format!("d{}", n - 1))
        ));
        layers[1..].reverse();
        let text = format!(
            r#"{{"class_name": "Functional", "config": {{"layers": [{}], "input_layers": [["i", 0, 0]], "output_layers": [["add", 0, 0]]}}}}"#,
            layers.join(",")
        );
        let started = std::time::Instant::now();
        let spec = parse(&text).unwrap();
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(spec.layers.len(), n + 2);
        assert_eq!(spec.layers[0].name, "i");
        assert_eq!(spec.layers[n + 1].name, "add");
        assert!(spec.graph.is_some());
    }

    #[test]
    fn other_model_classes_are_refused() {
        let e = parse(r#"{"class_name": "MyModel", "config": {}}"#).unwrap_err();
        assert!(e.contains("'MyModel'"), "{e}");
        assert!(parse("[1, 2]").unwrap_err().contains("not a JSON object"));
        assert!(parse("{").unwrap_err().contains("not valid JSON"));
    }
}
