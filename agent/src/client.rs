//! Dialling the control plane: TLS for `https://`, plain for `http://`, an extra CA bundle,
//! an optional local source address; and `register`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use bosun_proto::agent::v1::HostFacts;
use bosun_proto::inventory::v1::RegisterManagedInstanceRequest;
use bosun_proto::inventory::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::AgentError;
use crate::state::{Identity, generate_key};

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `https://host:port` (TLS, the Mozilla roots plus `ca_bundle_pem`) or `http://host:port`.
    pub url: String,
    /// Extra CA certificates (PEM) trusted for `https://`.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Bind the client socket to this source address (the simulator spreads connections
    /// over 127.0.0.x).
    pub local_address: Option<IpAddr>,
    /// Limit of the TCP and TLS connect.
    pub connect_timeout: Duration,
    /// HTTP/2 pings on an idle connection, to notice a dead peer; `None` disables them.
    pub keep_alive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keep_alive_timeout: Duration,
}

impl EndpointConfig {
    /// Defaults for `url`: no extra CA, any source address, 10 s connect, pings every 60 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_bundle_pem: None,
            local_address: None,
            connect_timeout: Duration::from_secs(10),
            keep_alive_interval: Some(Duration::from_secs(60)),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }

    /// Adds the PEM certificates of `path` to the trusted roots.
    pub fn with_ca_bundle_file(mut self, path: &Path) -> Result<Self, AgentError> {
        self.ca_bundle_pem =
            Some(std::fs::read(path).map_err(|error| AgentError::io(path, error))?);
        Ok(self)
    }

    /// The tonic endpoint (not connected).
    pub fn endpoint(&self) -> Result<Endpoint, AgentError> {
        let invalid = |error: &dyn std::fmt::Display| {
            AgentError::InvalidConfig(format!("server URL {}: {error}", self.url))
        };
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| invalid(&e))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .local_address(self.local_address)
            .keep_alive_timeout(self.keep_alive_timeout)
            .keep_alive_while_idle(true);
        if let Some(interval) = self.keep_alive_interval {
            endpoint = endpoint.http2_keep_alive_interval(interval);
        }
        if self.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &self.ca_bundle_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| invalid(&e))?;
        } else if !self.url.starts_with("http://") {
            return Err(invalid(&"must start with https:// or http://"));
        }
        Ok(endpoint)
    }

    /// A lazily connected channel.
    pub fn channel(&self) -> Result<Channel, AgentError> {
        Ok(self.endpoint()?.connect_lazy())
    }
}

/// Registers a node with an activation: makes a key, calls `RegisterManagedInstance`, and
/// returns the identity (not saved; see [`crate::StateDir::save_identity`]).
pub async fn register(
    endpoint: &EndpointConfig,
    activation_id: &str,
    activation_code: &str,
    facts: HostFacts,
) -> Result<Identity, AgentError> {
    let pkcs8 = generate_key()?;
    // A throwaway identity to read the public key from; the node id comes back below.
    let provisional = Identity::new(String::new(), endpoint.url.clone(), pkcs8.clone())?;
    let channel = endpoint.endpoint()?.connect().await.map_err(|error| {
        AgentError::Connect(format!("cannot connect to {}: {error}", endpoint.url))
    })?;
    let response = NodeServiceClient::new(channel)
        .register_managed_instance(RegisterManagedInstanceRequest {
            activation_id: activation_id.to_string(),
            activation_code: activation_code.to_string(),
            public_key: provisional.public_key(),
            facts: Some(facts),
        })
        .await
        .map_err(|status| AgentError::Rejected {
            code: status.code(),
            message: status.message().to_string(),
        })?
        .into_inner();
    Identity::new(response.instance_id, endpoint.url.clone(), pkcs8)
}
