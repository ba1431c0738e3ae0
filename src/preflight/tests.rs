//! Unit tests of the preflight checks: principals, actions with wildcards, conditions, the
//! external id, durations, and the table.

use super::trust::{percent_decode, wildcard_match};
use super::*;

const BROKER_ROLE: &str = "arn:aws:iam::111111111111:role/latchkey/LatchkeyBroker";

fn broker() -> Caller {
    Caller::parse(
        "arn:aws:sts::111111111111:assumed-role/LatchkeyBroker/i-0abc",
        "111111111111",
    )
}

fn expected(external_id: Option<&str>) -> Expected {
    Expected {
        name: "readonly".to_owned(),
        arn: "arn:aws:iam::111111111111:role/latchkey/ReadOnly".to_owned(),
        max_duration_secs: 3600,
        external_id: external_id.map(str::to_owned),
    }
}

fn observed(document: &str, max_session_secs: u64) -> Observed {
    Observed::Role {
        arn: "arn:aws:iam::111111111111:role/latchkey/ReadOnly".to_owned(),
        max_session_secs,
        trust_policy: document.to_owned(),
    }
}

fn trust(principal: &str, actions: &str, condition: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":{principal}}},"Action":{actions}{condition}}}]}}"#
    )
}

const ALL: &str = r#"["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"]"#;

fn problems(findings: &[Finding]) -> Vec<&str> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .map(|f| f.problem.as_str())
        .collect()
}

fn warnings(findings: &[Finding]) -> Vec<&str> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.problem.as_str())
        .collect()
}

#[test]
fn a_correct_role_has_no_findings() {
    let doc = trust(&format!("\"{BROKER_ROLE}\""), ALL, "");
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
    assert_eq!(findings, vec![]);
    assert!(passes(&findings));
}

#[test]
fn the_url_encoded_document_iam_returns_is_decoded() {
    let doc = trust(&format!("\"{BROKER_ROLE}\""), ALL, "");
    let encoded: String = doc
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let findings = check_role(&broker(), &expected(None), &observed(&encoded, 3600));
    assert_eq!(findings, vec![]);
}

#[test]
fn percent_decoding_rejects_broken_escapes() {
    assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
    assert_eq!(percent_decode("%7B%22"), Some("{\"".to_owned()));
    assert_eq!(percent_decode("%2"), None);
    assert_eq!(percent_decode("%+1"), None);
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%FF"), None, "not UTF-8");
}

#[test]
fn each_missing_action_is_named() {
    for (actions, missing) in [
        (
            r#"["sts:AssumeRole","sts:SetSourceIdentity"]"#,
            "sts:TagSession",
        ),
        (
            r#"["sts:AssumeRole","sts:TagSession"]"#,
            "sts:SetSourceIdentity",
        ),
        (r#""sts:TagSession""#, "sts:AssumeRole"),
    ] {
        let doc = trust(&format!("\"{BROKER_ROLE}\""), actions, "");
        let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
        let p = problems(&findings);
        assert!(
            p.iter()
                .any(|p| p.contains(&format!("does not allow `{missing}`"))),
            "{actions}: {p:?}"
        );
        assert!(!passes(&findings));
    }
}

#[test]
fn action_wildcards_and_not_action_count() {
    for actions in [r#""sts:*""#, r#""*""#, r#""STS:assume*""#] {
        let doc = trust(&format!("\"{BROKER_ROLE}\""), actions, "");
        let policy = TrustPolicy::parse(&doc).unwrap();
        assert!(
            matches!(
                policy.evaluate(&broker(), "sts:AssumeRole"),
                ActionVerdict::Allowed { .. }
            ),
            "{actions}"
        );
    }
    // `sts:Assume*` does not cover the other two.
    let doc = trust(&format!("\"{BROKER_ROLE}\""), r#""sts:Assume*""#, "");
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
    assert_eq!(problems(&findings).len(), 2, "{findings:?}");

    let doc = format!(
        r#"{{"Statement":{{"Effect":"Allow","Principal":{{"AWS":"{BROKER_ROLE}"}},"NotAction":"sts:TagSession"}}}}"#
    );
    let policy = TrustPolicy::parse(&doc).unwrap();
    assert!(matches!(
        policy.evaluate(&broker(), "sts:AssumeRole"),
        ActionVerdict::Allowed { .. }
    ));
    assert_eq!(
        policy.evaluate(&broker(), "sts:TagSession"),
        ActionVerdict::NotAllowed
    );
}

#[test]
fn wildcards_match_like_iam() {
    assert!(wildcard_match("*", "sts:AssumeRole"));
    assert!(wildcard_match("sts:*", "sts:AssumeRole"));
    assert!(wildcard_match("sts:*Session", "sts:TagSession"));
    assert!(wildcard_match("sts:?agSession", "sts:TagSession"));
    assert!(wildcard_match("STS:ASSUMEROLE", "sts:AssumeRole"));
    assert!(wildcard_match("s*s:*e", "sts:AssumeRole"));
    assert!(!wildcard_match("sts:Assume", "sts:AssumeRole"));
    assert!(!wildcard_match("sts:AssumeRole", "sts:AssumeRoleWithSAML"));
    assert!(!wildcard_match("iam:*", "sts:AssumeRole"));
    assert!(!wildcard_match("", "sts:AssumeRole"));
}

#[test]
fn a_matching_deny_wins_over_an_allow() {
    let doc = format!(
        r#"{{"Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"{BROKER_ROLE}"}},"Action":"sts:*"}},
            {{"Sid":"NoTags","Effect":"Deny","Principal":{{"AWS":"*"}},"Action":"sts:TagSession"}}]}}"#
    );
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
    assert_eq!(
        problems(&findings),
        vec!["statement `NoTags` denies `sts:TagSession` to the broker"]
    );
    // A Deny whose condition never holds for the broker does not apply.
    let doc = format!(
        r#"{{"Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"{BROKER_ROLE}"}},"Action":"sts:*"}},
            {{"Effect":"Deny","Principal":{{"AWS":"*"}},"Action":"sts:*","Condition":{{"Null":{{"sts:SourceIdentity":"true"}}}}}}]}}"#
    );
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
    assert_eq!(findings, vec![]);
}

#[test]
fn a_wrong_principal_says_whom_the_policy_trusts() {
    let doc = trust(
        r#"["arn:aws:iam::111111111111:role/SomeoneElse","arn:aws:iam::222222222222:role/LatchkeyBroker"]"#,
        ALL,
        "",
    );
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
    let p = problems(&findings);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("`arn:aws:iam::111111111111:role/SomeoneElse`"),
        "{p:?}"
    );
    assert!(p[0].contains("not the broker's identity"), "{p:?}");
    assert!(
        findings[0]
            .fix
            .contains("arn:aws:iam::111111111111:role/LatchkeyBroker"),
        "{findings:?}"
    );
    // A service principal is not the broker.
    let doc = r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:*"}}"#;
    let p = check_role(&broker(), &expected(None), &observed(doc, 3600));
    assert!(p[0].problem.contains("trusts no AWS principal"), "{p:?}");
}

#[test]
fn principals_match_by_account_and_name_whatever_the_path() {
    let caller = broker();
    assert_eq!(caller.matches(BROKER_ROLE), Some(PrincipalMatch::Exact));
    assert_eq!(
        caller.matches("arn:aws:iam::111111111111:role/LatchkeyBroker"),
        Some(PrincipalMatch::Exact)
    );
    assert_eq!(
        caller.matches("arn:aws:iam::111111111111:root"),
        Some(PrincipalMatch::AccountRoot)
    );
    assert_eq!(
        caller.matches("111111111111"),
        Some(PrincipalMatch::AccountRoot)
    );
    assert_eq!(caller.matches("*"), Some(PrincipalMatch::Everyone));
    assert_eq!(
        caller.matches("arn:aws:iam::111111111111:role/Latchkey"),
        None
    );
    assert_eq!(
        caller.matches("arn:aws:iam::111111111111:role/xLatchkeyBroker"),
        None
    );
    assert_eq!(
        caller.matches("arn:aws:iam::222222222222:role/LatchkeyBroker"),
        None
    );
    assert_eq!(
        caller.matches("arn:aws:iam::111111111111:user/LatchkeyBroker"),
        None
    );
    assert_eq!(
        caller.principal_arn(),
        "arn:aws:iam::111111111111:role/LatchkeyBroker"
    );

    // moto's default identity, and a plain IAM user.
    let moto = Caller::parse("arn:aws:sts::123456789012:user/moto", "123456789012");
    assert_eq!(
        moto.matches("arn:aws:sts::123456789012:user/moto"),
        Some(PrincipalMatch::Exact)
    );
    assert_eq!(
        moto.matches("arn:aws:iam::123456789012:user/moto"),
        Some(PrincipalMatch::Exact)
    );
    assert_eq!(moto.principal_arn(), "arn:aws:iam::123456789012:user/moto");
    let user = Caller::parse("arn:aws:iam::123456789012:user/ops/broker", "123456789012");
    assert_eq!(
        user.matches("arn:aws:iam::123456789012:user/ops/broker"),
        Some(PrincipalMatch::Exact)
    );
    assert_eq!(user.matches("arn:aws:iam::123456789012:role/broker"), None);
}

#[test]
fn the_account_root_is_a_warning_and_everyone_a_problem() {
    let doc = trust(r#""arn:aws:iam::111111111111:root""#, ALL, "");
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3600));
    assert!(passes(&findings), "{findings:?}");
    let w = warnings(&findings);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("whole account `111111111111`"), "{w:?}");

    let doc = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sts:*"}}"#;
    let findings = check_role(&broker(), &expected(None), &observed(doc, 3600));
    assert_eq!(
        problems(&findings),
        vec!["the trust policy trusts every AWS principal (`*`)"]
    );
}

#[test]
fn a_short_max_session_duration_is_a_problem() {
    let doc = trust(&format!("\"{BROKER_ROLE}\""), ALL, "");
    let findings = check_role(&broker(), &expected(None), &observed(&doc, 3599));
    let p = problems(&findings);
    assert_eq!(
        p,
        vec!["MaxSessionDuration is 3599 s, shorter than the catalog's max_duration of 3600 s"]
    );
    assert!(
        findings[0]
            .fix
            .contains("--role-name ReadOnly --max-session-duration 3600")
    );
    assert!(passes(&check_role(
        &broker(),
        &expected(None),
        &observed(&doc, 43200)
    )));
}

#[test]
fn the_external_id_must_match() {
    let with_id = |id: &str| {
        trust(
            &format!("\"{BROKER_ROLE}\""),
            ALL,
            &format!(r#","Condition":{{"StringEquals":{{"sts:ExternalId":"{id}"}}}}"#),
        )
    };
    // Matching: fine, and reported once rather than for each action.
    let findings = check_role(
        &broker(),
        &expected(Some("abc-123")),
        &observed(&with_id("abc-123"), 3600),
    );
    assert_eq!(findings, vec![]);
    let findings = check_role(
        &broker(),
        &expected(Some("abc-123")),
        &observed(&with_id("zzz"), 3600),
    );
    assert_eq!(
        problems(&findings),
        vec!["the trust policy requires ExternalId `zzz`, the catalog sends `abc-123`"]
    );
    let findings = check_role(&broker(), &expected(None), &observed(&with_id("zzz"), 3600));
    assert_eq!(
        problems(&findings),
        vec!["the trust policy requires an ExternalId, the catalog sets none"]
    );
    let plain = trust(&format!("\"{BROKER_ROLE}\""), ALL, "");
    let findings = check_role(
        &broker(),
        &expected(Some("abc-123")),
        &observed(&plain, 3600),
    );
    assert!(passes(&findings));
    assert_eq!(
        warnings(&findings),
        vec!["the catalog sends ExternalId `abc-123` but the trust policy does not require it"]
    );
}

#[test]
fn source_identity_conditions_are_decided_and_others_are_flagged() {
    let cond = |c: &str| {
        trust(
            &format!("\"{BROKER_ROLE}\""),
            ALL,
            &format!(r#","Condition":{c}"#),
        )
    };
    // Required source identity: the broker always sets one.
    for c in [
        r#"{"Null":{"sts:SourceIdentity":"false"}}"#,
        r#"{"StringLike":{"sts:SourceIdentity":"*"}}"#,
    ] {
        let findings = check_role(&broker(), &expected(None), &observed(&cond(c), 3600));
        assert_eq!(findings, vec![], "{c}");
    }
    let findings = check_role(
        &broker(),
        &expected(None),
        &observed(&cond(r#"{"Null":{"sts:SourceIdentity":"true"}}"#), 3600),
    );
    assert_eq!(problems(&findings).len(), 3, "{findings:?}");
    assert!(
        problems(&findings)[0].contains("never meets"),
        "{findings:?}"
    );
    // A request tag condition cannot be decided offline: allowed, with a warning per action.
    let findings = check_role(
        &broker(),
        &expected(None),
        &observed(
            &cond(r#"{"StringEquals":{"aws:RequestTag/team":"x"}}"#),
            3600,
        ),
    );
    assert!(passes(&findings));
    assert_eq!(warnings(&findings).len(), 3, "{findings:?}");
    assert!(warnings(&findings)[0].contains("`StringEquals` on `aws:RequestTag/team`"));
}

#[test]
fn missing_unreadable_and_renamed_roles() {
    let missing = check_role(&broker(), &expected(None), &Observed::Missing);
    assert_eq!(
        problems(&missing),
        vec!["role `arn:aws:iam::111111111111:role/latchkey/ReadOnly` does not exist"]
    );
    let other = check_role(&broker(), &expected(None), &Observed::OtherAccount);
    assert!(passes(&other) && warnings(&other).len() == 1, "{other:?}");
    let denied = check_role(
        &broker(),
        &expected(None),
        &Observed::Unreadable("AccessDenied: no".to_owned()),
    );
    assert!(!passes(&denied));
    assert!(denied[0].fix.contains("iam:GetRole"));
    let doc = trust(&format!("\"{BROKER_ROLE}\""), ALL, "");
    let moved = Observed::Role {
        arn: "arn:aws:iam::111111111111:role/ReadOnly".to_owned(),
        max_session_secs: 3600,
        trust_policy: doc,
    };
    let p = check_role(&broker(), &expected(None), &moved);
    assert!(problems(&p)[0].contains("but the role is `arn:aws:iam::111111111111:role/ReadOnly`"));
    let garbage = check_role(&broker(), &expected(None), &observed("%7Bnope", 3600));
    assert!(problems(&garbage)[0].contains("not JSON"), "{garbage:?}");
}

#[test]
fn the_table_has_a_row_per_role_and_a_fix_per_problem() {
    let findings = check_role(&broker(), &expected(None), &Observed::Missing);
    let roles = vec!["developer".to_owned(), "readonly".to_owned()];
    let table = render(&roles, &findings);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("ROLE       STATUS   WHAT / FIX"),
        "{table}"
    );
    assert!(lines[1].starts_with("developer  ok"), "{table}");
    assert!(
        lines[2].starts_with("readonly   problem  role `"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("                    fix: create the role"),
        "{table}"
    );
}
