//! Turns a client's bearer token into the internal token services verify.
//!
//! The client token (audience `bosun`, about an hour) says who the caller is. For each call
//! the gateway checks that its session still stands (the user exists and has not changed its
//! password since; the API key is not revoked or expired), loads the policies of the
//! caller's roles, and mints an internal token (audience `bosun-internal`, 60 s) that carries
//! both. Both lookups are cached for `cache_ttl` (20 s by default): a revoked key or a changed
//! policy takes effect on every replica within `cache_ttl` plus the internal token's reuse
//! window, which is also `cache_ttl` — under 60 s with the defaults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosun_auth::{
    AuthContext, CLIENT_AUDIENCE, Claims, INTERNAL_AUDIENCE, PolicyDocument, Principal,
    TokenIssuer, TokenVerifier,
};
use bosun_core::ApiError;
use chrono::Utc;
use sea_orm::DatabaseConnection;

use crate::identity;

/// Entries past this many are swept (expired first, then all) so a flood of distinct tokens
/// cannot grow memory without bound.
const MAX_CACHE_ENTRIES: usize = 50_000;

/// Session ids of tokens exchanged from API keys start with this.
pub const API_KEY_PREFIX: &str = "ak-";

/// The session id of a password login: it names the password it was made with (by the time
/// that password was set, in milliseconds), so changing the password ends every session made
/// with the old one — exactly, with no clock-granularity window.
pub fn login_session_id(password_set_at: chrono::DateTime<Utc>) -> String {
    format!(
        "login-{}-{}",
        password_set_at.timestamp_millis(),
        uuid::Uuid::new_v4().simple()
    )
}

fn login_password_set_at(session_id: &str) -> Option<i64> {
    session_id
        .strip_prefix("login-")?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

/// What a client token was exchanged for.
#[derive(Clone, Debug)]
pub struct Exchanged {
    /// The internal token to forward to services.
    pub internal_token: Arc<str>,
    /// `Bearer <internal token>`, built once.
    pub authorization: http::HeaderValue,
    /// What a service in this process would verify from the internal token (handed over
    /// as `EdgeVerified` instead).
    pub context: Arc<AuthContext>,
    pub principal: Arc<Principal>,
    /// `exp` of the client token (seconds since the epoch).
    pub client_expires_at: i64,
}

#[derive(Clone)]
struct Session {
    roles: Vec<String>,
    policies: Vec<PolicyDocument>,
}

struct Cached<T> {
    value: T,
    until: Instant,
}

pub struct Authenticator {
    db: DatabaseConnection,
    issuer: Arc<TokenIssuer>,
    verifier: Arc<TokenVerifier>,
    cache_ttl: Duration,
    internal_ttl: Duration,
    sessions: Mutex<HashMap<String, Cached<Result<Session, String>>>>,
    exchanged: Mutex<HashMap<String, Cached<Exchanged>>>,
}

fn sweep<T>(map: &mut HashMap<String, Cached<T>>, now: Instant) {
    if map.len() >= MAX_CACHE_ENTRIES {
        map.retain(|_, entry| entry.until > now);
        if map.len() >= MAX_CACHE_ENTRIES {
            map.clear();
        }
    }
}

impl Authenticator {
    pub fn new(
        db: DatabaseConnection,
        issuer: Arc<TokenIssuer>,
        verifier: Arc<TokenVerifier>,
        cache_ttl: Duration,
        internal_ttl: Duration,
    ) -> Self {
        Authenticator {
            db,
            issuer,
            verifier,
            cache_ttl,
            internal_ttl,
            sessions: Mutex::new(HashMap::new()),
            exchanged: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies a client token and returns the internal token to forward. A token seen
    /// within `cache_ttl` is answered from memory without a signature check: the entry was
    /// verified when it was made and never outlives the client token.
    pub async fn exchange(&self, client_token: &str) -> Result<Exchanged, ApiError> {
        let now = Instant::now();
        if let Some(hit) = self
            .exchanged
            .lock()
            .map_err(ApiError::internal)?
            .get(client_token)
            .filter(|entry| entry.until > now)
        {
            return Ok(hit.value.clone());
        }
        let claims = self
            .verifier
            .verify(client_token, CLIENT_AUDIENCE)
            .map_err(ApiError::from)?;
        let principal = Principal::parse(&claims.sub)
            .map_err(|_| ApiError::Unauthenticated("token names no valid principal".into()))?;
        // A node speaks only through the agent channel, whose stream proves the node's key
        // itself; a token naming a node is refused for everything else.
        if let Principal::Node(_) = principal {
            return Err(ApiError::PermissionDenied(format!(
                "{principal} may call only bosun.agent.v1.AgentChannel"
            )));
        }
        let session = self.session(&principal, &claims).await?;
        let (token, internal_claims) = self
            .issuer
            .issue(
                &principal,
                INTERNAL_AUDIENCE,
                &claims.sid,
                session.roles,
                session.policies,
                self.internal_ttl,
            )
            .map_err(ApiError::from)?;
        let authorization =
            http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(ApiError::internal)?;
        let context = AuthContext::from_claims(internal_claims, &token).map_err(ApiError::from)?;
        let exchanged = Exchanged {
            authorization,
            context: Arc::new(context),
            internal_token: Arc::from(token),
            principal: Arc::new(principal),
            client_expires_at: claims.exp,
        };
        // Never reuse an internal token past the client token's own expiry.
        let client_left =
            Duration::from_secs(u64::try_from(claims.exp - Utc::now().timestamp()).unwrap_or(0));
        let until = now + self.cache_ttl.min(client_left);
        let mut cache = self.exchanged.lock().map_err(ApiError::internal)?;
        sweep(&mut cache, now);
        cache.insert(
            client_token.to_owned(),
            Cached {
                value: exchanged.clone(),
                until,
            },
        );
        Ok(exchanged)
    }

    /// Forgets cached sessions and tokens, so changes made on this replica apply at once.
    /// Other replicas catch up within `cache_ttl`.
    pub fn invalidate(&self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.clear();
        }
        if let Ok(mut exchanged) = self.exchanged.lock() {
            exchanged.clear();
        }
    }

    async fn session(&self, principal: &Principal, claims: &Claims) -> Result<Session, ApiError> {
        let key = format!("{principal}|{}|{}", claims.sid, claims.iat);
        let now = Instant::now();
        if let Some(hit) = self
            .sessions
            .lock()
            .map_err(ApiError::internal)?
            .get(&key)
            .filter(|entry| entry.until > now)
        {
            return hit.value.clone().map_err(ApiError::Unauthenticated);
        }
        let loaded = self.load_session(principal, claims).await?;
        let mut sessions = self.sessions.lock().map_err(ApiError::internal)?;
        sweep(&mut sessions, now);
        sessions.insert(
            key,
            Cached {
                value: loaded.clone(),
                until: now + self.cache_ttl,
            },
        );
        loaded.map_err(ApiError::Unauthenticated)
    }

    /// Ok(session) or Err(reason the session no longer stands). Store failures are errors
    /// of their own and are not cached.
    async fn load_session(
        &self,
        principal: &Principal,
        claims: &Claims,
    ) -> Result<Result<Session, String>, ApiError> {
        let Principal::User(username) = principal else {
            return Ok(Err(format!("{principal} cannot use client tokens")));
        };
        let Some((_, password_changed_at)) = identity::get_credentials(&self.db, username).await?
        else {
            return Ok(Err(
                "token is no longer valid: the user no longer exists".into()
            ));
        };
        if claims.sid.starts_with(API_KEY_PREFIX) {
            match identity::get_api_key(&self.db, &claims.sid).await? {
                Some(key) if key.username == *username => {
                    if key.revoked_at.is_some() {
                        return Ok(Err(
                            "token is no longer valid: its api key was revoked".into()
                        ));
                    }
                    if key.expires_at.is_some_and(|at| at <= Utc::now()) {
                        return Ok(Err("token is no longer valid: its api key expired".into()));
                    }
                }
                _ => {
                    return Ok(Err(
                        "token is no longer valid: its api key no longer exists".into(),
                    ));
                }
            }
        } else if login_password_set_at(&claims.sid) != Some(password_changed_at.timestamp_millis())
        {
            return Ok(Err(
                "token is no longer valid: the password changed; log in again".into(),
            ));
        }
        let roles = identity::user_roles(&self.db, username).await?;
        let mut policies = Vec::new();
        for document in identity::policy_documents(&self.db, &roles).await? {
            match PolicyDocument::parse(&document) {
                Ok(policy) => policies.push(policy),
                // Stored documents were validated on write; one that no longer parses (after
                // an upgrade tightened the grammar, say) grants nothing rather than failing
                // every call of every holder.
                Err(error) => {
                    tracing::error!(%error, %principal, "stored policy does not parse; ignored")
                }
            }
        }
        Ok(Ok(Session { roles, policies }))
    }
}
