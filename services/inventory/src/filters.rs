//! The filters of DescribeInstanceInformation, checked and turned into one SQL condition, and
//! ping status: computed in SQL for the `PingStatus` filter (so pages stay correct) and in
//! Rust, by the same rule, for the answer.

use bosun_core::ApiError;
use bosun_proto::inventory::v1 as pb;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait};

use crate::entities::node;
use crate::store::INACTIVE_AFTER;
use crate::targets;
use crate::validate::{self, MAX_FILTER_VALUES, REASON_INVALID_FILTER};

/// One checked filter; its values are ORed, filters are ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFilter {
    InstanceIds(Vec<String>),
    PingStatus(Vec<pb::PingStatus>),
    PlatformType(Vec<String>),
    PlatformName(Vec<String>),
    AgentVersion(Vec<String>),
    ActivationIds(Vec<String>),
    ResourceType(Vec<String>),
    TagKey(Vec<String>),
    Tag(String, Vec<String>),
    /// Group names with the field of each, for an unknown group.
    ResourceGroups(Vec<(String, String)>),
}

fn invalid(field: String, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(REASON_INVALID_FILTER)
}

fn ping_status_named(name: &str) -> Option<pb::PingStatus> {
    match name {
        "Online" => Some(pb::PingStatus::Online),
        "ConnectionLost" => Some(pb::PingStatus::ConnectionLost),
        "Inactive" => Some(pb::PingStatus::Inactive),
        _ => None,
    }
}

/// Checks `filters` (field paths `filters[i]`).
pub fn parse(filters: &[pb::InstanceInformationFilter]) -> Result<Vec<NodeFilter>, ApiError> {
    let mut parsed = Vec::with_capacity(filters.len());
    for (index, filter) in filters.iter().enumerate() {
        let field = format!("filters[{index}]");
        let values = &filter.values;
        if values.is_empty() || values.len() > MAX_FILTER_VALUES {
            return Err(invalid(
                format!("{field}.values"),
                format!("must have 1-{MAX_FILTER_VALUES} values"),
            ));
        }
        let check = |rule: &dyn Fn(&str) -> Result<(), String>| -> Result<Vec<String>, ApiError> {
            for (value_index, value) in values.iter().enumerate() {
                rule(value)
                    .map_err(|rule| invalid(format!("{field}.values[{value_index}]"), rule))?;
            }
            Ok(values.clone())
        };
        let plain = |value: &str| -> Result<(), String> {
            if value.is_empty() || value.chars().count() > validate::MAX_FACT_LENGTH {
                Err(format!(
                    "must be 1-{} characters",
                    validate::MAX_FACT_LENGTH
                ))
            } else {
                Ok(())
            }
        };
        let filter = match filter.key.as_str() {
            "InstanceIds" => NodeFilter::InstanceIds(check(&|value| {
                validate::is_node_id(value)
                    .then_some(())
                    .ok_or_else(|| "must be a node id (mi- and 17 hex digits)".to_owned())
            })?),
            "PingStatus" => {
                let mut statuses = Vec::new();
                for (value_index, value) in values.iter().enumerate() {
                    statuses.push(ping_status_named(value).ok_or_else(|| {
                        invalid(
                            format!("{field}.values[{value_index}]"),
                            "must be Online, ConnectionLost or Inactive",
                        )
                    })?);
                }
                NodeFilter::PingStatus(statuses)
            }
            "PlatformType" => NodeFilter::PlatformType(check(&|value| {
                validate::PLATFORM_TYPES
                    .contains(&value)
                    .then_some(())
                    .ok_or_else(|| "must be Linux, MacOS or Windows".to_owned())
            })?),
            "PlatformName" => NodeFilter::PlatformName(check(&plain)?),
            "AgentVersion" => NodeFilter::AgentVersion(check(&plain)?),
            "ActivationIds" => NodeFilter::ActivationIds(check(&plain)?),
            "ResourceType" => NodeFilter::ResourceType(check(&|value| {
                matches!(value, "ManagedInstance" | "EC2Instance")
                    .then_some(())
                    .ok_or_else(|| "must be ManagedInstance or EC2Instance".to_owned())
            })?),
            "tag-key" => NodeFilter::TagKey(check(&validate::tag_key_rule)?),
            "resource-groups:Name" => {
                let names = check(&validate::group_name_rule)?;
                NodeFilter::ResourceGroups(
                    names
                        .into_iter()
                        .enumerate()
                        .map(|(value_index, name)| (name, format!("{field}.values[{value_index}]")))
                        .collect(),
                )
            }
            other => match other.strip_prefix("tag:") {
                Some(key) => {
                    validate::tag_key_rule(key).map_err(|rule| {
                        invalid(
                            format!("{field}.key"),
                            format!("the tag key of tag:<key> {rule}"),
                        )
                    })?;
                    NodeFilter::Tag(key.to_owned(), check(&validate::tag_value_rule)?)
                }
                None => {
                    return Err(invalid(
                        format!("{field}.key"),
                        "must be InstanceIds, PingStatus, PlatformType, PlatformName, \
                         AgentVersion, ActivationIds, ResourceType, tag-key, tag:<key> or \
                         resource-groups:Name",
                    ));
                }
            },
        };
        parsed.push(filter);
    }
    Ok(parsed)
}

/// The ping status of a node last heard from at `last_ping` (never: `None`).
pub fn ping_status(
    last_ping: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    timeout: TimeDelta,
) -> pb::PingStatus {
    match last_ping {
        Some(at) if at >= now - timeout => pb::PingStatus::Online,
        Some(at) if at >= now - INACTIVE_AFTER => pb::PingStatus::ConnectionLost,
        _ => pb::PingStatus::Inactive,
    }
}

/// [`ping_status`] as a condition on `nodes.last_ping_at`.
fn ping_condition(status: pb::PingStatus, now: DateTime<Utc>, timeout: TimeDelta) -> Condition {
    let online_since = now - timeout;
    let active_since = now - INACTIVE_AFTER;
    match status {
        pb::PingStatus::Online => Condition::all().add(node::Column::LastPingAt.gte(online_since)),
        pb::PingStatus::ConnectionLost => Condition::all()
            .add(node::Column::LastPingAt.lt(online_since))
            .add(node::Column::LastPingAt.gte(active_since)),
        pb::PingStatus::Inactive => Condition::any()
            .add(node::Column::LastPingAt.is_null())
            .add(node::Column::LastPingAt.lt(active_since)),
        // Never produced by `parse`.
        pb::PingStatus::Unspecified => Condition::any(),
    }
}

/// One condition for all `filters`; groups are read from `conn`.
pub async fn condition<C: ConnectionTrait>(
    conn: &C,
    filters: &[NodeFilter],
    now: DateTime<Utc>,
    timeout: TimeDelta,
) -> Result<Condition, ApiError> {
    let mut all = Condition::all();
    for filter in filters {
        let one = match filter {
            NodeFilter::InstanceIds(ids) => {
                Condition::all().add(node::Column::Id.is_in(ids.iter().cloned()))
            }
            NodeFilter::PingStatus(statuses) => {
                statuses.iter().fold(Condition::any(), |any, status| {
                    any.add(ping_condition(*status, now, timeout))
                })
            }
            NodeFilter::PlatformType(values) => {
                Condition::all().add(node::Column::PlatformType.is_in(values.iter().cloned()))
            }
            NodeFilter::PlatformName(values) => {
                Condition::all().add(node::Column::PlatformName.is_in(values.iter().cloned()))
            }
            NodeFilter::AgentVersion(values) => {
                Condition::all().add(node::Column::AgentVersion.is_in(values.iter().cloned()))
            }
            NodeFilter::ActivationIds(values) => {
                Condition::all().add(node::Column::ActivationId.is_in(values.iter().cloned()))
            }
            NodeFilter::ResourceType(values) => {
                if values
                    .iter()
                    .any(|value| value == validate::RESOURCE_TYPE_NODE)
                {
                    Condition::all()
                } else {
                    // Only managed instances are kept here: nothing matches.
                    Condition::all().add(node::Column::Id.is_in(Vec::<String>::new()))
                }
            }
            NodeFilter::TagKey(keys) => targets::tag_key_condition(keys),
            NodeFilter::Tag(key, values) => targets::tag_condition(key, Some(values)),
            NodeFilter::ResourceGroups(names) => {
                let mut any = Condition::any();
                for (name, field) in names {
                    let query = targets::group_query(conn, name).await?.ok_or_else(|| {
                        invalid(field.clone(), format!("names no resource group ({name})"))
                    })?;
                    any = any.add(targets::query_condition(&query));
                }
                any
            }
        };
        all = all.add(one);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_status_boundaries() {
        let now = Utc::now();
        let timeout = TimeDelta::seconds(120);
        assert_eq!(ping_status(None, now, timeout), pb::PingStatus::Inactive);
        assert_eq!(ping_status(Some(now), now, timeout), pb::PingStatus::Online);
        assert_eq!(
            ping_status(Some(now - timeout), now, timeout),
            pb::PingStatus::Online
        );
        assert_eq!(
            ping_status(Some(now - timeout - TimeDelta::seconds(1)), now, timeout),
            pb::PingStatus::ConnectionLost
        );
        assert_eq!(
            ping_status(Some(now - INACTIVE_AFTER), now, timeout),
            pb::PingStatus::ConnectionLost
        );
        assert_eq!(
            ping_status(
                Some(now - INACTIVE_AFTER - TimeDelta::seconds(1)),
                now,
                timeout
            ),
            pb::PingStatus::Inactive
        );
    }

    #[test]
    fn bad_filters_name_the_field() {
        let filter = |key: &str, values: &[&str]| pb::InstanceInformationFilter {
            key: key.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        for (filters, field) in [
            (vec![filter("Color", &["x"])], "filters[0].key"),
            (
                vec![
                    filter("PingStatus", &["Online"]),
                    filter("PingStatus", &["Asleep"]),
                ],
                "filters[1].values[0]",
            ),
            (vec![filter("PlatformType", &[])], "filters[0].values"),
            (
                vec![filter("InstanceIds", &["mi-0123456789abcdef0", "nope"])],
                "filters[0].values[1]",
            ),
            (vec![filter("tag:aws:x", &["v"])], "filters[0].key"),
        ] {
            match parse(&filters) {
                Err(ApiError::InvalidArgument { violations, reason }) => {
                    assert_eq!(violations[0].field, field);
                    assert_eq!(reason, Some(REASON_INVALID_FILTER));
                }
                other => panic!("{filters:?}: {other:?}"),
            }
        }
    }
}
