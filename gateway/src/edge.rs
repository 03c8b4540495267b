//! The edge service: every call through the gateway passes here. It authenticates the caller,
//! swaps the client token for an internal token, records the caller's address, and routes
//! `/<package>.<Service>/<Method>` to the service in this process or to a remote backend.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use bosun_audit::SOURCE_ADDRESS_HEADER;
use bosun_auth::EdgeVerified;
use bosun_core::ApiError;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::authenticator::Authenticator;
use crate::proxy::RemoteBackend;

/// The metadata key in which the gateway tells services when the caller's client token
/// expires (seconds since the epoch), for `GetCallerIdentity`.
pub const CLIENT_EXPIRES_AT_HEADER: &str = "x-bosun-client-expires-at";

/// Calls that need no token: logging in, health checks and reflection.
pub const PUBLIC_PATHS: &[&str] = &[
    "/bosun.auth.v1.AuthService/Login",
    // The activation code is the credential.
    "/bosun.inventory.v1.NodeService/RegisterManagedInstance",
    // The stream authenticates itself: a signed challenge (see agent.proto).
    "/bosun.agent.v1.AgentChannel/Connect",
    // The same for a session's agent end: the node proves its key over a fresh nonce (see
    // sessions.proto). The client end, `SessionData/Connect`, needs a bearer token.
    "/bosun.sessions.v1.SessionData/Attach",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

pub fn is_public(path: &str) -> bool {
    PUBLIC_PATHS.iter().any(|public| {
        if public.ends_with('/') {
            path.starts_with(public)
        } else {
            path == *public
        }
    })
}

/// The bearer token of `authorization` metadata, if well formed.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

pub fn status_response(error: ApiError) -> Response<Body> {
    tonic::Status::from(error).into_http()
}

/// The routing table: which services live elsewhere, and the in-process router for the rest.
#[derive(Clone)]
pub struct Edge {
    state: Arc<EdgeState>,
}

struct EdgeState {
    authenticator: Arc<Authenticator>,
    local: axum::Router,
    remotes: HashMap<String, RemoteBackend>,
}

impl Edge {
    pub fn new(
        authenticator: Arc<Authenticator>,
        local: axum::Router,
        remotes: HashMap<String, RemoteBackend>,
    ) -> Self {
        Edge {
            state: Arc::new(EdgeState {
                authenticator,
                local,
                remotes,
            }),
        }
    }
}

impl EdgeState {
    async fn handle(&self, mut request: Request<Body>) -> Response<Body> {
        // Only the gateway says where a call came from and when its token ends; drop
        // whatever the client claimed.
        request.headers_mut().remove(SOURCE_ADDRESS_HEADER);
        request.headers_mut().remove(CLIENT_EXPIRES_AT_HEADER);
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string());
        if let Some(value) = peer.and_then(|peer| HeaderValue::from_str(&peer).ok()) {
            request.headers_mut().insert(SOURCE_ADDRESS_HEADER, value);
        }

        let path = request.uri().path().to_owned();
        let mut verified = None;
        if !is_public(&path) {
            let Some(token) = bearer(request.headers()) else {
                return status_response(ApiError::Unauthenticated(
                    "missing bearer token in the authorization metadata".into(),
                ));
            };
            match self.authenticator.exchange(token).await {
                Ok(exchanged) => {
                    tracing::Span::current()
                        .record("principal", tracing::field::display(&exchanged.principal));
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, exchanged.authorization);
                    request.headers_mut().insert(
                        CLIENT_EXPIRES_AT_HEADER,
                        HeaderValue::from(exchanged.client_expires_at),
                    );
                    verified = Some(exchanged.context);
                }
                Err(error) => return status_response(error),
            }
        }

        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if let Some(remote) = self.remotes.get(service) {
            // The backend's span hangs under the gateway's, not the client's.
            bosun_telemetry::inject_http(request.headers_mut());
            return remote.forward(request).await;
        }
        // Services in this process take the context as verified here instead of verifying
        // the internal token again; remote ones verify it.
        if let Some(context) = verified {
            request.extensions_mut().insert(EdgeVerified(context));
        }
        match self.local.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        }
    }
}

impl Service<Request<Body>> for Edge {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(state.handle(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_login_health_and_reflection_are_public() {
        assert!(is_public("/bosun.auth.v1.AuthService/Login"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_public("/bosun.auth.v1.AuthService/LoginX"));
        assert!(!is_public("/bosun.auth.v1.AuthService/GetCallerIdentity"));
        assert!(!is_public("/grpc.health.v1.HealthX/Check"));
        // A session's agent end proves its key in the stream; the client end needs a token.
        assert!(is_public("/bosun.sessions.v1.SessionData/Attach"));
        assert!(!is_public("/bosun.sessions.v1.SessionData/Connect"));
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer "),
        );
        assert_eq!(bearer(&headers), None);
    }
}
