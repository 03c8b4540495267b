//! `SessionClient` against a fake gateway whose other end is an agent-like `Link` that answers
//! each input packet with the same bytes upper-cased: round trip, and a dropped connection
//! with input typed while disconnected — delivered once, nothing lost, after `reconnect`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_proto::sessions::v1::frame::Kind;
use bosun_proto::sessions::v1::packet::Body;
use bosun_proto::sessions::v1::session_data_server::{SessionData, SessionDataServer};
use bosun_proto::sessions::v1::{Frame, Ready};
use bosun_session::client::{SessionClient, SessionEvent};
use bosun_session::link::{Inbound, Link};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Default)]
struct FakeGateway {
    agent: Link,
    /// Every input byte the agent end got, in order.
    received: Arc<Mutex<Vec<u8>>>,
    tokens: Arc<Mutex<Vec<String>>>,
}

type FrameStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl SessionData for FakeGateway {
    type ConnectStream = FrameStream;
    type AttachStream = FrameStream;

    async fn connect(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer bearer-1"
        );
        let mut inbound = request.into_inner();
        let Some(Kind::ClientOpen(open)) = inbound.message().await?.and_then(|f| f.kind) else {
            return Err(Status::invalid_argument("ClientOpen first"));
        };
        self.tokens.lock().unwrap().push(open.token);
        // The agent end is attached already: a new stream to this client, and (as on
        // PeerAttached) a Resume.
        let outbound = self.agent.open_stream(Vec::new());
        self.agent.handle(Frame {
            kind: Some(Kind::Ready(Ready::default())),
        });
        let agent = self.agent.clone();
        let received = self.received.clone();
        tokio::spawn(async move {
            loop {
                let deadline = agent.ack_deadline();
                let message = tokio::select! {
                    () = sleep_until(deadline) => { agent.flush_ack(); continue; }
                    message = inbound.message() => message,
                };
                let Ok(Some(frame)) = message else { return };
                if let Inbound::Packet(Body::Input(data)) = agent.handle(frame) {
                    received.lock().unwrap().extend_from_slice(&data);
                    agent
                        .push(Body::Output(data.to_ascii_uppercase()))
                        .await
                        .unwrap();
                }
            }
        });
        let ready = Frame {
            kind: Some(Kind::Ready(Ready {
                session_id: open.session_id,
                session_type: "Standard_Stream".into(),
                ..Default::default()
            })),
        };
        let stream = tokio_stream::once(ready).chain(outbound).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn attach(&self, _: Request<Streaming<Frame>>) -> Result<Response<FrameStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn start() -> (FakeGateway, tonic::transport::Channel) {
    let gateway = FakeGateway::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SessionDataServer::new(gateway.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect_lazy();
    (gateway, channel)
}

async fn output_until(client: &mut SessionClient, wanted: &str) -> String {
    let mut seen = String::new();
    while seen.len() < wanted.len() {
        match tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .expect("output in time")
        {
            SessionEvent::Output(data) => seen.push_str(&String::from_utf8(data).unwrap()),
            other => panic!("expected output, got {other:?} after {seen:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn input_typed_during_a_blip_arrives_once_after_reconnect() {
    let (gateway, channel) = start().await;
    let mut client = SessionClient::connect(channel.clone(), "bearer-1", "s-1", "token-1")
        .await
        .unwrap();
    assert_eq!(client.ready().session_type, "Standard_Stream");
    client.send_input(b"abc").await.unwrap();
    assert_eq!(output_until(&mut client, "ABC").await, "ABC");

    client.drop_connection();
    // Typed while disconnected: kept, and sent after the reconnect.
    let writer = client.writer();
    writer.send_input(b"def").await.unwrap();
    match client.next_event().await {
        SessionEvent::Disconnected(_) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    client
        .reconnect(channel, "bearer-1", "token-2")
        .await
        .unwrap();
    writer.send_input(&vec![b'g'; 100_000]).await.unwrap();
    let expected = format!("DEF{}", "G".repeat(100_000));
    assert_eq!(output_until(&mut client, &expected).await, expected);
    let received = gateway.received.lock().unwrap().clone();
    assert_eq!(
        received,
        format!("abcdef{}", "g".repeat(100_000)).into_bytes()
    );
    assert_eq!(*gateway.tokens.lock().unwrap(), ["token-1", "token-2"]);
}
