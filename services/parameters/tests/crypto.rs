//! SecureString envelope encryption: round trip, name binding, tampering, unknown keys,
//! rewrap, key files, and no secrets in Debug, Display or errors.

mod common;

use bosun_core::error::ApiError;
use bosun_parameters::crypto::validate_key_id;
use bosun_parameters::{CryptoError, DEFAULT_KEY_ID, Envelope, MasterKeyRing, ParameterName};
use common::{reason, seen};
use secrecy::ExposeSecret;

const SECRET: &str = "hunter2-Sup3rS3cret";

fn name(text: &str) -> ParameterName {
    ParameterName::parse(text).expect("valid name")
}

fn ring() -> MasterKeyRing {
    MasterKeyRing::generate_default().expect("key ring")
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET), "plaintext leaked: {text}");
    assert!(!text.contains("hunter2"), "plaintext leaked: {text}");
}

#[test]
fn round_trip_through_bytes_and_base64() {
    let ring = ring();
    let envelope = ring
        .encrypt(&name("/app/db/password"), SECRET, DEFAULT_KEY_ID)
        .expect("encrypt");
    assert_eq!(envelope.key_id(), DEFAULT_KEY_ID);
    let bytes = envelope.to_bytes();
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "stored bytes hold the plaintext"
    );
    let stored = Envelope::from_bytes(&bytes).expect("parse bytes");
    assert_eq!(stored, envelope);
    let from_text = Envelope::from_base64(&envelope.to_base64()).expect("parse base64");
    let plain = ring
        .decrypt(&name("/app/db/password"), &from_text)
        .expect("decrypt");
    assert_eq!(plain.expose_secret(), SECRET);
}

#[test]
fn each_encryption_uses_fresh_keys_and_nonces() {
    let ring = ring();
    let n = name("/p");
    let a = ring.encrypt(&n, SECRET, DEFAULT_KEY_ID).expect("encrypt");
    let b = ring.encrypt(&n, SECRET, DEFAULT_KEY_ID).expect("encrypt");
    assert_ne!(a.to_bytes(), b.to_bytes());
    assert_ne!(a.ciphertext(), b.ciphertext());
}

#[test]
fn empty_and_large_values_round_trip() {
    let ring = ring();
    for value in [String::new(), "é✓".repeat(2000)] {
        let envelope = ring
            .encrypt(&name("/p"), &value, DEFAULT_KEY_ID)
            .expect("encrypt");
        let plain = ring.decrypt(&name("/p"), &envelope).expect("decrypt");
        assert_eq!(plain.expose_secret(), value);
    }
}

#[test]
fn ciphertext_copied_to_another_name_fails() {
    let ring = ring();
    let envelope = ring
        .encrypt(&name("/app/a"), SECRET, DEFAULT_KEY_ID)
        .expect("encrypt");
    for other in ["/app/b", "/app/A", "/app/a/b"] {
        let error = ring.decrypt(&name(other), &envelope).expect_err(other);
        assert!(matches!(error, CryptoError::DecryptFailed(_)), "{other}");
        assert_no_secret(&error.to_string());
        assert_no_secret(&format!("{error:?}"));
    }
}

#[test]
fn tampering_anywhere_fails() {
    let ring = ring();
    let n = name("/p");
    let bytes = ring
        .encrypt(&n, SECRET, DEFAULT_KEY_ID)
        .expect("encrypt")
        .to_bytes();
    // Flip each byte after the key id in turn: wrapped key, nonces, ciphertext, tag.
    let header = 3 + DEFAULT_KEY_ID.len();
    for index in header..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[index] ^= 0x01;
        let envelope = Envelope::from_bytes(&tampered).expect("still well formed");
        let error = ring.decrypt(&n, &envelope).expect_err("tampered");
        assert!(
            matches!(error, CryptoError::DecryptFailed(_)),
            "byte {index}"
        );
    }
}

#[test]
fn malformed_envelopes_are_errors_not_panics() {
    let ring = ring();
    let good = ring
        .encrypt(&name("/p"), SECRET, DEFAULT_KEY_ID)
        .expect("encrypt")
        .to_bytes();
    for length in 0..good.len().min(120) {
        if let Ok(envelope) = Envelope::from_bytes(&good[..length]) {
            assert!(ring.decrypt(&name("/p"), &envelope).is_err());
        }
    }
    let mut wrong_version = good.clone();
    wrong_version[0] = 9;
    assert!(Envelope::from_bytes(&wrong_version).is_err());
    let mut long_id = good;
    long_id[1] = 0xff;
    assert!(Envelope::from_bytes(&long_id).is_err());
    assert!(Envelope::from_base64("!!not base64!!").is_err());
}

#[test]
fn unknown_key_id_fails() {
    let ring = ring();
    let error = ring
        .encrypt(&name("/p"), SECRET, "alias/nope")
        .expect_err("unknown key");
    let (code, ssm, message) = seen(ApiError::from(error));
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(ssm.as_deref(), Some("InvalidKeyId"));
    assert!(message.contains("alias/nope"), "{message}");

    // An envelope wrapped by a key this ring does not have.
    let other = MasterKeyRing::generate_default().expect("ring");
    let mut other_ring = MasterKeyRing::new("alias/other").expect("ring");
    other_ring.generate("alias/other").expect("key");
    let envelope = other_ring
        .encrypt(&name("/p"), SECRET, "alias/other")
        .expect("encrypt");
    assert!(matches!(
        other.decrypt(&name("/p"), &envelope),
        Err(CryptoError::UnknownKey(_))
    ));
    // Same key id, different key material: decryption fails.
    let envelope = ring
        .encrypt(&name("/p"), SECRET, DEFAULT_KEY_ID)
        .expect("encrypt");
    assert!(matches!(
        other.decrypt(&name("/p"), &envelope),
        Err(CryptoError::DecryptFailed(_))
    ));
}

#[test]
fn key_id_rules() {
    for good in ["alias/bosun/parameters", "arn:aws:kms:x:1:key/abc-1", "k_1"] {
        validate_key_id(good).expect(good);
    }
    for bad in ["", "has space", "star*", &"k".repeat(257)] {
        let error = validate_key_id(bad).expect_err(bad);
        assert_eq!(reason(error).as_deref(), Some("InvalidKeyId"));
    }
    assert!(MasterKeyRing::new("bad key").is_err());
}

#[test]
fn rewrap_to_a_new_master_key_keeps_the_value_ciphertext() {
    let mut ring = ring();
    let n = name("/app/secret");
    let envelope = ring.encrypt(&n, SECRET, DEFAULT_KEY_ID).expect("encrypt");
    ring.generate("alias/bosun/2026").expect("new key");
    let rewrapped = ring.rewrap(&envelope, "alias/bosun/2026").expect("rewrap");
    assert_eq!(rewrapped.key_id(), "alias/bosun/2026");
    assert_eq!(rewrapped.ciphertext(), envelope.ciphertext());
    assert_ne!(rewrapped.to_bytes(), envelope.to_bytes());
    let plain = ring.decrypt(&n, &rewrapped).expect("decrypt after rewrap");
    assert_eq!(plain.expose_secret(), SECRET);

    // A ring holding only the new key decrypts the rewrapped value: the old key is not used.
    let json = ring.to_json();
    let mut only_new: serde_json::Value =
        serde_json::from_str(json.expose_secret()).expect("key file json");
    only_new["keys"]
        .as_object_mut()
        .expect("keys map")
        .remove(DEFAULT_KEY_ID);
    only_new["default_key_id"] = "alias/bosun/2026".into();
    let new_ring = MasterKeyRing::from_json(only_new.to_string().as_bytes()).expect("ring");
    assert_eq!(
        new_ring
            .decrypt(&n, &rewrapped)
            .expect("decrypt")
            .expose_secret(),
        SECRET
    );
    assert!(new_ring.decrypt(&n, &envelope).is_err());

    assert!(matches!(
        ring.rewrap(&envelope, "alias/missing"),
        Err(CryptoError::UnknownKey(_))
    ));
}

#[test]
fn key_ring_from_config_bytes() {
    let config = format!(
        r#"{{"default_key_id":"alias/a","keys":{{"alias/a":"{}","alias/b":"{}"}}}}"#,
        "A".repeat(43) + "=",
        "B".repeat(42) + "A="
    );
    let ring = MasterKeyRing::from_json(config.as_bytes()).expect("config ring");
    assert_eq!(ring.default_key_id(), "alias/a");
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["alias/a", "alias/b"]);
    let bad_configs = [
        "not json".to_owned(),
        r#"{"keys":{"alias/bosun/parameters":"c2hvcnQ="}}"#.to_owned(),
        r#"{"keys":{"alias/bosun/parameters":"%%%"}}"#.to_owned(),
        r#"{"default_key_id":"alias/x","keys":{}}"#.to_owned(),
        format!(r#"{{"keys":{{"bad id":"{}="}}}}"#, "A".repeat(43)),
    ];
    for config in bad_configs {
        let error = MasterKeyRing::from_json(config.as_bytes()).expect_err(&config);
        // Key material is never echoed back.
        assert!(!error.to_string().contains("AAAA"), "{error}");
    }
}

#[test]
fn key_file_is_created_private_and_reloaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys/sub/parameters.json");
    let ring = MasterKeyRing::load_or_create(&path).expect("create");
    assert_eq!(ring.default_key_id(), DEFAULT_KEY_ID);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file_mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().expect("parent"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
    let envelope = ring
        .encrypt(&name("/p"), SECRET, DEFAULT_KEY_ID)
        .expect("encrypt");
    let reloaded = MasterKeyRing::load_or_create(&path).expect("reload");
    assert_eq!(
        reloaded
            .decrypt(&name("/p"), &envelope)
            .expect("decrypt")
            .expose_secret(),
        SECRET
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = MasterKeyRing::load_or_create(&path).expect_err("readable by others");
        assert!(error.to_string().contains("644"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    std::fs::write(&path, b"garbage").expect("corrupt the file");
    assert!(matches!(
        MasterKeyRing::load_or_create(&path),
        Err(CryptoError::KeyFile { .. })
    ));
}

#[test]
fn debug_and_errors_hold_no_secrets() {
    let ring = ring();
    let json = ring.to_json();
    let file: serde_json::Value = serde_json::from_str(json.expose_secret()).expect("json");
    let key_b64 = file["keys"][DEFAULT_KEY_ID]
        .as_str()
        .expect("key")
        .to_owned();
    let debug = format!("{ring:?}");
    assert!(!debug.contains(&key_b64), "key material in Debug: {debug}");
    assert!(debug.contains("redacted"));
    assert!(!format!("{json:?}").contains(&key_b64));

    let n = name("/p");
    let envelope = ring.encrypt(&n, SECRET, DEFAULT_KEY_ID).expect("encrypt");
    assert_no_secret(&format!("{envelope:?}"));
    let plain = ring.decrypt(&n, &envelope).expect("decrypt");
    assert_no_secret(&format!("{plain:?}"));

    let error = ring
        .decrypt(&name("/q"), &envelope)
        .expect_err("wrong name");
    assert_no_secret(&error.to_string());
    let status = tonic::Status::from(ApiError::from(error));
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(status.message(), "internal error");
}
