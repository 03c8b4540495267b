//! Webhooks end to end within the crate, on SQLite and PostgreSQL: signed deliveries that
//! follow the filters, retries with back-off, giving up, disabled webhooks, idempotent
//! intake, a worker restart, the secret at rest, validation and authorization.

mod common;

use std::time::Duration;

use bosun_notifications::testing::WebhookReceiver;
use bosun_parameters::ChangeOperation;
use bosun_proto::audit::v1::AuditResult;
use bosun_proto::notifications::v1 as pb;
use common::*;
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

fn status_of(delivery: &pb::WebhookDelivery) -> pb::DeliveryStatus {
    pb::DeliveryStatus::try_from(delivery.status).unwrap_or(pb::DeliveryStatus::Unspecified)
}

#[tokio::test]
async fn matching_events_arrive_signed_and_others_do_not() {
    for test_db in bosun_store::testing::both().await {
        let mut h = Harness::start(test_db).await;
        let prod = WebhookReceiver::start().await.expect("receiver");
        let other = WebhookReceiver::start().await.expect("receiver");
        let disabled = WebhookReceiver::start().await.expect("receiver");
        let (prod_hook, prod_secret) = h
            .create(
                &prod.url,
                Some(filters(&["parameters"], &["Update"], &["/app/prod/"])),
                None,
            )
            .await;
        assert!(prod_hook.enabled, "enabled unless asked otherwise");
        let (other_hook, other_secret) = h
            .create(&other.url, Some(filters(&[], &[], &["/other/"])), None)
            .await;
        let (disabled_hook, _) = h.create(&disabled.url, None, Some(false)).await;
        assert!(!disabled_hook.enabled);

        h.publish(ChangeOperation::Create, "/app/prod/db").await;
        let update = h.publish(ChangeOperation::Update, "/app/prod/db").await;
        h.publish(ChangeOperation::Update, "/app/dev/db").await;
        let elsewhere = h.publish(ChangeOperation::Delete, "/other/x").await;
        let intake = h.intake();
        assert_eq!(h.take_events(&intake).await, 2, "one delivery per match");
        h.spawn_delivery(h.delivery());

        let got = prod.wait_for(1, WAIT).await.expect("prod receives");
        let request = &got[0];
        request.verify(&prod_secret).expect("signature verifies");
        assert!(request.verify(&other_secret).is_err(), "signed per webhook");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("bosun-webhook-id"),
            Some(prod_hook.webhook_id.as_str())
        );
        assert_eq!(request.header("bosun-event-id"), Some(update.as_str()));
        assert_eq!(request.header("bosun-delivery-attempt"), Some("1"));
        let signature = request.header("bosun-signature").unwrap_or_default();
        assert!(
            signature.starts_with("t=") && signature.contains(",v1="),
            "{signature}"
        );
        let body = request.json();
        assert_eq!(body["operation"], "Update");
        assert_eq!(body["name"], "/app/prod/db");
        assert_eq!(body["source"], "parameters");
        assert_eq!(body["event_id"], update.as_str());
        assert!(body.get("value").is_none());

        let got = other.wait_for(1, WAIT).await.expect("other receives");
        got[0].verify(&other_secret).expect("signature verifies");
        assert_eq!(got[0].json()["event_id"], elsewhere.as_str());

        let delivered = h
            .wait_deliveries(&prod_hook.webhook_id, WAIT, |d| {
                d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
            })
            .await;
        assert_eq!(delivered[0].attempts, 1);
        assert_eq!(delivered[0].last_status_code, 200);
        assert!(delivered[0].delivered_at.is_some() && delivered[0].next_attempt_at.is_none());
        h.wait_deliveries(&other_hook.webhook_id, WAIT, |d| {
            d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
        })
        .await;
        // Everything recorded was sent; nothing was recorded for the disabled webhook.
        assert!(h.deliveries(&disabled_hook.webhook_id).await.is_empty());
        assert!(disabled.requests().is_empty());
        assert_eq!(prod.requests().len(), 1, "nothing unmatched reached prod");
        h.stop().await;
    }
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_the_backoff_and_succeeds() {
    for test_db in bosun_store::testing::both().await {
        let mut h = Harness::start(test_db).await;
        let receiver = WebhookReceiver::start().await.expect("receiver");
        receiver.respond_with(&[500]);
        let (hook, secret) = h.create(&receiver.url, None, None).await;
        h.spawn_workers();
        let event = h.publish(ChangeOperation::Update, "/app/x").await;

        let got = receiver.wait_for(2, WAIT).await.expect("two attempts");
        let gap = got[1].received_at - got[0].received_at;
        assert!(
            gap >= h.config.retry_base,
            "retried after {gap:?}, before the back-off"
        );
        for (index, request) in got.iter().enumerate() {
            request.verify(&secret).expect("every attempt is signed");
            assert_eq!(request.header("bosun-event-id"), Some(event.as_str()));
            assert_eq!(
                request.header("bosun-delivery-attempt"),
                Some((index + 1).to_string().as_str())
            );
            assert_eq!(request.body, got[0].body, "the same body each time");
        }
        let deliveries = h
            .wait_deliveries(&hook.webhook_id, WAIT, |d| {
                d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
            })
            .await;
        assert_eq!(deliveries[0].attempts, 2);
        assert_eq!(deliveries[0].last_status_code, 200);
        assert_eq!(deliveries[0].event_id, event);
        assert_eq!(receiver.requests().len(), 2);
        h.stop().await;
    }
}

#[tokio::test]
async fn a_delivery_fails_after_max_attempts() {
    for test_db in bosun_store::testing::both().await {
        let config = bosun_notifications::NotificationsConfig {
            max_attempts: 3,
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(40),
            ..fast_config()
        };
        let mut h = Harness::start_with(
            test_db,
            config,
            std::sync::Arc::new(bosun_queue::MemoryQueue::new(
                bosun_queue::QueueOptions::default(),
            )),
        )
        .await;
        let receiver = WebhookReceiver::start().await.expect("receiver");
        receiver.respond_with(&[503; 10]);
        let (hook, _) = h.create(&receiver.url, None, None).await;
        h.spawn_workers();
        h.publish(ChangeOperation::Delete, "/app/x").await;
        let deliveries = h
            .wait_deliveries(&hook.webhook_id, WAIT, |d| {
                d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Failed
            })
            .await;
        assert_eq!(deliveries[0].attempts, 3);
        assert_eq!(deliveries[0].last_status_code, 503);
        assert_eq!(deliveries[0].last_error, "http 503");
        assert!(deliveries[0].next_attempt_at.is_none() && deliveries[0].delivered_at.is_none());
        assert_eq!(receiver.requests().len(), 3, "no attempt after the last");
        h.stop().await;
    }
}

#[tokio::test]
async fn unreachable_endpoints_record_a_short_error() {
    let mut h = Harness::start(bosun_store::testing::sqlite().await).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", closed.local_addr().expect("address"));
    drop(closed);
    let (hook, _) = h.create(&url, None, None).await;
    h.spawn_workers();
    h.publish(ChangeOperation::Create, "/app/x").await;
    let deliveries = h
        .wait_deliveries(&hook.webhook_id, WAIT, |d| {
            d.len() == 1 && d[0].attempts >= 1
        })
        .await;
    let delivery = &deliveries[0];
    assert_eq!(status_of(delivery), pb::DeliveryStatus::Pending);
    assert_eq!(delivery.last_status_code, 0);
    assert!(
        delivery.last_error.starts_with("connect"),
        "{}",
        delivery.last_error
    );
    assert!(
        !delivery.last_error.contains(&url),
        "{}",
        delivery.last_error
    );
    assert!(delivery.last_error.chars().count() <= 220);
    assert!(delivery.next_attempt_at.is_some());
    h.stop().await;
}

#[tokio::test]
async fn a_duplicate_event_makes_one_delivery() {
    for test_db in bosun_store::testing::both().await {
        let mut h = Harness::start(test_db).await;
        let receiver = WebhookReceiver::start().await.expect("receiver");
        let (hook, _) = h.create(&receiver.url, None, None).await;
        let (_, payload) = event_payload(ChangeOperation::Update, "/app/x");
        let headers = bosun_queue::Headers::new();
        // The same event twice, as an at-least-once publisher or a redelivery would.
        for _ in 0..2 {
            h.queue
                .publish(bosun_parameters::EVENTS_STREAM, &payload, &headers)
                .await
                .expect("publish");
        }
        let intake = h.intake();
        assert_eq!(h.take_events(&intake).await, 1);
        assert_eq!(h.deliveries(&hook.webhook_id).await.len(), 1);
        h.spawn_delivery(h.delivery());
        h.wait_deliveries(&hook.webhook_id, WAIT, |d| {
            d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
        })
        .await;
        assert_eq!(receiver.requests().len(), 1);
        assert_eq!(
            h.queue
                .pending(
                    bosun_parameters::EVENTS_STREAM,
                    bosun_notifications::CONSUMER_GROUP
                )
                .await
                .expect("pending"),
            0,
            "both copies acknowledged"
        );
        h.stop().await;
    }
}

/// A Run Command status event as the commands service publishes it, directed to `webhook_id`
/// when given; returns its event id.
async fn publish_command_event(h: &Harness, command_id: &str, webhook_id: Option<&str>) -> String {
    let event_id = uuid::Uuid::now_v7().to_string();
    let mut event = serde_json::json!({
        "event_id": event_id,
        "source": "commands",
        "operation": "CommandStatusChange",
        "name": command_id,
        "command_id": command_id,
        "document_name": "AWS-RunShellScript",
        "status": "Success",
        "status_details": "Success",
        "requested_by": ADMIN,
        "time": chrono::Utc::now().to_rfc3339(),
    });
    if let Some(id) = webhook_id {
        event["webhook_id"] = serde_json::Value::from(id);
    }
    h.queue
        .publish(
            bosun_parameters::EVENTS_STREAM,
            &serde_json::to_vec(&event).expect("json"),
            &bosun_queue::Headers::new(),
        )
        .await
        .expect("publish");
    event_id
}

#[tokio::test]
async fn an_event_naming_a_webhook_reaches_it_whatever_its_filters() {
    for test_db in bosun_store::testing::both().await {
        let mut h = Harness::start(test_db).await;
        let named = WebhookReceiver::start().await.expect("receiver");
        let commands = WebhookReceiver::start().await.expect("receiver");
        let disabled = WebhookReceiver::start().await.expect("receiver");
        // Listens to parameters only: reached by commands events only when they name it.
        let (named_hook, named_secret) = h
            .create(&named.url, Some(filters(&["parameters"], &[], &[])), None)
            .await;
        // Its filters match every commands event, and one event also names it.
        let (commands_hook, _) = h
            .create(&commands.url, Some(filters(&["commands"], &[], &[])), None)
            .await;
        let (disabled_hook, _) = h.create(&disabled.url, None, Some(false)).await;

        let to_named = publish_command_event(&h, "c-1", Some(&named_hook.webhook_id)).await;
        let to_both = publish_command_event(&h, "c-2", Some(&commands_hook.webhook_id)).await;
        let to_disabled = publish_command_event(&h, "c-3", Some(&disabled_hook.webhook_id)).await;
        let to_nobody = publish_command_event(&h, "c-4", Some("wh-0000000000000000")).await;
        let intake = h.intake();
        // named: c-1; commands: c-1..c-4 by its filters, c-2 once although also named.
        assert_eq!(h.take_events(&intake).await, 5);
        assert_eq!(
            h.queue
                .pending(
                    bosun_parameters::EVENTS_STREAM,
                    bosun_notifications::CONSUMER_GROUP
                )
                .await
                .expect("pending"),
            0,
            "every event acknowledged, the one naming an unknown webhook too"
        );
        h.spawn_delivery(h.delivery());

        let got = named
            .wait_for(1, WAIT)
            .await
            .expect("the named webhook receives");
        got[0]
            .verify(&named_secret)
            .expect("signed with its secret");
        assert_eq!(got[0].header("bosun-event-id"), Some(to_named.as_str()));
        let body = got[0].json();
        assert_eq!(body["source"], "commands");
        assert_eq!(body["name"], "c-1");
        assert_eq!(body["webhook_id"], named_hook.webhook_id.as_str());

        let got = commands
            .wait_for(4, WAIT)
            .await
            .expect("the commands webhook receives");
        let mut ids: Vec<String> = got
            .iter()
            .map(|request| {
                request
                    .header("bosun-event-id")
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        ids.sort();
        let mut expected = vec![to_named.clone(), to_both, to_disabled, to_nobody];
        expected.sort();
        assert_eq!(ids, expected, "one delivery per event, none twice");
        h.wait_deliveries(&named_hook.webhook_id, WAIT, |d| {
            d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
        })
        .await;
        assert!(h.deliveries(&disabled_hook.webhook_id).await.is_empty());
        assert!(
            disabled.requests().is_empty(),
            "a disabled webhook gets nothing"
        );
        assert_eq!(named.requests().len(), 1);
        h.stop().await;
    }
}

#[tokio::test]
async fn malformed_events_are_acknowledged_and_skipped() {
    let mut h = Harness::start(bosun_store::testing::sqlite().await).await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let (hook, _) = h.create(&receiver.url, None, None).await;
    let headers = bosun_queue::Headers::new();
    h.queue
        .publish(bosun_parameters::EVENTS_STREAM, b"{not json", &headers)
        .await
        .expect("publish");
    let good = h.publish(ChangeOperation::Create, "/app/x").await;
    let intake = h.intake();
    assert_eq!(h.take_events(&intake).await, 1);
    assert_eq!(
        h.queue
            .pending(
                bosun_parameters::EVENTS_STREAM,
                bosun_notifications::CONSUMER_GROUP
            )
            .await
            .expect("pending"),
        0
    );
    h.spawn_delivery(h.delivery());
    let got = receiver.wait_for(1, WAIT).await.expect("the good one");
    assert_eq!(got[0].json()["event_id"], good.as_str());
    assert_eq!(h.deliveries(&hook.webhook_id).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn pending_deliveries_survive_a_worker_that_dies_mid_attempt() {
    for test_db in bosun_store::testing::both().await {
        let mut h = Harness::start(test_db).await;
        let receiver = WebhookReceiver::start().await.expect("receiver");
        // The first attempt hangs past the request time-out's lease margin.
        receiver.set_delay(Duration::from_secs(30));
        let (hook, secret) = h.create(&receiver.url, None, None).await;
        let intake = h.intake();
        let first = h.spawn_delivery(h.delivery());
        let event = h.publish(ChangeOperation::Update, "/app/x").await;
        assert_eq!(h.take_events(&intake).await, 1);
        receiver
            .wait_for(1, WAIT)
            .await
            .expect("first attempt starts");
        // The process dies with the attempt in flight: nothing is recorded.
        first.abort();
        receiver.set_delay(Duration::ZERO);
        let pending = h.deliveries(&hook.webhook_id).await;
        assert_eq!(status_of(&pending[0]), pb::DeliveryStatus::Pending);
        assert_eq!(pending[0].attempts, 0);

        // A new worker takes over once the dead one's lease expires.
        h.spawn_delivery(h.delivery());
        let got = receiver.wait_for(2, WAIT).await.expect("delivered again");
        got[1].verify(&secret).expect("signed");
        assert_eq!(got[1].header("bosun-event-id"), Some(event.as_str()));
        h.wait_deliveries(&hook.webhook_id, WAIT, |d| {
            d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
        })
        .await;
        h.stop().await;
    }
}

#[tokio::test]
async fn deliveries_recorded_while_no_worker_runs_go_out_when_one_starts() {
    let mut h = Harness::start(bosun_store::testing::sqlite().await).await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let (hook, _) = h.create(&receiver.url, None, None).await;
    // An intake worker that stops (shutdown) after recording.
    let intake = h.intake();
    for name in ["/a", "/b", "/c"] {
        h.publish(ChangeOperation::Create, name).await;
    }
    assert_eq!(h.take_events(&intake).await, 3);
    assert!(receiver.requests().is_empty());
    h.spawn_delivery(h.delivery());
    receiver.wait_for(3, WAIT).await.expect("all three");
    let deliveries = h
        .wait_deliveries(&hook.webhook_id, WAIT, |d| {
            d.len() == 3
                && d.iter()
                    .all(|d| status_of(d) == pb::DeliveryStatus::Succeeded)
        })
        .await;
    // Newest first.
    let names: Vec<&str> = deliveries.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["/c", "/b", "/a"]);
    h.stop().await;
}

#[tokio::test]
async fn the_secret_is_sealed_at_rest_and_never_audited() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (hook, secret) = h
            .create("https://hooks.example.com/path/TOKEN123?x=1", None, None)
            .await;
        let key = bosun_notifications::SigningSecret::parse(&secret).expect("whsec_ text");
        let forms = [
            secret.clone(),
            secret.trim_start_matches("whsec_").to_owned(),
            hex_encode(key.as_bytes()),
            base64_standard(key.as_bytes()),
        ];
        let backend = h.test_db.db.get_database_backend();
        let rows = h
            .test_db
            .db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT webhook_id, url, description, sources, operations, name_prefixes, \
                 sealed_secret, created_by FROM webhooks",
            ))
            .await
            .expect("read the table");
        assert_eq!(rows.len(), 1);
        let mut row_text = String::new();
        for column in 0..8 {
            let value: String = rows[0].try_get_by_index(column).expect("text column");
            row_text.push_str(&value);
            row_text.push('\n');
        }
        assert!(row_text.contains(&hook.webhook_id));
        for form in &forms {
            assert!(
                !row_text.contains(form.as_str()),
                "the row holds the secret as {form}"
            );
        }
        // The sealed form opens with the key ring, for this webhook only.
        let sealed: String = rows[0].try_get_by_index(6).expect("sealed");
        let envelope = bosun_parameters::Envelope::from_base64(&sealed).expect("an envelope");
        let opened = h.keys.open(&hook.webhook_id, &envelope).expect("opens");
        assert_eq!(opened.as_slice(), key.as_bytes());
        assert!(h.keys.open("another-webhook", &envelope).is_err());

        // Rotation: a new secret, returned once, and still nothing readable at rest.
        let rotated = h
            .client()
            .rotate_webhook_secret(h.req(
                ADMIN,
                pb::RotateWebhookSecretRequest {
                    webhook_id: hook.webhook_id.clone(),
                },
            ))
            .await
            .expect("rotate")
            .into_inner();
        assert_ne!(rotated.secret, secret);
        assert!(rotated.secret.starts_with("whsec_"));
        let got = h
            .client()
            .get_webhook(h.req(
                ADMIN,
                pb::GetWebhookRequest {
                    webhook_id: hook.webhook_id.clone(),
                },
            ))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(got.webhook.expect("webhook").url, hook.url);

        let mut audit_text = String::new();
        for action in [
            "notifications:CreateWebhook",
            "notifications:RotateWebhookSecret",
        ] {
            let events = h.audit_events(action).await;
            assert_eq!(events.len(), 1, "{action} audited once");
            assert_eq!(events[0].resource, format!("webhook:{}", hook.webhook_id));
            audit_text.push_str(&format!("{:?}", events[0]));
        }
        for form in forms.iter().chain([&rotated.secret]) {
            assert!(!audit_text.contains(form.as_str()), "audit holds a secret");
        }
        assert!(
            !audit_text.contains("TOKEN123"),
            "audit holds the url path: {audit_text}"
        );
        h.stop().await;
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn webhooks_are_listed_updated_and_deleted() {
    for test_db in bosun_store::testing::both().await {
        let mut h = Harness::start(test_db).await;
        let receiver = WebhookReceiver::start().await.expect("receiver");
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                h.create(&receiver.url, None, Some(false))
                    .await
                    .0
                    .webhook_id,
            );
        }
        let page = h
            .client()
            .list_webhooks(h.req(
                ADMIN,
                pb::ListWebhooksRequest {
                    max_results: 2,
                    next_token: String::new(),
                },
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.webhooks.len(), 2);
        let rest = h
            .client()
            .list_webhooks(h.req(
                ADMIN,
                pb::ListWebhooksRequest {
                    max_results: 2,
                    next_token: page.next_token,
                },
            ))
            .await
            .expect("list")
            .into_inner();
        assert!(rest.next_token.is_empty());
        let listed: Vec<String> = page
            .webhooks
            .iter()
            .chain(&rest.webhooks)
            .map(|w| w.webhook_id.clone())
            .collect();
        assert_eq!(listed, ids, "oldest first, each once");

        // Enable one with a filter: only then does it receive.
        let updated = h
            .client()
            .update_webhook(h.req(
                ADMIN,
                pb::UpdateWebhookRequest {
                    webhook_id: ids[0].clone(),
                    enabled: Some(true),
                    filters: Some(filters(&[], &["Delete"], &[])),
                    description: Some("now on".into()),
                    url: None,
                },
            ))
            .await
            .expect("update")
            .into_inner()
            .webhook
            .expect("webhook");
        assert!(updated.enabled);
        assert_eq!(updated.url, receiver.url, "unset fields stay");
        assert_eq!(updated.description, "now on");
        assert_eq!(updated.filters.expect("filters").operations, ["Delete"]);
        h.spawn_workers();
        h.publish(ChangeOperation::Update, "/x").await;
        let deleted = h.publish(ChangeOperation::Delete, "/x").await;
        let got = receiver.wait_for(1, WAIT).await.expect("delivered");
        assert_eq!(got[0].json()["event_id"], deleted.as_str());

        h.client()
            .delete_webhook(h.req(
                ADMIN,
                pb::DeleteWebhookRequest {
                    webhook_id: ids[0].clone(),
                },
            ))
            .await
            .expect("delete");
        assert_error(
            h.client()
                .get_webhook(h.req(
                    ADMIN,
                    pb::GetWebhookRequest {
                        webhook_id: ids[0].clone(),
                    },
                ))
                .await,
            Code::NotFound,
            "WebhookNotFound",
        );
        assert_error(
            h.client()
                .delete_webhook(h.req(
                    ADMIN,
                    pb::DeleteWebhookRequest {
                        webhook_id: ids[0].clone(),
                    },
                ))
                .await,
            Code::NotFound,
            "WebhookNotFound",
        );
        assert_error(
            h.client()
                .list_webhook_deliveries(h.req(
                    ADMIN,
                    pb::ListWebhookDeliveriesRequest {
                        webhook_id: ids[0].clone(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::NotFound,
            "WebhookNotFound",
        );
        let events = h.audit_events("notifications:DeleteWebhook").await;
        let results: Vec<i32> = events.iter().map(|e| e.result).collect();
        assert!(
            results.contains(&(AuditResult::Success as i32)),
            "{events:?}"
        );
        assert!(
            results.contains(&(AuditResult::Failure as i32)),
            "{events:?}"
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn validation_errors_name_the_field_and_the_rule() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let create = |url: &str, filters: Option<pb::WebhookFilters>, description: &str| {
            h.req(
                ADMIN,
                pb::CreateWebhookRequest {
                    url: url.into(),
                    description: description.into(),
                    filters,
                    enabled: None,
                },
            )
        };
        let cases: Vec<(tonic::Request<pb::CreateWebhookRequest>, &str, &str)> = vec![
            (
                create("ftp://example.com/x", None, ""),
                "url",
                "InvalidWebhookUrl",
            ),
            (
                create("http://u:p@example.com/x", None, ""),
                "url",
                "InvalidWebhookUrl",
            ),
            (create("http://", None, ""), "url", "InvalidWebhookUrl"),
            (
                create(&format!("https://e.com/{}", "a".repeat(2048)), None, ""),
                "url",
                "InvalidWebhookUrl",
            ),
            (
                create(
                    "https://e.com/",
                    Some(filters(&["documents"], &[], &[])),
                    "",
                ),
                "filters.sources[0]",
                "InvalidWebhookFilter",
            ),
            (
                create(
                    "https://e.com/",
                    Some(filters(&[], &["Create", "Explode"], &[])),
                    "",
                ),
                "filters.operations[1]",
                "InvalidWebhookFilter",
            ),
            (
                create("https://e.com/", Some(filters(&[], &[], &["app/"])), ""),
                "filters.name_prefixes[0]",
                "InvalidWebhookFilter",
            ),
            (
                create("https://e.com/", Some(filters(&[], &[], &["/a"; 21])), ""),
                "filters.name_prefixes",
                "InvalidWebhookFilter",
            ),
            (
                create("https://e.com/", None, &"d".repeat(1025)),
                "description",
                "ValidationException",
            ),
        ];
        for (request, field, reason) in cases {
            let status = assert_error(
                h.client().create_webhook(request).await,
                Code::InvalidArgument,
                reason,
            );
            assert_eq!(violated_fields(&status), [field], "{status:?}");
            assert!(status.message().starts_with(field), "{}", status.message());
        }
        let status = assert_error(
            h.client()
                .get_webhook(h.req(
                    ADMIN,
                    pb::GetWebhookRequest {
                        webhook_id: "hook-1".into(),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["webhook_id"]);
        let (hook, _) = h.create("https://e.com/", None, None).await;
        let status = assert_error(
            h.client()
                .update_webhook(h.req(
                    ADMIN,
                    pb::UpdateWebhookRequest {
                        webhook_id: hook.webhook_id.clone(),
                        url: Some("gopher://e.com".into()),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidWebhookUrl",
        );
        assert_eq!(violated_fields(&status), ["url"]);
        let status = assert_error(
            h.client()
                .list_webhooks(h.req(
                    ADMIN,
                    pb::ListWebhooksRequest {
                        max_results: 51,
                        next_token: String::new(),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "ValidationException",
        );
        assert_eq!(violated_fields(&status), ["max_results"]);
        let status = assert_error(
            h.client()
                .list_webhooks(h.req(
                    ADMIN,
                    pb::ListWebhooksRequest {
                        max_results: 0,
                        next_token: "%%".into(),
                    },
                ))
                .await,
            Code::InvalidArgument,
            "InvalidNextToken",
        );
        assert_eq!(violated_fields(&status), ["next_token"]);
        h.stop().await;
    }
}

#[tokio::test]
async fn at_most_one_hundred_webhooks() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        for _ in 0..100 {
            h.create("https://e.com/", None, Some(false)).await;
        }
        let status = assert_error(
            h.client()
                .create_webhook(h.req(
                    ADMIN,
                    pb::CreateWebhookRequest {
                        url: "https://e.com/".into(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::ResourceExhausted,
            "WebhookLimitExceeded",
        );
        assert!(status.message().contains("100"), "{}", status.message());
        h.stop().await;
    }
}

#[tokio::test]
async fn callers_without_a_grant_are_denied_and_audited() {
    for test_db in bosun_store::testing::both().await {
        let h = Harness::start(test_db).await;
        let (hook, _) = h.create("https://e.com/", None, None).await;
        let id = hook.webhook_id.clone();
        let mut client = h.client();
        let denied = |result: Result<(), tonic::Status>| {
            let status = result.expect_err("denied");
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        };
        for who in [NOBODY, READER] {
            denied(
                client
                    .create_webhook(h.req(
                        who,
                        pb::CreateWebhookRequest {
                            url: "https://e.com/".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ()),
            );
            denied(
                client
                    .update_webhook(h.req(
                        who,
                        pb::UpdateWebhookRequest {
                            webhook_id: id.clone(),
                            enabled: Some(false),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ()),
            );
            denied(
                client
                    .delete_webhook(h.req(
                        who,
                        pb::DeleteWebhookRequest {
                            webhook_id: id.clone(),
                        },
                    ))
                    .await
                    .map(|_| ()),
            );
            denied(
                client
                    .rotate_webhook_secret(h.req(
                        who,
                        pb::RotateWebhookSecretRequest {
                            webhook_id: id.clone(),
                        },
                    ))
                    .await
                    .map(|_| ()),
            );
            denied(
                client
                    .list_webhook_deliveries(h.req(
                        who,
                        pb::ListWebhookDeliveriesRequest {
                            webhook_id: id.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| ()),
            );
        }
        denied(
            client
                .get_webhook(h.req(
                    NOBODY,
                    pb::GetWebhookRequest {
                        webhook_id: id.clone(),
                    },
                ))
                .await
                .map(|_| ()),
        );
        denied(
            client
                .list_webhooks(h.req(NOBODY, pb::ListWebhooksRequest::default()))
                .await
                .map(|_| ()),
        );
        // The reader's grant covers exactly reading.
        let got = client
            .get_webhook(h.req(
                READER,
                pb::GetWebhookRequest {
                    webhook_id: id.clone(),
                },
            ))
            .await
            .expect("reader reads")
            .into_inner();
        assert!(
            got.webhook.expect("webhook").enabled,
            "the denied update changed nothing"
        );
        let listed = client
            .list_webhooks(h.req(READER, pb::ListWebhooksRequest::default()))
            .await
            .expect("reader lists")
            .into_inner();
        assert_eq!(listed.webhooks.len(), 1, "the denied create made nothing");
        let denials = h.audit_events("notifications:CreateWebhook").await;
        let denied_count = denials
            .iter()
            .filter(|e| e.result == AuditResult::Denied as i32)
            .count();
        assert_eq!(denied_count, 2, "{denials:?}");
        h.stop().await;
    }
}

/// The production queue: events published to Redis reach the webhook through the worker loop.
#[tokio::test]
async fn events_from_redis_reach_the_webhook() {
    let prefix = format!("bosun-test-{}:", uuid::Uuid::new_v4().simple());
    let queue = bosun_queue::RedisQueue::connect(
        "redis://127.0.0.1:6379",
        &prefix,
        bosun_queue::QueueOptions::default(),
    )
    .await
    .expect("redis at 127.0.0.1:6379");
    let mut h = Harness::start_with(
        bosun_store::testing::postgres().await,
        fast_config(),
        std::sync::Arc::new(queue),
    )
    .await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let (_, secret) = h.create(&receiver.url, None, None).await;
    h.spawn_workers();
    let event = h.publish(ChangeOperation::Create, "/from/redis").await;
    let got = receiver.wait_for(1, WAIT).await.expect("delivered");
    got[0].verify(&secret).expect("signed");
    assert_eq!(got[0].json()["event_id"], event.as_str());
    h.stop().await;
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .expect("delete");
    }
}

#[tokio::test]
async fn timeouts_and_redirects_are_failed_attempts() {
    let mut h = Harness::start(bosun_store::testing::sqlite().await).await;
    let slow = WebhookReceiver::start().await.expect("receiver");
    slow.set_delay(Duration::from_secs(5));
    let moved = WebhookReceiver::start().await.expect("receiver");
    moved.respond_with(&[302]);
    let (slow_hook, _) = h.create(&slow.url, None, None).await;
    let (moved_hook, _) = h.create(&moved.url, None, None).await;
    h.spawn_workers();
    h.publish(ChangeOperation::Create, "/app/x").await;
    let timed_out = h
        .wait_deliveries(&slow_hook.webhook_id, WAIT, |d| {
            d.len() == 1 && d[0].attempts >= 1
        })
        .await;
    assert_eq!(timed_out[0].last_error, "timeout");
    assert_eq!(timed_out[0].last_status_code, 0);
    assert_eq!(status_of(&timed_out[0]), pb::DeliveryStatus::Pending);
    // The 302 is an answer like any other non-2xx: not followed, retried, then delivered.
    let moved_deliveries = h
        .wait_deliveries(&moved_hook.webhook_id, WAIT, |d| {
            d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
        })
        .await;
    assert_eq!(moved_deliveries[0].attempts, 2);
    let got = moved.requests();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.path == "/hook"));
    h.stop().await;
}

/// `bosun rotate-parameter-key` re-wraps the sealed secrets under a new master key; running
/// workers pick the new key up from the key file, and receivers keep their secret.
#[tokio::test]
async fn secrets_follow_a_master_key_rotation_without_a_restart() {
    for test_db in bosun_store::testing::both().await {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("parameters.json");
        let source = std::sync::Arc::new(
            bosun_parameters::KeySource::from_file(&path)
                .expect("key file")
                .check_every(Duration::ZERO),
        );
        let mut h = Harness::start_with_keys(
            test_db,
            fast_config(),
            std::sync::Arc::new(bosun_queue::MemoryQueue::new(
                bosun_queue::QueueOptions::default(),
            )),
            source,
        )
        .await;
        let receiver = WebhookReceiver::start().await.expect("receiver");
        let (hook, secret) = h.create(&receiver.url, None, None).await;
        h.spawn_workers();

        // What the rotation command does, from another process's point of view.
        let mut ring = bosun_parameters::MasterKeyRing::load_or_create(&path).expect("ring");
        ring.generate("alias/next").expect("new key");
        ring.set_default_key_id("alias/next").expect("default");
        std::fs::write(&path, secrecy::ExposeSecret::expose_secret(&ring.to_json()))
            .expect("write the key file");
        let report =
            bosun_notifications::rewrap_webhook_secrets(&h.test_db.db, &ring, "alias/next")
                .await
                .expect("rewrap");
        assert_eq!((report.rewrapped, report.already_current), (1, 0));
        let again = bosun_notifications::rewrap_webhook_secrets(&h.test_db.db, &ring, "alias/next")
            .await
            .expect("rewrap again");
        assert_eq!((again.rewrapped, again.already_current), (0, 1));

        h.publish(ChangeOperation::Update, "/app/x").await;
        let got = receiver.wait_for(1, WAIT).await.expect("delivered");
        got[0]
            .verify(&secret)
            .expect("the receiver's secret still verifies");
        let deliveries = h
            .wait_deliveries(&hook.webhook_id, WAIT, |d| {
                d.len() == 1 && status_of(&d[0]) == pb::DeliveryStatus::Succeeded
            })
            .await;
        assert_eq!(
            deliveries[0].attempts, 1,
            "no failed attempt for want of the key"
        );
        h.stop().await;
    }
}
