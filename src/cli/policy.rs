//! `latchkey policy check | test | explain`: work on a policy directory without a server.
//!
//! Exit codes: 0 ok (or allow), 1 problems or failed tests, 2 usage, 3 deny.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::config::parse_duration;
use crate::identity::{Attribute, Identity};
use crate::policy::corpus::{DEFAULT_ISSUER, parse_cases};
use crate::policy::{AccessRequest, Action, PolicySet, RequestContext, Resource};

/// Policy tools.
#[derive(Debug, Subcommand)]
pub(super) enum PolicyCmd {
    /// Validate the catalog, the schema and every policy; print each problem, exit 1 on any.
    Check {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Run the table-driven cases in DIR/tests/*.toml; exit 1 if any fails.
    Test {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Show the decision for one request, with the policies and reasons behind it; exit 0 on
    /// allow, 3 on deny.
    Explain(Box<ExplainArgs>),
}

/// `latchkey policy explain`.
#[derive(Debug, Args)]
pub(super) struct ExplainArgs {
    /// The policy directory.
    #[arg(default_value = "policies")]
    dir: PathBuf,
    /// The person's subject (`sub`).
    #[arg(long)]
    subject: String,
    /// The person's issuer.
    #[arg(long, default_value = DEFAULT_ISSUER)]
    issuer: String,
    /// The person's email.
    #[arg(long)]
    email: Option<String>,
    /// A group id (repeat for several).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// A kept attribute as `name=value`, a text value (repeat for several).
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attr)]
    attributes: Vec<(String, String)>,
    /// The login used a second factor.
    #[arg(long)]
    mfa: bool,
    /// How long ago the person logged in, such as `10m`.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    auth_age: std::time::Duration,
    /// The action.
    #[arg(long, default_value = "assume", value_parser = |s: &str| s.parse::<Action>())]
    action: Action,
    /// The role.
    #[arg(long, conflicts_with = "target", required_unless_present = "target")]
    role: Option<String>,
    /// A catalog target (`[[target]]` in catalog.toml), instead of `--role`.
    #[arg(long)]
    target: Option<String>,
    /// The session length (default: the role's default duration).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<std::time::Duration>,
    /// The client's address.
    #[arg(long)]
    source_ip: Option<std::net::IpAddr>,
    /// For `--action ssh`: the OS user to log in as.
    #[arg(long)]
    os_user: Option<String>,
}

pub(super) fn run(cmd: PolicyCmd) -> ExitCode {
    let result = match cmd {
        PolicyCmd::Check { dir } => check(&dir),
        PolicyCmd::Test { dir } => test(&dir),
        PolicyCmd::Explain(args) => explain(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("latchkey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(dir: &Path) -> Option<PolicySet> {
    match PolicySet::load(dir) {
        Ok(set) => Some(set),
        Err(e) => {
            for issue in &e.issues {
                eprintln!("{}: {}: {}", dir.display(), issue.path, issue.message);
            }
            eprintln!("{}: {} problem(s)", dir.display(), e.issues.len());
            None
        }
    }
}

fn check(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(set) = load(dir) else {
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "{}: ok: {} role(s), {} target(s), {} policies",
        dir.display(),
        set.roles().len(),
        set.targets().len(),
        set.policy_ids().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(set) = load(dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let tests = dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .with_context(|| format!("cannot read `{}`", tests.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read `{}`", file.display()))?;
        let cases = match parse_cases(&file.display().to_string(), &text) {
            Ok(c) => c,
            Err(issues) => {
                for i in &issues {
                    eprintln!("{}: {}", i.path, i.message);
                }
                failed += issues.len();
                continue;
            }
        };
        let report = set.run_tests(&cases);
        passed += report.passed;
        failed += report.failures.len();
        for f in &report.failures {
            println!("FAIL {}: {}", file.display(), f.name);
            for p in &f.problems {
                println!("  {p}");
            }
            for r in &f.decision.reasons {
                println!("  reason: {r}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if files.is_empty() || passed + failed == 0 {
        eprintln!("no test cases in `{}`", tests.display());
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let Some(set) = load(&args.dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let identity = Identity {
        readable_name: args.email.clone().unwrap_or_else(|| args.subject.clone()),
        device_flow: false,
        issuer: args.issuer,
        subject: args.subject,
        email: args.email,
        groups: args.groups,
        attributes: args
            .attributes
            .into_iter()
            .map(|(k, v)| (k, Attribute::Text(v)))
            .collect(),
        mfa: args.mfa,
        auth_time: None,
        issued_at: 0,
        expires_at: 0,
    };
    let resource = match (args.role, args.target) {
        (Some(r), _) => Resource::Role(r),
        (None, Some(t)) => Resource::Target(t),
        (None, None) => anyhow::bail!("name a `--role` or a `--target`"),
    };
    let duration = match (args.duration, &resource, args.action) {
        (Some(d), _, _) => d.as_secs(),
        (None, Resource::Role(r), Action::Assume) => {
            set.role(r).map_or(0, |r| r.default_duration().as_secs())
        }
        (None, _, _) => 0,
    };
    let decision = set.decide(&AccessRequest {
        identity: &identity,
        action: args.action,
        resource: resource.clone(),
        context: RequestContext {
            mfa: args.mfa,
            auth_age_secs: i64::try_from(args.auth_age.as_secs()).unwrap_or(i64::MAX),
            duration_secs: i64::try_from(duration).unwrap_or(i64::MAX),
            source_ip: args.source_ip,
            os_user: args.os_user,
        },
    });
    println!(
        "{}: {} `{}` for `{}`",
        decision.effect,
        args.action,
        resource.name(),
        identity.principal_id()
    );
    if decision.determining.is_empty() {
        println!("determining: (none)");
    } else {
        println!("determining: {}", decision.determining.join(", "));
    }
    for r in &decision.reasons {
        println!("reason: {r}");
    }
    Ok(if decision.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not `name=value`")),
    }
}

/// Exit code of a deny.
const EXIT_DENIED: u8 = 3;
