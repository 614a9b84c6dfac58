//! The claims streamhub reads from a verified token (a JWT's payload, or the JSON a validation
//! endpoint answers with), and how they become a [`Principal`].
//!
//! A grant is never widened by accident: `"clusters": null` or `"namespaces": null` is refused
//! (a missing claim means no limit; `null` is not read as one), and a validation endpoint's
//! answer counts only when it says `"active": true`, or, for endpoints that are not RFC 7662
//! introspection, names a `sub` and carries no `active` at all.
//!
//! Owns nothing that lives: claims are parsed per check and turned into a `Principal` by
//! `into_principal`. Changed only with the token formats it reads.

use super::{AuthError, Grant, Principal};
use serde::Deserialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The claims that matter here; others are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    /// The subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default)]
    pub exp: Option<f64>,
    /// Roles: `admin` (clients, status, subscriptions, profiler), `internal` (broadcast).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The only clusters the client may receive, when present (`Some(None)`: an explicit
    /// `null`, refused).
    #[serde(default, deserialize_with = "present")]
    pub clusters: Option<Option<Vec<String>>>,
    /// The only namespaces the client may receive, when present (`Some(None)`: `null`).
    #[serde(default, deserialize_with = "present")]
    pub namespaces: Option<Option<Vec<String>>>,
    /// RFC 7662's `active`, from a validation endpoint.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A claim that is present, as given (`null` included): a missing one stays `None` through
/// `#[serde(default)]`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Vec<String>>>, D::Error> {
    Option::<Vec<String>>::deserialize(d).map(Some)
}

impl Claims {
    /// The principal these claims describe; `Expired` when `exp` has passed more than
    /// `leeway_seconds` ago (the token then lives that much past its `exp`), `Invalid` when a
    /// grant claim is `null`.
    pub fn into_principal(self, leeway_seconds: u64) -> Result<Principal, AuthError> {
        let expires_at = match self.exp {
            None => None,
            Some(exp) if !exp.is_finite() => return Err(AuthError::Invalid),
            Some(exp) => Some(instant_of(exp + leeway_seconds as f64).ok_or(AuthError::Expired)?),
        };
        let (Some(clusters), Some(namespaces)) = (
            self.clusters.map_or(Some(None), |c| c.map(Some)),
            self.namespaces.map_or(Some(None), |n| n.map(Some)),
        ) else {
            return Err(AuthError::Invalid);
        };
        Ok(Principal {
            subject: self.sub.unwrap_or_default(),
            roles: self.roles,
            expires_at,
            grant: Grant {
                clusters,
                namespaces,
            },
        })
    }

    /// Whether a validation endpoint's answer says the token is valid: `"active": true`, or
    /// no `active` and a `sub` (an endpoint that is not RFC 7662 introspection).
    pub(crate) fn active(&self) -> bool {
        match self.active {
            Some(active) => active,
            None => self.sub.as_deref().is_some_and(|s| !s.is_empty()),
        }
    }
}

/// The monotonic instant of a Unix time in the future; `None` when it has passed.
fn instant_of(unix_seconds: f64) -> Option<Instant> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let left = unix_seconds - now;
    // A year at most, so the addition cannot overflow; a token lives far less.
    (left > 0.0).then(|| Instant::now() + Duration::from_secs_f64(left.min(365.0 * 86400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn expiry_and_grant() {
        let c: Claims = serde_json::from_str(
            r#"{"sub":"a","roles":["admin"],"clusters":["c1"],"exp":1,"extra":true}"#,
        )
        .unwrap();
        assert_eq!(c.clone().into_principal(0).unwrap_err(), AuthError::Expired);
        let p = Claims {
            exp: Some(now() + 60.0),
            ..c.clone()
        }
        .into_principal(0)
        .unwrap();
        assert_eq!(p.subject, "a");
        assert!(p.has_role("admin"));
        assert_eq!(p.grant.clusters, Some(vec!["c1".to_string()]));
        assert!(p.expires_at.is_some_and(|e| e > Instant::now()));
        assert!(serde_json::from_str::<Claims>(r#"{"roles":"admin"}"#).is_err());
        // A leeway keeps a token that expired moments ago.
        let late = Claims {
            exp: Some(now() - 3.0),
            ..c
        };
        assert_eq!(
            late.clone().into_principal(0).unwrap_err(),
            AuthError::Expired
        );
        assert!(late.into_principal(5).is_ok());
    }

    #[test]
    fn null_never_widens_a_grant_and_activity_is_explicit() {
        let read = |s: &str| serde_json::from_str::<Claims>(s).unwrap();
        let open = read(r#"{"sub":"a"}"#).into_principal(0).unwrap();
        assert_eq!(open.grant, Grant::default());
        for null in [
            r#"{"sub":"a","clusters":null}"#,
            r#"{"sub":"a","namespaces":null}"#,
        ] {
            assert_eq!(
                read(null).into_principal(0).unwrap_err(),
                AuthError::Invalid
            );
        }
        let scoped = read(r#"{"sub":"a","clusters":["c1"]}"#).into_principal(0);
        assert_eq!(scoped.unwrap().grant.clusters, Some(vec!["c1".to_string()]));
        assert!(read(r#"{"active":true}"#).active());
        assert!(read(r#"{"sub":"a"}"#).active());
        for inactive in [r#"{}"#, r#"{"active":false,"sub":"a"}"#, r#"{"sub":""}"#] {
            assert!(!read(inactive).active(), "{inactive}");
        }
    }
}
