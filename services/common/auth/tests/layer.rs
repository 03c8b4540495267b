//! `VerifyLayer` around a trivial inner service: what is refused (and with which gRPC
//! status, without reaching the inner service), what passes, what the handler sees, and the
//! verified-token cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_auth::{
    AuthContext, CLIENT_AUDIENCE, DEFAULT_ISSUER, EdgeVerified, INTERNAL_AUDIENCE, PolicyDocument,
    Principal, SigningKey, TokenIssuer, TokenVerifier, VerifyLayer, auth_context,
};
use tower::{Layer, Service, ServiceExt};

const GET_PARAMETER: &str = "/bosun.parameters.v1.Parameters/GetParameter";

/// What the inner service saw: one entry per call, the `AuthContext` if any.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Option<AuthContext>>>>);

impl Seen {
    fn calls(&self) -> usize {
        self.0.lock().expect("not poisoned").len()
    }
    fn last(&self) -> Option<AuthContext> {
        self.0
            .lock()
            .expect("not poisoned")
            .last()
            .cloned()
            .flatten()
    }
}

struct Harness {
    issuer: TokenIssuer,
    verifier: Arc<TokenVerifier>,
    layer: VerifyLayer,
    seen: Seen,
}

fn harness_with(verifier: TokenVerifier, key: SigningKey) -> Harness {
    let verifier = Arc::new(verifier);
    Harness {
        issuer: TokenIssuer::new(key, DEFAULT_ISSUER),
        layer: VerifyLayer::new(verifier.clone(), INTERNAL_AUDIENCE)
            .public_path("/grpc.health.v1.Health/")
            .public_path("/bosun.gateway.v1.Auth/Login"),
        verifier,
        seen: Seen::default(),
    }
}

fn harness() -> Harness {
    let key = SigningKey::generate().expect("key");
    let verifier = TokenVerifier::new(&[key.verifying_key()], DEFAULT_ISSUER).expect("verifier");
    harness_with(verifier, key)
}

impl Harness {
    fn token(&self, principal: &str, audience: &str, ttl: Duration) -> String {
        let policy = PolicyDocument::parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "parameters:Get*", "Resource": "parameter:/app/*"}}"#,
        )
        .expect("policy");
        let principal = Principal::parse(principal).expect("principal");
        self.issuer
            .issue(
                &principal,
                audience,
                "session-7",
                vec!["reader".into()],
                vec![policy],
                ttl,
            )
            .expect("issue")
            .0
    }

    fn internal_token(&self, principal: &str) -> String {
        self.token(principal, INTERNAL_AUDIENCE, Duration::from_secs(60))
    }

    /// Sends one request to `path` with `authorization` (if any) through the layer.
    async fn call(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> http::Response<tonic::body::Body> {
        self.send(path, authorization, None).await
    }

    /// A context for `principal` as the gateway's edge hands it over, expiring after `ttl`.
    fn edge_context(&self, principal: &str, ttl: Duration) -> AuthContext {
        let token = self.token(principal, INTERNAL_AUDIENCE, Duration::from_secs(60));
        let claims = self
            .verifier
            .verify(&token, INTERNAL_AUDIENCE)
            .expect("verify");
        let mut context = AuthContext::from_claims(claims, &token).expect("context");
        context.expires_at = chrono::Utc::now() + chrono::TimeDelta::from_std(ttl).expect("ttl")
            - chrono::TimeDelta::seconds(1);
        context
    }

    async fn send(
        &self,
        path: &str,
        authorization: Option<&str>,
        verified: Option<AuthContext>,
    ) -> http::Response<tonic::body::Body> {
        let seen = self.seen.clone();
        let inner = tower::service_fn(move |request: http::Request<()>| {
            let seen = seen.clone();
            async move {
                // Read the context the way a tonic handler does.
                let request = tonic::Request::from_http(request);
                seen.0
                    .lock()
                    .expect("not poisoned")
                    .push(auth_context(&request).ok());
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::default()))
            }
        });
        let mut builder = http::Request::builder().uri(format!("http://service{path}"));
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let mut request = builder.body(()).expect("request");
        if let Some(context) = verified {
            request
                .extensions_mut()
                .insert(EdgeVerified(Arc::new(context)));
        }
        let mut service = self.layer.layer(inner);
        service
            .ready()
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("infallible")
    }
}

fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<&str> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
}

/// A refusal is a well-formed gRPC error: HTTP 200, gRPC content type, the status code.
fn assert_refused(response: &http::Response<tonic::body::Body>, code: &str) {
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
    assert_eq!(grpc_status(response), Some(code));
    assert!(response.headers().contains_key("grpc-message"));
}

#[tokio::test]
async fn missing_token_is_unauthenticated_and_never_reaches_the_service() {
    let h = harness();
    let response = h.call(GET_PARAMETER, None).await;
    assert_refused(&response, "16");
    assert_eq!(h.seen.calls(), 0);
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let h = harness();
    let good = h.internal_token("user/alice");
    // Flip the first signature character (the last may carry only padding bits).
    let (signed, signature) = good.rsplit_once('.').expect("three parts");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    for authorization in [
        "Bearer not-a-jwt".to_owned(),
        format!("Bearer {tampered}"),
        format!("Basic {good}"),
        "Bearer ".to_owned(),
        good.clone(),
    ] {
        let response = h.call(GET_PARAMETER, Some(&authorization)).await;
        assert_refused(&response, "16");
    }
    assert_eq!(h.seen.calls(), 0);
}

#[tokio::test]
async fn client_token_is_refused_where_an_internal_token_is_required() {
    let h = harness();
    let client = h.token("user/alice", CLIENT_AUDIENCE, Duration::from_secs(3600));
    let response = h
        .call(GET_PARAMETER, Some(&format!("Bearer {client}")))
        .await;
    assert_refused(&response, "16");
    assert_eq!(h.seen.calls(), 0);
}

#[tokio::test]
async fn good_token_gives_the_handler_its_context() {
    let h = harness();
    let token = h.internal_token("user/alice");
    // The scheme is case-insensitive.
    let response = h
        .call(GET_PARAMETER, Some(&format!("bearer {token}")))
        .await;
    assert_eq!(grpc_status(&response), None);
    assert_eq!(h.seen.calls(), 1);
    let context = h.seen.last().expect("handler saw an auth context");
    assert_eq!(context.principal, Principal::User("alice".into()));
    assert_eq!(context.session_id, "session-7");
    assert_eq!(context.roles, vec!["reader".to_owned()]);
    assert_eq!(&*context.token, token.as_str());
    let tags = Default::default();
    assert!(context.is_allowed("parameters:GetParameter", "parameter:/app/db", &tags));
    assert!(!context.is_allowed("parameters:PutParameter", "parameter:/app/db", &tags));
    assert!(context.expires_at > chrono::Utc::now());
}

#[tokio::test]
async fn public_paths_pass_without_a_token_and_without_a_context() {
    let h = harness();
    let response = h.call("/grpc.health.v1.Health/Check", None).await;
    assert_eq!(grpc_status(&response), None);
    let response = h.call("/bosun.gateway.v1.Auth/Login", None).await;
    assert_eq!(grpc_status(&response), None);
    assert_eq!(h.seen.calls(), 2);
    assert!(h.seen.last().is_none(), "public calls carry no context");

    // Exact paths are exact, not prefixes.
    let response = h.call("/bosun.gateway.v1.Auth/LoginAs", None).await;
    assert_refused(&response, "16");
    assert_eq!(h.seen.calls(), 2);
}

#[tokio::test]
async fn node_principals_may_call_only_the_agent_channel() {
    let h = harness();
    let token = format!("Bearer {}", h.internal_token("node/mi-0123abcd"));
    let response = h.call(GET_PARAMETER, Some(&token)).await;
    assert_refused(&response, "7");
    assert_eq!(h.seen.calls(), 0);

    let response = h
        .call("/bosun.agent.v1.AgentChannel/Connect", Some(&token))
        .await;
    assert_eq!(grpc_status(&response), None);
    assert_eq!(h.seen.calls(), 1);
    let context = h.seen.last().expect("context");
    assert_eq!(context.principal, Principal::Node("mi-0123abcd".into()));

    // Checked again when the context comes from the cache.
    let response = h.call(GET_PARAMETER, Some(&token)).await;
    assert_refused(&response, "7");
}

#[tokio::test]
async fn the_same_token_is_verified_once() {
    let h = harness();
    let token = format!("Bearer {}", h.internal_token("user/alice"));
    for _ in 0..5 {
        let response = h.call(GET_PARAMETER, Some(&token)).await;
        assert_eq!(grpc_status(&response), None);
    }
    assert_eq!(h.seen.calls(), 5);
    assert_eq!(h.verifier.verification_count(), 1);

    // The cache is shared by clones of the layer, i.e. by every connection's service.
    let other = Harness {
        issuer: TokenIssuer::new(SigningKey::generate().expect("key"), DEFAULT_ISSUER),
        verifier: h.verifier.clone(),
        layer: h.layer.clone(),
        seen: Seen::default(),
    };
    other.call(GET_PARAMETER, Some(&token)).await;
    assert_eq!(h.verifier.verification_count(), 1);

    let second = format!("Bearer {}", h.internal_token("user/bob"));
    h.call(GET_PARAMETER, Some(&second)).await;
    assert_eq!(h.verifier.verification_count(), 2);
}

#[tokio::test]
async fn an_expired_token_is_not_served_from_the_cache() {
    let key = SigningKey::generate().expect("key");
    // No leeway, so the token is refused as soon as it expires.
    let verifier = TokenVerifier::new(&[key.verifying_key()], DEFAULT_ISSUER)
        .expect("verifier")
        .with_leeway(Duration::ZERO);
    let h = harness_with(verifier, key);
    let token = format!(
        "Bearer {}",
        h.token("user/alice", INTERNAL_AUDIENCE, Duration::from_secs(1))
    );
    let response = h.call(GET_PARAMETER, Some(&token)).await;
    assert_eq!(grpc_status(&response), None);
    assert_eq!(h.verifier.verification_count(), 1);

    // exp is whole seconds: 1 s after a possibly late `iat`, then one more to be past it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = h.call(GET_PARAMETER, Some(&token)).await;
    assert_refused(&response, "16");
    assert_eq!(h.seen.calls(), 1);
    assert_eq!(
        h.verifier.verification_count(),
        2,
        "expired entry must be re-verified"
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let h = harness();
    let token = format!("Bearer {}", h.internal_token("user/alice"));
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::default()))
    });
    let request = http::Request::builder()
        .uri(format!("http://service{GET_PARAMETER}"))
        .header(http::header::AUTHORIZATION, &token)
        .header(http::header::AUTHORIZATION, "Bearer other")
        .body(())
        .expect("request");
    let response = h
        .layer
        .layer(inner)
        .oneshot(request)
        .await
        .expect("infallible");
    assert_refused(&response, "16");
}

#[tokio::test]
async fn a_context_the_edge_verified_in_process_is_used_without_a_token() {
    let h = harness();
    let context = h.edge_context("user/alice", Duration::from_secs(60));
    let response = h.send(GET_PARAMETER, None, Some(context)).await;
    assert_eq!(grpc_status(&response), None);
    let seen = h.seen.last().expect("the handler sees the context");
    assert_eq!(seen.principal, Principal::User("alice".into()));
    assert_eq!(seen.roles, vec!["reader".to_owned()]);
}

#[tokio::test]
async fn an_edge_verified_context_still_obeys_expiry_and_the_node_rule() {
    let h = harness();
    let expired = h.edge_context("user/alice", Duration::ZERO);
    let response = h.send(GET_PARAMETER, None, Some(expired)).await;
    assert_refused(&response, "16");
    let node = h.edge_context("node/mi-0123abcd", Duration::from_secs(60));
    let response = h.send(GET_PARAMETER, None, Some(node)).await;
    assert_refused(&response, "7");
    assert_eq!(h.seen.calls(), 0);

    // A public path never sees one.
    let context = h.edge_context("user/alice", Duration::from_secs(60));
    let response = h
        .send("/grpc.health.v1.Health/Check", None, Some(context))
        .await;
    assert_eq!(grpc_status(&response), None);
    assert!(h.seen.last().is_none());
}
