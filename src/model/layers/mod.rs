/*!
The arithmetic of the Keras layers around the recurrent cells, as pure functions on `ndarray` arrays,
generic over the crate's [`Real`](crate::cell::Real): no I/O, no configuration parsing (that is
[`super::build`]), no masks beyond the ones a layer itself computes or consumes.

- [`embedding`]: `Embedding` lookup and its `mask_zero` mask;
- [`conv`]: `Conv1D` (valid/same/causal padding, strides, dilation, groups);
- [`pool`]: `MaxPooling1D`/`AveragePooling1D`, `GlobalAveragePooling1D` (mask-aware)/`GlobalMaxPooling1D`;
- [`norm`]: `BatchNormalization` (inference), `LayerNormalization`;
- [`shape`]: `RepeatVector`, `Permute`, `ZeroPadding1D`, `Cropping1D`;
- [`relu`]: `ReLU` (slope, clip, threshold) and `LeakyReLU`;
- [`merge`]: `Concatenate`, `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`;
- [`attention`]: `Attention` (dot, concat), `AdditiveAttention`.

Sequences are `(batch, timesteps, channels)` (Keras's `channels_last`), as everywhere in rnntrace. A layer
with `data_format='channels_first'` reads and writes `(batch, channels, timesteps)`: [`swap_channels`] and
[`swap_channels_shape`] are the one place that converts (Keras's TensorFlow backend transposes the same way
for pooling), so the arithmetic above only ever sees channels_last.
*/

use ndarray::Array3;

/// `(batch, channels, timesteps)` ↔ `(batch, timesteps, channels)` when `channels_first` (the swap is its
/// own inverse), in standard layout; `x` unchanged otherwise.
pub fn swap_channels<T: Clone>(x: Array3<T>, channels_first: bool) -> Array3<T> {
    if !channels_first {
        return x;
    }
    let mut x = x;
    x.swap_axes(1, 2);
    x.as_standard_layout().into_owned()
}

/// [`swap_channels`] on a shape, batch first (only 3-D shapes are swapped).
pub fn swap_channels_shape(s: &[Option<usize>], channels_first: bool) -> Vec<Option<usize>> {
    let mut s = s.to_vec();
    if channels_first && s.len() == 3 {
        s.swap(1, 2);
    }
    s
}

#[cfg(test)]
mod swap_tests {
    #[test]
    fn swapping_channels_twice_is_the_identity() {
        let x = ndarray::Array3::from_shape_fn((2, 3, 4), |(a, b, c)| a * 100 + b * 10 + c);
        let y = super::swap_channels(x.clone(), true);
        assert_eq!(y.dim(), (2, 4, 3));
        assert_eq!(y[[1, 3, 2]], x[[1, 2, 3]]);
        assert_eq!(super::swap_channels(y, true), x);
        assert_eq!(
            super::swap_channels_shape(&[None, Some(3), Some(4)], true),
            [None, Some(4), Some(3)]
        );
    }
}

pub mod attention;
pub mod conv;
pub mod embedding;
pub mod merge;
pub mod norm;
pub mod pool;
pub mod relu;
pub mod shape;

/// How a 1-D convolution or pooling window treats the sequence ends (Keras's `padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: only windows that fit inside the sequence.
    Valid,
    /// `ceil(T / strides)` outputs; the padding is split with the smaller half on the left (TensorFlow's
    /// rule).
    Same,
    /// `dilation·(kernel − 1)` zeros on the left only (Conv1D only), so output t sees inputs ≤ t.
    Causal,
}

impl Padding {
    /// Keras's name for it.
    pub fn parse(name: &str) -> Option<Padding> {
        match name.to_ascii_lowercase().as_str() {
            "valid" => Some(Padding::Valid),
            "same" => Some(Padding::Same),
            "causal" => Some(Padding::Causal),
            _ => None,
        }
    }
}

/// Output length and left padding of a window of `span` inputs (`dilation·(kernel−1)+1`) moved by `strides`
/// over `len` steps: `None` when no window fits (a valid window longer than the sequence).
pub fn window_geometry(
    len: usize,
    span: usize,
    strides: usize,
    padding: Padding,
) -> Option<(usize, usize)> {
    let strides = strides.max(1);
    match padding {
        Padding::Valid => (len >= span).then(|| ((len - span) / strides + 1, 0)),
        Padding::Same => {
            let out = len.div_ceil(strides);
            let needed = ((out.max(1) - 1) * strides + span).saturating_sub(len);
            Some((out, needed / 2))
        }
        Padding::Causal => {
            let left = span - 1;
            Some(((len + left - span) / strides + 1, left))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_tensorflow() {
        // valid: floor((T - span) / s) + 1
        assert_eq!(window_geometry(9, 3, 1, Padding::Valid), Some((7, 0)));
        assert_eq!(window_geometry(11, 3, 2, Padding::Valid), Some((5, 0)));
        assert_eq!(window_geometry(2, 3, 1, Padding::Valid), None);
        // same: ceil(T / s), padding total split smaller half left
        assert_eq!(window_geometry(9, 4, 2, Padding::Same), Some((5, 1)));
        assert_eq!(window_geometry(7, 3, 1, Padding::Same), Some((7, 1)));
        assert_eq!(window_geometry(7, 2, 1, Padding::Same), Some((7, 0)));
        // causal: left pad span - 1
        assert_eq!(window_geometry(10, 5, 1, Padding::Causal), Some((10, 4)));
    }
}
