//! Property: any document the model accepts survives parse → serialise → parse unchanged,
//! in JSON and in YAML, whatever strings it carries (YAML look-alikes, quotes, unicode,
//! `{{ }}`-free text in commands and descriptions).

use bosun_document::{Document, Format};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Text a document may carry: printable unicode plus the strings YAML likes to retype.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^{}\\x00-\\x1f]{0,40}",
        Just("yes".to_owned()),
        Just("~".to_owned()),
        Just("0x10".to_owned()),
        Just("2.2".to_owned()),
        Just("- item".to_owned()),
        Just("key: value".to_owned()),
        Just("#not a comment".to_owned()),
        Just("\"quoted\"".to_owned()),
    ]
}

fn parameter() -> impl Strategy<Value = (String, Value)> {
    let name = "[a-zA-Z][a-zA-Z0-9_]{0,15}";
    let definition = prop_oneof![
        text().prop_map(|default| json!({"type": "String", "default": default})),
        proptest::collection::vec(text(), 0..4)
            .prop_map(|default| json!({"type": "StringList", "default": default})),
        any::<i32>().prop_map(|default| json!({"type": "Integer", "default": default})),
        any::<bool>().prop_map(|default| json!({"type": "Boolean", "default": default})),
        text().prop_map(|description| json!({"type": "String", "description": description})),
    ];
    (name, definition)
}

fn command_document() -> impl Strategy<Value = Value> {
    let step = (
        "[a-zA-Z][a-zA-Z0-9_]{0,20}",
        proptest::collection::vec(text(), 1..5),
        prop_oneof![Just("aws:runShellScript"), Just("bosun:runShellScript")],
    );
    (
        text(),
        proptest::collection::btree_map(
            "[a-zA-Z][a-zA-Z0-9_]{0,15}",
            parameter().prop_map(|(_, d)| d),
            0..4,
        ),
        proptest::collection::vec(step, 1..4),
    )
        .prop_map(|(description, parameters, steps)| {
            let mut seen = std::collections::BTreeSet::new();
            let steps: Vec<Value> = steps
                .into_iter()
                .filter(|(name, _, _)| seen.insert(name.clone()))
                .map(|(name, commands, action)| {
                    json!({"name": name, "action": action, "inputs": {"runCommand": commands}})
                })
                .collect();
            json!({
                "schemaVersion": "2.2",
                "description": description,
                "parameters": parameters,
                "mainSteps": steps,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_serialise_parse_is_stable(document in command_document()) {
        let source = document.to_string();
        let parsed = Document::parse(&source, Format::Json);
        prop_assert!(parsed.is_ok(), "generated document rejected: {:?}\n{source}", parsed.err());
        let Ok(parsed) = parsed else { return Ok(()) };
        prop_assert_eq!(parsed.content(), &document);
        for format in [Format::Json, Format::Yaml] {
            let text = parsed.to_format(format);
            prop_assert!(text.is_ok(), "{:?} serialisation failed: {:?}", format, text.err());
            let Ok(text) = text else { return Ok(()) };
            let again = Document::parse(&text, format);
            prop_assert!(again.is_ok(), "{:?} re-parse failed: {:?}\n{text}", format, again.err());
            let Ok(again) = again else { return Ok(()) };
            prop_assert_eq!(again.content(), parsed.content(), "{:?} changed the document:\n{}", format, text);
            prop_assert_eq!(
                again.parameters().keys().collect::<Vec<_>>(),
                parsed.parameters().keys().collect::<Vec<_>>()
            );
            for (name, definition) in parsed.parameters() {
                let other = &again.parameters()[name];
                prop_assert_eq!(&other.default, &definition.default);
                prop_assert_eq!(other.parameter_type, definition.parameter_type);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(content in "\\PC{0,300}") {
        let _ = Document::parse(&content, Format::Json);
        let _ = Document::parse(&content, Format::Yaml);
    }
}

/// Found by the `parse` fuzz target: a long float literal came back one ulp off after
/// JSON → YAML → JSON until serde_json parsed floats exactly (`float_roundtrip`).
#[test]
fn long_float_literals_survive_conversion() {
    let source = r#"{"schemaVersion":"2.2","mainSteps":[{"name":"s","action":"aws:runShellScript",
        "inputs":{"runCommand":["true"],"timeoutSeconds":4.4444444444444437e102}}]}"#;
    let document = Document::parse(source, Format::Json).expect("valid");
    for format in [Format::Json, Format::Yaml] {
        let text = document.to_format(format).expect("converts");
        let again = Document::parse(&text, format).expect("parses back");
        assert_eq!(again.content(), document.content(), "{format:?}:\n{text}");
    }
}
