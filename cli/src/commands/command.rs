//! `bosun command …`: Run Command's history (CommandService): list commands, show one with
//! its nodes, cancel it, stream a node's full output. The views are shared with `bosun run`.

use std::collections::BTreeMap;
use std::io::Write;

use bosun_proto::commands::v1 as proto;
use bosun_proto::inventory::v1 as inventory;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{Context, next_page, required};
use crate::connection::CommandsClient;
use crate::output::{Fields, Render, Table, list_cell, text_cell, time_cell};
use crate::views::{MessageView, timestamp};

/// The largest page ListCommands and ListCommandInvocations return.
pub const PAGE_SIZE: i32 = 50;

#[derive(Subcommand, Debug)]
pub enum CommandCommand {
    /// List commands, newest first.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Show a command and the status of each of its nodes.
    #[command(visible_alias = "get")]
    Show {
        /// Command id.
        id: String,
    },
    /// Cancel a command on all its nodes, or on some: pending nodes end Cancelled at once,
    /// running ones are stopped by their agent.
    Cancel {
        /// Command id.
        id: String,
        /// Only on this node; repeatable, or comma-separated.
        #[arg(long = "node", value_name = "NODE_ID", value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Write one node's full stdout (or stderr) of a command to stdout, as it was produced.
    Output(OutputArgs),
}

#[derive(Args, Debug, Default)]
pub struct ListArgs {
    /// Only commands with this status: Pending, InProgress, Success, Cancelling, Cancelled,
    /// Failed or TimedOut.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only commands of this document.
    #[arg(long = "doc", value_name = "NAME")]
    pub document: Option<String>,
    /// Only commands that ran on this node.
    #[arg(long, value_name = "NODE_ID")]
    pub node: Option<String>,
    /// Show at most this many commands.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Command id.
    pub id: String,
    /// The node.
    #[arg(long, value_name = "NODE_ID")]
    pub node: String,
    /// The step (needed when the document has more than one).
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep writing output as it arrives until the node's invocation ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// The ListCommands request of `command ls`, without paging.
pub fn list_request(args: &ListArgs) -> proto::ListCommandsRequest {
    let mut filters = Vec::new();
    if let Some(status) = &args.status {
        filters.push(proto::CommandFilter {
            key: "Status".to_owned(),
            value: status.clone(),
        });
    }
    if let Some(document) = &args.document {
        filters.push(proto::CommandFilter {
            key: "DocumentName".to_owned(),
            value: document.clone(),
        });
    }
    proto::ListCommandsRequest {
        command_id: String::new(),
        instance_id: args.node.clone().unwrap_or_default(),
        max_results: PAGE_SIZE,
        next_token: String::new(),
        filters,
    }
}

pub async fn run(ctx: &Context, command: CommandCommand) -> anyhow::Result<()> {
    match command {
        CommandCommand::Ls(args) => {
            let mut request = list_request(&args);
            let wanted = usize::try_from(args.max).unwrap_or(usize::MAX);
            let mut client = ctx.connect().await?.commands();
            let mut commands = Vec::new();
            while commands.len() < wanted {
                request.max_results =
                    i32::try_from((wanted - commands.len()).min(PAGE_SIZE as usize))
                        .unwrap_or(PAGE_SIZE);
                let page = client.list_commands(request.clone()).await?.into_inner();
                commands.extend(page.commands.into_iter().map(CommandView::from));
                match next_page(&request.next_token, page.next_token)? {
                    Some(next) => request.next_token = next,
                    None => break,
                }
            }
            commands.truncate(wanted);
            ctx.emit(&CommandList { commands })
        }
        CommandCommand::Show { id } => {
            let mut client = ctx.connect().await?.commands();
            let command = get_command(&mut client, &id).await?;
            let invocations = list_invocations(&mut client, &id, true)
                .await?
                .into_iter()
                .map(InvocationView::from)
                .collect();
            ctx.emit(&CommandDetailsView {
                command: CommandView::from(command),
                invocations,
            })
        }
        CommandCommand::Cancel { id, nodes } => {
            let message = if nodes.is_empty() {
                format!("cancelling command {id}")
            } else {
                format!("cancelling command {id} on {}", nodes.join(", "))
            };
            let mut client = ctx.connect().await?.commands();
            client
                .cancel_command(proto::CancelCommandRequest {
                    command_id: id,
                    instance_ids: nodes,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        CommandCommand::Output(args) => {
            let mut client = ctx.connect().await?.commands();
            let mut stream = client
                .get_command_output(output_request(&args))
                .await?
                .into_inner();
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await? {
                stdout.write_all(&chunk.data)?;
                stdout.flush()?;
                if chunk.end {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// The GetCommandOutput request of `command output`.
pub fn output_request(args: &OutputArgs) -> proto::GetCommandOutputRequest {
    proto::GetCommandOutputRequest {
        command_id: args.id.clone(),
        instance_id: args.node.clone(),
        plugin_name: args.step.clone().unwrap_or_default(),
        stream: if args.stderr { "stderr" } else { "stdout" }.to_owned(),
        offset: 0,
        follow: args.follow,
    }
}

/// One command by id; an error naming it when the server does not list it.
pub async fn get_command(client: &mut CommandsClient, id: &str) -> anyhow::Result<proto::Command> {
    let page = client
        .list_commands(proto::ListCommandsRequest {
            command_id: id.to_owned(),
            max_results: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    match page.commands.into_iter().find(|c| c.command_id == id) {
        Some(command) => Ok(command),
        None => anyhow::bail!("command {id} not found"),
    }
}

/// Every invocation of a command, by node id, following every page; with their plugins
/// when `details`.
pub async fn list_invocations(
    client: &mut CommandsClient,
    id: &str,
    details: bool,
) -> anyhow::Result<Vec<proto::CommandInvocation>> {
    let mut invocations = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_command_invocations(proto::ListCommandInvocationsRequest {
                command_id: id.to_owned(),
                instance_id: String::new(),
                max_results: PAGE_SIZE,
                next_token: token.clone(),
                filters: Vec::new(),
                details,
            })
            .await?
            .into_inner();
        invocations.extend(page.command_invocations);
        match next_page(&token, page.next_token)? {
            Some(next) => token = next,
            None => break,
        }
    }
    Ok(invocations)
}

/// The one invocation of `id` on `node`, with its plugins.
pub async fn get_invocation(
    client: &mut CommandsClient,
    id: &str,
    node: &str,
) -> anyhow::Result<proto::CommandInvocation> {
    let page = client
        .list_command_invocations(proto::ListCommandInvocationsRequest {
            command_id: id.to_owned(),
            instance_id: node.to_owned(),
            max_results: 1,
            next_token: String::new(),
            filters: Vec::new(),
            details: true,
        })
        .await?
        .into_inner();
    required(
        page.command_invocations
            .into_iter()
            .find(|invocation| invocation.instance_id == node),
        "invocation",
    )
}

// ---- what is printed ----

/// Whether a command status is final.
pub fn command_is_final(status: &str) -> bool {
    matches!(status, "Success" | "Cancelled" | "Failed" | "TimedOut")
}

/// Whether an invocation's status details are final.
pub fn invocation_is_final(status_details: &str) -> bool {
    !matches!(
        status_details,
        "Pending" | "In Progress" | "Delayed" | "Cancelling" | ""
    )
}

/// A target as printed: `tag:Env=prod,stage`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetView {
    pub key: String,
    pub values: Vec<String>,
}

impl From<inventory::Target> for TargetView {
    fn from(target: inventory::Target) -> Self {
        Self {
            key: target.key,
            values: target.values,
        }
    }
}

impl TargetView {
    fn text(&self) -> String {
        format!("{}={}", self.key, self.values.join(","))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub notification_arn: String,
    pub notification_events: Vec<String>,
    pub notification_type: String,
}

/// A command as the CLI prints it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandView {
    pub command_id: String,
    pub document_name: String,
    pub document_version: String,
    pub comment: String,
    pub status: String,
    pub status_details: String,
    pub requested_by: String,
    pub requested_date_time: Option<DateTime<Utc>>,
    pub expires_after: Option<DateTime<Utc>>,
    pub instance_ids: Vec<String>,
    pub targets: Vec<TargetView>,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub max_concurrency: String,
    pub max_errors: String,
    pub timeout_seconds: i32,
    pub target_count: i32,
    pub completed_count: i32,
    pub error_count: i32,
    pub delivery_timed_out_count: i32,
    pub output_s3_bucket_name: String,
    pub output_s3_key_prefix: String,
    pub notification_config: Option<NotificationView>,
}

impl From<proto::Command> for CommandView {
    fn from(command: proto::Command) -> Self {
        Self {
            command_id: command.command_id,
            document_name: command.document_name,
            document_version: command.document_version,
            comment: command.comment,
            status: command.status,
            status_details: command.status_details,
            requested_by: command.requested_by,
            requested_date_time: timestamp(command.requested_date_time),
            expires_after: timestamp(command.expires_after),
            instance_ids: command.instance_ids,
            targets: command.targets.into_iter().map(TargetView::from).collect(),
            parameters: command
                .parameters
                .into_iter()
                .map(|(name, values)| (name, values.values))
                .collect(),
            max_concurrency: command.max_concurrency,
            max_errors: command.max_errors,
            timeout_seconds: command.timeout_seconds,
            target_count: command.target_count,
            completed_count: command.completed_count,
            error_count: command.error_count,
            delivery_timed_out_count: command.delivery_timed_out_count,
            output_s3_bucket_name: command.output_s3_bucket_name,
            output_s3_key_prefix: command.output_s3_key_prefix,
            notification_config: command
                .notification_config
                .filter(|config| !config.notification_arn.is_empty())
                .map(|config| NotificationView {
                    notification_arn: config.notification_arn,
                    notification_events: config.notification_events,
                    notification_type: config.notification_type,
                }),
        }
    }
}

impl CommandView {
    /// `tag:Env=prod; tag-key=team`, or the node ids.
    fn targets_text(&self) -> String {
        if self.targets.is_empty() {
            list_cell(&self.instance_ids)
        } else {
            let targets: Vec<String> = self.targets.iter().map(TargetView::text).collect();
            targets.join("; ")
        }
    }

    fn fields(&self) -> Fields {
        let parameters: Vec<String> = self
            .parameters
            .iter()
            .map(|(name, values)| format!("{name}={}", values.join(",")))
            .collect();
        let notification = self.notification_config.as_ref().map_or_else(
            || "-".to_owned(),
            |config| {
                let events = if config.notification_events.is_empty() {
                    "All".to_owned()
                } else {
                    config.notification_events.join(",")
                };
                format!(
                    "{} ({} {})",
                    config.notification_arn,
                    text_cell(&config.notification_type),
                    events
                )
            },
        );
        Fields::new()
            .field("id", &self.command_id)
            .field(
                "document",
                format!("{} (version {})", self.document_name, self.document_version),
            )
            .field(
                "status",
                format!("{} ({})", self.status, self.status_details),
            )
            .field("comment", text_cell(&self.comment))
            .field("requested by", text_cell(&self.requested_by))
            .field("requested", time_cell(self.requested_date_time))
            .field("expires after", time_cell(self.expires_after))
            .field("targets", self.targets_text())
            .field("parameters", list_cell(&parameters))
            .field("max concurrency", text_cell(&self.max_concurrency))
            .field("max errors", text_cell(&self.max_errors))
            .field("timeout", format!("{}s", self.timeout_seconds))
            .field(
                "nodes",
                format!(
                    "{} targeted, {} completed, {} errors, {} delivery timed out",
                    self.target_count,
                    self.completed_count,
                    self.error_count,
                    self.delivery_timed_out_count
                ),
            )
            .field(
                "output",
                match (
                    self.output_s3_bucket_name.as_str(),
                    self.output_s3_key_prefix.as_str(),
                ) {
                    ("", prefix) => text_cell(prefix),
                    (bucket, prefix) => format!("{bucket}/{prefix}"),
                },
            )
            .field("notification", notification)
    }
}

impl Render for CommandView {
    fn to_table(&self) -> String {
        self.fields().render()
    }
}

#[derive(Debug, Serialize)]
pub struct CommandList {
    pub commands: Vec<CommandView>,
}

impl Render for CommandList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "ID",
            "DOCUMENT",
            "STATUS",
            "NODES",
            "DONE",
            "ERRORS",
            "REQUESTED",
            "BY",
            "COMMENT",
        ]);
        for command in &self.commands {
            table.row(vec![
                command.command_id.clone(),
                command.document_name.clone(),
                command.status.clone(),
                command.target_count.to_string(),
                command.completed_count.to_string(),
                command.error_count.to_string(),
                time_cell(command.requested_date_time),
                text_cell(&command.requested_by),
                text_cell(&command.comment),
            ]);
        }
        table.render()
    }
}

/// One step of one node.
#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    pub name: String,
    pub plugin: String,
    pub status: String,
    pub status_details: String,
    /// Exit code; `None` when the step did not run or was killed.
    pub response_code: Option<i32>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub output: String,
    pub standard_output_url: String,
    pub standard_error_url: String,
}

impl From<proto::CommandPlugin> for PluginView {
    fn from(plugin: proto::CommandPlugin) -> Self {
        Self {
            name: plugin.name,
            plugin: plugin.plugin,
            status: plugin.status,
            status_details: plugin.status_details,
            response_code: (plugin.response_code >= 0).then_some(plugin.response_code),
            started: timestamp(plugin.response_start_date_time),
            finished: timestamp(plugin.response_finish_date_time),
            output: plugin.output,
            standard_output_url: plugin.standard_output_url,
            standard_error_url: plugin.standard_error_url,
        }
    }
}

/// One node of a command.
#[derive(Debug, Clone, Serialize)]
pub struct InvocationView {
    pub instance_id: String,
    pub instance_name: String,
    pub status: String,
    pub status_details: String,
    pub standard_output_url: String,
    pub standard_error_url: String,
    pub plugins: Vec<PluginView>,
}

impl From<proto::CommandInvocation> for InvocationView {
    fn from(invocation: proto::CommandInvocation) -> Self {
        Self {
            instance_id: invocation.instance_id,
            instance_name: invocation.instance_name,
            status: invocation.status,
            status_details: invocation.status_details,
            standard_output_url: invocation.standard_output_url,
            standard_error_url: invocation.standard_error_url,
            plugins: invocation
                .command_plugins
                .into_iter()
                .map(PluginView::from)
                .collect(),
        }
    }
}

impl InvocationView {
    /// The exit codes of its steps: `0`, `0, 2`; `-` for a step that did not run.
    fn exit_codes(&self) -> String {
        let codes: Vec<String> = self
            .plugins
            .iter()
            .map(|plugin| {
                plugin
                    .response_code
                    .map_or_else(|| "-".to_owned(), |code| code.to_string())
            })
            .collect();
        if codes.is_empty() {
            "-".to_owned()
        } else {
            codes.join(", ")
        }
    }

    fn started(&self) -> Option<DateTime<Utc>> {
        self.plugins
            .iter()
            .filter_map(|plugin| plugin.started)
            .min()
    }

    fn finished(&self) -> Option<DateTime<Utc>> {
        if !invocation_is_final(&self.status_details) {
            return None;
        }
        self.plugins
            .iter()
            .filter_map(|plugin| plugin.finished)
            .max()
    }
}

/// What `command show` prints: the command, then its nodes.
#[derive(Debug, Serialize)]
pub struct CommandDetailsView {
    #[serde(flatten)]
    pub command: CommandView,
    pub invocations: Vec<InvocationView>,
}

impl Render for CommandDetailsView {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "NODE",
            "NAME",
            "STATUS",
            "EXIT CODE",
            "STARTED",
            "FINISHED",
        ]);
        for invocation in &self.invocations {
            table.row(vec![
                invocation.instance_id.clone(),
                text_cell(&invocation.instance_name),
                invocation.status_details.clone(),
                invocation.exit_codes(),
                time_cell(invocation.started()),
                time_cell(invocation.finished()),
            ]);
        }
        format!("{}\n{}", self.command.to_table(), table.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    // 2024-01-01T00:00:00Z.
    const JAN_1: i64 = 1_704_067_200;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    pub fn command() -> proto::Command {
        proto::Command {
            command_id: "0190f0aa-0000-7000-8000-000000000001".into(),
            document_name: "AWS-RunShellScript".into(),
            document_version: "1".into(),
            comment: "uptime".into(),
            requested_date_time: at(JAN_1),
            expires_after: at(JAN_1 + 4200),
            status: "InProgress".into(),
            status_details: "In Progress".into(),
            targets: vec![inventory::Target {
                key: "tag:Env".into(),
                values: vec!["prod".into(), "stage".into()],
            }],
            parameters: [(
                "commands".to_owned(),
                proto::ParameterValues {
                    values: vec!["uptime".into()],
                },
            )]
            .into(),
            max_concurrency: "50".into(),
            max_errors: "0".into(),
            target_count: 3,
            completed_count: 1,
            error_count: 1,
            timeout_seconds: 3600,
            requested_by: "user:admin".into(),
            output_s3_key_prefix: "commands".into(),
            ..Default::default()
        }
    }

    fn invocation(node: &str, details: &str, codes: &[i32]) -> proto::CommandInvocation {
        proto::CommandInvocation {
            command_id: "c".into(),
            instance_id: node.into(),
            instance_name: format!("host-{node}"),
            status_details: details.into(),
            status: details.replace(' ', ""),
            command_plugins: codes
                .iter()
                .enumerate()
                .map(|(index, code)| proto::CommandPlugin {
                    name: format!("step{index}"),
                    response_code: *code,
                    response_start_date_time: at(JAN_1 + 1),
                    response_finish_date_time: at(JAN_1 + 2 + index as i64),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn list_flags_become_filters() {
        let request = list_request(&ListArgs {
            status: Some("Failed".into()),
            document: Some("AWS-RunShellScript".into()),
            node: Some("mi-1".into()),
            max: 5,
        });
        let filters: Vec<(&str, &str)> = request
            .filters
            .iter()
            .map(|f| (f.key.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            filters,
            [("Status", "Failed"), ("DocumentName", "AWS-RunShellScript")]
        );
        assert_eq!(request.instance_id, "mi-1");
        assert!(list_request(&ListArgs::default()).filters.is_empty());
    }

    #[test]
    fn output_asks_for_the_chosen_stream() {
        let mut args = OutputArgs {
            id: "c".into(),
            node: "mi-1".into(),
            step: None,
            stderr: false,
            follow: false,
        };
        let request = output_request(&args);
        assert_eq!(
            (request.stream.as_str(), request.plugin_name.as_str()),
            ("stdout", "")
        );
        args.stderr = true;
        args.follow = true;
        args.step = Some("two".into());
        let request = output_request(&args);
        assert_eq!(request.stream, "stderr");
        assert_eq!(request.plugin_name, "two");
        assert!(request.follow);
    }

    #[test]
    fn command_list_as_table_and_json() -> anyhow::Result<()> {
        let list = CommandList {
            commands: vec![CommandView::from(command())],
        };
        assert_eq!(
            render(&list, OutputFormat::Table)?,
            "ID                                    DOCUMENT            STATUS      NODES  DONE  ERRORS  REQUESTED             BY          COMMENT\n\
             0190f0aa-0000-7000-8000-000000000001  AWS-RunShellScript  InProgress  3      1     1       2024-01-01T00:00:00Z  user:admin  uptime\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&list, OutputFormat::Json)?)?;
        let first = &json["commands"][0];
        assert_eq!(first["status_details"], "In Progress");
        assert_eq!(first["parameters"]["commands"][0], "uptime");
        assert_eq!(first["targets"][0]["key"], "tag:Env");
        assert_eq!(first["requested_date_time"], "2024-01-01T00:00:00Z");
        assert_eq!(first["notification_config"], serde_json::Value::Null);
        Ok(())
    }

    #[test]
    fn command_details_show_the_command_and_each_node() -> anyhow::Result<()> {
        let details = CommandDetailsView {
            command: CommandView::from(command()),
            invocations: vec![
                InvocationView::from(invocation("mi-1", "Success", &[0])),
                InvocationView::from(invocation("mi-2", "Failed", &[0, 2])),
                InvocationView::from(invocation("mi-3", "In Progress", &[-1])),
                InvocationView::from(invocation("mi-4", "Access Denied", &[])),
            ],
        };
        let table = render(&details, OutputFormat::Table)?;
        for line in [
            "id:               0190f0aa-0000-7000-8000-000000000001\n",
            "document:         AWS-RunShellScript (version 1)\n",
            "status:           InProgress (In Progress)\n",
            "targets:          tag:Env=prod,stage\n",
            "parameters:       commands=uptime\n",
            "nodes:            3 targeted, 1 completed, 1 errors, 0 delivery timed out\n",
            "\nNODE  NAME       STATUS         EXIT CODE  STARTED               FINISHED\n",
            "mi-1  host-mi-1  Success        0          2024-01-01T00:00:01Z  2024-01-01T00:00:02Z\n",
            "mi-2  host-mi-2  Failed         0, 2       2024-01-01T00:00:01Z  2024-01-01T00:00:03Z\n",
            "mi-3  host-mi-3  In Progress    -          2024-01-01T00:00:01Z  -\n",
            "mi-4  host-mi-4  Access Denied  -          -                     -\n",
        ] {
            assert!(table.contains(line), "{line:?} not in\n{table}");
        }
        let json: serde_json::Value = serde_json::from_str(&render(&details, OutputFormat::Json)?)?;
        assert_eq!(json["command_id"], "0190f0aa-0000-7000-8000-000000000001");
        assert_eq!(json["invocations"][1]["plugins"][1]["response_code"], 2);
        assert_eq!(
            json["invocations"][2]["plugins"][0]["response_code"],
            serde_json::Value::Null
        );
        Ok(())
    }

    #[test]
    fn final_states() {
        for status in ["Success", "Cancelled", "Failed", "TimedOut"] {
            assert!(command_is_final(status), "{status}");
        }
        for status in ["Pending", "InProgress", "Cancelling"] {
            assert!(!command_is_final(status), "{status}");
        }
        for details in [
            "Success",
            "Failed",
            "Delivery Timed Out",
            "Execution Timed Out",
            "Cancelled",
            "Undeliverable",
            "Terminated",
            "Invalid Platform",
            "Access Denied",
        ] {
            assert!(invocation_is_final(details), "{details}");
        }
        for details in ["Pending", "In Progress", "Delayed", "Cancelling"] {
            assert!(!invocation_is_final(details), "{details}");
        }
    }
}
