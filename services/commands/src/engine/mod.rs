//! The running of commands (see the crate docs), on every replica at once:
//!
//! - `dispatch`: leases active commands one at a time (conditional UPDATE of
//!   `lease_owner`/`lease_until`, released after each round, so any replica woken by results
//!   may take the next round; a lease outlives a crashed holder by `lease` at most) and, per
//!   command: applies cancellation, stops the run past MaxErrors (Pending → Terminated), sends
//!   Pending invocations under the ramp (`min(concurrency_limit, 1 + 2·acknowledged)` in
//!   flight), and finishes the command when every invocation is terminal.
//! - `results`: consumer group `commands` on `node-results.commands`; applies agents' results
//!   idempotently (conditional updates; a terminal invocation never changes), one transaction
//!   per batch, acks after commit.
//! - `reconcile`: delivery timeout (not started by `delivery_deadline`) and the `expires_at`
//!   backstop, under the same lease as the dispatcher.
//! - `output`: stores full output of ended invocations from streamed chunks.
//! - `events` relay: publishes `command_event_outbox` to the `events` stream.
//!
//! Whoever changes invocation states changes the command's count columns in the same
//! transaction; whoever ends the last invocation (or the dispatcher's next round) finishes the
//! command.

mod bulk;
mod dispatch;
pub mod events;
mod output;
mod reconcile;
mod results;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bosun_core::ApiError;
use bosun_core::time::Clock;
use bosun_nodelink::NodeLink;
use bosun_objects::Objects;
use bosun_queue::Queue;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::CommandsConfig;
use crate::entities::{command, invocation};
use crate::model::{CommandState, InvocationState, Notification, StateCounts};

/// Dispatcher, result consumer, reconciler, output worker and event relay of one replica.
pub struct Engine {
    inner: Arc<Inner>,
}

/// What every worker shares.
pub(crate) struct Inner {
    pub(crate) db: DatabaseConnection,
    pub(crate) link: NodeLink,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) objects: Arc<Objects>,
    pub(crate) config: CommandsConfig,
    pub(crate) replica_id: String,
    /// Wakes the dispatcher (SendCommand, CancelCommand, results).
    pub(crate) wake: Arc<Notify>,
    /// Wakes the event relay (something was staged and committed).
    pub(crate) relay_wake: Notify,
    /// Wakes the output worker (an invocation ended).
    pub(crate) output_wake: Notify,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Engine {
    /// An engine over the commands tables in `db` (migrated), sending through `link`, reading
    /// results from `queue`, storing output in `objects`. `replica_id` names this replica in
    /// leases and consumer names; it must differ between replicas running at once.
    pub fn new(
        db: DatabaseConnection,
        link: NodeLink,
        queue: Arc<dyn Queue>,
        objects: Arc<Objects>,
        config: CommandsConfig,
        replica_id: impl Into<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                link,
                queue,
                objects,
                config,
                replica_id: replica_id.into(),
                wake: Arc::new(Notify::new()),
                relay_wake: Notify::new(),
                output_wake: Notify::new(),
                clock: Arc::new(bosun_core::time::SystemClock),
            }),
        }
    }

    /// Notified by the service after SendCommand and CancelCommand so work starts at once
    /// (call `notify_one`, which is remembered when the dispatcher is busy).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// Uses `clock` for every time the engine stores and compares (leases, deadlines,
    /// timestamps). Call before `run`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let Inner {
            db,
            link,
            queue,
            objects,
            config,
            replica_id,
            wake,
            ..
        } = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(inner) => {
                // Never shared before `run`; keep the engine usable anyway.
                tracing::warn!("with_clock on a running engine is ignored");
                return Engine { inner };
            }
        };
        Engine {
            inner: Arc::new(Inner {
                db,
                link,
                queue,
                objects,
                config,
                replica_id,
                wake,
                relay_wake: Notify::new(),
                output_wake: Notify::new(),
                clock,
            }),
        }
    }

    /// Runs every worker (`dispatcher`, `results`, `reconciler`, `output`, `event-relay`) until
    /// `shutdown`. An error in one is logged and the worker restarts after a back-off; none
    /// ends the others. On shutdown the replica's command leases are released.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let inner = self.inner;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(supervise(
            "dispatcher",
            shutdown.clone(),
            inner.clone(),
            |inner, shutdown| async move { dispatch::run(&inner, &shutdown).await },
        ));
        tasks.spawn(supervise(
            "results",
            shutdown.clone(),
            inner.clone(),
            |inner, shutdown| async move { results::run(&inner, &shutdown).await },
        ));
        tasks.spawn(supervise(
            "reconciler",
            shutdown.clone(),
            inner.clone(),
            |inner, shutdown| async move { reconcile::run(&inner, &shutdown).await },
        ));
        tasks.spawn(supervise(
            "output",
            shutdown.clone(),
            inner.clone(),
            |inner, shutdown| async move { output::run(&inner, &shutdown).await },
        ));
        tasks.spawn(supervise(
            "event-relay",
            shutdown.clone(),
            inner.clone(),
            |inner, shutdown| async move { events::run_relay(&inner, &shutdown).await },
        ));
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "command engine task ended abnormally");
            }
        }
        if let Err(error) = release_leases(&inner).await {
            tracing::warn!(%error, "releasing command leases on shutdown failed");
        }
        // Whatever was staged last goes out now if it can.
        if let Err(error) = events::relay_once(&inner).await {
            tracing::warn!(%error, "final event relay failed");
        }
        Ok(())
    }
}

/// Runs `work` until `shutdown`, restarting it after an error with a growing back-off.
async fn supervise<F, Fut>(
    name: &'static str,
    shutdown: CancellationToken,
    inner: Arc<Inner>,
    work: F,
) where
    F: Fn(Arc<Inner>, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        match work(inner.clone(), shutdown.clone()).await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::warn!(task = name, "command engine task returned; restarting"),
            Err(error) => {
                tracing::warn!(task = name, %error, "command engine task failed; restarting")
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

pub(crate) fn db_error(what: &'static str) -> impl Fn(sea_orm::DbErr) -> ApiError {
    move |error| ApiError::internal(format!("commands engine: {what}: {error}"))
}

/// Waits for `notify`, `interval` or shutdown; false on shutdown.
pub(crate) async fn idle(
    notify: &Notify,
    interval: Duration,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = notify.notified() => true,
        () = tokio::time::sleep(interval) => true,
    }
}

const ACTIVE_COMMAND_STATES: [CommandState; 3] = [
    CommandState::Pending,
    CommandState::InProgress,
    CommandState::Cancelling,
];

pub(crate) fn active_command_states() -> impl Iterator<Item = &'static str> {
    ACTIVE_COMMAND_STATES.iter().map(|state| state.as_str())
}

pub(crate) fn non_terminal_invocation_states() -> Vec<&'static str> {
    InvocationState::ALL
        .iter()
        .filter(|state| !state.is_terminal())
        .map(|state| state.as_str())
        .collect()
}

impl Inner {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::MAX)
    }

    /// Takes the lease of an active command for `owner` when nobody holds it (or the holder's
    /// lease ran out). Never two owners at once: the UPDATE is conditional.
    pub(crate) async fn claim(&self, command_id: &str, owner: &str) -> Result<bool, ApiError> {
        let now = self.now();
        let result = command::Entity::update_many()
            .col_expr(command::Column::LeaseOwner, Expr::value(owner))
            .col_expr(
                command::Column::LeaseUntil,
                Expr::value(self.lease_until(now)),
            )
            .filter(command::Column::Id.eq(command_id))
            .filter(command::Column::State.is_in(active_command_states()))
            .filter(
                sea_orm::Condition::any()
                    .add(command::Column::LeaseOwner.is_null())
                    .add(command::Column::LeaseUntil.is_null())
                    .add(command::Column::LeaseUntil.lt(now)),
            )
            .exec(&self.db)
            .await
            .map_err(db_error("claim command"))?;
        Ok(result.rows_affected > 0)
    }

    /// Extends `owner`'s lease in the caller's transaction (locking the command row on
    /// PostgreSQL); false when `owner` lost it.
    pub(crate) async fn renew(
        &self,
        conn: &impl ConnectionTrait,
        command_id: &str,
        owner: &str,
    ) -> Result<bool, ApiError> {
        let now = self.now();
        let result = command::Entity::update_many()
            .col_expr(
                command::Column::LeaseUntil,
                Expr::value(self.lease_until(now)),
            )
            .filter(command::Column::Id.eq(command_id))
            .filter(command::Column::LeaseOwner.eq(owner))
            .exec(conn)
            .await
            .map_err(db_error("renew lease"))?;
        Ok(result.rows_affected > 0)
    }

    pub(crate) async fn release(&self, command_id: &str, owner: &str) -> Result<(), ApiError> {
        command::Entity::update_many()
            .col_expr(
                command::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                command::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(command::Column::Id.eq(command_id))
            .filter(command::Column::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await
            .map_err(db_error("release lease"))?;
        Ok(())
    }

    pub(crate) fn dispatch_owner(&self) -> String {
        format!("{}/dispatch", self.replica_id)
    }

    pub(crate) fn reconcile_owner(&self) -> String {
        format!("{}/reconcile", self.replica_id)
    }

    /// Active commands nobody holds a live lease on, oldest first.
    pub(crate) async fn free_active_commands(
        &self,
        extra: Option<sea_orm::Condition>,
        limit: u64,
    ) -> Result<Vec<String>, ApiError> {
        let now = self.now();
        let mut query = command::Entity::find()
            .select_only()
            .column(command::Column::Id)
            .filter(command::Column::State.is_in(active_command_states()))
            .filter(
                sea_orm::Condition::any()
                    .add(command::Column::LeaseOwner.is_null())
                    .add(command::Column::LeaseUntil.is_null())
                    .add(command::Column::LeaseUntil.lt(now)),
            );
        if let Some(extra) = extra {
            query = query.filter(extra);
        }
        use sea_orm::QueryOrder as _;
        query
            .order_by_asc(command::Column::RequestedAt)
            .limit(limit)
            .into_tuple::<String>()
            .all(&self.db)
            .await
            .map_err(db_error("list active commands"))
    }
}

async fn release_leases(inner: &Inner) -> Result<(), ApiError> {
    command::Entity::update_many()
        .col_expr(
            command::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            command::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(
            command::Column::LeaseOwner.is_in([inner.dispatch_owner(), inner.reconcile_owner()]),
        )
        .exec(&inner.db)
        .await
        .map_err(db_error("release leases"))?;
    Ok(())
}

/// Changes to a command's count columns from invocations that became terminal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CountDelta {
    pub completed: i32,
    pub errors: i32,
    pub delivery_timed_out: i32,
}

impl CountDelta {
    /// Counts one invocation that just became `state` (terminal).
    pub(crate) fn add(&mut self, state: InvocationState) {
        if state.is_terminal() {
            self.completed += 1;
        }
        if state.is_error() {
            self.errors += 1;
        }
        if state == InvocationState::DeliveryTimedOut {
            self.delivery_timed_out += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == CountDelta::default()
    }
}

/// Applies `delta` to the command's counts and touches `updated_at` (which also locks the
/// row until commit on PostgreSQL, so the "all terminal?" check that follows sees every
/// transaction that committed before).
pub(crate) async fn apply_counts(
    conn: &impl ConnectionTrait,
    command_id: &str,
    delta: CountDelta,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    command::Entity::update_many()
        .col_expr(
            command::Column::CompletedCount,
            Expr::col(command::Column::CompletedCount).add(delta.completed),
        )
        .col_expr(
            command::Column::ErrorCount,
            Expr::col(command::Column::ErrorCount).add(delta.errors),
        )
        .col_expr(
            command::Column::DeliveryTimedOutCount,
            Expr::col(command::Column::DeliveryTimedOutCount).add(delta.delivery_timed_out),
        )
        .col_expr(command::Column::UpdatedAt, Expr::value(now))
        .filter(command::Column::Id.eq(command_id))
        .exec(conn)
        .await
        .map_err(db_error("update command counts"))?;
    Ok(())
}

/// How many invocations of the command are in each state.
pub(crate) async fn state_counts(
    conn: &impl ConnectionTrait,
    command_id: &str,
) -> Result<StateCounts, ApiError> {
    let rows: Vec<(String, i64)> = invocation::Entity::find()
        .select_only()
        .column(invocation::Column::State)
        .column_as(Expr::cust("COUNT(*)"), "n")
        .filter(invocation::Column::CommandId.eq(command_id))
        .group_by(invocation::Column::State)
        .into_tuple()
        .all(conn)
        .await
        .map_err(db_error("count invocations"))?;
    let mut counts = StateCounts::default();
    for (state, count) in rows {
        match InvocationState::parse(&state) {
            Some(state) => counts.add(state, u32::try_from(count).unwrap_or(u32::MAX)),
            None => tracing::warn!(%command_id, %state, "invocation in an unknown state"),
        }
    }
    Ok(counts)
}

/// Finishes the command when none of its invocations is left to end: its final state,
/// `finished_at`, and a status event, in the caller's transaction. Returns the new state.
/// Call after [`apply_counts`] (or another write to the command row) in the same transaction.
pub(crate) async fn finish_if_done(
    conn: &impl ConnectionTrait,
    command_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<CommandState>, ApiError> {
    let Some(command) = command::Entity::find_by_id(command_id.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read command"))?
    else {
        return Ok(None);
    };
    let Some(current) = CommandState::parse(&command.state) else {
        return Ok(None);
    };
    if current.is_terminal() {
        return Ok(None);
    }
    let open = invocation::Entity::find()
        .select_only()
        .column(invocation::Column::NodeId)
        .filter(invocation::Column::CommandId.eq(command_id))
        .filter(invocation::Column::State.is_in(non_terminal_invocation_states()))
        .limit(1)
        .into_tuple::<String>()
        .all(conn)
        .await
        .map_err(db_error("find open invocations"))?;
    if !open.is_empty() {
        return Ok(None);
    }
    let counts = state_counts(conn, command_id).await?;
    let Some(state) = crate::model::final_command_state(
        &counts,
        u32::try_from(Ord::max(command.error_limit, 0)).unwrap_or(0),
        command.cancel_requested,
    ) else {
        return Ok(None);
    };
    let changed = set_command_state(conn, &command, state, now).await?;
    Ok(changed.then_some(state))
}

/// Moves the command from its stored state to `state` (conditional on the stored state)
/// and stages the event; `finished_at` is set for a terminal state. Returns whether it moved.
pub(crate) async fn set_command_state(
    conn: &impl ConnectionTrait,
    command: &command::Model,
    state: CommandState,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    if command.state == state.as_str() {
        return Ok(false);
    }
    let mut update = command::Entity::update_many()
        .col_expr(command::Column::State, Expr::value(state.as_str()))
        .col_expr(command::Column::UpdatedAt, Expr::value(now))
        .filter(command::Column::Id.eq(command.id.as_str()))
        .filter(command::Column::State.eq(command.state.as_str()));
    if state.is_terminal() {
        update = update.col_expr(command::Column::FinishedAt, Expr::value(now));
    }
    let result = update
        .exec(conn)
        .await
        .map_err(db_error("set command state"))?;
    if result.rows_affected == 0 {
        return Ok(false);
    }
    let event = command_event(command, None, state.status(), state.details(), now);
    events::stage(conn, &event, now).await?;
    Ok(true)
}

/// The notification config of a command, if it has a valid one.
pub(crate) fn notification(command: &command::Model) -> Option<Notification> {
    if command.notification.trim().is_empty() {
        return None;
    }
    match serde_json::from_str(&command.notification) {
        Ok(notification) => Some(notification),
        Err(error) => {
            tracing::warn!(command_id = %command.id, %error, "unreadable notification config");
            None
        }
    }
}

/// A status event of the command (`instance_id` None) or of one invocation, with the
/// webhook set when the command's notification config selects it.
pub(crate) fn command_event(
    command: &command::Model,
    instance_id: Option<&str>,
    status: &str,
    details: &str,
    now: DateTime<Utc>,
) -> events::StatusEvent {
    let webhook_id = notification(command).and_then(|config| {
        let wanted_type = if instance_id.is_some() {
            "Invocation"
        } else {
            "Command"
        };
        (config.notification_type == wanted_type
            && config.events.iter().any(|event| event == status))
        .then_some(config.webhook_id)
    });
    events::StatusEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        source: crate::EVENT_SOURCE.to_owned(),
        operation: if instance_id.is_some() {
            events::INVOCATION_STATUS_CHANGE
        } else {
            events::COMMAND_STATUS_CHANGE
        }
        .to_owned(),
        name: command.id.clone(),
        command_id: command.id.clone(),
        instance_id: instance_id.map(str::to_owned),
        document_name: command.document_name.clone(),
        status: status.to_owned(),
        status_details: details.to_owned(),
        requested_by: command.requested_by.clone(),
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        webhook_id,
    }
}

/// The event of an invocation entering `state`.
pub(crate) fn invocation_event(
    command: &command::Model,
    node_id: &str,
    state: InvocationState,
    now: DateTime<Utc>,
) -> events::StatusEvent {
    command_event(command, Some(node_id), state.status(), state.details(), now)
}

/// Reads the command's trace context column.
pub(crate) fn trace_context(command: &command::Model) -> BTreeMap<String, String> {
    if command.trace_context.trim().is_empty() {
        return BTreeMap::new();
    }
    serde_json::from_str(&command.trace_context).unwrap_or_default()
}

/// Moves one invocation from `from` to terminal `to` with the given extra columns, if it is
/// still in `from`. Returns whether it moved.
pub(crate) async fn end_invocation(
    conn: &impl ConnectionTrait,
    command_id: &str,
    node_id: &str,
    from: &str,
    to: InvocationState,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let result = invocation::Entity::update_many()
        .col_expr(invocation::Column::State, Expr::value(to.as_str()))
        .col_expr(invocation::Column::EndedAt, Expr::value(now))
        .col_expr(invocation::Column::UpdatedAt, Expr::value(now))
        .filter(invocation::Column::CommandId.eq(command_id))
        .filter(invocation::Column::NodeId.eq(node_id))
        .filter(invocation::Column::State.eq(from))
        .exec(conn)
        .await
        .map_err(db_error("end invocation"))?;
    Ok(result.rows_affected > 0)
}
