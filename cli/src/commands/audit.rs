//! `bosun audit ls`: query the audit trail, newest first.

use std::time::Duration;

use anyhow::bail;
use bosun_proto::audit::v1 as proto;
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};

use super::{Context, next_page};
use crate::views::{AuditEventList, AuditEventView, to_timestamp};

/// The server's largest page.
const MAX_PAGE: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List audit events, newest first.
    #[command(visible_alias = "list")]
    Ls(AuditListArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuditListArgs {
    /// Only events by this principal, e.g. user/alice.
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    /// Only this action, or a prefix ending in `*`, e.g. auth:*.
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only this resource, or a prefix ending in `*`, e.g. parameter:/app/*.
    #[arg(long, value_name = "RESOURCE")]
    pub resource: Option<String>,
    /// Only events with this result.
    #[arg(long, value_enum, value_name = "RESULT")]
    pub result: Option<AuditResultArg>,
    /// Events at or after this time: a duration ago (1h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_time_bound)]
    pub since: Option<TimeBound>,
    /// Events before this time: a duration ago (1h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_time_bound)]
    pub until: Option<TimeBound>,
    /// Show at most this many events.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,
}

/// The `--result` choices.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditResultArg {
    /// The call succeeded.
    Success,
    /// The call failed after it was authorized.
    Failure,
    /// Authorization refused the call.
    Denied,
}

impl From<AuditResultArg> for proto::AuditResult {
    fn from(result: AuditResultArg) -> Self {
        match result {
            AuditResultArg::Success => Self::Success,
            AuditResultArg::Failure => Self::Failure,
            AuditResultArg::Denied => Self::Denied,
        }
    }
}

/// A `--since`/`--until` value; a relative one is resolved when the command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    Ago(Duration),
    At(DateTime<Utc>),
}

impl TimeBound {
    pub fn resolve(self, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        match self {
            Self::At(at) => Ok(at),
            Self::Ago(ago) => chrono::Duration::from_std(ago)
                .ok()
                .and_then(|ago| now.checked_sub_signed(ago))
                .ok_or_else(|| {
                    anyhow::anyhow!("{} ago is out of range", humantime::format_duration(ago))
                }),
        }
    }
}

/// clap value parser: an RFC 3339 time, else a humantime duration meaning "that long ago".
pub fn parse_time_bound(value: &str) -> Result<TimeBound, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(TimeBound::At(at.with_timezone(&Utc)));
    }
    humantime::parse_duration(value)
        .map(TimeBound::Ago)
        .map_err(|_| {
            "expected a duration like 1h or 7d, or an RFC 3339 time like 2024-05-01T12:00:00Z"
                .to_owned()
        })
}

/// The request filters, with relative times resolved against `now`.
pub fn list_request(
    args: &AuditListArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<proto::ListAuditEventsRequest> {
    let start = args.since.map(|bound| bound.resolve(now)).transpose()?;
    let end = args.until.map(|bound| bound.resolve(now)).transpose()?;
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        bail!("--since must be earlier than --until");
    }
    Ok(proto::ListAuditEventsRequest {
        principal: args.principal.clone().unwrap_or_default(),
        action: args.action.clone().unwrap_or_default(),
        resource: args.resource.clone().unwrap_or_default(),
        result: args
            .result
            .map_or(proto::AuditResult::Unspecified, proto::AuditResult::from)
            .into(),
        start_time: start.map(to_timestamp),
        end_time: end.map(to_timestamp),
        max_results: 0,
        next_token: String::new(),
    })
}

pub async fn run(ctx: &Context, command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Ls(args) = command;
    let mut request = list_request(&args, Utc::now())?;
    let wanted = usize::try_from(args.max).unwrap_or(usize::MAX);
    let mut client = ctx.connect().await?.audit();
    let mut events = Vec::new();
    while events.len() < wanted {
        let remaining = (wanted - events.len()).min(MAX_PAGE);
        // At most 1000, so it fits an i32.
        request.max_results = i32::try_from(remaining).unwrap_or(1000);
        let page = client
            .list_audit_events(request.clone())
            .await?
            .into_inner();
        events.extend(page.events.into_iter().map(AuditEventView::from));
        match next_page(&request.next_token, page.next_token)? {
            Some(next) => request.next_token = next,
            None => break,
        }
    }
    // A server may return more than asked; the flag is a promise to the operator.
    events.truncate(wanted);
    ctx.emit(&AuditEventList { events })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_067_200, 0).unwrap_or_default()
    }

    #[test]
    fn time_bounds_accept_durations_and_rfc3339() -> anyhow::Result<()> {
        let ago = parse_time_bound("1h").map_err(anyhow::Error::msg)?;
        assert_eq!(
            ago.resolve(now())?,
            DateTime::from_timestamp(1_704_067_200 - 3600, 0).unwrap_or_default()
        );
        let at = parse_time_bound("2024-01-01T01:00:00+01:00").map_err(anyhow::Error::msg)?;
        assert_eq!(at.resolve(now())?, now());
        assert!(parse_time_bound("yesterday").is_err());
        Ok(())
    }

    fn args(since: Option<&str>, until: Option<&str>) -> anyhow::Result<AuditListArgs> {
        let bound = |v: Option<&str>| {
            v.map(parse_time_bound)
                .transpose()
                .map_err(anyhow::Error::msg)
        };
        Ok(AuditListArgs {
            principal: Some("user/alice".into()),
            action: Some("auth:*".into()),
            resource: None,
            result: Some(AuditResultArg::Denied),
            since: bound(since)?,
            until: bound(until)?,
            max: 10,
        })
    }

    #[test]
    fn filters_become_the_request() -> anyhow::Result<()> {
        let request = list_request(&args(Some("2h"), Some("1h"))?, now())?;
        assert_eq!(request.principal, "user/alice");
        assert_eq!(request.action, "auth:*");
        assert_eq!(request.resource, "");
        assert_eq!(request.result, proto::AuditResult::Denied as i32);
        assert_eq!(
            request.start_time.map(|t| t.seconds),
            Some(1_704_067_200 - 7200)
        );
        assert_eq!(
            request.end_time.map(|t| t.seconds),
            Some(1_704_067_200 - 3600)
        );
        Ok(())
    }

    #[test]
    fn an_empty_window_is_refused() -> anyhow::Result<()> {
        assert!(list_request(&args(Some("1h"), Some("2h"))?, now()).is_err());
        Ok(())
    }
}
