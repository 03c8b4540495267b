//! Parameter Store: SSM's rules for names, labels, values, tiers, versions and policies,
//! SecureString envelope encryption (the pure domain core), and the gRPC service with its
//! tables built on them; change events and the worker that enforces policies.

mod cache;
pub mod crypto;
mod entities;
pub mod error;
pub mod events;
pub mod keys;
pub mod label;
mod lease;
mod migrations;
pub mod name;
pub mod policy;
pub mod policy_worker;
mod rotation;
mod service;
mod store;
pub mod value;
pub mod versions;

pub use cache::{CacheStats, ReadCache};
pub use crypto::{CryptoError, DEFAULT_KEY_ID, Envelope, MasterKeyRing};
pub use events::{ChangeEvent, ChangeOperation, EVENTS_STREAM, EventPublisher};
pub use keys::KeySource;
pub use label::{LabelOutcome, UnlabelOutcome, VersionLabels};
pub use migrations::Migrator;
pub use name::{ParameterName, ParameterPath, Selector, VersionSelector};
pub use policy::{FiredEvent, ParameterPolicy, PolicyEvent, PolicyStatus, TimeUnit};
pub use policy_worker::{Clock, ManualClock, PolicyWorker, RunReport, SystemClock};
pub use rotation::{RotationReport, rotate_master_key};
pub use service::{ParameterServiceImpl, PlainValue, read_for_caller};
pub use value::{AllowedPattern, ParameterType, Tier, TierRequest};

/// The gRPC service name, for routing and health.
pub const SERVICE_NAME: &str = "bosun.parameters.v1.ParameterService";
