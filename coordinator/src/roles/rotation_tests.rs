use super::*;
use crate::roles::model::Flag;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn policy() -> Policy {
    Policy {
        global: false,
        interval_days: 90,
        retention_days: 180,
        new_user: BTreeSet::new(),
        in_place: BTreeSet::new(),
        ignoring: BTreeSet::new(),
        superuser: "postgres".into(),
        replication: "standby".into(),
    }
}

fn role(name: &str, origin: Origin, db_owner: bool) -> Role {
    Role {
        name: name.into(),
        origin,
        flags: BTreeSet::from([Flag::Login]),
        password: Password::Secret {
            namespace: "default".into(),
            name: format!("{name}.secret"),
        },
        member_of: BTreeSet::new(),
        admin: None,
        parameters: BTreeMap::from([("search_path".into(), "data".into())]),
        db_owner,
    }
}

fn secret(username: &str, next: Option<&str>) -> SecretState {
    SecretState {
        username: username.into(),
        password: "old".into(),
        next_rotation: next.map(String::from),
    }
}

#[test]
fn global_rotation_covers_manifest_and_prepared_users_that_own_nothing() {
    let p = Policy {
        global: true,
        ..policy()
    };
    let mode = |r: Role| p.mode(&r).unwrap();
    assert_eq!(
        mode(role("app", Origin::Manifest, false)),
        Some(Mode::NewUser)
    );
    assert_eq!(
        mode(role("db_reader_user", Origin::Bootstrap, false)),
        Some(Mode::NewUser)
    );
    assert_eq!(mode(role("owner", Origin::Manifest, true)), None);
    assert_eq!(mode(role("infra", Origin::Infrastructure, false)), None);
    assert_eq!(mode(role("postgres", Origin::System, false)), None);
    assert_eq!(mode(role("standby", Origin::System, false)), None);
}

#[test]
fn manifest_lists_choose_the_mode_and_ignoring_wins() {
    let p = Policy {
        global: true,
        new_user: BTreeSet::from(["owner".to_string()]),
        in_place: BTreeSet::from(["app".to_string(), "both".to_string()]),
        ignoring: BTreeSet::from(["quiet".to_string(), "both".to_string()]),
        ..policy()
    };
    let mode = |r: Role| p.mode(&r).unwrap();
    assert_eq!(
        mode(role("owner", Origin::Manifest, true)),
        Some(Mode::NewUser)
    );
    assert_eq!(
        mode(role("app", Origin::Manifest, false)),
        Some(Mode::InPlace)
    );
    assert_eq!(mode(role("quiet", Origin::Manifest, false)), None);
    assert_eq!(mode(role("both", Origin::Manifest, false)), None);
}

#[test]
fn system_users_and_names_without_room_for_a_date_are_refused() {
    let p = Policy {
        in_place: BTreeSet::from(["standby".to_string()]),
        new_user: BTreeSet::from(["postgres".to_string(), "a".repeat(58)]),
        ..policy()
    };
    assert_eq!(
        p.mode(&role("standby", Origin::System, false)),
        Err(Refusal::System("standby".into()))
    );
    assert_eq!(
        p.mode(&role("postgres", Origin::System, false)),
        Err(Refusal::System("postgres".into()))
    );
    assert_eq!(
        p.mode(&role(&"a".repeat(58), Origin::Manifest, false)),
        Err(Refusal::TooLong("a".repeat(58)))
    );
    let fits = "a".repeat(57);
    let p = Policy {
        new_user: BTreeSet::from([fits.clone()]),
        ..policy()
    };
    assert_eq!(
        p.mode(&role(&fits, Origin::Manifest, false)),
        Ok(Some(Mode::NewUser))
    );
}

#[test]
fn retention_is_at_least_two_intervals() {
    let (cfg, _) = OperatorConfig::from_configmap(&BTreeMap::from([
        ("enable_password_rotation".into(), "true".into()),
        ("password_rotation_interval".into(), "30".into()),
        ("password_rotation_user_retention".into(), "10".into()),
    ]))
    .unwrap();
    let spec: PostgresSpec = serde_json::from_value(serde_json::json!({
        "teamId": "acid", "volume": {"size": "1Gi"}, "numberOfInstances": 1,
        "postgresql": {"version": "17"}, "usersWithInPlaceSecretRotation": ["app"]
    }))
    .unwrap();
    let p = Policy::new(&cfg, &spec);
    assert!(p.global);
    assert_eq!((p.interval_days, p.retention_days), (30, 60));
    assert_eq!(p.in_place, BTreeSet::from(["app".to_string()]));
}

#[test]
fn first_sight_sets_the_next_date_without_rotating() {
    let now = at("2026-12-05T03:12:14.5Z");
    let u = decide("app", Some(Mode::NewUser), &secret("app", None), now, 90).unwrap();
    assert_eq!(
        u,
        Some(Update {
            username: "app".into(),
            new_password: false,
            next_rotation: Some("2027-03-05T03:12:14Z".into()),
        })
    );
    // An unreadable date is treated as missing.
    let u = decide(
        "app",
        Some(Mode::NewUser),
        &secret("app", Some("soon")),
        now,
        90,
    )
    .unwrap();
    assert_eq!(
        u.unwrap().next_rotation.as_deref(),
        Some("2027-03-05T03:12:14Z")
    );
}

#[test]
fn nothing_changes_before_the_date() {
    let s = secret("app", Some("2027-03-05T03:12:14Z"));
    let now = at("2027-03-05T03:12:13Z");
    assert_eq!(decide("app", Some(Mode::NewUser), &s, now, 90), Ok(None));
    assert_eq!(decide("app", Some(Mode::InPlace), &s, now, 90), Ok(None));
}

#[test]
fn after_the_date_a_new_user_or_a_new_password() {
    let s = secret("app", Some("2027-03-05T03:12:14Z"));
    let now = at("2027-03-05T03:12:15Z");
    let next = Some("2027-06-03T03:12:15Z".to_string());
    assert_eq!(
        decide("app", Some(Mode::NewUser), &s, now, 90),
        Ok(Some(Update {
            username: "app270305".into(),
            new_password: true,
            next_rotation: next.clone(),
        }))
    );
    assert_eq!(
        decide("app", Some(Mode::InPlace), &s, now, 90),
        Ok(Some(Update {
            username: "app".into(),
            new_password: true,
            next_rotation: next,
        }))
    );
    // The next rotation replaces the rotation user with a newer one.
    let s = secret("app270305", Some("2027-06-03T03:12:15Z"));
    let u = decide(
        "app",
        Some(Mode::NewUser),
        &s,
        at("2027-06-04T00:00:00Z"),
        90,
    )
    .unwrap();
    assert_eq!(u.unwrap().username, "app270604");
}

#[test]
fn a_shorter_interval_brings_the_date_forward() {
    let s = secret("app", Some("2027-03-05T03:12:14Z"));
    let now = at("2026-12-05T00:00:00Z");
    let u = decide("app", Some(Mode::NewUser), &s, now, 7)
        .unwrap()
        .unwrap();
    assert_eq!(u.next_rotation.as_deref(), Some("2026-12-12T00:00:00Z"));
    assert!(!u.new_password);
    let applied = secret(&u.username, u.next_rotation.as_deref());
    assert_eq!(
        decide("app", Some(Mode::NewUser), &applied, now, 7),
        Ok(None)
    );
}

#[test]
fn switching_to_in_place_rotates_at_once_back_to_the_own_name() {
    let s = secret("app270305", Some("2027-06-03T03:12:15Z"));
    let now = at("2027-03-06T00:00:00Z");
    let u = decide("app", Some(Mode::InPlace), &s, now, 90)
        .unwrap()
        .unwrap();
    assert_eq!(u.username, "app");
    assert!(u.new_password);
}

#[test]
fn rotation_switched_off_returns_to_the_own_name() {
    let now = at("2027-03-06T00:00:00Z");
    let s = secret("app270305", Some("2027-06-03T03:12:15Z"));
    assert_eq!(
        decide("app", None, &s, now, 90),
        Ok(Some(Update {
            username: "app".into(),
            new_password: true,
            next_rotation: None,
        }))
    );
    assert_eq!(decide("app", None, &secret("app", None), now, 90), Ok(None));
}

#[test]
fn a_secret_naming_someone_else_is_left_alone() {
    let s = secret("mallory", None);
    let now = at("2027-03-06T00:00:00Z");
    assert_eq!(
        decide("app", Some(Mode::NewUser), &s, now, 90),
        Err(Refusal::ForeignUser {
            role: "app".into(),
            secret_user: "mallory".into()
        })
    );
}

#[test]
fn rotation_user_names_round_trip_their_dates() {
    let name = rotation_user("app", at("2031-01-09T23:59:59Z"));
    assert_eq!(name, "app310109");
    assert_eq!(
        rotation_date("app", &name),
        Some(jiff::civil::date(2031, 1, 9))
    );
    assert_eq!(rotation_date("app", "app"), None);
    assert_eq!(rotation_date("app", "app31010"), None);
    assert_eq!(rotation_date("app", "app311399"), None);
    assert_eq!(rotation_date("app", "apple12345"), None);
    assert_eq!(rotation_date("app", "app_reader"), None);
}

#[test]
fn the_secret_names_a_rotation_role_and_the_user_keeps_its_password() {
    let mut d = Desired::default();
    d.roles
        .insert("app".into(), role("app", Origin::Manifest, false));
    d.roles
        .insert("other".into(), role("other", Origin::Manifest, false));
    let users = BTreeMap::from([
        ("app".to_string(), "app270305".to_string()),
        ("other".to_string(), "other".to_string()),
    ]);
    add_rotation_roles(&mut d, &users);
    assert_eq!(d.roles["app"].password, Password::Kept);
    assert_eq!(
        d.roles["other"].password,
        role("other", Origin::Manifest, false).password
    );
    let r = &d.roles["app270305"];
    assert_eq!(r.member_of, BTreeSet::from(["app".to_string()]));
    assert_eq!(r.flags, BTreeSet::from([Flag::Login]));
    assert_eq!(r.password, role("app", Origin::Manifest, false).password);
    assert_eq!(
        r.parameters,
        role("app", Origin::Manifest, false).parameters
    );
    assert!(!r.db_owner);
    assert_eq!(d.roles.len(), 3);
}

#[test]
fn roles_older_than_the_retention_period_expire_except_the_one_in_use() {
    let existing: Vec<String> = [
        "app",
        "app260101", // older than 180 days on 2026-12-05
        "app260608", // exactly 180 days: kept
        "app260607", // 181 days: expired
        "app261201",
        "app_reader",
        "apple",
        "app250101", // in use, however old
        "app240101", // wanted by the manifest under that name
    ]
    .map(String::from)
    .to_vec();
    let mut wanted = Desired::default();
    wanted.roles.insert(
        "app240101".into(),
        role("app240101", Origin::Manifest, false),
    );
    let now = at("2026-12-05T12:00:00Z");
    let gone = expired("app", &existing, "app250101", &wanted, now, 180);
    assert_eq!(gone, vec!["app260101".to_string(), "app260607".to_string()]);
}
