//! Password hashing with argon2id, off the async threads.
//!
//! A login for an unknown e-mail verifies against a dummy hash made with the same cost, so a
//! wrong e-mail and a wrong password take the same time and get the same answer.

use std::sync::Arc;

use tokio::sync::Semaphore;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use crate::{config::Argon2Cost, http::error::ApiError};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (hashing cost is per byte; a megabyte "password" is an attack).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Hashes and verifies passwords with one configured cost.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    dummy_hash: Arc<String>,
    /// Bounds concurrent hashing: each one holds `memory_kib` of memory and a blocking
    /// thread, so a flood of logins queues here instead of exhausting memory.
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    /// Builds the hasher and its dummy hash.
    pub fn new(cost: Argon2Cost) -> Result<Self, String> {
        let params =
            Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None).map_err(|e| e.to_string())?;
        let dummy = hash_with(&params, "dummy password for unknown accounts").map_err(|e| e.to_string())?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Self { params, dummy_hash: Arc::new(dummy), permits: Arc::new(Semaphore::new(cores * 2)) })
    }

    /// Hashes a password (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        // The permit moves into the blocking task: it is held while argon2 runs, even if the
        // request that asked is dropped meanwhile.
        let permit = self.permits.clone().acquire_owned().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_with(&params, &password)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))
    }

    /// Verifies `password` against `hash`, or against the dummy hash when there is no account.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        // No stored password is longer than the maximum: refuse after the same work.
        let too_long = password.chars().count() > MAX_PASSWORD_CHARS;
        let password = if too_long { String::from("x") } else { password };
        let permit = self.permits.clone().acquire_owned().await.map_err(ApiError::internal)?;
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(ok && exists && !too_long)
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    Ok(argon.hash_password(password.as_bytes())?.to_string())
}

/// What is wrong with a new password, if anything.
pub fn password_problem(password: &str) -> Option<String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"))
    } else if n > MAX_PASSWORD_CHARS {
        Some(format!("must be at most {MAX_PASSWORD_CHARS} characters"))
    } else {
        None
    }
}
