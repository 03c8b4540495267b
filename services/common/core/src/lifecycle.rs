//! Ordered shutdown and named tasks.
//!
//! One `CancellationToken` is the shutdown signal for a process. Servers stop accepting when
//! it fires and drain within a deadline; workers stop next; telemetry flushes last (the
//! caller's `main` owns that order). A critical task that ends or fails cancels the token, so
//! a dead queue worker takes the process down instead of leaving it half alive.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
            _ = terminate => tracing::info!("SIGTERM received, shutting down"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    });
}

/// The tasks of one process, each with a name, tied to one shutdown token.
#[derive(Clone)]
pub struct Tasks {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Self {
        Tasks {
            shutdown,
            tracker: TaskTracker::new(),
        }
    }

    /// The shutdown token these tasks watch.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Spawns a task that must live as long as the process: when it returns (or fails)
    /// before shutdown, the whole process shuts down.
    pub fn spawn_critical<F>(&self, name: &'static str, future: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let result = future.await;
            if shutdown.is_cancelled() {
                if let Err(error) = result {
                    tracing::warn!(task = name, error = %format!("{error:#}"), "task failed during shutdown");
                }
                return;
            }
            match result {
                Ok(()) => tracing::error!(task = name, "critical task ended early; shutting down"),
                Err(error) => {
                    tracing::error!(task = name, error = %format!("{error:#}"), "critical task failed; shutting down")
                }
            }
            shutdown.cancel();
        });
    }

    /// Spawns a task whose end is only logged.
    pub fn spawn<F>(&self, name: &'static str, future: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tracker.spawn(async move {
            if let Err(error) = future.await {
                tracing::warn!(task = name, error = %format!("{error:#}"), "task failed");
            }
        });
    }

    /// Waits for every task to finish after shutdown, up to `deadline`. Returns false if
    /// some were still running at the deadline.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_critical_task_cancels_the_process() {
        let token = CancellationToken::new();
        let tasks = Tasks::new(token.clone());
        tasks.spawn_critical("doomed", async { anyhow::bail!("queue connection lost") });
        tokio::time::timeout(Duration::from_secs(2), token.cancelled())
            .await
            .expect("the token is cancelled by the failed task");
        assert!(tasks.wait(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn wait_reports_tasks_that_overrun_the_deadline() {
        let token = CancellationToken::new();
        let tasks = Tasks::new(token.clone());
        tasks.spawn("sleeper", async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        });
        token.cancel();
        assert!(!tasks.wait(Duration::from_millis(50)).await);
    }
}
