//! Nodes for end-to-end tests: an activation, `bosun-agent register` with it, and waiting for
//! the node to be Online.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::inventory::v1::{
    CreateActivationRequest, DescribeInstanceInformationRequest, InstanceInformationFilter,
    PingStatus, Tag,
};

use crate::agents::register;
use crate::{Process, authed};

/// Creates a one-use activation named `name` with `tags` and registers an agent state
/// directory with it; returns the node id.
pub async fn register_node(
    server: &Process,
    token: &str,
    name: &str,
    tags: Vec<Tag>,
    state_dir: &Path,
) -> anyhow::Result<String> {
    let created = NodeServiceClient::new(server.channel().await?)
        .create_activation(authed(
            CreateActivationRequest {
                description: "e2e".into(),
                default_instance_name: name.into(),
                registration_limit: 1,
                tags,
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    let (ok, _, stderr) = register(
        &server.url,
        &created.activation_id,
        &created.activation_code,
        state_dir,
    )
    .await?;
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

/// Waits (up to 30 s) until the node's ping status is Online.
pub async fn wait_online(server: &Process, token: &str, node_id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = NodeServiceClient::new(server.channel().await?)
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
            .into_inner()
            .instance_information_list;
        if list
            .first()
            .is_some_and(|info| info.ping_status == PingStatus::Online as i32)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {node_id} not Online within 30 s: {list:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
