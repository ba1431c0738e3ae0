//! The audit sink: a JSON-lines copy of every appended record, for a SIEM or log shipper.
//!
//! Each record becomes one line: `seq`, `prev_hash` and `hash` (lowercase hex), then the event's
//! fields (the serde form of [`AuditRecord`]). Lines are written whole, one at a time, under a
//! lock, so they never interleave with each other. The sink is a copy: the store is the record
//! of authority, and a failed sink write does not undo or fail an append.
//!
//! [`last_record`] reads a sink file's last record from the end, for the start-up check that the
//! store is not behind the file.
//!
//! With the stdout sink, send logs to stderr, or log lines and audit lines will mix on one
//! stream. A stalled reader on stdout or a stalled disk slows appends down (back pressure)
//! rather than dropping lines.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::AuditRecord;
use super::chain::ChainHash;

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

/// The last complete record of a sink file: what the store must not be behind.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq)]
pub struct SinkTail {
    /// The record's `seq`.
    pub seq: i64,
    /// The record's hash.
    pub hash: ChainHash,
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
    /// The sink file's last line is not an audit record.
    #[error("the last line of audit sink file `{path}` is not an audit record: {reason}")]
    LastLine {
        /// The sink file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
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
        self.write_all(std::slice::from_ref(record)).await
    }

    /// Writes `records` as one line each, in order, with one write and one flush.
    ///
    /// # Errors
    ///
    /// Returns [`SinkError`] if a record cannot be serialized (then nothing is written) or the
    /// lines cannot be written.
    pub async fn write_all(&self, records: &[AuditRecord]) -> Result<(), SinkError> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record)?;
            lines.push(b'\n');
        }
        let mut writer = self.writer.lock().await;
        match &mut *writer {
            Writer::File(file) => {
                file.write_all(&lines).await?;
                file.flush().await?;
            }
            Writer::Stdout(out) => {
                out.write_all(&lines).await?;
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

/// Reads the last complete line of the sink file at `path`, seeking from the end, so start-up
/// costs the same whatever the file's size. `None` when the file is missing or holds no complete
/// line; a trailing partial line (a write cut short by a crash) is skipped.
///
/// # Errors
///
/// [`SinkError::Open`] if the file cannot be read, [`SinkError::LastLine`] if the last line is
/// not a record or is longer than [`MAX_LINE`].
pub fn last_record(path: &Path) -> Result<Option<SinkTail>, SinkError> {
    let open_err = |source| SinkError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(open_err(err)),
    };
    let len = file.metadata().map_err(open_err)?.len();
    // `tail` holds the bytes from `pos` to the end of the file.
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        if let Some(line) = last_complete_line(&tail, pos == 0) {
            return parse_tail(path, line).map(Some);
        }
        if pos == 0 {
            return Ok(None);
        }
        if len - pos > MAX_LINE {
            return Err(SinkError::LastLine {
                path: path.to_path_buf(),
                reason: format!("longer than {MAX_LINE} bytes"),
            });
        }
        let step = TAIL_CHUNK.min(pos);
        pos -= step;
        let mut chunk = vec![0_u8; usize::try_from(step).unwrap_or(0)];
        file.seek(SeekFrom::Start(pos)).map_err(open_err)?;
        file.read_exact(&mut chunk).map_err(open_err)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
    }
}

/// The last line of `tail` that ends with a newline, once its start is known: after an earlier
/// newline, or at the start of the file (`at_start`).
fn last_complete_line(tail: &[u8], at_start: bool) -> Option<&[u8]> {
    let end = tail.iter().rposition(|b| *b == b'\n')?;
    let body = tail.get(..end)?;
    match body.iter().rposition(|b| *b == b'\n') {
        Some(start) => body.get(start + 1..),
        None if at_start => Some(body),
        None => None,
    }
}

fn parse_tail(path: &Path, line: &[u8]) -> Result<SinkTail, SinkError> {
    serde_json::from_slice(line).map_err(|err| SinkError::LastLine {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
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

/// The longest last line [`last_record`] reads.
pub const MAX_LINE: u64 = 1 << 20;

/// How much [`last_record`] reads at a time, from the end.
const TAIL_CHUNK: u64 = 8 * 1024;

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

    #[test]
    fn reads_the_last_complete_line_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        assert_eq!(last_record(&path).unwrap(), None);
        std::fs::write(&path, "").unwrap();
        assert_eq!(last_record(&path).unwrap(), None);
        let line = |seq: i64, pad: usize| {
            format!(
                "{{\"seq\":{seq},\"hash\":\"{}\",\"pad\":\"{}\"}}\n",
                format!("{seq:02x}").repeat(32),
                "x".repeat(pad)
            )
        };
        // Lines longer than a chunk, so the reader has to step back more than once.
        let text = format!("{}{}{}", line(1, 10), line(2, 20_000), line(3, 9_000));
        std::fs::write(&path, &text).unwrap();
        let tail = last_record(&path).unwrap().unwrap();
        assert_eq!(tail.seq, 3);
        assert_eq!(tail.hash, ChainHash::from_bytes([3; 32]));
        // A partial last line (a crash mid-write) is skipped.
        std::fs::write(&path, format!("{text}{{\"seq\":4,\"ha")).unwrap();
        assert_eq!(last_record(&path).unwrap().unwrap().seq, 3);
        std::fs::write(&path, line(7, 0)).unwrap();
        assert_eq!(last_record(&path).unwrap().unwrap().seq, 7);
        std::fs::write(&path, "{\"seq\":1").unwrap();
        assert_eq!(last_record(&path).unwrap(), None);
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(matches!(
            last_record(&path),
            Err(SinkError::LastLine { .. })
        ));
    }
}
