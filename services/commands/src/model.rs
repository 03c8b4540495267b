//! The domain of Run Command: command and invocation states with SSM's status and status
//! details, the stored plan, notification settings, and how a finished command's state
//! follows from its invocations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an invocation is. Stored by name (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvocationState {
    /// Not sent yet (waiting for a concurrency slot).
    Pending,
    /// Sent to the node (a `commands.run` message exists), or running there.
    InProgress,
    /// A send attempt failed; it is retried.
    Delayed,
    Success,
    Failed,
    ExecutionTimedOut,
    DeliveryTimedOut,
    /// Cancel asked, not yet confirmed by the agent.
    Cancelling,
    Cancelled,
    /// The node does not exist or is deregistered.
    Undeliverable,
    /// The run stopped (MaxErrors exceeded) before this was sent.
    Terminated,
    /// No step of the document applies to the node's platform, or the agent cannot run it.
    InvalidPlatform,
    /// The caller may not run commands on this node.
    AccessDenied,
}

impl InvocationState {
    pub const ALL: [InvocationState; 13] = [
        Self::Pending,
        Self::InProgress,
        Self::Delayed,
        Self::Success,
        Self::Failed,
        Self::ExecutionTimedOut,
        Self::DeliveryTimedOut,
        Self::Cancelling,
        Self::Cancelled,
        Self::Undeliverable,
        Self::Terminated,
        Self::InvalidPlatform,
        Self::AccessDenied,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Delayed => "Delayed",
            Self::Success => "Success",
            Self::Failed => "Failed",
            Self::ExecutionTimedOut => "ExecutionTimedOut",
            Self::DeliveryTimedOut => "DeliveryTimedOut",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::Undeliverable => "Undeliverable",
            Self::Terminated => "Terminated",
            Self::InvalidPlatform => "InvalidPlatform",
            Self::AccessDenied => "AccessDenied",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// SSM's `CommandInvocationStatus`.
    pub fn status(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Delayed => "Delayed",
            Self::Success => "Success",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::ExecutionTimedOut | Self::DeliveryTimedOut => "TimedOut",
            Self::Failed
            | Self::Undeliverable
            | Self::Terminated
            | Self::InvalidPlatform
            | Self::AccessDenied => "Failed",
        }
    }

    /// SSM's `StatusDetails`.
    pub fn details(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "In Progress",
            Self::Delayed => "Delayed",
            Self::Success => "Success",
            Self::Failed => "Failed",
            Self::ExecutionTimedOut => "Execution Timed Out",
            Self::DeliveryTimedOut => "Delivery Timed Out",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::Undeliverable => "Undeliverable",
            Self::Terminated => "Terminated",
            Self::InvalidPlatform => "Invalid Platform",
            Self::AccessDenied => "Access Denied",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::InProgress | Self::Delayed | Self::Cancelling
        )
    }

    /// Counts toward MaxErrors (Failed and Execution Timed Out only).
    pub fn is_error(self) -> bool {
        matches!(self, Self::Failed | Self::ExecutionTimedOut)
    }

    /// Sent to the node and not ended: holds a concurrency slot.
    pub fn is_in_flight(self) -> bool {
        matches!(self, Self::InProgress | Self::Delayed | Self::Cancelling)
    }
}

/// Where a command is. Stored by name (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandState {
    Pending,
    InProgress,
    Success,
    /// Ran everywhere it could; at least one invocation did not succeed, but errors stayed
    /// within MaxErrors.
    Incomplete,
    Failed,
    ExecutionTimedOut,
    DeliveryTimedOut,
    Cancelling,
    Cancelled,
    /// The caller may run on none of the targeted nodes.
    AccessDenied,
    /// The targets matched no node.
    NoInstancesInTag,
    /// Every invocation was Undeliverable, Invalid Platform or Access Denied.
    Undeliverable,
}

impl CommandState {
    pub const ALL: [CommandState; 12] = [
        Self::Pending,
        Self::InProgress,
        Self::Success,
        Self::Incomplete,
        Self::Failed,
        Self::ExecutionTimedOut,
        Self::DeliveryTimedOut,
        Self::Cancelling,
        Self::Cancelled,
        Self::AccessDenied,
        Self::NoInstancesInTag,
        Self::Undeliverable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Success => "Success",
            Self::Incomplete => "Incomplete",
            Self::Failed => "Failed",
            Self::ExecutionTimedOut => "ExecutionTimedOut",
            Self::DeliveryTimedOut => "DeliveryTimedOut",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::AccessDenied => "AccessDenied",
            Self::NoInstancesInTag => "NoInstancesInTag",
            Self::Undeliverable => "Undeliverable",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// SSM's `CommandStatus`.
    pub fn status(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Success => "Success",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::ExecutionTimedOut | Self::DeliveryTimedOut => "TimedOut",
            Self::Incomplete
            | Self::Failed
            | Self::AccessDenied
            | Self::NoInstancesInTag
            | Self::Undeliverable => "Failed",
        }
    }

    /// SSM's `StatusDetails`.
    pub fn details(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "In Progress",
            Self::Success => "Success",
            Self::Incomplete => "Incomplete",
            Self::Failed => "Failed",
            Self::ExecutionTimedOut => "Execution Timed Out",
            Self::DeliveryTimedOut => "Delivery Timed Out",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::AccessDenied => "Access Denied",
            Self::NoInstancesInTag => "No Instances In Tag",
            Self::Undeliverable => "Undeliverable",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::InProgress | Self::Cancelling)
    }
}

/// How many invocations of a command are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts(pub BTreeMap<InvocationState, u32>);

impl StateCounts {
    pub fn get(&self, state: InvocationState) -> u32 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    pub fn add(&mut self, state: InvocationState, count: u32) {
        *self.0.entry(state).or_default() += count;
    }

    pub fn total(&self) -> u32 {
        self.0.values().sum()
    }

    pub fn terminal(&self) -> u32 {
        self.0
            .iter()
            .filter(|(state, _)| state.is_terminal())
            .map(|(_, count)| count)
            .sum()
    }

    /// Failed + Execution Timed Out.
    pub fn errors(&self) -> u32 {
        self.get(InvocationState::Failed) + self.get(InvocationState::ExecutionTimedOut)
    }

    pub fn in_flight(&self) -> u32 {
        self.0
            .iter()
            .filter(|(state, _)| state.is_in_flight())
            .map(|(_, count)| count)
            .sum()
    }
}

/// The state of a command whose invocations are all terminal, following SSM (ssm-notes §3.2):
/// errors (Failed + Execution Timed Out) past `error_limit` make it Failed (Execution Timed
/// Out when timeouts alone are past it); Delivery Timed Out past the limit makes it Delivery
/// Timed Out; a cancelled command is Cancelled; every invocation Undeliverable / Invalid
/// Platform / Access Denied makes it Undeliverable (Access Denied when all were denied);
/// all Success — ignoring Undeliverable, Invalid Platform and Access Denied when at least
/// one succeeded — is Success; anything else Incomplete. `None` while some invocation is not
/// terminal.
pub fn final_command_state(
    counts: &StateCounts,
    error_limit: u32,
    cancel_requested: bool,
) -> Option<CommandState> {
    use InvocationState as S;
    if counts.terminal() < counts.total() {
        return None;
    }
    let total = counts.total();
    if total == 0 {
        return Some(CommandState::NoInstancesInTag);
    }
    if counts.errors() > error_limit {
        return Some(
            if counts.get(S::ExecutionTimedOut) > error_limit && counts.get(S::Failed) == 0 {
                CommandState::ExecutionTimedOut
            } else {
                CommandState::Failed
            },
        );
    }
    if counts.get(S::DeliveryTimedOut) > error_limit {
        return Some(CommandState::DeliveryTimedOut);
    }
    if cancel_requested && counts.get(S::Cancelled) > 0 {
        return Some(CommandState::Cancelled);
    }
    let unreachable =
        counts.get(S::Undeliverable) + counts.get(S::InvalidPlatform) + counts.get(S::AccessDenied);
    if unreachable == total {
        return Some(if counts.get(S::AccessDenied) == total {
            CommandState::AccessDenied
        } else {
            CommandState::Undeliverable
        });
    }
    if counts.get(S::Success) + unreachable == total {
        return Some(CommandState::Success);
    }
    Some(CommandState::Incomplete)
}

/// What becomes of the output of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Nothing to store (the invocation has not ended, or never ran).
    None,
    /// Ended; its streamed output waits to be stored whole.
    Pending,
    /// Stored in the object store.
    Stored,
}

impl OutputState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Pending => "Pending",
            Self::Stored => "Stored",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::None, Self::Pending, Self::Stored]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

/// The rendered document, stored with the command: what every invocation runs (each node
/// runs the steps whose precondition holds on its platform, listed in its `steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlannedStep>,
    /// The document's execution timeout (`executionTimeout` parameter, else 3,600 s).
    pub execution_timeout_seconds: u64,
}

/// One plugin of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Step name (for 1.2 documents, the plugin name). Nested `aws:runDocument` steps are
    /// named `<outer step>.<inner step>`.
    pub name: String,
    /// `aws:runShellScript` or `aws:runPowerShellScript`.
    pub action: String,
    /// The plugin inputs as the agent reads them (`bosun_document::run::PluginInputs`).
    pub inputs: bosun_document::run::PluginInputs,
    /// `platformType` must equal this for the step to run; `None`: any platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// `NotificationConfig`, validated; stored with the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The NotificationService webhook id.
    pub webhook_id: String,
    /// As given (`notification_arn`).
    pub arn: String,
    /// Subset of InProgress, Success, TimedOut, Cancelled, Failed; `All` expanded.
    pub events: Vec<String>,
    /// `Command` or `Invocation`.
    pub notification_type: String,
}

/// Object key of the full output of one step on one node:
/// `<prefix>/<command-id>/<node-id>/<step>/<stream>` (stream `stdout` or `stderr`).
pub fn output_key(
    prefix: &str,
    command_id: &str,
    node_id: &str,
    step: &str,
    stream: &str,
) -> String {
    let prefix = prefix.trim_end_matches('/');
    format!("{prefix}/{command_id}/{node_id}/{step}/{stream}")
}

/// The plan step indexes of an invocation's `steps` column (`"0,2"`); empty text is none,
/// and parts that are not numbers are skipped.
pub fn step_indexes(steps: &str) -> impl Iterator<Item = usize> + '_ {
    steps
        .split(',')
        .filter_map(|part| part.trim().parse::<usize>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvocationState as S;

    fn counts(entries: &[(InvocationState, u32)]) -> StateCounts {
        let mut counts = StateCounts::default();
        for (state, count) in entries {
            counts.add(*state, *count);
        }
        counts
    }

    #[test]
    fn names_round_trip() {
        for state in InvocationState::ALL {
            assert_eq!(InvocationState::parse(state.as_str()), Some(state));
        }
        for state in CommandState::ALL {
            assert_eq!(CommandState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn final_state_follows_ssm() {
        assert_eq!(
            final_command_state(&counts(&[(S::Pending, 1)]), 0, false),
            None
        );
        assert_eq!(
            final_command_state(&counts(&[(S::Success, 3)]), 0, false),
            Some(CommandState::Success)
        );
        // 4 Undeliverable + 1 Success ⇒ Success.
        assert_eq!(
            final_command_state(&counts(&[(S::Undeliverable, 4), (S::Success, 1)]), 0, false),
            Some(CommandState::Success)
        );
        assert_eq!(
            final_command_state(&counts(&[(S::Undeliverable, 2)]), 0, false),
            Some(CommandState::Undeliverable)
        );
        assert_eq!(
            final_command_state(&counts(&[(S::AccessDenied, 2)]), 0, false),
            Some(CommandState::AccessDenied)
        );
        // MaxErrors 3: 4 errors fail the command, 3 do not.
        assert_eq!(
            final_command_state(&counts(&[(S::Failed, 4), (S::Terminated, 6)]), 3, false),
            Some(CommandState::Failed)
        );
        assert_eq!(
            final_command_state(&counts(&[(S::Failed, 3), (S::Success, 7)]), 3, false),
            Some(CommandState::Incomplete)
        );
        assert_eq!(
            final_command_state(&counts(&[(S::ExecutionTimedOut, 1)]), 0, false),
            Some(CommandState::ExecutionTimedOut)
        );
        assert_eq!(
            final_command_state(
                &counts(&[(S::DeliveryTimedOut, 1), (S::Success, 1)]),
                0,
                false
            ),
            Some(CommandState::DeliveryTimedOut)
        );
        assert_eq!(
            final_command_state(&counts(&[(S::Cancelled, 1), (S::Success, 1)]), 0, true),
            Some(CommandState::Cancelled)
        );
        assert_eq!(
            final_command_state(&StateCounts::default(), 0, false),
            Some(CommandState::NoInstancesInTag)
        );
    }
}
