//! The statements that take Postgres from what it has to what the cluster should have, as a pure function.
//!
//! Additive, as upstream's `ProduceSyncRequests` (postgres-operator `pkg/util/users/users.go`): roles are
//! created, missing flags and memberships added, changed passwords and settings applied; nothing a person
//! granted by hand is revoked, and no database, schema or role is dropped. What already matches issues no
//! statement at all, so a sync with nothing to do sends no DDL.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{Current, CurrentRole};
use super::model::{Desired, Flag, Origin, Password, Role};
use super::password::{self, Encryption};
use super::sql::{self, Statement};

/// The plan, and what could not be planned (a missing Secret, a membership in a role nobody creates).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub statements: Vec<Statement>,
    pub warnings: Vec<String>,
}

/// `passwords`: the clear text of every role whose [`Password`] is a Secret, by role name, as the caller read
/// the Secrets; a role missing here keeps the password it has.
pub fn plan(
    desired: &Desired,
    current: &Current,
    passwords: &BTreeMap<String, String>,
    encryption: Encryption,
) -> Plan {
    let mut p = Plan::default();
    let exists = |name: &str| current.roles.contains_key(name) || desired.roles.contains_key(name);
    for name in creation_order(desired, current) {
        let role = &desired.roles[&name];
        let mut member_of = BTreeSet::new();
        for m in &role.member_of {
            if exists(m) {
                member_of.insert(m.clone());
            } else {
                p.warnings
                    .push(format!("role {name}: member of {m}, which does not exist"));
            }
        }
        let admin = role.admin.as_deref().filter(|a| {
            let ok = exists(a);
            if !ok {
                p.warnings
                    .push(format!("role {name}: admin role {a} does not exist"));
            }
            ok
        });
        let clear = match &role.password {
            Password::Null | Password::Kept => None,
            Password::Given(pw) => Some(pw.as_str()),
            Password::Secret { name: secret, .. } => match passwords.get(&name) {
                Some(pw) => Some(pw.as_str()),
                None => {
                    p.warnings.push(format!(
                        "role {name}: no password in Secret {secret}; its password is left as it is"
                    ));
                    None
                }
            },
        };
        match current.roles.get(&name) {
            None => {
                let hash = clear.map(|pw| password::hash(pw, &name, encryption));
                p.statements.push(sql::create_role(
                    &name,
                    &role.flags,
                    &member_of,
                    admin,
                    hash.as_deref(),
                ));
                for (k, v) in &role.parameters {
                    p.statements.push(sql::set_parameter(&name, k, v));
                }
            }
            Some(have) => update_role(&mut p, role, have, &member_of, clear, encryption),
        }
    }
    databases(&mut p, desired, current);
    p
}

fn update_role(
    p: &mut Plan,
    role: &Role,
    have: &CurrentRole,
    member_of: &BTreeSet<String>,
    clear: Option<&str>,
    encryption: Encryption,
) {
    let name = &role.name;
    let flags: BTreeSet<Flag> = role.flags.difference(&have.flags).copied().collect();
    if !flags.is_empty() {
        p.statements.push(sql::alter_flags(name, &flags));
    }
    match (clear, &role.password) {
        (Some(pw), _) if !password::matches(have.password.as_deref(), pw, name, encryption) => {
            let hash = password::hash(pw, name, encryption);
            p.statements.push(sql::alter_password(name, Some(&hash)));
        }
        // Human users log in through PAM, never with a password someone set.
        (None, Password::Null) if role.origin == Origin::TeamsApi && have.password.is_some() => {
            p.statements.push(sql::alter_password(name, None));
        }
        _ => {}
    }
    let missing: BTreeSet<String> = member_of.difference(&have.member_of).cloned().collect();
    if !missing.is_empty() {
        p.statements.push(sql::grant_membership(name, &missing));
    }
    for (k, v) in &role.parameters {
        let same = have
            .parameters
            .get(k)
            .is_some_and(|h| setting_words(h) == setting_words(v));
        if !same {
            p.statements.push(sql::set_parameter(name, k, v));
        }
    }
}

/// A setting as a list of words, so `"$user", data` equals `"$user","data"` (how Postgres stores a
/// `search_path` set from identifiers).
fn setting_words(v: &str) -> Vec<String> {
    v.split(',')
        .map(|w| w.trim().trim_matches('"').to_string())
        .collect()
}

/// Desired roles in an order where every role a new role is created `IN ROLE` of, or `ADMIN` by, comes
/// first. Cycles (not produced by any source) fall back to name order.
fn creation_order(desired: &Desired, current: &Current) -> Vec<String> {
    fn visit(
        name: &str,
        desired: &Desired,
        current: &Current,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let role = &desired.roles[name];
        if !current.roles.contains_key(name) {
            for dep in role.member_of.iter().chain(role.admin.iter()) {
                if desired.roles.contains_key(dep) {
                    visit(dep, desired, current, seen, out);
                }
            }
        }
        out.push(name.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for name in desired.roles.keys() {
        visit(name, desired, current, &mut seen, &mut out);
    }
    out
}

fn databases(p: &mut Plan, desired: &Desired, current: &Current) {
    for db in &desired.databases {
        match current.databases.get(&db.name) {
            None => p.statements.push(sql::create_database(&db.name, &db.owner)),
            Some(have) if have.owner != db.owner => p
                .statements
                .push(sql::alter_database_owner(&db.name, &db.owner)),
            Some(_) => {}
        }
    }
    let empty = Default::default();
    let db_of = |name: &str| current.databases.get(name).unwrap_or(&empty);
    for s in &desired.schemas {
        match db_of(&s.database).schemas.get(&s.name) {
            None => p
                .statements
                .push(sql::create_schema(&s.database, &s.name, &s.owner)),
            Some(owner) if *owner != s.owner => {
                p.statements
                    .push(sql::alter_schema_owner(&s.database, &s.name, &s.owner))
            }
            Some(_) => {}
        }
    }
    for e in &desired.extensions {
        match db_of(&e.database).extensions.get(&e.name) {
            None => p
                .statements
                .push(sql::create_extension(&e.database, &e.name, &e.schema)),
            Some(schema) if *schema != e.schema => {
                p.statements
                    .push(sql::move_extension(&e.database, &e.name, &e.schema))
            }
            Some(_) => {}
        }
    }
    for d in &desired.default_privileges {
        let key = (d.creator.clone(), d.schema.clone().unwrap_or_default());
        if !db_of(&d.database).default_privileges.contains(&key) {
            p.statements.push(sql::default_privileges(
                &d.database,
                d.schema.as_deref(),
                &d.creator,
                &d.reader,
                &d.writer,
            ));
        }
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
