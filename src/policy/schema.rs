//! The Cedar schema: parsed once, plus the facts latchkey reads from it to build entities.
//!
//! Pure. The attributes of `Latchkey::User` that the schema declares are the only identity
//! attributes that reach Cedar, and their declared types are checked before a request is built.

use std::collections::BTreeMap;

use cedar_policy::{Schema, SchemaFragment};
use serde_json::Value;

/// The parsed schema and the `Latchkey::User` attributes it declares.
#[derive(Debug)]
pub(crate) struct SchemaInfo {
    /// The schema, for validation of policies, entities and requests.
    pub(crate) schema: Schema,
    /// Declared attributes of `Latchkey::User`, by name.
    pub(crate) user_attributes: BTreeMap<String, AttrType>,
}

/// A declared attribute's type, as far as an identity can supply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttrType {
    /// The value's kind.
    pub(crate) kind: AttrKind,
    /// Whether the schema requires the attribute.
    pub(crate) required: bool,
}

/// The kinds of values an identity attribute can have in Cedar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrKind {
    /// `Bool`.
    Bool,
    /// `Long`.
    Long,
    /// Anything an identity never supplies (records, entities, extension types).
    Other,
    /// `Set<String>`.
    StringSet,
    /// `String`.
    String,
}

impl SchemaInfo {
    /// Parses schema text in the Cedar schema format.
    pub(crate) fn parse(text: &str) -> Result<Self, Vec<String>> {
        let schema = match Schema::from_cedarschema_str(text) {
            Ok((s, _warnings)) => s,
            Err(e) => return Err(vec![one_line(&e.to_string())]),
        };
        let json = SchemaFragment::from_cedarschema_str(text)
            .map_err(|e| vec![one_line(&e.to_string())])
            .and_then(|(f, _)| {
                f.to_json_value()
                    .map_err(|e| vec![one_line(&e.to_string())])
            })?;
        let attrs = json
            .pointer("/Latchkey/entityTypes/User/shape/attributes")
            .and_then(Value::as_object);
        let Some(attrs) = attrs else {
            return Err(vec![
                "the schema must declare `Latchkey::User` with a record of attributes".to_owned(),
            ]);
        };
        let user_attributes: BTreeMap<String, AttrType> = attrs
            .iter()
            .map(|(name, v)| {
                let required = v.get("required").and_then(Value::as_bool).unwrap_or(true);
                (
                    name.clone(),
                    AttrType {
                        kind: kind_of(v),
                        required,
                    },
                )
            })
            .collect();
        let mut problems = Vec::new();
        for (name, kind, required) in BUILTIN {
            let declared = user_attributes.get(*name);
            let ok = match declared {
                None => !*required,
                Some(t) => t.kind == *kind && t.required == *required,
            };
            if !ok {
                let mark = if *required { "" } else { "?" };
                problems.push(format!(
                    "`Latchkey::User` must declare `{name}{mark}: {}`",
                    kind_name(*kind)
                ));
            }
        }
        for (name, t) in &user_attributes {
            if t.required && !BUILTIN.iter().any(|(b, _, _)| b == name) {
                problems.push(format!(
                    "`Latchkey::User` attribute `{name}` comes from the token and must be optional (`{name}?`)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self {
                schema,
                user_attributes,
            })
        } else {
            Err(problems)
        }
    }
}

fn kind_of(v: &Value) -> AttrKind {
    let ty = v.get("type").and_then(Value::as_str);
    let name = v.get("name").and_then(Value::as_str);
    let base = |n: &str| match n.trim_start_matches("__cedar::") {
        "String" => AttrKind::String,
        "Long" => AttrKind::Long,
        "Bool" | "Boolean" => AttrKind::Bool,
        _ => AttrKind::Other,
    };
    match (ty, name) {
        (Some("EntityOrCommon"), Some(n)) => base(n),
        (Some("Set"), _) => match v.get("element").map(kind_of) {
            Some(AttrKind::String) => AttrKind::StringSet,
            _ => AttrKind::Other,
        },
        (Some("String" | "Long" | "Boolean" | "Bool"), _) => base(ty.unwrap_or_default()),
        _ => AttrKind::Other,
    }
}

fn kind_name(k: AttrKind) -> &'static str {
    match k {
        AttrKind::Bool => "Bool",
        AttrKind::Long => "Long",
        AttrKind::Other => "?",
        AttrKind::StringSet => "Set<String>",
        AttrKind::String => "String",
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Attributes latchkey fills from the verified identity itself, never from kept claims:
/// name, type, and whether the schema must require it.
// SECURITY: a kept claim named like one of these (a `mfa` claim, say) never reaches Cedar; the
// verified identity's field does.
pub(crate) const BUILTIN: &[(&str, AttrKind, bool)] = &[
    ("email", AttrKind::String, false),
    ("issuer", AttrKind::String, true),
    ("mfa", AttrKind::Bool, true),
    ("subject", AttrKind::String, true),
];
