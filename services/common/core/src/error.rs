//! `ApiError`: the errors a Bosun RPC can return, and the one place they become `tonic::Status`.
//!
//! Handlers never build a `Status` by hand: a service's own error enum converts into
//! `ApiError`, and `From<ApiError> for Status` picks the code. Field violations travel as
//! `google.rpc.BadRequest` details, and a stable error name (SSM's, where one exists, such as
//! `ParameterNotFound`) travels as `google.rpc.ErrorInfo.reason` so clients can branch on it.

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The domain that `ErrorInfo` details carry.
pub const ERROR_DOMAIN: &str = "bosun.dev";

/// One field of a request that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `name` or `policies[2].type`.
    pub field: String,
    /// The rule broken, e.g. `must be 1-2048 characters`.
    pub rule: String,
}

/// An error as the API reports it. Messages are lowercase, with no trailing period, and say
/// what was attempted on what.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more request fields are invalid.
    #[error("{}", invalid_message(.violations))]
    InvalidArgument {
        violations: Vec<FieldViolation>,
        reason: Option<&'static str>,
    },
    #[error("{message}")]
    NotFound {
        message: String,
        reason: Option<&'static str>,
    },
    #[error("{message}")]
    AlreadyExists {
        message: String,
        reason: Option<&'static str>,
    },
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        reason: Option<&'static str>,
    },
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        reason: Option<&'static str>,
    },
    #[error("{message}")]
    Aborted {
        message: String,
        reason: Option<&'static str>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a backend failure. The message is logged where this is created; the client
    /// sees a generic message so internals (SQL, paths) never leak.
    #[error("internal error: {0}")]
    Internal(String),
}

fn invalid_message(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.rule))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            violations: vec![FieldViolation {
                field: field.into(),
                rule: rule.into(),
            }],
            reason: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound {
            message: message.into(),
            reason: None,
        }
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        ApiError::AlreadyExists {
            message: message.into(),
            reason: None,
        }
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        ApiError::FailedPrecondition {
            message: message.into(),
            reason: None,
        }
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        ApiError::ResourceExhausted {
            message: message.into(),
            reason: None,
        }
    }

    /// Wraps a backend failure; logs it here, once, since the client will not see it.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        let message = error.to_string();
        tracing::error!(error = %message, "internal error");
        ApiError::Internal(message)
    }

    /// Attaches a stable error name (`ErrorInfo.reason`), e.g. SSM's `ParameterNotFound`.
    pub fn with_reason(mut self, name: &'static str) -> Self {
        match &mut self {
            ApiError::InvalidArgument { reason, .. }
            | ApiError::NotFound { reason, .. }
            | ApiError::AlreadyExists { reason, .. }
            | ApiError::FailedPrecondition { reason, .. }
            | ApiError::ResourceExhausted { reason, .. }
            | ApiError::Aborted { reason, .. } => *reason = Some(name),
            ApiError::Unauthenticated(_)
            | ApiError::PermissionDenied(_)
            | ApiError::Unavailable(_)
            | ApiError::Internal(_) => {}
        }
        self
    }

    /// The gRPC code this error maps to. The one exhaustive table in Bosun.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Aborted { .. } => Code::Aborted,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    fn reason(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidArgument { reason, .. }
            | ApiError::NotFound { reason, .. }
            | ApiError::AlreadyExists { reason, .. }
            | ApiError::FailedPrecondition { reason, .. }
            | ApiError::ResourceExhausted { reason, .. }
            | ApiError::Aborted { reason, .. } => *reason,
            _ => None,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let message = match &error {
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let mut details = ErrorDetails::new();
        let mut has_details = false;
        if let ApiError::InvalidArgument { violations, .. } = &error {
            for violation in violations {
                details.add_bad_request_violation(violation.field.clone(), violation.rule.clone());
                has_details = true;
            }
        }
        if let Some(reason) = error.reason() {
            details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
            has_details = true;
        }
        if !has_details {
            tonic::Status::new(code, message)
        } else {
            tonic::Status::with_error_details(code, message, details)
        }
    }
}

/// Reads the stable error name (`ErrorInfo.reason`) from a status, for clients and tests.
pub fn status_reason(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// Reads the field violations from a status, for clients and tests.
pub fn status_violations(status: &tonic::Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: v.field,
                    rule: v.description,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status: tonic::Status = ApiError::invalid("username", "must be 1-64 characters").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "username: must be 1-64 characters");
        assert_eq!(
            status_violations(&status),
            vec![FieldViolation {
                field: "username".into(),
                rule: "must be 1-64 characters".into()
            }]
        );
    }

    #[test]
    fn reason_travels_as_error_info() {
        let status: tonic::Status = ApiError::not_found("parameter /a not found")
            .with_reason("ParameterNotFound")
            .into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status_reason(&status).as_deref(), Some("ParameterNotFound"));
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status: tonic::Status = ApiError::internal("relation \"users\" does not exist").into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
