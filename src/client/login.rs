//! The OIDC login flows, with the `openidconnect` crate over our reqwest client.
//!
//! - [`code_flow`]: authorization code + PKCE S256, `state` and `nonce` checked, redirect to a
//!   listener on 127.0.0.1 and an ephemeral port that accepts exactly one callback: the first
//!   request for `/callback` with `Host: 127.0.0.1:PORT` and this login's `state` (others are
//!   answered with an error and the listener keeps waiting);
//! - [`device_flow`]: RFC 8628, polling at the server's interval (5 s when none is given),
//!   slowing down on `slow_down`, giving up when the code expires;
//! - [`refresh`]: the refresh-token grant (refresh tokens rotate; the new one must be stored).
//!
//! The scopes asked for come from the broker (the provider's `cli_scopes`) or, by default, from
//! [`DEFAULT_SCOPES`] as far as the issuer's discovery lists them: see [`scopes`].
//!
//! Every ID token is verified here too (issuer, audience, signature from the issuer's JWKS,
//! expiry, nonce), although the broker verifies it again on every request.

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
    /// The scopes the broker configured for this issuer (besides `openid`); `None` for the
    /// default (see [`scopes`]).
    pub scopes: Option<Vec<String>>,
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
    let scopes = scopes(
        p.scopes.as_deref(),
        meta.scopes_supported().map(Vec::as_slice),
    );
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
    for s in scopes {
        request = request.add_scope(s);
    }
    let (url, state, nonce) = request.url();

    println!("Open this URL in a browser to log in:\n{url}");
    if browser == Browser::Open {
        open_browser(url.as_str());
    }
    // SECURITY: `state` binds the callback to this login (CSRF): the listener answers only the
    // request that carries it. RFC 9207's `iss` (if sent) must name our issuer (mix-up attacks).
    let callback =
        tokio::time::timeout(LOGIN_TIMEOUT, one_callback(listener, port, state.secret()))
            .await
            .map_err(|_| {
                ClientError::Login("no answer from the browser within 5 minutes".into())
            })??;
    if let Some(err) = callback.param("error") {
        return Err(ClientError::Login(format!(
            "the identity provider answered `{}`",
            super::sanitize(err)
        )));
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
    let meta_scopes = meta.scopes_supported().cloned();
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
    for s in scopes(p.scopes.as_deref(), meta_scopes.as_deref()) {
        request = request.add_scope(s);
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

/// The scopes asked for when the broker configures none, each only where the issuer's discovery
/// lists it in `scopes_supported`: the standard claims, groups, and a refresh token.
pub const DEFAULT_SCOPES: &[&str] = &["openid", "email", "profile", "groups", "offline_access"];

/// The scopes of OIDC Core itself (§5.4, §11), asked for by default from an issuer whose
/// discovery has no `scopes_supported` (it is only RECOMMENDED).
const STANDARD_SCOPES: &[&str] = &["openid", "email", "profile", "offline_access"];

/// The scopes a login asks for, besides `openid`, which the flows always send first.
///
/// `configured` (the provider's `cli_scopes`, from the broker) is taken exactly; without it,
/// each of [`DEFAULT_SCOPES`] that `supported` (the discovery's `scopes_supported`) lists, or the
/// OIDC standard ones when the issuer lists none. Duplicates and `openid` are dropped.
pub fn scopes(configured: Option<&[String]>, supported: Option<&[Scope]>) -> Vec<Scope> {
    let wanted: Vec<&str> = match (configured, supported) {
        (Some(list), _) => list.iter().map(String::as_str).collect(),
        (None, Some(supported)) => DEFAULT_SCOPES
            .iter()
            .copied()
            .filter(|s| supported.iter().any(|x| x.as_str() == *s))
            .collect(),
        (None, None) => STANDARD_SCOPES.to_vec(),
    };
    let mut out: Vec<Scope> = Vec::with_capacity(wanted.len());
    for s in wanted {
        if s != "openid" && !out.iter().any(|x| x.as_str() == s) {
            out.push(Scope::new(s.to_owned()));
        }
    }
    out
}

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

/// Serves the loopback listener until this login's callback arrives, answers it, and closes the
/// listener (so a second callback finds nothing listening).
///
/// SECURITY: the callback is the first `GET /callback` whose `Host` is exactly `127.0.0.1:PORT`
/// and whose `state` is this login's. A page whose own name was rebound to 127.0.0.1 sends its
/// own `Host` (421); a forged or stale callback lacks the `state` (400); any other path is a 404.
/// Each is answered and the listener keeps waiting, so no stray or hostile request can end or
/// hijack the login. Connections are read concurrently, each within [`HEAD_TIMEOUT`], so an idle
/// socket (a browser's preconnect) cannot hold up the real callback.
async fn one_callback(
    listener: TcpListener,
    port: u16,
    state: &str,
) -> Result<Callback, ClientError> {
    let host = format!("127.0.0.1:{port}");
    let mut pending = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted
                    .map_err(|e| ClientError::Login(format!("loopback listener failed: {e}")))?;
                if pending.len() < MAX_PENDING_CALLBACKS {
                    pending.spawn(screen(stream, host.clone(), state.to_owned()));
                }
            }
            Some(done) = pending.join_next() => {
                if let Ok(Some((mut stream, params))) = done {
                    let _ = stream.write_all(DONE.as_bytes()).await;
                    let _ = stream.shutdown().await;
                    drop(listener);
                    return Ok(Callback { params });
                }
            }
        }
    }
}

/// Reads one request and answers it unless it is this login's callback, which is handed back
/// with its query (unanswered: the caller answers the first one only).
async fn screen(
    mut stream: tokio::net::TcpStream,
    host: String,
    state: String,
) -> Option<(tokio::net::TcpStream, Vec<(String, String)>)> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .ok()
        .flatten();
    let verdict = match head {
        None => Err(BAD_REQUEST),
        Some(head) => check_callback(&head, &host, &state),
    };
    match verdict {
        Ok(params) => Some((stream, params)),
        Err(answer) => {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// Decides whether a request head is this login's callback: its query, or the answer to send.
fn check_callback(
    head: &str,
    host: &str,
    state: &str,
) -> Result<Vec<(String, String)>, &'static str> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = match (request_line.next(), request_line.next()) {
        (Some(m), Some(t)) => (m, t),
        _ => return Err(BAD_REQUEST),
    };
    let mut hosts = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim_matches([' ', '\t']));
    // Exactly one `Host`, exactly ours (RFC 9110 §7.2; 421 is "not this origin").
    if hosts.next() != Some(host) || hosts.next().is_some() {
        return Err(MISDIRECTED);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/callback" {
        return Err(NOT_FOUND);
    }
    if method != "GET" {
        return Err(BAD_REQUEST);
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut states = params.iter().filter(|(k, _)| k == "state");
    let matches = match (states.next(), states.next()) {
        (Some((_, given)), None) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), state.as_bytes())
                .is_ok()
        }
        _ => false,
    };
    if matches {
        Ok(params)
    } else {
        Err(WRONG_STATE)
    }
}

/// Reads one HTTP/1 request head (at most 8 KiB), without the blank line.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return String::from_utf8(buf).ok();
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > 8192 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
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
const BAD_REQUEST: &str =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const WRONG_STATE: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 46\r\nConnection: close\r\n\r\nlatchkey: this is not the login in progress.\r\n";
const MISDIRECTED: &str =
    "HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// Time a connection to the loopback listener has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to the loopback listener read at once; more are closed unread.
const MAX_PENDING_CALLBACKS: usize = 16;

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

    fn scope_names(scopes: &[Scope]) -> Vec<&str> {
        scopes.iter().map(|s| s.as_str()).collect()
    }

    #[test]
    fn default_scopes_are_those_the_issuer_lists() {
        let supported: Vec<Scope> = ["openid", "email", "profile", "offline_access", "address"]
            .iter()
            .map(|s| Scope::new((*s).to_owned()))
            .collect();
        assert_eq!(
            scope_names(&scopes(None, Some(&supported))),
            ["email", "profile", "offline_access"]
        );
        // No `scopes_supported` at all: the standard OIDC scopes.
        assert_eq!(
            scope_names(&scopes(None, None)),
            ["email", "profile", "offline_access"]
        );
    }

    #[test]
    fn configured_scopes_are_asked_exactly() {
        let configured = vec![
            "openid".to_owned(),
            "department".to_owned(),
            "email".to_owned(),
            "email".to_owned(),
        ];
        let supported = vec![Scope::new("openid".into())];
        assert_eq!(
            scope_names(&scopes(Some(&configured), Some(&supported))),
            ["department", "email"]
        );
        assert!(scopes(Some(&[]), Some(&supported)).is_empty());
    }

    /// Sends `request` to the listener and returns the status line of the answer.
    async fn send(port: u16, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    fn get(target: &str, host: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n")
    }

    #[tokio::test]
    async fn the_callback_listener_waits_through_wrong_state_and_wrong_host() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting = tokio::spawn(async move { one_callback(listener, port, "s3cret").await });
        let ours = format!("127.0.0.1:{port}");
        // An idle connection (a browser's preconnect) holds nothing up.
        let _idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();

        let refused = [
            (
                get("/callback?code=evil&state=guess", &ours),
                "HTTP/1.1 400",
            ),
            (get("/callback?code=evil", &ours), "HTTP/1.1 400"),
            (
                get("/callback?code=evil&state=s3cret&state=guess", &ours),
                "HTTP/1.1 400",
            ),
            (
                get(
                    "/callback?code=evil&state=s3cret",
                    &format!("localhost:{port}"),
                ),
                "HTTP/1.1 421",
            ),
            (
                get(
                    "/callback?code=evil&state=s3cret",
                    &format!("evil.example:{port}"),
                ),
                "HTTP/1.1 421",
            ),
            (
                format!(
                    "GET /callback?code=evil&state=s3cret HTTP/1.1\r\nHost: {ours}\r\nHost: evil.example\r\n\r\n"
                ),
                "HTTP/1.1 421",
            ),
            (
                "GET /callback?code=evil&state=s3cret HTTP/1.0\r\n\r\n".to_owned(),
                "HTTP/1.1 421",
            ),
            (get("/favicon.ico", &ours), "HTTP/1.1 404"),
            (get("/callbackX?state=s3cret", &ours), "HTTP/1.1 404"),
        ];
        for (request, status) in &refused {
            let answer = send(port, request).await;
            assert!(answer.starts_with(status), "{request:?} got {answer:?}");
            assert!(!waiting.is_finished(), "{request:?} ended the wait");
        }

        let answer = send(port, &get("/callback?code=good&state=s3cret", &ours)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let callback = waiting.await.unwrap().unwrap();
        assert_eq!(callback.param("code"), Some("good"));
        // The listener is closed: a second callback finds nothing.
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        );
    }
}
