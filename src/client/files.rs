//! Private files of the CLI: tokens under `$XDG_CONFIG_HOME/latchkey`, credentials under
//! `$XDG_CACHE_HOME/latchkey`.
//!
//! SECURITY: directories are 0700 and files 0600, owned by the current user. A path that is a
//! symlink, is reachable by group or others, or belongs to someone else is refused, both for
//! reading and for writing (TB7: cache poisoning, symlink clobbering). Writes go to a fresh temp
//! file in the same directory (`create_new`, so never through an existing name or symlink),
//! are synced, and are renamed over the target: a reader sees the old file or the new, never half.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why a private file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading, writing or renaming failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// Neither `XDG_*_HOME` nor `HOME` is set.
    #[error("cannot find the home directory: set `HOME` or `{0}`")]
    NoHome(&'static str),
    /// The path is unsafe to use.
    #[error("refusing `{path}`: {why}")]
    Unsafe {
        /// The path.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// `$XDG_CONFIG_HOME/latchkey`, or `~/.config/latchkey`.
pub fn config_dir() -> Result<PathBuf, FileError> {
    xdg_dir("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_CACHE_HOME/latchkey`, or `~/.cache/latchkey`.
pub fn cache_dir() -> Result<PathBuf, FileError> {
    xdg_dir("XDG_CACHE_HOME", ".cache")
}

/// Creates `dir` (and parents) if missing, then checks that it is a private directory of ours.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(dir, e))?;
        }
        Err(e) => return Err(io_err(dir, e)),
        Ok(_) => {}
    }
    check_private_dir(dir)
}

/// Checks that `dir` is a real directory (not a symlink), owned by us, mode 0700 or stricter.
pub fn check_private_dir(dir: &Path) -> Result<(), FileError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io_err(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_path(dir, "it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(unsafe_path(dir, "it is not a directory"));
    }
    check_owner_and_mode(dir, &meta)
}

/// Reads a private file; `Ok(None)` when it does not exist.
///
/// The file is opened with `O_NOFOLLOW`, and the checks run on the open descriptor, so a
/// symlink swapped in between a check and the open cannot redirect the read.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) if is_symlink(path) => return Err(unsafe_path(path, "it is a symbolic link")),
        Err(e) => return Err(io_err(path, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        return Err(unsafe_path(path, "it is not a regular file"));
    }
    check_owner_and_mode(path, &meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| io_err(path, e))?;
    Ok(Some(bytes))
}

/// Replaces `path` atomically with `bytes` (0600). The directory must be private already.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path
        .parent()
        .ok_or_else(|| unsafe_path(path, "it has no parent directory"))?;
    check_private_dir(dir)?;
    if is_symlink(path) {
        return Err(unsafe_path(path, "it is a symbolic link"));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| unsafe_path(path, "it has no file name"))?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random_suffix()
    ));
    let result = (|| {
        // SECURITY: create_new is O_CREAT|O_EXCL: never opens an existing file or follows a link.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io_err(path, e))
}

/// Creates a new directory `PREFIX-RANDOM` (0700) inside the private directory `parent`
/// (created if missing) and returns its path. Never reuses an existing directory.
pub fn create_fresh_private_dir(parent: &Path, prefix: &str) -> Result<PathBuf, FileError> {
    ensure_private_dir(parent)?;
    let dir = parent.join(format!("{prefix}-{}", random_suffix()));
    // SECURITY: not recursive, so an existing directory or symlink of that name is an error.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io_err(&dir, e))?;
    check_private_dir(&dir)?;
    Ok(dir)
}

/// `$XDG_RUNTIME_DIR/latchkey` when `XDG_RUNTIME_DIR` is set (and absolute), else the cache
/// directory: where short-lived secrets such as a one-login SSH key go.
pub fn runtime_dir() -> Result<PathBuf, FileError> {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(base) if base.is_absolute() => Ok(base.join("latchkey")),
        _ => cache_dir(),
    }
}

/// Removes `path` if it exists (a symlink is removed, never followed).
pub fn remove(path: &Path) -> Result<bool, FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Opens (creating, 0600) a lock file next to a private file, refusing symlinks.
pub fn open_lock(path: &Path) -> Result<File, FileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if is_symlink(path) {
                unsafe_path(path, "it is a symbolic link")
            } else {
                io_err(path, e)
            }
        })?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    check_owner_and_mode(path, &meta)?;
    Ok(file)
}

/// The effective uid of this process.
///
/// Read from `/proc/self/status` (no `unsafe` needed); where there is no `/proc`, the owner of
/// `$HOME` stands in, which is the same user on any ordinary system.
pub fn current_uid() -> Option<u32> {
    static UID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UID.get_or_init(read_uid)
}

fn read_uid() -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // `Uid:  real  effective  saved  fs`
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        return line.split_whitespace().nth(2)?.parse().ok();
    }
    let home = std::env::var_os("HOME")?;
    std::fs::metadata(home).ok().map(|m| m.uid())
}

fn check_owner_and_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    if current_uid().is_some_and(|uid| meta.uid() != uid) {
        return Err(unsafe_path(path, "it is owned by another user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_path(
            path,
            "group or others may access it (expected mode 0600 for files, 0700 for directories)",
        ));
    }
    Ok(())
}

fn xdg_dir(var: &'static str, fallback: &str) -> Result<PathBuf, FileError> {
    // The XDG spec: a relative value is invalid and must be ignored.
    if let Some(base) = std::env::var_os(var).map(PathBuf::from)
        && base.is_absolute()
    {
        return Ok(base.join("latchkey"));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .ok_or(FileError::NoHome(var))?;
    Ok(home.join(fallback).join("latchkey"))
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // A failure here only makes the name less unique; create_new still refuses a collision.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

fn io_err(path: &Path, source: io::Error) -> FileError {
    FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn unsafe_path(path: &Path, why: &'static str) -> FileError {
    FileError::Unsafe {
        path: path.display().to_string(),
        why,
    }
}

/// `O_NOFOLLOW`: Linux and the BSDs/macOS use different values.
#[cfg(any(target_os = "linux", target_os = "android"))]
const O_NOFOLLOW: i32 = 0o400_000;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const O_NOFOLLOW: i32 = 0x100;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_0600_in_0700_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/latchkey");
        ensure_private_dir(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        let file = dir.join("tokens.json");
        write_private(&file, b"one").unwrap();
        write_private(&file, b"two").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_private(&file).unwrap().unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left"
        );
        assert!(read_private(&dir.join("missing")).unwrap().is_none());
    }

    #[test]
    fn refuses_symlinks_and_open_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("latchkey");
        ensure_private_dir(&dir).unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.join("tokens.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(read_private(&link), Err(FileError::Unsafe { .. })));
        assert!(matches!(
            write_private(&link, b"y"),
            Err(FileError::Unsafe { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"x", "target untouched");

        let open = dir.join("open.json");
        std::fs::write(&open, b"x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_private(&open), Err(FileError::Unsafe { .. })));

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            ensure_private_dir(&dir),
            Err(FileError::Unsafe { .. })
        ));
    }

    #[test]
    fn fresh_private_dirs_are_new_and_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("latchkey");
        let a = create_fresh_private_dir(&parent, "ssh").unwrap();
        let b = create_fresh_private_dir(&parent, "ssh").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&parent).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn uid_is_known() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(current_uid(), Some(tmp.as_file().metadata().unwrap().uid()));
    }
}
