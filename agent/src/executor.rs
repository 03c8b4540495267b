//! Running deliveries: the [`Executor`] trait, the [`ResultSink`] a run answers through, and
//! [`CommandExecutor`], the real handlers (`system.echo`, `commands.run`, `commands.cancel`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bosun_proto::agent::v1::{Delivery, Result as AgentResult};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use crate::journal::Journal;
use crate::protocol::{
    CancelCommand, CancelResult, CommandResult, CommandStatus, DEFAULT_EXECUTION_TIMEOUT_SECONDS,
    DEFAULT_OUTPUT_LIMIT_BYTES, DEFAULT_PLUGIN_TIMEOUT_SECONDS, FailureResult, INTERRUPTED_ERROR,
    PLUGIN_RUN_POWERSHELL_SCRIPT, PLUGIN_RUN_SHELL_SCRIPT, PluginResult, PluginSpec, RunCommand,
    TOPIC_COMMANDS_CANCEL, TOPIC_COMMANDS_RUN, TOPIC_ECHO, truncate_output,
};

/// Runs deliveries. The agent records a delivery, acknowledges it, then calls `handle` in a
/// task of its own; the run answers through `results`. If `handle` returns without a final
/// result, the agent completes it as `Failed`.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs one delivery to its end.
    async fn handle(&self, delivery: Delivery, results: ResultSink);

    /// The payload of the `Failed` result for a delivery whose run the agent was stopped in
    /// the middle of (found on start; it is not run again).
    fn interrupted_payload(&self, delivery: &Delivery) -> Vec<u8> {
        interrupted_payload(delivery)
    }
}

/// The default payload of an interrupted run: a [`CommandResult`] for `commands.run`, a
/// [`FailureResult`] for other topics.
pub fn interrupted_payload(delivery: &Delivery) -> Vec<u8> {
    let encoded = if delivery.topic == TOPIC_COMMANDS_RUN {
        let command_id = serde_json::from_slice::<serde_json::Value>(&delivery.payload)
            .ok()
            .and_then(|value| value.get("command_id")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        serde_json::to_vec(&CommandResult {
            command_id,
            status: CommandStatus::Failed,
            plugins: Vec::new(),
            error: Some(INTERRUPTED_ERROR.into()),
        })
    } else {
        serde_json::to_vec(&FailureResult::new(INTERRUPTED_ERROR))
    };
    encoded.unwrap_or_default()
}

/// Where a run sends its results: each is stored in the journal, then sent (and re-sent after
/// reconnects) until the server acknowledges it.
#[derive(Clone)]
pub struct ResultSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    journal: Arc<dyn Journal>,
    notify: Arc<Notify>,
    message_id: String,
    topic: String,
    trace_context: HashMap<String, String>,
    completed: AtomicBool,
    abort: CancellationToken,
}

impl std::fmt::Debug for ResultSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultSink")
            .field("message_id", &self.inner.message_id)
            .finish()
    }
}

impl ResultSink {
    /// A sink for the results of `delivery`: stored in `journal`, `notify` woken for each.
    /// `abort` fires when the agent stops and the run must end now.
    pub fn new(
        journal: Arc<dyn Journal>,
        notify: Arc<Notify>,
        delivery: &Delivery,
        abort: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(SinkInner {
                journal,
                notify,
                message_id: delivery.message_id.clone(),
                topic: delivery.topic.clone(),
                trace_context: delivery.trace_context.clone(),
                completed: AtomicBool::new(false),
                abort,
            }),
        }
    }

    /// The delivery this answers.
    pub fn message_id(&self) -> &str {
        &self.inner.message_id
    }

    /// Fires when the agent's shutdown grace has run out: stop the work now.
    pub fn abort_signal(&self) -> &CancellationToken {
        &self.inner.abort
    }

    /// Sends an intermediate result (e.g. `InProgress`).
    pub fn progress(&self, payload: Vec<u8>) -> Result<(), AgentError> {
        if self.is_complete() {
            return Ok(());
        }
        self.store(payload, false)
    }

    /// Sends the final result and ends the run; later results are ignored.
    pub fn complete(&self, payload: Vec<u8>) -> Result<(), AgentError> {
        if self.inner.completed.swap(true, Ordering::SeqCst) {
            tracing::warn!(message_id = %self.inner.message_id, "a second final result is ignored");
            return Ok(());
        }
        self.store(payload, true)
    }

    /// Whether the final result was sent.
    pub fn is_complete(&self) -> bool {
        self.inner.completed.load(Ordering::SeqCst)
    }

    fn store(&self, payload: Vec<u8>, final_result: bool) -> Result<(), AgentError> {
        let result = AgentResult {
            result_id: uuid::Uuid::new_v4().to_string(),
            message_id: self.inner.message_id.clone(),
            topic: self.inner.topic.clone(),
            payload,
            created_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            trace_context: self.inner.trace_context.clone(),
        };
        let stored = self.inner.journal.store_result(&result, final_result);
        if let Err(error) = &stored {
            tracing::error!(message_id = %self.inner.message_id, %error, "cannot store a result");
        }
        self.inner.notify.notify_one();
        stored
    }
}

/// The handlers Bosun ships: `system.echo`, `commands.run` (at most `max_concurrent_commands`
/// at once, each in its own process group), `commands.cancel`; any other topic is answered
/// `Failed`.
pub struct CommandExecutor {
    work_root: PathBuf,
    permits: Arc<Semaphore>,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl std::fmt::Debug for CommandExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandExecutor")
            .field("work_root", &self.work_root)
            .finish()
    }
}

/// Commands run at once, as SSM's `CommandWorkersLimit`.
pub const DEFAULT_COMMAND_WORKERS: usize = 5;

impl CommandExecutor {
    /// Commands get work directories under `work_root` (`<state dir>/work`).
    pub fn new(work_root: PathBuf, max_concurrent_commands: usize) -> Self {
        Self {
            work_root,
            permits: Arc::new(Semaphore::new(max_concurrent_commands.max(1))),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn run_command(&self, delivery: &Delivery, results: &ResultSink) {
        let command: RunCommand = match serde_json::from_slice(&delivery.payload) {
            Ok(command) => command,
            Err(error) => {
                let payload = CommandResult {
                    command_id: String::new(),
                    status: CommandStatus::Failed,
                    plugins: Vec::new(),
                    error: Some(format!("invalid commands.run payload: {error}")),
                };
                complete_json(results, &payload);
                return;
            }
        };
        let cancel = CancellationToken::new();
        self.running()
            .insert(command.command_id.clone(), cancel.clone());
        let final_result = self.run_registered(&command, results, &cancel).await;
        self.running().remove(&command.command_id);
        complete_json(results, &final_result);
    }

    async fn run_registered(
        &self,
        command: &RunCommand,
        results: &ResultSink,
        cancel: &CancellationToken,
    ) -> CommandResult {
        let abort = results.abort_signal().clone();
        let mut outcome = CommandResult {
            command_id: command.command_id.clone(),
            status: CommandStatus::InProgress,
            plugins: Vec::new(),
            error: None,
        };
        // Queued behind the workers: still cancellable.
        let _permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => {
                    outcome.status = CommandStatus::Failed;
                    outcome.error = Some("the agent is stopping".into());
                    return outcome;
                }
            },
            () = cancel.cancelled() => {
                outcome.status = CommandStatus::Cancelled;
                outcome.plugins = command.plugins.iter().map(skipped).collect();
                return outcome;
            }
            () = abort.cancelled() => {
                outcome.status = CommandStatus::Failed;
                outcome.error = Some("the agent stopped before the command started".into());
                return outcome;
            }
        };
        let execution_timeout = Duration::from_secs(
            command
                .execution_timeout_seconds
                .unwrap_or(DEFAULT_EXECUTION_TIMEOUT_SECONDS),
        );
        let deadline = Instant::now() + execution_timeout;
        let limit = command
            .output_limit_bytes
            .unwrap_or(DEFAULT_OUTPUT_LIMIT_BYTES);
        let command_dir = self.work_root.join(safe_name(&command.command_id));
        let mut stopped = false;
        for (index, plugin) in command.plugins.iter().enumerate() {
            if stopped {
                outcome.plugins.push(skipped(plugin));
                continue;
            }
            let mut running = skipped(plugin);
            running.status = CommandStatus::InProgress;
            running.started_at = Some(now_rfc3339());
            outcome.plugins.push(running);
            if let Ok(payload) = serde_json::to_vec(&outcome) {
                let _ = results.progress(payload);
            }
            let plugin_dir = command_dir.join(format!("{index}-{}", safe_name(&plugin.step)));
            let run = PluginRun {
                plugin,
                dir: &plugin_dir,
                limit,
                deadline,
                cancel,
                abort: &abort,
            };
            let mut result = run.run().await;
            result.started_at = outcome.plugins.last().and_then(|p| p.started_at.clone());
            stopped = matches!(
                result.status,
                CommandStatus::TimedOut | CommandStatus::Cancelled
            ) || abort.is_cancelled();
            if let Some(last) = outcome.plugins.last_mut() {
                *last = result;
            }
        }
        let _ = tokio::fs::remove_dir_all(&command_dir).await;
        let statuses: Vec<CommandStatus> = outcome.plugins.iter().map(|p| p.status).collect();
        outcome.status = if statuses.contains(&CommandStatus::Cancelled) {
            CommandStatus::Cancelled
        } else if statuses.contains(&CommandStatus::TimedOut) {
            CommandStatus::TimedOut
        } else if statuses.contains(&CommandStatus::Failed) {
            CommandStatus::Failed
        } else {
            CommandStatus::Success
        };
        outcome
    }

    fn cancel_command(&self, delivery: &Delivery, results: &ResultSink) {
        let payload = match serde_json::from_slice::<CancelCommand>(&delivery.payload) {
            Ok(cancel) => match self.running().get(&cancel.command_id) {
                Some(token) => {
                    token.cancel();
                    CancelResult {
                        command_id: cancel.command_id,
                        status: CommandStatus::Success,
                        error: None,
                    }
                }
                None => CancelResult {
                    error: Some(format!(
                        "command {} is not queued or running on this node",
                        cancel.command_id
                    )),
                    command_id: cancel.command_id,
                    status: CommandStatus::Failed,
                },
            },
            Err(error) => CancelResult {
                command_id: String::new(),
                status: CommandStatus::Failed,
                error: Some(format!("invalid commands.cancel payload: {error}")),
            },
        };
        complete_json(results, &payload);
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    async fn handle(&self, delivery: Delivery, results: ResultSink) {
        match delivery.topic.as_str() {
            TOPIC_ECHO => {
                let _ = results.complete(delivery.payload.clone());
            }
            TOPIC_COMMANDS_RUN => self.run_command(&delivery, &results).await,
            TOPIC_COMMANDS_CANCEL => self.cancel_command(&delivery, &results),
            topic => complete_json(
                &results,
                &FailureResult::new(format!("unsupported topic {topic}")),
            ),
        }
    }
}

fn complete_json<T: serde::Serialize>(results: &ResultSink, payload: &T) {
    match serde_json::to_vec(payload) {
        Ok(bytes) => {
            let _ = results.complete(bytes);
        }
        Err(error) => tracing::error!(%error, "cannot encode a result"),
    }
}

fn skipped(plugin: &PluginSpec) -> PluginResult {
    PluginResult {
        name: plugin.name.clone(),
        step: plugin.step.clone(),
        status: CommandStatus::Skipped,
        response_code: -1,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        stdout_streamed: 0,
        stderr_streamed: 0,
        stream_truncated: false,
        error: None,
        started_at: None,
        ended_at: None,
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A file-name-safe rendering of an id from the network.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// Where `program` is on `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Output captured from one pipe.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    dropped: bool,
}

struct PluginRun<'a> {
    plugin: &'a PluginSpec,
    dir: &'a Path,
    limit: usize,
    deadline: Instant,
    cancel: &'a CancellationToken,
    abort: &'a CancellationToken,
}

enum Stop {
    Exited(std::process::ExitStatus),
    TimedOut,
    Cancelled,
    Aborted,
}

impl PluginRun<'_> {
    async fn run(&self) -> PluginResult {
        let mut result = skipped(self.plugin);
        result.status = CommandStatus::Failed;
        let (program, script_name) = match self.plugin.name.as_str() {
            PLUGIN_RUN_SHELL_SCRIPT => (PathBuf::from("sh"), "_script.sh"),
            PLUGIN_RUN_POWERSHELL_SCRIPT => match find_on_path("pwsh") {
                Some(pwsh) => (pwsh, "_script.ps1"),
                None => return self.failed(result, "pwsh not found"),
            },
            other => return self.failed(result, &format!("unsupported plugin {other}")),
        };
        if let Err(error) = crate::state::create_private_dir(self.dir) {
            return self.failed(
                result,
                &format!("cannot create the work directory: {error}"),
            );
        }
        let script_path = self.dir.join(script_name);
        let mut script = self.plugin.inputs.run_command.join("\n");
        script.push('\n');
        if let Err(error) = std::fs::write(&script_path, script) {
            return self.failed(result, &format!("cannot write the script: {error}"));
        }
        let mut process = tokio::process::Command::new(&program);
        if script_name.ends_with(".ps1") {
            process.args(["-NoProfile", "-NonInteractive", "-File"]);
        }
        let working_dir = match &self.plugin.inputs.working_directory {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.dir.to_path_buf(),
        };
        process
            .arg(&script_path)
            .current_dir(&working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match process.spawn() {
            Ok(child) => child,
            Err(error) => {
                return self.failed(
                    result,
                    &format!(
                        "cannot start {} in {}: {error}",
                        program.display(),
                        working_dir.display()
                    ),
                );
            }
        };
        let process_group = child.id();
        let stdout = Arc::new(Mutex::new(Capture::default()));
        let stderr = Arc::new(Mutex::new(Capture::default()));
        let readers = [
            child
                .stdout
                .take()
                .map(|pipe| tokio::spawn(read_pipe(pipe, stdout.clone(), self.limit))),
            child
                .stderr
                .take()
                .map(|pipe| tokio::spawn(read_pipe(pipe, stderr.clone(), self.limit))),
        ];
        let plugin_timeout = Duration::from_secs(
            self.plugin
                .inputs
                .timeout_seconds
                .unwrap_or(DEFAULT_PLUGIN_TIMEOUT_SECONDS),
        );
        let deadline = self.deadline.min(Instant::now() + plugin_timeout);
        let stop = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => Stop::Exited(status),
                Err(error) => return self.failed(result, &format!("cannot wait for the script: {error}")),
            },
            () = tokio::time::sleep_until(deadline) => Stop::TimedOut,
            () = self.cancel.cancelled() => Stop::Cancelled,
            () = self.abort.cancelled() => Stop::Aborted,
        };
        if !matches!(stop, Stop::Exited(_)) {
            kill_group(process_group);
            let _ = child.wait().await;
        }
        // Output ends when every holder of the pipes exits; a background process started by
        // the script may keep them open, so stop reading after a short wait (it is not killed:
        // starting a daemon is a fair thing for a script to do).
        for reader in readers.into_iter().flatten() {
            let abort_handle = reader.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), reader)
                .await
                .is_err()
            {
                abort_handle.abort();
            }
        }
        let take = |capture: &Arc<Mutex<Capture>>| {
            let capture = capture
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            truncate_output(&capture.bytes, self.limit, capture.dropped)
        };
        (result.stdout, result.stdout_truncated) = take(&stdout);
        (result.stderr, result.stderr_truncated) = take(&stderr);
        result.ended_at = Some(now_rfc3339());
        match stop {
            Stop::Exited(status) => {
                result.response_code = status.code().unwrap_or(-1);
                result.status = if status.success() {
                    CommandStatus::Success
                } else {
                    CommandStatus::Failed
                };
            }
            Stop::TimedOut => {
                result.status = CommandStatus::TimedOut;
                result.error = Some("timed out; the process group was killed".into());
            }
            Stop::Cancelled => {
                result.status = CommandStatus::Cancelled;
                result.error = Some("cancelled; the process group was killed".into());
            }
            Stop::Aborted => {
                result.status = CommandStatus::Failed;
                result.error = Some("the agent stopped; the process group was killed".into());
            }
        }
        result
    }

    fn failed(&self, mut result: PluginResult, error: &str) -> PluginResult {
        result.status = CommandStatus::Failed;
        result.error = Some(error.to_string());
        result.ended_at = Some(now_rfc3339());
        result
    }
}

/// Reads a pipe to its end, keeping a little more than `limit` bytes (enough to cut at a
/// character boundary and to know something was cut).
async fn read_pipe<R: tokio::io::AsyncRead + Unpin>(
    mut pipe: R,
    capture: Arc<Mutex<Capture>>,
    limit: usize,
) {
    let keep = limit.saturating_add(4);
    let mut buffer = [0u8; 8192];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let mut capture = capture
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let room = keep.saturating_sub(capture.bytes.len());
                let taken = read.min(room);
                capture.bytes.extend_from_slice(&buffer[..taken]);
                if taken < read {
                    capture.dropped = true;
                }
            }
        }
    }
}

fn kill_group(process_group: Option<u32>) {
    let Some(id) = process_group.and_then(|id| i32::try_from(id).ok()) else {
        return;
    };
    let killed = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(id),
        nix::sys::signal::Signal::SIGKILL,
    );
    if let Err(error) = killed
        && error != nix::errno::Errno::ESRCH
    {
        tracing::warn!(process_group = id, %error, "cannot kill the process group");
    }
}
