//! `WebhookReceiver`: a local HTTP endpoint that records what it is sent and answers with
//! chosen statuses, for tests (this crate's and the end-to-end ones) and smoke checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::signature::{self, SIGNATURE_HEADER, SigningSecret, VerifyError};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    pub received_at: Instant,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Checks `bosun-signature` against `secret_text` (`whsec_...`) as a receiver would,
    /// with a five-minute tolerance.
    pub fn verify(&self, secret_text: &str) -> Result<(), VerifyError> {
        let secret = SigningSecret::parse(secret_text).ok_or(VerifyError::Malformed)?;
        let header = self
            .header(SIGNATURE_HEADER)
            .ok_or(VerifyError::Malformed)?;
        signature::verify(
            &secret,
            header,
            &self.body,
            chrono::Utc::now().timestamp(),
            300,
        )
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<ReceivedRequest>>,
    /// Statuses to answer with, in order; 200 once empty.
    script: Mutex<VecDeque<u16>>,
    /// How long to hold each request before answering.
    delay: Mutex<Duration>,
    arrived: Notify,
}

/// A receiver on a loopback port, stopped when dropped.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl WebhookReceiver {
    /// Starts a receiver that answers 200 to everything.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State::default());
        let handler_state = Arc::clone(&state);
        let router = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&handler_state);
                async move {
                    let request = ReceivedRequest {
                        path: uri.path().to_owned(),
                        headers: headers
                            .iter()
                            .map(|(name, value)| {
                                (
                                    name.as_str().to_owned(),
                                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body,
                        received_at: Instant::now(),
                    };
                    let delay = *state.delay.lock().unwrap_or_else(PoisonError::into_inner);
                    state
                        .requests
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(request);
                    state.arrived.notify_waiters();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let status = state
                        .script
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front()
                        .unwrap_or(200);
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "webhook receiver stopped");
            }
        });
        Ok(WebhookReceiver {
            url: format!("http://{address}/hook"),
            state,
            stop,
        })
    }

    /// Answers the next requests with `statuses`, in order, then 200 again.
    pub fn respond_with(&self, statuses: &[u16]) {
        self.state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(statuses.iter().copied());
    }

    /// Holds every request this long before answering (to make a sender time out).
    pub fn set_delay(&self, delay: Duration) {
        *self
            .state
            .delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `count` requests arrived, or fails at `timeout`.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedRequest>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let requests = self.requests();
            if requests.len() >= count {
                return Ok(requests);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                anyhow::bail!(
                    "the webhook receiver got {} requests within {timeout:?}, expected {count}",
                    requests.len()
                );
            }
        }
    }
}
