//! SendCommand: validation, the document rendered once into a [`Plan`] (with `aws:runDocument`
//! steps expanded server-side), targets resolved, per-node authorization, and the command
//! stored with one invocation per node in one transaction with its audit event.
//!
//! Choices where SSM leaves room, documented here once:
//! - `max_concurrency` as a percentage rounds up (at least 1); `max_errors` as a percentage
//!   rounds down (SSM: 10% of 50 targets stops at the 6th error).
//! - A `{{ssm:/name}}` reference the caller may not read (or that does not exist, or is a
//!   SecureString) is an InvalidParameters error naming the parameter or step it sits in, as
//!   any other parameter problem: the command is refused before anything is stored.
//! - Step platforms come from 2.2 preconditions (`StringEquals [platformType, X]`); steps of
//!   schema 1.2/2.0 documents and steps without precondition run on every platform (the
//!   agent answers InvalidPlatform when it cannot run the plugin, e.g. no `pwsh`).
//! - A constant precondition that does not hold drops the step.

use std::collections::{BTreeMap, BTreeSet};

use bosun_auth::AuthContext;
use bosun_core::ApiError;
use bosun_document::run::{PLUGIN_RUN_POWERSHELL_SCRIPT, PLUGIN_RUN_SHELL_SCRIPT, PluginInputs};
use bosun_document::{Document, DocumentType, RenderedStep, values_from_wire};
use bosun_inventory::targets::{Target, TargetKey};
use bosun_proto::commands::v1 as pb;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{Notification, Plan, PlannedStep};
use crate::ports::{FetchedDocument, NodeInfo, Ports};
use crate::validate::{
    self, DUPLICATE_INSTANCE_ID, INVALID_DOCUMENT, INVALID_DOCUMENT_VERSION, INVALID_INSTANCE_ID,
    INVALID_NOTIFICATION_CONFIG, INVALID_OUTPUT_FOLDER, INVALID_PARAMETERS, MAX_INSTANCE_IDS, Rate,
    VALIDATION, invalid,
};

/// Delivery timeout when the request gives none.
pub(crate) const DEFAULT_TIMEOUT_SECONDS: i32 = 3_600;
const MIN_TIMEOUT_SECONDS: i32 = 30;
const MAX_TIMEOUT_SECONDS: i32 = 2_592_000;
const MAX_COMMENT_CHARS: usize = 100;
const MAX_PREFIX_CHARS: usize = 500;
const MAX_HASH_CHARS: usize = 256;
/// `aws:runDocument` nests at most this deep.
const MAX_RUN_DOCUMENT_DEPTH: usize = 3;
const DEFAULT_MAX_CONCURRENCY: &str = "50";
const DEFAULT_MAX_ERRORS: &str = "0";
/// Notification events a config may name (`All` stands for the others).
pub(crate) const NOTIFICATION_EVENTS: [&str; 5] =
    ["InProgress", "Success", "TimedOut", "Cancelled", "Failed"];

/// A checked SendCommand request.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub document_name: String,
    /// `None` = `$DEFAULT`.
    pub document_version: Option<String>,
    pub document_hash: Option<String>,
    pub instance_ids: Vec<String>,
    pub targets: Vec<Target>,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub timeout_seconds: i32,
    pub comment: String,
    pub output_bucket: String,
    pub output_prefix: String,
    pub max_concurrency: String,
    pub concurrency: Rate,
    pub max_errors: String,
    pub errors: Rate,
    /// The notification config, its webhook still to be found.
    pub notification: Option<Notification>,
}

/// Checks every field of `body` (no I/O). `bucket` is the configured S3 bucket (`None` for
/// the local store); `default_prefix` the configured output prefix.
pub(crate) fn check(
    body: &pb::SendCommandRequest,
    bucket: Option<&str>,
    default_prefix: &str,
) -> Result<Checked, ApiError> {
    validate::document_name("document_name", &body.document_name)?;
    let document_version = match body.document_version.as_str() {
        "" => None,
        "$DEFAULT" | "$LATEST" => Some(body.document_version.clone()),
        number if is_version_number(number) => Some(number.to_owned()),
        _ => {
            return Err(invalid(
                "document_version",
                "must be $DEFAULT, $LATEST or a version number",
                INVALID_DOCUMENT_VERSION,
            ));
        }
    };
    match body.document_hash_type.as_str() {
        "" | "Sha256" => {}
        "Sha1" => {
            return Err(invalid(
                "document_hash_type",
                "Sha1 is not accepted: use Sha256",
                VALIDATION,
            ));
        }
        _ => return Err(invalid("document_hash_type", "must be Sha256", VALIDATION)),
    }
    let document_hash = if body.document_hash.is_empty() {
        None
    } else {
        let hash = &body.document_hash;
        if hash.len() > MAX_HASH_CHARS || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "document_hash",
                "must be a hex SHA-256 of at most 256 characters",
                VALIDATION,
            ));
        }
        Some(hash.to_ascii_lowercase())
    };

    let (instance_ids, targets) = match (body.instance_ids.is_empty(), body.targets.is_empty()) {
        (true, true) | (false, false) => {
            return Err(invalid(
                "instance_ids",
                "exactly one of instance_ids and targets is required",
                VALIDATION,
            ));
        }
        (false, true) => (instance_ids(&body.instance_ids)?, Vec::new()),
        (true, false) => (Vec::new(), Target::parse_all("targets", &body.targets)?),
    };

    let timeout_seconds = match body.timeout_seconds {
        0 => DEFAULT_TIMEOUT_SECONDS,
        value if (MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&value) => value,
        _ => {
            return Err(invalid(
                "timeout_seconds",
                "must be 30-2592000 (0 means 3600)",
                VALIDATION,
            ));
        }
    };
    if body.comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(invalid(
            "comment",
            "must be at most 100 characters",
            VALIDATION,
        ));
    }

    let max_concurrency = if body.max_concurrency.is_empty() {
        DEFAULT_MAX_CONCURRENCY.to_owned()
    } else {
        body.max_concurrency.clone()
    };
    let concurrency = Rate::parse(&max_concurrency, false).ok_or_else(|| {
        invalid(
            "max_concurrency",
            "must be a number from 1 or a percentage from 1% to 100% (at most 7 characters)",
            VALIDATION,
        )
    })?;
    let max_errors = if body.max_errors.is_empty() {
        DEFAULT_MAX_ERRORS.to_owned()
    } else {
        body.max_errors.clone()
    };
    let errors = Rate::parse(&max_errors, true).ok_or_else(|| {
        invalid(
            "max_errors",
            "must be a number from 0 or a percentage from 0% to 100% (at most 7 characters)",
            VALIDATION,
        )
    })?;

    let output_bucket = output_bucket(&body.output_s3_bucket_name, bucket)?;
    let output_prefix = output_prefix(&body.output_s3_key_prefix, default_prefix)?;
    let notification = notification(body.notification_config.as_ref())?;

    let parameters = body
        .parameters
        .iter()
        .map(|(name, values)| (name.clone(), values.values.clone()))
        .collect();

    Ok(Checked {
        document_name: body.document_name.clone(),
        document_version,
        document_hash,
        instance_ids,
        targets,
        parameters,
        timeout_seconds,
        comment: body.comment.clone(),
        output_bucket,
        output_prefix,
        max_concurrency,
        concurrency,
        max_errors,
        errors,
        notification,
    })
}

fn is_version_number(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 9
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0')
}

fn instance_ids(ids: &[String]) -> Result<Vec<String>, ApiError> {
    if ids.len() > MAX_INSTANCE_IDS {
        return Err(invalid(
            "instance_ids",
            "must have at most 50 node ids",
            VALIDATION,
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, id) in ids.iter().enumerate() {
        if !validate::is_node_id(id) {
            return Err(invalid(
                format!("instance_ids[{index}]"),
                "must be a node id (mi- and 17 hex digits)",
                INVALID_INSTANCE_ID,
            ));
        }
        if !seen.insert(id.as_str()) {
            return Err(invalid(
                format!("instance_ids[{index}]"),
                format!("{id} is listed more than once"),
                DUPLICATE_INSTANCE_ID,
            ));
        }
    }
    Ok(ids.to_vec())
}

fn output_bucket(requested: &str, configured: Option<&str>) -> Result<String, ApiError> {
    let field = "output_s3_bucket_name";
    if requested.is_empty() {
        return Ok(configured.unwrap_or_default().to_owned());
    }
    match configured {
        None => Err(invalid(
            field,
            "must be empty: this server keeps output in its local object store",
            INVALID_OUTPUT_FOLDER,
        )),
        Some(bucket) if bucket == requested => Ok(requested.to_owned()),
        Some(bucket) => Err(invalid(
            field,
            format!("must be empty or the configured bucket {bucket}"),
            INVALID_OUTPUT_FOLDER,
        )),
    }
}

fn output_prefix(requested: &str, default: &str) -> Result<String, ApiError> {
    let field = "output_s3_key_prefix";
    if requested.is_empty() {
        return Ok(default.to_owned());
    }
    if requested.chars().count() > MAX_PREFIX_CHARS {
        return Err(invalid(
            field,
            "must be at most 500 characters",
            INVALID_OUTPUT_FOLDER,
        ));
    }
    let trimmed = requested.trim_end_matches('/');
    // The prefix must make valid object keys once the command id, node and step follow.
    if let Err(error) = bosun_objects::validate_key(&format!("{trimmed}/x")) {
        let rule = match error {
            bosun_objects::ObjectsError::InvalidKey { rule, .. } => rule.to_owned(),
            other => other.to_string(),
        };
        return Err(invalid(
            field,
            format!("is not a valid object key prefix: {rule}"),
            INVALID_OUTPUT_FOLDER,
        ));
    }
    Ok(trimmed.to_owned())
}

fn notification(config: Option<&pb::NotificationConfig>) -> Result<Option<Notification>, ApiError> {
    let Some(config) = config else {
        return Ok(None);
    };
    if config.notification_arn.is_empty() {
        if config.notification_events.is_empty() && config.notification_type.is_empty() {
            return Ok(None);
        }
        return Err(invalid(
            "notification_config.notification_arn",
            "is required: a webhook id or URL",
            INVALID_NOTIFICATION_CONFIG,
        ));
    }
    let mut events = BTreeSet::new();
    for (index, event) in config.notification_events.iter().enumerate() {
        match event.as_str() {
            "All" => events.extend(NOTIFICATION_EVENTS),
            known if NOTIFICATION_EVENTS.contains(&known) => {
                events.insert(known);
            }
            _ => {
                return Err(invalid(
                    format!("notification_config.notification_events[{index}]"),
                    "must be All, InProgress, Success, TimedOut, Cancelled or Failed",
                    INVALID_NOTIFICATION_CONFIG,
                ));
            }
        }
    }
    if events.is_empty() {
        events.extend(NOTIFICATION_EVENTS);
    }
    let notification_type = match config.notification_type.as_str() {
        "" | "Command" => "Command",
        "Invocation" => "Invocation",
        _ => {
            return Err(invalid(
                "notification_config.notification_type",
                "must be Command or Invocation",
                INVALID_NOTIFICATION_CONFIG,
            ));
        }
    };
    Ok(Some(Notification {
        webhook_id: String::new(),
        arn: config.notification_arn.clone(),
        // In the order SSM lists them.
        events: NOTIFICATION_EVENTS
            .iter()
            .filter(|event| events.contains(*event))
            .map(|event| (*event).to_owned())
            .collect(),
        notification_type: notification_type.to_owned(),
    }))
}

/// Finds the webhook of the notification config.
pub(crate) async fn find_webhook(
    ports: &Ports,
    notification: &mut Option<Notification>,
) -> Result<(), ApiError> {
    if let Some(notification) = notification {
        notification.webhook_id =
            ports
                .webhooks
                .find(&notification.arn)
                .await?
                .ok_or_else(|| {
                    invalid(
                        "notification_config.notification_arn",
                        "names no enabled webhook (give its id wh-… or its URL as registered)",
                        INVALID_NOTIFICATION_CONFIG,
                    )
                })?;
    }
    Ok(())
}

// ---- the document, rendered into a plan ---------------------------------------------------

/// The plan and the document version it came from.
pub(crate) struct Planned {
    pub document: FetchedDocument,
    pub plan: Plan,
}

/// Fetches the document a request names, checks its type and hash, and renders it with
/// the request's parameters into a plan.
pub(crate) async fn plan(
    ports: &Ports,
    caller: &AuthContext,
    checked: &Checked,
    now: DateTime<Utc>,
) -> Result<Planned, ApiError> {
    // SendCommand reports a missing document or version as a bad argument, naming the field.
    let document = ports
        .documents
        .fetch(
            caller,
            &checked.document_name,
            checked.document_version.as_deref(),
        )
        .await
        .map_err(|error| match error {
            ApiError::NotFound {
                message,
                reason: Some(INVALID_DOCUMENT_VERSION),
            } => invalid("document_version", message, INVALID_DOCUMENT_VERSION),
            ApiError::NotFound { message, .. } => {
                invalid("document_name", message, INVALID_DOCUMENT)
            }
            other => other,
        })?;
    if document.document.document_type() != DocumentType::Command {
        return Err(invalid(
            "document_name",
            format!(
                "{} is a {} document: only Command documents run on nodes",
                document.name,
                document.document.document_type().as_str()
            ),
            INVALID_DOCUMENT,
        ));
    }
    if let Some(hash) = &checked.document_hash
        && !hash.eq_ignore_ascii_case(&document.hash)
    {
        return Err(invalid(
            "document_hash",
            format!(
                "does not match the SHA-256 of {} version {}",
                document.name, document.version
            ),
            INVALID_DOCUMENT,
        ));
    }
    let wire = checked.parameters.clone();
    let (steps, resolved) = render(ports, caller, &document.document, &wire, now, "").await?;
    let execution_timeout_seconds = execution_timeout(&document.document, &resolved);
    let stack = vec![document.name.clone()];
    let steps = expand(ports, caller, steps, now, &stack).await?;
    if steps.is_empty() {
        return Err(invalid(
            "document_name",
            format!("{} has no step that can run on any platform", document.name),
            INVALID_DOCUMENT,
        ));
    }
    Ok(Planned {
        document,
        plan: Plan {
            steps,
            execution_timeout_seconds,
        },
    })
}

/// A step of the plan before `aws:runDocument` is expanded.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    action: String,
    inputs: Value,
    platform: Option<String>,
}

/// Resolves `wire` against the document's parameters, fetches its `{{ssm:…}}` references
/// with the caller's rights and renders the steps. `at` prefixes error fields of nested
/// documents (`runDocument.`).
async fn render(
    ports: &Ports,
    caller: &AuthContext,
    document: &Document,
    wire: &BTreeMap<String, Vec<String>>,
    now: DateTime<Utc>,
    at: &str,
) -> Result<(Vec<Step>, bosun_document::ResolvedParameters), ApiError> {
    let parameter_errors = |errors: Vec<bosun_document::ValidationError>| {
        validate::violations(
            errors
                .into_iter()
                .map(|error| {
                    let path = if error.path.is_empty() {
                        "parameters".to_owned()
                    } else {
                        error.path
                    };
                    (format!("{at}{path}"), error.rule)
                })
                .collect(),
            INVALID_PARAMETERS,
        )
    };
    let resolved = document
        .resolve_parameters(&values_from_wire(wire))
        .map_err(parameter_errors)?;
    let rendered = crate::render::render_with_references(
        document,
        &resolved,
        caller,
        ports.parameters.as_ref(),
        now,
    )
    .await
    .map_err(parameter_errors)?;
    let steps = rendered
        .steps
        .into_iter()
        .filter_map(|step| {
            let platform = step_platform(&step)?;
            Some(Step {
                name: step.name,
                action: step.action,
                inputs: step.inputs,
                platform,
            })
        })
        .collect();
    Ok((steps, resolved))
}

/// `Some(None)`: any platform; `Some(Some(p))`: only `p`; `None`: never (a constant
/// precondition that does not hold).
fn step_platform(step: &RenderedStep) -> Option<Option<String>> {
    let Some([left, right]) = &step.precondition else {
        return Some(None);
    };
    match (left.as_str(), right.as_str()) {
        ("platformType", "platformType") => Some(None),
        ("platformType", other) | (other, "platformType") => Some(Some(other.to_owned())),
        (left, right) if left == right => Some(None),
        _ => None,
    }
}

/// The document's `executionTimeout` parameter as resolved, else the default.
fn execution_timeout(document: &Document, resolved: &bosun_document::ResolvedParameters) -> u64 {
    if !document.parameters().contains_key("executionTimeout") {
        return bosun_document::run::DEFAULT_EXECUTION_TIMEOUT_SECONDS;
    }
    resolved
        .get("executionTimeout")
        .and_then(|value| number_of(&value.value))
        .filter(|seconds| *seconds > 0)
        .unwrap_or(bosun_document::run::DEFAULT_EXECUTION_TIMEOUT_SECONDS)
}

fn number_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Expands `aws:runDocument` steps (depth ≤ 3, no cycles) and turns script steps into
/// planned steps.
async fn expand(
    ports: &Ports,
    caller: &AuthContext,
    steps: Vec<Step>,
    now: DateTime<Utc>,
    stack: &[String],
) -> Result<Vec<PlannedStep>, ApiError> {
    let mut out = Vec::new();
    // Work list of (prefix, step, documents above it); depth-first, in document order.
    let mut work: Vec<(Step, Vec<String>)> = steps
        .into_iter()
        .rev()
        .map(|step| (step, stack.to_vec()))
        .collect();
    while let Some((step, above)) = work.pop() {
        match step.action.as_str() {
            PLUGIN_RUN_SHELL_SCRIPT | PLUGIN_RUN_POWERSHELL_SCRIPT => {
                out.push(PlannedStep {
                    inputs: plugin_inputs(&step)?,
                    name: step.name,
                    action: step.action,
                    platform: step.platform,
                });
            }
            "aws:runDocument" => {
                let nested = run_document(ports, caller, &step, &above, now).await?;
                let mut path = above.clone();
                path.push(nested.0);
                for inner in nested.1.into_iter().rev() {
                    let platform = match (&step.platform, inner.platform) {
                        (None, inner) => inner,
                        (Some(outer), None) => Some(outer.clone()),
                        (Some(outer), Some(inner)) if *outer == inner => Some(inner),
                        // Both hold on no node.
                        (Some(_), Some(_)) => continue,
                    };
                    work.push((
                        Step {
                            name: format!("{}.{}", step.name, inner.name),
                            action: inner.action,
                            inputs: inner.inputs,
                            platform,
                        },
                        path.clone(),
                    ));
                }
            }
            other => {
                return Err(invalid(
                    "document_name",
                    format!(
                        "step {}: {other} cannot run on nodes (aws:runShellScript, aws:runPowerShellScript and aws:runDocument can)",
                        step.name
                    ),
                    INVALID_DOCUMENT,
                ));
            }
        }
    }
    Ok(out)
}

/// The nested document of an `aws:runDocument` step, rendered: its name and steps.
async fn run_document(
    ports: &Ports,
    caller: &AuthContext,
    step: &Step,
    above: &[String],
    now: DateTime<Utc>,
) -> Result<(String, Vec<Step>), ApiError> {
    let bad = |rule: String| {
        invalid(
            "document_name",
            format!("step {}: {rule}", step.name),
            INVALID_DOCUMENT,
        )
    };
    let inputs = step.inputs.as_object().cloned().unwrap_or_default();
    match inputs.get("documentType").and_then(Value::as_str) {
        Some("SSMDocument") => {}
        Some("LocalPath") => {
            return Err(bad(
                "aws:runDocument with documentType LocalPath is not supported".to_owned(),
            ));
        }
        _ => {
            return Err(bad(
                "aws:runDocument needs documentType SSMDocument".to_owned()
            ));
        }
    }
    let path = inputs
        .get("documentPath")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (name, version) = match path.rsplit_once(':') {
        Some((name, version)) if is_version_number(version) => (name, Some(version)),
        _ => (path, None),
    };
    if name.is_empty() {
        return Err(bad("aws:runDocument needs a documentPath".to_owned()));
    }
    if above.len() > MAX_RUN_DOCUMENT_DEPTH {
        return Err(bad(format!(
            "aws:runDocument nests deeper than {MAX_RUN_DOCUMENT_DEPTH} documents"
        )));
    }
    let fetched =
        ports
            .documents
            .fetch(caller, name, version)
            .await
            .map_err(|error| match error {
                ApiError::NotFound { message, .. } => bad(format!("aws:runDocument: {message}")),
                other => other,
            })?;
    if above.contains(&fetched.name) {
        return Err(bad(format!(
            "aws:runDocument cycle: {} → {}",
            above.join(" → "),
            fetched.name
        )));
    }
    if fetched.document.document_type() != DocumentType::Command {
        return Err(bad(format!(
            "aws:runDocument: {} is not a Command document",
            fetched.name
        )));
    }
    let wire = document_parameters(inputs.get("documentParameters"))
        .map_err(|rule| bad(format!("documentParameters {rule}")))?;
    let at = format!("{}.", step.name);
    let (steps, _) = Box::pin(render(ports, caller, &fetched.document, &wire, now, &at)).await?;
    Ok((fetched.name, steps))
}

/// `documentParameters` (an object, or its JSON text) in SendCommand's wire form.
fn document_parameters(value: Option<&Value>) -> Result<BTreeMap<String, Vec<String>>, String> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text)
            .map_err(|error| format!("is not a JSON object: {error}"))?,
        Some(other) => other.clone(),
    };
    let Value::Object(fields) = object else {
        return Err("must be an object".to_owned());
    };
    Ok(fields
        .into_iter()
        .map(|(name, value)| {
            let values = match value {
                Value::Array(items) => items.iter().map(text_of).collect(),
                other => vec![text_of(&other)],
            };
            (name, values)
        })
        .collect())
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The rendered inputs of a script step as the agent reads them.
fn plugin_inputs(step: &Step) -> Result<PluginInputs, ApiError> {
    let bad = |rule: &str| {
        invalid(
            "document_name",
            format!("step {}: {rule}", step.name),
            INVALID_DOCUMENT,
        )
    };
    let inputs = step
        .inputs
        .as_object()
        .ok_or_else(|| bad("inputs must be an object"))?;
    let run_command = match inputs.get("runCommand") {
        Some(Value::Array(items)) => items.iter().map(text_of).collect(),
        Some(Value::String(text)) => vec![text.clone()],
        _ => return Err(bad("runCommand must be a list of strings")),
    };
    let working_directory = match inputs.get("workingDirectory") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(bad("workingDirectory must be a string")),
    };
    let timeout_seconds = match inputs.get("timeoutSeconds") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(value) => Some(
            number_of(value)
                .filter(|seconds| *seconds > 0)
                .ok_or_else(|| bad("timeoutSeconds must be a positive number of seconds"))?,
        ),
    };
    Ok(PluginInputs {
        run_command,
        working_directory,
        timeout_seconds,
    })
}

// ---- nodes --------------------------------------------------------------------------------

/// The nodes a checked request targets, in id order. `instance_ids` that never existed are
/// InvalidInstanceId naming each.
pub(crate) async fn target_nodes(
    ports: &Ports,
    checked: &Checked,
) -> Result<Vec<NodeInfo>, ApiError> {
    if checked.instance_ids.is_empty() {
        return ports.nodes.resolve(&checked.targets).await;
    }
    let nodes = ports.nodes.get(&checked.instance_ids).await?;
    let known: BTreeSet<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
    let unknown: Vec<(String, String)> = checked
        .instance_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !known.contains(id.as_str()))
        .map(|(index, id)| {
            (
                format!("instance_ids[{index}]"),
                format!("{id} is not a registered node"),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(validate::violations(unknown, INVALID_INSTANCE_ID));
    }
    Ok(nodes)
}

/// The targets as stored and echoed: `instance_ids` requests store none.
pub(crate) fn targets_json(targets: &[Target]) -> String {
    let list: Vec<Value> = targets
        .iter()
        .map(|target| {
            let key = match &target.key {
                TargetKey::InstanceIds => "InstanceIds".to_owned(),
                TargetKey::Tag(tag) => format!("tag:{tag}"),
                TargetKey::TagKey => "tag-key".to_owned(),
                TargetKey::ResourceGroupName => "resource-groups:Name".to_owned(),
            };
            serde_json::json!({"key": key, "values": target.values})
        })
        .collect();
    Value::Array(list).to_string()
}

/// Comma-separated indexes of the plan's steps that run on `platform_type`.
pub(crate) fn steps_for(plan: &Plan, platform_type: &str) -> String {
    plan.steps
        .iter()
        .enumerate()
        .filter(|(_, step)| {
            step.platform
                .as_deref()
                .is_none_or(|platform| platform == platform_type)
        })
        .map(|(index, _)| index.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
