//! Spilo's Patroni configuration template, built as data.
//!
//! Spilo rendered a mustache template and parsed the result as YAML, so values were HTML-escaped (`&` in a
//! password became `&amp;`) and re-typed (a user named `on` became `true`, a quote broke the file). Here every
//! value is placed as what it is; only ports and thresholds are numbers, as in Spilo's output.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::bootstrap::{CloneFromStorage, CloneSource, Standby};
use super::certs::TlsFiles;
use super::env::{Env, Legacy};
use super::walenv::Storage;
use super::Error;

pub const SHARED_PRELOAD_LIBRARIES: &str =
    "bg_mon,pg_stat_statements,pgextwlist,pg_auth_mon,set_user";
pub const EXTWLIST_EXTENSIONS: &str = "btree_gin,btree_gist,citext,extra_window_functions,first_last_agg,hll,\
hstore,hypopg,intarray,ltree,pgcrypto,pgq,pgq_node,pg_trgm,postgres_fdw,roaringbitmap,tablefunc,uuid-ossp,vector";

/// Figures computed elsewhere that the template needs.
pub struct Template<'a> {
    pub scope: &'a str,
    pub human_role: &'a str,
    pub member: &'a str,
    pub pg_port: u16,
    pub api_port: u16,
    pub pg_connect_address: &'a str,
    pub restapi_connect_address: &'a str,
    pub data_dir: &'a Path,
    /// Patroni's pgpass, in the socket directory (`$RW_DIR/postgresql`, Spilo's `/run/postgresql`).
    pub pgpass: &'a Path,
    pub shared_buffers: String,
    pub max_connections: u64,
    pub bg_mon_listen: &'a str,
    pub tls: &'a TlsFiles,
    pub main: Option<&'a Storage>,
    pub clone: &'a CloneSource,
    /// SPILO_CONFIGURATION adds its own `bootstrap.clone_with_wale.recovery_conf`: Patroni replays the WAL.
    pub user_recovery_conf: bool,
    pub standby: &'a Standby,
    /// Patroni `on_start`/`on_stop` callback, also run by `on_role_change`.
    pub callback: Option<&'a str>,
    pub log_ship_hourly: bool,
}

pub fn restore_command(env_dir: &Path, timeout: &str) -> String {
    format!(
        "pgherd-agent restore-command --envdir \"{}\" --timeout {timeout} \"%f\" \"%p\"",
        env_dir.display()
    )
}

/// Flag of `clone-with-wale` telling it that Patroni replays the WAL (see [`clone_with_wale`]).
pub const RECOVERY_BY_PATRONI: &str = "--recovery-by-patroni";

/// The clone command replays WAL to the target itself (and upgrades an older major afterwards), so the
/// target goes on its command line instead of into Patroni's `recovery_conf`. Patroni keeps the replay, as
/// in Spilo, when it must pause at the target (someone looks at the paused server before it is promoted)
/// or when SPILO_CONFIGURATION brings recovery settings of its own (merged over the complete ones here).
fn clone_with_wale(c: &CloneFromStorage, timeout: &str, user_recovery_conf: bool) -> Value {
    let restore = restore_command(&c.storage.env_dir, timeout);
    let mut command = format!(
        "pgherd-agent clone-with-wale --envdir \"{}\" --recovery-target-time=\"{}\"",
        c.storage.env_dir.display(),
        c.target_time
    );
    if let Some(lsn) = &c.target_lsn {
        command.push_str(&format!(" --recovery-target-lsn=\"{lsn}\""));
    }
    if let Some(xid) = c.target_xid {
        command.push_str(&format!(" --recovery-target-xid={xid}"));
    }
    if !c.pause_at_target && !user_recovery_conf {
        if c.target_timeline != "latest" {
            command.push_str(&format!(
                " --recovery-target-timeline=\"{}\"",
                c.target_timeline
            ));
        }
        if !c.target_inclusive {
            command.push_str(" --recovery-target-inclusive=false");
        }
        command.push_str(&format!(" --restore-command='{restore}'"));
        return json!({ "command": command });
    }
    let mut recovery = Map::new();
    recovery.insert("restore_command".into(), json!(restore));
    recovery.insert("recovery_target_timeline".into(), json!(c.target_timeline));
    recovery.insert(
        "recovery_target_action".into(),
        json!(if c.pause_at_target {
            "pause"
        } else {
            "promote"
        }),
    );
    if !c.target_time.is_empty() {
        recovery.insert("recovery_target_time".into(), json!(c.target_time));
    }
    if let Some(lsn) = &c.target_lsn {
        recovery.insert("recovery_target_lsn".into(), json!(lsn));
    }
    if let Some(xid) = c.target_xid {
        recovery.insert("recovery_target_xid".into(), json!(xid.to_string()));
    }
    if !c.target_inclusive {
        recovery.insert("recovery_target_inclusive".into(), json!(false));
    }
    command.push(' ');
    command.push_str(RECOVERY_BY_PATRONI);
    json!({"command": command, "recovery_conf": recovery})
}

fn wale_restore(env: &Env, env_dir: &Path) -> Result<Value, Error> {
    Ok(json!({
        "command": format!("pgherd-agent wale-restore --envdir \"{}\"", env_dir.display()),
        "threshold_megabytes": env.uint("WALE_BACKUP_THRESHOLD_MEGABYTES", 102_400)?,
        "threshold_backup_size_percentage": env.uint("WALE_BACKUP_THRESHOLD_PERCENTAGE", 30)?,
        "retries": 2,
        "no_leader": 1,
    }))
}

/// `WAL_RESTORE_TIMEOUT` as `timeout(1)` accepts it: a number with an optional s/m/h/d suffix; 0 disables.
fn restore_timeout(env: &Env) -> Result<String, Error> {
    let value = env.str_or("WAL_RESTORE_TIMEOUT", "0");
    let number = value.strip_suffix(['s', 'm', 'h', 'd']).unwrap_or(&value);
    let valid = number.split_once('.').map_or_else(
        || !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
        |(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit())
        },
    );
    if valid {
        Ok(value)
    } else {
        Err(Error::invalid(
            "WAL_RESTORE_TIMEOUT",
            format!("{value:?} is not a duration (e.g. 0, 30, 30s, 5m)"),
        ))
    }
}

pub fn template(env: &Env, t: &Template) -> Result<Map<String, Value>, Error> {
    let timeout = restore_timeout(env)?;
    let superuser = (
        env.str_or("PGUSER_SUPERUSER", "postgres"),
        env.str_or("PGPASSWORD_SUPERUSER", "zalando"),
    );
    let replication = (
        env.str_or("PGUSER_STANDBY", "standby"),
        env.str_or("PGPASSWORD_STANDBY", "standby"),
    );

    let mut bootstrap = Map::new();
    bootstrap.insert(
        "post_init".into(),
        json!(format!("pgherd-agent post-init \"{}\"", t.human_role)),
    );
    bootstrap.insert("dcs".into(), dcs(t, &timeout));
    match t.clone {
        CloneSource::None => {}
        CloneSource::FromStorage(c) => {
            bootstrap.insert("method".into(), json!("clone_with_wale"));
            bootstrap.insert(
                "clone_with_wale".into(),
                clone_with_wale(c, &timeout, t.user_recovery_conf),
            );
        }
        CloneSource::Basebackup(c) => {
            bootstrap.insert("method".into(), json!("clone_with_basebackup"));
            bootstrap.insert(
                "clone_with_basebackup".into(),
                json!({"command": format!(
                    "pgherd-agent clone-with-basebackup --pgpass={} --host={} --port={} --user=\"{}\"",
                    c.pgpass.display(), c.host, c.port, c.user
                )}),
            );
        }
    }
    let locale = env.str_or("INITDB_LOCALE", "en_US");
    bootstrap.insert(
        "initdb".into(),
        json!([{"encoding": "UTF8"}, {"locale": format!("{locale}.UTF-8")}, "data-checksums"]),
    );
    // Ignored by Patroni 4 (it logs an error), kept for Patroni 3 and for parity.
    if env.bool(
        "USE_ADMIN",
        env.raw("PGPASSWORD_ADMIN").is_some(),
        Legacy::NonEmpty,
    )? {
        let admin = env.str_or("PGUSER_ADMIN", "admin");
        let password = env.str_or("PGPASSWORD_ADMIN", "cola");
        bootstrap.insert(
            "users".into(),
            json!({admin: {"password": password, "options": ["createrole", "createdb"]}}),
        );
    }

    let mut restapi = Map::new();
    restapi.insert("listen".into(), json!(format!(":{}", t.api_port)));
    restapi.insert("connect_address".into(), json!(t.restapi_connect_address));
    for (key, path) in [
        ("cafile", &t.tls.restapi_ca_file),
        ("certfile", &t.tls.restapi_cert_file),
        ("keyfile", &t.tls.restapi_key_file),
    ] {
        if let Some(path) = path {
            restapi.insert(key.into(), json!(path.display().to_string()));
        }
    }

    let mut postgresql = Map::new();
    postgresql.insert("pgpass".into(), json!(t.pgpass.display().to_string()));
    postgresql.insert("use_unix_socket".into(), json!(true));
    postgresql.insert("use_unix_socket_repl".into(), json!(true));
    postgresql.insert("name".into(), json!(t.member));
    postgresql.insert("listen".into(), json!(format!("*:{}", t.pg_port)));
    postgresql.insert("connect_address".into(), json!(t.pg_connect_address));
    postgresql.insert("data_dir".into(), json!(t.data_dir.display().to_string()));
    postgresql.insert("parameters".into(), Value::Object(local_parameters(t)));
    postgresql.insert(
        "pg_hba".into(),
        json!(pg_hba(env, t.human_role, &replication.0)?),
    );
    if let Some(main) = t.main {
        postgresql.insert(
            "recovery_conf".into(),
            json!({"restore_command": restore_command(&main.env_dir, &timeout)}),
        );
    }
    postgresql.insert(
        "authentication".into(),
        json!({
            "superuser": {"username": superuser.0, "password": superuser.1},
            "replication": {"username": replication.0, "password": replication.1},
        }),
    );
    postgresql.insert("callbacks".into(), callbacks(t));
    let mut methods = Vec::new();
    if let Some(main) = t.main {
        methods.push("wal_e");
        postgresql.insert("wal_e".into(), wale_restore(env, &main.env_dir)?);
    }
    methods.push("basebackup_fast_xlog");
    postgresql.insert("create_replica_method".into(), json!(methods));
    postgresql.insert(
        "basebackup_fast_xlog".into(),
        json!({"command": "pgherd-agent basebackup", "retries": 2}),
    );
    if let Some(standby) = &t.standby.storage {
        postgresql.insert(
            "bootstrap_standby_with_wale".into(),
            wale_restore(env, &standby.env_dir)?,
        );
    }

    let mut config = Map::new();
    config.insert("bootstrap".into(), Value::Object(bootstrap));
    config.insert("scope".into(), json!(t.scope));
    config.insert("restapi".into(), Value::Object(restapi));
    config.insert("postgresql".into(), Value::Object(postgresql));
    Ok(config)
}

fn dcs(t: &Template, timeout: &str) -> Value {
    let mut dcs = Map::new();
    if t.standby.is_standby() {
        let mut standby = Map::new();
        let mut methods = Vec::new();
        if let Some(storage) = &t.standby.storage {
            methods.push("bootstrap_standby_with_wale");
            standby.insert(
                "restore_command".into(),
                json!(restore_command(&storage.env_dir, timeout)),
            );
        }
        methods.push("basebackup_fast_xlog");
        standby.insert("create_replica_methods".into(), json!(methods));
        if let Some(host) = &t.standby.host {
            standby.insert("host".into(), json!(host));
        }
        if let Some(port) = t.standby.port {
            standby.insert("port".into(), json!(port));
        }
        if let Some(slot) = &t.standby.primary_slot_name {
            standby.insert("primary_slot_name".into(), json!(slot));
        }
        dcs.insert("standby_cluster".into(), Value::Object(standby));
    }
    for (key, value) in [
        ("ttl", 30),
        ("loop_wait", 10),
        ("retry_timeout", 10),
        ("maximum_lag_on_failover", 33_554_432),
    ] {
        dcs.insert(key.into(), json!(value));
    }
    dcs.insert(
        "postgresql".into(),
        json!({
            "use_pg_rewind": true,
            "use_slots": true,
            "parameters": {
                "archive_mode": "on",
                "archive_timeout": "1800s",
                "wal_level": "hot_standby",
                "wal_log_hints": "on",
                "wal_compression": "on",
                "max_wal_senders": 10,
                "max_connections": t.max_connections,
                "max_replication_slots": 10,
                "hot_standby": "on",
                "tcp_keepalives_idle": 900,
                "tcp_keepalives_interval": 100,
                "log_line_prefix": "%t [%p]: [%l-1] %c %x %d %u %a %h ",
                "log_checkpoints": "on",
                "log_lock_waits": "on",
                "log_min_duration_statement": 500,
                "log_autovacuum_min_duration": 0,
                "log_connections": "on",
                "log_disconnections": "on",
                "log_statement": "ddl",
                "log_temp_files": 0,
                "track_functions": "all",
                "checkpoint_completion_target": 0.9,
                "autovacuum_max_workers": 5,
                "autovacuum_vacuum_scale_factor": 0.05,
                "autovacuum_analyze_scale_factor": 0.02,
            }
        }),
    );
    Value::Object(dcs)
}

fn local_parameters(t: &Template) -> Map<String, Value> {
    let archive_command = match t.main {
        Some(main) => main.archive_command(),
        None => "/bin/true".into(),
    };
    let (log_filename, rotation) = if t.log_ship_hourly {
        ("postgresql-%u-%H.log", "1h")
    } else {
        ("postgresql-%u.log", "1d")
    };
    let mut p = Map::new();
    let mut set = |k: &str, v: Value| {
        p.insert(k.to_string(), v);
    };
    set("archive_command", json!(archive_command));
    if let Some(mode) = t.main.and_then(Storage::archive_mode) {
        // Local settings win over the DCS's, so this also reaches clusters bootstrapped with Spilo's `on`.
        set("archive_mode", json!(mode));
    }
    set("shared_buffers", json!(t.shared_buffers));
    set("logging_collector", json!("on"));
    set("log_destination", json!("csvlog"));
    set("log_directory", json!("../pg_log"));
    set("log_filename", json!(log_filename));
    set("log_file_mode", json!("0644"));
    set("log_rotation_age", json!(rotation));
    set("log_truncate_on_rotation", json!("on"));
    set("ssl", json!("on"));
    if let Some(ca) = &t.tls.ca_file {
        set("ssl_ca_file", json!(ca.display().to_string()));
    }
    if let Some(crl) = &t.tls.crl_file {
        set("ssl_crl_file", json!(crl.display().to_string()));
    }
    set(
        "ssl_cert_file",
        json!(t.tls.cert_file.display().to_string()),
    );
    set("ssl_key_file", json!(t.tls.key_file.display().to_string()));
    set("shared_preload_libraries", json!(SHARED_PRELOAD_LIBRARIES));
    set("bg_mon.listen_address", json!(t.bg_mon_listen));
    set("bg_mon.history_buckets", json!(120));
    set("pg_stat_statements.track_utility", json!("off"));
    set("extwlist.extensions", json!(EXTWLIST_EXTENSIONS));
    set("extwlist.custom_path", json!("/scripts"));
    p
}

/// Spilo's pg_hba, column spacing included (the lines are compared as strings by people diffing configs).
fn pg_hba(env: &Env, human_role: &str, replication_user: &str) -> Result<Vec<String>, Error> {
    let pam = env.has("PAM_OAUTH2");
    let allow_nossl = env.bool("ALLOW_NOSSL", false, Legacy::NonEmpty)?;
    let mut hba =
        vec!["local   all             all                                   trust".to_string()];
    let pam_line = |net: &str| format!("hostssl all             +{human_role}    {net:<18} pam");
    if pam {
        hba.push(pam_line("127.0.0.1/32"));
    }
    hba.push("host    all             all                127.0.0.1/32       md5".into());
    if pam {
        hba.push(pam_line("::1/128"));
    }
    hba.push("host    all             all                ::1/128            md5".into());
    hba.push(format!(
        "local   replication     {replication_user}                    trust"
    ));
    hba.push(format!(
        "hostssl replication     {replication_user} all                md5"
    ));
    if !allow_nossl {
        hba.push("hostnossl all           all                all                reject".into());
    }
    if pam {
        hba.push(pam_line("all"));
    }
    hba.push(if allow_nossl {
        "host    all             all                all                md5".into()
    } else {
        "hostssl all             all                all                md5".into()
    });
    Ok(hba)
}

fn callbacks(t: &Template) -> Value {
    let wrapped = t.callback.unwrap_or("true");
    let mut callbacks = Map::new();
    if let Some(callback) = t.callback {
        callbacks.insert("on_start".into(), json!(callback));
        callbacks.insert("on_stop".into(), json!(callback));
    }
    callbacks.insert(
        "on_role_change".into(),
        json!(format!(
            "pgherd-agent on-role-change {} {wrapped}",
            t.human_role
        )),
    );
    Value::Object(callbacks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pg_hba_with_pam_and_nossl() {
        let v = env_of(&[("PAM_OAUTH2", "https://x y"), ("ALLOW_NOSSL", "true")]);
        let hba = pg_hba(&Env::new(&v), "humans", "standby").unwrap();
        assert_eq!(
            hba[1],
            "hostssl all             +humans    127.0.0.1/32       pam"
        );
        assert_eq!(
            hba[3],
            "hostssl all             +humans    ::1/128            pam"
        );
        assert_eq!(
            hba[7],
            "hostssl all             +humans    all                pam"
        );
        assert_eq!(
            hba.last().unwrap(),
            "host    all             all                all                md5"
        );
        assert!(!hba.iter().any(|l| l.contains("reject")));
    }

    #[test]
    fn restore_timeout_is_validated() {
        for ok in ["0", "30", "30s", "1.5m", "2h"] {
            let v = env_of(&[("WAL_RESTORE_TIMEOUT", ok)]);
            assert_eq!(restore_timeout(&Env::new(&v)).unwrap(), ok);
        }
        let v = env_of(&[("WAL_RESTORE_TIMEOUT", "soon")]);
        assert_eq!(
            restore_timeout(&Env::new(&v)).unwrap_err().to_string(),
            "WAL_RESTORE_TIMEOUT: \"soon\" is not a duration (e.g. 0, 30, 30s, 5m)"
        );
    }
}
