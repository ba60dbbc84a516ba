/*!
The numeric core: what a cell is ([`kind`]), activations and the LSTM, GRU and SimpleRNN cells, generic
over `f32` and `f64`; the same cells under a float16/bfloat16 dtype policy ([`rounding`], [`rounded`]).

A cell is a small config struct plus a `step` that advances a whole batch by one timestep, writing the
pre-activations, activated gates and new state into caller-owned buffers (no allocation per step). The cells
see only [`CellWeights`] in Keras layout; they never know which file the weights came from.
*/

pub mod activation;
pub mod fused;
pub mod gru;
pub mod kernels;
pub mod kind;
pub mod lstm;
pub mod rounded;
pub mod rounding;
pub mod simple;

pub use activation::Activation;
pub use gru::GruCell;
pub use kind::{CellKind, CellWeights, Gate, Kernels};
pub use lstm::LstmCell;
pub use rounding::DtypePolicy;
pub use simple::SimpleRnnCell;

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
    /// NumPy dtype descriptor, little-endian: `<f4` or `<f8`.
    const DESCR: &'static str;
    /// Bytes per value.
    const BYTES: usize;
    /// Appends the values' little-endian bytes.
    fn extend_le(values: impl Iterator<Item = Self>, out: &mut Vec<u8>);
    /// The values' bytes in memory order.
    fn as_bytes(values: &[Self]) -> &[u8];
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn lit(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f(self) -> f64;
    /// The error function, for exact GELU.
    fn erf(self) -> Self;
    /// In-place logistic sigmoid over a slice (vectorised for `f32`).
    fn sigmoid_slice(xs: &mut [Self]);
    /// In-place tanh over a slice (vectorised for `f32`).
    fn tanh_slice(xs: &mut [Self]);
}

impl Real for f32 {
    const NAME: &'static str = "float32";
    const DESCR: &'static str = "<f4";
    const BYTES: usize = 4;
    fn extend_le(values: impl Iterator<Item = f32>, out: &mut Vec<u8>) {
        values.for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    fn as_bytes(values: &[f32]) -> &[u8] {
        bytemuck::cast_slice(values)
    }
    fn lit(v: f64) -> f32 {
        v as f32
    }
    fn to_f(self) -> f64 {
        self as f64
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
    fn sigmoid_slice(xs: &mut [f32]) {
        kernels::sigmoid_slice_f32(xs)
    }
    fn tanh_slice(xs: &mut [f32]) {
        kernels::tanh_slice_f32(xs)
    }
}

impl Real for f64 {
    const NAME: &'static str = "float64";
    const DESCR: &'static str = "<f8";
    const BYTES: usize = 8;
    fn extend_le(values: impl Iterator<Item = f64>, out: &mut Vec<u8>) {
        values.for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    fn as_bytes(values: &[f64]) -> &[u8] {
        bytemuck::cast_slice(values)
    }
    fn lit(v: f64) -> f64 {
        v
    }
    fn to_f(self) -> f64 {
        self
    }
    fn erf(self) -> f64 {
        libm::erf(self)
    }
    fn sigmoid_slice(xs: &mut [f64]) {
        xs.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
    }
    fn tanh_slice(xs: &mut [f64]) {
        xs.iter_mut().for_each(|x| *x = x.tanh());
    }
}

/// Where one step writes, for a block of `rows` sequences: views into the trace (when it records them) or
/// into scratch buffers. `h` and `c` receive the new state; the engine applies masking afterwards.
#[derive(Debug)]
pub struct StepOut<'a, T> {
    /// Pre-activations of every gate block, (rows, blocks·units).
    pub pre: ndarray::ArrayViewMut2<'a, T>,
    /// Activated gates, (rows, blocks·units).
    pub gates: ndarray::ArrayViewMut2<'a, T>,
    /// New hidden state, (rows, units).
    pub h: ndarray::ArrayViewMut2<'a, T>,
    /// New cell state (LSTM), (rows, units); unused by GRU.
    pub c: ndarray::ArrayViewMut2<'a, T>,
    /// Scratch, (rows, blocks·units).
    pub scratch: ndarray::ArrayViewMut2<'a, T>,
}
