//! Who a session runs as. A root agent runs it as the message's `run_as` (creating the
//! unprivileged `bosun-user` when missing; root only when the message literally says `root`);
//! an agent that is not root runs it as itself, and refuses any other named user.

use std::path::{Path, PathBuf};

/// The user `run_as` names when the document's run-as is off.
pub(super) const DEFAULT_USER: &str = "bosun-user";

/// A resolved OS user.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// The login shell (bash rather than a bare `/bin/sh` when bash exists).
    pub shell: PathBuf,
    /// Whether to switch to `uid`/`gid` (the agent is root).
    pub switch: bool,
}

impl RunAs {
    /// The environment of the session's shell or command.
    pub fn env(&self, term: &str) -> Vec<(String, String)> {
        let path = if self.uid == 0 {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        } else {
            "/usr/local/bin:/usr/bin:/bin"
        };
        let lang = std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into());
        vec![
            ("HOME".into(), self.home.display().to_string()),
            ("USER".into(), self.name.clone()),
            ("LOGNAME".into(), self.name.clone()),
            ("SHELL".into(), self.shell.display().to_string()),
            ("PATH".into(), path.into()),
            ("TERM".into(), term.into()),
            ("LANG".into(), lang),
        ]
    }

    /// The working directory: the home directory, or `/` when it does not exist.
    pub fn cwd(&self) -> PathBuf {
        if self.home.is_dir() {
            self.home.clone()
        } else {
            PathBuf::from("/")
        }
    }

    /// The uid/gid to switch to, if any.
    pub fn ids(&self) -> Option<(u32, u32)> {
        self.switch.then_some((self.uid, self.gid))
    }
}

/// Resolves `run_as` for this agent; `Err` is the reason shown to the user.
pub(super) async fn resolve(run_as: &str) -> Result<RunAs, String> {
    if !valid_user_name(run_as) {
        return Err(format!("{run_as:?} is not a valid user name"));
    }
    let agent_uid = rustix::process::getuid().as_raw();
    let wanted = if run_as.is_empty() {
        DEFAULT_USER
    } else {
        run_as
    };
    if agent_uid != 0 {
        let me = lookup_uid(agent_uid)
            .await
            .ok_or_else(|| format!("the agent's own user (uid {agent_uid}) is not in passwd"))?;
        if wanted == DEFAULT_USER || wanted == me.name {
            return Ok(RunAs {
                switch: false,
                ..me
            });
        }
        return Err(format!(
            "cannot run as {wanted}: the agent runs as {}, not root, and can start sessions only as itself",
            me.name
        ));
    }
    if let Some(user) = lookup_name(wanted).await {
        return Ok(user);
    }
    if wanted != DEFAULT_USER {
        return Err(format!("user {wanted} does not exist on this node"));
    }
    create_default_user().await?;
    lookup_name(wanted)
        .await
        .ok_or_else(|| format!("user {DEFAULT_USER} was created but cannot be found"))
}

/// Empty (the default user) or a portable user name: `[A-Za-z0-9._-]`, not starting with
/// `-`, at most 32 characters (it is passed to `getent`).
fn valid_user_name(name: &str) -> bool {
    name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `useradd --system --create-home --shell /bin/bash bosun-user`: no password, no sudo, no
/// extra groups.
async fn create_default_user() -> Result<(), String> {
    let output = tokio::process::Command::new("useradd")
        .args([
            "--system",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--comment",
            "Bosun session user",
            DEFAULT_USER,
        ])
        .output()
        .await
        .map_err(|error| format!("cannot run useradd to create {DEFAULT_USER}: {error}"))?;
    // Exit 9: it exists (another session created it meanwhile).
    if output.status.success() || output.status.code() == Some(9) {
        tracing::info!(user = DEFAULT_USER, "created the session user");
        return Ok(());
    }
    Err(format!(
        "cannot create {DEFAULT_USER}: useradd: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

async fn lookup_name(name: &str) -> Option<RunAs> {
    lookup(|entry| entry.name == name, name).await
}

async fn lookup_uid(uid: u32) -> Option<RunAs> {
    lookup(|entry| entry.uid == uid, &uid.to_string()).await
}

/// `/etc/passwd` first, then `getent passwd` (users from NSS: LDAP, sssd).
async fn lookup(matches: impl Fn(&RunAs) -> bool, key: &str) -> Option<RunAs> {
    if let Ok(text) = tokio::fs::read_to_string("/etc/passwd").await
        && let Some(entry) = text.lines().filter_map(parse_passwd_line).find(&matches)
    {
        return Some(entry);
    }
    let output = tokio::process::Command::new("getent")
        .args(["passwd", key])
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_passwd_line)
        .find(&matches)
}

/// `name:x:uid:gid:gecos:home:shell`.
fn parse_passwd_line(line: &str) -> Option<RunAs> {
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 || fields[0].is_empty() {
        return None;
    }
    Some(RunAs {
        name: fields[0].to_owned(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
        home: PathBuf::from(fields[5]),
        shell: login_shell(fields[6]),
        switch: true,
    })
}

/// The user's shell; `/bin/sh` (or none) becomes bash when bash is installed. A `nologin`
/// shell is kept: the administrator meant it.
fn login_shell(shell: &str) -> PathBuf {
    let bash = Path::new("/bin/bash");
    match shell {
        "" | "/bin/sh" | "/usr/bin/sh" if bash.exists() => bash.to_path_buf(),
        "" => PathBuf::from("/bin/sh"),
        other if Path::new(other).exists() => PathBuf::from(other),
        _ if bash.exists() => bash.to_path_buf(),
        _ => PathBuf::from("/bin/sh"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_are_parsed() {
        let user =
            parse_passwd_line("alice:x:1001:1002:Alice:/home/alice:/bin/zsh-missing").unwrap();
        assert_eq!((user.uid, user.gid), (1001, 1002));
        assert_eq!(user.home, PathBuf::from("/home/alice"));
        assert!(
            user.shell.exists(),
            "a missing shell falls back to one that exists"
        );
        assert!(parse_passwd_line("broken:x:1").is_none());
        assert!(parse_passwd_line("bad:x:uid:1:g:/h:/bin/sh").is_none());
    }

    #[test]
    fn user_names_are_checked_before_use() {
        for good in ["", "root", "bosun-user", "svc_app.1"] {
            assert!(valid_user_name(good), "{good}");
        }
        for bad in ["-x", "a b", "../etc", "a:b", &"x".repeat(33)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }
}
