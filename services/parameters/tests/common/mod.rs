//! Helpers shared by the integration tests: read an error as a client would.

#![allow(dead_code)]

use bosun_core::error::{ApiError, status_reason, status_violations};

/// The SSM error name a client would see in `ErrorInfo.reason`.
pub fn reason(error: ApiError) -> Option<String> {
    status_reason(&tonic::Status::from(error))
}

/// (gRPC code, SSM error name, message) as a client would see them.
pub fn seen(error: ApiError) -> (tonic::Code, Option<String>, String) {
    let status = tonic::Status::from(error);
    (
        status.code(),
        status_reason(&status),
        status.message().to_owned(),
    )
}

/// The fields named by field violations.
pub fn fields(error: ApiError) -> Vec<String> {
    status_violations(&tonic::Status::from(error))
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// Error messages are lowercase-led and have no trailing period.
pub fn assert_message_style(message: &str) {
    assert!(!message.ends_with('.'), "trailing period: {message}");
    let first = message.chars().next().unwrap_or('x');
    assert!(!first.is_uppercase(), "capitalised message: {message}");
}
