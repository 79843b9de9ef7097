//! Access tokens (HS256 JWTs) and refresh tokens (random, stored only as SHA-256).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    http::error::{ApiError, ErrorCode},
    ids::{FirmId, SessionId, UserId},
    users::model::Role,
};

/// The only token `type` this server accepts as an access token.
pub const ACCESS: &str = "access";
/// Clock skew tolerated between instances when checking `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub firm: Uuid,
    pub role: Role,
    pub sid: Uuid,
    #[serde(rename = "type")]
    pub typ: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: Uuid,
}

/// Signs and verifies access tokens with one HS256 key.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("access_ttl", &self.access_ttl).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the configured secret.
    pub fn new(secret: &SecretString, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        // The algorithm is pinned: a token whose header says anything but HS256 (`none`, RS256
        // with our secret as a "public key") is rejected before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// A fresh access token for a session.
    pub fn issue(&self, user: UserId, firm: FirmId, role: Role, session: SessionId) -> Result<String, ApiError> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.0,
            firm: firm.0,
            role,
            sid: session.0,
            typ: ACCESS.to_owned(),
            exp: iat + self.access_ttl.as_secs(),
            iat,
            jti: Uuid::new_v4(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Checks signature, algorithm, expiry and type; the session is checked by the caller.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::new(ErrorCode::AuthTokenExpired, "the access token has expired")
                }
                _ => ApiError::new(ErrorCode::AuthTokenInvalid, "the access token is not valid"),
            })?;
        if data.claims.typ != ACCESS {
            return Err(ApiError::new(ErrorCode::AuthTokenInvalid, "this is not an access token"));
        }
        Ok(data.claims)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `n` random bytes, base64url without padding.
pub fn random_urlsafe(n: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new refresh token: `lfr_` and 32 random bytes, base64url.
pub fn new_refresh_token() -> Result<String, ApiError> {
    Ok(format!("lfr_{}", random_urlsafe(32)?))
}

/// Hex SHA-256 of `data`: what is stored for a secret that is only ever compared (refresh
/// tokens, API keys).
pub fn sha256_hex(data: &[u8]) -> String {
    crate::audit::chain::hex(&Sha256::digest(data))
}

/// What is stored for a refresh token: its SHA-256, hex.
pub fn hash_refresh_token(token: &str) -> String {
    sha256_hex(token.as_bytes())
}
