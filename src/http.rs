//! HTTP on the service port: WebSocket upgrades at `/ws`, event streams at
//! `/api/v1/streaming/events` ([`crate::sse`]), everything else to [`crate::rest`].
//!
//! The upgrade path covers what `fastwebsockets::upgrade` does not check: the `Origin` against
//! `websocket.allowed_origins`, `max_connections` and the unauthenticated budget (503, see
//! `preauth`), and shutdown (503); and it answers the subprotocol (`aiops.v1.msgpack`) and
//! permessage-deflate the client offered and the hub speaks.
//!
//! Owns nothing that lives: each request is answered from the hub's parts and
//! [`crate::settings::HttpSettings`].

use crate::codec::{Codec, Deflate, Wire};
use crate::hub::{ConnectionSlot, Hub};
use crate::preauth::Ticket;
use crate::rest::{self, reply::error_body, reply::json_response};
use crate::sse::{self, HubBody};
use crate::ws::connection::{self, Route};
use crate::ws::socket::Socket;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Longest a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted TCP connection on the current shard (after the TLS handshake, when TLS
/// is on).
pub(crate) async fn serve(hub: Arc<Hub>, shard: usize, stream: TcpStream, remote: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let sndbuf = hub.settings.http.send_buffer_bytes;
    if sndbuf > 0 {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(sndbuf);
    }
    let Some(acceptor) = hub.tls.clone() else {
        return serve_http(hub, shard, stream, remote).await;
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_http(hub, shard, tls, remote).await,
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 (and upgrades) on `io`.
async fn serve_http<I>(hub: Arc<Hub>, shard: usize, io: I, remote: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc_hub = hub.clone();
    let service = hyper::service::service_fn(move |req| {
        let hub = svc_hub.clone();
        async move { Ok::<_, Infallible>(route(hub, shard, remote, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}

/// Dispatches one request: a WebSocket upgrade, an event stream, or REST.
async fn route(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<HubBody> {
    let path = req.uri().path();
    if path == sse::PATH {
        return match req.method() == hyper::Method::GET {
            true => sse::serve(hub, shard, remote, req).await,
            false => rest::reply::method_not_allowed("GET").map(Either::Left),
        };
    }
    let echo = hub.settings.http.echo_path.as_deref() == Some(path);
    if path != "/ws" && !echo {
        return rest::handle(hub, req).await.map(Either::Left);
    }
    route_upgrade(hub, shard, remote, req, echo).map(Either::Left)
}

/// Answers a WebSocket upgrade at `/ws` (or at the echo route).
fn route_upgrade(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    req: Request<Incoming>,
    echo: bool,
) -> Response<Full<Bytes>> {
    // The echo route speaks no protocol of the hub's: JSON framing only, compression if asked.
    let (codec, chosen) = match Codec::negotiate(req.headers()) {
        Ok(_) if echo => (Codec::Json, None),
        Ok(c) => c,
        Err(why) => return json_response(StatusCode::BAD_REQUEST, &error_body(&why)),
    };
    let deflate = hub
        .settings
        .http
        .compression
        .then(|| crate::frame::deflate::negotiate(req.headers()))
        .flatten();
    let wire = Wire {
        codec,
        deflate: match deflate {
            None => Deflate::Off,
            Some((n, _)) if n.compress_out => Deflate::Both,
            Some(_) => Deflate::Inbound,
        },
    };
    let route = if echo {
        Route::Echo(wire)
    } else {
        Route::Hub(wire)
    };
    let mut response = upgrade(hub, shard, remote, req, route);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let headers = response.headers_mut();
        if let Some(chosen) = chosen {
            headers.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, chosen);
        }
        if let Some((_, answer)) = deflate {
            headers.insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, answer);
        }
    }
    response
}

/// Accepts or refuses a WebSocket upgrade.
fn upgrade(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    mut req: Request<Incoming>,
    route: Route,
) -> Response<Full<Bytes>> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return json_response(
            StatusCode::UPGRADE_REQUIRED,
            &error_body("use a WebSocket upgrade on /ws"),
        );
    }
    if let Some(refused) = refusal(&hub, &req) {
        return refused;
    }
    let admitted = match hub.admit(remote.ip()) {
        Ok(a) => a,
        Err(why) => return json_response(StatusCode::SERVICE_UNAVAILABLE, &error_body(why)),
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(r) => r,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &error_body(&format!("bad upgrade: {e}")),
            )
        }
    };
    let mut response = response.map(|_| Full::new(Bytes::new()));
    // Sticky sessions: name this instance, so a load balancer can send the client back here.
    if let Ok(v) = hyper::header::HeaderValue::from_str(&hub.settings.http.sticky_cookie) {
        response.headers_mut().insert(hyper::header::SET_COOKIE, v);
    }
    tokio::spawn(adopt(hub, shard, remote, upgrade, admitted, route));
    response
}

/// Why a WebSocket upgrade or an event stream is refused before any slot is taken: shutting
/// down (503), or a browser origin not allowed (403).
pub(crate) fn refusal(hub: &Hub, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if hub.is_shutting_down() {
        return Some(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &error_body("shutting down"),
        ));
    }
    // Cross-site WebSocket hijacking (and its event-stream twin): with a list, a browser origin
    // not on it (or not even valid ASCII) is refused; clients that send no Origin (not
    // browsers) pass.
    let allowed = &hub.settings.http.allowed_origins;
    let origin = req.headers().get(hyper::header::ORIGIN)?;
    let listed = origin
        .to_str()
        .is_ok_and(|o| allowed.iter().any(|a| a == o));
    (!allowed.is_empty() && !listed)
        .then(|| json_response(StatusCode::FORBIDDEN, &error_body("origin not allowed")))
}

/// Once the 101 is sent: takes the TCP stream back from hyper, so the writer can `writev` on it
/// directly, and serves the connection.
async fn adopt(
    hub: Arc<Hub>,
    shard: usize,
    remote: SocketAddr,
    upgrade: fastwebsockets::upgrade::UpgradeFut,
    admitted: (ConnectionSlot, Option<Ticket>),
    route: Route,
) {
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "upgrade failed");
            return;
        }
    };
    let upgraded = ws.into_inner().into_inner();
    let (socket, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (Socket::Plain(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
            Ok(parts) => (Socket::Tls(Box::new(parts.io.into_inner())), parts.read_buf),
            Err(_) => return tracing::error!("upgraded connection is neither TCP nor TLS"),
        },
    };
    // hyper's leftover bytes are a slice of its 8 KiB read buffer: holding the slice would keep
    // the whole buffer for the connection's life (it was most of an idle connection's heap).
    // What the client sent past its upgrade request is copied out (usually nothing).
    let leftover = {
        let hypers = leftover;
        Bytes::copy_from_slice(&hypers)
    };
    // A task of its own: this one (with the upgrade's state and a copy of every argument)
    // ends here, so an idle connection's task is the connection's future alone.
    tokio::spawn(connection::run(
        hub, shard, remote, socket, leftover, admitted, route,
    ));
}
