//! The metrics registry: RPC metrics with closed label sets, custom metrics, the text format.

use bosun_telemetry::{Metrics, grpc_code_label};
use prometheus_client::metrics::counter::Counter;

fn series(rendered: &str, metric: &str) -> Vec<String> {
    rendered
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn rpc_observations_render_with_their_labels() {
    let metrics = Metrics::new("gateway");
    metrics.observe_rpc("bosun.parameters.v1.Parameters", "Get", "OK", 0.003);
    metrics.observe_rpc("bosun.parameters.v1.Parameters", "Get", "OK", 0.2);
    metrics.observe_rpc(
        "bosun.parameters.v1.Parameters",
        "Get",
        grpc_code_label(tonic::Code::NotFound),
        0.001,
    );

    let rendered = metrics.render();
    assert!(rendered.contains(
        r#"bosun_rpc_requests_total{service="bosun.parameters.v1.Parameters",method="Get",code="OK"} 2"#
    ), "{rendered}");
    assert!(rendered.contains(
        r#"bosun_rpc_requests_total{service="bosun.parameters.v1.Parameters",method="Get",code="NotFound"} 1"#
    ));
    assert!(rendered.contains(
        r#"bosun_rpc_duration_seconds_count{service="bosun.parameters.v1.Parameters",method="Get"} 3"#
    ));
    assert!(rendered.contains(
        r#"bosun_rpc_duration_seconds_bucket{le="0.005",service="bosun.parameters.v1.Parameters",method="Get"} 2"#
    ), "{rendered}");
    assert!(rendered.contains(r#"bosun_process_info{process="gateway"} 1"#));
    assert!(rendered.contains("# TYPE bosun_rpc_requests counter"));
    assert!(rendered.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

#[test]
fn garbage_labels_become_other() {
    let metrics = Metrics::new("gateway");
    let long_method = "M".repeat(200);
    let garbage = [
        ("/etc/passwd", "Get"),
        ("bosun.parameters.v1.Parameters", "Get Parameter"),
        ("Parameters", "Get"),
        ("bosun.parameters.v1.Parameters", long_method.as_str()),
        ("bosun.\"injected\"}.X", "Get"),
        ("", ""),
    ];
    for (service, method) in garbage {
        metrics.observe_rpc(service, method, "OK", 0.01);
    }
    metrics.observe_rpc("bosun.audit.v1.Audit", "List", "teapot", 0.01);
    metrics.observe_rpc("bosun.audit.v1.Audit", "List", "7", f64::NAN);

    let rendered = metrics.render();
    assert!(
        rendered
            .contains(r#"bosun_rpc_requests_total{service="other",method="other",code="OK"} 6"#),
        "{rendered}"
    );
    assert!(rendered.contains(
        r#"bosun_rpc_requests_total{service="bosun.audit.v1.Audit",method="List",code="other"} 1"#
    ));
    assert!(rendered.contains(
        r#"bosun_rpc_requests_total{service="bosun.audit.v1.Audit",method="List",code="PermissionDenied"} 1"#
    ));
    assert!(!rendered.contains("passwd"));
    assert!(!rendered.contains("injected"));
    assert!(!rendered.contains("teapot"));
}

#[test]
fn distinct_routes_are_capped() {
    let metrics = Metrics::new("gateway");
    for index in 0..2_000 {
        metrics.observe_rpc(
            "bosun.flood.v1.Flood",
            &format!("Method{index}"),
            "OK",
            0.01,
        );
    }
    let rendered = metrics.render();
    let request_series = series(&rendered, "bosun_rpc_requests_total");
    assert!(
        request_series.len() <= 300,
        "{} series for one flooding caller",
        request_series.len()
    );
    let overflow = request_series
        .iter()
        .find(|line| line.contains(r#"service="other""#))
        .expect("routes past the cap are counted as other");
    let overflow_count: u64 = overflow
        .rsplit(' ')
        .next()
        .and_then(|count| count.parse().ok())
        .expect("a count");
    assert_eq!(
        overflow_count as usize + request_series.len() - 1,
        2_000,
        "nothing is lost"
    );

    // A route seen before the cap filled keeps its own series.
    metrics.observe_rpc("bosun.flood.v1.Flood", "Method0", "OK", 0.01);
    assert!(metrics.render().contains(
        r#"bosun_rpc_requests_total{service="bosun.flood.v1.Flood",method="Method0",code="OK"} 2"#
    ));
}

#[test]
fn services_register_their_own_metrics() {
    let metrics = Metrics::new("worker");
    let jobs = Counter::<u64>::default();
    metrics
        .registry_mut()
        .register("bosun_jobs_run", "Jobs run", jobs.clone());
    let retries = Counter::<u64>::default();
    metrics.register("bosun_job_retries", "Job retries", retries.clone());
    jobs.inc_by(3);
    retries.inc();

    // Clones share the registry.
    let rendered = metrics.clone().render();
    assert!(rendered.contains("bosun_jobs_run_total 3"), "{rendered}");
    assert!(rendered.contains("bosun_job_retries_total 1"));
}
