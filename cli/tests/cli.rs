//! Runs the real `bosun` binary against a fake AuthService on a loopback port: login writes
//! a private token file keyed by server, `--token` beats the stored token, listings page,
//! and failures print one `error:` line with a non-zero exit.

mod common;

use common::{stderr, stdout};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bosun_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use bosun_proto::auth::v1::*;
use tonic::{Request, Response, Status};

const PASSWORD: &str = "correct horse battery staple";
const API_KEY: &str = "bsk_ak-00000000000000aa_secret";

/// What the fake saw: the method and the `authorization` header of each call.
type Calls = Arc<Mutex<Vec<(&'static str, Option<String>)>>>;

/// A fake AuthService: fixed credentials, tokens named after the server so a test can tell
/// which server's token was sent.
struct FakeAuth {
    name: &'static str,
    calls: Calls,
}

impl FakeAuth {
    fn record<T>(&self, method: &'static str, request: &Request<T>) {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((method, header));
        }
    }
}

fn in_an_hour() -> Option<prost_types::Timestamp> {
    Some((SystemTime::now() + Duration::from_secs(3600)).into())
}

fn user(name: &str) -> User {
    User {
        username: name.to_owned(),
        roles: vec!["dev".to_owned()],
        created_date: Some(prost_types::Timestamp {
            seconds: 1_704_067_200,
            nanos: 0,
        }),
        password_last_changed: None,
    }
}

#[tonic::async_trait]
impl AuthService for FakeAuth {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        self.record("Login", &request);
        let login = request.into_inner();
        let (token, principal) = if login.api_key == API_KEY {
            (format!("key-token-{}", self.name), "user/ci")
        } else if login.username == "admin" && login.password == PASSWORD {
            (format!("stored-token-{}", self.name), "user/admin")
        } else {
            return Err(Status::unauthenticated("invalid credentials"));
        };
        Ok(Response::new(LoginResponse {
            token,
            expires_at: in_an_hour(),
            principal: principal.to_owned(),
        }))
    }

    async fn get_caller_identity(
        &self,
        request: Request<GetCallerIdentityRequest>,
    ) -> Result<Response<GetCallerIdentityResponse>, Status> {
        self.record("GetCallerIdentity", &request);
        let Some(token) = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return Err(Status::unauthenticated("missing bearer token"));
        };
        // The session id echoes the token so the output shows which one arrived.
        Ok(Response::new(GetCallerIdentityResponse {
            kind: PrincipalKind::User as i32,
            principal: "user/admin".to_owned(),
            name: "admin".to_owned(),
            roles: vec!["admin".to_owned()],
            session_id: token.to_owned(),
            expires_at: in_an_hour(),
        }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        self.record("CreateUser", &request);
        Err(Status::permission_denied(
            "user/bob is not allowed auth:CreateUser on user:carol",
        ))
    }

    async fn get_user(
        &self,
        _: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.record("ListUsers", &request);
        // Two pages, so the CLI must follow next_token to see bob.
        let page = match request.get_ref().next_token.as_str() {
            "" => ListUsersResponse {
                users: vec![user("alice")],
                next_token: "page-2".to_owned(),
            },
            "page-2" => ListUsersResponse {
                users: vec![user("bob")],
                next_token: String::new(),
            },
            other => return Err(Status::invalid_argument(format!("bad next_token {other}"))),
        };
        Ok(Response::new(page))
    }

    async fn delete_user(
        &self,
        _: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn change_password(
        &self,
        _: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn attach_user_role(
        &self,
        _: Request<AttachUserRoleRequest>,
    ) -> Result<Response<AttachUserRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn detach_user_role(
        &self,
        _: Request<DetachUserRoleRequest>,
    ) -> Result<Response<DetachUserRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn create_api_key(
        &self,
        _: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_api_keys(
        &self,
        _: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn revoke_api_key(
        &self,
        _: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn create_role(
        &self,
        _: Request<CreateRoleRequest>,
    ) -> Result<Response<CreateRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_role(
        &self,
        _: Request<GetRoleRequest>,
    ) -> Result<Response<GetRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_roles(
        &self,
        _: Request<ListRolesRequest>,
    ) -> Result<Response<ListRolesResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delete_role(
        &self,
        _: Request<DeleteRoleRequest>,
    ) -> Result<Response<DeleteRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn put_role_policy(
        &self,
        _: Request<PutRolePolicyRequest>,
    ) -> Result<Response<PutRolePolicyResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delete_role_policy(
        &self,
        _: Request<DeleteRolePolicyRequest>,
    ) -> Result<Response<DeleteRolePolicyResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// A running fake: its URL and what it has seen. It stops with the test's runtime.
struct Fake {
    url: String,
    calls: Calls,
}

impl Fake {
    async fn start(name: &'static str) -> anyhow::Result<Self> {
        let calls = Calls::default();
        let service = AuthServiceServer::new(FakeAuth {
            name,
            calls: calls.clone(),
        });
        let url = common::serve(tonic::service::Routes::new(service)).await?;
        Ok(Self { url, calls })
    }

    /// The `authorization` header of the last call of `method`.
    fn last_authorization(&self, method: &str) -> Option<String> {
        let calls = self.calls.lock().ok()?;
        calls
            .iter()
            .rev()
            .find(|(name, _)| *name == method)
            .and_then(|(_, header)| header.clone())
    }
}

/// Runs `bosun` with a private config dir and none of the caller's BOSUN_* settings.
async fn bosun(
    config_dir: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    common::run_bosun(config_dir, args, stdin, env).await
}

fn config_dir(root: &tempfile::TempDir) -> PathBuf {
    // Not created yet: bosun must create it itself, privately.
    root.path().join("config").join("bosun")
}

async fn login(dir: &Path, fake: &Fake) -> anyhow::Result<Output> {
    bosun(
        dir,
        &["--server", &fake.url, "login", "--password-stdin"],
        &format!("{PASSWORD}\n"),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_a_private_token_that_whoami_sends() -> anyhow::Result<()> {
    let fake = Fake::start("a").await?;
    let root = tempfile::tempdir()?;
    let dir = config_dir(&root);

    let output = login(&dir, &fake).await?;
    assert!(output.status.success(), "login failed: {}", stderr(&output));
    let printed = stdout(&output);
    let expected = format!("logged in to {} as user/admin (token expires ", fake.url);
    assert!(printed.starts_with(&expected), "{printed}");
    assert!(
        printed.ends_with(")\n") && printed.lines().count() == 1,
        "{printed:?}"
    );
    // Login itself sends no token.
    assert_eq!(fake.last_authorization("Login"), None);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file_mode = std::fs::metadata(dir.join("credentials.json"))?
            .permissions()
            .mode()
            & 0o777;
        let dir_mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600, "file mode {file_mode:o}");
        assert_eq!(dir_mode, 0o700, "dir mode {dir_mode:o}");
    }
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("credentials.json"))?)?;
    assert_eq!(stored["servers"][&fake.url]["token"], "stored-token-a");
    assert_eq!(stored["servers"][&fake.url]["principal"], "user/admin");

    let output = bosun(&dir, &["--server", &fake.url, "whoami"], "", &[]).await?;
    assert!(
        output.status.success(),
        "whoami failed: {}",
        stderr(&output)
    );
    assert_eq!(
        fake.last_authorization("GetCallerIdentity").as_deref(),
        Some("Bearer stored-token-a")
    );
    let printed = stdout(&output);
    assert!(printed.contains("principal:  user/admin\n"), "{printed}");
    assert!(
        printed.contains("session:    stored-token-a\n"),
        "{printed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flag_and_env_win_over_the_stored_token() -> anyhow::Result<()> {
    let fake = Fake::start("a").await?;
    let root = tempfile::tempdir()?;
    let dir = config_dir(&root);
    assert!(login(&dir, &fake).await?.status.success());

    let output = bosun(
        &dir,
        &["--server", &fake.url, "--token", "flag-token", "whoami"],
        "",
        &[],
    )
    .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        fake.last_authorization("GetCallerIdentity").as_deref(),
        Some("Bearer flag-token")
    );

    let output = bosun(
        &dir,
        &["whoami", "-o", "json"],
        "",
        &[
            ("BOSUN_SERVER", fake.url.as_str()),
            ("BOSUN_TOKEN", "env-token"),
        ],
    )
    .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let identity: serde_json::Value = serde_json::from_str(&stdout(&output))?;
    assert_eq!(identity["session_id"], "env-token");
    assert_eq!(identity["kind"], "user");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_keeps_its_own_login() -> anyhow::Result<()> {
    let (a, b) = (Fake::start("a").await?, Fake::start("b").await?);
    let root = tempfile::tempdir()?;
    let dir = config_dir(&root);
    assert!(login(&dir, &a).await?.status.success());
    // An API key login to the second server, with a trailing slash on its URL.
    let b_url = format!("{}/", b.url);
    let output = bosun(
        &dir,
        &["--server", &b_url, "login", "--api-key-stdin"],
        &format!("{API_KEY}\n"),
        &[],
    )
    .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(" as user/ci "),
        "{}",
        stdout(&output)
    );

    assert!(
        bosun(&dir, &["--server", &a.url, "whoami"], "", &[])
            .await?
            .status
            .success()
    );
    assert!(
        bosun(&dir, &["--server", &b.url, "whoami"], "", &[])
            .await?
            .status
            .success()
    );
    assert_eq!(
        a.last_authorization("GetCallerIdentity").as_deref(),
        Some("Bearer stored-token-a")
    );
    assert_eq!(
        b.last_authorization("GetCallerIdentity").as_deref(),
        Some("Bearer key-token-b")
    );

    let output = bosun(&dir, &["--server", &a.url, "logout"], "", &[]).await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with(&format!("logged out of {}", a.url)));

    let output = bosun(&dir, &["--server", &a.url, "whoami"], "", &[]).await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!("error: not logged in to {}; run bosun login\n", a.url)
    );
    assert!(
        bosun(&dir, &["--server", &b.url, "whoami"], "", &[])
            .await?
            .status
            .success()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_print_one_error_line() -> anyhow::Result<()> {
    let fake = Fake::start("a").await?;
    let root = tempfile::tempdir()?;
    let dir = config_dir(&root);

    let output = bosun(
        &dir,
        &["--server", &fake.url, "login", "--password-stdin"],
        "wrong\n",
        &[],
    )
    .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: unauthenticated: invalid credentials\n"
    );
    assert!(!dir.join("credentials.json").exists());

    let output = bosun(
        &dir,
        &[
            "--server",
            &fake.url,
            "--token",
            "t",
            "users",
            "create",
            "carol",
            "--password-stdin",
        ],
        "a long enough password\n",
        &[],
    )
    .await?;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: permission denied: user/bob is not allowed auth:CreateUser on user:carol\n"
    );

    let output = bosun(
        &dir,
        &["--server", "http://127.0.0.1:1", "--token", "t", "whoami"],
        "",
        &[],
    )
    .await?;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.starts_with("error: cannot connect to http://127.0.0.1:1"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_ls_follows_every_page() -> anyhow::Result<()> {
    let fake = Fake::start("a").await?;
    let root = tempfile::tempdir()?;
    let dir = config_dir(&root);

    let output = bosun(
        &dir,
        &["--server", &fake.url, "--token", "t", "users", "ls"],
        "",
        &[],
    )
    .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "USERNAME  ROLES  CREATED               PASSWORD CHANGED\n\
         alice     dev    2024-01-01T00:00:00Z  -\n\
         bob       dev    2024-01-01T00:00:00Z  -\n"
    );

    let output = bosun(
        &dir,
        &[
            "--server", &fake.url, "--token", "t", "users", "ls", "-o", "yaml",
        ],
        "",
        &[],
    )
    .await?;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(
        printed.contains("username: alice") && printed.contains("username: bob"),
        "{printed}"
    );
    Ok(())
}
