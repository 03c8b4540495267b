//! `VerifyLayer`: the service-side tower layer that verifies the gateway's internal token on
//! every call and puts the caller's `AuthContext` into the request extensions.
//!
//! Rejections are answered here, as gRPC errors (HTTP 200 with `grpc-status`), without
//! calling the inner service. Verified tokens are cached briefly, since a busy service sees
//! the same token many times a second and an Ed25519 check costs tens of microseconds.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::error::AuthError;
use crate::jwt::TokenVerifier;
use crate::principal::{AuthContext, Principal};

/// The only gRPC service a node principal may call.
pub const AGENT_CHANNEL_PREFIX: &str = "/bosun.agent.v1.AgentChannel/";
/// Default bound on cached tokens.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Longest a verified token is served from the cache, whatever its `exp`.
pub const CACHE_TTL_SECONDS: i64 = 60;

/// Verifies bearer tokens for one audience; see the module docs.
#[derive(Clone)]
pub struct VerifyLayer {
    verifier: Arc<TokenVerifier>,
    audience: &'static str,
    public_paths: Arc<Vec<String>>,
    cache: Arc<TokenCache>,
}

impl VerifyLayer {
    /// Requires tokens for `audience` (normally `INTERNAL_AUDIENCE`) on every path not made
    /// public.
    pub fn new(verifier: Arc<TokenVerifier>, audience: &'static str) -> Self {
        VerifyLayer {
            verifier,
            audience,
            public_paths: Arc::new(Vec::new()),
            cache: Arc::new(TokenCache::new(DEFAULT_CACHE_CAPACITY)),
        }
    }

    /// Lets calls to `path_or_prefix` through without a token: an exact gRPC path
    /// (`/pkg.Svc/Method`), or a prefix ending in `/` (`/grpc.health.v1.Health/`).
    ///
    /// # Panics
    /// If `path_or_prefix` does not start with `/`: such a rule could never match, and the
    /// mistake should show at start-up.
    pub fn public_path(mut self, path_or_prefix: &str) -> Self {
        assert!(
            path_or_prefix.starts_with('/'),
            "public path {path_or_prefix:?} must start with /"
        );
        Arc::make_mut(&mut self.public_paths).push(path_or_prefix.to_owned());
        self
    }

    /// Bounds the verified-token cache to `capacity` entries (0 turns caching off).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = Arc::new(TokenCache::new(capacity));
        self
    }

    fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|public| {
            if public.ends_with('/') {
                path.starts_with(public.as_str())
            } else {
                path == public
            }
        })
    }

    /// The caller's context for a non-public call, or why it is refused.
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        path: &str,
    ) -> Result<AuthContext, AuthError> {
        let token = bearer_token(headers)?;
        let key = TokenCache::key(token);
        let now = chrono::Utc::now().timestamp();
        let context = match self.cache.get(&key, now) {
            Some(context) => context,
            None => {
                let claims = self.verifier.verify(token, self.audience)?;
                let valid_until = claims.exp.min(now.saturating_add(CACHE_TTL_SECONDS));
                let context = AuthContext::from_claims(claims, token)?;
                self.cache.insert(key, context.clone(), valid_until, now);
                context
            }
        };
        self.admit(&context, path)?;
        Ok(context)
    }

    /// The rules about the call itself, for a context however it was verified: it has not
    /// expired, and nodes call only the agent channel.
    fn admit(&self, context: &AuthContext, path: &str) -> Result<(), AuthError> {
        if context.expires_at <= chrono::Utc::now() {
            return Err(AuthError::InvalidToken("token expired".to_owned()));
        }
        if let Principal::Node(_) = context.principal
            && !path.starts_with(AGENT_CHANNEL_PREFIX)
        {
            return Err(AuthError::PermissionDenied {
                principal: context.principal.to_string(),
                action: "call".to_owned(),
                resource: path.to_owned(),
            });
        }
        Ok(())
    }
}

/// A caller context the gateway's edge verified from the internal token it minted, handed
/// to services in the same process as a request extension so they need not verify that
/// token again. Extensions never come off the wire: only in-process code can set this, and
/// `VerifyService` removes it from every request it passes on.
#[derive(Clone)]
pub struct EdgeVerified(pub Arc<AuthContext>);

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service `VerifyLayer` wraps around an inner one.
#[derive(Clone)]
pub struct VerifyService<S> {
    inner: S,
    layer: VerifyLayer,
}

impl<S, B, ResBody> Service<http::Request<B>> for VerifyService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let verified = request.extensions_mut().remove::<EdgeVerified>();
        let path = request.uri().path();
        if self.layer.is_public(path) {
            // Extensions never come off the wire, but make sure a public handler cannot see
            // a context some other layer put there.
            request.extensions_mut().remove::<AuthContext>();
            return Either::Right(self.inner.call(request));
        }
        let authenticated = match verified {
            Some(EdgeVerified(context)) => self
                .layer
                .admit(&context, path)
                .map(|()| (*context).clone()),
            None => self.layer.authenticate(request.headers(), path),
        };
        match authenticated {
            Ok(context) => {
                request.extensions_mut().insert(context);
                Either::Right(self.inner.call(request))
            }
            Err(error) => {
                // Handled here, so logged here; the reason is generic and holds no token.
                tracing::debug!(path, error = %error, "refused call");
                let status = tonic::Status::from(bosun_core::ApiError::from(error));
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

/// The token from `authorization: Bearer <token>`; the scheme is case-insensitive.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        // Two credentials: which one a proxy or handler would pick is unclear, so refuse.
        return Err(AuthError::InvalidToken(
            "more than one authorization header".to_owned(),
        ));
    }
    let malformed = || AuthError::InvalidToken("authorization must be Bearer <token>".to_owned());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// Verified contexts by SHA-256 of the token. A hash, not the token, is the key so the map
/// holds no second copy of every credential for the key; SHA-256 so no two tokens collide.
struct TokenCache {
    capacity: usize,
    entries: RwLock<HashMap<[u8; 32], CachedContext>>,
}

struct CachedContext {
    context: AuthContext,
    /// Unix seconds; the entry serves while `now < valid_until`, so never at or after `exp`.
    valid_until: i64,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        digest
            .as_ref()
            .try_into()
            .expect("a sha-256 digest is 32 bytes")
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<AuthContext> {
        // A panic elsewhere while holding the lock leaves whole entries behind, never torn
        // ones, so a poisoned map is still safe to use.
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|entry| now < entry.valid_until)
            .map(|entry| entry.context.clone())
    }

    fn insert(&self, key: [u8; 32], context: AuthContext, valid_until: i64, now: i64) {
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, entry| now < entry.valid_until);
            // Still full of live tokens: drop an arbitrary tenth, so the next inserts do not
            // each pay for a full sweep.
            if entries.len() >= self.capacity {
                let target = self.capacity - self.capacity.div_ceil(10);
                let excess = entries.len() - target;
                let victims: Vec<[u8; 32]> = entries.keys().take(excess).copied().collect();
                for victim in victims {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            key,
            CachedContext {
                context,
                valid_until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let mut headers = http::HeaderMap::new();
        assert!(matches!(
            bearer_token(&headers),
            Err(AuthError::MissingToken)
        ));
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("abc", None),
        ] {
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static(value),
            );
            assert_eq!(bearer_token(&headers).ok(), expected, "{value:?}");
        }
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = TokenCache::new(10);
        let context = AuthContext {
            principal: Principal::User("alice".into()),
            session_id: String::new(),
            roles: vec![],
            policies: Arc::new(vec![]),
            expires_at: chrono::Utc::now(),
            token: Arc::from("t"),
        };
        for i in 0..100 {
            cache.insert(TokenCache::key(&i.to_string()), context.clone(), 1_000, 0);
            assert!(cache.entries.read().expect("not poisoned").len() <= 10);
        }
        // Expired at insert time: not stored at all.
        cache.insert(TokenCache::key("late"), context, 5, 5);
        assert!(cache.get(&TokenCache::key("late"), 4).is_none());
    }
}
