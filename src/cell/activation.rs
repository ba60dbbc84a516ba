/*!
Activations by their Keras names, with Keras's definitions (see NUMERICS.md).

`hard_sigmoid` is Keras 3's `relu6(x + 3) / 6`; `hard_sigmoid_keras2` is Keras 2's `clip(0.2x + 0.5, 0, 1)`.
`softmax` works row-wise (over units); every other activation is elementwise.
*/

use super::Real;
use ndarray::{ArrayViewMut2, Axis};

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `x`.
    Linear,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for x > 0, else `e^x − 1`.
    Elu,
    /// `1.0507 · elu(x, 1.67326)`.
    Selu,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x · sigmoid(x)` (also called swish).
    Silu,
    /// Exact GELU: `0.5 x (1 + erf(x / √2))`.
    Gelu,
    /// `e^x`.
    Exponential,
    /// `x` for x ≥ 0, else `0.2 x` (Keras 3's default negative slope).
    LeakyRelu,
    /// Keras 3: `relu6(x + 3) / 6`.
    HardSigmoid,
    /// Keras 2 / tf-keras: `clip(0.2 x + 0.5, 0, 1)`.
    HardSigmoidKeras2,
    /// `x · hard_sigmoid(x)` (Keras 3; also called hard_swish).
    HardSilu,
    /// Row-wise softmax over units.
    Softmax,
}

/// Every accepted name, in the order `--help` and error messages list them.
pub const NAMES: &[(&str, Activation)] = &[
    ("linear", Activation::Linear),
    ("sigmoid", Activation::Sigmoid),
    ("tanh", Activation::Tanh),
    ("relu", Activation::Relu),
    ("relu6", Activation::Relu6),
    ("elu", Activation::Elu),
    ("selu", Activation::Selu),
    ("softplus", Activation::Softplus),
    ("softsign", Activation::Softsign),
    ("silu", Activation::Silu),
    ("swish", Activation::Silu),
    ("gelu", Activation::Gelu),
    ("exponential", Activation::Exponential),
    ("leaky_relu", Activation::LeakyRelu),
    ("hard_sigmoid", Activation::HardSigmoid),
    ("hard_sigmoid_keras2", Activation::HardSigmoidKeras2),
    ("hard_silu", Activation::HardSilu),
    ("hard_swish", Activation::HardSilu),
    ("softmax", Activation::Softmax),
];

impl Activation {
    /// Parses a Keras activation name (`None` is accepted as `linear`, as Keras does).
    pub fn parse(name: &str) -> Result<Activation, String> {
        let n = name.trim().to_ascii_lowercase();
        if n == "none" {
            return Ok(Activation::Linear);
        }
        NAMES
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                format!(
                    "unknown activation '{name}'; valid: {}",
                    NAMES.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )
            })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(k, _)| *k)
            .unwrap_or("linear")
    }

    /// Applies the activation to one value (softmax excepted: see [`Activation::apply_rows`]).
    #[inline]
    pub fn scalar<T: Real>(self, x: T) -> T {
        let zero = T::zero();
        let one = T::one();
        match self {
            Activation::Linear | Activation::Softmax => x,
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Relu => max_nan(x, zero),
            Activation::Relu6 => min_nan(max_nan(x, zero), T::lit(6.0)),
            Activation::Elu => {
                if x > zero {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Activation::Selu => {
                let scale = T::lit(1.050_700_987_355_480_5);
                let alpha = T::lit(1.673_263_242_354_377_3);
                if x > zero {
                    scale * x
                } else {
                    scale * alpha * x.exp_m1()
                }
            }
            Activation::Softplus => max_nan(x, zero) + (-x.abs()).exp().ln_1p(),
            Activation::Softsign => x / (one + x.abs()),
            Activation::Silu => x * sigmoid(x),
            Activation::Gelu => {
                T::lit(0.5) * x * (one + (x / T::lit(std::f64::consts::SQRT_2)).erf())
            }
            Activation::Exponential => x.exp(),
            Activation::LeakyRelu => {
                if x >= zero {
                    x
                } else {
                    T::lit(0.2) * x
                }
            }
            Activation::HardSigmoid => {
                min_nan(max_nan(x + T::lit(3.0), zero), T::lit(6.0)) / T::lit(6.0)
            }
            Activation::HardSigmoidKeras2 => {
                min_nan(max_nan(T::lit(0.2) * x + T::lit(0.5), zero), one)
            }
            Activation::HardSilu => {
                x * (min_nan(max_nan(x + T::lit(3.0), zero), T::lit(6.0)) / T::lit(6.0))
            }
        }
    }

    /// False only for softmax, which normalises over a whole block rather than value by value.
    pub fn is_elementwise(self) -> bool {
        self != Activation::Softmax
    }

    /// Writes `act(src)` into `dst` (equal lengths); softmax normalises over the whole slice.
    #[inline]
    pub fn apply_into<T: Real>(self, src: &[T], dst: &mut [T]) {
        dst.copy_from_slice(src);
        match self {
            Activation::Linear => {}
            Activation::Sigmoid => T::sigmoid_slice(dst),
            Activation::Tanh => T::tanh_slice(dst),
            Activation::Softmax => {
                let max = dst.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
                let mut sum = T::zero();
                for v in dst.iter_mut() {
                    *v = (*v - max).exp();
                    sum = sum + *v;
                }
                dst.iter_mut().for_each(|v| *v = *v / sum);
            }
            a => dst.iter_mut().for_each(|v| *v = a.scalar(*v)),
        }
    }

    /// Applies the activation in place to a (rows, values) block; softmax normalises each row.
    pub fn apply_rows<T: Real>(self, mut m: ArrayViewMut2<T>) {
        match self {
            Activation::Linear => {}
            Activation::Sigmoid | Activation::Tanh => {
                let f = if self == Activation::Sigmoid {
                    T::sigmoid_slice
                } else {
                    T::tanh_slice
                };
                for mut row in m.rows_mut() {
                    match row.as_slice_mut() {
                        Some(xs) => f(xs),
                        None => row.mapv_inplace(|v| self.scalar(v)),
                    }
                }
            }
            Activation::Softmax => {
                for mut row in m.axis_iter_mut(Axis(0)) {
                    let max = row.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
                    let mut sum = T::zero();
                    row.mapv_inplace(|v| {
                        let e = (v - max).exp();
                        sum = sum + e;
                        e
                    });
                    row.mapv_inplace(|v| v / sum);
                }
            }
            a => m.mapv_inplace(|v| a.scalar(v)),
        }
    }
}

/// `max` that keeps NaN, as TensorFlow's `maximum` does (Rust's `max` drops it).
#[inline]
fn max_nan<T: Real>(x: T, y: T) -> T {
    if x.is_nan() { x } else { x.max(y) }
}

/// `min` that keeps NaN.
#[inline]
fn min_nan<T: Real>(x: T, y: T) -> T {
    if x.is_nan() { x } else { x.min(y) }
}

#[inline]
pub(crate) fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_sigmoid_versions_differ_where_keras_says() {
        // Keras 3: relu6(x+3)/6; Keras 2: clip(0.2x+0.5). At x = 1: 0.6667 vs 0.7.
        assert!((Activation::HardSigmoid.scalar(1.0f64) - 4.0 / 6.0).abs() < 1e-12);
        assert!((Activation::HardSigmoidKeras2.scalar(1.0f64) - 0.7).abs() < 1e-12);
        assert_eq!(Activation::HardSigmoidKeras2.scalar(3.0f64), 1.0);
        assert_eq!(Activation::HardSigmoid.scalar(-3.5f64), 0.0);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = Activation::parse("sigmod").unwrap_err();
        assert!(
            e.contains("sigmoid") && e.contains("hard_sigmoid_keras2"),
            "{e}"
        );
        assert_eq!(Activation::parse("swish").unwrap(), Activation::Silu);
    }

    /// Regression: relu and the hard sigmoids swallowed NaN (Rust's max/min), so a NaN weight vanished
    /// where Keras propagates it.
    #[test]
    fn nan_propagates_through_clipping_activations() {
        for a in [
            Activation::Relu,
            Activation::Relu6,
            Activation::HardSigmoid,
            Activation::HardSigmoidKeras2,
            Activation::HardSilu,
            Activation::Softplus,
        ] {
            assert!(a.scalar(f32::NAN).is_nan(), "{}", a.name());
        }
    }

    #[test]
    fn softplus_is_stable_for_large_inputs() {
        assert_eq!(Activation::Softplus.scalar(100.0f32), 100.0);
        assert!(Activation::Softplus.scalar(-100.0f32) >= 0.0);
    }
}
