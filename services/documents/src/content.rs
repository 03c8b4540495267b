//! Checking submitted content with the document model, and what the service derives from
//! it: format, type, hash, parameter summary and platforms.

use bosun_core::{ApiError, FieldViolation};
use bosun_document::{Document, DocumentType, Format, MAX_CONTENT_BYTES, ValidationError};
use bosun_proto::documents::v1 as pb;

/// Content checked by the model, with what each stored version records about it.
pub struct CheckedContent {
    pub document: Document,
    pub format: Format,
    pub sha256: String,
    /// JSON array of `{name, type, description, default_value}`.
    pub parameters: String,
    /// JSON array of platform names.
    pub platform_types: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "JSON",
        Format::Yaml => "YAML",
    }
}

pub fn format_from_name(name: &str) -> Format {
    if name == "YAML" {
        Format::Yaml
    } else {
        Format::Json
    }
}

pub fn format_to_proto(format: Format) -> pb::DocumentFormat {
    match format {
        Format::Json => pb::DocumentFormat::Json,
        Format::Yaml => pb::DocumentFormat::Yaml,
    }
}

pub fn type_to_proto(name: &str) -> pb::DocumentType {
    match name {
        "Command" => pb::DocumentType::Command,
        "Automation" => pb::DocumentType::Automation,
        "Session" => pb::DocumentType::Session,
        _ => pb::DocumentType::Unspecified,
    }
}

/// The requested input format; UNSPECIFIED means detect it from the content.
pub fn requested_format(field: &str, value: i32, content: &str) -> Result<Format, ApiError> {
    match pb::DocumentFormat::try_from(value) {
        Ok(pb::DocumentFormat::Unspecified) => Ok(Format::detect(content)),
        Ok(pb::DocumentFormat::Json) => Ok(Format::Json),
        Ok(pb::DocumentFormat::Yaml) => Ok(Format::Yaml),
        Err(_) => Err(ApiError::invalid(field, "is not a known DocumentFormat")
            .with_reason("ValidationException")),
    }
}

/// Model errors as field violations on `content.<json path>`.
fn violations(errors: Vec<ValidationError>) -> Vec<FieldViolation> {
    errors
        .into_iter()
        .map(|error| FieldViolation {
            field: if error.path.is_empty() {
                "content".to_owned()
            } else {
                format!("content.{}", error.path)
            },
            rule: error.rule,
        })
        .collect()
}

fn invalid_content(errors: Vec<ValidationError>) -> ApiError {
    // The model reports an unknown schema as the only error, on `schemaVersion`.
    let unknown_schema = errors
        .iter()
        .any(|error| error.path == "schemaVersion" && error.rule.contains("schema version"));
    ApiError::InvalidArgument {
        violations: violations(errors),
        reason: Some(if unknown_schema {
            "InvalidDocumentSchemaVersion"
        } else {
            "InvalidDocumentContent"
        }),
    }
}

/// Linux, Windows, MacOS as SSM reports them: shell scripts do not run on Windows, every
/// other action the model supports (and any Session or Automation document) runs anywhere.
fn platform_types(document: &Document) -> Vec<&'static str> {
    if document.document_type() != DocumentType::Command || document.steps().is_empty() {
        return vec!["Windows", "Linux", "MacOS"];
    }
    let only_shell = document
        .steps()
        .iter()
        .all(|step| step.canonical_action == "aws:runShellScript");
    if only_shell {
        vec!["Linux", "MacOS"]
    } else {
        vec!["Windows", "Linux", "MacOS"]
    }
}

fn parameters_json(document: &Document) -> String {
    let parameters: Vec<serde_json::Value> = document
        .parameters()
        .values()
        .map(|definition| {
            serde_json::json!({
                "name": definition.name,
                "type": definition.parameter_type.as_str(),
                "description": definition.description.clone().unwrap_or_default(),
                "default_value": definition
                    .default
                    .as_ref()
                    .map(|value| value.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect();
    serde_json::Value::Array(parameters).to_string()
}

/// Parses the stored parameter summary back into the API's shape.
pub fn parameters_to_proto(stored: &str) -> Vec<pb::DocumentParameter> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(stored)
    else {
        return Vec::new();
    };
    let text = |item: &serde_json::Value, key: &str| {
        item.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    items
        .iter()
        .map(|item| pb::DocumentParameter {
            name: text(item, "name"),
            r#type: text(item, "type"),
            description: text(item, "description"),
            default_value: text(item, "default_value"),
        })
        .collect()
}

pub fn platform_types_to_proto(stored: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(stored).unwrap_or_default()
}

/// Checks content the way CreateDocument and UpdateDocument accept it: size, syntax,
/// schema, every action supported by Bosun, and (when given) the expected type.
pub fn check(
    content: &str,
    format: Format,
    expected_type: Option<DocumentType>,
    type_field: &str,
) -> Result<CheckedContent, ApiError> {
    if content.trim().is_empty() {
        return Err(
            ApiError::invalid("content", "is required").with_reason("InvalidDocumentContent")
        );
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::invalid(
            "content",
            format!(
                "is {} bytes, the limit is {MAX_CONTENT_BYTES}",
                content.len()
            ),
        )
        .with_reason("MaxDocumentSizeExceeded"));
    }
    let document = Document::parse_supported(content, format).map_err(invalid_content)?;
    if let Some(expected) = expected_type
        && document.document_type() != expected
    {
        return Err(ApiError::invalid(
            type_field,
            format!(
                "is {expected} but the content is a {} document (schema version {})",
                document.document_type(),
                document.schema_version()
            ),
        )
        .with_reason("InvalidDocumentContent"));
    }
    Ok(CheckedContent {
        sha256: sha256_hex(content.as_bytes()),
        parameters: parameters_json(&document),
        platform_types: serde_json::json!(platform_types(&document)).to_string(),
        format,
        document,
    })
}

/// The document type a request names; `None` for UNSPECIFIED (take it from the content).
pub fn requested_type(field: &str, value: i32) -> Result<Option<DocumentType>, ApiError> {
    match pb::DocumentType::try_from(value) {
        Ok(pb::DocumentType::Unspecified) => Ok(None),
        Ok(pb::DocumentType::Command) => Ok(Some(DocumentType::Command)),
        Ok(pb::DocumentType::Automation) => Ok(Some(DocumentType::Automation)),
        Ok(pb::DocumentType::Session) => Ok(Some(DocumentType::Session)),
        // The model has no Policy schema yet, so no content could match it.
        Ok(pb::DocumentType::Policy) => Err(ApiError::invalid(
            field,
            "Policy documents are not supported by Bosun yet",
        )
        .with_reason("InvalidDocumentContent")),
        Err(_) => Err(ApiError::invalid(field, "is not a known DocumentType")
            .with_reason("ValidationException")),
    }
}

/// Content in `format`: as stored when the format matches, else converted by the model.
pub fn convert(stored: &str, stored_format: Format, format: Format) -> Result<String, ApiError> {
    if stored_format == format {
        return Ok(stored.to_owned());
    }
    let document = Document::parse(stored, stored_format).map_err(|errors| {
        ApiError::internal(format!(
            "stored document content no longer parses: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    document
        .to_format(format)
        .map_err(|error| ApiError::internal(format!("convert document content: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schema_is_its_own_error() {
        let error = check(
            r#"{"schemaVersion": "9.9"}"#,
            Format::Json,
            None,
            "document_type",
        )
        .err()
        .map(tonic::Status::from);
        let status = error.expect("unknown schema is refused");
        assert_eq!(
            bosun_core::error::status_reason(&status).as_deref(),
            Some("InvalidDocumentSchemaVersion")
        );
        assert_eq!(
            bosun_core::error::status_violations(&status)[0].field,
            "content.schemaVersion"
        );
    }
}
