//! The reaper: ends sessions nobody else will end. Run on every sessions replica at once;
//! each end is a conditional UPDATE (see [`SessionStore::end`]), so a session is ended — and
//! audited — once however many reapers find it.
//!
//! - A session still `Connecting` whose agent never attached (no hub ever recorded it)
//!   `attach_timeout` after it started: Failed "the agent did not attach within Ns".
//! - A session not ended whose hub has not touched it for `hub_lost_after`: Failed "the
//!   gateway holding the session was lost". A live hub touches every `hub_touch_interval`
//!   (at least three times within `hub_lost_after`), and an agent that re-attaches elsewhere
//!   makes the new hub touch, so only sessions whose every end is gone are failed.
//!
//! Tokens need no reaping: they are checked (and expire) at redeem.

use chrono::Utc;
use sea_orm::{ColumnTrait, Condition};
use tokio_util::sync::CancellationToken;

use crate::SessionsConfig;
use crate::entities::session;
use crate::store::{SessionEnd, SessionStatus, SessionStore, chrono_duration, to_u64};

/// Sessions ended per query in one pass (a backlog is worked through on the next passes).
const BATCH: u64 = 500;

/// Ends sessions whose agent never attached or whose hub is gone.
pub struct Reaper {
    store: SessionStore,
    config: SessionsConfig,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    pub fn new(store: SessionStore, config: SessionsConfig) -> Self {
        Self { store, config }
    }

    /// Looks every `reap_interval` until `shutdown`. A failed pass is logged and retried on
    /// the next tick (the database may be briefly unreachable); it never ends the task.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(self.config.reap_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.reap_once().await {
                tracing::warn!(%error, "sessions reaper: pass failed; retrying next interval");
            }
        }
    }

    /// One pass; returns how many sessions it ended.
    pub async fn reap_once(&self) -> Result<usize, bosun_core::ApiError> {
        let now = Utc::now();
        let mut ended = 0;

        // Never attached: Connecting, no hub seen, started before the attach deadline.
        let attach_cutoff = now - chrono_duration(self.config.attach_timeout);
        let unattached = || {
            Condition::all()
                .add(session::Column::Status.eq(SessionStatus::Connecting.as_str()))
                .add(session::Column::HubSeenAt.is_null())
                .add(session::Column::CreatedAt.lt(attach_cutoff))
        };
        let details = format!(
            "the agent did not attach within {}s",
            self.config.attach_timeout.as_secs().max(1)
        );
        for row in self.store.active_where(unattached(), BATCH).await? {
            let end = SessionEnd {
                status: SessionStatus::Failed,
                details: details.clone(),
                exit_code: None,
                bytes_in: to_u64(row.bytes_in),
                bytes_out: to_u64(row.bytes_out),
            };
            if self.store.end_where(&row.id, end, unattached()).await? {
                tracing::info!(session_id = %row.id, node_id = %row.node_id, "session failed: the agent never attached");
                ended += 1;
            }
        }

        // Hub lost: its last touch is older than hub_lost_after.
        let lost_cutoff = now - chrono_duration(self.config.hub_lost_after);
        let lost = || Condition::all().add(session::Column::HubSeenAt.lt(lost_cutoff));
        for row in self.store.active_where(lost(), BATCH).await? {
            let end = SessionEnd {
                status: SessionStatus::Failed,
                details: "the gateway holding the session was lost".to_owned(),
                exit_code: None,
                bytes_in: to_u64(row.bytes_in),
                bytes_out: to_u64(row.bytes_out),
            };
            if self.store.end_where(&row.id, end, lost()).await? {
                tracing::info!(session_id = %row.id, node_id = %row.node_id, "session failed: its hub was lost");
                ended += 1;
            }
        }
        Ok(ended)
    }
}
