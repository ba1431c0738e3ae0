//! What the delivery worker needs from the store: the `notify_outbox` table behind a port, so
//! this module never imports the store (the store implements [`OutboxStore`], for SQLite and
//! PostgreSQL).
//!
//! A row is due when it is neither delivered nor given up, its `next_attempt_at` has come, and
//! no lease on it is running. Claiming takes a lease (`claimed_until`, with a fresh token) and
//! counts the attempt, in one statement per backend that two workers cannot both win for the
//! same row; an expired lease (a worker that died mid-delivery) makes the row due again.

use chrono::{DateTime, Utc};

/// The outbox, as the delivery worker sees it. Times are passed in, never read.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync {
    /// Leases up to `claim.limit` due rows of the webhooks in `claim.webhooks` (oldest due
    /// first) until `claim.lease_until` under `claim.token`, counting one attempt on each.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the store cannot be read or written.
    async fn claim_outbox(&self, claim: &Claim<'_>) -> Result<Vec<ClaimedRow>, OutboxError>;

    /// Marks the row delivered at `at` (whoever holds the lease now: it was delivered).
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the store cannot be written.
    async fn mark_outbox_delivered(&self, id: i64, at: DateTime<Utc>) -> Result<(), OutboxError>;

    /// Releases the row to be tried again at `next_attempt_at`, recording `error`; only while
    /// `token`'s lease is the row's. `false` if it was not (another worker took the row over).
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the store cannot be written.
    async fn reschedule_outbox(
        &self,
        id: i64,
        token: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, OutboxError>;

    /// Marks the row given up at `at` with `error` (it stays in the table); only while
    /// `token`'s lease is the row's. `false` if it was not.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the store cannot be written.
    async fn give_up_outbox(
        &self,
        id: i64,
        token: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, OutboxError>;

    /// Gives up (at `at`) every pending row created before `created_before` whose webhook is
    /// not in `webhooks`: webhooks removed from the configuration. Returns how many.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the store cannot be written.
    async fn give_up_unconfigured_outbox(
        &self,
        webhooks: &[String],
        created_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<u64, OutboxError>;

    /// How many rows are pending (neither delivered nor given up), and the oldest one's
    /// creation time.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the store cannot be read.
    async fn outbox_backlog(&self) -> Result<Backlog, OutboxError>;
}

/// Which rows to lease, and how.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// Only rows of these webhooks ([`super::Webhook::id`]s): another replica may know more.
    pub webhooks: &'a [String],
    /// Now: rows due at or before it, leases expired at or before it.
    pub now: DateTime<Utc>,
    /// The lease's end.
    pub lease_until: DateTime<Utc>,
    /// The lease's token, fresh per claim.
    pub token: &'a str,
    /// At most this many rows.
    pub limit: u32,
}

/// A leased row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedRow {
    /// The row's key.
    pub id: i64,
    /// The delivery id, sent with every attempt.
    pub delivery_id: String,
    /// The webhook's id ([`super::Webhook::id`]).
    pub webhook: String,
    /// The notice as JSON.
    pub notice: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When the row was written (the change's commit).
    pub created_at: DateTime<Utc>,
}

/// The pending rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Rows neither delivered nor given up.
    pub pending: u64,
    /// The oldest pending row's creation time.
    pub oldest: Option<DateTime<Utc>>,
}

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Stored data is not what the schema promises.
    #[error("outbox data is corrupt: {0}")]
    Corrupt(String),
    /// The store failed or cannot be reached; the worker tries again at its next poll.
    #[error("outbox unavailable: {0}")]
    Unavailable(String),
}
