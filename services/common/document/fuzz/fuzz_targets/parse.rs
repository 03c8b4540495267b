//! Fuzzes the document parser with arbitrary bytes as JSON and as YAML: it must never panic,
//! and whatever it accepts must convert to the other format and parse back to the same content.
#![no_main]

use bosun_document::{Document, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Json, Format::Yaml] {
        let Ok(document) = Document::parse(text, format) else {
            continue;
        };
        for target in [Format::Json, Format::Yaml] {
            let converted = document
                .to_format(target)
                .expect("an accepted document converts to every format");
            let again = Document::parse(&converted, target).expect("a converted document parses");
            assert_eq!(again.content(), document.content(), "conversion changed the document");
        }
    }
});
