/*!
Renderers: each turns a finished [`Report`] into bytes (tables, JSON) or a picture (plots). None of them
computes anything the engine did not record.
*/

pub mod explain_data;
pub mod explain_plot;
pub mod explain_table;
pub mod json;
pub mod npz;
pub mod number;
pub mod plot;
pub mod report;
pub mod table;
pub mod text;

use crate::compare::Comparison;
use crate::error::{Error, Result};
use crate::scaler::Scaler;
use crate::trace::Trace;
use ndarray::Array2;

/// Everything a renderer may show about one run.
#[derive(Debug, Clone)]
pub struct Report<'a, T> {
    /// The recorded run (its layers may hold only what `--record` kept).
    pub trace: &'a Trace<T>,
    /// Complete traces of the layers that get per-step tables, for the sequences in `detail_rows` (rows in
    /// that order).
    pub detail: Vec<&'a crate::trace::LayerTrace<T>>,
    /// The original sequence index of each row of `detail`.
    pub detail_rows: Vec<usize>,
    /// The framework's expected output, reshaped to (sequences, outputs) when it compares with predictions.
    pub expected: Option<Array2<f64>>,
    /// The comparison verdict, when --expected was given.
    pub comparison: Option<Comparison>,
    /// True values, (sequences, outputs).
    pub targets: Option<Array2<f64>>,
    /// --window K, when the input was a series.
    pub window: Option<usize>,
    /// Display settings.
    pub display: &'a DisplayOptions,
    /// What the run is called in headings (empty, or `Weather demo`).
    pub title: String,
    /// A model with several outputs (`run`): every output, in the model's order (`predictions`,
    /// `expected` and `comparison` above are the first's). Empty for one output.
    pub outputs: Vec<ModelOutput>,
}

/// One output of a model with several (`run`), as the JSON trace holds it.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// Its name: the layer's, or `layer#k` for the layer's output k (a returned state, attention scores).
    pub name: String,
    /// Its shape, batch first.
    pub shape: Vec<usize>,
    /// Its values in C order.
    pub values: Vec<f64>,
    /// Its `--expected` comparison, when given.
    pub comparison: Option<crate::compare::Comparison>,
}

/// Validated display settings.
#[derive(Debug, Clone)]
pub struct DisplayOptions {
    /// Feature names (empty: x0, x1, …).
    pub feature_names: Vec<String>,
    /// Which sequences get per-step tables (`None`: the first).
    pub sequences: Option<Vec<std::ops::Range<usize>>>,
    /// Max unit columns.
    pub max_units: usize,
    /// Which processing steps get tables (`None`: the first and last [`DEFAULT_EDGE_STEPS`]).
    pub steps: Option<Vec<std::ops::Range<usize>>>,
    /// Which units are table columns (`None`: from 0, as many as fit).
    pub units: Option<std::ops::Range<usize>>,
    /// Terminal width the tables and prose fit.
    pub width: usize,
    /// Per-step gate tables also show the pre-activations.
    pub show_pre: bool,
    /// Colour on.
    pub color: bool,
    /// Only errors and the verdict.
    pub quiet: bool,
    /// Names of the outputs (empty: y0, y1, …).
    pub output_names: Vec<String>,
    /// Maps predictions back to original units.
    pub scaler: Option<Scaler>,
}

impl DisplayOptions {
    /// Checks that `--sequences` names at least one of `n` sequences.
    pub fn check_sequences(&self, n: usize) -> Result<()> {
        match &self.sequences {
            Some(ranges) if ranges.iter().all(|r| r.start >= n) => Err(Error::usage(format!(
                "--sequences: the input holds {n} sequences, numbered 0 to {}; none of the ones asked for exists",
                n.saturating_sub(1)
            ))),
            _ => Ok(()),
        }
    }
}

impl DisplayOptions {
    /// Which of `n` sequences get per-step tables.
    pub fn shown_sequences(&self, n: usize) -> Vec<usize> {
        if self.quiet {
            return Vec::new();
        }
        match &self.sequences {
            None => (0..n.min(1)).collect(),
            Some(ranges) => ranges
                .iter()
                .flat_map(|r| r.start.min(n)..r.end.min(n))
                .collect(),
        }
    }
}

/// By default, per-step tables cover this many steps at the start and as many before the prediction.
pub const DEFAULT_EDGE_STEPS: usize = 3;

impl DisplayOptions {
    /// Which of `total` processing steps get per-step tables, in order.
    pub fn shown_steps(&self, total: usize) -> Vec<usize> {
        match &self.steps {
            Some(ranges) => {
                let mut v: Vec<usize> = ranges
                    .iter()
                    .flat_map(|r| r.start.min(total)..r.end.min(total))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            None if total <= 2 * DEFAULT_EDGE_STEPS + 2 => (0..total).collect(),
            None => (0..DEFAULT_EDGE_STEPS)
                .chain(total - DEFAULT_EDGE_STEPS..total)
                .collect(),
        }
    }

    /// Checks that `--steps` names at least one of `total` steps.
    pub fn check_steps(&self, total: usize) -> Result<()> {
        match &self.steps {
            Some(ranges) if ranges.iter().all(|r| r.start >= total) => Err(Error::usage(format!(
                "--steps: the sequences have {total} steps, numbered 0 to {}; none of the ones asked for exists",
                total.saturating_sub(1)
            ))),
            _ => Ok(()),
        }
    }
}
