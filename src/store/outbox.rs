//! The notification outbox (`notify_outbox`) in both backends: inserting a transition's rows
//! inside its transaction, and the [`OutboxStore`] port the delivery worker uses.
//!
//! Two workers never hold the same row at once: a claim is one statement that leases the rows
//! it picks. SQLite runs it as a single write (one writer at a time, queued on the store's
//! in-process lock); PostgreSQL picks the rows `FOR UPDATE SKIP LOCKED`, so concurrent claims on
//! replicas take disjoint rows without waiting, and a row whose lease another claim just took
//! is re-checked and skipped. A lease that ran out (its worker died) makes the row due again:
//! delivery is at least once, and every attempt carries the row's delivery id.
//!
//! Only the worker holding a row's lease may reschedule it or give it up (compare-and-set on
//! `claim_token`); marking a row delivered needs no lease: it was delivered.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, QueryBuilder, Sqlite, SqliteConnection};

use super::{PostgresStore, SqliteStore, StoreError};
use crate::audit::chain::time_format;
use crate::notify::OutboxRow;
use crate::notify::port::{Backlog, Claim, ClaimedRow, OutboxError, OutboxStore};

/// Inserts a transition's outbox rows on SQLite, inside the caller's transaction (`conn` is the
/// transaction's connection: `&mut *tx`), due at once. `now` is the transition's time.
///
/// # Errors
///
/// [`StoreError`] if a row cannot be inserted (a repeated delivery id is
/// [`StoreError::Conflict`]); the caller's transaction must then roll back.
pub async fn insert_outbox_sqlite(
    conn: &mut SqliteConnection,
    rows: &[OutboxRow],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = time_format::format(&now);
    for row in rows {
        sqlx::query(
            "INSERT INTO notify_outbox (delivery_id, webhook, notice, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&row.delivery_id)
        .bind(&row.webhook)
        .bind(&row.notice)
        .bind(&at)
        .bind(&at)
        .execute(&mut *conn)
        .await
        .map_err(sqlx_err)?;
    }
    Ok(())
}

/// Inserts a transition's outbox rows on PostgreSQL, inside the caller's transaction (`conn` is
/// the transaction's connection: `&mut *tx`), due at once. `now` is the transition's time.
///
/// # Errors
///
/// [`StoreError`] if a row cannot be inserted (a repeated delivery id is
/// [`StoreError::Conflict`]); the caller's transaction must then roll back.
pub async fn insert_outbox_postgres(
    conn: &mut PgConnection,
    rows: &[OutboxRow],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for row in rows {
        sqlx::query(
            "INSERT INTO notify_outbox (delivery_id, webhook, notice, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&row.delivery_id)
        .bind(&row.webhook)
        .bind(&row.notice)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(sqlx_err)?;
    }
    Ok(())
}

// === impl OutboxStore for SqliteStore ===

#[async_trait::async_trait]
impl OutboxStore for SqliteStore {
    async fn claim_outbox(&self, claim: &Claim<'_>) -> Result<Vec<ClaimedRow>, OutboxError> {
        if claim.webhooks.is_empty() || claim.limit == 0 {
            return Ok(Vec::new());
        }
        let now = time_format::format(&claim.now);
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE notify_outbox SET attempts = attempts + 1, claimed_until = ",
        );
        q.push_bind(time_format::format(&claim.lease_until))
            .push(", claim_token = ")
            .push_bind(claim.token.to_owned())
            .push(" WHERE id IN (SELECT id FROM notify_outbox WHERE ")
            .push(PENDING)
            .push(" AND next_attempt_at <= ")
            .push_bind(now.clone())
            .push(" AND (claimed_until IS NULL OR claimed_until <= ")
            .push_bind(now)
            .push(") AND webhook IN (");
        let mut list = q.separated(", ");
        for w in claim.webhooks {
            list.push_bind(w.clone());
        }
        q.push(") ORDER BY next_attempt_at, id LIMIT ")
            .push_bind(i64::from(claim.limit))
            .push(") RETURNING id, delivery_id, webhook, notice, attempts, created_at");
        // INVARIANT: one statement: SQLite takes the write lock when it starts, so the rows it
        // reads as due cannot be leased by another connection before it leases them.
        let _writer = self.write_lock.lock().await;
        let rows: Vec<(i64, String, String, String, i64, String)> = q
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(outbox_err)?;
        rows.into_iter()
            .map(|(id, delivery_id, webhook, notice, attempts, created_at)| {
                let created_at = time_format::parse(&created_at).ok_or_else(|| {
                    OutboxError::Corrupt(format!("outbox row {id} has an unreadable created_at"))
                })?;
                claimed(id, delivery_id, webhook, notice, attempts, created_at)
            })
            .collect()
    }

    async fn mark_outbox_delivered(&self, id: i64, at: DateTime<Utc>) -> Result<(), OutboxError> {
        let _writer = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE notify_outbox SET delivered_at = ?, claimed_until = NULL, claim_token = NULL \
             WHERE id = ? AND delivered_at IS NULL",
        )
        .bind(time_format::format(&at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(outbox_err)?;
        Ok(())
    }

    async fn reschedule_outbox(
        &self,
        id: i64,
        token: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, OutboxError> {
        let _writer = self.write_lock.lock().await;
        let done = sqlx::query(&Release::Retry.sql("?", "?", "?", "?"))
            .bind(time_format::format(&next_attempt_at))
            .bind(error)
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(outbox_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn give_up_outbox(
        &self,
        id: i64,
        token: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, OutboxError> {
        let _writer = self.write_lock.lock().await;
        let done = sqlx::query(&Release::GiveUp.sql("?", "?", "?", "?"))
            .bind(time_format::format(&at))
            .bind(error)
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(outbox_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn give_up_unconfigured_outbox(
        &self,
        webhooks: &[String],
        created_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<u64, OutboxError> {
        if webhooks.is_empty() {
            return Ok(0);
        }
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE notify_outbox SET gave_up_at = ");
        q.push_bind(time_format::format(&at))
            .push(", last_error = ")
            .push_bind(UNCONFIGURED)
            .push(", claimed_until = NULL, claim_token = NULL WHERE ")
            .push(PENDING)
            .push(" AND created_at < ")
            .push_bind(time_format::format(&created_before))
            .push(" AND webhook NOT IN (");
        let mut list = q.separated(", ");
        for w in webhooks {
            list.push_bind(w.clone());
        }
        q.push(")");
        let _writer = self.write_lock.lock().await;
        let done = q.build().execute(&self.pool).await.map_err(outbox_err)?;
        Ok(done.rows_affected())
    }

    async fn outbox_backlog(&self) -> Result<Backlog, OutboxError> {
        let (pending, oldest): (i64, Option<String>) = sqlx::query_as(BACKLOG)
            .fetch_one(&self.pool)
            .await
            .map_err(outbox_err)?;
        let oldest = match oldest {
            Some(text) => Some(time_format::parse(&text).ok_or_else(|| {
                OutboxError::Corrupt("an outbox row has an unreadable created_at".to_owned())
            })?),
            None => None,
        };
        Ok(Backlog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest,
        })
    }
}

// === impl OutboxStore for PostgresStore ===

#[async_trait::async_trait]
impl OutboxStore for PostgresStore {
    async fn claim_outbox(&self, claim: &Claim<'_>) -> Result<Vec<ClaimedRow>, OutboxError> {
        if claim.webhooks.is_empty() || claim.limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, String, String, String, i32, DateTime<Utc>)> =
            sqlx::query_as(CLAIM_POSTGRES)
                .bind(claim.lease_until)
                .bind(claim.token)
                .bind(claim.now)
                .bind(claim.webhooks)
                .bind(i64::from(claim.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(outbox_err)?;
        rows.into_iter()
            .map(|(id, delivery_id, webhook, notice, attempts, created_at)| {
                claimed(
                    id,
                    delivery_id,
                    webhook,
                    notice,
                    i64::from(attempts),
                    created_at,
                )
            })
            .collect()
    }

    async fn mark_outbox_delivered(&self, id: i64, at: DateTime<Utc>) -> Result<(), OutboxError> {
        sqlx::query(
            "UPDATE notify_outbox SET delivered_at = $1, claimed_until = NULL, claim_token = NULL \
             WHERE id = $2 AND delivered_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(outbox_err)?;
        Ok(())
    }

    async fn reschedule_outbox(
        &self,
        id: i64,
        token: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, OutboxError> {
        let done = sqlx::query(&Release::Retry.sql("$1", "$2", "$3", "$4"))
            .bind(next_attempt_at)
            .bind(error)
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(outbox_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn give_up_outbox(
        &self,
        id: i64,
        token: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, OutboxError> {
        let done = sqlx::query(&Release::GiveUp.sql("$1", "$2", "$3", "$4"))
            .bind(at)
            .bind(error)
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(outbox_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn give_up_unconfigured_outbox(
        &self,
        webhooks: &[String],
        created_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<u64, OutboxError> {
        if webhooks.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE notify_outbox SET gave_up_at = $1, last_error = $2, \
             claimed_until = NULL, claim_token = NULL \
             WHERE delivered_at IS NULL AND gave_up_at IS NULL AND created_at < $3 \
             AND NOT (webhook = ANY($4))",
        )
        .bind(at)
        .bind(UNCONFIGURED)
        .bind(created_before)
        .bind(webhooks)
        .execute(&self.pool)
        .await
        .map_err(outbox_err)?;
        Ok(done.rows_affected())
    }

    async fn outbox_backlog(&self) -> Result<Backlog, OutboxError> {
        let (pending, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(BACKLOG)
            .fetch_one(&self.pool)
            .await
            .map_err(outbox_err)?;
        Ok(Backlog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest,
        })
    }
}

/// How a worker lets go of a row it holds: due again at a time, or given up at a time.
#[derive(Clone, Copy)]
enum Release {
    Retry,
    GiveUp,
}

impl Release {
    /// The `UPDATE` that sets this release's time and the error and drops the claim, only while
    /// `claim_token` is still the caller's; the four placeholders bind the time, the error, the
    /// row id and the token, in the backend's syntax.
    fn sql(self, time: &str, error: &str, id: &str, token: &str) -> String {
        // SECURITY: only fixed text is formatted in; every value is bound.
        let column = match self {
            Release::Retry => "next_attempt_at",
            Release::GiveUp => "gave_up_at",
        };
        format!(
            "UPDATE notify_outbox SET {column} = {time}, last_error = {error}, \
             claimed_until = NULL, claim_token = NULL \
             WHERE id = {id} AND claim_token = {token} AND delivered_at IS NULL \
             AND gave_up_at IS NULL"
        )
    }
}

fn claimed(
    id: i64,
    delivery_id: String,
    webhook: String,
    notice: String,
    attempts: i64,
    created_at: DateTime<Utc>,
) -> Result<ClaimedRow, OutboxError> {
    let attempts = u32::try_from(attempts)
        .map_err(|_| OutboxError::Corrupt(format!("outbox row {id} has `{attempts}` attempts")))?;
    Ok(ClaimedRow {
        id,
        delivery_id,
        webhook,
        notice,
        attempts,
        created_at,
    })
}

fn sqlx_err(err: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(err, None)
}

fn outbox_err(err: sqlx::Error) -> OutboxError {
    sqlx_err(err).into()
}

/// A row neither delivered nor given up (the due index's condition).
const PENDING: &str = "delivered_at IS NULL AND gave_up_at IS NULL";

// SECURITY: `FOR UPDATE SKIP LOCKED` in a CTE (evaluated once): concurrent claims lock disjoint
// rows, and a row leased by a claim that committed meanwhile is re-checked and left out.
const CLAIM_POSTGRES: &str = "WITH due AS ( \
        SELECT id FROM notify_outbox \
        WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= $3 \
          AND (claimed_until IS NULL OR claimed_until <= $3) AND webhook = ANY($4) \
        ORDER BY next_attempt_at, id LIMIT $5 \
        FOR UPDATE SKIP LOCKED) \
     UPDATE notify_outbox o SET attempts = o.attempts + 1, claimed_until = $1, claim_token = $2 \
     FROM due WHERE o.id = due.id \
     RETURNING o.id, o.delivery_id, o.webhook, o.notice, o.attempts, o.created_at";

const BACKLOG: &str = "SELECT COUNT(*), MIN(created_at) FROM notify_outbox \
     WHERE delivered_at IS NULL AND gave_up_at IS NULL";

/// `last_error` of a row whose webhook left the configuration.
const UNCONFIGURED: &str = "the webhook is no longer configured";
