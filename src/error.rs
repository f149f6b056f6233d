//! User-facing errors.
//!
//! Owns the split between *bad input* (a [`UserError`]: the user can fix it; the CLI prints it
//! and exits with code 2) and everything else (exit code 1). Every stage returns
//! `anyhow::Result`; a stage that rejects its input wraps the message in a `UserError` with
//! [`user`] / [`bail_user!`], naming the file, the key and the fix.

use std::fmt;

/// An error caused by the user's input (spec, data file, flags). Exit code 2.
#[derive(Debug, Clone)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Wrap a message as a [`UserError`] inside an `anyhow::Error`.
pub fn user(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError(msg.into()))
}

/// `return Err(user(format!(...)))`.
#[macro_export]
macro_rules! bail_user {
    ($($arg:tt)*) => {
        return Err($crate::error::user(format!($($arg)*)))
    };
}

/// An I/O error on `path` (`what`: "create folder", "write", ...) as a message that names the
/// path. The kinds a user causes by the paths they chose (no permission, a file where a
/// folder must be, a read-only or full disk) are [`UserError`]s with the fix; others are not.
pub fn path_error(what: &str, path: &std::path::Path, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::*;
    let fix = match e.kind() {
        PermissionDenied => "choose a folder you can write (e.g. another --out), or change its permissions",
        AlreadyExists | NotADirectory => {
            "a file stands where a folder must be: move it away, or choose another folder"
        }
        ReadOnlyFilesystem => "the disk is read-only: choose another folder",
        StorageFull | QuotaExceeded => {
            "the disk is full: free some space and run the same command again (finished work is kept)"
        }
        _ => return anyhow::anyhow!("cannot {what} {}: {e}", path.display()),
    };
    user(format!("cannot {what} {}: {e}; {fix}", path.display()))
}

/// True when any error in the chain is a [`UserError`].
pub fn is_user_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<UserError>().is_some())
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word` by edit distance, if any is reasonably close.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(nearest("lrr", ["lr", "seed", "warmup_steps"]), Some("lr"));
        assert_eq!(nearest("zzzzzzzz", ["lr", "seed"]), None);
    }
}
