//! `bosun.auth.v1.AuthService`: login, caller identity, users, API keys and roles.
//!
//! Every mutation (and every login attempt) is audited; a change and its audit event commit
//! in one transaction. Denied and failed attempts are audited too, after the rollback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_auth::{
    AuthContext, CLIENT_AUDIENCE, Decision, PolicyDocument, Principal, TokenIssuer, auth_context,
};
use bosun_core::ApiError;
use bosun_core::time::{from_timestamp, to_timestamp};
use bosun_proto::auth::v1 as pb;
use bosun_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use chrono::Utc;
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::authenticator::{API_KEY_PREFIX, Authenticator, login_session_id};
use crate::edge::CLIENT_EXPIRES_AT_HEADER;
use crate::identity::{self, ApiKeyRecord, RoleRecord, UserRecord};
use crate::passwords;

const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: i32 = 100;
const MAX_DESCRIPTION: usize = 256;
const MAX_POLICY_DOCUMENT: usize = 10_240;
const MAX_POLICIES_PER_ROLE: usize = 20;
const API_KEY_SECRET_PREFIX: &str = "bsk_";

pub struct AuthServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    issuer: Arc<TokenIssuer>,
    authenticator: Arc<Authenticator>,
    token_ttl: Duration,
}

impl AuthServiceImpl {
    pub fn new(
        db: DatabaseConnection,
        audit: AuditLog,
        issuer: Arc<TokenIssuer>,
        authenticator: Arc<Authenticator>,
        token_ttl: Duration,
    ) -> Self {
        AuthServiceImpl {
            db,
            audit,
            issuer,
            authenticator,
            token_ttl,
        }
    }

    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }
}

// ---- validation -------------------------------------------------------------------------

fn validate_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if value.is_empty() || value.len() > max || !valid_chars {
        return Err(ApiError::invalid(
            field,
            format!("must be 1-{max} characters of letters, digits and _+=,.@-"),
        ));
    }
    Ok(())
}

fn validate_username(field: &str, value: &str) -> Result<(), ApiError> {
    validate_name(field, value, 64)
}

fn validate_role_name(field: &str, value: &str) -> Result<(), ApiError> {
    validate_name(field, value, 64)
}

fn validate_description(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().count() > MAX_DESCRIPTION || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters without control characters"),
        ));
    }
    Ok(())
}

fn validate_policy(field: &str, document: &str) -> Result<(), ApiError> {
    if document.len() > MAX_POLICY_DOCUMENT {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_POLICY_DOCUMENT} bytes"),
        ));
    }
    PolicyDocument::parse(document).map_err(|error| ApiError::invalid(field, error.to_string()))?;
    Ok(())
}

fn page_size(max_results: i32) -> Result<u64, ApiError> {
    match max_results {
        0 => Ok(DEFAULT_PAGE),
        n if (1..=MAX_PAGE).contains(&n) => Ok(u64::try_from(n).unwrap_or(DEFAULT_PAGE)),
        _ => Err(ApiError::invalid(
            "max_results",
            format!("must be 1-{MAX_PAGE}"),
        )),
    }
}

fn decode_page_token(token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| ApiError::invalid("next_token", "is not a token this server issued"))
}

fn encode_page_token<T>(items: &[T], page: u64, key: impl Fn(&T) -> &str) -> String {
    if (items.len() as u64) < page {
        return String::new();
    }
    items
        .last()
        .map(|item| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key(item)))
        .unwrap_or_default()
}

// ---- conversions ------------------------------------------------------------------------

fn user_to_proto(user: UserRecord) -> pb::User {
    pb::User {
        username: user.username,
        roles: user.roles,
        created_date: Some(to_timestamp(user.created_at)),
        password_last_changed: Some(to_timestamp(user.password_changed_at)),
    }
}

fn role_to_proto(role: RoleRecord) -> pb::Role {
    pb::Role {
        role_name: role.role_name,
        description: role.description,
        policies: role
            .policies
            .into_iter()
            .map(|(policy_name, policy_document)| pb::RolePolicy {
                policy_name,
                policy_document,
            })
            .collect(),
        created_date: Some(to_timestamp(role.created_at)),
        built_in: role.built_in,
    }
}

fn api_key_to_proto(key: ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        key_id: key.key_id,
        username: key.username,
        description: key.description,
        created_date: Some(to_timestamp(key.created_at)),
        expires_at: key.expires_at.map(to_timestamp),
        revoked: key.revoked_at.is_some(),
        last_used_date: key.last_used_at.map(to_timestamp),
    }
}

fn kind_of(principal: &Principal) -> pb::PrincipalKind {
    match principal {
        Principal::User(_) => pb::PrincipalKind::User,
        Principal::Service(_) => pb::PrincipalKind::Service,
        Principal::Node(_) => pb::PrincipalKind::Node,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ApiError::internal("system random number generator failed"))?;
    Ok(bytes)
}

/// Splits `bsk_<key_id>_<random>` into the key id; None when it is not shaped like a key.
fn api_key_id(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(API_KEY_SECRET_PREFIX)?;
    let (key_id, random) = rest.split_once('_')?;
    let hex_part = key_id.strip_prefix(API_KEY_PREFIX)?;
    (hex_part.len() == 16 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) && random.len() >= 32)
        .then_some(key_id)
}

// ---- authorization and audit helpers ----------------------------------------------------

/// Checks `action` on `resource`. Self-service calls (a user acting on itself: its own
/// password and API keys) are allowed unless a policy explicitly denies them.
fn authorize(
    caller: &AuthContext,
    action: &str,
    resource: &str,
    self_service: bool,
) -> Result<(), ApiError> {
    let tags = BTreeMap::new();
    if self_service && caller.decide(action, resource, &tags) != Decision::ExplicitDeny {
        return Ok(());
    }
    caller
        .authorize(action, resource, &tags)
        .map_err(ApiError::from)
}

fn is_self(caller: &AuthContext, username: &str) -> bool {
    matches!(&caller.principal, Principal::User(name) if name == username)
}

/// The target username, defaulting to the caller when empty.
fn target_user(caller: &AuthContext, field: &str, username: &str) -> Result<String, ApiError> {
    if username.is_empty() {
        return match &caller.principal {
            Principal::User(name) => Ok(name.clone()),
            other => Err(ApiError::invalid(
                field,
                format!("is required when the caller is {other}"),
            )),
        };
    }
    validate_username(field, username)?;
    Ok(username.to_owned())
}

impl AuthServiceImpl {
    /// Runs `change` in a transaction after `authorization` passed, and audits the outcome:
    /// with the change on success, on its own after a rollback on failure or denial.
    async fn audited<T, F>(
        &self,
        record: AuditRecord,
        authorization: Result<(), ApiError>,
        change: F,
    ) -> Result<T, ApiError>
    where
        F: for<'t> FnOnce(
            &'t DatabaseTransaction,
        ) -> futures::future::BoxFuture<'t, Result<T, ApiError>>,
    {
        let value = self
            .audit
            .audited(vec![record], authorization, change)
            .await?;
        // Changes to identity apply on this replica at once; others within cache_ttl.
        self.authenticator.invalidate();
        Ok(value)
    }

    async fn issue_client_token(
        &self,
        username: &str,
        session_id: &str,
        ttl: Duration,
    ) -> Result<pb::LoginResponse, ApiError> {
        let roles = identity::user_roles(&self.db, username).await?;
        let principal = Principal::User(username.to_owned());
        let (token, claims) = self
            .issuer
            .issue(
                &principal,
                CLIENT_AUDIENCE,
                session_id,
                roles,
                Vec::new(),
                ttl,
            )
            .map_err(ApiError::from)?;
        Ok(pb::LoginResponse {
            token,
            expires_at: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
            principal: principal.to_string(),
        })
    }

    async fn login(
        &self,
        request: &Request<pb::LoginRequest>,
    ) -> Result<pb::LoginResponse, ApiError> {
        let body = request.get_ref();
        let failed = || ApiError::Unauthenticated("invalid credentials".into());
        if !body.api_key.is_empty() {
            if !body.username.is_empty() || !body.password.is_empty() {
                return Err(ApiError::invalid(
                    "api_key",
                    "give either api_key, or username and password, not both",
                ));
            }
            let record = AuditRecord::anonymous(request, "auth:Login", "api-key:unknown");
            let Some(key_id) = api_key_id(&body.api_key) else {
                self.audit
                    .record(record.outcome(AuditOutcome::Failure(tonic::Code::Unauthenticated)))
                    .await?;
                return Err(failed());
            };
            let record = AuditRecord {
                resource: format!("api-key:{key_id}"),
                ..record
            };
            let key = identity::get_api_key(&self.db, key_id).await?;
            let presented = sha256_hex(body.api_key.as_bytes());
            let usable = key.filter(|key| {
                let matches: bool =
                    subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), key.secret_hash.as_bytes())
                        .into();
                matches
                    && key.revoked_at.is_none()
                    && key.expires_at.is_none_or(|at| at > Utc::now())
            });
            let Some(key) = usable else {
                self.audit
                    .record(record.outcome(AuditOutcome::Failure(tonic::Code::Unauthenticated)))
                    .await?;
                return Err(failed());
            };
            let mut ttl = self.token_ttl;
            if let Some(expires_at) = key.expires_at {
                let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
                ttl = ttl.min(left.max(Duration::from_secs(1)));
            }
            identity::touch_api_key(&self.db, key_id).await?;
            let response = self
                .issue_client_token(&key.username, &key.key_id, ttl)
                .await?;
            self.audit
                .record(record.by(response.principal.clone()))
                .await?;
            return Ok(response);
        }
        validate_username("username", &body.username)?;
        if body.password.is_empty() {
            return Err(ApiError::invalid("password", "is required"));
        }
        let record =
            AuditRecord::anonymous(request, "auth:Login", &format!("user:{}", body.username));
        let stored = identity::get_credentials(&self.db, &body.username).await?;
        let password_set_at = stored.as_ref().map(|(_, changed_at)| *changed_at);
        let matches = passwords::verify(
            SecretString::from(body.password.clone()),
            stored.map(|(hash, _)| hash),
        )
        .await?;
        let Some(password_set_at) = password_set_at.filter(|_| matches) else {
            self.audit
                .record(record.outcome(AuditOutcome::Failure(tonic::Code::Unauthenticated)))
                .await?;
            return Err(failed());
        };
        let session_id = login_session_id(password_set_at);
        let response = self
            .issue_client_token(&body.username, &session_id, self.token_ttl)
            .await?;
        self.audit
            .record(
                record
                    .by(response.principal.clone())
                    .details(serde_json::json!({ "session_id": session_id })),
            )
            .await?;
        Ok(response)
    }
}

#[tonic::async_trait]
impl AuthService for AuthServiceImpl {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Ok(Response::new(AuthServiceImpl::login(self, &request).await?))
    }

    async fn get_caller_identity(
        &self,
        request: Request<pb::GetCallerIdentityRequest>,
    ) -> Result<Response<pb::GetCallerIdentityResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(pb::GetCallerIdentityResponse {
            kind: kind_of(&caller.principal) as i32,
            principal: caller.principal.to_string(),
            name: caller.principal.name().to_owned(),
            roles: caller.roles.clone(),
            session_id: caller.session_id.clone(),
            expires_at: request
                .metadata()
                .get(CLIENT_EXPIRES_AT_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate_username("username", &body.username)?;
        let password = SecretString::from(body.password.clone());
        passwords::validate("password", &password)?;
        for (index, role) in body.roles.iter().enumerate() {
            validate_role_name(&format!("roles[{index}]"), role)?;
        }
        let resource = format!("user:{}", body.username);
        let record = AuditRecord::for_request(&request, &caller, "auth:CreateUser", &resource)
            .details(serde_json::json!({ "roles": body.roles }));
        let authorization = authorize(&caller, "auth:CreateUser", &resource, false);
        let hash = if authorization.is_ok() {
            passwords::hash(password).await?
        } else {
            String::new()
        };
        let (username, roles) = (body.username.clone(), body.roles.clone());
        let user = self
            .audited(record, authorization, move |txn| {
                Box::pin(async move { identity::create_user(txn, &username, hash, &roles).await })
            })
            .await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = auth_context(&request)?;
        let username = target_user(&caller, "username", &request.get_ref().username)?;
        authorize(
            &caller,
            "auth:GetUser",
            &format!("user:{username}"),
            is_self(&caller, &username),
        )?;
        let user = identity::get_user(&self.db, &username)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("user {username} not found")))?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let page = page_size(body.max_results)?;
        let after = decode_page_token(&body.next_token)?;
        authorize(&caller, "auth:ListUsers", "user:*", false)?;
        let users = identity::list_users(&self.db, after.as_deref(), page).await?;
        let next_token = encode_page_token(&users, page, |user| &user.username);
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_to_proto).collect(),
            next_token,
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = auth_context(&request)?;
        let username = request.get_ref().username.clone();
        validate_username("username", &username)?;
        if is_self(&caller, &username) {
            return Err(ApiError::failed_precondition(format!(
                "user {username} cannot delete itself"
            ))
            .into());
        }
        let resource = format!("user:{username}");
        let record = AuditRecord::for_request(&request, &caller, "auth:DeleteUser", &resource);
        let authorization = authorize(&caller, "auth:DeleteUser", &resource, false);
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::delete_user(txn, &username).await })
        })
        .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = auth_context(&request)?;
        let username = target_user(&caller, "username", &request.get_ref().username)?;
        let password = SecretString::from(request.get_ref().new_password.clone());
        passwords::validate("new_password", &password)?;
        let resource = format!("user:{username}");
        let record = AuditRecord::for_request(&request, &caller, "auth:ChangePassword", &resource);
        let authorization = authorize(
            &caller,
            "auth:ChangePassword",
            &resource,
            is_self(&caller, &username),
        );
        let hash = if authorization.is_ok() {
            passwords::hash(password).await?
        } else {
            String::new()
        };
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::set_password(txn, &username, hash).await })
        })
        .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn attach_user_role(
        &self,
        request: Request<pb::AttachUserRoleRequest>,
    ) -> Result<Response<pb::AttachUserRoleResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate_username("username", &body.username)?;
        validate_role_name("role_name", &body.role_name)?;
        let resource = format!("user:{}", body.username);
        let record = AuditRecord::for_request(&request, &caller, "auth:AttachUserRole", &resource)
            .details(serde_json::json!({ "role_name": body.role_name }));
        let authorization = authorize(&caller, "auth:AttachUserRole", &resource, false);
        let (username, role_name) = (body.username.clone(), body.role_name.clone());
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::attach_role(txn, &username, &role_name).await })
        })
        .await?;
        Ok(Response::new(pb::AttachUserRoleResponse {}))
    }

    async fn detach_user_role(
        &self,
        request: Request<pb::DetachUserRoleRequest>,
    ) -> Result<Response<pb::DetachUserRoleResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate_username("username", &body.username)?;
        validate_role_name("role_name", &body.role_name)?;
        let resource = format!("user:{}", body.username);
        let record = AuditRecord::for_request(&request, &caller, "auth:DetachUserRole", &resource)
            .details(serde_json::json!({ "role_name": body.role_name }));
        let authorization = authorize(&caller, "auth:DetachUserRole", &resource, false);
        let (username, role_name) = (body.username.clone(), body.role_name.clone());
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::detach_role(txn, &username, &role_name).await })
        })
        .await?;
        Ok(Response::new(pb::DetachUserRoleResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let username = target_user(&caller, "username", &body.username)?;
        validate_description("description", &body.description)?;
        let expires_at = body
            .expires_at
            .as_ref()
            .map(|value| from_timestamp("expires_at", value))
            .transpose()?;
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(ApiError::invalid("expires_at", "must be in the future").into());
        }
        let key_id = format!("{API_KEY_PREFIX}{}", hex::encode(random_bytes::<8>()?));
        let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let secret = format!("{API_KEY_SECRET_PREFIX}{key_id}_{random}");
        let record_key = ApiKeyRecord {
            key_id: key_id.clone(),
            username: username.clone(),
            description: body.description.clone(),
            secret_hash: sha256_hex(secret.as_bytes()),
            created_at: Utc::now(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let resource = format!("user:{username}");
        let record = AuditRecord::for_request(&request, &caller, "auth:CreateApiKey", &resource)
            .details(serde_json::json!({ "key_id": key_id }));
        let authorization = authorize(
            &caller,
            "auth:CreateApiKey",
            &resource,
            is_self(&caller, &username),
        );
        let stored = record_key.clone();
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::insert_api_key(txn, &stored).await })
        })
        .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(api_key_to_proto(record_key)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let username = target_user(&caller, "username", &body.username)?;
        let page = page_size(body.max_results)?;
        let after = decode_page_token(&body.next_token)?;
        authorize(
            &caller,
            "auth:ListApiKeys",
            &format!("user:{username}"),
            is_self(&caller, &username),
        )?;
        let keys = identity::list_api_keys(&self.db, &username, after.as_deref(), page).await?;
        let next_token = encode_page_token(&keys, page, |key| &key.key_id);
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key_to_proto).collect(),
            next_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = auth_context(&request)?;
        let key_id = request.get_ref().key_id.clone();
        if !key_id.starts_with(API_KEY_PREFIX) || key_id.len() != API_KEY_PREFIX.len() + 16 {
            return Err(
                ApiError::invalid("key_id", "must be ak- followed by 16 hex characters").into(),
            );
        }
        let key = identity::get_api_key(&self.db, &key_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("api key {key_id} not found")))?;
        let resource = format!("user:{}", key.username);
        let record = AuditRecord::for_request(&request, &caller, "auth:RevokeApiKey", &resource)
            .details(serde_json::json!({ "key_id": key_id }));
        let authorization = authorize(
            &caller,
            "auth:RevokeApiKey",
            &resource,
            is_self(&caller, &key.username),
        );
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::revoke_api_key(txn, &key_id).await })
        })
        .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate_role_name("role_name", &body.role_name)?;
        validate_description("description", &body.description)?;
        if body.policies.len() > MAX_POLICIES_PER_ROLE {
            return Err(ApiError::invalid(
                "policies",
                format!("at most {MAX_POLICIES_PER_ROLE} per role"),
            )
            .into());
        }
        let mut policies = Vec::with_capacity(body.policies.len());
        for (index, policy) in body.policies.iter().enumerate() {
            validate_name(
                &format!("policies[{index}].policy_name"),
                &policy.policy_name,
                128,
            )?;
            validate_policy(
                &format!("policies[{index}].policy_document"),
                &policy.policy_document,
            )?;
            if policies.iter().any(|(name, _)| name == &policy.policy_name) {
                return Err(ApiError::invalid(
                    format!("policies[{index}].policy_name"),
                    "is used twice",
                )
                .into());
            }
            policies.push((policy.policy_name.clone(), policy.policy_document.clone()));
        }
        let resource = format!("role:{}", body.role_name);
        let record = AuditRecord::for_request(&request, &caller, "auth:CreateRole", &resource);
        let authorization = authorize(&caller, "auth:CreateRole", &resource, false);
        let (role_name, description) = (body.role_name.clone(), body.description.clone());
        let role = self
            .audited(record, authorization, move |txn| {
                Box::pin(async move {
                    identity::create_role(txn, &role_name, &description, false, &policies).await
                })
            })
            .await?;
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(role_to_proto(role)),
        }))
    }

    async fn get_role(
        &self,
        request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::GetRoleResponse>, Status> {
        let caller = auth_context(&request)?;
        let role_name = request.get_ref().role_name.clone();
        validate_role_name("role_name", &role_name)?;
        authorize(&caller, "auth:GetRole", &format!("role:{role_name}"), false)?;
        let role = identity::get_role(&self.db, &role_name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("role {role_name} not found")))?;
        Ok(Response::new(pb::GetRoleResponse {
            role: Some(role_to_proto(role)),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let page = page_size(body.max_results)?;
        let after = decode_page_token(&body.next_token)?;
        authorize(&caller, "auth:ListRoles", "role:*", false)?;
        let roles = identity::list_roles(&self.db, after.as_deref(), page).await?;
        let next_token = encode_page_token(&roles, page, |role| &role.role_name);
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(role_to_proto).collect(),
            next_token,
        }))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let caller = auth_context(&request)?;
        let role_name = request.get_ref().role_name.clone();
        validate_role_name("role_name", &role_name)?;
        let resource = format!("role:{role_name}");
        let record = AuditRecord::for_request(&request, &caller, "auth:DeleteRole", &resource);
        let authorization = authorize(&caller, "auth:DeleteRole", &resource, false);
        self.audited(record, authorization, move |txn| {
            Box::pin(async move { identity::delete_role(txn, &role_name).await })
        })
        .await?;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    async fn put_role_policy(
        &self,
        request: Request<pb::PutRolePolicyRequest>,
    ) -> Result<Response<pb::PutRolePolicyResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate_role_name("role_name", &body.role_name)?;
        validate_name("policy_name", &body.policy_name, 128)?;
        validate_policy("policy_document", &body.policy_document)?;
        let resource = format!("role:{}", body.role_name);
        let record = AuditRecord::for_request(&request, &caller, "auth:PutRolePolicy", &resource)
            .details(serde_json::json!({ "policy_name": body.policy_name }));
        let authorization = authorize(&caller, "auth:PutRolePolicy", &resource, false);
        let (role_name, policy_name, document) = (
            body.role_name.clone(),
            body.policy_name.clone(),
            body.policy_document.clone(),
        );
        self.audited(record, authorization, move |txn| {
            Box::pin(async move {
                let role = identity::get_role(txn, &role_name)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("role {role_name} not found")))?;
                let replacing = role.policies.iter().any(|(name, _)| name == &policy_name);
                if !replacing && role.policies.len() >= MAX_POLICIES_PER_ROLE {
                    return Err(ApiError::resource_exhausted(format!(
                        "role {role_name} already has {MAX_POLICIES_PER_ROLE} policies"
                    )));
                }
                identity::put_role_policy(txn, &role_name, &policy_name, &document).await
            })
        })
        .await?;
        Ok(Response::new(pb::PutRolePolicyResponse {}))
    }

    async fn delete_role_policy(
        &self,
        request: Request<pb::DeleteRolePolicyRequest>,
    ) -> Result<Response<pb::DeleteRolePolicyResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate_role_name("role_name", &body.role_name)?;
        validate_name("policy_name", &body.policy_name, 128)?;
        let resource = format!("role:{}", body.role_name);
        let record =
            AuditRecord::for_request(&request, &caller, "auth:DeleteRolePolicy", &resource)
                .details(serde_json::json!({ "policy_name": body.policy_name }));
        let authorization = authorize(&caller, "auth:DeleteRolePolicy", &resource, false);
        let (role_name, policy_name) = (body.role_name.clone(), body.policy_name.clone());
        self.audited(record, authorization, move |txn| {
            Box::pin(
                async move { identity::delete_role_policy(txn, &role_name, &policy_name).await },
            )
        })
        .await?;
        Ok(Response::new(pb::DeleteRolePolicyResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_ids_are_parsed_only_from_well_formed_secrets() {
        let good = "bsk_ak-0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(api_key_id(good), Some("ak-0123456789abcdef"));
        assert_eq!(api_key_id("bsk_ak-0123_AAAA"), None);
        assert_eq!(api_key_id("ak-0123456789abcdef"), None);
        assert_eq!(api_key_id(""), None);
    }

    #[test]
    fn names_are_validated_with_the_field_named() {
        let error = validate_username("username", "bad name")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("username: must be 1-64 characters of letters, digits and _+=,.@-")
        );
        assert!(validate_username("username", "alice@example.com").is_ok());
    }
}
