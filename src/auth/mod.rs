//! Authentication: the seam every token check goes through, and what a token grants.
//!
//! [`Authenticator`] turns a bearer token into a [`Principal`]: who it is, its roles, when it
//! expires, and its [`Grant`] (the clusters and namespaces it may ever receive). With
//! `auth.enabled` every configured source is tried in turn ([`Sources`]):
//!
//! - [`jwt`]: JSON Web Tokens checked locally: HS256 with `auth.jwt_secret`, RS256 or ES256 with
//!   a PEM public key (`auth.jwt_public_key_file`) or a JWKS file (`auth.jwks_file`, re-read
//!   when it changes);
//! - [`remote`]: `auth.token_validation_url`, asked over HTTP, answers cached briefly;
//! - [`static_tokens`]: a fixed list from `auth.static_tokens`, for development and tests,
//!   compared in constant time.
//!
//! No source accepts an unverified token: with auth enabled and none configured, start-up stops
//! (see `config.rs`). [`AllowAll`] serves only while auth is disabled.
//!
//! Owns the seam ([`Authenticator`]) and the grant rules; the hub holds the authenticator the
//! configuration chose, and sessions and REST call it.

mod claims;
mod jwt;
mod remote;
mod static_tokens;

pub use claims::Claims;

use crate::config::AuthConfig;
use crate::subscription::Subscription;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// The role that may list clients and read status and subscriptions.
pub const ROLE_ADMIN: &str = "admin";
/// The role that may broadcast events.
pub const ROLE_INTERNAL: &str = "internal";

/// Who a token belongs to, and what it may do and see.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// When it stops being valid; `None` never.
    pub expires_at: Option<Instant>,
    /// The clusters and namespaces it may receive.
    pub grant: Grant,
}

impl Principal {
    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a subscription is outside a token's grant (sent to the client as `FORBIDDEN`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotGranted {
    /// The grant names no cluster (or namespace) at all.
    #[error("the token grants no {0}")]
    Nothing(&'static str),
    /// The subscription names one the grant does not.
    #[error("the token does not grant {what} {value:?}")]
    Outside {
        /// `cluster` or `namespace`.
        what: &'static str,
        /// The one named.
        value: String,
    },
}

/// Why the configured authentication cannot be set up: the key under `realtime_streaming.auth`
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("realtime_streaming.auth{key}: {reason}")]
pub struct SetupError {
    /// `.jwt_public_key_file`, `.jwks_file`, `.token_validation_url`, or empty for the section.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl SetupError {
    /// `key` (with its leading dot) cannot be used, for `reason`.
    pub(crate) fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// The clusters and namespaces a token allows (`None`: no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The only clusters whose events the client may receive.
    pub clusters: Option<Vec<String>>,
    /// The only namespaces whose events the client may receive (an event that carries no
    /// namespace is cluster-wide and still reaches it).
    pub namespaces: Option<Vec<String>>,
}

impl Grant {
    /// Checks a subscription against the grant: one naming a cluster or namespace outside it is
    /// refused (the reason says which); a filter left empty is narrowed to the grant.
    pub fn admit(&self, mut sub: Subscription) -> Result<Subscription, NotGranted> {
        narrow(&mut sub.cluster_filter, self.clusters.as_deref(), "cluster")?;
        narrow(
            &mut sub.namespace_filter,
            self.namespaces.as_deref(),
            "namespace",
        )?;
        Ok(sub)
    }
}

/// Narrows one filter to `allowed`.
fn narrow(
    filter: &mut Vec<String>,
    allowed: Option<&[String]>,
    what: &'static str,
) -> Result<(), NotGranted> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    if filter.is_empty() {
        *filter = allowed.to_vec();
        if filter.is_empty() {
            return Err(NotGranted::Nothing(what));
        }
        return Ok(());
    }
    match filter.iter().find(|f| !allowed.contains(f)) {
        Some(f) => Err(NotGranted::Outside {
            what,
            value: f.clone(),
        }),
        None => Ok(()),
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown, malformed, forged or empty token.
    #[error("invalid token")]
    Invalid,
    /// A token past its expiry.
    #[error("token expired")]
    Expired,
    /// The token could not be checked (the validation endpoint is down or slow): refused.
    #[error("token validation unavailable")]
    Unavailable,
}

/// A boxed future, so the trait stays object safe.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, AuthError>> + Send + 'a>>;

/// Validates bearer tokens.
pub trait Authenticator: Send + Sync {
    /// Checks one token.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// Accepts any non-empty token, with every role and no limit: only while auth is disabled, where
/// no check asks it anything that matters.
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
                grant: Grant::default(),
            })
        };
        Box::pin(std::future::ready(result))
    }
}

/// Every configured source, tried in turn: the first that accepts the token wins; otherwise the
/// most telling refusal (expired, then unavailable, then invalid) is returned.
pub struct Sources(Vec<Box<dyn Authenticator>>);

impl Authenticator for Sources {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let mut worst = AuthError::Invalid;
            for source in &self.0 {
                match source.authenticate(token).await {
                    Ok(p) => return Ok(p),
                    Err(AuthError::Expired) => worst = AuthError::Expired,
                    Err(AuthError::Unavailable) if worst == AuthError::Invalid => {
                        worst = AuthError::Unavailable
                    }
                    Err(_) => {}
                }
            }
            Err(worst)
        })
    }
}

/// The authenticator the configuration asks for; `Err` names the key that cannot be used.
pub fn from_config(cfg: &AuthConfig) -> Result<Box<dyn Authenticator>, SetupError> {
    if !cfg.enabled {
        return Ok(Box::new(AllowAll));
    }
    if !cfg.has_token_source() {
        return Err(SetupError::new("", "enabled with no way to verify a token"));
    }
    let mut sources: Vec<Box<dyn Authenticator>> = Vec::new();
    if let Some(jwt) = jwt::JwtVerifier::from_config(cfg)? {
        sources.push(Box::new(jwt));
    }
    if let Some(url) = cfg.token_validation_url.as_deref() {
        sources.push(Box::new(remote::Remote::new(url, cfg)?));
    }
    if !cfg.static_tokens.is_empty() {
        sources.push(Box::new(static_tokens::StaticTokens::new(cfg)));
    }
    Ok(Box::new(Sources(sources)))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn sub(clusters: &[&str], namespaces: &[&str]) -> Subscription {
        Subscription {
            event_types: vec![EventType::ALERT_FIRED],
            cluster_filter: clusters.iter().map(|s| s.to_string()).collect(),
            namespace_filter: namespaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_grant_refuses_or_narrows() {
        let g = Grant {
            clusters: Some(vec!["c1".into(), "c2".into()]),
            namespaces: Some(vec!["prod".into()]),
        };
        let narrowed = g.admit(sub(&[], &[])).unwrap();
        assert_eq!(narrowed, sub(&["c1", "c2"], &["prod"]));
        assert_eq!(
            g.admit(sub(&["c2"], &["prod"])).unwrap(),
            sub(&["c2"], &["prod"])
        );
        assert!(g
            .admit(sub(&["c3"], &[]))
            .unwrap_err()
            .to_string()
            .contains("c3"));
        assert!(g
            .admit(sub(&["c1"], &["dev"]))
            .unwrap_err()
            .to_string()
            .contains("dev"));
        assert_eq!(
            Grant::default().admit(sub(&[], &[])).unwrap(),
            sub(&[], &[])
        );
        let none = Grant {
            clusters: Some(Vec::new()),
            namespaces: None,
        };
        assert!(none.admit(sub(&[], &[])).is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
