/*!
The standard streams as the process found them. A program started with stdout closed (`rnntrace … >&-`)
loses everything it prints without a word unless it says so.

Rust's runtime, before `main`, puts `/dev/null` (opened read-write) on any of descriptors 0–2 that is
closed, so that no file opened later takes their place. That is how a closed stdout is recognised here:
descriptor 1 is `/dev/null` opened read-write. A shell's `> /dev/null` opens it write-only, so an explicit
redirection to `/dev/null` stays a quiet, successful run (`1<> /dev/null` would be taken for a closed
stdout; nobody writes that).
*/

/// True when the process was started with stdout closed.
pub fn stdout_closed() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        // SAFETY: fcntl(F_GETFL) only reads the descriptor's status flags.
        let flags = unsafe { libc::fcntl(1, libc::F_GETFL) };
        if flags == -1 {
            return true;
        }
        if flags & libc::O_ACCMODE != libc::O_RDWR {
            return false;
        }
        let (Ok(out), Ok(null)) = (
            std::fs::metadata("/proc/self/fd/1").or_else(|_| std::fs::metadata("/dev/fd/1")),
            std::fs::metadata("/dev/null"),
        ) else {
            return false;
        };
        out.file_type().is_char_device() && out.rdev() == null.rdev()
    }
    #[cfg(not(unix))]
    false
}
