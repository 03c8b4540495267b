//! The operator's stored tokens: `credentials.json` in the config directory, one entry per
//! server URL, readable by its owner only.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "credentials.json";

/// The token of one login to one server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    pub server: String,
    pub token: String,
    pub principal: String,
    pub expires_at: Option<DateTime<Utc>>,
}

// Hand-written so that a `{:?}` in an error or a log can never print the token.
impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The whole file. `servers` is keyed by the normalized server URL.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CredentialsFile {
    #[serde(default)]
    servers: BTreeMap<String, StoredCredential>,
}

/// Where credentials live, and the only code that reads or writes them.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
}

/// Trims surrounding space and trailing slashes, so `http://h:7070/` and `http://h:7070`
/// share one stored token.
pub fn normalize_server(server: &str) -> String {
    server.trim().trim_end_matches('/').to_owned()
}

impl CredentialStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Picks the directory from `BOSUN_CONFIG_DIR`, else `XDG_CONFIG_HOME/bosun`, else
    /// `HOME/.config/bosun`. The environment is passed in so tests need not set process
    /// variables; empty values count as unset, as the XDG spec says.
    pub fn from_env(lookup: impl Fn(&str) -> Option<OsString>) -> anyhow::Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        if let Some(dir) = get("BOSUN_CONFIG_DIR") {
            return Ok(Self::new(PathBuf::from(dir)));
        }
        if let Some(xdg) = get("XDG_CONFIG_HOME") {
            return Ok(Self::new(PathBuf::from(xdg).join("bosun")));
        }
        if let Some(home) = get("HOME") {
            return Ok(Self::new(PathBuf::from(home).join(".config").join("bosun")));
        }
        bail!("cannot find a config directory: set BOSUN_CONFIG_DIR or HOME")
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored credential for `server`, if any.
    pub fn get(&self, server: &str) -> anyhow::Result<Option<StoredCredential>> {
        Ok(self.load()?.servers.remove(&normalize_server(server)))
    }

    /// Stores `credential` under its server, replacing an older login to the same server and
    /// keeping the others.
    pub fn put(&self, credential: StoredCredential) -> anyhow::Result<()> {
        let mut file = self.load()?;
        let key = normalize_server(&credential.server);
        file.servers.insert(
            key.clone(),
            StoredCredential {
                server: key,
                ..credential
            },
        );
        self.save(&file)
    }

    /// Forgets the token for `server`; returns what was forgotten.
    pub fn remove(&self, server: &str) -> anyhow::Result<Option<StoredCredential>> {
        let mut file = self.load()?;
        let removed = file.servers.remove(&normalize_server(server));
        if removed.is_some() {
            self.save(&file)?;
        }
        Ok(removed)
    }

    fn load(&self) -> anyhow::Result<CredentialsFile> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(CredentialsFile::default()),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        warn_if_readable_by_others(&path);
        serde_json::from_str(&text).with_context(|| {
            format!(
                "cannot parse {}; delete it and log in again",
                path.display()
            )
        })
    }

    /// Writes a fresh file beside the old one and renames it over, so a crash never leaves a
    /// half-written file and the new file has mode 0600 from its first byte.
    fn save(&self, file: &CredentialsFile) -> anyhow::Result<()> {
        create_private_dir(&self.dir)?;
        let path = self.path();
        let temp = self
            .dir
            .join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(file).context("cannot encode credentials")?;
        // A leftover from a crashed run with our pid would make create_new fail.
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", temp.display()));
            }
        }
        let write = || -> std::io::Result<()> {
            let mut out = private_file_options().open(&temp)?;
            out.write_all(text.as_bytes())?;
            out.write_all(b"\n")?;
            out.sync_all()?;
            fs::rename(&temp, &path)
        };
        if let Err(err) = write() {
            let _ = fs::remove_file(&temp);
            return Err(err).with_context(|| format!("cannot write {}", path.display()));
        }
        Ok(())
    }
}

fn private_file_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates the config directory with mode 0700. Parents get the default mode: they are
/// shared directories like `~/.config`, not ours to lock down.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Ok(()) => Ok(()),
        // Another bosun process may have created it between the check and here.
        Err(err) if err.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create directory {}", dir.display())),
    }
}

/// A token file others can read is a leaked token. ssh refuses such a key file; we only warn,
/// because refusing would lock the operator out in the middle of an incident.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} is readable by other users; run chmod 600 on it",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(server: &str, token: &str) -> StoredCredential {
        StoredCredential {
            server: server.to_owned(),
            token: token.to_owned(),
            principal: "user/admin".to_owned(),
            expires_at: DateTime::from_timestamp(1_900_000_000, 0),
        }
    }

    #[cfg(unix)]
    #[test]
    fn file_is_created_0600_in_a_0700_directory() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir()?;
        let dir = root.path().join("nested").join("bosun");
        let store = CredentialStore::new(dir.clone());
        store.put(credential("http://a:7070", "tok-a"))?;

        let file_mode = fs::metadata(store.path())?.permissions().mode() & 0o777;
        let dir_mode = fs::metadata(&dir)?.permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600, "credentials file mode {file_mode:o}");
        assert_eq!(dir_mode, 0o700, "config directory mode {dir_mode:o}");

        // A rewrite replaces the file; the replacement must be private too.
        store.put(credential("http://b:7070", "tok-b"))?;
        let file_mode = fs::metadata(store.path())?.permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(names, vec![OsString::from(FILE_NAME)]);
        Ok(())
    }

    #[test]
    fn round_trip_keeps_every_field() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let store = CredentialStore::new(root.path().join("bosun"));
        assert_eq!(store.get("http://a:7070")?, None);
        let stored = credential("http://a:7070", "tok-a");
        store.put(stored.clone())?;
        assert_eq!(store.get("http://a:7070")?, Some(stored));
        Ok(())
    }

    #[test]
    fn entries_are_keyed_by_server() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let store = CredentialStore::new(root.path().join("bosun"));
        store.put(credential("http://a:7070", "tok-a"))?;
        store.put(credential("http://b:7070/", "tok-b"))?;
        // A second login to the same server replaces only its own token.
        store.put(credential("http://a:7070", "tok-a2"))?;

        let keys: Vec<String> = store.load()?.servers.into_keys().collect();
        assert_eq!(keys, ["http://a:7070", "http://b:7070"]);
        let a = store.get("http://a:7070/")?.map(|c| c.token);
        let b = store.get("http://b:7070")?.map(|c| c.token);
        assert_eq!(a.as_deref(), Some("tok-a2"));
        assert_eq!(b.as_deref(), Some("tok-b"));

        let removed = store.remove("http://a:7070")?;
        assert_eq!(removed.map(|c| c.token).as_deref(), Some("tok-a2"));
        assert_eq!(store.get("http://a:7070")?, None);
        assert!(store.get("http://b:7070")?.is_some());
        assert_eq!(store.remove("http://a:7070")?, None);
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let store = CredentialStore::new(root.path().to_path_buf());
        fs::write(store.path(), "{not json")?;
        let err = store.get("http://a:7070").err().map(|e| format!("{e:#}"));
        let err = err.unwrap_or_default();
        assert!(err.starts_with("cannot parse "), "{err}");
        assert!(err.contains("log in again"), "{err}");
        Ok(())
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", credential("http://a:7070", "super-secret"));
        assert!(!shown.contains("super-secret"), "{shown}");
    }

    #[test]
    fn directory_follows_the_environment_in_order() -> anyhow::Result<()> {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| OsString::from(value))
            }
        };
        let all = CredentialStore::from_env(env(&[
            ("BOSUN_CONFIG_DIR", "/etc/b"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]))?;
        assert_eq!(all.path(), PathBuf::from("/etc/b/credentials.json"));
        let xdg = CredentialStore::from_env(env(&[
            ("BOSUN_CONFIG_DIR", ""),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]))?;
        assert_eq!(xdg.path(), PathBuf::from("/x/bosun/credentials.json"));
        let home = CredentialStore::from_env(env(&[("HOME", "/h")]))?;
        assert_eq!(
            home.path(),
            PathBuf::from("/h/.config/bosun/credentials.json")
        );
        assert!(CredentialStore::from_env(env(&[])).is_err());
        Ok(())
    }
}
