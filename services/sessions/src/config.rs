//! `SessionsConfig` (`[sessions]` in bosun.toml). Durations are humantime text (`1s`, `250ms`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// How long a token from StartSession/ResumeSession stays valid (it opens one stream).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How long the agent has to attach after StartSession before the session Fails.
    #[serde(with = "humantime_serde")]
    pub attach_timeout: Duration,
    /// How often a hub records that it is alive (and the bytes so far) and learns of a
    /// TerminateSession.
    #[serde(with = "humantime_serde")]
    pub hub_touch_interval: Duration,
    /// A session whose hub has not touched it for this long is Failed by the reaper (the
    /// gateway replica holding it died).
    #[serde(with = "humantime_serde")]
    pub hub_lost_after: Duration,
    /// How often the reaper looks.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// How often a hub writes the buffered transcript as a part (also when 256 KiB are
    /// buffered).
    #[serde(with = "humantime_serde")]
    pub transcript_flush_interval: Duration,
    /// Record the client's keystrokes in transcripts too (they may hold passwords typed at
    /// prompts; off by default).
    pub record_input: bool,
    /// How long one "minute" of a document's `idleSessionTimeout` / `maxSessionDuration`
    /// lasts. Always 60 s in production; tests shorten it.
    #[serde(with = "humantime_serde")]
    pub time_unit: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            token_ttl: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(60),
            hub_touch_interval: Duration::from_secs(5),
            hub_lost_after: Duration::from_secs(30),
            reap_interval: Duration::from_secs(10),
            transcript_flush_interval: Duration::from_secs(2),
            record_input: false,
            time_unit: Duration::from_secs(60),
        }
    }
}

impl SessionsConfig {
    /// Checks the settings; the error names the setting as it appears in bosun.toml.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("token_ttl", self.token_ttl),
            ("attach_timeout", self.attach_timeout),
            ("hub_touch_interval", self.hub_touch_interval),
            ("hub_lost_after", self.hub_lost_after),
            ("reap_interval", self.reap_interval),
            ("transcript_flush_interval", self.transcript_flush_interval),
            ("time_unit", self.time_unit),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("sessions.{name}: must be more than 0"));
            }
        }
        if self.hub_lost_after < self.hub_touch_interval * 3 {
            return Err(
                "sessions.hub_lost_after: must be at least three times hub_touch_interval"
                    .to_owned(),
            );
        }
        if self.token_ttl > Duration::from_secs(3600) {
            return Err("sessions.token_ttl: must be at most 1h".to_owned());
        }
        Ok(())
    }

    /// `minutes` of a document, in this deployment's time.
    pub fn minutes(&self, minutes: u32) -> Duration {
        self.time_unit * minutes
    }
}
