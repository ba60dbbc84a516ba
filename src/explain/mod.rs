/*!
Exact attributions over time and what each unit does (`rnntrace explain`): the numeric core, free of I/O.

- [`derivative`]: every activation's derivative, TensorFlow's conventions at the kinks;
- [`bptt`]: exact backpropagation through time over one layer's recorded forward pass;
- [`network`]: a chain of layers (masking, recurrent, Bidirectional, Dense, activations) run forward
  through the engine and differentiated backward;
- [`graph`]: a whole model as a DAG (embeddings fed, convolutions, pooling, normalisation, shape layers,
  merges, returned states, several inputs and outputs), forward as `run` computes it and backward by
  reverse topological accumulation;
- [`graph_methods`]: the four methods over a [`graph::Graph`], per input;
- [`methods`]: gradient, input × gradient, integrated gradients (Captum's rules), occlusion;
- [`units`]: gate saturation, memory timescales and dead units per recurrent layer.

[`explain`] runs what a [`Request`] asks and returns an [`Explanation`]; the command layer reads files and
renders it.
*/

pub mod bptt;
pub mod derivative;
pub mod graph;
pub mod graph_methods;
pub mod methods;
pub mod network;
pub mod units;

pub use methods::IgRule;
pub use network::{InitialState, Merge, Network, Op, RecurrentOp};
pub use units::UnitReport;

use crate::cell::Real;
use crate::trace::Record;
use ndarray::{Array1, Array2, Array3, Axis};

/// Which attribution methods to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Methods {
    /// The gradient of the output with respect to every input value.
    pub gradient: bool,
    /// Input × gradient.
    pub input_x_gradient: bool,
    /// Integrated gradients.
    pub integrated_gradients: bool,
    /// Occlusion per timestep.
    pub occlusion: bool,
}

/// Every method name as `--methods` and the JSON name them (JSON uses underscores).
pub const METHOD_NAMES: &[&str] = &[
    "gradient",
    "input-x-gradient",
    "integrated-gradients",
    "occlusion",
];

impl Methods {
    /// All four.
    pub const ALL: Methods = Methods {
        gradient: true,
        input_x_gradient: true,
        integrated_gradients: true,
        occlusion: true,
    };

    /// Parses a comma list of [`METHOD_NAMES`] (underscores accepted for hyphens).
    pub fn parse(list: &str) -> Result<Methods, String> {
        let mut m = Methods::default();
        for name in list.split(',').map(|s| s.trim()).filter(|s| !s.is_empty()) {
            match name.replace('_', "-").to_ascii_lowercase().as_str() {
                "gradient" => m.gradient = true,
                "input-x-gradient" => m.input_x_gradient = true,
                "integrated-gradients" => m.integrated_gradients = true,
                "occlusion" => m.occlusion = true,
                "all" => m = Methods::ALL,
                _ => {
                    return Err(format!(
                        "unknown method '{name}'; valid: {}, all",
                        METHOD_NAMES.join(", ")
                    ));
                }
            }
        }
        if m == Methods::default() {
            return Err(format!(
                "no method named; valid: {}, all",
                METHOD_NAMES.join(", ")
            ));
        }
        Ok(m)
    }

    /// The chosen methods' JSON names, in [`METHOD_NAMES`] order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.gradient, "gradient"),
            (self.input_x_gradient, "input_x_gradient"),
            (self.integrated_gradients, "integrated_gradients"),
            (self.occlusion, "occlusion"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n)
        .collect()
    }
}

/// What to explain and how.
#[derive(Debug, Clone)]
pub struct Request<T> {
    /// Which output of the prediction (0-based).
    pub output: usize,
    /// The methods.
    pub methods: Methods,
    /// The baseline, same shape as the input.
    pub baseline: Array3<T>,
    /// Integrated gradients: number of nodes.
    pub ig_steps: usize,
    /// Integrated gradients: the rule.
    pub ig_rule: IgRule,
    /// Approximate memory for one batched pass of integrated gradients or occlusion, in bytes.
    pub pass_budget: usize,
}

/// The result.
#[derive(Debug, Clone)]
pub struct Explanation<T> {
    /// Output `output` for each sequence.
    pub prediction: Array1<T>,
    /// The same for the baseline.
    pub baseline_prediction: Array1<T>,
    /// (B, T, F), input order.
    pub gradient: Option<Array3<T>>,
    /// (B, T, F).
    pub input_x_gradient: Option<Array3<T>>,
    /// (B, T, F).
    pub integrated_gradients: Option<Array3<T>>,
    /// Σ IG per sequence minus (f(x) − f(b)).
    pub completeness: Option<Array1<T>>,
    /// (B, T).
    pub occlusion: Option<Array2<T>>,
    /// Gradient with respect to the first recurrent layer's initial h (and c), when gradients were asked.
    pub initial_state_gradient: Option<(Array2<T>, Option<Array2<T>>)>,
    /// Gradient with respect to every recurrent layer's initial h (and c), when gradients were asked: layer
    /// name, h, c; in model order, a Bidirectional's forward then backward direction.
    pub initial_state_gradients: Vec<(String, Array2<T>, Option<Array2<T>>)>,
    /// One per recurrent layer (direction), in model order.
    pub units: Vec<UnitReport>,
    /// Number of outputs the model has.
    pub outputs: usize,
}

/// Runs `req` on the network for input `x` (with an optional mask, true = used, and initial states).
///
/// # Panics
/// If `req.output` is out of range or the baseline's shape differs from `x`'s: callers validate both.
pub fn explain<T: Real>(
    net: &Network<T>,
    x: &Array3<T>,
    mask: Option<&Array2<bool>>,
    init: &InitialState<T>,
    req: &Request<T>,
) -> Explanation<T> {
    let k = req.output;
    assert_eq!(x.dim(), req.baseline.dim(), "baseline shape");
    let m = req.methods;
    let want_grad = m.gradient || m.input_x_gradient;
    let fwd = net.forward(
        x.clone(),
        mask.cloned(),
        init,
        if want_grad {
            Record::BACKWARD
        } else {
            Record {
                cell_only: true,
                ..Record::GATES
            }
        },
    );
    let outputs = fwd.output_rows().ncols();
    debug_assert_eq!(
        outputs,
        net.output_width(x.dim().1, x.dim().2),
        "output_width"
    );
    assert!(k < outputs, "output index");
    let prediction = methods::output_k(&fwd, k);
    let units = fwd
        .recorded()
        .into_iter()
        .zip(net.recurrent_weights())
        .map(|(r, w)| units::analyse(&r.trace, &r.blocks, w))
        .collect();
    let (mut gradient, mut ixg, mut isg) = (None, None, None);
    let mut per_layer = Vec::new();
    if want_grad {
        let g = net.backward(&fwd, Network::seed(&fwd, k));
        if m.input_x_gradient {
            ixg = Some(&g.dx * x);
        }
        isg = g.dh0.map(|h| (h, g.dc0));
        per_layer = fwd
            .traces()
            .into_iter()
            .zip(g.initial)
            .map(|(t, (h, c))| (t.name.clone(), h, c))
            .collect();
        if m.gradient {
            gradient = Some(g.dx);
        }
    }
    drop(fwd);
    let baseline_prediction = baseline_prediction(net, &req.baseline, mask, init, k);
    let (b, t, f) = x.dim();
    let cap = methods::sequences_per_pass(net, t, f, req.pass_budget).max(b);
    let (mut ig, mut completeness) = (None, None);
    if m.integrated_gradients {
        let a = methods::integrated_gradients(
            net,
            x,
            &req.baseline,
            mask,
            init,
            k,
            req.ig_rule,
            req.ig_steps,
            cap,
        );
        let sums = a.sum_axis(Axis(2)).sum_axis(Axis(1));
        completeness = Some(&sums - &(&prediction - &baseline_prediction));
        ig = Some(a);
    }
    let occlusion = m
        .occlusion
        .then(|| methods::occlusion(net, x, &req.baseline, mask, init, k, &prediction, cap));
    Explanation {
        prediction,
        baseline_prediction,
        gradient,
        input_x_gradient: ixg,
        integrated_gradients: ig,
        completeness,
        occlusion,
        initial_state_gradient: isg,
        initial_state_gradients: per_layer,
        units,
        outputs,
    }
}

/// `f(baseline)`: one sequence when every sequence would compute the same thing (a baseline equal for all
/// sequences, no per-sequence mask or initial state), else the whole batch.
fn baseline_prediction<T: Real>(
    net: &Network<T>,
    baseline: &Array3<T>,
    mask: Option<&Array2<bool>>,
    init: &InitialState<T>,
    k: usize,
) -> Array1<T> {
    let b = baseline.dim().0;
    let first = baseline.index_axis(Axis(0), 0);
    let uniform = b > 1
        && mask.is_none()
        && init.h0.is_none()
        && init.c0.is_none()
        && baseline.outer_iter().all(|s| s == first);
    if uniform {
        let one = baseline.slice(ndarray::s![0..1, .., ..]).to_owned();
        let fwd = net.forward(one, None, init, Record::STATES);
        Array1::from_elem(b, methods::output_k(&fwd, k)[0])
    } else {
        let fwd = net.forward(baseline.clone(), mask.cloned(), init, Record::STATES);
        methods::output_k(&fwd, k)
    }
}

#[cfg(test)]
mod tests;
