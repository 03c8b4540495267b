//! What a StartSession runs: the Session document rendered with the request's parameters,
//! its `inputs` read as session preferences and its `properties` as the session's shape.
//!
//! Rules where SSM leaves room, written down once:
//! - `idleSessionTimeout`: 1-60 minutes, empty or missing 20; `maxSessionDuration`: 1-1440
//!   minutes, empty or missing = no limit. Numbers or numeric strings.
//! - Transcripts: kept for Standard_Stream and InteractiveCommands sessions unless the
//!   document's inputs say `"transcriptEnabled": false`; never for Port sessions (a tunnel's
//!   bytes are not a terminal). Input is recorded too when the deployment's
//!   `[sessions] record_input` is on or the inputs say `"recordInput": true`.
//! - InteractiveCommands: `properties.macos.commands` on macOS nodes when present, else
//!   `properties.linux.commands`.
//! - Port: `portNumber` 1-65535 (required), `localPortNumber` 0-65535 (0 = any), `host`
//!   default `localhost`; a literal link-local, metadata or unspecified address is refused
//!   here already (the agent checks again after resolving names).
//! - A problem in a value that came from a parameter (`{{ name }}` in the document) is
//!   InvalidParameters; one the document itself holds is InvalidDocument.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bosun_auth::AuthContext;
use bosun_commands::Ports;
use bosun_core::ApiError;
use bosun_core::error::FieldViolation;
use bosun_document::{Document, SessionType, ValidationError, values_from_wire};
use bosun_session::wire::SessionKind;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::validate::{INVALID_DOCUMENT, INVALID_PARAMETERS, invalid};

const DEFAULT_IDLE_MINUTES: u32 = 20;
const MAX_IDLE_MINUTES: u32 = 60;
const MAX_DURATION_MINUTES: u32 = 1440;
const DEFAULT_HOST: &str = "localhost";
const MAX_HOST_CHARS: usize = 253;
const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// A Session document, ready to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionPlan {
    /// `Standard_Stream`, `InteractiveCommands` or `Port`.
    pub session_type: &'static str,
    pub kind: SessionKind,
    pub idle_minutes: u32,
    /// 0 = no limit.
    pub max_minutes: u32,
    pub run_as_enabled: bool,
    pub run_as_default_user: String,
    pub transcript: bool,
    pub record_input: bool,
    /// Port sessions (else empty / 0).
    pub host: String,
    pub port_number: u16,
    pub local_port_number: u16,
}

fn parameter_errors(errors: Vec<ValidationError>) -> ApiError {
    ApiError::InvalidArgument {
        violations: errors
            .into_iter()
            .map(|error| FieldViolation {
                field: if error.path.is_empty() {
                    "parameters".to_owned()
                } else {
                    error.path
                },
                rule: error.rule,
            })
            .collect(),
        reason: Some(INVALID_PARAMETERS),
    }
}

/// What a plan is made from.
pub(crate) struct PlanInput<'a> {
    /// The document's canonical name.
    pub name: &'a str,
    pub document: &'a Document,
    /// The request's parameters, as on the wire.
    pub parameters: &'a BTreeMap<String, Vec<String>>,
    /// The node's platform (`Linux`, `MacOS`).
    pub platform_type: &'a str,
    pub now: DateTime<Utc>,
    /// `[sessions] record_input`.
    pub record_input_default: bool,
}

/// Renders the Session document with the request's parameters (Parameter Store references
/// read with the caller's rights) and reads it into a plan for the node's platform.
pub(crate) async fn plan(
    ports: &Ports,
    caller: &AuthContext,
    input: &PlanInput<'_>,
) -> Result<SessionPlan, ApiError> {
    let PlanInput {
        name,
        document,
        parameters: wire,
        platform_type,
        now,
        record_input_default,
    } = *input;
    let Some(spec) = document.session() else {
        return Err(invalid(
            "document_name",
            format!(
                "{name} is a {} document: sessions need a Session document",
                document.document_type().as_str()
            ),
            INVALID_DOCUMENT,
        ));
    };
    let resolved = document
        .resolve_parameters(&values_from_wire(wire))
        .map_err(parameter_errors)?;
    let rendered = bosun_commands::render::render_with_references(
        document,
        &resolved,
        caller,
        ports.parameters.as_ref(),
        now,
    )
    .await
    .map_err(parameter_errors)?;
    let session = rendered.session.ok_or_else(|| {
        ApiError::internal(format!("session document {name} rendered without a body"))
    })?;
    let reader = Reader {
        name,
        raw_inputs: &spec.inputs,
        raw_properties: &spec.properties,
        inputs: &session.inputs,
        properties: &session.properties,
    };
    reader.plan(session.session_type, platform_type, record_input_default)
}

/// Reads rendered `inputs` and `properties`, blaming the document or the parameters.
struct Reader<'a> {
    name: &'a str,
    raw_inputs: &'a Value,
    raw_properties: &'a Value,
    inputs: &'a Value,
    properties: &'a Value,
}

fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

fn holds_reference(value: Option<&Value>) -> bool {
    match value {
        Some(Value::String(text)) => text.contains("{{"),
        Some(Value::Array(items)) => items.iter().any(|item| holds_reference(Some(item))),
        Some(Value::Object(fields)) => fields.values().any(|item| holds_reference(Some(item))),
        _ => false,
    }
}

/// A number of minutes written as a number or a numeric string; `None` when empty/missing.
fn minutes(value: Option<&Value>) -> Result<Option<u32>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => text.trim().parse().map(Some).map_err(|_| ()),
        Some(Value::Number(number)) => number
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

/// A flag written as a boolean or `"true"`/`"false"`; `None` when missing or empty.
fn flag(value: Option<&Value>) -> Result<Option<bool>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(Value::String(text)) => match text.trim() {
            "" => Ok(None),
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(()),
        },
        Some(_) => Err(()),
    }
}

/// Whether a literal address is one a session must never reach: link-local (cloud metadata
/// and time services live there), EC2's IPv6 metadata range, or unspecified.
pub(crate) fn is_denied_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            v6.is_unspecified()
                || (segments[0] & 0xffc0) == 0xfe80
                || (segments[0] == 0xfd00 && segments[1] == 0x0ec2)
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_link_local() || v4.is_unspecified())
        }
    }
}

fn valid_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > MAX_HOST_CHARS {
        return Err("host must be 1-253 characters".to_owned());
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = literal.parse::<IpAddr>() {
        if is_denied_address(address) {
            return Err(format!(
                "host {host} is a link-local, metadata or unspecified address"
            ));
        }
        return Ok(());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err(format!("host {host:?} is not a host name or IP address"));
    }
    Ok(())
}

fn port(text: &str, allow_zero: bool) -> Option<u16> {
    let number: u16 = text.trim().parse().ok()?;
    (allow_zero || number > 0).then_some(number)
}

impl Reader<'_> {
    /// An error about the value at `path` of `inputs` or `properties` (`section`).
    fn bad(&self, section: &str, path: &[&str], rule: &str) -> ApiError {
        let raw = if section == "inputs" {
            self.raw_inputs
        } else {
            self.raw_properties
        };
        let where_ = format!("{section}.{}", path.join("."));
        if holds_reference(at(raw, path)) {
            invalid(
                "parameters",
                format!("{where_} (from parameters) {rule}"),
                INVALID_PARAMETERS,
            )
        } else {
            invalid(
                "document_name",
                format!("{}: {where_} {rule}", self.name),
                INVALID_DOCUMENT,
            )
        }
    }

    fn input_flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        flag(self.inputs.get(key))
            .map(|value| value.unwrap_or(default))
            .map_err(|()| self.bad("inputs", &[key], "must be true or false"))
    }

    fn input_text(&self, path: &[&str]) -> Result<String, ApiError> {
        match at(self.inputs, path) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(self.bad("inputs", path, "must be a string")),
        }
    }

    fn property_text(&self, path: &[&str]) -> Result<Option<String>, ApiError> {
        match at(self.properties, path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(self.bad("properties", path, "must be a string")),
        }
    }

    fn plan(
        &self,
        session_type: SessionType,
        platform_type: &str,
        record_input_default: bool,
    ) -> Result<SessionPlan, ApiError> {
        let idle_minutes = match minutes(self.inputs.get("idleSessionTimeout")) {
            Ok(None) => DEFAULT_IDLE_MINUTES,
            Ok(Some(value)) if (1..=MAX_IDLE_MINUTES).contains(&value) => value,
            _ => {
                return Err(self.bad(
                    "inputs",
                    &["idleSessionTimeout"],
                    "must be 1-60 (minutes; empty means 20)",
                ));
            }
        };
        let max_minutes = match minutes(self.inputs.get("maxSessionDuration")) {
            Ok(None) => 0,
            Ok(Some(value)) if (1..=MAX_DURATION_MINUTES).contains(&value) => value,
            _ => {
                return Err(self.bad(
                    "inputs",
                    &["maxSessionDuration"],
                    "must be 1-1440 (minutes; empty means no limit)",
                ));
            }
        };
        let run_as_enabled = self.input_flag("runAsEnabled", false)?;
        let run_as_default_user = self.input_text(&["runAsDefaultUser"])?;
        let transcript_wanted = self.input_flag("transcriptEnabled", true)?;
        let record_input = self.input_flag("recordInput", record_input_default)?;

        let mut plan = SessionPlan {
            session_type: "",
            kind: SessionKind::Shell {
                shell_profile: String::new(),
            },
            idle_minutes,
            max_minutes,
            run_as_enabled,
            run_as_default_user,
            transcript: transcript_wanted,
            record_input: transcript_wanted && record_input,
            host: String::new(),
            port_number: 0,
            local_port_number: 0,
        };
        match session_type {
            SessionType::StandardStream => {
                let shell_profile = self.input_text(&["shellProfile", "linux"])?;
                if shell_profile.len() > MAX_PROFILE_BYTES {
                    return Err(self.bad(
                        "inputs",
                        &["shellProfile", "linux"],
                        "must be at most 64 KiB",
                    ));
                }
                plan.session_type = "Standard_Stream";
                plan.kind = SessionKind::Shell { shell_profile };
            }
            SessionType::InteractiveCommands => {
                let platform = if platform_type == "MacOS"
                    && at(self.properties, &["macos", "commands"]).is_some()
                {
                    "macos"
                } else {
                    "linux"
                };
                let command = self
                    .property_text(&[platform, "commands"])?
                    .filter(|command| !command.trim().is_empty())
                    .ok_or_else(|| {
                        self.bad(
                            "properties",
                            &[platform, "commands"],
                            "is required (the command to run)",
                        )
                    })?;
                plan.session_type = "InteractiveCommands";
                plan.kind = SessionKind::Command { command };
            }
            SessionType::Port => {
                let port_number = self
                    .property_text(&["portNumber"])?
                    .and_then(|text| port(&text, false))
                    .ok_or_else(|| {
                        self.bad("properties", &["portNumber"], "must be a port 1-65535")
                    })?;
                let local_port_number = match self.property_text(&["localPortNumber"])? {
                    None => 0,
                    Some(text) if text.trim().is_empty() => 0,
                    Some(text) => port(&text, true).ok_or_else(|| {
                        self.bad("properties", &["localPortNumber"], "must be a port 0-65535")
                    })?,
                };
                let host = match self.property_text(&["host"])? {
                    Some(host) if !host.trim().is_empty() => host.trim().to_owned(),
                    _ => DEFAULT_HOST.to_owned(),
                };
                valid_host(&host).map_err(|rule| self.bad("properties", &["host"], &rule))?;
                plan.session_type = "Port";
                plan.kind = SessionKind::Port {
                    host: host.clone(),
                    port: port_number,
                };
                plan.host = host;
                plan.port_number = port_number;
                plan.local_port_number = local_port_number;
                plan.transcript = false;
                plan.record_input = false;
                plan.run_as_enabled = false;
                plan.run_as_default_user = String::new();
            }
            SessionType::NonInteractiveCommands => {
                return Err(invalid(
                    "document_name",
                    format!(
                        "{}: NonInteractiveCommands sessions are not supported (use InteractiveCommands, or Run Command)",
                        self.name
                    ),
                    INVALID_DOCUMENT,
                ));
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_addresses() {
        for denied in [
            "169.254.169.254",
            "0.0.0.0",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            let address: IpAddr = denied.parse().expect("address");
            assert!(is_denied_address(address), "{denied}");
        }
        for allowed in ["127.0.0.1", "10.0.0.5", "::1", "fd00:1::1"] {
            let address: IpAddr = allowed.parse().expect("address");
            assert!(!is_denied_address(address), "{allowed}");
        }
    }

    #[test]
    fn hosts() {
        assert!(valid_host("db.internal").is_ok());
        assert!(valid_host("localhost").is_ok());
        assert!(valid_host("[::1]").is_ok());
        assert!(valid_host("169.254.169.254").is_err());
        assert!(valid_host("a b").is_err());
        assert!(valid_host("-x").is_err());
        assert!(valid_host("").is_err());
    }

    #[test]
    fn minutes_and_flags() {
        assert_eq!(minutes(Some(&Value::from("20"))), Ok(Some(20)));
        assert_eq!(minutes(Some(&Value::from(5))), Ok(Some(5)));
        assert_eq!(minutes(Some(&Value::from(""))), Ok(None));
        assert_eq!(minutes(Some(&Value::from("x"))), Err(()));
        assert_eq!(flag(Some(&Value::from("true"))), Ok(Some(true)));
        assert_eq!(flag(Some(&Value::from(false))), Ok(Some(false)));
        assert_eq!(flag(Some(&Value::from("yes"))), Err(()));
    }
}
