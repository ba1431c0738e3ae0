//! The PostgreSQL backend, for several replicas sharing one database.
//!
//! Serialization: every append locks the single `audit_head` row with `SELECT ... FOR UPDATE`,
//! then inserts the record and moves the head in the same transaction. Appends from every
//! connection of every replica therefore queue on that row, and the chain cannot fork; `seq` is
//! also the primary key. A lock not granted within [`LOCK_TIMEOUT`] fails the append with
//! [`StoreError::Unavailable`] instead of holding a request open.
//!
//! Durability follows the server's `synchronous_commit` (default `on`: the commit is flushed to
//! the WAL before it returns). Operators must not turn it off for this database.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Postgres};

use super::breakglass::{self as rows, RequestFilter, TransitionWrite};
use super::chain::{
    NextLink, PageRow, SearchDialect, chain_head, only, records, search_query, stored_records,
};
use super::{AuditSearch, Store, StoreError, redact, url_password};
use crate::audit::{
    AuditRecord, CanonicalEvent, ChainHead, ChainKey, ChainStore, ChainStoreError,
    StoredAuditRecord,
};
use crate::breakglass::Request;

/// A PostgreSQL-backed [`Store`].
#[derive(Debug)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL and runs migrations.
    ///
    /// The URL may set connection parameters such as `?options=-c%20search_path%3Dname`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] if the URL is invalid, the server cannot be reached, or the
    /// migrations fail. The URL's password never appears in the error.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let secret = url_password(url);
        let secret = secret.as_deref();
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| StoreError::InvalidUrl(redact(err.to_string(), secret)))?
            .options([("lock_timeout", LOCK_TIMEOUT_SETTING)]);
        // sqlx pings every connection as it goes back to the pool, and closes it if the ping
        // fails. A second ping on the way out is only worth its round trip for a connection
        // that has sat idle (the server may have restarted meanwhile), not on every query of a
        // busy server.
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|err| StoreError::from_sqlx(err, secret))?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|err| StoreError::Migrate(redact(err.to_string(), secret)))?;
        Ok(Self { pool })
    }

    /// Appends `event` as the next link inside the caller's transaction, locking the head row
    /// first: every append of every replica queues there.
    async fn append_link(
        tx: &mut PgConnection,
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<NextLink, StoreError> {
        only(Self::append_links(tx, std::slice::from_ref(event), key).await?)
    }

    /// Appends `events` as the next links, in order, inside the caller's transaction: one head
    /// lock, one insert of every row (arrays unnested, so one statement whatever the batch's
    /// size) and one head move for the whole batch.
    async fn append_links(
        tx: &mut PgConnection,
        events: &[CanonicalEvent],
        key: &ChainKey,
    ) -> Result<Vec<NextLink>, StoreError> {
        let (head_seq, head_hash): (i64, Vec<u8>) = sqlx::query_as(LOCK_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        let links = NextLink::chain(head_seq, &head_hash, events, key)?;
        let Some(last) = links.last() else {
            return Ok(links);
        };
        let columns = Columns::of(&links, events);
        sqlx::query(INSERT_BATCH)
            .bind(columns.seq)
            .bind(columns.prev_hash)
            .bind(columns.hash)
            .bind(columns.canonical)
            .bind(columns.event)
            .bind(columns.time)
            .bind(columns.actor_issuer)
            .bind(columns.actor_subject)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
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
    async fn with_approvals(&self, rows: Vec<PgRow>) -> Result<Vec<Request>, StoreError> {
        let mut requests = rows
            .iter()
            .map(rows::request_from_row::<_, DateTime<Utc>>)
            .collect::<Result<Vec<_>, _>>()?;
        if requests.is_empty() {
            return Ok(requests);
        }
        let ids: Vec<String> = requests.iter().map(|r| r.id.clone()).collect();
        let approvals = rows::select_approvals::<Postgres>(&ids)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        let approvals = approvals
            .iter()
            .map(rows::approval_from_row::<_, DateTime<Utc>>)
            .collect::<Result<Vec<_>, _>>()?;
        rows::attach(&mut requests, approvals);
        Ok(requests)
    }
}

#[async_trait::async_trait]
impl ChainStore for PostgresStore {
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
        // Dropping `tx` before commit (an error below, or a cancelled future) rolls back.
        let mut tx = self.pool.begin().await.map_err(sqlx_err)?;
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
        let rows: Vec<PageRow<DateTime<Utc>>> = sqlx::query_as(SELECT_PAGE)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(stored_records(rows))
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
        let mut query = search_query(search, &SEARCH, |t: DateTime<Utc>| t);
        let rows: Vec<PageRow<DateTime<Utc>>> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        Ok(stored_records(rows))
    }

    async fn breakglass_request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let rows = rows::select_request::<Postgres>(id)
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
        let rows = rows::select_requests::<Postgres>(filter)
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
        let rows = rows::select_due::<Postgres, DateTime<Utc>>(now, limit)
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
        // Dropping `tx` before commit (an early return below, or a cancelled future) rolls back
        // the request, its approval and its audit record together.
        // INVARIANT: the request row is locked (by the UPDATE) before the audit head, and no
        // other statement takes them the other way round, so replicas cannot deadlock here.
        let mut tx = self.pool.begin().await.map_err(sqlx_err)?;
        let applied = match t.expected_version {
            None => rows::insert_request::<Postgres, DateTime<Utc>>(&t.request)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?
                .rows_affected(),
            Some(v) => rows::update_request::<Postgres, DateTime<Utc>>(&t.request, v)
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
            let inserted = rows::insert_approval::<Postgres, DateTime<Utc>>(&t.request.id, a)
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
        super::insert_outbox_postgres(&mut tx, write.outbox, write.now).await?;
        tx.commit().await.map_err(sqlx_err)?;
        Ok(Some(link.record(event)))
    }
}

/// The record's `target.role` (no index: a role search scans the records the other filters
/// leave).
const SEARCH: SearchDialect = SearchDialect {
    role: "(canonical::jsonb #>> '{target,role}')",
};

/// A batch's rows as column arrays, for [`INSERT_BATCH`].
struct Columns<'a> {
    seq: Vec<i64>,
    prev_hash: Vec<&'a [u8]>,
    hash: Vec<&'a [u8]>,
    canonical: Vec<&'a str>,
    event: Vec<&'a str>,
    time: Vec<DateTime<Utc>>,
    actor_issuer: Vec<Option<&'a str>>,
    actor_subject: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    /// The columns of `links` for `events`, in order.
    fn of(links: &'a [NextLink], events: &'a [CanonicalEvent]) -> Self {
        let n = links.len();
        let mut columns = Self {
            seq: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            canonical: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            actor_issuer: Vec::with_capacity(n),
            actor_subject: Vec::with_capacity(n),
        };
        for (link, event) in links.iter().zip(events) {
            let (issuer, subject) = NextLink::actor_columns(event);
            columns.seq.push(link.seq);
            columns.prev_hash.push(link.prev.as_bytes().as_slice());
            columns.hash.push(link.hash.as_bytes().as_slice());
            columns.canonical.push(event.text());
            columns.event.push(event.event().event.as_str());
            columns.time.push(event.event().time);
            columns.actor_issuer.push(issuer);
            columns.actor_subject.push(subject);
        }
        columns
    }
}

fn sqlx_err(err: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(err, None)
}

// SECURITY: every append locks the one head row first; this is what serializes replicas.
const LOCK_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE";

const SELECT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";

/// The rows of a batch, one array per column of [`PageRow`]'s order, unnested into rows.
const INSERT_BATCH: &str = "INSERT INTO audit_records \
     (seq, prev_hash, hash, canonical, event, event_time, actor_issuer, actor_subject) \
     SELECT * FROM UNNEST($1::int8[], $2::bytea[], $3::bytea[], $4::text[], $5::text[], \
     $6::timestamptz[], $7::text[], $8::text[])";

const MOVE_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3";

const SELECT_PAGE: &str = "SELECT seq, prev_hash, hash, canonical, event, event_time, \
     actor_issuer, actor_subject FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2";

/// How long an append waits for the head lock held by another append before failing.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// [`LOCK_TIMEOUT`] as a PostgreSQL setting.
const LOCK_TIMEOUT_SETTING: &str = "5s";

/// How long a caller waits for a free pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle this long is pinged before it is used again.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Pooled connections per process.
const MAX_CONNECTIONS: u32 = 8;
