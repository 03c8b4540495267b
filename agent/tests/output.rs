//! The output of `commands.run`: streamed as `commands.output` chunks while plugins run
//! (contiguous offsets, exact bytes, the stream limit), kept inline up to the stdout and stderr
//! limits, journaled before the final result; and `aws:runPowerShellScript` without `pwsh`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bosun_agent::protocol::{
    CommandResult, CommandStatus, MAX_CHUNK_BYTES, OutputChunk, OutputStream,
    TOPIC_COMMANDS_OUTPUT, TOPIC_COMMANDS_RUN,
};
use bosun_agent::{
    CommandExecutor, Executor, FileJournal, Journal, JournalLimits, MemoryJournal, ResultSink,
};
use bosun_proto::agent::v1::Result as AgentResult;
use common::delivery;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Harness {
    executor: Arc<CommandExecutor>,
    journal: Arc<dyn Journal>,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

/// A result read back: a chunk or a `commands.run` result.
#[derive(Debug)]
enum Answer {
    Chunk(OutputChunk),
    Run(CommandResult),
}

impl Harness {
    fn new() -> Self {
        Self::with_journal(|_| Arc::new(MemoryJournal::new()))
    }

    fn with_journal(journal: impl FnOnce(&std::path::Path) -> Arc<dyn Journal>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Self {
            executor: Arc::new(CommandExecutor::new(path.join("work"), 5)),
            journal: journal(&path),
            _dir: dir,
            dir: path,
        }
    }

    /// Runs `command` as delivery `id`; returns every result it stored, in journal order.
    async fn run(&self, id: &str, command: Value) -> Vec<Answer> {
        let delivery = delivery(id, TOPIC_COMMANDS_RUN, command);
        let sink = ResultSink::new(
            self.journal.clone(),
            Arc::new(Notify::new()),
            &delivery,
            CancellationToken::new(),
        );
        self.executor.handle(delivery, sink).await;
        answers(&self.journal.pending_results(), id)
    }
}

fn answers(results: &[AgentResult], message_id: &str) -> Vec<Answer> {
    results
        .iter()
        .filter(|result| result.message_id == message_id)
        .map(|result| match result.topic.as_str() {
            TOPIC_COMMANDS_OUTPUT => {
                Answer::Chunk(serde_json::from_slice(&result.payload).unwrap())
            }
            TOPIC_COMMANDS_RUN => Answer::Run(serde_json::from_slice(&result.payload).unwrap()),
            other => panic!("unexpected topic {other}"),
        })
        .collect()
}

fn final_result(answers: &[Answer]) -> &CommandResult {
    match answers.last() {
        Some(Answer::Run(result)) if result.status != CommandStatus::InProgress => result,
        other => panic!("the last answer is not a final result: {other:?}"),
    }
}

/// The bytes of one stream, checking its chunks are in order, contiguous from 0, not empty,
/// at most `MAX_CHUNK_BYTES`, and all name the command and step.
fn reassemble(answers: &[Answer], plugin_index: u32, stream: OutputStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    for answer in answers {
        let Answer::Chunk(chunk) = answer else {
            continue;
        };
        if chunk.plugin_index != plugin_index || chunk.stream != stream {
            continue;
        }
        assert_eq!(chunk.offset, bytes.len() as u64, "contiguous offsets");
        assert!(!chunk.data.is_empty());
        assert!(chunk.data.len() <= MAX_CHUNK_BYTES);
        assert_eq!(chunk.command_id, "c1");
        bytes.extend_from_slice(&chunk.data);
    }
    bytes
}

fn shell(step: &str, lines: &[&str]) -> Value {
    json!({"name": "aws:runShellScript", "step": step, "inputs": {"runCommand": lines}})
}

#[tokio::test]
async fn large_binary_output_is_streamed_exactly_in_contiguous_chunks() {
    let harness = Harness::new();
    let data = harness.dir.join("data");
    // 300 KB of random bytes: not UTF-8, several full chunks and a partial one.
    let answers = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                shell("small", &["printf 'small'", "printf 'e' >&2"]),
                shell("big", &[
                    &format!("head -c 300000 /dev/urandom > {}", data.display()),
                    &format!("cat {}", data.display()),
                    &format!("cat {} >&2", data.display()),
                ]),
            ]}),
        )
        .await;
    let expected = std::fs::read(&data).unwrap();
    assert_eq!(expected.len(), 300_000);
    assert!(std::str::from_utf8(&expected).is_err(), "not UTF-8");

    let done = final_result(&answers);
    assert_eq!(done.status, CommandStatus::Success);
    assert_eq!(reassemble(&answers, 0, OutputStream::Stdout), b"small");
    assert_eq!(reassemble(&answers, 0, OutputStream::Stderr), b"e");
    assert_eq!(done.plugins[0].stdout_streamed, 5);
    assert_eq!(done.plugins[0].stderr_streamed, 1);
    assert!(!done.plugins[0].stream_truncated);

    let stdout = reassemble(&answers, 1, OutputStream::Stdout);
    let stderr = reassemble(&answers, 1, OutputStream::Stderr);
    assert!(stdout == expected, "stdout reassembles to the exact bytes");
    assert!(stderr == expected, "stderr reassembles to the exact bytes");
    let big = &done.plugins[1];
    assert_eq!(big.stdout_streamed, 300_000);
    assert_eq!(big.stderr_streamed, 300_000);
    assert!(!big.stream_truncated);
    assert!(big.stdout_truncated && big.stderr_truncated);
    assert!(big.stdout.len() <= 24_000);
    assert!(big.stderr.len() <= 8_000);
    // Full chunks while the output flows: 300,000 bytes take at least 5 chunks per stream.
    let chunks = answers
        .iter()
        .filter(|a| matches!(a, Answer::Chunk(c) if c.plugin_index == 1))
        .count();
    assert!(chunks >= 10, "{chunks} chunks");
}

#[tokio::test]
async fn chunks_come_before_the_result_that_follows_them() {
    let harness = Harness::new();
    let answers = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                shell("first", &["echo one", "echo two >&2"]),
                shell("second", &["echo three"]),
            ]}),
        )
        .await;
    // InProgress(first), chunks of first, InProgress(second), chunks of second, final.
    let kinds: Vec<String> = answers
        .iter()
        .map(|answer| match answer {
            Answer::Chunk(chunk) => {
                format!("chunk {} {}", chunk.plugin_index, chunk.stream.as_str())
            }
            Answer::Run(result) => format!("{:?} {}", result.status, result.plugins.len()),
        })
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert_eq!(kinds[0], "InProgress 1");
    assert!(
        position("chunk 0 stdout") < position("InProgress 2"),
        "{kinds:?}"
    );
    assert!(
        position("chunk 0 stderr") < position("InProgress 2"),
        "{kinds:?}"
    );
    assert!(
        position("InProgress 2") < position("chunk 1 stdout"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last().unwrap(), "Success 2", "{kinds:?}");
    assert_eq!(kinds.len(), 6, "{kinds:?}");
}

#[tokio::test]
async fn streamed_output_is_journaled_on_disk_before_the_final_result() {
    let harness = Harness::with_journal(|dir| {
        Arc::new(FileJournal::open(&dir.join("state"), JournalLimits::default()).unwrap())
    });
    let answers = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                shell("s", &["head -c 100000 /dev/zero | tr '\\0' a"])]}),
        )
        .await;
    assert_eq!(final_result(&answers).status, CommandStatus::Success);
    // What a restarted agent would send: the same results, in the same order.
    let reopened = FileJournal::open(&harness.dir.join("state"), JournalLimits::default()).unwrap();
    let again = answers_of(&reopened);
    assert_eq!(again.len(), answers.len());
    assert_eq!(
        reassemble(&again, 0, OutputStream::Stdout),
        vec![b'a'; 100_000]
    );
    let done = final_result(&again);
    assert_eq!(done.plugins[0].stdout_streamed, 100_000);
}

fn answers_of(journal: &dyn Journal) -> Vec<Answer> {
    answers(&journal.pending_results(), "m1")
}

#[tokio::test]
async fn output_that_trickles_in_is_sent_while_the_plugin_runs() {
    let harness = Arc::new(Harness::new());
    let running = tokio::spawn({
        let harness = harness.clone();
        async move {
            harness
                .run(
                    "m1",
                    json!({"command_id": "c1", "plugins": [
                        shell("s", &["echo first", "sleep 4", "echo second"])]}),
                )
                .await
        }
    });
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        seen = reassemble(
            &answers_of(harness.journal.as_ref()),
            0,
            OutputStream::Stdout,
        );
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen, b"first\n",
        "the first line is sent before the script ends"
    );
    assert!(!running.is_finished());
    let answers = running.await.unwrap();
    assert_eq!(
        reassemble(&answers, 0, OutputStream::Stdout),
        b"first\nsecond\n"
    );
    assert_eq!(final_result(&answers).plugins[0].stdout_streamed, 13);
}

#[tokio::test]
async fn streaming_stops_at_the_stream_limit_and_says_so() {
    let harness = Harness::new();
    let answers = harness
        .run(
            "m1",
            json!({"command_id": "c1", "stream_limit_bytes": 100_000, "plugins": [
                shell("s", &["head -c 150000 /dev/zero | tr '\\0' a", "echo small >&2"])]}),
        )
        .await;
    let plugin = &final_result(&answers).plugins[0];
    assert_eq!(
        reassemble(&answers, 0, OutputStream::Stdout),
        vec![b'a'; 100_000]
    );
    assert_eq!(plugin.stdout_streamed, 100_000);
    assert_eq!(reassemble(&answers, 0, OutputStream::Stderr), b"small\n");
    assert_eq!(plugin.stderr_streamed, 6);
    assert!(plugin.stream_truncated);
    assert_eq!(plugin.status, CommandStatus::Success);

    // 0 streams nothing; the result still carries the inline output.
    let answers = harness
        .run(
            "m2",
            json!({"command_id": "c1", "stream_limit_bytes": 0, "plugins": [
                shell("s", &["echo hello"]), shell("quiet", &["true"])]}),
        )
        .await;
    assert!(!answers.iter().any(|a| matches!(a, Answer::Chunk(_))));
    let done = final_result(&answers);
    assert_eq!(done.plugins[0].stdout, "hello\n");
    assert_eq!(done.plugins[0].stdout_streamed, 0);
    assert!(done.plugins[0].stream_truncated);
    assert!(!done.plugins[1].stream_truncated, "nothing was left out");
}

#[tokio::test]
async fn stderr_is_kept_inline_to_8000_bytes_and_stdout_to_24000() {
    let harness = Harness::new();
    let answers = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                shell("s", &["head -c 30000 /dev/zero | tr '\\0' o",
                             "head -c 30000 /dev/zero | tr '\\0' e >&2"]),
                shell("fits", &["head -c 24000 /dev/zero | tr '\\0' o",
                                "head -c 8000 /dev/zero | tr '\\0' e >&2"]),
            ]}),
        )
        .await;
    let done = final_result(&answers);
    let over = &done.plugins[0];
    assert_eq!(over.stdout, "o".repeat(24_000));
    assert!(over.stdout_truncated);
    assert_eq!(over.stderr, "e".repeat(8_000));
    assert!(over.stderr_truncated);
    // The full output is still streamed.
    assert_eq!(over.stdout_streamed, 30_000);
    assert_eq!(over.stderr_streamed, 30_000);
    let fits = &done.plugins[1];
    assert_eq!(fits.stdout.len(), 24_000);
    assert!(!fits.stdout_truncated);
    assert_eq!(fits.stderr.len(), 8_000);
    assert!(!fits.stderr_truncated);
}

fn has_pwsh() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pwsh").is_file()))
}

fn powershell(step: &str, lines: &[&str]) -> Value {
    json!({"name": "aws:runPowerShellScript", "step": step, "inputs": {"runCommand": lines}})
}

#[tokio::test]
async fn powershell_without_pwsh_is_an_invalid_platform() {
    let harness = Harness::new();
    let answers = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                powershell("ps", &["Write-Output hi"]),
                powershell("ps2", &["Write-Output there"]),
            ]}),
        )
        .await;
    let done = final_result(&answers);
    if has_pwsh() {
        assert_eq!(done.status, CommandStatus::Success);
        assert_eq!(done.plugins[0].stdout, "hi\n");
        return;
    }
    assert_eq!(done.status, CommandStatus::InvalidPlatform);
    for plugin in &done.plugins {
        assert_eq!(plugin.status, CommandStatus::InvalidPlatform);
        assert_eq!(
            plugin.error.as_deref(),
            Some("aws:runPowerShellScript needs pwsh, which is not installed on this node")
        );
        assert_eq!(plugin.response_code, -1);
        assert!(plugin.started_at.is_none(), "never started");
        assert!(plugin.ended_at.is_some());
    }
    assert_eq!(answers.len(), 1, "no InProgress, no output: {answers:?}");

    // Mixed with a plugin that runs: the shell step runs, and the command is Failed, since
    // not all of it could run here.
    let answers = harness
        .run(
            "m2",
            json!({"command_id": "c1", "plugins": [
                powershell("ps", &["Write-Output hi"]),
                shell("sh", &["echo ran"]),
            ]}),
        )
        .await;
    let done = final_result(&answers);
    assert_eq!(done.status, CommandStatus::Failed);
    assert_eq!(done.plugins[0].status, CommandStatus::InvalidPlatform);
    assert_eq!(done.plugins[1].status, CommandStatus::Success);
    assert_eq!(done.plugins[1].stdout, "ran\n");
}
