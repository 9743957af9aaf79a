use super::*;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let image = [
        ("PGHOME", "/home/postgres"),
        ("RW_DIR", "/run"),
        ("PGROOT", "/home/postgres/pgdata/pgroot"),
        ("PGDATA", "/home/postgres/pgdata/pgroot/data"),
        ("PGLOG", "/home/postgres/pgdata/pgroot/pg_log"),
        ("PGVERSION", "16"),
    ];
    let mut v: BTreeMap<String, String> = image
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn machine() -> Machine {
    Machine {
        memory_mb: 4096,
        cpu_count: 2,
        hostname: "pod-0".into(),
        ip: Ok("10.0.0.5".into()),
        listen_ip: "::".into(),
    }
}

fn config(r: &Rendered) -> Value {
    let f = r
        .files
        .iter()
        .find(|f| f.path == Path::new("/run/postgres.yml"))
        .expect("postgres.yml rendered");
    serde_yaml_ng::from_slice(&f.contents).unwrap()
}

fn file<'a>(r: &'a Rendered, path: &str) -> Option<&'a str> {
    r.files
        .iter()
        .find(|f| f.path == Path::new(path))
        .map(|f| std::str::from_utf8(&f.contents).unwrap())
}

#[test]
fn kubernetes_without_kubernetes_dcs_labels_pods_via_callback() {
    let r = render(
        &vars(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("ETCD_HOST", "etcd:2379"),
        ]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    let c = config(&r);
    let cb = &c["postgresql"]["callbacks"];
    assert_eq!(cb["on_start"], "pgherd-agent callback-role");
    assert_eq!(cb["on_stop"], "pgherd-agent callback-role");
    assert_eq!(
        cb["on_role_change"],
        "pgherd-agent on-role-change zalandos pgherd-agent callback-role"
    );
    assert_eq!(c["postgresql"]["parameters"]["shared_buffers"], "819MB");
}

#[test]
fn user_callback_script_is_wrapped() {
    let r = render(
        &vars(&[("CALLBACK_SCRIPT", "/bin/notify"), ("HUMAN_ROLE", "humans")]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    let cb = &config(&r)["postgresql"]["callbacks"];
    assert_eq!(
        cb["on_role_change"],
        "pgherd-agent on-role-change humans /bin/notify"
    );
    assert_eq!(cb["on_start"], "/bin/notify");
}

#[test]
fn local_provider_without_dcs_starts_etcd() {
    let r = render(&vars(&[]), &machine(), &Probe::default()).unwrap();
    assert!(r.configured.start_local_etcd);
    assert_eq!(config(&r)["etcd"], json!({"host": "127.0.0.1:2379"}));
    let r = render(
        &vars(&[("SPILO_PROVIDER", "aws")]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    assert!(!r.configured.start_local_etcd && config(&r).get("etcd").is_none());
    assert!(
        r.warnings.iter().any(|w| w.contains("callback_aws")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn bgmon_listen_ip_is_honoured() {
    let r = render(
        &vars(&[("BGMON_LISTEN_IP", "127.0.0.1")]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    assert_eq!(
        config(&r)["postgresql"]["parameters"]["bg_mon.listen_address"],
        "127.0.0.1"
    );
}

#[test]
fn values_are_never_escaped_or_retyped() {
    let r = render(
        &vars(&[
            ("PGPASSWORD_SUPERUSER", "a&b<c>\"d'e"),
            ("PGUSER_SUPERUSER", "on"),
            ("SCOPE", "12:30"),
        ]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    let c = config(&r);
    assert_eq!(
        c["postgresql"]["authentication"]["superuser"],
        json!({"username": "on", "password": "a&b<c>\"d'e"})
    );
    assert_eq!(c["scope"], "12:30");
}

#[test]
fn missing_preload_libraries_are_left_out() {
    let mut probe = Probe::default();
    let libs = ["pg_stat_statements", "pgextwlist"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    probe
        .installed
        .insert(version::Major::parse("16").unwrap(), Some(libs));
    let r = render(&vars(&[]), &machine(), &probe).unwrap();
    assert_eq!(
        config(&r)["postgresql"]["parameters"]["shared_preload_libraries"],
        "pg_stat_statements,pgextwlist"
    );
    assert_eq!(
        r.configured.bin_dir,
        Path::new("/usr/lib/postgresql/16/bin")
    );
    let r = render(
        &vars(&[(
            "SPILO_CONFIGURATION",
            "{postgresql: {parameters: {shared_preload_libraries: bg_mon}}}",
        )]),
        &machine(),
        &probe,
    )
    .unwrap();
    assert_eq!(
        config(&r)["postgresql"]["parameters"]["shared_preload_libraries"],
        "bg_mon"
    );
}

#[test]
fn existing_data_directory_pins_bin_dir() {
    let mut probe = Probe {
        data_dir_version: Some("15".into()),
        ..Probe::default()
    };
    probe
        .installed
        .insert(version::Major::parse("15").unwrap(), None);
    probe
        .installed
        .insert(version::Major::parse("16").unwrap(), None);
    let r = render(
        &vars(&[("WAL_S3_BUCKET", "b"), ("SCOPE", "c")]),
        &machine(),
        &probe,
    )
    .unwrap();
    assert_eq!(
        config(&r)["postgresql"]["bin_dir"],
        "/usr/lib/postgresql/15/bin"
    );
    assert_eq!(
        file(&r, "/run/etc/wal-e.d/env/WALE_S3_PREFIX"),
        Some("s3://b/spilo/c/wal/15")
    );
}

#[test]
fn user_pg_hba_gets_a_replication_line() {
    let r = render(
        &vars(&[(
            "SPILO_CONFIGURATION",
            "{bootstrap: {pg_hba: ['host all all all md5']}}",
        )]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    assert_eq!(
        config(&r)["bootstrap"]["pg_hba"],
        json!([
            "hostssl replication standby all md5",
            "host all all all md5"
        ])
    );
}

#[test]
fn demo_writes_no_envdirs_or_jobs() {
    let r = render(
        &vars(&[
            ("DEMO", "true"),
            ("WAL_S3_BUCKET", "b"),
            ("LOG_S3_BUCKET", "l"),
        ]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    assert!(r
        .files
        .iter()
        .all(|f| !f.path.starts_with("/run/etc/wal-e.d") && !f.path.starts_with("/run/etc/log.d")));
    assert_eq!(r.configured.schedule, Schedule::default());
    assert!(r.configured.wal_env_dir.is_none());
}

#[test]
fn schedule_for_storage_logs_ssl_and_crontab() {
    let r = render(
        &vars(&[
            ("WAL_GS_BUCKET", "g"),
            ("LOG_S3_BUCKET", "l"),
            ("LOG_SHIP_SCHEDULE", "5 2 * * *"),
            ("SSL_PRIVATE_KEY_FILE", "/certs/k"),
            ("CRONTAB", "['1 2 * * * echo x']"),
        ]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    let s = &r.configured.schedule;
    let backup = s.backup.as_ref().unwrap();
    assert_eq!(
        (backup.schedule.as_str(), backup.env_dir.as_path()),
        ("0 1 * * *", Path::new("/run/etc/wal-e.d/env"))
    );
    assert_eq!(s.log_upload.as_ref().unwrap().schedule, "5 2 * * *");
    let ssl = s.ssl_reload.as_ref().unwrap();
    assert_eq!(ssl.env["SSL_PRIVATE_KEY_FILE"], "/certs/k");
    assert_eq!(ssl.env["PGDATA"], "/home/postgres/pgdata/pgroot/data");
    assert_eq!(s.extra, ["1 2 * * * echo x"]);
    let written: Schedule =
        serde_json::from_str(file(&r, "/run/etc/pgherd/schedule.json").unwrap()).unwrap();
    assert_eq!(&written, s);
}

#[test]
fn ip_is_only_required_when_used() {
    let m = Machine {
        ip: Err("no IP here".into()),
        ..machine()
    };
    let err = render(&vars(&[]), &m, &Probe::default()).unwrap_err();
    assert_eq!(err.to_string(), "no IP here");
    let ok = render(
        &vars(&[
            ("PG_CONNECT_ADDRESS", "db:5432"),
            ("RESTAPI_CONNECT_ADDRESS", "db:8008"),
        ]),
        &m,
        &Probe::default(),
    )
    .unwrap();
    assert_eq!(config(&ok)["postgresql"]["connect_address"], "db:5432");
}

#[test]
fn ipv6_addresses_are_bracketed() {
    let m = Machine {
        ip: Ok("fd00::5".into()),
        ..machine()
    };
    let r = render(&vars(&[]), &m, &Probe::default()).unwrap();
    assert_eq!(config(&r)["restapi"]["connect_address"], "[fd00::5]:8008");
}

#[test]
fn clone_from_basebackup_writes_pgpass() {
    let r = render(
        &vars(&[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_SCOPE", "src"),
            ("CLONE_HOST", "h"),
            ("CLONE_USER", "u"),
            ("CLONE_PASSWORD", "p"),
        ]),
        &machine(),
        &Probe::default(),
    )
    .unwrap();
    assert_eq!(file(&r, "/home/postgres/.pgpass_src"), Some("h:5432:*:u:p"));
    assert_eq!(config(&r)["bootstrap"]["method"], "clone_with_basebackup");
}

#[test]
fn clone_replays_wal_itself_unless_it_pauses_at_the_target() {
    let clone = [
        ("CLONE_METHOD", "CLONE_WITH_WALE"),
        ("CLONE_WALE_S3_PREFIX", "s3://b/spilo/src/wal/15"),
        ("CLONE_TARGET_LSN", "0/3000060"),
        ("CLONE_TARGET_INCLUSIVE", "false"),
    ];
    let own = config(&render(&vars(&clone), &machine(), &Probe::default()).unwrap());
    let c = &own["bootstrap"]["clone_with_wale"];
    assert!(c.get("recovery_conf").is_none(), "{c}");
    let command = c["command"].as_str().unwrap();
    assert!(
        command.contains(" --recovery-target-lsn=\"0/3000060\""),
        "{command}"
    );
    assert!(
        command.contains(" --recovery-target-inclusive=false"),
        "{command}"
    );
    assert!(
        command.contains(" --restore-command='pgherd-agent restore-command --envdir "),
        "{command}"
    );
    assert!(!command.contains("--recovery-by-patroni"), "{command}");

    let mut paused = clone.to_vec();
    paused.push(("USE_PAUSE_AT_RECOVERY_TARGET", "true"));
    let p = config(&render(&vars(&paused), &machine(), &Probe::default()).unwrap());
    let c = &p["bootstrap"]["clone_with_wale"];
    assert_eq!(c["recovery_conf"]["recovery_target_action"], "pause");
    assert_eq!(c["recovery_conf"]["recovery_target_lsn"], "0/3000060");
    assert!(c["command"]
        .as_str()
        .unwrap()
        .ends_with(" --recovery-by-patroni"));

    let mut user = clone.to_vec();
    user.push((
        "SPILO_CONFIGURATION",
        "{bootstrap: {clone_with_wale: {recovery_conf: {recovery_min_apply_delay: '0'}}}}",
    ));
    let u = config(&render(&vars(&user), &machine(), &Probe::default()).unwrap());
    let c = &u["bootstrap"]["clone_with_wale"];
    assert_eq!(c["recovery_conf"]["recovery_min_apply_delay"], "0");
    // Merged over the complete settings: Patroni gets the restore command and the target too.
    assert_eq!(c["recovery_conf"]["recovery_target_action"], "promote");
    assert_eq!(c["recovery_conf"]["recovery_target_lsn"], "0/3000060");
    assert!(c["recovery_conf"]["restore_command"]
        .as_str()
        .unwrap()
        .starts_with("pgherd-agent restore-command"));
    assert!(c["command"]
        .as_str()
        .unwrap()
        .ends_with(" --recovery-by-patroni"));
}
