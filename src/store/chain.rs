//! The audit chain's rows, shared by both backends: the next link computed from the head and
//! the canonical event, and the row-to-record mapping of a page.
//!
//! What stays in each backend is what differs: the SQL dialect, how appends are serialized
//! (SQLite: one writer with `BEGIN IMMEDIATE`; PostgreSQL: the head row locked `FOR UPDATE`) and
//! how commits are made durable.

use chrono::{DateTime, Utc};

use super::{AuditSearch, StoreError};
use crate::audit::chain::{self, time_format};
use crate::audit::{
    AuditRecord, CanonicalEvent, ChainHash, ChainHead, ChainKey, StoredAuditRecord,
};

/// The record after the head, computed inside the append's transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NextLink {
    /// The new record's `seq`.
    pub(crate) seq: i64,
    /// The head's hash: the new record's `prev_hash`.
    pub(crate) prev: ChainHash,
    /// The new record's hash.
    pub(crate) hash: ChainHash,
}

/// One row of `audit_records` as a page query selects it: `seq, prev_hash, hash, canonical,
/// event, event_time, actor_issuer, actor_subject`; `T` is the backend's type for `event_time`.
pub(crate) type PageRow<T> = (
    i64,
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    T,
    Option<String>,
    Option<String>,
);

/// An `event_time` column value as the canonical text writes it.
pub(crate) trait EventTime {
    /// The time in the canonical text's format.
    fn into_text(self) -> String;
}

// === impl NextLink ===

impl NextLink {
    /// The link after the head row `(head_seq, head_hash)` for `event`, hashed with `key`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the head's hash is not 32 bytes or its `seq` is out of range.
    pub(crate) fn after(
        head_seq: i64,
        head_hash: &[u8],
        event: &CanonicalEvent,
        key: &ChainKey,
    ) -> Result<Self, StoreError> {
        let prev = ChainHash::from_slice(head_hash)
            .ok_or_else(|| StoreError::Corrupt("audit head hash is not 32 bytes".to_owned()))?;
        let seq = head_seq
            .checked_add(1)
            .filter(|seq| *seq >= 1)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("audit head seq `{head_seq}` is out of range"))
            })?;
        let hash = chain::link_hash(key, &prev, seq, event.text().as_bytes());
        Ok(Self { seq, prev, hash })
    }

    /// The links after the head row `(head_seq, head_hash)` for `events`, in order, each the
    /// next of the one before: a group commit's batch.
    ///
    /// # Errors
    ///
    /// As [`NextLink::after`].
    pub(crate) fn chain(
        head_seq: i64,
        head_hash: &[u8],
        events: &[CanonicalEvent],
        key: &ChainKey,
    ) -> Result<Vec<Self>, StoreError> {
        let mut links: Vec<Self> = Vec::with_capacity(events.len());
        for event in events {
            let link = match links.last() {
                None => Self::after(head_seq, head_hash, event, key)?,
                Some(prev) => Self::after(prev.seq, prev.hash.as_bytes(), event, key)?,
            };
            links.push(link);
        }
        Ok(links)
    }

    /// The record this link makes of `event`, once committed.
    pub(crate) fn record(&self, event: &CanonicalEvent) -> AuditRecord {
        AuditRecord {
            seq: self.seq,
            prev_hash: self.prev,
            hash: self.hash,
            event: event.event().clone(),
        }
    }

    /// The actor issuer and subject columns of `event`.
    pub(crate) fn actor_columns(event: &CanonicalEvent) -> (Option<&str>, Option<&str>) {
        let actor = event.event().actor.as_ref();
        (
            actor.map(|a| a.issuer.as_str()),
            actor.map(|a| a.subject.as_str()),
        )
    }
}

/// How a backend's SQL differs for a search.
pub(crate) struct SearchDialect {
    /// The SQL expression of the record's `target.role`, read from the canonical text.
    pub(crate) role: &'static str,
}

/// A search over `audit_records` selecting the columns of [`PageRow`]: one condition per filter
/// that is set, every value bound; `time` turns a time into the backend's `event_time` value.
pub(crate) fn search_query<'a, DB, T>(
    search: &'a AuditSearch,
    dialect: &SearchDialect,
    time: impl Fn(DateTime<Utc>) -> T,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    T: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    // SECURITY: only fixed SQL text is pushed; every user-supplied value is bound.
    let mut q = sqlx::QueryBuilder::new(
        "SELECT seq, prev_hash, hash, canonical, event, event_time, actor_issuer, actor_subject \
         FROM audit_records WHERE seq > ",
    );
    q.push_bind(search.after_seq);
    if let Some(actor) = &search.actor {
        if let Some(issuer) = &actor.issuer {
            q.push(" AND actor_issuer = ").push_bind(issuer.as_str());
        }
        q.push(" AND actor_subject = ")
            .push_bind(actor.subject.as_str());
    }
    if let Some(event) = search.event {
        q.push(" AND event = ").push_bind(event.as_str());
    }
    if let Some(role) = &search.role {
        q.push(" AND ")
            .push(dialect.role)
            .push(" = ")
            .push_bind(role.as_str());
    }
    if let Some(since) = search.since {
        q.push(" AND event_time >= ").push_bind(time(since));
    }
    if let Some(until) = search.until {
        q.push(" AND event_time < ").push_bind(time(until));
    }
    q.push(" ORDER BY seq LIMIT ")
        .push_bind(i64::from(search.limit));
    q
}

/// The head row `(seq, hash)` as a [`ChainHead`].
///
/// # Errors
///
/// [`StoreError::Corrupt`] if the hash is not 32 bytes.
pub(crate) fn chain_head(seq: i64, hash: &[u8]) -> Result<ChainHead, StoreError> {
    let hash = ChainHash::from_slice(hash)
        .ok_or_else(|| StoreError::Corrupt("audit head hash is not 32 bytes".to_owned()))?;
    Ok(ChainHead { seq, hash })
}

/// A page's rows as stored records, exactly as stored.
pub(crate) fn stored_records<T: EventTime>(rows: Vec<PageRow<T>>) -> Vec<StoredAuditRecord> {
    rows.into_iter()
        .map(
            |(seq, prev_hash, hash, canonical, event, time, actor_issuer, actor_subject)| {
                StoredAuditRecord {
                    seq,
                    prev_hash,
                    hash,
                    canonical,
                    event,
                    time: time.into_text(),
                    actor_issuer,
                    actor_subject,
                }
            },
        )
        .collect()
}

impl EventTime for String {
    fn into_text(self) -> String {
        self
    }
}

impl EventTime for DateTime<Utc> {
    fn into_text(self) -> String {
        time_format::format(&self)
    }
}

/// The records `links` make of `events`, once committed.
pub(crate) fn records(links: &[NextLink], events: &[CanonicalEvent]) -> Vec<AuditRecord> {
    links
        .iter()
        .zip(events)
        .map(|(link, event)| link.record(event))
        .collect()
}

/// The one link of a batch of one.
///
/// # Errors
///
/// [`StoreError::Corrupt`] if the batch made no link, which [`NextLink::chain`] never does for
/// one event.
pub(crate) fn only(links: Vec<NextLink>) -> Result<NextLink, StoreError> {
    links
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt("an append made no link".to_owned()))
}
