//! Run Command end to end: a real `bosun server` on PostgreSQL and Redis, real `bosun-agent`
//! processes running real shell commands, driven through `CommandService` as an operator
//! would: success on many nodes, failures counted, MaxErrors and MaxConcurrency, execution and
//! delivery timeouts, cancellation, inline truncation and full output, parameter errors,
//! per-node authorization, and crashes of the server and of an agent in the middle of a run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use bosun_proto::auth::v1::{CreateRoleRequest, CreateUserRequest, RolePolicy};
use bosun_proto::commands::v1::command_service_client::CommandServiceClient;
use bosun_proto::commands::v1::*;
use bosun_proto::inventory::v1::{Tag, Target};
use bosun_tests::agents::AgentProcess;
use bosun_tests::nodes::{register_node, wait_online};
use bosun_tests::{Launch, Process, Store, authed};
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

fn redis_url() -> String {
    std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A server on a fresh PostgreSQL schema and a fresh Redis prefix, with fast heartbeats,
/// quick dispatch and reconcile, and no node of its own.
struct Deployment {
    data: tempfile::TempDir,
    store: Store,
    prefix: String,
}

impl Deployment {
    async fn new() -> anyhow::Result<Self> {
        Ok(Deployment {
            data: tempfile::tempdir()?,
            store: Store::postgres().await,
            prefix: format!("bosun-e2e-{}:", uuid::Uuid::new_v4().simple()),
        })
    }

    fn launch(&self) -> Launch {
        Launch::new(&["server"], self.data.path())
            .store(&self.store)
            .env("BOSUN_REDIS_URL", &redis_url())
            .env("BOSUN_REDIS_PREFIX", &self.prefix)
            .env("BOSUN_AGENTS__LOCAL_AGENT", "false")
            .env("BOSUN_AGENTS__HEARTBEAT_INTERVAL", "1s")
            .env("BOSUN_AGENTS__PING_TIMEOUT", "3s")
            .env("BOSUN_COMMANDS__DISPATCH_INTERVAL", "200ms")
            .env("BOSUN_COMMANDS__LEASE", "3s")
            .env("BOSUN_COMMANDS__RECONCILE_INTERVAL", "500ms")
            .env("BOSUN_COMMANDS__OUTPUT_SETTLE", "5s")
    }

    async fn start(&self) -> anyhow::Result<Process> {
        Process::start(self.launch()).await
    }
}

/// Registered nodes with their running agents.
struct Fleet {
    nodes: Vec<Node>,
}

struct Node {
    id: String,
    state: tempfile::TempDir,
    agent: Option<AgentProcess>,
}

impl Fleet {
    /// Registers one node per entry of `envs` (its tag `Env`) and starts their agents.
    async fn start(server: &Process, token: &str, envs: &[&str]) -> anyhow::Result<Fleet> {
        let mut nodes = Vec::new();
        for env in envs {
            let state = tempfile::tempdir()?;
            let tags = vec![Tag {
                key: "Env".into(),
                value: (*env).into(),
            }];
            let id =
                register_node(server, token, &format!("e2e-{env}"), tags, state.path()).await?;
            let agent = AgentProcess::start(&server.url, state.path())?;
            nodes.push(Node {
                id,
                state,
                agent: Some(agent),
            });
        }
        for node in &nodes {
            wait_online(server, token, &node.id).await?;
        }
        Ok(Fleet { nodes })
    }

    fn ids(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.id.clone()).collect()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|node| node.agent.as_ref().map(AgentProcess::log))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

async fn commands(server: &Process) -> anyhow::Result<CommandServiceClient<Channel>> {
    Ok(CommandServiceClient::new(server.channel().await?))
}

fn params(entries: &[(&str, &[&str])]) -> HashMap<String, ParameterValues> {
    entries
        .iter()
        .map(|(name, values)| {
            (
                (*name).to_owned(),
                ParameterValues {
                    values: values.iter().map(|v| (*v).to_owned()).collect(),
                },
            )
        })
        .collect()
}

/// An AWS-RunShellScript request running `script` on `instance_ids`.
fn shell(script: &str, instance_ids: &[String]) -> SendCommandRequest {
    SendCommandRequest {
        document_name: "AWS-RunShellScript".into(),
        instance_ids: instance_ids.to_vec(),
        parameters: params(&[("commands", &[script])]),
        ..Default::default()
    }
}

async fn send(
    server: &Process,
    token: &str,
    request: SendCommandRequest,
) -> anyhow::Result<Command> {
    commands(server)
        .await?
        .send_command(authed(request, token))
        .await?
        .into_inner()
        .command
        .context("SendCommand answered no command")
}

async fn get_command(server: &Process, token: &str, command_id: &str) -> anyhow::Result<Command> {
    commands(server)
        .await?
        .list_commands(authed(
            ListCommandsRequest {
                command_id: command_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner()
        .commands
        .into_iter()
        .next()
        .context("ListCommands does not list the command")
}

const TERMINAL: [&str; 4] = ["Success", "Failed", "TimedOut", "Cancelled"];

/// Waits until the command is in a terminal status; returns it.
async fn wait_done(
    server: &Process,
    token: &str,
    command_id: &str,
    limit: Duration,
) -> anyhow::Result<Command> {
    let deadline = Instant::now() + limit;
    loop {
        let command = get_command(server, token, command_id).await?;
        if TERMINAL.contains(&command.status.as_str()) {
            return Ok(command);
        }
        if Instant::now() > deadline {
            let invocations = invocations(server, token, command_id, false).await?;
            bail!("command not done within {limit:?}: {command:?}\n{invocations:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn invocations(
    server: &Process,
    token: &str,
    command_id: &str,
    details: bool,
) -> anyhow::Result<Vec<CommandInvocation>> {
    let mut all = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = commands(server)
            .await?
            .list_command_invocations(authed(
                ListCommandInvocationsRequest {
                    command_id: command_id.into(),
                    details,
                    next_token: next_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner();
        all.extend(page.command_invocations);
        if page.next_token.is_empty() {
            return Ok(all);
        }
        next_token = page.next_token;
    }
}

async fn invocation(
    server: &Process,
    token: &str,
    command_id: &str,
    node_id: &str,
) -> anyhow::Result<GetCommandInvocationResponse> {
    Ok(commands(server)
        .await?
        .get_command_invocation(authed(
            GetCommandInvocationRequest {
                command_id: command_id.into(),
                instance_id: node_id.into(),
                plugin_name: String::new(),
            },
            token,
        ))
        .await?
        .into_inner())
}

fn details_by_node(invocations: &[CommandInvocation]) -> HashMap<String, String> {
    invocations
        .iter()
        .map(|i| (i.instance_id.clone(), i.status_details.clone()))
        .collect()
}

fn count_details(invocations: &[CommandInvocation], details: &str) -> usize {
    invocations
        .iter()
        .filter(|i| i.status_details == details)
        .count()
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits up to 30 s for `ready` (checked every 50 ms); the error names `what` and shows the
/// agents' logs.
async fn wait_until(fleet: &Fleet, what: &str, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} within 30 s\n{}", fleet.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn runs_on_many_nodes_and_counts_failures() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["dev", "dev", "prod"]).await?;

    // By tag: the two dev nodes.
    let command = send(
        &server,
        &token,
        SendCommandRequest {
            document_name: "AWS-RunShellScript".into(),
            targets: vec![Target {
                key: "tag:Env".into(),
                values: vec!["dev".into()],
            }],
            parameters: params(&[("commands", &["echo hello from $(uname -s)", "echo done"])]),
            max_concurrency: "100%".into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(command.target_count, 2, "{command:?}");
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "Success", "{done:?}\n{}", fleet.logs());
    assert_eq!((done.completed_count, done.error_count), (2, 0), "{done:?}");
    for node in &fleet.ids()[..2] {
        let result = invocation(&server, &token, &command.command_id, node).await?;
        assert_eq!(result.status, "Success");
        assert_eq!(result.response_code, 0);
        assert_eq!(
            result.standard_output_content,
            format!(
                "hello from {}\ndone\n",
                std::env::consts::OS.replace("linux", "Linux")
            ),
        );
        assert!(!result.execution_start_date_time.is_empty());
        assert!(!result.execution_end_date_time.is_empty());
    }

    // On all three with a script that fails: every failure is counted, and with MaxErrors
    // above the count the run goes on everywhere.
    let mut request = shell("echo oops >&2; exit 3", &fleet.ids());
    request.max_errors = "5".into();
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "Failed", "{done:?}");
    assert_eq!(done.status_details, "Incomplete", "{done:?}");
    assert_eq!((done.completed_count, done.error_count), (3, 3), "{done:?}");
    let result = invocation(&server, &token, &command.command_id, &fleet.ids()[2]).await?;
    assert_eq!(result.response_code, 3);
    assert_eq!(result.standard_error_content, "oops\n");
    assert_eq!(result.status_details, "Failed");
    Ok(())
}

#[tokio::test]
async fn max_errors_stops_the_run_and_max_concurrency_holds() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["a", "a", "a", "a", "a", "a"]).await?;
    let work = tempfile::tempdir()?;

    // MaxConcurrency 2: the agents record when each run starts and ends.
    let overlap = work.path().join("overlap.log");
    let script = format!(
        "echo start >> '{0}'; sleep 1; echo end >> '{0}'",
        overlap.display()
    );
    let mut request = shell(&script, &fleet.ids());
    request.max_concurrency = "2".into();
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(done.status, "Success", "{done:?}\n{}", fleet.logs());
    let mut running = 0;
    let mut most = 0;
    for line in lines(&overlap) {
        if line == "start" {
            running += 1;
        } else {
            running -= 1;
        }
        most = most.max(running);
    }
    assert_eq!(lines(&overlap).len(), 12, "every node ran once");
    assert!(most <= 2, "{most} ran at once under MaxConcurrency 2");
    assert_eq!(most, 2, "the run never used its concurrency");

    // MaxErrors 1 with MaxConcurrency 1: the second failure stops it; the rest never run.
    let ran = work.path().join("ran.log");
    let mut request = shell(
        &format!("echo x >> '{}'; exit 1", ran.display()),
        &fleet.ids(),
    );
    request.max_concurrency = "1".into();
    request.max_errors = "1".into();
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "Failed", "{done:?}");
    assert_eq!(done.status_details, "Failed", "{done:?}");
    assert_eq!(done.error_count, 2, "{done:?}");
    assert_eq!(lines(&ran).len(), 2, "ran after MaxErrors was exceeded");
    let all = invocations(&server, &token, &command.command_id, false).await?;
    assert_eq!(count_details(&all, "Failed"), 2, "{all:#?}");
    assert_eq!(count_details(&all, "Terminated"), 4, "{all:#?}");
    Ok(())
}

#[tokio::test]
async fn timeouts_kill_the_process_tree_and_expire_undelivered_work() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let mut fleet = Fleet::start(&server, &token, &["a", "a"]).await?;
    let work = tempfile::tempdir()?;

    // Execution timeout: the script and its background child die.
    let pid_file = work.path().join("child.pid");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", pid_file.display());
    let mut request = shell(&script, &fleet.ids()[..1]);
    request.parameters.insert(
        "executionTimeout".into(),
        ParameterValues {
            values: vec!["2".into()],
        },
    );
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "TimedOut", "{done:?}");
    assert_eq!(done.status_details, "Execution Timed Out", "{done:?}");
    let result = invocation(&server, &token, &command.command_id, &fleet.ids()[0]).await?;
    assert_eq!(result.status_details, "Execution Timed Out");
    let child: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(child) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !pid_alive(child),
        "the background child {child} survived the timeout"
    );

    // Delivery timeout: the second node is offline for longer than the timeout.
    if let Some(mut agent) = fleet.nodes[1].agent.take() {
        agent.kill().await?;
    }
    let ran = work.path().join("late.log");
    let mut request = shell(
        &format!("echo ran >> '{}'", ran.display()),
        &fleet.ids()[1..],
    );
    request.timeout_seconds = 30;
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "TimedOut", "{done:?}");
    assert_eq!(done.status_details, "Delivery Timed Out", "{done:?}");
    assert_eq!(done.delivery_timed_out_count, 1, "{done:?}");
    // When it comes back it does not run the expired work.
    let node = &mut fleet.nodes[1];
    node.agent = Some(AgentProcess::start(&server.url, node.state.path())?);
    wait_online(&server, &token, &node.id).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lines(&ran).is_empty(), "expired work ran");
    Ok(())
}

#[tokio::test]
async fn cancel_stops_running_and_pending_invocations() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["a", "a"]).await?;
    let work = tempfile::tempdir()?;
    let pid_file = work.path().join("pid");
    // Concurrency 1: one runs, the other waits; cancel both.
    let mut request = shell(
        &format!("echo $$ >> '{}'; sleep 300", pid_file.display()),
        &fleet.ids(),
    );
    request.max_concurrency = "1".into();
    let command = send(&server, &token, request).await?;
    wait_until(&fleet, "the command never started", || {
        !lines(&pid_file).is_empty()
    })
    .await?;
    commands(&server)
        .await?
        .cancel_command(authed(
            CancelCommandRequest {
                command_id: command.command_id.clone(),
                instance_ids: Vec::new(),
            },
            &token,
        ))
        .await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(done.status, "Cancelled", "{done:?}");
    let all = invocations(&server, &token, &command.command_id, false).await?;
    assert_eq!(count_details(&all, "Cancelled"), 2, "{all:#?}");
    let pids = lines(&pid_file);
    assert_eq!(pids.len(), 1, "the pending invocation ran");
    let pid: i32 = pids[0].parse()?;
    assert!(!pid_alive(pid), "the cancelled script {pid} still runs");
    // A finished command cannot be cancelled again.
    let again = commands(&server)
        .await?
        .cancel_command(authed(
            CancelCommandRequest {
                command_id: command.command_id.clone(),
                instance_ids: Vec::new(),
            },
            &token,
        ))
        .await
        .expect_err("cancelled a finished command");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    Ok(())
}

/// Reads a step's whole output through GetCommandOutput.
async fn full_output(
    server: &Process,
    token: &str,
    command_id: &str,
    node_id: &str,
    stream: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut responses = commands(server)
        .await?
        .get_command_output(authed(
            GetCommandOutputRequest {
                command_id: command_id.into(),
                instance_id: node_id.into(),
                stream: stream.into(),
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(response) = responses.next().await {
        let response = response?;
        assert_eq!(response.offset as usize, bytes.len(), "a gap in the output");
        bytes.extend_from_slice(&response.data);
        if response.end {
            break;
        }
    }
    Ok(bytes)
}

#[tokio::test]
async fn output_is_truncated_inline_and_kept_whole_in_the_store() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["a"]).await?;
    let node = fleet.ids()[0].clone();
    // 100,000 bytes of stdout (lines of 'a'), 20,000 of stderr.
    let script = "i=0; while [ $i -lt 1000 ]; do printf '%099d\\n' $i; i=$((i+1)); done; \
                  head -c 20000 /dev/zero | tr '\\0' 'e' >&2";
    let mut request = shell(script, std::slice::from_ref(&node));
    request.output_s3_key_prefix = "e2e-out".into();
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "Success", "{done:?}");
    let result = invocation(&server, &token, &command.command_id, &node).await?;
    assert_eq!(result.standard_output_content.chars().count(), 24_000);
    assert!(result.standard_output_truncated);
    assert_eq!(result.standard_error_content.len(), 8_000);
    assert!(result.standard_error_truncated);

    // The full output: through the API and in the object store under the prefix.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let result = invocation(&server, &token, &command.command_id, &node).await?;
        if !result.standard_output_url.is_empty() {
            break result;
        }
        if Instant::now() > deadline {
            bail!("the output was never stored: {result:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stdout = full_output(&server, &token, &command.command_id, &node, "stdout").await?;
    assert_eq!(stdout.len(), 100_000);
    assert!(stdout.starts_with(format!("{:099}\n", 0).as_bytes()));
    assert!(stdout.ends_with(format!("{:099}\n", 999).as_bytes()));
    let stderr = full_output(&server, &token, &command.command_id, &node, "stderr").await?;
    assert_eq!(stderr, vec![b'e'; 20_000]);
    let path = stored
        .standard_output_url
        .strip_prefix("file://")
        .map(PathBuf::from)
        .context("a local store gives file:// URLs")?;
    assert_eq!(std::fs::read(&path)?, stdout);
    let expected_tail = format!("e2e-out/{}/{node}/", command.command_id);
    assert!(
        path.to_string_lossy().contains(&expected_tail),
        "{path:?} is not under {expected_tail}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_parameters_are_refused_before_anything_runs() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["a"]).await?;
    let mut client = commands(&server).await?;
    let ids = fleet.ids();
    let changed = |change: &dyn Fn(&mut SendCommandRequest)| {
        let mut request = shell("true", &ids);
        change(&mut request);
        request
    };
    let parameter = |name: &str, value: &str| {
        let (name, value) = (name.to_owned(), value.to_owned());
        changed(&move |request: &mut SendCommandRequest| {
            request.parameters.insert(
                name.clone(),
                ParameterValues {
                    values: vec![value.clone()],
                },
            );
        })
    };
    let cases: Vec<(SendCommandRequest, &str)> = vec![
        (
            changed(&|request| request.parameters.clear()),
            "parameters.commands",
        ),
        (
            parameter("executionTimeout", "forever"),
            "parameters.executionTimeout",
        ),
        (parameter("nonsense", "1"), "parameters.nonsense"),
        (
            changed(&|request| request.max_concurrency = "0".into()),
            "max_concurrency",
        ),
        (
            changed(&|request| request.timeout_seconds = 5),
            "timeout_seconds",
        ),
    ];
    for (request, field) in cases {
        let error = client
            .send_command(authed(request, &token))
            .await
            .expect_err("a bad request was accepted");
        assert_eq!(error.code(), Code::InvalidArgument, "{field}: {error:?}");
        assert!(
            error.message().contains(field),
            "{field} not named in: {}",
            error.message()
        );
    }
    let listed = client
        .list_commands(authed(ListCommandsRequest::default(), &token))
        .await?
        .into_inner()
        .commands;
    assert!(
        listed.is_empty(),
        "a refused command was stored: {listed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn commands_run_only_where_the_caller_is_allowed() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let admin = server.admin_token().await?;
    let fleet = Fleet::start(&server, &admin, &["dev", "prod"]).await?;
    let mut auth = AuthServiceClient::new(server.channel().await?);
    auth.create_role(authed(
        CreateRoleRequest {
            role_name: "dev-operators".into(),
            description: String::new(),
            policies: vec![RolePolicy {
                policy_name: "dev-only".into(),
                policy_document: r#"{"Statement":[
                    {"Effect":"Allow","Action":"commands:SendCommand","Resource":"node:*",
                     "Condition":{"StringEquals":{"bosun:ResourceTag/Env":"dev"}}},
                    {"Effect":"Allow","Action":["commands:List*","commands:Get*"],"Resource":"*"},
                    {"Effect":"Allow","Action":"documents:GetDocument","Resource":"*"}]}"#
                    .into(),
            }],
        },
        &admin,
    ))
    .await?;
    auth.create_user(authed(
        CreateUserRequest {
            username: "dana".into(),
            password: "dana-has-a-long-password".into(),
            roles: vec!["dev-operators".into()],
        },
        &admin,
    ))
    .await?;
    let dana = server.login("dana", "dana-has-a-long-password").await?;
    let work = tempfile::tempdir()?;
    let ran = work.path().join("ran.log");
    let command = send(
        &server,
        &dana,
        shell(&format!("echo ran >> '{}'", ran.display()), &fleet.ids()),
    )
    .await?;
    let done = wait_done(&server, &dana, &command.command_id, Duration::from_secs(60)).await?;
    let all = invocations(&server, &dana, &command.command_id, false).await?;
    let by_node = details_by_node(&all);
    assert_eq!(by_node[&fleet.ids()[0]], "Success", "{all:#?}");
    assert_eq!(by_node[&fleet.ids()[1]], "Access Denied", "{all:#?}");
    assert_eq!(lines(&ran).len(), 1, "ran where it was not allowed");
    assert_eq!(done.status, "Success", "{done:?}");

    // Only prod targeted: nothing allowed at all.
    let denied = commands(&server)
        .await?
        .send_command(authed(shell("true", &fleet.ids()[1..]), &dana))
        .await
        .expect_err("ran on a node the caller may not use");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    Ok(())
}

#[tokio::test]
async fn a_server_killed_mid_run_finishes_the_run_after_restart_without_running_twice()
-> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let mut server = deployment.start().await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["a", "a", "a", "a"]).await?;
    let work = tempfile::tempdir()?;
    let ran = work.path().join("ran.log");
    let mut request = shell(
        &format!("echo ran >> '{}'; sleep 1", ran.display()),
        &fleet.ids(),
    );
    request.max_concurrency = "1".into();
    let command = send(&server, &token, request).await?;
    // Kill the server (and with it the command engine) once the run is under way.
    wait_until(&fleet, "the run never started", || !lines(&ran).is_empty()).await?;
    let port = server.addr.port();
    server.kill().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Same address: the agents dial it again.
    let server = Process::start_on(deployment.launch(), port).await?;
    let token = server.admin_token().await?;
    let done = match wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(90),
    )
    .await
    {
        Ok(done) => done,
        Err(error) => bail!(
            "{error}\nserver: {}\nagents: {}",
            server.stderr(),
            fleet.logs()
        ),
    };
    assert_eq!(done.status, "Success", "{done:?}\n{}", fleet.logs());
    assert_eq!(done.completed_count, 4, "{done:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lines(&ran).len(),
        4,
        "an invocation ran twice or not at all"
    );
    Ok(())
}

#[tokio::test]
async fn an_agent_killed_mid_run_reports_the_run_failed_not_lost() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let server = deployment.start().await?;
    let token = server.admin_token().await?;
    let mut fleet = Fleet::start(&server, &token, &["a"]).await?;
    let work = tempfile::tempdir()?;
    let started = work.path().join("started");
    let command = send(
        &server,
        &token,
        shell(
            &format!("echo partial; touch '{}'; sleep 300", started.display()),
            &fleet.ids(),
        ),
    )
    .await?;
    wait_until(&fleet, "the command never started", || started.exists()).await?;
    let node = &mut fleet.nodes[0];
    if let Some(mut agent) = node.agent.take() {
        agent.kill().await?;
    }
    node.agent = Some(AgentProcess::start(&server.url, node.state.path())?);
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "Failed", "{done:?}");
    let result = invocation(&server, &token, &command.command_id, &node.id).await?;
    assert_eq!(result.status_details, "Failed", "{result:?}");
    assert!(
        result.standard_error_content.contains("interrupted")
            || result.standard_output_content.contains("partial"),
        "no clear reason: {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn notifications_follow_the_config_and_a_missing_runtime_is_invalid_platform()
-> anyhow::Result<()> {
    use bosun_notifications::testing::WebhookReceiver;
    use bosun_proto::notifications::v1::notification_service_client::NotificationServiceClient;
    use bosun_proto::notifications::v1::{CreateWebhookRequest, WebhookFilters};

    let deployment = Deployment::new().await?;
    let server = Process::start(
        deployment
            .launch()
            .env("BOSUN_NOTIFICATIONS__RETRY_BASE", "100ms")
            .env("BOSUN_NOTIFICATIONS__POLL_INTERVAL", "100ms"),
    )
    .await?;
    let token = server.admin_token().await?;
    let fleet = Fleet::start(&server, &token, &["a", "a"]).await?;
    let receiver = WebhookReceiver::start().await?;
    // Its own filters select parameter events only: command events reach it because the
    // command names it.
    let created = NotificationServiceClient::new(server.channel().await?)
        .create_webhook(authed(
            CreateWebhookRequest {
                url: receiver.url.clone(),
                description: "e2e".into(),
                filters: Some(WebhookFilters {
                    sources: vec!["parameters".into()],
                    ..Default::default()
                }),
                enabled: Some(true),
            },
            &token,
        ))
        .await?
        .into_inner();
    let webhook_id = created.webhook.context("no webhook")?.webhook_id;

    let mut request = shell("echo hi", &fleet.ids());
    request.notification_config = Some(NotificationConfig {
        notification_arn: webhook_id.clone(),
        notification_events: vec!["Success".into()],
        notification_type: "Invocation".into(),
    });
    let command = send(&server, &token, request).await?;
    let done = wait_done(
        &server,
        &token,
        &command.command_id,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(done.status, "Success", "{done:?}");
    // One signed delivery per node's Success, none for InProgress or the command.
    let got = receiver.wait_for(2, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = receiver.wait_for(2, Duration::from_secs(1)).await?;
    assert_eq!(
        got_after.len(),
        2,
        "more than the selected events were sent"
    );
    let mut nodes: Vec<String> = Vec::new();
    for request in &got {
        request
            .verify(&created.secret)
            .map_err(|error| anyhow::anyhow!("signature: {error}"))?;
        let body = request.json();
        assert_eq!(body["source"], "commands", "{body}");
        assert_eq!(body["operation"], "InvocationStatusChange", "{body}");
        assert_eq!(body["command_id"], command.command_id.as_str(), "{body}");
        assert_eq!(body["status"], "Success", "{body}");
        nodes.push(body["instance_id"].as_str().unwrap_or_default().to_owned());
    }
    nodes.sort();
    let mut expected = fleet.ids();
    expected.sort();
    assert_eq!(nodes, expected);

    // A PowerShell document on nodes without pwsh: Invalid Platform, not an error.
    if which_pwsh().is_none() {
        let command = send(
            &server,
            &token,
            SendCommandRequest {
                document_name: "AWS-RunPowerShellScript".into(),
                instance_ids: fleet.ids(),
                parameters: params(&[("commands", &["Write-Output hi"])]),
                ..Default::default()
            },
        )
        .await?;
        let done = wait_done(
            &server,
            &token,
            &command.command_id,
            Duration::from_secs(60),
        )
        .await?;
        let all = invocations(&server, &token, &command.command_id, false).await?;
        assert_eq!(count_details(&all, "Invalid Platform"), 2, "{all:#?}");
        assert_eq!(done.error_count, 0, "{done:?}");
        assert_eq!(done.status, "Failed", "{done:?}");
        assert_eq!(done.status_details, "Undeliverable", "{done:?}");
    }
    Ok(())
}

fn which_pwsh() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pwsh"))
            .find(|candidate| candidate.is_file())
    })
}
