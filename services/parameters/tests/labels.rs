//! Label rules and the outcome of LabelParameterVersion / UnlabelParameterVersion.

mod common;

use std::collections::BTreeSet;

use bosun_parameters::VersionLabels;
use bosun_parameters::label::{
    MAX_LABEL_LENGTH, check_label, is_valid_label, label_version, unlabel_version,
    version_with_label,
};
use common::{assert_message_style, reason, seen};

fn labels(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn map(entries: &[(u64, &[&str])]) -> VersionLabels {
    entries
        .iter()
        .map(|(v, ls)| {
            (
                *v,
                ls.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>(),
            )
        })
        .collect()
}

#[test]
fn label_rules() {
    let longest = format!("a{}", "b".repeat(MAX_LABEL_LENGTH - 1));
    for valid in [
        "prod", "Prod", "blue-1", "v1.2_x", "a", &longest, "awx", "sm",
    ] {
        assert!(is_valid_label(valid), "{valid} should be valid");
    }
    let too_long = "a".repeat(MAX_LABEL_LENGTH + 1);
    let cases = [
        ("", "empty"),
        (too_long.as_str(), "characters"),
        ("1st", "digit"),
        ("awsLabel", "'aws'"),
        ("AWS", "'aws'"),
        ("ssm-x", "'aws'"),
        ("SSMx", "'aws'"),
        ("bosun", "'aws'"),
        ("Bosun1", "'aws'"),
        ("has space", "only"),
        ("sl/ash", "only"),
        ("col:on", "only"),
        ("é", "only"),
    ];
    for (label, fragment) in cases {
        let rule = check_label(label).expect_err(label);
        assert!(rule.contains(fragment), "{label}: {rule}");
        assert_message_style(&rule);
    }
}

#[test]
fn labelling_returns_invalid_labels_without_failing() {
    let mut m = map(&[(1, &[]), (2, &[])]);
    let outcome =
        label_version("/p", &mut m, 2, &labels(&["prod", "1bad", "aws-x", "prod"])).expect("ok");
    assert_eq!(outcome.version, 2);
    assert_eq!(outcome.added, labels(&["prod"]));
    assert_eq!(outcome.invalid_labels, labels(&["1bad", "aws-x"]));
    assert!(outcome.moved.is_empty());
    assert_eq!(m, map(&[(1, &[]), (2, &["prod"])]));
}

#[test]
fn a_label_moves_between_versions() {
    let mut m = map(&[(1, &["prod", "old"]), (2, &[]), (3, &["beta"])]);
    let outcome = label_version("/p", &mut m, 3, &labels(&["prod"])).expect("ok");
    assert_eq!(outcome.moved, vec![("prod".to_owned(), 1)]);
    assert_eq!(m, map(&[(1, &["old"]), (2, &[]), (3, &["beta", "prod"])]));
    assert_eq!(version_with_label(&m, "prod"), Some(3));
    assert_eq!(version_with_label(&m, "nope"), None);
    // Labelling a version with a label it already has changes nothing.
    let again = label_version("/p", &mut m, 3, &labels(&["prod"])).expect("ok");
    assert!(again.added.is_empty() && again.moved.is_empty());
}

#[test]
fn labels_are_case_sensitive() {
    let mut m = map(&[(1, &["Prod"]), (2, &[])]);
    label_version("/p", &mut m, 2, &labels(&["prod"])).expect("ok");
    assert_eq!(m, map(&[(1, &["Prod"]), (2, &["prod"])]));
}

#[test]
fn ten_labels_per_version_then_limit_exceeded() {
    let ten: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
    let mut m = map(&[(1, &[]), (2, &["l10"])]);
    label_version("/p", &mut m, 1, &ten).expect("ten labels fit");
    let before = m.clone();
    let error = label_version("/p", &mut m, 1, &labels(&["l10"])).expect_err("eleventh label");
    assert_eq!(m, before, "a failed label call changes nothing");
    let (code, name, message) = seen(error);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert_eq!(name.as_deref(), Some("ParameterVersionLabelLimitExceeded"));
    assert!(
        message.contains("/p") && message.contains("version 1"),
        "{message}"
    );
    assert_message_style(&message);
    // Re-applying labels already on the version does not count twice.
    label_version("/p", &mut m, 1, &labels(&["l0", "l9"])).expect("already there");
}

#[test]
fn label_request_size_and_unknown_versions() {
    let mut m = map(&[(1, &[])]);
    let eleven: Vec<String> = (0..11).map(|i| format!("l{i}")).collect();
    for request in [Vec::new(), eleven] {
        let error = label_version("/p", &mut m, 1, &request).expect_err("bad request size");
        assert_eq!(reason(error).as_deref(), Some("ValidationException"));
    }
    let error = label_version("/p", &mut m, 7, &labels(&["x"])).expect_err("no version 7");
    let (code, name, _) = seen(error);
    assert_eq!(code, tonic::Code::NotFound);
    assert_eq!(name.as_deref(), Some("ParameterVersionNotFound"));
    let error = unlabel_version("/p", &mut m, 7, &labels(&["x"])).expect_err("no version 7");
    assert_eq!(reason(error).as_deref(), Some("ParameterVersionNotFound"));
}

#[test]
fn unlabel_removes_and_reports_labels_not_on_the_version() {
    let mut m = map(&[(1, &["a", "b"]), (2, &["c"])]);
    let outcome = unlabel_version("/p", &mut m, 1, &labels(&["a", "c", "zz", "a"])).expect("ok");
    assert_eq!(outcome.removed, labels(&["a"]));
    assert_eq!(outcome.invalid_labels, labels(&["c", "zz"]));
    assert_eq!(m, map(&[(1, &["b"]), (2, &["c"])]));
}
