//! `bosun session start`: a shell or interactive command on a node. With a terminal on stdin
//! it is a raw-mode terminal (every key goes to the remote PTY, resizes follow SIGWINCH);
//! with a pipe, stdin is sent as typed input and end of input as Ctrl-D. The stream resumes by
//! itself after a network blip, and the process exits with the remote exit status.

use std::io::Write;

use anyhow::bail;
use bosun_proto::sessions::v1 as proto;
use bosun_session::client::{SessionClient, SessionEvent};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::terminal::{RawMode, stdin_is_terminal, term_name, window_size};
use super::{StartArgs, reconnect, start_request};
use crate::commands::Context;
use crate::connection::open_stream_channel;

/// Ctrl-D: what a terminal sends for end of input; a PTY's line discipline turns it into
/// end-of-file for the remote program.
const END_OF_INPUT: u8 = 0x04;
/// Chunks of stdin in flight between the reading thread and the session.
const STDIN_QUEUE: usize = 16;

/// Runs the session; returns the remote exit status (0 when it ended without one, e.g.
/// terminated or idle).
pub async fn start(ctx: &Context, args: StartArgs) -> anyhow::Result<i32> {
    let token = ctx.token()?;
    let mut sessions = ctx.connect_with(&token).await?.sessions();
    let started = sessions
        .start_session(start_request(&args))
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
    let interactive = stdin_is_terminal();
    if interactive {
        eprintln!(
            "Starting session {} on {}. Type `exit` (or Ctrl-D) to end it.",
            started.session_id, args.node
        );
    }
    // Raw mode from here until this function returns, by any path.
    let _raw = if interactive {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let writer = client.writer();
    let (cols, rows) = window_size();
    let term = term_name(std::env::var("TERM").ok().as_deref());
    writer.resize(cols, rows, Some(&term)).await?;

    // Keystrokes / piped input, on a task of their own so a full window never stops output.
    let mut input = read_stdin();
    let input_writer = writer.clone();
    tokio::spawn(async move {
        let mut last = b'\n';
        while let Some(chunk) = input.recv().await {
            let Some(chunk) = chunk else {
                // End of piped input: end the line if needed, then end-of-file.
                let end: &[u8] = if last == b'\n' {
                    &[END_OF_INPUT]
                } else {
                    &[END_OF_INPUT, END_OF_INPUT]
                };
                let _ = input_writer.send_input(end).await;
                return;
            };
            if let Some(byte) = chunk.last() {
                last = *byte;
            }
            if input_writer.send_input(&chunk).await.is_err() {
                return;
            }
        }
    });
    // Window size changes follow the terminal.
    if interactive {
        let mut resized = signal(SignalKind::window_change())?;
        let resize_writer = writer.clone();
        tokio::spawn(async move {
            while resized.recv().await.is_some() {
                let (cols, rows) = window_size();
                if resize_writer.resize(cols, rows, None).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // In raw mode Ctrl-C is a byte for the remote side; with a pipe it stops this command.
    let mut interrupt = signal(SignalKind::interrupt())?;

    let mut exit_code = None;
    let mut stdout = std::io::stdout();
    loop {
        let event = tokio::select! {
            event = client.next_event() => event,
            _ = hangup.recv() => return end_here(&mut sessions, &started.session_id, 129).await,
            _ = terminate.recv() => return end_here(&mut sessions, &started.session_id, 143).await,
            _ = interrupt.recv() => return end_here(&mut sessions, &started.session_id, 130).await,
        };
        match event {
            SessionEvent::Output(bytes) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            SessionEvent::Exit(code) => exit_code = Some(code),
            SessionEvent::Closed { status, reason } => {
                if interactive {
                    // The raw terminal wants CR LF.
                    eprint!("\r\nSession {} ended: {reason}.\r\n", started.session_id);
                }
                return match exit_code {
                    Some(code) => Ok(code),
                    None if status == "Failed" => bail!("the session failed: {reason}"),
                    None => {
                        if !interactive {
                            eprintln!("session {} ended: {reason}", started.session_id);
                        }
                        Ok(0)
                    }
                };
            }
            SessionEvent::Disconnected(reason) => {
                if interactive {
                    eprint!("\r\n[connection lost ({reason}); reconnecting]\r\n");
                } else {
                    eprintln!("connection lost ({reason}); reconnecting");
                }
                let resumed = reconnect(
                    &mut sessions,
                    &mut client,
                    &channel,
                    &token,
                    &started.session_id,
                )
                .await?;
                if !resumed {
                    bail!(
                        "session {} ended while disconnected; see `bosun session ls --history`",
                        started.session_id
                    );
                }
                if interactive {
                    eprint!("[reconnected]\r\n");
                    // The window may have changed while the stream was down.
                    let (cols, rows) = window_size();
                    let _ = writer.resize(cols, rows, None).await;
                } else {
                    eprintln!("reconnected");
                }
            }
            SessionEvent::PortData { .. } | SessionEvent::PortClose { .. } => {}
        }
    }
}

/// This process is asked to stop (hang-up, SIGTERM, Ctrl-C on a piped session): the session
/// goes with it, as a remote shell goes with its ssh.
async fn end_here(
    sessions: &mut crate::connection::SessionsClient,
    session_id: &str,
    code: i32,
) -> anyhow::Result<i32> {
    let _ = sessions
        .terminate_session(proto::TerminateSessionRequest {
            session_id: session_id.to_owned(),
        })
        .await;
    Ok(code)
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled, and a tokio
/// blocking task would hold the runtime's shutdown up until a key is pressed); `None` is end
/// of input. The thread dies with the process.
fn read_stdin() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel(STDIN_QUEUE);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 16 << 10];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => {
                    let _ = sender.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if sender.blocking_send(Some(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = sender.blocking_send(None);
                    return;
                }
            }
        }
    });
    receiver
}
