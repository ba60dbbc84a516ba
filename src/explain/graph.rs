/*!
A whole saved model as the explainer sees it when it is more than a chain of recurrent layers and heads:
a DAG of differentiable nodes (the layers `run --model` computes), with several inputs and outputs,
recurrent layers' and Bidirectionals' returned states, attention layers' returned scores and
`initial_state` links, run forward with every recurrent gate recorded and differentiated
backward from one output to every input by reverse topological accumulation (each node's output
gradients summed over its consumers before its vector-Jacobian product runs), and to every recurrent
layer's (direction's, cell's, shared layer's call's) initial state: the state it started from, zeros or
what an `initial_state` link gave it.

The forward pass computes every layer with the same functions as [`crate::runner`] (the arithmetic of
[`crate::model::layers`], the engine for the recurrent layers, the same mask propagation), so the
explained prediction is bit for bit what `run --model` prints. Token inputs reach the graph already
embedded: the command layer looks the ids up and hands the embedding output (and the `mask_zero` mask) in
as the input, so attributions are taken with respect to the embedding output (Captum's
`LayerIntegratedGradients` on the embedding layer).

Vector-Jacobian products follow TensorFlow's registered gradients where a choice exists: `Maximum`
sends a tie to the earlier operand (`tf.maximum`'s `x >= y`), `Minimum` likewise (`x <= y`),
`GlobalMaxPooling1D` splits a tie evenly (`reduce_max`), `MaxPooling1D` sends it to the first maximum of
the window (windows sharing a winner add up), the `ReLU` layer is 0 exactly at its threshold and 1
exactly at `max_value` (`relu_layer_derivative`). `fixtures/generate_explain_ties.py` checks each against
tf.GradientTape on inputs that force the ties.
*/

use super::derivative::{backward_rows, relu_layer_derivative};
use super::network::{
    InitialState, Merge, Recorded, RecurrentOp, Value, merge as merge_bidir, rec_backward,
    rec_value, run_rec,
};
use crate::cell::kernels::matmul;
use crate::cell::{Activation, Kernels, Real};
use crate::model::layers::attention::{Score, attention};
use crate::model::layers::conv::{Conv1d, conv1d};
use crate::model::layers::merge::{MergeOp, dot, merge as merge_op};
use crate::model::layers::pool::{Pool1d, global_pool1d, pool1d};
use crate::model::layers::relu::ReluLayer;
use crate::model::layers::{norm, shape, swap_channels, window_geometry};
use crate::trace::{LayerTrace, Record};
use crate::weights::{CellWeights, DenseWeights};
use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView3, Axis, IxDyn, s};

/// Where a tensor comes from: output `tensor` of node `node` (a recurrent layer's states follow its main
/// output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Src {
    /// Node index.
    pub node: usize,
    /// Which output of the node.
    pub tensor: usize,
}

/// One operation of the graph.
// A model has a handful of nodes: the inline recurrent layers cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum GOp<T> {
    /// A model input (or an Embedding's output, for a token input): its value is fed.
    Input,
    /// An inference no-op (Dropout, noise layers, an InputLayer that is not a model input).
    Identity,
    /// Keras `Masking(mask_value)`.
    Masking(T),
    /// A recurrent layer; with `return_state` its outputs are `[output, h, c]` (`c` for an LSTM).
    Recurrent {
        /// The layer.
        op: RecurrentOp<T>,
        /// `return_state=True`.
        return_state: bool,
    },
    /// `RNN([cells])`: the cells run one after the other over the whole sequence, cell i reading cell
    /// i−1's output sequence in time order; the output is the last cell's, the returned states every
    /// cell's (`h`, and `c` for an LSTM cell) in order. Inner cells have `return_sequences` set.
    Stacked {
        /// The cells.
        cells: Vec<RecurrentOp<T>>,
        /// `return_state=True`.
        return_state: bool,
    },
    /// `Bidirectional`: outputs `[merged]` (`[forward, backward]` without a merge mode), then with
    /// `return_state` the forward copy's final `h` (and `c` for an LSTM), then the backward copy's;
    /// `initial_state` links give the forward copy's states, then the backward copy's.
    Bidirectional {
        /// Forward copy.
        forward: RecurrentOp<T>,
        /// Backward copy (`go_backwards`).
        backward: RecurrentOp<T>,
        /// How the directions combine (`None`: `merge_mode=None`, the two sequences).
        merge: Option<Merge>,
        /// `return_state=True`.
        return_state: bool,
    },
    /// `act(x·K + b)` on the last axis.
    Dense {
        /// Kernel and bias.
        weights: DenseWeights<T>,
        /// Activation.
        activation: Activation,
    },
    /// An elementwise (or softmax) activation on the last axis.
    Activation(Activation),
    /// `ReLU(max_value, negative_slope, threshold)` / `LeakyReLU`.
    Relu {
        /// Slope below the threshold.
        negative_slope: T,
        /// Upper clip.
        max_value: Option<T>,
        /// Where the slope changes.
        threshold: T,
    },
    /// `Flatten`.
    Flatten,
    /// `Reshape(target_shape)` to `(n)` or `(t, f)` per sequence (one entry may be -1).
    Reshape(Vec<i64>),
    /// `Conv1D`, then its activation.
    Conv1D {
        /// `(taps, channels / groups, filters)`.
        kernel: Array3<T>,
        /// `(filters,)`.
        bias: Option<Array1<T>>,
        /// Geometry.
        spec: Conv1d,
        /// Activation.
        activation: Activation,
        /// `data_format='channels_first'`: reads and writes `(batch, channels, steps)`.
        channels_first: bool,
    },
    /// `MaxPooling1D` / `AveragePooling1D`; `true`: `data_format='channels_first'`.
    Pool1D(Pool1d, bool),
    /// `GlobalMaxPooling1D` / `GlobalAveragePooling1D` (mask-aware).
    GlobalPool {
        /// Max instead of mean.
        max: bool,
        /// `keepdims=True`.
        keepdims: bool,
        /// `data_format='channels_first'`: reads `(batch, channels, steps)`.
        channels_first: bool,
    },
    /// `BatchNormalization` (inference).
    BatchNorm {
        /// `gamma`.
        gamma: Option<Vec<T>>,
        /// `beta`.
        beta: Option<Vec<T>>,
        /// `moving_mean`.
        mean: Vec<T>,
        /// `moving_variance`.
        variance: Vec<T>,
        /// `epsilon`.
        epsilon: T,
    },
    /// `LayerNormalization` over the last axis.
    LayerNorm {
        /// `gamma`.
        gamma: Option<Vec<T>>,
        /// `beta`.
        beta: Option<Vec<T>>,
        /// `epsilon`.
        epsilon: T,
        /// Keras 3's `rms_scaling`.
        rms_scaling: bool,
        /// Channels.
        channels: usize,
    },
    /// `RepeatVector(n)`.
    RepeatVector(usize),
    /// `Permute((2, 1))` (true) or `(1, 2)`.
    Permute(bool),
    /// `ZeroPadding1D((left, right))`.
    ZeroPad(usize, usize),
    /// `Cropping1D((left, right))`.
    Crop(usize, usize),
    /// Merge layers.
    Merge {
        /// Which.
        op: MergeOp,
        /// `Concatenate`'s axis as configured.
        axis: i64,
        /// Keras 3: a masked operand of `Maximum`/`Minimum` is replaced by the accumulator (and a masked
        /// accumulator by the operand), [`crate::model::layers::merge::fold_masked_extremum`]; tf-keras
        /// ignores the masks there.
        masked_extremum: bool,
    },
    /// `Attention` / `AdditiveAttention` on `[query, value]` or `[query, value, key]`; with
    /// `return_scores` its second output is the softmax weights `(batch, Tq, Tv)`.
    Attention {
        /// How scores are computed (as [`crate::runner`] builds it).
        score: Score<T>,
        /// `use_causal_mask=True`.
        causal: bool,
        /// `return_attention_scores=True`.
        return_scores: bool,
    },
    /// `Dot(axes, normalize)`.
    Dot {
        /// Axes as configured.
        axes: (i64, i64),
        /// L2-normalise first.
        normalize: bool,
    },
}

/// A node: its operation and the tensors its call reads.
#[derive(Debug, Clone)]
pub struct Node<T> {
    /// The layer's name (for messages).
    pub name: String,
    /// What it computes.
    pub op: GOp<T>,
    /// Data tensors in call order.
    pub args: Vec<Src>,
    /// `initial_state=[…]` tensors of a recurrent layer.
    pub states: Vec<Src>,
    /// Masks passed by hand (`layer(x, mask=m)`), one per data argument in order: each replaces its
    /// argument's mask (nonzero keeps the step). A selector, not differentiated: no gradient flows to it.
    pub masks: Vec<Src>,
    /// A Keras 3 recurrent call that recorded no mask: it runs without its input's mask, its sequence
    /// output still carrying that mask onwards (as [`crate::runner`] runs it).
    pub drops_mask: bool,
}

/// The graph: nodes in a topological order.
#[derive(Debug, Clone)]
pub struct Graph<T> {
    /// Every node.
    pub nodes: Vec<Node<T>>,
    /// The input nodes, in the model's input order.
    pub inputs: Vec<usize>,
    /// The model's outputs, in order.
    pub outputs: Vec<Src>,
    /// Kernels the engine may use.
    pub kernels: Kernels,
}

/// A value with the Keras mask riding along.
type Masked<T> = (Value<T>, Option<Array2<bool>>);

/// A Bidirectional's traces and outputs (forward, backward).
type BidirCache<T> = (Recorded<T>, Recorded<T>, Value<T>, Value<T>);

/// Gradient with respect to an initial `(h, c)`.
pub type StateGrad<T> = (Array2<T>, Option<Array2<T>>);

/// What a node kept for the backward pass.
#[derive(Debug, Clone)]
enum Cache<T> {
    None,
    Masking(Array2<bool>),
    Recurrent(Box<Recorded<T>>),
    Stacked(Vec<Recorded<T>>),
    Bidirectional(Box<BidirCache<T>>),
    /// Pre-activation and output rows.
    Act(Array2<T>, Array2<T>),
    /// The mask a global average used.
    GlobalPool(Option<Array2<bool>>),
}

/// A recorded forward pass of a [`Graph`].
#[derive(Debug, Clone)]
pub struct GForward<T> {
    values: Vec<Vec<Masked<T>>>,
    caches: Vec<Cache<T>>,
    /// The model's outputs, in order.
    pub outputs: Vec<Value<T>>,
}

impl<T: Real> GForward<T> {
    /// The recurrent layers' traces in node order (a Bidirectional gives forward, then backward).
    pub fn traces(&self) -> Vec<&LayerTrace<T>> {
        self.recorded().into_iter().map(|r| &r.trace).collect()
    }

    /// The recurrent layers' recorded passes (trace and per-gate blocks) in node order.
    pub fn recorded(&self) -> Vec<&Recorded<T>> {
        let mut v = Vec::new();
        for c in &self.caches {
            match c {
                Cache::Recurrent(t) => v.push(t.as_ref()),
                Cache::Stacked(ts) => v.extend(ts.iter()),
                Cache::Bidirectional(b) => {
                    v.push(&b.0);
                    v.push(&b.1);
                }
                _ => {}
            }
        }
        v
    }
}

fn to_dyn<T: Real>(v: &Value<T>) -> ArrayD<T> {
    match v {
        Value::Seq(a) => a.clone().into_dyn(),
        Value::Flat(a) => a.clone().into_dyn(),
    }
}

fn from_dyn<T: Real>(a: ArrayD<T>) -> Value<T> {
    match a.ndim() {
        2 => Value::Flat(a.into_dimensionality().expect("2-D")),
        _ => Value::Seq(
            a.as_standard_layout()
                .into_owned()
                .into_dimensionality()
                .expect("3-D"),
        ),
    }
}

fn seq<T: Real>(v: &Value<T>, name: &str) -> Array3<T> {
    seq_view(v, name).to_owned()
}

/// [`seq`] without the copy.
fn seq_view<'a, T: Real>(v: &'a Value<T>, name: &str) -> ArrayView3<'a, T> {
    match v {
        Value::Seq(a) => a.view(),
        Value::Flat(_) => panic!("layer '{name}' needs a sequence (the builder checked)"),
    }
}

fn add_into<T: Real>(slot: &mut Option<Value<T>>, g: Value<T>) {
    match slot {
        None => *slot = Some(g),
        Some(acc) => match (acc, g) {
            (Value::Seq(a), Value::Seq(b)) => a.zip_mut_with(&b, |p, &q| *p = *p + q),
            (Value::Flat(a), Value::Flat(b)) => a.zip_mut_with(&b, |p, &q| *p = *p + q),
            _ => panic!("gradient shapes follow the values"),
        },
    }
}

/// [`swap_channels`] on a value (a flat value has no channels axis to swap).
fn swap_value<T: Real>(v: Value<T>, channels_first: bool) -> Value<T> {
    match v {
        Value::Seq(a) => Value::Seq(swap_channels(a, channels_first)),
        flat => flat,
    }
}

/// A value's rows `(batch·steps, last axis)` as an owned standard-layout array.
fn rows<T: Real>(v: &Value<T>) -> Array2<T> {
    v.rows().as_standard_layout().into_owned()
}

impl<T: Real> Graph<T> {
    /// Node `i`'s data arguments as its layer receives them: hand masks (`mask=`) in place of the
    /// propagated ones, and, for [`Node::drops_mask`], the first argument's mask taken out (returned).
    fn call_args(
        &self,
        i: usize,
        values: &[Vec<Masked<T>>],
    ) -> (Vec<Masked<T>>, Option<Array2<bool>>) {
        let node = &self.nodes[i];
        let mut args: Vec<Masked<T>> = node
            .args
            .iter()
            .map(|s| values[s.node][s.tensor].clone())
            .collect();
        let dropped = if node.drops_mask && node.masks.is_empty() {
            args.first_mut().and_then(|a| a.1.take())
        } else {
            None
        };
        for (arg, s) in args.iter_mut().zip(&node.masks) {
            arg.1 = Some(match &values[s.node][s.tensor].0 {
                Value::Flat(m) => m.mapv(|v| v != T::zero()),
                Value::Seq(_) => panic!(
                    "layer '{}': a mask is (batch, steps) (`run` checked the shapes first)",
                    node.name
                ),
            });
        }
        (args, dropped)
    }

    /// How many outputs of node `i` exist for a forward pass (for gradient slots).
    fn node_outputs(&self, values: &[Vec<Masked<T>>], i: usize) -> usize {
        values[i].len()
    }

    /// Runs the graph on `inputs` (one value per model input, in order, each with its mask), the first
    /// recurrent layer without `initial_state` links starting from `init`. `record`: [`Record::ALL`] for a
    /// pass to differentiate, [`Record::STATES`] for outputs only.
    pub fn forward(
        &self,
        inputs: Vec<Masked<T>>,
        init: &InitialState<T>,
        record: Record,
    ) -> GForward<T> {
        let n = self.nodes.len();
        let mut values: Vec<Vec<Masked<T>>> = vec![Vec::new(); n];
        let mut caches: Vec<Cache<T>> = vec![Cache::None; n];
        for (&i, x) in self.inputs.iter().zip(inputs) {
            values[i] = vec![x];
        }
        let first_rec = self.first_recurrent();
        for (i, node) in self.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if matches!(node.op, GOp::Input) {
                continue;
            }
            let (args, dropped) = self.call_args(i, &values);
            let states: Vec<Array2<T>> = node
                .states
                .iter()
                .map(|s| match &values[s.node][s.tensor].0 {
                    Value::Flat(a) => a.clone(),
                    Value::Seq(_) => panic!("layer '{name}': a state is (batch, units)"),
                })
                .collect();
            let one = || args[0].clone();
            let (outs, cache) = match &node.op {
                GOp::Input => unreachable!(),
                GOp::Identity => (vec![one()], Cache::None),
                GOp::Masking(mv) => {
                    let mut y = seq(&args[0].0, name);
                    let m = crate::engine::mask_from_value(y.view(), *mv);
                    for ((b, t), &keep) in m.indexed_iter() {
                        if !keep {
                            y.slice_mut(s![b, t, ..]).fill(T::zero());
                        }
                    }
                    (vec![(Value::Seq(y), Some(m.clone()))], Cache::Masking(m))
                }
                GOp::Recurrent { op, return_state } => {
                    let (x, mask) = &args[0];
                    let x = seq_view(x, name);
                    let given = if states.is_empty() {
                        (first_rec == Some(i)).then(|| init.clone())
                    } else {
                        let mut it = states.into_iter();
                        Some(InitialState {
                            h0: it.next(),
                            c0: it.next(),
                        })
                    };
                    let l = run_rec(
                        op,
                        x.view(),
                        mask.as_ref(),
                        given.as_ref(),
                        record,
                        self.kernels,
                    );
                    let v = rec_value(op, &l.trace, false);
                    let m = if op.return_sequences {
                        mask.clone()
                    } else {
                        None
                    };
                    let mut outs = vec![(v, m)];
                    if *return_state {
                        outs.push((Value::Flat(l.trace.final_h.clone()), None));
                        if let Some(c) = &l.trace.final_c {
                            outs.push((Value::Flat(c.clone()), None));
                        }
                    }
                    (outs, Cache::Recurrent(Box::new(l)))
                }
                GOp::Stacked {
                    cells,
                    return_state,
                } => {
                    let (x, mask) = &args[0];
                    let mut input = seq(x, name);
                    let mut given = states.into_iter();
                    let mut traces = Vec::with_capacity(cells.len());
                    let mut finals = Vec::new();
                    let mut top = None;
                    for (c, op) in cells.iter().enumerate() {
                        let h0 = given.next();
                        let c0 = if op.weights.kind == crate::weights::CellKind::Lstm {
                            given.next()
                        } else {
                            None
                        };
                        let init =
                            (h0.is_some() || c0.is_some()).then_some(InitialState { h0, c0 });
                        let l = run_rec(
                            op,
                            input.view(),
                            mask.as_ref(),
                            init.as_ref(),
                            record,
                            self.kernels,
                        );
                        finals.push(l.trace.final_h.clone());
                        if let Some(fc) = &l.trace.final_c {
                            finals.push(fc.clone());
                        }
                        if c + 1 < cells.len() {
                            // The next cell reads this one's output in time order.
                            let Value::Seq(o) = rec_value(op, &l.trace, op.spec.go_backwards)
                            else {
                                unreachable!("inner cells return sequences")
                            };
                            input = o;
                        } else {
                            top = Some(rec_value(op, &l.trace, false));
                        }
                        traces.push(l);
                    }
                    let last = cells.last().expect("a stack holds cells");
                    let m = if last.return_sequences {
                        mask.clone()
                    } else {
                        None
                    };
                    let mut outs = vec![(top.expect("a stack holds cells"), m)];
                    if *return_state {
                        outs.extend(finals.into_iter().map(|f| (Value::Flat(f), None)));
                    }
                    (outs, Cache::Stacked(traces))
                }
                GOp::Bidirectional {
                    forward,
                    backward,
                    merge,
                    return_state,
                } => {
                    let (x, mask) = &args[0];
                    let x = seq_view(x, name);
                    // `initial_state`: the forward copy's (h, c for an LSTM), then the backward copy's.
                    let mut given = states.into_iter();
                    let mut take = |op: &RecurrentOp<T>| {
                        let h0 = given.next();
                        let c0 = if op.weights.kind == crate::weights::CellKind::Lstm {
                            given.next()
                        } else {
                            None
                        };
                        (h0.is_some() || c0.is_some()).then_some(InitialState { h0, c0 })
                    };
                    let (inf, inb) = (take(forward), take(backward));
                    let lf = run_rec(
                        forward,
                        x.view(),
                        mask.as_ref(),
                        inf.as_ref(),
                        record,
                        self.kernels,
                    );
                    let lb = run_rec(
                        backward,
                        x.view(),
                        mask.as_ref(),
                        inb.as_ref(),
                        record,
                        self.kernels,
                    );
                    let of = rec_value(forward, &lf.trace, false);
                    let ob = rec_value(backward, &lb.trace, backward.spec.go_backwards);
                    let m = if forward.return_sequences {
                        mask.clone()
                    } else {
                        None
                    };
                    let mut outs = match merge {
                        Some(mg) => vec![(merge_bidir(*mg, &of, &ob), m)],
                        None => vec![(of.clone(), m.clone()), (ob.clone(), m)],
                    };
                    if *return_state {
                        for l in [&lf, &lb] {
                            outs.push((Value::Flat(l.trace.final_h.clone()), None));
                            if let Some(c) = &l.trace.final_c {
                                outs.push((Value::Flat(c.clone()), None));
                            }
                        }
                    }
                    (outs, Cache::Bidirectional(Box::new((lf, lb, of, ob))))
                }
                GOp::Dense {
                    weights,
                    activation,
                } => {
                    let (v, m) = &args[0];
                    let r = v.rows();
                    let mut pre = Array2::<T>::zeros((r.nrows(), weights.outputs()));
                    if let Some(b) = &weights.bias {
                        pre.rows_mut().into_iter().for_each(|mut row| row.assign(b));
                    }
                    matmul(pre.view_mut(), r, weights.kernel.view(), true);
                    let mut post = pre.clone();
                    activation.apply_rows(post.view_mut());
                    let out = Value::reshape_rows(post.clone(), v);
                    (vec![(out, m.clone())], Cache::Act(pre, post))
                }
                GOp::Activation(a) => {
                    let (v, m) = &args[0];
                    let pre = rows(v);
                    let mut post = pre.clone();
                    a.apply_rows(post.view_mut());
                    let out = Value::reshape_rows(post.clone(), v);
                    (vec![(out, m.clone())], Cache::Act(pre, post))
                }
                GOp::Relu {
                    negative_slope,
                    max_value,
                    threshold,
                } => {
                    let (v, m) = &args[0];
                    let relu = ReluLayer {
                        negative_slope: *negative_slope,
                        max_value: *max_value,
                        threshold: *threshold,
                    };
                    let mut d = to_dyn(v);
                    d.mapv_inplace(|x| relu.apply(x));
                    (vec![(from_dyn(d), m.clone())], Cache::None)
                }
                GOp::Flatten => {
                    let (v, _) = &args[0];
                    (vec![(Value::Flat(rows_flat(v)), None)], Cache::None)
                }
                GOp::Reshape(target) => {
                    let (v, _) = &args[0];
                    let r = rows_flat(v);
                    let (b, n) = r.dim();
                    // As crate::runner resolves it (it has checked the sizes).
                    let known: i64 = target.iter().filter(|&&d| d > 0).product();
                    let dims: Vec<usize> = target
                        .iter()
                        .map(|&d| {
                            if d < 0 {
                                if known > 0 { n / known as usize } else { 0 }
                            } else {
                                d as usize
                            }
                        })
                        .collect();
                    let out = match dims.as_slice() {
                        [t, f] => Value::Seq(r.into_shape_with_order((b, *t, *f)).expect("size")),
                        _ => Value::Flat(r),
                    };
                    (vec![(out, None)], Cache::None)
                }
                GOp::Conv1D {
                    kernel,
                    bias,
                    spec,
                    activation,
                    channels_first,
                } => {
                    // Channels-last arithmetic between swaps, as `run` computes it; the cached rows
                    // are channels-last.
                    let x = swap_channels(seq(&args[0].0, name), *channels_first);
                    let y = conv1d(
                        x.view(),
                        kernel.view(),
                        bias.as_ref().map(|b| b.view()),
                        spec,
                    );
                    let (yb, yt, yf) = y.dim();
                    let like = Value::Seq(Array3::zeros((yb, yt, 0)));
                    // The fresh output is standard layout: its rows need no copy.
                    let pre = y
                        .into_shape_with_order((yb * yt, yf))
                        .expect("a fresh array");
                    let mut post = pre.clone();
                    activation.apply_rows(post.view_mut());
                    let out = Value::reshape_rows(post.clone(), &like);
                    let out = swap_value(out, *channels_first);
                    (vec![(out, None)], Cache::Act(pre, post))
                }
                GOp::Pool1D(p, channels_first) => {
                    let x = swap_channels(seq(&args[0].0, name), *channels_first);
                    let y = swap_channels(pool1d(x.view(), p), *channels_first);
                    (vec![(Value::Seq(y), None)], Cache::None)
                }
                GOp::GlobalPool {
                    max,
                    keepdims,
                    channels_first,
                } => {
                    let (v, m) = &args[0];
                    // The mask is over timesteps: axis 1 once swapped to channels-last (as `run`).
                    let x = swap_channels(seq(v, name), *channels_first);
                    let y = global_pool1d(x.view(), m.as_ref().map(|m| m.view()), *max);
                    let out = if *keepdims {
                        let (b, c) = y.dim();
                        let kept = if *channels_first {
                            (b, c, 1)
                        } else {
                            (b, 1, c)
                        };
                        Value::Seq(y.into_shape_with_order(kept).expect("size"))
                    } else {
                        Value::Flat(y)
                    };
                    (vec![(out, None)], Cache::GlobalPool(m.clone()))
                }
                GOp::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    variance,
                    epsilon,
                } => {
                    let (v, m) = &args[0];
                    let mut d = to_dyn(v).as_standard_layout().into_owned();
                    norm::batch_norm(
                        d.as_slice_mut().expect("standard"),
                        gamma.as_deref(),
                        beta.as_deref(),
                        mean,
                        variance,
                        *epsilon,
                    );
                    (vec![(from_dyn(d), m.clone())], Cache::None)
                }
                GOp::LayerNorm {
                    gamma,
                    beta,
                    epsilon,
                    rms_scaling,
                    channels,
                } => {
                    let (v, m) = &args[0];
                    let mut d = to_dyn(v).as_standard_layout().into_owned();
                    norm::layer_norm(
                        d.as_slice_mut().expect("standard"),
                        *channels,
                        gamma.as_deref(),
                        beta.as_deref(),
                        *epsilon,
                        *rms_scaling,
                    );
                    (vec![(from_dyn(d), m.clone())], Cache::None)
                }
                GOp::RepeatVector(k) => {
                    let Value::Flat(a) = &args[0].0 else {
                        panic!("layer '{name}' takes (batch, features)")
                    };
                    (
                        vec![(Value::Seq(shape::repeat_vector(a.view(), *k)), None)],
                        Cache::None,
                    )
                }
                GOp::Permute(swap) => {
                    let x = seq(&args[0].0, name);
                    let y = if *swap {
                        shape::swap_time_features(x.view())
                    } else {
                        x
                    };
                    (vec![(Value::Seq(y), None)], Cache::None)
                }
                GOp::ZeroPad(l, r) => {
                    let x = seq(&args[0].0, name);
                    (
                        vec![(Value::Seq(shape::zero_pad(x.view(), *l, *r)), None)],
                        Cache::None,
                    )
                }
                GOp::Crop(l, r) => {
                    let x = seq(&args[0].0, name);
                    let y = shape::crop(x.view(), *l, *r).expect("the builder checked the length");
                    (vec![(Value::Seq(y), None)], Cache::None)
                }
                GOp::Merge {
                    op,
                    axis,
                    masked_extremum,
                } => (
                    vec![merge_forward(*op, *axis, *masked_extremum, &args)],
                    Cache::None,
                ),
                GOp::Attention {
                    score,
                    causal,
                    return_scores,
                } => {
                    let q = seq(&args[0].0, name);
                    let v = seq(&args[1].0, name);
                    let k = args.get(2).map(|a| seq(&a.0, name));
                    let (y, weights) = attention(
                        q.view(),
                        v.view(),
                        k.as_ref().unwrap_or(&v).view(),
                        score,
                        args[0].1.as_ref().map(|m| m.view()),
                        args[1].1.as_ref().map(|m| m.view()),
                        *causal,
                        None,
                    );
                    let mut outs = vec![(Value::Seq(y), args[0].1.clone())];
                    if *return_scores {
                        // Keras's second output: the softmax weights, without a mask.
                        outs.push((Value::Seq(weights), None));
                    }
                    (outs, Cache::None)
                }
                GOp::Dot { axes, normalize } => {
                    let (x, y) = (to_dyn(&args[0].0), to_dyn(&args[1].0));
                    let (ax, ay) = resolve_axes(*axes, x.ndim(), y.ndim());
                    let z = dot(x.view(), y.view(), ax, ay, *normalize)
                        .expect("the builder checked the shapes");
                    (vec![(from_dyn(z), None)], Cache::None)
                }
            };
            let mut outs = outs;
            if let Some(m) = dropped {
                let seqs = match &node.op {
                    GOp::Bidirectional { merge: None, .. } => 2,
                    _ => 1,
                };
                for o in outs.iter_mut().take(seqs) {
                    if let Value::Seq(a) = &o.0
                        && a.dim().0 == m.nrows()
                        && a.dim().1 == m.ncols()
                    {
                        o.1 = Some(m.clone());
                    }
                }
            }
            values[i] = outs;
            caches[i] = cache;
        }
        let outputs = self
            .outputs
            .iter()
            .map(|s| values[s.node][s.tensor].0.clone())
            .collect();
        GForward {
            values,
            caches,
            outputs,
        }
    }

    /// The first recurrent node that reads no `initial_state` (the one `--initial-state`-like gradients
    /// are reported for).
    fn first_recurrent(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| matches!(n.op, GOp::Recurrent { .. }) && n.states.is_empty())
    }

    /// The recurrent layers' weights in trace order (a Bidirectional gives forward, then backward).
    pub fn recurrent_weights(&self) -> Vec<&CellWeights<T>> {
        let mut v = Vec::new();
        for n in &self.nodes {
            match &n.op {
                GOp::Recurrent { op, .. } => v.push(&op.weights),
                GOp::Stacked { cells, .. } => v.extend(cells.iter().map(|c| &c.weights)),
                GOp::Bidirectional {
                    forward, backward, ..
                } => {
                    v.push(&forward.weights);
                    v.push(&backward.weights);
                }
                _ => {}
            }
        }
        v
    }

    /// Each node's first slot among the recurrent layers (directions, cells) in trace order (the order of
    /// [`GForward::recorded`] and [`Graph::recurrent_weights`]), and how many slots there are.
    fn state_slots(&self) -> (Vec<usize>, usize) {
        let mut at = 0;
        let slots = self
            .nodes
            .iter()
            .map(|n| {
                let here = at;
                at += match &n.op {
                    GOp::Recurrent { .. } => 1,
                    GOp::Stacked { cells, .. } => cells.len(),
                    GOp::Bidirectional { .. } => 2,
                    _ => 0,
                };
                here
            })
            .collect();
        (slots, at)
    }

    /// Which entry of [`Graph::backward`]'s initial-state gradients is the schema's single
    /// `initial_state_gradient`: the first recurrent layer's (an `RNN([cells])`'s first cell), none when that
    /// layer is a Bidirectional (two directions, as the chain explainer reports it).
    pub fn first_state_entry(&self) -> Option<usize> {
        let first = self.nodes.iter().find(|n| {
            matches!(
                n.op,
                GOp::Recurrent { .. } | GOp::Stacked { .. } | GOp::Bidirectional { .. }
            )
        })?;
        (!matches!(first.op, GOp::Bidirectional { .. })).then_some(0)
    }

    /// Backpropagates the seeds (gradient with respect to each model output, `None` = zero) through
    /// `fwd`: the gradient with respect to every model input (zeros when an input does not reach the
    /// seeded outputs), and with respect to every recurrent layer's initial `(h, c)` in trace order (a
    /// Bidirectional's forward then backward direction, an `RNN([cells])`'s cells in order, a shared
    /// layer once per call): the gradient with respect to the state that layer started from, whether
    /// the default zeros or a tensor given by an `initial_state` link (which then also receives it);
    /// zeros for a layer the seeded outputs do not depend on.
    pub fn backward(
        &self,
        fwd: &GForward<T>,
        seeds: Vec<Option<Value<T>>>,
    ) -> (Vec<Value<T>>, Vec<StateGrad<T>>) {
        let n = self.nodes.len();
        let mut grads: Vec<Vec<Option<Value<T>>>> = (0..n)
            .map(|i| vec![None; self.node_outputs(&fwd.values, i)])
            .collect();
        for (s, g) in self.outputs.iter().zip(seeds) {
            if let Some(g) = g {
                add_into(&mut grads[s.node][s.tensor], g);
            }
        }
        let (slots, count) = self.state_slots();
        let mut init_grads: Vec<Option<StateGrad<T>>> = vec![None; count];
        for i in (0..n).rev() {
            let node = &self.nodes[i];
            if matches!(node.op, GOp::Input) {
                continue;
            }
            if grads[i].iter().all(Option::is_none) {
                continue;
            }
            let g_out = std::mem::take(&mut grads[i]);
            // The arguments with the masks the layer ran with (hand masks, a dropped mask).
            let called = (!node.masks.is_empty() || node.drops_mask)
                .then(|| self.call_args(i, &fwd.values).0);
            let arg_vals: Vec<&Masked<T>> = match &called {
                Some(c) => c.iter().collect(),
                None => node
                    .args
                    .iter()
                    .map(|s| &fwd.values[s.node][s.tensor])
                    .collect(),
            };
            let (dargs, dstates) = self.node_backward(
                i,
                &fwd.values[i],
                &fwd.caches[i],
                &arg_vals,
                g_out,
                &mut init_grads[slots[i]..],
            );
            for (s, d) in node.args.iter().zip(dargs) {
                if let Some(d) = d {
                    add_into(&mut grads[s.node][s.tensor], d);
                }
            }
            for (s, d) in node.states.iter().zip(dstates) {
                add_into(&mut grads[s.node][s.tensor], Value::Flat(d));
            }
        }
        let dx = self
            .inputs
            .iter()
            .map(|&i| {
                grads[i][0]
                    .take()
                    .unwrap_or_else(|| fwd.values[i][0].0.zeros_like())
            })
            .collect();
        let init_grads = init_grads
            .into_iter()
            .zip(fwd.recorded())
            .map(|(g, r)| {
                g.unwrap_or_else(|| {
                    (
                        Array2::zeros(r.trace.final_h.raw_dim()),
                        r.trace.final_c.as_ref().map(|c| Array2::zeros(c.raw_dim())),
                    )
                })
            })
            .collect();
        (dx, init_grads)
    }

    /// One node's vector-Jacobian product: gradients for its data arguments (`None`: nothing flows
    /// there) and for its `initial_state` tensors; a recurrent node also writes its layers' (directions',
    /// cells') initial-state gradients into `init_grads` from its first slot on.
    fn node_backward(
        &self,
        i: usize,
        outs: &[Masked<T>],
        cache: &Cache<T>,
        args: &[&Masked<T>],
        mut g_out: Vec<Option<Value<T>>>,
        init_grads: &mut [Option<StateGrad<T>>],
    ) -> (Vec<Option<Value<T>>>, Vec<Array2<T>>) {
        let node = &self.nodes[i];
        let g = g_out[0].take().unwrap_or_else(|| outs[0].0.zeros_like());
        let x0 = &args[0].0;
        let one = |v: Value<T>| (vec![Some(v)], Vec::new());
        match (&node.op, cache) {
            (GOp::Identity, _) => one(g),
            (GOp::Masking(_), Cache::Masking(m)) => {
                let Value::Seq(mut d) = g else { unreachable!() };
                for ((b, t), &keep) in m.indexed_iter() {
                    if !keep {
                        d.slice_mut(s![b, t, ..]).fill(T::zero());
                    }
                }
                one(Value::Seq(d))
            }
            (GOp::Recurrent { op, .. }, Cache::Recurrent(l)) => {
                let gh = g_out.get_mut(1).and_then(Option::take);
                let gc = g_out.get_mut(2).and_then(Option::take);
                let lg = rec_backward_states(op, l, &g, (gh, gc), false);
                let mut dstates = Vec::new();
                if !node.states.is_empty() {
                    dstates.push(lg.dh0.clone());
                    if let Some(c) = lg.dc0.as_ref().filter(|_| node.states.len() > 1) {
                        dstates.push(c.clone());
                    }
                }
                init_grads[0] = Some((lg.dh0, lg.dc0));
                (vec![Some(Value::Seq(lg.dx))], dstates)
            }
            (GOp::Stacked { cells, .. }, Cache::Stacked(traces)) => {
                // Returned states: per cell h (and c), in order, after the main output.
                let mut slot = 1;
                let mut state_g = Vec::with_capacity(cells.len());
                for op in cells {
                    let gh = g_out.get_mut(slot).and_then(Option::take);
                    slot += 1;
                    let gc = if op.weights.kind == crate::weights::CellKind::Lstm {
                        slot += 1;
                        g_out.get_mut(slot - 1).and_then(Option::take)
                    } else {
                        None
                    };
                    state_g.push((gh, gc));
                }
                let mut dstates_rev: Vec<Vec<Array2<T>>> = Vec::with_capacity(cells.len());
                let mut g_cur = g;
                for (c, (op, l)) in cells.iter().zip(traces).enumerate().rev() {
                    let (gh, gc) = state_g[c].clone();
                    if c + 1 < cells.len() && op.spec.go_backwards {
                        // The next cell read this output flipped to time order: back to processing order.
                        if let Value::Seq(a) = &mut g_cur {
                            a.invert_axis(Axis(1));
                            *a = a.as_standard_layout().into_owned();
                        }
                    }
                    let lg = rec_backward_states(op, l, &g_cur, (gh, gc), false);
                    let mut ds = vec![lg.dh0.clone()];
                    if let Some(dc) = &lg.dc0 {
                        ds.push(dc.clone());
                    }
                    dstates_rev.push(ds);
                    g_cur = Value::Seq(lg.dx);
                }
                for (slot, ds) in init_grads.iter_mut().zip(dstates_rev.iter().rev()) {
                    *slot = Some((ds[0].clone(), ds.get(1).cloned()));
                }
                let dstates: Vec<Array2<T>> = if node.states.is_empty() {
                    Vec::new()
                } else {
                    dstates_rev.into_iter().rev().flatten().collect()
                };
                (vec![Some(g_cur)], dstates)
            }
            (
                GOp::Bidirectional {
                    forward,
                    backward,
                    merge,
                    ..
                },
                Cache::Bidirectional(c),
            ) => {
                let (lf, lb, of, ob) = c.as_ref();
                let gr = g.rows();
                // The returned states follow the one merged output (or the two sequences).
                let mut slot = if merge.is_some() { 1 } else { 2 };
                let mut state_g = |op: &RecurrentOp<T>| {
                    let gh = g_out.get_mut(slot).and_then(Option::take);
                    slot += 1;
                    let gc = if op.weights.kind == crate::weights::CellKind::Lstm {
                        slot += 1;
                        g_out.get_mut(slot - 1).and_then(Option::take)
                    } else {
                        None
                    };
                    (gh, gc)
                };
                let (sf, sb) = (state_g(forward), state_g(backward));
                let (gf, gb) = match merge {
                    None => (
                        gr.to_owned(),
                        g_out
                            .get_mut(1)
                            .and_then(Option::take)
                            .unwrap_or_else(|| ob.zeros_like())
                            .rows()
                            .to_owned(),
                    ),
                    Some(Merge::Concat) => {
                        let w = of.rows().ncols();
                        (
                            gr.slice(s![.., ..w]).to_owned(),
                            gr.slice(s![.., w..]).to_owned(),
                        )
                    }
                    Some(Merge::Sum) => (gr.to_owned(), gr.to_owned()),
                    Some(Merge::Ave) => {
                        let h = gr.mapv(|v| v * T::lit(0.5));
                        (h.clone(), h)
                    }
                    Some(Merge::Mul) => (&gr * &ob.rows(), &gr * &of.rows()),
                };
                let gf = Value::reshape_rows(gf, of);
                let gb = Value::reshape_rows(gb, ob);
                let df = rec_backward_states(forward, lf, &gf, sf, false);
                let db = rec_backward_states(backward, lb, &gb, sb, backward.spec.go_backwards);
                let mut dstates = Vec::new();
                if !node.states.is_empty() {
                    for d in [&df, &db] {
                        dstates.push(d.dh0.clone());
                        dstates.extend(d.dc0.clone());
                    }
                }
                init_grads[0] = Some((df.dh0, df.dc0));
                init_grads[1] = Some((db.dh0, db.dc0));
                (vec![Some(Value::Seq(df.dx + db.dx))], dstates)
            }
            (
                GOp::Dense {
                    weights,
                    activation,
                },
                Cache::Act(pre, post),
            ) => {
                let mut d = rows(&g);
                backward_rows(*activation, pre.view(), post.view(), d.view_mut());
                let mut dxr = Array2::<T>::zeros((d.nrows(), weights.kernel.nrows()));
                matmul(dxr.view_mut(), d.view(), weights.kernel.t(), false);
                one(Value::reshape_rows(dxr, x0))
            }
            (GOp::Activation(a), Cache::Act(pre, post)) => {
                let mut d = rows(&g);
                backward_rows(*a, pre.view(), post.view(), d.view_mut());
                one(Value::reshape_rows(d, x0))
            }
            (
                GOp::Relu {
                    negative_slope,
                    max_value,
                    threshold,
                },
                _,
            ) => {
                let relu = ReluLayer {
                    negative_slope: *negative_slope,
                    max_value: *max_value,
                    threshold: *threshold,
                };
                let x = to_dyn(x0);
                let mut d = to_dyn(&g);
                ndarray::Zip::from(&mut d).and(&x).for_each(|gv, &xv| {
                    *gv = *gv * relu_layer_derivative(&relu, xv);
                });
                one(from_dyn(d))
            }
            (GOp::Flatten | GOp::Reshape(_), _) => {
                let r = rows_flat(&g);
                one(match x0 {
                    Value::Flat(_) => Value::Flat(r),
                    Value::Seq(a) => {
                        Value::Seq(r.into_shape_with_order(a.raw_dim()).expect("size"))
                    }
                })
            }
            (
                GOp::Conv1D {
                    kernel,
                    spec,
                    activation,
                    channels_first,
                    ..
                },
                Cache::Act(pre, post),
            ) => {
                // A transpose's VJP is the inverse transpose: to channels-last and back.
                let g = swap_value(g, *channels_first);
                let mut d = rows(&g);
                backward_rows(*activation, pre.view(), post.view(), d.view_mut());
                let Value::Seq(gy) = Value::reshape_rows(d, &g) else {
                    unreachable!()
                };
                let x_dim = swap_channels(seq(x0, ""), *channels_first).dim();
                let dx = conv1d_backward(&gy, kernel, spec, x_dim);
                one(Value::Seq(swap_channels(dx, *channels_first)))
            }
            (GOp::Pool1D(p, channels_first), _) => {
                let x = swap_channels(seq(x0, ""), *channels_first);
                let Value::Seq(gy) = swap_value(g, *channels_first) else {
                    unreachable!()
                };
                let dx = pool1d_backward(&x, &gy, p);
                one(Value::Seq(swap_channels(dx, *channels_first)))
            }
            (
                GOp::GlobalPool {
                    max,
                    channels_first,
                    ..
                },
                Cache::GlobalPool(mask),
            ) => {
                let x = swap_channels(seq(x0, ""), *channels_first);
                let (b, t, c) = x.dim();
                let gy = rows_flat(&g); // (b, c) either way
                let mut dx = Array3::<T>::zeros((b, t, c));
                for bi in 0..b {
                    for ci in 0..c {
                        let gv = gy[[bi, ci]];
                        if *max {
                            let col = x.slice(s![bi, .., ci]);
                            let m = col.iter().copied().fold(T::neg_infinity(), T::max);
                            let ties = col.iter().filter(|&&v| v == m).count().max(1);
                            let share = gv / T::lit(ties as f64);
                            for ti in 0..t {
                                if x[[bi, ti, ci]] == m {
                                    dx[[bi, ti, ci]] = share;
                                }
                            }
                        } else {
                            let kept: Vec<usize> = (0..t)
                                .filter(|&ti| mask.as_ref().is_none_or(|m| m[[bi, ti]]))
                                .collect();
                            let share = gv / T::lit(kept.len() as f64);
                            for ti in kept {
                                dx[[bi, ti, ci]] = share;
                            }
                        }
                    }
                }
                one(Value::Seq(swap_channels(dx, *channels_first)))
            }
            (
                GOp::BatchNorm {
                    gamma,
                    variance,
                    epsilon,
                    ..
                },
                _,
            ) => {
                let mut d = rows(&g);
                let c = variance.len();
                let inv: Vec<T> = (0..c)
                    .map(|k| {
                        let r = T::one() / (variance[k] + *epsilon).sqrt();
                        gamma.as_ref().map_or(r, |gm| r * gm[k])
                    })
                    .collect();
                for mut row in d.rows_mut() {
                    row.iter_mut().zip(&inv).for_each(|(v, &s)| *v = *v * s);
                }
                one(Value::reshape_rows(d, x0))
            }
            (
                GOp::LayerNorm {
                    gamma,
                    epsilon,
                    rms_scaling,
                    channels,
                    ..
                },
                _,
            ) => {
                let x = rows(x0);
                let mut d = rows(&g);
                let n = T::lit(*channels as f64);
                for (xr, mut gr) in x.rows().into_iter().zip(d.rows_mut()) {
                    let mean = xr.iter().fold(T::zero(), |a, &v| a + v) / n;
                    let var = xr
                        .iter()
                        .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
                        / n;
                    let r = T::one() / (var + *epsilon).sqrt();
                    let gg: Vec<T> = gr
                        .iter()
                        .enumerate()
                        .map(|(k, &v)| v * gamma.as_ref().map_or(T::one(), |gm| gm[k]))
                        .collect();
                    if *rms_scaling {
                        // y = x·r: dx_j = r·ĝ_j − r³ (x_j − μ)/n · Σ ĝ_i x_i
                        let sgx = gg
                            .iter()
                            .zip(xr.iter())
                            .fold(T::zero(), |a, (&p, &q)| a + p * q);
                        for (k, v) in gr.iter_mut().enumerate() {
                            *v = r * gg[k] - r * r * r * (xr[k] - mean) / n * sgx;
                        }
                    } else {
                        let xh: Vec<T> = xr.iter().map(|&v| (v - mean) * r).collect();
                        let mg = gg.iter().fold(T::zero(), |a, &v| a + v) / n;
                        let mgx = gg.iter().zip(&xh).fold(T::zero(), |a, (&p, &q)| a + p * q) / n;
                        for (k, v) in gr.iter_mut().enumerate() {
                            *v = r * (gg[k] - mg - xh[k] * mgx);
                        }
                    }
                }
                one(Value::reshape_rows(d, x0))
            }
            (GOp::RepeatVector(_), _) => {
                let Value::Seq(gy) = g else { unreachable!() };
                one(Value::Flat(gy.sum_axis(Axis(1))))
            }
            (GOp::Permute(swap), _) => {
                let Value::Seq(gy) = g else { unreachable!() };
                one(Value::Seq(if *swap {
                    shape::swap_time_features(gy.view())
                } else {
                    gy
                }))
            }
            (GOp::ZeroPad(l, _), _) => {
                let Value::Seq(gy) = g else { unreachable!() };
                let t = seq(x0, "").dim().1;
                one(Value::Seq(gy.slice(s![.., *l..*l + t, ..]).to_owned()))
            }
            (GOp::Crop(l, _), _) => {
                let Value::Seq(gy) = g else { unreachable!() };
                let x = seq(x0, "");
                let mut dx = Array3::zeros(x.raw_dim());
                let t = gy.dim().1;
                dx.slice_mut(s![.., *l..*l + t, ..]).assign(&gy);
                one(Value::Seq(dx))
            }
            (
                GOp::Merge {
                    op,
                    axis,
                    masked_extremum,
                },
                _,
            ) => (
                merge_backward(*op, *axis, *masked_extremum, args, &g),
                Vec::new(),
            ),
            (GOp::Attention { score, causal, .. }, _) => {
                let q = seq(x0, "");
                let v = seq(&args[1].0, "");
                let k = args.get(2).map(|a| seq(&a.0, ""));
                let Value::Seq(gy) = g else { unreachable!() };
                // The returned scores' gradient (`return_attention_scores=True`).
                let gw = match g_out.get_mut(1).and_then(Option::take) {
                    Some(Value::Seq(a)) => Some(a),
                    _ => None,
                };
                let (dq, mut dv, dk) = attention_backward(
                    (&q, &v, k.as_ref().unwrap_or(&v)),
                    score,
                    (args[0].1.as_ref(), args[1].1.as_ref()),
                    *causal,
                    (&gy, gw.as_ref()),
                );
                let mut out = vec![Some(Value::Seq(dq))];
                if k.is_some() {
                    out.push(Some(Value::Seq(dv)));
                    out.push(Some(Value::Seq(dk)));
                } else {
                    dv.zip_mut_with(&dk, |a, &b| *a = *a + b);
                    out.push(Some(Value::Seq(dv)));
                }
                (out, Vec::new())
            }
            (GOp::Dot { axes, normalize }, _) => {
                let (x, y) = (to_dyn(x0), to_dyn(&args[1].0));
                let (ax, ay) = resolve_axes(*axes, x.ndim(), y.ndim());
                let (dx, dy) = dot_backward(&x, &y, ax, ay, *normalize, &to_dyn(&g));
                (vec![Some(from_dyn(dx)), Some(from_dyn(dy))], Vec::new())
            }
            _ => unreachable!("caches follow the operations"),
        }
    }
}

/// `(batch, everything else)` of a value.
fn rows_flat<T: Real>(v: &Value<T>) -> Array2<T> {
    match v {
        Value::Flat(a) => a.clone(),
        Value::Seq(a) => {
            let (b, t, f) = a.dim();
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order((b, t * f))
                .expect("size")
        }
    }
}

/// A recurrent layer's backward pass from its main output's gradient `g` (a sequence in time order, so
/// reversed from processing order when `flip`) and its returned states' `(h, c)`.
fn rec_backward_states<T: Real>(
    r: &RecurrentOp<T>,
    l: &Recorded<T>,
    g: &Value<T>,
    (gh, gc): (Option<Value<T>>, Option<Value<T>>),
    flip: bool,
) -> super::bptt::LayerGrad<T> {
    use super::bptt::{Upstream, backward};
    let flat = |v: Option<Value<T>>| match v {
        Some(Value::Flat(a)) => Some(a),
        _ => None,
    };
    let (gh, gc) = (flat(gh), flat(gc));
    if gh.is_none() && gc.is_none() {
        return rec_backward(r, l, g, flip);
    }
    // The returned h is the last output (a masked step repeats it), so its gradient joins `last`.
    let (seq_g, mut last) = match g {
        Value::Flat(a) => (None, Some(a.clone())),
        Value::Seq(a) => {
            let mut v = a.view();
            if flip {
                v.invert_axis(Axis(1));
            }
            (
                Some(v.permuted_axes([1, 0, 2]).as_standard_layout().into_owned()),
                None,
            )
        }
    };
    if let Some(h) = gh {
        match &mut last {
            Some(a) => a.zip_mut_with(&h, |p, &q| *p = *p + q),
            None => last = Some(h),
        }
    }
    backward(
        &r.weights,
        &l.trace,
        &l.blocks,
        Upstream {
            seq: seq_g.as_ref().map(|a| a.view()),
            last: last.as_ref().map(|a| a.view()),
            last_c: gc.as_ref().map(|a| a.view()),
            zero_masked: r.zero_output_for_mask,
        },
    )
}

fn resolve_axes(axes: (i64, i64), nx: usize, ny: usize) -> (usize, usize) {
    let res = |n: usize, a: i64| {
        if a < 0 {
            (n as i64 + a) as usize
        } else {
            a as usize
        }
    };
    (res(nx, axes.0), res(ny, axes.1))
}

/// `Conv1D`'s gradient with respect to its input `(batch, len, channels)` from the output's `gy`.
fn conv1d_backward<T: Real>(
    gy: &Array3<T>,
    kernel: &Array3<T>,
    spec: &Conv1d,
    (batch, len, channels): (usize, usize, usize),
) -> Array3<T> {
    let (taps, cin, filters) = kernel.dim();
    let groups = spec.groups.max(1);
    let per_group = (filters / groups).max(1);
    let dilation = spec.dilation.max(1);
    let span = dilation * (taps - 1) + 1;
    let mut dx = Array3::zeros((batch, len, channels));
    let Some((out_len, left)) = window_geometry(len, span, spec.strides, spec.padding) else {
        return dx;
    };
    // Each input gradient gathers its terms in the order (o, f, k) (that of the plain loops over outputs,
    // filters and taps); the loops keep it per element but run over the channels innermost, against the
    // kernel transposed to (tap, filter, channel) so that each term is a contiguous slice.
    let kt = kernel
        .view()
        .permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned();
    let kt = kt.as_slice().expect("standard layout");
    let gy = gy.as_standard_layout();
    let gys = gy.as_slice().expect("standard layout");
    let dxs = dx.as_slice_mut().expect("fresh array");
    if dxs.is_empty() {
        return dx;
    }
    // Sequences are independent: one task each on the thread pool.
    use rayon::prelude::*;
    dxs.par_chunks_mut(len * channels)
        .enumerate()
        .for_each(|(b, dxb)| {
            for o in 0..out_len {
                for f in 0..filters {
                    let gv = gys[(b * out_len + o) * filters + f];
                    if gv == T::zero() {
                        continue;
                    }
                    let g = f / per_group;
                    for k in 0..taps {
                        let pos = (o * spec.strides.max(1) + k * dilation) as isize - left as isize;
                        if pos < 0 || pos as usize >= len {
                            continue;
                        }
                        let w = &kt[(k * filters + f) * cin..][..cin];
                        let d = &mut dxb[pos as usize * channels + g * cin..][..cin];
                        for (d, &w) in d.iter_mut().zip(w) {
                            *d = *d + gv * w;
                        }
                    }
                }
            }
        });
    dx
}

/// Pooling's gradient: a max window's to its first maximum, an average's spread over the real steps.
fn pool1d_backward<T: Real>(x: &Array3<T>, gy: &Array3<T>, spec: &Pool1d) -> Array3<T> {
    let (batch, len, channels) = x.dim();
    let mut dx = Array3::zeros((batch, len, channels));
    let Some((out_len, left)) = window_geometry(len, spec.size.max(1), spec.strides, spec.padding)
    else {
        return dx;
    };
    for o in 0..out_len {
        let start = (o * spec.strides.max(1)) as isize - left as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + spec.size as isize).max(0) as usize).min(len);
        if lo >= hi {
            continue;
        }
        for b in 0..batch {
            for c in 0..channels {
                let gv = gy[[b, o, c]];
                if spec.max {
                    let mut best = lo;
                    for t in lo..hi {
                        if x[[b, t, c]] > x[[b, best, c]] {
                            best = t;
                        }
                    }
                    dx[[b, best, c]] = dx[[b, best, c]] + gv;
                } else {
                    let share = gv / T::lit((hi - lo) as f64);
                    for t in lo..hi {
                        dx[[b, t, c]] = dx[[b, t, c]] + share;
                    }
                }
            }
        }
    }
    dx
}

/// A merge layer forward, with Keras 3's output mask (as [`crate::runner`] computes it).
/// Keras 3's masked `Maximum`/`Minimum` over `args` when it applies (sequences, some operand masked):
/// the result and which operand each element is.
fn masked_extremum_of<T: Real>(
    op: MergeOp,
    masked_extremum: bool,
    args: &[&Masked<T>],
) -> Option<(Array3<T>, ndarray::Array3<usize>)> {
    let applies = masked_extremum
        && matches!(op, MergeOp::Maximum | MergeOp::Minimum)
        && args.iter().any(|(_, m)| m.is_some())
        && args.iter().all(|(v, _)| matches!(v, Value::Seq(_)));
    applies.then(|| {
        let xs: Vec<ArrayView3<'_, T>> = args
            .iter()
            .map(|(v, _)| match v {
                Value::Seq(a) => a.view(),
                Value::Flat(_) => unreachable!("checked: sequences"),
            })
            .collect();
        let masks: Vec<Option<&Array2<bool>>> = args.iter().map(|(_, m)| m.as_ref()).collect();
        crate::model::layers::merge::fold_masked_extremum(op, &xs, &masks)
    })
}

fn merge_forward<T: Real>(
    op: MergeOp,
    axis: i64,
    masked_extremum: bool,
    args: &[Masked<T>],
) -> Masked<T> {
    let rank = args.first().map_or(0, |(v, _)| to_dyn(v).ndim());
    let ax = if axis < 0 { rank as i64 + axis } else { axis };
    let arrays: Vec<ArrayD<T>> = args.iter().map(|(v, _)| to_dyn(v)).collect();
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    let refs: Vec<&Masked<T>> = args.iter().collect();
    let y = match masked_extremum_of(op, masked_extremum, &refs) {
        Some((y, _)) => y.into_dyn(),
        None => merge_op(op, &views, ax.max(0) as usize).expect("the builder checked the shapes"),
    };
    let masks: Vec<Option<&Array2<bool>>> = args.iter().map(|(_, m)| m.as_ref()).collect();
    let mask = if masks.iter().all(Option::is_none) || rank != 3 {
        None
    } else if op == MergeOp::Concatenate {
        let full = |k: usize| {
            masks[k].cloned().unwrap_or_else(|| {
                Array2::from_elem((arrays[k].shape()[0], arrays[k].shape()[1]), true)
            })
        };
        let all: Vec<Array2<bool>> = (0..masks.len()).map(full).collect();
        if ax == 1 {
            let v: Vec<_> = all.iter().map(|m| m.view()).collect();
            ndarray::concatenate(Axis(1), &v).ok()
        } else {
            all.into_iter()
                .reduce(|a, b| ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| x || y))
        }
    } else if masks.iter().any(Option::is_none) {
        None
    } else {
        masks
            .into_iter()
            .flatten()
            .cloned()
            .reduce(|a, b| ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| x || y))
    };
    (from_dyn(y), mask)
}

/// Each of `n` operands' gradient from `gd`: the elements whose value is that operand's (`win`), zero
/// elsewhere (Maximum/Minimum, masked or not).
fn route_to_winner<T: Real>(gd: &ArrayD<T>, win: &ArrayD<usize>, n: usize) -> Vec<ArrayD<T>> {
    (0..n)
        .map(|i| {
            let mut d = gd.clone();
            ndarray::Zip::from(&mut d).and(win).for_each(|v, &w| {
                if w != i {
                    *v = T::zero();
                }
            });
            d
        })
        .collect()
}

fn merge_backward<T: Real>(
    op: MergeOp,
    axis: i64,
    masked_extremum: bool,
    args: &[&Masked<T>],
    g: &Value<T>,
) -> Vec<Option<Value<T>>> {
    let xs: Vec<ArrayD<T>> = args.iter().map(|(v, _)| to_dyn(v)).collect();
    let gd = to_dyn(g);
    let n = xs.len();
    // Keras 3's masked Maximum/Minimum: the gradient goes to the operand each element is.
    if let Some((_, win)) = masked_extremum_of(op, masked_extremum, args) {
        return route_to_winner(&gd, &win.into_dyn(), n)
            .into_iter()
            .map(|d| Some(from_dyn(d)))
            .collect();
    }
    let out: Vec<ArrayD<T>> = match op {
        MergeOp::Concatenate => {
            let ax = if axis < 0 {
                (gd.ndim() as i64 + axis) as usize
            } else {
                axis as usize
            };
            let mut at = 0;
            xs.iter()
                .map(|x| {
                    let w = x.shape()[ax];
                    let part = gd
                        .slice_axis(Axis(ax), ndarray::Slice::from(at..at + w))
                        .to_owned();
                    at += w;
                    part
                })
                .collect()
        }
        MergeOp::Add => vec![gd.clone(); n],
        MergeOp::Average => vec![gd.mapv(|v| v / T::lit(n as f64)); n],
        MergeOp::Subtract => vec![gd.clone(), gd.mapv(|v| -v)],
        MergeOp::Multiply => (0..n)
            .map(|i| {
                let mut d = gd.clone();
                for (j, x) in xs.iter().enumerate() {
                    if j != i {
                        d.zip_mut_with(x, |a, &b| *a = *a * b);
                    }
                }
                d
            })
            .collect(),
        MergeOp::Maximum | MergeOp::Minimum => {
            // Keras folds left: acc = op(acc, x_i); TensorFlow's gradient sends a tie to acc.
            let mut acc = xs[0].clone();
            let mut win = ArrayD::<usize>::zeros(acc.raw_dim());
            for (i, x) in xs.iter().enumerate().skip(1) {
                ndarray::Zip::from(&mut acc)
                    .and(&mut win)
                    .and(x)
                    .for_each(|a, w, &v| {
                        let takes = if op == MergeOp::Maximum {
                            v > *a
                        } else {
                            v < *a
                        };
                        if takes {
                            *a = v;
                            *w = i;
                        }
                    });
            }
            route_to_winner(&gd, &win, n)
        }
    };
    out.into_iter().map(|d| Some(from_dyn(d))).collect()
}

/// `Dot`'s gradients with respect to both operands.
fn dot_backward<T: Real>(
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    ax: usize,
    ay: usize,
    normalize: bool,
    g: &ArrayD<T>,
) -> (ArrayD<T>, ArrayD<T>) {
    // (batch, rest, d) with the contracted axis last, and the order to undo it.
    let flat = |a: &ArrayD<T>, axis: usize| -> (Array3<T>, Array3<T>, Vec<usize>, Vec<usize>) {
        let nd = a.ndim();
        let mut order: Vec<usize> = (0..nd).filter(|&i| i != axis).collect();
        order.push(axis);
        let p = a.view().permuted_axes(order.clone());
        let pshape = p.shape().to_vec();
        let b = pshape[0];
        let d = pshape[nd - 1];
        let rest: usize = pshape[1..nd - 1].iter().product();
        let raw = p
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((b, rest, d))
            .expect("size");
        let mut normed = raw.clone();
        if normalize {
            for mut row in normed.rows_mut() {
                let ss = row.iter().fold(T::zero(), |s, &v| s + v * v);
                let r = (T::one() / ss.sqrt()).min(T::lit(1e7));
                row.iter_mut().for_each(|v| *v = *v * r);
            }
        }
        (raw, normed, order, pshape)
    };
    let (xr, xn, xo, xps) = flat(x, ax);
    let (yr, yn, yo, yps) = flat(y, ay);
    let (b, m, d) = xn.dim();
    let nn = yn.dim().1;
    let gz = g
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((b, m, nn))
        .expect("size");
    let mut dxn = Array3::<T>::zeros((b, m, d));
    let mut dyn_ = Array3::<T>::zeros((b, nn, d));
    for bi in 0..b {
        let gb = gz.index_axis(Axis(0), bi);
        dxn.index_axis_mut(Axis(0), bi)
            .assign(&gb.dot(&yn.index_axis(Axis(0), bi)));
        dyn_.index_axis_mut(Axis(0), bi)
            .assign(&gb.t().dot(&xn.index_axis(Axis(0), bi)));
    }
    let unnorm = |raw: &Array3<T>, normed: &Array3<T>, mut dn: Array3<T>| -> Array3<T> {
        if !normalize {
            return dn;
        }
        for ((r, nrow), mut drow) in raw.rows().into_iter().zip(normed.rows()).zip(dn.rows_mut()) {
            let ss = r.iter().fold(T::zero(), |s, &v| s + v * v);
            let inv = T::one() / ss.sqrt();
            if inv < T::lit(1e7) {
                let proj = nrow
                    .iter()
                    .zip(drow.iter())
                    .fold(T::zero(), |s, (&p, &q)| s + p * q);
                for (v, &nv) in drow.iter_mut().zip(nrow.iter()) {
                    *v = inv * (*v - nv * proj);
                }
            } else {
                drow.mapv_inplace(|v| v * T::lit(1e7));
            }
        }
        dn
    };
    let back = |a: Array3<T>, order: &[usize], pshape: &[usize]| -> ArrayD<T> {
        let p = a.into_shape_with_order(IxDyn(pshape)).expect("size");
        let mut inv = vec![0; order.len()];
        for (k, &o) in order.iter().enumerate() {
            inv[o] = k;
        }
        p.permuted_axes(inv).as_standard_layout().into_owned()
    };
    (
        back(unnorm(&xr, &xn, dxn), &xo, &xps),
        back(unnorm(&yr, &yn, dyn_), &yo, &yps),
    )
}

/// Attention's gradients with respect to query, value and key from the output's gradient `g` and the
/// returned softmax weights' `gw` (`return_attention_scores=True`): the softmax's vector-Jacobian product
/// per query row, through the score function (a padded key's score is shifted by a constant, so its
/// derivative is the score's; its weight is ~0 anyway). A masked query's output row is zero and passes
/// nothing; its weights row is not zeroed (Keras returns it as computed), so `gw` still flows through it.
#[allow(clippy::type_complexity)]
fn attention_backward<T: Real>(
    (q, v, k): (&Array3<T>, &Array3<T>, &Array3<T>),
    score: &Score<T>,
    (q_mask, v_mask): (Option<&Array2<bool>>, Option<&Array2<bool>>),
    causal: bool,
    (g, gw): (&Array3<T>, Option<&Array3<T>>),
) -> (Array3<T>, Array3<T>, Array3<T>) {
    let (tq, dim) = (q.dim().1, q.dim().2);
    let tv = k.dim().1;
    let vdim = v.dim().2;
    let mut dq = Array3::zeros(q.raw_dim());
    let mut dv = Array3::zeros(v.raw_dim());
    let mut dk = Array3::zeros(k.raw_dim());
    let big = T::lit(1.0e9);
    let one = T::one();
    // Sequences are independent: one task each on the thread pool, writing its own rows of dq, dv, dk.
    use rayon::prelude::*;
    let tasks: Vec<_> = dq
        .axis_iter_mut(Axis(0))
        .zip(dv.axis_iter_mut(Axis(0)))
        .zip(dk.axis_iter_mut(Axis(0)))
        .enumerate()
        .collect();
    tasks
        .into_par_iter()
        .for_each(|(b, ((mut dq, mut dv), mut dk))| {
            for i in 0..tq {
                let q_masked = q_mask.is_some_and(|m| !m[[b, i]]);
                if q_masked && gw.is_none() {
                    continue;
                }
                // Scores, exactly as the forward pass computes them.
                let mut s = vec![T::zero(); tv];
                for (j, sj) in s.iter_mut().enumerate() {
                    let mut acc = T::zero();
                    for d in 0..dim {
                        let (qv, kv) = (q[[b, i, d]], k[[b, j, d]]);
                        acc = acc
                            + match score {
                                Score::Dot { .. } => qv * kv,
                                Score::Concat { scale, .. } => {
                                    let x = qv + kv;
                                    scale.map_or(x, |sc| sc * x).tanh()
                                }
                                Score::Additive { scale } => {
                                    let t = (qv + kv).tanh();
                                    scale.as_ref().map_or(t, |sc| sc[d] * t)
                                }
                            };
                    }
                    acc = match score {
                        Score::Dot { scale: Some(sc) } => acc * *sc,
                        Score::Concat { weight, .. } => *weight * acc,
                        _ => acc,
                    };
                    let padded = v_mask.is_some_and(|m| !m[[b, j]]) || (causal && j > i);
                    *sj = if padded { acc - big } else { acc };
                }
                let max = s.iter().copied().fold(T::neg_infinity(), T::max);
                let e: Vec<T> = s.iter().map(|&x| (x - max).exp()).collect();
                let sum = e.iter().fold(T::zero(), |a, &x| a + x);
                let p: Vec<T> = e.iter().map(|&x| x / sum).collect();
                // out_i = Σ_j p_j v_j (zero for a masked query); the weights p themselves may be returned.
                let mut dp: Vec<T> = match gw {
                    Some(gw) => (0..tv).map(|j| gw[[b, i, j]]).collect(),
                    None => vec![T::zero(); tv],
                };
                for j in 0..tv {
                    if q_masked {
                        break;
                    }
                    for d in 0..vdim {
                        let gv = g[[b, i, d]];
                        dv[[j, d]] = dv[[j, d]] + p[j] * gv;
                        dp[j] = dp[j] + gv * v[[b, j, d]];
                    }
                }
                let dot = p.iter().zip(&dp).fold(T::zero(), |a, (&x, &y)| a + x * y);
                for j in 0..tv {
                    let ds = p[j] * (dp[j] - dot);
                    if ds == T::zero() {
                        continue;
                    }
                    for d in 0..dim {
                        let (qv, kv) = (q[[b, i, d]], k[[b, j, d]]);
                        let dsd = match score {
                            Score::Dot { scale } => {
                                let sc = scale.unwrap_or(one);
                                dq[[i, d]] = dq[[i, d]] + ds * sc * kv;
                                dk[[j, d]] = dk[[j, d]] + ds * sc * qv;
                                continue;
                            }
                            Score::Concat { scale, weight } => {
                                let sc = scale.unwrap_or(one);
                                let t = (sc * (qv + kv)).tanh();
                                *weight * (one - t * t) * sc
                            }
                            Score::Additive { scale } => {
                                let t = (qv + kv).tanh();
                                scale.as_ref().map_or(one, |sc| sc[d]) * (one - t * t)
                            }
                        };
                        dq[[i, d]] = dq[[i, d]] + ds * dsd;
                        dk[[j, d]] = dk[[j, d]] + ds * dsd;
                    }
                }
            }
        });
    (dq, dv, dk)
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
