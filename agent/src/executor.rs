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
    DEFAULT_OUTPUT_LIMIT_BYTES, DEFAULT_PLUGIN_TIMEOUT_SECONDS, DEFAULT_STDERR_LIMIT_BYTES,
    DEFAULT_STREAM_LIMIT_BYTES, FailureResult, INTERRUPTED_ERROR, MAX_CHUNK_BYTES, OutputChunk,
    OutputStream, PLUGIN_RUN_POWERSHELL_SCRIPT, PLUGIN_RUN_SHELL_SCRIPT, PluginResult, PluginSpec,
    RunCommand, TOPIC_COMMANDS_CANCEL, TOPIC_COMMANDS_OUTPUT, TOPIC_COMMANDS_RUN, TOPIC_ECHO,
    truncate_output,
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

    /// Sends an intermediate result (e.g. `InProgress`) on the delivery's topic. Ignored
    /// once the final result was sent.
    pub fn progress(&self, payload: Vec<u8>) -> Result<(), AgentError> {
        self.progress_on(&self.inner.topic, payload)
    }

    /// Sends an intermediate result on another `topic` (e.g. `commands.output` while a
    /// `commands.run` runs); it answers the same delivery (same `message_id`) and is stored and
    /// re-sent like any result, in order with the others. Ignored once the final result was
    /// sent.
    pub fn progress_on(&self, topic: &str, payload: Vec<u8>) -> Result<(), AgentError> {
        if self.is_complete() {
            return Ok(());
        }
        self.store(topic, payload, false)
    }

    /// Sends the final result and ends the run; later results are ignored.
    pub fn complete(&self, payload: Vec<u8>) -> Result<(), AgentError> {
        if self.inner.completed.swap(true, Ordering::SeqCst) {
            tracing::warn!(message_id = %self.inner.message_id, "a second final result is ignored");
            return Ok(());
        }
        self.store(&self.inner.topic, payload, true)
    }

    /// Whether the final result was sent.
    pub fn is_complete(&self) -> bool {
        self.inner.completed.load(Ordering::SeqCst)
    }

    fn store(&self, topic: &str, payload: Vec<u8>, final_result: bool) -> Result<(), AgentError> {
        let result = AgentResult {
            result_id: uuid::Uuid::new_v4().to_string(),
            message_id: self.inner.message_id.clone(),
            topic: topic.to_owned(),
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
        let limits = OutputLimits {
            stdout: command
                .output_limit_bytes
                .unwrap_or(DEFAULT_OUTPUT_LIMIT_BYTES),
            stderr: command
                .stderr_limit_bytes
                .unwrap_or(DEFAULT_STDERR_LIMIT_BYTES),
            stream: command
                .stream_limit_bytes
                .unwrap_or(DEFAULT_STREAM_LIMIT_BYTES),
        };
        let command_dir = self.work_root.join(safe_name(&command.command_id));
        let mut stopped = false;
        for (index, plugin) in command.plugins.iter().enumerate() {
            if stopped {
                outcome.plugins.push(skipped(plugin));
                continue;
            }
            // A plugin this node cannot run is not started, nor reported InProgress; like a
            // failure, it does not stop the next plugin.
            if let Some(unfit) = invalid_platform(plugin) {
                outcome.plugins.push(unfit);
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
                command_id: &command.command_id,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                plugin,
                dir: &plugin_dir,
                limits,
                deadline,
                cancel,
                abort: &abort,
                results,
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
        outcome.status = command_status(&outcome.plugins);
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

/// The status of a finished command from its plugins' statuses, first match wins:
/// 1. `Cancelled` if a plugin was cancelled, then `TimedOut` if one timed out: the command was
///    stopped, which is what the operator must see first (the plugins after it are `Skipped`).
/// 2. `InvalidPlatform` if every plugin that was to run (all but the `Skipped`) is
///    `InvalidPlatform`: nothing was started on this node, as when the service finds the node's
///    platform unfit; it is not an error and does not count against `MaxErrors`.
/// 3. `Failed` if a plugin failed, or if some plugins could not run on this platform while
///    others ran: the document did not do all it was asked to here.
/// 4. `Success` otherwise (every plugin exited 0, or there were none).
pub(crate) fn command_status(plugins: &[PluginResult]) -> CommandStatus {
    let has = |status| plugins.iter().any(|plugin| plugin.status == status);
    let mut to_run = plugins
        .iter()
        .filter(|plugin| plugin.status != CommandStatus::Skipped)
        .peekable();
    if has(CommandStatus::Cancelled) {
        CommandStatus::Cancelled
    } else if has(CommandStatus::TimedOut) {
        CommandStatus::TimedOut
    } else if to_run.peek().is_some()
        && to_run.all(|plugin| plugin.status == CommandStatus::InvalidPlatform)
    {
        CommandStatus::InvalidPlatform
    } else if has(CommandStatus::Failed) || has(CommandStatus::InvalidPlatform) {
        CommandStatus::Failed
    } else {
        CommandStatus::Success
    }
}

/// The result of a plugin that cannot run on this node (`aws:runPowerShellScript` without
/// `pwsh` on `PATH`), if it cannot.
fn invalid_platform(plugin: &PluginSpec) -> Option<PluginResult> {
    if plugin.name != PLUGIN_RUN_POWERSHELL_SCRIPT || find_on_path("pwsh").is_some() {
        return None;
    }
    let mut result = skipped(plugin);
    result.status = CommandStatus::InvalidPlatform;
    result.error = Some(format!(
        "{PLUGIN_RUN_POWERSHELL_SCRIPT} needs pwsh, which is not installed on this node"
    ));
    result.ended_at = Some(now_rfc3339());
    Some(result)
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

/// How long streamed output may wait in the agent before it is sent: output that trickles in
/// goes out at least this often (a full [`MAX_CHUNK_BYTES`] chunk goes at once). Each chunk is
/// an fsynced journal entry and a message, so this bounds the cost of a chatty script to one
/// chunk per stream per interval.
const OUTPUT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the output of an exited script is still read: a background process it started
/// may hold the pipes open (it is not killed: starting a daemon is a fair thing to do).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// The output limits of a command's plugins.
#[derive(Debug, Clone, Copy)]
struct OutputLimits {
    /// Stdout bytes kept inline.
    stdout: usize,
    /// Stderr bytes kept inline.
    stderr: usize,
    /// Bytes of each stream sent as [`OutputChunk`]s.
    stream: u64,
}

/// What was read from one pipe.
#[derive(Debug)]
struct PipeOutput {
    /// The start of the output, a little more than the inline limit.
    inline: Vec<u8>,
    /// Whether `inline` is not all of it.
    dropped: bool,
    /// Bytes sent in chunks (`0..streamed`).
    streamed: u64,
    /// Whether the chunks are not all of it.
    stream_truncated: bool,
}

impl PipeOutput {
    /// What is known when the reader was lost: nothing streamed that can be vouched for.
    fn lost() -> Self {
        Self {
            inline: Vec::new(),
            dropped: true,
            streamed: 0,
            stream_truncated: true,
        }
    }
}

struct PluginRun<'a> {
    command_id: &'a str,
    index: u32,
    plugin: &'a PluginSpec,
    dir: &'a Path,
    limits: OutputLimits,
    deadline: Instant,
    cancel: &'a CancellationToken,
    abort: &'a CancellationToken,
    results: &'a ResultSink,
}

enum Stop {
    Exited(std::process::ExitStatus),
    WaitFailed(std::io::Error),
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
                // Checked before the run (invalid_platform); pwsh went away since.
                None => {
                    return invalid_platform(self.plugin)
                        .unwrap_or_else(|| self.failed(result, "pwsh not found"));
                }
            },
            other => return self.failed(result, &format!("unsupported plugin {other}")),
        };
        let working_dir = match &self.plugin.inputs.working_directory {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if !dir.is_dir() {
                    return self.failed(
                        result,
                        &format!(
                            "workingDirectory {} does not exist or is not a directory",
                            dir.display()
                        ),
                    );
                }
                dir
            }
            _ => self.dir.to_path_buf(),
        };
        if let Err(error) = crate::state::create_private_dir(self.dir) {
            return self.failed(
                result,
                &format!("cannot create the work directory: {error}"),
            );
        }
        // All the lines make one script, run by one shell (SSM's `_script.sh`).
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
        let stop_reading = CancellationToken::new();
        let streamer = |stream| Streamer {
            sink: self.results.clone(),
            command_id: self.command_id.to_owned(),
            plugin_index: self.index,
            step: self.plugin.step.clone(),
            stream,
            limit: self.limits.stream,
            sent: 0,
            pending: Vec::new(),
            truncated: false,
        };
        let mut stdout_reader = child.stdout.take().map(|pipe| {
            tokio::spawn(read_pipe(
                pipe,
                self.limits.stdout,
                streamer(OutputStream::Stdout),
                stop_reading.clone(),
            ))
        });
        let mut stderr_reader = child.stderr.take().map(|pipe| {
            tokio::spawn(read_pipe(
                pipe,
                self.limits.stderr,
                streamer(OutputStream::Stderr),
                stop_reading.clone(),
            ))
        });
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
                Err(error) => Stop::WaitFailed(error),
            },
            () = tokio::time::sleep_until(deadline) => Stop::TimedOut,
            () = self.cancel.cancelled() => Stop::Cancelled,
            () = self.abort.cancelled() => Stop::Aborted,
        };
        if !matches!(stop, Stop::Exited(_)) {
            kill_group(process_group);
            let _ = child.wait().await;
        }
        // Every chunk is stored before the plugin's result: the readers end (flushing what
        // they hold) before this returns. Output ends when every holder of the pipes exits;
        // past OUTPUT_DRAIN the readers are told to stop.
        let drained_by = Instant::now() + OUTPUT_DRAIN;
        let mut outputs = Vec::with_capacity(2);
        for reader in [&mut stdout_reader, &mut stderr_reader] {
            let Some(handle) = reader else {
                outputs.push(PipeOutput::lost());
                continue;
            };
            let joined = match tokio::time::timeout_at(drained_by, &mut *handle).await {
                Ok(joined) => joined,
                Err(_) => {
                    stop_reading.cancel();
                    handle.await
                }
            };
            outputs.push(joined.unwrap_or_else(|_| PipeOutput::lost()));
        }
        let mut outputs = outputs.into_iter();
        let stdout = outputs.next().unwrap_or_else(PipeOutput::lost);
        let stderr = outputs.next().unwrap_or_else(PipeOutput::lost);
        (result.stdout, result.stdout_truncated) =
            truncate_output(&stdout.inline, self.limits.stdout, stdout.dropped);
        (result.stderr, result.stderr_truncated) =
            truncate_output(&stderr.inline, self.limits.stderr, stderr.dropped);
        result.stdout_streamed = stdout.streamed;
        result.stderr_streamed = stderr.streamed;
        result.stream_truncated = stdout.stream_truncated || stderr.stream_truncated;
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
            Stop::WaitFailed(error) => {
                result.status = CommandStatus::Failed;
                result.error = Some(format!(
                    "cannot wait for the script: {error}; the process group was killed"
                ));
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

/// Sends one stream of a plugin's output as [`OutputChunk`]s: holds at most
/// [`MAX_CHUNK_BYTES`], sends them when they fill a chunk or when told to flush, and nothing
/// past `limit` bytes.
struct Streamer {
    sink: ResultSink,
    command_id: String,
    plugin_index: u32,
    step: String,
    stream: OutputStream,
    limit: u64,
    /// Bytes stored as chunks: the next chunk's offset.
    sent: u64,
    /// Bytes not sent yet (at most `MAX_CHUNK_BYTES`).
    pending: Vec<u8>,
    /// Whether output was left out (past `limit`, or a chunk could not be stored).
    truncated: bool,
}

impl Streamer {
    /// Takes more output; sends every chunk it fills.
    fn push(&mut self, mut data: &[u8]) {
        let held = self.sent.saturating_add(self.pending.len() as u64);
        let room = usize::try_from(self.limit.saturating_sub(held)).unwrap_or(usize::MAX);
        if data.len() > room {
            self.truncated = true;
            data = &data[..room];
        }
        while !data.is_empty() {
            let take = (MAX_CHUNK_BYTES - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() >= MAX_CHUNK_BYTES {
                self.flush();
            }
        }
    }

    /// Whether output waits to be sent.
    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends what is held. If it cannot be stored, streaming stops here: the chunks stored
    /// still cover `0..sent` exactly, and the result says the stream is truncated.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let len = self.pending.len() as u64;
        let chunk = OutputChunk {
            command_id: self.command_id.clone(),
            plugin_index: self.plugin_index,
            step: self.step.clone(),
            stream: self.stream,
            offset: self.sent,
            data: std::mem::take(&mut self.pending),
        };
        let stored = serde_json::to_vec(&chunk)
            .map_err(|error| error.to_string())
            .and_then(|payload| {
                self.sink
                    .progress_on(TOPIC_COMMANDS_OUTPUT, payload)
                    .map_err(|error| error.to_string())
            });
        match stored {
            Ok(()) => {
                self.sent += len;
                // Keep the buffer's allocation for the next chunk.
                self.pending = chunk.data;
                self.pending.clear();
            }
            Err(error) => {
                tracing::warn!(
                    command_id = %self.command_id, stream = self.stream.as_str(), %error,
                    "cannot store an output chunk; the rest of this output is not streamed"
                );
                self.limit = self.sent;
                self.truncated = true;
            }
        }
    }
}

/// Reads a pipe to its end (or until `stop`), keeping a little more than `inline_limit`
/// bytes (enough to cut at a character boundary and to know something was cut) and
/// streaming the output through `streamer`, which it flushes at most
/// [`OUTPUT_FLUSH_INTERVAL`] after the oldest byte it holds arrived, and at the end.
async fn read_pipe<R: tokio::io::AsyncRead + Unpin>(
    mut pipe: R,
    inline_limit: usize,
    mut streamer: Streamer,
    stop: CancellationToken,
) -> PipeOutput {
    let keep = inline_limit.saturating_add(4);
    let mut inline = Vec::new();
    let mut dropped = false;
    let mut buffer = [0u8; 8192];
    let mut flush_at: Option<Instant> = None;
    loop {
        let read = tokio::select! {
            read = pipe.read(&mut buffer) => read,
            () = sleep_until_some(flush_at) => {
                streamer.flush();
                flush_at = None;
                continue;
            }
            () = stop.cancelled() => break,
        };
        let read = match read {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let room = keep.saturating_sub(inline.len());
        let taken = read.min(room);
        inline.extend_from_slice(&buffer[..taken]);
        if taken < read {
            dropped = true;
        }
        streamer.push(&buffer[..read]);
        flush_at = match flush_at {
            _ if !streamer.has_pending() => None,
            None => Some(Instant::now() + OUTPUT_FLUSH_INTERVAL),
            pending => pending,
        };
    }
    streamer.flush();
    PipeOutput {
        inline,
        dropped,
        streamed: streamer.sent,
        stream_truncated: streamer.truncated,
    }
}

/// Sleeps until `at`, or forever when it is `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(statuses: &[CommandStatus]) -> Vec<PluginResult> {
        statuses
            .iter()
            .map(|&status| {
                let mut plugin = skipped(&PluginSpec {
                    name: PLUGIN_RUN_SHELL_SCRIPT.into(),
                    step: "s".into(),
                    inputs: crate::protocol::PluginInputs {
                        run_command: Vec::new(),
                        working_directory: None,
                        timeout_seconds: None,
                    },
                });
                plugin.status = status;
                plugin
            })
            .collect()
    }

    #[test]
    fn the_command_status_follows_the_documented_precedence() {
        use CommandStatus::*;
        let cases = [
            (vec![], Success),
            (vec![Success, Success], Success),
            (vec![Success, Failed], Failed),
            (vec![InvalidPlatform], InvalidPlatform),
            (vec![InvalidPlatform, InvalidPlatform], InvalidPlatform),
            (vec![InvalidPlatform, Success], Failed),
            (vec![InvalidPlatform, Failed], Failed),
            (vec![Failed, TimedOut, Skipped], TimedOut),
            (vec![InvalidPlatform, TimedOut, Skipped], TimedOut),
            (vec![TimedOut, Cancelled], Cancelled),
            (vec![Cancelled, Skipped], Cancelled),
        ];
        for (statuses, expected) in cases {
            assert_eq!(command_status(&with(&statuses)), expected, "{statuses:?}");
        }
    }
}
