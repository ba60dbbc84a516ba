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
    weights_ra(kind, f, u, bias, seed, true)
}

/// [`weights`] with the GRU's `reset_after` chosen (`false`: one bias, as Keras 2 saves it).
fn weights_ra(
    kind: CellKind,
    f: usize,
    u: usize,
    bias: bool,
    seed: usize,
    reset_after: bool,
) -> CellWeights<f32> {
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
        recurrent_bias: (bias && kind.has_reset_after() && reset_after)
            .then(|| ndarray::Array1::from_shape_fn(g * u, |i| val(seed + 9_000 + i, 0.3))),
        reset_after,
        projection: None,
    }
}

/// Runs the fused kernels `fused` and the portable ones, returning the two traces.
fn both<T: Real>(
    fused: Kernels,
    w: &CellWeights<T>,
    spec: &LayerSpec,
    x: &Array3<T>,
    mask: Option<&Array2<bool>>,
    h0: Option<Array2<T>>,
    c0: Option<Array2<T>>,
) -> [LayerTrace<T>; 2] {
    [fused, Kernels::Portable].map(|kernels| {
        let input = LayerInput {
            x: x.view().into(),
            mask: mask.map(|m| m.view()),
            h0: h0.clone(),
            c0: c0.clone(),
        };
        let never = &mut |_: usize, _: &Stores<T>| -> crate::Result<()> { Ok(()) };
        run_layer_using(w, spec, input, Record::ALL, None, never, kernels).unwrap()
    })
}

/// Fails unless `a` and `b` agree to `tol`, relative beyond 1.
fn close<T: Real>(what: &str, a: Option<&Array3<T>>, b: Option<&Array3<T>>, tol: f64) {
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.shape(), b.shape(), "{what}");
    let worst = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x.to_f() - y.to_f()).abs() / (1.0 + y.to_f().abs()))
        .fold(0.0f64, f64::max);
    let big = b.iter().fold(0.0f64, |m, y| m.max(y.to_f().abs()));
    assert!(
        worst < tol,
        "{what}: fused and portable differ by {worst} (relative; largest |value| {big})"
    );
}

/// The instruction sets of the fused kernels this CPU has.
fn fused_isas() -> Vec<Kernels> {
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
    isas
}

/// The fused kernels (AVX-512 and AVX2, float32) against the portable ones: partial unit panels (units
/// not a multiple of the lanes), partial row tiles (batches not a multiple of 6), two lanes, masks,
/// `go_backwards`, initial states, no bias, carried state, both GRU variants; every recorded array must
/// agree. Both compute in float32 from the same weights; they differ in summation order and in the last
/// bits of the activations, a few 1e-7 at |values| ≤ ~5 (relative beyond 1: relu lets states grow).
#[test]
fn fused_kernels_agree_with_the_portable_ones() {
    for isa in fused_isas() {
        compare_with_portable::<f32>(isa, 5e-6);
    }
}

/// The same cases in float64 (the fused steps' f64 lanes and double-precision activations against the
/// portable cells on `gemm` products and the standard library's functions): they differ by summation order
/// and an ulp or two per activation, amplified over the steps to at most ~1e-14.
#[test]
fn fused_f64_kernels_agree_with_the_portable_ones() {
    for isa in fused_isas() {
        compare_with_portable::<f64>(isa, 1e-12);
    }
}

fn compare_with_portable<T: Real>(isa: Kernels, tol: f64) {
    // (kind, batch, steps, features, units, bias, reset_after)
    let cases = [
        (CellKind::Lstm, 1, 1, 3, 1, true, true),
        (CellKind::Lstm, 13, 7, 5, 20, true, true),
        (CellKind::Lstm, 67, 40, 9, 33, false, true),
        (CellKind::Gru, 5, 6, 4, 16, true, true),
        (CellKind::Gru, 67, 40, 9, 37, true, true),
        (CellKind::Gru, 8, 3, 2, 3, false, true),
        (CellKind::Gru, 5, 6, 4, 16, true, false),
        (CellKind::Gru, 67, 40, 9, 37, true, false),
        (CellKind::Gru, 8, 3, 2, 3, false, false),
        (CellKind::Gru, 1, 2, 1, 1, true, false),
        (CellKind::SimpleRnn, 13, 7, 5, 20, true, true),
        (CellKind::SimpleRnn, 67, 40, 9, 33, false, true),
    ];
    // Keras's defaults, then the other activations the fused steps compute: both hard_sigmoids
    // (Keras 3's relu6(x + 3) / 6 and Keras 2's clip(0.2x + 0.5, 0, 1)), relu, linear.
    let acts = [
        (Activation::Tanh, Activation::Sigmoid),
        (Activation::Tanh, Activation::HardSigmoid),
        (Activation::Relu, Activation::HardSigmoidKeras2),
        (Activation::Linear, Activation::Sigmoid),
    ];
    let t = |v: f32| T::lit(v as f64);
    for (n, &(kind, batch, steps, f, u, bias, reset_after)) in cases.iter().enumerate() {
        let w = weights_ra(kind, f, u, bias, 1000 * n, reset_after);
        let x = Array3::from_shape_fn((batch, steps, f), |(b, s, k)| {
            t(val(50_000 + (b * steps + s) * f + k, 2.0))
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
            let w = w.cast::<T>();
            let spec = LayerSpec {
                name: "l".into(),
                activation,
                recurrent_activation,
                go_backwards: variant == 1,
                carry_state: variant == 3,
            };
            let mask = (variant == 2)
                .then(|| Array2::from_shape_fn((batch, steps), |(b, s)| (b + 2 * s) % 3 != 0));
            let h0 = (variant >= 1)
                .then(|| Array2::from_shape_fn((batch, u), |(b, j)| t(val(b * u + j, 0.8))));
            let c0 = (variant >= 1 && lstm)
                .then(|| Array2::from_shape_fn((batch, u), |(b, j)| t(val(77 + b * u + j, 1.5))));
            let [fused, portable] = both(isa, &w, &spec, &x, mask.as_ref(), h0, c0);
            let what = format!(
                "{} {} case {n} (reset_after {reset_after}) variant {variant} {activation:?}/{recurrent_activation:?}",
                isa.name(),
                T::NAME,
            );
            assert_eq!(fused.kernels, isa, "{what}");
            assert_eq!(portable.kernels, Kernels::Portable, "{what}");
            let pairs = [
                ("pre", fused.pre.as_ref(), portable.pre.as_ref()),
                ("gates", fused.gates.as_ref(), portable.gates.as_ref()),
                ("h", fused.h.as_ref(), portable.h.as_ref()),
                ("out", fused.out.as_ref(), portable.out.as_ref()),
            ];
            for (name, a, b) in pairs {
                close(&format!("{what} {name}"), a, b, tol);
            }
            if lstm {
                close(
                    &format!("{what} c"),
                    fused.c.as_ref(),
                    portable.c.as_ref(),
                    tol,
                );
            }
            assert_eq!(fused.masked, portable.masked, "{what}");
            let fin = |t: &LayerTrace<T>| {
                Array3::from_shape_vec((1, batch, u), t.final_h.iter().copied().collect()).unwrap()
            };
            close(
                &format!("{what} final h"),
                Some(&fin(&fused)),
                Some(&fin(&portable)),
                tol,
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
        for (kind, reset_after) in [
            (CellKind::Lstm, true),
            (CellKind::Gru, true),
            (CellKind::Gru, false),
        ] {
            let (batch, steps, f, u) = (40, 11, 6, 21);
            let w = weights_ra(kind, f, u, true, 3, reset_after);
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

/// Stacked layers chained block by block (`run_chain_using`, what `run` does for a stack of
/// `return_sequences` layers) compute exactly what running them one after the other over the whole
/// sequence computes, for every kernel, with a mask, blocks not dividing the steps, and float64: every
/// streamed block of every layer equals the whole in-memory run of that layer on the layer before's
/// outputs, and the final states agree bit for bit (same kernels, same operations, same order).
#[test]
fn chained_layers_equal_layers_run_one_after_the_other() {
    fn check<T: Real>(kernels: Kernels, masked: bool) {
        let (batch, steps, f) = (9, 11, 5);
        let cells = [
            (CellKind::Lstm, 7, true),
            (CellKind::Gru, 20, false),
            (CellKind::Gru, 3, true),
        ];
        let mut ws: Vec<CellWeights<T>> = Vec::new();
        let mut width = f;
        for (n, &(kind, u, ra)) in cells.iter().enumerate() {
            ws.push(weights_ra(kind, width, u, true, 31 * n + 5, ra).cast::<T>());
            width = u;
        }
        let spec = |k: usize| LayerSpec {
            name: format!("l{k}"),
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            go_backwards: false,
            carry_state: false,
        };
        let specs: Vec<LayerSpec> = (0..cells.len()).map(spec).collect();
        let x = Array3::from_shape_fn((batch, steps, f), |(b, t, k)| {
            T::lit(val((b * steps + t) * f + k, 2.0) as f64)
        });
        let mask =
            masked.then(|| Array2::from_shape_fn((batch, steps), |(b, t)| (b + 3 * t) % 5 != 0));
        // One after the other, everything in memory; each reads the layer before's outputs.
        let mut whole: Vec<LayerTrace<T>> = Vec::new();
        let mut input = x.clone();
        for (w, s) in ws.iter().zip(&specs) {
            let li = LayerInput {
                x: input.view().into(),
                mask: mask.as_ref().map(|m| m.view()),
                h0: None,
                c0: None,
            };
            let never = &mut |_: usize, _: &Stores<T>| -> crate::Result<()> { Ok(()) };
            let t = run_layer_using(w, s, li, Record::ALL, None, never, kernels).unwrap();
            input = t
                .out
                .as_ref()
                .unwrap()
                .view()
                .permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned();
            whole.push(t);
        }
        let layers: Vec<ChainLayer<'_, T>> = ws
            .iter()
            .zip(&specs)
            .map(|(w, s)| ChainLayer {
                weights: w,
                spec: s,
                policy: None,
                record: Record::ALL,
                h0: None,
                c0: None,
            })
            .collect();
        let mut blocks: Vec<Vec<(usize, Stores<T>)>> = vec![Vec::new(); cells.len()];
        let mut sink = |k: usize, t0: usize, st: &Stores<T>| -> crate::Result<()> {
            blocks[k].push((t0, st.clone()));
            Ok(())
        };
        let chained = run_chain_using(
            layers,
            (x.view().into(), mask.as_ref().map(|m| m.view())),
            Some(4),
            &mut sink,
            kernels,
        )
        .unwrap();
        for (k, (c, w)) in chained.iter().zip(&whole).enumerate() {
            let what = format!("{} {} layer {k} mask {masked}", T::NAME, kernels.name());
            assert_eq!(c.final_h, w.final_h, "{what}");
            assert_eq!(c.final_c, w.final_c, "{what}");
            assert_eq!(c.last_output, w.last_output, "{what}");
            assert_eq!(c.kernels, w.kernels, "{what}");
            assert!(c.gates.is_none() && c.h.is_none(), "{what}: streamed");
            let t0s: Vec<usize> = blocks[k].iter().map(|(t0, _)| *t0).collect();
            assert_eq!(t0s, vec![0, 4, 8], "{what}");
            let cat = |f: &dyn Fn(&Stores<T>) -> Array3<T>| {
                let parts: Vec<Array3<T>> = blocks[k].iter().map(|(_, s)| f(s)).collect();
                let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
                ndarray::concatenate(Axis(0), &views).unwrap()
            };
            let gates = cat(&|s: &Stores<T>| {
                let v: Vec<_> = s.gates.iter().map(|a| a.view()).collect();
                ndarray::concatenate(Axis(2), &v).unwrap()
            });
            assert_eq!(&gates, w.gates.as_ref().unwrap(), "{what}: gates");
            let h = cat(&|s: &Stores<T>| s.h.clone().unwrap());
            assert_eq!(&h, w.h.as_ref().unwrap(), "{what}: h");
        }
    }
    for kernels in [Kernels::Avx512, Kernels::Avx2, Kernels::Portable] {
        for masked in [false, true] {
            check::<f32>(kernels, masked);
            check::<f64>(kernels, masked);
        }
    }
}
