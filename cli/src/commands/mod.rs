//! The operator commands, one module per area, and what they share: the server, the token
//! choice, the output format, and paging.

pub mod activations;
pub mod api_keys;
pub mod audit;
pub mod command;
pub mod documents;
pub mod groups;
pub mod nodes;
pub mod parameters;
pub mod roles;
pub mod run;
pub mod session;
pub mod users;

use anyhow::bail;
use chrono::Utc;

use crate::connection::{Connection, resolve_token};
use crate::credentials::CredentialStore;
use crate::output::{OutputFormat, Render, emit};

/// What every command needs from the global flags.
#[derive(Debug)]
pub struct Context {
    /// Normalized server URL; also the key of the stored token.
    pub server: String,
    pub token_flag: Option<String>,
    pub output: OutputFormat,
    pub store: Result<CredentialStore, String>,
}

impl Context {
    /// The caller's token. The credentials file is read only when `--token` is absent, so
    /// a broken file does not stop a script that passes its token.
    pub fn token(&self) -> anyhow::Result<String> {
        let flag = self
            .token_flag
            .as_deref()
            .filter(|token| !token.trim().is_empty());
        let stored = match flag {
            Some(_) => None,
            None => self.store()?.get(&self.server)?,
        };
        resolve_token(&self.server, flag, stored, Utc::now())
    }

    /// Where tokens are kept; an error when no config directory can be found.
    pub fn store(&self) -> anyhow::Result<&CredentialStore> {
        self.store
            .as_ref()
            .map_err(|reason| anyhow::anyhow!("{reason}"))
    }

    /// A connection that sends the caller's token.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let token = self.token()?;
        self.connect_with(&token).await
    }

    /// A connection that sends `token`, for commands that check the token before prompting.
    pub async fn connect_with(&self, token: &str) -> anyhow::Result<Connection> {
        Connection::open(&self.server, Some(token)).await
    }

    /// A connection without a token, for Login.
    pub async fn connect_anonymous(&self) -> anyhow::Result<Connection> {
        Connection::open(&self.server, None).await
    }

    pub fn emit<T: Render>(&self, value: &T) -> anyhow::Result<()> {
        emit(value, self.output)
    }
}

/// The token for the next page, or `None` at the end. A server that hands back the token
/// it was given would loop us forever, so that is an error.
pub fn next_page(previous: &str, next: String) -> anyhow::Result<Option<String>> {
    if next.is_empty() {
        Ok(None)
    } else if next == previous {
        bail!("the server returned the same next_token twice; stopping the listing")
    } else {
        Ok(Some(next))
    }
}

/// A message field the protocol promises; its absence is the server's bug, not ours.
pub fn required<T>(value: Option<T>, what: &str) -> anyhow::Result<T> {
    match value {
        Some(value) => Ok(value),
        None => bail!("the server's response has no {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_stops_at_an_empty_token_and_on_a_repeat() -> anyhow::Result<()> {
        assert_eq!(next_page("", String::new())?, None);
        assert_eq!(next_page("", "p2".into())?, Some("p2".to_owned()));
        assert!(next_page("p2", "p2".into()).is_err());
        Ok(())
    }
}
