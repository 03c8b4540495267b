//! `bosun.sessions.v1.SessionService`: validate → authorize → change and audit in one
//! transaction. StartSession writes the session row and the agent's `sessions.start` message
//! in the same transaction (the message is pushed after commit); TerminateSession ends the row
//! and stages `sessions.terminate` likewise. Reads check `sessions:<Rpc>` as `sessions.proto`
//! says, deny by default.
//!
//! DescribeSessions: a caller allowed `sessions:DescribeSessions` on `session:*` sees every
//! session; any other caller sees the sessions it started (self-service, as own passwords
//! and API keys are), unless a policy explicitly denies it the action.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_audit::{AuditLog, AuditOutcome, AuditRecord};
use bosun_auth::{AuthContext, Decision, auth_context};
use bosun_commands::Ports;
use bosun_core::ApiError;
use bosun_nodelink::{NodeLink, Outbound};
use bosun_objects::Objects;
use bosun_proto::sessions::v1 as pb;
use bosun_session::wire;
use chrono::{DateTime, TimeDelta, Utc};
use pb::session_service_server::{SessionService, SessionServiceServer};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tonic::{Request, Response, Status};

use crate::SessionsConfig;
use crate::entities::session;
use crate::plan::{self, PlanInput, SessionPlan};
use crate::store::{self, SessionEnd, SessionStatus, SessionStore, session_missing, to_u64};
use crate::transcript::{export_asciicast, transcript_prefix};
use crate::validate::{
    self, INVALID_DOCUMENT, PageToken, State, TARGET_NOT_CONNECTED, VALIDATION, invalid,
};

/// Where clients open the data stream, relative to the gateway they called.
const STREAM_PATH: &str = "/bosun.sessions.v1.SessionData/Connect";
/// The OS user of sessions whose document does not enable run-as.
const DEFAULT_RUN_AS: &str = "bosun-user";
/// History lists sessions that ended within this long.
const HISTORY_DAYS: i64 = 30;
/// A `sessions.terminate` not delivered within this long is dropped (the agent ends a session
/// whose stream closes anyway).
const TERMINATE_MESSAGE_TTL: Duration = Duration::from_secs(600);
/// Largest `data` of one TranscriptChunk (whole lines; a longer line goes alone).
const MAX_TRANSCRIPT_CHUNK: usize = 64 * 1024;

/// `bosun.sessions.v1.SessionService`.
pub struct SessionServiceImpl {
    audit: AuditLog,
    link: NodeLink,
    objects: Arc<Objects>,
    config: SessionsConfig,
    ports: Ports,
    store: SessionStore,
    db: DatabaseConnection,
}

impl std::fmt::Debug for SessionServiceImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionServiceImpl").finish_non_exhaustive()
    }
}

impl SessionServiceImpl {
    pub fn new(
        db: DatabaseConnection,
        audit: AuditLog,
        link: NodeLink,
        objects: Arc<Objects>,
        config: SessionsConfig,
        ports: Ports,
    ) -> Self {
        let store = SessionStore::new(db.clone(), audit.clone(), config.clone());
        Self {
            audit,
            link,
            objects,
            config,
            ports,
            store,
            db,
        }
    }

    pub fn into_server(self) -> SessionServiceServer<Self> {
        SessionServiceServer::new(self)
    }
}

type TranscriptStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::TranscriptChunk, Status>> + Send>>;

fn action(rpc: &str) -> String {
    format!("sessions:{rpc}")
}

fn session_resource(id: &str) -> String {
    format!("session:{id}")
}

fn no_tags() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn chrono_delta(duration: Duration) -> TimeDelta {
    store::chrono_duration(duration)
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    bosun_core::time::to_timestamp(at)
}

/// Splits `data` into chunks of whole lines of at most `limit` bytes (a longer line alone).
fn line_chunks(data: &[u8], limit: usize) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    for line in data.split_inclusive(|byte| *byte == b'\n') {
        if !current.is_empty() && current.len() + line.len() > limit {
            chunks.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(line);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

// ---- StartSession -----------------------------------------------------------------------------

impl SessionServiceImpl {
    async fn denied(&self, record: AuditRecord, error: ApiError) -> ApiError {
        if let Err(audit_error) = self
            .audit
            .record(record.outcome(AuditOutcome::Denied))
            .await
        {
            return audit_error;
        }
        error
    }

    async fn start(
        &self,
        request: &Request<pb::StartSessionRequest>,
        caller: &AuthContext,
    ) -> Result<pb::StartSessionResponse, ApiError> {
        let body = request.get_ref();
        validate::target("target", &body.target)?;
        let document_name = validate::document_name("document_name", &body.document_name)?;
        validate::reason("reason", &body.reason)?;
        if !body.run_as.is_empty() {
            validate::run_as("run_as", &body.run_as)?;
        }
        validate::parameters(body.parameters.keys())?;
        let wire_parameters: BTreeMap<String, Vec<String>> = body
            .parameters
            .iter()
            .map(|(name, values)| (name.clone(), values.values.clone()))
            .collect();

        let mut random = [0u8; 9];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| ApiError::internal("sessions: the system random generator failed"))?;
        let session_id = validate::new_session_id(caller.principal.name(), &random);
        let start_action = action("StartSession");
        let audit_details = |document: &str, run_as: &str, session_type: &str| {
            serde_json::json!({
                "node_id": body.target,
                "document_name": document,
                "session_type": session_type,
                "reason": body.reason,
                "run_as": run_as,
                // Names only: values may be secrets typed at the command line.
                "parameters": wire_parameters.keys().collect::<Vec<_>>(),
            })
        };
        let record = AuditRecord::for_request(
            request,
            caller,
            &start_action,
            &session_resource(&session_id),
        );

        // The node: its tags decide the policy; whether it exists is told only to callers
        // allowed to start sessions there.
        let node = self
            .ports
            .nodes
            .get(std::slice::from_ref(&body.target))
            .await?
            .into_iter()
            .next();
        let tags = node
            .as_ref()
            .map(|node| node.tags.clone())
            .unwrap_or_default();
        if let Err(error) = caller.authorize(&start_action, &format!("node:{}", body.target), &tags)
        {
            let record = record.details(audit_details(&document_name, &body.run_as, ""));
            return Err(self.denied(record, error.into()).await);
        }
        let node = match node {
            Some(node) if node.registered => node,
            Some(_) => {
                return Err(invalid(
                    "target",
                    format!("node {} is deregistered", body.target),
                    VALIDATION,
                ));
            }
            None => {
                return Err(invalid(
                    "target",
                    format!("{} is not a registered node", body.target),
                    VALIDATION,
                ));
            }
        };

        // The document, read with the caller's rights, then the right to start it.
        let fetched = match self
            .ports
            .documents
            .fetch(caller, &document_name, None)
            .await
        {
            Ok(fetched) => fetched,
            Err(error @ ApiError::PermissionDenied(_)) => {
                let record = record.details(audit_details(&document_name, &body.run_as, ""));
                return Err(self.denied(record, error).await);
            }
            Err(ApiError::NotFound { message, .. }) => {
                return Err(invalid("document_name", message, INVALID_DOCUMENT));
            }
            Err(other) => return Err(other),
        };
        if let Err(error) = caller.authorize(
            &start_action,
            &format!("document:{}", fetched.name),
            &no_tags(),
        ) {
            let record = record.details(audit_details(&fetched.name, &body.run_as, ""));
            return Err(self.denied(record, error.into()).await);
        }
        let now = Utc::now();
        let plan = plan::plan(
            &self.ports,
            caller,
            &PlanInput {
                name: &fetched.name,
                document: &fetched.document,
                parameters: &wire_parameters,
                platform_type: &node.platform_type,
                now,
                record_input_default: self.config.record_input,
            },
        )
        .await?;

        let run_as = match self.run_as(caller, &fetched.name, &plan, &body.run_as) {
            Ok(run_as) => run_as,
            Err(error @ ApiError::PermissionDenied(_)) => {
                let record = record.details(audit_details(
                    &fetched.name,
                    &body.run_as,
                    plan.session_type,
                ));
                return Err(self.denied(record, error).await);
            }
            Err(error) => return Err(error),
        };

        if !self.link.is_connected(&node.id).await {
            return Err(ApiError::failed_precondition(format!(
                "start session on node {}: its agent is not connected",
                node.id
            ))
            .with_reason(TARGET_NOT_CONNECTED));
        }

        let (token, token_hash) = store::new_token()?;
        let attach_by = now + chrono_delta(self.config.attach_timeout);
        let minutes = |value: u32| self.config.minutes(value).as_secs();
        let row = session::Model {
            id: session_id.clone(),
            node_id: node.id.clone(),
            owner: caller.principal.to_string(),
            status: SessionStatus::Connecting.as_str().to_owned(),
            session_type: plan.session_type.to_owned(),
            document_name: fetched.name.clone(),
            document_version: fetched.version.clone(),
            reason: body.reason.clone(),
            run_as: run_as.clone(),
            host: plan.host.clone(),
            port_number: i32::from(plan.port_number),
            local_port_number: i32::from(plan.local_port_number),
            parameters: serde_json::to_string(&wire_parameters).map_err(ApiError::internal)?,
            idle_timeout_minutes: i32::try_from(plan.idle_minutes).unwrap_or(i32::MAX),
            max_duration_minutes: i32::try_from(plan.max_minutes).unwrap_or(i32::MAX),
            transcript: plan.transcript,
            record_input: plan.record_input,
            token_hash,
            token_expires_at: now + chrono_delta(self.config.token_ttl),
            token_used: false,
            hub: None,
            hub_seen_at: None,
            created_at: now,
            ended_at: None,
            details: String::new(),
            exit_code: None,
            bytes_in: 0,
            bytes_out: 0,
        };
        let message = wire::StartSession {
            session_id: session_id.clone(),
            kind: plan.kind.clone(),
            run_as: run_as.clone(),
            idle_timeout_seconds: minutes(plan.idle_minutes),
            max_duration_seconds: if plan.max_minutes > 0 {
                minutes(plan.max_minutes)
            } else {
                0
            },
            attach_by: attach_by.to_rfc3339(),
        };
        let mut trace_context = BTreeMap::new();
        bosun_telemetry::inject_map(&mut trace_context);
        let outbound = Outbound {
            node_id: node.id.clone(),
            topic: wire::TOPIC_START.to_owned(),
            payload: serde_json::to_vec(&message).map_err(ApiError::internal)?,
            expires_at: Some(attach_by),
            trace_context,
        };
        let record = record.details(audit_details(&fetched.name, &run_as, plan.session_type));
        let txn = bosun_store::begin_write(&self.db)
            .await
            .map_err(ApiError::internal)?;
        SessionStore::insert_in(&txn, row).await?;
        let message_id = self.link.stage(&txn, outbound).await?;
        self.audit.record_in(&txn, record).await?;
        txn.commit().await.map_err(ApiError::internal)?;
        self.link.push(&[message_id]).await;
        tracing::info!(%session_id, node_id = %node.id, document = %fetched.name, "session started");
        Ok(pb::StartSessionResponse {
            session_id,
            token_value: token,
            stream_url: STREAM_PATH.to_owned(),
        })
    }

    /// The OS user the session runs as, and the right to it (see `sessions.proto`): the
    /// document's default user needs nothing more; another user needs `sessions:RunAs` on
    /// `runas:<user>`; `root` always needs a statement naming `runas:root` literally.
    fn run_as(
        &self,
        caller: &AuthContext,
        document: &str,
        plan: &SessionPlan,
        requested: &str,
    ) -> Result<String, ApiError> {
        if plan.session_type == "Port" {
            if !requested.is_empty() {
                return Err(invalid(
                    "run_as",
                    "must be empty: port forwarding sessions run no process as a user",
                    VALIDATION,
                ));
            }
            return Ok(String::new());
        }
        if !plan.run_as_enabled {
            if !requested.is_empty() {
                return Err(invalid(
                    "run_as",
                    format!(
                        "must be empty: {document} does not enable run-as (inputs.runAsEnabled)"
                    ),
                    VALIDATION,
                ));
            }
            return Ok(DEFAULT_RUN_AS.to_owned());
        }
        let user = if requested.is_empty() {
            if plan.run_as_default_user.is_empty() {
                return Err(invalid(
                    "run_as",
                    format!("is required: {document} enables run-as but names no runAsDefaultUser"),
                    VALIDATION,
                ));
            }
            if validate::run_as("run_as", &plan.run_as_default_user).is_err() {
                return Err(invalid(
                    "document_name",
                    format!("{document}: inputs.runAsDefaultUser is not a valid OS user name"),
                    INVALID_DOCUMENT,
                ));
            }
            plan.run_as_default_user.clone()
        } else {
            requested.to_owned()
        };
        let run_as_action = action("RunAs");
        let resource = format!("runas:{user}");
        if user == "root" {
            if caller.decide_explicit(&run_as_action, &resource, &no_tags()) != Decision::Allow {
                return Err(ApiError::PermissionDenied(format!(
                    "{} may not run sessions as root: that needs a policy statement allowing {run_as_action} on runas:root by name",
                    caller.principal
                )));
            }
        } else if user != plan.run_as_default_user {
            caller.authorize(&run_as_action, &resource, &no_tags())?;
        }
        Ok(user)
    }
}

// ---- ResumeSession, TerminateSession ----------------------------------------------------------

impl SessionServiceImpl {
    async fn resume(
        &self,
        request: &Request<pb::ResumeSessionRequest>,
        caller: &AuthContext,
    ) -> Result<pb::ResumeSessionResponse, ApiError> {
        let session_id = request.get_ref().session_id.clone();
        validate::session_id("session_id", &session_id)?;
        let resume_action = action("ResumeSession");
        let record = AuditRecord::for_request(
            request,
            caller,
            &resume_action,
            &session_resource(&session_id),
        );
        if let Err(error) =
            caller.authorize(&resume_action, &session_resource(&session_id), &no_tags())
        {
            return Err(self.denied(record, error.into()).await);
        }
        let row = SessionStore::find(&self.db, &session_id)
            .await?
            .ok_or_else(|| session_missing(&session_id))?;
        if row.owner != caller.principal.to_string() {
            let error = ApiError::PermissionDenied(format!(
                "{} may not resume session {session_id}: only its owner may",
                caller.principal
            ));
            return Err(self.denied(record, error).await);
        }
        let store = self.store.clone();
        let id = session_id.clone();
        let token = self
            .audit
            .audited(vec![record], Ok(()), move |txn| {
                Box::pin(async move { store.reissue_token(txn, &id).await })
            })
            .await?;
        Ok(pb::ResumeSessionResponse {
            session_id,
            token_value: token,
            stream_url: STREAM_PATH.to_owned(),
        })
    }

    async fn terminate(
        &self,
        request: &Request<pb::TerminateSessionRequest>,
        caller: &AuthContext,
    ) -> Result<pb::TerminateSessionResponse, ApiError> {
        let session_id = request.get_ref().session_id.clone();
        validate::session_id("session_id", &session_id)?;
        let terminate_action = action("TerminateSession");
        let record = AuditRecord::for_request(
            request,
            caller,
            &terminate_action,
            &session_resource(&session_id),
        );
        let authorization = caller
            .authorize(
                &terminate_action,
                &session_resource(&session_id),
                &no_tags(),
            )
            .map_err(ApiError::from);
        let store = self.store.clone();
        let link = self.link.clone();
        let id = session_id.clone();
        let details = format!("terminated by {}", caller.principal);
        let expires_at = Utc::now() + chrono_delta(TERMINATE_MESSAGE_TTL);
        let staged = self
            .audit
            .audited(vec![record], authorization, move |txn| {
                Box::pin(async move {
                    let row = SessionStore::find(txn, &id)
                        .await?
                        .ok_or_else(|| session_missing(&id))?;
                    let end = SessionEnd {
                        status: SessionStatus::Terminated,
                        details: details.clone(),
                        exit_code: None,
                        bytes_in: 0,
                        bytes_out: 0,
                    };
                    // Already ended: nothing to do, and nothing to tell the agent.
                    if !store.end_in(txn, &id, &end, Condition::all()).await? {
                        return Ok(None);
                    }
                    let payload = serde_json::to_vec(&wire::TerminateSession {
                        session_id: id.clone(),
                        reason: details,
                    })
                    .map_err(ApiError::internal)?;
                    let mut trace_context = BTreeMap::new();
                    bosun_telemetry::inject_map(&mut trace_context);
                    let message_id = link
                        .stage(
                            txn,
                            Outbound {
                                node_id: row.node_id,
                                topic: wire::TOPIC_TERMINATE.to_owned(),
                                payload,
                                expires_at: Some(expires_at),
                                trace_context,
                            },
                        )
                        .await?;
                    Ok(Some(message_id))
                })
            })
            .await?;
        if let Some(message_id) = staged {
            self.link.push(&[message_id]).await;
        }
        Ok(pb::TerminateSessionResponse { session_id })
    }
}

// ---- reads ----------------------------------------------------------------------------------

impl SessionServiceImpl {
    fn to_proto(&self, row: &session::Model) -> pb::Session {
        pb::Session {
            session_id: row.id.clone(),
            target: row.node_id.clone(),
            status: row.status.clone(),
            start_date: Some(timestamp(row.created_at)),
            end_date: row.ended_at.map(timestamp),
            document_name: row.document_name.clone(),
            owner: row.owner.clone(),
            reason: row.reason.clone(),
            details: row.details.clone(),
            output_url: if row.transcript {
                self.objects.url(&transcript_prefix(&row.id))
            } else {
                String::new()
            },
            max_session_duration: row.max_duration_minutes,
            access_type: "Standard".to_owned(),
            run_as: row.run_as.clone(),
            session_type: row.session_type.clone(),
            bytes_in: to_u64(row.bytes_in),
            bytes_out: to_u64(row.bytes_out),
            exit_code: row.exit_code,
            idle_session_timeout: row.idle_timeout_minutes,
        }
    }

    async fn describe(
        &self,
        caller: &AuthContext,
        body: &pb::DescribeSessionsRequest,
    ) -> Result<pb::DescribeSessionsResponse, ApiError> {
        let state = validate::state("state", &body.state)?;
        let page = validate::page_size("max_results", body.max_results)?;
        let filters = validate::filters(&body.filters)?;
        let after = PageToken::decode(&body.next_token, state)?;
        let describe_action = action("DescribeSessions");
        let mut condition = filters.condition();
        match caller.decide(&describe_action, "session:*", &no_tags()) {
            Decision::Allow => {}
            Decision::ImplicitDeny => {
                condition = condition.add(session::Column::Owner.eq(caller.principal.to_string()));
            }
            Decision::ExplicitDeny => {
                return Err(ApiError::PermissionDenied(format!(
                    "{} is not allowed {describe_action} on session:*",
                    caller.principal
                )));
            }
        }
        condition = match state {
            State::Active => {
                condition.add(session::Column::Status.is_in(SessionStatus::names(false)))
            }
            State::History => condition
                .add(session::Column::Status.is_in(SessionStatus::names(true)))
                .add(session::Column::EndedAt.gte(Utc::now() - TimeDelta::days(HISTORY_DAYS))),
        };
        if let Some((time, id)) = &after {
            condition = condition.add(validate::after(*time, id));
        }
        let mut rows = session::Entity::find()
            .filter(condition)
            .order_by_desc(session::Column::CreatedAt)
            .order_by_desc(session::Column::Id)
            .limit(u64::try_from(page + 1).unwrap_or(201))
            .all(&self.db)
            .await
            .map_err(|error| ApiError::internal(format!("sessions: list: {error}")))?;
        let next_token = if rows.len() > page {
            rows.truncate(page);
            rows.last()
                .map(|last| PageToken::new(state, last.created_at, &last.id).encode())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::DescribeSessionsResponse {
            sessions: rows.iter().map(|row| self.to_proto(row)).collect(),
            next_token,
        })
    }

    async fn connection_status(
        &self,
        caller: &AuthContext,
        body: &pb::GetConnectionStatusRequest,
    ) -> Result<pb::GetConnectionStatusResponse, ApiError> {
        validate::target("target", &body.target)?;
        let node = self
            .ports
            .nodes
            .get(std::slice::from_ref(&body.target))
            .await?
            .into_iter()
            .next();
        let tags = node
            .as_ref()
            .map(|node| node.tags.clone())
            .unwrap_or_default();
        caller.authorize(
            &action("GetConnectionStatus"),
            &format!("node:{}", body.target),
            &tags,
        )?;
        let connected = match &node {
            Some(node) if node.registered => self.link.is_connected(&node.id).await,
            _ => false,
        };
        Ok(pb::GetConnectionStatusResponse {
            target: body.target.clone(),
            status: if connected {
                "connected"
            } else {
                "notconnected"
            }
            .to_owned(),
        })
    }

    async fn transcript(
        &self,
        caller: &AuthContext,
        body: &pb::GetSessionTranscriptRequest,
    ) -> Result<Vec<Vec<u8>>, ApiError> {
        validate::session_id("session_id", &body.session_id)?;
        caller.authorize(
            &action("GetSessionTranscript"),
            &session_resource(&body.session_id),
            &no_tags(),
        )?;
        let row = SessionStore::find(&self.db, &body.session_id)
            .await?
            .ok_or_else(|| session_missing(&body.session_id))?;
        if !row.transcript {
            return Err(ApiError::not_found(format!(
                "session {} keeps no transcript (logging is off, or it is a port session)",
                row.id
            )));
        }
        let data = export_asciicast(&self.objects, &row.id)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "session {} has no transcript stored yet (the agent has not attached)",
                    row.id
                ))
            })?;
        Ok(line_chunks(&data, MAX_TRANSCRIPT_CHUNK))
    }
}

// ---- the RPCs ---------------------------------------------------------------------------------

#[tonic::async_trait]
impl SessionService for SessionServiceImpl {
    async fn start_session(
        &self,
        request: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(self.start(&request, &caller).await?))
    }

    async fn resume_session(
        &self,
        request: Request<pb::ResumeSessionRequest>,
    ) -> Result<Response<pb::ResumeSessionResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(self.resume(&request, &caller).await?))
    }

    async fn terminate_session(
        &self,
        request: Request<pb::TerminateSessionRequest>,
    ) -> Result<Response<pb::TerminateSessionResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(self.terminate(&request, &caller).await?))
    }

    async fn describe_sessions(
        &self,
        request: Request<pb::DescribeSessionsRequest>,
    ) -> Result<Response<pb::DescribeSessionsResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(
            self.describe(&caller, request.get_ref()).await?,
        ))
    }

    async fn get_connection_status(
        &self,
        request: Request<pb::GetConnectionStatusRequest>,
    ) -> Result<Response<pb::GetConnectionStatusResponse>, Status> {
        let caller = auth_context(&request)?;
        Ok(Response::new(
            self.connection_status(&caller, request.get_ref()).await?,
        ))
    }

    type GetSessionTranscriptStream = TranscriptStream;

    async fn get_session_transcript(
        &self,
        request: Request<pb::GetSessionTranscriptRequest>,
    ) -> Result<Response<Self::GetSessionTranscriptStream>, Status> {
        let caller = auth_context(&request)?;
        let chunks = self.transcript(&caller, request.get_ref()).await?;
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|data| Ok(pb::TranscriptChunk { data })),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_chunks_hold_whole_lines() {
        let data = b"header\nline one\nline two\n";
        assert_eq!(
            line_chunks(data, 16),
            vec![b"header\nline one\n".to_vec(), b"line two\n".to_vec()]
        );
        assert_eq!(
            line_chunks(b"0123456789\n", 4),
            vec![b"0123456789\n".to_vec()]
        );
        assert_eq!(line_chunks(b"", 4), Vec::<Vec<u8>>::new());
    }
}
