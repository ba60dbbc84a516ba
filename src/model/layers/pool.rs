/*!
Pooling over the time axis of `(batch, timesteps, channels)`.

`MaxPooling1D`/`AveragePooling1D` take the max or the mean of each window; with `padding="same"` the
windows at the ends cover fewer real steps, and TensorFlow's average counts only those (padding never
enters a max or a mean). `GlobalAveragePooling1D` with a mask averages the kept steps only (Keras:
`sum(where(mask, x, 0)) / sum(mask)`, NaN when a sequence keeps none, as in Keras);
`GlobalMaxPooling1D` ignores masks (Keras 3 drops them: the layer does not support masking).
*/

use super::{Padding, window_geometry};
use crate::cell::Real;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

/// A pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool1d {
    /// Window length.
    pub size: usize,
    /// Step between windows.
    pub strides: usize,
    /// `Valid` or `Same`.
    pub padding: Padding,
    /// Max (true) or average (false).
    pub max: bool,
}

impl Pool1d {
    /// The output length for `len` steps (`None`: the window is longer than a valid sequence).
    pub fn out_len(&self, len: usize) -> Option<usize> {
        window_geometry(len, self.size.max(1), self.strides, self.padding).map(|(n, _)| n)
    }
}

/// Pools every window.
pub fn pool1d<T: Real>(x: ArrayView3<'_, T>, spec: &Pool1d) -> Array3<T> {
    let (batch, len, channels) = x.dim();
    let Some((out_len, left)) = window_geometry(len, spec.size.max(1), spec.strides, spec.padding)
    else {
        return Array3::zeros((batch, 0, channels));
    };
    let mut y = Array3::zeros((batch, out_len, channels));
    for o in 0..out_len {
        let start = (o * spec.strides.max(1)) as isize - left as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + spec.size as isize).max(0) as usize).min(len);
        if lo >= hi {
            continue;
        }
        let win = x.slice(ndarray::s![.., lo..hi, ..]);
        for b in 0..batch {
            for c in 0..channels {
                let col = win.slice(ndarray::s![b, .., c]);
                y[[b, o, c]] = if spec.max {
                    col.iter().copied().fold(T::neg_infinity(), T::max)
                } else {
                    col.iter().copied().fold(T::zero(), |a, v| a + v) / T::lit((hi - lo) as f64)
                };
            }
        }
    }
    y
}

/// `GlobalAveragePooling1D` (`max = false`, mask-aware) or `GlobalMaxPooling1D` (`max = true`, the mask
/// is not looked at) over the time axis: `(batch, channels)`.
pub fn global_pool1d<T: Real>(
    x: ArrayView3<'_, T>,
    mask: Option<ArrayView2<'_, bool>>,
    max: bool,
) -> Array2<T> {
    if max {
        return x.fold_axis(Axis(1), T::neg_infinity(), |&a, &v| a.max(v));
    }
    let (batch, len, channels) = x.dim();
    match mask {
        None => {
            let n = T::lit(len as f64);
            x.fold_axis(Axis(1), T::zero(), |&a, &v| a + v)
                .mapv(|s| s / n)
        }
        Some(m) => {
            let mut y = Array2::zeros((batch, channels));
            for b in 0..batch {
                let mut count = T::zero();
                for t in 0..len {
                    if m[[b, t]] {
                        count = count + T::one();
                        for c in 0..channels {
                            y[[b, c]] = y[[b, c]] + x[[b, t, c]];
                        }
                    }
                }
                for c in 0..channels {
                    y[[b, c]] = y[[b, c]] / count;
                }
            }
            y
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, array};

    fn seq(v: &[f64]) -> Array3<f64> {
        Array3::from_shape_vec((1, v.len(), 1), v.to_vec()).unwrap()
    }

    #[test]
    fn same_average_counts_real_steps_only() {
        let x = seq(&[1.0, 2.0, 3.0]);
        let spec = Pool1d {
            size: 3,
            strides: 1,
            padding: Padding::Same,
            max: false,
        };
        let y = pool1d(x.view(), &spec);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), [1.5, 2.0, 2.5]);
        let spec = Pool1d {
            size: 2,
            strides: 2,
            padding: Padding::Valid,
            max: true,
        };
        let y = pool1d(seq(&[1.0, -2.0, 3.0, 0.0, 9.0]).view(), &spec);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), [1.0, 3.0]);
    }

    #[test]
    fn masked_global_average_skips_masked_steps() {
        let x = seq(&[1.0, 2.0, 6.0]);
        let m = array![[true, false, true]];
        let y = global_pool1d(x.view(), Some(m.view()), false);
        assert_eq!(y[[0, 0]], 3.5);
        let y = global_pool1d(x.view(), Some(m.view()), true);
        assert_eq!(y[[0, 0]], 6.0);
        let y = global_pool1d(x.view(), None, false);
        assert_eq!(y[[0, 0]], 3.0);
    }
}
