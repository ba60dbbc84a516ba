/*!
`rnntrace demo`: the seeds' weather examples, from real Keras fixtures embedded in the binary.
*/

use crate::app::Outcome;
use crate::cli::DemoArgs;
use crate::error::{Error, Result};

/// Runs the built-in example.
pub fn run(_d: &DemoArgs) -> Result<Outcome> {
    Err(Error::usage("demo: not built yet"))
}
