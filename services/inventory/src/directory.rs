//! `Directory`: what the agent channel needs to know about nodes (their keys) and records
//! about them (facts on connect, pings), over the inventory tables.

use bosun_core::ApiError;
use bosun_nodelink::{NodeCredentials, NodeDirectory};
use bosun_proto::agent::v1::HostFacts;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::{store, validate};

/// The inventory's [`NodeDirectory`].
#[derive(Clone)]
pub struct Directory {
    db: DatabaseConnection,
}

impl Directory {
    pub fn new(db: DatabaseConnection) -> Self {
        Directory { db }
    }
}

#[async_trait::async_trait]
impl NodeDirectory for Directory {
    async fn credentials(&self, node_id: &str) -> Result<Option<NodeCredentials>, ApiError> {
        if !validate::is_node_id(node_id) {
            return Ok(None);
        }
        let Some(node) = store::get_node(&self.db, node_id).await? else {
            return Ok(None);
        };
        let public_key: [u8; 32] = node.public_key.as_slice().try_into().map_err(|_| {
            ApiError::internal(format!(
                "stored public key of node {node_id} is {} bytes, not 32",
                node.public_key.len()
            ))
        })?;
        Ok(Some(NodeCredentials { public_key }))
    }

    async fn record_connect(
        &self,
        node_id: &str,
        facts: &HostFacts,
        at: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        validate::host_facts("facts", facts)?;
        store::record_connect(&self.db, node_id, facts, at).await
    }

    async fn record_pings(
        &self,
        node_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, ApiError> {
        store::record_pings(&self.db, node_ids, at).await
    }
}
