//! Provider tokens at rest: AES-256-GCM under `CALENDAR_TOKEN_KEY`, a fresh random 96-bit
//! nonce per sealing, and the row's identity as associated data, so a sealed token copied to
//! another user's or provider's row does not open there. Stored as `v1:` and base64 of nonce
//! then ciphertext and tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::STANDARD};

/// Seals and opens tokens.
pub struct TokenCipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher(..)")
    }
}

/// Why a token could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("CALENDAR_TOKEN_KEY is not 32 bytes of base64")]
    BadKey,
    #[error("no random bytes for a nonce")]
    Random,
    #[error("a stored token does not open with this key (wrong key, or tampered)")]
    Open,
}

impl TokenCipher {
    /// From the configured key (32 bytes, base64).
    pub fn new(key_b64: &str) -> Result<Self, CipherError> {
        let bytes = STANDARD.decode(key_b64.trim()).map_err(|_| CipherError::BadKey)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| CipherError::BadKey)?;
        Ok(Self { key: LessSafeKey::new(key) })
    }

    /// Seals `plain`, bound to `context` (the row's identity).
    pub fn seal(&self, plain: &str, context: &str) -> Result<String, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CipherError::Random)?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| CipherError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("v1:{}", STANDARD.encode(out)))
    }

    /// Opens what [`seal`](Self::seal) made with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, CipherError> {
        let raw = sealed.strip_prefix("v1:").ok_or(CipherError::Open)?;
        let bytes = STANDARD.decode(raw).map_err(|_| CipherError::Open)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(CipherError::Open);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Open)?;
        let mut rest = rest.to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut rest).map_err(|_| CipherError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CipherError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_only_with_its_key_and_context() {
        let key = STANDARD.encode([7u8; 32]);
        let c = TokenCipher::new(&key).unwrap();
        let sealed = c.seal("ya29.secret-access-token", "user-1:google:access").unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("secret"));
        assert_ne!(sealed, c.seal("ya29.secret-access-token", "user-1:google:access").unwrap(), "fresh nonce");
        assert_eq!(c.open(&sealed, "user-1:google:access").unwrap(), "ya29.secret-access-token");
        assert!(c.open(&sealed, "user-2:google:access").is_err(), "bound to its row");
        let other = TokenCipher::new(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open(&sealed, "user-1:google:access").is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(c.open(&tampered, "user-1:google:access").is_err());
        assert!(TokenCipher::new("c2hvcnQ=").is_err());
    }
}
