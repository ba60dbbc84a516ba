/*!
rnntrace: trace LSTM, GRU and SimpleRNN cells exactly as Keras and PyTorch compute them.

The library is layered so that each part can be used alone:
- [`io`] reads `.npy`, `.npz` and JSON arrays, hardened against hostile files;
- [`weights`] validates them into [`weights::CellWeights`] (one layout, Keras's);
- [`cell`] and [`engine`] compute, recording everything into a [`trace::Trace`];
- [`compare`] checks predictions against the framework's;
- [`explain`] differentiates a recorded forward pass: attributions over time and features, unit analyses;
- [`render`] turns a trace into tables and JSON.

The command line (the `rnntrace` binary: `src/main.rs`, `src/cli/`, `src/commands/`) is a thin layer over
these and not part of the library. See `examples/` for the library used directly.
*/

pub mod cell;
pub mod compare;
pub mod engine;
pub mod error;
pub mod explain;
pub mod io;
pub mod model;
pub mod render;
pub mod runner;
pub mod scaler;
pub mod trace;
pub mod weights;

pub use error::{Error, Result};
