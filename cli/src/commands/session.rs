//! `bosun login`, `bosun logout` and `bosun whoami`: getting, dropping and inspecting the
//! token stored for a server.

use anyhow::bail;
use bosun_proto::auth::v1 as proto;
use clap::Args;

use super::Context;
use crate::credentials::StoredCredential;
use crate::input::login_secret;
use crate::output::rfc3339;
use crate::views::{IdentityView, LoginView, MessageView, timestamp};

/// Flags of `bosun login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// User to log in as.
    #[arg(long, short = 'u', value_name = "NAME", default_value = "admin")]
    pub username: String,

    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long, conflicts_with = "api_key_stdin")]
    pub password_stdin: bool,

    /// Log in with an API key read from the first line of stdin (no username needed).
    #[arg(long, conflicts_with = "username")]
    pub api_key_stdin: bool,
}

pub async fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<()> {
    let request = if args.api_key_stdin {
        proto::LoginRequest {
            api_key: login_secret(true, "api key", "")?,
            ..Default::default()
        }
    } else {
        let prompt = format!("password for {} at {}: ", args.username, ctx.server);
        proto::LoginRequest {
            password: login_secret(args.password_stdin, "password", &prompt)?,
            username: args.username,
            ..Default::default()
        }
    };
    let connection = ctx.connect_anonymous().await?;
    let response = connection.auth().login(request).await?.into_inner();
    if response.token.is_empty() {
        bail!("the server's response has no token");
    }
    let expires_at = timestamp(response.expires_at);
    ctx.store()?.put(StoredCredential {
        server: ctx.server.clone(),
        token: response.token,
        principal: response.principal.clone(),
        expires_at,
    })?;
    ctx.emit(&LoginView {
        server: ctx.server.clone(),
        principal: response.principal,
        expires_at,
    })
}

/// Forgets the stored token. There is no RPC to end a session, so the token itself stays
/// valid until it expires; the message says so rather than promise more than it does.
pub fn logout(ctx: &Context) -> anyhow::Result<()> {
    let message = match ctx.store()?.remove(&ctx.server)? {
        Some(forgotten) => match forgotten.expires_at {
            Some(at) => format!(
                "logged out of {}; the token stays valid on the server until {}",
                ctx.server,
                rfc3339(at)
            ),
            None => format!("logged out of {}", ctx.server),
        },
        None => format!("not logged in to {}", ctx.server),
    };
    ctx.emit(&MessageView::new(message))
}

pub async fn whoami(ctx: &Context) -> anyhow::Result<()> {
    let connection = ctx.connect().await?;
    let identity = connection
        .auth()
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await?
        .into_inner();
    ctx.emit(&IdentityView::from(identity))
}
