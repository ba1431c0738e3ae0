//! Durable state behind one trait: the audit chain, break-glass requests and their approvals,
//! the notification outbox their changes fill, and session revocations ([`revocation`]).
//!
//! Two backends implement [`Store`] with sqlx: SQLite (the default: one file, WAL, fully
//! synchronous commits) and PostgreSQL (for several replicas). [`connect`] picks one by URL and
//! runs that backend's migrations.
//!
//! The store depends on the audit module, never the reverse: each backend implements the audit
//! module's port [`ChainStore`], with the row logic both share in [`chain`]. The audit append is
//! the one operation that must never fork the chain: each backend serializes appends across
//! connections and processes, reads the head, inserts the record and moves the head in a single
//! transaction. Each backend also implements the notification module's port [`OutboxStore`]
//! ([`outbox`]: leased claims, so replicas never deliver one row at once). Errors never carry
//! the password from a connection URL.

pub mod breakglass;
pub mod chain;
pub mod outbox;
pub mod postgres;
pub mod revocation;
mod scan;
pub mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::{
    AuditRecord, CanonicalEvent, ChainKey, ChainStore, ChainStoreError, EventKind, LinkedWrite,
    StoredAuditRecord,
};
use crate::breakglass::Request;
use crate::notify::port::{OutboxError, OutboxStore};

pub use self::breakglass::{RequestFilter, TransitionWrite};
pub use self::outbox::{insert_outbox_postgres, insert_outbox_sqlite};
pub use self::postgres::PostgresStore;
pub use self::revocation::{Due, RevocationRow, RevocationStore};
pub use self::sqlite::SqliteStore;

/// The persistence port. Object safe: the server holds an `Arc<dyn Store>`, and hands the
/// audit side the same object as an `Arc<dyn ChainStore>` and the notification worker as an
/// `Arc<dyn OutboxStore>`. Session revocations are its [`RevocationStore`] side.
#[async_trait::async_trait]
pub trait Store: ChainStore + OutboxStore + RevocationStore {
    /// The backend's name: `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers, for `/readyz`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError::Unavailable`] if it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Up to `search.limit` stored records after `search.after_seq` that match every filter of
    /// `search`, in `seq` order, exactly as stored.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the store cannot be read.
    async fn search_audit(
        &self,
        search: &AuditSearch,
    ) -> Result<Vec<StoredAuditRecord>, StoreError>;

    /// The break-glass request `id` with its approvals, if there is one.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the store cannot be read or a row is damaged.
    async fn breakglass_request(&self, id: &str) -> Result<Option<Request>, StoreError>;

    /// The break-glass requests `filter` selects, newest first, with their approvals.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the store cannot be read or a row is damaged.
    async fn breakglass_requests(&self, filter: &RequestFilter)
    -> Result<Vec<Request>, StoreError>;

    /// Up to `limit` requests whose deadline has passed at `now` (pending past their TTL,
    /// active past their window), for the expiry sweeper.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the store cannot be read or a row is damaged.
    async fn breakglass_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Request>, StoreError>;

    /// Commits a break-glass transition in ONE transaction: the request inserted, or updated
    /// only if still at the version the transition expects (compare-and-swap); its approval;
    /// `event` appended to the audit chain (serialized with every other append); the outbox
    /// rows. `Ok(None)`: the compare-and-swap missed and nothing was written.
    ///
    /// # Errors
    ///
    /// Any error means nothing was committed.
    async fn commit_transition(
        &self,
        write: &TransitionWrite<'_>,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<Option<AuditRecord>, StoreError>;
}

/// A transition for [`Store::commit_transition`], as the audit side's [`LinkedWrite`]: what
/// [`crate::audit::Recorder::append_with`] commits with its record.
pub struct TransitionCommit<'a> {
    /// The store to commit in.
    pub store: &'a dyn Store,
    /// What to commit.
    pub write: TransitionWrite<'a>,
}

#[async_trait::async_trait]
impl LinkedWrite for TransitionCommit<'_> {
    async fn commit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<Option<AuditRecord>, ChainStoreError> {
        Ok(self
            .store
            .commit_transition(&self.write, event, key)
            .await?)
    }
}

/// Which audit records to read: every filter that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditSearch {
    /// Only records with a greater `seq`.
    pub after_seq: i64,
    /// At most this many records.
    pub limit: u32,
    /// The actor: `issuer#subject`, or a subject alone (of any issuer).
    pub actor: Option<ActorFilter>,
    /// The event kind.
    pub event: Option<EventKind>,
    /// The role named in the record's target (`target.role`).
    pub role: Option<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events before this time.
    pub until: Option<DateTime<Utc>>,
}

/// An actor to search for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorFilter {
    /// The issuer, when the filter names one.
    pub issuer: Option<String>,
    /// The subject.
    pub subject: String,
}

// === impl ActorFilter ===

impl ActorFilter {
    /// Reads a principal id `issuer#subject` (split at the first `#`: an issuer URL has no
    /// fragment), or a subject alone.
    pub fn parse(text: &str) -> Self {
        match text.split_once('#') {
            Some((issuer, subject)) => Self {
                issuer: Some(issuer.to_owned()),
                subject: subject.to_owned(),
            },
            None => Self {
                issuer: None,
                subject: text.to_owned(),
            },
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write conflicted with another (a unique key, a changed head).
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// Stored data is not what the schema promises.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The URL names no supported backend or cannot be parsed.
    #[error("invalid store url: {0}")]
    InvalidUrl(String),
    /// The schema migrations failed.
    #[error("store migration failed: {0}")]
    Migrate(String),
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// The database refused a statement for a reason other than availability.
    #[error("store query failed: {0}")]
    Query(String),
    /// The database cannot be reached or cannot accept writes right now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Connects to the store named by `url` and applies its migrations.
///
/// `sqlite://PATH`, `sqlite:PATH` (created if missing) and `sqlite::memory:` select SQLite;
/// `postgres://...` and `postgresql://...` select PostgreSQL. A SQLite URL with `?mode=ro` opens
/// the file read-only and skips migrations (for `audit verify` beside a running server).
///
/// # Errors
///
/// Returns [`StoreError`] if the URL is invalid, the database cannot be reached, or the
/// migrations fail.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::InvalidUrl(
            "expected a `sqlite:` or `postgres://` url".to_owned(),
        ))
    }
}

// === impl StoreError ===

impl StoreError {
    /// Classifies a sqlx error. Messages from sqlx and the server never contain the connection
    /// password, but `redact` removes `secret` anyway when one is given.
    pub(crate) fn from_sqlx(err: sqlx::Error, secret: Option<&str>) -> Self {
        let text = redact(err.to_string(), secret);
        match &err {
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return Self::Conflict(text);
                }
                let dialect = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    Dialect::Sqlite
                } else {
                    Dialect::Postgres
                };
                match classify_database_code(dialect, db.code().as_deref()) {
                    DbClass::Unavailable => Self::Unavailable(text),
                    DbClass::Corrupt => Self::Corrupt(text),
                    DbClass::Other => Self::Query(text),
                }
            }
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::Corrupt(text),
            sqlx::Error::Configuration(_) => Self::InvalidUrl(text),
            sqlx::Error::Migrate(_) => Self::Migrate(text),
            // Io, Tls, Protocol, PoolTimedOut, PoolClosed, WorkerCrashed and anything newer.
            _ => Self::Unavailable(text),
        }
    }
}

impl From<StoreError> for ChainStoreError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(text) => Self::Conflict(text),
            StoreError::Corrupt(text) => Self::Corrupt(text),
            StoreError::Unavailable(text) => Self::Unavailable(text),
            other @ (StoreError::InvalidUrl(_)
            | StoreError::Migrate(_)
            | StoreError::NotFound
            | StoreError::Query(_)) => Self::Failed(other.to_string()),
        }
    }
}

impl From<StoreError> for OutboxError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Corrupt(text) => Self::Corrupt(text),
            other @ (StoreError::Conflict(_)
            | StoreError::InvalidUrl(_)
            | StoreError::Migrate(_)
            | StoreError::NotFound
            | StoreError::Query(_)
            | StoreError::Unavailable(_)) => Self::Unavailable(other.to_string()),
        }
    }
}

#[derive(Clone, Copy)]
enum Dialect {
    Postgres,
    Sqlite,
}

enum DbClass {
    Corrupt,
    Other,
    Unavailable,
}

/// Sorts a database error code: SQLite's numeric (extended) result codes and PostgreSQL's
/// SQLSTATE strings.
fn classify_database_code(dialect: Dialect, code: Option<&str>) -> DbClass {
    let Some(code) = code else {
        return DbClass::Other;
    };
    if let Dialect::Sqlite = dialect {
        let Ok(sqlite) = code.parse::<i32>() else {
            return DbClass::Other;
        };
        // The primary result code is the low byte of an extended code.
        return match sqlite & 0xff {
            // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
            5 | 6 | 8 | 10 | 13 | 14 | 15 => DbClass::Unavailable,
            // CORRUPT, NOTADB
            11 | 26 => DbClass::Corrupt,
            _ => DbClass::Other,
        };
    }
    match code.get(..2) {
        // connection exception, insufficient resources, operator intervention, system error
        Some("08" | "53" | "57" | "58") => DbClass::Unavailable,
        // data corrupted, index corrupted
        Some("XX") if code != "XX000" => DbClass::Corrupt,
        // serialization failure, deadlock, lock not available, read-only transaction
        _ if matches!(code, "40001" | "40P01" | "55P03" | "25006") => DbClass::Unavailable,
        _ => DbClass::Other,
    }
}

/// Replaces every occurrence of `secret` in `text`.
pub(crate) fn redact(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() && text.contains(secret) => {
            text.replace(secret, "<redacted>")
        }
        _ => text,
    }
}

/// The password in a connection URL, if any, percent-decoded, for [`redact`].
pub(crate) fn url_password(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let raw = parsed.password()?.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let escaped = raw
            .get(i + 1..i + 3)
            .filter(|_| b == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_url_password() {
        let pw = url_password("postgres://u:s%40c+ret@h/db").unwrap();
        assert_eq!(pw, "s@c+ret");
        assert_eq!(
            redact("auth failed for s@c+ret".into(), Some(&pw)),
            "auth failed for <redacted>"
        );
        assert_eq!(url_password("postgres://u@h/db"), None);
    }

    #[test]
    fn classifies_codes() {
        assert!(matches!(
            classify_database_code(Dialect::Sqlite, Some("5")),
            DbClass::Unavailable
        ));
        assert!(matches!(
            classify_database_code(Dialect::Sqlite, Some("1032")),
            DbClass::Unavailable
        ));
        assert!(matches!(
            classify_database_code(Dialect::Sqlite, Some("11")),
            DbClass::Corrupt
        ));
        assert!(matches!(
            classify_database_code(Dialect::Postgres, Some("57P01")),
            DbClass::Unavailable
        ));
        assert!(matches!(
            classify_database_code(Dialect::Postgres, Some("08006")),
            DbClass::Unavailable
        ));
        assert!(matches!(
            classify_database_code(Dialect::Postgres, Some("XX001")),
            DbClass::Corrupt
        ));
        assert!(matches!(
            classify_database_code(Dialect::Postgres, Some("42P01")),
            DbClass::Other
        ));
        assert!(matches!(
            classify_database_code(Dialect::Postgres, None),
            DbClass::Other
        ));
    }

    #[tokio::test]
    async fn refuses_unknown_schemes_without_echoing_the_url() {
        let err = connect("mysql://root:hunter2@localhost/db")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::InvalidUrl(_)));
        assert!(!err.to_string().contains("hunter2"));
    }
}
