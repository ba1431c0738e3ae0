//! The state machine, exhaustively: every transition, every refusal, and random sequences of
//! operations by random people that must never break an invariant.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::policy::{PolicySet, Sources};

const T0: i64 = 1_900_000_000;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + secs, 0).unwrap()
}

fn policy(break_glass: &str) -> PolicySet {
    let catalog = format!(
        "[[role]]\nname = \"prod-admin\"\narn = \"arn:aws:iam::222222222222:role/ProdAdmin\"\n\
         max_duration = \"1h\"\n{break_glass}\n\
         [[role]]\nname = \"readonly\"\narn = \"arn:aws:iam::222222222222:role/ReadOnly\"\n\
         max_duration = \"1h\"\n"
    );
    PolicySet::from_sources(&Sources {
        catalog,
        schema: include_str!("../../policies/latchkey.cedarschema").to_owned(),
        policies: Vec::new(),
        files: BTreeMap::new(),
    })
    .unwrap()
}

fn standard() -> PolicySet {
    policy(
        "break_glass = { approvals = 2, request_ttl = \"1h\", max_window = \"4h\", \
         ticket_pattern = \"INC-[0-9]+\", emergency = true }",
    )
}

/// A person of the default issuer, logged in 60 s before `T0` with MFA.
fn person(subject: &str) -> Identity {
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        groups: vec!["engineering".into()],
        attributes: BTreeMap::new(),
        mfa: true,
        auth_time: Some(T0 - 60),
        issued_at: T0 - 60,
        expires_at: T0 + 3600,
        readable_name: format!("{subject}@example.com"),
        device_flow: false,
    }
}

fn fresh() -> Freshness {
    Freshness {
        max_auth_age: Duration::from_secs(15 * 60),
        requires_mfa: true,
    }
}

fn ask<'a>(set: &'a PolicySet, requester: &'a Identity) -> Ask<'a> {
    Ask {
        role: set.role("prod-admin").unwrap(),
        requester,
        reason: "database on fire",
        ticket: Some("INC-42"),
        duration_secs: Some(3600),
        emergency: false,
    }
}

fn pending(set: &PolicySet) -> Request {
    Request::create(&ask(set, &person("grace")), "r-1".into(), at(0))
        .unwrap()
        .request
}

/// Applies a transition the way the store does: only over the version it expects.
fn apply(before: &Request, t: Transition) -> Request {
    assert_eq!(t.expected_version, Some(before.version));
    assert_eq!(t.request.version, before.version + 1);
    t.request
}

fn active(set: &PolicySet) -> Request {
    let r = pending(set);
    let r = apply(
        &r,
        r.approve(&person("dave"), None, &fresh(), at(10)).unwrap(),
    );
    apply(
        &r,
        r.approve(&person("frank"), None, &fresh(), at(20)).unwrap(),
    )
}

#[test]
fn a_new_request_is_pending_with_its_ttl_digest_and_first_version() {
    let set = standard();
    let grace = person("grace");
    let t = Request::create(&ask(&set, &grace), "r-1".into(), at(0)).unwrap();
    assert_eq!(t.event, Event::Created);
    assert_eq!(t.expected_version, None);
    let r = t.request;
    assert_eq!(r.state, State::Pending);
    assert_eq!(r.requester, Person::of(&grace));
    assert_eq!(r.approvals_required, 2);
    assert_eq!(r.duration_secs, 3600);
    assert_eq!(r.expires_at, at(3600));
    assert_eq!(r.window_ends_at, None);
    assert_eq!(r.version, 1);
    assert!(!r.needs_review);
    assert_eq!(r.ticket.as_deref(), Some("INC-42"));
    assert_eq!(
        r.digest,
        digest(
            "prod-admin",
            3600,
            "database on fire",
            Some("INC-42"),
            &r.requester
        )
    );
    r.check_integrity().unwrap();
}

#[test]
fn the_window_defaults_to_the_roles_max_window() {
    let set = standard();
    let grace = person("grace");
    let a = Ask {
        duration_secs: None,
        ..ask(&set, &grace)
    };
    let r = Request::create(&a, "r".into(), at(0)).unwrap().request;
    assert_eq!(r.duration_secs, 4 * 3600);
}

#[test]
fn times_are_kept_in_whole_seconds() {
    let set = standard();
    let grace = person("grace");
    let now = at(0) + TimeDelta::milliseconds(999);
    let r = Request::create(&ask(&set, &grace), "r".into(), now)
        .unwrap()
        .request;
    assert_eq!(r.created_at, at(0));
}

#[test]
fn each_malformed_ask_is_refused() {
    let set = standard();
    let grace = person("grace");
    let refused = |a: Ask<'_>| Request::create(&a, "r".into(), at(0)).unwrap_err();
    assert_eq!(
        refused(Ask {
            role: set.role("readonly").unwrap(),
            ..ask(&set, &grace)
        }),
        Refusal::NotRequestable {
            role: "readonly".into()
        }
    );
    assert_eq!(
        refused(Ask {
            reason: "  ",
            ..ask(&set, &grace)
        }),
        Refusal::ReasonRequired
    );
    for d in [0, 899, 4 * 3600 + 1] {
        assert!(
            matches!(
                refused(Ask {
                    duration_secs: Some(d),
                    ..ask(&set, &grace)
                }),
                Refusal::Duration { .. }
            ),
            "{d}"
        );
    }
    for d in [900, 4 * 3600] {
        Request::create(
            &Ask {
                duration_secs: Some(d),
                ..ask(&set, &grace)
            },
            "r".into(),
            at(0),
        )
        .unwrap();
    }
    assert!(matches!(
        refused(Ask {
            ticket: None,
            ..ask(&set, &grace)
        }),
        Refusal::Ticket(TicketError::Missing { .. })
    ));
    assert!(matches!(
        refused(Ask {
            ticket: Some("CHG-1"),
            ..ask(&set, &grace)
        }),
        Refusal::Ticket(TicketError::NoMatch { .. })
    ));
}

#[test]
fn an_emergency_is_active_at_once_flagged_for_review_and_needs_a_ticket() {
    let set = policy("break_glass = { approvals = 2, emergency = true }");
    let grace = person("grace");
    let a = Ask {
        emergency: true,
        ..ask(&set, &grace)
    };
    let t = Request::create(&a, "r".into(), at(0)).unwrap();
    assert_eq!(t.event, Event::EmergencyActivated);
    let r = t.request;
    assert_eq!(r.state, State::Active);
    assert!(r.needs_review);
    assert_eq!(r.activated_at, Some(at(0)));
    assert_eq!(r.window_ends_at, Some(at(3600)));
    assert_eq!(r.window_left(at(600)), Some(Duration::from_secs(3000)));

    let without_ticket = Ask {
        ticket: None,
        ..a.clone()
    };
    assert!(matches!(
        Request::create(&without_ticket, "r".into(), at(0)),
        Err(Refusal::Ticket(TicketError::Missing { .. }))
    ));
    let not_allowed = policy("break_glass = { approvals = 2 }");
    let a = Ask {
        role: not_allowed.role("prod-admin").unwrap(),
        ..a
    };
    assert_eq!(
        Request::create(&a, "r".into(), at(0)).unwrap_err(),
        Refusal::EmergencyNotAllowed {
            role: "prod-admin".into()
        }
    );
}

#[test]
fn the_last_approval_activates_and_the_window_starts_then() {
    let set = standard();
    let r = pending(&set);
    let t = r
        .approve(&person("dave"), Some("ok"), &fresh(), at(100))
        .unwrap();
    assert_eq!(t.event, Event::Approved);
    let approval = t.approval.clone().unwrap();
    assert_eq!(approval.approver, Person::of(&person("dave")));
    assert_eq!(approval.digest, r.digest);
    assert_eq!(approval.comment.as_deref(), Some("ok"));
    let r = apply(&r, t);
    assert_eq!(r.state, State::Pending);
    assert_eq!(r.approvals_counted(), 1);

    let t = r
        .approve(&person("frank"), None, &fresh(), at(200))
        .unwrap();
    assert_eq!(t.event, Event::Activated);
    let r = apply(&r, t);
    assert_eq!(r.state, State::Active);
    assert_eq!(r.activated_at, Some(at(200)));
    // The window starts at the approval, not at the request.
    assert_eq!(r.window_ends_at, Some(at(200 + 3600)));
    assert_eq!(r.approvals_counted(), 2);
}

#[test]
fn one_approval_is_enough_where_the_role_asks_for_one() {
    let set = policy("break_glass = { approvals = 1 }");
    let grace = person("grace");
    let a = Ask {
        ticket: None,
        ..ask(&set, &grace)
    };
    let r = Request::create(&a, "r".into(), at(0)).unwrap().request;
    let t = r.approve(&person("dave"), None, &fresh(), at(1)).unwrap();
    assert_eq!(t.event, Event::Activated);
}

#[test]
fn the_requester_never_approves_compared_by_issuer_and_subject() {
    let set = standard();
    let r = pending(&set);
    let mut same = person("grace");
    same.email = Some("someone-else@example.com".into());
    same.readable_name = "not grace".into();
    same.groups = vec!["prod-approvers".into()];
    assert_eq!(
        r.approve(&same, None, &fresh(), at(1)).unwrap_err(),
        Refusal::SelfApproval
    );
    assert_eq!(
        r.deny(&same, None, at(1)).unwrap_err(),
        Refusal::SelfApproval
    );
    // Another issuer's `grace` is another person.
    let mut elsewhere = person("grace");
    elsewhere.issuer = "https://other-idp.example.com".into();
    let r = apply(&r, r.approve(&elsewhere, None, &fresh(), at(1)).unwrap());
    assert_eq!(r.approvals_counted(), 1);
    // A person with grace's email but another subject is another person too.
    let mut lookalike = person("grace2");
    lookalike.email = Some("grace@example.com".into());
    let r = apply(&r, r.approve(&lookalike, None, &fresh(), at(2)).unwrap());
    assert_eq!(r.state, State::Active);
}

#[test]
fn the_same_person_counts_once_however_often_and_however_named() {
    let set = standard();
    let r = pending(&set);
    let r = apply(
        &r,
        r.approve(&person("dave"), None, &fresh(), at(1)).unwrap(),
    );
    let mut again = person("dave");
    again.groups = vec!["another-approver-group".into()];
    again.email = Some("dave.alias@example.com".into());
    assert_eq!(
        r.approve(&again, None, &fresh(), at(2)).unwrap_err(),
        Refusal::AlreadyApproved
    );
    assert_eq!(r.approvals_counted(), 1);
    assert_eq!(r.state, State::Pending);
}

#[test]
fn only_approvals_of_the_requests_digest_count() {
    let set = standard();
    let mut r = pending(&set);
    r.approvals.push(Approval {
        approver: Person::of(&person("mallory")),
        approver_name: None,
        at: at(1),
        digest: "0".repeat(64),
        comment: None,
    });
    r.approvals.push(Approval {
        approver: r.requester.clone(),
        approver_name: None,
        at: at(1),
        digest: r.digest.clone(),
        comment: None,
    });
    assert_eq!(r.approvals_counted(), 0);
    let r = apply(
        &r,
        r.approve(&person("dave"), None, &fresh(), at(2)).unwrap(),
    );
    assert_eq!(r.state, State::Pending, "one counted approval of two");
}

#[test]
fn a_request_changed_behind_latchkeys_back_is_never_approved() {
    let set = standard();
    for tamper in [
        |r: &mut Request| r.reason.push('!'),
        |r: &mut Request| r.duration_secs += 1,
        |r: &mut Request| r.ticket = Some("INC-43".into()),
        |r: &mut Request| r.role = "readonly".into(),
        |r: &mut Request| r.requester.subject = "dave".into(),
    ] {
        let mut r = pending(&set);
        tamper(&mut r);
        assert_eq!(
            r.approve(&person("frank"), None, &fresh(), at(1))
                .unwrap_err(),
            Refusal::Tampered
        );
    }
}

#[test]
fn approving_needs_a_fresh_login_with_a_second_factor_outside_the_device_flow() {
    let set = standard();
    let r = pending(&set);
    let now = at(0);
    let mut stale = person("dave");
    stale.auth_time = Some(T0 - 15 * 60 - 1);
    assert_eq!(
        r.approve(&stale, None, &fresh(), now).unwrap_err(),
        Refusal::StaleLogin {
            max_auth_age: "15m".into()
        }
    );
    let mut edge = person("dave");
    edge.auth_time = Some(T0 - 15 * 60);
    r.approve(&edge, None, &fresh(), now).unwrap();

    let mut unknown = person("dave");
    unknown.auth_time = None;
    assert!(matches!(
        r.approve(&unknown, None, &fresh(), now).unwrap_err(),
        Refusal::StaleLogin { .. }
    ));

    let mut password_only = person("dave");
    password_only.mfa = false;
    assert_eq!(
        r.approve(&password_only, None, &fresh(), now).unwrap_err(),
        Refusal::MfaRequired
    );
    let lenient = Freshness {
        requires_mfa: false,
        ..fresh()
    };
    r.approve(&password_only, None, &lenient, now).unwrap();

    let mut device = person("dave");
    device.device_flow = true;
    assert_eq!(
        r.approve(&device, None, &lenient, now).unwrap_err(),
        Refusal::DeviceFlow
    );
}

#[test]
fn deny_and_cancel_close_a_pending_request_and_name_who() {
    let set = standard();
    let r = pending(&set);
    let t = r.deny(&person("dave"), Some("not now"), at(5)).unwrap();
    assert_eq!(t.event, Event::Denied);
    let denied = apply(&r, t);
    assert_eq!(denied.state, State::Denied);
    assert_eq!(denied.closed_by, Some(Person::of(&person("dave"))));
    assert_eq!(denied.closed_at, Some(at(5)));
    assert_eq!(denied.close_comment.as_deref(), Some("not now"));

    assert_eq!(
        r.cancel(&person("dave"), None, at(5)).unwrap_err(),
        Refusal::NotRequester
    );
    let t = r.cancel(&person("grace"), None, at(5)).unwrap();
    assert_eq!(t.event, Event::Cancelled);
    assert_eq!(apply(&r, t).state, State::Cancelled);
}

#[test]
fn revoke_ends_an_active_request_only() {
    let set = standard();
    let r = pending(&set);
    assert_eq!(
        r.revoke(&person("grace"), None, at(30)).unwrap_err(),
        Refusal::AlreadyDecided {
            state: State::Pending
        }
    );
    let a = active(&set);
    let t = a.revoke(&person("dave"), Some("done"), at(30)).unwrap();
    assert_eq!(t.event, Event::Revoked);
    let revoked = apply(&a, t);
    assert_eq!(revoked.state, State::Revoked);
    assert_eq!(revoked.window_left(at(31)), None);
    // The requester may revoke their own grant too.
    a.revoke(&person("grace"), None, at(30)).unwrap();
    // Past its window it is expired, not revocable.
    let end = a.window_ends_at.unwrap();
    assert_eq!(
        a.revoke(&person("grace"), None, end).unwrap_err(),
        Refusal::AlreadyDecided {
            state: State::Expired
        }
    );
}

#[test]
fn a_pending_request_expires_at_its_ttl_and_an_active_one_at_its_window() {
    let set = standard();
    let r = pending(&set);
    assert_eq!(r.expire(at(3599)), None);
    assert_eq!(r.state_at(at(3599)), State::Pending);
    let t = r.expire(at(3600)).unwrap();
    assert_eq!(t.event, Event::Expired);
    let expired = apply(&r, t);
    assert_eq!(expired.state, State::Expired);
    assert_eq!(expired.closed_by, None);
    // Approving past the TTL is refused as expired, even before the sweeper writes it.
    assert_eq!(
        r.approve(&person("dave"), None, &fresh(), at(3600))
            .unwrap_err(),
        Refusal::AlreadyDecided {
            state: State::Expired
        }
    );

    let a = active(&set);
    let end = a.window_ends_at.unwrap();
    assert_eq!(
        a.window_left(end - TimeDelta::seconds(1)),
        Some(Duration::from_secs(1))
    );
    assert_eq!(a.window_left(end), None);
    assert_eq!(a.expire(end - TimeDelta::seconds(1)), None);
    assert_eq!(apply(&a, a.expire(end).unwrap()).state, State::Expired);
}

#[test]
fn terminal_requests_never_change_again_except_by_review() {
    let set = standard();
    let r = pending(&set);
    let terminals = [
        apply(&r, r.deny(&person("dave"), None, at(1)).unwrap()),
        apply(&r, r.cancel(&person("grace"), None, at(1)).unwrap()),
        apply(&r, r.expire(at(4000)).unwrap()),
        {
            let a = active(&set);
            apply(&a, a.revoke(&person("dave"), None, at(30)).unwrap())
        },
    ];
    for t in &terminals {
        assert!(t.state.is_terminal());
        let state = t.state;
        let decided = Err(Refusal::AlreadyDecided { state });
        let now = at(40);
        assert_eq!(
            t.approve(&person("erin"), None, &fresh(), now).map(|_| ()),
            decided.clone(),
            "{state}"
        );
        assert_eq!(t.deny(&person("erin"), None, now).map(|_| ()), decided);
        assert_eq!(t.cancel(&person("grace"), None, now).map(|_| ()), decided);
        assert_eq!(t.revoke(&person("grace"), None, now).map(|_| ()), decided);
        assert_eq!(t.expire(now), None);
        assert_eq!(
            t.review(&person("erin"), None, &fresh(), now).unwrap_err(),
            Refusal::NotReviewable
        );
    }
}

#[test]
fn an_emergency_is_reviewed_once_by_someone_else_in_any_state() {
    let set = standard();
    let grace = person("grace");
    let a = Ask {
        emergency: true,
        ..ask(&set, &grace)
    };
    let r = Request::create(&a, "r".into(), at(0)).unwrap().request;
    assert_eq!(
        r.review(&grace, None, &fresh(), at(5)).unwrap_err(),
        Refusal::SelfApproval
    );
    let mut stale = person("dave");
    stale.auth_time = Some(T0 - 3600);
    assert!(matches!(
        r.review(&stale, None, &fresh(), at(5)),
        Err(Refusal::StaleLogin { .. })
    ));
    // Revoked and expired emergencies still await their review.
    let revoked = apply(&r, r.revoke(&grace, None, at(10)).unwrap());
    let expired = apply(&r, r.expire(at(3600)).unwrap());
    for x in [r.clone(), revoked, expired] {
        let t = x
            .review(&person("dave"), Some("justified"), &fresh(), at(60))
            .unwrap();
        assert_eq!(t.event, Event::Reviewed);
        let reviewed = apply(&x, t);
        assert!(!reviewed.needs_review);
        assert_eq!(reviewed.state, x.state, "a review changes nothing else");
        assert_eq!(reviewed.reviewed_by, Some(Person::of(&person("dave"))));
        assert_eq!(reviewed.review_comment.as_deref(), Some("justified"));
        assert_eq!(
            reviewed
                .review(&person("frank"), None, &fresh(), at(61))
                .unwrap_err(),
            Refusal::NotReviewable
        );
    }
    // An ordinary request has nothing to review.
    assert_eq!(
        active(&set)
            .review(&person("erin"), None, &fresh(), at(60))
            .unwrap_err(),
        Refusal::NotReviewable
    );
}

#[test]
fn the_digest_covers_every_field_asked_and_no_text_can_move_between_them() {
    let p = Person {
        issuer: "https://idp".into(),
        subject: "grace".into(),
    };
    let base = digest("prod-admin", 3600, "fire", Some("INC-1"), &p);
    assert_eq!(base.len(), 64);
    let other = Person {
        issuer: "https://idp".into(),
        subject: "grace2".into(),
    };
    for changed in [
        digest("prod-admin2", 3600, "fire", Some("INC-1"), &p),
        digest("prod-admin", 3601, "fire", Some("INC-1"), &p),
        digest("prod-admin", 3600, "fire!", Some("INC-1"), &p),
        digest("prod-admin", 3600, "fire", Some("INC-2"), &p),
        digest("prod-admin", 3600, "fire", None, &p),
        digest("prod-admin", 3600, "fire", Some(""), &p),
        digest("prod-admin", 3600, "fire", Some("INC-1"), &other),
        digest("prod-admin", 3600, "fireINC-1", Some(""), &p),
    ] {
        assert_ne!(changed, base);
    }
}

#[test]
fn states_read_back_from_their_names() {
    for s in State::ALL {
        assert_eq!(s.as_str().parse::<State>(), Ok(s));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    assert!("Active".parse::<State>().is_err());
}

/// A small deterministic generator (xorshift64*), so the random walks below are reproducible
/// without a property-testing crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_walks_never_break_an_invariant() {
    let set = policy(
        "break_glass = { approvals = 3, request_ttl = \"1h\", max_window = \"2h\", \
         emergency = true }",
    );
    let people = ["grace", "dave", "frank", "erin", "bob"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen_events = std::collections::HashSet::new();
    for walk in 0..2000 {
        let grace = person("grace");
        let emergency = rng.below(4) == 0;
        let a = Ask {
            ticket: Some("INC-7"),
            emergency,
            duration_secs: Some(3600),
            ..ask(&set, &grace)
        };
        let mut r = Request::create(&a, format!("r-{walk}"), at(0))
            .unwrap()
            .request;
        let mut now = 0;
        for _ in 0..12 {
            now += i64::try_from(rng.below(1200)).unwrap();
            let who_name = people[usize::try_from(rng.below(5)).unwrap()];
            let mut who = person(who_name);
            who.auth_time = Some(T0 + now - i64::try_from(rng.below(1200)).unwrap());
            who.mfa = rng.below(8) != 0;
            let before = r.clone();
            let result = match rng.below(6) {
                0 | 1 => r.approve(&who, None, &fresh(), at(now)),
                2 => r.deny(&who, None, at(now)),
                3 => r.cancel(&who, None, at(now)),
                4 => r.revoke(&who, None, at(now)),
                _ => r.review(&who, None, &fresh(), at(now)),
            };
            let expired = r.expire(at(now));
            if let Ok(t) = result {
                // INVARIANT: the requester decides nothing but cancel and revoke.
                if matches!(
                    t.event,
                    Event::Approved | Event::Activated | Event::Denied | Event::Reviewed
                ) {
                    assert_ne!(who_name, "grace", "{t:?}");
                }
                // INVARIANT: terminal requests change only by review.
                if before.state.is_terminal() {
                    assert_eq!(t.event, Event::Reviewed, "{before:?} -> {t:?}");
                }
                seen_events.insert(t.event);
                r = apply(&before, t);
            } else if let Some(t) = expired {
                seen_events.insert(t.event);
                r = apply(&before, t);
            }
            // INVARIANT: each person once, never the requester.
            let mut seen: Vec<&Person> = r.approvals.iter().map(|a| &a.approver).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), r.approvals.len());
            assert!(r.approvals.iter().all(|a| a.approver != r.requester));
            // INVARIANT: active means enough approvals, or an emergency.
            if r.state == State::Active {
                assert!(r.emergency || r.approvals_counted() >= r.approvals_required);
                assert!(r.window_ends_at.is_some());
            }
            if !r.emergency && r.approvals_counted() < r.approvals_required {
                assert!(r.activated_at.is_none());
            }
            assert!(!r.needs_review || r.emergency);
            r.check_integrity().unwrap();
        }
    }
    // The walks reach every transition, or they prove little.
    for event in [
        Event::Approved,
        Event::Activated,
        Event::Denied,
        Event::Cancelled,
        Event::Revoked,
        Event::Expired,
        Event::Reviewed,
    ] {
        assert!(seen_events.contains(&event), "{event:?} never happened");
    }
}
