//! A client's session: what its requests mean once the WebSocket layer has turned frames into
//! text messages. It parses each request, enforces authentication ([`login`]: the auth state
//! machine and its watchdog), and carries out `subscribe`, `unsubscribe` and `ping`, answering
//! through the client's lossless control queue.
//!
//! Owns one client's session (login, rate limit); only the connection's reader drives it.

mod catchup;
mod login;
mod rate;

pub(crate) use catchup::send as catch_up;
pub(crate) use rate::Admit;

use crate::client::ClientHandle;
use crate::codec::Codec;
use crate::frame::OutFrame;
use crate::hub::Hub;
use crate::protocol::{
    check_breadth, check_total_breadth, parse_request, reply, Catchup, ErrorCode, Request,
};
use crate::subscription::{all_types, remove_types, Subscription};
use fastwebsockets::CloseCode;
use login::Login;
use std::sync::Arc;

/// One connection's session.
pub(crate) struct Session {
    /// The hub.
    pub(crate) hub: Arc<Hub>,
    /// This client.
    pub(crate) client: Arc<ClientHandle>,
    /// Where the client stands with authentication.
    login: Login,
    /// The client's message rate limit (this connection's own lock).
    rate: parking_lot::Mutex<rate::Bucket>,
    /// An echo connection (`websocket.echo_path`): every message goes back as sent, with no
    /// authentication, rate limit or protocol.
    pub(crate) echo: bool,
}

impl Session {
    /// A new session for `client`, waiting for `auth` when authentication is on.
    pub(crate) fn new(hub: Arc<Hub>, client: Arc<ClientHandle>, echo: bool) -> Self {
        let settings = &hub.settings.session;
        let login = Login::new(settings, &client);
        let rate = rate::Bucket::new(&settings.rate_limit, std::time::Instant::now());
        Self {
            hub,
            client,
            login,
            rate: parking_lot::Mutex::new(rate),
            echo,
        }
    }

    /// Ends the connection when authentication does not happen or lapses; never returns while
    /// authentication is off or in order.
    pub(crate) async fn auth_watchdog(&self) {
        self.login.watchdog(&self.hub, &self.client).await
    }

    /// Takes one message against the client's rate limit; tells the client when it drops one
    /// and closes it (1008) when it keeps flooding.
    pub(crate) fn admit(&self) -> Admit {
        let verdict = self.rate.lock().admit(std::time::Instant::now());
        let client = &self.client;
        match verdict {
            Admit::Pass | Admit::Drop => {}
            Admit::DropAndWarn => {
                client.send_control(reply::error(
                    ErrorCode::RATE_LIMITED,
                    "too many messages: this one and any more this second are dropped",
                ));
            }
            Admit::Close => {
                client.send_control(reply::error(
                    ErrorCode::RATE_LIMITED,
                    "too many messages: closing",
                ));
                client.send_control(OutFrame::close(CloseCode::Policy, "rate limit exceeded"));
            }
        }
        verdict
    }

    /// Handles one text message; false when the connection must close.
    pub(crate) async fn handle_message(&self, text: &str) -> bool {
        let client = &self.client;
        let request = parse_request(text);
        let allowed = matches!(request, Ok(Request::Auth { .. }) | Ok(Request::Ping { .. }));
        if !allowed && self.login.is_pending() {
            refuse_and_close(client, ErrorCode::AUTH_FAILED, "authenticate first");
            return false;
        }
        if !allowed && self.login.is_expired() {
            client.send_control(reply::error(
                ErrorCode::AUTH_EXPIRED,
                "token expired: send a fresh auth message first",
            ));
            return true;
        }
        match request {
            Err(refusal) => {
                client.send_control(reply::error(refusal.code, &refusal.message));
                true
            }
            Ok(Request::Auth { token }) => {
                let before = self.login.grant();
                let Some(roles) = self.login.authenticate(&self.hub, client, &token).await else {
                    return false;
                };
                if self.login.grant() != before {
                    self.regrant().await;
                }
                client.send_control(reply::auth_response(&client.id.to_string(), roles));
                true
            }
            Ok(Request::Ping { timestamp }) => {
                client.send_control(reply::pong(timestamp.as_deref()));
                true
            }
            Ok(Request::Subscribe(sub, catchup)) => {
                self.subscribe(sub, catchup).await;
                true
            }
            Ok(Request::Unsubscribe(types)) => {
                self.unsubscribe(types).await;
                true
            }
        }
    }

    /// Handles a message in the other frame type than the connection's wire format (binary on
    /// JSON, text on MessagePack): refused before authentication (close 1008), else
    /// `INVALID_MESSAGE`; false when the connection must close.
    pub(crate) fn handle_wrong_frame(&self, codec: Codec) -> bool {
        if self.login.is_pending() {
            refuse_and_close(&self.client, ErrorCode::AUTH_FAILED, "authenticate first");
            return false;
        }
        let why = match codec {
            // An SSE client sends nothing: never here.
            Codec::Json | Codec::Sse => "binary messages are not supported; send JSON text",
            Codec::MsgPack => "this connection speaks aiops.v1.msgpack: send binary frames",
        };
        self.client
            .send_control(reply::error(ErrorCode::INVALID_MESSAGE, why));
        true
    }

    /// Answers a MessagePack message that does not decode to a JSON-like map: before
    /// authentication like any message but `auth` or `ping` (`AUTH_FAILED`, close 1008), after
    /// it `INVALID_MESSAGE`. False when the connection must close.
    pub(crate) fn refuse_undecodable(&self, why: &str) -> bool {
        if self.login.is_pending() {
            refuse_and_close(&self.client, ErrorCode::AUTH_FAILED, "authenticate first");
            return false;
        }
        self.client.send_control(reply::error(
            ErrorCode::INVALID_MESSAGE,
            &format!("not a MessagePack message: {why}"),
        ));
        true
    }

    /// Where a client subscribing now stands in each origin region's stream (NATS mode),
    /// read once routing sees the subscription: what its `subscribed` reply says.
    fn positions(&self) -> Vec<(std::sync::Arc<str>, u64)> {
        self.hub.router.history().positions()
    }

    /// Adds a subscription (within `max_subscriptions_per_client` and the token's grant,
    /// narrowed to it) and answers `subscribed` once routing sees it; then sends what
    /// `catchup` asks for ahead of the live events.
    async fn subscribe(&self, sub: Subscription, catchup: Catchup) {
        let sub = match self.login.grant().admit(sub) {
            Ok(s) => s,
            Err(why) => {
                self.client
                    .send_control(reply::error(ErrorCode::FORBIDDEN, &why.to_string()));
                return;
            }
        };
        if let Err(r) = check_breadth(&sub) {
            self.client.send_control(reply::error(r.code, &r.message));
            return;
        }
        let max = self.hub.settings.session.max_subscriptions;
        let mut subs = self.hub.subscriptions.of(&self.client);
        let catching_up =
            catchup.resume_from.is_some() || catchup.positions.is_some() || catchup.snapshot;
        if subs.contains(&sub) {
            // Already held: answered, and the index is left alone.
            self.client
                .send_control(reply::subscribed(&sub, &self.positions()));
            if catching_up {
                self.client.hold_events(true);
                self.catch_up(&sub, &catchup).await;
            }
            return;
        }
        if let Err(r) = check_total_breadth(&subs, &sub) {
            self.client.send_control(reply::error(r.code, &r.message));
            return;
        }
        if subs.len() >= max {
            self.client.send_control(reply::error(
                ErrorCode::INVALID_SUBSCRIPTION,
                &format!("too many subscriptions (most {max})"),
            ));
            return;
        }
        subs.push(sub.clone());
        // Live events wait in the ring from before the subscription is indexed until the
        // catch-up has gone out (session/catchup.rs).
        self.client.hold_events(catching_up);
        match self.hub.subscriptions.set(&self.client, subs).await {
            Ok(()) => {
                self.client
                    .send_control(reply::subscribed(&sub, &self.positions()));
                if catching_up {
                    self.catch_up(&sub, &catchup).await;
                }
            }
            Err(full) => {
                self.client.hold_events(false);
                let refused = reply::error(ErrorCode::INVALID_SUBSCRIPTION, &full.to_string());
                self.client.send_control(refused);
            }
        }
    }

    /// Sends a resume or snapshot for `sub`, then lets the held live events go.
    async fn catch_up(&self, sub: &Subscription, catchup: &Catchup) {
        catchup::send(&self.hub, &self.client, sub, catchup).await
    }

    /// Removes the listed event types (all subscriptions when `None`) and answers
    /// `unsubscribed` with what was removed.
    async fn unsubscribe(&self, types: Option<Vec<crate::event::EventType>>) {
        let mut subs = self.hub.subscriptions.of(&self.client);
        let removed = match types {
            Some(t) => remove_types(&mut subs, &t),
            None => {
                let all = all_types(&subs);
                subs.clear();
                all
            }
        };
        // Removing adds no index key, so the index never refuses it.
        let _ = self.hub.subscriptions.set(&self.client, subs).await;
        self.client.send_control(reply::unsubscribed(&removed));
    }
}

impl Session {
    /// After a fresh token with another grant: every stored subscription is checked against it
    /// again; one it no longer admits is dropped (the client re-subscribes if it wants), and
    /// events already queued that the subscriptions now held do not match are not sent.
    async fn regrant(&self) {
        let grant = self.login.grant();
        let subs: Vec<Subscription> = self.hub.subscriptions.of(&self.client);
        let kept: Vec<Subscription> = subs
            .iter()
            .filter_map(|s| grant.admit(s.clone()).ok())
            .filter(|s| check_breadth(s).is_ok())
            .collect();
        if kept == subs {
            return;
        }
        if self
            .hub
            .subscriptions
            .set(&self.client, kept)
            .await
            .is_err()
        {
            // Narrowing to the new grant would add keys to a full index: keep only what the
            // grant admits unchanged (a subset of what was held, which always fits).
            let unchanged: Vec<Subscription> = subs
                .iter()
                .filter(|s| grant.admit((*s).clone()).as_ref() == Ok(*s))
                .cloned()
                .collect();
            let _ = self.hub.subscriptions.set(&self.client, unchanged).await;
        }
        // Routing now sees only what is held: what was queued before is checked against it.
        let held = self.hub.subscriptions.of(&self.client);
        let upto = self.hub.router.history().last_seq();
        self.client.seam.regrant(upto, held);
    }
}

/// Sends an error and closes the connection with 1008 (policy violation).
fn refuse_and_close(client: &ClientHandle, code: ErrorCode, message: &str) {
    client.send_control(reply::error(code, message));
    client.send_control(OutFrame::close(CloseCode::Policy, message));
}
