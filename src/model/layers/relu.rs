/*!
Keras's `ReLU(negative_slope, max_value, threshold)` and `LeakyReLU(negative_slope)` layers, value for
value as `keras.activations.relu` composes them (Keras 3.15 and tf-keras 2.x alike):

- a plain leaky relu (a slope, no `max_value`, threshold 0) is `tf.nn.leaky_relu`: `x > 0 ? x : s·x`;
- otherwise the positive part is `x > threshold ? x : 0` (`relu(x)` at threshold 0), clipped to
  `[0, max_value]` when there is one, minus `s · relu(threshold − x)`.

So a non-zero threshold makes the layer jump at the threshold: exactly there it is 0 (not the threshold),
and below it `s · (x − threshold)`. The derivative, with TensorFlow's choices at each kink, is
[`crate::explain`]'s (`relu_layer_derivative`).
*/

use crate::cell::Real;

/// A `ReLU`/`LeakyReLU` layer's configuration, in the computation's type.
#[derive(Debug, Clone, Copy)]
pub struct ReluLayer<T> {
    /// Slope below the threshold.
    pub negative_slope: T,
    /// Upper clip, if any.
    pub max_value: Option<T>,
    /// Where the slope changes.
    pub threshold: T,
}

impl<T: Real> ReluLayer<T> {
    /// `tf.nn.leaky_relu` (a slope, no clip, threshold 0): Keras calls it directly.
    pub fn is_leaky(&self) -> bool {
        self.negative_slope != T::zero() && self.max_value.is_none() && self.threshold == T::zero()
    }

    /// `max_value == 6` at threshold 0: Keras uses `tf.nn.relu6` instead of a clip.
    pub fn is_relu6(&self) -> bool {
        self.threshold == T::zero() && self.max_value == Some(T::lit(6.0))
    }

    /// The layer's value at `x`.
    #[inline]
    pub fn apply(&self, x: T) -> T {
        let zero = T::zero();
        if self.is_leaky() {
            return if x > zero { x } else { self.negative_slope * x };
        }
        let mut y = if x > self.threshold { x } else { zero };
        if let Some(m) = self.max_value {
            y = y.min(m).max(zero);
        }
        if self.negative_slope != zero {
            let below = self.threshold - x;
            if below > zero {
                y = y - self.negative_slope * below;
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::ReluLayer;

    fn relu(s: f64, m: Option<f64>, t: f64) -> ReluLayer<f64> {
        ReluLayer {
            negative_slope: s,
            max_value: m,
            threshold: t,
        }
    }

    #[test]
    fn values_as_keras_composes_them() {
        // keras.activations.relu's docstring: threshold=5 gives 0 at 5 and below, 10 at 10.
        let t = relu(0.0, None, 5.0);
        assert_eq!(
            [t.apply(-10.0), t.apply(5.0), t.apply(10.0)],
            [0.0, 0.0, 10.0]
        );
        // Slope below the threshold, clip above; exactly at the threshold 0.
        let r = relu(0.1, Some(1.0), 0.5);
        assert_eq!(r.apply(0.5), 0.0);
        assert!((r.apply(0.0) - -0.05).abs() < 1e-15);
        assert_eq!(r.apply(3.0), 1.0);
        assert_eq!(r.apply(0.75), 0.75);
        // Leaky: s·x below 0.
        let l = relu(0.3, None, 0.0);
        assert!(l.is_leaky());
        assert!((l.apply(-2.0) - -0.6).abs() < 1e-15);
        assert!(relu(0.0, Some(6.0), 0.0).is_relu6());
        assert!(!relu(0.0, Some(6.0), 0.5).is_relu6());
    }
}
