//! The Cedar side: policies generated from the catalog, the operators' `*.cedar` files, strict
//! validation against the schema, and the per-resource slices that keep a decision fast.
//!
//! Pure: texts in, an [`Engine`] (or problems with their locations) out.
//!
//! Slicing: Cedar evaluates every policy of the set it is given. With thousands of policies
//! that costs milliseconds, yet almost all of them name one role or target in their scope
//! (`resource == Latchkey::Role::"x"`, `resource in …`) and one action. Each policy is therefore
//! filed under every `(action, resource)` its scope can match, or under "any resource" for the
//! action; a request is evaluated against its own slice, which also holds the "any resource"
//! policies. A policy left out of a slice has a scope that cannot match the request, so it could
//! neither be satisfied nor fail to evaluate (a scope that does not match short-circuits the
//! condition): the decision is the one the whole set would give.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Entities, EntityUid, Policy, PolicyId, PolicySet,
    ResourceConstraint, Response, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::{Value, json};

use super::catalog::{Catalog, Role, human_duration};
use super::request::{Action, PerAction, Types};
use super::schema::SchemaInfo;
use crate::config::ConfigIssue;

/// A policy with where it came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) policy: Policy,
    pub(crate) location: String,
    pub(crate) generated: bool,
}

/// The validated policies, sliced for evaluation.
#[derive(Debug)]
pub(crate) struct Engine {
    all: PolicySet,
    slices: HashMap<(Action, EntityUid), PolicySet>,
    unscoped: PerAction<PolicySet>,
    /// The non-blank `@reason` of each policy, by id: read at load, as Cedar's own lookup parses
    /// the annotation key on every call.
    reasons: HashMap<String, String>,
    authorizer: Authorizer,
}

impl Engine {
    /// Validates `policies` against the schema and the catalog, and slices them.
    pub(crate) fn build(
        policies: Vec<Located>,
        schema: &SchemaInfo,
        catalog: &Catalog,
        types: &Types,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut all = PolicySet::new();
        let mut ok = true;
        let mut locations = HashMap::new();
        for p in policies {
            let id = p.policy.id().to_string();
            if let Some(first) = seen.get(&id) {
                issues.push(issue(
                    &p.location,
                    format!("policy id `{id}` is already used at {first}"),
                ));
                ok = false;
                continue;
            }
            seen.insert(id.clone(), p.location.clone());
            if !p.generated {
                ok &= check_references(&p, &id, types, catalog, issues);
            }
            locations.insert(id, p.location.clone());
            if let Err(e) = all.add(p.policy) {
                issues.push(issue(&p.location, one_line(&e.to_string())));
                ok = false;
            }
        }
        let validation =
            Validator::new(schema.schema.clone()).validate(&all, ValidationMode::Strict);
        // Warnings count as errors: they flag policies that can never apply (a forbid that
        // protects nothing) and confusable or bidirectional text in identifiers and strings.
        let found = validation
            .validation_errors()
            .map(|e| {
                (
                    e.policy_id(),
                    e.to_string(),
                    e.help().map(|h| h.to_string()),
                )
            })
            .chain(validation.validation_warnings().map(|w| {
                (
                    w.policy_id(),
                    w.to_string(),
                    w.help().map(|h| h.to_string()),
                )
            }));
        for (id, text, help) in found {
            let id = id.to_string();
            let location = locations.get(&id).map_or("(policies)", String::as_str);
            let mut message = one_line(&text);
            if let Some(help) = help {
                message.push_str(&format!(" ({})", one_line(&help)));
            }
            issues.push(issue(location, message));
            ok = false;
        }
        if !ok {
            return None;
        }
        let (slices, unscoped) = slice(&all, types);
        let reasons = all
            .policies()
            .filter_map(|p| {
                p.annotations()
                    .find(|(key, _)| *key == "reason")
                    .filter(|(_, text)| !text.trim().is_empty())
                    .map(|(_, text)| (p.id().to_string(), text.to_owned()))
            })
            .collect();
        Some(Self {
            all,
            slices,
            unscoped,
            reasons,
            authorizer: Authorizer::new(),
        })
    }

    /// Evaluates `request` against the slice for `(action, resource)`.
    pub(crate) fn evaluate(
        &self,
        action: Action,
        resource: &EntityUid,
        request: &cedar_policy::Request,
        entities: &Entities,
    ) -> Response {
        let set = self
            .slices
            .get(&(action, resource.clone()))
            .unwrap_or_else(|| self.unscoped.get(action));
        self.authorizer.is_authorized(request, set, entities)
    }

    /// The same engine evaluating every request against the whole set, to check the slicing.
    #[cfg(test)]
    pub(crate) fn unsliced(self) -> Self {
        let all = self.all.clone();
        Self {
            slices: HashMap::new(),
            unscoped: PerAction(Action::ALL.map(|_| all.clone())),
            ..self
        }
    }

    /// The `@reason` annotation of a policy.
    pub(crate) fn reason(&self, id: &str) -> Option<&str> {
        self.reasons.get(id).map(String::as_str)
    }

    /// Every policy, generated and written.
    pub(crate) fn policies(&self) -> &PolicySet {
        &self.all
    }
}

/// The policies a catalog role stands for: ids `catalog.<rule>.<role>`, each with a `@reason`.
pub(crate) fn generated(role: &Role, index: usize) -> Vec<Result<Located, ConfigIssue>> {
    let name = role.name();
    let scope = |effect: &str, reason: String, conditions: Value| {
        json!({
            "effect": effect,
            "principal": {"op": "All"},
            "action": {"op": "==", "entity": {"type": "Latchkey::Action", "id": "assume"}},
            "resource": {"op": "==", "entity": {"type": "Latchkey::Role", "id": name}},
            "conditions": conditions,
            "annotations": {"reason": reason},
        })
    };
    let context = |attr: &str| json!({".": {"left": {"Var": "context"}, "attr": attr}});
    let mut out = Vec::new();
    if !role.allow_groups().is_empty() {
        // Built as JSON data: a group id with quotes or `::` stays one opaque id.
        let groups: Vec<Value> = role
            .allow_groups()
            .iter()
            .map(|g| json!({"Value": {"__entity": {"type": "Latchkey::Group", "id": g}}}))
            .collect();
        let who = role
            .allow_groups()
            .iter()
            .map(|g| format!("`{g}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let body = json!({"in": {"left": {"Var": "principal"}, "right": {"Set": groups}}});
        out.push((
            "allow_groups",
            scope(
                "permit",
                format!("members of {who} may assume `{name}`"),
                json!([{"kind": "when", "body": body}]),
            ),
        ));
    }
    if role.requires_mfa() {
        out.push((
            "requires_mfa",
            scope(
                "forbid",
                format!("role `{name}` requires MFA; log in again with a second factor"),
                json!([{"kind": "unless", "body": context("mfa")}]),
            ),
        ));
    }
    if let Some(age) = role.max_auth_age() {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        let body = json!({">": {"left": context("auth_age_secs"), "right": {"Value": secs}}});
        out.push((
            "max_auth_age",
            scope(
                "forbid",
                format!(
                    "role `{name}` requires a login within the last {}; log in again",
                    human_duration(age)
                ),
                json!([{"kind": "when", "body": body}]),
            ),
        ));
    }
    out.into_iter()
        .map(|(rule, json)| {
            let id = format!("catalog.{rule}.{name}");
            let location = format!("catalog.toml: role[{index}] (`{name}`)");
            Policy::from_json(Some(PolicyId::new(&id)), json)
                .map(|policy| Located {
                    policy,
                    location: location.clone(),
                    generated: true,
                })
                .map_err(|e| issue(&location, format!("policy `{id}`: {e}")))
        })
        .collect()
}

/// Parses one `*.cedar` file; each policy takes its id from its `@id` annotation.
pub(crate) fn parse_file(file: &str, text: &str, issues: &mut Vec<ConfigIssue>) -> Vec<Located> {
    let set = match PolicySet::from_str(text) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors.iter() {
                let line = e
                    .labels()
                    .and_then(|mut l| l.next())
                    .map_or(1, |l| line_at(text, l.offset()));
                issues.push(issue(&format!("{file}:{line}"), one_line(&e.to_string())));
            }
            return Vec::new();
        }
    };
    if set.templates().next().is_some() {
        issues.push(issue(
            file,
            "policy templates (`?principal`, `?resource`) are not supported".to_owned(),
        ));
    }
    let mut out = Vec::new();
    let mut from = 0;
    for p in set.policies() {
        let src = p.to_string();
        let offset = text
            .get(from..)
            .and_then(|rest| rest.find(&src))
            .map(|i| i + from);
        let line = offset.map_or(1, |o| line_at(text, o));
        if let Some(o) = offset {
            from = o + src.len();
        }
        let location = format!("{file}:{line}");
        match p.annotation("id").map(str::trim) {
            None | Some("") => issues.push(issue(
                &location,
                "the policy has no `@id(\"...\")` annotation".to_owned(),
            )),
            Some(id) if id.starts_with("catalog.") || id.starts_with("latchkey.") => {
                issues.push(issue(
                    &location,
                    format!(
                        "policy id `{id}`: ids starting `catalog.` or `latchkey.` are reserved"
                    ),
                ));
            }
            Some(id) => out.push(Located {
                policy: p.new_id(PolicyId::new(id)),
                location: format!("{location} (`{id}`)"),
                generated: false,
            }),
        }
    }
    out
}

/// Every role and target a written policy names must be in the catalog: a typo would otherwise
/// be a permit that never applies, or a forbid that silently protects nothing.
fn check_references(
    p: &Located,
    id: &str,
    types: &Types,
    catalog: &Catalog,
    issues: &mut Vec<ConfigIssue>,
) -> bool {
    let mut ok = true;
    for uid in p.policy.entity_literals() {
        let name = uid.id().unescaped();
        let unknown = if uid.type_name() == &types.role {
            (!catalog.declared_roles.contains(name)).then_some("role")
        } else if uid.type_name() == &types.target {
            (!catalog.declared_targets.contains(name)).then_some("target")
        } else {
            None
        };
        if let Some(kind) = unknown {
            issues.push(issue(
                &p.location,
                format!("unknown {kind} `{name}` in policy `{id}`"),
            ));
            ok = false;
        }
    }
    ok
}

type Slices = (
    HashMap<(Action, EntityUid), PolicySet>,
    PerAction<PolicySet>,
);

fn slice(all: &PolicySet, types: &Types) -> Slices {
    let mut scoped: HashMap<(Action, EntityUid), Vec<&Policy>> = HashMap::new();
    let mut unscoped: PerAction<Vec<&Policy>> = PerAction(Default::default());
    for p in all.policies() {
        let actions = actions_of(p, types);
        // INVARIANT: resource entities are built without parents, so `resource in X` matches
        // exactly `X`, like `resource == X`.
        let resource = match p.resource_constraint() {
            ResourceConstraint::Eq(uid)
            | ResourceConstraint::In(uid)
            | ResourceConstraint::IsIn(_, uid) => Some(uid),
            ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
        };
        for a in actions {
            match &resource {
                Some(uid) => scoped.entry((a, uid.clone())).or_default().push(p),
                None => unscoped.get_mut(a).push(p),
            }
        }
    }
    let build = |ps: &[&Policy]| {
        let mut set = PolicySet::new();
        for p in ps {
            // Ids are unique in `all`, and each policy is filed once per slice.
            let _ = set.add((*p).clone());
        }
        set
    };
    let slices = scoped
        .into_iter()
        .map(|((a, uid), mut ps)| {
            ps.extend(unscoped.get(a).iter().copied());
            ((a, uid), build(&ps))
        })
        .collect();
    let unscoped = PerAction(Action::ALL.map(|a| build(unscoped.get(a))));
    (slices, unscoped)
}

/// The actions a policy's scope can match; all of them when in doubt (an action group, say).
fn actions_of(p: &Policy, types: &Types) -> Vec<Action> {
    let named = |uid: &EntityUid| Action::ALL.into_iter().find(|a| types.action(*a) == uid);
    match p.action_constraint() {
        ActionConstraint::Any => Action::ALL.to_vec(),
        ActionConstraint::Eq(uid) => named(&uid).map_or_else(|| Action::ALL.to_vec(), |a| vec![a]),
        ActionConstraint::In(uids) => {
            let found: Option<Vec<Action>> = uids.iter().map(named).collect();
            found.unwrap_or_else(|| Action::ALL.to_vec())
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn issue(path: &str, message: String) -> ConfigIssue {
    ConfigIssue {
        path: path.to_owned(),
        message,
    }
}
