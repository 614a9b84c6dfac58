//! Trust: JWTs (HS256, RS256, ES256, JWKS), a real validation endpoint, scoped tokens, and the
//! connection rules around them, through real WebSocket and HTTP clients. Keys are generated
//! here; the validation endpoint is a small HTTP server in the test.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, `offset` from now.
fn at(offset: i64) -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + offset
}

/// Claims valid for a minute.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": at(60), "roles": ["admin"]})
}

/// A token signed with `key`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
}

/// An RSA key pair: (private key for signing, public key PEM).
fn rsa_pair() -> (EncodingKey, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(), public)
}

/// An EC P-256 key pair: (private key for signing, public key PEM).
fn ec_pair() -> (EncodingKey, String) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public = private
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(), public)
}

/// A JWKS document of `keys` (kid, signing key, algorithm).
fn jwks(keys: &[(&str, &EncodingKey, Algorithm)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, key, alg)| {
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, *alg).unwrap();
            jwk.common.key_id = Some(kid.to_string());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// What a client gets for `auth` with `token`: `Ok(client_id)`, or `Err` with the error message
/// and after a close 1008.
async fn try_auth(hub: &HubProcess, token: &str) -> Result<String, String> {
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "auth", "token": token})).await;
    let r = recv(&mut ws).await;
    if r["type"] == "auth_response" {
        return Ok(r["client_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(r["code"], "AUTH_FAILED", "{r}");
    let after = expect_close(&mut ws, 1008).await;
    assert!(after.is_empty(), "{after:?}");
    Err(r["message"].as_str().unwrap_or_default().to_string())
}

/// A hub with auth on and these extra `auth` lines.
fn auth_hub(lines: &str) -> HubProcess {
    HubProcess::start(&format!(
        "  auth:\n    enabled: true\n    timeout_seconds: 2\n{lines}"
    ))
}

/// A token with header `{"alg":"none"}` and no signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64.encode(claims.to_string()))
}

#[tokio::test]
async fn hs256_checks_signature_expiry_algorithm_issuer_and_audience() {
    let hub = auth_hub(
        "    jwt_secret: \"s3cret\"\n    jwt_issuer: \"aiops\"\n    jwt_audience: \"dashboards\"\n    jwt_leeway_seconds: 0\n",
    );
    let key = EncodingKey::from_secret(b"s3cret");
    let good = json!({"sub": "ann", "exp": at(60), "iss": "aiops", "aud": "dashboards"});
    assert!(try_auth(&hub, &sign(Algorithm::HS256, None, &good, &key))
        .await
        .is_ok());
    let mut expired = good.clone();
    expired["exp"] = json!(at(-5));
    let refused = try_auth(&hub, &sign(Algorithm::HS256, None, &expired, &key)).await;
    assert_eq!(refused.unwrap_err(), "token expired");
    for bad in [
        json!({"sub": "ann", "iss": "aiops", "aud": "dashboards"}), // no exp
        json!({"sub": "ann", "exp": at(60), "iss": "evil", "aud": "dashboards"}),
        json!({"sub": "ann", "exp": at(60), "iss": "aiops", "aud": "other"}),
        json!({"sub": "ann", "exp": at(60), "aud": "dashboards"}), // no iss
        json!({"sub": "ann", "exp": at(60), "nbf": at(600), "iss": "aiops", "aud": "dashboards"}),
    ] {
        let t = sign(Algorithm::HS256, None, &bad, &key);
        assert_eq!(
            try_auth(&hub, &t).await.unwrap_err(),
            "invalid token",
            "{bad}"
        );
    }
    let forged = sign(
        Algorithm::HS256,
        None,
        &good,
        &EncodingKey::from_secret(b"guess"),
    );
    assert!(try_auth(&hub, &forged).await.is_err());
    let hs512 = sign(Algorithm::HS512, None, &good, &key);
    assert!(
        try_auth(&hub, &hs512).await.is_err(),
        "only HS256 is configured"
    );
    assert!(try_auth(&hub, &unsigned(&good)).await.is_err(), "alg none");
}

#[tokio::test]
async fn rs256_and_es256_with_pem_keys_refuse_algorithm_confusion() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, (private, public)) in [
        (Algorithm::RS256, rsa_pair()),
        (Algorithm::ES256, ec_pair()),
    ] {
        let path = dir.path().join(format!("{alg:?}.pem"));
        std::fs::write(&path, &public).unwrap();
        let hub = auth_hub(&format!(
            "    jwt_public_key_file: \"{}\"\n",
            path.display()
        ));
        let ok = try_auth(&hub, &sign(alg, None, &claims("ann"), &private)).await;
        assert!(ok.is_ok(), "{alg:?}: {ok:?}");
        // The public key used as an HMAC secret (the classic confusion attack) fails.
        let confused = sign(
            Algorithm::HS256,
            None,
            &claims("eve"),
            &EncodingKey::from_secret(public.as_bytes()),
        );
        assert!(try_auth(&hub, &confused).await.is_err(), "{alg:?}");
        // A token from another key pair of the same kind fails.
        let (other, _) = if alg == Algorithm::RS256 {
            rsa_pair()
        } else {
            ec_pair()
        };
        let t = sign(alg, None, &claims("eve"), &other);
        assert!(try_auth(&hub, &t).await.is_err(), "{alg:?}");
        assert!(try_auth(&hub, &unsigned(&claims("eve"))).await.is_err());
    }
}

#[tokio::test]
async fn jwks_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (ec, _) = ec_pair();
    let (rsa, _) = rsa_pair();
    std::fs::write(&path, jwks(&[("ec-1", &ec, Algorithm::ES256)])).unwrap();
    let hub = auth_hub(&format!("    jwks_file: \"{}\"\n", path.display()));
    let by_ec = sign(Algorithm::ES256, Some("ec-1"), &claims("ann"), &ec);
    let by_rsa = sign(Algorithm::RS256, Some("rsa-1"), &claims("bob"), &rsa);
    assert!(try_auth(&hub, &by_ec).await.is_ok());
    assert!(try_auth(&hub, &by_rsa).await.is_err(), "unknown kid");
    // A key under the wrong kid does not verify.
    let misfiled = sign(Algorithm::ES256, Some("ec-1"), &claims("eve"), &ec_pair().0);
    assert!(try_auth(&hub, &misfiled).await.is_err());
    // Rotate: add the RSA key; the hub picks it up without a restart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &path,
        jwks(&[
            ("ec-1", &ec, Algorithm::ES256),
            ("rsa-1", &rsa, Algorithm::RS256),
        ]),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while try_auth(&hub, &by_rsa).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never read"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(try_auth(&hub, &by_ec).await.is_ok());
}

/// A token validation endpoint's answers: `yes-<sub>` is valid (scoped to cluster c1 for
/// `yes-scoped`), `no` is not, `slow` answers after 5 s, `broken` gets a 500.
fn answers(token: &str) -> validator::Answer {
    let now = Duration::ZERO;
    match token {
        "slow" => (200, claims("slow").to_string(), Duration::from_secs(5)),
        "broken" => (500, "oops".to_string(), now),
        "yes-scoped" => (
            200,
            json!({"sub": "scoped", "exp": at(60), "clusters": ["c1"]}).to_string(),
            now,
        ),
        t if t.starts_with("yes-") => (200, claims(&t[4..]).to_string(), now),
        _ => (401, "{}".to_string(), now),
    }
}

#[tokio::test]
async fn validation_endpoint_yes_no_slow_down_and_cached() {
    let (addr, asked) = validator::validator(answers).await;
    let served = &asked.served;
    let hub = auth_hub(&format!(
        "    token_validation_url: \"http://{addr}/auth/validate\"\n    validation_timeout_seconds: 0.5\n    validation_cache_seconds: 30\n"
    ));
    assert!(try_auth(&hub, "yes-ann").await.is_ok());
    let asked = served.load(Ordering::SeqCst);
    assert!(try_auth(&hub, "yes-ann").await.is_ok());
    assert_eq!(
        served.load(Ordering::SeqCst),
        asked,
        "the second answer came from the cache"
    );
    assert_eq!(try_auth(&hub, "no").await.unwrap_err(), "invalid token");
    let started = std::time::Instant::now();
    let slow = try_auth(&hub, "slow").await.unwrap_err();
    assert_eq!(slow, "token validation unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout held"
    );
    assert_eq!(
        try_auth(&hub, "broken").await.unwrap_err(),
        "token validation unavailable"
    );
    // REST goes through the same validator: the admin role comes from its claims.
    let r = reqwest::Client::new()
        .get(hub.url("/api/v1/streaming/status"))
        .bearer_auth("yes-ops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A validator that is not there at all fails closed too.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let hub = auth_hub(&format!(
        "    token_validation_url: \"http://{gone_addr}/\"\n    validation_timeout_seconds: 0.5\n"
    ));
    assert_eq!(
        try_auth(&hub, "yes-ann").await.unwrap_err(),
        "token validation unavailable"
    );
}

#[tokio::test]
async fn scoped_token_is_refused_outside_its_grant_and_narrowed_inside() {
    let hub = HubProcess::start(SCOPED_AUTH);
    scoped_client_sees_only_its_grant(&hub, "c1-prod", |body| broadcast_as(&hub, "ops", body))
        .await;
}

#[tokio::test]
async fn binary_before_auth_closes_and_bad_origins_are_refused() {
    let hub = auth_hub("    static_tokens:\n      - {token: good, subject: a}\n");
    let mut ws = hub.ws().await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await
    .unwrap();
    let before = expect_close(&mut ws, 1008).await;
    assert_eq!(before[0]["code"], "AUTH_FAILED", "{before:?}");

    let hub = HubProcess::start("  websocket:\n    allowed_origins: [\"https://dash.example\"]\n");
    for (origin, want) in [
        (&b"https://dash.example"[..], "101"),
        (b"https://evil.example", "403"),
        (b"https://d\xC3\xA9sh.example", "403"),
    ] {
        let status = upgrade_status(hub.addr, Some(origin)).await;
        assert!(status.contains(want), "{status}");
    }
    assert!(upgrade_status(hub.addr, None).await.contains("101"));
}

/// The status line of an upgrade request sent with raw bytes, with `origin` if given.
async fn upgrade_status(addr: std::net::SocketAddr, origin: Option<&[u8]>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    .into_bytes();
    if let Some(o) = origin {
        req.extend_from_slice(b"Origin: ");
        req.extend_from_slice(o);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn rate_limit_drops_warns_recovers_and_closes_a_flood() {
    let hub = HubProcess::start("  rate_limit:\n    messages_per_second: 5\n    burst: 5\n");
    let mut ws = hub.ws().await;
    let mut calm = hub.ws().await;
    for _ in 0..5 {
        send(&mut ws, &json!({"type": "ping"})).await;
    }
    for _ in 0..5 {
        assert_eq!(recv(&mut ws).await["type"], "pong");
    }
    // Past the burst: one warning, and the excess is dropped (subscriptions count too).
    send(&mut ws, &json!({"type": "ping"})).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["code"], "RATE_LIMITED", "{r}");
    send(
        &mut ws,
        &json!({"type": "subscribe", "subscription": {"event_types": ["GPU_UPDATE"]}}),
    )
    .await;
    expect_silence(&mut ws, Duration::from_millis(150)).await;
    // Another client is not affected.
    send(&mut calm, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut calm).await["type"], "pong");
    // Tokens come back at the configured rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    // A flood is closed with 1008.
    for _ in 0..30 {
        send(&mut ws, &json!({"type": "ping"})).await;
    }
    let before = expect_close(&mut ws, 1008).await;
    assert!(
        before.iter().any(|m| m["code"] == "RATE_LIMITED"),
        "{before:?}"
    );
    send(&mut calm, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut calm).await["type"], "pong");
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files in `dir`;
/// returns (certificate path, key path).
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A TLS session to `addr` as `localhost`, trusting the certificate at `ca`.
async fn tls_to(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// `POST /api/v1/streaming/broadcast` over TLS; returns the status.
async fn https_broadcast(addr: std::net::SocketAddr, ca: &std::path::Path, body: String) -> u16 {
    use http_body_util::Full;
    let tls = tls_to(addr, ca).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/api/v1/streaming/broadcast")
        .header("host", "localhost")
        .body(Full::new(hyper::body::Bytes::from(body)))
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn tls_serves_wss_and_https_on_one_port_and_the_tools_speak_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let hub = HubProcess::start(&format!(
        "  tls:\n    cert_file: \"{}\"\n    key_file: \"{}\"\n",
        cert.display(),
        key.display()
    ));
    assert!(hub.banner.contains("wss://"), "{}", hub.banner);
    let port = hub.addr.port();
    let tls = tls_to(hub.addr, &cert).await.unwrap();
    let url = format!("wss://localhost:{port}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tls)
        .await
        .unwrap();
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    // Many 1 KB events at once: the TLS writer batches and flushes; all arrive, in order.
    let pad = "x".repeat(1000);
    for i in 0..300 {
        let body = format!(
            r#"{{"event_type":"GPU_UPDATE","event_id":"e{i}","payload":{{"pad":"{pad}"}}}}"#
        );
        assert_eq!(https_broadcast(hub.addr, &cert, body).await, 202);
    }
    for i in 0..300 {
        assert_eq!(recv(&mut ws).await["event_id"], format!("e{i}"));
    }
    // Plain WebSocket on the TLS port gets nowhere.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{}/ws", hub.addr)),
    )
    .await
    .expect("refused in time");
    assert!(plain.is_err());

    // `streamhub tail` and `streamhub publish` over TLS.
    let bin = env!("CARGO_BIN_EXE_streamhub");
    let mut tail = std::process::Command::new(bin)
        .args([
            "tail",
            "--url",
            &url,
            "--types",
            "ALERT_FIRED",
            "--count",
            "1",
        ])
        .arg("--ca-file")
        .arg(&cert)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(tail.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("auth_response"), "{first}");
    let second = lines.next().unwrap().unwrap();
    assert!(second.contains("subscribed"), "{second}");
    let published = std::process::Command::new(bin)
        .args(["publish", "--url", &format!("https://localhost:{port}")])
        .arg("--ca-file")
        .arg(&cert)
        .args([
            "--event",
            r#"{"event_type":"ALERT_FIRED","event_id":"over-tls"}"#,
        ])
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    let event = lines.next().unwrap().unwrap();
    assert!(event.contains("over-tls"), "{event}");
    assert!(tail.wait().unwrap().success());
}

#[tokio::test]
async fn a_jwt_expiring_on_an_open_connection_gets_auth_expired() {
    let hub =
        auth_hub("    jwt_secret: \"k\"\n    jwt_leeway_seconds: 0\n    reauth_grace_seconds: 1\n");
    let key = EncodingKey::from_secret(b"k");
    let short = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "a", "exp": at(2)}),
        &key,
    );
    let mut ws = hub.ws().await;
    send(&mut ws, &json!({"type": "auth", "token": short})).await;
    assert_eq!(recv(&mut ws).await["type"], "auth_response");
    let expired = match next_seen(&mut ws, Duration::from_secs(4)).await {
        Seen::Json(v) => v,
        other => panic!("expected AUTH_EXPIRED, saw {other:?}"),
    };
    assert_eq!(expired["code"], "AUTH_EXPIRED", "{expired}");
    // A fresh token within the grace keeps the connection.
    let fresh = sign(Algorithm::HS256, None, &claims("a"), &key);
    send(&mut ws, &json!({"type": "auth", "token": fresh})).await;
    assert_eq!(recv(&mut ws).await["type"], "auth_response");
    expect_silence(&mut ws, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn tokens_never_reach_logs_listings_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.yaml");
    let token = "sEcReT-tOkEn-4711";
    std::fs::write(
        &path,
        format!(
            "realtime_streaming:\n  host: \"127.0.0.1\"\n  port: 0\n  auth:\n    enabled: true\n    static_tokens:\n      - {{token: \"{token}\", subject: ops, roles: [admin, internal]}}\n"
        ),
    )
    .unwrap();
    let (child, line) = spawn_captured(&path, &[("STREAMHUB_LOG", "trace")]);
    let addr = loadtest::hub::banner_addr(&line).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    send(&mut ws, &json!({"type": "auth", "token": token})).await;
    assert_eq!(recv(&mut ws).await["type"], "auth_response");
    subscribe(&mut ws, &["GPU_UPDATE"], &[], &[]).await;
    // A wrong token too, on REST and on a WebSocket.
    let http = reqwest::Client::new();
    let wrong = "wRoNg-tOkEn-0815";
    for admin_only in ["api/v1/streaming/status", "debug/heap"] {
        let r = http
            .get(format!("http://{addr}/{admin_only}"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{admin_only}");
    }
    let mut seen = String::new();
    for p in ["clients", "status", "subscriptions"] {
        let r = http
            .get(format!("http://{addr}/api/v1/streaming/{p}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        seen.push_str(&r.text().await.unwrap());
    }
    seen.push_str(
        &http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(seen.contains("\"subject\":\"ops\""), "the listing is there");
    let logs = kill_and_read_logs(child);
    assert!(!logs.is_empty(), "trace logs were written");
    seen.push_str(&logs);
    for t in [token, wrong] {
        assert!(!seen.contains(t), "{t} leaked");
    }
}
