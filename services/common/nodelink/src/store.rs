//! [`NodeLink`]: messages to nodes stored in `node_messages` first, then pushed to the inbox
//! of the gateway replica holding the node's stream. The row is the truth; pushes are a
//! shortcut that may be lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bosun_core::{ApiError, FieldViolation};
use bosun_proto::agent::v1::{Delivery, close::Reason};
use bosun_queue::{Headers, Queue};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use prost::Message as _;
use sea_orm::sea_query::{Expr, ExprTrait as _, ValueTuple};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::entities::node_message;
use crate::presence::Presence;
use crate::{NodeControl, Outbound};

/// Largest payload of a message to a node.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Longest topic, `<area>.<kind>`.
pub const MAX_TOPIC_LEN: usize = 128;
/// Most entries of a trace context, and the longest key and value.
pub const MAX_TRACE_CONTEXT_ENTRIES: usize = 8;
const MAX_TRACE_CONTEXT_KEY_LEN: usize = 64;
const MAX_TRACE_CONTEXT_VALUE_LEN: usize = 1024;
/// Rows per multi-row insert of [`NodeLink::stage_many`] (and ids per read of
/// [`NodeLink::push`]); 10 columns each stays far below both databases' bind limits.
pub const STAGE_CHUNK: usize = 500;
/// Nodes whose messages are published to inboxes at once by one push.
const PUSH_CONCURRENCY: usize = 64;
/// Most messages [`NodeLink::pending`] returns at once.
pub const PENDING_BATCH: u64 = 100;

/// Inbox header: what an inbox message is, [`KIND_DELIVERY`] or [`KIND_CONTROL`].
pub const KIND_HEADER: &str = "bosun-nodelink-kind";
/// An inbox message carrying a [`Delivery`] (protobuf) for a node.
pub const KIND_DELIVERY: &str = "delivery";
/// An inbox message asking the replica to close a node's stream.
pub const KIND_CONTROL: &str = "control";
/// Inbox header: the node the message is for.
pub const NODE_HEADER: &str = "bosun-node-id";
/// Control header: the `Close` reason, by its proto name (`DEREGISTERED`, ...).
pub const REASON_HEADER: &str = "bosun-close-reason";

/// The queue stream a gateway replica reads pushes for its nodes from: `node-inbox.<replica_id>`.
pub fn inbox_stream(replica_id: &str) -> String {
    format!("node-inbox.{replica_id}")
}

/// A stored message not yet acknowledged by its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMessage {
    /// UUID v7, the `Delivery.message_id`.
    pub id: String,
    pub node_id: String,
    /// `<area>.<kind>`.
    pub topic: String,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// Never delivered after this.
    pub expires_at: Option<DateTime<Utc>>,
    /// W3C trace context of the request that made the work.
    pub trace_context: BTreeMap<String, String>,
    /// How many times a gateway sent it so far.
    pub send_count: i32,
}

impl PendingMessage {
    /// The wire form the agent receives.
    pub fn to_delivery(&self) -> Delivery {
        Delivery {
            message_id: self.id.clone(),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            created_at: Some(timestamp(self.created_at)),
            expires_at: self.expires_at.map(timestamp),
            trace_context: self
                .trace_context
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }
}

/// A chrono time as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as chrono time; `None` when out of range.
pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// Whether `node_id` has the form `mi-` and 17 lowercase hex digits.
pub fn is_valid_node_id(node_id: &str) -> bool {
    node_id.len() == 20
        && node_id.starts_with("mi-")
        && node_id[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `topic` has the form `<area>.<kind>`, both parts of `[a-z0-9_-]`.
pub fn is_valid_topic(topic: &str) -> bool {
    let part = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    topic.len() <= MAX_TOPIC_LEN
        && topic
            .split_once('.')
            .is_some_and(|(area, kind)| part(area) && part(kind))
}

/// Checks a trace context's size; `None` when acceptable, else the rule broken.
pub(crate) fn trace_context_problem<'a>(
    entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Option<String> {
    if entries.len() > MAX_TRACE_CONTEXT_ENTRIES {
        return Some(format!(
            "must have at most {MAX_TRACE_CONTEXT_ENTRIES} entries"
        ));
    }
    for (key, value) in entries {
        if key.is_empty() || key.len() > MAX_TRACE_CONTEXT_KEY_LEN {
            return Some(format!(
                "keys must be 1-{MAX_TRACE_CONTEXT_KEY_LEN} characters"
            ));
        }
        if value.len() > MAX_TRACE_CONTEXT_VALUE_LEN {
            return Some(format!(
                "values must be at most {MAX_TRACE_CONTEXT_VALUE_LEN} characters"
            ));
        }
    }
    None
}

fn validate(message: &Outbound) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    let mut violation = |field: &str, rule: String| {
        violations.push(FieldViolation {
            field: field.to_owned(),
            rule,
        });
    };
    if !is_valid_node_id(&message.node_id) {
        violation(
            "node_id",
            "must be mi- followed by 17 lowercase hexadecimal digits".to_owned(),
        );
    }
    if !is_valid_topic(&message.topic) {
        violation(
            "topic",
            format!(
                "must be <area>.<kind> of a-z, 0-9, '_' and '-', at most {MAX_TOPIC_LEN} characters"
            ),
        );
    }
    if message.payload.len() > MAX_PAYLOAD_BYTES {
        violation(
            "payload",
            format!("must be at most {MAX_PAYLOAD_BYTES} bytes"),
        );
    }
    if let Some(problem) = trace_context_problem(message.trace_context.iter()) {
        violation("trace_context", problem);
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument {
            violations,
            reason: None,
        })
    }
}

fn db_error(what: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
    move |error| ApiError::internal(format!("node messages: {what}: {error}"))
}

fn pending_message(model: node_message::Model) -> PendingMessage {
    let trace_context = serde_json::from_str(&model.trace_context).unwrap_or_else(|error| {
        // A broken trace context costs a trace link, not the message.
        tracing::warn!(message_id = %model.id, %error, "stored trace context is not a json object");
        BTreeMap::new()
    });
    PendingMessage {
        id: model.id,
        node_id: model.node_id,
        topic: model.topic,
        payload: model.payload,
        created_at: model.created_at,
        expires_at: model.expires_at,
        trace_context,
        send_count: model.send_count,
    }
}

/// Unacknowledged and not expired at `now`.
fn deliverable(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(node_message::Column::AckedAt.is_null())
        .add(
            Condition::any()
                .add(node_message::Column::ExpiresAt.is_null())
                .add(node_message::Column::ExpiresAt.gt(now)),
        )
}

/// Stores messages to nodes and gets them to the replica holding each node's stream.
#[derive(Clone)]
pub struct NodeLink {
    db: DatabaseConnection,
    queue: Arc<dyn Queue>,
    presence: Arc<dyn Presence>,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("NodeLink").finish_non_exhaustive()
    }
}

impl NodeLink {
    /// A link over the database holding `node_messages` (migrated with [`crate::Migrator`]),
    /// the queue carrying replica inboxes and results, and the presence table.
    pub fn new(db: DatabaseConnection, queue: Arc<dyn Queue>, presence: Arc<dyn Presence>) -> Self {
        Self {
            db,
            queue,
            presence,
        }
    }

    pub(crate) fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    pub(crate) fn presence(&self) -> &Arc<dyn Presence> {
        &self.presence
    }

    /// Stores a message for a node and pushes it to the replica holding the node's stream.
    /// Returns the message id. Fails with `InvalidArgument` naming the field (`node_id`,
    /// `topic`, `payload`, `trace_context`) or `Internal` when the store fails; a failed push
    /// is only logged, since the message is sent on the node's next connect or re-send.
    pub async fn send(&self, message: Outbound) -> Result<String, ApiError> {
        let record = insert(&self.db, message).await?;
        let id = record.id.clone();
        self.push_records(&[record]).await;
        Ok(id)
    }

    /// Stores a message in the caller's transaction without pushing it; call
    /// [`NodeLink::push`] with the returned id after the commit.
    pub async fn stage(
        &self,
        txn: &impl ConnectionTrait,
        message: Outbound,
    ) -> Result<String, ApiError> {
        Ok(insert(txn, message).await?.id)
    }

    /// Stores many messages in the caller's transaction without pushing them (multi-row
    /// inserts of [`STAGE_CHUNK`] rows); returns their ids in order. Every message is
    /// validated first: one bad message fails the whole call and stores nothing of it. Call
    /// [`NodeLink::push`] with the ids after the commit.
    pub async fn stage_many(
        &self,
        txn: &impl ConnectionTrait,
        messages: Vec<Outbound>,
    ) -> Result<Vec<String>, ApiError> {
        for message in &messages {
            validate(message)?;
        }
        let now = Utc::now();
        let mut ids = Vec::with_capacity(messages.len());
        let mut rows = Vec::with_capacity(messages.len().min(STAGE_CHUNK));
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            rows.clear();
            for message in messages.by_ref().take(STAGE_CHUNK) {
                let trace_context =
                    serde_json::to_string(&message.trace_context).map_err(|error| {
                        ApiError::internal(format!("encode trace context: {error}"))
                    })?;
                let id = uuid::Uuid::now_v7().to_string();
                ids.push(id.clone());
                rows.push(node_message::ActiveModel {
                    id: Set(id),
                    node_id: Set(message.node_id),
                    topic: Set(message.topic),
                    payload: Set(message.payload),
                    trace_context: Set(trace_context),
                    created_at: Set(now),
                    expires_at: Set(message.expires_at),
                    acked_at: Set(None),
                    last_sent_at: Set(None),
                    send_count: Set(0),
                });
            }
            node_message::Entity::insert_many(std::mem::take(&mut rows))
                .exec_without_returning(txn)
                .await
                .map_err(db_error("insert many"))?;
        }
        Ok(ids)
    }

    /// Withdraws a message the node has not acknowledged: it expires now, so no gateway
    /// delivers or re-sends it from the store again. Returns `false` when the node already
    /// acknowledged it (or it does not exist): it reached the agent. A push already on its
    /// way through a replica inbox may still reach the agent within moments (the delivery
    /// carries the original expiry), so callers that must stop work should also tell the
    /// agent when the message was sent (`last_sent_at`, see [`NodeLink::get`]).
    pub async fn withdraw(&self, message_id: &str) -> Result<bool, ApiError> {
        let now = Utc::now();
        let result = node_message::Entity::update_many()
            .col_expr(node_message::Column::ExpiresAt, Expr::value(now))
            .filter(node_message::Column::Id.eq(message_id))
            .filter(node_message::Column::AckedAt.is_null())
            .filter(
                Condition::any()
                    .add(node_message::Column::ExpiresAt.is_null())
                    .add(node_message::Column::ExpiresAt.gt(now)),
            )
            .exec(&self.db)
            .await
            .map_err(db_error("withdraw"))?;
        if result.rows_affected > 0 {
            return Ok(true);
        }
        // Already expired (withdrawn before, or past its expiry) and never acknowledged?
        let row = node_message::Entity::find_by_id(message_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error("withdraw"))?;
        Ok(row.is_some_and(|row| row.acked_at.is_none()))
    }

    /// [`NodeLink::withdraw`] for many messages at once (a few statements per
    /// [`STAGE_CHUNK`] ids); returns the ids that never reached their agent (now withdrawn,
    /// or expired earlier without an acknowledgement). Unknown ids are left out.
    pub async fn withdraw_many(&self, message_ids: &[String]) -> Result<Vec<String>, ApiError> {
        let now = Utc::now();
        let mut withdrawn = Vec::new();
        for chunk in message_ids.chunks(STAGE_CHUNK) {
            node_message::Entity::update_many()
                .col_expr(node_message::Column::ExpiresAt, Expr::value(now))
                .filter(node_message::Column::Id.is_in(chunk.iter().cloned()))
                .filter(node_message::Column::AckedAt.is_null())
                .filter(
                    Condition::any()
                        .add(node_message::Column::ExpiresAt.is_null())
                        .add(node_message::Column::ExpiresAt.gt(now)),
                )
                .exec(&self.db)
                .await
                .map_err(db_error("withdraw"))?;
            let unacked: Vec<String> = node_message::Entity::find()
                .select_only()
                .column(node_message::Column::Id)
                .filter(node_message::Column::Id.is_in(chunk.iter().cloned()))
                .filter(node_message::Column::AckedAt.is_null())
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(db_error("withdraw"))?;
            withdrawn.extend(unacked);
        }
        Ok(withdrawn)
    }

    /// Pushes committed messages (from [`NodeLink::stage`] or [`NodeLink::stage_many`]) to
    /// the replicas holding their nodes: one presence lookup per batch and one queue publish
    /// per message. Never fails: what cannot be pushed now is sent on connect or by the
    /// re-send.
    pub async fn push(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let now = Utc::now();
        for chunk in ids.chunks(STAGE_CHUNK) {
            let rows = node_message::Entity::find()
                .filter(node_message::Column::Id.is_in(chunk.iter().cloned()))
                .filter(deliverable(now))
                .all(&self.db)
                .await;
            match rows {
                Ok(rows) => {
                    let records: Vec<PendingMessage> =
                        rows.into_iter().map(pending_message).collect();
                    self.push_records(&records).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "node messages: reading staged messages to push failed");
                }
            }
        }
    }

    async fn push_records(&self, records: &[PendingMessage]) {
        if records.is_empty() {
            return;
        }
        let mut node_ids: Vec<String> = records.iter().map(|r| r.node_id.clone()).collect();
        node_ids.sort_unstable();
        node_ids.dedup();
        let holders: BTreeMap<String, String> = match self.presence.get_many(&node_ids).await {
            Ok(holders) => node_ids
                .into_iter()
                .zip(holders)
                .filter_map(|(node_id, holder)| holder.map(|holder| (node_id, holder)))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "node message push: presence lookup failed");
                return;
            }
        };
        // Nodes in parallel (a fleet's worth of publishes one after another is a round trip
        // each); one node's messages in order.
        let mut by_node: BTreeMap<&str, Vec<&PendingMessage>> = BTreeMap::new();
        for record in records {
            if holders.contains_key(&record.node_id) {
                by_node
                    .entry(record.node_id.as_str())
                    .or_default()
                    .push(record);
            }
        }
        futures::stream::iter(by_node)
            .for_each_concurrent(PUSH_CONCURRENCY, |(node_id, messages)| {
                let replica = holders.get(node_id).cloned().unwrap_or_default();
                async move {
                    for record in messages {
                        let mut headers = Headers::new();
                        headers.insert(KIND_HEADER.to_owned(), KIND_DELIVERY.to_owned());
                        headers.insert(NODE_HEADER.to_owned(), record.node_id.clone());
                        bosun_telemetry::inject_map(&mut headers);
                        let payload = record.to_delivery().encode_to_vec();
                        if let Err(error) = self
                            .queue
                            .publish(&inbox_stream(&replica), &payload, &headers)
                            .await
                        {
                            tracing::warn!(node_id = %record.node_id, message_id = %record.id, %error, "node message push failed");
                        }
                    }
                }
            })
            .await;
    }

    /// The node's first [`PENDING_BATCH`] unacknowledged, unexpired messages, oldest first.
    pub async fn pending(&self, node_id: &str) -> Result<Vec<PendingMessage>, ApiError> {
        self.pending_page(node_id, None, PENDING_BATCH).await
    }

    /// The node's unacknowledged, unexpired messages after `after` (a message's created_at
    /// and id), oldest first, at most `limit`.
    pub async fn pending_page(
        &self,
        node_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<PendingMessage>, ApiError> {
        let mut query = node_message::Entity::find()
            .filter(node_message::Column::NodeId.eq(node_id))
            .filter(deliverable(Utc::now()));
        if let Some((created_at, id)) = after {
            query = query.filter(
                Condition::any()
                    .add(node_message::Column::CreatedAt.gt(created_at))
                    .add(
                        Condition::all()
                            .add(node_message::Column::CreatedAt.eq(created_at))
                            .add(node_message::Column::Id.gt(id)),
                    ),
            );
        }
        let rows = query
            .order_by_asc(node_message::Column::CreatedAt)
            .order_by_asc(node_message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error("read pending"))?;
        Ok(rows.into_iter().map(pending_message).collect())
    }

    /// The node's deliverable messages no stream has sent yet (as far as the store knows:
    /// sends are recorded in batches, so one sent a moment ago may still show), oldest
    /// first, after `after` (a message's created_at and id), at most `limit`. What a stream
    /// catches up with after dropping a push.
    pub async fn unsent_pending(
        &self,
        node_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<PendingMessage>, ApiError> {
        let mut query = node_message::Entity::find()
            .filter(node_message::Column::NodeId.eq(node_id))
            .filter(deliverable(Utc::now()))
            .filter(node_message::Column::LastSentAt.is_null());
        if let Some((created_at, id)) = after {
            query = query.filter(
                Condition::any()
                    .add(node_message::Column::CreatedAt.gt(created_at))
                    .add(
                        Condition::all()
                            .add(node_message::Column::CreatedAt.eq(created_at))
                            .add(node_message::Column::Id.gt(id)),
                    ),
            );
        }
        let rows = query
            .order_by_asc(node_message::Column::CreatedAt)
            .order_by_asc(node_message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error("read unsent pending"))?;
        Ok(rows.into_iter().map(pending_message).collect())
    }

    /// Deliverable messages of `node_ids` neither sent nor created since `cutoff` (so sent
    /// long ago without an ack, or never sent), oldest first, at most `limit`.
    pub async fn stale_pending(
        &self,
        node_ids: &[String],
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<PendingMessage>, ApiError> {
        if node_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = node_message::Entity::find()
            .filter(node_message::Column::NodeId.is_in(node_ids.iter().cloned()))
            .filter(deliverable(Utc::now()))
            .filter(node_message::Column::CreatedAt.lt(cutoff))
            .filter(
                Condition::any()
                    .add(node_message::Column::LastSentAt.is_null())
                    .add(node_message::Column::LastSentAt.lt(cutoff)),
            )
            .order_by_asc(node_message::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error("read stale pending"))?;
        Ok(rows.into_iter().map(pending_message).collect())
    }

    /// Records that the node acknowledged the message; returns whether a row changed.
    /// Acknowledging an unknown, foreign or already acknowledged message changes nothing.
    pub async fn mark_acked(&self, node_id: &str, message_id: &str) -> Result<bool, ApiError> {
        let result = node_message::Entity::update_many()
            .col_expr(node_message::Column::AckedAt, Expr::value(Utc::now()))
            .filter(node_message::Column::Id.eq(message_id))
            .filter(node_message::Column::NodeId.eq(node_id))
            .filter(node_message::Column::AckedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db_error("mark acknowledged"))?;
        Ok(result.rows_affected > 0)
    }

    /// [`NodeLink::mark_acked`] for many (node id, message id) pairs at once, in statements of
    /// [`STAGE_CHUNK`] pairs; a pair whose message belongs to another node changes nothing.
    /// Returns how many messages were newly marked.
    pub async fn mark_acked_many(&self, acks: &[(String, String)]) -> Result<u64, ApiError> {
        let now = Utc::now();
        let mut marked = 0;
        for chunk in acks.chunks(STAGE_CHUNK) {
            let pairs = chunk.iter().map(|(node_id, message_id)| {
                ValueTuple::Two(node_id.clone().into(), message_id.clone().into())
            });
            let result = node_message::Entity::update_many()
                .col_expr(node_message::Column::AckedAt, Expr::value(now))
                .filter(
                    Expr::tuple([
                        Expr::col(node_message::Column::NodeId),
                        Expr::col(node_message::Column::Id),
                    ])
                    .in_tuples(pairs),
                )
                .filter(node_message::Column::AckedAt.is_null())
                .exec(&self.db)
                .await
                .map_err(db_error("mark acknowledged"))?;
            marked += result.rows_affected;
        }
        Ok(marked)
    }

    /// Records that the messages were just written to their node's stream.
    pub async fn mark_sent(&self, ids: &[String]) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Ok(());
        }
        node_message::Entity::update_many()
            .col_expr(node_message::Column::LastSentAt, Expr::value(Utc::now()))
            .col_expr(
                node_message::Column::SendCount,
                Expr::col(node_message::Column::SendCount).add(1),
            )
            .filter(node_message::Column::Id.is_in(ids.iter().cloned()))
            .exec(&self.db)
            .await
            .map_err(db_error("mark sent"))?;
        Ok(())
    }

    /// Deletes messages acknowledged or expired before `before` (rows nobody will send
    /// again); returns how many. Not scheduled here: the owner of the retention policy calls it.
    pub async fn purge_settled(&self, before: DateTime<Utc>) -> Result<u64, ApiError> {
        let result = node_message::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(node_message::Column::AckedAt.lt(before))
                    .add(node_message::Column::ExpiresAt.lt(before)),
            )
            .exec(&self.db)
            .await
            .map_err(db_error("purge settled"))?;
        Ok(result.rows_affected)
    }

    /// One stored message by id, acknowledged or not (for operators and tests).
    pub async fn get(&self, message_id: &str) -> Result<Option<StoredMessage>, ApiError> {
        let row = node_message::Entity::find_by_id(message_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error("read message"))?;
        Ok(row.map(|model| StoredMessage {
            acked_at: model.acked_at,
            last_sent_at: model.last_sent_at,
            message: pending_message(model),
        }))
    }

    /// Whether some replica holds the node's stream now (per presence; `false` when presence
    /// cannot be read).
    pub async fn is_connected(&self, node_id: &str) -> bool {
        match self.presence.get(node_id).await {
            Ok(holder) => holder.is_some(),
            Err(error) => {
                tracing::warn!(%node_id, %error, "presence lookup failed");
                false
            }
        }
    }
}

/// A stored message with its delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub message: PendingMessage,
    pub acked_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
}

async fn insert(
    conn: &impl ConnectionTrait,
    message: Outbound,
) -> Result<PendingMessage, ApiError> {
    validate(&message)?;
    let trace_context = serde_json::to_string(&message.trace_context)
        .map_err(|error| ApiError::internal(format!("encode trace context: {error}")))?;
    let record = PendingMessage {
        id: uuid::Uuid::now_v7().to_string(),
        node_id: message.node_id,
        topic: message.topic,
        payload: message.payload,
        created_at: Utc::now(),
        expires_at: message.expires_at,
        trace_context: message.trace_context,
        send_count: 0,
    };
    node_message::ActiveModel {
        id: Set(record.id.clone()),
        node_id: Set(record.node_id.clone()),
        topic: Set(record.topic.clone()),
        payload: Set(record.payload.clone()),
        trace_context: Set(trace_context),
        created_at: Set(record.created_at),
        expires_at: Set(record.expires_at),
        acked_at: Set(None),
        last_sent_at: Set(None),
        send_count: Set(0),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert"))?;
    Ok(record)
}

#[async_trait]
impl NodeControl for NodeLink {
    async fn disconnect(&self, node_id: &str, reason: Reason) -> Result<(), ApiError> {
        let Some(replica) = self.presence.get(node_id).await? else {
            return Ok(());
        };
        let mut headers = Headers::new();
        headers.insert(KIND_HEADER.to_owned(), KIND_CONTROL.to_owned());
        headers.insert(NODE_HEADER.to_owned(), node_id.to_owned());
        headers.insert(REASON_HEADER.to_owned(), reason.as_str_name().to_owned());
        self.queue
            .publish(&inbox_stream(&replica), &[], &headers)
            .await
            .map_err(|error| {
                ApiError::Unavailable(format!("disconnect node {node_id}: queue: {error}"))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_the_registration_form() {
        assert!(is_valid_node_id("mi-0123456789abcdef0"));
        for bad in [
            "",
            "mi-0123456789abcdef",
            "mi-0123456789abcdef01",
            "mi-0123456789ABCDEF0",
            "i-0123456789abcdef01",
            "mi-0123456789abcdeg0",
        ] {
            assert!(!is_valid_node_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn topics_are_area_dot_kind() {
        for good in ["commands.run", "system.echo", "a-b_c.d-9"] {
            assert!(is_valid_topic(good), "{good:?}");
        }
        for bad in [
            "",
            "commands",
            ".run",
            "commands.",
            "Commands.run",
            "a.b.c",
            "a b.c",
        ] {
            assert!(!is_valid_topic(bad), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_each_bad_field() {
        let error = validate(&Outbound {
            node_id: "node".to_owned(),
            topic: "nodot".to_owned(),
            payload: vec![0; MAX_PAYLOAD_BYTES + 1],
            ..Outbound::default()
        })
        .expect_err("three bad fields");
        let ApiError::InvalidArgument { violations, .. } = error else {
            panic!("not an invalid argument: {error:?}");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["node_id", "topic", "payload"]);
    }

    #[test]
    fn timestamps_round_trip() {
        let at = DateTime::from_timestamp(1_764_000_000, 123_456_789).expect("in range");
        assert_eq!(from_timestamp(&timestamp(at)), Some(at));
    }
}
