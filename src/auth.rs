//! Authentication: the seam every token check goes through.
//!
//! [`Authenticator`] turns a bearer token into a [`Principal`]. Two implementations ship now:
//! [`AllowAll`] (any non-empty token, every role; the default) and [`StaticTokens`] (a fixed list
//! from `auth.static_tokens`, with roles and expiry, for development and tests). JWT validation
//! plugs in behind the same trait later.

use crate::config::AuthConfig;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// The role that may list clients.
pub const ROLE_ADMIN: &str = "admin";
/// The role that may broadcast events.
pub const ROLE_INTERNAL: &str = "internal";

/// Who a token belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// When it stops being valid; `None` never.
    pub expires_at: Option<Instant>,
}

impl Principal {
    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown, malformed or empty token.
    #[error("invalid token")]
    Invalid,
    /// A known token past its expiry.
    #[error("token expired")]
    Expired,
}

/// A boxed future, so the trait stays object safe.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, AuthError>> + Send + 'a>>;

/// Validates bearer tokens.
pub trait Authenticator: Send + Sync {
    /// Checks one token.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// Accepts any non-empty token, with every role.
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let result = if token.trim().is_empty() {
            Err(AuthError::Invalid)
        } else {
            Ok(Principal {
                subject: "anonymous".into(),
                roles: vec![ROLE_ADMIN.into(), ROLE_INTERNAL.into()],
                expires_at: None,
            })
        };
        Box::pin(std::future::ready(result))
    }
}

/// A fixed set of tokens from configuration.
pub struct StaticTokens {
    /// Token to principal.
    tokens: HashMap<String, Principal>,
}

impl StaticTokens {
    /// Builds the set; expiries count from now.
    pub fn new(cfg: &AuthConfig) -> Self {
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
                };
                (t.token.clone(), p)
            })
            .collect();
        Self { tokens }
    }
}

impl Authenticator for StaticTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let result = match self.tokens.get(token) {
            None => Err(AuthError::Invalid),
            Some(p) if p.expires_at.is_some_and(|e| e <= Instant::now()) => Err(AuthError::Expired),
            Some(p) => Ok(p.clone()),
        };
        Box::pin(std::future::ready(result))
    }
}

/// The authenticator the configuration asks for.
pub fn from_config(cfg: &AuthConfig) -> Box<dyn Authenticator> {
    if cfg.static_tokens.is_empty() {
        Box::new(AllowAll)
    } else {
        Box::new(StaticTokens::new(cfg))
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
