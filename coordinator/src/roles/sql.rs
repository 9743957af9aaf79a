//! SQL text for the statements the sync issues. Every name goes through [`ident`] and every value through
//! [`literal`]; nothing else from a manifest, a Secret or the Teams API is ever spliced into SQL. DDL takes no
//! bind parameters in Postgres, so quoting is the only way, and it is done in exactly one place.

use std::collections::BTreeSet;

use super::model::Flag;

/// What one statement changes in the catalog: the in-memory twin applies it, and tests use it to show that
/// a plan, once carried out, leaves nothing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A role created, or changed: flags and memberships added, the password replaced (`Some`), one
    /// setting set.
    Role {
        name: String,
        flags: BTreeSet<Flag>,
        password: Option<Option<String>>,
        member_of: BTreeSet<String>,
        parameter: Option<(String, String)>,
    },
    Database {
        name: String,
        owner: String,
    },
    Schema {
        database: String,
        name: String,
        owner: String,
    },
    Extension {
        database: String,
        name: String,
        schema: String,
    },
    DefaultPrivileges {
        database: String,
        creator: String,
        schema: String,
    },
    DroppedRole(String),
}

impl Effect {
    pub fn role(name: &str) -> Self {
        Effect::Role {
            name: name.into(),
            flags: BTreeSet::new(),
            password: None,
            member_of: BTreeSet::new(),
            parameter: None,
        }
    }

    pub fn with_flags(mut self, f: &BTreeSet<Flag>) -> Self {
        if let Effect::Role { flags, .. } = &mut self {
            flags.extend(f.iter().copied());
        }
        self
    }

    pub fn with_password(mut self, hash: Option<&str>) -> Self {
        if let Effect::Role { password, .. } = &mut self {
            *password = Some(hash.map(String::from));
        }
        self
    }

    pub fn with_member_of(mut self, roles: &BTreeSet<String>) -> Self {
        if let Effect::Role { member_of, .. } = &mut self {
            member_of.extend(roles.iter().cloned());
        }
        self
    }

    pub fn with_parameter(mut self, key: &str, value: &str) -> Self {
        if let Effect::Role { parameter, .. } = &mut self {
            *parameter = Some((key.into(), value.into()));
        }
        self
    }

    pub fn schema(database: &str, name: &str, owner: &str) -> Self {
        Effect::Schema {
            database: database.into(),
            name: name.into(),
            owner: owner.into(),
        }
    }

    pub fn extension(database: &str, name: &str, schema: &str) -> Self {
        Effect::Extension {
            database: database.into(),
            name: name.into(),
            schema: schema.into(),
        }
    }
}

/// A quoted identifier: any name works, `foo-bar`, `Data.Team`, `a "b"`, a schema with a space.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted literal, correct whatever `standard_conforming_strings` is (an `E''` string when it has a
/// backslash).
pub fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

fn idents<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One statement, in the database it must run in. `summary` is what logs and events may show: names only,
/// never a password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub database: String,
    pub sql: String,
    pub summary: String,
    /// What the statement does to the catalog, so the in-memory twin and the tests can apply it.
    pub effect: Effect,
}

impl Statement {
    fn new(database: &str, sql: String, summary: String, effect: Effect) -> Self {
        Statement {
            database: database.to_string(),
            sql,
            summary,
            effect,
        }
    }
}

/// The maintenance database every role and database statement runs in.
pub const POSTGRES_DB: &str = "postgres";

/// A stored password (already hashed) or none.
pub fn password_clause(hash: Option<&str>) -> String {
    match hash {
        Some(h) => format!("PASSWORD {}", literal(h)),
        None => "PASSWORD NULL".into(),
    }
}

pub fn create_role(
    name: &str,
    flags: &BTreeSet<Flag>,
    in_roles: &BTreeSet<String>,
    admin: Option<&str>,
    hash: Option<&str>,
) -> Statement {
    let mut sql = format!("CREATE ROLE {}", ident(name));
    for f in flags {
        sql.push(' ');
        sql.push_str(f.keyword());
    }
    if !in_roles.is_empty() {
        sql.push_str(&format!(" IN ROLE {}", idents(in_roles)));
    }
    if let Some(a) = admin {
        sql.push_str(&format!(" ADMIN {}", ident(a)));
    }
    sql.push(' ');
    sql.push_str(&password_clause(hash));
    let effect = Effect::Role {
        name: name.into(),
        flags: flags.clone(),
        password: Some(hash.map(String::from)),
        member_of: in_roles.clone(),
        parameter: None,
    };
    Statement::new(POSTGRES_DB, sql, format!("create role {name}"), effect)
}

pub fn alter_flags(name: &str, flags: &BTreeSet<Flag>) -> Statement {
    let words: Vec<&str> = flags.iter().map(|f| f.keyword()).collect();
    Statement::new(
        POSTGRES_DB,
        format!("ALTER ROLE {} {}", ident(name), words.join(" ")),
        format!("alter role {name} {}", words.join(" ")),
        Effect::role(name).with_flags(flags),
    )
}

pub fn alter_password(name: &str, hash: Option<&str>) -> Statement {
    Statement::new(
        POSTGRES_DB,
        format!("ALTER ROLE {} {}", ident(name), password_clause(hash)),
        format!("set the password of role {name}"),
        Effect::role(name).with_password(hash),
    )
}

/// Drops an expired rotation user (the only role pgherd ever drops). Fails while the role owns objects or
/// holds privileges, as upstream's; the failure is reported and retried, nothing is reassigned.
pub fn drop_role(name: &str) -> Statement {
    Statement::new(
        POSTGRES_DB,
        format!("DROP ROLE IF EXISTS {}", ident(name)),
        format!("drop expired rotation role {name}"),
        Effect::DroppedRole(name.into()),
    )
}

pub fn grant_membership(name: &str, roles: &BTreeSet<String>) -> Statement {
    let list: Vec<&str> = roles.iter().map(String::as_str).collect();
    Statement::new(
        POSTGRES_DB,
        format!("GRANT {} TO {}", idents(roles), ident(name)),
        format!("grant {} to {name}", list.join(", ")),
        Effect::role(name).with_member_of(roles),
    )
}

/// `ALTER ROLE … SET`; a `search_path` value is a list of identifiers, as upstream writes it, anything else a
/// literal.
pub fn set_parameter(name: &str, key: &str, value: &str) -> Statement {
    let value_sql = if key == "search_path" {
        value
            .split(',')
            .map(|s| ident(s.trim().trim_matches('"')))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        literal(value)
    };
    Statement::new(
        POSTGRES_DB,
        format!(
            "ALTER ROLE {} SET {} TO {value_sql}",
            ident(name),
            ident(key)
        ),
        format!("set {key} for role {name}"),
        Effect::role(name).with_parameter(key, value),
    )
}

pub fn create_database(name: &str, owner: &str) -> Statement {
    Statement::new(
        POSTGRES_DB,
        format!("CREATE DATABASE {} OWNER {}", ident(name), ident(owner)),
        format!("create database {name} owned by {owner}"),
        Effect::Database {
            name: name.into(),
            owner: owner.into(),
        },
    )
}

pub fn alter_database_owner(name: &str, owner: &str) -> Statement {
    Statement::new(
        POSTGRES_DB,
        format!("ALTER DATABASE {} OWNER TO {}", ident(name), ident(owner)),
        format!("make {owner} the owner of database {name}"),
        Effect::Database {
            name: name.into(),
            owner: owner.into(),
        },
    )
}

pub fn create_schema(database: &str, name: &str, owner: &str) -> Statement {
    Statement::new(
        database,
        format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            ident(name),
            ident(owner)
        ),
        format!("create schema {name} in {database} owned by {owner}"),
        Effect::schema(database, name, owner),
    )
}

pub fn alter_schema_owner(database: &str, name: &str, owner: &str) -> Statement {
    Statement::new(
        database,
        format!("ALTER SCHEMA {} OWNER TO {}", ident(name), ident(owner)),
        format!("make {owner} the owner of schema {name} in {database}"),
        Effect::schema(database, name, owner),
    )
}

pub fn create_extension(database: &str, name: &str, schema: &str) -> Statement {
    Statement::new(
        database,
        format!(
            "CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}",
            ident(name),
            ident(schema)
        ),
        format!("create extension {name} in {database}.{schema}"),
        Effect::extension(database, name, schema),
    )
}

pub fn move_extension(database: &str, name: &str, schema: &str) -> Statement {
    Statement::new(
        database,
        format!(
            "ALTER EXTENSION {} SET SCHEMA {}",
            ident(name),
            ident(schema)
        ),
        format!("move extension {name} in {database} to schema {schema}"),
        Effect::extension(database, name, schema),
    )
}

/// Upstream's prepared-database grants (postgres-operator `pkg/cluster/database.go`): readers may use
/// schemas, read tables and sequences, run functions and use types; writers also change rows and advance
/// sequences. For the creator's future objects, database-wide or in one schema, plus usage on that schema.
pub fn default_privileges(
    database: &str,
    schema: Option<&str>,
    creator: &str,
    reader: &str,
    writer: &str,
) -> Statement {
    let (r, w, c) = (ident(reader), ident(writer), ident(creator));
    let scope = match schema {
        Some(s) => format!("FOR ROLE {c} IN SCHEMA {}", ident(s)),
        None => format!("FOR ROLE {c}"),
    };
    let mut parts = Vec::new();
    if let Some(s) = schema {
        parts.push(format!("GRANT USAGE ON SCHEMA {} TO {r}, {w}", ident(s)));
    } else {
        parts.push(format!(
            "ALTER DEFAULT PRIVILEGES {scope} GRANT USAGE ON SCHEMAS TO {r}, {w}"
        ));
    }
    for grant in [
        format!("SELECT ON TABLES TO {r}"),
        format!("SELECT ON SEQUENCES TO {r}"),
        format!("INSERT, UPDATE, DELETE ON TABLES TO {w}"),
        format!("USAGE, UPDATE ON SEQUENCES TO {w}"),
        format!("EXECUTE ON FUNCTIONS TO {r}, {w}"),
        format!("USAGE ON TYPES TO {r}, {w}"),
    ] {
        parts.push(format!("ALTER DEFAULT PRIVILEGES {scope} GRANT {grant}"));
    }
    let place = schema
        .map(|s| format!("{database}.{s}"))
        .unwrap_or(database.to_string());
    Statement::new(
        database,
        parts.join(";\n"),
        format!("default privileges of {creator} in {place} for {reader}, {writer}"),
        Effect::DefaultPrivileges {
            database: database.into(),
            creator: creator.into(),
            schema: schema.unwrap_or_default().into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_survive_anything() {
        assert_eq!(ident("foo-bar"), r#""foo-bar""#);
        assert_eq!(ident(r#"a "b""#), r#""a ""b""""#);
        assert_eq!(literal("it's $$"), "'it''s $$'");
        assert_eq!(literal(r"back\slash'"), r"E'back\\slash'''");
    }

    #[test]
    fn create_role_spells_every_part() {
        let s = create_role(
            "Data.Team",
            &BTreeSet::from([Flag::Login, Flag::CreateDb]),
            &BTreeSet::from(["a b".to_string(), "admin".to_string()]),
            Some("owner"),
            Some("SCRAM-SHA-256$x"),
        );
        assert_eq!(
            s.sql,
            r#"CREATE ROLE "Data.Team" LOGIN CREATEDB IN ROLE "a b", "admin" ADMIN "owner" PASSWORD 'SCRAM-SHA-256$x'"#
        );
        assert!(!s.summary.contains("SCRAM"));
        let s = create_role("h", &BTreeSet::new(), &BTreeSet::new(), None, None);
        assert_eq!(s.sql, r#"CREATE ROLE "h" PASSWORD NULL"#);
    }

    #[test]
    fn search_path_is_a_list_of_identifiers() {
        let s = set_parameter("u", "search_path", r#""$user", data, my schema"#);
        assert_eq!(
            s.sql,
            r#"ALTER ROLE "u" SET "search_path" TO "$user", "data", "my schema""#
        );
        let s = set_parameter("u", "statement_timeout", "5s");
        assert_eq!(s.sql, r#"ALTER ROLE "u" SET "statement_timeout" TO '5s'"#);
    }
}
