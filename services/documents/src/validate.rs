//! Checks on request fields, with SSM's patterns and limits, and the limits this service
//! enforces.

use std::collections::BTreeMap;

use bosun_core::ApiError;

/// SSM: "at most 500 active SSM documents" per account; a Bosun install is one account.
pub const MAX_DOCUMENTS: u64 = 500;
/// SSM's quota page: 1,000 versions per document.
pub const MAX_VERSIONS_PER_DOCUMENT: u64 = 1000;
/// SSM: at most 1,000 accounts a private document is shared with.
pub const MAX_SHARES_PER_DOCUMENT: u64 = 1000;
/// SSM: at most 20 accounts per ModifyDocumentPermission list.
pub const MAX_PRINCIPALS_PER_CALL: usize = 20;
/// Per document, as the API promises.
pub const MAX_TAGS_PER_DOCUMENT: usize = 50;
pub const MAX_DISPLAY_NAME: usize = 1024;
pub const MAX_TARGET_TYPE: usize = 200;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
/// Name prefixes reserved for built-in and SSM documents, compared without case.
pub const RESERVED_PREFIXES: &[&str] = &["aws", "amazon", "amzn", "bosun"];

/// A generic field error, named as SSM names its request validation failures.
pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason("ValidationException")
}

fn name_chars(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// `^[a-zA-Z0-9_\-.]{3,128}$`: any document name, built-in ones included.
pub fn document_name(field: &str, value: &str) -> Result<(), ApiError> {
    if !(3..=128).contains(&value.len()) || !name_chars(value) {
        return Err(invalid(
            field,
            "must be 3-128 characters of letters, digits and _-.",
        ));
    }
    Ok(())
}

/// A name for a new user document: the pattern, and no reserved prefix.
pub fn new_document_name(field: &str, value: &str) -> Result<(), ApiError> {
    document_name(field, value)?;
    let lower = value.to_ascii_lowercase();
    if let Some(prefix) = RESERVED_PREFIXES
        .iter()
        .find(|prefix| lower.starts_with(*prefix))
    {
        return Err(invalid(
            field,
            format!("may not start with {prefix} (any case): the prefix is reserved"),
        ));
    }
    Ok(())
}

/// `^[a-zA-Z0-9_\-.]{1,128}$`; empty means none.
pub fn version_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 128 || !name_chars(value) {
        return Err(invalid(
            field,
            "must be 1-128 characters of letters, digits and _-.",
        ));
    }
    Ok(())
}

/// `^[\w\.\-\:\/ ]*$`, at most 1024 characters.
pub fn display_name(field: &str, value: &str) -> Result<(), ApiError> {
    let valid = value
        .chars()
        .all(|c| c.is_alphanumeric() || "_.-:/ ".contains(c));
    if value.chars().count() > MAX_DISPLAY_NAME || !valid {
        return Err(invalid(
            field,
            format!(
                "must be at most {MAX_DISPLAY_NAME} characters of letters, digits and _.-:/ and space"
            ),
        ));
    }
    Ok(())
}

/// `^\/[\w\.\-\:\/]*$`, at most 200 characters; empty means none.
pub fn target_type(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Ok(());
    }
    let valid = value.starts_with('/')
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "_.-:/".contains(c));
    if value.len() > MAX_TARGET_TYPE || !valid {
        return Err(invalid(
            field,
            format!(
                "must start with / and be at most {MAX_TARGET_TYPE} characters of letters, digits and _.-:/"
            ),
        ));
    }
    Ok(())
}

/// A positive version number as SSM writes them: `^[1-9][0-9]*$`.
pub fn version_number(value: &str) -> Option<i32> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<i32>().ok().filter(|number| *number > 0)
}

pub fn tag_key(field: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY || key.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("must be 1-{MAX_TAG_KEY} characters without control characters"),
        ));
    }
    Ok(())
}

/// Tags from a request, keyed; a key given twice keeps its last value, as SSM does.
pub fn tags(
    field: &str,
    tags: &[bosun_proto::documents::v1::Tag],
) -> Result<BTreeMap<String, String>, ApiError> {
    if tags.len() > MAX_TAGS_PER_DOCUMENT {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_TAGS_PER_DOCUMENT} tags per document"),
        )
        .with_reason("TooManyTagsError"));
    }
    let mut keyed = BTreeMap::new();
    for (index, tag) in tags.iter().enumerate() {
        tag_key(&format!("{field}[{index}].key"), &tag.key)?;
        if tag.value.chars().count() > MAX_TAG_VALUE || tag.value.chars().any(char::is_control) {
            return Err(invalid(
                format!("{field}[{index}].value"),
                format!("must be at most {MAX_TAG_VALUE} characters without control characters"),
            ));
        }
        keyed.insert(tag.key.clone(), tag.value.clone());
    }
    Ok(keyed)
}

/// `user/<name>`, `role/<name>` or `All`.
pub fn share_principal(field: &str, value: &str) -> Result<(), ApiError> {
    if value == "All" {
        return Ok(());
    }
    let name = value
        .strip_prefix("user/")
        .or_else(|| value.strip_prefix("role/"));
    let valid = name.is_some_and(|name| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    });
    if !valid {
        return Err(invalid(field, "must be user/<name>, role/<name> or All"));
    }
    Ok(())
}

/// Page size from `max_results`: 0 means `max`.
pub fn page_size(value: i32, max: i32) -> Result<u64, ApiError> {
    match value {
        0 => Ok(u64::try_from(max).unwrap_or(50)),
        n if (1..=max).contains(&n) => Ok(u64::try_from(n).unwrap_or(50)),
        _ => Err(invalid("max_results", format!("must be 1-{max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_prefixes_are_refused_in_any_case() {
        for name in [
            "AWS-Mine", "aws-mine", "Amazon.x", "AMZN_1", "bosun-x", "BoSuN",
        ] {
            assert!(new_document_name("name", name).is_err(), "{name}");
        }
        assert!(new_document_name("name", "my-doc.v1_x").is_ok());
        assert!(document_name("name", "AWS-RunShellScript").is_ok());
        assert!(document_name("name", "ab").is_err());
        assert!(document_name("name", "a b c").is_err());
    }

    #[test]
    fn version_numbers_follow_ssm_pattern() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        for bad in ["0", "01", "-1", "", "$LATEST", "1.0", "99999999999"] {
            assert_eq!(version_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn share_principals_are_users_roles_or_all() {
        for good in ["All", "user/bob", "role/ops"] {
            assert!(share_principal("p", good).is_ok(), "{good}");
        }
        for bad in ["all", "bob", "user/", "node/mi-1", "role/a b"] {
            assert!(share_principal("p", bad).is_err(), "{bad}");
        }
    }
}
