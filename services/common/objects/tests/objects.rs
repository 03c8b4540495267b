//! Integration tests for bosun-objects: the local store end to end, and S3 configuration
//! checked without a network (no S3 server is reachable from the test machines).

use bosun_objects::{ObjectStoreConfig, Objects, ObjectsError};
use bytes::Bytes;
use secrecy::SecretString;

struct LocalStore {
    objects: Objects,
    root: std::path::PathBuf,
    _directory: tempfile::TempDir,
}

fn local_store() -> LocalStore {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    // A root that does not exist yet: open() must create it.
    let root = directory.path().join("objects/root");
    let objects = Objects::open(&ObjectStoreConfig::Local { root: root.clone() })
        .expect("open a local store");
    LocalStore {
        objects,
        root,
        _directory: directory,
    }
}

/// Deterministic, non-repeating-looking content, so misplaced bytes are noticed.
fn pattern(length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index.wrapping_mul(31) ^ (index >> 8)) as u8)
        .collect()
}

#[tokio::test]
async fn local_put_get_round_trip_creates_the_root() {
    let store = local_store();
    assert!(store.root.is_dir(), "open() creates the root directory");
    store
        .objects
        .put("commands/1/node-a/stdout", Bytes::from_static(b"hello\n"))
        .await
        .expect("put");
    let read = store
        .objects
        .get("commands/1/node-a/stdout")
        .await
        .expect("get");
    assert_eq!(read, Bytes::from_static(b"hello\n"));
    assert!(
        store.root.join("commands/1/node-a/stdout").is_file(),
        "the object is a file under the root"
    );

    // Overwriting replaces the whole object.
    store
        .objects
        .put("commands/1/node-a/stdout", Bytes::from_static(b"bye"))
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .objects
            .get("commands/1/node-a/stdout")
            .await
            .expect("get"),
        Bytes::from_static(b"bye")
    );

    // Empty objects exist and are empty.
    store
        .objects
        .put("empty", Bytes::new())
        .await
        .expect("put empty");
    assert_eq!(
        store.objects.get("empty").await.expect("get empty"),
        Bytes::new()
    );
}

#[tokio::test]
async fn local_range_reads_return_exactly_the_bytes_asked_for() {
    let store = local_store();
    let content = pattern(10_000);
    store
        .objects
        .put("transcript", Bytes::from(content.clone()))
        .await
        .expect("put");

    let middle = store
        .objects
        .get_range("transcript", 1_000..1_100)
        .await
        .expect("read a middle range");
    assert_eq!(middle.as_ref(), &content[1_000..1_100]);

    let first = store
        .objects
        .get_range("transcript", 0..1)
        .await
        .expect("read the first byte");
    assert_eq!(first.as_ref(), &content[..1]);

    // A range running past the end is cut at the end.
    let tail = store
        .objects
        .get_range("transcript", 9_990..20_000)
        .await
        .expect("read past the end");
    assert_eq!(tail.as_ref(), &content[9_990..]);

    // Starting past the end is an error, not empty data.
    let past_end = store.objects.get_range("transcript", 10_000..10_010).await;
    assert!(past_end.is_err(), "{past_end:?}");

    // Built from variables: clippy rightly flags literal empty ranges, but callers compute theirs.
    let (five, three, seven) = (5, 3, 7);
    for range in [five..five, seven..three] {
        let error = store
            .objects
            .get_range("transcript", range.clone())
            .await
            .expect_err("empty and reversed ranges are refused");
        assert!(
            matches!(error, ObjectsError::InvalidRange { start, end, .. } if start == range.start && end == range.end),
            "{error:?}"
        );
    }

    let missing = store.objects.get_range("absent", 0..10).await;
    assert!(
        matches!(&missing, Err(ObjectsError::NotFound { key }) if key == "absent"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn local_list_matches_whole_segments_and_reports_sizes() {
    let store = local_store();
    for (key, size) in [
        ("commands/1/node-a/stdout", 3),
        ("commands/1/node-b/stdout", 5),
        ("commands/10/node-a/stdout", 7),
        ("sessions/s1/transcript", 11),
    ] {
        store
            .objects
            .put(key, Bytes::from(pattern(size)))
            .await
            .expect("put");
    }

    let under_command_1 = store.objects.list("commands/1").await.expect("list");
    let keys: Vec<(&str, u64)> = under_command_1
        .iter()
        .map(|meta| (meta.key.as_str(), meta.size))
        .collect();
    assert_eq!(
        keys,
        [
            ("commands/1/node-a/stdout", 3),
            ("commands/1/node-b/stdout", 5)
        ],
        "prefix commands/1 must not match commands/10"
    );
    let now = chrono::Utc::now();
    for meta in &under_command_1 {
        let age = now - meta.last_modified;
        assert!(
            age >= chrono::Duration::zero() - chrono::Duration::seconds(5)
                && age < chrono::Duration::minutes(5),
            "{meta:?} has an implausible modification time"
        );
    }

    let with_slash = store.objects.list("commands/1/").await.expect("list");
    assert_eq!(with_slash, under_command_1);

    let everything = store.objects.list("").await.expect("list all");
    assert_eq!(everything.len(), 4);
    assert!(
        everything.windows(2).all(|pair| pair[0].key < pair[1].key),
        "sorted by key: {everything:?}"
    );

    let nothing = store.objects.list("never/written").await.expect("list");
    assert!(nothing.is_empty(), "{nothing:?}");

    let error = store
        .objects
        .list("../outside")
        .await
        .expect_err("traversal in a prefix is refused");
    assert!(
        matches!(error, ObjectsError::InvalidKey { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn local_delete_removes_and_tolerates_absent_objects() {
    let store = local_store();
    store
        .objects
        .put("sessions/s1/transcript", Bytes::from_static(b"$ ls\n"))
        .await
        .expect("put");
    store
        .objects
        .delete("sessions/s1/transcript")
        .await
        .expect("delete");
    let gone = store.objects.get("sessions/s1/transcript").await;
    assert!(
        matches!(&gone, Err(ObjectsError::NotFound { key }) if key == "sessions/s1/transcript"),
        "{gone:?}"
    );
    assert!(
        store
            .objects
            .list("sessions")
            .await
            .expect("list")
            .is_empty()
    );

    store
        .objects
        .delete("sessions/s1/transcript")
        .await
        .expect("deleting again is fine");
    store
        .objects
        .delete("never/existed")
        .await
        .expect("deleting a never-written key is fine");
}

#[tokio::test]
async fn local_get_of_an_absent_key_is_not_found() {
    let store = local_store();
    let error = store
        .objects
        .get("commands/404/stdout")
        .await
        .expect_err("nothing stored");
    assert!(
        matches!(&error, ObjectsError::NotFound { key } if key == "commands/404/stdout"),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "object commands/404/stdout not found");
}

#[tokio::test]
async fn local_multipart_upload_of_several_mebibytes_round_trips() {
    let store = local_store();
    // 12 MiB plus a ragged tail, written in uneven pieces that straddle the 5 MiB parts.
    let content = pattern(12 * 1024 * 1024 + 12_345);
    let mut writer = store
        .objects
        .put_multipart("commands/big/stdout")
        .await
        .expect("start upload");
    assert_eq!(writer.key(), "commands/big/stdout");
    for piece in content.chunks(700_001) {
        writer
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("write a piece");
    }
    assert_eq!(writer.bytes_written(), content.len() as u64);

    // Not visible until finished.
    let early = store.objects.get("commands/big/stdout").await;
    assert!(
        matches!(early, Err(ObjectsError::NotFound { .. })),
        "{early:?}"
    );

    writer.finish().await.expect("finish");
    let read = store
        .objects
        .get("commands/big/stdout")
        .await
        .expect("get the uploaded object");
    assert_eq!(read.len(), content.len());
    assert!(read.as_ref() == content.as_slice(), "content differs");

    let listed = store.objects.list("commands/big").await.expect("list");
    assert_eq!(listed.len(), 1, "no staging files are listed: {listed:?}");
    assert_eq!(listed[0].size, content.len() as u64);

    let tail = store
        .objects
        .get_range(
            "commands/big/stdout",
            12 * 1024 * 1024..12 * 1024 * 1024 + 10,
        )
        .await
        .expect("range read across a part boundary's far side");
    assert_eq!(
        tail.as_ref(),
        &content[12 * 1024 * 1024..12 * 1024 * 1024 + 10]
    );
}

#[tokio::test]
async fn local_multipart_abort_and_empty_upload() {
    let store = local_store();
    let mut writer = store
        .objects
        .put_multipart("aborted")
        .await
        .expect("start upload");
    writer
        .write(Bytes::from(pattern(6 * 1024 * 1024)))
        .await
        .expect("write");
    writer.abort().await.expect("abort");
    assert!(matches!(
        store.objects.get("aborted").await,
        Err(ObjectsError::NotFound { .. })
    ));
    assert!(store.objects.list("").await.expect("list").is_empty());

    let writer = store
        .objects
        .put_multipart("empty-stream")
        .await
        .expect("start upload");
    writer
        .finish()
        .await
        .expect("finish an upload with no data");
    assert_eq!(
        store.objects.get("empty-stream").await.expect("get"),
        Bytes::new()
    );
}

#[tokio::test]
async fn keys_that_escape_or_break_the_store_are_rejected_before_any_io() {
    let store = local_store();
    let outside = store
        .root
        .parent()
        .expect("the root has a parent")
        .join("escaped");
    for key in [
        "../escaped",
        "a/../../escaped",
        "/etc/passwd",
        "",
        "a//b",
        "a/./b",
        "tab\there",
        "trailing/",
    ] {
        let put = store.objects.put(key, Bytes::from_static(b"x")).await;
        assert!(
            matches!(&put, Err(ObjectsError::InvalidKey { .. })),
            "{key:?}: {put:?}"
        );
        let get = store.objects.get(key).await;
        assert!(
            matches!(&get, Err(ObjectsError::InvalidKey { .. })),
            "{key:?}: {get:?}"
        );
        let delete = store.objects.delete(key).await;
        assert!(
            matches!(&delete, Err(ObjectsError::InvalidKey { .. })),
            "{key:?}: {delete:?}"
        );
        let multipart = store.objects.put_multipart(key).await;
        assert!(
            matches!(&multipart, Err(ObjectsError::InvalidKey { .. })),
            "{key:?}: {multipart:?}"
        );
    }
    assert!(!outside.exists(), "nothing was written outside the root");

    let error = bosun_objects::validate_key("../../etc/shadow").expect_err("traversal");
    assert_eq!(
        error.to_string(),
        "invalid object key \"../../etc/shadow\": must not contain .. segments"
    );
    let too_long = "k".repeat(1025);
    assert!(matches!(
        bosun_objects::validate_key(&too_long),
        Err(ObjectsError::InvalidKey {
            rule: "must be at most 1024 bytes",
            ..
        })
    ));
}

/// The fields of an S3 configuration, so each test case changes one of them.
struct S3 {
    bucket: &'static str,
    region: &'static str,
    endpoint: Option<&'static str>,
    access_key_id: Option<&'static str>,
    secret_access_key: Option<&'static str>,
    allow_http: bool,
    prefix: Option<&'static str>,
}

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

impl S3 {
    fn good() -> Self {
        S3 {
            bucket: "bosun-outputs",
            region: "eu-west-1",
            endpoint: Some("http://127.0.0.1:9000"),
            access_key_id: Some("AKIDEXAMPLE"),
            secret_access_key: Some(SECRET),
            allow_http: true,
            prefix: Some("/prod/"),
        }
    }

    fn config(self) -> ObjectStoreConfig {
        ObjectStoreConfig::S3 {
            bucket: self.bucket.to_owned(),
            region: self.region.to_owned(),
            endpoint: self.endpoint.map(str::to_owned),
            access_key_id: self.access_key_id.map(str::to_owned),
            secret_access_key: self.secret_access_key.map(SecretString::from),
            allow_http: self.allow_http,
            prefix: self.prefix.map(str::to_owned),
        }
    }
}

#[test]
fn s3_config_builds_a_client_without_io_and_hides_the_secret() {
    let objects = Objects::open(&S3::good().config()).expect("a complete s3 configuration builds");
    assert_eq!(
        objects.description(),
        "s3://bosun-outputs/prod at http://127.0.0.1:9000"
    );
    let debug = format!("{objects:?} {:?}", S3::good().config());
    assert!(!debug.contains(SECRET), "{debug}");

    // Without keys the instance's role is used; that too needs no I/O to build.
    let role_based = S3 {
        endpoint: None,
        access_key_id: None,
        secret_access_key: None,
        allow_http: false,
        prefix: None,
        ..S3::good()
    };
    let objects =
        Objects::open(&role_based.config()).expect("an s3 configuration without keys builds");
    assert_eq!(objects.description(), "s3://bosun-outputs");
}

#[test]
fn bad_s3_configurations_say_what_is_wrong() {
    let cases = [
        (
            S3 {
                bucket: " ",
                ..S3::good()
            },
            "s3 bucket must not be empty",
        ),
        (
            S3 {
                region: "",
                ..S3::good()
            },
            "s3 region must not be empty",
        ),
        (
            S3 {
                allow_http: false,
                ..S3::good()
            },
            "s3 endpoint http://127.0.0.1:9000 uses http but allow_http is false",
        ),
        (
            S3 {
                endpoint: Some("not a url"),
                ..S3::good()
            },
            "s3 endpoint \"not a url\"",
        ),
        (
            S3 {
                endpoint: Some("ftp://127.0.0.1"),
                ..S3::good()
            },
            "has scheme ftp, expected https or http",
        ),
        (
            S3 {
                endpoint: Some("http://user:pw@127.0.0.1:9000"),
                ..S3::good()
            },
            "s3 endpoint must not carry credentials",
        ),
        (
            S3 {
                secret_access_key: None,
                ..S3::good()
            },
            "access_key_id is set but secret_access_key is missing",
        ),
        (
            S3 {
                access_key_id: None,
                ..S3::good()
            },
            "secret_access_key is set but access_key_id is missing",
        ),
        (
            S3 {
                secret_access_key: Some(""),
                ..S3::good()
            },
            "must not be empty",
        ),
        (
            S3 {
                prefix: Some("a/../b"),
                ..S3::good()
            },
            "s3 prefix \"a/../b\": must not contain .. segments",
        ),
    ];
    for (s3, expected) in cases {
        let error = Objects::open(&s3.config()).expect_err("a bad configuration is refused");
        let ObjectsError::Config { reason } = &error else {
            panic!("expected a configuration error, got {error:?}");
        };
        assert!(
            reason.contains(expected),
            "{reason:?} should contain {expected:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("invalid object store configuration: "),
            "{message}"
        );
        assert!(!message.contains(SECRET), "{message}");
    }

    let local_error = Objects::open(&ObjectStoreConfig::Local {
        root: std::path::PathBuf::new(),
    })
    .expect_err("an empty local root is refused");
    assert!(
        matches!(local_error, ObjectsError::Config { .. }),
        "{local_error:?}"
    );
}

#[test]
fn an_unusable_local_root_is_a_create_root_error() {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let file = directory.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write a file");
    let error = Objects::open(&ObjectStoreConfig::Local {
        root: file.join("objects"),
    })
    .expect_err("a root below a regular file cannot be created");
    assert!(
        matches!(error, ObjectsError::CreateRoot { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("create object store root "),
        "{error}"
    );
}

fn parse_toml(text: &str) -> Result<ObjectStoreConfig, Box<figment::Error>> {
    use figment::providers::{Format as _, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .map_err(Box::new)
}

#[test]
fn configuration_parses_from_toml_with_a_kind_tag() {
    let local = parse_toml(
        r#"
        kind = "local"
        root = "/var/lib/bosun/objects"
        "#,
    )
    .expect("local configuration parses");
    assert!(
        matches!(&local, ObjectStoreConfig::Local { root } if root == std::path::Path::new("/var/lib/bosun/objects")),
        "{local:?}"
    );

    let s3 = parse_toml(
        r#"
        kind = "s3"
        bucket = "bosun-outputs"
        region = "eu-west-1"
        endpoint = "https://minio.internal:9000"
        access_key_id = "AKIDEXAMPLE"
        secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        "#,
    )
    .expect("s3 configuration parses");
    let ObjectStoreConfig::S3 {
        bucket,
        allow_http,
        prefix,
        secret_access_key,
        ..
    } = &s3
    else {
        panic!("expected s3, got {s3:?}");
    };
    assert_eq!(bucket, "bosun-outputs");
    assert!(!allow_http, "allow_http defaults to false");
    assert_eq!(prefix, &None);
    assert!(secret_access_key.is_some());
    assert!(!format!("{s3:?}").contains(SECRET), "{s3:?}");
    Objects::open(&s3).expect("the parsed configuration builds");

    let typo = parse_toml(
        r#"
        kind = "local"
        rot = "/var/lib/bosun/objects"
        "#,
    );
    assert!(typo.is_err(), "unknown fields are refused: {typo:?}");
    let unknown_kind = parse_toml(r#"kind = "gcs""#);
    assert!(unknown_kind.is_err(), "{unknown_kind:?}");
}
