/*!
Runs a recurrent layer over a batch and records what was asked into a [`LayerTrace`].

How it is fast:
- sequences are independent, so the batch is split into one lane per core and each lane runs every step
  of its sequences with no synchronisation (except with carried state, which is sequential by nature);
- each lane projects its inputs `x·W + b` for 16 steps at a time as one matrix product, then each step
  costs one recurrent product for the lane's whole block of sequences;
- with float32, an LSTM, a GRU with `reset_after=True` or a SimpleRNN, and activations the fused steps
  compute (sigmoid, tanh, both hard_sigmoids, relu, linear) on a CPU with AVX-512 (or AVX2 and FMA), each
  step is one fused pass
  ([`crate::cell::fused`]): products, activations and state update per register tile, gates and states
  stored straight into the time-major trace arrays, one array per gate (no projection buffer, no copies);
- otherwise the portable cells run on `gemm` products and their gates are split into the per-gate arrays;
- nothing is allocated inside the time loop.

With `chunk_steps`, the trace is kept for that many steps at a time and handed to a sink (which streams it
to disk), so memory does not grow with the number of timesteps. Masking, `go_backwards`, initial states and
carried state are handled here, identically for every cell.

This file holds the entry points ([`run_layer`], [`run_layer_with`], [`run_layer_using`]), the Dense head and
masking; `stores.rs` is where a run records, `lanes.rs` how the batch is split and stepped.
*/

mod lanes;
mod stores;

#[allow(unused_imports)]
use self::{lanes::*, stores::*};
pub use stores::Stores;

use crate::cell::fused::{self, Packed};
use crate::cell::kernels::matmul;
use crate::cell::{Activation, GruCell, LstmCell, Real, SimpleRnnCell, StepOut};
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
/// allowed by `kernels` that applies. The fused steps apply to float32 with the default activations, on a
/// CPU with AVX-512F (`Kernels::Avx512` allows them) or AVX2 and FMA (`Avx512` or `Avx2` allow them); the
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
    run_core(
        weights,
        spec,
        input,
        record,
        (chunk_steps, false),
        sink,
        kernels,
    )
    .map(|(t, _)| t)
}

/// Runs `weights` over `input` in memory and hands the recorded gates and pre-activations back as the engine
/// wrote them, one `(steps, sequences, units)` array per gate ([`GateBlocks`]), instead of interleaving them
/// into the trace (whose `gates` and `pre` are then `None`): the layout a backward pass reads, with no copy.
pub fn run_layer_blocks<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    record: Record,
    kernels: Kernels,
) -> (LayerTrace<T>, GateBlocks<T>) {
    let never = &mut |_: usize, _: &Stores<T>| -> crate::Result<()> { Ok(()) };
    match run_core(weights, spec, input, record, (None, true), never, kernels) {
        Ok(r) => r,
        Err(_) => unreachable!("the in-memory sink never fails"),
    }
}

/// [`run_layer_using`]; with `per_gate`, the gates and pre-activations are returned per gate, not
/// interleaved into the trace.
fn run_core<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    record: Record,
    (chunk_steps, per_gate): (Option<usize>, bool),
    sink: &mut Sink<'_, T>,
    kernels: Kernels,
) -> crate::Result<(LayerTrace<T>, GateBlocks<T>)> {
    let (batch, steps, features) = input.x.dim();
    let u = weights.units;
    // The hidden state's width: `u`, or the projection's with PyTorch `proj_size`.
    let hw = weights.h_units();
    let blocks = weights.kind.blocks();
    // Callers validate shapes (the loaders and the command line's job layer do); these checks keep a library caller's mistake a
    // panic, never an out-of-bounds read by the fused kernels.
    assert_eq!(features, weights.features, "input features vs weights");
    for (what, s, w) in [("h0", input.h0.as_ref(), hw), ("c0", input.c0.as_ref(), u)] {
        if let Some(s) = s {
            assert_eq!(s.dim(), (batch, w), "{what} shape vs (sequences, units)");
        }
    }
    if let Some(m) = &input.mask {
        assert_eq!(
            m.dim(),
            (batch, steps),
            "mask shape vs (sequences, timesteps)"
        );
    }
    let lstm = weights.kind.has_cell_state();
    let masking = input.mask.is_some();
    let packed = packed_for(weights, spec, kernels);
    // The fused kernels address rows of `x` directly.
    let x = if packed.is_some() && !input.x.is_standard_layout() {
        CowArray::from(input.x.as_standard_layout().into_owned())
    } else {
        input.x
    };
    let input_index: Vec<usize> = if spec.go_backwards {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    let h0 = input
        .h0
        .clone()
        .unwrap_or_else(|| Array2::zeros((batch, hw)));
    let c0 = lstm.then(|| {
        input
            .c0
            .clone()
            .unwrap_or_else(|| Array2::zeros((batch, u)))
    });
    let ctx = LaneCtx {
        w: weights,
        spec,
        x: x.view(),
        mask: input.mask,
        input_index: &input_index,
        packed: packed.as_ref(),
    };
    let streaming = chunk_steps.is_some() && !spec.carry_state;
    let chunk = if streaming {
        chunk_steps.unwrap_or(steps).clamp(1, steps.max(1))
    } else {
        steps
    };

    let mut trace_h0 = h0.clone();
    let mut trace_c0 = c0.clone();
    let mut stores = Stores::new(chunk, batch, blocks, (u, hw), lstm, masking, record);
    let mut last_output = Array2::zeros((batch, hw));
    let mut final_h = Array2::zeros((batch, hw));
    let mut final_c = Array2::zeros((batch, u));

    if spec.carry_state {
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
    } else {
        let lanes_n = lane_count(batch, steps, blocks * u);
        let ranges = split_rows(batch, lanes_n);
        let mut lanes: Vec<Lane<T>> = ranges
            .iter()
            .map(|r| {
                Lane::new(
                    &ctx,
                    r.clone(),
                    h0.slice(s![r.clone(), ..]),
                    c0.as_ref().map(|c| c.slice(s![r.clone(), ..])),
                )
            })
            .collect();
        let mut t0 = 0;
        while t0 < steps {
            let t1 = (t0 + chunk).min(steps);
            if t1 - t0 < stores.steps() {
                stores = Stores::new(t1 - t0, batch, blocks, (u, hw), lstm, masking, record);
            }
            // The block's arrays are reused: every value is written again except the masked flags,
            // which are only ever set.
            stores.masked.fill(false);
            let views = stores.lane_views(&ranges);
            if lanes.len() == 1 {
                for (lane, v) in lanes.iter_mut().zip(views) {
                    lane.advance(&ctx, t0, t1, v);
                }
            } else {
                rayon::scope(|sc| {
                    for (lane, v) in lanes.iter_mut().zip(views) {
                        let ctx = &ctx;
                        sc.spawn(move |_| lane.advance(ctx, t0, t1, v));
                    }
                });
            }
            sink(t0, &stores)?;
            t0 = t1;
        }
        for lane in &lanes {
            last_output
                .slice_mut(s![lane.rows.clone(), ..])
                .assign(&lane.out);
            final_h.slice_mut(s![lane.rows.clone(), ..]).assign(&lane.h);
            final_c.slice_mut(s![lane.rows.clone(), ..]).assign(&lane.c);
        }
    }

    let keep = !streaming;
    let gate_blocks = if keep && per_gate {
        GateBlocks {
            pre: std::mem::take(&mut stores.pre),
            gates: std::mem::take(&mut stores.gates),
        }
    } else {
        GateBlocks::default()
    };
    let trace = LayerTrace {
        name: spec.name.clone(),
        kind: weights.kind,
        units: u,
        features,
        activation: spec.activation,
        recurrent_activation: spec.recurrent_activation,
        reset_after: (weights.kind.has_reset_after()).then_some(weights.reset_after),
        go_backwards: spec.go_backwards,
        carry_state: spec.carry_state,
        input_index,
        x: x.into_owned(),
        pre: (keep && !per_gate && record.pre).then(|| interleave(&stores.pre)),
        gates: (keep && !per_gate && record.gates).then(|| interleave(&stores.gates)),
        out: if !keep {
            None
        } else if masking {
            stores.out.take()
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
        h0: trace_h0,
        c0: trace_c0,
        last_output,
        final_h,
        final_c: lstm.then_some(final_c),
        kernels: packed.as_ref().map_or(Kernels::Portable, |p| p.isa()),
    };
    Ok((trace, gate_blocks))
}

/// The fused kernels' packing of `w`, when they can run it (float32, default activations, a CPU with
/// the instruction set, allowed by `allowed`).
fn packed_for<T: Real>(w: &CellWeights<T>, spec: &LayerSpec, allowed: Kernels) -> Option<Packed> {
    // The fused kernels know no projection: a `proj_size` LSTM runs the portable cell.
    if w.projection.is_some() {
        return None;
    }
    let w32 = (w as &dyn std::any::Any).downcast_ref::<CellWeights<f32>>()?;
    Packed::new(w32, spec.activation, spec.recurrent_activation, allowed)
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
