//! Node messaging: how services reach nodes and hear back from them.
//!
//! - [`NodeLink::send`] (or [`NodeLink::stage`] in the caller's transaction, then
//!   [`NodeLink::push`] after commit) stores a message for a node in `node_messages` first, then
//!   looks up the node's presence (node → gateway replica) and appends the message to that
//!   replica's inbox stream. The store is the truth: a message whose push was lost (Redis down,
//!   node offline, replica died) is sent when the node next connects and by the gateway's
//!   periodic re-send, until the agent acknowledges it or it expires.
//! - The gateway replica holding a node's stream ([`channel::AgentEdge`]) delivers what
//!   its inbox brings and what is pending on connect, marks messages acknowledged when the agent
//!   says so, and publishes the agent's results to the queue stream
//!   [`results_stream`]`(area)` (consumer groups; de-duplicate on [`NodeResult::result_id`]).
//! - [`NodeDirectory`] is what the channel needs to know about nodes (keys, facts, pings); the
//!   inventory service implements it.

pub mod channel;
pub mod presence;
pub mod store;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bosun_core::ApiError;
use bosun_proto::agent::v1::HostFacts;
use chrono::{DateTime, Utc};





/// What the channel needs to know about nodes. Implemented by `bosun-inventory`.
#[async_trait]
pub trait NodeDirectory: Send + Sync + 'static {
    /// The node's public key, if the node is registered and not deregistered.
    async fn credentials(&self, node_id: &str) -> Result<Option<NodeCredentials>, ApiError>;
    /// Records the facts a node reported on connect, and `at` as its last ping.
    async fn record_connect(
        &self,
        node_id: &str,
        facts: &HostFacts,
        at: DateTime<Utc>,
    ) -> Result<(), ApiError>;
    /// Records `at` as the last ping of each node (one batch per flush, not one write per
    /// heartbeat).
    async fn record_pings(&self, node_ids: &[String], at: DateTime<Utc>) -> Result<(), ApiError>;
}

/// A registered node's proof material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCredentials {
    /// Ed25519 public key, raw.
    pub public_key: [u8; 32],
}

/// A message for one node.
#[derive(Clone, Debug, Default)]
pub struct Outbound {
    pub node_id: String,
    /// `<area>.<kind>`, e.g. `commands.run`; results come back on [`results_stream`]`(area)`.
    pub topic: String,
    pub payload: Vec<u8>,
    /// Not delivered after this.
    pub expires_at: Option<DateTime<Utc>>,
    /// W3C trace context of the request that made the work.
    pub trace_context: BTreeMap<String, String>,
}

/// A result a node sent, as consumers read it from [`results_stream`]`(area)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeResult {
    pub node_id: String,
    /// Chosen by the agent, the same on every re-send: de-duplicate on it.
    pub result_id: String,
    /// The message this answers (empty for unsolicited results).
    pub message_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub trace_context: BTreeMap<String, String>,
}

/// The queue stream results of an area's topics are published to: `node-results.<area>`.
pub fn results_stream(area: &str) -> String {
    format!("node-results.{area}")
}

/// The area of a topic: the part before the first `.`.
pub fn topic_area(topic: &str) -> &str {
    topic.split_once('.').map_or(topic, |(area, _)| area)
}
