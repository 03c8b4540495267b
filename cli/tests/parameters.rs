//! Runs the real `bosun param …` commands against a fake ParameterService on a loopback port:
//! what each command sends (value, type, tier, tags, selectors, filters, labels), that
//! listings follow next_token, that partial failures exit non-zero naming what failed, and
//! that bad input fails before any call.

mod common;

use common::{stderr, stdout};

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use bosun_proto::parameters::v1::parameter_service_server::{
    ParameterService, ParameterServiceServer,
};
use bosun_proto::parameters::v1::*;
use tonic::{Request, Response, Status};

/// A request the fake received, kept whole so tests can compare every field.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Put(PutParameterRequest),
    Get(GetParameterRequest),
    GetMany(GetParametersRequest),
    ByPath(GetParametersByPathRequest),
    Delete(DeleteParameterRequest),
    DeleteMany(DeleteParametersRequest),
    History(GetParameterHistoryRequest),
    Label(LabelParameterVersionRequest),
    Unlabel(UnlabelParameterVersionRequest),
    Describe(DescribeParametersRequest),
    AddTags(AddTagsToResourceRequest),
    RemoveTags(RemoveTagsFromResourceRequest),
    ListTags(ListTagsForResourceRequest),
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// What every read returns: no final newline, a tab and a non-ASCII character, so any
/// cleaning or added newline on the way to stdout shows.
const STORED_VALUE: &str = "p@ss\tword-café";

/// Names under this prefix do not exist.
const MISSING: &str = "/missing";

struct FakeParameters {
    calls: Calls,
}

impl FakeParameters {
    fn record(&self, call: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

fn parameter(name: &str, version: i64) -> Parameter {
    Parameter {
        name: name.to_owned(),
        r#type: ParameterType::String as i32,
        value: STORED_VALUE.to_owned(),
        version,
        ..Default::default()
    }
}

fn metadata(name: &str) -> ParameterMetadata {
    ParameterMetadata {
        name: name.to_owned(),
        r#type: ParameterType::SecureString as i32,
        version: 1,
        tier: ParameterTier::Advanced as i32,
        last_modified_user: "user/alice".to_owned(),
        ..Default::default()
    }
}

/// Two pages by next_token, so the CLI must follow it to see the second item.
fn page<T>(token: &str, first: T, second: T) -> Result<(Vec<T>, String), Status> {
    match token {
        "" => Ok((vec![first], "page-2".to_owned())),
        "page-2" => Ok((vec![second], String::new())),
        other => Err(Status::invalid_argument(format!("bad next_token {other}"))),
    }
}

#[tonic::async_trait]
impl ParameterService for FakeParameters {
    async fn put_parameter(
        &self,
        request: Request<PutParameterRequest>,
    ) -> Result<Response<PutParameterResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Put(request.clone()));
        let tier = if request.tier == ParameterTier::Unspecified as i32 {
            ParameterTier::Standard as i32
        } else {
            request.tier
        };
        Ok(Response::new(PutParameterResponse {
            version: if request.overwrite { 2 } else { 1 },
            tier,
        }))
    }

    async fn get_parameter(
        &self,
        request: Request<GetParameterRequest>,
    ) -> Result<Response<GetParameterResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Get(request.clone()));
        if request.name.starts_with(MISSING) {
            return Err(Status::not_found(format!(
                "parameter {} does not exist",
                request.name
            )));
        }
        Ok(Response::new(GetParameterResponse {
            parameter: Some(parameter(&request.name, 5)),
        }))
    }

    async fn get_parameters(
        &self,
        request: Request<GetParametersRequest>,
    ) -> Result<Response<GetParametersResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::GetMany(request.clone()));
        let (invalid, found): (Vec<String>, Vec<String>) = request
            .names
            .into_iter()
            .partition(|name| name.starts_with(MISSING));
        Ok(Response::new(GetParametersResponse {
            parameters: found
                .iter()
                .map(|name| {
                    let base = name.split(':').next().unwrap_or_default();
                    parameter(base, 1)
                })
                .collect(),
            invalid_parameters: invalid,
        }))
    }

    async fn get_parameters_by_path(
        &self,
        request: Request<GetParametersByPathRequest>,
    ) -> Result<Response<GetParametersByPathResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::ByPath(request.clone()));
        let (parameters, next_token) = page(
            &request.next_token,
            parameter("/app/a", 1),
            parameter("/app/b", 2),
        )?;
        Ok(Response::new(GetParametersByPathResponse {
            parameters,
            next_token,
        }))
    }

    async fn delete_parameter(
        &self,
        request: Request<DeleteParameterRequest>,
    ) -> Result<Response<DeleteParameterResponse>, Status> {
        self.record(Call::Delete(request.into_inner()));
        Ok(Response::new(DeleteParameterResponse {}))
    }

    async fn delete_parameters(
        &self,
        request: Request<DeleteParametersRequest>,
    ) -> Result<Response<DeleteParametersResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::DeleteMany(request.clone()));
        let (invalid_parameters, deleted_parameters) = request
            .names
            .into_iter()
            .partition(|name| name.starts_with(MISSING));
        Ok(Response::new(DeleteParametersResponse {
            deleted_parameters,
            invalid_parameters,
        }))
    }

    async fn get_parameter_history(
        &self,
        request: Request<GetParameterHistoryRequest>,
    ) -> Result<Response<GetParameterHistoryResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::History(request.clone()));
        let version = |number: i64, labels: &[&str]| ParameterHistory {
            name: request.name.clone(),
            r#type: ParameterType::String as i32,
            value: format!("value-{number}"),
            version: number,
            labels: labels.iter().map(|label| (*label).to_owned()).collect(),
            tier: ParameterTier::Standard as i32,
            last_modified_user: "user/alice".to_owned(),
            ..Default::default()
        };
        let (parameters, next_token) =
            page(&request.next_token, version(1, &[]), version(2, &["prod"]))?;
        Ok(Response::new(GetParameterHistoryResponse {
            parameters,
            next_token,
        }))
    }

    async fn label_parameter_version(
        &self,
        request: Request<LabelParameterVersionRequest>,
    ) -> Result<Response<LabelParameterVersionResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Label(request.clone()));
        // SSM's rule that a label cannot start with a digit, enough to exercise the report.
        let invalid_labels = request
            .labels
            .iter()
            .filter(|label| label.starts_with(|c: char| c.is_ascii_digit()))
            .cloned()
            .collect();
        Ok(Response::new(LabelParameterVersionResponse {
            invalid_labels,
            parameter_version: if request.parameter_version == 0 {
                7
            } else {
                request.parameter_version
            },
        }))
    }

    async fn unlabel_parameter_version(
        &self,
        request: Request<UnlabelParameterVersionRequest>,
    ) -> Result<Response<UnlabelParameterVersionResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Unlabel(request.clone()));
        Ok(Response::new(UnlabelParameterVersionResponse {
            removed_labels: request.labels,
            invalid_labels: Vec::new(),
        }))
    }

    async fn describe_parameters(
        &self,
        request: Request<DescribeParametersRequest>,
    ) -> Result<Response<DescribeParametersResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Describe(request.clone()));
        let (parameters, next_token) = page(
            &request.next_token,
            metadata("/app/d1"),
            metadata("/app/d2"),
        )?;
        Ok(Response::new(DescribeParametersResponse {
            parameters,
            next_token,
        }))
    }

    async fn add_tags_to_resource(
        &self,
        request: Request<AddTagsToResourceRequest>,
    ) -> Result<Response<AddTagsToResourceResponse>, Status> {
        self.record(Call::AddTags(request.into_inner()));
        Ok(Response::new(AddTagsToResourceResponse {}))
    }

    async fn remove_tags_from_resource(
        &self,
        request: Request<RemoveTagsFromResourceRequest>,
    ) -> Result<Response<RemoveTagsFromResourceResponse>, Status> {
        self.record(Call::RemoveTags(request.into_inner()));
        Ok(Response::new(RemoveTagsFromResourceResponse {}))
    }

    async fn list_tags_for_resource(
        &self,
        request: Request<ListTagsForResourceRequest>,
    ) -> Result<Response<ListTagsForResourceResponse>, Status> {
        self.record(Call::ListTags(request.into_inner()));
        Ok(Response::new(ListTagsForResourceResponse {
            tag_list: vec![tag("env", "prod")],
        }))
    }
}

/// A running fake: its URL and the requests it has seen. It stops with the test's runtime.
struct Fake {
    url: String,
    calls: Calls,
}

impl Fake {
    async fn start() -> anyhow::Result<Self> {
        let calls = Calls::default();
        let service = ParameterServiceServer::new(FakeParameters {
            calls: calls.clone(),
        });
        let url = common::serve(tonic::service::Routes::new(service)).await?;
        Ok(Self { url, calls })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .map(|calls| calls.clone())
            .unwrap_or_default()
    }

    /// Runs `bosun --server <fake> --token t <args>` with a private config dir and none of
    /// the caller's BOSUN_* settings.
    async fn bosun(&self, config_dir: &Path, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        let mut all = vec!["--server", self.url.as_str(), "--token", "t"];
        all.extend_from_slice(args);
        common::run_bosun(config_dir, &all, stdin, &[]).await
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_from_an_argument_sends_every_flag() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;
    let policies = r#"[{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2027-01-01T00:00:00Z"}}]"#;

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "put",
                "/app/db/url",
                "postgres://db:5432/app",
                "--type",
                "string",
                "--description",
                "db url",
                "--overwrite",
                "--allowed-pattern",
                "^postgres://",
                "--tier",
                "advanced",
                "--policies",
                policies,
                "--tag",
                "env=prod",
                "--tag",
                "team=ops=core",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "put parameter /app/db/url: version 2, tier Advanced\n"
    );
    // A plain String on the command line is no secret: no warning.
    assert_eq!(stderr(&output), "");
    assert_eq!(
        fake.calls(),
        [Call::Put(PutParameterRequest {
            name: "/app/db/url".to_owned(),
            description: "db url".to_owned(),
            value: "postgres://db:5432/app".to_owned(),
            r#type: ParameterType::String as i32,
            key_id: String::new(),
            overwrite: true,
            allowed_pattern: "^postgres://".to_owned(),
            tags: vec![tag("env", "prod"), tag("team", "ops=core")],
            tier: ParameterTier::Advanced as i32,
            policies: policies.to_owned(),
            data_type: String::new(),
        })]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reads_the_value_from_stdin_or_a_file() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;
    let file = root.path().join("hosts.txt");
    std::fs::write(&file, "a,b,c\n")?;
    let file = file.to_string_lossy().into_owned();

    for (args, stdin) in [
        (
            vec![
                "param",
                "put",
                "/app/db/password",
                "-",
                "--type",
                "secure-string",
                "--key-id",
                "alias/app",
            ],
            "s3cret\n",
        ),
        (
            vec![
                "param",
                "put",
                "/app/token",
                "--file",
                "-",
                "--tier",
                "intelligent-tiering",
            ],
            "tok\r\n",
        ),
        (
            vec![
                "param",
                "put",
                "/app/hosts",
                "-f",
                &file,
                "--type",
                "string-list",
            ],
            "",
        ),
    ] {
        let output = fake.bosun(root.path(), &args, stdin).await?;
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        // Only an argument can end up in shell history.
        assert_eq!(stderr(&output), "", "{args:?}");
    }

    let calls = fake.calls();
    let [Call::Put(secret), Call::Put(token), Call::Put(hosts)] = calls.as_slice() else {
        anyhow::bail!("calls: {calls:?}");
    };
    // Stdin loses the line ending `echo` adds; a file is taken verbatim.
    assert_eq!(secret.value, "s3cret");
    assert_eq!(secret.r#type, ParameterType::SecureString as i32);
    assert_eq!(secret.key_id, "alias/app");
    assert!(!secret.overwrite);
    assert_eq!(secret.tier, ParameterTier::Unspecified as i32);
    assert_eq!(token.value, "tok");
    assert_eq!(token.r#type, ParameterType::Unspecified as i32);
    assert_eq!(token.tier, ParameterTier::IntelligentTiering as i32);
    assert_eq!(hosts.value, "a,b,c\n");
    assert_eq!(hosts.r#type, ParameterType::StringList as i32);
    assert!(hosts.tags.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_string_argument_warns_without_echoing_it() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "put",
                "/app/db/password",
                "hunter2",
                "--type",
                "secure-string",
                "-o",
                "json",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let warning = stderr(&output);
    assert!(
        warning.starts_with("warning: a secure-string value given as an argument"),
        "{warning}"
    );
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(!warning.contains("hunter2"), "{warning}");
    // The warning stays off stdout, so `-o json` still parses.
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(
        printed,
        serde_json::json!({"name": "/app/db/password", "version": 1, "tier": "Standard"})
    );
    assert!(!stdout(&output).contains("hunter2"));

    let calls = fake.calls();
    let [Call::Put(put)] = calls.as_slice() else {
        anyhow::bail!("calls: {calls:?}");
    };
    assert_eq!(put.value, "hunter2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_uses_get_parameter_for_one_name_and_get_parameters_for_several() -> anyhow::Result<()>
{
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(root.path(), &["param", "get", "/app/a:3"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "NAME      TYPE    VERSION  VALUE\n\
         /app/a:3  String  5        p@ss word-café\n"
    );

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "get",
                "/app/a",
                "/missing/x",
                "/app/b:prod",
                "/missing/y:2",
                "--decrypt",
                "-o",
                "json",
            ],
            "",
        )
        .await?;
    // What was found is printed; what was not makes the exit status fail, named on stderr.
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: parameters not found: /missing/x, /missing/y:2\n"
    );
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(printed["parameters"][0]["name"], "/app/a");
    assert_eq!(printed["parameters"][0]["value"], STORED_VALUE);
    assert_eq!(printed["parameters"][1]["name"], "/app/b");

    assert_eq!(
        fake.calls(),
        [
            Call::Get(GetParameterRequest {
                name: "/app/a:3".to_owned(),
                with_decryption: false,
            }),
            Call::GetMany(GetParametersRequest {
                names: strings(&["/app/a", "/missing/x", "/app/b:prod", "/missing/y:2"]),
                with_decryption: true,
            }),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_only_prints_exactly_the_value() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "get",
                "/app/a",
                "--value-only",
                "--decrypt",
                "-o",
                "yaml",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, STORED_VALUE.as_bytes());
    assert_eq!(
        fake.calls(),
        [Call::Get(GetParameterRequest {
            name: "/app/a".to_owned(),
            with_decryption: true,
        })]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_follows_next_token_with_the_same_filters() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "ls",
                "/app",
                "--recursive",
                "--decrypt",
                "--type",
                "secure-string",
                "--label",
                "prod",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "NAME    TYPE    VERSION  VALUE\n\
         /app/a  String  1        p@ss word-café\n\
         /app/b  String  2        p@ss word-café\n"
    );

    // Without a path: the root, one level.
    let output = fake.bosun(root.path(), &["param", "ls"], "").await?;
    assert!(output.status.success(), "{}", stderr(&output));

    let filters = vec![
        ParameterStringFilter {
            key: "Type".to_owned(),
            option: "Equals".to_owned(),
            values: strings(&["SecureString"]),
        },
        ParameterStringFilter {
            key: "Label".to_owned(),
            option: "Equals".to_owned(),
            values: strings(&["prod"]),
        },
    ];
    let by_path = |path: &str, recursive: bool, filters: &[ParameterStringFilter], token: &str| {
        Call::ByPath(GetParametersByPathRequest {
            path: path.to_owned(),
            recursive,
            parameter_filters: filters.to_vec(),
            with_decryption: recursive,
            max_results: 10,
            next_token: token.to_owned(),
        })
    };
    assert_eq!(
        fake.calls(),
        [
            by_path("/app", true, &filters, ""),
            by_path("/app", true, &filters, "page-2"),
            by_path("/", false, &[], ""),
            by_path("/", false, &[], "page-2"),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_describe_pages_through_metadata() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "ls",
                "--describe",
                "/app",
                "--name-prefix",
                "/app/d",
                "--tier",
                "advanced",
                "-o",
                "json",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(printed["parameters"][0]["name"], "/app/d1");
    assert_eq!(printed["parameters"][1]["name"], "/app/d2");
    assert_eq!(printed["parameters"][1]["tier"], "Advanced");
    assert!(printed["parameters"][0].get("value").is_none());

    let filters = vec![
        ParameterStringFilter {
            key: "Path".to_owned(),
            option: "OneLevel".to_owned(),
            values: strings(&["/app"]),
        },
        ParameterStringFilter {
            key: "Name".to_owned(),
            option: "BeginsWith".to_owned(),
            values: strings(&["/app/d"]),
        },
        ParameterStringFilter {
            key: "Tier".to_owned(),
            option: "Equals".to_owned(),
            values: strings(&["Advanced"]),
        },
    ];
    let describe = |token: &str| {
        Call::Describe(DescribeParametersRequest {
            filters: Vec::new(),
            parameter_filters: filters.clone(),
            max_results: 50,
            next_token: token.to_owned(),
        })
    };
    assert_eq!(fake.calls(), [describe(""), describe("page-2")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_unlabel_send_the_version_and_labels() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "param",
                "label",
                "/app/db",
                "--version",
                "3",
                "prod",
                "9bad",
            ],
            "",
        )
        .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "labelled version 3 of parameter /app/db: prod\n"
    );
    assert_eq!(stderr(&output), "error: invalid labels: 9bad\n");

    let output = fake
        .bosun(root.path(), &["param", "label", "/app/db", "blue"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "labelled version 7 of parameter /app/db: blue\n"
    );

    let output = fake
        .bosun(
            root.path(),
            &["param", "unlabel", "/app/db", "--version", "3", "prod"],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "removed labels from version 3 of parameter /app/db: prod\n"
    );

    assert_eq!(
        fake.calls(),
        [
            Call::Label(LabelParameterVersionRequest {
                name: "/app/db".to_owned(),
                parameter_version: 3,
                labels: strings(&["prod", "9bad"]),
            }),
            // No --version: 0, which the server reads as the latest.
            Call::Label(LabelParameterVersionRequest {
                name: "/app/db".to_owned(),
                parameter_version: 0,
                labels: strings(&["blue"]),
            }),
            Call::Unlabel(UnlabelParameterVersionRequest {
                name: "/app/db".to_owned(),
                parameter_version: 3,
                labels: strings(&["prod"]),
            }),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_history_and_tags_send_what_was_asked() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake.bosun(root.path(), &["param", "rm", "/a"], "").await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "deleted parameter /a\n");

    let output = fake
        .bosun(root.path(), &["param", "rm", "/b", "/missing/c", "/d"], "")
        .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "deleted parameter /b\ndeleted parameter /d\n"
    );
    assert_eq!(stderr(&output), "error: parameters not found: /missing/c\n");

    let output = fake
        .bosun(root.path(), &["param", "history", "/a", "--decrypt"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "VERSION  TYPE    TIER      LABELS  LAST MODIFIED  MODIFIED BY  VALUE\n\
         1        String  Standard  -       -              user/alice   value-1\n\
         2        String  Standard  prod    -              user/alice   value-2\n"
    );

    for args in [
        &["param", "tag", "/a", "env=prod", "team="][..],
        &["param", "untag", "/a", "env", "team"],
    ] {
        let output = fake.bosun(root.path(), args, "").await?;
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    let output = fake
        .bosun(root.path(), &["param", "tags", "/a"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "KEY  VALUE\nenv  prod\n");

    let history = |token: &str| {
        Call::History(GetParameterHistoryRequest {
            name: "/a".to_owned(),
            with_decryption: true,
            max_results: 50,
            next_token: token.to_owned(),
        })
    };
    assert_eq!(
        fake.calls(),
        [
            Call::Delete(DeleteParameterRequest {
                name: "/a".to_owned(),
            }),
            Call::DeleteMany(DeleteParametersRequest {
                names: strings(&["/b", "/missing/c", "/d"]),
            }),
            history(""),
            history("page-2"),
            Call::AddTags(AddTagsToResourceRequest {
                resource_type: "Parameter".to_owned(),
                resource_id: "/a".to_owned(),
                tags: vec![tag("env", "prod"), tag("team", "")],
            }),
            Call::RemoveTags(RemoveTagsFromResourceRequest {
                resource_type: "Parameter".to_owned(),
                resource_id: "/a".to_owned(),
                tag_keys: strings(&["env", "team"]),
            }),
            Call::ListTags(ListTagsForResourceRequest {
                resource_type: "Parameter".to_owned(),
                resource_id: "/a".to_owned(),
            }),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_before_any_call() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;
    let good = root.path().join("good.txt");
    std::fs::write(&good, "value")?;
    let good = good.to_string_lossy().into_owned();
    let big = root.path().join("big.txt");
    std::fs::write(&big, "#".repeat(8 * 1024 + 1))?;
    let big = big.to_string_lossy().into_owned();
    let missing = root.path().join("missing.txt");
    let missing = missing.to_string_lossy().into_owned();

    // Flag syntax: clap refuses these, naming the flag and the expected form.
    for (args, expected) in [
        (
            vec!["param", "put", "/a", "v", "--tag", "env"],
            "expected KEY=VALUE",
        ),
        (
            vec!["param", "put", "/a", "v", "--tag", "=prod"],
            "the tag key is empty",
        ),
        (vec!["param", "tag", "/a", "noequals"], "expected KEY=VALUE"),
        (vec!["param", "get", ":3"], "the parameter name is empty"),
        (
            vec!["param", "get", "/a:0"],
            "the version must be a number from 1",
        ),
        (
            vec!["param", "get", "/a:b:c"],
            "expected NAME, NAME:VERSION or NAME:LABEL",
        ),
        (
            vec!["param", "ls", "app"],
            "expected a path starting with /",
        ),
        (vec!["param", "ls", "--tier", "advanced"], "--describe"),
        (vec!["param", "ls", "--describe", "--decrypt"], "--decrypt"),
        (
            vec!["param", "put", "/a", "v", "--type", "secret"],
            "secure-string",
        ),
        (vec!["param", "unlabel", "/a", "prod"], "--version"),
        (vec!["param", "label", "/a", "--version", "0", "prod"], "0"),
    ] {
        let output = fake.bosun(root.path(), &args, "").await?;
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }

    // Our own checks: one `error:` line each.
    for (args, expected) in [
        (
            vec!["param", "put", "/a", "v", "--file", &good],
            "error: give the value either as an argument or with --file, not both\n".to_owned(),
        ),
        (
            vec!["param", "put", "/a"],
            "error: no value: give it as an argument, - for stdin, or --file PATH\n".to_owned(),
        ),
        (
            vec!["param", "put", "/a", "--file", &big],
            format!("error: {big}: the value is larger than 8 KB (8192 bytes)\n"),
        ),
        (
            vec!["param", "put", "/a", "--file", &missing],
            format!("error: cannot read {missing}: "),
        ),
        (
            vec!["param", "put", "/a", "-"],
            "error: stdin: the value is empty\n".to_owned(),
        ),
        (
            vec!["param", "put", "/a", "v", "--policies", "{}"],
            "error: --policies: expected a json array of policies\n".to_owned(),
        ),
        (
            vec!["param", "get", "/a", "/b", "--value-only"],
            "error: --value-only takes exactly one name\n".to_owned(),
        ),
    ] {
        let output = fake.bosun(root.path(), &args, "").await?;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let message = stderr(&output);
        assert!(message.starts_with(&expected), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }

    assert_eq!(fake.calls(), []);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_print_one_line() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(root.path(), &["param", "get", "/missing/db"], "")
        .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: not found: parameter /missing/db does not exist\n"
    );
    assert_eq!(stdout(&output), "");
    Ok(())
}
