/*!
One lane per core: a lane owns a contiguous block of sequences and runs every step of them, projecting
inputs 16 steps at a time and stepping the cell (fused or portable) into its slice of the stores.
*/

#[allow(unused_imports)]
use super::*;

/// One lane's slice of the stores.
pub(super) struct LaneViews<'a, T> {
    pub(super) pre: Vec<ArrayViewMut3<'a, T>>,
    pub(super) gates: Vec<ArrayViewMut3<'a, T>>,
    pub(super) h: Option<ArrayViewMut3<'a, T>>,
    pub(super) c: Option<ArrayViewMut3<'a, T>>,
    pub(super) out: Option<ArrayViewMut3<'a, T>>,
    pub(super) masked: ArrayViewMut2<'a, bool>,
}

/// Steps projected at once: large enough for an efficient product, small enough to stay in cache.
pub(super) const PROJECT_STEPS: usize = 16;

/// Everything that is shared, read-only, by all lanes.
pub(super) struct LaneCtx<'a, T> {
    pub(super) w: &'a CellWeights<T>,
    pub(super) spec: &'a LayerSpec,
    /// The input `(sequences, steps, features)`, features contiguous (any other strides), holding input
    /// steps from `x_t0` on: the whole input, or (a chained layer) the previous layer's current block.
    pub(super) x: ArrayView3<'a, T>,
    /// The input step `x`'s first step is.
    pub(super) x_t0: usize,
    pub(super) mask: Option<ArrayView2<'a, bool>>,
    pub(super) input_index: &'a [usize],
    /// The packed weights when the fused kernels run (float32 or float64).
    pub(super) packed: Option<&'a Packed>,
    /// The dtype policy the layer computes under (`None`: the run's own type).
    pub(super) policy: Option<DtypePolicy>,
}

/// A block of sequences advancing together, with its state and scratch buffers (allocated once).
pub(super) struct Lane<T> {
    pub(super) rows: Range<usize>,
    pub(super) h: Array2<T>,
    pub(super) c: Array2<T>,
    pub(super) out: Array2<T>,
    pub(super) h_next: Array2<T>,
    pub(super) c_next: Array2<T>,
    pub(super) gates: Array2<T>,
    pub(super) scratch: Array2<T>,
    pub(super) xin: Array2<T>,
    pub(super) xp: Array2<T>,
}

impl<T: Real> Lane<T> {
    pub(super) fn new(
        ctx: &LaneCtx<'_, T>,
        rows: Range<usize>,
        h0: ArrayView2<'_, T>,
        c0: Option<ArrayView2<'_, T>>,
    ) -> Lane<T> {
        let n = rows.len();
        let u = ctx.w.units;
        let gu = ctx.w.kind.blocks() * u;
        // The projection and gate buffers serve the portable path only; the fused path's scratch is what
        // its step asks for (the GRU with `reset_after=False`: z and r⊙h).
        let (steps, gu, scratch) = match ctx.packed {
            None => (PROJECT_STEPS.min(ctx.input_index.len()).max(1), gu, gu),
            Some(p) => (0, 0, p.scratch_cols()),
        };
        Lane {
            rows,
            h: aligned_copy(h0),
            c: match c0 {
                Some(c) => aligned_copy(c),
                None => aligned_zeros(ndarray::Ix2(n, u)),
            },
            out: Array2::zeros((n, ctx.w.h_units())),
            h_next: aligned_zeros(ndarray::Ix2(n, ctx.w.h_units())),
            c_next: aligned_zeros(ndarray::Ix2(n, u)),
            gates: Array2::zeros((n, gu)),
            scratch: aligned_zeros(ndarray::Ix2(n, scratch)),
            xin: Array2::zeros((steps * n, ctx.w.features)),
            xp: Array2::zeros((steps * n, gu)),
        }
    }

    /// Runs processing steps `t0..t1`, recording into `v` (whose step 0 is `t0`).
    pub(super) fn advance(
        &mut self,
        ctx: &LaneCtx<'_, T>,
        t0: usize,
        t1: usize,
        v: LaneViews<'_, T>,
    ) {
        match ctx.packed {
            Some(packed) => self.advance_fused(ctx, packed, t0, t1, v),
            None => self.advance_portable(ctx, t0, t1, v),
        }
        if ctx.mask.is_none() {
            self.out.assign(&self.h);
        }
    }

    /// The portable path: `gemm` products and the cells of [`crate::cell`], any type and activation.
    pub(super) fn advance_portable(
        &mut self,
        ctx: &LaneCtx<'_, T>,
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
                    let src = ctx.x.slice(s![b, ti - ctx.x_t0, ..]);
                    let mut dst = self.xin.row_mut(s_ * n + r);
                    match (src.as_slice(), dst.as_slice_mut()) {
                        (Some(a), Some(d)) => d.copy_from_slice(a),
                        _ => dst.assign(&src),
                    }
                }
            }
            let mut xp = self.xp.slice_mut(s![0..sn * n, ..]);
            match (&w.bias, ctx.policy) {
                (Some(b), None) => xp.rows_mut().into_iter().for_each(|mut row| row.assign(b)),
                // Under a policy the product is rounded alone; the cell adds the bias where Keras does.
                _ => xp.fill(T::zero()),
            }
            matmul(
                xp.view_mut(),
                self.xin.slice(s![0..sn * n, ..]),
                w.kernel.view(),
                true,
            );
            if let Some(p) = ctx.policy {
                xp.mapv_inplace(|v| p.matmul(v));
            }
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
                match (ctx.policy, w.kind) {
                    (Some(policy), _) => RoundedCell {
                        weights: w,
                        activation: ctx.spec.activation,
                        recurrent_activation: ctx.spec.recurrent_activation,
                        policy,
                    }
                    .step(self.h.view(), self.c.view(), out),
                    (None, CellKind::Lstm) => LstmCell {
                        weights: w,
                        activation: ctx.spec.activation,
                        recurrent_activation: ctx.spec.recurrent_activation,
                    }
                    .step(self.h.view(), self.c.view(), out),
                    (None, CellKind::Gru) => GruCell {
                        weights: w,
                        activation: ctx.spec.activation,
                        recurrent_activation: ctx.spec.recurrent_activation,
                    }
                    .step(self.h.view(), out),
                    (None, CellKind::SimpleRnn) => SimpleRnnCell {
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

    /// The fused path (float32 or float64: `ctx.packed` exists only then): each step writes its gates and
    /// states straight into the trace's arrays, or into the lane's two state buffers in turn when states are
    /// not recorded, and reads the previous state where the step before wrote it.
    pub(super) fn advance_fused(
        &mut self,
        ctx: &LaneCtx<'_, T>,
        packed: &Packed,
        t0: usize,
        t1: usize,
        mut v: LaneViews<'_, T>,
    ) {
        let n = self.rows.len();
        if n == 0 {
            return;
        }
        let u = ctx.w.units;
        // Rows of `x` are `x_stride` apart, steps `x_step` apart, features contiguous (`run_chain_using`
        // makes them so).
        let (x_stride, x_step) = (ctx.x.strides()[0] as usize, ctx.x.strides()[1] as usize);
        let scratch = if packed.scratch_cols() == 0 {
            std::ptr::null_mut()
        } else {
            self.scratch.as_mut_ptr()
        };
        // `self.h`/`self.c` hold the state at `t0`; a state that is not recorded alternates between them and
        // `h_next`/`c_next` (`flip_*`: the previous state is in the `_next` buffer).
        let (mut flip_h, mut flip_c) = (false, false);
        let mut h_prev = self.h.as_ptr();
        let mut c_prev = self.c.as_ptr();
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
            let h_new = slot(&mut v.h, h_spare);
            let c_new = slot(&mut v.c, c_spare);
            let per_gate = |a: &mut Vec<ArrayViewMut3<'_, T>>| {
                let mut p = [std::ptr::null_mut::<T>(); 4];
                for (g, a) in a.iter_mut().enumerate() {
                    p[g] = a.index_axis_mut(Axis(0), k).as_mut_ptr();
                }
                p
            };
            let ptrs = fused::StepPtrs {
                rows: n,
                // SAFETY: `b < batch` and `x_t0 ≤ ti < x_t0 + x's steps`, so the offset is inside `x`.
                x: unsafe {
                    ctx.x
                        .as_ptr()
                        .add(self.rows.start * x_stride + (ti - ctx.x_t0) * x_step)
                },
                x_stride,
                h_prev,
                c_prev,
                h_new,
                c_new,
                gates: per_gate(&mut v.gates),
                pre: per_gate(&mut v.pre),
                scratch,
            };
            // SAFETY: a `Packed` exists only for an instruction set this CPU has (AVX-512F, or AVX2 and
            // FMA) and for T = f32 or f64 (`step` checks it is the packing's); its features and units are
            // the weights' (and `run_layer_using` checked the input and states against them); `x` is in
            // standard layout (`run_layer_using` makes it so); every state, gate and pre-activation pointer
            // addresses this lane's n × u contiguous rows of a distinct buffer or trace slot, and the
            // scratch is the lane's own n × `scratch_cols()` buffer.
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
