//! The `preparedDatabases` layout: per database and per schema an owner, a reader and a writer role, optional
//! `_user` login roles, the database, its schemas and extensions, and the default privileges that let the
//! readers and writers use what the owners create later.
//!
//! Reproduces postgres-operator `pkg/cluster/cluster.go` `initPreparedDatabaseRoles` / `initDefaultRoles`
//! for the roles, `pkg/cluster/sync.go` `syncDatabases` / `syncPreparedSchemas` / `syncExtensions` for the
//! objects and `pkg/cluster/database.go` `execCreateDatabaseSchema` for which default privileges are set.
//! Names are kept verbatim (upstream skips database and schema names outside `^[a-zA-Z_][a-zA-Z0-9_]*$`,
//! upstream issue #667); quoting them is the SQL side's job.

use std::collections::{BTreeMap, BTreeSet};

use pgherd_shared::crd::postgresql::{PreparedDatabase, PreparedSchema};

use super::model::{Database, DefaultPrivileges, Extension, Flag, Origin, Password, Role, Schema};
use super::settings::RoleSettings;
use crate::builders::Cluster;

/// Upstream hard-codes this as the admin of the database owner roles, whatever `team_admin_role` says.
const PREPARED_ADMIN: &str = "admin";
/// The schema a prepared database gets when it lists none.
const DEFAULT_SCHEMA: &str = "data";

/// What `preparedDatabases` asks for, before name collisions with other sources are resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Each role with the manifest field it comes from, for error messages.
    pub roles: Vec<(Role, String)>,
    pub databases: Vec<Database>,
    pub schemas: Vec<Schema>,
    pub extensions: Vec<Extension>,
    pub default_privileges: Vec<DefaultPrivileges>,
}

/// The prepared databases of `c`. `preparedDatabases: {}` (present but empty) means one database named like
/// the cluster with `-` replaced by `_`, as upstream.
pub fn prepared(c: &Cluster, settings: &RoleSettings) -> Prepared {
    let mut out = Prepared::default();
    let Some(dbs) = &c.pg.spec.prepared_databases else {
        return out;
    };
    let default_db;
    let dbs: Vec<(&String, &PreparedDatabase)> = if dbs.is_empty() {
        default_db = (c.name.replace('-', "_"), PreparedDatabase::default());
        vec![(&default_db.0, &default_db.1)]
    } else {
        dbs.iter().collect()
    };
    for (db, spec) in dbs {
        one_database(c, settings, db, spec, &mut out);
    }
    out
}

fn schemas_of(spec: &PreparedDatabase) -> BTreeMap<String, PreparedSchema> {
    match &spec.schemas {
        Some(s) if !s.is_empty() => s.clone(),
        _ => BTreeMap::from([(
            DEFAULT_SCHEMA.to_string(),
            PreparedSchema {
                default_roles: Some(true),
                ..Default::default()
            },
        )]),
    }
}

/// `"$user", "a", "b"`: the value upstream sets as the roles' `search_path`, with every schema quoted as an
/// identifier (upstream's Go `%q` differs only for names holding `"` or `\`). Schemas are sorted here, where
/// upstream follows Go's random map order and so may rewrite the setting on every sync.
fn search_path<'a>(schemas: impl IntoIterator<Item = &'a str>) -> String {
    let mut parts = vec![r#""$user""#.to_string()];
    parts.extend(
        schemas
            .into_iter()
            .map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
    );
    parts.join(", ")
}

fn one_database(
    c: &Cluster,
    settings: &RoleSettings,
    db: &str,
    spec: &PreparedDatabase,
    out: &mut Prepared,
) {
    let field = format!("spec.preparedDatabases[{db:?}]");
    // Secrets go to `secretNamespace` only when cross-namespace Secrets are enabled; upstream logs and
    // ignores it otherwise.
    let namespace = match &spec.secret_namespace {
        Some(ns) if !ns.is_empty() && settings.enable_cross_namespace_secret => ns.clone(),
        _ => c.namespace.clone(),
    };
    let schemas = schemas_of(spec);
    let db_users = spec.default_users.unwrap_or(false);
    let db_owner = format!("{db}_owner");
    let group = Group {
        c,
        prefix: db.to_string(),
        admin: PREPARED_ADMIN.to_string(),
        search_path: search_path(schemas.keys().map(String::as_str)),
        namespace: namespace.clone(),
        field: field.clone(),
    };
    group.push(false, out);
    if db_users {
        group.push(true, out);
    }
    for (schema, s) in &schemas {
        if s.default_roles.unwrap_or(true) {
            let group = Group {
                c,
                prefix: format!("{db}_{schema}"),
                admin: db_owner.clone(),
                search_path: search_path([schema.as_str()]),
                namespace: namespace.clone(),
                field: format!("{field}.schemas[{schema:?}]"),
            };
            group.push(false, out);
            if s.default_users.unwrap_or(false) {
                group.push(true, out);
            }
        }
    }

    out.databases.push(Database {
        name: db.to_string(),
        owner: db_owner.clone(),
    });

    // `syncDatabases`: for a new prepared database, `d_owner` and (with defaultUsers) `d_owner_user` get
    // database-wide default privileges towards `d_reader` / `d_writer`.
    let privileges = |schema: Option<&str>, creator: &str, group: &str| DefaultPrivileges {
        database: db.to_string(),
        schema: schema.map(str::to_string),
        creator: creator.to_string(),
        reader: format!("{group}_reader"),
        writer: format!("{group}_writer"),
    };
    for creator in owner_roles(db, db_users) {
        out.default_privileges.push(privileges(None, &creator, db));
    }

    for (schema, s) in &schemas {
        let with_roles = s.default_roles.unwrap_or(true);
        let schema_users = s.default_users.unwrap_or(false);
        let schema_prefix = format!("{db}_{schema}");
        // `syncPreparedSchemas`: the schema's own owner role when it has default roles, else the database's.
        let schema_owner = if with_roles {
            format!("{schema_prefix}_owner")
        } else {
            db_owner.clone()
        };
        out.schemas.push(Schema {
            database: db.to_string(),
            name: schema.clone(),
            owner: schema_owner.clone(),
        });

        // `execCreateDatabaseSchema`, in its order.
        let s = Some(schema.as_str());
        out.default_privileges
            .push(privileges(s, &schema_owner, db));
        if with_roles {
            if schema_users {
                out.default_privileges
                    .push(privileges(s, &format!("{schema_owner}_user"), db));
            }
            let mut owners = owner_roles(db, db_users);
            owners.extend(owner_roles(&schema_prefix, schema_users));
            for creator in owners {
                out.default_privileges
                    .push(privileges(s, &creator, &schema_prefix));
            }
        } else if db_users {
            out.default_privileges
                .push(privileges(s, &format!("{schema_owner}_user"), db));
        }
    }

    for (extension, schema) in spec.extensions.iter().flatten() {
        out.extensions.push(Extension {
            database: db.to_string(),
            name: extension.clone(),
            schema: schema.clone(),
        });
    }
}

/// Upstream's `getOwnerRoles`.
fn owner_roles(prefix: &str, with_user: bool) -> Vec<String> {
    let mut owners = vec![format!("{prefix}_owner")];
    if with_user {
        owners.push(format!("{prefix}_owner_user"));
    }
    owners
}

/// One call of upstream's `initDefaultRoles`: the owner/reader/writer roles (or their `_user` login roles)
/// under one prefix, `d` or `d_s`.
struct Group<'a> {
    c: &'a Cluster<'a>,
    prefix: String,
    /// Admin of the owner roles; the owner is the admin of the others.
    admin: String,
    search_path: String,
    namespace: String,
    field: String,
}

impl Group<'_> {
    fn push(&self, users: bool, out: &mut Prepared) {
        let p = &self.prefix;
        for (kind, inherits) in [
            ("owner", None),
            ("reader", None),
            ("writer", Some("reader")),
        ] {
            let (name, member_of) = if users {
                (format!("{p}_{kind}_user"), Some(format!("{p}_{kind}")))
            } else {
                (format!("{p}_{kind}"), inherits.map(|i| format!("{p}_{i}")))
            };
            let owner = kind == "owner";
            let role = Role {
                origin: Origin::Bootstrap,
                flags: BTreeSet::from([if users { Flag::Login } else { Flag::NoLogin }]),
                password: if users {
                    Password::Secret {
                        namespace: self.namespace.clone(),
                        name: self.c.role_secret_name(&name),
                    }
                } else {
                    Password::Null
                },
                member_of: member_of.into_iter().collect(),
                admin: Some(if owner {
                    self.admin.clone()
                } else {
                    format!("{p}_owner")
                }),
                parameters: BTreeMap::from([("search_path".to_string(), self.search_path.clone())]),
                db_owner: owner,
                name,
            };
            out.roles.push((role, self.field.clone()));
        }
    }
}
