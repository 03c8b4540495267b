//! `AuthError`: what can go wrong while authenticating or authorizing a call, and how each
//! kind maps onto `bosun_core::ApiError` (and from there, the one place, onto a gRPC code).

use bosun_core::ApiError;

use crate::policy::PolicyError;

/// An authentication or authorization failure.
///
/// Messages never contain token content: a token is a bearer credential, and error messages
/// end up in logs and in responses.
#[derive(thiserror::Error, Debug)]
pub enum AuthError {
    /// The call carried no bearer token.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, badly signed, or has the wrong issuer, audience or key id.
    /// The reason is generic, e.g. `bad signature`.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token's `exp` has passed (beyond the verifier's leeway).
    #[error("token expired")]
    Expired,
    /// The principal is authenticated but no policy allows the action on the resource.
    #[error("{principal} is not allowed {action} on {resource}")]
    PermissionDenied {
        principal: String,
        action: String,
        resource: String,
    },
    /// A principal string that is not `<kind>/<name>`. Not in the spec's list: it lets the
    /// gateway parse principals from user input without reporting them as bad tokens.
    #[error("invalid principal: {0}")]
    InvalidPrincipal(String),
    /// A signing or verifying key could not be made, loaded or stored.
    #[error("signing key: {0}")]
    Key(String),
    /// A policy document broke a rule.
    #[error("invalid policy document: {0}")]
    Policy(#[from] PolicyError),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::MissingToken | AuthError::InvalidToken(_) | AuthError::Expired => {
                ApiError::Unauthenticated(error.to_string())
            }
            AuthError::PermissionDenied { .. } => ApiError::PermissionDenied(error.to_string()),
            AuthError::InvalidPrincipal(rule) => ApiError::invalid("principal", rule),
            AuthError::Policy(policy_error) => {
                ApiError::invalid("policy_document", policy_error.to_string())
            }
            // Key trouble is a server fault; `internal` logs it and hides the cause.
            AuthError::Key(_) => ApiError::internal(error),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        ApiError::from(error).into()
    }
}
