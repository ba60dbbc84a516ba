/*!
Fused AVX-512 steps for the cells as Keras builds them by default (float32, `sigmoid` gates, `tanh`
activation): the LSTM, and the GRU with `reset_after=True`.

One step is one pass over tiles of 6 sequences × 16 units. For a tile, every gate's `x·W + h·U + b` is
accumulated in registers (24 of the 32 vector registers), then the activations and the state update run
on those registers and the results (gates, pre-activations if asked, new states) are stored straight to
their destinations: one array per gate, so recording costs one store per value and no copy. The weights
are packed once per run ([`Packed`]) so that a tile's columns, for all gates, are one contiguous row of
64 floats per input feature or unit, read in order.

Compared with a matrix product followed by separate activation passes, this reads the pre-activations
from registers instead of memory, needs no input-projection buffer, and never repacks the recurrent kernel
(a general GEMM repacks its right-hand side on every call, i.e. every step).

The activations are the same Cephes formulas as [`super::kernels`], written with AVX-512 intrinsics,
with fused multiply-adds in the polynomials, `vscalefps` for the power of two, and each division replaced
by a reciprocal estimate refined by one Newton step (tested within 4 ulp of the exact functions, like the
portable ones). The state updates
follow Keras's expressions (`c = f·c + i·g`, `h = z·h + (1 − z)·h̃`) without fused multiply-adds.
The sums differ from Keras's in order only: each accumulator starts from the biases (for the GRU's z and
r, input plus recurrent bias) and adds the products feature by feature, then unit by unit, where Keras adds
the biases after its matrix products (whose own summation order is the BLAS library's). That moves the
last bit or so: the golden cases agree with Keras to 1.2e-6 either way. The engine uses these
kernels only when the CPU has AVX-512F (checked at run time) and `RNNTRACE_PORTABLE` is unset; otherwise
it runs the portable cells.
*/

// The polynomial coefficients are Cephes' published values, kept digit for digit.
#![allow(clippy::excessive_precision)]

use crate::cell::Activation;
use crate::weights::{CellKind, CellWeights};

/// Sequences per tile.
pub const MR: usize = 6;
/// Units per tile (one 512-bit vector of f32).
pub const NR: usize = 16;

/// Which fused step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedKind {
    /// LSTM, gates i, f, c, o.
    Lstm,
    /// GRU with `reset_after=True`, gates z, r, h.
    GruResetAfter,
}

impl FusedKind {
    /// Gate arrays written per step.
    pub fn gates(self) -> usize {
        match self {
            FusedKind::Lstm => 4,
            FusedKind::GruResetAfter => 3,
        }
    }
}

/// Whether the environment asks for the portable kernels (`RNNTRACE_PORTABLE` set, and not `0`).
pub fn portable_requested() -> bool {
    std::env::var_os("RNNTRACE_PORTABLE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether the fused kernels can run `w` with these activations on this CPU.
pub fn fused_kind(
    w: &CellWeights<f32>,
    activation: Activation,
    recurrent_activation: Activation,
) -> Option<FusedKind> {
    if activation != Activation::Tanh || recurrent_activation != Activation::Sigmoid {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if !std::is_x86_feature_detected!("avx512f") {
            return None;
        }
        match w.kind {
            CellKind::Lstm => Some(FusedKind::Lstm),
            CellKind::Gru if w.reset_after => Some(FusedKind::GruResetAfter),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = w;
        None
    }
}

/// Weights packed for the fused kernels.
///
/// For each panel of 16 units (the last one padded with zeros), `features + units` rows of
/// `gates × 16` floats: first the kernel's rows (one per input feature), then the recurrent kernel's (one
/// per unit), each holding the panel's 16 columns of every gate block side by side. `init` holds each
/// panel's accumulator start values (the biases): LSTM i, f, c, o; GRU z (input + recurrent bias),
/// r (the same), the candidate's input bias and its recurrent bias.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The step this packing is for.
    pub kind: FusedKind,
    /// Units.
    pub units: usize,
    /// Input features.
    pub features: usize,
    panels: usize,
    w: Vec<f32>,
    init: Vec<f32>,
}

impl Packed {
    /// Packs `w` (validated Keras-layout weights of the kind `kind` was chosen for).
    pub fn new(w: &CellWeights<f32>, kind: FusedKind) -> Packed {
        let (u, f) = (w.units, w.features);
        let g = kind.gates();
        let panels = u.div_ceil(NR);
        let row = g * NR;
        let mut data = vec![0.0f32; panels * (f + u) * row];
        let mut init = vec![0.0f32; panels * 4 * NR];
        for p in 0..panels {
            let base = p * (f + u) * row;
            for j in 0..NR {
                let unit = p * NR + j;
                if unit >= u {
                    continue;
                }
                for gate in 0..g {
                    let col = gate * u + unit;
                    for k in 0..f {
                        data[base + k * row + gate * NR + j] = w.kernel[[k, col]];
                    }
                    for k in 0..u {
                        data[base + (f + k) * row + gate * NR + j] = w.recurrent_kernel[[k, col]];
                    }
                }
                let b = |gate: usize| w.bias.as_ref().map_or(0.0, |b| b[gate * u + unit]);
                let rb = |gate: usize| {
                    w.recurrent_bias
                        .as_ref()
                        .map_or(0.0, |b| b[gate * u + unit])
                };
                let slots = match kind {
                    FusedKind::Lstm => [b(0), b(1), b(2), b(3)],
                    FusedKind::GruResetAfter => [b(0) + rb(0), b(1) + rb(1), b(2), rb(2)],
                };
                for (s, v) in slots.into_iter().enumerate() {
                    init[p * 4 * NR + s * NR + j] = v;
                }
            }
        }
        Packed {
            kind,
            units: u,
            features: f,
            panels,
            w: data,
            init,
        }
    }
}

/// Where one step of one block of sequences reads and writes. Every pointer addresses `rows` rows; state,
/// gate and pre-activation rows are `units` floats apart, input rows `x_stride` floats apart.
#[derive(Debug, Clone, Copy)]
pub struct StepPtrs {
    /// Number of sequences in the block.
    pub rows: usize,
    /// This step's input row of the block's first sequence.
    pub x: *const f32,
    /// Distance between consecutive sequences' input rows.
    pub x_stride: usize,
    /// Previous hidden state.
    pub h_prev: *const f32,
    /// Previous cell state (LSTM; ignored by GRU).
    pub c_prev: *const f32,
    /// New hidden state (must not overlap `h_prev`).
    pub h_new: *mut f32,
    /// New cell state (LSTM; must not overlap `c_prev`).
    pub c_new: *mut f32,
    /// Activated gates, one array per gate (null: not recorded). All null or all set.
    pub gates: [*mut f32; 4],
    /// Pre-activations, one array per gate (null: not recorded). All null or all set.
    pub pre: [*mut f32; 4],
}

/// Runs one step for a block of sequences.
///
/// # Safety
/// The CPU must support AVX-512F (as [`fused_kind`] checks), `packed` must be the packing of the weights
/// for this step's kind, and every pointer in `p` must be valid for the rows it addresses (`rows` rows of
/// `features` floats for `x`, of `units` floats for the others), with outputs not overlapping inputs.
pub unsafe fn step(packed: &Packed, p: &StepPtrs) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        avx512::step(packed, p)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (packed, p);
        unreachable!("fused kernels are only chosen on x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{FusedKind, MR, NR, Packed, StepPtrs};
    use std::arch::x86_64::*;

    // The intrinsics below are only reached from `step`, compiled with AVX-512F enabled; the helpers are
    // `#[inline(always)]` so they inline into it and use its target features.

    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        unsafe { _mm512_set1_ps(v) }
    }

    /// Cephes `expf` on 16 lanes: n = round(x·log2 e), r = x − n·ln 2 (in two parts, with fused
    /// multiply-adds), the same degree-5 polynomial for e^r (Horner with fused multiply-adds), and the
    /// scaling by 2^n through `vscalefps`. Inputs are clamped to [−87.3, 88] as in the portable version.
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        unsafe {
            // max/min return their second operand when either is NaN: NaN passes through.
            let x = _mm512_min_ps(splat(88.0), _mm512_max_ps(splat(-87.3), x));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(x, splat(std::f32::consts::LOG2_E)),
            );
            let r = _mm512_fnmadd_ps(n, splat(0.693_359_4), x);
            let r = _mm512_fnmadd_ps(n, splat(-2.121_944_4e-4), r);
            let mut p = splat(1.987_569_1e-4);
            for c in [
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5.000_000_1e-1,
            ] {
                p = _mm512_fmadd_ps(p, r, splat(c));
            }
            let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), splat(1.0));
            _mm512_scalef_ps(y, n)
        }
    }

    /// `1 / d` for `d ≥ 1` (or NaN): the 14-bit reciprocal estimate and one Newton step, within an ulp
    /// of the division and several times faster (divisions would dominate the step's epilogue).
    #[inline(always)]
    unsafe fn recip(d: __m512) -> __m512 {
        unsafe {
            let r = _mm512_rcp14_ps(d);
            _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, splat(1.0)), r)
        }
    }

    #[inline(always)]
    pub(super) unsafe fn sigmoid(x: __m512) -> __m512 {
        unsafe {
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
            recip(_mm512_add_ps(splat(1.0), e))
        }
    }

    #[inline(always)]
    pub(super) unsafe fn tanh(x: __m512) -> __m512 {
        unsafe {
            let ax = _mm512_abs_ps(x);
            let z = _mm512_mul_ps(x, x);
            let mut p = splat(-5.704_988_7e-3);
            for c in [
                2.063_908_9e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328_2e-1,
            ] {
                p = _mm512_fmadd_ps(p, z, splat(c));
            }
            let small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
            let e = exp(_mm512_mul_ps(splat(2.0), ax));
            let big = _mm512_fnmadd_ps(splat(2.0), recip(_mm512_add_ps(e, splat(1.0))), splat(1.0));
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
            let big = _mm512_mask_sub_ps(big, neg, _mm512_setzero_ps(), big);
            let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(ax, splat(0.625));
            _mm512_mask_blend_ps(is_small, big, small)
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn step(packed: &Packed, p: &StepPtrs) {
        let (u, f) = (packed.units, packed.features);
        let g = packed.kind.gates();
        let panel_len = (f + u) * g * NR;
        for panel in 0..packed.panels {
            let off = panel * NR;
            let mask: __mmask16 = if off + NR <= u {
                0xFFFF
            } else {
                ((1u32 << (u - off)) - 1) as __mmask16
            };
            // SAFETY (whole block): the panel's weights and initial values are inside the packing; the
            // rows passed on are inside the caller's buffers.
            unsafe {
                let w = packed.w.as_ptr().add(panel * panel_len);
                let init = packed.init.as_ptr().add(panel * 4 * NR);
                let mut r0 = 0;
                while r0 < p.rows {
                    let t = Tile {
                        w,
                        init,
                        off,
                        mask,
                        r0,
                    };
                    match (packed.kind, p.rows - r0) {
                        (FusedKind::Lstm, 6..) => lstm::<6>(packed, p, &t),
                        (FusedKind::Lstm, 5) => lstm::<5>(packed, p, &t),
                        (FusedKind::Lstm, 4) => lstm::<4>(packed, p, &t),
                        (FusedKind::Lstm, 3) => lstm::<3>(packed, p, &t),
                        (FusedKind::Lstm, 2) => lstm::<2>(packed, p, &t),
                        (FusedKind::Lstm, _) => lstm::<1>(packed, p, &t),
                        (FusedKind::GruResetAfter, 6..) => gru::<6>(packed, p, &t),
                        (FusedKind::GruResetAfter, 5) => gru::<5>(packed, p, &t),
                        (FusedKind::GruResetAfter, 4) => gru::<4>(packed, p, &t),
                        (FusedKind::GruResetAfter, 3) => gru::<3>(packed, p, &t),
                        (FusedKind::GruResetAfter, 2) => gru::<2>(packed, p, &t),
                        (FusedKind::GruResetAfter, _) => gru::<1>(packed, p, &t),
                    }
                    r0 += MR;
                }
            }
        }
    }

    /// One tile: the panel's packed weights and initial values, its first unit and lane mask, and the
    /// tile's first row.
    struct Tile {
        w: *const f32,
        init: *const f32,
        off: usize,
        mask: __mmask16,
        r0: usize,
    }

    /// Accumulates `init + x·W + h·U` for `N` rows into four accumulators per row; `S` is the number of
    /// weight slots per packed row (4 LSTM, 3 GRU), and `to` maps a slot to its accumulator for the input
    /// part (`to.0`) and the recurrent part (`to.1`).
    #[inline(always)]
    unsafe fn accumulate<const N: usize, const S: usize>(
        packed: &Packed,
        p: &StepPtrs,
        t: &Tile,
        to: ([usize; S], [usize; S]),
    ) -> [[__m512; 4]; N] {
        unsafe {
            let (u, f) = (packed.units, packed.features);
            let mut acc = [[_mm512_setzero_ps(); 4]; N];
            let init = [
                _mm512_loadu_ps(t.init),
                _mm512_loadu_ps(t.init.add(NR)),
                _mm512_loadu_ps(t.init.add(2 * NR)),
                _mm512_loadu_ps(t.init.add(3 * NR)),
            ];
            for a in acc.iter_mut() {
                *a = init;
            }
            let xr: [*const f32; N] = std::array::from_fn(|r| p.x.add((t.r0 + r) * p.x_stride));
            let hr: [*const f32; N] = std::array::from_fn(|r| p.h_prev.add((t.r0 + r) * u));
            let mut w = t.w;
            for k in 0..f {
                let ws: [__m512; S] = std::array::from_fn(|s| _mm512_loadu_ps(w.add(s * NR)));
                for r in 0..N {
                    let a = _mm512_set1_ps(*xr[r].add(k));
                    for s in 0..S {
                        acc[r][to.0[s]] = _mm512_fmadd_ps(a, ws[s], acc[r][to.0[s]]);
                    }
                }
                w = w.add(S * NR);
            }
            for k in 0..u {
                let ws: [__m512; S] = std::array::from_fn(|s| _mm512_loadu_ps(w.add(s * NR)));
                for r in 0..N {
                    let a = _mm512_set1_ps(*hr[r].add(k));
                    for s in 0..S {
                        acc[r][to.1[s]] = _mm512_fmadd_ps(a, ws[s], acc[r][to.1[s]]);
                    }
                }
                w = w.add(S * NR);
            }
            acc
        }
    }

    #[inline(always)]
    unsafe fn store(dst: *mut f32, row: usize, t: &Tile, u: usize, v: __m512) {
        unsafe { _mm512_mask_storeu_ps(dst.add(row * u + t.off), t.mask, v) }
    }

    #[inline(always)]
    unsafe fn load(src: *const f32, row: usize, t: &Tile, u: usize) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(t.mask, src.add(row * u + t.off)) }
    }

    #[inline(always)]
    unsafe fn lstm<const N: usize>(packed: &Packed, p: &StepPtrs, t: &Tile) {
        unsafe {
            let u = packed.units;
            let acc = accumulate::<N, 4>(packed, p, t, ([0, 1, 2, 3], [0, 1, 2, 3]));
            for (r, a) in acc.iter().enumerate() {
                let row = t.r0 + r;
                if !p.pre[0].is_null() {
                    for (k, v) in a.iter().enumerate() {
                        store(p.pre[k], row, t, u, *v);
                    }
                }
                let i = sigmoid(a[0]);
                let fg = sigmoid(a[1]);
                let cand = tanh(a[2]);
                let o = sigmoid(a[3]);
                let c_old = load(p.c_prev, row, t, u);
                let c = _mm512_add_ps(_mm512_mul_ps(fg, c_old), _mm512_mul_ps(i, cand));
                let h = _mm512_mul_ps(o, tanh(c));
                if !p.gates[0].is_null() {
                    for (k, v) in [i, fg, cand, o].into_iter().enumerate() {
                        store(p.gates[k], row, t, u, v);
                    }
                }
                store(p.c_new, row, t, u, c);
                store(p.h_new, row, t, u, h);
            }
        }
    }

    #[inline(always)]
    unsafe fn gru<const N: usize>(packed: &Packed, p: &StepPtrs, t: &Tile) {
        unsafe {
            let u = packed.units;
            // Accumulators: z, r, the candidate's input part, its recurrent part.
            let acc = accumulate::<N, 3>(packed, p, t, ([0, 1, 2], [0, 1, 3]));
            for (r, a) in acc.iter().enumerate() {
                let row = t.r0 + r;
                let z = sigmoid(a[0]);
                let rg = sigmoid(a[1]);
                let pre_h = _mm512_add_ps(a[2], _mm512_mul_ps(rg, a[3]));
                let cand = tanh(pre_h);
                let h_old = load(p.h_prev, row, t, u);
                let h = _mm512_add_ps(
                    _mm512_mul_ps(z, h_old),
                    _mm512_mul_ps(_mm512_sub_ps(splat(1.0), z), cand),
                );
                if !p.pre[0].is_null() {
                    for (k, v) in [a[0], a[1], pre_h].into_iter().enumerate() {
                        store(p.pre[k], row, t, u, v);
                    }
                }
                if !p.gates[0].is_null() {
                    for (k, v) in [z, rg, cand].into_iter().enumerate() {
                        store(p.gates[k], row, t, u, v);
                    }
                }
                store(p.h_new, row, t, u, h);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::avx512;
    use std::arch::x86_64::*;

    /// Largest error of a 16-lane function in units of the f32 spacing at the exact (f64) value.
    fn max_ulps(f: unsafe fn(__m512) -> __m512, exact: fn(f64) -> f64, lo: f32, hi: f32) -> f64 {
        #[target_feature(enable = "avx512f")]
        unsafe fn eval(f: unsafe fn(__m512) -> __m512, x: &[f32; 16]) -> [f32; 16] {
            let mut out = [0.0f32; 16];
            // SAFETY: AVX-512F is enabled here and checked by the caller; the arrays hold 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), f(_mm512_loadu_ps(x.as_ptr()))) };
            out
        }
        let n = 200_000;
        let mut worst = 0.0f64;
        for chunk in 0..n / 16 {
            let x: [f32; 16] =
                std::array::from_fn(|j| lo + (hi - lo) * ((chunk * 16 + j) as f32 / n as f32));
            // SAFETY: only called after checking for AVX-512F.
            let y = unsafe { eval(f, &x) };
            for (xv, yv) in x.iter().zip(y) {
                let e = exact(*xv as f64);
                let ulp = ((e as f32).abs().max(f32::MIN_POSITIVE) as f64) * f32::EPSILON as f64;
                worst = worst.max(((yv as f64) - e).abs() / ulp);
            }
        }
        worst
    }

    #[test]
    fn avx512_sigmoid_and_tanh_are_within_a_few_ulps() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: the fused kernels are not used here");
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn sig(x: __m512) -> __m512 {
            unsafe { avx512::sigmoid(x) }
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn th(x: __m512) -> __m512 {
            unsafe { avx512::tanh(x) }
        }
        let s = max_ulps(sig, |x| 1.0 / (1.0 + (-x).exp()), -30.0, 30.0);
        assert!(s < 4.0, "sigmoid max error {s} ulp");
        let t = max_ulps(th, f64::tanh, -12.0, 12.0);
        assert!(t < 4.0, "tanh max error {t} ulp");
        eprintln!("AVX-512 sigmoid {s:.2} ulp, tanh {t:.2} ulp");
    }
}
