use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgherd_shared::crd::operator_configuration::{
    InfrastructureRolesSecret, KubernetesConfiguration,
};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::*;
use crate::roles::model::Flag;

fn name(ns: &str, n: &str) -> ObjectName {
    ObjectName {
        namespace: ns.into(),
        name: n.into(),
    }
}

fn secret(pairs: &[(&str, &str)]) -> Fetched {
    let data: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(STANDARD.encode(v))))
        .collect();
    Fetched::Found(json!({ "data": data }))
}

fn config_map(pairs: &[(&str, &str)]) -> Fetched {
    let data: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Fetched::Found(json!({ "data": data }))
}

fn objects(list: Vec<(ObjectName, Fetched, Fetched)>) -> BTreeMap<ObjectName, Objects> {
    list.into_iter()
        .map(|(n, secret, config_map)| (n, Objects { secret, config_map }))
        .collect()
}

fn entry(yaml: &str) -> InfrastructureRolesSecret {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn defs(entries: Vec<InfrastructureRolesSecret>, legacy: Option<&str>) -> Vec<Definition> {
    let k = KubernetesConfiguration {
        infrastructure_roles_secrets: Some(entries),
        infrastructure_roles_secret_name: legacy.map(String::from),
        ..Default::default()
    };
    let (d, problems) = definitions(Some(&k), "ops");
    assert_eq!(problems, []);
    d
}

fn login_role(
    name: &str,
    password: &str,
    flags: &[Flag],
    member_of: &[&str],
    parameters: &[(&str, &str)],
) -> Role {
    Role {
        name: name.into(),
        origin: Origin::Infrastructure,
        flags: flags.iter().copied().chain([Flag::Login]).collect(),
        password: Password::Given(password.into()),
        member_of: member_of.iter().map(|m| m.to_string()).collect(),
        admin: None,
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        db_owner: false,
    }
}

/// Every problem's text, checked never to carry a password of the fixtures.
fn messages(problems: &[Problem]) -> Vec<String> {
    let out: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for m in &out {
        for pw in ["s3cret", "justice", "pw1", "pw2", "r0bin", "unre4ched"] {
            assert!(!m.contains(pw), "{m}");
        }
    }
    out
}

#[test]
fn definitions_apply_upstreams_key_defaults_and_namespaces() {
    let k = KubernetesConfiguration {
        infrastructure_roles_secrets: Some(vec![
            entry("secretname: monitoring-roles"),
            entry("{secretname: other/roles, userkey: login, passwordkey: '', template: true, details: ''}"),
            entry("userkey: user"),
            entry("secretname: 'ns/'"),
        ]),
        infrastructure_roles_secret_name: Some("legacy-roles".into()),
        ..Default::default()
    };
    let (d, problems) = definitions(Some(&k), "ops");
    let plain = |field: &str, secret: ObjectName, user: &str, template: bool| Definition {
        field: field.into(),
        secret,
        user_key: user.into(),
        password_key: "password".into(),
        role_key: "inrole".into(),
        default_user: String::new(),
        default_role: String::new(),
        details: None,
        template,
    };
    assert_eq!(
        d,
        [
            plain(
                "infrastructure_roles_secrets[0]",
                name("ops", "monitoring-roles"),
                "user",
                false
            ),
            plain(
                "infrastructure_roles_secrets[1]",
                name("other", "roles"),
                "login",
                true
            ),
            plain(
                "infrastructure_roles_secret_name",
                name("ops", "legacy-roles"),
                "user",
                true
            ),
        ]
    );
    assert_eq!(
        messages(&problems),
        [
            r#"infrastructure roles: infrastructure_roles_secrets[2]: secretname "" is neither a name nor namespace/name"#,
            r#"infrastructure roles: infrastructure_roles_secrets[3]: secretname "ns/" is neither a name nor namespace/name"#,
        ]
    );
    assert_eq!(definitions(None, "ops"), (vec![], vec![]));
}

#[test]
fn a_secret_with_the_default_keys_is_one_login_role() {
    let d = defs(vec![entry("secretname: monitoring-roles")], None);
    let o = objects(vec![(
        name("ops", "monitoring-roles"),
        secret(&[
            ("user", "robot_zmon"),
            ("password", "s3cret"),
            ("inrole", "zmon"),
        ]),
        Fetched::NotFound,
    )]);
    let out = roles(&d, &o);
    assert_eq!(out.problems, []);
    assert_eq!(
        out.roles,
        [login_role("robot_zmon", "s3cret", &[], &["zmon"], &[])]
    );
}

#[test]
fn custom_keys_and_default_values() {
    let d = defs(
        vec![
            entry("{secretname: a, userkey: u, passwordkey: p, rolekey: r}"),
            // No user key in the Secret: defaultuservalue; no role key: defaultrolevalue.
            entry("{secretname: b, userkey: u, passwordkey: p, defaultuservalue: reader, defaultrolevalue: readers}"),
        ],
        None,
    );
    let o = objects(vec![
        (
            name("ops", "a"),
            secret(&[
                ("u", "writer"),
                ("p", "pw1"),
                ("r", "writers"),
                ("user", "ignored"),
            ]),
            Fetched::NotFound,
        ),
        (name("ops", "b"), secret(&[("p", "pw2")]), Fetched::NotFound),
    ]);
    let out = roles(&d, &o);
    assert_eq!(out.problems, []);
    assert_eq!(
        out.roles,
        [
            login_role("reader", "pw2", &[], &["readers"], &[]),
            login_role("writer", "pw1", &[], &["writers"], &[]),
        ]
    );
}

#[test]
fn details_add_flags_memberships_and_settings() {
    let d = defs(vec![entry("{secretname: mon, details: role.yaml}")], None);
    let yaml = "inrole: [pg_monitor, zmon]\nuser_flags: [createdb, NOINHERIT]\n\
                db_parameters: {log_statement: all, work_mem: 64, jit: false}\nadmin_role: admin\n\
                deleted: false\n";
    let o = objects(vec![(
        name("ops", "mon"),
        secret(&[
            ("user", "robot"),
            ("password", "s3cret"),
            ("inrole", "robots"),
            ("role.yaml", yaml),
        ]),
        Fetched::NotFound,
    )]);
    let out = roles(&d, &o);
    assert_eq!(out.problems, []);
    let mut want = login_role(
        "robot",
        "s3cret",
        &[Flag::CreateDb, Flag::NoInherit],
        &["pg_monitor", "robots", "zmon"],
        &[
            ("jit", "false"),
            ("log_statement", "all"),
            ("work_mem", "64"),
        ],
    );
    want.admin = Some("admin".into());
    assert_eq!(out.roles, [want]);

    // The details key absent: the plain keys alone, as upstream.
    let o = objects(vec![(
        name("ops", "mon"),
        secret(&[("user", "robot"), ("password", "s3cret")]),
        Fetched::NotFound,
    )]);
    assert_eq!(
        roles(&d, &o).roles,
        [login_role("robot", "s3cret", &[], &[], &[])]
    );
}

#[test]
fn legacy_template_with_a_configmap_describing_and_overriding_roles() {
    let d = defs(vec![], Some("postgresql-infrastructure-roles"));
    let o = objects(vec![(
        name("ops", "postgresql-infrastructure-roles"),
        // Upstream's manifests/infrastructure-roles.yaml, plus a third entry after a gap that is not read.
        secret(&[
            ("user1", "robot_zmon_acid_monitoring"),
            ("password1", "pw1"),
            ("inrole1", "robot_zmon"),
            ("user2", "testuser"),
            ("password2", "pw2"),
            ("user4", "unreached"),
            ("password4", "unre4ched"),
            ("batman", "justice"),
        ]),
        // Upstream's manifests/infrastructure-roles-configmap.yaml, and a description of `testuser`,
        // which has no key of its name: it keeps the password from `password2`.
        config_map(&[
            (
                "batman",
                "inrole: [admin]  # following roles will be assigned to the new user\n\
                 user_flags:\n  - createdb\ndb_parameters:\n  log_statement: all\n",
            ),
            ("testuser", "user_flags: [nologin]"),
        ]),
    )]);
    let out = roles(&d, &o);
    assert_eq!(out.problems, []);
    let mut testuser = login_role("testuser", "pw2", &[], &[], &[]);
    testuser.flags = BTreeSet::from([Flag::NoLogin]);
    assert_eq!(
        out.roles,
        [
            login_role(
                "batman",
                "justice",
                &[Flag::CreateDb],
                &["admin"],
                &[("log_statement", "all")]
            ),
            login_role(
                "robot_zmon_acid_monitoring",
                "pw1",
                &[],
                &["robot_zmon"],
                &[]
            ),
            testuser,
        ]
    );
}

#[test]
fn a_template_entry_uses_its_key_names_as_prefixes() {
    let d = defs(
        vec![entry(
            "{secretname: t, userkey: login, passwordkey: secret, rolekey: group, defaultrolevalue: staff, template: true}",
        )],
        None,
    );
    let o = objects(vec![(
        name("ops", "t"),
        secret(&[
            ("login1", "a"),
            ("secret1", "pw1"),
            ("group1", "ops"),
            ("login2", "b"),
            ("secret2", "pw2"),
        ]),
        Fetched::NotFound,
    )]);
    let out = roles(&d, &o);
    assert_eq!(out.problems, []);
    assert_eq!(
        out.roles,
        [
            login_role("a", "pw1", &[], &["ops"], &[]),
            login_role("b", "pw2", &[], &["staff"], &[]),
        ]
    );
}

#[test]
fn bad_yaml_and_bad_flags_name_the_object_and_key_and_drop_only_that_role() {
    let d = defs(
        vec![
            entry("{secretname: mon, details: role.yaml}"),
            entry("{secretname: legacy, template: true}"),
        ],
        None,
    );
    let o = objects(vec![
        (
            name("ops", "mon"),
            secret(&[
                ("user", "robot"),
                ("password", "s3cret"),
                ("role.yaml", "inrole: admin"),
            ]),
            Fetched::NotFound,
        ),
        (
            name("ops", "legacy"),
            secret(&[
                ("user1", "ok"),
                ("password1", "pw1"),
                ("batman", "justice"),
                ("robin", "r0bin"),
            ]),
            config_map(&[
                ("batman", "user_flags: [createdb, nocreatedb, flying]"),
                ("robin", "inrole: [admin"),
            ]),
        ),
    ]);
    let out = roles(&d, &o);
    let m = messages(&out.problems);
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(
        m[0].starts_with(
            r#"infrastructure roles: Secret ops/mon key "role.yaml": not a role description: "#
        ),
        "{m:?}"
    );
    assert_eq!(
        m[1],
        r#"infrastructure roles: ConfigMap ops/legacy key "batman": user_flags: unknown flag "flying"; user_flags: conflicting flags CREATEDB and NOCREATEDB"#
    );
    assert!(
        m[2].starts_with(
            r#"infrastructure roles: ConfigMap ops/legacy key "robin": not a role description: "#
        ),
        "{m:?}"
    );
    assert_eq!(out.roles, [login_role("ok", "pw1", &[], &[], &[])]);
}

#[test]
fn missing_passwords_names_and_objects_are_warnings() {
    let d = defs(
        vec![
            entry("secretname: nopw"),
            entry("secretname: noname"),
            entry("{secretname: tpl, template: true}"),
            entry("secretname: gone"),
            entry("secretname: broken"),
            entry("secretname: other/long"),
        ],
        None,
    );
    let long = "x".repeat(64);
    let o = objects(vec![
        (
            name("ops", "nopw"),
            secret(&[("user", "robot"), ("password", "")]),
            Fetched::NotFound,
        ),
        (
            name("ops", "noname"),
            secret(&[("password", "s3cret")]),
            Fetched::NotFound,
        ),
        (
            name("ops", "tpl"),
            secret(&[("user1", "a"), ("user2", "b"), ("password2", "pw2")]),
            // Described, but no password anywhere.
            config_map(&[("batman", "")]),
        ),
        (
            name("ops", "broken"),
            Fetched::Failed("forbidden".into()),
            Fetched::NotFound,
        ),
        (
            name("other", "long"),
            secret(&[("user", &long), ("password", "s3cret")]),
            Fetched::Failed("timeout".into()),
        ),
    ]);
    let out = roles(&d, &o);
    assert_eq!(
        messages(&out.problems),
        [
            r#"infrastructure roles: role "robot": no password in Secret ops/nopw key "password", the role is skipped"#,
            r#"infrastructure roles: infrastructure_roles_secrets[1]: no role name in Secret ops/noname key "user""#,
            r#"infrastructure roles: role "a": no password in Secret ops/tpl key "password1", the role is skipped"#,
            r#"infrastructure roles: infrastructure_roles_secrets[3]: Secret ops/gone not found, its roles are skipped"#,
            r#"infrastructure roles: infrastructure_roles_secrets[4]: could not read Secret ops/broken: forbidden"#,
            &format!(
                r#"infrastructure roles: role "{long}" from Secret other/long key "user": the name is longer than Postgres' 63 bytes"#
            ),
            r#"infrastructure roles: role "batman": no password in Secret ops/tpl key "batman", the role is skipped"#,
            r#"infrastructure roles: infrastructure_roles_secrets[5]: could not read ConfigMap other/long: timeout"#,
        ]
    );
    assert_eq!(out.roles, [login_role("b", "pw2", &[], &[], &[])]);
}

#[test]
fn values_that_are_not_text_are_named_without_their_content() {
    let d = defs(vec![entry("secretname: mon")], None);
    let o = objects(vec![(
        name("ops", "mon"),
        Fetched::Found(
            json!({"data": {"user": "cm9ib3Q=", "password": STANDARD.encode([0xff, 0xfe])}}),
        ),
        Fetched::NotFound,
    )]);
    let out = roles(&d, &o);
    assert_eq!(
        messages(&out.problems),
        [r#"infrastructure roles: Secret ops/mon key "password": not base64-encoded UTF-8 text"#]
    );
    assert_eq!(out.roles, []);
}

#[test]
fn the_later_of_two_sources_wins_a_name_and_says_so() {
    let d = defs(
        vec![
            entry("secretname: a"),
            entry("secretname: b"),
            entry("secretname: a"),
        ],
        None,
    );
    let o = objects(vec![
        (
            name("ops", "a"),
            secret(&[("user", "robot"), ("password", "pw1")]),
            Fetched::NotFound,
        ),
        (
            name("ops", "b"),
            secret(&[("user", "robot"), ("password", "pw2")]),
            Fetched::NotFound,
        ),
    ]);
    let out = roles(&d, &o);
    // The third entry repeats the first, so the first's role wins again.
    assert_eq!(
        messages(&out.problems),
        [
            r#"infrastructure roles: role "robot" is defined by infrastructure_roles_secrets[0] (Secret ops/a) and by infrastructure_roles_secrets[1] (Secret ops/b); the latter wins"#,
            r#"infrastructure roles: role "robot" is defined by infrastructure_roles_secrets[1] (Secret ops/b) and by infrastructure_roles_secrets[2] (Secret ops/a); the latter wins"#,
        ]
    );
    assert_eq!(out.roles, [login_role("robot", "pw1", &[], &[], &[])]);
}
