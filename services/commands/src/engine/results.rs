//! The result consumer: consumer group `commands` on `node-results.commands`. Each batch is
//! applied in one transaction and acked after commit; applying is idempotent (conditional
//! updates, a terminal invocation never changes, chunks insert-or-ignore), so a redelivered
//! batch changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use bosun_core::ApiError;
use bosun_document::run::{
    CancelResult, CommandResult, CommandStatus, MAX_CHUNK_BYTES, OutputChunk, PluginResult,
    TOPIC_COMMANDS_CANCEL, TOPIC_COMMANDS_OUTPUT, TOPIC_COMMANDS_RUN,
};
use bosun_nodelink::NodeResult;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Value};
use tokio_util::sync::CancellationToken;

use super::bulk::{self, Column, Kind};
use super::{CountDelta, Inner, apply_counts, db_error, events, finish_if_done, invocation_event};
use crate::entities::{command, invocation, output_chunk};
use crate::model::{InvocationState, OutputState};

/// The consumer group every replica reads results in.
pub const RESULTS_GROUP: &str = "commands";
/// Longest wait for results per read.
const BLOCK: Duration = Duration::from_secs(1);
/// Node ids per `IN (…)` when loading invocations.
const LOAD_CHUNK: usize = 500;
/// Tries to apply one batch before leaving it to redelivery.
const APPLY_ATTEMPTS: u32 = 5;
/// Chunk rows per multi-row insert (7 columns each).
const CHUNK_INSERT: usize = 300;

pub(super) async fn run(inner: &Inner, shutdown: &CancellationToken) -> Result<(), ApiError> {
    let stream = crate::results_stream();
    let queue_error = |error: bosun_queue::QueueError| {
        ApiError::Unavailable(format!("command results queue: {error}"))
    };
    inner
        .queue
        .ensure_group(&stream, RESULTS_GROUP)
        .await
        .map_err(queue_error)?;
    let base = consumer_name(&inner.replica_id);
    let consumers = (0..inner.config.result_consumers.max(1))
        .map(|index| consume(inner, &stream, format!("{base}-{index}"), shutdown));
    for outcome in futures::future::join_all(consumers).await {
        outcome?;
    }
    Ok(())
}

/// One consumer of the group: reads a batch, applies it in one transaction, acks it.
async fn consume(
    inner: &Inner,
    stream: &str,
    consumer: String,
    shutdown: &CancellationToken,
) -> Result<(), ApiError> {
    let queue_error = |error: bosun_queue::QueueError| {
        ApiError::Unavailable(format!("command results queue: {error}"))
    };
    let batch = usize::try_from(inner.config.result_batch.max(1)).unwrap_or(500);
    loop {
        let deliveries = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            read = inner.queue.consume(stream, RESULTS_GROUP, &consumer, batch, BLOCK) => {
                read.map_err(queue_error)?
            }
        };
        if deliveries.is_empty() {
            continue;
        }
        // Retried here rather than left to the visibility timeout: a failed transaction
        // (a deadlock, a lost connection) is usually fine on the next try. After a few
        // failures the batch is left unacknowledged: the queue redelivers it, and moves a
        // message that keeps failing to the dead letters.
        let mut backoff = Duration::from_millis(50);
        let mut applied = false;
        for _attempt in 0..APPLY_ATTEMPTS {
            match apply(inner, &deliveries).await {
                Ok(outcome) => {
                    if outcome.ended {
                        inner.output_wake.notify_one();
                    }
                    if outcome.staged {
                        inner.relay_wake.notify_one();
                    }
                    applied = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "applying command results failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if !applied {
            tracing::error!(
                count = deliveries.len(),
                "giving up on a batch of command results for now; the queue redelivers it"
            );
            continue;
        }
        let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
        inner
            .queue
            .ack(stream, RESULTS_GROUP, &ids)
            .await
            .map_err(queue_error)?;
        // Acknowledged invocations open room under the ramp.
        inner.wake.notify_one();
    }
}

/// A queue consumer name from the replica id (queue names allow `[A-Za-z0-9:_.-]`).
fn consumer_name(replica_id: &str) -> String {
    let name: String = replica_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    if name.is_empty() {
        "engine".to_owned()
    } else {
        name
    }
}

#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Some invocation ended (output to store).
    ended: bool,
    /// Events were staged.
    staged: bool,
}

type Key = (String, String);

/// The results of one invocation in a batch: the first final one and the last progress one.
#[derive(Default)]
struct Collected {
    progress: Option<CommandResult>,
    last: Option<CommandResult>,
}

/// Applies a batch of deliveries in one transaction.
pub(super) async fn apply(
    inner: &Inner,
    deliveries: &[bosun_queue::Delivery],
) -> Result<Outcome, ApiError> {
    let mut runs: BTreeMap<Key, Collected> = BTreeMap::new();
    let mut chunks: Vec<(String, OutputChunk)> = Vec::new();
    for delivery in deliveries {
        let result = match NodeResult::from_delivery(delivery) {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed command result");
                continue;
            }
        };
        match result.topic.as_str() {
            TOPIC_COMMANDS_RUN => match serde_json::from_slice::<CommandResult>(&result.payload) {
                Ok(payload) => {
                    let key = (payload.command_id.clone(), result.node_id.clone());
                    let entry = runs.entry(key).or_default();
                    if payload.status == CommandStatus::InProgress {
                        entry.progress = Some(payload);
                    } else if entry.last.is_none() {
                        entry.last = Some(payload);
                    }
                }
                Err(error) => {
                    tracing::warn!(node_id = %result.node_id, result_id = %result.result_id, %error, "ignoring an unreadable command result");
                }
            },
            TOPIC_COMMANDS_OUTPUT => match serde_json::from_slice::<OutputChunk>(&result.payload) {
                Ok(chunk) if chunk.data.len() <= MAX_CHUNK_BYTES => {
                    chunks.push((result.node_id.clone(), chunk));
                }
                Ok(_) => {
                    tracing::warn!(node_id = %result.node_id, "ignoring an oversized output chunk");
                }
                Err(error) => {
                    tracing::warn!(node_id = %result.node_id, %error, "ignoring an unreadable output chunk");
                }
            },
            TOPIC_COMMANDS_CANCEL => {
                match serde_json::from_slice::<CancelResult>(&result.payload) {
                    Ok(cancel) => {
                        tracing::debug!(node_id = %result.node_id, command_id = %cancel.command_id, status = ?cancel.status, error = ?cancel.error, "cancel result");
                    }
                    Err(error) => {
                        tracing::warn!(node_id = %result.node_id, %error, "ignoring an unreadable cancel result");
                    }
                }
            }
            other => {
                tracing::warn!(node_id = %result.node_id, topic = %other, "ignoring a result of an unknown topic");
            }
        }
    }
    let keys: BTreeSet<Key> = runs
        .keys()
        .cloned()
        .chain(
            chunks
                .iter()
                .map(|(node_id, chunk)| (chunk.command_id.clone(), node_id.clone())),
        )
        .collect();
    if keys.is_empty() {
        return Ok(Outcome::default());
    }
    let invocations = load_invocations(&inner.db, &keys).await?;
    let command_ids: BTreeSet<String> = invocations.keys().map(|(c, _)| c.clone()).collect();
    let commands: HashMap<String, command::Model> = if command_ids.is_empty() {
        HashMap::new()
    } else {
        command::Entity::find()
            .filter(command::Column::Id.is_in(command_ids.iter().cloned()))
            .all(&inner.db)
            .await
            .map_err(db_error("read commands"))?
            .into_iter()
            .map(|command| (command.id.clone(), command))
            .collect()
    };

    let now = inner.now();
    let txn = bosun_store::begin_write(&inner.db)
        .await
        .map_err(db_error("begin"))?;
    let mut outcome = Outcome::default();

    // Output chunks of known invocations whose output is not stored yet. The rows are locked
    // (a no-op update) so the output worker cannot mark one Stored and delete its chunks
    // between this check and the commit, which would leave the chunks behind.
    let mut chunk_nodes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node_id, chunk) in &chunks {
        if invocations.contains_key(&(chunk.command_id.clone(), node_id.clone())) {
            chunk_nodes
                .entry(chunk.command_id.clone())
                .or_default()
                .insert(node_id.clone());
        }
    }
    let mut open_outputs: HashSet<Key> = HashSet::new();
    for (command_id, node_ids) in &chunk_nodes {
        let node_ids: Vec<String> = node_ids.iter().cloned().collect();
        for nodes in node_ids.chunks(LOAD_CHUNK) {
            let locked = invocation::Entity::update_many()
                .col_expr(
                    invocation::Column::OutputState,
                    Expr::col(invocation::Column::OutputState),
                )
                .filter(invocation::Column::CommandId.eq(command_id.as_str()))
                .filter(invocation::Column::NodeId.is_in(nodes.iter().cloned()))
                .filter(invocation::Column::OutputState.ne(OutputState::Stored.as_str()))
                .exec_with_returning(&txn)
                .await
                .map_err(db_error("lock invocations for output"))?;
            open_outputs.extend(locked.into_iter().map(|row| (row.command_id, row.node_id)));
        }
    }
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for (node_id, chunk) in chunks {
        let key = (chunk.command_id.clone(), node_id.clone());
        if !open_outputs.contains(&key) {
            tracing::debug!(command_id = %chunk.command_id, %node_id, "output chunk of an unknown invocation or of stored output");
            continue;
        }
        let (Ok(plugin_index), Ok(offset)) = (
            i32::try_from(chunk.plugin_index),
            i64::try_from(chunk.offset),
        ) else {
            continue;
        };
        let stream = chunk.stream.as_str();
        if !seen.insert((key, plugin_index, stream, offset)) {
            continue;
        }
        rows.push(output_chunk::ActiveModel {
            command_id: Set(chunk.command_id),
            node_id: Set(node_id),
            plugin_index: Set(plugin_index),
            stream: Set(stream.to_owned()),
            offset: Set(offset),
            data: Set(chunk.data),
            created_at: Set(now),
        });
    }
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(CHUNK_INSERT));
        output_chunk::Entity::insert_many(std::mem::replace(&mut rows, rest))
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await
            .map_err(db_error("store output chunks"))?;
    }

    // Run results, in key order (a stable lock order between concurrent consumers).
    let mut deltas: BTreeMap<String, CountDelta> = BTreeMap::new();
    let mut staged = Vec::new();
    let applicable = [
        InvocationState::InProgress.as_str(),
        InvocationState::Delayed.as_str(),
        InvocationState::Cancelling.as_str(),
    ];
    let mut finals = Vec::new();
    let mut final_info: HashMap<Key, (InvocationState, bool)> = HashMap::new();
    let mut progress_rows = Vec::new();
    for (key, collected) in runs {
        let Some(row) = invocations.get(&key) else {
            tracing::debug!(command_id = %key.0, node_id = %key.1, "result of an unknown invocation");
            continue;
        };
        if !commands.contains_key(&key.0) {
            continue;
        }
        if !applicable.contains(&row.state.as_str()) {
            // Terminal (a duplicate or a late result), or never sent.
            continue;
        }
        if let Some(last) = collected.last {
            let state = final_state(&last);
            let started_at = row
                .started_at
                .or_else(|| earliest_start(&last.plugins))
                .unwrap_or(now);
            let ended_at = latest_end(&last.plugins).unwrap_or(now).max(started_at);
            let ran = last
                .plugins
                .iter()
                .any(|plugin| plugin.started_at.is_some());
            let response_code = last
                .plugins
                .iter()
                .rev()
                .find(|plugin| plugin.started_at.is_some())
                .map_or(-1, |plugin| plugin.response_code);
            let plugins = encode_plugins(&last.plugins)?;
            // Nothing streamed (and the run was not cut short): no output to store.
            let streamed = last.error.is_some()
                || last.plugins.iter().any(|plugin| {
                    plugin.stdout_streamed > 0
                        || plugin.stderr_streamed > 0
                        || plugin.stream_truncated
                });
            let (output_state, output_deadline) = if ran && streamed {
                (
                    OutputState::Pending,
                    Some(
                        now + chrono::Duration::from_std(inner.config.output_settle)
                            .unwrap_or(chrono::Duration::MAX),
                    ),
                )
            } else {
                (OutputState::None, None)
            };
            finals.push(vec![
                Value::from(key.0.clone()),
                Value::from(key.1.clone()),
                Value::from(state.as_str()),
                Value::from(started_at),
                Value::from(ended_at),
                Value::from(response_code),
                Value::from(plugins),
                Value::from(last.error.clone().unwrap_or_default()),
                Value::from(output_state.as_str()),
                Value::from(output_deadline),
                Value::from(now),
            ]);
            final_info.insert(key, (state, ran));
        } else if let Some(progress) = collected.progress {
            let started_at = row
                .started_at
                .or_else(|| earliest_start(&progress.plugins))
                .unwrap_or(now);
            progress_rows.push(vec![
                Value::from(key.0.clone()),
                Value::from(key.1.clone()),
                Value::from(started_at),
                Value::from(encode_plugins(&progress.plugins)?),
                Value::from(now),
            ]);
        }
    }
    let changed = bulk::update_invocations(
        &txn,
        &[
            column("state", Kind::Text),
            column("started_at", Kind::Timestamp),
            column("ended_at", Kind::Timestamp),
            column("response_code", Kind::Int),
            column("plugins", Kind::Text),
            column("error", Kind::Text),
            column("output_state", Kind::Text),
            column("output_deadline", Kind::Timestamp),
            column("updated_at", Kind::Timestamp),
        ],
        finals,
        &applicable,
    )
    .await?;
    let mut changed = changed;
    changed.sort();
    for key in changed {
        let (Some((state, ran)), Some(command)) = (final_info.get(&key), commands.get(&key.0))
        else {
            continue;
        };
        deltas.entry(key.0.clone()).or_default().add(*state);
        staged.push(invocation_event(command, &key.1, *state, now));
        outcome.ended |= *ran;
    }
    bulk::update_invocations(
        &txn,
        &[
            column("started_at", Kind::Timestamp),
            column("plugins", Kind::Text),
            column("updated_at", Kind::Timestamp),
        ],
        progress_rows,
        &applicable,
    )
    .await?;
    events::stage_many(&txn, &staged, now).await?;
    for (command_id, delta) in &deltas {
        if delta.is_empty() {
            continue;
        }
        apply_counts(&txn, command_id, *delta, now).await?;
        finish_if_done(&txn, command_id, now).await?;
    }
    txn.commit().await.map_err(db_error("commit"))?;
    outcome.staged = !staged.is_empty();
    Ok(outcome)
}

async fn load_invocations(
    db: &impl ConnectionTrait,
    keys: &BTreeSet<Key>,
) -> Result<HashMap<Key, invocation::Model>, ApiError> {
    let mut by_command: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (command_id, node_id) in keys {
        by_command
            .entry(command_id.as_str())
            .or_default()
            .push(node_id.clone());
    }
    let mut found = HashMap::new();
    for (command_id, node_ids) in by_command {
        // Command ids are UUIDs; anything else cannot match (and is not worth a query).
        if uuid::Uuid::parse_str(command_id).is_err() {
            continue;
        }
        for chunk in node_ids.chunks(LOAD_CHUNK) {
            let rows = invocation::Entity::find()
                .filter(invocation::Column::CommandId.eq(command_id))
                .filter(invocation::Column::NodeId.is_in(chunk.iter().cloned()))
                .all(db)
                .await
                .map_err(db_error("read invocations"))?;
            for row in rows {
                found.insert((row.command_id.clone(), row.node_id.clone()), row);
            }
        }
    }
    Ok(found)
}

fn column(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// The invocation state of an agent's final result.
pub(crate) fn final_state(result: &CommandResult) -> InvocationState {
    match result.status {
        CommandStatus::Success => InvocationState::Success,
        CommandStatus::TimedOut => InvocationState::ExecutionTimedOut,
        CommandStatus::Cancelled => InvocationState::Cancelled,
        CommandStatus::InvalidPlatform => InvocationState::InvalidPlatform,
        CommandStatus::Failed | CommandStatus::Skipped | CommandStatus::InProgress => {
            InvocationState::Failed
        }
    }
}

fn parse_time(text: &Option<String>) -> Option<DateTime<Utc>> {
    text.as_deref()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
}

fn earliest_start(plugins: &[PluginResult]) -> Option<DateTime<Utc>> {
    plugins
        .iter()
        .filter_map(|plugin| parse_time(&plugin.started_at))
        .min()
}

fn latest_end(plugins: &[PluginResult]) -> Option<DateTime<Utc>> {
    plugins
        .iter()
        .filter_map(|plugin| parse_time(&plugin.ended_at))
        .max()
}

fn encode_plugins(plugins: &[PluginResult]) -> Result<String, ApiError> {
    serde_json::to_string(plugins)
        .map_err(|error| ApiError::internal(format!("encode plugin results: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_queue_safe() {
        assert_eq!(consumer_name("replica 1/a"), "replica-1-a");
        assert_eq!(consumer_name(""), "engine");
    }
}
