/*!
The pruned search: runs candidates on growing subsets of the batch, keeps the promising ones, ranks
them, and finds where the user's run first departs from the best one.
*/

#[allow(unused_imports)]
use super::*;

/// Steps of sequence 0 the first round compares when the expected output holds every step.
pub(super) const SCREEN_STEPS: usize = 8;
/// Sequences of the first middle round; each further round has 8 times as many, up to the whole batch.
pub(super) const MIDDLE_SEQUENCES: usize = 8;
/// Into the first middle round go at most this many candidates within tolerance (closest to the user's
/// flags first) and this many of the rest (by error), each with and without carried state.
pub(super) const KEEP_FIRST: (usize, usize) = (64, 16);
/// Into later rounds: at most this many within tolerance, and (only when none is) this many by error, or
/// this many for the whole batch.
pub(super) const KEEP_LATER: (usize, usize, usize) = (4, 4, 2);
/// Candidates listed in the JSON ranking.
pub(super) const LISTED: usize = 20;
/// Candidates shown in the text ranking.
pub(super) const SHOWN: usize = 5;
/// Sequences traced at a time while looking for the first divergence.
pub(super) const DIVERGENCE_CHUNK: usize = 16;

/// Everything the search and the report share.
pub(super) struct Search {
    pub(super) p: Problem,
    pub(super) stored: Stored,
    pub(super) structures: Vec<Structure>,
    pub(super) user: Settings,
    /// The user's flags as a candidate, when `rnntrace lstm/gru` would accept them.
    pub(super) user_cand: Option<Cand>,
    /// Why `rnntrace lstm/gru` would refuse the user's flags.
    pub(super) user_error: Option<String>,
    /// The best kernels a run may use.
    pub(super) kernels: Kernels,
}

pub(super) fn rank_of(list: &[Activation], a: Activation) -> usize {
    list.iter().position(|&x| x == a).unwrap_or(list.len())
}

pub(super) fn err_key(e: f64) -> f64 {
    if e.is_nan() { f64::INFINITY } else { e }
}

impl Search {
    pub(super) fn settings(&self, c: &Cand) -> Settings {
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

    pub(super) fn distance(&self, c: &Cand) -> usize {
        self.settings(c).differences(&self.user).len()
    }

    /// A fixed preference among otherwise equal candidates: first tier, defaults, common activations.
    pub(super) fn prior(&self, c: &Cand) -> (bool, usize, usize, usize, bool, bool, usize) {
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
    pub(super) fn rank(&self, a: &Scored, b: &Scored) -> Ordering {
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
    pub(super) fn trace_candidate(
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
    pub(super) fn predictions(&self, l: &LayerTrace<f32>, d: Option<Activation>) -> Array2<f32> {
        match (d, &self.p.dense) {
            (Some(a), Some(w)) => engine::dense(w, a, l.last_output.view()),
            _ => l.last_output.clone(),
        }
    }

    /// (largest error, all within tolerance) of a run on `rows` × `steps`, for each head activation.
    pub(super) fn score(
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
    pub(super) fn evaluate(&self, cands: &[Cand], rows: Range<usize>, steps: usize) -> Vec<Scored> {
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
                let l = self.trace_candidate(key, rows.clone(), steps, record, None);
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
    pub(super) fn select(&self, scored: &[Scored], round: usize, last: bool) -> Vec<Cand> {
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
    pub(super) fn search(&self, layers: &[Cand]) -> (Vec<Scored>, usize) {
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
    pub(super) fn first_divergence(&self, user: &Cand, best: &Cand) -> Option<Divergence> {
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
            let lu = self.trace_candidate(
                user,
                rows.clone(),
                t,
                Record::ALL,
                carried_u.as_ref().filter(|_| user.carry),
            );
            let lb = self.trace_candidate(
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
pub(super) struct Divergence {
    pub(super) sequence: usize,
    /// Processing step; `None` for the Dense head (after the last step).
    pub(super) step: Option<usize>,
    /// Input rows read at that step: (user's, best's).
    pub(super) input_index: Option<(usize, usize)>,
    /// Gate name, `state h`/`state c`, or `dense`/`output`.
    pub(super) gate: String,
    pub(super) unit: usize,
    pub(super) ours: f64,
    pub(super) best: f64,
}

pub(super) fn record_for(p: &Problem) -> Record {
    if p.per_step {
        Record::STATES
    } else {
        Record::NONE
    }
}
