//! Infrastructure roles: LOGIN roles the operator configuration puts into every cluster (a monitoring user,
//! say), read from Secrets the configuration names, as upstream's `getInfrastructureRoleDefinitions`,
//! `getInfrastructureRoles` and `getInfrastructureRole` do (postgres-operator `pkg/controller/util.go`; the
//! formats are documented in its `docs/user.md`, "Infrastructure roles"). Pure: `reconcile::infrastructure`
//! fetches the Secrets and ConfigMaps and hands them in as the API returned them, so every rule is
//! unit-tested without Kubernetes.
//!
//! The formats, both upstream's:
//! - **One role per `infrastructure_roles_secrets` entry**: `secretname` (`namespace/name`, or a name in
//!   the operator's namespace), the role's name in key `userkey` (default `user`, else `defaultuservalue`),
//!   its password in `passwordkey` (default `password`), the role it is a member of in `rolekey` (default
//!   `inrole`, else `defaultrolevalue`). `details` names a key of the same Secret holding a YAML role
//!   description (below) for flags, more memberships and settings.
//! - **Template**: the deprecated `infrastructure_roles_secret_name`, or an entry with `template: true`:
//!   `user1`, `password1`, `inrole1`, `user2`, … (the key names are the prefixes), read until the first
//!   missing `userN`.
//! - **A ConfigMap of the same name** next to any of those Secrets: each key is a role name, each value a
//!   YAML role description (`inrole` list, `user_flags` list, `db_parameters` map, `admin_role`, as
//!   upstream's `PgUser` YAML); the password is the Secret's key of the same name. The description replaces
//!   what the Secret's keys said about a role of that name.
//!
//! Each role is LOGIN unless its flags say NOLOGIN, origin [`Origin::Infrastructure`], with the password
//! inline ([`Password::Given`]). Upstream also copies every infrastructure role into a credentials Secret of
//! each cluster; pgherd does not, so the password lives only in the Secret its owner manages and a change
//! there needs no copy to be found and updated.
//!
//! Deviations from upstream's code, each where it loses a role its documentation promises or fails:
//! - With `details`, upstream decodes the description into a user whose name and password YAML cannot
//!   carry (`yaml:"-"`), so the role is always dropped as incomplete; here name, password and the
//!   `rolekey` membership still come from their keys and the description adds to them.
//! - A template with custom key names uses them as prefixes; upstream builds the keys from them but then
//!   only recognises the literal `user`, `password` and `inrole`.
//! - A ConfigMap description without a Secret key of its name keeps the password the Secret's other keys
//!   gave that role ("override … except a password", upstream's comment); upstream drops it.
//! - An empty membership is not asked for (upstream creates the role `IN ROLE ""`, which Postgres
//!   refuses).
//! - `defaultuservalue`, `defaultrolevalue`, `details` and `template` count in an `OperatorConfiguration`
//!   too, as its CRD schema offers them; upstream's import drops them (`pkg/controller/operator_config.go`
//!   `importConfigurationFromCRD` copies only the name and the three keys).
//!
//! And one for consistency: a `secretname` without namespace is in the operator's namespace in both
//! configuration formats, where upstream's ConfigMap format alone puts it in `default`.
//!
//! Each problem drops only the role or source it names and says so ([`Problem`]); a bad flag does not
//! fail every cluster's roles, as it would once it reached `desired`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgherd_shared::crd::operator_configuration::KubernetesConfiguration;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::desired::{normalize_flags, DesiredErrors, MAX_IDENTIFIER_BYTES};
use super::model::{Origin, Password, Role};

/// A namespaced object name, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a value was read: a key of a Secret or ConfigMap. Messages name it, never the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub kind: &'static str,
    pub object: ObjectName,
    pub key: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} key {:?}", self.kind, self.object, self.key)
    }
}

/// One configured source of infrastructure roles, with upstream's key defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// The configuration setting it comes from, for messages: `infrastructure_roles_secrets[0]` or
    /// `infrastructure_roles_secret_name`.
    pub field: String,
    pub secret: ObjectName,
    pub user_key: String,
    pub password_key: String,
    pub role_key: String,
    pub default_user: String,
    pub default_role: String,
    /// The Secret key holding a YAML role description.
    pub details: Option<String>,
    pub template: bool,
}

/// One object as the API answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Fetched {
    Found(Value),
    NotFound,
    /// The API failed; the message says how.
    Failed(String),
}

/// The Secret a [`Definition`] names and the ConfigMap of the same name.
#[derive(Clone, Debug, PartialEq)]
pub struct Objects {
    pub secret: Fetched,
    pub config_map: Fetched,
}

/// Something about the infrastructure roles that is left out, and why. Reported as a warning of the roles
/// duty; the other roles are still synced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "infrastructure roles: {field}: secretname {value:?} is neither a name nor namespace/name"
    )]
    BadSecretName { field: String, value: String },
    #[error("infrastructure roles: {field}: Secret {secret} not found, its roles are skipped")]
    SecretMissing { field: String, secret: ObjectName },
    #[error("infrastructure roles: {field}: could not read {kind} {object}: {message}")]
    Unreadable {
        field: String,
        kind: &'static str,
        object: ObjectName,
        message: String,
    },
    #[error("infrastructure roles: {0}: not base64-encoded UTF-8 text")]
    NotText(Place),
    #[error("infrastructure roles: {field}: no role name in {at}")]
    NoUser { field: String, at: Place },
    #[error("infrastructure roles: role {role:?}: no password in {at}, the role is skipped")]
    NoPassword { role: String, at: Place },
    #[error(
        "infrastructure roles: role {role:?} from {at}: the name is longer than Postgres' 63 bytes"
    )]
    NameTooLong { role: String, at: Place },
    #[error("infrastructure roles: {at}: not a role description: {message}")]
    BadDescription { at: Place, message: String },
    #[error("infrastructure roles: {at}: {errors}")]
    BadFlags { at: Place, errors: DesiredErrors },
    #[error("infrastructure roles: role {role:?} is defined by {dropped} and by {kept}; the latter wins")]
    Duplicate {
        role: String,
        kept: String,
        dropped: String,
    },
}

/// The roles read, by name, and what was left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub roles: Vec<Role>,
    pub problems: Vec<Problem>,
}

/// `namespace/name` or `name` (in the operator's namespace), as upstream's `NamespacedName.Decode`.
fn object_name(value: &str, operator_namespace: &str) -> Option<ObjectName> {
    let value = value.trim();
    let (namespace, name) = match value.split_once('/') {
        Some((ns, name)) => (ns, name.trim_start_matches('/')),
        None => ("", value),
    };
    (!name.is_empty()).then(|| ObjectName {
        namespace: if namespace.is_empty() {
            operator_namespace.to_string()
        } else {
            namespace.to_string()
        },
        name: name.to_string(),
    })
}

/// `value` unless unset or empty (upstream's `util.Coalesce`).
fn or_default(value: &Option<String>, default: &str) -> String {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
        .to_string()
}

/// The sources the configuration names: `infrastructure_roles_secrets` in order, then the legacy
/// `infrastructure_roles_secret_name` as a template (upstream's order).
pub fn definitions(
    k: Option<&KubernetesConfiguration>,
    operator_namespace: &str,
) -> (Vec<Definition>, Vec<Problem>) {
    let mut defs = Vec::new();
    let mut problems = Vec::new();
    let Some(k) = k else {
        return (defs, problems);
    };
    for (i, e) in k.infrastructure_roles_secrets.iter().flatten().enumerate() {
        let field = format!("infrastructure_roles_secrets[{i}]");
        let value = e.secretname.clone().unwrap_or_default();
        let Some(secret) = object_name(&value, operator_namespace) else {
            problems.push(Problem::BadSecretName { field, value });
            continue;
        };
        defs.push(Definition {
            field,
            secret,
            user_key: or_default(&e.userkey, "user"),
            password_key: or_default(&e.passwordkey, "password"),
            role_key: or_default(&e.rolekey, "inrole"),
            default_user: or_default(&e.defaultuservalue, ""),
            default_role: or_default(&e.defaultrolevalue, ""),
            details: e.details.clone().filter(|d| !d.is_empty()),
            template: e.template.unwrap_or(false),
        });
    }
    let legacy = k.infrastructure_roles_secret_name.as_deref().unwrap_or("");
    if !legacy.trim().is_empty() {
        let field = "infrastructure_roles_secret_name".to_string();
        match object_name(legacy, operator_namespace) {
            Some(secret) => defs.push(Definition {
                field,
                secret,
                user_key: "user".into(),
                password_key: "password".into(),
                role_key: "inrole".into(),
                default_user: String::new(),
                default_role: String::new(),
                details: None,
                template: true,
            }),
            None => problems.push(Problem::BadSecretName {
                field,
                value: legacy.into(),
            }),
        }
    }
    (defs, problems)
}

/// A role description as upstream's `PgUser` YAML has it; unknown keys are ignored, as there.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Description {
    inrole: Vec<String>,
    user_flags: Vec<String>,
    db_parameters: BTreeMap<String, Scalar>,
    admin_role: String,
}

/// A setting's value: upstream's YAML decoder turns any scalar into the string it needs
/// (`work_mem: 64`), so this does too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(serde_yaml_ng::Number),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn parse_description(text: &str, at: &Place) -> Result<Description, Problem> {
    // An empty value is an empty description, as upstream's decoder has it.
    serde_yaml_ng::from_str::<Option<Description>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| Problem::BadDescription {
            at: at.clone(),
            message: e.to_string(),
        })
}

/// A Secret's `data`, decoded key by key when asked.
struct SecretData<'a> {
    name: &'a ObjectName,
    data: Option<&'a Map<String, Value>>,
}

impl SecretData<'_> {
    fn place(&self, key: &str) -> Place {
        Place {
            kind: "Secret",
            object: self.name.clone(),
            key: key.into(),
        }
    }

    /// The text of `key`; `None` when missing or empty.
    fn get(&self, key: &str) -> Result<Option<String>, Problem> {
        let Some(v) = self.data.and_then(|d| d.get(key)) else {
            return Ok(None);
        };
        let text = v
            .as_str()
            .and_then(|b64| STANDARD.decode(b64).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| Problem::NotText(self.place(key)))?;
        Ok(Some(text).filter(|t| !t.is_empty()))
    }
}

/// A role read, with the Secret its password is in and a description of where it was defined.
struct Read {
    role: Role,
    secret: ObjectName,
    from: String,
}

/// Everything read so far, by role name.
#[derive(Default)]
struct Collected {
    roles: BTreeMap<String, Read>,
    problems: Vec<Problem>,
}

impl Collected {
    /// Keeps `role`, the later of two of the same name winning as in upstream's `uniqRoles`. Said unless
    /// both are the same or `role` is a ConfigMap description of a role its own Secret defined.
    fn add(&mut self, role: Role, secret: &ObjectName, from: String, describes: bool) {
        if let Some(prev) = self.roles.get(&role.name) {
            if prev.role != role && !(describes && prev.secret == *secret) {
                self.problems.push(Problem::Duplicate {
                    role: role.name.clone(),
                    kept: from.clone(),
                    dropped: prev.from.clone(),
                });
            }
        }
        let read = Read {
            role,
            secret: secret.clone(),
            from,
        };
        self.roles.insert(read.role.name.clone(), read);
    }

    /// The password read for `name` from `secret`'s keys, if any.
    fn password_from(&self, name: &str, secret: &ObjectName) -> Option<String> {
        match self.roles.get(name) {
            Some(Read {
                role:
                    Role {
                        password: Password::Given(pw),
                        ..
                    },
                secret: from,
                ..
            }) if from == secret => Some(pw.clone()),
            _ => None,
        }
    }

    fn result<T>(&mut self, r: Result<T, Problem>) -> Option<T> {
        r.map_err(|p| self.problems.push(p)).ok()
    }
}

/// A role from its parts. Its flags and name length are checked here: `desired` would reject a bad one for
/// the whole cluster, and one infrastructure role must not do that to every cluster.
fn role(
    name: String,
    password: String,
    description: Description,
    membership: Option<String>,
    at: &Place,
) -> Result<Role, Problem> {
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(Problem::NameTooLong {
            role: name,
            at: at.clone(),
        });
    }
    let flags = normalize_flags(
        "user_flags",
        description.user_flags.iter().map(String::as_str),
    )
    .map_err(|errors| Problem::BadFlags {
        at: at.clone(),
        errors: DesiredErrors(errors),
    })?;
    let member_of: BTreeSet<String> = description
        .inrole
        .into_iter()
        .chain(membership)
        .filter(|m| !m.is_empty())
        .collect();
    Ok(Role {
        name,
        origin: Origin::Infrastructure,
        flags,
        password: Password::Given(password),
        member_of,
        admin: Some(description.admin_role).filter(|a| !a.is_empty()),
        parameters: description
            .db_parameters
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        db_owner: false,
    })
}

/// One role from named keys (`template: false`).
fn keyed(d: &Definition, s: &SecretData, out: &mut Collected) {
    let Some(user) = out.result(s.get(&d.user_key)) else {
        return;
    };
    let Some(name) = user.or_else(|| Some(d.default_user.clone()).filter(|u| !u.is_empty())) else {
        out.problems.push(Problem::NoUser {
            field: d.field.clone(),
            at: s.place(&d.user_key),
        });
        return;
    };
    let Some(password) = out.result(s.get(&d.password_key)) else {
        return;
    };
    let Some(password) = password else {
        out.problems.push(Problem::NoPassword {
            role: name,
            at: s.place(&d.password_key),
        });
        return;
    };
    let Some(membership) = out.result(s.get(&d.role_key)) else {
        return;
    };
    let membership = membership.or_else(|| Some(d.default_role.clone()));
    let (description, at) = match &d.details {
        Some(key) => {
            let at = s.place(key);
            let Some(text) = out.result(s.get(key)) else {
                return;
            };
            // Upstream falls back to the plain keys when the details key is absent.
            let description = match text {
                Some(text) => match out.result(parse_description(&text, &at)) {
                    Some(desc) => desc,
                    None => return,
                },
                None => Description::default(),
            };
            (description, at)
        }
        None => (Description::default(), s.place(&d.user_key)),
    };
    if let Some(r) = out.result(role(name, password, description, membership, &at)) {
        let from = format!("{} (Secret {})", d.field, d.secret);
        out.add(r, &d.secret, from, false);
    }
}

/// `user1`, `password1`, `inrole1`, … until the first missing `userN` (`template: true`).
fn template(d: &Definition, s: &SecretData, out: &mut Collected) {
    for i in 1.. {
        let user_key = format!("{}{i}", d.user_key);
        if !s.data.is_some_and(|m| m.contains_key(&user_key)) {
            break;
        }
        let at = s.place(&user_key);
        let Some(name) = out.result(s.get(&user_key)) else {
            continue;
        };
        let Some(name) = name else {
            out.problems.push(Problem::NoUser {
                field: d.field.clone(),
                at,
            });
            continue;
        };
        let password_key = format!("{}{i}", d.password_key);
        let Some(password) = out.result(s.get(&password_key)) else {
            continue;
        };
        let Some(password) = password else {
            out.problems.push(Problem::NoPassword {
                role: name,
                at: s.place(&password_key),
            });
            continue;
        };
        let Some(membership) = out.result(s.get(&format!("{}{i}", d.role_key))) else {
            continue;
        };
        let membership = membership.or_else(|| Some(d.default_role.clone()));
        if let Some(r) = out.result(role(
            name,
            password,
            Description::default(),
            membership,
            &at,
        )) {
            let from = format!("{} (Secret {} key {user_key:?})", d.field, d.secret);
            out.add(r, &d.secret, from, false);
        }
    }
}

/// The ConfigMap of a Secret's name: one described role per key.
fn described(field: &str, s: &SecretData, config_map: &Fetched, out: &mut Collected) {
    let cm = match config_map {
        Fetched::Found(cm) => cm,
        Fetched::NotFound => return,
        Fetched::Failed(message) => {
            out.problems.push(Problem::Unreadable {
                field: field.into(),
                kind: "ConfigMap",
                object: s.name.clone(),
                message: message.clone(),
            });
            return;
        }
    };
    let Some(data) = cm.get("data").and_then(Value::as_object) else {
        return;
    };
    for (name, text) in data {
        let at = Place {
            kind: "ConfigMap",
            object: s.name.clone(),
            key: name.clone(),
        };
        let Some(description) =
            out.result(parse_description(text.as_str().unwrap_or_default(), &at))
        else {
            continue;
        };
        let Some(own) = out.result(s.get(name)) else {
            continue;
        };
        let Some(password) = own.or_else(|| out.password_from(name, s.name)) else {
            out.problems.push(Problem::NoPassword {
                role: name.clone(),
                at: s.place(name),
            });
            continue;
        };
        if let Some(r) = out.result(role(name.clone(), password, description, None, &at)) {
            out.add(
                r,
                s.name,
                format!("ConfigMap {} key {name:?}", s.name),
                true,
            );
        }
    }
}

/// The roles `definitions` describe, read from `objects` (by Secret name; an absent entry counts as not
/// found). Sorted by name; a later definition wins a name, and a ConfigMap description wins over its
/// Secret's keys.
pub fn roles(definitions: &[Definition], objects: &BTreeMap<ObjectName, Objects>) -> Outcome {
    let mut out = Collected::default();
    let not_found = Objects {
        secret: Fetched::NotFound,
        config_map: Fetched::NotFound,
    };
    // Each Secret's ConfigMap once, after every definition that reads the Secret.
    let mut found: Vec<(&str, SecretData, &Fetched)> = Vec::new();
    for d in definitions {
        let o = objects.get(&d.secret).unwrap_or(&not_found);
        let secret = match &o.secret {
            Fetched::Found(v) => v,
            Fetched::NotFound => {
                out.problems.push(Problem::SecretMissing {
                    field: d.field.clone(),
                    secret: d.secret.clone(),
                });
                continue;
            }
            Fetched::Failed(message) => {
                out.problems.push(Problem::Unreadable {
                    field: d.field.clone(),
                    kind: "Secret",
                    object: d.secret.clone(),
                    message: message.clone(),
                });
                continue;
            }
        };
        let s = SecretData {
            name: &d.secret,
            data: secret.get("data").and_then(Value::as_object),
        };
        if d.template {
            template(d, &s, &mut out);
        } else {
            keyed(d, &s, &mut out);
        }
        if !found.iter().any(|(_, seen, _)| *seen.name == d.secret) {
            found.push((&d.field, s, &o.config_map));
        }
    }
    for (field, s, config_map) in &found {
        described(field, s, config_map, &mut out);
    }
    Outcome {
        roles: out.roles.into_values().map(|r| r.role).collect(),
        problems: out.problems,
    }
}

#[cfg(test)]
#[path = "infrastructure_tests.rs"]
mod tests;
