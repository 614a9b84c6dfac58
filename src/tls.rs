//! TLS on the service port: with `tls.cert_file` and `tls.key_file` set, every connection is
//! accepted with rustls (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`) before HTTP, so
//! `wss://` and `https://` share the port. The certificate and key are read once at start-up;
//! a file that cannot be used stops start-up naming the key.
//!
//! Owns the TLS acceptor, built once at start-up.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The acceptor `cfg` asks for; `None` when TLS is off.
pub(crate) fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
    let Some((cert_file, key_file)) = cfg.files() else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("realtime_streaming.tls.cert_file: {cert_file:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "realtime_streaming.tls.cert_file: {cert_file:?} holds no certificate"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("realtime_streaming.tls.key_file: {key_file:?}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("realtime_streaming.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("realtime_streaming.tls: certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
