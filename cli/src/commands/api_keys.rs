//! `bosun api-keys …`: create (showing the secret once), list and revoke API keys.

use std::time::Duration;

use anyhow::Context as _;
use bosun_proto::auth::v1 as proto;
use chrono::Utc;
use clap::Subcommand;

use super::{Context, next_page, required};
use crate::views::{ApiKeyList, ApiKeyView, CreatedApiKey, MessageView, to_timestamp};

/// Page size for listings.
const PAGE_SIZE: i32 = 100;

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create an API key; its secret is printed this once.
    Create {
        /// User who owns the key; defaults to the caller.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// What the key is for, up to 256 characters.
        #[arg(long, short = 'd', value_name = "TEXT")]
        description: Option<String>,
        /// Lifetime, e.g. 30d or 12h; the key never expires without it.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List API keys (never their secrets).
    #[command(visible_alias = "list")]
    Ls {
        /// User whose keys to list; defaults to the caller.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Revoke an API key; tokens issued for it stop working within a minute.
    Revoke {
        /// Key id, `ak-` and 16 hex characters.
        key_id: String,
    },
}

pub async fn run(ctx: &Context, command: ApiKeysCommand) -> anyhow::Result<()> {
    match command {
        ApiKeysCommand::Create {
            user,
            description,
            expires_in,
        } => {
            let expires_at = match expires_in {
                None => None,
                Some(lifetime) => {
                    let lifetime = chrono::Duration::from_std(lifetime)
                        .ok()
                        .and_then(|lifetime| Utc::now().checked_add_signed(lifetime))
                        .context("--expires-in is too far in the future")?;
                    Some(to_timestamp(lifetime))
                }
            };
            let mut client = ctx.connect().await?.auth();
            let response = client
                .create_api_key(proto::CreateApiKeyRequest {
                    username: user.unwrap_or_default(),
                    description: description.unwrap_or_default(),
                    expires_at,
                })
                .await?
                .into_inner();
            let created = CreatedApiKey {
                api_key: ApiKeyView::from_proto(required(response.api_key, "api key")?, Utc::now()),
                secret: response.secret,
            };
            ctx.emit(&created)?;
            // On stderr, so `-o json | jq` still gets clean output.
            eprintln!(
                "warning: the secret is shown only this once and cannot be shown again; store it now"
            );
            Ok(())
        }
        ApiKeysCommand::Ls { user } => {
            let mut client = ctx.connect().await?.auth();
            let username = user.unwrap_or_default();
            let now = Utc::now();
            let mut api_keys = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_api_keys(proto::ListApiKeysRequest {
                        username: username.clone(),
                        max_results: PAGE_SIZE,
                        next_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                api_keys.extend(
                    page.api_keys
                        .into_iter()
                        .map(|key| ApiKeyView::from_proto(key, now)),
                );
                match next_page(&token, page.next_token)? {
                    Some(next) => token = next,
                    None => break,
                }
            }
            ctx.emit(&ApiKeyList { api_keys })
        }
        ApiKeysCommand::Revoke { key_id } => {
            let mut client = ctx.connect().await?.auth();
            client
                .revoke_api_key(proto::RevokeApiKeyRequest {
                    key_id: key_id.clone(),
                })
                .await?;
            ctx.emit(&MessageView::new(format!("revoked api key {key_id}")))
        }
    }
}
