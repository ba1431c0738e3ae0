//! The names CloudTrail shows for a grant: `RoleSessionName` and `SourceIdentity`, derived by the
//! broker from the user and never chosen by them. Pure: no I/O.
//!
//! Both follow STS's rule `[\w+=,.@-]{2,64}` and are built by one function, `label`, with this
//! contract:
//!
//! - an id that is already a valid name is used as is (`alice@example.com` stays readable);
//! - anything else is sanitised (each other character becomes `-`, runs collapse, ends are
//!   trimmed), shortened to fit, and suffixed with `-` and 16 hex digits of SHA-256 of the WHOLE id;
//! - an id that itself ends like such a suffix is hashed too.
//!
//! INVARIANT: two different ids never produce the same label (up to a 64-bit hash collision):
//! verbatim labels never end in a hash suffix, hashed labels always do, and each hash covers the
//! full id, so neither sanitising nor truncation can merge two users.

use std::fmt;

/// `RoleSessionName` for one grant: `<user label>-<first 8 alphanumerics of the grant id>`.
///
/// Always 2..=64 characters of `[A-Za-z0-9+=,.@_-]`; distinct users get distinct names for any
/// grant ids with at least 8 alphanumerics (a UUID has 32).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionName(String);

impl SessionName {
    /// The session name for `user` (an email or user name, for readability in CloudTrail) in grant
    /// `grant_id`.
    pub fn for_user(user: &str, grant_id: &str) -> SessionName {
        let grant: String = grant_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(GRANT_CHARS)
            .collect();
        if grant.is_empty() {
            return SessionName(label(user, MAX_LEN));
        }
        let mut name = label(user, MAX_LEN - 1 - grant.len());
        name.push('-');
        name.push_str(&grant);
        SessionName(name)
    }

    /// The name as sent to STS.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `SourceIdentity`: the person behind a session. It persists through role chaining and CloudTrail
/// records it on every action, so it is derived from the principal's immutable id.
///
/// Always 2..=64 characters of `[A-Za-z0-9+=,.@_-]`, never starting with `aws:`, and distinct for
/// distinct principals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceIdentity(String);

impl SourceIdentity {
    /// The source identity for the principal whose canonical id is `canonical_id` (for example
    /// its issuer and subject).
    pub fn for_principal(canonical_id: &str) -> SourceIdentity {
        SourceIdentity(label(canonical_id, MAX_LEN))
    }

    /// The identity as sent to STS.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name of at most `max` (>= 17) characters for `id`; see the module documentation.
fn label(id: &str, max: usize) -> String {
    let slug = slug(id);
    let verbatim = slug == id
        && (MIN_LEN..=max).contains(&id.len())
        && !id.to_ascii_lowercase().starts_with(RESERVED_PREFIX)
        && !ends_with_hash(id);
    if verbatim {
        return slug;
    }
    let hash = short_hash(id);
    let keep = max.saturating_sub(hash.len() + 1);
    // `slug` is ASCII, so any byte index is a character boundary.
    let prefix = slug
        .get(..keep.min(slug.len()))
        .unwrap_or_default()
        .trim_end_matches('-');
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Keeps `[A-Za-z0-9+=,.@_-]`, replaces everything else with `-`, collapses runs of `-` and trims
/// `-` from both ends.
fn slug(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        let c = if is_name_char(c) { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// STS's `[\w+=,.@-]`, with `\w` read as ASCII only.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// True when the last `-`-separated part (or the whole id) looks like a [`short_hash`].
fn ends_with_hash(id: &str) -> bool {
    id.rsplit('-').next().is_some_and(|last| {
        last.len() == HASH_HEX && last.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The first 16 hex digits (64 bits) of SHA-256 of `id`.
fn short_hash(id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    hex::encode(digest.as_ref().get(..HASH_HEX / 2).unwrap_or_default())
}

const MIN_LEN: usize = 2;
const MAX_LEN: usize = 64;
const GRANT_CHARS: usize = 8;
const HASH_HEX: usize = 16;
const RESERVED_PREFIX: &str = "aws:";

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const GRANT: &str = "7f3c2a9e-1b4d-4c8e-9a6f-0d2e5b7c9a13";

    fn assert_valid(name: &str) {
        assert!((2..=64).contains(&name.len()), "length of {name:?}");
        assert!(name.chars().all(is_name_char), "charset of {name:?}");
        assert!(!name.to_ascii_lowercase().starts_with("aws:"), "{name:?}");
    }

    fn samples() -> Vec<String> {
        vec![
            String::new(),
            "a".to_owned(),
            "ab".to_owned(),
            "alice".to_owned(),
            "alice@example.com".to_owned(),
            "Alice Smith".to_owned(),
            "  spaced  out  ".to_owned(),
            "élodie.müller@exämple.de".to_owned(),
            "日本語ユーザー".to_owned(),
            "rocket 🚀 user".to_owned(),
            "😀".to_owned(),
            "aws:admin".to_owned(),
            "AWS:Admin".to_owned(),
            "https://login.example.com|00u1abcd".to_owned(),
            "a\u{0}b\nc".to_owned(),
            "---".to_owned(),
            "@@".to_owned(),
            "x".repeat(64),
            "x".repeat(65),
            "y".repeat(500),
            "🚀".repeat(100),
        ]
    }

    #[test]
    fn every_session_name_is_valid() {
        for user in samples() {
            for grant in [GRANT, "", "g", "--", "ABCDEFGHIJKLMNOP"] {
                assert_valid(SessionName::for_user(&user, grant).as_str());
            }
        }
    }

    #[test]
    fn every_source_identity_is_valid() {
        for id in samples() {
            assert_valid(SourceIdentity::for_principal(&id).as_str());
        }
    }

    #[test]
    fn valid_ids_stay_readable() {
        assert_eq!(
            SourceIdentity::for_principal("alice@example.com").as_str(),
            "alice@example.com"
        );
        assert_eq!(
            SessionName::for_user("alice@example.com", GRANT).as_str(),
            "alice@example.com-7f3c2a9e"
        );
        assert_eq!(
            SourceIdentity::for_principal(&"x".repeat(64)).as_str(),
            "x".repeat(64)
        );
    }

    #[test]
    fn sanitising_replaces_collapses_and_trims() {
        let name = SourceIdentity::for_principal("  Alice  Smith!! ");
        assert!(name.as_str().starts_with("Alice-Smith-"), "{name}");
        let name = SourceIdentity::for_principal("rocket 🚀 user");
        assert!(name.as_str().starts_with("rocket-user-"), "{name}");
        let name = SourceIdentity::for_principal("élodie");
        assert!(name.as_str().starts_with("lodie-"), "{name}");
        // Nothing usable: only the hash remains.
        assert_eq!(SourceIdentity::for_principal("😀").as_str().len(), 16);
    }

    #[test]
    fn ids_that_sanitise_alike_stay_distinct() {
        let ids = [
            "a b",
            "a-b",
            "a/b",
            "a--b",
            "a b ",
            " a b",
            "a\u{3000}b",
            "a🚀b",
        ];
        let identities: HashSet<_> = ids
            .iter()
            .map(|id| SourceIdentity::for_principal(id))
            .collect();
        assert_eq!(identities.len(), ids.len(), "{identities:?}");
        let sessions: HashSet<_> = ids
            .iter()
            .map(|id| SessionName::for_user(id, GRANT))
            .collect();
        assert_eq!(sessions.len(), ids.len(), "{sessions:?}");
    }

    #[test]
    fn long_ids_with_a_common_prefix_stay_distinct() {
        let common = "https://login.example.com/tenants/0123456789abcdef/users/";
        let a = format!("{common}{}", "a".repeat(40));
        let b = format!("{common}{}", "b".repeat(40));
        assert_ne!(
            SourceIdentity::for_principal(&a),
            SourceIdentity::for_principal(&b)
        );
        assert_ne!(
            SessionName::for_user(&a, GRANT),
            SessionName::for_user(&b, GRANT)
        );
        let x64 = "x".repeat(64);
        let x65 = "x".repeat(65);
        assert_ne!(
            SourceIdentity::for_principal(&x64),
            SourceIdentity::for_principal(&x65)
        );
    }

    #[test]
    fn an_id_cannot_impersonate_the_hashed_name_of_another() {
        let victim = SourceIdentity::for_principal("a b");
        // The attacker registers the victim's hashed name verbatim.
        let attacker = SourceIdentity::for_principal(victim.as_str());
        assert_ne!(victim, attacker);
        let hash_only = SourceIdentity::for_principal("😀");
        assert_ne!(SourceIdentity::for_principal(hash_only.as_str()), hash_only);
    }

    #[test]
    fn aws_prefix_is_never_sent() {
        for id in ["aws:admin", "AWS:admin", "Aws:x", "aws:"] {
            let identity = SourceIdentity::for_principal(id);
            assert!(
                !identity.as_str().to_ascii_lowercase().starts_with("aws:"),
                "{identity}"
            );
            assert_ne!(identity.as_str(), id);
        }
        assert_ne!(
            SourceIdentity::for_principal("aws:admin"),
            SourceIdentity::for_principal("aws-admin")
        );
    }

    #[test]
    fn session_names_differ_per_grant() {
        let first = SessionName::for_user("alice", GRANT);
        let second = SessionName::for_user("alice", "0a1b2c3d-0000-4000-8000-000000000000");
        assert_ne!(first, second);
        let long = SessionName::for_user(&"z".repeat(200), GRANT);
        assert_eq!(long.as_str().len(), 64);
        assert!(long.as_str().ends_with("-7f3c2a9e"), "{long}");
    }
}
