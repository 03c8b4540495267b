//! `bosun doc …`: documents (what Bosun runs on nodes, its runbooks and sessions), their
//! versions, sharing and tags, over DocumentService.

use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use bosun_proto::documents::v1 as proto;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use super::{Context, next_page, required};
use crate::views::{
    DefaultVersionView, DocumentContentView, DocumentDescriptionView, DocumentList,
    DocumentPermissionsView, DocumentVersionList, MessageView, TagList,
};

/// The server's largest page for documents and versions.
const PAGE_SIZE: i32 = 50;
/// The server's largest page of principals.
const PERMISSION_PAGE_SIZE: i32 = 200;
/// The server refuses larger content; checking here saves uploading it to be told so.
const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Tags are kept per resource type; documents are the only type this service has.
const RESOURCE_TYPE: &str = "Document";
/// The only permission type DocumentService knows.
const SHARE: &str = "Share";

#[derive(Subcommand, Debug)]
pub enum DocCommand {
    /// Create a document from a JSON or YAML file; it starts at version 1.
    Create(CreateArgs),
    /// Add a new version of a document; the default version does not change.
    // `--version` here picks a document version; the CLI's own version stays on `bosun --version`.
    #[command(disable_version_flag = true)]
    Update(UpdateArgs),
    /// Print a document's content (with -o json|yaml, its metadata too).
    // `--version` here picks a document version; the CLI's own version stays on `bosun --version`.
    #[command(disable_version_flag = true)]
    Get {
        /// Document name.
        name: String,
        #[command(flatten)]
        version: VersionSelector,
        /// Convert the content to this format; by default the server's JSON.
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<FormatArg>,
    },
    /// Describe a document version: type, schema, owner, versions, hash, parameters.
    // `--version` here picks a document version; the CLI's own version stays on `bosun --version`.
    #[command(disable_version_flag = true)]
    Describe {
        /// Document name.
        name: String,
        #[command(flatten)]
        version: VersionSelector,
    },
    /// List the documents you can see.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// List the versions of a document, oldest first.
    Versions {
        /// Document name.
        name: String,
    },
    /// Make an existing version the default.
    SetDefault {
        /// Document name.
        name: String,
        /// Version number.
        #[arg(value_name = "VERSION", value_parser = parse_version_number)]
        document_version: String,
    },
    /// Delete a document, or one version of it that is not the default.
    // `--version` here picks a document version; the CLI's own version stays on `bosun --version`.
    #[command(disable_version_flag = true, visible_alias = "delete")]
    Rm {
        /// Document name.
        name: String,
        /// Delete only this version number.
        #[arg(long, value_name = "N", value_parser = parse_version_number, conflicts_with = "version_name")]
        version: Option<String>,
        /// Delete only the version with this name.
        #[arg(long, value_name = "NAME")]
        version_name: Option<String>,
    },
    /// Share a document with principals, or stop sharing it.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["add", "remove"])))]
    Share {
        /// Document name.
        name: String,
        /// Principals to share with: user/NAME, role/NAME or All.
        #[arg(long, value_name = "PRINCIPAL", num_args = 1.., value_parser = parse_principal)]
        add: Vec<String>,
        /// Principals to stop sharing with: user/NAME, role/NAME or All.
        #[arg(long, value_name = "PRINCIPAL", num_args = 1.., value_parser = parse_principal)]
        remove: Vec<String>,
    },
    /// Show whom a document is shared with.
    Permissions {
        /// Document name.
        name: String,
    },
    /// Add or overwrite tags of a document.
    Tag {
        /// Document name.
        name: String,
        /// Tags as KEY=VALUE.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<proto::Tag>,
    },
    /// Remove tags from a document by key; absent keys are ignored.
    Untag {
        /// Document name.
        name: String,
        /// Tag keys to remove.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List the tags of a document.
    Tags {
        /// Document name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Document name: 3-128 of letters, digits, _ . and -.
    pub name: String,
    /// The content: a JSON or YAML file, or - for stdin; at most 64 KB.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: String,
    /// Document type; must match the content.
    #[arg(long = "type", value_enum, value_name = "TYPE", default_value_t = DocTypeArg::Command)]
    pub document_type: DocTypeArg,
    /// Content format; by default from the file extension, else detected from the content.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatArg>,
    /// A name for version 1, unique within the document.
    #[arg(long, value_name = "NAME")]
    pub version_name: Option<String>,
    /// A friendlier name to show.
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
    /// The kind of target the document runs on, e.g. / or /AWS::EC2::Instance.
    #[arg(long, value_name = "TYPE")]
    pub target_type: Option<String>,
    /// A tag as KEY=VALUE; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<proto::Tag>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Document name.
    pub name: String,
    /// The new content: a JSON or YAML file, or - for stdin; at most 64 KB.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: String,
    /// The version this update builds on: '$LATEST' or the latest version number, so two
    /// writers cannot both build on the same version unawares.
    #[arg(long, value_name = "VERSION", value_parser = parse_update_version, default_value = LATEST)]
    pub version: String,
    /// Content format; by default from the file extension, else detected from the content.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatArg>,
    /// A name for the new version, unique within the document.
    #[arg(long, value_name = "NAME")]
    pub version_name: Option<String>,
    /// A new display name.
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,
}

/// Which version `get` and `describe` read; the default version when neither flag is given.
#[derive(Args, Debug, Default)]
pub struct VersionSelector {
    /// Version number, '$LATEST' or '$DEFAULT' (the $ may be left out).
    #[arg(long, value_name = "VERSION", value_parser = parse_version_selector)]
    pub version: Option<String>,
    /// Version name.
    #[arg(long, value_name = "NAME")]
    pub version_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Whose documents: your own, Bosun's built-in ones, private ones (yours and those
    /// shared with you) or all you can see.
    #[arg(long, value_enum, value_name = "OWNER")]
    pub owner: Option<OwnerArg>,
    /// Only documents of this type.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub document_type: Option<DocTypeArg>,
    /// Only documents whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub name_prefix: Option<String>,
    /// Only documents with this tag, as KEY=VALUE; repeatable: every key must match, and
    /// values given for one key are alternatives.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<proto::Tag>,
}

/// The `--type` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocTypeArg {
    /// Commands run on nodes.
    Command,
    /// Runbooks of steps.
    Automation,
    /// Session preferences.
    Session,
}

impl DocTypeArg {
    fn to_proto(self) -> proto::DocumentType {
        match self {
            Self::Command => proto::DocumentType::Command,
            Self::Automation => proto::DocumentType::Automation,
            Self::Session => proto::DocumentType::Session,
        }
    }

    /// The value of the `DocumentType` list filter.
    fn filter_value(self) -> &'static str {
        match self {
            Self::Command => "Command",
            Self::Automation => "Automation",
            Self::Session => "Session",
        }
    }
}

/// The `--format` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl FormatArg {
    fn to_proto(self) -> proto::DocumentFormat {
        match self {
            Self::Json => proto::DocumentFormat::Json,
            Self::Yaml => proto::DocumentFormat::Yaml,
        }
    }
}

/// The `--owner` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerArg {
    /// Documents you created.
    #[value(name = "self")]
    Own,
    /// Bosun's built-in documents.
    Bosun,
    /// Documents that are not built in: yours and those shared with you.
    Private,
    /// Every document you can see.
    All,
}

impl OwnerArg {
    /// The value of the `Owner` list filter.
    fn filter_value(self) -> &'static str {
        match self {
            Self::Own => "Self",
            Self::Bosun => "Bosun",
            Self::Private => "Private",
            Self::All => "All",
        }
    }
}

const LATEST: &str = "$LATEST";
const DEFAULT: &str = "$DEFAULT";

/// A positive version number, normalized (`007` is `7`). Digits only, since `u64`'s parser
/// would also take `+7`.
fn version_number(value: &str) -> Option<String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.to_string())
}

/// `$LATEST` or `$DEFAULT`, in any case and with or without the `$`: an unquoted `$LATEST`
/// in a shell expands to nothing, so the plain word is accepted too.
fn keyword(value: &str) -> Option<&'static str> {
    let word = value.strip_prefix('$').unwrap_or(value);
    if word.eq_ignore_ascii_case("latest") {
        Some(LATEST)
    } else if word.eq_ignore_ascii_case("default") {
        Some(DEFAULT)
    } else {
        None
    }
}

/// clap value parser for a version number.
pub fn parse_version_number(value: &str) -> Result<String, String> {
    version_number(value).ok_or_else(|| "expected a version number, e.g. 3".to_owned())
}

/// clap value parser for `--version` of `get` and `describe`.
pub fn parse_version_selector(value: &str) -> Result<String, String> {
    version_number(value)
        .or_else(|| keyword(value).map(str::to_owned))
        .ok_or_else(|| "expected a version number, '$LATEST' or '$DEFAULT'".to_owned())
}

/// clap value parser for `--version` of `update`.
pub fn parse_update_version(value: &str) -> Result<String, String> {
    version_number(value)
        .or_else(|| (keyword(value) == Some(LATEST)).then(|| LATEST.to_owned()))
        .ok_or_else(|| "expected '$LATEST' or the latest version number".to_owned())
}

/// clap value parser for `KEY=VALUE` tags; only the first `=` splits, and the value may be
/// empty. The lengths are the server's, checked here so a long tag fails before any call.
pub fn parse_tag(value: &str) -> Result<proto::Tag, String> {
    let Some((key, tag_value)) = value.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. env=prod".to_owned());
    };
    if key.is_empty() {
        return Err("the tag key is empty; expected KEY=VALUE, e.g. env=prod".to_owned());
    }
    if key.chars().count() > 128 {
        return Err("the tag key is longer than 128 characters".to_owned());
    }
    if tag_value.chars().count() > 256 {
        return Err("the tag value is longer than 256 characters".to_owned());
    }
    Ok(proto::Tag {
        key: key.to_owned(),
        value: tag_value.to_owned(),
    })
}

/// clap value parser for principals to share with: `user/NAME`, `role/NAME` or `All`.
pub fn parse_principal(value: &str) -> Result<String, String> {
    if value.eq_ignore_ascii_case("all") {
        return Ok("All".to_owned());
    }
    match value.split_once('/') {
        Some(("user" | "role", name)) if !name.is_empty() && !name.contains('/') => {
            Ok(value.to_owned())
        }
        _ => Err("expected user/NAME, role/NAME or All".to_owned()),
    }
}

/// Reads document content from a file or, for `-`, stdin. At most one byte past the limit
/// is read, so a huge file or an endless pipe costs nothing.
pub fn read_content(source: &str, stdin: &mut impl Read) -> anyhow::Result<String> {
    let (what, mut bytes) = if source == "-" {
        let mut bytes = Vec::new();
        stdin
            .take(MAX_CONTENT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the document from stdin")?;
        ("stdin", bytes)
    } else {
        let file = std::fs::File::open(source).with_context(|| format!("cannot read {source}"))?;
        let mut bytes = Vec::new();
        file.take(MAX_CONTENT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {source}"))?;
        (source, bytes)
    };
    if bytes.len() > MAX_CONTENT_BYTES {
        bail!("{what}: the document is larger than 64 KB ({MAX_CONTENT_BYTES} bytes)");
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{what}: the document is empty");
    }
    // A UTF-8 byte-order mark is not content, and JSON parsers refuse it.
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("{what}: the document is not utf-8 text"))
}

/// The format to declare: the flag, else the file extension, else JSON when the content
/// parses as JSON and YAML otherwise (JSON is also YAML, so that order is the only sound one).
pub fn content_format(
    flag: Option<FormatArg>,
    source: &str,
    content: &str,
) -> proto::DocumentFormat {
    if let Some(format) = flag {
        return format.to_proto();
    }
    let extension = Path::new(source)
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("json") => proto::DocumentFormat::Json,
        Some("yaml" | "yml") => proto::DocumentFormat::Yaml,
        _ if serde_json::from_str::<serde::de::IgnoredAny>(content).is_ok() => {
            proto::DocumentFormat::Json
        }
        _ => proto::DocumentFormat::Yaml,
    }
}

/// The `ListDocuments` filters for the flags; tags with the same key merge into one filter
/// with several values.
fn list_filters(args: &ListArgs) -> Vec<proto::DocumentKeyValuesFilter> {
    let mut filters = Vec::new();
    if let Some(owner) = args.owner {
        filters.push(proto::DocumentKeyValuesFilter {
            key: "Owner".to_owned(),
            values: vec![owner.filter_value().to_owned()],
        });
    }
    if let Some(document_type) = args.document_type {
        filters.push(proto::DocumentKeyValuesFilter {
            key: "DocumentType".to_owned(),
            values: vec![document_type.filter_value().to_owned()],
        });
    }
    if let Some(prefix) = &args.name_prefix {
        filters.push(proto::DocumentKeyValuesFilter {
            key: "Name".to_owned(),
            values: vec![prefix.clone()],
        });
    }
    for tag in &args.tags {
        let key = format!("tag:{}", tag.key);
        match filters.iter_mut().find(|filter| filter.key == key) {
            Some(filter) => filter.values.push(tag.value.clone()),
            None => filters.push(proto::DocumentKeyValuesFilter {
                key,
                values: vec![tag.value.clone()],
            }),
        }
    }
    filters
}

pub async fn run(ctx: &Context, command: DocCommand) -> anyhow::Result<()> {
    match command {
        DocCommand::Create(args) => {
            // Read before connecting, so a bad path or size costs no call.
            let content = read_content(&args.file, &mut std::io::stdin().lock())?;
            let document_format = content_format(args.format, &args.file, &content);
            let mut client = ctx.connect().await?.documents();
            let response = client
                .create_document(proto::CreateDocumentRequest {
                    content,
                    name: args.name,
                    display_name: args.display_name.unwrap_or_default(),
                    version_name: args.version_name.unwrap_or_default(),
                    document_type: args.document_type.to_proto().into(),
                    document_format: document_format.into(),
                    target_type: args.target_type.unwrap_or_default(),
                    tags: args.tags,
                })
                .await?
                .into_inner();
            ctx.emit(&DocumentDescriptionView::from(required(
                response.document_description,
                "document description",
            )?))
        }
        DocCommand::Update(args) => {
            let content = read_content(&args.file, &mut std::io::stdin().lock())?;
            let document_format = content_format(args.format, &args.file, &content);
            let mut client = ctx.connect().await?.documents();
            let response = client
                .update_document(proto::UpdateDocumentRequest {
                    content,
                    name: args.name,
                    display_name: args.display_name.unwrap_or_default(),
                    version_name: args.version_name.unwrap_or_default(),
                    document_version: args.version,
                    document_format: document_format.into(),
                    target_type: String::new(),
                })
                .await?
                .into_inner();
            ctx.emit(&DocumentDescriptionView::from(required(
                response.document_description,
                "document description",
            )?))
        }
        DocCommand::Get {
            name,
            version,
            format,
        } => {
            let mut client = ctx.connect().await?.documents();
            let response = client
                .get_document(proto::GetDocumentRequest {
                    name,
                    version_name: version.version_name.unwrap_or_default(),
                    document_version: version.version.unwrap_or_default(),
                    document_format: format
                        .map_or(proto::DocumentFormat::Unspecified, FormatArg::to_proto)
                        .into(),
                })
                .await?
                .into_inner();
            ctx.emit(&DocumentContentView::from(response))
        }
        DocCommand::Describe { name, version } => {
            let mut client = ctx.connect().await?.documents();
            let response = client
                .describe_document(proto::DescribeDocumentRequest {
                    name,
                    document_version: version.version.unwrap_or_default(),
                    version_name: version.version_name.unwrap_or_default(),
                })
                .await?
                .into_inner();
            ctx.emit(&DocumentDescriptionView::from(required(
                response.document,
                "document",
            )?))
        }
        DocCommand::Ls(args) => {
            let filters = list_filters(&args);
            let mut client = ctx.connect().await?.documents();
            let mut documents = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_documents(proto::ListDocumentsRequest {
                        filters: filters.clone(),
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                documents.extend(page.document_identifiers.into_iter().map(Into::into));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&DocumentList { documents })
        }
        DocCommand::Versions { name } => {
            let mut client = ctx.connect().await?.documents();
            let mut versions = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_document_versions(proto::ListDocumentVersionsRequest {
                        name: name.clone(),
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                versions.extend(page.document_versions.into_iter().map(Into::into));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&DocumentVersionList { versions })
        }
        DocCommand::SetDefault {
            name,
            document_version,
        } => {
            let mut client = ctx.connect().await?.documents();
            let response = client
                .update_document_default_version(proto::UpdateDocumentDefaultVersionRequest {
                    name,
                    document_version,
                })
                .await?
                .into_inner();
            ctx.emit(&DefaultVersionView::from(required(
                response.description,
                "description",
            )?))
        }
        DocCommand::Rm {
            name,
            version,
            version_name,
        } => {
            let message = match (&version, &version_name) {
                (Some(version), _) => format!("deleted version {version} of document {name}"),
                (None, Some(version_name)) => {
                    format!("deleted version {version_name} of document {name}")
                }
                (None, None) => format!("deleted document {name}"),
            };
            let mut client = ctx.connect().await?.documents();
            client
                .delete_document(proto::DeleteDocumentRequest {
                    name,
                    document_version: version.unwrap_or_default(),
                    version_name: version_name.unwrap_or_default(),
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        DocCommand::Share { name, add, remove } => {
            let mut parts = Vec::new();
            if !add.is_empty() {
                parts.push(format!("shared document {name} with {}", add.join(", ")));
            }
            if !remove.is_empty() {
                let verb = if add.is_empty() {
                    format!("stopped sharing document {name} with")
                } else {
                    "stopped sharing it with".to_owned()
                };
                parts.push(format!("{verb} {}", remove.join(", ")));
            }
            let mut client = ctx.connect().await?.documents();
            client
                .modify_document_permission(proto::ModifyDocumentPermissionRequest {
                    name,
                    permission_type: SHARE.to_owned(),
                    principals_to_add: add,
                    principals_to_remove: remove,
                })
                .await?;
            ctx.emit(&MessageView::new(parts.join("; ")))
        }
        DocCommand::Permissions { name } => {
            let mut client = ctx.connect().await?.documents();
            let mut principals = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .describe_document_permission(proto::DescribeDocumentPermissionRequest {
                        name: name.clone(),
                        permission_type: SHARE.to_owned(),
                        max_results: PERMISSION_PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                principals.extend(page.principals);
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&DocumentPermissionsView { name, principals })
        }
        DocCommand::Tag { name, tags } => {
            let keys: Vec<&str> = tags.iter().map(|tag| tag.key.as_str()).collect();
            let message = format!("tagged document {name}: {}", keys.join(", "));
            let mut client = ctx.connect().await?.documents();
            client
                .add_tags_to_resource(proto::AddTagsToResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: name,
                    tags,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        DocCommand::Untag { name, keys } => {
            let message = format!("removed tags from document {name}: {}", keys.join(", "));
            let mut client = ctx.connect().await?.documents();
            client
                .remove_tags_from_resource(proto::RemoveTagsFromResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: name,
                    tag_keys: keys,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        DocCommand::Tags { name } => {
            let mut client = ctx.connect().await?.documents();
            let response = client
                .list_tags_for_resource(proto::ListTagsForResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: name,
                })
                .await?
                .into_inner();
            ctx.emit(&TagList::from(response.tag_list))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbers_or_keywords() {
        assert_eq!(parse_version_number("007"), Ok("7".to_owned()));
        for bad in ["0", "+7", "-1", "", "1.0", "$LATEST"] {
            assert!(parse_version_number(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_version_selector("$LATEST"), Ok(LATEST.to_owned()));
        assert_eq!(parse_version_selector("default"), Ok(DEFAULT.to_owned()));
        assert_eq!(parse_version_selector("12"), Ok("12".to_owned()));
        assert!(parse_version_selector("newest").is_err());
        assert_eq!(parse_update_version("latest"), Ok(LATEST.to_owned()));
        assert_eq!(parse_update_version("3"), Ok("3".to_owned()));
        assert!(parse_update_version("$DEFAULT").is_err());
    }

    #[test]
    fn tags_split_on_the_first_equals() {
        let tag = parse_tag("env=a=b");
        assert_eq!(
            tag.map(|t| (t.key, t.value)),
            Ok(("env".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(parse_tag("env=").map(|t| t.value), Ok(String::new()));
        for bad in ["env", "=prod", ""] {
            assert!(parse_tag(bad).is_err(), "{bad}");
        }
        assert!(parse_tag(&format!("{}=v", "k".repeat(129))).is_err());
        assert!(parse_tag(&format!("k={}", "v".repeat(257))).is_err());
    }

    #[test]
    fn principals_are_users_roles_or_all() {
        assert_eq!(parse_principal("user/carol"), Ok("user/carol".to_owned()));
        assert_eq!(parse_principal("role/ops"), Ok("role/ops".to_owned()));
        assert_eq!(parse_principal("all"), Ok("All".to_owned()));
        for bad in ["carol", "user/", "node/mi-1", "role/a/b", ""] {
            assert!(parse_principal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_comes_from_flag_then_extension_then_content() {
        use proto::DocumentFormat::{Json, Yaml};
        assert_eq!(
            content_format(Some(FormatArg::Json), "a.yaml", "x: 1"),
            Json
        );
        assert_eq!(content_format(None, "a.YML", "{}"), Yaml);
        assert_eq!(content_format(None, "dir.d/a.json", "x: 1"), Json);
        assert_eq!(content_format(None, "-", r#" {"a": 1} "#), Json);
        assert_eq!(content_format(None, "-", "a: 1\n"), Yaml);
        assert_eq!(content_format(None, "doc.txt", "{a: 1}"), Yaml);
    }

    #[test]
    fn content_is_limited_to_64_kb_of_text() -> anyhow::Result<()> {
        let mut no_stdin = std::io::empty();
        let fits = "a".repeat(MAX_CONTENT_BYTES);
        assert_eq!(
            read_content("-", &mut fits.as_bytes())?.len(),
            MAX_CONTENT_BYTES
        );

        let too_big = "a".repeat(MAX_CONTENT_BYTES + 1);
        let err = read_content("-", &mut too_big.as_bytes()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("stdin: the document is larger than 64 KB (65536 bytes)")
        );
        let err = read_content("-", &mut " \n".as_bytes()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("stdin: the document is empty")
        );
        let err = read_content("-", &mut [0xff_u8, 0xfe, b'a'].as_slice()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("stdin: the document is not utf-8 text")
        );
        assert_eq!(read_content("-", &mut b"\xEF\xBB\xBF{}".as_slice())?, "{}");

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("doc.yaml");
        std::fs::write(&path, "schemaVersion: '2.2'\n")?;
        let path = path.to_string_lossy().into_owned();
        assert_eq!(
            read_content(&path, &mut no_stdin)?,
            "schemaVersion: '2.2'\n"
        );
        let err = read_content("/no/such/doc.yaml", &mut no_stdin).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(message, "cannot read /no/such/doc.yaml");
        Ok(())
    }

    #[test]
    fn list_filters_merge_tags_by_key() {
        let args = ListArgs {
            owner: Some(OwnerArg::Own),
            document_type: Some(DocTypeArg::Automation),
            name_prefix: Some("Ops".into()),
            tags: vec![
                proto::Tag {
                    key: "env".into(),
                    value: "prod".into(),
                },
                proto::Tag {
                    key: "env".into(),
                    value: "stage".into(),
                },
            ],
        };
        let filters: Vec<(String, Vec<String>)> = list_filters(&args)
            .into_iter()
            .map(|f| (f.key, f.values))
            .collect();
        assert_eq!(
            filters,
            [
                ("Owner".to_owned(), vec!["Self".to_owned()]),
                ("DocumentType".to_owned(), vec!["Automation".to_owned()]),
                ("Name".to_owned(), vec!["Ops".to_owned()]),
                (
                    "tag:env".to_owned(),
                    vec!["prod".to_owned(), "stage".to_owned()]
                ),
            ]
        );
    }
}
