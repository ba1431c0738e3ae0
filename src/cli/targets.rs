//! `latchkey targets`: the SSH targets and, per OS user, whether you may log in and why.

use std::process::ExitCode;

use clap::Args;

use super::client::{ClientArgs, block_on, fail, now};
use crate::client::broker::{BrokerClient, TargetStatus};
use crate::client::{files, sanitize, session};

#[derive(Debug, Args)]
pub(super) struct TargetsArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(super) fn run(args: TargetsArgs) -> ExitCode {
    let result = block_on(async {
        let settings = args.client.settings();
        let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        broker.targets(&login.id_token).await
    });
    match result {
        Ok(r) => {
            print!("{}", table(&r.targets));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// One row per target and OS user: `TARGET  OS USER  STATUS  WHY`, every cell sanitized.
fn table(targets: &[TargetStatus]) -> String {
    let rows: Vec<[String; 4]> = targets
        .iter()
        .flat_map(|t| {
            t.os_users.iter().map(|u| {
                let why = if u.reasons.is_empty() {
                    u.determining_policies.join(", ")
                } else {
                    u.reasons.join("; ")
                };
                [
                    sanitize(&t.name),
                    sanitize(&u.os_user),
                    sanitize(&u.status),
                    sanitize(&why),
                ]
            })
        })
        .collect();
    let titles = ["TARGET", "OS USER", "STATUS"];
    let widths: Vec<usize> = titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let (w0, w1, w2) = (
        widths.first().copied().unwrap_or(0),
        widths.get(1).copied().unwrap_or(0),
        widths.get(2).copied().unwrap_or(0),
    );
    let mut out = format!(
        "{:w0$}  {:w1$}  {:w2$}  WHY\n",
        "TARGET", "OS USER", "STATUS"
    );
    for [target, user, status, why] in &rows {
        out.push_str(&format!("{target:w0$}  {user:w1$}  {status:w2$}  {why}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OsUserStatus;

    #[test]
    fn one_row_per_os_user_with_the_reason() {
        let t = TargetStatus {
            name: "bastion".into(),
            host: Some("127.0.0.1".into()),
            port: 2222,
            instance_ids: vec!["i-0123456789abcdef0".into()],
            host_keys: vec![],
            os_users: vec![
                OsUserStatus {
                    os_user: "ec2-user".into(),
                    status: "allowed".into(),
                    reasons: vec![],
                    determining_policies: vec!["ssh.engineers".into()],
                },
                OsUserStatus {
                    os_user: "root".into(),
                    status: "denied".into(),
                    reasons: vec!["needs group `sre`\u{1b}[2J".into()],
                    determining_policies: vec![],
                },
            ],
        };
        assert_eq!(
            table(&[t]),
            "TARGET   OS USER   STATUS   WHY\n\
             bastion  ec2-user  allowed  ssh.engineers\n\
             bastion  root      denied   needs group `sre`[2J\n"
        );
    }
}
