//! The rustls server configuration: TLS 1.3 and 1.2 only, from PEM files.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no usable certificate.
    #[error("cannot read certificates from `{0}`")]
    Certificates(String),
    /// The key file holds no usable private key.
    #[error("cannot read a private key from `{0}`")]
    Key(String),
    /// rustls refused the pair.
    #[error("certificate and key do not work together: {0}")]
    Config(String),
}

/// Builds the server's TLS configuration from the configured PEM files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = files.cert.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|_| TlsError::Certificates(cert_path.clone()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificates(cert_path));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|_| TlsError::Key(files.key.display().to_string()))?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
