//! Files: atomic writes (temp file in the same folder, fsync, rename: a crash never leaves a
//! half-written file), the crash-test failpoints, per-unit `flock` locks, glob expansion, and
//! the names of the files and folders of a results folder. Imports only [`crate::error`]
//! (to name a path in an I/O error).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The spec copied into a results folder.
pub const SWEEP_FILE: &str = "sweep.yaml";
/// The corpus's exact entropy floor, when known.
pub const FLOOR_FILE: &str = "floor.json";
/// Model + optimizer checkpoints of unfinished runs.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// One lock file per unit of work being trained.
pub const LOCKS_DIR: &str = "locks";

/// Test hook for crash-safety tests: when the environment variable `SCALELAB_FAILPOINT`
/// equals `name`, the process kills itself with SIGKILL right here (no unwinding, no
/// destructors: exactly what `kill -9` or a node failure does).
pub fn failpoint(name: &str) {
    if std::env::var_os("SCALELAB_FAILPOINT").is_some_and(|v| v == name) {
        extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        // SAFETY: sending SIGKILL (9) to our own pid.
        unsafe {
            kill(std::process::id() as i32, 9);
        }
    }
}

/// Failpoints `before-rename:<file name>` and `before-rename:*.<extension>`: the new
/// content is written and synced, the old file still in place.
fn failpoint_rename(path: &Path) {
    if std::env::var_os("SCALELAB_FAILPOINT").is_none() {
        return;
    }
    failpoint(&format!(
        "before-rename:{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    if let Some(ext) = path.extension() {
        failpoint(&format!("before-rename:*.{}", ext.to_string_lossy()));
    }
}

/// Temp-file name beside `path`, unique per process and call.
fn temp_path(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Remove temp files that a killed process left behind (older than ten minutes, so a live
/// writer on another node is never disturbed).
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 600);
        if name.starts_with('.') && name.contains(".tmp-") && old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Write a small text file atomically.
pub fn write_text_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    write_bytes_atomic(path, text.as_bytes())
}

/// Write bytes atomically (temp file in the same folder, fsync, rename, fsync the folder).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_all(dir)?;
    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::error::path_error("write", path, e));
    }
    failpoint_rename(path);
    std::fs::rename(&tmp, path).map_err(|e| crate::error::path_error("write", path, e))?;
    // The rename itself reaches the disk before anything that relies on it (a checkpoint is
    // deleted once its run's result file is written).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `std::fs::create_dir_all`, its error naming the folder (and the fix, where the user can).
pub fn create_dir_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::error::path_error("create folder", dir, e))
}

extern "C" {
    fn flock(fd: i32, op: i32) -> i32;
}
const LOCK_SH: i32 = 1;
const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;

/// An exclusive lock on one unit of work (`locks/<run-id>.lock`, `flock`), held while a
/// process trains it, so two processes (two `run`s, a `run` and an array task, a requeued
/// task and its stale predecessor) never train the same run at once. Released on drop or
/// when the process dies.
pub struct UnitLock {
    _file: std::fs::File,
}

impl UnitLock {
    /// Whether some process holds the lock of `id` now (creates nothing).
    pub fn is_held(dir: &Path, id: &str) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(f) = std::fs::File::open(dir.join(LOCKS_DIR).join(format!("{id}.lock"))) else {
            return false;
        };
        // LOCK_SH | LOCK_NB; released when `f` closes. Only "would block" means held: a file
        // system without flock (some NFS and Lustre mounts) has no holders to report.
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { flock(f.as_raw_fd(), LOCK_SH | LOCK_NB) };
        rc != 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }

    /// `Ok(None)` when another process holds the lock.
    pub fn try_acquire(dir: &Path, id: &str) -> anyhow::Result<Option<UnitLock>> {
        use std::os::fd::AsRawFd;
        let locks = dir.join(LOCKS_DIR);
        create_dir_all(&locks)?;
        let path = locks.join(format!("{id}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| crate::error::path_error("write", &path, e))?;
        // LOCK_EX | LOCK_NB
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { flock(f.as_raw_fd(), LOCK_EX | LOCK_NB) };
        if rc == 0 {
            Ok(Some(UnitLock { _file: f }))
        } else {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                // A file system without flock (some NFS mounts): Slurm's array bookkeeping
                // already gives each task its own run.
                Ok(Some(UnitLock { _file: f }))
            }
        }
    }
}

pub fn expand_glob(pattern: &str, base: &Path) -> Vec<PathBuf> {
    let p = base.join(pattern);
    if p.is_dir() {
        let mut out = Vec::new();
        walk_files(&p, &mut out);
        out.sort();
        return out;
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !name.contains('*') && !name.contains('?') {
        return vec![p];
    }
    let dir = p
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && f.file_name()
                            .map(|n| wildcard(&name, &n.to_string_lossy()))
                            .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every regular file under `dir` (hidden entries skipped).
fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk_files(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.txt", "a.txt"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(!wildcard("*.txt", "a.bin"));
    }
}
