//! The gateway end to end, with real `bosun` processes: authentication of every RPC,
//! identity and policies on SQLite and PostgreSQL, revocation, and the same behaviour when a
//! service runs in the gateway's process or behind its HTTP/2 proxy in another process.

use std::time::{Duration, Instant};

use bosun_core::error::status_violations;
use bosun_proto::audit::v1::audit_service_client::AuditServiceClient;
use bosun_proto::audit::v1::{AuditResult, ListAuditEventsRequest};
use bosun_proto::auth::v1::auth_service_client::AuthServiceClient;
use bosun_proto::auth::v1::*;
use bosun_tests::raw::{bosun_methods, call_empty};
use bosun_tests::{ADMIN_PASSWORD, Launch, Process, Store, authed};
use tonic::Code;

const BOB_PASSWORD: &str = "bob-has-a-long-password";

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn auth(process: &Process) -> anyhow::Result<AuthServiceClient<tonic::transport::Channel>> {
    Ok(AuthServiceClient::new(process.channel().await?))
}

async fn audit(process: &Process) -> anyhow::Result<AuditServiceClient<tonic::transport::Channel>> {
    Ok(AuditServiceClient::new(process.channel().await?))
}

#[tokio::test]
async fn every_rpc_without_a_token_is_unauthenticated() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(Launch::new(&["server"], data.path())).await?;
    let methods = bosun_methods()?;
    assert!(methods.len() >= 19, "descriptor set lists {methods:?}");
    let mut public = Vec::new();
    for method in &methods {
        let status = call_empty(server.channel().await?, method, &[]).await?;
        if status.code() == Code::Unauthenticated {
            continue;
        }
        public.push((method.clone(), status.code()));
        // A garbage token is no better than none.
        let status = call_empty(
            server.channel().await?,
            method,
            &[("authorization", "Bearer not-a-token".to_string())],
        )
        .await?;
        assert_ne!(status.code(), Code::Ok, "{method} accepted a garbage token");
    }
    // Login and node registration alone are open (an empty one is refused for its missing
    // fields); the agent channel is open at the edge but its stream demands a signed hello.
    assert_eq!(
        public,
        vec![
            (
                "/bosun.auth.v1.AuthService/Login".to_string(),
                Code::InvalidArgument
            ),
            (
                "/bosun.inventory.v1.NodeService/RegisterManagedInstance".to_string(),
                Code::InvalidArgument
            )
        ]
    );
    for method in &methods {
        if method.ends_with("/Login") || method.ends_with("/RegisterManagedInstance") {
            continue;
        }
        let status = call_empty(
            server.channel().await?,
            method,
            &[("authorization", "Bearer not-a-token".to_string())],
        )
        .await?;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{method} with a garbage token"
        );
    }
    Ok(())
}

/// Users, roles, policies, API keys and the audit trail, as an operator would use them.
async fn identity_lifecycle(store: Store) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let server = Process::start(
        Launch::new(&["server"], data.path())
            .store(&store)
            .env("BOSUN_AUTH__CACHE_TTL", "1s"),
    )
    .await?;
    let backend = store.name();
    let admin = server.admin_token().await?;
    let mut client = auth(&server).await?;

    let me = client
        .get_caller_identity(authed(GetCallerIdentityRequest {}, &admin))
        .await?
        .into_inner();
    assert_eq!(me.principal, "user/admin");
    assert_eq!(me.roles, vec!["admin"]);
    let expires_in = me.expires_at.map(|t| t.seconds).unwrap_or_default() - chrono_now();
    assert!(
        (3500..=3600).contains(&expires_in),
        "client token expires in {expires_in}s"
    );

    // Wrong password and unknown user look the same.
    for (user, password) in [
        ("admin", "wrong-password-123"),
        ("nobody", "wrong-password-123"),
    ] {
        let error = server
            .login(user, password)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("invalid credentials"), "{backend}: {error}");
    }

    // A role that may only read the audit trail of auth actions.
    let policy = r#"{"Statement":[{"Effect":"Allow","Action":"audit:ListAuditEvents","Resource":"*"},
                                   {"Effect":"Deny","Action":"auth:CreateApiKey","Resource":"user:bob"}]}"#;
    client
        .create_role(authed(
            CreateRoleRequest {
                role_name: "auditor".into(),
                description: "reads the audit trail".into(),
                policies: vec![RolePolicy {
                    policy_name: "read-audit".into(),
                    policy_document: policy.into(),
                }],
            },
            &admin,
        ))
        .await?;
    let bad_policy = client
        .create_role(authed(
            CreateRoleRequest {
                role_name: "broken".into(),
                description: String::new(),
                policies: vec![RolePolicy {
                    policy_name: "p".into(),
                    policy_document:
                        r#"{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#.into(),
                }],
            },
            &admin,
        ))
        .await
        .err()
        .map(|status| (status.code(), status_violations(&status)));
    let (code, violations) = bad_policy.unwrap_or((Code::Ok, Vec::new()));
    assert_eq!(code, Code::InvalidArgument, "{backend}");
    assert_eq!(violations[0].field, "policies[0].policy_document");
    assert!(violations[0].rule.contains("Effect"), "{:?}", violations[0]);

    let bad_user = client
        .create_user(authed(
            CreateUserRequest {
                username: "bob".into(),
                password: "short".into(),
                roles: vec![],
            },
            &admin,
        ))
        .await
        .err()
        .map(|status| (status.code(), status_violations(&status)));
    let (code, violations) = bad_user.unwrap_or((Code::Ok, Vec::new()));
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(violations[0].field, "password");

    let missing_role = client
        .create_user(authed(
            CreateUserRequest {
                username: "bob".into(),
                password: BOB_PASSWORD.into(),
                roles: vec!["no-such-role".into()],
            },
            &admin,
        ))
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(missing_role, Some(Code::NotFound));

    client
        .create_user(authed(
            CreateUserRequest {
                username: "bob".into(),
                password: BOB_PASSWORD.into(),
                roles: vec!["auditor".into()],
            },
            &admin,
        ))
        .await?;
    let duplicate = client
        .create_user(authed(
            CreateUserRequest {
                username: "bob".into(),
                password: BOB_PASSWORD.into(),
                roles: vec![],
            },
            &admin,
        ))
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(duplicate, Some(Code::AlreadyExists));

    // Bob may read the audit trail, nothing else; the explicit deny beats self-service.
    let bob = server.login("bob", BOB_PASSWORD).await?;
    let denied = client
        .list_users(authed(ListUsersRequest::default(), &bob))
        .await
        .err()
        .map(|status| (status.code(), status.message().to_string()));
    assert_eq!(
        denied,
        Some((
            Code::PermissionDenied,
            "user/bob is not allowed auth:ListUsers on user:*".to_string()
        ))
    );
    let events = audit(&server)
        .await?
        .list_audit_events(authed(
            ListAuditEventsRequest {
                action: "auth:*".into(),
                ..Default::default()
            },
            &bob,
        ))
        .await?
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.action == "auth:CreateRole" && e.principal == "user/admin")
    );
    let own_key = client
        .create_api_key(authed(CreateApiKeyRequest::default(), &bob))
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(own_key, Some(Code::PermissionDenied));
    // Self-service: bob may change his own password without any policy for it.
    client
        .change_password(authed(
            ChangePasswordRequest {
                username: String::new(),
                new_password: format!("{BOB_PASSWORD}-2"),
            },
            &bob,
        ))
        .await?;
    // ... which ends the sessions made with the old one.
    let old_session = wait_for_code(&mut client, &bob, Code::Unauthenticated).await;
    assert_eq!(
        old_session,
        Code::Unauthenticated,
        "{backend}: old session still accepted"
    );
    let bob = server.login("bob", &format!("{BOB_PASSWORD}-2")).await?;

    // API keys: exchanged for tokens, revocable, effective everywhere within cache_ttl.
    let created = client
        .create_api_key(authed(
            CreateApiKeyRequest {
                username: "admin".into(),
                description: "ci".into(),
                expires_at: None,
            },
            &admin,
        ))
        .await?
        .into_inner();
    let key = created.api_key.clone().unwrap_or_default();
    let login = client
        .login(LoginRequest {
            api_key: created.secret.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(login.principal, "user/admin");
    let listed = client
        .list_api_keys(authed(ListApiKeysRequest::default(), &login.token))
        .await?
        .into_inner()
        .api_keys;
    assert!(listed.iter().any(|k| k.key_id == key.key_id && !k.revoked));
    let tampered = format!("{}x", created.secret);
    let refused = client
        .login(LoginRequest {
            api_key: tampered,
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused, Some(Code::Unauthenticated));
    client
        .revoke_api_key(authed(
            RevokeApiKeyRequest {
                key_id: key.key_id.clone(),
            },
            &admin,
        ))
        .await?;
    let revoked = Instant::now();
    let code = wait_for_code(&mut client, &login.token, Code::Unauthenticated).await;
    assert_eq!(
        code,
        Code::Unauthenticated,
        "{backend}: revoked key's token still works"
    );
    println!(
        "{backend}: revoked api key refused after {:?}",
        revoked.elapsed()
    );
    let relogin = client
        .login(LoginRequest {
            api_key: created.secret,
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(relogin, Some(Code::Unauthenticated));

    // A policy change applies to a live session: detach the role, bob loses audit access.
    client
        .detach_user_role(authed(
            DetachUserRoleRequest {
                username: "bob".into(),
                role_name: "auditor".into(),
            },
            &admin,
        ))
        .await?;
    let mut audit_client = audit(&server).await?;
    let mut code = Code::Ok;
    for _ in 0..100 {
        code = match audit_client
            .list_audit_events(authed(ListAuditEventsRequest::default(), &bob))
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        if code != Code::Ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code,
        Code::PermissionDenied,
        "{backend}: detached role still grants"
    );

    // Roles in use cannot go; built-in roles never.
    let in_use = client
        .delete_role(authed(
            DeleteRoleRequest {
                role_name: "admin".into(),
            },
            &admin,
        ))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(in_use, Some(Code::FailedPrecondition));
    client
        .delete_role(authed(
            DeleteRoleRequest {
                role_name: "auditor".into(),
            },
            &admin,
        ))
        .await?;

    // Every mutation above is in the audit trail, with result, principal and address.
    let events = audit(&server)
        .await?
        .list_audit_events(authed(ListAuditEventsRequest::default(), &admin))
        .await?
        .into_inner()
        .events;
    let seen = |action: &str, result: AuditResult| {
        events.iter().any(|e| {
            e.action == action && e.result == result as i32 && !e.source_address.is_empty()
        })
    };
    for (action, result) in [
        ("auth:Login", AuditResult::Success),
        ("auth:Login", AuditResult::Failure),
        ("auth:CreateRole", AuditResult::Success),
        ("auth:CreateUser", AuditResult::Success),
        ("auth:CreateUser", AuditResult::Failure),
        ("auth:CreateApiKey", AuditResult::Denied),
        ("auth:CreateApiKey", AuditResult::Success),
        ("auth:ChangePassword", AuditResult::Success),
        ("auth:RevokeApiKey", AuditResult::Success),
        ("auth:DetachUserRole", AuditResult::Success),
        ("auth:DeleteRole", AuditResult::Failure),
        ("auth:DeleteRole", AuditResult::Success),
    ] {
        assert!(
            seen(action, result),
            "{backend}: no {action} {result:?} event in {events:#?}"
        );
    }
    // Paging walks the whole trail without repeats.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = audit(&server)
            .await?
            .list_audit_events(authed(
                ListAuditEventsRequest {
                    max_results: 3,
                    next_token: token.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await?
            .into_inner();
        paged.extend(page.events.into_iter().map(|e| e.event_id));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let mut unique = paged.clone();
    unique.dedup();
    assert_eq!(paged.len(), unique.len());
    assert!(paged.len() >= events.len());
    let bad_token = audit(&server)
        .await?
        .list_audit_events(authed(
            ListAuditEventsRequest {
                next_token: "garbage".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .err()
        .map(|status| status_violations(&status));
    assert_eq!(
        bad_token.map(|v| v[0].field.clone()).as_deref(),
        Some("next_token")
    );
    Ok(())
}

/// Calls GetCallerIdentity until it fails with `code` (or 10 s pass); returns the last code.
async fn wait_for_code(
    client: &mut AuthServiceClient<tonic::transport::Channel>,
    token: &str,
    code: Code,
) -> Code {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = match client
            .get_caller_identity(authed(GetCallerIdentityRequest {}, token))
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        if last == code || Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn identity_lifecycle_on_sqlite() -> anyhow::Result<()> {
    identity_lifecycle(Store::Sqlite).await
}

#[tokio::test]
async fn identity_lifecycle_on_postgres() -> anyhow::Result<()> {
    identity_lifecycle(Store::postgres().await).await
}

/// The same checks against a service mounted in the gateway's process and against the same
/// service running alone behind the gateway's proxy.
async fn routed_behaviour(
    gateway: &Process,
    backend_direct: Option<&Process>,
) -> anyhow::Result<()> {
    let admin = gateway.admin_token().await?;
    let mut client = audit(gateway).await?;
    let anonymous = client
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(anonymous, Some(Code::Unauthenticated));
    let events = client
        .list_audit_events(authed(ListAuditEventsRequest::default(), &admin))
        .await?
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.action == "auth:Login" && e.principal == "user/admin")
    );

    // A user without a policy is denied by the service itself, with its name in the message.
    auth(gateway)
        .await?
        .create_user(authed(
            CreateUserRequest {
                username: "carol".into(),
                password: "carol-has-a-long-password".into(),
                roles: vec![],
            },
            &admin,
        ))
        .await?;
    let carol = gateway.login("carol", "carol-has-a-long-password").await?;
    let denied = client
        .list_audit_events(authed(ListAuditEventsRequest::default(), &carol))
        .await
        .err()
        .map(|s| (s.code(), s.message().to_string()));
    assert_eq!(
        denied,
        Some((
            Code::PermissionDenied,
            "user/carol is not allowed audit:ListAuditEvents on audit:events".to_string()
        ))
    );
    let invalid = client
        .list_audit_events(authed(
            ListAuditEventsRequest {
                max_results: 5000,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .err()
        .map(|s| (s.code(), status_violations(&s)));
    let (code, violations) = invalid.unwrap_or((Code::Ok, Vec::new()));
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(violations[0].field, "max_results");

    if let Some(backend) = backend_direct {
        // Straight to the backend, around the gateway: a client token is not an internal
        // token, and no token is no token.
        let mut direct = audit(backend).await?;
        for request in [
            authed(ListAuditEventsRequest::default(), &admin),
            tonic::Request::new(ListAuditEventsRequest::default()),
        ] {
            let code = direct
                .list_audit_events(request)
                .await
                .err()
                .map(|s| s.code());
            assert_eq!(code, Some(Code::Unauthenticated));
        }
    }
    Ok(())
}

#[tokio::test]
async fn routing_behaves_the_same_in_process_and_through_the_proxy() -> anyhow::Result<()> {
    // All in one process.
    let data = tempfile::tempdir()?;
    let all_in_one = Process::start(Launch::new(&["server"], data.path())).await?;
    routed_behaviour(&all_in_one, None).await?;

    // The gateway and the audit service apart, sharing the PostgreSQL store and the key ring.
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    // The gateway makes the key ring the audit service reads, so it starts first; its route
    // points at the audit service's port, chosen up front.
    let audit_port = bosun_tests::free_port()?;
    let gateway = Process::start(
        Launch::new(&["serve", "gateway"], data.path())
            .store(&store)
            .config(&format!(
                "[routes]\n\"bosun.audit.v1.AuditService\" = \"http://127.0.0.1:{audit_port}\"\n"
            )),
    )
    .await?;
    // Before the backend is up, its calls are Unavailable, not hung or lost.
    let admin = gateway.admin_token().await?;
    let unavailable = audit(&gateway)
        .await?
        .list_audit_events(authed(ListAuditEventsRequest::default(), &admin))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(unavailable, Some(Code::Unavailable));
    let backend = Process::start_on(
        Launch::new(&["serve", "audit"], data.path()).store(&store),
        audit_port,
    )
    .await?;
    routed_behaviour(&gateway, Some(&backend)).await?;
    Ok(())
}

#[tokio::test]
async fn a_generated_admin_password_is_shown_once() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut first =
        Process::start(Launch::new(&["server"], data.path()).without_env("BOSUN_ADMIN_PASSWORD"))
            .await?;
    let stderr = first.stderr();
    let password = stderr
        .lines()
        .skip_while(|line| !line.contains("created user `admin` with password"))
        .nth(2)
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert!(password.len() >= 20, "no password in:\n{stderr}");
    first.login("admin", &password).await?;
    let status = first.terminate(Duration::from_secs(10)).await?;
    assert!(status.success(), "exit after SIGTERM: {status}");

    let second =
        Process::start(Launch::new(&["server"], data.path()).without_env("BOSUN_ADMIN_PASSWORD"))
            .await?;
    assert!(!second.stderr().contains(&password), "password shown again");
    second.login("admin", &password).await?;
    assert!(second.login("admin", ADMIN_PASSWORD).await.is_err());
    Ok(())
}

/// Two gateway replicas on one store: a key revoked through one stops working on the other
/// within its cache_ttl (1 s here; 20 s by default, bounded to 30 s by config validation).
#[tokio::test]
async fn revocation_reaches_every_replica() -> anyhow::Result<()> {
    let store = Store::postgres().await;
    let data = tempfile::tempdir()?;
    let replica = || {
        Launch::new(&["serve", "gateway"], data.path())
            .store(&store)
            .env("BOSUN_AUTH__CACHE_TTL", "1s")
    };
    let first = Process::start(replica()).await?;
    let second = Process::start(replica()).await?;
    let admin = first.admin_token().await?;
    let created = auth(&first)
        .await?
        .create_api_key(authed(CreateApiKeyRequest::default(), &admin))
        .await?
        .into_inner();
    let token = auth(&second)
        .await?
        .login(LoginRequest {
            api_key: created.secret,
            ..Default::default()
        })
        .await?
        .into_inner()
        .token;
    let mut on_second = auth(&second).await?;
    on_second
        .get_caller_identity(authed(GetCallerIdentityRequest {}, &token))
        .await?;
    auth(&first)
        .await?
        .revoke_api_key(authed(
            RevokeApiKeyRequest {
                key_id: created.api_key.map(|k| k.key_id).unwrap_or_default(),
            },
            &admin,
        ))
        .await?;
    let revoked = Instant::now();
    let code = wait_for_code(&mut on_second, &token, Code::Unauthenticated).await;
    assert_eq!(
        code,
        Code::Unauthenticated,
        "the other replica still accepts the revoked key"
    );
    println!(
        "revoked on one replica, refused on the other after {:?}",
        revoked.elapsed()
    );
    Ok(())
}
