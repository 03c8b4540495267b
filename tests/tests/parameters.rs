//! Parameter Store end to end through the gateway: values and SecureStrings written and read
//! by the CLI and by gRPC, the master key surviving a restart and rotating under a running
//! server, the service running alone behind the gateway's proxy, and two servers on one
//! store whose read caches never serve a value older than the other's acknowledged write.

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

/// The real server enforces an Expiration policy: the parameter is deleted at its time, and
/// every change and the expiry reach the Redis event stream `bosun:events`.
#[tokio::test]
async fn expiration_deletes_on_time_and_events_reach_redis() -> anyhow::Result<()> {
    let redis_url =
        std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let server = Process::start(
        Launch::new(&["server"], data.path())
            .store(&store)
            .env("BOSUN_REDIS_URL", &redis_url),
    )
    .await?;
    let token = server.admin_token().await?;
    let name = format!("/expiring/{}", uuid::Uuid::new_v4().simple());
    let expires_at = chrono::Utc::now() + chrono::TimeDelta::seconds(2);
    let policies = format!(
        r#"[{{"Type":"Expiration","Version":"1.0","Attributes":{{"Timestamp":"{}"}}}}]"#,
        expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let mut client = parameters(&server).await?;
    client
        .put_parameter(authed(
            PutParameterRequest {
                name: name.clone(),
                value: "short-lived".into(),
                r#type: ParameterType::String as i32,
                tier: ParameterTier::Advanced as i32,
                policies,
                ..Default::default()
            },
            &token,
        ))
        .await?;
    let get = || {
        let mut client = client.clone();
        let (name, token) = (name.clone(), token.clone());
        async move {
            client
                .get_parameter(authed(
                    GetParameterRequest {
                        name,
                        with_decryption: false,
                    },
                    &token,
                ))
                .await
                .err()
                .map(|s| s.code())
        }
    };
    assert_eq!(get().await, None, "the parameter exists before its expiry");
    let mut code = None;
    for _ in 0..100 {
        code = get().await;
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code,
        Some(Code::NotFound),
        "not deleted within 10 s of its expiry"
    );
    assert!(
        chrono::Utc::now() >= expires_at,
        "deleted before its expiry"
    );

    // Events are published after the change is visible everywhere, so they may trail the
    // deletion a little: wait for them.
    let mut redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut operations: Vec<String> = Vec::new();
    for _ in 0..100 {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg("bosun:events")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(2000)
            .query_async(&mut redis)
            .await?;
        operations = entries
            .ids
            .iter()
            .filter_map(|entry| entry.get::<String>("payload"))
            .filter_map(|payload| serde_json::from_str::<serde_json::Value>(&payload).ok())
            .filter(|event| event["name"] == name.as_str())
            .filter_map(|event| event["operation"].as_str().map(str::to_owned))
            .collect();
        if operations.contains(&"Expired".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        operations.contains(&"Create".to_string()) && operations.contains(&"Expired".to_string()),
        "events for {name}: {operations:?}"
    );
    Ok(())
}

/// `bosun rotate-parameter-key` re-wraps stored SecureStrings under a new master key while the
/// server runs: the running server still decrypts and writes, and after a restart the values
/// read the same and report the new key.
#[tokio::test]
async fn rotating_the_master_key_keeps_every_value() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Process::start(Launch::new(&["server"], data.path())).await?;
    let token = server.admin_token().await?;
    secure_round_trip(&server, &token).await?;

    // Rotated while the server runs: it picks the new key up from the file by itself.
    let data_dir = data.path().display().to_string();
    let home = tempfile::tempdir()?;
    let home_dir = home.path().display().to_string();
    let rotate = [
        "rotate-parameter-key",
        "alias/bosun/next",
        "--data-dir",
        data_dir.as_str(),
    ];
    let (ok, stdout, stderr) = cli(&rotate, &[("HOME", home_dir.as_str())], "").await?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("re-wrapped 1 SecureString versions"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = cli(&rotate, &[("HOME", home_dir.as_str())], "").await?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("re-wrapped 0 SecureString versions")
            && stdout.contains("(1 were already)"),
        "{stdout}"
    );
    let read_secret = |client: &mut ParameterServiceClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            anyhow::Ok(
                client
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
                    .unwrap_or_default()
                    .value,
            )
        }
    };
    let mut running = parameters(&server).await?;
    assert_eq!(read_secret(&mut running).await?, "s3cret-value");
    let put = running
        .put_parameter(authed(
            PutParameterRequest {
                name: "/app/prod/new-secret".into(),
                value: "fresh".into(),
                r#type: ParameterType::SecureString as i32,
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert!(put.is_ok(), "{put:?}");
    server.terminate(Duration::from_secs(15)).await?;

    let again = Process::start(Launch::new(&["server"], data.path())).await?;
    let mut client = parameters(&again).await?;
    let plain = client
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
    let described = client
        .describe_parameters(authed(DescribeParametersRequest::default(), &token))
        .await?
        .into_inner()
        .parameters;
    assert!(
        described
            .iter()
            .any(|p| p.name == "/app/prod/db/password" && p.key_id == "alias/bosun/next"),
        "{described:?}"
    );
    Ok(())
}

/// Two all-in-one servers on one PostgreSQL store and one Redis: whichever takes a write, the
/// other's next read returns it, although both serve repeat reads from their caches.
#[tokio::test]
async fn two_servers_never_serve_a_value_older_than_the_others_acknowledged_write()
-> anyhow::Result<()> {
    let redis_url =
        std::env::var("BOSUN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let launch = || {
        Launch::new(&["server"], data.path())
            .store(&store)
            .env("BOSUN_REDIS_URL", &redis_url)
    };
    let first = Process::start(launch()).await?;
    // Same data directory: the same token keys and parameters master key.
    let second = Process::start(launch()).await?;
    let token = first.admin_token().await?;
    let mut clients = [parameters(&first).await?, parameters(&second).await?];
    let name = format!("/replicas/{}", uuid::Uuid::new_v4().simple());
    for round in 0..20usize {
        let value = format!("value-{round}");
        let (writer, reader) = (round % 2, (round + 1) % 2);
        clients[writer]
            .put_parameter(authed(
                PutParameterRequest {
                    name: name.clone(),
                    value: value.clone(),
                    r#type: ParameterType::String as i32,
                    overwrite: true,
                    ..Default::default()
                },
                &token,
            ))
            .await?;
        // Twice on each: the second read is the cached one.
        for client in [reader, writer, reader, writer] {
            let read = clients[client]
                .get_parameter(authed(
                    GetParameterRequest {
                        name: name.clone(),
                        with_decryption: false,
                    },
                    &token,
                ))
                .await?
                .into_inner()
                .parameter
                .unwrap_or_default();
            assert_eq!(read.value, value, "round {round}, server {client}");
            assert_eq!(read.version, round as i64 + 1);
        }
    }
    Ok(())
}
