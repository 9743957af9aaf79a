//! What Postgres has, read from its catalogs, behind a small trait so the diff and the duty are tested
//! against an in-memory twin and the real server alike.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::model::Flag;
use super::sql::{Effect, Statement};

/// A role as `pg_authid` and friends describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentRole {
    /// `rolpassword`: a verifier or md5 hash, `None` without a password.
    pub password: Option<String>,
    pub flags: BTreeSet<Flag>,
    pub member_of: BTreeSet<String>,
    /// Database-independent settings (`ALTER ROLE … SET`), `key` → `value`.
    pub parameters: BTreeMap<String, String>,
}

/// One database's schemas, extensions and default privileges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentDatabase {
    pub owner: String,
    /// Schema → owner, system schemas left out.
    pub schemas: BTreeMap<String, String>,
    /// Extension → schema.
    pub extensions: BTreeMap<String, String>,
    /// (creator, schema or "" for database-wide) pairs that have default privileges.
    pub default_privileges: BTreeSet<(String, String)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub roles: BTreeMap<String, CurrentRole>,
    pub databases: BTreeMap<String, CurrentDatabase>,
    /// `password_encryption` as the server has it.
    pub password_encryption: String,
}

impl Current {
    /// The catalog after `effect`.
    pub fn apply(&mut self, effect: &Effect) {
        match effect.clone() {
            Effect::Role {
                name,
                flags,
                password,
                member_of,
                parameter,
            } => {
                let r = self.roles.entry(name).or_default();
                for f in flags {
                    r.flags.remove(&f.inverse());
                    r.flags.insert(f);
                }
                if let Some(p) = password {
                    r.password = p;
                }
                r.member_of.extend(member_of);
                if let Some((k, v)) = parameter {
                    r.parameters.insert(k, v);
                }
            }
            Effect::Database { name, owner } => {
                self.databases.entry(name).or_default().owner = owner;
            }
            Effect::Schema {
                database,
                name,
                owner,
            } => {
                let db = self.databases.entry(database).or_default();
                db.schemas.insert(name, owner);
            }
            Effect::Extension {
                database,
                name,
                schema,
            } => {
                let db = self.databases.entry(database).or_default();
                db.extensions.insert(name, schema);
            }
            Effect::DefaultPrivileges {
                database,
                creator,
                schema,
            } => {
                let db = self.databases.entry(database).or_default();
                db.default_privileges.insert((creator, schema));
            }
            Effect::DroppedRole(name) => {
                self.roles.remove(&name);
                for r in self.roles.values_mut() {
                    r.member_of.remove(&name);
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("connecting to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{what}: {message}")]
    Query { what: String, message: String },
}

#[async_trait]
pub trait Postgres: Send + Sync {
    /// Everything the diff needs, the databases in `databases` included (their schemas, extensions and
    /// default privileges); databases that do not exist are left out.
    async fn read(&self, databases: &BTreeSet<String>) -> Result<Current, PgError>;
    /// Runs one statement (its SQL may hold several, separated by `;`).
    async fn execute(&self, statement: &Statement) -> Result<(), PgError>;
}

pub const ROLES_SQL: &str =
    "SELECT a.rolname, a.rolpassword, a.rolsuper, a.rolinherit, a.rolcreaterole, \
     a.rolcreatedb, a.rolcanlogin, a.rolreplication, a.rolbypassrls, \
     COALESCE(s.setconfig, '{}'::text[]), \
     ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_authid b ON m.roleid = b.oid \
           WHERE m.member = a.oid) \
     FROM pg_authid a LEFT JOIN pg_db_role_setting s ON a.oid = s.setrole AND s.setdatabase = 0";

pub const DATABASES_SQL: &str =
    "SELECT datname::text, pg_get_userbyid(datdba)::text FROM pg_database WHERE datallowconn";

pub const SCHEMAS_SQL: &str =
    "SELECT nspname::text, pg_get_userbyid(nspowner)::text FROM pg_namespace \
     WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'";

pub const EXTENSIONS_SQL: &str = "SELECT e.extname::text, n.nspname::text FROM pg_extension e \
     JOIN pg_namespace n ON n.oid = e.extnamespace";

pub const DEFAULT_ACL_SQL: &str =
    "SELECT DISTINCT pg_get_userbyid(d.defaclrole)::text, COALESCE(n.nspname::text, '') \
     FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace";

/// The flags of a `pg_authid` row, in the order of [`ROLES_SQL`]'s boolean columns.
pub fn flags_of(
    superuser: bool,
    inherit: bool,
    createrole: bool,
    createdb: bool,
    login: bool,
    replication: bool,
    bypassrls: bool,
) -> BTreeSet<Flag> {
    let mut f = BTreeSet::new();
    for (on, yes, no) in [
        (superuser, Flag::Superuser, Flag::NoSuperuser),
        (inherit, Flag::Inherit, Flag::NoInherit),
        (createrole, Flag::CreateRole, Flag::NoCreateRole),
        (createdb, Flag::CreateDb, Flag::NoCreateDb),
        (login, Flag::Login, Flag::NoLogin),
        (replication, Flag::Replication, Flag::NoReplication),
        (bypassrls, Flag::BypassRls, Flag::NoBypassRls),
    ] {
        f.insert(if on { yes } else { no });
    }
    f
}

/// `setconfig` entries (`key=value`) as a map.
pub fn parameters_of(setconfig: &[String]) -> BTreeMap<String, String> {
    setconfig
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
