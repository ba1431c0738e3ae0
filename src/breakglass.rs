//! Break-glass requests: the state machine, pure.
//!
//! A person asks for a role they may not assume ([`Request::create`]); other people approve it
//! ([`Request::approve`]) until the role's number of distinct approvals is reached, and the
//! request becomes `active`: for its window, its requester may get credentials for the role.
//!
//! ```text
//! pending ──approve (last)──▶ active ──revoke──▶ revoked
//!    │                          └──window ends──▶ expired
//!    ├──deny──▶ denied
//!    ├──cancel─▶ cancelled
//!    └──ttl ends──▶ expired
//! emergency: created active, needs_review until someone else reviews it (any state)
//! ```
//!
//! Pure: no I/O, no clock (time is an argument), no policy evaluation. Each operation takes the
//! request as stored and returns a [`Transition`] (the request after, and the version it
//! expects to replace) or a typed [`Refusal`]. The broker asks Cedar who may request and approve,
//! and the store applies a transition only if the stored version is still the one it read
//! (compare-and-swap), so a transition decided on a stale read never lands.
//!
//! INVARIANT (no policy can override these):
//! - the requester never approves, denies or reviews their own request, compared by
//!   (issuer, subject), never by email ([`Person`]);
//! - each person counts once, however often they approve and through whichever group;
//! - a denied, cancelled, expired or revoked request never changes again, except that an
//!   emergency activation can still be reviewed;
//! - an approval binds to the request's [`digest`] of (role, duration, reason, ticket,
//!   requester), and only approvals of that digest count; a request is never edited;
//! - approving and reviewing need a fresh login ([`Freshness`]): `auth_time` within the limit,
//!   a second factor unless configured otherwise, and not a login the issuer marks as coming
//!   from the device flow.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::policy::{MIN_DURATION_SECS, Role, TicketError, human_duration};

/// A person, compared by issuer and subject: never by email or name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Person {
    /// The issuer, as configured.
    pub issuer: String,
    /// The subject within the issuer.
    pub subject: String,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for approvals.
    Pending,
    /// Approved (or an emergency): the requester may get credentials until the window ends.
    Active,
    /// Denied by an approver.
    Denied,
    /// Cancelled by its requester while pending.
    Cancelled,
    /// Revoked while active.
    Revoked,
    /// Past its TTL while pending, or past its window while active.
    Expired,
}

/// One approval of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Who approved.
    pub approver: Person,
    /// Their readable name (email or user name), for people; never compared.
    pub approver_name: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// The digest of the request as the approver approved it.
    pub digest: String,
    /// What they said, if anything.
    pub comment: Option<String>,
}

/// A break-glass request, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request's id (a UUID).
    pub id: String,
    /// The catalog role asked for.
    pub role: String,
    /// Who asked.
    pub requester: Person,
    /// The requester's readable name, for people; never compared.
    pub requester_name: Option<String>,
    /// Why (required).
    pub reason: String,
    /// The incident or change ticket, if any.
    pub ticket: Option<String>,
    /// The grant window asked for, in seconds.
    pub duration_secs: u32,
    /// An emergency self-activation.
    pub emergency: bool,
    /// Distinct approvals needed (the role's, when the request was made).
    pub approvals_required: u32,
    /// [`digest`] of what was asked.
    pub digest: String,
    /// Where it stands.
    pub state: State,
    /// An emergency activation nobody else has reviewed yet.
    pub needs_review: bool,
    /// The approvals, in the order they landed.
    pub approvals: Vec<Approval>,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When a pending request expires.
    pub expires_at: DateTime<Utc>,
    /// When it became active.
    pub activated_at: Option<DateTime<Utc>>,
    /// When an active request's window ends.
    pub window_ends_at: Option<DateTime<Utc>>,
    /// When it was denied, cancelled, revoked or expired.
    pub closed_at: Option<DateTime<Utc>>,
    /// Who denied, cancelled or revoked it (nobody for an expiry).
    pub closed_by: Option<Person>,
    /// What they said.
    pub close_comment: Option<String>,
    /// Who reviewed an emergency activation.
    pub reviewed_by: Option<Person>,
    /// When.
    pub reviewed_at: Option<DateTime<Utc>>,
    /// What they said.
    pub review_comment: Option<String>,
    /// Bumped by every transition; the store's compare-and-swap checks it.
    pub version: i64,
}

/// What a requester asks for, checked by [`Request::create`].
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The role, from the catalog in force.
    pub role: &'a Role,
    /// Who asks.
    pub requester: &'a Identity,
    /// Why: already checked as printable text of at most 1 KiB by the caller.
    pub reason: &'a str,
    /// The ticket, if given.
    pub ticket: Option<&'a str>,
    /// The window asked for; the role's `max_window` when absent.
    pub duration_secs: Option<u32>,
    /// Activate at once, for review later.
    pub emergency: bool,
}

/// What an approver's (or reviewer's) login must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The oldest `auth_time` accepted.
    pub max_auth_age: Duration,
    /// Whether a second factor is required.
    pub requires_mfa: bool,
}

/// What a transition did, for the audit record and the notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A request was made and waits for approvals.
    Created,
    /// An emergency request activated itself at once.
    EmergencyActivated,
    /// An approval landed; more are needed.
    Approved,
    /// The last approval landed: the request is active.
    Activated,
    /// An approver denied it.
    Denied,
    /// Its requester cancelled it.
    Cancelled,
    /// It was revoked while active.
    Revoked,
    /// Its TTL or its window ended.
    Expired,
    /// Someone other than the requester reviewed an emergency activation.
    Reviewed,
}

/// A change to one request, ready for the store's compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// What happened.
    pub event: Event,
    /// The stored version this replaces; `None` for a new request.
    pub expected_version: Option<i64>,
    /// The request after the change (its `version` is the new one).
    pub request: Request,
    /// The approval this transition adds, if any.
    pub approval: Option<Approval>,
}

/// Why an operation on a request is refused. Messages never quote user text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request was already decided, cancelled, revoked or expired (or, for a revoke, is not
    /// active).
    #[error("the request is {state} and can no longer be changed")]
    AlreadyDecided {
        /// Its state (expired also for one past its deadline that the sweeper has not seen).
        state: State,
    },
    /// This person approved the request already; it counts once.
    #[error("you approved this request already; each person counts once")]
    AlreadyApproved,
    /// The login comes from the device flow, which the issuer marks and approvals refuse.
    #[error(
        "approvals need a login in the browser on this machine, not the device flow; run `latchkey login`"
    )]
    DeviceFlow,
    /// The window asked for is outside what the role allows.
    #[error("the window must be {min} to {max} for `{role}`")]
    Duration {
        /// The role.
        role: String,
        /// The shortest window.
        min: String,
        /// The role's `max_window`.
        max: String,
    },
    /// The role does not allow emergency self-activation.
    #[error("`{role}` does not allow emergency self-activation; ask for approvals instead")]
    EmergencyNotAllowed {
        /// The role.
        role: String,
    },
    /// The approver's login has no second factor.
    #[error("approvals need a login with a second factor; run `latchkey login` with MFA")]
    MfaRequired,
    /// Only the requester may do this (cancel).
    #[error("only the requester may cancel a request")]
    NotRequester,
    /// The role cannot be requested: its catalog entry has no `break_glass`.
    #[error("`{role}` cannot be requested (the catalog gives it no `break_glass`)")]
    NotRequestable {
        /// The role.
        role: String,
    },
    /// Nothing to review: not an emergency activation, or reviewed already.
    #[error("the request needs no review")]
    NotReviewable,
    /// A break-glass request needs a reason.
    #[error("a break-glass request needs a reason")]
    ReasonRequired,
    /// The requester tried to approve, deny or review their own request.
    #[error("you cannot approve, deny or review your own request")]
    SelfApproval,
    /// The login is older than the freshness limit, or does not say when it happened.
    #[error("approvals need a login within the last {max_auth_age}; run `latchkey login` again")]
    StaleLogin {
        /// The limit, as configured.
        max_auth_age: String,
    },
    /// The stored request does not hash to its digest: it was changed outside latchkey.
    #[error("the stored request does not match its digest; it was changed outside latchkey")]
    Tampered,
    /// The ticket is missing, malformed or does not match the role's pattern.
    #[error(transparent)]
    Ticket(TicketError),
}

// === impl Refusal ===

impl Refusal {
    /// The stable code of the refusal, as the API answers it and the audit records it.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::AlreadyDecided { .. } => "already_decided",
            Refusal::AlreadyApproved => "already_approved",
            Refusal::DeviceFlow => "device_flow_refused",
            Refusal::Duration { .. } => "duration_invalid",
            Refusal::EmergencyNotAllowed { .. } => "emergency_not_allowed",
            Refusal::MfaRequired => "mfa_required",
            Refusal::NotRequester => "not_requester",
            Refusal::NotRequestable { .. } => "not_requestable",
            Refusal::NotReviewable => "not_reviewable",
            Refusal::ReasonRequired => "reason_required",
            Refusal::SelfApproval => "self_approval",
            Refusal::StaleLogin { .. } => "stale_login",
            Refusal::Tampered => "request_tampered",
            Refusal::Ticket(_) => "ticket_invalid",
        }
    }
}

// === impl Person ===

impl Person {
    /// The person behind a verified identity.
    pub fn of(id: &Identity) -> Self {
        Self {
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
        }
    }

    /// `issuer#subject`, the principal id everywhere in latchkey.
    pub fn id(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }

    /// Whether `id` is this person.
    pub fn is(&self, id: &Identity) -> bool {
        self.issuer == id.issuer && self.subject == id.subject
    }
}

impl fmt::Display for Person {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.issuer, self.subject)
    }
}

// === impl State ===

impl State {
    /// Every state, in the order of the diagram.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Active,
        State::Denied,
        State::Cancelled,
        State::Revoked,
        State::Expired,
    ];

    /// The state's name, as stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::Revoked => "revoked",
            State::Expired => "expired",
        }
    }

    /// Whether nothing but a review can change a request in this state.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Pending | State::Active)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A text that names no [`State`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request state `{0}`: use pending, active, denied, cancelled, revoked or expired")]
pub struct UnknownState(pub String);

// === impl Event ===

impl Event {
    /// The state a request is in after this event, unless the event is a review.
    fn state(self) -> Option<State> {
        match self {
            Event::Created | Event::Approved => Some(State::Pending),
            Event::EmergencyActivated | Event::Activated => Some(State::Active),
            Event::Denied => Some(State::Denied),
            Event::Cancelled => Some(State::Cancelled),
            Event::Revoked => Some(State::Revoked),
            Event::Expired => Some(State::Expired),
            Event::Reviewed => None,
        }
    }
}

// === impl Request ===

impl Request {
    /// A new request for `ask`, with the id `id`, made at `now`: pending, or active at once
    /// and flagged for review when it is an emergency the role allows.
    ///
    /// # Errors
    ///
    /// [`Refusal::NotRequestable`], [`Refusal::ReasonRequired`], [`Refusal::Duration`],
    /// [`Refusal::Ticket`] or [`Refusal::EmergencyNotAllowed`].
    pub fn create(ask: &Ask<'_>, id: String, now: DateTime<Utc>) -> Result<Transition, Refusal> {
        let role = ask.role.name().to_owned();
        let bg = ask
            .role
            .break_glass()
            .ok_or_else(|| Refusal::NotRequestable { role: role.clone() })?;
        if ask.reason.trim().is_empty() {
            return Err(Refusal::ReasonRequired);
        }
        if ask.emergency && !bg.emergency() {
            return Err(Refusal::EmergencyNotAllowed { role });
        }
        let max = bg.max_window();
        let duration_secs = match ask.duration_secs {
            None => u32::try_from(max.as_secs()).unwrap_or(u32::MAX),
            Some(d) if (MIN_DURATION_SECS..=max.as_secs()).contains(&u64::from(d)) => d,
            Some(_) => {
                return Err(Refusal::Duration {
                    role,
                    min: human_duration(Duration::from_secs(MIN_DURATION_SECS)),
                    max: human_duration(max),
                });
            }
        };
        // SECURITY: an emergency needs a ticket even where the role's pattern does not ask
        // for one: it is how someone else reviews it.
        let ticket = bg
            .check_ticket(&role, ask.ticket, ask.emergency)
            .map_err(Refusal::Ticket)?;
        let now = whole_seconds(now);
        let requester = Person::of(ask.requester);
        let digest = digest(
            &role,
            duration_secs,
            ask.reason,
            ticket.as_deref(),
            &requester,
        );
        let window_ends_at = ask.emergency.then(|| add(now, u64::from(duration_secs)));
        let request = Request {
            id,
            role,
            requester,
            requester_name: Some(ask.requester.readable_name().to_owned()),
            reason: ask.reason.to_owned(),
            ticket,
            duration_secs,
            emergency: ask.emergency,
            approvals_required: bg.approvals(),
            digest,
            state: if ask.emergency {
                State::Active
            } else {
                State::Pending
            },
            needs_review: ask.emergency,
            approvals: Vec::new(),
            created_at: now,
            expires_at: add(now, bg.request_ttl().as_secs()),
            activated_at: ask.emergency.then_some(now),
            window_ends_at,
            closed_at: None,
            closed_by: None,
            close_comment: None,
            reviewed_by: None,
            reviewed_at: None,
            review_comment: None,
            version: 1,
        };
        Ok(Transition {
            event: if ask.emergency {
                Event::EmergencyActivated
            } else {
                Event::Created
            },
            expected_version: None,
            request,
            approval: None,
        })
    }

    /// `approver` approves at `now`; the approval binds to the request's digest. The request
    /// becomes active when this is the last approval needed.
    ///
    /// # Errors
    ///
    /// [`Refusal::Tampered`], [`Refusal::SelfApproval`], [`Refusal::AlreadyDecided`],
    /// [`Refusal::StaleLogin`], [`Refusal::MfaRequired`], [`Refusal::DeviceFlow`] or
    /// [`Refusal::AlreadyApproved`].
    pub fn approve(
        &self,
        approver: &Identity,
        comment: Option<&str>,
        fresh: &Freshness,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        self.check_integrity()?;
        // INVARIANT: checked before anything a policy could influence.
        if self.requester.is(approver) {
            return Err(Refusal::SelfApproval);
        }
        self.expect(State::Pending, now)?;
        fresh.check(approver, now)?;
        let person = Person::of(approver);
        if self.approvals.iter().any(|a| a.approver == person) {
            return Err(Refusal::AlreadyApproved);
        }
        let now = whole_seconds(now);
        let approval = Approval {
            approver: person,
            approver_name: Some(approver.readable_name().to_owned()),
            at: now,
            digest: self.digest.clone(),
            comment: comment.map(str::to_owned),
        };
        let mut next = self.next();
        next.approvals.push(approval.clone());
        let event = if next.approvals_counted() >= self.approvals_required {
            next.state = State::Active;
            next.activated_at = Some(now);
            next.window_ends_at = Some(add(now, u64::from(self.duration_secs)));
            Event::Activated
        } else {
            Event::Approved
        };
        Ok(self.transition(event, next, Some(approval)))
    }

    /// `approver` denies the pending request at `now`.
    ///
    /// # Errors
    ///
    /// [`Refusal::SelfApproval`] (the requester cancels instead) or
    /// [`Refusal::AlreadyDecided`].
    pub fn deny(
        &self,
        approver: &Identity,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        if self.requester.is(approver) {
            return Err(Refusal::SelfApproval);
        }
        self.expect(State::Pending, now)?;
        Ok(self.close(Event::Denied, Some(approver), comment, now))
    }

    /// The requester cancels the pending request at `now`.
    ///
    /// # Errors
    ///
    /// [`Refusal::NotRequester`] or [`Refusal::AlreadyDecided`].
    pub fn cancel(
        &self,
        requester: &Identity,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        if !self.requester.is(requester) {
            return Err(Refusal::NotRequester);
        }
        self.expect(State::Pending, now)?;
        Ok(self.close(Event::Cancelled, Some(requester), comment, now))
    }

    /// `actor` revokes the active request at `now`: no credentials are issued for it from then
    /// on. Who may revoke (the requester, or someone who may approve the role) is the caller's
    /// to decide.
    ///
    /// # Errors
    ///
    /// [`Refusal::AlreadyDecided`] when the request is not active (or its window has ended).
    pub fn revoke(
        &self,
        actor: &Identity,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        self.expect(State::Active, now)?;
        Ok(self.close(Event::Revoked, Some(actor), comment, now))
    }

    /// `reviewer` reviews an emergency activation at `now`, in whatever state it is.
    ///
    /// # Errors
    ///
    /// [`Refusal::SelfApproval`], [`Refusal::NotReviewable`], [`Refusal::StaleLogin`],
    /// [`Refusal::MfaRequired`] or [`Refusal::DeviceFlow`].
    pub fn review(
        &self,
        reviewer: &Identity,
        comment: Option<&str>,
        fresh: &Freshness,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        if self.requester.is(reviewer) {
            return Err(Refusal::SelfApproval);
        }
        if !self.needs_review {
            return Err(Refusal::NotReviewable);
        }
        fresh.check(reviewer, now)?;
        let mut next = self.next();
        next.needs_review = false;
        next.reviewed_by = Some(Person::of(reviewer));
        next.reviewed_at = Some(whole_seconds(now));
        next.review_comment = comment.map(str::to_owned);
        Ok(self.transition(Event::Reviewed, next, None))
    }

    /// The expiry due at `now`: a pending request past its TTL, or an active one past its
    /// window. `None` when nothing is due.
    pub fn expire(&self, now: DateTime<Utc>) -> Option<Transition> {
        self.is_due(now)
            .then(|| self.close(Event::Expired, None, None, now))
    }

    /// Whether an expiry is due at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            State::Pending => now >= self.expires_at,
            State::Active => self.window_ends_at.is_none_or(|end| now >= end),
            State::Denied | State::Cancelled | State::Revoked | State::Expired => false,
        }
    }

    /// The state as of `now`: a pending or active request whose deadline has passed is
    /// expired, whether or not the sweeper has written so yet.
    pub fn state_at(&self, now: DateTime<Utc>) -> State {
        if self.is_due(now) {
            State::Expired
        } else {
            self.state
        }
    }

    /// How long the window still runs at `now`, for an active request; `None` otherwise.
    pub fn window_left(&self, now: DateTime<Utc>) -> Option<Duration> {
        if self.state_at(now) != State::Active {
            return None;
        }
        let end = self.window_ends_at?;
        (end - now).to_std().ok()
    }

    /// Distinct people whose approval of this request's digest counts.
    pub fn approvals_counted(&self) -> u32 {
        let mut people: Vec<&Person> = self
            .approvals
            .iter()
            .filter(|a| a.digest == self.digest && a.approver != self.requester)
            .map(|a| &a.approver)
            .collect();
        people.sort();
        people.dedup();
        u32::try_from(people.len()).unwrap_or(u32::MAX)
    }

    /// Checks that the stored fields still hash to the stored digest.
    ///
    /// # Errors
    ///
    /// [`Refusal::Tampered`] when they do not.
    pub fn check_integrity(&self) -> Result<(), Refusal> {
        let recomputed = digest(
            &self.role,
            self.duration_secs,
            &self.reason,
            self.ticket.as_deref(),
            &self.requester,
        );
        if recomputed == self.digest {
            Ok(())
        } else {
            Err(Refusal::Tampered)
        }
    }

    /// Refuses unless the request is in `state` at `now`.
    fn expect(&self, state: State, now: DateTime<Utc>) -> Result<(), Refusal> {
        let actual = self.state_at(now);
        if actual == state {
            Ok(())
        } else {
            Err(Refusal::AlreadyDecided { state: actual })
        }
    }

    /// The request with its version bumped, to change.
    fn next(&self) -> Request {
        Request {
            version: self.version.saturating_add(1),
            ..self.clone()
        }
    }

    fn close(
        &self,
        event: Event,
        actor: Option<&Identity>,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Transition {
        let mut next = self.next();
        if let Some(state) = event.state() {
            next.state = state;
        }
        next.closed_at = Some(whole_seconds(now));
        next.closed_by = actor.map(Person::of);
        next.close_comment = comment.map(str::to_owned);
        self.transition(event, next, None)
    }

    fn transition(&self, event: Event, request: Request, approval: Option<Approval>) -> Transition {
        Transition {
            event,
            expected_version: Some(self.version),
            request,
            approval,
        }
    }
}

// === impl Freshness ===

impl Freshness {
    /// Checks that `id`'s login is fresh enough at `now` to approve or review.
    ///
    /// # Errors
    ///
    /// [`Refusal::DeviceFlow`], [`Refusal::MfaRequired`] or [`Refusal::StaleLogin`] (also when
    /// the token has no `auth_time`: its `iat` says nothing about when the person logged in).
    pub fn check(&self, id: &Identity, now: DateTime<Utc>) -> Result<(), Refusal> {
        if id.device_flow {
            return Err(Refusal::DeviceFlow);
        }
        if self.requires_mfa && !id.mfa {
            return Err(Refusal::MfaRequired);
        }
        let max = i64::try_from(self.max_auth_age.as_secs()).unwrap_or(i64::MAX);
        let fresh = id
            .auth_time
            .is_some_and(|t| now.timestamp().saturating_sub(t) <= max);
        if fresh {
            Ok(())
        } else {
            Err(Refusal::StaleLogin {
                max_auth_age: human_duration(self.max_auth_age),
            })
        }
    }
}

/// SHA-256 of what was asked: role, window, reason, ticket and requester, each length-prefixed
/// after a domain separator, so no two different requests share a digest by moving text from
/// one field to the next. Lowercase hex.
pub fn digest(
    role: &str,
    duration_secs: u32,
    reason: &str,
    ticket: Option<&str>,
    requester: &Person,
) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let duration = duration_secs.to_string();
    let ticket_present = if ticket.is_some() { "1" } else { "0" };
    for part in [
        DIGEST_DOMAIN,
        role,
        &duration,
        reason,
        ticket_present,
        ticket.unwrap_or_default(),
        &requester.issuer,
        &requester.subject,
    ] {
        ctx.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

/// `now` without its fraction of a second: every time a request holds is whole seconds, so
/// both stores keep it exactly.
pub fn whole_seconds(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

fn add(t: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    let delta = i64::try_from(secs)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .unwrap_or(TimeDelta::MAX);
    t.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

const DIGEST_DOMAIN: &str = "latchkey.breakglass.request.v1";

#[cfg(test)]
mod tests;
