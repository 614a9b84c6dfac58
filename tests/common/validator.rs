//! A token validation endpoint for the trust tests: a real HTTP server on loopback answering
//! each bearer token as the test's `answer` says, counting what it was asked.

use http_body_util::Full;
use hyper::body::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the endpoint answers for one token: status, body, and how long it waits first.
pub type Answer = (u16, String, Duration);

/// What the endpoint was asked: questions served, in flight now, and the most at once.
#[derive(Default)]
pub struct Asked {
    /// Questions served.
    pub served: AtomicUsize,
    /// Questions being answered now.
    pub in_flight: AtomicUsize,
    /// The most ever answered at once.
    pub most: AtomicUsize,
}

/// Starts the endpoint; returns its address and its counts.
pub async fn validator(answer: fn(&str) -> Answer) -> (std::net::SocketAddr, Arc<Asked>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Asked::default());
    let counts = asked.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = counts.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let counts = counts.clone();
                let token = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default()
                    .to_string();
                async move {
                    counts.served.fetch_add(1, Ordering::SeqCst);
                    let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    counts.most.fetch_max(now, Ordering::SeqCst);
                    let (status, body, delay) = answer(&token);
                    tokio::time::sleep(delay).await;
                    counts.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, asked)
}
