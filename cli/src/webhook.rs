//! `bosun webhook …`: webhook subscriptions to change events (NotificationService): create
//! one and keep its signing secret, list, change, rotate the secret, and read the deliveries.

use bosun_proto::notifications::v1 as proto;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::commands::{Context, next_page, required};
use crate::output::{Fields, Render, Table, list_cell, printable, text_cell, time_cell};
use crate::views::{MessageView, timestamp};

/// The server's largest page.
const PAGE_SIZE: i32 = 50;

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Create a webhook; prints its signing secret, which is shown only this once.
    Create {
        /// The http:// or https:// endpoint that receives the events.
        url: String,
        /// What the webhook is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        filters: FilterArgs,
        /// Create it disabled: nothing is delivered until it is enabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Show one webhook (never its secret).
    Get {
        /// Webhook id.
        id: String,
    },
    /// List every webhook.
    #[command(visible_alias = "list")]
    Ls,
    /// Change a webhook's url, description, filters or state; what is not given stays.
    Update {
        /// Webhook id.
        id: String,
        /// New endpoint.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// New description.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        filters: FilterArgs,
        /// Replace the filters with none: every event matches.
        #[arg(long, conflicts_with_all = ["sources", "operations", "name_prefixes"])]
        clear_filters: bool,
        /// Start delivering to it.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop delivering to it; pending deliveries wait until it is enabled again.
        #[arg(long)]
        disable: bool,
    },
    /// Delete a webhook and its deliveries.
    #[command(visible_alias = "delete")]
    Rm {
        /// Webhook id.
        id: String,
    },
    /// Replace the signing secret; prints the new one, shown only this once.
    RotateSecret {
        /// Webhook id.
        id: String,
    },
    /// List a webhook's deliveries, newest first.
    Deliveries {
        /// Webhook id.
        id: String,
        /// Show at most this many.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max: Option<u32>,
    },
}

/// Which events a webhook receives. Given on update, they replace all the filters.
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only events from this source (parameters, commands); repeatable.
    #[arg(long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Only this operation (Create, Update, Delete, LabelParameterVersion, …,
    /// CommandStatusChange, InvocationStatusChange); repeatable.
    #[arg(long = "operation", value_name = "OPERATION")]
    pub operations: Vec<String>,
    /// Only names starting with this, e.g. /app/prod/; repeatable.
    #[arg(long = "name-prefix", value_name = "PREFIX")]
    pub name_prefixes: Vec<String>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.operations.is_empty() && self.name_prefixes.is_empty()
    }

    fn into_proto(self) -> proto::WebhookFilters {
        proto::WebhookFilters {
            sources: self.sources,
            operations: self.operations,
            name_prefixes: self.name_prefixes,
        }
    }
}

pub async fn run(ctx: &Context, command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Create {
            url,
            description,
            filters,
            disabled,
        } => {
            let mut client = ctx.connect().await?.notifications();
            let response = client
                .create_webhook(proto::CreateWebhookRequest {
                    url,
                    description: description.unwrap_or_default(),
                    filters: Some(filters.into_proto()),
                    enabled: Some(!disabled),
                })
                .await?
                .into_inner();
            ctx.emit(&WebhookWithSecret {
                webhook: required(response.webhook, "webhook")?.into(),
                secret: response.secret,
            })
        }
        WebhookCommand::Get { id } => {
            let mut client = ctx.connect().await?.notifications();
            let response = client
                .get_webhook(proto::GetWebhookRequest { webhook_id: id })
                .await?
                .into_inner();
            ctx.emit(&WebhookView::from(required(response.webhook, "webhook")?))
        }
        WebhookCommand::Ls => {
            let mut client = ctx.connect().await?.notifications();
            let mut webhooks = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_webhooks(proto::ListWebhooksRequest {
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                webhooks.extend(page.webhooks.into_iter().map(WebhookView::from));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&WebhookList { webhooks })
        }
        WebhookCommand::Update {
            id,
            url,
            description,
            filters,
            clear_filters,
            enable,
            disable,
        } => {
            let filters = if clear_filters {
                Some(proto::WebhookFilters::default())
            } else if filters.is_empty() {
                None
            } else {
                Some(filters.into_proto())
            };
            let enabled = match (enable, disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let mut client = ctx.connect().await?.notifications();
            let response = client
                .update_webhook(proto::UpdateWebhookRequest {
                    webhook_id: id,
                    url,
                    description,
                    filters,
                    enabled,
                })
                .await?
                .into_inner();
            ctx.emit(&WebhookView::from(required(response.webhook, "webhook")?))
        }
        WebhookCommand::Rm { id } => {
            let mut client = ctx.connect().await?.notifications();
            client
                .delete_webhook(proto::DeleteWebhookRequest {
                    webhook_id: id.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!("deleted webhook {id}")))
        }
        WebhookCommand::RotateSecret { id } => {
            let mut client = ctx.connect().await?.notifications();
            let response = client
                .rotate_webhook_secret(proto::RotateWebhookSecretRequest { webhook_id: id })
                .await?
                .into_inner();
            ctx.emit(&WebhookWithSecret {
                webhook: required(response.webhook, "webhook")?.into(),
                secret: response.secret,
            })
        }
        WebhookCommand::Deliveries { id, max } => {
            let limit = max.map_or(usize::MAX, |max| max as usize);
            let mut client = ctx.connect().await?.notifications();
            let mut deliveries = Vec::new();
            let mut token = String::new();
            while deliveries.len() < limit {
                let wanted = (limit - deliveries.len()).min(PAGE_SIZE as usize);
                let page = client
                    .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
                        webhook_id: id.clone(),
                        max_results: i32::try_from(wanted).unwrap_or(PAGE_SIZE),
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                deliveries.extend(page.deliveries.into_iter().map(DeliveryView::from));
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            deliveries.truncate(limit);
            ctx.emit(&DeliveryList {
                webhook_id: id,
                deliveries,
            })
        }
    }
}

// ---- what is printed ----

/// A webhook as the CLI prints it.
#[derive(Debug, Serialize)]
pub struct WebhookView {
    pub webhook_id: String,
    pub url: String,
    pub description: String,
    pub enabled: bool,
    pub sources: Vec<String>,
    pub operations: Vec<String>,
    pub name_prefixes: Vec<String>,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<proto::Webhook> for WebhookView {
    fn from(webhook: proto::Webhook) -> Self {
        let filters = webhook.filters.unwrap_or_default();
        Self {
            webhook_id: webhook.webhook_id,
            url: webhook.url,
            description: webhook.description,
            enabled: webhook.enabled,
            sources: filters.sources,
            operations: filters.operations,
            name_prefixes: filters.name_prefixes,
            created_by: webhook.created_by,
            created_at: timestamp(webhook.created_at),
            updated_at: timestamp(webhook.updated_at),
        }
    }
}

impl WebhookView {
    fn fields(&self) -> Fields {
        let all = |values: &[String]| {
            if values.is_empty() {
                "(all)".to_owned()
            } else {
                values.join(", ")
            }
        };
        Fields::new()
            .field("id", &self.webhook_id)
            .field("url", &self.url)
            .field("description", &self.description)
            .field("enabled", if self.enabled { "yes" } else { "no" })
            .field("sources", all(&self.sources))
            .field("operations", all(&self.operations))
            .field("name prefixes", all(&self.name_prefixes))
            .field("created by", &self.created_by)
            .field("created", time_cell(self.created_at))
            .field("updated", time_cell(self.updated_at))
    }
}

impl Render for WebhookView {
    fn to_table(&self) -> String {
        self.fields().render()
    }
}

/// A webhook with the signing secret the server returns this once.
#[derive(Debug, Serialize)]
pub struct WebhookWithSecret {
    pub webhook: WebhookView,
    pub secret: String,
}

impl Render for WebhookWithSecret {
    fn to_table(&self) -> String {
        let mut text = self.webhook.fields().field("secret", &self.secret).render();
        text.push_str(
            "\nKeep the secret now: it is shown only this once. Receivers verify bosun-signature with it.\n",
        );
        text
    }
}

#[derive(Debug, Serialize)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

impl Render for WebhookList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec!["ID", "URL", "ENABLED", "OPERATIONS", "NAME PREFIXES"]);
        for webhook in &self.webhooks {
            table.row(vec![
                webhook.webhook_id.clone(),
                webhook.url.clone(),
                if webhook.enabled { "yes" } else { "no" }.to_owned(),
                list_cell(&webhook.operations),
                list_cell(&webhook.name_prefixes),
            ]);
        }
        table.render()
    }
}

/// One delivery of an event to a webhook.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub event_id: String,
    pub source: String,
    pub operation: String,
    pub name: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

fn status_name(value: i32) -> String {
    match proto::DeliveryStatus::try_from(value) {
        Ok(proto::DeliveryStatus::Pending) => "Pending".to_owned(),
        Ok(proto::DeliveryStatus::Succeeded) => "Succeeded".to_owned(),
        Ok(proto::DeliveryStatus::Failed) => "Failed".to_owned(),
        _ => format!("Unknown({value})"),
    }
}

impl From<proto::WebhookDelivery> for DeliveryView {
    fn from(delivery: proto::WebhookDelivery) -> Self {
        Self {
            event_id: delivery.event_id,
            source: delivery.source,
            operation: delivery.operation,
            name: delivery.name,
            status: status_name(delivery.status),
            attempts: delivery.attempts,
            last_status_code: (delivery.last_status_code != 0).then_some(delivery.last_status_code),
            last_error: delivery.last_error,
            next_attempt_at: timestamp(delivery.next_attempt_at),
            delivered_at: timestamp(delivery.delivered_at),
            created_at: timestamp(delivery.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeliveryList {
    pub webhook_id: String,
    pub deliveries: Vec<DeliveryView>,
}

impl Render for DeliveryList {
    fn to_table(&self) -> String {
        let mut table = Table::new(vec![
            "EVENT",
            "OPERATION",
            "NAME",
            "STATUS",
            "ATTEMPTS",
            "CODE",
            "NEXT ATTEMPT",
            "ERROR",
        ]);
        for delivery in &self.deliveries {
            table.row(vec![
                delivery.event_id.clone(),
                delivery.operation.clone(),
                delivery.name.clone(),
                delivery.status.clone(),
                delivery.attempts.to_string(),
                delivery
                    .last_status_code
                    .map_or_else(|| "-".to_owned(), |code| code.to_string()),
                time_cell(delivery.next_attempt_at),
                text_cell(&printable(&delivery.last_error)),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutputFormat, render};

    fn webhook() -> WebhookView {
        WebhookView::from(proto::Webhook {
            webhook_id: "0190f0aa-0000-7000-8000-000000000001".into(),
            url: "https://hooks.example.com/bosun".into(),
            description: "ops channel".into(),
            filters: Some(proto::WebhookFilters {
                sources: vec![],
                operations: vec!["Update".into(), "Delete".into()],
                name_prefixes: vec!["/app/prod/".into()],
            }),
            enabled: true,
            created_by: "user/alice".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            updated_at: None,
        })
    }

    #[test]
    fn a_created_webhook_shows_its_secret_once_in_every_format() -> anyhow::Result<()> {
        let created = WebhookWithSecret {
            webhook: webhook(),
            secret: "whsec_abc".into(),
        };
        let table = render(&created, OutputFormat::Table)?;
        assert!(
            table.contains("secret:") && table.contains("whsec_abc"),
            "{table}"
        );
        assert!(table.contains("sources:        (all)"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&render(&created, OutputFormat::Json)?)?;
        assert_eq!(json["secret"], "whsec_abc");
        assert_eq!(json["webhook"]["operations"][1], "Delete");
        assert_eq!(json["webhook"]["created_at"], "2027-01-15T08:00:00Z");
        let yaml = render(&created, OutputFormat::Yaml)?;
        assert!(yaml.contains("secret: whsec_abc"), "{yaml}");
        Ok(())
    }

    #[test]
    fn lists_render_as_tables() -> anyhow::Result<()> {
        let list = WebhookList {
            webhooks: vec![webhook()],
        };
        let table = render(&list, OutputFormat::Table)?;
        assert!(table.starts_with("ID"), "{table}");
        assert!(table.contains("Update, Delete"), "{table}");
        let deliveries = DeliveryList {
            webhook_id: "w".into(),
            deliveries: vec![DeliveryView::from(proto::WebhookDelivery {
                event_id: "e1".into(),
                operation: "Update".into(),
                name: "/app/prod/db".into(),
                status: proto::DeliveryStatus::Pending as i32,
                attempts: 2,
                last_status_code: 500,
                last_error: "http 500".into(),
                ..Default::default()
            })],
        };
        let table = render(&deliveries, OutputFormat::Table)?;
        assert!(
            table.contains("Pending") && table.contains("http 500"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&deliveries, OutputFormat::Json)?)?;
        assert_eq!(json["deliveries"][0]["last_status_code"], 500);
        assert_eq!(json["deliveries"][0]["attempts"], 2);
        Ok(())
    }
}
