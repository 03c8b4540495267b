//! JWT issuing and verification: the round trip, every way a token must be refused, key
//! rotation, and the on-disk key ring.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bosun_auth::{
    AuthError, CLIENT_AUDIENCE, Claims, DEFAULT_ISSUER, INTERNAL_AUDIENCE, KeyRing, PolicyDocument,
    Principal, SigningKey, TokenIssuer, TokenVerifier,
};
use bosun_core::ApiError;
use tonic::Code;

const MINUTE: Duration = Duration::from_secs(60);

struct Fixture {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    key: SigningKey,
}

fn fixture() -> Fixture {
    let key = SigningKey::generate().expect("key generation");
    let verifier =
        TokenVerifier::new(&[key.verifying_key()], DEFAULT_ISSUER).expect("verifier from one key");
    Fixture {
        issuer: TokenIssuer::new(key.clone(), DEFAULT_ISSUER),
        verifier,
        key,
    }
}

fn alice() -> Principal {
    Principal::parse("user/alice").expect("valid principal")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn client_token(issuer: &TokenIssuer) -> (String, Claims) {
    issuer
        .issue(
            &alice(),
            CLIENT_AUDIENCE,
            "session-1",
            vec!["admin".into()],
            vec![],
            MINUTE,
        )
        .expect("issue")
}

/// Asserts the token is refused, and that the refusal reaches clients as UNAUTHENTICATED;
/// returns the error's message.
fn assert_unauthenticated(result: Result<Claims, AuthError>, case: &str) -> String {
    let error = match result {
        Ok(claims) => panic!("{case}: token accepted for {}", claims.sub),
        Err(error) => error,
    };
    let message = error.to_string();
    let status = tonic::Status::from(ApiError::from(error));
    assert_eq!(status.code(), Code::Unauthenticated, "{case}: {message}");
    message
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

fn claims_json(audience: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": DEFAULT_ISSUER, "aud": audience, "sub": "user/admin",
        "exp": now() + 60, "nbf": now(), "iat": now(), "jti": "x",
    })
}

#[test]
fn round_trip_keeps_every_claim() {
    let f = fixture();
    let policy = PolicyDocument::parse(
        r#"{"Statement": {"Effect": "Allow", "Action": "parameters:*", "Resource": "*"}}"#,
    )
    .expect("policy");
    let (token, issued) = f
        .issuer
        .issue(
            &alice(),
            INTERNAL_AUDIENCE,
            "key-42",
            vec!["ops".into()],
            vec![policy],
            MINUTE,
        )
        .expect("issue");
    let verified = f
        .verifier
        .verify(&token, INTERNAL_AUDIENCE)
        .expect("verify");
    assert_eq!(verified, issued);
    assert_eq!(verified.sub, "user/alice");
    assert_eq!(verified.sid, "key-42");
    assert_eq!(verified.iat, verified.nbf);
    assert_eq!(verified.exp - verified.iat, 60);
    assert!(uuid::Uuid::parse_str(&verified.jti).is_ok());

    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(f.key.kid()));
}

#[test]
fn tampered_signature_is_rejected() {
    let f = fixture();
    let (token, _) = client_token(&f.issuer);
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    // Change the first signature character: the last one may only carry padding bits.
    let mut chars: Vec<char> = signature.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    let forged = format!("{signed}.{}", chars.into_iter().collect::<String>());
    assert_unauthenticated(
        f.verifier.verify(&forged, CLIENT_AUDIENCE),
        "tampered signature",
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let f = fixture();
    let (token, _) = client_token(&f.issuer);
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    payload["sub"] = "user/root".into();
    let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    let error = assert_unauthenticated(f.verifier.verify(&forged, CLIENT_AUDIENCE), "payload");
    assert_eq!(error, "invalid token: bad signature");
}

#[test]
fn expired_token_is_rejected_beyond_the_leeway() {
    let f = fixture();
    let mut claims = client_token(&f.issuer).1;
    claims.iat = now() - 300;
    claims.nbf = claims.iat;
    claims.exp = now() - 120;
    let token = f.issuer.sign(&claims).expect("sign");
    assert!(matches!(
        f.verifier.verify(&token, CLIENT_AUDIENCE),
        Err(AuthError::Expired)
    ));
    let message = assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "expired");
    assert_eq!(message, "token expired");
}

#[test]
fn recently_expired_token_is_accepted_only_within_the_leeway() {
    let f = fixture();
    let mut claims = client_token(&f.issuer).1;
    claims.exp = now() - 3;
    let token = f.issuer.sign(&claims).expect("sign");
    // Default leeway (10 s) absorbs small clock skew between gateway and service.
    f.verifier
        .verify(&token, CLIENT_AUDIENCE)
        .expect("within leeway");
    let strict = f.verifier.with_leeway(Duration::ZERO);
    assert_unauthenticated(strict.verify(&token, CLIENT_AUDIENCE), "no leeway");
}

#[test]
fn not_yet_valid_token_is_rejected() {
    let f = fixture();
    let mut claims = client_token(&f.issuer).1;
    claims.nbf = now() + 300;
    claims.exp = now() + 600;
    let token = f.issuer.sign(&claims).expect("sign");
    let error = assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "nbf");
    assert_eq!(error, "invalid token: token not yet valid");
}

#[test]
fn wrong_issuer_is_rejected() {
    let f = fixture();
    let foreign = TokenIssuer::new(f.key.clone(), "someone-else");
    let (token, _) = client_token(&foreign);
    let error = assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "issuer");
    assert_eq!(error, "invalid token: wrong issuer");
}

#[test]
fn client_token_is_not_an_internal_token() {
    let f = fixture();
    let (token, _) = client_token(&f.issuer);
    let error = assert_unauthenticated(f.verifier.verify(&token, INTERNAL_AUDIENCE), "audience");
    assert_eq!(error, "invalid token: wrong audience");
    // And the other way round.
    let (internal, _) = f
        .issuer
        .issue(&alice(), INTERNAL_AUDIENCE, "s", vec![], vec![], MINUTE)
        .expect("issue");
    assert_unauthenticated(f.verifier.verify(&internal, CLIENT_AUDIENCE), "reverse");
}

#[test]
fn internal_token_living_longer_than_60_seconds_is_rejected() {
    let f = fixture();
    let (token, _) = f
        .issuer
        .issue(&alice(), INTERNAL_AUDIENCE, "s", vec![], vec![], 2 * MINUTE)
        .expect("issue");
    assert_unauthenticated(
        f.verifier.verify(&token, INTERNAL_AUDIENCE),
        "long internal",
    );
}

#[test]
fn alg_none_is_rejected() {
    let f = fixture();
    for header in [
        serde_json::json!({"alg": "none", "typ": "JWT", "kid": f.key.kid()}),
        serde_json::json!({"alg": "None", "typ": "JWT", "kid": f.key.kid()}),
        serde_json::json!({"typ": "JWT", "kid": f.key.kid()}),
    ] {
        let token = format!("{}.{}.", b64(&header), b64(&claims_json(CLIENT_AUDIENCE)));
        assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "alg none");
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_rejected() {
    let f = fixture();
    let public = f.key.verifying_key().public_key;
    let raw = STANDARD.decode(&public).expect("base64");
    // Both forms an attacker might try: the raw key bytes and the published base64 text.
    for secret in [raw.as_slice(), public.as_bytes()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(f.key.kid().to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims_json(CLIENT_AUDIENCE),
            &jsonwebtoken::EncodingKey::from_secret(secret).expect("hmac key"),
        )
        .expect("encode");
        let error = assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "hs256");
        assert_eq!(error, "invalid token: unsupported algorithm");
    }
}

#[test]
fn other_algorithms_are_rejected() {
    let f = fixture();
    for alg in ["RS256", "ES256", "PS256", "HS512"] {
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": f.key.kid()});
        let token = format!(
            "{}.{}.{}",
            b64(&header),
            b64(&claims_json(CLIENT_AUDIENCE)),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        );
        assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), alg);
    }
}

#[test]
fn unknown_or_missing_kid_is_rejected() {
    let f = fixture();
    let stranger = TokenIssuer::new(SigningKey::generate().expect("key"), DEFAULT_ISSUER);
    let (token, _) = client_token(&stranger);
    let error = assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "unknown kid");
    assert_eq!(error, "invalid token: unknown key id");

    // A stranger's key claiming a trusted kid fails on the signature.
    let impostor_key = SigningKey::generate().expect("key");
    let impostor = SigningKey::from_pkcs8(f.key.kid(), impostor_key.pkcs8_der()).expect("key");
    let (token, _) = client_token(&TokenIssuer::new(impostor, DEFAULT_ISSUER));
    assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "impostor kid");

    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    let token = jsonwebtoken::encode(
        &header,
        &claims_json(CLIENT_AUDIENCE),
        &jsonwebtoken::EncodingKey::from_ed_der(f.key.pkcs8_der()),
    )
    .expect("encode");
    assert_unauthenticated(f.verifier.verify(&token, CLIENT_AUDIENCE), "no kid");
}

#[test]
fn garbage_is_rejected() {
    let f = fixture();
    let huge = "a".repeat(bosun_auth::jwt::MAX_TOKEN_LEN + 1);
    for token in ["", "a", "a.b", "a.b.c", "...", huge.as_str()] {
        assert_unauthenticated(f.verifier.verify(token, CLIENT_AUDIENCE), "garbage");
    }
}

#[test]
fn key_rotation_keeps_old_tokens_valid_until_the_key_is_retired() {
    let mut ring = KeyRing::generate().expect("ring");
    let old_kid = ring.active().kid().to_owned();
    let (old_token, _) = client_token(&TokenIssuer::new(ring.active().clone(), DEFAULT_ISSUER));

    ring.rotate().expect("rotate");
    assert_ne!(ring.active().kid(), old_kid);
    let (new_token, _) = client_token(&TokenIssuer::new(ring.active().clone(), DEFAULT_ISSUER));
    let both = TokenVerifier::new(&ring.verifying_keys(), DEFAULT_ISSUER).expect("verifier");
    both.verify(&old_token, CLIENT_AUDIENCE)
        .expect("old key still trusted");
    both.verify(&new_token, CLIENT_AUDIENCE)
        .expect("new key trusted");

    assert!(
        ring.retire(ring.active().kid().to_owned().as_str())
            .is_err()
    );
    ring.retire(&old_kid).expect("retire old key");
    let new_only = TokenVerifier::new(&ring.verifying_keys(), DEFAULT_ISSUER).expect("verifier");
    new_only
        .verify(&new_token, CLIENT_AUDIENCE)
        .expect("new key trusted");
    assert_unauthenticated(new_only.verify(&old_token, CLIENT_AUDIENCE), "retired key");
}

#[test]
fn verifier_refuses_bad_key_sets() {
    assert!(TokenVerifier::new(&[], DEFAULT_ISSUER).is_err());
    let mut key = SigningKey::generate().expect("key").verifying_key();
    key.public_key = STANDARD.encode([1u8; 31]);
    assert!(TokenVerifier::new(&[key], DEFAULT_ISSUER).is_err());
    let a = SigningKey::generate().expect("key").verifying_key();
    let mut b = SigningKey::generate().expect("key").verifying_key();
    b.kid = a.kid.clone();
    assert!(matches!(
        TokenVerifier::new(&[a, b], DEFAULT_ISSUER),
        Err(AuthError::Key(_))
    ));
}

#[test]
fn signing_key_debug_hides_key_material() {
    let key = SigningKey::generate().expect("key");
    let debug = format!("{key:?}");
    assert!(debug.contains(key.kid()));
    assert!(!debug.contains(&STANDARD.encode(key.pkcs8_der())));
    assert!(!debug.contains(&format!("{:?}", &key.pkcs8_der()[..8])));
    let reloaded = SigningKey::from_pkcs8("k1", key.pkcs8_der()).expect("reload");
    assert_eq!(
        reloaded.verifying_key().public_key,
        key.verifying_key().public_key
    );
    assert!(SigningKey::from_pkcs8("k1", b"not a key").is_err());
    assert!(SigningKey::from_pkcs8("bad kid!", key.pkcs8_der()).is_err());
}

#[test]
fn key_ring_file_is_created_private_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/keys/ring.json");
    let created = KeyRing::load_or_create(&path).expect("create");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = KeyRing::load_or_create(&path).expect("load");
    assert_eq!(again.active().kid(), created.active().kid());
    assert_eq!(again.verifying_keys(), created.verifying_keys());

    let mut rotated = again;
    rotated.rotate().expect("rotate");
    rotated.save(&path).expect("save");
    let loaded = KeyRing::load(&path).expect("load");
    assert_eq!(loaded.active().kid(), rotated.active().kid());
    assert_eq!(loaded.verifying_keys().len(), 2);
    // The leftover temporary files were cleaned up.
    let entries = std::fs::read_dir(path.parent().expect("parent"))
        .expect("list")
        .count();
    assert_eq!(entries, 1);
}

#[test]
fn malformed_key_ring_errors_do_not_echo_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ring.json");
    std::fs::write(
        &path,
        r#"{"active": "k", "keys": [{"kid": "k", "pkcs8": 12345678}]}"#,
    )
    .expect("write");
    let error = KeyRing::load(&path).expect_err("malformed");
    assert!(!error.to_string().contains("12345678"), "{error}");
    std::fs::write(&path, r#"{"active": "other", "keys": []}"#).expect("write");
    assert!(KeyRing::load(&path).is_err());
}
