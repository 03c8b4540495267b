//! Structural errors name their JSON path, all of them are reported at once; actions are
//! checked against the table; interpolation follows SSM's type rules.

use std::collections::BTreeMap;

use bosun_document::{
    Document, Format, MAX_NESTING_DEPTH, NoParameterStore, ParameterResolver, RenderContext,
    ResolveError, ValidationError,
};
use serde_json::{Value, json};

fn parse(content: &Value) -> Result<Document, Vec<ValidationError>> {
    Document::parse(&content.to_string(), Format::Json)
}

fn messages(errors: &[ValidationError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn shell_step(name: &str, commands: Value) -> Value {
    json!({"action": "aws:runShellScript", "name": name, "inputs": {"runCommand": commands}})
}

#[test]
fn missing_run_command_names_the_step_path() {
    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [
            shell_step("first", json!(["true"])),
            {"action": "aws:runShellScript", "name": "second", "inputs": {}}
        ]
    });
    let errors = parse(&document).expect_err("runCommand missing");
    assert_eq!(
        messages(&errors),
        ["mainSteps[1].inputs.runCommand: required"]
    );
}

#[test]
fn several_errors_are_reported_together() {
    let document = json!({
        "schemaVersion": "2.2",
        "colour": "blue",
        "mainSteps": [
            {"action": "aws:runShellScript", "name": "a", "inputs": {"runCommand": []}},
            {"action": "aws:runShellScript", "name": "a", "inputs": {"runCommand": [1]}},
            {"name": "c", "inputs": {}},
            {"action": "aws:runShellScript", "name": "d", "precondition": {"StringEquals": ["platformType", "Solaris"]}, "inputs": {"runCommand": ["x"]}},
            {"action": "aws:runShellScript", "inputs": {"runCommand": ["{{ nothing }}"]}}
        ]
    });
    let errors = parse(&document).expect_err("many problems");
    assert_eq!(
        messages(&errors),
        [
            "colour: unknown field for schema version 2.2",
            "mainSteps[1].name: duplicate step name \"a\"",
            "mainSteps[2].action: required",
            "mainSteps[3].precondition.StringEquals[1]: \"Solaris\" is not a platform type (Linux, MacOS, Windows)",
            "mainSteps[4].name: required",
            "mainSteps[0].inputs.runCommand: must not be empty",
            "mainSteps[1].inputs.runCommand[0]: must be a string",
            "mainSteps[4].inputs.runCommand[0]: {{ nothing }}: nothing is not a parameter of this document",
        ]
    );
}

#[test]
fn schema_problems() {
    let errors = parse(&json!({"mainSteps": []})).expect_err("no schema");
    assert_eq!(messages(&errors), ["schemaVersion: required"]);
    let errors = parse(&json!({"schemaVersion": "3.0"})).expect_err("bad schema");
    assert_eq!(errors[0].path, "schemaVersion");
    let errors = parse(&json!({"schemaVersion": "2.0", "mainSteps": [
        {"action": "aws:runShellScript", "name": "a", "precondition": {"StringEquals": ["platformType", "Linux"]}, "inputs": {"runCommand": ["x"]}}
    ]}))
    .expect_err("precondition needs 2.2");
    assert_eq!(
        messages(&errors),
        ["mainSteps[0].precondition: preconditions need schema version 2.2"]
    );
    let errors = Document::parse("[1, 2]", Format::Json).expect_err("not an object");
    assert_eq!(messages(&errors), ["a document must be an object"]);
    let errors = Document::parse("{", Format::Json).expect_err("bad json");
    assert!(errors[0].rule.starts_with("invalid json"), "{errors:?}");
    let errors = Document::parse("a: [", Format::Yaml).expect_err("bad yaml");
    assert!(errors[0].rule.starts_with("invalid yaml"), "{errors:?}");
}

#[test]
fn unsupported_and_unknown_actions() {
    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [
            {"action": "aws:applyPatches", "name": "patch", "inputs": {}},
            {"action": "aws:fly", "name": "fly", "inputs": {}},
            shell_step("run", json!(["true"]))
        ]
    });
    let errors = parse(&document).expect_err("unknown action");
    assert_eq!(
        messages(&errors),
        ["mainSteps[1].action: aws:fly is not a known action"]
    );

    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [
            {"action": "aws:applyPatches", "name": "patch", "inputs": {}},
            {"action": "bosun:configurePackage", "name": "package", "inputs": {}},
            shell_step("run", json!(["true"]))
        ]
    });
    let loaded = parse(&document).expect("known actions load");
    assert_eq!(
        messages(&loaded.check_supported().expect_err("unsupported")),
        [
            "mainSteps[0].action: aws:applyPatches is not supported by Bosun yet",
            "mainSteps[1].action: bosun:configurePackage is not supported by Bosun yet",
        ]
    );
    let errors = Document::parse_supported(&document.to_string(), Format::Json)
        .expect_err("parse_supported applies the same check");
    assert_eq!(errors.len(), 2);

    // Automation actions are not Command plugins and the other way round.
    let document = json!({"schemaVersion": "2.2", "mainSteps": [{"action": "aws:sleep", "name": "s", "inputs": {}}]});
    assert_eq!(
        messages(&parse(&document).expect_err("wrong kind")),
        ["mainSteps[0].action: aws:sleep is not a known action"]
    );
}

#[test]
fn bosun_aliases_run_like_their_aws_names() {
    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [{"action": "bosun:runShellScript", "name": "run", "inputs": {"runCommand": ["uptime"]}}]
    });
    let document =
        Document::parse_supported(&document.to_string(), Format::Json).expect("supported");
    assert_eq!(document.steps()[0].action, "bosun:runShellScript");
    let rendered = document
        .render(
            &Default::default(),
            &NoParameterStore,
            &RenderContext::default(),
        )
        .expect("renders");
    assert_eq!(rendered.steps[0].action, "aws:runShellScript");
    // The alias stays as written in the stored content.
    assert!(document.to_json().contains("bosun:runShellScript"));
}

#[test]
fn automation_step_rules() {
    let document = json!({
        "schemaVersion": "0.3",
        "mainSteps": [
            {"name": "wait", "action": "aws:sleep", "inputs": {}, "onFailure": "step:nowhere", "maxAttempts": 0},
            {"name": "bad-name", "action": "aws:pause", "inputs": {}, "nextStep": "missing"},
            {"name": "choose", "action": "aws:branch", "inputs": {
                "Choices": [{"NextStep": "wait", "Variable": "{{ wait.Out }}", "Matches": "x"}],
                "Default": "gone"
            }},
            {"name": "approve", "action": "aws:approve", "inputs": {}},
            {"name": "run", "action": "aws:runCommand", "inputs": {"InstanceIds": ["i-1"]}, "isEnd": "yes"}
        ]
    });
    let errors = parse(&document).expect_err("broken runbook");
    assert_eq!(
        messages(&errors),
        [
            "mainSteps[1].name: contains characters a step name may not use",
            "mainSteps[0].maxAttempts: must be an integer of at least 1",
            "mainSteps[0].onFailure: no step named \"nowhere\"",
            "mainSteps[1].nextStep: no step named \"missing\"",
            "mainSteps[4].isEnd: must be a boolean",
            "mainSteps[0].inputs: exactly one of Duration and Timestamp required",
            "mainSteps[2].inputs.Choices[0].Matches: not a valid choice operation",
            "mainSteps[2].inputs.Choices[0]: must hold exactly one operation or one of And, Or, Not",
            "mainSteps[2].inputs.Default: must name a step of this runbook",
            "mainSteps[3].inputs.Approvers: required",
            "mainSteps[4].inputs.DocumentName: required",
        ]
    );
}

#[test]
fn session_type_is_checked() {
    let errors =
        parse(&json!({"schemaVersion": "1.0", "sessionType": "Telnet"})).expect_err("bad type");
    assert_eq!(errors[0].path, "sessionType");
    let complete = [
        ("Standard_Stream", json!({})),
        ("InteractiveCommands", json!({"linux": {"commands": "top"}})),
        (
            "NonInteractiveCommands",
            json!({"windows": {"commands": "dir"}}),
        ),
        ("Port", json!({"portNumber": "22"})),
    ];
    for (session_type, properties) in complete {
        let document = parse(
            &json!({"schemaVersion": "1.0", "sessionType": session_type, "properties": properties}),
        );
        assert!(document.is_ok(), "{session_type}: {document:?}");
        assert!(document.is_ok_and(|d| d.check_supported().is_ok()));
    }
    let incomplete = [
        (
            "InteractiveCommands",
            json!({}),
            "properties: must hold commands for linux, windows or macos",
        ),
        (
            "InteractiveCommands",
            json!({"linux": {"runAsElevated": true}}),
            "properties.linux.commands: required string",
        ),
        (
            "Port",
            json!({"type": "LocalPortForwarding"}),
            "properties.portNumber: required string",
        ),
    ];
    for (session_type, properties, message) in incomplete {
        let errors = parse(
            &json!({"schemaVersion": "1.0", "sessionType": session_type, "properties": properties}),
        )
        .expect_err("incomplete");
        assert_eq!(messages(&errors), [message]);
    }
}

#[test]
fn content_and_nesting_limits() {
    let big = format!(
        r#"{{"schemaVersion": "2.2", "description": "{}", "mainSteps": []}}"#,
        "x".repeat(70_000)
    );
    let errors = Document::parse(&big, Format::Json).expect_err("too big");
    assert!(errors[0].rule.contains("limit is 65536"), "{errors:?}");
    // Deep nesting is refused by the parsers rather than exhausting the stack.
    let deep = "[".repeat(60_000);
    assert!(Document::parse(&deep, Format::Json).is_err());
    assert!(Document::parse(&deep, Format::Yaml).is_err());
    let closed = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    assert!(Document::parse(&closed, Format::Json).is_err());
    assert!(Document::parse(&closed, Format::Yaml).is_err());
    let deep_yaml = format!("a: {}", "{b: ".repeat(10_000));
    assert!(Document::parse(&deep_yaml, Format::Yaml).is_err());

    // Below the parsers' limits, one depth limit applies to both formats, and a document
    // just inside it converts to YAML and back.
    let nested = |depth: usize| {
        // The step input sits 4 levels down: document, mainSteps, step, inputs.
        let extra = format!("{}1{}", "[".repeat(depth - 4), "]".repeat(depth - 4));
        format!(
            r#"{{"schemaVersion": "2.2", "mainSteps": [{{"action": "aws:runShellScript", "name": "a",
                "inputs": {{"runCommand": ["x"], "extra": {extra}}}}}]}}"#
        )
    };
    let inside = Document::parse(&nested(MAX_NESTING_DEPTH), Format::Json).expect("at the limit");
    let yaml = inside.to_yaml().expect("yaml");
    assert!(Document::parse(&yaml, Format::Yaml).is_ok(), "{yaml}");
    for format in [Format::Json, Format::Yaml] {
        let errors = Document::parse(&nested(MAX_NESTING_DEPTH + 1), format).expect_err("too deep");
        assert_eq!(messages(&errors), ["content nests deeper than 32 levels"]);
    }
}

fn list_document() -> Document {
    let document = json!({
        "schemaVersion": "2.2",
        "parameters": {
            "commands": {"type": "StringList"},
            "dir": {"type": "String", "default": "/tmp"},
            "retries": {"type": "Integer", "default": 2},
            "verbose": {"type": "Boolean", "default": true}
        },
        "mainSteps": [
            {"action": "aws:runShellScript", "name": "splice", "inputs": {
                "runCommand": ["echo start", "{{ commands }}", "echo end"],
                "workingDirectory": "{{dir}}"
            }},
            {"action": "aws:runShellScript", "name": "whole", "inputs": {
                "runCommand": "{{ commands }}",
                "timeoutSeconds": "{{ retries }}"
            }},
            {"action": "aws:runShellScript", "name": "text", "inputs": {
                "runCommand": ["retry {{ retries }} times, verbose={{ verbose }}, in {{ dir }}"]
            }}
        ]
    });
    parse(&document).unwrap_or_else(|errors| panic!("{errors:?}"))
}

#[test]
fn string_list_splices_into_a_list_and_scalars_render_into_text() {
    let document = list_document();
    let supplied = BTreeMap::from([("commands".to_owned(), json!(["a", "b"]))]);
    let resolved = document.resolve_parameters(&supplied).expect("valid");
    let rendered = document
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect("renders");
    assert_eq!(
        rendered.steps[0].inputs,
        json!({"runCommand": ["echo start", "a", "b", "echo end"], "workingDirectory": "/tmp"})
    );
    // A whole value takes the parameter's typed value.
    assert_eq!(
        rendered.steps[1].inputs,
        json!({"runCommand": ["a", "b"], "timeoutSeconds": 2})
    );
    assert_eq!(
        rendered.steps[2].inputs,
        json!({"runCommand": ["retry 2 times, verbose=true, in /tmp"]})
    );
}

#[test]
fn string_list_inside_a_string_is_an_error_with_its_path() {
    let document = json!({
        "schemaVersion": "2.2",
        "parameters": {"commands": {"type": "StringList"}},
        "mainSteps": [
            {"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["echo {{ commands }}"]}}
        ]
    });
    let errors = parse(&document).expect_err("list inside text");
    assert_eq!(
        messages(&errors),
        [
            "mainSteps[0].inputs.runCommand[0]: {{ commands }}: a StringList parameter must stand alone, not inside a string"
        ]
    );
}

#[test]
fn unknown_references_are_errors_with_their_path() {
    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {
            "runCommand": ["echo {{ missing }}", "{{ global:REGION }}", "{{ {{x}} }}", "{{ssm-secure:/db/password}}"],
            "workingDirectory": "{{ run.Output }}"
        }}]
    });
    let errors = parse(&document).expect_err("unknown references");
    assert_eq!(
        messages(&errors),
        [
            "mainSteps[0].inputs.runCommand[0]: {{ missing }}: missing is not a parameter of this document",
            "mainSteps[0].inputs.runCommand[1]: {{ global:REGION }}: global:REGION is not a known variable",
            "mainSteps[0].inputs.runCommand[2]: {{ {{x}}: not a valid reference",
            "mainSteps[0].inputs.runCommand[3]: {{ssm-secure:/db/password}}: ssm-secure references are not supported",
            "mainSteps[0].inputs.workingDirectory: {{ run.Output }}: not a parameter or step output of this document",
        ]
    );
}

/// A fake Parameter Store with versions; `/secret` is a SecureString.
struct FakeStore;

impl ParameterResolver for FakeStore {
    fn resolve(&self, name: &str, version: Option<u64>) -> Result<String, ResolveError> {
        match (name, version) {
            ("/app/dns", None | Some(2)) => Ok("10.0.0.2".to_owned()),
            ("/app/dns", Some(1)) => Ok("10.0.0.1".to_owned()),
            ("/app/dns", Some(_)) => Err(ResolveError::VersionNotFound),
            ("/secret", _) => Err(ResolveError::SecureString),
            _ => Err(ResolveError::NotFound),
        }
    }
}

#[test]
fn ssm_references_resolve_through_the_caller_resolver() {
    let document = json!({
        "schemaVersion": "2.2",
        "parameters": {"server": {"type": "String", "default": "{{ssm:/app/dns:1}}", "allowedPattern": "[0-9.]+"}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {
            "runCommand": ["ping {{ssm:/app/dns}}", "ping {{ ssm:/app/dns:1 }}", "ping {{ server }}"]
        }}]
    });
    let document = parse(&document).expect("valid");
    assert_eq!(
        document.ssm_references(),
        [
            ("/app/dns".to_owned(), None),
            ("/app/dns".to_owned(), Some(1))
        ]
    );
    let resolved = document
        .resolve_parameters(&BTreeMap::new())
        .expect("default");
    let rendered = document
        .render(&resolved, &FakeStore, &RenderContext::default())
        .expect("renders");
    assert_eq!(
        rendered.steps[0].inputs["runCommand"],
        json!(["ping 10.0.0.2", "ping 10.0.0.1", "ping 10.0.0.1"])
    );

    // Supplied values may hold references too (SendCommand allows them); resolved values
    // are checked against the definition.
    let supplied = BTreeMap::from([("server".to_owned(), json!("{{ssm:/secret}}"))]);
    let resolved = document
        .resolve_parameters(&supplied)
        .expect("checked later");
    let errors = document
        .render(&resolved, &FakeStore, &RenderContext::default())
        .expect_err("secure string");
    assert_eq!(
        messages(&errors),
        ["parameters.server: {{ssm:/secret}}: secure string parameters cannot be referenced here"]
    );
    let supplied = BTreeMap::from([("server".to_owned(), json!("{{ssm:/app/dns:7}}"))]);
    let resolved = document
        .resolve_parameters(&supplied)
        .expect("checked later");
    let errors = document
        .render(&resolved, &FakeStore, &RenderContext::default())
        .expect_err("no such version");
    assert_eq!(
        messages(&errors),
        ["parameters.server: {{ssm:/app/dns:7}}: version not found"]
    );
}

#[test]
fn automation_builtins_and_step_outputs() {
    let document = json!({
        "schemaVersion": "0.3",
        "parameters": {"approvers": {"type": "StringList"}},
        "mainSteps": [
            {"name": "approve", "action": "aws:approve", "inputs": {
                "Approvers": "{{ approvers }}",
                "Message": "run {{ automation:EXECUTION_ID }} in {{ global:REGION }} on {{global:DATE}}"
            }},
            {"name": "run", "action": "aws:runCommand", "inputs": {
                "DocumentName": "AWS-RunShellScript",
                "Comment": "after {{ approve.ApprovalStatus }}"
            }}
        ]
    });
    let document = Document::parse(&document.to_string(), Format::Json).expect("valid");
    let supplied = BTreeMap::from([("approvers".to_owned(), json!(["alice", "bob"]))]);
    let resolved = document.resolve_parameters(&supplied).expect("valid");
    let context = RenderContext {
        region: Some("home".to_owned()),
        execution_id: Some("exec-1".to_owned()),
        date: Some("2026-11-28".to_owned()),
        ..RenderContext::default()
    };
    let rendered = document
        .render(&resolved, &NoParameterStore, &context)
        .expect("renders");
    assert_eq!(
        rendered.steps[0].inputs,
        json!({"Approvers": ["alice", "bob"], "Message": "run exec-1 in home on 2026-11-28"})
    );
    // Step outputs are left for the engine.
    assert_eq!(
        rendered.steps[1].inputs["Comment"],
        json!("after {{ approve.ApprovalStatus }}")
    );

    let errors = document
        .render(&resolved, &NoParameterStore, &RenderContext::default())
        .expect_err("context missing");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].to_string().starts_with(
        "mainSteps[0].inputs.Message: {{ automation:EXECUTION_ID }}: no value supplied"
    ));
}

#[test]
fn automation_steps_cannot_reference_parameter_store_directly() {
    let document = json!({
        "schemaVersion": "0.3",
        "parameters": {"role": {"type": "String", "default": "{{ssm:/automation/role}}"}},
        "assumeRole": "{{ role }}",
        "mainSteps": [{"name": "wait", "action": "aws:sleep", "inputs": {"Duration": "{{ssm:/wait}}"}}]
    });
    let errors = parse(&document).expect_err("ssm in a step");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "mainSteps[0].inputs.Duration");
}

#[test]
fn schema_1_2_errors_point_into_runtime_config() {
    let document = json!({
        "schemaVersion": "1.2",
        "runtimeConfig": {
            "aws:runShellScript": {"properties": [{"id": "0.aws:runShellScript", "workingDirectory": "/"}]},
            "aws:applyPatches": {"properties": [{"id": "0.aws:applyPatches"}]}
        }
    });
    let errors = parse(&document).expect_err("runCommand missing");
    assert_eq!(
        messages(&errors),
        ["runtimeConfig.aws:runShellScript.properties[0].runCommand: required"]
    );
    let document = json!({
        "schemaVersion": "1.2",
        "runtimeConfig": {"aws:applyPatches": {"properties": [{"id": "0.aws:applyPatches"}]}}
    });
    let errors = parse(&document)
        .expect("a known plugin loads")
        .check_supported()
        .expect_err("not supported");
    assert_eq!(
        messages(&errors),
        ["runtimeConfig.aws:applyPatches: aws:applyPatches is not supported by Bosun yet"]
    );
}

#[test]
fn run_document_needs_a_type_and_a_path() {
    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [{"name": "inner", "action": "aws:runDocument", "inputs": {"documentType": "Elsewhere"}}]
    });
    let errors =
        Document::parse_supported(&document.to_string(), Format::Json).expect_err("invalid inputs");
    assert_eq!(
        messages(&errors),
        [
            "mainSteps[0].inputs.documentType: must be SSMDocument or LocalPath",
            "mainSteps[0].inputs.documentPath: required",
        ]
    );
    let document = json!({
        "schemaVersion": "2.2",
        "mainSteps": [{"name": "inner", "action": "bosun:runDocument",
                       "inputs": {"documentType": "SSMDocument", "documentPath": "Bosun-RunShellScript"}}]
    });
    assert!(Document::parse_supported(&document.to_string(), Format::Json).is_ok());
}
