//! Version retention: 100 versions kept, a labelled oldest blocks the write.

mod common;

use bosun_parameters::versions::{MAX_VERSIONS, next_version, versions_to_drop};
use common::{assert_message_style, seen};

/// Versions `first..=last`, with labels on those in `labelled`.
fn stored(first: u64, last: u64, labelled: &[u64]) -> Vec<(u64, usize)> {
    (first..=last)
        .map(|v| (v, usize::from(labelled.contains(&v))))
        .collect()
}

#[test]
fn next_version_numbers() {
    assert_eq!(next_version(None), 1);
    assert_eq!(next_version(Some(1)), 2);
    assert_eq!(next_version(Some(u64::MAX)), u64::MAX);
}

#[test]
fn retention_table() {
    // (description, stored versions, expected drop)
    type Case = (&'static str, Vec<(u64, usize)>, Vec<u64>);
    let cases: Vec<Case> = vec![
        ("no versions", Vec::new(), vec![]),
        ("99 versions: the 100th fits", stored(1, 99, &[]), vec![]),
        (
            "100 versions: writing #101 drops #1",
            stored(1, 100, &[]),
            vec![1],
        ),
        (
            "labels elsewhere do not matter",
            stored(1, 100, &[2, 100]),
            vec![1],
        ),
        ("after earlier drops", stored(51, 150, &[]), vec![51]),
        (
            "unordered input",
            stored(1, 100, &[]).into_iter().rev().collect(),
            vec![1],
        ),
        (
            "over-full store trims to 100",
            stored(1, 102, &[]),
            vec![1, 2, 3],
        ),
    ];
    for (what, versions, expected) in cases {
        assert_eq!(
            versions_to_drop("/p", versions).expect(what),
            expected,
            "{what}"
        );
    }
    assert_eq!(MAX_VERSIONS, 100);
}

#[test]
fn labelled_oldest_blocks_the_write() {
    for versions in [stored(1, 100, &[1]), stored(1, 102, &[3])] {
        let error = versions_to_drop("/app/p", versions).expect_err("labelled oldest");
        let (code, name, message) = seen(error);
        assert_eq!(code, tonic::Code::FailedPrecondition);
        assert_eq!(name.as_deref(), Some("ParameterMaxVersionLimitExceeded"));
        assert!(message.contains("/app/p"), "{message}");
        assert_message_style(&message);
    }
}
