//! The names CloudTrail shows for a grant: `RoleSessionName` and `SourceIdentity`, derived by the
//! broker from the user and never chosen by them. Pure: no I/O.
//!
//! Both follow STS's rule `[\w+=,.@-]{2,64}`. The session name is built by `label`, with this
//! contract:
//!
//! - an id that is already a valid name is used as is (`alice@example.com` stays readable);
//! - anything else is sanitised (each other character becomes `-`, runs collapse, ends are
//!   trimmed), shortened to fit, and suffixed with `-` and 16 hex digits of SHA-256 of the WHOLE id;
//! - an id that itself ends like such a suffix is hashed too.
//!
//! The source identity is the sanitised readable user name first (so a long issuer URL never
//! crowds it out), then `-` and 16 hex digits of SHA-256 of the principal `(issuer, subject)`.
//! [`PrincipalHash`] is that suffix on its own, with the IAM patterns that match every source
//! identity of one principal and no other's (session revocation matches on them).
//!
//! INVARIANT: two different ids never produce the same label, and two different principals never
//! produce the same source identity (up to a 64-bit hash collision): verbatim labels never end in
//! a hash suffix, hashed labels always do, and each hash covers the full id or principal, so
//! neither sanitising nor truncation nor a chosen user name can merge two users.

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
/// records it on every action: `<readable user>-<16 hex digits of a hash of (issuer, subject)>`.
///
/// Always 2..=64 characters of `[A-Za-z0-9+=,.@_-]`, never starting with `aws:`, and distinct for
/// distinct principals. Only the hash suffix identifies the principal: the readable part may be
/// chosen by the user at some IdPs, so IAM conditions must not match on it alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceIdentity(String);

impl SourceIdentity {
    /// The source identity of the principal `(issuer, subject)`, readable as `user` (a user name
    /// or verified email).
    pub fn for_principal(user: &str, issuer: &str, subject: &str) -> SourceIdentity {
        let hash = PrincipalHash::of(issuer, subject).0;
        let slug = slug(user);
        let keep = MAX_LEN - HASH_HEX - 1;
        // `slug` is ASCII, so any byte index is a character boundary.
        let prefix = slug
            .get(..keep.min(slug.len()))
            .unwrap_or_default()
            .trim_end_matches('-');
        // INVARIANT: `:` is not a name character, so no prefix can start with `aws:`.
        if prefix.is_empty() {
            SourceIdentity(hash)
        } else {
            SourceIdentity(format!("{prefix}-{hash}"))
        }
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

/// The part of every [`SourceIdentity`] of one principal that identifies it: 16 hex digits of
/// SHA-256 of `(issuer, subject)`, whatever readable name came before it.
///
/// INVARIANT: a source identity is either `<readable>-<hash>` or `<hash>` alone (nothing
/// readable), its characters are name characters (never `*` or `?`), and the hash is always its
/// last 16 characters. So the [`PrincipalHash::source_identity_patterns`] of one principal match
/// every source identity of that principal, under any readable name, and none of another's
/// (up to a 64-bit hash collision): a match needs the same last 16 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalHash(String);

impl PrincipalHash {
    /// The hash of the principal `(issuer, subject)`.
    pub fn of(issuer: &str, subject: &str) -> PrincipalHash {
        PrincipalHash(principal_hash(issuer, subject))
    }

    /// The 16 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// IAM `StringLike` patterns that match exactly this principal's source identities:
    /// `*-<hash>` (a readable name first) and `<hash>` (nothing readable was left).
    pub fn source_identity_patterns(&self) -> [String; 2] {
        [format!("*-{}", self.0), self.0.clone()]
    }
}

impl fmt::Display for PrincipalHash {
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
    hex_prefix(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        id.as_bytes(),
    ))
}

/// The first 16 hex digits of SHA-256 over the issuer's length, the issuer and the subject: the
/// length makes the encoding unambiguous whatever either contains.
fn principal_hash(issuer: &str, subject: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&(issuer.len() as u64).to_be_bytes());
    ctx.update(issuer.as_bytes());
    ctx.update(subject.as_bytes());
    hex_prefix(ctx.finish())
}

fn hex_prefix(digest: aws_lc_rs::digest::Digest) -> String {
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
    const ISSUER: &str = "https://login.example.com";
    static LONG_ISSUER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let base = "https://login.microsoftonline.example.com/0123456789abcdef/v2.0/";
        format!("{base}{}", "t".repeat(200 - base.len()))
    });

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
    fn every_label_and_source_identity_is_valid() {
        for id in samples() {
            assert_valid(&label(&id, MAX_LEN));
            for issuer in [ISSUER, LONG_ISSUER.as_str(), "", "aws:"] {
                assert_valid(SourceIdentity::for_principal(&id, issuer, &id).as_str());
            }
        }
    }

    #[test]
    fn valid_ids_stay_readable() {
        assert_eq!(label("alice@example.com", MAX_LEN), "alice@example.com");
        assert_eq!(
            SessionName::for_user("alice@example.com", GRANT).as_str(),
            "alice@example.com-7f3c2a9e"
        );
        assert_eq!(label(&"x".repeat(64), MAX_LEN), "x".repeat(64));
    }

    #[test]
    fn sanitising_replaces_collapses_and_trims() {
        let name = label("  Alice  Smith!! ", MAX_LEN);
        assert!(name.starts_with("Alice-Smith-"), "{name}");
        let name = label("rocket 🚀 user", MAX_LEN);
        assert!(name.starts_with("rocket-user-"), "{name}");
        let name = label("élodie", MAX_LEN);
        assert!(name.starts_with("lodie-"), "{name}");
        // Nothing usable: only the hash remains.
        assert_eq!(label("😀", MAX_LEN).len(), 16);
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
        let labels: HashSet<_> = ids.iter().map(|id| label(id, MAX_LEN)).collect();
        assert_eq!(labels.len(), ids.len(), "{labels:?}");
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
        assert_ne!(label(&a, MAX_LEN), label(&b, MAX_LEN));
        assert_ne!(
            SessionName::for_user(&a, GRANT),
            SessionName::for_user(&b, GRANT)
        );
        let x64 = "x".repeat(64);
        let x65 = "x".repeat(65);
        assert_ne!(label(&x64, MAX_LEN), label(&x65, MAX_LEN));
    }

    #[test]
    fn an_id_cannot_impersonate_the_hashed_name_of_another() {
        let victim = label("a b", MAX_LEN);
        // The attacker registers the victim's hashed name verbatim.
        assert_ne!(label(&victim, MAX_LEN), victim);
        let hash_only = label("😀", MAX_LEN);
        assert_ne!(label(&hash_only, MAX_LEN), hash_only);
    }

    #[test]
    fn aws_prefix_is_never_sent() {
        for id in ["aws:admin", "AWS:admin", "Aws:x", "aws:"] {
            let name = label(id, MAX_LEN);
            assert!(!name.to_ascii_lowercase().starts_with("aws:"), "{name}");
            assert_ne!(name, id);
            let identity = SourceIdentity::for_principal(id, id, id);
            assert!(
                !identity.as_str().to_ascii_lowercase().starts_with("aws:"),
                "{identity}"
            );
        }
        assert_ne!(label("aws:admin", MAX_LEN), label("aws-admin", MAX_LEN));
    }

    #[test]
    fn a_long_issuer_leaves_the_user_readable_in_the_source_identity() {
        assert_eq!(LONG_ISSUER.len(), 200);
        let identity = SourceIdentity::for_principal("alice@example.com", &LONG_ISSUER, "00u1abcd");
        let (user, hash) = identity.as_str().rsplit_once('-').unwrap();
        assert_eq!(user, "alice@example.com", "{identity}");
        assert_eq!(hash.len(), 16, "{identity}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{identity}");
        assert_valid(identity.as_str());
        // A long user name is shortened, still first, still followed by the hash.
        let long = SourceIdentity::for_principal(&"z".repeat(200), &LONG_ISSUER, "00u1abcd");
        assert_eq!(long.as_str().len(), 64);
        assert!(long.as_str().starts_with(&"z".repeat(47)), "{long}");
        assert!(long.as_str().ends_with(hash), "{long}");
    }

    #[test]
    fn source_identities_are_unique_per_principal_whatever_the_user_name() {
        let alice = SourceIdentity::for_principal("alice", ISSUER, "u1");
        // Same readable name, another subject or issuer: another identity.
        assert_ne!(alice, SourceIdentity::for_principal("alice", ISSUER, "u2"));
        assert_ne!(
            alice,
            SourceIdentity::for_principal("alice", &LONG_ISSUER, "u1")
        );
        // The issuer/subject boundary is part of the hash.
        assert_ne!(
            SourceIdentity::for_principal("x", "https://a.example/x", "y"),
            SourceIdentity::for_principal("x", "https://a.example/", "xy")
        );
        // A user who picks another's whole source identity as their name does not get it.
        let mallory = SourceIdentity::for_principal(alice.as_str(), ISSUER, "u3");
        assert_ne!(mallory, alice);
        assert!(
            !mallory
                .as_str()
                .ends_with(&alice.as_str()[alice.as_str().len() - 16..])
        );
        // The same principal always gets the same identity.
        assert_eq!(alice, SourceIdentity::for_principal("alice", ISSUER, "u1"));
        // Nothing readable: the hash alone.
        assert_eq!(
            SourceIdentity::for_principal("😀", ISSUER, "u1")
                .as_str()
                .len(),
            16
        );
    }

    /// IAM's `StringLike`: `*` any run of characters, `?` one character, the rest literal.
    fn string_like(pattern: &str, text: &str) -> bool {
        match pattern.chars().next() {
            None => text.is_empty(),
            Some('*') => {
                let rest = &pattern[1..];
                (0..=text.len())
                    .filter(|i| text.is_char_boundary(*i))
                    .any(|i| string_like(rest, &text[i..]))
            }
            Some(p) => text.chars().next().is_some_and(|t| {
                (p == '?' || p == t) && string_like(&pattern[p.len_utf8()..], &text[t.len_utf8()..])
            }),
        }
    }

    fn matches_any(hash: &PrincipalHash, identity: &SourceIdentity) -> bool {
        hash.source_identity_patterns()
            .iter()
            .any(|p| string_like(p, identity.as_str()))
    }

    #[test]
    fn the_patterns_of_a_principal_match_its_source_identities_under_any_name() {
        let hash = PrincipalHash::of(ISSUER, "u1");
        assert_eq!(
            hash.source_identity_patterns(),
            [format!("*-{hash}"), hash.to_string()]
        );
        assert_eq!(hash.as_str().len(), 16);
        assert!(
            hash.as_str()
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        for name in samples() {
            let identity = SourceIdentity::for_principal(&name, ISSUER, "u1");
            assert!(matches_any(&hash, &identity), "{name:?}: {identity}");
            assert!(identity.as_str().ends_with(hash.as_str()), "{identity}");
        }
        // The email changed between two grants: the same person, the same match.
        assert!(matches_any(
            &hash,
            &SourceIdentity::for_principal("alice@new.example.com", ISSUER, "u1")
        ));
    }

    #[test]
    fn the_patterns_of_a_principal_never_match_another_principal() {
        let alice = PrincipalHash::of(ISSUER, "alice");
        let victim = SourceIdentity::for_principal("alice", ISSUER, "alice");
        let mut others = Vec::new();
        for name in samples() {
            for (issuer, subject) in [
                (ISSUER, "bob"),
                (ISSUER, "alice "),
                (ISSUER, "Alice"),
                (LONG_ISSUER.as_str(), "alice"),
                ("https://login.example.com/", "alice"),
                ("", "https://login.example.comalice"),
            ] {
                others.push(SourceIdentity::for_principal(&name, issuer, subject));
            }
            // Names chosen to look like Alice's: her whole identity, her hash, her pattern.
            for chosen in [
                victim.as_str().to_owned(),
                alice.as_str().to_owned(),
                format!("x-{alice}"),
                format!("{alice}-{alice}"),
                format!("*-{alice}"),
                format!("{name}-{alice}"),
            ] {
                others.push(SourceIdentity::for_principal(&chosen, ISSUER, "mallory"));
            }
        }
        for other in &others {
            assert!(
                !matches_any(&alice, other),
                "{other} matched alice's patterns"
            );
        }
        assert!(matches_any(&alice, &victim));
    }

    #[test]
    fn string_like_reads_iam_wildcards() {
        assert!(string_like("*-ab", "x-ab"));
        assert!(string_like("*-ab", "-ab"));
        assert!(!string_like("*-ab", "ab"));
        assert!(!string_like("*-ab", "x-abc"));
        assert!(string_like("a?c", "abc"));
        assert!(string_like("ab", "ab"));
        assert!(!string_like("ab", "xab"));
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
