//! Rendering a document with `{{ssm:/name}}` references read with the caller's rights — the
//! same for Run Command and Session Manager.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bosun_auth::AuthContext;
use bosun_document::{
    Document, ParameterResolver, RenderContext, Rendered, ResolveError, ResolvedParameters,
    ValidationError,
};
use chrono::{DateTime, Utc};

use crate::ports::ParameterSource;

/// Renders `document` with `parameters` at `now`. Every Parameter Store reference the render
/// asks for (the document's own, and those inside supplied values) is read first through
/// `source` as `caller`, since rendering itself is synchronous.
pub async fn render_with_references(
    document: &Document,
    parameters: &ResolvedParameters,
    caller: &AuthContext,
    source: &dyn ParameterSource,
    now: DateTime<Utc>,
) -> Result<Rendered, Vec<ValidationError>> {
    let context = RenderContext {
        date: Some(now.format("%Y-%m-%d").to_string()),
        date_time: Some(now.format("%Y-%m-%d_%H.%M.%S").to_string()),
        ..RenderContext::default()
    };
    let recorder = Recorder::default();
    let _ = document.render(parameters, &recorder, &context);
    let mut wanted: BTreeSet<(String, Option<u64>)> =
        document.ssm_references().into_iter().collect();
    if let Ok(asked) = recorder.0.into_inner() {
        wanted.extend(asked);
    }
    let mut values = BTreeMap::new();
    for (name, version) in wanted {
        let value = source.get(caller, &name, version).await;
        values.insert((name, version), value);
    }
    document.render(parameters, &Fetched(values), &context)
}

/// Answers `{{ssm:…}}` from values fetched beforehand.
struct Fetched(BTreeMap<(String, Option<u64>), Result<String, ResolveError>>);

impl ParameterResolver for Fetched {
    fn resolve(&self, name: &str, version: Option<u64>) -> Result<String, ResolveError> {
        self.0
            .get(&(name.to_owned(), version))
            .cloned()
            .unwrap_or(Err(ResolveError::NotFound))
    }
}

/// Records what a render asks for, answering empty strings.
#[derive(Default)]
struct Recorder(Mutex<BTreeSet<(String, Option<u64>)>>);

impl ParameterResolver for Recorder {
    fn resolve(&self, name: &str, version: Option<u64>) -> Result<String, ResolveError> {
        if let Ok(mut asked) = self.0.lock() {
            asked.insert((name.to_owned(), version));
        }
        Ok(String::new())
    }
}
