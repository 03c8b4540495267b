//! Real `bosun-agent` processes for end-to-end tests, and a TCP balancer that stands in for
//! the load balancer in front of gateway replicas.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::RwLock;

/// The `bosun-agent` binary built beside this test binary.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let bosun = crate::bosun_binary()?;
    let binary = bosun.with_file_name("bosun-agent");
    if !binary.exists() {
        bail!(
            "{} does not exist; build it first with `cargo build -p bosun-agent`",
            binary.display()
        );
    }
    Ok(binary)
}

/// Runs `bosun-agent register`; returns (exit success, stdout, stderr).
pub async fn register(
    server: &str,
    activation_id: &str,
    code: &str,
    state_dir: &Path,
) -> anyhow::Result<(bool, String, String)> {
    let mut child = Command::new(agent_binary()?)
        .args([
            "register",
            "--server",
            server,
            "--activation-id",
            activation_id,
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BOSUN_ACTIVATION_CODE", code)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawn bosun-agent register")?;
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

/// A running `bosun-agent run`, killed when dropped.
pub struct AgentProcess {
    child: Option<Child>,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts `bosun-agent run` on a registered state directory, against `server`.
    pub fn start(server: &str, state_dir: &Path) -> anyhow::Result<Self> {
        let log_dir = tempfile::tempdir()?;
        let log_path = log_dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(agent_binary()?)
            .args(["run", "--server", server])
            .arg("--state-dir")
            .arg(state_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn bosun-agent run")?;
        Ok(AgentProcess {
            child: Some(child),
            log_path,
            _log_dir: log_dir,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|child| child.id())
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the agent at once (SIGKILL), as a crash or power loss would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Waits up to `limit` for the agent to exit by itself; its status, or None if it runs on.
    pub async fn wait_exit(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let child = self.child.as_mut().context("agent already stopped")?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.child = None;
                Ok(Some(status))
            }
            Err(_) => Ok(None),
        }
    }

    /// SIGTERM, then the exit status within `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_ref().context("agent already stopped")?;
        let pid = child.id().context("agent has no pid")?;
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        match self.wait_exit(limit).await? {
            Some(status) => Ok(status),
            None => bail!(
                "agent did not exit within {limit:?} of SIGTERM:\n{}",
                self.log()
            ),
        }
    }
}

/// A TCP forwarder on 127.0.0.1: each connection goes to the first backend that accepts it,
/// like a load balancer in front of gateway replicas with health checks.
pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    /// The connections being forwarded, to cut them as a network failure would.
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(RwLock::new(backends));
        let shared = backends.clone();
        let open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let tracked = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let candidates = shared.read().await.clone();
                let forwarding = tokio::spawn(async move {
                    for backend in candidates {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
                let mut open = tracked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                open.retain(|handle| !handle.is_finished());
                open.push(forwarding.abort_handle());
            }
        });
        Ok(Balancer {
            addr,
            backends,
            open,
            task,
        })
    }

    /// Closes every connection it forwards now, as a network failure would (new connections
    /// are still accepted).
    pub fn cut_connections(&self) {
        let open = std::mem::take(
            &mut *self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in open {
            handle.abort();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the backends new connections go to.
    pub async fn set_backends(&self, backends: Vec<SocketAddr>) {
        *self.backends.write().await = backends;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
