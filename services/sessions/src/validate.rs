//! Request checks of the SessionService RPCs: every violation names the field and the rule,
//! with the stable error name SSM uses. No I/O.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bosun_core::ApiError;
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{ColumnTrait, Condition};
use serde::{Deserialize, Serialize};

use crate::entities::session;
use crate::store::SessionStatus;

pub(crate) const VALIDATION: &str = "ValidationException";
pub(crate) const INVALID_DOCUMENT: &str = "InvalidDocument";
pub(crate) const INVALID_PARAMETERS: &str = "InvalidParameters";
pub(crate) const INVALID_FILTER_KEY: &str = "InvalidFilterKey";
pub(crate) const INVALID_NEXT_TOKEN: &str = "InvalidNextToken";
pub(crate) const TARGET_NOT_CONNECTED: &str = "TargetNotConnected";

/// The document StartSession runs when the request names none.
pub(crate) const DEFAULT_DOCUMENT: &str = "Bosun-StartShellSession";
const MAX_TARGET_CHARS: usize = 400;
const MAX_REASON_CHARS: usize = 256;
pub(crate) const MAX_SESSION_ID_CHARS: usize = 96;
const MAX_RUN_AS_CHARS: usize = 32;
const MAX_PARAMETERS: usize = 50;
const MAX_PARAMETER_NAME_CHARS: usize = 255;
const MAX_FILTERS: usize = 6;
const MAX_FILTER_VALUE_CHARS: usize = 400;
/// DescribeSessions page size: 1-200, 0 means 20.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: i32 = 200;

pub(crate) fn invalid(
    field: impl Into<String>,
    rule: impl Into<String>,
    reason: &'static str,
) -> ApiError {
    ApiError::invalid(field, rule).with_reason(reason)
}

/// A node id (`mi-` and 17 hex digits), at most 400 characters as SSM's `Target`.
pub(crate) fn target(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "is required", VALIDATION));
    }
    if value.chars().count() > MAX_TARGET_CHARS {
        return Err(invalid(field, "must be at most 400 characters", VALIDATION));
    }
    if !bosun_inventory::validate::is_node_id(value) {
        return Err(invalid(
            field,
            "must be a node id (mi- and 17 hex digits)",
            VALIDATION,
        ));
    }
    Ok(())
}

/// `^[a-zA-Z0-9_\-.:/]{3,128}$`; empty means the default shell document.
pub(crate) fn document_name(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Ok(DEFAULT_DOCUMENT.to_owned());
    }
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if !(3..=128).contains(&value.len()) || !chars_ok {
        return Err(invalid(
            field,
            "must be 3-128 characters of a-z, A-Z, 0-9 and _-.:/",
            VALIDATION,
        ));
    }
    Ok(value.to_owned())
}

/// At most 256 characters, one line.
pub(crate) fn reason(field: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().count() > MAX_REASON_CHARS {
        return Err(invalid(field, "must be at most 256 characters", VALIDATION));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must not contain control characters (one line)",
            VALIDATION,
        ));
    }
    Ok(())
}

/// An OS user name: 1-32 of `A-Z a-z 0-9 . _ -`, not starting with `-` (no shell
/// metacharacters, no option injection into `useradd`/`su`).
pub(crate) fn run_as(field: &str, value: &str) -> Result<(), ApiError> {
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if value.is_empty()
        || value.len() > MAX_RUN_AS_CHARS
        || !chars_ok
        || value.starts_with('-')
        || value == "."
        || value == ".."
    {
        return Err(invalid(
            field,
            "must be an OS user name: 1-32 of A-Z, a-z, 0-9 and . _ -, not starting with -",
            VALIDATION,
        ));
    }
    Ok(())
}

/// The parameters map's shape; values are checked against the document's definitions.
pub(crate) fn parameters<'a>(
    names: impl ExactSizeIterator<Item = &'a String>,
) -> Result<(), ApiError> {
    if names.len() > MAX_PARAMETERS {
        return Err(invalid(
            "parameters",
            "must have at most 50 parameters",
            INVALID_PARAMETERS,
        ));
    }
    for name in names {
        if name.is_empty() || name.chars().count() > MAX_PARAMETER_NAME_CHARS {
            return Err(invalid(
                "parameters",
                "parameter names must be 1-255 characters",
                INVALID_PARAMETERS,
            ));
        }
    }
    Ok(())
}

/// A session id: 1-96 of `A-Z a-z 0-9 . _ -` (what StartSession makes).
pub(crate) fn session_id(field: &str, value: &str) -> Result<(), ApiError> {
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if value.is_empty() || value.len() > MAX_SESSION_ID_CHARS || !chars_ok {
        return Err(invalid(
            field,
            "must be a session id: 1-96 of A-Z, a-z, 0-9 and . _ -",
            VALIDATION,
        ));
    }
    Ok(())
}

/// A new session id: `<owner name>-<17 hex digits>`, the name cut and reduced to the
/// characters session ids allow (they appear in object keys and Redis keys).
pub(crate) fn new_session_id(owner_name: &str, random: &[u8; 9]) -> String {
    let suffix: String = hex::encode(random).chars().take(17).collect();
    let budget = MAX_SESSION_ID_CHARS - suffix.len() - 1;
    let name: String = owner_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(budget)
        .collect();
    format!("{name}-{suffix}")
}

// ---- DescribeSessions ---------------------------------------------------------------------

/// Active or History.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Active,
    History,
}

pub(crate) fn state(field: &str, value: &str) -> Result<State, ApiError> {
    match value {
        "Active" => Ok(State::Active),
        "History" => Ok(State::History),
        "" => Err(invalid(field, "is required: Active or History", VALIDATION)),
        _ => Err(invalid(field, "must be Active or History", VALIDATION)),
    }
}

/// 1-200; 0 means 20.
pub(crate) fn page_size(field: &str, value: i32) -> Result<usize, ApiError> {
    match value {
        0 => Ok(DEFAULT_PAGE),
        1..=MAX_PAGE => Ok(usize::try_from(value).unwrap_or(DEFAULT_PAGE)),
        _ => Err(invalid(field, "must be 1-200 (0 means 20)", VALIDATION)),
    }
}

/// What DescribeSessions' filters select (ANDed).
#[derive(Debug, Default, Clone)]
pub(crate) struct Filters {
    pub invoked_after: Option<DateTime<Utc>>,
    pub invoked_before: Option<DateTime<Utc>>,
    pub target: Option<String>,
    pub owner: Option<String>,
    pub status: Option<SessionStatus>,
    pub session_id: Option<String>,
}

fn time_value(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| invalid(field, "must be an RFC 3339 time", VALIDATION))
}

/// Checks 0-6 filters; a key given twice is refused (its meaning would be ambiguous).
pub(crate) fn filters(
    list: &[bosun_proto::sessions::v1::SessionFilter],
) -> Result<Filters, ApiError> {
    if list.len() > MAX_FILTERS {
        return Err(invalid(
            "filters",
            "must have at most 6 filters",
            VALIDATION,
        ));
    }
    let mut out = Filters::default();
    let mut seen = Vec::new();
    for (index, filter) in list.iter().enumerate() {
        let key_field = format!("filters[{index}].key");
        let value_field = format!("filters[{index}].value");
        let value = filter.value.as_str();
        if seen.contains(&filter.key.as_str()) {
            return Err(invalid(
                key_field,
                format!("{} is given more than once", filter.key),
                INVALID_FILTER_KEY,
            ));
        }
        seen.push(filter.key.as_str());
        if value.is_empty() || value.chars().count() > MAX_FILTER_VALUE_CHARS {
            return Err(invalid(value_field, "must be 1-400 characters", VALIDATION));
        }
        match filter.key.as_str() {
            "InvokedAfter" => out.invoked_after = Some(time_value(&value_field, value)?),
            "InvokedBefore" => out.invoked_before = Some(time_value(&value_field, value)?),
            "Target" => {
                target(&value_field, value)?;
                out.target = Some(value.to_owned());
            }
            "Owner" => out.owner = Some(value.to_owned()),
            "Status" => {
                out.status = Some(SessionStatus::parse(value).ok_or_else(|| {
                    invalid(
                        &value_field,
                        "must be Connecting, Connected, Disconnected, Terminating, Terminated or Failed",
                        VALIDATION,
                    )
                })?);
            }
            "SessionId" => {
                session_id(&value_field, value)?;
                out.session_id = Some(value.to_owned());
            }
            _ => {
                return Err(invalid(
                    key_field,
                    "must be InvokedAfter, InvokedBefore, Target, Owner, Status or SessionId",
                    INVALID_FILTER_KEY,
                ));
            }
        }
    }
    Ok(out)
}

impl Filters {
    /// The condition on `sessions` columns.
    pub(crate) fn condition(&self) -> Condition {
        let mut all = Condition::all();
        if let Some(after) = self.invoked_after {
            all = all.add(session::Column::CreatedAt.gte(after));
        }
        if let Some(before) = self.invoked_before {
            all = all.add(session::Column::CreatedAt.lte(before));
        }
        if let Some(target) = &self.target {
            all = all.add(session::Column::NodeId.eq(target.clone()));
        }
        if let Some(owner) = &self.owner {
            all = all.add(session::Column::Owner.eq(owner.clone()));
        }
        if let Some(status) = self.status {
            all = all.add(session::Column::Status.eq(status.as_str()));
        }
        if let Some(id) = &self.session_id {
            all = all.add(session::Column::Id.eq(id.clone()));
        }
        all
    }
}

/// Where a DescribeSessions page ends: the last session listed (start date, id), and the
/// state it was listed under so a token cannot be replayed against the other list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageToken {
    /// `created_at`, RFC 3339 with nanoseconds.
    pub t: String,
    pub i: String,
    pub s: String,
}

impl PageToken {
    pub(crate) fn new(state: State, created_at: DateTime<Utc>, id: &str) -> Self {
        PageToken {
            t: created_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            i: id.to_owned(),
            s: state_name(state).to_owned(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(
        text: &str,
        state: State,
    ) -> Result<Option<(DateTime<Utc>, String)>, ApiError> {
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            invalid(
                "next_token",
                "is not a token this call returned",
                INVALID_NEXT_TOKEN,
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if token.s != state_name(state) {
            return Err(bad());
        }
        let time = DateTime::parse_from_rfc3339(&token.t)
            .map_err(|_| bad())?
            .with_timezone(&Utc);
        Ok(Some((time, token.i)))
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Active => "Active",
        State::History => "History",
    }
}

/// Sessions after `(time, id)` in newest-first order.
pub(crate) fn after(time: DateTime<Utc>, id: &str) -> Condition {
    Condition::any()
        .add(session::Column::CreatedAt.lt(time))
        .add(
            Condition::all()
                .add(session::Column::CreatedAt.eq(time))
                .add(session::Column::Id.lt(id)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_short_and_safe() {
        let id = new_session_id("a.b@c.d", &[0xab; 9]);
        assert_eq!(id, "a.b-c.d-ababababababababa");
        let long = new_session_id(&"x".repeat(128), &[1; 9]);
        assert_eq!(long.len(), MAX_SESSION_ID_CHARS);
        assert!(session_id("session_id", &long).is_ok());
    }

    #[test]
    fn run_as_names() {
        for good in ["root", "ec2-user", "svc.app", "_x", "A1"] {
            assert!(run_as("run_as", good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a;b", "..", &"a".repeat(33), "é"] {
            assert!(run_as("run_as", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_tokens_round_trip_per_state() {
        let now = Utc::now();
        let token = PageToken::new(State::Active, now, "alice-1").encode();
        let (time, id) = PageToken::decode(&token, State::Active)
            .expect("decodes")
            .expect("a token");
        assert_eq!((time, id.as_str()), (now, "alice-1"));
        assert!(PageToken::decode(&token, State::History).is_err());
        assert!(PageToken::decode("!!", State::Active).is_err());
    }
}
