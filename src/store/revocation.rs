//! Session revocations in the store: the [`RevocationStore`] port and its SQL for both backends.
//!
//! One row per (revocation, role), written as the durable intent before IAM is asked for
//! anything, so a crash between steps leaves a row the sweeper retries. A row's next step is due
//! at `next_attempt_at`: putting the deny policy while `applied_at` is unset, removing it once
//! applied (`next_attempt_at` is then `remove_after`, or a retry after a failed removal). A row
//! with `removed_at` is closed.
//!
//! INVARIANT: a worker acts on a row only while it holds the row's lease (`claimed_until` in the
//! future), taken by [`RevocationStore::claim_revocations`] with a compare-and-set: one
//! `UPDATE ... WHERE id = ? AND <still due> AND <lease free> RETURNING ...` that changes one row
//! or none, so two replicas never act on one row at once. Writing the intents takes the lease
//! for the writer.

use chrono::{DateTime, Utc};

use super::{PostgresStore, SqliteStore, StoreError};
use crate::audit::chain::time_format;

/// One (revocation, role) row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRow {
    /// The row's own id.
    pub id: String,
    /// The revocation it belongs to (shared by its rows, one per role).
    pub revocation_id: String,
    /// The principal's issuer.
    pub principal_issuer: String,
    /// The principal's subject.
    pub principal_subject: String,
    /// `*-<principal hash>`: the source identities the policy denies (and the bare hash).
    pub source_identity_pattern: String,
    /// The catalog's name for the role at the time.
    pub role: String,
    /// The role's ARN.
    pub role_arn: String,
    /// The inline policy's name.
    pub policy_name: String,
    /// The policy document, exactly as put (again on every retry).
    pub policy_document: String,
    /// Sessions issued before this time are denied.
    pub issued_before: DateTime<Utc>,
    /// `request:<id>` or `offboarding`.
    pub cause: String,
    /// Who revoked: `issuer#subject`, or `operator:<name>`.
    pub actor: String,
    /// Why, as given.
    pub reason: Option<String>,
    /// When the intent was written.
    pub created_at: DateTime<Utc>,
    /// When the policy was put (and the put audited).
    pub applied_at: Option<DateTime<Utc>>,
    /// When no session the policy denies can still be alive.
    pub remove_after: Option<DateTime<Utc>>,
    /// When the row was closed: the policy removed, or the revocation given up.
    pub removed_at: Option<DateTime<Utc>>,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When the next step is due.
    pub next_attempt_at: DateTime<Utc>,
    /// A worker's lease on the row.
    pub claimed_until: Option<DateTime<Utc>>,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

/// Which rows a sweeper claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Rows whose policy is not applied yet.
    Apply,
    /// Applied rows whose policy may now be removed.
    Remove,
}

/// The store's side of session revocation. Both backends implement it; the broker reaches it
/// through [`super::Store`].
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Writes the rows of one revocation in one transaction, each leased to the writer until
    /// its `claimed_until`, with no attempt made yet.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; nothing was written.
    async fn record_revocation_intents(&self, rows: &[RevocationRow]) -> Result<(), StoreError>;

    /// Claims up to `limit` open rows of `due` whose next step is due at `now` and whose lease
    /// is free, each until `lease_until`, and returns them.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read or written.
    async fn claim_revocations(
        &self,
        due: Due,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError>;

    /// The policy is on the role since `applied_at`; removal is due at `remove_after`. Releases
    /// the lease.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; [`StoreError::NotFound`] for an unknown or closed row.
    async fn mark_revocation_applied(
        &self,
        id: &str,
        applied_at: DateTime<Utc>,
        remove_after: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// A step failed with `error`; the next attempt is due at `next_attempt_at`. Releases the
    /// lease.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; [`StoreError::NotFound`] for an unknown or closed row.
    async fn mark_revocation_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Closes the row at `removed_at`: the policy is removed, or (with `note`, kept as its last
    /// error) the revocation was given up. Releases the lease.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; [`StoreError::NotFound`] for an unknown or closed row.
    async fn mark_revocation_removed(
        &self,
        id: &str,
        removed_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Every row of revocation `revocation_id`, by role ARN.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    async fn revocation_rows(&self, revocation_id: &str) -> Result<Vec<RevocationRow>, StoreError>;
}

// === impl SqliteStore ===

#[async_trait::async_trait]
impl RevocationStore for SqliteStore {
    async fn record_revocation_intents(&self, rows: &[RevocationRow]) -> Result<(), StoreError> {
        let t = |time: &DateTime<Utc>| time_format::format(time);
        let mut tx = self.pool.begin().await.map_err(sqlx_err)?;
        for row in rows {
            sqlx::query(INSERT)
                .bind(&row.id)
                .bind(&row.revocation_id)
                .bind(&row.principal_issuer)
                .bind(&row.principal_subject)
                .bind(&row.source_identity_pattern)
                .bind(&row.role)
                .bind(&row.role_arn)
                .bind(&row.policy_name)
                .bind(&row.policy_document)
                .bind(t(&row.issued_before))
                .bind(&row.cause)
                .bind(&row.actor)
                .bind(&row.reason)
                .bind(t(&row.created_at))
                .bind(t(&row.next_attempt_at))
                .bind(row.claimed_until.as_ref().map(t))
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?;
        }
        tx.commit().await.map_err(sqlx_err)
    }

    async fn claim_revocations(
        &self,
        due: Due,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        let now = time_format::format(&now);
        let ids: Vec<String> = sqlx::query_scalar(&candidates(due))
            .bind(&now)
            .bind(&now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        let mut claimed = Vec::new();
        for id in ids {
            // SQLite has one writer at a time: the condition is checked and the lease taken in
            // one statement no other writer can interleave with.
            let row: Option<RawRow<String>> = sqlx::query_as(&claim(due))
                .bind(time_format::format(&lease_until))
                .bind(&id)
                .bind(&now)
                .bind(&now)
                .fetch_optional(&self.pool)
                .await
                .map_err(sqlx_err)?;
            if let Some(row) = row {
                claimed.push(row.into_row()?);
            }
        }
        Ok(claimed)
    }

    async fn mark_revocation_applied(
        &self,
        id: &str,
        applied_at: DateTime<Utc>,
        remove_after: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(MARK_APPLIED)
            .bind(time_format::format(&applied_at))
            .bind(time_format::format(&remove_after))
            .bind(time_format::format(&remove_after))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        one_row(done.rows_affected())
    }

    async fn mark_revocation_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(MARK_FAILED)
            .bind(error)
            .bind(time_format::format(&next_attempt_at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        one_row(done.rows_affected())
    }

    async fn mark_revocation_removed(
        &self,
        id: &str,
        removed_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(MARK_REMOVED)
            .bind(time_format::format(&removed_at))
            .bind(note)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        one_row(done.rows_affected())
    }

    async fn revocation_rows(&self, revocation_id: &str) -> Result<Vec<RevocationRow>, StoreError> {
        let rows: Vec<RawRow<String>> = sqlx::query_as(&select_rows())
            .bind(revocation_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        rows.into_iter().map(RawRow::into_row).collect()
    }
}

// === impl PostgresStore ===

#[async_trait::async_trait]
impl RevocationStore for PostgresStore {
    async fn record_revocation_intents(&self, rows: &[RevocationRow]) -> Result<(), StoreError> {
        let insert = postgres(INSERT);
        let mut tx = self.pool.begin().await.map_err(sqlx_err)?;
        for row in rows {
            sqlx::query(&insert)
                .bind(&row.id)
                .bind(&row.revocation_id)
                .bind(&row.principal_issuer)
                .bind(&row.principal_subject)
                .bind(&row.source_identity_pattern)
                .bind(&row.role)
                .bind(&row.role_arn)
                .bind(&row.policy_name)
                .bind(&row.policy_document)
                .bind(row.issued_before)
                .bind(&row.cause)
                .bind(&row.actor)
                .bind(&row.reason)
                .bind(row.created_at)
                .bind(row.next_attempt_at)
                .bind(row.claimed_until)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?;
        }
        tx.commit().await.map_err(sqlx_err)
    }

    async fn claim_revocations(
        &self,
        due: Due,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(&postgres(&candidates(due)))
            .bind(now)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        let claim = postgres(&claim(due));
        let mut claimed = Vec::new();
        for id in ids {
            // Under READ COMMITTED a concurrent claim of the same row waits for the other
            // transaction, then re-checks the condition against the row it committed: one wins.
            let row: Option<RawRow<DateTime<Utc>>> = sqlx::query_as(&claim)
                .bind(lease_until)
                .bind(&id)
                .bind(now)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(sqlx_err)?;
            if let Some(row) = row {
                claimed.push(row.into_row()?);
            }
        }
        Ok(claimed)
    }

    async fn mark_revocation_applied(
        &self,
        id: &str,
        applied_at: DateTime<Utc>,
        remove_after: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&postgres(MARK_APPLIED))
            .bind(applied_at)
            .bind(remove_after)
            .bind(remove_after)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        one_row(done.rows_affected())
    }

    async fn mark_revocation_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&postgres(MARK_FAILED))
            .bind(error)
            .bind(next_attempt_at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        one_row(done.rows_affected())
    }

    async fn mark_revocation_removed(
        &self,
        id: &str,
        removed_at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&postgres(MARK_REMOVED))
            .bind(removed_at)
            .bind(note)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlx_err)?;
        one_row(done.rows_affected())
    }

    async fn revocation_rows(&self, revocation_id: &str) -> Result<Vec<RevocationRow>, StoreError> {
        let rows: Vec<RawRow<DateTime<Utc>>> = sqlx::query_as(&postgres(&select_rows()))
            .bind(revocation_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlx_err)?;
        rows.into_iter().map(RawRow::into_row).collect()
    }
}

/// A row as a backend reads it; `T` is its type for times (SQLite: RFC 3339 text; PostgreSQL:
/// `timestamptz`).
#[derive(sqlx::FromRow)]
struct RawRow<T> {
    id: String,
    revocation_id: String,
    principal_issuer: String,
    principal_subject: String,
    source_identity_pattern: String,
    role: String,
    role_arn: String,
    policy_name: String,
    policy_document: String,
    issued_before: T,
    cause: String,
    actor: String,
    reason: Option<String>,
    created_at: T,
    applied_at: Option<T>,
    remove_after: Option<T>,
    removed_at: Option<T>,
    attempts: i64,
    next_attempt_at: T,
    claimed_until: Option<T>,
    last_error: Option<String>,
}

/// A stored time, as a backend reads it.
trait StoredTime {
    /// The time, or [`StoreError::Corrupt`] for text that is not one.
    fn into_time(self) -> Result<DateTime<Utc>, StoreError>;
}

impl StoredTime for String {
    fn into_time(self) -> Result<DateTime<Utc>, StoreError> {
        time_format::parse(&self)
            .ok_or_else(|| StoreError::Corrupt(format!("`{self}` is not an rfc 3339 time")))
    }
}

impl StoredTime for DateTime<Utc> {
    fn into_time(self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self)
    }
}

impl<T: StoredTime> RawRow<T> {
    fn into_row(self) -> Result<RevocationRow, StoreError> {
        let optional = |t: Option<T>| t.map(StoredTime::into_time).transpose();
        Ok(RevocationRow {
            id: self.id,
            revocation_id: self.revocation_id,
            principal_issuer: self.principal_issuer,
            principal_subject: self.principal_subject,
            source_identity_pattern: self.source_identity_pattern,
            role: self.role,
            role_arn: self.role_arn,
            policy_name: self.policy_name,
            policy_document: self.policy_document,
            issued_before: self.issued_before.into_time()?,
            cause: self.cause,
            actor: self.actor,
            reason: self.reason,
            created_at: self.created_at.into_time()?,
            applied_at: optional(self.applied_at)?,
            remove_after: optional(self.remove_after)?,
            removed_at: optional(self.removed_at)?,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at.into_time()?,
            claimed_until: optional(self.claimed_until)?,
            last_error: self.last_error,
        })
    }
}

fn one_row(affected: u64) -> Result<(), StoreError> {
    if affected == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

fn sqlx_err(err: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(err, None)
}

/// The SQL text for PostgreSQL: each `?` becomes `$1`, `$2`, ... in order (the statements here
/// are written for SQLite and have no `?` inside a literal).
fn postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The ids of open rows of `due` whose step is due and whose lease is free: binds `now`, `now`,
/// the limit.
fn candidates(due: Due) -> String {
    format!(
        "SELECT id FROM session_revocations WHERE {} AND {DUE} ORDER BY next_attempt_at LIMIT ?",
        stage(due)
    )
}

/// The compare-and-set that claims one row and returns it (or nothing: another worker has it,
/// or it is no longer due): binds `lease_until`, `id`, `now`, `now`.
fn claim(due: Due) -> String {
    format!(
        "UPDATE session_revocations SET claimed_until = ? WHERE id = ? AND {} AND {DUE} \
         RETURNING {COLUMNS}",
        stage(due)
    )
}

fn stage(due: Due) -> &'static str {
    match due {
        Due::Apply => "applied_at IS NULL",
        Due::Remove => "applied_at IS NOT NULL",
    }
}

/// Every row of one revocation: binds the revocation id.
fn select_rows() -> String {
    format!("SELECT {COLUMNS} FROM session_revocations WHERE revocation_id = ? ORDER BY role_arn")
}

/// Open, due, and not leased: binds `now` twice.
const DUE: &str = "removed_at IS NULL AND next_attempt_at <= ? \
     AND (claimed_until IS NULL OR claimed_until <= ?)";

const COLUMNS: &str = "id, revocation_id, principal_issuer, principal_subject, \
     source_identity_pattern, role, role_arn, policy_name, policy_document, issued_before, cause, \
     actor, reason, created_at, applied_at, remove_after, removed_at, \
     CAST(attempts AS BIGINT) AS attempts, next_attempt_at, claimed_until, last_error";

const INSERT: &str = "INSERT INTO session_revocations (id, revocation_id, principal_issuer, \
     principal_subject, source_identity_pattern, role, role_arn, policy_name, policy_document, \
     issued_before, cause, actor, reason, created_at, next_attempt_at, claimed_until) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Binds `applied_at`, `remove_after`, `remove_after` again (the removal is the next step due),
/// `id`.
const MARK_APPLIED: &str = "UPDATE session_revocations SET applied_at = ?, remove_after = ?, \
     next_attempt_at = ?, claimed_until = NULL, last_error = NULL \
     WHERE id = ? AND removed_at IS NULL";

/// Binds `last_error`, `next_attempt_at`, `id`.
const MARK_FAILED: &str = "UPDATE session_revocations SET last_error = ?, next_attempt_at = ?, \
     attempts = attempts + 1, claimed_until = NULL WHERE id = ? AND removed_at IS NULL";

/// Binds `removed_at`, the note (kept as `last_error` when set), `id`.
const MARK_REMOVED: &str = "UPDATE session_revocations SET removed_at = ?, \
     last_error = COALESCE(?, last_error), claimed_until = NULL \
     WHERE id = ? AND removed_at IS NULL";

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_in_order() {
        assert_eq!(
            postgres("UPDATE t SET a = ? WHERE id = ? AND b <= ?"),
            "UPDATE t SET a = $1 WHERE id = $2 AND b <= $3"
        );
        assert_eq!(INSERT.matches('?').count(), 16);
        assert_eq!(claim(Due::Apply).matches('?').count(), 4);
        assert_eq!(candidates(Due::Remove).matches('?').count(), 3);
        assert_eq!(MARK_APPLIED.matches('?').count(), 4);
    }

    fn row(id: &str, now: DateTime<Utc>) -> RevocationRow {
        RevocationRow {
            id: id.to_owned(),
            revocation_id: "r1".to_owned(),
            principal_issuer: "https://idp".to_owned(),
            principal_subject: "alice".to_owned(),
            source_identity_pattern: "*-0123456789abcdef".to_owned(),
            role: id.to_owned(),
            role_arn: format!("arn:aws:iam::123456789012:role/latchkey/{id}"),
            policy_name: "latchkey-revoke-0123456789abcdef-r1".to_owned(),
            policy_document: "{}".to_owned(),
            issued_before: now,
            cause: "offboarding".to_owned(),
            actor: "operator:root".to_owned(),
            reason: None,
            created_at: now,
            applied_at: None,
            remove_after: None,
            removed_at: None,
            attempts: 0,
            next_attempt_at: now,
            claimed_until: Some(now + TimeDelta::seconds(60)),
            last_error: None,
        }
    }

    /// The lifecycle on SQLite in memory; the same story runs on files and PostgreSQL in
    /// tests/integration/revocation.rs.
    #[tokio::test]
    async fn a_row_is_leased_applied_then_due_for_removal_and_closed() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = |n: i64| now + TimeDelta::seconds(n);
        store
            .record_revocation_intents(&[row("a", now), row("b", now)])
            .await
            .unwrap();
        // Leased by the writer: nothing to claim until the lease ends.
        assert!(
            store
                .claim_revocations(Due::Apply, s(30), s(90), 10)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .mark_revocation_applied("a", s(1), s(3600))
            .await
            .unwrap();
        store
            .mark_revocation_failed("b", "NoSuchEntity", s(120))
            .await
            .unwrap();
        // `b` is due again at +120 s; `a` is due for removal at +3600 s.
        let claimed = store
            .claim_revocations(Due::Apply, s(120), s(180), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, "b");
        assert_eq!(claimed[0].attempts, 1);
        assert_eq!(claimed[0].last_error.as_deref(), Some("NoSuchEntity"));
        assert_eq!(claimed[0].claimed_until, Some(s(180)));
        // Claimed once: a second worker gets nothing.
        assert!(
            store
                .claim_revocations(Due::Apply, s(121), s(181), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .claim_revocations(Due::Remove, s(3599), s(3700), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let due = store
            .claim_revocations(Due::Remove, s(3600), s(3700), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].applied_at, Some(s(1)));
        assert_eq!(due[0].remove_after, Some(s(3600)));
        store
            .mark_revocation_removed("a", s(3601), None)
            .await
            .unwrap();
        assert!(matches!(
            store.mark_revocation_removed("a", s(3602), None).await,
            Err(StoreError::NotFound)
        ));
        let rows = store.revocation_rows("r1").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].removed_at, Some(s(3601)));
        assert_eq!(rows[1].removed_at, None);
    }
}
