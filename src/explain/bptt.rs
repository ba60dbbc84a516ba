/*!
Exact backpropagation through time for one recurrent layer, over the forward pass the engine recorded
(pre-activations, gates and states of every step): the same equations as [`crate::cell`], differentiated.

Every step is batched over all sequences of a lane as matrix products (`dz·Uᵀ` for the previous state,
`dz·Wᵀ` for the input row the step read), lanes run in parallel like the engine's. What the trace does not
hold is recomputed: `act(c_t)` for an LSTM, and the recurrent product `h·U_h + b_h` of a `reset_after` GRU.
The gates are read per gate block ([`GateBlocks`], contiguous rows). A PyTorch `proj_size` LSTM
(`h = m·P`, `m = o ⊙ act(c)`) first takes the gradient back through the projection, `dm = dh·Pᵀ`; its
recurrent products then have the projection's width.

Masking as Keras runs it: at a masked step the state (h, c) and the output carry through unchanged, so the
gradient passes through to the previous step, nothing reaches the gates, and the input row gets zero. With
`zero_output_for_mask` the output there is a constant zero and passes nothing back.
*/

use super::derivative::backward_rows;
use crate::cell::Real;
use crate::cell::kernels::matmul;
use crate::trace::{GateBlocks, LayerTrace};
use crate::weights::{CellKind, CellWeights};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis, Zip, s};
use std::ops::Range;

/// The gradients of a scalar per sequence with respect to one layer's inputs.
#[derive(Debug, Clone)]
pub struct LayerGrad<T> {
    /// With respect to the layer's input, (sequences, timesteps, features), **input (time) order**.
    pub dx: Array3<T>,
    /// With respect to the initial hidden state, (sequences, units).
    pub dh0: Array2<T>,
    /// With respect to the initial cell state (LSTM).
    pub dc0: Option<Array2<T>>,
}

/// What flows into the layer from above.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a, T> {
    /// Gradient with respect to the output of each processing step, (steps, sequences, units), when the
    /// layer returned sequences.
    pub seq: Option<ArrayView3<'a, T>>,
    /// Gradient with respect to the last output, (sequences, units).
    pub last: Option<ArrayView2<'a, T>>,
    /// Gradient with respect to the final cell state (an LSTM's returned state `c`), (sequences, units).
    pub last_c: Option<ArrayView2<'a, T>>,
    /// Keras `zero_output_for_mask`: masked steps output zeros.
    pub zero_masked: bool,
}

/// Whether differentiating `a` needs its input (the pre-activation), not only its output: the engine then
/// records pre-activations too (they double the recorded forward pass).
pub fn needs_pre(a: crate::cell::Activation) -> bool {
    use crate::cell::Activation as A;
    !matches!(
        a,
        A::Linear | A::Sigmoid | A::Tanh | A::Softmax | A::Exponential
    )
}

/// Weight matrices in the shapes the backward products need, transposed once.
struct Prepared<T> {
    /// Wᵀ, (blocks·units, features).
    wt: Array2<T>,
    /// Uᵀ, (blocks·units, units) (GRU `reset_after=False`: only the z and r blocks are used from it).
    ut: Array2<T>,
    /// GRU: U_h, (units, units), and its bias (reset_after) for recomputing `h·U_h + b_h`.
    uh: Option<Array2<T>>,
    /// GRU `reset_after=False`: U_hᵀ.
    uht: Option<Array2<T>>,
    bh: Option<ndarray::Array1<T>>,
    /// PyTorch `proj_size`: the projection's transpose, (proj, units): `d(o ⊙ act(c)) = dh · Pᵀ`.
    pt: Option<Array2<T>>,
}

/// Backpropagates `up` through the layer whose forward pass is `tr`, with its gates (and, where a derivative
/// needs them, pre-activations) per gate block in `gb` ([`crate::engine::run_layer_blocks`] with
/// [`crate::trace::Record::ALL`]).
///
/// # Panics
/// If the gates, the needed pre-activations or the states were not recorded (a caller error).
pub fn backward<T: Real>(
    w: &CellWeights<T>,
    tr: &LayerTrace<T>,
    gb: &GateBlocks<T>,
    up: Upstream<'_, T>,
) -> LayerGrad<T> {
    let u = w.units;
    let b = tr.sequences();
    let (_, t_in, f) = tr.x.dim();
    let prepared = Prepared {
        wt: w.kernel.t().as_standard_layout().into_owned(),
        ut: w.recurrent_kernel.t().as_standard_layout().into_owned(),
        uh: (w.kind == CellKind::Gru && w.reset_after)
            .then(|| w.recurrent_kernel.slice(s![.., 2 * u..3 * u]).to_owned()),
        uht: (w.kind == CellKind::Gru && !w.reset_after).then(|| {
            w.recurrent_kernel
                .slice(s![.., 2 * u..3 * u])
                .t()
                .as_standard_layout()
                .into_owned()
        }),
        bh: w
            .recurrent_bias
            .as_ref()
            .filter(|_| w.kind == CellKind::Gru && w.reset_after)
            .map(|bb| bb.slice(s![2 * u..3 * u]).to_owned()),
        pt: w
            .projection
            .as_ref()
            .map(|p| p.t().as_standard_layout().into_owned()),
    };
    let lanes = if b * tr.steps() * u * w.kind.blocks() < 1 << 16 {
        1
    } else {
        rayon::current_num_threads().clamp(1, b.max(1))
    };
    let ranges: Vec<Range<usize>> = (0..lanes)
        .map(|i| (i * b / lanes)..((i + 1) * b / lanes))
        .collect();
    // Each lane writes its sequences' rows of `dx` in place (no per-lane copy to gather).
    let mut dx = Array3::zeros((b, t_in, f));
    let mut results: Vec<Option<LaneGrad<T>>> = ranges.iter().map(|_| None).collect();
    if lanes == 1 {
        results[0] = Some(lane(
            w,
            (tr, gb),
            &prepared,
            up,
            ranges[0].clone(),
            dx.view_mut(),
        ));
    } else {
        let mut rest = dx.view_mut();
        let mut views = Vec::with_capacity(lanes);
        for r in &ranges {
            let (head, tail) = rest.split_at(Axis(0), r.len());
            views.push(head);
            rest = tail;
        }
        rayon::scope(|sc| {
            for ((slot, r), v) in results.iter_mut().zip(&ranges).zip(views) {
                let p = &prepared;
                sc.spawn(move |_| *slot = Some(lane(w, (tr, gb), p, up, r.clone(), v)));
            }
        });
    }
    let mut dh0 = Array2::zeros((b, w.h_units()));
    let mut dc0 = (w.kind == CellKind::Lstm).then(|| Array2::zeros((b, u)));
    for (r, g) in ranges.iter().zip(results) {
        let (gh, gc) = g.expect("every lane ran");
        dh0.slice_mut(s![r.clone(), ..]).assign(&gh);
        if let (Some(d), Some(gc)) = (dc0.as_mut(), gc.as_ref()) {
            d.slice_mut(s![r.clone(), ..]).assign(gc);
        }
    }
    LayerGrad { dx, dh0, dc0 }
}

fn rows3<'a, T>(
    a: &'a Option<Array3<T>>,
    what: &str,
    t: usize,
    r: &Range<usize>,
) -> ArrayView2<'a, T> {
    a.as_ref()
        .unwrap_or_else(|| panic!("explain needs the trace's {what}"))
        .slice(s![t, r.clone(), ..])
}

/// A lane's gradients with respect to its sequences' initial hidden and cell states.
type LaneGrad<T> = (Array2<T>, Option<Array2<T>>);

/// One lane: sequences `r`, every step, last to first, writing their input gradients into `dx` (the
/// rows `r` of the layer's, zeros on entry).
fn lane<T: Real>(
    w: &CellWeights<T>,
    (tr, gb): (&LayerTrace<T>, &GateBlocks<T>),
    p: &Prepared<T>,
    up: Upstream<'_, T>,
    r: Range<usize>,
    mut dx: ArrayViewMut3<'_, T>,
) -> LaneGrad<T> {
    let n = r.len();
    let u = w.units;
    let gu = w.kind.blocks() * u;
    let steps = tr.steps();
    // The hidden state's width: `u`, or the projection's (PyTorch `proj_size`).
    let hw = w.h_units();
    let z2 = |c: usize| Array2::<T>::zeros((n, c));
    let (mut dh, mut dc, mut carry) = (z2(hw), z2(u), z2(hw));
    let (mut gout, mut new_dh, mut new_dc, mut tmp, mut act_c) =
        (z2(hw), z2(hw), z2(u), z2(u), z2(u));
    // With a projection h = m·P, m = o ⊙ act(c): the gradient reaching m.
    let mut dm = z2(if p.pt.is_some() { u } else { 0 });
    let (mut dzx, mut dzh) = (z2(gu), z2(gu));
    if let Some(l) = up.last {
        carry.assign(&l.slice(s![r.clone(), ..]));
    }
    if let Some(c) = up.last_c {
        dc.assign(&c.slice(s![r.clone(), ..]));
    }
    let masked_rec = tr.masked.nrows() == steps;
    let mut mrow = vec![false; n];
    let (zero, one) = (T::zero(), T::one());
    for t in (0..steps).rev() {
        // Gradient reaching this step's output: from above, and from later masked steps that repeated it.
        gout.assign(&carry);
        if let Some(sq) = up.seq {
            gout.zip_mut_with(&sq.slice(s![t, r.clone(), ..]), |a, &b| *a = *a + b);
        }
        let mut any = false;
        let none_masked = !masked_rec || !(0..n).any(|k| tr.masked[[t, r.start + k]]);
        if none_masked {
            mrow.fill(false);
            any = true;
            dh.zip_mut_with(&gout, |a, &b| *a = *a + b);
            carry.fill(zero);
        }
        for (k, m) in mrow.iter_mut().enumerate().filter(|_| !none_masked) {
            *m = masked_rec && tr.masked[[t, r.start + k]];
            if *m {
                if up.zero_masked {
                    carry.row_mut(k).fill(zero);
                } else {
                    carry.row_mut(k).assign(&gout.row(k));
                }
            } else {
                any = true;
                let g = gout.row(k);
                dh.row_mut(k).zip_mut_with(&g, |a, &b| *a = *a + b);
                carry.row_mut(k).fill(zero);
            }
        }
        if !any {
            continue; // every state passes through; no input row receives anything
        }
        // (An LSTM's backward pass does not read h: its trace may not hold it, `Record::cell_only`.)
        let h_prev = if t == 0 || w.kind == CellKind::Lstm {
            tr.h0.slice(s![r.clone(), ..])
        } else {
            rows3(&tr.h, "h", t - 1, &r)
        };
        // Gate block k's rows at this step; without recorded pre-activations (activations whose derivative
        // needs only their output) the gates stand in: the derivatives do not read them then.
        assert!(
            gb.gates.len() == w.kind.blocks(),
            "explain needs the trace's gates"
        );
        let g: Vec<ArrayView2<'_, T>> = gb
            .gates
            .iter()
            .map(|a| a.slice(s![t, r.clone(), ..]))
            .collect();
        let p_: Vec<ArrayView2<'_, T>> = if gb.pre.len() == w.kind.blocks() {
            gb.pre
                .iter()
                .map(|a| a.slice(s![t, r.clone(), ..]))
                .collect()
        } else {
            assert!(
                !needs_pre(tr.activation) && !needs_pre(tr.recurrent_activation),
                "explain needs the trace's pre-activations"
            );
            g.clone()
        };
        let elementwise =
            tr.activation.is_elementwise() && tr.recurrent_activation.is_elementwise();
        match w.kind {
            CellKind::Lstm if elementwise => {
                let ct = rows3(&tr.c, "c", t, &r);
                let c_prev = if t == 0 {
                    tr.c0
                        .as_ref()
                        .expect("LSTM trace has c0")
                        .slice(s![r.clone(), ..])
                } else {
                    rows3(&tr.c, "c", t - 1, &r)
                };
                act_c.assign(&ct);
                tr.activation.apply_rows(act_c.view_mut());
                let dmv = project_back(&mut dm, dh.view(), p.pt.as_ref());
                lstm_rows(
                    (tr.activation, tr.recurrent_activation),
                    (&p_, &g, ct, c_prev, act_c.view()),
                    (dmv, dc.view()),
                    (dzx.view_mut(), new_dc.view_mut()),
                    &mrow,
                );
                matmul(new_dh.view_mut(), dzx.view(), p.ut.view(), false);
            }
            CellKind::Lstm => {
                let ct = rows3(&tr.c, "c", t, &r);
                let c_prev = if t == 0 {
                    tr.c0
                        .as_ref()
                        .expect("LSTM trace has c0")
                        .slice(s![r.clone(), ..])
                } else {
                    rows3(&tr.c, "c", t - 1, &r)
                };
                act_c.assign(&ct);
                tr.activation.apply_rows(act_c.view_mut());
                let (gi, gf, gc, go) = (g[0], g[1], g[2], g[3]);
                let dmv = project_back(&mut dm, dh.view(), p.pt.as_ref());
                // dc_total = dc + act'(c)ᵀ (dh ⊙ o)
                Zip::from(&mut tmp)
                    .and(&dmv)
                    .and(&go)
                    .for_each(|t_, &a, &b| *t_ = a * b);
                backward_rows(tr.activation, ct, act_c.view(), tmp.view_mut());
                tmp.zip_mut_with(&dc, |a, &b| *a = *a + b);
                let (mut di, rest) = dzx.view_mut().split_at(Axis(1), u);
                let (mut df, rest) = rest.split_at(Axis(1), u);
                let (mut dcc, mut d_o) = rest.split_at(Axis(1), u);
                Zip::from(&mut di)
                    .and(&tmp)
                    .and(&gc)
                    .for_each(|d, &a, &b| *d = a * b);
                Zip::from(&mut df)
                    .and(&tmp)
                    .and(&c_prev)
                    .for_each(|d, &a, &b| *d = a * b);
                Zip::from(&mut dcc)
                    .and(&tmp)
                    .and(&gi)
                    .for_each(|d, &a, &b| *d = a * b);
                Zip::from(&mut d_o)
                    .and(&dmv)
                    .and(&act_c)
                    .for_each(|d, &a, &b| *d = a * b);
                Zip::from(&mut new_dc)
                    .and(&tmp)
                    .and(&gf)
                    .for_each(|d, &a, &b| *d = a * b);
                let ra = tr.recurrent_activation;
                backward_rows(ra, p_[0], gi, di);
                backward_rows(ra, p_[1], gf, df);
                backward_rows(tr.activation, p_[2], gc, dcc);
                backward_rows(ra, p_[3], go, d_o);
                zero_rows(dzx.view_mut(), &mrow);
                matmul(new_dh.view_mut(), dzx.view(), p.ut.view(), false);
            }
            CellKind::Gru if elementwise && w.reset_after => {
                // mh = h·U_h + b_h, recomputed first: then one fused pass per row.
                match &p.bh {
                    Some(bh) => tmp
                        .rows_mut()
                        .into_iter()
                        .for_each(|mut row| row.assign(bh)),
                    None => tmp.fill(zero),
                }
                matmul(
                    tmp.view_mut(),
                    h_prev,
                    p.uh.as_ref().expect("GRU").view(),
                    true,
                );
                gru_rows(
                    (tr.activation, tr.recurrent_activation),
                    (&p_, &g, h_prev, tmp.view(), dh.view()),
                    (dzx.view_mut(), dzh.view_mut(), new_dh.view_mut()),
                    &mrow,
                );
                matmul(new_dh.view_mut(), dzh.view(), p.ut.view(), true);
            }
            CellKind::Gru => {
                let (gz, gr, gh) = (g[0], g[1], g[2]);
                let (mut dz_z, rest) = dzx.view_mut().split_at(Axis(1), u);
                let (mut dz_r, mut dah) = rest.split_at(Axis(1), u);
                // h' = z⊙h + (1−z)⊙h̃
                Zip::from(&mut dz_z)
                    .and(&dh)
                    .and(&h_prev)
                    .and(&gh)
                    .for_each(|d, &g, &hp, &hh| *d = g * (hp - hh));
                Zip::from(&mut dah)
                    .and(&dh)
                    .and(&gz)
                    .for_each(|d, &g, &z| *d = g * (one - z));
                Zip::from(&mut new_dh)
                    .and(&dh)
                    .and(&gz)
                    .for_each(|d, &g, &z| *d = g * z);
                backward_rows(tr.activation, p_[2], gh, dah.view_mut());
                if w.reset_after {
                    // mh = h·U_h + b_h, recomputed; h̃ = act(mx_h + r⊙mh).
                    match &p.bh {
                        Some(bh) => tmp
                            .rows_mut()
                            .into_iter()
                            .for_each(|mut row| row.assign(bh)),
                        None => tmp.fill(zero),
                    }
                    matmul(
                        tmp.view_mut(),
                        h_prev,
                        p.uh.as_ref().expect("GRU").view(),
                        true,
                    );
                    Zip::from(&mut dz_r)
                        .and(&dah)
                        .and(&tmp)
                        .for_each(|d, &a, &m| *d = a * m);
                    let ra = tr.recurrent_activation;
                    backward_rows(ra, p_[0], gz, dz_z.view_mut());
                    backward_rows(ra, p_[1], gr, dz_r.view_mut());
                    // The recurrent side differs from the input side in block h: r ⊙ d(act input).
                    dzh.slice_mut(s![.., 0..2 * u])
                        .assign(&dzx.slice(s![.., 0..2 * u]));
                    Zip::from(dzh.slice_mut(s![.., 2 * u..]))
                        .and(&dzx.slice(s![.., 2 * u..]))
                        .and(&gr)
                        .for_each(|d, &a, &rv| *d = a * rv);
                    zero_rows(dzx.view_mut(), &mrow);
                    zero_rows(dzh.view_mut(), &mrow);
                    matmul(new_dh.view_mut(), dzh.view(), p.ut.view(), true);
                } else {
                    // h̃ = act(mx_h + (r⊙h)·U_h): d(r⊙h) = dah·U_hᵀ.
                    matmul(
                        tmp.view_mut(),
                        dah.view(),
                        p.uht.as_ref().expect("GRU").view(),
                        false,
                    );
                    Zip::from(&mut dz_r)
                        .and(&tmp)
                        .and(&h_prev)
                        .for_each(|d, &a, &hp| *d = a * hp);
                    Zip::from(&mut new_dh)
                        .and(&tmp)
                        .and(&gr)
                        .for_each(|d, &a, &rv| *d = *d + a * rv);
                    let ra = tr.recurrent_activation;
                    backward_rows(ra, p_[0], gz, dz_z.view_mut());
                    backward_rows(ra, p_[1], gr, dz_r.view_mut());
                    zero_rows(dzx.view_mut(), &mrow);
                    matmul(
                        new_dh.view_mut(),
                        dzx.slice(s![.., 0..2 * u]),
                        p.ut.slice(s![0..2 * u, ..]),
                        true,
                    );
                }
            }
            CellKind::SimpleRnn => {
                dzx.assign(&dh);
                backward_rows(tr.activation, p_[0], g[0], dzx.view_mut());
                zero_rows(dzx.view_mut(), &mrow);
                matmul(new_dh.view_mut(), dzx.view(), p.ut.view(), false);
            }
        }
        // Masked rows: the state passed through unchanged.
        for (k, &m) in mrow.iter().enumerate() {
            if m {
                new_dh.row_mut(k).assign(&dh.row(k));
                new_dc.row_mut(k).assign(&dc.row(k));
            }
        }
        std::mem::swap(&mut dh, &mut new_dh);
        if w.kind == CellKind::Lstm {
            std::mem::swap(&mut dc, &mut new_dc);
        }
        let ti = tr.input_index[t];
        matmul(dx.slice_mut(s![.., ti, ..]), dzx.view(), p.wt.view(), false);
    }
    (dh, (w.kind == CellKind::Lstm).then_some(dc))
}

/// The LSTM step's backward pass for elementwise activations, one fused pass per row: from `dh`, `dc`
/// (after the step) to `dz` (pre-activation gradients, masked rows zero) and `dc` before the step.
/// `pre` and `gates` are the step's rows of each gate block.
#[allow(clippy::type_complexity)]
fn lstm_rows<T: Real>(
    (act, ra): (crate::cell::Activation, crate::cell::Activation),
    (pre, gates, ct, c_prev, act_c): (
        &[ArrayView2<'_, T>],
        &[ArrayView2<'_, T>],
        ArrayView2<'_, T>,
        ArrayView2<'_, T>,
        ArrayView2<'_, T>,
    ),
    (dh, dc): (ArrayView2<'_, T>, ArrayView2<'_, T>),
    (mut dz, mut new_dc): (ArrayViewMut2<'_, T>, ArrayViewMut2<'_, T>),
    masked: &[bool],
) {
    let views: Vec<ArrayView2<'_, T>> = pre
        .iter()
        .chain(gates)
        .copied()
        .chain([ct, c_prev, act_c, dh, dc])
        .collect();
    for (k, &is_masked) in masked.iter().enumerate().take(dh.nrows()) {
        let mut dzr = dz.row_mut(k);
        let mut ndc = new_dc.row_mut(k);
        if is_masked {
            dzr.fill(T::zero());
            ndc.assign(&dc.row(k));
            continue;
        }
        let rows: Option<Vec<&[T]>> = views.iter().map(|v| row_of(*v, k)).collect();
        match (rows, dzr.as_slice_mut(), ndc.as_slice_mut()) {
            (Some(r), Some(z), Some(c)) => lstm_row((act, ra), &r, z, c),
            _ => {
                // Not contiguous (never so from the engine's traces): the same arithmetic on copies.
                let owned: Vec<Vec<T>> = views.iter().map(|v| v.row(k).to_vec()).collect();
                let mut z = dzr.to_vec();
                let mut c = ndc.to_vec();
                let r: Vec<&[T]> = owned.iter().map(|v| v.as_slice()).collect();
                lstm_row((act, ra), &r, &mut z, &mut c);
                dzr.iter_mut().zip(z).for_each(|(d, v)| *d = v);
                ndc.iter_mut().zip(c).for_each(|(d, v)| *d = v);
            }
        }
    }
}

/// The `reset_after` GRU step's backward pass for elementwise activations, one fused pass per row: from
/// `dh` (after the step) and `mh = h·U_h + b_h` to the input-side `dzx = [dz_z, dz_r, da_h]`, the
/// recurrent-side `dzh = [dz_z, dz_r, r⊙da_h]` (masked rows zero) and the direct term `dh⊙z`.
#[allow(clippy::type_complexity)]
fn gru_rows<T: Real>(
    (act, ra): (crate::cell::Activation, crate::cell::Activation),
    (pre, gates, h_prev, mh, dh): (
        &[ArrayView2<'_, T>],
        &[ArrayView2<'_, T>],
        ArrayView2<'_, T>,
        ArrayView2<'_, T>,
        ArrayView2<'_, T>,
    ),
    (mut dzx, mut dzh, mut new_dh): (
        ArrayViewMut2<'_, T>,
        ArrayViewMut2<'_, T>,
        ArrayViewMut2<'_, T>,
    ),
    masked: &[bool],
) {
    use super::derivative::derivative;
    use crate::cell::Activation as A;
    let u = dh.ncols();
    let one = T::one();
    let fast = act == A::Tanh && ra == A::Sigmoid;
    for (k, &is_masked) in masked.iter().enumerate().take(dh.nrows()) {
        if is_masked {
            dzx.row_mut(k).fill(T::zero());
            dzh.row_mut(k).fill(T::zero());
            continue;
        }
        let (p, g, hp, m, d) = (
            [pre[0].row(k), pre[1].row(k), pre[2].row(k)],
            [gates[0].row(k), gates[1].row(k), gates[2].row(k)],
            h_prev.row(k),
            mh.row(k),
            dh.row(k),
        );
        let mut zx = dzx.row_mut(k);
        let mut zh = dzh.row_mut(k);
        let mut nd = new_dh.row_mut(k);
        for j in 0..u {
            let (z, r, hh) = (g[0][j], g[1][j], g[2][j]);
            let (dz_d, dr_d, da_d) = if fast {
                (z * (one - z), r * (one - r), one - hh * hh)
            } else {
                (
                    derivative(ra, p[0][j], z),
                    derivative(ra, p[1][j], r),
                    derivative(act, p[2][j], hh),
                )
            };
            let dz = d[j] * (hp[j] - hh) * dz_d;
            let dah = d[j] * (one - z) * da_d;
            let dr = dah * m[j] * dr_d;
            zx[j] = dz;
            zx[u + j] = dr;
            zx[2 * u + j] = dah;
            zh[j] = dz;
            zh[u + j] = dr;
            zh[2 * u + j] = dah * r;
            nd[j] = d[j] * z;
        }
    }
}

/// Row `k` of a view as a slice with the view's lifetime, when contiguous.
fn row_of<T>(v: ArrayView2<'_, T>, k: usize) -> Option<&[T]> {
    v.index_axis_move(Axis(0), k).to_slice()
}

/// One row of [`lstm_rows`] on slices: `[pre i, f, c, o, gate i, f, c, o, c_t, c_prev, act(c_t), dh, dc]`.
#[inline]
fn lstm_row<T: Real>(
    (act, ra): (crate::cell::Activation, crate::cell::Activation),
    r: &[&[T]],
    dz: &mut [T],
    ndc: &mut [T],
) {
    use super::derivative::derivative;
    use crate::cell::Activation as A;
    let u = r[11].len();
    let one = T::one();
    let (gi, gf, gc, go) = (&r[4][..u], &r[5][..u], &r[6][..u], &r[7][..u]);
    let (dzi, rest) = dz.split_at_mut(u);
    let (dzf, rest) = rest.split_at_mut(u);
    let (dzc, dzo) = rest.split_at_mut(u);
    let (c, cp, a, h, d, ndc) = (
        &r[8][..u],
        &r[9][..u],
        &r[10][..u],
        &r[11][..u],
        &r[12][..u],
        &mut ndc[..u],
    );
    if act == A::Tanh && ra == A::Sigmoid {
        // Keras's defaults: derivatives from the outputs alone, a loop the compiler vectorises.
        for j in 0..u {
            let (i, f, cc, o) = (gi[j], gf[j], gc[j], go[j]);
            let dct = d[j] + h[j] * o * (one - a[j] * a[j]);
            dzi[j] = dct * cc * i * (one - i);
            dzf[j] = dct * cp[j] * f * (one - f);
            dzc[j] = dct * i * (one - cc * cc);
            dzo[j] = h[j] * a[j] * o * (one - o);
            ndc[j] = dct * f;
        }
        return;
    }
    let (pi, pf, pc, po) = (&r[0][..u], &r[1][..u], &r[2][..u], &r[3][..u]);
    for j in 0..u {
        let (i, f, cc, o) = (gi[j], gf[j], gc[j], go[j]);
        let dct = d[j] + h[j] * o * derivative(act, c[j], a[j]);
        dzi[j] = dct * cc * derivative(ra, pi[j], i);
        dzf[j] = dct * cp[j] * derivative(ra, pf[j], f);
        dzc[j] = dct * i * derivative(act, pc[j], cc);
        dzo[j] = h[j] * a[j] * derivative(ra, po[j], o);
        ndc[j] = dct * f;
    }
}

/// The gradient reaching `m = o ⊙ act(c)`: `dh` itself, or with a projection `h = m·P`, `dh·Pᵀ` (into `dm`).
fn project_back<'a, T: Real>(
    dm: &'a mut Array2<T>,
    dh: ArrayView2<'a, T>,
    pt: Option<&Array2<T>>,
) -> ArrayView2<'a, T> {
    match pt {
        None => dh,
        Some(pt) => {
            matmul(dm.view_mut(), dh, pt.view(), false);
            dm.view()
        }
    }
}

fn zero_rows<T: Real>(mut a: ArrayViewMut2<'_, T>, masked: &[bool]) {
    for (k, &m) in masked.iter().enumerate() {
        if m {
            a.row_mut(k).fill(T::zero());
        }
    }
}
