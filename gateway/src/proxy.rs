//! A generic gRPC reverse proxy to a service running in another process: it forwards the
//! HTTP/2 request (headers, streaming body, trailers) as it is, with no per-RPC code, so every
//! RPC a service adds is routed without touching the gateway.

use bosun_core::ApiError;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;

use crate::edge::status_response;

#[derive(Clone)]
pub struct RemoteBackend {
    name: String,
    scheme: Scheme,
    authority: Authority,
    client: Client<HttpConnector, Body>,
}

impl RemoteBackend {
    /// A backend at `url` (`http://host:port`) serving the gRPC service `name`.
    pub fn new(name: &str, url: &str) -> Result<Self, ApiError> {
        let field = format!("routes.\"{name}\"");
        let uri: Uri = url
            .parse()
            .map_err(|_| ApiError::invalid(field.clone(), "must be a URL like http://host:port"))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP {
            return Err(ApiError::invalid(
                field,
                "only http:// (cleartext HTTP/2 inside the cluster network) is supported",
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| ApiError::invalid(field.clone(), "must name a host and port"))?;
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(ApiError::invalid(field, "must not have a path"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Ok(RemoteBackend {
            name: name.to_owned(),
            scheme,
            authority,
            client,
        })
    }

    pub async fn forward(&self, mut request: Request<Body>) -> Response<Body> {
        let mut parts = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        if let Some(path_and_query) = request.uri().path_and_query() {
            parts = parts.path_and_query(path_and_query.clone());
        }
        match parts.build() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(error) => {
                return status_response(ApiError::internal(format!(
                    "route to {}: {error}",
                    self.name
                )));
            }
        }
        *request.version_mut() = http::Version::HTTP_2;
        match self.client.request(request).await {
            Ok(response) => response.map(Body::new),
            Err(error) => {
                tracing::warn!(service = %self.name, backend = %self.authority, %error, "backend unreachable");
                status_response(ApiError::Unavailable(format!(
                    "service {} is unavailable; try again",
                    self.name
                )))
            }
        }
    }
}
