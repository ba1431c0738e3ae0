//! Break-glass rows, shared by both backends: the statements a transition runs (insert or
//! compare-and-swap update of the request, its new approval, its outbox rows), the queries that
//! list requests, and the row-to-[`Request`] mapping.
//!
//! What stays in each backend is what differs: how a time is stored (SQLite: RFC 3339 text;
//! PostgreSQL: `timestamptz`), how the transaction is serialized with the audit chain, and
//! executing the statements. Every user-supplied value is bound, never formatted into SQL.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::StoreError;
use crate::breakglass::{Approval, Person, Request, State, Transition};
use crate::notify::OutboxRow;

/// Which requests to list; every filter that is set must match. Newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFilter {
    /// Only requests in this state (as stored: a pending request past its TTL that the
    /// sweeper has not expired yet is still `pending` here).
    pub state: Option<State>,
    /// Only requests by this person.
    pub requester: Option<Person>,
    /// Only requests for this role.
    pub role: Option<String>,
    /// Only requests that do (or do not) await a review.
    pub needs_review: Option<bool>,
    /// At most this many.
    pub limit: u32,
}

/// One transition to commit, with the notifications it sends.
#[derive(Clone, Copy, Debug)]
pub struct TransitionWrite<'a> {
    /// The transition: a new request (`expected_version` `None`) or a change of one.
    pub transition: &'a Transition,
    /// The outbox rows to insert in the same transaction.
    pub outbox: &'a [OutboxRow],
    /// When the transition happens: the outbox rows' `created_at` and first attempt.
    pub now: DateTime<Utc>,
}

/// How a backend stores a time.
pub(crate) trait TimeColumn: Sized {
    /// The column value for `t`.
    fn from_utc(t: DateTime<Utc>) -> Self;
    /// The time a column value holds.
    fn into_utc(self) -> Result<DateTime<Utc>, StoreError>;
}

impl TimeColumn for String {
    fn from_utc(t: DateTime<Utc>) -> Self {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn into_utc(self) -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(&self)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| StoreError::Corrupt(format!("`{self}` is not an RFC 3339 time")))
    }
}

impl TimeColumn for DateTime<Utc> {
    fn from_utc(t: DateTime<Utc>) -> Self {
        t
    }

    fn into_utc(self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self)
    }
}

/// Every column of `breakglass_requests`, in the order [`request_from_row`] reads them.
pub(crate) const REQUEST_COLUMNS: &str = "id, role, requester_issuer, requester_subject, \
     requester_name, reason, ticket, duration_secs, emergency, approvals_required, digest, \
     state, needs_review, created_at, expires_at, activated_at, window_ends_at, closed_at, \
     closed_by_issuer, closed_by_subject, close_comment, reviewed_by_issuer, \
     reviewed_by_subject, reviewed_at, review_comment, version";

/// The columns of `breakglass_approvals` that [`approval_from_row`] reads.
pub(crate) const APPROVAL_COLUMNS: &str = "request_id, approver_issuer, approver_subject, \
     approver_name, digest, comment, approved_at";

/// `INSERT` of a new request.
pub(crate) fn insert_request<'a, DB, T>(r: &Request) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
    T: TimeColumn + 'a + Encode<'a, DB> + Type<DB>,
    Option<T>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "INSERT INTO breakglass_requests ({REQUEST_COLUMNS}) VALUES ("
    ));
    let mut v = q.separated(", ");
    v.push_bind(r.id.clone())
        .push_bind(r.role.clone())
        .push_bind(r.requester.issuer.clone())
        .push_bind(r.requester.subject.clone())
        .push_bind(r.requester_name.clone())
        .push_bind(r.reason.clone())
        .push_bind(r.ticket.clone())
        .push_bind(i64::from(r.duration_secs))
        .push_bind(r.emergency)
        .push_bind(i64::from(r.approvals_required))
        .push_bind(r.digest.clone())
        .push_bind(r.state.as_str().to_owned())
        .push_bind(r.needs_review)
        .push_bind(T::from_utc(r.created_at))
        .push_bind(T::from_utc(r.expires_at))
        .push_bind(r.activated_at.map(T::from_utc))
        .push_bind(r.window_ends_at.map(T::from_utc))
        .push_bind(r.closed_at.map(T::from_utc))
        .push_bind(r.closed_by.as_ref().map(|p| p.issuer.clone()))
        .push_bind(r.closed_by.as_ref().map(|p| p.subject.clone()))
        .push_bind(r.close_comment.clone())
        .push_bind(r.reviewed_by.as_ref().map(|p| p.issuer.clone()))
        .push_bind(r.reviewed_by.as_ref().map(|p| p.subject.clone()))
        .push_bind(r.reviewed_at.map(T::from_utc))
        .push_bind(r.review_comment.clone())
        .push_bind(r.version);
    q.push(")");
    q
}

/// The compare-and-swap `UPDATE` of a changed request: it matches only while the stored row is
/// at `expected_version`. Only what a transition may change is written; what was asked never is.
pub(crate) fn update_request<'a, DB, T>(r: &Request, expected_version: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
    T: TimeColumn + 'a + Encode<'a, DB> + Type<DB>,
    Option<T>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE breakglass_requests SET state = ");
    q.push_bind(r.state.as_str().to_owned())
        .push(", needs_review = ")
        .push_bind(r.needs_review)
        .push(", activated_at = ")
        .push_bind(r.activated_at.map(T::from_utc))
        .push(", window_ends_at = ")
        .push_bind(r.window_ends_at.map(T::from_utc))
        .push(", closed_at = ")
        .push_bind(r.closed_at.map(T::from_utc))
        .push(", closed_by_issuer = ")
        .push_bind(r.closed_by.as_ref().map(|p| p.issuer.clone()))
        .push(", closed_by_subject = ")
        .push_bind(r.closed_by.as_ref().map(|p| p.subject.clone()))
        .push(", close_comment = ")
        .push_bind(r.close_comment.clone())
        .push(", reviewed_by_issuer = ")
        .push_bind(r.reviewed_by.as_ref().map(|p| p.issuer.clone()))
        .push(", reviewed_by_subject = ")
        .push_bind(r.reviewed_by.as_ref().map(|p| p.subject.clone()))
        .push(", reviewed_at = ")
        .push_bind(r.reviewed_at.map(T::from_utc))
        .push(", review_comment = ")
        .push_bind(r.review_comment.clone())
        .push(", version = ")
        .push_bind(r.version)
        // SECURITY: the compare-and-swap. A transition decided on a stale read matches no row.
        .push(" WHERE id = ")
        .push_bind(r.id.clone())
        .push(" AND version = ")
        .push_bind(expected_version);
    q
}

/// `INSERT` of one approval; the primary key refuses a second one by the same person.
pub(crate) fn insert_approval<'a, DB, T>(request_id: &str, a: &Approval) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    T: TimeColumn + 'a + Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "INSERT INTO breakglass_approvals ({APPROVAL_COLUMNS}) VALUES ("
    ));
    let mut v = q.separated(", ");
    v.push_bind(request_id.to_owned())
        .push_bind(a.approver.issuer.clone())
        .push_bind(a.approver.subject.clone())
        .push_bind(a.approver_name.clone())
        .push_bind(a.digest.clone())
        .push_bind(a.comment.clone())
        .push_bind(T::from_utc(a.at));
    q.push(")");
    q
}

/// The request `id`.
pub(crate) fn select_request<'a, DB>(id: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {REQUEST_COLUMNS} FROM breakglass_requests WHERE id = "
    ));
    q.push_bind(id.to_owned());
    q
}

/// The requests `filter` selects, newest first.
pub(crate) fn select_requests<'a, DB>(filter: &RequestFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {REQUEST_COLUMNS} FROM breakglass_requests WHERE 1 = 1"
    ));
    if let Some(state) = filter.state {
        q.push(" AND state = ").push_bind(state.as_str().to_owned());
    }
    if let Some(p) = &filter.requester {
        q.push(" AND requester_issuer = ")
            .push_bind(p.issuer.clone())
            .push(" AND requester_subject = ")
            .push_bind(p.subject.clone());
    }
    if let Some(role) = &filter.role {
        q.push(" AND role = ").push_bind(role.clone());
    }
    if let Some(flag) = filter.needs_review {
        q.push(" AND needs_review = ").push_bind(flag);
    }
    q.push(" ORDER BY created_at DESC, id LIMIT ")
        .push_bind(i64::from(filter.limit));
    q
}

/// Requests whose deadline has passed at `now`: pending past their TTL, active past their
/// window, oldest deadline first.
pub(crate) fn select_due<'a, DB, T>(now: DateTime<Utc>, limit: u32) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
    T: TimeColumn + 'a + Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {REQUEST_COLUMNS} FROM breakglass_requests \
         WHERE (state = 'pending' AND expires_at <= "
    ));
    q.push_bind(T::from_utc(now))
        .push(") OR (state = 'active' AND window_ends_at <= ")
        .push_bind(T::from_utc(now))
        .push(") ORDER BY created_at, id LIMIT ")
        .push_bind(i64::from(limit));
    q
}

/// The approvals of the requests `ids`, in the order they landed.
pub(crate) fn select_approvals<'a, DB>(ids: &[String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {APPROVAL_COLUMNS} FROM breakglass_approvals WHERE request_id IN ("
    ));
    let mut v = q.separated(", ");
    for id in ids {
        v.push_bind(id.clone());
    }
    q.push(") ORDER BY approved_at, approver_issuer, approver_subject");
    q
}

/// A request row (without its approvals).
pub(crate) fn request_from_row<'r, R, T>(row: &'r R) -> Result<Request, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    T: TimeColumn + Decode<'r, R::Database> + Type<R::Database>,
    Option<T>: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |c: &'static str| row.try_get::<String, _>(c).map_err(corrupt);
    let opt = |c: &'static str| row.try_get::<Option<String>, _>(c).map_err(corrupt);
    let time = |c: &'static str| row.try_get::<T, _>(c).map_err(corrupt)?.into_utc();
    let opt_time = |c: &'static str| {
        row.try_get::<Option<T>, _>(c)
            .map_err(corrupt)?
            .map(TimeColumn::into_utc)
            .transpose()
    };
    let int = |c: &'static str| row.try_get::<i64, _>(c).map_err(corrupt);
    let flag = |c: &'static str| row.try_get::<bool, _>(c).map_err(corrupt);
    let person = |i: &'static str, s: &'static str| -> Result<Option<Person>, StoreError> {
        Ok(match (opt(i)?, opt(s)?) {
            (Some(issuer), Some(subject)) => Some(Person { issuer, subject }),
            _ => None,
        })
    };
    let state = text("state")?;
    Ok(Request {
        id: text("id")?,
        role: text("role")?,
        requester: Person {
            issuer: text("requester_issuer")?,
            subject: text("requester_subject")?,
        },
        requester_name: opt("requester_name")?,
        reason: text("reason")?,
        ticket: opt("ticket")?,
        duration_secs: u32::try_from(int("duration_secs")?)
            .map_err(|_| StoreError::Corrupt("duration_secs is out of range".into()))?,
        emergency: flag("emergency")?,
        approvals_required: u32::try_from(int("approvals_required")?)
            .map_err(|_| StoreError::Corrupt("approvals_required is out of range".into()))?,
        digest: text("digest")?,
        state: state
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown request state `{state}`")))?,
        needs_review: flag("needs_review")?,
        approvals: Vec::new(),
        created_at: time("created_at")?,
        expires_at: time("expires_at")?,
        activated_at: opt_time("activated_at")?,
        window_ends_at: opt_time("window_ends_at")?,
        closed_at: opt_time("closed_at")?,
        closed_by: person("closed_by_issuer", "closed_by_subject")?,
        close_comment: opt("close_comment")?,
        reviewed_by: person("reviewed_by_issuer", "reviewed_by_subject")?,
        reviewed_at: opt_time("reviewed_at")?,
        review_comment: opt("review_comment")?,
        version: int("version")?,
    })
}

/// An approval row, with the id of its request.
pub(crate) fn approval_from_row<'r, R, T>(row: &'r R) -> Result<(String, Approval), StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    T: TimeColumn + Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |c: &'static str| row.try_get::<String, _>(c).map_err(corrupt);
    let opt = |c: &'static str| row.try_get::<Option<String>, _>(c).map_err(corrupt);
    Ok((
        text("request_id")?,
        Approval {
            approver: Person {
                issuer: text("approver_issuer")?,
                subject: text("approver_subject")?,
            },
            approver_name: opt("approver_name")?,
            digest: text("digest")?,
            comment: opt("comment")?,
            at: row
                .try_get::<T, _>("approved_at")
                .map_err(corrupt)?
                .into_utc()?,
        },
    ))
}

/// Puts each approval under its request.
pub(crate) fn attach(requests: &mut [Request], approvals: Vec<(String, Approval)>) {
    for (id, approval) in approvals {
        if let Some(r) = requests.iter_mut().find(|r| r.id == id) {
            r.approvals.push(approval);
        }
    }
}

fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}
