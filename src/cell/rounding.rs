/*!
Keras dtype policies below float32 (`mixed_float16`, `float16`, `mixed_bfloat16`, `bfloat16`) computed as
TensorFlow computes them on CPU: values are carried in the run's float type (float32), every op's result
rounded to the policy's compute type where TensorFlow rounds it. Measured from real TensorFlow 2.21 by
`fixtures/probe_float16_ops.py` and `fixtures/probe_bfloat16_ops.py`:

- a matrix product sums in float32 and rounds the sum once: to nearest (float16), or toward zero
  (bfloat16: TensorFlow's CPU bfloat16 matmul truncates) — [`DtypePolicy::matmul`];
- an elementwise op (add, multiply, subtract) is the float32 result rounded to nearest
  ([`DtypePolicy::round`]): Eigen's `half`/`bfloat16` arithmetic;
- `tanh` is the exact tanh rounded; `sigmoid` is Eigen's `e / (1 + e)` in the compute type, 1 where `exp`
  overflows ([`DtypePolicy::activate`]); other activations are computed in float64 and rounded once (exact
  for relu, linear and the clipping ones, within one ulp of TensorFlow for the others).

The cells that round where Keras's cells do are in [`super::rounded`]. Conversions use the `half` crate
(IEEE binary16 and bfloat16, round to nearest even, subnormals and overflow to infinity as the formats
define).
*/

use super::{Activation, Real};
use half::{bf16, f16};

/// A Keras dtype policy whose compute type is below float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DtypePolicy {
    /// float32 variables cast to float16 at use, float16 computation (`mixed_float16`).
    MixedFloat16,
    /// float16 variables and computation (`float16`).
    Float16,
    /// float32 variables cast to bfloat16 at use, bfloat16 computation (`mixed_bfloat16`).
    MixedBfloat16,
    /// bfloat16 variables and computation (`bfloat16`).
    Bfloat16,
}

impl DtypePolicy {
    /// The policy a Keras policy name denotes, for the four computed here (`None` for float32, float64,
    /// quantized and unknown policies).
    pub fn from_name(name: &str) -> Option<DtypePolicy> {
        match name {
            "mixed_float16" => Some(DtypePolicy::MixedFloat16),
            "float16" | "half" => Some(DtypePolicy::Float16),
            "mixed_bfloat16" => Some(DtypePolicy::MixedBfloat16),
            "bfloat16" => Some(DtypePolicy::Bfloat16),
            _ => None,
        }
    }

    /// Keras's name: `mixed_float16`, `float16`, `mixed_bfloat16`, `bfloat16`.
    pub fn name(self) -> &'static str {
        match self {
            DtypePolicy::MixedFloat16 => "mixed_float16",
            DtypePolicy::Float16 => "float16",
            DtypePolicy::MixedBfloat16 => "mixed_bfloat16",
            DtypePolicy::Bfloat16 => "bfloat16",
        }
    }

    /// The compute type: `float16` or `bfloat16`.
    pub fn compute(self) -> &'static str {
        match self {
            DtypePolicy::MixedFloat16 | DtypePolicy::Float16 => "float16",
            DtypePolicy::MixedBfloat16 | DtypePolicy::Bfloat16 => "bfloat16",
        }
    }

    /// The variables' type: `float32` for the mixed policies, else the compute type.
    pub fn variables(self) -> &'static str {
        match self {
            DtypePolicy::MixedFloat16 | DtypePolicy::MixedBfloat16 => "float32",
            other => other.compute(),
        }
    }

    /// For headers: `mixed_float16 (float16 compute, float32 variables)`.
    pub fn describe(self) -> String {
        format!(
            "{} ({} compute, {} variables)",
            self.name(),
            self.compute(),
            self.variables()
        )
    }

    /// Bits of the compute type's significand, the implicit one included (11, 8).
    pub fn significand_bits(self) -> i32 {
        if self.is_half() { 11 } else { 8 }
    }

    /// One unit in the last place of the compute type at magnitude `x` (normal range): the spacing of
    /// representable values in `[2^e, 2^(e+1))` holding `|x|`; at least the spacing at the smallest normal.
    pub fn ulp(self, x: f64) -> f64 {
        let min_exp = if self.is_half() { -14 } else { -126 };
        let e = if x == 0.0 || !x.is_finite() {
            min_exp
        } else {
            (x.abs().log2().floor() as i32).max(min_exp)
        };
        2f64.powi(e - (self.significand_bits() - 1))
    }

    /// `x` rounded to nearest (even) in the compute type: an elementwise op's result, or a variable cast.
    /// Correctly rounded from float64 too (see [`to_f32_odd`]).
    #[inline]
    pub fn round<T: Real>(self, x: T) -> T {
        self.round_wide(x.to_f())
    }

    /// Rounds every value in place.
    pub fn round_slice<T: Real>(self, xs: &mut [T]) {
        xs.iter_mut().for_each(|x| *x = self.round(*x));
    }

    /// A matrix product's float32 sum in the compute type: rounded to nearest for float16, toward zero
    /// for bfloat16 (TensorFlow's CPU bfloat16 matmul drops the low 16 bits of the float32 sum).
    #[inline]
    pub fn matmul<T: Real>(self, x: T) -> T {
        match self.is_half() {
            true => self.round(x),
            false => {
                let v = x.to_f() as f32;
                if v.is_nan() {
                    return x;
                }
                T::lit(f32::from_bits(v.to_bits() & 0xFFFF_0000) as f64)
            }
        }
    }

    /// Applies [`DtypePolicy::matmul`] to every value in place.
    pub fn matmul_slice<T: Real>(self, xs: &mut [T]) {
        xs.iter_mut().for_each(|x| *x = self.matmul(*x));
    }

    /// TensorFlow's sigmoid in the compute type: `e = r(exp(x))`, `r(e / r(1 + e))`, 1 where `exp(x)`
    /// overflows the type.
    #[inline]
    pub fn sigmoid<T: Real>(self, x: T) -> T {
        let e = self.round(T::lit((x.to_f() as f32).exp() as f64));
        if e.is_infinite() {
            return T::one();
        }
        self.round(e / self.round(T::one() + e))
    }

    /// `act` applied in place as TensorFlow computes it in the compute type (see the module
    /// documentation); softmax over the whole slice. Values computed in float64 are rounded from float64
    /// directly (never through float32 first).
    pub fn activate<T: Real>(self, act: Activation, xs: &mut [T]) {
        match act {
            Activation::Sigmoid => xs.iter_mut().for_each(|x| *x = self.sigmoid(*x)),
            Activation::Tanh => xs
                .iter_mut()
                .for_each(|x| *x = self.round_wide(x.to_f().tanh())),
            Activation::Softmax => self.softmax(xs),
            _ => xs
                .iter_mut()
                .for_each(|x| *x = self.round_wide(act.scalar(x.to_f()))),
        }
    }

    /// TensorFlow's CPU softmax in the compute type (Eigen's expression, measured on float16):
    /// `e_j = r(exp(r(x_j − max)))`; their sum as Eigen's vectorised reduction computes it (8 lanes, each
    /// summing every 8th value in the compute type, the lanes then added in float32 and rounded, plus the
    /// values past the last whole packet summed in the compute type); `r(e_j · r(1 / sum))`.
    pub fn softmax<T: Real>(self, xs: &mut [T]) {
        const LANES: usize = 8;
        let max = xs.iter().copied().fold(T::neg_infinity(), T::max);
        for x in xs.iter_mut() {
            let shifted = self.round(*x - max);
            *x = self.round(T::lit((shifted.to_f() as f32).exp() as f64));
        }
        let whole = xs.len() / LANES * LANES;
        let mut lanes = [T::zero(); LANES];
        for chunk in xs[..whole].chunks_exact(LANES) {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l = self.round(*l + v);
            }
        }
        let tail = xs[whole..]
            .iter()
            .fold(T::zero(), |a, &v| self.round(a + v));
        let sum = if whole == 0 {
            tail
        } else {
            let packet = lanes.iter().fold(0f32, |a, v| a + v.to_f() as f32);
            self.round(tail + self.round(T::lit(packet as f64)))
        };
        let inv = self.round(T::one() / sum);
        xs.iter_mut().for_each(|x| *x = self.round(*x * inv));
    }

    /// [`DtypePolicy::activate`] in place on every row of `m` (softmax row-wise).
    pub fn activate_rows<T: Real>(self, act: Activation, mut m: ndarray::ArrayViewMut2<'_, T>) {
        for mut row in m.rows_mut() {
            match row.as_slice_mut() {
                Some(d) => self.activate(act, d),
                None => {
                    let mut d = row.to_vec();
                    self.activate(act, &mut d);
                    row.assign(&ndarray::ArrayView1::from(&d));
                }
            }
        }
    }

    /// A float64 value rounded to nearest in the compute type (correctly: see [`to_f32_odd`]).
    #[inline]
    pub fn round_wide<T: Real>(self, v: f64) -> T {
        let v = to_f32_odd(v);
        T::lit(if self.is_half() {
            f16::from_f32(v).to_f64()
        } else {
            bf16::from_f32(v).to_f64()
        })
    }

    /// Whether the compute type is float16 (else bfloat16).
    #[inline]
    fn is_half(self) -> bool {
        matches!(self, DtypePolicy::MixedFloat16 | DtypePolicy::Float16)
    }
}

/// `v` in float32 rounded to odd: toward zero, then the last bit set when inexact. Rounding that to
/// float16 or bfloat16 (to nearest) is the correctly rounded `v` (float32 carries more than two bits beyond
/// either), where rounding `v` to float32 to nearest first could create a tie that is not one. Written
/// here because `half`'s float64 conversions drop the low 32 bits of the significand before rounding (ties
/// decided wrongly), while its float32 ones round correctly.
fn to_f32_odd(v: f64) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v || v.is_nan() {
        return f;
    }
    let mut bits = f.to_bits();
    if (f as f64).abs() > v.abs() {
        bits -= 1; // one step toward zero (the magnitude is in the low 31 bits)
    }
    f32::from_bits(bits | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float16_rounds_to_nearest_even_and_overflows_to_infinity() {
        let p = DtypePolicy::MixedFloat16;
        // 1 + 2^-11 is half-way between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(p.round(1.0f32 + 2f32.powi(-11)), 1.0);
        assert_eq!(
            p.round(1.0f32 + 3.0 * 2f32.powi(-11)),
            1.0 + 2.0 * 2f32.powi(-10)
        );
        assert!(p.round(70000.0f32).is_infinite());
        assert_eq!(p.matmul(0.1f32), p.round(0.1f32));
    }

    #[test]
    fn bfloat16_matmul_truncates_and_elementwise_rounds() {
        let p = DtypePolicy::MixedBfloat16;
        // 1 + 0.75·2^-7 lies between 1 and 1 + 2^-7: truncated to 1, rounded to 1 + 2^-7.
        let x = 1.0f32 + 0.75 * 2f32.powi(-7);
        assert_eq!(p.matmul(x), 1.0);
        assert_eq!(p.round(x), 1.0 + 2f32.powi(-7));
        assert_eq!(p.matmul(-x), -1.0);
    }

    #[test]
    fn sigmoid_is_e_over_one_plus_e_and_one_on_overflow() {
        let p = DtypePolicy::Float16;
        assert_eq!(p.sigmoid(12.0f32), 1.0);
        assert_eq!(p.sigmoid(0.0f32), 0.5);
        let x = -3.0f32;
        let e = p.round(x.exp());
        assert_eq!(p.sigmoid(x), p.round(e / p.round(1.0 + e)));
    }

    #[test]
    fn rounding_from_float64_is_correct_near_ties() {
        let p = DtypePolicy::Float16;
        let tie = 1.0 + 2f64.powi(-11); // half-way between 1 and 1 + 2^-10
        assert_eq!(p.round(tie), 1.0);
        assert_eq!(p.round(tie + 2f64.powi(-40)), 1.0 + 2f64.powi(-10));
        assert_eq!(p.round(tie - 2f64.powi(-40)), 1.0);
        let b = DtypePolicy::Bfloat16;
        let tie = 1.0 + 2f64.powi(-8);
        assert_eq!(b.round(tie + 2f64.powi(-45)), 1.0 + 2f64.powi(-7));
        assert_eq!(b.round(-(tie + 2f64.powi(-45))), -(1.0 + 2f64.powi(-7)));
    }

    #[test]
    fn softmax_sums_in_eight_lanes_and_multiplies_by_the_inverse() {
        let p = DtypePolicy::MixedFloat16;
        let mut xs: Vec<f32> = (0..11).map(|i| p.round(0.3 * i as f32 - 1.0)).collect();
        let src = xs.clone();
        p.softmax(&mut xs);
        let e: Vec<f32> = src
            .iter()
            .map(|&x| p.round((p.round(x - src[10])).exp()))
            .collect();
        let mut lanes = [0f32; 8];
        for (k, l) in lanes.iter_mut().enumerate() {
            *l = p.round(*l + e[k]);
        }
        let tail = p.round(p.round(e[8] + e[9]) + e[10]);
        let sum = p.round(tail + p.round(lanes.iter().sum::<f32>()));
        let inv = p.round(1.0 / sum);
        for (x, e) in xs.iter().zip(&e) {
            assert_eq!(*x, p.round(e * inv));
        }
        let total: f32 = xs.iter().sum();
        assert!((total - 1.0).abs() < 4e-3, "{total}");
    }

    #[test]
    fn ulp_of_the_compute_type() {
        assert_eq!(DtypePolicy::MixedFloat16.ulp(0.7), 2f64.powi(-11));
        assert_eq!(DtypePolicy::MixedBfloat16.ulp(0.7), 2f64.powi(-8));
        assert_eq!(DtypePolicy::MixedFloat16.ulp(0.0), 2f64.powi(-24));
    }
}
