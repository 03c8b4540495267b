//! The documents store: plain async functions over any connection that return domain
//! records, so the service can run a change and its audit event in one transaction.
//! sea-orm stays inside this module.

use std::collections::{BTreeMap, BTreeSet};

use bosun_core::ApiError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, SqlErr,
};

use crate::entities::{document, share, tag, version};

/// A document: what stays the same across its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    pub name: String,
    pub owner: String,
    pub document_type: String,
    pub default_version: i32,
    pub latest_version: i32,
    pub last_issued_version: i32,
    pub target_type: String,
    pub created_at: DateTime<Utc>,
}

/// One version of a document, with what was derived from its content at creation.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub name: String,
    pub version: i32,
    pub version_name: Option<String>,
    pub content: String,
    pub format: String,
    pub schema_version: String,
    pub sha256: String,
    pub display_name: String,
    pub description: String,
    /// JSON array of `{name, type, description, default_value}`.
    pub parameters: String,
    /// JSON array of platform names.
    pub platform_types: String,
    pub target_type: String,
    pub created_at: DateTime<Utc>,
}

fn db_error(what: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
    move |error| ApiError::internal(format!("{what}: {error}"))
}

fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn document_record(model: document::Model) -> DocumentRecord {
    DocumentRecord {
        name: model.name,
        owner: model.owner,
        document_type: model.document_type,
        default_version: model.default_version,
        latest_version: model.latest_version,
        last_issued_version: model.last_issued_version,
        target_type: model.target_type,
        created_at: model.created_at,
    }
}

fn version_record(model: version::Model) -> VersionRecord {
    VersionRecord {
        name: model.name,
        version: model.version,
        version_name: model.version_name,
        content: model.content,
        format: model.format,
        schema_version: model.schema_version,
        sha256: model.sha256,
        display_name: model.display_name,
        description: model.description,
        parameters: model.parameters,
        platform_types: model.platform_types,
        target_type: model.target_type,
        created_at: model.created_at,
    }
}

pub async fn get_document<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<DocumentRecord>, ApiError> {
    Ok(document::Entity::find_by_id(name.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read document"))?
        .map(document_record))
}

/// Every document in name order. The total is bounded by `MAX_DOCUMENTS`.
pub async fn list_documents<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
) -> Result<Vec<DocumentRecord>, ApiError> {
    let mut query = document::Entity::find().order_by_asc(document::Column::Name);
    if let Some(after) = after {
        query = query.filter(document::Column::Name.gt(after));
    }
    Ok(query
        .all(conn)
        .await
        .map_err(db_error("list documents"))?
        .into_iter()
        .map(document_record)
        .collect())
}

pub async fn count_documents<C: ConnectionTrait>(conn: &C) -> Result<u64, ApiError> {
    document::Entity::find()
        .count(conn)
        .await
        .map_err(db_error("count documents"))
}

/// Inserts a new document with its first version. A name taken meanwhile by a concurrent
/// create is DocumentAlreadyExists, not an internal error.
pub async fn insert_document<C: ConnectionTrait>(
    conn: &C,
    record: &DocumentRecord,
    first: &VersionRecord,
) -> Result<(), ApiError> {
    let inserted = document::ActiveModel {
        name: Set(record.name.clone()),
        owner: Set(record.owner.clone()),
        document_type: Set(record.document_type.clone()),
        default_version: Set(record.default_version),
        latest_version: Set(record.latest_version),
        last_issued_version: Set(record.last_issued_version),
        target_type: Set(record.target_type.clone()),
        created_at: Set(record.created_at),
    }
    .insert(conn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(ApiError::already_exists(format!(
                "document {} already exists",
                record.name
            ))
            .with_reason("DocumentAlreadyExists"));
        }
        Err(error) => return Err(db_error("insert document")(error)),
    }
    insert_version(conn, first).await
}

pub async fn insert_version<C: ConnectionTrait>(
    conn: &C,
    record: &VersionRecord,
) -> Result<(), ApiError> {
    let inserted = version::ActiveModel {
        name: Set(record.name.clone()),
        version: Set(record.version),
        version_name: Set(record.version_name.clone()),
        content: Set(record.content.clone()),
        format: Set(record.format.clone()),
        schema_version: Set(record.schema_version.clone()),
        sha256: Set(record.sha256.clone()),
        display_name: Set(record.display_name.clone()),
        description: Set(record.description.clone()),
        parameters: Set(record.parameters.clone()),
        platform_types: Set(record.platform_types.clone()),
        target_type: Set(record.target_type.clone()),
        created_at: Set(record.created_at),
    }
    .insert(conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        // The version number is claimed by `advance_latest` first, so only the name can clash.
        Err(error) if is_unique_violation(&error) => Err(ApiError::already_exists(format!(
            "document {}: version name {} is already used",
            record.name,
            record.version_name.as_deref().unwrap_or_default()
        ))
        .with_reason("DuplicateDocumentVersionName")),
        Err(error) => Err(db_error("insert document version")(error)),
    }
}

pub async fn get_version<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    number: i32,
) -> Result<Option<VersionRecord>, ApiError> {
    Ok(version::Entity::find_by_id((name.to_owned(), number))
        .one(conn)
        .await
        .map_err(db_error("read document version"))?
        .map(version_record))
}

pub async fn get_version_by_name<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    version_name: &str,
) -> Result<Option<VersionRecord>, ApiError> {
    Ok(version::Entity::find()
        .filter(version::Column::Name.eq(name))
        .filter(version::Column::VersionName.eq(version_name))
        .one(conn)
        .await
        .map_err(db_error("read document version"))?
        .map(version_record))
}

pub async fn count_versions<C: ConnectionTrait>(conn: &C, name: &str) -> Result<u64, ApiError> {
    version::Entity::find()
        .filter(version::Column::Name.eq(name))
        .count(conn)
        .await
        .map_err(db_error("count document versions"))
}

/// Versions oldest first, after `after`, at most `limit`.
pub async fn list_versions<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    after: Option<i32>,
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
        .map_err(db_error("list document versions"))?
        .into_iter()
        .map(version_record)
        .collect())
}

/// Claims version `new_version` when the latest is still `expected_latest`. False when
/// another writer got there first: the caller built on a stale version.
pub async fn advance_latest<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    expected_latest: i32,
    new_version: i32,
    target_type: &str,
) -> Result<bool, ApiError> {
    let result = document::Entity::update_many()
        .col_expr(document::Column::LatestVersion, Expr::value(new_version))
        .col_expr(
            document::Column::LastIssuedVersion,
            Expr::value(new_version),
        )
        .col_expr(document::Column::TargetType, Expr::value(target_type))
        .filter(document::Column::Name.eq(name))
        .filter(document::Column::LatestVersion.eq(expected_latest))
        .exec(conn)
        .await
        .map_err(db_error("advance latest document version"))?;
    Ok(result.rows_affected == 1)
}

pub async fn set_default_version<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    number: i32,
) -> Result<(), ApiError> {
    document::Entity::update_many()
        .col_expr(document::Column::DefaultVersion, Expr::value(number))
        .filter(document::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("set default document version"))?;
    Ok(())
}

/// Deletes one version and moves `latest_version` to the highest one left.
pub async fn delete_version<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    number: i32,
) -> Result<(), ApiError> {
    version::Entity::delete_many()
        .filter(version::Column::Name.eq(name))
        .filter(version::Column::Version.eq(number))
        .exec(conn)
        .await
        .map_err(db_error("delete document version"))?;
    let highest = version::Entity::find()
        .filter(version::Column::Name.eq(name))
        .order_by_desc(version::Column::Version)
        .one(conn)
        .await
        .map_err(db_error("read latest document version"))?;
    if let Some(highest) = highest {
        document::Entity::update_many()
            .col_expr(
                document::Column::LatestVersion,
                Expr::value(highest.version),
            )
            .filter(document::Column::Name.eq(name))
            .exec(conn)
            .await
            .map_err(db_error("update latest document version"))?;
    }
    Ok(())
}

/// Deletes a document with every version, share and tag.
pub async fn delete_document<C: ConnectionTrait>(conn: &C, name: &str) -> Result<(), ApiError> {
    version::Entity::delete_many()
        .filter(version::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete document versions"))?;
    share::Entity::delete_many()
        .filter(share::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete document shares"))?;
    tag::Entity::delete_many()
        .filter(tag::Column::Name.eq(name))
        .exec(conn)
        .await
        .map_err(db_error("delete document tags"))?;
    document::Entity::delete_by_id(name.to_owned())
        .exec(conn)
        .await
        .map_err(db_error("delete document"))?;
    Ok(())
}

/// Whom a document is shared with, in order.
pub async fn shares<C: ConnectionTrait>(conn: &C, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(share::Entity::find()
        .filter(share::Column::Name.eq(name))
        .order_by_asc(share::Column::Principal)
        .all(conn)
        .await
        .map_err(db_error("read document shares"))?
        .into_iter()
        .map(|row| row.principal)
        .collect())
}

/// The names of the documents shared with any of `principals`.
pub async fn names_shared_with<C: ConnectionTrait>(
    conn: &C,
    principals: &[String],
) -> Result<BTreeSet<String>, ApiError> {
    Ok(share::Entity::find()
        .filter(share::Column::Principal.is_in(principals.iter().cloned()))
        .all(conn)
        .await
        .map_err(db_error("read document shares"))?
        .into_iter()
        .map(|row| row.name)
        .collect())
}

/// Adds and removes shares; adding an existing one or removing an absent one is a no-op.
pub async fn modify_shares<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    add: &BTreeSet<String>,
    remove: &BTreeSet<String>,
) -> Result<(), ApiError> {
    if !remove.is_empty() {
        share::Entity::delete_many()
            .filter(share::Column::Name.eq(name))
            .filter(share::Column::Principal.is_in(remove.iter().cloned()))
            .exec(conn)
            .await
            .map_err(db_error("delete document shares"))?;
    }
    let existing: BTreeSet<String> = shares(conn, name).await?.into_iter().collect();
    for principal in add.difference(&existing) {
        share::ActiveModel {
            name: Set(name.to_owned()),
            principal: Set(principal.clone()),
        }
        .insert(conn)
        .await
        .map_err(db_error("insert document share"))?;
    }
    Ok(())
}

/// A document's tags in key order.
pub async fn tags<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(tag::Entity::find()
        .filter(tag::Column::Name.eq(name))
        .all(conn)
        .await
        .map_err(db_error("read document tags"))?
        .into_iter()
        .map(|row| (row.key, row.value))
        .collect())
}

/// Tags of several documents at once, for listings.
pub async fn tags_of<C: ConnectionTrait>(
    conn: &C,
    names: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ApiError> {
    let mut by_name: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if names.is_empty() {
        return Ok(by_name);
    }
    for row in tag::Entity::find()
        .filter(tag::Column::Name.is_in(names.iter().cloned()))
        .all(conn)
        .await
        .map_err(db_error("read document tags"))?
    {
        by_name
            .entry(row.name)
            .or_default()
            .insert(row.key, row.value);
    }
    Ok(by_name)
}

/// Adds or overwrites tags.
pub async fn put_tags<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if tags.is_empty() {
        return Ok(());
    }
    tag::Entity::delete_many()
        .filter(tag::Column::Name.eq(name))
        .filter(tag::Column::Key.is_in(tags.keys().cloned()))
        .exec(conn)
        .await
        .map_err(db_error("replace document tags"))?;
    for (key, value) in tags {
        tag::ActiveModel {
            name: Set(name.to_owned()),
            key: Set(key.clone()),
            value: Set(value.clone()),
        }
        .insert(conn)
        .await
        .map_err(db_error("insert document tag"))?;
    }
    Ok(())
}

pub async fn remove_tags<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    keys: &BTreeSet<String>,
) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    tag::Entity::delete_many()
        .filter(tag::Column::Name.eq(name))
        .filter(tag::Column::Key.is_in(keys.iter().cloned()))
        .exec(conn)
        .await
        .map_err(db_error("delete document tags"))?;
    Ok(())
}

/// The default version of each named document, for listings.
pub async fn default_versions<C: ConnectionTrait>(
    conn: &C,
    documents: &[DocumentRecord],
) -> Result<BTreeMap<String, VersionRecord>, ApiError> {
    let mut by_name = BTreeMap::new();
    if documents.is_empty() {
        return Ok(by_name);
    }
    let mut condition = sea_orm::Condition::any();
    for document in documents {
        condition = condition.add(
            sea_orm::Condition::all()
                .add(version::Column::Name.eq(document.name.as_str()))
                .add(version::Column::Version.eq(document.default_version)),
        );
    }
    for row in version::Entity::find()
        .filter(condition)
        .all(conn)
        .await
        .map_err(db_error("read default document versions"))?
    {
        by_name.insert(row.name.clone(), version_record(row));
    }
    Ok(by_name)
}
