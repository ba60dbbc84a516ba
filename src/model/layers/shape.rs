/*!
Layers that only move values: `RepeatVector`, `Permute` on a sequence, `ZeroPadding1D`, `Cropping1D`.
*/

use crate::cell::Real;
use ndarray::{Array3, ArrayView2, ArrayView3, Axis, s};

/// `RepeatVector(n)`: `(batch, features)` to `(batch, n, features)`.
pub fn repeat_vector<T: Real>(x: ArrayView2<'_, T>, n: usize) -> Array3<T> {
    let (b, f) = x.dim();
    let mut y = Array3::zeros((b, n, f));
    for t in 0..n {
        y.index_axis_mut(Axis(1), t).assign(&x);
    }
    y
}

/// `Permute((2, 1))`: `(batch, a, b)` to `(batch, b, a)`.
pub fn swap_time_features<T: Real>(x: ArrayView3<'_, T>) -> Array3<T> {
    x.permuted_axes([0, 2, 1]).as_standard_layout().into_owned()
}

/// `ZeroPadding1D((left, right))`: zero steps before and after.
pub fn zero_pad<T: Real>(x: ArrayView3<'_, T>, left: usize, right: usize) -> Array3<T> {
    let (b, t, f) = x.dim();
    let mut y = Array3::zeros((b, left + t + right, f));
    y.slice_mut(s![.., left..left + t, ..]).assign(&x);
    y
}

/// `Cropping1D((left, right))`: drops steps at both ends (`None` when nothing would remain... Keras
/// refuses that at build time, so the loader has already).
pub fn crop<T: Real>(x: ArrayView3<'_, T>, left: usize, right: usize) -> Option<Array3<T>> {
    let t = x.dim().1;
    (left + right < t).then(|| x.slice(s![.., left..t - right, ..]).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn shapes_move() {
        let r = repeat_vector(array![[1.0f64, 2.0]].view(), 3);
        assert_eq!(r.dim(), (1, 3, 2));
        assert_eq!(r[[0, 2, 1]], 2.0);
        let x = Array3::from_shape_vec((1, 2, 3), (0..6).map(f64::from).collect()).unwrap();
        let p = swap_time_features(x.view());
        assert_eq!(p.dim(), (1, 3, 2));
        assert_eq!(p[[0, 2, 1]], 5.0);
        let z = zero_pad(x.view(), 1, 2);
        assert_eq!(z.dim(), (1, 5, 3));
        assert_eq!(z[[0, 1, 0]], 0.0 + x[[0, 0, 0]]);
        assert_eq!(z[[0, 4, 2]], 0.0);
        let c = crop(z.view(), 1, 2).unwrap();
        assert_eq!(c, x);
        assert!(crop(x.view(), 1, 1).is_none());
    }
}
