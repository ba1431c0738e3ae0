//! The audit sink: a JSON-lines copy of every appended record, for a SIEM or log shipper.
//!
//! Each record becomes one line: `seq`, `prev_hash` and `hash` (lowercase hex), then the event's
//! fields (the serde form of [`AuditRecord`]). Lines are written whole, one at a time, under a
//! lock, so they never interleave with each other. The sink is a copy: the store is the record
//! of authority, and a failed sink write does not undo or fail an append.
//!
//! With the stdout sink, send logs to stderr, or log lines and audit lines will mix on one
//! stream. A stalled reader on stdout or a stalled disk slows appends down (back pressure)
//! rather than dropping lines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::io::AsyncWriteExt;

use super::AuditRecord;

/// Where sink lines go: `"stdout"` or `"file:/path/to/audit.jsonl"` in configuration.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum SinkConfig {
    /// Append to this file, created with mode 0600 if missing.
    File(PathBuf),
    /// Write to the process's standard output.
    Stdout,
}

/// An open sink.
pub struct Sink {
    target: SinkConfig,
    writer: tokio::sync::Mutex<Writer>,
}

/// Why the sink could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration string is neither `stdout` nor `file:<path>`.
    #[error("audit sink must be `stdout` or `file:<path>`, not `{0}`")]
    BadConfig(String),
    /// An existing sink file may be written by group or others.
    #[error(
        "audit sink file `{path}` has mode {mode:o}; it must not be writable by group or others"
    )]
    Exposed {
        /// The sink file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The sink path is not a regular file.
    #[error("audit sink `{path}` is not a regular file")]
    NotAFile {
        /// The sink path.
        path: PathBuf,
    },
    /// The sink file could not be opened.
    #[error("cannot open audit sink file `{path}`: {source}")]
    Open {
        /// The sink file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The record could not be serialized.
    #[error("cannot serialize audit record: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The line could not be written.
    #[error("cannot write audit sink line: {0}")]
    Write(#[from] std::io::Error),
}

enum Writer {
    File(tokio::fs::File),
    Stdout(tokio::io::Stdout),
}

// === impl SinkConfig ===

impl FromStr for SinkConfig {
    type Err = SinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "stdout" {
            return Ok(Self::Stdout);
        }
        match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
            _ => Err(SinkError::BadConfig(s.to_owned())),
        }
    }
}

// === impl Sink ===

impl Sink {
    /// Opens the sink. A file is opened for appending and created with mode 0600.
    ///
    /// # Errors
    ///
    /// Returns [`SinkError`] if the file cannot be opened, is not a regular file, or is writable
    /// by group or others.
    pub async fn open(config: &SinkConfig) -> Result<Self, SinkError> {
        let writer = match config {
            SinkConfig::File(path) => Writer::File(open_file(path).await?),
            SinkConfig::Stdout => Writer::Stdout(tokio::io::stdout()),
        };
        Ok(Self {
            target: config.clone(),
            writer: tokio::sync::Mutex::new(writer),
        })
    }

    /// Writes `record` as one line and flushes it.
    ///
    /// # Errors
    ///
    /// Returns [`SinkError`] if the record cannot be serialized or the line cannot be written.
    pub async fn write(&self, record: &AuditRecord) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut writer = self.writer.lock().await;
        match &mut *writer {
            Writer::File(file) => {
                file.write_all(&line).await?;
                file.flush().await?;
            }
            Writer::Stdout(out) => {
                out.write_all(&line).await?;
                out.flush().await?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

async fn open_file(path: &Path) -> Result<tokio::fs::File, SinkError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(path).await.map_err(|source| SinkError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().await.map_err(|source| SinkError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SinkError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SECURITY: others who can write the file can forge lines a SIEM would trust.
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(SinkError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn parses_config_strings() {
        assert_eq!("stdout".parse::<SinkConfig>().unwrap(), SinkConfig::Stdout);
        assert_eq!(
            "file:/var/log/a.jsonl".parse::<SinkConfig>().unwrap(),
            SinkConfig::File("/var/log/a.jsonl".into())
        );
        for bad in ["", "file:", "stderr", "/var/log/a.jsonl"] {
            assert!(bad.parse::<SinkConfig>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn creates_a_private_file_and_refuses_a_shared_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        Sink::open(&SinkConfig::File(path.clone())).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = Sink::open(&SinkConfig::File(path)).await.unwrap_err();
        assert!(matches!(err, SinkError::Exposed { .. }), "{err}");
        let err = Sink::open(&SinkConfig::File(dir.path().to_path_buf()))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Open { .. }), "{err}");
    }
}
