//! Using rnntrace as a library: load Keras weights, run an LSTM over a batch, read gates from the trace.
//!
//! Run it on a golden fixture:
//!
//!     cargo run --example library -- fixtures/cases/lstm_units1_seed/weights.json fixtures/cases/lstm_units1_seed/input.npy

use rnntrace::cell::Activation;
use rnntrace::engine::{LayerInput, LayerSpec, run_layer};
use rnntrace::weights::keras::{ResetAfter, from_arrays};
use rnntrace::weights::{CellKind, load_arrays};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [weights_path, input_path] = args.as_slice() else {
        return Err("usage: library WEIGHTS INPUT.npy".into());
    };
    // 1. Load and validate: any supported container, Keras layout, shapes checked once.
    let arrays = load_arrays(weights_path, &["kernel", "recurrent_kernel", "bias"])?;
    let weights = from_arrays(CellKind::Lstm, &arrays, ResetAfter::Auto)?.cast::<f32>();
    // 2. The input: (sequences, timesteps, features).
    let raw = rnntrace::io::read_npy(input_path)?;
    let x = ndarray::Array3::from_shape_vec((raw.shape[0], raw.shape[1], raw.shape[2]), raw.data)?
        .mapv(|v| v as f32);
    // 3. Run: no I/O in here, just numbers in and a trace out.
    let spec = LayerSpec {
        name: "lstm".into(),
        activation: Activation::Tanh,
        recurrent_activation: Activation::Sigmoid,
        go_backwards: false,
        carry_state: false,
    };
    let trace = run_layer(
        &weights,
        &spec,
        LayerInput {
            x: x.view().into(),
            mask: None,
            h0: None,
            c0: None,
        },
    );
    // 4. Read what you need from the trace.
    for b in 0..trace.sequences() {
        for t in 0..trace.steps() {
            let [i, f, c, o] = [0, 1, 2, 3].map(|k| trace.gate(b, t, k).to_vec());
            println!("sequence {b} step {t}: i={i:?} f={f:?} c̃={c:?} o={o:?}");
        }
    }
    println!("last output: {:?}", trace.last_output.row(0).to_vec());
    Ok(())
}
