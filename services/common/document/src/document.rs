//! Parsing and structural validation of Command, Automation and Session documents.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::actions::{ActionScope, canonical_action_name, lookup_action};
use crate::error::{Errors, ValidationError, index_path, key_path};
use crate::parameters::{self, ParameterDefinition, ParameterType, ResolvedParameters};
use crate::template::{self, Piece, Reference};

/// SSM's document size limit: "The size limit of a document is 64 KB".
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// How deeply content may nest. Both parsers refuse deeper input on their own (YAML at 64
/// levels, JSON at 128), but at different depths; one lower limit for both keeps every
/// accepted document convertible to the other format. Real documents nest far less.
pub const MAX_NESTING_DEPTH: usize = 32;

/// The built-in variables SSM offers in Automation runbooks.
pub const AUTOMATION_BUILTINS: &[&str] = &[
    "global:ACCOUNT_ID",
    "global:DATE",
    "global:DATE_TIME",
    "global:AWS_PARTITION",
    "global:REGION",
    "automation:EXECUTION_ID",
];

/// How document content is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// JSON when the content starts with `{` (after white space), YAML otherwise.
    pub fn detect(content: &str) -> Self {
        if content.trim_start().starts_with('{') {
            Self::Json
        } else {
            Self::Yaml
        }
    }
}

/// The kinds of document the model understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    Command,
    Automation,
    Session,
}

impl DocumentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "Command",
            Self::Automation => "Automation",
            Self::Session => "Session",
        }
    }
}

impl fmt::Display for DocumentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sessionType` of a Session document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    StandardStream,
    InteractiveCommands,
    NonInteractiveCommands,
    Port,
}

impl SessionType {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Standard_Stream" => Self::StandardStream,
            "InteractiveCommands" => Self::InteractiveCommands,
            "NonInteractiveCommands" => Self::NonInteractiveCommands,
            "Port" => Self::Port,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardStream => "Standard_Stream",
            Self::InteractiveCommands => "InteractiveCommands",
            Self::NonInteractiveCommands => "NonInteractiveCommands",
            Self::Port => "Port",
        }
    }
}

/// A 2.2 step precondition: `StringEquals` with two operands, either of which may be
/// `platformType` or hold parameter references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precondition {
    pub string_equals: [String; 2],
}

/// One step: a `mainSteps` entry, or a `runtimeConfig` plugin property in schema 1.2.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// As written in the document (`bosun:` aliases kept).
    pub action: String,
    /// The `aws:` spelling.
    pub canonical_action: String,
    /// Always an object.
    pub inputs: Value,
    pub precondition: Option<Precondition>,
    /// Other step fields as written (Automation's `onFailure`, `nextStep`, `outputs`, ...).
    pub settings: Map<String, Value>,
    /// JSON path of the step (`mainSteps[0]`).
    pub path: String,
    /// JSON path of the action name, where errors about the action point.
    pub action_path: String,
    /// JSON path of the inputs object.
    pub inputs_path: String,
}

/// The body of a Session document.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub session_type: SessionType,
    pub inputs: Value,
    pub properties: Value,
}

/// A parsed and structurally valid document.
#[derive(Debug, Clone)]
pub struct Document {
    content: Value,
    document_type: DocumentType,
    schema_version: String,
    description: Option<String>,
    parameters: BTreeMap<String, ParameterDefinition>,
    steps: Vec<Step>,
    session: Option<SessionSpec>,
    assume_role: Option<String>,
}

/// Why `to_yaml` failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the document as yaml: {0}")]
pub struct ConvertError(String);

impl Document {
    /// Parses content and checks everything SSM checks when a document is created:
    /// schema, fields, parameter definitions, step names, known action names, required
    /// inputs of the actions Bosun runs, and every `{{ ... }}` reference.
    ///
    /// Whether Bosun can run the actions is a separate check, [`Document::check_supported`],
    /// so that any SSM document can be loaded and inspected.
    pub fn parse(content: &str, format: Format) -> Result<Document, Vec<ValidationError>> {
        if content.len() > MAX_CONTENT_BYTES {
            return Err(vec![ValidationError::new(
                "",
                format!(
                    "content is {} bytes, the limit is {MAX_CONTENT_BYTES}",
                    content.len()
                ),
            )]);
        }
        let mut content_value = match format {
            Format::Json => serde_json::from_str::<Value>(content).map_err(|error| {
                vec![ValidationError::new("", format!("invalid json: {error}"))]
            })?,
            Format::Yaml => serde_saphyr::from_str::<Value>(content).map_err(|error| {
                // The message is followed by a source snippet; the first line says it all.
                let message = error.to_string();
                let first = message.lines().next().unwrap_or_default().to_owned();
                let first = first.strip_prefix("error: ").unwrap_or(&first).to_owned();
                vec![ValidationError::new("", format!("invalid yaml: {first}"))]
            })?,
        };
        if nesting_depth(&content_value) > MAX_NESTING_DEPTH {
            return Err(vec![ValidationError::new(
                "",
                format!("content nests deeper than {MAX_NESTING_DEPTH} levels"),
            )]);
        }
        if format == Format::Yaml {
            keep_yaml_scalar_text(content, &mut content_value);
        }
        parse_value(content_value)
    }

    /// [`Document::parse`] followed by [`Document::check_supported`]: what document creation
    /// in Bosun accepts.
    pub fn parse_supported(
        content: &str,
        format: Format,
    ) -> Result<Document, Vec<ValidationError>> {
        let document = Self::parse(content, format)?;
        document.check_supported()?;
        Ok(document)
    }

    /// Rejects steps whose action Bosun's agent or automation engine cannot run yet.
    pub fn check_supported(&self) -> Result<(), Vec<ValidationError>> {
        let mut errors = Errors::default();
        let scope = scope_of(self.document_type);
        for step in &self.steps {
            if let Some(info) = lookup_action(&step.action, scope)
                && !info.supported
            {
                errors.push(
                    &step.action_path,
                    format!("{} is not supported by Bosun yet", step.action),
                );
            }
        }
        errors.into_result(())
    }

    pub fn document_type(&self) -> DocumentType {
        self.document_type
    }

    pub fn schema_version(&self) -> &str {
        &self.schema_version
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    pub fn parameters(&self) -> &BTreeMap<String, ParameterDefinition> {
        &self.parameters
    }

    /// Steps in document order; empty for Session documents.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn session(&self) -> Option<&SessionSpec> {
        self.session.as_ref()
    }

    /// Automation's `assumeRole`, as written.
    pub fn assume_role(&self) -> Option<&str> {
        self.assume_role.as_deref()
    }

    /// The content as a JSON tree.
    pub fn content(&self) -> &Value {
        &self.content
    }

    pub fn to_json(&self) -> String {
        // Serialising a `Value` cannot fail: every map key is a string.
        serde_json::to_string_pretty(&self.content).unwrap_or_default()
    }

    pub fn to_yaml(&self) -> Result<String, ConvertError> {
        serde_saphyr::to_string(&self.content).map_err(|error| ConvertError(error.to_string()))
    }

    /// Writes the content in `format`.
    pub fn to_format(&self, format: Format) -> Result<String, ConvertError> {
        match format {
            Format::Json => Ok(self.to_json()),
            Format::Yaml => self.to_yaml(),
        }
    }

    /// Checks supplied values against the parameter definitions and applies defaults.
    /// Values may be typed JSON or SSM's wire form (see [`crate::values_from_wire`]).
    pub fn resolve_parameters(
        &self,
        supplied: &BTreeMap<String, Value>,
    ) -> Result<ResolvedParameters, Vec<ValidationError>> {
        parameters::resolve(&self.parameters, supplied)
    }
}

/// Levels of arrays and objects; recursion is bounded by the parsers' own limits.
fn nesting_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting_depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(nesting_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn scope_of(document_type: DocumentType) -> ActionScope {
    match document_type {
        DocumentType::Automation => ActionScope::Automation,
        DocumentType::Command | DocumentType::Session => ActionScope::Command,
    }
}

/// YAML reads `True`, `yes` or `1` in `allowedValues` and `default` as booleans and numbers,
/// which would make `allowedValues: [True, False]` of a String parameter unusable (A.2 in the
/// notes compares against the text `"Uninstall True"`). Reading those fields a second time
/// into strings gives the scalars' text as written; it replaces the typed reading for String
/// and StringList parameters only.
fn keep_yaml_scalar_text(content: &str, tree: &mut Value) {
    #[derive(Deserialize)]
    struct AllowedValuesPass {
        #[serde(default)]
        parameters: BTreeMap<String, AllowedValuesEntry>,
    }
    #[derive(Deserialize)]
    struct AllowedValuesEntry {
        #[serde(rename = "allowedValues")]
        allowed_values: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    struct DefaultPass {
        #[serde(default)]
        parameters: BTreeMap<String, DefaultEntry>,
    }
    #[derive(Deserialize)]
    struct DefaultEntry {
        default: Option<String>,
    }

    let Some(Value::Object(definitions)) = tree.get_mut("parameters") else {
        return;
    };
    // Either pass fails as a whole when some parameter has a non-scalar there; the typed
    // reading then stands.
    let allowed = serde_saphyr::from_str::<AllowedValuesPass>(content).ok();
    let defaults = serde_saphyr::from_str::<DefaultPass>(content).ok();
    for (name, definition) in definitions.iter_mut() {
        let Value::Object(fields) = definition else {
            continue;
        };
        let is_text = matches!(
            fields.get("type").and_then(Value::as_str),
            Some("String" | "StringList")
        );
        if !is_text {
            continue;
        }
        if let Some(Some(values)) = allowed
            .as_ref()
            .and_then(|pass| pass.parameters.get(name))
            .map(|entry| entry.allowed_values.clone())
            && let Some(Value::Array(items)) = fields.get("allowedValues")
            && items.len() == values.len()
        {
            fields.insert(
                "allowedValues".to_owned(),
                Value::Array(values.into_iter().map(Value::String).collect()),
            );
        }
        if let Some(Some(text)) = defaults
            .as_ref()
            .and_then(|pass| pass.parameters.get(name))
            .map(|entry| entry.default.clone())
            && matches!(
                fields.get("default"),
                Some(Value::Bool(_) | Value::Number(_))
            )
        {
            fields.insert("default".to_owned(), Value::String(text));
        }
    }
}

const COMMAND_12_FIELDS: &[&str] = &[
    "schemaVersion",
    "description",
    "parameters",
    "runtimeConfig",
];
const COMMAND_2X_FIELDS: &[&str] = &["schemaVersion", "description", "parameters", "mainSteps"];
const AUTOMATION_FIELDS: &[&str] = &[
    "schemaVersion",
    "description",
    "parameters",
    "mainSteps",
    "outputs",
    "files",
    "assumeRole",
];
const SESSION_FIELDS: &[&str] = &[
    "schemaVersion",
    "description",
    "sessionType",
    "inputs",
    "parameters",
    "properties",
];
const COMMAND_STEP_FIELDS: &[&str] = &["action", "name", "inputs", "precondition"];
const AUTOMATION_STEP_FIELDS: &[&str] = &[
    "name",
    "action",
    "inputs",
    "description",
    "maxAttempts",
    "timeoutSeconds",
    "onFailure",
    "onCancel",
    "isEnd",
    "nextStep",
    "isCritical",
    "outputs",
];

fn parse_value(content: Value) -> Result<Document, Vec<ValidationError>> {
    let mut errors = Errors::default();
    let Value::Object(top) = &content else {
        return Err(vec![ValidationError::new(
            "",
            "a document must be an object",
        )]);
    };
    let schema_version = match top.get("schemaVersion") {
        Some(Value::String(text)) => text.clone(),
        // Unquoted in YAML (`schemaVersion: 2.2`) it reads as a number.
        Some(Value::Number(number)) => number.to_string(),
        Some(_) => {
            return Err(vec![ValidationError::new(
                "schemaVersion",
                "must be a string",
            )]);
        }
        None => return Err(vec![ValidationError::new("schemaVersion", "required")]),
    };
    let (document_type, allowed_fields) = match schema_version.as_str() {
        "1.2" => (DocumentType::Command, COMMAND_12_FIELDS),
        "2.0" | "2.2" => (DocumentType::Command, COMMAND_2X_FIELDS),
        "0.3" => (DocumentType::Automation, AUTOMATION_FIELDS),
        "1.0" => (DocumentType::Session, SESSION_FIELDS),
        other => {
            return Err(vec![ValidationError::new(
                "schemaVersion",
                format!(
                    "{other:?} is not a supported schema version (Command 1.2, 2.0, 2.2; Automation 0.3; Session 1.0)"
                ),
            )]);
        }
    };
    for key in top.keys() {
        if !allowed_fields.contains(&key.as_str()) {
            errors.push(
                key,
                format!("unknown field for schema version {schema_version}"),
            );
        }
    }
    let description = match top.get("description") {
        None => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            errors.push("description", "must be a string");
            None
        }
    };
    let parameters = match top.get("parameters") {
        None => BTreeMap::new(),
        Some(value) => parameters::parse_definitions(value, &mut errors),
    };
    let mut steps = Vec::new();
    let mut session = None;
    let mut assume_role = None;
    match (document_type, schema_version.as_str()) {
        (DocumentType::Command, "1.2") => {
            steps = parse_runtime_config(top.get("runtimeConfig"), &mut errors);
        }
        (DocumentType::Command, _) => {
            steps = parse_main_steps(top.get("mainSteps"), &schema_version, false, &mut errors);
        }
        (DocumentType::Automation, _) => {
            steps = parse_main_steps(top.get("mainSteps"), &schema_version, true, &mut errors);
            assume_role = match top.get("assumeRole") {
                None => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => {
                    errors.push("assumeRole", "must be a string");
                    None
                }
            };
        }
        (DocumentType::Session, _) => {
            session = parse_session(top, &mut errors);
        }
    }

    let checker = ReferenceChecker {
        parameters: &parameters,
        document_type,
        step_names: steps.iter().map(|step| step.name.as_str()).collect(),
    };
    for step in &steps {
        checker.check(&step.inputs, &step.inputs_path, &mut errors);
        if let Some(precondition) = &step.precondition {
            for (index, operand) in precondition.string_equals.iter().enumerate() {
                let path = index_path(&key_path(&step.path, "precondition.StringEquals"), index);
                checker.check(&Value::String(operand.clone()), &path, &mut errors);
            }
        }
        check_action(
            step,
            document_type,
            &parameters,
            &checker.step_names,
            &mut errors,
        );
    }
    if let Some(role) = &assume_role {
        checker.check(&Value::String(role.clone()), "assumeRole", &mut errors);
    }
    if let Some(spec) = &session {
        checker.check(&spec.inputs, "inputs", &mut errors);
        checker.check(&spec.properties, "properties", &mut errors);
    }
    errors.into_result(())?;
    Ok(Document {
        content,
        document_type,
        schema_version,
        description,
        parameters,
        steps,
        session,
        assume_role,
    })
}

/// Schema 1.2: `runtimeConfig` maps plugin names to `{ properties: [ {id, ...inputs} ] }`
/// (or one properties object). Each properties entry becomes a step.
fn parse_runtime_config(value: Option<&Value>, errors: &mut Errors) -> Vec<Step> {
    let mut steps = Vec::new();
    let Some(value) = value else {
        errors.push("runtimeConfig", "required");
        return steps;
    };
    let Value::Object(plugins) = value else {
        errors.push("runtimeConfig", "must be an object");
        return steps;
    };
    if plugins.is_empty() {
        errors.push("runtimeConfig", "must name at least one plugin");
    }
    for (plugin, config) in plugins {
        let plugin_path = key_path("runtimeConfig", plugin);
        let Value::Object(config) = config else {
            errors.push(&plugin_path, "must be an object");
            continue;
        };
        for key in config.keys() {
            if key != "properties" && key != "description" {
                errors.push(key_path(&plugin_path, key), "unknown field");
            }
        }
        let properties_path = key_path(&plugin_path, "properties");
        let entries: Vec<(String, &Map<String, Value>)> = match config.get("properties") {
            None => {
                errors.push(&properties_path, "required");
                continue;
            }
            Some(Value::Object(single)) => vec![(properties_path.clone(), single)],
            Some(Value::Array(items)) => {
                let mut entries = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(entry) => {
                            entries.push((index_path(&properties_path, index), entry));
                        }
                        _ => errors.push(index_path(&properties_path, index), "must be an object"),
                    }
                }
                entries
            }
            Some(_) => {
                errors.push(&properties_path, "must be an object or an array of objects");
                continue;
            }
        };
        for (path, entry) in entries {
            let name = match entry.get("id") {
                Some(Value::String(id)) => id.clone(),
                None => plugin.clone(),
                Some(_) => {
                    errors.push(key_path(&path, "id"), "must be a string");
                    continue;
                }
            };
            let mut inputs = entry.clone();
            inputs.remove("id");
            steps.push(Step {
                name,
                action: plugin.clone(),
                canonical_action: canonical_action_name(plugin),
                inputs: Value::Object(inputs),
                precondition: None,
                settings: Map::new(),
                action_path: plugin_path.clone(),
                inputs_path: path.clone(),
                path,
            });
        }
    }
    steps
}

fn parse_main_steps(
    value: Option<&Value>,
    schema_version: &str,
    automation: bool,
    errors: &mut Errors,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let Some(value) = value else {
        errors.push("mainSteps", "required");
        return steps;
    };
    let Value::Array(items) = value else {
        errors.push("mainSteps", "must be an array");
        return steps;
    };
    if items.is_empty() {
        errors.push("mainSteps", "must contain at least one step");
    }
    let allowed = if automation {
        AUTOMATION_STEP_FIELDS
    } else {
        COMMAND_STEP_FIELDS
    };
    let mut seen = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let path = index_path("mainSteps", index);
        let Value::Object(fields) = item else {
            errors.push(&path, "must be an object");
            continue;
        };
        let mut settings = Map::new();
        for (key, value) in fields {
            if !allowed.contains(&key.as_str()) {
                errors.push(key_path(&path, key), "unknown field");
            } else if !matches!(key.as_str(), "name" | "action" | "inputs" | "precondition") {
                settings.insert(key.clone(), value.clone());
            }
        }
        let name_path = key_path(&path, "name");
        let name = match fields.get("name") {
            Some(Value::String(name)) if !name.is_empty() => {
                let valid = if automation {
                    // Automation's step-name pattern, `[a-zA-Z0-9_]+$`.
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                } else {
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                };
                if !valid {
                    errors.push(&name_path, "contains characters a step name may not use");
                }
                if !seen.insert(name.clone()) {
                    errors.push(&name_path, format!("duplicate step name {name:?}"));
                }
                name.clone()
            }
            Some(Value::String(_)) => {
                errors.push(&name_path, "must not be empty");
                String::new()
            }
            Some(_) => {
                errors.push(&name_path, "must be a string");
                String::new()
            }
            None => {
                errors.push(&name_path, "required");
                String::new()
            }
        };
        let action_path = key_path(&path, "action");
        let action = match fields.get("action") {
            Some(Value::String(action)) => action.clone(),
            Some(_) => {
                errors.push(&action_path, "must be a string");
                String::new()
            }
            None => {
                errors.push(&action_path, "required");
                String::new()
            }
        };
        let inputs_path = key_path(&path, "inputs");
        let inputs = match fields.get("inputs") {
            Some(Value::Object(inputs)) => Value::Object(inputs.clone()),
            Some(_) => {
                errors.push(&inputs_path, "must be an object");
                Value::Object(Map::new())
            }
            None if automation => {
                errors.push(&inputs_path, "required");
                Value::Object(Map::new())
            }
            None => Value::Object(Map::new()),
        };
        let precondition = match fields.get("precondition") {
            None => None,
            Some(_) if automation || schema_version != "2.2" => {
                errors.push(
                    key_path(&path, "precondition"),
                    "preconditions need schema version 2.2",
                );
                None
            }
            Some(value) => parse_precondition(value, &key_path(&path, "precondition"), errors),
        };
        steps.push(Step {
            name,
            canonical_action: canonical_action_name(&action),
            action,
            inputs,
            precondition,
            settings,
            path,
            action_path,
            inputs_path,
        });
    }
    if automation {
        check_automation_flow(&steps, errors);
    }
    steps
}

fn parse_precondition(value: &Value, path: &str, errors: &mut Errors) -> Option<Precondition> {
    let Value::Object(fields) = value else {
        errors.push(path, "must be an object");
        return None;
    };
    let mut result = None;
    for (key, operands) in fields {
        if key != "StringEquals" {
            errors.push(key_path(path, key), "only StringEquals is supported");
            continue;
        }
        let operands_path = key_path(path, key);
        match operands.as_array().map(Vec::as_slice) {
            Some([Value::String(left), Value::String(right)]) => {
                for (index, (operand, other)) in
                    [(left, right), (right, left)].into_iter().enumerate()
                {
                    if operand == "platformType"
                        && !template::has_references(other)
                        && !matches!(other.as_str(), "Linux" | "MacOS" | "Windows")
                    {
                        errors.push(
                            index_path(&operands_path, 1 - index),
                            format!("{other:?} is not a platform type (Linux, MacOS, Windows)"),
                        );
                    }
                }
                result = Some(Precondition {
                    string_equals: [left.clone(), right.clone()],
                });
            }
            _ => errors.push(&operands_path, "must be an array of two strings"),
        }
    }
    if fields.is_empty() {
        errors.push(path, "must hold StringEquals");
    }
    result
}

/// Automation's step references: `nextStep`, `onFailure`/`onCancel` `step:<name>`, and the
/// typed step fields.
fn check_automation_flow(steps: &[Step], errors: &mut Errors) {
    let names: BTreeSet<&str> = steps.iter().map(|step| step.name.as_str()).collect();
    for step in steps {
        for (key, value) in &step.settings {
            let path = key_path(&step.path, key);
            match key.as_str() {
                "nextStep" => match value.as_str() {
                    Some(target) if names.contains(target) => {}
                    Some(target) => errors.push(path, format!("no step named {target:?}")),
                    None => errors.push(path, "must be a string"),
                },
                "onFailure" | "onCancel" => match value.as_str() {
                    Some("Abort") => {}
                    Some("Continue") if key == "onFailure" => {}
                    Some(text) => match text.strip_prefix("step:") {
                        Some(target) if names.contains(target) => {}
                        Some(target) => errors.push(path, format!("no step named {target:?}")),
                        None => errors.push(
                            path,
                            if key == "onFailure" {
                                "must be Abort, Continue or step:<name>"
                            } else {
                                "must be Abort or step:<name>"
                            },
                        ),
                    },
                    None => errors.push(path, "must be a string"),
                },
                "isEnd" | "isCritical" if !value.is_boolean() => {
                    errors.push(path, "must be a boolean");
                }
                "maxAttempts" if value.as_u64().is_none_or(|n| n < 1) => {
                    errors.push(path, "must be an integer of at least 1");
                }
                "timeoutSeconds" if value.as_u64().is_none() => {
                    errors.push(path, "must be a non-negative integer");
                }
                "description" if !value.is_string() => {
                    errors.push(path, "must be a string");
                }
                "outputs" => check_step_outputs(value, &path, errors),
                _ => {}
            }
        }
    }
}

fn check_step_outputs(value: &Value, path: &str, errors: &mut Errors) {
    let Value::Array(outputs) = value else {
        errors.push(path, "must be an array");
        return;
    };
    for (index, output) in outputs.iter().enumerate() {
        let output_path = index_path(path, index);
        let Value::Object(fields) = output else {
            errors.push(output_path, "must be an object");
            continue;
        };
        for key in ["Name", "Selector"] {
            if !fields.get(key).is_some_and(Value::is_string) {
                errors.push(key_path(&output_path, key), "required string");
            }
        }
        match fields.get("Type").and_then(Value::as_str) {
            Some(kind) if ParameterType::from_name(kind).is_some() => {}
            _ => errors.push(
                key_path(&output_path, "Type"),
                "must be one of String, StringList, Integer, Boolean, MapList, StringMap",
            ),
        }
    }
}

fn parse_session(top: &Map<String, Value>, errors: &mut Errors) -> Option<SessionSpec> {
    let session_type = match top.get("sessionType") {
        Some(Value::String(name)) => {
            let parsed = SessionType::from_name(name);
            if parsed.is_none() {
                errors.push(
                    "sessionType",
                    format!(
                        "{name:?} is not one of Standard_Stream, InteractiveCommands, NonInteractiveCommands, Port"
                    ),
                );
            }
            parsed
        }
        Some(_) => {
            errors.push("sessionType", "must be a string");
            None
        }
        None => {
            errors.push("sessionType", "required");
            None
        }
    };
    let mut object_field = |key: &str| match top.get(key) {
        None => Value::Object(Map::new()),
        Some(Value::Object(fields)) => Value::Object(fields.clone()),
        Some(_) => {
            errors.push(key, "must be an object");
            Value::Object(Map::new())
        }
    };
    let inputs = object_field("inputs");
    let properties = object_field("properties");
    let session_type = session_type?;
    check_session_properties(session_type, &properties, errors);
    Some(SessionSpec {
        session_type,
        inputs,
        properties,
    })
}

/// What the agent needs to start each kind of session, checked here so that a document
/// missing it fails at creation rather than when someone opens a session.
fn check_session_properties(session_type: SessionType, properties: &Value, errors: &mut Errors) {
    match session_type {
        SessionType::StandardStream => {}
        SessionType::InteractiveCommands | SessionType::NonInteractiveCommands => {
            let mut platforms = 0;
            for platform in ["linux", "windows", "macos"] {
                let Some(settings) = properties.get(platform) else {
                    continue;
                };
                platforms += 1;
                let path = key_path("properties", platform);
                if !settings.is_object() {
                    errors.push(path, "must be an object");
                } else if !settings.get("commands").is_some_and(Value::is_string) {
                    errors.push(key_path(&path, "commands"), "required string");
                }
            }
            if platforms == 0 {
                errors.push(
                    "properties",
                    "must hold commands for linux, windows or macos",
                );
            }
        }
        SessionType::Port => {
            if !properties.get("portNumber").is_some_and(Value::is_string) {
                errors.push("properties.portNumber", "required string");
            }
        }
    }
}

/// Validates `{{ ... }}` references: each must name something that exists in this
/// document's kind, and list- or map-typed parameters may not sit inside longer strings.
struct ReferenceChecker<'a> {
    parameters: &'a BTreeMap<String, ParameterDefinition>,
    document_type: DocumentType,
    step_names: BTreeSet<&'a str>,
}

impl ReferenceChecker<'_> {
    fn check(&self, value: &Value, path: &str, errors: &mut Errors) {
        match value {
            Value::String(text) => {
                let pieces = template::split(text);
                let whole = pieces.len() == 1;
                for piece in pieces {
                    if let Piece::Reference(token, reference) = piece {
                        self.check_reference(token, &reference, whole, path, errors);
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.check(item, &index_path(path, index), errors);
                }
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    self.check(item, &key_path(path, key), errors);
                }
            }
            _ => {}
        }
    }

    fn check_reference(
        &self,
        token: &str,
        reference: &Reference<'_>,
        whole: bool,
        path: &str,
        errors: &mut Errors,
    ) {
        let automation = self.document_type == DocumentType::Automation;
        match reference {
            Reference::Parameter(name) => match self.parameters.get(*name) {
                None => errors.push(
                    path,
                    format!("{token}: {name} is not a parameter of this document"),
                ),
                Some(definition) => {
                    if !whole
                        && matches!(
                            definition.parameter_type,
                            ParameterType::StringList
                                | ParameterType::StringMap
                                | ParameterType::MapList
                        )
                    {
                        errors.push(
                            path,
                            format!(
                                "{token}: a {} parameter must stand alone, not inside a string",
                                definition.parameter_type
                            ),
                        );
                    }
                }
            },
            Reference::Ssm { .. } => {
                if automation {
                    errors.push(
                        path,
                        format!("{token}: automation steps cannot reference parameter store directly; use it as a parameter default"),
                    );
                }
            }
            Reference::SsmSecure => {
                errors.push(
                    path,
                    format!("{token}: ssm-secure references are not supported"),
                );
            }
            Reference::Builtin(name) => {
                if !(automation && AUTOMATION_BUILTINS.contains(name)) {
                    errors.push(path, format!("{token}: {name} is not a known variable"));
                }
            }
            Reference::StepOutput { step } => {
                if !(automation && self.step_names.contains(step)) {
                    errors.push(
                        path,
                        format!("{token}: not a parameter or step output of this document"),
                    );
                }
            }
            Reference::Invalid(_) => errors.push(path, format!("{token}: not a valid reference")),
        }
    }
}

/// Known action names, and the required inputs of the actions Bosun runs.
fn check_action(
    step: &Step,
    document_type: DocumentType,
    parameters: &BTreeMap<String, ParameterDefinition>,
    step_names: &BTreeSet<&str>,
    errors: &mut Errors,
) {
    if step.action.is_empty() {
        return;
    }
    if lookup_action(&step.action, scope_of(document_type)).is_none() {
        errors.push(
            &step.action_path,
            format!("{} is not a known action", step.action),
        );
        return;
    }
    let Value::Object(inputs) = &step.inputs else {
        return;
    };
    let path = |key: &str| key_path(&step.inputs_path, key);
    let is_parameter_of = |value: &Value, wanted: ParameterType| match value
        .as_str()
        .and_then(template::whole_reference)
    {
        Some(Reference::Parameter(name)) => parameters
            .get(name)
            .is_some_and(|definition| definition.parameter_type == wanted),
        _ => false,
    };
    match step.canonical_action.as_str() {
        "aws:runShellScript" | "aws:runPowerShellScript" => match inputs.get("runCommand") {
            None => errors.push(path("runCommand"), "required"),
            Some(Value::Array(items)) if items.is_empty() => {
                errors.push(path("runCommand"), "must not be empty");
            }
            Some(Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        errors.push(index_path(&path("runCommand"), index), "must be a string");
                    }
                }
            }
            Some(value) if is_parameter_of(value, ParameterType::StringList) => {}
            Some(_) => errors.push(
                path("runCommand"),
                "must be a list of strings or a {{ parameter }} of type StringList",
            ),
        },
        "aws:sleep" => {
            let duration = inputs.contains_key("Duration");
            let timestamp = inputs.contains_key("Timestamp");
            if duration == timestamp {
                errors.push(
                    &step.inputs_path,
                    "exactly one of Duration and Timestamp required",
                );
            }
        }
        "aws:approve" => match inputs.get("Approvers") {
            None => errors.push(path("Approvers"), "required"),
            Some(Value::Array(items)) if items.is_empty() => {
                errors.push(path("Approvers"), "must not be empty");
            }
            Some(Value::Array(_)) => {}
            Some(value) if is_parameter_of(value, ParameterType::StringList) => {}
            Some(_) => errors.push(
                path("Approvers"),
                "must be a list of strings or a {{ parameter }} of type StringList",
            ),
        },
        "aws:runDocument" => {
            match inputs.get("documentType").and_then(Value::as_str) {
                None => errors.push(path("documentType"), "required"),
                Some("SSMDocument" | "LocalPath") => {}
                Some(value) if value.contains("{{") => {}
                Some(_) => errors.push(path("documentType"), "must be SSMDocument or LocalPath"),
            }
            if !inputs.get("documentPath").is_some_and(Value::is_string) {
                errors.push(path("documentPath"), "required");
            }
        }
        "aws:runCommand" if !inputs.contains_key("DocumentName") => {
            errors.push(path("DocumentName"), "required");
        }
        "aws:branch" => check_branch(inputs, &step.inputs_path, step_names, errors),
        _ => {}
    }
}

const BRANCH_OPERATIONS: &[&str] = &[
    "StringEquals",
    "EqualsIgnoreCase",
    "StartsWith",
    "EndsWith",
    "Contains",
    "NumericEquals",
    "NumericGreater",
    "NumericLesser",
    "NumericGreaterOrEquals",
    "NumericLesserOrEquals",
    "BooleanEquals",
];

fn check_branch(
    inputs: &Map<String, Value>,
    path: &str,
    step_names: &BTreeSet<&str>,
    errors: &mut Errors,
) {
    let choices_path = key_path(path, "Choices");
    match inputs.get("Choices") {
        Some(Value::Array(choices)) if !choices.is_empty() => {
            for (index, choice) in choices.iter().enumerate() {
                let choice_path = index_path(&choices_path, index);
                match choice.get("NextStep").and_then(Value::as_str) {
                    Some(target) if step_names.contains(target) => {}
                    Some(target) => errors.push(
                        key_path(&choice_path, "NextStep"),
                        format!("no step named {target:?}"),
                    ),
                    None => errors.push(key_path(&choice_path, "NextStep"), "required"),
                }
                check_choice_rule(choice, &choice_path, true, errors);
            }
        }
        Some(_) => errors.push(&choices_path, "must be a non-empty array"),
        None => errors.push(&choices_path, "required"),
    }
    if let Some(default) = inputs.get("Default") {
        match default.as_str() {
            Some(target) if step_names.contains(target) => {}
            _ => errors.push(
                key_path(path, "Default"),
                "must name a step of this runbook",
            ),
        }
    }
}

/// A choice is either a combinator (`And`/`Or` over a list, `Not` over one choice) or a
/// `Variable` with exactly one operation.
fn check_choice_rule(choice: &Value, path: &str, top: bool, errors: &mut Errors) {
    let Value::Object(fields) = choice else {
        errors.push(path, "must be an object");
        return;
    };
    let combinators: Vec<&str> = ["And", "Or", "Not"]
        .into_iter()
        .filter(|key| fields.contains_key(*key))
        .collect();
    let operations: Vec<&String> = fields
        .keys()
        .filter(|key| BRANCH_OPERATIONS.contains(&key.as_str()))
        .collect();
    for key in fields.keys() {
        let known = BRANCH_OPERATIONS.contains(&key.as_str())
            || matches!(key.as_str(), "And" | "Or" | "Not" | "Variable")
            || (top && key == "NextStep");
        if !known {
            errors.push(key_path(path, key), "not a valid choice operation");
        }
    }
    match (combinators.as_slice(), operations.len()) {
        ([combinator], 0) => {
            let inner_path = key_path(path, combinator);
            match (fields.get(*combinator), *combinator) {
                (Some(inner @ Value::Object(_)), "Not") => {
                    check_choice_rule(inner, &inner_path, false, errors);
                }
                (Some(Value::Array(items)), "And" | "Or") if !items.is_empty() => {
                    for (index, item) in items.iter().enumerate() {
                        check_choice_rule(item, &index_path(&inner_path, index), false, errors);
                    }
                }
                _ => errors.push(
                    inner_path,
                    "And and Or take a non-empty list of choices, Not takes one choice",
                ),
            }
        }
        ([], 1) => {
            if !fields.contains_key("Variable") {
                errors.push(key_path(path, "Variable"), "required");
            }
        }
        _ => errors.push(
            path,
            "must hold exactly one operation or one of And, Or, Not",
        ),
    }
}
