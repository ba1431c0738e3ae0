//! A private PostgreSQL server for one test, on a free 127.0.0.1 port, that the test may stop and
//! start again (an outage) without touching the machine's shared server on 5432.
//!
//! It is made from the installed server binaries: [`BIN_VAR`] names their directory, else
//! `pg_config --bindir` if it holds `initdb`, else the newest `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package, which `.ci/run` installs when it is missing). `initdb` makes a cluster with
//! trust authentication in a temporary directory; the server listens on 127.0.0.1 only, with no
//! Unix socket. PostgreSQL refuses to run as root, so as root both run as the `postgres` user
//! (created by Debian's package) on a directory given to it.
//!
//! The server runs under a small `sh` wrapper that reads its stdin until EOF: when the test ends
//! (or the test binary dies) the pipe closes and the wrapper shuts PostgreSQL down at once
//! (`SIGQUIT`, immediate shutdown), so nothing is left behind. [`PgServer::stop`] is a fast
//! shutdown with `pg_ctl`; [`PgServer::start`] runs it again on the same port and data directory.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

use super::free_port;

/// The environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`.
pub const BIN_VAR: &str = "LATCHKEY_TEST_PG_BIN";

const START_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `postgres` in the background and shuts it down (immediately) when stdin closes; exits
/// with the server. The watcher is killed once the server has exited, so it can never signal a
/// later server that reused the pid. (A background job's stdin is /dev/null unless redirected:
/// the watcher reads the pipe through fd 3.)
const WRAPPER: &str = r#"
exec 3<&0
"$@" </dev/null &
pg=$!
( cat <&3 >/dev/null; kill -QUIT "$pg" 2>/dev/null ) &
watch=$!
wait "$pg"
status=$?
kill "$watch" 2>/dev/null
exit "$status"
"#;

/// A private PostgreSQL server. Dropping it shuts the server down and removes its files.
pub struct PgServer {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    owner: Option<(u32, u32)>,
    running: Option<(Child, ChildStdin)>,
    // Dropped last: the files go after the server.
    dir: tempfile::TempDir,
}

impl PgServer {
    /// Makes a fresh cluster and starts it; ready when this returns.
    pub async fn create() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temporary directory for PostgreSQL");
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the cluster directory to the postgres user");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path());
        as_owner(&mut initdb, owner);
        super::run_setup(initdb, "initdb");
        let mut server = PgServer {
            port: free_port(),
            bin,
            data,
            log,
            owner,
            running: None,
            dir,
        };
        server.start().await;
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on the same port and data directory, and waits until it
    /// accepts connections.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "PostgreSQL is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("PostgreSQL log file");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("postgres-wrapper")
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=100",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        as_owner(&mut cmd, self.owner);
        let mut child = cmd.spawn().expect("start postgres");
        let stdin = child.stdin.take().expect("the wrapper's stdin");
        self.running = Some((child, stdin));
        let url = self.url();
        let ready = super::poll_until(START_DEADLINE, || {
            let url = url.clone();
            async move {
                let conn = sqlx::PgConnection::connect(&url).await.ok()?;
                let _ = conn.close().await;
                Some(())
            }
        })
        .await;
        if ready.is_none() {
            super::peer_failed("PostgreSQL", "PostgreSQL did not start in time", &self.log);
        }
    }

    /// Stops the server with a fast shutdown (`pg_ctl stop -m fast`: open sessions are ended)
    /// and waits until it has exited.
    pub fn stop(&mut self) {
        let (mut child, stdin) = self.running.take().expect("PostgreSQL is running");
        let mut pg_ctl = Command::new(self.bin.join("pg_ctl"));
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30"])
            .current_dir(self.dir.path());
        as_owner(&mut pg_ctl, self.owner);
        super::run_setup(pg_ctl, "pg_ctl stop");
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert!(status.is_some(), "the PostgreSQL wrapper did not exit");
        drop(stdin);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.running.take() {
            // Closing the pipe makes the wrapper shut PostgreSQL down at once.
            drop(stdin);
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits up to `within` for `child` to exit.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` as the cluster's owner, when that is not the current user.
fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}

/// As root: the `postgres` user's uid and gid (PostgreSQL will not run as root). Otherwise
/// `None`: the server runs as the current user.
fn server_user() -> Option<(u32, u32)> {
    if id(&["-u"]) != Some(0) {
        return None;
    }
    let uid = id(&["-u", "postgres"]);
    let gid = id(&["-g", "postgres"]);
    match (uid, gid) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!(
            "running as root, and there is no `postgres` user to run a private PostgreSQL as \
             (Debian's postgresql package creates it)"
        ),
    }
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var(BIN_VAR) {
        return PathBuf::from(dir);
    }
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries (initdb, postgres) found: install Debian's postgresql \
             package (.ci/run does) or set {BIN_VAR}"
        ),
    }
}
