//! Hiding passwords in database URLs before they reach an error message or a log line.
//!
//! Redaction errs on the side of hiding too much: a URL that does not parse still has
//! everything between `://` and the last `@` replaced, because we cannot tell where a
//! malformed password ends.

/// What replaces a secret in a redacted URL.
const MASK: &str = "***";

/// Query parameters whose values are secrets (libpq and sqlx both accept `password`).
fn is_secret_query_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// Returns `url` with any password (in the user-info part or a `password=` query
/// parameter) replaced by `***`, suitable for logs and error messages.
///
/// ```
/// assert_eq!(
///     bosun_store::redact_url("postgres://bosun:hunter2@db:5432/bosun"),
///     "postgres://bosun:***@db:5432/bosun"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => redact_parsed(parsed).unwrap_or_else(|| redact_text(url)),
        Err(_) => redact_text(url),
    }
}

/// Redacts a URL that parsed; `None` when the URL cannot carry a password we could
/// replace structurally (then the textual fallback runs).
fn redact_parsed(mut parsed: url::Url) -> Option<String> {
    if parsed.password().is_some() && parsed.set_password(Some(MASK)).is_err() {
        return None;
    }
    let has_secret_query = parsed
        .query_pairs()
        .any(|(key, _)| is_secret_query_key(&key));
    if has_secret_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_query_key(&key) {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(parsed.to_string())
}

/// Textual redaction for URLs the `url` crate rejects (bad port, stray characters).
fn redact_text(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let mut redacted = String::with_capacity(url.len());
    match url.find("://") {
        Some(scheme_end) => {
            let authority_start = scheme_end + 3;
            // The last `@` anywhere ends the user info: a password may itself contain `@`,
            // `/` or `?` when the URL is malformed, and hiding too much is the safe mistake.
            match url[authority_start..].rfind('@') {
                Some(at) => {
                    let at = authority_start + at;
                    let user_info = &url[authority_start..at];
                    redacted.push_str(&url[..authority_start]);
                    match user_info.split_once(':') {
                        Some((user, _password)) => {
                            redacted.push_str(user);
                            redacted.push(':');
                            redacted.push_str(MASK);
                        }
                        None => redacted.push_str(user_info),
                    }
                    redacted.push_str(&url[at..]);
                    return redact_query_text(&redacted);
                }
                None => redacted.push_str(before_query),
            }
        }
        None => redacted.push_str(before_query),
    }
    if let Some(query) = query {
        redacted.push('?');
        redacted.push_str(query);
    }
    redact_query_text(&redacted)
}

/// Replaces the values of secret query parameters in an unparsed URL.
fn redact_query_text(url: &str) -> String {
    let Some((before, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_query_key(key) => format!("{key}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{before}?{}", query.join("&"))
}

/// The secrets a URL carries, raw and percent-decoded, so that they can be scrubbed
/// from error text produced by drivers that might echo them.
fn secrets_in(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let mut push = |secret: &str| {
        if !secret.is_empty() && secret != MASK {
            secrets.push(secret.to_owned());
            if let Ok(decoded) = percent_decode(secret)
                && decoded != secret
            {
                secrets.push(decoded);
            }
        }
    };
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = rest.rfind('@')
            && let Some((_, password)) = rest[..at].split_once(':')
        {
            push(password);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_query_key(key)
            {
                push(value);
            }
        }
    }
    secrets
}

/// Minimal percent-decoding, enough to recognise an encoded password in error text.
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && index + 2 < bytes.len()
            && let (Some(high), Some(low)) =
                (hex_value(bytes[index + 1]), hex_value(bytes[index + 2]))
        {
            decoded.push(high << 4 | low);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    String::from_utf8(decoded)
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// Removes every secret carried by `url` from `text` (an error message built from it).
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let mut secrets = secrets_in(url);
    // Longest first, so that a secret containing another is replaced whole.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut scrubbed = text.to_owned();
    for secret in secrets {
        scrubbed = scrubbed.replace(&secret, MASK);
    }
    scrubbed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_in_user_info_is_hidden() {
        assert_eq!(
            redact_url("postgres://bosun:hunter2@db.internal:5432/bosun"),
            "postgres://bosun:***@db.internal:5432/bosun"
        );
    }

    #[test]
    fn url_without_password_is_unchanged() {
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn password_query_parameter_is_hidden() {
        let redacted =
            redact_url("postgres://db/bosun?user=bosun&password=hunter2&sslmode=require");
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("sslmode=require"), "{redacted}");
    }

    #[test]
    fn unparseable_url_still_hides_password() {
        for url in [
            "postgres://bosun:hunter2@db:notaport/bosun",
            "postgres://bosun:hun/ter@2@db:notaport/bosun",
            "postgres://bosun:hunter2@db:99999999/bosun?password=hunter2",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("hunter2"), "{url} -> {redacted}");
            assert!(!redacted.contains("ter@2"), "{url} -> {redacted}");
            assert!(
                redacted.starts_with("postgres://bosun:***@"),
                "{url} -> {redacted}"
            );
        }
    }

    #[test]
    fn scrub_removes_raw_and_decoded_passwords() {
        let url = "postgres://bosun:p%40ss%2Fword@db:5432/bosun";
        let text = "failed for p@ss/word and p%40ss%2Fword";
        assert_eq!(scrub(text, url), "failed for *** and ***");
    }
}
