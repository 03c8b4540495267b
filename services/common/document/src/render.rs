//! Interpolation: turning a document plus resolved parameters into the concrete steps an
//! agent or the automation engine runs.

use serde_json::{Map, Value};

use crate::document::{Document, SessionType};
use crate::error::{Errors, ResolveError, ValidationError, index_path, key_path};
use crate::parameters::{ParameterType, ResolvedParameters, ResolvedValue};
use crate::template::{self, Piece, Reference};

/// Resolves `{{ssm:/name}}` and `{{ssm:/name:version}}` references. Synchronous: a caller
/// that needs I/O fetches first (see [`Document::ssm_references`]) and answers from memory.
pub trait ParameterResolver {
    fn resolve(&self, name: &str, version: Option<u64>) -> Result<String, ResolveError>;
}

/// A resolver for callers that allow no Parameter Store references at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoParameterStore;

impl ParameterResolver for NoParameterStore {
    fn resolve(&self, _name: &str, _version: Option<u64>) -> Result<String, ResolveError> {
        Err(ResolveError::NotFound)
    }
}

/// Values of the built-in variables, supplied by the caller. A variable the document uses
/// but the caller left `None` is an error at render time.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// `global:ACCOUNT_ID`
    pub account_id: Option<String>,
    /// `global:REGION`
    pub region: Option<String>,
    /// `global:AWS_PARTITION`
    pub partition: Option<String>,
    /// `global:DATE`, formatted `yyyy-MM-dd` by the caller.
    pub date: Option<String>,
    /// `global:DATE_TIME`, formatted `yyyy-MM-dd_HH.mm.ss` by the caller.
    pub date_time: Option<String>,
    /// `automation:EXECUTION_ID`
    pub execution_id: Option<String>,
}

impl RenderContext {
    fn lookup(&self, name: &str) -> Option<&str> {
        match name {
            "global:ACCOUNT_ID" => self.account_id.as_deref(),
            "global:REGION" => self.region.as_deref(),
            "global:AWS_PARTITION" => self.partition.as_deref(),
            "global:DATE" => self.date.as_deref(),
            "global:DATE_TIME" => self.date_time.as_deref(),
            "automation:EXECUTION_ID" => self.execution_id.as_deref(),
            _ => None,
        }
    }
}

/// A step with every reference resolved, except Automation step outputs
/// (`{{ step.Output }}`), which stay as written for the engine to fill when the step runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedStep {
    pub name: String,
    /// The `aws:` spelling of the action.
    pub action: String,
    pub inputs: Value,
    /// Rendered `StringEquals` operands.
    pub precondition: Option<[String; 2]>,
    /// Other step fields as written.
    pub settings: Map<String, Value>,
}

impl RenderedStep {
    /// Whether the step's precondition holds on a node of `platform_type`
    /// (`Linux`, `MacOS`, `Windows`); true without a precondition.
    pub fn precondition_holds(&self, platform_type: &str) -> bool {
        let Some([left, right]) = &self.precondition else {
            return true;
        };
        let operand = |text: &str| {
            if text == "platformType" {
                platform_type.to_owned()
            } else {
                text.to_owned()
            }
        };
        operand(left) == operand(right)
    }
}

/// A Session document with its references resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedSession {
    pub session_type: SessionType,
    pub inputs: Value,
    pub properties: Value,
}

/// The result of [`Document::render`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub steps: Vec<RenderedStep>,
    pub session: Option<RenderedSession>,
    pub assume_role: Option<String>,
}

impl Document {
    /// Every `{{ssm:...}}` reference in the document's steps and parameter defaults, so
    /// a caller can fetch them before rendering.
    pub fn ssm_references(&self) -> Vec<(String, Option<u64>)> {
        let mut found = Vec::new();
        let mut collect = |value: &Value| collect_ssm(value, &mut found);
        for step in self.steps() {
            collect(&step.inputs);
        }
        for definition in self.parameters().values() {
            if let Some(default) = &definition.default {
                collect(default);
            }
        }
        if let Some(session) = self.session() {
            collect(&session.inputs);
            collect(&session.properties);
        }
        found.sort();
        found.dedup();
        found
    }

    /// Interpolates resolved parameters, Parameter Store references and built-in variables
    /// into the steps (or the session body). Parameter values that hold `{{ssm:...}}`
    /// references are resolved first and then checked against their definitions.
    pub fn render(
        &self,
        parameters: &ResolvedParameters,
        resolver: &dyn ParameterResolver,
        context: &RenderContext,
    ) -> Result<Rendered, Vec<ValidationError>> {
        let mut errors = Errors::default();
        let mut values = ResolvedParameters::default();
        for (name, resolved) in parameters.iter() {
            let path = key_path("parameters", name);
            let before = errors.0.len();
            let value = resolve_ssm_in_value(&resolved.value, &path, resolver, &mut errors);
            // A value whose references failed to resolve has nothing meaningful to check.
            if errors.0.len() == before
                && crate::parameters::value_has_ssm_reference(&resolved.value)
                && let Some(definition) = self.parameters().get(name)
                && let Err(found) = definition.check_value(&value, &path)
            {
                errors.0.extend(found);
            }
            values.insert(
                name.to_owned(),
                ResolvedValue {
                    parameter_type: resolved.parameter_type,
                    value,
                },
            );
        }
        if !errors.is_empty() {
            return Err(errors.0);
        }
        let renderer = Renderer {
            parameters: &values,
            resolver,
            context,
        };
        let steps = self
            .steps()
            .iter()
            .map(|step| RenderedStep {
                name: step.name.clone(),
                action: step.canonical_action.clone(),
                inputs: renderer.value(&step.inputs, &step.inputs_path, &mut errors),
                precondition: step.precondition.as_ref().map(|precondition| {
                    let [left, right] = &precondition.string_equals;
                    let path = key_path(&step.path, "precondition.StringEquals");
                    [
                        renderer.string(left, &index_path(&path, 0), &mut errors),
                        renderer.string(right, &index_path(&path, 1), &mut errors),
                    ]
                }),
                settings: step.settings.clone(),
            })
            .collect();
        let session = self.session().map(|session| RenderedSession {
            session_type: session.session_type,
            inputs: renderer.value(&session.inputs, "inputs", &mut errors),
            properties: renderer.value(&session.properties, "properties", &mut errors),
        });
        let assume_role = self
            .assume_role()
            .map(|role| renderer.string(role, "assumeRole", &mut errors));
        errors.into_result(Rendered {
            steps,
            session,
            assume_role,
        })
    }
}

fn collect_ssm(value: &Value, found: &mut Vec<(String, Option<u64>)>) {
    match value {
        Value::String(text) => {
            for piece in template::split(text) {
                if let Piece::Reference(_, Reference::Ssm { name, version }) = piece {
                    found.push((name.to_owned(), version));
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_ssm(item, found)),
        Value::Object(fields) => fields.values().for_each(|item| collect_ssm(item, found)),
        _ => {}
    }
}

fn resolve_ssm(
    token: &str,
    name: &str,
    version: Option<u64>,
    resolver: &dyn ParameterResolver,
    path: &str,
    errors: &mut Errors,
) -> String {
    match resolver.resolve(name, version) {
        Ok(value) => value,
        Err(error) => {
            errors.push(path, format!("{token}: {error}"));
            String::new()
        }
    }
}

/// Replaces `{{ssm:...}}` references inside a parameter value; other text is kept as is
/// (SSM does not expand parameter values a second time).
fn resolve_ssm_in_value(
    value: &Value,
    path: &str,
    resolver: &dyn ParameterResolver,
    errors: &mut Errors,
) -> Value {
    match value {
        Value::String(text) => {
            let mut out = String::new();
            for piece in template::split(text) {
                match piece {
                    Piece::Reference(token, Reference::Ssm { name, version }) => {
                        out.push_str(&resolve_ssm(token, name, version, resolver, path, errors));
                    }
                    Piece::Reference(token, _) => out.push_str(token),
                    Piece::Text(text) => out.push_str(text),
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_ssm_in_value(item, path, resolver, errors))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| {
                    (
                        key.clone(),
                        resolve_ssm_in_value(item, path, resolver, errors),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

struct Renderer<'a> {
    parameters: &'a ResolvedParameters,
    resolver: &'a dyn ParameterResolver,
    context: &'a RenderContext,
}

impl Renderer<'_> {
    fn value(&self, value: &Value, path: &str, errors: &mut Errors) -> Value {
        match value {
            Value::String(text) => match template::whole_reference(text) {
                // A value that is exactly `{{ name }}` takes the parameter's typed value:
                // a list for a StringList, a number for an Integer, and so on.
                Some(Reference::Parameter(name)) => match self.parameters.get(name) {
                    Some(resolved) => resolved.value.clone(),
                    None => {
                        errors.push(path, format!("{text}: {name} has no value"));
                        Value::Null
                    }
                },
                _ => Value::String(self.string(text, path, errors)),
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    // A list element that is exactly a StringList parameter splices its items.
                    if let Some(Reference::Parameter(name)) =
                        item.as_str().and_then(template::whole_reference)
                        && let Some(resolved) = self.parameters.get(name)
                        && resolved.parameter_type == ParameterType::StringList
                        && let Value::Array(values) = &resolved.value
                    {
                        out.extend(values.iter().cloned());
                        continue;
                    }
                    out.push(self.value(item, &index_path(path, index), errors));
                }
                Value::Array(out)
            }
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, item)| {
                        (key.clone(), self.value(item, &key_path(path, key), errors))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Renders references inside a string; list- and map-valued parameters cannot be
    /// written into text.
    fn string(&self, text: &str, path: &str, errors: &mut Errors) -> String {
        let mut out = String::with_capacity(text.len());
        for piece in template::split(text) {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Reference(token, reference) => match reference {
                    Reference::Parameter(name) => match self.parameters.get(name).map(|r| &r.value)
                    {
                        Some(Value::String(value)) => out.push_str(value),
                        Some(Value::Number(number)) => out.push_str(&number.to_string()),
                        Some(Value::Bool(flag)) => {
                            out.push_str(if *flag { "true" } else { "false" })
                        }
                        Some(_) => errors.push(
                            path,
                            format!(
                                "{token}: a list or map parameter cannot be used inside a string"
                            ),
                        ),
                        None => errors.push(path, format!("{token}: {name} has no value")),
                    },
                    Reference::Ssm { name, version } => {
                        out.push_str(&resolve_ssm(
                            token,
                            name,
                            version,
                            self.resolver,
                            path,
                            errors,
                        ));
                    }
                    Reference::Builtin(name) => match self.context.lookup(name) {
                        Some(value) => out.push_str(value),
                        None => errors.push(path, format!("{token}: no value supplied for {name}")),
                    },
                    // Filled by the automation engine when the referencing step runs.
                    Reference::StepOutput { .. } => out.push_str(token),
                    Reference::SsmSecure | Reference::Invalid(_) => {
                        errors.push(path, format!("{token}: not a valid reference"));
                    }
                },
            }
        }
        out
    }
}
