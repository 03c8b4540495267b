//! `bosun.parameters.v1.ParameterService`: validate with the domain core → authorize →
//! read, or change and audit in one transaction.
//!
//! SecureString values are encrypted before they reach the store and decrypted only for a
//! caller holding `parameters:Decrypt` on that parameter; each decryption is audited. Plaintext
//! never appears in logs, errors or audit details.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_auth::{AuthContext, auth_context};
use bosun_core::ApiError;
use bosun_core::time::to_timestamp;
use bosun_proto::parameters::v1 as pb;
use bosun_proto::parameters::v1::parameter_service_server::{
    ParameterService, ParameterServiceServer,
};
use bosun_queue::Queue;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::cache::ReadCache;
use crate::crypto::{Envelope, MasterKeyRing, validate_key_id};
use crate::error::{PARAMETER_NOT_FOUND, PARAMETER_VERSION_NOT_FOUND, VALIDATION};
use crate::events::{ChangeEvent, ChangeOperation, EventPublisher};
use crate::keys::KeySource;
use crate::label::{label_version, unlabel_version, version_with_label};
use crate::name::{ParameterName, ParameterPath, Selector, VersionSelector};
use crate::policy::{FiredEvent, ParameterPolicy, parse_policies, statuses};
use crate::policy_worker::{Clock, SystemClock};
use crate::store::{self, ParameterRecord, VersionRecord};
use crate::value::{
    AllowedPattern, ParameterType, Tier, TierRequest, check_data_type, check_description,
    choose_tier, normalize_value,
};
use crate::versions::versions_to_drop;

/// Names per GetParameters / DeleteParameters call.
const MAX_NAMES_PER_CALL: usize = 10;
const MAX_BY_PATH_PAGE: i32 = 10;
const MAX_HISTORY_PAGE: i32 = 50;
const MAX_DESCRIBE_PAGE: i32 = 50;
/// Rows read per store round trip while filtering a listing.
const SCAN_BATCH: u64 = 200;
const MAX_TAGS_PER_PARAMETER: usize = 50;
const MAX_TAG_KEY_LENGTH: usize = 128;
const MAX_TAG_VALUE_LENGTH: usize = 256;
const MAX_FILTER_VALUES: usize = 50;
const RESOURCE_TYPE_PARAMETER: &str = "Parameter";
const DECRYPT_ACTION: &str = "parameters:Decrypt";

const INVALID_NEXT_TOKEN: &str = "InvalidNextToken";
const INVALID_FILTER_KEY: &str = "InvalidFilterKey";
const INVALID_FILTER_OPTION: &str = "InvalidFilterOption";
const INVALID_FILTER_VALUE: &str = "InvalidFilterValue";
const INVALID_RESOURCE_TYPE: &str = "InvalidResourceType";
const INVALID_RESOURCE_ID: &str = "InvalidResourceId";
const TOO_MANY_TAGS: &str = "TooManyTagsError";

pub struct ParameterServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    keys: Arc<KeySource>,
    events: EventPublisher,
    /// Poked after every committed write to a parameter with policies, so the policy worker
    /// reschedules without waiting out its sleep.
    policy_wake: Option<Arc<Notify>>,
    /// Stamps versions, so tests that move the policy worker's clock move this one too.
    clock: Arc<dyn Clock>,
    /// Serves GetParameter / GetParameters when set; see `cache` for why it is exact.
    cache: Option<ReadCache>,
}

impl ParameterServiceImpl {
    pub fn new(db: DatabaseConnection, audit: AuditLog, keys: Arc<MasterKeyRing>) -> Self {
        ParameterServiceImpl {
            db,
            audit,
            keys: Arc::new(KeySource::fixed(keys)),
            events: EventPublisher::default(),
            policy_wake: None,
            clock: Arc::new(SystemClock),
            cache: None,
        }
    }

    /// Takes master keys from `keys` (a key file re-read when it changes) instead of the fixed
    /// ring given to `new`.
    pub fn with_key_source(mut self, keys: Arc<KeySource>) -> Self {
        self.keys = keys;
        self
    }

    /// Serves reads through `cache` (give the policy worker the same one).
    pub fn with_cache(mut self, cache: ReadCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// After a change to `names` committed, before it is acknowledged: no replica may serve
    /// what was there before. Run the publishing first, then return this result.
    async fn invalidate(&self, names: &[String]) -> Result<(), ApiError> {
        match &self.cache {
            Some(cache) => cache.invalidate(names).await,
            None => Ok(()),
        }
    }

    /// The version `selector` picks, from the store.
    async fn read_store(&self, selector: &Selector) -> Result<Arc<VersionRecord>, ApiError> {
        resolve(&self.db, "get", selector)
            .await
            .map(|(_, version)| Arc::new(version))
    }

    /// The versions `selectors` pick, through the cache when there is one. Each result is
    /// on its own: a missing parameter does not fail the others.
    async fn read_versions(
        &self,
        selectors: &[&Selector],
    ) -> Vec<Result<Arc<VersionRecord>, ApiError>> {
        let mut results = Vec::with_capacity(selectors.len());
        let Some(cache) = &self.cache else {
            for selector in selectors {
                results.push(self.read_store(selector).await);
            }
            return results;
        };
        let names: Vec<&str> = selectors.iter().map(|s| s.name.as_str()).collect();
        let tokens = cache.tokens(&names);
        for (index, selector) in selectors.iter().enumerate() {
            let name = selector.name.as_str();
            let suffix = selector_suffix(&selector.version);
            let read = match tokens.as_ref().map(|tokens| tokens[index]) {
                Some(Some(token)) => match cache.get(name, &suffix, token) {
                    Some(hit) => Ok(hit),
                    None => {
                        let read = self.read_store(selector).await;
                        if let Ok(version) = &read {
                            cache.put(name, &suffix, token, Arc::clone(version));
                        }
                        read
                    }
                },
                // No token yet: one only for a parameter that exists, and what is cached
                // under it is read after it was in place.
                Some(None) => {
                    let read = self.read_store(selector).await;
                    if read.is_err() {
                        read
                    } else if let Some(token) = cache.install(name) {
                        let again = self.read_store(selector).await;
                        if let Ok(version) = &again {
                            cache.put(name, &suffix, token, Arc::clone(version));
                        }
                        again
                    } else {
                        read
                    }
                }
                None => self.read_store(selector).await,
            };
            results.push(read);
        }
        results
    }

    /// Takes modification times from `clock` (the policy worker's, in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Publishes every committed change to the `events` stream of `queue`, through the
    /// outbox in the store (run `event_relay` too, for what a crash or an outage leaves).
    pub fn with_events(mut self, queue: Arc<dyn Queue>) -> Self {
        self.events = EventPublisher::new(queue, self.db.clone());
        self
    }

    /// The publisher to run as the outbox relay (`EventPublisher::run_relay`).
    pub fn event_relay(&self) -> EventPublisher {
        self.events.clone()
    }

    /// Wakes the policy worker (`PolicyWorker::wake_handle`) after writes to parameters with
    /// policies.
    pub fn with_policy_wake(mut self, wake: Arc<Notify>) -> Self {
        self.policy_wake = Some(wake);
        self
    }

    fn wake_policy_worker(&self) {
        if let Some(wake) = &self.policy_wake {
            wake.notify_one();
        }
    }

    pub fn into_server(self) -> ParameterServiceServer<Self> {
        ParameterServiceServer::new(self)
    }
}

/// The Delete event of `parameter`, with the version it had last.
fn deleted_event(parameter: &ParameterRecord, principal: &str, now: DateTime<Utc>) -> ChangeEvent {
    ChangeEvent::new(
        ChangeOperation::Delete,
        &parameter.name,
        parameter.latest_version,
        &parameter.parameter_type,
        principal,
        now,
    )
}

// ---- authorization ------------------------------------------------------------------------

fn resource(name: &str) -> String {
    format!("parameter:{name}")
}

fn action(rpc: &str) -> String {
    format!("parameters:{rpc}")
}

fn authorize(caller: &AuthContext, rpc: &str, name: &str) -> Result<(), ApiError> {
    caller
        .authorize(&action(rpc), &resource(name), &BTreeMap::new())
        .map_err(ApiError::from)
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason(VALIDATION)
}

fn parameter_not_found(what: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("{what} parameter {name}: parameter not found"))
        .with_reason(PARAMETER_NOT_FOUND)
}

// ---- conversions --------------------------------------------------------------------------

fn type_from_proto(value: i32) -> Result<Option<ParameterType>, ApiError> {
    match pb::ParameterType::try_from(value) {
        Ok(pb::ParameterType::Unspecified) => Ok(None),
        Ok(pb::ParameterType::String) => Ok(Some(ParameterType::String)),
        Ok(pb::ParameterType::StringList) => Ok(Some(ParameterType::StringList)),
        Ok(pb::ParameterType::SecureString) => Ok(Some(ParameterType::SecureString)),
        Err(_) => Err(
            ApiError::invalid("type", "must be one of String, StringList, SecureString")
                .with_reason(crate::error::UNSUPPORTED_PARAMETER_TYPE),
        ),
    }
}

fn type_to_proto(stored: &str) -> i32 {
    match stored {
        "String" => pb::ParameterType::String as i32,
        "StringList" => pb::ParameterType::StringList as i32,
        "SecureString" => pb::ParameterType::SecureString as i32,
        _ => pb::ParameterType::Unspecified as i32,
    }
}

fn tier_from_proto(value: i32) -> Result<Option<Tier>, ApiError> {
    match pb::ParameterTier::try_from(value) {
        Ok(pb::ParameterTier::Unspecified) => Ok(None),
        Ok(pb::ParameterTier::Standard) => Ok(Some(Tier::Standard)),
        Ok(pb::ParameterTier::Advanced) => Ok(Some(Tier::Advanced)),
        Ok(pb::ParameterTier::IntelligentTiering) => Ok(Some(Tier::IntelligentTiering)),
        Err(_) => Err(invalid(
            "tier",
            "must be one of Standard, Advanced, Intelligent-Tiering",
        )),
    }
}

fn tier_to_proto(stored: &str) -> i32 {
    match stored {
        "Standard" => pb::ParameterTier::Standard as i32,
        "Advanced" => pb::ParameterTier::Advanced as i32,
        _ => pb::ParameterTier::Unspecified as i32,
    }
}

fn stored_tier(stored: &str) -> Tier {
    if stored == Tier::Advanced.as_str() {
        Tier::Advanced
    } else {
        Tier::Standard
    }
}

fn policies_to_text(policies: &[ParameterPolicy]) -> String {
    serde_json::Value::Array(policies.iter().map(ParameterPolicy::to_json).collect()).to_string()
}

/// Stored policies were canonicalised on write, so they parse; anything else is reported as
/// no policies rather than failing a read.
pub(crate) fn stored_policies(text: &str) -> Vec<ParameterPolicy> {
    if text.is_empty() {
        return Vec::new();
    }
    parse_policies(text).unwrap_or_else(|error| {
        tracing::error!(%error, "stored parameter policies do not parse");
        Vec::new()
    })
}

/// Policies with their status at `now`: Finished once the worker acted on the policy's
/// current due time (`fired`), InProgress once due but not yet acted on, Pending before.
fn inline_policies(
    text: &str,
    last_modified: DateTime<Utc>,
    fired: &[FiredEvent],
    now: DateTime<Utc>,
) -> Vec<pb::ParameterInlinePolicy> {
    let policies = stored_policies(text);
    let status = statuses(&policies, last_modified, fired, now);
    policies
        .iter()
        .zip(status)
        .map(|(policy, status)| pb::ParameterInlinePolicy {
            policy_text: policy.policy_text(),
            policy_type: policy.policy_type().to_owned(),
            policy_status: status.as_str().to_owned(),
        })
        .collect()
}

/// The firings of a parameter, read only when it has policies (most have none).
async fn fired_for<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    policies: &str,
) -> Result<Vec<FiredEvent>, ApiError> {
    if policies.is_empty() || policies == "[]" {
        return Ok(Vec::new());
    }
    store::fired_events(conn, name).await
}

fn metadata(
    record: &ParameterRecord,
    fired: &[FiredEvent],
    now: DateTime<Utc>,
) -> pb::ParameterMetadata {
    pb::ParameterMetadata {
        name: record.name.clone(),
        r#type: type_to_proto(&record.parameter_type),
        key_id: record.key_id.clone(),
        last_modified_date: Some(to_timestamp(record.last_modified_at)),
        last_modified_user: record.last_modified_user.clone(),
        description: record.description.clone(),
        allowed_pattern: record.allowed_pattern.clone(),
        version: record.latest_version,
        tier: tier_to_proto(&record.tier),
        policies: inline_policies(&record.policies, record.last_modified_at, fired, now),
        data_type: record.data_type.clone(),
    }
}

fn selector_suffix(selector: &VersionSelector) -> String {
    match selector {
        VersionSelector::Latest => String::new(),
        VersionSelector::Version(version) => format!(":{version}"),
        VersionSelector::Label(label) => format!(":{label}"),
    }
}

fn is_secure(version: &VersionRecord) -> bool {
    version.parameter_type == ParameterType::SecureString.as_str()
}

// ---- paging and filters -------------------------------------------------------------------

fn decode_token(token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid("next_token", "is not a token this server issued")
                .with_reason(INVALID_NEXT_TOKEN)
        })
}

fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

fn page_size(requested: i32, max: i32) -> Result<usize, ApiError> {
    match requested {
        0 => Ok(max.unsigned_abs() as usize),
        n if (1..=max).contains(&n) => Ok(n.unsigned_abs() as usize),
        _ => Err(invalid("max_results", format!("must be 1 to {max}"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchOption {
    Equals,
    BeginsWith,
    Contains,
}

impl MatchOption {
    fn matches(self, text: &str, values: &[String]) -> bool {
        values.iter().any(|value| match self {
            MatchOption::Equals => text == value,
            MatchOption::BeginsWith => text.starts_with(value.as_str()),
            MatchOption::Contains => text.contains(value.as_str()),
        })
    }
}

/// One checked filter of GetParametersByPath or DescribeParameters.
#[derive(Debug, Clone)]
enum Filter {
    Name(MatchOption, Vec<String>),
    Type(Vec<String>),
    KeyId(MatchOption, Vec<String>),
    Path {
        recursive: bool,
        paths: Vec<ParameterPath>,
    },
    Label(Vec<String>),
    Tier(Vec<String>),
    DataType(Vec<String>),
    /// A tag with this key, and one of the values when any are given.
    Tag(String, Vec<String>),
}

/// Which filter keys a request accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterSet {
    ByPath,
    Describe,
}

fn filter_error(field: String, rule: impl Into<String>, reason: &'static str) -> ApiError {
    ApiError::invalid(field, rule).with_reason(reason)
}

fn parse_filters(
    field: &str,
    filters: &[pb::ParameterStringFilter],
    set: FilterSet,
) -> Result<Vec<Filter>, ApiError> {
    filters
        .iter()
        .enumerate()
        .map(|(index, filter)| parse_filter(&format!("{field}[{index}]"), filter, set))
        .collect()
}

fn parse_filter(
    field: &str,
    filter: &pb::ParameterStringFilter,
    set: FilterSet,
) -> Result<Filter, ApiError> {
    let key = filter.key.as_str();
    let by_path_key = matches!(key, "Type" | "KeyId" | "Label");
    let describe_key = by_path_key
        || matches!(key, "Name" | "Path" | "Tier" | "DataType")
        || key.strip_prefix("tag:").is_some_and(|k| !k.is_empty());
    let known = match set {
        FilterSet::ByPath => by_path_key,
        FilterSet::Describe => describe_key,
    };
    if !known {
        let allowed = match set {
            FilterSet::ByPath => "Type, KeyId or Label",
            FilterSet::Describe => "Name, Type, KeyId, Path, Label, Tier, DataType or tag:<key>",
        };
        return Err(filter_error(
            format!("{field}.key"),
            format!("must be {allowed}"),
            INVALID_FILTER_KEY,
        ));
    }
    let values = &filter.values;
    let is_tag = key.starts_with("tag:");
    if (values.is_empty() && !is_tag) || values.len() > MAX_FILTER_VALUES {
        return Err(filter_error(
            format!("{field}.values"),
            format!("must hold 1 to {MAX_FILTER_VALUES} values"),
            INVALID_FILTER_VALUE,
        ));
    }
    if values.iter().any(String::is_empty) {
        return Err(filter_error(
            format!("{field}.values"),
            "must not hold empty values",
            INVALID_FILTER_VALUE,
        ));
    }
    let option_error = |allowed: &str| {
        filter_error(
            format!("{field}.option"),
            format!("must be {allowed} for the {key} filter"),
            INVALID_FILTER_OPTION,
        )
    };
    let option = filter.option.as_str();
    let equals_only = |filter: Filter| match option {
        "" | "Equals" => Ok(filter),
        _ => Err(option_error("Equals")),
    };
    match key {
        "Name" => {
            let option = match option {
                "" | "Equals" => MatchOption::Equals,
                "BeginsWith" => MatchOption::BeginsWith,
                "Contains" => MatchOption::Contains,
                _ => return Err(option_error("Equals, BeginsWith or Contains")),
            };
            Ok(Filter::Name(option, values.clone()))
        }
        "Type" => {
            for value in values {
                if value.parse::<ParameterType>().is_err() {
                    return Err(filter_error(
                        format!("{field}.values"),
                        "must be String, StringList or SecureString",
                        INVALID_FILTER_VALUE,
                    ));
                }
            }
            equals_only(Filter::Type(values.clone()))
        }
        "KeyId" => {
            let option = match option {
                "" | "Equals" => MatchOption::Equals,
                "BeginsWith" => MatchOption::BeginsWith,
                _ => return Err(option_error("Equals or BeginsWith")),
            };
            Ok(Filter::KeyId(option, values.clone()))
        }
        "Path" => {
            let recursive = match option {
                "" | "OneLevel" => false,
                "Recursive" => true,
                _ => return Err(option_error("OneLevel or Recursive")),
            };
            let paths = values
                .iter()
                .map(|value| {
                    ParameterPath::parse_field(&format!("{field}.values"), value).map_err(|_| {
                        filter_error(
                            format!("{field}.values"),
                            "must be paths such as /app/prod",
                            INVALID_FILTER_VALUE,
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Filter::Path { recursive, paths })
        }
        "Label" => equals_only(Filter::Label(values.clone())),
        "Tier" => {
            for value in values {
                if !matches!(value.as_str(), "Standard" | "Advanced") {
                    return Err(filter_error(
                        format!("{field}.values"),
                        "must be Standard or Advanced",
                        INVALID_FILTER_VALUE,
                    ));
                }
            }
            equals_only(Filter::Tier(values.clone()))
        }
        "DataType" => equals_only(Filter::DataType(values.clone())),
        _ => {
            let tag_key = key.strip_prefix("tag:").unwrap_or_default().to_owned();
            equals_only(Filter::Tag(tag_key, values.clone()))
        }
    }
}

/// SSM's legacy `Filters` (Name, Type, KeyId) as parameter filters. The legacy Name filter
/// matches a prefix of the name.
fn legacy_filters(filters: &[pb::ParametersFilter]) -> Result<Vec<Filter>, ApiError> {
    filters
        .iter()
        .enumerate()
        .map(|(index, filter)| {
            let field = format!("filters[{index}]");
            let option = match filter.key.as_str() {
                "Name" => "BeginsWith",
                "Type" | "KeyId" => "Equals",
                _ => {
                    return Err(filter_error(
                        format!("{field}.key"),
                        "must be Name, Type or KeyId",
                        INVALID_FILTER_KEY,
                    ));
                }
            };
            parse_filter(
                &field,
                &pb::ParameterStringFilter {
                    key: filter.key.clone(),
                    option: option.to_owned(),
                    values: filter.values.clone(),
                },
                FilterSet::Describe,
            )
        })
        .collect()
}

/// Whether `record` passes every filter. Labels and tags are read only when a filter needs
/// them.
async fn passes<C: ConnectionTrait>(
    conn: &C,
    record: &ParameterRecord,
    name: &ParameterName,
    filters: &[Filter],
) -> Result<bool, ApiError> {
    for filter in filters {
        let pass = match filter {
            Filter::Name(option, values) => {
                // SSM matches names with or without their leading `/`.
                let bare = record.name.strip_prefix('/').unwrap_or(&record.name);
                option.matches(&record.name, values) || option.matches(bare, values)
            }
            Filter::Type(values) => values.contains(&record.parameter_type),
            Filter::KeyId(option, values) => {
                !record.key_id.is_empty() && option.matches(&record.key_id, values)
            }
            Filter::Path { recursive, paths } => {
                paths.iter().any(|path| name.is_under(path, *recursive))
            }
            Filter::Label(values) => {
                let labels = store::labels(conn, &record.name).await?;
                values.iter().any(|value| labels.contains_key(value))
            }
            Filter::Tier(values) => values.contains(&record.tier),
            Filter::DataType(values) => values.contains(&record.data_type),
            Filter::Tag(key, values) => {
                let tags = store::tags(conn, &record.name).await?;
                tags.get(key)
                    .is_some_and(|value| values.is_empty() || values.contains(value))
            }
        };
        if !pass {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---- tags ---------------------------------------------------------------------------------

fn check_tags(field: &str, tags: &[pb::Tag]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut checked = BTreeMap::new();
    for (index, tag) in tags.iter().enumerate() {
        let key = tag.key.trim();
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY_LENGTH {
            return Err(invalid(
                format!("{field}[{index}].key"),
                format!("must be 1 to {MAX_TAG_KEY_LENGTH} characters"),
            ));
        }
        if key
            .get(..4)
            .is_some_and(|head| head.eq_ignore_ascii_case("aws:"))
        {
            return Err(invalid(
                format!("{field}[{index}].key"),
                "must not start with 'aws:'",
            ));
        }
        if tag.value.chars().count() > MAX_TAG_VALUE_LENGTH {
            return Err(invalid(
                format!("{field}[{index}].value"),
                format!("must be at most {MAX_TAG_VALUE_LENGTH} characters"),
            ));
        }
        checked.insert(key.to_owned(), tag.value.clone());
    }
    if checked.len() > MAX_TAGS_PER_PARAMETER {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_TAGS_PER_PARAMETER} tags per parameter"),
        )
        .with_reason(TOO_MANY_TAGS));
    }
    Ok(checked)
}

fn tags_to_proto(tags: &BTreeMap<String, String>) -> Vec<pb::Tag> {
    tags.iter()
        .map(|(key, value)| pb::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn resource_type(value: &str) -> Result<(), ApiError> {
    if value != RESOURCE_TYPE_PARAMETER {
        return Err(ApiError::invalid("resource_type", "must be Parameter")
            .with_reason(INVALID_RESOURCE_TYPE));
    }
    Ok(())
}

fn resource_missing(what: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("{what} parameter {name}: parameter not found"))
        .with_reason(INVALID_RESOURCE_ID)
}

// ---- writes -------------------------------------------------------------------------------

/// A PutParameter request after the checks that need no stored state.
struct PutRequest {
    name: ParameterName,
    value: String,
    parameter_type: Option<ParameterType>,
    tier: Option<Tier>,
    key_id: Option<String>,
    description: Option<String>,
    allowed_pattern: Option<AllowedPattern>,
    policies: Option<Vec<ParameterPolicy>>,
    data_type: &'static str,
    overwrite: bool,
    tags: BTreeMap<String, String>,
    principal: String,
}

impl PutRequest {
    fn check(body: &pb::PutParameterRequest, principal: String) -> Result<Self, ApiError> {
        let name = ParameterName::parse(&body.name)?;
        let parameter_type = type_from_proto(body.r#type)?;
        let tier = tier_from_proto(body.tier)?;
        check_description(&body.description)?;
        let data_type = check_data_type(&body.data_type)?;
        let allowed_pattern = if body.allowed_pattern.is_empty() {
            None
        } else {
            Some(AllowedPattern::parse(&body.allowed_pattern)?)
        };
        let policies = if body.policies.is_empty() {
            None
        } else {
            Some(parse_policies(&body.policies)?)
        };
        if !body.key_id.is_empty() {
            validate_key_id(&body.key_id)?;
        }
        if body.overwrite && !body.tags.is_empty() {
            return Err(invalid(
                "tags",
                "cannot be given with overwrite; use AddTagsToResource on an existing parameter",
            ));
        }
        let tags = check_tags("tags", &body.tags)?;
        Ok(PutRequest {
            name,
            value: body.value.clone(),
            parameter_type,
            tier,
            key_id: (!body.key_id.is_empty()).then(|| body.key_id.clone()),
            description: (!body.description.is_empty()).then(|| body.description.clone()),
            allowed_pattern,
            policies,
            data_type,
            overwrite: body.overwrite,
            tags,
            principal,
        })
    }
}

/// What a committed PutParameter did, for the response and the change event.
struct PutOutcome {
    version: i64,
    tier: Tier,
    created: bool,
    parameter_type: ParameterType,
    has_policies: bool,
}

/// Applies a PutParameter in `txn`.
async fn put(
    txn: &DatabaseTransaction,
    keys: &KeySource,
    request: PutRequest,
    now: DateTime<Utc>,
) -> Result<PutOutcome, ApiError> {
    let name = request.name.as_str();
    let current = store::get_parameter(txn, name).await?;
    if current.is_some() && !request.overwrite {
        return Err(ApiError::already_exists(format!(
            "put parameter {name}: it already exists; set overwrite to add a version"
        ))
        .with_reason(crate::error::PARAMETER_ALREADY_EXISTS));
    }
    let current_type = current
        .as_ref()
        .and_then(|record| record.parameter_type.parse::<ParameterType>().ok());
    let parameter_type = match (request.parameter_type, current_type) {
        (Some(asked), Some(stored)) if asked != stored => {
            return Err(invalid(
                "type",
                format!("put parameter {name}: cannot change the type from {stored} to {asked}"),
            ));
        }
        (Some(asked), _) => asked,
        (None, Some(stored)) => stored,
        (None, None) => {
            return Err(invalid(
                "type",
                format!("put parameter {name}: type is required to create a parameter"),
            ));
        }
    };
    let value = normalize_value(name, &request.value, parameter_type)?;
    // The new pattern when given, else the stored one: every write is checked.
    let pattern = match (&request.allowed_pattern, &current) {
        (Some(pattern), _) => Some(pattern.clone()),
        (None, Some(record)) if !record.allowed_pattern.is_empty() => {
            Some(AllowedPattern::parse(&record.allowed_pattern)?)
        }
        _ => None,
    };
    if let Some(pattern) = &pattern {
        pattern.check(name, &value)?;
    }
    // A new policies value replaces the old ones (`[{}]` removes them); none keeps them.
    let policies = match (&request.policies, &current) {
        (Some(policies), _) => policies.clone(),
        (None, Some(record)) => stored_policies(&record.policies),
        (None, None) => Vec::new(),
    };
    let current_tier = current.as_ref().map(|record| stored_tier(&record.tier));
    let (standard_count, advanced_count) = store::count_by_tier(txn).await?;
    let tier = choose_tier(
        name,
        &TierRequest {
            requested: request.tier.or(current_tier).unwrap_or(Tier::Standard),
            current: current_tier,
            value_bytes: value.len(),
            has_policies: !policies.is_empty(),
            standard_count,
            advanced_count,
        },
    )?;
    crate::policy::check_policies_tier(&policies, tier)?;
    let key_id = if parameter_type == ParameterType::SecureString {
        let stored_key = current
            .as_ref()
            .filter(|record| !record.key_id.is_empty())
            .map(|record| record.key_id.clone());
        request
            .key_id
            .clone()
            .or(stored_key)
            .unwrap_or_else(|| keys.current().default_key_id().to_owned())
    } else {
        if request.key_id.is_some() {
            return Err(invalid(
                "key_id",
                format!("put parameter {name}: key_id applies only to SecureString parameters"),
            ));
        }
        String::new()
    };
    let stored_value = if parameter_type == ParameterType::SecureString {
        keys.with_ring(|ring| ring.encrypt(&request.name, &value, &key_id))?
            .to_base64()
    } else {
        value
    };
    let description = request
        .description
        .clone()
        .or_else(|| current.as_ref().map(|record| record.description.clone()))
        .unwrap_or_default();
    let version = current
        .as_ref()
        .map_or(1, |record| record.latest_version.saturating_add(1));
    let record = ParameterRecord {
        name: name.to_owned(),
        parameter_type: parameter_type.as_str().to_owned(),
        tier: tier.as_str().to_owned(),
        key_id: key_id.clone(),
        description: description.clone(),
        allowed_pattern: pattern
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        data_type: request.data_type.to_owned(),
        latest_version: version,
        last_modified_at: now,
        last_modified_user: request.principal.clone(),
        policies: policies_to_text(&policies),
    };
    let next = VersionRecord {
        name: name.to_owned(),
        version,
        value: stored_value,
        parameter_type: record.parameter_type.clone(),
        key_id,
        description,
        allowed_pattern: record.allowed_pattern.clone(),
        tier: record.tier.clone(),
        policies: record.policies.clone(),
        data_type: record.data_type.clone(),
        modified_at: now,
        modified_by: request.principal.clone(),
    };
    let created = current.is_none();
    match current {
        None => {
            store::insert_parameter(txn, &record, &next).await?;
            store::put_tags(txn, name, &request.tags).await?;
        }
        Some(current) => {
            // Firings are keyed by policy index; once the policies change, they are stale.
            if current.policies != record.policies {
                store::clear_fired_events(txn, name).await?;
            }
            let labelled = store::version_labels(txn, name).await?;
            let drop = versions_to_drop(
                name,
                labelled
                    .iter()
                    .map(|(version, labels)| (*version, labels.len())),
            )?;
            store::overwrite_parameter(txn, &record, current.latest_version, &next).await?;
            let drop: Vec<i64> = drop
                .into_iter()
                .filter_map(|v| i64::try_from(v).ok())
                .collect();
            store::delete_versions(txn, name, &drop).await?;
        }
    }
    Ok(PutOutcome {
        version,
        tier,
        created,
        parameter_type,
        has_policies: !policies.is_empty(),
    })
}

// ---- reads --------------------------------------------------------------------------------

/// The parameter and the version a selector picks.
async fn resolve<C: ConnectionTrait>(
    conn: &C,
    what: &str,
    selector: &Selector,
) -> Result<(ParameterRecord, VersionRecord), ApiError> {
    let name = selector.name.as_str();
    let parameter = store::get_parameter(conn, name)
        .await?
        .ok_or_else(|| parameter_not_found(what, name))?;
    let number = match &selector.version {
        VersionSelector::Latest => parameter.latest_version,
        VersionSelector::Version(version) => i64::try_from(*version).unwrap_or(i64::MAX),
        VersionSelector::Label(label) => {
            let labels = store::version_labels(conn, name).await?;
            let version = version_with_label(&labels, label).ok_or_else(|| {
                ApiError::not_found(format!(
                    "{what} parameter {name}: no version carries label {label}"
                ))
                .with_reason(PARAMETER_VERSION_NOT_FOUND)
            })?;
            i64::try_from(version).unwrap_or(i64::MAX)
        }
    };
    let version = store::get_version(conn, name, number)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{what} parameter {name}: version {number} not found"
            ))
            .with_reason(PARAMETER_VERSION_NOT_FOUND)
        })?;
    Ok((parameter, version))
}

/// A parameter value read on a caller's behalf by another service (Run Command's
/// `{{ssm:/name}}` references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainValue {
    /// `String`, `StringList` or `SecureString`.
    pub parameter_type: String,
    /// The value as stored (StringList comma-separated); empty for a SecureString, which is
    /// never decrypted here.
    pub value: String,
}

/// The value of parameter `name` (at `version`, else the latest) as `caller` may read it:
/// needs `parameters:GetParameter` on `parameter:<name>` (PERMISSION_DENIED otherwise).
/// A malformed name is INVALID_ARGUMENT; a missing parameter or version NOT_FOUND
/// (`ParameterNotFound`, `ParameterVersionNotFound`). A SecureString comes back with its
/// type and an empty value: the caller decides to refuse it.
pub async fn read_for_caller<C: ConnectionTrait>(
    conn: &C,
    caller: &AuthContext,
    name: &str,
    version: Option<u64>,
) -> Result<PlainValue, ApiError> {
    let name = ParameterName::parse_field("name", name)?;
    authorize(caller, "GetParameter", name.as_str())?;
    let selector = Selector {
        name,
        version: version.map_or(VersionSelector::Latest, VersionSelector::Version),
    };
    let (_, version) = resolve(conn, "get", &selector).await?;
    let secure = version.parameter_type == ParameterType::SecureString.as_str();
    Ok(PlainValue {
        value: if secure { String::new() } else { version.value },
        parameter_type: version.parameter_type,
    })
}

impl ParameterServiceImpl {
    /// Refuses, and audits the refusal, when the caller may not decrypt `name`.
    async fn check_decrypt<T>(
        &self,
        request: &Request<T>,
        caller: &AuthContext,
        name: &str,
    ) -> Result<(), ApiError> {
        if let Err(denied) = caller.authorize(DECRYPT_ACTION, &resource(name), &BTreeMap::new()) {
            self.audit
                .record(
                    AuditRecord::for_request(request, caller, DECRYPT_ACTION, &resource(name))
                        .outcome(AuditOutcome::Denied),
                )
                .await?;
            return Err(denied.into());
        }
        Ok(())
    }

    /// The value to return: the stored one, or for a SecureString read with decryption the
    /// plaintext, after `check_decrypt` passed. Each decryption is audited (never the value).
    async fn reveal<T>(
        &self,
        request: &Request<T>,
        caller: &AuthContext,
        version: &VersionRecord,
        with_decryption: bool,
    ) -> Result<String, ApiError> {
        if !with_decryption || !is_secure(version) {
            return Ok(version.value.clone());
        }
        let name = ParameterName::parse(&version.name)?;
        let envelope = Envelope::from_base64(&version.value)?;
        let plaintext = self.keys.with_ring(|ring| ring.decrypt(&name, &envelope))?;
        self.audit
            .record(
                AuditRecord::for_request(request, caller, DECRYPT_ACTION, &resource(&version.name))
                    .details(serde_json::json!({ "version": version.version })),
            )
            .await?;
        Ok(plaintext.expose_secret().to_owned())
    }

    fn parameter(version: &VersionRecord, selector: String, value: String) -> pb::Parameter {
        pb::Parameter {
            name: version.name.clone(),
            r#type: type_to_proto(&version.parameter_type),
            value,
            version: version.version,
            selector,
            last_modified_date: Some(to_timestamp(version.modified_at)),
            data_type: version.data_type.clone(),
        }
    }
}

fn check_names(names: &[String]) -> Result<(), ApiError> {
    if names.is_empty() || names.len() > MAX_NAMES_PER_CALL {
        return Err(invalid(
            "names",
            format!("must name 1 to {MAX_NAMES_PER_CALL} parameters"),
        ));
    }
    Ok(())
}

fn version_number(field: &str, version: i64, allow_latest: bool) -> Result<Option<i64>, ApiError> {
    match version {
        0 if allow_latest => Ok(None),
        v if v >= 1 => Ok(Some(v)),
        _ => Err(invalid(
            field,
            if allow_latest {
                "must be a version number, or 0 for the latest"
            } else {
                "must be a version number from 1"
            },
        )),
    }
}

#[tonic::async_trait]
impl ParameterService for ParameterServiceImpl {
    async fn put_parameter(
        &self,
        request: Request<pb::PutParameterRequest>,
    ) -> Result<Response<pb::PutParameterResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let checked = PutRequest::check(body, caller.principal.to_string())?;
        let name = checked.name.to_string();
        let record =
            AuditRecord::for_request(&request, &caller, &action("PutParameter"), &resource(&name))
                .details(serde_json::json!({
                    "overwrite": body.overwrite,
                    "type": checked.parameter_type.map(ParameterType::as_str),
                    "tier": checked.tier.map(Tier::as_str),
                }));
        let authorization = authorize(&caller, "PutParameter", &name);
        let keys = Arc::clone(&self.keys);
        let now = self.clock.now();
        let events = self.events.clone();
        let principal = caller.principal.to_string();
        let changed = name.clone();
        let outcome = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let outcome = put(txn, &keys, checked, now).await?;
                    let operation = if outcome.created {
                        ChangeOperation::Create
                    } else {
                        ChangeOperation::Update
                    };
                    let event = ChangeEvent::new(
                        operation,
                        &changed,
                        outcome.version,
                        outcome.parameter_type.as_str(),
                        &principal,
                        now,
                    );
                    events.stage(txn, &[event]).await?;
                    Ok(outcome)
                })
            })
            .await?;
        let invalidated = self.invalidate(std::slice::from_ref(&name)).await;
        self.events.flush_after_commit().await;
        // A write that removed the policies also changes the worker's schedule.
        if outcome.has_policies || !body.policies.is_empty() {
            self.wake_policy_worker();
        }
        invalidated?;
        Ok(Response::new(pb::PutParameterResponse {
            version: outcome.version,
            tier: tier_to_proto(outcome.tier.as_str()),
        }))
    }

    async fn get_parameter(
        &self,
        request: Request<pb::GetParameterRequest>,
    ) -> Result<Response<pb::GetParameterResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let selector = Selector::parse(&body.name)?;
        authorize(&caller, "GetParameter", selector.name.as_str())?;
        let version = self
            .read_versions(&[&selector])
            .await
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("get parameter: no read result")))?;
        if body.with_decryption && is_secure(&version) {
            self.check_decrypt(&request, &caller, &version.name).await?;
        }
        let value = self
            .reveal(&request, &caller, &version, body.with_decryption)
            .await?;
        Ok(Response::new(pb::GetParameterResponse {
            parameter: Some(Self::parameter(
                &version,
                selector_suffix(&selector.version),
                value,
            )),
        }))
    }

    async fn get_parameters(
        &self,
        request: Request<pb::GetParametersRequest>,
    ) -> Result<Response<pb::GetParametersResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        check_names(&body.names)?;
        let mut selectors = Vec::new();
        let mut seen = BTreeSet::new();
        for (index, text) in body.names.iter().enumerate() {
            let selector = Selector::parse_field(&format!("names[{index}]"), text)?;
            if seen.insert(selector.to_string()) {
                selectors.push((text.clone(), selector));
            }
        }
        for (_, selector) in &selectors {
            authorize(&caller, "GetParameters", selector.name.as_str())?;
        }
        let mut found = Vec::new();
        let mut invalid_parameters = Vec::new();
        let wanted: Vec<&Selector> = selectors.iter().map(|(_, selector)| selector).collect();
        let read = self.read_versions(&wanted).await;
        for ((text, selector), read) in selectors.into_iter().zip(read) {
            match read {
                Ok(version) => found.push((selector, version)),
                Err(ApiError::NotFound { .. }) => invalid_parameters.push(text),
                Err(other) => return Err(other.into()),
            }
        }
        if body.with_decryption {
            for (_, version) in found.iter().filter(|(_, version)| is_secure(version)) {
                self.check_decrypt(&request, &caller, &version.name).await?;
            }
        }
        found.sort_by(|a, b| a.1.name.cmp(&b.1.name).then(a.1.version.cmp(&b.1.version)));
        let mut parameters = Vec::with_capacity(found.len());
        for (selector, version) in found {
            let value = self
                .reveal(&request, &caller, &version, body.with_decryption)
                .await?;
            parameters.push(Self::parameter(
                &version,
                selector_suffix(&selector.version),
                value,
            ));
        }
        Ok(Response::new(pb::GetParametersResponse {
            parameters,
            invalid_parameters,
        }))
    }

    async fn get_parameters_by_path(
        &self,
        request: Request<pb::GetParametersByPathRequest>,
    ) -> Result<Response<pb::GetParametersByPathResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let path = ParameterPath::parse(&body.path)?;
        let filters = parse_filters(
            "parameter_filters",
            &body.parameter_filters,
            FilterSet::ByPath,
        )?;
        let limit = page_size(body.max_results, MAX_BY_PATH_PAGE)?;
        let mut after = decode_token(&body.next_token)?;
        let prefix = if path.is_root() {
            String::new()
        } else {
            format!("{path}/")
        };
        let label_values: Option<&Vec<String>> = filters.iter().find_map(|filter| match filter {
            Filter::Label(values) => Some(values),
            _ => None,
        });
        let mut page: Vec<(String, VersionRecord)> = Vec::new();
        let mut next_token = String::new();
        'scan: loop {
            let batch =
                store::list_parameters(&self.db, &prefix, after.as_deref(), SCAN_BATCH).await?;
            let exhausted = (batch.len() as u64) < SCAN_BATCH;
            for record in batch {
                after = Some(record.name.clone());
                let Ok(name) = ParameterName::parse(&record.name) else {
                    continue;
                };
                if !name.is_under(&path, body.recursive)
                    || !caller.is_allowed(
                        &action("GetParametersByPath"),
                        &resource(&record.name),
                        &BTreeMap::new(),
                    )
                    || !passes(&self.db, &record, &name, &filters).await?
                {
                    continue;
                }
                // With a Label filter the labelled version is returned, as SSM does.
                let (number, selector) = match label_values {
                    None => (record.latest_version, String::new()),
                    Some(values) => {
                        let labels = store::labels(&self.db, &record.name).await?;
                        match values.iter().find_map(|v| labels.get(v).map(|n| (*n, v))) {
                            Some((number, label)) => (number, format!(":{label}")),
                            None => continue,
                        }
                    }
                };
                let Some(version) = store::get_version(&self.db, &record.name, number).await?
                else {
                    continue;
                };
                page.push((selector, version));
                if page.len() == limit {
                    next_token = encode_token(&record.name);
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
        }
        if body.with_decryption {
            for (_, version) in page.iter().filter(|(_, version)| is_secure(version)) {
                self.check_decrypt(&request, &caller, &version.name).await?;
            }
        }
        let mut parameters = Vec::with_capacity(page.len());
        for (selector, version) in page {
            let value = self
                .reveal(&request, &caller, &version, body.with_decryption)
                .await?;
            parameters.push(Self::parameter(&version, selector, value));
        }
        Ok(Response::new(pb::GetParametersByPathResponse {
            parameters,
            next_token,
        }))
    }

    async fn delete_parameter(
        &self,
        request: Request<pb::DeleteParameterRequest>,
    ) -> Result<Response<pb::DeleteParameterResponse>, Status> {
        let caller = auth_context(&request)?;
        let name = ParameterName::parse(&request.get_ref().name)?.into_string();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("DeleteParameter"),
            &resource(&name),
        );
        let authorization = authorize(&caller, "DeleteParameter", &name);
        let events = self.events.clone();
        let principal = caller.principal.to_string();
        let now = self.clock.now();
        let deleted = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let parameter = store::get_parameter(txn, &name)
                        .await?
                        .ok_or_else(|| parameter_not_found("delete", &name))?;
                    store::delete_parameter(txn, &name).await?;
                    events
                        .stage(txn, &[deleted_event(&parameter, &principal, now)])
                        .await?;
                    Ok(parameter)
                })
            })
            .await?;
        let invalidated = self.invalidate(std::slice::from_ref(&deleted.name)).await;
        self.events.flush_after_commit().await;
        invalidated?;
        Ok(Response::new(pb::DeleteParameterResponse {}))
    }

    async fn delete_parameters(
        &self,
        request: Request<pb::DeleteParametersRequest>,
    ) -> Result<Response<pb::DeleteParametersResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        check_names(&body.names)?;
        let mut names = Vec::new();
        for (index, text) in body.names.iter().enumerate() {
            let name = ParameterName::parse_field(&format!("names[{index}]"), text)?.into_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let records = names
            .iter()
            .map(|name| {
                AuditRecord::for_request(
                    &request,
                    &caller,
                    &action("DeleteParameters"),
                    &resource(name),
                )
            })
            .collect();
        let authorization = names
            .iter()
            .try_for_each(|name| authorize(&caller, "DeleteParameters", name));
        let events = self.events.clone();
        let principal = caller.principal.to_string();
        let now = self.clock.now();
        let (deleted_parameters, invalid_parameters) = self
            .audit
            .audited(records, authorization, move |txn| {
                Box::pin(async move {
                    let mut deleted = Vec::new();
                    let mut missing = Vec::new();
                    for name in names {
                        match store::get_parameter(txn, &name).await? {
                            Some(parameter) => {
                                store::delete_parameter(txn, &name).await?;
                                deleted.push(parameter);
                            }
                            None => missing.push(name),
                        }
                    }
                    let staged: Vec<ChangeEvent> = deleted
                        .iter()
                        .map(|parameter| deleted_event(parameter, &principal, now))
                        .collect();
                    events.stage(txn, &staged).await?;
                    Ok((deleted, missing))
                })
            })
            .await?;
        let names: Vec<String> = deleted_parameters.iter().map(|p| p.name.clone()).collect();
        let invalidated = self.invalidate(&names).await;
        self.events.flush_after_commit().await;
        invalidated?;
        Ok(Response::new(pb::DeleteParametersResponse {
            deleted_parameters: deleted_parameters.into_iter().map(|p| p.name).collect(),
            invalid_parameters,
        }))
    }

    async fn get_parameter_history(
        &self,
        request: Request<pb::GetParameterHistoryRequest>,
    ) -> Result<Response<pb::GetParameterHistoryResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let name = ParameterName::parse(&body.name)?;
        let limit = page_size(body.max_results, MAX_HISTORY_PAGE)?;
        let after = match decode_token(&body.next_token)? {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                ApiError::invalid("next_token", "is not a token this server issued")
                    .with_reason(INVALID_NEXT_TOKEN)
            })?),
        };
        authorize(&caller, "GetParameterHistory", name.as_str())?;
        if store::get_parameter(&self.db, name.as_str())
            .await?
            .is_none()
        {
            return Err(parameter_not_found("read the history of", name.as_str()).into());
        }
        let mut versions =
            store::list_versions(&self.db, name.as_str(), after, limit as u64 + 1).await?;
        let next_token = if versions.len() > limit {
            versions.truncate(limit);
            versions
                .last()
                .map(|v| encode_token(&v.version.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        if body.with_decryption && versions.iter().any(is_secure) {
            self.check_decrypt(&request, &caller, name.as_str()).await?;
        }
        let fired = if versions
            .iter()
            .any(|v| !v.policies.is_empty() && v.policies != "[]")
        {
            store::fired_events(&self.db, name.as_str()).await?
        } else {
            Vec::new()
        };
        let mut labels: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (label, version) in store::labels(&self.db, name.as_str()).await? {
            labels.entry(version).or_default().push(label);
        }
        let mut parameters = Vec::with_capacity(versions.len());
        for version in versions {
            let value = self
                .reveal(&request, &caller, &version, body.with_decryption)
                .await?;
            parameters.push(pb::ParameterHistory {
                name: version.name.clone(),
                r#type: type_to_proto(&version.parameter_type),
                key_id: version.key_id.clone(),
                last_modified_date: Some(to_timestamp(version.modified_at)),
                last_modified_user: version.modified_by.clone(),
                description: version.description.clone(),
                value,
                allowed_pattern: version.allowed_pattern.clone(),
                version: version.version,
                labels: labels.remove(&version.version).unwrap_or_default(),
                tier: tier_to_proto(&version.tier),
                policies: inline_policies(
                    &version.policies,
                    version.modified_at,
                    &fired,
                    self.clock.now(),
                ),
                data_type: version.data_type.clone(),
            });
        }
        Ok(Response::new(pb::GetParameterHistoryResponse {
            parameters,
            next_token,
        }))
    }

    async fn label_parameter_version(
        &self,
        request: Request<pb::LabelParameterVersionRequest>,
    ) -> Result<Response<pb::LabelParameterVersionResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let name = ParameterName::parse(&body.name)?.into_string();
        let asked = version_number("parameter_version", body.parameter_version, true)?;
        let requested = body.labels.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("LabelParameterVersion"),
            &resource(&name),
        )
        .details(serde_json::json!({
            "parameter_version": body.parameter_version,
            "labels": body.labels,
        }));
        let authorization = authorize(&caller, "LabelParameterVersion", &name);
        let events = self.events.clone();
        let principal = caller.principal.to_string();
        let now = self.clock.now();
        let outcome = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let parameter = store::get_parameter(txn, &name)
                        .await?
                        .ok_or_else(|| parameter_not_found("label", &name))?;
                    let number = asked.unwrap_or(parameter.latest_version);
                    let mut labels = store::version_labels(txn, &name).await?;
                    let outcome =
                        label_version(&name, &mut labels, number.unsigned_abs(), &requested)?;
                    for label in &outcome.added {
                        store::set_label(txn, &name, label, number).await?;
                    }
                    let changed = !outcome.added.is_empty();
                    if changed {
                        let event = ChangeEvent::new(
                            ChangeOperation::LabelParameterVersion,
                            &parameter.name,
                            number,
                            &parameter.parameter_type,
                            &principal,
                            now,
                        );
                        events.stage(txn, &[event]).await?;
                    }
                    Ok((outcome.invalid_labels, number, changed, parameter))
                })
            })
            .await?;
        let (invalid_labels, parameter_version, changed, parameter) = outcome;
        let mut invalidated = Ok(());
        if changed {
            invalidated = self.invalidate(std::slice::from_ref(&parameter.name)).await;
            self.events.flush_after_commit().await;
        }
        invalidated?;
        Ok(Response::new(pb::LabelParameterVersionResponse {
            invalid_labels,
            parameter_version,
        }))
    }

    async fn unlabel_parameter_version(
        &self,
        request: Request<pb::UnlabelParameterVersionRequest>,
    ) -> Result<Response<pb::UnlabelParameterVersionResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let name = ParameterName::parse(&body.name)?.into_string();
        let number =
            version_number("parameter_version", body.parameter_version, false)?.unwrap_or(1);
        let requested = body.labels.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("UnlabelParameterVersion"),
            &resource(&name),
        )
        .details(serde_json::json!({
            "parameter_version": body.parameter_version,
            "labels": body.labels,
        }));
        let authorization = authorize(&caller, "UnlabelParameterVersion", &name);
        let events = self.events.clone();
        let principal = caller.principal.to_string();
        let now = self.clock.now();
        let outcome = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let parameter = store::get_parameter(txn, &name)
                        .await?
                        .ok_or_else(|| parameter_not_found("unlabel", &name))?;
                    let mut labels = store::version_labels(txn, &name).await?;
                    let outcome =
                        unlabel_version(&name, &mut labels, number.unsigned_abs(), &requested)?;
                    store::remove_labels(txn, &name, &outcome.removed).await?;
                    if !outcome.removed.is_empty() {
                        let event = ChangeEvent::new(
                            ChangeOperation::UnlabelParameterVersion,
                            &parameter.name,
                            number,
                            &parameter.parameter_type,
                            &principal,
                            now,
                        );
                        events.stage(txn, &[event]).await?;
                    }
                    Ok((outcome, parameter))
                })
            })
            .await?;
        let (outcome, parameter) = outcome;
        let mut invalidated = Ok(());
        if !outcome.removed.is_empty() {
            invalidated = self.invalidate(std::slice::from_ref(&parameter.name)).await;
            self.events.flush_after_commit().await;
        }
        invalidated?;
        Ok(Response::new(pb::UnlabelParameterVersionResponse {
            removed_labels: outcome.removed,
            invalid_labels: outcome.invalid_labels,
        }))
    }

    async fn describe_parameters(
        &self,
        request: Request<pb::DescribeParametersRequest>,
    ) -> Result<Response<pb::DescribeParametersResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        if !body.filters.is_empty() && !body.parameter_filters.is_empty() {
            return Err(invalid(
                "filters",
                "cannot be combined with parameter_filters; use parameter_filters",
            )
            .into());
        }
        let mut filters = legacy_filters(&body.filters)?;
        filters.extend(parse_filters(
            "parameter_filters",
            &body.parameter_filters,
            FilterSet::Describe,
        )?);
        let limit = page_size(body.max_results, MAX_DESCRIBE_PAGE)?;
        let mut after = decode_token(&body.next_token)?;
        let mut parameters = Vec::new();
        let mut next_token = String::new();
        'scan: loop {
            let batch = store::list_parameters(&self.db, "", after.as_deref(), SCAN_BATCH).await?;
            let exhausted = (batch.len() as u64) < SCAN_BATCH;
            for record in batch {
                after = Some(record.name.clone());
                let Ok(name) = ParameterName::parse(&record.name) else {
                    continue;
                };
                if !caller.is_allowed(
                    &action("DescribeParameters"),
                    &resource(&record.name),
                    &BTreeMap::new(),
                ) || !passes(&self.db, &record, &name, &filters).await?
                {
                    continue;
                }
                let fired = fired_for(&self.db, &record.name, &record.policies).await?;
                parameters.push(metadata(&record, &fired, self.clock.now()));
                if parameters.len() == limit {
                    next_token = encode_token(&record.name);
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(Response::new(pb::DescribeParametersResponse {
            parameters,
            next_token,
        }))
    }

    async fn add_tags_to_resource(
        &self,
        request: Request<pb::AddTagsToResourceRequest>,
    ) -> Result<Response<pb::AddTagsToResourceResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        resource_type(&body.resource_type)?;
        let name = ParameterName::parse_field("resource_id", &body.resource_id)?.into_string();
        if body.tags.is_empty() {
            return Err(invalid("tags", "at least one tag is required").into());
        }
        let tags = check_tags("tags", &body.tags)?;
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("AddTagsToResource"),
            &resource(&name),
        )
        .details(serde_json::json!({ "keys": tags.keys().collect::<Vec<_>>() }));
        let authorization = authorize(&caller, "AddTagsToResource", &name);
        self.audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    if store::get_parameter(txn, &name).await?.is_none() {
                        return Err(resource_missing("tag", &name));
                    }
                    let mut merged = store::tags(txn, &name).await?;
                    merged.extend(tags.clone());
                    if merged.len() > MAX_TAGS_PER_PARAMETER {
                        return Err(ApiError::resource_exhausted(format!(
                        "tag parameter {name}: at most {MAX_TAGS_PER_PARAMETER} tags per parameter"
                    ))
                    .with_reason(TOO_MANY_TAGS));
                    }
                    store::put_tags(txn, &name, &tags).await
                })
            })
            .await?;
        Ok(Response::new(pb::AddTagsToResourceResponse {}))
    }

    async fn remove_tags_from_resource(
        &self,
        request: Request<pb::RemoveTagsFromResourceRequest>,
    ) -> Result<Response<pb::RemoveTagsFromResourceResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        resource_type(&body.resource_type)?;
        let name = ParameterName::parse_field("resource_id", &body.resource_id)?.into_string();
        if body.tag_keys.is_empty() {
            return Err(invalid("tag_keys", "at least one key is required").into());
        }
        let keys: Vec<String> = body.tag_keys.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("RemoveTagsFromResource"),
            &resource(&name),
        )
        .details(serde_json::json!({ "keys": keys }));
        let authorization = authorize(&caller, "RemoveTagsFromResource", &name);
        self.audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    if store::get_parameter(txn, &name).await?.is_none() {
                        return Err(resource_missing("untag", &name));
                    }
                    store::remove_tags(txn, &name, &keys).await
                })
            })
            .await?;
        Ok(Response::new(pb::RemoveTagsFromResourceResponse {}))
    }

    async fn list_tags_for_resource(
        &self,
        request: Request<pb::ListTagsForResourceRequest>,
    ) -> Result<Response<pb::ListTagsForResourceResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        resource_type(&body.resource_type)?;
        let name = ParameterName::parse_field("resource_id", &body.resource_id)?.into_string();
        authorize(&caller, "ListTagsForResource", &name)?;
        if store::get_parameter(&self.db, &name).await?.is_none() {
            return Err(resource_missing("list the tags of", &name).into());
        }
        let tags = store::tags(&self.db, &name).await?;
        Ok(Response::new(pb::ListTagsForResourceResponse {
            tag_list: tags_to_proto(&tags),
        }))
    }
}
