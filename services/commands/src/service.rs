//! `bosun.commands.v1.CommandService`: validate → authorize → change and audit in one
//! transaction (SendCommand, CancelCommand); the reads check `commands:<Rpc>` on
//! `command:<id>` (`command:*` for lists), deny by default.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_auth::{AuthContext, auth_context};
use bosun_core::ApiError;
use bosun_core::time::Clock;
use bosun_objects::Objects;
use bosun_proto::commands::v1 as pb;
use chrono::{DateTime, TimeDelta, Utc};
use pb::command_service_server::{CommandService, CommandServiceServer};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, JoinType, QueryFilter, QueryOrder, QuerySelect, RelationDef, Statement,
};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status};

use crate::engine::events::{COMMAND_STATUS_CHANGE, INVOCATION_STATUS_CHANGE, StatusEvent};
use crate::entities::{command, invocation, output_chunk};
use crate::model::{
    CommandState, InvocationState, Notification, OutputState, StateCounts, final_command_state,
    output_key,
};
use crate::query::{
    self, MAX_STDERR_CHARS, MAX_STDOUT_CHARS, PageToken, StepView, first_chars, iso,
};
use crate::send;
use crate::validate::{
    self, DUPLICATE_COMMAND, INVALID_COMMAND_ID, INVALID_INSTANCE_ID, INVALID_PLUGIN_NAME,
    INVOCATION_DOES_NOT_EXIST, MAX_INSTANCE_IDS, VALIDATION, invalid,
};
use crate::{CommandsConfig, EVENT_SOURCE, Ports};

/// Rows per multi-row INSERT on SQLite (invocations have 18 columns: well under its
/// bind-parameter limit).
const INSERT_BATCH: usize = 1000;
/// How often GetCommandOutput with `follow` looks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Largest `data` of one GetCommandOutput message.
const MAX_OUTPUT_MESSAGE: usize = 64 * 1024;

/// The RPCs of Run Command.
pub struct CommandServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    ports: Ports,
    objects: Arc<Objects>,
    config: CommandsConfig,
    wake: Option<Arc<Notify>>,
    clock: Arc<dyn Clock>,
}

impl CommandServiceImpl {
    pub fn new(
        db: DatabaseConnection,
        audit: AuditLog,
        ports: Ports,
        objects: Arc<Objects>,
        config: CommandsConfig,
    ) -> Self {
        Self {
            db,
            audit,
            ports,
            objects,
            config,
            wake: None,
            clock: Arc::new(bosun_core::time::SystemClock),
        }
    }

    /// Notified after SendCommand and CancelCommand (the local [`crate::Engine::wake_handle`]).
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn into_server(self) -> CommandServiceServer<Self> {
        CommandServiceServer::new(self)
    }

    fn wake_engine(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }
}

type OutputStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::GetCommandOutputResponse, Status>> + Send>,
>;

fn action(rpc: &str) -> String {
    format!("commands:{rpc}")
}

fn command_resource(id: &str) -> String {
    format!("command:{id}")
}

fn authorize(caller: &AuthContext, rpc: &str, command_id: &str) -> Result<(), ApiError> {
    caller
        .authorize(
            &action(rpc),
            &command_resource(command_id),
            &BTreeMap::new(),
        )
        .map_err(ApiError::from)
}

fn db_error(what: &'static str) -> impl FnOnce(sea_orm::DbErr) -> ApiError {
    move |error| ApiError::internal(format!("{what}: {error}"))
}

fn invocation_missing(command_id: &str, node_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "command {command_id} has no invocation on node {node_id}"
    ))
    .with_reason(INVOCATION_DOES_NOT_EXIST)
}

fn command_missing(command_id: &str) -> ApiError {
    ApiError::not_found(format!("command {command_id} not found")).with_reason(INVALID_COMMAND_ID)
}

/// `invocation` rows joined to their command.
fn invocation_to_command() -> RelationDef {
    invocation::Entity::belongs_to(command::Entity)
        .from(invocation::Column::CommandId)
        .to(command::Column::Id)
        .into()
}

async fn find_command<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> Result<Option<command::Model>, ApiError> {
    command::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read command"))
}

async fn find_invocation<C: ConnectionTrait>(
    conn: &C,
    command_id: &str,
    node_id: &str,
) -> Result<Option<invocation::Model>, ApiError> {
    invocation::Entity::find_by_id((command_id.to_owned(), node_id.to_owned()))
        .one(conn)
        .await
        .map_err(db_error("read invocation"))
}

/// The step `plugin_name` names among the invocation's steps; empty names the only one.
/// `None` when the invocation runs no step (and none was named).
fn pick_step<'a, 'p>(
    views: &'a [StepView<'p>],
    plugin_name: &str,
) -> Result<Option<&'a StepView<'p>>, ApiError> {
    let names = || {
        views
            .iter()
            .map(|view| view.step.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if plugin_name.is_empty() {
        return match views {
            [] => Ok(None),
            [only] => Ok(Some(only)),
            _ => Err(ApiError::not_found(format!(
                "plugin_name is required: the invocation runs {} steps ({})",
                views.len(),
                names()
            ))
            .with_reason(INVALID_PLUGIN_NAME)),
        };
    }
    views
        .iter()
        .find(|view| view.step.name == plugin_name)
        .map(Some)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "plugin_name {plugin_name} names no step of the invocation (steps: {})",
                names()
            ))
            .with_reason(INVALID_PLUGIN_NAME)
        })
}

/// A status event of a command (`node` None) or of one invocation; directed at the
/// notification's webhook when it selects it.
fn status_event(
    row: &command::Model,
    notification: Option<&Notification>,
    node: Option<&str>,
    status: &str,
    details: &str,
    now: DateTime<Utc>,
) -> StatusEvent {
    let wanted_type = if node.is_some() {
        "Invocation"
    } else {
        "Command"
    };
    let webhook_id = notification
        .filter(|notification| {
            notification.notification_type == wanted_type
                && notification.events.iter().any(|event| event == status)
        })
        .map(|notification| notification.webhook_id.clone());
    StatusEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        source: EVENT_SOURCE.to_owned(),
        operation: if node.is_some() {
            INVOCATION_STATUS_CHANGE
        } else {
            COMMAND_STATUS_CHANGE
        }
        .to_owned(),
        name: row.id.clone(),
        command_id: row.id.clone(),
        instance_id: node.map(str::to_owned),
        document_name: row.document_name.clone(),
        status: status.to_owned(),
        status_details: details.to_owned(),
        requested_by: row.requested_by.clone(),
        time: now.to_rfc3339(),
        webhook_id,
    }
}

/// One invocation SendCommand stores.
#[derive(Debug, Serialize)]
struct NewInvocation {
    node_id: String,
    node_name: String,
    platform_type: String,
    seq: i32,
    steps: String,
    state: &'static str,
    /// Already terminal: `ended_at` is now.
    ended: bool,
}

/// Inserts a command's invocations. PostgreSQL takes them all in one statement
/// (`json_to_recordset` over one JSON parameter: 10,000 rows in one round trip, no
/// bind-parameter limit); SQLite in multi-row INSERTs of `INSERT_BATCH`.
async fn insert_invocations<C: ConnectionTrait>(
    conn: &C,
    command_id: &str,
    rows: Vec<NewInvocation>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if rows.is_empty() {
        return Ok(());
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        let json = serde_json::to_string(&rows).map_err(ApiError::internal)?;
        let sql = "INSERT INTO command_invocations (command_id, node_id, node_name, \
            platform_type, seq, steps, state, message_id, dispatched_at, started_at, ended_at, \
            response_code, plugins, error, cancel_requested, output_state, output_deadline, \
            updated_at) \
            SELECT $1, t.node_id, t.node_name, t.platform_type, t.seq, t.steps, t.state, \
            NULL, NULL, NULL, CASE WHEN t.ended THEN $2::timestamptz END, -1, '[]', '', false, \
            $3, NULL, $2::timestamptz \
            FROM json_to_recordset($4::json) AS t(node_id text, node_name text, \
            platform_type text, seq integer, steps text, state text, ended boolean)";
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [
                command_id.into(),
                now.into(),
                OutputState::None.as_str().into(),
                json.into(),
            ],
        ))
        .await
        .map_err(db_error("insert invocations"))?;
        return Ok(());
    }
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<invocation::ActiveModel> = rows
            .by_ref()
            .take(INSERT_BATCH)
            .map(|row| invocation::ActiveModel {
                command_id: Set(command_id.to_owned()),
                node_id: Set(row.node_id),
                node_name: Set(row.node_name),
                platform_type: Set(row.platform_type),
                seq: Set(row.seq),
                steps: Set(row.steps),
                state: Set(row.state.to_owned()),
                message_id: Set(None),
                dispatched_at: Set(None),
                started_at: Set(None),
                ended_at: Set(row.ended.then_some(now)),
                response_code: Set(-1),
                plugins: Set("[]".to_owned()),
                error: Set(String::new()),
                cancel_requested: Set(false),
                output_state: Set(OutputState::None.as_str().to_owned()),
                output_deadline: Set(None),
                updated_at: Set(now),
            })
            .collect();
        invocation::Entity::insert_many(batch)
            .exec_without_returning(conn)
            .await
            .map_err(db_error("insert invocations"))?;
    }
    Ok(())
}

// ---- SendCommand ------------------------------------------------------------------------------

impl CommandServiceImpl {
    async fn send(
        &self,
        request: &Request<pb::SendCommandRequest>,
        caller: &AuthContext,
    ) -> Result<pb::Command, ApiError> {
        let body = request.get_ref();
        let mut checked = send::check(
            body,
            self.objects.bucket(),
            &self.config.default_output_prefix,
        )?;
        send::find_webhook(&self.ports, &mut checked.notification).await?;
        let now = self.clock.now();
        let command_id = uuid::Uuid::new_v4().to_string();
        let record = AuditRecord::for_request(
            request,
            caller,
            &action("SendCommand"),
            &command_resource(&command_id),
        );
        let audit_details = |version: &str, targets: usize, denied: usize| {
            serde_json::json!({
                "document_name": checked.document_name,
                "document_version": version,
                "target_count": targets,
                "access_denied_count": denied,
                "instance_ids": checked.instance_ids,
                "targets": serde_json::from_str::<serde_json::Value>(&send::targets_json(&checked.targets))
                    .unwrap_or_default(),
                "comment": checked.comment,
            })
        };
        let denied = |record: AuditRecord, details: serde_json::Value| async move {
            self.audit
                .record(record.details(details).outcome(AuditOutcome::Denied))
                .await
        };

        let planned = match send::plan(&self.ports, caller, &checked, now).await {
            Ok(planned) => planned,
            Err(error @ ApiError::PermissionDenied(_)) => {
                let version = checked.document_version.clone().unwrap_or_default();
                denied(record, audit_details(&version, 0, 0)).await?;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let nodes = send::target_nodes(&self.ports, &checked).await?;

        // Per node: may the caller run here, can it be reached, does any step apply.
        let send_action = action("SendCommand");
        let mut counts = StateCounts::default();
        let mut states = Vec::with_capacity(nodes.len());
        let mut allowed = 0usize;
        for node in &nodes {
            let steps = send::steps_for(&planned.plan, &node.platform_type);
            let state =
                if !caller.is_allowed(&send_action, &format!("node:{}", node.id), &node.tags) {
                    InvocationState::AccessDenied
                } else if !node.registered {
                    allowed += 1;
                    InvocationState::Undeliverable
                } else if steps.is_empty() {
                    allowed += 1;
                    InvocationState::InvalidPlatform
                } else {
                    allowed += 1;
                    InvocationState::Pending
                };
            counts.add(state, 1);
            states.push((state, steps));
        }
        let version = planned.document.version.clone();
        if !nodes.is_empty() && allowed == 0 {
            denied(record, audit_details(&version, nodes.len(), nodes.len())).await?;
            return Err(ApiError::PermissionDenied(format!(
                "{} may not run commands (commands:SendCommand) on any of the {} targeted nodes",
                caller.principal,
                nodes.len()
            )));
        }

        let target_count = u64::try_from(nodes.len()).unwrap_or(u64::MAX);
        let error_limit = checked.errors.error_limit(target_count);
        let initial = if nodes.is_empty() {
            CommandState::NoInstancesInTag
        } else {
            final_command_state(
                &counts,
                u32::try_from(error_limit).unwrap_or(u32::MAX),
                false,
            )
            .unwrap_or(CommandState::Pending)
        };
        let timeout = TimeDelta::seconds(i64::from(checked.timeout_seconds));
        let execution = TimeDelta::seconds(
            i64::try_from(planned.plan.execution_timeout_seconds).unwrap_or(i64::MAX / 2),
        );
        let delivery_deadline = now + timeout;
        let mut trace_context = BTreeMap::new();
        bosun_telemetry::inject_map(&mut trace_context);
        let count = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
        let row = command::Model {
            id: command_id.clone(),
            document_name: planned.document.name.clone(),
            document_version: version.clone(),
            document_hash: planned.document.hash.clone(),
            parameters: serde_json::to_string(&checked.parameters).map_err(ApiError::internal)?,
            instance_ids: serde_json::to_string(&checked.instance_ids)
                .map_err(ApiError::internal)?,
            targets: send::targets_json(&checked.targets),
            comment: checked.comment.clone(),
            timeout_seconds: checked.timeout_seconds,
            execution_timeout_seconds: i64::try_from(planned.plan.execution_timeout_seconds)
                .unwrap_or(i64::MAX),
            max_concurrency: checked.max_concurrency.clone(),
            max_errors: checked.max_errors.clone(),
            concurrency_limit: checked.concurrency.concurrency_limit(target_count),
            error_limit,
            output_bucket: checked.output_bucket.clone(),
            output_prefix: checked.output_prefix.clone(),
            notification: match &checked.notification {
                Some(notification) => {
                    serde_json::to_string(notification).map_err(ApiError::internal)?
                }
                None => String::new(),
            },
            plan: serde_json::to_string(&planned.plan).map_err(ApiError::internal)?,
            state: initial.as_str().to_owned(),
            requested_at: now,
            delivery_deadline,
            expires_at: delivery_deadline + execution,
            finished_at: initial.is_terminal().then_some(now),
            target_count: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
            completed_count: count(counts.terminal()),
            error_count: count(counts.errors()),
            delivery_timed_out_count: count(counts.get(InvocationState::DeliveryTimedOut)),
            requested_by: caller.principal.to_string(),
            cancel_requested: false,
            trace_context: serde_json::to_string(&trace_context).map_err(ApiError::internal)?,
            lease_owner: None,
            lease_until: None,
            updated_at: now,
        };

        let mut events = vec![status_event(
            &row,
            checked.notification.as_ref(),
            None,
            initial.status(),
            initial.details(),
            now,
        )];
        let mut invocations = Vec::with_capacity(nodes.len());
        for (seq, (node, (state, steps))) in nodes.iter().zip(states).enumerate() {
            if state.is_terminal() {
                events.push(status_event(
                    &row,
                    checked.notification.as_ref(),
                    Some(&node.id),
                    state.status(),
                    state.details(),
                    now,
                ));
            }
            invocations.push(NewInvocation {
                node_id: node.id.clone(),
                node_name: node.name.clone(),
                platform_type: node.platform_type.clone(),
                seq: i32::try_from(seq).unwrap_or(i32::MAX),
                steps,
                state: state.as_str(),
                ended: state.is_terminal(),
            });
        }

        let access_denied =
            usize::try_from(counts.get(InvocationState::AccessDenied)).unwrap_or(usize::MAX);
        let record = record.details(audit_details(&version, nodes.len(), access_denied));
        let txn = bosun_store::begin_write(&self.db)
            .await
            .map_err(ApiError::internal)?;
        command::Entity::insert(command::ActiveModel::from(row.clone()))
            .exec_without_returning(&txn)
            .await
            .map_err(db_error("insert command"))?;
        insert_invocations(&txn, &command_id, invocations, now).await?;
        crate::engine::events::stage_many(&txn, &events, now).await?;
        self.audit.record_in(&txn, record).await?;
        txn.commit().await.map_err(db_error("commit command"))?;
        if !initial.is_terminal() {
            self.wake_engine();
        }
        query::command_to_proto(&row)
    }
}

// ---- lists ----------------------------------------------------------------------------------

impl CommandServiceImpl {
    async fn list_commands_page(
        &self,
        caller: &AuthContext,
        body: &pb::ListCommandsRequest,
    ) -> Result<pb::ListCommandsResponse, ApiError> {
        if !body.command_id.is_empty() {
            validate::command_id("command_id", &body.command_id)?;
        }
        if !body.instance_id.is_empty() {
            validate::node_id("instance_id", &body.instance_id)?;
        }
        let page = validate::page_size("max_results", body.max_results)?;
        let filters = query::filters(&body.filters, true)?;
        let after = PageToken::decode(&body.next_token)?;
        let resource = if body.command_id.is_empty() {
            "*"
        } else {
            &body.command_id
        };
        authorize(caller, "ListCommands", resource)?;

        let mut condition = filters.command_condition();
        if !body.command_id.is_empty() {
            condition = condition.add(command::Column::Id.eq(body.command_id.clone()));
        }
        if !body.instance_id.is_empty() {
            condition = condition.add(query::on_node(&body.instance_id));
        }
        if let Some((time, token)) = &after {
            condition = condition.add(query::commands_after(*time, &token.c));
        }
        let mut rows = command::Entity::find()
            .filter(condition)
            .order_by_desc(command::Column::RequestedAt)
            .order_by_desc(command::Column::Id)
            .limit(u64::try_from(page + 1).unwrap_or(51))
            .all(&self.db)
            .await
            .map_err(db_error("list commands"))?;
        // As SSM: a command id that names no command is an error, not an empty page.
        if rows.is_empty()
            && !body.command_id.is_empty()
            && command::Entity::find_by_id(body.command_id.clone())
                .one(&self.db)
                .await
                .map_err(db_error("read command"))?
                .is_none()
        {
            return Err(command_missing(&body.command_id));
        }
        let next_token = if rows.len() > page {
            rows.truncate(page);
            rows.last()
                .map(|last| {
                    PageToken {
                        t: PageToken::time(last.requested_at),
                        c: last.id.clone(),
                        n: None,
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListCommandsResponse {
            commands: rows
                .iter()
                .map(query::command_to_proto)
                .collect::<Result<_, _>>()?,
            next_token,
        })
    }

    async fn list_invocations_page(
        &self,
        caller: &AuthContext,
        body: &pb::ListCommandInvocationsRequest,
    ) -> Result<pb::ListCommandInvocationsResponse, ApiError> {
        if !body.command_id.is_empty() {
            validate::command_id("command_id", &body.command_id)?;
        }
        if !body.instance_id.is_empty() {
            validate::node_id("instance_id", &body.instance_id)?;
        }
        let page = validate::page_size("max_results", body.max_results)?;
        let filters = query::filters(&body.filters, false)?;
        let after = PageToken::decode(&body.next_token)?;
        if after.as_ref().is_some_and(|(_, token)| token.n.is_none()) {
            return Err(invalid(
                "next_token",
                "is not a token this call returned",
                validate::INVALID_NEXT_TOKEN,
            ));
        }
        let resource = if body.command_id.is_empty() {
            "*"
        } else {
            &body.command_id
        };
        authorize(caller, "ListCommandInvocations", resource)?;

        let mut condition = filters.command_condition();
        if !body.command_id.is_empty() {
            condition = condition.add(invocation::Column::CommandId.eq(body.command_id.clone()));
        }
        if !body.instance_id.is_empty() {
            condition = condition.add(invocation::Column::NodeId.eq(body.instance_id.clone()));
        }
        if let Some((time, token)) = &after {
            condition = condition.add(query::invocations_after(
                *time,
                &token.c,
                token.n.as_deref().unwrap_or_default(),
            ));
        }
        let mut rows = invocation::Entity::find()
            .join(JoinType::InnerJoin, invocation_to_command())
            .filter(condition)
            .order_by_desc(command::Column::RequestedAt)
            .order_by_desc(command::Column::Id)
            .order_by_asc(invocation::Column::NodeId)
            .limit(u64::try_from(page + 1).unwrap_or(51))
            .all(&self.db)
            .await
            .map_err(db_error("list invocations"))?;
        let more = rows.len() > page;
        rows.truncate(page);
        let mut ids: Vec<String> = rows.iter().map(|row| row.command_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let commands: HashMap<String, command::Model> = command::Entity::find()
            .filter(command::Column::Id.is_in(ids))
            .all(&self.db)
            .await
            .map_err(db_error("read commands"))?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        let mut plans = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let command = commands
                .get(&row.command_id)
                .ok_or_else(|| ApiError::internal("invocation without its command"))?;
            if !plans.contains_key(&command.id) {
                plans.insert(command.id.clone(), query::plan_of(command)?);
            }
            let plan = &plans[&command.id];
            out.push(query::invocation_to_proto(
                &self.objects,
                command,
                plan,
                row,
                body.details,
            )?);
        }
        let next_token = match rows.last() {
            Some(last) if more => {
                let command = &commands[&last.command_id];
                PageToken {
                    t: PageToken::time(command.requested_at),
                    c: command.id.clone(),
                    n: Some(last.node_id.clone()),
                }
                .encode()
            }
            _ => String::new(),
        };
        Ok(pb::ListCommandInvocationsResponse {
            command_invocations: out,
            next_token,
        })
    }
}

// ---- GetCommandInvocation ---------------------------------------------------------------------

impl CommandServiceImpl {
    async fn get_invocation(
        &self,
        caller: &AuthContext,
        body: &pb::GetCommandInvocationRequest,
    ) -> Result<pb::GetCommandInvocationResponse, ApiError> {
        validate::command_id("command_id", &body.command_id)?;
        validate::node_id("instance_id", &body.instance_id)?;
        authorize(caller, "GetCommandInvocation", &body.command_id)?;
        let command = find_command(&self.db, &body.command_id)
            .await?
            .ok_or_else(|| invocation_missing(&body.command_id, &body.instance_id))?;
        let row = find_invocation(&self.db, &body.command_id, &body.instance_id)
            .await?
            .ok_or_else(|| invocation_missing(&body.command_id, &body.instance_id))?;
        let state = query::invocation_state(&row)?;
        let plan = query::plan_of(&command)?;
        let views = query::steps_of(&plan, &row)?;
        let view = pick_step(&views, &body.plugin_name)?;

        let mut response = pb::GetCommandInvocationResponse {
            command_id: command.id.clone(),
            instance_id: row.node_id.clone(),
            comment: command.comment.clone(),
            document_name: command.document_name.clone(),
            document_version: command.document_version.clone(),
            plugin_name: String::new(),
            response_code: -1,
            status: state.status().to_owned(),
            status_details: state.details().to_owned(),
            ..Default::default()
        };
        let Some(view) = view else {
            return Ok(response);
        };
        let (status, details) = query::plugin_status(view, state);
        response.plugin_name = view.step.name.clone();
        response.status = status.to_owned();
        response.status_details = details.to_owned();
        let (stdout_url, stderr_url) =
            query::output_urls(&self.objects, &command, &row, &view.step.name);
        response.standard_output_url = stdout_url;
        response.standard_error_url = stderr_url;
        if let Some(result) = &view.result {
            response.response_code = result.response_code;
            let started = query::parse_time(result.started_at.as_deref());
            let ended = query::parse_time(result.ended_at.as_deref());
            response.execution_start_date_time = started.map(iso).unwrap_or_default();
            response.execution_end_date_time = ended.map(iso).unwrap_or_default();
            if let (Some(started), Some(ended)) = (started, ended) {
                response.execution_elapsed_time = query::elapsed(started, ended);
            }
            let (stdout, stdout_cut) = first_chars(&result.stdout, MAX_STDOUT_CHARS);
            let (stderr, stderr_cut) = first_chars(&result.stderr, MAX_STDERR_CHARS);
            response.standard_output_content = stdout;
            response.standard_error_content = stderr;
            response.standard_output_truncated =
                stdout_cut || result.stdout_truncated || result.stream_truncated;
            response.standard_error_truncated =
                stderr_cut || result.stderr_truncated || result.stream_truncated;
            if let Some(error) = &result.error
                && response.standard_error_content.is_empty()
            {
                response.standard_error_content = first_chars(error, MAX_STDERR_CHARS).0;
            }
        } else if !row.error.is_empty() {
            response.standard_error_content = first_chars(&row.error, MAX_STDERR_CHARS).0;
        }
        Ok(response)
    }
}

// ---- CancelCommand ----------------------------------------------------------------------------

impl CommandServiceImpl {
    async fn cancel(
        &self,
        request: &Request<pb::CancelCommandRequest>,
        caller: &AuthContext,
    ) -> Result<(), ApiError> {
        let body = request.get_ref();
        validate::command_id("command_id", &body.command_id)?;
        if body.instance_ids.len() > MAX_INSTANCE_IDS {
            return Err(invalid(
                "instance_ids",
                "must have at most 50 node ids",
                VALIDATION,
            ));
        }
        for (index, id) in body.instance_ids.iter().enumerate() {
            validate::node_id(&format!("instance_ids[{index}]"), id)?;
        }
        let record = AuditRecord::for_request(
            request,
            caller,
            &action("CancelCommand"),
            &command_resource(&body.command_id),
        )
        .details(serde_json::json!({ "instance_ids": body.instance_ids }));
        let authorization = authorize(caller, "CancelCommand", &body.command_id);
        let command_id = body.command_id.clone();
        let instance_ids = body.instance_ids.clone();
        let now = self.clock.now();
        self.audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move { cancel_in(txn, &command_id, &instance_ids, now).await })
            })
            .await?;
        self.wake_engine();
        Ok(())
    }
}

/// Marks the command and the chosen non-terminal invocations cancel-requested; the engine
/// does the rest.
async fn cancel_in<C: ConnectionTrait>(
    txn: &C,
    command_id: &str,
    instance_ids: &[String],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let row = find_command(txn, command_id)
        .await?
        .ok_or_else(|| command_missing(command_id))?;
    let state = query::command_state(&row)?;
    if state.is_terminal() {
        return Err(ApiError::failed_precondition(format!(
            "cancel command {command_id}: it already ended ({})",
            state.details()
        ))
        .with_reason(DUPLICATE_COMMAND));
    }
    if !instance_ids.is_empty() {
        let found: Vec<String> = invocation::Entity::find()
            .select_only()
            .column(invocation::Column::NodeId)
            .filter(invocation::Column::CommandId.eq(command_id))
            .filter(invocation::Column::NodeId.is_in(instance_ids.iter().cloned()))
            .into_tuple()
            .all(txn)
            .await
            .map_err(db_error("read invocations"))?;
        if let Some((index, id)) = instance_ids
            .iter()
            .enumerate()
            .find(|(_, id)| !found.contains(id))
        {
            return Err(invalid(
                format!("instance_ids[{index}]"),
                format!("command {command_id} does not run on node {id}"),
                INVALID_INSTANCE_ID,
            ));
        }
    }
    let running: Vec<&str> = InvocationState::ALL
        .into_iter()
        .filter(|state| !state.is_terminal())
        .map(InvocationState::as_str)
        .collect();
    let mut update = invocation::Entity::update_many()
        .col_expr(invocation::Column::CancelRequested, Expr::value(true))
        .col_expr(invocation::Column::UpdatedAt, Expr::value(now))
        .filter(invocation::Column::CommandId.eq(command_id))
        .filter(invocation::Column::State.is_in(running));
    if !instance_ids.is_empty() {
        update = update.filter(invocation::Column::NodeId.is_in(instance_ids.iter().cloned()));
    }
    update
        .exec(txn)
        .await
        .map_err(db_error("mark invocations cancelled"))?;
    let terminal: Vec<&str> = CommandState::ALL
        .into_iter()
        .filter(|state| state.is_terminal())
        .map(CommandState::as_str)
        .collect();
    let changed = command::Entity::update_many()
        .col_expr(command::Column::CancelRequested, Expr::value(true))
        .col_expr(
            command::Column::State,
            Expr::value(CommandState::Cancelling.as_str()),
        )
        .col_expr(command::Column::UpdatedAt, Expr::value(now))
        .filter(command::Column::Id.eq(command_id))
        .filter(command::Column::State.is_not_in(terminal))
        .exec(txn)
        .await
        .map_err(db_error("mark command cancelling"))?;
    if changed.rows_affected == 0 {
        return Err(ApiError::failed_precondition(format!(
            "cancel command {command_id}: it already ended"
        ))
        .with_reason(DUPLICATE_COMMAND));
    }
    if state != CommandState::Cancelling {
        let notification: Option<Notification> = if row.notification.is_empty() {
            None
        } else {
            serde_json::from_str(&row.notification).ok()
        };
        let event = status_event(
            &row,
            notification.as_ref(),
            None,
            CommandState::Cancelling.status(),
            CommandState::Cancelling.details(),
            now,
        );
        crate::engine::events::stage(txn, &event, now).await?;
    }
    Ok(())
}

// ---- GetCommandOutput -------------------------------------------------------------------------

/// What one GetCommandOutput stream reads.
struct OutputRequest {
    db: DatabaseConnection,
    objects: Arc<Objects>,
    command: command::Model,
    node_id: String,
    /// `None`: the invocation runs no step.
    step: Option<(i32, String)>,
    stream: &'static str,
    offset: u64,
    follow: bool,
}

impl CommandServiceImpl {
    async fn open_output(
        &self,
        caller: &AuthContext,
        body: &pb::GetCommandOutputRequest,
    ) -> Result<OutputRequest, ApiError> {
        validate::command_id("command_id", &body.command_id)?;
        validate::node_id("instance_id", &body.instance_id)?;
        let stream = match body.stream.as_str() {
            "" | "stdout" => "stdout",
            "stderr" => "stderr",
            _ => return Err(invalid("stream", "must be stdout or stderr", VALIDATION)),
        };
        authorize(caller, "GetCommandInvocation", &body.command_id)?;
        let command = find_command(&self.db, &body.command_id)
            .await?
            .ok_or_else(|| invocation_missing(&body.command_id, &body.instance_id))?;
        let row = find_invocation(&self.db, &body.command_id, &body.instance_id)
            .await?
            .ok_or_else(|| invocation_missing(&body.command_id, &body.instance_id))?;
        let plan = query::plan_of(&command)?;
        let views = query::steps_of(&plan, &row)?;
        let step = pick_step(&views, &body.plugin_name)?.map(|view| {
            (
                i32::try_from(view.plugin_index).unwrap_or(i32::MAX),
                view.step.name.clone(),
            )
        });
        Ok(OutputRequest {
            db: self.db.clone(),
            objects: self.objects.clone(),
            command,
            node_id: row.node_id,
            step,
            stream,
            offset: body.offset,
            follow: body.follow,
        })
    }
}

impl OutputRequest {
    /// Sends the output from `offset`; returns when it has all been sent (or the client left).
    async fn run(mut self, tx: mpsc::Sender<Result<pb::GetCommandOutputResponse, Status>>) {
        if let Err(error) = self.pump(&tx).await {
            let _ = tx.send(Err(error.into())).await;
        }
    }

    async fn pump(
        &mut self,
        tx: &mpsc::Sender<Result<pb::GetCommandOutputResponse, Status>>,
    ) -> Result<(), ApiError> {
        loop {
            let row = find_invocation(&self.db, &self.command.id, &self.node_id)
                .await?
                .ok_or_else(|| invocation_missing(&self.command.id, &self.node_id))?;
            let state = query::invocation_state(&row)?;
            let details = state.details().to_owned();
            let output_state = OutputState::parse(&row.output_state).unwrap_or(OutputState::None);
            let Some((plugin_index, step)) = self.step.clone() else {
                let _ = tx
                    .send(Ok(message(Vec::new(), self.offset, true, &details)))
                    .await;
                return Ok(());
            };
            if output_state == OutputState::Stored {
                let key = output_key(
                    &self.command.output_prefix,
                    &self.command.id,
                    &self.node_id,
                    &step,
                    self.stream,
                );
                let bytes = match self.objects.get(&key).await {
                    Ok(bytes) => bytes,
                    Err(bosun_objects::ObjectsError::NotFound { .. }) => Default::default(),
                    Err(error) => {
                        return Err(ApiError::internal(format!("read output {key}: {error}")));
                    }
                };
                let start = usize::try_from(self.offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let rest = &bytes[start..];
                if rest.is_empty() {
                    let _ = tx
                        .send(Ok(message(Vec::new(), self.offset, true, &details)))
                        .await;
                    return Ok(());
                }
                let pieces: Vec<&[u8]> = rest.chunks(MAX_OUTPUT_MESSAGE).collect();
                let last = pieces.len() - 1;
                for (index, piece) in pieces.into_iter().enumerate() {
                    let sent = tx
                        .send(Ok(message(
                            piece.to_vec(),
                            self.offset,
                            index == last,
                            &details,
                        )))
                        .await;
                    if sent.is_err() {
                        return Ok(());
                    }
                    self.offset += piece.len() as u64;
                }
                return Ok(());
            }
            let sent_any = self.send_chunks(tx, plugin_index, &details).await?;
            if sent_any.is_none() {
                return Ok(());
            }
            // Ended without output to store (never ran): nothing more will come.
            if state.is_terminal() && output_state == OutputState::None {
                let _ = tx
                    .send(Ok(message(Vec::new(), self.offset, true, &details)))
                    .await;
                return Ok(());
            }
            if !self.follow {
                if sent_any == Some(false) {
                    let _ = tx
                        .send(Ok(message(Vec::new(), self.offset, false, &details)))
                        .await;
                }
                return Ok(());
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            if tx.is_closed() {
                return Ok(());
            }
        }
    }

    /// Sends streamed chunks from `offset` while they are contiguous. `None` when the client
    /// left; else whether anything was sent.
    async fn send_chunks(
        &mut self,
        tx: &mpsc::Sender<Result<pb::GetCommandOutputResponse, Status>>,
        plugin_index: i32,
        details: &str,
    ) -> Result<Option<bool>, ApiError> {
        let mut sent_any = false;
        loop {
            let from = i64::try_from(self.offset).unwrap_or(i64::MAX);
            let chunks = output_chunk::Entity::find()
                .filter(
                    Condition::all()
                        .add(output_chunk::Column::CommandId.eq(self.command.id.clone()))
                        .add(output_chunk::Column::NodeId.eq(self.node_id.clone()))
                        .add(output_chunk::Column::PluginIndex.eq(plugin_index))
                        .add(output_chunk::Column::Stream.eq(self.stream))
                        .add(output_chunk::Column::Offset.gt(from - MAX_OUTPUT_MESSAGE as i64)),
                )
                .order_by_asc(output_chunk::Column::Offset)
                .limit(32)
                .all(&self.db)
                .await
                .map_err(db_error("read output chunks"))?;
            let mut progressed = false;
            for chunk in chunks {
                let start = u64::try_from(chunk.offset).unwrap_or(0);
                let end = start + chunk.data.len() as u64;
                if end <= self.offset {
                    continue;
                }
                if start > self.offset {
                    // A gap: the chunk before it has not arrived yet.
                    break;
                }
                let skip = usize::try_from(self.offset - start).unwrap_or(0);
                let data = chunk.data[skip..].to_vec();
                let length = data.len() as u64;
                if tx
                    .send(Ok(message(data, self.offset, false, details)))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
                self.offset += length;
                sent_any = true;
                progressed = true;
            }
            if !progressed {
                return Ok(Some(sent_any));
            }
        }
    }
}

fn message(data: Vec<u8>, offset: u64, end: bool, details: &str) -> pb::GetCommandOutputResponse {
    pb::GetCommandOutputResponse {
        data,
        offset,
        end,
        status_details: details.to_owned(),
    }
}

// ---- the RPCs ---------------------------------------------------------------------------------

#[tonic::async_trait]
impl CommandService for CommandServiceImpl {
    async fn send_command(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::SendCommandResponse>, Status> {
        let caller = auth_context(&request)?;
        let command = self.send(&request, &caller).await?;
        Ok(Response::new(pb::SendCommandResponse {
            command: Some(command),
        }))
    }

    async fn list_commands(
        &self,
        request: Request<pb::ListCommandsRequest>,
    ) -> Result<Response<pb::ListCommandsResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(
            self.list_commands_page(&caller, request.get_ref()).await?,
        ))
    }

    async fn list_command_invocations(
        &self,
        request: Request<pb::ListCommandInvocationsRequest>,
    ) -> Result<Response<pb::ListCommandInvocationsResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(
            self.list_invocations_page(&caller, request.get_ref())
                .await?,
        ))
    }

    async fn get_command_invocation(
        &self,
        request: Request<pb::GetCommandInvocationRequest>,
    ) -> Result<Response<pb::GetCommandInvocationResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(
            self.get_invocation(&caller, request.get_ref()).await?,
        ))
    }

    async fn cancel_command(
        &self,
        request: Request<pb::CancelCommandRequest>,
    ) -> Result<Response<pb::CancelCommandResponse>, Status> {
        let caller = auth_context(&request)?;
        self.cancel(&request, &caller).await?;
        Ok(Response::new(pb::CancelCommandResponse {}))
    }

    type GetCommandOutputStream = OutputStream;

    async fn get_command_output(
        &self,
        request: Request<pb::GetCommandOutputRequest>,
    ) -> Result<Response<Self::GetCommandOutputStream>, Status> {
        let caller = auth_context(&request)?;
        let output = self.open_output(&caller, request.get_ref()).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(output.run(tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
