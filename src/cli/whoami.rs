//! `latchkey whoami` and `latchkey roles`.

use std::process::ExitCode;

use clap::Args;

use super::client::{ClientArgs, block_on, fail, now};
use crate::client::broker::BrokerClient;
use crate::client::{ClientError, files, sanitize, session};

#[derive(Debug, Args)]
pub(super) struct WhoamiArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(super) struct RolesArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(super) fn run_whoami(args: WhoamiArgs) -> ExitCode {
    let result = block_on(async {
        let settings = args.client.settings();
        let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        let me = broker.whoami(&login.id_token).await?;
        Ok::<_, ClientError>((login.server, me))
    });
    let (server, me) = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    println!("server:     {server}");
    println!("principal:  {}", sanitize(&me.principal));
    if let Some(email) = &me.email {
        println!("email:      {}", sanitize(email));
    }
    let groups: Vec<String> = me.groups.iter().map(|g| sanitize(g)).collect();
    println!("groups:     {}", groups.join(", "));
    println!("mfa:        {}", if me.mfa { "yes" } else { "no" });
    println!("expires:    {}", sanitize(&me.token_expires_at));
    ExitCode::SUCCESS
}

pub(super) fn run_roles(args: RolesArgs) -> ExitCode {
    let result = block_on(async {
        let settings = args.client.settings();
        let login = session::fresh_token(&files::config_dir()?, &settings, now).await?;
        let broker = BrokerClient::new(&login.server, login.ca_cert(&settings))?;
        broker.roles(&login.id_token).await
    });
    let roles = match result {
        Ok(r) => r.roles,
        Err(e) => return fail(&e),
    };
    let rows: Vec<[String; 3]> = roles
        .iter()
        .map(|r| {
            let why = if r.reasons.is_empty() {
                r.determining_policies.join(", ")
            } else {
                r.reasons.join("; ")
            };
            [sanitize(&r.name), sanitize(&r.status), sanitize(&why)]
        })
        .collect();
    let width = |i: usize, title: &str| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0, "ROLE"), width(1, "STATUS"));
    println!("{:w0$}  {:w1$}  WHY", "ROLE", "STATUS");
    for [name, status, why] in &rows {
        println!("{name:w0$}  {status:w1$}  {why}");
    }
    ExitCode::SUCCESS
}
