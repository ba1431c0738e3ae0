use std::path::Path;

use super::*;

fn base() -> &'static Path {
    Path::new("/nonexistent-base")
}

fn plain(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:9000"
dangerous_plain_http = true
[store]
url = "sqlite://state/latchkey.db"
[[oidc.provider]]
issuer = "http://127.0.0.1:4000"
audiences = ["latchkey-cli"]
cli_client_id = "latchkey-cli"
dangerous_plain_http = true
{extra}
"#
    )
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn minimal_plain_loopback_config_parses_with_defaults() {
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert!(c.server.tls.is_none());
    assert_eq!(c.server.request_timeout, Duration::from_secs(30));
    assert_eq!(c.store.url, "sqlite:///nonexistent-base/state/latchkey.db");
    let p = &c.oidc.providers[0];
    assert_eq!(p.groups_claim, vec!["groups"]);
    assert_eq!(p.token, TokenKind::Id);
    assert_eq!(p.mfa_amr, vec!["mfa", "otp", "hwk"]);
    assert_eq!(c.audit.sink, AuditSinkConfig::Stdout);
    assert_eq!(c.policy.dir, Path::new("/nonexistent-base/policies"));
}

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let text = r#"
bogus = 1
[server]
listen = "not an address"
dangerous_plain_http = "yes"
colour = "blue"
[store]
url = "mysql://x"
[audit]
sink = "syslog"
[[oidc.provider]]
issuer = "http://idp.example.com"
audiences = []
groups_claim = "a..b"
attributes = ["sub"]
token = "refresh"
max_token_age = "soon"
"#;
    let err = Config::from_toml(text, base(), &no_env()).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    for expected in [
        "bogus",
        "server.listen",
        "server.dangerous_plain_http",
        "server.colour",
        "store.url",
        "audit.sink",
        "oidc.provider[0].issuer",
        "oidc.provider[0].audiences",
        "oidc.provider[0].cli_client_id",
        "oidc.provider[0].groups_claim",
        "oidc.provider[0].attributes",
        "oidc.provider[0].token",
        "oidc.provider[0].max_token_age",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let text = plain("").replace("127.0.0.1:9000", "0.0.0.0:9000");
    let err = Config::from_toml(&text, base(), &no_env()).unwrap_err();
    assert_eq!(err.issues[0].path, "server.dangerous_plain_http");
    assert!(err.issues[0].message.contains("loopback"));
}

#[test]
fn tls_files_are_required_without_plain_http() {
    let text = plain("").replacen("dangerous_plain_http = true", "", 1);
    let err = Config::from_toml(&text, base(), &no_env()).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["server.tls_cert", "server.tls_key"]);
}

#[test]
fn environment_overrides_keys_with_toml_values() {
    let env = vec![
        (
            "LATCHKEY_SERVER__LISTEN".to_owned(),
            "127.0.0.2:7000".to_owned(),
        ),
        (
            "LATCHKEY_SERVER__MAX_CONNECTIONS".to_owned(),
            "7".to_owned(),
        ),
        (
            "LATCHKEY_AWS__ENDPOINT_URL".to_owned(),
            "http://127.0.0.1:5000".to_owned(),
        ),
        ("OTHER_VAR".to_owned(), "ignored".to_owned()),
    ];
    let c = Config::from_toml(&plain(""), base(), &env).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.2:7000");
    assert_eq!(c.server.max_connections, 7);
    assert_eq!(
        c.aws.endpoint_url.map(|u| u.to_string()).as_deref(),
        Some("http://127.0.0.1:5000/")
    );
}

#[test]
fn unknown_environment_keys_are_rejected_like_file_keys() {
    let env = vec![("LATCHKEY_SERVER__LISTN".to_owned(), "x".to_owned())];
    let err = Config::from_toml(&plain(""), base(), &env).unwrap_err();
    assert_eq!(err.issues[0].path, "server.listn");
}

#[test]
fn issuer_must_be_https_or_flagged_loopback_http() {
    for (issuer, plain_http, ok) in [
        ("https://login.example.com", false, true),
        ("https://login.example.com", true, false),
        ("http://127.0.0.1:4000", true, true),
        ("http://127.9.8.7:4000", true, true),
        ("http://[::1]:4000", true, true),
        ("http://127.0.0.1:4000", false, false),
        ("http://[::1]:4000", false, false),
        ("http://localhost:4000", true, false),
        ("http://login.example.com", true, false),
        ("http://10.0.0.1", true, false),
        ("https://login.example.com/?x=1", false, false),
        ("ftp://127.0.0.1", true, false),
        ("not a url", false, false),
    ] {
        assert_eq!(
            check_issuer(issuer, plain_http).is_ok(),
            ok,
            "{issuer} dangerous_plain_http={plain_http}"
        );
    }
}

#[test]
fn issue_7_plain_http_issuer_needs_the_provider_flag_and_loopback() {
    let provider = |issuer: &str, flag: &str| {
        let text = plain("").replace(
            "issuer = \"http://127.0.0.1:4000\"\naudiences = [\"latchkey-cli\"]\n\
             cli_client_id = \"latchkey-cli\"\ndangerous_plain_http = true\n",
            &format!(
                "issuer = \"{issuer}\"\naudiences = [\"latchkey-cli\"]\n\
                 cli_client_id = \"latchkey-cli\"\n{flag}\n"
            ),
        );
        assert!(text.contains(&format!("issuer = \"{issuer}\"")), "{text}");
        text
    };
    let issues = |text: String| match Config::from_toml(&text, base(), &no_env()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .issues
            .into_iter()
            .map(|i| (i.path, i.message))
            .collect::<Vec<_>>(),
    };
    // Without the flag: refused, and the message says what to set.
    let got = issues(provider("http://127.0.0.1:4000", ""));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "oidc.provider[0].issuer");
    assert!(got[0].1.contains("dangerous_plain_http = true"), "{got:?}");
    // With the flag, but not a loopback address (a name is not one).
    for issuer in ["http://idp.example.com", "http://localhost:4000"] {
        let got = issues(provider(issuer, "dangerous_plain_http = true"));
        assert_eq!(got.len(), 1, "{issuer}: {got:?}");
        assert_eq!(got[0].0, "oidc.provider[0].issuer");
        assert!(got[0].1.contains("loopback"), "{got:?}");
    }
    // The flag on an https issuer is a mistake worth reporting.
    let got = issues(provider(
        "https://idp.example.com",
        "dangerous_plain_http = true",
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "oidc.provider[0].dangerous_plain_http");
    // Flag and loopback: accepted.
    assert!(issues(provider("http://[::1]:4000", "dangerous_plain_http = true")).is_empty());
}

#[test]
fn issue_7_a_missing_tls_file_does_not_hide_the_sections_other_errors() {
    let text = plain("").replace(
        "dangerous_plain_http = true\n[store]",
        "tls_cert = \"missing-cert.pem\"\ntls_key = \"missing-key.pem\"\n\
             colour = \"blue\"\nmax_connections = 0\n[store]",
    );
    let err = Config::from_toml(&text, base(), &no_env()).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    for expected in [
        "server.tls_cert",
        "server.tls_key",
        "server.colour",
        "server.max_connections",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    assert!(err.issues[0].message.contains("missing-cert.pem"), "{err}");
}

#[test]
fn issue_7_missing_key_and_ca_files_do_not_hide_other_errors() {
    let extra = "ca_file = \"missing-ca.pem\"\ntoken = \"refresh\"\nshade = 1\n\
                 [audit]\nhmac_key_file = \"missing.key\"\nsink = \"syslog\"\nhue = 2\n";
    let err = Config::from_toml(&plain(extra), base(), &no_env()).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    for expected in [
        "oidc.provider[0].ca_file",
        "oidc.provider[0].token",
        "oidc.provider[0].shade",
        "audit.hmac_key_file",
        "audit.sink",
        "audit.hue",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn test_credentials_need_a_loopback_endpoint() {
    let ok = "[aws]\nendpoint_url = \"http://127.0.0.1:5000\"\ndangerous_test_credentials = true\n";
    let c = Config::from_toml(&plain(ok), base(), &no_env()).unwrap();
    assert!(c.aws.dangerous_test_credentials);
    for bad in [
        "[aws]\ndangerous_test_credentials = true\n",
        "[aws]\nendpoint_url = \"https://sts.amazonaws.com\"\ndangerous_test_credentials = true\n",
    ] {
        let err = Config::from_toml(&plain(bad), base(), &no_env()).unwrap_err();
        assert_eq!(
            err.issues[0].path, "aws.dangerous_test_credentials",
            "{bad}"
        );
    }
}

#[test]
fn duplicate_issuers_are_refused() {
    let extra = r#"
[[oidc.provider]]
issuer = "http://127.0.0.1:4000"
audiences = ["x"]
cli_client_id = "x"
dangerous_plain_http = true
"#;
    let err = Config::from_toml(&plain(extra), base(), &no_env()).unwrap_err();
    assert_eq!(err.issues[0].path, "oidc.provider[1].issuer");
}

#[test]
fn store_url_password_is_redacted_in_debug() {
    let c = StoreConfig {
        url: "postgres://latchkey:hunter2@db:5432/latchkey".into(),
    };
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("***"));
}

#[test]
fn the_example_configuration_only_fails_on_missing_files() {
    // The example names files under /etc that do not exist here; every other key must parse.
    let err = Config::from_toml(EXAMPLE, base(), &no_env()).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["server.tls_cert", "server.tls_key"]);
}

/// `plain("")` with `lines` added to its `[server]` table.
fn plain_server(lines: &str) -> String {
    plain("").replacen("[server]\n", &format!("[server]\n{lines}\n"), 1)
}

#[test]
fn connection_limits_default_and_are_validated() {
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_connections, 1024);
    assert_eq!(c.server.max_connections_per_ip, 64);

    // The per-address default never exceeds a smaller global cap.
    let c = Config::from_toml(&plain_server("max_connections = 8"), base(), &no_env()).unwrap();
    assert_eq!(c.server.max_connections_per_ip, 8);

    let text = plain_server(
        "header_read_timeout = 0\nidle_timeout = \"0s\"\nmax_connections = 4\nmax_connections_per_ip = 5",
    );
    let err = Config::from_toml(&text, base(), &no_env()).unwrap_err();
    let mut paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            "server.header_read_timeout",
            "server.idle_timeout",
            "server.max_connections_per_ip"
        ],
        "{err}"
    );
    let err = Config::from_toml(
        &plain_server("max_connections_per_ip = 0"),
        base(),
        &no_env(),
    )
    .unwrap_err();
    assert_eq!(err.issues[0].path, "server.max_connections_per_ip");
}

#[test]
fn the_example_server_section_documents_the_defaults() {
    // Uncomment every `# key = value` line of the example's [server] table: the result must be
    // the configuration the defaults give.
    let section = EXAMPLE
        .split("\n[")
        .find(|s| s.starts_with("server]"))
        .unwrap();
    let lines: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                k != "dangerous_plain_http" && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("idle_timeout")),
        "{lines:?}"
    );
    let documented =
        Config::from_toml(&plain_server(&lines.join("\n")), base(), &no_env()).unwrap();
    let defaults = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert_eq!(
        format!("{:?}", documented.server),
        format!("{:?}", defaults.server)
    );
}

#[test]
fn identity_keys_default_and_parse() {
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    let p = &c.oidc.providers[0];
    assert_eq!(p.email_verified, EmailVerified::Require);
    assert_eq!(p.session_name_claim, "preferred_username");
    assert_eq!(p.cli_scopes, None);
    let extra = r#"
email_verified = "assume"
session_name_claim = "upn"
cli_scopes = ["email", "profile", "department"]
"#;
    let c = Config::from_toml(&plain(extra), base(), &no_env()).unwrap();
    let p = &c.oidc.providers[0];
    assert_eq!(p.email_verified, EmailVerified::Assume);
    assert_eq!(p.session_name_claim, "upn");
    assert_eq!(
        p.cli_scopes.as_deref(),
        Some(
            &[
                "email".to_owned(),
                "profile".to_owned(),
                "department".to_owned()
            ][..]
        )
    );
}

#[test]
fn bad_identity_keys_are_all_reported() {
    let extra = r#"
email_verified = "trust"
session_name_claim = ""
cli_scopes = ["email", "two words", "quo\"te"]
"#;
    let err = Config::from_toml(&plain(extra), base(), &no_env()).unwrap_err();
    let issues: Vec<String> = err
        .issues
        .iter()
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect();
    assert_eq!(issues.len(), 4, "{issues:#?}");
    assert!(issues[0].starts_with("oidc.provider[0].email_verified: `trust`"));
    assert!(issues[1].starts_with("oidc.provider[0].session_name_claim:"));
    assert!(issues[2].starts_with("oidc.provider[0].cli_scopes: `two words`"));
    assert!(issues[3].starts_with("oidc.provider[0].cli_scopes: `quo\"te`"));
}

#[test]
fn issue_10_metrics_listen_is_loopback_unless_remote_is_allowed() {
    let with = |keys: &str| plain("").replace("[store]", &format!("{keys}\n[store]"));
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert_eq!(c.server.metrics_listen, None);
    let c = Config::from_toml(&with("metrics_listen = \"[::1]:9464\""), base(), &no_env()).unwrap();
    assert_eq!(c.server.metrics_listen, Some("[::1]:9464".parse().unwrap()));
    let remote = "metrics_listen = \"0.0.0.0:9464\"\nmetrics_allow_remote = true";
    let c = Config::from_toml(&with(remote), base(), &no_env()).unwrap();
    assert_eq!(
        c.server.metrics_listen,
        Some("0.0.0.0:9464".parse().unwrap())
    );

    // Every error at once, with the other sections' errors.
    let bad = with("metrics_listen = \"0.0.0.0:9464\"\nidle_timeout = \"0s\"")
        .replace("audiences = [\"latchkey-cli\"]", "audiences = []");
    let err = Config::from_toml(&bad, base(), &no_env()).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"server.metrics_listen"), "{paths:?}");
    assert!(paths.contains(&"server.idle_timeout"), "{paths:?}");
    assert!(paths.contains(&"oidc.provider[0].audiences"), "{paths:?}");
    let msg = &err
        .issues
        .iter()
        .find(|i| i.path == "server.metrics_listen")
        .unwrap()
        .message;
    assert!(msg.contains("metrics_allow_remote = true"), "{msg}");

    for (keys, path) in [
        ("metrics_listen = \"nope\"", "server.metrics_listen"),
        ("metrics_allow_remote = true", "server.metrics_allow_remote"),
    ] {
        let err = Config::from_toml(&with(keys), base(), &no_env()).unwrap_err();
        assert_eq!(err.issues[0].path, path, "{keys}");
    }
}

#[test]
fn notifications_are_off_by_default_with_sensible_delivery_settings() {
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert!(c.notify.webhooks.is_empty());
    let d = &c.notify.delivery;
    assert_eq!(d.max_attempts, 20);
    assert_eq!(d.backoff_initial, Duration::from_secs(2));
    assert_eq!(d.backoff_max, Duration::from_secs(900));
    assert_eq!(d.timeout, Duration::from_secs(10));
    assert_eq!(d.connect_timeout, Duration::from_secs(5));
    assert_eq!(d.poll_interval, Duration::from_secs(2));
}

#[test]
fn webhooks_and_delivery_settings_parse() {
    let extra = r#"
[notify]
max_attempts = 5
backoff_initial = "1s"
backoff_max = "1m"
timeout = "3s"
connect_timeout = 1
poll_interval = "1s"
[[notify.webhook]]
url = "https://hooks.slack.com/services/T0/B0/s3cr3t"
[[notify.webhook]]
url = "http://127.0.0.1:9000/hook"
format = "json"
[[notify.webhook]]
url = "http://[::1]:9000/"
format = "slack"
"#;
    let c = Config::from_toml(&plain(extra), base(), &no_env()).unwrap();
    let hooks = &c.notify.webhooks;
    assert_eq!(hooks.len(), 3);
    assert_eq!(
        hooks[0].url.as_str(),
        "https://hooks.slack.com/services/T0/B0/s3cr3t"
    );
    assert_eq!(hooks[0].format, WebhookFormat::Slack);
    assert_eq!(hooks[1].format, WebhookFormat::Json);
    assert_eq!(hooks[2].format, WebhookFormat::Slack);
    let d = &c.notify.delivery;
    assert_eq!(d.max_attempts, 5);
    assert_eq!(d.backoff_initial, Duration::from_secs(1));
    assert_eq!(d.backoff_max, Duration::from_secs(60));
    assert_eq!(d.timeout, Duration::from_secs(3));
    assert_eq!(d.connect_timeout, Duration::from_secs(1));
    assert_eq!(d.poll_interval, Duration::from_secs(1));
    // The secret path never shows in `Debug`.
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("https://hooks.slack.com/..."), "{shown}");
}

#[test]
fn webhook_urls_must_be_https_or_loopback_http_and_never_echo_their_secret() {
    let cases = [
        ("http://hooks.example.com/s3cr3t", "plain http"),
        (
            "http://localhost:9000/s3cr3t",
            "not a name such as `localhost`",
        ),
        ("http://10.0.0.1/s3cr3t", "plain http"),
        ("https://user:s3cr3t@hooks.example.com/x", "credentials"),
        ("https://s3cr3t@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#s3cr3t", "fragment"),
        ("ftp://hooks.example.com/s3cr3t", "must use https"),
        ("file:///etc/s3cr3t", "must use https"),
        ("not a url s3cr3t", "is not a URL"),
    ];
    for (url, expected) in cases {
        let extra = format!("[[notify.webhook]]\nurl = \"{url}\"\n");
        let err = Config::from_toml(&plain(&extra), base(), &no_env()).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{url}: {err}");
        let issue = &err.issues[0];
        assert_eq!(issue.path, "notify.webhook[0].url", "{url}");
        assert!(issue.message.contains(expected), "{url}: {}", issue.message);
        assert!(
            !issue.message.contains("s3cr3t"),
            "{url}: {}",
            issue.message
        );
    }
    for url in [
        "https://hooks.example.com/s",
        "http://127.0.0.2:1/s",
        "http://[::1]/s",
    ] {
        let extra = format!("[[notify.webhook]]\nurl = \"{url}\"\n");
        assert!(
            Config::from_toml(&plain(&extra), base(), &no_env()).is_ok(),
            "{url}"
        );
    }
}

#[test]
fn bad_notify_keys_are_all_reported_at_once() {
    let extra = r#"
[notify]
max_attempts = 0
backoff_initial = "1m"
backoff_max = "10s"
timeout = "0s"
connect_timeout = "soon"
poll_interval = 0
colour = "red"
[[notify.webhook]]
format = "teams"
[[notify.webhook]]
url = "https://hooks.example.com/s3cr3t"
[[notify.webhook]]
url = "https://hooks.example.com/s3cr3t"
"#;
    let err = Config::from_toml(&plain(extra), base(), &no_env()).unwrap_err();
    let mut paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            "notify.backoff_max",
            "notify.colour",
            "notify.connect_timeout",
            "notify.max_attempts",
            "notify.poll_interval",
            "notify.timeout",
            "notify.webhook[0].format",
            "notify.webhook[0].url",
            "notify.webhook[2].url",
        ],
        "{err}"
    );
    let twice = err
        .issues
        .iter()
        .find(|i| i.path == "notify.webhook[2].url")
        .unwrap();
    assert_eq!(
        twice.message,
        "`https://hooks.example.com/...` is configured twice"
    );
}

#[test]
fn webhooks_can_come_from_the_environment() {
    // A secret URL can stay out of the file: LATCHKEY_NOTIFY__WEBHOOK is read as TOML.
    let env = vec![
        (
            "LATCHKEY_NOTIFY__WEBHOOK".to_owned(),
            r#"[{ url = "https://hooks.example.com/s3cr3t", format = "json" }]"#.to_owned(),
        ),
        ("LATCHKEY_NOTIFY__MAX_ATTEMPTS".to_owned(), "3".to_owned()),
    ];
    let c = Config::from_toml(&plain(""), base(), &env).unwrap();
    assert_eq!(c.notify.webhooks.len(), 1);
    assert_eq!(c.notify.webhooks[0].format, WebhookFormat::Json);
    assert_eq!(c.notify.delivery.max_attempts, 3);
}

#[test]
fn the_example_notify_section_documents_the_defaults() {
    let section = EXAMPLE
        .split("\n[")
        .find(|s| s.starts_with("notify]"))
        .unwrap();
    let lines: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                // `url` and `format` belong to the commented `[[notify.webhook]]` example.
                !matches!(k, "url" | "format")
                    && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .collect();
    for key in [
        "max_attempts",
        "backoff_initial",
        "backoff_max",
        "timeout",
        "connect_timeout",
        "poll_interval",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{key} = "))),
            "{key}: {lines:?}"
        );
    }
    let documented = Config::from_toml(
        &plain(&format!("[notify]\n{}", lines.join("\n"))),
        base(),
        &no_env(),
    )
    .unwrap();
    let defaults = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert_eq!(documented.notify.delivery, defaults.notify.delivery);
    // The webhook table's keys are documented too.
    assert!(EXAMPLE.contains("# [[notify.webhook]]"));
    assert!(EXAMPLE.contains("# url = \"https://hooks.slack.com/services/"));
    assert!(EXAMPLE.contains("# format = \"slack\""));
}

#[test]
fn the_revocation_sweep_interval_defaults_and_is_bounded() {
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert_eq!(c.revocation.sweep_interval, Duration::from_secs(30));
    let with = |value: &str| format!("{}\n[revocation]\nsweep_interval = {value}\n", plain(""));
    let c = Config::from_toml(&with("\"1s\""), base(), &no_env()).unwrap();
    assert_eq!(c.revocation.sweep_interval, Duration::from_secs(1));
    for bad in ["\"0s\"", "\"2h\"", "\"soon\""] {
        let err = Config::from_toml(&with(bad), base(), &no_env()).unwrap_err();
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["revocation.sweep_interval"], "{bad}: {err}");
    }
    let env = vec![(
        "LATCHKEY_REVOCATION__SWEEP_INTERVAL".to_owned(),
        "5m".to_owned(),
    )];
    let c = Config::from_toml(&plain(""), base(), &env).unwrap();
    assert_eq!(c.revocation.sweep_interval, Duration::from_secs(300));
}

#[test]
fn breakglass_keys_default_and_are_validated() {
    let c = Config::from_toml(&plain(""), base(), &no_env()).unwrap();
    assert_eq!(c.breakglass, BreakglassConfig::default());
    assert_eq!(c.breakglass.approver_max_auth_age, Duration::from_secs(900));
    assert!(c.breakglass.approver_requires_mfa);
    assert_eq!(c.breakglass.sweep_interval, Duration::from_secs(30));
    assert!(c.oidc.providers[0].device_flow_acr.is_empty());

    let c = Config::from_toml(
        &plain(
            "device_flow_acr = [\"urn:idp:loa:device\"]\ndevice_flow_amr = [\"device\"]\n\
             [breakglass]\napprover_max_auth_age = \"5m\"\napprover_requires_mfa = false\n\
             sweep_interval = \"1s\"\n",
        ),
        base(),
        &no_env(),
    )
    .unwrap();
    assert_eq!(c.breakglass.approver_max_auth_age, Duration::from_secs(300));
    assert!(!c.breakglass.approver_requires_mfa);
    assert_eq!(c.breakglass.sweep_interval, Duration::from_secs(1));
    assert_eq!(c.oidc.providers[0].device_flow_acr, ["urn:idp:loa:device"]);
    assert_eq!(c.oidc.providers[0].device_flow_amr, ["device"]);

    let err = Config::from_toml(
        &plain(
            "[breakglass]\napprover_max_auth_age = \"0s\"\nsweep_interval = \"2h\"\n\
             approver_requires_mfa = \"no\"\nbogus = 1\n",
        ),
        base(),
        &no_env(),
    )
    .unwrap_err();
    let issues: Vec<String> = err
        .issues
        .iter()
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect();
    assert_eq!(issues.len(), 4, "{issues:#?}");
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("breakglass.approver_requires_mfa"))
    );
    assert!(issues.contains(
        &"breakglass.approver_max_auth_age: must be longer than 0s and at most 24h".to_owned()
    ));
    assert!(
        issues.contains(
            &"breakglass.sweep_interval: must be longer than 0s and at most 1h".to_owned()
        )
    );
    assert!(issues.contains(&"breakglass.bogus: unknown key".to_owned()));
}
