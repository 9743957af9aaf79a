//! What the cluster's roles, databases, schemas and extensions should be, as plain values: the output of the
//! pure `desired` computation and the input of the pure `diff` against what Postgres has.

use std::collections::{BTreeMap, BTreeSet};

/// Where a role comes from. A higher origin wins a name collision, in upstream's order (postgres-operator
/// `pkg/spec/types.go` `RoleOrigin`, resolved in `pkg/cluster/cluster.go` `initUsers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Manifest,
    Infrastructure,
    TeamsApi,
    System,
    /// A `preparedDatabases` role.
    Bootstrap,
    ConnectionPooler,
    Stream,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Manifest => "manifest user",
            Origin::Infrastructure => "infrastructure role",
            Origin::TeamsApi => "team member",
            Origin::System => "system user",
            Origin::Bootstrap => "preparedDatabases role",
            Origin::ConnectionPooler => "connection pooler user",
            Origin::Stream => "stream user",
        })
    }
}

/// Role attributes pgherd sets. Only ever added to an existing role (upstream is additive); a negated
/// attribute (`NOLOGIN`, `NOSUPERUSER`, ...) the manifest asks for is applied too, as upstream's CRD accepts
/// every `no*` variant and upstream's sync issues them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    Superuser,
    NoSuperuser,
    Inherit,
    NoInherit,
    Login,
    NoLogin,
    CreateRole,
    NoCreateRole,
    CreateDb,
    NoCreateDb,
    Replication,
    NoReplication,
    BypassRls,
    NoBypassRls,
}

impl Flag {
    /// Upstream's manifest spelling (case-insensitive), or `None` for an unknown flag.
    pub fn parse(s: &str) -> Option<Flag> {
        Some(match s.to_ascii_lowercase().as_str() {
            "superuser" => Flag::Superuser,
            "nosuperuser" => Flag::NoSuperuser,
            "inherit" => Flag::Inherit,
            "noinherit" => Flag::NoInherit,
            "login" => Flag::Login,
            "nologin" => Flag::NoLogin,
            "createrole" => Flag::CreateRole,
            "nocreaterole" => Flag::NoCreateRole,
            "createdb" => Flag::CreateDb,
            "nocreatedb" => Flag::NoCreateDb,
            "replication" => Flag::Replication,
            "noreplication" => Flag::NoReplication,
            "bypassrls" => Flag::BypassRls,
            "nobypassrls" => Flag::NoBypassRls,
            _ => return None,
        })
    }

    /// The keyword in `CREATE ROLE` / `ALTER ROLE`.
    pub fn keyword(self) -> &'static str {
        match self {
            Flag::Superuser => "SUPERUSER",
            Flag::NoSuperuser => "NOSUPERUSER",
            Flag::Inherit => "INHERIT",
            Flag::NoInherit => "NOINHERIT",
            Flag::Login => "LOGIN",
            Flag::NoLogin => "NOLOGIN",
            Flag::CreateRole => "CREATEROLE",
            Flag::NoCreateRole => "NOCREATEROLE",
            Flag::CreateDb => "CREATEDB",
            Flag::NoCreateDb => "NOCREATEDB",
            Flag::Replication => "REPLICATION",
            Flag::NoReplication => "NOREPLICATION",
            Flag::BypassRls => "BYPASSRLS",
            Flag::NoBypassRls => "NOBYPASSRLS",
        }
    }

    /// The attribute with the opposite meaning: a role cannot want both (upstream rejects `X` with `NOX`).
    pub fn inverse(self) -> Flag {
        match self {
            Flag::Superuser => Flag::NoSuperuser,
            Flag::NoSuperuser => Flag::Superuser,
            Flag::Inherit => Flag::NoInherit,
            Flag::NoInherit => Flag::Inherit,
            Flag::Login => Flag::NoLogin,
            Flag::NoLogin => Flag::Login,
            Flag::CreateRole => Flag::NoCreateRole,
            Flag::NoCreateRole => Flag::CreateRole,
            Flag::CreateDb => Flag::NoCreateDb,
            Flag::NoCreateDb => Flag::CreateDb,
            Flag::Replication => Flag::NoReplication,
            Flag::NoReplication => Flag::Replication,
            Flag::BypassRls => Flag::NoBypassRls,
            Flag::NoBypassRls => Flag::BypassRls,
        }
    }
}

/// Where a role's password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    /// `PASSWORD NULL`: the role logs in some other way (PAM for human users) or not at all.
    Null,
    /// The `password` key of this Secret in the cluster's namespace (or `namespace`).
    Secret { namespace: String, name: String },
    /// Given inline (infrastructure roles from a ConfigMap or a legacy template Secret).
    Given(String),
    /// Left as it is: the role's Secret names a rotation user now (see `rotation`), and applications that
    /// have not re-read the Secret still log in with the password this role has.
    Kept,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub origin: Origin,
    pub flags: BTreeSet<Flag>,
    pub password: Password,
    /// Roles this one is a member of (`IN ROLE` / `GRANT x TO role`).
    pub member_of: BTreeSet<String>,
    /// The role granted admin rights over this one (`CREATE ROLE … ADMIN x`: `x` becomes a member with ADMIN
    /// OPTION). Set at creation only, as upstream.
    pub admin: Option<String>,
    /// Per-role settings (`ALTER ROLE … SET k TO v`), e.g. the prepared databases' `search_path`.
    pub parameters: BTreeMap<String, String>,
    /// Upstream's `IsDbOwner`: a manifest user named as an owner in `databases`, or a prepared databases'
    /// `*_owner` / `*_owner_user` role. Such roles get `additional_owner_roles` and are left out of the
    /// global password rotation (postgres-operator `pkg/cluster/sync.go` `syncSecrets`).
    pub db_owner: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Database {
    pub name: String,
    pub owner: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Schema {
    pub database: String,
    pub name: String,
    pub owner: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extension {
    pub database: String,
    pub name: String,
    pub schema: String,
}

/// `ALTER DEFAULT PRIVILEGES FOR ROLE creator [IN SCHEMA schema]` granting readers and writers what
/// upstream's prepared databases grant (usage on schemas, select/insert/update/delete on tables, sequences,
/// execute on functions, usage on types). Set when the database or schema is created, as upstream
/// (postgres-operator `pkg/cluster/database.go` `globalDefaultPrivilegesSQL`, `schemaDefaultPrivilegesSQL`;
/// the per-schema form also grants `USAGE ON SCHEMA` itself, as a schema's future "usage on schemas"
/// cannot be a default privilege).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DefaultPrivileges {
    pub database: String,
    /// `None`: database-wide.
    pub schema: Option<String>,
    /// The role whose future objects the privileges apply to.
    pub creator: String,
    pub reader: String,
    pub writer: String,
}

/// Everything one cluster should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// By name; collisions already resolved by [`Origin`].
    pub roles: BTreeMap<String, Role>,
    pub databases: Vec<Database>,
    pub schemas: Vec<Schema>,
    pub extensions: Vec<Extension>,
    pub default_privileges: Vec<DefaultPrivileges>,
}
