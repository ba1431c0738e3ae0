//! `latchkey revoke-sessions --config FILE --principal ISSUER#SUBJECT [--role NAME]...
//! [--reason TEXT]`: offboarding. Stops the sessions a principal was already issued, on every
//! catalog role (or the roles named), with the broker's own AWS identity, store and audit chain
//! from the configuration: an inline deny policy on each role ([`crate::broker::Broker::revoke_sessions`]).
//! Prints a table of roles and policy names. `latchkey server`'s sweeper retries the roles that
//! failed and removes the policies once each role's maximum session duration has passed.
//!
//! Exit codes: 0 the deny is on every role, 1 some role is not covered yet (or the store, the
//! audit chain or AWS failed), 2 a bad principal or role, 64 a bad configuration or policy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::broker::{
    Broker, BrokerError, Ports, RequestMeta, Revocation, RevocationCause, RevocationOrder, Revoker,
    RoleOutcome,
};
use crate::client::sanitize;
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::{Config, ProcessEnv, redact_url};
use crate::policy::PolicySet;

/// Stop the sessions a principal was already issued (offboarding), on every catalog role or the
/// roles named. Run where the broker runs: it uses the broker's configuration, AWS identity,
/// store and audit chain.
#[derive(Debug, clap::Args)]
pub(super) struct RevokeArgs {
    /// The broker's configuration file.
    #[arg(long, env = "LATCHKEY_CONFIG")]
    config: PathBuf,
    /// The principal, `ISSUER#SUBJECT` (the issuer exactly as configured), as `latchkey whoami`
    /// and the audit records show it.
    #[arg(long, value_name = "ISSUER#SUBJECT")]
    principal: String,
    /// A catalog role (repeat for several); default: every role in the catalog.
    #[arg(long = "role", value_name = "NAME")]
    roles: Vec<String>,
    /// Why, for the audit records.
    #[arg(long)]
    reason: Option<String>,
}

pub(super) async fn run(args: RevokeArgs) -> ExitCode {
    super::init_logging(false);
    let config = match Config::load(&args.config, &ProcessEnv) {
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
    let usage = |message: String| {
        eprintln!("latchkey revoke-sessions: {message}");
        ExitCode::from(super::EXIT_USAGE)
    };
    let Some((issuer, subject)) = args
        .principal
        .split_once('#')
        .filter(|(i, s)| !i.is_empty() && !s.is_empty())
    else {
        return usage(format!(
            "`--principal` must be `ISSUER#SUBJECT`, not `{}`",
            sanitize(&args.principal)
        ));
    };
    // SECURITY: a mistyped issuer would revoke nobody's sessions while looking done.
    if !config.oidc.providers.iter().any(|p| p.issuer == issuer) {
        let known: Vec<&str> = config
            .oidc
            .providers
            .iter()
            .map(|p| p.issuer.as_str())
            .collect();
        return usage(format!(
            "`{}` is not an issuer this broker trusts ({})",
            sanitize(issuer),
            known.join(", ")
        ));
    }
    let roles: Vec<String> = if args.roles.is_empty() {
        policy.roles().iter().map(|r| r.name().to_owned()).collect()
    } else {
        args.roles.clone()
    };
    if let Some(unknown) = roles.iter().find(|r| policy.role(r).is_none()) {
        return usage(format!("no role `{}` in the catalog", sanitize(unknown)));
    }
    if roles.is_empty() {
        return usage("the catalog has no roles".to_owned());
    }
    let broker = match open_broker(&config, policy).await {
        Ok(b) => b,
        Err(message) => {
            eprintln!("latchkey revoke-sessions: {message}");
            return ExitCode::FAILURE;
        }
    };
    let clock = SystemClock;
    let order = RevocationOrder {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        roles,
        cause: RevocationCause::Offboarding,
        revoker: Revoker::Operator(operator()),
        reason: args.reason,
        at: clock.now(),
        meta: RequestMeta::default(),
    };
    match broker.revoke_sessions(&order).await {
        Ok(revocation) => {
            print!("{}", render(&revocation));
            ExitCode::SUCCESS
        }
        Err(BrokerError::RevocationIncomplete(revocation)) => {
            print!("{}", render(&revocation));
            eprintln!(
                "latchkey revoke-sessions: sessions are NOT yet revoked on {}; `latchkey server` \
                 keeps retrying (see the table for why)",
                revocation.pending_list()
            );
            ExitCode::FAILURE
        }
        Err(BrokerError::RevocationInvalid(e)) => usage(e.to_string()),
        Err(e) => {
            eprintln!("latchkey revoke-sessions: nothing was revoked: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The broker of `config`, as `latchkey server` builds it (store, audit chain and sink, AWS
/// identity), without listening.
async fn open_broker(config: &Config, policy: PolicySet) -> Result<Broker, String> {
    let store = crate::store::connect(&config.store.url)
        .await
        .map_err(|e| format!("cannot open `{}`: {e}", redact_url(&config.store.url)))?;
    let auditor = crate::server::open_auditor(config, &store)
        .await
        .map_err(|e| e.to_string())?;
    let (aws, role_policies) = crate::server::aws_ports(&config.aws).await;
    Ok(Broker::new(Ports {
        providers: config.oidc.providers.clone(),
        store,
        auditor,
        aws,
        role_policies,
        policy,
        clock: Arc::new(SystemClock) as SharedClock,
        grants_per_minute: config.server.grants_per_minute,
        breakglass: config.breakglass.clone(),
        webhooks: config.notify.webhooks.clone(),
        wakeup: crate::notify::Wakeup::new(),
    }))
}

/// The table of a revocation, one role per line.
fn render(revocation: &Revocation) -> String {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let [pattern, bare] = &revocation.source_identity_patterns;
    let mut out = format!(
        "revocation {}: sessions of {} issued before {}\n\
         denied source identities: {pattern} and {bare}\n\
         policy: {}\n\n",
        revocation.id,
        sanitize(&revocation.principal),
        time(&revocation.issued_before),
        revocation.policy_name,
    );
    let width = revocation
        .roles
        .iter()
        .map(|r| r.role.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    out.push_str(&format!(
        "{:<width$}  {:<8}  REMOVED AFTER / WHY NOT YET\n",
        "ROLE", "STATUS"
    ));
    for role in &revocation.roles {
        let (status, note) = match &role.outcome {
            RoleOutcome::Applied { remove_after } => ("revoked", time(remove_after)),
            RoleOutcome::Pending { error, retry_at } => (
                "FAILED",
                format!("{} (retried from {})", sanitize(error), time(retry_at)),
            ),
        };
        out.push_str(&format!("{:<width$}  {status:<8}  {note}\n", role.role));
    }
    let pending = revocation.pending_roles().len();
    out.push_str(&format!(
        "\n{} of {} role(s) revoked",
        revocation.roles.len() - pending,
        revocation.roles.len()
    ));
    if pending > 0 {
        out.push_str(&format!("; {pending} FAILED"));
    }
    out.push_str(
        "\nthe deny policies are removed by `latchkey server` once each role's maximum session \
         duration has passed\n",
    );
    out
}

/// The local user running the command, as the environment names them (for the audit records).
fn operator() -> String {
    let name = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::RoleRevocation;

    #[test]
    fn the_table_names_each_role_its_status_and_what_comes_next() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let revocation = Revocation {
            id: "0123456789abcdef".into(),
            principal: "https://idp#alice\u{1b}[31m".into(),
            policy_name: "latchkey-revoke-aaaaaaaaaaaaaaaa-0123456789abcdef".into(),
            source_identity_patterns: ["*-aaaaaaaaaaaaaaaa".into(), "aaaaaaaaaaaaaaaa".into()],
            issued_before: t("2026-11-29T12:00:05Z"),
            roles: vec![
                RoleRevocation {
                    role: "readonly".into(),
                    role_arn: "arn:aws:iam::123456789012:role/latchkey/ReadOnly".into(),
                    outcome: RoleOutcome::Applied {
                        remove_after: t("2026-11-29T13:00:06Z"),
                    },
                },
                RoleRevocation {
                    role: "prod-administrator".into(),
                    role_arn: "arn:aws:iam::123456789012:role/latchkey/Admin".into(),
                    outcome: RoleOutcome::Pending {
                        error: "the role or policy does not exist in iam: NoSuchEntity".into(),
                        retry_at: t("2026-11-29T12:00:36Z"),
                    },
                },
            ],
        };
        let table = render(&revocation);
        assert_eq!(
            table,
            "revocation 0123456789abcdef: sessions of https://idp#alice[31m issued before \
             2026-11-29T12:00:05Z\n\
             denied source identities: *-aaaaaaaaaaaaaaaa and aaaaaaaaaaaaaaaa\n\
             policy: latchkey-revoke-aaaaaaaaaaaaaaaa-0123456789abcdef\n\n\
             ROLE                STATUS    REMOVED AFTER / WHY NOT YET\n\
             readonly            revoked   2026-11-29T13:00:06Z\n\
             prod-administrator  FAILED    the role or policy does not exist in iam: \
             NoSuchEntity (retried from 2026-11-29T12:00:36Z)\n\n\
             1 of 2 role(s) revoked; 1 FAILED\n\
             the deny policies are removed by `latchkey server` once each role's maximum \
             session duration has passed\n"
        );
    }
}
