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

This file reads and checks the inputs and runs the whole; [`space`] is what is searched, [`search`] the
pruned search, [`report`] what is said.
*/

mod report;
mod search;
mod space;

#[allow(unused_imports)]
use self::{report::*, search::*, space::*};

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

/// Reads and checks every input, and builds every reading of the weights.
fn load(a: &DiagnoseArgs, kernels: Kernels) -> Result<Search> {
    let kind = if a.cell == "gru" {
        CellKind::Gru
    } else {
        CellKind::Lstm
    };
    let act = config::activation("activation", &a.convention.activation)?;
    let rec = config::activation("recurrent-activation", &a.convention.recurrent_activation)?;
    let dense_act = config::activation("dense-activation", &a.convention.dense_activation)?;
    if !kind.has_reset_after() && a.convention.reset_after != ResetAfterArg::Auto {
        return Err(Error::usage("--reset-after applies to GRU layers only"));
    }
    if a.dense.is_none() && a.convention.dense_activation != "linear" {
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
        if a.convention.reset_after == ResetAfterArg::False {
            Err(Error::usage(
                "PyTorch's GRU is reset_after=True; --reset-after false does not apply",
            ))
        } else if src.arrays.iter().any(|(n, _)| n.contains("weight_hr_l")) {
            return Err(Error::input(
                &src.path,
                "holds a proj_size LSTM (weight_hr_l0); diagnose does not model projections: trace it with `rnntrace lstm` or `run --cell lstm`",
            ));
        } else {
            pytorch::from_state_dict(kind, &src, 0, false)
        }
    } else {
        keras::from_arrays(kind, &src, a.convention.reset_after.reading())
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
    let (x, expected) = crate::cli::load::load_data(
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

    let user_reset_after = (kind.has_reset_after()).then_some(match a.convention.reset_after {
        ResetAfterArg::True => true,
        ResetAfterArg::False => false,
        ResetAfterArg::Auto => !matches!(stored.bias, StoredBias::Single(_)),
    });
    let user = Settings {
        activation: act,
        recurrent_activation: rec,
        reset_after: user_reset_after,
        go_backwards: a.convention.go_backwards,
        order: stored.default_order(),
        transposed: stored.default_transposed(),
        textbook: false,
        carry_state: a.convention.carry_state,
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
                gb: a.convention.go_backwards,
                carry: a.convention.carry_state,
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
    let base_carry = batch == 1 && a.convention.carry_state;
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
                    let l = ctx.trace_candidate(&c, 0..batch, steps, record_for(&ctx.p), None);
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
