//! The all-in-one server as an operator meets it: it starts fast, the CLI logs in and says
//! who you are, reflection lists the services, gRPC-web and metrics share the one port, and
//! SIGTERM stops it cleanly.

use std::time::Duration;

use bosun_tests::{ADMIN_PASSWORD, Launch, Process, cli};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// Sends one raw HTTP/1.1 request and returns the whole response as text (lossy).
async fn http1(process: &Process, request: &[u8]) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(process.addr).await?;
    stream.write_all(request).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test]
async fn the_server_starts_fast_and_the_cli_logs_in() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path())).await?;
    // A figure, not an assertion: the target is under 1 s from spawn to SERVING.
    println!(
        "bosun server: spawn to health SERVING in {:?}",
        server.started_in
    );

    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("bosun");
    let config_str = config.display().to_string();
    let env = [
        ("BOSUN_SERVER", server.url.as_str()),
        ("BOSUN_CONFIG_DIR", config_str.as_str()),
    ];

    let (ok, stdout, stderr) = cli(
        &["login", "--password-stdin"],
        &env,
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await?;
    assert!(ok, "login failed: {stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("as user/admin"),
        "{stdout}{stderr}"
    );
    let credentials = config.join("credentials.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&credentials)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "credentials file mode {mode:o}");

    let (ok, stdout, stderr) = cli(&["whoami"], &env, "").await?;
    assert!(ok, "whoami failed: {stderr}");
    assert!(
        stdout.contains("user/admin") && stdout.contains("admin"),
        "{stdout}"
    );
    let (ok, stdout, _) = cli(&["-o", "json", "whoami"], &env, "").await?;
    assert!(ok);
    let identity: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(identity["principal"], "user/admin");

    let (ok, _, stderr) = cli(&["login", "--password-stdin"], &env, "wrong-password-123\n").await?;
    assert!(!ok);
    assert!(
        stderr.trim_start().starts_with("error:") && stderr.contains("invalid credentials"),
        "{stderr}"
    );

    // With no stored token the CLI says what to do.
    let empty = tempfile::tempdir()?;
    let empty_str = empty.path().display().to_string();
    let (ok, _, stderr) = cli(
        &["whoami"],
        &[
            ("BOSUN_SERVER", server.url.as_str()),
            ("BOSUN_CONFIG_DIR", empty_str.as_str()),
        ],
        "",
    )
    .await?;
    assert!(!ok);
    assert!(stderr.contains("bosun login"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn reflection_lists_every_service_in_v1_and_v1alpha() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path())).await?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(server.channel().await?);
    let mut responses = client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await?
        .into_inner();
    let mut names = Vec::new();
    if let Some(response) = responses.message().await?
        && let Some(MessageResponse::ListServicesResponse(list)) = response.message_response
    {
        names = list.service.into_iter().map(|s| s.name).collect();
    }
    for expected in [
        "bosun.auth.v1.AuthService",
        "bosun.audit.v1.AuditService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    use tonic_reflection::pb::v1alpha as alpha;
    let mut client =
        alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await?);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "bosun.auth.v1.AuthService".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await?
        .into_inner();
    let response = responses.message().await?.and_then(|r| r.message_response);
    assert!(
        matches!(response, Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
        "{response:?}"
    );
    Ok(())
}

#[tokio::test]
async fn grpc_web_and_metrics_share_the_port() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path())).await?;
    // grpc.health.v1.Health/Check with an empty request, framed for gRPC-web over HTTP/1.1.
    let mut request = b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: bosun\r\n\
Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        .to_vec();
    request.extend_from_slice(&[0, 0, 0, 0, 0]);
    let response = http1(&server, &request).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("application/grpc-web"),
        "{response}"
    );
    assert!(response.contains("grpc-status:0"), "{response}");

    // An authenticated gRPC-web call without a token is refused like any other.
    let mut request = b"POST /bosun.auth.v1.AuthService/ListUsers HTTP/1.1\r\nHost: bosun\r\n\
Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        .to_vec();
    request.extend_from_slice(&[0, 0, 0, 0, 0]);
    let response = http1(&server, &request).await?;
    assert!(
        response.contains("grpc-status: 16") || response.contains("grpc-status:16"),
        "{response}"
    );

    let metrics = http1(
        &server,
        b"GET /metrics HTTP/1.1\r\nHost: bosun\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("bosun_rpc_requests_total") && metrics.contains("grpc.health.v1.Health"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly_and_data_survives() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Process::start(Launch::new(&["server"], data.path())).await?;
    let token = server.admin_token().await?;
    let status = server.terminate(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        server.stderr().contains("bosun stopped"),
        "{}",
        server.stderr()
    );

    // Same data directory: same users and the same signing keys, so the token still works.
    let again = Process::start(Launch::new(&["server"], data.path())).await?;
    let mut client =
        bosun_proto::auth::v1::auth_service_client::AuthServiceClient::new(again.channel().await?);
    let me = client
        .get_caller_identity(bosun_tests::authed(
            bosun_proto::auth::v1::GetCallerIdentityRequest {},
            &token,
        ))
        .await?
        .into_inner();
    assert_eq!(me.principal, "user/admin");
    Ok(())
}
