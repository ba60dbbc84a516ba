/*!
The numeric core: activations and the LSTM and GRU cells, generic over `f32` and `f64`.

A cell is a small config struct plus a `step` that advances a whole batch by one timestep, writing the
pre-activations, activated gates and new state into caller-owned buffers (no allocation per step). The cells
see only [`crate::weights::CellWeights`] in Keras layout; they never know which file the weights came from.
*/

pub mod activation;
pub mod gru;
pub mod lstm;

pub use activation::Activation;
pub use gru::GruCell;
pub use lstm::LstmCell;

use std::fmt::{Debug, Display};

/// The floating-point types the engine runs in.
pub trait Real:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + serde::Serialize
    + 'static
{
    /// Name as the trace reports it: `float32` or `float64`.
    const NAME: &'static str;
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn lit(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f(self) -> f64;
    /// The error function, for exact GELU.
    fn erf(self) -> Self;
}

impl Real for f32 {
    const NAME: &'static str = "float32";
    fn lit(v: f64) -> f32 {
        v as f32
    }
    fn to_f(self) -> f64 {
        self as f64
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
}

impl Real for f64 {
    const NAME: &'static str = "float64";
    fn lit(v: f64) -> f64 {
        v
    }
    fn to_f(self) -> f64 {
        self
    }
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}

/// Buffers one step writes into: (batch, blocks·units) for gates, (batch, units) for state.
#[derive(Debug, Clone)]
pub struct StepBuffers<T> {
    /// Pre-activations of every gate block.
    pub pre: ndarray::Array2<T>,
    /// Activated gates (i, f, o after the recurrent activation; candidates after the activation).
    pub gates: ndarray::Array2<T>,
    /// New hidden state.
    pub h: ndarray::Array2<T>,
    /// New cell state (LSTM; empty for GRU).
    pub c: ndarray::Array2<T>,
    /// Scratch for the recurrent product (GRU) or `act(c)` (LSTM).
    pub scratch: ndarray::Array2<T>,
}

impl<T: Real> StepBuffers<T> {
    /// Buffers for `batch` sequences of a cell with `blocks` gate blocks of `units` units.
    pub fn new(batch: usize, blocks: usize, units: usize, has_c: bool) -> StepBuffers<T> {
        let z = |r, c| ndarray::Array2::zeros((r, c));
        StepBuffers {
            pre: z(batch, blocks * units),
            gates: z(batch, blocks * units),
            h: z(batch, units),
            c: if has_c { z(batch, units) } else { z(0, units) },
            scratch: z(batch, blocks * units),
        }
    }
}
