//! The test IdP: panva's `oidc-provider` run by `tests/idp/server.mjs` on a free 127.0.0.1 port.
//!
//! Tokens come the way a real client gets them: [`Idp::login_code_flow`] and
//! [`Idp::login_device_flow`] play the browser with a cookie-jar HTTP client through the provider's
//! own login, second-factor and consent pages.
//!
//! Test users (password [`PASSWORD`]; those with MFA must also enter the one-time code [`OTP`] and
//! get `amr: ["pwd","mfa"]`; a login through the device flow gets `acr` [`DEVICE_ACR`]):
//!
//! | user  | groups                           | department | MFA |
//! |-------|----------------------------------|------------|-----|
//! | alice | engineering                      | platform   | no  |
//! | bob   | engineering, sre                 | platform   | yes |
//! | carol | finance                          | finance    | no  |
//! | dave  | engineering, prod-approvers      | security   | yes |
//! | erin  | auditors                         | security   | yes |
//! | frank | engineering, prod-approvers      | security   | yes |
//! | grace | engineering                      | platform   | yes |
//! | mallory | engineering                    | platform   | no  |
//!
//! Every user's `preferred_username` is the login name except `mallory`'s (`mallory.m`), and every
//! email is verified except `mallory`'s: `ceo@example.com` with `email_verified: false`.
//! `department` and `preferred_username` come under the `profile` scope (a common mapping); the IdP
//! has no `department` scope.
//!
//! Clients: `latchkey-cli` (RS256 ID tokens), `latchkey-cli-es` (ES256), `other-app` (RS256, a
//! different audience). All are public native clients with PKCE S256.
//!
//! The node process reads its stdin until EOF: when the test binary exits, the pipe closes and the
//! IdP exits too, even if [`Idp`] was never dropped (for example when kept in a `static`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::free_port;

/// The `acr` of every login through the device flow (the IdP's own mark; OIDC has none).
pub const DEVICE_ACR: &str = "urn:latchkey:loa:device";

/// Password of every test user.
pub const PASSWORD: &str = "latchkey-test";
/// One-time code the users with MFA enter after their password.
pub const OTP: &str = "123456";
/// Scopes the harness asks for: everything latchkey reads, plus a refresh token (the CLI's default).
pub const SCOPES: &str = "openid email profile groups offline_access";

const START_DEADLINE: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 8628 §3.5: without an `interval` in the device authorization response, clients wait 5 s.
pub const DEVICE_DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Poll interval the harness uses when the provider sends none. oidc-provider 9.13.3 neither sends an
/// `interval` nor ever answers `slow_down`, so it allows faster polling; latchkey's own client must
/// use [`DEVICE_DEFAULT_INTERVAL`].
const DEVICE_TEST_INTERVAL: Duration = Duration::from_millis(200);

/// How to start the IdP.
#[derive(Debug, Clone, Default)]
pub struct IdpOptions {
    /// Lifetime of ID tokens (and access tokens) in seconds; the IdP's default is 600.
    pub id_token_ttl: Option<u64>,
    /// Keys file to use (created if missing); by default a new file in a temporary directory.
    pub keys_file: Option<PathBuf>,
    /// Prepend a fresh RS256 key to the keys file before starting.
    pub rotate: bool,
}

/// A signing key of the IdP, so tests can sign tokens with the IdP's real keys.
#[derive(Debug, Clone, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// `RS256` or `ES256`.
    pub alg: String,
    /// Private key, PKCS#8 PEM.
    #[serde(rename = "pkcs8_pem")]
    pub pkcs8_pem: String,
}

impl SigningKey {
    /// The algorithm as `jsonwebtoken` names it.
    pub fn algorithm(&self) -> jsonwebtoken::Algorithm {
        match self.alg.as_str() {
            "RS256" => jsonwebtoken::Algorithm::RS256,
            "ES256" => jsonwebtoken::Algorithm::ES256,
            other => panic!("unexpected IdP key algorithm `{other}`"),
        }
    }

    /// The key for `jsonwebtoken::encode`.
    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        let pem = self.pkcs8_pem.as_bytes();
        match self.algorithm() {
            jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(pem),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(pem),
        }
        .expect("IdP key file holds a valid PKCS#8 PEM")
    }

    /// A JWT header naming this key, as the IdP writes it.
    pub fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(self.algorithm());
        header.kid = Some(self.kid.clone());
        header
    }
}

#[derive(Deserialize)]
struct KeysFile {
    keys: Vec<SigningKey>,
}

/// What the token endpoint returned.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenSet {
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// An OAuth error response from the token endpoint.
#[derive(Debug, Clone)]
pub struct TokenError {
    pub status: u16,
    pub error: String,
    pub error_description: Option<String>,
}

/// A running IdP. Dropping it stops the process.
pub struct Idp {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    port: u16,
    keys_file: PathBuf,
    log_file: PathBuf,
    id_token_ttl: Option<u64>,
    _dir: tempfile::TempDir,
}

/// The IdP shared by the whole test binary (started on first use). Tests get fresh state by logging
/// in again; tests that restart the IdP or need other options start their own.
pub async fn shared() -> &'static Idp {
    static SHARED: tokio::sync::OnceCell<Idp> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_init(Idp::start).await
}

impl Idp {
    /// Starts an IdP with fresh keys and default token lifetimes.
    pub async fn start() -> Idp {
        Idp::start_with(IdpOptions::default()).await
    }

    pub async fn start_with(opts: IdpOptions) -> Idp {
        ensure_node_modules();
        let dir = tempfile::tempdir().expect("temporary directory for the IdP");
        let keys_file = opts
            .keys_file
            .clone()
            .unwrap_or_else(|| dir.path().join("idp-keys.json"));
        let mut idp = Idp {
            child: None,
            stdin: None,
            port: free_port(),
            log_file: dir.path().join("idp.log"),
            keys_file,
            id_token_ttl: opts.id_token_ttl,
            _dir: dir,
        };
        idp.spawn(opts.rotate).await;
        idp
    }

    /// Stops the IdP and starts it again on the same port (same issuer) with a new RS256 key
    /// prepended: new tokens carry the new `kid`, the JWKS still lists the old keys.
    pub async fn restart_rotated(&mut self) {
        self.stop();
        self.spawn(true).await;
    }

    /// The issuer, exactly as in discovery.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let response = http().get(url).send().await.expect("GET discovery");
        assert!(
            response.status().is_success(),
            "discovery: {}",
            response.status()
        );
        response.json().await.expect("discovery is JSON")
    }

    /// The IdP's signing keys, newest first (the first key of each algorithm signs).
    pub fn signing_keys(&self) -> Vec<SigningKey> {
        let text = std::fs::read_to_string(&self.keys_file).expect("read the IdP keys file");
        let file: KeysFile = serde_json::from_str(&text).expect("IdP keys file is JSON");
        file.keys
    }

    /// The key the IdP currently signs with for `alg` (`RS256` or `ES256`).
    pub fn active_key(&self, alg: &str) -> SigningKey {
        self.signing_keys()
            .into_iter()
            .find(|k| k.alg == alg)
            .unwrap_or_else(|| panic!("no {alg} key in the IdP keys file"))
    }

    /// How many requests the provider's JWKS endpoint has served since this process started.
    pub async fn jwks_requests(&self) -> u64 {
        let url = format!("{}/__test/stats", self.issuer());
        let stats: Value = http()
            .get(url)
            .send()
            .await
            .expect("GET /__test/stats")
            .json()
            .await
            .expect("stats are JSON");
        stats["jwks_requests"]
            .as_u64()
            .expect("jwks_requests is a number")
    }

    /// Authorization code flow with PKCE S256, `state` and `nonce`, logging in as `user` through the
    /// provider's pages. Asks for [`SCOPES`] with `prompt=consent`, so a refresh token is issued.
    pub async fn login_code_flow(&self, client_id: &str, user: &str) -> TokenSet {
        self.login_code_flow_with_scopes(client_id, user, SCOPES)
            .await
    }

    /// [`Idp::login_code_flow`] asking for `scopes` (space-separated) instead of [`SCOPES`].
    pub async fn login_code_flow_with_scopes(
        &self,
        client_id: &str,
        user: &str,
        scopes: &str,
    ) -> TokenSet {
        let discovery = self.discovery().await;
        let verifier = random_b64(32);
        let challenge = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
        );
        let state = random_b64(16);
        let nonce = random_b64(16);
        // A native client listens on a random loopback port; the browser's last redirect is caught
        // before it is followed, so nothing needs to listen there.
        let redirect_uri = format!("http://127.0.0.1:{}/callback", free_port());

        let mut auth = Url::parse(str_field(&discovery, "authorization_endpoint")).expect("url");
        auth.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", scopes)
            .append_pair("prompt", "consent")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");

        let browser = Browser::new(user, None);
        let callback = match browser.run(auth, Some(&redirect_uri)).await {
            BrowserEnd::Redirected(url) => url,
            BrowserEnd::DeviceSuccess => panic!("code flow ended on the device success page"),
        };
        let query = |name: &str| {
            callback
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(query("error"), None, "authorization error: {callback}");
        assert_eq!(
            query("state").as_deref(),
            Some(state.as_str()),
            "state mismatch"
        );
        assert_eq!(query("iss"), Some(self.issuer()), "iss parameter mismatch");
        let code = query("code").expect("authorization code in the callback");

        let tokens = token_request(
            str_field(&discovery, "token_endpoint"),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("client_id", client_id),
                ("code_verifier", &verifier),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("code exchange failed: {e:?}"));
        let (_, claims) = unverified_parts(&tokens.id_token);
        assert_eq!(
            claims["nonce"].as_str(),
            Some(nonce.as_str()),
            "nonce mismatch"
        );
        tokens
    }

    /// Device authorization flow (RFC 8628): asks for a device code, approves it on the user-code
    /// page as `user`, then polls the token endpoint, honouring `authorization_pending` and
    /// `slow_down`.
    pub async fn login_device_flow(&self, client_id: &str, user: &str) -> TokenSet {
        let discovery = self.discovery().await;
        let token_endpoint = str_field(&discovery, "token_endpoint");
        let device: Value = http()
            .post(str_field(&discovery, "device_authorization_endpoint"))
            .form(&[("client_id", client_id), ("scope", SCOPES)])
            .send()
            .await
            .expect("POST device authorization")
            .json()
            .await
            .expect("device authorization response is JSON");
        let device_code = str_field(&device, "device_code").to_owned();
        let user_code = str_field(&device, "user_code").to_owned();
        let mut interval = device["interval"]
            .as_u64()
            .map_or(DEVICE_TEST_INTERVAL, Duration::from_secs);
        let expires = Instant::now()
            + Duration::from_secs(device["expires_in"].as_u64().expect("expires_in"));
        let poll = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", client_id),
        ];

        // Before the user approves, the token endpoint must say so.
        let pending = token_request(token_endpoint, &poll).await;
        assert!(
            matches!(&pending, Err(e) if e.error == "authorization_pending"),
            "expected authorization_pending before approval, got {pending:?}"
        );

        // The user opens the verification page and types the code.
        let page = Url::parse(str_field(&device, "verification_uri")).expect("verification_uri");
        match Browser::new(user, Some(&user_code)).run(page, None).await {
            BrowserEnd::DeviceSuccess => {}
            BrowserEnd::Redirected(url) => panic!("device approval ended at {url}"),
        }

        loop {
            assert!(
                Instant::now() < expires,
                "device code expired while polling"
            );
            tokio::time::sleep(interval).await;
            match token_request(token_endpoint, &poll).await {
                Ok(tokens) => return tokens,
                Err(e) if e.error == "authorization_pending" => {}
                Err(e) if e.error == "slow_down" => interval += DEVICE_DEFAULT_INTERVAL,
                Err(e) => panic!("device flow failed: {e:?}"),
            }
        }
    }

    /// Refresh grant; panics if the IdP refuses.
    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> TokenSet {
        self.try_refresh(client_id, refresh_token)
            .await
            .unwrap_or_else(|e| panic!("refresh failed: {e:?}"))
    }

    /// Refresh grant, returning the IdP's error (e.g. `invalid_grant` for a rotated-out token).
    pub async fn try_refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<TokenSet, TokenError> {
        let discovery = self.discovery().await;
        token_request(
            str_field(&discovery, "token_endpoint"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
        )
        .await
    }

    async fn spawn(&mut self, rotate: bool) {
        let log = File::create(&self.log_file).expect("create the IdP log file");
        let mut cmd = Command::new("node");
        cmd.arg(idp_dir().join("server.mjs"))
            .current_dir(idp_dir())
            .env("IDP_PORT", self.port.to_string())
            .env("IDP_ISSUER", self.issuer())
            .env("IDP_KEYS_FILE", &self.keys_file)
            .env("IDP_ROTATE", if rotate { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        if let Some(ttl) = self.id_token_ttl {
            cmd.env("IDP_ID_TOKEN_TTL", ttl.to_string());
        }
        let mut child = cmd
            .spawn()
            .expect("spawn `node tests/idp/server.mjs` (is Node 20 installed?)");
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let client = http();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.fail_start(&format!("the IdP exited with {status}"));
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
                && let Ok(doc) = response.json::<Value>().await
            {
                let issuer = self.issuer();
                if doc["issuer"].as_str() == Some(issuer.as_str()) {
                    return;
                }
                self.fail_start(&format!("discovery names issuer {}", doc["issuer"]));
            }
            if Instant::now() > deadline {
                self.fail_start("the IdP did not answer discovery within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fail_start(&mut self, why: &str) -> ! {
        self.stop();
        super::peer_failed("IdP", why, &self.log_file)
    }

    fn stop(&mut self) {
        super::stop_peer(self.stdin.take(), self.child.take());
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Splits a JWT into its header and payload WITHOUT verifying anything.
pub fn unverified_parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut decode = |what: &str| -> Value {
        let part = parts.next().unwrap_or_else(|| panic!("JWT has no {what}"));
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("JWT part is base64url");
        serde_json::from_slice(&bytes).expect("JWT part is JSON")
    };
    let header = decode("header");
    let payload = decode("payload");
    (header, payload)
}

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("idp")
}

/// Runs `npm ci` in tests/idp once per process if oidc-provider is not installed yet.
fn ensure_node_modules() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed {
        return;
    }
    let dir = idp_dir();
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        super::run_setup(npm, "`npm ci` in tests/idp");
    }
    *installed = true;
}

/// A plain client for API calls. Built per call: tests each run their own Tokio runtime, and a
/// pooled connection must not outlive the runtime that opened it.
fn http() -> reqwest::Client {
    super::plain_http(HTTP_TIMEOUT)
}

fn str_field<'a>(doc: &'a Value, name: &str) -> &'a str {
    doc[name]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` missing in {doc}"))
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn token_request(endpoint: &str, form: &[(&str, &str)]) -> Result<TokenSet, TokenError> {
    let response = http()
        .post(endpoint)
        .form(form)
        .send()
        .await
        .expect("POST token endpoint");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("token response is JSON");
    if (200..300).contains(&status) {
        return Ok(serde_json::from_value(body).expect("token response has the expected fields"));
    }
    Err(TokenError {
        status,
        error: body["error"].as_str().unwrap_or_default().to_owned(),
        error_description: body["error_description"].as_str().map(str::to_owned),
    })
}

// -------------------------------------------------------------------------------------------------
// The headless browser: follows redirects by hand and submits the provider's plain HTML forms.

enum BrowserEnd {
    /// A redirect to the client's `redirect_uri` (not followed).
    Redirected(Url),
    /// The device flow's success page.
    DeviceSuccess,
}

struct Browser<'a> {
    client: reqwest::Client,
    user: &'a str,
    user_code: Option<&'a str>,
}

impl<'a> Browser<'a> {
    fn new(user: &'a str, user_code: Option<&'a str>) -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .expect("browser HTTP client");
        Browser {
            client,
            user,
            user_code,
        }
    }

    async fn run(&self, start: Url, redirect_uri: Option<&str>) -> BrowserEnd {
        let mut request = self.client.get(start.clone());
        let mut current = start;
        for _ in 0..30 {
            let response = request.send().await.expect("browser request");
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .expect("redirect has a Location");
                let next = current.join(location).expect("valid Location");
                if redirect_uri.is_some_and(|r| next.as_str().starts_with(r)) {
                    return BrowserEnd::Redirected(next);
                }
                request = self.client.get(next.clone());
                current = next;
                continue;
            }
            let body = response.text().await.expect("page body");
            assert!(
                status.is_success() && !body.contains("id=\"error\""),
                "IdP page {current} answered {status}:\n{body}"
            );
            if body.contains("id=\"success\"") {
                return BrowserEnd::DeviceSuccess;
            }
            let form = parse_forms(&body)
                .into_iter()
                .find(|f| !f.action.ends_with("/abort"))
                .unwrap_or_else(|| panic!("no form to submit on {current}:\n{body}"));
            let fields = self.fill(&form, &body);
            let action = current.join(&form.action).expect("form action");
            assert!(form.method.eq_ignore_ascii_case("post"), "form is not POST");
            request = self.client.post(action.clone()).form(&fields);
            current = action;
        }
        panic!("the IdP's pages did not finish within 30 steps");
    }

    fn fill(&self, form: &Form, page: &str) -> Vec<(String, String)> {
        form.inputs
            .iter()
            .map(|input| {
                let value = match input.name.as_str() {
                    "login" => self.user.to_owned(),
                    "password" => PASSWORD.to_owned(),
                    "otp" => OTP.to_owned(),
                    "user_code" if input.value.is_empty() => self
                        .user_code
                        .unwrap_or_else(|| panic!("page asks for a user code:\n{page}"))
                        .to_owned(),
                    _ => input.value.clone(),
                };
                (input.name.clone(), value)
            })
            .collect()
    }
}

struct Form {
    action: String,
    method: String,
    inputs: Vec<Input>,
}

struct Input {
    name: String,
    value: String,
}

/// Just enough HTML to read the provider's forms: `<form action method>` and named `<input>`s.
fn parse_forms(html: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let after = &rest[start + "<form".len()..];
        let (attrs, body) = after.split_once('>').expect("unterminated <form> tag");
        let attrs = parse_attrs(attrs);
        let (inner, tail) = body.split_once("</form>").unwrap_or((body, ""));
        let mut inputs = Vec::new();
        let mut scan = inner;
        while let Some(pos) = scan.find("<input") {
            let after = &scan[pos + "<input".len()..];
            let (input_attrs, next) = after.split_once('>').expect("unterminated <input> tag");
            let input_attrs = parse_attrs(input_attrs);
            if let Some(name) = attr(&input_attrs, "name") {
                inputs.push(Input {
                    name: name.to_owned(),
                    value: attr(&input_attrs, "value").unwrap_or_default().to_owned(),
                });
            }
            scan = next;
        }
        forms.push(Form {
            action: attr(&attrs, "action").unwrap_or_default().to_owned(),
            method: attr(&attrs, "method").unwrap_or("get").to_owned(),
            inputs,
        });
        rest = tail;
    }
    forms
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn parse_attrs(tag: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let mut chars = tag.trim_end_matches('/').chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == '/').is_some() {}
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != '=' && *c != '/'))
                .collect();
        if name.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            match chars.next_if(|c| *c == '"' || *c == '\'') {
                Some(quote) => value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != quote))),
                None => value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace()))),
            }
            chars.next();
        }
        attrs.push((name, unescape(&value)));
    }
    attrs
}

fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

// -------------------------------------------------------------------------------------------------
// Playing the browser for a client under test (the latchkey CLI), which owns the flow itself.

/// Logs in as `user` on the IdP's pages starting at `authorization_url` (as printed by a client)
/// and returns the final redirect to `redirect_prefix` (not followed: the test delivers it).
pub async fn browse_code_flow(authorization_url: &str, user: &str, redirect_prefix: &str) -> Url {
    let start = Url::parse(authorization_url).expect("authorization URL");
    match Browser::new(user, None)
        .run(start, Some(redirect_prefix))
        .await
    {
        BrowserEnd::Redirected(url) => url,
        BrowserEnd::DeviceSuccess => panic!("code flow ended on the device success page"),
    }
}

/// Approves `user_code` as `user` on the IdP's device page at `verification_uri`.
pub async fn browse_device_flow(verification_uri: &str, user: &str, user_code: &str) {
    let page = Url::parse(verification_uri).expect("verification_uri");
    match Browser::new(user, Some(user_code)).run(page, None).await {
        BrowserEnd::DeviceSuccess => {}
        BrowserEnd::Redirected(url) => panic!("device approval ended at {url}"),
    }
}
