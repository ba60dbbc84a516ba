/*!
Merge layers over tensors of one shape: `Add`, `Subtract` (exactly two inputs), `Multiply`, `Average`,
`Maximum`, `Minimum` elementwise, left to right as Keras folds them; `Concatenate` along an axis.
Tensors are given as `ndarray::ArrayD` (batch first).
*/

use crate::cell::Real;
use ndarray::{ArrayD, ArrayViewD, Axis};

/// Which merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeOp {
    /// `Concatenate(axis)`.
    Concatenate,
    /// `Add`: the sum.
    Add,
    /// `Subtract`: first minus second.
    Subtract,
    /// `Multiply`: the product.
    Multiply,
    /// `Average`: the sum divided by the count.
    Average,
    /// `Maximum`.
    Maximum,
    /// `Minimum`.
    Minimum,
}

impl MergeOp {
    /// The op for a Keras class name.
    pub fn from_class_name(name: &str) -> Option<MergeOp> {
        Some(match name {
            "Concatenate" => MergeOp::Concatenate,
            "Add" => MergeOp::Add,
            "Subtract" => MergeOp::Subtract,
            "Multiply" => MergeOp::Multiply,
            "Average" => MergeOp::Average,
            "Maximum" => MergeOp::Maximum,
            "Minimum" => MergeOp::Minimum,
            _ => return None,
        })
    }
}

/// Merges `inputs` (at least one; `Subtract` exactly two). `axis` is `Concatenate`'s, already resolved to
/// a non-negative index. Errors name the shapes that do not fit.
pub fn merge<T: Real>(
    op: MergeOp,
    inputs: &[ArrayViewD<'_, T>],
    axis: usize,
) -> Result<ArrayD<T>, String> {
    let first = inputs.first().ok_or("a merge needs at least one input")?;
    if op == MergeOp::Concatenate {
        return ndarray::concatenate(Axis(axis), inputs).map_err(|_| {
            let shapes: Vec<String> = inputs.iter().map(|a| format!("{:?}", a.shape())).collect();
            format!(
                "cannot concatenate shapes {} along axis {axis}",
                shapes.join(", ")
            )
        });
    }
    if op == MergeOp::Subtract && inputs.len() != 2 {
        return Err(format!(
            "Subtract takes exactly 2 inputs; it has {}",
            inputs.len()
        ));
    }
    if let Some(other) = inputs.iter().find(|a| a.shape() != first.shape()) {
        return Err(format!(
            "merges tensors of different shapes {:?} and {:?}",
            first.shape(),
            other.shape()
        ));
    }
    let mut acc = first.to_owned();
    for x in &inputs[1..] {
        acc.zip_mut_with(x, |a, &b| {
            *a = match op {
                MergeOp::Add | MergeOp::Average => *a + b,
                MergeOp::Subtract => *a - b,
                MergeOp::Multiply => *a * b,
                MergeOp::Maximum => a.max(b),
                MergeOp::Minimum => a.min(b),
                MergeOp::Concatenate => unreachable!("handled above"),
            }
        });
    }
    if op == MergeOp::Average {
        let n = T::lit(inputs.len() as f64);
        acc.mapv_inplace(|v| v / n);
    }
    Ok(acc)
}

/// Keras 3's `Maximum`/`Minimum` of masked sequences (`Merge._apply_merge_op_and_or_mask`), folding left:
/// where an operand is masked the accumulator stands in for it (`x = where(mask, x, acc)`), where the
/// accumulator is masked the operand stands in for it (`acc = where(acc_mask, acc, x)`), then
/// `acc = op(acc, x)`; the accumulator's mask is the OR of both when both have one, else none. `inputs`
/// are `(batch, steps, features)`, `masks` `(batch, steps)` (true = kept) or `None`. Returns the result and,
/// per element, the index of the input whose value it is (a tie goes to the earlier operand, as
/// TensorFlow's `x >= y` / `x <= y` gradients send it): the backward pass routes the gradient there.
/// (tf-keras's `Maximum` ignores masks: plain [`merge`].)
pub fn fold_masked_extremum<T: Real>(
    op: MergeOp,
    inputs: &[ndarray::ArrayView3<'_, T>],
    masks: &[Option<&ndarray::Array2<bool>>],
) -> (ndarray::Array3<T>, ndarray::Array3<usize>) {
    assert!(matches!(op, MergeOp::Maximum | MergeOp::Minimum));
    let mut acc = inputs[0].to_owned();
    let mut win = ndarray::Array3::<usize>::zeros(acc.raw_dim());
    let mut acc_mask = masks[0].cloned();
    for (i, (x, m)) in inputs.iter().zip(masks).enumerate().skip(1) {
        let (b, t, _) = x.dim();
        for bi in 0..b {
            for ti in 0..t {
                let x_kept = m.is_none_or(|m| m[[bi, ti]]);
                let acc_kept = acc_mask.as_ref().is_none_or(|m| m[[bi, ti]]);
                for (fi, &v) in x.slice(ndarray::s![bi, ti, ..]).iter().enumerate() {
                    let a = &mut acc[[bi, ti, fi]];
                    // x masked: op(acc, acc) = acc. acc masked (x kept): op(x, x) = x, x's. Both kept: the
                    // op, a tie to the accumulator.
                    let takes = if !x_kept {
                        false
                    } else if !acc_kept {
                        true
                    } else if op == MergeOp::Maximum {
                        v > *a
                    } else {
                        v < *a
                    };
                    if takes {
                        *a = v;
                        win[[bi, ti, fi]] = i;
                    }
                }
            }
        }
        acc_mask = match (acc_mask, m) {
            (Some(a), Some(m)) => Some(ndarray::Zip::from(&a).and(*m).map_collect(|&p, &q| p || q)),
            _ => None,
        };
    }
    (acc, win)
}

/// `Dot(axes, normalize)`: the batched dot product of `x` and `y` over axis `ax` of `x` and `ay` of `y`
/// (both ≥ 1; the batch axis is 0), L2-normalised along those axes first when `normalize` (Keras 3:
/// `x · min(rsqrt(Σx²), 1/1e-7)`; tf-keras caps at 1e6 instead, which differs only for vectors of norm
/// below 1e-6). The result keeps `x`'s other axes then `y`'s; `(batch, 1)` when none
/// remain.
pub fn dot<T: Real>(
    x: ArrayViewD<'_, T>,
    y: ArrayViewD<'_, T>,
    ax: usize,
    ay: usize,
    normalize: bool,
) -> Result<ArrayD<T>, String> {
    let (xs, ys) = (x.shape().to_vec(), y.shape().to_vec());
    if ax == 0 || ay == 0 || ax >= xs.len() || ay >= ys.len() {
        return Err(format!(
            "axes ({ax}, {ay}) do not fit shapes {xs:?} and {ys:?}"
        ));
    }
    if xs[0] != ys[0] || xs[ax] != ys[ay] {
        return Err(format!(
            "cannot take the dot product of shapes {xs:?} and {ys:?} over axes ({ax}, {ay})"
        ));
    }
    let d = xs[ax];
    // Move the contracted axis last and flatten the others: (batch, rest, d).
    let flat = |a: ArrayViewD<'_, T>, axis: usize| -> ArrayD<T> {
        let n = a.ndim();
        let mut order: Vec<usize> = (0..n).filter(|&i| i != axis).collect();
        order.push(axis);
        let mut a = a.permuted_axes(order).as_standard_layout().into_owned();
        if normalize {
            let shape = a.shape().to_vec();
            if let Some(data) = a.as_slice_mut() {
                for row in data.chunks_exact_mut(*shape.last().unwrap_or(&1)) {
                    let ss = row.iter().fold(T::zero(), |s, &v| s + v * v);
                    let r = (T::one() / ss.sqrt()).min(T::lit(1e7));
                    row.iter_mut().for_each(|v| *v = *v * r);
                }
            }
        }
        a
    };
    let (fx, fy) = (flat(x, ax), flat(y, ay));
    let batch = xs[0];
    let rx: usize = xs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 0 && i != ax)
        .map(|(_, v)| v)
        .product();
    let ry: usize = ys
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 0 && i != ay)
        .map(|(_, v)| v)
        .product();
    let fx = fx.as_slice().ok_or("dot: layout")?;
    let fy = fy.as_slice().ok_or("dot: layout")?;
    let mut out = Vec::with_capacity(batch * rx * ry);
    for b in 0..batch {
        for i in 0..rx {
            let xr = &fx[(b * rx + i) * d..(b * rx + i + 1) * d];
            for j in 0..ry {
                let yr = &fy[(b * ry + j) * d..(b * ry + j + 1) * d];
                out.push(xr.iter().zip(yr).fold(T::zero(), |s, (&p, &q)| s + p * q));
            }
        }
    }
    let mut shape: Vec<usize> = vec![batch];
    shape.extend(
        xs.iter()
            .enumerate()
            .filter(|&(i, _)| i != 0 && i != ax)
            .map(|(_, v)| *v),
    );
    shape.extend(
        ys.iter()
            .enumerate()
            .filter(|&(i, _)| i != 0 && i != ay)
            .map(|(_, v)| *v),
    );
    if shape.len() == 1 {
        shape.push(1);
    }
    ArrayD::from_shape_vec(shape, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{IxDyn, array};

    #[test]
    fn elementwise_and_concatenate() {
        let a = array![[1.0f64, 5.0]].into_dyn();
        let b = array![[3.0f64, 2.0]].into_dyn();
        let v = [a.view(), b.view()];
        assert_eq!(
            merge(MergeOp::Subtract, &v, 0).unwrap(),
            array![[-2.0, 3.0]].into_dyn()
        );
        assert_eq!(
            merge(MergeOp::Average, &v, 0).unwrap(),
            array![[2.0, 3.5]].into_dyn()
        );
        assert_eq!(
            merge(MergeOp::Maximum, &v, 0).unwrap(),
            array![[3.0, 5.0]].into_dyn()
        );
        let c = merge(MergeOp::Concatenate, &v, 1).unwrap();
        assert_eq!(c.shape(), &[1, 4]);
        assert_eq!(
            dot(a.view(), b.view(), 1, 1, false).unwrap(),
            array![[13.0]].into_dyn()
        );
        let wrong = ArrayD::<f64>::zeros(IxDyn(&[1, 3]));
        assert!(merge(MergeOp::Add, &[a.view(), wrong.view()], 0).is_err());
    }
}
