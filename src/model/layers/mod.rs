/*!
The arithmetic of the Keras layers around the recurrent cells, as pure functions on `ndarray` arrays,
generic over the crate's [`Real`](crate::cell::Real): no I/O, no configuration parsing (that is
[`super::build`]), no masks beyond the ones a layer itself computes or consumes.

- [`embedding`]: `Embedding` lookup and its `mask_zero` mask;
- [`conv`]: `Conv1D` (valid/same/causal padding, strides, dilation, groups);
- [`pool`]: `MaxPooling1D`/`AveragePooling1D`, `GlobalAveragePooling1D` (mask-aware)/`GlobalMaxPooling1D`;
- [`norm`]: `BatchNormalization` (inference), `LayerNormalization`;
- [`shape`]: `RepeatVector`, `Permute`, `ZeroPadding1D`, `Cropping1D`;
- [`merge`]: `Concatenate`, `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`;
- [`attention`]: `Attention` (dot, concat), `AdditiveAttention`.

Sequences are `(batch, timesteps, channels)` (Keras's `channels_last`), as everywhere in rnntrace.
*/

pub mod attention;
pub mod conv;
pub mod embedding;
pub mod merge;
pub mod norm;
pub mod pool;
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
