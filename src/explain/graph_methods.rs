/*!
The attribution methods over a [`Graph`] with one or several inputs: gradient, input × gradient,
integrated gradients and occlusion, as [`super::methods`] computes them for a chain, per input.

- Output `k` counts over the model's outputs in order, each contributing its columns (a sequence output
  its last step's).
- Integrated gradients move every input together along the straight path from its baseline (Captum's
  multi-input rule), so completeness sums over all inputs: Σ attributions ≈ f(x) − f(b). Masks stay the
  input's along the path (a token input's `mask_zero` mask comes from its ids, not from the interpolated
  embeddings, as Keras computes it when the embedding output is replaced).
- Occlusion replaces one step of one input at a time by the baseline's step (a flat input's whole vector
  counts as its one step) and reports `f(x) − f(occluded)`.
*/

use super::Methods;
use super::graph::{GForward, Graph};
use super::methods::IgRule;
use super::network::{InitialState, Value};
use super::units::{self, UnitReport};
use crate::cell::Real;
use crate::trace::Record;
use ndarray::{Array1, Array2, Array3, Axis, s};

/// One input's value and mask.
pub type Fed<T> = (Value<T>, Option<Array2<bool>>);

/// What to explain.
#[derive(Debug, Clone)]
pub struct GraphRequest<T> {
    /// Output index over all outputs' columns.
    pub output: usize,
    /// Methods.
    pub methods: Methods,
    /// One baseline per input, shaped like it.
    pub baselines: Vec<Value<T>>,
    /// IG nodes.
    pub ig_steps: usize,
    /// IG rule.
    pub ig_rule: IgRule,
    /// Approximate bytes one batched pass may record.
    pub pass_budget: usize,
}

/// One input's attributions, shaped like the input (occlusion: `(batch, steps)`, a flat input has one).
#[derive(Debug, Clone, Default)]
pub struct InputAttributions<T> {
    /// Gradient.
    pub gradient: Option<Value<T>>,
    /// Input × gradient.
    pub input_x_gradient: Option<Value<T>>,
    /// Integrated gradients.
    pub integrated_gradients: Option<Value<T>>,
    /// Occlusion per step.
    pub occlusion: Option<Array2<T>>,
}

/// The result over a graph.
#[derive(Debug, Clone)]
pub struct GraphExplanation<T> {
    /// Output `k` per sequence.
    pub prediction: Array1<T>,
    /// At the baselines (with the inputs' masks).
    pub baseline_prediction: Array1<T>,
    /// Per input, in the model's input order.
    pub inputs: Vec<InputAttributions<T>>,
    /// Σ IG over every input minus (f(x) − f(b)).
    pub completeness: Option<Array1<T>>,
    /// The first recurrent layer's initial-state gradient (see [`Graph::first_state_entry`]).
    pub initial_state_gradient: Option<(Array2<T>, Option<Array2<T>>)>,
    /// Every recurrent layer's (direction's, cell's, shared layer's call's) gradient with respect to the
    /// initial `(h, c)` it started from, named as its trace: in model order, a Bidirectional's forward then
    /// backward direction (empty when no gradient was asked).
    pub initial_state_gradients: Vec<(String, Array2<T>, Option<Array2<T>>)>,
    /// Per recurrent layer (direction).
    pub units: Vec<UnitReport>,
    /// Number of output columns.
    pub outputs: usize,
    /// Every output's rows of the explained forward pass, `(batch, Σ columns)` (what `run` must equal).
    pub rows: Array2<T>,
}

impl<T: Real> GForward<T> {
    /// Every output's rows side by side: `(batch, Σ columns)` (a sequence output's last step).
    pub fn output_rows(&self) -> Array2<T> {
        let parts: Vec<Array2<T>> = self.outputs.iter().map(last_rows).collect();
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(1), &views).expect("same batch")
    }
}

fn last_rows<T: Real>(v: &Value<T>) -> Array2<T> {
    match v {
        Value::Flat(a) => a.clone(),
        Value::Seq(a) => a.index_axis(Axis(1), a.dim().1 - 1).to_owned(),
    }
}

/// The seeds for output column `k`.
pub fn seeds<T: Real>(fwd: &GForward<T>, k: usize) -> Vec<Option<Value<T>>> {
    let mut at = 0;
    fwd.outputs
        .iter()
        .map(|o| {
            let w = last_rows(o).ncols();
            let mine = (at..at + w).contains(&k);
            let c = k.wrapping_sub(at);
            at += w;
            mine.then(|| {
                let mut z = o.zeros_like();
                match &mut z {
                    Value::Flat(a) => a.column_mut(c).fill(T::one()),
                    Value::Seq(a) => {
                        let t = a.dim().1 - 1;
                        a.slice_mut(s![.., t, c]).fill(T::one());
                    }
                }
                z
            })
        })
        .collect()
}

fn tile<T: Real>(v: &Value<T>, k: usize) -> Value<T> {
    match v {
        Value::Seq(a) => {
            let views: Vec<_> = (0..k).map(|_| a.view()).collect();
            Value::Seq(ndarray::concatenate(Axis(0), &views).expect("same"))
        }
        Value::Flat(a) => {
            let views: Vec<_> = (0..k).map(|_| a.view()).collect();
            Value::Flat(ndarray::concatenate(Axis(0), &views).expect("same"))
        }
    }
}

fn tile_mask(m: &Option<Array2<bool>>, k: usize) -> Option<Array2<bool>> {
    m.as_ref().map(|m| {
        let views: Vec<_> = (0..k).map(|_| m.view()).collect();
        ndarray::concatenate(Axis(0), &views).expect("same")
    })
}

fn batch_of<T: Real>(v: &Value<T>) -> usize {
    match v {
        Value::Seq(a) => a.dim().0,
        Value::Flat(a) => a.nrows(),
    }
}

/// Rows `j·b .. (j+1)·b` of a value.
fn block<T: Real>(v: &Value<T>, j: usize, b: usize) -> Value<T> {
    match v {
        Value::Seq(a) => Value::Seq(a.slice(s![j * b..(j + 1) * b, .., ..]).to_owned()),
        Value::Flat(a) => Value::Flat(a.slice(s![j * b..(j + 1) * b, ..]).to_owned()),
    }
}

fn zip3<T: Real>(a: &Value<T>, b: &Value<T>, f: impl Fn(T, T) -> T) -> Value<T> {
    match (a, b) {
        (Value::Seq(x), Value::Seq(y)) => {
            Value::Seq(ndarray::Zip::from(x).and(y).map_collect(|&p, &q| f(p, q)))
        }
        (Value::Flat(x), Value::Flat(y)) => {
            Value::Flat(ndarray::Zip::from(x).and(y).map_collect(|&p, &q| f(p, q)))
        }
        _ => panic!("baseline shapes follow the inputs"),
    }
}

fn total<T: Real>(v: &Value<T>) -> Array1<T> {
    match v {
        Value::Seq(a) => a.sum_axis(Axis(2)).sum_axis(Axis(1)),
        Value::Flat(a) => a.sum_axis(Axis(1)),
    }
}

/// Runs `req` on `g` for the fed inputs.
pub fn explain_graph<T: Real>(
    g: &Graph<T>,
    fed: &[Fed<T>],
    init: &InitialState<T>,
    req: &GraphRequest<T>,
) -> GraphExplanation<T> {
    let k = req.output;
    let m = req.methods;
    let b = batch_of(&fed[0].0);
    let want_grad = m.gradient || m.input_x_gradient;
    let fwd = g.forward(
        fed.to_vec(),
        init,
        // An LSTM whose output is only its last step keeps its c and not its h (the backward pass and the
        // unit analyses read c; see `network::run_rec`).
        if want_grad {
            Record::BACKWARD
        } else {
            Record {
                cell_only: true,
                ..Record::GATES
            }
        },
    );
    let rows = fwd.output_rows();
    let outputs = rows.ncols();
    assert!(k < outputs, "output index");
    let prediction = rows.column(k).to_owned();
    let units = fwd
        .recorded()
        .into_iter()
        .zip(g.recurrent_weights())
        .map(|(t, w)| units::analyse(&t.trace, &t.blocks, w))
        .collect();
    let mut attrs: Vec<InputAttributions<T>> = vec![InputAttributions::default(); fed.len()];
    let (mut isg, mut per_layer) = (None, Vec::new());
    if want_grad {
        let (dx, states) = g.backward(&fwd, seeds(&fwd, k));
        isg = g.first_state_entry().and_then(|j| states.get(j).cloned());
        per_layer = fwd
            .recorded()
            .into_iter()
            .zip(states)
            .map(|(r, (h, c))| (r.trace.name.clone(), h, c))
            .collect();
        for ((a, d), (x, _)) in attrs.iter_mut().zip(dx).zip(fed) {
            if m.input_x_gradient {
                a.input_x_gradient = Some(zip3(&d, x, |p, q| p * q));
            }
            if m.gradient {
                a.gradient = Some(d);
            }
        }
    }
    drop(fwd);
    let with_masks = |vals: Vec<Value<T>>| -> Vec<Fed<T>> {
        vals.into_iter()
            .zip(fed)
            .map(|(v, (_, mk))| (v, mk.clone()))
            .collect()
    };
    // f(baselines): one sequence when every sequence would compute the same thing (every input's baseline
    // equal for all sequences, no mask, no given initial state), as the chain explainer does; else the
    // whole batch.
    let uniform = b > 1
        && init.h0.is_none()
        && init.c0.is_none()
        && fed.iter().all(|(_, mk)| mk.is_none())
        && req.baselines.iter().all(|bl| match bl {
            Value::Seq(a) => a.outer_iter().all(|r| r == a.index_axis(Axis(0), 0)),
            Value::Flat(a) => a.outer_iter().all(|r| r == a.row(0)),
        });
    let baseline_prediction = if uniform {
        let one: Vec<Fed<T>> = req
            .baselines
            .iter()
            .map(|bl| (block(bl, 0, 1), None))
            .collect();
        let bfwd = g.forward(one, init, Record::STATES);
        Array1::from_elem(b, bfwd.output_rows()[[0, k]])
    } else {
        let bfwd = g.forward(with_masks(req.baselines.clone()), init, Record::STATES);
        bfwd.output_rows().column(k).to_owned()
    };
    let cap = sequences_per_pass(g, fed, req.pass_budget).max(b);
    let per_pass = (cap / b.max(1)).max(1);
    let mut completeness = None;
    if m.integrated_gradients {
        let (alphas, weights) = req.ig_rule.nodes(req.ig_steps);
        let diffs: Vec<Value<T>> = fed
            .iter()
            .zip(&req.baselines)
            .map(|((x, _), bl)| zip3(x, bl, |p, q| p - q))
            .collect();
        let mut acc: Vec<Value<T>> = fed.iter().map(|(x, _)| x.zeros_like()).collect();
        for (ac, wc) in alphas.chunks(per_pass).zip(weights.chunks(per_pass)) {
            let n = ac.len();
            let inputs: Vec<Fed<T>> = fed
                .iter()
                .zip(&req.baselines)
                .zip(&diffs)
                .map(|(((_, mk), bl), d)| {
                    let parts: Vec<Value<T>> = ac
                        .iter()
                        .map(|&a| zip3(bl, d, |p, q| p + T::lit(a) * q))
                        .collect();
                    (concat(&parts), tile_mask(mk, n))
                })
                .collect();
            let f = g.forward(inputs, &init.tile(n), Record::BACKWARD);
            let (dx, _) = g.backward(&f, seeds(&f, k));
            for (a, d) in acc.iter_mut().zip(&dx) {
                for (j, &w) in wc.iter().enumerate() {
                    let part = block(d, j, b);
                    *a = zip3(a, &part, |p, q| p + T::lit(w) * q);
                }
            }
        }
        let mut sums = Array1::<T>::zeros(b);
        for ((a, acc), d) in attrs.iter_mut().zip(acc).zip(&diffs) {
            let ig = zip3(&acc, d, |p, q| p * q);
            sums = sums + total(&ig);
            a.integrated_gradients = Some(ig);
        }
        completeness = Some(&sums - &(&prediction - &baseline_prediction));
    }
    if m.occlusion {
        for (j, a) in attrs.iter_mut().enumerate() {
            let steps = match &fed[j].0 {
                Value::Seq(x) => x.dim().1,
                Value::Flat(_) => 1,
            };
            let mut out = Array2::<T>::zeros((b, steps));
            let all: Vec<usize> = (0..steps).collect();
            for chunk in all.chunks(per_pass) {
                let n = chunk.len();
                let inputs: Vec<Fed<T>> = fed
                    .iter()
                    .enumerate()
                    .map(|(i, (x, mk))| {
                        let mut t = tile(x, n);
                        if i == j {
                            for (c, &ti) in chunk.iter().enumerate() {
                                match (&mut t, &req.baselines[i]) {
                                    (Value::Seq(t), Value::Seq(bl)) => t
                                        .slice_mut(s![c * b..(c + 1) * b, ti, ..])
                                        .assign(&bl.slice(s![.., ti, ..])),
                                    (Value::Flat(t), Value::Flat(bl)) => {
                                        t.slice_mut(s![c * b..(c + 1) * b, ..]).assign(bl)
                                    }
                                    _ => unreachable!("baseline shapes follow the inputs"),
                                }
                            }
                        }
                        (t, tile_mask(mk, n))
                    })
                    .collect();
                let f = g.forward(inputs, &init.tile(n), Record::STATES);
                let y = f.output_rows();
                for (c, &ti) in chunk.iter().enumerate() {
                    for bi in 0..b {
                        out[[bi, ti]] = prediction[bi] - y[[c * b + bi, k]];
                    }
                }
            }
            a.occlusion = Some(out);
        }
    }
    GraphExplanation {
        prediction,
        baseline_prediction,
        inputs: attrs,
        completeness,
        initial_state_gradient: isg,
        initial_state_gradients: per_layer,
        units,
        outputs,
        rows,
    }
}

fn concat<T: Real>(parts: &[Value<T>]) -> Value<T> {
    match &parts[0] {
        Value::Seq(_) => {
            let v: Vec<_> = parts
                .iter()
                .map(|p| match p {
                    Value::Seq(a) => a.view(),
                    _ => unreachable!(),
                })
                .collect();
            Value::Seq(ndarray::concatenate(Axis(0), &v).expect("same"))
        }
        Value::Flat(_) => {
            let v: Vec<_> = parts
                .iter()
                .map(|p| match p {
                    Value::Flat(a) => a.view(),
                    _ => unreachable!(),
                })
                .collect();
            Value::Flat(ndarray::concatenate(Axis(0), &v).expect("same"))
        }
    }
}

/// How many sequences one differentiated pass may hold so its recorded trace stays near `budget` bytes.
fn sequences_per_pass<T: Real>(g: &Graph<T>, fed: &[Fed<T>], budget: usize) -> usize {
    let steps = fed
        .iter()
        .map(|(v, _)| match v {
            Value::Seq(a) => a.dim().1,
            Value::Flat(_) => 1,
        })
        .max()
        .unwrap_or(1);
    let width: usize = fed
        .iter()
        .map(|(v, _)| match v {
            Value::Seq(a) => a.dim().2,
            Value::Flat(a) => a.ncols(),
        })
        .sum();
    let per_step: usize = g
        .recurrent_weights()
        .iter()
        .map(|w| 2 * w.kind.blocks() * w.units + 4 * w.units + w.features)
        .sum::<usize>()
        + 4 * width;
    (budget / (steps.max(1) * per_step.max(1) * std::mem::size_of::<T>())).max(1)
}

/// A token input's attribution per token, `(batch, steps, 1)`: the sum over the embedding dimensions.
pub fn per_token<T: Real>(v: &Value<T>) -> Array3<T> {
    match v {
        Value::Seq(a) => a.sum_axis(Axis(2)).insert_axis(Axis(2)),
        Value::Flat(a) => a.clone().insert_axis(Axis(1)),
    }
}
