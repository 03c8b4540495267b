//! The test kit of the service crates: their services served in-process behind the same
//! `VerifyLayer` production uses, on a loopback port, with requests carrying internal tokens
//! minted per caller (principal, roles, policies) — and the assertions on errors every
//! service test makes. A dev-dependency only.
//!
//! ```ignore
//! let server = TestServer::start(
//!     Routes::new(documents.into_server()).add_service(audit.into_server()),
//! ).await;
//! let client = DocumentServiceClient::new(server.channel());
//! client.create_document(server.request(&Caller::new("user/alice").policy(ALLOW_ALL), body));
//! ```

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bosun_auth::{
    DEFAULT_ISSUER, INTERNAL_AUDIENCE, PolicyDocument, Principal, SigningKey, TokenIssuer,
    TokenVerifier, VerifyLayer,
};
use tonic::service::Routes;
use tonic::transport::Channel;

/// A policy allowing every action on every resource.
pub const ALLOW_ALL: &str = r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#;

/// Who makes a request: the principal, its roles and policies, as the gateway would put them
/// into the internal token.
#[derive(Debug, Clone)]
pub struct Caller {
    principal: String,
    roles: Vec<String>,
    policies: Vec<String>,
}

impl Caller {
    /// `principal` (e.g. `user/alice`) with no roles and no policies: denied everything.
    pub fn new(principal: &str) -> Self {
        Caller {
            principal: principal.to_owned(),
            roles: Vec::new(),
            policies: Vec::new(),
        }
    }

    pub fn role(mut self, role: &str) -> Self {
        self.roles.push(role.to_owned());
        self
    }

    /// Adds a policy document (JSON).
    pub fn policy(mut self, policy: &str) -> Self {
        self.policies.push(policy.to_owned());
        self
    }
}

/// Services running in-process behind token verification; stopped on drop or `stop`.
pub struct TestServer {
    issuer: TokenIssuer,
    channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves `routes` behind `VerifyLayer` on a free loopback port and connects to it.
    pub async fn start(routes: Routes) -> TestServer {
        let key = SigningKey::generate().expect("signing key");
        let verifier =
            TokenVerifier::new(&[key.verifying_key()], DEFAULT_ISSUER).expect("verifier");
        let layer = VerifyLayer::new(Arc::new(verifier), INTERNAL_AUDIENCE);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(async move {
            server.await.expect("the test server runs until stopped");
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the test server");
        TestServer {
            issuer: TokenIssuer::new(key, DEFAULT_ISSUER),
            channel,
            stop: Some(stop),
        }
    }

    /// A channel to the server, for any generated client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `body` with a fresh internal token for `caller`, valid for a minute.
    pub fn request<T>(&self, caller: &Caller, body: T) -> tonic::Request<T> {
        let policies = caller
            .policies
            .iter()
            .map(|text| PolicyDocument::parse(text).expect("the test policy parses"))
            .collect();
        let principal = Principal::parse(&caller.principal).expect("the test principal parses");
        let (token, _) = self
            .issuer
            .issue(
                &principal,
                INTERNAL_AUDIENCE,
                "session-1",
                caller.roles.clone(),
                policies,
                Duration::from_secs(60),
            )
            .expect("issue a token");
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header value"),
        );
        request
    }

    /// Stops serving (also done on drop).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asserts a failure's gRPC code and stable error name (`ErrorInfo.reason`, the SSM name);
/// returns the status for more checks.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: &str,
) -> tonic::Status {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        bosun_core::error::status_reason(&status).as_deref(),
        Some(reason),
        "{status:?}"
    );
    status
}

/// The fields the status names as violated (`google.rpc.BadRequest`).
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    bosun_core::error::status_violations(status)
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}
