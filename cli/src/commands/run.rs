//! `bosun run`: sends a command (SendCommand) and follows it: a progress line, each node's
//! result as it finishes, and an exit code that says whether the command succeeded.
//! `bosun run --targets tag:Env=prod -- uname -a` is shorthand for the document
//! AWS-RunShellScript with `commands` set to the words after `--`.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use bosun_proto::commands::v1 as proto;
use bosun_proto::inventory::v1 as inventory;
use clap::{ArgGroup, Args, ValueEnum};
use serde::Serialize;

use super::command::{
    CommandView, PluginView, command_is_final, get_command, get_invocation, invocation_is_final,
    list_invocations,
};
use super::{Context, required};
use crate::connection::CommandsClient;
use crate::output::{OutputFormat, Render, printable};

/// The document `-- COMMAND…` runs.
pub const SHELL_DOCUMENT: &str = "AWS-RunShellScript";
/// Its parameter holding the command lines.
pub const SHELL_PARAMETER: &str = "commands";

/// How often a followed command is looked at: soon at first, then less often.
const FIRST_POLL: Duration = Duration::from_millis(250);
const LONGEST_POLL: Duration = Duration::from_secs(2);
/// Off a terminal, a progress line at most this often (and whenever the command ends).
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Characters of the progress bar.
const BAR_WIDTH: usize = 30;

/// Flags of `bosun run`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("nodes").required(true).args(["targets", "instance_ids"])))]
pub struct RunArgs {
    /// The nodes to run on, as KEY=VALUE[,VALUE…]: tag:KEY=VALUES, tag-key=KEYS,
    /// resource-groups:Name=GROUP, InstanceIds=IDS or InstanceIds=* (every node). Also
    /// Key=tag:Env,Values=prod as the AWS CLI writes it. Repeatable (at most 5): a node must
    /// match every target, and one of the values of each.
    #[arg(long = "targets", visible_alias = "target", value_name = "KEY=VALUES", value_parser = parse_target)]
    pub targets: Vec<inventory::Target>,
    /// The nodes to run on, by id (at most 50); comma-separated or repeated.
    #[arg(
        long = "instance-ids",
        visible_alias = "nodes",
        value_name = "NODE_IDS",
        value_delimiter = ','
    )]
    pub instance_ids: Vec<String>,
    /// The Command document to run [default with `-- COMMAND`: AWS-RunShellScript].
    #[arg(long = "doc", value_name = "NAME", required_unless_present = "command")]
    pub document: Option<String>,
    /// The document version: a number, $DEFAULT (the default) or $LATEST.
    #[arg(long = "doc-version", value_name = "VERSION")]
    pub document_version: Option<String>,
    /// A document parameter as NAME=VALUE; repeat a name to give a list (StringList).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// How many nodes run at once: a number or a percentage of the nodes [server default: 50].
    #[arg(long, value_name = "N|N%", value_parser = parse_count_or_percent)]
    pub max_concurrency: Option<String>,
    /// How many failed nodes stop the run: a number or a percentage [server default: 0, the
    /// first error stops it].
    #[arg(long, value_name = "N|N%", value_parser = parse_count_or_percent)]
    pub max_errors: Option<String>,
    /// Delivery timeout in seconds: a node that has not started by then never runs it
    /// (30-2592000) [server default: 3600].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(i32).range(30..=2_592_000))]
    pub timeout: Option<i32>,
    /// A comment shown with the command (at most 100 characters).
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Key prefix of the full output in the object store [server default: commands].
    #[arg(long, value_name = "PREFIX")]
    pub output_prefix: Option<String>,
    /// Send status changes to this webhook (its id `wh-…` or its URL as registered).
    #[arg(long, value_name = "WEBHOOK")]
    pub notify: Option<String>,
    /// Which status changes to send: All, InProgress, Success, TimedOut, Cancelled, Failed;
    /// comma-separated or repeated [default: All].
    #[arg(
        long,
        value_name = "EVENTS",
        value_delimiter = ',',
        requires = "notify"
    )]
    pub notify_events: Vec<String>,
    /// Send changes of the command's status, or of each node's.
    #[arg(long, value_enum, value_name = "TYPE", requires = "notify")]
    pub notify_type: Option<NotifyType>,
    /// Print the command and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// A shell command line to run with AWS-RunShellScript; the words are joined with spaces.
    #[arg(last = true, value_name = "COMMAND", conflicts_with = "document")]
    pub command: Vec<String>,
}

/// The `--notify-type` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyType {
    /// Changes of the command's status.
    Command,
    /// Changes of each node's status.
    Invocation,
}

/// clap value parser for `--targets`: `KEY=V1,V2` or the AWS CLI's `Key=K,Values=V1,V2`.
pub fn parse_target(value: &str) -> Result<inventory::Target, String> {
    const FORMS: &str =
        "tag:KEY=VALUES, tag-key=KEYS, resource-groups:Name=GROUP or InstanceIds=IDS";
    let (key, values) = match value.strip_prefix("Key=") {
        Some(rest) => {
            let Some((key, values)) = rest.split_once(",Values=") else {
                return Err("expected Key=KEY,Values=V1,V2".to_owned());
            };
            let values: Vec<String> = values.split(',').map(str::to_owned).collect();
            if key.is_empty() || values.iter().any(String::is_empty) {
                return Err("expected Key=KEY,Values=V1,V2 with no empty key or value".to_owned());
            }
            (key.to_owned(), values)
        }
        None => super::nodes::split_key_values(value, "tag:Env=prod")?,
    };
    let known = key == "tag-key"
        || key == "resource-groups:Name"
        || key == "InstanceIds"
        || key.strip_prefix("tag:").is_some_and(|tag| !tag.is_empty());
    if !known {
        return Err(format!("unknown target key {key:?}; use {FORMS}"));
    }
    Ok(inventory::Target { key, values })
}

/// clap value parser for `--param NAME=VALUE`; the value may be empty or hold `=`.
pub fn parse_param(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err("expected NAME=VALUE, e.g. commands=uptime".to_owned()),
    }
}

/// clap value parser for `--max-concurrency` / `--max-errors`: `10` or `10%`.
pub fn parse_count_or_percent(value: &str) -> Result<String, String> {
    let digits = value.strip_suffix('%').unwrap_or(value);
    if digits.is_empty() || digits.len() > 9 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("expected a number or a percentage, e.g. 10 or 25%".to_owned());
    }
    Ok(value.to_owned())
}

/// The SendCommand request the flags describe.
pub fn send_request(args: &RunArgs) -> anyhow::Result<proto::SendCommandRequest> {
    let mut parameters: HashMap<String, proto::ParameterValues> = HashMap::new();
    for (name, value) in &args.params {
        parameters
            .entry(name.clone())
            .or_default()
            .values
            .push(value.clone());
    }
    let document_name = if args.command.is_empty() {
        match &args.document {
            Some(name) => name.clone(),
            None => bail!("give a document with --doc NAME, or a shell command after --"),
        }
    } else {
        if parameters.contains_key(SHELL_PARAMETER) {
            bail!(
                "--param {SHELL_PARAMETER}=… and a command after -- both give the command; use one"
            );
        }
        let line = args.command.join(" ");
        if line.trim().is_empty() {
            bail!("the command after -- is empty");
        }
        parameters.insert(
            SHELL_PARAMETER.to_owned(),
            proto::ParameterValues { values: vec![line] },
        );
        SHELL_DOCUMENT.to_owned()
    };
    let notification_config = args.notify.as_ref().map(|arn| proto::NotificationConfig {
        notification_arn: arn.clone(),
        notification_events: args.notify_events.clone(),
        notification_type: match args.notify_type {
            Some(NotifyType::Invocation) => "Invocation",
            Some(NotifyType::Command) | None => "Command",
        }
        .to_owned(),
    });
    Ok(proto::SendCommandRequest {
        document_name,
        document_version: args.document_version.clone().unwrap_or_default(),
        instance_ids: args.instance_ids.clone(),
        targets: args.targets.clone(),
        parameters,
        timeout_seconds: args.timeout.unwrap_or(0),
        comment: args.comment.clone().unwrap_or_default(),
        output_s3_key_prefix: args.output_prefix.clone().unwrap_or_default(),
        max_concurrency: args.max_concurrency.clone().unwrap_or_default(),
        max_errors: args.max_errors.clone().unwrap_or_default(),
        notification_config,
        ..Default::default()
    })
}

pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    let request = send_request(&args)?;
    let mut client = ctx.connect().await?.commands();
    let command = required(
        client.send_command(request).await?.into_inner().command,
        "command",
    )?;
    if args.no_wait {
        return ctx.emit(&CommandView::from(command));
    }
    follow(ctx, &mut client, command).await
}

// ---- following a command ----

/// How far a command has come, by node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub total: usize,
    /// Ended Success.
    pub done: usize,
    /// Ended otherwise: failed, timed out, cancelled, terminated, not allowed, …
    pub failed: usize,
    /// Sent, running or being cancelled.
    pub in_flight: usize,
    pub pending: usize,
}

impl Progress {
    /// Counts `invocations` by their status details; `target_count` when the server knows
    /// of more nodes than are listed yet.
    pub fn count<'a>(target_count: i32, details: impl IntoIterator<Item = &'a str>) -> Self {
        let mut progress = Progress::default();
        for status in details {
            match status {
                "Success" => progress.done += 1,
                "Pending" | "" => progress.pending += 1,
                "In Progress" | "Delayed" | "Cancelling" => progress.in_flight += 1,
                _ => progress.failed += 1,
            }
        }
        let listed = progress.done + progress.failed + progress.in_flight + progress.pending;
        let total = usize::try_from(target_count).unwrap_or(0).max(listed);
        progress.pending += total - listed;
        progress.total = total;
        progress
    }

    fn finished(&self) -> usize {
        self.done + self.failed
    }

    /// `4/10 finished: 3 done, 1 failed, 2 in flight, 4 pending`.
    pub fn text(&self) -> String {
        format!(
            "{}/{} finished: {} done, {} failed, {} in flight, {} pending",
            self.finished(),
            self.total,
            self.done,
            self.failed,
            self.in_flight,
            self.pending
        )
    }

    /// `[===xx>>......]`: done, failed, in flight, pending, in proportion to `width`.
    pub fn bar(&self, width: usize) -> String {
        let cells = |count: usize| (count * width).checked_div(self.total).unwrap_or(0);
        let done = cells(self.done);
        let failed = cells(self.done + self.failed) - done;
        let in_flight = cells(self.done + self.failed + self.in_flight) - done - failed;
        let pending = width - done - failed - in_flight;
        format!(
            "[{}{}{}{}]",
            "=".repeat(done),
            "x".repeat(failed),
            ">".repeat(in_flight),
            ".".repeat(pending)
        )
    }
}

/// One step's result on one node, as `bosun run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub name: String,
    pub status_details: String,
    /// `None` when the step did not run or was killed.
    pub response_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// One node's result.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    pub instance_id: String,
    pub instance_name: String,
    pub status_details: String,
    pub steps: Vec<StepResult>,
}

/// What `bosun run -o json|yaml` prints once the command ends.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub command: CommandView,
    pub results: Vec<NodeResult>,
}

impl Render for RunView {
    fn to_table(&self) -> String {
        let mut out = String::new();
        for result in &self.results {
            out.push_str(&node_result_text(&self.command.command_id, result));
        }
        out
    }
}

/// Terminal output as text for an operator: tabs and newlines kept, carriage returns
/// dropped, other control characters (escapes) shown as `?` so a node's output cannot drive
/// the terminal.
pub fn output_text(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '\r')
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn indented(out: &mut String, text: &str, indent: &str) {
    for line in output_text(text).trim_end_matches('\n').split('\n') {
        out.push_str(indent);
        out.push_str(line);
        out.push('\n');
    }
}

fn step_status(step: &StepResult) -> String {
    match step.response_code {
        Some(code) => format!("{}, exit code {code}", printable(&step.status_details)),
        None => printable(&step.status_details),
    }
}

/// A node's result: a line with the node, its status and exit code, then its output
/// indented (stdout, then stderr under a `stderr:` label); a block per step when there are
/// several.
pub fn node_result_text(command_id: &str, result: &NodeResult) -> String {
    let mut out = String::new();
    let node = if result.instance_name.is_empty() {
        result.instance_id.clone()
    } else {
        format!(
            "{} ({})",
            result.instance_id,
            printable(&result.instance_name)
        )
    };
    let single = result.steps.len() == 1;
    match result.steps.first() {
        Some(step) if single => out.push_str(&format!("{node}: {}\n", step_status(step))),
        _ => out.push_str(&format!("{node}: {}\n", printable(&result.status_details))),
    }
    for step in &result.steps {
        let indent = if single {
            "    "
        } else {
            out.push_str(&format!(
                "  step {}: {}\n",
                printable(&step.name),
                step_status(step)
            ));
            "      "
        };
        let label_indent = &indent[2..];
        let more = |stream: &str| {
            let step_flag = if single {
                String::new()
            } else {
                format!(" --step {}", printable(&step.name))
            };
            let stream_flag = if stream == "stderr" { " --stderr" } else { "" };
            format!(
                "{indent}[… truncated; all of it: bosun command output {command_id} --node {}{step_flag}{stream_flag}]\n",
                result.instance_id
            )
        };
        if !step.stdout.is_empty() {
            indented(&mut out, &step.stdout, indent);
            if step.stdout_truncated {
                out.push_str(&more("stdout"));
            }
        }
        if !step.stderr.is_empty() {
            out.push_str(&format!("{label_indent}stderr:\n"));
            indented(&mut out, &step.stderr, indent);
            if step.stderr_truncated {
                out.push_str(&more("stderr"));
            }
        }
    }
    out
}

/// The result of one node that has ended: each step through GetCommandInvocation (stdout
/// and stderr apart, up to 24,000 and 8,000 characters), or the step's combined output from
/// the listing if that call fails.
async fn node_result(
    client: &mut CommandsClient,
    command_id: &str,
    invocation: &proto::CommandInvocation,
) -> anyhow::Result<NodeResult> {
    let detailed = get_invocation(client, command_id, &invocation.instance_id).await?;
    let mut steps = Vec::new();
    for plugin in detailed.command_plugins {
        let plugin = PluginView::from(plugin);
        let step = match client
            .get_command_invocation(proto::GetCommandInvocationRequest {
                command_id: command_id.to_owned(),
                instance_id: invocation.instance_id.clone(),
                plugin_name: plugin.name.clone(),
            })
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                StepResult {
                    name: plugin.name,
                    status_details: response.status_details,
                    response_code: (response.response_code >= 0).then_some(response.response_code),
                    stdout: response.standard_output_content,
                    stderr: response.standard_error_content,
                    stdout_truncated: response.standard_output_truncated,
                    stderr_truncated: response.standard_error_truncated,
                }
            }
            Err(status) => {
                tracing::debug!(%status, "GetCommandInvocation failed; using the listing's output");
                StepResult {
                    name: plugin.name,
                    status_details: plugin.status_details,
                    response_code: plugin.response_code,
                    stdout: plugin.output,
                    stderr: String::new(),
                    stdout_truncated: false,
                    stderr_truncated: false,
                }
            }
        };
        steps.push(step);
    }
    Ok(NodeResult {
        instance_id: detailed.instance_id,
        instance_name: detailed.instance_name,
        status_details: detailed.status_details,
        steps,
    })
}

/// Draws progress on stdout: one line redrawn in place on a terminal, plain lines from time
/// to time elsewhere.
struct ProgressLine {
    terminal: bool,
    drawn: bool,
    last_plain: Option<(Progress, Instant)>,
}

impl ProgressLine {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            drawn: false,
            last_plain: None,
        }
    }

    /// Removes the line, so other output starts at the left edge.
    fn clear(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.terminal && self.drawn {
            out.write_all(b"\r\x1b[2K")?;
            self.drawn = false;
        }
        Ok(())
    }

    fn draw(
        &mut self,
        out: &mut impl Write,
        progress: &Progress,
        last: bool,
    ) -> std::io::Result<()> {
        if self.terminal {
            write!(
                out,
                "\r\x1b[2K{} {}",
                progress.bar(BAR_WIDTH),
                progress.text()
            )?;
            self.drawn = true;
            if last {
                out.write_all(b"\n")?;
                self.drawn = false;
            }
        } else {
            let due = match self.last_plain {
                None => true,
                Some((previous, at)) => {
                    previous != *progress && (last || at.elapsed() >= PLAIN_PROGRESS_EVERY)
                }
            };
            if due {
                writeln!(out, "{}", progress.text())?;
                self.last_plain = Some((*progress, Instant::now()));
            }
        }
        out.flush()
    }
}

/// What following a command has printed or gathered so far.
struct Follower {
    id: String,
    table: bool,
    progress_line: ProgressLine,
    /// Nodes whose result was printed (or gathered).
    reported: BTreeSet<String>,
    results: Vec<NodeResult>,
}

impl Follower {
    /// Looks at the command once: prints the results of nodes that ended since, and the
    /// progress. Returns the command when it has ended.
    async fn poll(
        &mut self,
        client: &mut CommandsClient,
    ) -> anyhow::Result<Option<proto::Command>> {
        let latest = get_command(client, &self.id).await?;
        let invocations = list_invocations(client, &self.id, false).await?;
        let ended = command_is_final(&latest.status);
        let progress = Progress::count(
            latest.target_count,
            invocations.iter().map(|i| i.status_details.as_str()),
        );
        for invocation in &invocations {
            if !invocation_is_final(&invocation.status_details)
                || self.reported.contains(&invocation.instance_id)
            {
                continue;
            }
            let result = node_result(client, &self.id, invocation).await?;
            self.reported.insert(invocation.instance_id.clone());
            if self.table {
                let mut out = std::io::stdout().lock();
                self.progress_line.clear(&mut out)?;
                out.write_all(node_result_text(&self.id, &result).as_bytes())?;
                out.flush()?;
            } else {
                self.results.push(result);
            }
        }
        if self.table {
            self.progress_line
                .draw(&mut std::io::stdout().lock(), &progress, ended)?;
        }
        Ok(ended.then_some(latest))
    }

    /// A message on stderr, below the progress line.
    fn warn(&mut self, message: &str) -> std::io::Result<()> {
        self.progress_line.clear(&mut std::io::stdout().lock())?;
        eprintln!("{message}");
        Ok(())
    }
}

/// Whether a failed call is worth trying again: the server or the way to it is down for a
/// moment (a restart, say), not refusing.
fn is_transient(error: &anyhow::Error) -> bool {
    crate::errors::find_status(error).is_some_and(|status| {
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        )
    })
}

/// Follows `command` until it ends, printing progress and each node's result (table
/// output), or the whole outcome at the end (JSON, YAML). The first Ctrl-C cancels the
/// command and keeps following; the second stops following. A server out of reach for a
/// while is waited for.
async fn follow(
    ctx: &Context,
    client: &mut CommandsClient,
    command: proto::Command,
) -> anyhow::Result<()> {
    let id = command.command_id.clone();
    let table = ctx.output == OutputFormat::Table;
    if table {
        println!(
            "command {id}: {} on {} nodes",
            printable(&command.document_name),
            command.target_count
        );
    }
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut follower = Follower {
        id: id.clone(),
        table,
        progress_line: ProgressLine::new(table && std::io::stdout().is_terminal()),
        reported: BTreeSet::new(),
        results: Vec::new(),
    };
    let mut cancelled = false;
    let mut unreachable = false;
    let mut poll = FIRST_POLL;
    let latest = loop {
        let polled = follower.poll(client).await;
        if unreachable && polled.is_ok() {
            follower.warn("the server answers again")?;
            unreachable = false;
        }
        match polled {
            Ok(Some(latest)) => break latest,
            Ok(None) => {}
            Err(error) if is_transient(&error) => {
                if !unreachable {
                    follower.warn(&format!(
                        "warning: {}; still following command {id}",
                        crate::errors::one_line(&error)
                    ))?;
                    unreachable = true;
                }
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = interrupts.recv() => {
                if cancelled {
                    follower.warn("")?;
                    bail!("stopped following command {id} while it is cancelled; see it with bosun command show {id}");
                }
                cancelled = true;
                follower.warn(&format!("cancelling command {id}; Ctrl-C again stops following it"))?;
                match client
                    .cancel_command(proto::CancelCommandRequest {
                        command_id: id.clone(),
                        instance_ids: Vec::new(),
                    })
                    .await
                {
                    Ok(_) => {}
                    // It ended meanwhile.
                    Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
                    Err(status) => {
                        follower.warn(&format!(
                            "warning: cancelling failed: {}; Ctrl-C again tries again",
                            crate::errors::status_line(&status)
                        ))?;
                        cancelled = false;
                    }
                }
            }
        }
        poll = (poll * 3 / 2).min(LONGEST_POLL);
    };
    let view = RunView {
        command: CommandView::from(latest),
        results: follower.results,
    };
    if !table {
        ctx.emit(&view)?;
    }
    let line = summary(&view.command);
    if view.command.status == "Success" {
        if table {
            println!("{line}");
        }
        Ok(())
    } else {
        bail!("{line}")
    }
}

/// `command 0190…: Success (3 nodes, 0 errors)`.
pub fn summary(command: &CommandView) -> String {
    let mut line = format!(
        "command {}: {}",
        command.command_id,
        printable(&command.status)
    );
    if !command.status_details.is_empty() && command.status_details != command.status {
        line.push_str(&format!(" ({})", printable(&command.status_details)));
    }
    line.push_str(&format!(
        ", {} nodes, {} completed, {} errors",
        command.target_count, command.completed_count, command.error_count
    ));
    if command.delivery_timed_out_count > 0 {
        line.push_str(&format!(
            ", {} delivery timed out",
            command.delivery_timed_out_count
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|cli| cli.run)
    }

    fn values(request: &proto::SendCommandRequest, name: &str) -> Vec<String> {
        request
            .parameters
            .get(name)
            .map(|values| values.values.clone())
            .unwrap_or_default()
    }

    #[test]
    fn words_after_the_dashes_are_one_shell_command() -> anyhow::Result<()> {
        let args = parse(&["--targets", "tag:Env=prod", "--", "uname", "-a"])?;
        let request = send_request(&args)?;
        assert_eq!(request.document_name, "AWS-RunShellScript");
        assert_eq!(values(&request, "commands"), ["uname -a"]);
        assert_eq!(
            request.targets,
            [inventory::Target {
                key: "tag:Env".into(),
                values: vec!["prod".into()]
            }]
        );
        assert!(request.instance_ids.is_empty());
        // Server defaults unless given.
        assert_eq!(request.max_concurrency, "");
        assert_eq!(request.timeout_seconds, 0);
        assert!(request.notification_config.is_none());
        Ok(())
    }

    #[test]
    fn a_document_with_parameters_and_budgets() -> anyhow::Result<()> {
        let args = parse(&[
            "--instance-ids",
            "mi-1,mi-2",
            "--instance-ids",
            "mi-3",
            "--doc",
            "Deploy",
            "--doc-version",
            "3",
            "--param",
            "packages=nginx",
            "--param",
            "packages=curl",
            "--param",
            "query=a=b",
            "--param",
            "empty=",
            "--max-concurrency",
            "10%",
            "--max-errors",
            "1",
            "--timeout",
            "600",
            "--comment",
            "deploy",
            "--output-prefix",
            "runs",
            "--notify",
            "wh-1",
            "--notify-events",
            "Success,Failed",
            "--notify-type",
            "invocation",
        ])?;
        let request = send_request(&args)?;
        assert_eq!(request.document_name, "Deploy");
        assert_eq!(request.document_version, "3");
        assert_eq!(request.instance_ids, ["mi-1", "mi-2", "mi-3"]);
        assert_eq!(values(&request, "packages"), ["nginx", "curl"]);
        assert_eq!(values(&request, "query"), ["a=b"]);
        assert_eq!(values(&request, "empty"), [""]);
        assert_eq!(request.max_concurrency, "10%");
        assert_eq!(request.max_errors, "1");
        assert_eq!(request.timeout_seconds, 600);
        assert_eq!(request.comment, "deploy");
        assert_eq!(request.output_s3_key_prefix, "runs");
        let notification = request.notification_config.unwrap_or_default();
        assert_eq!(notification.notification_arn, "wh-1");
        assert_eq!(notification.notification_events, ["Success", "Failed"]);
        assert_eq!(notification.notification_type, "Invocation");
        assert!(!args.no_wait);
        Ok(())
    }

    #[test]
    fn run_refuses_what_cannot_be_sent() -> anyhow::Result<()> {
        for bad in [
            // No nodes.
            &["--", "uptime"][..],
            // Both kinds of nodes.
            &[
                "--targets",
                "InstanceIds=*",
                "--instance-ids",
                "mi-1",
                "--",
                "uptime",
            ],
            // Nothing to run.
            &["--targets", "InstanceIds=*"],
            // A document and a command.
            &["--targets", "InstanceIds=*", "--doc", "X", "--", "uptime"],
            &["--targets", "Env=prod", "--", "uptime"],
            &["--targets", "tag:=prod", "--", "uptime"],
            &["--targets", "tag:Env", "--", "uptime"],
            &[
                "--targets",
                "InstanceIds=*",
                "--param",
                "novalue",
                "--doc",
                "X",
            ],
            &[
                "--targets",
                "InstanceIds=*",
                "--max-concurrency",
                "ten",
                "--doc",
                "X",
            ],
            &[
                "--targets",
                "InstanceIds=*",
                "--max-errors",
                "%",
                "--doc",
                "X",
            ],
            &[
                "--targets",
                "InstanceIds=*",
                "--timeout",
                "29",
                "--doc",
                "X",
            ],
            &[
                "--targets",
                "InstanceIds=*",
                "--notify-type",
                "command",
                "--doc",
                "X",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // The command line twice.
        let args = parse(&[
            "--targets",
            "InstanceIds=*",
            "--param",
            "commands=ls",
            "--",
            "uptime",
        ])?;
        assert!(send_request(&args).is_err());
        // Other parameters go with the shorthand.
        let args = parse(&[
            "--targets",
            "InstanceIds=*",
            "--param",
            "workingDirectory=/tmp",
            "--",
            "pwd",
        ])?;
        let request = send_request(&args)?;
        assert_eq!(values(&request, "workingDirectory"), ["/tmp"]);
        assert_eq!(values(&request, "commands"), ["pwd"]);
        Ok(())
    }

    #[test]
    fn targets_parse_in_both_forms() {
        let target = |value: &str| parse_target(value).map(|t| (t.key, t.values));
        let owned = |key: &str, values: &[&str]| {
            Ok((
                key.to_owned(),
                values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>(),
            ))
        };
        assert_eq!(
            target("tag:Env=prod,stage"),
            owned("tag:Env", &["prod", "stage"])
        );
        assert_eq!(target("tag-key=team"), owned("tag-key", &["team"]));
        assert_eq!(
            target("resource-groups:Name=web"),
            owned("resource-groups:Name", &["web"])
        );
        assert_eq!(target("InstanceIds=*"), owned("InstanceIds", &["*"]));
        assert_eq!(
            target("InstanceIds=mi-1,mi-2"),
            owned("InstanceIds", &["mi-1", "mi-2"])
        );
        assert_eq!(
            target("Key=tag:Env,Values=prod,stage"),
            owned("tag:Env", &["prod", "stage"])
        );
        for bad in [
            "Env=prod",
            "tag:Env",
            "tag:=x",
            "tag:Env=",
            "tag:Env=a,,b",
            "Key=tag:Env",
            "Key=,Values=x",
            "resource-groups:Type=x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_and_percentages() {
        for good in ["1", "10", "0", "10%", "100%"] {
            assert_eq!(parse_count_or_percent(good).as_deref(), Ok(good));
        }
        for bad in ["", "%", "-1", "1.5", "ten", "10 %", "1234567890"] {
            assert!(parse_count_or_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_counts_nodes_by_status() {
        let progress = Progress::count(
            10,
            [
                "Success",
                "Success",
                "Failed",
                "Execution Timed Out",
                "Access Denied",
                "In Progress",
                "Cancelling",
                "Pending",
            ],
        );
        assert_eq!(
            progress,
            Progress {
                total: 10,
                done: 2,
                failed: 3,
                in_flight: 2,
                // One listed, two not listed yet.
                pending: 3,
            }
        );
        assert_eq!(
            progress.text(),
            "5/10 finished: 2 done, 3 failed, 2 in flight, 3 pending"
        );
        assert_eq!(progress.bar(10), "[==xxx>>...]");
        assert_eq!(progress.bar(20).len(), 22);
        let empty = Progress::count(0, []);
        assert_eq!(empty.bar(4), "[....]");
        assert_eq!(
            empty.text(),
            "0/0 finished: 0 done, 0 failed, 0 in flight, 0 pending"
        );
        // Rounding never overflows the bar.
        let thirds = Progress::count(3, ["Success", "Failed", "In Progress"]);
        assert_eq!(thirds.bar(10).chars().count(), 12);
    }

    #[test]
    fn the_progress_line_redraws_in_place_only_on_a_terminal() -> std::io::Result<()> {
        let progress = Progress::count(2, ["Success", "Pending"]);
        let mut out = Vec::new();
        let mut line = ProgressLine::new(true);
        line.draw(&mut out, &progress, false)?;
        line.clear(&mut out)?;
        line.draw(&mut out, &progress, true)?;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("\r\x1b[2K[===============...............] 1/2 finished"),
            "{text:?}"
        );
        assert!(text.ends_with("pending\n"), "{text:?}");
        assert_eq!(text.matches('\r').count(), 3, "{text:?}");

        let mut out = Vec::new();
        let mut line = ProgressLine::new(false);
        line.draw(&mut out, &progress, false)?;
        // Unchanged, or changed too soon: nothing; the last one always.
        line.draw(&mut out, &progress, false)?;
        let later = Progress::count(2, ["Success", "In Progress"]);
        line.draw(&mut out, &later, false)?;
        let last = Progress::count(2, ["Success", "Success"]);
        line.draw(&mut out, &last, true)?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "1/2 finished: 1 done, 0 failed, 0 in flight, 1 pending\n\
             2/2 finished: 2 done, 0 failed, 0 in flight, 0 pending\n"
        );
        Ok(())
    }

    fn step(name: &str, code: Option<i32>, stdout: &str, stderr: &str) -> StepResult {
        StepResult {
            name: name.into(),
            status_details: if code == Some(0) { "Success" } else { "Failed" }.into(),
            response_code: code,
            stdout: stdout.into(),
            stderr: stderr.into(),
            stdout_truncated: false,
            stderr_truncated: false,
        }
    }

    #[test]
    fn a_node_result_shows_status_exit_code_and_output_indented() {
        let one = NodeResult {
            instance_id: "mi-1".into(),
            instance_name: "web-1".into(),
            status_details: "Success".into(),
            steps: vec![step("runShellScript", Some(0), "hello\r\nworld\n", "")],
        };
        assert_eq!(
            node_result_text("c1", &one),
            "mi-1 (web-1): Success, exit code 0\n    hello\n    world\n"
        );
        let mut failing = step("runShellScript", Some(2), "", "no such file\n");
        failing.stderr_truncated = true;
        let failed = NodeResult {
            instance_id: "mi-2".into(),
            instance_name: String::new(),
            status_details: "Failed".into(),
            steps: vec![failing],
        };
        assert_eq!(
            node_result_text("c1", &failed),
            "mi-2: Failed, exit code 2\n  stderr:\n    no such file\n    \
             [… truncated; all of it: bosun command output c1 --node mi-2 --stderr]\n"
        );
        let mut first = step("one", Some(0), "\x1b[31mred\x1b[0m", "");
        first.stdout_truncated = true;
        let two = NodeResult {
            instance_id: "mi-3".into(),
            instance_name: "db".into(),
            status_details: "Failed".into(),
            steps: vec![first, step("two", None, "", "")],
        };
        assert_eq!(
            node_result_text("c1", &two),
            "mi-3 (db): Failed\n  step one: Success, exit code 0\n      ?[31mred?[0m\n      \
             [… truncated; all of it: bosun command output c1 --node mi-3 --step one]\n  \
             step two: Failed\n"
        );
        let never = NodeResult {
            instance_id: "mi-4".into(),
            instance_name: String::new(),
            status_details: "Access Denied".into(),
            steps: vec![],
        };
        assert_eq!(node_result_text("c1", &never), "mi-4: Access Denied\n");
    }

    #[test]
    fn the_summary_names_the_outcome() {
        let mut command = CommandView::from(proto::Command {
            command_id: "c1".into(),
            status: "Success".into(),
            status_details: "Success".into(),
            target_count: 3,
            completed_count: 3,
            ..Default::default()
        });
        assert_eq!(
            summary(&command),
            "command c1: Success, 3 nodes, 3 completed, 0 errors"
        );
        command.status = "TimedOut".into();
        command.status_details = "Delivery Timed Out".into();
        command.delivery_timed_out_count = 1;
        assert_eq!(
            summary(&command),
            "command c1: TimedOut (Delivery Timed Out), 3 nodes, 3 completed, 0 errors, 1 delivery timed out"
        );
    }
}
