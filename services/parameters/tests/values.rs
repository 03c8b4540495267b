//! Types, tiers, value limits, StringList normalisation, allowed patterns, data type and
//! description.

mod common;

use bosun_parameters::value::{
    ADVANCED_MAX_PARAMETERS, STANDARD_MAX_PARAMETERS, check_data_type, check_description,
    choose_tier, normalize_value,
};
use bosun_parameters::{AllowedPattern, ParameterType, Tier, TierRequest};
use common::{assert_message_style, fields, reason, seen};

fn request(requested: Tier) -> TierRequest {
    TierRequest {
        requested,
        current: None,
        value_bytes: 10,
        has_policies: false,
        standard_count: 0,
        advanced_count: 0,
    }
}

#[test]
fn types_and_tiers_parse() {
    for (text, t) in [
        ("String", ParameterType::String),
        ("StringList", ParameterType::StringList),
        ("SecureString", ParameterType::SecureString),
    ] {
        assert_eq!(text.parse::<ParameterType>().expect(text), t);
        assert_eq!(t.to_string(), text);
    }
    for bad in ["string", "Secure", ""] {
        let error = bad.parse::<ParameterType>().expect_err(bad);
        assert_eq!(reason(error).as_deref(), Some("UnsupportedParameterType"));
    }
    for (text, t) in [
        ("Standard", Tier::Standard),
        ("Advanced", Tier::Advanced),
        ("Intelligent-Tiering", Tier::IntelligentTiering),
    ] {
        assert_eq!(text.parse::<Tier>().expect(text), t);
        assert_eq!(t.to_string(), text);
    }
    let error = "IntelligentTiering".parse::<Tier>().expect_err("bad tier");
    assert_eq!(fields(error), vec!["tier".to_owned()]);
}

#[test]
fn tier_choice_table() {
    // (description, request, expected tier)
    let cases: Vec<(&str, TierRequest, Tier)> = vec![
        ("standard small", request(Tier::Standard), Tier::Standard),
        (
            "standard at 4096 bytes",
            TierRequest {
                value_bytes: 4096,
                ..request(Tier::Standard)
            },
            Tier::Standard,
        ),
        ("advanced small", request(Tier::Advanced), Tier::Advanced),
        (
            "advanced at 8192 bytes",
            TierRequest {
                value_bytes: 8192,
                ..request(Tier::Advanced)
            },
            Tier::Advanced,
        ),
        (
            "intelligent small",
            request(Tier::IntelligentTiering),
            Tier::Standard,
        ),
        (
            "intelligent large value",
            TierRequest {
                value_bytes: 4097,
                ..request(Tier::IntelligentTiering)
            },
            Tier::Advanced,
        ),
        (
            "intelligent with policies",
            TierRequest {
                has_policies: true,
                ..request(Tier::IntelligentTiering)
            },
            Tier::Advanced,
        ),
        (
            "intelligent when standard is full",
            TierRequest {
                standard_count: STANDARD_MAX_PARAMETERS,
                ..request(Tier::IntelligentTiering)
            },
            Tier::Advanced,
        ),
        (
            "intelligent update of a standard parameter when standard is full",
            TierRequest {
                current: Some(Tier::Standard),
                standard_count: STANDARD_MAX_PARAMETERS,
                ..request(Tier::IntelligentTiering)
            },
            Tier::Standard,
        ),
        (
            "intelligent keeps advanced",
            TierRequest {
                current: Some(Tier::Advanced),
                ..request(Tier::IntelligentTiering)
            },
            Tier::Advanced,
        ),
        (
            "upgrade standard to advanced",
            TierRequest {
                current: Some(Tier::Standard),
                ..request(Tier::Advanced)
            },
            Tier::Advanced,
        ),
        (
            "update standard when standard is full",
            TierRequest {
                current: Some(Tier::Standard),
                standard_count: STANDARD_MAX_PARAMETERS,
                ..request(Tier::Standard)
            },
            Tier::Standard,
        ),
    ];
    for (what, req, expected) in cases {
        let tier = choose_tier("/p", &req).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(tier, expected, "{what}");
    }
}

#[test]
fn tier_errors() {
    // (description, request, gRPC code, SSM name)
    let cases: Vec<(&str, TierRequest, tonic::Code, &str)> = vec![
        (
            "no downgrade from advanced",
            TierRequest {
                current: Some(Tier::Advanced),
                ..request(Tier::Standard)
            },
            tonic::Code::FailedPrecondition,
            "ValidationException",
        ),
        (
            "standard value over 4096 bytes",
            TierRequest {
                value_bytes: 4097,
                ..request(Tier::Standard)
            },
            tonic::Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "advanced value over 8192 bytes",
            TierRequest {
                value_bytes: 8193,
                ..request(Tier::Advanced)
            },
            tonic::Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "intelligent value over 8192 bytes",
            TierRequest {
                value_bytes: 8193,
                ..request(Tier::IntelligentTiering)
            },
            tonic::Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "policies on standard",
            TierRequest {
                has_policies: true,
                ..request(Tier::Standard)
            },
            tonic::Code::InvalidArgument,
            "ValidationException",
        ),
        (
            "standard count reached",
            TierRequest {
                standard_count: STANDARD_MAX_PARAMETERS,
                ..request(Tier::Standard)
            },
            tonic::Code::ResourceExhausted,
            "ParameterLimitExceeded",
        ),
        (
            "advanced count reached",
            TierRequest {
                advanced_count: ADVANCED_MAX_PARAMETERS,
                ..request(Tier::Advanced)
            },
            tonic::Code::ResourceExhausted,
            "ParameterLimitExceeded",
        ),
        (
            "upgrade when advanced is full",
            TierRequest {
                current: Some(Tier::Standard),
                advanced_count: ADVANCED_MAX_PARAMETERS,
                ..request(Tier::Advanced)
            },
            tonic::Code::ResourceExhausted,
            "ParameterLimitExceeded",
        ),
        (
            "intelligent when both are full",
            TierRequest {
                standard_count: STANDARD_MAX_PARAMETERS,
                advanced_count: ADVANCED_MAX_PARAMETERS,
                ..request(Tier::IntelligentTiering)
            },
            tonic::Code::ResourceExhausted,
            "ParameterLimitExceeded",
        ),
    ];
    for (what, req, code, name) in cases {
        let error = choose_tier("/app/p", &req).expect_err(what);
        let (seen_code, seen_name, message) = seen(error);
        assert_eq!(seen_code, code, "{what}");
        assert_eq!(seen_name.as_deref(), Some(name), "{what}");
        assert!(message.contains("/app/p"), "{what}: {message}");
        assert_message_style(&message);
    }
}

#[test]
fn values_are_normalised_and_checked() {
    let cases = [
        (ParameterType::String, "a , b", "a , b"),
        (ParameterType::StringList, "a , b,c ", "a,b,c"),
        (ParameterType::StringList, " one ", "one"),
        (ParameterType::SecureString, " s3cret ", " s3cret "),
        (ParameterType::String, "{{ not closed", "{{ not closed"),
        (ParameterType::String, "}} then {{", "}} then {{"),
    ];
    for (t, input, expected) in cases {
        assert_eq!(normalize_value("/p", input, t).expect(input), expected);
    }
    for bad in ["", "{{ssm:/other}}", "x {{ y }} z", "{{}}"] {
        let error = normalize_value("/p", bad, ParameterType::String).expect_err(bad);
        let (code, name, message) = seen(error);
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(name.as_deref(), Some("ValidationException"));
        assert!(message.starts_with("value: parameter /p"), "{message}");
        assert_message_style(&message);
    }
}

#[test]
fn allowed_patterns() {
    let pattern = AllowedPattern::parse(r"^\d+$").expect("valid pattern");
    assert_eq!(pattern.as_str(), r"^\d+$");
    pattern.check("/p", "12345").expect("digits match");
    let error = pattern
        .check("/p", "hunter2-secret")
        .expect_err("letters do not match");
    let (code, name, message) = seen(error);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(name.as_deref(), Some("ParameterPatternMismatchException"));
    assert!(!message.contains("hunter2"), "value leaked: {message}");
    assert_message_style(&message);
    // Unanchored patterns match anywhere, as SSM's do.
    AllowedPattern::parse("abc")
        .expect("valid")
        .check("/p", "xxabcxx")
        .expect("matches inside");

    for bad in ["(", "[a-", "a{2,1}", &"a".repeat(1025)] {
        let error = AllowedPattern::parse(bad).expect_err("bad pattern");
        assert_eq!(
            reason(error).as_deref(),
            Some("InvalidAllowedPatternException"),
            "{bad}"
        );
    }
    AllowedPattern::parse(&"a".repeat(1024)).expect("1024 characters is the limit");
    // A pattern that would compile to a huge program is refused, not built.
    let error = AllowedPattern::parse(r"\w{1000}\w{1000}\w{1000}").expect_err("too big");
    assert_eq!(
        reason(error).as_deref(),
        Some("InvalidAllowedPatternException")
    );
}

#[test]
fn data_type_and_description() {
    assert_eq!(check_data_type("").expect("default"), "text");
    assert_eq!(check_data_type("text").expect("text"), "text");
    for bad in ["aws:ec2:image", "aws:ssm:integration", "Text"] {
        let error = check_data_type(bad).expect_err(bad);
        assert_eq!(fields(error), vec!["data_type".to_owned()]);
    }
    check_description(&"d".repeat(1024)).expect("1024 characters");
    let error = check_description(&"d".repeat(1025)).expect_err("1025 characters");
    let (code, name, _) = seen(error);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(name.as_deref(), Some("ValidationException"));
}
