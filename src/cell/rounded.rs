/*!
The LSTM, GRU and SimpleRNN steps under a float16 or bfloat16 dtype policy: Keras 3's cells (and tf-keras's,
which have the same op order) op by op, each result rounded to the compute type as TensorFlow rounds it
([`DtypePolicy`]). The op orders, measured by `fixtures/probe_float16_ops.py` (`r` rounds an elementwise
result, `m` a matrix product's sum, `σ` and `act` are [`DtypePolicy::activate`]):

- LSTM: `z = r(r(m(x·W) + m(h·U)) + b)`; `i, f, o = σ(z)`, `c̃ = act(z_c)`;
  `c' = r(r(f·c) + r(i·c̃))`; `h' = r(o · act(c'))`.
- GRU: `mx = r(m(x·W) + b_in)`; `reset_after`: `mh = r(m(h·U) + b_rec)`, `z, r = σ(r(mx + mh))`,
  `h̃ = act(r(mx_h + r(r·mh_h)))`; `reset_after=False`: `z, r = σ(r(mx + m(h·U_zr)))`,
  `h̃ = act(r(mx_h + m(r(r·h)·U_h)))`; `h' = r(r(z·h) + r(r(1 − z)·h̃))`.
- SimpleRNN: `h' = act(r(r(m(x·W) + b) + m(h·U)))` (the bias before the recurrent product).

The weights, the input and the initial states are already in the compute type (the caller rounds them
once, as Keras casts variables and inputs). On entry `out.pre` holds `m(x·W)`, without the bias; the
steps leave in it the pre-activations (`z`; GRU `r(mx + mh)` and the candidate's argument; SimpleRNN
the argument of `act`), as the float32 cells do. The projected LSTM (a PyTorch form) has no Keras policy
and is not handled here.
*/

use super::kernels::matmul;
use super::rounding::DtypePolicy;
use super::{Activation, CellKind, CellWeights, Real, StepOut};
use ndarray::{ArrayView2, ArrayViewMut2, s};

/// One cell under a dtype policy: weights (in the compute type), activations and the policy.
#[derive(Debug, Clone, Copy)]
pub struct RoundedCell<'a, T> {
    /// Validated weights, already rounded to the compute type.
    pub weights: &'a CellWeights<T>,
    /// Keras `activation`.
    pub activation: Activation,
    /// Keras `recurrent_activation` (unused by SimpleRNN).
    pub recurrent_activation: Activation,
    /// How every op rounds.
    pub policy: DtypePolicy,
}

/// `m(a·b)` into `dst` (overwritten).
fn product<T: Real>(
    p: DtypePolicy,
    mut dst: ArrayViewMut2<'_, T>,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
) {
    matmul(dst.view_mut(), a, b, false);
    dst.mapv_inplace(|v| p.matmul(v));
}

/// `dst = r(dst + add)` elementwise.
fn add_round<T: Real>(p: DtypePolicy, mut dst: ArrayViewMut2<'_, T>, add: ArrayView2<'_, T>) {
    dst.zip_mut_with(&add, |d, &a| *d = p.round(*d + a));
}

/// `dst[row] = r(dst[row] + b)` for every row.
fn add_bias<T: Real>(p: DtypePolicy, mut dst: ArrayViewMut2<'_, T>, b: &ndarray::Array1<T>) {
    for mut row in dst.rows_mut() {
        row.zip_mut_with(b, |d, &bv| *d = p.round(*d + bv));
    }
}

impl<T: Real> RoundedCell<'_, T> {
    /// Advances a block of sequences by one step (see the module documentation for what `out.pre` holds);
    /// `c` is read by the LSTM only.
    pub fn step(&self, h: ArrayView2<'_, T>, c: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        match self.weights.kind {
            CellKind::Lstm => self.lstm(h, c, out),
            CellKind::Gru => self.gru(h, out),
            CellKind::SimpleRnn => self.simple(h, out),
        }
    }

    fn activate(&self, act: Activation, src: ArrayView2<'_, T>, mut dst: ArrayViewMut2<'_, T>) {
        dst.assign(&src);
        self.policy.activate_rows(act, dst);
    }

    fn lstm(&self, h: ArrayView2<'_, T>, c: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        let (p, w, u) = (self.policy, self.weights, self.weights.units);
        let StepOut {
            mut pre,
            mut gates,
            h: mut h_new,
            c: mut c_new,
            mut scratch,
        } = out;
        product(p, scratch.view_mut(), h, w.recurrent_kernel.view());
        add_round(p, pre.view_mut(), scratch.view());
        if let Some(b) = &w.bias {
            add_bias(p, pre.view_mut(), b);
        }
        let ra = self.recurrent_activation;
        for (k, act) in [ra, ra, self.activation, ra].into_iter().enumerate() {
            let blk = s![.., k * u..(k + 1) * u];
            self.activate(act, pre.slice(blk), gates.slice_mut(blk));
        }
        let g = |k: usize| gates.slice(s![.., k * u..(k + 1) * u]);
        let (ig, fg, cg, og) = (g(0), g(1), g(2), g(3));
        ndarray::Zip::from(&mut c_new)
            .and(c)
            .and(&ig)
            .and(&fg)
            .and(&cg)
            .for_each(|cn, &co, &i, &f, &cc| *cn = p.round(p.round(f * co) + p.round(i * cc)));
        let mut ac = scratch.slice_mut(s![.., 0..u]);
        self.activate(self.activation, c_new.view(), ac.view_mut());
        ndarray::Zip::from(&mut h_new)
            .and(&og)
            .and(&ac)
            .for_each(|hn, &o, &a| *hn = p.round(o * a));
    }

    fn gru(&self, h: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        let (p, w, u) = (self.policy, self.weights, self.weights.units);
        let StepOut {
            mut pre,
            mut gates,
            h: mut h_new,
            mut scratch,
            ..
        } = out;
        let (zr, hh) = (s![.., 0..2 * u], s![.., 2 * u..3 * u]);
        if let Some(b) = &w.bias {
            add_bias(p, pre.view_mut(), b);
        }
        if w.reset_after {
            product(p, scratch.view_mut(), h, w.recurrent_kernel.view());
            if let Some(b) = &w.recurrent_bias {
                add_bias(p, scratch.view_mut(), b);
            }
            add_round(p, pre.slice_mut(zr), scratch.slice(zr));
            self.activate_zr(&pre, &mut gates, u);
            // The candidate's recurrent part r(r ⊙ mh_h), into scratch's h block.
            let mut rec = scratch.slice_mut(hh);
            rec.zip_mut_with(&gates.slice(s![.., u..2 * u]), |m, &r| *m = p.round(r * *m));
            add_round(p, pre.slice_mut(hh), scratch.slice(hh));
        } else {
            product(p, scratch.slice_mut(zr), h, w.recurrent_kernel.slice(zr));
            add_round(p, pre.slice_mut(zr), scratch.slice(zr));
            self.activate_zr(&pre, &mut gates, u);
            // scratch_h = r(r ⊙ h); then m(scratch_h · U_h) into the candidate's gate slot (overwritten
            // by the activation below).
            ndarray::Zip::from(scratch.slice_mut(hh))
                .and(gates.slice(s![.., u..2 * u]))
                .and(h)
                .for_each(|rh, &r, &hv| *rh = p.round(r * hv));
            product(
                p,
                gates.slice_mut(hh),
                scratch.slice(hh),
                w.recurrent_kernel.slice(hh),
            );
            add_round(p, pre.slice_mut(hh), gates.slice(hh));
        }
        self.activate(self.activation, pre.slice(hh), gates.slice_mut(hh));
        let one = T::one();
        ndarray::Zip::from(&mut h_new)
            .and(h)
            .and(gates.slice(s![.., 0..u]))
            .and(gates.slice(hh))
            .for_each(|hn, &ho, &z, &cand| {
                *hn = p.round(p.round(z * ho) + p.round(p.round(one - z) * cand))
            });
    }

    fn activate_zr(&self, pre: &ArrayViewMut2<'_, T>, gates: &mut ArrayViewMut2<'_, T>, u: usize) {
        for k in 0..2 {
            let blk = s![.., k * u..(k + 1) * u];
            self.activate(
                self.recurrent_activation,
                pre.slice(blk),
                gates.slice_mut(blk),
            );
        }
    }

    fn simple(&self, h: ArrayView2<'_, T>, out: StepOut<'_, T>) {
        let (p, w) = (self.policy, self.weights);
        let StepOut {
            mut pre,
            mut gates,
            h: mut h_new,
            mut scratch,
            ..
        } = out;
        if let Some(b) = &w.bias {
            add_bias(p, pre.view_mut(), b);
        }
        product(p, scratch.view_mut(), h, w.recurrent_kernel.view());
        add_round(p, pre.view_mut(), scratch.view());
        self.activate(self.activation, pre.view(), gates.view_mut());
        h_new.assign(&gates);
    }
}
