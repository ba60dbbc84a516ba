/*!
What each unit does, from the recorded forward pass: gate saturation (Karpathy, Johnson & Fei-Fei 2015,
"Visualizing and understanding recurrent networks", figure 3), memory timescales and dead units.

- Saturation: for every gate with a sigmoid-like activation (LSTM i, f, o; GRU z, r), per unit, the share of
  all unmasked steps of all sequences where the gate is below 0.1 (left) and above 0.9 (right).
- Timescale: the gate that keeps the old state (LSTM f; Keras GRU z, since `h = z⊙h_prev + (1−z)⊙h̃`), per
  unit, `T = −1/ln(mean gate)`: over the data (unmasked steps), and from the bias alone (`σr(b)`; a
  `reset_after` GRU adds its input and recurrent biases). A gate that is always 1 gives `T = ∞`.
- Dead: units whose |h| stays below 1e-3 at every unmasked step of every sequence (a masked step repeats
  the step before's h).
*/

use crate::cell::{Activation, Real};
use crate::trace::{GateBlocks, LayerTrace};
use crate::weights::{CellKind, CellWeights};

/// Below this a gate is left-saturated.
pub const LEFT: f64 = 0.1;
/// Above this a gate is right-saturated.
pub const RIGHT: f64 = 0.9;
/// A unit whose |h| stays below this everywhere is dead.
pub const DEAD: f64 = 1e-3;

/// Saturation shares of one gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Saturation {
    /// Gate letter: `i`, `f`, `o`, `z`, `r`.
    pub gate: &'static str,
    /// Per unit, share of steps with gate < 0.1.
    pub left: Vec<f64>,
    /// Per unit, share of steps with gate > 0.9.
    pub right: Vec<f64>,
}

/// Memory timescales per unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Timescale {
    /// The keeping gate (`f` or `z`).
    pub gate: &'static str,
    /// Mean of the gate over the data, per unit.
    pub mean_gate: Vec<f64>,
    /// `−1/ln(mean gate)` per unit.
    pub data: Vec<f64>,
    /// `−1/ln(σr(bias))` per unit; `None` when the layer has no bias.
    pub bias: Option<Vec<f64>>,
}

/// The unit analysis of one recurrent layer (one direction of a Bidirectional).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitReport {
    /// The layer's name.
    pub layer: String,
    /// Its cell.
    pub kind: CellKind,
    /// Number of units.
    pub units: usize,
    /// Gates with a sigmoid-like activation, in gate order.
    pub saturation: Vec<Saturation>,
    /// `None` for SimpleRNN (no gate) and for gates that are not sigmoid-like.
    pub timescale: Option<Timescale>,
    /// Dead units, ascending.
    pub dead: Vec<usize>,
}

/// True for the activations whose range is [0, 1] and whose thresholds 0.1/0.9 mean saturation.
pub fn sigmoid_like(a: Activation) -> bool {
    matches!(
        a,
        Activation::Sigmoid | Activation::HardSigmoid | Activation::HardSigmoidKeras2
    )
}

/// The gates analysed for a cell: (letter, block index).
fn gates(kind: CellKind) -> &'static [(&'static str, usize)] {
    match kind {
        CellKind::Lstm => &[("i", 0), ("f", 1), ("o", 3)],
        CellKind::Gru => &[("z", 0), ("r", 1)],
        CellKind::SimpleRnn => &[],
    }
}

/// Per analysed gate, per unit: steps below [`LEFT`], above [`RIGHT`], and the sum of the gate, over the
/// unmasked (step, sequence) rows of the gate arrays `g` (each (steps, sequences, units)). Steps are split
/// across the cores; each row is one vectorised pass.
#[allow(clippy::type_complexity)]
fn tally<T: Real>(
    g: &[ndarray::Array3<T>],
    masked: &ndarray::Array2<bool>,
    which: &[(&'static str, usize)],
    u: usize,
) -> Vec<(Vec<u64>, Vec<u64>, Vec<f64>)> {
    use rayon::prelude::*;
    let steps = g.first().map_or(0, |a| a.dim().0);
    let empty = || -> Vec<(Vec<u64>, Vec<u64>, Vec<f64>)> {
        which
            .iter()
            .map(|_| (vec![0; u], vec![0; u], vec![0.0; u]))
            .collect()
    };
    let has_mask = masked.nrows() == steps;
    (0..steps)
        .into_par_iter()
        .fold(empty, |mut acc, t| {
            for (&(_, k), (l, r, m)) in which.iter().zip(acc.iter_mut()) {
                for (s, row) in g[k]
                    .index_axis(ndarray::Axis(0), t)
                    .outer_iter()
                    .enumerate()
                {
                    if has_mask && masked[[t, s]] {
                        continue;
                    }
                    let owned;
                    let row: &[T] = match row.as_slice() {
                        Some(r) => r,
                        None => {
                            owned = row.to_vec();
                            &owned
                        }
                    };
                    // Slices of equal length zipped: one vectorised pass.
                    for (((&v, l), r), m) in row
                        .iter()
                        .zip(l.iter_mut())
                        .zip(r.iter_mut())
                        .zip(m.iter_mut())
                    {
                        let v = v.to_f();
                        *l += (v < LEFT) as u64;
                        *r += (v > RIGHT) as u64;
                        *m += v;
                    }
                }
            }
            acc
        })
        .reduce(empty, |mut a, b| {
            for ((al, ar, am), (bl, br, bm)) in a.iter_mut().zip(b) {
                al.iter_mut().zip(bl).for_each(|(x, y)| *x += y);
                ar.iter_mut().zip(br).for_each(|(x, y)| *x += y);
                am.iter_mut().zip(bm).for_each(|(x, y)| *x += y);
            }
            a
        })
}

fn timescale_of(mean: f64) -> f64 {
    -1.0 / mean.ln()
}

/// The units (of `width`) whose |h| stays below [`DEAD`] in every row (a NaN counts as alive); each row
/// gives unit j's value on demand, and the scan stops once every unit has been seen alive.
fn dead_units<T: Real, R: Fn(usize) -> T>(
    width: usize,
    rows: impl Iterator<Item = R>,
) -> Vec<usize> {
    let mut alive = vec![false; width];
    let mut left = width;
    for row in rows {
        if left == 0 {
            break;
        }
        for (j, a) in alive.iter_mut().enumerate().filter(|(_, a)| !**a) {
            let v = row(j);
            if v.to_f().abs() >= DEAD || v.is_nan() {
                *a = true;
                left -= 1;
            }
        }
    }
    (0..width).filter(|&j| !alive[j]).collect()
}

/// Analyses one layer's trace (recorded with states) and its gates per block.
pub fn analyse<T: Real>(tr: &LayerTrace<T>, gb: &GateBlocks<T>, w: &CellWeights<T>) -> UnitReport {
    let u = tr.units;
    let steps = tr.steps();
    let b = tr.sequences();
    let used = |t: usize, s: usize| !(tr.masked.nrows() == steps && tr.masked[[t, s]]);
    let count = (0..steps)
        .flat_map(|t| (0..b).map(move |s| (t, s)))
        .filter(|&(t, s)| used(t, s))
        .count();
    let ra = tr.recurrent_activation;
    let mut saturation = Vec::new();
    let mut means: Vec<(&'static str, Vec<f64>)> = Vec::new();
    if sigmoid_like(ra) && gb.gates.len() == tr.kind.blocks() {
        let tallies = tally(&gb.gates, &tr.masked, gates(tr.kind), u);
        for (&(letter, _), (left, right, sum)) in gates(tr.kind).iter().zip(tallies) {
            let share = |c: Vec<u64>| -> Vec<f64> {
                c.into_iter()
                    .map(|c| {
                        if count == 0 {
                            0.0
                        } else {
                            c as f64 / count as f64
                        }
                    })
                    .collect()
            };
            saturation.push(Saturation {
                gate: letter,
                left: share(left),
                right: share(right),
            });
            means.push((
                letter,
                sum.into_iter()
                    .map(|s| {
                        if count == 0 {
                            f64::NAN
                        } else {
                            s / count as f64
                        }
                    })
                    .collect(),
            ));
        }
    }
    let keep = match tr.kind {
        CellKind::Lstm => Some(("f", 1)),
        CellKind::Gru => Some(("z", 0)),
        CellKind::SimpleRnn => None,
    };
    let timescale = keep.and_then(|(letter, k)| {
        let mean = means.iter().find(|(l, _)| *l == letter)?.1.clone();
        let bias = w.bias.as_ref().map(|bias| {
            (0..u)
                .map(|j| {
                    let mut v = bias[k * u + j];
                    if let Some(rb) = &w.recurrent_bias {
                        v = v + rb[k * u + j];
                    }
                    timescale_of(ra.scalar(v).to_f())
                })
                .collect()
        });
        Some(Timescale {
            gate: letter,
            data: mean.iter().map(|&m| timescale_of(m)).collect(),
            mean_gate: mean,
            bias,
        })
    });
    let dead = match (tr.h.as_ref(), tr.c.as_ref()) {
        // (h's width: the units, or a PyTorch `proj_size` projection's.)
        // A masked step repeats the step before's h (or the initial state): passed over, as below.
        (Some(h), _) => dead_units(
            h.dim().2,
            h.rows()
                .into_iter()
                .enumerate()
                .filter(|(i, _)| used(i / b.max(1), i % b.max(1)))
                .map(|(_, row)| move |j: usize| row[j]),
        ),
        // An LSTM recorded without h (`Record::cell_only`): h = o ⊙ act(c), recomputed for the units still
        // to be seen alive (a value or two per unit in a live layer). A masked step repeats the step
        // before's h (its o is not the one that made it), so it is passed over.
        (None, Some(c)) if tr.kind == CellKind::Lstm && gb.gates.len() == 4 => {
            let act = tr.activation;
            let o = &gb.gates[3];
            dead_units(
                u,
                c.rows()
                    .into_iter()
                    .zip(o.rows())
                    .enumerate()
                    .filter(|(i, _)| used(i / b.max(1), i % b.max(1)))
                    .map(move |(_, (cr, or))| move |j: usize| or[j] * act.scalar(cr[j])),
            )
        }
        _ => Vec::new(),
    };
    UnitReport {
        layer: tr.name.clone(),
        kind: tr.kind,
        units: u,
        saturation,
        timescale,
        dead,
    }
}

/// Each unit's share of the explained output's pre-activation, when the last recurrent layer's final
/// output feeds a Dense head directly (optionally followed by an `Activation`): `h_T[u]·K[u, k]`, the
/// exact additive decomposition of output `k`'s logit (bias aside), averaged over the sequences.
/// Returns the layer's name and one value per unit; `None` for any other shape of network (a
/// Bidirectional last, a sequence output, a deeper head), where no such exact split exists.
pub fn head_contributions<T: Real>(
    net: &super::Network<T>,
    fwd: &super::network::Forward<T>,
    k: usize,
) -> Option<(String, Vec<f64>)> {
    use super::network::Op;
    let last = net
        .ops
        .iter()
        .rposition(|o| matches!(o, Op::Recurrent(_) | Op::Bidirectional { .. }))?;
    let Op::Recurrent(r) = &net.ops[last] else {
        return None;
    };
    let kernel = match &net.ops[last + 1..] {
        [Op::Dense { weights, .. }] | [Op::Dense { weights, .. }, Op::Activation(_)] => {
            &weights.kernel
        }
        _ => return None,
    };
    if r.return_sequences || k >= kernel.ncols() {
        return None;
    }
    let tr = *fwd.traces().last()?;
    let h = &tr.last_output;
    if h.ncols() != kernel.nrows() || h.nrows() == 0 {
        return None;
    }
    let n = h.nrows() as f64;
    let values = (0..h.ncols())
        .map(|u| {
            let w = kernel[[u, k]].to_f();
            h.column(u).iter().map(|v| v.to_f() * w).sum::<f64>() / n
        })
        .collect();
    Some((tr.name.clone(), values))
}
