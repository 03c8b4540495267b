//! The reconciler: timeouts, under the same command lease as the dispatcher.
//!
//! - Past the command's `delivery_deadline`, an invocation that did not reach its agent ends
//!   Delivery Timed Out: Pending / Delayed ones, and InProgress ones whose message the agent
//!   has not acknowledged (the message is withdrawn first, so it is never delivered after).
//!   One the agent acknowledged may be running: it is left to its result or to the backstop.
//! - Past `expires_at` (SSM's ExpiresAfter), every invocation without a terminal result ends
//!   Delivery Timed Out.
//!
//! Re-sending unacknowledged messages is the gateway's job (NodeLink), not done here.

use bosun_core::ApiError;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use tokio_util::sync::CancellationToken;

use super::{
    CountDelta, Inner, apply_counts, db_error, end_invocation, events, finish_if_done,
    invocation_event, non_terminal_invocation_states,
};
use crate::entities::{command, invocation};
use crate::model::InvocationState;

/// Commands looked at per round.
const ROUND_LIMIT: u64 = 500;
/// Invocations ended per transaction.
const END_BATCH: usize = 1000;

pub(super) async fn run(inner: &Inner, shutdown: &CancellationToken) -> Result<(), ApiError> {
    let never = tokio::sync::Notify::new();
    loop {
        round(inner, shutdown).await?;
        if !super::idle(&never, inner.config.reconcile_interval, shutdown).await {
            return Ok(());
        }
    }
}

pub(super) async fn round(inner: &Inner, shutdown: &CancellationToken) -> Result<(), ApiError> {
    let owner = inner.reconcile_owner();
    let now = inner.now();
    let overdue = Condition::all().add(command::Column::DeliveryDeadline.lte(now));
    for command_id in inner
        .free_active_commands(Some(overdue), ROUND_LIMIT)
        .await?
    {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if !inner.claim(&command_id, &owner).await? {
            continue;
        }
        let outcome = reconcile(inner, &command_id, &owner).await;
        let released = inner.release(&command_id, &owner).await;
        outcome?;
        released?;
    }
    Ok(())
}

async fn reconcile(inner: &Inner, command_id: &str, owner: &str) -> Result<(), ApiError> {
    let Some(command) = command::Entity::find_by_id(command_id.to_owned())
        .one(&inner.db)
        .await
        .map_err(db_error("read command"))?
    else {
        return Ok(());
    };
    let now = inner.now();
    let expired = now >= command.expires_at;
    let rows = invocation::Entity::find()
        .filter(invocation::Column::CommandId.eq(command_id))
        .filter(invocation::Column::State.is_in(non_terminal_invocation_states()))
        .all(&inner.db)
        .await
        .map_err(db_error("read open invocations"))?;
    // Candidates: past expiry everything open; past the delivery deadline what did not
    // start. A sent message is withdrawn first (never delivered after); one the agent
    // already acknowledged may be running and is left to its result or to the backstop.
    let candidates: Vec<invocation::Model> = rows
        .into_iter()
        .filter(|row| {
            expired
                || matches!(row.state.as_str(), "Pending" | "Delayed")
                || row.started_at.is_none()
        })
        .collect();
    let message_ids: Vec<String> = candidates
        .iter()
        .filter(|row| row.state != "Pending")
        .filter_map(|row| row.message_id.clone())
        .collect();
    let withdrawn: std::collections::HashSet<String> = inner
        .link
        .withdraw_many(&message_ids)
        .await?
        .into_iter()
        .collect();
    let to_end: Vec<invocation::Model> = candidates
        .into_iter()
        .filter(|row| {
            expired
                || row.state == "Pending"
                || row
                    .message_id
                    .as_ref()
                    .is_none_or(|message_id| withdrawn.contains(message_id))
        })
        .collect();
    for batch in to_end.chunks(END_BATCH) {
        let now = inner.now();
        let txn = bosun_store::begin_write(&inner.db)
            .await
            .map_err(db_error("begin"))?;
        let mut delta = CountDelta::default();
        let mut staged = Vec::with_capacity(batch.len());
        for row in batch {
            if end_invocation(
                &txn,
                command_id,
                &row.node_id,
                &row.state,
                InvocationState::DeliveryTimedOut,
                now,
            )
            .await?
            {
                delta.add(InvocationState::DeliveryTimedOut);
                staged.push(invocation_event(
                    &command,
                    &row.node_id,
                    InvocationState::DeliveryTimedOut,
                    now,
                ));
            }
        }
        events::stage_many(&txn, &staged, now).await?;
        apply_counts(&txn, command_id, delta, now).await?;
        finish_if_done(&txn, command_id, now).await?;
        // Invocation rows first, the command row last (see the dispatcher).
        if !inner.renew(&txn, command_id, owner).await? {
            return Ok(());
        }
        txn.commit().await.map_err(db_error("commit"))?;
        inner.relay_wake.notify_one();
    }
    // Also finishes a command whose invocations all ended without anyone finishing it.
    let txn = bosun_store::begin_write(&inner.db)
        .await
        .map_err(db_error("begin"))?;
    apply_counts(&txn, command_id, CountDelta::default(), now).await?;
    if finish_if_done(&txn, command_id, now).await?.is_some() {
        inner.relay_wake.notify_one();
    }
    txn.commit().await.map_err(db_error("commit"))?;
    Ok(())
}
