//! `commands.run` and `commands.cancel` through `CommandExecutor`: success, exit codes, time-outs
//! that kill the whole process group, cancellation, output limits, unsupported plugins.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bosun_agent::{CommandExecutor, Executor, Journal, MemoryJournal, ResultSink};
use bosun_proto::agent::v1::Delivery;
use common::delivery;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Harness {
    executor: Arc<CommandExecutor>,
    journal: Arc<MemoryJournal>,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Self {
            executor: Arc::new(CommandExecutor::new(path.join("work"), 5)),
            journal: Arc::new(MemoryJournal::new()),
            _dir: dir,
            dir: path,
        }
    }

    async fn handle(&self, delivery: Delivery) {
        let sink = ResultSink::new(
            self.journal.clone(),
            Arc::new(Notify::new()),
            &delivery,
            CancellationToken::new(),
        );
        self.executor.handle(delivery, sink).await;
    }

    /// The payloads answering `message_id` on its own topic (not the `commands.output`
    /// chunks), in order.
    fn payloads(&self, message_id: &str) -> Vec<Value> {
        self.journal
            .pending_results()
            .into_iter()
            .filter(|result| result.message_id == message_id && result.topic != "commands.output")
            .map(|result| serde_json::from_slice(&result.payload).unwrap())
            .collect()
    }

    async fn run(&self, id: &str, command: Value) -> Value {
        self.handle(delivery(id, "commands.run", command)).await;
        self.payloads(id).pop().unwrap()
    }
}

fn shell(step: &str, lines: &[&str]) -> Value {
    json!({"name": "aws:runShellScript", "step": step, "inputs": {"runCommand": lines}})
}

#[tokio::test]
async fn a_successful_command_reports_progress_then_output() {
    let harness = Harness::new();
    harness
        .handle(delivery(
            "m1",
            "commands.run",
            json!({"command_id": "c1", "plugins": [
                shell("first", &["echo hello", "echo oops >&2"]),
                shell("second", &["pwd"]),
            ]}),
        ))
        .await;
    let payloads = harness.payloads("m1");
    assert_eq!(payloads.len(), 3, "{payloads:#?}");
    assert_eq!(payloads[0]["status"], "InProgress");
    assert_eq!(payloads[0]["plugins"][0]["status"], "InProgress");
    assert_eq!(payloads[1]["plugins"][1]["status"], "InProgress");
    let done = &payloads[2];
    assert_eq!(done["command_id"], "c1");
    assert_eq!(done["status"], "Success");
    let first = &done["plugins"][0];
    assert_eq!(first["name"], "aws:runShellScript");
    assert_eq!(first["step"], "first");
    assert_eq!(first["response_code"], 0);
    assert_eq!(first["stdout"], "hello\n");
    assert_eq!(first["stderr"], "oops\n");
    assert_eq!(first["stdout_truncated"], false);
    assert!(first["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(first["ended_at"].is_string());
    // The default working directory is the command's own, removed afterwards.
    let pwd = done["plugins"][1]["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    assert!(
        pwd.starts_with(harness.dir.join("work").to_str().unwrap()),
        "{pwd}"
    );
    assert!(!std::path::Path::new(&pwd).exists());
    assert!(harness.journal.unfinished_deliveries().is_empty());
}

#[tokio::test]
async fn a_failing_plugin_fails_the_command_and_the_next_still_runs() {
    let harness = Harness::new();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                shell("fails", &["false", "echo after", "exit 3"]),
                shell("runs", &["echo second"]),
            ]}),
        )
        .await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(done["plugins"][0]["status"], "Failed");
    assert_eq!(done["plugins"][0]["response_code"], 3);
    // Like SSM: no `-e`, the script goes on after a failing line.
    assert_eq!(done["plugins"][0]["stdout"], "after\n");
    assert_eq!(done["plugins"][1]["status"], "Success");
    assert_eq!(done["plugins"][1]["stdout"], "second\n");
}

fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie nobody reaped (no init in some containers) is dead too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let harness = Harness::new();
    let pid_file = harness.dir.join("pid");
    let started = std::time::Instant::now();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                {"name": "aws:runShellScript", "step": "hangs", "inputs": {
                    "runCommand": [format!("sleep 300 & echo $! > {}", pid_file.display()),
                                   "echo started", "wait"],
                    "timeoutSeconds": 1}},
                shell("never", &["echo never"]),
            ]}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(done["status"], "TimedOut");
    assert_eq!(done["plugins"][0]["status"], "TimedOut");
    assert_eq!(done["plugins"][0]["response_code"], -1);
    assert_eq!(done["plugins"][0]["stdout"], "started\n");
    assert_eq!(done["plugins"][1]["status"], "Skipped");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        process_gone(pid),
        "the background sleep {pid} was killed with its group"
    );
}

#[tokio::test]
async fn the_execution_timeout_bounds_the_whole_command() {
    let harness = Harness::new();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "execution_timeout_seconds": 1,
                   "plugins": [shell("s", &["sleep 30"])]}),
        )
        .await;
    assert_eq!(done["status"], "TimedOut");
}

#[tokio::test]
async fn the_execution_timeout_kills_background_children_too() {
    let harness = Harness::new();
    let pid_file = harness.dir.join("pid");
    let started = std::time::Instant::now();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "execution_timeout_seconds": 1, "plugins": [
                shell("hangs", &[&format!("sleep 300 & echo $! > {}", pid_file.display()),
                                 "wait"]),
                shell("never", &["echo never"]),
            ]}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(done["status"], "TimedOut");
    assert_eq!(done["plugins"][0]["status"], "TimedOut");
    assert_eq!(done["plugins"][1]["status"], "Skipped");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(process_gone(pid), "the background sleep {pid} was killed");
}

#[tokio::test]
async fn the_lines_run_as_one_script_in_the_working_directory() {
    let harness = Harness::new();
    let dir = harness.dir.join("here");
    std::fs::create_dir_all(&dir).unwrap();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                {"name": "aws:runShellScript", "step": "s", "inputs": {
                    "runCommand": ["x=kept", "pwd", "cd /", "echo $x; pwd"],
                    "workingDirectory": dir.to_str().unwrap(),
                    "timeoutSeconds": 30}}]}),
        )
        .await;
    assert_eq!(done["status"], "Success");
    // One shell: a variable and a `cd` carry over from line to line.
    assert_eq!(
        done["plugins"][0]["stdout"],
        format!("{}\nkept\n/\n", dir.display())
    );
}

#[tokio::test]
async fn a_missing_working_directory_fails_the_plugin_clearly() {
    let harness = Harness::new();
    let missing = harness.dir.join("missing");
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                {"name": "aws:runShellScript", "step": "s", "inputs": {
                    "runCommand": ["echo never"],
                    "workingDirectory": missing.to_str().unwrap()}},
                shell("next", &["echo next"]),
            ]}),
        )
        .await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(done["plugins"][0]["status"], "Failed");
    assert_eq!(done["plugins"][0]["response_code"], -1);
    assert_eq!(
        done["plugins"][0]["error"],
        format!(
            "workingDirectory {} does not exist or is not a directory",
            missing.display()
        )
    );
    assert_eq!(done["plugins"][1]["stdout"], "next\n");
}

#[tokio::test]
async fn cancel_kills_a_running_command() {
    let harness = Arc::new(Harness::new());
    let running = tokio::spawn({
        let harness = harness.clone();
        async move {
            harness
                .run(
                    "m1",
                    json!({"command_id": "c1", "plugins": [shell("s", &["sleep 30"])]}),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    harness
        .handle(delivery(
            "m2",
            "commands.cancel",
            json!({"command_id": "c1"}),
        ))
        .await;
    assert_eq!(
        harness.payloads("m2"),
        [json!({"command_id": "c1", "status": "Success"})]
    );
    let done = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done["status"], "Cancelled");
    assert_eq!(done["plugins"][0]["status"], "Cancelled");

    harness
        .handle(delivery(
            "m3",
            "commands.cancel",
            json!({"command_id": "c1"}),
        ))
        .await;
    let answer = harness.payloads("m3").pop().unwrap();
    assert_eq!(answer["status"], "Failed", "no longer running");
}

#[tokio::test]
async fn output_is_cut_at_the_limit_on_a_character_boundary_and_marked() {
    let harness = Harness::new();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "output_limit_bytes": 10, "stderr_limit_bytes": 12,
                   "plugins": [
                shell("s", &["printf 'ééééééé'", "head -c 100000 /dev/zero | tr '\\0' x >&2"])]}),
        )
        .await;
    let plugin = &done["plugins"][0];
    assert_eq!(plugin["stdout"], "ééééé"); // 10 bytes, whole characters
    assert_eq!(plugin["stdout_truncated"], true);
    assert_eq!(plugin["stderr"], "xxxxxxxxxxxx");
    assert_eq!(plugin["stderr_truncated"], true);
    assert_eq!(done["status"], "Success");
}

#[tokio::test]
async fn unsupported_plugins_and_bad_payloads_fail_clearly() {
    let harness = Harness::new();
    let done = harness
        .run(
            "m1",
            json!({"command_id": "c1", "plugins": [
                {"name": "aws:runDocument", "step": "s", "inputs": {"runCommand": []}}]}),
        )
        .await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(
        done["plugins"][0]["error"],
        "unsupported plugin aws:runDocument"
    );

    let has_pwsh = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pwsh").is_file()));
    let done = harness
        .run(
            "m2",
            json!({"command_id": "c2", "plugins": [
                {"name": "aws:runPowerShellScript", "step": "ps",
                 "inputs": {"runCommand": ["Write-Output hi"]}}]}),
        )
        .await;
    if has_pwsh {
        assert_eq!(done["plugins"][0]["stdout"], "hi\n");
    } else {
        assert_eq!(done["status"], "InvalidPlatform");
        assert_eq!(done["plugins"][0]["status"], "InvalidPlatform");
        assert_eq!(
            done["plugins"][0]["error"],
            "aws:runPowerShellScript needs pwsh, which is not installed on this node"
        );
    }

    harness
        .handle(delivery("m3", "commands.run", json!({"nope": 1})))
        .await;
    let answer = harness.payloads("m3").pop().unwrap();
    assert_eq!(answer["status"], "Failed");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid commands.run payload")
    );
}

#[tokio::test]
async fn at_most_five_commands_run_at_once() {
    let harness = Arc::new(Harness::new());
    let marker = harness.dir.join("concurrent");
    std::fs::create_dir_all(&marker).unwrap();
    let script = format!(
        "touch {dir}/$$; ls {dir} | wc -l >> {dir}/../counts; sleep 0.5; rm {dir}/$$",
        dir = marker.display()
    );
    let mut runs = Vec::new();
    for i in 0..8 {
        let harness = harness.clone();
        let command =
            json!({"command_id": format!("c{i}"), "plugins": [shell("s", &[script.as_str()])]});
        runs.push(tokio::spawn(async move {
            harness.run(&format!("m{i}"), command).await
        }));
    }
    for run in runs {
        assert_eq!(run.await.unwrap()["status"], "Success");
    }
    let counts = std::fs::read_to_string(harness.dir.join("counts")).unwrap();
    let max = counts
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max()
        .unwrap();
    assert!(max <= 5, "{counts}");
}
