/*!
`Embedding`: token ids to rows of the embedding matrix, and the `mask_zero` mask (`ids != 0`).
*/

use crate::cell::Real;
use ndarray::{Array2, Array3, ArrayView2};

/// Why an id cannot be looked up: its place and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadId {
    /// Sequence index.
    pub sequence: usize,
    /// Step index.
    pub step: usize,
    /// The value found.
    pub value: f64,
}

/// Looks up `ids` `(batch, timesteps)` in `table` `(vocabulary, dim)`. Every id must be an integer in
/// `0..vocabulary` (ids may come from a float array, but only whole numbers are accepted: Keras would
/// truncate a fraction silently).
pub fn lookup<T: Real>(
    table: ArrayView2<'_, T>,
    ids: ArrayView2<'_, f64>,
) -> Result<Array3<T>, BadId> {
    let (b, t) = ids.dim();
    let (vocab, dim) = table.dim();
    let mut out = Array3::zeros((b, t, dim));
    for ((bi, ti), &v) in ids.indexed_iter() {
        if !(v.is_finite() && v.fract() == 0.0 && v >= 0.0 && v < vocab as f64) {
            return Err(BadId {
                sequence: bi,
                step: ti,
                value: v,
            });
        }
        out.slice_mut(ndarray::s![bi, ti, ..])
            .assign(&table.row(v as usize));
    }
    Ok(out)
}

/// `mask_zero=True`: a step is kept where its id is not 0.
pub fn mask_zero(ids: ArrayView2<'_, f64>) -> Array2<bool> {
    ids.mapv(|v| v != 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rows_are_looked_up_and_bad_ids_named() {
        let table = array![[0.0f32, 0.5], [1.0, 1.5], [2.0, 2.5]];
        let ids = array![[2.0, 0.0], [1.0, 1.0]];
        let out = lookup(table.view(), ids.view()).unwrap();
        assert_eq!(out[[0, 0, 1]], 2.5);
        assert_eq!(out[[1, 1, 0]], 1.0);
        assert_eq!(mask_zero(ids.view()), array![[true, false], [true, true]]);
        let e = lookup(table.view(), array![[0.0, 3.0]].view()).unwrap_err();
        assert_eq!((e.sequence, e.step, e.value), (0, 1, 3.0));
        assert!(lookup(table.view(), array![[1.5]].view()).is_err());
        assert!(lookup(table.view(), array![[-1.0]].view()).is_err());
    }
}
