/*!
Runs a recurrent layer over a batch and records what was asked into a [`LayerTrace`].

How it is fast:
- sequences are independent, so the batch is split into one lane per core and each lane runs every step
  of its sequences with no synchronisation (except with carried state, which is sequential by nature);
- each lane projects its inputs `x·W + b` for 16 steps at a time as one matrix product, then each step
  costs one recurrent product for the lane's whole block of sequences;
- with float32 and Keras's default activations on a CPU with AVX-512, each step is one fused pass
  ([`crate::cell::fused`]): products, activations and state update per register tile, gates and states
  stored straight into the time-major trace arrays, one array per gate (no projection buffer, no copies);
- otherwise the portable cells run on `gemm` products and their gates are split into the per-gate arrays;
- nothing is allocated inside the time loop.

With `chunk_steps`, the trace is kept for that many steps at a time and handed to a sink (which streams it
to disk), so memory does not grow with the number of timesteps. Masking, `go_backwards`, initial states and
carried state are handled here, identically for both cells.
*/

use crate::cell::fused::{self, Packed};
use crate::cell::kernels::matmul;
use crate::cell::{Activation, GruCell, LstmCell, Real, SimpleRnnCell, StepOut};
use crate::trace::{Kernels, LayerTrace, Record};
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

/// A block of recorded steps, time-major `(steps, sequences, units)`, one array per gate; empty or `None`
/// where not recorded.
#[derive(Debug, Clone)]
pub struct Stores<T> {
    /// Pre-activations, one array per gate block (in gate order).
    pub pre: Vec<Array3<T>>,
    /// Activated gates, one array per gate block.
    pub gates: Vec<Array3<T>>,
    /// Hidden states.
    pub h: Option<Array3<T>>,
    /// Cell states (LSTM).
    pub c: Option<Array3<T>>,
    /// Layer outputs: only with a mask (otherwise they are the hidden states).
    pub out: Option<Array3<T>>,
    /// Masked steps.
    pub masked: Array2<bool>,
}

impl<T: Real> Stores<T> {
    fn new(
        steps: usize,
        batch: usize,
        blocks: usize,
        u: usize,
        lstm: bool,
        masking: bool,
        record: Record,
    ) -> Stores<T> {
        let z = |on: bool| on.then(|| aligned_zeros(ndarray::Ix3(steps, batch, u)));
        let per_gate = |on: bool| {
            (0..if on { blocks } else { 0 })
                .map(|_| aligned_zeros(ndarray::Ix3(steps, batch, u)))
                .collect()
        };
        Stores {
            pre: per_gate(record.pre),
            gates: per_gate(record.gates),
            h: z(record.states),
            c: z(record.states && lstm),
            out: z(record.states && masking),
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
        /// Each gate's lane views, regrouped per lane.
        fn per_lane<'a, A>(
            arrays: &'a mut [Array3<A>],
            chunks: &[Range<usize>],
        ) -> std::vec::IntoIter<Vec<ArrayViewMut3<'a, A>>> {
            let mut lanes: Vec<Vec<ArrayViewMut3<'a, A>>> =
                chunks.iter().map(|_| Vec::new()).collect();
            for a in arrays.iter_mut() {
                for (lane, v) in lanes.iter_mut().zip(split(Some(a), chunks)) {
                    lane.extend(v);
                }
            }
            lanes.into_iter()
        }
        let mut pre = per_lane(&mut self.pre, chunks);
        let mut gates = per_lane(&mut self.gates, chunks);
        let mut h = split(self.h.as_mut(), chunks).into_iter();
        let mut c = split(self.c.as_mut(), chunks).into_iter();
        let mut out = split(self.out.as_mut(), chunks).into_iter();
        masked
            .into_iter()
            .map(|m| LaneViews {
                pre: pre.next().unwrap_or_default(),
                gates: gates.next().unwrap_or_default(),
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
    pre: Vec<ArrayViewMut3<'a, T>>,
    gates: Vec<ArrayViewMut3<'a, T>>,
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
    /// The packed weights when the fused kernels run (float32 only).
    packed: Option<&'a Packed>,
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
        // The projection and gate buffers serve the portable path only.
        let (steps, gu) = match ctx.packed {
            None => (PROJECT_STEPS.min(ctx.input_index.len()).max(1), gu),
            Some(_) => (0, 0),
        };
        Lane {
            rows,
            h: aligned_copy(h0),
            c: match c0 {
                Some(c) => aligned_copy(c),
                None => aligned_zeros(ndarray::Ix2(n, u)),
            },
            out: Array2::zeros((n, u)),
            h_next: aligned_zeros(ndarray::Ix2(n, u)),
            c_next: aligned_zeros(ndarray::Ix2(n, u)),
            gates: Array2::zeros((n, gu)),
            scratch: Array2::zeros((n, gu)),
            xin: Array2::zeros((steps * n, ctx.w.features)),
            xp: Array2::zeros((steps * n, gu)),
        }
    }

    /// Runs processing steps `t0..t1`, recording into `v` (whose step 0 is `t0`).
    fn advance(&mut self, ctx: &Ctx<'_, T>, t0: usize, t1: usize, v: LaneViews<'_, T>) {
        match ctx.packed {
            Some(packed) => self.advance_fused(ctx, packed, t0, t1, v),
            None => self.advance_portable(ctx, t0, t1, v),
        }
        if ctx.mask.is_none() {
            self.out.assign(&self.h);
        }
    }

    /// The portable path: `gemm` products and the cells of [`crate::cell`], any type and activation.
    fn advance_portable(
        &mut self,
        ctx: &Ctx<'_, T>,
        t0: usize,
        t1: usize,
        mut v: LaneViews<'_, T>,
    ) {
        let n = self.rows.len();
        let w = ctx.w;
        let u = w.units;
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
                // The step turns the input projection into the pre-activations in place.
                let out = StepOut {
                    pre: self.xp.slice_mut(s![s_ * n..(s_ + 1) * n, ..]),
                    gates: self.gates.view_mut(),
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
                // One array per gate in the trace.
                let pre = self.xp.slice(s![s_ * n..(s_ + 1) * n, ..]);
                for (g, dst) in v.pre.iter_mut().enumerate() {
                    dst.index_axis_mut(Axis(0), k)
                        .assign(&pre.slice(s![.., g * u..(g + 1) * u]));
                }
                for (g, dst) in v.gates.iter_mut().enumerate() {
                    dst.index_axis_mut(Axis(0), k)
                        .assign(&self.gates.slice(s![.., g * u..(g + 1) * u]));
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
                    ov.index_axis_mut(Axis(0), k).assign(&self.out);
                }
            }
            t += sn;
        }
    }

    /// The fused path (float32 only: `ctx.packed` exists only then): each step writes its gates and states
    /// straight into the trace's arrays, or into the lane's two state buffers in turn when states are not
    /// recorded, and reads the previous state where the step before wrote it.
    fn advance_fused(
        &mut self,
        ctx: &Ctx<'_, T>,
        packed: &Packed,
        t0: usize,
        t1: usize,
        mut v: LaneViews<'_, T>,
    ) {
        assert!(
            std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>(),
            "fused kernels run on f32 only"
        );
        let n = self.rows.len();
        if n == 0 {
            return;
        }
        let u = ctx.w.units;
        let (_, steps, features) = ctx.x.dim();
        let x_stride = steps * features;
        let f32p = |p: *const T| p as *const f32;
        let f32m = |p: *mut T| p as *mut f32;
        // `self.h`/`self.c` hold the state at `t0`; a state that is not recorded alternates between them and
        // `h_next`/`c_next` (`flip_*`: the previous state is in the `_next` buffer).
        let (mut flip_h, mut flip_c) = (false, false);
        let mut h_prev = f32p(self.h.as_ptr());
        let mut c_prev = f32p(self.c.as_ptr());
        for t in t0..t1 {
            let k = t - t0;
            let ti = ctx.input_index[t];
            let h_spare = if flip_h {
                &mut self.h
            } else {
                &mut self.h_next
            }
            .as_mut_ptr();
            let c_spare = if flip_c {
                &mut self.c
            } else {
                &mut self.c_next
            }
            .as_mut_ptr();
            let slot = |a: &mut Option<ArrayViewMut3<'_, T>>, spare: *mut T| match a {
                Some(a) => a.index_axis_mut(Axis(0), k).as_mut_ptr(),
                None => spare,
            };
            let h_new = f32m(slot(&mut v.h, h_spare));
            let c_new = f32m(slot(&mut v.c, c_spare));
            let per_gate = |a: &mut Vec<ArrayViewMut3<'_, T>>| {
                let mut p = [std::ptr::null_mut::<f32>(); 4];
                for (g, a) in a.iter_mut().enumerate() {
                    p[g] = f32m(a.index_axis_mut(Axis(0), k).as_mut_ptr());
                }
                p
            };
            let ptrs = fused::StepPtrs {
                rows: n,
                // SAFETY: `b < batch` and `ti < steps`, so the offset is inside `x`.
                x: f32p(unsafe {
                    ctx.x
                        .as_ptr()
                        .add((self.rows.start * steps + ti) * features)
                }),
                x_stride,
                h_prev,
                c_prev,
                h_new,
                c_new,
                gates: per_gate(&mut v.gates),
                pre: per_gate(&mut v.pre),
            };
            // SAFETY: a `Packed` exists only for an instruction set this CPU has (AVX-512F, or AVX2 and
            // FMA), and here only when T is f32 (checked above); its features and units are the weights'
            // (and `run_layer_using` checked the input and states against them); `x` is in standard
            // layout (`run_layer_using` makes it so); every state, gate and pre-activation pointer
            // addresses this lane's n × u contiguous rows of a distinct buffer or trace slot.
            unsafe { fused::step(packed, &ptrs) };
            if let Some(m) = ctx.mask {
                // SAFETY: as above; the slices cover the n × u values of distinct buffers.
                let (hn, cn, hp, cp) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(h_new, n * u),
                        std::slice::from_raw_parts_mut(c_new, n * u),
                        std::slice::from_raw_parts(h_prev, n * u),
                        std::slice::from_raw_parts(c_prev, n * u),
                    )
                };
                let lstm = ctx.w.kind.has_cell_state();
                for (r, b) in self.rows.clone().enumerate() {
                    let row = r * u..(r + 1) * u;
                    if m[[b, ti]] {
                        let out = self.out.row_mut(r).into_slice().expect("contiguous rows");
                        // SAFETY: T is f32 (checked above).
                        let out: &mut [f32] = unsafe {
                            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut f32, u)
                        };
                        out.copy_from_slice(&hn[row]);
                    } else {
                        hn[row.clone()].copy_from_slice(&hp[row.clone()]);
                        if lstm {
                            cn[row.clone()].copy_from_slice(&cp[row]);
                        }
                        v.masked[[k, r]] = true;
                    }
                }
                if let Some(ov) = v.out.as_mut() {
                    ov.index_axis_mut(Axis(0), k).assign(&self.out);
                }
            }
            h_prev = h_new;
            c_prev = c_new;
            flip_h ^= v.h.is_none();
            flip_c ^= v.c.is_none();
        }
        // The state at `t1` back into `self.h`/`self.c`: from the last trace slot when recorded, else from
        // the buffer the last step wrote (`flip_*`: the `_next` one).
        if t1 > t0 {
            let last = t1 - t0 - 1;
            match &v.h {
                Some(hv) => self.h.assign(&hv.index_axis(Axis(0), last)),
                None if flip_h => std::mem::swap(&mut self.h, &mut self.h_next),
                None => {}
            }
            match &v.c {
                Some(cv) => self.c.assign(&cv.index_axis(Axis(0), last)),
                None if flip_c => std::mem::swap(&mut self.c, &mut self.c_next),
                None => {}
            }
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
    let (batch, steps, features) = input.x.dim();
    let u = weights.units;
    let blocks = weights.kind.blocks();
    // Callers validate shapes (the loaders and `config` do); these checks keep a library caller's mistake a
    // panic, never an out-of-bounds read by the fused kernels.
    assert_eq!(features, weights.features, "input features vs weights");
    for (what, s) in [("h0", input.h0.as_ref()), ("c0", input.c0.as_ref())] {
        if let Some(s) = s {
            assert_eq!(s.dim(), (batch, u), "{what} shape vs (sequences, units)");
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
    let mut stores = Stores::new(chunk, batch, blocks, u, lstm, masking, record);
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
                stores = Stores::new(t1 - t0, batch, blocks, u, lstm, masking, record);
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
    Ok(LayerTrace {
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
        pre: (keep && record.pre).then(|| interleave(&stores.pre)),
        gates: (keep && record.gates).then(|| interleave(&stores.gates)),
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
    })
}

/// The fused kernels' packing of `w`, when they can run it (float32, default activations, a CPU with
/// the instruction set, allowed by `allowed`).
fn packed_for<T: Real>(w: &CellWeights<T>, spec: &LayerSpec, allowed: Kernels) -> Option<Packed> {
    let w32 = (w as &dyn std::any::Any).downcast_ref::<CellWeights<f32>>()?;
    Packed::new(w32, spec.activation, spec.recurrent_activation, allowed)
}

/// A zeroed standard-layout array whose first element is 64-byte aligned (a cache line, and an AVX-512
/// vector): the fused kernels store whole vectors per row, and a misaligned one would split every store
/// across two cache lines. (The allocator aligns large blocks to 16 bytes only.)
fn aligned_zeros<T: Real, D: ndarray::Dimension>(shape: D) -> ndarray::Array<T, D> {
    let n = shape.size();
    let pad = 64 / std::mem::size_of::<T>();
    let mut flat = ndarray::Array1::<T>::zeros(n + pad);
    let skip = flat.as_ptr().align_offset(64).min(pad);
    flat.slice_collapse(s![skip..skip + n]);
    flat.into_shape_with_order(shape)
        .expect("a contiguous array of the shape's size")
}

/// `a` copied into an [`aligned_zeros`] array.
fn aligned_copy<T: Real>(a: ArrayView2<'_, T>) -> Array2<T> {
    let mut out = aligned_zeros(a.raw_dim());
    out.assign(&a);
    out
}

/// Per-gate arrays `(steps, sequences, units)` side by side as `(steps, sequences, gates·units)`, the
/// in-memory trace's layout.
fn interleave<T: Real>(per_gate: &[Array3<T>]) -> Array3<T> {
    let views: Vec<ArrayView3<'_, T>> = per_gate.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(2), &views).expect("gate arrays share their shape")
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
mod tests {
    use super::*;
    use crate::trace::Kernels;

    /// A deterministic pseudo-random value in [-scale, scale).
    fn val(i: usize, scale: f32) -> f32 {
        let x = (i as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    fn weights(kind: CellKind, f: usize, u: usize, bias: bool, seed: usize) -> CellWeights<f32> {
        let g = kind.blocks();
        let a = |r: usize, c: usize, s: usize, scale: f32| {
            Array2::from_shape_fn((r, c), |(i, j)| val(s + i * c + j, scale))
        };
        CellWeights {
            kind,
            units: u,
            features: f,
            kernel: a(f, g * u, seed, 0.5),
            recurrent_kernel: a(u, g * u, seed + 100_000, 0.5),
            bias: bias.then(|| ndarray::Array1::from_shape_fn(g * u, |i| val(seed + 7 + i, 0.3))),
            recurrent_bias: (bias && kind.has_reset_after())
                .then(|| ndarray::Array1::from_shape_fn(g * u, |i| val(seed + 9_000 + i, 0.3))),
            reset_after: true,
        }
    }

    /// Runs the fused kernels `fused` and the portable ones, returning the two traces.
    fn both(
        fused: Kernels,
        w: &CellWeights<f32>,
        spec: &LayerSpec,
        x: &Array3<f32>,
        mask: Option<&Array2<bool>>,
        h0: Option<Array2<f32>>,
        c0: Option<Array2<f32>>,
    ) -> [LayerTrace<f32>; 2] {
        [fused, Kernels::Portable].map(|kernels| {
            let input = LayerInput {
                x: x.view().into(),
                mask: mask.map(|m| m.view()),
                h0: h0.clone(),
                c0: c0.clone(),
            };
            let never = &mut |_: usize, _: &Stores<f32>| -> crate::Result<()> { Ok(()) };
            run_layer_using(w, spec, input, Record::ALL, None, never, kernels).unwrap()
        })
    }

    fn close(what: &str, a: Option<&Array3<f32>>, b: Option<&Array3<f32>>) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.shape(), b.shape(), "{what}");
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        // Both compute in float32 from the same weights; they differ in summation order and in the
        // last bits of the activations, a few 1e-7 at these magnitudes (|values| ≤ ~5).
        assert!(worst < 5e-6, "{what}: fused and portable differ by {worst}");
    }

    /// The fused AVX-512 kernels against the portable ones: partial unit panels (units not a multiple of
    /// 16), partial row tiles (batches not a multiple of 6), two lanes, masks, `go_backwards`, initial
    /// states, no bias, carried state; every recorded array must agree.
    #[test]
    fn fused_kernels_agree_with_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        let isas: Vec<Kernels> = [
            (Kernels::Avx512, std::is_x86_feature_detected!("avx512f")),
            (
                Kernels::Avx2,
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            ),
        ]
        .into_iter()
        .filter_map(|(k, has)| {
            if !has {
                eprintln!(
                    "this CPU cannot run the {} kernels: not tested here",
                    k.name()
                );
            }
            has.then_some(k)
        })
        .collect();
        #[cfg(not(target_arch = "x86_64"))]
        let isas: Vec<Kernels> = Vec::new();
        for isa in isas {
            compare_with_portable(isa);
        }
    }

    fn compare_with_portable(isa: Kernels) {
        let cases = [
            (CellKind::Lstm, 1, 1, 3, 1, true),
            (CellKind::Lstm, 13, 7, 5, 20, true),
            (CellKind::Lstm, 67, 40, 9, 33, false),
            (CellKind::Gru, 5, 6, 4, 16, true),
            (CellKind::Gru, 67, 40, 9, 37, true),
            (CellKind::Gru, 8, 3, 2, 3, false),
        ];
        for (n, &(kind, batch, steps, f, u, bias)) in cases.iter().enumerate() {
            let w = weights(kind, f, u, bias, 1000 * n);
            let x = Array3::from_shape_fn((batch, steps, f), |(b, t, k)| {
                val(50_000 + (b * steps + t) * f + k, 2.0)
            });
            let lstm = kind.has_cell_state();
            for variant in 0..4 {
                let spec = LayerSpec {
                    name: "l".into(),
                    activation: Activation::Tanh,
                    recurrent_activation: Activation::Sigmoid,
                    go_backwards: variant == 1,
                    carry_state: variant == 3,
                };
                let mask = (variant == 2)
                    .then(|| Array2::from_shape_fn((batch, steps), |(b, t)| (b + 2 * t) % 3 != 0));
                let h0 = (variant >= 1)
                    .then(|| Array2::from_shape_fn((batch, u), |(b, j)| val(b * u + j, 0.8)));
                let c0 = (variant >= 1 && lstm)
                    .then(|| Array2::from_shape_fn((batch, u), |(b, j)| val(77 + b * u + j, 1.5)));
                let [fused, portable] = both(isa, &w, &spec, &x, mask.as_ref(), h0, c0);
                let what = format!("{} case {n} variant {variant}", isa.name());
                assert_eq!(fused.kernels, isa, "{what}");
                assert_eq!(portable.kernels, Kernels::Portable, "{what}");
                close(
                    &format!("{what} pre"),
                    fused.pre.as_ref(),
                    portable.pre.as_ref(),
                );
                close(
                    &format!("{what} gates"),
                    fused.gates.as_ref(),
                    portable.gates.as_ref(),
                );
                close(&format!("{what} h"), fused.h.as_ref(), portable.h.as_ref());
                close(
                    &format!("{what} out"),
                    fused.out.as_ref(),
                    portable.out.as_ref(),
                );
                if lstm {
                    close(&format!("{what} c"), fused.c.as_ref(), portable.c.as_ref());
                }
                assert_eq!(fused.masked, portable.masked, "{what}");
                let fin = |t: &LayerTrace<f32>| {
                    Array3::from_shape_vec((1, batch, u), t.final_h.iter().copied().collect())
                        .unwrap()
                };
                close(
                    &format!("{what} final h"),
                    Some(&fin(&fused)),
                    Some(&fin(&portable)),
                );
            }
        }
    }

    /// Streaming in blocks (the `.npz` path) records the same steps as one in-memory run, for both
    /// kernels, including a last block shorter than the others. Regression: the masked flags of one block
    /// leaked into the next, which reuses the block's arrays.
    #[test]
    fn streamed_blocks_reassemble_to_the_in_memory_trace() {
        for kernels in [Kernels::Avx512, Kernels::Avx2, Kernels::Portable] {
            for kind in [CellKind::Lstm, CellKind::Gru] {
                let (batch, steps, f, u) = (40, 11, 6, 21);
                let w = weights(kind, f, u, true, 3);
                let x = Array3::from_shape_fn((batch, steps, f), |(b, t, k)| {
                    val((b * steps + t) * f + k, 2.0)
                });
                let spec = LayerSpec {
                    name: "l".into(),
                    activation: Activation::Tanh,
                    recurrent_activation: Activation::Sigmoid,
                    go_backwards: false,
                    carry_state: false,
                };
                let mask = Array2::from_shape_fn((batch, steps), |(b, t)| (b + 3 * t) % 7 != 0);
                let input = || LayerInput {
                    x: x.view().into(),
                    mask: Some(mask.view()),
                    h0: None,
                    c0: None,
                };
                let never = &mut |_: usize, _: &Stores<f32>| -> crate::Result<()> { Ok(()) };
                let whole =
                    run_layer_using(&w, &spec, input(), Record::ALL, None, never, kernels).unwrap();
                let mut gates: Vec<Array3<f32>> = Vec::new();
                let mut h: Vec<Array3<f32>> = Vec::new();
                let mut seen = Vec::new();
                let mut masked: Vec<Array2<bool>> = Vec::new();
                let mut sink = |t0: usize, s: &Stores<f32>| -> crate::Result<()> {
                    seen.push((t0, s.steps()));
                    masked.push(s.masked.clone());
                    let views: Vec<_> = s.gates.iter().map(|a| a.view()).collect();
                    gates.push(ndarray::concatenate(Axis(2), &views).unwrap());
                    h.push(s.h.clone().unwrap());
                    Ok(())
                };
                let streamed =
                    run_layer_using(&w, &spec, input(), Record::ALL, Some(4), &mut sink, kernels)
                        .unwrap();
                assert_eq!(seen, vec![(0, 4), (4, 4), (8, 3)]);
                let cat = |v: &[Array3<f32>]| {
                    let views: Vec<_> = v.iter().map(|a| a.view()).collect();
                    ndarray::concatenate(Axis(0), &views).unwrap()
                };
                assert_eq!(cat(&gates), whole.gates.unwrap(), "{kind:?} {kernels:?}");
                assert_eq!(cat(&h), whole.h.unwrap(), "{kind:?} {kernels:?}");
                let views: Vec<_> = masked.iter().map(|a| a.view()).collect();
                let masked = ndarray::concatenate(Axis(0), &views).unwrap();
                assert_eq!(masked, whole.masked, "{kind:?} {kernels:?}");
                assert_eq!(masked, mask.t().map(|&m| !m));
                assert_eq!(streamed.final_h, whole.final_h);
                // Nothing recorded: the states alternate between the lane's buffers across blocks.
                let mut ignore = |_: usize, _: &Stores<f32>| -> crate::Result<()> { Ok(()) };
                let bare = run_layer_using(
                    &w,
                    &spec,
                    input(),
                    Record::NONE,
                    Some(4),
                    &mut ignore,
                    kernels,
                )
                .unwrap();
                assert_eq!(bare.final_h, whole.final_h, "{kind:?} {kernels:?}");
                assert_eq!(bare.last_output, whole.last_output, "{kind:?} {kernels:?}");
                if let (Some(a), Some(b)) = (&bare.final_c, &whole.final_c) {
                    assert_eq!(a, b, "{kind:?} {kernels:?}");
                }
                assert!(streamed.gates.is_none() && streamed.h.is_none());
            }
        }
    }

    /// Regression (review): an input with fewer features than the weights reached the fused kernels,
    /// which read past the input's rows. It is a panic with a message now, for both kernels.
    #[test]
    #[should_panic(expected = "input features vs weights")]
    fn mismatched_input_features_panic_instead_of_reading_out_of_bounds() {
        let w = weights(CellKind::Lstm, 8, 16, true, 1);
        let x = Array3::<f32>::zeros((2, 3, 4));
        let spec = LayerSpec {
            name: "l".into(),
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            go_backwards: false,
            carry_state: false,
        };
        let input = LayerInput {
            x: x.view().into(),
            mask: None,
            h0: None,
            c0: None,
        };
        let _ = run_layer(&w, &spec, input);
    }

    /// The trace blocks and state buffers start on a cache line (a misaligned start made every vector
    /// store of the fused kernels split across two lines: recording cost 15% of the LSTM step).
    #[test]
    fn aligned_buffers_start_on_a_cache_line() {
        for shape in [(1, 1, 1), (4, 512, 128), (3, 7, 33)] {
            let a: Array3<f32> = aligned_zeros(ndarray::Ix3(shape.0, shape.1, shape.2));
            assert_eq!(a.as_ptr() as usize % 64, 0, "{shape:?}");
            assert_eq!(a.dim(), shape);
            assert!(a.is_standard_layout() && a.iter().all(|&v| v == 0.0));
            let b: Array3<f64> = aligned_zeros(ndarray::Ix3(shape.0, shape.1, shape.2));
            assert_eq!(b.as_ptr() as usize % 64, 0, "{shape:?}");
        }
        let src = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f32);
        let c = aligned_copy(src.t());
        assert_eq!(c, src.t());
        assert_eq!(c.as_ptr() as usize % 64, 0);
    }
}
