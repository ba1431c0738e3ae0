//! The rustls server configuration: TLS 1.3 and 1.2 only, from PEM files, with a certificate
//! that SIGHUP can replace without a restart.
//!
//! Every handshake asks [`CertResolver`] for the certificate in force. [`CertResolver::reload`]
//! reads `[server] tls_cert` and `tls_key` again; a pair that cannot be read, parsed, or whose
//! key does not belong to the certificate is refused and the certificate in force stays. Both
//! outcomes are audited (`tls.reloaded`, `tls.reload_failed`).
//!
//! INVARIANT: as with the policy, `tls.reloaded` (naming the new certificate's SHA-256
//! fingerprint) is durable before the new certificate is served; if it cannot be written, the
//! old one stays. Connections already open keep the certificate they were made with.

mod validity;

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::broker::{Broker, BrokerError, CertSummary, TlsReload};
use crate::config::TlsFiles;
pub use validity::ValidityError;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The certificate file holds no usable certificate.
    #[error("cannot read certificates from `{0}`")]
    Certificates(String),
    /// The key file holds no usable private key.
    #[error("cannot read a private key from `{0}`")]
    Key(String),
    /// The private key is not the certificate's.
    #[error("the private key in `{key}` does not belong to the certificate in `{cert}`")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The certificate's validity could not be read.
    #[error("`{path}`: {source}")]
    Validity {
        /// The certificate file.
        path: String,
        /// What was wrong.
        source: ValidityError,
    },
    /// rustls refused the pair.
    #[error("certificate and key do not work together: {0}")]
    Config(String),
}

/// The server's TLS: the rustls configuration every connection uses, and the resolver inside it
/// that SIGHUP reloads.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Handed to the listener.
    pub config: Arc<ServerConfig>,
    /// The certificate in force.
    pub certs: Arc<CertResolver>,
}

/// Builds the server's TLS configuration from the configured PEM files.
///
/// # Errors
///
/// [`TlsError`] when the files cannot be read or parsed, or the key is not the certificate's.
pub fn server_tls(files: &TlsFiles) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let loaded = load_with(files, &provider)?;
    let certs = Arc::new(CertResolver {
        files: files.clone(),
        provider: Arc::clone(&provider),
        current: RwLock::new(loaded),
    });
    let resolver: Arc<dyn ResolvesServerCert> = Arc::clone(&certs) as _;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        certs,
    })
}

/// The process's crypto provider (aws-lc-rs, installed by `cli::main`), or aws-lc-rs's default
/// when none is installed (tests that build a server in process).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A certificate and key ready to serve, and what the audit says about them.
#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    summary: CertSummary,
}

/// Reads, parses and checks the pair: certificates, key, key against the leaf, validity.
fn load_with(files: &TlsFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Certificates(cert_path.clone()))?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Certificates(cert_path));
    };
    let not_after = validity::not_after(leaf).map_err(|source| TlsError::Validity {
        path: cert_path.clone(),
        source,
    })?;
    let summary = CertSummary {
        sha256_fingerprint: fingerprint(leaf),
        not_after,
    };
    // SECURITY: the key's bytes never reach an error or a log; rustls's errors name no key
    // material, and ours only the file.
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Key(key_path.clone()))?;
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path,
            key: key_path.clone(),
        },
        rustls::Error::General(_) => TlsError::Key(key_path.clone()),
        other => TlsError::Config(other.to_string()),
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        summary,
    })
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })
}

/// Lowercase hex SHA-256 of the certificate's DER.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref()).as_ref())
}

/// Hands every handshake the certificate in force; [`CertResolver::reload`] replaces it.
#[derive(Debug)]
pub struct CertResolver {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

// === impl CertResolver ===

impl CertResolver {
    /// The certificate in force.
    pub fn current(&self) -> CertSummary {
        self.read().summary.clone()
    }

    /// Reads the configured files again; audits, then serves the new pair if it is usable.
    ///
    /// # Errors
    ///
    /// [`BrokerError::AuditUnavailable`] when the record cannot be written; the certificate in
    /// force is then unchanged.
    pub async fn reload(&self, broker: &Broker) -> Result<TlsReload, BrokerError> {
        let previous = self.current();
        match load_with(&self.files, &self.provider) {
            Ok(loaded) => {
                let reload = TlsReload::Applied {
                    certificate: loaded.summary.clone(),
                    previous,
                };
                broker.record_tls_reload(&self.files, &reload).await?;
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
                Ok(reload)
            }
            Err(e) => {
                let reload = TlsReload::Rejected {
                    reason: e.to_string(),
                    current: previous,
                };
                broker.record_tls_reload(&self.files, &reload).await?;
                Ok(reload)
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use std::path::Path;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let (_, cert, key) = crate::dev::make_tls().unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
        load_with(files, &provider())
    }

    #[test]
    fn a_good_pair_loads_with_its_fingerprint_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "a");
        let loaded = load(&files).unwrap();
        let pem = std::fs::read(&files.cert).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(loaded.summary.sha256_fingerprint, fingerprint(&der));
        assert_eq!(loaded.summary.sha256_fingerprint.len(), 64);
        assert!(loaded.summary.not_after > DateTime::<Utc>::UNIX_EPOCH);
        assert!(server_tls(&files).is_ok());
    }

    #[test]
    fn a_bad_pair_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a");
        let b = write_pair(dir.path(), "b");

        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = load(&mismatched).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not belong"), "{err}");

        let missing = TlsFiles {
            cert: a.cert.clone(),
            key: dir.path().join("nope.pem"),
        };
        assert!(matches!(load(&missing).unwrap_err(), TlsError::Read { .. }));

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = load(&TlsFiles {
            cert: garbage.clone(),
            key: a.key.clone(),
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::Certificates(_)), "{err}");
        let err = load(&TlsFiles {
            cert: a.cert.clone(),
            key: garbage,
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::Key(_)), "{err}");
        // The key's text never appears in a reason.
        let key_text = std::fs::read_to_string(&b.key).unwrap();
        let body = key_text.lines().nth(1).unwrap();
        assert!(!load(&mismatched).unwrap_err().to_string().contains(body));
    }
}
