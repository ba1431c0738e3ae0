//! The HTTP client to the broker's public API.
//!
//! SECURITY: redirects are never followed (a bearer token must not be carried to another
//! origin); every request has connect and total timeouts; a private CA given with `--ca-cert`
//! is added to the system's roots. Errors come back as [`ClientError`]s a person can act on.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use super::{ClientError, sanitize};
pub use crate::api::{
    CredentialsRequest, CredentialsResponse, OsUserStatus, RoleStatus, RolesResponse,
    SshKeyRequest, SshKeyResponse, TargetStatus, TargetsResponse,
};
use crate::api::{
    NewRequest, Problem, RequestDecision, RequestList, RequestView, WellKnown, WhoAmI,
};

/// A client for one broker.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    base: Url,
    http: reqwest::Client,
}

impl BrokerClient {
    /// A client for `server` (an `https://` URL; `http://` only for loopback), trusting
    /// `ca_cert` in addition to the system's roots.
    pub fn new(server: &str, ca_cert: Option<&Path>) -> Result<Self, ClientError> {
        let base = parse_server_url(server)?;
        let http = http_client(ca_cert)?;
        Ok(Self { base, http })
    }

    /// The server URL, normalised (no trailing slash).
    pub fn url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `GET /.well-known/latchkey`.
    pub async fn well_known(&self) -> Result<WellKnown, ClientError> {
        self.send(self.http.get(self.endpoint("/.well-known/latchkey")?), None)
            .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self, token: &str) -> Result<WhoAmI, ClientError> {
        let req = self
            .http
            .get(self.endpoint("/v1/whoami")?)
            .bearer_auth(token);
        self.send(req, None).await
    }

    /// `GET /v1/audit` with `query` (name, value pairs).
    pub async fn audit(
        &self,
        token: &str,
        query: &[(&str, String)],
    ) -> Result<crate::api::AuditPage, ClientError> {
        let req = self
            .http
            .get(self.endpoint("/v1/audit")?)
            .query(query)
            .bearer_auth(token);
        self.send(req, None).await
    }

    /// `GET /v1/roles`.
    pub async fn roles(&self, token: &str) -> Result<RolesResponse, ClientError> {
        let req = self
            .http
            .get(self.endpoint("/v1/roles")?)
            .bearer_auth(token);
        self.send(req, None).await
    }

    /// `POST /v1/credentials`.
    pub async fn credentials(
        &self,
        token: &str,
        body: &CredentialsRequest,
    ) -> Result<CredentialsResponse, ClientError> {
        let req = self
            .http
            .post(self.endpoint("/v1/credentials")?)
            .bearer_auth(token)
            .json(body);
        self.send(req, Some(&body.role)).await
    }

    /// `GET /v1/targets`.
    pub async fn targets(&self, token: &str) -> Result<TargetsResponse, ClientError> {
        let req = self
            .http
            .get(self.endpoint("/v1/targets")?)
            .bearer_auth(token);
        self.send(req, None).await
    }

    /// `POST /v1/ssh/keys`: pushes a public key for one OS user of a target.
    pub async fn ssh_key(
        &self,
        token: &str,
        body: &SshKeyRequest,
    ) -> Result<SshKeyResponse, ClientError> {
        let req = self
            .http
            .post(self.endpoint("/v1/ssh/keys")?)
            .bearer_auth(token)
            .json(body);
        self.send(req, Some(&body.target)).await
    }

    /// `POST /v1/requests`: asks for break-glass access to a role.
    pub async fn create_request(
        &self,
        token: &str,
        body: &NewRequest,
    ) -> Result<RequestView, ClientError> {
        let req = self
            .http
            .post(self.endpoint("/v1/requests")?)
            .bearer_auth(token)
            .json(body);
        self.send(req, Some(&body.role)).await
    }

    /// `GET /v1/requests` with `query` (name, value pairs).
    pub async fn requests(
        &self,
        token: &str,
        query: &[(&str, String)],
    ) -> Result<RequestList, ClientError> {
        let req = self
            .http
            .get(self.endpoint("/v1/requests")?)
            .query(query)
            .bearer_auth(token);
        self.send(req, None).await
    }

    /// `GET /v1/requests/{id}`.
    pub async fn request(&self, token: &str, id: &str) -> Result<RequestView, ClientError> {
        let req = self
            .http
            .get(self.request_endpoint(id, None)?)
            .bearer_auth(token);
        self.send(req, None).await
    }

    /// `POST /v1/requests/{id}/{operation}` (`approve`, `deny`, `cancel`, `revoke`, `review`).
    pub async fn change_request(
        &self,
        token: &str,
        id: &str,
        operation: &str,
        body: &RequestDecision,
    ) -> Result<RequestView, ClientError> {
        let req = self
            .http
            .post(self.request_endpoint(id, Some(operation))?)
            .bearer_auth(token)
            .json(body);
        self.send(req, None).await
    }

    /// `/v1/requests/{id}[/{operation}]`, the id as one path segment whatever it holds.
    fn request_endpoint(&self, id: &str, operation: Option<&str>) -> Result<Url, ClientError> {
        let mut url = self.endpoint("/v1/requests")?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| ClientError::Other("bad server URL".into()))?;
            segments.push(id);
            if let Some(op) = operation {
                segments.push(op);
            }
        }
        Ok(url)
    }

    fn endpoint(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path)
            .map_err(|e| ClientError::Other(format!("bad server URL: {e}")))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        role: Option<&str>,
    ) -> Result<T, ClientError> {
        let resp = req
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(SERVER, &self.url(), &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(SERVER, &self.url(), &e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Other(format!(
                    "the server sent an answer this CLI cannot read: {e}"
                ))
            });
        }
        Err(problem_error(status.as_u16(), &bytes, role))
    }
}

/// A reqwest client with latchkey's policy: no redirects, timeouts, optional extra CA.
pub fn http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("latchkey-cli/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Other(format!(
                "cannot read the CA certificate `{}`: {e}",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            ClientError::Other(format!("`{}` holds no PEM certificate", path.display()))
        })?;
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| ClientError::Other(format!("cannot set up HTTPS: {e}")))
}

/// Parses a server URL; plain `http` only for loopback hosts.
pub fn parse_server_url(server: &str) -> Result<Url, ClientError> {
    let url = Url::parse(server.trim_end_matches('/'))
        .map_err(|e| ClientError::Other(format!("`{}` is not a URL: {e}", sanitize(server))))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(ClientError::Other(format!(
            "`{}` must be an https:// URL",
            sanitize(server)
        ))),
    }
}

/// Maps a failed request to `what` (for example [`IDP`]) at `url` to what a person needs to know.
pub fn transport_error(what: &'static str, url: &str, e: &reqwest::Error) -> ClientError {
    if is_untrusted_certificate(e) {
        return ClientError::Untrusted(url.to_owned());
    }
    let why = if e.is_timeout() {
        "the request timed out".to_owned()
    } else if e.is_connect() {
        innermost(e)
    } else {
        e.to_string()
    };
    ClientError::Unreachable {
        what,
        url: url.to_owned(),
        why: sanitize(&why),
    }
}

fn is_untrusted_certificate(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        // An io::Error hides the error it wraps from `source()`; look inside.
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map_or(s, |i| i as &(dyn std::error::Error + 'static));
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            );
        }
        // Some layers carry the TLS failure only as text.
        let text = s.to_string();
        if text.starts_with("invalid peer certificate") || text == "peer sent no certificates" {
            return true;
        }
        source = s.source();
    }
    false
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

fn problem_error(status: u16, body: &[u8], role: Option<&str>) -> ClientError {
    let Ok(p) = serde_json::from_slice::<Problem>(body) else {
        return ClientError::Server {
            status,
            code: "unknown".into(),
            detail: None,
            request_id: None,
        };
    };
    let detail = p.detail.as_deref().map(sanitize);
    let code = sanitize(&p.code);
    match (status, code.as_str()) {
        (403, _) => ClientError::Denied {
            role: role.map(str::to_owned),
            reasons: p.reasons.iter().map(|r| sanitize(r)).collect(),
            detail,
        },
        (401, "token_expired") => ClientError::LoginNeeded("your login has expired".into()),
        (401, _) => {
            ClientError::LoginNeeded(format!("the server did not accept your login ({code})"))
        }
        _ => ClientError::Server {
            status,
            code,
            detail,
            request_id: p.request_id.as_deref().map(sanitize),
        },
    }
}

/// Names the broker in error messages.
pub const SERVER: &str = "the latchkey server";
/// Names the identity provider in error messages.
pub const IDP: &str = "the identity provider";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_except_loopback() {
        assert!(parse_server_url("https://latchkey.example.com").is_ok());
        assert!(parse_server_url("http://127.0.0.1:8443").is_ok());
        assert!(parse_server_url("http://localhost:8443/").is_ok());
        assert!(parse_server_url("http://latchkey.example.com").is_err());
        assert!(parse_server_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn problems_become_person_sized_errors() {
        let denied = br#"{"type":"urn:latchkey:problem:denied","title":"Denied","status":403,
            "code":"denied","detail":"no","reasons":["needs group `sre`\u001b[2J"]}"#;
        let e = problem_error(403, denied, Some("admin"));
        assert_eq!(
            e.to_string(),
            "access to `admin` denied: needs group `sre`[2J"
        );
        assert_eq!(e.exit_code(), 3);

        let expired = br#"{"type":"x","title":"x","status":401,"code":"token_expired"}"#;
        let e = problem_error(401, expired, None);
        assert_eq!(
            e.to_string(),
            "your login has expired; run `latchkey login`"
        );
        assert_eq!(e.exit_code(), 4);

        let sts = br#"{"type":"x","title":"x","status":503,"code":"sts_unavailable",
            "detail":"AWS STS did not answer","request_id":"r-1"}"#;
        assert_eq!(
            problem_error(503, sts, None).to_string(),
            "the server answered 503 `sts_unavailable`: AWS STS did not answer (request id r-1)"
        );
    }
}
