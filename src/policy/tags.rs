//! Session tag templates: literal text with `{placeholder}`s filled from the identity.
//!
//! Pure. A tag that cannot be rendered exactly is an error, never a dropped or shortened tag:
//! session tags drive attribute-based access control in AWS, and a grant must fail rather than
//! silently change what it grants.

use crate::identity::{Attribute, Identity};

/// A parsed tag value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    parts: Vec<Part>,
}

/// What a placeholder names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// A kept identity attribute, by name.
    Attribute(String),
    /// `{email}`: only a verified address (see [`Identity::email`]); otherwise the tag fails.
    Email,
    /// `{issuer}`.
    Issuer,
    /// `{subject}`.
    Subject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// Why a role's session tags could not be rendered for an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// A placeholder's value is a list, which has no single text form.
    #[error("session tag `{tag}`: attribute `{attribute}` is a list and cannot be a tag value")]
    ListAttribute {
        /// The tag key.
        tag: String,
        /// The attribute.
        attribute: String,
    },
    /// A placeholder names a value the identity does not have.
    #[error("session tag `{tag}` needs `{attribute}`, which the identity does not have")]
    MissingAttribute {
        /// The tag key.
        tag: String,
        /// The attribute or identity field.
        attribute: String,
    },
    /// The rendered value breaks an STS limit.
    #[error("session tag `{tag}`: the value {problem}")]
    InvalidValue {
        /// The tag key.
        tag: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Why a text is not a tag template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A brace that does not surround a placeholder name.
    #[error(
        "`{0}` is not a template: write `{{name}}` around an attribute name, and no other braces"
    )]
    Braces(String),
    /// Literal text STS would refuse in a tag value.
    #[error("`{0}` has characters STS does not allow in a tag value")]
    Characters(String),
}

// === impl TagTemplate ===

impl TagTemplate {
    /// Parses `text`; `{` and `}` may appear only around a placeholder name.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
                Some(i) => {
                    let (literal, tail) = rest.split_at(i);
                    if !literal.is_empty() {
                        parts.push(Part::Literal(literal.to_owned()));
                    }
                    let inner = tail
                        .strip_prefix('{')
                        .and_then(|t| t.split_once('}'))
                        .filter(|(name, _)| is_placeholder_name(name));
                    let Some((name, after)) = inner else {
                        return Err(TemplateError::Braces(text.to_owned()));
                    };
                    parts.push(Part::Placeholder(match name {
                        "email" => Placeholder::Email,
                        "issuer" => Placeholder::Issuer,
                        "subject" => Placeholder::Subject,
                        other => Placeholder::Attribute(other.to_owned()),
                    }));
                    rest = after;
                }
            }
        }
        for p in &parts {
            if let Part::Literal(l) = p
                && crate::aws::input::check_tag_value("", l).is_err()
            {
                return Err(TemplateError::Characters(text.to_owned()));
            }
        }
        Ok(Self { parts })
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(p) => Some(p),
            Part::Literal(_) => None,
        })
    }

    /// Renders the template for `identity`; `tag` is the key, for errors.
    pub fn render(&self, tag: &str, identity: &Identity) -> Result<String, TagError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Placeholder(p) => out.push_str(&value(tag, p, identity)?),
            }
        }
        if crate::aws::input::check_tag_value("", &out).is_err() {
            return Err(TagError::InvalidValue {
                tag: tag.to_owned(),
                problem: if out.chars().count() > MAX_TAG_VALUE_CHARS {
                    "is longer than the 256 characters STS accepts"
                } else {
                    "has characters STS does not allow"
                },
            });
        }
        Ok(out)
    }
}

fn value(tag: &str, p: &Placeholder, identity: &Identity) -> Result<String, TagError> {
    let missing = |attribute: &str| TagError::MissingAttribute {
        tag: tag.to_owned(),
        attribute: attribute.to_owned(),
    };
    match p {
        // SECURITY: `Identity::email` holds only a verified address, so a user who typed someone
        // else's address at the IdP fails the grant instead of being tagged with it.
        Placeholder::Email => identity.email.clone().ok_or_else(|| missing("email")),
        Placeholder::Issuer => Ok(identity.issuer.clone()),
        Placeholder::Subject => Ok(identity.subject.clone()),
        Placeholder::Attribute(name) => match identity.attributes.get(name) {
            None => Err(missing(name)),
            Some(Attribute::Text(s)) => Ok(s.clone()),
            Some(Attribute::Number(n)) => Ok(n.to_string()),
            Some(Attribute::Bool(b)) => Ok(b.to_string()),
            Some(Attribute::List(_)) => Err(TagError::ListAttribute {
                tag: tag.to_owned(),
                attribute: name.clone(),
            }),
        },
    }
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
}

const MAX_TAG_VALUE_CHARS: usize = 256;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::{EmailVerified, ProviderConfig, TokenKind};
    use crate::identity::map_claims;

    fn identity(claims: Value) -> Identity {
        let provider = ProviderConfig {
            issuer: "https://idp.example.com".into(),
            audiences: vec!["cli".into()],
            cli_client_id: "cli".into(),
            groups_claim: vec!["groups".into()],
            attributes: Vec::new(),
            mfa_amr: Vec::new(),
            mfa_acr: Vec::new(),
            token: TokenKind::Id,
            max_token_age: Duration::from_secs(3600),
            ca_file: None,
            email_verified: EmailVerified::Require,
            session_name_claim: "preferred_username".into(),
            cli_scopes: None,
            device_flow_amr: Vec::new(),
            device_flow_acr: Vec::new(),
        };
        let Value::Object(claims) = claims else {
            panic!("object")
        };
        map_claims(&claims, &provider, 1, 2).unwrap()
    }

    #[test]
    fn an_email_tag_renders_only_a_verified_address() {
        let template = TagTemplate::parse("{email}").unwrap();
        let verified =
            identity(json!({"sub": "u", "email": "a@example.com", "email_verified": true}));
        assert_eq!(
            template.render("email", &verified).unwrap(),
            "a@example.com"
        );
        for claims in [
            json!({"sub": "u", "email": "ceo@example.com"}),
            json!({"sub": "u", "email": "ceo@example.com", "email_verified": false}),
        ] {
            let err = template.render("email", &identity(claims)).unwrap_err();
            assert_eq!(
                err,
                TagError::MissingAttribute {
                    tag: "email".into(),
                    attribute: "email".into()
                }
            );
        }
    }
}
