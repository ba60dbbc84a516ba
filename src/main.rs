/*!
The `rnntrace` binary: parse, dispatch, map the outcome to an exit code (0 ok, 1 comparison failed, 2 bad
usage or bad input).

The command line lives here, apart from the library: [`cli`] declares the flags, turns them into validated
jobs and writes every output; [`commands`] holds one file per subcommand. The library's modules are brought
into this crate's root so the command layer names them as `crate::engine`, `crate::weights`, ….
*/

mod cli;
mod commands;

pub(crate) use rnntrace::{
    Result, cell, compare, engine, error, explain, io, model, render, runner, scaler, trace,
    weights,
};

use clap::Parser;
use cli::{Cli, Command, Outcome};

/// Runs one subcommand. Every subcommand has one arm here.
fn dispatch(cli: Cli) -> Result<Outcome> {
    let env = cli::job::Env::read()?;
    match cli.command {
        Command::Lstm(a) => commands::cell::run_cell(weights::CellKind::Lstm, &a, &env),
        Command::Gru(a) => commands::cell::run_cell(weights::CellKind::Gru, &a, &env),
        Command::Demo(d) => commands::demo::run_demo(&d, &env),
        Command::Run(r) => commands::run::run_model(&r, &env),
        Command::Inspect(i) => commands::inspect::inspect(&i),
        Command::Diagnose(a) => commands::diagnose::diagnose(&a, &env),
        Command::Explain(a) => commands::explain::explain(&a, &env),
    }
}

fn main() {
    io::temp::install_signal_cleanup();
    let code = match dispatch(Cli::parse()) {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!("rnntrace: error: {}", error::printable(&e.to_string()));
            2
        }
    };
    std::process::exit(code);
}
