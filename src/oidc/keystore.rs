//! Fetches and caches each issuer's signing keys.
//!
//! Discovery and JWKS are fetched at start-up and refreshed in the background; the last good
//! key set is kept through an IdP outage. A token with an unknown `kid` triggers at most one
//! on-demand refresh per issuer per [`ON_DEMAND_COOLDOWN`], single-flight, so a flood of made-up
//! `kid`s cannot turn the broker into a JWKS hammer. The JWKS URL comes only from the configured
//! issuer's discovery document, never from a token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::jwks::{JwtKey, parse_jwks};
use super::verify::{Alg, VerifyError};
use crate::config::{ProviderConfig, is_loopback_host};

/// Least time between two refreshes triggered by unknown `kid`s, per issuer.
pub const ON_DEMAND_COOLDOWN: Duration = Duration::from_secs(30);
/// How often keys are refreshed in the background once loaded.
pub const BACKGROUND_REFRESH: Duration = Duration::from_secs(15 * 60);
/// How often an issuer whose keys never loaded is retried.
pub const RETRY_UNLOADED: Duration = Duration::from_secs(5);
/// Largest discovery or JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Time allowed for one discovery or JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// A CA file could not be used.
    #[error("cannot use CA file `{path}`: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The discovery document is wrong.
    #[error("discovery for `{issuer}`: {reason}")]
    Discovery {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// The JWKS could not be fetched or read.
    #[error("key set for `{issuer}`: {reason}")]
    Jwks {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
}

/// The key caches of every configured issuer.
pub struct KeyStore {
    issuers: HashMap<String, IssuerKeys>,
}

struct IssuerKeys {
    issuer: String,
    http: reqwest::Client,
    state: RwLock<KeyState>,
    /// Held while fetching, so concurrent misses make one request.
    refresh: Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    keys: Arc<Vec<JwtKey>>,
    jwks_uri: Option<Url>,
    loaded: bool,
    last_on_demand: Option<Instant>,
    last_refresh: Option<Instant>,
}

// === impl KeyStore ===

impl KeyStore {
    /// Prepares (but does not fetch) the caches of `providers`.
    pub fn new(providers: &[ProviderConfig]) -> Result<Self, KeyStoreError> {
        let mut issuers = HashMap::new();
        for p in providers {
            issuers.insert(
                p.issuer.clone(),
                IssuerKeys {
                    issuer: p.issuer.clone(),
                    http: http_client(p)?,
                    state: RwLock::new(KeyState::default()),
                    refresh: Mutex::new(()),
                },
            );
        }
        Ok(Self { issuers })
    }

    /// Fetches every issuer's keys once; failures are logged and retried in the background.
    pub async fn load_all(&self) {
        for i in self.issuers.values() {
            if let Err(e) = i.refresh().await {
                tracing::warn!(oidc.issuer = %i.issuer, error = %e, "could not load the issuer's keys; will retry");
            }
        }
    }

    /// Whether every issuer has a key set.
    pub fn is_ready(&self) -> bool {
        self.issuers.values().all(|i| i.read().loaded)
    }

    /// Refreshes in the background until `shutdown` resolves: unloaded issuers every few
    /// seconds, loaded ones every [`BACKGROUND_REFRESH`].
    pub async fn run_refresher(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(RETRY_UNLOADED);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            for i in self.issuers.values() {
                let due = {
                    let s = i.read();
                    !s.loaded
                        || s.last_refresh
                            .is_none_or(|t| t.elapsed() >= BACKGROUND_REFRESH)
                };
                if due && let Err(e) = i.refresh().await {
                    tracing::warn!(oidc.issuer = %i.issuer, error = %e, "key refresh failed; keeping the last good keys");
                }
            }
        }
    }

    /// The key of `issuer` to verify a token with `kid` and `alg`, refreshing once (within the
    /// cooldown) if the `kid` is unknown.
    pub async fn key_for(
        &self,
        issuer: &str,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<JwtKey, VerifyError> {
        let i = self.issuers.get(issuer).ok_or(VerifyError::Issuer)?;
        if let Some(k) = i.find(kid, alg) {
            return Ok(k);
        }
        i.refresh_on_demand(kid, alg).await;
        match i.find(kid, alg) {
            Some(k) => Ok(k),
            None if !i.read().loaded => Err(VerifyError::KeysUnavailable),
            None => Err(VerifyError::KeyUnknown),
        }
    }
}

// === impl IssuerKeys ===

impl IssuerKeys {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// With a `kid`, the key with that id; without one, the only key that fits `alg`.
    fn find(&self, kid: Option<&str>, alg: Alg) -> Option<JwtKey> {
        let keys = Arc::clone(&self.read().keys);
        match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            None => {
                let mut fitting = keys.iter().filter(|k| alg.fits(k.family));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    async fn refresh_on_demand(&self, kid: Option<&str>, alg: Alg) {
        let _guard = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        if self.find(kid, alg).is_some() {
            return;
        }
        {
            let mut s = self.write();
            if s.last_on_demand
                .is_some_and(|t| t.elapsed() < ON_DEMAND_COOLDOWN)
            {
                return;
            }
            s.last_on_demand = Some(Instant::now());
        }
        if let Err(e) = self.fetch_and_store().await {
            crate::metrics::jwks_refresh(&self.issuer, false);
            tracing::warn!(oidc.issuer = %self.issuer, error = %e, "on-demand key refresh failed");
        } else {
            crate::metrics::jwks_refresh(&self.issuer, true);
        }
    }

    async fn refresh(&self) -> Result<(), KeyStoreError> {
        let _guard = self.refresh.lock().await;
        let fetched = self.fetch_and_store().await;
        crate::metrics::jwks_refresh(&self.issuer, fetched.is_ok());
        fetched
    }

    /// Fetches discovery (when needed) and the JWKS. Caller holds `refresh`.
    async fn fetch_and_store(&self) -> Result<(), KeyStoreError> {
        self.write().last_refresh = Some(Instant::now());
        let cached = self.read().jwks_uri.clone();
        let jwks_uri = match cached {
            Some(u) => u,
            None => {
                let u = self.discover().await?;
                self.write().jwks_uri = Some(u.clone());
                u
            }
        };
        let jwks_err = |reason: String| KeyStoreError::Jwks {
            issuer: self.issuer.clone(),
            reason,
        };
        let body = match fetch(&self.http, &jwks_uri).await {
            Ok(b) => b,
            Err(reason) => {
                // The IdP may have moved its JWKS; rediscover next time.
                self.write().jwks_uri = None;
                return Err(jwks_err(reason));
            }
        };
        // A refused document (not a key set, or two keys under one `kid`) changes nothing: the
        // keys loaded last stay in use, and the caller logs the reason with the issuer.
        let keys =
            parse_jwks(&body).map_err(|e| jwks_err(format!("{e}; keeping the previous set")))?;
        if keys.is_empty() {
            return Err(jwks_err(
                "no usable signature key; keeping the previous set".into(),
            ));
        }
        tracing::info!(oidc.issuer = %self.issuer, oidc.keys = keys.len(), "loaded the issuer's signing keys");
        let mut s = self.write();
        s.keys = Arc::new(keys);
        s.loaded = true;
        Ok(())
    }

    async fn discover(&self) -> Result<Url, KeyStoreError> {
        let err = |reason: String| KeyStoreError::Discovery {
            issuer: self.issuer.clone(),
            reason,
        };
        let url = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        ))
        .map_err(|e| err(e.to_string()))?;
        let body = fetch(&self.http, &url).await.map_err(err)?;
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let d: Discovery = serde_json::from_slice(&body)
            .map_err(|_| err("not a discovery document with `issuer` and `jwks_uri`".into()))?;
        // SECURITY: OIDC Discovery §4.3: the document must name exactly the issuer we trust.
        if d.issuer != self.issuer {
            return Err(err(format!("document names issuer `{}`", d.issuer)));
        }
        let jwks = Url::parse(&d.jwks_uri).map_err(|_| err("`jwks_uri` is not a URL".into()))?;
        if !jwks_uri_allowed(&self.issuer, &jwks) {
            return Err(err("`jwks_uri` must use https".into()));
        }
        Ok(jwks)
    }
}

/// Whether keys may be fetched from `jwks` for `issuer`.
///
/// SECURITY: https always; plain http only on a loopback address and only for an issuer that is
/// itself plain http (which the configuration allows only with `dangerous_plain_http` on a
/// loopback address). An https issuer's discovery document must not downgrade key fetches to a
/// plain-http port on this machine.
fn jwks_uri_allowed(issuer: &str, jwks: &Url) -> bool {
    match jwks.scheme() {
        "https" => true,
        "http" => issuer.starts_with("http://") && is_loopback_host(jwks),
        _ => false,
    }
}

async fn fetch(http: &reqwest::Client, url: &Url) -> Result<Vec<u8>, String> {
    let mut resp = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request failed: {}", without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("read failed: {}", without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err("document too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    s
}

fn http_client(p: &ProviderConfig) -> Result<reqwest::Client, KeyStoreError> {
    let mut b = reqwest::Client::builder()
        // SECURITY: never follow redirects to wherever the network says (SSRF, poisoning).
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &p.ca_file {
        let err = |reason: String| KeyStoreError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| KeyStoreError::CaFile {
        path: "(http client)".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use axum::routing::get;

    use super::*;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    fn jwks(kids: &[&str]) -> String {
        let keys: Vec<_> = kids
            .iter()
            .map(|kid| serde_json::json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": RSA_N, "e": "AQAB"}))
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// A loopback issuer serving discovery and whatever JWKS `served` holds.
    async fn issuer(served: Arc<StdMutex<String>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery =
            serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let d = discovery.clone();
                    async move { d }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let body = served.lock().unwrap().clone();
                    async move { body }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    #[test]
    fn an_https_issuer_never_fetches_keys_over_plain_http() {
        let url = |u: &str| Url::parse(u).unwrap();
        let https = "https://idp.example.com";
        assert!(jwks_uri_allowed(
            https,
            &url("https://idp.example.com/jwks")
        ));
        assert!(!jwks_uri_allowed(https, &url("http://127.0.0.1:8080/jwks")));
        assert!(!jwks_uri_allowed(https, &url("http://[::1]:8080/jwks")));
        assert!(!jwks_uri_allowed(https, &url("ftp://idp.example.com/jwks")));
        let plain = "http://127.0.0.1:8444";
        assert!(jwks_uri_allowed(plain, &url("http://127.0.0.1:8444/jwks")));
        assert!(!jwks_uri_allowed(
            plain,
            &url("http://idp.example.com/jwks")
        ));
    }

    #[tokio::test]
    async fn a_key_set_with_a_duplicate_kid_is_refused_and_the_last_good_keys_stay() {
        let served = Arc::new(StdMutex::new(jwks(&["k1"])));
        let issuer = issuer(Arc::clone(&served)).await;
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:9000\"\ndangerous_plain_http = true\n\
             [store]\nurl = \"sqlite://x.db\"\n\
             [[oidc.provider]]\nissuer = \"{issuer}\"\naudiences = [\"a\"]\ncli_client_id = \"a\"\n\
             dangerous_plain_http = true\n"
        );
        let config =
            crate::config::Config::from_toml(&text, std::path::Path::new("/"), &Vec::new())
                .unwrap();
        let keys = KeyStore::new(&config.oidc.providers).unwrap();
        keys.load_all().await;
        assert!(keys.key_for(&issuer, Some("k1"), Alg::Rs256).await.is_ok());

        // The IdP now serves `k2` twice: the refresh, and the one an unknown `k2` triggers, are
        // refused.
        *served.lock().unwrap() = jwks(&["k2", "k2"]);
        let i = keys.issuers.get(&issuer).unwrap();
        let err = i.refresh().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "key set for `{issuer}`: two signature keys share the `kid` `k2`; the whole key \
                 set is refused; keeping the previous set"
            )
        );
        assert!(matches!(
            keys.key_for(&issuer, Some("k2"), Alg::Rs256).await,
            Err(VerifyError::KeyUnknown)
        ));
        assert!(keys.key_for(&issuer, Some("k1"), Alg::Rs256).await.is_ok());
    }
}
