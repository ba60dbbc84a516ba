/*!
The command line, declared and nothing more: clap types, with the flag groups several subcommands share
([`CheckArgs`], [`DisplayArgs`], [`PlotArgs`]) flattened into each. [`crate::cli::job`] turns these raw values
into validated jobs.
*/

use crate::weights::keras::ResetAfter;
use crate::weights::{CellKind, Layout};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub use super::explain::ExplainArgs;

/// Trace LSTM and GRU cells exactly as Keras (and PyTorch) compute them: every gate, every step.
#[derive(Debug, Parser)]
#[command(name = "rnntrace", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Activation names (Keras's), listed in the help of the commands that take them.
const ACTIVATIONS: &str = "Activations (Keras names): linear, sigmoid, tanh, relu, relu6, elu, selu, softplus, softsign, \
silu (swish), gelu, exponential, leaky_relu, hard_sigmoid (Keras 3: relu6(x+3)/6), hard_sigmoid_keras2 (Keras 2: \
clip(0.2x+0.5, 0, 1)), hard_silu (hard_swish), softmax.";

const LSTM_HELP: &str = "Sequences, steps, units and rows are numbered from 0; ranges a..b stop before b, a..=b include it.

Examples:
  rnntrace lstm -w weights.json -i x.npy -d dense.json -e preds.npy
  rnntrace lstm -w weights.json -i series.npy --window 24 --sequences 0..=2 --steps 20..24
  rnntrace lstm -w state_dict.npz -i x.npy --layout pytorch --layer 1 -q
  rnntrace lstm -w weights.json -i x.npy --plot states.png --plot-gates gates.png --plot-sequence 3";

const GRU_HELP: &str = "Sequences, steps, units and rows are numbered from 0; ranges a..b stop before b, a..=b include it.

Examples:
  rnntrace gru -w weights.json -i x.npy -d dense.json -e preds.npy
  rnntrace gru -w weights.json -i x.npy --reset-after false --recurrent-activation hard_sigmoid_keras2
  rnntrace gru -w weights.json -i series.npy --window 2 --units 0..4 --show-pre";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a Keras LSTM layer (gates i, f, c, o; state h, c).
    #[command(
        after_help = const_format_help(LSTM_HELP),
        mut_arg("reset_after", |a| a.hide(true))
    )]
    Lstm(CellArgs),
    /// Trace a Keras GRU layer (gates z, r, h; state h).
    #[command(
        after_help = const_format_help(GRU_HELP),
        mut_arg("plot", |a| a.help("Hidden-state norm ‖h_t‖ against the timestep"))
    )]
    Gru(CellArgs),
    /// Run the built-in weather example (real Keras weights and predictions embedded in the binary).
    #[command(after_help = "Examples:
  rnntrace demo                   # the LSTM example, charts in ./rnntrace-demo/
  rnntrace demo gru --out-dir charts
  rnntrace demo --no-plots --sequences all")]
    Demo(DemoArgs),
    /// Run and trace a whole saved Keras model (.keras or .h5): stacks, Bidirectional, heads.
    #[command(
        after_help = "Sequences, steps, units and rows are numbered from 0; ranges a..b stop before b, a..=b include it.

Examples:
  rnntrace run -m model.keras -i x.npy -e preds.npy
  rnntrace run -m model.keras -i x.npy --layers lstm_1 --steps all --plot states.png --plot-layer lstm_1
  rnntrace run -m state_dict.npz --cell gru -i x.npy -e output.npy -q"
    )]
    Run(RunArgs),
    /// Summarise a saved model or a weights file: layers, shapes, parameters, gate blocks.
    #[command(after_help = "Examples:
  rnntrace inspect -m model.keras
  rnntrace inspect -w weights.json --cell gru --format json")]
    Inspect(InspectArgs),
    /// Find the conventions (activations, gate order, go_backwards, state, head, …) that explain a framework's output.
    #[command(after_help = "Examples:
  rnntrace diagnose --cell lstm -w weights.json -i x.npy -e preds.npy
  rnntrace diagnose --cell gru -w w.npz -i x.npy -e preds.npy --write-weights fixed.json")]
    Diagnose(DiagnoseArgs),
    /// Exact attributions of one output over time and features (gradient, input × gradient, integrated
    /// gradients, occlusion) and what each unit does (saturation, timescales, dead units).
    #[command(
        after_help = "Sequences, steps, features, units and outputs are numbered from 0.

Examples:
  rnntrace explain -m model.keras -i x.npy
  rnntrace explain --cell lstm -w weights.json -d dense.json -i x.npy --sequence 2 --plot attr.png
  rnntrace explain -m model.keras -i x.npy --methods integrated-gradients --baseline mean --save attr.npz"
    )]
    Explain(ExplainArgs),
}

/// The help text after the options: `text`, then the activation names.
fn const_format_help(text: &str) -> String {
    format!("{ACTIVATIONS}\n\n{text}")
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A saved Keras model: .keras (Keras 3) or legacy .h5 (tf-keras 2.x, or Keras 3 asked for .h5); or, with
    /// --cell, a PyTorch nn.LSTM/nn.GRU state dict (.npz or JSON), run as the whole stack.
    #[arg(help_heading = "Input", short = 'm', long, value_name = "MODEL")]
    pub model: PathBuf,
    /// The cell of a PyTorch state dict given as --model (all its layers and directions are run).
    #[arg(help_heading = "Input", long, value_enum)]
    pub cell: Option<CellArg>,
    /// The recurrent module of a PyTorch file holding several (`encoder`, `decoder.rnn`).
    #[arg(help_heading = "Input", long, value_name = "NAME")]
    pub module: Option<String>,
    /// With --cell: an nn.Linear head applied to the last step: a file, or the name of a Linear in --model (`fc`).
    #[arg(
        help_heading = "Head and comparison",
        short = 'd',
        long,
        value_name = "FILE|PREFIX"
    )]
    pub dense: Option<String>,
    /// The input (and a 3-D --expected) is time-major (timesteps, sequences, features), as PyTorch's batch_first=False.
    #[arg(help_heading = "Input", long)]
    pub time_major: bool,
    /// Input .npy: (sequences, timesteps, features), or (timesteps, features) for one sequence; token ids
    /// (sequences, timesteps) for a model that starts with an Embedding. A model with several inputs takes
    /// --input once per input, in the model's input order, or as --input NAME=FILE.
    #[arg(
        help_heading = "Input",
        short = 'i',
        long,
        value_name = "X.npy",
        required = true
    )]
    pub input: Vec<PathBuf>,
    /// Cut a 2-D (rows, features) series into sliding windows of K rows, each predicting row i+K.
    #[arg(help_heading = "Input", long, value_name = "K")]
    pub window: Option<usize>,
    /// Which recurrent layers get per-step tables (comma-separated names; default: all).
    #[arg(help_heading = "Display", long, value_name = "A,B")]
    pub layers: Option<String>,
    /// The recurrent layer --plot and --plot-gates chart (default: the last one).
    #[arg(help_heading = "Charts", long, value_name = "NAME")]
    pub plot_layer: Option<String>,
    /// Precision of the computation.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// What stdout gets.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Also write the trace of every recurrent layer to this file: FILE.json (the JSON schema) or FILE.npz (NumPy arrays under each layer's name, streamed to disk).
    #[arg(help_heading = "Output", long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// What an .npz trace keeps of every step: gates and states, states only, or nothing but the final states and outputs.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = RecordArg::All)]
    pub record: RecordArg,
    /// Also keep the pre-activations in an .npz trace (the JSON trace always has them).
    #[arg(help_heading = "Output", long)]
    pub record_pre: bool,
    /// Print one JSON line of timings on stderr: load_s, compute_s, write_s, total_s.
    #[arg(help_heading = "Output", long)]
    pub timings: bool,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub display: DisplayArgs,
    #[command(flatten)]
    pub plots: PlotArgs,
}

impl RecordArg {
    /// What to record, `--record-pre` adding the pre-activations to `all`.
    pub fn record(self, pre: bool) -> crate::trace::Record {
        match self {
            RecordArg::All if pre => crate::trace::Record::ALL,
            RecordArg::All => crate::trace::Record::GATES,
            RecordArg::States => crate::trace::Record::STATES,
            RecordArg::None => crate::trace::Record::NONE,
        }
    }
}

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A saved Keras model (.keras or .h5).
    #[arg(
        help_heading = "Input",
        short = 'm',
        long,
        value_name = "MODEL",
        conflicts_with = "weights"
    )]
    pub model: Option<PathBuf>,
    /// A weights file (any form `rnntrace lstm|gru --weights` takes); needs --cell unless it is a PyTorch file.
    #[arg(help_heading = "Input", short = 'w', long, value_name = "W")]
    pub weights: Option<PathBuf>,
    /// The recurrent module of a PyTorch file holding several.
    #[arg(help_heading = "Input", long, value_name = "NAME")]
    pub module: Option<String>,
    /// The cell the weights belong to.
    #[arg(help_heading = "Input", long, value_enum)]
    pub cell: Option<CellArg>,
    /// Weight layout of --weights.
    #[arg(help_heading = "Input", long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,
    /// Layer of a multi-layer PyTorch state dict.
    #[arg(help_heading = "Input", long, default_value_t = 0, value_name = "N")]
    pub layer: usize,
    /// Backward direction of a bidirectional PyTorch state dict.
    #[arg(help_heading = "Input", long)]
    pub reverse: bool,
    /// Colour in tables.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    /// What stdout gets: tables, or the same summary as JSON.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
}

/// A cell kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CellArg {
    /// LSTM.
    Lstm,
    /// GRU.
    Gru,
}

impl CellArg {
    /// The cell it names.
    pub fn kind(self) -> CellKind {
        match self {
            CellArg::Lstm => CellKind::Lstm,
            CellArg::Gru => CellKind::Gru,
        }
    }
}

/// `reset_after` as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResetAfterArg {
    /// Read it from the bias shape ((2, 3u) = true, (3u,) = false); with no bias, Keras's default (true).
    Auto,
    /// reset_after=True.
    True,
    /// reset_after=False.
    False,
}

impl ResetAfterArg {
    /// What the weights loader is told.
    pub fn reading(self) -> ResetAfter {
        match self {
            ResetAfterArg::Auto => ResetAfter::Auto,
            ResetAfterArg::True => ResetAfter::True,
            ResetAfterArg::False => ResetAfter::False,
        }
    }
}

/// Floating-point precision of the computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// float32, as the frameworks compute.
    F32,
    /// float64, to see how far float32 rounding moves the result.
    F64,
}

/// What stdout gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Grid tables per timestep, predictions and a verdict.
    Table,
    /// The whole trace as JSON (schema rnntrace-trace/1).
    Json,
}

/// The layout of `--weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// Recognise PyTorch state-dict names, else Keras.
    Auto,
    /// Keras: kernel, recurrent_kernel, bias (or get_weights() order).
    Keras,
    /// PyTorch: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, …
    Pytorch,
    /// ONNX initializers W, R, B (LSTM gates i, o, f, c; a GRU's linear_before_reset is reset_after).
    Onnx,
}

impl LayoutArg {
    /// The layout it forces (`None`: recognise it from the array names).
    pub fn layout(self) -> Option<Layout> {
        match self {
            LayoutArg::Auto => None,
            LayoutArg::Keras => Some(Layout::Keras),
            LayoutArg::Pytorch => Some(Layout::Pytorch),
            LayoutArg::Onnx => Some(Layout::Onnx),
        }
    }
}

/// What `--record` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordArg {
    /// Gates and states (and outputs).
    All,
    /// States and outputs.
    States,
    /// Only the predictions.
    None,
}

/// When to colour the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// Colour when stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Arguments shared by `lstm` and `gru`.
#[derive(Debug, Args)]
pub struct CellArgs {
    /// Layer weights: JSON list (get_weights() order) or object {kernel, recurrent_kernel, bias}, .npz, or a directory of kernel.npy, recurrent_kernel.npy, bias.npy.
    #[arg(help_heading = "Input", short = 'w', long, value_name = "W")]
    pub weights: PathBuf,
    /// Input .npy: (sequences, timesteps, features), or (timesteps, features) for one sequence.
    #[arg(help_heading = "Input", short = 'i', long, value_name = "X.npy")]
    pub input: PathBuf,
    /// Cut a 2-D (rows, features) series into sliding windows of K rows, each predicting row i+K.
    #[arg(help_heading = "Input", long, value_name = "K")]
    pub window: Option<usize>,
    #[command(flatten)]
    pub convention: ConventionArgs,
    /// Weight layout: auto (PyTorch names like weight_ih_l0 and ONNX W/R/B are recognised), keras, pytorch or onnx.
    #[arg(help_heading = "Input", long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,
    /// Which layer of a multi-layer PyTorch state dict (`_l{N}`).
    #[arg(help_heading = "Input", long, default_value_t = 0, value_name = "N")]
    pub layer: usize,
    /// Use the backward direction of a bidirectional PyTorch state dict (`_reverse`); implies --go-backwards.
    #[arg(help_heading = "Input", long)]
    pub reverse: bool,
    /// The recurrent module of a PyTorch file holding several (`encoder`, `decoder.rnn`).
    #[arg(help_heading = "Input", long, value_name = "NAME")]
    pub module: Option<String>,
    /// The input (and a 3-D --expected) is time-major (timesteps, sequences, features), as PyTorch's batch_first=False.
    #[arg(help_heading = "Input", long)]
    pub time_major: bool,
    /// Initial state .npz (or JSON) with arrays `h` and, for LSTM, `c`: (sequences, units) or (units,).
    #[arg(help_heading = "Input", long, value_name = "S.npz")]
    pub initial_state: Option<PathBuf>,
    /// Mask .npy (sequences, timesteps), bool or 0/1; 1 = step used, 0 = step skipped (state carried through).
    #[arg(help_heading = "Input", long, value_name = "M.npy")]
    pub mask: Option<PathBuf>,
    /// Skip steps whose features all equal V, like a Keras Masking(mask_value=V) layer.
    #[arg(
        help_heading = "Input",
        long,
        value_name = "V",
        allow_negative_numbers = true
    )]
    pub mask_value: Option<f64>,
    /// Dense head applied to the last output: JSON [kernel, bias] or {kernel, bias}, .npz, a file with one nn.Linear, or the name of an nn.Linear in --weights (`fc`).
    #[arg(
        help_heading = "Head and comparison",
        short = 'd',
        long,
        value_name = "D"
    )]
    pub dense: Option<PathBuf>,
    /// Precision of the computation.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// What stdout gets.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Also write the trace to this file: FILE.json (the JSON schema) or FILE.npz (NumPy arrays, streamed to disk).
    #[arg(help_heading = "Output", long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// What to keep of every step: gates and states, states only, or nothing but the predictions.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = RecordArg::All)]
    pub record: RecordArg,
    /// Also keep the pre-activations in an .npz trace (the JSON trace always has them).
    #[arg(help_heading = "Output", long)]
    pub record_pre: bool,
    /// Print one JSON line of timings on stderr: load_s, compute_s, write_s, total_s.
    #[arg(help_heading = "Output", long)]
    pub timings: bool,
    /// Layer name to show and record (default: the cell name).
    #[arg(help_heading = "Output", long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub display: DisplayArgs,
    #[command(flatten)]
    pub plots: PlotArgs,
}

/// The conventions a layer was computed with that are not in its weights: the flags `lstm`/`gru` take and
/// `diagnose` searches over (given there as the user's own).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Conventions")]
pub struct ConventionArgs {
    /// Keras `activation` (candidate and cell output).
    #[arg(long, default_value = "tanh", value_name = "NAME")]
    pub activation: String,
    /// Keras `recurrent_activation` (gates). hard_sigmoid is Keras 3's; hard_sigmoid_keras2 is Keras 2's 0.2x+0.5.
    #[arg(long, default_value = "sigmoid", value_name = "NAME")]
    pub recurrent_activation: String,
    /// GRU `reset_after`.
    #[arg(long, value_enum, default_value_t = ResetAfterArg::Auto)]
    pub reset_after: ResetAfterArg,
    /// Process each sequence last step first (Keras `go_backwards=True`).
    #[arg(long)]
    pub go_backwards: bool,
    /// Carry each sequence's final state into the next (a stateful layer). Default: every sequence starts fresh, as model.predict does.
    #[arg(long)]
    pub carry_state: bool,
    /// Activation of the Dense head (softmax included).
    #[arg(long, default_value = "linear", value_name = "NAME")]
    pub dense_activation: String,
}

/// The framework's output to compare with, the truth to show beside it, and how to label it.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Head and comparison")]
pub struct CheckArgs {
    /// The framework's saved model.predict output (.npy) to compare with; exit 1 if any element is outside tolerance.
    /// `run` on a model with several outputs: repeat it, once per output in the model's order.
    #[arg(
        help_heading = "Head and comparison",
        short = 'e',
        long,
        value_name = "P.npy"
    )]
    pub expected: Vec<PathBuf>,
    /// Absolute tolerance for --expected [default: 1e-5; `run` on a float16/bfloat16 model: 4 ulps of its
    /// compute type at the largest expected value].
    #[arg(long, value_name = "A")]
    pub atol: Option<f64>,
    /// Relative tolerance for --expected [default: 1e-5; `run` on a float16/bfloat16 model: 0].
    #[arg(long, value_name = "R")]
    pub rtol: Option<f64>,
    /// True values (.npy), shown beside predictions. With --window, the whole series (row i+K is picked).
    #[arg(long, value_name = "Y.npy")]
    pub targets: Option<PathBuf>,
    /// scikit-learn scaler parameters (JSON) of the target: tables also show predictions in original units.
    #[arg(long, value_name = "S.json")]
    pub inverse_scale: Option<PathBuf>,
    /// Comma-separated names of the model's outputs (default y0, y1, …).
    #[arg(long, value_name = "A,B")]
    pub output_names: Option<String>,
}

impl CheckArgs {
    /// The tolerance `--atol` and `--rtol` default to (float32 and float64 runs).
    pub const DEFAULT_TOL: f64 = 1e-5;

    /// `--atol`, or its default.
    pub fn atol(&self) -> f64 {
        self.atol.unwrap_or(Self::DEFAULT_TOL)
    }

    /// `--rtol`, or its default.
    pub fn rtol(&self) -> f64 {
        self.rtol.unwrap_or(Self::DEFAULT_TOL)
    }
}

/// Charts (the extension picks the format: .png or .svg).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Charts")]
pub struct PlotArgs {
    /// State norms ‖c_t‖ and ‖h_t‖ against the timestep.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Ours vs the framework's expected vs actual, per sequence.
    #[arg(long, value_name = "FILE")]
    pub plot_predictions: Option<PathBuf>,
    /// Heat maps of every gate, units × timesteps, for one sequence (--plot-sequence), over the --steps
    /// range (all steps by default; more than 200 are averaged in groups, as the chart says).
    #[arg(long, value_name = "FILE")]
    pub plot_gates: Option<PathBuf>,
    /// The sequence (numbered from 0) --plot-gates shows [default: 0].
    #[arg(long, value_name = "N", requires = "plot_gates")]
    pub plot_sequence: Option<usize>,
    /// An interactive, self-contained HTML report (heat maps of every gate and state, units, select,
    /// predictions); --sequences chooses its sequences (default: all that fit).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// The processing steps the report holds, `A..B` (half-open; default: all that fit).
    #[arg(long, value_name = "A..B", requires = "report")]
    pub report_steps: Option<String>,
    /// For token-id inputs: the vocabulary, a JSON list (index → token) or object (token → index, as
    /// Keras's `tokenizer.word_index`), shown as each step's token in the report's input track.
    #[arg(long, value_name = "vocab.json", requires = "report")]
    pub tokens: Option<PathBuf>,
}

/// How the tables look.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Display")]
pub struct DisplayArgs {
    /// Comma-separated feature names for the input tables (default x0, x1, …).
    #[arg(long, value_name = "A,B,C")]
    pub feature_names: Option<String>,
    /// Which sequences get per-step tables, numbered from 0: `0,5,7`, `10..20` (10 to 19), `10..=20` (10 to
    /// 20) or `all` (default: sequence 0).
    #[arg(long, value_name = "LIST")]
    pub sequences: Option<String>,
    /// Which processing steps get tables, numbered from 0: `0..10` (0 to 9), `45..=49`, `3,7` or `all`
    /// (default: the first 3 and the last 3, all when there are 8 or fewer).
    #[arg(long, value_name = "LIST", conflicts_with = "max_steps")]
    pub steps: Option<String>,
    /// Tables for the first N steps only (the same as --steps 0..N).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<usize>,
    /// Which units are table columns, numbered from 0: `8..16`, `0..=3` (default: from unit 0, as many as
    /// fit the terminal's width).
    #[arg(long, value_name = "RANGE")]
    pub units: Option<String>,
    /// At most this many unit columns (fewer when the terminal is too narrow for them).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_units: usize,
    /// Gate tables also show each gate's value before its activation (x·W + h·U + b).
    #[arg(long)]
    pub show_pre: bool,
    /// Colour in tables.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    /// Print nothing but errors and the verdict.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `diagnose`: the files, and the convention flags of `lstm`/`gru` as the user would pass them.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// The layer type.
    #[arg(help_heading = "Input", long, value_parser = ["lstm", "gru"])]
    pub cell: String,
    /// Layer weights, in any form `lstm`/`gru` read.
    #[arg(help_heading = "Input", short = 'w', long, value_name = "W")]
    pub weights: PathBuf,
    /// Input .npy: (sequences, timesteps, features), or (timesteps, features) for one sequence.
    #[arg(help_heading = "Input", short = 'i', long, value_name = "X.npy")]
    pub input: PathBuf,
    /// The framework's model.predict output (.npy) to explain.
    #[arg(
        help_heading = "Head and comparison",
        short = 'e',
        long,
        value_name = "P.npy"
    )]
    pub expected: PathBuf,
    /// Dense head applied to the last output: JSON [kernel, bias] or {kernel, bias}, or .npz.
    #[arg(
        help_heading = "Head and comparison",
        short = 'd',
        long,
        value_name = "D"
    )]
    pub dense: Option<PathBuf>,
    /// Cut a 2-D (rows, features) series into sliding windows of K rows.
    #[arg(help_heading = "Input", long, value_name = "K")]
    pub window: Option<usize>,
    /// Your convention flags, as you would pass them to `lstm`/`gru`.
    #[command(flatten)]
    pub convention: ConventionArgs,
    /// Weight layout: auto (PyTorch names like weight_ih_l0 and ONNX W/R/B are recognised), keras, pytorch or onnx.
    #[arg(help_heading = "Input", long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,
    /// Skip steps whose features all equal V, like a Keras Masking(mask_value=V) layer.
    #[arg(
        help_heading = "Input",
        long,
        value_name = "V",
        allow_negative_numbers = true
    )]
    pub mask_value: Option<f64>,
    /// Absolute tolerance of a match.
    #[arg(
        help_heading = "Head and comparison",
        long,
        default_value_t = 1e-5,
        value_name = "A"
    )]
    pub atol: f64,
    /// Relative tolerance of a match.
    #[arg(
        help_heading = "Head and comparison",
        long,
        default_value_t = 1e-5,
        value_name = "R"
    )]
    pub rtol: f64,
    /// What stdout gets: `table` (the diagnosis in a paragraph, then the ranking) or `json`.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = FormatArg::Table, hide_possible_values = true)]
    pub format: FormatArg,
    /// Also write the best reading's weights in Keras layout (a JSON object) for `lstm`/`gru --weights`.
    #[arg(help_heading = "Output", long, value_name = "FILE.json")]
    pub write_weights: Option<PathBuf>,
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which example: the weather LSTM (raw inputs) or GRU (min-max-normalised inputs) of the origin
    /// notebooks ("seeds" 000 and 001, the notebooks this project started from).
    #[arg(value_enum, default_value_t = DemoCell::Lstm)]
    pub cell: DemoCell,
    /// Also write the JSON trace to this file.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Folder for the three charts (states, predictions, gates), PNG; created when missing.
    #[arg(long, default_value = "rnntrace-demo", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Do not write the charts.
    #[arg(long)]
    pub no_plots: bool,
    /// What stdout gets.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    #[command(flatten)]
    pub display: DisplayArgs,
}

/// The built-in examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoCell {
    /// LSTM(4) → Dense(1) on raw weather data (seed 000).
    Lstm,
    /// GRU(4) → Dense(1) on min-max-normalised weather data (seed 001).
    Gru,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
