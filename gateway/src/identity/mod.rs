//! The identity store: users, roles, policies and API keys, behind plain async functions that
//! return domain records. sea-orm stays inside this module. Every function takes any
//! connection, so the service can run a change and its audit event in one transaction.

mod entities;
pub mod migrations;

use bosun_core::ApiError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use entities::{api_key, role, role_policy, user, user_role};

pub use migrations::Migrator;

/// The role every bootstrap administrator holds: allow everything.
pub const ADMIN_ROLE: &str = "admin";
pub const ADMIN_POLICY_NAME: &str = "AdministratorAccess";
pub const ADMIN_POLICY_DOCUMENT: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub username: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoleRecord {
    pub role_name: String,
    pub description: String,
    pub built_in: bool,
    pub created_at: DateTime<Utc>,
    /// (policy name, document), in policy-name order.
    pub policies: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub username: String,
    pub description: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

fn db_error(what: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
    move |error| ApiError::internal(format!("{what}: {error}"))
}

fn api_key_record(model: api_key::Model) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: model.key_id,
        username: model.username,
        description: model.description,
        secret_hash: model.secret_hash,
        created_at: model.created_at,
        expires_at: model.expires_at,
        revoked_at: model.revoked_at,
        last_used_at: model.last_used_at,
    }
}

pub async fn count_users<C: ConnectionTrait>(conn: &C) -> Result<u64, ApiError> {
    user::Entity::find()
        .count(conn)
        .await
        .map_err(db_error("count users"))
}

pub async fn user_roles<C: ConnectionTrait>(
    conn: &C,
    username: &str,
) -> Result<Vec<String>, ApiError> {
    Ok(user_role::Entity::find()
        .filter(user_role::Column::Username.eq(username))
        .order_by_asc(user_role::Column::RoleName)
        .all(conn)
        .await
        .map_err(db_error("read user roles"))?
        .into_iter()
        .map(|row| row.role_name)
        .collect())
}

async fn require_role<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
) -> Result<role::Model, ApiError> {
    role::Entity::find_by_id(role_name.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read role"))?
        .ok_or_else(|| ApiError::not_found(format!("role {role_name} not found")))
}

pub async fn create_user<C: ConnectionTrait>(
    conn: &C,
    username: &str,
    password_hash: String,
    roles: &[String],
) -> Result<UserRecord, ApiError> {
    if user::Entity::find_by_id(username.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read user"))?
        .is_some()
    {
        return Err(ApiError::already_exists(format!(
            "user {username} already exists"
        )));
    }
    for role_name in roles {
        require_role(conn, role_name).await?;
    }
    let now = Utc::now();
    user::ActiveModel {
        username: Set(username.to_owned()),
        password_hash: Set(password_hash),
        created_at: Set(now),
        password_changed_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert user"))?;
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    for role_name in &roles {
        user_role::ActiveModel {
            username: Set(username.to_owned()),
            role_name: Set(role_name.clone()),
        }
        .insert(conn)
        .await
        .map_err(db_error("grant role"))?;
    }
    Ok(UserRecord {
        username: username.to_owned(),
        roles,
        created_at: now,
        password_changed_at: now,
    })
}

pub async fn get_user<C: ConnectionTrait>(
    conn: &C,
    username: &str,
) -> Result<Option<UserRecord>, ApiError> {
    let Some(model) = user::Entity::find_by_id(username.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read user"))?
    else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        roles: user_roles(conn, username).await?,
        username: model.username,
        created_at: model.created_at,
        password_changed_at: model.password_changed_at,
    }))
}

/// The password hash and the time it was set, for login and session checks.
pub async fn get_credentials<C: ConnectionTrait>(
    conn: &C,
    username: &str,
) -> Result<Option<(String, DateTime<Utc>)>, ApiError> {
    Ok(user::Entity::find_by_id(username.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read user"))?
        .map(|model| (model.password_hash, model.password_changed_at)))
}

pub async fn list_users<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<UserRecord>, ApiError> {
    let mut query = user::Entity::find().order_by_asc(user::Column::Username);
    if let Some(after) = after {
        query = query.filter(user::Column::Username.gt(after));
    }
    let models = query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list users"))?;
    let mut users = Vec::with_capacity(models.len());
    for model in models {
        users.push(UserRecord {
            roles: user_roles(conn, &model.username).await?,
            username: model.username,
            created_at: model.created_at,
            password_changed_at: model.password_changed_at,
        });
    }
    Ok(users)
}

pub async fn delete_user<C: ConnectionTrait>(conn: &C, username: &str) -> Result<(), ApiError> {
    let deleted = user::Entity::delete_by_id(username.to_owned())
        .exec(conn)
        .await
        .map_err(db_error("delete user"))?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found(format!("user {username} not found")));
    }
    user_role::Entity::delete_many()
        .filter(user_role::Column::Username.eq(username))
        .exec(conn)
        .await
        .map_err(db_error("delete user roles"))?;
    api_key::Entity::delete_many()
        .filter(api_key::Column::Username.eq(username))
        .exec(conn)
        .await
        .map_err(db_error("delete user api keys"))?;
    Ok(())
}

pub async fn set_password<C: ConnectionTrait>(
    conn: &C,
    username: &str,
    password_hash: String,
) -> Result<(), ApiError> {
    let updated = user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(user::Column::PasswordChangedAt, Expr::value(Utc::now()))
        .filter(user::Column::Username.eq(username))
        .exec(conn)
        .await
        .map_err(db_error("update password"))?;
    if updated.rows_affected == 0 {
        return Err(ApiError::not_found(format!("user {username} not found")));
    }
    Ok(())
}

async fn require_user<C: ConnectionTrait>(conn: &C, username: &str) -> Result<(), ApiError> {
    match get_credentials(conn, username).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("user {username} not found"))),
    }
}

pub async fn attach_role<C: ConnectionTrait>(
    conn: &C,
    username: &str,
    role_name: &str,
) -> Result<(), ApiError> {
    require_user(conn, username).await?;
    require_role(conn, role_name).await?;
    let existing = user_role::Entity::find_by_id((username.to_owned(), role_name.to_owned()))
        .one(conn)
        .await
        .map_err(db_error("read user role"))?;
    if existing.is_none() {
        user_role::ActiveModel {
            username: Set(username.to_owned()),
            role_name: Set(role_name.to_owned()),
        }
        .insert(conn)
        .await
        .map_err(db_error("grant role"))?;
    }
    Ok(())
}

pub async fn detach_role<C: ConnectionTrait>(
    conn: &C,
    username: &str,
    role_name: &str,
) -> Result<(), ApiError> {
    require_user(conn, username).await?;
    user_role::Entity::delete_by_id((username.to_owned(), role_name.to_owned()))
        .exec(conn)
        .await
        .map_err(db_error("revoke role"))?;
    Ok(())
}

/// Users holding a role, at most `limit` of them (for "role still in use" errors).
pub async fn role_holders<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
    limit: u64,
) -> Result<Vec<String>, ApiError> {
    Ok(user_role::Entity::find()
        .filter(user_role::Column::RoleName.eq(role_name))
        .order_by_asc(user_role::Column::Username)
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("read role holders"))?
        .into_iter()
        .map(|row| row.username)
        .collect())
}

pub async fn insert_api_key<C: ConnectionTrait>(
    conn: &C,
    record: &ApiKeyRecord,
) -> Result<(), ApiError> {
    require_user(conn, &record.username).await?;
    api_key::ActiveModel {
        key_id: Set(record.key_id.clone()),
        username: Set(record.username.clone()),
        description: Set(record.description.clone()),
        secret_hash: Set(record.secret_hash.clone()),
        created_at: Set(record.created_at),
        expires_at: Set(record.expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert api key"))?;
    Ok(())
}

pub async fn get_api_key<C: ConnectionTrait>(
    conn: &C,
    key_id: &str,
) -> Result<Option<ApiKeyRecord>, ApiError> {
    Ok(api_key::Entity::find_by_id(key_id.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read api key"))?
        .map(api_key_record))
}

pub async fn list_api_keys<C: ConnectionTrait>(
    conn: &C,
    username: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<ApiKeyRecord>, ApiError> {
    let mut query = api_key::Entity::find()
        .filter(api_key::Column::Username.eq(username))
        .order_by_asc(api_key::Column::KeyId);
    if let Some(after) = after {
        query = query.filter(api_key::Column::KeyId.gt(after));
    }
    Ok(query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list api keys"))?
        .into_iter()
        .map(api_key_record)
        .collect())
}

pub async fn revoke_api_key<C: ConnectionTrait>(conn: &C, key_id: &str) -> Result<(), ApiError> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(api_key::Column::KeyId.eq(key_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await
        .map_err(db_error("revoke api key"))?;
    Ok(())
}

pub async fn touch_api_key<C: ConnectionTrait>(conn: &C, key_id: &str) -> Result<(), ApiError> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(Utc::now()))
        .filter(api_key::Column::KeyId.eq(key_id))
        .exec(conn)
        .await
        .map_err(db_error("touch api key"))?;
    Ok(())
}

async fn policies_of<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    Ok(role_policy::Entity::find()
        .filter(role_policy::Column::RoleName.eq(role_name))
        .order_by_asc(role_policy::Column::PolicyName)
        .all(conn)
        .await
        .map_err(db_error("read role policies"))?
        .into_iter()
        .map(|row| (row.policy_name, row.document))
        .collect())
}

pub async fn create_role<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
    description: &str,
    built_in: bool,
    policies: &[(String, String)],
) -> Result<RoleRecord, ApiError> {
    if role::Entity::find_by_id(role_name.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read role"))?
        .is_some()
    {
        return Err(ApiError::already_exists(format!(
            "role {role_name} already exists"
        )));
    }
    let now = Utc::now();
    role::ActiveModel {
        role_name: Set(role_name.to_owned()),
        description: Set(description.to_owned()),
        built_in: Set(built_in),
        created_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert role"))?;
    for (policy_name, document) in policies {
        put_role_policy(conn, role_name, policy_name, document).await?;
    }
    let mut policies = policies.to_vec();
    policies.sort();
    Ok(RoleRecord {
        role_name: role_name.to_owned(),
        description: description.to_owned(),
        built_in,
        created_at: now,
        policies,
    })
}

pub async fn get_role<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
) -> Result<Option<RoleRecord>, ApiError> {
    let Some(model) = role::Entity::find_by_id(role_name.to_owned())
        .one(conn)
        .await
        .map_err(db_error("read role"))?
    else {
        return Ok(None);
    };
    Ok(Some(RoleRecord {
        policies: policies_of(conn, role_name).await?,
        role_name: model.role_name,
        description: model.description,
        built_in: model.built_in,
        created_at: model.created_at,
    }))
}

pub async fn list_roles<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<RoleRecord>, ApiError> {
    let mut query = role::Entity::find().order_by_asc(role::Column::RoleName);
    if let Some(after) = after {
        query = query.filter(role::Column::RoleName.gt(after));
    }
    let models = query
        .limit(limit)
        .all(conn)
        .await
        .map_err(db_error("list roles"))?;
    let mut roles = Vec::with_capacity(models.len());
    for model in models {
        roles.push(RoleRecord {
            policies: policies_of(conn, &model.role_name).await?,
            role_name: model.role_name,
            description: model.description,
            built_in: model.built_in,
            created_at: model.created_at,
        });
    }
    Ok(roles)
}

pub async fn delete_role<C: ConnectionTrait>(conn: &C, role_name: &str) -> Result<(), ApiError> {
    let role = require_role(conn, role_name).await?;
    if role.built_in {
        return Err(ApiError::failed_precondition(format!(
            "role {role_name} is built in and cannot be deleted"
        )));
    }
    let holders = role_holders(conn, role_name, 5).await?;
    if !holders.is_empty() {
        return Err(ApiError::failed_precondition(format!(
            "role {role_name} is still attached to users ({}); detach it first",
            holders.join(", ")
        )));
    }
    role_policy::Entity::delete_many()
        .filter(role_policy::Column::RoleName.eq(role_name))
        .exec(conn)
        .await
        .map_err(db_error("delete role policies"))?;
    role::Entity::delete_by_id(role_name.to_owned())
        .exec(conn)
        .await
        .map_err(db_error("delete role"))?;
    Ok(())
}

pub async fn put_role_policy<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
    policy_name: &str,
    document: &str,
) -> Result<(), ApiError> {
    require_role(conn, role_name).await?;
    role_policy::Entity::delete_by_id((role_name.to_owned(), policy_name.to_owned()))
        .exec(conn)
        .await
        .map_err(db_error("replace role policy"))?;
    role_policy::ActiveModel {
        role_name: Set(role_name.to_owned()),
        policy_name: Set(policy_name.to_owned()),
        document: Set(document.to_owned()),
    }
    .insert(conn)
    .await
    .map_err(db_error("insert role policy"))?;
    Ok(())
}

pub async fn delete_role_policy<C: ConnectionTrait>(
    conn: &C,
    role_name: &str,
    policy_name: &str,
) -> Result<(), ApiError> {
    require_role(conn, role_name).await?;
    let deleted = role_policy::Entity::delete_by_id((role_name.to_owned(), policy_name.to_owned()))
        .exec(conn)
        .await
        .map_err(db_error("delete role policy"))?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found(format!(
            "policy {policy_name} not found in role {role_name}"
        )));
    }
    Ok(())
}

/// Every policy document attached to any of `roles`.
pub async fn policy_documents<C: ConnectionTrait>(
    conn: &C,
    roles: &[String],
) -> Result<Vec<String>, ApiError> {
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    Ok(role_policy::Entity::find()
        .filter(role_policy::Column::RoleName.is_in(roles.iter().cloned()))
        .order_by_asc(role_policy::Column::RoleName)
        .order_by_asc(role_policy::Column::PolicyName)
        .all(conn)
        .await
        .map_err(db_error("read policies"))?
        .into_iter()
        .map(|row| row.document)
        .collect())
}
