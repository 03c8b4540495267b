//! What the CLI reads besides flags: passwords and API keys (from a prompt or one stdin
//! line) and policy documents (a file, stdin, or inline JSON).

use std::io::{BufRead, IsTerminal, Read};

use anyhow::{Context, bail};

/// Reads one line and drops its line ending; an empty line is an error because an empty
/// secret is never what the operator meant (usually an empty pipe).
pub fn read_secret_line(reader: &mut impl BufRead, what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    let secret = line.strip_suffix('\n').unwrap_or(&line);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        bail!("no {what} on stdin");
    }
    Ok(secret.to_owned())
}

/// The login password: from stdin with `--password-stdin`, else from a prompt on the
/// terminal.
pub fn login_secret(from_stdin: bool, what: &str, prompt: &str) -> anyhow::Result<String> {
    if from_stdin {
        return read_secret_line(&mut std::io::stdin().lock(), what);
    }
    require_terminal()?;
    let secret = rpassword::prompt_password(prompt).context("cannot read the password")?;
    if secret.is_empty() {
        bail!("empty {what}");
    }
    Ok(secret)
}

/// A new password: from stdin, or typed twice at the terminal so a typo cannot lock a
/// user out.
pub fn new_password(from_stdin: bool, whose: &str) -> anyhow::Result<String> {
    if from_stdin {
        return read_secret_line(&mut std::io::stdin().lock(), "password");
    }
    require_terminal()?;
    let first = rpassword::prompt_password(format!("new password for {whose}: "))
        .context("cannot read the password")?;
    if first.is_empty() {
        bail!("empty password");
    }
    let second =
        rpassword::prompt_password("repeat the password: ").context("cannot read the password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

fn require_terminal() -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        Ok(())
    } else {
        bail!("stdin is not a terminal, so there is no one to prompt; pass --password-stdin")
    }
}

/// A `--policy NAME=SOURCE` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyArg {
    pub name: String,
    pub source: String,
}

/// clap value parser for `NAME=FILE_OR_JSON`.
pub fn parse_policy_arg(value: &str) -> Result<PolicyArg, String> {
    match value.split_once('=') {
        Some((name, source)) if !name.is_empty() && !source.is_empty() => Ok(PolicyArg {
            name: name.to_owned(),
            source: source.to_owned(),
        }),
        _ => Err("expected NAME=FILE_OR_JSON, e.g. readonly=./readonly.json".to_owned()),
    }
}

/// Reads a policy document: `-` is stdin, text starting with `{` is the JSON itself,
/// anything else a file path. The JSON is checked here so a typo fails before any call;
/// the server still checks the policy grammar.
pub fn read_policy_document(
    policy: &str,
    source: &str,
    stdin: &mut impl Read,
) -> anyhow::Result<String> {
    let text = if source == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .with_context(|| format!("policy {policy}: cannot read the document from stdin"))?;
        text
    } else if source.trim_start().starts_with('{') {
        source.to_owned()
    } else {
        std::fs::read_to_string(source)
            .with_context(|| format!("policy {policy}: cannot read {source}"))?
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("policy {policy}: the document is not valid json"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_line_loses_only_its_line_ending() -> anyhow::Result<()> {
        let mut input = " pass word \r\nnext line\n".as_bytes();
        assert_eq!(read_secret_line(&mut input, "password")?, " pass word ");
        let mut input = "no-newline".as_bytes();
        assert_eq!(read_secret_line(&mut input, "password")?, "no-newline");
        Ok(())
    }

    #[test]
    fn an_empty_secret_is_refused() {
        for input in ["", "\n", "\r\n"] {
            let err = read_secret_line(&mut input.as_bytes(), "api key")
                .err()
                .map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some("no api key on stdin"), "{input:?}");
        }
    }

    #[test]
    fn policy_args_need_a_name_and_a_source() {
        assert_eq!(
            parse_policy_arg("ro=./ro.json"),
            Ok(PolicyArg {
                name: "ro".into(),
                source: "./ro.json".into()
            })
        );
        // Only the first `=` splits, so inline JSON may contain more.
        assert_eq!(
            parse_policy_arg(r#"ro={"a":"b=c"}"#).map(|p| p.source),
            Ok(r#"{"a":"b=c"}"#.to_owned())
        );
        for bad in ["ro", "=x", "ro="] {
            assert!(parse_policy_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_documents_come_from_inline_stdin_or_file() -> anyhow::Result<()> {
        let doc = r#"{"Statement":[]}"#;
        let mut no_stdin = std::io::empty();
        assert_eq!(read_policy_document("p", doc, &mut no_stdin)?, doc);
        assert_eq!(read_policy_document("p", "-", &mut doc.as_bytes())?, doc);

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.json");
        std::fs::write(&path, doc)?;
        let path = path.to_string_lossy().into_owned();
        assert_eq!(read_policy_document("p", &path, &mut no_stdin)?, doc);

        let err = read_policy_document("p", "{nope", &mut no_stdin)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("policy p: the document is not valid json")
        );
        let missing = read_policy_document("p", "/no/such/file.json", &mut no_stdin);
        assert!(missing.is_err());
        Ok(())
    }
}
