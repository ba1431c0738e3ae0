//! `latchkey preflight --config FILE`: check, with the broker's own AWS identity, that every
//! catalog role is ready for the broker; print a table of what is wrong and how to fix it.
//!
//! Exit codes: 0 every role ready (warnings allowed), 1 a problem (or AWS could not be asked),
//! 64 a bad configuration or policy directory.

use std::path::Path;
use std::process::ExitCode;

use crate::aws::iam::IamPreflight;
use crate::config::{Config, ProcessEnv};
use crate::policy::PolicySet;
use crate::preflight::{self, Expected, Severity};

pub(super) async fn run(path: &Path) -> ExitCode {
    super::init_logging(false);
    let config = match Config::load(path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("latchkey: invalid configuration:\n{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let policy = match PolicySet::load(&config.policy.dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("latchkey: invalid policy:\n{e}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let aws = if config.aws.dangerous_test_credentials {
        // Loopback endpoints only (checked by config), as for `server`.
        let dummy = aws_sdk_sts::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "latchkey-test",
        );
        IamPreflight::with_credentials(&config.aws, dummy).await
    } else {
        IamPreflight::new(&config.aws).await
    };
    let caller = match aws.caller().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("latchkey: cannot learn the broker's own aws identity: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "broker identity: {} (trust policies should name `{}`)",
        caller.arn,
        caller.principal_arn()
    );
    let mut names = Vec::new();
    let mut findings = Vec::new();
    for role in policy.roles() {
        let expected = Expected {
            name: role.name().to_owned(),
            arn: role.arn().as_str().to_owned(),
            max_duration_secs: role.max_duration().as_secs(),
            external_id: role.external_id().map(str::to_owned),
        };
        let observed = aws.observe(&caller, &expected.arn).await;
        findings.extend(preflight::check_role(&caller, &expected, &observed));
        names.push(expected.name);
    }
    print!("{}", preflight::render(&names, &findings));
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    println!(
        "{} role(s): {} problem(s), {} warning(s)",
        names.len(),
        count(Severity::Problem),
        count(Severity::Warning)
    );
    if preflight::passes(&findings) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
