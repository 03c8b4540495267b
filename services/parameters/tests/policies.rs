//! Parameter policies: parsing in SSM's JSON shape, limits and errors, and evaluation on a
//! controlled clock.

mod common;

use bosun_parameters::policy::{
    check_policies_tier, due, next_due, parse_policies, parse_timestamp, statuses,
};
use bosun_parameters::{FiredEvent, ParameterPolicy, PolicyEvent, PolicyStatus, Tier, TimeUnit};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{assert_message_style, reason, seen};

fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0)
        .single()
        .expect("valid test time")
}

const FULL: &str = r#"[
  {"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2030-12-02T21:34:33.000Z"}},
  {"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"15","Unit":"Days"}},
  {"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"20","Unit":"Hours"}}
]"#;

#[test]
fn parses_every_policy_type() {
    let policies = parse_policies(FULL).expect("valid policies");
    assert_eq!(
        policies,
        vec![
            ParameterPolicy::Expiration {
                at: Utc
                    .with_ymd_and_hms(2030, 12, 2, 21, 34, 33)
                    .single()
                    .expect("time")
            },
            ParameterPolicy::ExpirationNotification {
                amount: 15,
                unit: TimeUnit::Days
            },
            ParameterPolicy::NoChangeNotification {
                amount: 20,
                unit: TimeUnit::Hours
            },
        ]
    );
    // Policy text round-trips through the parser.
    let texts: Vec<String> = policies.iter().map(ParameterPolicy::policy_text).collect();
    let again = parse_policies(&format!("[{}]", texts.join(","))).expect("round trip");
    assert_eq!(again, policies);
    assert_eq!(policies[0].policy_type(), "Expiration");
}

#[test]
fn timestamps_in_instant_and_offset_forms() {
    let expected = Utc
        .with_ymd_and_hms(2019, 11, 1, 11, 43, 48)
        .single()
        .expect("time")
        + TimeDelta::milliseconds(870);
    assert_eq!(
        parse_timestamp("2019-11-01T22:13:48.87+10:30:00"),
        Some(expected)
    );
    assert_eq!(
        parse_timestamp("2019-11-01T22:13:48.87+10:30"),
        Some(expected)
    );
    assert_eq!(parse_timestamp("2019-11-01T11:43:48.870Z"), Some(expected));
    for bad in ["2019-11-01", "tomorrow", "2019-13-01T00:00:00Z", ""] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
}

#[test]
fn empty_object_removes_all_policies() {
    assert_eq!(parse_policies("[{}]").expect("remove all"), vec![]);
    assert_eq!(parse_policies("[]").expect("none"), vec![]);
    check_policies_tier(&[], Tier::Standard).expect("no policies on standard is fine");
}

#[test]
fn policy_errors() {
    let expiration = r#"{"Type":"Expiration","Attributes":{"Timestamp":"2030-01-01T00:00:00Z"}}"#;
    let no_change = r#"{"Type":"NoChangeNotification","Attributes":{"After":"1","Unit":"Days"}}"#;
    let eleven = format!("[{}]", [no_change; 11].join(","));
    let too_long = format!("[{}]", [no_change; 60].join(","));
    // (description, policies text, SSM name)
    let cases: Vec<(&str, String, &str)> = vec![
        ("not json", "nope".into(), "ValidationException"),
        ("not an array", "{}".into(), "ValidationException"),
        ("longer than 4096", too_long, "ValidationException"),
        ("eleven policies", eleven, "PoliciesLimitExceededException"),
        ("unknown type", r#"[{"Type":"Rotate","Attributes":{}}]"#.into(), "InvalidPolicyTypeException"),
        ("missing type", r#"[{"Attributes":{}}]"#.into(), "InvalidPolicyTypeException"),
        ("element not an object", "[1]".into(), "InvalidPolicyTypeException"),
        ("wrong version", r#"[{"Type":"Expiration","Version":"2.0","Attributes":{"Timestamp":"2030-01-01T00:00:00Z"}}]"#.into(), "ValidationException"),
        ("unknown top-level key", r#"[{"Type":"Expiration","Extra":1}]"#.into(), "ValidationException"),
        ("missing timestamp", r#"[{"Type":"Expiration","Attributes":{}}]"#.into(), "InvalidPolicyAttributeException"),
        ("bad timestamp", r#"[{"Type":"Expiration","Attributes":{"Timestamp":"soon"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("unknown attribute", r#"[{"Type":"Expiration","Attributes":{"Timestamp":"2030-01-01T00:00:00Z","X":"1"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("attributes not an object", r#"[{"Type":"Expiration","Attributes":[]}]"#.into(), "InvalidPolicyAttributeException"),
        ("bad unit", r#"[{"Type":"NoChangeNotification","Attributes":{"After":"1","Unit":"Weeks"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("missing unit", r#"[{"Type":"NoChangeNotification","Attributes":{"After":"1"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("zero amount", r#"[{"Type":"NoChangeNotification","Attributes":{"After":"0","Unit":"Days"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("negative amount", r#"[{"Type":"NoChangeNotification","Attributes":{"After":"-1","Unit":"Days"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("huge amount", r#"[{"Type":"NoChangeNotification","Attributes":{"After":"99999999999","Unit":"Hours"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("wrong attribute name", r#"[{"Type":"ExpirationNotification","Attributes":{"After":"1","Unit":"Days"}}]"#.into(), "InvalidPolicyAttributeException"),
        ("two expirations", format!("[{expiration},{expiration}]"), "IncompatiblePolicyException"),
        ("notification without expiration", r#"[{"Type":"ExpirationNotification","Attributes":{"Before":"1","Unit":"Days"}}]"#.into(), "IncompatiblePolicyException"),
    ];
    for (what, text, name) in cases {
        let error = parse_policies(&text).expect_err(what);
        let (code, seen_name, message) = seen(error);
        assert_eq!(code, tonic::Code::InvalidArgument, "{what}");
        assert_eq!(seen_name.as_deref(), Some(name), "{what}: {message}");
        assert!(message.starts_with("policies"), "{what}: {message}");
        assert_message_style(&message);
    }
}

#[test]
fn numeric_amounts_and_ten_policies_are_accepted() {
    let ten = format!(
        "[{}]",
        [r#"{"Type":"NoChangeNotification","Attributes":{"After":3,"Unit":"Days"}}"#; 10].join(",")
    );
    assert_eq!(parse_policies(&ten).expect("ten policies").len(), 10);
}

#[test]
fn policies_need_the_advanced_tier() {
    let policies = parse_policies(FULL).expect("valid");
    check_policies_tier(&policies, Tier::Advanced).expect("advanced allows policies");
    for tier in [Tier::Standard, Tier::IntelligentTiering] {
        let error = check_policies_tier(&policies, tier).expect_err("not advanced");
        assert_eq!(reason(error).as_deref(), Some("ValidationException"));
    }
}

fn evaluation_policies() -> Vec<ParameterPolicy> {
    vec![
        ParameterPolicy::Expiration {
            at: at(2030, 1, 31, 0),
        },
        ParameterPolicy::ExpirationNotification {
            amount: 2,
            unit: TimeUnit::Days,
        },
        ParameterPolicy::NoChangeNotification {
            amount: 5,
            unit: TimeUnit::Days,
        },
    ]
}

#[test]
fn due_and_next_due_on_a_controlled_clock() {
    let policies = evaluation_policies();
    let modified = at(2030, 1, 1, 0);
    let mut fired: Vec<FiredEvent> = Vec::new();

    // Nothing is due right after the write; the first wake-up is the no-change notice.
    assert!(due(&policies, modified, at(2030, 1, 1, 1), &fired).is_empty());
    assert_eq!(
        next_due(&policies, modified, &fired),
        Some(at(2030, 1, 6, 0))
    );
    assert_eq!(
        statuses(&policies, modified, &fired, at(2030, 1, 1, 1)),
        vec![PolicyStatus::Pending; 3]
    );
    // Due and not acted on yet: in progress.
    assert_eq!(
        statuses(&policies, modified, &fired, at(2030, 1, 6, 0))[2],
        PolicyStatus::InProgress
    );

    // Five days without change: the no-change notification fires, exactly once.
    let events = due(&policies, modified, at(2030, 1, 6, 0), &fired);
    assert_eq!(
        events,
        vec![PolicyEvent::NoChangeNotification {
            policy_index: 2,
            due_at: at(2030, 1, 6, 0),
            last_modified: modified
        }]
    );
    fired.extend(events.iter().map(PolicyEvent::fired));
    assert!(due(&policies, modified, at(2030, 1, 7, 0), &fired).is_empty());
    assert_eq!(
        statuses(&policies, modified, &fired, at(2030, 1, 7, 0))[2],
        PolicyStatus::Finished
    );

    // A change resets the no-change clock: pending again, due five days after the change.
    let changed = at(2030, 1, 10, 0);
    assert_eq!(
        statuses(&policies, changed, &fired, changed)[2],
        PolicyStatus::Pending
    );
    assert_eq!(
        next_due(&policies, changed, &fired),
        Some(at(2030, 1, 15, 0))
    );
    let events = due(&policies, changed, at(2030, 1, 15, 0), &fired);
    assert_eq!(events.len(), 1);
    fired.extend(events.iter().map(PolicyEvent::fired));

    // Two days before expiry the expiration notice is due; the no-change one again later.
    assert_eq!(
        next_due(&policies, changed, &fired),
        Some(at(2030, 1, 29, 0))
    );
    let events = due(&policies, changed, at(2030, 1, 29, 0), &fired);
    assert_eq!(
        events,
        vec![PolicyEvent::ExpirationNotification {
            policy_index: 1,
            due_at: at(2030, 1, 29, 0),
            expires_at: at(2030, 1, 31, 0)
        }]
    );
    fired.extend(events.iter().map(PolicyEvent::fired));

    // Updating the value does not move the expiration.
    let late_change = at(2030, 1, 30, 0);
    assert_eq!(
        next_due(&policies, late_change, &fired),
        Some(at(2030, 1, 31, 0))
    );
    let events = due(&policies, late_change, at(2030, 1, 31, 0), &fired);
    assert_eq!(
        events,
        vec![PolicyEvent::Expire {
            policy_index: 0,
            at: at(2030, 1, 31, 0)
        }]
    );
    fired.extend(events.iter().map(PolicyEvent::fired));
    assert_eq!(
        statuses(&policies, late_change, &fired, at(2030, 1, 31, 0))[..2],
        [PolicyStatus::Finished, PolicyStatus::Finished]
    );
}

#[test]
fn a_late_scan_fires_notifications_before_the_delete() {
    let policies = evaluation_policies();
    let modified = at(2030, 1, 1, 0);
    // The scheduler was down for the whole month: everything is due at once.
    let events = due(&policies, modified, at(2030, 2, 1, 0), &[]);
    let kinds: Vec<usize> = events.iter().map(PolicyEvent::policy_index).collect();
    assert_eq!(kinds, vec![2, 1, 0], "in due order, the delete last");
}

#[test]
fn notification_due_with_expiration_comes_first() {
    let policies = vec![
        ParameterPolicy::Expiration {
            at: at(2030, 1, 2, 0),
        },
        // Before 24 hours on an expiry 24 hours after the write: due with nothing else.
        ParameterPolicy::NoChangeNotification {
            amount: 1,
            unit: TimeUnit::Days,
        },
    ];
    let events = due(&policies, at(2030, 1, 1, 0), at(2030, 1, 2, 0), &[]);
    assert_eq!(events.len(), 2);
    assert!(matches!(events[1], PolicyEvent::Expire { .. }));
}

#[test]
fn no_policies_means_nothing_due() {
    assert!(due(&[], at(2030, 1, 1, 0), at(2040, 1, 1, 0), &[]).is_empty());
    assert_eq!(next_due(&[], at(2030, 1, 1, 0), &[]), None);
    assert!(statuses(&[], at(2030, 1, 1, 0), &[], at(2030, 1, 1, 0)).is_empty());
}

#[test]
fn status_names() {
    let names: Vec<&str> = [
        PolicyStatus::Pending,
        PolicyStatus::InProgress,
        PolicyStatus::Finished,
        PolicyStatus::Failed,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect();
    assert_eq!(names, ["Pending", "InProgress", "Finished", "Failed"]);
}
