//! Mutated and truncated documents never panic the parser or the renderer, and whatever
//! parses is stable through parse → serialise → parse in both formats.
//!
//! `proptest` is not in the workspace, so the inputs are generated deterministically from
//! the example documents: every prefix, and a single-character replacement at every position.

use std::collections::BTreeMap;
use std::path::Path;

use bosun_document::{Document, Format, NoParameterStore, RenderContext};

fn fixtures() -> Vec<String> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut contents = Vec::new();
    for entry in std::fs::read_dir(directory).expect("fixtures directory") {
        let path = entry.expect("directory entry").path();
        contents.push(std::fs::read_to_string(path).expect("fixture"));
    }
    contents
}

/// Parses in both formats; for every success checks the round trips and renders with
/// whatever values the defaults give.
fn exercise(content: &str) -> usize {
    let mut parsed = 0;
    for format in [Format::Json, Format::Yaml] {
        let Ok(document) = Document::parse(content, format) else {
            continue;
        };
        parsed += 1;
        let json = document.to_json();
        let again = Document::parse(&json, Format::Json)
            .unwrap_or_else(|errors| panic!("json of a parsed document: {errors:?}\n{json}"));
        assert_eq!(again.content(), document.content(), "{json}");
        let yaml = document.to_yaml().expect("yaml");
        let again = Document::parse(&yaml, Format::Yaml)
            .unwrap_or_else(|errors| panic!("yaml of a parsed document: {errors:?}\n{yaml}"));
        assert_eq!(again.content(), document.content(), "{yaml}");
        let _ = document.check_supported();
        if let Ok(resolved) = document.resolve_parameters(&BTreeMap::new()) {
            let _ = document.render(&resolved, &NoParameterStore, &RenderContext::default());
        }
    }
    parsed
}

#[test]
fn every_prefix_of_every_example() {
    let mut parsed = 0;
    for content in fixtures() {
        for end in (0..=content.len()).filter(|end| content.is_char_boundary(*end)) {
            parsed += exercise(&content[..end]);
        }
    }
    // The complete documents at least parse.
    assert!(parsed >= 8, "{parsed}");
}

#[test]
fn single_byte_replacements_in_every_example() {
    const REPLACEMENTS: &[char] = &[
        '{', '}', '[', ']', '"', ':', '\n', ' ', '-', '#', '&', '*', '1',
    ];
    for content in fixtures() {
        let bytes: Vec<char> = content.chars().collect();
        // Each replacement visits every 13th position from its own offset, so together
        // they cover every position once while keeping the debug-build run short.
        for (offset, replacement) in REPLACEMENTS.iter().enumerate() {
            for position in (offset..bytes.len()).step_by(REPLACEMENTS.len()) {
                let mut mutated = bytes.clone();
                mutated[position] = *replacement;
                let mutated: String = mutated.into_iter().collect();
                exercise(&mutated);
            }
        }
    }
}

#[test]
fn yaml_alias_bombs_are_refused() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..12 {
        let previous = level - 1;
        let name = format!("l{level}");
        let prev = if previous == 0 {
            "a".to_owned()
        } else {
            format!("l{previous}")
        };
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    bomb.push_str("schemaVersion: '2.2'\n");
    assert!(Document::parse(&bomb, Format::Yaml).is_err());
}
