/*!
The command line: [`args`] declares the flags (clap types, shared flag groups flattened; `explain`'s in [`explain`]), [`job`] turns them
into validated jobs and reads the environment once, [`load`] holds the loaders commands share, [`output`] is the one writer every command hands its
results to (trace files, charts, stdout, the verdict).
*/

pub mod args;
pub mod explain;
pub mod job;
pub mod load;
pub mod output;

pub use args::{Cli, Command};
pub use output::Outcome;
