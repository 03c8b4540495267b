//! Parameter Store domain core: SSM's rules for names, labels, values, tiers, versions and
//! policies, and SecureString envelope encryption. No server dependencies live here; the
//! gRPC service builds on these pure types and functions.

pub mod crypto;
pub mod error;
pub mod label;
pub mod name;
pub mod policy;
pub mod value;
pub mod versions;

pub use crypto::{CryptoError, DEFAULT_KEY_ID, Envelope, MasterKeyRing};
pub use label::{LabelOutcome, UnlabelOutcome, VersionLabels};
pub use name::{ParameterName, ParameterPath, Selector, VersionSelector};
pub use policy::{FiredEvent, ParameterPolicy, PolicyEvent, PolicyStatus, TimeUnit};
pub use value::{AllowedPattern, ParameterType, Tier, TierRequest};
