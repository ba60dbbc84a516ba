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
}

/// Validated display settings.
#[derive(Debug, Clone)]
pub struct DisplayOptions {
    /// Feature names (empty: x0, x1, …).
    pub feature_names: Vec<String>,
    /// Which sequences get per-step tables (`None`: the first 3).
    pub sequences: Option<Vec<std::ops::Range<usize>>>,
    /// Max unit columns.
    pub max_units: usize,
    /// Max steps per sequence in per-step tables.
    pub max_steps: usize,
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
                "--sequences: the input holds {n} sequences (0..{}); none of the ones asked for exists",
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
            None => (0..n.min(3)).collect(),
            Some(ranges) => ranges
                .iter()
                .flat_map(|r| r.start.min(n)..r.end.min(n))
                .collect(),
        }
    }
}
