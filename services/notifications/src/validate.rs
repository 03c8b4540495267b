//! Checks on request fields, each naming the field and the rule, and the limits this service
//! enforces. Proto filters become a checked [`Filters`] here, so handlers and workers never
//! see an unchecked value.

use bosun_core::ApiError;
use bosun_proto::notifications::v1 as pb;
use serde::{Deserialize, Serialize};

/// At most this many webhooks in an installation.
pub const MAX_WEBHOOKS: u64 = 100;
pub const MAX_URL_LENGTH: usize = 2048;
pub const MAX_DESCRIPTION_LENGTH: usize = 1024;
/// Per filter list.
pub const MAX_FILTER_VALUES: usize = 20;
pub const MAX_PREFIX_LENGTH: usize = 2048;
/// The event sources that publish today.
pub const KNOWN_SOURCES: &[&str] = &["parameters", "commands"];
/// The operations the Parameter Store and Run Command publish.
pub const KNOWN_OPERATIONS: &[&str] = &[
    "Create",
    "Update",
    "Delete",
    "LabelParameterVersion",
    "UnlabelParameterVersion",
    "Expired",
    "ExpirationNotification",
    "NoChangeNotification",
    "CommandStatusChange",
    "InvocationStatusChange",
];

pub const REASON_VALIDATION: &str = "ValidationException";
pub const REASON_URL: &str = "InvalidWebhookUrl";
pub const REASON_FILTER: &str = "InvalidWebhookFilter";
pub const REASON_NOT_FOUND: &str = "WebhookNotFound";
pub const REASON_LIMIT: &str = "WebhookLimitExceeded";
pub const REASON_NEXT_TOKEN: &str = "InvalidNextToken";

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(REASON_VALIDATION)
}

/// An http or https URL with a host, no user info, at most 2048 characters; returns it in
/// the normalized form it is stored and called in (`HTTPS://Example.com` is
/// `https://example.com/`).
pub fn url(field: &str, value: &str) -> Result<String, ApiError> {
    let bad = |rule: &str| ApiError::invalid(field, rule).with_reason(REASON_URL);
    if value.is_empty() {
        return Err(bad("is required"));
    }
    if value.len() > MAX_URL_LENGTH {
        return Err(bad("must be at most 2048 characters"));
    }
    let parsed = url::Url::parse(value).map_err(|_| bad("is not a valid absolute url"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("must have a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not contain user info (user:password@)"));
    }
    let normalized = String::from(parsed);
    if normalized.len() > MAX_URL_LENGTH {
        return Err(bad("must be at most 2048 characters"));
    }
    Ok(normalized)
}

/// At most 1024 characters.
pub fn description(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().count() > MAX_DESCRIPTION_LENGTH {
        return Err(invalid(field, "must be at most 1024 characters"));
    }
    Ok(())
}

/// A webhook id as the server issues them: UUID text.
pub fn webhook_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if uuid::Uuid::try_parse(value).is_err() || value.len() != 36 {
        return Err(invalid(
            field,
            "must be a webhook id issued by the server (uuid)",
        ));
    }
    Ok(())
}

/// A page size: 0 means `max`, otherwise 1 to `max`.
pub fn page_size(field: &str, value: i32, max: i32) -> Result<u64, ApiError> {
    match value {
        0 => Ok(u64::try_from(max).unwrap_or(50)),
        n if (1..=max).contains(&n) => Ok(u64::try_from(n).unwrap_or(50)),
        _ => Err(invalid(field, format!("must be 0 to {max}"))),
    }
}

/// Which events a webhook receives; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub sources: Vec<String>,
    pub operations: Vec<String>,
    pub name_prefixes: Vec<String>,
}

impl Filters {
    /// Checks every list of `filters` (field paths under `field`), dropping duplicates.
    pub fn parse(field: &str, filters: Option<&pb::WebhookFilters>) -> Result<Filters, ApiError> {
        let Some(filters) = filters else {
            return Ok(Filters::default());
        };
        let sources = filter_list(&format!("{field}.sources"), &filters.sources, |value| {
            KNOWN_SOURCES.contains(&value).then_some(()).ok_or_else(|| {
                format!(
                    "{value:?} is not a known source ({})",
                    KNOWN_SOURCES.join(", ")
                )
            })
        })?;
        let operations = filter_list(
            &format!("{field}.operations"),
            &filters.operations,
            |value| {
                KNOWN_OPERATIONS
                    .contains(&value)
                    .then_some(())
                    .ok_or_else(|| {
                        format!(
                            "{value:?} is not a known operation ({})",
                            KNOWN_OPERATIONS.join(", ")
                        )
                    })
            },
        )?;
        let name_prefixes = filter_list(
            &format!("{field}.name_prefixes"),
            &filters.name_prefixes,
            |value| {
                if !value.starts_with('/') {
                    Err(format!("{value:?} must start with /"))
                } else if value.len() > MAX_PREFIX_LENGTH {
                    Err("a prefix must be at most 2048 characters".to_owned())
                } else {
                    Ok(())
                }
            },
        )?;
        Ok(Filters {
            sources,
            operations,
            name_prefixes,
        })
    }

    /// Whether an event passes all three lists.
    pub fn matches(&self, source: &str, operation: &str, name: &str) -> bool {
        (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
            && (self.operations.is_empty() || self.operations.iter().any(|o| o == operation))
            && (self.name_prefixes.is_empty()
                || self
                    .name_prefixes
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str())))
    }

    pub fn to_proto(&self) -> pb::WebhookFilters {
        pb::WebhookFilters {
            sources: self.sources.clone(),
            operations: self.operations.clone(),
            name_prefixes: self.name_prefixes.clone(),
        }
    }
}

fn filter_list(
    field: &str,
    values: &[String],
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_FILTER_VALUES {
        return Err(
            ApiError::invalid(field, "must have at most 20 values").with_reason(REASON_FILTER)
        );
    }
    let mut kept: Vec<String> = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        check(value).map_err(|rule| {
            ApiError::invalid(format!("{field}[{index}]"), rule).with_reason(REASON_FILTER)
        })?;
        if !kept.contains(value) {
            kept.push(value.clone());
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::InvalidArgument { violations, .. } => violations[0].field.clone(),
            other => format!("not invalid: {other}"),
        }
    }

    #[test]
    fn urls_follow_the_rules() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.com/a?b=c",
            "https://[::1]/x",
        ] {
            assert!(url("url", good).is_ok(), "{good}");
        }
        assert_eq!(
            url("url", "HTTPS://Example.COM").ok().as_deref(),
            Some("https://example.com/")
        );
        for bad in [
            "",
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "http://",
            "not a url",
            "/relative",
            "mailto:ops@example.com",
        ] {
            let error = url("url", bad).expect_err(bad);
            assert_eq!(field_of(error), "url", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LENGTH));
        assert!(url("url", &long).is_err());
    }

    #[test]
    fn filters_name_the_offending_value() {
        let parsed = Filters::parse(
            "filters",
            Some(&pb::WebhookFilters {
                sources: vec!["parameters".into(), "parameters".into()],
                operations: vec!["Update".into()],
                name_prefixes: vec!["/app/".into()],
            }),
        )
        .expect("valid");
        assert_eq!(parsed.sources, ["parameters"]);
        let error = Filters::parse(
            "filters",
            Some(&pb::WebhookFilters {
                operations: vec!["Update".into(), "Explode".into()],
                ..Default::default()
            }),
        )
        .expect_err("unknown operation");
        assert_eq!(field_of(error), "filters.operations[1]");
        let error = Filters::parse(
            "filters",
            Some(&pb::WebhookFilters {
                name_prefixes: vec!["app".into()],
                ..Default::default()
            }),
        )
        .expect_err("relative prefix");
        assert_eq!(field_of(error), "filters.name_prefixes[0]");
        let error = Filters::parse(
            "filters",
            Some(&pb::WebhookFilters {
                sources: vec!["parameters".into(); 21],
                ..Default::default()
            }),
        )
        .expect_err("too many");
        assert_eq!(field_of(error), "filters.sources");
    }

    #[test]
    fn empty_lists_match_everything_and_all_lists_must_match() {
        assert!(Filters::default().matches("parameters", "Delete", "/x"));
        let filters = Filters {
            sources: vec!["parameters".into()],
            operations: vec!["Update".into(), "Create".into()],
            name_prefixes: vec!["/app/prod/".into()],
        };
        assert!(filters.matches("parameters", "Update", "/app/prod/db"));
        assert!(!filters.matches("parameters", "Delete", "/app/prod/db"));
        assert!(!filters.matches("parameters", "Update", "/app/dev/db"));
        assert!(!filters.matches("documents", "Update", "/app/prod/db"));
    }

    #[test]
    fn ids_descriptions_and_pages() {
        assert!(webhook_id("webhook_id", &uuid::Uuid::now_v7().to_string()).is_ok());
        assert_eq!(
            field_of(webhook_id("webhook_id", "nope").expect_err("bad")),
            "webhook_id"
        );
        assert!(description("description", &"é".repeat(1024)).is_ok());
        assert!(description("description", &"a".repeat(1025)).is_err());
        assert_eq!(page_size("max_results", 0, 50).ok(), Some(50));
        assert!(page_size("max_results", 51, 50).is_err());
        assert!(page_size("max_results", -1, 50).is_err());
    }
}
