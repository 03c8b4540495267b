//! Values, types and tiers: size limits per tier, Intelligent-Tiering, no downgrade,
//! parameter counts, StringList normalisation, `allowed_pattern`, data type and description.

use std::fmt;
use std::str::FromStr;

use bosun_core::error::ApiError;
use regex::{Regex, RegexBuilder};

use crate::error::{
    INVALID_ALLOWED_PATTERN, PARAMETER_LIMIT_EXCEEDED, PARAMETER_PATTERN_MISMATCH,
    UNSUPPORTED_PARAMETER_TYPE, VALIDATION,
};

/// Largest value of a Standard parameter, in bytes.
pub const STANDARD_MAX_VALUE_BYTES: usize = 4096;
/// Largest value of an Advanced parameter, in bytes.
pub const ADVANCED_MAX_VALUE_BYTES: usize = 8192;
/// Most Standard parameters in one Bosun installation (SSM: per account and Region).
pub const STANDARD_MAX_PARAMETERS: u64 = 10_000;
/// Most Advanced parameters in one Bosun installation.
pub const ADVANCED_MAX_PARAMETERS: u64 = 100_000;
/// Longest `allowed_pattern`, in characters.
pub const MAX_ALLOWED_PATTERN_LENGTH: usize = 1024;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_LENGTH: usize = 1024;
/// The only data type Bosun supports.
pub const DATA_TYPE_TEXT: &str = "text";
/// Compiled size cap for `allowed_pattern`, so a hostile pattern cannot eat memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

fn invalid(field: &str, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(VALIDATION)
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParameterType {
    String,
    StringList,
    SecureString,
}

impl ParameterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "String",
            ParameterType::StringList => "StringList",
            ParameterType::SecureString => "SecureString",
        }
    }
}

impl FromStr for ParameterType {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, ApiError> {
        match text {
            "String" => Ok(ParameterType::String),
            "StringList" => Ok(ParameterType::StringList),
            "SecureString" => Ok(ParameterType::SecureString),
            _ => Err(
                ApiError::invalid("type", "must be one of String, StringList, SecureString")
                    .with_reason(UNSUPPORTED_PARAMETER_TYPE),
            ),
        }
    }
}

impl fmt::Display for ParameterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier as requested. A stored parameter is only ever `Standard` or `Advanced`;
/// `IntelligentTiering` is resolved by [`choose_tier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Standard,
    Advanced,
    IntelligentTiering,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "Standard",
            Tier::Advanced => "Advanced",
            Tier::IntelligentTiering => "Intelligent-Tiering",
        }
    }

    /// Largest value this (stored) tier holds.
    pub fn max_value_bytes(self) -> usize {
        match self {
            Tier::Standard => STANDARD_MAX_VALUE_BYTES,
            Tier::Advanced | Tier::IntelligentTiering => ADVANCED_MAX_VALUE_BYTES,
        }
    }
}

impl FromStr for Tier {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, ApiError> {
        match text {
            "Standard" => Ok(Tier::Standard),
            "Advanced" => Ok(Tier::Advanced),
            "Intelligent-Tiering" => Ok(Tier::IntelligentTiering),
            _ => Err(invalid(
                "tier",
                "must be one of Standard, Advanced, Intelligent-Tiering",
            )),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts a tier decision needs on a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierRequest {
    /// The tier asked for (the service setting's default when the request names none).
    pub requested: Tier,
    /// The stored tier when the parameter exists; `None` on create.
    pub current: Option<Tier>,
    /// Size of the value in bytes.
    pub value_bytes: usize,
    /// Whether the write carries at least one policy.
    pub has_policies: bool,
    /// Standard parameters that exist now.
    pub standard_count: u64,
    /// Advanced parameters that exist now.
    pub advanced_count: u64,
}

/// Decides the tier a write stores (`Standard` or `Advanced`), enforcing value sizes, the
/// no-downgrade rule, policies being Advanced-only and the parameter counts.
pub fn choose_tier(name: &str, request: &TierRequest) -> Result<Tier, ApiError> {
    let needs_advanced = request.value_bytes > STANDARD_MAX_VALUE_BYTES || request.has_policies;
    let tier = match request.requested {
        Tier::Advanced => Tier::Advanced,
        Tier::Standard => {
            if request.current == Some(Tier::Advanced) {
                return Err(ApiError::failed_precondition(format!(
                    "parameter {name}: cannot change the tier from Advanced to Standard; delete and recreate the parameter"
                ))
                .with_reason(VALIDATION));
            }
            if request.has_policies {
                return Err(invalid(
                    "policies",
                    format!("parameter {name}: policies require the Advanced tier"),
                ));
            }
            Tier::Standard
        }
        Tier::IntelligentTiering => {
            let standard_full =
                request.current.is_none() && request.standard_count >= STANDARD_MAX_PARAMETERS;
            if request.current == Some(Tier::Advanced) || needs_advanced || standard_full {
                Tier::Advanced
            } else {
                Tier::Standard
            }
        }
    };
    check_value_size(name, request.value_bytes, tier)?;
    let creates_in_tier = match request.current {
        None => true,
        // An upgrade adds one Advanced parameter.
        Some(current) => current != tier,
    };
    if creates_in_tier {
        let (count, limit) = match tier {
            Tier::Standard => (request.standard_count, STANDARD_MAX_PARAMETERS),
            _ => (request.advanced_count, ADVANCED_MAX_PARAMETERS),
        };
        if count >= limit {
            return Err(ApiError::resource_exhausted(format!(
                "parameter {name}: the {tier} tier already holds {count} parameters, the maximum is {limit}"
            ))
            .with_reason(PARAMETER_LIMIT_EXCEEDED));
        }
    }
    Ok(tier)
}

/// Checks a value's size against the tier it will be stored in.
pub fn check_value_size(name: &str, value_bytes: usize, tier: Tier) -> Result<(), ApiError> {
    let limit = tier.max_value_bytes();
    if value_bytes > limit {
        return Err(invalid(
            "value",
            format!(
                "parameter {name}: value of {value_bytes} bytes exceeds {limit} bytes for the {tier} tier"
            ),
        ));
    }
    Ok(())
}

/// Validates a value and returns it as stored: StringList items trimmed and joined with
/// `,` (what SSM returns: "a comma-separated string with no spaces between commas").
/// Values may not be empty nor contain a `{{ … }}` reference.
pub fn normalize_value(
    name: &str,
    value: &str,
    parameter_type: ParameterType,
) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(invalid(
            "value",
            format!("parameter {name}: value must not be empty"),
        ));
    }
    if let Some(open) = value.find("{{")
        && value[open + 2..].contains("}}")
    {
        return Err(invalid(
            "value",
            format!("parameter {name}: value must not contain '{{{{ }}}}' references"),
        ));
    }
    Ok(match parameter_type {
        ParameterType::StringList => value
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
        ParameterType::String | ParameterType::SecureString => value.to_owned(),
    })
}

/// A compiled `allowed_pattern`, checked on every write.
#[derive(Debug, Clone)]
pub struct AllowedPattern {
    source: String,
    regex: Regex,
}

impl AllowedPattern {
    /// Compiles a pattern: at most 1024 characters and a valid regular expression.
    pub fn parse(pattern: &str) -> Result<Self, ApiError> {
        if pattern.chars().count() > MAX_ALLOWED_PATTERN_LENGTH {
            return Err(ApiError::invalid(
                "allowed_pattern",
                format!("must be at most {MAX_ALLOWED_PATTERN_LENGTH} characters"),
            )
            .with_reason(INVALID_ALLOWED_PATTERN));
        }
        let regex = RegexBuilder::new(pattern)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|_| {
                ApiError::invalid("allowed_pattern", "must be a valid regular expression")
                    .with_reason(INVALID_ALLOWED_PATTERN)
            })?;
        Ok(AllowedPattern {
            source: pattern.to_owned(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Checks a value against the pattern (a match anywhere, like SSM; anchor with `^…$`).
    /// The message names the pattern but never the value, which may be a secret.
    pub fn check(&self, name: &str, value: &str) -> Result<(), ApiError> {
        if self.regex.is_match(value) {
            Ok(())
        } else {
            Err(ApiError::invalid(
                "value",
                format!(
                    "parameter {name}: value does not match the allowed pattern {}",
                    self.source
                ),
            )
            .with_reason(PARAMETER_PATTERN_MISMATCH))
        }
    }
}

/// Validates `data_type`: empty means `text`, the only type Bosun supports.
pub fn check_data_type(data_type: &str) -> Result<&'static str, ApiError> {
    match data_type {
        "" | DATA_TYPE_TEXT => Ok(DATA_TYPE_TEXT),
        _ => Err(invalid(
            "data_type",
            "must be 'text', the only supported data type",
        )),
    }
}

/// Validates a description: at most 1024 characters.
pub fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > MAX_DESCRIPTION_LENGTH {
        return Err(invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LENGTH} characters"),
        ));
    }
    Ok(())
}
