//! `bosun.commands.v1.CommandService`. H3 fills this in.

use std::sync::Arc;

use bosun_audit::AuditLog;
use bosun_core::time::Clock;
use bosun_objects::Objects;
use bosun_proto::commands::v1 as pb;
use pb::command_service_server::{CommandService, CommandServiceServer};
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::{CommandsConfig, Ports};

/// The RPCs of Run Command.
#[allow(dead_code)]
pub struct CommandServiceImpl {
    db: DatabaseConnection,
    audit: AuditLog,
    ports: Ports,
    objects: Arc<Objects>,
    config: CommandsConfig,
    wake: Option<Arc<Notify>>,
    clock: Arc<dyn Clock>,
}

impl CommandServiceImpl {
    pub fn new(
        db: DatabaseConnection,
        audit: AuditLog,
        ports: Ports,
        objects: Arc<Objects>,
        config: CommandsConfig,
    ) -> Self {
        Self {
            db,
            audit,
            ports,
            objects,
            config,
            wake: None,
            clock: Arc::new(bosun_core::time::SystemClock),
        }
    }

    /// Notified after SendCommand and CancelCommand (the local [`crate::Engine::wake_handle`]).
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn into_server(self) -> CommandServiceServer<Self> {
        CommandServiceServer::new(self)
    }
}

type OutputStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::GetCommandOutputResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl CommandService for CommandServiceImpl {
    async fn send_command(
        &self,
        _request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::SendCommandResponse>, Status> {
        Err(Status::unimplemented("SendCommand"))
    }

    async fn list_commands(
        &self,
        _request: Request<pb::ListCommandsRequest>,
    ) -> Result<Response<pb::ListCommandsResponse>, Status> {
        Err(Status::unimplemented("ListCommands"))
    }

    async fn list_command_invocations(
        &self,
        _request: Request<pb::ListCommandInvocationsRequest>,
    ) -> Result<Response<pb::ListCommandInvocationsResponse>, Status> {
        Err(Status::unimplemented("ListCommandInvocations"))
    }

    async fn get_command_invocation(
        &self,
        _request: Request<pb::GetCommandInvocationRequest>,
    ) -> Result<Response<pb::GetCommandInvocationResponse>, Status> {
        Err(Status::unimplemented("GetCommandInvocation"))
    }

    async fn cancel_command(
        &self,
        _request: Request<pb::CancelCommandRequest>,
    ) -> Result<Response<pb::CancelCommandResponse>, Status> {
        Err(Status::unimplemented("CancelCommand"))
    }

    type GetCommandOutputStream = OutputStream;

    async fn get_command_output(
        &self,
        _request: Request<pb::GetCommandOutputRequest>,
    ) -> Result<Response<Self::GetCommandOutputStream>, Status> {
        Err(Status::unimplemented("GetCommandOutput"))
    }
}
