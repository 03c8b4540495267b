//! Bosun authentication and authorization: EdDSA JWTs with rotating keys, principals,
//! IAM-style policy evaluation, and the tower layer services use to verify internal tokens.
//!
//! The gateway signs a client token at login and, per forwarded call, an internal token
//! (≤ 60 s) carrying the caller's resolved policies. Services verify the internal token with
//! `VerifyLayer` and authorize locally with `AuthContext::authorize`. No I/O here except the
//! key ring file.

pub mod error;
pub mod jwt;
pub mod layer;
pub mod policy;
pub mod principal;

pub use error::AuthError;
pub use jwt::{
    CLIENT_AUDIENCE, Claims, DEFAULT_ISSUER, INTERNAL_AUDIENCE, KeyRing, SigningKey, TokenIssuer,
    TokenVerifier, VerifyingKey,
};
pub use layer::{EdgeVerified, VerifyLayer, VerifyService};
pub use policy::{
    AccessRequest, Decision, PolicyDocument, PolicyError, evaluate, evaluate_explicit,
};
pub use principal::{AuthContext, Principal, auth_context};
