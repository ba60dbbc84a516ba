/*!
`rnntrace explain`'s command line, declared and nothing more; [`crate::commands::explain`] validates it
(the single-layer flags through [`crate::cli::job::cell_job`], as `lstm`/`gru` do). The convention flags are
[`ConventionArgs`], shared with `lstm`/`gru` and `diagnose`.
*/

use super::args::{ConventionArgs, FormatArg, LayoutArg, PrecisionArg};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Which recurrent cell a `--weights` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainCell {
    /// Keras LSTM (gate blocks i | f | c | o).
    Lstm,
    /// Keras GRU (z | r | h).
    Gru,
    /// Keras SimpleRNN.
    #[value(name = "simple_rnn")]
    SimpleRnn,
}

/// `rnntrace explain`: exact attributions of one output over time and features, and what each unit does.
// --carry-state comes with the shared convention flags; explain refuses it, so --help does not offer it.
#[derive(Debug, Args)]
#[command(mut_arg("carry_state", |a| a.hide(true)))]
pub struct ExplainArgs {
    /// A saved Keras model (.keras or .h5): stacks, Bidirectional, heads, Masking. With --cell, a whole
    /// PyTorch module from its state dict (.pt/.pth/safetensors: every layer and direction, --dense for its
    /// nn.Linear head on the last step), as `run --model F --cell C` reads it.
    #[arg(help_heading = "Input", short = 'm', long, value_name = "MODEL", conflicts_with_all = ["weights"], required_unless_present = "weights")]
    pub model: Option<PathBuf>,
    /// One layer's weights (Keras JSON/.npz, PyTorch, ONNX layouts, as `lstm`/`gru` read them).
    #[arg(
        help_heading = "Input",
        short = 'w',
        long,
        value_name = "W",
        requires = "cell"
    )]
    pub weights: Option<PathBuf>,
    /// The cell the weights are for.
    #[arg(help_heading = "Input", long, value_enum)]
    pub cell: Option<ExplainCell>,
    /// Input sequences (sequences, timesteps, features) or one (timesteps, features); token ids
    /// (sequences, timesteps) for a model whose input feeds an Embedding. A model with several inputs
    /// takes --input once per input, in the model's input order, or as --input NAME=FILE.
    #[arg(
        help_heading = "Input",
        short = 'i',
        long,
        value_name = "X.npy",
        required = true
    )]
    pub input: Vec<PathBuf>,
    /// Which output of the prediction to explain (0-based).
    #[arg(
        help_heading = "Attribution",
        long,
        default_value_t = 0,
        value_name = "K"
    )]
    pub output: usize,
    /// Comma list: gradient, input-x-gradient, integrated-gradients, occlusion, or all.
    #[arg(
        help_heading = "Attribution",
        long,
        default_value = "all",
        value_name = "LIST"
    )]
    pub methods: String,
    /// Baseline for integrated gradients, occlusion and baseline_prediction: zeros (the default), mean
    /// (each feature's mean over all unmasked steps of all sequences), or a FILE.npy shaped like the
    /// input or one sequence of it ((timesteps, features); a flat input's (features)). For token inputs:
    /// zeros is the id 0 (the padding row of the embedding), mean the mean embedding row of the kept
    /// tokens, a FILE holds baseline ids ((sequences, timesteps) or (timesteps)). A model with several
    /// inputs takes one per input as NAME=zeros|mean|FILE.npy, repeated; an unnamed zeros or mean is
    /// the baseline of every input not named, and inputs neither named nor defaulted keep zeros.
    #[arg(
        help_heading = "Attribution",
        long,
        value_name = "[NAME=]zeros|mean|FILE.npy"
    )]
    pub baseline: Vec<String>,
    /// Integrated gradients: number of nodes.
    #[arg(
        help_heading = "Attribution",
        long,
        default_value_t = 50,
        value_name = "N"
    )]
    pub ig_steps: usize,
    /// Integrated gradients: the rule, as Captum names it (gausslegendre, riemann_left, riemann_right,
    /// riemann_middle, riemann_trapezoid).
    #[arg(
        help_heading = "Attribution",
        long,
        default_value = "gausslegendre",
        value_name = "RULE"
    )]
    pub ig_method: String,
    /// The single layer's conventions, as `lstm`/`gru` take them (`--carry-state` is refused: explain
    /// treats every sequence independently).
    #[command(flatten)]
    pub convention: ConventionArgs,
    /// Weights layout.
    #[arg(help_heading = "Input", long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,
    /// Which layer of a multi-layer PyTorch/ONNX file.
    #[arg(help_heading = "Input", long, default_value_t = 0, value_name = "N")]
    pub layer: usize,
    /// The reverse direction of a bidirectional PyTorch/ONNX file (runs with --go-backwards).
    #[arg(help_heading = "Input", long)]
    pub reverse: bool,
    /// The recurrent module of a PyTorch file holding several (`encoder`, `decoder.rnn`).
    #[arg(help_heading = "Input", long, value_name = "NAME")]
    pub module: Option<String>,
    /// Initial states (.npz with h, and c for an LSTM): their gradient is reported as its own term.
    #[arg(help_heading = "Input", long, value_name = "S.npz")]
    pub initial_state: Option<PathBuf>,
    /// Mask (sequences, timesteps), nonzero = used.
    #[arg(help_heading = "Input", long, value_name = "M.npy")]
    pub mask: Option<PathBuf>,
    /// Mask steps whose features all equal V (Keras Masking).
    #[arg(
        help_heading = "Input",
        long,
        value_name = "V",
        allow_negative_numbers = true
    )]
    pub mask_value: Option<f64>,
    /// Dense head after the layer: a file, or the name of an nn.Linear in --weights (`fc`).
    #[arg(
        help_heading = "Head and comparison",
        short = 'd',
        long,
        value_name = "D"
    )]
    pub dense: Option<PathBuf>,
    /// Compute in float32 (as the frameworks do) or float64. A model saved under a float16/bfloat16
    /// dtype policy is explained through this computation of its weights; its own prediction under the
    /// policy is shown next to it.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Output format on stdout.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write every attribution, the predictions and the unit analyses to FILE.npz.
    #[arg(help_heading = "Output", long, value_name = "FILE.npz")]
    pub save: Option<PathBuf>,
    /// Attribution heat map (time × features) with the input above it (.png or .svg). A model with
    /// several inputs gets one chart per input, FILE-NAME.png (an input read only as a mask none).
    #[arg(help_heading = "Charts", long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Unit saturation scatter and timescale histogram (.png or .svg).
    #[arg(help_heading = "Charts", long, value_name = "FILE")]
    pub plot_units: Option<PathBuf>,
    /// An interactive, self-contained HTML report of the explained run: every gate and state of every
    /// recurrent layer, the unit list sortable by attribution, and the attributions and unit analyses
    /// (several inputs: an input selector, each input's heat map, steps and top contributions).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// For token-id inputs (a model input that feeds an Embedding, or a one-feature id series): the
    /// vocabulary (JSON list index → token, or object token → index), shown as each step's token in the
    /// tables, the --plot chart and the report.
    #[arg(long, value_name = "vocab.json")]
    pub tokens: Option<PathBuf>,
    /// Which sequence the tables and the heat map show (0-based).
    #[arg(help_heading = "Display", long, default_value_t = 0, value_name = "N")]
    pub sequence: usize,
    /// Rows in the top-contributions table.
    #[arg(help_heading = "Display", long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Feature names for tables and charts.
    #[arg(help_heading = "Display", long, value_name = "A,B,C")]
    pub feature_names: Option<String>,
    /// Print nothing on stdout (files are still written).
    #[arg(help_heading = "Display", long, short)]
    pub quiet: bool,
}
