//! The running of commands (see the crate docs). H2 fills this in.

pub mod events;

use std::sync::Arc;

use bosun_core::time::Clock;
use bosun_nodelink::NodeLink;
use bosun_objects::Objects;
use bosun_queue::Queue;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::CommandsConfig;

/// Dispatcher, result consumer, reconciler, output worker and event relay of one replica.
pub struct Engine {
    #[allow(dead_code)]
    db: DatabaseConnection,
    #[allow(dead_code)]
    link: NodeLink,
    #[allow(dead_code)]
    queue: Arc<dyn Queue>,
    #[allow(dead_code)]
    objects: Arc<Objects>,
    #[allow(dead_code)]
    config: CommandsConfig,
    #[allow(dead_code)]
    replica_id: String,
    wake: Arc<Notify>,
    #[allow(dead_code)]
    clock: Arc<dyn Clock>,
}

impl Engine {
    /// An engine over the commands tables in `db` (migrated), sending through `link`, reading
    /// results from `queue`, storing output in `objects`. `replica_id` names this replica in
    /// leases and consumer names; it must differ between replicas running at once.
    pub fn new(
        db: DatabaseConnection,
        link: NodeLink,
        queue: Arc<dyn Queue>,
        objects: Arc<Objects>,
        config: CommandsConfig,
        replica_id: impl Into<String>,
    ) -> Self {
        Self {
            db,
            link,
            queue,
            objects,
            config,
            replica_id: replica_id.into(),
            wake: Arc::new(Notify::new()),
            clock: Arc::new(bosun_core::time::SystemClock),
        }
    }

    /// Notified by the service after SendCommand and CancelCommand so work starts at once.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs every worker until `shutdown`; an error of one ends all (a critical task).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}
