//! Validation errors that name the JSON path and the rule broken, and resolver errors.

use std::fmt;

/// One problem found in a document or in supplied parameter values.
///
/// `path` is a JSON path into the document (`mainSteps[1].inputs.runCommand`) or, for
/// supplied values, `parameters.<name>`; empty when the content as a whole is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub rule: String,
}

impl ValidationError {
    pub fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

impl std::error::Error for ValidationError {}

/// Why a `{{ssm:...}}` reference could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("parameter not found")]
    NotFound,
    #[error("version not found")]
    VersionNotFound,
    #[error("access denied")]
    AccessDenied,
    /// SecureString values may not be interpolated into documents.
    #[error("secure string parameters cannot be referenced here")]
    SecureString,
    #[error("{0}")]
    Other(String),
}

/// Collects every error found in one pass so callers see all of them at once.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<ValidationError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, rule: impl Into<String>) {
        self.0.push(ValidationError::new(path, rule));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Vec<ValidationError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// Joins a JSON path and an object key.
pub(crate) fn key_path(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

/// Joins a JSON path and an array index.
pub(crate) fn index_path(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}
