/*!
Temporary output files: where every file rnntrace writes lives until it is complete.

Owns the life of a `.rnntrace-<pid>-XXXXXX.tmp` file beside its target:
- [`create`] makes it with the permissions the umask gives (0666 less the umask), after sweeping the folder
  for temporary files left by runs that were killed (kill -9 cannot be caught: a temp file whose process is
  gone is recognised by the pid in its name and removed by the next run writing into that folder);
- [`persist`] renames it onto the target, keeping an existing target's mode;
- while it exists it is registered, so that [`install_signal_cleanup`] can remove it when SIGINT, SIGTERM or
  SIGHUP arrives, before the process exits with the conventional code (128 + signal).
*/

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The paths of the temporary files being written now.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

const PREFIX: &str = ".rnntrace-";
const SUFFIX: &str = ".tmp";

/// The folder a target is written in.
pub fn folder_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A registered temporary file; removed (and unregistered) when dropped without [`persist`].
pub struct TempOut {
    /// `None` once persisted.
    file: Option<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl TempOut {
    /// The open file.
    pub fn as_file(&self) -> &std::fs::File {
        self.file.as_ref().expect("a live temporary file").as_file()
    }

    /// The open file, mutably.
    pub fn as_file_mut(&mut self) -> &mut std::fs::File {
        self.file
            .as_mut()
            .expect("a live temporary file")
            .as_file_mut()
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        unregister(&self.path);
        // The NamedTempFile (if not persisted) removes the file itself when it drops, right after this.
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn unregister(p: &Path) {
    lock().retain(|q| q != p);
}

/// Creates a temporary file beside `target`, registered for removal on a signal.
pub fn create(target: &Path) -> Result<TempOut> {
    let dir = folder_of(target);
    sweep_stale(&dir);
    let prefix = format!("{PREFIX}{}-", std::process::id());
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(SUFFIX);
    #[cfg(unix)]
    {
        // 0666 less the umask, as any ordinary program's output (open(2) applies the umask).
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // Registered under the lock so that a signal arriving now finds the file or finds nothing to remove.
    let mut live = lock();
    let file = b
        .tempfile_in(&dir)
        .map_err(|e| Error::output(target, super::io_reason(&e)))?;
    let path = file.path().to_path_buf();
    live.push(path.clone());
    Ok(TempOut {
        file: Some(file),
        path,
    })
}

/// Renames a finished temporary file onto `target`. An existing target keeps its permissions.
pub fn persist(mut tmp: TempOut, target: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(target) {
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    let file = tmp.file.take().expect("a live temporary file");
    // The rename and the unregistering happen under the lock, so a signal handler never removes a file
    // that has already become the target, nor misses one that has not.
    let mut live = lock();
    let result = file
        .persist(target)
        .map(|_| ())
        .map_err(|e| Error::output(target, super::io_reason(&e.error)));
    live.retain(|q| q != &tmp.path);
    result
}

/// Removes the temporary files being written (called when a signal ends the process).
pub fn remove_live() {
    let live = lock();
    for p in live.iter() {
        let _ = std::fs::remove_file(p);
    }
    // The lock is kept until exit: no writer may persist a file after this point.
    std::mem::forget(live);
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that remove the temporary files being written and exit
/// with 128 + the signal number (130, 143, 129), as a shell reports a process ended by that signal.
pub fn install_signal_cleanup() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            let _ = std::thread::Builder::new()
                .name("rnntrace-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        remove_live();
                        std::process::exit(128 + sig);
                    }
                });
        }
    }
}

/// Removes `.rnntrace-<pid>-*.tmp` files in `dir` whose process no longer exists (left by a run that was
/// killed with SIGKILL or by a power cut). Files of a live rnntrace process are left alone. Only where
/// `/proc` tells which processes exist (Linux); elsewhere nothing is removed.
fn sweep_stale(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = stale_pid(name) else { continue };
        if pid == std::process::id() || rnntrace_alive(pid) {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The pid in a temporary file's name, `.rnntrace-<pid>-XXXXXX.tmp`.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// True when process `pid` exists and is an rnntrace (a reused pid of another program does not protect
/// a stale file).
fn rnntrace_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim_end().starts_with("rnntrace"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_the_pid() {
        assert_eq!(stale_pid(".rnntrace-1234-aB3xYz.tmp"), Some(1234));
        assert_eq!(stale_pid(".rnntrace-aB3xYz.tmp"), None);
        assert_eq!(stale_pid(".rnntrace-12-.tmp"), None);
        assert_eq!(stale_pid("rnntrace-12-ab.tmp"), None);
        assert_eq!(stale_pid(".rnntrace-12-ab.npz"), None);
    }

    #[test]
    fn stale_files_of_dead_processes_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0x7FFFFFF0 exists nowhere (above pid_max).
        let dead = dir.path().join(".rnntrace-2147483632-abcdef.tmp");
        let mine = dir
            .path()
            .join(format!(".rnntrace-{}-abcdef.tmp", std::process::id()));
        let other = dir.path().join("keep.tmp");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        sweep_stale(dir.path());
        assert!(!dead.exists());
        assert!(mine.exists());
        assert!(other.exists());
    }

    #[test]
    fn a_dropped_temp_file_is_removed_and_unregistered() {
        let dir = tempfile::tempdir().unwrap();
        let t = create(&dir.path().join("out.bin")).unwrap();
        let p = t.path.clone();
        assert!(lock().contains(&p));
        drop(t);
        assert!(!p.exists());
        assert!(!lock().contains(&p));
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_target_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = create(&target).unwrap();
        persist(t, &target).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
