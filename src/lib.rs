/*!
rnntrace: trace LSTM and GRU cells exactly as Keras and PyTorch compute them.

The library is layered so that each part can be used alone:
- [`io`] reads `.npy`, `.npz` and JSON arrays, hardened against hostile files;
- [`weights`] validates them into [`weights::CellWeights`] (one layout, Keras's);
- [`cell`] and [`engine`] compute, recording everything into a [`trace::Trace`];
- [`compare`] checks predictions against the framework's;
- [`render`] turns a trace into tables and JSON.

The command line ([`cli`], [`config`], [`app`]) is a thin layer over these. See `examples/` for the library
used directly.
*/

pub mod app;
pub mod cell;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod demo;
pub mod diagnose;
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
