//! The node of `bosun server` itself: on the embedded store the all-in-one server registers
//! the machine it runs on (once; the identity lives in `<data_dir>/agent`) and runs its agent
//! in-process against its own port, so a fresh install has a node to run commands on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bosun_agent::{
    Agent, AgentError, AgentOptions, CommandExecutor, DEFAULT_COMMAND_WORKERS, EndpointConfig,
    Exit, FileJournal, JournalLimits, StateDir, collect_host_facts, register,
};
use bosun_audit::AuditLog;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

/// Registers this machine if its agent state holds no identity yet, then runs the agent until
/// `shutdown`. A deregistered local node stops its agent (and stays deregistered: delete
/// `<data_dir>/agent` to register the machine again).
pub async fn run(
    url: String,
    state_dir: PathBuf,
    db: DatabaseConnection,
    audit: AuditLog,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = StateDir::new(state_dir);
    let endpoint = EndpointConfig::new(url);
    let facts = collect_host_facts();
    let identity = if state.has_identity() {
        state.load_identity()?
    } else {
        let name = if facts.hostname.is_empty() {
            "bosun-server".to_owned()
        } else {
            facts.hostname.clone()
        };
        let (id, code) = bosun_inventory::local_activation(&db, &audit, &name).await?;
        let identity = loop {
            match register(&endpoint, &id, &code, facts.clone()).await {
                Ok(identity) => break identity,
                // The listener may not be up yet.
                Err(AgentError::Connect(_)) => {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Err(error) => return Err(error.into()),
            }
        };
        state.create()?;
        state.save_identity(&identity, false)?;
        tracing::info!(node_id = %identity.node_id, "this machine is registered as a node");
        identity
    };
    let journal = Arc::new(FileJournal::open(state.path(), JournalLimits::default())?);
    let executor = Arc::new(CommandExecutor::new(
        state.path().join("work"),
        DEFAULT_COMMAND_WORKERS,
    ));
    let node_id = identity.node_id.clone();
    // It stops with the server it lives in: work still running after 2 s is killed (and
    // reported interrupted on the next start), and results not yet handed over stay in the
    // journal for then — the gateway they would go to is stopping too. Within the server's
    // own shutdown grace, so a stop never waits for it.
    let options = AgentOptions {
        shutdown_grace: Duration::from_secs(2),
        flush_timeout: Duration::ZERO,
        ..AgentOptions::new(facts)
    };
    let agent = Agent::new(identity, endpoint, journal, executor, options);
    match agent.run(shutdown).await? {
        Exit::Shutdown => {}
        Exit::Deregistered { message } => tracing::warn!(
            %node_id,
            %message,
            "this machine's node was deregistered; its agent stopped (delete the agent \
             directory in the data directory to register it again)"
        ),
    }
    Ok(())
}
