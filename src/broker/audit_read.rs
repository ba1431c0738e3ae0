//! Reading the audit trail: `GET /v1/audit` for those the policy lets `read_audit` the whole log.
//!
//! The query string is read strictly here (unknown or repeated parameters, bad numbers, times
//! or event names are refused), the request is decided by Cedar, and every read, allowed or
//! denied, is itself audited as `audit.read` before anything is answered: no records leave
//! without that record written.

use serde_json::json;

use super::{Broker, BrokerError, RequestMeta, actor};
use crate::api::AuditPage;
use crate::audit::chain::time_format;
use crate::audit::{AuditEvent, AuditRecord, EventKind, Outcome, StoredAuditRecord};
use crate::identity::Identity;
use crate::policy::{AccessRequest, Action, RequestContext, Resource};
use crate::store::{ActorFilter, AuditSearch};

/// Records answered when the query sets no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;

/// The most records one page may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// Why a query string is refused; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter appears more than once.
    #[error("parameter `{0}` is given more than once")]
    Repeated(String),
    /// A parameter is not one of the search's.
    #[error("unknown parameter `{0}`")]
    Unknown(String),
    /// A value does not parse.
    #[error("parameter `{name}` {problem}")]
    Value {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads the query string of `GET /v1/audit` into a search.
///
/// # Errors
///
/// [`QueryError`] for an unknown or repeated parameter, or a value out of range: `limit` in
/// `1..=1000` (default 100), `after_seq` at least 0, `since`/`until` RFC 3339, `event` a known
/// event name, `actor` and `role` non-empty.
pub fn parse_query(query: &str) -> Result<AuditSearch, QueryError> {
    let mut search = AuditSearch {
        limit: DEFAULT_LIMIT,
        ..AuditSearch::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        if seen.contains(&shown) {
            return Err(QueryError::Repeated(shown));
        }
        seen.push(shown.clone());
        let bad = |name: &'static str, problem: &str| QueryError::Value {
            name,
            problem: problem.to_owned(),
        };
        match name.as_ref() {
            "after_seq" => {
                search.after_seq = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("after_seq", "must be a whole number of at least 0"))?;
            }
            "limit" => {
                search.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad("limit", "must be a whole number from 1 to 1000"))?;
            }
            "actor" => {
                if value.is_empty() {
                    return Err(bad("actor", "must not be empty"));
                }
                search.actor = Some(ActorFilter::parse(&value));
            }
            "event" => {
                search.event = Some(value.parse::<EventKind>().map_err(|_| {
                    bad(
                        "event",
                        "must name an audit event, such as `credentials.issued`",
                    )
                })?);
            }
            "role" => {
                if value.is_empty() {
                    return Err(bad("role", "must not be empty"));
                }
                search.role = Some(value.into_owned());
            }
            "since" => {
                search.since =
                    Some(rfc3339(&value).ok_or_else(|| bad("since", "must be an RFC 3339 time"))?);
            }
            "until" => {
                search.until =
                    Some(rfc3339(&value).ok_or_else(|| bad("until", "must be an RFC 3339 time"))?);
            }
            _ => return Err(QueryError::Unknown(shown)),
        }
    }
    Ok(search)
}

fn rfc3339(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A stored record in the stream's shape (a sink line).
///
/// # Errors
///
/// A message when the stored hashes are not 32 bytes or the canonical text is not an event.
pub fn stream_record(stored: &StoredAuditRecord) -> Result<AuditRecord, String> {
    let hash = |bytes: &[u8]| {
        crate::audit::ChainHash::from_slice(bytes)
            .ok_or_else(|| format!("record {} has a hash that is not 32 bytes", stored.seq))
    };
    let event: AuditEvent = serde_json::from_str(&stored.canonical)
        .map_err(|e| format!("record {} is not an audit event: {e}", stored.seq))?;
    Ok(AuditRecord {
        seq: stored.seq,
        prev_hash: hash(&stored.prev_hash)?,
        hash: hash(&stored.hash)?,
        event,
    })
}

impl Broker {
    /// One page of the audit trail for `id`, if the policy lets them `read_audit` the log.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Denied`] when no policy permits the read, [`BrokerError::AuditUnavailable`]
    /// when the `audit.read` record cannot be written (nothing is answered then), and
    /// [`BrokerError::StoreUnavailable`] when the records cannot be read.
    pub async fn read_audit(
        &self,
        id: &Identity,
        search: &AuditSearch,
        meta: &RequestMeta,
    ) -> Result<AuditPage, BrokerError> {
        let mut context = RequestContext::for_identity(id, self.clock.unix(), 0);
        context.source_ip = meta
            .client_addr
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        let decision = self.policy().decide(&AccessRequest {
            identity: id,
            action: Action::ReadAudit,
            resource: Resource::AuditLog,
            context,
        });
        let allowed = decision.is_allowed();
        let event = AuditEvent {
            event: EventKind::AuditRead,
            time: self.clock.now(),
            actor: Some(actor(id)),
            target: serde_json::Value::Null,
            decision: Some(if allowed {
                Outcome::Allow
            } else {
                Outcome::Deny
            }),
            details: json!({
                "query": query_details(search),
                "determining_policies": decision.determining,
                "reasons": decision.reasons,
            }),
            client_addr: meta.client_addr.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
        };
        // SECURITY: the read is recorded before any record is read, let alone answered.
        self.audit(event).await?;
        if !allowed {
            return Err(BrokerError::Denied {
                reasons: decision.reasons,
            });
        }
        let stored = self.store.search_audit(search).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the audit records");
            BrokerError::StoreUnavailable
        })?;
        let records = stored
            .iter()
            .map(stream_record)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                tracing::error!(error = %e, "a stored audit record is damaged");
                BrokerError::StoreUnavailable
            })?;
        let full = records.len() >= usize::try_from(search.limit).unwrap_or(usize::MAX);
        let next_after_seq = if full {
            records.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(AuditPage {
            records,
            next_after_seq,
        })
    }
}

/// The search as the `audit.read` record states it.
fn query_details(search: &AuditSearch) -> serde_json::Value {
    json!({
        "after_seq": search.after_seq,
        "limit": search.limit,
        "actor": search.actor.as_ref().map(|a| match &a.issuer {
            Some(issuer) => format!("{issuer}#{}", a.subject),
            None => a.subject.clone(),
        }),
        "event": search.event.map(|e| e.as_str()),
        "role": search.role,
        "since": search.since.as_ref().map(time_format::format),
        "until": search.until.as_ref().map(time_format::format),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_parameter_and_defaults_the_limit() {
        let s = parse_query("").unwrap();
        assert_eq!(s.limit, DEFAULT_LIMIT);
        assert_eq!(s.after_seq, 0);
        let s = parse_query(
            "after_seq=7&limit=1000&actor=https%3A%2F%2Fidp%23alice&event=credentials.issued\
             &role=readonly&since=2026-11-28T00:00:00Z&until=2026-11-29T00:00:00%2B01:00",
        )
        .unwrap();
        assert_eq!(s.after_seq, 7);
        assert_eq!(s.limit, 1000);
        assert_eq!(
            s.actor,
            Some(ActorFilter {
                issuer: Some("https://idp".into()),
                subject: "alice".into()
            })
        );
        assert_eq!(s.event, Some(EventKind::CredentialsIssued));
        assert_eq!(s.role.as_deref(), Some("readonly"));
        assert_eq!(s.until.unwrap().to_rfc3339(), "2026-11-28T23:00:00+00:00");
    }

    #[test]
    fn refuses_bad_unknown_and_repeated_parameters() {
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "after_seq=-1",
            "since=yesterday",
            "until=2026-11-28",
            "event=credentials.Issued",
            "actor=",
            "role=",
            "user=alice",
            "limit=1&limit=2",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_query("evil=1").unwrap_err().to_string(),
            "unknown parameter `evil`"
        );
    }
}
