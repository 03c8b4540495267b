//! `NotificationsConfig`: how deliveries are timed and retried (`[notifications]` in bosun.toml).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the delivery worker sends and retries. Durations are humantime text (`10s`, `250ms`),
/// so tests can run the whole schedule in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// The longest one POST may take, connecting included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The wait after the first failed attempt; it doubles after each further failure.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before a delivery is marked Failed.
    pub max_attempts: u32,
    /// How often workers look for due deliveries when nothing woke them.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            request_timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            max_attempts: 12,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The most attempts a delivery may be given.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

impl NotificationsConfig {
    /// Checks the settings; the error names the setting as it appears in bosun.toml.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("request_timeout", self.request_timeout),
            ("retry_base", self.retry_base),
            ("retry_max", self.retry_max),
            ("poll_interval", self.poll_interval),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("notifications.{name}: must be more than 0"));
            }
        }
        if self.request_timeout > Duration::from_secs(300) {
            return Err("notifications.request_timeout: must be at most 5m".to_owned());
        }
        if self.retry_max < self.retry_base {
            return Err("notifications.retry_max: must be at least retry_base".to_owned());
        }
        if self.retry_max > Duration::from_secs(7 * 86_400) {
            return Err("notifications.retry_max: must be at most 7days".to_owned());
        }
        if self.poll_interval > Duration::from_secs(300) {
            return Err("notifications.poll_interval: must be at most 5m".to_owned());
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(format!(
                "notifications.max_attempts: must be 1 to {MAX_ATTEMPTS_LIMIT}"
            ));
        }
        Ok(())
    }

    /// The wait before attempt `failed + 1`, after `failed` failures (1 or more), without
    /// jitter: `retry_base * 2^(failed-1)`, at most `retry_max`.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(64);
        let factor = 1u128.checked_shl(doublings).unwrap_or(u128::MAX);
        let wait = self.retry_base.as_millis().saturating_mul(factor);
        let capped = wait.min(self.retry_max.as_millis());
        Duration::from_millis(u64::try_from(capped).unwrap_or(u64::MAX))
    }

    /// `backoff(failed)` plus up to a fifth more, from `random` (any u64): never earlier than
    /// the nominal back-off, so replicas that failed together spread out instead of retrying
    /// in lock-step.
    pub fn backoff_with_jitter(&self, failed: u32, random: u64) -> Duration {
        let base = self.backoff(failed);
        let spread = u64::try_from(base.as_millis() / 5).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            random % (spread + 1)
        };
        base + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let config = NotificationsConfig::default();
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.retry_base, Duration::from_secs(1));
        assert_eq!(config.retry_max, Duration::from_secs(3600));
        assert_eq!(config.max_attempts, 12);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let config = NotificationsConfig::default();
        let waits: Vec<u64> = (1..=14).map(|n| config.backoff(n).as_secs()).collect();
        assert_eq!(
            waits,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
        );
        assert_eq!(config.backoff(10_000), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_never_shortens_and_adds_at_most_a_fifth() {
        let config = NotificationsConfig::default();
        for random in [0, 1, 199, 200, 12_345, u64::MAX] {
            let wait = config.backoff_with_jitter(1, random);
            assert!(wait >= Duration::from_secs(1), "{wait:?}");
            assert!(wait <= Duration::from_millis(1200), "{wait:?}");
        }
        assert_eq!(config.backoff_with_jitter(1, 0), Duration::from_secs(1));
    }

    #[test]
    fn settings_parse_from_humantime_and_bad_ones_are_named() {
        let config: NotificationsConfig = serde_json::from_str(
            r#"{"request_timeout": "250ms", "retry_base": "10ms", "retry_max": "40ms", "max_attempts": 3}"#,
        )
        .expect("parses");
        assert_eq!(config.retry_base, Duration::from_millis(10));
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.validate(), Ok(()));
        let bad = NotificationsConfig {
            max_attempts: 0,
            ..config.clone()
        };
        assert!(
            bad.validate()
                .is_err_and(|e| e.starts_with("notifications.max_attempts:"))
        );
        let bad = NotificationsConfig {
            retry_max: Duration::from_millis(1),
            ..config
        };
        assert!(
            bad.validate()
                .is_err_and(|e| e.starts_with("notifications.retry_max:"))
        );
    }
}
