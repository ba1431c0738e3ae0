use super::*;

fn params() -> AssumeRoleParams {
    AssumeRoleParams {
        role_arn: "arn:aws:iam::123456789012:role/ReadOnly".to_owned(),
        session_name: SessionName::for_user("alice@example.com", "0a1b2c3d"),
        source_identity: SourceIdentity::for_principal("alice", "https://idp.example.com", "u1"),
        duration_secs: 3600,
        tags: vec![
            SessionTag::new("department", "platform"),
            SessionTag::new("team name", "Plateforme Données: ops/été=+@-_."),
        ],
        transitive_tag_keys: vec!["department".to_owned()],
        session_policy: Some(r#"{"Version":"2012-10-17","Statement":[]}"#.to_owned()),
        policy_arns: vec![
            "arn:aws:iam::aws:policy/ReadOnlyAccess".to_owned(),
            "arn:aws:iam::123456789012:policy/team/Narrow".to_owned(),
        ],
        external_id: Some("latchkey:prod/ext-1".to_owned()),
    }
}

fn refused(params: AssumeRoleParams) -> InputError {
    match AssumeRoleInput::new(params) {
        Ok(input) => panic!("accepted {input:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_full_valid_input_is_accepted_unchanged() {
    let input = AssumeRoleInput::new(params()).unwrap();
    assert_eq!(input.params(), &params());
}

#[test]
fn minimal_input_is_accepted() {
    let mut p = params();
    p.tags.clear();
    p.transitive_tag_keys.clear();
    p.session_policy = None;
    p.policy_arns.clear();
    p.external_id = None;
    AssumeRoleInput::new(p).unwrap();
}

#[test]
fn duration_bounds() {
    for ok in [900, 43_200] {
        let mut p = params();
        p.duration_secs = ok;
        AssumeRoleInput::new(p).unwrap();
    }
    for bad in [0, 899, 43_201, u32::MAX] {
        let mut p = params();
        p.duration_secs = bad;
        assert_eq!(refused(p).field(), "duration_secs");
    }
}

#[test]
fn at_most_fifty_tags() {
    let mut p = params();
    p.tags = (0..50)
        .map(|i| SessionTag::new(format!("k{i}"), "v"))
        .collect();
    p.transitive_tag_keys.clear();
    AssumeRoleInput::new(p.clone()).unwrap();
    p.tags.push(SessionTag::new("k50", "v"));
    assert_eq!(refused(p).field(), "tags");
}

#[test]
fn tag_key_and_value_lengths() {
    let mut p = params();
    p.tags = vec![
        SessionTag::new("k".repeat(128), "v".repeat(256)),
        SessionTag::new("e", ""),
    ];
    p.transitive_tag_keys.clear();
    AssumeRoleInput::new(p.clone()).unwrap();

    p.tags = vec![SessionTag::new("k".repeat(129), "v")];
    assert_eq!(refused(p.clone()).field(), "tags[0].key");
    p.tags = vec![SessionTag::new("", "v")];
    assert_eq!(refused(p.clone()).field(), "tags[0].key");
    p.tags = vec![SessionTag::new("k", "v".repeat(257))];
    assert_eq!(refused(p.clone()).field(), "tags[0].value");
    // Characters, not bytes: 128 two-byte letters are fine.
    p.tags = vec![SessionTag::new("é".repeat(128), "ü".repeat(256))];
    AssumeRoleInput::new(p).unwrap();
}

#[test]
fn tag_characters() {
    for bad in [
        "<",
        ">",
        "a\"b",
        "semi;colon",
        "tab\there",
        "new\nline",
        "emoji😀",
        "a*b",
        "#",
    ] {
        let mut p = params();
        p.tags = vec![SessionTag::new("ok", bad)];
        p.transitive_tag_keys.clear();
        assert_eq!(refused(p.clone()).field(), "tags[0].value", "{bad:?}");
        p.tags = vec![SessionTag::new(bad, "ok")];
        assert_eq!(refused(p).field(), "tags[0].key", "{bad:?}");
    }
    for good in ["Ünïcødé", "日本語", "١٢٣", "a b\u{3000}c", "_.:/=+-@"] {
        let mut p = params();
        p.tags = vec![SessionTag::new(good, good)];
        p.transitive_tag_keys.clear();
        AssumeRoleInput::new(p).unwrap();
    }
}

#[test]
fn every_ascii_character_is_classified_as_stss_tag_pattern_does() {
    let pattern = Regex::new(r"\A[\p{L}\p{Z}\p{N}_.:/=+\-@]\z").unwrap();
    for c in (0u8..=127).map(char::from) {
        let expected = pattern.is_match(c.encode_utf8(&mut [0u8; 4]));
        assert_eq!(ascii_tag_char(c), Some(expected), "{c:?}");
        assert_eq!(
            check_tag_chars("f", &c.to_string()).is_ok(),
            expected,
            "{c:?}"
        );
    }
    assert_eq!(ascii_tag_char('é'), None);
}

#[test]
fn the_error_quotes_the_character_not_the_value() {
    let mut p = params();
    p.tags = vec![SessionTag::new("k", "secret-looking<value")];
    p.transitive_tag_keys.clear();
    let message = refused(p).to_string();
    assert_eq!(message, "invalid `tags[0].value`: contains `<`");
}

#[test]
fn reserved_and_duplicate_keys() {
    for key in ["aws:foo", "AWS:foo", "Aws:"] {
        let mut p = params();
        p.tags = vec![SessionTag::new(key, "v")];
        p.transitive_tag_keys.clear();
        assert_eq!(refused(p).field(), "tags[0].key", "{key}");
    }
    let mut p = params();
    p.tags = vec![SessionTag::new("Team", "a"), SessionTag::new("team", "b")];
    p.transitive_tag_keys.clear();
    let e = refused(p);
    assert_eq!(e.field(), "tags[1].key");
    assert!(e.to_string().contains("repeats"), "{e}");
}

#[test]
fn transitive_keys_must_name_tags_exactly_once() {
    let mut p = params();
    p.transitive_tag_keys = vec!["missing".to_owned()];
    assert_eq!(refused(p).field(), "transitive_tag_keys[0]");
    let mut p = params();
    p.transitive_tag_keys = vec!["Department".to_owned()];
    assert_eq!(refused(p).field(), "transitive_tag_keys[0]");
    let mut p = params();
    p.transitive_tag_keys = vec!["department".to_owned(), "department".to_owned()];
    assert_eq!(refused(p).field(), "transitive_tag_keys[1]");
}

#[test]
fn session_policy_is_a_small_json_object() {
    for bad in ["", "[]", "\"s\"", "{", "null", "{\"a\":1} trailing"] {
        let mut p = params();
        p.session_policy = Some(bad.to_owned());
        assert_eq!(refused(p).field(), "session_policy", "{bad:?}");
    }
    let mut p = params();
    let filler = "x".repeat(2048 - r#"{"a":""}"#.len());
    p.session_policy = Some(format!(r#"{{"a":"{filler}"}}"#));
    AssumeRoleInput::new(p.clone()).unwrap();
    p.session_policy = Some(format!(r#"{{"a":"{filler}x"}}"#));
    assert_eq!(refused(p).field(), "session_policy");
}

#[test]
fn policy_arns() {
    let mut p = params();
    p.policy_arns = (0..10)
        .map(|i| format!("arn:aws:iam::123456789012:policy/p{i}"))
        .collect();
    AssumeRoleInput::new(p.clone()).unwrap();
    p.policy_arns
        .push("arn:aws:iam::123456789012:policy/p10".to_owned());
    assert_eq!(refused(p).field(), "policy_arns");
    for bad in [
        "arn:aws:iam::123456789012:role/NotAPolicy",
        "arn:aws:s3:::bucket/policy/x",
        "arn:aws:iam::12345:policy/ShortAccount",
        "arn:aws:iam:us-east-1:123456789012:policy/Regional",
        "arn:aws:iam::123456789012:policy/",
        "arn:aws:iam::123456789012:policy/bad name",
        "not-an-arn-at-all-really",
    ] {
        let mut p = params();
        p.policy_arns = vec![bad.to_owned()];
        assert_eq!(refused(p).field(), "policy_arns[0]", "{bad}");
    }
}

#[test]
fn role_arn() {
    for good in [
        "arn:aws:iam::123456789012:role/R",
        "arn:aws-us-gov:iam::123456789012:role/path/to/Role+=,.@_-",
    ] {
        let mut p = params();
        p.role_arn = good.to_owned();
        AssumeRoleInput::new(p).unwrap();
    }
    for bad in [
        "",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::aws:role/AwsOwned",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role/a b",
        "arn:aws:sts::123456789012:assumed-role/R/s",
    ] {
        let mut p = params();
        p.role_arn = bad.to_owned();
        assert_eq!(refused(p).field(), "role_arn", "{bad}");
    }
}

#[test]
fn external_id() {
    for good in ["ab", "urn:a/b=c,d.e@f+g_h-i", &"x".repeat(1224)] {
        let mut p = params();
        p.external_id = Some(good.to_owned());
        AssumeRoleInput::new(p).unwrap();
    }
    for bad in ["", "a", "has space", "semi;colon", "ünï", &"x".repeat(1225)] {
        let mut p = params();
        p.external_id = Some(bad.to_owned());
        assert_eq!(refused(p).field(), "external_id", "{bad}");
    }
}

// === SendKeyInput ===

/// An ed25519 key line as `PublicKey::openssh_line` writes it: 80 characters.
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn send_key() -> SendKeyParams {
    SendKeyParams {
        region: "eu-west-1".to_owned(),
        instance_id: "i-0123456789abcdef0".to_owned(),
        os_user: "ec2-user".to_owned(),
        public_key: ED25519.to_owned(),
        availability_zone: Some("eu-west-1a".to_owned()),
    }
}

fn key_refused(params: SendKeyParams) -> InputError {
    match SendKeyInput::new(params) {
        Ok(input) => panic!("accepted {input:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_catalog_push_passes_unchanged() {
    assert_eq!(ED25519.len(), 80);
    let input = SendKeyInput::new(send_key()).unwrap();
    assert_eq!(input.params(), &send_key());
    let without_zone = SendKeyParams {
        availability_zone: None,
        instance_id: "i-01234567".to_owned(),
        os_user: "_svc-1".to_owned(),
        ..send_key()
    };
    assert!(SendKeyInput::new(without_zone).is_ok());
}

#[test]
fn instance_ids_follow_ec2_instance_connects_pattern() {
    for id in [
        "i-0123456",
        "i-0123456789abcdef01",
        "i-0123456789ABCDEF0",
        "0123456789",
        "i-",
    ] {
        let e = key_refused(SendKeyParams {
            instance_id: id.to_owned(),
            ..send_key()
        });
        assert_eq!(e.field(), "instance_id", "{id}");
    }
    for id in ["i-01234567", "i-0123456789abc", "i-0123456789abcdef0"] {
        let params = SendKeyParams {
            instance_id: id.to_owned(),
            ..send_key()
        };
        assert!(SendKeyInput::new(params).is_ok(), "{id}");
    }
}

#[test]
fn os_users_follow_the_unix_user_pattern() {
    let longest = format!("a{}", "b".repeat(31));
    assert!(
        SendKeyInput::new(SendKeyParams {
            os_user: longest.clone(),
            ..send_key()
        })
        .is_ok()
    );
    for user in [
        "",
        "Root",
        "1user",
        "-user",
        "ec2 user",
        "ec2-user\n",
        &format!("{longest}c"),
    ] {
        let e = key_refused(SendKeyParams {
            os_user: user.to_owned(),
            ..send_key()
        });
        assert_eq!(e.field(), "os_user", "{user:?}");
    }
}

#[test]
fn the_key_line_is_80_to_4096_characters_of_one_known_type_and_never_quoted() {
    let rsa_4096 = format!("ssh-rsa {}", "A".repeat(4088));
    assert_eq!(rsa_4096.len(), 4096);
    assert!(
        SendKeyInput::new(SendKeyParams {
            public_key: rsa_4096.clone(),
            ..send_key()
        })
        .is_ok()
    );
    let cases = [
        format!("{rsa_4096}A"),
        ED25519[..79].to_owned(),
        format!("{ED25519} comment"),
        format!("{ED25519}\n"),
        ED25519.replace("ssh-ed25519", "ssh-dss    "),
        format!("ecdsa-sha2-nistp256 {}", "A".repeat(80)),
        format!("command=\"x\" {ED25519}"),
        format!("ssh-ed25519  {}", "A".repeat(80)),
    ];
    for line in cases {
        let e = key_refused(SendKeyParams {
            public_key: line.clone(),
            ..send_key()
        });
        assert_eq!(e.field(), "public_key", "{line}");
        assert!(!e.to_string().contains("AAAA"), "{e}");
    }
}

#[test]
fn regions_and_availability_zones_are_checked() {
    for zone in ["eu-west-1a", "us-gov-west-1b", "us-east-1-bos-1a"] {
        let params = SendKeyParams {
            availability_zone: Some(zone.to_owned()),
            ..send_key()
        };
        let result = SendKeyInput::new(params);
        if zone == "us-east-1-bos-1a" {
            assert_eq!(result.unwrap_err().field(), "availability_zone");
        } else {
            assert!(result.is_ok(), "{zone}");
        }
    }
    for zone in ["", "eu-west-1", "euwest1a", "eu-west-a", "eu west-1a"] {
        let e = key_refused(SendKeyParams {
            availability_zone: Some(zone.to_owned()),
            ..send_key()
        });
        assert_eq!(e.field(), "availability_zone", "{zone:?}");
    }
    for region in ["", "eu-west", "EU-west-1", "eu-west-1a"] {
        let e = key_refused(SendKeyParams {
            region: region.to_owned(),
            ..send_key()
        });
        assert_eq!(e.field(), "region", "{region:?}");
    }
}
