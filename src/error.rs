/*!
Errors a user can cause, and how they map to exit codes.

Every variant names the file or flag at fault so that `main` can print one line a user can act on.
Comparison failures are not errors: they are a verdict, reported through the binary's `Outcome` (exit code 1).
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

/// Text safe to print, the crate's one escaper for anything read from a file: `s` with every control
/// character (and the Unicode line separators and bidirectional overrides, which
/// can also rearrange a terminal's text) replaced by a visible escape: `\n`, `\t`, `\x1b`, `\u{202e}`.
/// Backslashes are left alone, so escaping twice changes nothing.
pub fn printable(s: &str) -> String {
    let hostile = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(hostile) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hostile(c) && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
