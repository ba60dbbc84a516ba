//! Finite-difference checks of the backward pass in float64 (the goldens from the frameworks are in
//! tests/cli/explain.rs; these catch a wrong derivative without Python and for every configuration).

use super::network::{InitialState, Merge, Network, Op, RecurrentOp};
use super::*;
use crate::cell::{Activation, Kernels};
use crate::engine::LayerSpec;
use crate::weights::{CellKind, CellWeights, DenseWeights};
use ndarray::{Array1, Array2, Array3};

fn val(i: usize, scale: f64) -> f64 {
    let x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
}

fn weights(kind: CellKind, f: usize, u: usize, reset_after: bool, seed: usize) -> CellWeights<f64> {
    let g = kind.blocks() * u;
    let a = |r: usize, c: usize, s: usize| {
        Array2::from_shape_fn((r, c), |(i, j)| val(s + i * c + j, 0.6))
    };
    CellWeights {
        kind,
        units: u,
        features: f,
        kernel: a(f, g, seed),
        recurrent_kernel: a(u, g, seed + 1000),
        bias: Some(Array1::from_shape_fn(g, |i| val(seed + 5000 + i, 0.5))),
        recurrent_bias: (kind == CellKind::Gru && reset_after)
            .then(|| Array1::from_shape_fn(g, |i| val(seed + 7000 + i, 0.5))),
        reset_after: kind == CellKind::Gru && reset_after,
        projection: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn rec(
    kind: CellKind,
    f: usize,
    u: usize,
    ra: bool,
    act: Activation,
    rec_act: Activation,
    back: bool,
    seq: bool,
    seed: usize,
) -> RecurrentOp<f64> {
    RecurrentOp {
        weights: weights(kind, f, u, ra, seed),
        spec: LayerSpec {
            name: kind.name().into(),
            activation: act,
            recurrent_activation: rec_act,
            go_backwards: back,
            carry_state: false,
        },
        return_sequences: seq,
        zero_output_for_mask: false,
    }
}

fn dense(i: usize, o: usize, act: Activation) -> Op<f64> {
    Op::Dense {
        weights: DenseWeights {
            kernel: Array2::from_shape_fn((i, o), |(a, b)| val(900 + a * o + b, 0.8)),
            bias: Some(Array1::from_shape_fn(o, |a| val(990 + a, 0.3))),
        },
        activation: act,
    }
}

/// Checks the gradient of output `k` against central differences, and the initial-state gradient.
fn check(
    net: &Network<f64>,
    x: &Array3<f64>,
    mask: Option<&Array2<bool>>,
    init: &InitialState<f64>,
    k: usize,
) {
    let fwd = net.forward(x.clone(), mask.cloned(), init, crate::trace::Record::ALL);
    let g = net.backward(&fwd, Network::seed(&fwd, k));
    let f = |x: &Array3<f64>, init: &InitialState<f64>| {
        let fw = net.forward(x.clone(), mask.cloned(), init, crate::trace::Record::STATES);
        methods::output_k(&fw, k)
    };
    let h = 1e-6;
    let scale = g.dx.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for idx in ndarray::indices(x.raw_dim()) {
        let (b, t, _) = idx;
        if x.slice(ndarray::s![b, t, ..]).iter().all(|&v| v == 0.0) {
            // A padded step under Masking: the gradient is zero by definition; a nudge would unmask it.
            assert_eq!(g.dx[idx], 0.0);
            continue;
        }
        let mut xp = x.clone();
        xp[idx] += h;
        let mut xm = x.clone();
        xm[idx] -= h;
        let num = (f(&xp, init)[b] - f(&xm, init)[b]) / (2.0 * h);
        assert!(
            (num - g.dx[idx]).abs() < 1e-6 * scale.max(1.0),
            "dx{idx:?}: {} vs {num}",
            g.dx[idx]
        );
    }
    if let (Some(h0), Some(dh0)) = (init.h0.as_ref(), g.dh0.as_ref()) {
        for idx in ndarray::indices(h0.raw_dim()) {
            let mut p = init.clone();
            p.h0.as_mut().unwrap()[idx] += h;
            let mut m = init.clone();
            m.h0.as_mut().unwrap()[idx] -= h;
            let num = (f(x, &p)[idx.0] - f(x, &m)[idx.0]) / (2.0 * h);
            assert!(
                (num - dh0[idx]).abs() < 1e-6,
                "dh0{idx:?}: {} vs {num}",
                dh0[idx]
            );
        }
    }
    if let (Some(c0), Some(dc0)) = (init.c0.as_ref(), g.dc0.as_ref()) {
        for idx in ndarray::indices(c0.raw_dim()) {
            let mut p = init.clone();
            p.c0.as_mut().unwrap()[idx] += h;
            let mut m = init.clone();
            m.c0.as_mut().unwrap()[idx] -= h;
            let num = (f(x, &p)[idx.0] - f(x, &m)[idx.0]) / (2.0 * h);
            assert!(
                (num - dc0[idx]).abs() < 1e-6,
                "dc0{idx:?}: {} vs {num}",
                dc0[idx]
            );
        }
    }
}

fn input(b: usize, t: usize, f: usize) -> Array3<f64> {
    Array3::from_shape_fn((b, t, f), |(i, j, k)| val(3 + i * 100 + j * 10 + k, 1.5))
}

#[test]
fn every_cell_and_activation_matches_finite_differences() {
    let x = input(3, 5, 2);
    let mask = Array2::from_shape_fn((3, 5), |(b, t)| {
        !(b == 1 && (t == 2 || t == 4)) && !(b == 2 && t == 0)
    });
    for kind in [CellKind::Lstm, CellKind::Gru, CellKind::SimpleRnn] {
        for ra in [true, false] {
            if ra && kind != CellKind::Gru {
                continue;
            }
            for (act, rec_act) in [
                (Activation::Tanh, Activation::Sigmoid),
                (Activation::Gelu, Activation::HardSigmoid),
                (Activation::Elu, Activation::HardSigmoidKeras2),
                (Activation::Softsign, Activation::Sigmoid),
                (Activation::Selu, Activation::Sigmoid),
                (Activation::Silu, Activation::Sigmoid),
                (Activation::Softmax, Activation::Softmax),
            ] {
                for back in [false, true] {
                    let u = 3;
                    let net = Network {
                        kernels: Kernels::Avx512,
                        ops: vec![
                            Op::Recurrent(rec(kind, 2, u, ra, act, rec_act, back, false, 11)),
                            dense(u, 2, Activation::Softmax),
                        ],
                    };
                    let init = InitialState {
                        h0: Some(Array2::from_shape_fn((3, u), |(i, j)| {
                            val(40 + i * 7 + j, 0.5)
                        })),
                        c0: (kind == CellKind::Lstm).then(|| {
                            Array2::from_shape_fn((3, u), |(i, j)| val(80 + i * 7 + j, 0.5))
                        }),
                    };
                    check(&net, &x, Some(&mask), &init, 1);
                }
            }
        }
    }
}

#[test]
fn stacks_and_bidirectional_match_finite_differences() {
    let x = input(2, 4, 3);
    for merge in [Merge::Concat, Merge::Sum, Merge::Ave, Merge::Mul] {
        let width = if merge == Merge::Concat { 4 } else { 2 };
        let net = Network {
            kernels: Kernels::Avx512,
            ops: vec![
                Op::Masking { value: 0.0 },
                Op::Bidirectional {
                    forward: RecurrentOp {
                        zero_output_for_mask: true,
                        ..rec(
                            CellKind::Lstm,
                            3,
                            2,
                            false,
                            Activation::Tanh,
                            Activation::Sigmoid,
                            false,
                            true,
                            1,
                        )
                    },
                    backward: RecurrentOp {
                        zero_output_for_mask: true,
                        ..rec(
                            CellKind::Gru,
                            3,
                            2,
                            true,
                            Activation::Tanh,
                            Activation::Sigmoid,
                            true,
                            true,
                            2,
                        )
                    },
                    merge,
                },
                Op::Recurrent(rec(
                    CellKind::Gru,
                    width,
                    3,
                    false,
                    Activation::Tanh,
                    Activation::Sigmoid,
                    true,
                    true,
                    3,
                )),
                Op::Recurrent(rec(
                    CellKind::SimpleRnn,
                    3,
                    2,
                    false,
                    Activation::Tanh,
                    Activation::Sigmoid,
                    false,
                    false,
                    4,
                )),
                dense(2, 1, Activation::Linear),
            ],
        };
        let mut xm = x.clone();
        xm.slice_mut(ndarray::s![1, 2, ..]).fill(0.0);
        check(&net, &xm, None, &InitialState::default(), 0);
    }
}

#[test]
fn integrated_gradients_are_complete() {
    let x = input(2, 6, 2);
    let net = Network {
        kernels: Kernels::Avx512,
        ops: vec![
            Op::Recurrent(rec(
                CellKind::Lstm,
                2,
                4,
                false,
                Activation::Tanh,
                Activation::Sigmoid,
                false,
                false,
                5,
            )),
            dense(4, 1, Activation::Linear),
        ],
    };
    for rule in [
        IgRule::GaussLegendre,
        IgRule::RiemannMiddle,
        IgRule::RiemannTrapezoid,
    ] {
        let req = Request {
            output: 0,
            methods: Methods::ALL,
            baseline: Array3::zeros(x.raw_dim()),
            ig_steps: 64,
            ig_rule: rule,
            pass_budget: 1 << 12,
        };
        let e = explain(&net, &x, None, &InitialState::default(), &req);
        for (c, (p, b)) in e
            .completeness
            .unwrap()
            .iter()
            .zip(e.prediction.iter().zip(&e.baseline_prediction))
        {
            assert!(c.abs() < 1e-3 * (p - b).abs().max(1e-9), "{rule:?}: {c}");
        }
    }
}

#[test]
fn gauss_legendre_integrates_polynomials_exactly() {
    let (a, w) = IgRule::GaussLegendre.nodes(5);
    // ∫0^1 x^8 dx = 1/9 (degree 2n−1 = 9 is exact)
    let s: f64 = a.iter().zip(&w).map(|(x, w)| w * x.powi(8)).sum();
    assert!((s - 1.0 / 9.0).abs() < 1e-14);
}

/// Dead units of an LSTM that returns only its last output are found from `o ⊙ act(c)` (its trace keeps
/// no h then, `Record::cell_only`): the same units as from the recorded h, masked steps passed over.
#[test]
fn dead_units_without_recorded_h_match_the_recorded_h() {
    let (f, u) = (3, 6);
    let mut r = rec(
        CellKind::Lstm,
        f,
        u,
        false,
        Activation::Tanh,
        Activation::Sigmoid,
        false,
        false,
        11,
    );
    // Units 1 and 4: the candidate's weights and bias are zero, so c and h stay exactly 0 from a zero state.
    for j in [1, 4] {
        r.weights.kernel.column_mut(2 * u + j).fill(0.0);
        r.weights.recurrent_kernel.column_mut(2 * u + j).fill(0.0);
        r.weights.bias.as_mut().unwrap()[2 * u + j] = 0.0;
    }
    // Unit 5: a tiny candidate, alive only where |h| reaches 1e-3 (checked against the recorded h below).
    r.weights
        .kernel
        .column_mut(2 * u + 5)
        .mapv_inplace(|v| v * 1e-4);
    r.weights.recurrent_kernel.column_mut(2 * u + 5).fill(0.0);
    r.weights.bias.as_mut().unwrap()[2 * u + 5] = 0.0;
    let net = Network {
        ops: vec![Op::Recurrent(r.clone()), dense(u, 2, Activation::Linear)],
        kernels: Kernels::Portable,
    };
    let x = input(4, 7, f);
    let mut mask = Array2::from_elem((4, 7), true);
    mask[[1, 0]] = false;
    mask[[2, 5]] = false;
    for m in [None, Some(&mask)] {
        let without_h = net.forward(
            x.clone(),
            m.cloned(),
            &InitialState::default(),
            Record::BACKWARD,
        );
        let with_h = net.forward(x.clone(), m.cloned(), &InitialState::default(), Record::ALL);
        let (a, b) = (without_h.recorded()[0], with_h.recorded()[0]);
        assert!(
            a.trace.h.is_none() && a.trace.c.is_some(),
            "cell_only kept h"
        );
        assert!(b.trace.h.is_some());
        let da = units::analyse(&a.trace, &a.blocks, &r.weights).dead;
        let db = units::analyse(&b.trace, &b.blocks, &r.weights).dead;
        assert_eq!(da, db, "mask {:?}", m.is_some());
        assert!(da.contains(&1) && da.contains(&4), "{da:?}");
        assert_eq!(without_h.output_rows(), with_h.output_rows());
        assert_eq!(net.output_width(7, f), 2);
    }
}

/// `Network::output_width` reads the width off the operations as a forward pass gives it.
#[test]
fn output_width_matches_the_forward_pass() {
    let (f, u) = (3, 4);
    let r = |seq| {
        rec(
            CellKind::Gru,
            f,
            u,
            true,
            Activation::Tanh,
            Activation::Sigmoid,
            false,
            seq,
            3,
        )
    };
    let nets = [
        vec![Op::Recurrent(r(false))],
        vec![Op::Recurrent(r(true))],
        vec![
            Op::Recurrent(r(true)),
            Op::Flatten,
            dense(7 * u, 3, Activation::Softmax),
        ],
        vec![
            Op::Bidirectional {
                forward: r(true),
                backward: r(true),
                merge: Merge::Concat,
            },
            dense(2 * u, 5, Activation::Linear),
        ],
        vec![Op::Bidirectional {
            forward: r(false),
            backward: r(false),
            merge: Merge::Sum,
        }],
    ];
    for ops in nets {
        let net = Network {
            ops,
            kernels: Kernels::Portable,
        };
        let fwd = net.forward(
            input(2, 7, f),
            None,
            &InitialState::default(),
            Record::STATES,
        );
        assert_eq!(net.output_width(7, f), fwd.output_rows().ncols());
    }
}
