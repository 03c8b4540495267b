//! Who is calling: `Principal` (`user/alice`, `service/commands`, `node/mi-…`) and the
//! `AuthContext` a service sees for a verified call, with its local authorization checks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::AuthError;
use crate::jwt::Claims;
use crate::policy::{AccessRequest, Decision, PolicyDocument, evaluate, evaluate_explicit};

/// The longest principal name accepted; long enough for emails and node ids.
const MAX_NAME_LEN: usize = 128;

/// An authenticated identity. Its string form, `<kind>/<name>`, is the JWT `sub`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    User(String),
    Service(String),
    Node(String),
}

impl Principal {
    /// Parses `user/alice`, `service/commands` or `node/mi-0123…`.
    ///
    /// Names are 1-128 characters of `A-Z a-z 0-9 . _ @ + = , -` (IAM's user name set); in
    /// particular no `/`, so the string form is unambiguous and policy patterns on it behave.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let (kind, name) = s.split_once('/').ok_or_else(|| {
            AuthError::InvalidPrincipal("must be <kind>/<name>, e.g. user/alice".to_owned())
        })?;
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(AuthError::InvalidPrincipal(format!(
                "name must be 1-{MAX_NAME_LEN} characters"
            )));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+=,-".contains(c))
        {
            return Err(AuthError::InvalidPrincipal(
                "name may contain only letters, digits and . _ @ + = , -".to_owned(),
            ));
        }
        let name = name.to_owned();
        match kind {
            "user" => Ok(Principal::User(name)),
            "service" => Ok(Principal::Service(name)),
            "node" => Ok(Principal::Node(name)),
            _ => Err(AuthError::InvalidPrincipal(
                "kind must be user, service or node".to_owned(),
            )),
        }
    }

    /// `user`, `service` or `node`.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Principal::User(_) => "user",
            Principal::Service(_) => "service",
            Principal::Node(_) => "node",
        }
    }

    /// The name without its kind, e.g. `alice`.
    pub fn name(&self) -> &str {
        match self {
            Principal::User(name) | Principal::Service(name) | Principal::Node(name) => name,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind_str(), self.name())
    }
}

/// The verified caller of one RPC, put into request extensions by `VerifyLayer`.
#[derive(Clone)]
pub struct AuthContext {
    pub principal: Principal,
    /// The login session or API key the gateway authenticated; for audit events.
    pub session_id: String,
    pub roles: Vec<String>,
    /// The caller's resolved policies, as the gateway put them into the internal token.
    pub policies: Arc<Vec<PolicyDocument>>,
    pub expires_at: DateTime<Utc>,
    /// The verified internal token, to forward on calls this service makes on the caller's
    /// behalf. Never log it; `Debug` redacts it.
    pub token: Arc<str>,
}

// Hand-written so that `{:?}` on a context (easy to do in a log line) never prints the token.
impl fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("principal", &self.principal)
            .field("session_id", &self.session_id)
            .field("roles", &self.roles)
            .field("policies", &self.policies)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AuthContext {
    /// Builds a context from claims that `TokenVerifier::verify` accepted and the token they
    /// came from.
    pub fn from_claims(claims: Claims, token: &str) -> Result<Self, AuthError> {
        // The signer is trusted, but a bad `sub` must still fail closed, as a bad token.
        let principal = Principal::parse(&claims.sub)
            .map_err(|_| AuthError::InvalidToken("invalid subject".to_owned()))?;
        let expires_at = DateTime::<Utc>::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AuthError::InvalidToken("invalid expiry".to_owned()))?;
        Ok(AuthContext {
            principal,
            session_id: claims.sid,
            roles: claims.roles,
            policies: Arc::new(claims.policies),
            expires_at,
            token: Arc::from(token),
        })
    }

    /// The policy decision for `action` on `resource`, whose tags are `tags`.
    pub fn decide(
        &self,
        action: &str,
        resource: &str,
        tags: &BTreeMap<String, String>,
    ) -> Decision {
        evaluate(
            &self.policies,
            &AccessRequest {
                principal: &self.principal,
                action,
                resource,
                resource_tags: tags,
            },
        )
    }

    /// The decision for a grant that must be explicit: only a statement naming `resource`
    /// literally allows it (see [`evaluate_explicit`]), e.g. `sessions:RunAs` on `runas:root`.
    pub fn decide_explicit(
        &self,
        action: &str,
        resource: &str,
        tags: &BTreeMap<String, String>,
    ) -> Decision {
        evaluate_explicit(
            &self.policies,
            &AccessRequest {
                principal: &self.principal,
                action,
                resource,
                resource_tags: tags,
            },
        )
    }

    /// `Ok` if the caller's policies allow `action` on `resource`, else `PermissionDenied`,
    /// e.g. `user/alice is not allowed parameters:GetParameter on parameter:/app/db`.
    pub fn authorize(
        &self,
        action: &str,
        resource: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AuthError> {
        match self.decide(action, resource, tags) {
            Decision::Allow => Ok(()),
            Decision::ExplicitDeny | Decision::ImplicitDeny => Err(AuthError::PermissionDenied {
                principal: self.principal.to_string(),
                action: action.to_owned(),
                resource: resource.to_owned(),
            }),
        }
    }

    /// Whether `action` on `resource` is allowed; for filtering list results silently.
    pub fn is_allowed(
        &self,
        action: &str,
        resource: &str,
        tags: &BTreeMap<String, String>,
    ) -> bool {
        self.decide(action, resource, tags) == Decision::Allow
    }
}

/// The `AuthContext` that `VerifyLayer` put into a request.
///
/// Absent means the route was mounted as public by mistake, so the call is refused as
/// unauthenticated rather than served without a principal.
pub fn auth_context<T>(request: &tonic::Request<T>) -> Result<AuthContext, tonic::Status> {
    request
        .extensions()
        .get::<AuthContext>()
        .cloned()
        .ok_or_else(|| {
            tracing::warn!("no auth context on a non-public route; is VerifyLayer mounted?");
            bosun_core::ApiError::Unauthenticated("missing authentication context".to_owned())
                .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_round_trip_through_their_string_form() {
        for s in [
            "user/alice",
            "service/commands",
            "node/mi-0123abcd",
            "user/a.b@c.d",
        ] {
            let principal = Principal::parse(s).expect("valid principal");
            assert_eq!(principal.to_string(), s);
        }
        assert_eq!(
            Principal::parse("node/mi-1").expect("valid"),
            Principal::Node("mi-1".into())
        );
        assert_eq!(
            Principal::parse("user/alice").expect("valid").name(),
            "alice"
        );
    }

    #[test]
    fn malformed_principals_are_rejected() {
        for s in [
            "alice",
            "user/",
            "/alice",
            "robot/x",
            "user/a/b",
            "user/a b",
            "User/alice",
        ] {
            assert!(
                matches!(Principal::parse(s), Err(AuthError::InvalidPrincipal(_))),
                "{s} should be rejected"
            );
        }
    }

    #[test]
    fn debug_does_not_print_the_token() {
        let context = AuthContext {
            principal: Principal::User("alice".into()),
            session_id: "s".into(),
            roles: vec![],
            policies: Arc::new(vec![]),
            expires_at: Utc::now(),
            token: Arc::from("eyJsecret.token.value"),
        };
        assert!(!format!("{context:?}").contains("eyJsecret"));
    }
}
