//! `auth.token_validation_url`: a token is valid when the endpoint says so. The hub sends
//! `GET <url>` with `Authorization: Bearer <token>`; a 2xx answer carries the claims as JSON
//! (`sub`, `exp`, `roles`, `clusters`, `namespaces`), 401 or 403 means invalid. Answers are
//! cached for `auth.validation_cache_seconds` (never past the token's `exp`), keyed by the
//! token's SHA-256, so a reconnecting dashboard does not ask again. A validator that is down,
//! slow (`auth.validation_timeout_seconds`) or answers anything else fails closed
//! ([`AuthError::Unavailable`]), and that answer is not cached.

use super::{AuthError, AuthFuture, Authenticator, Claims, Principal};
use crate::config::AuthConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most answers cached at once; past it, expired ones are dropped, then all.
const CACHE_ENTRIES: usize = 10_000;
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
    /// Answers by the token's SHA-256.
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl Remote {
    /// A validator at `url` with `cfg`'s cache and timeout.
    pub(super) fn new(url: &str, cfg: &AuthConfig) -> Result<Self, String> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| format!("realtime_streaming.auth.token_validation_url: {e}"))?;
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
            ttl: Duration::from_secs_f64(cfg.validation_cache_seconds),
            timeout: Duration::from_secs_f64(cfg.validation_timeout_seconds),
            cache: Mutex::new(HashMap::new()),
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
            tracing::warn!("token validation endpoint down or slow: refusing the token");
            return Err(AuthError::Unavailable);
        };
        if status == 401 || status == 403 {
            return Err(AuthError::Invalid);
        }
        if !status.is_success() {
            tracing::warn!(%status, "token validation endpoint failed: refusing the token");
            return Err(AuthError::Unavailable);
        }
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| AuthError::Unavailable)?;
        claims.into_principal()
    }

    /// The cached answer for `key`, if still fresh (and the token not expired meanwhile).
    fn cached(&self, key: &[u8; 32]) -> Option<Result<Principal, AuthError>> {
        let cache = self.cache.lock();
        let (until, answer) = cache.get(key)?;
        let now = Instant::now();
        if *until <= now {
            return None;
        }
        Some(match answer {
            Ok(p) if p.expires_at.is_some_and(|e| e <= now) => Err(AuthError::Expired),
            other => other.clone(),
        })
    }

    /// Keeps an answer (not an unavailable one) for the cache's time, or until `exp`.
    fn remember(&self, key: [u8; 32], answer: &Result<Principal, AuthError>) {
        if matches!(answer, Err(AuthError::Unavailable)) || self.ttl.is_zero() {
            return;
        }
        let mut until = Instant::now() + self.ttl;
        if let Ok(Principal {
            expires_at: Some(e),
            ..
        }) = answer
        {
            until = until.min(*e);
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (u, _)| *u > now);
            if cache.len() >= CACHE_ENTRIES {
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
            let answer = self.ask(token).await;
            self.remember(key, &answer);
            answer
        })
    }
}
