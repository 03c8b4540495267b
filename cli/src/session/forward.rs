//! `bosun session forward`: a local TCP listener whose connections are carried, many at once,
//! over one port-forwarding session (`PortOpen` / `PortData` / `PortClose` by connection id)
//! to a port on the node, or on a host the node reaches.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context as _, bail};
use bosun_proto::sessions::v1 as proto;
use bosun_session::MAX_PACKET_DATA;
use bosun_session::client::{SessionClient, SessionEvent, SessionWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ForwardArgs, forward_request, reconnect};
use crate::commands::Context;
use crate::connection::open_stream_channel;

/// Chunks from the node waiting to be written to one local connection. Bounded: a local
/// reader that does not keep up holds the session's window, not this process's memory.
const CONNECTION_QUEUE: usize = 64;

pub async fn forward(ctx: &Context, args: ForwardArgs) -> anyhow::Result<()> {
    let token = ctx.token()?;
    let mut sessions = ctx.connect_with(&token).await?.sessions();
    let started = sessions
        .start_session(forward_request(&args))
        .await?
        .into_inner();
    let channel = open_stream_channel(&ctx.server).await?;
    let mut client = SessionClient::connect(
        channel.clone(),
        &token,
        &started.session_id,
        &started.token_value,
    )
    .await?;
    let ready = client.ready().clone();
    if ready.session_type != "Port" {
        bail!(
            "session {} is a {} session, not a port forward",
            started.session_id,
            ready.session_type
        );
    }
    let port = match args.local_port {
        Some(port) => port,
        None => u16::try_from(ready.local_port_number).unwrap_or(0),
    };
    let listener = match TcpListener::bind((args.listen, port)).await {
        Ok(listener) => listener,
        Err(error) => {
            terminate(&mut sessions, &started.session_id).await;
            return Err(error).with_context(|| format!("listen on {}:{port}", args.listen));
        }
    };
    let local = listener.local_addr()?;
    // The address alone on stdout, for scripts; the rest for people on stderr.
    println!("listening on {local}");
    std::io::stdout().flush()?;
    eprintln!(
        "Forwarding {local} to {}:{} from {} (session {}). Ctrl-C to stop.",
        if ready.host.is_empty() {
            "localhost"
        } else {
            &ready.host
        },
        ready.port_number,
        args.node,
        started.session_id
    );

    let writer = client.writer();
    let mut connections: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut next_id: u32 = 1;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate_signal = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        eprintln!("accepting a connection failed: {error}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let id = next_id;
                next_id = next_id.wrapping_add(1).max(1);
                // Opened before any of its data is queued: packets keep their order.
                writer.port_open(id).await?;
                let (read, write) = stream.into_split();
                let stop_reading = CancellationToken::new();
                let (sender, receiver) = mpsc::channel(CONNECTION_QUEUE);
                connections.insert(id, sender);
                tokio::spawn(local_to_node(id, read, writer.clone(), stop_reading.clone()));
                tokio::spawn(node_to_local(write, receiver, stop_reading));
                tracing::debug!(id, %peer, "forwarded connection opened");
            }
            event = client.next_event() => match event {
                SessionEvent::PortData { connection_id, data } => {
                    if let Some(sender) = connections.get(&connection_id)
                        && sender.send(data).await.is_err()
                    {
                        connections.remove(&connection_id);
                    }
                }
                SessionEvent::PortClose { connection_id, error } => {
                    // Dropping the sender lets the writer finish what is queued, then close.
                    connections.remove(&connection_id);
                    if !error.is_empty() {
                        eprintln!("connection {connection_id}: {error}");
                    }
                }
                SessionEvent::Closed { status, reason } => {
                    if status == "Failed" {
                        bail!("the session failed: {reason}");
                    }
                    eprintln!("Session {} ended: {reason}.", started.session_id);
                    return Ok(());
                }
                SessionEvent::Disconnected(reason) => {
                    eprintln!("connection lost ({reason}); reconnecting");
                    if !reconnect(&mut sessions, &mut client, &channel, &token, &started.session_id).await? {
                        bail!("session {} ended while disconnected", started.session_id);
                    }
                    eprintln!("reconnected");
                }
                SessionEvent::Output(_) | SessionEvent::Exit(_) => {}
            },
            _ = interrupt.recv() => break,
            _ = terminate_signal.recv() => break,
            _ = hangup.recv() => break,
        }
    }
    terminate(&mut sessions, &started.session_id).await;
    eprintln!("Session {} terminated.", started.session_id);
    Ok(())
}

/// Ends the session (best effort: the server's idle timeout ends it otherwise).
async fn terminate(sessions: &mut crate::connection::SessionsClient, session_id: &str) {
    if let Err(status) = sessions
        .terminate_session(proto::TerminateSessionRequest {
            session_id: session_id.to_owned(),
        })
        .await
    {
        eprintln!(
            "could not terminate session {session_id}: {}",
            status.message()
        );
    }
}

/// Local socket → node, until the local side closes (then `PortClose`) or the node closed
/// the connection first (`stop`).
async fn local_to_node(
    id: u32,
    mut read: OwnedReadHalf,
    writer: SessionWriter,
    stop: CancellationToken,
) {
    let mut buffer = vec![0u8; MAX_PACKET_DATA];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = read.read(&mut buffer) => n,
        };
        match n {
            Ok(0) => {
                let _ = writer.port_close(id, "").await;
                return;
            }
            Ok(n) => {
                if writer.port_data(id, &buffer[..n]).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = writer.port_close(id, &error.to_string()).await;
                return;
            }
        }
    }
}

/// Node → local socket, until the node closes the connection (the channel ends); then the
/// local side is closed and its reader stopped. A failed write leaves the reader to notice
/// the broken socket and tell the node.
async fn node_to_local(
    mut write: OwnedWriteHalf,
    mut receiver: mpsc::Receiver<Vec<u8>>,
    stop_reading: CancellationToken,
) {
    while let Some(data) = receiver.recv().await {
        if write.write_all(&data).await.is_err() {
            let _ = write.shutdown().await;
            return;
        }
    }
    let _ = write.shutdown().await;
    stop_reading.cancel();
}
