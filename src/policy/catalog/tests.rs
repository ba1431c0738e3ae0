//! The catalog refuses what STS would refuse at grant time, with the checks of `aws/input.rs`,
//! and SSH targets that EC2 Instance Connect or ssh could not use.

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

// === targets ===

const ED25519: &str = include_str!("../../../tests/fixtures/ssh/ed25519.pub");
const ECDSA_256: &str = include_str!("../../../tests/fixtures/ssh/ecdsa-256.pub");
const RSA_2048: &str = include_str!("../../../tests/fixtures/ssh/rsa-2048.pub");
const CERT: &str = include_str!("../../../tests/fixtures/ssh/ed25519-cert.pub");

/// Loads a catalog of one role and one target made of `body`.
fn load_target(body: &str) -> Result<PolicySet, Vec<String>> {
    load(&format!("\n[[target]]\n{body}"), &[])
}

fn target_errors(body: &str) -> Vec<String> {
    load_target(body).map(|_| ()).unwrap_err()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.trim_end().to_owned()).to_string()
}

#[test]
fn a_target_with_every_key_parses() {
    let body = format!(
        r#"name = "bastion"
instance_ids = ["i-0123abcd", "i-0123456789abcdef0", "i-0123456789ab"]
region = "us-gov-west-1"
availability_zone = "us-gov-west-1b"
host = "bastion.internal.example.com"
port = 2222
os_users = ["ec2-user", "root", "_deploy"]
host_keys = [{}, {}, {}]
"#,
        toml_str(ED25519),
        toml_str(ECDSA_256),
        toml_str(RSA_2048)
    );
    let set = load_target(&body).unwrap();
    let t = set.target("bastion").unwrap();
    assert_eq!(
        t.instance_ids,
        ["i-0123abcd", "i-0123456789abcdef0", "i-0123456789ab"]
    );
    assert_eq!(t.region, "us-gov-west-1");
    assert_eq!(t.availability_zone.as_deref(), Some("us-gov-west-1b"));
    assert_eq!(t.host.as_deref(), Some("bastion.internal.example.com"));
    assert_eq!(t.port, 2222);
    assert_eq!(t.os_users, ["ec2-user", "root", "_deploy"]);
    let keys: Vec<String> = t.host_keys.iter().map(|k| k.openssh_line()).collect();
    let expected: Vec<String> = [ED25519, ECDSA_256, RSA_2048]
        .iter()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(keys, expected, "comments are dropped");
}

#[test]
fn a_minimal_target_gets_the_defaults() {
    let set = load_target(
        "name = \"web\"\ninstance_ids = [\"i-0123456789abcdef0\"]\nregion = \"eu-west-1\"\nos_users = [\"ubuntu\"]\n",
    )
    .unwrap();
    let t = set.target("web").unwrap();
    assert_eq!(t.port, 22);
    assert_eq!(t.host, None);
    assert_eq!(t.availability_zone, None);
    assert!(t.host_keys.is_empty());
    for host in [
        "10.0.0.5",
        "::1",
        "2001:db8::1",
        "localhost",
        "a-b.example.com",
    ] {
        let body = format!(
            "name = \"web\"\ninstance_ids = [\"i-0123456789abcdef0\"]\nregion = \"eu-west-1\"\nos_users = [\"ubuntu\"]\nhost = \"{host}\"\n"
        );
        assert!(load_target(&body).is_ok(), "{host}");
    }
    let zone = |zone: &str| {
        load_target(&format!(
            "name = \"web\"\ninstance_ids = [\"i-0123456789abcdef0\"]\nregion = \"eu-west-1\"\nos_users = [\"ubuntu\"]\navailability_zone = \"{zone}\"\n"
        ))
    };
    assert!(zone("eu-west-1a").is_ok());
    // A Local Zone name is a zone of the region, but EC2 Instance Connect's API refuses it
    // (`^(\w+-){2,3}\d+\w+$`): the catalog refuses it too, so it never fails at push time.
    assert!(zone("eu-west-1-lax-1a").is_err());
}

#[test]
fn every_problem_of_a_target_is_reported_at_once_with_its_key_path() {
    let body = format!(
        r#"name = "Bastion"
instance_ids = ["i-0123abcd", "i-0123abc", "i-0123456789abcdef01", "I-0123ABCD", "i-0123abcd"]
region = "eu-west"
host = "-oProxyCommand=x"
port = 0
os_users = ["ec2-user", "Root", "ec2-user", "a$"]
host_keys = [{}, {}, "bastion {}", {}, "", {}]
"#,
        toml_str(ED25519),
        toml_str(CERT),
        ED25519.trim_end(),
        toml_str("-----BEGIN OPENSSH PRIVATE KEY-----"),
        toml_str(&ED25519.replace("ed25519@example.com", "other comment")),
    );
    let errors = target_errors(&body);
    let expected = [
        "catalog.toml: target[0].name: `Bastion` is not a name",
        "catalog.toml: target[0].instance_ids[1]: `i-0123abc` is not an instance id",
        "catalog.toml: target[0].instance_ids[2]: `i-0123456789abcdef01` is not an instance id",
        "catalog.toml: target[0].instance_ids[3]: `I-0123ABCD` is not an instance id",
        "catalog.toml: target[0].instance_ids[4]: `i-0123abcd` is listed twice",
        "catalog.toml: target[0].region: `eu-west` is not a region",
        "catalog.toml: target[0].host: `-oProxyCommand=x` is not a host name or an IP address",
        "catalog.toml: target[0].port: `0` is not a port, 1 to 65535",
        "catalog.toml: target[0].os_users[1]: `Root` is not an OS user name",
        "catalog.toml: target[0].os_users[2]: `ec2-user` is listed twice",
        "catalog.toml: target[0].os_users[3]: `a$` is not an OS user name",
        "catalog.toml: target[0].host_keys[1]: certificates are not accepted",
        "catalog.toml: target[0].host_keys[2]: the line must start with the key type",
        "catalog.toml: target[0].host_keys[3]: this is a private key",
        "catalog.toml: target[0].host_keys[4]: the host key is empty",
        "catalog.toml: target[0].host_keys[5]: the same key as `host_keys[0]`",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (e, want) in errors.iter().zip(expected) {
        assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
    }
}

#[test]
fn each_target_key_is_checked() {
    let base = |extra: &str| {
        format!(
            "name = \"web\"\ninstance_ids = [\"i-0123456789abcdef0\"]\nregion = \"eu-west-1\"\nos_users = [\"ubuntu\"]\n{extra}\n"
        )
    };
    let cases = [
        (
            "instance_ids = []",
            "target[0].instance_ids: must list at least one instance",
        ),
        (
            "os_users = []",
            "target[0].os_users: must list at least one OS user",
        ),
        ("port = 65536", "target[0].port: `65536` is not a port"),
        ("port = -22", "target[0].port: `-22` is not a port"),
        ("port = \"22\"", "target[0].port: "),
        (
            "availability_zone = \"eu-west-2a\"",
            "target[0].availability_zone: `eu-west-2a` is not an availability zone of `eu-west-1`",
        ),
        (
            "availability_zone = \"eu-west-1\"",
            "target[0].availability_zone:",
        ),
        (
            "availability_zone = \"eu-west-1ab\"",
            "target[0].availability_zone:",
        ),
        ("host = \"bastion example.com\"", "target[0].host:"),
        ("host = \"https://bastion.example.com\"", "target[0].host:"),
        ("host = \"bastion.example.com:22\"", "target[0].host:"),
        ("host = \"ec2-user@bastion\"", "target[0].host:"),
        ("host = \"[::1]\"", "target[0].host:"),
        ("host = \"\"", "target[0].host:"),
        ("host_keys = \"x\"", "target[0].host_keys:"),
        ("shell = \"/bin/sh\"", "target[0].shell:"),
    ];
    for (extra, want) in cases {
        // Replacing a key rather than adding it twice, where the case sets a required one.
        let body = match extra.split_once(" = ") {
            Some((key @ ("instance_ids" | "os_users"), _)) => base("")
                .lines()
                .filter(|l| !l.starts_with(key))
                .chain([extra])
                .collect::<Vec<_>>()
                .join("\n"),
            _ => base(extra),
        };
        let errors = target_errors(&body);
        assert_eq!(errors.len(), 1, "{extra}: {errors:#?}");
        assert!(
            errors[0].starts_with(&format!("catalog.toml: {want}")),
            "{extra}: {errors:?}"
        );
    }
}

#[test]
fn a_policy_naming_an_unknown_target_is_refused() {
    let sources = Sources {
        catalog: "[[target]]\nname = \"web\"\ninstance_ids = [\"i-0123456789abcdef0\"]\nregion = \"eu-west-1\"\nos_users = [\"ubuntu\"]\n".into(),
        schema: SCHEMA.to_owned(),
        policies: vec![(
            "ssh.cedar".into(),
            "@id(\"x\") permit (principal, action == Latchkey::Action::\"ssh\", resource == Latchkey::Target::\"db\");".into(),
        )],
        files: BTreeMap::new(),
    };
    let e = PolicySet::from_sources(&sources).unwrap_err().to_string();
    assert!(e.contains("unknown target `db` in policy `x`"), "{e}");
}

const SCHEMA: &str = include_str!("../../../policies/latchkey.cedarschema");

#[test]
fn a_role_without_break_glass_cannot_be_requested() {
    let set = load("", &[]).unwrap();
    assert!(set.role("readonly").unwrap().break_glass().is_none());
}

#[test]
fn break_glass_with_only_approvals_gets_the_defaults() {
    let set = load("break_glass = { approvals = 2 }", &[]).unwrap();
    let bg = set.role("readonly").unwrap().break_glass().unwrap();
    assert_eq!(bg.approvals(), 2);
    assert_eq!(bg.request_ttl().as_secs(), 3600);
    assert_eq!(bg.max_window().as_secs(), 4 * 3600);
    assert_eq!(bg.ticket_pattern(), None);
    assert!(!bg.emergency());
    assert!(!bg.revoke_sessions());
}

#[test]
fn break_glass_with_every_key_parses() {
    let set = load(
        "break_glass = { approvals = 3, request_ttl = \"30m\", max_window = \"8h\", \
         ticket_pattern = \"INC-[0-9]+\", emergency = true, revoke_sessions = true }",
        &[],
    )
    .unwrap();
    let bg = set.role("readonly").unwrap().break_glass().unwrap();
    assert_eq!(bg.approvals(), 3);
    assert_eq!(bg.request_ttl().as_secs(), 1800);
    // The window may be longer than the role's 1h sessions: each session is clamped to it.
    assert_eq!(bg.max_window().as_secs(), 8 * 3600);
    assert_eq!(bg.ticket_pattern(), Some("INC-[0-9]+"));
    assert!(bg.emergency());
    assert!(bg.revoke_sessions());
}

#[test]
fn every_problem_of_break_glass_is_reported_at_once_with_its_key_path() {
    let errors = load(
        "break_glass = { approvals = 0, request_ttl = \"30s\", max_window = \"10m\", \
         ticket_pattern = \"INC-(\", emergency = \"yes\", color = \"red\" }",
        &[],
    )
    .unwrap_err();
    let paths: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "role[0].break_glass.emergency",
            "role[0].break_glass.approvals",
            "role[0].break_glass.request_ttl",
            "role[0].break_glass.max_window",
            "role[0].break_glass.ticket_pattern",
            "role[0].break_glass.color",
        ],
        "{errors:#?}"
    );
    assert!(errors[1].contains("`0` is not a number of approvals from 1 to 10"));
    assert!(
        errors[2].contains("`30s` is outside 1m to 168h"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].contains("`10m` is outside 15m to 24h"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].contains("is not a regular expression"),
        "{}",
        errors[4]
    );
}

#[test]
fn approvals_and_windows_have_sane_bounds() {
    for bad in [
        "approvals = 11",
        "approvals = -1",
        "approvals = 1, max_window = \"25h\"",
        "approvals = 1, request_ttl = \"8d\"",
        "approvals = 1, ticket_pattern = \"\"",
        "request_ttl = \"1h\"",
    ] {
        assert!(
            load(&format!("break_glass = {{ {bad} }}"), &[]).is_err(),
            "{bad}"
        );
    }
    for good in [
        "approvals = 1, max_window = \"15m\", request_ttl = \"1m\"",
        "approvals = 10, max_window = \"24h\", request_ttl = \"7d\"",
    ] {
        assert!(
            load(&format!("break_glass = {{ {good} }}"), &[]).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn a_ticket_must_match_the_whole_pattern_and_fit_a_session_tag() {
    use crate::policy::TicketError;
    let set = load(
        "break_glass = { approvals = 1, ticket_pattern = \"INC-[0-9]+\" }",
        &[],
    )
    .unwrap();
    let bg = set.role("readonly").unwrap().break_glass().unwrap();
    assert_eq!(
        bg.check_ticket("readonly", Some("INC-42"), false),
        Ok(Some("INC-42".to_owned()))
    );
    for partial in ["xINC-42", "INC-42x", "INC-", "inc-42"] {
        assert!(
            matches!(
                bg.check_ticket("readonly", Some(partial), false),
                Err(TicketError::NoMatch { .. })
            ),
            "{partial}"
        );
    }
    assert!(matches!(
        bg.check_ticket("readonly", None, false),
        Err(TicketError::Missing { .. })
    ));
    let err = bg
        .check_ticket("readonly", Some("INC-1\u{1b}[2J"), false)
        .unwrap_err();
    assert_eq!(err, TicketError::Invalid);
    assert!(!err.to_string().contains('\u{1b}'));

    let plain = load("break_glass = { approvals = 1 }", &[]).unwrap();
    let bg = plain.role("readonly").unwrap().break_glass().unwrap();
    assert_eq!(bg.check_ticket("readonly", None, false), Ok(None));
    assert_eq!(bg.check_ticket("readonly", Some(""), false), Ok(None));
    // An emergency needs a ticket even without a pattern.
    assert!(matches!(
        bg.check_ticket("readonly", None, true),
        Err(TicketError::Missing { pattern: None, .. })
    ));
    assert_eq!(
        bg.check_ticket("readonly", Some(&"x".repeat(129)), false),
        Err(TicketError::Invalid)
    );
    assert_eq!(
        bg.check_ticket("readonly", Some("a;b"), false),
        Err(TicketError::Invalid)
    );
}
