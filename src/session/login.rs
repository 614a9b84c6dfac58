//! Authentication on one connection: the state machine of docs/design.md "Connection" and the
//! watchdog that enforces its deadlines.
//!
//! With auth off everything is allowed. With it on, a connection starts `Pending` and must send
//! a valid `auth` within `auth.timeout_seconds`; once authenticated, a token with an expiry gets
//! `AUTH_EXPIRED` when it lapses and `auth.reauth_grace_seconds` to send a fresh one. Missing a
//! deadline or sending a bad token ends the connection with `AUTH_FAILED` and close 1008.
//!
//! Owns one connection's authentication phase and grant; only that connection's session changes
//! them.

use super::refuse_and_close;
use crate::auth::{AuthError, Grant};
use crate::client::ClientHandle;
use crate::hub::Hub;
use crate::protocol::{reply, ErrorCode};
use crate::settings::SessionSettings;
use parking_lot::Mutex;
use std::time::Instant;
use tokio::sync::Notify;

/// Where a connection stands with authentication.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Auth is off: everything is allowed.
    Off,
    /// Waiting for the first `auth` until the deadline.
    Pending(Instant),
    /// Authenticated; the token expires at the given time, if ever.
    Authed(Option<Instant>),
    /// The token expired; a fresh `auth` is needed before the deadline.
    Expired(Instant),
}

impl Phase {
    /// When the watchdog must look again.
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Off | Phase::Authed(None) => None,
            Phase::Pending(d) | Phase::Authed(Some(d)) | Phase::Expired(d) => Some(d),
        }
    }
}

/// One connection's authentication state, shared by its reader and its watchdog.
pub(super) struct Login {
    /// The phase (this connection's own lock).
    phase: Mutex<Phase>,
    /// What the current token grants (no limit while auth is off).
    grant: Mutex<Grant>,
    /// Wakes the watchdog when the phase changes.
    changed: Notify,
}

impl Login {
    /// The starting state under `cfg`; marks `client` authenticated at once when auth is off.
    pub(super) fn new(settings: &SessionSettings, client: &ClientHandle) -> Self {
        let phase = if settings.auth {
            Phase::Pending(Instant::now() + settings.auth_timeout)
        } else {
            client.set_authenticated();
            Phase::Off
        };
        Self {
            phase: Mutex::new(phase),
            grant: Mutex::new(Grant::default()),
            changed: Notify::new(),
        }
    }

    /// What the current token grants.
    pub(super) fn grant(&self) -> Grant {
        self.grant.lock().clone()
    }

    /// Whether the client has yet to authenticate (only `auth` and `ping` are allowed).
    pub(super) fn is_pending(&self) -> bool {
        matches!(*self.phase.lock(), Phase::Pending(_))
    }

    /// Whether the token expired and no fresh one came yet (only `auth` and `ping` are taken;
    /// subscriptions already held keep delivering through the grace period).
    pub(super) fn is_expired(&self) -> bool {
        matches!(*self.phase.lock(), Phase::Expired(_))
    }

    /// Handles `auth`: the token's roles (`Some(None)` while auth is off), or `None` when the
    /// connection must close. On success the caller answers (`auth_response`, with the roles,
    /// which are not kept), once it has acted on a changed grant.
    pub(super) async fn authenticate(
        &self,
        hub: &Hub,
        client: &ClientHandle,
        token: &str,
    ) -> Option<Option<Vec<String>>> {
        if let Phase::Off = *self.phase.lock() {
            return Some(None);
        }
        match hub.auth.authenticate(token).await {
            Ok(p) => {
                *self.grant.lock() = p.grant;
                *self.phase.lock() = Phase::Authed(p.expires_at);
                self.changed.notify_one();
                client.set_subject(p.subject);
                client.set_authenticated();
                Some(Some(p.roles))
            }
            Err(e) => {
                let message = match e {
                    AuthError::Invalid => "invalid token",
                    AuthError::Expired => "token expired",
                    AuthError::Unavailable => "token validation unavailable",
                };
                refuse_and_close(client, ErrorCode::AUTH_FAILED, message);
                None
            }
        }
    }

    /// Ends the connection when authentication does not happen or lapses.
    pub(super) async fn watchdog(&self, hub: &Hub, client: &ClientHandle) {
        loop {
            let phase = *self.phase.lock();
            match phase.deadline() {
                None if matches!(phase, Phase::Off) => return std::future::pending().await,
                None => {
                    self.changed.notified().await;
                    continue;
                }
                // Boxed: the timer lives on the heap only while a deadline is pending, so an
                // idle connection's task does not carry it.
                Some(deadline) => {
                    if Box::pin(self.sleep_until_changed(deadline)).await {
                        continue;
                    }
                }
            }
            if self.deadline_passed(hub, client) {
                return;
            }
        }
    }

    /// Waits until `deadline`; true when the phase changed first.
    async fn sleep_until_changed(&self, deadline: Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => false,
            _ = self.changed.notified() => true,
        }
    }

    /// Acts on a deadline that may have passed; true when the connection is being closed.
    fn deadline_passed(&self, hub: &Hub, client: &ClientHandle) -> bool {
        let mut guard = self.phase.lock();
        if guard.deadline().is_none_or(|d| Instant::now() < d) {
            return false; // the phase changed while the timer ran
        }
        match *guard {
            Phase::Pending(_) => {
                drop(guard);
                refuse_and_close(client, ErrorCode::AUTH_FAILED, "authentication timeout");
                true
            }
            Phase::Authed(Some(_)) => {
                let grace = hub.settings.session.reauth_grace;
                *guard = Phase::Expired(Instant::now() + grace);
                drop(guard);
                client.send_control(reply::error(
                    ErrorCode::AUTH_EXPIRED,
                    "token expired: send a fresh auth message",
                ));
                false
            }
            Phase::Expired(_) => {
                drop(guard);
                refuse_and_close(client, ErrorCode::AUTH_FAILED, "token expired");
                true
            }
            Phase::Off | Phase::Authed(None) => false,
        }
    }
}
