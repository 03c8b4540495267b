//! Object key rules, checked before any backend sees a key, so that a key cannot escape
//! the local root (`..`) and means the same object on every backend.

use object_store::path::Path;

use crate::ObjectsError;

/// S3's own limit on key length, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// How much of an offending key an error repeats, so a huge key cannot flood a log line.
const KEY_IN_ERROR_CHARS: usize = 128;

/// Checks that `key` is usable on every backend. Rules, each reported by name in
/// [`ObjectsError::InvalidKey`]:
///
/// * not empty, and at most 1024 bytes;
/// * no leading `/` (keys are relative to the store's root or prefix);
/// * no control characters;
/// * no `..` or `.` segments (path traversal on the local store);
/// * no empty segments (`a//b`, trailing `/`), which object stores and file systems treat differently;
/// * the last segment does not end in `#` and digits, which the local store reserves for
///   uploads in progress.
pub fn validate_key(key: &str) -> Result<(), ObjectsError> {
    let invalid = |rule: &'static str| {
        Err(ObjectsError::InvalidKey {
            key: shorten(key),
            rule,
        })
    };
    if key.is_empty() {
        return invalid("must not be empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return invalid("must be at most 1024 bytes");
    }
    if key.starts_with('/') {
        return invalid("must not start with /");
    }
    if key.chars().any(char::is_control) {
        return invalid("must not contain control characters");
    }
    for segment in key.split('/') {
        match segment {
            ".." => return invalid("must not contain .. segments"),
            "." => return invalid("must not contain . segments"),
            "" => return invalid("must not contain empty segments (// or a trailing /)"),
            _ => {}
        }
    }
    let last_segment = key.rsplit('/').next().unwrap_or(key);
    if let Some((_, suffix)) = last_segment.rsplit_once('#')
        && !suffix.is_empty()
        && suffix.bytes().all(|byte| byte.is_ascii_digit())
    {
        return invalid("must not end in # followed by digits, reserved for uploads in progress");
    }
    Ok(())
}

fn shorten(key: &str) -> String {
    match key.char_indices().nth(KEY_IN_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_owned(),
    }
}

/// The backend path for a validated key.
pub(crate) fn object_path(key: &str) -> Result<Path, ObjectsError> {
    validate_key(key)?;
    Path::parse(key).map_err(|_| ObjectsError::InvalidKey {
        key: shorten(key),
        rule: "is not a valid object path",
    })
}

/// The backend path for a listing prefix: `""` is everything, one trailing `/` is allowed.
pub(crate) fn prefix_path(prefix: &str) -> Result<Option<Path>, ObjectsError> {
    if prefix.is_empty() {
        return Ok(None);
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    object_path(trimmed).map(Some).map_err(|error| match error {
        // Report the prefix the caller passed, not our trimmed copy of it.
        ObjectsError::InvalidKey { rule, .. } => ObjectsError::InvalidKey {
            key: shorten(prefix),
            rule,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(key: &str) -> &'static str {
        match validate_key(key) {
            Err(ObjectsError::InvalidKey { rule, .. }) => rule,
            other => panic!("{key:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_keys_are_valid() {
        for key in [
            "a",
            "commands/0193e3c1-7b7a-7c1e-9f3e-0a1b2c3d4e5f/node-1/stdout",
            "sessions/2025-01-01T00:00:00Z/transcript.cast",
            "odd chars/%#?&=+,;@ü",
            "release#v2",
            "a#",
            "a.b/..c/c..",
            &"k".repeat(MAX_KEY_BYTES),
        ] {
            assert!(
                validate_key(key).is_ok(),
                "{key:?}: {:?}",
                validate_key(key)
            );
        }
    }

    #[test]
    fn each_rule_is_reported() {
        assert_eq!(rule_of(""), "must not be empty");
        assert_eq!(
            rule_of(&"k".repeat(MAX_KEY_BYTES + 1)),
            "must be at most 1024 bytes"
        );
        assert_eq!(rule_of("/etc/passwd"), "must not start with /");
        assert_eq!(rule_of("a\nb"), "must not contain control characters");
        assert_eq!(rule_of("a\u{7f}b"), "must not contain control characters");
        assert_eq!(rule_of(".."), "must not contain .. segments");
        assert_eq!(rule_of("../../etc/passwd"), "must not contain .. segments");
        assert_eq!(rule_of("a/../../b"), "must not contain .. segments");
        assert_eq!(rule_of("a/./b"), "must not contain . segments");
        assert_eq!(
            rule_of("a//b"),
            "must not contain empty segments (// or a trailing /)"
        );
        assert_eq!(
            rule_of("a/"),
            "must not contain empty segments (// or a trailing /)"
        );
        assert_eq!(
            rule_of("out#12"),
            "must not end in # followed by digits, reserved for uploads in progress"
        );
    }

    #[test]
    fn long_keys_are_shortened_in_errors() {
        let key = format!("/{}", "k".repeat(5000));
        let Err(ObjectsError::InvalidKey { key: reported, .. }) = validate_key(&key) else {
            panic!("a leading / is invalid");
        };
        assert_eq!(reported.chars().count(), KEY_IN_ERROR_CHARS + 1);
        assert!(reported.ends_with('…'));
    }

    #[test]
    fn every_valid_key_is_a_valid_object_path() {
        for key in ["a", "a/b/c", "odd chars/%#?&=+,;@ü", "x#y"] {
            let path = object_path(key).expect("valid");
            assert_eq!(path.as_ref(), key);
        }
    }

    #[test]
    fn prefixes_allow_empty_and_one_trailing_slash() {
        assert_eq!(prefix_path("").expect("empty lists everything"), None);
        assert_eq!(
            prefix_path("commands/1/")
                .expect("trailing slash")
                .map(|p| p.to_string()),
            Some("commands/1".to_owned())
        );
        assert!(prefix_path("/").is_err());
        assert!(prefix_path("commands//").is_err());
        assert!(prefix_path("../x").is_err());
    }
}
