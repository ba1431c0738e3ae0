//! Who is asking: [`Identity`], and the mapping from a verified token's claims to it.
//!
//! Pure: no I/O. The principal is `(issuer, subject)`; email is informational and never used
//! for authorization. Groups and attributes come only from the claims the issuer's
//! configuration names, parsed against a strict shape so a confused or hostile claim fails the
//! token instead of silently granting or dropping anything.
//!
//! SECURITY: an `email` the issuer does not vouch for never enters an [`Identity`]. Many IdPs let
//! users type any address (self-service sign-up, social logins, profile edits); the claim counts
//! only with `email_verified: true`, or when the provider is configured with
//! `email_verified = "assume"` for issuers that never send the claim. Everything downstream
//! (whoami, audit actors, `{email}` session tags, Cedar's `principal.email`, session names) reads
//! [`Identity::email`] and so sees only a verified address.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{EmailVerified, ProviderConfig};

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The issuer, exactly as configured and as in `iss`.
    pub issuer: String,
    /// The subject (`sub`), unique within the issuer.
    pub subject: String,
    /// The email claim, only when verified (see the module documentation); for display, audit,
    /// `{email}` session tags and Cedar's `principal.email`, never as the principal's id.
    pub email: Option<String>,
    /// Group ids from the configured groups claim, in the token's order.
    pub groups: Vec<String>,
    /// The admin-chosen attributes that were present.
    pub attributes: BTreeMap<String, Attribute>,
    /// Whether the authentication used a second factor (`amr`/`acr`).
    pub mfa: bool,
    /// When the user authenticated (`auth_time`), if the token says.
    pub auth_time: Option<i64>,
    /// When the token was issued (`iat`).
    pub issued_at: i64,
    /// When the token expires (`exp`).
    pub expires_at: i64,
    /// The name for session names, as [`map_claims`] chose it; read it with
    /// [`Identity::readable_name`].
    pub readable_name: String,
    /// Whether the token shows a login through the device flow, by the provider's
    /// `device_flow_amr` or `device_flow_acr`. `false` also when the issuer does not say: OIDC
    /// defines no such mark, so this is only as good as the issuer's configuration.
    #[serde(default)]
    pub device_flow: bool,
}

/// A kept attribute's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Attribute {
    /// A boolean claim.
    Bool(bool),
    /// A list of strings.
    List(Vec<String>),
    /// An integer claim.
    Number(i64),
    /// A string claim.
    Text(String),
}

/// Why a token's claims could not be mapped to an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A claim has a shape other than the one required.
    #[error("claim `{claim}` {expected}")]
    Shape {
        /// The claim's name or path.
        claim: String,
        /// What shape it must have.
        expected: &'static str,
    },
    /// The issuer left the groups out because there were too many (distributed claims).
    #[error("claim `{0}` was left out by the issuer (overage); refusing a partial group list")]
    GroupsOverage(String),
}

impl Identity {
    /// The principal's canonical id: issuer and subject, never the email.
    pub fn principal_id(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }

    /// A name people recognise, for RoleSessionName and SourceIdentity: the provider's
    /// `session_name_claim` (default `preferred_username`), else the verified email, else `sub`.
    ///
    /// SECURITY: for reading in CloudTrail only. It may be chosen or changed by the user at some
    /// IdPs and is not unique; authorization and uniqueness rest on `(issuer, subject)`.
    pub fn readable_name(&self) -> &str {
        &self.readable_name
    }
}

/// Maps verified claims to an identity under the issuer's configuration.
///
/// `iss`, `sub`, `iat` and `exp` have been checked by the caller; `issued_at` and `expires_at`
/// are passed in already parsed.
pub fn map_claims(
    claims: &Map<String, Value>,
    provider: &ProviderConfig,
    issued_at: i64,
    expires_at: i64,
) -> Result<Identity, ClaimError> {
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(shape("sub", "must be a non-empty string")),
    };
    let email = verified_email(claims, provider)?;
    let readable_name = readable_name(claims, provider, email.as_deref(), &subject);
    let groups = groups(claims, &provider.groups_claim)?;
    let mut attributes = BTreeMap::new();
    for name in &provider.attributes {
        if let Some(v) = claims.get(name) {
            attributes.insert(name.clone(), attribute(name, v)?);
        }
    }
    let amr = match claims.get("amr") {
        None => Vec::new(),
        Some(v) => string_array(v).ok_or_else(|| shape("amr", "must be an array of strings"))?,
    };
    let acr = optional_string(claims, "acr")?;
    let mfa = amr.iter().any(|m| provider.mfa_amr.contains(m))
        || acr.as_ref().is_some_and(|a| provider.mfa_acr.contains(a));
    let device_flow = amr.iter().any(|m| provider.device_flow_amr.contains(m))
        || acr.is_some_and(|a| provider.device_flow_acr.contains(&a));
    let auth_time = match claims.get("auth_time") {
        None => None,
        Some(v) => Some(numeric_date(v).ok_or_else(|| shape("auth_time", "must be a number"))?),
    };
    Ok(Identity {
        issuer: provider.issuer.clone(),
        subject,
        email,
        groups,
        attributes,
        mfa,
        auth_time,
        issued_at,
        expires_at,
        readable_name,
        device_flow,
    })
}

/// Reads a NumericDate: a JSON number, floored to whole seconds. Strings and the like are `None`.
pub fn numeric_date(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.floor() as i64)
        }),
        _ => None,
    }
}

/// The `email` claim if the issuer vouches for it, else `None`.
fn verified_email(
    claims: &Map<String, Value>,
    provider: &ProviderConfig,
) -> Result<Option<String>, ClaimError> {
    let email = optional_string(claims, "email")?.filter(|e| !e.is_empty());
    let verified = match claims.get("email_verified") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        // Sign in with Apple documents `email_verified` as a boolean or the strings "true" and
        // "false", and Amazon Cognito sends the strings; any other string is not a yes.
        Some(Value::String(s)) => Some(s == "true"),
        Some(_) => return Err(shape("email_verified", "must be a boolean")),
    };
    // SECURITY: an explicit `false` always drops the email, even with `assume`.
    let counts = match (verified, provider.email_verified) {
        (Some(v), _) => v,
        (None, EmailVerified::Assume) => true,
        (None, EmailVerified::Require) => false,
    };
    Ok(email.filter(|_| counts))
}

/// `session_name_claim`, else the verified email, else `sub`. A missing, empty or non-string
/// name claim falls through: this name is for reading, not for deciding.
fn readable_name(
    claims: &Map<String, Value>,
    provider: &ProviderConfig,
    verified_email: Option<&str>,
    subject: &str,
) -> String {
    let claim = provider.session_name_claim.as_str();
    // SECURITY: naming `email` here must not bring back an unverified address.
    let named = if claim == "email" {
        verified_email
    } else {
        match claims.get(claim) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.as_str()),
            _ => None,
        }
    };
    named.or(verified_email).unwrap_or(subject).to_owned()
}

fn groups(claims: &Map<String, Value>, path: &[String]) -> Result<Vec<String>, ClaimError> {
    let dotted = path.join(".");
    // SECURITY: Entra ID and others replace an oversized groups claim with a pointer in
    // `_claim_names`; treating that as "no groups" would silently change authorization.
    if let Some(Value::Object(names)) = claims.get("_claim_names")
        && path.first().is_some_and(|first| names.contains_key(first))
    {
        return Err(ClaimError::GroupsOverage(dotted));
    }
    let mut node: Option<&Value> = None;
    let mut current = claims;
    for (i, segment) in path.iter().enumerate() {
        match current.get(segment) {
            None => return Ok(Vec::new()),
            Some(v) if i + 1 == path.len() => node = Some(v),
            Some(Value::Object(inner)) => current = inner,
            Some(_) => {
                return Err(shape(
                    &dotted,
                    "must be an object path to an array of strings",
                ));
            }
        }
    }
    match node {
        None => Ok(Vec::new()),
        Some(v) => string_array(v).ok_or_else(|| shape(&dotted, "must be an array of strings")),
    }
}

fn attribute(name: &str, v: &Value) -> Result<Attribute, ClaimError> {
    match v {
        Value::String(s) => Ok(Attribute::Text(s.clone())),
        Value::Bool(b) => Ok(Attribute::Bool(*b)),
        Value::Number(n) => n.as_i64().map(Attribute::Number).ok_or_else(|| {
            shape(
                name,
                "must be a string, boolean, integer or array of strings",
            )
        }),
        Value::Array(_) => string_array(v).map(Attribute::List).ok_or_else(|| {
            shape(
                name,
                "must be a string, boolean, integer or array of strings",
            )
        }),
        _ => Err(shape(
            name,
            "must be a string, boolean, integer or array of strings",
        )),
    }
}

fn optional_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, ClaimError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(shape(name, "must be a string")),
    }
}

fn string_array(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn shape(claim: &str, expected: &'static str) -> ClaimError {
    ClaimError::Shape {
        claim: claim.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::TokenKind;

    fn provider(groups_claim: &str) -> ProviderConfig {
        ProviderConfig {
            issuer: "https://idp.example.com".into(),
            audiences: vec!["cli".into()],
            cli_client_id: "cli".into(),
            groups_claim: groups_claim.split('.').map(str::to_owned).collect(),
            attributes: vec!["department".into(), "cost_center".into()],
            mfa_amr: vec!["mfa".into()],
            mfa_acr: vec!["urn:mfa".into()],
            token: TokenKind::Id,
            max_token_age: Duration::from_secs(3600),
            ca_file: None,
            email_verified: EmailVerified::Require,
            session_name_claim: "preferred_username".into(),
            cli_scopes: None,
            device_flow_amr: Vec::new(),
            device_flow_acr: Vec::new(),
        }
    }

    fn map_with(v: Value, provider: &ProviderConfig) -> Identity {
        let Value::Object(m) = v else {
            panic!("object")
        };
        map_claims(&m, provider, 1, 2).unwrap()
    }

    fn map(v: Value, groups_claim: &str) -> Result<Identity, ClaimError> {
        let Value::Object(m) = v else {
            panic!("object")
        };
        map_claims(&m, &provider(groups_claim), 1, 2)
    }

    #[test]
    fn maps_groups_attributes_and_mfa() {
        let id = map(
            json!({"sub": "u1", "email": "a@example.com", "email_verified": true,
                   "groups": ["eng", "sre"],
                   "department": "platform", "amr": ["pwd", "mfa"], "auth_time": 5,
                   "ignored": "x"}),
            "groups",
        )
        .unwrap();
        assert_eq!(id.subject, "u1");
        assert_eq!(id.groups, vec!["eng", "sre"]);
        assert_eq!(
            id.attributes.get("department"),
            Some(&Attribute::Text("platform".into()))
        );
        assert!(!id.attributes.contains_key("ignored"));
        assert!(id.mfa);
        assert_eq!(id.auth_time, Some(5));
        assert_eq!(id.principal_id(), "https://idp.example.com#u1");
    }

    #[test]
    fn nested_and_colon_group_paths() {
        let id = map(
            json!({"sub": "u", "realm_access": {"roles": ["a"]}}),
            "realm_access.roles",
        )
        .unwrap();
        assert_eq!(id.groups, vec!["a"]);
        let id = map(
            json!({"sub": "u", "cognito:groups": ["b"]}),
            "cognito:groups",
        )
        .unwrap();
        assert_eq!(id.groups, vec!["b"]);
    }

    #[test]
    fn missing_groups_means_no_groups() {
        assert!(
            map(json!({"sub": "u"}), "groups")
                .unwrap()
                .groups
                .is_empty()
        );
        assert!(
            map(
                json!({"sub": "u", "realm_access": {}}),
                "realm_access.roles"
            )
            .unwrap()
            .groups
            .is_empty()
        );
    }

    #[test]
    fn any_other_groups_shape_rejects_the_token() {
        for bad in [
            json!({"sub": "u", "groups": "eng"}),
            json!({"sub": "u", "groups": ["eng", 7]}),
            json!({"sub": "u", "groups": [["eng"]]}),
            json!({"sub": "u", "groups": {"eng": true}}),
            json!({"sub": "u", "groups": null}),
        ] {
            assert!(map(bad.clone(), "groups").is_err(), "{bad}");
        }
        assert!(
            map(
                json!({"sub": "u", "realm_access": "x"}),
                "realm_access.roles"
            )
            .is_err()
        );
    }

    #[test]
    fn groups_overage_fails_closed() {
        let err = map(
            json!({"sub": "u", "_claim_names": {"groups": "src1"},
                   "_claim_sources": {"src1": {"endpoint": "https://graph.example/x"}}}),
            "groups",
        )
        .unwrap_err();
        assert!(matches!(err, ClaimError::GroupsOverage(_)));
    }

    #[test]
    fn amr_acr_and_email_shapes_are_strict() {
        assert!(map(json!({"sub": "u", "amr": "mfa"}), "groups").is_err());
        assert!(map(json!({"sub": "u", "email": ["a"]}), "groups").is_err());
        assert!(map(json!({"sub": "u", "department": {"x": 1}}), "groups").is_err());
        assert!(map(json!({"sub": "", "groups": []}), "groups").is_err());
        assert!(map(json!({"sub": 5}), "groups").is_err());
        let id = map(json!({"sub": "u", "acr": "urn:mfa"}), "groups").unwrap();
        assert!(id.mfa);
        let id = map(json!({"sub": "u", "amr": ["pwd"]}), "groups").unwrap();
        assert!(!id.mfa);
    }

    #[test]
    fn numeric_dates_accept_numbers_only() {
        assert_eq!(numeric_date(&json!(10)), Some(10));
        assert_eq!(numeric_date(&json!(10.9)), Some(10));
        assert_eq!(numeric_date(&json!("10")), None);
        assert_eq!(numeric_date(&json!(null)), None);
        assert_eq!(numeric_date(&json!(1e300)), None);
    }

    #[test]
    fn an_unverified_or_unvouched_email_is_dropped() {
        let p = provider("groups");
        for claims in [
            json!({"sub": "u", "email": "ceo@example.com"}),
            json!({"sub": "u", "email": "ceo@example.com", "email_verified": false}),
            json!({"sub": "u", "email": "ceo@example.com", "email_verified": "false"}),
            json!({"sub": "u", "email": "ceo@example.com", "email_verified": "yes"}),
        ] {
            let id = map_with(claims.clone(), &p);
            assert_eq!(id.email, None, "{claims}");
            assert_eq!(id.readable_name(), "u", "{claims}");
        }
        assert!(
            map(
                json!({"sub": "u", "email": "a@x", "email_verified": 1}),
                "groups"
            )
            .is_err()
        );
    }

    #[test]
    fn a_verified_email_is_kept_as_boolean_or_apple_and_cognito_string() {
        let p = provider("groups");
        for verified in [json!(true), json!("true")] {
            let id = map_with(
                json!({"sub": "u", "email": "a@example.com", "email_verified": verified}),
                &p,
            );
            assert_eq!(id.email.as_deref(), Some("a@example.com"));
            assert_eq!(id.readable_name(), "a@example.com");
        }
        // An empty address is no address.
        let id = map_with(json!({"sub": "u", "email": "", "email_verified": true}), &p);
        assert_eq!(id.email, None);
    }

    #[test]
    fn assume_keeps_an_email_without_the_claim_but_never_against_an_explicit_false() {
        let p = ProviderConfig {
            email_verified: EmailVerified::Assume,
            ..provider("groups")
        };
        let id = map_with(json!({"sub": "u", "email": "a@example.com"}), &p);
        assert_eq!(id.email.as_deref(), Some("a@example.com"));
        let id = map_with(
            json!({"sub": "u", "email": "a@example.com", "email_verified": false}),
            &p,
        );
        assert_eq!(id.email, None);
    }

    #[test]
    fn the_readable_name_falls_back_from_the_claim_to_the_verified_email_to_sub() {
        let p = provider("groups");
        let verified = json!({"sub": "u", "preferred_username": "ana",
                              "email": "a@example.com", "email_verified": true});
        assert_eq!(map_with(verified, &p).readable_name(), "ana");
        for unusable in [json!(""), json!("  "), json!(["ana"]), json!(null)] {
            let claims = json!({"sub": "u", "preferred_username": unusable,
                                "email": "a@example.com", "email_verified": true});
            assert_eq!(map_with(claims, &p).readable_name(), "a@example.com");
        }
        let unverified = json!({"sub": "u", "email": "ceo@example.com"});
        assert_eq!(map_with(unverified, &p).readable_name(), "u");

        let by_name = ProviderConfig {
            session_name_claim: "name".into(),
            ..provider("groups")
        };
        let claims = json!({"sub": "u", "name": "Ana Lima", "preferred_username": "ana"});
        assert_eq!(map_with(claims, &by_name).readable_name(), "Ana Lima");

        // Naming `email` as the claim still needs it verified.
        let by_email = ProviderConfig {
            session_name_claim: "email".into(),
            ..provider("groups")
        };
        let claims = json!({"sub": "u", "email": "ceo@example.com", "preferred_username": "ana"});
        assert_eq!(map_with(claims, &by_email).readable_name(), "u");
        let claims = json!({"sub": "u", "email": "a@example.com", "email_verified": true});
        assert_eq!(map_with(claims, &by_email).readable_name(), "a@example.com");
    }

    #[test]
    fn a_device_flow_login_shows_only_where_the_issuer_marks_it() {
        let claims = json!({"sub": "u1", "amr": ["pwd", "mfa"], "acr": "urn:idp:loa:device"});
        // By default nothing marks the device flow: OIDC defines no such claim.
        assert!(!map_with(claims.clone(), &provider("groups")).device_flow);
        let by_acr = ProviderConfig {
            device_flow_acr: vec!["urn:idp:loa:device".into()],
            ..provider("groups")
        };
        assert!(map_with(claims.clone(), &by_acr).device_flow);
        let by_amr = ProviderConfig {
            device_flow_amr: vec!["device".into()],
            ..provider("groups")
        };
        assert!(!map_with(claims, &by_amr).device_flow);
        assert!(map_with(json!({"sub": "u1", "amr": ["device", "pwd"]}), &by_amr).device_flow);
    }
}
