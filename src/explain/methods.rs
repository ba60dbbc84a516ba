/*!
The attribution methods over a [`Network`]: gradient, input × gradient, integrated gradients (Sundararajan
et al. 2017) with the integration rules Captum offers, and occlusion per timestep.

Integrated gradients evaluate the gradient at `b + α·(x − b)` for the rule's nodes α, all sequences and
nodes batched through the engine together (in passes whose recorded trace stays under a memory budget),
and report `(x − b) ⊙ Σ wₖ·∇f(b + αₖ(x − b))`, whose sum over a sequence approximates `f(x) − f(b)`
(completeness). Occlusion replaces one timestep by the baseline's and reports `f(x) − f(occluded)`.
*/

use super::network::{Forward, InitialState, Network};
use crate::cell::Real;
use crate::trace::Record;
use ndarray::{Array1, Array2, Array3, Axis, s};

/// Integration rules, named as Captum names them (`gausslegendre` is Captum's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgRule {
    /// Gauss–Legendre nodes on (0, 1).
    GaussLegendre,
    /// Left Riemann sum: α = 0, 1/n, …, (n−1)/n.
    RiemannLeft,
    /// Right Riemann sum: α = 1/n, …, 1.
    RiemannRight,
    /// Midpoints: α = (k + ½)/n.
    RiemannMiddle,
    /// Trapezoid rule on α = 0, 1/(n−1), …, 1.
    RiemannTrapezoid,
}

/// Every rule name, in the order messages list them.
pub const RULES: &[(&str, IgRule)] = &[
    ("gausslegendre", IgRule::GaussLegendre),
    ("riemann_left", IgRule::RiemannLeft),
    ("riemann_right", IgRule::RiemannRight),
    ("riemann_middle", IgRule::RiemannMiddle),
    ("riemann_trapezoid", IgRule::RiemannTrapezoid),
];

impl IgRule {
    /// Captum's name.
    pub fn name(self) -> &'static str {
        RULES
            .iter()
            .find(|(_, r)| *r == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }

    /// The nodes α in [0, 1] and their weights (summing to 1) for `n` steps, as Captum computes them
    /// (`captum.attr._utils.approximation_methods`).
    pub fn nodes(self, n: usize) -> (Vec<f64>, Vec<f64>) {
        let n = n.max(1);
        let nf = n as f64;
        match self {
            IgRule::GaussLegendre => {
                let (x, w) = gauss_legendre(n);
                (
                    x.iter().map(|v| 0.5 * (v + 1.0)).collect(),
                    w.iter().map(|v| 0.5 * v).collect(),
                )
            }
            IgRule::RiemannLeft => ((0..n).map(|k| k as f64 / nf).collect(), vec![1.0 / nf; n]),
            IgRule::RiemannRight => ((1..=n).map(|k| k as f64 / nf).collect(), vec![1.0 / nf; n]),
            IgRule::RiemannMiddle => (
                (0..n).map(|k| (k as f64 + 0.5) / nf).collect(),
                vec![1.0 / nf; n],
            ),
            IgRule::RiemannTrapezoid => {
                if n == 1 {
                    return (vec![0.5], vec![1.0]);
                }
                let m = (n - 1) as f64;
                let a = (0..n).map(|k| k as f64 / m).collect();
                let mut w = vec![1.0 / m; n];
                w[0] = 0.5 / m;
                w[n - 1] = 0.5 / m;
                (a, w)
            }
        }
    }
}

/// Gauss–Legendre nodes and weights on [−1, 1], ascending, by Newton's method on the Legendre polynomial
/// (the classic Numerical Recipes `gauleg`; converges to machine precision in a few iterations). Written
/// here because it is twenty lines and the quadrature crates pull in far more than this.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let m = n.div_ceil(2);
    for i in 0..m {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut pp = 0.0;
        for _ in 0..100 {
            let (mut p1, mut p2) = (1.0, 0.0);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                p1 = ((2 * j + 1) as f64 * z * p2 - j as f64 * p3) / (j + 1) as f64;
            }
            pp = n as f64 * (z * p1 - p2) / (z * z - 1.0);
            let z1 = z;
            z = z1 - p1 / pp;
            if (z - z1).abs() < 1e-15 {
                break;
            }
        }
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * pp * pp);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

/// How many sequences one differentiated pass may hold so its recorded trace stays near `budget` bytes.
pub fn sequences_per_pass<T: Real>(
    net: &Network<T>,
    steps: usize,
    features: usize,
    budget: usize,
) -> usize {
    let per_step: usize = net
        .recurrent_weights()
        .iter()
        .map(|w| 2 * w.kind.blocks() * w.units + 4 * w.units + w.features)
        .sum::<usize>()
        + features;
    (budget / (steps.max(1) * per_step.max(1) * std::mem::size_of::<T>())).max(1)
}

/// `k` copies of `a` along axis 0.
pub fn tile3<T: Real>(a: &Array3<T>, k: usize) -> Array3<T> {
    let v: Vec<_> = (0..k).map(|_| a.view()).collect();
    ndarray::concatenate(Axis(0), &v).expect("same shapes")
}

fn tile2<A: Clone>(a: &Array2<A>, k: usize) -> Array2<A> {
    let v: Vec<_> = (0..k).map(|_| a.view()).collect();
    ndarray::concatenate(Axis(0), &v).expect("same shapes")
}

/// Output `k` of every sequence after a forward pass.
pub fn output_k<T: Real>(fwd: &Forward<T>, k: usize) -> Array1<T> {
    fwd.output_rows().column(k).to_owned()
}

/// Integrated gradients of output `k`: `(attributions (B, T, F), f(x) − f(b) per sequence)`.
#[allow(clippy::too_many_arguments)]
pub fn integrated_gradients<T: Real>(
    net: &Network<T>,
    x: &Array3<T>,
    baseline: &Array3<T>,
    mask: Option<&Array2<bool>>,
    init: &InitialState<T>,
    k: usize,
    rule: IgRule,
    steps: usize,
    max_sequences: usize,
) -> Array3<T> {
    let (b, t, f) = x.dim();
    let (alphas, weights) = rule.nodes(steps);
    let diff = x - baseline;
    let mut acc = Array3::<T>::zeros((b, t, f));
    let per_pass = (max_sequences / b.max(1)).max(1);
    for (ac, wc) in alphas.chunks(per_pass).zip(weights.chunks(per_pass)) {
        let n = ac.len();
        let mut xs = Array3::<T>::zeros((n * b, t, f));
        for (j, &a) in ac.iter().enumerate() {
            let a = T::lit(a);
            ndarray::Zip::from(xs.slice_mut(s![j * b..(j + 1) * b, .., ..]))
                .and(baseline)
                .and(&diff)
                .for_each(|o, &bv, &d| *o = bv + a * d);
        }
        let m = mask.map(|m| tile2(m, n));
        let fwd = net.forward(xs, m, &init.tile(n), Record::BACKWARD);
        let seed = Network::seed(&fwd, k);
        let g = net.backward(&fwd, seed);
        for (j, &w) in wc.iter().enumerate() {
            let w = T::lit(w);
            ndarray::Zip::from(&mut acc)
                .and(g.dx.slice(s![j * b..(j + 1) * b, .., ..]))
                .for_each(|a, &gv| *a = *a + w * gv);
        }
    }
    acc * &diff
}

/// Occlusion of output `k` per timestep: `f(x) − f(x with step t replaced by the baseline's)`, (B, T).
#[allow(clippy::too_many_arguments)]
pub fn occlusion<T: Real>(
    net: &Network<T>,
    x: &Array3<T>,
    baseline: &Array3<T>,
    mask: Option<&Array2<bool>>,
    init: &InitialState<T>,
    k: usize,
    prediction: &Array1<T>,
    max_sequences: usize,
) -> Array2<T> {
    let (b, t, f) = x.dim();
    let mut out = Array2::<T>::zeros((b, t));
    let per_pass = (max_sequences / b.max(1)).max(1);
    let steps: Vec<usize> = (0..t).collect();
    for chunk in steps.chunks(per_pass) {
        let n = chunk.len();
        let mut xs = tile3(x, n);
        for (j, &ti) in chunk.iter().enumerate() {
            xs.slice_mut(s![j * b..(j + 1) * b, ti, ..])
                .assign(&baseline.slice(s![.., ti, ..]));
        }
        let _ = f;
        let m = mask.map(|m| tile2(m, n));
        let fwd = net.forward(xs, m, &init.tile(n), Record::STATES);
        let y = output_k(&fwd, k);
        for (j, &ti) in chunk.iter().enumerate() {
            for bi in 0..b {
                out[[bi, ti]] = prediction[bi] - y[j * b + bi];
            }
        }
    }
    out
}
