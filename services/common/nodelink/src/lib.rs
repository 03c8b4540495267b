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
//!
//! # Redis keys and queue streams (all under the deployment's `redis_prefix`)
//!
//! - `nodes:presence:<node_id>`: the replica id holding the node's stream, with a TTL of three
//!   ping flushes ([`ChannelOptions::presence_ttl`]); refreshed in batches by the holder,
//!   removed by compare-and-delete ([`RedisPresence`]).
//! - queue stream `node-inbox.<replica_id>`, group `gateway`: pushes to one replica; a
//!   message is a protobuf `Delivery` (header `bosun-nodelink-kind: delivery`) or a close
//!   request (`control`, with `bosun-close-reason`); both carry `bosun-node-id`.
//! - queue stream `node-results.<area>`: [`NodeResult`]s, see [`NodeResult::to_queue`].

pub mod channel;
mod entities;
mod migrations;
pub mod presence;
pub mod store;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bosun_core::ApiError;
use bosun_proto::agent::v1::HostFacts;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use channel::{AgentEdge, ChannelOptions};
pub use migrations::Migrator;
pub use presence::{MemoryPresence, Presence, RedisPresence};
pub use store::{NodeLink, PendingMessage, StoredMessage};

/// Result header: the node that sent the result.
pub const RESULT_NODE_HEADER: &str = "bosun-node-id";
/// Result header: [`NodeResult::result_id`].
pub const RESULT_ID_HEADER: &str = "bosun-result-id";
/// Result header: [`NodeResult::message_id`].
pub const RESULT_MESSAGE_HEADER: &str = "bosun-message-id";
/// Result header: [`NodeResult::topic`].
pub const RESULT_TOPIC_HEADER: &str = "bosun-topic";
/// Result header: [`NodeResult::created_at`], RFC 3339.
pub const RESULT_CREATED_HEADER: &str = "bosun-created-at";
/// The trace-context keys a result carries as plain queue headers, where
/// `bosun_telemetry::extract_map` finds them.
pub const TRACE_CONTEXT_KEYS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

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
    /// heartbeat). Returns the nodes among `node_ids` that are unknown or deregistered: the
    /// gateway closes their streams (`Close{DEREGISTERED}`), so a deregistration takes effect
    /// even when its disconnect message was lost.
    async fn record_pings(
        &self,
        node_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, ApiError>;
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

/// A queue message that is not a well-formed [`NodeResult`]: consumers ack it and log it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed node result {queue_id}: {reason}")]
pub struct MalformedResult {
    /// The queue message id.
    pub queue_id: String,
    /// What is wrong with it.
    pub reason: String,
}

impl NodeResult {
    /// The queue form: the payload as the body, everything else in headers
    /// ([`RESULT_NODE_HEADER`] and friends; the trace context under its own W3C names).
    pub fn to_queue(&self) -> (Bytes, bosun_queue::Headers) {
        let mut headers = bosun_queue::Headers::new();
        for key in TRACE_CONTEXT_KEYS {
            if let Some(value) = self.trace_context.get(key) {
                headers.insert(key.to_owned(), value.clone());
            }
        }
        headers.insert(RESULT_NODE_HEADER.to_owned(), self.node_id.clone());
        headers.insert(RESULT_ID_HEADER.to_owned(), self.result_id.clone());
        headers.insert(RESULT_MESSAGE_HEADER.to_owned(), self.message_id.clone());
        headers.insert(RESULT_TOPIC_HEADER.to_owned(), self.topic.clone());
        headers.insert(
            RESULT_CREATED_HEADER.to_owned(),
            self.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        );
        (Bytes::from(self.payload.clone()), headers)
    }

    /// Reads a result back from a delivery of [`results_stream`]. Only the W3C keys of the
    /// trace context travel ([`TRACE_CONTEXT_KEYS`]).
    pub fn from_delivery(delivery: &bosun_queue::Delivery) -> Result<NodeResult, MalformedResult> {
        let malformed = |reason: String| MalformedResult {
            queue_id: delivery.id.clone(),
            reason,
        };
        let header = |name: &str| {
            delivery
                .headers
                .get(name)
                .cloned()
                .ok_or_else(|| malformed(format!("missing header {name}")))
        };
        let created_at = header(RESULT_CREATED_HEADER)?;
        let created_at = DateTime::parse_from_rfc3339(&created_at)
            .map_err(|error| malformed(format!("header {RESULT_CREATED_HEADER}: {error}")))?
            .with_timezone(&Utc);
        let trace_context = TRACE_CONTEXT_KEYS
            .iter()
            .filter_map(|key| {
                delivery
                    .headers
                    .get(*key)
                    .map(|value| ((*key).to_owned(), value.clone()))
            })
            .collect();
        Ok(NodeResult {
            node_id: header(RESULT_NODE_HEADER)?,
            result_id: header(RESULT_ID_HEADER)?,
            message_id: header(RESULT_MESSAGE_HEADER)?,
            topic: header(RESULT_TOPIC_HEADER)?,
            payload: delivery.payload.to_vec(),
            created_at,
            trace_context,
        })
    }
}

/// The queue stream results of an area's topics are published to: `node-results.<area>`.
pub fn results_stream(area: &str) -> String {
    format!("node-results.{area}")
}

/// The area of a topic: the part before the first `.`.
pub fn topic_area(topic: &str) -> &str {
    topic.split_once('.').map_or(topic, |(area, _)| area)
}

/// Closing a node's stream wherever it is held. Implemented by [`store::NodeLink`] (a control
/// message through the holding replica's inbox); inventory calls it on deregistration.
#[async_trait]
pub trait NodeControl: Send + Sync + 'static {
    /// Closes the node's stream (if any replica holds one) with `Close{reason}`. Succeeds when
    /// the node is not connected.
    async fn disconnect(
        &self,
        node_id: &str,
        reason: bosun_proto::agent::v1::close::Reason,
    ) -> Result<(), ApiError>;
}
