//! `Ports::local`: the other services answered in-process from the shared store, through
//! the owning crates' own functions (documents, inventory, parameters, notifications).

use std::sync::Arc;

use async_trait::async_trait;
use bosun_auth::AuthContext;
use bosun_core::ApiError;
use bosun_document::ResolveError;
use bosun_inventory::targets::{self, NodeSummary, Target};
use sea_orm::DatabaseConnection;

use crate::ports::{
    DocumentSource, FetchedDocument, NodeInfo, NodeSource, ParameterSource, Ports, WebhookSource,
};

impl Ports {
    /// Every port answered in-process from `db`, the database the documents, inventory,
    /// parameters and notifications services share with the commands service.
    pub fn local(db: DatabaseConnection) -> Ports {
        Ports {
            documents: Arc::new(LocalDocuments { db: db.clone() }),
            nodes: Arc::new(LocalNodes { db: db.clone() }),
            parameters: Arc::new(LocalParameters { db: db.clone() }),
            webhooks: Arc::new(LocalWebhooks { db }),
        }
    }
}

/// Documents through `bosun_documents::fetch_for_caller`.
#[derive(Debug, Clone)]
pub(crate) struct LocalDocuments {
    db: DatabaseConnection,
}

#[async_trait]
impl DocumentSource for LocalDocuments {
    async fn fetch(
        &self,
        caller: &AuthContext,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedDocument, ApiError> {
        let fetched =
            bosun_documents::fetch_for_caller(&self.db, caller, name, version, "document_version")
                .await?;
        Ok(FetchedDocument {
            name: fetched.name,
            version: fetched.version.to_string(),
            hash: fetched.sha256,
            document: fetched.document,
        })
    }
}

/// Nodes through the inventory's target resolver and batch node reads (two queries per
/// 1,000 nodes: their rows, then their tags).
#[derive(Debug, Clone)]
pub(crate) struct LocalNodes {
    db: DatabaseConnection,
}

fn node_info(summary: NodeSummary) -> NodeInfo {
    NodeInfo {
        id: summary.id,
        name: summary.name,
        platform_type: summary.platform_type,
        tags: summary.tags,
        registered: summary.registered,
    }
}

#[async_trait]
impl NodeSource for LocalNodes {
    async fn resolve(&self, targets: &[Target]) -> Result<Vec<NodeInfo>, ApiError> {
        Ok(targets::resolve_summaries(&self.db, targets)
            .await?
            .into_iter()
            .map(node_info)
            .collect())
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<NodeInfo>, ApiError> {
        Ok(targets::node_summaries(&self.db, ids)
            .await?
            .into_iter()
            .map(node_info)
            .collect())
    }
}

/// Parameter values through `bosun_parameters::read_for_caller`, with the caller's
/// `parameters:GetParameter`.
#[derive(Debug, Clone)]
pub(crate) struct LocalParameters {
    db: DatabaseConnection,
}

#[async_trait]
impl ParameterSource for LocalParameters {
    async fn get(
        &self,
        caller: &AuthContext,
        name: &str,
        version: Option<u64>,
    ) -> Result<String, ResolveError> {
        match bosun_parameters::read_for_caller(&self.db, caller, name, version).await {
            Ok(value) if value.parameter_type == "SecureString" => Err(ResolveError::SecureString),
            Ok(value) => Ok(value.value),
            Err(ApiError::PermissionDenied(_)) => Err(ResolveError::AccessDenied),
            Err(ApiError::NotFound {
                reason: Some("ParameterVersionNotFound"),
                ..
            }) => Err(ResolveError::VersionNotFound),
            Err(ApiError::NotFound { .. }) => Err(ResolveError::NotFound),
            Err(ApiError::InvalidArgument { violations, .. }) => Err(ResolveError::Other(
                violations
                    .first()
                    .map(|violation| format!("parameter name {}", violation.rule))
                    .unwrap_or_else(|| "invalid parameter name".to_owned()),
            )),
            Err(other) => Err(ResolveError::Other(format!(
                "parameter store unavailable: {}",
                other.code()
            ))),
        }
    }
}

/// Webhooks through `bosun_notifications::find_enabled_webhook`.
#[derive(Debug, Clone)]
pub(crate) struct LocalWebhooks {
    db: DatabaseConnection,
}

#[async_trait]
impl WebhookSource for LocalWebhooks {
    async fn find(&self, arn: &str) -> Result<Option<String>, ApiError> {
        bosun_notifications::find_enabled_webhook(&self.db, arn).await
    }
}
