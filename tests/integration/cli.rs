//! The engineer's CLI, run as the real `latchkey` binary with its home, config, cache and AWS
//! config in a temporary directory: logging in through the real IdP (both flows, the test plays
//! the browser), whoami, silent refresh, private files, and the exit codes scripts rely on.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use url::Url;

use crate::harness::broker::{BrokerOptions, TestBroker};
use crate::harness::cli::{CliHome, stderr, stdout, wait};
use crate::harness::idp::{self, Idp};
use crate::harness::sandbox::DevSandbox;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// A broker trusting the shared IdP.
pub async fn broker(idp: &Idp) -> TestBroker {
    TestBroker::start(BrokerOptions::issuer(idp.issuer())).await
}

#[tokio::test]
async fn code_flow_login_stores_private_tokens_and_whoami_works() {
    let idp = idp::shared().await;
    let broker = broker(idp).await;
    let home = CliHome::new();

    let login = home.login_code_flow(&broker, "alice").await;
    assert!(login.status.success(), "login failed: {}", stderr(&login));
    let url = Url::parse(stdout(&login).lines().next().unwrap()).unwrap();
    let q = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(q("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(q("prompt").as_deref(), Some("consent"));
    assert!(q("state").is_some() && q("nonce").is_some());
    assert!(q("scope").unwrap().contains("offline_access"));

    assert_eq!(mode(&home.config_dir()), 0o700);
    assert_eq!(mode(&home.config_dir().join("login.json")), 0o600);
    let stored = home.login_json();
    assert_eq!(stored["subject"], "alice");
    assert_eq!(stored["issuer"], idp.issuer().as_str());
    assert!(stored["refresh_token"].is_string());

    let whoami = home.run(&["whoami"]).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let text = stdout(&whoami);
    assert!(text.contains(&format!("{}#alice", idp.issuer())), "{text}");
    assert!(text.contains("engineering"), "{text}");
    let secret = stored["id_token"].as_str().unwrap();
    assert!(!text.contains(secret) && !stderr(&whoami).contains(secret));

    let logout = home.run(&["logout"]).await;
    assert!(logout.status.success());
    assert!(!home.config_dir().join("login.json").exists());
    let after = home.run(&["whoami"]).await;
    assert_eq!(after.status.code(), Some(4));
}

#[tokio::test]
async fn device_flow_login_then_whoami() {
    let idp = idp::shared().await;
    let broker = broker(idp).await;
    let home = CliHome::new();
    let login = home
        .login_device_flow(&broker.url, &broker.dir.path().join("ca.pem"), "carol")
        .await;
    assert!(login.status.success(), "login failed: {}", stderr(&login));
    assert_eq!(home.login_json()["subject"], "carol");
    let whoami = home.run(&["whoami"]).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert!(stdout(&whoami).contains("#carol"), "{}", stdout(&whoami));
}

#[tokio::test]
async fn an_expired_id_token_is_refreshed_silently_and_the_refresh_token_rotates() {
    let idp = idp::shared().await;
    let broker = broker(idp).await;
    let home = CliHome::new();
    assert!(home.login_code_flow(&broker, "bob").await.status.success());
    let mut stored = home.login_json();
    let old_refresh = stored["refresh_token"].clone();
    // The stored token is (as far as the CLI knows) already expired.
    stored["id_token_expires_at"] = 1_000_000_000.into();
    home.write_login_json(&stored);

    let whoami = home.run(&["whoami"]).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert!(stdout(&whoami).contains("#bob"));
    let refreshed = home.login_json();
    assert_ne!(
        refreshed["refresh_token"], old_refresh,
        "the rotated token is stored"
    );
    assert!(refreshed["id_token_expires_at"].as_i64().unwrap() > 1_000_000_000);
    assert_eq!(mode(&home.config_dir().join("login.json")), 0o600);

    // A refresh token the IdP no longer accepts: log in again, exit 4, one line.
    let mut stale = refreshed.clone();
    stale["id_token_expires_at"] = 1_000_000_000.into();
    stale["refresh_token"] = old_refresh;
    home.write_login_json(&stale);
    let out = home.run(&["whoami"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "latchkey: your login has expired (the identity provider refused the refresh token); run `latchkey login`\n"
    );
}

#[tokio::test]
async fn not_logged_in_exits_4_with_one_line() {
    let home = CliHome::new();
    for args in [
        &["credentials", "--role", "readonly"][..],
        &["whoami"],
        &["exec", "--role", "readonly", "--", "true"],
    ] {
        let out = home.run(args).await;
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        assert_eq!(
            stderr(&out),
            "latchkey: not logged in; run `latchkey login`\n"
        );
        assert!(out.stdout.is_empty());
    }
    let usage = home.run(&["credentials"]).await;
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn symlinked_or_open_token_and_cache_paths_are_refused() {
    let idp = idp::shared().await;
    let broker = broker(idp).await;
    let home = CliHome::new();
    assert!(
        home.login_code_flow(&broker, "alice")
            .await
            .status
            .success()
    );
    let login = home.config_dir().join("login.json");
    let elsewhere = home.path().join("elsewhere.json");
    std::fs::rename(&login, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &login).unwrap();
    let out = home.run(&["whoami"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&login).unwrap();
    std::fs::rename(&elsewhere, &login).unwrap();

    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = home.run(&["whoami"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("group or others"), "{}", stderr(&out));
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A cache directory planted as a symlink is never read or written through.
    let planted = home.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(home.path().join("cache")).unwrap();
    std::os::unix::fs::symlink(&planted, home.cache_dir()).unwrap();
    let out = home.run(&["credentials", "--role", "readonly"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_and_an_unreachable_server_are_named() {
    let idp = idp::shared().await;
    let broker = broker(idp).await;
    let home = CliHome::new();
    assert!(
        home.login_code_flow(&broker, "alice")
            .await
            .status
            .success()
    );

    let (other_ca, _, _) = latchkey::dev::make_tls().unwrap();
    let other = home.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let out = home
        .run(&["whoami", "--ca-cert", other.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "latchkey: the TLS certificate of `{}` is not trusted; pass `--ca-cert FILE` or set `LATCHKEY_CA_CERT` to the CA that signed it\n",
            broker.url
        )
    );

    let ca = home.path().join("ca.pem");
    std::fs::copy(broker.dir.path().join("ca.pem"), &ca).unwrap();
    broker.stop().await;
    let out = home
        .run(&["whoami", "--ca-cert", ca.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("latchkey: cannot reach the latchkey server at `https://127.0.0.1:")
            && err.lines().count() == 1,
        "{err}"
    );
}

#[tokio::test]
async fn the_sandbox_answers_a_device_login_for_the_chosen_user() {
    let sandbox = DevSandbox::start("bob").await;
    let home = CliHome::new();
    // "-": nobody approves anything; the development issuer already has.
    let login = home.login_device_flow(&sandbox.url, &sandbox.ca, "-").await;
    assert!(login.status.success(), "{}", stderr(&login));
    let whoami = home.run(&["whoami"]).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert!(stdout(&whoami).contains("#bob"), "{}", stdout(&whoami));
    assert!(stdout(&whoami).contains("mfa:        yes"));

    // The refresh grant works and rotates.
    let mut stored = home.login_json();
    let old_refresh = stored["refresh_token"].clone();
    stored["id_token_expires_at"] = 1_000_000_000.into();
    home.write_login_json(&stored);
    let whoami = home.run(&["whoami"]).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert_ne!(home.login_json()["refresh_token"], old_refresh);
}

// === credentials against a broker that assumes roles in moto ===

/// A broker trusting the shared IdP, assuming roles in the shared moto.
pub async fn aws_broker(idp: &Idp) -> TestBroker {
    let moto = crate::harness::moto::shared().await;
    TestBroker::start(BrokerOptions::issuer(idp.issuer()).with_aws(moto.endpoint())).await
}

/// How many grants the broker has made (its audit stream's issued-credentials records).
fn grants(broker: &TestBroker) -> usize {
    broker
        .audit_lines()
        .lines()
        .filter(|l| l.contains("\"credentials.issued\""))
        .count()
}

async fn logged_in(broker: &TestBroker, user: &str) -> CliHome {
    let home = CliHome::new();
    let login = home.login_code_flow(broker, user).await;
    assert!(login.status.success(), "login failed: {}", stderr(&login));
    home
}

#[tokio::test]
async fn credentials_prints_exactly_the_process_json_and_a_second_call_uses_the_cache() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = logged_in(&broker, "alice").await;

    let first = home.run(&["credentials", "--role", "readonly"]).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(first.stderr.is_empty(), "{}", stderr(&first));
    let text = stdout(&first);
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "Version",
            "AccessKeyId",
            "SecretAccessKey",
            "SessionToken",
            "Expiration"
        ]
    );
    assert_eq!(json["Version"], 1);
    assert!(chrono::DateTime::parse_from_rfc3339(json["Expiration"].as_str().unwrap()).is_ok());
    assert_eq!(grants(&broker), 1);

    let second = home.run(&["credentials", "--role", "readonly"]).await;
    assert!(second.status.success());
    assert_eq!(stdout(&second), text, "served from the cache");
    assert_eq!(grants(&broker), 1, "no second request to the server");
    // What `latchkey configure` writes into the AWS profiles: the same command, the same cache.
    let own = home.run_credentials_binary(&["--role", "readonly"]).await;
    assert!(own.status.success(), "{}", stderr(&own));
    assert!(own.stderr.is_empty(), "{}", stderr(&own));
    assert_eq!(stdout(&own), text, "served from the same cache");
    assert_eq!(grants(&broker), 1, "no request to the server");

    assert_eq!(mode(&home.cache_dir()), 0o700);
    let entries: Vec<PathBuf> = std::fs::read_dir(home.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!entries.is_empty());
    for e in &entries {
        assert_eq!(mode(e), 0o600, "{}", e.display());
    }
    let secret = json["SecretAccessKey"].as_str().unwrap();
    assert!(
        !broker.audit_lines().contains(secret),
        "no secret in the audit stream"
    );
}

#[tokio::test]
async fn twenty_parallel_credentials_calls_make_one_grant() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = logged_in(&broker, "alice").await;
    let children: Vec<_> = (0..20)
        .map(|_| {
            home.cmd(&["credentials", "--role", "readonly"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs = Vec::new();
    for child in children {
        outputs.push(wait(child).await);
    }
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
        assert_eq!(o.stdout, outputs[0].stdout);
    }
    assert_eq!(grants(&broker), 1);
}

#[tokio::test]
async fn exec_sets_the_environment_and_passes_the_exit_code() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = logged_in(&broker, "alice").await;
    let script = r#"test -n "$AWS_SECRET_ACCESS_KEY" && test -n "$AWS_SESSION_TOKEN" \
        && test -n "$AWS_CREDENTIAL_EXPIRATION" && test -z "$AWS_PROFILE" \
        && echo "$AWS_ACCESS_KEY_ID"; exit 7"#;
    let out = home
        .cmd(&["exec", "--role", "readonly", "--", "sh", "-c", script])
        .env("AWS_PROFILE", "something-else")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let creds: Value = serde_json::from_slice(
        &home
            .run(&["credentials", "--role", "readonly"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(stdout(&out).trim(), creds["AccessKeyId"].as_str().unwrap());

    let env = home.run(&["env", "--role", "readonly"]).await;
    assert!(env.status.success());
    let text = stdout(&env);
    assert!(text.contains(&format!(
        "export AWS_ACCESS_KEY_ID='{}'\n",
        creds["AccessKeyId"].as_str().unwrap()
    )));
    assert!(text.ends_with("unset AWS_PROFILE\n"), "{text}");
    let fish = home
        .run(&["env", "--role", "readonly", "--shell", "fish"])
        .await;
    assert!(stdout(&fish).starts_with("set -gx AWS_ACCESS_KEY_ID '"));
}

#[tokio::test]
async fn issue_7_exec_exits_127_for_a_missing_program_and_126_for_one_it_cannot_run() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = logged_in(&broker, "alice").await;

    let missing = "latchkey-test-no-such-program";
    let out = home
        .run(&["exec", "--role", "readonly", "--", missing, "arg"])
        .await;
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!("latchkey: cannot run `{missing}`: ")),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    let script = home.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = home.path().to_str().unwrap();
    for program in [script.to_str().unwrap(), dir] {
        let out = home
            .run(&["exec", "--role", "readonly", "--", program])
            .await;
        assert_eq!(out.status.code(), Some(126), "{program}: {}", stderr(&out));
        assert!(stderr(&out).contains("cannot run"), "{}", stderr(&out));
    }
    // One grant, served from the cache afterwards: the exit codes are the command's, not
    // the broker's.
    assert_eq!(grants(&broker), 1);
}

#[tokio::test]
async fn configure_twice_changes_nothing_and_the_aws_cli_uses_the_profile() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = logged_in(&broker, "alice").await;
    let original = "# my settings\n[default]\nregion = eu-west-1\n\n[profile other]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n";
    std::fs::write(home.aws_config(), original).unwrap();

    let first = home.run(&["configure", "--region", "us-east-1"]).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let once = std::fs::read_to_string(home.aws_config()).unwrap();
    assert!(once.starts_with(original), "{once}");
    // `latchkey-credentials` is installed next to `latchkey`, so the profiles run it.
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_latchkey-credentials")).unwrap();
    assert!(
        once.contains(&format!(
            "[profile latchkey-readonly]\nregion = us-east-1\ncredential_process = {} --role readonly\n",
            exe.display()
        )),
        "{once}"
    );
    assert!(
        !once.contains("latchkey-prod-admin"),
        "alice may not assume prod-admin"
    );
    let second = home.run(&["configure", "--region", "us-east-1"]).await;
    assert!(second.status.success());
    assert_eq!(std::fs::read_to_string(home.aws_config()).unwrap(), once);

    let moto = crate::harness::moto::shared().await;
    // The AWS CLI runs `latchkey-credentials`, which (nothing cached) calls the broker in this test's runtime:
    // wait for it without blocking that runtime.
    let mut aws = moto.aws_cli();
    aws.args([
        "sts",
        "get-caller-identity",
        "--profile",
        "latchkey-readonly",
        "--output",
        "json",
    ])
    .envs(home.env());
    let out = tokio::process::Command::from(aws).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arn = id["Arn"].as_str().unwrap();
    assert!(arn.contains(":assumed-role/ReadOnly/"), "{arn}");
}

#[tokio::test]
async fn a_denied_role_exits_3_with_the_policy_reason() {
    let idp = idp::shared().await;
    let broker = aws_broker(idp).await;
    let home = logged_in(&broker, "carol").await;
    let out = home.run(&["credentials", "--role", "readonly"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.starts_with("latchkey: access to `readonly` denied: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(grants(&broker), 0);

    let roles = home.run(&["roles"]).await;
    assert!(roles.status.success(), "{}", stderr(&roles));
    let table = stdout(&roles);
    assert!(table.starts_with("ROLE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("readonly") && l.contains("denied")),
        "{table}"
    );
}
