//! `latchkey dev`: the local sandbox, and `latchkey dev token USER`.
//!
//! Everything binds to loopback; any other address is refused. State (TLS material, the
//! development issuer's key, the SQLite store, the audit stream) lives in `--state-dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::dev::{
    AwsTarget, DevIssuer, aws_target, check_state_dir, ensure_state_dir, ensure_tls, load_users,
    require_loopback,
};
use crate::server::{Server, shutdown_signal};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct DevArgs {
    #[command(subcommand)]
    command: Option<DevCmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum DevCmd {
    /// Log the CLI in as a demo user with a token from the running sandbox's issuer, without
    /// the device flow (to act as a second person: run it with another XDG_CONFIG_HOME).
    Login {
        /// The demo user (from the users file).
        user: String,
        #[command(flatten)]
        common: Common,
        /// The sandbox's broker.
        #[arg(
            long,
            env = "LATCHKEY_SERVER",
            default_value = "https://127.0.0.1:8443"
        )]
        server: String,
        /// The sandbox's CA certificate (default: `ca.pem` in the state directory).
        #[arg(long, env = "LATCHKEY_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// Print a development ID token for a demo user.
    Token {
        /// The demo user (from the users file).
        user: String,
        #[command(flatten)]
        common: Common,
        /// Lifetime of the token in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Where the broker listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Where the development issuer listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:8444")]
    issuer_listen: SocketAddr,
    /// The policy directory.
    #[arg(long, default_value = "policies")]
    policy_dir: PathBuf,
    /// A local AWS stand-in (moto) for STS on a loopback address; credentials are signed with
    /// dummy keys. Required unless `--dangerous-real-aws` is given.
    #[arg(long)]
    aws_endpoint: Option<url::Url>,
    /// Let the sandbox reach real AWS (the default endpoints, or a non-loopback
    /// `--aws-endpoint`) with the default credential chain. Its demo users log in without a
    /// password, so this hands real access to anyone who can reach its port.
    #[arg(long)]
    dangerous_real_aws: bool,
    /// The demo user that `latchkey login --device` against this sandbox logs in as, without a
    /// password (development only).
    #[arg(long, default_value = "alice")]
    user: String,
}

#[derive(Debug, Args)]
struct Common {
    /// Directory for the sandbox's state.
    #[arg(long, default_value = ".latchkey-dev", env = "LATCHKEY_DEV_STATE")]
    state_dir: PathBuf,
    /// The demo users file.
    #[arg(long, default_value = "policies/dev-users.toml")]
    users: PathBuf,
}

pub(super) async fn run(args: DevArgs) -> ExitCode {
    let result = match args.command {
        Some(DevCmd::Token { user, common, ttl }) => token(&user, &common, ttl),
        Some(DevCmd::Login {
            user,
            common,
            server,
            ca_cert,
        }) => login(&user, &common, &server, ca_cert),
        None => match aws_target(args.run.aws_endpoint.as_ref(), args.run.dangerous_real_aws) {
            Ok(aws) => serve(args.run, aws).await,
            // A usage error: refused before anything is created or started.
            Err(e) => {
                eprintln!("latchkey dev: {e}");
                return ExitCode::from(super::EXIT_USAGE);
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("latchkey dev: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(user: &str, common: &Common, ttl: i64) -> anyhow::Result<ExitCode> {
    let (issuer, u) = issuer_and_user(user, common)?;
    println!("{}", issuer.mint(&u, SystemClock.unix(), ttl)?);
    Ok(ExitCode::SUCCESS)
}

fn login(
    user: &str,
    common: &Common,
    server: &str,
    ca_cert: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use crate::client::{files, session};
    let (issuer, u) = issuer_and_user(user, common)?;
    let now = SystemClock.unix();
    let ca_cert = match ca_cert {
        Some(p) => p,
        None => std::path::absolute(common.state_dir.join("ca.pem"))?,
    };
    let login = session::StoredLogin {
        server: server.trim_end_matches('/').to_owned(),
        issuer: issuer.issuer().to_owned(),
        client_id: crate::dev::DEV_CLIENT_ID.to_owned(),
        subject: u.name.clone(),
        id_token: issuer.mint(&u, now, LOGIN_TTL_SECS)?,
        id_token_expires_at: now + LOGIN_TTL_SECS,
        refresh_token: None,
        ca_cert: Some(ca_cert),
    };
    let dir = files::config_dir()?;
    session::save(&dir, &login)?;
    eprintln!(
        "latchkey dev: logged in to {} as `{}` for {} minutes (development issuer)",
        login.server,
        u.name,
        LOGIN_TTL_SECS / 60
    );
    Ok(ExitCode::SUCCESS)
}

/// How long a `latchkey dev login` lasts (there is no refresh token).
const LOGIN_TTL_SECS: i64 = 3600;

/// The running sandbox's issuer and the demo user `user`.
fn issuer_and_user(
    user: &str,
    common: &Common,
) -> anyhow::Result<(DevIssuer, crate::dev::DevUser)> {
    check_state_dir(&common.state_dir)?;
    let issuer_url =
        std::fs::read_to_string(common.state_dir.join("issuer-url")).map_err(|_| {
            anyhow::anyhow!(
                "no sandbox state in `{}`; run `latchkey dev` first",
                common.state_dir.display()
            )
        })?;
    let issuer = DevIssuer::open(&common.state_dir, issuer_url.trim().to_owned())?;
    let users = load_users(&common.users)?;
    let u = users
        .into_iter()
        .find(|u| u.name == user)
        .ok_or_else(|| crate::dev::DevError::UnknownUser(user.to_owned()))?;
    Ok((issuer, u))
}

async fn serve(args: RunArgs, aws: AwsTarget) -> anyhow::Result<ExitCode> {
    super::init_logging(false);
    require_loopback(args.listen)?;
    require_loopback(args.issuer_listen)?;
    let dir = &args.common.state_dir;
    ensure_state_dir(dir)?;
    let dir = dir.canonicalize()?;
    let users = load_users(&args.common.users)?;
    let tls = ensure_tls(&dir)?;
    let login_user = users
        .iter()
        .find(|u| u.name == args.user)
        .cloned()
        .ok_or_else(|| crate::dev::DevError::UnknownUser(args.user.clone()))?;
    let issuer_url = format!("http://{}", args.issuer_listen);
    let issuer = Arc::new(DevIssuer::open(&dir, issuer_url.clone())?);
    std::fs::write(dir.join("issuer-url"), &issuer_url)?;

    let issuer_listener = tokio::net::TcpListener::bind(args.issuer_listen).await?;
    let issuer_app = Arc::clone(&issuer).router_with_login(login_user, Arc::new(SystemClock));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(issuer_listener, issuer_app).await {
            tracing::error!(error = %e, "the development issuer stopped");
        }
    });

    let policy_dir = std::path::absolute(&args.policy_dir)?;
    // Paths go through TOML's own string quoting, so odd characters cannot break the file.
    let q = |s: String| toml::Value::String(s).to_string();
    let config_text = format!(
        r#"
[server]
listen = {listen}
tls_cert = {cert}
tls_key = {key}
[store]
url = {db}
[audit]
sink = {audit}
[[oidc.provider]]
issuer = {issuer}
audiences = [{client}]
cli_client_id = {client}
dangerous_plain_http = true
groups_claim = "groups"
attributes = ["department"]
[policy]
dir = {policy}
{aws}
"#,
        listen = q(args.listen.to_string()),
        cert = q(tls.cert.display().to_string()),
        key = q(tls.key.display().to_string()),
        db = q(format!("sqlite://{}", dir.join("latchkey.db").display())),
        audit = q(format!("file:{}", dir.join("audit.jsonl").display())),
        issuer = q(issuer_url.clone()),
        client = q(crate::dev::DEV_CLIENT_ID.to_owned()),
        policy = q(policy_dir.display().to_string()),
        aws = match &aws {
            AwsTarget::Local(u) => format!(
                "[aws]\nendpoint_url = {}\ndangerous_test_credentials = true\n",
                q(u.to_string())
            ),
            AwsTarget::Real(Some(u)) => format!("[aws]\nendpoint_url = {}\n", q(u.to_string())),
            AwsTarget::Real(None) => String::new(),
        },
    );
    let config = Config::from_toml(&config_text, &dir, &Vec::new())?;
    let server = Server::build(&config, Arc::new(SystemClock)).await?;
    let listener = server.bind().await?;
    banner(&args, &aws, &dir, &tls.ca_cert, &users);
    server.serve(listener, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

fn banner(args: &RunArgs, aws: &AwsTarget, dir: &Path, ca: &Path, users: &[crate::dev::DevUser]) {
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let aws = match aws {
        AwsTarget::Local(u) => format!("local stand-in at {u}"),
        AwsTarget::Real(Some(u)) => format!("REAL AWS at {u} (--dangerous-real-aws)"),
        AwsTarget::Real(None) => "REAL AWS (--dangerous-real-aws)".to_owned(),
    };
    eprintln!(
        "\n\
         ================================================================\n\
         \x20 latchkey DEVELOPMENT SANDBOX: NOT FOR PRODUCTION\n\
         \x20 tokens are minted locally for demo users; loopback only\n\
         ================================================================\n\
         \x20 broker:       https://{listen}\n\
         \x20 dev issuer:   http://{issuer}\n\
         \x20 AWS:          {aws}\n\
         \x20 state:        {dir}\n\
         \x20 CA to trust:  {ca}\n\
         \x20 demo users:   {users}\n\
         \x20 device login: approved automatically, no password, as `{user}`\n\
         \n\
         Try, in another shell:\n\
         \x20 latchkey login --device --server https://{listen} --ca-cert {ca}\n\
         \x20 latchkey whoami\n\
         \x20 latchkey roles\n\
         \x20 latchkey configure\n\
         \x20 latchkey credentials --role readonly\n",
        listen = args.listen,
        issuer = args.issuer_listen,
        dir = dir.display(),
        ca = ca.display(),
        users = names.join(", "),
        user = args.user,
    );
}
