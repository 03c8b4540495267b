//! Parameter definitions (`parameters` in a document) and the checks on supplied values.

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::error::{Errors, ValidationError, key_path};
use crate::template::{self, Reference};

/// Hostile patterns must not make regex compilation take unbounded memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A parameter's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParameterType {
    String,
    StringList,
    Integer,
    Boolean,
    MapList,
    StringMap,
}

impl ParameterType {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "String" => Self::String,
            "StringList" => Self::StringList,
            "Integer" => Self::Integer,
            "Boolean" => Self::Boolean,
            "MapList" => Self::MapList,
            "StringMap" => Self::StringMap,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::StringList => "StringList",
            Self::Integer => "Integer",
            Self::Boolean => "Boolean",
            Self::MapList => "MapList",
            Self::StringMap => "StringMap",
        }
    }
}

impl fmt::Display for ParameterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a document's `parameters`.
#[derive(Debug, Clone)]
pub struct ParameterDefinition {
    pub name: String,
    pub parameter_type: ParameterType,
    pub description: Option<String>,
    /// As written; `None` makes the parameter required.
    pub default: Option<Value>,
    /// Compared as strings, whatever the parameter's type.
    pub allowed_values: Option<Vec<String>>,
    pub allowed_pattern: Option<String>,
    /// `textfield` or `textarea`.
    pub display_type: Option<String>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_chars: Option<u64>,
    pub max_chars: Option<u64>,
    pattern: Option<Regex>,
}

impl ParameterDefinition {
    /// Whether a value must be supplied because there is no default.
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }

    /// Checks one value against this definition and returns it in its typed JSON form
    /// (String → string, StringList → array of strings, Integer → number, Boolean → bool,
    /// StringMap → object, MapList → array of objects).
    ///
    /// Besides the typed form, the SSM wire form (a list of strings, as SendCommand
    /// sends) is accepted: `["3"]` for an Integer, `["true"]` for a Boolean, one JSON
    /// string for a StringMap or MapList.
    pub fn check_value(&self, value: &Value, path: &str) -> Result<Value, Vec<ValidationError>> {
        let mut errors = Errors::default();
        let typed = self.check_into(value, path, &mut errors);
        match typed {
            Some(typed) if errors.is_empty() => Ok(typed),
            _ => Err(errors.0),
        }
    }

    fn check_into(&self, value: &Value, path: &str, errors: &mut Errors) -> Option<Value> {
        let Some(typed) = coerce(self.parameter_type, value) else {
            errors.push(path, format!("type: expected {}", self.parameter_type));
            return None;
        };
        let strings: Vec<String> = match &typed {
            Value::String(text) => vec![text.clone()],
            Value::Array(items) if self.parameter_type == ParameterType::StringList => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            Value::Number(number) => vec![number.to_string()],
            Value::Bool(flag) => vec![flag.to_string()],
            _ => Vec::new(),
        };
        if let Some(allowed) = &self.allowed_values {
            for text in &strings {
                if !allowed.iter().any(|candidate| candidate == text) {
                    errors.push(
                        path,
                        format!(
                            "allowedValues: {text:?} is not one of {}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
        if let (Some(pattern), Some(source)) = (&self.pattern, &self.allowed_pattern) {
            for text in &strings {
                if !pattern.is_match(text) {
                    errors.push(
                        path,
                        format!("allowedPattern: {text:?} does not match {source}"),
                    );
                }
            }
        }
        if matches!(
            self.parameter_type,
            ParameterType::String | ParameterType::StringList
        ) {
            for text in &strings {
                let chars = text.chars().count() as u64;
                if let Some(min) = self.min_chars
                    && chars < min
                {
                    errors.push(
                        path,
                        format!("minChars: {chars} characters, at least {min} required"),
                    );
                }
                if let Some(max) = self.max_chars
                    && chars > max
                {
                    errors.push(
                        path,
                        format!("maxChars: {chars} characters, at most {max} allowed"),
                    );
                }
            }
        }
        if let Value::Array(items) = &typed {
            let count = items.len() as u64;
            if let Some(min) = self.min_items
                && count < min
            {
                errors.push(
                    path,
                    format!("minItems: {count} items, at least {min} required"),
                );
            }
            if let Some(max) = self.max_items
                && count > max
            {
                errors.push(
                    path,
                    format!("maxItems: {count} items, at most {max} allowed"),
                );
            }
        }
        Some(typed)
    }
}

/// Turns a supplied value into the typed form of `parameter_type`, or `None` when it has
/// the wrong shape.
fn coerce(parameter_type: ParameterType, value: &Value) -> Option<Value> {
    // The wire form: one string standing for a scalar, map or list of maps.
    let single = match value {
        Value::Array(items) if items.len() == 1 => items[0].as_str(),
        _ => None,
    };
    match parameter_type {
        ParameterType::String => match value {
            Value::String(_) => Some(value.clone()),
            _ => single.map(|text| Value::String(text.to_owned())),
        },
        ParameterType::StringList => match value {
            Value::String(text) => Some(Value::Array(vec![Value::String(text.clone())])),
            Value::Array(items) if items.iter().all(Value::is_string) => Some(value.clone()),
            _ => None,
        },
        ParameterType::Integer => match value {
            Value::Number(number) if number.is_i64() || number.is_u64() => Some(value.clone()),
            _ => single
                .and_then(|text| text.parse::<i64>().ok())
                .map(Value::from),
        },
        ParameterType::Boolean => match value {
            Value::Bool(_) => Some(value.clone()),
            _ => match single {
                Some("true") => Some(Value::Bool(true)),
                Some("false") => Some(Value::Bool(false)),
                _ => None,
            },
        },
        ParameterType::StringMap => match value {
            Value::Object(_) => Some(value.clone()),
            _ => single
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .filter(Value::is_object),
        },
        ParameterType::MapList => match value {
            Value::Array(items) if items.iter().all(Value::is_object) => Some(value.clone()),
            _ => single
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .filter(|parsed| {
                    parsed
                        .as_array()
                        .is_some_and(|items| items.iter().all(Value::is_object))
                }),
        },
    }
}

/// Parameter values after defaults are applied and every rule is checked, in their typed
/// JSON form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedParameters {
    values: BTreeMap<String, ResolvedValue>,
}

/// One resolved parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedValue {
    pub parameter_type: ParameterType,
    pub value: Value,
}

impl ResolvedParameters {
    pub fn get(&self, name: &str) -> Option<&ResolvedValue> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ResolvedValue)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    pub(crate) fn insert(&mut self, name: String, value: ResolvedValue) {
        self.values.insert(name, value);
    }
}

/// Converts SSM's wire form of parameter values (`map<string, list<string>>`, as
/// SendCommand takes them) into values `resolve_parameters` accepts.
pub fn values_from_wire(wire: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Value> {
    wire.iter()
        .map(|(name, values)| {
            let list = values.iter().cloned().map(Value::String).collect();
            (name.clone(), Value::Array(list))
        })
        .collect()
}

/// Checks supplied values against the definitions and applies defaults.
pub(crate) fn resolve(
    definitions: &BTreeMap<String, ParameterDefinition>,
    supplied: &BTreeMap<String, Value>,
) -> Result<ResolvedParameters, Vec<ValidationError>> {
    let mut errors = Errors::default();
    for name in supplied.keys() {
        if !definitions.contains_key(name) {
            errors.push(key_path("parameters", name), "unknown parameter");
        }
    }
    let mut resolved = ResolvedParameters::default();
    for (name, definition) in definitions {
        let path = key_path("parameters", name);
        let value = match (supplied.get(name), &definition.default) {
            (Some(value), _) => value,
            (None, Some(default)) => default,
            (None, None) => {
                errors.push(path, "required");
                continue;
            }
        };
        // Values holding `{{ssm:...}}` are checked once resolved, at render time.
        let typed = if value_has_ssm_reference(value) {
            let typed = coerce(definition.parameter_type, value);
            if typed.is_none() {
                errors.push(
                    &path,
                    format!("type: expected {}", definition.parameter_type),
                );
            }
            typed
        } else {
            definition.check_into(value, &path, &mut errors)
        };
        if let Some(typed) = typed {
            resolved.insert(
                name.clone(),
                ResolvedValue {
                    parameter_type: definition.parameter_type,
                    value: typed,
                },
            );
        }
    }
    errors.into_result(resolved)
}

const DEFINITION_FIELDS: &[&str] = &[
    "type",
    "description",
    "default",
    "allowedValues",
    "allowedPattern",
    "displayType",
    "minItems",
    "maxItems",
    "minChars",
    "maxChars",
];

fn valid_parameter_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses the `parameters` object of a document.
pub(crate) fn parse_definitions(
    value: &Value,
    errors: &mut Errors,
) -> BTreeMap<String, ParameterDefinition> {
    let mut definitions = BTreeMap::new();
    let Value::Object(entries) = value else {
        errors.push("parameters", "must be an object");
        return definitions;
    };
    for (name, entry) in entries {
        let path = key_path("parameters", name);
        if !valid_parameter_name(name) {
            errors.push(
                &path,
                "parameter names may contain only letters, digits, '_' and '-'",
            );
            continue;
        }
        let Value::Object(fields) = entry else {
            errors.push(&path, "must be an object");
            continue;
        };
        if let Some(definition) = parse_definition(name, fields, &path, errors) {
            definitions.insert(name.clone(), definition);
        }
    }
    definitions
}

fn parse_definition(
    name: &str,
    fields: &Map<String, Value>,
    path: &str,
    errors: &mut Errors,
) -> Option<ParameterDefinition> {
    for key in fields.keys() {
        if !DEFINITION_FIELDS.contains(&key.as_str()) {
            errors.push(key_path(path, key), "unknown field");
        }
    }
    let parameter_type = match fields.get("type") {
        None => {
            errors.push(key_path(path, "type"), "required");
            None
        }
        Some(Value::String(text)) => {
            let parsed = ParameterType::from_name(text);
            if parsed.is_none() {
                errors.push(
                    key_path(path, "type"),
                    format!(
                        "{text:?} is not one of String, StringList, Integer, Boolean, MapList, StringMap"
                    ),
                );
            }
            parsed
        }
        Some(_) => {
            errors.push(key_path(path, "type"), "must be a string");
            None
        }
    };
    let description = optional_string(fields, "description", path, errors);
    let display_type = optional_string(fields, "displayType", path, errors);
    if let Some(display) = &display_type
        && display != "textfield"
        && display != "textarea"
    {
        errors.push(
            key_path(path, "displayType"),
            "must be textfield or textarea",
        );
    }
    let allowed_pattern = optional_string(fields, "allowedPattern", path, errors);
    // Anchored: a value must match as a whole, not merely contain a match.
    let pattern = allowed_pattern.as_ref().and_then(|source| {
        match RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Some(regex),
            Err(_) => {
                errors.push(
                    key_path(path, "allowedPattern"),
                    "not a valid regular expression",
                );
                None
            }
        }
    });
    let allowed_values = match fields.get("allowedValues") {
        None => None,
        Some(Value::Array(items)) => {
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                match scalar_text(item) {
                    Some(text) => values.push(text),
                    None => errors.push(
                        format!("{path}.allowedValues[{index}]"),
                        "must be a string, number or boolean",
                    ),
                }
            }
            Some(values)
        }
        Some(_) => {
            errors.push(key_path(path, "allowedValues"), "must be an array");
            None
        }
    };
    let min_items = optional_count(fields, "minItems", path, errors);
    let max_items = optional_count(fields, "maxItems", path, errors);
    let min_chars = optional_count(fields, "minChars", path, errors);
    let max_chars = optional_count(fields, "maxChars", path, errors);
    if let (Some(min), Some(max)) = (min_items, max_items)
        && min > max
    {
        errors.push(key_path(path, "minItems"), "greater than maxItems");
    }
    if let (Some(min), Some(max)) = (min_chars, max_chars)
        && min > max
    {
        errors.push(key_path(path, "minChars"), "greater than maxChars");
    }
    let definition = ParameterDefinition {
        name: name.to_owned(),
        parameter_type: parameter_type?,
        description,
        default: fields.get("default").cloned(),
        allowed_values,
        allowed_pattern,
        display_type,
        min_items,
        max_items,
        min_chars,
        max_chars,
        pattern,
    };
    if let Some(default) = &definition.default {
        check_default(&definition, default, &key_path(path, "default"), errors);
    }
    Some(definition)
}

/// A default is checked like a supplied value, except that one holding `{{ssm:...}}`
/// references can only be checked once they are resolved, at render time.
fn check_default(
    definition: &ParameterDefinition,
    default: &Value,
    path: &str,
    errors: &mut Errors,
) {
    let strings: Vec<&str> = match default {
        Value::String(text) => vec![text],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut has_ssm = false;
    for text in &strings {
        for piece in template::split(text) {
            if let template::Piece::Reference(token, reference) = piece {
                match reference {
                    Reference::Ssm { .. } => has_ssm = true,
                    // Defaults may not refer to other parameters (SSM has no
                    // cross-referencing of defaults).
                    _ => errors.push(
                        path,
                        format!("{token}: only {{{{ssm:...}}}} references are allowed in defaults"),
                    ),
                }
            }
        }
    }
    if !has_ssm {
        definition.check_into(default, path, errors);
    }
}

/// Whether any string inside `value` holds a `{{ssm:...}}` reference.
pub(crate) fn value_has_ssm_reference(value: &Value) -> bool {
    match value {
        Value::String(text) => template::split(text)
            .iter()
            .any(|piece| matches!(piece, template::Piece::Reference(_, Reference::Ssm { .. }))),
        Value::Array(items) => items.iter().any(value_has_ssm_reference),
        Value::Object(fields) => fields.values().any(value_has_ssm_reference),
        _ => false,
    }
}

/// The text of a scalar: strings as they are, numbers and booleans as JSON writes them.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn optional_string(
    fields: &Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<String> {
    match fields.get(key)? {
        Value::String(text) => Some(text.clone()),
        _ => {
            errors.push(key_path(path, key), "must be a string");
            None
        }
    }
}

fn optional_count(
    fields: &Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<u64> {
    let value = fields.get(key)?;
    let count = value.as_u64();
    if count.is_none() {
        errors.push(key_path(path, key), "must be a non-negative integer");
    }
    count
}
