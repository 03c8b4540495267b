//! `bosun group …`: resource groups (ResourceGroupService), named tag queries over nodes
//! resolved live: create, list, show, change the query, list the members, delete.

use bosun_proto::inventory::v1 as proto;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::nodes::split_key_values;
use super::{Context, next_page, required};
use crate::output::{Fields, Render, Table, list_cell, text_cell, time_cell};
use crate::views::{MessageView, timestamp};

/// The server's largest page of groups.
const PAGE_SIZE: i32 = 100;
/// The server's largest page of a group's resources.
const RESOURCE_PAGE_SIZE: i32 = 1000;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group from a tag query.
    Create {
        /// Group name: 1-128 letters, digits, `.`, `_` and `-`.
        name: String,
        #[command(flatten)]
        query: QueryArgs,
        /// What the group is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List every group with its query.
    #[command(visible_alias = "list")]
    Ls,
    /// Show one group with its query.
    #[command(visible_alias = "get")]
    Show {
        /// Group name.
        name: String,
    },
    /// Replace a group's query (and its description when given).
    Update {
        /// Group name.
        name: String,
        #[command(flatten)]
        query: QueryArgs,
        /// New description.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List the resources the group's query selects now.
    Resources {
        /// Group name.
        name: String,
    },
    /// Delete a group; its members are untouched.
    #[command(visible_alias = "delete")]
    Rm {
        /// Group name.
        name: String,
    },
}

/// A group's query.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// A tag filter: KEY=V1,V2 (the tag has one of the values) or KEY (the tag is present).
    /// Repeatable; a resource must match every filter.
    #[arg(long = "tag", required = true, value_name = "KEY[=VALUES]", value_parser = parse_tag_filter)]
    pub tags: Vec<proto::TagFilter>,
    /// A resource type the group contains: Bosun::Node or Bosun::AllSupported (the default);
    /// repeatable.
    #[arg(long = "resource-type", value_name = "TYPE")]
    pub resource_types: Vec<String>,
}

impl QueryArgs {
    fn into_proto(self) -> proto::ResourceQuery {
        proto::ResourceQuery {
            resource_type_filters: self.resource_types,
            tag_filters: self.tags,
        }
    }
}

/// clap value parser for `--tag KEY=V1,V2` or `--tag KEY` of a group query. `KEY=` is the one
/// value "" (the tag is present and empty).
pub fn parse_tag_filter(value: &str) -> Result<proto::TagFilter, String> {
    const EXAMPLE: &str = "env=prod,stage";
    if !value.contains('=') {
        if value.is_empty() {
            return Err(format!(
                "the key is empty; expected KEY or KEY=VALUE[,VALUE…], e.g. {EXAMPLE}"
            ));
        }
        return Ok(proto::TagFilter {
            key: value.to_owned(),
            values: Vec::new(),
        });
    }
    if let Some(key) = value.strip_suffix('=')
        && !key.is_empty()
        && !key.contains('=')
    {
        return Ok(proto::TagFilter {
            key: key.to_owned(),
            values: vec![String::new()],
        });
    }
    let (key, values) = split_key_values(value, EXAMPLE)?;
    Ok(proto::TagFilter { key, values })
}

pub async fn run(ctx: &Context, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create {
            name,
            query,
            description,
        } => {
            let mut client = ctx.connect().await?.resource_groups();
            let response = client
                .create_group(proto::CreateGroupRequest {
                    name,
                    description: description.unwrap_or_default(),
                    resource_query: Some(query.into_proto()),
                })
                .await?
                .into_inner();
            ctx.emit(&GroupView::from(required(response.group, "group")?))
        }
        GroupCommand::Ls => {
            let mut client = ctx.connect().await?.resource_groups();
            let mut groups = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_groups(proto::ListGroupsRequest {
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                groups.extend(page.groups.into_iter().map(GroupView::from));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&GroupList { groups })
        }
        GroupCommand::Show { name } => {
            let mut client = ctx.connect().await?.resource_groups();
            let response = client
                .get_group(proto::GetGroupRequest { name })
                .await?
                .into_inner();
            ctx.emit(&GroupView::from(required(response.group, "group")?))
        }
        GroupCommand::Update {
            name,
            query,
            description,
        } => {
            let mut client = ctx.connect().await?.resource_groups();
            let response = client
                .update_group_query(proto::UpdateGroupQueryRequest {
                    name,
                    resource_query: Some(query.into_proto()),
                    description,
                })
                .await?
                .into_inner();
            ctx.emit(&GroupView::from(required(response.group, "group")?))
        }
        GroupCommand::Resources { name } => {
            let mut client = ctx.connect().await?.resource_groups();
            let mut resources = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_group_resources(proto::ListGroupResourcesRequest {
                        name: name.clone(),
                        max_results: RESOURCE_PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                resources.extend(page.resources.into_iter().map(ResourceView::from));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&GroupResourcesView {
                group: name,
                resources,
            })
        }
        GroupCommand::Rm { name } => {
            let mut client = ctx.connect().await?.resource_groups();
            client
                .delete_group(proto::DeleteGroupRequest { name: name.clone() })
                .await?;
            ctx.emit(&MessageView::new(format!("deleted group {name}")))
        }
    }
}

// ---- what is printed ----

#[derive(Debug, Serialize)]
pub struct TagFilterView {
    pub key: String,
    /// ORed; none means "has the key".
    pub values: Vec<String>,
}

/// A group as the CLI prints it.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub name: String,
    pub description: String,
    /// Empty means all supported types.
    pub resource_type_filters: Vec<String>,
    pub tag_filters: Vec<TagFilterView>,
    pub created_date: Option<DateTime<Utc>>,
    pub updated_date: Option<DateTime<Utc>>,
}

impl From<proto::Group> for GroupView {
    fn from(group: proto::Group) -> Self {
        let query = group.resource_query.unwrap_or_default();
        Self {
            name: group.name,
            description: group.description,
            resource_type_filters: query.resource_type_filters,
            tag_filters: query
                .tag_filters
                .into_iter()
                .map(|filter| TagFilterView {
                    key: filter.key,
                    values: filter.values,
                })
                .collect(),
            created_date: timestamp(group.created_date),
            updated_date: timestamp(group.updated_date),
        }
    }
}

impl GroupView {
    /// The tag filters as `--tag` takes them: `env=prod,stage; team`.
    fn query_cell(&self) -> String {
        let filters: Vec<String> = self
            .tag_filters
            .iter()
            .map(|filter| {
                if filter.values.is_empty() {
                    filter.key.clone()
                } else {
                    format!("{}={}", filter.key, filter.values.join(","))
                }
            })
            .collect();
        text_cell(&filters.join("; "))
    }

    fn types_cell(&self) -> String {
        if self.resource_type_filters.is_empty() {
            "(all supported)".to_owned()
        } else {
            list_cell(&self.resource_type_filters)
        }
    }
}

impl Render for GroupView {
    fn to_table(&self) -> String {
        Fields::new()
            .field("name", &self.name)
            .field("description", text_cell(&self.description))
            .field("tag filters", self.query_cell())
            .field("resource types", self.types_cell())
            .field("created", time_cell(self.created_date))
            .field("updated", time_cell(self.updated_date))
            .render()
    }
}

#[derive(Debug, Serialize)]
pub struct GroupList {
    pub groups: Vec<GroupView>,
}

impl Render for GroupList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "NAME",
            "TAG FILTERS",
            "RESOURCE TYPES",
            "UPDATED",
            "DESCRIPTION",
        ]);
        for group in &self.groups {
            table.row(vec![
                group.name.clone(),
                group.query_cell(),
                group.types_cell(),
                time_cell(group.updated_date),
                text_cell(&group.description),
            ]);
        }
        table.render()
    }
}

#[derive(Debug, Serialize)]
pub struct ResourceView {
    pub resource_id: String,
    pub resource_type: String,
    pub resource_arn: String,
}

impl From<proto::ResourceIdentifier> for ResourceView {
    fn from(resource: proto::ResourceIdentifier) -> Self {
        Self {
            resource_id: resource.resource_id,
            resource_type: resource.resource_type,
            resource_arn: resource.resource_arn,
        }
    }
}

/// What `group resources` prints.
#[derive(Debug, Serialize)]
pub struct GroupResourcesView {
    pub group: String,
    pub resources: Vec<ResourceView>,
}

impl Render for GroupResourcesView {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec!["RESOURCE ID", "TYPE", "ARN"]);
        for resource in &self.resources {
            table.row(vec![
                resource.resource_id.clone(),
                text_cell(&resource.resource_type),
                text_cell(&resource.resource_arn),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    fn filter(value: &str) -> Result<(String, Vec<String>), String> {
        parse_tag_filter(value).map(|filter| (filter.key, filter.values))
    }

    #[test]
    fn tag_filters_are_a_key_with_optional_values() {
        let owned = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            filter("env=prod,stage"),
            Ok(("env".to_owned(), owned(&["prod", "stage"])))
        );
        assert_eq!(filter("team"), Ok(("team".to_owned(), Vec::new())));
        assert_eq!(filter("team="), Ok(("team".to_owned(), owned(&[""]))));
        assert_eq!(filter("a=b=c"), Ok(("a".to_owned(), owned(&["b=c"]))));
        for bad in ["", "=prod", "env=a,,b", "env=a,", "="] {
            assert!(filter(bad).is_err(), "{bad}");
        }
    }

    fn group() -> GroupView {
        GroupView::from(proto::Group {
            name: "web".into(),
            description: "web servers".into(),
            resource_query: Some(proto::ResourceQuery {
                resource_type_filters: vec![],
                tag_filters: vec![
                    proto::TagFilter {
                        key: "env".into(),
                        values: vec!["prod".into(), "stage".into()],
                    },
                    proto::TagFilter {
                        key: "role".into(),
                        values: vec![],
                    },
                ],
            }),
            created_date: Some(prost_types::Timestamp {
                seconds: 1_704_067_200,
                nanos: 0,
            }),
            updated_date: None,
        })
    }

    #[test]
    fn groups_as_table_json_and_yaml() -> anyhow::Result<()> {
        let table = render(&group(), OutputFormat::Table)?;
        assert_eq!(
            table,
            "name:            web\n\
             description:     web servers\n\
             tag filters:     env=prod,stage; role\n\
             resource types:  (all supported)\n\
             created:         2024-01-01T00:00:00Z\n\
             updated:         -\n"
        );
        let list = GroupList {
            groups: vec![group()],
        };
        assert_eq!(
            render(&list, OutputFormat::Table)?,
            "NAME  TAG FILTERS           RESOURCE TYPES   UPDATED  DESCRIPTION\n\
             web   env=prod,stage; role  (all supported)  -        web servers\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&list, OutputFormat::Json)?)?;
        assert_eq!(
            json["groups"][0]["tag_filters"],
            serde_json::json!([{"key": "env", "values": ["prod", "stage"]}, {"key": "role", "values": []}])
        );
        assert_eq!(json["groups"][0]["created_date"], "2024-01-01T00:00:00Z");
        let yaml = render(&list, OutputFormat::Yaml)?;
        assert!(yaml.starts_with("groups:\n"), "{yaml}");
        assert!(yaml.contains("name: web"), "{yaml}");
        Ok(())
    }

    #[test]
    fn group_resources_as_table_and_json() -> anyhow::Result<()> {
        let view = GroupResourcesView {
            group: "web".into(),
            resources: vec![ResourceView::from(proto::ResourceIdentifier {
                resource_arn: "node:mi-0123456789abcdef0".into(),
                resource_type: "Bosun::Node".into(),
                resource_id: "mi-0123456789abcdef0".into(),
            })],
        };
        assert_eq!(
            render(&view, OutputFormat::Table)?,
            "RESOURCE ID           TYPE         ARN\n\
             mi-0123456789abcdef0  Bosun::Node  node:mi-0123456789abcdef0\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&view, OutputFormat::Json)?)?;
        assert_eq!(json["group"], "web");
        assert_eq!(json["resources"][0]["resource_id"], "mi-0123456789abcdef0");
        Ok(())
    }
}
