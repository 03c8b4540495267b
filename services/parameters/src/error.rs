//! SSM's stable error names, carried as `ErrorInfo.reason` so clients can branch on them.
//!
//! Every rule in this crate returns a `bosun_core::error::ApiError` tagged with one of these;
//! the service maps `ApiError` to a gRPC code in one place (`bosun-core`).

pub const VALIDATION: &str = "ValidationException";
pub const PARAMETER_NOT_FOUND: &str = "ParameterNotFound";
pub const PARAMETER_ALREADY_EXISTS: &str = "ParameterAlreadyExists";
pub const PARAMETER_LIMIT_EXCEEDED: &str = "ParameterLimitExceeded";
pub const HIERARCHY_LEVEL_LIMIT_EXCEEDED: &str = "HierarchyLevelLimitExceededException";
pub const PARAMETER_MAX_VERSION_LIMIT_EXCEEDED: &str = "ParameterMaxVersionLimitExceeded";
pub const PARAMETER_VERSION_NOT_FOUND: &str = "ParameterVersionNotFound";
pub const PARAMETER_VERSION_LABEL_LIMIT_EXCEEDED: &str = "ParameterVersionLabelLimitExceeded";
pub const INVALID_ALLOWED_PATTERN: &str = "InvalidAllowedPatternException";
pub const PARAMETER_PATTERN_MISMATCH: &str = "ParameterPatternMismatchException";
pub const UNSUPPORTED_PARAMETER_TYPE: &str = "UnsupportedParameterType";
pub const POLICIES_LIMIT_EXCEEDED: &str = "PoliciesLimitExceededException";
pub const INVALID_POLICY_TYPE: &str = "InvalidPolicyTypeException";
pub const INVALID_POLICY_ATTRIBUTE: &str = "InvalidPolicyAttributeException";
pub const INCOMPATIBLE_POLICY: &str = "IncompatiblePolicyException";
pub const INVALID_KEY_ID: &str = "InvalidKeyId";
pub const TOO_MANY_UPDATES: &str = "TooManyUpdates";
