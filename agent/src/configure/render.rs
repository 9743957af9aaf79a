//! The functional core: environment + machine figures + probe results → every file to write. Nothing is
//! written here, so all validation happens before the first byte hits the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgherd_shared::patroni::FOLLOWS_DCS_TAG;
use serde_json::{json, Map, Value};

use super::bootstrap::{self, CloneSource};
use super::certs::{self, Subject, TlsFiles};
use super::dcs::{self, DcsInput, PATRONI_DCS};
use super::env::{Env, Legacy};
use super::layout::Layout;
use super::patroni::{self, Template};
use super::probe::{Machine, Probe};
use super::schedule::{self, BackupJob, LogUploadJob, Schedule, SslReloadJob};
use super::walenv::{self, EnvdirInput, Role, Storage};
use super::write::{OutDir, OutFile, SECRET};
use super::{logenv, merge, services, sizing, version, yaml, Configured, Error};

#[derive(Debug, Clone)]
pub struct Rendered {
    pub files: Vec<OutFile>,
    pub dirs: Vec<OutDir>,
    /// Things the operator should know (legacy boolean readings, ignored variables); logged by `apply`.
    pub warnings: Vec<String>,
    pub configured: Configured,
}

/// Temp directories shared by WAL tools and the log upload: world-writable and sticky, like `/tmp`.
const TMPDIR_MODE: u32 = 0o1777;
const ENVDIR_MODE: u32 = 0o700;

fn format_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `SPILO_PROVIDER` if known; `local` when unset (we never ask the metadata service).
fn provider(env: &Env) -> String {
    match env.get("SPILO_PROVIDER") {
        Some(p) if ["aws", "google", "openstack", "local"].contains(&p) => p.to_string(),
        Some(p) => {
            env.warn(format!(
                "SPILO_PROVIDER={p:?} is not one of aws, google, openstack, local"
            ));
            "unsupported".into()
        }
        None => "local".into(),
    }
}

pub fn render(
    vars: &BTreeMap<String, String>,
    machine: &Machine,
    probe: &Probe,
) -> Result<Rendered, Error> {
    let env = Env::new(vars);
    let layout = Layout::from_env(&env)?;
    let kubernetes = env.has("KUBERNETES_SERVICE_HOST");
    let kubernetes_api =
        env.bool("DCS_ENABLE_KUBERNETES_API", false, Legacy::NonEmpty)? && kubernetes;
    let demo = env.bool("DEMO", false, Legacy::EqTrue)?;
    let provider = provider(&env);
    let pod_namespace = env.raw("POD_NAMESPACE").unwrap_or("default");
    let namespace = env.setdefault("NAMESPACE", if kubernetes_api { pod_namespace } else { "" });
    let scope = env.str_or("SCOPE", "dummy");
    let human_role = env.str_or("HUMAN_ROLE", "zalandos");
    let pg_port = env.port("PGPORT", 5432)?;
    let api_port = env.port("APIPORT", 8008)?;
    let ip: Result<&str, &str> = machine.ip.as_deref().map_err(String::as_str);
    let connect_address = |var: &str, port: u16| -> Result<String, Error> {
        match env.get(var) {
            Some(address) => Ok(address.to_string()),
            None => ip
                .map(|ip| format_address(ip, port))
                .map_err(|why| Error::Machine(why.to_string())),
        }
    };
    let pg_connect_address = connect_address("PG_CONNECT_ADDRESS", pg_port)?;
    let restapi_connect_address = connect_address("RESTAPI_CONNECT_ADDRESS", api_port)?;

    let main = walenv::detect(&env, Role::Main, &layout)?;
    let clone = bootstrap::clone_plan(&env, &layout)?;
    let standby = bootstrap::standby_plan(&env, &layout, !matches!(clone, CloneSource::None))?;
    let tls = TlsFiles::from_env(&env, &layout)?;
    let callback = if kubernetes && !kubernetes_api {
        // Labels the pod with its role; the Kubernetes DCS does that itself.
        Some("pgherd-agent callback-role".to_string())
    } else {
        if provider == "aws" && !kubernetes {
            env.warn("SPILO_PROVIDER=aws: Spilo's callback_aws.py (EC2 tags, Elastic IP) is not supported and not configured");
        }
        env.get("CALLBACK_SCRIPT").map(str::to_string)
    };
    let log_ship_hourly = logenv::log_ship_hourly(&env)?;
    let (_, user) = merge::user_config(&env)?;

    let mut config = patroni::template(
        &env,
        &Template {
            scope: &scope,
            human_role: &human_role,
            member: &machine.hostname,
            pg_port,
            api_port,
            pg_connect_address: &pg_connect_address,
            restapi_connect_address: &restapi_connect_address,
            data_dir: &layout.pg_data,
            pgpass: &layout.socket_dir.join("pgpass"),
            shared_buffers: sizing::shared_buffers(machine.memory_mb, kubernetes),
            max_connections: sizing::max_connections(machine.memory_mb),
            // Spilo always overwrote BGMON_LISTEN_IP with its own probe; an explicit value is honoured here.
            bg_mon_listen: env.get("BGMON_LISTEN_IP").unwrap_or(&machine.listen_ip),
            tls: &tls,
            main: main.as_ref(),
            clone: &clone,
            user_recovery_conf: user
                .get("bootstrap")
                .and_then(|b| b.get("clone_with_wale"))
                .is_some_and(|c| c.get("recovery_conf").is_some()),
            standby: &standby,
            callback: callback.as_deref(),
            log_ship_hourly,
        },
    )?;
    config.extend(dcs::dcs_config(
        &env,
        &DcsInput {
            kubernetes_api,
            ip,
            namespace: &namespace,
        },
    )?);
    let Value::Object(mut config) =
        merge::deep_merge(Value::Object(user.clone()), Value::Object(config))
    else {
        unreachable!("merging two mappings yields a mapping")
    };
    let start_local_etcd =
        provider == "local" && !PATRONI_DCS.iter().any(|k| config.contains_key(*k));
    if start_local_etcd {
        config.insert("etcd".into(), json!({"host": "127.0.0.1:2379"}));
    }
    let (bin_dir, pg_version) = postprocess(&env, &mut config, &user, probe)?;
    announce_live_parameters(&mut config);
    let data_dir = layout.data_dir(&user)?;

    let mut files = vec![OutFile::new(
        &layout.patroni_config,
        yaml::to_yaml(&Value::Object(config)).into_bytes(),
        SECRET,
    )];
    let mut dirs = vec![OutDir {
        path: "/run/postgresql".into(),
        mode: 0o2775,
        exclusive: false,
    }];
    let subject = Subject {
        hostname: &machine.hostname,
        ip: ip.ok(),
        key_exists: probe.ssl_key_exists,
    };
    files.extend(certs::certificate_files(&env, &tls, &subject)?);
    files.extend(services::pam_oauth2(&env)?);

    let mut schedule = Schedule::default();
    let backup_schedule = schedule::validate_cron(
        "BACKUP_SCHEDULE",
        &env.str_or("BACKUP_SCHEDULE", "0 1 * * *"),
    )?;
    let log_schedule = schedule::validate_cron(
        "LOG_SHIP_SCHEDULE",
        &env.str_or("LOG_SHIP_SCHEDULE", "1 0 * * *"),
    )?;
    let extra_lines = schedule::extra_lines(&env)?;
    let log_shipping = logenv::log_shipping(&env, &layout, &machine.hostname, &namespace)?;
    let mut pgbouncer_config = None;
    // DEMO runs Spilo's `patroni pgqd certificate pam-oauth2` sections only: no WAL, logs, cron or pgbouncer.
    if !demo {
        let input = EnvdirInput {
            layout: &layout,
            pg_version: &pg_version,
            cpu_count: machine.cpu_count,
            namespace: &namespace,
        };
        let clone_storage = match &clone {
            CloneSource::FromStorage(c) => Some(&c.storage),
            _ => None,
        };
        for storage in [main.as_ref(), clone_storage, standby.storage.as_ref()]
            .into_iter()
            .flatten()
        {
            envdir(&env, storage, &input, &mut files, &mut dirs)?;
        }
        if main.is_some() || clone_storage.is_some() || standby.storage.is_some() {
            dirs.push(OutDir {
                path: layout.wale_tmpdir.clone(),
                mode: TMPDIR_MODE,
                exclusive: false,
            });
        }
        if let CloneSource::Basebackup(c) = &clone {
            files.push(OutFile::new(
                &c.pgpass,
                bootstrap::pgpass_line(c).into_bytes(),
                SECRET,
            ));
        }
        if let Some(log) = &log_shipping {
            dirs.push(OutDir {
                path: log.env_dir.clone(),
                mode: ENVDIR_MODE,
                exclusive: true,
            });
            dirs.push(OutDir {
                path: layout.log_tmpdir.clone(),
                mode: TMPDIR_MODE,
                exclusive: false,
            });
            for (name, value) in &log.files {
                files.push(OutFile::new(
                    &log.env_dir.join(name),
                    value.clone().into_bytes(),
                    SECRET,
                ));
            }
            let schedule_expr = if log.hourly {
                "1 */1 * * *".to_string()
            } else {
                log_schedule
            };
            schedule.log_upload = Some(LogUploadJob {
                schedule: schedule_expr,
                env_dir: log.env_dir.clone(),
            });
        }
        if let Some(p) = services::pgbouncer(&env, &layout) {
            files.extend(p.files);
            pgbouncer_config = Some(p.config);
        }
        if let Some(main) = &main {
            schedule.backup = Some(BackupJob {
                schedule: backup_schedule,
                env_dir: main.env_dir.clone(),
                pgdata: layout.pg_data.clone(),
            });
        }
        if env.bool(
            "SSL_TEST_RELOAD",
            env.raw("SSL_PRIVATE_KEY_FILE").is_some(),
            Legacy::NonEmpty,
        )? {
            let mut watched =
                BTreeMap::from([("PGDATA".to_string(), layout.pg_data.display().to_string())]);
            for (name, path) in [
                ("SSL_CA_FILE", tls.ca_file.as_ref()),
                ("SSL_CRL_FILE", tls.crl_file.as_ref()),
                ("SSL_CERTIFICATE_FILE", Some(&tls.cert_file)),
                ("SSL_PRIVATE_KEY_FILE", Some(&tls.key_file)),
            ] {
                if let Some(path) = path {
                    watched.insert(name.to_string(), path.display().to_string());
                }
            }
            schedule.ssl_reload = Some(SslReloadJob {
                schedule: "*/5 * * * *".into(),
                env: watched,
                hash_dir: layout.rw_dir.join("tmp"),
            });
        }
        schedule.extra = extra_lines;
    }
    let schedule_json = serde_json::to_vec_pretty(&schedule).expect("schedule serializes");
    files.push(OutFile::new(&layout.schedule_file, schedule_json, SECRET));

    let configured = Configured {
        patroni_config: layout.patroni_config.clone(),
        data_dir,
        rw_dir: layout.rw_dir.clone(),
        pg_home: layout.pg_home.clone(),
        pg_root: layout.pg_root.clone(),
        pg_log: layout.pg_log.clone(),
        bin_dir: PathBuf::from(bin_dir),
        pg_version: pg_version.to_string(),
        wal_env_dir: main.filter(|_| !demo).map(|m| m.env_dir),
        schedule_file: layout.schedule_file.clone(),
        schedule,
        start_local_etcd,
        pgbouncer_config,
    };
    Ok(Rendered {
        files,
        dirs,
        warnings: env.take_warnings(),
        configured,
    })
}

fn envdir(
    env: &Env,
    storage: &Storage,
    input: &EnvdirInput,
    files: &mut Vec<OutFile>,
    dirs: &mut Vec<OutDir>,
) -> Result<(), Error> {
    dirs.push(OutDir {
        path: storage.env_dir.clone(),
        mode: ENVDIR_MODE,
        exclusive: true,
    });
    for (name, value) in walenv::envdir_files(env, storage, input)? {
        files.push(OutFile::new(
            &storage.env_dir.join(name),
            value.into_bytes(),
            SECRET,
        ));
    }
    Ok(())
}

/// Spilo's post-processing after the merge: `bin_dir`, version-dependent extension lists, and a replication
/// line in a user-supplied `bootstrap.pg_hba`. Returns the bin_dir and its major version.
/// Tags the member as one whose local parameters follow the DCS (`crate::live_parameters`), which needs the
/// REST API on plain HTTP, as that task reads it. A `tags` value that is not a mapping is left to Patroni.
fn announce_live_parameters(config: &mut Map<String, Value>) {
    if config
        .get("restapi")
        .is_some_and(|r| r.get("certfile").is_some_and(Value::is_string))
    {
        return;
    }
    let tags = config
        .entry("tags")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(tags) = tags {
        tags.insert(FOLLOWS_DCS_TAG.into(), Value::Bool(true));
    }
}

fn postprocess(
    env: &Env,
    config: &mut Map<String, Value>,
    user: &Map<String, Value>,
    probe: &Probe,
) -> Result<(String, version::Major), Error> {
    let postgresql = config
        .get_mut("postgresql")
        .and_then(Value::as_object_mut)
        .expect("template has postgresql");
    let user_bin_dir = match postgresql.get("bin_dir") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(Error::invalid(
                "SPILO_CONFIGURATION",
                "postgresql.bin_dir must be a string",
            ))
        }
    };
    let (bin_dir, pg_version) = version::resolve_bin_dir(
        env,
        probe.data_dir_version.as_deref(),
        user_bin_dir.as_deref(),
        &probe.installed,
    )?;
    postgresql.insert("bin_dir".into(), json!(bin_dir));

    let user_params = user
        .get("postgresql")
        .and_then(|p| p.get("parameters"))
        .and_then(Value::as_object);
    let user_sets = |key: &str| user_params.is_some_and(|p| p.contains_key(key));
    let pg_mon = env.bool("ENABLE_PG_MON", false, Legacy::EqTrue)?;
    let libraries = (Path::new(&bin_dir) == version::bin_dir_for(env.vars(), &pg_version))
        .then(|| probe.installed.get(&pg_version).and_then(Option::as_ref))
        .flatten();
    let parameters = postgresql
        .get_mut("parameters")
        .and_then(Value::as_object_mut)
        .expect("template has parameters");
    for (key, extwlist) in [
        ("shared_preload_libraries", false),
        ("extwlist.extensions", true),
    ] {
        if user_sets(key) {
            continue;
        }
        let current = parameters
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut list = version::append_extensions(current, &pg_version, extwlist, pg_mon);
        if !extwlist {
            list = version::drop_missing_libraries(env, &list, libraries);
        }
        parameters.insert(key.into(), json!(list));
    }

    let replication_user = postgresql
        .get("authentication")
        .and_then(|a| a.get("replication"))
        .and_then(|r| r.get("username"))
        .and_then(Value::as_str)
        .map_or_else(|| env.str_or("PGUSER_STANDBY", "standby"), str::to_string);
    if let Some(Value::Array(hba)) = config
        .get_mut("bootstrap")
        .and_then(|b| b.get_mut("pg_hba"))
    {
        let mentions_replication = |line: &Value| match line {
            Value::String(s) => s.contains("replication"),
            Value::Object(m) => m.contains_key("replication"),
            Value::Array(a) => a.contains(&json!("replication")),
            _ => false,
        };
        if !hba.iter().any(mentions_replication) {
            hba.insert(
                0,
                json!(format!("hostssl replication {replication_user} all md5")),
            );
        }
    }
    Ok((bin_dir, pg_version))
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
