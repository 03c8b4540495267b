//! Runs the real `bosun run` and `bosun command …` against a real all-in-one `bosun server`
//! (SQLite in a temporary data directory) whose own node agent runs real shell commands; and
//! `bosun run` against a fake CommandService, for what it sends and how it follows a command.

mod common;

use common::{stderr, stdout};

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

const ADMIN_PASSWORD: &str = "bosun-cli-commands-admin-password";

/// The all-in-one server with its own node's agent, and a CLI logged in to it.
type Server = common::RealServer;

/// What these tests ask of the server.
trait LocalNode {
    /// The id of the server's own node, once it is Online.
    async fn local_node(&self) -> anyhow::Result<String>;
}

impl LocalNode for Server {
    async fn local_node(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = self.json(&["node", "ls"]).await?;
            if let Some(node) = nodes["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|n| n["ping_status"] == "Online"))
                && let Some(id) = node["instance_id"].as_str()
            {
                return Ok(id.to_owned());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server's node was not online within 60 s: {nodes}\n{}",
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_a_command_on_the_servers_own_node() -> anyhow::Result<()> {
    let server = Server::start(ADMIN_PASSWORD, true).await?;
    let node = server.local_node().await?;

    // Success: the node's output inline, exit code 0.
    let printed = server
        .ok(&["run", "--targets", "InstanceIds=*", "--", "echo", "hello"])
        .await?;
    assert!(
        printed.contains(node.as_str()) && printed.contains(": Success, exit code 0\n"),
        "{printed}"
    );
    assert!(printed.contains("\n    hello\n"), "{printed}");
    // Off a terminal: plain progress lines, no carriage returns.
    assert!(
        printed.contains("1/1 finished: 1 done, 0 failed"),
        "{printed}"
    );
    assert!(!printed.contains('\r'), "{printed:?}");
    let summary = printed.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("command ") && summary.contains(": Success"),
        "{printed}"
    );
    let command_id = summary
        .trim_start_matches("command ")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();

    // Failure: stderr shown, exit code 1 with the outcome on stderr.
    let output = server
        .bosun(&[
            "run",
            "--instance-ids",
            &node,
            "--comment",
            "failing",
            "--",
            "echo oops >&2; exit 3",
        ])
        .await?;
    let printed = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{printed}\n{}",
        stderr(&output)
    );
    assert!(printed.contains(": Failed, exit code 3\n"), "{printed}");
    assert!(printed.contains("  stderr:\n    oops\n"), "{printed}");
    let message = stderr(&output);
    assert!(
        message.starts_with("error: command ") && message.contains("Failed"),
        "{message}"
    );

    // A document with parameters, as JSON.
    let outcome = server
        .json(&[
            "run",
            "--instance-ids",
            &node,
            "--doc",
            "AWS-RunShellScript",
            "--param",
            "commands=echo one",
            "--param",
            "commands=echo two",
        ])
        .await?;
    assert_eq!(outcome["command"]["status"], "Success", "{outcome}");
    assert_eq!(outcome["results"][0]["instance_id"], node.as_str());
    assert_eq!(outcome["results"][0]["steps"][0]["response_code"], 0);
    assert_eq!(
        outcome["results"][0]["steps"][0]["stdout"], "one\ntwo\n",
        "{outcome}"
    );

    // --no-wait returns the command at once; `command show` follows it up.
    let sent = server
        .json(&[
            "run",
            "--instance-ids",
            &node,
            "--no-wait",
            "--",
            "sleep 0.2; echo later",
        ])
        .await?;
    let later = sent["command_id"].as_str().unwrap_or_default().to_owned();
    // AWS-RunShellScript is the built-in Bosun-RunShellScript.
    assert_eq!(sent["document_name"], "Bosun-RunShellScript");
    assert_eq!(sent["parameters"]["commands"][0], "sleep 0.2; echo later");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = server.json(&["command", "show", &later]).await?;
        if shown["status"] == "Success" {
            assert_eq!(shown["invocations"][0]["instance_id"], node.as_str());
            assert_eq!(shown["invocations"][0]["status_details"], "Success");
            break;
        }
        if Instant::now() > deadline {
            bail!("command {later} did not succeed within 30 s: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let table = server.ok(&["command", "show", &later]).await?;
    assert!(
        table.contains("status:           Success (Success)"),
        "{table}"
    );
    assert!(table.contains(&format!("\n{node}")), "{table}");

    // The full output, raw.
    let output = server
        .ok(&["command", "output", &command_id, "--node", &node])
        .await?;
    assert_eq!(output, "hello\n");

    // The history, newest first, and its filters.
    let listed = server.json(&["command", "ls"]).await?;
    let ids: Vec<&str> = listed["commands"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["command_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 4, "{listed}");
    assert_eq!(ids[0], later);
    assert_eq!(ids[3], command_id);
    let failed = server
        .json(&["command", "ls", "--status", "Failed"])
        .await?;
    assert_eq!(
        failed["commands"].as_array().map(Vec::len),
        Some(1),
        "{failed}"
    );
    assert_eq!(failed["commands"][0]["comment"], "failing");
    let table = server.ok(&["command", "ls"]).await?;
    assert!(table.starts_with("ID "), "{table}");

    // Cancelling a command that ended is refused, and says why.
    let output = server.bosun(&["command", "cancel", &command_id]).await?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: failed precondition"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_command_is_cancelled_with_command_cancel() -> anyhow::Result<()> {
    let server = Server::start(ADMIN_PASSWORD, true).await?;
    let node = server.local_node().await?;
    let sent = server
        .json(&[
            "run",
            "--instance-ids",
            &node,
            "--no-wait",
            "--",
            "sleep 30",
        ])
        .await?;
    let id = sent["command_id"].as_str().unwrap_or_default().to_owned();
    let printed = server.ok(&["command", "cancel", &id]).await?;
    assert_eq!(printed, format!("cancelling command {id}\n"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = server.json(&["command", "show", &id]).await?;
        if shown["status"] == "Cancelled" {
            assert_eq!(shown["invocations"][0]["status_details"], "Cancelled");
            break;
        }
        if Instant::now() > deadline {
            bail!("command {id} was not cancelled within 30 s: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

// ---- against a fake CommandService ----

mod fake {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use bosun_proto::commands::v1::command_service_server::{CommandService, CommandServiceServer};
    use bosun_proto::commands::v1::*;
    use tonic::{Request, Response, Status};

    #[derive(Default)]
    pub struct State {
        pub sent: Vec<SendCommandRequest>,
        pub cancels: Vec<CancelCommandRequest>,
        pub outputs: Vec<GetCommandOutputRequest>,
        /// ListCommands calls so far: the command runs for three of them.
        pub polls: usize,
        /// Never finishes on its own (until cancelled).
        pub hold: bool,
        /// This ListCommands call (1-based) fails UNAVAILABLE, as during a server restart.
        pub fail_poll: Option<usize>,
    }

    #[derive(Clone, Default)]
    pub struct Fake {
        pub state: Arc<Mutex<State>>,
    }

    pub const ID: &str = "0190f0aa-0000-7000-8000-0000000000c1";

    impl Fake {
        pub fn routes(&self) -> tonic::service::Routes {
            tonic::service::Routes::new(CommandServiceServer::new(self.clone()))
        }

        fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, Status> {
            let mut state = self
                .state
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            Ok(f(&mut state))
        }

        /// (command status, details of mi-1, details of mi-2) at this point of the run.
        fn statuses(state: &State) -> (&'static str, &'static str, &'static str) {
            if !state.cancels.is_empty() {
                ("Cancelled", "Success", "Cancelled")
            } else if state.polls >= 3 && !state.hold {
                ("Success", "Success", "Success")
            } else if state.polls >= 1 {
                ("InProgress", "Success", "In Progress")
            } else {
                ("InProgress", "In Progress", "Pending")
            }
        }
    }

    fn command(status: &str) -> Command {
        Command {
            command_id: ID.to_owned(),
            document_name: "AWS-RunShellScript".to_owned(),
            status: status.to_owned(),
            status_details: status.to_owned(),
            target_count: 2,
            ..Default::default()
        }
    }

    fn invocation(node: &str, details: &str) -> CommandInvocation {
        CommandInvocation {
            command_id: ID.to_owned(),
            instance_id: node.to_owned(),
            status_details: details.to_owned(),
            command_plugins: vec![CommandPlugin {
                name: "runShellScript".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    type OutputStream =
        Pin<Box<dyn futures::Stream<Item = Result<GetCommandOutputResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl CommandService for Fake {
        async fn send_command(
            &self,
            request: Request<SendCommandRequest>,
        ) -> Result<Response<SendCommandResponse>, Status> {
            self.with(|state| state.sent.push(request.into_inner()))?;
            Ok(Response::new(SendCommandResponse {
                command: Some(command("Pending")),
            }))
        }

        async fn list_commands(
            &self,
            _request: Request<ListCommandsRequest>,
        ) -> Result<Response<ListCommandsResponse>, Status> {
            let (polls, fail, status) = self.with(|state| {
                state.polls += 1;
                (state.polls, state.fail_poll, Self::statuses(state).0)
            })?;
            if fail == Some(polls) {
                return Err(Status::unavailable("the server is restarting"));
            }
            Ok(Response::new(ListCommandsResponse {
                commands: vec![command(status)],
                next_token: String::new(),
            }))
        }

        async fn list_command_invocations(
            &self,
            request: Request<ListCommandInvocationsRequest>,
        ) -> Result<Response<ListCommandInvocationsResponse>, Status> {
            let (_, first, second) = self.with(|state| Self::statuses(state))?;
            let request = request.into_inner();
            let all = vec![invocation("mi-1", first), invocation("mi-2", second)];
            Ok(Response::new(ListCommandInvocationsResponse {
                command_invocations: all
                    .into_iter()
                    .filter(|i| {
                        request.instance_id.is_empty() || i.instance_id == request.instance_id
                    })
                    .collect(),
                next_token: String::new(),
            }))
        }

        async fn get_command_invocation(
            &self,
            request: Request<GetCommandInvocationRequest>,
        ) -> Result<Response<GetCommandInvocationResponse>, Status> {
            let (_, first, second) = self.with(|state| Self::statuses(state))?;
            let request = request.into_inner();
            let details = if request.instance_id == "mi-1" {
                first
            } else {
                second
            };
            Ok(Response::new(GetCommandInvocationResponse {
                command_id: request.command_id,
                plugin_name: request.plugin_name,
                response_code: if details == "Success" { 0 } else { -1 },
                status_details: details.to_owned(),
                standard_output_content: format!("out-{}\n", request.instance_id),
                instance_id: request.instance_id,
                ..Default::default()
            }))
        }

        async fn cancel_command(
            &self,
            request: Request<CancelCommandRequest>,
        ) -> Result<Response<CancelCommandResponse>, Status> {
            self.with(|state| state.cancels.push(request.into_inner()))?;
            Ok(Response::new(CancelCommandResponse {}))
        }

        type GetCommandOutputStream = OutputStream;

        async fn get_command_output(
            &self,
            request: Request<GetCommandOutputRequest>,
        ) -> Result<Response<Self::GetCommandOutputStream>, Status> {
            self.with(|state| state.outputs.push(request.into_inner()))?;
            let chunks = vec![
                Ok(GetCommandOutputResponse {
                    data: b"raw \x1b[1mbold\x1b[0m\n".to_vec(),
                    offset: 0,
                    end: false,
                    status_details: "In Progress".to_owned(),
                }),
                Ok(GetCommandOutputResponse {
                    data: b"more\n".to_vec(),
                    offset: 19,
                    end: true,
                    status_details: "Success".to_owned(),
                }),
            ];
            Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
        }
    }
}

/// A config dir with a stored token for `url`, so commands run without `--token`.
fn token_args(url: &str) -> Vec<String> {
    vec![
        "--server".into(),
        url.into(),
        "--token".into(),
        "t0k".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sends_the_shorthand_and_prints_each_node_once_as_it_ends() -> anyhow::Result<()> {
    let fake = fake::Fake::default();
    // A moment without the server does not stop the following.
    fake.state
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .fail_poll = Some(2);
    let url = common::serve(fake.routes()).await?;
    let dir = tempfile::tempdir()?;
    let mut args = token_args(&url);
    args.extend(
        [
            "run",
            "--targets",
            "tag:Env=prod,stage",
            "--max-errors",
            "1",
            "--",
            "uname",
            "-a",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = common::run_bosun(dir.path(), &args, "", &[]).await?;
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}\n{}", stderr(&output));
    assert_eq!(
        printed,
        format!(
            "command {id}: AWS-RunShellScript on 2 nodes\n\
             mi-1: Success, exit code 0\n    out-mi-1\n\
             1/2 finished: 1 done, 0 failed, 1 in flight, 0 pending\n\
             mi-2: Success, exit code 0\n    out-mi-2\n\
             2/2 finished: 2 done, 0 failed, 0 in flight, 0 pending\n\
             command {id}: Success, 2 nodes, 0 completed, 0 errors\n",
            id = fake::ID
        )
    );
    assert_eq!(
        stderr(&output),
        format!(
            "warning: unavailable: the server is restarting; still following command {}\n\
             the server answers again\n",
            fake::ID
        )
    );
    let state = fake.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let sent = &state.sent[0];
    assert_eq!(sent.document_name, "AWS-RunShellScript");
    assert_eq!(sent.parameters["commands"].values, ["uname -a"]);
    assert_eq!(sent.targets[0].key, "tag:Env");
    assert_eq!(sent.targets[0].values, ["prod", "stage"]);
    assert_eq!(sent.max_errors, "1");
    assert!(state.cancels.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_ctrl_c_cancels_and_keeps_following() -> anyhow::Result<()> {
    let fake = fake::Fake::default();
    fake.state
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .hold = true;
    let url = common::serve(fake.routes()).await?;
    let dir = tempfile::tempdir()?;
    let mut args = token_args(&url);
    args.extend(["run", "--instance-ids", "mi-1,mi-2", "--", "sleep 100"].map(str::to_owned));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bosun"))
        .args(&args)
        .env_remove("BOSUN_TOKEN")
        .env_remove("BOSUN_SERVER")
        .env("BOSUN_CONFIG_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the child's pid")?;
    // Wait until it follows the command, then interrupt it once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .polls
        < 2
    {
        if Instant::now() > deadline {
            bail!("bosun run never followed the command");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await?;
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("bosun run did not end after the command was cancelled")??;
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}\n{message}",
        stdout(&output)
    );
    assert!(
        message.starts_with(&format!(
            "cancelling command {}; Ctrl-C again stops following it\n",
            fake::ID
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("error: command {}: Cancelled", fake::ID)),
        "{message}"
    );
    // It followed the command to its end: mi-2's cancellation was printed.
    assert!(
        stdout(&output).contains("mi-2: Cancelled\n"),
        "{}",
        stdout(&output)
    );
    let state = fake.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert_eq!(state.cancels.len(), 1);
    assert_eq!(state.cancels[0].command_id, fake::ID);
    assert!(state.cancels[0].instance_ids.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_output_writes_the_bytes_as_they_are() -> anyhow::Result<()> {
    let fake = fake::Fake::default();
    let url = common::serve(fake.routes()).await?;
    let dir = tempfile::tempdir()?;
    let mut args = token_args(&url);
    args.extend(
        [
            "command",
            "output",
            fake::ID,
            "--node",
            "mi-2",
            "--step",
            "two",
            "--stderr",
            "-f",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = common::run_bosun(dir.path(), &args, "", &[]).await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, b"raw \x1b[1mbold\x1b[0m\nmore\n");
    let state = fake.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let request = &state.outputs[0];
    assert_eq!(
        (
            request.instance_id.as_str(),
            request.plugin_name.as_str(),
            request.stream.as_str(),
            request.follow
        ),
        ("mi-2", "two", "stderr", true)
    );
    Ok(())
}
