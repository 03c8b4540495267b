//! The local terminal of `bosun session start`: raw mode while the session runs (every key,
//! Ctrl-C, Ctrl-Z, Ctrl-S included, goes to the remote side untouched), restored on every way
//! out, and the window size for resizes.

use std::io::IsTerminal;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Size used when stdout is not a terminal (a pipe gives the remote PTY something sane).
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;

/// Whether stdin is a terminal (a person typing), not a pipe or a file.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's size as (cols, rows): stdout's, else stdin's, else 80x24.
pub fn window_size() -> (u16, u16) {
    for size in [
        tcgetwinsize(std::io::stdout()),
        tcgetwinsize(std::io::stdin()),
    ]
    .into_iter()
    .flatten()
    {
        if size.ws_col > 0 && size.ws_row > 0 {
            return (size.ws_col, size.ws_row);
        }
    }
    (DEFAULT_COLS, DEFAULT_ROWS)
}

/// `$TERM`, checked against what the protocol accepts (else `xterm-256color`, which every
/// modern terminal emulator and tmux understand).
pub fn term_name(value: Option<&str>) -> String {
    match value {
        Some(term)
            if !term.is_empty()
                && term.len() <= 64
                && term
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')) =>
        {
            term.to_owned()
        }
        _ => "xterm-256color".to_owned(),
    }
}

/// Raw mode on stdin until dropped: the saved settings are put back when this goes out of
/// scope, so an error, a remote exit, a signal handled by the session loop or a panic all
/// leave the terminal as it was found.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Saves stdin's settings and switches it to raw mode (cfmakeraw: no echo, no line
    /// editing, no signals from keys, no CR/NL translation, 8-bit bytes).
    pub fn enable() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        // TCSAFLUSH like cfmakeraw's callers: input typed before raw mode is discarded rather
        // than sent as if typed in it.
        tcsetattr(&stdin, OptionalActions::Flush, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Drain: output already written reaches the terminal under the old settings' rules
        // only after it has been shown under the raw ones.
        if let Err(error) = tcsetattr(std::io::stdin(), OptionalActions::Drain, &self.saved) {
            eprintln!("\r\nbosun: could not restore the terminal ({error}); run `reset`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_names_are_checked() {
        assert_eq!(term_name(Some("screen-256color")), "screen-256color");
        assert_eq!(term_name(Some("tmux-256color")), "tmux-256color");
        assert_eq!(term_name(None), "xterm-256color");
        assert_eq!(term_name(Some("")), "xterm-256color");
        assert_eq!(term_name(Some("x\u{1b}[31m")), "xterm-256color");
    }
}
