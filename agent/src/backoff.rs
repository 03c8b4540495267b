//! Reconnect back-off: exponential with full jitter, never sooner than the server's hint.

use std::time::Duration;

/// Limits of the reconnect back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The ceiling never grows past this.
    pub cap: Duration,
    /// A stream that lived at least this long resets the back-off.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Exponential back-off with full jitter: the n-th delay is uniform in
/// `[0, min(cap, initial * 2^n)]`, and at least the server's `retry-after-ms` hint.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A back-off at its first attempt.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// Back to the first attempt (after a stream that lived long enough).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.cap)
    }

    /// The next delay, given a uniform random number in `[0, 1]` and the server's hint.
    pub fn next_delay_with(&mut self, unit_random: f64, hint: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(unit_random.clamp(0.0, 1.0));
        match hint {
            Some(hint) => jittered.max(hint),
            None => jittered,
        }
    }

    /// The next delay, with jitter from the system's random source.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        self.next_delay_with(unit_random(), hint)
    }
}

/// A uniform random number in `[0, 1]` from aws-lc's generator (0.5 if it fails, which it
/// does not on Linux).
pub(crate) fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / ((1u64 << 53) - 1) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(backoff.ceiling().as_secs());
            backoff.next_delay_with(1.0, None);
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for _ in 0..100 {
            backoff.next_delay_with(1.0, None);
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(300));
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn delays_are_jittered_over_the_whole_range() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        for _ in 0..5 {
            backoff.next_delay(None);
        }
        // The 6th ceiling is 32 s: full jitter spreads delays over [0, 32 s].
        let delays: Vec<Duration> = (0..200)
            .map(|_| {
                let mut copy = backoff.clone();
                copy.next_delay(None)
            })
            .collect();
        assert!(delays.iter().all(|delay| *delay <= Duration::from_secs(32)));
        assert!(delays.iter().any(|delay| *delay < Duration::from_secs(8)));
        assert!(delays.iter().any(|delay| *delay > Duration::from_secs(24)));
        assert_eq!(backoff.next_delay_with(0.0, None), Duration::ZERO);
        assert_eq!(
            backoff.clone().next_delay_with(0.5, None),
            Duration::from_secs(32)
        );
    }

    #[test]
    fn the_server_hint_is_a_lower_bound() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        let hint = Some(Duration::from_millis(7_500));
        assert_eq!(
            backoff.next_delay_with(0.0, hint),
            Duration::from_millis(7_500)
        );
        assert_eq!(
            backoff.next_delay_with(1.0, hint),
            Duration::from_millis(7_500)
        );
        // A ceiling above the hint still jitters above it.
        for _ in 0..5 {
            backoff.next_delay_with(1.0, None);
        }
        assert_eq!(backoff.next_delay_with(1.0, hint), Duration::from_secs(128));
    }
}
