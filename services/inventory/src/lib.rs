//! Inventory: every managed node and how to select them. `NodeServiceImpl` keeps activations
//! (secret codes, stored hashed, with which nodes register), registration, node facts, ping
//! status and tags; `ResourceGroupServiceImpl` keeps saved tag queries; [`targets`] resolves
//! SSM targets to node ids for every service; [`Directory`] is the agent channel's view of
//! nodes.

mod clock;
mod directory;
mod entities;
mod filters;
mod groups;
mod local;
mod migrations;
mod service;
mod store;
pub mod targets;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use directory::Directory;
pub use groups::ResourceGroupServiceImpl;
pub use local::{LOCAL_PRINCIPAL, local_activation};
pub use migrations::Migrator;
pub use service::{DEFAULT_PING_TIMEOUT, NodeServiceImpl};
pub use store::INACTIVE_AFTER;

/// The gRPC service name of `NodeService`, for routing and health.
pub const NODE_SERVICE_NAME: &str = "bosun.inventory.v1.NodeService";
/// The gRPC service name of `ResourceGroupService`, for routing and health.
pub const GROUP_SERVICE_NAME: &str = "bosun.inventory.v1.ResourceGroupService";
