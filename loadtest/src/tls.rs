//! TLS for a run with `target.tls: true`: a self-signed certificate for 127.0.0.1 and
//! `localhost` made for the run, the hub's `tls` settings pointing at it, and the client
//! settings (rustls, ring) that trust it, shared by the WebSocket clients and the HTTP
//! publishers.

use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// What a TLS run needs.
pub struct MadeTls {
    /// The hub's `tls` settings (`cert_file`, `key_file`).
    pub hub_config: serde_norway::Value,
    /// Client settings that trust the certificate.
    pub client: Arc<rustls::ClientConfig>,
}

/// Makes a certificate and key in `dir`.
pub fn make(dir: &Path) -> anyhow::Result<MadeTls> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    let mut hub = serde_norway::Mapping::new();
    hub.insert(
        "cert_file".into(),
        cert.to_string_lossy().to_string().into(),
    );
    hub.insert("key_file".into(), key.to_string_lossy().to_string().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ck.cert.der().to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MadeTls {
        hub_config: serde_norway::Value::Mapping(hub),
        client: Arc::new(client),
    })
}
