//! The SQLite backend: one database file in WAL mode with fully synchronous commits.
//!
//! Durability: `synchronous = FULL` syncs the WAL on every commit, so a committed audit record
//! survives power loss, not only a crash of this process.
//!
//! Serialization: appends from this process queue on an in-process lock (SQLite has one writer
//! at a time anyway, and this avoids busy-waiting), then each takes the database write lock up
//! front with `BEGIN IMMEDIATE`, so a second process on the same file cannot read the same head.
//! A writer that cannot get the lock within [`BUSY_TIMEOUT`] fails with
//! [`StoreError::Unavailable`] instead of waiting forever.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::breakglass::{self as rows, RequestFilter, TransitionWrite};
use super::chain::{
    NextLink, PageRow, SearchDialect, chain_head, only, records, search_query, stored_records,
};
use super::{AuditSearch, Store, StoreError};
use crate::audit::{
    AuditRecord, CanonicalEvent, ChainHead, ChainKey, ChainStore, ChainStoreError,
    StoredAuditRecord,
};
use crate::breakglass::Request;

/// A SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// Writers of this process queue here (audit appends, outbox updates).
    pub(super) write_lock: tokio::sync::Mutex<()>,
    /// The database file, which `audit verify` reads directly; `None` in memory.
    pub(super) file: Option<std::path::PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by a `sqlite:` URL and runs migrations.
    ///
    /// `?mode=ro` opens an existing file read-only and skips migrations; appends then fail with
    /// [`StoreError::Unavailable`]. `sqlite::memory:` is a private in-memory database for tests.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the URL is invalid, the file cannot be opened, or the
    /// migrations fail.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let params = UrlParams::parse(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::InvalidUrl(err.to_string()))?
            .create_if_missing(!params.read_only)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let file = (!params.in_memory).then(|| options.get_filename().to_path_buf());
        // No ping before each acquire: the database is a file in this process, so a pooled
        // connection cannot have been cut like a network one, and the ping is a round trip to
        // the connection's worker thread on every query and every audit commit.
        let mut pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false);
        if params.in_memory {
            // INVARIANT: an in-memory database lives as long as its one connection, so that
            // connection must never be closed while the store is in use.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|err| StoreError::from_sqlx(err, None))?;
        if !params.read_only {
            sqlx::migrate!("migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|err| StoreError::Migrate(err.to_string()))?;
        }
        Ok(Self {
            file,
            pool,
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Appends `event` as the next link inside the caller's write transaction (which holds the
    /// database write lock since `BEGIN IMMEDIATE`).
    async fn append_link(
        tx: &mut SqliteConnection,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<NextLink, StoreError> {
        only(Self::append_links(tx, std::slice::from_ref(event), key).await?)
    }

    /// Appends `events` as the next links, in order, inside the caller's write transaction:
    /// one head read and one head move for the whole batch.
    async fn append_links(
        tx: &mut SqliteConnection,
        events: &[CanonicalEvent],
        key: &ChainKey,
    ) -> Result<Vec<NextLink>, StoreError> {
        let (head_seq, head_hash): (i64, Vec<u8>) = sqlx::query_as(SELECT_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        let links = NextLink::chain(head_seq, &head_hash, events, key)?;
        let times: Vec<String> = events.iter().map(CanonicalEvent::time_text).collect();
        let rows: Vec<_> = links.iter().zip(events).zip(&times).collect();
        // A few statements of many rows rather than a round trip to the connection's worker
        // thread per row; chunks of a fixed size keep the prepared statements few.
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = sqlx::QueryBuilder::<Sqlite>::new(INSERT_ROWS);
            insert.push_values(chunk, |mut row, ((link, event), time)| {
                let (issuer, subject) = NextLink::actor_columns(event);
                row.push_bind(link.seq)
                    .push_bind(link.prev.as_bytes().as_slice())
                    .push_bind(link.hash.as_bytes().as_slice())
                    .push_bind(event.text())
                    .push_bind(event.event().event.as_str())
                    .push_bind(time.as_str())
                    .push_bind(issuer)
                    .push_bind(subject);
            });
            insert.build().execute(&mut *tx).await.map_err(sqlx_err)?;
        }
        let Some(last) = links.last() else {
            return Ok(links);
        };
        let moved = sqlx::query(MOVE_HEAD)
            .bind(last.seq)
            .bind(last.hash.as_bytes().as_slice())
            .bind(head_seq)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?
            .rows_affected();
        if moved != 1 {
            return Err(StoreError::Conflict(
                "audit head moved during an append".to_owned(),
            ));
        }
        Ok(links)
    }

    /// The requests `rows` hold, with their approvals.
    async fn with_approvals(&self, rows: Vec<SqliteRow>) -> Result<Vec<Request>, StoreError> {
        let mut requests = rows
            .iter()
            .map(rows::request_from_row::<_, String>)
            .collect::<Result<Vec<_>, _>>()?;
        if requests.is_empty() {
            return Ok(requests);
        }
        let ids: Vec<String> = requests.iter().map(|r| r.id.clone()).collect();
        let approvals = rows::select_approvals::<Sqlite>(&ids)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        let approvals = approvals
            .iter()
            .map(rows::approval_from_row::<_, String>)
            .collect::<Result<Vec<_>, _>>()?;
        rows::attach(&mut requests, approvals);
        Ok(requests)
    }
}

#[async_trait::async_trait]
impl ChainStore for SqliteStore {
    async fn append_audit(
        &self,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<AuditRecord, ChainStoreError> {
        crate::audit::append_as_batch(self, event, key).await
    }

    async fn append_batch(
        &self,
        events: &[CanonicalEvent],
        key: &ChainKey,
    ) -> Result<Vec<AuditRecord>, ChainStoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = self.write_lock.lock().await;
        // Dropping `tx` before commit (an error below, or a cancelled future) rolls back.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlx_err)?;
        let links = Self::append_links(&mut tx, events, key).await?;
        tx.commit().await.map_err(sqlx_err)?;
        Ok(records(&links, events))
    }

    async fn audit_head(&self) -> Result<ChainHead, ChainStoreError> {
        let (seq, hash): (i64, Vec<u8>) = sqlx::query_as(SELECT_HEAD)
            .fetch_one(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(chain_head(seq, &hash)?)
    }

    async fn audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditRecord>, ChainStoreError> {
        let rows: Vec<PageRow<String>> = sqlx::query_as(SELECT_PAGE)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(stored_records(rows))
    }

    async fn audit_scan(
        &self,
        after_seq: i64,
        upto: i64,
        out: crate::audit::RecordSender,
    ) -> Result<(), ChainStoreError> {
        let file = self.file.as_deref();
        Ok(super::scan::sqlite(&self.pool, file, after_seq, upto, out).await?)
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(())
    }

    async fn search_audit(
        &self,
        search: &AuditSearch,
    ) -> Result<Vec<StoredAuditRecord>, StoreError> {
        let mut query = search_query(search, &SEARCH, |t: chrono::DateTime<chrono::Utc>| {
            crate::audit::chain::time_format::format(&t)
        });
        let rows: Vec<PageRow<String>> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(stored_records(rows))
    }

    async fn breakglass_request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let rows = rows::select_request::<Sqlite>(id)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(self.with_approvals(rows).await?.into_iter().next())
    }

    async fn breakglass_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<Request>, StoreError> {
        let rows = rows::select_requests::<Sqlite>(filter)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        self.with_approvals(rows).await
    }

    async fn breakglass_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Request>, StoreError> {
        let rows = rows::select_due::<Sqlite, String>(now, limit)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        self.with_approvals(rows).await
    }

    async fn commit_transition(
        &self,
        write: &TransitionWrite<'_>,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let t = write.transition;
        let _writer = self.write_lock.lock().await;
        // Dropping `tx` before commit (an early return below, or a cancelled future) rolls back
        // the request, its approval and its audit record together.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlx_err)?;
        let applied = match t.expected_version {
            None => rows::insert_request::<Sqlite, String>(&t.request)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?
                .rows_affected(),
            Some(v) => rows::update_request::<Sqlite, String>(&t.request, v)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?
                .rows_affected(),
        };
        if applied != 1 {
            return Ok(None);
        }
        if let Some(a) = &t.approval {
            let inserted = rows::insert_approval::<Sqlite, String>(&t.request.id, a)
                .build()
                .execute(&mut *tx)
                .await;
            match inserted.map_err(sqlx_err) {
                Ok(_) => {}
                // The person's approval is there already: someone else's read was stale.
                Err(StoreError::Conflict(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let link = Self::append_link(&mut tx, event, key).await?;
        super::insert_outbox_sqlite(&mut tx, write.outbox, write.now).await?;
        tx.commit().await.map_err(sqlx_err)?;
        Ok(Some(link.record(event)))
    }
}

/// The record's `target.role` (no index: a role search scans the records the other filters
/// leave).
const SEARCH: SearchDialect = SearchDialect {
    role: "json_extract(canonical, '$.target.role')",
};

/// The parts of a `sqlite:` URL this module acts on itself.
struct UrlParams {
    in_memory: bool,
    read_only: bool,
}

impl UrlParams {
    fn parse(url: &str) -> Self {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mode = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "mode")
            .map(|(_, v)| v.into_owned());
        Self {
            in_memory: database == ":memory:" || mode.as_deref() == Some("memory"),
            read_only: mode.as_deref() == Some("ro"),
        }
    }
}

fn sqlx_err(err: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(err, None)
}

const SELECT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";

/// An insert of rows in [`PageRow`]'s column order; the `VALUES` follow.
const INSERT_ROWS: &str = "INSERT INTO audit_records \
     (seq, prev_hash, hash, canonical, event, event_time, actor_issuer, actor_subject) ";

/// Rows per insert statement of a batch (8 columns each: far below SQLite's bound parameters).
const INSERT_CHUNK: usize = 16;

const MOVE_HEAD: &str = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1 AND seq = ?";

const SELECT_PAGE: &str = "SELECT seq, prev_hash, hash, canonical, event, event_time, \
     actor_issuer, actor_subject FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?";

/// How long a writer waits for another connection's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a free pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pooled connections: one writer at a time plus concurrent readers.
const MAX_CONNECTIONS: u32 = 4;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::{AuditEvent, Verification, verify_store};

    #[test]
    fn reads_mode_and_memory_from_the_url() {
        let p = UrlParams::parse("sqlite:///var/lib/latchkey.db?mode=ro");
        assert!(p.read_only && !p.in_memory);
        let p = UrlParams::parse("sqlite::memory:");
        assert!(p.in_memory && !p.read_only);
        let p = UrlParams::parse("sqlite:latchkey.db");
        assert!(!p.in_memory && !p.read_only);
    }

    #[tokio::test]
    async fn an_in_memory_store_appends_and_verifies() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let key = ChainKey::Sha256;
        for n in 0..3 {
            let event = CanonicalEvent::new(AuditEvent {
                event: crate::audit::EventKind::ServerStarted,
                time: chrono::DateTime::from_timestamp(1_800_000_000 + n, 0).unwrap(),
                actor: None,
                target: json!(null),
                decision: None,
                details: json!({"n": n}),
                client_addr: None,
                user_agent: None,
                request_id: None,
            })
            .unwrap();
            let record = store.append_audit(&event, &key).await.unwrap();
            assert_eq!(record.seq, n + 1);
        }
        store.ping().await.unwrap();
        let verification = verify_store(&store, &key, 2).await.unwrap();
        assert!(matches!(
            verification,
            Verification::Intact { count: 3, .. }
        ));
    }
}
