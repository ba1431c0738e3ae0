//! The OIDC login flows, with the `openidconnect` crate over our reqwest client.
//!
//! - [`code_flow`]: authorization code + PKCE S256, `state` and `nonce` checked, redirect to a
//!   listener on 127.0.0.1 and an ephemeral port that accepts exactly one callback;
//! - [`device_flow`]: RFC 8628, polling at the server's interval (5 s when none is given),
//!   slowing down on `slow_down`, giving up when the code expires;
//! - [`refresh`]: the refresh-token grant (refresh tokens rotate; the new one must be stored).
//!
//! Every ID token is verified here too (issuer, audience, signature from the issuer's JWKS,
//! expiry, nonce), although the broker verifies it again on every request.

use std::borrow::Cow;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClient, CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl,
    IssuerUrl, Nonce, NonceVerifier, OAuth2TokenResponse as _, PkceCodeChallenge, ProviderMetadata,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::ClientError;
use super::broker::{IDP, transport_error};

/// What a successful login or refresh yields.
pub struct Tokens {
    /// The verified ID token (what the CLI sends to the broker).
    pub id_token: String,
    /// Its `exp`, Unix seconds.
    pub expires_at: i64,
    /// A refresh token, if the IdP issued one.
    pub refresh_token: Option<String>,
    /// The `sub` claim.
    pub subject: String,
}

impl std::fmt::Debug for Tokens {
    // SECURITY: tokens are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// An issuer and the public client the CLI logs in as.
#[derive(Debug, Clone)]
pub struct Provider {
    /// HTTP client (no redirects, timeouts, the trusted CAs).
    pub http: reqwest::Client,
    /// The issuer URL, exactly as the broker names it.
    pub issuer: String,
    /// The CLI's client id.
    pub client_id: String,
}

/// How the code flow shows the authorization URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    /// Try to open the system browser (and print the URL too).
    Open,
    /// Only print the URL.
    Print,
}

/// Authorization code flow with PKCE S256 and a loopback redirect. Prints the URL on stdout
/// (the one line a person or a test needs) and waits for the single callback.
pub async fn code_flow(p: &Provider, browser: Browser) -> Result<Tokens, ClientError> {
    let meta = discover(p).await?;
    // SECURITY: 127.0.0.1 (not `localhost`, which may resolve elsewhere), a port the OS picks.
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| ClientError::Login(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| ClientError::Login(e.to_string()))?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let client = CoreClient::from_provider_metadata(meta, ClientId::new(p.client_id.clone()), None)
        .set_redirect_uri(
            RedirectUrl::new(redirect).map_err(|e| ClientError::Login(e.to_string()))?,
        );
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        // A refresh token is issued only with offline_access AND an explicit consent prompt.
        .add_prompt(CoreAuthPrompt::Consent);
    for s in SCOPES {
        request = request.add_scope(Scope::new((*s).to_owned()));
    }
    let (url, state, nonce) = request.url();

    println!("Open this URL in a browser to log in:\n{url}");
    if browser == Browser::Open {
        open_browser(url.as_str());
    }
    let callback = tokio::time::timeout(LOGIN_TIMEOUT, one_callback(listener))
        .await
        .map_err(|_| ClientError::Login("no answer from the browser within 5 minutes".into()))??;
    // SECURITY: `state` binds the callback to this login (CSRF); RFC 9207's `iss` (if sent)
    // must name our issuer (mix-up attacks).
    if let Some(err) = callback.param("error") {
        return Err(ClientError::Login(format!(
            "the identity provider answered `{}`",
            super::sanitize(err)
        )));
    }
    if callback.param("state") != Some(state.secret().as_str()) {
        return Err(ClientError::Login(
            "the callback's `state` does not match this login".into(),
        ));
    }
    if let Some(iss) = callback.param("iss")
        && iss != p.issuer
    {
        return Err(ClientError::Login(
            "the callback names another issuer".into(),
        ));
    }
    let code = callback
        .param("code")
        .ok_or_else(|| ClientError::Login("the callback carries no code".into()))?;
    let fetch = |r| oidc_http(&p.http, r);
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| ClientError::Login(e.to_string()))?
        .set_pkce_verifier(verifier)
        .request_async(&fetch)
        .await
        .map_err(|e| token_error(p, &e))?;
    tokens(&client, &response, &nonce)
}

/// Device authorization grant. Prints the verification URI and the user code on stdout.
pub async fn device_flow(p: &Provider) -> Result<Tokens, ClientError> {
    let meta = discover(p).await?;
    let device_url = meta
        .additional_metadata()
        .device_authorization_endpoint
        .clone()
        .ok_or_else(|| {
            ClientError::Login("the identity provider does not offer the device flow".into())
        })?;
    let client = CoreClient::from_provider_metadata(meta, ClientId::new(p.client_id.clone()), None)
        .set_device_authorization_url(device_url);
    let fetch = |r| oidc_http(&p.http, r);
    let mut request = client.exchange_device_code();
    for s in SCOPES {
        request = request.add_scope(Scope::new((*s).to_owned()));
    }
    let details: CoreDeviceAuthorizationResponse = request
        .request_async(&fetch)
        .await
        .map_err(|e| token_error(p, &e))?;
    println!(
        "To log in, open {} and enter the code: {}",
        super::sanitize(details.verification_uri().as_str()),
        super::sanitize(details.user_code().secret())
    );
    let poll_override = test_poll_interval();
    let sleep = move |server_interval: Duration| {
        tokio::time::sleep(poll_override.unwrap_or(server_interval))
    };
    // The library waits `interval` (5 s when the server gives none: DEVICE_DEFAULT_INTERVAL),
    // adds 5 s on `slow_down`, and stops with `expired_token` at `expires_in`.
    let response = client
        .exchange_device_access_token(&details)
        .map_err(|e| ClientError::Login(e.to_string()))?
        .request_async(&fetch, sleep, None)
        .await
        .map_err(|e| token_error(p, &e))?;
    tokens(&client, &response, |_: Option<&Nonce>| Ok(()))
}

/// Exchanges a refresh token for fresh tokens; the IdP's refusal means a new login is needed.
pub async fn refresh(p: &Provider, refresh_token: &str) -> Result<Tokens, ClientError> {
    let meta = discover(p).await?;
    let client = CoreClient::from_provider_metadata(meta, ClientId::new(p.client_id.clone()), None);
    let fetch = |r| oidc_http(&p.http, r);
    let token = RefreshToken::new(refresh_token.to_owned());
    let response = client
        .exchange_refresh_token(&token)
        .map_err(|e| ClientError::Login(e.to_string()))?
        .request_async(&fetch)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(_) => ClientError::LoginNeeded(
                "your login has expired (the identity provider refused the refresh token)".into(),
            ),
            other => token_error(p, &other),
        })?;
    // OIDC Core 12.2: a refreshed ID token carries no new nonce.
    tokens(&client, &response, |_: Option<&Nonce>| Ok(()))
}

/// RFC 8628 §3.5: the poll interval when the device authorization response has none.
/// (The `oauth2` crate applies the same default; a unit test pins that.)
pub const DEVICE_DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// TEST ONLY: replaces the device flow's poll interval (milliseconds). Integration tests set it
/// so they need not wait 5 s per poll; nothing else should.
pub const TEST_DEVICE_POLL_ENV: &str = "LATCHKEY_TEST_DEVICE_POLL_MS";

/// Scopes asked for (`openid` is always added): the claims the broker reads, and a refresh token.
pub const SCOPES: &[&str] = &["email", "groups", "department", "offline_access"];

// === discovery and tokens ===

#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

impl AdditionalProviderMetadata for DeviceEndpoint {}

type Metadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

async fn discover(p: &Provider) -> Result<Metadata, ClientError> {
    let issuer = IssuerUrl::new(p.issuer.clone())
        .map_err(|e| ClientError::Login(format!("bad issuer URL: {e}")))?;
    let fetch = |r| oidc_http(&p.http, r);
    // discover_async checks that the document names exactly this issuer and fetches the JWKS.
    Metadata::discover_async(issuer, &fetch)
        .await
        .map_err(|e| match e {
            openidconnect::DiscoveryError::Request(r) => transport_error(IDP, &p.issuer, &r),
            other => ClientError::Login(format!(
                "cannot read the identity provider's discovery document: {}",
                super::sanitize(&error_chain(&other))
            )),
        })
}

fn tokens<HA, HD, HI, HR, HT, HU, N>(
    client: &CoreClient<HA, HD, HI, HR, HT, HU>,
    response: &CoreTokenResponse,
    nonce: N,
) -> Result<Tokens, ClientError>
where
    HA: openidconnect::EndpointState,
    HD: openidconnect::EndpointState,
    HI: openidconnect::EndpointState,
    HR: openidconnect::EndpointState,
    HT: openidconnect::EndpointState,
    HU: openidconnect::EndpointState,
    N: NonceVerifier,
{
    let id_token = response
        .id_token()
        .ok_or_else(|| ClientError::Login("the identity provider sent no ID token".into()))?;
    // SECURITY: asymmetric algorithms only; never `none` or HMAC.
    let verifier = client.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
    let claims = id_token
        .claims(&verifier, nonce)
        .map_err(|e| ClientError::Login(format!("the ID token is not valid: {e}")))?;
    Ok(Tokens {
        id_token: id_token.to_string(),
        expires_at: claims.expiration().timestamp(),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        subject: claims.subject().as_str().to_owned(),
    })
}

const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 7] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

fn token_error<RE, T>(p: &Provider, e: &RequestTokenError<RE, T>) -> ClientError
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => ClientError::Login(format!(
            "the identity provider answered: {}",
            super::sanitize(&r.to_string())
        )),
        RequestTokenError::Request(r) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(r);
            while let Some(s) = source {
                if let Some(re) = s.downcast_ref::<reqwest::Error>() {
                    return transport_error(IDP, &p.issuer, re);
                }
                source = s.source();
            }
            ClientError::Login(super::sanitize(&error_chain(r)))
        }
        other => ClientError::Login(super::sanitize(&error_chain(other))),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The adapter from openidconnect's HTTP requests to our reqwest 0.13 client
/// (DEPENDENCIES.md §4). The client does not follow redirects.
async fn oidc_http(
    client: &reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let resp = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let mut out = openidconnect::http::Response::new(resp.bytes().await?.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

fn test_poll_interval() -> Option<Duration> {
    std::env::var(TEST_DEVICE_POLL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

// === the loopback callback ===

/// The query of the one callback request.
struct Callback {
    params: Vec<(String, String)>,
}

impl Callback {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serves the loopback listener until the first request for `/callback`, answers it, and
/// closes the listener (so a second callback finds nothing listening). Other paths (a browser's
/// `/favicon.ico`) get a 404.
async fn one_callback(listener: TcpListener) -> Result<Callback, ClientError> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| ClientError::Login(format!("loopback listener failed: {e}")))?;
        let Some(target) = read_request_target(&mut stream).await else {
            continue;
        };
        let Some(query) = target.strip_prefix("/callback") else {
            let _ = stream.write_all(NOT_FOUND.as_bytes()).await;
            continue;
        };
        let query = query.strip_prefix('?').unwrap_or_default();
        let params = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let _ = stream.write_all(DONE.as_bytes()).await;
        let _ = stream.shutdown().await;
        drop(listener);
        return Ok(Callback { params });
    }
}

/// Reads one HTTP/1 request head (at most 8 KiB) and returns the target of a `GET`.
async fn read_request_target(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 || buf.len() + n > 8192 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Some(Cow::from(target).into_owned()),
        _ => None,
    }
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    // Best effort: the URL is printed anyway.
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
const DONE: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nConnection: close\r\n\r\n\
<!doctype html><title>latchkey</title><p>latchkey: the login is complete; you can close this tab.</p>";
const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_flow_defaults_to_five_seconds() {
        let r: CoreDeviceAuthorizationResponse = serde_json::from_str(
            r#"{"device_code":"d","user_code":"u","verification_uri":"https://idp/device","expires_in":600}"#,
        )
        .unwrap();
        assert_eq!(r.interval(), DEVICE_DEFAULT_INTERVAL);
    }
}
