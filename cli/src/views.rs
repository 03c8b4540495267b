//! What the CLI prints, as serde structs built from the wire types. The proto messages stay
//! out of the output so JSON and YAML have stable snake_case names and RFC 3339 times, and a
//! proto change is a compile error here rather than a silent change in scripts' input.

use bosun_proto::audit::v1 as audit_proto;
use bosun_proto::auth::v1 as auth_proto;
use bosun_proto::documents::v1 as documents_proto;
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

// ---- documents ----

/// A document type as SSM names it, so output matches the `DocumentType` list filter.
fn document_type_name(value: i32) -> String {
    match documents_proto::DocumentType::try_from(value) {
        Ok(documents_proto::DocumentType::Command) => "Command".to_owned(),
        Ok(documents_proto::DocumentType::Automation) => "Automation".to_owned(),
        Ok(documents_proto::DocumentType::Session) => "Session".to_owned(),
        Ok(documents_proto::DocumentType::Policy) => "Policy".to_owned(),
        Ok(documents_proto::DocumentType::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({value})"),
    }
}

fn document_format_name(value: i32) -> String {
    match documents_proto::DocumentFormat::try_from(value) {
        Ok(documents_proto::DocumentFormat::Json) => "JSON".to_owned(),
        Ok(documents_proto::DocumentFormat::Yaml) => "YAML".to_owned(),
        Ok(documents_proto::DocumentFormat::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({value})"),
    }
}

fn document_status_name(value: i32) -> String {
    match documents_proto::DocumentStatus::try_from(value) {
        Ok(documents_proto::DocumentStatus::Active) => "Active".to_owned(),
        Ok(documents_proto::DocumentStatus::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({value})"),
    }
}

/// `3 (release-3)`, `3`, or `-` when there is no version.
fn version_cell(version: &str, version_name: &str) -> String {
    match (version.is_empty(), version_name.is_empty()) {
        (true, _) => "-".to_owned(),
        (false, true) => version.to_owned(),
        (false, false) => format!("{version} ({version_name})"),
    }
}

#[derive(Debug, Serialize)]
pub struct TagView {
    pub key: String,
    pub value: String,
}

impl From<documents_proto::Tag> for TagView {
    fn from(tag: documents_proto::Tag) -> Self {
        Self {
            key: tag.key,
            value: tag.value,
        }
    }
}

fn tags_cell(tags: &[TagView]) -> String {
    let pairs: Vec<String> = tags
        .iter()
        .map(|tag| format!("{}={}", tag.key, tag.value))
        .collect();
    list_cell(&pairs)
}

#[derive(Debug, Serialize)]
pub struct DocumentParameterView {
    pub name: String,
    #[serde(rename = "type")]
    pub parameter_type: String,
    pub description: String,
    /// The default as JSON when it parses (so scripts see a list as a list), else the raw
    /// text; null when the parameter has none and is therefore required.
    pub default_value: serde_json::Value,
}

impl From<documents_proto::DocumentParameter> for DocumentParameterView {
    fn from(parameter: documents_proto::DocumentParameter) -> Self {
        let default_value = if parameter.default_value.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&parameter.default_value)
                .unwrap_or(serde_json::Value::String(parameter.default_value))
        };
        Self {
            name: parameter.name,
            parameter_type: parameter.r#type,
            description: parameter.description,
            default_value,
        }
    }
}

/// What `doc create`, `doc update` and `doc describe` print.
#[derive(Debug, Serialize)]
pub struct DocumentDescriptionView {
    pub name: String,
    pub display_name: String,
    pub document_type: String,
    pub document_format: String,
    pub schema_version: String,
    pub owner: String,
    pub status: String,
    /// The version described.
    pub document_version: String,
    pub version_name: String,
    pub latest_version: String,
    pub default_version: String,
    pub default_version_name: String,
    pub target_type: String,
    pub platform_types: Vec<String>,
    pub created_date: Option<DateTime<Utc>>,
    pub hash: String,
    pub hash_type: String,
    pub description: String,
    pub parameters: Vec<DocumentParameterView>,
    pub tags: Vec<TagView>,
}

impl From<documents_proto::DocumentDescription> for DocumentDescriptionView {
    fn from(document: documents_proto::DocumentDescription) -> Self {
        Self {
            name: document.name,
            display_name: document.display_name,
            document_type: document_type_name(document.document_type),
            document_format: document_format_name(document.document_format),
            schema_version: document.schema_version,
            owner: document.owner,
            status: document_status_name(document.status),
            document_version: document.document_version,
            version_name: document.version_name,
            latest_version: document.latest_version,
            default_version: document.default_version,
            default_version_name: document.default_version_name,
            target_type: document.target_type,
            platform_types: document.platform_types,
            created_date: timestamp(document.created_date),
            hash: document.hash,
            hash_type: document.hash_type,
            description: document.description,
            parameters: document
                .parameters
                .into_iter()
                .map(DocumentParameterView::from)
                .collect(),
            tags: document.tags.into_iter().map(TagView::from).collect(),
        }
    }
}

impl Render for DocumentDescriptionView {
    fn to_table(&self) -> String {
        let hash = match (self.hash.is_empty(), self.hash_type.is_empty()) {
            (true, _) => "-".to_owned(),
            (false, true) => self.hash.clone(),
            (false, false) => format!("{} ({})", self.hash, self.hash_type),
        };
        let names: Vec<String> = self.parameters.iter().map(|p| p.name.clone()).collect();
        let mut out = Fields::new()
            .field("name", &self.name)
            .field("display name", text_cell(&self.display_name))
            .field("type", &self.document_type)
            .field("schema", text_cell(&self.schema_version))
            .field("format", &self.document_format)
            .field("owner", text_cell(&self.owner))
            .field("status", &self.status)
            .field(
                "version",
                version_cell(&self.document_version, &self.version_name),
            )
            .field("latest version", text_cell(&self.latest_version))
            .field(
                "default version",
                version_cell(&self.default_version, &self.default_version_name),
            )
            .field("target type", text_cell(&self.target_type))
            .field("platforms", list_cell(&self.platform_types))
            .field("created", time_cell(self.created_date))
            .field("hash", hash)
            .field("tags", tags_cell(&self.tags))
            .field("description", text_cell(&self.description))
            .field("parameters", list_cell(&names))
            .render();
        if !self.parameters.is_empty() {
            let mut table = Table::new(vec!["PARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"]);
            for parameter in &self.parameters {
                let default = match &parameter.default_value {
                    serde_json::Value::Null => "(required)".to_owned(),
                    serde_json::Value::String(text) => text.clone(),
                    value => value.to_string(),
                };
                table.row(vec![
                    parameter.name.clone(),
                    text_cell(&parameter.parameter_type),
                    default,
                    text_cell(&parameter.description),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        out
    }
}

/// What `doc get` prints: with `-o table` the content alone, byte for byte.
#[derive(Debug, Serialize)]
pub struct DocumentContentView {
    pub name: String,
    pub display_name: String,
    pub document_version: String,
    pub version_name: String,
    pub document_type: String,
    pub document_format: String,
    pub status: String,
    pub created_date: Option<DateTime<Utc>>,
    pub content: String,
}

impl From<documents_proto::GetDocumentResponse> for DocumentContentView {
    fn from(document: documents_proto::GetDocumentResponse) -> Self {
        Self {
            name: document.name,
            display_name: document.display_name,
            document_version: document.document_version,
            version_name: document.version_name,
            document_type: document_type_name(document.document_type),
            document_format: document_format_name(document.document_format),
            status: document_status_name(document.status),
            created_date: timestamp(document.created_date),
            content: document.content,
        }
    }
}

impl Render for DocumentContentView {
    /// The content verbatim, without `printable` cleaning or an added newline, so
    /// `bosun doc get X > x.yaml` gives back exactly what the server holds. Unlike table
    /// cells this is the operator's own document, asked for as is.
    fn to_table(&self) -> String {
        self.content.clone()
    }
}

#[derive(Debug, Serialize)]
pub struct DocumentIdentifierView {
    pub name: String,
    pub display_name: String,
    pub owner: String,
    pub document_type: String,
    pub schema_version: String,
    pub document_format: String,
    /// The default version, and its name when it has one.
    pub document_version: String,
    pub version_name: String,
    pub target_type: String,
    pub platform_types: Vec<String>,
    pub tags: Vec<TagView>,
    pub created_date: Option<DateTime<Utc>>,
}

impl From<documents_proto::DocumentIdentifier> for DocumentIdentifierView {
    fn from(document: documents_proto::DocumentIdentifier) -> Self {
        Self {
            name: document.name,
            display_name: document.display_name,
            owner: document.owner,
            document_type: document_type_name(document.document_type),
            schema_version: document.schema_version,
            document_format: document_format_name(document.document_format),
            document_version: document.document_version,
            version_name: document.version_name,
            target_type: document.target_type,
            platform_types: document.platform_types,
            tags: document.tags.into_iter().map(TagView::from).collect(),
            created_date: timestamp(document.created_date),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DocumentList {
    pub documents: Vec<DocumentIdentifierView>,
}

impl Render for DocumentList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "NAME",
            "OWNER",
            "TYPE",
            "SCHEMA",
            "DEFAULT-VERSION",
            "FORMAT",
        ]);
        for document in &self.documents {
            table.row(vec![
                document.name.clone(),
                text_cell(&document.owner),
                document.document_type.clone(),
                text_cell(&document.schema_version),
                version_cell(&document.document_version, &document.version_name),
                document.document_format.clone(),
            ]);
        }
        table.render()
    }
}

#[derive(Debug, Serialize)]
pub struct DocumentVersionView {
    pub name: String,
    pub document_version: String,
    pub version_name: String,
    pub is_default_version: bool,
    pub document_format: String,
    pub status: String,
    pub created_date: Option<DateTime<Utc>>,
}

impl From<documents_proto::DocumentVersionInfo> for DocumentVersionView {
    fn from(version: documents_proto::DocumentVersionInfo) -> Self {
        Self {
            name: version.name,
            document_version: version.document_version,
            version_name: version.version_name,
            is_default_version: version.is_default_version,
            document_format: document_format_name(version.document_format),
            status: document_status_name(version.status),
            created_date: timestamp(version.created_date),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DocumentVersionList {
    pub versions: Vec<DocumentVersionView>,
}

impl Render for DocumentVersionList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "VERSION",
            "VERSION NAME",
            "DEFAULT",
            "FORMAT",
            "STATUS",
            "CREATED",
        ]);
        for version in &self.versions {
            table.row(vec![
                version.document_version.clone(),
                text_cell(&version.version_name),
                yes_no(version.is_default_version).to_owned(),
                version.document_format.clone(),
                version.status.clone(),
                time_cell(version.created_date),
            ]);
        }
        table.render()
    }
}

/// The result of `doc set-default`.
#[derive(Debug, Serialize)]
pub struct DefaultVersionView {
    pub name: String,
    pub default_version: String,
    pub default_version_name: String,
}

impl From<documents_proto::DocumentDefaultVersionDescription> for DefaultVersionView {
    fn from(description: documents_proto::DocumentDefaultVersionDescription) -> Self {
        Self {
            name: description.name,
            default_version: description.default_version,
            default_version_name: description.default_version_name,
        }
    }
}

impl Render for DefaultVersionView {
    fn to_table(&self) -> String {
        let line = format!(
            "the default version of document {} is now {}",
            self.name,
            version_cell(&self.default_version, &self.default_version_name)
        );
        format!("{}\n", printable(&line))
    }
}

/// The result of `doc permissions`: whom the document is shared with.
#[derive(Debug, Serialize)]
pub struct DocumentPermissionsView {
    pub name: String,
    pub principals: Vec<String>,
}

impl Render for DocumentPermissionsView {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec!["SHARED WITH"]);
        for principal in &self.principals {
            table.row(vec![principal.clone()]);
        }
        table.render()
    }
}

/// The result of `doc tags`.
#[derive(Debug, Serialize)]
pub struct TagList {
    pub tags: Vec<TagView>,
}

impl From<Vec<documents_proto::Tag>> for TagList {
    fn from(tags: Vec<documents_proto::Tag>) -> Self {
        Self {
            tags: tags.into_iter().map(TagView::from).collect(),
        }
    }
}

impl Render for TagList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec!["KEY", "VALUE"]);
        for tag in &self.tags {
            table.row(vec![tag.key.clone(), tag.value.clone()]);
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

#[cfg(test)]
mod document_tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    // 2024-01-01T00:00:00Z.
    const JAN_1: i64 = 1_704_067_200;

    fn tag(key: &str, value: &str) -> documents_proto::Tag {
        documents_proto::Tag {
            key: key.into(),
            value: value.into(),
        }
    }

    fn description() -> DocumentDescriptionView {
        documents_proto::DocumentDescription {
            name: "RestartNginx".into(),
            display_name: "Restart nginx".into(),
            version_name: "v2".into(),
            document_version: "2".into(),
            latest_version: "3".into(),
            default_version: "2".into(),
            default_version_name: "v2".into(),
            document_type: documents_proto::DocumentType::Command as i32,
            document_format: documents_proto::DocumentFormat::Yaml as i32,
            schema_version: "2.2".into(),
            owner: "user/admin".into(),
            created_date: Some(prost_types::Timestamp {
                seconds: JAN_1,
                nanos: 0,
            }),
            status: documents_proto::DocumentStatus::Active as i32,
            description: "restarts nginx".into(),
            parameters: vec![
                documents_proto::DocumentParameter {
                    name: "service".into(),
                    r#type: "String".into(),
                    description: "unit to restart".into(),
                    default_value: r#""nginx""#.into(),
                },
                documents_proto::DocumentParameter {
                    name: "hosts".into(),
                    r#type: "StringList".into(),
                    description: String::new(),
                    default_value: String::new(),
                },
            ],
            platform_types: vec!["Linux".into()],
            target_type: String::new(),
            tags: vec![tag("env", "prod")],
            hash: "ab12".into(),
            hash_type: "Sha256".into(),
        }
        .into()
    }

    fn documents() -> DocumentList {
        let identifier = |name: &str,
                          owner: &str,
                          kind: documents_proto::DocumentType|
         -> DocumentIdentifierView {
            documents_proto::DocumentIdentifier {
                name: name.into(),
                owner: owner.into(),
                document_version: "1".into(),
                document_type: kind as i32,
                schema_version: "2.2".into(),
                document_format: documents_proto::DocumentFormat::Json as i32,
                ..Default::default()
            }
            .into()
        };
        let mut named = identifier(
            "Ops-Restart",
            "user/admin",
            documents_proto::DocumentType::Command,
        );
        named.document_version = "4".into();
        named.version_name = "stable".into();
        named.tags = vec![TagView::from(tag("env", "prod"))];
        DocumentList {
            documents: vec![
                identifier(
                    "Bosun-RunShellScript",
                    "Bosun",
                    documents_proto::DocumentType::Command,
                ),
                named,
            ],
        }
    }

    #[test]
    fn description_as_table_lists_fields_then_parameters() -> anyhow::Result<()> {
        assert_eq!(
            render(&description(), OutputFormat::Table)?,
            "name:             RestartNginx\n\
             display name:     Restart nginx\n\
             type:             Command\n\
             schema:           2.2\n\
             format:           YAML\n\
             owner:            user/admin\n\
             status:           Active\n\
             version:          2 (v2)\n\
             latest version:   3\n\
             default version:  2 (v2)\n\
             target type:      -\n\
             platforms:        Linux\n\
             created:          2024-01-01T00:00:00Z\n\
             hash:             ab12 (Sha256)\n\
             tags:             env=prod\n\
             description:      restarts nginx\n\
             parameters:       service, hosts\n\
             \n\
             PARAMETER  TYPE        DEFAULT     DESCRIPTION\n\
             service    String      nginx       unit to restart\n\
             hosts      StringList  (required)  -\n"
        );
        Ok(())
    }

    #[test]
    fn description_as_json_and_yaml() -> anyhow::Result<()> {
        let value: serde_json::Value =
            serde_json::from_str(&render(&description(), OutputFormat::Json)?)?;
        assert_eq!(value["name"], "RestartNginx");
        assert_eq!(value["document_type"], "Command");
        assert_eq!(value["document_format"], "YAML");
        assert_eq!(value["default_version"], "2");
        assert_eq!(value["hash"], "ab12");
        assert_eq!(value["created_date"], "2024-01-01T00:00:00Z");
        assert_eq!(
            value["parameters"][0],
            serde_json::json!({"name": "service", "type": "String",
                "description": "unit to restart", "default_value": "nginx"})
        );
        assert_eq!(
            value["parameters"][1]["default_value"],
            serde_json::Value::Null
        );
        assert_eq!(
            value["tags"],
            serde_json::json!([{"key": "env", "value": "prod"}])
        );

        let yaml = render(&description(), OutputFormat::Yaml)?;
        assert!(yaml.starts_with("name: RestartNginx\n"), "{yaml}");
        assert!(
            yaml.contains("schema_version: '2.2'") || yaml.contains("schema_version: \"2.2\""),
            "{yaml}"
        );
        assert!(yaml.contains("type: StringList"), "{yaml}");
        Ok(())
    }

    #[test]
    fn document_list_as_table() -> anyhow::Result<()> {
        assert_eq!(
            render(&documents(), OutputFormat::Table)?,
            "NAME                  OWNER       TYPE     SCHEMA  DEFAULT-VERSION  FORMAT\n\
             Bosun-RunShellScript  Bosun       Command  2.2     1                JSON\n\
             Ops-Restart           user/admin  Command  2.2     4 (stable)       JSON\n"
        );
        Ok(())
    }

    #[test]
    fn document_list_as_json_and_yaml() -> anyhow::Result<()> {
        let value: serde_json::Value =
            serde_json::from_str(&render(&documents(), OutputFormat::Json)?)?;
        assert_eq!(value["documents"][0]["name"], "Bosun-RunShellScript");
        assert_eq!(value["documents"][0]["owner"], "Bosun");
        assert_eq!(value["documents"][1]["document_version"], "4");
        assert_eq!(value["documents"][1]["version_name"], "stable");
        assert_eq!(value["documents"][1]["tags"][0]["key"], "env");
        assert_eq!(
            value["documents"][0]["created_date"],
            serde_json::Value::Null
        );

        let yaml = render(&documents(), OutputFormat::Yaml)?;
        assert!(yaml.starts_with("documents:\n"), "{yaml}");
        assert!(yaml.contains("name: Ops-Restart"), "{yaml}");
        assert!(yaml.contains("document_format: JSON"), "{yaml}");
        Ok(())
    }

    #[test]
    fn content_as_table_is_verbatim_and_as_json_carries_metadata() -> anyhow::Result<()> {
        let content = "schemaVersion: '2.2'\nmainSteps:\n\t- x: \"\x1b\"";
        let view = DocumentContentView::from(documents_proto::GetDocumentResponse {
            name: "RestartNginx".into(),
            document_version: "3".into(),
            content: content.into(),
            document_type: documents_proto::DocumentType::Command as i32,
            document_format: documents_proto::DocumentFormat::Yaml as i32,
            status: documents_proto::DocumentStatus::Active as i32,
            ..Default::default()
        });
        assert_eq!(render(&view, OutputFormat::Table)?, content);

        let value: serde_json::Value = serde_json::from_str(&render(&view, OutputFormat::Json)?)?;
        assert_eq!(value["content"], content);
        assert_eq!(value["document_version"], "3");
        assert_eq!(value["document_format"], "YAML");
        assert_eq!(value["status"], "Active");

        let yaml = render(&view, OutputFormat::Yaml)?;
        assert!(yaml.contains("name: RestartNginx"), "{yaml}");
        assert!(yaml.contains("content:"), "{yaml}");
        Ok(())
    }

    #[test]
    fn versions_permissions_and_tags_as_tables() -> anyhow::Result<()> {
        let versions = DocumentVersionList {
            versions: vec![
                documents_proto::DocumentVersionInfo {
                    name: "D".into(),
                    document_version: "1".into(),
                    is_default_version: true,
                    document_format: documents_proto::DocumentFormat::Json as i32,
                    status: documents_proto::DocumentStatus::Active as i32,
                    created_date: Some(prost_types::Timestamp {
                        seconds: JAN_1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }
                .into(),
                documents_proto::DocumentVersionInfo {
                    name: "D".into(),
                    document_version: "2".into(),
                    version_name: "beta".into(),
                    document_format: documents_proto::DocumentFormat::Yaml as i32,
                    status: 7,
                    ..Default::default()
                }
                .into(),
            ],
        };
        assert_eq!(
            render(&versions, OutputFormat::Table)?,
            "VERSION  VERSION NAME  DEFAULT  FORMAT  STATUS       CREATED\n\
             1        -             yes      JSON    Active       2024-01-01T00:00:00Z\n\
             2        beta          no       YAML    unknown (7)  -\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(&render(&versions, OutputFormat::Json)?)?;
        assert_eq!(value["versions"][0]["is_default_version"], true);
        assert_eq!(value["versions"][1]["version_name"], "beta");

        let permissions = DocumentPermissionsView {
            name: "D".into(),
            principals: vec!["All".into(), "role/ops".into()],
        };
        assert_eq!(
            render(&permissions, OutputFormat::Table)?,
            "SHARED WITH\nAll\nrole/ops\n"
        );
        let yaml = render(&permissions, OutputFormat::Yaml)?;
        assert!(yaml.contains("- role/ops"), "{yaml}");

        let tags = TagList::from(vec![tag("env", "prod"), tag("team", "")]);
        assert_eq!(
            render(&tags, OutputFormat::Table)?,
            "KEY   VALUE\nenv   prod\nteam\n"
        );
        let value: serde_json::Value = serde_json::from_str(&render(&tags, OutputFormat::Json)?)?;
        assert_eq!(
            value,
            serde_json::json!({"tags": [
            {"key": "env", "value": "prod"}, {"key": "team", "value": ""}]})
        );

        let default = DefaultVersionView {
            name: "D".into(),
            default_version: "2".into(),
            default_version_name: "beta".into(),
        };
        assert_eq!(
            render(&default, OutputFormat::Table)?,
            "the default version of document D is now 2 (beta)\n"
        );
        Ok(())
    }
}

// ---- parameters ----

use bosun_proto::parameters::v1 as parameters_proto;

/// A parameter type as SSM names it, so output matches the `Type` filter.
fn parameter_type_name(value: i32) -> String {
    match parameters_proto::ParameterType::try_from(value) {
        Ok(parameters_proto::ParameterType::String) => "String".to_owned(),
        Ok(parameters_proto::ParameterType::StringList) => "StringList".to_owned(),
        Ok(parameters_proto::ParameterType::SecureString) => "SecureString".to_owned(),
        Ok(parameters_proto::ParameterType::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({value})"),
    }
}

/// A tier as SSM names it, so output matches the `Tier` filter.
fn parameter_tier_name(value: i32) -> String {
    match parameters_proto::ParameterTier::try_from(value) {
        Ok(parameters_proto::ParameterTier::Standard) => "Standard".to_owned(),
        Ok(parameters_proto::ParameterTier::Advanced) => "Advanced".to_owned(),
        Ok(parameters_proto::ParameterTier::IntelligentTiering) => "Intelligent-Tiering".to_owned(),
        Ok(parameters_proto::ParameterTier::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({value})"),
    }
}

impl From<parameters_proto::Tag> for TagView {
    fn from(tag: parameters_proto::Tag) -> Self {
        Self {
            key: tag.key,
            value: tag.value,
        }
    }
}

/// What `param put` prints.
#[derive(Debug, Serialize)]
pub struct PutParameterView {
    pub name: String,
    pub version: i64,
    pub tier: String,
}

impl PutParameterView {
    pub fn new(name: String, response: parameters_proto::PutParameterResponse) -> Self {
        Self {
            name,
            version: response.version,
            tier: parameter_tier_name(response.tier),
        }
    }
}

impl Render for PutParameterView {
    fn to_table(&self) -> String {
        let line = format!(
            "put parameter {}: version {}, tier {}",
            self.name, self.version, self.tier
        );
        format!("{}\n", printable(&line))
    }
}

/// A parameter with its value. Debug leaves the value out: it may be a decrypted secret.
#[derive(Serialize)]
pub struct ParameterView {
    pub name: String,
    #[serde(rename = "type")]
    pub parameter_type: String,
    /// Plaintext, or for a SecureString read without --decrypt the server's envelope.
    pub value: String,
    pub version: i64,
    /// The `:version` or `:label` asked for, if any.
    pub selector: String,
    pub last_modified_date: Option<DateTime<Utc>>,
    pub data_type: String,
}

impl std::fmt::Debug for ParameterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParameterView")
            .field("name", &self.name)
            .field("parameter_type", &self.parameter_type)
            .field("version", &self.version)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl From<parameters_proto::Parameter> for ParameterView {
    fn from(parameter: parameters_proto::Parameter) -> Self {
        Self {
            name: parameter.name,
            parameter_type: parameter_type_name(parameter.r#type),
            value: parameter.value,
            version: parameter.version,
            selector: parameter.selector,
            last_modified_date: timestamp(parameter.last_modified_date),
            data_type: parameter.data_type,
        }
    }
}

/// What `param get` and `param ls` print.
#[derive(Debug, Serialize)]
pub struct ParameterList {
    pub parameters: Vec<ParameterView>,
}

impl Render for ParameterList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec!["NAME", "TYPE", "VERSION", "VALUE"]);
        for parameter in &self.parameters {
            table.row(vec![
                parameter.name.clone(),
                parameter.parameter_type.clone(),
                parameter.version.to_string(),
                parameter.value.clone(),
            ]);
        }
        table.render()
    }
}

#[derive(Debug, Serialize)]
pub struct ParameterPolicyView {
    /// The policy as JSON when it parses, else the raw text.
    pub policy_text: serde_json::Value,
    pub policy_type: String,
    pub policy_status: String,
}

impl From<parameters_proto::ParameterInlinePolicy> for ParameterPolicyView {
    fn from(policy: parameters_proto::ParameterInlinePolicy) -> Self {
        Self {
            policy_text: serde_json::from_str(&policy.policy_text)
                .unwrap_or(serde_json::Value::String(policy.policy_text)),
            policy_type: policy.policy_type,
            policy_status: policy.policy_status,
        }
    }
}

/// A parameter's metadata, never its value.
#[derive(Debug, Serialize)]
pub struct ParameterMetadataView {
    pub name: String,
    #[serde(rename = "type")]
    pub parameter_type: String,
    pub key_id: String,
    pub version: i64,
    pub tier: String,
    pub last_modified_date: Option<DateTime<Utc>>,
    pub last_modified_user: String,
    pub description: String,
    pub allowed_pattern: String,
    pub policies: Vec<ParameterPolicyView>,
    pub data_type: String,
}

impl From<parameters_proto::ParameterMetadata> for ParameterMetadataView {
    fn from(metadata: parameters_proto::ParameterMetadata) -> Self {
        Self {
            name: metadata.name,
            parameter_type: parameter_type_name(metadata.r#type),
            key_id: metadata.key_id,
            version: metadata.version,
            tier: parameter_tier_name(metadata.tier),
            last_modified_date: timestamp(metadata.last_modified_date),
            last_modified_user: metadata.last_modified_user,
            description: metadata.description,
            allowed_pattern: metadata.allowed_pattern,
            policies: metadata
                .policies
                .into_iter()
                .map(ParameterPolicyView::from)
                .collect(),
            data_type: metadata.data_type,
        }
    }
}

/// What `param ls --describe` prints.
#[derive(Debug, Serialize)]
pub struct ParameterMetadataList {
    pub parameters: Vec<ParameterMetadataView>,
}

impl Render for ParameterMetadataList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "NAME",
            "TYPE",
            "VERSION",
            "TIER",
            "LAST MODIFIED",
            "MODIFIED BY",
            "DESCRIPTION",
        ]);
        for parameter in &self.parameters {
            table.row(vec![
                parameter.name.clone(),
                parameter.parameter_type.clone(),
                parameter.version.to_string(),
                parameter.tier.clone(),
                time_cell(parameter.last_modified_date),
                text_cell(&parameter.last_modified_user),
                text_cell(&parameter.description),
            ]);
        }
        table.render()
    }
}

/// One version of a parameter. Debug leaves the value out: it may be a decrypted secret.
#[derive(Serialize)]
pub struct ParameterHistoryView {
    pub version: i64,
    #[serde(rename = "type")]
    pub parameter_type: String,
    pub value: String,
    pub labels: Vec<String>,
    pub tier: String,
    pub key_id: String,
    pub last_modified_date: Option<DateTime<Utc>>,
    pub last_modified_user: String,
    pub description: String,
    pub allowed_pattern: String,
    pub policies: Vec<ParameterPolicyView>,
    pub data_type: String,
}

impl std::fmt::Debug for ParameterHistoryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParameterHistoryView")
            .field("version", &self.version)
            .field("parameter_type", &self.parameter_type)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl From<parameters_proto::ParameterHistory> for ParameterHistoryView {
    fn from(history: parameters_proto::ParameterHistory) -> Self {
        Self {
            version: history.version,
            parameter_type: parameter_type_name(history.r#type),
            value: history.value,
            labels: history.labels,
            tier: parameter_tier_name(history.tier),
            key_id: history.key_id,
            last_modified_date: timestamp(history.last_modified_date),
            last_modified_user: history.last_modified_user,
            description: history.description,
            allowed_pattern: history.allowed_pattern,
            policies: history
                .policies
                .into_iter()
                .map(ParameterPolicyView::from)
                .collect(),
            data_type: history.data_type,
        }
    }
}

/// What `param history` prints.
#[derive(Debug, Serialize)]
pub struct ParameterHistoryList {
    pub name: String,
    pub versions: Vec<ParameterHistoryView>,
}

impl Render for ParameterHistoryList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "VERSION",
            "TYPE",
            "TIER",
            "LABELS",
            "LAST MODIFIED",
            "MODIFIED BY",
            "VALUE",
        ]);
        for version in &self.versions {
            table.row(vec![
                version.version.to_string(),
                version.parameter_type.clone(),
                version.tier.clone(),
                list_cell(&version.labels),
                time_cell(version.last_modified_date),
                text_cell(&version.last_modified_user),
                version.value.clone(),
            ]);
        }
        table.render()
    }
}

/// What `param label` prints; the labels the server refused also go to stderr.
#[derive(Debug, Serialize)]
pub struct LabelResultView {
    pub name: String,
    pub parameter_version: i64,
    /// The labels now on the version.
    pub labels: Vec<String>,
    pub invalid_labels: Vec<String>,
}

impl Render for LabelResultView {
    fn to_table(&self) -> String {
        if self.labels.is_empty() {
            return String::new();
        }
        let line = format!(
            "labelled version {} of parameter {}: {}",
            self.parameter_version,
            self.name,
            self.labels.join(", ")
        );
        format!("{}\n", printable(&line))
    }
}

/// What `param unlabel` prints; the labels that were not on the version also go to stderr.
#[derive(Debug, Serialize)]
pub struct UnlabelResultView {
    pub name: String,
    pub parameter_version: i64,
    pub removed_labels: Vec<String>,
    pub invalid_labels: Vec<String>,
}

impl Render for UnlabelResultView {
    fn to_table(&self) -> String {
        if self.removed_labels.is_empty() {
            return String::new();
        }
        let line = format!(
            "removed labels from version {} of parameter {}: {}",
            self.parameter_version,
            self.name,
            self.removed_labels.join(", ")
        );
        format!("{}\n", printable(&line))
    }
}

/// What `param rm` prints; the names that did not exist also go to stderr.
#[derive(Debug, Default, Serialize)]
pub struct DeletedParametersView {
    pub deleted_parameters: Vec<String>,
    pub invalid_parameters: Vec<String>,
}

impl Render for DeletedParametersView {
    fn to_table(&self) -> String {
        self.deleted_parameters
            .iter()
            .map(|name| format!("deleted parameter {}\n", printable(name)))
            .collect()
    }
}

#[cfg(test)]
mod parameter_tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    // 2024-01-01T00:00:00Z.
    const JAN_1: i64 = 1_704_067_200;

    fn parameters() -> ParameterList {
        ParameterList {
            parameters: vec![
                parameters_proto::Parameter {
                    name: "/app/db/url".into(),
                    r#type: parameters_proto::ParameterType::String as i32,
                    value: "postgres://db:5432/app".into(),
                    version: 3,
                    selector: ":prod".into(),
                    last_modified_date: Some(prost_types::Timestamp {
                        seconds: JAN_1,
                        nanos: 0,
                    }),
                    data_type: "text".into(),
                }
                .into(),
                parameters_proto::Parameter {
                    name: "/app/hosts".into(),
                    r#type: parameters_proto::ParameterType::StringList as i32,
                    value: "a,b\nc".into(),
                    version: 12,
                    ..Default::default()
                }
                .into(),
            ],
        }
    }

    fn metadata() -> ParameterMetadataList {
        ParameterMetadataList {
            parameters: vec![
                parameters_proto::ParameterMetadata {
                    name: "/app/db/password".into(),
                    r#type: parameters_proto::ParameterType::SecureString as i32,
                    key_id: "alias/bosun/parameters".into(),
                    last_modified_date: Some(prost_types::Timestamp {
                        seconds: JAN_1,
                        nanos: 0,
                    }),
                    last_modified_user: "user/alice".into(),
                    description: "db password".into(),
                    version: 2,
                    tier: parameters_proto::ParameterTier::Advanced as i32,
                    policies: vec![parameters_proto::ParameterInlinePolicy {
                        policy_text: r#"{"Type":"Expiration"}"#.into(),
                        policy_type: "Expiration".into(),
                        policy_status: "Pending".into(),
                    }],
                    ..Default::default()
                }
                .into(),
                parameters_proto::ParameterMetadata {
                    name: "/app/mode".into(),
                    r#type: 9,
                    version: 1,
                    tier: parameters_proto::ParameterTier::Standard as i32,
                    ..Default::default()
                }
                .into(),
            ],
        }
    }

    fn history() -> ParameterHistoryList {
        ParameterHistoryList {
            name: "/app/db/url".into(),
            versions: vec![
                parameters_proto::ParameterHistory {
                    name: "/app/db/url".into(),
                    r#type: parameters_proto::ParameterType::String as i32,
                    value: "v1".into(),
                    version: 1,
                    tier: parameters_proto::ParameterTier::Standard as i32,
                    last_modified_user: "user/alice".into(),
                    ..Default::default()
                }
                .into(),
                parameters_proto::ParameterHistory {
                    name: "/app/db/url".into(),
                    r#type: parameters_proto::ParameterType::String as i32,
                    value: "v2".into(),
                    version: 2,
                    labels: vec!["prod".into(), "blue".into()],
                    tier: parameters_proto::ParameterTier::Standard as i32,
                    last_modified_date: Some(prost_types::Timestamp {
                        seconds: JAN_1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }
                .into(),
            ],
        }
    }

    #[test]
    fn parameter_list_as_table_json_and_yaml() -> anyhow::Result<()> {
        assert_eq!(
            render(&parameters(), OutputFormat::Table)?,
            "NAME         TYPE        VERSION  VALUE\n\
             /app/db/url  String      3        postgres://db:5432/app\n\
             /app/hosts   StringList  12       a,b c\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(&render(&parameters(), OutputFormat::Json)?)?;
        assert_eq!(
            value["parameters"][0],
            serde_json::json!({"name": "/app/db/url", "type": "String",
                "value": "postgres://db:5432/app", "version": 3, "selector": ":prod",
                "last_modified_date": "2024-01-01T00:00:00Z", "data_type": "text"})
        );
        // JSON keeps the value as stored, line breaks included.
        assert_eq!(value["parameters"][1]["value"], "a,b\nc");
        assert_eq!(
            value["parameters"][1]["last_modified_date"],
            serde_json::Value::Null
        );

        let yaml = render(&parameters(), OutputFormat::Yaml)?;
        assert!(yaml.starts_with("parameters:\n"), "{yaml}");
        assert!(yaml.contains("name: /app/db/url"), "{yaml}");
        assert!(yaml.contains("type: StringList"), "{yaml}");
        assert!(yaml.contains("version: 12"), "{yaml}");
        Ok(())
    }

    #[test]
    fn debug_never_shows_a_value() {
        let list = parameters();
        let text = format!("{list:?} {:?}", history());
        assert!(!text.contains("postgres://"), "{text}");
        assert!(!text.contains("v2"), "{text}");
        assert!(text.contains("/app/db/url"), "{text}");
    }

    #[test]
    fn metadata_list_as_table_json_and_yaml() -> anyhow::Result<()> {
        assert_eq!(
            render(&metadata(), OutputFormat::Table)?,
            "NAME              TYPE          VERSION  TIER      LAST MODIFIED         MODIFIED BY  DESCRIPTION\n\
             /app/db/password  SecureString  2        Advanced  2024-01-01T00:00:00Z  user/alice   db password\n\
             /app/mode         unknown (9)   1        Standard  -                     -            -\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(&render(&metadata(), OutputFormat::Json)?)?;
        let first = &value["parameters"][0];
        assert_eq!(first["type"], "SecureString");
        assert_eq!(first["tier"], "Advanced");
        assert_eq!(first["key_id"], "alias/bosun/parameters");
        assert_eq!(first["policies"][0]["policy_text"]["Type"], "Expiration");
        assert_eq!(first["policies"][0]["policy_status"], "Pending");
        // Metadata never carries a value.
        assert!(first.get("value").is_none());

        let yaml = render(&metadata(), OutputFormat::Yaml)?;
        assert!(yaml.starts_with("parameters:\n"), "{yaml}");
        assert!(yaml.contains("tier: Advanced"), "{yaml}");
        assert!(yaml.contains("last_modified_user: user/alice"), "{yaml}");
        Ok(())
    }

    #[test]
    fn history_as_table_json_and_yaml() -> anyhow::Result<()> {
        assert_eq!(
            render(&history(), OutputFormat::Table)?,
            "VERSION  TYPE    TIER      LABELS      LAST MODIFIED         MODIFIED BY  VALUE\n\
             1        String  Standard  -           -                     user/alice   v1\n\
             2        String  Standard  prod, blue  2024-01-01T00:00:00Z  -            v2\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(&render(&history(), OutputFormat::Json)?)?;
        assert_eq!(value["name"], "/app/db/url");
        assert_eq!(
            value["versions"][1]["labels"],
            serde_json::json!(["prod", "blue"])
        );
        assert_eq!(value["versions"][1]["value"], "v2");

        let yaml = render(&history(), OutputFormat::Yaml)?;
        assert!(yaml.starts_with("name: /app/db/url\n"), "{yaml}");
        assert!(yaml.contains("- prod"), "{yaml}");
        Ok(())
    }

    #[test]
    fn results_of_put_label_unlabel_and_rm() -> anyhow::Result<()> {
        let put = PutParameterView::new(
            "/app/db".into(),
            parameters_proto::PutParameterResponse {
                version: 4,
                tier: parameters_proto::ParameterTier::IntelligentTiering as i32,
            },
        );
        assert_eq!(
            render(&put, OutputFormat::Table)?,
            "put parameter /app/db: version 4, tier Intelligent-Tiering\n"
        );
        let value: serde_json::Value = serde_json::from_str(&render(&put, OutputFormat::Json)?)?;
        assert_eq!(
            value,
            serde_json::json!({"name": "/app/db", "version": 4, "tier": "Intelligent-Tiering"})
        );
        assert!(render(&put, OutputFormat::Yaml)?.contains("version: 4"));

        let label = LabelResultView {
            name: "/app/db".into(),
            parameter_version: 4,
            labels: vec!["prod".into()],
            invalid_labels: vec!["9bad".into()],
        };
        assert_eq!(
            render(&label, OutputFormat::Table)?,
            "labelled version 4 of parameter /app/db: prod\n"
        );
        let value: serde_json::Value = serde_json::from_str(&render(&label, OutputFormat::Json)?)?;
        assert_eq!(value["invalid_labels"], serde_json::json!(["9bad"]));

        let unlabel = UnlabelResultView {
            name: "/app/db".into(),
            parameter_version: 4,
            removed_labels: Vec::new(),
            invalid_labels: vec!["gone".into()],
        };
        assert_eq!(render(&unlabel, OutputFormat::Table)?, "");

        let deleted = DeletedParametersView {
            deleted_parameters: vec!["/a".into(), "/b".into()],
            invalid_parameters: vec!["/c".into()],
        };
        assert_eq!(
            render(&deleted, OutputFormat::Table)?,
            "deleted parameter /a\ndeleted parameter /b\n"
        );
        let yaml = render(&deleted, OutputFormat::Yaml)?;
        assert!(yaml.contains("invalid_parameters:\n- /c"), "{yaml}");
        Ok(())
    }
}
