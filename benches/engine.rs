//! Criterion benchmarks: one portable cell step, and the whole forward pass recording every gate and state
//! at several sizes, with the fused kernels for AVX-512 and AVX2 (where the CPU has them) and the portable ones.
//!
//!     cargo bench --bench engine
//!
//! Weights and inputs are random (the cost does not depend on the values).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array1, Array2, Array3};
use rnntrace::cell::{Activation, LstmCell, StepOut};
use rnntrace::engine::{LayerInput, LayerSpec, run_layer_using};
use rnntrace::trace::{Kernels, Record};
use rnntrace::weights::{CellKind, CellWeights};
use std::hint::black_box;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
}

fn weights(kind: CellKind, features: usize, units: usize) -> CellWeights<f32> {
    let g = kind.blocks();
    let mut s = 42u64;
    CellWeights {
        kind,
        units,
        features,
        kernel: Array2::from_shape_fn((features, g * units), |_| lcg(&mut s)),
        recurrent_kernel: Array2::from_shape_fn((units, g * units), |_| lcg(&mut s)),
        bias: Some(Array1::from_shape_fn(g * units, |_| lcg(&mut s))),
        recurrent_bias: (kind == CellKind::Gru)
            .then(|| Array1::from_shape_fn(g * units, |_| lcg(&mut s))),
        reset_after: kind == CellKind::Gru,
        projection: None,
    }
}

fn spec() -> LayerSpec {
    LayerSpec {
        name: "bench".into(),
        activation: Activation::Tanh,
        recurrent_activation: Activation::Sigmoid,
        go_backwards: false,
        carry_state: false,
    }
}

fn step(c: &mut Criterion) {
    let mut g = c.benchmark_group("lstm_step");
    for &(batch, units) in &[(32usize, 64usize), (256, 128), (512, 256)] {
        let w = weights(CellKind::Lstm, 32, units);
        let xp = Array2::<f32>::from_elem((batch, 4 * units), 0.1);
        let h = Array2::<f32>::from_elem((batch, units), 0.2);
        let cs = Array2::<f32>::from_elem((batch, units), 0.3);
        let (mut pre, mut gates, mut hn, mut cn, mut sc) = (
            Array2::zeros((batch, 4 * units)),
            Array2::zeros((batch, 4 * units)),
            Array2::zeros((batch, units)),
            Array2::zeros((batch, units)),
            Array2::zeros((batch, 4 * units)),
        );
        let cell = LstmCell {
            weights: &w,
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
        };
        g.throughput(Throughput::Elements((batch * 4 * units) as u64));
        g.bench_function(
            BenchmarkId::from_parameter(format!("b{batch}_u{units}")),
            |b| {
                b.iter(|| {
                    pre.assign(&xp);
                    cell.step(
                        h.view(),
                        cs.view(),
                        StepOut {
                            pre: pre.view_mut(),
                            gates: gates.view_mut(),
                            h: hn.view_mut(),
                            c: cn.view_mut(),
                            scratch: sc.view_mut(),
                        },
                    );
                    black_box(&hn);
                })
            },
        );
    }
    g.finish();
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_record_all");
    g.sample_size(10);
    for kind in [CellKind::Lstm, CellKind::Gru] {
        for &(batch, steps, units) in &[(64usize, 50usize, 64usize), (512, 100, 128)] {
            let w = weights(kind, 32, units);
            let mut s = 7u64;
            let x = Array3::from_shape_fn((batch, steps, 32), |_| lcg(&mut s) * 10.0);
            for kernels in [Kernels::Avx512, Kernels::Avx2, Kernels::Portable] {
                // What actually runs (a CPU without AVX-512 runs the next best twice).
                let id = format!("{}_{}", kind.name(), kernels.name());
                g.bench_function(
                    BenchmarkId::new(id, format!("b{batch}_t{steps}_u{units}")),
                    |b| {
                        b.iter(|| {
                            let input = LayerInput {
                                x: x.view().into(),
                                mask: None,
                                h0: None,
                                c0: None,
                            };
                            // Gates and states recorded 4 steps at a time, as `--trace FILE.npz` does,
                            // into a sink that drops them (no file I/O).
                            let t = run_layer_using(
                                &w,
                                &spec(),
                                input,
                                Record::GATES,
                                Some(4),
                                &mut |_, s| {
                                    black_box(s);
                                    Ok(())
                                },
                                kernels,
                            );
                            black_box(t.ok());
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

criterion_group!(benches, step, forward);
criterion_main!(benches);
