/*!
Atomic output: every file rnntrace writes goes to a temporary file beside the target and is renamed into
place only when complete. On any error the temporary file is removed and an existing target is untouched.
*/

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Checks, before any work is done, that `target` can be written: its folder exists and it is not a
/// folder itself. (The write itself still goes through [`atomic_write`].)
pub fn check_output(target: &Path) -> Result<()> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
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
    Ok(())
}

/// Writes the bytes produced by `fill` to `target` atomically.
pub fn atomic_write(
    target: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::output(
            target,
            format!("folder {} does not exist", dir.display()),
        ));
    }
    if target.is_dir() {
        return Err(Error::output(target, "is a directory"));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".rnntrace-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::output(target, super::io_reason(&e)))?;
    {
        let mut buffered = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut buffered).map_err(|e| Error::output(target, super::io_reason(&e)))?;
        buffered
            .flush()
            .map_err(|e| Error::output(target, super::io_reason(&e)))?;
    }
    #[cfg(unix)]
    {
        // Temporary files are private (0600); the result should have ordinary permissions.
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(target)
        .map_err(|e| Error::output(target, super::io_reason(&e.error)))?;
    Ok(())
}
