//! `CommandsConfig` (`[commands]` in bosun.toml): how the engine dispatches, reconciles and
//! stores output. Durations are humantime text (`1s`, `250ms`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// How often the dispatcher looks at running commands when nothing woke it.
    #[serde(with = "humantime_serde")]
    pub dispatch_interval: Duration,
    /// How long a dispatcher replica holds a command it works on before another replica may
    /// take it over (renewed while it works).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the reconciler applies timeouts and retries stuck work.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Key prefix of full output when SendCommand gives none.
    pub default_output_prefix: String,
    /// Bytes of each of stdout and stderr per step an agent streams (the full output kept);
    /// past it, output is dropped and the invocation says so.
    pub max_output_bytes: u64,
    /// How long after an invocation ends its output waits for chunks still on their way
    /// before it is stored as it is (marked incomplete).
    #[serde(with = "humantime_serde")]
    pub output_settle: Duration,
    /// Invocations dispatched per transaction.
    pub dispatch_batch: u32,
    /// Results read from the queue per batch.
    pub result_batch: u32,
    /// Batches of results applied at once by one replica (each its own consumer and
    /// transaction): results of a fleet arrive faster than one transaction after another
    /// can store them.
    pub result_consumers: u32,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            dispatch_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(5),
            default_output_prefix: "commands".to_owned(),
            max_output_bytes: bosun_document::run::DEFAULT_STREAM_LIMIT_BYTES,
            output_settle: Duration::from_secs(120),
            dispatch_batch: 1000,
            result_batch: 500,
            result_consumers: 1,
        }
    }
}

impl CommandsConfig {
    /// Checks the settings; the error names the setting as it appears in bosun.toml.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("dispatch_interval", self.dispatch_interval),
            ("lease", self.lease),
            ("reconcile_interval", self.reconcile_interval),
            ("output_settle", self.output_settle),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("commands.{name}: must be more than 0"));
            }
        }
        if self.lease < self.dispatch_interval * 2 {
            return Err("commands.lease: must be at least twice dispatch_interval".to_owned());
        }
        if self.default_output_prefix.is_empty() || self.default_output_prefix.len() > 500 {
            return Err("commands.default_output_prefix: must be 1 to 500 characters".to_owned());
        }
        if self.max_output_bytes > 1024 * 1024 * 1024 {
            return Err("commands.max_output_bytes: must be at most 1 GiB".to_owned());
        }
        if !(1..=10_000).contains(&self.dispatch_batch) {
            return Err("commands.dispatch_batch: must be 1 to 10000".to_owned());
        }
        if !(1..=10_000).contains(&self.result_batch) {
            return Err("commands.result_batch: must be 1 to 10000".to_owned());
        }
        if !(1..=32).contains(&self.result_consumers) {
            return Err("commands.result_consumers: must be 1 to 32".to_owned());
        }
        Ok(())
    }
}
