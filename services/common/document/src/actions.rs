//! The table of SSM action names the model knows, their `bosun:` aliases, and which of
//! them Bosun can run today.
//!
//! Known-but-unsupported actions are listed so that operators bringing SSM documents get
//! "not supported by Bosun yet" rather than "unknown": the document is fine, Bosun is behind.

/// Which kind of document an action may appear in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionScope {
    /// Command (and Policy) document plugins, run by the agent.
    Command,
    /// Automation runbook actions, run by the automation engine.
    Automation,
}

/// One entry of the action table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionInfo {
    /// The SSM name, always with the `aws:` prefix.
    pub name: &'static str,
    pub scope: ActionScope,
    /// Whether Bosun's agent or automation engine can run it now.
    pub supported: bool,
}

const fn command(name: &'static str, supported: bool) -> ActionInfo {
    ActionInfo {
        name,
        scope: ActionScope::Command,
        supported,
    }
}

const fn automation(name: &'static str, supported: bool) -> ActionInfo {
    ActionInfo {
        name,
        scope: ActionScope::Automation,
        supported,
    }
}

/// Command plugins from the agent's `allPlugins` plus the legacy `aws:applyPatches`;
/// Automation actions from the user guide's action list. No Automation action is supported
/// until the automation engine exists: a runbook is accepted only when Bosun can run it.
pub const ACTIONS: &[ActionInfo] = &[
    command("aws:runShellScript", true),
    // Runs through `pwsh` on the agent when it is installed.
    command("aws:runPowerShellScript", true),
    command("aws:updateSsmAgent", false),
    command("aws:applications", false),
    command("aws:configureDaemon", false),
    command("aws:configurePackage", false),
    command("aws:psModule", false),
    command("aws:softwareInventory", false),
    command("aws:cloudWatch", false),
    command("aws:configureDocker", false),
    command("aws:runDockerAction", false),
    command("aws:domainJoin", false),
    command("aws:updateEc2Config", false),
    command("aws:refreshAssociation", false),
    command("aws:downloadContent", false),
    // Runs another Command document (by name, or a local file on the node); Run Command
    // expands it before delivery.
    command("aws:runDocument", true),
    command("aws:applyPatches", false),
    automation("aws:approve", false),
    automation("aws:branch", false),
    automation("aws:pause", false),
    automation("aws:runCommand", false),
    automation("aws:sleep", false),
    automation("aws:assertAwsResourceProperty", false),
    automation("aws:changeInstanceState", false),
    automation("aws:copyImage", false),
    automation("aws:createImage", false),
    automation("aws:createStack", false),
    automation("aws:createTags", false),
    automation("aws:deleteImage", false),
    automation("aws:deleteStack", false),
    automation("aws:executeAutomation", false),
    automation("aws:executeAwsApi", false),
    automation("aws:executeScript", false),
    automation("aws:executeStateMachine", false),
    automation("aws:invokeWebhook", false),
    automation("aws:invokeLambdaFunction", false),
    automation("aws:runInstances", false),
    automation("aws:waitForAwsResourceProperty", false),
];

/// The `aws:` spelling of an action name: `bosun:runShellScript` becomes
/// `aws:runShellScript`; any other name is returned unchanged.
pub fn canonical_action_name(name: &str) -> String {
    match name.strip_prefix("bosun:") {
        Some(rest) => format!("aws:{rest}"),
        None => name.to_owned(),
    }
}

/// Looks an action up by its SSM name or `bosun:` alias, within one scope.
pub fn lookup_action(name: &str, scope: ActionScope) -> Option<&'static ActionInfo> {
    let canonical = canonical_action_name(name);
    ACTIONS
        .iter()
        .find(|action| action.scope == scope && action.name == canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bosun_alias_finds_the_same_entry() {
        let aws = lookup_action("aws:runShellScript", ActionScope::Command);
        let bosun = lookup_action("bosun:runShellScript", ActionScope::Command);
        assert!(aws.is_some());
        assert_eq!(aws, bosun);
    }

    #[test]
    fn scopes_do_not_mix() {
        assert!(lookup_action("aws:runShellScript", ActionScope::Automation).is_none());
        assert!(lookup_action("aws:sleep", ActionScope::Command).is_none());
    }

    #[test]
    fn names_are_unique_within_a_scope() {
        for (i, a) in ACTIONS.iter().enumerate() {
            for b in &ACTIONS[i + 1..] {
                assert!(!(a.name == b.name && a.scope == b.scope), "{}", a.name);
            }
        }
    }
}
