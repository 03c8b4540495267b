//! Parameter policies in SSM's JSON shape (Expiration, ExpirationNotification,
//! NoChangeNotification) and their evaluation against an injected clock.
//!
//! Evaluation is pure: `due` says what should fire at `now`, `next_due` when to wake next.
//! The service records what fired (`FiredEvent`) so a policy fires once per due time.

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use serde_json::{Map, Value};

use bosun_core::error::ApiError;

use crate::error::{
    INCOMPATIBLE_POLICY, INVALID_POLICY_ATTRIBUTE, INVALID_POLICY_TYPE, POLICIES_LIMIT_EXCEEDED,
    VALIDATION,
};
use crate::value::Tier;

/// Most policies per parameter.
pub const MAX_POLICIES: usize = 10;
/// Longest `policies` JSON text, in characters.
pub const MAX_POLICIES_TEXT_LENGTH: usize = 4096;
/// The only policy version SSM defines.
pub const POLICY_VERSION: &str = "1.0";
/// Largest `Before`/`After` amount accepted, in days (about 100 years), so times never overflow.
const MAX_AMOUNT_DAYS: u32 = 36_500;

const FIELD: &str = "policies";

/// The unit of a notification's `Before`/`After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Days,
    Hours,
}

impl TimeUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Days => "Days",
            TimeUnit::Hours => "Hours",
        }
    }

    fn delta(self, amount: u32) -> TimeDelta {
        match self {
            TimeUnit::Days => TimeDelta::days(i64::from(amount)),
            TimeUnit::Hours => TimeDelta::hours(i64::from(amount)),
        }
    }
}

/// One parameter policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterPolicy {
    /// Delete the parameter at `at`.
    Expiration { at: DateTime<Utc> },
    /// Notify `amount` `unit` before the expiration.
    ExpirationNotification { amount: u32, unit: TimeUnit },
    /// Notify when the parameter has not changed for `amount` `unit`.
    NoChangeNotification { amount: u32, unit: TimeUnit },
}

impl ParameterPolicy {
    /// SSM's `PolicyType`.
    pub fn policy_type(&self) -> &'static str {
        match self {
            ParameterPolicy::Expiration { .. } => "Expiration",
            ParameterPolicy::ExpirationNotification { .. } => "ExpirationNotification",
            ParameterPolicy::NoChangeNotification { .. } => "NoChangeNotification",
        }
    }

    /// SSM's `PolicyText`: the policy as canonical JSON.
    pub fn to_json(&self) -> Value {
        let attributes = match self {
            ParameterPolicy::Expiration { at } => serde_json::json!({
                "Timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            }),
            ParameterPolicy::ExpirationNotification { amount, unit } => serde_json::json!({
                "Before": amount.to_string(), "Unit": unit.as_str()
            }),
            ParameterPolicy::NoChangeNotification { amount, unit } => serde_json::json!({
                "After": amount.to_string(), "Unit": unit.as_str()
            }),
        };
        serde_json::json!({
            "Type": self.policy_type(),
            "Version": POLICY_VERSION,
            "Attributes": attributes,
        })
    }

    pub fn policy_text(&self) -> String {
        self.to_json().to_string()
    }
}

fn type_error(index: usize, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(format!("{FIELD}[{index}].Type"), rule).with_reason(INVALID_POLICY_TYPE)
}

fn attribute_error(index: usize, attribute: &str, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(format!("{FIELD}[{index}].Attributes.{attribute}"), rule)
        .with_reason(INVALID_POLICY_ATTRIBUTE)
}

/// Parses SSM's `Policies` JSON array. `[{}]` (and `[]`) mean "no policies": a write with
/// them removes all existing ones. Checks count, types, attributes and compatibility.
pub fn parse_policies(text: &str) -> Result<Vec<ParameterPolicy>, ApiError> {
    if text.chars().count() > MAX_POLICIES_TEXT_LENGTH {
        return Err(ApiError::invalid(
            FIELD,
            format!("must be at most {MAX_POLICIES_TEXT_LENGTH} characters"),
        )
        .with_reason(VALIDATION));
    }
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return Err(
            ApiError::invalid(FIELD, "must be a JSON array of policies").with_reason(VALIDATION)
        );
    };
    if items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty) {
        return Ok(Vec::new());
    }
    if items.len() > MAX_POLICIES {
        return Err(ApiError::invalid(
            FIELD,
            format!(
                "{} policies given, the maximum is {MAX_POLICIES}",
                items.len()
            ),
        )
        .with_reason(POLICIES_LIMIT_EXCEEDED));
    }
    let policies = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_policy(index, item))
        .collect::<Result<Vec<_>, _>>()?;
    let expirations = policies
        .iter()
        .filter(|p| matches!(p, ParameterPolicy::Expiration { .. }))
        .count();
    if expirations > 1 {
        return Err(
            ApiError::invalid(FIELD, "at most one Expiration policy is allowed")
                .with_reason(INCOMPATIBLE_POLICY),
        );
    }
    let notifies_expiration = policies
        .iter()
        .any(|p| matches!(p, ParameterPolicy::ExpirationNotification { .. }));
    if notifies_expiration && expirations == 0 {
        return Err(ApiError::invalid(
            FIELD,
            "an ExpirationNotification policy needs an Expiration policy",
        )
        .with_reason(INCOMPATIBLE_POLICY));
    }
    Ok(policies)
}

/// Policies exist only on Advanced parameters.
pub fn check_policies_tier(policies: &[ParameterPolicy], tier: Tier) -> Result<(), ApiError> {
    if !policies.is_empty() && tier != Tier::Advanced {
        return Err(ApiError::invalid(
            FIELD,
            format!("policies require the Advanced tier, not {tier}"),
        )
        .with_reason(VALIDATION));
    }
    Ok(())
}

fn parse_policy(index: usize, item: &Value) -> Result<ParameterPolicy, ApiError> {
    let Some(object) = item.as_object() else {
        return Err(type_error(index, "policy must be a JSON object"));
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "Type" | "Version" | "Attributes") {
            return Err(ApiError::invalid(
                format!("{FIELD}[{index}]"),
                format!(
                    "unknown key '{}', expected Type, Version, Attributes",
                    short(key)
                ),
            )
            .with_reason(VALIDATION));
        }
    }
    let Some(policy_type) = object.get("Type").and_then(Value::as_str) else {
        return Err(type_error(index, "policy type is required"));
    };
    if let Some(version) = object.get("Version")
        && version.as_str() != Some(POLICY_VERSION)
    {
        return Err(ApiError::invalid(
            format!("{FIELD}[{index}].Version"),
            format!("policy version must be \"{POLICY_VERSION}\""),
        )
        .with_reason(VALIDATION));
    }
    let empty = Map::new();
    let attributes = match object.get("Attributes") {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(attribute_error(
                index,
                "",
                "attributes must be a JSON object",
            ));
        }
    };
    match policy_type {
        "Expiration" => {
            only_keys(index, attributes, &["Timestamp"])?;
            let Some(text) = attributes.get("Timestamp").and_then(Value::as_str) else {
                return Err(attribute_error(index, "Timestamp", "timestamp is required"));
            };
            let at = parse_timestamp(text).ok_or_else(|| {
                attribute_error(
                    index,
                    "Timestamp",
                    "timestamp must be ISO-8601 such as 2030-01-01T00:00:00.000Z or 2030-01-01T10:00:00+10:30:00",
                )
            })?;
            Ok(ParameterPolicy::Expiration { at })
        }
        "ExpirationNotification" => {
            only_keys(index, attributes, &["Before", "Unit"])?;
            let (amount, unit) = amount_and_unit(index, attributes, "Before")?;
            Ok(ParameterPolicy::ExpirationNotification { amount, unit })
        }
        "NoChangeNotification" => {
            only_keys(index, attributes, &["After", "Unit"])?;
            let (amount, unit) = amount_and_unit(index, attributes, "After")?;
            Ok(ParameterPolicy::NoChangeNotification { amount, unit })
        }
        other => Err(type_error(
            index,
            format!(
                "unknown policy type '{}', expected Expiration, ExpirationNotification or NoChangeNotification",
                short(other)
            ),
        )),
    }
}

/// Keeps echoed user input short in messages.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

fn only_keys(
    index: usize,
    attributes: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match attributes
        .keys()
        .find(|key| !allowed.contains(&key.as_str()))
    {
        Some(key) => Err(attribute_error(
            index,
            &short(key),
            format!("unknown attribute, expected {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn amount_and_unit(
    index: usize,
    attributes: &Map<String, Value>,
    key: &str,
) -> Result<(u32, TimeUnit), ApiError> {
    let unit = match attributes.get("Unit").and_then(Value::as_str) {
        Some("Days") => TimeUnit::Days,
        Some("Hours") => TimeUnit::Hours,
        _ => return Err(attribute_error(index, "Unit", "unit must be Days or Hours")),
    };
    // SSM writes amounts as strings ("15"); a JSON number is accepted too.
    let amount = match attributes.get(key) {
        Some(Value::String(text)) if text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<u32>().ok()
        }
        Some(Value::Number(number)) => number.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    };
    let max = match unit {
        TimeUnit::Days => MAX_AMOUNT_DAYS,
        TimeUnit::Hours => MAX_AMOUNT_DAYS * 24,
    };
    match amount {
        Some(amount) if (1..=max).contains(&amount) => Ok((amount, unit)),
        _ => Err(attribute_error(
            index,
            key,
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

/// Parses ISO_INSTANT (`2018-12-02T21:34:33.000Z`) or ISO_OFFSET_DATE_TIME, including
/// Java's offset-with-seconds form (`2019-11-01T22:13:48.87+10:30:00`).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    // Offset with seconds: `…±HH:MM:SS`. Parse without the seconds, then apply them.
    let bytes = text.as_bytes();
    let cut = text.len().checked_sub(9)?;
    let sign = match bytes.get(cut)? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (head, seconds) = (text.get(..text.len() - 3)?, text.get(text.len() - 2..)?);
    if bytes.get(text.len() - 3) != Some(&b':') || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = seconds.parse().ok().filter(|s| *s < 60)?;
    let at = DateTime::<FixedOffset>::parse_from_rfc3339(head).ok()?;
    at.with_timezone(&Utc)
        .checked_sub_signed(TimeDelta::seconds(sign * seconds))
}

/// Something a policy makes happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEvent {
    /// Delete the parameter (policy `policy_index`, an Expiration).
    Expire {
        policy_index: usize,
        at: DateTime<Utc>,
    },
    /// The parameter expires at `expires_at`; notify now.
    ExpirationNotification {
        policy_index: usize,
        due_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// The parameter has not changed since `last_modified`.
    NoChangeNotification {
        policy_index: usize,
        due_at: DateTime<Utc>,
        last_modified: DateTime<Utc>,
    },
}

impl PolicyEvent {
    pub fn policy_index(&self) -> usize {
        match self {
            PolicyEvent::Expire { policy_index, .. }
            | PolicyEvent::ExpirationNotification { policy_index, .. }
            | PolicyEvent::NoChangeNotification { policy_index, .. } => *policy_index,
        }
    }

    pub fn due_at(&self) -> DateTime<Utc> {
        match self {
            PolicyEvent::Expire { at, .. } => *at,
            PolicyEvent::ExpirationNotification { due_at, .. }
            | PolicyEvent::NoChangeNotification { due_at, .. } => *due_at,
        }
    }

    /// What the service records once the event has been handled.
    pub fn fired(&self) -> FiredEvent {
        FiredEvent {
            policy_index: self.policy_index(),
            due_at: self.due_at(),
        }
    }
}

/// A policy firing that already happened: the policy's index and the due time it fired for.
/// A NoChangeNotification gets a new due time after each change, so it can fire again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FiredEvent {
    pub policy_index: usize,
    pub due_at: DateTime<Utc>,
}

/// SSM's `PolicyStatus`. `statuses` yields `Pending`, `InProgress` (due, not acted on yet) or
/// `Finished`. `Failed` exists for SSM parity only: the worker never gives up on a policy, it
/// retries a failed enforcement on its next scan, so the status stays `InProgress` meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyStatus {
    Pending,
    InProgress,
    Finished,
    Failed,
}

impl PolicyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyStatus::Pending => "Pending",
            PolicyStatus::InProgress => "InProgress",
            PolicyStatus::Finished => "Finished",
            PolicyStatus::Failed => "Failed",
        }
    }
}

fn expiration(policies: &[ParameterPolicy]) -> Option<DateTime<Utc>> {
    policies.iter().find_map(|p| match p {
        ParameterPolicy::Expiration { at } => Some(*at),
        _ => None,
    })
}

/// The event each policy schedules given the last modification, whether due or not.
fn scheduled(policies: &[ParameterPolicy], last_modified: DateTime<Utc>) -> Vec<PolicyEvent> {
    let expires_at = expiration(policies);
    policies
        .iter()
        .enumerate()
        .filter_map(|(policy_index, policy)| match policy {
            ParameterPolicy::Expiration { at } => Some(PolicyEvent::Expire {
                policy_index,
                at: *at,
            }),
            ParameterPolicy::ExpirationNotification { amount, unit } => {
                let expires_at = expires_at?;
                Some(PolicyEvent::ExpirationNotification {
                    policy_index,
                    due_at: expires_at.checked_sub_signed(unit.delta(*amount))?,
                    expires_at,
                })
            }
            ParameterPolicy::NoChangeNotification { amount, unit } => {
                Some(PolicyEvent::NoChangeNotification {
                    policy_index,
                    due_at: last_modified.checked_add_signed(unit.delta(*amount))?,
                    last_modified,
                })
            }
        })
        .collect()
}

/// Events to act on at `now`, not yet in `already_fired`, in due order; notifications come
/// before an expiration due at the same time, so the notice precedes the delete.
pub fn due(
    policies: &[ParameterPolicy],
    last_modified: DateTime<Utc>,
    now: DateTime<Utc>,
    already_fired: &[FiredEvent],
) -> Vec<PolicyEvent> {
    let mut events: Vec<PolicyEvent> = scheduled(policies, last_modified)
        .into_iter()
        .filter(|event| event.due_at() <= now && !already_fired.contains(&event.fired()))
        .collect();
    events.sort_by_key(|event| (event.due_at(), matches!(event, PolicyEvent::Expire { .. })));
    events
}

/// The earliest due time not yet fired, so a scheduler can sleep until then. A time at or
/// before now means "act now".
pub fn next_due(
    policies: &[ParameterPolicy],
    last_modified: DateTime<Utc>,
    already_fired: &[FiredEvent],
) -> Option<DateTime<Utc>> {
    scheduled(policies, last_modified)
        .into_iter()
        .filter(|event| !already_fired.contains(&event.fired()))
        .map(|event| event.due_at())
        .min()
}

/// Status of each policy at `now`, in order: `Finished` when its current event has fired,
/// `InProgress` when it is due but the worker has not acted yet, `Pending` otherwise (a
/// NoChangeNotification is pending again after a change).
pub fn statuses(
    policies: &[ParameterPolicy],
    last_modified: DateTime<Utc>,
    already_fired: &[FiredEvent],
    now: DateTime<Utc>,
) -> Vec<PolicyStatus> {
    let events = scheduled(policies, last_modified);
    (0..policies.len())
        .map(
            |index| match events.iter().find(|event| event.policy_index() == index) {
                Some(event) if already_fired.contains(&event.fired()) => PolicyStatus::Finished,
                Some(event) if event.due_at() <= now => PolicyStatus::InProgress,
                _ => PolicyStatus::Pending,
            },
        )
        .collect()
}
