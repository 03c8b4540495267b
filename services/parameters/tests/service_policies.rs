//! Enforced parameter policies on a manual clock: Expiration deletes on time (audited, with
//! an `Expired` event), notifications fire once when due, NoChangeNotification is reset by a
//! change, statuses turn Finished, `next_due` says when to wake. On SQLite and PostgreSQL.

mod service_common;

use std::sync::Arc;

use bosun_parameters::{ChangeOperation, ManualClock};
use bosun_proto::parameters::v1 as pb;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use service_common::*;
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn expires_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("valid test time")
}

fn advanced_put(
    name: &str,
    value: &str,
    policies: &str,
    overwrite: bool,
) -> pb::PutParameterRequest {
    pb::PutParameterRequest {
        name: name.into(),
        value: value.into(),
        r#type: pb::ParameterType::String as i32,
        tier: pb::ParameterTier::Advanced as i32,
        policies: policies.into(),
        overwrite,
        ..Default::default()
    }
}

const EXPIRING: &str = r#"[
  {"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2030-01-01T00:00:00.000Z"}},
  {"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"1","Unit":"Hours"}}
]"#;

const NO_CHANGE: &str =
    r#"[{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"1","Unit":"Days"}}]"#;

/// Policy statuses as DescribeParameters reports them.
async fn described_statuses(h: &Harness, name: &str) -> Vec<String> {
    let page = h
        .client()
        .describe_parameters(h.req(
            ADMIN,
            pb::DescribeParametersRequest {
                parameter_filters: vec![filter("Name", "Equals", &[name])],
                ..Default::default()
            },
        ))
        .await
        .expect("describe")
        .into_inner();
    page.parameters
        .first()
        .expect("the parameter is described")
        .policies
        .iter()
        .map(|p| p.policy_status.clone())
        .collect()
}

/// Policy statuses GetParameterHistory reports for the latest version.
async fn history_statuses(h: &Harness, name: &str) -> Vec<String> {
    let history = h
        .client()
        .get_parameter_history(h.req(
            ADMIN,
            pb::GetParameterHistoryRequest {
                name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("history")
        .into_inner();
    history
        .parameters
        .last()
        .expect("a version")
        .policies
        .iter()
        .map(|p| p.policy_status.clone())
        .collect()
}

fn operations(events: &[ReadEvent]) -> Vec<String> {
    events.iter().map(|e| e.operation().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiration_deletes_on_time_after_one_notification() {
    let at = expires_at();
    for kind in QUEUE_KINDS {
        for test_db in bosun_store::testing::both().await {
            let events = TestQueue::new(kind).await;
            let clock = Arc::new(ManualClock::new(at - TimeDelta::hours(2)));
            let h =
                Harness::start_with(test_db, Some(events.queue.clone()), Some(clock.clone())).await;
            let worker = h.worker();
            let name = "/app/temp/token";
            h.put(ALICE, advanced_put(name, "v1", EXPIRING, false))
                .await
                .expect("create with policies");
            assert_eq!(
                operations(&take_events(&events.queue).await),
                vec!["Create"]
            );

            // Two hours before: nothing due; the notification is next.
            let report = worker.run_once().await.expect("scan");
            assert!(report.notified.is_empty() && report.expired.is_empty());
            assert_eq!(report.next_due, Some(at - TimeDelta::hours(1)));
            assert_eq!(
                described_statuses(&h, name).await,
                vec!["Pending", "Pending"]
            );

            // A second before the notification is due: still nothing.
            clock.set(at - TimeDelta::hours(1) - TimeDelta::seconds(1));
            let report = worker.run_once().await.expect("scan");
            assert!(report.notified.is_empty(), "{report:?}");
            assert!(take_events(&events.queue).await.is_empty());

            // At T-1h the notification is due: in progress until the worker acts, then it
            // fires, once, across two scans.
            clock.set(at - TimeDelta::hours(1));
            assert_eq!(
                described_statuses(&h, name).await,
                vec!["Pending", "InProgress"]
            );
            let report = worker.run_once().await.expect("scan");
            assert_eq!(
                report.notified,
                vec![(name.to_owned(), ChangeOperation::ExpirationNotification)]
            );
            assert_eq!(report.next_due, Some(at));
            let report = worker.run_once().await.expect("scan");
            assert!(report.notified.is_empty(), "fired twice: {report:?}");
            let notified = take_events(&events.queue).await;
            assert_eq!(
                operations(&notified),
                vec!["ExpirationNotification"],
                "{kind:?}"
            );
            assert_eq!(notified[0].field("principal"), "service/parameters");
            assert_eq!(notified[0].field("name"), name);
            assert_eq!(notified[0].json["version"].as_i64(), Some(1));
            assert_eq!(
                described_statuses(&h, name).await,
                vec!["Pending", "Finished"]
            );
            assert_eq!(
                history_statuses(&h, name).await,
                vec!["Pending", "Finished"]
            );

            // A second before expiry the parameter is still there.
            clock.set(at - TimeDelta::seconds(1));
            let report = worker.run_once().await.expect("scan");
            assert!(report.expired.is_empty());
            assert_eq!(
                h.get(ALICE, name, false).await.expect("still there").value,
                "v1"
            );

            // After expiry it is gone, audited by the service, with an Expired event.
            clock.set(at + TimeDelta::seconds(1));
            let report = worker.run_once().await.expect("scan");
            assert_eq!(report.expired, vec![name.to_owned()]);
            assert_eq!(report.next_due, None);
            assert_error(
                h.get(ALICE, name, false).await,
                Code::NotFound,
                "ParameterNotFound",
            );
            let deletions = h.audit_events("parameters:DeleteParameter").await;
            assert!(
                deletions.iter().any(|e| e.principal == "service/parameters"
                    && e.resource == format!("parameter:{name}")),
                "{deletions:?}"
            );
            let expired = take_events(&events.queue).await;
            assert_eq!(operations(&expired), vec!["Expired"]);
            assert_eq!(expired[0].field("principal"), "service/parameters");
            assert_eq!(expired[0].field("type"), "String");

            // Nothing left to do.
            let report = worker.run_once().await.expect("scan");
            assert_eq!(report, Default::default());
            assert!(take_events(&events.queue).await.is_empty());
            h.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_notification_fires_after_a_quiet_day_and_resets_on_change() {
    let start = expires_at();
    for test_db in bosun_store::testing::both().await {
        let events = TestQueue::new(QueueKind::Memory).await;
        let clock = Arc::new(ManualClock::new(start));
        let h = Harness::start_with(test_db, Some(events.queue.clone()), Some(clock.clone())).await;
        let worker = h.worker();
        let name = "/app/stale";
        h.put(ALICE, advanced_put(name, "v1", NO_CHANGE, false))
            .await
            .expect("create");
        let report = worker.run_once().await.expect("scan");
        assert_eq!(report.next_due, Some(start + TimeDelta::days(1)));

        // A change after 23 hours resets the day.
        clock.set(start + TimeDelta::hours(23));
        h.put(ALICE, advanced_put(name, "v2", "", true))
            .await
            .expect("overwrite keeps the policies");
        clock.set(start + TimeDelta::days(1) + TimeDelta::seconds(1));
        let report = worker.run_once().await.expect("scan");
        assert!(
            report.notified.is_empty(),
            "a change did not reset: {report:?}"
        );
        let reset_due = start + TimeDelta::hours(23) + TimeDelta::days(1);
        assert_eq!(report.next_due, Some(reset_due));
        assert_eq!(described_statuses(&h, name).await, vec!["Pending"]);

        // A full quiet day after the change: fires once.
        clock.set(reset_due);
        let report = worker.run_once().await.expect("scan");
        assert_eq!(
            report.notified,
            vec![(name.to_owned(), ChangeOperation::NoChangeNotification)]
        );
        assert_eq!(report.next_due, None);
        clock.advance(TimeDelta::days(3));
        assert!(worker.run_once().await.expect("scan").notified.is_empty());
        assert_eq!(described_statuses(&h, name).await, vec!["Finished"]);
        assert_eq!(history_statuses(&h, name).await, vec!["Finished"]);

        // A new change makes it pending, and due again a day later.
        h.put(ALICE, advanced_put(name, "v3", "", true))
            .await
            .expect("overwrite");
        assert_eq!(described_statuses(&h, name).await, vec!["Pending"]);
        clock.advance(TimeDelta::days(1));
        let report = worker.run_once().await.expect("scan");
        assert_eq!(report.notified.len(), 1, "{report:?}");

        let published = take_events(&events.queue).await;
        assert_eq!(
            operations(&published),
            vec![
                "Create",
                "Update",
                "NoChangeNotification",
                "Update",
                "NoChangeNotification"
            ]
        );
        assert_eq!(published[2].json["version"].as_i64(), Some(2));
        assert_eq!(published[4].json["version"].as_i64(), Some(3));
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_policies_are_pending_again_and_removed_policies_stop() {
    let at = expires_at();
    for test_db in bosun_store::testing::both().await {
        let clock = Arc::new(ManualClock::new(at - TimeDelta::minutes(30)));
        let h = Harness::start_with(test_db, None, Some(clock.clone())).await;
        let worker = h.worker();
        let name = "/app/replaced";
        h.put(ALICE, advanced_put(name, "v1", EXPIRING, false))
            .await
            .expect("create");
        // Created inside the notice window: the notification is due at once.
        let report = worker.run_once().await.expect("scan without a queue");
        assert_eq!(report.notified.len(), 1);
        assert_eq!(
            described_statuses(&h, name).await,
            vec!["Pending", "Finished"]
        );

        // Removing the policies (`[{}]`) stops the expiry.
        h.put(ALICE, advanced_put(name, "v2", "[{}]", true))
            .await
            .expect("remove policies");
        clock.set(at + TimeDelta::days(1));
        let report = worker.run_once().await.expect("scan");
        assert!(
            report.expired.is_empty() && report.next_due.is_none(),
            "{report:?}"
        );
        assert_eq!(h.get(ALICE, name, false).await.expect("kept").value, "v2");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_acts_when_woken_and_stops_on_shutdown() {
    let at = expires_at();
    let test_db = bosun_store::testing::sqlite().await;
    let clock = Arc::new(ManualClock::new(at + TimeDelta::seconds(1)));
    let h = Harness::start_with(test_db, None, Some(clock.clone())).await;
    let worker = h.worker();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    // Written after the worker's first scan went to sleep; a loop that ignored writes would
    // not look again for a minute.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    h.put(ALICE, advanced_put("/app/late", "v1", EXPIRING, false))
        .await
        .expect("create an already expired parameter");
    let mut gone = false;
    for _ in 0..200 {
        if h.get(ALICE, "/app/late", false).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(gone, "the worker did not act on the write");
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), running)
        .await
        .expect("the worker stops on shutdown")
        .expect("the worker task ends cleanly");
    h.stop().await;
}
