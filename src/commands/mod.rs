/*!
One file per subcommand: each validates what it can before computing, computes through the library, and
hands its results to [`crate::cli::output`].
*/

pub mod cell;
pub mod demo;
pub mod diagnose;
pub mod explain;
pub mod explain_baselines;
pub mod explain_model;
pub mod inspect;
pub mod run;
