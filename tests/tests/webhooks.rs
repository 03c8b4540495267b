//! Webhooks end to end through the real `bosun` binary: a webhook created with the CLI
//! receives a signed event when `bosun param put` changes a parameter, its deliveries are
//! listed, and the NotificationService also runs on its own behind the gateway's proxy.

use std::time::Duration;

use bosun_notifications::testing::WebhookReceiver;
use bosun_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use bosun_proto::notifications::v1::{CreateWebhookRequest, ListWebhooksRequest};
use bosun_tests::{Launch, Process, Store, authed, cli};

const WAIT: Duration = Duration::from_secs(20);

/// Runs the CLI and parses its `-o json` output.
async fn cli_json(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (ok, stdout, stderr) = cli(&all, env, "").await?;
    anyhow::ensure!(ok, "bosun {}: {stderr}", args.join(" "));
    Ok(serde_json::from_str(&stdout)?)
}

#[tokio::test]
async fn a_parameter_change_reaches_the_webhook_signed() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(
        Launch::new(&["server"], data.path())
            .config("[notifications]\nretry_base = \"100ms\"\npoll_interval = \"100ms\"\n"),
    )
    .await?;
    let token = server.admin_token().await?;
    let env = [
        ("BOSUN_SERVER", server.url.as_str()),
        ("BOSUN_TOKEN", token.as_str()),
    ];
    let receiver = WebhookReceiver::start().await?;
    // The first answer fails, so the event arrives on the second attempt.
    receiver.respond_with(&[500]);

    let created = cli_json(
        &[
            "webhook",
            "create",
            &receiver.url,
            "--operation",
            "Create",
            "--name-prefix",
            "/app/",
            "--description",
            "e2e",
        ],
        &env,
    )
    .await?;
    let secret = created["secret"].as_str().unwrap_or_default().to_owned();
    let webhook_id = created["webhook"]["webhook_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["webhook"]["enabled"], true);

    // Not matched: another prefix. Matched: a new parameter under /app/.
    let (ok, _, stderr) = cli(
        &["param", "put", "/other/x", "v", "--type", "string"],
        &env,
        "",
    )
    .await?;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(
        &[
            "param",
            "put",
            "/app/db/url",
            "postgres://db",
            "--type",
            "string",
        ],
        &env,
        "",
    )
    .await?;
    assert!(ok, "{stderr}");

    let got = receiver.wait_for(2, WAIT).await?;
    for request in &got {
        request
            .verify(&secret)
            .map_err(|error| anyhow::anyhow!("signature: {error}"))?;
        assert_eq!(
            request.header("bosun-webhook-id"),
            Some(webhook_id.as_str())
        );
    }
    let body = got[1].json();
    assert_eq!(body["source"], "parameters");
    assert_eq!(body["operation"], "Create");
    assert_eq!(body["name"], "/app/db/url");
    assert_eq!(body["principal"], "user/admin");
    assert!(
        body.get("value").is_none(),
        "events never carry values: {body}"
    );
    assert!(!String::from_utf8_lossy(&got[1].body).contains("postgres://db"));
    assert_eq!(got[1].header("bosun-delivery-attempt"), Some("2"));

    // The CLI shows the delivery, succeeded on its second attempt.
    let deadline = tokio::time::Instant::now() + WAIT;
    let delivery = loop {
        let listed = cli_json(&["webhook", "deliveries", &webhook_id], &env).await?;
        let first = listed["deliveries"][0].clone();
        if first["status"] == "Succeeded" {
            assert_eq!(listed["deliveries"].as_array().map(Vec::len), Some(1));
            break first;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the delivery did not succeed in time: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status_code"], 200);
    assert_eq!(delivery["name"], "/app/db/url");
    assert_eq!(
        receiver.requests().len(),
        2,
        "the /other change was not sent"
    );

    // The other commands, as an operator uses them.
    let listed = cli_json(&["webhook", "ls"], &env).await?;
    assert_eq!(listed["webhooks"][0]["webhook_id"], webhook_id.as_str());
    let updated = cli_json(&["webhook", "update", &webhook_id, "--disable"], &env).await?;
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["operations"][0], "Create", "filters kept");
    let rotated = cli_json(&["webhook", "rotate-secret", &webhook_id], &env).await?;
    let new_secret = rotated["secret"].as_str().unwrap_or_default();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let (ok, table, _) = cli(&["webhook", "get", &webhook_id], &env, "").await?;
    assert!(
        ok && table.contains("enabled:") && !table.contains("whsec_"),
        "{table}"
    );
    let (ok, _, stderr) = cli(&["webhook", "rm", &webhook_id], &env, "").await?;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&["webhook", "get", &webhook_id], &env, "").await?;
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn notifications_run_alone_behind_the_proxy() -> anyhow::Result<()> {
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let port = bosun_tests::free_port()?;
    let gateway = Process::start(
        Launch::new(&["serve", "gateway"], data.path())
            .store(&store)
            .config(&format!(
                "[routes]\n\"bosun.notifications.v1.NotificationService\" = \"http://127.0.0.1:{port}\"\n"
            )),
    )
    .await?;
    let _service = Process::start_on(
        Launch::new(&["serve", "notifications"], data.path()).store(&store),
        port,
    )
    .await?;
    let token = gateway.admin_token().await?;
    let mut client = NotificationServiceClient::new(gateway.channel().await?);
    let created = client
        .create_webhook(authed(
            CreateWebhookRequest {
                url: "https://hooks.example.com/bosun".into(),
                ..Default::default()
            },
            &token,
        ))
        .await?
        .into_inner();
    assert!(created.secret.starts_with("whsec_"));
    let listed = client
        .list_webhooks(authed(ListWebhooksRequest::default(), &token))
        .await?
        .into_inner();
    assert_eq!(listed.webhooks.len(), 1);
    // Without a token the proxied service is as closed as a local one.
    let status = client
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .expect_err("unauthenticated");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    Ok(())
}
