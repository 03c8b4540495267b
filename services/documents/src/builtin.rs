//! Built-in documents: read-only, owner `Bosun`, served from memory (never stored), each
//! reachable by its Bosun name and by the SSM name existing scripts use.

use std::sync::LazyLock;

use bosun_document::Format;
use chrono::{DateTime, Utc};

use crate::content;
use crate::store::{DocumentRecord, VersionRecord};

/// The owner every built-in document reports.
pub const BUILT_IN_OWNER: &str = "Bosun";

/// (Bosun name, SSM alias, content), in name order. A built-in must never name an action
/// Bosun cannot run: `AWS-RunDocument`'s `aws:downloadContent` step (GitHub and S3 sources)
/// is left out, so `Bosun-RunDocument` runs documents stored in Bosun only.
pub const SOURCES: &[(&str, &str, &str)] = &[
    (
        "Bosun-RunDocument",
        "AWS-RunDocument",
        include_str!("../builtin/Bosun-RunDocument.json"),
    ),
    (
        "Bosun-RunPowerShellScript",
        "AWS-RunPowerShellScript",
        include_str!("../builtin/Bosun-RunPowerShellScript.json"),
    ),
    (
        "Bosun-RunShellScript",
        "AWS-RunShellScript",
        include_str!("../builtin/Bosun-RunShellScript.json"),
    ),
    (
        "Bosun-StartInteractiveCommand",
        "AWS-StartInteractiveCommand",
        include_str!("../builtin/Bosun-StartInteractiveCommand.json"),
    ),
    (
        "Bosun-StartPortForwardingSession",
        "AWS-StartPortForwardingSession",
        include_str!("../builtin/Bosun-StartPortForwardingSession.json"),
    ),
    (
        "Bosun-StartPortForwardingSessionToRemoteHost",
        "AWS-StartPortForwardingSessionToRemoteHost",
        include_str!("../builtin/Bosun-StartPortForwardingSessionToRemoteHost.json"),
    ),
    (
        "Bosun-StartShellSession",
        "SSM-SessionManagerRunShell",
        include_str!("../builtin/Bosun-StartShellSession.json"),
    ),
];

/// One built-in document, as the store would hold it, at version 1.
#[derive(Debug)]
pub struct BuiltIn {
    pub alias: &'static str,
    pub document: DocumentRecord,
    pub version: VersionRecord,
}

/// A fixed creation time, so built-ins look the same on every replica and every start.
fn built_in_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_824_000, 0).unwrap_or_default()
}

fn load(name: &str, alias: &'static str, source: &str) -> Option<BuiltIn> {
    // A built-in that fails the checks is left out rather than served; the test
    // `every_built_in_parses_and_is_supported` keeps this from happening.
    let checked = match content::check(source, Format::Json, None, "document_type") {
        Ok(checked) => checked,
        Err(error) => {
            tracing::error!(document = name, %error, "built-in document is invalid; left out");
            return None;
        }
    };
    let created_at = built_in_time();
    let document_type = checked.document.document_type().as_str().to_owned();
    Some(BuiltIn {
        alias,
        document: DocumentRecord {
            name: name.to_owned(),
            owner: BUILT_IN_OWNER.to_owned(),
            document_type,
            default_version: 1,
            latest_version: 1,
            last_issued_version: 1,
            target_type: String::new(),
            created_at,
        },
        version: VersionRecord {
            name: name.to_owned(),
            version: 1,
            version_name: None,
            content: source.to_owned(),
            format: content::format_name(Format::Json).to_owned(),
            schema_version: checked.document.schema_version().to_owned(),
            sha256: checked.sha256,
            display_name: String::new(),
            description: checked
                .document
                .description()
                .unwrap_or_default()
                .to_owned(),
            parameters: checked.parameters,
            platform_types: checked.platform_types,
            target_type: String::new(),
            created_at,
        },
    })
}

static BUILT_INS: LazyLock<Vec<BuiltIn>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .filter_map(|(name, alias, source)| load(name, alias, source))
        .collect()
});

/// Every built-in, in name order.
pub fn all() -> &'static [BuiltIn] {
    &BUILT_INS
}

/// The built-in named `name` by its Bosun name or its alias.
pub fn find(name: &str) -> Option<&'static BuiltIn> {
    BUILT_INS
        .iter()
        .find(|built_in| built_in.document.name == name || built_in.alias == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_parses_and_is_supported() {
        for (name, _, source) in SOURCES {
            let document = bosun_document::Document::parse(source, Format::Json)
                .unwrap_or_else(|errors| panic!("{name}: {errors:?}"));
            document
                .check_supported()
                .unwrap_or_else(|errors| panic!("{name}: {errors:?}"));
        }
        assert_eq!(all().len(), SOURCES.len(), "no built-in was left out");
    }

    #[test]
    fn built_ins_are_in_name_order_and_found_by_both_names() {
        let names: Vec<_> = all().iter().map(|b| b.document.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for built_in in all() {
            assert!(find(&built_in.document.name).is_some());
            assert!(find(built_in.alias).is_some());
        }
    }

    #[test]
    fn run_shell_script_has_the_ssm_parameters() {
        let built_in = find("AWS-RunShellScript").expect("the alias resolves");
        let parameters = content::parameters_to_proto(&built_in.version.parameters);
        let names: Vec<_> = parameters.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["commands", "executionTimeout", "workingDirectory"]);
        let timeout = &parameters[1];
        assert_eq!(timeout.default_value, "\"3600\"");
        assert_eq!(parameters[0].r#type, "StringList");
        assert_eq!(parameters[0].default_value, "", "commands is required");
    }
}
