/*!
Runs a recurrent layer over a batch and records everything into a [`LayerTrace`].

The input projection `x·W + b` for every step of every sequence is one matrix product up front; each step
then costs one recurrent product for the whole batch. Masking, `go_backwards`, initial states and carried
state (`stateful` behaviour) are handled here, identically for both cells.
*/

use crate::cell::{Activation, GruCell, LstmCell, Real, StepBuffers};
use crate::trace::LayerTrace;
use crate::weights::{CellKind, CellWeights, DenseWeights};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, s};

/// How to run one layer: the Keras layer arguments that are not weights.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Name to record in the trace.
    pub name: String,
    /// Keras `activation`.
    pub activation: Activation,
    /// Keras `recurrent_activation`.
    pub recurrent_activation: Activation,
    /// Keras `go_backwards`.
    pub go_backwards: bool,
    /// Carry each sequence's final state into the next (a stateful layer with batch size 1).
    pub carry_state: bool,
}

/// The data one layer runs on.
#[derive(Debug, Clone)]
pub struct LayerInput<'a, T> {
    /// (sequences, timesteps, features).
    pub x: ArrayView3<'a, T>,
    /// (sequences, timesteps), input order; `true` = the step is used (Keras's convention).
    pub mask: Option<ArrayView2<'a, bool>>,
    /// Initial hidden state (sequences, units); zeros when absent.
    pub h0: Option<Array2<T>>,
    /// Initial cell state (sequences, units), LSTM; zeros when absent.
    pub c0: Option<Array2<T>>,
}

/// Runs `weights` over `input` and records every gate and state.
///
/// Shapes must already be validated (the loaders and `config` do that); this function does not fail.
pub fn run_layer<T: Real>(
    weights: &CellWeights<T>,
    spec: &LayerSpec,
    input: LayerInput<'_, T>,
) -> LayerTrace<T> {
    let (batch, steps, features) = input.x.dim();
    let u = weights.units;
    let gu = weights.kind.blocks() * u;
    let is_lstm = weights.kind == CellKind::Lstm;

    // x·W + b for every (sequence, timestep) at once.
    let x2 = input
        .x
        .to_shape((batch * steps, features))
        .expect("contiguous reshape of a standard-layout copy");
    let mut xp = Array2::<T>::zeros((batch * steps, gu));
    if let Some(b) = &weights.bias {
        xp.assign(
            &b.broadcast((batch * steps, gu))
                .expect("bias length checked at load"),
        );
    }
    general_mat_mul(T::one(), &x2, &weights.kernel, T::one(), &mut xp);
    let xp = xp
        .into_shape_with_order((batch, steps, gu))
        .expect("size unchanged");

    let input_index: Vec<usize> = if spec.go_backwards {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    let h0 = input.h0.unwrap_or_else(|| Array2::zeros((batch, u)));
    let c0 = if is_lstm {
        Some(input.c0.unwrap_or_else(|| Array2::zeros((batch, u))))
    } else {
        None
    };

    let mut tr = LayerTrace {
        name: spec.name.clone(),
        kind: weights.kind,
        units: u,
        features,
        activation: spec.activation,
        recurrent_activation: spec.recurrent_activation,
        reset_after: (weights.kind == CellKind::Gru).then_some(weights.reset_after),
        go_backwards: spec.go_backwards,
        carry_state: spec.carry_state,
        input_index,
        x: input.x.to_owned(),
        pre: Array3::zeros((batch, steps, gu)),
        gates: Array3::zeros((batch, steps, gu)),
        h: Array3::zeros((batch, steps, u)),
        c: is_lstm.then(|| Array3::zeros((batch, steps, u))),
        out: Array3::zeros((batch, steps, u)),
        h0: h0.clone(),
        c0: c0.clone(),
        masked: Array2::from_elem((batch, steps), false),
    };

    // Sequences advance together, except when state is carried: then one after another.
    let blocks: Vec<std::ops::Range<usize>> = if spec.carry_state {
        (0..batch).map(|b| b..b + 1).collect()
    } else {
        std::iter::once(0..batch).collect()
    };
    let mut carried: Option<(Array2<T>, Option<Array2<T>>)> = None;
    for rows in blocks {
        let n = rows.len();
        let mut h = match &carried {
            Some((h, _)) => h.clone(),
            None => h0.slice(s![rows.clone(), ..]).to_owned(),
        };
        let mut c = match &carried {
            Some((_, c)) => c.clone(),
            None => c0
                .as_ref()
                .map(|c0| c0.slice(s![rows.clone(), ..]).to_owned()),
        };
        if spec.carry_state {
            tr.h0.slice_mut(s![rows.clone(), ..]).assign(&h);
            if let (Some(trc0), Some(c)) = (tr.c0.as_mut(), c.as_ref()) {
                trc0.slice_mut(s![rows.clone(), ..]).assign(c);
            }
        }
        let mut out_prev = Array2::<T>::zeros((n, u));
        let mut buf = StepBuffers::<T>::new(n, weights.kind.blocks(), u, is_lstm);
        for t in 0..steps {
            let ti = tr.input_index[t];
            let xpt = xp.slice(s![rows.clone(), ti, ..]);
            match weights.kind {
                CellKind::Lstm => {
                    let cell = LstmCell {
                        weights,
                        activation: spec.activation,
                        recurrent_activation: spec.recurrent_activation,
                    };
                    let c_prev = c.as_ref().expect("LSTM has a cell state");
                    cell.step(xpt, h.view(), c_prev.view(), &mut buf);
                }
                CellKind::Gru => {
                    let cell = GruCell {
                        weights,
                        activation: spec.activation,
                        recurrent_activation: spec.recurrent_activation,
                    };
                    cell.step(xpt, h.view(), &mut buf);
                }
            }
            for (r, b) in rows.clone().enumerate() {
                let skip = input.mask.map(|m| !m[[b, ti]]).unwrap_or(false);
                tr.masked[[b, t]] = skip;
                tr.pre.slice_mut(s![b, t, ..]).assign(&buf.pre.row(r));
                tr.gates.slice_mut(s![b, t, ..]).assign(&buf.gates.row(r));
                if !skip {
                    h.row_mut(r).assign(&buf.h.row(r));
                    out_prev.row_mut(r).assign(&buf.h.row(r));
                    if let Some(c) = c.as_mut() {
                        c.row_mut(r).assign(&buf.c.row(r));
                    }
                }
                tr.h.slice_mut(s![b, t, ..]).assign(&h.row(r));
                tr.out.slice_mut(s![b, t, ..]).assign(&out_prev.row(r));
                if let (Some(trc), Some(c)) = (tr.c.as_mut(), c.as_ref()) {
                    trc.slice_mut(s![b, t, ..]).assign(&c.row(r));
                }
            }
        }
        if spec.carry_state {
            carried = Some((h, c));
        }
    }
    tr
}

/// Applies a Dense head to rows of `x`: `act(x·K + b)`.
pub fn dense<T: Real>(
    w: &DenseWeights<T>,
    activation: Activation,
    x: ArrayView2<'_, T>,
) -> Array2<T> {
    let mut y = Array2::<T>::zeros((x.nrows(), w.outputs()));
    if let Some(b) = &w.bias {
        let dim = y.raw_dim();
        y.assign(&b.broadcast(dim).expect("bias length checked at load"));
    }
    general_mat_mul(T::one(), &x, &w.kernel, T::one(), &mut y);
    activation.apply_rows(y.view_mut());
    y
}

/// Keras `Masking(mask_value=v)`: a step is used unless all its features equal `v` (compared in `T`).
pub fn mask_from_value<T: Real>(x: ArrayView3<'_, T>, value: T) -> Array2<bool> {
    let (b, t, _) = x.dim();
    let mut m = Array2::from_elem((b, t), true);
    for ((i, j), slot) in m.indexed_iter_mut() {
        *slot = x.slice(s![i, j, ..]).iter().any(|&v| v != value);
    }
    m
}
