//! Fuzzes parameter checking and `{{ }}` interpolation: a fixed document whose step inputs
//! come from the fuzzer, rendered with fuzzer-chosen parameter values. Must never panic.
#![no_main]

use std::collections::BTreeMap;

use bosun_document::{Document, Format, NoParameterStore, RenderContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (command, value) = text.split_once('\n').unwrap_or((text, ""));
    let document = serde_json::json!({
        "schemaVersion": "2.2",
        "parameters": {
            "words": {"type": "StringList", "default": ["a"]},
            "name": {"type": "String", "default": "x", "allowedPattern": "^[a-z ]*$"},
            "count": {"type": "Integer", "default": 1}
        },
        "mainSteps": [{"name": "run", "action": "aws:runShellScript",
                       "inputs": {"runCommand": [command, "{{ words }}", "echo {{ name }} {{count}}"]}}]
    });
    let Ok(document) = Document::parse(&document.to_string(), Format::Json) else {
        return;
    };
    let supplied = BTreeMap::from([
        ("name".to_owned(), serde_json::Value::String(value.to_owned())),
        ("words".to_owned(), serde_json::json!(value.split(' ').collect::<Vec<_>>())),
    ]);
    if let Ok(resolved) = document.resolve_parameters(&supplied) {
        let _ = document.render(&resolved, &NoParameterStore, &RenderContext::default());
    }
});
