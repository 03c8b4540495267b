//! Parameter names, paths and selectors against SSM's naming rules.

mod common;

use bosun_parameters::name::{MAX_HIERARCHY_LEVELS, MAX_NAME_LENGTH};
use bosun_parameters::{ParameterName, ParameterPath, Selector, VersionSelector};
use common::{assert_message_style, fields, reason, seen};

fn levels(n: usize) -> String {
    (1..=n).map(|i| format!("/l{i}")).collect()
}

#[test]
fn valid_names_are_accepted_and_trimmed() {
    let fifteen = levels(MAX_HIERARCHY_LEVELS);
    let longest = "a".repeat(MAX_NAME_LENGTH);
    let cases: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("with_under.dot-dash", "with_under.dot-dash"),
        ("/app/db/password", "/app/db/password"),
        ("  /app/x  ", "/app/x"),
        ("CaseSensitive", "CaseSensitive"),
        ("/a1/B2/c-3/d_4/e.5", "/a1/B2/c-3/d_4/e.5"),
        (&fifteen, &fifteen),
        (&longest, &longest),
        // Reserved words are prefixes of the first level only.
        ("/app/aws", "/app/aws"),
        ("myssm", "myssm"),
        ("/as/x", "/as/x"),
    ];
    for (input, expected) in cases {
        let name = ParameterName::parse(input)
            .unwrap_or_else(|e| panic!("{input:?} should be valid: {e}"));
        assert_eq!(name.as_str(), *expected);
    }
}

#[test]
fn invalid_names_are_rejected_with_validation_exception() {
    let too_long = "a".repeat(MAX_NAME_LENGTH + 1);
    let cases: &[&str] = &[
        "",
        "   ",
        "has space",
        "/a/b c",
        "tab\tname",
        "star*",
        "colon:x",
        "ünïcode",
        "relative/path",
        "/",
        "/a//b",
        "/a/b/",
        &too_long,
        // Reserved prefixes, any case, with or without a leading slash.
        "awsTestParameter",
        "SSM-testparameter",
        "/aws/testparam1",
        "/Ssm/x",
        "bosun",
        "/BOSUN/config",
        "BosunThing",
    ];
    for input in cases {
        let error = ParameterName::parse(input).expect_err(input);
        let (code, name, message) = seen(error);
        assert_eq!(code, tonic::Code::InvalidArgument, "{input:?}");
        assert_eq!(name.as_deref(), Some("ValidationException"), "{input:?}");
        assert!(message.starts_with("name: "), "{message}");
        assert_message_style(&message);
    }
}

#[test]
fn sixteen_levels_exceed_the_hierarchy_limit() {
    let error = ParameterName::parse(&levels(MAX_HIERARCHY_LEVELS + 1)).expect_err("16 levels");
    assert_eq!(
        reason(error).as_deref(),
        Some("HierarchyLevelLimitExceededException")
    );
}

#[test]
fn field_name_is_carried_into_violations() {
    let error = ParameterName::parse_field("names[2]", "bad name").expect_err("space");
    assert_eq!(fields(error), vec!["names[2]".to_owned()]);
}

#[test]
fn levels_and_hierarchy() {
    let name = ParameterName::parse("/a/b/c").expect("valid");
    assert!(name.is_hierarchical());
    assert_eq!(name.levels(), 3);
    assert_eq!(name.parent_path(), "/a/b");
    let plain = ParameterName::parse("plain").expect("valid");
    assert!(!plain.is_hierarchical());
    assert_eq!(plain.levels(), 1);
}

#[test]
fn selectors() {
    let cases: &[(&str, &str, VersionSelector)] = &[
        ("/app/x", "/app/x", VersionSelector::Latest),
        ("/app/x:3", "/app/x", VersionSelector::Version(3)),
        (
            "/app/x:prod",
            "/app/x",
            VersionSelector::Label("prod".into()),
        ),
        (
            "plain:Blue_1.a-b",
            "plain",
            VersionSelector::Label("Blue_1.a-b".into()),
        ),
        (" /app/x:12 ", "/app/x", VersionSelector::Version(12)),
    ];
    for (input, name, version) in cases {
        let selector = Selector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(selector.name.as_str(), *name);
        assert_eq!(&selector.version, version, "{input}");
    }
    assert_eq!(
        Selector::parse("/app/x:3").expect("valid").to_string(),
        "/app/x:3"
    );
}

#[test]
fn invalid_selectors() {
    let cases = [
        "/app/x:",
        "/app/x:0",
        "/app/x:99999999999999999999999",
        "/app/x:1:2",
        "/app/x:aws-label",
        "/app/x:1abc",
        "/app/x:has space",
        ":3",
        "/bad name:3",
        "/app/x :3",
        "/app/x: 3",
    ];
    for input in cases {
        let error = Selector::parse(input).expect_err(input);
        assert_eq!(
            reason(error).as_deref(),
            Some("ValidationException"),
            "{input}"
        );
    }
}

#[test]
fn paths_validate_and_normalise() {
    let cases = [("/", "/"), ("/a", "/a"), ("/a/b/", "/a/b"), (" /a ", "/a")];
    for (input, expected) in cases {
        let path = ParameterPath::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(path.as_str(), expected);
    }
    // Reading under a reserved prefix is allowed (nothing can be written there).
    assert!(ParameterPath::parse("/aws/service").is_ok());
    for input in ["", "a", "a/b", "/a//b", "/a b", "/a*"] {
        let error = ParameterPath::parse(input).expect_err(input);
        assert_eq!(
            reason(error).as_deref(),
            Some("ValidationException"),
            "{input}"
        );
    }
    // A path holds names one level deeper: 14 levels is the deepest useful path.
    assert!(ParameterPath::parse(&levels(14)).is_ok());
    let error = ParameterPath::parse(&levels(15)).expect_err("15-level path");
    assert_eq!(
        reason(error).as_deref(),
        Some("HierarchyLevelLimitExceededException")
    );
}

#[test]
fn recursive_and_one_level_paths() {
    let path = |p: &str| ParameterPath::parse(p).expect("valid path");
    let name = |n: &str| ParameterName::parse(n).expect("valid name");
    // (name, path, recursive, expected)
    let cases = [
        ("/a/b", "/a", false, true),
        ("/a/b", "/a", true, true),
        ("/a/b/c", "/a", false, false),
        ("/a/b/c", "/a", true, true),
        ("/a/b/c", "/a/b", false, true),
        // `/ab/c` is not under `/a`: prefixes match whole levels only.
        ("/ab/c", "/a", true, false),
        ("/ab", "/a", false, false),
        // The path itself is not under itself.
        ("/a", "/a", true, false),
        ("/a", "/a", false, false),
        ("/a", "/", false, true),
        ("/a/b", "/", false, false),
        ("/a/b", "/", true, true),
        ("plain", "/", false, true),
        ("plain", "/", true, true),
        ("plain", "/a", true, false),
        // Case sensitive.
        ("/A/b", "/a", true, false),
    ];
    for (n, p, recursive, expected) in cases {
        assert_eq!(
            name(n).is_under(&path(p), recursive),
            expected,
            "{n} under {p} recursive={recursive}"
        );
    }
}
