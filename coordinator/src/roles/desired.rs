//! Which roles, databases, schemas and extensions a cluster should have, from every source upstream has,
//! with upstream's priority when two sources name the same role (postgres-operator `pkg/cluster/cluster.go`
//! `initUsers`). Pure: the Secrets, the Teams API and the infrastructure roles are read elsewhere and come in
//! as values, so the whole rule set is unit-tested without Postgres or Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Database, Desired, Flag, Origin, Password, Role};
use super::prepared::prepared;
use super::settings::RoleSettings;
use crate::builders::Cluster;
use crate::config::OperatorConfig;

/// Roles whose source is outside the `postgresql` resource: infrastructure roles (from the configured
/// Secrets / ConfigMap) and human users (Teams API and PostgresTeam, see [`human_role`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalRoles {
    pub infrastructure: Vec<Role>,
    pub human: Vec<Role>,
}

/// The desired state plus what was left out on the way, for the caller to report as events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub desired: Desired,
    pub warnings: Vec<Warning>,
}

/// Something the manifest or configuration asked for that upstream silently drops; dropped here too,
/// but said.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    #[error("role {name:?}: the {dropped} is ignored, the {kept} of the same name wins")]
    Shadowed {
        name: String,
        kept: Origin,
        dropped: Origin,
    },
    #[error(
        "role {name:?}: a {origin} cannot have the protected name {name:?} (protected_role_names)"
    )]
    Protected { name: String, origin: Origin },
    #[error("role {name:?}: a {origin} cannot have the name of a system user")]
    SystemName { name: String, origin: Origin },
    #[error("database {database:?}: owner {owner:?} is not a role this cluster defines, the database is skipped")]
    OwnerMissing { database: String, owner: String },
    #[error("database {database:?}: spec.databases sets owner {owner:?}, replacing the preparedDatabases owner {prepared_owner:?}")]
    OwnerReplaced {
        database: String,
        owner: String,
        prepared_owner: String,
    },
}

/// A manifest or configuration error: `desired` cannot produce a state to sync.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("{field}: unknown flag {flag:?}")]
    UnknownFlag { field: String, flag: String },
    #[error("{field}: conflicting flags {} and {}", .flag.keyword(), .inverse.keyword())]
    ConflictingFlags {
        field: String,
        flag: Flag,
        inverse: Flag,
    },
    #[error("{field}: a name must not be empty")]
    EmptyName { field: String },
    /// Postgres would truncate it, so the object it creates would never match the name asked for.
    #[error("{field}: {name:?} is longer than Postgres' 63 bytes")]
    NameTooLong { field: String, name: String },
    #[error("{field}: role {role:?} needs the credentials Secret {secret:?}, which is not a valid Kubernetes name (lowercase letters, digits, '-' and '.')")]
    InvalidSecretName {
        field: String,
        role: String,
        secret: String,
    },
    #[error("{field}: role {role:?} puts its credentials Secret into namespace {namespace:?}, which is not a valid namespace name")]
    InvalidSecretNamespace {
        field: String,
        role: String,
        namespace: String,
    },
    #[error("{field}: role {role:?} would share the credentials Secret {namespace}/{secret} with role {other:?}")]
    SecretNameCollision {
        field: String,
        role: String,
        other: String,
        namespace: String,
        secret: String,
    },
}

/// Every error found, so one fix round is enough.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct DesiredErrors(pub Vec<DesiredError>);

/// Postgres' `NAMEDATALEN - 1`.
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// The credentials Secret name of each role (in the cluster's namespace), or an error when one is not a
/// valid Kubernetes name or two roles would share one (`foo_bar` and `foo-bar`, `Data.Team` and
/// `data.team`): upstream creates the first and hands its password to the second. For the Secrets builder,
/// so it never overwrites or shares a Secret.
pub fn unique_secret_names<'a>(
    c: &Cluster,
    roles: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, DesiredErrors> {
    let mut names = BTreeMap::new();
    let mut seen = Seen::default();
    let mut errors = Vec::new();
    for role in roles {
        let secret = c.role_secret_name(role);
        let field = format!("role {role:?}");
        seen.check(role, &field, &c.namespace, &secret, &mut errors);
        names.insert(role.to_string(), secret);
    }
    if errors.is_empty() {
        Ok(names)
    } else {
        Err(DesiredErrors(errors))
    }
}

/// (namespace, Secret name) → role, for collision checks.
#[derive(Default)]
struct Seen(BTreeMap<(String, String), String>);

impl Seen {
    fn check(
        &mut self,
        role: &str,
        field: &str,
        namespace: &str,
        secret: &str,
        errors: &mut Vec<DesiredError>,
    ) {
        if !is_dns_label(namespace) {
            errors.push(DesiredError::InvalidSecretNamespace {
                field: field.into(),
                role: role.into(),
                namespace: namespace.into(),
            });
        }
        if !is_dns_subdomain(secret) {
            errors.push(DesiredError::InvalidSecretName {
                field: field.into(),
                role: role.into(),
                secret: secret.into(),
            });
            return;
        }
        let key = (namespace.to_string(), secret.to_string());
        match self.0.get(&key) {
            Some(other) if other != role => errors.push(DesiredError::SecretNameCollision {
                field: field.into(),
                role: role.into(),
                other: other.clone(),
                namespace: namespace.into(),
                secret: secret.into(),
            }),
            Some(_) => {}
            None => {
                self.0.insert(key, role.into());
            }
        }
    }
}

fn is_dns_label_part(p: &str) -> bool {
    let b = p.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_part(s)
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label_part)
}

/// A human user as upstream's `initTeamMembers` makes it: logs in through PAM (no password), member of
/// `pam_role_name`, and of `team_admin_role` unless a superuser; `team_api_role_configuration` as settings.
/// `superuser`: the member's team is a superuser team, or `enable_team_superuser` is on and it is the
/// cluster's own team.
pub fn human_role(cfg: &OperatorConfig, name: &str, superuser: bool) -> Role {
    let s = RoleSettings::from_config(cfg);
    let mut flags = BTreeSet::from([Flag::Login]);
    let mut member_of = BTreeSet::new();
    if !s.pam_role_name.is_empty() {
        member_of.insert(s.pam_role_name.clone());
    }
    if superuser {
        flags.insert(Flag::Superuser);
    } else if !s.team_admin_role.is_empty() {
        member_of.insert(s.team_admin_role.clone());
    }
    Role {
        name: name.to_string(),
        origin: Origin::TeamsApi,
        flags,
        password: Password::Null,
        member_of,
        admin: None,
        parameters: s.team_api_role_configuration,
        db_owner: false,
    }
}

/// Upstream's `normalizeUserFlags`: known flags only, no flag with its inverse, and `LOGIN` unless
/// `NOLOGIN` is given. Upstream then drops `NOLOGIN` (a role without it is created NOLOGIN anyway); it is
/// kept here so that a role made NOLOGIN in the manifest loses its login.
pub fn normalize_flags<'a>(
    field: &str,
    flags: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<Flag>, Vec<DesiredError>> {
    let mut errors = Vec::new();
    let mut out = BTreeSet::new();
    for f in flags {
        match Flag::parse(f) {
            Some(flag) => {
                out.insert(flag);
            }
            None => errors.push(DesiredError::UnknownFlag {
                field: field.into(),
                flag: f.into(),
            }),
        }
    }
    check_flags(field, &mut out, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn check_flags(field: &str, flags: &mut BTreeSet<Flag>, errors: &mut Vec<DesiredError>) {
    for &flag in flags.iter() {
        if flag < flag.inverse() && flags.contains(&flag.inverse()) {
            errors.push(DesiredError::ConflictingFlags {
                field: field.into(),
                flag,
                inverse: flag.inverse(),
            });
        }
    }
    if !flags.contains(&Flag::NoLogin) {
        flags.insert(Flag::Login);
    }
}

/// A role with the manifest or configuration field it comes from.
struct Entry {
    role: Role,
    field: String,
}

/// Roles by name while the sources are merged.
struct Merge {
    roles: BTreeMap<String, Entry>,
    system: BTreeSet<String>,
    protected: BTreeSet<String>,
    warnings: Vec<Warning>,
}

impl Merge {
    /// Upstream's `resolveNameConflict` and `shouldAvoidProtectedOrSystemRole`. The later of two roles of
    /// the same origin wins without a warning (a person in two teams is no conflict), so callers pass
    /// human roles in upstream's order: superuser teams, additional teams, the cluster's team. System
    /// users are never replaced: upstream keeps them in a map of their own.
    fn offer(&mut self, role: Role, field: String) {
        let name = role.name.clone();
        let origin = role.origin;
        if matches!(
            origin,
            Origin::Manifest | Origin::Infrastructure | Origin::TeamsApi
        ) {
            if self.protected.contains(&name) {
                self.warnings.push(Warning::Protected { name, origin });
                return;
            }
            if self.system.contains(&name) {
                self.warnings.push(Warning::SystemName { name, origin });
                return;
            }
        }
        match self.roles.get(&name) {
            None => {
                self.roles.insert(name, Entry { role, field });
            }
            Some(cur) => {
                let cur_origin = cur.role.origin;
                if cur_origin != Origin::System && origin >= cur_origin {
                    if origin != cur_origin {
                        self.warnings.push(Warning::Shadowed {
                            name: name.clone(),
                            kept: origin,
                            dropped: cur_origin,
                        });
                    }
                    self.roles.insert(name, Entry { role, field });
                } else {
                    self.warnings.push(Warning::Shadowed {
                        name,
                        kept: cur_origin,
                        dropped: origin,
                    });
                }
            }
        }
    }
}

fn check_name(field: &str, name: &str, errors: &mut Vec<DesiredError>) {
    if name.is_empty() {
        errors.push(DesiredError::EmptyName {
            field: field.into(),
        });
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        errors.push(DesiredError::NameTooLong {
            field: field.into(),
            name: name.into(),
        });
    }
}

fn system_roles(c: &Cluster, s: &RoleSettings) -> Vec<(Role, String)> {
    // Spilo creates both with these attributes; naming them here keeps them that way.
    [
        (
            &s.super_username,
            [Flag::Superuser, Flag::Login].as_slice(),
            "super_username",
        ),
        (
            &s.replication_username,
            [Flag::Login, Flag::Replication].as_slice(),
            "replication_username",
        ),
    ]
    .into_iter()
    .map(|(name, flags, key)| {
        let role = Role {
            name: name.clone(),
            origin: Origin::System,
            flags: flags.iter().copied().collect(),
            password: Password::Secret {
                namespace: c.namespace.clone(),
                name: c.role_secret_name(name),
            },
            member_of: BTreeSet::new(),
            admin: None,
            parameters: BTreeMap::new(),
            db_owner: false,
        };
        (role, format!("configuration.users.{key}"))
    })
    .collect()
}

/// Upstream's `initRobotUsers`.
fn manifest_roles(
    c: &Cluster,
    s: &RoleSettings,
    errors: &mut Vec<DesiredError>,
) -> Vec<(Role, String)> {
    let spec = &c.pg.spec;
    let owners: BTreeSet<&String> = spec.databases.iter().flatten().map(|(_, o)| o).collect();
    let mut out = Vec::new();
    for (name, flags) in spec.users.iter().flatten() {
        let field = format!("spec.users[{name:?}]");
        let flags = match normalize_flags(&field, flags.iter().map(String::as_str)) {
            Ok(f) => f,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        // `appns.user` keeps its full role name; only its Secret moves to `appns`.
        let namespace = match name.split_once('.') {
            Some((ns, _)) if s.enable_cross_namespace_secret => ns.to_string(),
            _ => c.namespace.clone(),
        };
        let password = if flags.contains(&Flag::NoLogin) {
            // Upstream gives a NOLOGIN user a Secret and a password nobody can use; the Secrets builder
            // skips it, and so does this.
            Password::Null
        } else {
            Password::Secret {
                namespace,
                name: c.role_secret_name(name),
            }
        };
        let role = Role {
            name: name.clone(),
            origin: Origin::Manifest,
            flags,
            password,
            member_of: BTreeSet::new(),
            admin: (s.enable_admin_role_for_users && !s.team_admin_role.is_empty())
                .then(|| s.team_admin_role.clone()),
            parameters: BTreeMap::new(),
            db_owner: owners.contains(name),
        };
        out.push((role, field));
    }
    out
}

/// Everything `c` should have in Postgres. Sources in upstream's order (system, infrastructure, prepared
/// databases, manifest, human), name collisions resolved by [`Origin`], then `additional_owner_roles`
/// granted to every database owner. Errors are collected over the whole manifest.
pub fn desired(c: &Cluster, external: &ExternalRoles) -> Result<Outcome, DesiredErrors> {
    let s = RoleSettings::from_config(c.cfg);
    let mut errors = Vec::new();
    let system = system_roles(c, &s);
    let mut merge = Merge {
        roles: BTreeMap::new(),
        system: system.iter().map(|(r, _)| r.name.clone()).collect(),
        protected: s.protected_role_names.iter().cloned().collect(),
        warnings: Vec::new(),
    };
    for (role, field) in system {
        merge.offer(role, field);
    }
    for role in &external.infrastructure {
        let field = format!("infrastructure role {:?}", role.name);
        let mut role = role.clone();
        check_flags(&field, &mut role.flags, &mut errors);
        merge.offer(role, field);
    }
    let prepared = prepared(c, &s);
    for (role, field) in prepared.roles {
        merge.offer(role, field);
    }
    for (role, field) in manifest_roles(c, &s, &mut errors) {
        merge.offer(role, field);
    }
    for role in &external.human {
        let field = format!("team member {:?}", role.name);
        merge.offer(role.clone(), field);
    }

    // `initAdditionalOwnerRoles` (a role is not made a member of itself, which Postgres refuses).
    for entry in merge.roles.values_mut() {
        if entry.role.db_owner {
            for extra in &s.additional_owner_roles {
                if *extra != entry.role.name {
                    entry.role.member_of.insert(extra.clone());
                }
            }
        }
    }

    let mut seen = Seen::default();
    for (name, entry) in &merge.roles {
        check_name(&entry.field, name, &mut errors);
        // Only the Secrets this cluster creates; infrastructure roles' come from their own Secrets.
        if let (
            Origin::System | Origin::Manifest | Origin::Bootstrap,
            Password::Secret {
                namespace,
                name: secret,
            },
        ) = (entry.role.origin, &entry.role.password)
        {
            seen.check(name, &entry.field, namespace, secret, &mut errors);
        }
    }

    // `syncDatabases`: prepared databases owned by `d_owner`, `spec.databases` winning for the same name.
    let mut databases = BTreeMap::new();
    for d in prepared.databases {
        check_name(
            &format!("spec.preparedDatabases[{:?}]", d.name),
            &d.name,
            &mut errors,
        );
        databases.insert(d.name.clone(), d);
    }
    for (name, owner) in c.pg.spec.databases.iter().flatten() {
        if let Some(prev) = databases.get(name) {
            if prev.owner != *owner {
                merge.warnings.push(Warning::OwnerReplaced {
                    database: name.clone(),
                    owner: owner.clone(),
                    prepared_owner: prev.owner.clone(),
                });
            }
        }
        check_name(&format!("spec.databases[{name:?}]"), name, &mut errors);
        databases.insert(
            name.clone(),
            Database {
                name: name.clone(),
                owner: owner.clone(),
            },
        );
    }
    // Upstream's `databaseNameOwnerValid` skips a database whose owner it does not define.
    databases.retain(|name, d| {
        let known = merge.roles.contains_key(&d.owner);
        if !known {
            merge.warnings.push(Warning::OwnerMissing {
                database: name.clone(),
                owner: d.owner.clone(),
            });
        }
        known
    });
    for d in &prepared.schemas {
        let field = format!(
            "spec.preparedDatabases[{:?}].schemas[{:?}]",
            d.database, d.name
        );
        check_name(&field, &d.name, &mut errors);
    }
    for e in &prepared.extensions {
        let field = format!(
            "spec.preparedDatabases[{:?}].extensions[{:?}]",
            e.database, e.name
        );
        check_name(&field, &e.name, &mut errors);
        check_name(&field, &e.schema, &mut errors);
    }

    if !errors.is_empty() {
        return Err(DesiredErrors(errors));
    }
    Ok(Outcome {
        desired: Desired {
            roles: merge
                .roles
                .into_iter()
                .map(|(name, e)| (name, e.role))
                .collect(),
            databases: databases.into_values().collect(),
            schemas: prepared.schemas,
            extensions: prepared.extensions,
            default_privileges: prepared.default_privileges,
        },
        warnings: merge.warnings,
    })
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
