//! One trace from a client call through the gateway's proxy into the backend service, and the
//! trace id in the audit events a call writes. Spans are captured by an OTLP collector
//! running inside this test.

use std::time::Duration;

use bosun_proto::audit::v1::ListAuditEventsRequest;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::auth::v1::CreateRoleRequest;
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use bosun_telemetry::testing::OtlpCollector;
use bosun_tests::{Launch, Process, Store, authed};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traced<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = authed(message, token);
    if let Ok(value) = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01").parse() {
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

#[tokio::test]
async fn a_client_trace_reaches_the_backend_through_the_gateway() -> anyhow::Result<()> {
    let collector = OtlpCollector::start().await;
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let audit_port = bosun_tests::free_port()?;
    let mut gateway = Process::start(
        Launch::new(&["serve", "gateway"], data.path())
            .store(&store)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())
            .config(&format!(
                "[routes]\n\"bosun.audit.v1.AuditService\" = \"http://127.0.0.1:{audit_port}\"\n"
            )),
    )
    .await?;
    let mut backend = Process::start_on(
        Launch::new(&["serve", "audit"], data.path())
            .store(&store)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
        audit_port,
    )
    .await?;

    let admin = gateway.admin_token().await?;
    AuditServiceClient::new(gateway.channel().await?)
        .list_audit_events(traced(ListAuditEventsRequest::default(), &admin))
        .await?;
    // SIGTERM flushes each process's spans before it exits.
    gateway.terminate(Duration::from_secs(15)).await?;
    backend.terminate(Duration::from_secs(15)).await?;

    let on_trace = |service: &'static str| {
        move |span: &bosun_telemetry::testing::CapturedSpan| {
            span.trace_id == TRACE_ID
                && span.service_name == service
                && span.attributes.get("rpc.method").map(String::as_str) == Some("ListAuditEvents")
        }
    };
    let gateway_span = collector
        .wait_for(on_trace("bosun-gateway"), Duration::from_secs(10))
        .await;
    let backend_span = collector
        .wait_for(on_trace("bosun-audit"), Duration::from_secs(10))
        .await;
    let spans = collector.spans();
    let gateway_span =
        gateway_span.unwrap_or_else(|| panic!("no gateway span on the trace: {spans:#?}"));
    let backend_span =
        backend_span.unwrap_or_else(|| panic!("no backend span on the trace: {spans:#?}"));
    assert_eq!(
        gateway_span.parent_span_id, CLIENT_SPAN_ID,
        "gateway span hangs under the client's"
    );
    assert_eq!(
        backend_span.parent_span_id, gateway_span.span_id,
        "backend span hangs under the gateway's"
    );
    Ok(())
}

#[tokio::test]
async fn audit_events_carry_the_callers_trace_id() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path())).await?;
    let admin = server.admin_token().await?;
    AuthServiceClient::new(server.channel().await?)
        .create_role(traced(
            CreateRoleRequest {
                role_name: "traced".into(),
                description: String::new(),
                policies: vec![],
            },
            &admin,
        ))
        .await?;
    let events = AuditServiceClient::new(server.channel().await?)
        .list_audit_events(authed(
            ListAuditEventsRequest {
                action: "auth:CreateRole".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await?
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].trace_id, TRACE_ID);
    assert_eq!(events[0].resource, "role:traced");
    Ok(())
}
