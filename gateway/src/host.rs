//! Serving gRPC services: the layer stack and the listener every Bosun process shares, so the
//! gateway's in-process services and a standalone service are mounted the very same way.
//!
//! The stack, outermost first: trace span and metrics per RPC → gRPC-web translation →
//! (gateway only: authentication and routing) → token re-verification → the service.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use bosun_auth::{INTERNAL_AUDIENCE, TokenVerifier, VerifyLayer};
use bosun_telemetry::{GrpcServerTraceLayer, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;

use crate::edge::PUBLIC_PATHS;

/// The router of a set of services: health and reflection added (both public), every other
/// call re-verified with the internal token.
pub async fn service_router(
    routes: Routes,
    verifier: Arc<TokenVerifier>,
    service_names: &[&str],
) -> anyhow::Result<axum::Router> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    for name in service_names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bosun_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bosun_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut verify = VerifyLayer::new(verifier, INTERNAL_AUDIENCE);
    for path in PUBLIC_PATHS {
        verify = verify.public_path(path);
    }
    Ok(routes.prepare().into_axum_router().layer(verify))
}

/// The outer router of a process: `/metrics`, and every other path to `inner` through the
/// trace and gRPC-web layers.
pub fn process_router<S>(inner: S, metrics: Metrics) -> axum::Router
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let rendered = metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = rendered.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .fallback_service(
            ServiceBuilder::new()
                .layer(GrpcServerTraceLayer::new(metrics))
                .layer(tonic_web::GrpcWebLayer::new())
                .service(inner),
        )
}

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting and lets open
/// calls finish (the caller bounds that with a deadline).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Without TCP_NODELAY small gRPC frames wait on Nagle and delayed ACKs (~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    Ok(())
}

/// The outer router of a service running on its own: [`process_router`] around the services.
pub fn standalone_router(services: axum::Router, metrics: Metrics) -> axum::Router {
    fn to_tonic_body(response: http::Response<axum::body::Body>) -> http::Response<Body> {
        response.map(Body::new)
    }
    let mapped = <axum::Router as tower::ServiceExt<http::Request<Body>>>::map_response(
        services,
        to_tonic_body as fn(_) -> _,
    );
    process_router(mapped, metrics)
}
