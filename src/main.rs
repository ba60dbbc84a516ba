/*!
The `rnntrace` binary: parse, run, map the outcome to an exit code (0 ok, 1 comparison failed, 2 bad input).
*/

use clap::Parser;

fn main() {
    rnntrace::io::temp::install_signal_cleanup();
    let cli = rnntrace::cli::Cli::parse();
    let code = match rnntrace::app::run(cli) {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!(
                "rnntrace: error: {}",
                rnntrace::error::printable(&e.to_string())
            );
            2
        }
    };
    std::process::exit(code);
}
