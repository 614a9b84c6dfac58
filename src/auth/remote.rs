//! `auth.token_validation_url`: a token is valid when the endpoint says so. The hub sends
//! `GET <url>` with `Authorization: Bearer <token>`; a 2xx answer carries the claims as JSON
//! (`sub`, `exp`, `roles`, `clusters`, `namespaces`) and counts only with `"active": true`, or
//! with a `sub` and no `active` (see [`Claims::active`]); 401 or 403 means invalid. Answers are
//! cached for `auth.validation_cache_seconds` (never past the token's `exp`), keyed by the
//! token's SHA-256, so a reconnecting dashboard does not ask again. Refusals are cached apart,
//! for at most [`REFUSED_FOR`], so a flood of bad tokens never evicts a good one. At most
//! `auth.validation_max_concurrent` questions are asked at once. A validator that is down, slow
//! (`auth.validation_timeout_seconds`, the wait for a turn included) or answers anything else
//! fails closed ([`AuthError::Unavailable`]), and that answer is not cached.
//!
//! Owns its answer caches and the cap on validations in flight; only its own `authenticate`
//! changes them.

use super::{AuthError, AuthFuture, Authenticator, Claims, Principal, SetupError};
use crate::config::AuthConfig;
use crate::log_limit::LogLimit;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most good answers cached at once; past it, expired ones are dropped, and while it is still
/// full a new answer is not kept (the ones kept stay).
const CACHE_ENTRIES: usize = 10_000;
/// Most refusals cached at once; past it, expired ones are dropped, then all of them.
const REFUSED_ENTRIES: usize = 10_000;
/// Longest a refusal is reused.
const REFUSED_FOR: Duration = Duration::from_secs(5);
/// Largest answer read from the validator.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A cached answer: until when, and what.
type Cached = (Instant, Result<Principal, AuthError>);

/// The validation endpoint and its cache.
pub(super) struct Remote {
    /// The endpoint.
    url: hyper::Uri,
    /// A pooled HTTP/1 client.
    client: Client<HttpConnector, Empty<Bytes>>,
    /// How long an answer is reused.
    ttl: Duration,
    /// How long to wait for an answer.
    timeout: Duration,
    /// Good answers by the token's SHA-256.
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    /// Refusals by the token's SHA-256, apart from the good answers.
    refused: Mutex<HashMap<[u8; 32], Cached>>,
    /// Turns to ask the endpoint.
    turns: tokio::sync::Semaphore,
}

impl Remote {
    /// A validator at `url` with `cfg`'s cache and timeout.
    pub(super) fn new(url: &str, cfg: &AuthConfig) -> Result<Self, SetupError> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| SetupError::new(".token_validation_url", format!("{e}")))?;
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
            ttl: Duration::from_secs_f64(cfg.validation_cache_seconds),
            timeout: Duration::from_secs_f64(cfg.validation_timeout_seconds),
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            turns: tokio::sync::Semaphore::new(cfg.validation_max_concurrent),
        })
    }

    /// Asks the endpoint about `token`.
    async fn ask(&self, token: &str) -> Result<Principal, AuthError> {
        let req = hyper::Request::get(self.url.clone())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .map_err(|_| AuthError::Invalid)?;
        let answer = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((status, body))
        };
        let Ok(Some((status, body))) = tokio::time::timeout(self.timeout, answer).await else {
            static LOG: LogLimit = LogLimit::new();
            if let Some(held) = LOG.allow() {
                tracing::warn!(
                    held,
                    "token validation endpoint down or slow: refusing the token"
                );
            }
            return Err(AuthError::Unavailable);
        };
        if status == 401 || status == 403 {
            return Err(AuthError::Invalid);
        }
        if !status.is_success() {
            static LOG: LogLimit = LogLimit::new();
            if let Some(held) = LOG.allow() {
                tracing::warn!(%status, held, "token validation endpoint failed: refusing the token");
            }
            return Err(AuthError::Unavailable);
        }
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| AuthError::Unavailable)?;
        // A 2xx is not enough: RFC 7662 endpoints answer 200 `{"active": false}` for a bad token.
        if !claims.active() {
            return Err(AuthError::Invalid);
        }
        claims.into_principal(0)
    }

    /// The cached answer for `key`, if still fresh (and the token not expired meanwhile).
    fn cached(&self, key: &[u8; 32]) -> Option<Result<Principal, AuthError>> {
        let now = Instant::now();
        let fresh = |m: &HashMap<[u8; 32], Cached>| {
            m.get(key)
                .filter(|(until, _)| *until > now)
                .map(|(_, answer)| answer.clone())
        };
        if let Some(refusal) = fresh(&self.refused.lock()) {
            return Some(refusal);
        }
        Some(match fresh(&self.cache.lock())? {
            Ok(p) if p.expires_at.is_some_and(|e| e <= now) => Err(AuthError::Expired),
            other => other,
        })
    }

    /// Keeps an answer (not an unavailable one) for the cache's time, or until `exp`; a
    /// refusal for at most [`REFUSED_FOR`], apart from the good answers.
    fn remember(&self, key: [u8; 32], answer: &Result<Principal, AuthError>) {
        if matches!(answer, Err(AuthError::Unavailable)) || self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let (map, until, most, clear) = match answer {
            Ok(p) => {
                let until = (now + self.ttl).min(p.expires_at.unwrap_or(now + self.ttl));
                (&self.cache, until, CACHE_ENTRIES, false)
            }
            Err(_) => (
                &self.refused,
                now + self.ttl.min(REFUSED_FOR),
                REFUSED_ENTRIES,
                true,
            ),
        };
        let mut cache = map.lock();
        if cache.len() >= most {
            cache.retain(|_, (u, _)| *u > now);
            if cache.len() >= most {
                if !clear {
                    return;
                }
                cache.clear();
            }
        }
        cache.insert(key, (until, answer.clone()));
    }
}

impl Authenticator for Remote {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            if token.is_empty() {
                return Err(AuthError::Invalid);
            }
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(answer) = self.cached(&key) {
                return answer;
            }
            // Wait for a turn within the timeout; then the answer may be cached already.
            let Ok(Ok(_turn)) = tokio::time::timeout(self.timeout, self.turns.acquire()).await
            else {
                return Err(AuthError::Unavailable);
            };
            if let Some(answer) = self.cached(&key) {
                return answer;
            }
            let answer = self.ask(token).await;
            self.remember(key, &answer);
            answer
        })
    }
}
