use super::*;
use crate::roles::catalog::CurrentDatabase;
use crate::roles::model::{Database, DefaultPrivileges, Extension, Schema};

fn role(name: &str, origin: Origin, flags: &[Flag], member_of: &[&str], pw: Password) -> Role {
    Role {
        name: name.into(),
        origin,
        flags: flags.iter().copied().collect(),
        password: pw,
        member_of: member_of.iter().map(|s| s.to_string()).collect(),
        admin: None,
        parameters: BTreeMap::new(),
        db_owner: false,
    }
}

fn secret(name: &str) -> Password {
    Password::Secret {
        namespace: "default".into(),
        name: format!("{name}.secret"),
    }
}

/// A prepared-database-like layout with names that need quoting.
fn desired() -> Desired {
    let mut roles = BTreeMap::new();
    let mut owner = role(
        "foo-bar_owner",
        Origin::Bootstrap,
        &[Flag::NoLogin],
        &[],
        Password::Null,
    );
    owner.admin = Some("admin".into());
    owner
        .parameters
        .insert("search_path".into(), r#""$user", "my schema""#.into());
    let writer = role(
        "foo-bar_writer",
        Origin::Bootstrap,
        &[Flag::NoLogin],
        &["foo-bar_reader"],
        Password::Null,
    );
    let reader = role(
        "foo-bar_reader",
        Origin::Bootstrap,
        &[Flag::NoLogin],
        &[],
        Password::Null,
    );
    let app = role(
        "Data.Team",
        Origin::Manifest,
        &[Flag::Login, Flag::CreateDb],
        &["foo-bar_writer"],
        secret("Data.Team"),
    );
    for r in [owner, writer, reader, app] {
        roles.insert(r.name.clone(), r);
    }
    Desired {
        roles,
        databases: vec![Database {
            name: "foo-bar".into(),
            owner: "foo-bar_owner".into(),
        }],
        schemas: vec![Schema {
            database: "foo-bar".into(),
            name: "my schema".into(),
            owner: "foo-bar_owner".into(),
        }],
        extensions: vec![Extension {
            database: "foo-bar".into(),
            name: "pg_trgm".into(),
            schema: "my schema".into(),
        }],
        default_privileges: vec![DefaultPrivileges {
            database: "foo-bar".into(),
            schema: Some("my schema".into()),
            creator: "foo-bar_owner".into(),
            reader: "foo-bar_reader".into(),
            writer: "foo-bar_writer".into(),
        }],
    }
}

fn fresh() -> Current {
    let mut c = Current::default();
    for name in ["postgres", "admin"] {
        c.roles.insert(name.into(), CurrentRole::default());
    }
    c.databases
        .insert("postgres".into(), CurrentDatabase::default());
    c
}

fn passwords() -> BTreeMap<String, String> {
    BTreeMap::from([("Data.Team".to_string(), "it's $$ secret".to_string())])
}

/// What Postgres has after `desired` was applied, with the password stored by `hash`.
fn applied(d: &Desired, stored: &str) -> Current {
    let mut c = fresh();
    for r in d.roles.values() {
        c.roles.insert(
            r.name.clone(),
            CurrentRole {
                password: matches!(r.password, Password::Secret { .. }).then(|| stored.to_string()),
                flags: r.flags.clone(),
                member_of: r.member_of.clone(),
                // As Postgres stores it: quotes only where needed.
                parameters: r
                    .parameters
                    .iter()
                    .map(|(k, v)| (k.clone(), v.replace(", ", ",")))
                    .collect(),
            },
        );
    }
    let db = CurrentDatabase {
        owner: "foo-bar_owner".into(),
        schemas: BTreeMap::from([("my schema".into(), "foo-bar_owner".into())]),
        extensions: BTreeMap::from([("pg_trgm".into(), "my schema".into())]),
        default_privileges: BTreeSet::from([("foo-bar_owner".into(), "my schema".into())]),
    };
    c.databases.insert("foo-bar".into(), db);
    c
}

#[test]
fn a_fresh_cluster_gets_everything_in_dependency_order() {
    let p = plan(&desired(), &fresh(), &passwords(), Encryption::ScramSha256);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let summaries: Vec<&str> = p.statements.iter().map(|s| s.summary.as_str()).collect();
    let pos = |s: &str| summaries.iter().position(|x| *x == s).unwrap();
    assert!(pos("create role foo-bar_reader") < pos("create role foo-bar_writer"));
    assert!(pos("create role foo-bar_writer") < pos("create role Data.Team"));
    assert!(pos("create role Data.Team") < pos("create database foo-bar owned by foo-bar_owner"));
    let app = p
        .statements
        .iter()
        .find(|s| s.summary == "create role Data.Team")
        .unwrap();
    assert!(
        app.sql.starts_with(
            r#"CREATE ROLE "Data.Team" LOGIN CREATEDB IN ROLE "foo-bar_writer" PASSWORD 'SCRAM-SHA-256$4096:"#
        ),
        "{}",
        app.sql
    );
    // The clear text never leaves the coordinator.
    assert!(p.statements.iter().all(|s| !s.sql.contains("secret")));
    let tail: Vec<&str> = summaries[summaries.len() - 3..].to_vec();
    assert_eq!(
        tail,
        [
            "create schema my schema in foo-bar owned by foo-bar_owner",
            "create extension pg_trgm in foo-bar.my schema",
            "default privileges of foo-bar_owner in foo-bar.my schema for foo-bar_reader, foo-bar_writer",
        ]
    );
    assert!(p
        .statements
        .iter()
        .rev()
        .take(3)
        .all(|s| s.database == "foo-bar"));
}

#[test]
fn nothing_to_do_is_no_statement() {
    let d = desired();
    let stored = password::hash("it's $$ secret", "Data.Team", Encryption::ScramSha256);
    let p = plan(
        &d,
        &applied(&d, &stored),
        &passwords(),
        Encryption::ScramSha256,
    );
    assert_eq!(p, Plan::default());
}

#[test]
fn drift_is_repaired_additively() {
    let d = desired();
    let stored = password::hash("old", "Data.Team", Encryption::ScramSha256);
    let mut c = applied(&d, &stored);
    let app = c.roles.get_mut("Data.Team").unwrap();
    app.flags.remove(&Flag::CreateDb);
    app.flags.insert(Flag::Superuser); // granted by hand: kept
    app.member_of.clear();
    app.member_of.insert("by-hand".into()); // kept
    c.databases.get_mut("foo-bar").unwrap().owner = "postgres".into();
    c.databases
        .get_mut("foo-bar")
        .unwrap()
        .extensions
        .insert("pg_trgm".into(), "public".into());
    let p = plan(&d, &c, &passwords(), Encryption::ScramSha256);
    let sql: Vec<&str> = p.statements.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sql[0], r#"ALTER ROLE "Data.Team" CREATEDB"#);
    assert!(sql[1].starts_with(r#"ALTER ROLE "Data.Team" PASSWORD 'SCRAM-SHA-256$"#));
    assert_eq!(sql[2], r#"GRANT "foo-bar_writer" TO "Data.Team""#);
    assert_eq!(
        sql[3],
        r#"ALTER DATABASE "foo-bar" OWNER TO "foo-bar_owner""#
    );
    assert_eq!(
        sql[4],
        r#"ALTER EXTENSION "pg_trgm" SET SCHEMA "my schema""#
    );
    assert_eq!(sql.len(), 5);
}

#[test]
fn missing_secrets_and_roles_are_warnings_not_failures() {
    let mut d = desired();
    d.roles.get_mut("foo-bar_owner").unwrap().admin = Some("nobody".into());
    let p = plan(&d, &fresh(), &BTreeMap::new(), Encryption::Md5);
    assert_eq!(
        p.warnings,
        [
            "role Data.Team: no password in Secret Data.Team.secret; its password is left as it is",
            "role foo-bar_owner: admin role nobody does not exist",
        ]
    );
    let app = p
        .statements
        .iter()
        .find(|s| s.summary == "create role Data.Team")
        .unwrap();
    assert!(app.sql.ends_with("PASSWORD NULL"), "{}", app.sql);
}

#[test]
fn human_users_lose_a_password_set_by_hand() {
    let mut d = Desired::default();
    let h = role(
        "jane",
        Origin::TeamsApi,
        &[Flag::Login],
        &[],
        Password::Null,
    );
    d.roles.insert("jane".into(), h.clone());
    let mut c = fresh();
    c.roles.insert(
        "jane".into(),
        CurrentRole {
            password: Some("md5x".into()),
            flags: h.flags.clone(),
            ..Default::default()
        },
    );
    let p = plan(&d, &c, &BTreeMap::new(), Encryption::ScramSha256);
    assert_eq!(p.statements[0].sql, r#"ALTER ROLE "jane" PASSWORD NULL"#);
}
