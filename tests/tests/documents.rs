//! Documents end to end through the gateway: users with policies create, share and read
//! documents; built-ins answer to their SSM names; the CLI round-trips a YAML file; and the
//! service behaves the same running alone behind the gateway's proxy.

use bosun_core::error::status_reason;
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use bosun_proto::auth::v1::{CreateRoleRequest, CreateUserRequest, RolePolicy};
use bosun_proto::documents::v1::document_service_client::DocumentServiceClient;
use bosun_proto::documents::v1::*;
use bosun_tests::{Launch, Process, Store, authed, cli};
use tonic::Code;

const SHELL_DOCUMENT: &str = r#"{
  "schemaVersion": "2.2",
  "description": "Print a greeting",
  "parameters": {"greeting": {"type": "String", "default": "hello"}},
  "mainSteps": [{"action": "aws:runShellScript", "name": "greet",
                 "inputs": {"runCommand": ["echo {{ greeting }}"]}}]
}"#;

async fn documents(
    process: &Process,
) -> anyhow::Result<DocumentServiceClient<tonic::transport::Channel>> {
    Ok(DocumentServiceClient::new(process.channel().await?))
}

/// Creates users alice and bob holding a role allowed every documents action.
async fn document_users(gateway: &Process) -> anyhow::Result<(String, String)> {
    let admin = gateway.admin_token().await?;
    let mut auth = AuthServiceClient::new(gateway.channel().await?);
    auth.create_role(authed(
        CreateRoleRequest {
            role_name: "doc-users".into(),
            description: String::new(),
            policies: vec![RolePolicy {
                policy_name: "documents".into(),
                policy_document:
                    r#"{"Statement":[{"Effect":"Allow","Action":"documents:*","Resource":"*"},
                    {"Effect":"Deny","Action":"documents:AdministerDocuments","Resource":"*"}]}"#
                        .into(),
            }],
        },
        &admin,
    ))
    .await?;
    for user in ["alice", "bob"] {
        auth.create_user(authed(
            CreateUserRequest {
                username: user.into(),
                password: format!("{user}-has-a-long-password"),
                roles: vec!["doc-users".into()],
            },
            &admin,
        ))
        .await?;
    }
    Ok((
        gateway.login("alice", "alice-has-a-long-password").await?,
        gateway.login("bob", "bob-has-a-long-password").await?,
    ))
}

async fn sharing_and_visibility(gateway: &Process) -> anyhow::Result<()> {
    let (alice, bob) = document_users(gateway).await?;
    let mut client = documents(gateway).await?;
    let created = client
        .create_document(authed(
            CreateDocumentRequest {
                content: SHELL_DOCUMENT.into(),
                name: "Greet".into(),
                document_type: DocumentType::Command as i32,
                ..Default::default()
            },
            &alice,
        ))
        .await?
        .into_inner()
        .document_description
        .unwrap_or_default();
    assert_eq!(created.owner, "user/alice");
    assert_eq!(created.document_version, "1");
    assert_eq!(created.hash.len(), 64);

    // Private to alice: bob gets the same answer as for a document that does not exist.
    let hidden = client
        .get_document(authed(
            GetDocumentRequest {
                name: "Greet".into(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .err()
        .map(|s| (s.code(), status_reason(&s)));
    assert_eq!(
        hidden,
        Some((Code::NotFound, Some("InvalidDocument".into())))
    );

    client
        .modify_document_permission(authed(
            ModifyDocumentPermissionRequest {
                name: "Greet".into(),
                permission_type: "Share".into(),
                principals_to_add: vec!["user/bob".into()],
                principals_to_remove: vec![],
            },
            &alice,
        ))
        .await?;
    let shared = client
        .get_document(authed(
            GetDocumentRequest {
                name: "Greet".into(),
                document_format: DocumentFormat::Yaml as i32,
                ..Default::default()
            },
            &bob,
        ))
        .await?
        .into_inner();
    assert!(
        shared.content.contains("schemaVersion"),
        "{}",
        shared.content
    );
    assert_eq!(shared.document_format, DocumentFormat::Yaml as i32);
    // Seeing is not owning.
    let update = client
        .update_document(authed(
            UpdateDocumentRequest {
                content: SHELL_DOCUMENT.replace("hello", "hi"),
                name: "Greet".into(),
                document_version: "$LATEST".into(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .err()
        .map(|s| s.code());
    assert!(
        matches!(
            update,
            Some(Code::PermissionDenied | Code::FailedPrecondition)
        ),
        "{update:?}"
    );

    // An unsupported action is refused at creation, naming where it is.
    let refused = client
        .create_document(authed(
            CreateDocumentRequest {
                content: r#"{"schemaVersion":"2.2","mainSteps":[{"action":"aws:applyPatches","name":"p","inputs":{}}]}"#.into(),
                name: "Patch".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .err()
        .map(|s| (s.code(), s.message().to_string()));
    let (code, message) = refused.unwrap_or((Code::Ok, String::new()));
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("mainSteps[0].action") && message.contains("not supported"),
        "{message}"
    );

    // Built-ins by their SSM names, for anyone allowed to read documents.
    let builtin = client
        .describe_document(authed(
            DescribeDocumentRequest {
                name: "AWS-RunShellScript".into(),
                ..Default::default()
            },
            &bob,
        ))
        .await?
        .into_inner()
        .document
        .unwrap_or_default();
    assert_eq!(builtin.owner, "Bosun");
    assert!(builtin.parameters.iter().any(|p| p.name == "commands"));
    Ok(())
}

#[tokio::test]
async fn documents_are_private_until_shared_on_postgres() -> anyhow::Result<()> {
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path()).store(&store)).await?;
    sharing_and_visibility(&server).await
}

#[tokio::test]
async fn documents_behind_the_proxy_behave_the_same() -> anyhow::Result<()> {
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let port = bosun_tests::free_port()?;
    let gateway = Process::start(
        Launch::new(&["serve", "gateway"], data.path())
            .store(&store)
            .config(&format!(
                "[routes]\n\"bosun.documents.v1.DocumentService\" = \"http://127.0.0.1:{port}\"\n"
            )),
    )
    .await?;
    let _documents = Process::start_on(
        Launch::new(&["serve", "documents"], data.path()).store(&store),
        port,
    )
    .await?;
    sharing_and_visibility(&gateway).await
}

#[tokio::test]
async fn the_cli_creates_and_fetches_a_yaml_document() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path())).await?;
    let token = server.admin_token().await?;
    let files = tempfile::tempdir()?;
    let path = files.path().join("greet.yaml");
    std::fs::write(
        &path,
        "schemaVersion: '2.2'\ndescription: Greet\nmainSteps:\n  - action: aws:runShellScript\n    name: greet\n    inputs:\n      runCommand:\n        - echo hello\n",
    )?;
    let path = path.display().to_string();
    let env = [
        ("BOSUN_SERVER", server.url.as_str()),
        ("BOSUN_TOKEN", token.as_str()),
    ];
    let (ok, stdout, stderr) = cli(&["doc", "create", "Greet", "--file", &path], &env, "").await?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Greet"), "{stdout}");
    let (ok, stdout, stderr) = cli(&["doc", "get", "Greet", "--format", "json"], &env, "").await?;
    assert!(ok, "{stderr}");
    let content: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(
        content["mainSteps"][0]["inputs"]["runCommand"][0],
        "echo hello"
    );
    let (ok, stdout, _) = cli(&["doc", "ls", "--owner", "bosun"], &env, "").await?;
    assert!(ok);
    assert!(stdout.contains("Bosun-RunShellScript"), "{stdout}");
    let (ok, _, stderr) = cli(&["doc", "get", "NoSuchDocument"], &env, "").await?;
    assert!(!ok);
    assert!(stderr.starts_with("error: not found"), "{stderr}");
    Ok(())
}
