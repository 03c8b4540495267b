//! Prints the gateway's resident memory per idle agent stream.
//!
//! `cargo run --release -p bosun-nodelink --example stream_memory -- 2000` serves AgentChannel
//! (SQLite in memory, in-process queue and presence) and starts a copy of itself as the agents:
//! one HTTP/2 connection and one handshaken, idle stream per node. The figure is the server's
//! RSS growth divided by the stream count, so it includes hyper/h2/tonic per-connection state.
//! It is split into what the connections cost (HTTP/2, before any
//! stream) and what the streams cost on top (tonic's stream buffers and this crate's task and
//! channels).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use bosun_core::ApiError;
use bosun_nodelink::channel::{AgentEdge, ChannelOptions};
use bosun_nodelink::{MemoryPresence, Migrator, NodeCredentials, NodeDirectory, NodeLink};
use bosun_proto::agent::v1::agent_channel_client::AgentChannelClient;
use bosun_proto::agent::v1::{
    AgentMessage, Hello, HostFacts, Proof, agent_message, server_message,
};
use bosun_queue::{MemoryQueue, QueueOptions};
use chrono::{DateTime, Utc};
use tokio_stream::wrappers::ReceiverStream;

fn node_id(index: usize) -> String {
    format!("mi-{index:017x}")
}

fn key(index: usize) -> Ed25519KeyPair {
    let mut seed = [7_u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    Ed25519KeyPair::from_seed_unchecked(&seed).expect("seed")
}

struct Directory;

#[async_trait]
impl NodeDirectory for Directory {
    async fn credentials(&self, node_id: &str) -> Result<Option<NodeCredentials>, ApiError> {
        let index = usize::from_str_radix(&node_id[3..], 16).expect("test node id");
        let public_key = key(index)
            .public_key()
            .as_ref()
            .try_into()
            .expect("32 bytes");
        Ok(Some(NodeCredentials { public_key }))
    }
    async fn record_connect(
        &self,
        _: &str,
        _: &HostFacts,
        _: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        Ok(())
    }
    async fn record_pings(&self, _: &[String], _: DateTime<Utc>) -> Result<Vec<String>, ApiError> {
        Ok(Vec::new())
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .expect("rss")
        .parse()
        .expect("number");
    pages * 4096
}

async fn agents(addr: String, count: usize) {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            tonic::transport::Endpoint::from_shared(addr.clone())
                .expect("endpoint")
                .connect()
                .await
                .expect("connect"),
        );
    }
    println!("connected");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut held = Vec::with_capacity(count);
    for (index, channel) in channels.into_iter().enumerate() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut stream = AgentChannelClient::new(channel)
            .connect(ReceiverStream::new(receiver))
            .await
            .expect("stream")
            .into_inner();
        let node = node_id(index);
        let send = |body| AgentMessage { body: Some(body) };
        sender
            .send(send(agent_message::Body::Hello(Hello {
                node_id: node.clone(),
                facts: None,
            })))
            .await
            .expect("hello");
        let Some(server_message::Body::Challenge(challenge)) = stream
            .message()
            .await
            .expect("challenge")
            .and_then(|m| m.body)
        else {
            panic!("no challenge");
        };
        let signed = [
            b"bosun-agent-connect-v1\n".as_slice(),
            node.as_bytes(),
            b"\n",
            &challenge.nonce,
        ]
        .concat();
        let signature = key(index).sign(&signed).as_ref().to_vec();
        sender
            .send(send(agent_message::Body::Proof(Proof { signature })))
            .await
            .expect("proof");
        stream.message().await.expect("welcome");
        held.push((sender, stream));
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(held);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("agents") {
        agents(args[2].clone(), args[3].parse().expect("count")).await;
        return;
    }
    let count: usize = args.get(1).map_or(2000, |n| n.parse().expect("count"));
    let db = bosun_store::connect("sqlite::memory:").await.expect("db");
    bosun_store::migrate::<Migrator>(&db)
        .await
        .expect("migrate");
    let link = NodeLink::new(
        db,
        Arc::new(MemoryQueue::new(QueueOptions::default())),
        Arc::new(MemoryPresence::new()),
    );
    let edge = AgentEdge::new(link, Arc::new(Directory), ChannelOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let server = edge.clone().into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let heap_before = rss_bytes() as f64;
    let mut child = tokio::process::Command::new(&args[0])
        .args(["agents", &addr, &count.to_string()])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn agents");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("piped"),
    ));
    lines.next_line().await.expect("agents report");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heap_connected = rss_bytes() as f64;
    while edge.stream_count() < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes();
    let heap_after = rss_bytes() as f64;
    println!(
        "{count} connections: RSS +{:.1} KiB each; handshaken idle streams on top: +{:.1} KiB each",
        (heap_connected - heap_before) / 1024.0 / count as f64,
        (heap_after - heap_connected) / 1024.0 / count as f64
    );
    println!(
        "{count} idle streams: server RSS +{} KiB, {:.1} KiB per stream (connection included)",
        (after - before) / 1024,
        (after - before) as f64 / 1024.0 / count as f64
    );
    let _ = child.kill().await;
}
