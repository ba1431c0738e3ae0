use chrono::TimeZone;

use super::*;
use crate::text::CUT_MARK;

/// A notice with every field set, for tests here and in `notify`.
pub(crate) fn notice(change: Change) -> Notice {
    Notice {
        request_id: "0b6f6a52-1c1e-4a43-9d0c-3a0d3c3e7c11".to_owned(),
        change,
        state: "pending".to_owned(),
        role: "prod-admin".to_owned(),
        requester: "https://idp.example.com#alice-sub".to_owned(),
        requester_name: Some("alice@example.com".to_owned()),
        actor: Some("https://idp.example.com#bob-sub".to_owned()),
        reason: "database is down".to_owned(),
        ticket: Some("INC-42".to_owned()),
        comment: Some("looks right".to_owned()),
        emergency: false,
        approvals: 1,
        approvals_required: 2,
        at: Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap(),
        window_ends_at: Some(Utc.with_ymd_and_hms(2026, 11, 29, 14, 0, 0).unwrap()),
    }
}

fn slack(n: &Notice) -> Value {
    serde_json::from_str(&body(WebhookFormat::Slack, "d-1", n).unwrap()).unwrap()
}

#[test]
fn slack_text_says_what_happened_in_a_few_lines() {
    let text = slack_text(&notice(Change::Approved));
    assert_eq!(
        text,
        "Approved: *prod-admin* for alice@example.com\n\
         Reason: database is down\n\
         State: pending · Approvals: 1/2 · Ticket: INC-42 · Window ends: 2026-11-29T14:00:00Z\n\
         By: https://idp.example.com#bob-sub · Comment: looks right\n\
         Request: 0b6f6a52-1c1e-4a43-9d0c-3a0d3c3e7c11 · 2026-11-29T10:00:00Z"
    );
}

#[test]
fn slack_text_without_optional_fields_still_names_the_request() {
    let mut n = notice(Change::Expired);
    n.requester_name = None;
    n.actor = None;
    n.ticket = None;
    n.comment = None;
    n.window_ends_at = None;
    n.state = "expired".to_owned();
    assert_eq!(
        slack_text(&n),
        "Expired: *prod-admin* for https://idp.example.com#alice-sub\n\
         Reason: database is down\n\
         State: expired · Approvals: 1/2\n\
         Request: 0b6f6a52-1c1e-4a43-9d0c-3a0d3c3e7c11 · 2026-11-29T10:00:00Z"
    );
}

#[test]
fn every_change_has_a_headline_and_the_request_id() {
    for change in [
        Change::Created,
        Change::Approved,
        Change::Active,
        Change::Denied,
        Change::Cancelled,
        Change::Revoked,
        Change::Expired,
        Change::Reviewed,
    ] {
        let text = slack_text(&notice(change));
        assert!(text.contains("*prod-admin*"), "{change:?}: {text}");
        assert!(
            text.contains("Request: 0b6f6a52-1c1e-4a43-9d0c-3a0d3c3e7c11"),
            "{change:?}: {text}"
        );
        assert!(!text.contains("EMERGENCY"), "{change:?}: {text}");
    }
}

#[test]
fn an_emergency_activation_is_loud() {
    let mut n = notice(Change::Active);
    n.emergency = true;
    n.state = "active".to_owned();
    let text = slack_text(&n);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(
            "\u{1F6A8} *EMERGENCY self-activation*: *prod-admin* for alice@example.com"
        ),
        "{first}"
    );
    assert!(first.contains("needs review"), "{first}");
    // Later changes of an emergency request stay flagged.
    n.change = Change::Reviewed;
    assert!(slack_text(&n).starts_with("\u{1F6A8} *EMERGENCY* Reviewed:"));
}

#[test]
fn user_text_cannot_mention_link_or_format_lines_in_slack() {
    let mut n = notice(Change::Created);
    n.reason = "<!channel> see <https://evil.example|the runbook> & <@U123>".to_owned();
    n.comment = Some("a\n*Approved by the CISO*\r\nb".to_owned());
    n.requester_name = Some("<!here>".to_owned());
    n.ticket = Some("INC-1>".to_owned());
    let text = slack_text(&n);
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    assert!(text.contains(
        "Reason: &lt;!channel&gt; see &lt;https://evil.example|the runbook&gt; &amp; &lt;@U123&gt;"
    ));
    assert!(text.contains("for &lt;!here&gt;"), "{text}");
    assert!(text.contains("Ticket: INC-1&gt;"), "{text}");
    // The comment's line breaks became spaces: still five lines, none starting with user text.
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.contains("Comment: a *Approved by the CISO*  b"),
        "{text}"
    );
    let v = slack(&n);
    assert_eq!(v["text"], text);
    assert_eq!(v["delivery_id"], "d-1");
    assert_eq!(v["unfurl_links"], false);
    assert_eq!(v["unfurl_media"], false);
}

#[test]
fn terminal_escapes_and_control_characters_are_replaced_in_both_formats() {
    let mut n = notice(Change::Denied);
    n.reason = "fine\u{1b}[1A\u{1b}[2Kforged\u{7}\u{0}\u{9b}0m\u{202E}txt".to_owned();
    n.comment = Some("tab\there".to_owned());
    n.requester_name = Some("eve\u{1b}]0;pwned\u{7}".to_owned());
    let text = slack_text(&n);
    let json = body(WebhookFormat::Json, "d-1", &n).unwrap();
    for shown in [&text, &json] {
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
            "{shown}"
        );
        assert!(
            !shown.contains('\u{9b}') && !shown.contains('\u{202E}'),
            "{shown}"
        );
        assert!(
            !shown.contains("\\u001b") && !shown.contains("\\u0007"),
            "{shown}"
        );
    }
    assert!(
        text.contains(
            "Reason: fine\u{FFFD}[1A\u{FFFD}[2Kforged\u{FFFD}\u{FFFD}\u{FFFD}0m\u{FFFD}txt"
        )
    );
    assert!(text.contains("Comment: tab here"));
    // Our own line breaks are the only control characters left.
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["requester_name"], "eve\u{FFFD}]0;pwned\u{FFFD}");
    assert_eq!(v["comment"], "tab here");
}

#[test]
fn every_control_character_is_gone_whatever_field_it_is_in() {
    let nasty: String = (0u32..=0x9f)
        .chain([0x200b, 0x200e, 0x202a, 0x2066, 0x2028, 0xfeff])
        .filter_map(char::from_u32)
        .collect();
    let mut n = notice(Change::Revoked);
    n.request_id = nasty.clone();
    n.state = nasty.clone();
    n.role = nasty.clone();
    n.requester = nasty.clone();
    n.requester_name = Some(nasty.clone());
    n.actor = Some(nasty.clone());
    n.reason = nasty.clone();
    n.ticket = Some(nasty.clone());
    n.comment = Some(nasty);
    let text = slack_text(&n);
    assert_eq!(text.lines().count(), 5);
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && crate::text::is_control_or_invisible(c)),
        "{text:?}"
    );
    let v = json_body("d", &n).unwrap();
    for field in [
        "request_id",
        "state",
        "role",
        "requester",
        "requester_name",
        "actor",
        "reason",
        "ticket",
        "comment",
    ] {
        let s = v[field].as_str().unwrap();
        assert!(
            !s.chars().any(crate::text::is_control_or_invisible),
            "{field}: {s:?}"
        );
    }
}

#[test]
fn user_text_is_capped_at_one_kib_and_marked() {
    let mut n = notice(Change::Created);
    n.reason = format!("{}{}", "x".repeat(1023), "€€€");
    n.comment = Some("<".repeat(2000));
    let text = slack_text(&n);
    let reason = text
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("Reason: ")
        .unwrap();
    assert_eq!(reason, format!("{}{CUT_MARK}", "x".repeat(1023)));
    // Capped before escaping: 1024 `<` shown, each as `&lt;`, then the mark.
    assert!(text.contains(&format!("Comment: {}{CUT_MARK}", "&lt;".repeat(1024))));
    let v = json_body("d", &n).unwrap();
    assert_eq!(v["reason"], format!("{}{CUT_MARK}", "x".repeat(1023)));
    assert_eq!(v["comment"], format!("{}{CUT_MARK}", "<".repeat(1024)));
    // A short text is left whole.
    assert_eq!(
        json_body("d", &notice(Change::Created)).unwrap()["reason"],
        "database is down"
    );
}

#[test]
fn json_body_is_the_notice_with_the_delivery_id() {
    let n = notice(Change::Active);
    let v: Value = serde_json::from_str(&body(WebhookFormat::Json, "d-7", &n).unwrap()).unwrap();
    assert_eq!(v["delivery_id"], "d-7");
    assert_eq!(v["request_id"], n.request_id);
    assert_eq!(v["change"], "active");
    assert_eq!(v["approvals"], 1);
    assert_eq!(v["approvals_required"], 2);
    assert_eq!(v["emergency"], false);
    assert_eq!(v["window_ends_at"], "2026-11-29T14:00:00Z");
    let mut back = v.clone();
    back.as_object_mut().unwrap().remove("delivery_id");
    let back: Notice = serde_json::from_value(back).unwrap();
    assert_eq!(back, n);
}
