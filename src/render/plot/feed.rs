/*!
Charts fed from the engine's streamed blocks, so that `--plot` and `--plot-gates` cost the memory of what
they draw, not of the whole trace: the state-norm chart keeps one number per sequence, step and state
(‖c_t‖, ‖h_t‖), the gate heat maps one sequence's gates. A 512 × 1000 × 128 LSTM charted this way holds
8 MB of norms instead of 1.3 GB of gates and states.

[`ChartFeed::record`] says what the engine must put in each block; [`ChartFeed::push`] takes the blocks in
order (as the `.npz` writer does, from the same sink); the charts are built at the end from the finished
layer's facts.
*/

use super::data::{ChartData, GateHeatmaps, gates_chart, state_norms_chart};
use crate::cell::{CellKind, Real};
use crate::engine::Stores;
use crate::trace::{LayerTrace, Record};
use ndarray::{Array2, Array3, Axis, s};

/// What the streamed charts have gathered so far.
pub struct ChartFeed<T> {
    /// (sequences, steps) per state, ‖c_t‖ first for an LSTM; `None` when no state-norm chart is asked.
    norms: Option<Vec<Array2<f64>>>,
    /// The sequence whose gates are kept, and its gates (steps, 1, blocks·units) and masked steps.
    gates: Option<(usize, Array3<T>, Vec<bool>)>,
}

impl<T: Real> ChartFeed<T> {
    /// A feed for a layer of `kind` with `units` units run over `sequences` × `steps`: state norms when
    /// `norms`, the gates of sequence `gates_of` when given.
    pub fn new(
        kind: CellKind,
        sequences: usize,
        steps: usize,
        units: usize,
        norms: bool,
        gates_of: Option<usize>,
    ) -> ChartFeed<T> {
        let states = if kind.has_cell_state() { 2 } else { 1 };
        ChartFeed {
            norms: norms.then(|| vec![Array2::from_elem((sequences, steps), f64::NAN); states]),
            gates: gates_of.map(|b| {
                (
                    b.min(sequences.saturating_sub(1)),
                    Array3::from_elem((steps, 1, kind.blocks() * units), T::lit(f64::NAN)),
                    vec![false; steps],
                )
            }),
        }
    }

    /// What each block must hold for these charts (to be joined with what other sinks need).
    pub fn record(&self) -> Record {
        Record {
            gates: self.gates.is_some(),
            pre: false,
            states: self.norms.is_some(),
            cell_only: false,
        }
    }

    /// Takes the block of processing steps `t0..t0 + s.steps()`.
    pub fn push(&mut self, t0: usize, s: &Stores<T>) {
        let n = s.steps();
        if let Some(norms) = &mut self.norms {
            let states = s.c.iter().chain(s.h.iter());
            for (dst, a) in norms.iter_mut().zip(states) {
                // a: (steps, sequences, units) → norms[sequence, t0 + t].
                for (t, block) in a.axis_iter(Axis(0)).enumerate() {
                    for (b, row) in block.axis_iter(Axis(0)).enumerate() {
                        dst[[b, t0 + t]] =
                            row.iter().map(|v| v.to_f() * v.to_f()).sum::<f64>().sqrt();
                    }
                }
            }
        }
        if let Some((b, g, masked)) = &mut self.gates {
            for (k, a) in s.gates.iter().enumerate() {
                let u = a.shape()[2];
                g.slice_mut(s![t0..t0 + n, 0, k * u..(k + 1) * u])
                    .assign(&a.slice(s![.., *b, ..]));
            }
            for t in 0..n {
                masked[t0 + t] = s.masked.get([t, *b]).copied().unwrap_or(false);
            }
        }
    }

    /// The state-norm chart, with the facts of the finished layer `l`.
    pub fn state_norms(&self, l: &LayerTrace<T>, window: Option<usize>) -> Option<ChartData> {
        self.norms
            .as_ref()
            .map(|norms| state_norms_chart(l, norms, window))
    }

    /// The gate heat maps of the kept sequence over the processing steps `range`, with the facts of the
    /// finished layer `l`.
    pub fn gates(&self, l: &LayerTrace<T>, range: std::ops::Range<usize>) -> Option<GateHeatmaps> {
        self.gates
            .as_ref()
            .map(|(b, g, masked)| gates_chart(l, g, 0, *b, masked, range))
    }
}
