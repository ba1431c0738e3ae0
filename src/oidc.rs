//! OIDC: token verification on the server side.
//!
//! [`verify`] and [`jwks`] are pure; [`keystore`] fetches and caches keys. [`Authenticator`]
//! puts them together: it picks the issuer by the token's exact `iss`, the key by `(issuer,
//! kid)` from that issuer's JWKS only, and verifies at the clock's time.

pub mod jwks;
pub mod keystore;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::ProviderConfig;
use crate::identity::Identity;
pub use keystore::KeyStore;
pub use verify::{UnverifiedToken, VerifyError};

/// Verifies bearer tokens from any configured issuer.
pub struct Authenticator {
    providers: HashMap<String, ProviderConfig>,
    keys: Arc<KeyStore>,
    clock: SharedClock,
}

impl Authenticator {
    /// An authenticator over `providers`, with keys from `keys`.
    pub fn new(providers: &[ProviderConfig], keys: Arc<KeyStore>, clock: SharedClock) -> Self {
        Self {
            providers: providers
                .iter()
                .map(|p| (p.issuer.clone(), p.clone()))
                .collect(),
            keys,
            clock,
        }
    }

    /// Verifies `token` and returns who it names.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, VerifyError> {
        let unverified = UnverifiedToken::parse(token)?;
        let issuer = unverified
            .issuer_unverified()
            .ok_or_else(|| VerifyError::Claims("claim `iss` must be a string".into()))?;
        // SECURITY: byte-for-byte lookup; no normalisation of trailing slashes or case.
        let provider = self.providers.get(issuer).ok_or(VerifyError::Issuer)?;
        let key = self
            .keys
            .key_for(
                &provider.issuer,
                unverified.kid_unverified(),
                unverified.alg()?,
            )
            .await?;
        verify::verify(&unverified, &key, provider, self.clock.unix())
    }

    /// The key caches, for readiness.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }
}
