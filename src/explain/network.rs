/*!
A model as the explainer sees it: a chain of differentiable operations (masking, recurrent layers,
Bidirectional wrappers, Dense heads, activations, flatten), run forward through the engine with every gate
recorded, then backward from one output to the input and to every recurrent layer's initial state. Each
recurrent layer keeps its gates per block as the engine wrote them ([`Recorded`]), the layout the backward pass
reads.

The forward pass follows [`crate::runner`] exactly (the same engine, the same mask propagation and output
orders), so what is explained is what `run` computes.
*/

use super::bptt::{self, Upstream};
use super::derivative::backward_rows;
use crate::cell::kernels::matmul;
use crate::cell::{Activation, Kernels, Real};
use crate::engine::{self, LayerInput, LayerSpec};
use crate::trace::{GateBlocks, LayerTrace, Record};
use crate::weights::{CellKind, CellWeights, DenseWeights};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, s};

/// One recurrent layer (or one direction of a Bidirectional).
#[derive(Debug, Clone)]
pub struct RecurrentOp<T> {
    /// Validated weights.
    pub weights: CellWeights<T>,
    /// Activations, `go_backwards` (`carry_state` must be false: sequences are explained independently).
    pub spec: LayerSpec,
    /// Keras `return_sequences`.
    pub return_sequences: bool,
    /// Keras `zero_output_for_mask`.
    pub zero_output_for_mask: bool,
}

/// How a Bidirectional merges its two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `[forward, backward]` on the last axis.
    Concat,
    /// `forward + backward`.
    Sum,
    /// `(forward + backward) / 2`.
    Ave,
    /// `forward ⊙ backward`.
    Mul,
}

impl Merge {
    /// Keras's `merge_mode` name.
    pub fn parse(s: &str) -> Option<Merge> {
        Some(match s {
            "concat" => Merge::Concat,
            "sum" => Merge::Sum,
            "ave" => Merge::Ave,
            "mul" => Merge::Mul,
            _ => return None,
        })
    }
}

/// One operation of the chain.
// A model has a handful of operations: the inline recurrent layers (no boxes to match through) cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Op<T> {
    /// Keras `Masking(mask_value)`.
    Masking {
        /// The padding value (compared in `T`).
        value: T,
    },
    /// A recurrent layer.
    Recurrent(RecurrentOp<T>),
    /// `Bidirectional`; `backward` has `go_backwards` set.
    Bidirectional {
        /// The forward copy.
        forward: RecurrentOp<T>,
        /// The backward copy.
        backward: RecurrentOp<T>,
        /// How the outputs combine.
        merge: Merge,
    },
    /// `act(x·K + b)` on the last axis (also `TimeDistributed(Dense)`).
    Dense {
        /// Kernel and bias.
        weights: DenseWeights<T>,
        /// Activation.
        activation: Activation,
    },
    /// An `Activation` layer on the last axis.
    Activation(Activation),
    /// `Flatten` of a sequence into `(batch, timesteps·features)`.
    Flatten,
}

/// A value between operations.
#[derive(Debug, Clone)]
pub enum Value<T> {
    /// `(batch, timesteps, features)`.
    Seq(Array3<T>),
    /// `(batch, features)`.
    Flat(Array2<T>),
}

impl<T: Real> Value<T> {
    /// `(batch, last axis)` rows: a sequence's steps become rows.
    pub(super) fn rows(&self) -> ArrayView2<'_, T> {
        match self {
            Value::Flat(a) => a.view(),
            Value::Seq(a) => {
                let (b, t, f) = a.dim();
                a.view()
                    .into_shape_with_order((b * t, f))
                    .expect("standard layout")
            }
        }
    }

    pub(super) fn zeros_like(&self) -> Value<T> {
        match self {
            Value::Flat(a) => Value::Flat(Array2::zeros(a.raw_dim())),
            Value::Seq(a) => Value::Seq(Array3::zeros(a.raw_dim())),
        }
    }

    pub(super) fn reshape_rows(rows: Array2<T>, like: &Value<T>) -> Value<T> {
        match like {
            Value::Flat(_) => Value::Flat(rows),
            Value::Seq(a) => {
                let (b, t, _) = a.dim();
                let w = rows.ncols();
                let rows = if rows.is_standard_layout() {
                    rows
                } else {
                    rows.as_standard_layout().into_owned()
                };
                Value::Seq(rows.into_shape_with_order((b, t, w)).expect("row count"))
            }
        }
    }
}

/// The chain of operations.
#[derive(Debug, Clone)]
pub struct Network<T> {
    /// In model order.
    pub ops: Vec<Op<T>>,
    /// The best kernels the forward passes may use (the command line passes `RNNTRACE_KERNELS`'s choice).
    pub kernels: Kernels,
}

/// Initial states for the first recurrent layer: (sequences, units) each.
#[derive(Debug, Clone, Default)]
pub struct InitialState<T> {
    /// Hidden state.
    pub h0: Option<Array2<T>>,
    /// Cell state (LSTM).
    pub c0: Option<Array2<T>>,
}

impl<T: Real> InitialState<T> {
    /// The states repeated `k` times along the batch (for batched interpolations and occlusions).
    pub fn tile(&self, k: usize) -> InitialState<T> {
        let t = |a: &Array2<T>| {
            let v: Vec<_> = (0..k).map(|_| a.view()).collect();
            ndarray::concatenate(Axis(0), &v).expect("same shapes")
        };
        InitialState {
            h0: self.h0.as_ref().map(t),
            c0: self.c0.as_ref().map(t),
        }
    }
}

/// One recurrent layer's recorded forward pass: its trace (states, masks; no interleaved gates) and its gates
/// per block, as the engine wrote them and the backward pass reads them.
#[derive(Debug, Clone)]
pub struct Recorded<T> {
    /// States, outputs, masks.
    pub trace: LayerTrace<T>,
    /// Gates and pre-activations per gate block.
    pub blocks: GateBlocks<T>,
}

impl<T: Real> Recorded<T> {
    /// The trace with the gates interleaved into it (what renderers read).
    pub fn full_trace(&self) -> LayerTrace<T> {
        let mut t = self.trace.clone();
        if t.out.is_none() {
            t.out = t.h.clone();
        }
        if !self.blocks.gates.is_empty() {
            t.gates = Some(engine::interleave(&self.blocks.gates));
        }
        if !self.blocks.pre.is_empty() {
            t.pre = Some(engine::interleave(&self.blocks.pre));
        }
        t
    }
}

/// A Bidirectional's recordings and outputs (forward, backward).
type BidirCache<T> = (Recorded<T>, Recorded<T>, Value<T>, Value<T>);

/// What each operation kept for the backward pass.
#[derive(Debug, Clone)]
enum Cache<T> {
    Masking(Array2<bool>),
    Recurrent(Box<Recorded<T>>),
    Bidirectional(Box<BidirCache<T>>),
    /// Pre-activation and output rows, and the input.
    Dense(Array2<T>, Array2<T>, Value<T>),
    Activation(Array2<T>, Array2<T>, Value<T>),
    Flatten(usize, usize),
}

/// A recorded forward pass.
#[derive(Debug, Clone)]
pub struct Forward<T> {
    caches: Vec<Cache<T>>,
    /// The model's output.
    pub output: Value<T>,
}

impl<T: Real> Forward<T> {
    /// The recurrent layers' recordings in model order (a Bidirectional gives forward, then backward).
    pub fn recorded(&self) -> Vec<&Recorded<T>> {
        let mut v = Vec::new();
        for c in &self.caches {
            match c {
                Cache::Recurrent(t) => v.push(t.as_ref()),
                Cache::Bidirectional(b) => {
                    v.push(&b.0);
                    v.push(&b.1);
                }
                _ => {}
            }
        }
        v
    }

    /// The recurrent layers' traces in model order, without their gates (see [`Forward::recorded`]).
    pub fn traces(&self) -> Vec<&LayerTrace<T>> {
        self.recorded().into_iter().map(|r| &r.trace).collect()
    }

    /// The output as `(batch, outputs)`: a flat output, or a sequence output's last step.
    pub fn output_rows(&self) -> Array2<T> {
        match &self.output {
            Value::Flat(a) => a.clone(),
            Value::Seq(a) => a.index_axis(Axis(1), a.dim().1 - 1).to_owned(),
        }
    }
}

/// Gradients of the seeded outputs.
#[derive(Debug, Clone)]
pub struct Gradients<T> {
    /// With respect to the network input, (sequences, timesteps, features).
    pub dx: Array3<T>,
    /// With respect to the first recurrent layer's initial hidden state (when it is a plain recurrent
    /// layer).
    pub dh0: Option<Array2<T>>,
    /// With respect to its initial cell state (LSTM).
    pub dc0: Option<Array2<T>>,
    /// With respect to every recurrent layer's initial states (h, and c for an LSTM), in trace order (model
    /// order; a Bidirectional gives forward, then backward).
    pub initial: Vec<(Array2<T>, Option<Array2<T>>)>,
}

pub(super) fn run_rec<T: Real>(
    op: &RecurrentOp<T>,
    x: ArrayView3<'_, T>,
    mask: Option<&Array2<bool>>,
    init: Option<&InitialState<T>>,
    record: Record,
    kernels: Kernels,
) -> Recorded<T> {
    // An LSTM returning its last output only: its backward pass reads c and the gates, not h's sequence
    // (the unit analysis reads |o ⊙ act(c)| for dead units), so h is not kept.
    let record = Record {
        cell_only: record.cell_only
            && op.weights.kind == CellKind::Lstm
            && !op.return_sequences
            && op.weights.projection.is_none(),
        ..record
    };
    // A pass to differentiate keeps pre-activations only when a derivative needs them.
    let record = if record.pre
        && !bptt::needs_pre(op.spec.activation)
        && (op.weights.kind == CellKind::SimpleRnn
            || !bptt::needs_pre(op.spec.recurrent_activation))
    {
        Record {
            pre: false,
            ..record
        }
    } else {
        record
    };
    let input = LayerInput {
        x: x.into(),
        mask: mask.map(|m| m.view()),
        h0: init.and_then(|i| i.h0.clone()),
        c0: init.and_then(|i| i.c0.clone()),
    };
    let (trace, blocks) = engine::run_layer_blocks(&op.weights, &op.spec, input, record, kernels);
    Recorded { trace, blocks }
}

/// The return_sequences output in processing order (zeros at masked steps with `zero_masked`).
fn seq_out<T: Real>(l: &LayerTrace<T>, zero_masked: bool) -> Array3<T> {
    let mut out = l
        .out
        .as_ref()
        .or(l.h.as_ref())
        .expect("states recorded")
        .view()
        .permuted_axes([1, 0, 2])
        .as_standard_layout()
        .into_owned();
    if zero_masked && l.masked.nrows() == l.steps() {
        for ((t, b), &m) in l.masked.indexed_iter() {
            if m {
                out.slice_mut(s![b, t, ..]).fill(T::zero());
            }
        }
    }
    out
}

pub(super) fn rec_value<T: Real>(op: &RecurrentOp<T>, l: &LayerTrace<T>, flip: bool) -> Value<T> {
    if op.return_sequences {
        let mut o = seq_out(l, op.zero_output_for_mask);
        if flip {
            o.invert_axis(Axis(1));
            o = o.as_standard_layout().into_owned();
        }
        Value::Seq(o)
    } else {
        Value::Flat(l.last_output.clone())
    }
}

pub(super) fn merge<T: Real>(m: Merge, f: &Value<T>, b: &Value<T>) -> Value<T> {
    let (fr, br) = (f.rows(), b.rows());
    let rows = match m {
        Merge::Concat => ndarray::concatenate(Axis(1), &[fr, br]).expect("same rows"),
        Merge::Sum => &fr + &br,
        Merge::Mul => &fr * &br,
        Merge::Ave => (&fr + &br).mapv(|v| v * T::lit(0.5)),
    };
    Value::reshape_rows(rows, f)
}

impl<T: Real> Network<T> {
    /// The number of outputs per sequence ([`Forward::output_rows`]'s columns) for inputs of `steps`
    /// timesteps: read off the operations, with no forward pass.
    pub fn output_width(&self, steps: usize, features: usize) -> usize {
        // (timesteps when the value is a sequence, width of its last axis)
        let mut v = (Some(steps), features);
        for op in &self.ops {
            v = match op {
                Op::Masking { .. } | Op::Activation(_) => v,
                Op::Recurrent(r) => (
                    r.return_sequences.then_some(v.0).flatten(),
                    r.weights.h_units(),
                ),
                Op::Bidirectional { forward, merge, .. } => {
                    let w = forward.weights.h_units();
                    let w = if *merge == Merge::Concat { 2 * w } else { w };
                    (forward.return_sequences.then_some(v.0).flatten(), w)
                }
                Op::Dense { weights, .. } => (v.0, weights.outputs()),
                Op::Flatten => (None, v.0.unwrap_or(1) * v.1),
            };
        }
        v.1
    }

    /// Runs the chain on `x` (with an optional `(batch, timesteps)` mask, true = used, and initial states
    /// for the first recurrent layer). `record` is what each recurrent layer keeps: [`Record::ALL`] for a
    /// pass that will be differentiated, [`Record::STATES`] for outputs only.
    pub fn forward(
        &self,
        x: Array3<T>,
        mask: Option<Array2<bool>>,
        init: &InitialState<T>,
        record: Record,
    ) -> Forward<T> {
        let mut value = Value::Seq(x);
        let mut mask = mask;
        let mut caches = Vec::with_capacity(self.ops.len());
        let mut first = true;
        for op in &self.ops {
            let (v, c) = match op {
                Op::Masking { value: mv } => {
                    let Value::Seq(mut y) = value else {
                        panic!("Masking needs a sequence")
                    };
                    let m = engine::mask_from_value(y.view(), *mv);
                    for ((b, t), &keep) in m.indexed_iter() {
                        if !keep {
                            y.slice_mut(s![b, t, ..]).fill(T::zero());
                        }
                    }
                    mask = Some(m.clone());
                    (Value::Seq(y), Cache::Masking(m))
                }
                Op::Recurrent(r) => {
                    let Value::Seq(x) = &value else {
                        panic!("a recurrent layer needs a sequence")
                    };
                    let l = run_rec(
                        r,
                        x.view(),
                        mask.as_ref(),
                        first.then_some(init),
                        record,
                        self.kernels,
                    );
                    first = false;
                    let v = rec_value(r, &l.trace, false);
                    if !r.return_sequences {
                        mask = None;
                    }
                    (v, Cache::Recurrent(Box::new(l)))
                }
                Op::Bidirectional {
                    forward,
                    backward,
                    merge: m,
                } => {
                    let Value::Seq(x) = &value else {
                        panic!("a recurrent layer needs a sequence")
                    };
                    first = false;
                    let lf = run_rec(forward, x.view(), mask.as_ref(), None, record, self.kernels);
                    let lb = run_rec(
                        backward,
                        x.view(),
                        mask.as_ref(),
                        None,
                        record,
                        self.kernels,
                    );
                    let of = rec_value(forward, &lf.trace, false);
                    let ob = rec_value(backward, &lb.trace, backward.spec.go_backwards);
                    if !forward.return_sequences {
                        mask = None;
                    }
                    let v = merge(*m, &of, &ob);
                    (v, Cache::Bidirectional(Box::new((lf, lb, of, ob))))
                }
                Op::Dense {
                    weights,
                    activation,
                } => {
                    let rows = value.rows();
                    let mut pre = Array2::<T>::zeros((rows.nrows(), weights.outputs()));
                    if let Some(b) = &weights.bias {
                        pre.rows_mut().into_iter().for_each(|mut r| r.assign(b));
                    }
                    matmul(pre.view_mut(), rows, weights.kernel.view(), true);
                    let mut post = pre.clone();
                    activation.apply_rows(post.view_mut());
                    let v = Value::reshape_rows(post.clone(), &value);
                    (v, Cache::Dense(pre, post, value))
                }
                Op::Activation(a) => {
                    let pre = value.rows().to_owned();
                    let mut post = pre.clone();
                    a.apply_rows(post.view_mut());
                    let v = Value::reshape_rows(post.clone(), &value);
                    (v, Cache::Activation(pre, post, value))
                }
                Op::Flatten => match value {
                    Value::Seq(a) => {
                        let (b, t, f) = a.dim();
                        mask = None;
                        (
                            Value::Flat(a.into_shape_with_order((b, t * f)).expect("standard")),
                            Cache::Flatten(t, f),
                        )
                    }
                    Value::Flat(a) => {
                        let f = a.ncols();
                        (Value::Flat(a), Cache::Flatten(1, f))
                    }
                },
            };
            value = v;
            caches.push(c);
        }
        Forward {
            caches,
            output: value,
        }
    }

    /// Backpropagates `seed` (the gradient with respect to the output, its shape) through `fwd`.
    pub fn backward(&self, fwd: &Forward<T>, seed: Value<T>) -> Gradients<T> {
        let mut g = seed;
        let (mut dh0, mut dc0) = (None, None);
        // Filled last layer first, reversed at the end.
        let mut initial = Vec::new();
        for (i, (op, cache)) in self.ops.iter().zip(&fwd.caches).enumerate().rev() {
            let first_rec = !self.ops[..i]
                .iter()
                .any(|o| matches!(o, Op::Recurrent(_) | Op::Bidirectional { .. }));
            g = match (op, cache) {
                (Op::Masking { .. }, Cache::Masking(m)) => {
                    let Value::Seq(mut d) = g else { unreachable!() };
                    for ((b, t), &keep) in m.indexed_iter() {
                        if !keep {
                            d.slice_mut(s![b, t, ..]).fill(T::zero());
                        }
                    }
                    Value::Seq(d)
                }
                (Op::Recurrent(r), Cache::Recurrent(l)) => {
                    let lg = rec_backward(r, l, &g, false);
                    initial.push((lg.dh0.clone(), lg.dc0.clone()));
                    if first_rec {
                        dh0 = Some(lg.dh0);
                        dc0 = lg.dc0;
                    }
                    Value::Seq(lg.dx)
                }
                (
                    Op::Bidirectional {
                        forward,
                        backward,
                        merge: m,
                    },
                    Cache::Bidirectional(c),
                ) => {
                    let (lf, lb, of, ob) = c.as_ref();
                    let gr = g.rows();
                    let (gf, gb) = match m {
                        Merge::Concat => {
                            let w = of.rows().ncols();
                            (
                                gr.slice(s![.., ..w]).to_owned(),
                                gr.slice(s![.., w..]).to_owned(),
                            )
                        }
                        Merge::Sum => (gr.to_owned(), gr.to_owned()),
                        Merge::Ave => {
                            let h = gr.mapv(|v| v * T::lit(0.5));
                            (h.clone(), h)
                        }
                        Merge::Mul => (&gr * &ob.rows(), &gr * &of.rows()),
                    };
                    let gf = Value::reshape_rows(gf, of);
                    let gb = Value::reshape_rows(gb, ob);
                    let df = rec_backward(forward, lf, &gf, false);
                    let db = rec_backward(backward, lb, &gb, backward.spec.go_backwards);
                    initial.push((db.dh0, db.dc0));
                    initial.push((df.dh0, df.dc0));
                    Value::Seq(df.dx + db.dx)
                }
                (
                    Op::Dense {
                        weights,
                        activation,
                    },
                    Cache::Dense(pre, post, input),
                ) => {
                    let mut d = g.rows().to_owned();
                    backward_rows(*activation, pre.view(), post.view(), d.view_mut());
                    let mut dxr = Array2::<T>::zeros((d.nrows(), weights.kernel.nrows()));
                    matmul(dxr.view_mut(), d.view(), weights.kernel.t(), false);
                    Value::reshape_rows(dxr, input)
                }
                (Op::Activation(a), Cache::Activation(pre, post, input)) => {
                    let mut d = g.rows().to_owned();
                    backward_rows(*a, pre.view(), post.view(), d.view_mut());
                    Value::reshape_rows(d, input)
                }
                (Op::Flatten, Cache::Flatten(t, f)) => match g {
                    Value::Flat(a) => {
                        let b = a.nrows();
                        if *t == 1 && a.ncols() == *f {
                            Value::Flat(a)
                        } else {
                            Value::Seq(a.into_shape_with_order((b, *t, *f)).expect("shape"))
                        }
                    }
                    v => v,
                },
                _ => unreachable!("caches follow the operations"),
            };
        }
        let Value::Seq(dx) = g else {
            unreachable!("the network input is a sequence")
        };
        initial.reverse();
        Gradients {
            dx,
            dh0,
            dc0,
            initial,
        }
    }

    /// The seed for "output `k` of every sequence": ones in column `k` of a zero output-shaped value
    /// (for a sequence output, at its last step).
    pub fn seed(fwd: &Forward<T>, k: usize) -> Value<T> {
        let mut s = fwd.output.zeros_like();
        match &mut s {
            Value::Flat(a) => a.column_mut(k).fill(T::one()),
            Value::Seq(a) => {
                let t = a.dim().1 - 1;
                a.slice_mut(s![.., t, k]).fill(T::one());
            }
        }
        s
    }

    /// Number of recurrent layers' traces (a Bidirectional counts two).
    pub fn kinds(&self) -> Vec<CellKind> {
        let mut v = Vec::new();
        for op in &self.ops {
            match op {
                Op::Recurrent(r) => v.push(r.weights.kind),
                Op::Bidirectional {
                    forward, backward, ..
                } => {
                    v.push(forward.weights.kind);
                    v.push(backward.weights.kind);
                }
                _ => {}
            }
        }
        v
    }

    /// The recurrent layers' weights in trace order.
    pub fn recurrent_weights(&self) -> Vec<&CellWeights<T>> {
        let mut v = Vec::new();
        for op in &self.ops {
            match op {
                Op::Recurrent(r) => v.push(&r.weights),
                Op::Bidirectional {
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
}

/// A recurrent layer's backward pass from the gradient of its output value (`flip`: the value was flipped
/// back to time order, so its steps run opposite to processing order).
pub(super) fn rec_backward<T: Real>(
    r: &RecurrentOp<T>,
    l: &Recorded<T>,
    g: &Value<T>,
    flip: bool,
) -> bptt::LayerGrad<T> {
    match g {
        Value::Flat(a) => bptt::backward(
            &r.weights,
            &l.trace,
            &l.blocks,
            Upstream {
                seq: None,
                last: Some(a.view()),
                last_c: None,
                zero_masked: r.zero_output_for_mask,
            },
        ),
        Value::Seq(a) => {
            // (batch, steps, units) in output order → (steps, batch, units) in processing order.
            let mut v = a.view();
            if flip {
                v.invert_axis(Axis(1));
            }
            let tm = v.permuted_axes([1, 0, 2]).as_standard_layout().into_owned();
            bptt::backward(
                &r.weights,
                &l.trace,
                &l.blocks,
                Upstream {
                    seq: Some(tm.view()),
                    last: None,
                    last_c: None,
                    zero_masked: r.zero_output_for_mask,
                },
            )
        }
    }
}
