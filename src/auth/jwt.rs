//! JSON Web Tokens checked locally with `jsonwebtoken` (RustCrypto backend).
//!
//! One key source: an HS256 secret (`auth.jwt_secret`), a PEM public key
//! (`auth.jwt_public_key_file`: RSA for RS256, EC P-256 for ES256), or a JWKS file
//! (`auth.jwks_file`: RSA and EC P-256 keys, picked by the token's `kid`, the file re-read when
//! its modification time changes, looked at most once a second). A token passes only when its
//! header's `alg` is the one algorithm its key is for (so `alg: none`, or HS256 signed with a
//! public key, never passes), its header names no `crit` extension (RFC 7515 4.1.11: the hub
//! understands none), its signature verifies, `exp` is present and not past, and `nbf`, `iss`
//! and `aud` hold where configured. `auth.jwt_leeway_seconds` applies to `exp` and `nbf` alike,
//! and a token admitted within the leeway lives until `exp` plus the leeway.
//!
//! Owns the verification keys, loaded once at start-up and never changed after.

use super::{AuthError, AuthFuture, Authenticator, Claims, SetupError};
use crate::config::AuthConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
struct Key {
    /// The JWKS `kid`, if any.
    kid: Option<String>,
    /// The key.
    key: DecodingKey,
    /// Its algorithm.
    alg: Algorithm,
}

/// Where keys come from.
enum KeySource {
    /// A secret or a PEM key, read once at start.
    Fixed(Key),
    /// A JWKS file, re-read when it changes.
    Jwks(JwksFile),
}

/// A JWKS file and the keys last read from it.
struct JwksFile {
    /// Its path.
    path: String,
    /// (when last looked at, its modification time then, its keys).
    state: Mutex<(Instant, Option<SystemTime>, Arc<Vec<Key>>)>,
}

/// Verifies JWTs.
pub(super) struct JwtVerifier {
    /// The keys.
    source: KeySource,
    /// The claim checks, without the algorithm (set per key).
    validation: Validation,
}

impl JwtVerifier {
    /// The verifier `cfg` asks for, if any; `Err` names the key that cannot be used.
    pub(super) fn from_config(cfg: &AuthConfig) -> Result<Option<Self>, SetupError> {
        let source = if let Some(secret) = cfg.jwt_secret.clone() {
            KeySource::Fixed(Key {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                alg: Algorithm::HS256,
            })
        } else if let Some(path) = cfg.jwt_public_key_file.clone() {
            KeySource::Fixed(pem_key(&path)?)
        } else if let Some(path) = cfg.jwks_file.clone() {
            let (modified, keys) = read_jwks(&path)?;
            KeySource::Jwks(JwksFile {
                path,
                state: Mutex::new((Instant::now(), modified, Arc::new(keys))),
            })
        } else {
            return Ok(None);
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = cfg.jwt_leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        if let Some(iss) = cfg.jwt_issuer.clone() {
            validation.set_issuer(&[iss]);
            validation.set_required_spec_claims(&["exp", "iss"]);
        }
        if let Some(aud) = cfg.jwt_audience.clone() {
            validation.set_audience(&[aud]);
            validation.validate_aud = true;
            let mut required = validation.required_spec_claims.clone();
            required.insert("aud".into());
            validation.required_spec_claims = required;
        }
        Ok(Some(Self { source, validation }))
    }

    /// The key for a token with header `kid`.
    fn key_for(&self, kid: Option<&str>) -> Option<Key> {
        match &self.source {
            KeySource::Fixed(k) => Some(k.clone()),
            KeySource::Jwks(file) => {
                let keys = file.keys();
                let mut candidates = keys.iter().filter(|k| match kid {
                    Some(kid) => k.kid.as_deref() == Some(kid),
                    None => true,
                });
                let first = candidates.next()?.clone();
                // Without a `kid`, only a file of one key is unambiguous.
                (kid.is_some() || candidates.next().is_none()).then_some(first)
            }
        }
    }

    /// Checks one token.
    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        // RFC 7515 4.1.11: an extension the token says must be understood, and the hub
        // understands none.
        if header.crit.is_some() {
            return Err(AuthError::Invalid);
        }
        let key = self
            .key_for(header.kid.as_deref())
            .ok_or(AuthError::Invalid)?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.alg];
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if *e.kind() == ErrorKind::ExpiredSignature => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid),
        }
    }
}

impl Authenticator for JwtVerifier {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let leeway = self.validation.leeway;
        let result = self
            .verify(token)
            .and_then(|claims| claims.into_principal(leeway));
        Box::pin(std::future::ready(result))
    }
}

impl JwksFile {
    /// The keys, re-read first when the file changed (looked at most once a second). A file
    /// that turns unreadable or invalid keeps the keys last read, with a warning.
    fn keys(&self) -> Arc<Vec<Key>> {
        let mut state = self.state.lock();
        if state.0.elapsed() < Duration::from_secs(1) {
            return state.2.clone();
        }
        state.0 = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some() && modified != state.1 {
            match read_jwks(&self.path) {
                Ok((m, keys)) => {
                    tracing::info!(path = %self.path, keys = keys.len(), "JWKS file re-read");
                    *state = (Instant::now(), m, Arc::new(keys));
                }
                Err(e) => tracing::warn!(error = %e, "keeping the JWKS keys read before"),
            }
        }
        state.2.clone()
    }
}

/// Reads a PEM public key: RSA (RS256) or EC P-256 (ES256).
fn pem_key(path: &str) -> Result<Key, SetupError> {
    const KEY: &str = ".jwt_public_key_file";
    let pem = std::fs::read(path).map_err(|e| SetupError::new(KEY, format!("{path:?}: {e}")))?;
    let (key, alg) = match DecodingKey::from_rsa_pem(&pem) {
        Ok(k) => (k, Algorithm::RS256),
        Err(_) => match DecodingKey::from_ec_pem(&pem) {
            Ok(k) => (k, Algorithm::ES256),
            Err(e) => {
                return Err(SetupError::new(
                    KEY,
                    format!("{path:?} is neither an RSA nor an EC public key in PEM ({e})"),
                ))
            }
        },
    };
    Ok(Key {
        kid: None,
        key,
        alg,
    })
}

/// Reads a JWKS file: its modification time and its RSA and EC P-256 keys.
fn read_jwks(path: &str) -> Result<(Option<SystemTime>, Vec<Key>), SetupError> {
    let bad = |why: String| SetupError::new(".jwks_file", format!("{path:?}: {why}"));
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue, // only RS256 and ES256 keys are used
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            key,
            alg,
        });
    }
    if keys.is_empty() {
        return Err(bad("no RSA or EC P-256 key".into()));
    }
    Ok((modified, keys))
}
