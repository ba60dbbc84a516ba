//! Engine checks: lanes, chunks, masks and kernels agree with the whole in-memory run.

use super::*;
use crate::trace::Kernels;

/// A deterministic pseudo-random value in [-scale, scale).
fn val(i: usize, scale: f32) -> f32 {
    let x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
}

fn weights(kind: CellKind, f: usize, u: usize, bias: bool, seed: usize) -> CellWeights<f32> {
    let g = kind.blocks();
    let a = |r: usize, c: usize, s: usize, scale: f32| {
        Array2::from_shape_fn((r, c), |(i, j)| val(s + i * c + j, scale))
    };
    CellWeights {
        kind,
        units: u,
        features: f,
        kernel: a(f, g * u, seed, 0.5),
        recurrent_kernel: a(u, g * u, seed + 100_000, 0.5),
        bias: bias.then(|| ndarray::Array1::from_shape_fn(g * u, |i| val(seed + 7 + i, 0.3))),
        recurrent_bias: (bias && kind.has_reset_after())
            .then(|| ndarray::Array1::from_shape_fn(g * u, |i| val(seed + 9_000 + i, 0.3))),
        reset_after: true,
        projection: None,
    }
}

/// Runs the fused kernels `fused` and the portable ones, returning the two traces.
fn both(
    fused: Kernels,
    w: &CellWeights<f32>,
    spec: &LayerSpec,
    x: &Array3<f32>,
    mask: Option<&Array2<bool>>,
    h0: Option<Array2<f32>>,
    c0: Option<Array2<f32>>,
) -> [LayerTrace<f32>; 2] {
    [fused, Kernels::Portable].map(|kernels| {
        let input = LayerInput {
            x: x.view().into(),
            mask: mask.map(|m| m.view()),
            h0: h0.clone(),
            c0: c0.clone(),
        };
        let never = &mut |_: usize, _: &Stores<f32>| -> crate::Result<()> { Ok(()) };
        run_layer_using(w, spec, input, Record::ALL, None, never, kernels).unwrap()
    })
}

fn close(what: &str, a: Option<&Array3<f32>>, b: Option<&Array3<f32>>) {
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.shape(), b.shape(), "{what}");
    let worst = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0f32, f32::max);
    // Both compute in float32 from the same weights; they differ in summation order and in the
    // last bits of the activations, a few 1e-7 at |values| ≤ ~5 (relative beyond 1: relu lets states grow).
    let big = b.iter().fold(0.0f32, |m, y| m.max(y.abs()));
    assert!(
        worst < 5e-6,
        "{what}: fused and portable differ by {worst} (relative; largest |value| {big})"
    );
}

/// The fused AVX-512 kernels against the portable ones: partial unit panels (units not a multiple of
/// 16), partial row tiles (batches not a multiple of 6), two lanes, masks, `go_backwards`, initial
/// states, no bias, carried state; every recorded array must agree.
#[test]
fn fused_kernels_agree_with_the_portable_ones() {
    #[cfg(target_arch = "x86_64")]
    let isas: Vec<Kernels> = [
        (Kernels::Avx512, std::is_x86_feature_detected!("avx512f")),
        (
            Kernels::Avx2,
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        ),
    ]
    .into_iter()
    .filter_map(|(k, has)| {
        if !has {
            eprintln!(
                "this CPU cannot run the {} kernels: not tested here",
                k.name()
            );
        }
        has.then_some(k)
    })
    .collect();
    #[cfg(not(target_arch = "x86_64"))]
    let isas: Vec<Kernels> = Vec::new();
    for isa in isas {
        compare_with_portable(isa);
    }
}

fn compare_with_portable(isa: Kernels) {
    let cases = [
        (CellKind::Lstm, 1, 1, 3, 1, true),
        (CellKind::Lstm, 13, 7, 5, 20, true),
        (CellKind::Lstm, 67, 40, 9, 33, false),
        (CellKind::Gru, 5, 6, 4, 16, true),
        (CellKind::Gru, 67, 40, 9, 37, true),
        (CellKind::Gru, 8, 3, 2, 3, false),
        (CellKind::SimpleRnn, 13, 7, 5, 20, true),
        (CellKind::SimpleRnn, 67, 40, 9, 33, false),
    ];
    // Keras's defaults, then the other activations the fused steps compute: both hard_sigmoids
    // (Keras 3's relu6(x + 3) / 6 and Keras 2's clip(0.2x + 0.5, 0, 1)), relu, linear.
    let acts = [
        (Activation::Tanh, Activation::Sigmoid),
        (Activation::Tanh, Activation::HardSigmoid),
        (Activation::Relu, Activation::HardSigmoidKeras2),
        (Activation::Linear, Activation::Sigmoid),
    ];
    for (n, &(kind, batch, steps, f, u, bias)) in cases.iter().enumerate() {
        let w = weights(kind, f, u, bias, 1000 * n);
        let x = Array3::from_shape_fn((batch, steps, f), |(b, t, k)| {
            val(50_000 + (b * steps + t) * f + k, 2.0)
        });
        let lstm = kind.has_cell_state();
        for (variant, (activation, recurrent_activation)) in
            (0..4).flat_map(|v| acts.iter().map(move |a| (v, *a)))
        {
            // Unbounded activations with these random weights make the recurrence expansive (states grow
            // and any rounding difference grows with them): a contracting recurrent kernel keeps the
            // comparison about the kernels, not about chaos.
            let mut w = w.clone();
            if matches!(activation, Activation::Relu | Activation::Linear) {
                w.recurrent_kernel.mapv_inplace(|v| v * 0.2);
            }
            let spec = LayerSpec {
                name: "l".into(),
                activation,
                recurrent_activation,
                go_backwards: variant == 1,
                carry_state: variant == 3,
            };
            let mask = (variant == 2)
                .then(|| Array2::from_shape_fn((batch, steps), |(b, t)| (b + 2 * t) % 3 != 0));
            let h0 = (variant >= 1)
                .then(|| Array2::from_shape_fn((batch, u), |(b, j)| val(b * u + j, 0.8)));
            let c0 = (variant >= 1 && lstm)
                .then(|| Array2::from_shape_fn((batch, u), |(b, j)| val(77 + b * u + j, 1.5)));
            let [fused, portable] = both(isa, &w, &spec, &x, mask.as_ref(), h0, c0);
            let what = format!(
                "{} case {n} variant {variant} {activation:?}/{recurrent_activation:?}",
                isa.name()
            );
            assert_eq!(fused.kernels, isa, "{what}");
            assert_eq!(portable.kernels, Kernels::Portable, "{what}");
            close(
                &format!("{what} pre"),
                fused.pre.as_ref(),
                portable.pre.as_ref(),
            );
            close(
                &format!("{what} gates"),
                fused.gates.as_ref(),
                portable.gates.as_ref(),
            );
            close(&format!("{what} h"), fused.h.as_ref(), portable.h.as_ref());
            close(
                &format!("{what} out"),
                fused.out.as_ref(),
                portable.out.as_ref(),
            );
            if lstm {
                close(&format!("{what} c"), fused.c.as_ref(), portable.c.as_ref());
            }
            assert_eq!(fused.masked, portable.masked, "{what}");
            let fin = |t: &LayerTrace<f32>| {
                Array3::from_shape_vec((1, batch, u), t.final_h.iter().copied().collect()).unwrap()
            };
            close(
                &format!("{what} final h"),
                Some(&fin(&fused)),
                Some(&fin(&portable)),
            );
        }
    }
}

/// Streaming in blocks (the `.npz` path) records the same steps as one in-memory run, for both
/// kernels, including a last block shorter than the others. Regression: the masked flags of one block
/// leaked into the next, which reuses the block's arrays.
#[test]
fn streamed_blocks_reassemble_to_the_in_memory_trace() {
    for kernels in [Kernels::Avx512, Kernels::Avx2, Kernels::Portable] {
        for kind in [CellKind::Lstm, CellKind::Gru] {
            let (batch, steps, f, u) = (40, 11, 6, 21);
            let w = weights(kind, f, u, true, 3);
            let x = Array3::from_shape_fn((batch, steps, f), |(b, t, k)| {
                val((b * steps + t) * f + k, 2.0)
            });
            let spec = LayerSpec {
                name: "l".into(),
                activation: Activation::Tanh,
                recurrent_activation: Activation::Sigmoid,
                go_backwards: false,
                carry_state: false,
            };
            let mask = Array2::from_shape_fn((batch, steps), |(b, t)| (b + 3 * t) % 7 != 0);
            let input = || LayerInput {
                x: x.view().into(),
                mask: Some(mask.view()),
                h0: None,
                c0: None,
            };
            let never = &mut |_: usize, _: &Stores<f32>| -> crate::Result<()> { Ok(()) };
            let whole =
                run_layer_using(&w, &spec, input(), Record::ALL, None, never, kernels).unwrap();
            let mut gates: Vec<Array3<f32>> = Vec::new();
            let mut h: Vec<Array3<f32>> = Vec::new();
            let mut seen = Vec::new();
            let mut masked: Vec<Array2<bool>> = Vec::new();
            let mut sink = |t0: usize, s: &Stores<f32>| -> crate::Result<()> {
                seen.push((t0, s.steps()));
                masked.push(s.masked.clone());
                let views: Vec<_> = s.gates.iter().map(|a| a.view()).collect();
                gates.push(ndarray::concatenate(Axis(2), &views).unwrap());
                h.push(s.h.clone().unwrap());
                Ok(())
            };
            let streamed =
                run_layer_using(&w, &spec, input(), Record::ALL, Some(4), &mut sink, kernels)
                    .unwrap();
            assert_eq!(seen, vec![(0, 4), (4, 4), (8, 3)]);
            let cat = |v: &[Array3<f32>]| {
                let views: Vec<_> = v.iter().map(|a| a.view()).collect();
                ndarray::concatenate(Axis(0), &views).unwrap()
            };
            assert_eq!(cat(&gates), whole.gates.unwrap(), "{kind:?} {kernels:?}");
            assert_eq!(cat(&h), whole.h.unwrap(), "{kind:?} {kernels:?}");
            let views: Vec<_> = masked.iter().map(|a| a.view()).collect();
            let masked = ndarray::concatenate(Axis(0), &views).unwrap();
            assert_eq!(masked, whole.masked, "{kind:?} {kernels:?}");
            assert_eq!(masked, mask.t().map(|&m| !m));
            assert_eq!(streamed.final_h, whole.final_h);
            // Nothing recorded: the states alternate between the lane's buffers across blocks.
            let mut ignore = |_: usize, _: &Stores<f32>| -> crate::Result<()> { Ok(()) };
            let bare = run_layer_using(
                &w,
                &spec,
                input(),
                Record::NONE,
                Some(4),
                &mut ignore,
                kernels,
            )
            .unwrap();
            assert_eq!(bare.final_h, whole.final_h, "{kind:?} {kernels:?}");
            assert_eq!(bare.last_output, whole.last_output, "{kind:?} {kernels:?}");
            if let (Some(a), Some(b)) = (&bare.final_c, &whole.final_c) {
                assert_eq!(a, b, "{kind:?} {kernels:?}");
            }
            assert!(streamed.gates.is_none() && streamed.h.is_none());
        }
    }
}

/// Regression (review): an input with fewer features than the weights reached the fused kernels,
/// which read past the input's rows. It is a panic with a message now, for both kernels.
#[test]
#[should_panic(expected = "input features vs weights")]
fn mismatched_input_features_panic_instead_of_reading_out_of_bounds() {
    let w = weights(CellKind::Lstm, 8, 16, true, 1);
    let x = Array3::<f32>::zeros((2, 3, 4));
    let spec = LayerSpec {
        name: "l".into(),
        activation: Activation::Tanh,
        recurrent_activation: Activation::Sigmoid,
        go_backwards: false,
        carry_state: false,
    };
    let input = LayerInput {
        x: x.view().into(),
        mask: None,
        h0: None,
        c0: None,
    };
    let _ = run_layer(&w, &spec, input);
}

/// The trace blocks and state buffers start on a cache line (a misaligned start made every vector
/// store of the fused kernels split across two lines: recording cost 15% of the LSTM step).
#[test]
fn aligned_buffers_start_on_a_cache_line() {
    for shape in [(1, 1, 1), (4, 512, 128), (3, 7, 33)] {
        let a: Array3<f32> = aligned_zeros(ndarray::Ix3(shape.0, shape.1, shape.2));
        assert_eq!(a.as_ptr() as usize % 64, 0, "{shape:?}");
        assert_eq!(a.dim(), shape);
        assert!(a.is_standard_layout() && a.iter().all(|&v| v == 0.0));
        let b: Array3<f64> = aligned_zeros(ndarray::Ix3(shape.0, shape.1, shape.2));
        assert_eq!(b.as_ptr() as usize % 64, 0, "{shape:?}");
    }
    let src = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f32);
    let c = aligned_copy(src.t());
    assert_eq!(c, src.t());
    assert_eq!(c.as_ptr() as usize % 64, 0);
}
