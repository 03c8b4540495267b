//! IAM-style policy documents: parsing with strict validation, and evaluation.
//!
//! Evaluation is deny by default; an explicit `Deny` in any statement of any document wins
//! over every `Allow`. Because the default is deny, a typo must never widen or narrow a
//! statement silently: unknown fields, operators and condition keys are parse errors, not
//! ignored.
//!
//! Matching rules:
//! - `Action` patterns match case-insensitively (IAM's rule); `Resource` patterns and
//!   condition values case-sensitively.
//! - In patterns `*` matches any run of characters, `/` included, and `?` exactly one.
//! - Several values for one condition key: any may match (OR). Several keys, or several
//!   operators: all must match (AND).
//! - A condition on a tag the resource lacks: `StringEquals` and `StringLike` do not match;
//!   the negated `StringNotEquals` and `StringNotLike` do match (a missing tag is "not equal"
//!   to every value), as IAM does for negated operators. So "Deny unless env=dev" is written
//!   `Deny` + `StringNotEquals {"bosun:ResourceTag/env": "dev"}` and also denies untagged
//!   resources, which is the safe reading.
//! - `bosun:PrincipalName` is the caller's full principal string, e.g. `user/alice`, not the
//!   bare name, so that `user/ops` and `service/ops` cannot be confused.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::principal::Principal;

/// Most statements in one document, and most entries in one `Action`, `Resource` or
/// condition value list; bounds the cost of evaluating one request.
pub const MAX_ENTRIES: usize = 100;
/// Longest pattern or condition value accepted, in characters.
pub const MAX_PATTERN_LEN: usize = 1024;

const RESOURCE_TAG_PREFIX: &str = "bosun:ResourceTag/";
const PRINCIPAL_NAME_KEY: &str = "bosun:PrincipalName";

/// A rule a policy document broke, and where: `Statement[1].Effect: must be Allow or Deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// Where in the document, e.g. `Statement[1].Effect` or `Statement[0].Action[2]`.
    pub path: String,
    pub rule: String,
}

impl PolicyError {
    fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        PolicyError {
            path: path.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

impl std::error::Error for PolicyError {}

/// A validated policy document. Made only by parsing (`parse`, or deserializing, which
/// validates the same way), so every value of this type obeys the rules above. Serializes
/// to the canonical form: `Statement` always a list, `Action`/`Resource` always lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct PolicyDocument {
    #[serde(rename = "Version", skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(rename = "Statement")]
    statements: Vec<Statement>,
}

/// One statement of a document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid", skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(rename = "Effect")]
    pub effect: Effect,
    #[serde(rename = "Action")]
    pub actions: Vec<String>,
    #[serde(rename = "Resource")]
    pub resources: Vec<String>,
    #[serde(
        rename = "Condition",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_conditions"
    )]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// One operator applied to one key, e.g. `StringEquals` on `bosun:ResourceTag/env`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub operator: ConditionOperator,
    pub key: ConditionKey,
    /// Any may match (OR) for the positive operators; none may match for the negated ones.
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConditionOperator {
    StringEquals,
    StringNotEquals,
    StringLike,
    StringNotLike,
}

impl ConditionOperator {
    fn as_str(self) -> &'static str {
        match self {
            ConditionOperator::StringEquals => "StringEquals",
            ConditionOperator::StringNotEquals => "StringNotEquals",
            ConditionOperator::StringLike => "StringLike",
            ConditionOperator::StringNotLike => "StringNotLike",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "StringEquals" => Some(ConditionOperator::StringEquals),
            "StringNotEquals" => Some(ConditionOperator::StringNotEquals),
            "StringLike" => Some(ConditionOperator::StringLike),
            "StringNotLike" => Some(ConditionOperator::StringNotLike),
            _ => None,
        }
    }
}

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionKey {
    /// `bosun:ResourceTag/<key>`: the value of the resource's tag `<key>`.
    ResourceTag(String),
    /// `bosun:PrincipalName`: the caller's principal string, e.g. `user/alice`.
    PrincipalName,
}

impl fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionKey::ResourceTag(tag) => write!(f, "{RESOURCE_TAG_PREFIX}{tag}"),
            ConditionKey::PrincipalName => f.write_str(PRINCIPAL_NAME_KEY),
        }
    }
}

impl PolicyDocument {
    /// Parses and validates a JSON policy document.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|error| PolicyError::new("", format!("not valid JSON: {error}")))?;
        Self::from_value(&value)
    }

    /// The `Version` string, if the document has one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    fn from_value(value: &Value) -> Result<Self, PolicyError> {
        let object = value
            .as_object()
            .ok_or_else(|| PolicyError::new("", "must be a JSON object"))?;
        let mut version = None;
        let mut statements = None;
        for (field, field_value) in object {
            match field.as_str() {
                "Version" => {
                    version = Some(
                        field_value
                            .as_str()
                            .ok_or_else(|| PolicyError::new("Version", "must be a string"))?
                            .to_owned(),
                    )
                }
                // IAM allows an optional document id; accepted and dropped.
                "Id" => {
                    field_value
                        .as_str()
                        .ok_or_else(|| PolicyError::new("Id", "must be a string"))?;
                }
                "Statement" => statements = Some(parse_statements(field_value)?),
                other => return Err(PolicyError::new(other, "unknown field")),
            }
        }
        let statements = statements.ok_or_else(|| PolicyError::new("Statement", "is required"))?;
        Ok(PolicyDocument {
            version,
            statements,
        })
    }
}

impl TryFrom<Value> for PolicyDocument {
    type Error = PolicyError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(&value)
    }
}

fn parse_statements(value: &Value) -> Result<Vec<Statement>, PolicyError> {
    match value {
        Value::Object(_) => Ok(vec![parse_statement(value, "Statement")?]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(PolicyError::new("Statement", "must not be empty"));
            }
            if items.len() > MAX_ENTRIES {
                return Err(PolicyError::new(
                    "Statement",
                    format!("must have at most {MAX_ENTRIES} statements"),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(index, item)| parse_statement(item, &format!("Statement[{index}]")))
                .collect()
        }
        _ => Err(PolicyError::new(
            "Statement",
            "must be a statement or a list of statements",
        )),
    }
}

fn parse_statement(value: &Value, path: &str) -> Result<Statement, PolicyError> {
    let object = value
        .as_object()
        .ok_or_else(|| PolicyError::new(path, "must be an object"))?;
    let mut sid = None;
    let mut effect = None;
    let mut actions = None;
    let mut resources = None;
    let mut conditions = Vec::new();
    for (field, field_value) in object {
        let field_path = format!("{path}.{field}");
        match field.as_str() {
            "Sid" => {
                sid = Some(
                    field_value
                        .as_str()
                        .ok_or_else(|| PolicyError::new(&field_path, "must be a string"))?
                        .to_owned(),
                )
            }
            "Effect" => {
                effect = Some(match field_value.as_str() {
                    Some("Allow") => Effect::Allow,
                    Some("Deny") => Effect::Deny,
                    _ => return Err(PolicyError::new(field_path, "must be Allow or Deny")),
                })
            }
            "Action" => {
                actions = Some(parse_patterns(
                    field_value,
                    &field_path,
                    validate_action,
                    "must be * or <area>:<Action>, e.g. parameters:GetParameter",
                )?)
            }
            "Resource" => {
                resources = Some(parse_patterns(
                    field_value,
                    &field_path,
                    validate_resource,
                    "must be * or <type>:<id>, e.g. parameter:/app/*",
                )?)
            }
            "Condition" => conditions = parse_conditions(field_value, &field_path)?,
            // NotAction, NotResource and Principal are IAM features Bosun does not implement;
            // ignoring them would change what the statement means, so they are errors too.
            _ => return Err(PolicyError::new(field_path, "unknown field")),
        }
    }
    Ok(Statement {
        sid,
        effect: effect.ok_or_else(|| PolicyError::new(format!("{path}.Effect"), "is required"))?,
        actions: actions
            .ok_or_else(|| PolicyError::new(format!("{path}.Action"), "is required"))?,
        resources: resources
            .ok_or_else(|| PolicyError::new(format!("{path}.Resource"), "is required"))?,
        conditions,
    })
}

/// A string or a non-empty list of strings, each passing `validate`.
fn parse_patterns(
    value: &Value,
    path: &str,
    validate: fn(&str) -> bool,
    rule: &str,
) -> Result<Vec<String>, PolicyError> {
    let check = |pattern: &str, path: &str| -> Result<String, PolicyError> {
        if pattern.chars().count() > MAX_PATTERN_LEN {
            return Err(PolicyError::new(
                path,
                format!("must be at most {MAX_PATTERN_LEN} characters"),
            ));
        }
        if !validate(pattern) {
            return Err(PolicyError::new(path, rule));
        }
        Ok(pattern.to_owned())
    };
    match value {
        Value::String(pattern) => Ok(vec![check(pattern, path)?]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(PolicyError::new(path, "must not be empty"));
            }
            if items.len() > MAX_ENTRIES {
                return Err(PolicyError::new(
                    path,
                    format!("must have at most {MAX_ENTRIES} entries"),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let item_path = format!("{path}[{index}]");
                    let pattern = item
                        .as_str()
                        .ok_or_else(|| PolicyError::new(&item_path, "must be a string"))?;
                    check(pattern, &item_path)
                })
                .collect()
        }
        _ => Err(PolicyError::new(
            path,
            "must be a string or a list of strings",
        )),
    }
}

/// `*`, or `<area>:<Action>` where both parts are non-empty and may use `*` and `?`.
fn validate_action(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((area, action)) = pattern.split_once(':') else {
        return false;
    };
    let is_wild = |c: char| c == '*' || c == '?';
    !area.is_empty()
        && !action.is_empty()
        && area
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_wild(c))
        && action
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || is_wild(c))
}

/// `*`, or `<type>:<id>`: a non-empty type of letters, digits, `-` and wildcards, and a
/// non-empty id of any printable characters (ids such as parameter paths contain `/`, `:`).
fn validate_resource(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((kind, id)) = pattern.split_once(':') else {
        return false;
    };
    !kind.is_empty()
        && !id.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*' || c == '?')
        && !id.chars().any(char::is_control)
}

fn parse_conditions(value: &Value, path: &str) -> Result<Vec<Condition>, PolicyError> {
    let operators = value
        .as_object()
        .ok_or_else(|| PolicyError::new(path, "must be an object"))?;
    let mut conditions = Vec::new();
    for (operator_name, keys) in operators {
        let operator_path = format!("{path}.{operator_name}");
        let operator = ConditionOperator::parse(operator_name).ok_or_else(|| {
            PolicyError::new(
                &operator_path,
                "unknown condition operator; use StringEquals, StringNotEquals, StringLike or StringNotLike",
            )
        })?;
        let keys = keys
            .as_object()
            .ok_or_else(|| PolicyError::new(&operator_path, "must be an object"))?;
        if keys.is_empty() {
            return Err(PolicyError::new(&operator_path, "must not be empty"));
        }
        for (key_name, values) in keys {
            let key_path = format!("{operator_path}.{key_name}");
            let key = parse_condition_key(key_name).ok_or_else(|| {
                PolicyError::new(
                    &key_path,
                    "unknown condition key; use bosun:ResourceTag/<key> or bosun:PrincipalName",
                )
            })?;
            // Condition values are literals or, for the Like operators, patterns; any text is
            // a valid pattern, so only shape and length are checked.
            let values = parse_patterns(values, &key_path, |_| true, "")?;
            conditions.push(Condition {
                operator,
                key,
                values,
            });
        }
    }
    Ok(conditions)
}

fn parse_condition_key(name: &str) -> Option<ConditionKey> {
    if name == PRINCIPAL_NAME_KEY {
        return Some(ConditionKey::PrincipalName);
    }
    let tag = name.strip_prefix(RESOURCE_TAG_PREFIX)?;
    if tag.is_empty() || tag.chars().any(char::is_control) {
        return None;
    }
    Some(ConditionKey::ResourceTag(tag.to_owned()))
}

/// Writes conditions back in IAM's shape: `{operator: {key: [values]}}`.
fn serialize_conditions<S: Serializer>(
    conditions: &[Condition],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut by_operator: BTreeMap<&str, BTreeMap<String, &Vec<String>>> = BTreeMap::new();
    for condition in conditions {
        by_operator
            .entry(condition.operator.as_str())
            .or_default()
            .insert(condition.key.to_string(), &condition.values);
    }
    let mut map = serializer.serialize_map(Some(by_operator.len()))?;
    for (operator, keys) in &by_operator {
        map.serialize_entry(operator, keys)?;
    }
    map.end()
}

/// One question for `evaluate`: may `principal` do `action` on `resource`?
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    pub principal: &'a Principal,
    /// E.g. `parameters:GetParameter`.
    pub action: &'a str,
    /// E.g. `parameter:/app/db/url` or `node:mi-0123`.
    pub resource: &'a str,
    pub resource_tags: &'a BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// Evaluates `request` against all of `policies`: any matching `Deny` gives `ExplicitDeny`;
/// else any matching `Allow` gives `Allow`; else `ImplicitDeny`.
pub fn evaluate(policies: &[PolicyDocument], request: &AccessRequest) -> Decision {
    let mut allowed = false;
    for statement in policies.iter().flat_map(|document| &document.statements) {
        if !statement.matches(request) {
            continue;
        }
        match statement.effect {
            Effect::Deny => return Decision::ExplicitDeny,
            Effect::Allow => allowed = true,
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Like [`evaluate`], for grants that must be explicit (running as `root`): an `Allow`
/// counts only from a statement whose `Resource` list names `request.resource` literally
/// (`runas:root`), so wildcards such as `*` or `runas:*` never grant it. A matching `Deny`
/// still wins, wildcards included.
pub fn evaluate_explicit(policies: &[PolicyDocument], request: &AccessRequest) -> Decision {
    let mut allowed = false;
    for statement in policies.iter().flat_map(|document| &document.statements) {
        if !statement.matches(request) {
            continue;
        }
        match statement.effect {
            Effect::Deny => return Decision::ExplicitDeny,
            Effect::Allow => {
                allowed |= statement
                    .resources
                    .iter()
                    .any(|pattern| pattern == request.resource);
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

impl Statement {
    fn matches(&self, request: &AccessRequest) -> bool {
        self.actions
            .iter()
            .any(|pattern| wildcard_match(pattern, request.action, true))
            && self
                .resources
                .iter()
                .any(|pattern| wildcard_match(pattern, request.resource, false))
            && self
                .conditions
                .iter()
                .all(|condition| condition.matches(request))
    }
}

impl Condition {
    fn matches(&self, request: &AccessRequest) -> bool {
        let actual: Option<Cow<'_, str>> = match &self.key {
            ConditionKey::ResourceTag(tag) => request
                .resource_tags
                .get(tag)
                .map(|value| Cow::Borrowed(value.as_str())),
            ConditionKey::PrincipalName => Some(Cow::Owned(request.principal.to_string())),
        };
        let equals_any = |actual: &str| self.values.iter().any(|value| value == actual);
        let like_any = |actual: &str| {
            self.values
                .iter()
                .any(|pattern| wildcard_match(pattern, actual, false))
        };
        match self.operator {
            ConditionOperator::StringEquals => actual.is_some_and(|actual| equals_any(&actual)),
            ConditionOperator::StringNotEquals => actual.is_none_or(|actual| !equals_any(&actual)),
            ConditionOperator::StringLike => actual.is_some_and(|actual| like_any(&actual)),
            ConditionOperator::StringNotLike => actual.is_none_or(|actual| !like_any(&actual)),
        }
    }
}

/// Glob match: `*` any run of characters (`/` included), `?` exactly one character.
///
/// Greedy with backtracking to the last `*` only, so the cost is O(pattern × text) at worst,
/// never exponential, whatever the pattern.
pub(crate) fn wildcard_match(pattern: &str, text: &str, ignore_ascii_case: bool) -> bool {
    let same = |p: char, t: char| {
        if ignore_ascii_case {
            p.eq_ignore_ascii_case(&t)
        } else {
            p == t
        }
    };
    let mut pattern_rest = pattern.chars();
    let mut text_rest = text.chars();
    // After the last `*` seen: the pattern after it, and the text it has not yet swallowed.
    let mut last_star: Option<(std::str::Chars<'_>, std::str::Chars<'_>)> = None;
    loop {
        let text_before = text_rest.clone();
        let Some(text_char) = text_rest.next() else {
            // Text used up: only trailing stars may remain.
            return pattern_rest.all(|c| c == '*');
        };
        match pattern_rest.next() {
            Some('*') => {
                // Let the star match nothing first; give it more text on a later mismatch.
                last_star = Some((pattern_rest.clone(), text_before.clone()));
                text_rest = text_before;
                continue;
            }
            Some('?') => continue,
            Some(pattern_char) if same(pattern_char, text_char) => continue,
            _ => {}
        }
        match &mut last_star {
            Some((star_pattern, star_text)) => {
                // The star swallows one more character and matching restarts after it.
                star_text.next();
                pattern_rest = star_pattern.clone();
                text_rest = star_text.clone();
            }
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        let cases = [
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*ab", "aab", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("/app/*", "/app/db/url", true),
            ("/app/*", "/apps", false),
            ("**", "x", true),
            ("*?", "", false),
            (
                "*x*x*x*x*x*x*y",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                false,
            ),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                wildcard_match(pattern, text, false),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
        assert!(wildcard_match("Params:get*", "params:GetParameter", true));
        assert!(!wildcard_match("Params:get*", "params:GetParameter", false));
    }

    #[test]
    fn explicit_grants_need_the_literal_resource() {
        let principal = Principal::User("alice".into());
        let tags = BTreeMap::new();
        let request = AccessRequest {
            principal: &principal,
            action: "sessions:RunAs",
            resource: "runas:root",
            resource_tags: &tags,
        };
        let parse = |json: &str| PolicyDocument::parse(json).expect("valid document");
        let wildcard =
            parse(r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#);
        let runas_any = parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "sessions:RunAs", "Resource": "runas:*"}}"#,
        );
        let literal = parse(
            r#"{"Statement": {"Effect": "Allow", "Action": "sessions:*", "Resource": ["runas:root"]}}"#,
        );
        let deny = parse(
            r#"{"Statement": {"Effect": "Deny", "Action": "sessions:RunAs", "Resource": "runas:*"}}"#,
        );
        assert_eq!(
            evaluate(std::slice::from_ref(&wildcard), &request),
            Decision::Allow
        );
        assert_eq!(
            evaluate_explicit(std::slice::from_ref(&wildcard), &request),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate_explicit(&[runas_any], &request),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate_explicit(&[wildcard, literal.clone()], &request),
            Decision::Allow
        );
        assert_eq!(
            evaluate_explicit(&[literal, deny], &request),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn canonical_serialization_round_trips() {
        let document = PolicyDocument::parse(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "parameters:*",
                "Resource": "parameter:/app/*",
                "Condition": {"StringEquals": {"bosun:ResourceTag/env": "dev"}}}}"#,
        )
        .expect("valid document");
        let json = serde_json::to_string(&document).expect("serializes");
        assert_eq!(
            json,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["parameters:*"],"Resource":["parameter:/app/*"],"Condition":{"StringEquals":{"bosun:ResourceTag/env":["dev"]}}}]}"#
        );
        let back: PolicyDocument = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, document);
    }

    #[test]
    fn deserializing_validates() {
        let result: Result<PolicyDocument, _> = serde_json::from_str(
            r#"{"Statement": [{"Effect": "Allw", "Action": "*", "Resource": "*"}]}"#,
        );
        let error = result.expect_err("bad effect must not deserialize");
        assert!(
            error
                .to_string()
                .contains("Statement[0].Effect: must be Allow or Deny")
        );
    }
}
