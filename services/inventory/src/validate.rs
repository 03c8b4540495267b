//! Checks on request fields, each naming the field and the rule; the limits and the stable
//! error names of this service. Proto values become checked domain values here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_core::ApiError;
use bosun_proto::agent::v1::HostFacts;
use bosun_proto::inventory::v1 as pb;
use serde::{Deserialize, Serialize};

pub const REASON_VALIDATION: &str = "ValidationException";
pub const REASON_INVALID_ACTIVATION: &str = "InvalidActivation";
pub const REASON_ACTIVATION_EXPIRED: &str = "ActivationExpired";
pub const REASON_ACTIVATION_LIMIT: &str = "ActivationLimitExceeded";
pub const REASON_INVALID_INSTANCE: &str = "InvalidInstanceId";
pub const REASON_INVALID_FILTER: &str = "InvalidFilter";
pub const REASON_INVALID_TARGET: &str = "InvalidTarget";
pub const REASON_NEXT_TOKEN: &str = "InvalidNextToken";
pub const REASON_TOO_MANY_TAGS: &str = "TooManyTagsError";
pub const REASON_GROUP_NOT_FOUND: &str = "GroupNotFound";
pub const REASON_GROUP_EXISTS: &str = "GroupAlreadyExists";

pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_LENGTH: usize = 128;
pub const MAX_TAG_VALUE_LENGTH: usize = 256;
pub const MAX_ACTIVATION_TEXT: usize = 256;
pub const MAX_REGISTRATION_LIMIT: i32 = 1000;
pub const MAX_FILTER_VALUES: usize = 100;
pub const MAX_IP_ADDRESSES: usize = 32;
pub const MAX_FACT_LENGTH: usize = 256;
pub const MAX_GROUP_NAME_LENGTH: usize = 128;
pub const MAX_GROUP_DESCRIPTION_LENGTH: usize = 512;
pub const MAX_GROUP_TAG_FILTERS: usize = 50;
pub const MAX_GROUP_TAG_VALUES: usize = 20;
/// The resource type of nodes in tag RPCs and InstanceInformation.
pub const RESOURCE_TYPE_NODE: &str = "ManagedInstance";
/// The resource type of nodes in resource groups.
pub const GROUP_RESOURCE_TYPE_NODE: &str = "Bosun::Node";
pub const PLATFORM_TYPES: &[&str] = &["Linux", "MacOS", "Windows"];

/// A `ValidationException` on one field.
pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(REASON_VALIDATION)
}

/// Letters, digits, spaces and `_ . : / = + - @`, the characters of tag keys and values.
fn tag_character(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

/// A tag key: 1-128 characters of the tag set, not starting with `aws:` or `bosun:`.
/// Returns the rule broken.
pub fn tag_key_rule(key: &str) -> Result<(), String> {
    let length = key.chars().count();
    if length == 0 || length > MAX_TAG_KEY_LENGTH {
        return Err(format!("must be 1-{MAX_TAG_KEY_LENGTH} characters"));
    }
    if !key.chars().all(tag_character) {
        return Err("may contain only letters, digits, spaces and _ . : / = + - @".to_owned());
    }
    let lower = key.to_ascii_lowercase();
    if lower.starts_with("aws:") || lower.starts_with("bosun:") {
        return Err("must not start with aws: or bosun:".to_owned());
    }
    Ok(())
}

/// A tag value: 0-256 characters of the tag set.
pub fn tag_value_rule(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_TAG_VALUE_LENGTH {
        return Err(format!("must be at most {MAX_TAG_VALUE_LENGTH} characters"));
    }
    if !value.chars().all(tag_character) {
        return Err("may contain only letters, digits, spaces and _ . : / = + - @".to_owned());
    }
    Ok(())
}

/// Checked tags (the last of a repeated key wins), at most 50.
pub fn tags(field: &str, tags: &[pb::Tag]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut checked = BTreeMap::new();
    for (index, tag) in tags.iter().enumerate() {
        tag_key_rule(&tag.key).map_err(|rule| invalid(format!("{field}[{index}].key"), rule))?;
        tag_value_rule(&tag.value)
            .map_err(|rule| invalid(format!("{field}[{index}].value"), rule))?;
        checked.insert(tag.key.clone(), tag.value.clone());
    }
    if checked.len() > MAX_TAGS {
        return Err(too_many_tags(field));
    }
    Ok(checked)
}

pub fn too_many_tags(field: &str) -> ApiError {
    ApiError::invalid(field, format!("a node has at most {MAX_TAGS} tags"))
        .with_reason(REASON_TOO_MANY_TAGS)
}

pub fn tags_to_proto(tags: &BTreeMap<String, String>) -> Vec<pb::Tag> {
    tags.iter()
        .map(|(key, value)| pb::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// At most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// A page size: 0 means `default`, otherwise 1 to `max`.
pub fn page_size(field: &str, value: i32, default: usize, max: usize) -> Result<usize, ApiError> {
    match usize::try_from(value) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(invalid(field, format!("must be 0 to {max}"))),
    }
}

/// Whether `value` has the form of a node id: `mi-` and 17 lowercase hex digits.
pub fn is_node_id(value: &str) -> bool {
    value.len() == 20
        && value.starts_with("mi-")
        && value[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A node id in a request; a malformed one is reported as an unknown node.
pub fn node_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if !is_node_id(value) {
        return Err(node_not_found(value));
    }
    Ok(())
}

pub fn node_not_found(node_id: &str) -> ApiError {
    ApiError::not_found(format!("node {node_id} not found")).with_reason(REASON_INVALID_INSTANCE)
}

/// `resource_type` of the tag RPCs: only nodes carry tags here.
pub fn node_resource_type(value: &str) -> Result<(), ApiError> {
    if value != RESOURCE_TYPE_NODE {
        return Err(invalid("resource_type", "must be ManagedInstance"));
    }
    Ok(())
}

/// The facts a node reports, on registration and on connect.
pub fn host_facts(field: &str, facts: &HostFacts) -> Result<(), ApiError> {
    if !PLATFORM_TYPES.contains(&facts.platform_type.as_str()) {
        return Err(invalid(
            format!("{field}.platform_type"),
            "must be Linux, MacOS or Windows",
        ));
    }
    for (name, value) in [
        ("platform_name", &facts.platform_name),
        ("platform_version", &facts.platform_version),
        ("hostname", &facts.hostname),
        ("agent_version", &facts.agent_version),
        ("architecture", &facts.architecture),
    ] {
        if value.chars().count() > MAX_FACT_LENGTH || value.chars().any(char::is_control) {
            return Err(invalid(
                format!("{field}.{name}"),
                format!(
                    "must be at most {MAX_FACT_LENGTH} characters, none of them control characters"
                ),
            ));
        }
    }
    if facts.ip_addresses.len() > MAX_IP_ADDRESSES {
        return Err(invalid(
            format!("{field}.ip_addresses"),
            format!("must have at most {MAX_IP_ADDRESSES} addresses"),
        ));
    }
    for (index, address) in facts.ip_addresses.iter().enumerate() {
        if address.parse::<IpAddr>().is_err() {
            return Err(invalid(
                format!("{field}.ip_addresses[{index}]"),
                "must be an IPv4 or IPv6 address",
            ));
        }
    }
    Ok(())
}

/// A resource group name: 1-128 characters of letters, digits, `.`, `_` and `-`.
pub fn group_name_rule(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LENGTH {
        return Err(format!("must be 1-{MAX_GROUP_NAME_LENGTH} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err("may contain only letters, digits, . _ and -".to_owned());
    }
    Ok(())
}

pub fn group_name(field: &str, name: &str) -> Result<(), ApiError> {
    group_name_rule(name).map_err(|rule| invalid(field, rule))
}

pub fn group_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("resource group {name} not found"))
        .with_reason(REASON_GROUP_NOT_FOUND)
}

/// One tag filter of a group: nodes with the key and, when `values` is not empty, one of
/// the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTagFilter {
    pub key: String,
    pub values: Vec<String>,
}

/// A checked resource query: the tag filters are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupQuery {
    pub resource_type_filters: Vec<String>,
    pub tag_filters: Vec<GroupTagFilter>,
}

impl GroupQuery {
    pub fn parse(field: &str, query: Option<&pb::ResourceQuery>) -> Result<GroupQuery, ApiError> {
        let Some(query) = query else {
            return Err(invalid(field, "is required"));
        };
        let mut resource_type_filters = Vec::new();
        for (index, kind) in query.resource_type_filters.iter().enumerate() {
            if !matches!(
                kind.as_str(),
                "Bosun::Node"
                    | "AWS::SSM::ManagedInstance"
                    | "Bosun::AllSupported"
                    | "AWS::AllSupported"
            ) {
                return Err(invalid(
                    format!("{field}.resource_type_filters[{index}]"),
                    "must be Bosun::Node, AWS::SSM::ManagedInstance, Bosun::AllSupported or AWS::AllSupported",
                ));
            }
            if !resource_type_filters.contains(kind) {
                resource_type_filters.push(kind.clone());
            }
        }
        if query.tag_filters.is_empty() || query.tag_filters.len() > MAX_GROUP_TAG_FILTERS {
            return Err(invalid(
                format!("{field}.tag_filters"),
                format!("must have 1-{MAX_GROUP_TAG_FILTERS} filters"),
            ));
        }
        let mut tag_filters = Vec::with_capacity(query.tag_filters.len());
        for (index, filter) in query.tag_filters.iter().enumerate() {
            let at = format!("{field}.tag_filters[{index}]");
            tag_key_rule(&filter.key).map_err(|rule| invalid(format!("{at}.key"), rule))?;
            if filter.values.len() > MAX_GROUP_TAG_VALUES {
                return Err(invalid(
                    format!("{at}.values"),
                    format!("must have at most {MAX_GROUP_TAG_VALUES} values"),
                ));
            }
            for (value_index, value) in filter.values.iter().enumerate() {
                tag_value_rule(value)
                    .map_err(|rule| invalid(format!("{at}.values[{value_index}]"), rule))?;
            }
            tag_filters.push(GroupTagFilter {
                key: filter.key.clone(),
                values: filter.values.clone(),
            });
        }
        Ok(GroupQuery {
            resource_type_filters,
            tag_filters,
        })
    }

    pub fn to_proto(&self) -> pb::ResourceQuery {
        pb::ResourceQuery {
            resource_type_filters: self.resource_type_filters.clone(),
            tag_filters: self
                .tag_filters
                .iter()
                .map(|filter| pb::TagFilter {
                    key: filter.key.clone(),
                    values: filter.values.clone(),
                })
                .collect(),
        }
    }
}

/// Opaque page tokens: the base64url of the last key of the page.
pub fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// The key a token carries, checked by `valid`; `None` for the first page.
pub fn decode_token(
    field: &str,
    token: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| valid(key))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(field, "is not a token this server issued")
                .with_reason(REASON_NEXT_TOKEN)
        })
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
    fn tag_rules() {
        assert!(tag_key_rule("env").is_ok());
        assert!(tag_key_rule("Team Name_1.x:/=+-@").is_ok());
        assert!(tag_key_rule("élan").is_ok());
        assert!(tag_key_rule("").is_err());
        assert!(tag_key_rule(&"k".repeat(129)).is_err());
        assert!(tag_key_rule("aws:x").is_err());
        assert!(tag_key_rule("Bosun:x").is_err());
        assert!(tag_key_rule("a*b").is_err());
        assert!(tag_value_rule("").is_ok());
        assert!(tag_value_rule(&"v".repeat(256)).is_ok());
        assert!(tag_value_rule(&"v".repeat(257)).is_err());
        let error = tags(
            "tags",
            &[
                pb::Tag {
                    key: "a".into(),
                    value: "b".into(),
                },
                pb::Tag {
                    key: "c".into(),
                    value: "x#".into(),
                },
            ],
        )
        .expect_err("bad value");
        assert_eq!(field_of(error), "tags[1].value");
    }

    #[test]
    fn node_ids_and_facts() {
        assert!(is_node_id("mi-0123456789abcdef0"));
        assert!(!is_node_id("mi-0123456789ABCDEF0"));
        assert!(!is_node_id("mi-0123456789abcdef"));
        assert!(!is_node_id("i-0123456789abcdef01"));
        let mut facts = HostFacts {
            platform_type: "Linux".into(),
            ip_addresses: vec!["10.0.0.1".into(), "fe80::1".into()],
            ..Default::default()
        };
        assert!(host_facts("facts", &facts).is_ok());
        facts.ip_addresses.push("10.0.0.300".into());
        assert_eq!(
            field_of(host_facts("facts", &facts).expect_err("bad ip")),
            "facts.ip_addresses[2]"
        );
        facts.ip_addresses = vec!["10.0.0.1".into(); 33];
        assert_eq!(
            field_of(host_facts("facts", &facts).expect_err("too many")),
            "facts.ip_addresses"
        );
        facts.ip_addresses.clear();
        facts.platform_type = "Solaris".into();
        assert_eq!(
            field_of(host_facts("facts", &facts).expect_err("platform")),
            "facts.platform_type"
        );
    }

    #[test]
    fn pages_and_tokens() {
        assert_eq!(page_size("max_results", 0, 50, 1000).ok(), Some(50));
        assert_eq!(page_size("max_results", 1000, 50, 1000).ok(), Some(1000));
        assert!(page_size("max_results", 1001, 50, 1000).is_err());
        assert!(page_size("max_results", -1, 50, 1000).is_err());
        let token = encode_token("mi-0123456789abcdef0");
        assert_eq!(
            decode_token("next_token", &token, is_node_id)
                .ok()
                .flatten()
                .as_deref(),
            Some("mi-0123456789abcdef0")
        );
        assert!(decode_token("next_token", "!!", is_node_id).is_err());
        assert!(decode_token("next_token", &encode_token("x"), is_node_id).is_err());
    }

    #[test]
    fn group_names() {
        assert!(group_name_rule("web-servers_1.prod").is_ok());
        assert!(group_name_rule("").is_err());
        assert!(group_name_rule("a b").is_err());
        assert!(group_name_rule(&"a".repeat(129)).is_err());
    }
}
