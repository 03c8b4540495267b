//! Password hashing with Argon2id, off the async runtime (a hash takes tens of milliseconds).

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use bosun_core::ApiError;
use secrecy::{ExposeSecret, SecretString};

pub const MIN_PASSWORD_LENGTH: usize = 12;
pub const MAX_PASSWORD_LENGTH: usize = 256;

/// Checks a new password against the rules, naming `field` in the error.
pub fn validate(field: &str, password: &SecretString) -> Result<(), ApiError> {
    let length = password.expose_secret().chars().count();
    if !(MIN_PASSWORD_LENGTH..=MAX_PASSWORD_LENGTH).contains(&length) {
        return Err(ApiError::invalid(
            field,
            format!("must be {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters"),
        ));
    }
    Ok(())
}

pub async fn hash(password: SecretString) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|error| ApiError::internal(format!("hash password: {error}")))
    })
    .await
    .map_err(ApiError::internal)?
}

/// True when `password` matches `hash`. Without a hash (unknown user) it still spends the
/// time of one verification, so response times do not reveal which usernames exist.
pub async fn verify(password: SecretString, hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let argon2 = Argon2::default();
        match hash {
            Some(hash) => Ok(argon2
                .verify_password(password.expose_secret().as_bytes(), hash.as_str())
                .is_ok()),
            None => {
                let _ = argon2.hash_password(password.expose_secret().as_bytes());
                Ok(false)
            }
        }
    })
    .await
    .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() -> Result<(), ApiError> {
        let hashed = hash(SecretString::from("correct horse battery")).await?;
        assert!(hashed.starts_with("$argon2id$"));
        assert!(
            verify(
                SecretString::from("correct horse battery"),
                Some(hashed.clone())
            )
            .await?
        );
        assert!(!verify(SecretString::from("wrong horse battery"), Some(hashed)).await?);
        assert!(!verify(SecretString::from("anything at all"), None).await?);
        Ok(())
    }

    #[test]
    fn short_passwords_are_rejected_naming_the_field() {
        let error = validate("password", &SecretString::from("short")).err();
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some("password: must be 12-256 characters")
        );
    }
}
