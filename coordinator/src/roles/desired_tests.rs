use super::*;
use crate::builders::ExternalInputs;
use crate::roles::model::{DefaultPrivileges, Extension, Schema};
use pgherd_shared::crd::{OperatorConfigurationData, Postgresql};
use pretty_assertions::assert_eq;

const COMPLETE: &str = include_str!("../../tests/fixtures/zalando/complete-postgres-manifest.yaml");
const CREDENTIALS: &str = "credentials.postgresql.acid.zalan.do";

fn pg(yaml_spec: &str) -> Postgresql {
    serde_yaml_ng::from_str(&format!(
        "metadata: {{name: acid-x, namespace: db}}\nspec:\n  teamId: acid\n  volume: {{size: 1Gi}}\n  numberOfInstances: 2\n  postgresql: {{version: \"17\"}}\n{yaml_spec}"
    ))
    .unwrap()
}

fn cfg(yaml: &str) -> OperatorConfig {
    let data: OperatorConfigurationData = serde_yaml_ng::from_str(yaml).unwrap();
    OperatorConfig::from_data(&data, crate::config::Source::OperatorConfiguration).unwrap()
}

fn run_with(
    pg: &Postgresql,
    cfg: &OperatorConfig,
    external: &ExternalRoles,
) -> Result<Outcome, DesiredErrors> {
    let inputs = ExternalInputs::default();
    let c = Cluster::new(pg, cfg, "default", &inputs);
    desired(&c, external)
}

fn run(spec: &str) -> Outcome {
    run_with(
        &pg(spec),
        &OperatorConfig::default(),
        &ExternalRoles::default(),
    )
    .unwrap()
}

fn errors(spec: &str) -> Vec<String> {
    run_with(
        &pg(spec),
        &OperatorConfig::default(),
        &ExternalRoles::default(),
    )
    .unwrap_err()
    .0
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A role written out field by field, so the golden test reads like upstream's table.
#[allow(clippy::too_many_arguments)]
fn role(
    name: &str,
    origin: Origin,
    flags: &[Flag],
    secret_ns: Option<&str>,
    member_of: &[&str],
    admin: Option<&str>,
    search_path: Option<&str>,
    db_owner: bool,
) -> Role {
    Role {
        name: name.into(),
        origin,
        flags: flags.iter().copied().collect(),
        password: match secret_ns {
            Some(ns) => Password::Secret {
                namespace: ns.into(),
                name: format!("{}.acid-test-cluster.{CREDENTIALS}", name.replace('_', "-")),
            },
            None => Password::Null,
        },
        member_of: set(member_of),
        admin: admin.map(str::to_string),
        parameters: search_path
            .map(|p| BTreeMap::from([("search_path".to_string(), p.to_string())]))
            .unwrap_or_default(),
        db_owner,
    }
}

fn privs(db: &str, schema: Option<&str>, creator: &str, group: &str) -> DefaultPrivileges {
    DefaultPrivileges {
        database: db.into(),
        schema: schema.map(str::to_string),
        creator: creator.into(),
        reader: format!("{group}_reader"),
        writer: format!("{group}_writer"),
    }
}

#[test]
fn complete_example_manifest_matches_upstreams_layout() {
    use Flag::*;
    use Origin::*;
    let pg: Postgresql = serde_yaml_ng::from_str(COMPLETE).unwrap();
    let out = run_with(&pg, &OperatorConfig::default(), &ExternalRoles::default()).unwrap();
    let ns = Some("default");
    let bar = Some(r#""$user", "data", "history""#);
    let data = Some(r#""$user", "data""#);
    let history = Some(r#""$user", "history""#);
    #[rustfmt::skip]
    let roles = vec![
        //   name                 origin     flags                 secret member_of              admin                  search_path db_owner
        role("bar_data_owner",    Bootstrap, &[NoLogin],           None, &[],                    Some("bar_owner"),      data,    true),
        role("bar_data_reader",   Bootstrap, &[NoLogin],           None, &[],                    Some("bar_data_owner"), data,    false),
        role("bar_data_writer",   Bootstrap, &[NoLogin],           None, &["bar_data_reader"],   Some("bar_data_owner"), data,    false),
        role("bar_history_owner", Bootstrap, &[NoLogin],           None, &[],                    Some("bar_owner"),      history, true),
        role("bar_history_reader",Bootstrap, &[NoLogin],           None, &[],                    Some("bar_history_owner"), history, false),
        role("bar_history_writer",Bootstrap, &[NoLogin],           None, &["bar_history_reader"],Some("bar_history_owner"), history, false),
        role("bar_owner",         Bootstrap, &[NoLogin],           None, &[],                    Some("admin"),          bar,     true),
        role("bar_owner_user",    Bootstrap, &[Login],             ns,   &["bar_owner"],         Some("admin"),          bar,     true),
        role("bar_reader",        Bootstrap, &[NoLogin],           None, &[],                    Some("bar_owner"),      bar,     false),
        role("bar_reader_user",   Bootstrap, &[Login],             ns,   &["bar_reader"],        Some("bar_owner"),      bar,     false),
        role("bar_writer",        Bootstrap, &[NoLogin],           None, &["bar_reader"],        Some("bar_owner"),      bar,     false),
        role("bar_writer_user",   Bootstrap, &[Login],             ns,   &["bar_writer"],        Some("bar_owner"),      bar,     false),
        role("foo_user",          Manifest,  &[Login],             ns,   &[],                    Some("admin"),          None,    false),
        role("postgres",          System,    &[Superuser, Login],  ns,   &[],                    None,                   None,    false),
        role("standby",           System,    &[Login, Replication],ns,   &[],                    None,                   None,    false),
        role("zalando",           Manifest,  &[Superuser, Login, CreateDb], ns, &[],             Some("admin"),          None,    true),
    ];
    assert_eq!(
        out.desired.roles,
        roles
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect::<BTreeMap<_, _>>()
    );
    assert_eq!(
        out.desired.databases,
        vec![
            Database {
                name: "bar".into(),
                owner: "bar_owner".into()
            },
            Database {
                name: "foo".into(),
                owner: "zalando".into()
            },
        ]
    );
    assert_eq!(
        out.desired.schemas,
        vec![
            Schema {
                database: "bar".into(),
                name: "data".into(),
                owner: "bar_data_owner".into()
            },
            Schema {
                database: "bar".into(),
                name: "history".into(),
                owner: "bar_history_owner".into()
            },
        ]
    );
    assert_eq!(
        out.desired.extensions,
        vec![
            Extension {
                database: "bar".into(),
                name: "pg_partman".into(),
                schema: "public".into()
            },
            Extension {
                database: "bar".into(),
                name: "pgcrypto".into(),
                schema: "public".into()
            },
        ]
    );
    #[rustfmt::skip]
    let expected = vec![
        // syncDatabases: database-wide, for d_owner and (defaultUsers) d_owner_user
        privs("bar", None, "bar_owner", "bar"),
        privs("bar", None, "bar_owner_user", "bar"),
        // execCreateDatabaseSchema for "data": the schema owner towards the database roles ...
        privs("bar", Some("data"), "bar_data_owner", "bar"),
        // ... then every owner role towards the schema roles
        privs("bar", Some("data"), "bar_owner", "bar_data"),
        privs("bar", Some("data"), "bar_owner_user", "bar_data"),
        privs("bar", Some("data"), "bar_data_owner", "bar_data"),
        // the same for "history"
        privs("bar", Some("history"), "bar_history_owner", "bar"),
        privs("bar", Some("history"), "bar_owner", "bar_history"),
        privs("bar", Some("history"), "bar_owner_user", "bar_history"),
        privs("bar", Some("history"), "bar_history_owner", "bar_history"),
    ];
    assert_eq!(out.desired.default_privileges, expected);
    assert_eq!(out.warnings, vec![]);
}

#[test]
fn present_but_empty_prepared_databases_make_one_named_like_the_cluster() {
    use Flag::*;
    let out = run("  preparedDatabases: {}");
    let d = &out.desired;
    let names: Vec<&str> = d.roles.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "acid_x_data_owner",
            "acid_x_data_reader",
            "acid_x_data_writer",
            "acid_x_owner",
            "acid_x_reader",
            "acid_x_writer",
            "postgres",
            "standby",
        ]
    );
    let owner = &d.roles["acid_x_owner"];
    assert_eq!(owner.flags, BTreeSet::from([NoLogin]));
    assert_eq!(owner.password, Password::Null);
    assert_eq!(owner.admin.as_deref(), Some("admin"));
    assert_eq!(
        owner.parameters["search_path"],
        r#""$user", "data""#.to_string()
    );
    assert_eq!(
        d.databases,
        vec![Database {
            name: "acid_x".into(),
            owner: "acid_x_owner".into()
        }]
    );
    assert_eq!(
        d.schemas,
        vec![Schema {
            database: "acid_x".into(),
            name: "data".into(),
            owner: "acid_x_data_owner".into()
        }]
    );
    assert_eq!(
        d.default_privileges,
        vec![
            privs("acid_x", None, "acid_x_owner", "acid_x"),
            privs("acid_x", Some("data"), "acid_x_data_owner", "acid_x"),
            privs("acid_x", Some("data"), "acid_x_owner", "acid_x_data"),
            privs("acid_x", Some("data"), "acid_x_data_owner", "acid_x_data"),
        ]
    );
    assert!(d.extensions.is_empty());
    // Absent preparedDatabases: nothing prepared.
    assert_eq!(run("").desired.roles.len(), 2);
}

#[test]
fn schema_without_default_roles_is_owned_by_the_database_owner() {
    let out = run(
        "  preparedDatabases:\n    shop:\n      defaultUsers: true\n      schemas:\n        raw: {defaultRoles: false, defaultUsers: true}\n        api: {defaultUsers: true}",
    );
    let d = &out.desired;
    // No shop_raw_* roles at all (defaultUsers needs defaultRoles), but shop_api_* with _user roles.
    assert!(!d.roles.keys().any(|n| n.starts_with("shop_raw")));
    let api_user = &d.roles["shop_api_owner_user"];
    assert_eq!(api_user.member_of, set(&["shop_api_owner"]));
    assert_eq!(api_user.admin.as_deref(), Some("shop_owner"));
    assert!(api_user.db_owner);
    assert_eq!(
        d.roles["shop_api_reader_user"].admin.as_deref(),
        Some("shop_api_owner")
    );
    assert_eq!(
        d.roles["shop_owner"].parameters["search_path"],
        r#""$user", "api", "raw""#
    );
    assert_eq!(
        d.schemas,
        vec![
            Schema {
                database: "shop".into(),
                name: "api".into(),
                owner: "shop_api_owner".into()
            },
            Schema {
                database: "shop".into(),
                name: "raw".into(),
                owner: "shop_owner".into()
            },
        ]
    );
    let raw: Vec<_> = d
        .default_privileges
        .iter()
        .filter(|p| p.schema.as_deref() == Some("raw"))
        .cloned()
        .collect();
    assert_eq!(
        raw,
        vec![
            privs("shop", Some("raw"), "shop_owner", "shop"),
            privs("shop", Some("raw"), "shop_owner_user", "shop"),
        ]
    );
    let api: Vec<_> = d
        .default_privileges
        .iter()
        .filter(|p| p.schema.as_deref() == Some("api"))
        .cloned()
        .collect();
    assert_eq!(
        api,
        vec![
            privs("shop", Some("api"), "shop_api_owner", "shop"),
            privs("shop", Some("api"), "shop_api_owner_user", "shop"),
            privs("shop", Some("api"), "shop_owner", "shop_api"),
            privs("shop", Some("api"), "shop_owner_user", "shop_api"),
            privs("shop", Some("api"), "shop_api_owner", "shop_api"),
            privs("shop", Some("api"), "shop_api_owner_user", "shop_api"),
        ]
    );
}

#[test]
fn flags_are_normalised_like_upstream() {
    use Flag::*;
    let out = run("  users:\n    a: []\n    b: [NOLOGIN, createRole]\n    c: [login, LOGIN, nosuperuser]\n    d: [noinherit, bypassrls]");
    let r = &out.desired.roles;
    assert_eq!(r["a"].flags, BTreeSet::from([Login]));
    assert_eq!(r["b"].flags, BTreeSet::from([NoLogin, CreateRole]));
    assert_eq!(r["b"].password, Password::Null);
    assert_eq!(r["c"].flags, BTreeSet::from([Login, NoSuperuser]));
    assert_eq!(r["d"].flags, BTreeSet::from([Login, NoInherit, BypassRls]));
    assert_eq!(
        r["a"].password,
        Password::Secret {
            namespace: "db".into(),
            name: format!("a.acid-x.{CREDENTIALS}")
        }
    );
}

#[test]
fn unknown_and_conflicting_flags_are_errors_naming_the_user() {
    assert_eq!(
        errors("  users:\n    Data.Team: [foo, login]\n    ok: [superuser, NOSUPERUSER]"),
        vec![
            r#"spec.users["Data.Team"]: unknown flag "foo""#.to_string(),
            r#"spec.users["ok"]: conflicting flags SUPERUSER and NOSUPERUSER"#.to_string(),
        ]
    );
}

#[test]
fn admin_role_for_users_follows_the_configuration() {
    let pg = pg("  users:\n    app: []");
    let none = ExternalRoles::default();
    let off = cfg("teams_api: {enable_admin_role_for_users: false}");
    let other = cfg("teams_api: {team_admin_role: dba}");
    let get = |c: &OperatorConfig| run_with(&pg, c, &none).unwrap().desired.roles["app"].clone();
    assert_eq!(get(&off).admin, None);
    assert_eq!(get(&other).admin.as_deref(), Some("dba"));
}

#[test]
fn additional_owner_roles_join_every_database_owner() {
    let pg = pg("  users:\n    app: []\n    other: []\n  databases:\n    appdb: app\n  preparedDatabases:\n    p:\n      defaultUsers: true");
    let c = cfg("users: {additional_owner_roles: [cron_admin, app]}");
    let out = run_with(&pg, &c, &ExternalRoles::default()).unwrap();
    let r = &out.desired.roles;
    let owners: Vec<&str> = r
        .values()
        .filter(|r| r.member_of.contains("cron_admin"))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        owners,
        vec!["app", "p_data_owner", "p_owner", "p_owner_user"]
    );
    // Never a member of itself.
    assert_eq!(r["app"].member_of, set(&["cron_admin"]));
    assert_eq!(r["p_owner"].member_of, set(&["app", "cron_admin"]));
    assert!(r["other"].member_of.is_empty());
}

fn external_role(name: &str, origin: Origin) -> Role {
    Role {
        name: name.into(),
        origin,
        flags: BTreeSet::new(),
        password: Password::Given("pw".into()),
        member_of: BTreeSet::new(),
        admin: None,
        parameters: BTreeMap::new(),
        db_owner: false,
    }
}

#[test]
fn collisions_are_resolved_by_origin_and_reported() {
    // "shared": manifest < infrastructure < team; "p_owner": prepared beats all three;
    // "robot": manifest vs team member, the team member wins.
    let pg = pg("  users:\n    shared: []\n    p_owner: []\n    robot: [createdb]\n  preparedDatabases:\n    p: {}");
    let cfg = OperatorConfig::default();
    let external = ExternalRoles {
        infrastructure: vec![
            external_role("shared", Origin::Infrastructure),
            external_role("p_owner", Origin::Infrastructure),
        ],
        human: vec![
            human_role(&cfg, "shared", false),
            human_role(&cfg, "robot", true),
        ],
    };
    let out = run_with(&pg, &cfg, &external).unwrap();
    let r = &out.desired.roles;
    assert_eq!(r["shared"].origin, Origin::TeamsApi);
    assert_eq!(r["p_owner"].origin, Origin::Bootstrap);
    assert_eq!(r["robot"].origin, Origin::TeamsApi);
    assert_eq!(
        r["robot"].flags,
        BTreeSet::from([Flag::Login, Flag::Superuser])
    );
    assert_eq!(
        out.warnings,
        vec![
            Warning::Shadowed {
                name: "p_owner".into(),
                kept: Origin::Bootstrap,
                dropped: Origin::Infrastructure
            },
            Warning::Shadowed {
                name: "p_owner".into(),
                kept: Origin::Bootstrap,
                dropped: Origin::Manifest
            },
            Warning::Shadowed {
                name: "shared".into(),
                kept: Origin::Infrastructure,
                dropped: Origin::Manifest
            },
            Warning::Shadowed {
                name: "shared".into(),
                kept: Origin::TeamsApi,
                dropped: Origin::Infrastructure
            },
            Warning::Shadowed {
                name: "robot".into(),
                kept: Origin::TeamsApi,
                dropped: Origin::Manifest
            },
        ]
    );
    assert_eq!(
        out.warnings[2].to_string(),
        r#"role "shared": the manifest user is ignored, the infrastructure role of the same name wins"#
    );
    // The same person from two teams: the later wins, and it is no conflict worth a warning.
    let twice = ExternalRoles {
        infrastructure: vec![],
        human: vec![
            human_role(&cfg, "jane", true),
            human_role(&cfg, "jane", false),
        ],
    };
    let out = run_with(&pg, &cfg, &twice).unwrap();
    assert!(!out.desired.roles["jane"].flags.contains(&Flag::Superuser));
    assert!(!out.warnings.iter().any(|w| w.to_string().contains("jane")));
    // Infrastructure roles get upstream's LOGIN default.
    let infra_only = ExternalRoles {
        infrastructure: vec![external_role("infra", Origin::Infrastructure)],
        human: vec![],
    };
    let out = run_with(&pg, &cfg, &infra_only).unwrap();
    assert_eq!(
        out.desired.roles["infra"].flags,
        BTreeSet::from([Flag::Login])
    );
    assert_eq!(
        out.desired.roles["infra"].password,
        Password::Given("pw".into())
    );
}

#[test]
fn human_roles_log_in_through_pam() {
    let cfg = OperatorConfig::default();
    let member = human_role(&cfg, "jane", false);
    assert_eq!(member.origin, Origin::TeamsApi);
    assert_eq!(member.password, Password::Null);
    assert_eq!(member.flags, BTreeSet::from([Flag::Login]));
    assert_eq!(member.member_of, set(&["admin", "zalandos"]));
    assert_eq!(
        member.parameters,
        BTreeMap::from([("log_statement".to_string(), "all".to_string())])
    );
    let su = human_role(&cfg, "root", true);
    assert_eq!(su.flags, BTreeSet::from([Flag::Login, Flag::Superuser]));
    assert_eq!(su.member_of, set(&["zalandos"]));
}

#[test]
fn protected_and_system_names_are_never_taken_from_other_sources() {
    let pg = pg("  users:\n    admin: []\n    postgres: [createdb]\n    standby: []\n    cron_admin: []\n    app: []");
    let cfg = OperatorConfig::default();
    let external = ExternalRoles {
        infrastructure: vec![external_role("cron_admin", Origin::Infrastructure)],
        human: vec![human_role(&cfg, "postgres", true)],
    };
    let out = run_with(&pg, &cfg, &external).unwrap();
    let names: Vec<&str> = out.desired.roles.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["app", "postgres", "standby"]);
    assert_eq!(out.desired.roles["postgres"].origin, Origin::System);
    assert_eq!(
        out.warnings,
        vec![
            Warning::Protected {
                name: "cron_admin".into(),
                origin: Origin::Infrastructure
            },
            Warning::Protected {
                name: "admin".into(),
                origin: Origin::Manifest
            },
            Warning::Protected {
                name: "cron_admin".into(),
                origin: Origin::Manifest
            },
            Warning::SystemName {
                name: "postgres".into(),
                origin: Origin::Manifest
            },
            Warning::SystemName {
                name: "standby".into(),
                origin: Origin::Manifest
            },
            Warning::SystemName {
                name: "postgres".into(),
                origin: Origin::TeamsApi
            },
        ]
    );
    // A configured list replaces the default one.
    let custom = crate::config::OperatorConfig {
        super_username: "root".into(),
        ..self::cfg("teams_api: {protected_role_names: [app]}")
    };
    let out = run_with(&pg, &custom, &ExternalRoles::default()).unwrap();
    let names: Vec<&str> = out.desired.roles.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec!["admin", "cron_admin", "postgres", "root", "standby"]
    );
    // A prepared role cannot replace a system user either.
    let out = run_with(
        &self::pg("  preparedDatabases:\n    p: {}"),
        &crate::config::OperatorConfig {
            super_username: "p_owner".into(),
            ..OperatorConfig::default()
        },
        &ExternalRoles::default(),
    )
    .unwrap();
    assert_eq!(out.desired.roles["p_owner"].origin, Origin::System);
}

#[test]
fn identifiers_are_kept_verbatim() {
    let out = run(concat!(
        "  users:\n    Data.Team: []\n    app: []\n",
        "  databases:\n    foo-bar: Data.Team\n",
        "  preparedDatabases:\n    foo-baz:\n      schemas:\n        my schema: {}\n        'quo\"te': {defaultRoles: false}\n",
        "      extensions:\n        uuid-ossp: my schema\n",
    ));
    let d = &out.desired;
    assert_eq!(
        d.roles["Data.Team"].password,
        Password::Secret {
            namespace: "db".into(),
            name: format!("data.team.acid-x.{CREDENTIALS}")
        }
    );
    assert!(d.roles["Data.Team"].db_owner);
    assert!(d.roles.contains_key("foo-baz_my schema_owner"));
    assert_eq!(
        d.roles["foo-baz_owner"].parameters["search_path"],
        r#""$user", "my schema", "quo""te""#
    );
    assert_eq!(
        d.roles["foo-baz_my schema_reader"].parameters["search_path"],
        r#""$user", "my schema""#
    );
    assert_eq!(
        d.databases,
        vec![
            Database {
                name: "foo-bar".into(),
                owner: "Data.Team".into()
            },
            Database {
                name: "foo-baz".into(),
                owner: "foo-baz_owner".into()
            },
        ]
    );
    assert_eq!(
        d.schemas,
        vec![
            Schema {
                database: "foo-baz".into(),
                name: "my schema".into(),
                owner: "foo-baz_my schema_owner".into()
            },
            Schema {
                database: "foo-baz".into(),
                name: "quo\"te".into(),
                owner: "foo-baz_owner".into()
            },
        ]
    );
    assert_eq!(
        d.extensions,
        vec![Extension {
            database: "foo-baz".into(),
            name: "uuid-ossp".into(),
            schema: "my schema".into()
        }]
    );
}

#[test]
fn two_roles_sharing_a_secret_name_are_an_error() {
    assert_eq!(
        errors(
            "  users:\n    foo_user: []\n    foo-user: []\n    Data.Team: []\n    data.team: []"
        ),
        vec![
            format!(
                r#"spec.users["data.team"]: role "data.team" would share the credentials Secret db/data.team.acid-x.{CREDENTIALS} with role "Data.Team""#
            ),
            format!(
                r#"spec.users["foo_user"]: role "foo_user" would share the credentials Secret db/foo-user.acid-x.{CREDENTIALS} with role "foo-user""#
            ),
        ]
    );
    // A prepared login role against a manifest user; NOLOGIN roles have no Secret and cannot collide.
    let e = errors("  users:\n    p-owner-user: []\n    p-owner: []\n  preparedDatabases:\n    p: {defaultUsers: true}");
    assert_eq!(
        e,
        vec![format!(
            r#"spec.preparedDatabases["p"]: role "p_owner_user" would share the credentials Secret db/p-owner-user.acid-x.{CREDENTIALS} with role "p-owner-user""#
        )]
    );
}

#[test]
fn names_kubernetes_or_postgres_cannot_carry_are_errors() {
    let long = "x".repeat(64);
    let e = errors(&format!(
        "  users:\n    my user: []\n    nologin user: [nologin]\n    {long}: [nologin]\n  databases:\n    {long}: app"
    ));
    assert_eq!(
        e,
        vec![
            format!(
                r#"spec.users["my user"]: role "my user" needs the credentials Secret "my user.acid-x.{CREDENTIALS}", which is not a valid Kubernetes name (lowercase letters, digits, '-' and '.')"#
            ),
            format!(r#"spec.users["{long}"]: "{long}" is longer than Postgres' 63 bytes"#),
            format!(r#"spec.databases["{long}"]: "{long}" is longer than Postgres' 63 bytes"#),
        ]
    );
}

#[test]
fn databases_need_an_owner_this_cluster_defines() {
    let out = run("  users:\n    app: []\n  databases:\n    a: app\n    b: nobody\n    c: postgres\n  preparedDatabases:\n    a: {}");
    assert_eq!(
        out.desired.databases,
        vec![
            Database {
                name: "a".into(),
                owner: "app".into()
            },
            Database {
                name: "c".into(),
                owner: "postgres".into()
            },
        ]
    );
    assert_eq!(
        out.warnings,
        vec![
            Warning::OwnerReplaced {
                database: "a".into(),
                owner: "app".into(),
                prepared_owner: "a_owner".into()
            },
            Warning::OwnerMissing {
                database: "b".into(),
                owner: "nobody".into()
            },
        ]
    );
}

#[test]
fn cross_namespace_secrets_only_when_enabled() {
    let spec = "  users:\n    appns.app_user: []\n  preparedDatabases:\n    p:\n      defaultUsers: true\n      secretNamespace: other";
    let off = run(spec);
    let ns = |o: &Outcome, r: &str| match &o.desired.roles[r].password {
        Password::Secret { namespace, .. } => namespace.clone(),
        p => panic!("{p:?}"),
    };
    assert_eq!(ns(&off, "appns.app_user"), "db");
    assert_eq!(ns(&off, "p_owner_user"), "db");
    let on = run_with(
        &pg(spec),
        &cfg("kubernetes: {enable_cross_namespace_secret: true}"),
        &ExternalRoles::default(),
    )
    .unwrap();
    assert_eq!(ns(&on, "appns.app_user"), "appns");
    assert_eq!(ns(&on, "p_owner_user"), "other");
    assert_eq!(
        on.desired.roles["appns.app_user"].password,
        Password::Secret {
            namespace: "appns".into(),
            name: format!("appns.app-user.acid-x.{CREDENTIALS}")
        }
    );
}

#[test]
fn unique_secret_names_for_the_secrets_builder() {
    let pg = pg("");
    let cfg = OperatorConfig::default();
    let inputs = ExternalInputs::default();
    let c = Cluster::new(&pg, &cfg, "default", &inputs);
    assert_eq!(
        unique_secret_names(&c, ["postgres", "Foo_Bar"]).unwrap(),
        BTreeMap::from([
            (
                "Foo_Bar".to_string(),
                format!("foo-bar.acid-x.{CREDENTIALS}")
            ),
            (
                "postgres".to_string(),
                format!("postgres.acid-x.{CREDENTIALS}")
            ),
        ])
    );
    let err = unique_secret_names(&c, ["foo_bar", "foo-bar", "foo_bar"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            r#"role "foo-bar": role "foo-bar" would share the credentials Secret db/foo-bar.acid-x.{CREDENTIALS} with role "foo_bar""#
        )
    );
}
