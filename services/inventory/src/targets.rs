//! SSM targets: parsing and checking them, and resolving them in SQL to the registered
//! (not deregistered) node ids they select, in id order, paged. The one resolver every
//! service that targets nodes uses (Run Command through `ResolveTargets`); resource groups
//! and the `resource-groups:Name` filter share its queries.
//!
//! Keys: `InstanceIds` (node ids, or the single value `*` for every node), `tag:<key>` (tag
//! values), `tag-key` (tag keys), `resource-groups:Name` (one group name, its query applied
//! live). Targets are ANDed; the values of one target are ORed.

use bosun_core::ApiError;
use bosun_proto::inventory::v1 as pb;
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entities::{node, node_tag, resource_group};
use crate::validate::{self, GroupQuery, REASON_INVALID_TARGET};

/// At most this many targets per request.
pub const MAX_TARGETS: usize = 5;
/// At most this many values per target.
pub const MAX_TARGET_VALUES: usize = 50;

/// What a target selects by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKey {
    /// `InstanceIds`.
    InstanceIds,
    /// `tag:<key>`: nodes whose tag `<key>` has one of the values.
    Tag(String),
    /// `tag-key`: nodes that have one of the keys.
    TagKey,
    /// `resource-groups:Name`: the nodes the named group's query selects now.
    ResourceGroupName,
}

/// One checked target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: TargetKey,
    pub values: Vec<String>,
}

fn invalid(field: String, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(REASON_INVALID_TARGET)
}

impl Target {
    /// Checks one target; `field` is its path, e.g. `targets[1]`.
    pub fn parse(field: &str, target: &pb::Target) -> Result<Target, ApiError> {
        let key = match target.key.as_str() {
            "InstanceIds" => TargetKey::InstanceIds,
            "tag-key" => TargetKey::TagKey,
            "resource-groups:Name" => TargetKey::ResourceGroupName,
            other => match other.strip_prefix("tag:") {
                Some(tag) => {
                    validate::tag_key_rule(tag).map_err(|rule| {
                        invalid(
                            format!("{field}.key"),
                            format!("the tag key of tag:<key> {rule}"),
                        )
                    })?;
                    TargetKey::Tag(tag.to_owned())
                }
                None => {
                    return Err(invalid(
                        format!("{field}.key"),
                        "must be InstanceIds, tag:<key>, tag-key or resource-groups:Name",
                    ));
                }
            },
        };
        let values = &target.values;
        if values.is_empty() || values.len() > MAX_TARGET_VALUES {
            return Err(invalid(
                format!("{field}.values"),
                format!("must have 1-{MAX_TARGET_VALUES} values"),
            ));
        }
        for (index, value) in values.iter().enumerate() {
            let at = || format!("{field}.values[{index}]");
            match &key {
                TargetKey::InstanceIds => {
                    if value == "*" {
                        if values.len() != 1 {
                            return Err(invalid(at(), "* must be the only value"));
                        }
                    } else if !validate::is_node_id(value) {
                        return Err(invalid(
                            at(),
                            "must be a node id (mi- and 17 hex digits) or *",
                        ));
                    }
                }
                TargetKey::Tag(_) => {
                    validate::tag_value_rule(value).map_err(|rule| invalid(at(), rule))?
                }
                TargetKey::TagKey => {
                    validate::tag_key_rule(value).map_err(|rule| invalid(at(), rule))?
                }
                TargetKey::ResourceGroupName => {
                    if values.len() != 1 {
                        return Err(invalid(
                            format!("{field}.values"),
                            "must be exactly one group name",
                        ));
                    }
                    validate::group_name_rule(value).map_err(|rule| invalid(at(), rule))?;
                }
            }
        }
        let mut unique: Vec<String> = Vec::with_capacity(values.len());
        for value in values {
            if !unique.contains(value) {
                unique.push(value.clone());
            }
        }
        Ok(Target {
            key,
            values: unique,
        })
    }

    /// Checks a list of 1-5 targets named `field[i]`.
    pub fn parse_all(field: &str, targets: &[pb::Target]) -> Result<Vec<Target>, ApiError> {
        if targets.is_empty() || targets.len() > MAX_TARGETS {
            return Err(invalid(
                field.to_owned(),
                format!("must have 1-{MAX_TARGETS} targets"),
            ));
        }
        targets
            .iter()
            .enumerate()
            .map(|(index, target)| Target::parse(&format!("{field}[{index}]"), target))
            .collect()
    }

    pub fn to_proto(&self) -> pb::Target {
        let key = match &self.key {
            TargetKey::InstanceIds => "InstanceIds".to_owned(),
            TargetKey::Tag(tag) => format!("tag:{tag}"),
            TargetKey::TagKey => "tag-key".to_owned(),
            TargetKey::ResourceGroupName => "resource-groups:Name".to_owned(),
        };
        pb::Target {
            key,
            values: self.values.clone(),
        }
    }
}

/// Nodes with tag `key`, and when `values` is given one of those values.
pub(crate) fn tag_condition(key: &str, values: Option<&[String]>) -> Condition {
    let mut tagged = Query::select();
    tagged
        .column(node_tag::Column::NodeId)
        .from(node_tag::Entity)
        .and_where(node_tag::Column::Key.eq(key));
    if let Some(values) = values {
        tagged.and_where(node_tag::Column::Value.is_in(values.iter().cloned()));
    }
    Condition::all().add(node::Column::Id.in_subquery(tagged.to_owned()))
}

/// Nodes with any of `keys`.
pub(crate) fn tag_key_condition(keys: &[String]) -> Condition {
    let tagged = Query::select()
        .column(node_tag::Column::NodeId)
        .from(node_tag::Entity)
        .and_where(node_tag::Column::Key.is_in(keys.iter().cloned()))
        .to_owned();
    Condition::all().add(node::Column::Id.in_subquery(tagged))
}

/// The nodes a group query selects: every tag filter holds. (Every resource type a query
/// may name includes nodes, the only resources here.)
pub(crate) fn query_condition(query: &GroupQuery) -> Condition {
    query
        .tag_filters
        .iter()
        .fold(Condition::all(), |all, filter| {
            let values = (!filter.values.is_empty()).then_some(filter.values.as_slice());
            all.add(tag_condition(&filter.key, values))
        })
}

/// The stored query of group `name`, or `None` when there is no such group.
pub(crate) async fn group_query<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<GroupQuery>, ApiError> {
    let Some(model) = resource_group::Entity::find_by_id(name.to_owned())
        .one(conn)
        .await
        .map_err(|error| ApiError::internal(format!("read resource group {name}: {error}")))?
    else {
        return Ok(None);
    };
    serde_json::from_str(&model.query)
        .map(Some)
        .map_err(|error| {
            ApiError::internal(format!(
                "stored query of resource group {name} is not valid: {error}"
            ))
        })
}

/// The condition one target puts on nodes; groups are read from `conn`. An unknown group is
/// an `InvalidTarget` naming `field`.
async fn target_condition<C: ConnectionTrait>(
    conn: &C,
    field: &str,
    target: &Target,
) -> Result<Condition, ApiError> {
    Ok(match &target.key {
        TargetKey::InstanceIds if target.values.iter().any(|value| value == "*") => {
            Condition::all()
        }
        TargetKey::InstanceIds => {
            Condition::all().add(node::Column::Id.is_in(target.values.iter().cloned()))
        }
        TargetKey::Tag(key) => tag_condition(key, Some(&target.values)),
        TargetKey::TagKey => tag_key_condition(&target.values),
        TargetKey::ResourceGroupName => {
            let mut any = Condition::any();
            for (index, name) in target.values.iter().enumerate() {
                let query = group_query(conn, name).await?.ok_or_else(|| {
                    invalid(
                        format!("{field}.values[{index}]"),
                        format!("names no resource group ({name})"),
                    )
                })?;
                any = any.add(query_condition(&query));
            }
            any
        }
    })
}

/// The condition a list of targets puts on nodes (all of them; empty selects every node).
pub(crate) async fn targets_condition<C: ConnectionTrait>(
    conn: &C,
    targets: &[Target],
) -> Result<Condition, ApiError> {
    let mut all = Condition::all();
    for (index, target) in targets.iter().enumerate() {
        all = all.add(target_condition(conn, &format!("targets[{index}]"), target).await?);
    }
    Ok(all)
}

/// Up to `limit` ids of registered nodes that pass `condition`, after `after`, in id order.
pub(crate) async fn node_ids<C: ConnectionTrait>(
    conn: &C,
    condition: Condition,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, ApiError> {
    let mut query = node::Entity::find()
        .select_only()
        .column(node::Column::Id)
        .filter(node::Column::DeregisteredAt.is_null())
        .filter(condition)
        .order_by_asc(node::Column::Id)
        .limit(u64::try_from(limit).unwrap_or(u64::MAX));
    if let Some(after) = after {
        query = query.filter(node::Column::Id.gt(after));
    }
    query
        .into_tuple::<String>()
        .all(conn)
        .await
        .map_err(|error| ApiError::internal(format!("resolve targets: {error}")))
}

/// Resolves `targets` (ANDed; an empty list selects every node) to up to `limit` registered
/// node ids after `after`, in id order. A `resource-groups:Name` target naming no group is an
/// `InvalidTarget` naming `targets[i].values[0]`.
pub async fn resolve(
    db: &impl ConnectionTrait,
    targets: &[Target],
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, ApiError> {
    let condition = targets_condition(db, targets).await?;
    node_ids(db, condition, after, limit).await
}

/// A node as services that run things on nodes need it: name, platform and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    pub id: String,
    /// The computer name the agent reported (the node's name when it reported none).
    pub name: String,
    /// `Linux`, `MacOS`, `Windows`; empty when the node never connected.
    pub platform_type: String,
    pub tags: std::collections::BTreeMap<String, String>,
    /// False when deregistered.
    pub registered: bool,
}

type SummaryRow = (
    String,
    String,
    String,
    String,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// Summaries of the nodes `condition` selects (`registered_only`: not deregistered), in id
/// order: two queries, the nodes and then their tags.
async fn summaries<C: ConnectionTrait>(
    conn: &C,
    condition: Condition,
    registered_only: bool,
) -> Result<Vec<NodeSummary>, ApiError> {
    let mut condition = condition;
    if registered_only {
        condition = condition.add(node::Column::DeregisteredAt.is_null());
    }
    let rows: Vec<SummaryRow> = node::Entity::find()
        .select_only()
        .column(node::Column::Id)
        .column(node::Column::Name)
        .column(node::Column::Hostname)
        .column(node::Column::PlatformType)
        .column(node::Column::DeregisteredAt)
        .filter(condition.clone())
        .order_by_asc(node::Column::Id)
        .into_tuple()
        .all(conn)
        .await
        .map_err(|error| ApiError::internal(format!("read nodes: {error}")))?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let selected = Query::select()
        .column(node::Column::Id)
        .from(node::Entity)
        .cond_where(condition)
        .to_owned();
    let tag_rows: Vec<(String, String, String)> = node_tag::Entity::find()
        .select_only()
        .column(node_tag::Column::NodeId)
        .column(node_tag::Column::Key)
        .column(node_tag::Column::Value)
        .filter(node_tag::Column::NodeId.in_subquery(selected))
        .into_tuple()
        .all(conn)
        .await
        .map_err(|error| ApiError::internal(format!("read node tags: {error}")))?;
    let mut tags: std::collections::HashMap<String, std::collections::BTreeMap<String, String>> =
        std::collections::HashMap::with_capacity(rows.len());
    for (node_id, key, value) in tag_rows {
        tags.entry(node_id).or_default().insert(key, value);
    }
    Ok(rows
        .into_iter()
        .map(
            |(id, name, hostname, platform_type, deregistered_at)| NodeSummary {
                tags: tags.remove(&id).unwrap_or_default(),
                name: if hostname.is_empty() { name } else { hostname },
                id,
                platform_type,
                registered: deregistered_at.is_none(),
            },
        )
        .collect())
}

/// Summaries of the nodes with these ids (at most a few thousand: one `IN` list),
/// deregistered ones included, in id order; ids that never existed are left out.
pub async fn node_summaries<C: ConnectionTrait>(
    conn: &C,
    ids: &[String],
) -> Result<Vec<NodeSummary>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let condition = Condition::all().add(node::Column::Id.is_in(ids.iter().cloned()));
    summaries(conn, condition, false).await
}

/// Summaries of every registered node `targets` select (ANDed; an empty list selects every
/// node), in id order: two queries whatever the number of nodes. A `resource-groups:Name`
/// target naming no group is an `InvalidTarget` naming `targets[i].values[0]`.
pub async fn resolve_summaries<C: ConnectionTrait>(
    conn: &C,
    targets: &[Target],
) -> Result<Vec<NodeSummary>, ApiError> {
    let condition = targets_condition(conn, targets).await?;
    summaries(conn, condition, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(key: &str, values: &[&str]) -> pb::Target {
        pb::Target {
            key: key.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::InvalidArgument { violations, .. } => violations[0].field.clone(),
            other => format!("not invalid: {other}"),
        }
    }

    #[test]
    fn keys_parse() {
        let parsed = Target::parse_all(
            "targets",
            &[
                target("InstanceIds", &["*"]),
                target("tag:env", &["prod", "dev", "prod"]),
                target("tag-key", &["team"]),
                target("resource-groups:Name", &["web"]),
            ],
        )
        .expect("valid targets");
        assert_eq!(parsed[0].key, TargetKey::InstanceIds);
        assert_eq!(parsed[1].key, TargetKey::Tag("env".into()));
        assert_eq!(parsed[1].values, ["prod", "dev"], "duplicates dropped");
        assert_eq!(parsed[3].to_proto().key, "resource-groups:Name");
    }

    #[test]
    fn bad_targets_name_index_and_rule() {
        let cases: Vec<(Vec<pb::Target>, &str)> = vec![
            (vec![], "targets"),
            (vec![target("InstanceIds", &["*"]); 6], "targets"),
            (
                vec![target("InstanceIds", &["*"]), target("Color", &["x"])],
                "targets[1].key",
            ),
            (vec![target("tag:aws:x", &["x"])], "targets[0].key"),
            (vec![target("tag:", &["x"])], "targets[0].key"),
            (vec![target("tag:env", &[])], "targets[0].values"),
            (vec![target("tag-key", &vec!["k"; 51])], "targets[0].values"),
            (
                vec![target("InstanceIds", &["*", "mi-0123456789abcdef0"])],
                "targets[0].values[0]",
            ),
            (
                vec![target("InstanceIds", &["mi-0123456789abcdef0", "i-1"])],
                "targets[0].values[1]",
            ),
            (
                vec![target("resource-groups:Name", &["a", "b"])],
                "targets[0].values",
            ),
            (
                vec![target("resource-groups:Name", &["a b"])],
                "targets[0].values[0]",
            ),
        ];
        for (targets, field) in cases {
            let error = Target::parse_all("targets", &targets).expect_err(field);
            assert_eq!(field_of(error), field, "{targets:?}");
        }
    }
}
