//! Request checks shared by the RPCs: every violation names the field and the rule, with
//! the stable error name SSM uses.

use bosun_core::ApiError;
use bosun_core::error::FieldViolation;

pub(crate) const VALIDATION: &str = "ValidationException";
pub(crate) const INVALID_DOCUMENT: &str = "InvalidDocument";
pub(crate) const INVALID_DOCUMENT_VERSION: &str = "InvalidDocumentVersion";
pub(crate) const INVALID_PARAMETERS: &str = "InvalidParameters";
pub(crate) const INVALID_INSTANCE_ID: &str = "InvalidInstanceId";
pub(crate) const DUPLICATE_INSTANCE_ID: &str = "DuplicateInstanceId";
pub(crate) const INVALID_OUTPUT_FOLDER: &str = "InvalidOutputFolder";
pub(crate) const INVALID_NOTIFICATION_CONFIG: &str = "InvalidNotificationConfig";
pub(crate) const INVALID_FILTER_KEY: &str = "InvalidFilterKey";
pub(crate) const INVALID_NEXT_TOKEN: &str = "InvalidNextToken";
pub(crate) const INVALID_COMMAND_ID: &str = "InvalidCommandId";
pub(crate) const INVOCATION_DOES_NOT_EXIST: &str = "InvocationDoesNotExist";
pub(crate) const INVALID_PLUGIN_NAME: &str = "InvalidPluginName";
pub(crate) const DUPLICATE_COMMAND: &str = "DuplicateCommand";

/// At most this many node ids in `instance_ids` (SendCommand, CancelCommand).
pub(crate) const MAX_INSTANCE_IDS: usize = 50;
/// Page size of the list RPCs.
pub(crate) const MAX_PAGE: usize = 50;

pub(crate) fn invalid(
    field: impl Into<String>,
    rule: impl Into<String>,
    reason: &'static str,
) -> ApiError {
    ApiError::invalid(field, rule).with_reason(reason)
}

/// Several violations under one error name.
pub(crate) fn violations(list: Vec<(String, String)>, reason: &'static str) -> ApiError {
    ApiError::InvalidArgument {
        violations: list
            .into_iter()
            .map(|(field, rule)| FieldViolation { field, rule })
            .collect(),
        reason: Some(reason),
    }
}

/// `mi-` and 17 lowercase hex digits.
pub(crate) fn is_node_id(value: &str) -> bool {
    bosun_inventory::validate::is_node_id(value)
}

/// A command id: a UUID in its 36-character form.
pub(crate) fn command_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() != 36 || uuid::Uuid::parse_str(value).is_err() {
        return Err(invalid(
            field,
            "must be a command id (a 36-character UUID)",
            INVALID_COMMAND_ID,
        ));
    }
    Ok(())
}

/// A node id in a request (`instance_id`).
pub(crate) fn node_id(field: &str, value: &str) -> Result<(), ApiError> {
    if !is_node_id(value) {
        return Err(invalid(
            field,
            "must be a node id (mi- and 17 hex digits)",
            INVALID_INSTANCE_ID,
        ));
    }
    Ok(())
}

/// 1-50; 0 means 50.
pub(crate) fn page_size(field: &str, value: i32) -> Result<usize, ApiError> {
    match value {
        0 => Ok(MAX_PAGE),
        1..=50 => Ok(usize::try_from(value).unwrap_or(MAX_PAGE)),
        _ => Err(invalid(field, "must be 1-50 (0 means 50)", VALIDATION)),
    }
}

/// `^[a-zA-Z0-9_\-.:/]{3,128}$`
pub(crate) fn document_name(field: &str, value: &str) -> Result<(), ApiError> {
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if !(3..=128).contains(&value.len()) || !chars_ok {
        return Err(invalid(
            field,
            "must be 3-128 characters of a-z, A-Z, 0-9 and _-.:/",
            VALIDATION,
        ));
    }
    Ok(())
}

/// A rate: `max_concurrency` or `max_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    Count(u64),
    Percent(u64),
}

impl Rate {
    /// `^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$` (`allow_zero`: also `0` and `0%`-`9%`),
    /// 1-7 characters.
    pub(crate) fn parse(value: &str, allow_zero: bool) -> Option<Rate> {
        if value.is_empty() || value.len() > 7 {
            return None;
        }
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if let Some(number) = value.strip_suffix('%') {
            if !digits(number) || (number.len() > 1 && number.starts_with('0')) {
                return None;
            }
            let percent: u64 = number.parse().ok()?;
            if percent > 100 || (percent == 0 && !allow_zero) {
                return None;
            }
            return Some(Rate::Percent(percent));
        }
        if !digits(value) || (value.len() > 1 && value.starts_with('0')) {
            return None;
        }
        let count: u64 = value.parse().ok()?;
        if count == 0 && !allow_zero {
            return None;
        }
        Some(Rate::Count(count))
    }

    /// The concurrency limit for `targets` nodes: a percentage rounds up, and it is at
    /// least 1 (10% of 5 nodes is 1).
    pub(crate) fn concurrency_limit(self, targets: u64) -> i32 {
        let limit = match self {
            Rate::Count(count) => count,
            Rate::Percent(percent) => (targets * percent).div_ceil(100),
        };
        i32::try_from(limit.max(1)).unwrap_or(i32::MAX)
    }

    /// The error limit for `targets` nodes: a percentage rounds down (SSM: 10% of 50 is 5,
    /// the run stops at the 6th error).
    pub(crate) fn error_limit(self, targets: u64) -> i32 {
        let limit = match self {
            Rate::Count(count) => count,
            Rate::Percent(percent) => targets * percent / 100,
        };
        i32::try_from(limit).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_ssm_patterns() {
        assert_eq!(Rate::parse("50", false), Some(Rate::Count(50)));
        assert_eq!(Rate::parse("10%", false), Some(Rate::Percent(10)));
        assert_eq!(Rate::parse("100%", false), Some(Rate::Percent(100)));
        for bad in ["0", "0%", "101%", "05", "", "1.5", "12345678", "-1", "%"] {
            assert_eq!(Rate::parse(bad, false), None, "{bad}");
        }
        assert_eq!(Rate::parse("0", true), Some(Rate::Count(0)));
        assert_eq!(Rate::parse("0%", true), Some(Rate::Percent(0)));
        assert_eq!(Rate::parse("00", true), None);
    }

    #[test]
    fn limits_round_as_documented() {
        assert_eq!(Rate::Percent(10).error_limit(50), 5);
        assert_eq!(Rate::Percent(10).error_limit(9), 0);
        assert_eq!(Rate::Percent(10).concurrency_limit(5), 1);
        assert_eq!(Rate::Percent(10).concurrency_limit(11), 2);
        assert_eq!(Rate::Percent(1).concurrency_limit(0), 1);
        assert_eq!(Rate::Count(50).concurrency_limit(3), 50);
    }
}
