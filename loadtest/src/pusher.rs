//! The Pusher protocol's HTTP events API, for peers that speak it (sockudo): an event is
//! `{"name":..,"channel":..,"data":"<the body as an escaped string>"}`, posted with the signed
//! query string of Pusher's HTTP API (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
//! `auth_signature` = HMAC-SHA256 of `POST\n<path>\n<sorted query>` under the app secret).
//!
//! Clients subscribe with `pusher:subscribe` in the scenario's `on_connect`; what they receive
//! carries the body inside the escaped `data` string, so the harness looks for `\"sent_ns\"`.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;
use std::fmt::Write;

/// A Pusher app and the channel and event name every publish uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pusher {
    /// The app's key (`auth_key`).
    pub key: String,
    /// The app's secret, which signs each request.
    pub secret: String,
    /// The channel events are published to.
    pub channel: String,
    /// The event name.
    pub event: String,
}

impl Pusher {
    /// The request for one event whose data is `body`: the signed URL and the JSON body.
    pub fn request(&self, url: &str, body: &str) -> anyhow::Result<(String, String)> {
        let json = serde_json::json!({"name": self.event, "channel": self.channel, "data": body})
            .to_string();
        let path = url_path(url)?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={}",
            self.key,
            hex(&Md5::digest(json.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())?;
        mac.update(format!("POST\n{path}\n{query}").as_bytes());
        let signature = hex(&mac.finalize().into_bytes());
        Ok((format!("{url}?{query}&auth_signature={signature}"), json))
    }
}

/// The path of an `http://host:port/path` URL.
fn url_path(url: &str) -> anyhow::Result<&str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("a Pusher publish_url must be http://host:port/path"))?;
    Ok(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_signed_as_pusher_documents() {
        // Pusher's documented example: key 278d425bdf160c739803, secret
        // 7ad3773142a6692b25b8, body below, timestamp 1353088179.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"7ad3773142a6692b25b8").unwrap();
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(
            hex(&Md5::digest(body.as_bytes())),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        mac.update(b"POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn the_body_travels_as_an_escaped_string() {
        let p = Pusher {
            key: "k".into(),
            secret: "s".into(),
            channel: "gpu".into(),
            event: "GPU_UPDATE".into(),
        };
        let (url, json) = p
            .request(
                "http://127.0.0.1:6001/apps/app-id/events",
                r#"{"sent_ns":5}"#,
            )
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:6001/apps/app-id/events?auth_key=k&"));
        assert!(url.contains("&auth_signature="));
        assert!(json.contains(r#""data":"{\"sent_ns\":5}""#), "{json}");
    }
}
