//! Shell and interactive-command sessions: a PTY, the client's keystrokes in, the terminal's
//! output out (read only while the window has room), resize and signals, and the exit status
//! as the last packet.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use bosun_proto::sessions::v1::packet::Body;
use bosun_proto::sessions::v1::{Exit, Signal as WireSignal, TerminalSize};
use bosun_session::MAX_PACKET_DATA;
use bosun_session::wire::{SessionKind, StartSession};
use rustix::process::{Pid, Signal};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::attach::{Attachment, Event, sleep_until};
use super::pty::{Pty, Spawn, signal_group};
use super::{Outcome, SessionOptions, users};

/// Input waiting for the terminal beyond this holds acks back, so the client stops sending.
const INPUT_HOLD_BYTES: usize = 256 << 10;
/// After the process exits, output is read until the terminal is gone, or nothing came for
/// this long (a background process holds it open)...
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// ...and never longer than this.
const DRAIN_MAX: Duration = Duration::from_secs(10);
const DEFAULT_TERM: &str = "xterm-256color";

/// Exit status for "cannot run" (as a shell's "found but cannot execute").
const EXIT_CANNOT_RUN: i32 = 126;

/// Runs a Shell or Command session to its end.
pub(super) async fn run(
    attachment: &mut Attachment,
    start: &StartSession,
    stop: &CancellationToken,
    options: &SessionOptions,
) -> Outcome {
    let user = match users::resolve(&start.run_as).await {
        Ok(user) => user,
        Err(reason) => return refuse(attachment, &reason, options).await,
    };

    // The first packet of a terminal client is its size and TERM: wait a little for it, so
    // the shell starts with the right ones.
    let mut early = Vec::new();
    let (mut cols, mut rows, mut term) = (80u16, 24u16, DEFAULT_TERM.to_owned());
    let wait_until = Instant::now() + options.first_resize_wait;
    // Acks and resumes may come first (the client resumes right after Ready): keep waiting
    // until a packet, the end, or the deadline.
    loop {
        tokio::select! {
            event = attachment.next() => match event {
                Event::Packet(Body::Resize(size)) => {
                    (cols, rows) = dimensions(&size, (cols, rows));
                    if valid_term(&size.term) {
                        term = size.term;
                    }
                    break;
                }
                Event::Packet(body) => {
                    early.push(body);
                    break;
                }
                Event::Acked => {}
                Event::Closed(closed) => return Outcome::Closed(closed),
                Event::Lost(reason) => return Outcome::Failed(reason),
            },
            () = tokio::time::sleep_until(wait_until) => break,
            () = stop.cancelled() => return Outcome::Terminated,
        }
    }

    let (program, args, profile) = match &start.kind {
        SessionKind::Shell { shell_profile } => {
            (user.shell.clone(), vec!["-l".into()], shell_profile.clone())
        }
        SessionKind::Command { command } => (
            "/bin/sh".into(),
            vec!["-c".into(), command.into()],
            String::new(),
        ),
        SessionKind::Port { .. } => {
            return Outcome::Failed("a port session is not a terminal".into());
        }
    };
    let spawn = Spawn {
        program,
        args,
        env: user.env(&term),
        cwd: user.cwd(),
        ids: user.ids(),
    };
    let (pty, mut child) = match Pty::start(cols, rows, spawn) {
        Ok(started) => started,
        Err(error) => {
            let reason = format!("cannot start the session's process: {error}");
            return refuse(attachment, &reason, options).await;
        }
    };
    tracing::info!(session_id = %start.session_id, user = %user.name, "session process started");
    let leader = child
        .id()
        .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?));

    let link = attachment.link.clone();
    let mut input: Vec<u8> = Vec::new();
    if !profile.trim().is_empty() {
        input.extend_from_slice(profile.as_bytes());
        input.push(b'\n');
    }
    for body in early {
        apply(body, &pty, &mut input);
    }
    let mut buffer = vec![0u8; MAX_PACKET_DATA];
    let mut output_open = true;
    let mut exited: Option<std::process::ExitStatus> = None;
    let mut drain_idle_at = None;
    let mut drain_max_at = None;
    let backstop = backstop(start);

    let ended = loop {
        if exited.is_some() && !output_open {
            break None;
        }
        let read_window = output_open && link.has_room();
        tokio::select! {
            event = attachment.next() => match event {
                Event::Packet(body) => {
                    apply(body, &pty, &mut input);
                    link.hold_acks(input.len() > INPUT_HOLD_BYTES);
                }
                // Room again: the read branch is re-armed on the next turn.
                Event::Acked => {}
                Event::Closed(closed) => break Some(Outcome::Closed(closed)),
                Event::Lost(reason) => break Some(Outcome::Failed(reason)),
            },
            read = pty.read(&mut buffer), if read_window => match read {
                Ok(0) | Err(_) => output_open = false,
                Ok(read) => {
                    link.push_anyway(Body::Output(buffer[..read].to_vec()));
                    if exited.is_some() {
                        drain_idle_at = Some(Instant::now() + DRAIN_IDLE);
                    }
                }
            },
            written = pty.write(&input), if !input.is_empty() && exited.is_none() => match written {
                Ok(written) => {
                    input.drain(..written);
                    link.hold_acks(input.len() > INPUT_HOLD_BYTES);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot write to the terminal; input dropped");
                    input.clear();
                    link.hold_acks(false);
                }
            },
            status = child.wait(), if exited.is_none() => {
                exited = Some(status.unwrap_or_else(|_| std::process::ExitStatus::from_raw(1 << 8)));
                let now = Instant::now();
                drain_idle_at = Some(now + DRAIN_IDLE);
                drain_max_at = Some(now + DRAIN_MAX);
            }
            () = sleep_until_instant(drain_idle_at.min(drain_max_at)), if exited.is_some() => {
                output_open = false;
            }
            () = stop.cancelled() => break Some(Outcome::Terminated),
            () = sleep_until_instant(backstop) => break Some(Outcome::Failed(
                "max session duration reached (agent backstop)".into(),
            )),
        }
    };
    if let Some(outcome) = ended {
        if exited.is_none() {
            kill(&mut child, leader, &pty, options.kill_grace).await;
        }
        attachment.close();
        return outcome;
    }
    let status = exited.unwrap_or_else(|| std::process::ExitStatus::from_raw(0));
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    link.push_anyway(Body::Exit(Exit { code }));
    let closed = attachment.drain(options.exit_ack_wait).await;
    attachment.close();
    match closed {
        Some(closed) if !closed.reason.starts_with("exit status") => Outcome::Closed(closed),
        _ => Outcome::Exited(code),
    }
}

/// Acts on a client packet.
fn apply(body: Body, pty: &Pty, input: &mut Vec<u8>) {
    match body {
        Body::Input(data) => input.extend_from_slice(&data),
        Body::Resize(size) => {
            let (cols, rows) = dimensions(&size, pty.size().unwrap_or((80, 24)));
            if let Err(error) = pty.resize(cols, rows) {
                tracing::debug!(%error, "cannot resize the terminal");
            }
        }
        Body::Signal(signal) => {
            let signal = match WireSignal::try_from(signal) {
                Ok(WireSignal::Interrupt) => Signal::INT,
                Ok(WireSignal::Quit) => Signal::QUIT,
                Ok(WireSignal::Suspend) => Signal::TSTP,
                Ok(WireSignal::Terminate) => Signal::TERM,
                Ok(WireSignal::Hangup) => Signal::HUP,
                Ok(WireSignal::Unspecified) | Err(_) => return,
            };
            if let Err(error) = pty.signal_foreground(signal) {
                tracing::debug!(%error, "cannot signal the foreground process group");
            }
        }
        // Port packets have no place in a terminal session.
        Body::PortOpen(_) | Body::PortData(_) | Body::PortClose(_) => {}
        // Agent-to-client bodies.
        Body::Output(_) | Body::Exit(_) => {}
    }
}

/// The size a resize asks for; a zero or absurd dimension keeps `fallback`'s.
fn dimensions(size: &TerminalSize, fallback: (u16, u16)) -> (u16, u16) {
    let pick = |value: u32, fallback: u16| match u16::try_from(value) {
        Ok(value) if value > 0 => value,
        _ => fallback,
    };
    (pick(size.cols, fallback.0), pick(size.rows, fallback.1))
}

/// At most 64 characters of `[A-Za-z0-9._+-]` (it goes into the environment).
fn valid_term(term: &str) -> bool {
    !term.is_empty()
        && term.len() <= 64
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// The agent's own limit: the broker enforces max duration; this catches a broker that
/// did not (a minute of slack past it).
pub(super) fn backstop(start: &StartSession) -> Option<Instant> {
    (start.max_duration_seconds > 0)
        .then(|| Instant::now() + Duration::from_secs(start.max_duration_seconds + 60))
}

async fn sleep_until_instant(at: Option<Instant>) {
    sleep_until(at.map(Instant::into_std)).await;
}

/// Tells the client why the session cannot run (a line of output, then exit status 126)
/// and ends it.
async fn refuse(attachment: &mut Attachment, reason: &str, options: &SessionOptions) -> Outcome {
    tracing::warn!(%reason, "session refused");
    let link = attachment.link.clone();
    link.push_anyway(Body::Output(
        format!("bosun-agent: {reason}\r\n").into_bytes(),
    ));
    link.push_anyway(Body::Exit(Exit {
        code: EXIT_CANNOT_RUN,
    }));
    attachment.drain(options.exit_ack_wait).await;
    attachment.close();
    Outcome::Failed(reason.to_owned())
}

/// Hangs the session up: SIGHUP to its process group and the terminal's foreground group,
/// SIGKILL after `grace`.
async fn kill(child: &mut tokio::process::Child, leader: Option<Pid>, pty: &Pty, grace: Duration) {
    let groups: Vec<Pid> = leader.into_iter().chain(pty.foreground_group()).collect();
    for group in &groups {
        signal_group(*group, Signal::HUP);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        for group in &groups {
            signal_group(*group, Signal::KILL);
        }
        let _ = child.wait().await;
    }
}
