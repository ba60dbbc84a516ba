/*!
The fast paths the cells stand on: matrix products through the `gemm` crate (AVX-512/AVX2/FMA kernels chosen
at run time, so the binary still runs on CPUs without them) and vectorised `sigmoid`/`tanh` for `f32`.

The vectorised functions use Cephes' range reduction and polynomials (max error about 2 ulp against the
correctly rounded result); `multiversion` compiles them for AVX-512, AVX2+FMA and the baseline, picked at
run time. `f64` uses the standard library's scalar functions.
*/

// The polynomial coefficients are Cephes' published values, kept digit for digit.
#![allow(clippy::excessive_precision)]

use ndarray::{ArrayView2, ArrayViewMut2};

/// `dst = (accumulate ? dst : 0) + a·b`, single-threaded (callers parallelise over sequences).
pub fn matmul<T: super::Real>(
    mut dst: ArrayViewMut2<'_, T>,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert!(
        k == k2 && dst.dim() == (m, n),
        "matmul shapes ({m}, {k})·({k2}, {n}) -> {:?}",
        dst.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return;
    }
    let (ds, as_, bs) = (
        dst.strides().to_vec(),
        a.strides().to_vec(),
        b.strides().to_vec(),
    );
    // SAFETY: the shapes are checked above; the pointers and strides come from live ndarray views that
    // cover exactly m×n, m×k and k×n elements; `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            ds[1],
            ds[0],
            accumulate,
            a.as_ptr(),
            as_[1],
            as_[0],
            b.as_ptr(),
            bs[1],
            bs[0],
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// `e^x` for `f32`, Cephes' `expf`: n = round(x·log2 e), r = x − n·ln 2 (in two parts), a degree-5
/// polynomial for e^r, then scale by 2^n through the exponent bits. Inputs are clamped to [−87.3, 88],
/// where the result stays a normal float.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let y = p * r2 + r + 1.0;
    // 2^n through the exponent bits. n is integral in [-126, 127], so n + 127 + 2^23 holds n + 127 in its
    // low mantissa bits; shifting them into the exponent field avoids a float-to-int cast, which would not
    // vectorise (Rust's `as` saturates).
    f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23) * y
}

#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh` for `f32`: Cephes' odd polynomial for |x| < 0.625, `1 − 2/(e^{2|x|} + 1)` beyond, sign restored.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let ax = x.abs();
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328_2e-1)
            * z
            * x
            + x;
    let big = 1.0 - 2.0 / (exp_f32(2.0 * ax) + 1.0);
    let big = if x < 0.0 { -big } else { big };
    if ax < 0.625 { small } else { big }
}

/// In-place sigmoid over a slice of `f32`, vectorised.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl",
    "x86_64+avx2+fma",
    "x86_64+sse4.1"
))]
pub fn sigmoid_slice_f32(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = sigmoid_f32(*x);
    }
}

/// In-place tanh over a slice of `f32`, vectorised.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl",
    "x86_64+avx2+fma",
    "x86_64+sse4.1"
))]
pub fn tanh_slice_f32(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = tanh_f32(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest error in units of the f32 spacing at the exact (f64) value.
    fn max_ulps(f: impl Fn(f32) -> f32, exact: impl Fn(f64) -> f64, lo: f32, hi: f32) -> f64 {
        let mut worst = 0.0f64;
        let n = 200_000;
        for i in 0..=n {
            let x = lo + (hi - lo) * (i as f32 / n as f32);
            let e = exact(x as f64);
            let ulp = ((e as f32).abs().max(f32::MIN_POSITIVE) as f64) * f32::EPSILON as f64;
            worst = worst.max(((f(x) as f64) - e).abs() / ulp);
        }
        worst
    }

    #[test]
    fn vectorised_sigmoid_is_within_a_few_ulps() {
        let u = max_ulps(sigmoid_f32, |x| 1.0 / (1.0 + (-x).exp()), -30.0, 30.0);
        assert!(u < 4.0, "sigmoid max error {u} ulp");
        let mut v = vec![0.0f32, -100.0, 100.0, f32::NAN];
        sigmoid_slice_f32(&mut v);
        assert_eq!(v[0], 0.5);
        assert!(v[1] >= 0.0 && v[1] < 1e-30 && v[2] == 1.0 && v[3].is_nan());
    }

    #[test]
    fn vectorised_tanh_is_within_a_few_ulps() {
        let u = max_ulps(tanh_f32, f64::tanh, -12.0, 12.0);
        assert!(u < 4.0, "tanh max error {u} ulp");
        let mut v = vec![0.0f32, -50.0, 50.0, 1e-30, f32::NAN];
        tanh_slice_f32(&mut v);
        assert_eq!(&v[..4], &[0.0, -1.0, 1.0, 1e-30]);
        assert!(v[4].is_nan());
    }

    #[test]
    fn matmul_matches_ndarray() {
        let a = ndarray::Array2::from_shape_fn((7, 5), |(i, j)| (i * 5 + j) as f32 * 0.1);
        let b = ndarray::Array2::from_shape_fn((5, 9), |(i, j)| (i as f32 - j as f32) * 0.3);
        let mut d = ndarray::Array2::from_elem((7, 9), 1.0f32);
        matmul(d.view_mut(), a.view(), b.view(), true);
        let want = a.dot(&b) + 1.0;
        assert!(d.iter().zip(want.iter()).all(|(x, y)| (x - y).abs() < 1e-4));
        // Column slices of a wider matrix (non-contiguous views) work too.
        let wide = ndarray::Array2::from_shape_fn((5, 20), |(i, j)| (i + j) as f32);
        let mut d2 = ndarray::Array2::zeros((7, 9));
        matmul(
            d2.view_mut(),
            a.view(),
            wide.slice(ndarray::s![.., 3..12]),
            false,
        );
        let want2 = a.dot(&wide.slice(ndarray::s![.., 3..12]));
        assert!(
            d2.iter()
                .zip(want2.iter())
                .all(|(x, y)| (x - y).abs() < 1e-3)
        );
    }
}
