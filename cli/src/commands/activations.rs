//! `bosun activation …`: activations (NodeService), the id and secret code with which nodes
//! register: create one (showing the code once, with the command to run on a node), list
//! and delete them.

use std::time::Duration;

use anyhow::Context as _;
use bosun_proto::inventory::v1 as proto;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;

use super::nodes::{parse_tag, tag_view, tags_cell};
use super::{Context, next_page};
use crate::output::{Fields, Render, Table, printable, text_cell, time_cell};
use crate::views::{MessageView, TagView, timestamp, to_timestamp};

/// The server's largest page.
const PAGE_SIZE: i32 = 50;
/// The variable `bosun-agent register` reads the code from when `--activation-code` is absent.
const CODE_VARIABLE: &str = "BOSUN_ACTIVATION_CODE";

#[derive(Subcommand, Debug)]
pub enum ActivationCommand {
    /// Create an activation; prints its code, shown only this once, and the command that
    /// registers a node with it.
    Create {
        /// What the activation is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// The name given to every node registered with it.
        #[arg(long, value_name = "NAME")]
        default_instance_name: Option<String>,
        /// How many nodes may register with it [server default: 1].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        limit: Option<i32>,
        /// Lifetime, e.g. 24h or 7d [server default: 24h].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Expiry as an RFC 3339 time, e.g. 2030-01-31T18:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "expires_in")]
        expires_at: Option<DateTime<Utc>>,
        /// A tag given to every node registered with it, as KEY=VALUE; repeatable.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<proto::Tag>,
    },
    /// List activations, newest first (never their codes).
    #[command(visible_alias = "list")]
    Ls,
    /// Delete an activation: no more nodes register with it; registered nodes stay.
    #[command(visible_alias = "delete")]
    Rm {
        /// Activation id.
        id: String,
    },
}

/// clap value parser for RFC 3339 times.
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| "expected an RFC 3339 time, e.g. 2030-01-31T18:00:00Z".to_owned())
}

pub async fn run(ctx: &Context, command: ActivationCommand) -> anyhow::Result<()> {
    match command {
        ActivationCommand::Create {
            description,
            default_instance_name,
            limit,
            expires_in,
            expires_at,
            tags,
        } => {
            let expiration_date = match (expires_in, expires_at) {
                (Some(lifetime), _) => {
                    let at = chrono::Duration::from_std(lifetime)
                        .ok()
                        .and_then(|lifetime| Utc::now().checked_add_signed(lifetime))
                        .context("--expires-in is too far in the future")?;
                    Some(to_timestamp(at))
                }
                (None, Some(at)) => Some(to_timestamp(at)),
                (None, None) => None,
            };
            let mut client = ctx.connect().await?.nodes();
            let response = client
                .create_activation(proto::CreateActivationRequest {
                    description: description.unwrap_or_default(),
                    default_instance_name: default_instance_name.unwrap_or_default(),
                    registration_limit: limit.unwrap_or(0),
                    expiration_date,
                    tags,
                })
                .await?
                .into_inner();
            ctx.emit(&CreatedActivation::new(
                &ctx.server,
                response.activation_id,
                response.activation_code,
            ))?;
            // On stderr, so `-o json | jq` still gets clean output.
            eprintln!(
                "warning: the activation code is shown only this once and cannot be shown again; store it now"
            );
            Ok(())
        }
        ActivationCommand::Ls => {
            let mut client = ctx.connect().await?.nodes();
            let now = Utc::now();
            let mut activations = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .describe_activations(proto::DescribeActivationsRequest {
                        filters: Vec::new(),
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                activations.extend(
                    page.activation_list
                        .into_iter()
                        .map(|activation| ActivationView::from_proto(activation, now)),
                );
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&ActivationList { activations })
        }
        ActivationCommand::Rm { id } => {
            let mut client = ctx.connect().await?.nodes();
            client
                .delete_activation(proto::DeleteActivationRequest {
                    activation_id: id.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!("deleted activation {id}")))
        }
    }
}

/// Quotes `word` for a POSIX shell when it holds anything but plainly safe characters, so the
/// printed command can be pasted as is.
fn shell_word(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@=+,%".contains(c));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

// ---- what is printed ----

/// A new activation with the code the server returns this once.
#[derive(Debug, Serialize)]
pub struct CreatedActivation {
    pub activation_id: String,
    pub activation_code: String,
    /// The command that registers a node with this activation.
    pub register_command: String,
}

impl CreatedActivation {
    pub fn new(server: &str, activation_id: String, activation_code: String) -> Self {
        let register_command = format!(
            "bosun-agent register --server {} --activation-id {} --activation-code {}",
            shell_word(server),
            shell_word(&activation_id),
            shell_word(&activation_code)
        );
        Self {
            activation_id,
            activation_code,
            register_command,
        }
    }
}

impl Render for CreatedActivation {
    fn to_table(&self) -> String {
        let mut text = Fields::new()
            .field("activation id", &self.activation_id)
            .field("activation code", &self.activation_code)
            .render();
        text.push_str(&format!(
            "\nThe activation code is shown only this once. To register a node, run on it:\n\n  {}\n\n\
             To keep the code out of the process list and shell history, set {CODE_VARIABLE} \
             instead of passing --activation-code.\n",
            printable(&self.register_command)
        ));
        text
    }
}

/// An activation as the CLI prints it (never its code).
#[derive(Debug, Serialize)]
pub struct ActivationView {
    pub activation_id: String,
    pub description: String,
    pub default_instance_name: String,
    pub registration_limit: i32,
    pub registrations_count: i32,
    pub expiration_date: Option<DateTime<Utc>>,
    /// As the server says, or past its expiration date when the CLI ran.
    pub expired: bool,
    pub created_date: Option<DateTime<Utc>>,
    pub tags: Vec<TagView>,
}

impl ActivationView {
    /// `now` decides whether the activation has expired since the server answered; passed in
    /// so tests are repeatable.
    pub fn from_proto(activation: proto::Activation, now: DateTime<Utc>) -> Self {
        let expiration_date = timestamp(activation.expiration_date);
        Self {
            activation_id: activation.activation_id,
            description: activation.description,
            default_instance_name: activation.default_instance_name,
            registration_limit: activation.registration_limit,
            registrations_count: activation.registrations_count,
            expired: activation.expired || expiration_date.is_some_and(|at| at <= now),
            expiration_date,
            created_date: timestamp(activation.created_date),
            tags: activation.tags.into_iter().map(tag_view).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ActivationList {
    pub activations: Vec<ActivationView>,
}

impl Render for ActivationList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "ID",
            "DESCRIPTION",
            "DEFAULT NAME",
            "REGISTRATIONS",
            "EXPIRES",
            "EXPIRED",
            "TAGS",
        ]);
        for activation in &self.activations {
            table.row(vec![
                activation.activation_id.clone(),
                text_cell(&activation.description),
                text_cell(&activation.default_instance_name),
                format!(
                    "{}/{}",
                    activation.registrations_count, activation.registration_limit
                ),
                time_cell(activation.expiration_date),
                if activation.expired { "yes" } else { "no" }.to_owned(),
                tags_cell(&activation.tags),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    // 2024-01-01T00:00:00Z.
    const JAN_1: i64 = 1_704_067_200;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            parse_time("2030-01-31T19:00:00+01:00").map(|t| t.timestamp()),
            parse_time("2030-01-31T18:00:00Z").map(|t| t.timestamp())
        );
        for bad in ["2030-01-31", "tomorrow", "1700000000", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("http://10.0.0.1:7070"), "http://10.0.0.1:7070");
        assert_eq!(shell_word("bac_a-B_9"), "bac_a-B_9");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$(x)"), "'$(x)'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_created_activation_shows_its_code_and_how_to_register() -> anyhow::Result<()> {
        let created = CreatedActivation::new(
            "http://bosun.example.com:7070",
            "0190f0aa-0000-7000-8000-000000000001".into(),
            "bac_abc-DEF_123".into(),
        );
        let command = "bosun-agent register --server http://bosun.example.com:7070 \
                       --activation-id 0190f0aa-0000-7000-8000-000000000001 \
                       --activation-code bac_abc-DEF_123";
        let table = render(&created, OutputFormat::Table)?;
        assert!(
            table.starts_with(
                "activation id:    0190f0aa-0000-7000-8000-000000000001\n\
                 activation code:  bac_abc-DEF_123\n"
            ),
            "{table}"
        );
        assert!(table.contains(&format!("\n  {command}\n")), "{table}");
        assert!(table.contains("shown only this once"), "{table}");
        assert!(table.contains("BOSUN_ACTIVATION_CODE"), "{table}");

        let json: serde_json::Value = serde_json::from_str(&render(&created, OutputFormat::Json)?)?;
        assert_eq!(
            json,
            serde_json::json!({
                "activation_id": "0190f0aa-0000-7000-8000-000000000001",
                "activation_code": "bac_abc-DEF_123",
                "register_command": command,
            })
        );
        let yaml = render(&created, OutputFormat::Yaml)?;
        assert!(yaml.contains("activation_code: bac_abc-DEF_123"), "{yaml}");
        Ok(())
    }

    #[test]
    fn activation_list_as_table_json_and_yaml() -> anyhow::Result<()> {
        let now = DateTime::from_timestamp(JAN_1, 0).unwrap_or_default();
        let list = ActivationList {
            activations: vec![
                ActivationView::from_proto(
                    proto::Activation {
                        activation_id: "a1".into(),
                        description: "web fleet".into(),
                        default_instance_name: "web".into(),
                        registration_limit: 10,
                        registrations_count: 3,
                        expiration_date: Some(prost_types::Timestamp {
                            seconds: JAN_1 + 3600,
                            nanos: 0,
                        }),
                        expired: false,
                        created_date: None,
                        tags: vec![proto::Tag {
                            key: "env".into(),
                            value: "prod".into(),
                        }],
                    },
                    now,
                ),
                // Expired since the server answered.
                ActivationView::from_proto(
                    proto::Activation {
                        activation_id: "a2".into(),
                        registration_limit: 1,
                        expiration_date: Some(prost_types::Timestamp {
                            seconds: JAN_1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    },
                    now,
                ),
            ],
        };
        assert_eq!(
            render(&list, OutputFormat::Table)?,
            "ID  DESCRIPTION  DEFAULT NAME  REGISTRATIONS  EXPIRES               EXPIRED  TAGS\n\
             a1  web fleet    web           3/10           2024-01-01T01:00:00Z  no       env=prod\n\
             a2  -            -             0/1            2024-01-01T00:00:00Z  yes      -\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&list, OutputFormat::Json)?)?;
        assert_eq!(json["activations"][0]["registrations_count"], 3);
        assert_eq!(json["activations"][0]["tags"][0]["key"], "env");
        assert_eq!(json["activations"][1]["expired"], true);
        // Never a code in a listing.
        assert!(json["activations"][0].get("activation_code").is_none());
        let yaml = render(&list, OutputFormat::Yaml)?;
        assert!(yaml.starts_with("activations:\n"), "{yaml}");
        assert!(yaml.contains("registration_limit: 10"), "{yaml}");
        Ok(())
    }
}
