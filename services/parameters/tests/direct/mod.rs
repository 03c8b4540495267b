//! Calling `ParameterServiceImpl` directly, as an authenticated caller allowed everything:
//! for tests that run several service instances (replicas) over one store.

#![allow(dead_code)]

use std::sync::Arc;

use bosun_auth::{AuthContext, PolicyDocument, Principal};
use bosun_store::testing::TestDatabase;

/// An authenticated context allowed every action on every resource.
pub fn caller() -> AuthContext {
    AuthContext {
        principal: Principal::parse("user/alice").expect("principal"),
        session_id: "session-1".into(),
        roles: vec![],
        policies: Arc::new(vec![
            PolicyDocument::parse(
                r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#,
            )
            .expect("policy"),
        ]),
        expires_at: chrono::Utc::now() + chrono::TimeDelta::minutes(5),
        token: Arc::from("unused"),
    }
}

/// A request carrying [`caller`], as `VerifyLayer` would have left it.
pub fn req<T>(body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.extensions_mut().insert(caller());
    request
}

/// Applies the audit and parameters migrations.
pub async fn migrated(test_db: &TestDatabase) {
    bosun_store::migrate::<bosun_audit::Migrator>(&test_db.db)
        .await
        .expect("audit migrations");
    bosun_store::migrate::<bosun_parameters::Migrator>(&test_db.db)
        .await
        .expect("parameters migrations");
}
