//! A pseudo-terminal for a session, with safe APIs only (`unsafe_code` is forbidden): the
//! master is non-blocking and polled by tokio; the child gets the slave as its stdio and, by
//! `setsid -c` (util-linux), as its controlling terminal in a new session — std offers no
//! safe `setsid()`/`TIOCSCTTY` between fork and exec.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Signal};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::net::unix::pipe;

/// The master side of a PTY, as two tokio handles on one open file (tokio's pipe types take
/// any non-blocking descriptor, unchecked; `AsyncFd` would need `unsafe`).
pub(super) struct Pty {
    reader: pipe::Receiver,
    writer: pipe::Sender,
}

/// What to run on the PTY.
pub(super) struct Spawn {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Switch to this uid/gid (the agent is root); `None`: run as the agent.
    pub ids: Option<(u32, u32)>,
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Opens a PTY of `cols`×`rows` and starts `spawn` on it. The agent keeps no slave
    /// descriptor, so reading the master ends (EIO) when the child and its children are gone.
    pub fn start(cols: u16, rows: u16, spawn: Spawn) -> io::Result<(Self, tokio::process::Child)> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::termios::tcsetwinsize(&master, winsize(cols, rows))?;
        rustix::fs::fcntl_setfl(&master, OFlags::NONBLOCK | OFlags::RDWR)?;

        let mut command = tokio::process::Command::new(setsid_path());
        // -c: the PTY (stdin) becomes the controlling terminal of the new session; -w: when
        // setsid has to fork, it waits and passes the status on.
        command
            .arg("-w")
            .arg("-c")
            .arg(&spawn.program)
            .args(&spawn.args)
            .env_clear()
            .envs(spawn.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&spawn.cwd)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(false);
        if let Some((uid, gid)) = spawn.ids {
            // std drops supplementary groups when root sets a uid.
            command.uid(uid).gid(gid);
        }
        let child = command.spawn()?;
        // `command` holds the slave descriptors until dropped.
        drop(command);
        let writer = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
        let reader = pipe::Receiver::from_owned_fd_unchecked(master)?;
        Ok((Self { reader, writer }, child))
    }

    /// Reads output; `Ok(0)` once the terminal is gone (the master reports EIO when no
    /// process holds the slave any more).
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            self.reader.readable().await?;
            match self.reader.try_read(buffer) {
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error)
                    if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) =>
                {
                    return Ok(0);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes input; returns how much was taken.
    pub async fn write(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            self.writer.writable().await?;
            match self.writer.try_write(data) {
                Ok(written) => return Ok(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Sets the window size (the kernel sends SIGWINCH to the foreground group).
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        rustix::termios::tcsetwinsize(&self.reader, winsize(cols, rows))?;
        Ok(())
    }

    /// The window size (columns, rows).
    pub fn size(&self) -> Option<(u16, u16)> {
        let size = rustix::termios::tcgetwinsize(&self.reader).ok()?;
        Some((size.ws_col, size.ws_row))
    }

    /// Signals the terminal's foreground process group (what Ctrl-C would reach).
    pub fn signal_foreground(&self, signal: Signal) -> io::Result<()> {
        let group = rustix::termios::tcgetpgrp(&self.reader)?;
        rustix::process::kill_process_group(group, signal)?;
        Ok(())
    }

    /// The foreground process group, if the terminal has one.
    pub fn foreground_group(&self) -> Option<Pid> {
        rustix::termios::tcgetpgrp(&self.reader).ok()
    }
}

/// util-linux `setsid`.
fn setsid_path() -> PathBuf {
    ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("setsid"))
}

/// Signals process group `group`; a group that is gone is not an error.
pub(super) fn signal_group(group: Pid, signal: Signal) {
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(error) => {
            tracing::warn!(group = group.as_raw_pid(), %error, "cannot signal a session's process group");
        }
    }
}
