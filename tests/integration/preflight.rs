//! `latchkey preflight` (the real binary) against moto's IAM and STS: one correct role and one
//! broken role per check, then the target-role CloudFormation template deployed into moto's
//! CloudFormation and checked.
//!
//! Each test starts its own moto, so the roles and stacks of one test never meet another's.
//! moto signs nothing and checks no trust policy; its `GetCallerIdentity` names every caller
//! `arn:aws:sts::123456789012:user/moto`, so the broker's identity in these trust policies is
//! that user, `arn:aws:iam::123456789012:user/moto`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::broker::{BrokerOptions, write_config};
use crate::harness::moto::{ACCOUNT_ID, Moto};
use crate::harness::sandbox::{latchkey, output_within};

/// What moto's `GetCallerIdentity` says the broker is, as a trust policy names it.
fn broker_principal() -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:user/moto")
}

const RUN_DEADLINE: Duration = Duration::from_secs(60);
const STACK_DEADLINE: Duration = Duration::from_secs(60);

fn trust(principal: &str, actions: &[&str], external_id: Option<&str>) -> String {
    let condition = external_id
        .map(|id| format!(r#","Condition":{{"StringEquals":{{"sts:ExternalId":"{id}"}}}}"#))
        .unwrap_or_default();
    let actions = actions
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{principal}"}},"Action":[{actions}]{condition}}}]}}"#
    )
}

const ALL: &[&str] = &["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"];

fn aws(moto: &Moto, args: &[&str]) -> String {
    let out = moto
        .aws_cli()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .args(args)
        .output()
        .expect("run the aws cli");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create_role(moto: &Moto, name: &str, document: &str, max_session: u32) {
    aws(
        moto,
        &[
            "iam",
            "create-role",
            "--path",
            "/latchkey/",
            "--role-name",
            name,
            "--assume-role-policy-document",
            document,
            "--max-session-duration",
            &max_session.to_string(),
        ],
    );
}

/// A broker configuration whose policy directory holds `catalog` and the shipped schema.
fn config(dir: &Path, moto: &Moto, catalog: &str) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("catalog.toml"), catalog).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/latchkey.cedarschema"),
        policies.join("latchkey.cedarschema"),
    )
    .unwrap();
    let mut opts = BrokerOptions::issuer("https://login.example.com").with_aws(moto.endpoint());
    opts.policy_dir = policies;
    write_config(dir, &opts, "127.0.0.1:8443")
}

fn role(name: &str, arn_name: &str, max_duration: &str, extra: &str) -> String {
    format!(
        "[[role]]\nname = \"{name}\"\narn = \"arn:aws:iam::{ACCOUNT_ID}:role/latchkey/{arn_name}\"\n\
         max_duration = \"{max_duration}\"\nallow_groups = [\"engineering\"]\n{extra}\n"
    )
}

async fn preflight(config: &Path) -> Output {
    let mut cmd = latchkey(&["preflight", "--config"]);
    cmd.arg(config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("LATCHKEY_CONFIG");
    output_within(cmd, RUN_DEADLINE).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The table row for `role` with `status`, whose text contains `what`.
fn assert_row(table: &str, role: &str, status: &str, what: &str) {
    assert!(
        table.lines().any(|l| {
            let mut cols = l.split_whitespace();
            cols.next() == Some(role) && cols.next() == Some(status) && l.contains(what)
        }),
        "no `{role} {status} …{what}…` row in:\n{table}"
    );
}

#[tokio::test]
async fn preflight_names_each_broken_role_and_passes_a_correct_one() {
    let moto = Moto::start().await;
    let broker = broker_principal();
    let other = format!("arn:aws:iam::{ACCOUNT_ID}:role/SomeoneElse");
    create_role(&moto, "Good", &trust(&broker, ALL, None), 3600);
    create_role(
        &moto,
        "NoTag",
        &trust(&broker, &["sts:AssumeRole", "sts:SetSourceIdentity"], None),
        3600,
    );
    create_role(
        &moto,
        "NoSourceIdentity",
        &trust(&broker, &["sts:AssumeRole", "sts:TagSession"], None),
        3600,
    );
    create_role(&moto, "WrongPrincipal", &trust(&other, ALL, None), 3600);
    create_role(&moto, "Short", &trust(&broker, ALL, None), 3600);
    create_role(
        &moto,
        "ExternalId",
        &trust(&broker, ALL, Some("expected-id")),
        3600,
    );

    let dir = tempfile::tempdir().unwrap();
    let catalog = [
        role("good", "Good", "1h", ""),
        role("no-tag", "NoTag", "1h", ""),
        role("no-source-identity", "NoSourceIdentity", "1h", ""),
        role("wrong-principal", "WrongPrincipal", "1h", ""),
        role("short", "Short", "2h", ""),
        role(
            "external-id",
            "ExternalId",
            "1h",
            "external_id = \"other-id\"",
        ),
        role("missing", "Missing", "1h", ""),
    ]
    .concat();
    let out = preflight(&config(dir.path(), &moto, &catalog)).await;
    let table = stdout(&out);
    println!("{table}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.starts_with("broker identity: arn:aws:sts::123456789012:user/moto"),
        "{table}"
    );
    assert_row(&table, "good", "ok", "ready for the broker");
    assert_row(
        &table,
        "no-tag",
        "problem",
        "does not allow `sts:TagSession`",
    );
    assert_row(
        &table,
        "no-source-identity",
        "problem",
        "does not allow `sts:SetSourceIdentity`",
    );
    assert_row(
        &table,
        "wrong-principal",
        "problem",
        &format!("trusts `{other}`, not the broker's identity"),
    );
    assert_row(
        &table,
        "short",
        "problem",
        "MaxSessionDuration is 3600 s, shorter than the catalog's max_duration of 7200 s",
    );
    assert_row(
        &table,
        "external-id",
        "problem",
        "requires ExternalId `expected-id`, the catalog sends `other-id`",
    );
    assert_row(&table, "missing", "problem", "does not exist");
    // Exactly one problem per broken role, each with its fix.
    assert_eq!(table.matches(" problem ").count(), 6, "{table}");
    assert_eq!(table.matches("fix: ").count(), 6, "{table}");
    assert!(
        table.contains("7 role(s): 6 problem(s), 0 warning(s)"),
        "{table}"
    );

    // The correct role alone passes.
    let good = tempfile::tempdir().unwrap();
    let out = preflight(&config(good.path(), &moto, &role("good", "Good", "1h", ""))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 role(s): 0 problem(s)"));

    // A bad configuration is refused as `config check` refuses it.
    let bad = good.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"nope\"\n").unwrap();
    assert_eq!(preflight(&bad).await.status.code(), Some(64));
}

/// Creates the stack `name` from `deploy/cloudformation/TEMPLATE` and waits for
/// `CREATE_COMPLETE`; returns the stack's outputs as `KEY=VALUE` lines.
async fn deploy(moto: &Moto, name: &str, template: &str, parameters: &[String]) -> String {
    let body = format!(
        "file://{}/deploy/cloudformation/{template}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut args = vec![
        "cloudformation",
        "create-stack",
        "--stack-name",
        name,
        "--template-body",
        &body,
        "--capabilities",
        "CAPABILITY_NAMED_IAM",
    ];
    if !parameters.is_empty() {
        args.push("--parameters");
        args.extend(parameters.iter().map(String::as_str));
    }
    aws(moto, &args);
    let deadline = Instant::now() + STACK_DEADLINE;
    loop {
        let status = aws(
            moto,
            &[
                "cloudformation",
                "describe-stacks",
                "--stack-name",
                name,
                "--query",
                "Stacks[0].StackStatus",
                "--output",
                "text",
            ],
        );
        match status.trim() {
            "CREATE_COMPLETE" => break,
            "CREATE_IN_PROGRESS" => {}
            other => panic!("stack `{name}` ended in `{other}`"),
        }
        assert!(
            Instant::now() < deadline,
            "stack `{name}` still in progress"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    aws(
        moto,
        &[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            name,
            "--query",
            "Stacks[0].Outputs[].[OutputKey,OutputValue]",
            "--output",
            "text",
        ],
    )
}

fn output(outputs: &str, key: &str) -> String {
    outputs
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t'))
        .unwrap_or_else(|| panic!("no output `{key}` in {outputs}"))
        .trim()
        .to_owned()
}

/// The broker's role and a target role, both from the CloudFormation templates in
/// `deploy/cloudformation/`, deployed into moto's CloudFormation; preflight, run with the
/// credentials of a session of the broker's role (the default credential chain, as in
/// production), passes on the target role.
#[tokio::test]
async fn preflight_passes_on_the_roles_the_cloudformation_templates_create() {
    let moto = Moto::start().await;
    let broker = deploy(&moto, "latchkey-broker", "broker-role.yaml", &[]).await;
    let broker_arn = output(&broker, "BrokerRoleArn");
    let target = deploy(
        &moto,
        "latchkey-target",
        "target-role.yaml",
        &[
            format!("ParameterKey=BrokerRoleArn,ParameterValue={broker_arn}"),
            "ParameterKey=RoleName,ParameterValue=LatchkeyTarget".to_owned(),
            "ParameterKey=MaxSessionDuration,ParameterValue=7200".to_owned(),
        ],
    )
    .await;
    let target_arn = output(&target, "RoleArn");
    assert!(
        target_arn.ends_with(":role/latchkey/LatchkeyTarget"),
        "{target_arn}"
    );

    // The broker's own identity: a session of its role.
    let session = aws(
        &moto,
        &[
            "sts",
            "assume-role",
            "--role-arn",
            &broker_arn,
            "--role-session-name",
            "i-0123456789abcdef0",
            "--query",
            "Credentials.[AccessKeyId,SecretAccessKey,SessionToken]",
            "--output",
            "text",
        ],
    );
    let keys: Vec<&str> = session.split_whitespace().collect();
    assert_eq!(keys.len(), 3, "{session}");

    let dir = tempfile::tempdir().unwrap();
    let catalog = format!(
        "[[role]]\nname = \"target\"\narn = \"{target_arn}\"\nmax_duration = \"2h\"\nallow_groups = [\"engineering\"]\n"
    );
    let path = config(dir.path(), &moto, &catalog);
    // No fixed test credentials: the default chain finds the session's in the environment.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("dangerous_test_credentials = true\n", ""),
    )
    .unwrap();
    let run = |catalog: &str| {
        std::fs::write(dir.path().join("policies/catalog.toml"), catalog).unwrap();
        let mut cmd = latchkey(&["preflight", "--config"]);
        cmd.arg(&path)
            .env_remove("LATCHKEY_CONFIG")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", keys[0])
            .env("AWS_SECRET_ACCESS_KEY", keys[1])
            .env("AWS_SESSION_TOKEN", keys[2]);
        output_within(cmd, RUN_DEADLINE)
    };
    let out = run(&catalog).await;
    let table = stdout(&out);
    println!("{table}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.starts_with(&format!(
            "broker identity: arn:aws:sts::{ACCOUNT_ID}:assumed-role/latchkey-broker/i-0123456789abcdef0"
        )),
        "{table}"
    );
    assert_row(&table, "target", "ok", "ready for the broker");

    // A catalog that wants longer sessions than the stack's MaxSessionDuration fails.
    let out = run(&catalog.replace("\"2h\"", "\"3h\"")).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_row(
        &stdout(&out),
        "target",
        "problem",
        "MaxSessionDuration is 7200 s",
    );
}
