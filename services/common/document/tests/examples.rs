//! The example documents of ssm-notes.md Appendix A load unchanged, convert between JSON
//! and YAML without losing content, and render.

use std::collections::BTreeMap;
use std::path::Path;

use bosun_document::{
    Document, DocumentType, Format, NoParameterStore, RenderContext, SessionType,
};
use serde_json::{Value, json};

const FIXTURES: &[(&str, DocumentType)] = &[
    ("a1-aws-run-shell-script.json", DocumentType::Command),
    ("a2-install-preconditions.yaml", DocumentType::Command),
    ("a2-cross-platform.json", DocumentType::Command),
    ("a3-restart-instances.json", DocumentType::Automation),
    ("a4-approve-then-run-command.yaml", DocumentType::Automation),
    ("a5-session-manager-run-shell.json", DocumentType::Session),
    ("a5-interactive-log-view.json", DocumentType::Session),
    (
        "a5-port-forwarding-reconstructed.json",
        DocumentType::Session,
    ),
];

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn load(name: &str) -> Document {
    let content = read(name);
    let format = Format::detect(&content);
    Document::parse(&content, format).unwrap_or_else(|errors| panic!("{name}: {errors:?}"))
}

#[test]
fn every_example_loads_with_its_type() {
    for (name, document_type) in FIXTURES {
        let document = load(name);
        assert_eq!(document.document_type(), *document_type, "{name}");
    }
}

#[test]
fn format_detection_matches_the_file_extension() {
    for (name, _) in FIXTURES {
        let expected = if name.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        };
        assert_eq!(Format::detect(&read(name)), expected, "{name}");
    }
}

#[test]
fn json_examples_keep_their_content_exactly() {
    for (name, _) in FIXTURES.iter().filter(|(name, _)| name.ends_with(".json")) {
        let original: Value = serde_json::from_str(&read(name)).expect("fixture is json");
        assert_eq!(load(name).content(), &original, "{name}");
    }
}

#[test]
fn json_to_yaml_to_json_round_trip_preserves_content() {
    for (name, _) in FIXTURES {
        let document = load(name);
        let yaml = document.to_yaml().expect("yaml");
        let from_yaml = Document::parse(&yaml, Format::Yaml)
            .unwrap_or_else(|errors| panic!("{name} as yaml: {errors:?}\n{yaml}"));
        assert_eq!(from_yaml.content(), document.content(), "{name}\n{yaml}");
        let json = from_yaml.to_json();
        let from_json = Document::parse(&json, Format::Json)
            .unwrap_or_else(|errors| panic!("{name} back to json: {errors:?}"));
        assert_eq!(from_json.content(), document.content(), "{name}");
    }
}

#[test]
fn yaml_true_in_allowed_values_stays_text() {
    // A.2 compares "{{ action }} {{ confirmed }}" with "Uninstall True": the YAML scalar
    // `True` must remain the text "True", not become a boolean.
    let document = load("a2-install-preconditions.yaml");
    let confirmed = &document.parameters()["confirmed"];
    assert_eq!(
        confirmed.allowed_values.as_deref(),
        Some(&["True".to_owned(), "False".to_owned()][..])
    );
    let supplied = BTreeMap::from([
        ("action".to_owned(), json!("Uninstall")),
        ("confirmed".to_owned(), json!("True")),
    ]);
    let resolved = document
        .resolve_parameters(&supplied)
        .expect("valid values");
    let rendered = document
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect("renders");
    let runs: Vec<bool> = rendered
        .steps
        .iter()
        .map(|step| step.precondition_holds("Linux"))
        .collect();
    assert_eq!(runs, [false, true]);
}

#[test]
fn aws_run_shell_script_renders_like_the_agent_expects() {
    let document = load("a1-aws-run-shell-script.json");
    assert_eq!(document.schema_version(), "1.2");
    assert!(document.parameters()["commands"].is_required());
    let supplied = BTreeMap::from([("commands".to_owned(), json!(["uptime", "df -h"]))]);
    let resolved = document
        .resolve_parameters(&supplied)
        .expect("valid values");
    let rendered = document
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect("renders");
    assert_eq!(rendered.steps.len(), 1);
    let step = &rendered.steps[0];
    assert_eq!(step.name, "0.aws:runShellScript");
    assert_eq!(step.action, "aws:runShellScript");
    assert_eq!(
        step.inputs,
        json!({"runCommand": ["uptime", "df -h"], "workingDirectory": "", "timeoutSeconds": "3600"})
    );
}

#[test]
fn cross_platform_preconditions_select_by_platform() {
    let document = load("a2-cross-platform.json");
    let resolved = document
        .resolve_parameters(&BTreeMap::new())
        .expect("no parameters");
    let rendered = document
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect("renders");
    let on = |platform: &str| -> Vec<&str> {
        rendered
            .steps
            .iter()
            .filter(|step| step.precondition_holds(platform))
            .map(|step| step.name.as_str())
            .collect()
    };
    assert_eq!(on("Windows"), ["PatchWindows"]);
    assert_eq!(on("Linux"), ["PatchLinux"]);
}

#[test]
fn automation_examples_load_but_are_refused_until_the_engine_exists() {
    // Both runbooks load unchanged; none can be created yet, since Bosun has no automation
    // engine to run them and a document is only accepted when Bosun can run it.
    let messages = |name: &str| -> Vec<String> {
        load(name)
            .check_supported()
            .expect_err("automation is not supported yet")
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        messages("a4-approve-then-run-command.yaml")[0],
        "mainSteps[0].action: aws:approve is not supported by Bosun yet"
    );
    assert_eq!(
        messages("a3-restart-instances.json"),
        [
            "mainSteps[0].action: aws:changeInstanceState is not supported by Bosun yet",
            "mainSteps[1].action: aws:changeInstanceState is not supported by Bosun yet",
        ]
    );
}

#[test]
fn session_documents_render_their_properties() {
    let document = load("a5-interactive-log-view.json");
    let resolved = document
        .resolve_parameters(&BTreeMap::new())
        .expect("default applies");
    let rendered = document
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect("renders");
    let session = rendered.session.expect("a session document");
    assert_eq!(session.session_type, SessionType::InteractiveCommands);
    assert_eq!(
        session.properties["linux"]["commands"],
        json!("tail -f /var/log/amazon/ssm/amazon-ssm-agent.log")
    );

    let port = load("a5-port-forwarding-reconstructed.json");
    let supplied = BTreeMap::from([("portNumber".to_owned(), json!("5432"))]);
    let resolved = port.resolve_parameters(&supplied).expect("valid port");
    let rendered = port
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect("renders");
    let session = rendered.session.expect("a session document");
    assert_eq!(
        session.properties,
        json!({"portNumber": "5432", "type": "LocalPortForwarding", "localPortNumber": "0"})
    );
    let bad = BTreeMap::from([("portNumber".to_owned(), json!("70000"))]);
    assert!(port.resolve_parameters(&bad).is_err());
}

#[test]
fn every_command_and_session_example_passes_the_support_check() {
    for (name, _) in FIXTURES {
        let supported = load(name).check_supported().is_ok();
        let automation = load(name).document_type() == bosun_document::DocumentType::Automation;
        assert_eq!(supported, !automation, "{name}");
    }
}

#[test]
fn strings_that_look_like_other_yaml_scalars_survive_the_round_trip() {
    let tricky = [
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "True",
        "FALSE",
        "~",
        "null",
        "Null",
        "1.0",
        "2.2",
        "0x10",
        "0o17",
        "1e3",
        "-1",
        ".inf",
        "-.inf",
        ".nan",
        "-",
        ":",
        "- x",
        "#x",
        "x #y",
        "a: b",
        "  leading",
        "trailing ",
        "multi\nline",
        "tab\there",
        "'",
        "\"",
        "{{ x }}",
        "",
        "=",
        "<<",
        "*a",
        "&a",
        "!tag",
        "%x",
        "@x",
        "`x",
        "[x]",
        "{x}",
        "1_000",
        "12:30",
        "2026-11-28",
    ];
    let content = json!({
        "schemaVersion": "2.2",
        "description": "tricky scalars",
        "parameters": {"x": {"type": "String", "default": "yes"}},
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "run",
            "inputs": {"runCommand": tricky.as_slice()}
        }]
    });
    let document = Document::parse(&content.to_string(), Format::Json).expect("valid");
    let yaml = document.to_yaml().expect("yaml");
    let again =
        Document::parse(&yaml, Format::Yaml).unwrap_or_else(|errors| panic!("{errors:?}\n{yaml}"));
    assert_eq!(again.content(), &content, "{yaml}");
}
