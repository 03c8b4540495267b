//! The dispatcher: per leased command, cancellation, the MaxErrors stop, sending under the
//! ramp, and finishing.

use bosun_core::ApiError;
use bosun_document::run::{
    CancelCommand, DEFAULT_OUTPUT_LIMIT_BYTES, DEFAULT_STDERR_LIMIT_BYTES, PluginSpec, RunCommand,
    TOPIC_COMMANDS_CANCEL, TOPIC_COMMANDS_RUN,
};
use bosun_nodelink::Outbound;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Value,
};
use tokio_util::sync::CancellationToken;

use super::bulk::{self, Column, Kind};
use super::{
    CountDelta, Inner, apply_counts, db_error, end_invocation, events, finish_if_done,
    invocation_event, set_command_state,
};
use crate::entities::{command, invocation};
use crate::model::{CommandState, InvocationState, Plan};

/// Commands looked at per round.
const ROUND_LIMIT: u64 = 500;

pub(super) async fn run(inner: &Inner, shutdown: &CancellationToken) -> Result<(), ApiError> {
    loop {
        round(inner, shutdown).await?;
        if !super::idle(&inner.wake, inner.config.dispatch_interval, shutdown).await {
            return Ok(());
        }
    }
}

/// One pass over the active commands nobody else is working on.
pub(super) async fn round(inner: &Inner, shutdown: &CancellationToken) -> Result<(), ApiError> {
    let owner = inner.dispatch_owner();
    for command_id in inner.free_active_commands(None, ROUND_LIMIT).await? {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if !inner.claim(&command_id, &owner).await? {
            continue;
        }
        let outcome = work(inner, &command_id, &owner).await;
        let released = inner.release(&command_id, &owner).await;
        outcome?;
        released?;
    }
    Ok(())
}

/// Invocation numbers the ramp needs.
#[derive(Debug, Default)]
struct Progress {
    in_flight: u32,
    acknowledged: u32,
    errors: u32,
    pending: u32,
}

async fn progress(inner: &Inner, command_id: &str) -> Result<Progress, ApiError> {
    let rows: Vec<(String, i32, i32, i64)> = invocation::Entity::find()
        .select_only()
        .column(invocation::Column::State)
        .column_as(
            Expr::cust("CASE WHEN started_at IS NULL THEN 0 ELSE 1 END"),
            "started",
        )
        .column_as(
            Expr::cust("CASE WHEN dispatched_at IS NULL THEN 0 ELSE 1 END"),
            "dispatched",
        )
        .column_as(Expr::cust("COUNT(*)"), "n")
        .filter(invocation::Column::CommandId.eq(command_id))
        .group_by(invocation::Column::State)
        .group_by(Expr::cust("CASE WHEN started_at IS NULL THEN 0 ELSE 1 END"))
        .group_by(Expr::cust(
            "CASE WHEN dispatched_at IS NULL THEN 0 ELSE 1 END",
        ))
        .into_tuple()
        .all(&inner.db)
        .await
        .map_err(db_error("read command progress"))?;
    let mut progress = Progress::default();
    for (state, started, dispatched, count) in rows {
        let Some(state) = InvocationState::parse(&state) else {
            continue;
        };
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if state.is_in_flight() {
            progress.in_flight += count;
        }
        if dispatched == 1 && (started == 1 || state.is_terminal()) {
            progress.acknowledged += count;
        }
        if state.is_error() {
            progress.errors += count;
        }
        if state == InvocationState::Pending {
            progress.pending += count;
        }
    }
    // A node that takes the invocation but never starts it (offline, partitioned) must not
    // hold the whole ramp back until the delivery timeout: after RAMP_PATIENCE it counts as
    // acknowledged for the ramp (it still holds its concurrency slot).
    let patient = invocation::Entity::find()
        .filter(invocation::Column::CommandId.eq(command_id))
        .filter(invocation::Column::StartedAt.is_null())
        .filter(invocation::Column::State.is_in([
            InvocationState::InProgress.as_str(),
            InvocationState::Delayed.as_str(),
        ]))
        .filter(invocation::Column::DispatchedAt.lt(inner.now() - RAMP_PATIENCE))
        .count(&inner.db)
        .await
        .map_err(db_error("read stalled invocations"))?;
    progress.acknowledged += u32::try_from(patient).unwrap_or(u32::MAX);
    Ok(progress)
}

/// How long a sent invocation that has not started holds the ramp back.
const RAMP_PATIENCE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Everything the dispatcher does for one command it holds the lease of.
async fn work(inner: &Inner, command_id: &str, owner: &str) -> Result<(), ApiError> {
    let Some(command) = load(inner, command_id).await? else {
        return Ok(());
    };
    cancel(inner, &command).await?;
    let progress = progress(inner, command_id).await?;
    let error_limit = u32::try_from(command.error_limit.max(0)).unwrap_or(0);
    if progress.pending > 0 {
        if progress.errors > error_limit {
            terminate(inner, &command).await?;
        } else if inner.now() < command.delivery_deadline {
            send(inner, &command, owner, &progress).await?;
        }
    }
    if progress.pending > 0 || progress.in_flight > 0 {
        return Ok(());
    }
    // Nothing open: finish the command if whoever ended the last invocation did not (a
    // command stored with only terminal invocations, or a crash in between).
    let now = inner.now();
    let txn = bosun_store::begin_write(&inner.db)
        .await
        .map_err(db_error("begin"))?;
    apply_counts(&txn, command_id, CountDelta::default(), now).await?;
    let finished = finish_if_done(&txn, command_id, now).await?;
    txn.commit().await.map_err(db_error("commit"))?;
    if finished.is_some() {
        inner.relay_wake.notify_one();
    }
    Ok(())
}

async fn load(inner: &Inner, command_id: &str) -> Result<Option<command::Model>, ApiError> {
    command::Entity::find_by_id(command_id.to_owned())
        .one(&inner.db)
        .await
        .map_err(db_error("read command"))
}

/// Cancellation of the invocations asked to stop: not sent → Cancelled; sent and not yet
/// acknowledged by the agent → message withdrawn, Cancelled; reached the agent → a
/// `commands.cancel` message, Cancelling (the agent's result ends it).
async fn cancel(inner: &Inner, command: &command::Model) -> Result<(), ApiError> {
    let rows = invocation::Entity::find()
        .filter(invocation::Column::CommandId.eq(command.id.as_str()))
        .filter(invocation::Column::CancelRequested.eq(true))
        .filter(invocation::Column::State.is_in([
            InvocationState::Pending.as_str(),
            InvocationState::Delayed.as_str(),
            InvocationState::InProgress.as_str(),
        ]))
        .all(&inner.db)
        .await
        .map_err(db_error("read cancelled invocations"))?;
    if rows.is_empty() {
        return Ok(());
    }
    // Withdrawals happen outside the transaction (another table, maybe another database
    // connection holding SQLite's write lock).
    let sent: Vec<String> = rows
        .iter()
        .filter(|row| row.state == InvocationState::InProgress.as_str())
        .filter_map(|row| row.message_id.clone())
        .collect();
    let withdrawn: std::collections::HashSet<String> =
        inner.link.withdraw_many(&sent).await?.into_iter().collect();
    let plan: Vec<(invocation::Model, bool)> = rows
        .into_iter()
        .map(|row| {
            let cancelled_now = match (&row.message_id, row.state.as_str()) {
                (Some(message_id), "InProgress") => withdrawn.contains(message_id),
                _ => true,
            };
            (row, cancelled_now)
        })
        .collect();
    let now = inner.now();
    let payload = serde_json::to_vec(&CancelCommand {
        command_id: command.id.clone(),
    })
    .map_err(|error| ApiError::internal(format!("encode cancel: {error}")))?;
    let trace_context = super::trace_context(command);
    let txn = bosun_store::begin_write(&inner.db)
        .await
        .map_err(db_error("begin"))?;
    let mut delta = CountDelta::default();
    let mut staged_events = Vec::new();
    let mut messages = Vec::new();
    for (row, cancelled_now) in plan {
        if cancelled_now {
            // A withdrawn message may already sit in a gateway's inbox on its way to the
            // agent; a cancel behind it stops the run if it gets there (and is answered
            // "not running" otherwise).
            if row.state == InvocationState::InProgress.as_str() {
                messages.push(Outbound {
                    node_id: row.node_id.clone(),
                    topic: TOPIC_COMMANDS_CANCEL.to_owned(),
                    payload: payload.clone(),
                    expires_at: Some(command.expires_at),
                    trace_context: trace_context.clone(),
                });
            }
            if end_invocation(
                &txn,
                &row.command_id,
                &row.node_id,
                &row.state,
                InvocationState::Cancelled,
                now,
            )
            .await?
            {
                delta.add(InvocationState::Cancelled);
                staged_events.push(invocation_event(
                    command,
                    &row.node_id,
                    InvocationState::Cancelled,
                    now,
                ));
            }
        } else {
            let moved = invocation::Entity::update_many()
                .col_expr(
                    invocation::Column::State,
                    Expr::value(InvocationState::Cancelling.as_str()),
                )
                .col_expr(invocation::Column::UpdatedAt, Expr::value(now))
                .filter(invocation::Column::CommandId.eq(row.command_id.as_str()))
                .filter(invocation::Column::NodeId.eq(row.node_id.as_str()))
                .filter(invocation::Column::State.eq(row.state.as_str()))
                .exec(&txn)
                .await
                .map_err(db_error("mark cancelling"))?;
            if moved.rows_affected > 0 {
                messages.push(Outbound {
                    node_id: row.node_id.clone(),
                    topic: TOPIC_COMMANDS_CANCEL.to_owned(),
                    payload: payload.clone(),
                    expires_at: Some(command.expires_at),
                    trace_context: trace_context.clone(),
                });
            }
        }
    }
    let ids = inner.link.stage_many(&txn, messages).await?;
    events::stage_many(&txn, &staged_events, now).await?;
    apply_counts(&txn, &command.id, delta, now).await?;
    finish_if_done(&txn, &command.id, now).await?;
    txn.commit().await.map_err(db_error("commit"))?;
    inner.link.push(&ids).await;
    inner.relay_wake.notify_one();
    Ok(())
}

/// MaxErrors exceeded: every invocation not sent yet becomes Terminated.
async fn terminate(inner: &Inner, command: &command::Model) -> Result<(), ApiError> {
    let now = inner.now();
    let txn = bosun_store::begin_write(&inner.db)
        .await
        .map_err(db_error("begin"))?;
    let nodes: Vec<String> = invocation::Entity::find()
        .select_only()
        .column(invocation::Column::NodeId)
        .filter(invocation::Column::CommandId.eq(command.id.as_str()))
        .filter(invocation::Column::State.eq(InvocationState::Pending.as_str()))
        .into_tuple()
        .all(&txn)
        .await
        .map_err(db_error("read pending invocations"))?;
    let mut delta = CountDelta::default();
    let mut staged_events = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(500) {
        let result = invocation::Entity::update_many()
            .col_expr(
                invocation::Column::State,
                Expr::value(InvocationState::Terminated.as_str()),
            )
            .col_expr(invocation::Column::EndedAt, Expr::value(now))
            .col_expr(invocation::Column::UpdatedAt, Expr::value(now))
            .filter(invocation::Column::CommandId.eq(command.id.as_str()))
            .filter(invocation::Column::NodeId.is_in(chunk.iter().cloned()))
            .filter(invocation::Column::State.eq(InvocationState::Pending.as_str()))
            .exec(&txn)
            .await
            .map_err(db_error("terminate invocations"))?;
        if result.rows_affected != chunk.len() as u64 {
            // Only the lease holder moves Pending invocations; anything else is a bug.
            return Err(ApiError::internal(
                "pending invocations changed under the dispatch lease",
            ));
        }
        for node_id in chunk {
            delta.add(InvocationState::Terminated);
            staged_events.push(invocation_event(
                command,
                node_id,
                InvocationState::Terminated,
                now,
            ));
        }
    }
    events::stage_many(&txn, &staged_events, now).await?;
    apply_counts(&txn, &command.id, delta, now).await?;
    finish_if_done(&txn, &command.id, now).await?;
    txn.commit().await.map_err(db_error("commit"))?;
    inner.relay_wake.notify_one();
    Ok(())
}

/// Sends Pending invocations in `seq` order while the ramp allows, `dispatch_batch` per
/// transaction: each becomes InProgress with its `commands.run` message staged in the same
/// transaction; pushed after commit.
async fn send(
    inner: &Inner,
    command: &command::Model,
    owner: &str,
    progress: &Progress,
) -> Result<(), ApiError> {
    let limit = u32::try_from(command.concurrency_limit.max(1)).unwrap_or(1);
    let ramp = progress.acknowledged.saturating_mul(2).saturating_add(1);
    let mut allowed = limit.min(ramp).saturating_sub(progress.in_flight);
    if allowed == 0 {
        return Ok(());
    }
    let plan: Plan = serde_json::from_str(&command.plan).map_err(|error| {
        ApiError::internal(format!("command {}: unreadable plan: {error}", command.id))
    })?;
    let trace_context = super::trace_context(command);
    let mut first = command.state == CommandState::Pending.as_str();
    while allowed > 0 {
        let batch = allowed.min(inner.config.dispatch_batch.max(1));
        let now = inner.now();
        let txn = bosun_store::begin_write(&inner.db)
            .await
            .map_err(db_error("begin"))?;
        let rows = invocation::Entity::find()
            .filter(invocation::Column::CommandId.eq(command.id.as_str()))
            .filter(invocation::Column::State.eq(InvocationState::Pending.as_str()))
            .filter(invocation::Column::CancelRequested.eq(false))
            .order_by_asc(invocation::Column::Seq)
            .limit(u64::from(batch))
            .all(&txn)
            .await
            .map_err(db_error("read pending invocations"))?;
        if rows.is_empty() {
            txn.commit().await.map_err(db_error("commit"))?;
            break;
        }
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let run = run_command(inner, command, &plan, row);
            let payload = serde_json::to_vec(&run)
                .map_err(|error| ApiError::internal(format!("encode run command: {error}")))?;
            messages.push(Outbound {
                node_id: row.node_id.clone(),
                topic: TOPIC_COMMANDS_RUN.to_owned(),
                payload,
                expires_at: Some(command.delivery_deadline),
                trace_context: trace_context.clone(),
            });
        }
        let ids = inner.link.stage_many(&txn, messages).await?;
        let marks = rows
            .iter()
            .zip(&ids)
            .map(|(row, message_id)| {
                vec![
                    Value::from(row.command_id.clone()),
                    Value::from(row.node_id.clone()),
                    Value::from(InvocationState::InProgress.as_str()),
                    Value::from(message_id.clone()),
                    Value::from(now),
                    Value::from(now),
                ]
            })
            .collect();
        let marked = bulk::update_invocations(
            &txn,
            &[
                Column {
                    name: "state",
                    kind: Kind::Text,
                },
                Column {
                    name: "message_id",
                    kind: Kind::Text,
                },
                Column {
                    name: "dispatched_at",
                    kind: Kind::Timestamp,
                },
                Column {
                    name: "updated_at",
                    kind: Kind::Timestamp,
                },
            ],
            marks,
            &[InvocationState::Pending.as_str()],
        )
        .await?;
        if marked.len() != rows.len() {
            // Only the lease holder moves Pending invocations; dropping the transaction
            // rolls the messages back too.
            return Err(ApiError::internal(
                "pending invocations changed under the dispatch lease",
            ));
        }
        let staged_events: Vec<_> = rows
            .iter()
            .map(|row| invocation_event(command, &row.node_id, InvocationState::InProgress, now))
            .collect();
        if first {
            set_command_state(&txn, command, CommandState::InProgress, now).await?;
            first = false;
        }
        events::stage_many(&txn, &staged_events, now).await?;
        // The lease is checked (and extended) last, so every writer locks invocation rows
        // before the command row (no lock-order deadlocks with the result consumer). On
        // PostgreSQL this waits for a replica that is taking the command over; either way
        // a lost lease rolls the whole batch back.
        if !inner.renew(&txn, &command.id, owner).await? {
            tracing::warn!(command_id = %command.id, "dispatch lease lost; stopping");
            return Ok(());
        }
        txn.commit().await.map_err(db_error("commit"))?;
        inner.link.push(&ids).await;
        inner.relay_wake.notify_one();
        let sent = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        if sent < batch {
            break;
        }
        allowed -= sent;
    }
    Ok(())
}

/// The `commands.run` payload of one invocation: the plan's steps listed in its `steps`.
fn run_command(
    inner: &Inner,
    command: &command::Model,
    plan: &Plan,
    row: &invocation::Model,
) -> RunCommand {
    let plugins = crate::model::step_indexes(&row.steps)
        .filter_map(|index| plan.steps.get(index))
        .map(|step| PluginSpec {
            name: step.action.clone(),
            step: step.name.clone(),
            inputs: step.inputs.clone(),
        })
        .collect();
    RunCommand {
        command_id: command.id.clone(),
        plugins,
        execution_timeout_seconds: Some(plan.execution_timeout_seconds),
        output_limit_bytes: Some(DEFAULT_OUTPUT_LIMIT_BYTES),
        stderr_limit_bytes: Some(DEFAULT_STDERR_LIMIT_BYTES),
        stream_limit_bytes: Some(inner.config.max_output_bytes),
    }
}
