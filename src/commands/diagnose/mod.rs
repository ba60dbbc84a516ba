/*!
`rnntrace diagnose`: given a layer's weights, the inputs and the output the framework produced, find the
conventions that explain that output, and say how the user's own flags differ.

**Candidates.** A candidate is a reading of the weights ([`convention::Reading`]: which gate each stored
block holds, whether the input kernel is stored transposed, GRU `reset_after` and the textbook update) and
the layer arguments that are not weights: activation, recurrent activation, `go_backwards`, carried state,
and the Dense head's activation. Activations range over every elementwise Keras activation (16; the head
also over softmax); gate orders over every permutation of the blocks; the kernel is read transposed only
where its shape allows both readings (square); the textbook GRU update only with a recurrent activation
for which it has an exact Keras reading.

**Tiers.** The first tier holds the gate orders frameworks use (LSTM: Keras/PyTorch i,f,c,o, ONNX i,o,f,c,
TF1 i,c,f,o; GRU: Keras z,r,h, PyTorch r,z,h) and the `reset_after` the bias layout states. Only when no
first-tier candidate matches is the second tier searched: the other permutations, and the bias layouts read
against their shape.

**Pruning.** Every candidate is first run on sequence 0 alone (and, when the expected output has every
step, on its first 8 steps): the carried state cannot matter there, and one run yields the error of every
head activation at once. What is within tolerance there (at most 64, closest to the user's flags first)
plus the 16 best of the rest go on, each now with and without carried state, to the first 8 sequences;
then to 64, 512, … sequences and the whole batch, where once some candidate is within tolerance only such
candidates (at most 4) go on, and when none is, the 4 (last: 2) closest. A candidate that is within
tolerance but differs from a closer one only in the carried state stops there: it could not rank above
it, and a stateful run is the costliest (sequential). Candidates run in parallel. The user's own flags are
always run on the whole batch. Candidates that stopped early are still listed, marked with the number of
sequences they were compared on.

**Ranking.** Candidates within tolerance come first, closest to the user's flags first (the data cannot
tell apart candidates that compute the same numbers, e.g. relu and relu6 below 6, so the explanation that
changes least wins), then by largest error; the rest by largest error.
*/

use crate::cell::{Activation, Kernels, Real};
use crate::cli::args::{DiagnoseArgs, FormatArg, LayoutArg, ResetAfterArg};
use crate::cli::job as config;
use crate::cli::job::Env;
use crate::cli::output::{Outcome, write_stdout};
use crate::compare;
use crate::engine::{self, LayerInput, LayerSpec};
use crate::error::{Error, Result};
use crate::io::write::atomic_write;
use crate::trace::{LayerTrace, Record};
use crate::weights::convention::{self, Layout, Reading, Stored, StoredBias};
use crate::weights::{CellKind, CellWeights, DenseWeights, dense, keras, load_arrays, pytorch};
use ndarray::{Array2, Array3, s};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

/// Layer activations searched, most common first (an exact tie goes to the earlier one).
const ACTIVATIONS: [Activation; 16] = [
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Relu,
    Activation::Linear,
    Activation::HardSigmoid,
    Activation::HardSigmoidKeras2,
    Activation::Elu,
    Activation::Selu,
    Activation::Gelu,
    Activation::Silu,
    Activation::Softplus,
    Activation::Softsign,
    Activation::Relu6,
    Activation::LeakyRelu,
    Activation::HardSilu,
    Activation::Exponential,
];

/// Dense head activations searched (each costs one small product, not a run).
const DENSE_ACTIVATIONS: [Activation; 17] = [
    Activation::Linear,
    Activation::Softmax,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Relu,
    Activation::HardSigmoid,
    Activation::HardSigmoidKeras2,
    Activation::Elu,
    Activation::Selu,
    Activation::Gelu,
    Activation::Silu,
    Activation::Softplus,
    Activation::Softsign,
    Activation::Relu6,
    Activation::LeakyRelu,
    Activation::HardSilu,
    Activation::Exponential,
];

/// Steps of sequence 0 the first round compares when the expected output holds every step.
const SCREEN_STEPS: usize = 8;
/// Sequences of the first middle round; each further round has 8 times as many, up to the whole batch.
const MIDDLE_SEQUENCES: usize = 8;
/// Into the first middle round go at most this many candidates within tolerance (closest to the user's
/// flags first) and this many of the rest (by error), each with and without carried state.
const KEEP_FIRST: (usize, usize) = (64, 16);
/// Into later rounds: at most this many within tolerance, and (only when none is) this many by error, or
/// this many for the whole batch.
const KEEP_LATER: (usize, usize, usize) = (4, 4, 2);
/// Candidates listed in the JSON ranking.
const LISTED: usize = 20;
/// Candidates shown in the text ranking.
const SHOWN: usize = 5;
/// Sequences traced at a time while looking for the first divergence.
const DIVERGENCE_CHUNK: usize = 16;

/// The data every candidate is scored on, at float32 as the frameworks compute.
struct Problem {
    kind: CellKind,
    units: usize,
    x: Array3<f32>,
    mask: Option<Array2<bool>>,
    dense: Option<DenseWeights<f32>>,
    /// Flat, C order.
    expected: Vec<f64>,
    /// Expected holds every step's output (sequences, steps, units).
    per_step: bool,
    /// Values per sequence (per step when `per_step`).
    width: usize,
    atol: f64,
    rtol: f64,
}

/// One reading of the weights, built once.
struct Structure {
    reading: Reading,
    weights: CellWeights<f32>,
    first_tier: bool,
}

/// A candidate: a structure plus the layer and head arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cand {
    s: usize,
    act: Activation,
    rec: Activation,
    gb: bool,
    carry: bool,
    dense: Option<Activation>,
}

/// A candidate's score on some sequences.
#[derive(Debug, Clone, Copy)]
struct Scored {
    c: Cand,
    err: f64,
    passed: bool,
    /// Sequences compared (the first ones).
    rows: usize,
}

/// A setting a candidate states, in the order the advice explains them (serialised by its field name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Field {
    /// Keras `recurrent_activation`.
    RecurrentActivation,
    /// Keras `activation`.
    Activation,
    /// The order of the gate blocks in the stored kernels.
    GateOrder,
    /// Whether the stored kernels are transposed.
    Transposed,
    /// GRU `reset_after`.
    ResetAfter,
    /// The GRU state update: Keras's or the textbook's.
    GruUpdate,
    /// Keras `go_backwards`.
    GoBackwards,
    /// State carried from one sequence to the next.
    CarryState,
    /// The Dense head's activation.
    DenseActivation,
}

/// What a candidate (or the user) states, field by field.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    activation: Activation,
    recurrent_activation: Activation,
    reset_after: Option<bool>,
    go_backwards: bool,
    order: Vec<usize>,
    transposed: bool,
    textbook: bool,
    carry_state: bool,
    dense_activation: Option<Activation>,
}

impl Settings {
    /// The fields in which `self` differs from `other`, in the order the advice explains them.
    fn differences(&self, other: &Settings) -> Vec<Field> {
        let differs = |f: &Field| match f {
            Field::RecurrentActivation => self.recurrent_activation != other.recurrent_activation,
            Field::Activation => self.activation != other.activation,
            Field::GateOrder => self.order != other.order,
            Field::Transposed => self.transposed != other.transposed,
            Field::ResetAfter => self.reset_after != other.reset_after,
            Field::GruUpdate => self.textbook != other.textbook,
            Field::GoBackwards => self.go_backwards != other.go_backwards,
            Field::CarryState => self.carry_state != other.carry_state,
            Field::DenseActivation => self.dense_activation != other.dense_activation,
        };
        Field::ALL.into_iter().filter(differs).collect()
    }
}

impl Field {
    /// Every field, in advice order.
    const ALL: [Field; 9] = [
        Field::RecurrentActivation,
        Field::Activation,
        Field::GateOrder,
        Field::Transposed,
        Field::ResetAfter,
        Field::GruUpdate,
        Field::GoBackwards,
        Field::CarryState,
        Field::DenseActivation,
    ];
}

/// Everything the search and the report share.
struct Search {
    p: Problem,
    stored: Stored,
    structures: Vec<Structure>,
    user: Settings,
    /// The user's flags as a candidate, when `rnntrace lstm/gru` would accept them.
    user_cand: Option<Cand>,
    /// Why `rnntrace lstm/gru` would refuse the user's flags.
    user_error: Option<String>,
    /// The best kernels a run may use.
    kernels: Kernels,
}

fn rank_of(list: &[Activation], a: Activation) -> usize {
    list.iter().position(|&x| x == a).unwrap_or(list.len())
}

fn err_key(e: f64) -> f64 {
    if e.is_nan() { f64::INFINITY } else { e }
}

impl Search {
    fn settings(&self, c: &Cand) -> Settings {
        let r = &self.structures[c.s].reading;
        Settings {
            activation: c.act,
            recurrent_activation: c.rec,
            reset_after: (self.p.kind.has_reset_after()).then_some(r.reset_after),
            go_backwards: c.gb,
            order: r.order.clone(),
            transposed: r.transposed,
            textbook: r.textbook_update,
            carry_state: c.carry,
            dense_activation: c.dense,
        }
    }

    fn distance(&self, c: &Cand) -> usize {
        self.settings(c).differences(&self.user).len()
    }

    /// A fixed preference among otherwise equal candidates: first tier, defaults, common activations.
    fn prior(&self, c: &Cand) -> (bool, usize, usize, usize, bool, bool, usize) {
        (
            !self.structures[c.s].first_tier,
            c.s,
            rank_of(&ACTIVATIONS, c.act),
            rank_of(&ACTIVATIONS, c.rec),
            c.gb,
            c.carry,
            c.dense.map_or(0, |d| rank_of(&DENSE_ACTIVATIONS, d)),
        )
    }

    /// The final ranking: within tolerance first, closest to the user's flags first; then by error.
    fn rank(&self, a: &Scored, b: &Scored) -> Ordering {
        b.passed
            .cmp(&a.passed)
            .then_with(|| {
                if a.passed {
                    self.distance(&a.c).cmp(&self.distance(&b.c))
                } else {
                    Ordering::Equal
                }
            })
            .then(err_key(a.err).total_cmp(&err_key(b.err)))
            .then_with(|| self.distance(&a.c).cmp(&self.distance(&b.c)))
            .then_with(|| self.prior(&a.c).cmp(&self.prior(&b.c)))
    }

    /// Runs candidate `c` on `rows`, the first `steps` processing steps, from `state` (or zeros).
    fn run(
        &self,
        c: &Cand,
        rows: Range<usize>,
        steps: usize,
        record: Record,
        state: Option<&(Array2<f32>, Option<Array2<f32>>)>,
    ) -> LayerTrace<f32> {
        let p = &self.p;
        let t = p.x.shape()[1];
        let cols = if c.gb { t - steps..t } else { 0..steps };
        let n = rows.len();
        let spec = LayerSpec {
            name: String::new(),
            activation: c.act,
            recurrent_activation: c.rec,
            go_backwards: c.gb,
            carry_state: c.carry,
        };
        let broadcast = |a: &Array2<f32>| {
            a.broadcast((n, a.ncols()))
                .expect("one row broadcasts")
                .to_owned()
        };
        let input = LayerInput {
            x: p.x.slice(s![rows.clone(), cols.clone(), ..]).into(),
            mask: p
                .mask
                .as_ref()
                .map(|m| m.slice(s![rows.clone(), cols.clone()])),
            h0: state.map(|(h, _)| broadcast(h)),
            c0: state.and_then(|(_, c)| c.as_ref().map(broadcast)),
        };
        match engine::run_layer_using(
            &self.structures[c.s].weights,
            &spec,
            input,
            record,
            None,
            &mut |_, _| Ok(()),
            self.kernels,
        ) {
            Ok(l) => l,
            Err(_) => unreachable!("an in-memory run has no sink that can fail"),
        }
    }

    /// The predictions of a finished run under head activation `d`.
    fn predictions(&self, l: &LayerTrace<f32>, d: Option<Activation>) -> Array2<f32> {
        match (d, &self.p.dense) {
            (Some(a), Some(w)) => engine::dense(w, a, l.last_output.view()),
            _ => l.last_output.clone(),
        }
    }

    /// (largest error, all within tolerance) of a run on `rows` × `steps`, for each head activation.
    fn score(
        &self,
        l: &LayerTrace<f32>,
        rows: Range<usize>,
        steps: usize,
        heads: &[Option<Activation>],
    ) -> Vec<(f64, bool)> {
        let p = &self.p;
        if p.per_step {
            let out = l
                .out
                .as_ref()
                .expect("states recorded for per-step scoring");
            let (u, t_all) = (p.units, p.x.shape()[1]);
            let mut ours = Vec::with_capacity(rows.len() * steps * u);
            let mut exp = Vec::with_capacity(ours.capacity());
            for (i, b) in rows.clone().enumerate() {
                for t in 0..steps {
                    for j in 0..u {
                        ours.push(out[[t, i, j]].to_f());
                        exp.push(p.expected[(b * t_all + t) * u + j]);
                    }
                }
            }
            let c = compare::compare(&ours, &exp, &[rows.len(), steps, u], p.atol, p.rtol);
            return vec![(c.max_abs_error, c.passed); heads.len()];
        }
        let exp = &p.expected[rows.start * p.width..rows.end * p.width];
        heads
            .iter()
            .map(|&d| {
                let ours: Vec<f64> = self.predictions(l, d).iter().map(|v| v.to_f()).collect();
                let c = compare::compare(&ours, exp, &[rows.len(), p.width], p.atol, p.rtol);
                (c.max_abs_error, c.passed)
            })
            .collect()
    }

    /// Scores `cands` on `rows` × `steps`: one run per (layer, carry), in parallel.
    fn evaluate(&self, cands: &[Cand], rows: Range<usize>, steps: usize) -> Vec<Scored> {
        let mut index: HashMap<Cand, usize> = HashMap::new();
        let mut groups: Vec<(Cand, Vec<Option<Activation>>)> = Vec::new();
        for c in cands {
            let key = Cand { dense: None, ..*c };
            let i = *index.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            if !groups[i].1.contains(&c.dense) {
                groups[i].1.push(c.dense);
            }
        }
        let record = if self.p.per_step {
            Record::STATES
        } else {
            Record::NONE
        };
        groups
            .par_iter()
            .map(|(key, heads)| {
                let l = self.run(key, rows.clone(), steps, record, None);
                self.score(&l, rows.clone(), steps, heads)
                    .into_iter()
                    .zip(heads)
                    .map(|((err, passed), &d)| Scored {
                        c: Cand { dense: d, ..*key },
                        err,
                        passed,
                        rows: rows.len(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect()
    }

    /// The candidates that go on to round `round` (0: the first middle round; `last`: the whole batch).
    /// After the first middle round, once some candidate is within tolerance only such candidates go on,
    /// and not one whose only difference from a closer one that is also within tolerance is the carried
    /// state (it could not rank above its twin; a stateful run is sequential, the most expensive of all).
    fn select(&self, scored: &[Scored], round: usize, last: bool) -> Vec<Cand> {
        let any_passed = scored.iter().any(|s| s.passed);
        let (keep_passing, keep_top, twins) = match (round, any_passed, last) {
            (0, _, _) => (KEEP_FIRST.0, KEEP_FIRST.1, false),
            (_, true, _) => (KEEP_LATER.0, 0, true),
            (_, false, false) => (0, KEEP_LATER.1, false),
            (_, false, true) => (0, KEEP_LATER.2, false),
        };
        let by_error = |a: &&Scored, b: &&Scored| {
            err_key(a.err)
                .total_cmp(&err_key(b.err))
                .then_with(|| self.distance(&a.c).cmp(&self.distance(&b.c)))
                .then_with(|| self.prior(&a.c).cmp(&self.prior(&b.c)))
        };
        let mut passing: Vec<&Scored> = scored.iter().filter(|s| s.passed).collect();
        passing.sort_by(|a, b| {
            self.distance(&a.c)
                .cmp(&self.distance(&b.c))
                .then_with(|| by_error(a, b))
        });
        let mut out: Vec<Cand> = Vec::new();
        for s in passing {
            if out.len() == keep_passing {
                break;
            }
            if twins
                && out.contains(&Cand {
                    carry: !s.c.carry,
                    ..s.c
                })
            {
                continue;
            }
            out.push(s.c);
        }
        let mut rest: Vec<&Scored> = scored.iter().filter(|s| !s.passed).collect();
        rest.sort_by(by_error);
        out.extend(rest.iter().take(keep_top).map(|s| s.c));
        out
    }

    /// Searches `layers` (each with every head activation): screen, middle rounds, whole batch.
    /// Returns the scores of the last round, then those of the round before that did not go on (compared
    /// on fewer sequences), and the number of candidates covered.
    fn search(&self, layers: &[Cand]) -> (Vec<Scored>, usize) {
        if layers.is_empty() {
            return (Vec::new(), 0);
        }
        let (b, t, _) = self.p.x.dim();
        let heads: Vec<Option<Activation>> = match self.p.dense {
            Some(_) => DENSE_ACTIVATIONS.iter().map(|&a| Some(a)).collect(),
            None => vec![None],
        };
        let cands: Vec<Cand> = layers
            .iter()
            .flat_map(|l| heads.iter().map(move |&d| Cand { dense: d, ..*l }))
            .collect();
        let covered = cands.len() * if b > 1 { 2 } else { 1 };
        let screen_steps = if self.p.per_step {
            t.min(SCREEN_STEPS)
        } else {
            t
        };
        let mut plan: Vec<Range<usize>> = Vec::new();
        let mut n = MIDDLE_SEQUENCES;
        while n < b {
            plan.push(0..n);
            n *= 8;
        }
        if b > 1 || screen_steps < t {
            plan.push(0..b);
        }
        let rounds = plan.len();
        let mut scored = self.evaluate(&cands, 0..1, screen_steps);
        // Candidates that did not go on, best few of each round, for the ranking's context.
        let mut dropped: Vec<Scored> = Vec::new();
        for (round, rows) in plan.into_iter().enumerate() {
            let mut next = self.select(&scored, round, round + 1 == rounds);
            let mut left: Vec<Scored> = scored
                .iter()
                .filter(|s| !next.contains(&s.c))
                .copied()
                .collect();
            left.sort_by(|a, b| err_key(a.err).total_cmp(&err_key(b.err)));
            left.truncate(LISTED);
            dropped.extend(left);
            if round == 0 && b > 1 {
                // Sequence 0 cannot tell a carried state from a fresh one: both go on.
                let twins: Vec<Cand> = next.iter().map(|c| Cand { carry: true, ..*c }).collect();
                next.extend(twins);
            }
            scored = self.evaluate(&next, rows, t);
        }
        dropped.retain(|p| !scored.iter().any(|s| s.c == p.c));
        scored.extend(dropped);
        (scored, covered)
    }

    /// The first place where the user's run and the best one differ, in processing order.
    fn first_divergence(&self, user: &Cand, best: &Cand) -> Option<Divergence> {
        let p = &self.p;
        let (b, t, _) = p.x.dim();
        let u = p.units;
        let names = p.kind.gate_names();
        // NaN on either side differs, as in `compare`.
        let differs = |a: f64, e: f64| {
            !matches!(
                (a - e).abs().partial_cmp(&(p.atol + p.rtol * e.abs())),
                Some(Ordering::Less | Ordering::Equal)
            )
        };
        type State = (Array2<f32>, Option<Array2<f32>>);
        let last_state = |l: &LayerTrace<f32>| -> State {
            let n = l.final_h.nrows();
            (
                l.final_h.slice(s![n - 1..n, ..]).to_owned(),
                l.final_c
                    .as_ref()
                    .map(|c| c.slice(s![n - 1..n, ..]).to_owned()),
            )
        };
        let (mut carried_u, mut carried_b): (Option<State>, Option<State>) = (None, None);
        let mut s0 = 0;
        while s0 < b {
            let rows = s0..(s0 + DIVERGENCE_CHUNK).min(b);
            let lu = self.run(
                user,
                rows.clone(),
                t,
                Record::ALL,
                carried_u.as_ref().filter(|_| user.carry),
            );
            let lb = self.run(
                best,
                rows.clone(),
                t,
                Record::ALL,
                carried_b.as_ref().filter(|_| best.carry),
            );
            let (gu, gb) = (lu.gates.as_ref()?, lb.gates.as_ref()?);
            let (hu, hb) = (lu.h.as_ref()?, lb.h.as_ref()?);
            let pu = self.predictions(&lu, user.dense);
            let pb = self.predictions(&lb, best.dense);
            for (i, seq) in rows.clone().enumerate() {
                for step in 0..t {
                    let at = |gate: String, unit: usize, ours: f32, bestv: f32| Divergence {
                        sequence: seq,
                        step: Some(step),
                        input_index: Some((lu.input_index[step], lb.input_index[step])),
                        gate,
                        unit,
                        ours: ours.to_f(),
                        best: bestv.to_f(),
                    };
                    if !(lu.masked[[step, i]] || lb.masked[[step, i]]) {
                        for (k, name) in names.iter().enumerate() {
                            for j in 0..u {
                                let (a, e) = (gu[[step, i, k * u + j]], gb[[step, i, k * u + j]]);
                                if differs(a.to_f(), e.to_f()) {
                                    return Some(at(name.to_string(), j, a, e));
                                }
                            }
                        }
                    }
                    for j in 0..u {
                        let (a, e) = (hu[[step, i, j]], hb[[step, i, j]]);
                        if differs(a.to_f(), e.to_f()) {
                            return Some(at("state h".into(), j, a, e));
                        }
                    }
                    if let (Some(cu), Some(cb)) = (&lu.c, &lb.c) {
                        for j in 0..u {
                            let (a, e) = (cu[[step, i, j]], cb[[step, i, j]]);
                            if differs(a.to_f(), e.to_f()) {
                                return Some(at("state c".into(), j, a, e));
                            }
                        }
                    }
                }
                for j in 0..pu.ncols() {
                    let (a, e) = (pu[[i, j]], pb[[i, j]]);
                    if differs(a.to_f(), e.to_f()) {
                        return Some(Divergence {
                            sequence: seq,
                            step: None,
                            input_index: None,
                            gate: if p.dense.is_some() { "dense" } else { "output" }.into(),
                            unit: j,
                            ours: a.to_f(),
                            best: e.to_f(),
                        });
                    }
                }
            }
            carried_u = Some(last_state(&lu));
            carried_b = Some(last_state(&lb));
            s0 = rows.end;
        }
        None
    }
}

/// Where the user's run first departs from the best one.
#[derive(Debug, Clone)]
struct Divergence {
    sequence: usize,
    /// Processing step; `None` for the Dense head (after the last step).
    step: Option<usize>,
    /// Input rows read at that step: (user's, best's).
    input_index: Option<(usize, usize)>,
    /// Gate name, `state h`/`state c`, or `dense`/`output`.
    gate: String,
    unit: usize,
    ours: f64,
    best: f64,
}

fn parse_activation(flag: &str, name: &str) -> Result<Activation> {
    Activation::parse(name).map_err(|e| Error::usage(format!("--{flag}: {e}")))
}

/// Reads and checks every input, and builds every reading of the weights.
fn load(a: &DiagnoseArgs, kernels: Kernels) -> Result<Search> {
    let kind = if a.cell == "gru" {
        CellKind::Gru
    } else {
        CellKind::Lstm
    };
    let act = parse_activation("activation", &a.activation)?;
    let rec = parse_activation("recurrent-activation", &a.recurrent_activation)?;
    let dense_act = parse_activation("dense-activation", &a.dense_activation)?;
    if !kind.has_reset_after() && a.reset_after != ResetAfterArg::Auto {
        return Err(Error::usage("--reset-after applies to GRU layers only"));
    }
    if a.dense.is_none() && a.dense_activation != "linear" {
        return Err(Error::usage("--dense-activation needs --dense"));
    }
    if !(a.atol >= 0.0 && a.rtol >= 0.0) {
        return Err(Error::usage(
            "--atol and --rtol must be non-negative numbers",
        ));
    }
    let inputs: Vec<&Path> = [
        Some(&a.weights),
        Some(&a.input),
        Some(&a.expected),
        a.dense.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.as_path())
    .collect();
    config::check_not_input(a.write_weights.as_deref(), &inputs)?;

    // The weights: as `rnntrace lstm/gru` would read them with the user's flags, and as stored.
    let src = load_arrays(&a.weights, &["kernel", "recurrent_kernel", "bias"])?;
    let torch = match a.layout {
        LayoutArg::Auto => pytorch::looks_like(&src),
        LayoutArg::Keras => false,
        LayoutArg::Pytorch => true,
        LayoutArg::Onnx => {
            return Err(Error::usage(
                "diagnose reads Keras and PyTorch layouts; convert ONNX weights with `rnntrace lstm|gru --layout onnx` first",
            ));
        }
    };
    let user_weights = if torch {
        if a.reset_after == ResetAfterArg::False {
            Err(Error::usage(
                "PyTorch's GRU is reset_after=True; --reset-after false does not apply",
            ))
        } else {
            pytorch::from_state_dict(kind, &src, 0, false)
        }
    } else {
        let ra = match a.reset_after {
            ResetAfterArg::Auto => keras::ResetAfter::Auto,
            ResetAfterArg::True => keras::ResetAfter::True,
            ResetAfterArg::False => keras::ResetAfter::False,
        };
        keras::from_arrays(kind, &src, ra)
    };
    let stored = match if torch {
        Stored::from_pytorch(kind, &src, 0)
    } else {
        Stored::from_keras(kind, &src)
    } {
        Ok(s) => s,
        // No reading fits: the strict loader's message says best what is wrong.
        Err(e) => return Err(user_weights.err().unwrap_or(e)),
    };

    let structures = structures(&stored);
    let dense_w = match &a.dense {
        None => None,
        Some(p) => Some(dense::load(p, stored.units)?),
    };
    let outputs = dense_w
        .as_ref()
        .map(|d| d.outputs())
        .unwrap_or(stored.units);
    let check_w = match &user_weights {
        Ok(w) => w.clone(),
        Err(_) => stored.build(&structures[0].reading),
    };
    let (x, expected) = config::load_data(
        &a.input,
        a.window,
        &check_w,
        &a.expected,
        outputs,
        dense_w.is_none(),
        a.atol,
        a.rtol,
    )?;
    let x32 = x.mapv(|v| v as f32);
    let mask = a
        .mask_value
        .map(|v| engine::mask_from_value(x32.view(), v as f32));
    let p = Problem {
        kind,
        units: stored.units,
        x: x32,
        mask,
        dense: dense_w.as_ref().map(|d| d.cast::<f32>()),
        expected: expected.array.data.clone(),
        per_step: expected.sequences,
        width: if expected.sequences {
            stored.units
        } else {
            outputs
        },
        atol: a.atol,
        rtol: a.rtol,
    };

    let user_reset_after = (kind.has_reset_after()).then_some(match a.reset_after {
        ResetAfterArg::True => true,
        ResetAfterArg::False => false,
        ResetAfterArg::Auto => !matches!(stored.bias, StoredBias::Single(_)),
    });
    let user = Settings {
        activation: act,
        recurrent_activation: rec,
        reset_after: user_reset_after,
        go_backwards: a.go_backwards,
        order: stored.default_order(),
        transposed: stored.default_transposed(),
        textbook: false,
        carry_state: a.carry_state,
        dense_activation: a.dense.as_ref().map(|_| dense_act),
    };
    let mut ctx = Search {
        p,
        stored,
        structures,
        user,
        user_cand: None,
        user_error: None,
        kernels,
    };
    match &user_weights {
        Err(e) => ctx.user_error = Some(e.to_string()),
        Ok(w) => {
            let reading = Reading {
                transposed: ctx.user.transposed,
                order: ctx.user.order.clone(),
                reset_after: kind.has_reset_after() && w.reset_after,
                textbook_update: false,
            };
            let s = match ctx.structures.iter().position(|st| st.reading == reading) {
                Some(i) => i,
                None => {
                    ctx.structures.push(Structure {
                        weights: ctx.stored.build(&reading).cast::<f32>(),
                        reading,
                        first_tier: false,
                    });
                    ctx.structures.len() - 1
                }
            };
            ctx.user_cand = Some(Cand {
                s,
                act,
                rec,
                gb: a.go_backwards,
                carry: a.carry_state,
                dense: ctx.user.dense_activation,
            });
        }
    }

    Ok(ctx)
}

/// Runs `rnntrace diagnose`.
pub fn diagnose(a: &DiagnoseArgs, env: &Env) -> Result<Outcome> {
    let started = Instant::now();
    let ctx = load(a, env.kernels)?;
    let batch = ctx.p.x.shape()[0];
    // The search: first tier, then (only if nothing matched) the second.
    let base_carry = batch == 1 && a.carry_state;
    let layers = |first: bool| -> Vec<Cand> {
        let mut v = Vec::new();
        for (si, st) in ctx.structures.iter().enumerate() {
            if st.first_tier != first {
                continue;
            }
            for &act in &ACTIVATIONS {
                for &rec in &ACTIVATIONS {
                    if st.reading.textbook_update && !convention::complements_under_negation(rec) {
                        continue;
                    }
                    for gb in [false, true] {
                        v.push(Cand {
                            s: si,
                            act,
                            rec,
                            gb,
                            carry: base_carry,
                            dense: None,
                        });
                    }
                }
            }
        }
        v
    };
    let (mut finals, mut searched) = ctx.search(&layers(true));
    let mut tiers = 1;
    if !finals.iter().any(|s| s.passed && s.rows == batch) {
        let (more, n) = ctx.search(&layers(false));
        if n > 0 {
            tiers = 2;
        }
        finals.extend(more);
        searched += n;
    }
    // The user's flags, on the whole batch (unless they already were).
    let steps = ctx.p.x.shape()[1];
    let user_scored =
        ctx.user_cand.map(
            |c| match finals.iter().find(|s| s.c == c && s.rows == batch) {
                Some(s) => *s,
                None => {
                    let l = ctx.run(&c, 0..batch, steps, record_for(&ctx.p), None);
                    let (err, passed) = ctx.score(&l, 0..batch, steps, &[c.dense])[0];
                    Scored {
                        c,
                        err,
                        passed,
                        rows: batch,
                    }
                }
            },
        );
    if let Some(us) = user_scored {
        finals.retain(|s| s.c != us.c);
        finals.push(us);
    }
    // Whole-batch results first, then those compared on fewer sequences.
    finals.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| ctx.rank(a, b)));
    let evaluated = finals.iter().filter(|s| s.rows == batch).count();
    let Some(best) = finals.first().copied() else {
        return Err(Error::usage("diagnose: no candidate could be evaluated"));
    };
    let divergence = match ctx.user_cand {
        Some(u) if u != best.c => ctx.first_divergence(&u, &best.c),
        _ => None,
    };
    let elapsed = started.elapsed().as_secs_f64();

    if let Some(path) = &a.write_weights {
        write_weights(path, &ctx.stored.build(&ctx.structures[best.c.s].reading))?;
    }
    let report = Diagnosis {
        ctx: &ctx,
        a,
        finals: &finals,
        best,
        user: user_scored,
        divergence,
        searched,
        evaluated,
        tiers,
        seconds: elapsed,
    };
    match a.format {
        FormatArg::Json => {
            let v = report.json();
            write_stdout(|w| {
                serde_json::to_writer_pretty(&mut *w, &v).map_err(std::io::Error::from)?;
                writeln!(w)
            })?
        }
        FormatArg::Table => {
            let text = report.text();
            write_stdout(|w| w.write_all(text.as_bytes()))?
        }
    }
    Ok(if best.passed {
        Outcome::Success
    } else {
        Outcome::Mismatch
    })
}

fn record_for(p: &Problem) -> Record {
    if p.per_step {
        Record::STATES
    } else {
        Record::NONE
    }
}

/// Every reading of the stored weights, defaults first, each built once at float32.
fn structures(st: &Stored) -> Vec<Structure> {
    let kind = st.kind;
    let default_order = st.default_order();
    let mut orders = convention::all_orders(kind);
    // The layout's own order first.
    if let Some(i) = orders.iter().position(|(o, _)| *o == default_order) {
        let o = orders.remove(i);
        orders.insert(0, o);
    }
    let mut transposed = st.kernel_readings.clone();
    transposed.sort_by_key(|&t| t != st.default_transposed());
    let (natural, reinterpreted) = st.reset_after_readings();
    let resets: Vec<(bool, bool)> = natural
        .iter()
        .map(|&r| (r, true))
        .chain(reinterpreted.iter().map(|&r| (r, false)))
        .collect();
    let textbook: &[bool] = match kind {
        CellKind::Gru => &[false, true],
        CellKind::Lstm | CellKind::SimpleRnn => &[false],
    };
    let mut out = Vec::new();
    for (order, common) in &orders {
        for &tr in &transposed {
            for &(ra, natural) in &resets {
                for &tb in textbook {
                    let reading = Reading {
                        transposed: tr,
                        order: order.clone(),
                        reset_after: ra,
                        textbook_update: tb,
                    };
                    out.push(Structure {
                        weights: st.build(&reading).cast::<f32>(),
                        reading,
                        first_tier: *common && natural,
                    });
                }
            }
        }
    }
    out
}

/// Writes weights in Keras layout as a JSON object {kernel, recurrent_kernel, bias} (values exact).
fn write_weights(path: &Path, w: &CellWeights<f64>) -> Result<()> {
    let rows =
        |a: &Array2<f64>| -> Vec<Vec<f64>> { a.rows().into_iter().map(|r| r.to_vec()).collect() };
    let gu = w.kernel.ncols();
    let zeros = || vec![0.0; gu];
    let mut obj = json!({
        "kernel": rows(&w.kernel),
        "recurrent_kernel": rows(&w.recurrent_kernel),
    });
    let bias = match (
        &w.bias,
        &w.recurrent_bias,
        w.kind.has_reset_after() && w.reset_after,
    ) {
        (None, None, _) => None,
        (b, r, true) => Some(json!([
            b.as_ref().map_or_else(zeros, |b| b.to_vec()),
            r.as_ref().map_or_else(zeros, |r| r.to_vec())
        ])),
        (b, _, false) => Some(json!(b.as_ref().map_or_else(zeros, |b| b.to_vec()))),
    };
    if let (Some(b), Value::Object(m)) = (bias, &mut obj) {
        m.insert("bias".into(), b);
    }
    atomic_write(path, |out| {
        serde_json::to_writer(&mut *out, &obj).map_err(std::io::Error::from)?;
        writeln!(out)
    })
}

/// Everything the report shows.
struct Diagnosis<'a> {
    ctx: &'a Search,
    a: &'a DiagnoseArgs,
    finals: &'a [Scored],
    best: Scored,
    user: Option<Scored>,
    divergence: Option<Divergence>,
    searched: usize,
    evaluated: usize,
    tiers: usize,
    seconds: f64,
}

fn num(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

fn short(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e-3 && v.abs() < 1e4 {
        format!("{}", (v * 1e4).round() / 1e4)
    } else {
        format!("{v:.2e}")
    }
}

impl Diagnosis<'_> {
    fn kind(&self) -> CellKind {
        self.ctx.p.kind
    }

    fn settings_json(&self, s: &Settings) -> serde_json::Map<String, Value> {
        let v = json!({
            "activation": s.activation.name(),
            "recurrent_activation": s.recurrent_activation.name(),
            "reset_after": s.reset_after,
            "go_backwards": s.go_backwards,
            "gate_order": convention::order_letters(self.kind(), &s.order),
            "carry_state": s.carry_state,
            "dense_activation": s.dense_activation.map(|a| a.name()),
            "transposed": s.transposed,
            "gru_update": if s.textbook { "textbook" } else { "keras" },
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }

    fn cand_json(&self, sc: &Scored) -> Value {
        let s = self.ctx.settings(&sc.c);
        let mut m = self.settings_json(&s);
        m.insert("max_abs_error".into(), num(sc.err));
        m.insert("matches".into(), json!(sc.passed));
        m.insert("sequences_compared".into(), json!(sc.rows));
        m.insert(
            "differs_from_yours".into(),
            json!(s.differences(&self.ctx.user)),
        );
        Value::Object(m)
    }

    fn json(&self) -> Value {
        let mut yours = self.settings_json(&self.ctx.user);
        yours.insert("runnable".into(), json!(self.ctx.user_error.is_none()));
        yours.insert("error".into(), json!(self.ctx.user_error));
        yours.insert(
            "max_abs_error".into(),
            num(self.user.map_or(f64::NAN, |u| u.err)),
        );
        yours.insert("matches".into(), json!(self.user.is_some_and(|u| u.passed)));
        let rerun = self.rerun(&self.ctx.settings(&self.best.c));
        json!({
            "format": "rnntrace-diagnose/1",
            "cell": self.kind().name(),
            "sequences": self.ctx.p.x.shape()[0],
            "values_compared": self.ctx.p.expected.len(),
            "atol": self.ctx.p.atol,
            "rtol": self.ctx.p.rtol,
            "searched": self.searched,
            "evaluated_on_all_sequences": self.evaluated,
            "best": self.cand_json(&self.best),
            "yours": Value::Object(yours),
            "candidates": self.finals.iter().take(LISTED).map(|s| self.cand_json(s)).collect::<Vec<_>>(),
            "first_divergence": self.divergence.as_ref().map(|d| json!({
                "sequence": d.sequence,
                "step": d.step,
                "gate": d.gate,
                "unit": d.unit,
                "ours": num(d.ours),
                "best": num(d.best),
                "input_index": d.input_index.map(|(u, b)| json!({"ours": u, "best": b})),
            })),
            "rerun": {
                "command": rerun.0,
                "flags": rerun.1.iter().flat_map(|f| f.split(' ')).collect::<Vec<_>>(),
                "weights_converted": rerun.2,
            },
            "advice": self.advice(),
        })
    }

    /// One clause per setting in which the best candidate differs from the user's flags.
    fn clause(&self, field: Field, b: &Settings, u: &Settings) -> String {
        let kind = self.kind();
        match field {
            Field::RecurrentActivation => match (b.recurrent_activation, u.recurrent_activation) {
                (Activation::HardSigmoidKeras2, _) => "your file was saved by Keras 2 (tf-keras, or Keras 2.0–2.2, whose default recurrent_activation was hard_sigmoid): its hard_sigmoid is clip(0.2x + 0.5, 0, 1), not Keras 3's relu6(x + 3)/6".into(),
                (Activation::HardSigmoid, Activation::HardSigmoidKeras2) => "the model is a Keras 3 one: its hard_sigmoid is relu6(x + 3)/6 = clip(x/6 + 0.5, 0, 1), not Keras 2's clip(0.2x + 0.5, 0, 1)".into(),
                (bb, uu) => format!(
                    "the gates use recurrent_activation {}, not {}",
                    bb.name(),
                    uu.name()
                ),
            },
            Field::Activation => format!(
                "the layer's activation ({}) is {}, not {}",
                if kind.has_cell_state() {
                    "candidate and cell output"
                } else {
                    "candidate"
                },
                b.activation.name(),
                u.activation.name()
            ),
            Field::GateOrder => {
                let who = |o: &[usize]| {
                    convention::order_name(kind, o)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                };
                format!(
                    "the file stores the gate blocks in {} order{}, not {}{}",
                    convention::order_letters(kind, &b.order),
                    who(&b.order),
                    convention::order_letters(kind, &u.order),
                    who(&u.order)
                )
            }
            Field::Transposed => {
                if b.transposed && self.ctx.stored.recurrent_transposed {
                    "both kernels are stored transposed, (gates·units, inputs) as PyTorch stores weight_ih and weight_hh".into()
                } else if b.transposed {
                    "the input kernel is stored transposed, (gates·units, features) as PyTorch stores weight_ih".into()
                } else {
                    "the input kernel is stored (features, gates·units), as Keras stores it".into()
                }
            }
            Field::ResetAfter => {
                let how = match (&self.ctx.stored.bias, b.reset_after) {
                    (StoredBias::Single(_), Some(true)) => {
                        " (its (3u,) bias being the input bias, with no recurrent bias)"
                    }
                    (StoredBias::Double(..), Some(false)) => {
                        " (its input and recurrent biases added into one)"
                    }
                    _ => "",
                };
                if b.reset_after == Some(true) {
                    format!(
                        "the GRU is reset_after=True (Keras 3's and PyTorch's form: the reset gate multiplies h·U + b after the product){how}"
                    )
                } else {
                    format!(
                        "the GRU is reset_after=False (Keras 2.2's and TF1's form: the reset gate multiplies h before the product){how}"
                    )
                }
            }
            Field::GruUpdate => {
                if b.textbook {
                    "the output follows the textbook GRU update h = (1−z)⊙h_prev + z⊙h̃, not Keras's h = z⊙h_prev + (1−z)⊙h̃".into()
                } else {
                    "the output follows Keras's GRU update h = z⊙h_prev + (1−z)⊙h̃, not the textbook one".into()
                }
            }
            Field::GoBackwards => {
                if b.go_backwards {
                    "the layer reads each sequence last step first (go_backwards=True, as the backward half of a Bidirectional does)".into()
                } else {
                    "the layer reads each sequence in time order (go_backwards=False)".into()
                }
            }
            Field::CarryState => {
                if b.carry_state {
                    "the layer is stateful: each sequence starts from the previous one's final state".into()
                } else {
                    "every sequence starts from zero state, as model.predict does on a stateless layer".into()
                }
            }
            Field::DenseActivation => format!(
                "the Dense head applies {}, not {}",
                b.dense_activation.map_or("nothing", |a| a.name()),
                u.dense_activation.map_or("nothing", |a| a.name())
            ),
        }
    }

    /// How to reproduce `s` with `rnntrace lstm/gru`: the whole command, its convention flags, and whether
    /// the weights must be rewritten first (`--write-weights`).
    fn rerun(&self, s: &Settings) -> (String, Vec<String>, bool) {
        let st = &self.ctx.stored;
        let a = self.a;
        let convert = s.order != st.default_order()
            || s.transposed != st.default_transposed()
            || s.textbook
            || matches!(
                (&st.bias, s.reset_after),
                (StoredBias::Single(_), Some(true)) | (StoredBias::Double(..), Some(false))
            );
        let mut flags: Vec<String> = Vec::new();
        if s.activation != Activation::Tanh {
            flags.push(format!("--activation {}", s.activation.name()));
        }
        if s.recurrent_activation != Activation::Sigmoid {
            flags.push(format!(
                "--recurrent-activation {}",
                s.recurrent_activation.name()
            ));
        }
        if let Some(ra) = s.reset_after {
            // What `--reset-after auto` reads from the bias that will be passed.
            let auto = match (&st.bias, convert) {
                (StoredBias::None, _) => true,
                (_, true) => ra,
                (StoredBias::Single(_), false) => false,
                (StoredBias::Double(..), false) => true,
            };
            if auto != ra {
                flags.push(format!("--reset-after {ra}"));
            }
        }
        if s.go_backwards {
            flags.push("--go-backwards".into());
        }
        if s.carry_state {
            flags.push("--carry-state".into());
        }
        if let Some(d) = s.dense_activation.filter(|&d| d != Activation::Linear) {
            flags.push(format!("--dense-activation {}", d.name()));
        }
        let q = |p: &Path| {
            let s = p.display().to_string();
            if s.contains(' ') { format!("'{s}'") } else { s }
        };
        let weights = match (&a.write_weights, convert) {
            (Some(w), true) => q(w),
            (None, true) => "fixed.json".into(),
            _ => q(&a.weights),
        };
        let mut cmd = format!(
            "rnntrace {} --weights {weights} --input {}",
            self.kind().name(),
            q(&a.input)
        );
        if let Some(k) = a.window {
            cmd += &format!(" --window {k}");
        }
        if let Some(v) = a.mask_value {
            cmd += &format!(" --mask-value {v}");
        }
        if let Some(d) = &a.dense {
            cmd += &format!(" --dense {}", q(d));
        }
        cmd += &format!(" --expected {}", q(&a.expected));
        for f in &flags {
            cmd += " ";
            cmd += f;
        }
        (cmd, flags, convert)
    }

    fn advice(&self) -> String {
        let ctx = self.ctx;
        let best = ctx.settings(&self.best.c);
        let n = ctx.p.expected.len();
        let tol = format!("atol {:e} + rtol {:e}", ctx.p.atol, ctx.p.rtol);
        let diffs = best.differences(&ctx.user);
        let mut clauses: Vec<String> = diffs
            .iter()
            .map(|f| self.clause(*f, &best, &ctx.user))
            .collect();
        if ctx.stored.layout == Layout::Keras
            && ctx.stored.recurrent_transposed
            && !(best.transposed && diffs.contains(&Field::Transposed))
        {
            // Not a choice (the shape allows nothing else), but the reason the user's flags cannot run.
            clauses.push(
                "the recurrent kernel is stored transposed, (gates·units, units) as PyTorch stores weight_hh"
                    .into(),
            );
        }
        let joined = match clauses.len() {
            0 => String::new(),
            1 => clauses[0].clone(),
            _ => format!(
                "{}; and {}",
                clauses[..clauses.len() - 1].join("; "),
                clauses[clauses.len() - 1]
            ),
        };
        let mut out = String::new();
        if !self.best.passed {
            out += &format!(
                "No convention among the {} searched reproduces the expected output within {tol}. ",
                self.searched
            );
            if diffs.is_empty() {
                out += &format!(
                    "The closest is your own setting, still off by up to {}. ",
                    short(self.best.err)
                );
            } else {
                let what = diffs
                    .iter()
                    .map(|f| field_value(self.kind(), *f, &best))
                    .collect::<Vec<_>>()
                    .join(", ");
                out += &format!(
                    "The closest ({what}) is still off by up to {}{}. ",
                    short(self.best.err),
                    match &self.user {
                        Some(u) => format!("; your flags by {}", short(u.err)),
                        None => String::new(),
                    }
                );
            }
            out += "The weights, input and expected output may not belong together (another checkpoint, \
                    different scaling or --window), or the model does something this search does not vary: \
                    masking other than --mask-value, an initial state, layers before this one, a head other \
                    than one Dense layer.";
            return out;
        }
        if clauses.is_empty() && ctx.user_error.is_none() {
            out += &format!(
                "Your flags reproduce the expected output: largest error {} over {n} values, within {tol}.",
                short(self.best.err)
            );
            let alts: Vec<String> = self
                .finals
                .iter()
                .skip(1)
                .filter(|s| s.passed)
                .take(3)
                .map(|s| {
                    let st = ctx.settings(&s.c);
                    let what = st
                        .differences(&ctx.user)
                        .iter()
                        .map(|f| field_value(self.kind(), *f, &st))
                        .collect::<Vec<_>>()
                        .join(", ");
                    match s.rows {
                        r if r == ctx.p.x.shape()[0] => what,
                        1 => format!("{what} (on sequence 0)"),
                        r => format!("{what} (on the first {r} sequences)"),
                    }
                })
                .collect();
            if !alts.is_empty() {
                out += &format!(
                    " These data fit some other settings equally well, so they cannot confirm every flag: {}.",
                    alts.join("; ")
                );
            }
            return out;
        }
        let mut first = if clauses.is_empty() {
            "your flags state the right conventions".to_string()
        } else {
            joined
        };
        if let Some(c) = first.get(0..1) {
            first = c.to_uppercase() + &first[1..];
        }
        out += &format!(
            "{first}. With that, the expected output is reproduced: largest error {} over {n} values, within {tol}. ",
            short(self.best.err)
        );
        let (cmd, rerun_flags, convert) = self.rerun(&best);
        if convert {
            let extra = if best.textbook {
                " (rnntrace computes Keras's update, so the z block is stored negated: σ(−x) = 1 − σ(x), and the z the trace shows is 1 − your z)"
            } else {
                ""
            };
            match &self.a.write_weights {
                Some(w) => {
                    out += &format!(
                        "rnntrace reads weights in Keras's layout; the converted weights were written to {}{extra}: rerun with `{cmd}`.",
                        w.display()
                    )
                }
                None => {
                    out += &format!(
                        "rnntrace reads weights in Keras's layout: add --write-weights fixed.json to this command to write them converted{extra}, then rerun with `{cmd}`."
                    )
                }
            }
        } else {
            let mut flags: Vec<String> = diffs.iter().filter_map(|f| flag_for(*f, &best)).collect();
            if diffs.contains(&Field::ResetAfter) {
                flags.push(
                    rerun_flags
                        .iter()
                        .find(|f| f.starts_with("--reset-after"))
                        .cloned()
                        .unwrap_or_else(|| "no --reset-after (auto reads the bias)".into()),
                );
            }
            if flags.is_empty() {
                out += &format!("Rerun: `{cmd}`.");
            } else {
                out += &format!("Rerun with {}: `{cmd}`.", flags.join(" "));
            }
        }
        match (&self.ctx.user_error, &self.divergence, &self.user) {
            (Some(e), _, _) => {
                out += &format!(" With your flags rnntrace cannot read these weights: {e}.")
            }
            (None, Some(d), Some(u)) => {
                let place = match d.step {
                    Some(t) => format!("step {t}, {}", gate_label(&d.gate)),
                    None => format!("the {} head", d.gate),
                };
                out += &format!(
                    " Your flags (largest error {}) first depart from it at sequence {}, {place}, unit {}: yours {}, best {}.",
                    short(u.err),
                    d.sequence,
                    d.unit,
                    short(d.ours),
                    short(d.best)
                );
            }
            (None, None, Some(u)) => {
                out += &format!(" Your flags: largest error {}.", short(u.err));
            }
            _ => {}
        }
        out
    }

    fn text(&self) -> String {
        let ctx = self.ctx;
        let mut out = String::new();
        out += &wrap(&self.advice(), 100);
        out += "\n\n";
        let batch = ctx.p.x.shape()[0];
        out += &format!(
            "Ranking ({} candidates searched{}; largest |ours − expected|, on all {batch} sequences unless marked):\n",
            self.searched,
            if self.tiers == 2 { ", both tiers" } else { "" },
        );
        let row = |label: String, s: &Scored, what: String| {
            let on = if s.rows == batch {
                String::new()
            } else if s.rows == 1 {
                " [on sequence 0]".to_string()
            } else {
                format!(" [on the first {} sequences]", s.rows)
            };
            format!(
                "  {label:>5}  {:>10}  {:<8}  {what}{on}\n",
                short(s.err),
                if s.passed { "match" } else { "no match" }
            )
        };
        for (i, s) in self.finals.iter().take(SHOWN).enumerate() {
            let st = ctx.settings(&s.c);
            let d = st.differences(&ctx.user);
            let what = if d.is_empty() {
                "your flags".to_string()
            } else {
                d.iter()
                    .map(|f| field_value(self.kind(), *f, &st))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out += &row(format!("{}", i + 1), s, what);
        }
        let shown = self
            .finals
            .iter()
            .take(SHOWN)
            .any(|s| Some(s.c) == ctx.user_cand);
        match (&self.user, &ctx.user_error) {
            (Some(_), _) if shown => {}
            (Some(u), _) => {
                out += &row("yours".into(), u, describe(self.kind(), &ctx.user));
            }
            (None, Some(e)) => out += &format!("  yours: not runnable: {e}\n"),
            _ => {}
        }
        out += &format!("Searched in {:.2} s.\n", self.seconds);
        out
    }
}

/// How a field of `s` reads in the ranking: `recurrent_activation hard_sigmoid_keras2`.
fn field_value(kind: CellKind, field: Field, s: &Settings) -> String {
    match field {
        Field::RecurrentActivation => {
            format!("recurrent_activation {}", s.recurrent_activation.name())
        }
        Field::Activation => format!("activation {}", s.activation.name()),
        Field::GateOrder => format!("gate_order {}", convention::order_letters(kind, &s.order)),
        Field::Transposed => format!("transposed {}", s.transposed),
        Field::ResetAfter => format!("reset_after {}", s.reset_after.unwrap_or(false)),
        Field::GruUpdate => format!(
            "gru_update {}",
            if s.textbook { "textbook" } else { "keras" }
        ),
        Field::GoBackwards => format!("go_backwards {}", s.go_backwards),
        Field::CarryState => format!("carry_state {}", s.carry_state),
        Field::DenseActivation => format!(
            "dense_activation {}",
            s.dense_activation.map_or("none", |a| a.name())
        ),
    }
}

/// The user's own settings, in short.
fn describe(kind: CellKind, s: &Settings) -> String {
    let mut v = vec![
        format!("activation {}", s.activation.name()),
        format!("recurrent_activation {}", s.recurrent_activation.name()),
    ];
    if let Some(r) = s.reset_after {
        v.push(format!("reset_after {r}"));
    }
    v.push(format!(
        "gate_order {}",
        convention::order_letters(kind, &s.order)
    ));
    if s.go_backwards {
        v.push("go_backwards".into());
    }
    if s.carry_state {
        v.push("carry_state".into());
    }
    if let Some(d) = s.dense_activation {
        v.push(format!("dense_activation {}", d.name()));
    }
    format!("your flags: {}", v.join(", "))
}

/// The `lstm`/`gru` flag that sets `field` as in `s` (None when it is the default, i.e. a flag to drop).
fn flag_for(field: Field, s: &Settings) -> Option<String> {
    match field {
        Field::RecurrentActivation => Some(format!(
            "--recurrent-activation {}",
            s.recurrent_activation.name()
        )),
        Field::Activation => Some(format!("--activation {}", s.activation.name())),
        Field::GoBackwards => Some(if s.go_backwards {
            "--go-backwards".into()
        } else {
            "no --go-backwards".into()
        }),
        Field::CarryState => Some(if s.carry_state {
            "--carry-state".into()
        } else {
            "no --carry-state".into()
        }),
        Field::DenseActivation => s
            .dense_activation
            .map(|d| format!("--dense-activation {}", d.name())),
        // Set by rewriting the weights (--write-weights), not by a flag.
        Field::GateOrder | Field::Transposed | Field::ResetAfter | Field::GruUpdate => None,
    }
}

fn gate_label(g: &str) -> String {
    if g.starts_with("state") {
        g.to_string()
    } else {
        format!("gate {g}")
    }
}

/// Greedy word wrap at `width` columns.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        let w = word.chars().count();
        if line > 0 && line + 1 + w > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out += word;
        line += w;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap("aaa bbb ccc ddd", 7);
        assert_eq!(w, "aaa bbb\nccc ddd");
    }

    #[test]
    fn differences_are_listed_in_advice_order() {
        let s = Settings {
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            reset_after: None,
            go_backwards: false,
            order: vec![0, 1, 2, 3],
            transposed: false,
            textbook: false,
            carry_state: false,
            dense_activation: None,
        };
        let mut t = s.clone();
        t.go_backwards = true;
        t.recurrent_activation = Activation::HardSigmoidKeras2;
        assert_eq!(
            t.differences(&s),
            vec![Field::RecurrentActivation, Field::GoBackwards]
        );
    }
}
