//! Runs the real `bosun doc …` commands against a fake DocumentService on a loopback port:
//! what each command sends (content, format, filters, principals, tags), that listings follow
//! next_token, that `get` prints content byte for byte, and that bad input fails before any call.

mod common;

use common::{stderr, stdout};

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use bosun_proto::documents::v1::document_service_server::{DocumentService, DocumentServiceServer};
use bosun_proto::documents::v1::*;
use tonic::{Request, Response, Status};

/// A request the fake received, kept whole so tests can compare every field.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Create(CreateDocumentRequest),
    Get(GetDocumentRequest),
    Describe(DescribeDocumentRequest),
    List(ListDocumentsRequest),
    Versions(ListDocumentVersionsRequest),
    Update(UpdateDocumentRequest),
    SetDefault(UpdateDocumentDefaultVersionRequest),
    Delete(DeleteDocumentRequest),
    Share(ModifyDocumentPermissionRequest),
    Permissions(DescribeDocumentPermissionRequest),
    AddTags(AddTagsToResourceRequest),
    RemoveTags(RemoveTagsFromResourceRequest),
    ListTags(ListTagsForResourceRequest),
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// Content `get` returns: no final newline, a tab and a non-ASCII character, so any
/// cleaning or added newline on the way to stdout shows.
const STORED_CONTENT: &str = "schemaVersion: '2.2'\nmainSteps:\n\t- name: café";

struct FakeDocuments {
    calls: Calls,
}

impl FakeDocuments {
    fn record(&self, call: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

fn description(name: &str, version: &str) -> DocumentDescription {
    DocumentDescription {
        name: name.to_owned(),
        document_version: version.to_owned(),
        latest_version: version.to_owned(),
        default_version: "1".to_owned(),
        document_type: DocumentType::Command as i32,
        document_format: DocumentFormat::Yaml as i32,
        schema_version: "2.2".to_owned(),
        owner: "user/admin".to_owned(),
        status: DocumentStatus::Active as i32,
        hash: "0123abcd".to_owned(),
        hash_type: "Sha256".to_owned(),
        parameters: vec![DocumentParameter {
            name: "service".to_owned(),
            r#type: "String".to_owned(),
            description: "unit".to_owned(),
            default_value: r#""nginx""#.to_owned(),
        }],
        ..Default::default()
    }
}

fn identifier(name: &str) -> DocumentIdentifier {
    DocumentIdentifier {
        name: name.to_owned(),
        owner: "user/admin".to_owned(),
        document_version: "1".to_owned(),
        document_type: DocumentType::Command as i32,
        schema_version: "2.2".to_owned(),
        document_format: DocumentFormat::Yaml as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl DocumentService for FakeDocuments {
    async fn create_document(
        &self,
        request: Request<CreateDocumentRequest>,
    ) -> Result<Response<CreateDocumentResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Create(request.clone()));
        Ok(Response::new(CreateDocumentResponse {
            document_description: Some(description(&request.name, "1")),
        }))
    }

    async fn get_document(
        &self,
        request: Request<GetDocumentRequest>,
    ) -> Result<Response<GetDocumentResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Get(request.clone()));
        Ok(Response::new(GetDocumentResponse {
            name: request.name,
            document_version: "3".to_owned(),
            status: DocumentStatus::Active as i32,
            content: STORED_CONTENT.to_owned(),
            document_type: DocumentType::Command as i32,
            document_format: DocumentFormat::Yaml as i32,
            ..Default::default()
        }))
    }

    async fn describe_document(
        &self,
        request: Request<DescribeDocumentRequest>,
    ) -> Result<Response<DescribeDocumentResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Describe(request.clone()));
        if request.name == "Missing" {
            return Err(Status::not_found("document Missing does not exist"));
        }
        Ok(Response::new(DescribeDocumentResponse {
            document: Some(description(&request.name, "1")),
        }))
    }

    async fn list_documents(
        &self,
        request: Request<ListDocumentsRequest>,
    ) -> Result<Response<ListDocumentsResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::List(request.clone()));
        // Two pages, so the CLI must follow next_token to see the second document.
        let page = match request.next_token.as_str() {
            "" => ListDocumentsResponse {
                document_identifiers: vec![identifier("Ops-A")],
                next_token: "page-2".to_owned(),
            },
            "page-2" => ListDocumentsResponse {
                document_identifiers: vec![identifier("Ops-B")],
                next_token: String::new(),
            },
            other => return Err(Status::invalid_argument(format!("bad next_token {other}"))),
        };
        Ok(Response::new(page))
    }

    async fn list_document_versions(
        &self,
        request: Request<ListDocumentVersionsRequest>,
    ) -> Result<Response<ListDocumentVersionsResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Versions(request.clone()));
        let version = |number: &str, is_default: bool| DocumentVersionInfo {
            name: request.name.clone(),
            document_version: number.to_owned(),
            is_default_version: is_default,
            document_format: DocumentFormat::Yaml as i32,
            status: DocumentStatus::Active as i32,
            ..Default::default()
        };
        let page = match request.next_token.as_str() {
            "" => ListDocumentVersionsResponse {
                document_versions: vec![version("1", true)],
                next_token: "v-2".to_owned(),
            },
            "v-2" => ListDocumentVersionsResponse {
                document_versions: vec![version("2", false)],
                next_token: String::new(),
            },
            other => return Err(Status::invalid_argument(format!("bad next_token {other}"))),
        };
        Ok(Response::new(page))
    }

    async fn update_document(
        &self,
        request: Request<UpdateDocumentRequest>,
    ) -> Result<Response<UpdateDocumentResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Update(request.clone()));
        Ok(Response::new(UpdateDocumentResponse {
            document_description: Some(description(&request.name, "2")),
        }))
    }

    async fn update_document_default_version(
        &self,
        request: Request<UpdateDocumentDefaultVersionRequest>,
    ) -> Result<Response<UpdateDocumentDefaultVersionResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::SetDefault(request.clone()));
        Ok(Response::new(UpdateDocumentDefaultVersionResponse {
            description: Some(DocumentDefaultVersionDescription {
                name: request.name,
                default_version: request.document_version,
                default_version_name: "stable".to_owned(),
            }),
        }))
    }

    async fn delete_document(
        &self,
        request: Request<DeleteDocumentRequest>,
    ) -> Result<Response<DeleteDocumentResponse>, Status> {
        self.record(Call::Delete(request.into_inner()));
        Ok(Response::new(DeleteDocumentResponse {}))
    }

    async fn modify_document_permission(
        &self,
        request: Request<ModifyDocumentPermissionRequest>,
    ) -> Result<Response<ModifyDocumentPermissionResponse>, Status> {
        self.record(Call::Share(request.into_inner()));
        Ok(Response::new(ModifyDocumentPermissionResponse {}))
    }

    async fn describe_document_permission(
        &self,
        request: Request<DescribeDocumentPermissionRequest>,
    ) -> Result<Response<DescribeDocumentPermissionResponse>, Status> {
        let request = request.into_inner();
        self.record(Call::Permissions(request.clone()));
        // Two pages here too: sharing lists can be long.
        let page = match request.next_token.as_str() {
            "" => DescribeDocumentPermissionResponse {
                principals: vec!["All".to_owned()],
                next_token: "p-2".to_owned(),
            },
            "p-2" => DescribeDocumentPermissionResponse {
                principals: vec!["role/ops".to_owned()],
                next_token: String::new(),
            },
            other => return Err(Status::invalid_argument(format!("bad next_token {other}"))),
        };
        Ok(Response::new(page))
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
            tag_list: vec![Tag {
                key: "env".to_owned(),
                value: "prod".to_owned(),
            }],
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
        let service = DocumentServiceServer::new(FakeDocuments {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sends_the_file_with_type_format_and_tags() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;
    let content = "schemaVersion: '2.2'\ndescription: restart\nmainSteps: []\n";
    let path = root.path().join("restart.yaml");
    std::fs::write(&path, content)?;
    let path = path.to_string_lossy().into_owned();

    let output = fake
        .bosun(
            root.path(),
            &[
                "doc",
                "create",
                "RestartNginx",
                "--file",
                &path,
                "--type",
                "automation",
                "--version-name",
                "v1",
                "--display-name",
                "Restart nginx",
                "--target-type",
                "/",
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
        fake.calls(),
        [Call::Create(CreateDocumentRequest {
            content: content.to_owned(),
            name: "RestartNginx".to_owned(),
            display_name: "Restart nginx".to_owned(),
            version_name: "v1".to_owned(),
            document_type: DocumentType::Automation as i32,
            // From the .yaml extension.
            document_format: DocumentFormat::Yaml as i32,
            target_type: "/".to_owned(),
            tags: vec![tag("env", "prod"), tag("team", "ops=core")],
        })]
    );
    let printed = stdout(&output);
    assert!(
        printed.starts_with("name:             RestartNginx\n"),
        "{printed}"
    );
    assert!(printed.contains("\nschema:           2.2\n"), "{printed}");
    assert!(
        printed.contains("\nowner:            user/admin\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\nhash:             0123abcd (Sha256)\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\nservice    String  nginx    unit\n"),
        "{printed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_update_from_stdin_detect_json() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;
    let content = r#"{"schemaVersion": "2.2", "mainSteps": []}"#;

    let output = fake
        .bosun(
            root.path(),
            &["doc", "create", "FromStdin", "--file", "-", "-o", "json"],
            content,
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(printed["name"], "FromStdin");
    assert_eq!(printed["parameters"][0]["default_value"], "nginx");

    let output = fake
        .bosun(
            root.path(),
            &["doc", "update", "FromStdin", "-f", "-", "--version", "1"],
            content,
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));

    let calls = fake.calls();
    let [Call::Create(create), Call::Update(update)] = calls.as_slice() else {
        anyhow::bail!("calls: {calls:?}");
    };
    assert_eq!(create.content, content);
    assert_eq!(create.document_format, DocumentFormat::Json as i32);
    // The default type.
    assert_eq!(create.document_type, DocumentType::Command as i32);
    assert!(create.tags.is_empty());
    assert_eq!(update.content, content);
    assert_eq!(update.document_version, "1");
    assert_eq!(update.document_format, DocumentFormat::Json as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_the_content_verbatim() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "doc",
                "get",
                "RestartNginx",
                "--version",
                "$LATEST",
                "--format",
                "yaml",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, STORED_CONTENT.as_bytes());

    let output = fake
        .bosun(
            root.path(),
            &[
                "doc",
                "get",
                "RestartNginx",
                "--version-name",
                "v1",
                "-o",
                "json",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(printed["content"], STORED_CONTENT);
    assert_eq!(printed["document_version"], "3");
    assert_eq!(printed["document_format"], "YAML");

    assert_eq!(
        fake.calls(),
        [
            Call::Get(GetDocumentRequest {
                name: "RestartNginx".to_owned(),
                version_name: String::new(),
                document_version: "$LATEST".to_owned(),
                document_format: DocumentFormat::Yaml as i32,
            }),
            Call::Get(GetDocumentRequest {
                name: "RestartNginx".to_owned(),
                version_name: "v1".to_owned(),
                document_version: String::new(),
                document_format: DocumentFormat::Unspecified as i32,
            }),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_sends_filters_on_every_page() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "doc",
                "ls",
                "--owner",
                "self",
                "--type",
                "command",
                "--name-prefix",
                "Ops-",
                "--tag",
                "env=prod",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "NAME   OWNER       TYPE     SCHEMA  DEFAULT-VERSION  FORMAT\n\
         Ops-A  user/admin  Command  2.2     1                YAML\n\
         Ops-B  user/admin  Command  2.2     1                YAML\n"
    );

    let filter = |key: &str, value: &str| DocumentKeyValuesFilter {
        key: key.to_owned(),
        values: vec![value.to_owned()],
    };
    let filters = vec![
        filter("Owner", "Self"),
        filter("DocumentType", "Command"),
        filter("Name", "Ops-"),
        filter("tag:env", "prod"),
    ];
    assert_eq!(
        fake.calls(),
        [
            Call::List(ListDocumentsRequest {
                filters: filters.clone(),
                max_results: 50,
                next_token: String::new(),
            }),
            Call::List(ListDocumentsRequest {
                filters,
                max_results: 50,
                next_token: "page-2".to_owned(),
            }),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_rm_and_tags_send_what_was_asked() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(
            root.path(),
            &[
                "doc",
                "share",
                "D",
                "--add",
                "user/carol",
                "role/ops",
                "--remove",
                "All",
            ],
            "",
        )
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "shared document D with user/carol, role/ops; stopped sharing it with All\n"
    );

    for args in [
        &["doc", "rm", "D", "--version", "2"][..],
        &["doc", "tag", "D", "env=prod", "team="],
        &["doc", "untag", "D", "env", "team"],
    ] {
        let output = fake.bosun(root.path(), args, "").await?;
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    let output = fake.bosun(root.path(), &["doc", "tags", "D"], "").await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "KEY  VALUE\nenv  prod\n");

    let document = |name: &str| ("Document".to_owned(), name.to_owned());
    assert_eq!(
        fake.calls(),
        [
            Call::Share(ModifyDocumentPermissionRequest {
                name: "D".to_owned(),
                permission_type: "Share".to_owned(),
                principals_to_add: vec!["user/carol".to_owned(), "role/ops".to_owned()],
                principals_to_remove: vec!["All".to_owned()],
            }),
            Call::Delete(DeleteDocumentRequest {
                name: "D".to_owned(),
                document_version: "2".to_owned(),
                version_name: String::new(),
            }),
            Call::AddTags(AddTagsToResourceRequest {
                resource_type: document("D").0,
                resource_id: document("D").1,
                tags: vec![tag("env", "prod"), tag("team", "")],
            }),
            Call::RemoveTags(RemoveTagsFromResourceRequest {
                resource_type: document("D").0,
                resource_id: document("D").1,
                tag_keys: vec!["env".to_owned(), "team".to_owned()],
            }),
            Call::ListTags(ListTagsForResourceRequest {
                resource_type: document("D").0,
                resource_id: document("D").1,
            }),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_before_any_call() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;
    let good = root.path().join("good.yaml");
    std::fs::write(&good, "schemaVersion: '2.2'\n")?;
    let good = good.to_string_lossy().into_owned();
    let big = root.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(64 * 1024 + 1))?;
    let big = big.to_string_lossy().into_owned();
    let missing = root.path().join("missing.yaml");
    let missing = missing.to_string_lossy().into_owned();

    // Flag syntax: clap refuses these, naming the flag and the expected form.
    for (args, expected) in [
        (
            vec!["doc", "create", "D", "--file", &good, "--tag", "env"],
            "expected KEY=VALUE",
        ),
        (vec!["doc", "ls", "--tag", "=prod"], "the tag key is empty"),
        (vec!["doc", "tag", "D", "noequals"], "expected KEY=VALUE"),
        (
            vec!["doc", "share", "D", "--add", "carol"],
            "expected user/NAME, role/NAME or All",
        ),
        (vec!["doc", "share", "D"], "--add"),
        (vec!["doc", "get", "D", "--version", "newest"], "'$LATEST'"),
        (
            vec!["doc", "set-default", "D", "0"],
            "expected a version number",
        ),
    ] {
        let output = fake.bosun(root.path(), &args, "").await?;
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }

    // The document itself: one `error:` line each.
    for (args, expected) in [
        (
            vec!["doc", "create", "D", "--file", &big],
            format!("error: {big}: the document is larger than 64 KB (65536 bytes)\n"),
        ),
        (
            vec!["doc", "create", "D", "--file", &missing],
            format!("error: cannot read {missing}: "),
        ),
        (
            vec!["doc", "update", "D", "--file", "-"],
            "error: stdin: the document is empty\n".to_owned(),
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
        .bosun(
            root.path(),
            &["doc", "describe", "Missing", "--version", "2"],
            "",
        )
        .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: not found: document Missing does not exist\n"
    );
    assert_eq!(
        fake.calls(),
        [Call::Describe(DescribeDocumentRequest {
            name: "Missing".to_owned(),
            document_version: "2".to_owned(),
            version_name: String::new(),
        })]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_permissions_follow_every_page() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let root = tempfile::tempdir()?;

    let output = fake
        .bosun(root.path(), &["doc", "versions", "D"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "VERSION  VERSION NAME  DEFAULT  FORMAT  STATUS  CREATED\n\
         1        -             yes      YAML    Active  -\n\
         2        -             no       YAML    Active  -\n"
    );

    let output = fake
        .bosun(root.path(), &["doc", "permissions", "D", "-o", "json"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(
        printed,
        serde_json::json!({"name": "D", "principals": ["All", "role/ops"]})
    );

    let output = fake
        .bosun(root.path(), &["doc", "set-default", "D", "2"], "")
        .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "the default version of document D is now 2 (stable)\n"
    );

    let versions = |token: &str| {
        Call::Versions(ListDocumentVersionsRequest {
            name: "D".to_owned(),
            max_results: 50,
            next_token: token.to_owned(),
        })
    };
    let permissions = |token: &str| {
        Call::Permissions(DescribeDocumentPermissionRequest {
            name: "D".to_owned(),
            permission_type: "Share".to_owned(),
            max_results: 200,
            next_token: token.to_owned(),
        })
    };
    assert_eq!(
        fake.calls(),
        [
            versions(""),
            versions("v-2"),
            permissions(""),
            permissions("p-2"),
            Call::SetDefault(UpdateDocumentDefaultVersionRequest {
                name: "D".to_owned(),
                document_version: "2".to_owned(),
            }),
        ]
    );
    Ok(())
}
