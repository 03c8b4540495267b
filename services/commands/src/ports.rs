//! What the commands service needs from other services, as traits, so the service and its
//! tests do not care where the answers come from. `Ports::local` answers in-process from the
//! shared store through the owning crates' own functions (documents, inventory, parameters,
//! notifications); a deployment that splits them could answer over their gRPC APIs instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bosun_auth::AuthContext;
use bosun_core::ApiError;
use bosun_document::{Document, ResolveError};
use bosun_inventory::targets::Target;

/// A document version chosen for a run.
#[derive(Debug, Clone)]
pub struct FetchedDocument {
    pub name: String,
    /// The version number, as text (`"3"`).
    pub version: String,
    /// Hex SHA-256 of the content.
    pub hash: String,
    pub document: Document,
}

/// Reads documents with the caller's rights.
#[async_trait]
pub trait DocumentSource: Send + Sync + 'static {
    /// The document `name` (or its `AWS-` alias) at `version` (`$DEFAULT`, `$LATEST` or a
    /// number; `None` = `$DEFAULT`), if the caller may read it (`documents:GetDocument` and
    /// visible to them). Errors: InvalidDocument (NOT_FOUND or the caller may not see it),
    /// InvalidDocumentVersion.
    async fn fetch(
        &self,
        caller: &AuthContext,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedDocument, ApiError>;
}

/// A node as Run Command needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// The computer name the agent reported.
    pub name: String,
    /// `Linux`, `MacOS`, `Windows` (empty when never connected).
    pub platform_type: String,
    pub tags: BTreeMap<String, String>,
    /// False when deregistered.
    pub registered: bool,
}

/// Resolves targets to nodes.
#[async_trait]
pub trait NodeSource: Send + Sync + 'static {
    /// Every registered node the targets select (ANDed), in id order. InvalidTarget errors
    /// name `targets[i]…`.
    async fn resolve(&self, targets: &[Target]) -> Result<Vec<NodeInfo>, ApiError>;
    /// The nodes with these ids, deregistered ones included (`registered` false); ids that
    /// never existed are left out.
    async fn get(&self, ids: &[String]) -> Result<Vec<NodeInfo>, ApiError>;
}

/// Reads Parameter Store values for `{{ssm:/name}}` references with the caller's rights.
#[async_trait]
pub trait ParameterSource: Send + Sync + 'static {
    /// The value of `name` (at `version`, else the latest). String and StringList only
    /// (StringList as stored, comma-separated). A SecureString is refused
    /// (`ResolveError::SecureString`): the command would keep its plaintext. `NotFound` and
    /// `AccessDenied` as the caller sees them.
    async fn get(
        &self,
        caller: &AuthContext,
        name: &str,
        version: Option<u64>,
    ) -> Result<String, ResolveError>;
}

/// Finds NotificationService webhooks.
#[async_trait]
pub trait WebhookSource: Send + Sync + 'static {
    /// The id of the enabled webhook `arn` names (its id `wh-…`, or its URL exactly as
    /// registered); `None` when there is none.
    async fn find(&self, arn: &str) -> Result<Option<String>, ApiError>;
}

/// The other services, as the commands service reaches them.
#[derive(Clone)]
pub struct Ports {
    pub documents: Arc<dyn DocumentSource>,
    pub nodes: Arc<dyn NodeSource>,
    pub parameters: Arc<dyn ParameterSource>,
    pub webhooks: Arc<dyn WebhookSource>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}
