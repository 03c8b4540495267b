//! The output worker: stores the full output of ended invocations in the object store.
//!
//! An invocation with output_state Pending is stored once its chunk rows cover
//! `0..stdout_streamed` and `0..stderr_streamed` of every plugin result, or as it is once its
//! `output_deadline` passed (the contiguous prefix; the plugin result then says
//! `stream_truncated`). Order, so nothing is lost by a crash: objects are written (overwritten
//! on a retry) first, then one transaction marks the invocation Stored (conditional on
//! Pending) and deletes its chunks. Streams with no bytes get no object.

use std::collections::{BTreeMap, HashMap};

use bosun_core::ApiError;
use bosun_document::run::PluginResult;
use bytes::Bytes;
use futures::StreamExt as _;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Value};
use tokio_util::sync::CancellationToken;

use super::bulk::{self, Column, Kind};
use super::{Inner, db_error};
use crate::entities::{command, invocation, output_chunk};
use crate::model::OutputState;

/// Invocations looked at per round.
const ROUND_LIMIT: u64 = 1000;
/// Node ids per `IN (…)` when reading or deleting chunks.
const CHUNK_QUERY_NODES: usize = 500;
/// Object writes in flight at once.
const PUT_CONCURRENCY: usize = 16;

pub(super) async fn run(inner: &Inner, shutdown: &CancellationToken) -> Result<(), ApiError> {
    loop {
        let full = round(inner).await?;
        if full && !shutdown.is_cancelled() {
            continue;
        }
        if !super::idle(&inner.output_wake, inner.config.dispatch_interval, shutdown).await {
            return Ok(());
        }
    }
}

/// One pass; true when the page was full (more may wait).
pub(super) async fn round(inner: &Inner) -> Result<bool, ApiError> {
    let rows = invocation::Entity::find()
        .filter(invocation::Column::OutputState.eq(OutputState::Pending.as_str()))
        .order_by_asc(invocation::Column::UpdatedAt)
        .limit(ROUND_LIMIT)
        .all(&inner.db)
        .await
        .map_err(db_error("read invocations with output"))?;
    if rows.is_empty() {
        return Ok(false);
    }
    let full = rows.len() as u64 == ROUND_LIMIT;
    let command_ids: Vec<String> = {
        let mut ids: Vec<String> = rows.iter().map(|row| row.command_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let commands: HashMap<String, command::Model> = command::Entity::find()
        .filter(command::Column::Id.is_in(command_ids))
        .all(&inner.db)
        .await
        .map_err(db_error("read commands"))?
        .into_iter()
        .map(|command| (command.id.clone(), command))
        .collect();
    let now = inner.now();
    // The chunks of every invocation of the page, a few queries per command.
    let mut by_invocation: HashMap<(String, String), Vec<output_chunk::Model>> = HashMap::new();
    let mut nodes_by_command: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for row in &rows {
        nodes_by_command
            .entry(row.command_id.as_str())
            .or_default()
            .push(row.node_id.clone());
    }
    for (command_id, node_ids) in &nodes_by_command {
        for nodes in node_ids.chunks(CHUNK_QUERY_NODES) {
            let chunks = output_chunk::Entity::find()
                .filter(output_chunk::Column::CommandId.eq(*command_id))
                .filter(output_chunk::Column::NodeId.is_in(nodes.iter().cloned()))
                .order_by_asc(output_chunk::Column::NodeId)
                .order_by_asc(output_chunk::Column::PluginIndex)
                .order_by_asc(output_chunk::Column::Stream)
                .order_by_asc(output_chunk::Column::Offset)
                .all(&inner.db)
                .await
                .map_err(db_error("read output chunks"))?;
            for chunk in chunks {
                by_invocation
                    .entry((chunk.command_id.clone(), chunk.node_id.clone()))
                    .or_default()
                    .push(chunk);
            }
        }
    }
    let mut ready = Vec::new();
    for row in rows {
        let Some(command) = commands.get(&row.command_id) else {
            continue;
        };
        let plugins: Vec<PluginResult> = serde_json::from_str(&row.plugins).unwrap_or_default();
        let chunks = by_invocation
            .remove(&(row.command_id.clone(), row.node_id.clone()))
            .unwrap_or_default();
        let mut by_stream: BTreeMap<(i32, String), Vec<output_chunk::Model>> = BTreeMap::new();
        for chunk in chunks {
            by_stream
                .entry((chunk.plugin_index, chunk.stream.clone()))
                .or_default()
                .push(chunk);
        }
        let past_deadline = row.output_deadline.is_none_or(|deadline| now >= deadline);
        let mut complete = true;
        let mut objects = Vec::new();
        let mut plugins = plugins;
        for (index, plugin) in plugins.iter_mut().enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let mut short = false;
            for (stream, expected) in [
                ("stdout", plugin.stdout_streamed),
                ("stderr", plugin.stderr_streamed),
            ] {
                let parts = by_stream
                    .get(&(index, stream.to_owned()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let data = contiguous(parts, expected);
                if (data.len() as u64) < expected {
                    short = true;
                }
                if !data.is_empty() {
                    objects.push((
                        crate::model::output_key(
                            &command.output_prefix,
                            &row.command_id,
                            &row.node_id,
                            &plugin.step,
                            stream,
                        ),
                        Bytes::from(data),
                    ));
                }
            }
            if short {
                complete = false;
                plugin.stream_truncated = true;
            }
        }
        if !complete && !past_deadline {
            continue;
        }
        let plugins_json = (!complete)
            .then(|| serde_json::to_string(&plugins))
            .transpose()
            .map_err(|error| ApiError::internal(format!("encode plugin results: {error}")))?;
        ready.push((row, objects, plugins_json));
    }
    if ready.is_empty() {
        return Ok(false);
    }
    // Objects first (overwritten on a retry), then the rows.
    let puts: Vec<(String, Bytes)> = ready
        .iter()
        .flat_map(|(_, objects, _)| objects.iter().cloned())
        .collect();
    let failures: Vec<String> = futures::stream::iter(puts)
        .map(|(key, bytes)| {
            let objects = inner.objects.clone();
            async move {
                objects
                    .put(&key, bytes)
                    .await
                    .err()
                    .map(|error| error.to_string())
            }
        })
        .buffer_unordered(PUT_CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    if let Some(failure) = failures.first() {
        return Err(ApiError::Unavailable(format!(
            "store command output: {failure}"
        )));
    }
    let txn = bosun_store::begin_write(&inner.db)
        .await
        .map_err(db_error("begin"))?;
    let marks = ready
        .iter()
        .map(|(row, _, plugins_json)| {
            vec![
                Value::from(row.command_id.clone()),
                Value::from(row.node_id.clone()),
                Value::from(OutputState::Stored.as_str()),
                Value::from(plugins_json.clone().unwrap_or_else(|| row.plugins.clone())),
            ]
        })
        .collect();
    let stored = bulk::update_invocations_where(
        &txn,
        &[
            Column {
                name: "output_state",
                kind: Kind::Text,
            },
            Column {
                name: "plugins",
                kind: Kind::Text,
            },
        ],
        marks,
        "output_state",
        &[OutputState::Pending.as_str()],
    )
    .await?;
    // Chunks of what this transaction stored (another replica may have stored some).
    let mut stored_by_command: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (command_id, node_id) in stored {
        stored_by_command
            .entry(command_id)
            .or_default()
            .push(node_id);
    }
    for (command_id, node_ids) in stored_by_command {
        for nodes in node_ids.chunks(CHUNK_QUERY_NODES) {
            output_chunk::Entity::delete_many()
                .filter(output_chunk::Column::CommandId.eq(command_id.as_str()))
                .filter(output_chunk::Column::NodeId.is_in(nodes.iter().cloned()))
                .exec(&txn)
                .await
                .map_err(db_error("delete output chunks"))?;
        }
    }
    txn.commit().await.map_err(db_error("commit"))?;
    Ok(full)
}

/// The bytes `0..expected` from chunks sorted by offset, up to the first gap.
fn contiguous(chunks: &[output_chunk::Model], expected: u64) -> Vec<u8> {
    let mut data = Vec::new();
    for chunk in chunks {
        let have = data.len() as u64;
        if have >= expected {
            break;
        }
        let Ok(offset) = u64::try_from(chunk.offset) else {
            continue;
        };
        let end = offset + chunk.data.len() as u64;
        if offset > have {
            break; // a gap
        }
        if end <= have {
            continue; // nothing new
        }
        let start = usize::try_from(have - offset).unwrap_or(usize::MAX);
        data.extend_from_slice(chunk.data.get(start..).unwrap_or_default());
    }
    data.truncate(usize::try_from(expected).unwrap_or(usize::MAX));
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: i64, data: &[u8]) -> output_chunk::Model {
        output_chunk::Model {
            command_id: String::new(),
            node_id: String::new(),
            plugin_index: 0,
            stream: "stdout".to_owned(),
            offset,
            data: data.to_vec(),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn contiguous_stops_at_gaps_and_ignores_overlap() {
        assert_eq!(
            contiguous(&[chunk(0, b"ab"), chunk(2, b"cd"), chunk(6, b"gh")], 8),
            b"abcd"
        );
        assert_eq!(
            contiguous(&[chunk(0, b"abc"), chunk(2, b"cde")], 5),
            b"abcde"
        );
        assert_eq!(contiguous(&[chunk(0, b"abcdef")], 3), b"abc");
        assert!(contiguous(&[chunk(1, b"b")], 2).is_empty());
    }
}
