//! Managed nodes end to end: real `bosun-agent` processes registering with activations,
//! holding their stream to real `bosun` servers, running real shell commands exactly once
//! across agent restarts and a gateway crash, going ConnectionLost when silent, and refused
//! once deregistered.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_nodelink::{NodeLink, NodeResult, Outbound, RedisPresence, results_stream};
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::inventory::v1::*;
use bosun_queue::{Queue, QueueOptions, RedisQueue};
use bosun_tests::agents::{AgentProcess, Balancer, register};
use bosun_tests::{Launch, Process, Store, authed};
use tonic::Code;

fn redis_url() -> String {
    std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A server with fast heartbeats and no node of its own.
fn launch(data: &Path) -> Launch {
    Launch::new(&["server"], data)
        .env("BOSUN_AGENTS__LOCAL_AGENT", "false")
        .env("BOSUN_AGENTS__HEARTBEAT_INTERVAL", "1s")
        .env("BOSUN_AGENTS__PING_TIMEOUT", "3s")
}

async fn nodes(process: &Process) -> anyhow::Result<NodeServiceClient<tonic::transport::Channel>> {
    Ok(NodeServiceClient::new(process.channel().await?))
}

async fn activation(
    process: &Process,
    token: &str,
    limit: i32,
) -> anyhow::Result<(String, String)> {
    let created = nodes(process)
        .await?
        .create_activation(authed(
            CreateActivationRequest {
                description: "e2e".into(),
                default_instance_name: "e2e-node".into(),
                registration_limit: limit,
                tags: vec![Tag {
                    key: "Env".into(),
                    value: "test".into(),
                }],
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    Ok((created.activation_id, created.activation_code))
}

/// Registers a node into `state_dir`; returns its id.
async fn register_node(
    server_url: &str,
    process: &Process,
    token: &str,
    state_dir: &Path,
) -> anyhow::Result<String> {
    let (id, code) = activation(process, token, 1).await?;
    let (ok, _, stderr) = register(server_url, &id, &code, state_dir).await?;
    if !ok {
        bail!("bosun-agent register failed: {stderr}");
    }
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("identity.json"))?)?;
    identity["node_id"]
        .as_str()
        .map(str::to_owned)
        .context("identity.json has no node_id")
}

async fn describe(
    process: &Process,
    token: &str,
    node_id: &str,
) -> anyhow::Result<Option<InstanceInformation>> {
    let page = nodes(process)
        .await?
        .describe_instance_information(authed(
            DescribeInstanceInformationRequest {
                filters: vec![InstanceInformationFilter {
                    key: "InstanceIds".into(),
                    values: vec![node_id.into()],
                }],
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    Ok(page.instance_information_list.into_iter().next())
}

/// Waits until the node shows `status`; returns what DescribeInstanceInformation says then.
async fn wait_ping(
    process: &Process,
    token: &str,
    node_id: &str,
    status: PingStatus,
    limit: Duration,
) -> anyhow::Result<InstanceInformation> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(info) = describe(process, token, node_id).await?
            && info.ping_status == status as i32
        {
            return Ok(info);
        }
        if Instant::now() > deadline {
            bail!(
                "node {node_id} did not become {status:?} within {limit:?}: {:?}",
                describe(process, token, node_id).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `commands.run` that appends one line to `file`.
fn append_command(command_id: &str, file: &Path) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "command_id": command_id,
        "plugins": [{
            "name": "aws:runShellScript",
            "step": "append",
            "inputs": { "runCommand": [format!("echo ran >> '{}'", file.display())] }
        }]
    }))
    .unwrap_or_default()
}

fn lines(file: &Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |text| text.lines().count())
}

async fn wait_lines(file: &Path, want: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while lines(file) < want {
        if Instant::now() > deadline {
            bail!(
                "{} has {} lines, not {want}, after {limit:?}",
                file.display(),
                lines(file)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// What the test process needs to act as a service sending work to nodes: the server's
/// PostgreSQL and Redis, under its key prefix.
struct Sender {
    link: NodeLink,
    queue: Arc<dyn Queue>,
}

impl Sender {
    async fn connect(database_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let db = bosun_store::connect(database_url).await?;
        let queue: Arc<dyn Queue> =
            Arc::new(RedisQueue::connect(&redis_url(), prefix, QueueOptions::default()).await?);
        let presence = Arc::new(RedisPresence::connect(&redis_url(), prefix).await?);
        queue
            .ensure_group(&results_stream("commands"), "e2e")
            .await?;
        Ok(Sender {
            link: NodeLink::new(db, queue.clone(), presence),
            queue,
        })
    }

    async fn send(&self, node_id: &str, payload: Vec<u8>) -> anyhow::Result<String> {
        Ok(self
            .link
            .send(Outbound {
                node_id: node_id.into(),
                topic: "commands.run".into(),
                payload,
                ..Default::default()
            })
            .await?)
    }

    /// The final result of `command_id` from the results stream.
    async fn final_result(
        &self,
        command_id: &str,
        limit: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let stream = results_stream("commands");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            for delivery in self
                .queue
                .consume(&stream, "e2e", "test", 16, Duration::from_millis(500))
                .await?
            {
                self.queue
                    .ack(&stream, "e2e", std::slice::from_ref(&delivery.id))
                    .await?;
                let result = NodeResult::from_delivery(&delivery)
                    .map_err(|error| anyhow::anyhow!("{error:?}"))?;
                let body: serde_json::Value = serde_json::from_slice(&result.payload)?;
                if body["command_id"] == command_id && body["status"] != "InProgress" {
                    return Ok(body);
                }
            }
        }
        bail!("no final result for {command_id} within {limit:?}")
    }
}

#[tokio::test]
async fn registration_refuses_wrong_codes_and_used_up_or_expired_activations() -> anyhow::Result<()>
{
    let data = tempfile::tempdir()?;
    let server = Process::start(launch(data.path())).await?;
    let token = server.admin_token().await?;
    let (id, code) = activation(&server, &token, 1).await?;

    let wrong = tempfile::tempdir()?;
    let (ok, _, stderr) = register(&server.url, &id, "bac_not-the-code", wrong.path()).await?;
    assert!(!ok, "a wrong code registered");
    assert!(stderr.contains("activation"), "unclear error: {stderr}");
    assert!(!wrong.path().join("identity.json").exists());

    let first = tempfile::tempdir()?;
    let (ok, _, stderr) = register(&server.url, &id, &code, first.path()).await?;
    assert!(ok, "register failed: {stderr}");
    let second = tempfile::tempdir()?;
    let (ok, _, stderr) = register(&server.url, &id, &code, second.path()).await?;
    assert!(!ok, "a used-up activation registered a second node");
    assert!(
        stderr.contains("ActivationLimitExceeded") || stderr.contains("limit"),
        "{stderr}"
    );

    let soon = nodes(&server)
        .await?
        .create_activation(authed(
            CreateActivationRequest {
                expiration_date: Some(bosun_core::time::to_timestamp(
                    chrono::Utc::now() + chrono::TimeDelta::seconds(2),
                )),
                ..Default::default()
            },
            &token,
        ))
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = tempfile::tempdir()?;
    let (ok, _, stderr) = register(
        &server.url,
        &soon.activation_id,
        &soon.activation_code,
        late.path(),
    )
    .await?;
    assert!(!ok, "an expired activation registered a node");
    assert!(
        stderr.contains("ActivationExpired") || stderr.contains("expired"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_node_turns_connection_lost_and_a_deregistered_one_is_cut_off()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(launch(data.path())).await?;
    let token = server.admin_token().await?;
    let state = tempfile::tempdir()?;
    let node_id = register_node(&server.url, &server, &token, state.path()).await?;

    let mut agent = AgentProcess::start(&server.url, state.path())?;
    let info = wait_ping(
        &server,
        &token,
        &node_id,
        PingStatus::Online,
        Duration::from_secs(20),
    )
    .await?;
    assert_eq!(info.platform_type, "Linux");
    assert!(!info.computer_name.is_empty());
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.name, "e2e-node");

    // Killed without a word: only the missing heartbeats tell.
    agent.kill().await?;
    wait_ping(
        &server,
        &token,
        &node_id,
        PingStatus::ConnectionLost,
        Duration::from_secs(20),
    )
    .await?;

    let mut agent = AgentProcess::start(&server.url, state.path())?;
    wait_ping(
        &server,
        &token,
        &node_id,
        PingStatus::Online,
        Duration::from_secs(20),
    )
    .await?;
    nodes(&server)
        .await?
        .deregister_managed_instance(authed(
            DeregisterManagedInstanceRequest {
                instance_id: node_id.clone(),
            },
            &token,
        ))
        .await?;
    let status = agent
        .wait_exit(Duration::from_secs(20))
        .await?
        .with_context(|| format!("the agent ran on after deregistration:\n{}", agent.log()))?;
    assert_eq!(status.code(), Some(3), "{}", agent.log());
    assert!(describe(&server, &token, &node_id).await?.is_none());

    // Its key is refused from now on.
    let mut again = AgentProcess::start(&server.url, state.path())?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(describe(&server, &token, &node_id).await?.is_none());
    if let Some(status) = again.wait_exit(Duration::from_secs(5)).await? {
        assert!(!status.success(), "{}", again.log());
    }
    Ok(())
}

#[tokio::test]
async fn work_sent_while_a_node_is_offline_runs_once_when_it_returns() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let Store::Postgres(database) = Store::postgres().await else {
        bail!("expected PostgreSQL");
    };
    let prefix = format!("bosun-e2e-{}:", uuid::Uuid::new_v4().simple());
    let store = Store::Postgres(database);
    let server = Process::start(
        launch(data.path())
            .store(&store)
            .env("BOSUN_REDIS_URL", &redis_url())
            .env("BOSUN_REDIS_PREFIX", &prefix),
    )
    .await?;
    let Store::Postgres(database) = &store else {
        bail!("expected PostgreSQL");
    };
    let sender = Sender::connect(&database.url, &prefix).await?;
    let token = server.admin_token().await?;
    let state = tempfile::tempdir()?;
    let node_id = register_node(&server.url, &server, &token, state.path()).await?;
    let work = tempfile::tempdir()?;
    let file = work.path().join("ran.txt");

    // Sent before the agent ever connected: stored, delivered on connect.
    sender
        .send(&node_id, append_command("cmd-1", &file))
        .await?;
    let mut agent = AgentProcess::start(&server.url, state.path())?;
    wait_lines(&file, 1, Duration::from_secs(30)).await?;
    let result = sender
        .final_result("cmd-1", Duration::from_secs(20))
        .await?;
    assert_eq!(result["status"], "Success", "{result}");

    // Sent while the agent is down.
    agent.kill().await?;
    sender
        .send(&node_id, append_command("cmd-2", &file))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines(&file), 1, "ran while the agent was down?");
    let mut agent = AgentProcess::start(&server.url, state.path())?;
    wait_lines(&file, 2, Duration::from_secs(30)).await?;
    sender
        .final_result("cmd-2", Duration::from_secs(20))
        .await?;

    // Sent while connected: straight through the gateway's inbox.
    sender
        .send(&node_id, append_command("cmd-3", &file))
        .await?;
    wait_lines(&file, 3, Duration::from_secs(20)).await?;
    sender
        .final_result("cmd-3", Duration::from_secs(20))
        .await?;

    // Restarts of the agent and of the server run nothing a second time.
    agent.terminate(Duration::from_secs(30)).await?;
    let _agent = AgentProcess::start(&server.url, state.path())?;
    wait_ping(
        &server,
        &token,
        &node_id,
        PingStatus::Online,
        Duration::from_secs(20),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lines(&file), 3, "a command ran twice");
    Ok(())
}

#[tokio::test]
async fn killing_the_gateway_holding_a_stream_moves_the_node_to_another() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let Store::Postgres(database) = Store::postgres().await else {
        bail!("expected PostgreSQL");
    };
    let database_url = database.url.clone();
    let store = Store::Postgres(database);
    let prefix = format!("bosun-e2e-{}:", uuid::Uuid::new_v4().simple());
    let start = |data: &Path| {
        launch(data)
            .store(&store)
            .env("BOSUN_REDIS_URL", &redis_url())
            .env("BOSUN_REDIS_PREFIX", &prefix)
    };
    // Two gateways on one store and one Redis, sharing keys, behind one address.
    let mut first = Process::start(start(data.path())).await?;
    let second = Process::start(start(data.path())).await?;
    let balancer = Balancer::start(vec![first.addr, second.addr]).await?;
    let sender = Sender::connect(&database_url, &prefix).await?;
    let token = second.admin_token().await?;
    let state = tempfile::tempdir()?;
    let node_id = register_node(&balancer.url(), &second, &token, state.path()).await?;
    let work = tempfile::tempdir()?;
    let file = work.path().join("ran.txt");

    let _agent = AgentProcess::start(&balancer.url(), state.path())?;
    wait_ping(
        &second,
        &token,
        &node_id,
        PingStatus::Online,
        Duration::from_secs(20),
    )
    .await?;
    sender
        .send(&node_id, append_command("before", &file))
        .await?;
    wait_lines(&file, 1, Duration::from_secs(20)).await?;

    // The gateway holding the stream dies; work sent meanwhile is not lost.
    first.kill().await?;
    sender
        .send(&node_id, append_command("during", &file))
        .await?;
    wait_lines(&file, 2, Duration::from_secs(60)).await?;
    sender
        .final_result("during", Duration::from_secs(20))
        .await?;

    // And the new stream carries new work straight away.
    sender
        .send(&node_id, append_command("after", &file))
        .await?;
    wait_lines(&file, 3, Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lines(&file), 3, "a command ran twice");
    Ok(())
}

#[tokio::test]
async fn node_tokens_reach_nothing_but_the_agent_channel() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(launch(data.path())).await?;
    let keys = bosun_auth::KeyRing::load(&data.path().join("keys").join("jwt.json"))?;
    let issuer = bosun_auth::TokenIssuer::new(keys.active().clone(), bosun_auth::DEFAULT_ISSUER);
    let (node_token, _) = issuer.issue(
        &bosun_auth::Principal::Node("mi-0123456789abcdef0".into()),
        bosun_auth::CLIENT_AUDIENCE,
        "node-session",
        Vec::new(),
        Vec::new(),
        Duration::from_secs(300),
    )?;
    let denied = nodes(&server)
        .await?
        .describe_instance_information(authed(
            DescribeInstanceInformationRequest::default(),
            &node_token,
        ))
        .await
        .expect_err("a node token listed nodes");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    Ok(())
}

/// The one node of a server, once it is Online.
async fn own_node(server: &Process, token: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = nodes(server)
            .await?
            .describe_instance_information(authed(
                DescribeInstanceInformationRequest::default(),
                token,
            ))
            .await?
            .into_inner()
            .instance_information_list;
        if list.len() == 1 && list[0].ping_status == PingStatus::Online as i32 {
            return Ok(list[0].instance_id.clone());
        }
        if Instant::now() > deadline {
            bail!("the server's own node is not the one Online node: {list:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn bosun_server_registers_its_own_machine_once() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let launch =
        || Launch::new(&["server"], data.path()).env("BOSUN_AGENTS__HEARTBEAT_INTERVAL", "1s");
    let mut server = Process::start(launch()).await?;
    let token = server.admin_token().await?;
    let node_id = own_node(&server, &token).await?;
    assert!(data.path().join("agent").join("identity.json").exists());
    server.terminate(Duration::from_secs(30)).await?;
    let server = Process::start(launch()).await?;
    let token = server.admin_token().await?;
    assert_eq!(
        own_node(&server, &token).await?,
        node_id,
        "registered a second time"
    );
    Ok(())
}
