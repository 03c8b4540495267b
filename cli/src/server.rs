//! `bosun server` (all-in-one: the gateway and every service in one process on an embedded
//! SQLite store and the in-process queue) and `bosun serve <service>` (one service alone,
//! from the very same library code, for distributed deployments).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bosun_audit::{AuditLog, AuditServiceImpl};
use bosun_auth::{KeyRing, TokenVerifier};
use bosun_commands::{CommandServiceImpl, CommandsConfig, Engine, Ports};
use bosun_core::lifecycle::{Tasks, cancel_on_signals};
use bosun_documents::DocumentServiceImpl;
use bosun_gateway::{AuthConfig, Bootstrap, GatewayDeps, LocalServices};
use bosun_inventory::{Directory, NodeServiceImpl, ResourceGroupServiceImpl};
use bosun_nodelink::{
    AgentEdge, ChannelOptions, MemoryPresence, NodeLink, Presence, RedisPresence,
};
use bosun_notifications::{
    DeliveryWorker, IntakeWorker, NotificationServiceImpl, NotificationsConfig,
};
use bosun_objects::{ObjectStoreConfig, Objects};
use bosun_parameters::{
    KeySource, MasterKeyRing, ParameterServiceImpl, PolicyWorker, ReadCache, SystemClock,
};
use bosun_queue::{MemoryQueue, Queue, QueueOptions, RedisQueue};
use bosun_sessions::broker::RelayRedis;
use bosun_sessions::{Broker, Reaper, SessionServiceImpl, SessionStore, SessionsConfig};
use bosun_telemetry::{LogFormat, Metrics, TelemetryConfig};
use figment::value::Value;
use sea_orm::DatabaseConnection;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

#[path = "local_agent.rs"]
mod local_agent;

const AUDIT_SERVICE: &str = "bosun.audit.v1.AuditService";
const AGENT_CHANNEL: &str = "bosun.agent.v1.AgentChannel";

/// A secret in configuration: never printed, never serialized back.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// Everything a Bosun process reads from bosun.toml, `BOSUN_*` and flags.
/// deploy/bosun.example.toml documents each key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this deployment uses; deployments sharing one Redis need
    /// their own (replicas of one deployment wait on each other's cache leases).
    pub redis_prefix: String,
    pub admin_password: Option<Secret>,
    pub log_format: String,
    pub log_filter: Option<String>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub auth: AuthConfig,
    /// gRPC service name → `http://host:port` of the process serving it.
    pub routes: BTreeMap<String, String>,
    pub parameters: ParametersConfig,
    pub notifications: NotificationsConfig,
    pub agents: AgentsConfig,
    pub commands: CommandsConfig,
    pub sessions: SessionsConfig,
    /// Where full command output is kept; unset: the directory `<data_dir>/objects`.
    /// Not serialized: it may hold an S3 secret, and unset has no value to write.
    #[serde(skip_serializing)]
    pub objects: Option<ObjectStoreConfig>,
}

/// `[agents]` in bosun.toml: the agent channel the gateway holds, and the node of `bosun server`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// How often agents send a heartbeat (told to each agent when it connects).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is ConnectionLost.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Agent handshakes in flight per gateway; more are shed with RESOURCE_EXHAUSTED and a
    /// retry hint, so a reconnect storm cannot topple the gateway.
    pub max_handshakes: usize,
    /// `bosun server` only: register this machine as a node and run its agent in the server
    /// process (state in `<data_dir>/agent`).
    pub local_agent: bool,
    /// This gateway's name for presence and its inbox stream `node-inbox.<replica_id>`. Unset:
    /// a random one per start. A stable name (the pod or host name) lets a restarted gateway
    /// take its inbox up again instead of leaving it behind in Redis.
    pub replica_id: Option<String>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            heartbeat_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(120),
            max_handshakes: 512,
            local_agent: true,
            replica_id: None,
        }
    }
}

impl AgentsConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.heartbeat_interval < Duration::from_secs(1)
            || self.heartbeat_interval > Duration::from_secs(3600)
        {
            anyhow::bail!("agents.heartbeat_interval: must be between 1s and 1h");
        }
        if self.ping_timeout < self.heartbeat_interval * 2 {
            anyhow::bail!("agents.ping_timeout: must be at least twice agents.heartbeat_interval");
        }
        if let Some(id) = &self.replica_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            anyhow::bail!(
                "agents.replica_id: must be 1 to 64 characters of letters, digits, '_', '-' or '.'"
            );
        }
        if !(1..=100_000).contains(&self.max_handshakes) {
            anyhow::bail!("agents.max_handshakes: must be between 1 and 100000");
        }
        Ok(())
    }
}

/// `[parameters]` in bosun.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParametersConfig {
    /// SecureString master keys (JSON, mode 0600), created on first start. Default:
    /// `<data_dir>/keys/parameters.json`. Every process serving parameters needs the same file.
    pub key_file: Option<PathBuf>,
    /// Memory for the read cache of GetParameter / GetParameters, per process (0 turns it
    /// off). With `redis_url` set, replicas keep their caches exact through Redis; without
    /// it only `bosun server` caches (it is then the only process writing its store).
    pub cache_max_bytes: usize,
}

impl Default for ParametersConfig {
    fn default() -> Self {
        ParametersConfig {
            key_file: None,
            cache_max_bytes: 64 << 20,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7070".into(),
            data_dir: PathBuf::from("./bosun-data"),
            database_url: None,
            redis_url: None,
            redis_prefix: "bosun:".into(),
            admin_password: None,
            log_format: "pretty".into(),
            log_filter: None,
            shutdown_grace: Duration::from_secs(10),
            auth: AuthConfig::default(),
            routes: BTreeMap::new(),
            parameters: ParametersConfig::default(),
            notifications: NotificationsConfig::default(),
            agents: AgentsConfig::default(),
            commands: CommandsConfig::default(),
            sessions: SessionsConfig::default(),
            objects: None,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> anyhow::Result<(SocketAddr, LogFormat)> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "listen: {:?} is not an address like 127.0.0.1:7070",
                self.listen
            )
        })?;
        let format: LogFormat = self
            .log_format
            .parse()
            .map_err(|error| anyhow::anyhow!("log_format: {error}"))?;
        self.auth.validate().map_err(anyhow::Error::msg)?;
        self.notifications.validate().map_err(anyhow::Error::msg)?;
        self.agents.validate()?;
        self.commands.validate().map_err(anyhow::Error::msg)?;
        self.sessions.validate().map_err(anyhow::Error::msg)?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            anyhow::bail!("redis_url: must start with redis:// or rediss://");
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || !self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
        {
            anyhow::bail!(
                "redis_prefix: must be 1 to 64 characters of letters, digits, ':', '_', '-' or '.'"
            );
        }
        if self.shutdown_grace > Duration::from_secs(300) {
            anyhow::bail!("shutdown_grace: must be at most 5m");
        }
        Ok((listen, format))
    }

    fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| bosun_store::sqlite_url(&self.data_dir.join("bosun.db")))
    }

    fn parameters_key_file(&self) -> PathBuf {
        self.parameters
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("parameters.json"))
    }

    /// `[objects]`, or the local directory `<data_dir>/objects`.
    fn objects(&self) -> ObjectStoreConfig {
        self.objects
            .clone()
            .unwrap_or_else(|| ObjectStoreConfig::Local {
                root: self.data_dir.join("objects"),
            })
    }

    /// This process's name among the Run Command engines sharing a store: `cmd-` and
    /// `agents.replica_id` when set, else the host name and process id (unique among the
    /// processes running at once, which is what leases and queue consumers need).
    fn command_engine_id(&self) -> String {
        match &self.agents.replica_id {
            Some(id) => format!("cmd-{id}"),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|name| name.trim().to_owned())
                    .ok()
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| "localhost".to_owned());
                format!("cmd-{host}-{}", std::process::id())
            }
        }
    }

    fn key_file(&self) -> PathBuf {
        self.auth
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("jwt.json"))
    }
}

/// Flags shared by `server` and `serve`. Each overrides bosun.toml and `BOSUN_*`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Configuration file (TOML). Default: ./bosun.toml when it exists.
    #[arg(long, env = "BOSUN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory for the embedded store, keys and objects [default: ./bosun-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// postgres://… or sqlite://… [default: SQLite file in the data dir].
    #[arg(long)]
    pub database_url: Option<String>,
    /// redis://… [default: the in-process queue].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Log format: pretty or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Flags of `bosun server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Which service `bosun serve` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    /// The public edge with identity; routes other services per `[routes]`; holds the agents'
    /// channels and the sessions' data streams (SessionData).
    Gateway,
    /// bosun.audit.v1.AuditService.
    Audit,
    /// bosun.documents.v1.DocumentService.
    Documents,
    /// bosun.parameters.v1.ParameterService.
    Parameters,
    /// bosun.notifications.v1.NotificationService with its intake and delivery workers.
    Notifications,
    /// bosun.inventory.v1.NodeService and ResourceGroupService (the agent channel itself is
    /// held by the gateway).
    Inventory,
    /// bosun.commands.v1.CommandService with its engine (dispatch, results, timeouts, output,
    /// events); needs redis_url, through which it reaches the gateways' agents.
    Commands,
    /// bosun.sessions.v1.SessionService with its reaper; needs redis_url, through which it
    /// reaches the gateways' agents. The sessions' data streams (SessionData) are served by
    /// the gateways.
    Sessions,
}

/// Flags of `bosun serve <service>`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The service to run.
    pub service: ServiceName,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Loads the configuration: defaults, bosun.toml, `BOSUN_*`, flags.
pub fn load_config(
    args: &CommonArgs,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<ServerConfig> {
    let default_file = Path::new("bosun.toml");
    let file = match &args.config {
        Some(path) => Some(path.as_path()),
        None if default_file.exists() => Some(default_file),
        None => None,
    };
    let mut flags = BTreeMap::new();
    let mut set = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            flags.insert(key.to_owned(), Value::from(value));
        }
    };
    set("listen", args.listen.clone());
    set(
        "data_dir",
        args.data_dir.as_ref().map(|p| p.display().to_string()),
    );
    set("database_url", args.database_url.clone());
    set("redis_url", args.redis_url.clone());
    set("log_format", args.log_format.clone());
    // Variables of the client side and of tests share the prefix but are not server settings.
    let mut env: BTreeMap<String, String> = env
        .iter()
        .filter(|(key, _)| {
            !NOT_SERVER_SETTINGS.contains(&key.as_str())
                && !key.starts_with("BOSUN_TEST_")
                && !key.starts_with("BOSUN_AGENT_")
                && !key.starts_with("BOSUN_ACTIVATION_")
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    // Variables are typed after the defaults, and `[objects]` has none (unset by default):
    // its one boolean is parsed here, so BOSUN_OBJECTS__ALLOW_HTTP=true works like the rest.
    if let Some(raw) = env.remove("BOSUN_OBJECTS__ALLOW_HTTP") {
        let allow: bool = raw
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("objects.allow_http: must be true or false"))?;
        let objects = figment::value::Dict::from([("allow_http".to_owned(), Value::from(allow))]);
        flags.insert("objects".to_owned(), Value::from(objects));
    }
    Ok(bosun_core::config::load(file, &env, &flags)?)
}

/// `BOSUN_*` variables that are not server settings (besides `BOSUN_TEST_*`, and the agent's
/// `BOSUN_AGENT_*` and `BOSUN_ACTIVATION_*`).
const NOT_SERVER_SETTINGS: &[&str] = &[
    "BOSUN_CONFIG",
    "BOSUN_CONFIG_DIR",
    "BOSUN_SERVER",
    "BOSUN_TOKEN",
];

/// What every process starts with: configuration, telemetry, shutdown.
struct Process {
    config: ServerConfig,
    listen: SocketAddr,
    shutdown: CancellationToken,
    tasks: Tasks,
    telemetry: bosun_telemetry::TelemetryGuard,
    metrics: Metrics,
}

impl Process {
    fn start(args: &CommonArgs, name: &str) -> anyhow::Result<Self> {
        let env = bosun_core::config::process_env();
        let config = load_config(args, &env)?;
        let (listen, log_format) = config.validate()?;
        let telemetry = bosun_telemetry::init(&TelemetryConfig {
            service_name: name.to_owned(),
            log_format,
            log_filter: config.log_filter.clone(),
            otlp_endpoint: env
                .get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .filter(|v| !v.is_empty())
                .cloned(),
        })?;
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        Ok(Process {
            listen,
            tasks: Tasks::new(shutdown.clone()),
            shutdown,
            telemetry,
            metrics: Metrics::new(name),
            config,
        })
    }

    async fn open_store(&self) -> anyhow::Result<DatabaseConnection> {
        create_private_dir(&self.config.data_dir)?;
        let db = bosun_store::connect(&self.config.database_url()).await?;
        Ok(db)
    }

    /// The object store of `[objects]` (command output), its local directory created.
    fn open_objects(&self) -> anyhow::Result<Arc<Objects>> {
        let config = self.config.objects();
        if let ObjectStoreConfig::Local { root } = &config {
            create_private_dir(root)?;
        }
        let objects = Objects::open(&config).context("objects")?;
        tracing::info!(
            store = objects.description(),
            "command output is kept in the object store"
        );
        Ok(Arc::new(objects))
    }

    async fn open_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(match &self.config.redis_url {
            Some(url) => Arc::new(
                RedisQueue::connect(url, &self.config.redis_prefix, QueueOptions::default())
                    .await?,
            ),
            None => Arc::new(MemoryQueue::new(QueueOptions::default())),
        })
    }

    /// Serves `router` until shutdown, then drains within `shutdown_grace` and flushes
    /// telemetry last.
    async fn run(self, router: axum::Router) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listen on {}", self.listen))?;
        tracing::info!(address = %listener.local_addr()?, "bosun is listening");
        let shutdown = self.shutdown.clone();
        self.tasks.spawn_critical("grpc-server", async move {
            bosun_gateway::host::serve(listener, router, shutdown).await
        });
        self.shutdown.cancelled().await;
        if !self.tasks.wait(self.config.shutdown_grace).await {
            tracing::warn!(grace = ?self.config.shutdown_grace, "calls still open at the shutdown deadline were cut");
        }
        tracing::info!("bosun stopped");
        self.telemetry.shutdown().await;
        Ok(())
    }
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("create data directory {}", path.display()))
}

/// The gateway's router over `local` services, after the migrations it needs and the
/// first-start bootstrap.
async fn gateway_router(
    process: &Process,
    db: DatabaseConnection,
    audit: AuditLog,
    local: LocalServices,
) -> anyhow::Result<axum::Router> {
    bosun_store::migrate::<bosun_gateway::identity::Migrator>(&db).await?;
    report_bootstrap(bosun_gateway::bootstrap(&db, &audit, admin_password(&process.config)).await?);
    let keys = KeyRing::load_or_create(&process.config.key_file())?;
    bosun_gateway::build(
        &process.config.auth,
        &process.config.routes,
        GatewayDeps {
            db,
            audit,
            keys,
            metrics: process.metrics.clone(),
        },
        local,
    )
    .await
}

/// Runs the all-in-one server.
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let process = Process::start(&args.common, "bosun-server")?;
    let db = process.open_store().await?;
    let queue = process.open_queue().await?;
    bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_documents::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_parameters::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_notifications::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_inventory::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_nodelink::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_commands::Migrator>(&db).await?;
    bosun_store::migrate::<bosun_sessions::Migrator>(&db).await?;
    let audit = AuditLog::new(db.clone());
    let objects = process.open_objects()?;
    let keys = parameter_keys(&process)?;
    let notifications = notification_service(&process, &db, &audit, &queue, keys.clone())?;
    // On its embedded store the all-in-one server is the only writer there is.
    let only_writer = process.config.database_url.is_none();
    let parameters = parameter_service(&process, &db, &audit, &queue, keys, only_writer).await?;
    let link = node_link(&process, &db, &queue).await?;
    let edge = agent_edge(&process, &db, &link);
    let sessions = session_service(&process, &db, &audit, &link, objects.clone());
    let broker = session_broker(&process, &db, &audit, objects.clone(), edge.replica_id()).await?;
    let commands = command_service(&process, &db, &audit, &queue, &link, objects);
    let local = LocalServices {
        routes: Routes::default()
            .add_service(AuditServiceImpl::new(db.clone()).into_server())
            .add_service(DocumentServiceImpl::new(db.clone(), audit.clone()).into_server())
            .add_service(parameters.into_server())
            .add_service(notifications.into_server())
            .add_service(node_service(&process, &db, &audit, &link).into_server())
            .add_service(ResourceGroupServiceImpl::new(db.clone(), audit.clone()).into_server())
            .add_service(commands.into_server())
            .add_service(sessions.into_server())
            .add_service(broker.into_server())
            .add_service(edge.into_server()),
        names: vec![
            AUDIT_SERVICE,
            bosun_documents::SERVICE_NAME,
            bosun_parameters::SERVICE_NAME,
            bosun_notifications::SERVICE_NAME,
            bosun_inventory::NODE_SERVICE_NAME,
            bosun_inventory::GROUP_SERVICE_NAME,
            bosun_commands::SERVICE_NAME,
            bosun_sessions::SERVICE_NAME,
            bosun_sessions::DATA_SERVICE_NAME,
            AGENT_CHANNEL,
        ],
    };
    // This machine as a node, on the embedded store only: with a shared PostgreSQL several
    // servers (sharing a data directory, maybe) would claim one identity.
    if process.config.agents.local_agent && process.config.database_url.is_none() {
        let url = format!("http://{}", loopback(process.listen));
        let state_dir = process.config.data_dir.join("agent");
        let (db, audit, shutdown) = (db.clone(), audit.clone(), process.shutdown.clone());
        process.tasks.spawn("local-agent", async move {
            if let Err(error) = local_agent::run(url, state_dir, db, audit, shutdown).await {
                tracing::error!(error = %format!("{error:#}"), "this machine's agent stopped");
            }
            Ok(())
        });
    }
    let router = gateway_router(&process, db, audit, local).await?;
    process.run(router).await
}

/// The address to dial this process on: `listen`, or loopback when it listens on all
/// interfaces.
fn loopback(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let ip = if listen.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(ip, listen.port())
    } else {
        listen
    }
}

/// Node messaging over this process's queue, with node presence in Redis when there is one
/// (every gateway replica and sender must see it) and in memory otherwise.
async fn node_link(
    process: &Process,
    db: &DatabaseConnection,
    queue: &Arc<dyn Queue>,
) -> anyhow::Result<NodeLink> {
    let presence: Arc<dyn Presence> = match &process.config.redis_url {
        Some(url) => Arc::new(RedisPresence::connect(url, &process.config.redis_prefix).await?),
        None => Arc::new(MemoryPresence::new()),
    };
    Ok(NodeLink::new(db.clone(), queue.clone(), presence))
}

/// The agent channel this gateway process holds, its inbox, ping and re-send work started as
/// a critical task.
fn agent_edge(process: &Process, db: &DatabaseConnection, link: &NodeLink) -> AgentEdge {
    let agents = &process.config.agents;
    let mut options = ChannelOptions {
        heartbeat_interval: agents.heartbeat_interval,
        max_handshakes: agents.max_handshakes,
        ..ChannelOptions::default()
    };
    if let Some(id) = &agents.replica_id {
        options.replica_id = format!("gw-{id}");
    }
    let edge = AgentEdge::new(link.clone(), Arc::new(Directory::new(db.clone())), options);
    let (running, shutdown) = (edge.clone(), process.shutdown.clone());
    process
        .tasks
        .spawn_critical("agent-channel", async move { running.run(shutdown).await });
    // Messages acknowledged or expired a day ago are history; every gateway purges (the
    // deletes are idempotent), so no replica is special.
    let (link, shutdown) = (link.clone(), process.shutdown.clone());
    process.tasks.spawn("node-message-purge", async move {
        let mut every = tokio::time::interval(NODE_MESSAGE_PURGE_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = every.tick() => {}
            }
            let before = chrono::Utc::now() - NODE_MESSAGE_RETENTION;
            match link.purge_settled(before).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "purged settled node messages"),
                Err(error) => tracing::warn!(%error, "purging settled node messages failed"),
            }
        }
    });
    edge
}

/// How long acknowledged or expired node messages are kept, and how often they are purged.
const NODE_MESSAGE_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);
const NODE_MESSAGE_PURGE_EVERY: Duration = Duration::from_secs(600);

/// The CommandService, with this replica's Run Command engine started as a critical task:
/// it sends through `link` (the same node messaging as the agent channel), reads agents'
/// results from `queue` and stores full output in `objects`. SendCommand and CancelCommand
/// wake it. The other services are reached in-process from the shared store.
fn command_service(
    process: &Process,
    db: &DatabaseConnection,
    audit: &AuditLog,
    queue: &Arc<dyn Queue>,
    link: &NodeLink,
    objects: Arc<Objects>,
) -> CommandServiceImpl {
    let config = process.config.commands.clone();
    let replica_id = process.config.command_engine_id();
    tracing::info!(%replica_id, "run command engine");
    let engine = Engine::new(
        db.clone(),
        link.clone(),
        queue.clone(),
        objects.clone(),
        config.clone(),
        replica_id,
    );
    let wake = engine.wake_handle();
    process
        .tasks
        .spawn_critical("command-engine", engine.run(process.shutdown.clone()));
    CommandServiceImpl::new(
        db.clone(),
        audit.clone(),
        Ports::local(db.clone()),
        objects,
        config,
    )
    .with_wake(wake)
}

/// The SessionService, with the reaper (sessions whose agent never attached or whose hub
/// died) started as a critical task. Documents, nodes and parameters are read in-process from
/// the shared store, as Run Command does.
fn session_service(
    process: &Process,
    db: &DatabaseConnection,
    audit: &AuditLog,
    link: &NodeLink,
    objects: Arc<Objects>,
) -> SessionServiceImpl {
    let config = process.config.sessions.clone();
    let reaper = Reaper::new(
        SessionStore::new(db.clone(), audit.clone(), config.clone()),
        config.clone(),
    );
    process
        .tasks
        .spawn_critical("session-reaper", reaper.run(process.shutdown.clone()));
    SessionServiceImpl::new(
        db.clone(),
        audit.clone(),
        link.clone(),
        objects,
        config,
        Ports::local(db.clone()),
    )
}

/// The session broker (`SessionData`) of this gateway process, under the agent edge's replica
/// id; relayed through Redis to the other replicas when there is one. On shutdown it closes
/// its streams without ending the sessions, so agents re-attach to another replica and
/// clients resume there instead of holding the drain up.
async fn session_broker(
    process: &Process,
    db: &DatabaseConnection,
    audit: &AuditLog,
    objects: Arc<Objects>,
    replica_id: &str,
) -> anyhow::Result<Broker> {
    let redis = process.config.redis_url.as_ref().map(|url| RelayRedis {
        url: url.clone(),
        prefix: process.config.redis_prefix.clone(),
    });
    let broker = Broker::start(
        SessionStore::new(db.clone(), audit.clone(), process.config.sessions.clone()),
        Arc::new(Directory::new(db.clone())),
        objects,
        process.config.sessions.clone(),
        replica_id.to_owned(),
        redis,
    )
    .await
    .map_err(|error| anyhow::anyhow!("session broker: {error}"))?;
    let (stopping, shutdown) = (broker.clone(), process.shutdown.clone());
    process.tasks.spawn("session-broker-shutdown", async move {
        shutdown.cancelled().await;
        stopping.shutdown().await;
        Ok(())
    });
    Ok(broker)
}

fn node_service(
    process: &Process,
    db: &DatabaseConnection,
    audit: &AuditLog,
    link: &NodeLink,
) -> NodeServiceImpl {
    NodeServiceImpl::new(db.clone(), audit.clone(), Arc::new(link.clone()))
        .with_ping_timeout(process.config.agents.ping_timeout)
}

/// Runs one service on its own.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    match args.service {
        ServiceName::Gateway => {
            let process = Process::start(&args.common, "bosun-gateway")?;
            let db = process.open_store().await?;
            let queue = process.open_queue().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            // The agent channel reads node keys and records pings in inventory's tables.
            bosun_store::migrate::<bosun_inventory::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_nodelink::Migrator>(&db).await?;
            // The session broker changes session rows and writes transcripts.
            bosun_store::migrate::<bosun_sessions::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let objects = process.open_objects()?;
            let link = node_link(&process, &db, &queue).await?;
            let edge = agent_edge(&process, &db, &link);
            // Gateways hold both ends of every session (the agent's Attach and the client's
            // Connect), as they hold the agents' channels.
            let broker = session_broker(&process, &db, &audit, objects, edge.replica_id()).await?;
            let local = LocalServices {
                routes: Routes::default()
                    .add_service(edge.into_server())
                    .add_service(broker.into_server()),
                names: vec![AGENT_CHANNEL, bosun_sessions::DATA_SERVICE_NAME],
            };
            let router = gateway_router(&process, db, audit, local).await?;
            process.run(router).await
        }
        ServiceName::Audit => {
            let process = Process::start(&args.common, "bosun-audit")?;
            let db = process.open_store().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            let routes = Routes::default().add_service(AuditServiceImpl::new(db).into_server());
            run_standalone(process, routes, AUDIT_SERVICE).await
        }
        ServiceName::Documents => {
            let process = Process::start(&args.common, "bosun-documents")?;
            let db = process.open_store().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_documents::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let routes =
                Routes::default().add_service(DocumentServiceImpl::new(db, audit).into_server());
            run_standalone(process, routes, bosun_documents::SERVICE_NAME).await
        }
        ServiceName::Parameters => {
            let process = Process::start(&args.common, "bosun-parameters")?;
            let db = process.open_store().await?;
            let queue = process.open_queue().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_parameters::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let routes = Routes::default().add_service(
                parameter_service(
                    &process,
                    &db,
                    &audit,
                    &queue,
                    parameter_keys(&process)?,
                    false,
                )
                .await?
                .into_server(),
            );
            run_standalone(process, routes, bosun_parameters::SERVICE_NAME).await
        }
        ServiceName::Inventory => {
            let process = Process::start(&args.common, "bosun-inventory")?;
            let db = process.open_store().await?;
            let queue = process.open_queue().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_inventory::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_nodelink::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let link = node_link(&process, &db, &queue).await?;
            let routes = Routes::default()
                .add_service(node_service(&process, &db, &audit, &link).into_server())
                .add_service(ResourceGroupServiceImpl::new(db, audit).into_server());
            run_standalone(process, routes, bosun_inventory::NODE_SERVICE_NAME).await
        }
        ServiceName::Commands => {
            let process = Process::start(&args.common, "bosun-commands")?;
            if process.config.redis_url.is_none() {
                anyhow::bail!(
                    "redis_url: `bosun serve commands` needs Redis: messages to nodes and their \
                     results pass between it and the gateways there"
                );
            }
            let db = process.open_store().await?;
            let queue = process.open_queue().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            // It reads documents, nodes, parameters and webhooks from their owners' tables.
            bosun_store::migrate::<bosun_documents::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_parameters::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_notifications::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_inventory::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_nodelink::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_commands::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let objects = process.open_objects()?;
            let link = node_link(&process, &db, &queue).await?;
            let routes = Routes::default().add_service(
                command_service(&process, &db, &audit, &queue, &link, objects).into_server(),
            );
            run_standalone(process, routes, bosun_commands::SERVICE_NAME).await
        }
        ServiceName::Sessions => {
            let process = Process::start(&args.common, "bosun-sessions")?;
            if process.config.redis_url.is_none() {
                anyhow::bail!(
                    "redis_url: `bosun serve sessions` needs Redis: messages to nodes pass \
                     between it and the gateways there"
                );
            }
            let db = process.open_store().await?;
            let queue = process.open_queue().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            // It reads documents, nodes and parameters from their owners' tables.
            bosun_store::migrate::<bosun_documents::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_parameters::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_notifications::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_inventory::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_nodelink::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_sessions::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let objects = process.open_objects()?;
            let link = node_link(&process, &db, &queue).await?;
            let routes = Routes::default()
                .add_service(session_service(&process, &db, &audit, &link, objects).into_server());
            run_standalone(process, routes, bosun_sessions::SERVICE_NAME).await
        }
        ServiceName::Notifications => {
            let process = Process::start(&args.common, "bosun-notifications")?;
            let db = process.open_store().await?;
            let queue = process.open_queue().await?;
            bosun_store::migrate::<bosun_audit::Migrator>(&db).await?;
            bosun_store::migrate::<bosun_notifications::Migrator>(&db).await?;
            let audit = AuditLog::new(db.clone());
            let keys = parameter_keys(&process)?;
            let routes = Routes::default().add_service(
                notification_service(&process, &db, &audit, &queue, keys)?.into_server(),
            );
            run_standalone(process, routes, bosun_notifications::SERVICE_NAME).await
        }
    }
}

/// The ParameterService with its change events, and its policy worker started as a critical
/// task (it deletes expired parameters and sends policy notifications).
async fn parameter_service(
    process: &Process,
    db: &DatabaseConnection,
    audit: &AuditLog,
    queue: &Arc<dyn Queue>,
    keys: Arc<KeySource>,
    only_writer: bool,
) -> anyhow::Result<ParameterServiceImpl> {
    let mut worker = PolicyWorker::new(
        db.clone(),
        audit.clone(),
        Some(queue.clone()),
        Arc::new(SystemClock),
    );
    let mut service = ParameterServiceImpl::new(db.clone(), audit.clone(), keys.current())
        .with_key_source(keys)
        .with_events(queue.clone())
        .with_policy_wake(worker.wake_handle());
    if let Some(cache) = parameter_cache(&process.config, only_writer).await? {
        worker = worker.with_cache(cache.clone());
        service = service.with_cache(cache.clone());
        // Gives the cache's lease up on shutdown, so other replicas' writes do not wait
        // for this process until its lease runs out.
        let shutdown = process.shutdown.clone();
        process.tasks.spawn("parameter-cache-lease", async move {
            shutdown.cancelled().await;
            cache.release().await;
            Ok(())
        });
    }
    let shutdown = process.shutdown.clone();
    process
        .tasks
        .spawn_critical("parameter-policies", async move {
            worker.run(shutdown).await;
            Ok(())
        });
    // Publishes change events a queue outage or a crash left in the outbox.
    let relay = service.event_relay();
    let shutdown = process.shutdown.clone();
    process
        .tasks
        .spawn_critical("parameter-events", async move {
            relay.run_relay(EVENT_RELAY_EVERY, shutdown).await;
            Ok(())
        });
    Ok(service)
}

/// How often the parameter change event relay looks for events left unpublished.
const EVENT_RELAY_EVERY: Duration = Duration::from_secs(1);

/// The Parameter Store master key ring (`parameters.key_file`), created on first start and
/// re-read when the file changes (a rotation). The notifications service seals webhook
/// secrets with the same ring.
fn parameter_keys(process: &Process) -> anyhow::Result<Arc<KeySource>> {
    Ok(Arc::new(KeySource::from_file(
        &process.config.parameters_key_file(),
    )?))
}

/// The NotificationService, with its intake worker (change events of `queue` → deliveries)
/// and delivery worker (signed POSTs with retries) started as critical tasks. `keys` is the
/// Parameter Store ring, which seals the webhooks' signing secrets.
fn notification_service(
    process: &Process,
    db: &DatabaseConnection,
    audit: &AuditLog,
    queue: &Arc<dyn Queue>,
    keys: Arc<KeySource>,
) -> anyhow::Result<NotificationServiceImpl> {
    let config = process.config.notifications.clone();
    let delivery = DeliveryWorker::new(db.clone(), keys.current(), config.clone())?
        .with_key_source(keys.clone());
    let intake =
        IntakeWorker::new(db.clone(), queue.clone(), config).with_wake(delivery.wake_handle());
    let shutdown = process.shutdown.clone();
    process
        .tasks
        .spawn_critical("notification-intake", intake.run(shutdown.clone()));
    process
        .tasks
        .spawn_critical("notification-delivery", delivery.run(shutdown));
    Ok(
        NotificationServiceImpl::new(db.clone(), audit.clone(), keys.current())
            .with_key_source(keys),
    )
}

/// The parameter read cache `config` asks for: kept exact through Redis when there is one;
/// in-process only when this process is the only one writing parameters (`only_writer`: the
/// all-in-one server on its embedded store).
async fn parameter_cache(
    config: &ServerConfig,
    only_writer: bool,
) -> anyhow::Result<Option<ReadCache>> {
    let max_bytes = config.parameters.cache_max_bytes;
    if max_bytes == 0 {
        return Ok(None);
    }
    match &config.redis_url {
        Some(url) => Ok(Some(
            ReadCache::redis(url, &config.redis_prefix, max_bytes)
                .await
                .map_err(|error| anyhow::anyhow!("parameters read cache: {error}"))?,
        )),
        None if only_writer => Ok(Some(ReadCache::local(max_bytes))),
        None => {
            tracing::info!(
                "parameters read cache off: without redis_url other replicas could not tell \
                 this one of their writes"
            );
            Ok(None)
        }
    }
}

/// Serves `routes` on their own, verifying the gateway's internal tokens with the public keys
/// of its key ring.
async fn run_standalone(
    process: Process,
    routes: Routes,
    name: &'static str,
) -> anyhow::Result<()> {
    let key_file = process.config.key_file();
    let keys = KeyRing::load(&key_file).with_context(|| {
        format!(
            "read the gateway's key ring {} (auth.key_file)",
            key_file.display()
        )
    })?;
    let verifier = Arc::new(TokenVerifier::new(
        &keys.verifying_keys(),
        &process.config.auth.issuer,
    )?);
    let inner = bosun_gateway::host::service_router(routes, verifier, &[name]).await?;
    let router = bosun_gateway::host::standalone_router(inner, process.metrics.clone());
    process.run(router).await
}

/// Flags of `bosun rotate-parameter-key`.
#[derive(clap::Args, Debug)]
pub struct RotateKeyArgs {
    /// The new master key id, added to the key ring when missing and made its default,
    /// e.g. alias/bosun/parameters-2027.
    pub new_key_id: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Adds `new_key_id` to the SecureString key ring (as its default), then re-wraps every
/// stored data key under it, webhook signing secrets included. Old keys stay in the ring.
/// Running processes that share the key file re-read it (new writes move to the new key
/// within seconds, re-wrapped values keep decrypting); a crashed run is simply run again.
pub async fn run_rotate_parameter_key(args: RotateKeyArgs) -> anyhow::Result<()> {
    let config = load_config(&args.common, &bosun_core::config::process_env())?;
    config.validate()?;
    let path = config.parameters_key_file();
    let mut ring = MasterKeyRing::load_or_create(&path)?;
    if !ring.contains(&args.new_key_id) {
        ring.generate(&args.new_key_id)?;
    }
    ring.set_default_key_id(&args.new_key_id)?;
    write_private_file(&path, ring.to_json().expose_secret().as_bytes())?;
    let db = bosun_store::connect(&config.database_url()).await?;
    bosun_store::migrate::<bosun_parameters::Migrator>(&db).await?;
    let report = bosun_parameters::rotate_master_key(&db, &ring, &args.new_key_id).await?;
    println!(
        "re-wrapped {} SecureString versions under {} ({} were already); processes using {} pick the new key up by themselves",
        report.rewrapped,
        args.new_key_id,
        report.already_current,
        path.display()
    );
    // Webhook signing secrets are sealed with the same ring: move them too, so the old key
    // can leave the ring some day without breaking a webhook.
    bosun_store::migrate::<bosun_notifications::Migrator>(&db).await?;
    let webhooks =
        bosun_notifications::rewrap_webhook_secrets(&db, &ring, &args.new_key_id).await?;
    println!(
        "re-wrapped {} webhook signing secrets under {} ({} were already)",
        webhooks.rewrapped, args.new_key_id, webhooks.already_current
    );
    Ok(())
}

/// Replaces `path` with `bytes` through a 0600 temporary file and a rename, so the key file
/// is never half written nor readable by others.
fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("write {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

fn admin_password(config: &ServerConfig) -> Option<SecretString> {
    config
        .admin_password
        .as_ref()
        .map(|secret| secret.0.clone())
}

fn report_bootstrap(outcome: Bootstrap) {
    match outcome {
        Bootstrap::AlreadyInitialised => {}
        Bootstrap::CreatedAdmin => {
            tracing::info!(
                "first start: created user admin with the password from BOSUN_ADMIN_PASSWORD"
            );
        }
        Bootstrap::CreatedAdminWithGeneratedPassword(password) => {
            // Shown once, on the terminal only: never through tracing, which may ship logs.
            eprintln!(
                "\n  First start: created user `admin` with password\n\n      {}\n\n  It is shown only this once. Log in with `bosun login`, then change it with `bosun users passwd`.\n",
                password.expose_secret()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> CommonArgs {
        CommonArgs {
            config: None,
            listen: None,
            data_dir: None,
            database_url: None,
            redis_url: None,
            log_format: None,
        }
    }

    #[test]
    fn agent_settings_are_checked_and_agent_variables_are_not_settings() -> anyhow::Result<()> {
        let load = |pairs: &[(&str, &str)]| {
            let env: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            load_config(&args(), &env).and_then(|config| config.validate().map(|_| config))
        };
        // The agent's own variables may share the environment with a server.
        let config = load(&[
            ("BOSUN_AGENT_STATE_DIR", "/var/lib/bosun-agent"),
            ("BOSUN_ACTIVATION_CODE", "bac_x"),
            ("BOSUN_AGENTS__REPLICA_ID", "gateway-1"),
        ])?;
        assert_eq!(config.agents.replica_id.as_deref(), Some("gateway-1"));
        for (key, value, field) in [
            ("BOSUN_AGENTS__REPLICA_ID", "a/b", "agents.replica_id"),
            (
                "BOSUN_AGENTS__HEARTBEAT_INTERVAL",
                "0s",
                "agents.heartbeat_interval",
            ),
            ("BOSUN_AGENTS__PING_TIMEOUT", "31s", "agents.ping_timeout"),
            ("BOSUN_AGENTS__MAX_HANDSHAKES", "0", "agents.max_handshakes"),
        ] {
            let error = load(&[(key, value)]).expect_err(key).to_string();
            assert!(error.contains(field), "{key}={value}: {error}");
        }
        Ok(())
    }

    #[test]
    fn environment_names_from_the_readme_apply() -> anyhow::Result<()> {
        let env = BTreeMap::from([
            ("BOSUN_LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            (
                "BOSUN_DATABASE_URL".to_string(),
                "postgres://postgres@127.0.0.1/test".to_string(),
            ),
            (
                "BOSUN_REDIS_URL".to_string(),
                "redis://127.0.0.1:6379".to_string(),
            ),
            (
                "BOSUN_ADMIN_PASSWORD".to_string(),
                "123456789012".to_string(),
            ),
            ("BOSUN_AUTH__CACHE_TTL".to_string(), "5s".to_string()),
        ]);
        let config = load_config(&args(), &env)?;
        config.validate()?;
        assert_eq!(config.listen, "127.0.0.1:9999");
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://postgres@127.0.0.1/test")
        );
        assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(
            admin_password(&config)
                .map(|p| p.expose_secret().to_owned())
                .as_deref(),
            Some("123456789012")
        );
        assert_eq!(config.auth.cache_ttl, Duration::from_secs(5));
        Ok(())
    }

    #[test]
    fn flags_beat_the_environment() -> anyhow::Result<()> {
        let env = BTreeMap::from([("BOSUN_LISTEN".to_string(), "127.0.0.1:9999".to_string())]);
        let mut flags = args();
        flags.listen = Some("127.0.0.1:1234".into());
        assert_eq!(load_config(&flags, &env)?.listen, "127.0.0.1:1234");
        Ok(())
    }

    #[test]
    fn invalid_settings_are_named() -> anyhow::Result<()> {
        let env = BTreeMap::from([("BOSUN_LISTEN".to_string(), "everywhere".to_string())]);
        let error = load_config(&args(), &env)?
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("listen:"), "{error}");
        let env = BTreeMap::from([("BOSUN_AUTH__CACHE_TTL".to_string(), "5m".to_string())]);
        let error = load_config(&args(), &env)?
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("auth.cache_ttl:"), "{error}");
        let env = BTreeMap::from([("BOSUN_REDIS_PREFIX".to_string(), "bosun *".to_string())]);
        let error = load_config(&args(), &env)?
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("redis_prefix:"), "{error}");
        let env = BTreeMap::from([("BOSUN_NO_SUCH_SETTING".to_string(), "1".to_string())]);
        assert!(load_config(&args(), &env).is_err());
        Ok(())
    }

    #[test]
    fn commands_and_objects_settings_load_and_are_checked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let load = |text: &str| -> anyhow::Result<ServerConfig> {
            let path = dir.path().join("bosun.toml");
            std::fs::write(&path, text)?;
            let mut flags = args();
            flags.config = Some(path);
            let config = load_config(&flags, &BTreeMap::new())?;
            config.validate()?;
            Ok(config)
        };
        // Unset: output in the data directory.
        let config = load("data_dir = \"/srv/bosun\"\n")?;
        let ObjectStoreConfig::Local { root } = config.objects() else {
            anyhow::bail!("not local: {:?}", config.objects());
        };
        assert_eq!(root, Path::new("/srv/bosun/objects"));
        let config = load(
            "[commands]\nlease = \"1m\"\n[objects]\nkind = \"s3\"\nbucket = \"out\"\n\
             region = \"eu-west-1\"\nsecret_access_key = \"very-secret\"\naccess_key_id = \"AK\"\n",
        )?;
        assert_eq!(config.commands.lease, Duration::from_secs(60));
        assert!(
            matches!(config.objects(), ObjectStoreConfig::S3 { ref bucket, .. } if bucket == "out")
        );
        // The S3 secret never leaves in a serialization of the settings.
        assert!(!serde_json::to_string(&config)?.contains("very-secret"));
        let error = load("[commands]\nlease = \"1s\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("commands.lease:"), "{error}");
        assert!(load("[objects]\nkind = \"tape\"\n").is_err());
        // From the environment too, booleans included.
        let env = BTreeMap::from(
            [
                ("BOSUN_OBJECTS__KIND", "s3"),
                ("BOSUN_OBJECTS__BUCKET", "out"),
                ("BOSUN_OBJECTS__REGION", "us-east-1"),
                ("BOSUN_OBJECTS__ENDPOINT", "http://127.0.0.1:9000"),
                ("BOSUN_OBJECTS__ALLOW_HTTP", "true"),
                ("BOSUN_COMMANDS__DISPATCH_BATCH", "10"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let config = load_config(&args(), &env)?;
        config.validate()?;
        assert_eq!(config.commands.dispatch_batch, 10);
        assert!(matches!(
            config.objects(),
            ObjectStoreConfig::S3 {
                allow_http: true,
                ..
            }
        ));
        // The engine's name: from agents.replica_id, else host and process.
        let config = load("[agents]\nreplica_id = \"node-7\"\n")?;
        assert_eq!(config.command_engine_id(), "cmd-node-7");
        let config = load("")?;
        let id = config.command_engine_id();
        assert!(
            id.starts_with("cmd-") && id.ends_with(&format!("-{}", std::process::id())),
            "{id}"
        );
        Ok(())
    }

    #[test]
    fn session_settings_load_and_are_checked() -> anyhow::Result<()> {
        let load = |pairs: &[(&str, &str)]| {
            let env: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            load_config(&args(), &env).and_then(|config| config.validate().map(|_| config))
        };
        assert_eq!(load(&[])?.sessions, SessionsConfig::default());
        let config = load(&[
            ("BOSUN_SESSIONS__TIME_UNIT", "2s"),
            ("BOSUN_SESSIONS__HUB_TOUCH_INTERVAL", "500ms"),
            ("BOSUN_SESSIONS__HUB_LOST_AFTER", "3s"),
            ("BOSUN_SESSIONS__RECORD_INPUT", "true"),
        ])?;
        assert_eq!(config.sessions.minutes(20), Duration::from_secs(40));
        assert!(config.sessions.record_input);
        for (key, value, field) in [
            ("BOSUN_SESSIONS__TIME_UNIT", "0s", "sessions.time_unit"),
            (
                "BOSUN_SESSIONS__HUB_LOST_AFTER",
                "6s",
                "sessions.hub_lost_after",
            ),
            ("BOSUN_SESSIONS__TOKEN_TTL", "2h", "sessions.token_ttl"),
        ] {
            let error = load(&[(key, value)]).expect_err(key).to_string();
            assert!(error.starts_with(field), "{key}={value}: {error}");
        }
        Ok(())
    }

    #[test]
    fn secrets_do_not_serialize() -> anyhow::Result<()> {
        let config = ServerConfig {
            admin_password: Some(Secret(SecretString::from("hunter2hunter2"))),
            ..ServerConfig::default()
        };
        let json = serde_json::to_string(&config)?;
        assert!(!json.contains("hunter2"));
        Ok(())
    }
}

#[cfg(test)]
mod example_config {
    use super::*;

    /// The documented example parses, and so does every commented-out setting in it, so the
    /// documentation cannot drift from the settings the server accepts.
    #[test]
    fn the_example_config_documents_real_settings() -> anyhow::Result<()> {
        let example = include_str!("../../deploy/bosun.example.toml");
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.contains(' ')
                            && (key.starts_with('"')
                                || key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                    }) =>
                {
                    rest.to_owned()
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, example, "nothing was uncommented");
        let dir = tempfile::tempdir()?;
        for (name, text) in [("plain.toml", example), ("full.toml", uncommented.as_str())] {
            let path = dir.path().join(name);
            std::fs::write(&path, text)?;
            let args = CommonArgs {
                config: Some(path),
                listen: None,
                data_dir: None,
                database_url: None,
                redis_url: None,
                log_format: None,
            };
            let config = load_config(&args, &BTreeMap::new())?;
            config.validate()?;
            // The documented values are the defaults.
            assert_eq!(config.commands, CommandsConfig::default());
            assert_eq!(config.sessions, SessionsConfig::default());
            if name == "full.toml" {
                assert!(config.database_url.is_some() && config.redis_url.is_some());
                assert!(config.admin_password.is_some() && config.auth.key_file.is_some());
                assert!(config.parameters.key_file.is_some());
                assert_eq!(config.notifications, NotificationsConfig::default());
                assert_eq!(config.routes.len(), 1);
            }
        }
        Ok(())
    }
}
