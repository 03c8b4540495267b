//! The read side of the RPCs: stored rows as protos, list filters and page tokens, and the
//! per-step view of an invocation (its plugins, their inline output and addresses).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_core::ApiError;
use bosun_core::time::to_timestamp;
use bosun_document::run::{CommandStatus, PluginResult};
use bosun_objects::Objects;
use bosun_proto::commands::v1 as pb;
use bosun_proto::inventory::v1 as inventory_pb;
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, Condition};
use serde::{Deserialize, Serialize};

use crate::entities::{command, invocation};
use crate::model::{
    CommandState, InvocationState, Notification, OutputState, Plan, PlannedStep, output_key,
};
use crate::validate::{INVALID_FILTER_KEY, INVALID_NEXT_TOKEN, VALIDATION, invalid};

/// Inline output of a plugin in ListCommandInvocations (stdout then stderr).
pub(crate) const MAX_PLUGIN_OUTPUT_CHARS: usize = 2_500;
/// GetCommandInvocation's inline stdout.
pub(crate) const MAX_STDOUT_CHARS: usize = 24_000;
/// GetCommandInvocation's inline stderr.
pub(crate) const MAX_STDERR_CHARS: usize = 8_000;
const MAX_FILTERS: usize = 5;

fn stored<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text)
        .map_err(|error| ApiError::internal(format!("stored {what}: {error}")))
}

pub(crate) fn plan_of(row: &command::Model) -> Result<Plan, ApiError> {
    stored("plan", &row.plan)
}

pub(crate) fn command_state(row: &command::Model) -> Result<CommandState, ApiError> {
    CommandState::parse(&row.state)
        .ok_or_else(|| ApiError::internal(format!("stored command state {}", row.state)))
}

pub(crate) fn invocation_state(row: &invocation::Model) -> Result<InvocationState, ApiError> {
    InvocationState::parse(&row.state)
        .ok_or_else(|| ApiError::internal(format!("stored invocation state {}", row.state)))
}

fn parameters_proto(
    text: &str,
) -> Result<std::collections::HashMap<String, pb::ParameterValues>, ApiError> {
    let map: BTreeMap<String, Vec<String>> = stored("parameters", text)?;
    Ok(map
        .into_iter()
        .map(|(name, values)| (name, pb::ParameterValues { values }))
        .collect())
}

#[derive(Deserialize)]
struct StoredTarget {
    key: String,
    values: Vec<String>,
}

pub(crate) fn command_to_proto(row: &command::Model) -> Result<pb::Command, ApiError> {
    let state = command_state(row)?;
    let targets: Vec<StoredTarget> = stored("targets", &row.targets)?;
    let notification: Option<Notification> = if row.notification.is_empty() {
        None
    } else {
        Some(stored("notification", &row.notification)?)
    };
    Ok(pb::Command {
        command_id: row.id.clone(),
        document_name: row.document_name.clone(),
        document_version: row.document_version.clone(),
        comment: row.comment.clone(),
        expires_after: Some(to_timestamp(row.expires_at)),
        parameters: parameters_proto(&row.parameters)?,
        instance_ids: stored("instance ids", &row.instance_ids)?,
        targets: targets
            .into_iter()
            .map(|target| inventory_pb::Target {
                key: target.key,
                values: target.values,
            })
            .collect(),
        requested_date_time: Some(to_timestamp(row.requested_at)),
        status: state.status().to_owned(),
        status_details: state.details().to_owned(),
        output_s3_bucket_name: row.output_bucket.clone(),
        output_s3_key_prefix: row.output_prefix.clone(),
        max_concurrency: row.max_concurrency.clone(),
        max_errors: row.max_errors.clone(),
        target_count: row.target_count,
        completed_count: row.completed_count,
        error_count: row.error_count,
        delivery_timed_out_count: row.delivery_timed_out_count,
        notification_config: notification.map(|notification| pb::NotificationConfig {
            notification_arn: notification.arn,
            notification_events: notification.events,
            notification_type: notification.notification_type,
        }),
        timeout_seconds: row.timeout_seconds,
        requested_by: row.requested_by.clone(),
    })
}

// ---- filters ------------------------------------------------------------------------------

/// What a list RPC's filters select.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub invoked_after: Option<DateTime<Utc>>,
    pub invoked_before: Option<DateTime<Utc>>,
    pub document_name: Option<String>,
    /// Stored state names any of which passes.
    pub command_states: Option<Vec<&'static str>>,
    pub invocation_states: Option<Vec<&'static str>>,
    /// `Some(true)`: Complete; `Some(false)`: Executing.
    pub complete: Option<bool>,
}

fn command_states_for(status: &str) -> Option<Vec<&'static str>> {
    use CommandState as S;
    let states: Vec<CommandState> = match status {
        "Pending" => vec![S::Pending],
        "InProgress" => vec![S::InProgress],
        "Cancelling" => vec![S::Cancelling],
        "Success" => vec![S::Success],
        "Cancelled" => vec![S::Cancelled],
        "Failed" => S::ALL
            .into_iter()
            .filter(|s| s.status() == "Failed")
            .collect(),
        "TimedOut" => vec![S::ExecutionTimedOut, S::DeliveryTimedOut],
        "AccessDenied" => vec![S::AccessDenied],
        "DeliveryTimedOut" => vec![S::DeliveryTimedOut],
        "ExecutionTimedOut" => vec![S::ExecutionTimedOut],
        "Incomplete" => vec![S::Incomplete],
        "NoInstancesInTag" => vec![S::NoInstancesInTag],
        "Undeliverable" => vec![S::Undeliverable],
        // Bosun never refuses a command for a quota.
        "LimitExceeded" => vec![],
        _ => return None,
    };
    Some(states.into_iter().map(CommandState::as_str).collect())
}

fn invocation_states_for(status: &str) -> Option<Vec<&'static str>> {
    use InvocationState as S;
    let states: Vec<InvocationState> = match status {
        "Pending" => vec![S::Pending],
        "InProgress" => vec![S::InProgress],
        "Delayed" => vec![S::Delayed],
        "Cancelling" => vec![S::Cancelling],
        "Success" => vec![S::Success],
        "Cancelled" => vec![S::Cancelled],
        "Failed" => S::ALL
            .into_iter()
            .filter(|s| s.status() == "Failed")
            .collect(),
        "TimedOut" => vec![S::ExecutionTimedOut, S::DeliveryTimedOut],
        "AccessDenied" => vec![S::AccessDenied],
        "DeliveryTimedOut" => vec![S::DeliveryTimedOut],
        "ExecutionTimedOut" => vec![S::ExecutionTimedOut],
        "Undeliverable" => vec![S::Undeliverable],
        "InvalidPlatform" => vec![S::InvalidPlatform],
        "Terminated" => vec![S::Terminated],
        _ => return None,
    };
    Some(states.into_iter().map(InvocationState::as_str).collect())
}

fn time_value(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| invalid(field, "must be an RFC 3339 time", VALIDATION))
}

/// Checks the filters of ListCommands (`commands` true) or ListCommandInvocations.
pub(crate) fn filters(list: &[pb::CommandFilter], commands: bool) -> Result<Filters, ApiError> {
    if list.len() > MAX_FILTERS {
        return Err(invalid(
            "filters",
            "must have at most 5 filters",
            VALIDATION,
        ));
    }
    let mut out = Filters::default();
    for (index, filter) in list.iter().enumerate() {
        let value_field = format!("filters[{index}].value");
        let value = filter.value.as_str();
        if value.is_empty() {
            return Err(invalid(value_field, "is required", VALIDATION));
        }
        match filter.key.as_str() {
            "InvokedAfter" => out.invoked_after = Some(time_value(&value_field, value)?),
            "InvokedBefore" => out.invoked_before = Some(time_value(&value_field, value)?),
            "DocumentName" => out.document_name = Some(value.to_owned()),
            "Status" if commands => {
                out.command_states = Some(command_states_for(value).ok_or_else(|| {
                    invalid(
                        value_field,
                        "must be Pending, InProgress, Success, Cancelled, Failed, TimedOut, AccessDenied, DeliveryTimedOut, ExecutionTimedOut, Incomplete, NoInstancesInTag or LimitExceeded",
                        VALIDATION,
                    )
                })?);
            }
            "Status" => {
                out.invocation_states = Some(invocation_states_for(value).ok_or_else(|| {
                    invalid(
                        value_field,
                        "must be Pending, InProgress, Delayed, Success, Cancelled, Failed, TimedOut, AccessDenied, DeliveryTimedOut, ExecutionTimedOut, Undeliverable, InvalidPlatform or Terminated",
                        VALIDATION,
                    )
                })?);
            }
            "ExecutionStage" if commands => {
                out.complete = Some(match value {
                    "Executing" => false,
                    "Complete" => true,
                    _ => {
                        return Err(invalid(
                            value_field,
                            "must be Executing or Complete",
                            VALIDATION,
                        ));
                    }
                });
            }
            _ => {
                let keys = if commands {
                    "InvokedAfter, InvokedBefore, Status, DocumentName or ExecutionStage"
                } else {
                    "InvokedAfter, InvokedBefore, Status or DocumentName"
                };
                return Err(invalid(
                    format!("filters[{index}].key"),
                    format!("must be {keys}"),
                    INVALID_FILTER_KEY,
                ));
            }
        }
    }
    Ok(out)
}

impl Filters {
    /// The condition on `commands` columns.
    pub(crate) fn command_condition(&self) -> Condition {
        let mut all = Condition::all();
        if let Some(after) = self.invoked_after {
            all = all.add(command::Column::RequestedAt.gte(after));
        }
        if let Some(before) = self.invoked_before {
            all = all.add(command::Column::RequestedAt.lte(before));
        }
        if let Some(name) = &self.document_name {
            all = all.add(command::Column::DocumentName.eq(name.clone()));
        }
        if let Some(states) = &self.command_states {
            all = all.add(command::Column::State.is_in(states.iter().copied()));
        }
        if let Some(complete) = self.complete {
            let running: Vec<&str> = CommandState::ALL
                .into_iter()
                .filter(|state| !state.is_terminal())
                .map(CommandState::as_str)
                .collect();
            all = all.add(if complete {
                command::Column::State.is_not_in(running)
            } else {
                command::Column::State.is_in(running)
            });
        }
        if let Some(states) = &self.invocation_states {
            all = all.add(invocation::Column::State.is_in(states.iter().copied()));
        }
        all
    }
}

/// Commands with an invocation on `node_id`.
pub(crate) fn on_node(node_id: &str) -> Condition {
    let subquery = Query::select()
        .column(invocation::Column::CommandId)
        .from(invocation::Entity)
        .and_where(invocation::Column::NodeId.eq(node_id))
        .to_owned();
    Condition::all().add(command::Column::Id.in_subquery(subquery))
}

// ---- page tokens --------------------------------------------------------------------------

/// Where a page ends: the last command (and node) listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageToken {
    /// `requested_at` of the last command, RFC 3339 with nanoseconds.
    pub t: String,
    pub c: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
}

impl PageToken {
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(text: &str) -> Result<Option<(DateTime<Utc>, PageToken)>, ApiError> {
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            invalid(
                "next_token",
                "is not a token this call returned",
                INVALID_NEXT_TOKEN,
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let time = DateTime::parse_from_rfc3339(&token.t)
            .map_err(|_| bad())?
            .with_timezone(&Utc);
        Ok(Some((time, token)))
    }

    pub(crate) fn time(time: DateTime<Utc>) -> String {
        time.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

/// Commands after `(time, id)` in newest-first order.
pub(crate) fn commands_after(time: DateTime<Utc>, id: &str) -> Condition {
    Condition::any()
        .add(command::Column::RequestedAt.lt(time))
        .add(
            Condition::all()
                .add(command::Column::RequestedAt.eq(time))
                .add(command::Column::Id.lt(id)),
        )
}

/// Invocations after `(time, command id, node id)` in (command newest first, node) order.
pub(crate) fn invocations_after(time: DateTime<Utc>, id: &str, node: &str) -> Condition {
    Condition::any()
        .add(command::Column::RequestedAt.lt(time))
        .add(
            Condition::all()
                .add(command::Column::RequestedAt.eq(time))
                .add(
                    Condition::any().add(command::Column::Id.lt(id)).add(
                        Condition::all()
                            .add(command::Column::Id.eq(id))
                            .add(invocation::Column::NodeId.gt(node)),
                    ),
                ),
        )
}

// ---- steps of an invocation -----------------------------------------------------------------

/// One step of an invocation as the read RPCs show it.
pub(crate) struct StepView<'a> {
    /// Index of the step in the node's plugins (the `plugin_index` of its output chunks).
    pub plugin_index: usize,
    pub step: &'a PlannedStep,
    pub result: Option<PluginResult>,
}

/// The plan's steps that run on this invocation's node, in order, with their results.
pub(crate) fn steps_of<'a>(
    plan: &'a Plan,
    row: &invocation::Model,
) -> Result<Vec<StepView<'a>>, ApiError> {
    let mut results: Vec<PluginResult> = if row.plugins.is_empty() {
        Vec::new()
    } else {
        stored("plugin results", &row.plugins)?
    };
    let mut out = Vec::new();
    for (plugin_index, index) in row
        .steps
        .split(',')
        .filter(|text| !text.is_empty())
        .enumerate()
    {
        let index: usize = index
            .parse()
            .map_err(|_| ApiError::internal(format!("stored steps {}", row.steps)))?;
        let step = plan
            .steps
            .get(index)
            .ok_or_else(|| ApiError::internal(format!("stored steps {}", row.steps)))?;
        let position = results.iter().position(|result| result.step == step.name);
        out.push(StepView {
            plugin_index,
            step,
            result: position.map(|position| results.swap_remove(position)),
        });
    }
    Ok(out)
}

/// SSM's plugin status and status details of a step.
pub(crate) fn plugin_status(
    view: &StepView<'_>,
    state: InvocationState,
) -> (&'static str, &'static str) {
    match view.result.as_ref().map(|result| result.status) {
        Some(CommandStatus::InProgress) if state.is_terminal() => (state.status(), state.details()),
        Some(CommandStatus::InProgress) => ("InProgress", "In Progress"),
        Some(CommandStatus::Success) => ("Success", "Success"),
        Some(CommandStatus::Failed) => ("Failed", "Failed"),
        Some(CommandStatus::TimedOut) => ("TimedOut", "Execution Timed Out"),
        Some(CommandStatus::Cancelled) => ("Cancelled", "Cancelled"),
        Some(CommandStatus::Skipped) => ("Cancelled", "Skipped"),
        Some(CommandStatus::InvalidPlatform) => ("Failed", "Invalid Platform"),
        None if state.is_terminal() => (state.status(), state.details()),
        None if state == InvocationState::Cancelling => ("Cancelling", "Cancelling"),
        None => ("Pending", "Pending"),
    }
}

/// The first `limit` characters of `text`, and whether it was cut.
pub(crate) fn first_chars(text: &str, limit: usize) -> (String, bool) {
    match text.char_indices().nth(limit) {
        Some((end, _)) => (text[..end].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

/// stdout then stderr of a plugin, as SSM combines them.
pub(crate) fn combined_output(result: &PluginResult) -> String {
    let mut out = result.stdout.clone();
    if !result.stderr.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("----------ERROR-------\n");
        out.push_str(&result.stderr);
    }
    if let Some(error) = &result.error {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(error);
    }
    out
}

pub(crate) fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// ISO-8601 as SSM writes it: `2026-11-29T00:01:02.345Z`.
pub(crate) fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An ISO-8601 duration as SSM writes it: `PT1.234S`.
pub(crate) fn elapsed(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let millis = (end - start).num_milliseconds().max(0);
    format!("PT{}.{:03}S", millis / 1000, millis % 1000)
}

/// The addresses of a step's full stdout and stderr, once stored.
pub(crate) fn output_urls(
    objects: &Objects,
    command: &command::Model,
    row: &invocation::Model,
    step: &str,
) -> (String, String) {
    if OutputState::parse(&row.output_state) != Some(OutputState::Stored) {
        return (String::new(), String::new());
    }
    let key = |stream| {
        output_key(
            &command.output_prefix,
            &command.id,
            &row.node_id,
            step,
            stream,
        )
    };
    (objects.url(&key("stdout")), objects.url(&key("stderr")))
}

/// An invocation as ListCommandInvocations shows it.
pub(crate) fn invocation_to_proto(
    objects: &Objects,
    command: &command::Model,
    plan: &Plan,
    row: &invocation::Model,
    details: bool,
) -> Result<pb::CommandInvocation, ApiError> {
    let state = invocation_state(row)?;
    let steps = steps_of(plan, row)?;
    let mut trace = String::new();
    for view in &steps {
        if let Some(result) = &view.result {
            trace.push_str(&combined_output(result));
        }
    }
    if !row.error.is_empty() {
        if !trace.is_empty() && !trace.ends_with('\n') {
            trace.push('\n');
        }
        trace.push_str(&row.error);
    }
    let (trace_output, _) = first_chars(&trace, MAX_PLUGIN_OUTPUT_CHARS);
    let (standard_output_url, standard_error_url) = steps
        .first()
        .map(|view| output_urls(objects, command, row, &view.step.name))
        .unwrap_or_default();
    let command_plugins = if details {
        steps
            .iter()
            .map(|view| {
                let (status, status_details) = plugin_status(view, state);
                let (stdout_url, stderr_url) = output_urls(objects, command, row, &view.step.name);
                let result = view.result.as_ref();
                pb::CommandPlugin {
                    name: view.step.name.clone(),
                    status: status.to_owned(),
                    status_details: status_details.to_owned(),
                    response_code: result.map_or(-1, |result| result.response_code),
                    response_start_date_time: parse_time(
                        result.and_then(|r| r.started_at.as_deref()),
                    )
                    .map(to_timestamp),
                    response_finish_date_time: parse_time(
                        result.and_then(|r| r.ended_at.as_deref()),
                    )
                    .map(to_timestamp),
                    output: result
                        .map(|result| {
                            first_chars(&combined_output(result), MAX_PLUGIN_OUTPUT_CHARS).0
                        })
                        .unwrap_or_default(),
                    standard_output_url: stdout_url,
                    standard_error_url: stderr_url,
                    output_s3_bucket_name: command.output_bucket.clone(),
                    output_s3_key_prefix: command.output_prefix.clone(),
                    plugin: view.step.action.clone(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(pb::CommandInvocation {
        command_id: row.command_id.clone(),
        instance_id: row.node_id.clone(),
        instance_name: row.node_name.clone(),
        comment: command.comment.clone(),
        document_name: command.document_name.clone(),
        document_version: command.document_version.clone(),
        requested_date_time: Some(to_timestamp(command.requested_at)),
        status: state.status().to_owned(),
        status_details: state.details().to_owned(),
        trace_output,
        standard_output_url,
        standard_error_url,
        command_plugins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_like_ssm() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            elapsed(start, start + chrono::TimeDelta::milliseconds(1234)),
            "PT1.234S"
        );
        assert_eq!(iso(start), "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn first_chars_counts_characters() {
        assert_eq!(first_chars("héllo", 2), ("hé".to_owned(), true));
        assert_eq!(first_chars("hé", 2), ("hé".to_owned(), false));
    }

    #[test]
    fn page_tokens_round_trip() {
        let token = PageToken {
            t: PageToken::time(Utc::now()),
            c: "c".into(),
            n: Some("mi-0".into()),
        };
        let (_, decoded) = PageToken::decode(&token.encode())
            .expect("decodes")
            .expect("a token");
        assert_eq!(decoded, token);
        assert!(PageToken::decode("!!").is_err());
    }
}
