/*!
Runs a recurrent layer over a batch and records what was asked into a [`LayerTrace`].

How it is fast:
- sequences are independent, so the batch is split into one lane per core and each lane runs every step
  of its sequences with no synchronisation (except with carried state, which is sequential by nature);
- each lane projects its inputs `x·W + b` for 16 steps at a time as one matrix product, then each step
  costs one recurrent product for the lane's whole block of sequences;
- steps write their pre-activations and gates straight into the time-major trace arrays (no copies), and
  nothing is allocated inside the time loop.

With `chunk_steps`, the trace is kept for that many steps at a time and handed to a sink (which streams it
to disk), so memory does not grow with the number of timesteps. Masking, `go_backwards`, initial states and
carried state are handled here, identically for both cells.
*/

use crate::cell::kernels::matmul;
use crate::cell::{Activation, GruCell, LstmCell, Real, SimpleRnnCell, StepOut};
use crate::trace::{LayerTrace, Record};
use crate::weights::{CellKind, CellWeights, DenseWeights};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis, s};
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
    /// (sequences, timesteps, features).
    pub x: ArrayView3<'a, T>,
    /// (sequences, timesteps), input order; `true` = the step is used (Keras's convention).
    pub mask: Option<ArrayView2<'a, bool>>,
    /// Initial hidden state (sequences, units); zeros when absent.
    pub h0: Option<Array2<T>>,
    /// Initial cell state (sequences, units), LSTM; zeros when absent.
    pub c0: Option<Array2<T>>,
}

/// A block of recorded steps, time-major `(steps, sequences, …)`; `None` where not recorded.
#[derive(Debug, Clone)]
pub struct Stores<T> {
    /// Pre-activations.
    pub pre: Option<Array3<T>>,
    /// Activated gates.
    pub gates: Option<Array3<T>>,
    /// Hidden states.
    pub h: Option<Array3<T>>,
    /// Cell states (LSTM).
    pub c: Option<Array3<T>>,
    /// Layer outputs.
    pub out: Option<Array3<T>>,
    /// Masked steps.
    pub masked: Array2<bool>,
}

impl<T: Real> Stores<T> {
    fn new(
        steps: usize,
        batch: usize,
        gu: usize,
        u: usize,
        lstm: bool,
        record: Record,
    ) -> Stores<T> {
        let z = |on: bool, w: usize| on.then(|| Array3::zeros((steps, batch, w)));
        Stores {
            pre: z(record.pre, gu),
            gates: z(record.gates, gu),
            h: z(record.states, u),
            c: z(record.states && lstm, u),
            out: z(record.states, u),
            masked: Array2::from_elem((steps, batch), false),
        }
    }

    /// Number of steps held.
    pub fn steps(&self) -> usize {
        self.masked.nrows()
    }

    /// Mutable views of the rows `rows` of every array.
    fn lane_views(&mut self, chunks: &[Range<usize>]) -> Vec<LaneViews<'_, T>> {
        fn split<'a, A>(
            a: Option<&'a mut Array3<A>>,
            chunks: &[Range<usize>],
        ) -> Vec<Option<ArrayViewMut3<'a, A>>> {
            match a {
                None => chunks.iter().map(|_| None).collect(),
                Some(a) => {
                    let mut rest = a.view_mut();
                    let mut out = Vec::with_capacity(chunks.len());
                    for r in chunks {
                        let (head, tail) = rest.split_at(Axis(1), r.len());
                        out.push(Some(head));
                        rest = tail;
                    }
                    out
                }
            }
        }
        let mut masked = Vec::with_capacity(chunks.len());
        let mut rest = self.masked.view_mut();
        for r in chunks {
            let (head, tail) = rest.split_at(Axis(1), r.len());
            masked.push(head);
            rest = tail;
        }
        let mut pre = split(self.pre.as_mut(), chunks).into_iter();
        let mut gates = split(self.gates.as_mut(), chunks).into_iter();
        let mut h = split(self.h.as_mut(), chunks).into_iter();
        let mut c = split(self.c.as_mut(), chunks).into_iter();
        let mut out = split(self.out.as_mut(), chunks).into_iter();
        masked
            .into_iter()
            .map(|m| LaneViews {
                pre: pre.next().flatten(),
                gates: gates.next().flatten(),
                h: h.next().flatten(),
                c: c.next().flatten(),
                out: out.next().flatten(),
                masked: m,
            })
            .collect()
    }
}

/// Receives each block of recorded steps: `(first step, block)`.
pub type Sink<'a, T> = dyn FnMut(usize, &Stores<T>) -> crate::Result<()> + 'a;

/// One lane's slice of the stores.
struct LaneViews<'a, T> {
    pre: Option<ArrayViewMut3<'a, T>>,
    gates: Option<ArrayViewMut3<'a, T>>,
    h: Option<ArrayViewMut3<'a, T>>,
    c: Option<ArrayViewMut3<'a, T>>,
    out: Option<ArrayViewMut3<'a, T>>,
    masked: ArrayViewMut2<'a, bool>,
}

/// Steps projected at once: large enough for an efficient product, small enough to stay in cache.
const PROJECT_STEPS: usize = 16;

/// Everything that is shared, read-only, by all lanes.
struct Ctx<'a, T> {
    w: &'a CellWeights<T>,
    spec: &'a LayerSpec,
    x: ArrayView3<'a, T>,
    mask: Option<ArrayView2<'a, bool>>,
    input_index: &'a [usize],
}

/// A block of sequences advancing together, with its state and scratch buffers (allocated once).
struct Lane<T> {
    rows: Range<usize>,
    h: Array2<T>,
    c: Array2<T>,
    out: Array2<T>,
    h_next: Array2<T>,
    c_next: Array2<T>,
    gates: Array2<T>,
    scratch: Array2<T>,
    xin: Array2<T>,
    xp: Array2<T>,
}

impl<T: Real> Lane<T> {
    fn new(
        ctx: &Ctx<'_, T>,
        rows: Range<usize>,
        h0: ArrayView2<'_, T>,
        c0: Option<ArrayView2<'_, T>>,
    ) -> Lane<T> {
        let n = rows.len();
        let u = ctx.w.units;
        let gu = ctx.w.kind.blocks() * u;
        let steps = PROJECT_STEPS.min(ctx.input_index.len()).max(1);
        Lane {
            rows,
            h: h0.to_owned(),
            c: c0
                .map(|c| c.to_owned())
                .unwrap_or_else(|| Array2::zeros((n, u))),
            out: Array2::zeros((n, u)),
            h_next: Array2::zeros((n, u)),
            c_next: Array2::zeros((n, u)),
            gates: Array2::zeros((n, gu)),
            scratch: Array2::zeros((n, gu)),
            xin: Array2::zeros((steps * n, ctx.w.features)),
            xp: Array2::zeros((steps * n, gu)),
        }
    }

    /// Runs processing steps `t0..t1`, recording into `v` (whose step 0 is `t0`).
    fn advance(&mut self, ctx: &Ctx<'_, T>, t0: usize, t1: usize, mut v: LaneViews<'_, T>) {
        let n = self.rows.len();
        let w = ctx.w;
        let mut t = t0;
        while t < t1 {
            let sn = PROJECT_STEPS.min(t1 - t);
            for s_ in 0..sn {
                let ti = ctx.input_index[t + s_];
                for (r, b) in self.rows.clone().enumerate() {
                    let src = ctx.x.slice(s![b, ti, ..]);
                    let mut dst = self.xin.row_mut(s_ * n + r);
                    match (src.as_slice(), dst.as_slice_mut()) {
                        (Some(a), Some(d)) => d.copy_from_slice(a),
                        _ => dst.assign(&src),
                    }
                }
            }
            let mut xp = self.xp.slice_mut(s![0..sn * n, ..]);
            match &w.bias {
                Some(b) => xp.rows_mut().into_iter().for_each(|mut row| row.assign(b)),
                None => xp.fill(T::zero()),
            }
            matmul(
                xp.view_mut(),
                self.xin.slice(s![0..sn * n, ..]),
                w.kernel.view(),
                true,
            );
            for s_ in 0..sn {
                let k = t + s_ - t0;
                let ti = ctx.input_index[t + s_];
                // The step turns the input projection into the pre-activations in place: in the trace when
                // pre-activations are recorded, else right in the projection buffer (no copy).
                let xpt = self.xp.slice_mut(s![s_ * n..(s_ + 1) * n, ..]);
                let pre = match v.pre.as_mut() {
                    Some(p) => {
                        let mut slot = p.index_axis_mut(Axis(0), k);
                        slot.assign(&xpt);
                        slot
                    }
                    None => xpt,
                };
                let gates = match v.gates.as_mut() {
                    Some(g) => g.index_axis_mut(Axis(0), k),
                    None => self.gates.view_mut(),
                };
                let out = StepOut {
                    pre,
                    gates,
                    h: self.h_next.view_mut(),
                    c: self.c_next.view_mut(),
                    scratch: self.scratch.view_mut(),
                };
                match w.kind {
                    CellKind::Lstm => LstmCell {
                        weights: w,
                        activation: ctx.spec.activation,
                        recurrent_activation: ctx.spec.recurrent_activation,
                    }
                    .step(self.h.view(), self.c.view(), out),
                    CellKind::Gru => GruCell {
                        weights: w,
                        activation: ctx.spec.activation,
                        recurrent_activation: ctx.spec.recurrent_activation,
                    }
                    .step(self.h.view(), out),
                    CellKind::SimpleRnn => SimpleRnnCell {
                        weights: w,
                        activation: ctx.spec.activation,
                    }
                    .step(self.h.view(), out),
                }
                match ctx.mask {
                    None => {
                        std::mem::swap(&mut self.h, &mut self.h_next);
                        std::mem::swap(&mut self.c, &mut self.c_next);
                    }
                    Some(m) => {
                        for (r, b) in self.rows.clone().enumerate() {
                            if m[[b, ti]] {
                                self.h.row_mut(r).assign(&self.h_next.row(r));
                                self.c.row_mut(r).assign(&self.c_next.row(r));
                                self.out.row_mut(r).assign(&self.h.row(r));
                            } else {
                                v.masked[[k, r]] = true;
                            }
                        }
                    }
                }
                if let Some(hv) = v.h.as_mut() {
                    hv.index_axis_mut(Axis(0), k).assign(&self.h);
                }
                if let Some(cv) = v.c.as_mut() {
                    cv.index_axis_mut(Axis(0), k).assign(&self.c);
                }
                if let Some(ov) = v.out.as_mut() {
                    // Without a mask the output is the hidden state.
                    ov.index_axis_mut(Axis(0), k).assign(if ctx.mask.is_some() {
                        &self.out
                    } else {
                        &self.h
                    });
                }
            }
            t += sn;
        }
        if ctx.mask.is_none() {
            self.out.assign(&self.h);
        }
    }
}

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
/// Shapes must already be validated (the loaders and `config` do that).
pub fn run_layer_with<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
    record: Record,
    chunk_steps: Option<usize>,
    sink: &mut Sink<'_, T>,
) -> crate::Result<LayerTrace<T>> {
    let (batch, steps, features) = input.x.dim();
    let u = weights.units;
    let gu = weights.kind.blocks() * u;
    let lstm = weights.kind == CellKind::Lstm;
    let input_index: Vec<usize> = if spec.go_backwards {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    let h0 = input
        .h0
        .clone()
        .unwrap_or_else(|| Array2::zeros((batch, u)));
    let c0 = lstm.then(|| {
        input
            .c0
            .clone()
            .unwrap_or_else(|| Array2::zeros((batch, u)))
    });
    let ctx = Ctx {
        w: weights,
        spec,
        x: input.x,
        mask: input.mask,
        input_index: &input_index,
    };
    let streaming = chunk_steps.is_some() && !spec.carry_state;
    let chunk = if streaming {
        chunk_steps.unwrap_or(steps).clamp(1, steps.max(1))
    } else {
        steps
    };

    let mut trace_h0 = h0.clone();
    let mut trace_c0 = c0.clone();
    let mut stores = Stores::new(chunk, batch, gu, u, lstm, record);
    let mut last_output = Array2::zeros((batch, u));
    let mut final_h = Array2::zeros((batch, u));
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
        let lanes_n = lane_count(batch, steps, gu);
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
                stores = Stores::new(t1 - t0, batch, gu, u, lstm, record);
            }
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
    Ok(LayerTrace {
        name: spec.name.clone(),
        kind: weights.kind,
        units: u,
        features,
        activation: spec.activation,
        recurrent_activation: spec.recurrent_activation,
        reset_after: (weights.kind == CellKind::Gru).then_some(weights.reset_after),
        go_backwards: spec.go_backwards,
        carry_state: spec.carry_state,
        input_index,
        x: input.x.to_owned(),
        pre: if keep { stores.pre.take() } else { None },
        gates: if keep { stores.gates.take() } else { None },
        h: if keep { stores.h.take() } else { None },
        c: if keep { stores.c.take() } else { None },
        out: if keep { stores.out.take() } else { None },
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
    })
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
