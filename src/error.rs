/*!
Errors a user can cause, and how they map to exit codes.

Every variant names the file or flag at fault so that `main` can print one line a user can act on.
Comparison failures are not errors: they are a verdict, reported through [`crate::app::Outcome`].
*/

use std::path::{Path, PathBuf};

/// Everything that can go wrong between reading the command line and writing the last byte.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, or its contents are not what the flag expects.
    /// `what` is a complete sentence fragment such as "recurrent_kernel has shape (4, 15); expected (4, 16)".
    #[error("{}: {what}", path.display())]
    Input {
        /// The file at fault (or the flag, when the problem is a value rather than a file).
        path: PathBuf,
        /// What was expected and what was found.
        what: String,
    },
    /// Flags that do not fit together, or a value outside its range.
    #[error("{0}")]
    Usage(String),
    /// An output file could not be written; nothing was left at `path`.
    #[error("{}: cannot write: {what}", path.display())]
    Output {
        /// The target the user asked for.
        path: PathBuf,
        /// The operating system's reason, or what went wrong while rendering.
        what: String,
    },
}

impl Error {
    /// An input error about `path`.
    pub fn input(path: impl AsRef<Path>, what: impl Into<String>) -> Error {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            what: what.into(),
        }
    }

    /// A usage error.
    pub fn usage(what: impl Into<String>) -> Error {
        Error::Usage(what.into())
    }

    /// An output error about `path`.
    pub fn output(path: impl AsRef<Path>, what: impl std::fmt::Display) -> Error {
        Error::Output {
            path: path.as_ref().to_path_buf(),
            what: what.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shape formatting shared by all messages: `(4, 16)`, `(12,)`, `()`.
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Text safe to print: control characters (newlines, ANSI escapes) from file-supplied names are shown as
/// escapes instead of acting on the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
