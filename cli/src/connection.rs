//! The gRPC link to a Bosun server: which token to send, the channel, and the interceptor
//! that adds `authorization: Bearer <token>` and nothing else.

use std::time::Duration;

use anyhow::{Context, bail};
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use bosun_proto::commands::v1::command_service_client::CommandServiceClient;
use bosun_proto::documents::v1::document_service_client::DocumentServiceClient;
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use bosun_proto::inventory::v1::resource_group_service_client::ResourceGroupServiceClient;
use bosun_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use bosun_proto::parameters::v1::parameter_service_client::ParameterServiceClient;
use bosun_proto::sessions::v1::session_service_client::SessionServiceClient;
use chrono::{DateTime, Utc};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::credentials::StoredCredential;
use crate::output::rfc3339;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
// Generous: listings page through many calls, but each call should be quick.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A session's data stream lives for hours, so it has no request timeout; HTTP/2 pings find
/// a dead path (a network blip) within about twice this, and the session resumes.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(10);

/// Chooses the token for a call: `--token` (or `BOSUN_TOKEN`) wins over the stored one,
/// so a script can act as another principal without logging out. An empty flag counts as
/// absent, because `BOSUN_TOKEN=` in a shell means "unset" to most people.
pub fn resolve_token(
    server: &str,
    flag: Option<&str>,
    stored: Option<StoredCredential>,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    if let Some(token) = flag.map(str::trim).filter(|token| !token.is_empty()) {
        return Ok(token.to_owned());
    }
    let Some(stored) = stored else {
        bail!("not logged in to {server}; run bosun login");
    };
    if let Some(expires_at) = stored.expires_at
        && expires_at <= now
    {
        bail!(
            "the token for {server} expired at {}; run bosun login",
            rfc3339(expires_at)
        );
    }
    Ok(stored.token)
}

/// Adds the bearer token, when there is one, to every request.
#[derive(Clone, Debug)]
pub struct BearerAuth {
    value: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let value = match token {
            None => None,
            Some(token) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
                    .parse()
                    .context("the token has characters not allowed in a header")?;
                // Keeps it out of Debug output and out of HPACK's dynamic table.
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self { value })
    }
}

impl Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthClient = AuthServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type AuditClient = AuditServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type DocumentsClient = DocumentServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type ParametersClient = ParameterServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type NotificationsClient = NotificationServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type NodesClient = NodeServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type ResourceGroupsClient = ResourceGroupServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type CommandsClient = CommandServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type SessionsClient = SessionServiceClient<InterceptedService<Channel, BearerAuth>>;

/// An open channel plus the credentials to use on it.
#[derive(Clone, Debug)]
pub struct Connection {
    channel: Channel,
    auth: BearerAuth,
}

impl Connection {
    /// Connects now rather than lazily, so an unreachable server is reported as such and
    /// not as the first RPC's `unavailable`.
    pub async fn open(server: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let auth = BearerAuth::new(token)?;
        let endpoint = endpoint(server)?;
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {server}"))?;
        Ok(Self { channel, auth })
    }

    pub fn auth(&self) -> AuthClient {
        AuthServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn audit(&self) -> AuditClient {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn documents(&self) -> DocumentsClient {
        DocumentServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn parameters(&self) -> ParametersClient {
        ParameterServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn notifications(&self) -> NotificationsClient {
        NotificationServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn nodes(&self) -> NodesClient {
        NodeServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn resource_groups(&self) -> ResourceGroupsClient {
        ResourceGroupServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn commands(&self) -> CommandsClient {
        CommandServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn sessions(&self) -> SessionsClient {
        SessionServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// A channel for long-lived streams (a session's data): no request timeout, HTTP/2
/// keep-alive pings so a silently dead connection is noticed.
pub async fn open_stream_channel(server: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from(check_url(server)?)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(STREAM_KEEPALIVE)
        .keep_alive_timeout(STREAM_KEEPALIVE)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

/// Checks the URL before tonic sees it: TLS is not built into this client yet, and a
/// token must not be sent to an `https://` URL over plain text by mistake.
fn endpoint(server: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from(check_url(server)?)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT))
}

fn check_url(server: &str) -> anyhow::Result<Uri> {
    let uri: Uri = server
        .parse()
        .with_context(|| format!("invalid server url {server}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            bail!("server url {server}: scheme {other} is not supported; use http://host:port")
        }
        None => bail!("server url {server}: missing scheme; use http://host:port"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("server url {server}: missing host");
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(token: &str, expires_at: Option<i64>) -> StoredCredential {
        StoredCredential {
            server: "http://a:7070".into(),
            token: token.into(),
            principal: "user/admin".into(),
            expires_at: expires_at.and_then(|s| DateTime::from_timestamp(s, 0)),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn flag_token_wins_over_stored() -> anyhow::Result<()> {
        let token = resolve_token(
            "http://a:7070",
            Some("from-flag"),
            Some(stored("from-file", None)),
            now(),
        )?;
        assert_eq!(token, "from-flag");
        Ok(())
    }

    #[test]
    fn stored_token_is_used_without_flag() -> anyhow::Result<()> {
        let stored = Some(stored("from-file", Some(1_900_000_000)));
        assert_eq!(
            resolve_token("http://a:7070", None, stored, now())?,
            "from-file"
        );
        let stored = Some(self::stored("from-file", None));
        assert_eq!(
            resolve_token("http://a:7070", Some("  "), stored, now())?,
            "from-file"
        );
        Ok(())
    }

    #[test]
    fn no_token_says_how_to_get_one() {
        let err = resolve_token("http://a:7070", None, None, now()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("not logged in to http://a:7070; run bosun login")
        );
    }

    #[test]
    fn an_expired_stored_token_is_refused_locally() {
        let err = resolve_token(
            "http://a:7070",
            None,
            Some(stored("old", Some(1_700_000_000))),
            now(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert_eq!(
            err,
            "the token for http://a:7070 expired at 2023-11-14T22:13:20Z; run bosun login"
        );
    }

    #[test]
    fn interceptor_adds_only_the_bearer_header() -> anyhow::Result<()> {
        let mut with_token = BearerAuth::new(Some("t0k"))?;
        let request = with_token.call(tonic::Request::new(()))?;
        let headers = request.metadata().clone().into_headers();
        assert_eq!(headers.len(), 1);
        assert_eq!(
            headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer t0k")
        );

        let mut without = BearerAuth::new(None)?;
        let request = without.call(tonic::Request::new(()))?;
        assert!(request.metadata().is_empty());
        Ok(())
    }

    #[test]
    fn a_token_with_a_newline_is_refused() {
        assert!(BearerAuth::new(Some("a\nb")).is_err());
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(endpoint("http://127.0.0.1:7070").is_ok());
        for bad in ["https://h:7070", "127.0.0.1:7070", "http://", "not a url"] {
            assert!(endpoint(bad).is_err(), "{bad} was accepted");
        }
    }
}
