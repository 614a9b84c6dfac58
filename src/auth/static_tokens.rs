//! `auth.static_tokens`: a fixed list of tokens, for development and tests. Each presented token
//! is compared with every configured one in constant time, so timing tells nothing of how much
//! of a token matched.
//!
//! Owns the configured token list, fixed at start-up.

use super::{AuthError, AuthFuture, Authenticator, Grant, Principal};
use crate::config::AuthConfig;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A fixed set of tokens from configuration.
pub(super) struct StaticTokens {
    /// Each token and whom it stands for.
    tokens: Vec<(Vec<u8>, Principal)>,
}

impl StaticTokens {
    /// Builds the set; expiries count from now.
    pub(super) fn new(cfg: &AuthConfig) -> Self {
        let now = Instant::now();
        let tokens = cfg
            .static_tokens
            .iter()
            .map(|t| {
                let p = Principal {
                    subject: t.subject.clone(),
                    roles: t.roles.clone(),
                    expires_at: t
                        .expires_in_seconds
                        .map(|s| now + Duration::from_secs_f64(s.max(0.0))),
                    grant: Grant {
                        clusters: t.clusters.clone(),
                        namespaces: t.namespaces.clone(),
                    },
                };
                (t.token.as_bytes().to_vec(), p)
            })
            .collect();
        Self { tokens }
    }
}

impl Authenticator for StaticTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let presented = token.as_bytes();
        let mut found = None;
        for (t, p) in &self.tokens {
            // Every entry is compared, whatever matched before.
            if bool::from(t.as_slice().ct_eq(presented)) && !presented.is_empty() {
                found = Some(p);
            }
        }
        let result = match found {
            None => Err(AuthError::Invalid),
            Some(p) if p.expires_at.is_some_and(|e| e <= Instant::now()) => Err(AuthError::Expired),
            Some(p) => Ok(p.clone()),
        };
        Box::pin(std::future::ready(result))
    }
}
