//! The `bosun-agent` binary: `register` once, then `run` (under systemd).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bosun_agent::{
    Agent, AgentOptions, CommandExecutor, DEFAULT_COMMAND_WORKERS, DEFAULT_STATE_DIR,
    EndpointConfig, Exit, FileJournal, JournalLimits, StateDir, collect_host_facts, register,
};
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Exit code when the server says the node is deregistered (systemd: do not restart in a loop
/// for nothing; see `RestartPreventExitStatus=3`).
const EXIT_DEREGISTERED: u8 = 3;

#[derive(Parser)]
#[command(name = "bosun-agent", version, about = "Bosun node agent")]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "BOSUN_AGENT_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Registers this host with an activation and saves its identity.
    Register {
        /// Control plane URL, `https://…` (or `http://…` for development).
        #[arg(long)]
        server: String,
        /// The activation's id.
        #[arg(long)]
        activation_id: String,
        /// The activation's code (better given in the environment than on the command line).
        #[arg(long, env = "BOSUN_ACTIVATION_CODE", hide_env_values = true)]
        activation_code: String,
        #[arg(long, env = "BOSUN_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Extra trusted CA certificates (PEM).
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Replace an identity already saved in the state directory.
        #[arg(long)]
        force: bool,
    },
    /// Connects and runs work until stopped.
    Run {
        #[arg(long, env = "BOSUN_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Control plane URL; default: the one registered with.
        #[arg(long)]
        server: Option<String>,
        /// Extra trusted CA certificates (PEM).
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Seconds running work may take to finish on SIGTERM before it is killed.
        #[arg(long, default_value_t = 20)]
        grace_seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_cli(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "bosun-agent failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn endpoint(url: String, ca_bundle: Option<&Path>) -> anyhow::Result<EndpointConfig> {
    let config = EndpointConfig::new(url);
    Ok(match ca_bundle {
        Some(path) => config.with_ca_bundle_file(path)?,
        None => config,
    })
}

async fn run_cli(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Register {
            server,
            activation_id,
            activation_code,
            state_dir,
            ca_bundle,
            force,
        } => {
            let state = StateDir::new(state_dir);
            if state.has_identity() && !force {
                anyhow::bail!(bosun_agent::AgentError::AlreadyRegistered(
                    state.path().into()
                ));
            }
            let endpoint = endpoint(server, ca_bundle.as_deref())?;
            let identity = register(
                &endpoint,
                &activation_id,
                &activation_code,
                collect_host_facts(),
            )
            .await
            .context("registration failed")?;
            state.save_identity(&identity, force)?;
            tracing::info!(node_id = %identity.node_id, state_dir = %state.path().display(), "registered");
            println!("{}", identity.node_id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            state_dir,
            server,
            ca_bundle,
            grace_seconds,
        } => {
            let state = StateDir::new(state_dir);
            state.create()?;
            let identity = state.load_identity()?;
            let url = server.unwrap_or_else(|| identity.server_url.clone());
            let endpoint = endpoint(url, ca_bundle.as_deref())?;
            let journal = Arc::new(FileJournal::open(state.path(), JournalLimits::default())?);
            let executor = Arc::new(CommandExecutor::new(
                state.path().join("work"),
                DEFAULT_COMMAND_WORKERS,
            ));
            let mut options = AgentOptions::new(collect_host_facts());
            options.shutdown_grace = std::time::Duration::from_secs(grace_seconds);
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            tracing::info!(node_id = %identity.node_id, server = %endpoint.url, "starting");
            let agent = Agent::new(identity, endpoint, journal, executor, options);
            match agent.run(shutdown).await? {
                Exit::Shutdown => {
                    tracing::info!("stopped");
                    Ok(ExitCode::SUCCESS)
                }
                Exit::Deregistered { .. } => Ok(ExitCode::from(EXIT_DEREGISTERED)),
            }
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping after running work"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping after running work"),
    }
    shutdown.cancel();
    // A second signal stops at once. Nothing is lost: results wait in the outbox, and runs
    // cut short are reported interrupted on the next start.
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
