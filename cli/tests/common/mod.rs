//! What the CLI's end-to-end tests share: serving a fake gRPC service on a free port, and
//! running the real `bosun` binary against it with a private config dir.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Serves `routes` on 127.0.0.1 until the test's runtime ends; returns the URL.
pub async fn serve(routes: Routes) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok(url)
}

/// Runs `bosun <args>` with a private config dir, none of the caller's BOSUN_* settings,
/// `env` added, and `stdin` fed in.
pub async fn run_bosun(
    config_dir: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bosun"));
    command
        .args(args)
        .env_remove("BOSUN_TOKEN")
        .env_remove("BOSUN_SERVER")
        .env("BOSUN_CONFIG_DIR", config_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("cannot start bosun")?;
    if let Some(mut input) = child.stdin.take() {
        // A command that fails before reading stdin closes it; that is not our failure.
        let _ = input.write_all(stdin.as_bytes()).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("bosun did not finish within 60 s")??;
    Ok(output)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A real all-in-one `bosun server` (SQLite in a temporary directory) on a free loopback port,
/// killed when dropped, and a CLI logged in to it. Each test file uses what it needs.
#[allow(dead_code)]
pub struct RealServer {
    pub url: String,
    /// The temporary directory holding the server's data, config and logs.
    pub root: tempfile::TempDir,
    server: tokio::process::Child,
    server_log: std::path::PathBuf,
    config_dir: std::path::PathBuf,
}

#[allow(dead_code)]
impl RealServer {
    /// Starts the server (with its own node's agent when `local_agent`), waits until the admin
    /// can log in, and logs the CLI in.
    pub async fn start(admin_password: &str, local_agent: bool) -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let server_log = root.path().join("server.log");
        let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_bosun"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(root.path().join("data"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", root.path())
            .env("RUST_LOG", "info")
            .env("BOSUN_ADMIN_PASSWORD", admin_password)
            .env("BOSUN_AGENTS__LOCAL_AGENT", local_agent.to_string())
            .env("BOSUN_AGENTS__HEARTBEAT_INTERVAL", "1s")
            .env("BOSUN_AGENTS__PING_TIMEOUT", "10s")
            .current_dir(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&server_log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start bosun server")?;
        let mut started = RealServer {
            url,
            config_dir: root.path().join("config"),
            root,
            server,
            server_log,
        };
        started.wait_until_serving(admin_password).await?;
        let output = run_bosun(
            &started.config_dir,
            &["--server", &started.url, "login", "--password-stdin"],
            &format!("{admin_password}\n"),
            &[],
        )
        .await?;
        if !output.status.success() {
            anyhow::bail!("bosun login failed: {}", stderr(&output));
        }
        Ok(started)
    }

    /// Waits until the admin can log in, which needs every service up.
    async fn wait_until_serving(&mut self, admin_password: &str) -> anyhow::Result<()> {
        use bosun_proto::auth::v1::LoginRequest;
        use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.server.try_wait()? {
                anyhow::bail!(
                    "bosun server exited with {status} before serving:\n{}",
                    self.server_log()
                );
            }
            if let Ok(channel) = tonic::transport::Channel::from_shared(self.url.clone())?
                .connect()
                .await
                && AuthServiceClient::new(channel)
                    .login(LoginRequest {
                        username: "admin".into(),
                        password: admin_password.into(),
                        api_key: String::new(),
                    })
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "bosun server did not serve within 60 s:\n{}",
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the server logged, for failure messages.
    pub fn server_log(&self) -> String {
        let log = std::fs::read_to_string(&self.server_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `bosun --server <url> <args>` with the stored login.
    pub async fn bosun(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["--server", self.url.as_str()];
        all.extend_from_slice(args);
        run_bosun(&self.config_dir, &all, "", &[]).await
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.bosun(args).await?;
        if !output.status.success() {
            anyhow::bail!(
                "bosun {args:?} failed ({:?}): {}\nstdout: {}\nserver log:\n{}",
                output.status.code(),
                stderr(&output),
                stdout(&output),
                self.server_log()
            );
        }
        Ok(stdout(&output))
    }

    /// Runs a command with `-o json` that must succeed; returns the parsed output. The flag
    /// goes first: words after `--` belong to a command run.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let text = self.ok(&all).await?;
        serde_json::from_str(&text).with_context(|| format!("bosun {args:?} printed {text}"))
    }
}
