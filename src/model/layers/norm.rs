/*!
Normalisation over the last axis, on a flat buffer of rows (`(…, channels)` in C order).

`BatchNormalization` at inference: `y = (x − moving_mean) · gamma / sqrt(moving_variance + epsilon) + beta`
(TensorFlow's `batch_normalization`, computed as `x·inv + (beta − mean·inv)` with
`inv = gamma · rsqrt(var + eps)`). `LayerNormalization`: per row,
`y = (x − mean) / sqrt(var + eps) · gamma + beta` with the biased variance; with Keras 3's (deprecated)
`rms_scaling`, `y = x / sqrt(var + eps) · gamma`: the variance, not the mean square, and no centring, as
Keras 3.15 computes it.
*/

use crate::cell::Real;

/// `BatchNormalization` in inference mode over the last axis of `data` (`channels` per row). `gamma`
/// and `beta` are absent for `scale=False`/`center=False`.
pub fn batch_norm<T: Real>(
    data: &mut [T],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    mean: &[T],
    variance: &[T],
    epsilon: T,
) {
    let c = mean.len();
    let inv: Vec<T> = (0..c)
        .map(|i| {
            let r = T::one() / (variance[i] + epsilon).sqrt();
            gamma.map_or(r, |g| r * g[i])
        })
        .collect();
    let shift: Vec<T> = (0..c)
        .map(|i| beta.map_or(T::zero(), |b| b[i]) - mean[i] * inv[i])
        .collect();
    for row in data.chunks_exact_mut(c.max(1)) {
        for (i, v) in row.iter_mut().enumerate() {
            *v = *v * inv[i] + shift[i];
        }
    }
}

/// `LayerNormalization` over the last axis of `data` (`gamma.len()` or `beta.len()` = channels, given as
/// `channels`).
pub fn layer_norm<T: Real>(
    data: &mut [T],
    channels: usize,
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
    epsilon: T,
    rms_scaling: bool,
) {
    let n = T::lit(channels as f64);
    for row in data.chunks_exact_mut(channels.max(1)) {
        if rms_scaling {
            let mean = row.iter().fold(T::zero(), |a, &v| a + v) / n;
            let var = row
                .iter()
                .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
                / n;
            let r = T::one() / (var + epsilon).sqrt();
            for (i, v) in row.iter_mut().enumerate() {
                *v = *v * r * gamma.map_or(T::one(), |g| g[i]);
            }
            continue;
        }
        let mean = row.iter().fold(T::zero(), |a, &v| a + v) / n;
        let var = row
            .iter()
            .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
            / n;
        let r = T::one() / (var + epsilon).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            let g = gamma.map_or(T::one(), |g| g[i]);
            let b = beta.map_or(T::zero(), |b| b[i]);
            *v = (*v - mean) * r * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_uses_moving_statistics() {
        let mut d = vec![3.0f64, 1.0];
        batch_norm(
            &mut d,
            Some(&[2.0, 1.0]),
            Some(&[1.0, 0.0]),
            &[1.0, 1.0],
            &[4.0, 1.0],
            0.0,
        );
        assert_eq!(d, [3.0, 0.0]);
    }

    #[test]
    fn layer_norm_standardises_each_row() {
        let mut d = vec![1.0f64, 3.0, 5.0, 5.0];
        layer_norm(&mut d, 2, None, None, 1e-12, false);
        let want = [-1.0, 1.0, 0.0, 0.0];
        assert!(
            d.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
            "{d:?}"
        );
    }
}
