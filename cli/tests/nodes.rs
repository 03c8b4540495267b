//! Runs the real `bosun activation|node|group …` commands: against fake NodeService and
//! ResourceGroupService on a loopback port (what each command sends, paging), and against a real
//! `bosun server` (SQLite in a temporary data directory, its own node agent turned off so the
//! fleet starts empty) with a real `bosun-agent` registered with the line `activation create`
//! prints.

mod common;

use common::{stderr, stdout};

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::inventory::v1 as inventory;
use fake::Call;
use tokio::process::{Child, Command};

const ADMIN_PASSWORD: &str = "bosun-cli-nodes-admin-password";
/// The header of `node ls` as a table.
const NODE_HEADER: &str =
    "ID  NAME  PING STATUS  LAST PING  PLATFORM  AGENT VERSION  IP  HOSTNAME\n";

/// The all-in-one server without its own node's agent (so the fleet starts empty), and a
/// CLI logged in to it.
type Fleet = common::RealServer;

/// What these tests ask of the server beyond the shared harness.
trait Failing {
    /// Runs a command that must fail with exit code 1; returns its stderr, one line.
    async fn fails(&self, args: &[&str]) -> anyhow::Result<String>;
}

impl Failing for Fleet {
    async fn fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.bosun(args).await?;
        let message = stderr(&output);
        if output.status.code() != Some(1) {
            bail!(
                "bosun {args:?} exited with {:?}, stdout {:?}, stderr {message:?}",
                output.status.code(),
                stdout(&output)
            );
        }
        assert!(
            message.starts_with("error: ") && message.lines().count() == 1,
            "{message:?}"
        );
        assert!(stdout(&output).is_empty(), "{}", stdout(&output));
        Ok(message)
    }
}

/// The values of `field` in the JSON objects of `list`.
fn strings(list: &serde_json::Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_are_created_listed_and_deleted() -> anyhow::Result<()> {
    let fleet = Fleet::start(ADMIN_PASSWORD, false).await?;

    let created = fleet
        .json(&[
            "activation",
            "create",
            "--description",
            "web fleet",
            "--default-instance-name",
            "web",
            "--limit",
            "3",
            "--expires-in",
            "7d",
            "--tag",
            "env=prod",
        ])
        .await?;
    let id = created["activation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let code = created["activation_code"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{created}");
    assert!(code.starts_with("bac_"), "{created}");
    assert_eq!(
        created["register_command"],
        format!(
            "bosun-agent register --server {} --activation-id {id} --activation-code {code}",
            fleet.url
        )
    );

    // As a table: the id, the code, the line to run, and the warning on stderr.
    let in_two_days = chrono::Utc::now() + chrono::Duration::days(2);
    let in_two_days = in_two_days.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let output = fleet
        .bosun(&["activation", "create", "--expires-at", &in_two_days])
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.starts_with("activation id:    "), "{table}");
    assert!(table.contains("\nactivation code:  bac_"), "{table}");
    assert!(
        table.contains(&format!(
            "\n  bosun-agent register --server {} --activation-id ",
            fleet.url
        )),
        "{table}"
    );
    assert!(table.contains("BOSUN_ACTIVATION_CODE"), "{table}");
    assert!(
        stderr(&output).contains("shown only this once"),
        "{}",
        stderr(&output)
    );
    // More than 30 days ahead: the server's rule, reported as it words it.
    let message = fleet
        .fails(&[
            "activation",
            "create",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ])
        .await?;
    assert!(
        message.starts_with("error: invalid argument: "),
        "{message}"
    );

    let listed = fleet.json(&["activation", "ls"]).await?;
    let activations = &listed["activations"];
    let ours = activations
        .as_array()
        .and_then(|all| all.iter().find(|a| a["activation_id"] == id.as_str()))
        .with_context(|| format!("{id} not listed: {listed}"))?;
    assert_eq!(ours["description"], "web fleet");
    assert_eq!(ours["default_instance_name"], "web");
    assert_eq!(ours["registration_limit"], 3);
    assert_eq!(ours["registrations_count"], 0);
    assert_eq!(ours["expired"], false);
    assert_eq!(
        ours["tags"],
        serde_json::json!([{"key": "env", "value": "prod"}])
    );
    assert!(ours.get("activation_code").is_none(), "{ours}");
    assert!(!listed.to_string().contains(code), "a listing shows a code");

    let table = fleet.ok(&["activation", "ls"]).await?;
    assert!(
        table.starts_with("ID  ") && table.contains("REGISTRATIONS  EXPIRES"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|line| line.starts_with(&id))
        .with_context(|| format!("{id} not in\n{table}"))?;
    assert!(row.contains("web fleet") && row.contains(" 0/3 "), "{row}");
    assert!(row.contains(" no ") && row.ends_with("env=prod"), "{row}");

    assert_eq!(
        fleet.ok(&["activation", "rm", &id]).await?,
        format!("deleted activation {id}\n")
    );
    let listed = fleet.json(&["activation", "ls"]).await?;
    assert!(
        !strings(&listed["activations"], "activation_id").contains(&id),
        "{listed}"
    );
    let message = fleet.fails(&["activation", "rm", &id]).await?;
    assert!(message.starts_with("error: not found: "), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_created_shown_updated_resolved_and_deleted() -> anyhow::Result<()> {
    let fleet = Fleet::start(ADMIN_PASSWORD, false).await?;

    let created = fleet
        .ok(&[
            "group",
            "create",
            "web",
            "--tag",
            "env=prod,stage",
            "--tag",
            "role",
            "--description",
            "web servers",
        ])
        .await?;
    assert!(created.starts_with("name:            web\n"), "{created}");
    assert!(
        created.contains("\ndescription:     web servers\n"),
        "{created}"
    );
    assert!(
        created.contains("\ntag filters:     env=prod,stage; role\n"),
        "{created}"
    );

    let message = fleet
        .fails(&["group", "create", "web", "--tag", "env=prod"])
        .await?;
    assert!(message.starts_with("error: already exists: "), "{message}");

    let listed = fleet.json(&["group", "ls"]).await?;
    assert_eq!(strings(&listed["groups"], "name"), ["web"]);
    let table = fleet.ok(&["group", "ls"]).await?;
    assert!(table.starts_with("NAME  "), "{table}");
    assert!(table.contains("web   env=prod,stage; role"), "{table}");

    let shown = fleet.json(&["group", "show", "web"]).await?;
    assert_eq!(shown["name"], "web");
    assert_eq!(shown["description"], "web servers");
    assert_eq!(
        shown["tag_filters"],
        serde_json::json!([{"key": "env", "values": ["prod", "stage"]}, {"key": "role", "values": []}])
    );

    let updated = fleet
        .json(&[
            "group",
            "update",
            "web",
            "--tag",
            "env=prod",
            "--resource-type",
            "Bosun::Node",
        ])
        .await?;
    assert_eq!(
        updated["tag_filters"],
        serde_json::json!([{"key": "env", "values": ["prod"]}])
    );
    // The description stays when not given.
    assert_eq!(updated["description"], "web servers");
    let shown = fleet.json(&["group", "show", "web"]).await?;
    assert_eq!(shown["tag_filters"], updated["tag_filters"]);

    // No nodes yet, so no members.
    assert_eq!(
        fleet.ok(&["group", "resources", "web"]).await?,
        "RESOURCE ID  TYPE  ARN\n"
    );
    let resources = fleet.json(&["group", "resources", "web"]).await?;
    assert_eq!(
        resources,
        serde_json::json!({"group": "web", "resources": []})
    );

    assert_eq!(
        fleet.ok(&["group", "rm", "web"]).await?,
        "deleted group web\n"
    );
    let message = fleet.fails(&["group", "show", "web"]).await?;
    assert!(message.starts_with("error: not found: "), "{message}");
    let message = fleet.fails(&["group", "rm", "web"]).await?;
    assert!(message.starts_with("error: not found: "), "{message}");
    assert_eq!(
        fleet.json(&["group", "ls"]).await?,
        serde_json::json!({"groups": []})
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_fleet_lists_no_nodes_and_unknown_nodes_are_not_found() -> anyhow::Result<()> {
    let fleet = Fleet::start(ADMIN_PASSWORD, false).await?;
    assert_eq!(fleet.ok(&["node", "ls"]).await?, NODE_HEADER);
    assert_eq!(
        fleet.json(&["node", "ls", "--ping", "online"]).await?,
        serde_json::json!({"nodes": []})
    );

    let unknown = "mi-0000000000000000a";
    let message = fleet.fails(&["node", "show", unknown]).await?;
    assert!(message.contains("not found"), "{message}");
    assert!(message.contains(unknown), "{message}");
    for args in [
        &["node", "deregister", unknown][..],
        &["node", "tag", unknown, "env=prod"],
    ] {
        let message = fleet.fails(args).await?;
        assert!(
            message.starts_with("error: not found: "),
            "{args:?}: {message}"
        );
    }

    // Bad arguments fail before any call, naming what is wrong.
    let output = fleet
        .bosun(&["node", "ls", "--filter", "PlatformType"])
        .await?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected KEY=VALUE[,VALUE…], e.g. PlatformType=Linux,MacOS"),
        "{}",
        stderr(&output)
    );
    let output = fleet.bosun(&["node", "tag", unknown, "env"]).await?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected KEY=VALUE, e.g. env=prod"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

/// A `bosun-agent run`, killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The `bosun-agent` binary built beside `bosun`.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let binary = Path::new(env!("CARGO_BIN_EXE_bosun")).with_file_name("bosun-agent");
    if !binary.exists() {
        bail!(
            "{} does not exist; build it first with `cargo build -p bosun-agent`",
            binary.display()
        );
    }
    Ok(binary)
}

/// Runs the `register_command` that `activation create` printed, as an operator would paste
/// it, with a private state directory; returns the node id it prints.
async fn register(register_command: &str, state_dir: &Path) -> anyhow::Result<String> {
    let words: Vec<&str> = register_command.split_whitespace().collect();
    let Some((&"bosun-agent", args)) = words.split_first() else {
        bail!("not a bosun-agent command: {register_command}");
    };
    let output = Command::new(agent_binary()?)
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .context("bosun-agent register did not finish within 60 s")??;
    if !output.status.success() {
        bail!("bosun-agent register failed: {}", stderr(&output));
    }
    Ok(stdout(&output).trim().to_owned())
}

fn run_agent(url: &str, state_dir: &Path, log: PathBuf) -> anyhow::Result<Agent> {
    let child = Command::new(agent_binary()?)
        .args(["run", "--server", url])
        .arg("--state-dir")
        .arg(state_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start bosun-agent run")?;
    Ok(Agent { child, log })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_agent_is_listed_tagged_grouped_and_deregistered() -> anyhow::Result<()> {
    let fleet = Fleet::start(ADMIN_PASSWORD, false).await?;
    let created = fleet
        .json(&[
            "activation",
            "create",
            "--default-instance-name",
            "cli-test-node",
            "--tag",
            "env=test",
        ])
        .await?;
    let activation_id = created["activation_id"].as_str().unwrap_or_default();
    let command = created["register_command"].as_str().unwrap_or_default();

    let state_dir = fleet.root.path().join("agent");
    let node_id = register(command, &state_dir).await?;
    assert!(
        node_id.starts_with("mi-") && node_id.len() == 20,
        "{node_id:?}"
    );
    let mut agent = run_agent(&fleet.url, &state_dir, fleet.root.path().join("agent.log"))?;

    // Listed, and Online once the agent has connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        let listed = fleet.json(&["node", "ls"]).await?;
        let node = listed["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["instance_id"] == node_id.as_str()))
            .cloned();
        if let Some(node) = node
            && node["ping_status"] == "Online"
        {
            break node;
        }
        if Instant::now() > deadline {
            bail!(
                "{node_id} not Online within 30 s: {listed}\nagent log:\n{}\nserver log:\n{}",
                agent.log(),
                fleet.server_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(node["name"], "cli-test-node");
    assert_eq!(node["activation_id"], activation_id);
    assert!(node["last_ping_date_time"].is_string(), "{node}");
    assert!(
        !node["agent_version"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{node}"
    );

    let table = fleet.ok(&["node", "ls", "--ping", "online"]).await?;
    let row = table
        .lines()
        .find(|line| line.starts_with(&node_id))
        .with_context(|| format!("{node_id} not in\n{table}"))?;
    assert!(row.contains(" cli-test-node  Online  "), "{row}");

    // The activation counts the registration.
    let listed = fleet.json(&["activation", "ls"]).await?;
    let activation = listed["activations"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["activation_id"] == activation_id))
        .with_context(|| format!("{activation_id} not listed: {listed}"))?;
    assert_eq!(activation["registrations_count"], 1);

    // Tags: the activation's, then ours.
    assert_eq!(
        fleet
            .ok(&["node", "tag", &node_id, "role=web", "tier=1"])
            .await?,
        format!("tagged node {node_id}: role, tier\n")
    );
    let shown = fleet.json(&["node", "show", &node_id]).await?;
    assert_eq!(shown["instance_id"], node_id.as_str());
    assert_eq!(shown["ping_status"], "Online");
    let mut tags: Vec<(String, String)> = shown["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .map(|t| {
                    (
                        t["key"].as_str().unwrap_or_default().to_owned(),
                        t["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("env".to_owned(), "test".to_owned()),
            ("role".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "1".to_owned()),
        ]
    );
    let table = fleet.ok(&["node", "show", &node_id]).await?;
    assert!(
        table.starts_with(&format!("id:{}{node_id}\n", " ".repeat(16))),
        "{table}"
    );
    assert!(table.contains("\nping status:"), "{table}");
    assert!(table.contains("role=web"), "{table}");

    // Filters by tag and by group, and the group's resources.
    fleet
        .ok(&["group", "create", "web", "--tag", "role=web"])
        .await?;
    let members = fleet.json(&["group", "resources", "web"]).await?;
    assert_eq!(
        strings(&members["resources"], "resource_id"),
        [node_id.as_str()]
    );
    let listed = fleet.json(&["node", "ls", "--group", "web"]).await?;
    assert_eq!(strings(&listed["nodes"], "instance_id"), [node_id.as_str()]);
    let listed = fleet
        .json(&["node", "ls", "--tag", "env=test", "--tag", "role=web"])
        .await?;
    assert_eq!(strings(&listed["nodes"], "instance_id"), [node_id.as_str()]);
    let listed = fleet.json(&["node", "ls", "--tag", "role=db"]).await?;
    assert_eq!(listed, serde_json::json!({"nodes": []}));

    assert_eq!(
        fleet.ok(&["node", "untag", &node_id, "role"]).await?,
        format!("removed tags from node {node_id}: role\n")
    );
    let members = fleet.json(&["group", "resources", "web"]).await?;
    assert_eq!(members["resources"], serde_json::json!([]));

    // Deregistered: gone from the listing, not found, and the agent is told to stop.
    assert_eq!(
        fleet.ok(&["node", "deregister", &node_id]).await?,
        format!("deregistered node {node_id}\n")
    );
    assert_eq!(fleet.ok(&["node", "ls"]).await?, NODE_HEADER);
    let message = fleet.fails(&["node", "show", &node_id]).await?;
    assert!(message.contains("not found"), "{message}");
    let message = fleet.fails(&["node", "deregister", &node_id]).await?;
    assert!(message.starts_with("error: not found: "), "{message}");

    let status = tokio::time::timeout(Duration::from_secs(30), agent.child.wait())
        .await
        .with_context(|| {
            format!(
                "the agent still runs 30 s after its node was deregistered:\n{}",
                agent.log()
            )
        })??;
    // bosun-agent exits 3 when the server says its node is deregistered.
    assert_eq!(status.code(), Some(3), "agent log:\n{}", agent.log());
    Ok(())
}

// ---- against fakes: what each command sends ----

mod fake {
    use std::sync::{Arc, Mutex};

    use bosun_proto::inventory::v1::node_service_server::{NodeService, NodeServiceServer};
    use bosun_proto::inventory::v1::resource_group_service_server::{
        ResourceGroupService, ResourceGroupServiceServer,
    };
    use bosun_proto::inventory::v1::*;
    use tonic::{Request, Response, Status};

    /// A request a fake received, kept whole so tests can compare every field.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Call {
        CreateActivation(CreateActivationRequest),
        DescribeActivations(DescribeActivationsRequest),
        DeleteActivation(DeleteActivationRequest),
        Describe(DescribeInstanceInformationRequest),
        Deregister(DeregisterManagedInstanceRequest),
        AddTags(AddTagsToResourceRequest),
        RemoveTags(RemoveTagsFromResourceRequest),
        ListTags(ListTagsForResourceRequest),
        CreateGroup(CreateGroupRequest),
        ListGroups(ListGroupsRequest),
        GetGroup(GetGroupRequest),
        UpdateGroup(UpdateGroupQueryRequest),
        DeleteGroup(DeleteGroupRequest),
        GroupResources(ListGroupResourcesRequest),
    }

    pub type Calls = Arc<Mutex<Vec<Call>>>;

    /// The node the fake knows; every other id is not found.
    pub const KNOWN: &str = "mi-0123456789abcdef0";

    pub fn node(id: &str) -> InstanceInformation {
        InstanceInformation {
            instance_id: id.to_owned(),
            ping_status: PingStatus::Online as i32,
            platform_type: "Linux".to_owned(),
            name: format!("name-{id}"),
            ..Default::default()
        }
    }

    fn group(name: &str, query: Option<ResourceQuery>, description: &str) -> Group {
        Group {
            name: name.to_owned(),
            description: description.to_owned(),
            resource_query: query,
            ..Default::default()
        }
    }

    #[derive(Clone)]
    pub struct Fake {
        pub calls: Calls,
    }

    impl Fake {
        fn record(&self, call: Call) {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(call);
            }
        }

        pub fn routes(&self) -> tonic::service::Routes {
            tonic::service::Routes::new(NodeServiceServer::new(self.clone()))
                .add_service(ResourceGroupServiceServer::new(self.clone()))
        }
    }

    #[tonic::async_trait]
    impl NodeService for Fake {
        async fn create_activation(
            &self,
            request: Request<CreateActivationRequest>,
        ) -> Result<Response<CreateActivationResponse>, Status> {
            self.record(Call::CreateActivation(request.into_inner()));
            Ok(Response::new(CreateActivationResponse {
                activation_id: "0190f0aa-0000-7000-8000-000000000001".to_owned(),
                activation_code: "bac_secret-code".to_owned(),
            }))
        }

        async fn describe_activations(
            &self,
            request: Request<DescribeActivationsRequest>,
        ) -> Result<Response<DescribeActivationsResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::DescribeActivations(request.clone()));
            let (id, next_token) = match request.next_token.as_str() {
                "" => ("a1", "page-2"),
                "page-2" => ("a2", ""),
                other => return Err(Status::invalid_argument(format!("bad token {other}"))),
            };
            Ok(Response::new(DescribeActivationsResponse {
                activation_list: vec![Activation {
                    activation_id: id.to_owned(),
                    registration_limit: 5,
                    registrations_count: 2,
                    ..Default::default()
                }],
                next_token: next_token.to_owned(),
            }))
        }

        async fn delete_activation(
            &self,
            request: Request<DeleteActivationRequest>,
        ) -> Result<Response<DeleteActivationResponse>, Status> {
            self.record(Call::DeleteActivation(request.into_inner()));
            Ok(Response::new(DeleteActivationResponse {}))
        }

        async fn register_managed_instance(
            &self,
            _: Request<RegisterManagedInstanceRequest>,
        ) -> Result<Response<RegisterManagedInstanceResponse>, Status> {
            Err(Status::unimplemented("not in the fake"))
        }

        async fn describe_instance_information(
            &self,
            request: Request<DescribeInstanceInformationRequest>,
        ) -> Result<Response<DescribeInstanceInformationResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::Describe(request.clone()));
            // A lookup by id answers that node when known, nothing otherwise.
            if let Some(filter) = request.filters.iter().find(|f| f.key == "InstanceIds") {
                let nodes = filter
                    .values
                    .iter()
                    .filter(|id| *id == KNOWN)
                    .map(|id| node(id))
                    .collect();
                return Ok(Response::new(DescribeInstanceInformationResponse {
                    instance_information_list: nodes,
                    next_token: String::new(),
                }));
            }
            // Two pages of two, so the CLI must follow next_token (and stop at --max).
            let (ids, next_token) = match request.next_token.as_str() {
                "" => (["mi-00000000000000001", "mi-00000000000000002"], "page-2"),
                "page-2" => (["mi-00000000000000003", "mi-00000000000000004"], ""),
                other => return Err(Status::invalid_argument(format!("bad token {other}"))),
            };
            let wanted = usize::try_from(request.max_results).unwrap_or(0).max(1);
            Ok(Response::new(DescribeInstanceInformationResponse {
                instance_information_list: ids.iter().take(wanted).map(|id| node(id)).collect(),
                next_token: next_token.to_owned(),
            }))
        }

        async fn deregister_managed_instance(
            &self,
            request: Request<DeregisterManagedInstanceRequest>,
        ) -> Result<Response<DeregisterManagedInstanceResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::Deregister(request.clone()));
            if request.instance_id != KNOWN {
                return Err(Status::not_found(format!(
                    "node {} is not registered",
                    request.instance_id
                )));
            }
            Ok(Response::new(DeregisterManagedInstanceResponse {}))
        }

        async fn add_tags_to_resource(
            &self,
            request: Request<AddTagsToResourceRequest>,
        ) -> Result<Response<AddTagsToResourceResponse>, Status> {
            self.record(Call::AddTags(request.into_inner()));
            Ok(Response::new(AddTagsToResourceResponse {}))
        }

        async fn remove_tags_from_resource(
            &self,
            request: Request<RemoveTagsFromResourceRequest>,
        ) -> Result<Response<RemoveTagsFromResourceResponse>, Status> {
            self.record(Call::RemoveTags(request.into_inner()));
            Ok(Response::new(RemoveTagsFromResourceResponse {}))
        }

        async fn list_tags_for_resource(
            &self,
            request: Request<ListTagsForResourceRequest>,
        ) -> Result<Response<ListTagsForResourceResponse>, Status> {
            self.record(Call::ListTags(request.into_inner()));
            Ok(Response::new(ListTagsForResourceResponse {
                tag_list: vec![Tag {
                    key: "env".to_owned(),
                    value: "prod".to_owned(),
                }],
            }))
        }

        async fn resolve_targets(
            &self,
            _: Request<ResolveTargetsRequest>,
        ) -> Result<Response<ResolveTargetsResponse>, Status> {
            Err(Status::unimplemented("not in the fake"))
        }
    }

    #[tonic::async_trait]
    impl ResourceGroupService for Fake {
        async fn create_group(
            &self,
            request: Request<CreateGroupRequest>,
        ) -> Result<Response<CreateGroupResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::CreateGroup(request.clone()));
            Ok(Response::new(CreateGroupResponse {
                group: Some(group(
                    &request.name,
                    request.resource_query,
                    &request.description,
                )),
            }))
        }

        async fn list_groups(
            &self,
            request: Request<ListGroupsRequest>,
        ) -> Result<Response<ListGroupsResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::ListGroups(request.clone()));
            let (name, next_token) = match request.next_token.as_str() {
                "" => ("db", "page-2"),
                "page-2" => ("web", ""),
                other => return Err(Status::invalid_argument(format!("bad token {other}"))),
            };
            Ok(Response::new(ListGroupsResponse {
                groups: vec![group(name, None, "")],
                next_token: next_token.to_owned(),
            }))
        }

        async fn get_group(
            &self,
            request: Request<GetGroupRequest>,
        ) -> Result<Response<GetGroupResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::GetGroup(request.clone()));
            Err(Status::not_found(format!(
                "group {} not found",
                request.name
            )))
        }

        async fn update_group_query(
            &self,
            request: Request<UpdateGroupQueryRequest>,
        ) -> Result<Response<UpdateGroupQueryResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::UpdateGroup(request.clone()));
            Ok(Response::new(UpdateGroupQueryResponse {
                group: Some(group(
                    &request.name,
                    request.resource_query,
                    request.description.as_deref().unwrap_or("kept"),
                )),
            }))
        }

        async fn delete_group(
            &self,
            request: Request<DeleteGroupRequest>,
        ) -> Result<Response<DeleteGroupResponse>, Status> {
            self.record(Call::DeleteGroup(request.into_inner()));
            Ok(Response::new(DeleteGroupResponse {}))
        }

        async fn list_group_resources(
            &self,
            request: Request<ListGroupResourcesRequest>,
        ) -> Result<Response<ListGroupResourcesResponse>, Status> {
            let request = request.into_inner();
            self.record(Call::GroupResources(request.clone()));
            let (id, next_token) = match request.next_token.as_str() {
                "" => ("mi-00000000000000001", "page-2"),
                "page-2" => ("mi-00000000000000002", ""),
                other => return Err(Status::invalid_argument(format!("bad token {other}"))),
            };
            Ok(Response::new(ListGroupResourcesResponse {
                resources: vec![ResourceIdentifier {
                    resource_arn: format!("node:{id}"),
                    resource_type: "Bosun::Node".to_owned(),
                    resource_id: id.to_owned(),
                }],
                next_token: next_token.to_owned(),
            }))
        }
    }
}

/// A fake inventory on a loopback port, and a config dir for the CLI.
struct FakeInventory {
    url: String,
    calls: fake::Calls,
    config_dir: tempfile::TempDir,
}

impl FakeInventory {
    async fn start() -> anyhow::Result<Self> {
        let calls = fake::Calls::default();
        let url = common::serve(
            fake::Fake {
                calls: calls.clone(),
            }
            .routes(),
        )
        .await?;
        Ok(Self {
            url,
            calls,
            config_dir: tempfile::tempdir()?,
        })
    }

    async fn bosun(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["--server", self.url.as_str(), "--token", "t"];
        all.extend_from_slice(args);
        common::run_bosun(self.config_dir.path(), &all, "", &[]).await
    }

    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.bosun(args).await?;
        if !output.status.success() {
            bail!("bosun {args:?} failed: {}", stderr(&output));
        }
        Ok(stdout(&output))
    }

    /// The calls so far, forgotten afterwards.
    fn take_calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .map(|mut calls| std::mem::take(&mut *calls))
            .unwrap_or_default()
    }
}

fn tag(key: &str, value: &str) -> inventory::Tag {
    inventory::Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn filter(key: &str, values: &[&str]) -> inventory::InstanceInformationFilter {
    inventory::InstanceInformationFilter {
        key: key.to_owned(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ls_sends_the_filters_on_every_page_and_stops_at_max() -> anyhow::Result<()> {
    let fake = FakeInventory::start().await?;
    let table = fake
        .ok(&[
            "node",
            "ls",
            "--filter",
            "PlatformType=Linux,MacOS",
            "--ping",
            "online",
            "--ping",
            "connection-lost",
            "--tag",
            "env=prod",
            "--tag",
            "env=stage",
            "--group",
            "web",
        ])
        .await?;
    let ids: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        ids,
        [
            "mi-00000000000000001",
            "mi-00000000000000002",
            "mi-00000000000000003",
            "mi-00000000000000004"
        ],
        "{table}"
    );
    let filters = vec![
        filter("PlatformType", &["Linux", "MacOS"]),
        filter("PingStatus", &["Online", "ConnectionLost"]),
        filter("tag:env", &["prod", "stage"]),
        filter("resource-groups:Name", &["web"]),
    ];
    assert_eq!(
        fake.take_calls(),
        [
            Call::Describe(inventory::DescribeInstanceInformationRequest {
                filters: filters.clone(),
                max_results: 1000,
                next_token: String::new(),
            }),
            Call::Describe(inventory::DescribeInstanceInformationRequest {
                filters,
                max_results: 1000,
                next_token: "page-2".to_owned(),
            }),
        ]
    );

    let listed: serde_json::Value =
        serde_json::from_str(&fake.ok(&["node", "ls", "--max", "3", "-o", "json"]).await?)?;
    assert_eq!(
        strings(&listed["nodes"], "instance_id"),
        [
            "mi-00000000000000001",
            "mi-00000000000000002",
            "mi-00000000000000003"
        ]
    );
    let sizes: Vec<i32> = fake
        .take_calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::Describe(request) => Some(request.max_results),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [3, 1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_show_tag_untag_and_deregister_send_the_node() -> anyhow::Result<()> {
    let fake = FakeInventory::start().await?;
    let shown: serde_json::Value = serde_json::from_str(
        &fake
            .ok(&["node", "show", fake::KNOWN, "-o", "json"])
            .await?,
    )?;
    assert_eq!(shown["instance_id"], fake::KNOWN);
    assert_eq!(shown["ping_status"], "Online");
    assert_eq!(
        shown["tags"],
        serde_json::json!([{"key": "env", "value": "prod"}])
    );
    assert_eq!(
        fake.take_calls(),
        [
            Call::Describe(inventory::DescribeInstanceInformationRequest {
                filters: vec![filter("InstanceIds", &[fake::KNOWN])],
                max_results: 1,
                next_token: String::new(),
            }),
            Call::ListTags(inventory::ListTagsForResourceRequest {
                resource_type: "ManagedInstance".to_owned(),
                resource_id: fake::KNOWN.to_owned(),
            }),
        ]
    );

    let output = fake
        .bosun(&["node", "show", "mi-00000000000000bad"])
        .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: node mi-00000000000000bad not found: it never registered, or it was deregistered\n"
    );
    assert!(stdout(&output).is_empty());
    fake.take_calls();

    assert_eq!(
        fake.ok(&["node", "tag", fake::KNOWN, "env=prod", "note=a=b", "empty="])
            .await?,
        format!("tagged node {}: env, note, empty\n", fake::KNOWN)
    );
    assert_eq!(
        fake.ok(&["node", "untag", fake::KNOWN, "env", "note"])
            .await?,
        format!("removed tags from node {}: env, note\n", fake::KNOWN)
    );
    assert_eq!(
        fake.ok(&["node", "deregister", fake::KNOWN]).await?,
        format!("deregistered node {}\n", fake::KNOWN)
    );
    assert_eq!(
        fake.take_calls(),
        [
            Call::AddTags(inventory::AddTagsToResourceRequest {
                resource_type: "ManagedInstance".to_owned(),
                resource_id: fake::KNOWN.to_owned(),
                tags: vec![tag("env", "prod"), tag("note", "a=b"), tag("empty", "")],
            }),
            Call::RemoveTags(inventory::RemoveTagsFromResourceRequest {
                resource_type: "ManagedInstance".to_owned(),
                resource_id: fake::KNOWN.to_owned(),
                tag_keys: vec!["env".to_owned(), "note".to_owned()],
            }),
            Call::Deregister(inventory::DeregisterManagedInstanceRequest {
                instance_id: fake::KNOWN.to_owned(),
            }),
        ]
    );

    // The server's refusal, as one line; stdin is not a terminal and nothing prompts.
    let output = fake
        .bosun(&["node", "deregister", "mi-00000000000000bad"])
        .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: not found: node mi-00000000000000bad is not registered\n"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_commands_send_what_was_asked() -> anyhow::Result<()> {
    let fake = FakeInventory::start().await?;
    let before = chrono::Utc::now();
    let output = fake
        .bosun(&[
            "activation",
            "create",
            "--description",
            "web fleet",
            "--default-instance-name",
            "web",
            "--limit",
            "10",
            "--expires-in",
            "7d",
            "--tag",
            "env=prod",
        ])
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "activation id:    0190f0aa-0000-7000-8000-000000000001\n\
             activation code:  bac_secret-code\n\
             \n\
             The activation code is shown only this once. To register a node, run on it:\n\
             \n  bosun-agent register --server {} --activation-id 0190f0aa-0000-7000-8000-000000000001 --activation-code bac_secret-code\n\
             \n\
             To keep the code out of the process list and shell history, set BOSUN_ACTIVATION_CODE instead of passing --activation-code.\n",
            fake.url
        )
    );
    assert!(stderr(&output).starts_with("warning: the activation code is shown only this once"));
    let calls = fake.take_calls();
    let [Call::CreateActivation(request)] = calls.as_slice() else {
        bail!("calls: {calls:?}");
    };
    assert_eq!(request.description, "web fleet");
    assert_eq!(request.default_instance_name, "web");
    assert_eq!(request.registration_limit, 10);
    assert_eq!(request.tags, [tag("env", "prod")]);
    let expires = request
        .expiration_date
        .map(|at| at.seconds)
        .context("no expiration date sent")?;
    let week = 7 * 86_400;
    assert!(
        (before.timestamp() + week..=chrono::Utc::now().timestamp() + week).contains(&expires),
        "{expires}"
    );

    fake.ok(&[
        "activation",
        "create",
        "--expires-at",
        "2030-01-31T19:00:00+01:00",
    ])
    .await?;
    let calls = fake.take_calls();
    let [Call::CreateActivation(request)] = calls.as_slice() else {
        bail!("calls: {calls:?}");
    };
    // Nothing given: the server's defaults.
    assert_eq!(request.registration_limit, 0);
    assert_eq!(request.description, "");
    assert_eq!(
        request.expiration_date.map(|at| (at.seconds, at.nanos)),
        Some((1_896_112_800, 0))
    );

    let table = fake.ok(&["activation", "ls"]).await?;
    let ids: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["a1", "a2"], "{table}");
    assert!(table.contains(" 2/5 "), "{table}");
    assert_eq!(
        fake.ok(&["activation", "rm", "a1"]).await?,
        "deleted activation a1\n"
    );
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[2],
        Call::DeleteActivation(inventory::DeleteActivationRequest {
            activation_id: "a1".to_owned()
        })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_send_the_query() -> anyhow::Result<()> {
    let fake = FakeInventory::start().await?;
    let query = |tags: Vec<inventory::TagFilter>, types: &[&str]| inventory::ResourceQuery {
        resource_type_filters: types.iter().map(|t| (*t).to_owned()).collect(),
        tag_filters: tags,
    };
    let tag_filter = |key: &str, values: &[&str]| inventory::TagFilter {
        key: key.to_owned(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };

    let created = fake
        .ok(&[
            "group",
            "create",
            "web",
            "--tag",
            "env=prod,stage",
            "--tag",
            "role",
            "--resource-type",
            "Bosun::Node",
            "--description",
            "web servers",
        ])
        .await?;
    assert!(
        created.contains("tag filters:     env=prod,stage; role\n"),
        "{created}"
    );
    assert!(
        created.contains("resource types:  Bosun::Node\n"),
        "{created}"
    );
    let updated = fake
        .ok(&["group", "update", "web", "--tag", "env=", "-o", "yaml"])
        .await?;
    // The fake keeps the description when none is sent.
    assert!(updated.contains("description: kept\n"), "{updated}");
    fake.ok(&[
        "group",
        "update",
        "web",
        "--tag",
        "env=",
        "--description",
        "new",
    ])
    .await?;
    assert_eq!(
        fake.take_calls(),
        [
            Call::CreateGroup(inventory::CreateGroupRequest {
                name: "web".to_owned(),
                description: "web servers".to_owned(),
                resource_query: Some(query(
                    vec![
                        tag_filter("env", &["prod", "stage"]),
                        tag_filter("role", &[])
                    ],
                    &["Bosun::Node"]
                )),
            }),
            Call::UpdateGroup(inventory::UpdateGroupQueryRequest {
                name: "web".to_owned(),
                resource_query: Some(query(vec![tag_filter("env", &[""])], &[])),
                description: None,
            }),
            Call::UpdateGroup(inventory::UpdateGroupQueryRequest {
                name: "web".to_owned(),
                resource_query: Some(query(vec![tag_filter("env", &[""])], &[])),
                description: Some("new".to_owned()),
            }),
        ]
    );

    assert_eq!(
        fake.ok(&["group", "ls"]).await?,
        "NAME  TAG FILTERS  RESOURCE TYPES   UPDATED  DESCRIPTION\n\
         db    -            (all supported)  -        -\n\
         web   -            (all supported)  -        -\n"
    );
    assert_eq!(
        fake.ok(&["group", "resources", "web"]).await?,
        "RESOURCE ID           TYPE         ARN\n\
         mi-00000000000000001  Bosun::Node  node:mi-00000000000000001\n\
         mi-00000000000000002  Bosun::Node  node:mi-00000000000000002\n"
    );
    assert_eq!(
        fake.ok(&["group", "rm", "web"]).await?,
        "deleted group web\n"
    );
    let output = fake.bosun(&["group", "show", "nope"]).await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "error: not found: group nope not found\n");
    let calls = fake.take_calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::ListGroups(_)))
            .count(),
        2
    );
    assert!(calls.contains(&Call::GroupResources(
        inventory::ListGroupResourcesRequest {
            name: "web".to_owned(),
            max_results: 1000,
            next_token: "page-2".to_owned(),
        }
    )));
    assert!(
        calls.contains(&Call::DeleteGroup(inventory::DeleteGroupRequest {
            name: "web".to_owned()
        }))
    );

    // Bad input fails before any call.
    for args in [
        &["group", "create", "web"][..],
        &["group", "create", "web", "--tag", "=prod"],
        &["group", "create", "web", "--tag", "env=a,,b"],
        &["node", "ls", "--ping", "asleep"],
        &["activation", "create", "--limit", "0"],
        &["activation", "create", "--expires-at", "tomorrow"],
    ] {
        let output = fake.bosun(args).await?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    assert!(fake.take_calls().is_empty());
    Ok(())
}
