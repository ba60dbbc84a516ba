/*!
Derivatives of every activation [`Activation`] supports, with TensorFlow's conventions at the kinks (the
models explained are Keras models; Keras 3 runs these as `tf.nn` ops, whose registered gradients decide the
value exactly at a kink):

- `relu`: 1 for x > 0, else 0 (`ReluGrad`); `relu6`: 1 for 0 < x < 6 (`Relu6Grad`);
- `elu`: 1 where the output is ≥ 0, else output + 1 (`EluGrad`); `selu`: scale where the output is ≥ 0, else
  output + scale·alpha (`SeluGrad`): both are `scale` at x = 0;
- `leaky_relu`: 1 for x > 0, else 0.2 (`LeakyReluGrad`, so 0.2 at 0);
- `hard_sigmoid` (Keras 3, `relu6(x + 3) / 6`): 1/6 for −3 < x < 3, else 0; `hard_silu` = x·hard_sigmoid(x)
  by the product rule (so 0 at −3 and 1 at 3; PyTorch's `hardswish` differs exactly there);
- `hard_sigmoid_keras2` (`clip_by_value(0.2x + 0.5, 0, 1)`): 0.2 where 0 ≤ 0.2x + 0.5 ≤ 1, bounds included
  (`clip_by_value`'s gradient passes at equality);
- softmax: the Jacobian-vector product `y ⊙ (g − Σ g·y)` per row (per gate block in a cell);
- the `ReLU`/`LeakyReLU` layer ([`relu_layer_derivative`]), through the ops Keras composes it of.

Checked against `tf.GradientTape` by `fixtures/generate_explain.py` (cases `act_*`).
*/

use crate::cell::{Activation, Real};
use crate::model::layers::relu::ReluLayer;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};

const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;

/// `d act(x) / dx` for an elementwise activation, given the input `x` and the output `y = act(x)`.
/// Softmax is not elementwise: use [`backward_rows`].
#[inline]
pub fn derivative<T: Real>(a: Activation, x: T, y: T) -> T {
    let zero = T::zero();
    let one = T::one();
    match a {
        Activation::Linear | Activation::Softmax => one,
        Activation::Sigmoid => y * (one - y),
        Activation::Tanh => one - y * y,
        Activation::Relu => {
            if x > zero {
                one
            } else {
                zero
            }
        }
        Activation::Relu6 => {
            if x > zero && x < T::lit(6.0) {
                one
            } else {
                zero
            }
        }
        Activation::Elu => {
            if y < zero {
                y + one
            } else {
                one
            }
        }
        Activation::Selu => {
            if y < zero {
                y + T::lit(SELU_SCALE * SELU_ALPHA)
            } else {
                T::lit(SELU_SCALE)
            }
        }
        Activation::Softplus => crate::cell::activation::sigmoid(x),
        Activation::Softsign => {
            let d = one + x.abs();
            one / (d * d)
        }
        Activation::Silu => {
            let s = crate::cell::activation::sigmoid(x);
            s * (one + x * (one - s))
        }
        Activation::Gelu => {
            let cdf = T::lit(0.5) * (one + (x / T::lit(std::f64::consts::SQRT_2)).erf());
            let pdf = (-(x * x) * T::lit(0.5)).exp() * T::lit(0.398_942_280_401_432_7);
            cdf + x * pdf
        }
        Activation::Exponential => y,
        Activation::LeakyRelu => {
            if x > zero {
                one
            } else {
                T::lit(0.2)
            }
        }
        Activation::HardSigmoid => hard_sigmoid_slope(x),
        Activation::HardSigmoidKeras2 => {
            let lin = T::lit(0.2) * x + T::lit(0.5);
            if lin >= zero && lin <= one {
                T::lit(0.2)
            } else {
                zero
            }
        }
        Activation::HardSilu => {
            let hs = Activation::HardSigmoid.scalar(x);
            hs + x * hard_sigmoid_slope(x)
        }
    }
}

/// Keras 3's hard sigmoid slope: `relu6(x + 3)`'s gradient (open interval) over 6.
#[inline]
fn hard_sigmoid_slope<T: Real>(x: T) -> T {
    let s = x + T::lit(3.0);
    if s > T::zero() && s < T::lit(6.0) {
        T::lit(1.0 / 6.0)
    } else {
        T::zero()
    }
}

/// `d layer(x) / dx` for a `ReLU(negative_slope, max_value, threshold)` / `LeakyReLU` layer, with
/// TensorFlow's gradients of the ops `keras.activations.relu` builds it from (see
/// [`crate::model::layers::relu`]):
/// - a plain leaky relu (`LeakyReluGrad`): 1 for x > 0, else the slope (so the slope at 0);
/// - otherwise the positive part passes for x > threshold (`ReluGrad`, or `where(x > threshold)`: 0 exactly
///   at the threshold), and, with a `max_value`, where `clip` passes: `minimum(x, max)` then `maximum(·, 0)`,
///   whose gradients (`x <= y`, `x >= y`) pass at equality, so 1 exactly at `max_value`; at threshold 0 with
///   `max_value == 6` Keras uses `relu6` instead (`Relu6Grad`: 0 at 0 and at 6);
/// - plus the slope where `relu(threshold − x)` passes: x < threshold (not at it).
#[inline]
pub fn relu_layer_derivative<T: Real>(relu: &ReluLayer<T>, x: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    if relu.is_leaky() {
        return if x > zero { one } else { relu.negative_slope };
    }
    let positive = x > relu.threshold
        && match relu.max_value {
            None => true,
            Some(m) if relu.is_relu6() => x < m,
            Some(m) => x <= m && x.min(m) >= zero,
        };
    let mut d = if positive { one } else { zero };
    if relu.negative_slope != zero && relu.threshold - x > zero {
        d = d + relu.negative_slope;
    }
    d
}

/// Turns `g` (the gradient with respect to `y = act(x)`, rows × values) into the gradient with respect to
/// `x`, in place. Softmax normalises each row (as the cells and heads apply it).
pub fn backward_rows<T: Real>(
    a: Activation,
    x: ArrayView2<'_, T>,
    y: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
) {
    match a {
        Activation::Linear => {}
        Activation::Softmax => {
            for ((yr, _), mut gr) in y.rows().into_iter().zip(x.rows()).zip(g.rows_mut()) {
                let dot = yr
                    .iter()
                    .zip(gr.iter())
                    .fold(T::zero(), |s, (&yv, &gv)| s + yv * gv);
                gr.iter_mut()
                    .zip(yr.iter())
                    .for_each(|(gv, &yv)| *gv = yv * (*gv - dot));
            }
        }
        Activation::Sigmoid => Zip::from(&mut g)
            .and(&y)
            .for_each(|gv, &yv| *gv = *gv * yv * (T::one() - yv)),
        Activation::Tanh => Zip::from(&mut g)
            .and(&y)
            .for_each(|gv, &yv| *gv = *gv * (T::one() - yv * yv)),
        _ => Zip::from(&mut g)
            .and(&x)
            .and(&y)
            .for_each(|gv, &xv, &yv| *gv = *gv * derivative(a, xv, yv)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::activation::NAMES;

    /// Away from the kinks every derivative matches a central difference in float64.
    #[test]
    fn derivatives_match_central_differences() {
        for &(name, a) in NAMES {
            if a == Activation::Softmax {
                continue;
            }
            for &x in &[-4.1f64, -2.0, -0.7, -0.1, 0.3, 1.2, 2.2, 4.4, 7.0] {
                let h = 1e-6;
                let num = (a.scalar(x + h) - a.scalar(x - h)) / (2.0 * h);
                let d = derivative(a, x, a.scalar(x));
                assert!((num - d).abs() < 1e-6, "{name} at {x}: {d} vs {num}");
            }
        }
    }

    /// TensorFlow's values at the kinks.
    #[test]
    fn kinks_follow_tensorflow() {
        let d = |a: Activation, x: f64| derivative(a, x, a.scalar(x));
        assert_eq!(d(Activation::Relu, 0.0), 0.0);
        assert_eq!(d(Activation::Relu6, 6.0), 0.0);
        assert_eq!(d(Activation::LeakyRelu, 0.0), 0.2);
        assert_eq!(d(Activation::Elu, 0.0), 1.0);
        assert_eq!(d(Activation::Selu, 0.0), SELU_SCALE);
        assert_eq!(d(Activation::HardSigmoid, 3.0), 0.0);
        assert_eq!(d(Activation::HardSigmoidKeras2, 2.5), 0.2);
        assert_eq!(d(Activation::HardSigmoidKeras2, -2.5), 0.2);
        assert_eq!(d(Activation::HardSilu, 3.0), 1.0);
    }

    /// The ReLU layer at its kinks, as tf.GradientTape gives them on Keras 3.15's layer (probed values, not
    /// differences: a difference straddles the kink): 0 at threshold 0 and at a non-zero threshold (with or
    /// without a slope), 1 at `max_value`, relu6's 0 at 6, a plain leaky relu's slope at 0; and away from
    /// the kinks a central difference of [`ReluLayer::apply`].
    #[test]
    fn relu_layer_kinks_follow_tensorflow() {
        let r = |s: f64, m: Option<f64>, t: f64| ReluLayer {
            negative_slope: s,
            max_value: m,
            threshold: t,
        };
        let d = relu_layer_derivative;
        assert_eq!(d(&r(0.0, None, 0.0), 0.0), 0.0);
        assert_eq!(d(&r(0.0, Some(1.0), 0.0), 1.0), 1.0);
        assert_eq!(d(&r(0.0, Some(1.0), 0.0), 0.0), 0.0);
        assert_eq!(d(&r(0.0, Some(6.0), 0.0), 6.0), 0.0);
        assert_eq!(d(&r(0.0, Some(6.0), 0.0), 0.0), 0.0);
        assert_eq!(d(&r(0.0, Some(6.0), 0.5), 6.0), 1.0);
        assert_eq!(d(&r(0.1, Some(1.0), 0.5), 1.0), 1.0);
        assert_eq!(d(&r(0.1, Some(1.0), 0.5), 0.5), 0.0);
        assert_eq!(d(&r(0.0, None, 0.5), 0.5), 0.0);
        assert_eq!(d(&r(0.2, Some(1.0), 0.0), 0.0), 0.0);
        assert_eq!(d(&r(0.25, None, 0.0), 0.0), 0.25);
        assert_eq!(d(&r(0.3, None, 0.0), -1.0), 0.3);
        for relu in [
            r(0.1, Some(1.0), 0.5),
            r(0.0, Some(6.0), 0.0),
            r(0.3, None, 0.0),
            r(0.2, Some(2.0), 0.0),
        ] {
            for &x in &[-1.3f64, 0.2, 0.7, 1.6, 4.0, 7.0] {
                let h = 1e-6;
                let num = (relu.apply(x + h) - relu.apply(x - h)) / (2.0 * h);
                assert!((num - d(&relu, x)).abs() < 1e-6, "{relu:?} at {x}");
            }
        }
    }

    #[test]
    fn softmax_vector_jacobian_product() {
        let x = ndarray::array![[0.5f64, -1.0, 2.0]];
        let mut y = x.clone();
        Activation::Softmax.apply_rows(y.view_mut());
        let mut g = ndarray::array![[1.0f64, 0.0, 0.0]];
        backward_rows(Activation::Softmax, x.view(), y.view(), g.view_mut());
        // d y0 / d x_j = y0 (δ0j − y_j)
        for j in 0..3 {
            let want = y[[0, 0]] * (if j == 0 { 1.0 } else { 0.0 } - y[[0, j]]);
            assert!((g[[0, j]] - want).abs() < 1e-15);
        }
    }
}
