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
        let wrong = ArrayD::<f64>::zeros(IxDyn(&[1, 3]));
        assert!(merge(MergeOp::Add, &[a.view(), wrong.view()], 0).is_err());
    }
}
