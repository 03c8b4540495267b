//! `bosun param …`: Parameter Store (hierarchical configuration values and secrets, with
//! versions, labels, tiers and tags) over ParameterService.

use std::io::{Read, Write};

use anyhow::{Context as _, anyhow, bail};
use bosun_proto::parameters::v1 as proto;
use clap::{Args, Subcommand, ValueEnum};

use super::{Context, next_page, required};
use crate::views::{
    DeletedParametersView, LabelResultView, MessageView, ParameterHistoryList, ParameterList,
    ParameterMetadataList, PutParameterView, TagList, TagView, UnlabelResultView,
};

/// The server's largest page for GetParametersByPath, and its most names per GetParameters
/// and DeleteParameters call.
const BATCH_SIZE: usize = 10;
const BY_PATH_PAGE_SIZE: i32 = 10;
/// The server's largest page for history and describe.
const PAGE_SIZE: i32 = 50;
/// The Advanced tier's limit; checking here saves uploading a value to be told so. The
/// Standard tier's 4 KB is left to the server, which knows the tier it will choose.
const MAX_VALUE_BYTES: usize = 8 * 1024;
/// Tags are kept per resource type; parameters are the only type this service has.
const RESOURCE_TYPE: &str = "Parameter";
const SELECTOR_HINT: &str = "expected NAME, NAME:VERSION or NAME:LABEL, e.g. /app/db:3";

#[derive(Subcommand, Debug)]
pub enum ParamCommand {
    /// Create a parameter, or with --overwrite add a version to it.
    Put(PutArgs),
    /// Print one or more parameters; names that do not exist are listed on stderr.
    Get(GetArgs),
    /// List the parameters under a path with their values, or (--describe) their metadata.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// List every kept version of a parameter, oldest first.
    History {
        /// Parameter name.
        name: String,
        /// Show SecureString values in plaintext (needs parameters:Decrypt).
        #[arg(long)]
        decrypt: bool,
    },
    /// Attach labels to a version (the latest by default), moving them from other versions.
    // `--version` here picks a parameter version; the CLI's own stays on `bosun --version`.
    #[command(disable_version_flag = true)]
    Label {
        /// Parameter name.
        name: String,
        /// Version to label; the latest when absent.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        version: Option<i64>,
        /// Labels to attach, 1 to 10.
        #[arg(required = true, value_name = "LABEL")]
        labels: Vec<String>,
    },
    /// Remove labels from a version.
    // `--version` here picks a parameter version; the CLI's own stays on `bosun --version`.
    #[command(disable_version_flag = true)]
    Unlabel {
        /// Parameter name.
        name: String,
        /// Version to remove the labels from.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        version: i64,
        /// Labels to remove.
        #[arg(required = true, value_name = "LABEL")]
        labels: Vec<String>,
    },
    /// Delete parameters with all their versions; names that do not exist are listed on stderr.
    #[command(visible_alias = "delete")]
    Rm {
        /// Parameter names.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Add or overwrite tags of a parameter.
    Tag {
        /// Parameter name.
        name: String,
        /// Tags as KEY=VALUE.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<proto::Tag>,
    },
    /// Remove tags from a parameter by key; absent keys are ignored.
    Untag {
        /// Parameter name.
        name: String,
        /// Tag keys to remove.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List the tags of a parameter.
    Tags {
        /// Parameter name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// Parameter name, e.g. /app/prod/db/url.
    pub name: String,
    /// The value, or - to read it from stdin (one final line ending is dropped); put it
    /// after -- when it starts with -.
    // Debug of these args is never printed outside tests, so the value cannot leak that way.
    #[arg(value_name = "VALUE")]
    pub value: Option<String>,
    /// Read the value from a file, verbatim, or - for stdin; at most 8 KB.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<String>,
    /// Parameter type; required when creating, must match when overwriting.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub parameter_type: Option<TypeArg>,
    /// What the parameter is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// The key that encrypts a SecureString; the server's default when absent.
    #[arg(long, value_name = "KEY")]
    pub key_id: Option<String>,
    /// Add a new version when the parameter exists, instead of failing.
    #[arg(long)]
    pub overwrite: bool,
    /// A regular expression every value must match.
    #[arg(long, value_name = "REGEX")]
    pub allowed_pattern: Option<String>,
    /// Storage tier; the server's default when absent.
    #[arg(long, value_enum, value_name = "TIER")]
    pub tier: Option<TierArg>,
    /// Policies (Advanced tier) as a JSON array, or @FILE to read them from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub policies: Option<String>,
    /// A tag as KEY=VALUE, only when creating; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<proto::Tag>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Parameter names, each optionally with :VERSION or :LABEL.
    #[arg(required = true, value_name = "NAME[:VERSION|:LABEL]", value_parser = parse_selector)]
    pub names: Vec<String>,
    /// Show SecureString values in plaintext (needs parameters:Decrypt).
    #[arg(long)]
    pub decrypt: bool,
    /// Print only the value, exactly as stored, for scripts; takes one name, ignores -o.
    #[arg(long)]
    pub value_only: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The hierarchy to list, e.g. /app/prod; / when absent (with --describe, everything).
    #[arg(value_name = "PATH", value_parser = parse_path)]
    pub path: Option<String>,
    /// Include every level below the path, not only its direct children.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Show SecureString values in plaintext (needs parameters:Decrypt).
    #[arg(long, conflicts_with = "describe")]
    pub decrypt: bool,
    /// Only parameters of this type.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub parameter_type: Option<TypeArg>,
    /// Only parameters with a version carrying this label; repeatable, any may match.
    #[arg(long = "label", value_name = "LABEL", conflicts_with = "describe")]
    pub labels: Vec<String>,
    /// List metadata (type, tier, version, last writer) instead of values.
    #[arg(long)]
    pub describe: bool,
    /// Only parameters whose name starts with this (with --describe).
    #[arg(long, value_name = "PREFIX", requires = "describe")]
    pub name_prefix: Option<String>,
    /// Only parameters in this tier (with --describe).
    #[arg(long, value_enum, value_name = "TIER", requires = "describe")]
    pub tier: Option<TierArg>,
}

/// The `--type` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeArg {
    /// Plain text.
    String,
    /// Comma-separated values.
    StringList,
    /// Encrypted at rest; read in plaintext only with --decrypt.
    SecureString,
}

impl TypeArg {
    fn to_proto(self) -> proto::ParameterType {
        match self {
            Self::String => proto::ParameterType::String,
            Self::StringList => proto::ParameterType::StringList,
            Self::SecureString => proto::ParameterType::SecureString,
        }
    }

    /// The value of the `Type` filter, as SSM spells it.
    fn filter_value(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::StringList => "StringList",
            Self::SecureString => "SecureString",
        }
    }
}

/// The `--tier` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierArg {
    /// Values up to 4 KB, no policies.
    Standard,
    /// Values up to 8 KB, policies allowed; a parameter never leaves it.
    Advanced,
    /// Standard unless the write needs Advanced.
    IntelligentTiering,
}

impl TierArg {
    fn to_proto(self) -> proto::ParameterTier {
        match self {
            Self::Standard => proto::ParameterTier::Standard,
            Self::Advanced => proto::ParameterTier::Advanced,
            Self::IntelligentTiering => proto::ParameterTier::IntelligentTiering,
        }
    }

    /// The value of the `Tier` filter, as SSM spells it.
    fn filter_value(self) -> &'static str {
        match self {
            Self::Standard => "Standard",
            Self::Advanced => "Advanced",
            Self::IntelligentTiering => "Intelligent-Tiering",
        }
    }
}

/// clap value parser for `KEY=VALUE` tags, with the same rules as document tags.
pub fn parse_tag(value: &str) -> Result<proto::Tag, String> {
    super::documents::parse_tag(value).map(|tag| proto::Tag {
        key: tag.key,
        value: tag.value,
    })
}

/// clap value parser for `NAME`, `NAME:VERSION` or `NAME:LABEL`. Names cannot hold `:`, so
/// the first one splits; a selector of digits must be a version from 1.
pub fn parse_selector(value: &str) -> Result<String, String> {
    let (name, selector) = match value.split_once(':') {
        Some((name, selector)) => (name, Some(selector)),
        None => (value, None),
    };
    if name.trim().is_empty() {
        return Err(format!("the parameter name is empty; {SELECTOR_HINT}"));
    }
    if let Some(selector) = selector {
        if selector.is_empty() || selector.contains(':') {
            return Err(SELECTOR_HINT.to_owned());
        }
        if selector.bytes().all(|b| b.is_ascii_digit())
            && selector.parse::<u64>().ok().filter(|n| *n > 0).is_none()
        {
            return Err(format!(
                "the version must be a number from 1; {SELECTOR_HINT}"
            ));
        }
    }
    Ok(value.to_owned())
}

/// clap value parser for `ls PATH`: hierarchies are absolute.
pub fn parse_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        Ok(value.to_owned())
    } else {
        Err("expected a path starting with /, e.g. /app/prod".to_owned())
    }
}

/// Where `put` found the value; a SecureString typed on the command line earns a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSource {
    Argument,
    Stdin,
    File,
}

/// The value of `put`, from exactly one of the argument, stdin (`-` as the argument or the
/// file) or a file. At most one byte past the limit is read, so a huge file or an endless
/// pipe costs nothing. Stdin loses one final line ending, since `echo` adds one nobody
/// meant to store; a file is taken verbatim, like a key or a certificate should be.
pub fn read_value(
    argument: Option<String>,
    file: Option<&str>,
    stdin: &mut impl Read,
) -> anyhow::Result<(String, ValueSource)> {
    let (what, source, bytes) = match (argument, file) {
        (Some(_), Some(_)) => {
            bail!("give the value either as an argument or with --file, not both")
        }
        (None, None) => bail!("no value: give it as an argument, - for stdin, or --file PATH"),
        (Some(value), None) if value != "-" => {
            ("the argument", ValueSource::Argument, value.into_bytes())
        }
        (Some(_), None) | (None, Some("-")) => {
            let mut bytes = Vec::new();
            stdin
                .take(MAX_VALUE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .context("cannot read the value from stdin")?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            ("stdin", ValueSource::Stdin, bytes)
        }
        (None, Some(path)) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
            let mut bytes = Vec::new();
            file.take(MAX_VALUE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {path}"))?;
            (path, ValueSource::File, bytes)
        }
    };
    if bytes.len() > MAX_VALUE_BYTES {
        bail!("{what}: the value is larger than 8 KB ({MAX_VALUE_BYTES} bytes)");
    }
    if bytes.is_empty() {
        bail!("{what}: the value is empty");
    }
    let value =
        String::from_utf8(bytes).map_err(|_| anyhow!("{what}: the value is not utf-8 text"))?;
    Ok((value, source))
}

/// `--policies`: inline JSON or `@FILE`, checked to be a JSON array so a typo fails before
/// any call; the server still checks each policy.
pub fn read_policies(argument: &str) -> anyhow::Result<String> {
    let text = match argument.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--policies: cannot read {path}"))?,
        None => argument.to_owned(),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).context("--policies: the policies are not valid json")?;
    if !value.is_array() {
        bail!("--policies: expected a json array of policies");
    }
    Ok(text)
}

fn filter(key: &str, option: &str, values: Vec<String>) -> proto::ParameterStringFilter {
    proto::ParameterStringFilter {
        key: key.to_owned(),
        option: option.to_owned(),
        values,
    }
}

/// The GetParametersByPath filters for the flags.
fn by_path_filters(args: &ListArgs) -> Vec<proto::ParameterStringFilter> {
    let mut filters = Vec::new();
    if let Some(parameter_type) = args.parameter_type {
        filters.push(filter(
            "Type",
            "Equals",
            vec![parameter_type.filter_value().to_owned()],
        ));
    }
    if !args.labels.is_empty() {
        filters.push(filter("Label", "Equals", args.labels.clone()));
    }
    filters
}

/// The DescribeParameters filters for the flags. Without a PATH describe lists everything,
/// since a `/` OneLevel filter would hide every nested parameter.
fn describe_filters(args: &ListArgs) -> Vec<proto::ParameterStringFilter> {
    let mut filters = Vec::new();
    if let Some(path) = &args.path {
        let option = if args.recursive {
            "Recursive"
        } else {
            "OneLevel"
        };
        filters.push(filter("Path", option, vec![path.clone()]));
    }
    if let Some(prefix) = &args.name_prefix {
        filters.push(filter("Name", "BeginsWith", vec![prefix.clone()]));
    }
    if let Some(parameter_type) = args.parameter_type {
        filters.push(filter(
            "Type",
            "Equals",
            vec![parameter_type.filter_value().to_owned()],
        ));
    }
    if let Some(tier) = args.tier {
        filters.push(filter(
            "Tier",
            "Equals",
            vec![tier.filter_value().to_owned()],
        ));
    }
    filters
}

/// Ends a command that partly failed: what worked is already printed, and the exit status
/// must still tell a script that not everything did.
fn fail_on_invalid(what: &str, invalid: &[String]) -> anyhow::Result<()> {
    if invalid.is_empty() {
        Ok(())
    } else {
        bail!("{what}: {}", invalid.join(", "))
    }
}

pub async fn run(ctx: &Context, command: ParamCommand) -> anyhow::Result<()> {
    match command {
        ParamCommand::Put(args) => put(ctx, args).await,
        ParamCommand::Get(args) => get(ctx, args).await,
        ParamCommand::Ls(args) if args.describe => describe(ctx, args).await,
        ParamCommand::Ls(args) => list_by_path(ctx, args).await,
        ParamCommand::History { name, decrypt } => {
            let mut client = ctx.connect().await?.parameters();
            let mut versions = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .get_parameter_history(proto::GetParameterHistoryRequest {
                        name: name.clone(),
                        with_decryption: decrypt,
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                versions.extend(page.parameters.into_iter().map(Into::into));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&ParameterHistoryList { name, versions })
        }
        ParamCommand::Label {
            name,
            version,
            labels,
        } => {
            let mut client = ctx.connect().await?.parameters();
            let response = client
                .label_parameter_version(proto::LabelParameterVersionRequest {
                    name: name.clone(),
                    parameter_version: version.unwrap_or(0),
                    labels: labels.clone(),
                })
                .await?
                .into_inner();
            let applied = labels
                .into_iter()
                .filter(|label| !response.invalid_labels.contains(label))
                .collect();
            let view = LabelResultView {
                name,
                parameter_version: response.parameter_version,
                labels: applied,
                invalid_labels: response.invalid_labels,
            };
            ctx.emit(&view)?;
            fail_on_invalid("invalid labels", &view.invalid_labels)
        }
        ParamCommand::Unlabel {
            name,
            version,
            labels,
        } => {
            let mut client = ctx.connect().await?.parameters();
            let response = client
                .unlabel_parameter_version(proto::UnlabelParameterVersionRequest {
                    name: name.clone(),
                    parameter_version: version,
                    labels,
                })
                .await?
                .into_inner();
            let view = UnlabelResultView {
                name,
                parameter_version: version,
                removed_labels: response.removed_labels,
                invalid_labels: response.invalid_labels,
            };
            ctx.emit(&view)?;
            fail_on_invalid("labels not on that version", &view.invalid_labels)
        }
        ParamCommand::Rm { names } => {
            let mut client = ctx.connect().await?.parameters();
            let mut view = DeletedParametersView::default();
            if let [name] = names.as_slice() {
                // One name keeps DeleteParameter's NotFound error, which names the reason.
                client
                    .delete_parameter(proto::DeleteParameterRequest { name: name.clone() })
                    .await?;
                view.deleted_parameters.push(name.clone());
            } else {
                for chunk in names.chunks(BATCH_SIZE) {
                    let response = client
                        .delete_parameters(proto::DeleteParametersRequest {
                            names: chunk.to_vec(),
                        })
                        .await?
                        .into_inner();
                    view.deleted_parameters.extend(response.deleted_parameters);
                    view.invalid_parameters.extend(response.invalid_parameters);
                }
            }
            ctx.emit(&view)?;
            fail_on_invalid("parameters not found", &view.invalid_parameters)
        }
        ParamCommand::Tag { name, tags } => {
            let keys: Vec<&str> = tags.iter().map(|tag| tag.key.as_str()).collect();
            let message = format!("tagged parameter {name}: {}", keys.join(", "));
            let mut client = ctx.connect().await?.parameters();
            client
                .add_tags_to_resource(proto::AddTagsToResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: name,
                    tags,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        ParamCommand::Untag { name, keys } => {
            let message = format!("removed tags from parameter {name}: {}", keys.join(", "));
            let mut client = ctx.connect().await?.parameters();
            client
                .remove_tags_from_resource(proto::RemoveTagsFromResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: name,
                    tag_keys: keys,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        ParamCommand::Tags { name } => {
            let mut client = ctx.connect().await?.parameters();
            let response = client
                .list_tags_for_resource(proto::ListTagsForResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: name,
                })
                .await?
                .into_inner();
            ctx.emit(&TagList {
                tags: response.tag_list.into_iter().map(TagView::from).collect(),
            })
        }
    }
}

async fn put(ctx: &Context, args: PutArgs) -> anyhow::Result<()> {
    // Everything local first, so a bad path, size or policy costs no call.
    let (value, source) = read_value(
        args.value,
        args.file.as_deref(),
        &mut std::io::stdin().lock(),
    )?;
    let policies = args.policies.as_deref().map(read_policies).transpose()?;
    if args.parameter_type == Some(TypeArg::SecureString) && source == ValueSource::Argument {
        eprintln!(
            "warning: a secure-string value given as an argument may be kept in shell history \
             and seen in process listings; pass - to read it from stdin, or --file"
        );
    }
    let name = args.name;
    let mut client = ctx.connect().await?.parameters();
    let response = client
        .put_parameter(proto::PutParameterRequest {
            name: name.clone(),
            description: args.description.unwrap_or_default(),
            value,
            r#type: args
                .parameter_type
                .map_or(proto::ParameterType::Unspecified, TypeArg::to_proto)
                .into(),
            key_id: args.key_id.unwrap_or_default(),
            overwrite: args.overwrite,
            allowed_pattern: args.allowed_pattern.unwrap_or_default(),
            tags: args.tags,
            tier: args
                .tier
                .map_or(proto::ParameterTier::Unspecified, TierArg::to_proto)
                .into(),
            policies: policies.unwrap_or_default(),
            data_type: String::new(),
        })
        .await?
        .into_inner();
    ctx.emit(&PutParameterView::new(name, response))
}

async fn get(ctx: &Context, args: GetArgs) -> anyhow::Result<()> {
    if args.value_only && args.names.len() != 1 {
        bail!("--value-only takes exactly one name");
    }
    let mut client = ctx.connect().await?.parameters();
    if let [name] = args.names.as_slice() {
        // One name keeps GetParameter's own error (not found, permission denied) for it.
        let response = client
            .get_parameter(proto::GetParameterRequest {
                name: name.clone(),
                with_decryption: args.decrypt,
            })
            .await?
            .into_inner();
        let parameter = required(response.parameter, "parameter")?;
        if args.value_only {
            // Byte for byte, without cleaning or a newline: the caller asked for the value.
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(parameter.value.as_bytes())?;
            stdout.flush()?;
            return Ok(());
        }
        return ctx.emit(&ParameterList {
            parameters: vec![parameter.into()],
        });
    }
    let mut parameters = Vec::new();
    let mut invalid = Vec::new();
    for chunk in args.names.chunks(BATCH_SIZE) {
        let response = client
            .get_parameters(proto::GetParametersRequest {
                names: chunk.to_vec(),
                with_decryption: args.decrypt,
            })
            .await?
            .into_inner();
        parameters.extend(response.parameters.into_iter().map(Into::into));
        invalid.extend(response.invalid_parameters);
    }
    ctx.emit(&ParameterList { parameters })?;
    fail_on_invalid("parameters not found", &invalid)
}

async fn list_by_path(ctx: &Context, args: ListArgs) -> anyhow::Result<()> {
    let filters = by_path_filters(&args);
    let path = args.path.unwrap_or_else(|| "/".to_owned());
    let mut client = ctx.connect().await?.parameters();
    let mut parameters = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .get_parameters_by_path(proto::GetParametersByPathRequest {
                path: path.clone(),
                recursive: args.recursive,
                parameter_filters: filters.clone(),
                with_decryption: args.decrypt,
                max_results: BY_PATH_PAGE_SIZE,
                next_token: token.clone(),
            })
            .await?
            .into_inner();
        parameters.extend(page.parameters.into_iter().map(Into::into));
        match next_page(&token, page.next_token)? {
            Some(next) => token = next,
            None => break,
        }
    }
    ctx.emit(&ParameterList { parameters })
}

async fn describe(ctx: &Context, args: ListArgs) -> anyhow::Result<()> {
    let filters = describe_filters(&args);
    let mut client = ctx.connect().await?.parameters();
    let mut parameters = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .describe_parameters(proto::DescribeParametersRequest {
                filters: Vec::new(),
                parameter_filters: filters.clone(),
                max_results: PAGE_SIZE,
                next_token: token.clone(),
            })
            .await?
            .into_inner();
        parameters.extend(page.parameters.into_iter().map(Into::into));
        match next_page(&token, page.next_token)? {
            Some(next) => token = next,
            None => break,
        }
    }
    ctx.emit(&ParameterMetadataList { parameters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_names_with_an_optional_version_or_label() {
        for good in ["/app/db", "/app/db:3", "/app/db:prod", "plain"] {
            assert_eq!(parse_selector(good), Ok(good.to_owned()), "{good}");
        }
        for bad in ["", ":3", "/app/db:", "/app/db:0", "/a:b:c", "/a:00"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_absolute() {
        assert_eq!(parse_path("/app"), Ok("/app".to_owned()));
        assert!(parse_path("app").is_err());
    }

    #[test]
    fn the_value_comes_from_exactly_one_source() -> anyhow::Result<()> {
        let mut no_stdin = std::io::empty();
        assert_eq!(
            read_value(Some("v".into()), None, &mut no_stdin)?,
            ("v".to_owned(), ValueSource::Argument)
        );
        assert_eq!(
            read_value(Some("-".into()), None, &mut "s3cret\r\n".as_bytes())?,
            ("s3cret".to_owned(), ValueSource::Stdin)
        );
        // Only one line ending goes: a value may end in a blank line on purpose.
        assert_eq!(
            read_value(None, Some("-"), &mut "a\n\n".as_bytes())?.0,
            "a\n"
        );

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "line\n")?;
        let path = path.to_string_lossy().into_owned();
        assert_eq!(
            read_value(None, Some(&path), &mut no_stdin)?,
            ("line\n".to_owned(), ValueSource::File)
        );

        let message = |result: anyhow::Result<(String, ValueSource)>| {
            result.err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert_eq!(
            message(read_value(Some("v".into()), Some(&path), &mut no_stdin)),
            "give the value either as an argument or with --file, not both"
        );
        assert_eq!(
            message(read_value(None, None, &mut no_stdin)),
            "no value: give it as an argument, - for stdin, or --file PATH"
        );
        assert_eq!(
            message(read_value(None, Some("-"), &mut "\n".as_bytes())),
            "stdin: the value is empty"
        );
        let too_big = "a".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            message(read_value(None, Some("-"), &mut too_big.as_bytes())),
            "stdin: the value is larger than 8 KB (8192 bytes)"
        );
        assert_eq!(
            message(read_value(Some(too_big), None, &mut no_stdin)),
            "the argument: the value is larger than 8 KB (8192 bytes)"
        );
        assert_eq!(
            message(read_value(None, Some("-"), &mut [0xff_u8, b'a'].as_slice())),
            "stdin: the value is not utf-8 text"
        );
        assert_eq!(
            message(read_value(None, Some("/no/such/value"), &mut no_stdin)),
            "cannot read /no/such/value"
        );
        Ok(())
    }

    #[test]
    fn policies_are_a_json_array_inline_or_from_a_file() -> anyhow::Result<()> {
        let policies = r#"[{"Type":"Expiration","Version":"1.0"}]"#;
        assert_eq!(read_policies(policies)?, policies);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.json");
        std::fs::write(&path, policies)?;
        assert_eq!(
            read_policies(&format!("@{}", path.to_string_lossy()))?,
            policies
        );
        let message = |argument: &str| {
            read_policies(argument)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            message("{}"),
            "--policies: expected a json array of policies"
        );
        assert_eq!(
            message("[nope"),
            "--policies: the policies are not valid json"
        );
        assert_eq!(
            message("@/no/such.json"),
            "--policies: cannot read /no/such.json"
        );
        Ok(())
    }

    #[test]
    fn describe_filters_follow_the_flags() {
        let args = ListArgs {
            path: Some("/app".into()),
            recursive: true,
            decrypt: false,
            parameter_type: Some(TypeArg::SecureString),
            labels: Vec::new(),
            describe: true,
            name_prefix: Some("/app/d".into()),
            tier: Some(TierArg::IntelligentTiering),
        };
        let filters: Vec<(String, String, Vec<String>)> = describe_filters(&args)
            .into_iter()
            .map(|f| (f.key, f.option, f.values))
            .collect();
        let expected = |key: &str, option: &str, value: &str| {
            (key.to_owned(), option.to_owned(), vec![value.to_owned()])
        };
        assert_eq!(
            filters,
            [
                expected("Path", "Recursive", "/app"),
                expected("Name", "BeginsWith", "/app/d"),
                expected("Type", "Equals", "SecureString"),
                expected("Tier", "Equals", "Intelligent-Tiering"),
            ]
        );
        let everything = ListArgs {
            path: None,
            parameter_type: None,
            name_prefix: None,
            tier: None,
            ..args
        };
        assert!(describe_filters(&everything).is_empty());
    }
}
