//! Version labels: SSM's label rules and the outcome of LabelParameterVersion and
//! UnlabelParameterVersion on a parameter's version → labels map.

use std::collections::{BTreeMap, BTreeSet};

use bosun_core::error::ApiError;

use crate::error::{
    PARAMETER_VERSION_LABEL_LIMIT_EXCEEDED, PARAMETER_VERSION_NOT_FOUND, VALIDATION,
};

/// Longest label, in characters.
pub const MAX_LABEL_LENGTH: usize = 100;
/// Most labels one version may carry.
pub const MAX_LABELS_PER_VERSION: usize = 10;
/// Most labels one Label/Unlabel request may name.
pub const MAX_LABELS_PER_REQUEST: usize = 10;
/// Prefixes no label may start with (case-insensitive).
pub const RESERVED_LABEL_PREFIXES: [&str; 3] = ["aws", "ssm", "bosun"];

/// The labels of each version of one parameter. A label sits on at most one version.
pub type VersionLabels = BTreeMap<u64, BTreeSet<String>>;

/// Checks one label; the error is the rule broken, e.g. `label must not start with a digit`.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("label must not be empty".to_owned());
    }
    if label.chars().count() > MAX_LABEL_LENGTH {
        return Err(format!(
            "label must be at most {MAX_LABEL_LENGTH} characters"
        ));
    }
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("label may contain only letters, digits, '.', '-' and '_'".to_owned());
    }
    if label.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("label must not start with a digit".to_owned());
    }
    let reserved = RESERVED_LABEL_PREFIXES.iter().any(|prefix| {
        label
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    });
    if reserved {
        return Err("label must not start with 'aws', 'ssm' or 'bosun' (any case)".to_owned());
    }
    Ok(())
}

pub fn is_valid_label(label: &str) -> bool {
    check_label(label).is_ok()
}

/// What LabelParameterVersion did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelOutcome {
    /// The version labelled.
    pub version: u64,
    /// Labels now on `version` that were not before (moved ones included).
    pub added: Vec<String>,
    /// Labels that broke the label rules; returned to the caller, not an error.
    pub invalid_labels: Vec<String>,
    /// Labels taken from another version: (label, version it was on).
    pub moved: Vec<(String, u64)>,
}

/// What UnlabelParameterVersion did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnlabelOutcome {
    pub removed: Vec<String>,
    /// Labels that were not on that version.
    pub invalid_labels: Vec<String>,
}

fn check_request(labels: &[String]) -> Result<(), ApiError> {
    if labels.is_empty() || labels.len() > MAX_LABELS_PER_REQUEST {
        return Err(ApiError::invalid(
            "labels",
            format!("must name 1 to {MAX_LABELS_PER_REQUEST} labels"),
        )
        .with_reason(VALIDATION));
    }
    Ok(())
}

fn version_not_found(name: &str, version: u64) -> ApiError {
    ApiError::not_found(format!("parameter {name}: version {version} not found"))
        .with_reason(PARAMETER_VERSION_NOT_FOUND)
}

/// Attaches `requested` labels to `version` of parameter `name`, moving any that sit on
/// another version. Invalid labels are reported, not applied. On error the map is unchanged.
pub fn label_version(
    name: &str,
    labels: &mut VersionLabels,
    version: u64,
    requested: &[String],
) -> Result<LabelOutcome, ApiError> {
    check_request(requested)?;
    let Some(current) = labels.get(&version) else {
        return Err(version_not_found(name, version));
    };
    let mut outcome = LabelOutcome {
        version,
        ..LabelOutcome::default()
    };
    let mut to_add: BTreeSet<&str> = BTreeSet::new();
    for label in requested {
        if !is_valid_label(label) {
            if !outcome.invalid_labels.contains(label) {
                outcome.invalid_labels.push(label.clone());
            }
        } else if !current.contains(label.as_str()) {
            to_add.insert(label.as_str());
        }
    }
    let total = current.len() + to_add.len();
    if total > MAX_LABELS_PER_VERSION {
        return Err(ApiError::resource_exhausted(format!(
            "parameter {name}: version {version} would carry {total} labels, the maximum is {MAX_LABELS_PER_VERSION}"
        ))
        .with_reason(PARAMETER_VERSION_LABEL_LIMIT_EXCEEDED));
    }
    for label in to_add {
        for (other_version, other_labels) in labels.iter_mut() {
            if *other_version != version && other_labels.remove(label) {
                outcome.moved.push((label.to_owned(), *other_version));
            }
        }
        if let Some(current) = labels.get_mut(&version) {
            current.insert(label.to_owned());
        }
        outcome.added.push(label.to_owned());
    }
    Ok(outcome)
}

/// Removes `requested` labels from `version` of parameter `name`; labels not on that version
/// come back as invalid. On error the map is unchanged.
pub fn unlabel_version(
    name: &str,
    labels: &mut VersionLabels,
    version: u64,
    requested: &[String],
) -> Result<UnlabelOutcome, ApiError> {
    check_request(requested)?;
    let Some(current) = labels.get_mut(&version) else {
        return Err(version_not_found(name, version));
    };
    let mut outcome = UnlabelOutcome::default();
    for label in requested {
        if current.remove(label.as_str()) {
            outcome.removed.push(label.clone());
        } else if !outcome.removed.contains(label) && !outcome.invalid_labels.contains(label) {
            outcome.invalid_labels.push(label.clone());
        }
    }
    Ok(outcome)
}

/// The version carrying `label`, if any (for `name:label` reads).
pub fn version_with_label(labels: &VersionLabels, label: &str) -> Option<u64> {
    labels
        .iter()
        .find(|(_, set)| set.contains(label))
        .map(|(version, _)| *version)
}
