//! Harness for end-to-end tests: start real `bosun` processes (the all-in-one server, or the
//! gateway and services apart) on free loopback ports with their own data directories, wait
//! until they report SERVING, and talk to them over gRPC as a user would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::auth::v1::LoginRequest;
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

pub mod agents;
pub mod nodes;
pub mod raw;
pub mod sessions;
pub mod terminal;

/// The admin password every test server starts with.
pub const ADMIN_PASSWORD: &str = "bosun-test-admin-password";

/// The `bosun` binary built beside this test binary (nextest and `cargo test --workspace`
/// build every binary of the workspace before running tests).
pub fn bosun_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let binary = dir.join("bosun");
    if !binary.exists() {
        bail!(
            "{} does not exist; build it first with `cargo build -p bosun-cli`",
            binary.display()
        );
    }
    Ok(binary)
}

/// A free port on 127.0.0.1 (bound then released; the race with other processes is
/// acceptable on a test machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Which relational store a test server uses.
pub enum Store {
    /// SQLite in the process's data directory (the embedded default).
    Sqlite,
    /// A fresh PostgreSQL schema; the `TestDatabase` drops it when the test ends.
    Postgres(bosun_store::testing::TestDatabase),
}

impl Store {
    pub async fn postgres() -> Self {
        Store::Postgres(bosun_store::testing::postgres().await)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}

/// How to start one process.
pub struct Launch {
    /// `["server"]`, `["serve", "audit"]`, …
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// bosun.toml contents, if any.
    pub config: Option<String>,
    /// Shared data directory (several processes of one deployment share keys).
    pub data_dir: PathBuf,
}

impl Launch {
    pub fn new(args: &[&str], data_dir: &Path) -> Self {
        let mut env = BTreeMap::new();
        env.insert("BOSUN_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into());
        env.insert("RUST_LOG".into(), "info".into());
        Launch {
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            config: None,
            data_dir: data_dir.to_owned(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.into());
        self
    }

    pub fn store(self, store: &Store) -> Self {
        match store {
            Store::Sqlite => self,
            Store::Postgres(database) => self.env("BOSUN_DATABASE_URL", &database.url),
        }
    }
}

/// A running `bosun` process, killed when dropped.
pub struct Process {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub url: String,
    pub started_in: Duration,
    stderr_path: PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Process {
    /// Starts the process on a free port and waits until gRPC health reports SERVING.
    pub async fn start(launch: Launch) -> anyhow::Result<Self> {
        Self::start_on(launch, free_port()?).await
    }

    /// Starts the process on `port` and waits until gRPC health reports SERVING.
    pub async fn start_on(launch: Launch, port: u16) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let config_dir = tempfile::tempdir()?;
        let stderr_path = config_dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut command = Command::new(bosun_binary()?);
        command
            .args(&launch.args)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&launch.data_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", config_dir.path())
            .envs(&launch.env)
            .current_dir(config_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        if let Some(toml) = &launch.config {
            let path = config_dir.path().join("bosun.toml");
            std::fs::write(&path, toml)?;
            command.arg("--config").arg(&path);
        }
        let started = Instant::now();
        let child = command.spawn().context("spawn bosun")?;
        let mut process = Process {
            child: Some(child),
            addr,
            url: format!("http://{addr}"),
            started_in: Duration::ZERO,
            stderr_path,
            _config_dir: config_dir,
        };
        process.wait_serving(Duration::from_secs(30)).await?;
        process.started_in = started.elapsed();
        Ok(process)
    }

    async fn wait_serving(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "bosun exited with {status} before serving:\n{}",
                    self.stderr()
                );
            }
            if let Ok(channel) = Channel::from_shared(self.url.clone())?.connect().await
                && let Ok(response) = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                && response.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "bosun did not report SERVING within {limit:?}:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|child| child.id())
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(self.url.clone())?.connect().await?)
    }

    /// Logs in and returns the bearer token.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let mut client = AuthServiceClient::new(self.channel().await?);
        let response = client
            .login(LoginRequest {
                username: username.into(),
                password: password.into(),
                api_key: String::new(),
            })
            .await?;
        Ok(response.into_inner().token)
    }

    pub async fn admin_token(&self) -> anyhow::Result<String> {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("process already stopped")?;
        let pid = child.id().context("process has no pid")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.kill().await?;
                bail!(
                    "bosun did not exit within {limit:?} of SIGTERM:\n{}",
                    self.stderr()
                )
            }
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Runs the `bosun` CLI with `args`, feeding `stdin`; returns (exit success, stdout, stderr).
pub async fn cli(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> anyhow::Result<(bool, String, String)> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(bosun_binary()?)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).await?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).await?;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    Ok((status.success(), stdout, stderr))
}
