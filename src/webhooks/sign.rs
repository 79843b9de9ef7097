//! Webhook secrets: made, sealed for storage, and used to sign per Standard Webhooks.
//!
//! - A secret is `whsec_` + base64 of 32 random bytes; the signing key is those bytes.
//! - It is stored sealed (AES-256-GCM, a random 96-bit nonce per sealing): it is needed to
//!   sign, so it cannot be hashed. The key is derived (SHA-256 over a fixed label and the
//!   secret) from `WEBHOOK_SECRET_KEY`, or from `JWT_SECRET` when that is unset. Secrets sealed
//!   under an older key (`WEBHOOK_SECRET_KEY_PREVIOUS`, and `JWT_SECRET` once
//!   `WEBHOOK_SECRET_KEY` is set) still open, and the delivery job seals them again under the
//!   current key ([`Sealer::open_aged`]). With only `JWT_SECRET`, changing it makes stored
//!   secrets unreadable: deliveries fail with "cannot unseal" until each secret is rotated.
//! - `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`; during a
//!   rotation's grace period the header carries the new and the old signature, space-separated.

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hmac,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

/// Seals and opens stored secrets.
pub struct Sealer {
    /// The current key first, then older ones that still open.
    keys: Vec<LessSafeKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// The sealer keyed from the server's secret.
    pub fn new(server_secret: &str) -> Self {
        Self { keys: vec![derive(server_secret)] }
    }

    /// Sealing under `current`; opening under it or any of `older` (keys being retired).
    pub fn with_older(current: &str, older: &[&str]) -> Self {
        let mut keys = vec![derive(current)];
        keys.extend(older.iter().filter(|o| **o != current).map(|o| derive(o)));
        Self { keys }
    }

    /// The sealer of a configuration: `WEBHOOK_SECRET_KEY` (then `WEBHOOK_SECRET_KEY_PREVIOUS`
    /// and `JWT_SECRET` still open), or `JWT_SECRET` alone; None with neither.
    pub fn from_config(config: &crate::config::Config) -> Option<Self> {
        use secrecy::ExposeSecret;
        let jwt = config.auth.jwt_secret.as_ref().map(|s| s.expose_secret().to_owned());
        let previous = config.webhook_secret_key_previous.as_ref().map(|s| s.expose_secret().to_owned());
        match config.webhook_secret_key.as_ref().map(|s| s.expose_secret().to_owned()) {
            Some(current) => {
                let older: Vec<&str> = previous.iter().chain(jwt.iter()).map(String::as_str).collect();
                Some(Self::with_older(&current, &older))
            }
            None => {
                let jwt = jwt?;
                let older: Vec<&str> = previous.iter().map(String::as_str).collect();
                Some(Self::with_older(&jwt, &older))
            }
        }
    }

    /// `base64(nonce || ciphertext || tag)`.
    pub fn seal(&self, plain: &str) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        let mut data = plain.as_bytes().to_vec();
        // Sealing cannot fail for inputs this small.
        let _ = self.keys[0].seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(STANDARD.encode(out))
    }

    /// The secret, or None when it was not sealed with one of these keys (or was altered).
    pub fn open(&self, sealed: &str) -> Option<String> {
        self.open_aged(sealed).map(|(s, _)| s)
    }

    /// The secret, and whether it was sealed under an older key (so it should be sealed again).
    pub fn open_aged(&self, sealed: &str) -> Option<(String, bool)> {
        let raw = STANDARD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        self.keys.iter().enumerate().find_map(|(i, key)| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut data = rest.to_vec();
            let plain = key.open_in_place(nonce, Aad::empty(), &mut data).ok()?;
            String::from_utf8(plain.to_vec()).ok().map(|s| (s, i > 0))
        })
    }
}

fn derive(secret: &str) -> LessSafeKey {
    let mut h = Sha256::new();
    h.update(b"lexiflow webhook secrets v1\0");
    h.update(secret.as_bytes());
    let key = UnboundKey::new(&AES_256_GCM, &h.finalize()).map(LessSafeKey::new);
    // A 32-byte key always suits AES-256-GCM.
    #[allow(clippy::expect_used)]
    key.expect("a 32-byte AES-256-GCM key")
}

/// A new secret, `whsec_<base64 of 32 random bytes>`.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(format!("whsec_{}", STANDARD.encode(b)))
}

/// `v1,<signature>` of `id.timestamp.body` with `secret` (`whsec_…`), or None when the secret
/// is malformed.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key_bytes = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key() {
        let a = Sealer::new("server secret a");
        let sealed = a.seal("whsec_abc").unwrap();
        assert_ne!(sealed, a.seal("whsec_abc").unwrap(), "a fresh nonce each time");
        assert_eq!(a.open(&sealed).as_deref(), Some("whsec_abc"));
        assert_eq!(Sealer::new("server secret b").open(&sealed), None);
        let mut tampered = STANDARD.decode(&sealed).unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(a.open(&STANDARD.encode(tampered)), None);
        // A new key: the old seal still opens, marked aged; new seals are the new key's.
        let b = Sealer::with_older("server secret b", &["server secret a"]);
        assert_eq!(b.open_aged(&sealed), Some(("whsec_abc".to_owned(), true)));
        let resealed = b.seal("whsec_abc").unwrap();
        assert_eq!(b.open_aged(&resealed), Some(("whsec_abc".to_owned(), false)));
        assert_eq!(a.open(&resealed), None, "sealed under the new key only");
        assert_eq!(Sealer::new("server secret b").open(&resealed).as_deref(), Some("whsec_abc"));
    }

    #[test]
    fn the_configured_keys_seal_with_the_current_one_and_open_with_every_one() {
        let config = |pairs: &[(&str, &str)]| {
            let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let mut c = crate::config::Config::from_sources(crate::config::FileConfig::default(), &env).unwrap();
            c.auth.jwt_secret = Some("the jwt secret, at least thirty-two bytes".to_owned().into());
            c
        };
        let under = |k: &str, plain: &str| Sealer::new(k).seal(plain).unwrap();
        let jwt = "the jwt secret, at least thirty-two bytes";
        // Default: JWT_SECRET seals.
        let s = Sealer::from_config(&config(&[])).unwrap();
        assert_eq!(s.open_aged(&under(jwt, "a")), Some(("a".into(), false)));
        // Phase 1 of a rotation: the new key only opens.
        let s = Sealer::from_config(&config(&[("WEBHOOK_SECRET_KEY_PREVIOUS", "new key")])).unwrap();
        assert_eq!(s.open_aged(&under("new key", "b")), Some(("b".into(), true)));
        assert_eq!(
            Sealer::new(jwt).open(&s.seal("c").unwrap()).as_deref(),
            Some("c"),
            "still sealing under JWT_SECRET"
        );
        // Phase 2: the new key seals; the old key and JWT_SECRET open, as aged.
        let s = Sealer::from_config(&config(&[
            ("WEBHOOK_SECRET_KEY", "new key"),
            ("WEBHOOK_SECRET_KEY_PREVIOUS", "old key"),
        ]))
        .unwrap();
        assert_eq!(s.open_aged(&under("old key", "d")), Some(("d".into(), true)));
        assert_eq!(s.open_aged(&under(jwt, "e")), Some(("e".into(), true)));
        assert_eq!(Sealer::new("new key").open(&s.seal("f").unwrap()).as_deref(), Some("f"));
        assert_eq!(s.open(&under("another key", "g")), None);
    }

    #[test]
    fn the_signature_follows_standard_webhooks() {
        // The example of the Standard Webhooks specification (`svix` test vectors).
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
