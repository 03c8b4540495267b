//! Parameter Store end to end through the gateway: values and SecureStrings written and read
//! by the CLI and by gRPC, the master key surviving a restart, and the service running alone
//! behind the gateway's proxy.

use std::time::Duration;

use bosun_proto::parameters::v1::parameter_service_client::ParameterServiceClient;
use bosun_proto::parameters::v1::*;
use bosun_tests::{Launch, Process, Store, authed, cli};
use tonic::Code;

async fn parameters(
    process: &Process,
) -> anyhow::Result<ParameterServiceClient<tonic::transport::Channel>> {
    Ok(ParameterServiceClient::new(process.channel().await?))
}

async fn secure_round_trip(gateway: &Process, token: &str) -> anyhow::Result<()> {
    let mut client = parameters(gateway).await?;
    let put = client
        .put_parameter(authed(
            PutParameterRequest {
                name: "/app/prod/db/password".into(),
                value: "s3cret-value".into(),
                r#type: ParameterType::SecureString as i32,
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    assert_eq!(put.version, 1);
    let encrypted = client
        .get_parameter(authed(
            GetParameterRequest {
                name: "/app/prod/db/password".into(),
                with_decryption: false,
            },
            token,
        ))
        .await?
        .into_inner()
        .parameter
        .unwrap_or_default();
    assert_ne!(encrypted.value, "s3cret-value");
    let plain = client
        .get_parameter(authed(
            GetParameterRequest {
                name: "/app/prod/db/password".into(),
                with_decryption: true,
            },
            token,
        ))
        .await?
        .into_inner()
        .parameter
        .unwrap_or_default();
    assert_eq!(plain.value, "s3cret-value");
    let missing = client
        .get_parameter(authed(
            GetParameterRequest {
                name: "/app/prod/nothing".into(),
                with_decryption: false,
            },
            token,
        ))
        .await
        .err()
        .map(|s| (s.code(), bosun_core::error::status_reason(&s)));
    assert_eq!(
        missing,
        Some((Code::NotFound, Some("ParameterNotFound".into())))
    );
    Ok(())
}

#[tokio::test]
async fn secure_strings_survive_a_restart_and_the_cli_reads_them() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Process::start(Launch::new(&["server"], data.path())).await?;
    let token = server.admin_token().await?;
    secure_round_trip(&server, &token).await?;

    let env = [
        ("BOSUN_SERVER", server.url.as_str()),
        ("BOSUN_TOKEN", token.as_str()),
    ];
    let (ok, _, stderr) = cli(
        &[
            "param",
            "put",
            "/app/prod/api-key",
            "-",
            "--type",
            "secure-string",
        ],
        &env,
        "from-stdin-key\n",
    )
    .await?;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cli(
        &[
            "param",
            "get",
            "/app/prod/api-key",
            "--decrypt",
            "--value-only",
        ],
        &env,
        "",
    )
    .await?;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "from-stdin-key");
    let (ok, stdout, _) = cli(&["param", "ls", "/app", "--recursive"], &env, "").await?;
    assert!(ok);
    assert!(
        stdout.contains("/app/prod/api-key") && !stdout.contains("from-stdin-key"),
        "{stdout}"
    );

    // Same data directory after a restart: the master key file is reused, values decrypt.
    server.terminate(Duration::from_secs(15)).await?;
    let again = Process::start(Launch::new(&["server"], data.path())).await?;
    let plain = parameters(&again)
        .await?
        .get_parameter(authed(
            GetParameterRequest {
                name: "/app/prod/db/password".into(),
                with_decryption: true,
            },
            &token,
        ))
        .await?
        .into_inner()
        .parameter
        .unwrap_or_default();
    assert_eq!(plain.value, "s3cret-value");
    Ok(())
}

#[tokio::test]
async fn parameters_behind_the_proxy_on_postgres() -> anyhow::Result<()> {
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let port = bosun_tests::free_port()?;
    let gateway = Process::start(
        Launch::new(&["serve", "gateway"], data.path())
            .store(&store)
            .config(&format!(
                "[routes]\n\"bosun.parameters.v1.ParameterService\" = \"http://127.0.0.1:{port}\"\n"
            )),
    )
    .await?;
    let _service = Process::start_on(
        Launch::new(&["serve", "parameters"], data.path()).store(&store),
        port,
    )
    .await?;
    let token = gateway.admin_token().await?;
    secure_round_trip(&gateway, &token).await
}
