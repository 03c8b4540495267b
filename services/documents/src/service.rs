//! `bosun.documents.v1.DocumentService`: validate → authorize → find what the caller may
//! see → change and audit in one transaction.
//!
//! Visibility sits on top of the policy check: an invisible document answers exactly as a
//! missing one, so names do not leak. Built-in documents come from memory and are read-only.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use bosun_audit::{AuditLog, AuditRecord};
use bosun_auth::{AuthContext, auth_context};
use bosun_core::ApiError;
use bosun_core::time::to_timestamp;
use bosun_document::Format;
use bosun_proto::documents::v1 as pb;
use bosun_proto::documents::v1::document_service_server::{DocumentService, DocumentServiceServer};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tonic::{Request, Response, Status};

use crate::builtin::{self, BUILT_IN_OWNER, BuiltIn};
use crate::content::{self, CheckedContent};
use crate::store::{self, DocumentRecord, VersionRecord};
use crate::validate::{self, invalid};

/// The action that lets a caller see and change every document, whoever owns it.
pub const ADMINISTER_ACTION: &str = "documents:AdministerDocuments";

const MAX_LIST_PAGE: i32 = 50;
const MAX_PERMISSION_PAGE: i32 = 200;
const RESOURCE_TYPE_DOCUMENT: &str = "Document";
const PERMISSION_TYPE_SHARE: &str = "Share";
const HASH_TYPE: &str = "Sha256";

pub struct DocumentServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
}

impl DocumentServiceImpl {
    pub fn new(db: DatabaseConnection, audit: AuditLog) -> Self {
        DocumentServiceImpl { db, audit }
    }

    pub fn into_server(self) -> DocumentServiceServer<Self> {
        DocumentServiceServer::new(self)
    }
}

// ---- who sees and changes what ----------------------------------------------------------

/// A document found by name: a built-in one or a stored one.
enum Found {
    BuiltIn(&'static BuiltIn),
    Stored(DocumentRecord),
}

impl Found {
    fn document(&self) -> &DocumentRecord {
        match self {
            Found::BuiltIn(built_in) => &built_in.document,
            Found::Stored(document) => document,
        }
    }
}

fn resource(name: &str) -> String {
    format!("document:{name}")
}

fn action(rpc: &str) -> String {
    format!("documents:{rpc}")
}

/// The share entries that make a document visible to the caller.
fn share_principals(caller: &AuthContext) -> Vec<String> {
    let mut principals = vec![caller.principal.to_string(), "All".to_owned()];
    principals.extend(caller.roles.iter().map(|role| format!("role/{role}")));
    principals
}

fn is_admin(caller: &AuthContext, name: &str) -> bool {
    caller.is_allowed(ADMINISTER_ACTION, &resource(name), &BTreeMap::new())
}

fn is_owner(caller: &AuthContext, document: &DocumentRecord) -> bool {
    document.owner == caller.principal.to_string()
}

fn missing(name: &str, reason: &'static str) -> ApiError {
    ApiError::not_found(format!("document {name} not found")).with_reason(reason)
}

/// The document `name` if it exists and the caller may see it; otherwise the same
/// NOT_FOUND either way.
async fn find_visible<C: ConnectionTrait>(
    conn: &C,
    caller: &AuthContext,
    name: &str,
    missing_reason: &'static str,
) -> Result<Found, ApiError> {
    if let Some(built_in) = builtin::find(name) {
        return Ok(Found::BuiltIn(built_in));
    }
    let document = store::get_document(conn, name)
        .await?
        .ok_or_else(|| missing(name, missing_reason))?;
    if is_owner(caller, &document) || is_admin(caller, name) {
        return Ok(Found::Stored(document));
    }
    let principals = share_principals(caller);
    let shared = store::shares(conn, name)
        .await?
        .iter()
        .any(|principal| principals.contains(principal));
    if shared {
        Ok(Found::Stored(document))
    } else {
        Err(missing(name, missing_reason))
    }
}

/// The stored document when the caller may change it: its owner or an administrator.
fn changeable(caller: &AuthContext, found: Found, what: &str) -> Result<DocumentRecord, ApiError> {
    match found {
        Found::BuiltIn(built_in) => Err(ApiError::failed_precondition(format!(
            "{what} document {}: built-in documents are read-only",
            built_in.document.name
        ))
        .with_reason("InvalidDocumentOperation")),
        Found::Stored(document) => {
            if is_owner(caller, &document) || is_admin(caller, &document.name) {
                Ok(document)
            } else {
                Err(ApiError::PermissionDenied(format!(
                    "{} may not {what} document {}: only its owner or an administrator may",
                    caller.principal, document.name
                )))
            }
        }
    }
}

// ---- version selectors ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selector {
    Default,
    Latest,
    Number(i32),
}

fn bad_version(field: &str, rule: &str) -> ApiError {
    ApiError::invalid(field, rule).with_reason("InvalidDocumentVersion")
}

/// `$DEFAULT`, `$LATEST` or a number; `None` when empty.
fn selector(field: &str, value: &str) -> Result<Option<Selector>, ApiError> {
    match value {
        "" => Ok(None),
        "$DEFAULT" => Ok(Some(Selector::Default)),
        "$LATEST" => Ok(Some(Selector::Latest)),
        other => validate::version_number(other)
            .map(|number| Some(Selector::Number(number)))
            .ok_or_else(|| bad_version(field, "must be a version number, $DEFAULT or $LATEST")),
    }
}

fn version_missing(name: &str, which: &str) -> ApiError {
    ApiError::not_found(format!("document {name}: version {which} not found"))
        .with_reason("InvalidDocumentVersion")
}

/// The version a request selects by number or `$` name and/or version name; both, when
/// given, must name the same version. Neither selects the default.
async fn resolve_version<C: ConnectionTrait>(
    conn: &C,
    found: &Found,
    by_number: Option<Selector>,
    version_name: &str,
) -> Result<VersionRecord, ApiError> {
    let document = found.document();
    let number = by_number.map(|selector| match selector {
        Selector::Default => document.default_version,
        Selector::Latest => document.latest_version,
        Selector::Number(number) => number,
    });
    let record = if !version_name.is_empty() {
        let record = match found {
            Found::BuiltIn(built_in) => (built_in.version.version_name.as_deref()
                == Some(version_name))
            .then(|| built_in.version.clone()),
            Found::Stored(document) => {
                store::get_version_by_name(conn, &document.name, version_name).await?
            }
        }
        .ok_or_else(|| version_missing(&document.name, version_name))?;
        if number.is_some_and(|number| number != record.version) {
            return Err(ApiError::not_found(format!(
                "document {}: version name {version_name} is not version {}",
                document.name,
                number.unwrap_or_default()
            ))
            .with_reason("InvalidDocumentVersion"));
        }
        record
    } else {
        let number = number.unwrap_or(document.default_version);
        match found {
            Found::BuiltIn(built_in) => {
                (built_in.version.version == number).then(|| built_in.version.clone())
            }
            Found::Stored(document) => store::get_version(conn, &document.name, number).await?,
        }
        .ok_or_else(|| version_missing(&document.name, &number.to_string()))?
    };
    Ok(record)
}

// ---- conversions ------------------------------------------------------------------------

fn tags_to_proto(tags: &BTreeMap<String, String>) -> Vec<pb::Tag> {
    tags.iter()
        .map(|(key, value)| pb::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn description(
    document: &DocumentRecord,
    version: &VersionRecord,
    default_version_name: Option<String>,
    tags: &BTreeMap<String, String>,
) -> pb::DocumentDescription {
    pb::DocumentDescription {
        name: document.name.clone(),
        display_name: version.display_name.clone(),
        version_name: version.version_name.clone().unwrap_or_default(),
        document_version: version.version.to_string(),
        latest_version: document.latest_version.to_string(),
        default_version: document.default_version.to_string(),
        default_version_name: default_version_name.unwrap_or_default(),
        document_type: content::type_to_proto(&document.document_type) as i32,
        document_format: content::format_to_proto(content::format_from_name(&version.format))
            as i32,
        schema_version: version.schema_version.clone(),
        owner: document.owner.clone(),
        created_date: Some(to_timestamp(version.created_at)),
        status: pb::DocumentStatus::Active as i32,
        description: version.description.clone(),
        parameters: content::parameters_to_proto(&version.parameters),
        platform_types: content::platform_types_to_proto(&version.platform_types),
        target_type: version.target_type.clone(),
        tags: tags_to_proto(tags),
        hash: version.sha256.clone(),
        hash_type: HASH_TYPE.to_owned(),
    }
}

/// The full description of `version`, with the default version's name and the tags.
async fn describe<C: ConnectionTrait>(
    conn: &C,
    found: &Found,
    version: &VersionRecord,
) -> Result<pb::DocumentDescription, ApiError> {
    let document = found.document();
    let (default_version_name, tags) = match found {
        Found::BuiltIn(built_in) => (built_in.version.version_name.clone(), BTreeMap::new()),
        Found::Stored(document) => {
            let default_name = if version.version == document.default_version {
                version.version_name.clone()
            } else {
                store::get_version(conn, &document.name, document.default_version)
                    .await?
                    .and_then(|default| default.version_name)
            };
            (default_name, store::tags(conn, &document.name).await?)
        }
    };
    Ok(description(document, version, default_version_name, &tags))
}

fn version_info(document: &DocumentRecord, version: &VersionRecord) -> pb::DocumentVersionInfo {
    pb::DocumentVersionInfo {
        name: document.name.clone(),
        display_name: version.display_name.clone(),
        document_version: version.version.to_string(),
        version_name: version.version_name.clone().unwrap_or_default(),
        created_date: Some(to_timestamp(version.created_at)),
        is_default_version: version.version == document.default_version,
        document_format: content::format_to_proto(content::format_from_name(&version.format))
            as i32,
        status: pb::DocumentStatus::Active as i32,
    }
}

fn identifier(
    document: &DocumentRecord,
    default: Option<&VersionRecord>,
    tags: Option<&BTreeMap<String, String>>,
) -> pb::DocumentIdentifier {
    pb::DocumentIdentifier {
        name: document.name.clone(),
        display_name: default.map(|v| v.display_name.clone()).unwrap_or_default(),
        owner: document.owner.clone(),
        version_name: default
            .and_then(|v| v.version_name.clone())
            .unwrap_or_default(),
        document_version: document.default_version.to_string(),
        document_type: content::type_to_proto(&document.document_type) as i32,
        schema_version: default
            .map(|v| v.schema_version.clone())
            .unwrap_or_default(),
        document_format: default
            .map(|v| content::format_to_proto(content::format_from_name(&v.format)) as i32)
            .unwrap_or_default(),
        target_type: document.target_type.clone(),
        tags: tags.map(tags_to_proto).unwrap_or_default(),
        platform_types: default
            .map(|v| content::platform_types_to_proto(&v.platform_types))
            .unwrap_or_default(),
        created_date: Some(to_timestamp(document.created_at)),
    }
}

// ---- paging -----------------------------------------------------------------------------

fn decode_token(token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid("next_token", "is not a token this server issued")
                .with_reason("InvalidNextToken")
        })
}

fn encode_token(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

// ---- ListDocuments filters --------------------------------------------------------------

#[derive(Default)]
struct Filters {
    owners: Option<Vec<String>>,
    types: Option<Vec<String>>,
    name_prefixes: Option<Vec<String>>,
    /// (key, values): a tag with the key, and one of the values when any are given.
    tags: Vec<(String, Vec<String>)>,
}

fn filter_value_error(field: String, rule: impl Into<String>) -> ApiError {
    ApiError::invalid(field, rule).with_reason("InvalidFilterValue")
}

fn parse_filters(filters: &[pb::DocumentKeyValuesFilter]) -> Result<Filters, ApiError> {
    let mut parsed = Filters::default();
    for (index, filter) in filters.iter().enumerate() {
        let values_field = format!("filters[{index}].values");
        let needs_values = |values: &[String]| {
            if values.is_empty() {
                Err(filter_value_error(
                    values_field.clone(),
                    "at least one value is required",
                ))
            } else {
                Ok(values.to_vec())
            }
        };
        match filter.key.as_str() {
            "Owner" => {
                for value in &filter.values {
                    if !["Self", "Bosun", "Amazon", "Private", "All"].contains(&value.as_str()) {
                        return Err(filter_value_error(
                            values_field.clone(),
                            format!("{value:?} is not an owner (Self, Bosun, Private, All)"),
                        ));
                    }
                }
                parsed.owners = Some(needs_values(&filter.values)?);
            }
            "DocumentType" => {
                for value in &filter.values {
                    if !["Command", "Automation", "Session", "Policy"].contains(&value.as_str()) {
                        return Err(filter_value_error(
                            values_field.clone(),
                            format!(
                                "{value:?} is not a document type (Command, Automation, Session, Policy)"
                            ),
                        ));
                    }
                }
                parsed.types = Some(needs_values(&filter.values)?);
            }
            "Name" => parsed.name_prefixes = Some(needs_values(&filter.values)?),
            key => match key.strip_prefix("tag:") {
                Some(tag_key) => {
                    validate::tag_key(&format!("filters[{index}].key"), tag_key)?;
                    parsed
                        .tags
                        .push((tag_key.to_owned(), filter.values.clone()));
                }
                None => {
                    return Err(ApiError::invalid(
                        format!("filters[{index}].key"),
                        format!(
                            "{key:?} is not a filter key (Owner, DocumentType, Name, tag:<key>)"
                        ),
                    )
                    .with_reason("InvalidFilterKey"));
                }
            },
        }
    }
    Ok(parsed)
}

impl Filters {
    fn matches(
        &self,
        caller: &AuthContext,
        document: &DocumentRecord,
        tags: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let built_in = document.owner == BUILT_IN_OWNER && builtin::find(&document.name).is_some();
        if let Some(owners) = &self.owners {
            let owner_matches = owners.iter().any(|owner| match owner.as_str() {
                "Self" => is_owner(caller, document),
                "Bosun" | "Amazon" => built_in,
                "Private" => !built_in,
                _ => true,
            });
            if !owner_matches {
                return false;
            }
        }
        if let Some(types) = &self.types
            && !types.contains(&document.document_type)
        {
            return false;
        }
        if let Some(prefixes) = &self.name_prefixes
            && !prefixes
                .iter()
                .any(|prefix| document.name.starts_with(prefix.as_str()))
        {
            return false;
        }
        self.tags.iter().all(|(key, values)| {
            tags.and_then(|tags| tags.get(key))
                .is_some_and(|value| values.is_empty() || values.contains(value))
        })
    }
}

// ---- reading a document to run it --------------------------------------------------------

/// A document version as another service runs it (Run Command).
#[derive(Debug, Clone)]
pub struct RunnableDocument {
    /// The document's name (the Bosun name when an `AWS-` alias was asked for).
    pub name: String,
    /// The version number.
    pub version: i32,
    /// Hex SHA-256 of the version's content.
    pub sha256: String,
    /// The stored document type (`Command`, `Automation`, `Session`).
    pub document_type: String,
    /// The content, parsed.
    pub document: bosun_document::Document,
}

/// The document `name` at `version` (`$DEFAULT`, `$LATEST` or a number; `None` or empty =
/// `$DEFAULT`) as `caller` may read it: needs `documents:GetDocument` on `document:<name>`
/// and the document must be visible to the caller. A document that is missing or invisible
/// is NOT_FOUND `InvalidDocument`; a bad or missing version is `InvalidDocumentVersion`
/// naming `field` when malformed; a refused policy check is PERMISSION_DENIED.
pub async fn fetch_for_caller<C: ConnectionTrait>(
    conn: &C,
    caller: &AuthContext,
    name: &str,
    version: Option<&str>,
    field: &str,
) -> Result<RunnableDocument, ApiError> {
    let by_number = selector(field, version.unwrap_or(""))?;
    authorize(caller, "GetDocument", name)?;
    let found = find_visible(conn, caller, name, "InvalidDocument").await?;
    let record = resolve_version(conn, &found, by_number, "").await?;
    let format = content::format_from_name(&record.format);
    let document = bosun_document::Document::parse(&record.content, format).map_err(|errors| {
        ApiError::internal(format!(
            "stored document {name} version {} does not parse: {}",
            record.version,
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    let stored = found.document();
    Ok(RunnableDocument {
        name: stored.name.clone(),
        version: record.version,
        sha256: record.sha256.clone(),
        document_type: stored.document_type.clone(),
        document,
    })
}

// ---- the audited change -----------------------------------------------------------------

impl DocumentServiceImpl {}

fn authorize(caller: &AuthContext, rpc: &str, name: &str) -> Result<(), ApiError> {
    caller
        .authorize(&action(rpc), &resource(name), &BTreeMap::new())
        .map_err(ApiError::from)
}

/// A new version's record from checked content.
fn new_version(
    name: &str,
    number: i32,
    version_name: &str,
    content_text: &str,
    checked: &CheckedContent,
    display_name: &str,
    target_type: &str,
) -> VersionRecord {
    VersionRecord {
        name: name.to_owned(),
        version: number,
        version_name: (!version_name.is_empty()).then(|| version_name.to_owned()),
        content: content_text.to_owned(),
        format: content::format_name(checked.format).to_owned(),
        schema_version: checked.document.schema_version().to_owned(),
        sha256: checked.sha256.clone(),
        display_name: display_name.to_owned(),
        description: checked
            .document
            .description()
            .unwrap_or_default()
            .to_owned(),
        parameters: checked.parameters.clone(),
        platform_types: checked.platform_types.clone(),
        target_type: target_type.to_owned(),
        created_at: Utc::now(),
    }
}

#[tonic::async_trait]
impl DocumentService for DocumentServiceImpl {
    async fn create_document(
        &self,
        request: Request<pb::CreateDocumentRequest>,
    ) -> Result<Response<pb::CreateDocumentResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::new_document_name("name", &body.name)?;
        validate::display_name("display_name", &body.display_name)?;
        validate::version_name("version_name", &body.version_name)?;
        validate::target_type("target_type", &body.target_type)?;
        let tags = validate::tags("tags", &body.tags)?;
        let expected_type = content::requested_type("document_type", body.document_type)?;
        let format =
            content::requested_format("document_format", body.document_format, &body.content)?;
        let checked = content::check(&body.content, format, expected_type, "document_type")?;

        let name = body.name.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("CreateDocument"),
            &resource(&name),
        )
        .details(serde_json::json!({ "document_version": "1", "hash": checked.sha256 }));
        let authorization = authorize(&caller, "CreateDocument", &name);
        let now = Utc::now();
        let document = DocumentRecord {
            name: name.clone(),
            owner: caller.principal.to_string(),
            document_type: checked.document.document_type().as_str().to_owned(),
            default_version: 1,
            latest_version: 1,
            last_issued_version: 1,
            target_type: body.target_type.clone(),
            created_at: now,
        };
        let mut first = new_version(
            &name,
            1,
            &body.version_name,
            &body.content,
            &checked,
            &body.display_name,
            &body.target_type,
        );
        first.created_at = now;
        let description = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    if builtin::find(&name).is_some()
                        || store::get_document(txn, &name).await?.is_some()
                    {
                        return Err(ApiError::already_exists(format!(
                            "document {name} already exists"
                        ))
                        .with_reason("DocumentAlreadyExists"));
                    }
                    if store::count_documents(txn).await? >= validate::MAX_DOCUMENTS {
                        return Err(ApiError::resource_exhausted(format!(
                            "create document {name}: the limit of {} documents is reached",
                            validate::MAX_DOCUMENTS
                        ))
                        .with_reason("DocumentLimitExceeded"));
                    }
                    store::insert_document(txn, &document, &first).await?;
                    store::put_tags(txn, &name, &tags).await?;
                    Ok(description(
                        &document,
                        &first,
                        first.version_name.clone(),
                        &tags,
                    ))
                })
            })
            .await?;
        Ok(Response::new(pb::CreateDocumentResponse {
            document_description: Some(description),
        }))
    }

    async fn get_document(
        &self,
        request: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::GetDocumentResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        validate::version_name("version_name", &body.version_name)?;
        let by_number = selector("document_version", &body.document_version)?;
        let requested = pb::DocumentFormat::try_from(body.document_format)
            .map_err(|_| invalid("document_format", "is not a known DocumentFormat"))?;
        authorize(&caller, "GetDocument", &body.name)?;
        let found = find_visible(&self.db, &caller, &body.name, "InvalidDocument").await?;
        let version = resolve_version(&self.db, &found, by_number, &body.version_name).await?;
        let stored_format = content::format_from_name(&version.format);
        let format = match requested {
            pb::DocumentFormat::Unspecified => stored_format,
            pb::DocumentFormat::Json => Format::Json,
            pb::DocumentFormat::Yaml => Format::Yaml,
        };
        let text = content::convert(&version.content, stored_format, format)?;
        let document = found.document();
        Ok(Response::new(pb::GetDocumentResponse {
            name: document.name.clone(),
            display_name: version.display_name.clone(),
            version_name: version.version_name.clone().unwrap_or_default(),
            document_version: version.version.to_string(),
            status: pb::DocumentStatus::Active as i32,
            content: text,
            document_type: content::type_to_proto(&document.document_type) as i32,
            document_format: content::format_to_proto(format) as i32,
            created_date: Some(to_timestamp(version.created_at)),
        }))
    }

    async fn describe_document(
        &self,
        request: Request<pb::DescribeDocumentRequest>,
    ) -> Result<Response<pb::DescribeDocumentResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        validate::version_name("version_name", &body.version_name)?;
        let by_number = selector("document_version", &body.document_version)?;
        authorize(&caller, "DescribeDocument", &body.name)?;
        let found = find_visible(&self.db, &caller, &body.name, "InvalidDocument").await?;
        let version = resolve_version(&self.db, &found, by_number, &body.version_name).await?;
        Ok(Response::new(pb::DescribeDocumentResponse {
            document: Some(describe(&self.db, &found, &version).await?),
        }))
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        let page = validate::page_size(body.max_results, MAX_LIST_PAGE)?;
        let page = usize::try_from(page).unwrap_or(50);
        let after = decode_token(&body.next_token)?;
        let filters = parse_filters(&body.filters)?;
        authorize(&caller, "ListDocuments", "*")?;

        // The whole set is bounded by MAX_DOCUMENTS, so visibility is decided here rather
        // than in SQL, where per-document AdministerDocuments grants cannot be expressed.
        let shared = store::names_shared_with(&self.db, &share_principals(&caller)).await?;
        let mut candidates: Vec<DocumentRecord> = store::list_documents(&self.db, after.as_deref())
            .await?
            .into_iter()
            .filter(|document| {
                is_owner(&caller, document)
                    || shared.contains(&document.name)
                    || is_admin(&caller, &document.name)
            })
            .collect();
        candidates.extend(
            builtin::all()
                .iter()
                .filter(|built_in| {
                    after
                        .as_deref()
                        .is_none_or(|after| built_in.document.name.as_str() > after)
                })
                .map(|built_in| built_in.document.clone()),
        );
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        let stored_names: Vec<String> = candidates
            .iter()
            .filter(|document| builtin::find(&document.name).is_none())
            .map(|document| document.name.clone())
            .collect();
        let tags = if filters.tags.is_empty() {
            BTreeMap::new()
        } else {
            store::tags_of(&self.db, &stored_names).await?
        };
        let mut matching: Vec<DocumentRecord> = candidates
            .into_iter()
            .filter(|document| filters.matches(&caller, document, tags.get(&document.name)))
            .collect();
        let next_token = if matching.len() > page {
            matching.truncate(page);
            matching
                .last()
                .map(|document| encode_token(&document.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let stored: Vec<DocumentRecord> = matching
            .iter()
            .filter(|document| builtin::find(&document.name).is_none())
            .cloned()
            .collect();
        let page_names: Vec<String> = stored.iter().map(|d| d.name.clone()).collect();
        let page_tags = store::tags_of(&self.db, &page_names).await?;
        let defaults = store::default_versions(&self.db, &stored).await?;
        let identifiers = matching
            .iter()
            .map(|document| match builtin::find(&document.name) {
                Some(built_in) => identifier(document, Some(&built_in.version), None),
                None => identifier(
                    document,
                    defaults.get(&document.name),
                    page_tags.get(&document.name),
                ),
            })
            .collect();
        Ok(Response::new(pb::ListDocumentsResponse {
            document_identifiers: identifiers,
            next_token,
        }))
    }

    async fn list_document_versions(
        &self,
        request: Request<pb::ListDocumentVersionsRequest>,
    ) -> Result<Response<pb::ListDocumentVersionsResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        let page = validate::page_size(body.max_results, MAX_LIST_PAGE)?;
        let after = match decode_token(&body.next_token)? {
            None => None,
            Some(text) => Some(validate::version_number(&text).ok_or_else(|| {
                ApiError::invalid("next_token", "is not a token this server issued")
                    .with_reason("InvalidNextToken")
            })?),
        };
        authorize(&caller, "ListDocumentVersions", &body.name)?;
        let found = find_visible(&self.db, &caller, &body.name, "InvalidDocument").await?;
        let mut versions = match &found {
            Found::BuiltIn(built_in) => {
                if after.is_some_and(|after| after >= built_in.version.version) {
                    Vec::new()
                } else {
                    vec![built_in.version.clone()]
                }
            }
            Found::Stored(document) => {
                store::list_versions(&self.db, &document.name, after, page + 1).await?
            }
        };
        let page = usize::try_from(page).unwrap_or(50);
        let next_token = if versions.len() > page {
            versions.truncate(page);
            versions
                .last()
                .map(|version| encode_token(&version.version.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let document = found.document();
        Ok(Response::new(pb::ListDocumentVersionsResponse {
            document_versions: versions
                .iter()
                .map(|version| version_info(document, version))
                .collect(),
            next_token,
        }))
    }

    async fn update_document(
        &self,
        request: Request<pb::UpdateDocumentRequest>,
    ) -> Result<Response<pb::UpdateDocumentResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        validate::display_name("display_name", &body.display_name)?;
        validate::version_name("version_name", &body.version_name)?;
        validate::target_type("target_type", &body.target_type)?;
        // Empty is `$LATEST`, as SSM's optional DocumentVersion; `$DEFAULT` is refused
        // because only the latest version can be built on.
        let base = match selector("document_version", &body.document_version)? {
            None | Some(Selector::Latest) => None,
            Some(Selector::Number(number)) => Some(number),
            Some(Selector::Default) => {
                return Err(bad_version(
                    "document_version",
                    "must be $LATEST or the latest version number",
                )
                .into());
            }
        };
        let format =
            content::requested_format("document_format", body.document_format, &body.content)?;
        let checked = content::check(&body.content, format, None, "content")?;

        let name = body.name.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("UpdateDocument"),
            &resource(&name),
        )
        .details(serde_json::json!({ "hash": checked.sha256 }));
        let authorization = authorize(&caller, "UpdateDocument", &name);
        let (content_text, display_name, version_name, target_type) = (
            body.content.clone(),
            body.display_name.clone(),
            body.version_name.clone(),
            body.target_type.clone(),
        );
        let description = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let found = find_visible(txn, &caller, &name, "InvalidDocument").await?;
                    let document = changeable(&caller, found, "update")?;
                    if let Some(base) = base
                        && base != document.latest_version
                    {
                        return Err(ApiError::failed_precondition(format!(
                            "update document {name}: version {base} is not the latest ({})",
                            document.latest_version
                        ))
                        .with_reason("InvalidDocumentVersion"));
                    }
                    let new_type = checked.document.document_type().as_str();
                    if new_type != document.document_type {
                        return Err(ApiError::invalid(
                            "content",
                            format!(
                                "is a {new_type} document but {name} is a {} document",
                                document.document_type
                            ),
                        )
                        .with_reason("InvalidDocumentContent"));
                    }
                    let latest = store::get_version(txn, &name, document.latest_version)
                        .await?
                        .ok_or_else(|| {
                            ApiError::internal(format!(
                                "document {name}: latest version {} is missing",
                                document.latest_version
                            ))
                        })?;
                    if latest.sha256 == checked.sha256 {
                        return Err(ApiError::already_exists(format!(
                            "update document {name}: the content is identical to version {}",
                            latest.version
                        ))
                        .with_reason("DuplicateDocumentContent"));
                    }
                    if !version_name.is_empty()
                        && store::get_version_by_name(txn, &name, &version_name)
                            .await?
                            .is_some()
                    {
                        return Err(ApiError::already_exists(format!(
                            "update document {name}: version name {version_name} is already used"
                        ))
                        .with_reason("DuplicateDocumentVersionName"));
                    }
                    if store::count_versions(txn, &name).await?
                        >= validate::MAX_VERSIONS_PER_DOCUMENT
                    {
                        return Err(ApiError::resource_exhausted(format!(
                            "update document {name}: the limit of {} versions is reached",
                            validate::MAX_VERSIONS_PER_DOCUMENT
                        ))
                        .with_reason("DocumentVersionLimitExceeded"));
                    }
                    // Unset fields carry over from the latest version, as in SSM.
                    let display_name = if display_name.is_empty() {
                        latest.display_name.clone()
                    } else {
                        display_name
                    };
                    let target_type = if target_type.is_empty() {
                        document.target_type.clone()
                    } else {
                        target_type
                    };
                    let number = document.last_issued_version + 1;
                    if !store::advance_latest(
                        txn,
                        &name,
                        document.latest_version,
                        number,
                        &target_type,
                    )
                    .await?
                    {
                        return Err(ApiError::failed_precondition(format!(
                            "update document {name}: another update added a version first"
                        ))
                        .with_reason("InvalidDocumentVersion"));
                    }
                    let version = new_version(
                        &name,
                        number,
                        &version_name,
                        &content_text,
                        &checked,
                        &display_name,
                        &target_type,
                    );
                    store::insert_version(txn, &version).await?;
                    let updated = DocumentRecord {
                        latest_version: number,
                        last_issued_version: number,
                        target_type,
                        ..document
                    };
                    describe(txn, &Found::Stored(updated), &version).await
                })
            })
            .await?;
        Ok(Response::new(pb::UpdateDocumentResponse {
            document_description: Some(description),
        }))
    }

    async fn update_document_default_version(
        &self,
        request: Request<pb::UpdateDocumentDefaultVersionRequest>,
    ) -> Result<Response<pb::UpdateDocumentDefaultVersionResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        let number = validate::version_number(&body.document_version)
            .ok_or_else(|| bad_version("document_version", "must be a version number"))?;
        let name = body.name.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("UpdateDocumentDefaultVersion"),
            &resource(&name),
        )
        .details(serde_json::json!({ "document_version": number.to_string() }));
        let authorization = authorize(&caller, "UpdateDocumentDefaultVersion", &name);
        let description = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let found = find_visible(txn, &caller, &name, "InvalidDocument").await?;
                    let document = changeable(&caller, found, "change the default version of")?;
                    let version = store::get_version(txn, &name, number)
                        .await?
                        .ok_or_else(|| version_missing(&document.name, &number.to_string()))?;
                    store::set_default_version(txn, &name, number).await?;
                    Ok(pb::DocumentDefaultVersionDescription {
                        name: document.name,
                        default_version: number.to_string(),
                        default_version_name: version.version_name.unwrap_or_default(),
                    })
                })
            })
            .await?;
        Ok(Response::new(pb::UpdateDocumentDefaultVersionResponse {
            description: Some(description),
        }))
    }

    async fn delete_document(
        &self,
        request: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::DeleteDocumentResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        validate::version_name("version_name", &body.version_name)?;
        let by_number = selector("document_version", &body.document_version)?;
        let name = body.name.clone();
        let version_name = body.version_name.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("DeleteDocument"),
            &resource(&name),
        )
        .details(serde_json::json!({
            "document_version": body.document_version,
            "version_name": body.version_name,
        }));
        let authorization = authorize(&caller, "DeleteDocument", &name);
        self.audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let found = find_visible(txn, &caller, &name, "InvalidDocument").await?;
                    if by_number.is_none() && version_name.is_empty() {
                        changeable(&caller, found, "delete")?;
                        return store::delete_document(txn, &name).await;
                    }
                    let version = resolve_version(txn, &found, by_number, &version_name).await?;
                    let document = changeable(&caller, found, "delete a version of")?;
                    if version.version == document.default_version {
                        return Err(ApiError::failed_precondition(format!(
                            "delete version {} of document {name}: it is the default version",
                            version.version
                        ))
                        .with_reason("InvalidDocumentOperation"));
                    }
                    store::delete_version(txn, &name, version.version).await
                })
            })
            .await?;
        Ok(Response::new(pb::DeleteDocumentResponse {}))
    }

    async fn modify_document_permission(
        &self,
        request: Request<pb::ModifyDocumentPermissionRequest>,
    ) -> Result<Response<pb::ModifyDocumentPermissionResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        permission_type(&body.permission_type)?;
        let mut lists = Vec::new();
        for (field, principals) in [
            ("principals_to_add", &body.principals_to_add),
            ("principals_to_remove", &body.principals_to_remove),
        ] {
            if principals.len() > validate::MAX_PRINCIPALS_PER_CALL {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "at most {} principals per call",
                        validate::MAX_PRINCIPALS_PER_CALL
                    ),
                )
                .with_reason("DocumentPermissionLimit")
                .into());
            }
            for (index, principal) in principals.iter().enumerate() {
                validate::share_principal(&format!("{field}[{index}]"), principal)?;
            }
            lists.push(principals.iter().cloned().collect::<BTreeSet<String>>());
        }
        let remove = lists.pop().unwrap_or_default();
        let add = lists.pop().unwrap_or_default();
        let name = body.name.clone();
        let record = AuditRecord::for_request(
            &request,
            &caller,
            &action("ModifyDocumentPermission"),
            &resource(&name),
        )
        .details(serde_json::json!({ "add": add, "remove": remove }));
        let authorization = authorize(&caller, "ModifyDocumentPermission", &name);
        self.audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let found = find_visible(txn, &caller, &name, "InvalidDocument").await?;
                    changeable(&caller, found, "share")?;
                    store::modify_shares(txn, &name, &add, &remove).await?;
                    let count = store::shares(txn, &name).await?.len() as u64;
                    if count > validate::MAX_SHARES_PER_DOCUMENT {
                        return Err(ApiError::resource_exhausted(format!(
                            "share document {name}: at most {} principals",
                            validate::MAX_SHARES_PER_DOCUMENT
                        ))
                        .with_reason("DocumentPermissionLimit"));
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(Response::new(pb::ModifyDocumentPermissionResponse {}))
    }

    async fn describe_document_permission(
        &self,
        request: Request<pb::DescribeDocumentPermissionRequest>,
    ) -> Result<Response<pb::DescribeDocumentPermissionResponse>, Status> {
        let caller = auth_context(&request)?;
        let body = request.get_ref();
        validate::document_name("name", &body.name)?;
        permission_type(&body.permission_type)?;
        let page = validate::page_size(body.max_results, MAX_PERMISSION_PAGE)?;
        let page = usize::try_from(page).unwrap_or(200);
        let after = decode_token(&body.next_token)?;
        authorize(&caller, "DescribeDocumentPermission", &body.name)?;
        let found = find_visible(&self.db, &caller, &body.name, "InvalidDocument").await?;
        let mut principals = match found {
            // Everyone sees the built-in documents.
            Found::BuiltIn(_) => vec!["All".to_owned()],
            found => {
                // Whom a document is shared with is the owner's business, like sharing it.
                let document = changeable(&caller, found, "describe the permissions of")?;
                store::shares(&self.db, &document.name).await?
            }
        };
        if let Some(after) = after {
            principals.retain(|principal| principal.as_str() > after.as_str());
        }
        let next_token = if principals.len() > page {
            principals.truncate(page);
            principals
                .last()
                .map(|p| encode_token(p))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::DescribeDocumentPermissionResponse {
            principals,
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
        validate::document_name("resource_id", &body.resource_id)?;
        if body.tags.is_empty() {
            return Err(invalid("tags", "at least one tag is required").into());
        }
        let tags = validate::tags("tags", &body.tags)?;
        let name = body.resource_id.clone();
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
                    let found = find_visible(txn, &caller, &name, "InvalidResourceId").await?;
                    changeable(&caller, found, "tag")?;
                    let mut merged = store::tags(txn, &name).await?;
                    merged.extend(tags.clone());
                    if merged.len() > validate::MAX_TAGS_PER_DOCUMENT {
                        return Err(ApiError::resource_exhausted(format!(
                            "tag document {name}: at most {} tags per document",
                            validate::MAX_TAGS_PER_DOCUMENT
                        ))
                        .with_reason("TooManyTagsError"));
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
        validate::document_name("resource_id", &body.resource_id)?;
        for (index, key) in body.tag_keys.iter().enumerate() {
            validate::tag_key(&format!("tag_keys[{index}]"), key)?;
        }
        let keys: BTreeSet<String> = body.tag_keys.iter().cloned().collect();
        let name = body.resource_id.clone();
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
                    let found = find_visible(txn, &caller, &name, "InvalidResourceId").await?;
                    changeable(&caller, found, "untag")?;
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
        validate::document_name("resource_id", &body.resource_id)?;
        authorize(&caller, "ListTagsForResource", &body.resource_id)?;
        let found = find_visible(&self.db, &caller, &body.resource_id, "InvalidResourceId").await?;
        let tags = match found {
            Found::BuiltIn(_) => BTreeMap::new(),
            Found::Stored(document) => store::tags(&self.db, &document.name).await?,
        };
        Ok(Response::new(pb::ListTagsForResourceResponse {
            tag_list: tags_to_proto(&tags),
        }))
    }
}

fn permission_type(value: &str) -> Result<(), ApiError> {
    if value != PERMISSION_TYPE_SHARE {
        return Err(ApiError::invalid("permission_type", "must be Share")
            .with_reason("InvalidPermissionType"));
    }
    Ok(())
}

fn resource_type(value: &str) -> Result<(), ApiError> {
    if value != RESOURCE_TYPE_DOCUMENT {
        return Err(ApiError::invalid("resource_type", "must be Document")
            .with_reason("InvalidResourceType"));
    }
    Ok(())
}
