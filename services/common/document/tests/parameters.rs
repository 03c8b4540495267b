//! Supplied parameter values are checked against their definitions: each broken rule is
//! reported with the parameter's path and the rule's name; defaults apply.

use std::collections::BTreeMap;

use bosun_document::{Document, Format, ParameterType, ValidationError, values_from_wire};
use serde_json::{Value, json};

fn command_document(parameters: Value) -> Document {
    let content = json!({
        "schemaVersion": "2.2",
        "parameters": parameters,
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "run",
            "inputs": {"runCommand": ["true"]}
        }]
    });
    Document::parse(&content.to_string(), Format::Json)
        .unwrap_or_else(|errors| panic!("document: {errors:?}"))
}

fn supplied(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

/// `(path, rule name)` of each error, the rule name being the text before the first colon.
fn rules(errors: &[ValidationError]) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = errors
        .iter()
        .map(|error| {
            let name = error.rule.split(':').next().unwrap_or_default();
            (error.path.clone(), name.to_owned())
        })
        .collect();
    found.sort();
    found
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut expected: Vec<(String, String)> = expected
        .iter()
        .map(|(path, rule)| ((*path).to_owned(), (*rule).to_owned()))
        .collect();
    expected.sort();
    expected
}

#[test]
fn defaults_apply_and_required_parameters_are_named() {
    let document = command_document(json!({
        "name": {"type": "String"},
        "greeting": {"type": "String", "default": "hello"},
        "count": {"type": "Integer", "default": 3},
        "verbose": {"type": "Boolean", "default": false},
    }));
    let errors = document
        .resolve_parameters(&BTreeMap::new())
        .expect_err("name is required");
    assert_eq!(
        errors,
        [ValidationError::new("parameters.name", "required")]
    );
    assert_eq!(errors[0].to_string(), "parameters.name: required");

    let resolved = document
        .resolve_parameters(&supplied(&[("name", json!("world"))]))
        .expect("valid");
    assert_eq!(
        resolved.get("name").map(|v| &v.value),
        Some(&json!("world"))
    );
    assert_eq!(
        resolved.get("greeting").map(|v| &v.value),
        Some(&json!("hello"))
    );
    assert_eq!(resolved.get("count").map(|v| &v.value), Some(&json!(3)));
    assert_eq!(
        resolved.get("verbose").map(|v| &v.value),
        Some(&json!(false))
    );
    assert_eq!(
        resolved.get("count").map(|v| v.parameter_type),
        Some(ParameterType::Integer)
    );
}

#[test]
fn unknown_parameters_are_rejected() {
    let document = command_document(json!({"a": {"type": "String", "default": ""}}));
    let errors = document
        .resolve_parameters(&supplied(&[("b", json!("x"))]))
        .expect_err("b is unknown");
    assert_eq!(
        errors,
        [ValidationError::new("parameters.b", "unknown parameter")]
    );
}

#[test]
fn types_are_checked() {
    let document = command_document(json!({
        "s": {"type": "String"},
        "l": {"type": "StringList"},
        "i": {"type": "Integer"},
        "b": {"type": "Boolean"},
        "m": {"type": "StringMap"},
        "ml": {"type": "MapList"},
    }));
    let wrong = supplied(&[
        ("s", json!(1)),
        ("l", json!([1, 2])),
        // SSM rejects decimals and quoted numbers for Integer, "true" text for Boolean.
        ("i", json!("3")),
        ("b", json!("true")),
        ("m", json!(["a"])),
        ("ml", json!({"a": "b"})),
    ]);
    let errors = document.resolve_parameters(&wrong).expect_err("all wrong");
    assert_eq!(
        rules(&errors),
        pairs(&[
            ("parameters.s", "type"),
            ("parameters.l", "type"),
            ("parameters.i", "type"),
            ("parameters.b", "type"),
            ("parameters.m", "type"),
            ("parameters.ml", "type"),
        ])
    );
    assert!(
        errors
            .iter()
            .any(|e| e.to_string() == "parameters.i: type: expected Integer")
    );
    let decimal = supplied(&[
        ("s", json!("x")),
        ("l", json!([])),
        ("i", json!(1.5)),
        ("b", json!(true)),
        ("m", json!({})),
        ("ml", json!([])),
    ]);
    assert_eq!(
        rules(&document.resolve_parameters(&decimal).expect_err("decimal")),
        pairs(&[("parameters.i", "type")])
    );
}

#[test]
fn wire_form_values_are_accepted() {
    // SendCommand sends every value as a list of strings.
    let document = command_document(json!({
        "s": {"type": "String"},
        "l": {"type": "StringList"},
        "i": {"type": "Integer"},
        "b": {"type": "Boolean"},
        "m": {"type": "StringMap"},
    }));
    let wire = BTreeMap::from([
        ("s".to_owned(), vec!["text".to_owned()]),
        ("l".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
        ("i".to_owned(), vec!["42".to_owned()]),
        ("b".to_owned(), vec!["true".to_owned()]),
        ("m".to_owned(), vec![r#"{"k":"v"}"#.to_owned()]),
    ]);
    let resolved = document
        .resolve_parameters(&values_from_wire(&wire))
        .expect("wire form");
    let value = |name: &str| resolved.get(name).map(|v| v.value.clone());
    assert_eq!(value("s"), Some(json!("text")));
    assert_eq!(value("l"), Some(json!(["a", "b"])));
    assert_eq!(value("i"), Some(json!(42)));
    assert_eq!(value("b"), Some(json!(true)));
    assert_eq!(value("m"), Some(json!({"k": "v"})));
}

#[test]
fn each_rule_is_named_in_its_error() {
    let document = command_document(json!({
        "choice": {"type": "String", "allowedValues": ["Install", "Uninstall"]},
        "port": {"type": "String", "allowedPattern": "[0-9]+"},
        "short": {"type": "String", "maxChars": 3},
        "long": {"type": "String", "minChars": 2},
        "few": {"type": "StringList", "minItems": 2},
        "many": {"type": "StringList", "maxItems": 1},
        "items": {"type": "StringList", "allowedValues": ["a", "b"], "maxChars": 1},
    }));
    let errors = document
        .resolve_parameters(&supplied(&[
            ("choice", json!("Remove")),
            // Patterns match the whole value, not a part of it.
            ("port", json!("80a")),
            ("short", json!("abcd")),
            ("long", json!("a")),
            ("few", json!(["x"])),
            ("many", json!(["x", "y"])),
            ("items", json!(["a", "cc"])),
        ]))
        .expect_err("every rule broken");
    assert_eq!(
        rules(&errors),
        pairs(&[
            ("parameters.choice", "allowedValues"),
            ("parameters.port", "allowedPattern"),
            ("parameters.short", "maxChars"),
            ("parameters.long", "minChars"),
            ("parameters.few", "minItems"),
            ("parameters.many", "maxItems"),
            ("parameters.items", "allowedValues"),
            ("parameters.items", "maxChars"),
        ])
    );
    let choice = errors
        .iter()
        .find(|e| e.path == "parameters.choice")
        .map(ToString::to_string);
    assert_eq!(
        choice.as_deref(),
        Some(r#"parameters.choice: allowedValues: "Remove" is not one of Install, Uninstall"#)
    );

    let fine = document.resolve_parameters(&supplied(&[
        ("choice", json!("Install")),
        ("port", json!("8080")),
        ("short", json!("abc")),
        ("long", json!("ab")),
        ("few", json!(["x", "y"])),
        ("many", json!(["x"])),
        ("items", json!(["a", "b"])),
    ]));
    assert!(fine.is_ok(), "{fine:?}");
}

#[test]
fn bad_definitions_are_rejected_at_parse_with_paths() {
    let content = json!({
        "schemaVersion": "2.2",
        "parameters": {
            "a": {"type": "Text"},
            "b": {"description": "no type"},
            "c": {"type": "String", "allowedPattern": "("},
            "d": {"type": "String", "default": "xyz", "maxChars": 2},
            "e": {"type": "String", "minChars": 3, "maxChars": 2},
            "f": {"type": "String", "colour": "blue"},
            "g": {"type": "String", "displayType": "dropdown"},
            "h": {"type": "StringList", "minItems": -1},
        },
        "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}]
    });
    let errors = Document::parse(&content.to_string(), Format::Json).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "parameters.a.type",
            "parameters.b.type",
            "parameters.c.allowedPattern",
            "parameters.d.default",
            "parameters.e.minChars",
            "parameters.f.colour",
            "parameters.g.displayType",
            "parameters.h.minItems",
        ],
        "{errors:?}"
    );
}

#[test]
fn hostile_patterns_are_refused_not_compiled_forever() {
    let content = json!({
        "schemaVersion": "2.2",
        "parameters": {"p": {"type": "String", "allowedPattern": "(a{1000}){1000}"}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}]
    });
    let errors = Document::parse(&content.to_string(), Format::Json).expect_err("too big");
    assert_eq!(errors[0].path, "parameters.p.allowedPattern");
}
