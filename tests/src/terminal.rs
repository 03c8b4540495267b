//! A pseudo-terminal for end-to-end tests of terminal programs (`bosun session start`): the
//! test holds the master side, types keys, changes the window size and reads the screen's
//! bytes.

use std::time::{Duration, Instant};

use anyhow::bail;

/// A pseudo-terminal for the CLI: the test holds the master and a slave descriptor (to look at
/// the terminal's settings), and everything the CLI writes is collected by a thread.
pub struct TestTerminal {
    master: std::fs::File,
    /// Held so the terminal outlives the program on it, and to look at its settings.
    pub slave: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl TestTerminal {
    pub fn open(cols: u16, rows: u16) -> anyhow::Result<Self> {
        use std::os::unix::ffi::OsStrExt;

        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
        let master = std::fs::File::from(master);
        let terminal = TestTerminal {
            master,
            slave,
            output: Default::default(),
        };
        terminal.resize(cols, rows)?;
        let mut reader = terminal.master.try_clone()?;
        let output = terminal.output.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    return;
                }
                output
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&buffer[..n]);
            }
        });
        Ok(terminal)
    }

    /// Sets the window size; the kernel sends SIGWINCH to the terminal's foreground group.
    pub fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        rustix::termios::tcsetwinsize(
            &self.master,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        Ok(())
    }

    pub fn type_keys(&self, keys: &[u8]) -> anyhow::Result<()> {
        use std::io::Write;
        (&self.master).write_all(keys)?;
        Ok(())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .output
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }

    pub async fn wait_for(&self, needle: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(needle) {
            if Instant::now() > deadline {
                bail!(
                    "no {needle:?} on the terminal within 20 s: {:?}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Canonical mode and echo: what a shell's terminal has between programs.
    pub fn is_cooked(&self) -> anyhow::Result<bool> {
        use rustix::termios::LocalModes;
        let settings = rustix::termios::tcgetattr(&self.slave)?;
        Ok(settings
            .local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG))
    }
}
