//! Tokens for the clients of a run: with `target.auth: hs256` or `es256` the harness makes a key,
//! configures the hub it starts to verify JWTs with it, and signs one token per client (distinct
//! subjects, valid for an hour), before the run's clock starts. Without, every client sends the
//! token `loadtest` (any token passes while the hub's auth is off).

use crate::scenario::AuthMode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::path::Path;

/// Signs the clients' tokens.
pub enum Minter {
    /// Auth off: a fixed token.
    Off,
    /// JWTs signed with this key and algorithm.
    Jwt(EncodingKey, Algorithm),
}

impl Minter {
    /// A key for `mode` and the hub's `auth` settings to verify it (files go in `dir`).
    pub fn new(mode: AuthMode, dir: &Path) -> anyhow::Result<(Self, Option<serde_norway::Value>)> {
        let mut auth = serde_norway::Mapping::new();
        auth.insert("enabled".into(), true.into());
        let minter = match mode {
            AuthMode::None => return Ok((Minter::Off, None)),
            AuthMode::Hs256 => {
                let secret: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
                auth.insert("jwt_secret".into(), secret.clone().into());
                Minter::Jwt(
                    EncodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            AuthMode::Es256 => {
                use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
                let private = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
                let public = private.verifying_key().to_public_key_pem(LineEnding::LF)?;
                let path = dir.join("jwt.pem");
                std::fs::write(&path, public)?;
                let path = path.to_string_lossy().to_string();
                auth.insert("jwt_public_key_file".into(), path.into());
                let pem = private.to_pkcs8_pem(LineEnding::LF)?;
                Minter::Jwt(EncodingKey::from_ec_pem(pem.as_bytes())?, Algorithm::ES256)
            }
        };
        Ok((minter, Some(serde_norway::Value::Mapping(auth))))
    }

    /// The token of client `i`.
    pub fn token(&self, i: usize) -> anyhow::Result<String> {
        self.sign(&format!("client-{i}"), &[])
            .map(|t| t.unwrap_or_else(|| "loadtest".into()))
    }

    /// The harness's own token, for publishing and reading the hub's REST API (roles
    /// `internal` and `admin`); `None` while auth is off.
    pub fn operator(&self) -> anyhow::Result<Option<String>> {
        self.sign("loadtest-operator", &["internal", "admin"])
    }

    /// A JWT for `sub` with `roles`, valid for an hour; `None` while auth is off.
    fn sign(&self, sub: &str, roles: &[&str]) -> anyhow::Result<Option<String>> {
        let Minter::Jwt(key, alg) = self else {
            return Ok(None);
        };
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        let claims = serde_json::json!({"sub": sub, "exp": exp, "roles": roles});
        Ok(Some(encode(&Header::new(*alg), &claims, key)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_with_the_configured_key() {
        let dir = tempfile::tempdir().unwrap();
        let (m, auth) = Minter::new(AuthMode::Es256, dir.path()).unwrap();
        let auth = auth.unwrap();
        let pem = std::fs::read(auth["jwt_public_key_file"].as_str().unwrap()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_pem(&pem).unwrap();
        let t = m.token(7).unwrap();
        let v = jsonwebtoken::Validation::new(Algorithm::ES256);
        let data = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "client-7");
        let (m, auth) = Minter::new(AuthMode::Hs256, dir.path()).unwrap();
        let secret = auth.unwrap()["jwt_secret"].as_str().unwrap().to_string();
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        let t = m.token(1).unwrap();
        let v = jsonwebtoken::Validation::new(Algorithm::HS256);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v).is_ok());
        assert_eq!(Minter::new(AuthMode::None, dir.path()).unwrap().1, None);
    }
}
