/*!
Atomic output: every file rnntrace writes goes to a temporary file beside the target (see [`super::temp`])
and is renamed into place only when complete. On any error, or when a signal ends the run, the temporary
file is removed and an existing target is untouched.
*/

use super::temp::folder_of;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Checks, before any work is done, that `target` can be written: its folder exists, it is not a folder
/// itself, and a file can be created in that folder (a read-only mount, an immutable or unwritable folder
/// is found now, not after the computation). The write itself still goes through [`atomic_write`].
pub fn check_output(target: &Path) -> Result<()> {
    let dir = folder_of(target);
    if dir.exists() && !dir.is_dir() {
        return Err(Error::output(
            target,
            format!("{} is a file, not a folder", dir.display()),
        ));
    }
    if !dir.is_dir() {
        return Err(Error::output(
            target,
            format!("folder {} does not exist", dir.display()),
        ));
    }
    if target.is_dir() {
        return Err(Error::output(target, "is a directory"));
    }
    // A probe: created and removed at once (the folder may be writable by nobody but root, read-only, or
    // immutable; only trying says).
    drop(super::temp::create(target)?);
    Ok(())
}

/// Writes the bytes produced by `fill` to `target` atomically.
pub fn atomic_write(
    target: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = folder_of(target);
    if !dir.is_dir() {
        return Err(Error::output(
            target,
            format!("folder {} does not exist", dir.display()),
        ));
    }
    if target.is_dir() {
        return Err(Error::output(target, "is a directory"));
    }
    let mut tmp = super::temp::create(target)?;
    {
        let mut buffered = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut buffered).map_err(|e| Error::output(target, super::io_reason(&e)))?;
        buffered
            .flush()
            .map_err(|e| Error::output(target, super::io_reason(&e)))?;
    }
    super::temp::persist(tmp, target)
}
