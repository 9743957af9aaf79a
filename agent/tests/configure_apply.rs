//! `configure` as the imperative shell: bad input writes nothing and names the variable, a second run replaces
//! files atomically and drops stale ones, TLS material is kept or written verbatim, and the CLI reports one
//! line with a non-zero exit code.

mod common;

use common::{file_mode as mode, files_under};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use pgherd_agent::configure::{self, Args};

/// The Spilo image's ENV plus what every case needs.
fn env(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("PGHOME", "/home/postgres"),
        ("RW_DIR", "/run"),
        ("DEMO", "false"),
        ("WALE_ENV_DIR", "/run/etc/wal-e.d/env"),
        ("LOG_ENV_DIR", "/run/etc/log.d/env"),
        ("PGROOT", "/home/postgres/pgdata/pgroot"),
        ("PGDATA", "/home/postgres/pgdata/pgroot/data"),
        ("PGLOG", "/home/postgres/pgdata/pgroot/pg_log"),
        ("PGVERSION", "16"),
        ("SCOPE", "demo"),
        ("ETCD_HOST", "127.0.0.1:2379"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn args(root: &Path) -> Args {
    Args {
        root: root.to_path_buf(),
        memory_mb: Some(2048),
        cpu_count: Some(2),
        hostname: Some("pod-0".into()),
        ip: Some("10.0.0.7".into()),
        listen_ip: Some("0.0.0.0".into()),
    }
}

#[test]
fn bad_input_names_the_variable_and_writes_nothing() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SPILO_CONFIGURATION", "{a: [1, 2}")], "SPILO_CONFIGURATION: not valid YAML/JSON at line 1 column"),
        (&[("SPILO_CONFIGURATION", "- a")], "SPILO_CONFIGURATION: must be a mapping, got a list"),
        (&[("PGVERSION", "abc")], "PGVERSION: \"abc\" is not a PostgreSQL major version"),
        (
            &[("CLONE_METHOD", "CLONE_WITH_WALE"), ("CLONE_SCOPE", "src")],
            "CLONE_METHOD=CLONE_WITH_WALE: no source configured (set CLONE_WAL_S3_BUCKET+CLONE_SCOPE or CLONE_WALE_S3_PREFIX/",
        ),
        (&[("CLONE_METHOD", "CLONE_WITH_WALE"), ("CLONE_WAL_S3_BUCKET", "b")], "CLONE_WAL_S3_BUCKET: needs CLONE_SCOPE"),
        (
            &[("WAL_S3_BUCKET", "a"), ("WAL_GS_BUCKET", "b")],
            "WAL_S3_BUCKET and WAL_GS_BUCKET: two storage backends configured, pick one",
        ),
        (
            &[("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"), ("CLONE_SCOPE", "src"), ("CLONE_USER", "u"), ("CLONE_PASSWORD", "p")],
            "CLONE_METHOD=CLONE_WITH_BASEBACKUP: CLONE_HOST is required",
        ),
        (&[("CLONE_METHOD", "CLONE_WITH_PIGEONS")], "CLONE_METHOD: \"CLONE_WITH_PIGEONS\" is not CLONE_WITH_WALE or"),
        (
            &[("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("DCS_ENABLE_KUBERNETES_API", "true"), ("KUBERNETES_LABELS", "{app: x}")],
            "KUBERNETES_LABELS: invalid JSON",
        ),
        (&[("WAL_S3_BUCKET", "b"), ("BACKUP_SCHEDULE", "every night")], "BACKUP_SCHEDULE: \"every night\" is not a valid 5-field cron schedule"),
        (&[("BACKUP_SCHEDULE", "0 25 * * *")], "BACKUP_SCHEDULE: \"0 25 * * *\" is not a valid 5-field cron schedule"),
        (&[("LOG_SHIP_SCHEDULE", "1 0 * *")], "LOG_SHIP_SCHEDULE: \"1 0 * *\" is not a valid 5-field cron schedule (4 fields)"),
        (&[("PGPORT", "abc")], "PGPORT: \"abc\" is not a port number"),
        (&[("APIPORT", "80800")], "APIPORT: \"80800\" is not a port number"),
        (&[("WAL_S3_BUCKET", "b"), ("BACKUP_NUM_TO_RETAIN", "five")], "BACKUP_NUM_TO_RETAIN: \"five\" is not a non-negative integer"),
        (&[("ALLOW_NOSSL", "sometimes")], "ALLOW_NOSSL: \"sometimes\" is not a boolean"),
        (&[("WAL_S3_BUCKET", "b"), ("USE_WALG_BACKUP", "please")], "USE_WALG_BACKUP: \"please\" is not a boolean"),
        (&[("SSL_CERTIFICATE", "CERT")], "SSL_CERTIFICATE: is set but SSL_PRIVATE_KEY is not"),
        (&[("PAM_OAUTH2", "http://insecure uid")], "PAM_OAUTH2: first argument must be an https URL"),
        (&[("CRONTAB", "{not: a list}")], "CRONTAB: must be a YAML list of crontab lines"),
        (&[("LOG_S3_BUCKET", "l"), ("LOG_S3_TAGS", "[1]")], "LOG_S3_TAGS: invalid JSON"),
        (&[("WAL_RESTORE_TIMEOUT", "forever")], "WAL_RESTORE_TIMEOUT: \"forever\" is not a duration"),
        (&[("RW_DIR", "run")], "RW_DIR: \"run\" is not an absolute path"),
        (&[("STANDBY_HOST", "h"), ("STANDBY_PORT", "x")], "STANDBY_PORT: \"x\" is not a port number"),
    ];
    for (extra, want) in cases {
        let root = tempfile::tempdir().unwrap();
        let err = configure::apply(&env(extra), &args(root.path()))
            .expect_err(want)
            .to_string();
        assert!(
            err.starts_with(want),
            "{extra:?}:\n  got  {err}\n  want {want}…"
        );
        assert!(!err.contains('\n'), "one line: {err}");
        let written: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert!(written.is_empty(), "{extra:?} wrote {written:?}");
    }
}

#[test]
fn second_run_rewrites_atomically_and_drops_stale_files() {
    let root = tempfile::tempdir().unwrap();
    let r = |p: &str| root.path().join(p);
    let first = env(&[
        ("WAL_S3_BUCKET", "b"),
        ("AWS_REGION", "eu-west-1"),
        ("PGPASSWORD_SUPERUSER", "one"),
    ]);
    configure::apply(&first, &args(root.path())).unwrap();
    assert_eq!(
        fs::read_to_string(r("run/etc/wal-e.d/env/AWS_REGION")).unwrap(),
        "eu-west-1"
    );
    let cert = fs::read(r("run/certs/server.crt")).unwrap();
    let key = fs::read(r("run/certs/server.key")).unwrap();

    let second = env(&[("WAL_S3_BUCKET", "b"), ("PGPASSWORD_SUPERUSER", "two")]);
    let configured = configure::apply(&second, &args(root.path())).unwrap();
    let yml = fs::read_to_string(r("run/postgres.yml")).unwrap();
    assert!(
        yml.contains("password: two") && !yml.contains("password: one"),
        "{yml}"
    );
    assert!(
        !r("run/etc/wal-e.d/env/AWS_REGION").exists(),
        "stale envdir file kept"
    );
    assert_eq!(
        fs::read(r("run/certs/server.crt")).unwrap(),
        cert,
        "generated certificate replaced"
    );
    assert_eq!(
        fs::read(r("run/certs/server.key")).unwrap(),
        key,
        "generated key replaced"
    );
    assert!(
        files_under(root.path()).iter().all(|p| !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".pgherd-")),
        "temp files left behind"
    );
    assert_eq!(
        configured.wal_env_dir.as_deref(),
        Some(Path::new("/run/etc/wal-e.d/env"))
    );
    assert_eq!(mode(&r("run/postgres.yml")), 0o600);
    assert_eq!(mode(&r("run/etc/wal-e.d/env")), 0o700);
    assert_eq!(mode(&r("home/postgres/pgdata/tmp")), 0o1777);
    assert_eq!(mode(&r("run/postgresql")), 0o2775);
}

#[test]
fn existing_key_and_certificate_are_kept() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("run/certs");
    fs::create_dir_all(&certs).unwrap();
    fs::write(certs.join("server.crt"), "MY CERT").unwrap();
    fs::write(certs.join("server.key"), "MY KEY").unwrap();
    configure::apply(&env(&[]), &args(root.path())).unwrap();
    assert_eq!(
        fs::read_to_string(certs.join("server.crt")).unwrap(),
        "MY CERT"
    );
    assert_eq!(
        fs::read_to_string(certs.join("server.key")).unwrap(),
        "MY KEY"
    );
}

#[test]
fn generated_certificate_is_a_pem_pair() {
    let root = tempfile::tempdir().unwrap();
    configure::apply(&env(&[]), &args(root.path())).unwrap();
    let certs = root.path().join("run/certs");
    assert!(fs::read_to_string(certs.join("server.crt"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(fs::read_to_string(certs.join("server.key"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(mode(&certs.join("server.key")), 0o600);
    assert_eq!(mode(&certs.join("server.crt")), 0o644);
}

#[test]
fn provided_certificate_and_key_are_written_verbatim() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("run/certs");
    fs::create_dir_all(&certs).unwrap();
    fs::write(certs.join("server.key"), "OLD KEY").unwrap();
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB&<>'\"\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
    let extra = [
        ("SSL_CERTIFICATE", cert),
        ("SSL_PRIVATE_KEY", key),
        ("SSL_CA", "CA"),
        ("SSL_CA_FILE", "/etc/ssl/x/ca.pem"),
    ];
    configure::apply(&env(&extra), &args(root.path())).unwrap();
    assert_eq!(fs::read_to_string(certs.join("server.crt")).unwrap(), cert);
    assert_eq!(fs::read_to_string(certs.join("server.key")).unwrap(), key);
    assert_eq!(mode(&certs.join("server.key")), 0o600);
    assert_eq!(
        fs::read_to_string(root.path().join("etc/ssl/x/ca.pem")).unwrap(),
        "CA"
    );
    let yml = fs::read_to_string(root.path().join("run/postgres.yml")).unwrap();
    assert!(yml.contains("ssl_ca_file: /etc/ssl/x/ca.pem"), "{yml}");
}

#[test]
fn files_belong_to_postgres_when_run_as_root() {
    let Some(postgres) = nix::unistd::User::from_name("postgres").ok().flatten() else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    configure::apply(&env(&[("WAL_S3_BUCKET", "b")]), &args(root.path())).unwrap();
    for p in [
        "run/postgres.yml",
        "run/etc/wal-e.d/env",
        "run/etc/wal-e.d/env/WALE_S3_PREFIX",
        "run/certs/server.key",
        "run/postgresql",
    ] {
        let meta = fs::metadata(root.path().join(p)).unwrap();
        assert_eq!(meta.uid(), postgres.uid.as_raw(), "{p}");
    }
}

#[test]
fn cli_reports_one_line_and_fails_or_succeeds_without_storage() {
    let root = tempfile::tempdir().unwrap();
    let run = |extra: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_pgherd-agent"))
            .args([
                "configure",
                "--memory-mb",
                "1024",
                "--cpu-count",
                "1",
                "--hostname",
                "h",
                "--ip",
                "127.0.0.1",
            ])
            .arg("--root")
            .arg(root.path())
            .env_clear()
            .envs(env(extra))
            .output()
            .unwrap()
    };
    let bad = run(&[("PGPORT", "abc")]);
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim(),
        "pgherd-agent: error: PGPORT: \"abc\" is not a port number"
    );
    // No WAL storage is a valid configuration: exit 0 (Spilo exited 1).
    let ok = run(&[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(ok.stdout.is_empty());
    assert!(root.path().join("run/postgres.yml").is_file());
}

/// `configure::Args` is flattened into `run`'s arguments; clap rejects (panics on) two groups with one id.
#[test]
fn run_accepts_the_configure_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgherd-agent"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--root",
        "--memory-mb",
        "--cpu-count",
        "--hostname",
        "--ip",
        "--listen-ip",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}:\n{help}");
    }
}
