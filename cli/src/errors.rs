//! Turns any failure into the one line `main` prints after `error: `: gRPC statuses as
//! `<code>: <message>`, other errors as their context chain.

use std::fmt::Write;

use tonic::Code;

/// The lowercase words for a gRPC code, as operators read them in docs and logs.
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `permission denied: user/bob is not allowed ...`.
pub fn status_line(status: &tonic::Status) -> String {
    let message = status.message().trim();
    if message.is_empty() {
        code_words(status.code()).to_owned()
    } else {
        format!("{}: {message}", code_words(status.code()))
    }
}

/// The first gRPC status in the chain, if the failure was one.
pub fn find_status(err: &anyhow::Error) -> Option<&tonic::Status> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<tonic::Status>())
}

/// One line for the whole chain. A status ends the walk: its own sources (transport
/// errors) are already summed up in its message. Causes whose text the line already holds
/// are skipped, since hyper and tonic often repeat their inner error in their own.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<tonic::Status>() {
            Some(status) => status_line(status),
            None => cause.to_string(),
        };
        let text = text.trim();
        if !text.is_empty() && !line.contains(text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            let _ = write!(line, "{text}");
        }
        if cause.is::<tonic::Status>() {
            break;
        }
    }
    crate::output::printable(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_status_prints_code_and_message() {
        let err = anyhow::Error::new(tonic::Status::permission_denied(
            "user/bob is not allowed auth:CreateUser on user:carol",
        ));
        assert_eq!(
            one_line(&err),
            "permission denied: user/bob is not allowed auth:CreateUser on user:carol"
        );
    }

    #[test]
    fn context_comes_first_and_lines_stay_single() {
        let err = Err::<(), _>(tonic::Status::not_found("role ops\nnot found"))
            .context("cannot attach role ops to carol")
            .err()
            .map(|e| one_line(&e));
        assert_eq!(
            err.as_deref(),
            Some("cannot attach role ops to carol: not found: role ops not found")
        );
    }

    #[test]
    fn a_status_without_message_prints_its_code() {
        let err = anyhow::Error::new(tonic::Status::new(Code::Unavailable, ""));
        assert_eq!(one_line(&err), "unavailable");
    }

    #[test]
    fn repeated_causes_are_dropped() {
        let io = std::io::Error::other("connection refused");
        let err = anyhow::Error::new(io)
            .context("tcp connect error: connection refused")
            .context("cannot connect to http://127.0.0.1:1");
        assert_eq!(
            one_line(&err),
            "cannot connect to http://127.0.0.1:1: tcp connect error: connection refused"
        );
    }
}
