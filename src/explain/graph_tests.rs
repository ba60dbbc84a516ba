//! Finite-difference checks of the graph's vector-Jacobian products in float64, on one graph that chains
//! every operation (the goldens from tf.GradientTape are in tests/cli/explain.rs): a wrong derivative, a
//! gradient sent to the wrong operand or lost at a branch shows here without Python.

use super::{GOp, Graph, Node, Src};
use crate::cell::{Activation, Kernels};
use crate::engine::LayerSpec;
use crate::explain::graph_methods::{Fed, seeds};
use crate::explain::network::{InitialState, RecurrentOp, Value};
use crate::model::layers::Padding;
use crate::model::layers::attention::Score;
use crate::model::layers::conv::Conv1d;
use crate::model::layers::merge::MergeOp;
use crate::model::layers::pool::Pool1d;
use crate::trace::Record;
use crate::weights::{CellKind, CellWeights, DenseWeights};
use ndarray::{Array1, Array2, Array3};

fn val(i: usize, scale: f64) -> f64 {
    let x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
}

fn a2(r: usize, c: usize, s: usize) -> Array2<f64> {
    Array2::from_shape_fn((r, c), |(i, j)| val(s + i * c + j, 0.7))
}

fn rec(kind: CellKind, f: usize, u: usize, seq: bool, back: bool, seed: usize) -> RecurrentOp<f64> {
    let g = kind.blocks() * u;
    RecurrentOp {
        weights: CellWeights {
            kind,
            units: u,
            features: f,
            kernel: a2(f, g, seed),
            recurrent_kernel: a2(u, g, seed + 1000),
            bias: Some(Array1::from_shape_fn(g, |i| val(seed + 5000 + i, 0.5))),
            recurrent_bias: (kind == CellKind::Gru)
                .then(|| Array1::from_shape_fn(g, |i| val(seed + 7000 + i, 0.5))),
            reset_after: kind == CellKind::Gru,
            projection: None,
        },
        spec: LayerSpec {
            name: kind.name().into(),
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            go_backwards: back,
            carry_state: false,
        },
        return_sequences: seq,
        zero_output_for_mask: false,
    }
}

fn dense(i: usize, o: usize, seed: usize, activation: Activation) -> GOp<f64> {
    GOp::Dense {
        weights: DenseWeights {
            kernel: a2(i, o, seed),
            bias: Some(Array1::from_shape_fn(o, |k| val(seed + 900 + k, 0.3))),
        },
        activation,
    }
}

fn node(name: &str, op: GOp<f64>, args: &[(usize, usize)], states: &[(usize, usize)]) -> Node<f64> {
    let src = |&(node, tensor): &(usize, usize)| Src { node, tensor };
    Node {
        name: name.into(),
        op,
        args: args.iter().map(src).collect(),
        states: states.iter().map(src).collect(),
        masks: Vec::new(),
        drops_mask: false,
    }
}

/// Inputs x (2, 6, 3) with a mask and s (2, 4); two outputs: (2, 2) softmax and a (2, 4, 3) sequence.
fn graph() -> Graph<f64> {
    let same = Padding::Same;
    let nodes = vec![
        node("x", GOp::Input, &[], &[]),
        node("s", GOp::Input, &[], &[]),
        node(
            "conv",
            GOp::Conv1D {
                kernel: Array3::from_shape_fn((3, 3, 4), |(a, b, c)| {
                    val(300 + a * 12 + b * 4 + c, 0.6)
                }),
                bias: Some(Array1::from_shape_fn(4, |k| val(350 + k, 0.2))),
                spec: Conv1d {
                    strides: 1,
                    dilation: 2,
                    padding: Padding::Causal,
                    groups: 1,
                },
                activation: Activation::Tanh,
                channels_first: false,
            },
            &[(0, 0)],
            &[],
        ),
        node(
            "pool",
            GOp::Pool1D(
                Pool1d {
                    size: 2,
                    strides: 1,
                    padding: same,
                    max: true,
                },
                false,
            ),
            &[(2, 0)],
            &[],
        ),
        node("pad", GOp::ZeroPad(1, 2), &[(3, 0)], &[]),
        node("crop", GOp::Crop(2, 1), &[(4, 0)], &[]),
        node(
            "ln",
            GOp::LayerNorm {
                gamma: Some(vec![1.1, 0.9, -0.7, 1.3]),
                beta: Some(vec![0.1, 0.0, -0.2, 0.3]),
                epsilon: 1e-3,
                rms_scaling: false,
                channels: 4,
            },
            &[(5, 0)],
            &[],
        ),
        node(
            "bn",
            GOp::BatchNorm {
                gamma: None,
                beta: Some(vec![0.1, 0.2, 0.3, 0.4]),
                mean: vec![0.1, -0.1, 0.2, 0.0],
                variance: vec![0.5, 1.5, 0.8, 2.0],
                epsilon: 1e-3,
            },
            &[(6, 0)],
            &[],
        ),
        node(
            "lstm",
            GOp::Recurrent {
                op: rec(CellKind::Lstm, 3, 3, true, false, 10),
                return_state: true,
            },
            &[(0, 0)],
            &[],
        ),
        node("permute", GOp::Permute(true), &[(8, 0)], &[]),
        node("permute_back", GOp::Permute(true), &[(9, 0)], &[]),
        node(
            "time_cat",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Concatenate,
                axis: 1,
            },
            &[(8, 0), (10, 0)],
            &[],
        ),
        node(
            "gap",
            GOp::GlobalPool {
                max: false,
                keepdims: false,
                channels_first: false,
            },
            &[(11, 0)],
            &[],
        ),
        node(
            "dense_s",
            dense(4, 3, 400, Activation::Tanh),
            &[(1, 0)],
            &[],
        ),
        node(
            "max",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Maximum,
                axis: -1,
            },
            &[(12, 0), (13, 0), (8, 1)],
            &[],
        ),
        node(
            "mul",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Multiply,
                axis: -1,
            },
            &[(14, 0), (8, 2)],
            &[],
        ),
        node(
            "cos",
            GOp::Dot {
                axes: (1, 1),
                normalize: true,
            },
            &[(15, 0), (13, 0)],
            &[],
        ),
        node("repeat", GOp::RepeatVector(4), &[(15, 0)], &[]),
        node(
            "gru",
            GOp::Recurrent {
                op: rec(CellKind::Gru, 3, 3, false, true, 20),
                return_state: false,
            },
            &[(17, 0)],
            &[(13, 0)],
        ),
        node(
            "gmp",
            GOp::GlobalPool {
                max: true,
                keepdims: true,
                channels_first: false,
            },
            &[(7, 0)],
            &[],
        ),
        node("flat", GOp::Flatten, &[(19, 0)], &[]),
        node(
            "relu",
            GOp::Relu {
                negative_slope: 0.2,
                max_value: Some(0.6),
                threshold: 0.05,
            },
            &[(20, 0)],
            &[],
        ),
        node(
            "sub",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Subtract,
                axis: -1,
            },
            &[(18, 0), (12, 0)],
            &[],
        ),
        node(
            "min_avg",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Average,
                axis: -1,
            },
            &[(22, 0), (13, 0)],
            &[],
        ),
        node(
            "att",
            GOp::Attention {
                score: Score::Additive {
                    scale: Some(vec![0.8, -1.1, 0.5]),
                },
                causal: true,
                return_scores: false,
            },
            &[(8, 0), (10, 0)],
            &[],
        ),
        node(
            "att_gap",
            GOp::GlobalPool {
                max: false,
                keepdims: false,
                channels_first: false,
            },
            &[(24, 0)],
            &[],
        ),
        node(
            "cat",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Concatenate,
                axis: -1,
            },
            &[(16, 0), (23, 0), (21, 0), (25, 0)],
            &[],
        ),
        node(
            "head",
            dense(11, 2, 600, Activation::Softmax),
            &[(26, 0)],
            &[],
        ),
        node(
            "seq_head",
            dense(3, 3, 700, Activation::Linear),
            &[(17, 0)],
            &[],
        ),
    ];
    Graph {
        nodes,
        inputs: vec![0, 1],
        outputs: vec![
            Src {
                node: 27,
                tensor: 0,
            },
            Src {
                node: 28,
                tensor: 0,
            },
        ],
        kernels: Kernels::Portable,
    }
}

fn inputs(x: &Array3<f64>, s: &Array2<f64>) -> Vec<Fed<f64>> {
    let mut mask = Array2::from_elem((2, 6), true);
    mask[[0, 4]] = false;
    mask[[1, 0]] = false;
    vec![
        (Value::Seq(x.clone()), Some(mask)),
        (Value::Flat(s.clone()), None),
    ]
}

#[test]
fn every_operation_matches_central_differences() {
    let g = graph();
    let x = Array3::from_shape_fn((2, 6, 3), |(a, b, c)| val(a * 18 + b * 3 + c, 1.0));
    let s = Array2::from_shape_fn((2, 4), |(a, b)| val(100 + a * 4 + b, 1.0));
    let init = InitialState::default();
    let fwd = g.forward(inputs(&x, &s), &init, Record::ALL);
    let outputs = fwd.output_rows().ncols();
    assert_eq!(outputs, 5);
    let f = |x: &Array3<f64>, s: &Array2<f64>, k: usize| {
        g.forward(inputs(x, s), &init, Record::STATES)
            .output_rows()
            .column(k)
            .to_owned()
    };
    let h = 1e-6;
    for k in 0..outputs {
        let (dx, _) = g.backward(&fwd, seeds(&fwd, k));
        let (Value::Seq(gx), Value::Flat(gs)) = (&dx[0], &dx[1]) else {
            panic!("gradient shapes")
        };
        let mut worst: f64 = 0.0;
        let scale = gx
            .iter()
            .chain(gs.iter())
            .fold(1e-3f64, |m, v| m.max(v.abs()));
        for idx in 0..x.len() {
            let (a, b, c) = (idx / 18, (idx / 3) % 6, idx % 3);
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[[a, b, c]] += h;
            xm[[a, b, c]] -= h;
            let num = (f(&xp, &s, k)[a] - f(&xm, &s, k)[a]) / (2.0 * h);
            worst = worst.max((num - gx[[a, b, c]]).abs());
        }
        for idx in 0..s.len() {
            let (a, b) = (idx / 4, idx % 4);
            let (mut sp, mut sm) = (s.clone(), s.clone());
            sp[[a, b]] += h;
            sm[[a, b]] -= h;
            let num = (f(&x, &sp, k)[a] - f(&x, &sm, k)[a]) / (2.0 * h);
            worst = worst.max((num - gs[[a, b]]).abs());
        }
        assert!(
            worst / scale < 1e-6,
            "output {k}: off by {worst} (scale {scale})"
        );
        // The masked steps of x reach the output only through the convolution (which drops the mask).
        assert!(gx.iter().any(|v| *v != 0.0));
    }
}

/// channels_first Conv1D, pooling and global pooling (with keepdims) between swaps: the gradient is the
/// channels-last one swapped back, checked by central differences on a (2, 3 channels, 8 steps) input.
#[test]
fn channels_first_layers_match_central_differences() {
    let conv = GOp::Conv1D {
        kernel: Array3::from_shape_fn((3, 3, 4), |(a, b, c)| val(600 + a * 12 + b * 4 + c, 0.6)),
        bias: Some(Array1::from_shape_fn(4, |k| val(650 + k, 0.2))),
        spec: Conv1d {
            strides: 2,
            dilation: 1,
            padding: Padding::Same,
            groups: 1,
        },
        activation: Activation::Tanh,
        channels_first: true,
    };
    let pool = GOp::Pool1D(
        Pool1d {
            size: 2,
            strides: 1,
            padding: Padding::Valid,
            max: false,
        },
        true,
    );
    let global = |max, keepdims| GOp::GlobalPool {
        max,
        keepdims,
        channels_first: true,
    };
    let g = Graph {
        nodes: vec![
            node("x", GOp::Input, &[], &[]),
            node("conv", conv, &[(0, 0)], &[]),
            node("pool", pool, &[(1, 0)], &[]),
            node("gmax", global(true, true), &[(2, 0)], &[]),
            node("flat", GOp::Flatten, &[(3, 0)], &[]),
            node("gavg", global(false, false), &[(0, 0)], &[]),
            node("perm", GOp::Permute(true), &[(2, 0)], &[]),
            node(
                "gru",
                GOp::Recurrent {
                    op: rec(CellKind::Gru, 4, 2, false, false, 60),
                    return_state: false,
                },
                &[(6, 0)],
                &[],
            ),
            node(
                "cat",
                GOp::Merge {
                    masked_extremum: true,
                    op: MergeOp::Concatenate,
                    axis: -1,
                },
                &[(4, 0), (5, 0), (7, 0)],
                &[],
            ),
        ],
        inputs: vec![0],
        outputs: vec![Src { node: 8, tensor: 0 }],
        kernels: Kernels::Portable,
    };
    let x = Array3::from_shape_fn((2, 3, 8), |(a, b, c)| val(700 + a * 24 + b * 8 + c, 1.0));
    let init = InitialState::default();
    let fed = |x: &Array3<f64>| vec![(Value::Seq(x.clone()), None)];
    let fwd = g.forward(fed(&x), &init, Record::ALL);
    let outputs = fwd.output_rows().ncols();
    assert_eq!(
        outputs,
        4 + 3 + 2,
        "gmax keepdims (b, 4, 1) flattened, gavg (b, 3), the GRU's 2"
    );
    let h = 1e-6;
    for k in 0..outputs {
        let (dx, _) = g.backward(&fwd, seeds(&fwd, k));
        let Value::Seq(gx) = &dx[0] else {
            panic!("gradient shapes")
        };
        assert_eq!(gx.dim(), x.dim());
        let mut worst: f64 = 0.0;
        for ((a, b, c), &got) in gx.indexed_iter() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[[a, b, c]] += h;
            xm[[a, b, c]] -= h;
            let f =
                |x: &Array3<f64>| g.forward(fed(x), &init, Record::STATES).output_rows()[[a, k]];
            worst = worst.max(((f(&xp) - f(&xm)) / (2.0 * h) - got).abs());
        }
        assert!(worst < 1e-7, "output {k}: off by {worst}");
        assert!(gx.iter().any(|v| *v != 0.0), "output {k}");
    }
}

/// A mask passed by hand replaces the propagated one (nonzero keeps the step) and gets no gradient; a
/// recurrent node that drops its mask (a Keras 3 call that recorded none) runs unmasked but passes the
/// mask on to a masked average.
#[test]
fn hand_masks_and_dropped_masks() {
    let lstm = |seq| GOp::Recurrent {
        op: rec(CellKind::Lstm, 3, 2, seq, false, 80),
        return_state: false,
    };
    let mut hand = node("lstm", lstm(false), &[(0, 0)], &[]);
    hand.masks = vec![Src { node: 1, tensor: 0 }];
    let g = Graph {
        nodes: vec![
            node("x", GOp::Input, &[], &[]),
            node("m", GOp::Input, &[], &[]),
            hand,
        ],
        inputs: vec![0, 1],
        outputs: vec![Src { node: 2, tensor: 0 }],
        kernels: Kernels::Portable,
    };
    let x = Array3::from_shape_fn((2, 5, 3), |(a, b, c)| val(900 + a * 15 + b * 3 + c, 1.0));
    let m = Array2::from_shape_fn((2, 5), |(a, t)| if (a + t) % 3 == 1 { 0.0 } else { 2.5 });
    let keep = m.mapv(|v| v != 0.0);
    let init = InitialState::default();
    // The propagated mask (all kept) is replaced by the given one.
    let fed = vec![
        (Value::Seq(x.clone()), Some(Array2::from_elem((2, 5), true))),
        (Value::Flat(m.clone()), None),
    ];
    let fwd = g.forward(fed, &init, Record::ALL);
    let alone = Graph {
        nodes: vec![
            node("x", GOp::Input, &[], &[]),
            node("lstm", lstm(false), &[(0, 0)], &[]),
        ],
        inputs: vec![0],
        outputs: vec![Src { node: 1, tensor: 0 }],
        kernels: Kernels::Portable,
    };
    let want = alone.forward(
        vec![(Value::Seq(x.clone()), Some(keep.clone()))],
        &init,
        Record::STATES,
    );
    assert_eq!(fwd.output_rows(), want.output_rows());
    let (dx, _) = g.backward(&fwd, seeds(&fwd, 0));
    let (Value::Seq(gx), Value::Flat(gm)) = (&dx[0], &dx[1]) else {
        panic!("gradient shapes")
    };
    assert!(
        gm.iter().all(|v| *v == 0.0),
        "the mask is not differentiated"
    );
    for ((b, t), &k) in keep.indexed_iter() {
        let reached = gx.slice(ndarray::s![b, t, ..]).iter().any(|v| *v != 0.0);
        assert_eq!(reached, k, "step ({b}, {t})");
    }

    // Dropped: the LSTM runs unmasked; the average after it still skips the masked steps.
    let mut dropping = node("lstm", lstm(true), &[(0, 0)], &[]);
    dropping.drops_mask = true;
    let avg = GOp::GlobalPool {
        max: false,
        keepdims: false,
        channels_first: false,
    };
    let g = Graph {
        nodes: vec![
            node("x", GOp::Input, &[], &[]),
            dropping,
            node("avg", avg, &[(1, 0)], &[]),
        ],
        inputs: vec![0],
        outputs: vec![Src { node: 2, tensor: 0 }],
        kernels: Kernels::Portable,
    };
    let got = g.forward(
        vec![(Value::Seq(x.clone()), Some(keep.clone()))],
        &init,
        Record::STATES,
    );
    let seq_only = Graph {
        nodes: vec![
            node("x", GOp::Input, &[], &[]),
            node("lstm", lstm(true), &[(0, 0)], &[]),
        ],
        inputs: vec![0],
        outputs: vec![Src { node: 1, tensor: 0 }],
        kernels: Kernels::Portable,
    };
    let unmasked = seq_only.forward(vec![(Value::Seq(x.clone()), None)], &init, Record::STATES);
    let Value::Seq(y) = &unmasked.outputs[0] else {
        panic!("a sequence")
    };
    let rows = got.output_rows();
    for b in 0..2 {
        let kept: Vec<usize> = (0..5).filter(|&t| keep[[b, t]]).collect();
        for u in 0..2 {
            let mean = kept.iter().map(|&t| y[[b, t, u]]).sum::<f64>() / kept.len() as f64;
            assert!((rows[[b, u]] - mean).abs() < 1e-12, "({b}, {u})");
        }
    }
}

/// Inputs x (2, 6, 3) with a mask and s (2, 4): a Bidirectional(LSTM) without a merge mode, started from
/// states computed from s and returning its states, which feed a head next to its pooled sequences; an
/// Attention on its two sequences returning its scores, which feed a second head.
fn states_and_scores_graph() -> Graph<f64> {
    let init = |seed| dense(4, 3, seed, Activation::Tanh);
    let nodes = vec![
        node("x", GOp::Input, &[], &[]),
        node("s", GOp::Input, &[], &[]),
        node("fh0", init(800), &[(1, 0)], &[]),
        node("fc0", init(810), &[(1, 0)], &[]),
        node("bh0", init(820), &[(1, 0)], &[]),
        node("bc0", init(830), &[(1, 0)], &[]),
        node(
            "bi",
            GOp::Bidirectional {
                forward: rec(CellKind::Lstm, 3, 3, true, false, 840),
                backward: rec(CellKind::Lstm, 3, 3, true, true, 850),
                merge: None,
                return_state: true,
            },
            &[(0, 0)],
            &[(2, 0), (3, 0), (4, 0), (5, 0)],
        ),
        node(
            "both",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Concatenate,
                axis: -1,
            },
            &[(6, 0), (6, 1)],
            &[],
        ),
        node(
            "gap",
            GOp::GlobalPool {
                max: false,
                keepdims: false,
                channels_first: false,
            },
            &[(7, 0)],
            &[],
        ),
        node(
            "cat",
            GOp::Merge {
                masked_extremum: true,
                op: MergeOp::Concatenate,
                axis: -1,
            },
            &[(8, 0), (6, 2), (6, 3), (6, 4), (6, 5)],
            &[],
        ),
        node(
            "head",
            dense(18, 2, 860, Activation::Linear),
            &[(9, 0)],
            &[],
        ),
        node(
            "att",
            GOp::Attention {
                score: Score::Dot { scale: Some(0.7) },
                causal: false,
                return_scores: true,
            },
            &[(6, 0), (6, 1)],
            &[],
        ),
        node("scores", GOp::Flatten, &[(11, 1)], &[]),
        node(
            "scores_head",
            dense(36, 1, 870, Activation::Linear),
            &[(12, 0)],
            &[],
        ),
        node(
            "att_gap",
            GOp::GlobalPool {
                max: false,
                keepdims: false,
                channels_first: false,
            },
            &[(11, 0)],
            &[],
        ),
    ];
    let out = |node| Src { node, tensor: 0 };
    Graph {
        nodes,
        inputs: vec![0, 1],
        outputs: vec![out(10), out(13), out(14)],
        kernels: Kernels::Portable,
    }
}

#[test]
fn bidirectional_states_and_attention_scores_match_central_differences() {
    let g = states_and_scores_graph();
    let x = Array3::from_shape_fn((2, 6, 3), |(a, b, c)| val(40 + a * 18 + b * 3 + c, 1.0));
    let s = Array2::from_shape_fn((2, 4), |(a, b)| val(140 + a * 4 + b, 1.0));
    let init = InitialState::default();
    let fwd = g.forward(inputs(&x, &s), &init, Record::ALL);
    let outputs = fwd.output_rows().ncols();
    assert_eq!(outputs, 6);
    let f = |x: &Array3<f64>, s: &Array2<f64>, k: usize| {
        g.forward(inputs(x, s), &init, Record::STATES)
            .output_rows()
            .column(k)
            .to_owned()
    };
    let h = 1e-6;
    for k in 0..outputs {
        let (dx, _) = g.backward(&fwd, seeds(&fwd, k));
        let (Value::Seq(gx), Value::Flat(gs)) = (&dx[0], &dx[1]) else {
            panic!("gradient shapes")
        };
        let scale = gx
            .iter()
            .chain(gs.iter())
            .fold(1e-3f64, |m, v| m.max(v.abs()));
        let mut worst: f64 = 0.0;
        for idx in 0..x.len() {
            let (a, b, c) = (idx / 18, (idx / 3) % 6, idx % 3);
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[[a, b, c]] += h;
            xm[[a, b, c]] -= h;
            let num = (f(&xp, &s, k)[a] - f(&xm, &s, k)[a]) / (2.0 * h);
            worst = worst.max((num - gx[[a, b, c]]).abs());
        }
        for idx in 0..s.len() {
            let (a, b) = (idx / 4, idx % 4);
            let (mut sp, mut sm) = (s.clone(), s.clone());
            sp[[a, b]] += h;
            sm[[a, b]] -= h;
            let num = (f(&x, &sp, k)[a] - f(&x, &sm, k)[a]) / (2.0 * h);
            worst = worst.max((num - gs[[a, b]]).abs());
        }
        assert!(
            worst / scale < 1e-6,
            "output {k}: off by {worst} (scale {scale})"
        );
        // Every output reaches both inputs (s through the initial states).
        assert!(gx.iter().any(|v| *v != 0.0) && gs.iter().any(|v| *v != 0.0));
    }
}

/// Every recurrent node's initial-state gradient, in trace order: the first layer's (started from
/// `init`) against central differences of its h0 and c0, a layer given its state by a link equal to the
/// gradient the linked input receives (its only reader), and a layer the output does not read all zeros.
#[test]
fn initial_state_gradients_of_every_recurrent_node() {
    let nodes = vec![
        node("x", GOp::Input, &[], &[]),
        node("s", GOp::Input, &[], &[]),
        node(
            "lstm",
            GOp::Recurrent {
                op: rec(CellKind::Lstm, 3, 3, true, false, 11),
                return_state: false,
            },
            &[(0, 0)],
            &[],
        ),
        node(
            "gru",
            GOp::Recurrent {
                op: rec(CellKind::Gru, 3, 4, false, true, 23),
                return_state: false,
            },
            &[(2, 0)],
            &[(1, 0)],
        ),
        node(
            "unread",
            GOp::Recurrent {
                op: rec(CellKind::SimpleRnn, 3, 2, false, false, 37),
                return_state: false,
            },
            &[(0, 0)],
            &[],
        ),
        node("head", dense(4, 2, 41, Activation::Linear), &[(3, 0)], &[]),
    ];
    let g = Graph {
        nodes,
        inputs: vec![0, 1],
        outputs: vec![Src { node: 5, tensor: 0 }],
        kernels: Kernels::Portable,
    };
    assert_eq!(g.first_state_entry(), Some(0));
    let x = Array3::from_shape_fn((2, 5, 3), |(a, b, c)| val(600 + a * 15 + b * 3 + c, 1.0));
    let s = Array2::from_shape_fn((2, 4), |(a, b)| val(700 + a * 4 + b, 0.8));
    let fed = |x: &Array3<f64>| -> Vec<Fed<f64>> {
        vec![
            (Value::Seq(x.clone()), None),
            (Value::Flat(s.clone()), None),
        ]
    };
    let h0 = Array2::from_shape_fn((2, 3), |(a, b)| val(800 + a * 3 + b, 0.5));
    let c0 = Array2::from_shape_fn((2, 3), |(a, b)| val(900 + a * 3 + b, 0.5));
    let init = |h: &Array2<f64>, c: &Array2<f64>| InitialState {
        h0: Some(h.clone()),
        c0: Some(c.clone()),
    };
    let f = |h: &Array2<f64>, c: &Array2<f64>, k: usize| {
        g.forward(fed(&x), &init(h, c), Record::STATES)
            .output_rows()
            .column(k)
            .to_owned()
    };
    let fwd = g.forward(fed(&x), &init(&h0, &c0), Record::ALL);
    let eps = 1e-6;
    for k in 0..2 {
        let (dx, states) = g.backward(&fwd, seeds(&fwd, k));
        assert_eq!(states.len(), 3, "lstm, gru, unread");
        let (dh, dc) = &states[0];
        let dc = dc.as_ref().expect("an LSTM has c");
        let mut worst: f64 = 0.0;
        for a in 0..2 {
            for u in 0..3 {
                for (which, got) in [(0, dh[[a, u]]), (1, dc[[a, u]])] {
                    let (mut p, mut m) = ((h0.clone(), c0.clone()), (h0.clone(), c0.clone()));
                    if which == 0 {
                        p.0[[a, u]] += eps;
                        m.0[[a, u]] -= eps;
                    } else {
                        p.1[[a, u]] += eps;
                        m.1[[a, u]] -= eps;
                    }
                    let num = (f(&p.0, &p.1, k)[a] - f(&m.0, &m.1, k)[a]) / (2.0 * eps);
                    worst = worst.max((num - got).abs());
                }
            }
        }
        let scale = dh
            .iter()
            .chain(dc.iter())
            .fold(1e-3f64, |m, v| m.max(v.abs()));
        assert!(
            worst / scale < 1e-6,
            "output {k}: lstm h0/c0 off by {worst}"
        );
        let Value::Flat(ds) = &dx[1] else {
            panic!("s is flat")
        };
        assert_eq!(&states[1].0, ds, "output {k}: the linked state's gradient");
        assert!(states[1].1.is_none(), "a GRU has no c");
        assert!(ds.iter().any(|v| *v != 0.0));
        assert_eq!(states[2].0, Array2::<f64>::zeros((2, 2)), "unread layer");
    }
}
