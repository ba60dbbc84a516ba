/*!
Fused steps for float32 and float64: the LSTM, the GRU (both `reset_after` variants) and the SimpleRNN, with
the activations `sigmoid`, `tanh`, `hard_sigmoid` (Keras 3's `relu6(x + 3) / 6`), `hard_sigmoid_keras2`
(`clip(0.2x + 0.5, 0, 1)`), `relu` and `linear`; written once over a small vector abstraction (`Simd`, whose
element type is `f32` or `f64`) and compiled for AVX-512 (16 f32 / 8 f64 lanes) and for AVX2 with FMA
(8 / 4 lanes), chosen at run time. Keras's defaults (`sigmoid` gates, `tanh`) are compiled as constants;
other activations are chosen per vector by a match the branch predictor settles.

One step is one pass over register tiles of `MR` sequences × one vector of units (AVX-512: 6 × 16 floats,
using 24 of the 32 vector registers for accumulators; AVX2: 2 × 8, 8 of 16). For a tile, every gate's
`x·W + h·U + b` is accumulated in registers, then the activations and the state update run on those
registers and the results (gates, pre-activations if asked, new states) are stored straight to their
destinations: one array per gate, so recording costs one store per value and no copy. The weights are
packed once per run ([`Packed`]) so that a tile's columns, for all gates, are one contiguous row per input
feature or unit, read in order.

The GRU with `reset_after=False` (Keras 2's default) needs the whole reset gate before the candidate's
recurrent product (`(r⊙h)·U_h`), so its step is two passes over the tiles: the first accumulates z and r
(`x·W + h·U + b`, two gates), stores them and `r⊙h` to a per-lane scratch, the second accumulates the
candidate's `x·W_h + b_h + (r⊙h)·U_h` and updates the state. The products are the same as one pass's.

Compared with a matrix product followed by separate activation passes, this reads the pre-activations
from registers instead of memory, needs no input-projection buffer, and never repacks the recurrent kernel
(a general GEMM repacks its right-hand side on every call, i.e. every step).

float32 activations are the same Cephes formulas as [`super::kernels`], with fused multiply-adds in the
polynomials; AVX-512 scales by 2^n with `vscalefps` and replaces each division by a reciprocal estimate
refined by one Newton step, AVX2 divides (tested within 4 ulp of the exact functions, like the portable
ones). float64 activations are written for double precision: `exp` reduces to |r| ≤ ln2/2 with a two-part
ln 2 and sums the degree-13 Taylor polynomial (truncation below 1e-17 relative), `tanh` is Cephes' rational
approximation below 0.625 and `1 − 2/(e^{2|x|} + 1)` beyond (one true division for both), `sigmoid`
divides: within 2 ulp of the correctly rounded functions (tested), like the standard library's functions
the portable f64 cells call. The state updates follow Keras's expressions (`c = f·c + i·g`,
`h = z·h + (1 − z)·h̃`) without fused multiply-adds. The sums differ from Keras's in order only: each
accumulator starts from the biases (for the GRU's z and r with `reset_after=True`, input plus recurrent
bias) and adds the products feature by feature, then unit by unit, where Keras adds the biases after its
matrix products (whose own summation order is the BLAS library's). That moves the last bit or so: the
golden cases agree with Keras to 1.2e-6 either way.
*/

// The polynomial coefficients are Cephes' published values, kept digit for digit.
#![allow(clippy::excessive_precision)]

use crate::cell::{Activation, Real};
use crate::cell::{CellKind, CellWeights, Kernels};
use std::any::TypeId;

/// Which fused step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedKind {
    /// LSTM, gates i, f, c, o.
    Lstm,
    /// GRU with `reset_after=True`, gates z, r, h.
    GruResetAfter,
    /// GRU with `reset_after=False` (reset gate before the recurrent product), gates z, r, h: two passes.
    GruResetBefore,
    /// SimpleRNN, one block: `h = act(x·W + h·U + b)`.
    Simple,
}

/// The activations the fused steps compute (see [`Activation`] for the definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Sigmoid,
    Tanh,
    HardSigmoid,
    HardSigmoidKeras2,
    Relu,
    Linear,
}

impl Act {
    fn of(a: Activation) -> Option<Act> {
        Some(match a {
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Tanh => Act::Tanh,
            Activation::HardSigmoid => Act::HardSigmoid,
            Activation::HardSigmoidKeras2 => Act::HardSigmoidKeras2,
            Activation::Relu => Act::Relu,
            Activation::Linear => Act::Linear,
            _ => return None,
        })
    }
}

/// The element type of a packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prec {
    F32,
    F64,
}

impl Prec {
    fn of<T: 'static>() -> Option<Prec> {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            Some(Prec::F32)
        } else if TypeId::of::<T>() == TypeId::of::<f64>() {
            Some(Prec::F64)
        } else {
            None
        }
    }
}

impl FusedKind {
    /// Gate arrays written per step.
    pub fn gates(self) -> usize {
        match self {
            FusedKind::Lstm => 4,
            FusedKind::GruResetAfter | FusedKind::GruResetBefore => 3,
            FusedKind::Simple => 1,
        }
    }
}

/// The fused kernels that can run `w` with these activations on this CPU, at most `allowed`
/// (`Avx512` allows both, `Avx2` only AVX2, `Portable` none): float32 or float64, no projection.
pub fn fused_kind<T: Real>(
    w: &CellWeights<T>,
    activation: Activation,
    recurrent_activation: Activation,
    allowed: Kernels,
) -> Option<(FusedKind, Kernels)> {
    Act::of(activation)?;
    Prec::of::<T>()?;
    // The fused steps know no projection: a `proj_size` LSTM runs the portable cell.
    if w.projection.is_some() {
        return None;
    }
    let kind = match w.kind {
        CellKind::Lstm => FusedKind::Lstm,
        CellKind::Gru if w.reset_after => FusedKind::GruResetAfter,
        CellKind::Gru => FusedKind::GruResetBefore,
        CellKind::SimpleRnn => FusedKind::Simple,
    };
    if kind != FusedKind::Simple {
        Act::of(recurrent_activation)?;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::is_x86_feature_detected!("avx512f");
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        match allowed {
            Kernels::Avx512 if avx512 => Some((kind, Kernels::Avx512)),
            Kernels::Avx512 | Kernels::Avx2 if avx2 => Some((kind, Kernels::Avx2)),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kind, allowed);
        None
    }
}

/// Packed values of one element type: the rows from `w[off]` (64-byte aligned, so no vector load splits a
/// cache line), and the accumulators' start values.
#[derive(Debug, Clone, Default)]
struct Data<E> {
    w: Vec<E>,
    off: usize,
    init: Vec<E>,
}

impl<E: Copy + Default> Data<E> {
    fn new(w: &[E], init: Vec<E>) -> Data<E> {
        let pad = 64 / std::mem::size_of::<E>();
        let mut data = vec![E::default(); w.len() + pad];
        let off = data.as_ptr().align_offset(64).min(pad);
        data[off..off + w.len()].copy_from_slice(w);
        Data { w: data, off, init }
    }
}

/// Weights packed for the fused kernels.
///
/// For each panel of `lanes` units (the last one padded with zeros), `features + units` rows of
/// `gates × lanes` values: first the kernel's rows (one per input feature), then the recurrent kernel's
/// (one per unit), each holding the panel's columns of every gate block side by side. (GRU with
/// `reset_after=False`: those rows for z and r, then `features + units` rows of the candidate's columns.)
/// `init` holds each panel's accumulator start values (the biases): LSTM i, f, c, o; GRU z (input +
/// recurrent bias), r (the same), the candidate's input bias and its recurrent bias.
#[derive(Debug, Clone)]
pub struct Packed {
    kind: FusedKind,
    isa: Kernels,
    prec: Prec,
    /// `activation` (candidate, cell output; SimpleRNN's only one).
    act: Act,
    /// `recurrent_activation` (gates).
    rec: Act,
    units: usize,
    features: usize,
    panels: usize,
    /// The packing when `prec` is F32 (else empty).
    d32: Data<f32>,
    /// The packing when `prec` is F64 (else empty).
    d64: Data<f64>,
}

impl Packed {
    /// Packs `w` for the fused kernels of `isa`, or `None` when they cannot run it: `isa` is not
    /// `Avx512` or `Avx2`, this CPU lacks it, or the weights, element type and activations are not a fused
    /// kind (see [`fused_kind`]). The fields are private, so a packing always matches the weights, the kind
    /// and an instruction set this CPU has.
    pub fn new<T: Real>(
        w: &CellWeights<T>,
        activation: Activation,
        recurrent_activation: Activation,
        isa: Kernels,
    ) -> Option<Packed> {
        let (kind, isa) = fused_kind(w, activation, recurrent_activation, isa)?;
        let prec = Prec::of::<T>()?;
        let mut p = Packed::build(w, kind, isa, prec);
        p.act = Act::of(activation)?;
        p.rec = Act::of(recurrent_activation).unwrap_or(Act::Sigmoid);
        Some(p)
    }

    /// Whether the activations are Keras's defaults (sigmoid gates, tanh), compiled as constants.
    fn is_default(&self) -> bool {
        (self.rec, self.act) == (Act::Sigmoid, Act::Tanh)
    }

    /// The step this packing is for.
    pub fn kind(&self) -> FusedKind {
        self.kind
    }

    /// The instruction set it runs on (`Avx512` or `Avx2`).
    pub fn isa(&self) -> Kernels {
        self.isa
    }

    /// Values per row of the scratch a step needs (see [`StepPtrs::scratch`]): `2·units` for the GRU with
    /// `reset_after=False`, else 0.
    pub fn scratch_cols(&self) -> usize {
        if self.kind == FusedKind::GruResetBefore {
            2 * self.units
        } else {
            0
        }
    }

    /// Units per panel: lanes of the instruction set's vectors of the element type.
    fn lanes(isa: Kernels, prec: Prec) -> usize {
        let f32_lanes = if isa == Kernels::Avx512 { 16 } else { 8 };
        match prec {
            Prec::F32 => f32_lanes,
            Prec::F64 => f32_lanes / 2,
        }
    }

    fn build<T: Real>(w: &CellWeights<T>, kind: FusedKind, isa: Kernels, prec: Prec) -> Packed {
        let (u, f) = (w.units, w.features);
        let g = kind.gates();
        let lanes = Packed::lanes(isa, prec);
        let panels = u.div_ceil(lanes);
        let row = g * lanes;
        let panel_len = (f + u) * row;
        // Packed in f64 (exact for f32 values; the GRU's summed biases are rounded once, as f32 addition
        // rounds them), converted to the element type at the end.
        let mut data = vec![0.0f64; panels * panel_len];
        let mut init = vec![0.0f64; panels * 4 * lanes];
        for p in 0..panels {
            let base = p * panel_len;
            for j in 0..lanes {
                let unit = p * lanes + j;
                if unit >= u {
                    continue;
                }
                for gate in 0..g {
                    let col = gate * u + unit;
                    // Where gate `gate`'s column sits: row stride and slot within the row, and the first
                    // row (the GRU with `reset_after=False` keeps its candidate in a second block of rows).
                    let (start, stride, slot) = match kind {
                        FusedKind::GruResetBefore if gate == 2 => {
                            (base + (f + u) * 2 * lanes, lanes, 0)
                        }
                        FusedKind::GruResetBefore => (base, 2 * lanes, gate),
                        _ => (base, row, gate),
                    };
                    for k in 0..f {
                        data[start + k * stride + slot * lanes + j] = w.kernel[[k, col]].to_f();
                    }
                    for k in 0..u {
                        data[start + (f + k) * stride + slot * lanes + j] =
                            w.recurrent_kernel[[k, col]].to_f();
                    }
                }
                let b = |gate: usize| w.bias.as_ref().map_or(0.0, |b| b[gate * u + unit].to_f());
                let rb = |gate: usize| {
                    w.recurrent_bias
                        .as_ref()
                        .map_or(0.0, |b| b[gate * u + unit].to_f())
                };
                let slots = match kind {
                    FusedKind::Lstm => [b(0), b(1), b(2), b(3)],
                    FusedKind::GruResetAfter => [
                        T::lit(b(0) + rb(0)).to_f(),
                        T::lit(b(1) + rb(1)).to_f(),
                        b(2),
                        rb(2),
                    ],
                    FusedKind::GruResetBefore => [b(0), b(1), b(2), 0.0],
                    FusedKind::Simple => [b(0), 0.0, 0.0, 0.0],
                };
                for (s, v) in slots.into_iter().enumerate() {
                    init[p * 4 * lanes + s * lanes + j] = v;
                }
            }
        }
        let (d32, d64) = match prec {
            Prec::F32 => {
                let w32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
                let i32_: Vec<f32> = init.iter().map(|&v| v as f32).collect();
                (Data::new(&w32, i32_), Data::default())
            }
            Prec::F64 => (Data::default(), Data::new(&data, init)),
        };
        Packed {
            kind,
            isa,
            prec,
            act: Act::Tanh,
            rec: Act::Sigmoid,
            units: u,
            features: f,
            panels,
            d32,
            d64,
        }
    }
}

/// Where one step of one block of sequences reads and writes. Every pointer addresses `rows` rows; state,
/// gate and pre-activation rows are `units` values apart, input rows `x_stride` values apart.
#[derive(Debug, Clone, Copy)]
pub struct StepPtrs<T> {
    /// Number of sequences in the block.
    pub rows: usize,
    /// This step's input row of the block's first sequence.
    pub x: *const T,
    /// Distance between consecutive sequences' input rows.
    pub x_stride: usize,
    /// Previous hidden state.
    pub h_prev: *const T,
    /// Previous cell state (LSTM; ignored by GRU).
    pub c_prev: *const T,
    /// New hidden state (must not overlap `h_prev`).
    pub h_new: *mut T,
    /// New cell state (LSTM; must not overlap `c_prev`).
    pub c_new: *mut T,
    /// Activated gates, one array per gate (null: not recorded). All null or all set.
    pub gates: [*mut T; 4],
    /// Pre-activations, one array per gate (null: not recorded). All null or all set.
    pub pre: [*mut T; 4],
    /// Scratch of `rows × Packed::scratch_cols()` values overlapping nothing else (null when that is 0).
    pub scratch: *mut T,
}

impl<T> StepPtrs<T> {
    /// The same pointers as another element type (the caller checked that `T` is `E`).
    #[cfg(target_arch = "x86_64")]
    fn cast<E>(&self) -> StepPtrs<E> {
        StepPtrs {
            rows: self.rows,
            x: self.x as *const E,
            x_stride: self.x_stride,
            h_prev: self.h_prev as *const E,
            c_prev: self.c_prev as *const E,
            h_new: self.h_new as *mut E,
            c_new: self.c_new as *mut E,
            gates: self.gates.map(|p| p as *mut E),
            pre: self.pre.map(|p| p as *mut E),
            scratch: self.scratch as *mut E,
        }
    }
}

/// Runs one step for a block of sequences.
///
/// # Safety
/// Every pointer in `p` must be valid for the rows it addresses (`rows` rows of the packing's `features`
/// values for `x`, of its `units` values for the others, of `scratch_cols()` for `scratch`), with outputs
/// not overlapping inputs. (A [`Packed`] exists only for an instruction set this CPU has; `T` must be the
/// element type it was packed for, which is checked.)
pub unsafe fn step<T: 'static>(packed: &Packed, p: &StepPtrs<T>) {
    assert!(
        Prec::of::<T>() == Some(packed.prec),
        "a step in {} on weights packed as {:?}",
        std::any::type_name::<T>(),
        packed.prec
    );
    assert!(
        packed.scratch_cols() == 0 || !p.scratch.is_null(),
        "this step needs a scratch"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller's contract; `T` is the packing's element type (checked above), so
    // the casts change no pointer's meaning; the entry point matches `packed.isa`.
    unsafe {
        match (packed.isa, packed.prec) {
            (Kernels::Avx512, Prec::F32) => x86::step_avx512::<x86::Avx512>(packed, &p.cast()),
            (Kernels::Avx512, Prec::F64) => x86::step_avx512::<x86::Avx512d>(packed, &p.cast()),
            (Kernels::Avx2, Prec::F32) => x86::step_avx2::<x86::Avx2>(packed, &p.cast()),
            (Kernels::Avx2, Prec::F64) => x86::step_avx2::<x86::Avx2d>(packed, &p.cast()),
            (Kernels::Portable, _) => {
                unreachable!("a packing is only built for a fused instruction set")
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (packed, p);
        unreachable!("fused kernels are only chosen on x86_64")
    }
}

/// The element types of the fused steps: their packed data and their activations.
#[cfg(target_arch = "x86_64")]
trait Elem: Copy + 'static {
    const ONE: Self;
    /// The packing's rows (from their aligned start) and start values in this type.
    fn data(p: &Packed) -> (*const Self, *const Self);
    /// `a` per lane.
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    unsafe fn apply<S: Simd<E = Self>>(a: Act, x: S::V) -> S::V;
}

#[cfg(target_arch = "x86_64")]
impl Elem for f32 {
    const ONE: f32 = 1.0;
    fn data(p: &Packed) -> (*const f32, *const f32) {
        (p.d32.w[p.d32.off..].as_ptr(), p.d32.init.as_ptr())
    }
    #[inline(always)]
    unsafe fn apply<S: Simd<E = f32>>(a: Act, x: S::V) -> S::V {
        // SAFETY: forwarded.
        unsafe { x86::apply32::<S>(a, x) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Elem for f64 {
    const ONE: f64 = 1.0;
    fn data(p: &Packed) -> (*const f64, *const f64) {
        (p.d64.w[p.d64.off..].as_ptr(), p.d64.init.as_ptr())
    }
    #[inline(always)]
    unsafe fn apply<S: Simd<E = f64>>(a: Act, x: S::V) -> S::V {
        // SAFETY: forwarded.
        unsafe { x86::apply64::<S>(a, x) }
    }
}

/// The vector operations the kernels need, for one instruction set and element type.
///
/// # Safety
/// Every method may only run inside a function compiled with that instruction set (the `step_*` entry
/// points), into which it is inlined; loads and stores need pointers valid for the lanes they touch.
#[cfg(target_arch = "x86_64")]
trait Simd {
    /// The element type.
    type E: Elem;
    /// Lanes per vector.
    const LANES: usize;
    /// A vector of `E`.
    type V: Copy;
    /// Which lanes a partial load or store touches.
    type M: Copy;
    unsafe fn first(n: usize) -> Self::M;
    unsafe fn splat(v: Self::E) -> Self::V;
    unsafe fn load(p: *const Self::E) -> Self::V;
    unsafe fn load_part(m: Self::M, p: *const Self::E) -> Self::V;
    unsafe fn store_part(p: *mut Self::E, m: Self::M, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`, correctly rounded.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c − a·b`.
    unsafe fn fnmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `max(lo, x)`, `min(hi, x)`: NaN in `x` passes through.
    unsafe fn max(lo: Self::V, x: Self::V) -> Self::V;
    unsafe fn min(hi: Self::V, x: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    unsafe fn round(a: Self::V) -> Self::V;
    /// `y·2^n` for integral `n` in the type's normal exponent range.
    unsafe fn scale2(y: Self::V, n: Self::V) -> Self::V;
    /// `1/d` for `d ≥ 1` (f32 AVX-512: an estimate refined to about an ulp; otherwise a division).
    unsafe fn recip(d: Self::V) -> Self::V;
    /// Per lane: `a < b ? yes : no`.
    unsafe fn lt_select(a: Self::V, b: Self::V, yes: Self::V, no: Self::V) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Act, Elem, FusedKind, Packed, Simd, StepPtrs};
    use std::arch::x86_64::*;

    /// AVX-512F: 16 lanes, mask registers.
    pub(super) struct Avx512;

    impl Simd for Avx512 {
        type E = f32;
        const LANES: usize = 16;
        type V = __m512;
        type M = __mmask16;
        #[inline(always)]
        unsafe fn first(n: usize) -> __mmask16 {
            if n >= 16 {
                0xFFFF
            } else {
                ((1u32 << n) - 1) as __mmask16
            }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m512 {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_part(m: __mmask16, p: *const f32) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f32, m: __mmask16, v: __m512) {
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn fnmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fnmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(lo: __m512, x: __m512) -> __m512 {
            // max/min return their second operand when either is NaN.
            unsafe { _mm512_max_ps(lo, x) }
        }
        #[inline(always)]
        unsafe fn min(hi: __m512, x: __m512) -> __m512 {
            unsafe { _mm512_min_ps(hi, x) }
        }
        #[inline(always)]
        unsafe fn abs(a: __m512) -> __m512 {
            unsafe { _mm512_abs_ps(a) }
        }
        #[inline(always)]
        unsafe fn round(a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        unsafe fn scale2(y: __m512, n: __m512) -> __m512 {
            unsafe { _mm512_scalef_ps(y, n) }
        }
        #[inline(always)]
        unsafe fn recip(d: __m512) -> __m512 {
            // The 14-bit estimate and one Newton step: within an ulp of the division, several times
            // faster (divisions would dominate the step's epilogue).
            unsafe {
                let r = _mm512_rcp14_ps(d);
                _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0)), r)
            }
        }
        #[inline(always)]
        unsafe fn lt_select(a: __m512, b: __m512, yes: __m512, no: __m512) -> __m512 {
            unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b), no, yes) }
        }
    }

    /// AVX2 with FMA: 8 lanes, lane masks in integer vectors.
    pub(super) struct Avx2;

    impl Simd for Avx2 {
        type E = f32;
        const LANES: usize = 8;
        type V = __m256;
        type M = __m256i;
        #[inline(always)]
        unsafe fn first(n: usize) -> __m256i {
            let n = n.min(8) as i32;
            unsafe {
                _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(n),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                )
            }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_part(m: __m256i, p: *const f32) -> __m256 {
            unsafe { _mm256_maskload_ps(p, m) }
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f32, m: __m256i, v: __m256) {
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn fnmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fnmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(lo: __m256, x: __m256) -> __m256 {
            unsafe { _mm256_max_ps(lo, x) }
        }
        #[inline(always)]
        unsafe fn min(hi: __m256, x: __m256) -> __m256 {
            unsafe { _mm256_min_ps(hi, x) }
        }
        #[inline(always)]
        unsafe fn abs(a: __m256) -> __m256 {
            unsafe { _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF))) }
        }
        #[inline(always)]
        unsafe fn round(a: __m256) -> __m256 {
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        unsafe fn scale2(y: __m256, n: __m256) -> __m256 {
            // 2^n through the exponent bits (n is integral; NaN lanes stay NaN through `y`).
            unsafe {
                let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e)))
            }
        }
        #[inline(always)]
        unsafe fn recip(d: __m256) -> __m256 {
            unsafe { _mm256_div_ps(_mm256_set1_ps(1.0), d) }
        }
        #[inline(always)]
        unsafe fn lt_select(a: __m256, b: __m256, yes: __m256, no: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(no, yes, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)) }
        }
    }

    /// Cephes `expf`: n = round(x·log2 e), r = x − n·ln 2 (in two parts, with fused multiply-adds), the
    /// degree-5 polynomial for e^r, scaled by 2^n. Inputs are clamped to [−87.3, 88] as in the portable
    /// version.
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn exp<S: Simd<E = f32>>(x: S::V) -> S::V {
        unsafe {
            let x = S::min(S::splat(88.0), S::max(S::splat(-87.3), x));
            let n = S::round(S::mul(x, S::splat(std::f32::consts::LOG2_E)));
            let r = S::fnmadd(n, S::splat(0.693_359_4), x);
            let r = S::fnmadd(n, S::splat(-2.121_944_4e-4), r);
            let mut p = S::splat(1.987_569_1e-4);
            for c in [
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5.000_000_1e-1,
            ] {
                p = S::fmadd(p, r, S::splat(c));
            }
            let y = S::add(S::fmadd(p, S::mul(r, r), r), S::splat(1.0));
            S::scale2(y, n)
        }
    }

    /// `1 / (1 + e^{−x})` per lane.
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set (the `step_*` entry points), on a CPU
    /// that has it.
    #[inline(always)]
    pub(super) unsafe fn sigmoid<S: Simd<E = f32>>(x: S::V) -> S::V {
        unsafe {
            let e = exp::<S>(S::sub(S::splat(0.0), x));
            S::recip(S::add(S::splat(1.0), e))
        }
    }

    /// Cephes' odd polynomial for |x| < 0.625, `1 − 2/(e^{2|x|} + 1)` beyond, sign restored.
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set (the `step_*` entry points), on a CPU
    /// that has it.
    #[inline(always)]
    pub(super) unsafe fn tanh<S: Simd<E = f32>>(x: S::V) -> S::V {
        unsafe {
            let ax = S::abs(x);
            let z = S::mul(x, x);
            let mut p = S::splat(-5.704_988_7e-3);
            for c in [
                2.063_908_9e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328_2e-1,
            ] {
                p = S::fmadd(p, z, S::splat(c));
            }
            let small = S::fmadd(S::mul(p, z), x, x);
            let e = exp::<S>(S::mul(S::splat(2.0), ax));
            let big = S::fnmadd(
                S::splat(2.0),
                S::recip(S::add(e, S::splat(1.0))),
                S::splat(1.0),
            );
            let big = S::lt_select(x, S::splat(0.0), S::sub(S::splat(0.0), big), big);
            S::lt_select(ax, S::splat(0.625), small, big)
        }
    }

    /// `a` per lane. Called with constants on the default path (the match folds away).
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    pub(super) unsafe fn apply32<S: Simd<E = f32>>(a: Act, x: S::V) -> S::V {
        // max/min return their second operand when either is NaN: NaN propagates as in the portable cells.
        unsafe {
            match a {
                Act::Sigmoid => sigmoid::<S>(x),
                Act::Tanh => tanh::<S>(x),
                Act::HardSigmoid => S::mul(
                    S::min(
                        S::splat(6.0),
                        S::max(S::splat(0.0), S::add(x, S::splat(3.0))),
                    ),
                    S::splat(1.0 / 6.0),
                ),
                Act::HardSigmoidKeras2 => S::min(
                    S::splat(1.0),
                    S::max(S::splat(0.0), S::fmadd(x, S::splat(0.2), S::splat(0.5))),
                ),
                Act::Relu => S::max(S::splat(0.0), x),
                Act::Linear => x,
            }
        }
    }

    /// AVX-512F, float64: 8 lanes, mask registers.
    pub(super) struct Avx512d;

    impl Simd for Avx512d {
        type E = f64;
        const LANES: usize = 8;
        type V = __m512d;
        type M = __mmask8;
        #[inline(always)]
        unsafe fn first(n: usize) -> __mmask8 {
            if n >= 8 {
                0xFF
            } else {
                ((1u32 << n) - 1) as __mmask8
            }
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> __m512d {
            unsafe { _mm512_set1_pd(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> __m512d {
            unsafe { _mm512_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn load_part(m: __mmask8, p: *const f64) -> __m512d {
            unsafe { _mm512_maskz_loadu_pd(m, p) }
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f64, m: __mmask8, v: __m512d) {
            unsafe { _mm512_mask_storeu_pd(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512d, b: __m512d) -> __m512d {
            unsafe { _mm512_add_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512d, b: __m512d) -> __m512d {
            unsafe { _mm512_sub_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512d, b: __m512d) -> __m512d {
            unsafe { _mm512_mul_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512d, b: __m512d) -> __m512d {
            unsafe { _mm512_div_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            unsafe { _mm512_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn fnmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            unsafe { _mm512_fnmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(lo: __m512d, x: __m512d) -> __m512d {
            unsafe { _mm512_max_pd(lo, x) }
        }
        #[inline(always)]
        unsafe fn min(hi: __m512d, x: __m512d) -> __m512d {
            unsafe { _mm512_min_pd(hi, x) }
        }
        #[inline(always)]
        unsafe fn abs(a: __m512d) -> __m512d {
            unsafe { _mm512_abs_pd(a) }
        }
        #[inline(always)]
        unsafe fn round(a: __m512d) -> __m512d {
            unsafe { _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        unsafe fn scale2(y: __m512d, n: __m512d) -> __m512d {
            unsafe { _mm512_scalef_pd(y, n) }
        }
        #[inline(always)]
        unsafe fn recip(d: __m512d) -> __m512d {
            unsafe { _mm512_div_pd(_mm512_set1_pd(1.0), d) }
        }
        #[inline(always)]
        unsafe fn lt_select(a: __m512d, b: __m512d, yes: __m512d, no: __m512d) -> __m512d {
            unsafe { _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(a, b), no, yes) }
        }
    }

    /// AVX2 with FMA, float64: 4 lanes, lane masks in integer vectors.
    pub(super) struct Avx2d;

    impl Simd for Avx2d {
        type E = f64;
        const LANES: usize = 4;
        type V = __m256d;
        type M = __m256i;
        #[inline(always)]
        unsafe fn first(n: usize) -> __m256i {
            let n = n.min(4) as i64;
            unsafe { _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)) }
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> __m256d {
            unsafe { _mm256_set1_pd(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> __m256d {
            unsafe { _mm256_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn load_part(m: __m256i, p: *const f64) -> __m256d {
            unsafe { _mm256_maskload_pd(p, m) }
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f64, m: __m256i, v: __m256d) {
            unsafe { _mm256_maskstore_pd(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256d, b: __m256d) -> __m256d {
            unsafe { _mm256_add_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256d, b: __m256d) -> __m256d {
            unsafe { _mm256_sub_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256d, b: __m256d) -> __m256d {
            unsafe { _mm256_mul_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256d, b: __m256d) -> __m256d {
            unsafe { _mm256_div_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            unsafe { _mm256_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn fnmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            unsafe { _mm256_fnmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(lo: __m256d, x: __m256d) -> __m256d {
            unsafe { _mm256_max_pd(lo, x) }
        }
        #[inline(always)]
        unsafe fn min(hi: __m256d, x: __m256d) -> __m256d {
            unsafe { _mm256_min_pd(hi, x) }
        }
        #[inline(always)]
        unsafe fn abs(a: __m256d) -> __m256d {
            unsafe {
                _mm256_and_pd(
                    a,
                    _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFF_FFFF_FFFF_FFFF)),
                )
            }
        }
        #[inline(always)]
        unsafe fn round(a: __m256d) -> __m256d {
            unsafe { _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        unsafe fn scale2(y: __m256d, n: __m256d) -> __m256d {
            // 2^n through the exponent bits (n is integral in [−1022, 1023]; NaN lanes stay NaN through y).
            unsafe {
                let n = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n));
                let e = _mm256_slli_epi64::<52>(_mm256_add_epi64(n, _mm256_set1_epi64x(1023)));
                _mm256_mul_pd(y, _mm256_castsi256_pd(e))
            }
        }
        #[inline(always)]
        unsafe fn recip(d: __m256d) -> __m256d {
            unsafe { _mm256_div_pd(_mm256_set1_pd(1.0), d) }
        }
        #[inline(always)]
        unsafe fn lt_select(a: __m256d, b: __m256d, yes: __m256d, no: __m256d) -> __m256d {
            unsafe { _mm256_blendv_pd(no, yes, _mm256_cmp_pd::<_CMP_LT_OQ>(a, b)) }
        }
    }

    /// `e^x` for float64: n = round(x·log2 e), r = x − n·ln 2 with Cephes' two-part ln 2 (|r| ≤ ln2/2),
    /// e^r by its Taylor polynomial to degree 13 (the next term is below 4e-18 relative), scaled by 2^n.
    /// Inputs are clamped to [−708, 709], where 2^n stays a normal double (e^−708 ≈ 3e−308 stands for the
    /// smaller results, which only ever enter `1 + e^x`).
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn exp64<S: Simd<E = f64>>(x: S::V) -> S::V {
        unsafe {
            let x = S::min(S::splat(709.0), S::max(S::splat(-708.0), x));
            let n = S::round(S::mul(x, S::splat(std::f64::consts::LOG2_E)));
            let r = S::fnmadd(n, S::splat(6.931_457_519_531_25e-1), x);
            let r = S::fnmadd(n, S::splat(1.428_606_820_309_417_232_12e-6), r);
            // 1/k! for k = 13 down to 2, then r + 1.
            let mut p = S::splat(1.0 / 6_227_020_800.0);
            for c in [
                1.0 / 479_001_600.0,
                1.0 / 39_916_800.0,
                1.0 / 3_628_800.0,
                1.0 / 362_880.0,
                1.0 / 40_320.0,
                1.0 / 5_040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
            ] {
                p = S::fmadd(p, r, S::splat(c));
            }
            let y = S::add(S::fmadd(p, S::mul(r, r), r), S::splat(1.0));
            S::scale2(y, n)
        }
    }

    /// `1 / (1 + e^{−x})` per lane, float64 (a true division).
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    pub(super) unsafe fn sigmoid64<S: Simd<E = f64>>(x: S::V) -> S::V {
        unsafe {
            let e = exp64::<S>(S::sub(S::splat(0.0), x));
            S::div(S::splat(1.0), S::add(S::splat(1.0), e))
        }
    }

    /// tanh, float64: Cephes' `x + x·z·P(z)/Q(z)` (z = x²) for |x| < 0.625, `1 − 2/(e^{2|x|} + 1)` beyond
    /// with the sign restored. Both quotients go through one division (numerator and denominator are
    /// chosen per lane first).
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    pub(super) unsafe fn tanh64<S: Simd<E = f64>>(x: S::V) -> S::V {
        unsafe {
            let ax = S::abs(x);
            let z = S::mul(x, x);
            let mut p = S::splat(-9.643_991_794_250_522_386_28e-1);
            for c in [
                -9.928_772_310_019_185_865_64e1,
                -1.614_687_684_417_084_479_52e3,
            ] {
                p = S::fmadd(p, z, S::splat(c));
            }
            let mut q = S::add(z, S::splat(1.128_116_784_916_329_314_02e2));
            for c in [
                2.235_488_390_601_004_485_83e3,
                4.844_063_053_251_254_860_48e3,
            ] {
                q = S::fmadd(q, z, S::splat(c));
            }
            let e = exp64::<S>(S::mul(S::splat(2.0), ax));
            let is_small = |yes: S::V, no: S::V| S::lt_select(ax, S::splat(0.625), yes, no);
            let num = is_small(S::mul(S::mul(x, z), p), S::splat(2.0));
            let den = is_small(q, S::add(e, S::splat(1.0)));
            let quot = S::div(num, den);
            let big = S::sub(S::splat(1.0), quot);
            let big = S::lt_select(x, S::splat(0.0), S::sub(S::splat(0.0), big), big);
            is_small(S::add(x, quot), big)
        }
    }

    /// `a` per lane, float64. Called with constants on the default path (the match folds away).
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    pub(super) unsafe fn apply64<S: Simd<E = f64>>(a: Act, x: S::V) -> S::V {
        // max/min return their second operand when either is NaN: NaN propagates as in the portable cells.
        unsafe {
            match a {
                Act::Sigmoid => sigmoid64::<S>(x),
                Act::Tanh => tanh64::<S>(x),
                Act::HardSigmoid => S::div(
                    S::min(
                        S::splat(6.0),
                        S::max(S::splat(0.0), S::add(x, S::splat(3.0))),
                    ),
                    S::splat(6.0),
                ),
                Act::HardSigmoidKeras2 => S::min(
                    S::splat(1.0),
                    S::max(
                        S::splat(0.0),
                        S::add(S::mul(S::splat(0.2), x), S::splat(0.5)),
                    ),
                ),
                Act::Relu => S::max(S::splat(0.0), x),
                Act::Linear => x,
            }
        }
    }

    /// `a` per lane in `S`'s element type.
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn apply<S: Simd>(a: Act, x: S::V) -> S::V {
        // SAFETY: forwarded.
        unsafe { <S::E as Elem>::apply::<S>(a, x) }
    }

    /// The activations a tile applies: `(recurrent_activation, activation)`; Keras's defaults as
    /// constants when `D`.
    #[inline(always)]
    fn acts<const D: bool>(packed: &Packed) -> (Act, Act) {
        if D {
            (Act::Sigmoid, Act::Tanh)
        } else {
            (packed.rec, packed.act)
        }
    }

    /// One kind of tile (one cell's step on a tile of rows), so that each kind's tile loop is its own
    /// function: all kinds in one function made its frame overflow a 2 MiB thread stack in debug builds.
    trait TileKind {
        /// Passes over the tiles per step (all tiles of pass 0, then all of pass 1, …).
        const PASSES: usize = 1;
        /// # Safety
        /// As `step`, inside a function compiled with `S`'s instruction set, on a CPU that has it.
        unsafe fn tile<S: Simd, const N: usize, const D: bool>(
            packed: &Packed,
            p: &StepPtrs<S::E>,
            t: &Tile<S>,
        );
    }

    struct LstmTile;
    struct GruTile;
    struct GruBeforeTile;
    struct SimpleTile;

    impl TileKind for LstmTile {
        #[inline(always)]
        unsafe fn tile<S: Simd, const N: usize, const D: bool>(
            packed: &Packed,
            p: &StepPtrs<S::E>,
            t: &Tile<S>,
        ) {
            // SAFETY: forwarded.
            unsafe { lstm::<S, N, D>(packed, p, t) }
        }
    }

    impl TileKind for GruTile {
        #[inline(always)]
        unsafe fn tile<S: Simd, const N: usize, const D: bool>(
            packed: &Packed,
            p: &StepPtrs<S::E>,
            t: &Tile<S>,
        ) {
            // SAFETY: forwarded.
            unsafe { gru::<S, N, D>(packed, p, t) }
        }
    }

    impl TileKind for GruBeforeTile {
        const PASSES: usize = 2;
        #[inline(always)]
        unsafe fn tile<S: Simd, const N: usize, const D: bool>(
            packed: &Packed,
            p: &StepPtrs<S::E>,
            t: &Tile<S>,
        ) {
            // SAFETY: forwarded.
            unsafe { gru_before::<S, N, D>(packed, p, t) }
        }
    }

    impl TileKind for SimpleTile {
        #[inline(always)]
        unsafe fn tile<S: Simd, const N: usize, const D: bool>(
            packed: &Packed,
            p: &StepPtrs<S::E>,
            t: &Tile<S>,
        ) {
            // SAFETY: forwarded.
            unsafe { simple::<S, N, D>(packed, p, t) }
        }
    }

    /// One kind's step compiled for AVX-512F.
    ///
    /// # Safety
    /// As `step`, on a CPU with AVX-512F, for a packing of kind `K` and element type `S::E`.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn panels_avx512<S: Simd, K: TileKind, const D: bool>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
    ) {
        // SAFETY: forwarded; AVX-512F is enabled here.
        unsafe { step_panels::<S, 6, D, K>(packed, p) }
    }

    /// One kind's step compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// As `step`, on a CPU with AVX2 and FMA, for a packing of kind `K` and element type `S::E`.
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn panels_avx2<S: Simd, K: TileKind, const D: bool>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
    ) {
        // SAFETY: forwarded; AVX2 and FMA are enabled here.
        unsafe { step_panels::<S, 2, D, K>(packed, p) }
    }

    /// `step` compiled for AVX-512F (`S`: `Avx512` or `Avx512d`).
    ///
    /// # Safety
    /// As `step`, on a CPU with AVX-512F, for a packing of element type `S::E`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn step_avx512<S: Simd>(packed: &Packed, p: &StepPtrs<S::E>) {
        // SAFETY: forwarded; AVX-512F is enabled here.
        unsafe {
            match (packed.kind, packed.is_default()) {
                (FusedKind::Lstm, true) => panels_avx512::<S, LstmTile, true>(packed, p),
                (FusedKind::Lstm, false) => panels_avx512::<S, LstmTile, false>(packed, p),
                (FusedKind::GruResetAfter, true) => panels_avx512::<S, GruTile, true>(packed, p),
                (FusedKind::GruResetAfter, false) => panels_avx512::<S, GruTile, false>(packed, p),
                (FusedKind::GruResetBefore, true) => {
                    panels_avx512::<S, GruBeforeTile, true>(packed, p)
                }
                (FusedKind::GruResetBefore, false) => {
                    panels_avx512::<S, GruBeforeTile, false>(packed, p)
                }
                (FusedKind::Simple, true) => panels_avx512::<S, SimpleTile, true>(packed, p),
                (FusedKind::Simple, false) => panels_avx512::<S, SimpleTile, false>(packed, p),
            }
        }
    }

    /// `step` compiled for AVX2 and FMA (`S`: `Avx2` or `Avx2d`).
    ///
    /// # Safety
    /// As `step`, on a CPU with AVX2 and FMA, for a packing of element type `S::E`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn step_avx2<S: Simd>(packed: &Packed, p: &StepPtrs<S::E>) {
        // SAFETY: forwarded; AVX2 and FMA are enabled here.
        unsafe {
            match (packed.kind, packed.is_default()) {
                (FusedKind::Lstm, true) => panels_avx2::<S, LstmTile, true>(packed, p),
                (FusedKind::Lstm, false) => panels_avx2::<S, LstmTile, false>(packed, p),
                (FusedKind::GruResetAfter, true) => panels_avx2::<S, GruTile, true>(packed, p),
                (FusedKind::GruResetAfter, false) => panels_avx2::<S, GruTile, false>(packed, p),
                (FusedKind::GruResetBefore, true) => {
                    panels_avx2::<S, GruBeforeTile, true>(packed, p)
                }
                (FusedKind::GruResetBefore, false) => {
                    panels_avx2::<S, GruBeforeTile, false>(packed, p)
                }
                (FusedKind::Simple, true) => panels_avx2::<S, SimpleTile, true>(packed, p),
                (FusedKind::Simple, false) => panels_avx2::<S, SimpleTile, false>(packed, p),
            }
        }
    }

    /// The step: for each pass, panels of `S::LANES` units, tiles of up to `MR` rows.
    ///
    /// # Safety
    /// As `step`: every pointer in `p` valid for the rows it addresses, outputs not overlapping
    /// inputs; and only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn step_panels<S: Simd, const MR: usize, const D: bool, K: TileKind>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
    ) {
        let (u, f) = (packed.units, packed.features);
        let lanes = S::LANES;
        assert_eq!(
            Packed::lanes(packed.isa, packed.prec),
            lanes,
            "weights packed for another instruction set"
        );
        let (w0, init0) = <S::E as Elem>::data(packed);
        let panel_len = (f + u) * packed.kind.gates() * lanes;
        for pass in 0..K::PASSES {
            for panel in 0..packed.panels {
                let off = panel * lanes;
                // SAFETY (whole block): the panel's weights and initial values are inside the packing;
                // the rows passed on are inside the caller's buffers; partial panels use lane masks.
                unsafe {
                    let t = Tile::<S> {
                        w: w0.add(panel * panel_len),
                        init: init0.add(panel * 4 * lanes),
                        off,
                        mask: S::first(u - off),
                        r0: 0,
                        pass,
                    };
                    let mut r0 = 0;
                    while r0 < p.rows {
                        let t = Tile::<S> { r0, ..t };
                        match (p.rows - r0).min(MR) {
                            6 => K::tile::<S, 6, D>(packed, p, &t),
                            5 => K::tile::<S, 5, D>(packed, p, &t),
                            4 => K::tile::<S, 4, D>(packed, p, &t),
                            3 => K::tile::<S, 3, D>(packed, p, &t),
                            2 => K::tile::<S, 2, D>(packed, p, &t),
                            _ => K::tile::<S, 1, D>(packed, p, &t),
                        }
                        r0 += MR;
                    }
                }
            }
        }
    }

    /// One tile: the panel's packed weights and initial values, its first unit and lane mask, the
    /// tile's first row, and the pass.
    struct Tile<S: Simd> {
        w: *const S::E,
        init: *const S::E,
        off: usize,
        mask: S::M,
        r0: usize,
        pass: usize,
    }

    impl<S: Simd> Clone for Tile<S> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<S: Simd> Copy for Tile<S> {}

    /// Accumulates `init + x·W + h·U` for `N` rows into four accumulators per row, reading the packed
    /// rows from `w` (`features + units` rows of `G` slots) and the recurrent input from `h` (rows
    /// `units` apart); `to` maps a slot to its accumulator for the input part (`to.0`) and the recurrent
    /// part (`to.1`).
    ///
    /// # Safety
    /// As `step`: every pointer in `p` and `h` valid for the rows it addresses, outputs not overlapping
    /// inputs; and only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn accumulate<S: Simd, const N: usize, const G: usize>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
        (t, w, h): (&Tile<S>, *const S::E, *const S::E),
        to: ([usize; G], [usize; G]),
    ) -> [[S::V; 4]; N] {
        unsafe {
            let (u, f) = (packed.units, packed.features);
            let l = S::LANES;
            let init = [
                S::load(t.init),
                S::load(t.init.add(l)),
                S::load(t.init.add(2 * l)),
                S::load(t.init.add(3 * l)),
            ];
            let mut acc = [init; N];
            let xr: [*const S::E; N] = std::array::from_fn(|r| p.x.add((t.r0 + r) * p.x_stride));
            let hr: [*const S::E; N] = std::array::from_fn(|r| h.add((t.r0 + r) * u));
            let mut w = w;
            for k in 0..f {
                let ws: [S::V; G] = std::array::from_fn(|s| S::load(w.add(s * l)));
                for r in 0..N {
                    let a = S::splat(*xr[r].add(k));
                    for s in 0..G {
                        acc[r][to.0[s]] = S::fmadd(a, ws[s], acc[r][to.0[s]]);
                    }
                }
                w = w.add(G * l);
            }
            for k in 0..u {
                let ws: [S::V; G] = std::array::from_fn(|s| S::load(w.add(s * l)));
                for r in 0..N {
                    let a = S::splat(*hr[r].add(k));
                    for s in 0..G {
                        acc[r][to.1[s]] = S::fmadd(a, ws[s], acc[r][to.1[s]]);
                    }
                }
                w = w.add(G * l);
            }
            acc
        }
    }

    /// Stores the tile's lanes of `v` at row `row` of a `u`-wide matrix.
    ///
    /// # Safety
    /// `dst` must be valid for `row + 1` rows of `u` values and `t` a tile of those columns; only inside a
    /// function compiled with `S`'s instruction set.
    #[inline(always)]
    unsafe fn store<S: Simd>(dst: *mut S::E, row: usize, t: &Tile<S>, u: usize, v: S::V) {
        unsafe { S::store_part(dst.add(row * u + t.off), t.mask, v) }
    }

    /// Loads the tile's lanes of row `row` of a `u`-wide matrix (the others are zero).
    ///
    /// # Safety
    /// `src` must be valid for `row + 1` rows of `u` values and `t` a tile of those columns; only inside a
    /// function compiled with `S`'s instruction set.
    #[inline(always)]
    unsafe fn load<S: Simd>(src: *const S::E, row: usize, t: &Tile<S>, u: usize) -> S::V {
        unsafe { S::load_part(t.mask, src.add(row * u + t.off)) }
    }

    /// One LSTM tile: gates, cell and hidden state for `N` rows.
    ///
    /// # Safety
    /// As `step`: every pointer in `p` valid for the rows it addresses, outputs not overlapping
    /// inputs; and only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn lstm<S: Simd, const N: usize, const D: bool>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
        t: &Tile<S>,
    ) {
        unsafe {
            let u = packed.units;
            let (ga, ca) = acts::<D>(packed);
            let acc =
                accumulate::<S, N, 4>(packed, p, (t, t.w, p.h_prev), ([0, 1, 2, 3], [0, 1, 2, 3]));
            for (r, a) in acc.iter().enumerate() {
                let row = t.r0 + r;
                if !p.pre[0].is_null() {
                    for (k, v) in a.iter().enumerate() {
                        store::<S>(p.pre[k], row, t, u, *v);
                    }
                }
                let i = apply::<S>(ga, a[0]);
                let fg = apply::<S>(ga, a[1]);
                let cand = apply::<S>(ca, a[2]);
                let o = apply::<S>(ga, a[3]);
                let c_old = load::<S>(p.c_prev, row, t, u);
                let c = S::add(S::mul(fg, c_old), S::mul(i, cand));
                let h = S::mul(o, apply::<S>(ca, c));
                if !p.gates[0].is_null() {
                    for (k, v) in [i, fg, cand, o].into_iter().enumerate() {
                        store::<S>(p.gates[k], row, t, u, v);
                    }
                }
                store::<S>(p.c_new, row, t, u, c);
                store::<S>(p.h_new, row, t, u, h);
            }
        }
    }

    /// One GRU (`reset_after=True`) tile: gates and hidden state for `N` rows.
    ///
    /// # Safety
    /// As `step`: every pointer in `p` valid for the rows it addresses, outputs not overlapping
    /// inputs; and only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn gru<S: Simd, const N: usize, const D: bool>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
        t: &Tile<S>,
    ) {
        unsafe {
            let u = packed.units;
            let (ga, ca) = acts::<D>(packed);
            // Accumulators: z, r, the candidate's input part, its recurrent part.
            let acc = accumulate::<S, N, 3>(packed, p, (t, t.w, p.h_prev), ([0, 1, 2], [0, 1, 3]));
            for (r, a) in acc.iter().enumerate() {
                let row = t.r0 + r;
                let z = apply::<S>(ga, a[0]);
                let rg = apply::<S>(ga, a[1]);
                let pre_h = S::add(a[2], S::mul(rg, a[3]));
                let cand = apply::<S>(ca, pre_h);
                let h_old = load::<S>(p.h_prev, row, t, u);
                let one = S::splat(<S::E as Elem>::ONE);
                let h = S::add(S::mul(z, h_old), S::mul(S::sub(one, z), cand));
                if !p.pre[0].is_null() {
                    for (k, v) in [a[0], a[1], pre_h].into_iter().enumerate() {
                        store::<S>(p.pre[k], row, t, u, v);
                    }
                }
                if !p.gates[0].is_null() {
                    for (k, v) in [z, rg, cand].into_iter().enumerate() {
                        store::<S>(p.gates[k], row, t, u, v);
                    }
                }
                store::<S>(p.h_new, row, t, u, h);
            }
        }
    }

    /// One GRU (`reset_after=False`) tile, pass `t.pass`. Pass 0: z and r for `N` rows, stored (with
    /// `r⊙h`) to the scratch, `z` in its first `rows × units` values and `r⊙h` in the next. Pass 1 (every
    /// panel's pass 0 done, so `r⊙h` is whole): the candidate from `x·W_h + b_h + (r⊙h)·U_h`, and the state.
    ///
    /// # Safety
    /// As `step`: every pointer in `p` valid for the rows it addresses, outputs not overlapping
    /// inputs, the scratch `2·units` values per row; and only inside a function compiled with `S`'s
    /// instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn gru_before<S: Simd, const N: usize, const D: bool>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
        t: &Tile<S>,
    ) {
        unsafe {
            let (u, f) = (packed.units, packed.features);
            let (ga, ca) = acts::<D>(packed);
            let z_s = p.scratch;
            let rh_s = p.scratch.add(p.rows * u);
            if t.pass == 0 {
                let acc = accumulate::<S, N, 2>(packed, p, (t, t.w, p.h_prev), ([0, 1], [0, 1]));
                for (r, a) in acc.iter().enumerate() {
                    let row = t.r0 + r;
                    let z = apply::<S>(ga, a[0]);
                    let rg = apply::<S>(ga, a[1]);
                    if !p.pre[0].is_null() {
                        store::<S>(p.pre[0], row, t, u, a[0]);
                        store::<S>(p.pre[1], row, t, u, a[1]);
                    }
                    if !p.gates[0].is_null() {
                        store::<S>(p.gates[0], row, t, u, z);
                        store::<S>(p.gates[1], row, t, u, rg);
                    }
                    let h_old = load::<S>(p.h_prev, row, t, u);
                    store::<S>(z_s, row, t, u, z);
                    store::<S>(rh_s, row, t, u, S::mul(rg, h_old));
                }
            } else {
                // The candidate's rows follow the z and r rows (2 slots each) in the panel.
                let w = t.w.add((f + u) * 2 * S::LANES);
                let acc = accumulate::<S, N, 1>(packed, p, (t, w, rh_s), ([2], [2]));
                for (r, a) in acc.iter().enumerate() {
                    let row = t.r0 + r;
                    let cand = apply::<S>(ca, a[2]);
                    let z = load::<S>(z_s, row, t, u);
                    let h_old = load::<S>(p.h_prev, row, t, u);
                    let one = S::splat(<S::E as Elem>::ONE);
                    let h = S::add(S::mul(z, h_old), S::mul(S::sub(one, z), cand));
                    if !p.pre[0].is_null() {
                        store::<S>(p.pre[2], row, t, u, a[2]);
                    }
                    if !p.gates[0].is_null() {
                        store::<S>(p.gates[2], row, t, u, cand);
                    }
                    store::<S>(p.h_new, row, t, u, h);
                }
            }
        }
    }

    /// One SimpleRNN tile: `h = act(x·W + h·U + b)` for `N` rows (its one gate is the new state).
    ///
    /// # Safety
    /// As `step`: every pointer in `p` valid for the rows it addresses, outputs not overlapping
    /// inputs; and only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn simple<S: Simd, const N: usize, const D: bool>(
        packed: &Packed,
        p: &StepPtrs<S::E>,
        t: &Tile<S>,
    ) {
        unsafe {
            let u = packed.units;
            let (_, ca) = acts::<D>(packed);
            let acc = accumulate::<S, N, 1>(packed, p, (t, t.w, p.h_prev), ([0], [0]));
            for (r, a) in acc.iter().enumerate() {
                let row = t.r0 + r;
                let h = apply::<S>(ca, a[0]);
                if !p.pre[0].is_null() {
                    store::<S>(p.pre[0], row, t, u, a[0]);
                }
                if !p.gates[0].is_null() {
                    store::<S>(p.gates[0], row, t, u, h);
                }
                store::<S>(p.h_new, row, t, u, h);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::x86::{self, Avx2, Avx512};
    use std::arch::x86_64::*;

    /// Largest error of a function on 16 values in units of the f32 spacing at the exact (f64) value.
    fn max_ulps(
        f: unsafe fn(&[f32; 16]) -> [f32; 16],
        exact: fn(f64) -> f64,
        lo: f32,
        hi: f32,
    ) -> f64 {
        let n = 200_000;
        let mut worst = 0.0f64;
        for chunk in 0..n / 16 {
            let x: [f32; 16] =
                std::array::from_fn(|j| lo + (hi - lo) * ((chunk * 16 + j) as f32 / n as f32));
            // SAFETY: only called after checking the CPU for the function's instruction set.
            let y = unsafe { f(&x) };
            for (xv, yv) in x.iter().zip(y) {
                let e = exact(*xv as f64);
                let ulp = ((e as f32).abs().max(f32::MIN_POSITIVE) as f64) * f32::EPSILON as f64;
                worst = worst.max(((yv as f64) - e).abs() / ulp);
            }
        }
        worst
    }

    /// # Safety
    /// Only on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn sig512(x: &[f32; 16]) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        // SAFETY: AVX-512F is enabled; the arrays hold 16 floats.
        unsafe {
            let v = x86::sigmoid::<Avx512>(_mm512_loadu_ps(x.as_ptr()));
            _mm512_storeu_ps(out.as_mut_ptr(), v);
        }
        out
    }

    /// # Safety
    /// Only on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn tanh512(x: &[f32; 16]) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        // SAFETY: as above.
        unsafe {
            let v = x86::tanh::<Avx512>(_mm512_loadu_ps(x.as_ptr()));
            _mm512_storeu_ps(out.as_mut_ptr(), v);
        }
        out
    }

    /// # Safety
    /// Only on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sig256(x: &[f32; 16]) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        // SAFETY: AVX2 and FMA are enabled; two halves of 8 floats.
        unsafe {
            for h in 0..2 {
                let v = x86::sigmoid::<Avx2>(_mm256_loadu_ps(x.as_ptr().add(8 * h)));
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), v);
            }
        }
        out
    }

    /// # Safety
    /// Only on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tanh256(x: &[f32; 16]) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        // SAFETY: as above.
        unsafe {
            for h in 0..2 {
                let v = x86::tanh::<Avx2>(_mm256_loadu_ps(x.as_ptr().add(8 * h)));
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), v);
            }
        }
        out
    }

    fn check(
        name: &str,
        sig: unsafe fn(&[f32; 16]) -> [f32; 16],
        th: unsafe fn(&[f32; 16]) -> [f32; 16],
    ) {
        let s = max_ulps(sig, |x| 1.0 / (1.0 + (-x).exp()), -30.0, 30.0);
        assert!(s < 4.0, "{name} sigmoid max error {s} ulp");
        let t = max_ulps(th, f64::tanh, -12.0, 12.0);
        assert!(t < 4.0, "{name} tanh max error {t} ulp");
        eprintln!("{name}: sigmoid {s:.2} ulp, tanh {t:.2} ulp");
        // Extremes and NaN, as the portable versions.
        let mut x = [0.0f32; 16];
        x[..8].copy_from_slice(&[
            0.0,
            -100.0,
            100.0,
            f32::NAN,
            -50.0,
            50.0,
            1e-30,
            f32::INFINITY,
        ]);
        // SAFETY: as above.
        let (sv, tv) = unsafe { (sig(&x), th(&x)) };
        assert_eq!(sv[0], 0.5, "{name}");
        assert!(
            sv[1] >= 0.0 && sv[1] < 1e-30 && sv[2] == 1.0 && sv[3].is_nan(),
            "{name} {sv:?}"
        );
        assert_eq!(&tv[..3], &[0.0, -1.0, 1.0], "{name}");
        assert!(tv[3].is_nan(), "{name}");
        assert_eq!(&tv[4..8], &[-1.0, 1.0, 1e-30, 1.0], "{name}");
    }

    /// Applies `S`'s float64 sigmoid (`which` 0) or tanh to 8 values.
    ///
    /// # Safety
    /// Only inside a function compiled with `S`'s instruction set, on a CPU that has it.
    #[inline(always)]
    unsafe fn f64_lanes<S: super::Simd<E = f64>>(which: usize, x: &[f64; 8]) -> [f64; 8] {
        let mut out = [0.0f64; 8];
        // SAFETY: the arrays hold 8 values; `S::LANES` divides 8.
        unsafe {
            for k in (0..8).step_by(S::LANES) {
                let v = S::load(x.as_ptr().add(k));
                let v = if which == 0 {
                    x86::sigmoid64::<S>(v)
                } else {
                    x86::tanh64::<S>(v)
                };
                S::store_part(out.as_mut_ptr().add(k), S::first(S::LANES), v);
            }
        }
        out
    }

    /// # Safety
    /// Only on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn f64_512(which: usize, x: &[f64; 8]) -> [f64; 8] {
        // SAFETY: AVX-512F is enabled.
        unsafe { f64_lanes::<x86::Avx512d>(which, x) }
    }

    /// # Safety
    /// Only on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn f64_256(which: usize, x: &[f64; 8]) -> [f64; 8] {
        // SAFETY: AVX2 and FMA are enabled.
        unsafe { f64_lanes::<x86::Avx2d>(which, x) }
    }

    /// The float64 sigmoid and tanh against the standard library's (`1/(1 + exp(−x))`, `tanh`, themselves
    /// within an ulp of the exact values): under 4 ulp apart over the range where they vary, exact at the
    /// extremes, NaN through.
    #[test]
    fn vector_f64_sigmoid_and_tanh_are_within_a_few_ulps() {
        type F = unsafe fn(usize, &[f64; 8]) -> [f64; 8];
        let mut isas: Vec<(&str, F)> = Vec::new();
        if std::is_x86_feature_detected!("avx512f") {
            isas.push(("AVX-512", f64_512));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            isas.push(("AVX2", f64_256));
        }
        for (name, f) in isas {
            for (which, exact, lo, hi) in [
                (
                    0,
                    (|x: f64| 1.0 / (1.0 + (-x).exp())) as fn(f64) -> f64,
                    -40.0,
                    40.0,
                ),
                (1, f64::tanh as fn(f64) -> f64, -20.0, 20.0),
            ] {
                let n = 400_000;
                let mut worst = 0.0f64;
                for chunk in 0..n / 8 {
                    let x: [f64; 8] = std::array::from_fn(|j| {
                        lo + (hi - lo) * ((chunk * 8 + j) as f64 / n as f64)
                    });
                    // SAFETY: only for instruction sets this CPU has (checked above).
                    let y = unsafe { f(which, &x) };
                    for (xv, yv) in x.iter().zip(y) {
                        let e = exact(*xv);
                        let ulp = e.abs().max(f64::MIN_POSITIVE) * f64::EPSILON;
                        worst = worst.max((yv - e).abs() / ulp);
                    }
                }
                eprintln!("{name} f64 {}: {worst:.2} ulp", ["sigmoid", "tanh"][which]);
                assert!(worst < 4.0, "{name} f64 function {which}: {worst} ulp");
                let x = [
                    0.0,
                    -800.0,
                    800.0,
                    f64::NAN,
                    1e-300,
                    f64::INFINITY,
                    -1e-9,
                    0.625,
                ];
                // SAFETY: as above.
                let y = unsafe { f(which, &x) };
                assert!(y[3].is_nan(), "{name} {which} {y:?}");
                if which == 0 {
                    assert_eq!((y[0], y[2], y[5]), (0.5, 1.0, 1.0), "{name}");
                    assert!(y[1] >= 0.0 && y[1] < 1e-300, "{name} {y:?}");
                } else {
                    assert_eq!(
                        (y[0], y[1], y[2], y[4], y[5]),
                        (0.0, -1.0, 1.0, 1e-300, 1.0)
                    );
                    assert!((y[6] + 1e-9).abs() < 1e-24 && (y[7] - 0.625f64.tanh()).abs() < 3e-16);
                }
            }
        }
    }

    /// A packing exists only for a fused instruction set this CPU has, and a fused kind.
    #[test]
    fn packings_exist_only_for_fused_instruction_sets_the_cpu_has() {
        use super::{Kernels, Packed};
        use crate::cell::Activation::{Sigmoid, Softsign, Tanh};
        let w = crate::cell::CellWeights::<f32> {
            kind: crate::cell::CellKind::Lstm,
            units: 3,
            features: 2,
            kernel: ndarray::Array2::zeros((2, 12)),
            recurrent_kernel: ndarray::Array2::zeros((3, 12)),
            bias: None,
            recurrent_bias: None,
            reset_after: true,
            projection: None,
        };
        assert!(Packed::new(&w, Tanh, Sigmoid, Kernels::Portable).is_none());
        // An activation the fused steps do not compute.
        assert!(Packed::new(&w, Tanh, Softsign, Kernels::Avx512).is_none());
        let has512 = std::is_x86_feature_detected!("avx512f");
        let has2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let best = Packed::new(&w, Tanh, Sigmoid, Kernels::Avx512).map(|p| p.isa());
        let want = if has512 {
            Some(Kernels::Avx512)
        } else {
            has2.then_some(Kernels::Avx2)
        };
        assert_eq!(best, want);
        let avx2 = Packed::new(&w, Tanh, Sigmoid, Kernels::Avx2).map(|p| p.isa());
        assert_eq!(avx2, has2.then_some(Kernels::Avx2));
    }

    #[test]
    fn vector_sigmoid_and_tanh_are_within_a_few_ulps() {
        if std::is_x86_feature_detected!("avx512f") {
            check("AVX-512", sig512, tanh512);
        } else {
            eprintln!("no AVX-512F on this CPU: its kernels are not used here");
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            check("AVX2", sig256, tanh256);
        } else {
            eprintln!("no AVX2+FMA on this CPU: its kernels are not used here");
        }
    }
}
