//! Unit tests of the policy engine: decisions, reasons, check errors, and the shipped example.

use std::collections::BTreeMap;
use std::path::Path;

use super::corpus::parse_cases;
use super::*;
use crate::identity::Attribute;

const SCHEMA: &str = include_str!("../../policies/latchkey.cedarschema");

const CATALOG: &str = r#"
[[role]]
name = "readonly"
arn = "arn:aws:iam::111111111111:role/ReadOnly"
max_duration = "1h"
allow_groups = ["engineering"]
session_tags = { department = "{department}", who = "user-{subject}" }

[[role]]
name = "prod-admin"
arn = "arn:aws:iam::222222222222:role/ops/ProdAdmin"
max_duration = "1h"
allow_groups = ["sre"]
requires_mfa = true
max_auth_age = "30m"

[[role]]
name = "developer"
arn = "arn:aws:iam::111111111111:role/Developer"
max_duration = "4h"

[[target]]
name = "bastion"
instance_ids = ["i-0123456789abcdef0"]
region = "eu-west-1"
os_users = ["ec2-user"]
"#;

const POLICIES: &str = r#"
@id("developer.platform")
@reason("platform engineers may assume `developer`")
permit (principal, action == Latchkey::Action::"assume", resource == Latchkey::Role::"developer")
when { principal has department && principal.department == "platform" };

@id("no-contractors")
@reason("contractors may not use `prod-admin`")
forbid (principal, action, resource == Latchkey::Role::"prod-admin")
when { principal has department && principal.department == "contractors" };
"#;

fn sources(catalog: &str, policies: &str) -> Sources {
    Sources {
        catalog: catalog.to_owned(),
        schema: SCHEMA.to_owned(),
        policies: vec![("test.cedar".to_owned(), policies.to_owned())],
        files: BTreeMap::new(),
    }
}

fn set() -> PolicySet {
    PolicySet::from_sources(&sources(CATALOG, POLICIES)).unwrap()
}

fn person(subject: &str, groups: &[&str], department: Option<&str>) -> Identity {
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        attributes: department
            .map(|d| ("department".to_owned(), Attribute::Text(d.into())))
            .into_iter()
            .collect(),
        mfa: false,
        auth_time: None,
        issued_at: 0,
        expires_at: 0,
        readable_name: subject.into(),
        device_flow: false,
    }
}

fn ctx(mfa: bool, duration_secs: i64) -> RequestContext {
    RequestContext {
        mfa,
        auth_age_secs: 60,
        duration_secs,
        source_ip: None,
        os_user: None,
    }
}

fn assume(set: &PolicySet, who: &Identity, role: &str, context: RequestContext) -> Decision {
    set.decide(&AccessRequest {
        identity: who,
        action: Action::Assume,
        resource: Resource::Role(role.into()),
        context,
    })
}

fn texts(d: &Decision) -> Vec<String> {
    d.reasons.iter().map(ToString::to_string).collect()
}

fn check_errors(catalog: &str, policies: &str) -> Vec<String> {
    PolicySet::from_sources(&sources(catalog, policies))
        .unwrap_err()
        .issues
        .into_iter()
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect()
}

#[test]
fn allow_groups_permits_members() {
    let d = assume(
        &set(),
        &person("alice", &["engineering"], None),
        "readonly",
        ctx(false, 3600),
    );
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.determining, vec!["catalog.allow_groups.readonly"]);
    assert_eq!(
        texts(&d),
        vec!["members of `engineering` may assume `readonly`"]
    );
}

#[test]
fn deny_without_permit_says_so() {
    let d = assume(
        &set(),
        &person("carol", &["finance"], None),
        "readonly",
        ctx(false, 3600),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.determining.is_empty());
    assert_eq!(
        texts(&d),
        vec!["no policy permits you to assume `readonly`"]
    );
}

#[test]
fn requires_mfa_forbids_with_its_reason() {
    let set = set();
    let bob = person("bob", &["sre"], None);
    let d = assume(&set, &bob, "prod-admin", ctx(false, 900));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.determining, vec!["catalog.requires_mfa.prod-admin"]);
    assert!(
        d.reasons[0]
            .to_string()
            .starts_with("role `prod-admin` requires MFA"),
        "{d:?}"
    );
    assert!(assume(&set, &bob, "prod-admin", ctx(true, 900)).is_allowed());
}

#[test]
fn max_auth_age_forbids_stale_logins() {
    let mut context = ctx(true, 900);
    context.auth_age_secs = 31 * 60;
    let d = assume(
        &set(),
        &person("bob", &["sre"], None),
        "prod-admin",
        context,
    );
    assert_eq!(d.determining, vec!["catalog.max_auth_age.prod-admin"]);
    assert!(
        d.reasons[0].to_string().contains("within the last 30m"),
        "{d:?}"
    );
}

#[test]
fn forbid_wins_over_permit() {
    let who = person("mallory", &["sre"], Some("contractors"));
    let d = assume(&set(), &who, "prod-admin", ctx(true, 900));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.determining, vec!["no-contractors"]);
    assert_eq!(texts(&d), vec!["contractors may not use `prod-admin`"]);
}

#[test]
fn duration_outside_the_role_bounds_is_denied() {
    let set = set();
    let alice = person("alice", &["engineering"], None);
    let d = assume(&set, &alice, "readonly", ctx(false, 3601));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(texts(&d), vec!["the maximum duration of `readonly` is 1h"]);
    let d = assume(&set, &alice, "readonly", ctx(false, 899));
    assert_eq!(texts(&d), vec!["the minimum duration is 15m"]);
    assert!(assume(&set, &alice, "readonly", ctx(false, 900)).is_allowed());
    let role = set.role("readonly").unwrap();
    assert!(check_duration(role, 3600).is_ok());
    assert_eq!(
        check_duration(role, 7200),
        Err(DurationError::TooLong {
            role: "readonly".into(),
            max: "1h".into()
        })
    );
}

#[test]
fn unknown_role_and_target_are_denied() {
    let set = set();
    let alice = person("alice", &["engineering"], None);
    let d = assume(&set, &alice, "root", ctx(false, 3600));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(texts(&d), vec!["unknown role `root`"]);
    let d = set.decide(&AccessRequest {
        identity: &alice,
        action: Action::Ssh,
        resource: Resource::Target("nope".into()),
        context: ctx(false, 0),
    });
    assert_eq!(texts(&d), vec!["unknown target `nope`"]);
    let d = set.decide(&AccessRequest {
        identity: &alice,
        action: Action::Ssh,
        resource: Resource::Target("bastion".into()),
        context: ctx(false, 0).with_os_user("ec2-user"),
    });
    assert_eq!(texts(&d), vec!["no policy permits you to ssh to `bastion`"]);
}

const SSH_CATALOG: &str = r#"
[[target]]
name = "bastion"
instance_ids = ["i-0123456789abcdef0"]
region = "eu-west-1"
os_users = ["ec2-user", "root"]

[[target]]
name = "web"
instance_ids = ["i-0123456789abcdef1"]
region = "eu-west-1"
os_users = ["ubuntu"]
"#;

fn ssh(set: &PolicySet, who: &Identity, target: &str, context: RequestContext) -> Decision {
    set.decide(&AccessRequest {
        identity: who,
        action: Action::Ssh,
        resource: Resource::Target(target.into()),
        context,
    })
}

#[test]
fn the_os_user_must_be_one_of_the_targets_whatever_the_policies_say() {
    // A policy that permits everything, and one that even names the OS user.
    let set = PolicySet::from_sources(&sources(
        SSH_CATALOG,
        r#"
@id("everyone") permit (principal, action, resource);
@id("even-admin") permit (principal, action, resource) when { context has os_user && context.os_user == "admin" };
"#,
    ))
    .unwrap();
    let who = person("alice", &["engineering"], None);
    assert!(
        ssh(
            &set,
            &who,
            "bastion",
            ctx(false, 0).with_os_user("ec2-user")
        )
        .is_allowed()
    );
    assert!(ssh(&set, &who, "bastion", ctx(false, 0).with_os_user("root")).is_allowed());

    let d = ssh(&set, &who, "bastion", ctx(false, 0).with_os_user("admin"));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.determining.is_empty());
    assert_eq!(
        d.reasons,
        vec![Reason::OsUser(OsUserError::NotOnTarget {
            os_user: "admin".into(),
            target: "bastion".into(),
            allowed: "`ec2-user`, `root`".into(),
        })]
    );
    assert_eq!(
        texts(&d),
        vec!["`admin` is not an OS user of target `bastion`; it allows `ec2-user`, `root`"]
    );
    // Another target's user is not this target's.
    let d = ssh(&set, &who, "bastion", ctx(false, 0).with_os_user("ubuntu"));
    assert!(matches!(
        d.reasons.as_slice(),
        [Reason::OsUser(OsUserError::NotOnTarget { .. })]
    ));

    let d = ssh(&set, &who, "bastion", ctx(false, 0));
    assert_eq!(d.reasons, vec![Reason::OsUser(OsUserError::Missing)]);
    assert_eq!(texts(&d), vec!["name the OS user to log in as"]);

    for bad in [
        "Root",
        "root\n",
        "-oProxyCommand=x",
        "",
        "ec2 user",
        &"a".repeat(33),
    ] {
        let d = ssh(&set, &who, "bastion", ctx(false, 0).with_os_user(bad));
        assert_eq!(
            d.reasons,
            vec![Reason::OsUser(OsUserError::Invalid)],
            "{bad:?}"
        );
        if !bad.is_empty() {
            assert!(!texts(&d)[0].contains(bad), "the reason echoes {bad:?}");
        }
    }
    // The OS user plays no part in other actions.
    let d = set.decide(&AccessRequest {
        identity: &who,
        action: Action::ReadAudit,
        resource: Resource::Target("bastion".into()),
        context: ctx(false, 0),
    });
    assert!(d.is_allowed());
}

#[test]
fn policies_decide_on_context_os_user() {
    let set = PolicySet::from_sources(&sources(
        SSH_CATALOG,
        r#"
@id("engineering-ec2-user")
permit (principal in Latchkey::Group::"engineering", action == Latchkey::Action::"ssh", resource)
when { context.os_user == "ec2-user" };

@id("sre-root")
permit (principal in Latchkey::Group::"sre", action == Latchkey::Action::"ssh", resource == Latchkey::Target::"bastion")
when { context.os_user == "root" };
"#,
    ))
    .unwrap();
    let alice = person("alice", &["engineering"], None);
    let bob = person("bob", &["engineering", "sre"], None);
    let as_user = |u: &str| ctx(false, 0).with_os_user(u);
    let d = ssh(&set, &alice, "bastion", as_user("ec2-user"));
    assert_eq!(d.determining, vec!["engineering-ec2-user"]);
    let d = ssh(&set, &alice, "bastion", as_user("root"));
    assert_eq!(texts(&d), vec!["no policy permits you to ssh to `bastion`"]);
    let d = ssh(&set, &bob, "bastion", as_user("root"));
    assert_eq!(d.determining, vec!["sre-root"]);
}

#[test]
fn target_summary_decides_every_os_user_of_every_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let set = PolicySet::load(&dir).unwrap();
    let mut bob = person("bob", &["engineering", "sre"], Some("platform"));
    bob.mfa = true;
    let summary = set.target_summary(&bob, 0);
    let seen: Vec<(&str, &str, Effect)> = summary
        .iter()
        .flat_map(|t| {
            t.os_users
                .iter()
                .map(|(u, d)| (t.target.name.as_str(), u.as_str(), d.effect))
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("bastion", "ec2-user", Effect::Allow),
            ("bastion", "root", Effect::Allow),
            ("web", "ec2-user", Effect::Allow),
        ]
    );
    let mut dave = person("dave", &["engineering"], Some("security"));
    dave.mfa = true;
    let summary = set.target_summary(&dave, 0);
    let (_, root) = &summary[0].os_users[1];
    assert_eq!(root.determining, vec!["ssh.root-only-for-sre"]);
    let alice = person("alice", &["engineering"], Some("platform"));
    let summary = set.target_summary(&alice, 0);
    for (_, d) in summary.iter().flat_map(|t| &t.os_users) {
        assert_eq!(d.effect, Effect::Deny);
        assert!(d.determining.contains(&"ssh.requires-mfa".to_owned()));
    }
}

#[test]
fn a_schema_without_os_user_in_the_ssh_context_fails_to_load() {
    let old = SCHEMA.replace(
        "action ssh appliesTo { principal: User, resource: Target, context: SshContext };",
        "action ssh appliesTo { principal: User, resource: Target, context: RequestContext };",
    );
    assert_ne!(old, SCHEMA);
    let mut s = sources(SSH_CATALOG, "");
    s.schema = old;
    let e = PolicySet::from_sources(&s).unwrap_err().to_string();
    assert!(
        e.contains("the action `ssh` on a target must take a context of")
            && e.contains("`os_user: String`"),
        "{e}"
    );
}

#[test]
fn attribute_based_permit() {
    let set = set();
    let platform = person("alice", &[], Some("platform"));
    let d = assume(&set, &platform, "developer", ctx(false, 3600));
    assert_eq!(d.determining, vec!["developer.platform"]);
    let security = person("dave", &[], Some("security"));
    assert!(!assume(&set, &security, "developer", ctx(false, 3600)).is_allowed());
    let none = person("erin", &[], None);
    assert!(!assume(&set, &none, "developer", ctx(false, 3600)).is_allowed());
}

#[test]
fn group_ids_are_case_sensitive() {
    let who = person(
        "frank",
        &["Engineering", "ENGINEERING", " engineering"],
        None,
    );
    assert!(!assume(&set(), &who, "readonly", ctx(false, 3600)).is_allowed());
}

#[test]
fn odd_group_ids_cannot_inject_cedar() {
    let set = set();
    for group in [
        r#"x" || true || ""#,
        r#"Latchkey::Group::"engineering""#,
        "engineering\"",
        "sre::engineering",
        r#"a"]; permit(principal, action, resource); //"#,
        "engineering\u{0}",
    ] {
        let who = person("eve", &[group], Some(r#"platform" || true"#));
        for role in ["readonly", "prod-admin", "developer"] {
            let d = assume(&set, &who, role, ctx(true, 900));
            assert_eq!(d.effect, Effect::Deny, "{group} {role}: {d:?}");
        }
    }
    // The same odd id is matched exactly when a catalog grants it, and only then.
    let catalog = CATALOG.replace(r#"["engineering"]"#, r#"['x" || true || "']"#);
    let set = PolicySet::from_sources(&sources(&catalog, POLICIES)).unwrap();
    let who = person("eve", &[r#"x" || true || ""#], None);
    assert!(assume(&set, &who, "readonly", ctx(false, 900)).is_allowed());
    let who = person("eve", &["x"], None);
    assert!(!assume(&set, &who, "readonly", ctx(false, 900)).is_allowed());
}

#[test]
fn claims_never_override_the_verified_identity() {
    let mut who = person("bob", &["sre"], None);
    who.attributes.insert("mfa".into(), Attribute::Bool(true));
    who.attributes
        .insert("subject".into(), Attribute::Text("alice".into()));
    let set = PolicySet::from_sources(&sources(
        CATALOG,
        r#"@id("p") permit (principal, action, resource == Latchkey::Role::"developer")
           when { principal.mfa && principal.subject == "bob" };"#,
    ))
    .unwrap();
    assert!(!assume(&set, &who, "developer", ctx(true, 900)).is_allowed());
    who.mfa = true;
    assert!(assume(&set, &who, "developer", ctx(true, 900)).is_allowed());
}

#[test]
fn attribute_of_the_wrong_type_denies() {
    let mut who = person("mallory", &["sre"], None);
    who.attributes.insert(
        "department".into(),
        Attribute::List(vec!["contractors".into()]),
    );
    let d = assume(&set(), &who, "prod-admin", ctx(true, 900));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.reasons[0].to_string().contains("`department`"), "{d:?}");
}

#[test]
fn evaluation_errors_deny() {
    let set = PolicySet::from_sources(&sources(
        CATALOG,
        r#"@id("overflow") forbid (principal, action, resource == Latchkey::Role::"readonly")
           when { context.duration_secs * 9223372036854775807 > 0 };"#,
    ))
    .unwrap();
    let d = assume(
        &set,
        &person("alice", &["engineering"], None),
        "readonly",
        ctx(false, 3600),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.reasons[0]
            .to_string()
            .contains("policy evaluation failed"),
        "{d:?}"
    );
    assert!(d.reasons[0].to_string().contains("overflow"), "{d:?}");
}

#[test]
fn check_reports_every_error_at_once() {
    let catalog = r#"
[[role]]
name = "readonly"
arn = "arn:aws:iam::1111:role/ReadOnly"
max_duration = "13h"
session_tags = { team = "{team}", bad = "{oops" }
transitive_tag_keys = ["nope"]
session_policy = "../etc/passwd"
policy_arns = ["arn:aws:iam::aws:role/X"]
external_id = "x"
colour = "blue"

[[role]]
name = "Bad_Name"
arn = "arn:aws:iam::111111111111:role/X"
max_duration = "1h"
default_duration = "2h"
"#;
    let policies = r#"
permit (principal, action, resource);

@id("dup") permit (principal, action == Latchkey::Action::"assume", resource == Latchkey::Role::"ghost");
@id("dup") permit (principal, action, resource) when { principal.nope == 1 };
@id("catalog.mine") permit (principal, action, resource);
"#;
    let errors = check_errors(catalog, policies);
    let expect = [
        "catalog.toml: role[0].arn: `arn:aws:iam::1111:role/ReadOnly` is not a role ARN",
        "catalog.toml: role[0].max_duration: `13h` is outside the range",
        "catalog.toml: role[0].session_tags.bad: `{oops` is not a template",
        "catalog.toml: role[0].session_tags.team: unknown placeholder `{team}`",
        "catalog.toml: role[0].transitive_tag_keys: `nope` is not a key",
        "catalog.toml: role[0].session_policy: `../etc/passwd` must be the name",
        "catalog.toml: role[0].policy_arns[0]: `arn:aws:iam::aws:role/X` is not a managed policy ARN",
        "catalog.toml: role[0].external_id: must be 2 to 1224",
        "catalog.toml: role[0].colour: unknown key",
        "catalog.toml: role[1].name: `Bad_Name` is not a name",
        "catalog.toml: role[1].default_duration: must not exceed `max_duration` (1h)",
        "test.cedar:2: the policy has no `@id",
        "unknown role `ghost` in policy `dup`",
        "policy id `dup` is already used at test.cedar:4",
        "test.cedar:6: policy id `catalog.mine`: ids starting `catalog.`",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.contains(e)),
            "missing `{e}` in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expect.len(), "{}", errors.join("\n"));
}

#[test]
fn type_errors_are_reported_with_the_policy() {
    let errors = check_errors(
        CATALOG,
        r#"@id("typo") permit (principal, action, resource) when { principal.departmnt == "x" };
@id("wrong-resource") permit (principal, action == Latchkey::Action::"ssh", resource == Latchkey::Role::"readonly");"#,
    );
    assert!(
        errors[0].starts_with("test.cedar:1 (`typo`): "),
        "{errors:?}"
    );
    assert!(errors[0].contains("`departmnt`"), "{errors:?}");
    assert!(
        errors[1..]
            .iter()
            .all(|e| e.starts_with("test.cedar:2 (`wrong-resource`): "))
    );
    // Cedar's warning that the policy can never apply is an error here too.
    assert!(
        errors.iter().any(|e| e.contains("policy is impossible")),
        "{errors:?}"
    );
}

#[test]
fn session_policy_must_be_a_json_object_next_to_the_catalog() {
    let catalog = CATALOG.replace(
        "max_auth_age = \"30m\"",
        "max_auth_age = \"30m\"\nsession_policy = \"p.json\"",
    );
    let mut s = sources(&catalog, POLICIES);
    let err = |s: &Sources| PolicySet::from_sources(s).unwrap_err().to_string();
    assert!(err(&s).contains("cannot read `p.json`"));
    s.files.insert("p.json".into(), "[1]".into());
    assert!(err(&s).contains("must hold a JSON object"));
    s.files.insert(
        "p.json".into(),
        "{\"Version\": \"2012-10-17\",\n \"Statement\": []}".into(),
    );
    let set = PolicySet::from_sources(&s).unwrap();
    let role = set.role("prod-admin").unwrap();
    assert_eq!(
        role.session_policy(),
        Some(r#"{"Version":"2012-10-17","Statement":[]}"#)
    );
    assert_eq!(role.arn().account_id(), "222222222222");
    assert_eq!(role.default_duration().as_secs(), 3600);
}

#[test]
fn session_tags_render_or_fail() {
    let set = set();
    let role = set.role("readonly").unwrap();
    let alice = person("alice", &[], Some("platform"));
    assert_eq!(
        role.render_tags(&alice).unwrap(),
        vec![
            ("department".to_owned(), "platform".to_owned()),
            ("who".to_owned(), "user-alice".to_owned())
        ]
    );
    assert_eq!(role.transitive_tag_keys(), ["department", "who"]);
    let nobody = person("erin", &[], None);
    assert_eq!(
        role.render_tags(&nobody),
        Err(TagError::MissingAttribute {
            tag: "department".into(),
            attribute: "department".into()
        })
    );
    let mut listy = person("erin", &[], None);
    listy
        .attributes
        .insert("department".into(), Attribute::List(vec!["a".into()]));
    assert!(matches!(
        role.render_tags(&listy),
        Err(TagError::ListAttribute { .. })
    ));
    let odd = person("erin", &[], Some("a;b"));
    assert!(matches!(
        role.render_tags(&odd),
        Err(TagError::InvalidValue { .. })
    ));
}

#[test]
fn summary_lists_every_role_in_catalog_order() {
    let set = set();
    let alice = person("alice", &["engineering"], Some("platform"));
    let summary = set.summary(&alice, 100);
    let names: Vec<_> = summary.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["readonly", "prod-admin", "developer"]);
    let allowed: Vec<_> = summary.iter().map(|s| s.decision.is_allowed()).collect();
    assert_eq!(allowed, [true, false, true]);
}

#[test]
fn slicing_changes_no_decision() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let sliced = PolicySet::load(&dir).unwrap();
    let whole = PolicySet::load(&dir).unwrap().unsliced();
    let departments = [None, Some("platform"), Some("finance"), Some("contractors")];
    let groups: [&[&str]; 5] = [
        &[],
        &["engineering"],
        &["engineering", "sre"],
        &["finance"],
        &["prod-approvers", "sre"],
    ];
    let mut resources: Vec<Resource> = sliced
        .roles()
        .iter()
        .map(|r| Resource::Role(r.name().to_owned()))
        .collect();
    resources.push(Resource::Target("bastion".into()));
    let mut compared = 0;
    for department in departments {
        for g in groups {
            let who = person("p", g, department);
            for resource in &resources {
                for action in Action::ALL {
                    for (mfa, auth_age_secs, duration_secs) in
                        [(false, 0, 900), (true, 60, 3600), (true, 7200, 14_400)]
                    {
                        let request = AccessRequest {
                            identity: &who,
                            action,
                            resource: resource.clone(),
                            context: RequestContext {
                                mfa,
                                auth_age_secs,
                                duration_secs,
                                source_ip: None,
                                os_user: Some("ec2-user".to_owned()),
                            },
                        };
                        assert_eq!(
                            sliced.decide(&request),
                            whole.decide(&request),
                            "{request:?}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 4 * 5 * 5 * 5 * 3);
}

#[test]
fn each_request_sees_only_its_own_principal() {
    // The entities that do not depend on who asks are built once per policy set; each request
    // adds its principal to a copy. A principal's groups or attributes must never carry over.
    let set = set();
    let bob_ctx = ctx(true, 900);
    let bob = person("bob", &["sre"], None);
    let nobody = person("bob", &[], None);
    let mallory = person("mallory", &["sre"], Some("contractors"));
    let alice = person("alice", &["engineering"], Some("platform"));
    for _ in 0..2 {
        assert!(assume(&set, &bob, "prod-admin", bob_ctx.clone()).is_allowed());
        // The same subject without the group: its earlier groups are gone.
        let d = assume(&set, &nobody, "prod-admin", bob_ctx.clone());
        assert!(d.is_no_permit(), "{d:?}");
        let d = assume(&set, &mallory, "prod-admin", bob_ctx.clone());
        assert_eq!(d.determining, vec!["no-contractors"]);
        // bob again, after a contractor: the department did not stick.
        assert!(assume(&set, &bob, "prod-admin", bob_ctx.clone()).is_allowed());
        assert!(assume(&set, &alice, "developer", ctx(false, 3600)).is_allowed());
        assert!(assume(&set, &alice, "readonly", ctx(false, 3600)).is_allowed());
        let d = assume(&set, &bob, "developer", ctx(false, 3600));
        assert!(d.is_no_permit(), "{d:?}");
        let d = assume(&set, &bob, "readonly", ctx(false, 3600));
        assert!(d.is_no_permit(), "{d:?}");
    }
}

#[test]
fn a_reloaded_set_decides_on_its_own_catalog() {
    let guard = r#"
@id("frozen-account")
@reason("account 333333333333 is frozen")
forbid (principal, action, resource)
when { resource has account && resource.account == "333333333333" };
"#;
    let old = PolicySet::from_sources(&sources(CATALOG, guard)).unwrap();
    let moved = CATALOG
        .replace(
            "arn:aws:iam::111111111111:role/ReadOnly",
            "arn:aws:iam::333333333333:role/ReadOnly",
        )
        .replace(
            r#"allow_groups = ["sre"]"#,
            r#"allow_groups = ["engineering"]"#,
        );
    let new = PolicySet::from_sources(&sources(&moved, guard)).unwrap();
    let alice = person("alice", &["engineering"], None);
    let bob = person("bob", &["sre"], None);
    for _ in 0..2 {
        // readonly moved into the frozen account: the resource's attributes are the new ones.
        assert!(assume(&old, &alice, "readonly", ctx(false, 3600)).is_allowed());
        let d = assume(&new, &alice, "readonly", ctx(false, 3600));
        assert_eq!(d.determining, vec!["frozen-account"]);
        // prod-admin changed hands.
        assert!(assume(&old, &bob, "prod-admin", ctx(true, 900)).is_allowed());
        assert!(assume(&new, &bob, "prod-admin", ctx(true, 900)).is_no_permit());
        assert!(assume(&new, &alice, "prod-admin", ctx(true, 900)).is_allowed());
        assert!(assume(&old, &alice, "prod-admin", ctx(true, 900)).is_no_permit());
    }
}

#[test]
fn decisions_do_not_depend_on_the_requests_before_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let forward = PolicySet::load(&dir).unwrap();
    let backward = PolicySet::load(&dir).unwrap();
    let people: Vec<Identity> = [
        (&["engineering", "sre"][..], Some("platform")),
        (&[][..], None),
        (&["prod-approvers", "sre"][..], Some("contractors")),
        (&["engineering"][..], Some("finance")),
        (&["auditors"][..], None),
    ]
    .iter()
    .map(|(g, d)| person("p", g, *d))
    .collect();
    let mut resources: Vec<Resource> = forward
        .roles()
        .iter()
        .map(|r| Resource::Role(r.name().to_owned()))
        .collect();
    resources.extend(
        forward
            .targets()
            .iter()
            .map(|t| Resource::Target(t.name.clone())),
    );
    resources.push(Resource::AuditLog);
    let mut requests = Vec::new();
    for resource in &resources {
        for action in Action::ALL {
            for who in &people {
                requests.push(AccessRequest {
                    identity: who,
                    action,
                    resource: resource.clone(),
                    context: RequestContext {
                        mfa: true,
                        auth_age_secs: 60,
                        duration_secs: 3600,
                        source_ip: None,
                        os_user: Some("ec2-user".to_owned()),
                    },
                });
            }
        }
    }
    let first: Vec<Decision> = requests.iter().map(|r| forward.decide(r)).collect();
    let mut second: Vec<Decision> = requests.iter().rev().map(|r| backward.decide(r)).collect();
    second.reverse();
    assert_eq!(first, second);
    assert!(first.iter().any(Decision::is_allowed));
    assert!(first.iter().any(Decision::is_no_permit));
}

#[test]
fn shipped_policies_load_and_pass_their_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let set = PolicySet::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut total = 0;
    for entry in std::fs::read_dir(dir.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let cases = parse_cases(&path.display().to_string(), &text).unwrap();
        let report = set.run_tests(&cases);
        assert!(report.failures.is_empty(), "{:#?}", report.failures);
        total += report.passed;
    }
    assert!(total >= 20, "only {total} cases");
}

#[test]
fn cedar_sees_no_principal_email_unless_the_issuer_verified_it() {
    let policies = r#"
@id("developer.by-email")
permit (principal, action == Latchkey::Action::"assume", resource == Latchkey::Role::"developer")
when { principal has email && principal.email like "*@example.com" };
"#;
    let set = PolicySet::from_sources(&sources(CATALOG, policies)).unwrap();
    let provider = crate::config::ProviderConfig {
        issuer: "https://idp.example.com".into(),
        audiences: vec!["cli".into()],
        cli_client_id: "cli".into(),
        groups_claim: vec!["groups".into()],
        attributes: Vec::new(),
        mfa_amr: Vec::new(),
        mfa_acr: Vec::new(),
        token: crate::config::TokenKind::Id,
        max_token_age: std::time::Duration::from_secs(3600),
        ca_file: None,
        email_verified: crate::config::EmailVerified::Require,
        session_name_claim: "preferred_username".into(),
        cli_scopes: None,
        device_flow_amr: Vec::new(),
        device_flow_acr: Vec::new(),
    };
    let who = |claims: serde_json::Value| {
        let serde_json::Value::Object(claims) = claims else {
            panic!("object")
        };
        crate::identity::map_claims(&claims, &provider, 0, 0).unwrap()
    };
    let verified =
        who(serde_json::json!({"sub": "u", "email": "a@example.com", "email_verified": true}));
    assert_eq!(
        assume(&set, &verified, "developer", ctx(false, 3600)).effect,
        Effect::Allow
    );
    for claims in [
        serde_json::json!({"sub": "u", "email": "ceo@example.com"}),
        serde_json::json!({"sub": "u", "email": "ceo@example.com", "email_verified": false}),
    ] {
        let d = assume(&set, &who(claims), "developer", ctx(false, 3600));
        assert_eq!(d.effect, Effect::Deny, "{d:?}");
    }
}

#[test]
fn the_digest_covers_every_file_and_not_the_order_they_were_read_in() {
    let a = sources(CATALOG, POLICIES);
    let mut b = a.clone();
    b.policies
        .insert(0, ("another.cedar".to_owned(), String::new()));
    let mut c = b.clone();
    c.policies.reverse();
    assert_ne!(a.digest(), b.digest());
    assert_eq!(b.digest(), c.digest());
    let mut d = a.clone();
    d.files.insert("s.json".to_owned(), "{}".to_owned());
    assert_ne!(a.digest(), d.digest());
    // Moving text from one file to the next changes the digest.
    let mut e = a.clone();
    e.catalog.push('#');
    let mut f = e.clone();
    f.catalog.pop();
    f.schema.insert(0, '#');
    assert_ne!(e.digest(), f.digest());
    assert_eq!(PolicySet::from_sources(&a).unwrap().digest(), a.digest());
}
