//! The catalog refuses what STS would refuse at grant time, with the checks of `aws/input.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::aws::{
    AssumeRoleInput, AssumeRoleParams, GRANT_TAG, SessionName, SessionTag, SourceIdentity,
};
use crate::policy::{PolicySet, Sources};

fn load(role_extra: &str, files: &[(&str, String)]) -> Result<PolicySet, Vec<String>> {
    let catalog = format!(
        "[[role]]\nname = \"readonly\"\narn = \"arn:aws:iam::111111111111:role/ReadOnly\"\n\
         max_duration = \"1h\"\nallow_groups = [\"engineering\"]\n{role_extra}\n"
    );
    let sources = Sources {
        catalog,
        schema: SCHEMA.to_owned(),
        policies: Vec::new(),
        files: files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone()))
            .collect::<BTreeMap<_, _>>(),
    };
    PolicySet::from_sources(&sources).map_err(|e| {
        e.issues
            .into_iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    })
}

fn tags(n: usize) -> String {
    let mut s = String::from("session_tags = { ");
    for i in 0..n {
        let _ = write!(s, "t{i} = \"v\", ");
    }
    s.push_str("}\n");
    s
}

/// The input the broker builds at grant time from the role's literal tags plus its own tag.
fn grant_time_input(set: &PolicySet) -> Result<AssumeRoleInput, crate::aws::InputError> {
    let role = set.role("readonly").unwrap();
    let mut tags: Vec<SessionTag> = role
        .session_tags()
        .map(|(k, _)| SessionTag::new(k, "v"))
        .collect();
    tags.push(SessionTag::new(GRANT_TAG, "0123456789abcdef"));
    AssumeRoleInput::new(AssumeRoleParams {
        role_arn: role.arn().to_string(),
        session_name: SessionName::for_user("alice", "0123456789abcdef"),
        source_identity: SourceIdentity::for_principal("alice", "https://idp", "alice"),
        duration_secs: 3600,
        tags,
        transitive_tag_keys: Vec::new(),
        session_policy: role.session_policy().map(str::to_owned),
        policy_arns: Vec::new(),
        external_id: None,
    })
}

#[test]
fn fifty_tags_are_refused_because_the_broker_adds_its_own() {
    let errors = load(&tags(50), &[]).unwrap_err();
    assert_eq!(
        errors,
        [
            "catalog.toml: role[0].session_tags: 50 tags, at most 47 allowed: STS accepts 50 and latchkey keeps 3 for its own"
        ]
    );
    assert!(load(&tags(48), &[]).is_err());
}

#[test]
fn the_most_tags_a_catalog_accepts_still_fit_at_grant_time() {
    let set = load(&tags(47), &[]).unwrap();
    grant_time_input(&set).unwrap();
}

#[test]
fn a_tag_key_the_broker_sets_is_refused_in_any_case() {
    for key in [
        "latchkey-grant",
        "Latchkey-Grant",
        "latchkey-ticket",
        "latchkey-request",
    ] {
        let errors = load(&format!("session_tags = {{ \"{key}\" = \"x\" }}\n"), &[]).unwrap_err();
        assert_eq!(
            errors,
            [format!(
                "catalog.toml: role[0].session_tags.{key}: `{key}` is a tag latchkey sets itself"
            )],
        );
    }
}

#[test]
fn a_session_policy_is_measured_in_bytes() {
    // 1100 characters of `é` (2 bytes each): fits 2048 characters, not 2048 bytes.
    let text = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{}","Effect":"Deny","Action":"*","Resource":"*"}}]}}"#,
        "é".repeat(1100)
    );
    assert!(text.chars().count() < 2048 && text.len() > 2048);
    let errors = load("session_policy = \"big.json\"\n", &[("big.json", text)]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("catalog.toml: role[0].session_policy: `big.json` without spaces is ")
            && errors[0].ends_with("bytes, at most 2048 allowed"),
        "{errors:?}"
    );
}

#[test]
fn a_tag_value_with_a_character_sts_refuses_is_refused_at_load() {
    // U+093E (a Devanagari vowel sign) is alphabetic to Rust but not a letter (\p{L}) to STS.
    assert!('\u{093E}'.is_alphabetic());
    let errors = load("session_tags = { team = \"\u{0915}\u{093E}\" }\n", &[]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("catalog.toml: role[0].session_tags.team: `")
            && errors[0].ends_with("has characters STS does not allow in a tag value"),
        "{errors:?}"
    );
    // The same rule decides at grant time.
    assert!(crate::aws::input::check_tag_value("team", "\u{0915}\u{093E}").is_err());
}

#[test]
fn a_tag_key_with_a_character_sts_refuses_is_refused_at_load() {
    let errors = load("session_tags = { \"te\u{093E}m\" = \"x\" }\n", &[]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("the tag key contains"), "{errors:?}");
}

const SCHEMA: &str = include_str!("../../../policies/latchkey.cedarschema");
