//! SSM-compatible document model: parse Command, Automation and Session documents from
//! JSON or YAML, validate them, check supplied parameters and interpolate `{{ ... }}`.
//!
//! No server dependencies: the agent links this crate as well as the services.

mod actions;
mod document;
mod error;
mod parameters;
mod render;
pub mod run;
mod template;

pub use actions::{ACTIONS, ActionInfo, ActionScope, canonical_action_name, lookup_action};
pub use document::{
    AUTOMATION_BUILTINS, ConvertError, Document, DocumentType, Format, MAX_CONTENT_BYTES,
    MAX_NESTING_DEPTH, Precondition, SessionSpec, SessionType, Step,
};
pub use error::{ResolveError, ValidationError};
pub use parameters::{
    ParameterDefinition, ParameterType, ResolvedParameters, ResolvedValue, values_from_wire,
};
pub use render::{
    NoParameterStore, ParameterResolver, RenderContext, Rendered, RenderedSession, RenderedStep,
};
