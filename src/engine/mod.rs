/*!
Runs a recurrent layer over a batch and records what was asked into a [`LayerTrace`].

How it is fast:
- sequences are independent, so the batch is split into one lane per core and each lane runs every step
  of its sequences with no synchronisation (except with carried state, which is sequential by nature);
- each lane projects its inputs `x·W + b` for 16 steps at a time as one matrix product, then each step
  costs one recurrent product for the lane's whole block of sequences;
- with float32 or float64, an LSTM, a GRU (either `reset_after`) or a SimpleRNN, and activations the fused
  steps compute (sigmoid, tanh, both hard_sigmoids, relu, linear) on a CPU with AVX-512 (or AVX2 and FMA),
  each step is one fused pass (two for the GRU with `reset_after=False`)
  ([`crate::cell::fused`]): products, activations and state update per register tile, gates and states
  stored straight into the time-major trace arrays, one array per gate (no projection buffer, no copies);
- otherwise the portable cells run on `gemm` products and their gates are split into the per-gate arrays
  (under a float16/bfloat16 dtype policy always, with every op rounded: [`run_layer_policy`]);
- nothing is allocated inside the time loop.

With `chunk_steps`, the trace is kept for that many steps at a time and handed to a sink (which streams it
to disk), so memory does not grow with the number of timesteps. Masking, `go_backwards`, initial states and
carried state are handled here, identically for every cell.

Stacked layers can run chained ([`run_chain_using`]): per block, layer k+1 steps over layer k's outputs of that
block as soon as they are computed, so no layer's whole output sequence is held.

This file holds the entry points ([`run_layer`], [`run_layer_with`], [`run_layer_using`], [`run_chain_using`]),
the Dense head and masking; `stores.rs` is where a run records, `lanes.rs` how the batch is split and stepped.
*/

mod lanes;
mod stores;

#[allow(unused_imports)]
use self::{lanes::*, stores::*};
pub use stores::Stores;

use crate::cell::fused::{self, Packed};
use crate::cell::kernels::matmul;
use crate::cell::rounded::RoundedCell;
use crate::cell::{Activation, DtypePolicy, GruCell, LstmCell, Real, SimpleRnnCell, StepOut};
use crate::trace::{GateBlocks, Kernels, LayerTrace, Record};
use crate::weights::{CellKind, CellWeights, DenseWeights};
use ndarray::{
    Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis, CowArray, Ix3, s,
};
use std::ops::Range;

/// How to run one layer: the Keras layer arguments that are not weights.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Name to record in the trace.
    pub name: String,
    /// Keras `activation`.
    pub activation: Activation,
    /// Keras `recurrent_activation`.
    pub recurrent_activation: Activation,
    /// Keras `go_backwards`.
    pub go_backwards: bool,
    /// Carry each sequence's final state into the next (a stateful layer with batch size 1).
    pub carry_state: bool,
}

/// The data one layer runs on.
#[derive(Debug, Clone)]
pub struct LayerInput<'a, T> {
    /// (sequences, timesteps, features): a view, or an owned array the trace then keeps without a copy.
    pub x: CowArray<'a, T, Ix3>,
    /// (sequences, timesteps), input order; `true` = the step is used (Keras's convention).
    pub mask: Option<ArrayView2<'a, bool>>,
    /// Initial hidden state (sequences, units); zeros when absent.
    pub h0: Option<Array2<T>>,
    /// Initial cell state (sequences, units), LSTM; zeros when absent.
    pub c0: Option<Array2<T>>,
}

/// Steps recorded per block when streaming (an `.npz` trace, or a model layer whose steps are not kept).
/// Each block is computed by every core, then handed to the sink; 4 measured fastest for the
/// 512 × 100 × 128 case (1 and 2 pay the cores' synchronisation per block, 8 no longer keeps a core's
/// block in its 2 MiB L2), and memory stays at one block.
pub const STREAM_STEPS: usize = 4;

/// Receives each block of recorded steps: `(first step, block)`.
pub type Sink<'a, T> = dyn FnMut(usize, &Stores<T>) -> crate::Result<()> + 'a;

/// Runs `weights` over `input` and records everything in memory.
pub fn run_layer<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
) -> LayerTrace<T> {
    let never = &mut |_: usize, _: &Stores<T>| -> crate::Result<()> { Ok(()) };
    match run_layer_with(weights, spec, input, Record::ALL, None, never) {
        Ok(t) => t,
        Err(_) => unreachable!("the in-memory sink never fails"),
    }
}

/// Runs `weights` over `input`, recording `record`.
///
/// With `chunk_steps = None` everything recorded stays in the returned trace. With `Some(k)` (ignored under
/// `carry_state`, which needs each sequence whole), steps are recorded `k` at a time, each block is passed
/// to `sink(first_step, &block)`, and the returned trace holds only the final states and outputs.
/// Shapes must already be validated (the loaders and the command line's job layer do that).
pub fn run_layer_with<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    record: Record,
    chunk_steps: Option<usize>,
    sink: &mut Sink<'_, T>,
) -> crate::Result<LayerTrace<T>> {
    run_layer_using(
        weights,
        spec,
        input,
        record,
        chunk_steps,
        sink,
        Kernels::Avx512,
    )
}

/// [`run_layer_with`] with the kernels chosen by the caller (the command line passes `RNNTRACE_KERNELS`'s
/// choice; [`run_layer_with`] allows all): the best
/// allowed by `kernels` that applies. The fused steps apply to float32 and float64 with the activations
/// they compute, on a CPU with AVX-512F (`Kernels::Avx512` allows them) or AVX2 and FMA (`Avx512` or `Avx2` allow them); the
/// portable cells run everything else. The returned trace says which ran.
pub fn run_layer_using<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    record: Record,
    chunk_steps: Option<usize>,
    sink: &mut Sink<'_, T>,
    kernels: Kernels,
) -> crate::Result<LayerTrace<T>> {
    run_layer_policy(
        weights,
        spec,
        None,
        input,
        record,
        chunk_steps,
        sink,
        kernels,
    )
}

/// [`run_layer_using`] under a Keras dtype policy: with `Some(policy)` every step runs the portable
/// [`RoundedCell`] (each op rounded to the policy's compute type as TensorFlow rounds it; the fused kernels,
/// which compute in float32 throughout, never run), the input projection `x·W` rounded as a matrix product
/// and the bias left to the cell (each cell adds it where Keras does). `weights`, `input.x` and the initial
/// states must already be in the compute type (the runner rounds them once, as Keras casts them).
#[allow(clippy::too_many_arguments)]
pub fn run_layer_policy<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    policy: Option<DtypePolicy>,
    input: LayerInput<'_, T>,
    record: Record,
    chunk_steps: Option<usize>,
    sink: &mut Sink<'_, T>,
    kernels: Kernels,
) -> crate::Result<LayerTrace<T>> {
    if !spec.carry_state {
        let layer = ChainLayer {
            weights,
            spec,
            policy,
            record,
            h0: input.h0,
            c0: input.c0,
        };
        let mut traces = run_chain_using(
            vec![layer],
            (input.x, input.mask),
            chunk_steps,
            &mut |_, t0, st| sink(t0, st),
            kernels,
        )?;
        return Ok(traces.pop().expect("one trace per layer"));
    }
    let (batch, steps, features) = input.x.dim();
    let p = Prepared::new(
        weights,
        spec,
        (batch, steps, Some(features)),
        (input.mask.as_ref(), input.h0.as_ref(), input.c0.as_ref()),
        policy,
        kernels,
    );
    let (u, hw, blocks, lstm) = (p.u, p.hw, weights.kind.blocks(), p.lstm);
    let x = p.layout(input.x);
    let h0 = input.h0.unwrap_or_else(|| Array2::zeros((batch, hw)));
    let c0 = lstm.then(|| input.c0.unwrap_or_else(|| Array2::zeros((batch, u))));
    let ctx = LaneCtx {
        w: weights,
        spec,
        x: x.view(),
        x_t0: 0,
        mask: input.mask,
        input_index: &p.input_index,
        packed: p.packed.as_ref(),
        policy: p.policy,
    };
    let mut trace_h0 = h0.clone();
    let mut trace_c0 = c0.clone();
    let masking = input.mask.is_some();
    let mut stores = Stores::new(steps, batch, blocks, (u, hw), lstm, masking, record);
    let mut last_output = Array2::zeros((batch, hw));
    let mut final_h = Array2::zeros((batch, hw));
    let mut final_c = Array2::zeros((batch, u));
    // One sequence after another, each starting from the previous one's final state.
    let ranges: Vec<Range<usize>> = (0..batch).map(|b| b..b + 1).collect();
    let views = stores.lane_views(&ranges);
    let mut carried: Option<(Array2<T>, Array2<T>)> = None;
    for (r, v) in ranges.into_iter().zip(views) {
        let mut lane = match &carried {
            None => Lane::new(
                &ctx,
                r.clone(),
                h0.slice(s![r.clone(), ..]),
                c0.as_ref().map(|c| c.slice(s![r.clone(), ..])),
            ),
            Some((h, c)) => {
                trace_h0.slice_mut(s![r.clone(), ..]).assign(h);
                if let Some(tc) = trace_c0.as_mut() {
                    tc.slice_mut(s![r.clone(), ..]).assign(c);
                }
                Lane::new(&ctx, r.clone(), h.view(), Some(c.view()))
            }
        };
        lane.advance(&ctx, 0, steps, v);
        last_output.slice_mut(s![r.clone(), ..]).assign(&lane.out);
        final_h.slice_mut(s![r.clone(), ..]).assign(&lane.h);
        final_c.slice_mut(s![r, ..]).assign(&lane.c);
        carried = Some((lane.h, lane.c));
    }
    sink(0, &stores)?;
    let finals = Finals {
        h0: trace_h0,
        c0: trace_c0,
        last_output,
        final_h,
        final_c,
    };
    Ok(p.finish(
        weights,
        spec,
        x.into_owned(),
        features,
        stores,
        (true, false),
        finals,
    ))
}

/// One layer of a chain run by [`run_chain_using`]: its weights and arguments, what to record of it, and
/// its initial states (zeros when absent).
#[derive(Debug)]
pub struct ChainLayer<'a, T> {
    /// The layer's validated weights.
    pub weights: &'a CellWeights<T>,
    /// Its Keras arguments (`carry_state` must be false; `go_backwards` only for a chain of one).
    pub spec: &'a LayerSpec,
    /// The dtype policy it computes under (`None`: the run's own type; see [`run_layer_policy`]).
    pub policy: Option<DtypePolicy>,
    /// What to record of it (its states are recorded anyway when a layer follows: they are its input).
    pub record: Record,
    /// Initial hidden state (sequences, h_units).
    pub h0: Option<Array2<T>>,
    /// Initial cell state (sequences, units), LSTM.
    pub c0: Option<Array2<T>>,
}

/// Receives each block of a chain: `(layer index, first step, block)`.
pub type ChainSink<'a, T> = dyn FnMut(usize, usize, &Stores<T>) -> crate::Result<()> + 'a;

/// Runs stacked recurrent layers block by block: for each block of `chunk_steps` steps, layer 0 over the
/// input, then layer 1 over layer 0's outputs of that block (its recorded output states, read in place),
/// and so on, each block passed to `sink` as it is computed. So a stack of `return_sequences` layers holds
/// one block of each layer's output, never a whole sequence: memory stays flat in the number of timesteps.
/// (Keras runs stacked layers one after the other over the whole sequence; the values are the same, since
/// layer k+1's step t reads only layer k's output at step t. A masked step is skipped by every layer, as
/// the mask rides along a `return_sequences` stack.)
///
/// Every layer after the first must read its input in time order: no `go_backwards` in a chain of more than
/// one layer, and no `carry_state` (the callers run those whole). With `chunk_steps = None` the whole
/// sequence is one block and every trace keeps every step; with `Some(k)` the traces hold only final states
/// and outputs (and layers after the first no input). Shapes must be validated by the caller: layer k+1's
/// features are layer k's `h_units()`.
pub fn run_chain_using<T: Real>(
    layers: Vec<ChainLayer<'_, T>>,
    (x, mask): (CowArray<'_, T, Ix3>, Option<ArrayView2<'_, bool>>),
    chunk_steps: Option<usize>,
    sink: &mut ChainSink<'_, T>,
    kernels: Kernels,
) -> crate::Result<Vec<LayerTrace<T>>> {
    let traces = run_chain_core(layers, (x, mask), (chunk_steps, false), sink, kernels)?;
    Ok(traces.into_iter().map(|(t, _)| t).collect())
}

/// Runs `weights` over `input` in memory and hands the recorded gates and pre-activations back as the engine
/// wrote them, one `(steps, sequences, units)` array per gate ([`GateBlocks`]), instead of interleaving them
/// into the trace (whose `gates` and `pre` are then `None`): the layout a backward pass reads, with no copy.
/// Without a mask the trace's `out` is `None` too: it would be a copy of `h`.
/// `carry_state` must be false (explain runs sequences independently).
pub fn run_layer_blocks<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    record: Record,
    kernels: Kernels,
) -> (LayerTrace<T>, GateBlocks<T>) {
    assert!(
        !spec.carry_state,
        "run_layer_blocks runs sequences independently"
    );
    let layer = ChainLayer {
        weights,
        spec,
        policy: None,
        record,
        h0: input.h0,
        c0: input.c0,
    };
    let never = &mut |_: usize, _: usize, _: &Stores<T>| -> crate::Result<()> { Ok(()) };
    match run_chain_core(
        vec![layer],
        (input.x, input.mask),
        (None, true),
        never,
        kernels,
    ) {
        Ok(mut r) => r.pop().expect("one trace per layer"),
        Err(_) => unreachable!("the in-memory sink never fails"),
    }
}

/// [`run_chain_using`]; with `per_gate` (and no `chunk_steps`), each layer's gates and pre-activations are
/// returned per gate, not interleaved into its trace, and an unmasked layer's `out` is left `None` (it is
/// `h`; no copy).
fn run_chain_core<T: Real>(
    layers: Vec<ChainLayer<'_, T>>,
    (x, mask): (CowArray<'_, T, Ix3>, Option<ArrayView2<'_, bool>>),
    (chunk_steps, per_gate): (Option<usize>, bool),
    sink: &mut ChainSink<'_, T>,
    kernels: Kernels,
) -> crate::Result<Vec<(LayerTrace<T>, GateBlocks<T>)>> {
    let (batch, steps, features) = x.dim();
    assert!(!layers.is_empty(), "a chain of no layers");
    for (k, l) in layers.iter().enumerate() {
        assert!(!l.spec.carry_state, "carry_state runs outside a chain");
        assert!(
            layers.len() == 1 || !l.spec.go_backwards,
            "go_backwards in a chain of layers"
        );
        if k > 0 {
            assert_eq!(
                l.weights.features,
                layers[k - 1].weights.h_units(),
                "layer {k}'s features vs the layer before's outputs"
            );
        }
    }
    let streaming = chunk_steps.is_some();
    let chunk = match chunk_steps {
        Some(c) => c.clamp(1, steps.max(1)),
        None => steps,
    };
    let masking = mask.is_some();
    let n = layers.len();
    let preps: Vec<Prepared> = layers
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let shape = (batch, steps, (k == 0).then_some(features));
            let states = (mask.as_ref(), l.h0.as_ref(), l.c0.as_ref());
            Prepared::new(l.weights, l.spec, shape, states, l.policy, kernels)
        })
        .collect();
    let x = preps[0].layout(x);
    // What each layer records: what it was asked, plus its states when a layer reads them.
    let records: Vec<Record> = layers
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let mut r = l.record;
            if k + 1 < n {
                r.states = true;
                r.cell_only = false;
            }
            r
        })
        .collect();
    let h0s: Vec<Array2<T>> = layers
        .iter()
        .zip(&preps)
        .map(|(l, p)| l.h0.clone().unwrap_or_else(|| Array2::zeros((batch, p.hw))))
        .collect();
    let c0s: Vec<Option<Array2<T>>> = layers
        .iter()
        .zip(&preps)
        .map(|(l, p)| {
            p.lstm
                .then(|| l.c0.clone().unwrap_or_else(|| Array2::zeros((batch, p.u))))
        })
        .collect();
    let new_stores = |k: usize, s: usize| {
        let p = &preps[k];
        let blocks = layers[k].weights.kind.blocks();
        Stores::new(s, batch, blocks, (p.u, p.hw), p.lstm, masking, records[k])
    };
    let mut stores: Vec<Stores<T>> = (0..n).map(|k| new_stores(k, chunk)).collect();
    let mut lanes: Vec<LaneSet<T>> = (0..n)
        .map(|k| {
            let w = layers[k].weights;
            let ranges = split_rows(batch, lane_count(batch, steps, w.kind.blocks() * w.units));
            // A lane's buffers depend on the layer only, not on its input: any view serves here.
            let c = chain_ctx(&layers[k], &preps[k], (x.view(), 0), mask);
            let ls = ranges
                .iter()
                .map(|r| {
                    Lane::new(
                        &c,
                        r.clone(),
                        h0s[k].slice(s![r.clone(), ..]),
                        c0s[k].as_ref().map(|c| c.slice(s![r.clone(), ..])),
                    )
                })
                .collect();
            (ranges, ls)
        })
        .collect();
    let mut t0 = 0;
    while t0 < steps {
        let t1 = (t0 + chunk).min(steps);
        for k in 0..n {
            if t1 - t0 < stores[k].steps() {
                stores[k] = new_stores(k, t1 - t0);
            }
            let (before, rest) = stores.split_at_mut(k);
            let st = &mut rest[0];
            // Layer k's input for this block: the input, or layer k−1's outputs of the block, time-major,
            // seen batch-major in place.
            let (xv, x_t0) = match before.last() {
                None => (x.view(), 0),
                Some(prev) => {
                    let o = prev
                        .out
                        .as_ref()
                        .or(prev.h.as_ref())
                        .expect("a layer that feeds another records its states");
                    (o.view().permuted_axes([1, 0, 2]), t0)
                }
            };
            let c = chain_ctx(&layers[k], &preps[k], (xv, x_t0), mask);
            // The block's arrays are reused: every value is written again except the masked flags, which
            // are only ever set.
            st.masked.fill(false);
            let (ranges, ls) = &mut lanes[k];
            let views = st.lane_views(ranges);
            if ls.len() == 1 {
                for (lane, v) in ls.iter_mut().zip(views) {
                    lane.advance(&c, t0, t1, v);
                }
            } else {
                rayon::scope(|sc| {
                    for (lane, v) in ls.iter_mut().zip(views) {
                        let c = &c;
                        sc.spawn(move |_| lane.advance(c, t0, t1, v));
                    }
                });
            }
            sink(k, t0, st)?;
        }
        t0 = t1;
    }
    let mut traces = Vec::with_capacity(n);
    let mut inputs: Vec<Option<Array3<T>>> = vec![Some(x.into_owned())];
    for k in 1..n {
        // A chained layer's input, when every step is kept: the layer before's output sequence.
        inputs.push((!streaming).then(|| {
            let prev = &stores[k - 1];
            let o = prev.out.as_ref().or(prev.h.as_ref()).expect("recorded");
            o.view()
                .permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned()
        }));
    }
    for (k, (mut st, (_, ls))) in stores.into_iter().zip(lanes).enumerate().rev() {
        let p = &preps[k];
        let mut finals = Finals {
            h0: h0s[k].clone(),
            c0: c0s[k].clone(),
            last_output: Array2::zeros((batch, p.hw)),
            final_h: Array2::zeros((batch, p.hw)),
            final_c: Array2::zeros((batch, p.u)),
        };
        for lane in &ls {
            let r = lane.rows.clone();
            finals
                .last_output
                .slice_mut(s![r.clone(), ..])
                .assign(&lane.out);
            finals.final_h.slice_mut(s![r.clone(), ..]).assign(&lane.h);
            finals.final_c.slice_mut(s![r, ..]).assign(&lane.c);
        }
        let l = &layers[k];
        let xk = inputs[k]
            .take()
            .unwrap_or_else(|| Array3::zeros((batch, 0, l.weights.features)));
        let f = if k == 0 { features } else { l.weights.features };
        let blocks = if per_gate && !streaming {
            GateBlocks {
                pre: std::mem::take(&mut st.pre),
                gates: std::mem::take(&mut st.gates),
            }
        } else {
            GateBlocks::default()
        };
        let trace = p.finish(l.weights, l.spec, xk, f, st, (!streaming, per_gate), finals);
        traces.push((trace, blocks));
    }
    traces.reverse();
    Ok(traces)
}

/// A layer's mask, initial hidden and cell states, as given.
type StateRefs<'a, T> = (
    Option<&'a ArrayView2<'a, bool>>,
    Option<&'a Array2<T>>,
    Option<&'a Array2<T>>,
);

/// A layer's row ranges and the lanes that run them.
type LaneSet<T> = (Vec<Range<usize>>, Vec<Lane<T>>);

/// The shared context of layer `l`'s lanes for input `x` (holding steps from `x_t0` on).
fn chain_ctx<'a, T: Real>(
    l: &'a ChainLayer<'a, T>,
    p: &'a Prepared,
    (x, x_t0): (ArrayView3<'a, T>, usize),
    mask: Option<ArrayView2<'a, bool>>,
) -> LaneCtx<'a, T> {
    LaneCtx {
        w: l.weights,
        spec: l.spec,
        x,
        x_t0,
        mask,
        input_index: &p.input_index,
        packed: p.packed.as_ref(),
        policy: p.policy,
    }
}

/// What one layer's run needs besides its lanes: the fused packing (when the fused kernels run it), the
/// processing order of input steps, and its sizes.
struct Prepared {
    packed: Option<Packed>,
    /// The dtype policy (the fused kernels never run under one).
    policy: Option<DtypePolicy>,
    input_index: Vec<usize>,
    u: usize,
    /// The hidden state's width: `u`, or the projection's with PyTorch `proj_size`.
    hw: usize,
    lstm: bool,
    masking: bool,
}

/// A layer's initial and final states and its last output.
struct Finals<T> {
    h0: Array2<T>,
    c0: Option<Array2<T>>,
    last_output: Array2<T>,
    final_h: Array2<T>,
    final_c: Array2<T>,
}

impl Prepared {
    /// Checks the shapes a library caller could get wrong (a panic with a message, never an out-of-bounds
    /// read by the fused kernels) and picks the kernels. `x` is the layer's input shape `(sequences, steps,
    /// features)` (`None` for a chained layer, whose input is the layer before's output).
    fn new<T: Real>(
        weights: &CellWeights<T>,
        spec: &LayerSpec,
        (batch, steps, x): (usize, usize, Option<usize>),
        (mask, h0, c0): StateRefs<'_, T>,
        policy: Option<DtypePolicy>,
        kernels: Kernels,
    ) -> Prepared {
        let (u, hw) = (weights.units, weights.h_units());
        if let Some(features) = x {
            assert_eq!(features, weights.features, "input features vs weights");
        }
        for (what, s, w) in [("h0", h0, hw), ("c0", c0, u)] {
            if let Some(s) = s {
                assert_eq!(s.dim(), (batch, w), "{what} shape vs (sequences, units)");
            }
        }
        if let Some(m) = mask {
            assert_eq!(
                m.dim(),
                (batch, steps),
                "mask shape vs (sequences, timesteps)"
            );
        }
        assert!(
            policy.is_none() || weights.projection.is_none(),
            "a projected LSTM has no dtype policy"
        );
        Prepared {
            packed: if policy.is_some() {
                None
            } else {
                packed_for(weights, spec, kernels)
            },
            policy,
            input_index: if spec.go_backwards {
                (0..steps).rev().collect()
            } else {
                (0..steps).collect()
            },
            u,
            hw,
            lstm: weights.kind.has_cell_state(),
            masking: mask.is_some(),
        }
    }

    /// `x` with its features contiguous and no negative strides, as the fused kernels address it.
    fn layout<'a, T: Real>(&self, x: CowArray<'a, T, Ix3>) -> CowArray<'a, T, Ix3> {
        let odd = x.strides()[2] != 1 || x.strides().iter().any(|&s| s < 0);
        if self.packed.is_some() && odd && !x.is_empty() {
            CowArray::from(x.as_standard_layout().into_owned())
        } else {
            x
        }
    }

    /// The layer's trace: with `keep`, every recorded step (the whole run was one block); else only its
    /// final states and outputs.
    #[allow(clippy::too_many_arguments)]
    fn finish<T: Real>(
        &self,
        weights: &CellWeights<T>,
        spec: &LayerSpec,
        x: Array3<T>,
        features: usize,
        mut stores: Stores<T>,
        (keep, share_out): (bool, bool),
        f: Finals<T>,
    ) -> LayerTrace<T> {
        let batch = f.final_h.nrows();
        LayerTrace {
            name: spec.name.clone(),
            kind: weights.kind,
            units: self.u,
            features,
            activation: spec.activation,
            recurrent_activation: spec.recurrent_activation,
            reset_after: (weights.kind.has_reset_after()).then_some(weights.reset_after),
            go_backwards: spec.go_backwards,
            carry_state: spec.carry_state,
            input_index: self.input_index.clone(),
            x,
            pre: (keep && !stores.pre.is_empty()).then(|| interleave(&stores.pre)),
            gates: (keep && !stores.gates.is_empty()).then(|| interleave(&stores.gates)),
            out: if !keep {
                None
            } else if self.masking {
                stores.out.take()
            } else if share_out {
                // Unmasked, the output is h: the caller reads h rather than a copy.
                None
            } else {
                stores.h.clone()
            },
            h: if keep { stores.h.take() } else { None },
            c: if keep { stores.c.take() } else { None },
            masked: if keep {
                stores.masked
            } else {
                Array2::from_elem((0, batch), false)
            },
            h0: f.h0,
            c0: f.c0,
            last_output: f.last_output,
            final_h: f.final_h,
            final_c: self.lstm.then_some(f.final_c),
            kernels: self.packed.as_ref().map_or(Kernels::Portable, |p| p.isa()),
            policy: self.policy,
        }
    }
}

/// The fused kernels' packing of `w`, when they can run it (float32 or float64, an activation they compute,
/// no projection, a CPU with the instruction set, allowed by `allowed`).
fn packed_for<T: Real>(w: &CellWeights<T>, spec: &LayerSpec, allowed: Kernels) -> Option<Packed> {
    Packed::new(w, spec.activation, spec.recurrent_activation, allowed)
}

/// Per-gate arrays `(steps, sequences, units)` side by side as `(steps, sequences, gates·units)`, the
/// in-memory trace's layout, in standard layout (each (step, sequence) row contiguous, as the backward
/// pass and the renderers read it). Written row by row in parallel over steps, into memory that is not
/// zeroed first: this copy is the only cost of the interleaved layout, so it is kept to one pass.
/// (`ndarray::concatenate` on the last axis would give a gate-major memory order, whose rows are strided.)
pub fn interleave<T: Real>(per_gate: &[Array3<T>]) -> Array3<T> {
    use rayon::prelude::*;
    let (steps, batch, u) = per_gate.first().map_or((0, 0, 0), |a| a.dim());
    let g = per_gate.len();
    let row = g * u;
    if steps * batch * row == 0 {
        return Array3::zeros((steps, batch, row));
    }
    let srcs: Vec<&[T]> = per_gate
        .iter()
        .map(|a| a.as_slice().expect("the stores are standard layout"))
        .collect();
    let mut out = Array3::<T>::uninit((steps, batch, row));
    out.as_slice_mut()
        .expect("a new array is standard layout")
        .par_chunks_mut(batch * row)
        .enumerate()
        .for_each(|(t, block)| {
            for (b, dst) in block.chunks_mut(row).enumerate() {
                let at = (t * batch + b) * u;
                for (k, src) in srcs.iter().enumerate() {
                    for (d, &v) in dst[k * u..(k + 1) * u].iter_mut().zip(&src[at..at + u]) {
                        d.write(v);
                    }
                }
            }
        });
    // SAFETY: every element was written above: `steps` blocks of `batch` rows of `g` gate slices of `u`.
    unsafe { out.assume_init() }
}

/// How many lanes: one per core when there is enough work to amortise a thread, else one.
fn lane_count(batch: usize, steps: usize, gu: usize) -> usize {
    let work = batch.saturating_mul(steps).saturating_mul(gu);
    if work < 1 << 18 {
        1
    } else {
        rayon::current_num_threads().clamp(1, batch.max(1))
    }
}

/// Splits `0..batch` into `n` contiguous, nearly equal ranges.
fn split_rows(batch: usize, n: usize) -> Vec<Range<usize>> {
    let n = n.clamp(1, batch.max(1));
    (0..n)
        .map(|i| (i * batch / n)..((i + 1) * batch / n))
        .collect()
}

/// Applies a Dense head to rows of `x`: `act(x·K + b)`.
pub fn dense<T: Real>(
    w: &DenseWeights<T>,
    activation: Activation,
    x: ArrayView2<'_, T>,
) -> Array2<T> {
    let mut y = Array2::<T>::zeros((x.nrows(), w.outputs()));
    if let Some(b) = &w.bias {
        y.rows_mut().into_iter().for_each(|mut r| r.assign(b));
    }
    matmul(y.view_mut(), x, w.kernel.view(), true);
    activation.apply_rows(y.view_mut());
    y
}

/// Keras `Masking(mask_value=v)`: a step is used unless all its features equal `v` (compared in `T`).
pub fn mask_from_value<T: Real>(x: ArrayView3<'_, T>, value: T) -> Array2<bool> {
    let (b, t, _) = x.dim();
    let mut m = Array2::from_elem((b, t), true);
    for ((i, j), slot) in m.indexed_iter_mut() {
        *slot = x.slice(s![i, j, ..]).iter().any(|&v| v != value);
    }
    m
}

#[cfg(test)]
mod tests;
