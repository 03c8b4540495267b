//! The inventory store: plain async functions over any connection that return domain
//! records, so the services can run a change and its audit event in one transaction.
//! sea-orm stays inside this module and `targets`.

use std::collections::BTreeMap;

use bosun_core::ApiError;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use crate::entities::{activation, node, node_tag, resource_group};
use crate::validate::GroupQuery;

/// Nodes silent for longer than this are Inactive.
pub const INACTIVE_AFTER: TimeDelta = TimeDelta::days(30);
/// Ids per `UPDATE ... WHERE id IN (...)` when recording pings.
pub const PING_CHUNK: usize = 500;

fn db_error(what: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
    move |error| ApiError::internal(format!("{what}: {error}"))
}

// ---- activations ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRecord {
    pub id: String,
    pub code_hash: String,
    pub description: String,
    pub default_instance_name: String,
    pub registration_limit: i32,
    pub registrations_count: i32,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub tags: BTreeMap<String, String>,
}

fn activation_record(model: activation::Model) -> Result<ActivationRecord, ApiError> {
    let tags = serde_json::from_str(&model.tags).map_err(|error| {
        ApiError::internal(format!("stored tags of activation {}: {error}", model.id))
    })?;
    Ok(ActivationRecord {
        id: model.id,
        code_hash: model.code_hash,
        description: model.description,
        default_instance_name: model.default_instance_name,
        registration_limit: model.registration_limit,
        registrations_count: model.registrations_count,
        expires_at: model.expires_at,
        created_at: model.created_at,
        tags,
    })
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".to_owned())
}

pub async fn insert_activation<C: ConnectionTrait>(
    conn: &C,
    record: &ActivationRecord,
) -> Result<(), ApiError> {
    activation::ActiveModel {
        id: Set(record.id.clone()),
        code_hash: Set(record.code_hash.clone()),
        description: Set(record.description.clone()),
        default_instance_name: Set(record.default_instance_name.clone()),
        registration_limit: Set(record.registration_limit),
        registrations_count: Set(record.registrations_count),
        expires_at: Set(record.expires_at),
        created_at: Set(record.created_at),
        tags: Set(tags_json(&record.tags)),
        deleted: Set(false),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert activation"))?;
    Ok(())
}

/// An activation that exists and is not deleted.
pub async fn get_activation<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> Result<Option<ActivationRecord>, ApiError> {
    activation::Entity::find_by_id(id.to_owned())
        .filter(activation::Column::Deleted.eq(false))
        .one(conn)
        .await
        .map_err(db_error("read activation"))?
        .map(activation_record)
        .transpose()
}

/// Up to `limit` activations newest first (ids are UUID v7), before `before` when paging,
/// restricted to `ids` and `names` when not empty.
pub async fn list_activations<C: ConnectionTrait>(
    conn: &C,
    ids: &[String],
    names: &[String],
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<ActivationRecord>, ApiError> {
    let mut query = activation::Entity::find()
        .filter(activation::Column::Deleted.eq(false))
        .order_by_desc(activation::Column::Id)
        .limit(u64::try_from(limit).unwrap_or(u64::MAX));
    if !ids.is_empty() {
        query = query.filter(activation::Column::Id.is_in(ids.iter().cloned()));
    }
    if !names.is_empty() {
        query = query.filter(activation::Column::DefaultInstanceName.is_in(names.iter().cloned()));
    }
    if let Some(before) = before {
        query = query.filter(activation::Column::Id.lt(before));
    }
    query
        .all(conn)
        .await
        .map_err(db_error("list activations"))?
        .into_iter()
        .map(activation_record)
        .collect()
}

/// Marks an activation deleted; false when there was none (or it was deleted already).
pub async fn delete_activation<C: ConnectionTrait>(conn: &C, id: &str) -> Result<bool, ApiError> {
    let result = activation::Entity::update_many()
        .col_expr(activation::Column::Deleted, Expr::value(true))
        .filter(activation::Column::Id.eq(id))
        .filter(activation::Column::Deleted.eq(false))
        .exec(conn)
        .await
        .map_err(db_error("delete activation"))?;
    Ok(result.rows_affected == 1)
}

/// Counts one registration against the activation if it is still under its limit and
/// unexpired at `now`. The condition is in the UPDATE itself, so concurrent registrations
/// can never exceed the limit (PostgreSQL re-checks the row after a concurrent update;
/// SQLite writers are serialized). True when counted.
pub async fn take_registration<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let result = activation::Entity::update_many()
        .col_expr(
            activation::Column::RegistrationsCount,
            Expr::col(activation::Column::RegistrationsCount).add(1),
        )
        .filter(activation::Column::Id.eq(id))
        .filter(activation::Column::Deleted.eq(false))
        .filter(activation::Column::ExpiresAt.gt(now))
        .filter(
            Expr::col(activation::Column::RegistrationsCount)
                .lt(Expr::col(activation::Column::RegistrationLimit)),
        )
        .exec(conn)
        .await
        .map_err(db_error("count a registration"))?;
    Ok(result.rows_affected == 1)
}

// ---- nodes ------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: String,
    pub activation_id: String,
    pub name: String,
    pub public_key: Vec<u8>,
    pub registered_at: DateTime<Utc>,
    pub deregistered_at: Option<DateTime<Utc>>,
    pub last_ping_at: Option<DateTime<Utc>>,
    pub agent_version: String,
    pub platform_type: String,
    pub platform_name: String,
    pub platform_version: String,
    pub hostname: String,
    pub ip_addresses: Vec<String>,
    pub architecture: String,
}

fn node_record(model: node::Model) -> Result<NodeRecord, ApiError> {
    let ip_addresses = serde_json::from_str(&model.ip_addresses).map_err(|error| {
        ApiError::internal(format!("stored addresses of node {}: {error}", model.id))
    })?;
    Ok(NodeRecord {
        id: model.id,
        activation_id: model.activation_id,
        name: model.name,
        public_key: model.public_key,
        registered_at: model.registered_at,
        deregistered_at: model.deregistered_at,
        last_ping_at: model.last_ping_at,
        agent_version: model.agent_version,
        platform_type: model.platform_type,
        platform_name: model.platform_name,
        platform_version: model.platform_version,
        hostname: model.hostname,
        ip_addresses,
        architecture: model.architecture,
    })
}

fn addresses_json(addresses: &[String]) -> String {
    serde_json::to_string(addresses).unwrap_or_else(|_| "[]".to_owned())
}

pub async fn insert_node<C: ConnectionTrait>(
    conn: &C,
    record: &NodeRecord,
) -> Result<(), ApiError> {
    node::ActiveModel {
        id: Set(record.id.clone()),
        activation_id: Set(record.activation_id.clone()),
        name: Set(record.name.clone()),
        public_key: Set(record.public_key.clone()),
        registered_at: Set(record.registered_at),
        deregistered_at: Set(record.deregistered_at),
        last_ping_at: Set(record.last_ping_at),
        agent_version: Set(record.agent_version.clone()),
        platform_type: Set(record.platform_type.clone()),
        platform_name: Set(record.platform_name.clone()),
        platform_version: Set(record.platform_version.clone()),
        hostname: Set(record.hostname.clone()),
        ip_addresses: Set(addresses_json(&record.ip_addresses)),
        architecture: Set(record.architecture.clone()),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert node"))?;
    Ok(())
}

/// A registered node that is not deregistered.
pub async fn get_node<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> Result<Option<NodeRecord>, ApiError> {
    node::Entity::find_by_id(id.to_owned())
        .filter(node::Column::DeregisteredAt.is_null())
        .one(conn)
        .await
        .map_err(db_error("read node"))?
        .map(node_record)
        .transpose()
}

/// Up to `limit` registered nodes passing `condition` after `after`, in id order.
pub async fn list_nodes<C: ConnectionTrait>(
    conn: &C,
    condition: Condition,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<NodeRecord>, ApiError> {
    let mut query = node::Entity::find()
        .filter(node::Column::DeregisteredAt.is_null())
        .filter(condition)
        .order_by_asc(node::Column::Id)
        .limit(u64::try_from(limit).unwrap_or(u64::MAX));
    if let Some(after) = after {
        query = query.filter(node::Column::Id.gt(after));
    }
    query
        .all(conn)
        .await
        .map_err(db_error("list nodes"))?
        .into_iter()
        .map(node_record)
        .collect()
}

/// Sets `deregistered_at`; false when the node is unknown or deregistered already.
pub async fn deregister_node<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    at: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let result = node::Entity::update_many()
        .col_expr(node::Column::DeregisteredAt, Expr::value(Some(at)))
        .filter(node::Column::Id.eq(id))
        .filter(node::Column::DeregisteredAt.is_null())
        .exec(conn)
        .await
        .map_err(db_error("deregister node"))?;
    Ok(result.rows_affected == 1)
}

/// The facts a node reported on connect, and `at` as its last ping.
pub async fn record_connect<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    facts: &bosun_proto::agent::v1::HostFacts,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    node::Entity::update_many()
        .col_expr(node::Column::LastPingAt, Expr::value(Some(at)))
        .col_expr(
            node::Column::AgentVersion,
            Expr::value(facts.agent_version.clone()),
        )
        .col_expr(
            node::Column::PlatformType,
            Expr::value(facts.platform_type.clone()),
        )
        .col_expr(
            node::Column::PlatformName,
            Expr::value(facts.platform_name.clone()),
        )
        .col_expr(
            node::Column::PlatformVersion,
            Expr::value(facts.platform_version.clone()),
        )
        .col_expr(node::Column::Hostname, Expr::value(facts.hostname.clone()))
        .col_expr(
            node::Column::IpAddresses,
            Expr::value(addresses_json(&facts.ip_addresses)),
        )
        .col_expr(
            node::Column::Architecture,
            Expr::value(facts.architecture.clone()),
        )
        .filter(node::Column::Id.eq(id))
        .filter(node::Column::DeregisteredAt.is_null())
        .exec(conn)
        .await
        .map_err(db_error("record node connect"))?;
    Ok(())
}

/// `at` as the last ping of each node, one UPDATE per chunk of [`PING_CHUNK`] ids.
pub async fn record_pings<C: ConnectionTrait>(
    conn: &C,
    ids: &[String],
    at: DateTime<Utc>,
) -> Result<Vec<String>, ApiError> {
    let mut refused = Vec::new();
    for chunk in ids.chunks(PING_CHUNK) {
        let updated = node::Entity::update_many()
            .col_expr(node::Column::LastPingAt, Expr::value(Some(at)))
            .filter(node::Column::Id.is_in(chunk.iter().cloned()))
            .filter(node::Column::DeregisteredAt.is_null())
            .exec(conn)
            .await
            .map_err(db_error("record node pings"))?;
        if updated.rows_affected < chunk.len() as u64 {
            // Some are gone: find which (rare, so the second query is only paid then).
            let live: std::collections::HashSet<String> = node::Entity::find()
                .select_only()
                .column(node::Column::Id)
                .filter(node::Column::Id.is_in(chunk.iter().cloned()))
                .filter(node::Column::DeregisteredAt.is_null())
                .into_tuple::<String>()
                .all(conn)
                .await
                .map_err(db_error("read live nodes"))?
                .into_iter()
                .collect();
            refused.extend(chunk.iter().filter(|id| !live.contains(*id)).cloned());
        }
    }
    Ok(refused)
}

// ---- tags -------------------------------------------------------------------------------

pub async fn node_tags<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(node_tag::Entity::find()
        .filter(node_tag::Column::NodeId.eq(id))
        .all(conn)
        .await
        .map_err(db_error("read node tags"))?
        .into_iter()
        .map(|model| (model.key, model.value))
        .collect())
}

/// Adds or overwrites tags of a node.
pub async fn put_tags<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if tags.is_empty() {
        return Ok(());
    }
    remove_tags(conn, id, &tags.keys().cloned().collect::<Vec<_>>()).await?;
    node_tag::Entity::insert_many(tags.iter().map(|(key, value)| node_tag::ActiveModel {
        node_id: Set(id.to_owned()),
        key: Set(key.clone()),
        value: Set(value.clone()),
    }))
    .exec_without_returning(conn)
    .await
    .map_err(db_error("insert node tags"))?;
    Ok(())
}

pub async fn remove_tags<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    keys: &[String],
) -> Result<(), ApiError> {
    node_tag::Entity::delete_many()
        .filter(node_tag::Column::NodeId.eq(id))
        .filter(node_tag::Column::Key.is_in(keys.iter().cloned()))
        .exec(conn)
        .await
        .map_err(db_error("remove node tags"))?;
    Ok(())
}

// ---- resource groups --------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub name: String,
    pub description: String,
    pub query: GroupQuery,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn group_record(model: resource_group::Model) -> Result<GroupRecord, ApiError> {
    let query = serde_json::from_str(&model.query).map_err(|error| {
        ApiError::internal(format!(
            "stored query of resource group {}: {error}",
            model.name
        ))
    })?;
    Ok(GroupRecord {
        name: model.name,
        description: model.description,
        query,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn group_model(record: &GroupRecord) -> Result<resource_group::ActiveModel, ApiError> {
    let query = serde_json::to_string(&record.query).map_err(ApiError::internal)?;
    Ok(resource_group::ActiveModel {
        name: Set(record.name.clone()),
        description: Set(record.description.clone()),
        query: Set(query),
        created_at: Set(record.created_at),
        updated_at: Set(record.updated_at),
    })
}

pub async fn insert_group<C: ConnectionTrait>(
    conn: &C,
    record: &GroupRecord,
) -> Result<(), ApiError> {
    group_model(record)?
        .insert(conn)
        .await
        .map_err(db_error("insert resource group"))?;
    Ok(())
}

pub async fn update_group<C: ConnectionTrait>(
    conn: &C,
    record: &GroupRecord,
) -> Result<(), ApiError> {
    group_model(record)?
        .update(conn)
        .await
        .map_err(db_error("update resource group"))?;
    Ok(())
}

pub async fn get_group<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<GroupRecord>, ApiError> {
    resource_group::Entity::find_by_id(name.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read resource group"))?
        .map(group_record)
        .transpose()
}

pub async fn list_groups<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<GroupRecord>, ApiError> {
    let mut query = resource_group::Entity::find()
        .order_by_asc(resource_group::Column::Name)
        .limit(u64::try_from(limit).unwrap_or(u64::MAX));
    if let Some(after) = after {
        query = query.filter(resource_group::Column::Name.gt(after));
    }
    query
        .all(conn)
        .await
        .map_err(db_error("list resource groups"))?
        .into_iter()
        .map(group_record)
        .collect()
}

pub async fn delete_group<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool, ApiError> {
    let result = resource_group::Entity::delete_by_id(name.to_owned())
        .exec(conn)
        .await
        .map_err(db_error("delete resource group"))?;
    Ok(result.rows_affected == 1)
}
