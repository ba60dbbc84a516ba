/*!
`Attention` (Luong: dot-product, or `score_mode="concat"`) and `AdditiveAttention` (Bahdanau) over
`(batch, Tq, dim)` queries and `(batch, Tv, dim)` values/keys, as Keras 3 computes them:

- scores `(batch, Tq, Tv)`: dot `q·kᵀ` (times `scale` with `use_scale`); concat
  `concat_score_weight · Σ tanh(scale·(q + k))`; additive `Σ scale ⊙ tanh(q + k)` (`scale` a `(dim,)`
  vector with `use_scale`, else 1);
- where the value mask (and, with `use_causal_mask`, the causal mask `j ≤ i`) says a key is padding, the
  score is lowered by 1e9 (Keras's float32 value);
- `softmax` over the keys (the attention scores Keras returns with `return_attention_scores=True`, not
  zeroed for masked queries), times the values; rows whose query is masked are zero.

Under a float16/bfloat16 dtype policy ([`DtypePolicy`]) the dot-product scores are computed as TensorFlow
does: `q·kᵀ` and the weighted sum of values rounded as products, the scale and the padding offset
(65504, Keras's float16 value; 1e9 rounded for bfloat16) rounded as elementwise ops, the softmax as
[`DtypePolicy::softmax`]. The concat and additive scores are computed in the run's type (the caller
rounds the output once).
*/

use crate::cell::{DtypePolicy, Real};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

/// How scores are computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Score<T> {
    /// `q·kᵀ`, times `scale` when present.
    Dot {
        /// The learned scalar (`use_scale=True`).
        scale: Option<T>,
    },
    /// `weight · Σ tanh(scale·(q + k))`.
    Concat {
        /// The learned scalar (`use_scale=True`).
        scale: Option<T>,
        /// `concat_score_weight`.
        weight: T,
    },
    /// `Σ scale ⊙ tanh(q + k)` (AdditiveAttention).
    Additive {
        /// The learned `(dim,)` vector (`use_scale=True`).
        scale: Option<Vec<T>>,
    },
}

/// The attention output `(batch, Tq, value_dim)` and the attention scores `(batch, Tq, Tv)` (the softmax
/// weights).
#[allow(clippy::too_many_arguments)] // the three tensors, the score, two masks, causality and the policy
pub fn attention<T: Real>(
    q: ArrayView3<'_, T>,
    v: ArrayView3<'_, T>,
    k: ArrayView3<'_, T>,
    score: &Score<T>,
    q_mask: Option<ArrayView2<'_, bool>>,
    v_mask: Option<ArrayView2<'_, bool>>,
    causal: bool,
    policy: Option<DtypePolicy>,
) -> (Array3<T>, Array3<T>) {
    let (batch, tq, dim) = q.dim();
    let tv = k.dim().1;
    let vdim = v.dim().2;
    let mut out = Array3::zeros((batch, tq, vdim));
    let mut weights = Array3::zeros((batch, tq, tv));
    // Rounding of the dot-product path under a policy (identity otherwise).
    let policy = policy.filter(|_| matches!(score, Score::Dot { .. }));
    let prod = |x: T| policy.map_or(x, |p| p.matmul(x));
    let elem = |x: T| policy.map_or(x, |p| p.round(x));
    let big = match policy {
        Some(p) if p.compute() == "float16" => T::lit(65504.0),
        Some(p) => p.round(T::lit(1.0e9)),
        None => T::lit(1.0e9),
    };
    for b in 0..batch {
        let mut s = Array2::<T>::zeros((tq, tv));
        for i in 0..tq {
            for j in 0..tv {
                let mut acc = T::zero();
                match score {
                    Score::Dot { .. } => {
                        for d in 0..dim {
                            acc = acc + q[[b, i, d]] * k[[b, j, d]];
                        }
                    }
                    Score::Concat { scale, .. } => {
                        for d in 0..dim {
                            let x = q[[b, i, d]] + k[[b, j, d]];
                            acc = acc + scale.map_or(x, |s| s * x).tanh();
                        }
                    }
                    Score::Additive { scale } => {
                        for d in 0..dim {
                            let t = (q[[b, i, d]] + k[[b, j, d]]).tanh();
                            acc = acc + scale.as_ref().map_or(t, |s| s[d] * t);
                        }
                    }
                }
                acc = match score {
                    Score::Dot { scale: Some(s) } => elem(prod(acc) * elem(*s)),
                    Score::Dot { scale: None } => prod(acc),
                    Score::Concat { weight, .. } => *weight * acc,
                    _ => acc,
                };
                let padded = v_mask.is_some_and(|m| !m[[b, j]]) || (causal && j > i);
                s[[i, j]] = if padded { elem(acc - big) } else { acc };
            }
        }
        for i in 0..tq {
            let row = s.row(i);
            let w: Vec<T> = match policy {
                Some(p) => {
                    let mut w = row.to_vec();
                    p.softmax(&mut w);
                    w
                }
                None => {
                    let max = row.iter().copied().fold(T::neg_infinity(), T::max);
                    let e: Vec<T> = row.iter().map(|&x| (x - max).exp()).collect();
                    let sum = e.iter().fold(T::zero(), |a, &x| a + x);
                    e.iter().map(|&x| x / sum).collect()
                }
            };
            for (j, x) in w.iter().enumerate() {
                weights[[b, i, j]] = *x;
            }
            if q_mask.is_some_and(|m| !m[[b, i]]) {
                continue; // a masked query's row is zero
            }
            for d in 0..vdim {
                let mut acc = T::zero();
                for (j, w) in w.iter().enumerate() {
                    acc = acc + *w * v[[b, j, d]];
                }
                out[[b, i, d]] = prod(acc);
            }
        }
    }
    (out, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_first_query_sees_only_the_first_value() {
        let q = Array3::from_shape_vec((1, 2, 1), vec![1.0f64, 1.0]).unwrap();
        let v = Array3::from_shape_vec((1, 2, 1), vec![3.0, 5.0]).unwrap();
        let (out, weights) = attention(
            q.view(),
            v.view(),
            v.view(),
            &Score::Dot { scale: None },
            None,
            None,
            true,
            None,
        );
        assert_eq!(out[[0, 0, 0]], 3.0);
        // second query: softmax([3, 5]) weights
        let w = 1.0 / (1.0 + (2.0f64).exp());
        assert!((out[[0, 1, 0]] - (3.0 * w + 5.0 * (1.0 - w))).abs() < 1e-12);
        assert_eq!(weights[[0, 0, 1]], 0.0);
        assert!((weights[[0, 1, 0]] - w).abs() < 1e-12);
    }
}
