//! The gateway: Bosun's one public endpoint. It authenticates every call, owns identity
//! (`bosun.auth.v1.AuthService`: users, API keys, roles), and routes each gRPC service path
//! to the service in this process or to its remote address — a generic HTTP/2 proxy, with no
//! per-RPC code.

mod authenticator;
mod bootstrap;
mod edge;
pub mod host;
pub mod identity;
mod passwords;
mod proxy;
mod service;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bosun_audit::AuditLog;
use bosun_auth::{KeyRing, TokenIssuer, TokenVerifier};
use bosun_telemetry::Metrics;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tonic::service::Routes;

pub use authenticator::{Authenticator, Exchanged};
pub use bootstrap::{Bootstrap, bootstrap};
pub use edge::{Edge, PUBLIC_PATHS, is_public};
pub use proxy::RemoteBackend;
pub use service::AuthServiceImpl;

/// The identity service's full gRPC name.
pub const AUTH_SERVICE: &str = "bosun.auth.v1.AuthService";

/// `[auth]` in bosun.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of every token this deployment issues and accepts.
    pub issuer: String,
    /// Lifetime of the tokens `Login` returns.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Lifetime of the internal tokens the gateway forwards to services.
    #[serde(with = "humantime_serde")]
    pub internal_token_ttl: Duration,
    /// How long a replica trusts what it read about a session (revocation, policies).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The JWT key ring (JSON, mode 0600). Default: `<data_dir>/keys/jwt.json`. Services
    /// running apart need the same file (they read only its public keys).
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: bosun_auth::DEFAULT_ISSUER.to_owned(),
            token_ttl: Duration::from_secs(3600),
            internal_token_ttl: Duration::from_secs(60),
            cache_ttl: Duration::from_secs(20),
            key_file: None,
        }
    }
}

impl AuthConfig {
    /// Checks the limits that keep "a revoked key stops working within 60 s" true.
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.is_empty() {
            return Err("auth.issuer: must not be empty".into());
        }
        if self.token_ttl < Duration::from_secs(60)
            || self.token_ttl > Duration::from_secs(7 * 24 * 3600)
        {
            return Err("auth.token_ttl: must be between 1m and 7days".into());
        }
        if self.internal_token_ttl < Duration::from_secs(5)
            || self.internal_token_ttl > Duration::from_secs(60)
        {
            return Err("auth.internal_token_ttl: must be between 5s and 60s".into());
        }
        if self.cache_ttl > Duration::from_secs(30) {
            return Err(
                "auth.cache_ttl: must be at most 30s so revocations apply within 60s".into(),
            );
        }
        Ok(())
    }
}

/// Everything the gateway needs to be built.
pub struct GatewayDeps {
    pub db: DatabaseConnection,
    pub audit: AuditLog,
    pub keys: KeyRing,
    pub metrics: Metrics,
}

/// Services mounted in this process beside the gateway (none of them the gateway's own).
pub struct LocalServices {
    pub routes: Routes,
    pub names: Vec<&'static str>,
}

/// Builds the gateway's router: `/metrics`, then authentication and routing for every call.
/// Identity migrations must have run (see [`identity::Migrator`]).
pub async fn build(
    config: &AuthConfig,
    routes: &BTreeMap<String, String>,
    deps: GatewayDeps,
    local: LocalServices,
) -> anyhow::Result<axum::Router> {
    config.validate().map_err(anyhow::Error::msg)?;
    let issuer = Arc::new(TokenIssuer::new(deps.keys.active().clone(), &config.issuer));
    // One verifier serves both checks: the audience argument of each `verify` call keeps a
    // client token from passing as an internal one and back.
    let verifier = Arc::new(TokenVerifier::new(
        &deps.keys.verifying_keys(),
        &config.issuer,
    )?);
    let authenticator = Arc::new(Authenticator::new(
        deps.db.clone(),
        issuer.clone(),
        verifier.clone(),
        config.cache_ttl,
        config.internal_token_ttl,
    ));
    let auth_service = AuthServiceImpl::new(
        deps.db.clone(),
        deps.audit.clone(),
        issuer,
        authenticator.clone(),
        config.token_ttl,
    );

    let mut remotes = HashMap::new();
    for (name, url) in routes {
        if name == AUTH_SERVICE {
            anyhow::bail!(
                "routes.\"{name}\": the gateway serves identity itself; remove this route"
            );
        }
        remotes.insert(name.clone(), RemoteBackend::new(name, url)?);
    }
    let mut names = local.names.clone();
    names.push(AUTH_SERVICE);
    let local_router = host::service_router(
        local.routes.add_service(auth_service.into_server()),
        verifier,
        &names,
    )
    .await?;
    let edge = Edge::new(authenticator, local_router, remotes);
    Ok(host::process_router(edge, deps.metrics))
}
