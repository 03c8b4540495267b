//! Parameter names, paths and read selectors, with SSM's naming rules.
//!
//! Names are case sensitive; characters `a-zA-Z0-9_.-` plus `/` as the hierarchy delimiter;
//! a hierarchical name starts with `/`; at most 15 levels; no reserved prefix.

use std::fmt;

use bosun_core::error::ApiError;

use crate::error::{HIERARCHY_LEVEL_LIMIT_EXCEEDED, VALIDATION};
use crate::label;

/// Longest name accepted, in bytes (names are ASCII, so also characters).
///
/// SSM's model allows 2048, but the user-visible limit is 1011 characters *including* the
/// ARN prefix (`arn:aws:ssm:<region>:<account>:parameter/`). Bosun has no ARN in front of a
/// name, so the prefix costs nothing here and the whole 1011 is available: every name SSM
/// accepts fits, and nothing much longer does.
pub const MAX_NAME_LENGTH: usize = 1011;

/// Most levels in a hierarchy: `/l1/l2/.../l14/name` is 15 levels.
pub const MAX_HIERARCHY_LEVELS: usize = 15;

/// Prefixes no name may start with (case-insensitive, also right after a leading `/`).
pub const RESERVED_PREFIXES: [&str; 3] = ["aws", "ssm", "bosun"];

/// A validated parameter name, trimmed of leading and trailing spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParameterName(String);

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

fn invalid(field: &str, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(VALIDATION)
}

/// Checks the rules names and paths share (emptiness, length, spaces, characters, leading
/// `/`); returns the text trimmed of leading and trailing spaces.
fn check_common<'a>(field: &str, input: &'a str, what: &str) -> Result<&'a str, ApiError> {
    // SSM trims leading and trailing spaces only; tabs and newlines stay and are invalid.
    let text = input.trim_matches(' ');
    if text.is_empty() {
        return Err(invalid(field, format!("{what} must not be empty")));
    }
    if text.len() > MAX_NAME_LENGTH {
        return Err(invalid(
            field,
            format!("{what} must be at most {MAX_NAME_LENGTH} characters"),
        ));
    }
    if text.contains(' ') {
        return Err(invalid(field, format!("{what} must not contain spaces")));
    }
    if !text.chars().all(allowed_char) {
        return Err(invalid(
            field,
            format!("{what} may contain only letters, digits, '_', '.', '-' and '/'"),
        ));
    }
    if text.contains('/') && !text.starts_with('/') {
        return Err(invalid(
            field,
            format!("{what} containing '/' must start with '/'"),
        ));
    }
    Ok(text)
}

fn check_levels(field: &str, levels: usize, what: &str) -> Result<(), ApiError> {
    if levels > MAX_HIERARCHY_LEVELS {
        return Err(ApiError::invalid(
            field,
            format!("{what} has {levels} levels, the maximum is {MAX_HIERARCHY_LEVELS}"),
        )
        .with_reason(HIERARCHY_LEVEL_LIMIT_EXCEEDED));
    }
    Ok(())
}

/// True when `text` starts with a reserved prefix, case-insensitively, after an optional `/`.
pub fn has_reserved_prefix(text: &str) -> bool {
    let first = text.strip_prefix('/').unwrap_or(text);
    RESERVED_PREFIXES.iter().any(|prefix| {
        first
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    })
}

impl ParameterName {
    /// Validates a name given in the request field `name`.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        Self::parse_field("name", input)
    }

    /// Validates a name given in `field` (e.g. `names[3]`), so violations name the field.
    pub fn parse_field(field: &str, input: &str) -> Result<Self, ApiError> {
        let text = check_common(field, input, "parameter name")?;
        if text.split('/').skip(1).any(str::is_empty) || text == "/" {
            return Err(invalid(
                field,
                "parameter name must not contain empty levels or end with '/'",
            ));
        }
        let levels = text.split('/').filter(|s| !s.is_empty()).count();
        check_levels(field, levels, "parameter name")?;
        if has_reserved_prefix(text) {
            return Err(invalid(
                field,
                "parameter name must not start with 'aws', 'ssm' or 'bosun' (any case)",
            ));
        }
        Ok(ParameterName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// True for `/a/b` style names.
    pub fn is_hierarchical(&self) -> bool {
        self.0.starts_with('/')
    }

    /// Number of levels: `/a/b/c` has 3, `plain` has 1.
    pub fn levels(&self) -> usize {
        self.0.split('/').filter(|s| !s.is_empty()).count()
    }

    /// The path one level up: `/a/b` for `/a/b/c`, `/` for `/c` and for names without `/`
    /// (treated as living at the root).
    pub fn parent_path(&self) -> &str {
        match self.0.rfind('/') {
            Some(0) | None => "/",
            Some(index) => &self.0[..index],
        }
    }

    /// GetParametersByPath semantics: with `recursive`, anything below `path` at any depth;
    /// without, only names directly in `path` (one level).
    pub fn is_under(&self, path: &ParameterPath, recursive: bool) -> bool {
        if recursive {
            if path.is_root() {
                return true;
            }
            self.0
                .strip_prefix(path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        } else {
            self.parent_path() == path.as_str()
        }
    }
}

impl fmt::Display for ParameterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ParameterName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated hierarchy path for GetParametersByPath and `Path` filters: `/` or `/a/b`,
/// stored without a trailing `/`.
///
/// Reserved prefixes are not checked: reading under `/aws` is harmless (nothing can be
/// written there) and SSM accepts such paths for its public parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParameterPath(String);

impl ParameterPath {
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        Self::parse_field("path", input)
    }

    pub fn parse_field(field: &str, input: &str) -> Result<Self, ApiError> {
        let text = check_common(field, input, "path")?;
        if !text.starts_with('/') {
            return Err(invalid(field, "path must start with '/'"));
        }
        let trimmed = text.strip_suffix('/').unwrap_or(text);
        if trimmed.is_empty() {
            return Ok(ParameterPath("/".to_owned()));
        }
        if trimmed.split('/').skip(1).any(str::is_empty) {
            return Err(invalid(field, "path must not contain empty levels"));
        }
        let levels = trimmed.split('/').filter(|s| !s.is_empty()).count();
        // A path holds names one level deeper, so it may use at most 14 levels of its own.
        check_levels(field, levels + 1, "path plus a parameter name")?;
        Ok(ParameterPath(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }
}

impl fmt::Display for ParameterPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version a read selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Version(u64),
    Label(String),
}

/// A read selector: `name`, `name:3` (version) or `name:label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: ParameterName,
    pub version: VersionSelector,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        Self::parse_field("name", input)
    }

    pub fn parse_field(field: &str, input: &str) -> Result<Self, ApiError> {
        let text = input.trim_matches(' ');
        let Some((name, selector)) = text.split_once(':') else {
            return Ok(Selector {
                name: ParameterName::parse_field(field, text)?,
                version: VersionSelector::Latest,
            });
        };
        if name.ends_with(' ') || selector.starts_with(' ') {
            return Err(invalid(field, "selector must not contain spaces"));
        }
        let name = ParameterName::parse_field(field, name)?;
        let version = if !selector.is_empty() && selector.bytes().all(|b| b.is_ascii_digit()) {
            match selector.parse::<u64>() {
                Ok(version) if version >= 1 => VersionSelector::Version(version),
                _ => {
                    return Err(invalid(
                        field,
                        "selector version must be a number from 1 to 2^64-1",
                    ));
                }
            }
        } else {
            if let Err(rule) = label::check_label(selector) {
                return Err(invalid(field, format!("selector {rule}")));
            }
            VersionSelector::Label(selector.to_owned())
        };
        Ok(Selector { name, version })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            VersionSelector::Latest => write!(f, "{}", self.name),
            VersionSelector::Version(version) => write!(f, "{}:{version}", self.name),
            VersionSelector::Label(label) => write!(f, "{}:{label}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_paths() {
        let cases = [("/a/b/c", "/a/b"), ("/c", "/"), ("plain", "/")];
        for (name, parent) in cases {
            let parsed = ParameterName::parse(name).expect("valid name in test");
            assert_eq!(parsed.parent_path(), parent, "{name}");
        }
    }

    #[test]
    fn reserved_prefix_detection() {
        assert!(has_reserved_prefix("AWSx"));
        assert!(has_reserved_prefix("/Bosun/x"));
        assert!(!has_reserved_prefix("/a/aws"));
        assert!(!has_reserved_prefix("as"));
    }
}
