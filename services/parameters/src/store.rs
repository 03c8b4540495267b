//! The Parameter Store repository: plain async functions over any connection that return
//! records, so the service runs a change and its audit event in one transaction.
//! sea-orm stays inside this module.

use std::collections::BTreeMap;

use bosun_core::ApiError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, SqlErr,
};

use crate::entities::{label, parameter, policy_event, tag, version};
use crate::error::{PARAMETER_ALREADY_EXISTS, TOO_MANY_UPDATES};
use crate::label::VersionLabels;
use crate::policy::FiredEvent;

/// A parameter's current metadata (what its latest version says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterRecord {
    pub name: String,
    pub parameter_type: String,
    pub tier: String,
    pub key_id: String,
    pub description: String,
    pub allowed_pattern: String,
    pub data_type: String,
    pub latest_version: i64,
    pub last_modified_at: DateTime<Utc>,
    pub last_modified_user: String,
    /// JSON array of canonical policies; `[]` when none.
    pub policies: String,
}

/// One kept version. `value` is the base64 envelope for a SecureString.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub name: String,
    pub version: i64,
    pub value: String,
    pub parameter_type: String,
    pub key_id: String,
    pub description: String,
    pub allowed_pattern: String,
    pub tier: String,
    pub policies: String,
    pub data_type: String,
    pub modified_at: DateTime<Utc>,
    pub modified_by: String,
}

fn db_error(what: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
    move |error| ApiError::internal(format!("{what}: {error}"))
}

fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn too_many_updates(name: &str) -> ApiError {
    ApiError::Aborted {
        message: format!("put parameter {name}: another write changed it at the same time; retry"),
        reason: Some(TOO_MANY_UPDATES),
    }
}

fn parameter_record(model: parameter::Model) -> ParameterRecord {
    ParameterRecord {
        name: model.name,
        parameter_type: model.parameter_type,
        tier: model.tier,
        key_id: model.key_id,
        description: model.description,
        allowed_pattern: model.allowed_pattern,
        data_type: model.data_type,
        latest_version: model.latest_version,
        last_modified_at: model.last_modified_at,
        last_modified_user: model.last_modified_user,
        policies: model.policies,
    }
}

fn version_record(model: version::Model) -> VersionRecord {
    VersionRecord {
        name: model.name,
        version: model.version,
        value: model.value,
        parameter_type: model.parameter_type,
        key_id: model.key_id,
        description: model.description,
        allowed_pattern: model.allowed_pattern,
        tier: model.tier,
        policies: model.policies,
        data_type: model.data_type,
        modified_at: model.modified_at,
        modified_by: model.modified_by,
    }
}

pub async fn get_parameter<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<ParameterRecord>, ApiError> {
    Ok(parameter::Entity::find_by_id(name.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read parameter"))?
        .map(parameter_record))
}

/// Parameters in name order after `after` whose name starts with `prefix`, at most `limit`.
/// The prefix match may return more than the prefix (LIKE treats `_` as a wildcard); callers
/// filter exactly.
pub async fn list_parameters<C: ConnectionTrait>(
    conn: &C,
    prefix: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<ParameterRecord>, ApiError> {
    let mut query = parameter::Entity::find().order_by_asc(parameter::Column::Name);
    if !prefix.is_empty() {
        query = query.filter(parameter::Column::Name.like(format!("{prefix}%")));
    }
    if let Some(after) = after {
        query = query.filter(parameter::Column::Name.gt(after));
    }
    Ok(query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list parameters"))?
        .into_iter()
        .map(parameter_record)
        .collect())
}

/// How many parameters each stored tier holds, as (Standard, Advanced).
pub async fn count_by_tier<C: ConnectionTrait>(conn: &C) -> Result<(u64, u64), ApiError> {
    let mut counts = (0, 0);
    for (tier, slot) in [("Standard", &mut counts.0), ("Advanced", &mut counts.1)] {
        *slot = parameter::Entity::find()
            .filter(parameter::Column::Tier.eq(tier))
            .count(conn)
            .await
            .map_err(db_error("count parameters"))?;
    }
    Ok(counts)
}

fn parameter_model(record: &ParameterRecord) -> parameter::ActiveModel {
    parameter::ActiveModel {
        name: Set(record.name.clone()),
        parameter_type: Set(record.parameter_type.clone()),
        tier: Set(record.tier.clone()),
        key_id: Set(record.key_id.clone()),
        description: Set(record.description.clone()),
        allowed_pattern: Set(record.allowed_pattern.clone()),
        data_type: Set(record.data_type.clone()),
        latest_version: Set(record.latest_version),
        last_modified_at: Set(record.last_modified_at),
        last_modified_user: Set(record.last_modified_user.clone()),
        policies: Set(record.policies.clone()),
    }
}

/// Inserts a new parameter with its first version. A name taken meanwhile by a concurrent
/// create is ParameterAlreadyExists.
pub async fn insert_parameter<C: ConnectionTrait>(
    conn: &C,
    record: &ParameterRecord,
    first: &VersionRecord,
) -> Result<(), ApiError> {
    match parameter_model(record).insert(conn).await {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::already_exists(format!(
                "put parameter {}: it already exists; set overwrite to add a version",
                record.name
            ))
            .with_reason(PARAMETER_ALREADY_EXISTS));
        }
        Err(error) => return Err(db_error("insert parameter")(error)),
    }
    insert_version(conn, first).await
}

/// Writes a new version over `expected_latest`: claims the version number with a
/// conditional update, so of two concurrent overwrites one wins and the other gets
/// TooManyUpdates.
pub async fn overwrite_parameter<C: ConnectionTrait>(
    conn: &C,
    record: &ParameterRecord,
    expected_latest: i64,
    next: &VersionRecord,
) -> Result<(), ApiError> {
    let result = parameter::Entity::update_many()
        .col_expr(
            parameter::Column::ParameterType,
            Expr::value(record.parameter_type.clone()),
        )
        .col_expr(parameter::Column::Tier, Expr::value(record.tier.clone()))
        .col_expr(parameter::Column::KeyId, Expr::value(record.key_id.clone()))
        .col_expr(
            parameter::Column::Description,
            Expr::value(record.description.clone()),
        )
        .col_expr(
            parameter::Column::AllowedPattern,
            Expr::value(record.allowed_pattern.clone()),
        )
        .col_expr(
            parameter::Column::DataType,
            Expr::value(record.data_type.clone()),
        )
        .col_expr(
            parameter::Column::LatestVersion,
            Expr::value(record.latest_version),
        )
        .col_expr(
            parameter::Column::LastModifiedAt,
            Expr::value(record.last_modified_at),
        )
        .col_expr(
            parameter::Column::LastModifiedUser,
            Expr::value(record.last_modified_user.clone()),
        )
        .col_expr(
            parameter::Column::Policies,
            Expr::value(record.policies.clone()),
        )
        .filter(parameter::Column::Name.eq(record.name.as_str()))
        .filter(parameter::Column::LatestVersion.eq(expected_latest))
        .exec(conn)
        .await
        .map_err(db_error("update parameter"))?;
    if result.rows_affected != 1 {
        return Err(too_many_updates(&record.name));
    }
    insert_version(conn, next).await
}

pub async fn insert_version<C: ConnectionTrait>(
    conn: &C,
    record: &VersionRecord,
) -> Result<(), ApiError> {
    let inserted = version::ActiveModel {
        name: Set(record.name.clone()),
        version: Set(record.version),
        value: Set(record.value.clone()),
        parameter_type: Set(record.parameter_type.clone()),
        key_id: Set(record.key_id.clone()),
        description: Set(record.description.clone()),
        allowed_pattern: Set(record.allowed_pattern.clone()),
        tier: Set(record.tier.clone()),
        policies: Set(record.policies.clone()),
        data_type: Set(record.data_type.clone()),
        modified_at: Set(record.modified_at),
        modified_by: Set(record.modified_by.clone()),
    }
    .insert(conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        // The number was claimed by the conditional update, so a clash is a racing writer.
        Err(error) if is_unique_violation(&error) => Err(too_many_updates(&record.name)),
        Err(error) => Err(db_error("insert parameter version")(error)),
    }
}

pub async fn get_version<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    number: i64,
) -> Result<Option<VersionRecord>, ApiError> {
    Ok(version::Entity::find_by_id((name.to_owned(), number))
        .one(conn)
        .await
        .map_err(db_error("read parameter version"))?
        .map(version_record))
}

/// Versions oldest first, after `after`, at most `limit`.
pub async fn list_versions<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<VersionRecord>, ApiError> {
    let mut query = version::Entity::find()
        .filter(version::Column::Name.eq(name))
        .order_by_asc(version::Column::Version);
    if let Some(after) = after {
        query = query.filter(version::Column::Version.gt(after));
    }
    Ok(query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list parameter versions"))?
        .into_iter()
        .map(version_record)
        .collect())
}

/// The kept version numbers, oldest first.
pub async fn version_numbers<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Vec<i64>, ApiError> {
    version::Entity::find()
        .select_only()
        .column(version::Column::Version)
        .filter(version::Column::Name.eq(name))
        .order_by_asc(version::Column::Version)
        .into_tuple::<i64>()
        .all(conn)
        .await
        .map_err(db_error("list parameter version numbers"))
}

pub async fn delete_versions<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    numbers: &[i64],
) -> Result<(), ApiError> {
    if numbers.is_empty() {
        return Ok(());
    }
    version::Entity::delete_many()
        .filter(version::Column::Name.eq(name))
        .filter(version::Column::Version.is_in(numbers.iter().copied()))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter versions"))?;
    Ok(())
}

/// Deletes a parameter with its versions, labels, tags and policy firings; false when it did not exist.
pub async fn delete_parameter<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool, ApiError> {
    let deleted = parameter::Entity::delete_many()
        .filter(parameter::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter"))?;
    version::Entity::delete_many()
        .filter(version::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter versions"))?;
    label::Entity::delete_many()
        .filter(label::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter labels"))?;
    tag::Entity::delete_many()
        .filter(tag::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter tags"))?;
    clear_fired_events(conn, name).await?;
    Ok(deleted.rows_affected > 0)
}

/// Label → version for one parameter.
pub async fn labels<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<BTreeMap<String, i64>, ApiError> {
    Ok(label::Entity::find()
        .filter(label::Column::Name.eq(name))
        .all(conn)
        .await
        .map_err(db_error("list parameter labels"))?
        .into_iter()
        .map(|row| (row.label, row.version))
        .collect())
}

/// The labels of every kept version (versions without labels included), as the label
/// rules want them.
pub async fn version_labels<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<VersionLabels, ApiError> {
    let mut map: VersionLabels = BTreeMap::new();
    for number in version_numbers(conn, name).await? {
        map.insert(number.unsigned_abs(), Default::default());
    }
    for (label, number) in labels(conn, name).await? {
        map.entry(number.unsigned_abs()).or_default().insert(label);
    }
    Ok(map)
}

/// Puts `label` on `version`, taking it off any other version of the parameter.
pub async fn set_label<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    label_name: &str,
    number: i64,
) -> Result<(), ApiError> {
    remove_labels(conn, name, &[label_name.to_owned()]).await?;
    label::ActiveModel {
        name: Set(name.to_owned()),
        label: Set(label_name.to_owned()),
        version: Set(number),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert parameter label"))?;
    Ok(())
}

pub async fn remove_labels<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    labels: &[String],
) -> Result<(), ApiError> {
    if labels.is_empty() {
        return Ok(());
    }
    label::Entity::delete_many()
        .filter(label::Column::Name.eq(name))
        .filter(label::Column::Label.is_in(labels.iter().cloned()))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter labels"))?;
    Ok(())
}

pub async fn tags<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(tag::Entity::find()
        .filter(tag::Column::Name.eq(name))
        .all(conn)
        .await
        .map_err(db_error("list parameter tags"))?
        .into_iter()
        .map(|row| (row.key, row.value))
        .collect())
}

/// Adds or replaces tags.
pub async fn put_tags<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if tags.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = tags.keys().cloned().collect();
    remove_tags(conn, name, &keys).await?;
    tag::Entity::insert_many(tags.iter().map(|(key, value)| tag::ActiveModel {
        name: Set(name.to_owned()),
        key: Set(key.clone()),
        value: Set(value.clone()),
    }))
    .exec(conn)
    .await
    .map_err(db_error("insert parameter tags"))?;
    Ok(())
}

pub async fn remove_tags<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    keys: &[String],
) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    tag::Entity::delete_many()
        .filter(tag::Column::Name.eq(name))
        .filter(tag::Column::Key.is_in(keys.iter().cloned()))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter tags"))?;
    Ok(())
}

/// Parameters that have policies, in name order after `after`, at most `limit`.
pub async fn list_with_policies<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<ParameterRecord>, ApiError> {
    let mut query = parameter::Entity::find()
        .filter(parameter::Column::Policies.ne("[]"))
        .filter(parameter::Column::Policies.ne(""))
        .order_by_asc(parameter::Column::Name);
    if let Some(after) = after {
        query = query.filter(parameter::Column::Name.gt(after));
    }
    Ok(query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list parameters with policies"))?
        .into_iter()
        .map(parameter_record)
        .collect())
}

/// The policy firings recorded for a parameter.
pub async fn fired_events<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Vec<FiredEvent>, ApiError> {
    Ok(policy_event::Entity::find()
        .filter(policy_event::Column::Name.eq(name))
        .all(conn)
        .await
        .map_err(db_error("list parameter policy events"))?
        .into_iter()
        .filter_map(|row| {
            Some(FiredEvent {
                policy_index: usize::try_from(row.policy_index).ok()?,
                due_at: row.due_at,
            })
        })
        .collect())
}

/// Records a firing; false when it was already recorded (another replica got there first).
/// Run it alone in its transaction: on PostgreSQL the conflict aborts the transaction.
pub async fn record_fired<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    fired: FiredEvent,
    fired_at: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let policy_index = i32::try_from(fired.policy_index)
        .map_err(|_| ApiError::internal("record policy event: policy index out of range"))?;
    let inserted = policy_event::ActiveModel {
        name: Set(name.to_owned()),
        policy_index: Set(policy_index),
        due_at: Set(fired.due_at),
        fired_at: Set(fired_at),
    }
    .insert(conn)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(false),
        Err(error) => Err(db_error("record parameter policy event")(error)),
    }
}

/// Forgets a parameter's firings: its policies were replaced, so old indexes mean nothing.
pub async fn clear_fired_events<C: ConnectionTrait>(conn: &C, name: &str) -> Result<(), ApiError> {
    policy_event::Entity::delete_many()
        .filter(policy_event::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete parameter policy events"))?;
    Ok(())
}
