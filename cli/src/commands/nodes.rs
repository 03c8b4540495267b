//! `bosun node …`: managed nodes (NodeService): list them with their ping status and facts,
//! show one with its tags, tag and untag them, deregister them.

use anyhow::bail;
use bosun_proto::inventory::v1 as proto;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::{Context, next_page};
use crate::output::{Fields, Render, Table, list_cell, text_cell, time_cell};
use crate::views::{MessageView, TagView, timestamp};

/// The page size for listings; the server allows up to 1000, and a fleet lists in few calls.
const PAGE_SIZE: i32 = 1000;
/// Tags of nodes are kept under this resource type.
const RESOURCE_TYPE: &str = "ManagedInstance";

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List managed nodes with their ping status and facts, by id.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Show every fact of one node, and its tags.
    #[command(visible_alias = "get")]
    Show {
        /// Node id, `mi-` and 17 hex digits.
        id: String,
    },
    /// Add or overwrite tags of a node.
    Tag {
        /// Node id.
        id: String,
        /// Tags as KEY=VALUE.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<proto::Tag>,
    },
    /// Remove tags from a node by key; absent keys are ignored.
    Untag {
        /// Node id.
        id: String,
        /// Tag keys to remove.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Deregister a node: it can no longer connect, and is no longer listed or targeted.
    ///
    /// Like every other delete of this CLI it does not ask for confirmation; the node has to
    /// register again with an activation to come back.
    Deregister {
        /// Node id.
        id: String,
    },
}

#[derive(Args, Debug, Default)]
pub struct ListArgs {
    /// A filter as KEY=VALUE[,VALUE…]: InstanceIds, PingStatus, PlatformType, PlatformName,
    /// AgentVersion, ActivationIds, ResourceType, tag-key, tag:KEY or resource-groups:Name.
    /// Repeatable; filters are ANDed, the values of one filter ORed.
    #[arg(long = "filter", value_name = "KEY=VALUES", value_parser = parse_filter)]
    pub filters: Vec<proto::InstanceInformationFilter>,
    /// Only nodes with this ping status; repeatable (ORed).
    #[arg(long = "ping", value_enum, value_name = "STATUS")]
    pub ping: Vec<PingArg>,
    /// Only nodes with this tag, as KEY=VALUE; repeatable: every key must match, and values
    /// given for one key are alternatives.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<proto::Tag>,
    /// Only nodes in this resource group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// List every node, following every page (the default).
    #[arg(long, conflicts_with = "max")]
    pub all: bool,
    /// Show at most this many nodes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max: Option<u32>,
}

/// The `--ping` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingArg {
    /// A heartbeat arrived within the ping timeout.
    Online,
    /// Heard from, but not within the ping timeout.
    ConnectionLost,
    /// Never connected, or silent for 30 days.
    Inactive,
}

impl PingArg {
    /// The value of the `PingStatus` filter.
    fn filter_value(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::ConnectionLost => "ConnectionLost",
            Self::Inactive => "Inactive",
        }
    }
}

/// clap value parser for `KEY=VALUE` tags of nodes and activations: the same rules as the
/// tags of documents (first `=` splits, the value may be empty, the server's lengths).
pub fn parse_tag(value: &str) -> Result<proto::Tag, String> {
    super::documents::parse_tag(value).map(|tag| proto::Tag {
        key: tag.key,
        value: tag.value,
    })
}

/// Splits `KEY=V1,V2` into the key and its values; `example` shows the form in messages.
/// Values may not be empty (no tag value, id or name this applies to contains a comma, so a
/// comma always separates).
pub fn split_key_values(value: &str, example: &str) -> Result<(String, Vec<String>), String> {
    let Some((key, values)) = value.split_once('=') else {
        return Err(format!("expected KEY=VALUE[,VALUE…], e.g. {example}"));
    };
    if key.is_empty() {
        return Err(format!(
            "the key is empty; expected KEY=VALUE, e.g. {example}"
        ));
    }
    let values: Vec<String> = values.split(',').map(str::to_owned).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!(
            "{key}: empty value; expected KEY=VALUE[,VALUE…], e.g. {example}"
        ));
    }
    Ok((key.to_owned(), values))
}

/// clap value parser for `--filter KEY=V1,V2`.
pub fn parse_filter(value: &str) -> Result<proto::InstanceInformationFilter, String> {
    let (key, values) = split_key_values(value, "PlatformType=Linux,MacOS")?;
    Ok(proto::InstanceInformationFilter { key, values })
}

/// The `DescribeInstanceInformation` filters for the flags: `--filter` as given, the ping
/// statuses as one filter, tags with the same key merged into one `tag:KEY` filter, the group.
fn list_filters(args: &ListArgs) -> Vec<proto::InstanceInformationFilter> {
    let mut filters = args.filters.clone();
    if !args.ping.is_empty() {
        let mut values: Vec<String> = Vec::new();
        for ping in &args.ping {
            let value = ping.filter_value().to_owned();
            if !values.contains(&value) {
                values.push(value);
            }
        }
        filters.push(proto::InstanceInformationFilter {
            key: "PingStatus".to_owned(),
            values,
        });
    }
    let first_tag = filters.len();
    for tag in &args.tags {
        let key = format!("tag:{}", tag.key);
        match filters[first_tag..]
            .iter_mut()
            .find(|filter| filter.key == key)
        {
            Some(filter) => filter.values.push(tag.value.clone()),
            None => filters.push(proto::InstanceInformationFilter {
                key,
                values: vec![tag.value.clone()],
            }),
        }
    }
    if let Some(group) = &args.group {
        filters.push(proto::InstanceInformationFilter {
            key: "resource-groups:Name".to_owned(),
            values: vec![group.clone()],
        });
    }
    filters
}

pub async fn run(ctx: &Context, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => {
            let filters = list_filters(&args);
            let limit = args.max.map_or(usize::MAX, |max| max as usize);
            let mut client = ctx.connect().await?.nodes();
            let mut nodes = Vec::new();
            let mut token = String::new();
            while nodes.len() < limit {
                let wanted = (limit - nodes.len()).min(PAGE_SIZE as usize);
                let page = client
                    .describe_instance_information(proto::DescribeInstanceInformationRequest {
                        filters: filters.clone(),
                        max_results: i32::try_from(wanted).unwrap_or(PAGE_SIZE),
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                nodes.extend(
                    page.instance_information_list
                        .into_iter()
                        .map(NodeView::from),
                );
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            nodes.truncate(limit);
            ctx.emit(&NodeList { nodes })
        }
        NodeCommand::Show { id } => {
            let mut client = ctx.connect().await?.nodes();
            let page = client
                .describe_instance_information(proto::DescribeInstanceInformationRequest {
                    filters: vec![proto::InstanceInformationFilter {
                        key: "InstanceIds".to_owned(),
                        values: vec![id.clone()],
                    }],
                    max_results: 1,
                    next_token: String::new(),
                })
                .await?
                .into_inner();
            let Some(node) = page
                .instance_information_list
                .into_iter()
                .find(|node| node.instance_id == id)
            else {
                bail!("node {id} not found: it never registered, or it was deregistered");
            };
            let tags = client
                .list_tags_for_resource(proto::ListTagsForResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: id,
                })
                .await?
                .into_inner()
                .tag_list;
            ctx.emit(&NodeDetailsView {
                node: NodeView::from(node),
                tags: tags.into_iter().map(tag_view).collect(),
            })
        }
        NodeCommand::Tag { id, tags } => {
            let keys: Vec<&str> = tags.iter().map(|tag| tag.key.as_str()).collect();
            let message = format!("tagged node {id}: {}", keys.join(", "));
            let mut client = ctx.connect().await?.nodes();
            client
                .add_tags_to_resource(proto::AddTagsToResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: id,
                    tags,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        NodeCommand::Untag { id, keys } => {
            let message = format!("removed tags from node {id}: {}", keys.join(", "));
            let mut client = ctx.connect().await?.nodes();
            client
                .remove_tags_from_resource(proto::RemoveTagsFromResourceRequest {
                    resource_type: RESOURCE_TYPE.to_owned(),
                    resource_id: id,
                    tag_keys: keys,
                })
                .await?;
            ctx.emit(&MessageView::new(message))
        }
        NodeCommand::Deregister { id } => {
            let mut client = ctx.connect().await?.nodes();
            client
                .deregister_managed_instance(proto::DeregisterManagedInstanceRequest {
                    instance_id: id.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!("deregistered node {id}")))
        }
    }
}

// ---- what is printed ----

pub fn tag_view(tag: proto::Tag) -> TagView {
    TagView {
        key: tag.key,
        value: tag.value,
    }
}

/// `k=v, k2=v2`; `-` when there are none.
pub fn tags_cell(tags: &[TagView]) -> String {
    let pairs: Vec<String> = tags
        .iter()
        .map(|tag| format!("{}={}", tag.key, tag.value))
        .collect();
    list_cell(&pairs)
}

/// A ping status as SSM names it, so output matches the `PingStatus` filter.
fn ping_status_name(value: i32) -> String {
    match proto::PingStatus::try_from(value) {
        Ok(proto::PingStatus::Online) => "Online".to_owned(),
        Ok(proto::PingStatus::ConnectionLost) => "ConnectionLost".to_owned(),
        Ok(proto::PingStatus::Inactive) => "Inactive".to_owned(),
        Ok(proto::PingStatus::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({value})"),
    }
}

/// A managed node as the CLI prints it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub instance_id: String,
    pub name: String,
    pub ping_status: String,
    pub last_ping_date_time: Option<DateTime<Utc>>,
    pub agent_version: String,
    pub platform_type: String,
    pub platform_name: String,
    pub platform_version: String,
    pub architecture: String,
    pub computer_name: String,
    pub ip_address: String,
    pub ip_addresses: Vec<String>,
    pub activation_id: String,
    pub registration_date: Option<DateTime<Utc>>,
    pub resource_type: String,
}

impl From<proto::InstanceInformation> for NodeView {
    fn from(node: proto::InstanceInformation) -> Self {
        Self {
            instance_id: node.instance_id,
            name: node.name,
            ping_status: ping_status_name(node.ping_status),
            last_ping_date_time: timestamp(node.last_ping_date_time),
            agent_version: node.agent_version,
            platform_type: node.platform_type,
            platform_name: node.platform_name,
            platform_version: node.platform_version,
            architecture: node.architecture,
            computer_name: node.computer_name,
            ip_address: node.ip_address,
            ip_addresses: node.ip_addresses,
            activation_id: node.activation_id,
            registration_date: timestamp(node.registration_date),
            resource_type: node.resource_type,
        }
    }
}

impl NodeView {
    /// `Ubuntu 24.04`; the platform type when the agent reported no name.
    fn platform(&self) -> String {
        let name = [self.platform_name.as_str(), self.platform_version.as_str()]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if name.is_empty() {
            text_cell(&self.platform_type)
        } else {
            name
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

impl Render for NodeList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "ID",
            "NAME",
            "PING STATUS",
            "LAST PING",
            "PLATFORM",
            "AGENT VERSION",
            "IP",
            "HOSTNAME",
        ]);
        for node in &self.nodes {
            table.row(vec![
                node.instance_id.clone(),
                text_cell(&node.name),
                node.ping_status.clone(),
                time_cell(node.last_ping_date_time),
                node.platform(),
                text_cell(&node.agent_version),
                text_cell(&node.ip_address),
                text_cell(&node.computer_name),
            ]);
        }
        table.render()
    }
}

/// What `node show` prints: every fact of the node, and its tags.
#[derive(Debug, Serialize)]
pub struct NodeDetailsView {
    #[serde(flatten)]
    pub node: NodeView,
    pub tags: Vec<TagView>,
}

impl Render for NodeDetailsView {
    fn to_table(&self) -> String {
        let node = &self.node;
        Fields::new()
            .field("id", &node.instance_id)
            .field("name", text_cell(&node.name))
            .field("ping status", &node.ping_status)
            .field("last ping", time_cell(node.last_ping_date_time))
            .field("agent version", text_cell(&node.agent_version))
            .field("platform type", text_cell(&node.platform_type))
            .field("platform name", text_cell(&node.platform_name))
            .field("platform version", text_cell(&node.platform_version))
            .field("architecture", text_cell(&node.architecture))
            .field("hostname", text_cell(&node.computer_name))
            .field("ip address", text_cell(&node.ip_address))
            .field("ip addresses", list_cell(&node.ip_addresses))
            .field("activation", text_cell(&node.activation_id))
            .field("registered", time_cell(node.registration_date))
            .field("resource type", text_cell(&node.resource_type))
            .field("tags", tags_cell(&self.tags))
            .render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    // 2024-01-01T00:00:00Z.
    const JAN_1: i64 = 1_704_067_200;

    fn node() -> proto::InstanceInformation {
        proto::InstanceInformation {
            instance_id: "mi-0123456789abcdef0".into(),
            ping_status: proto::PingStatus::Online as i32,
            last_ping_date_time: Some(prost_types::Timestamp {
                seconds: JAN_1,
                nanos: 0,
            }),
            agent_version: "0.1.0".into(),
            platform_type: "Linux".into(),
            platform_name: "Ubuntu".into(),
            platform_version: "24.04".into(),
            activation_id: "0190f0aa-0000-7000-8000-000000000001".into(),
            resource_type: "ManagedInstance".into(),
            name: "web-1".into(),
            ip_address: "10.0.0.5".into(),
            computer_name: "web-1.example.com".into(),
            ip_addresses: vec!["10.0.0.5".into(), "fe80::1".into()],
            architecture: "x86_64".into(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_parse_and_refuse_what_is_not_key_values() {
        let filter = parse_filter("PlatformType=Linux,MacOS");
        assert_eq!(
            filter.map(|f| (f.key, f.values)),
            Ok((
                "PlatformType".to_owned(),
                vec!["Linux".to_owned(), "MacOS".to_owned()]
            ))
        );
        // Only the first `=` splits.
        assert_eq!(
            parse_filter("tag:a=b=c").map(|f| f.values),
            Ok(vec!["b=c".to_owned()])
        );
        for bad in ["PlatformType", "=Linux", "PlatformType=", "k=a,,b", "k=a,"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_filter("nope").err().as_deref(),
            Some("expected KEY=VALUE[,VALUE…], e.g. PlatformType=Linux,MacOS")
        );
    }

    #[test]
    fn tags_are_key_equals_value() {
        assert_eq!(
            parse_tag("env=prod").map(|t| (t.key, t.value)),
            Ok(("env".to_owned(), "prod".to_owned()))
        );
        for bad in ["env", "=prod", ""] {
            assert!(parse_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_flags_become_filters() {
        let tag = |key: &str, value: &str| proto::Tag {
            key: key.into(),
            value: value.into(),
        };
        let args = ListArgs {
            filters: vec![proto::InstanceInformationFilter {
                key: "PlatformType".into(),
                values: vec!["Linux".into()],
            }],
            ping: vec![PingArg::Online, PingArg::ConnectionLost, PingArg::Online],
            tags: vec![tag("env", "prod"), tag("team", "ops"), tag("env", "stage")],
            group: Some("web".into()),
            all: false,
            max: None,
        };
        let filters: Vec<(String, Vec<String>)> = list_filters(&args)
            .into_iter()
            .map(|f| (f.key, f.values))
            .collect();
        let owned = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            filters,
            [
                ("PlatformType".to_owned(), owned(&["Linux"])),
                (
                    "PingStatus".to_owned(),
                    owned(&["Online", "ConnectionLost"])
                ),
                ("tag:env".to_owned(), owned(&["prod", "stage"])),
                ("tag:team".to_owned(), owned(&["ops"])),
                ("resource-groups:Name".to_owned(), owned(&["web"])),
            ]
        );
        assert!(list_filters(&ListArgs::default()).is_empty());
    }

    #[test]
    fn node_list_as_table_json_and_yaml() -> anyhow::Result<()> {
        let list = NodeList {
            nodes: vec![
                NodeView::from(node()),
                NodeView::from(proto::InstanceInformation {
                    instance_id: "mi-00000000000000001".into(),
                    ping_status: proto::PingStatus::Inactive as i32,
                    platform_type: "Linux".into(),
                    ..Default::default()
                }),
            ],
        };
        assert_eq!(
            render(&list, OutputFormat::Table)?,
            "ID                    NAME   PING STATUS  LAST PING             PLATFORM      AGENT VERSION  IP        HOSTNAME\n\
             mi-0123456789abcdef0  web-1  Online       2024-01-01T00:00:00Z  Ubuntu 24.04  0.1.0          10.0.0.5  web-1.example.com\n\
             mi-00000000000000001  -      Inactive     -                     Linux         -              -         -\n"
        );
        assert_eq!(
            render(&NodeList { nodes: vec![] }, OutputFormat::Table)?,
            "ID  NAME  PING STATUS  LAST PING  PLATFORM  AGENT VERSION  IP  HOSTNAME\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&list, OutputFormat::Json)?)?;
        assert_eq!(json["nodes"][0]["instance_id"], "mi-0123456789abcdef0");
        assert_eq!(json["nodes"][0]["ping_status"], "Online");
        assert_eq!(
            json["nodes"][0]["last_ping_date_time"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(json["nodes"][1]["ping_status"], "Inactive");
        assert_eq!(
            json["nodes"][1]["last_ping_date_time"],
            serde_json::Value::Null
        );
        let yaml = render(&list, OutputFormat::Yaml)?;
        assert!(yaml.starts_with("nodes:\n"), "{yaml}");
        assert!(yaml.contains("ping_status: Online"), "{yaml}");
        assert!(yaml.contains("computer_name: web-1.example.com"), "{yaml}");
        Ok(())
    }

    #[test]
    fn node_details_show_every_fact_and_the_tags() -> anyhow::Result<()> {
        let details = NodeDetailsView {
            node: NodeView::from(node()),
            tags: vec![
                tag_view(proto::Tag {
                    key: "env".into(),
                    value: "prod".into(),
                }),
                tag_view(proto::Tag {
                    key: "team".into(),
                    value: "ops".into(),
                }),
            ],
        };
        let table = render(&details, OutputFormat::Table)?;
        for line in [
            "id:                mi-0123456789abcdef0\n",
            "ping status:       Online\n",
            "ip addresses:      10.0.0.5, fe80::1\n",
            "architecture:      x86_64\n",
            "tags:              env=prod, team=ops\n",
        ] {
            assert!(table.contains(line), "{line:?} not in\n{table}");
        }
        // JSON is flat: the node's fields and its tags side by side.
        let json: serde_json::Value = serde_json::from_str(&render(&details, OutputFormat::Json)?)?;
        assert_eq!(json["instance_id"], "mi-0123456789abcdef0");
        assert_eq!(json["platform_version"], "24.04");
        assert_eq!(
            json["tags"],
            serde_json::json!([{"key": "env", "value": "prod"}, {"key": "team", "value": "ops"}])
        );
        let yaml = render(&details, OutputFormat::Yaml)?;
        assert!(yaml.contains("instance_id: mi-0123456789abcdef0"), "{yaml}");
        assert!(yaml.contains("key: env"), "{yaml}");
        Ok(())
    }

    #[test]
    fn unknown_ping_statuses_still_print() {
        assert_eq!(ping_status_name(2), "ConnectionLost");
        assert_eq!(ping_status_name(0), "unspecified");
        assert_eq!(ping_status_name(42), "unknown (42)");
    }
}
