//! A block of lines that latchkey owns inside a file the user also edits (`~/.aws/config`,
//! `~/.ssh/config`): found by its marker lines, replaced in place, appended when missing, and
//! every byte outside it kept.
//!
//! The text functions are pure; [`update_file`] reads and atomically replaces the file.

use std::path::Path;

use super::ClientError;

/// The marker lines that open and close one kind of block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Markers {
    /// The line that opens the block.
    pub begin: &'static str,
    /// The line that closes the block.
    pub end: &'static str,
}

/// The file holds one marker without the other, or the end before the beginning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the file has a damaged latchkey block (one of `{begin}` / `{end}` is missing or out of order); fix it by hand"
)]
pub struct DamagedBlock {
    begin: &'static str,
    end: &'static str,
}

/// Whether [`update_file`] changed the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The file already held exactly this block; nothing was written.
    Unchanged,
    /// The file was replaced.
    Written,
}

/// `existing` with its block between `markers` replaced by `block` (or `block` appended after a
/// blank line), every other byte kept.
///
/// # Errors
///
/// [`DamagedBlock`] when only one marker is present, or they are out of order.
pub fn apply(existing: &str, block: &str, markers: Markers) -> Result<String, DamagedBlock> {
    match (
        find_line(existing, markers.begin),
        find_line(existing, markers.end),
    ) {
        (Some(b), Some(e)) if b < e => {
            let end = existing
                .get(e..)
                .and_then(|rest| rest.find('\n'))
                .map_or(existing.len(), |n| e + n + 1);
            let (head, tail) = (
                existing.get(..b).unwrap_or_default(),
                existing.get(end..).unwrap_or_default(),
            );
            Ok(format!("{head}{block}{tail}"))
        }
        (None, None) => {
            let sep = match existing {
                "" => "",
                t if t.ends_with("\n\n") => "",
                t if t.ends_with('\n') => "\n",
                _ => "\n\n",
            };
            Ok(format!("{existing}{sep}{block}"))
        }
        _ => Err(DamagedBlock {
            begin: markers.begin,
            end: markers.end,
        }),
    }
}

/// Puts `block` into the file at `path` (created 0600 in a 0700 directory when missing),
/// replacing it atomically and keeping its mode; writes nothing when the block is already there.
///
/// # Errors
///
/// [`ClientError::Other`] naming the file when it cannot be read or written, or its block is
/// damaged.
pub fn update_file(path: &Path, block: &str, markers: Markers) -> Result<Update, ClientError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(file_error(path, &e)),
    };
    let updated = apply(&existing, block, markers)
        .map_err(|e| ClientError::Other(format!("`{}`: {e}", path.display())))?;
    if updated == existing {
        return Ok(Update::Unchanged);
    }
    replace(path, updated.as_bytes())?;
    Ok(Update::Written)
}

/// Replaces `path` atomically, keeping its mode (0600 for a new file); the directory is made
/// 0700 when missing, as ssh wants `~/.ssh`.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::Other(format!("`{}` has no directory", path.display())))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| file_error(dir, &e))?;
    }
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777);
    let tmp = dir.join(format!(".latchkey-managed.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| file_error(path, &e))
}

/// Byte offset of the line that is exactly `marker`.
fn find_line(text: &str, marker: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == marker {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

fn file_error(path: &Path, e: &std::io::Error) -> ClientError {
    ClientError::Other(format!("`{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Markers = Markers {
        begin: "# BEGIN t",
        end: "# END t",
    };

    #[test]
    fn a_block_is_appended_after_a_blank_line_and_replaced_in_place() {
        let block = "# BEGIN t\nx = 1\n# END t\n";
        assert_eq!(apply("", block, M).unwrap(), block);
        let once = apply("[mine]\na = b", block, M).unwrap();
        assert_eq!(once, format!("[mine]\na = b\n\n{block}"));
        let edited = format!("{once}[after]\n");
        let twice = apply(&edited, "# BEGIN t\nx = 2\n# END t\n", M).unwrap();
        assert_eq!(
            twice,
            "[mine]\na = b\n\n# BEGIN t\nx = 2\n# END t\n[after]\n"
        );
        assert_eq!(
            apply(&twice, "# BEGIN t\nx = 2\n# END t\n", M).unwrap(),
            twice
        );
    }

    #[test]
    fn a_damaged_block_is_refused_not_guessed() {
        let block = "# BEGIN t\n# END t\n";
        assert!(apply("# BEGIN t\nx = 1\n", block, M).is_err());
        assert!(apply("# END t\n# BEGIN t\n", block, M).is_err());
        assert!(apply("x\n# END t\n", block, M).is_err());
    }

    #[test]
    fn updating_twice_writes_once_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        let block = "# BEGIN t\nx = 1\n# END t\n";
        assert_eq!(update_file(&path, block, M).unwrap(), Update::Written);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(update_file(&path, block, M).unwrap(), Update::Unchanged);
        assert_eq!(
            update_file(&path, "# BEGIN t\nx = 2\n# END t\n", M).unwrap(),
            Update::Written
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the user's own mode is kept");
    }
}
