//! What the CLI prints, as serde structs built from the wire types. The proto messages stay
//! out of the output so JSON and YAML have stable snake_case names and RFC 3339 times, and a
//! proto change is a compile error here rather than a silent change in scripts' input.

use bosun_proto::audit::v1 as audit_proto;
use bosun_proto::auth::v1 as auth_proto;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::output::{Fields, Render, Table, list_cell, printable, rfc3339, text_cell, time_cell};

/// A wire timestamp as a UTC time; `None` when unset or out of range, since a bad time from
/// the server should not stop a listing.
pub fn timestamp(value: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let value = value?;
    let nanos = u32::try_from(value.nanos).ok()?;
    DateTime::from_timestamp(value.seconds, nanos)
}

/// A UTC time as a wire timestamp.
pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Always below 2 * 10^9 (leap seconds included), so it fits.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

// ---- login, identity, plain acknowledgements ----

/// The result of `bosun login`. The token itself is never printed.
#[derive(Debug, Serialize)]
pub struct LoginView {
    pub server: String,
    pub principal: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Render for LoginView {
    fn to_table(&self) -> String {
        let expires = self.expires_at.map_or_else(|| "never".to_owned(), rfc3339);
        let line = format!(
            "logged in to {} as {} (token expires {expires})",
            self.server, self.principal
        );
        format!("{}\n", printable(&line))
    }
}

/// A one-line outcome of a call with an empty response, e.g. `deleted user carol`.
#[derive(Debug, Serialize)]
pub struct MessageView {
    pub message: String,
}

impl MessageView {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl Render for MessageView {
    fn to_table(&self) -> String {
        format!("{}\n", printable(&self.message))
    }
}

/// The result of `bosun whoami`.
#[derive(Debug, Serialize)]
pub struct IdentityView {
    pub principal: String,
    pub kind: String,
    pub name: String,
    pub roles: Vec<String>,
    pub session_id: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<auth_proto::GetCallerIdentityResponse> for IdentityView {
    fn from(identity: auth_proto::GetCallerIdentityResponse) -> Self {
        let kind = match auth_proto::PrincipalKind::try_from(identity.kind) {
            Ok(auth_proto::PrincipalKind::User) => "user".to_owned(),
            Ok(auth_proto::PrincipalKind::Service) => "service".to_owned(),
            Ok(auth_proto::PrincipalKind::Node) => "node".to_owned(),
            Ok(auth_proto::PrincipalKind::Unspecified) => "unspecified".to_owned(),
            Err(_) => format!("unknown ({})", identity.kind),
        };
        Self {
            principal: identity.principal,
            kind,
            name: identity.name,
            roles: identity.roles,
            session_id: identity.session_id,
            expires_at: timestamp(identity.expires_at),
        }
    }
}

impl Render for IdentityView {
    fn to_table(&self) -> String {
        Fields::new()
            .field("principal", &self.principal)
            .field("kind", &self.kind)
            .field("roles", list_cell(&self.roles))
            .field("session", text_cell(&self.session_id))
            .field("expires", time_cell(self.expires_at))
            .render()
    }
}

// ---- users ----

#[derive(Debug, Serialize)]
pub struct UserView {
    pub username: String,
    pub roles: Vec<String>,
    pub created_date: Option<DateTime<Utc>>,
    pub password_last_changed: Option<DateTime<Utc>>,
}

impl From<auth_proto::User> for UserView {
    fn from(user: auth_proto::User) -> Self {
        Self {
            username: user.username,
            roles: user.roles,
            created_date: timestamp(user.created_date),
            password_last_changed: timestamp(user.password_last_changed),
        }
    }
}

impl Render for UserView {
    fn to_table(&self) -> String {
        Fields::new()
            .field("username", &self.username)
            .field("roles", list_cell(&self.roles))
            .field("created", time_cell(self.created_date))
            .field("password changed", time_cell(self.password_last_changed))
            .render()
    }
}

#[derive(Debug, Serialize)]
pub struct UserList {
    pub users: Vec<UserView>,
}

impl Render for UserList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec!["USERNAME", "ROLES", "CREATED", "PASSWORD CHANGED"]);
        for user in &self.users {
            table.row(vec![
                user.username.clone(),
                list_cell(&user.roles),
                time_cell(user.created_date),
                time_cell(user.password_last_changed),
            ]);
        }
        table.render()
    }
}

// ---- API keys ----

#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    pub key_id: String,
    pub username: String,
    pub description: String,
    pub created_date: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub last_used_date: Option<DateTime<Utc>>,
    /// `active`, `revoked` or `expired`, as of when the CLI ran.
    pub status: &'static str,
}

impl ApiKeyView {
    /// `now` decides whether the key has expired; passed in so tests are repeatable.
    pub fn from_proto(key: auth_proto::ApiKey, now: DateTime<Utc>) -> Self {
        let expires_at = timestamp(key.expires_at);
        let status = if key.revoked {
            "revoked"
        } else if expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        Self {
            key_id: key.key_id,
            username: key.username,
            description: key.description,
            created_date: timestamp(key.created_date),
            expires_at,
            revoked: key.revoked,
            last_used_date: timestamp(key.last_used_date),
            status,
        }
    }

    fn fields(&self) -> Fields {
        Fields::new()
            .field("key id", &self.key_id)
            .field("user", &self.username)
            .field("description", text_cell(&self.description))
            .field("status", self.status)
            .field("created", time_cell(self.created_date))
            .field(
                "expires",
                self.expires_at.map_or_else(|| "never".to_owned(), rfc3339),
            )
            .field("last used", time_cell(self.last_used_date))
    }
}

#[derive(Debug, Serialize)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
}

impl Render for ApiKeyList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "KEY ID",
            "USER",
            "STATUS",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "DESCRIPTION",
        ]);
        for key in &self.api_keys {
            table.row(vec![
                key.key_id.clone(),
                key.username.clone(),
                key.status.to_owned(),
                time_cell(key.created_date),
                key.expires_at.map_or_else(|| "never".to_owned(), rfc3339),
                time_cell(key.last_used_date),
                text_cell(&key.description),
            ]);
        }
        table.render()
    }
}

/// A new API key with its secret, which the server returns this once.
#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    pub api_key: ApiKeyView,
    pub secret: String,
}

impl Render for CreatedApiKey {
    fn to_table(&self) -> String {
        self.api_key.fields().field("secret", &self.secret).render()
    }
}

// ---- roles ----

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub policy_name: String,
    /// The document as JSON when it parses (so `jq` can reach into it), else the raw text.
    pub policy_document: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct RoleView {
    pub role_name: String,
    pub description: String,
    pub built_in: bool,
    pub created_date: Option<DateTime<Utc>>,
    pub policies: Vec<PolicyView>,
}

impl From<auth_proto::Role> for RoleView {
    fn from(role: auth_proto::Role) -> Self {
        let policies = role
            .policies
            .into_iter()
            .map(|policy| PolicyView {
                policy_document: serde_json::from_str(&policy.policy_document)
                    .unwrap_or(serde_json::Value::String(policy.policy_document)),
                policy_name: policy.policy_name,
            })
            .collect();
        Self {
            role_name: role.role_name,
            description: role.description,
            built_in: role.built_in,
            created_date: timestamp(role.created_date),
            policies,
        }
    }
}

impl Render for RoleView {
    fn to_table(&self) -> String {
        let names: Vec<String> = self
            .policies
            .iter()
            .map(|p| p.policy_name.clone())
            .collect();
        let mut out = Fields::new()
            .field("name", &self.role_name)
            .field("description", text_cell(&self.description))
            .field("built-in", yes_no(self.built_in))
            .field("created", time_cell(self.created_date))
            .field("policies", list_cell(&names))
            .render();
        for policy in &self.policies {
            let document = match &policy.policy_document {
                serde_json::Value::String(raw) => raw.clone(),
                value => serde_json::to_string_pretty(value).unwrap_or_default(),
            };
            out.push('\n');
            out.push_str(&format!("policy {}:\n", printable(&policy.policy_name)));
            // Keep the document's own line breaks, but no other control characters.
            for line in document.lines() {
                out.push_str(&printable(line));
                out.push('\n');
            }
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct RoleList {
    pub roles: Vec<RoleView>,
}

impl Render for RoleList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "NAME",
            "BUILT-IN",
            "POLICIES",
            "CREATED",
            "DESCRIPTION",
        ]);
        for role in &self.roles {
            table.row(vec![
                role.role_name.clone(),
                yes_no(role.built_in).to_owned(),
                role.policies.len().to_string(),
                time_cell(role.created_date),
                text_cell(&role.description),
            ]);
        }
        table.render()
    }
}

// ---- audit ----

#[derive(Debug, Serialize)]
pub struct AuditEventView {
    pub event_id: String,
    pub event_time: Option<DateTime<Utc>>,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub result: String,
    pub error_code: String,
    pub trace_id: String,
    pub source_address: String,
    /// The service's JSON object when it parses, else the raw text; null when empty.
    pub details: serde_json::Value,
}

impl From<audit_proto::AuditEvent> for AuditEventView {
    fn from(event: audit_proto::AuditEvent) -> Self {
        let result = match audit_proto::AuditResult::try_from(event.result) {
            Ok(audit_proto::AuditResult::Success) => "success".to_owned(),
            Ok(audit_proto::AuditResult::Failure) => "failure".to_owned(),
            Ok(audit_proto::AuditResult::Denied) => "denied".to_owned(),
            Ok(audit_proto::AuditResult::Unspecified) => "unspecified".to_owned(),
            Err(_) => format!("unknown ({})", event.result),
        };
        let details = if event.details.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&event.details).unwrap_or(serde_json::Value::String(event.details))
        };
        Self {
            event_id: event.event_id,
            event_time: timestamp(event.event_time),
            principal: event.principal,
            action: event.action,
            resource: event.resource,
            result,
            error_code: event.error_code,
            trace_id: event.trace_id,
            source_address: event.source_address,
            details,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AuditEventList {
    pub events: Vec<AuditEventView>,
}

impl Render for AuditEventList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "TIME",
            "PRINCIPAL",
            "ACTION",
            "RESOURCE",
            "RESULT",
            "ERROR",
            "SOURCE",
        ]);
        for event in &self.events {
            table.row(vec![
                time_cell(event.event_time),
                event.principal.clone(),
                event.action.clone(),
                text_cell(&event.resource),
                event.result.clone(),
                text_cell(&event.error_code),
                text_cell(&event.source_address),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    // 2024-01-01T00:00:00Z and a day later.
    const JAN_1: i64 = 1_704_067_200;
    const JAN_2: i64 = JAN_1 + 86_400;

    fn users() -> UserList {
        UserList {
            users: vec![
                auth_proto::User {
                    username: "admin".into(),
                    roles: vec!["admin".into()],
                    created_date: ts(JAN_1),
                    password_last_changed: ts(JAN_2),
                }
                .into(),
                auth_proto::User {
                    username: "carol".into(),
                    roles: vec!["dev".into(), "ops".into()],
                    created_date: ts(JAN_2),
                    password_last_changed: None,
                }
                .into(),
            ],
        }
    }

    fn roles() -> RoleList {
        RoleList {
            roles: vec![
                auth_proto::Role {
                    role_name: "admin".into(),
                    description: "everything".into(),
                    policies: vec![auth_proto::RolePolicy {
                        policy_name: "all".into(),
                        policy_document:
                            r#"{"Statement":[{"Effect":"Allow","Action":["*"],"Resource":["*"]}]}"#
                                .into(),
                    }],
                    created_date: ts(JAN_1),
                    built_in: true,
                }
                .into(),
                auth_proto::Role {
                    role_name: "readers".into(),
                    description: String::new(),
                    policies: vec![],
                    created_date: ts(JAN_2),
                    built_in: false,
                }
                .into(),
            ],
        }
    }

    fn api_keys() -> ApiKeyList {
        let now = DateTime::from_timestamp(JAN_2, 0).unwrap_or_default();
        let key = |id: &str, revoked: bool, expires: Option<prost_types::Timestamp>| {
            ApiKeyView::from_proto(
                auth_proto::ApiKey {
                    key_id: id.into(),
                    username: "carol".into(),
                    description: "ci".into(),
                    created_date: ts(JAN_1),
                    expires_at: expires,
                    revoked,
                    last_used_date: None,
                },
                now,
            )
        };
        ApiKeyList {
            api_keys: vec![
                key("ak-0000000000000001", false, None),
                key("ak-0000000000000002", true, ts(JAN_2 + 60)),
                key("ak-0000000000000003", false, ts(JAN_1 + 60)),
            ],
        }
    }

    #[test]
    fn user_list_as_table() -> anyhow::Result<()> {
        assert_eq!(
            render(&users(), OutputFormat::Table)?,
            "USERNAME  ROLES     CREATED               PASSWORD CHANGED\n\
             admin     admin     2024-01-01T00:00:00Z  2024-01-02T00:00:00Z\n\
             carol     dev, ops  2024-01-02T00:00:00Z  -\n"
        );
        Ok(())
    }

    #[test]
    fn user_list_as_json() -> anyhow::Result<()> {
        let text = render(&users(), OutputFormat::Json)?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(
            value,
            serde_json::json!({"users": [
                {"username": "admin", "roles": ["admin"],
                 "created_date": "2024-01-01T00:00:00Z",
                 "password_last_changed": "2024-01-02T00:00:00Z"},
                {"username": "carol", "roles": ["dev", "ops"],
                 "created_date": "2024-01-02T00:00:00Z",
                 "password_last_changed": null},
            ]})
        );
        Ok(())
    }

    #[test]
    fn user_list_as_yaml() -> anyhow::Result<()> {
        let text = render(&users(), OutputFormat::Yaml)?;
        assert!(text.starts_with("users:\n"), "{text}");
        assert!(text.contains("username: admin"), "{text}");
        assert!(text.contains("username: carol"), "{text}");
        assert!(text.contains("2024-01-02T00:00:00Z"), "{text}");
        assert!(text.contains("- dev"), "{text}");
        Ok(())
    }

    #[test]
    fn role_list_as_table() -> anyhow::Result<()> {
        assert_eq!(
            render(&roles(), OutputFormat::Table)?,
            "NAME     BUILT-IN  POLICIES  CREATED               DESCRIPTION\n\
             admin    yes       1         2024-01-01T00:00:00Z  everything\n\
             readers  no        0         2024-01-02T00:00:00Z  -\n"
        );
        Ok(())
    }

    #[test]
    fn role_list_as_json_embeds_policy_documents() -> anyhow::Result<()> {
        let value: serde_json::Value =
            serde_json::from_str(&render(&roles(), OutputFormat::Json)?)?;
        assert_eq!(value["roles"][0]["role_name"], "admin");
        assert_eq!(value["roles"][0]["built_in"], true);
        assert_eq!(
            value["roles"][0]["policies"][0]["policy_document"]["Statement"][0]["Effect"],
            "Allow"
        );
        assert_eq!(value["roles"][1]["policies"], serde_json::json!([]));
        Ok(())
    }

    #[test]
    fn role_list_as_yaml() -> anyhow::Result<()> {
        let text = render(&roles(), OutputFormat::Yaml)?;
        assert!(text.contains("role_name: admin"), "{text}");
        assert!(text.contains("built_in: true"), "{text}");
        assert!(text.contains("policy_name: all"), "{text}");
        assert!(text.contains("Effect: Allow"), "{text}");
        Ok(())
    }

    #[test]
    fn role_detail_shows_documents_pretty() -> anyhow::Result<()> {
        let role = roles().roles.remove(0);
        let text = render(&role, OutputFormat::Table)?;
        assert!(text.starts_with("name:         admin\n"), "{text}");
        assert!(text.contains("policies:     all\n"), "{text}");
        assert!(
            text.contains("\npolicy all:\n{\n  \"Statement\": ["),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn api_key_list_as_table() -> anyhow::Result<()> {
        assert_eq!(
            render(&api_keys(), OutputFormat::Table)?,
            "KEY ID               USER   STATUS   CREATED               EXPIRES               LAST USED  DESCRIPTION\n\
             ak-0000000000000001  carol  active   2024-01-01T00:00:00Z  never                 -          ci\n\
             ak-0000000000000002  carol  revoked  2024-01-01T00:00:00Z  2024-01-02T00:01:00Z  -          ci\n\
             ak-0000000000000003  carol  expired  2024-01-01T00:00:00Z  2024-01-01T00:01:00Z  -          ci\n"
        );
        Ok(())
    }

    #[test]
    fn api_key_list_as_json_and_yaml() -> anyhow::Result<()> {
        let value: serde_json::Value =
            serde_json::from_str(&render(&api_keys(), OutputFormat::Json)?)?;
        assert_eq!(value["api_keys"][0]["key_id"], "ak-0000000000000001");
        assert_eq!(value["api_keys"][0]["expires_at"], serde_json::Value::Null);
        assert_eq!(value["api_keys"][1]["revoked"], true);
        assert_eq!(value["api_keys"][2]["status"], "expired");
        // Secrets are never part of a listing.
        assert!(value["api_keys"][0].get("secret").is_none());

        let yaml = render(&api_keys(), OutputFormat::Yaml)?;
        assert!(yaml.starts_with("api_keys:\n"), "{yaml}");
        assert!(yaml.contains("key_id: ak-0000000000000002"), "{yaml}");
        assert!(yaml.contains("status: revoked"), "{yaml}");
        Ok(())
    }

    #[test]
    fn identity_kinds_read_as_words() {
        let view = IdentityView::from(auth_proto::GetCallerIdentityResponse {
            kind: auth_proto::PrincipalKind::Node as i32,
            principal: "node/mi-1".into(),
            name: "mi-1".into(),
            roles: vec![],
            session_id: String::new(),
            expires_at: None,
        });
        assert_eq!(view.kind, "node");
        let unknown = IdentityView::from(auth_proto::GetCallerIdentityResponse {
            kind: 42,
            ..Default::default()
        });
        assert_eq!(unknown.kind, "unknown (42)");
    }

    #[test]
    fn bad_timestamps_become_absent() {
        assert_eq!(
            timestamp(Some(prost_types::Timestamp {
                seconds: 1,
                nanos: -5
            })),
            None
        );
        assert_eq!(
            timestamp(Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            })),
            None
        );
        let time = DateTime::from_timestamp(JAN_1, 5).unwrap_or_default();
        assert_eq!(timestamp(Some(to_timestamp(time))), Some(time));
    }
}
