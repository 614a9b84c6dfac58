//! The claims streamhub reads from a verified token (a JWT's payload, or the JSON a validation
//! endpoint answers with), and how they become a [`Principal`].

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
    /// The only clusters the client may receive, when present.
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// The only namespaces the client may receive, when present.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
}

impl Claims {
    /// The principal these claims describe; `Expired` when `exp` has passed.
    pub fn into_principal(self) -> Result<Principal, AuthError> {
        let expires_at = match self.exp {
            None => None,
            Some(exp) if !exp.is_finite() => return Err(AuthError::Invalid),
            Some(exp) => Some(instant_of(exp).ok_or(AuthError::Expired)?),
        };
        Ok(Principal {
            subject: self.sub.unwrap_or_default(),
            roles: self.roles,
            expires_at,
            grant: Grant {
                clusters: self.clusters,
                namespaces: self.namespaces,
            },
        })
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
        assert_eq!(c.clone().into_principal().unwrap_err(), AuthError::Expired);
        let p = Claims {
            exp: Some(now() + 60.0),
            ..c
        }
        .into_principal()
        .unwrap();
        assert_eq!(p.subject, "a");
        assert!(p.has_role("admin"));
        assert_eq!(p.grant.clusters, Some(vec!["c1".to_string()]));
        assert!(p.expires_at.is_some_and(|e| e > Instant::now()));
        assert!(serde_json::from_str::<Claims>(r#"{"roles":"admin"}"#).is_err());
    }
}
