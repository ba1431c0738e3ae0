//! [`EventKind`]: the closed list of audit event names.
//!
//! Pure data. Each kind serializes to its dotted name (`credentials.issued`), which is what the
//! canonical JSON holds and the chain hashes, so records written before this type existed read
//! and verify unchanged. A new kind is a new variant here, never a string literal at a call site.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an audit record is about.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, PartialEq, Serialize)]
pub enum EventKind {
    /// Someone read the audit log through the API; written before the records are returned.
    #[serde(rename = "audit.read")]
    AuditRead,
    /// The policy allowed a grant; written before STS is called.
    #[serde(rename = "credentials.authorized")]
    CredentialsAuthorized,
    /// The policy, an invariant or the catalog refused a grant.
    #[serde(rename = "credentials.denied")]
    CredentialsDenied,
    /// An allowed grant could not be carried out (session invalid, STS refused or failed).
    #[serde(rename = "credentials.failed")]
    CredentialsFailed,
    /// STS minted the credentials; written before they are returned.
    #[serde(rename = "credentials.issued")]
    CredentialsIssued,
    /// A principal went over its grant rate; written once per window, not per request.
    #[serde(rename = "credentials.rate_limited")]
    CredentialsRateLimited,
    /// A new policy was invalid; the previous one stays in force.
    #[serde(rename = "policy.reload_failed")]
    PolicyReloadFailed,
    /// A new policy is about to take effect; written before it does.
    #[serde(rename = "policy.reloaded")]
    PolicyReloaded,
    /// The last approval of a break-glass request landed: it is active, its window starts.
    #[serde(rename = "request.activated")]
    RequestActivated,
    /// An approval of a break-glass request landed; more are needed.
    #[serde(rename = "request.approved")]
    RequestApproved,
    /// The requester cancelled a pending break-glass request.
    #[serde(rename = "request.cancelled")]
    RequestCancelled,
    /// A break-glass request was made; it waits for approvals.
    #[serde(rename = "request.created")]
    RequestCreated,
    /// An approver denied a break-glass request.
    #[serde(rename = "request.denied")]
    RequestDenied,
    /// An emergency break-glass request activated itself, to be reviewed by someone else.
    #[serde(rename = "request.emergency_activated")]
    RequestEmergencyActivated,
    /// A break-glass request passed its TTL (pending) or its window (active).
    #[serde(rename = "request.expired")]
    RequestExpired,
    /// Someone tried to make, approve, deny, cancel, revoke or review a break-glass request and
    /// was refused (by policy or by an invariant); nothing changed.
    #[serde(rename = "request.refused")]
    RequestRefused,
    /// Someone other than the requester reviewed an emergency activation.
    #[serde(rename = "request.reviewed")]
    RequestReviewed,
    /// An active break-glass request was revoked; no credentials are issued for it any more.
    #[serde(rename = "request.revoked")]
    RequestRevoked,
    /// The server started.
    #[serde(rename = "server.started")]
    ServerStarted,
    /// A revocation that never got applied to a role was given up: every session it was to
    /// stop has expired by now.
    #[serde(rename = "sessions.revoke_abandoned")]
    SessionsRevokeAbandoned,
    /// The deny policy of a session revocation could not be put on a role; retried.
    #[serde(rename = "sessions.revoke_failed")]
    SessionsRevokeFailed,
    /// The deny policy of a session revocation is on a role: the principal's sessions issued
    /// before the revocation stop working.
    #[serde(rename = "sessions.revoked")]
    SessionsRevoked,
    /// A revocation's deny policy could not be removed from a role; retried (the deny stays).
    #[serde(rename = "sessions.unrevoke_failed")]
    SessionsUnrevokeFailed,
    /// A revocation's deny policy was removed once no session it denies could still be alive.
    #[serde(rename = "sessions.unrevoked")]
    SessionsUnrevoked,
    /// The policy allowed an SSH key push; written before EC2 Instance Connect is called.
    #[serde(rename = "ssh.authorized")]
    SshAuthorized,
    /// The policy, an invariant or the catalog refused an SSH key push.
    #[serde(rename = "ssh.denied")]
    SshDenied,
    /// An allowed push could not be carried out (EC2 Instance Connect refused or failed).
    #[serde(rename = "ssh.failed")]
    SshFailed,
    /// EC2 Instance Connect accepted the key; written before the answer.
    #[serde(rename = "ssh.pushed")]
    SshPushed,
    /// A principal went over its grant rate asking for a push; written once per window.
    #[serde(rename = "ssh.rate_limited")]
    SshRateLimited,
    /// A new TLS certificate or key was unusable; the certificate in force stays.
    #[serde(rename = "tls.reload_failed")]
    TlsReloadFailed,
    /// A new TLS certificate is about to be served; written before it is.
    #[serde(rename = "tls.reloaded")]
    TlsReloaded,
}

impl EventKind {
    /// Every kind, in alphabetical order of its name.
    pub const ALL: [EventKind; 31] = [
        EventKind::AuditRead,
        EventKind::CredentialsAuthorized,
        EventKind::CredentialsDenied,
        EventKind::CredentialsFailed,
        EventKind::CredentialsIssued,
        EventKind::CredentialsRateLimited,
        EventKind::PolicyReloadFailed,
        EventKind::PolicyReloaded,
        EventKind::RequestActivated,
        EventKind::RequestApproved,
        EventKind::RequestCancelled,
        EventKind::RequestCreated,
        EventKind::RequestDenied,
        EventKind::RequestEmergencyActivated,
        EventKind::RequestExpired,
        EventKind::RequestRefused,
        EventKind::RequestReviewed,
        EventKind::RequestRevoked,
        EventKind::ServerStarted,
        EventKind::SessionsRevokeAbandoned,
        EventKind::SessionsRevokeFailed,
        EventKind::SessionsRevoked,
        EventKind::SessionsUnrevokeFailed,
        EventKind::SessionsUnrevoked,
        EventKind::SshAuthorized,
        EventKind::SshDenied,
        EventKind::SshFailed,
        EventKind::SshPushed,
        EventKind::SshRateLimited,
        EventKind::TlsReloadFailed,
        EventKind::TlsReloaded,
    ];

    /// The dotted name, as stored and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AuditRead => "audit.read",
            EventKind::CredentialsAuthorized => "credentials.authorized",
            EventKind::CredentialsDenied => "credentials.denied",
            EventKind::CredentialsFailed => "credentials.failed",
            EventKind::CredentialsIssued => "credentials.issued",
            EventKind::CredentialsRateLimited => "credentials.rate_limited",
            EventKind::PolicyReloadFailed => "policy.reload_failed",
            EventKind::PolicyReloaded => "policy.reloaded",
            EventKind::RequestActivated => "request.activated",
            EventKind::RequestApproved => "request.approved",
            EventKind::RequestCancelled => "request.cancelled",
            EventKind::RequestCreated => "request.created",
            EventKind::RequestDenied => "request.denied",
            EventKind::RequestEmergencyActivated => "request.emergency_activated",
            EventKind::RequestExpired => "request.expired",
            EventKind::RequestRefused => "request.refused",
            EventKind::RequestReviewed => "request.reviewed",
            EventKind::RequestRevoked => "request.revoked",
            EventKind::ServerStarted => "server.started",
            EventKind::SessionsRevokeAbandoned => "sessions.revoke_abandoned",
            EventKind::SessionsRevokeFailed => "sessions.revoke_failed",
            EventKind::SessionsRevoked => "sessions.revoked",
            EventKind::SessionsUnrevokeFailed => "sessions.unrevoke_failed",
            EventKind::SessionsUnrevoked => "sessions.unrevoked",
            EventKind::SshAuthorized => "ssh.authorized",
            EventKind::SshDenied => "ssh.denied",
            EventKind::SshFailed => "ssh.failed",
            EventKind::SshPushed => "ssh.pushed",
            EventKind::SshRateLimited => "ssh.rate_limited",
            EventKind::TlsReloadFailed => "tls.reload_failed",
            EventKind::TlsReloaded => "tls.reloaded",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEvent(s.to_owned()))
    }
}

/// A text that names no [`EventKind`].
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("unknown audit event `{0}`")]
pub struct UnknownEvent(pub String);

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_serializes_to_its_dotted_name_and_back() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.to_string(), kind.as_str());
            let back: EventKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn a_record_written_with_a_string_event_reads_back_and_hashes_the_same() {
        // The canonical text of a `credentials.denied` record as written before events were typed.
        let stored = concat!(
            r#"{"actor":{"email":null,"groups":[],"issuer":"https://idp","subject":"s"},"#,
            r#""client_addr":null,"decision":"deny","details":{"reasons":["unknown role `x`"]},"#,
            r#""event":"credentials.denied","request_id":null,"target":{"role":"x"},"#,
            r#""time":"2026-11-28T13:48:00.000000Z","user_agent":null}"#
        );
        let event: crate::audit::AuditEvent = serde_json::from_str(stored).unwrap();
        assert_eq!(event.event, EventKind::CredentialsDenied);
        let again = crate::audit::CanonicalEvent::new(event).unwrap();
        assert_eq!(again.text(), stored);
    }

    #[test]
    fn all_lists_every_kind_once_in_order_of_its_name() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(names.contains(&"ssh.pushed"), "{names:?}");
    }

    #[test]
    fn an_unknown_name_does_not_read_as_a_kind() {
        assert!(serde_json::from_str::<EventKind>("\"credentials.Issued\"").is_err());
    }
}
