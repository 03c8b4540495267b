//! Port sessions: TCP connections from the node to the session's `host:port`, many at once,
//! multiplexed over the session's packets by connection id. Destinations are checked after
//! name resolution against a deny-list of link-local and cloud metadata addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bosun_proto::sessions::v1::packet::Body;
use bosun_proto::sessions::v1::{PortClose, PortData};
use bosun_session::MAX_PACKET_DATA;
use bosun_session::wire::StartSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::attach::{Attachment, Event, sleep_until};
use super::{Outcome, terminal};

/// Connections open at once in one session.
const MAX_CONNECTIONS: usize = 1024;
/// Bytes from the client waiting for slow sockets beyond this hold acks back.
const WRITE_HOLD_BYTES: usize = 1 << 20;
/// Socket reads waiting for room in the window: at most this many chunks in all.
const SOCKET_EVENTS: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

enum SocketEvent {
    Data(Vec<u8>),
    /// The connection ended (`""`) or failed (why).
    Closed(String),
}

/// Bytes queued for sockets, shared with the connection tasks.
#[derive(Default)]
struct Pending {
    bytes: AtomicUsize,
    drained: Notify,
}

impl Pending {
    fn sub(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.drained.notify_one();
    }
}

/// Runs a port session to its end.
pub(super) async fn run(
    attachment: &mut Attachment,
    start: &StartSession,
    host: &str,
    port: u16,
    stop: &CancellationToken,
) -> Outcome {
    let link = attachment.link.clone();
    let (events_sender, mut events) = mpsc::channel::<(u32, SocketEvent)>(SOCKET_EVENTS);
    let pending = Arc::new(Pending::default());
    let mut connections: HashMap<u32, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let backstop = terminal::backstop(start);
    let outcome = loop {
        let window = link.has_room();
        tokio::select! {
            event = attachment.next() => match event {
                Event::Packet(Body::PortOpen(open)) => {
                    let id = open.connection_id;
                    if connections.contains_key(&id) {
                        continue;
                    }
                    if connections.len() >= MAX_CONNECTIONS {
                        link.push_anyway(Body::PortClose(PortClose {
                            connection_id: id,
                            error: format!("too many connections (at most {MAX_CONNECTIONS})"),
                        }));
                        continue;
                    }
                    let (writes, receiver) = mpsc::unbounded_channel();
                    connections.insert(id, writes);
                    tasks.spawn(connection(
                        id,
                        host.to_owned(),
                        port,
                        receiver,
                        events_sender.clone(),
                        pending.clone(),
                    ));
                }
                Event::Packet(Body::PortData(data)) => {
                    if let Some(writes) = connections.get(&data.connection_id) {
                        let len = data.data.len();
                        pending.bytes.fetch_add(len, Ordering::SeqCst);
                        if writes.send(data.data).is_err() {
                            pending.sub(len);
                        }
                    }
                }
                Event::Packet(Body::PortClose(close)) => {
                    // Dropping the sender: the connection writes what it holds, then closes.
                    connections.remove(&close.connection_id);
                }
                Event::Packet(_) | Event::Acked => {}
                Event::Closed(closed) => break Outcome::Closed(closed),
                Event::Lost(reason) => break Outcome::Failed(reason),
            },
            Some((id, event)) = events.recv(), if window => match event {
                SocketEvent::Data(data) => {
                    if connections.contains_key(&id) {
                        link.push_anyway(Body::PortData(PortData { connection_id: id, data }));
                    }
                }
                SocketEvent::Closed(error) => {
                    // Not reported back when the client closed it first.
                    if connections.remove(&id).is_some() {
                        link.push_anyway(Body::PortClose(PortClose { connection_id: id, error }));
                    }
                }
            },
            () = pending.drained.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = stop.cancelled() => break Outcome::Terminated,
            () = sleep_until(backstop.map(Instant::into_std)) => break Outcome::Failed(
                "max session duration reached (agent backstop)".into(),
            ),
        }
        link.hold_acks(pending.bytes.load(Ordering::SeqCst) > WRITE_HOLD_BYTES);
    };
    tasks.abort_all();
    attachment.close();
    outcome
}

/// One forwarded connection: connect, then copy both ways until either side ends it.
async fn connection(
    id: u32,
    host: String,
    port: u16,
    mut writes: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::Sender<(u32, SocketEvent)>,
    pending: Arc<Pending>,
) {
    let closed = match connect(&host, port).await {
        Err(error) => error,
        Ok(stream) => {
            let (mut reader, mut writer) = stream.into_split();
            let read = async {
                let mut buffer = vec![0u8; MAX_PACKET_DATA];
                loop {
                    match reader.read(&mut buffer).await {
                        Ok(0) => return String::new(),
                        Ok(read) => {
                            let data = buffer[..read].to_vec();
                            if events.send((id, SocketEvent::Data(data))).await.is_err() {
                                return String::new();
                            }
                        }
                        Err(error) => return error.to_string(),
                    }
                }
            };
            let write = async {
                while let Some(data) = writes.recv().await {
                    let written = writer.write_all(&data).await;
                    pending.sub(data.len());
                    if let Err(error) = written {
                        return error.to_string();
                    }
                }
                // The client closed the connection.
                let _ = writer.shutdown().await;
                String::new()
            };
            tokio::select! {
                error = read => error,
                error = write => error,
            }
        }
    };
    // What the client sent and the socket will never take.
    writes.close();
    while let Ok(data) = writes.try_recv() {
        pending.sub(data.len());
    }
    let _ = events.send((id, SocketEvent::Closed(closed))).await;
}

/// Resolves `host` and connects to the first allowed address that answers.
async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| format!("cannot resolve {host}: {error}"))?
        .collect();
    let mut last_error = format!("{host} has no address");
    let mut tried = false;
    for address in addresses {
        if is_denied(address.ip()) {
            last_error = format!("destination {} is not allowed", address.ip());
            continue;
        }
        tried = true;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                last_error = "connection refused".into();
            }
            Ok(Err(error)) => last_error = format!("cannot connect to {address}: {error}"),
            Err(_) => last_error = format!("connecting to {address} timed out"),
        }
    }
    if !tried {
        tracing::warn!(%host, port, reason = %last_error, "port forwarding destination refused");
    }
    Err(last_error)
}

/// Link-local and cloud metadata addresses (IMDS `169.254.169.254`, `fd00:ec2::254`, time
/// sync, DNS and licence endpoints — SSM's default deny-list — as whole ranges), Azure's
/// and Alibaba's metadata addresses, and the unspecified, broadcast and multicast ones.
pub(super) fn is_denied(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            v4.octets()[0] == 0
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4 == Ipv4Addr::new(168, 63, 129, 16)
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            v6.is_unspecified()
                || v6.is_multicast()
                || segments[0] & 0xffc0 == 0xfe80
                || (segments[0] == 0xfd00 && segments[1] == 0x0ec2)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_are_denied() {
        for denied in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "255.255.255.255",
            "224.0.0.1",
            "168.63.129.16",
        ] {
            assert!(is_denied(denied.parse().unwrap()), "{denied}");
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.0.0.5",
            "192.168.1.1",
            "fd00::1",
            "8.8.8.8",
        ] {
            assert!(!is_denied(allowed.parse().unwrap()), "{allowed}");
        }
    }
}
