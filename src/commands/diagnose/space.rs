/*!
The search space: the activations searched, the data every candidate is scored on ([`Problem`]), the
readings of the weights ([`Structure`]), candidates and what they state ([`Settings`], field by [`Field`]).
*/

#[allow(unused_imports)]
use super::*;

/// Layer activations searched, most common first (an exact tie goes to the earlier one).
pub(super) const ACTIVATIONS: [Activation; 16] = [
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
pub(super) const DENSE_ACTIVATIONS: [Activation; 17] = [
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

/// The data every candidate is scored on, at float32 as the frameworks compute.
pub(super) struct Problem {
    pub(super) kind: CellKind,
    pub(super) units: usize,
    pub(super) x: Array3<f32>,
    pub(super) mask: Option<Array2<bool>>,
    pub(super) dense: Option<DenseWeights<f32>>,
    /// Flat, C order.
    pub(super) expected: Vec<f64>,
    /// Expected holds every step's output (sequences, steps, units).
    pub(super) per_step: bool,
    /// Values per sequence (per step when `per_step`).
    pub(super) width: usize,
    pub(super) atol: f64,
    pub(super) rtol: f64,
}

/// One reading of the weights, built once.
pub(super) struct Structure {
    pub(super) reading: Reading,
    pub(super) weights: CellWeights<f32>,
    pub(super) first_tier: bool,
}

/// A candidate: a structure plus the layer and head arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Cand {
    pub(super) s: usize,
    pub(super) act: Activation,
    pub(super) rec: Activation,
    pub(super) gb: bool,
    pub(super) carry: bool,
    pub(super) dense: Option<Activation>,
}

/// A candidate's score on some sequences.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scored {
    pub(super) c: Cand,
    pub(super) err: f64,
    pub(super) passed: bool,
    /// Sequences compared (the first ones).
    pub(super) rows: usize,
}

/// A setting a candidate states, in the order the advice explains them (serialised by its field name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Field {
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
pub(super) struct Settings {
    pub(super) activation: Activation,
    pub(super) recurrent_activation: Activation,
    pub(super) reset_after: Option<bool>,
    pub(super) go_backwards: bool,
    pub(super) order: Vec<usize>,
    pub(super) transposed: bool,
    pub(super) textbook: bool,
    pub(super) carry_state: bool,
    pub(super) dense_activation: Option<Activation>,
}

impl Settings {
    /// The fields in which `self` differs from `other`, in the order the advice explains them.
    pub(super) fn differences(&self, other: &Settings) -> Vec<Field> {
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

/// Every reading of the stored weights, defaults first, each built once at float32.
pub(super) fn structures(st: &Stored) -> Vec<Structure> {
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
    // The textbook update is a GRU reading (the cell with `reset_after`).
    let textbook: &[bool] = if kind.has_reset_after() {
        &[false, true]
    } else {
        &[false]
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
