//! The sandbox's development issuer and TLS material. DEVELOPMENT ONLY, loopback only.
//!
//! [`DevIssuer`] is a minimal OpenID issuer (discovery and JWKS, ES256) whose tokens are minted
//! locally for the demo users of `policies/dev-users.toml`; `latchkey dev` serves it on a
//! loopback port and trusts it like any other issuer, so the broker's real verification path is
//! what the sandbox exercises. With [`DevIssuer::router_with_login`] it also answers the CLI's
//! `latchkey login --device`: the device authorization is approved at once for the one demo user
//! named on the command line, and the token endpoint serves the device-code and refresh-token
//! grants (refresh tokens are random, kept in memory, and rotate on use). There is no password:
//! anyone who can reach the loopback port gets that user's tokens, which is why it is loopback
//! only and development only. [`ensure_tls`] makes a throwaway CA and a server certificate for
//! 127.0.0.1 and localhost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};

use url::Url;

use crate::clock::SharedClock;
use crate::config::is_loopback_host;

/// The client id the sandbox's CLI logs in with.
pub const DEV_CLIENT_ID: &str = "latchkey-cli";

/// Why the development material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The sandbox would reach AWS itself rather than a local stand-in, and nobody said so.
    #[error(
        "{0}; the sandbox talks to a local AWS stand-in such as moto \
         (`--aws-endpoint http://127.0.0.1:5000`); pass `--dangerous-real-aws` to let it reach \
         real AWS with your default credentials"
    )]
    AwsNotLocal(String),
    /// A file could not be read or written.
    #[error("`{path}`: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate keys: {0}")]
    Keys(String),
    /// An address is not loopback.
    #[error("`{0}` is not a loopback address; the sandbox refuses to listen anywhere else")]
    NotLoopback(SocketAddr),
    /// The state directory could be changed by someone else.
    #[error("refusing the sandbox state directory `{path}`: {why}")]
    StateDir {
        /// The directory.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The user is not in the users file.
    #[error("no demo user `{0}`")]
    UnknownUser(String),
    /// The users file is not valid.
    #[error("invalid demo users file: {0}")]
    Users(String),
}

/// A demo user of the sandbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    /// The login name, also the subject.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Group ids.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Department attribute.
    pub department: Option<String>,
    /// Whether the user's login counts as multi-factor.
    #[serde(default)]
    pub mfa: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    user: Vec<DevUser>,
}

/// Reads `dev-users.toml`.
pub fn load_users(path: &Path) -> Result<Vec<DevUser>, DevError> {
    let text = read(path)?;
    let f: UsersFile = toml::from_str(&text).map_err(|e| DevError::Users(e.to_string()))?;
    Ok(f.user)
}

/// Paths of the sandbox's TLS material.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA certificate clients should trust.
    pub ca_cert: PathBuf,
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server's private key (0600).
    pub key: PathBuf,
}

/// Makes (once) a CA and a server certificate for 127.0.0.1, ::1 and localhost in `dir`.
pub fn ensure_tls(dir: &Path) -> Result<TlsMaterial, DevError> {
    let m = TlsMaterial {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    if m.ca_cert.is_file() && m.cert.is_file() && m.key.is_file() {
        return Ok(m);
    }
    let (ca, cert, key) = make_tls().map_err(|e| DevError::Keys(e.to_string()))?;
    write_private(&m.key, key.as_bytes())?;
    write_public(&m.cert, cert.as_bytes())?;
    write_public(&m.ca_cert, ca.as_bytes())?;
    Ok(m)
}

/// A CA certificate, and a server certificate and key it signed, all PEM.
pub fn make_tls() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "latchkey development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "latchkey development server");
    let cert = params.signed_by(&server_key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), server_key.serialize_pem()))
}

/// The development issuer: serves discovery and JWKS, and mints tokens for demo users.
pub struct DevIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl DevIssuer {
    /// Loads (or makes, once) the issuer key in `dir`, for the issuer URL `issuer`.
    pub fn open(dir: &Path, issuer: String) -> Result<Self, DevError> {
        let path = dir.join("issuer-key.pem");
        if !path.is_file() {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| DevError::Keys(e.to_string()))?;
            write_private(&path, kp.serialize_pem().as_bytes())?;
        }
        let pem = read(&path)?;
        let kp = rcgen::KeyPair::from_pem(&pem).map_err(|e| DevError::Keys(e.to_string()))?;
        let raw = kp.public_key_raw();
        let (x, y) = match (raw.get(1..33), raw.get(33..65)) {
            (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => return Err(DevError::Keys("unexpected public key encoding".into())),
        };
        let kid = URL_SAFE_NO_PAD.encode(digest(raw).get(..12).unwrap_or_default());
        let key =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| DevError::Keys(e.to_string()))?;
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
        Ok(Self {
            issuer,
            kid,
            key,
            jwk,
        })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Discovery and JWKS.
    pub fn router(&self) -> Router {
        self.routes(false)
    }

    /// Discovery, JWKS, and the CLI's device login, approved at once for `user`.
    pub fn router_with_login(self: Arc<Self>, user: DevUser, clock: SharedClock) -> Router {
        let state = Arc::new(LoginState {
            issuer: Arc::clone(&self),
            user,
            clock,
            device_codes: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        });
        let login = Router::new()
            .route("/device", post(device_authorization).get(device_page))
            .route("/token", post(token))
            .route("/authorize", get(authorize))
            .with_state(state);
        self.routes(true).merge(login)
    }

    fn routes(&self, login: bool) -> Router {
        let mut discovery = json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
        });
        if login && let Some(d) = discovery.as_object_mut() {
            let url = |path: &str| json!(format!("{}{path}", self.issuer));
            d.insert("authorization_endpoint".into(), url("/authorize"));
            d.insert("device_authorization_endpoint".into(), url("/device"));
            d.insert("token_endpoint".into(), url("/token"));
            d.insert("response_types_supported".into(), json!(["code"]));
            d.insert(
                "grant_types_supported".into(),
                json!([
                    "urn:ietf:params:oauth:grant-type:device_code",
                    "refresh_token"
                ]),
            );
            d.insert(
                "token_endpoint_auth_methods_supported".into(),
                json!(["none"]),
            );
            d.insert(
                "scopes_supported".into(),
                json!(["openid", "email", "groups", "department", "offline_access"]),
            );
        }
        let jwks = json!({ "keys": [self.jwk] });
        Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(jwks) }))
    }

    /// An ID token for `user`, valid for `ttl_secs` from `now`.
    pub fn mint(&self, user: &DevUser, now: i64, ttl_secs: i64) -> Result<String, DevError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let amr = if user.mfa {
            vec!["pwd", "mfa"]
        } else {
            vec!["pwd"]
        };
        let mut claims = json!({
            "iss": self.issuer,
            "sub": user.name,
            "aud": DEV_CLIENT_ID,
            "azp": DEV_CLIENT_ID,
            "iat": now,
            "auth_time": now,
            "exp": now + ttl_secs,
            "email": user.email,
            // The development users' addresses are the operator's own, so the issuer vouches.
            "email_verified": true,
            "groups": user.groups,
            "amr": amr,
        });
        if let (Some(d), Some(obj)) = (&user.department, claims.as_object_mut()) {
            obj.insert("department".into(), json!(d));
        }
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| DevError::Keys(e.to_string()))
    }
}

// === the development login (device flow, approved at once) ===

struct LoginState {
    issuer: Arc<DevIssuer>,
    user: DevUser,
    clock: SharedClock,
    /// Device codes handed out and not yet redeemed, with their expiry.
    device_codes: Mutex<HashMap<String, i64>>,
    /// Live refresh tokens and their expiry; each is removed when used (rotation).
    refresh_tokens: Mutex<HashMap<String, i64>>,
}

#[derive(Debug, Deserialize)]
struct DeviceRequest {
    client_id: String,
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: String,
    client_id: String,
    device_code: Option<String>,
    refresh_token: Option<String>,
}

async fn device_authorization(
    State(s): State<Arc<LoginState>>,
    Form(req): Form<DeviceRequest>,
) -> Response {
    if req.client_id != DEV_CLIENT_ID {
        return oauth_error("invalid_client", "unknown client");
    }
    let Some(code) = random_token() else {
        return server_error();
    };
    let expires_at = s.clock.unix() + DEVICE_CODE_TTL_SECS;
    lock(&s.device_codes).insert(code.clone(), expires_at);
    Json(json!({
        "device_code": code,
        "user_code": "DEV-APPROVED",
        "verification_uri": format!("{}/device", s.issuer.issuer),
        "expires_in": DEVICE_CODE_TTL_SECS,
        "interval": 1,
    }))
    .into_response()
}

async fn device_page(State(s): State<Arc<LoginState>>) -> String {
    format!(
        "latchkey DEVELOPMENT issuer: device logins are approved automatically for `{}`; \
         nothing to do here.\n",
        s.user.name
    )
}

async fn authorize() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "the latchkey development issuer only supports `latchkey login --device`\n",
    )
        .into_response()
}

async fn token(State(s): State<Arc<LoginState>>, Form(req): Form<TokenRequest>) -> Response {
    if req.client_id != DEV_CLIENT_ID {
        return oauth_error("invalid_client", "unknown client");
    }
    let now = s.clock.unix();
    let granted = match req.grant_type.as_str() {
        "urn:ietf:params:oauth:grant-type:device_code" => req
            .device_code
            .and_then(|c| lock(&s.device_codes).remove(&c))
            .is_some_and(|exp| exp > now),
        "refresh_token" => req
            .refresh_token
            .and_then(|t| lock(&s.refresh_tokens).remove(&t))
            .is_some_and(|exp| exp > now),
        _ => return oauth_error("unsupported_grant_type", "unsupported grant type"),
    };
    if !granted {
        return oauth_error("invalid_grant", "unknown, used or expired code or token");
    }
    let id_token = match s.issuer.mint(&s.user, now, DEV_ID_TOKEN_TTL_SECS) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the development issuer cannot sign");
            return server_error();
        }
    };
    let (Some(refresh), Some(access)) = (random_token(), random_token()) else {
        return server_error();
    };
    lock(&s.refresh_tokens).insert(refresh.clone(), now + DEV_REFRESH_TTL_SECS);
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": DEV_ID_TOKEN_TTL_SECS,
        "id_token": id_token,
        "refresh_token": refresh,
        "scope": "openid email groups department offline_access",
    }))
    .into_response()
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "development issuer failure",
    )
        .into_response()
}

/// 256 random bits, or `None` if the system's random source fails (never a weak token).
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// How long a development device code may wait to be redeemed.
const DEVICE_CODE_TTL_SECS: i64 = 600;
/// Lifetime of the development issuer's ID tokens.
pub const DEV_ID_TOKEN_TTL_SECS: i64 = 3600;
/// Lifetime of its refresh tokens.
const DEV_REFRESH_TTL_SECS: i64 = 8 * 3600;

/// Refuses any address that is not loopback.
pub fn require_loopback(addr: SocketAddr) -> Result<(), DevError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(DevError::NotLoopback(addr))
    }
}

/// Where the sandbox's broker sends its STS calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsTarget {
    /// A local stand-in (moto) on a loopback address, called with dummy credentials.
    Local(Url),
    /// Real AWS (the default endpoints, or the endpoint given) with the default credential
    /// chain; only with `--dangerous-real-aws`.
    Real(Option<Url>),
}

/// Decides where the sandbox's STS calls go.
///
/// SECURITY: the sandbox mints tokens for demo users without a password; pointed at real AWS
/// with someone's credentials, it would hand out real access to anyone who can reach its
/// loopback port. So it needs a loopback `--aws-endpoint` unless `--dangerous-real-aws` says
/// otherwise. A name such as `localhost` is not loopback here (see `config::is_loopback_host`).
pub fn aws_target(endpoint: Option<&Url>, dangerous_real_aws: bool) -> Result<AwsTarget, DevError> {
    match endpoint {
        Some(u) if is_loopback_host(u) => Ok(AwsTarget::Local(u.clone())),
        _ if dangerous_real_aws => Ok(AwsTarget::Real(endpoint.cloned())),
        Some(u) => Err(DevError::AwsNotLocal(format!(
            "`--aws-endpoint {u}` is not a loopback address"
        ))),
        None => Err(DevError::AwsNotLocal(
            "no `--aws-endpoint` given".to_owned(),
        )),
    }
}

/// Creates the sandbox's state directory (0700) when it is missing, then checks it as
/// [`check_state_dir`] does.
pub fn ensure_state_dir(dir: &Path) -> Result<(), DevError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| file_error(dir, &e))?,
        Err(e) => return Err(file_error(dir, &e)),
        Ok(_) => {}
    }
    check_state_dir(dir)
}

/// Refuses a state directory that is a symbolic link, is owned by another user, or that group
/// or others may write to.
///
/// SECURITY: the directory holds the development issuer's signing key, the CA clients are told
/// to trust and the audit chain; whoever can replace those files can mint tokens the sandbox
/// accepts or impersonate it. Reading is not refused: the keys inside are 0600 themselves.
pub fn check_state_dir(dir: &Path) -> Result<(), DevError> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |why| DevError::StateDir {
        path: dir.display().to_string(),
        why,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| file_error(dir, &e))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory"));
    }
    match crate::client::files::current_uid() {
        Some(uid) if uid == meta.uid() => {}
        Some(_) => return Err(refuse("it is owned by another user")),
        None => return Err(refuse("cannot tell which user this process runs as")),
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(
            "group or others may write to it (run `chmod go-w` on it, or use another directory)",
        ));
    }
    Ok(())
}

fn digest(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn read(path: &Path) -> Result<String, DevError> {
    std::fs::read_to_string(path).map_err(|e| file_error(path, &e))
}

fn file_error(path: &Path, e: &std::io::Error) -> DevError {
    DevError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DevError> {
    write_mode(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), DevError> {
    write_mode(path, bytes, 0o644)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DevError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |e: std::io::Error| DevError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(mode);
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_sandbox_needs_a_loopback_aws_endpoint_or_the_dangerous_flag() {
        let moto = Url::parse("http://127.0.0.1:5000").unwrap();
        let v6 = Url::parse("http://[::1]:5000").unwrap();
        let name = Url::parse("http://localhost:5000").unwrap();
        let real = Url::parse("https://sts.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            aws_target(Some(&moto), false).unwrap(),
            AwsTarget::Local(moto.clone())
        );
        assert_eq!(
            aws_target(Some(&v6), false).unwrap(),
            AwsTarget::Local(v6.clone())
        );
        assert_eq!(
            aws_target(Some(&moto), true).unwrap(),
            AwsTarget::Local(moto)
        );
        for endpoint in [None, Some(&real), Some(&name)] {
            let err = aws_target(endpoint, false).unwrap_err();
            assert!(matches!(err, DevError::AwsNotLocal(_)), "{endpoint:?}");
            assert!(err.to_string().contains("--dangerous-real-aws"), "{err}");
        }
        assert_eq!(aws_target(None, true).unwrap(), AwsTarget::Real(None));
        assert_eq!(
            aws_target(Some(&real), true).unwrap(),
            AwsTarget::Real(Some(real))
        );
    }

    #[test]
    fn a_state_dir_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_state_dir(&dir).unwrap();
        let mode = |d: &Path| std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        // Readable by others is fine; writable by group or others is not.
        for (m, ok) in [
            (0o755, true),
            (0o775, false),
            (0o757, false),
            (0o1777, false),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
            let got = ensure_state_dir(&dir);
            assert_eq!(got.is_ok(), ok, "mode {m:o}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("group or others may write"), "{e}");
            }
        }
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = ensure_state_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
