//! The JSON payloads of the `commands.*` and `system.*` topics: what the Run Command service
//! sends in a `Delivery` and what the agent answers in a `Result`. The service mirrors these types.

use serde::{Deserialize, Serialize};

/// Topic of an echo request: the agent answers one `Result` with the same payload.
pub const TOPIC_ECHO: &str = "system.echo";
/// Topic of a command to run ([`RunCommand`]); answered by [`CommandResult`]s.
pub const TOPIC_COMMANDS_RUN: &str = "commands.run";
/// Topic of a cancellation ([`CancelCommand`]); answered by a [`CancelResult`].
pub const TOPIC_COMMANDS_CANCEL: &str = "commands.cancel";
/// Topic of the intermediate results that carry output while a `commands.run` runs
/// ([`OutputChunk`]); it is never the topic of a delivery.
pub const TOPIC_COMMANDS_OUTPUT: &str = "commands.output";

/// The shell-script plugin (`sh`).
pub const PLUGIN_RUN_SHELL_SCRIPT: &str = "aws:runShellScript";
/// The PowerShell plugin (`pwsh`).
pub const PLUGIN_RUN_POWERSHELL_SCRIPT: &str = "aws:runPowerShellScript";

/// Stdout kept inline per plugin unless the command says otherwise (`GetCommandInvocation`
/// keeps 24,000 characters).
pub const DEFAULT_OUTPUT_LIMIT_BYTES: usize = 24_000;
/// Stderr kept inline per plugin unless the command says otherwise (SSM keeps 8,000).
pub const DEFAULT_STDERR_LIMIT_BYTES: usize = 8_000;
/// Bytes of each of stdout and stderr per plugin streamed to the control plane (and so kept
/// in full in the object store) unless the command says otherwise; past it the output is
/// dropped and the result says so.
pub const DEFAULT_STREAM_LIMIT_BYTES: u64 = 32 * 1024 * 1024;
/// Largest `data` of one [`OutputChunk`].
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// Execution timeout of a whole command when the command gives none (SSM's default).
pub const DEFAULT_EXECUTION_TIMEOUT_SECONDS: u64 = 3_600;
/// Timeout of one plugin when its inputs give none (SSM's default for runShellScript).
pub const DEFAULT_PLUGIN_TIMEOUT_SECONDS: u64 = 3_600;

/// The error of a run the agent was stopped in the middle of; it is not run again.
pub const INTERRUPTED_ERROR: &str = "interrupted: the agent stopped while this ran";

/// Payload of `commands.run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCommand {
    /// The command this invocation belongs to; results and cancellations name it.
    pub command_id: String,
    /// Run in order. A plugin that fails does not stop the next (SSM's default); a timeout or
    /// a cancellation stops the command and the plugins not started are `Skipped`.
    pub plugins: Vec<PluginSpec>,
    /// The whole command's limit; past it the running plugin is killed and the command is
    /// `TimedOut`. Default [`DEFAULT_EXECUTION_TIMEOUT_SECONDS`].
    #[serde(default)]
    pub execution_timeout_seconds: Option<u64>,
    /// Bytes of stdout kept inline per plugin. Default [`DEFAULT_OUTPUT_LIMIT_BYTES`].
    #[serde(default)]
    pub output_limit_bytes: Option<usize>,
    /// Bytes of stderr kept inline per plugin. Default [`DEFAULT_STDERR_LIMIT_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_limit_bytes: Option<usize>,
    /// Bytes of each of stdout and stderr per plugin streamed as [`OutputChunk`]s; 0 streams
    /// nothing. Default [`DEFAULT_STREAM_LIMIT_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_limit_bytes: Option<u64>,
}

/// One step of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// [`PLUGIN_RUN_SHELL_SCRIPT`] or [`PLUGIN_RUN_POWERSHELL_SCRIPT`].
    pub name: String,
    /// The step name from the document (`mainSteps[].name`, or the plugin name for 1.2).
    pub step: String,
    /// The plugin's inputs.
    pub inputs: PluginInputs,
}

/// Inputs of the script plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInputs {
    /// Script lines, joined with newlines into one script file.
    #[serde(rename = "runCommand")]
    pub run_command: Vec<String>,
    /// Directory the script runs in; default: the command's own work directory.
    #[serde(
        rename = "workingDirectory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_directory: Option<String>,
    /// This plugin's limit; default [`DEFAULT_PLUGIN_TIMEOUT_SECONDS`].
    #[serde(
        rename = "timeoutSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_seconds: Option<u64>,
}

/// Status of a command or of one of its plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Started and not finished (sent when each plugin starts).
    InProgress,
    /// Every plugin exited 0.
    Success,
    /// A plugin exited non-zero or could not start, or the agent stopped while it ran.
    Failed,
    /// The command or plugin limit passed; the process group was killed.
    TimedOut,
    /// Cancelled by `commands.cancel`; the process group was killed.
    Cancelled,
    /// A plugin not run because an earlier one timed out or was cancelled.
    Skipped,
    /// The plugin cannot run on this node (e.g. `aws:runPowerShellScript` without `pwsh`);
    /// nothing was started. The service reports the invocation `InvalidPlatform`.
    InvalidPlatform,
}

/// Payload of a `commands.run` result: sent `InProgress` as each plugin starts, then once final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command of the delivery (empty if its payload could not be read).
    pub command_id: String,
    /// `InProgress` until the last result, then `Success`, `Failed`, `TimedOut`, `Cancelled`
    /// or `InvalidPlatform` (no plugin could run on this node).
    pub status: CommandStatus,
    /// The plugins started so far, in order (all of them in the final result).
    pub plugins: Vec<PluginResult>,
    /// Why the command failed as a whole (bad payload, interrupted run), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Outcome of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginResult {
    /// Plugin name, as in the request.
    pub name: String,
    /// Step name, as in the request.
    pub step: String,
    /// The plugin's status.
    pub status: CommandStatus,
    /// Exit code of the script; -1 when killed (timeout, cancel) or never started.
    pub response_code: i32,
    /// At most `output_limit_bytes` of stdout, cut at a UTF-8 character boundary; invalid
    /// UTF-8 is replaced by U+FFFD.
    pub stdout: String,
    /// As `stdout`, for stderr.
    pub stderr: String,
    /// Whether stdout was longer than what is kept.
    pub stdout_truncated: bool,
    /// Whether stderr was longer than what is kept.
    pub stderr_truncated: bool,
    /// Bytes of stdout sent in [`OutputChunk`]s (offsets `0..stdout_streamed`): the server has
    /// the full stdout when it holds chunks covering them.
    #[serde(default)]
    pub stdout_streamed: u64,
    /// As `stdout_streamed`, for stderr.
    #[serde(default)]
    pub stderr_streamed: u64,
    /// Whether stdout or stderr went past the command's `stream_limit_bytes`, so the streamed
    /// output is not all of it.
    #[serde(default)]
    pub stream_truncated: bool,
    /// Why the plugin could not run or was stopped (`aws:runPowerShellScript needs pwsh, ...`,
    /// `unsupported plugin ...`, `workingDirectory ... does not exist ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 UTC; absent for a skipped plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 UTC; absent while running or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// Which output of a plugin a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Payload of a `commands.output` result: bytes of a plugin's output, sent while it runs.
/// Chunks of one stream do not overlap and together cover `0..<streamed>` of the final
/// [`PluginResult`]; they may arrive more than once and out of order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub command_id: String,
    /// Index of the plugin in [`RunCommand::plugins`].
    pub plugin_index: u32,
    /// The plugin's step name.
    pub step: String,
    pub stream: OutputStream,
    /// Byte offset of `data` in the stream.
    pub offset: u64,
    /// At most [`MAX_CHUNK_BYTES`] bytes, base64 (standard alphabet, padded) in JSON.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Payload of `commands.cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelCommand {
    /// The command to cancel.
    pub command_id: String,
}

/// Payload of the result of `commands.cancel`. The cancelled command's own final result says
/// `Cancelled` separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelResult {
    /// The command asked to cancel.
    pub command_id: String,
    /// `Success` when the command was queued or running here and is being stopped, `Failed`
    /// when it was not (already finished or never delivered).
    pub status: CommandStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Payload of a `Failed` result to a delivery the agent cannot handle: an unknown topic,
/// an expired delivery, or a non-command run that was interrupted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureResult {
    /// Always `Failed`.
    pub status: CommandStatus,
    /// E.g. `unsupported topic inventory.collect`.
    pub error: String,
}

impl FailureResult {
    /// A failure with this error.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            status: CommandStatus::Failed,
            error: error.into(),
        }
    }
}

/// Keeps at most `limit` bytes of captured output as text, cut at a character boundary.
/// `bytes` is what was captured (possibly more than `limit`), `dropped` whether the capture
/// already left some out. Returns the text and whether anything was left out.
pub fn truncate_output(bytes: &[u8], limit: usize, dropped: bool) -> (String, bool) {
    let mut truncated = dropped || bytes.len() > limit;
    let mut kept = &bytes[..bytes.len().min(limit)];
    // A cut through a multi-byte character: drop the partial character.
    if truncated
        && let Err(error) = std::str::from_utf8(kept)
        && error.error_len().is_none()
    {
        kept = &kept[..error.valid_up_to()];
    }
    let mut text = String::from_utf8_lossy(kept).into_owned();
    if text.len() > limit {
        // Replacement characters (3 bytes each) made it longer than the limit.
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        truncated = true;
    }
    (text, truncated)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic
mod tests {
    use super::*;

    #[test]
    fn run_command_reads_the_documented_shape() {
        let json = r#"{"command_id":"c1","plugins":[{"name":"aws:runShellScript","step":"s",
            "inputs":{"runCommand":["echo hi"],"workingDirectory":"/tmp","timeoutSeconds":5}}],
            "execution_timeout_seconds":10,"output_limit_bytes":100}"#;
        let command: RunCommand = serde_json::from_str(json).unwrap();
        assert_eq!(command.plugins[0].inputs.timeout_seconds, Some(5));
        assert_eq!(command.output_limit_bytes, Some(100));
    }

    #[test]
    fn truncation_cuts_at_a_character_boundary_and_says_so() {
        let text = "héllo".as_bytes(); // h, é (2 bytes), l, l, o
        let (kept, truncated) = truncate_output(text, 2, false);
        assert_eq!(kept, "h");
        assert!(truncated);
        let (kept, truncated) = truncate_output(text, 100, false);
        assert_eq!(kept, "héllo");
        assert!(!truncated);
        let (kept, truncated) = truncate_output(&text[..3], 3, true);
        assert_eq!(kept, "hé");
        assert!(truncated);
    }
}
