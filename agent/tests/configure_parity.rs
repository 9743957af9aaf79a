//! Parity with Spilo's `configure_spilo.py`: for every reference case in `tests/fixtures/spilo-configure`,
//! `configure::apply` must write the same Patroni configuration (as data, after the documented deviations are
//! applied to Spilo's output), the same envdir files, the same certificates, and a schedule equivalent to
//! Spilo's crontab. Every deviation transform must match at least once across the cases, so a deviation that
//! stops applying (or a fixture that stops exercising it) fails the test instead of rotting silently.

mod common;

use common::{file_mode, files_under};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgherd_agent::configure::{self, Args, Schedule};
use serde_json::Value;

const SECRET: u32 = 0o600;

/// `KEY=VALUE` lines (values may contain `=`); `#` comments and blank lines skipped.
fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: bad line {l:?}", path.display()));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The repository's Python with PyYAML: Patroni reads postgres.yml with PyYAML (YAML 1.1), so that is the
/// reader whose view counts.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/install-deps.sh (it creates .venv with PyYAML)",
        python.display()
    );
    python
}

/// A YAML file as PyYAML's `safe_load` sees it, converted to JSON.
fn python_yaml(path: &Path) -> Value {
    let out = Command::new(python())
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])), default=repr))"])
        .arg(path)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "PyYAML failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fixtures() -> PathBuf {
    // A copy of the team's reference outputs (shared/fixtures), kept in the repository so a bare clone tests.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/spilo-configure");
    assert!(
        dir.join("image.env").is_file(),
        "Spilo reference fixtures not found at {}",
        dir.display()
    );
    dir
}

struct Case {
    name: String,
    dir: PathBuf,
    env: BTreeMap<String, String>,
    args: Args,
    wal_archiving: bool,
}

fn cases() -> Vec<Case> {
    let root = fixtures();
    let mut out = Vec::new();
    for entry in fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("expected").is_dir() {
            continue;
        }
        let read = |name: &str| {
            fs::read_to_string(dir.join(name))
                .unwrap()
                .trim()
                .to_string()
        };
        let mut env = read_env_file(&root.join("image.env"));
        env.extend(read_env_file(&dir.join("env")));
        let kubernetes = env.contains_key("KUBERNETES_SERVICE_HOST");
        let exit_code = read("exit_code");
        let args = Args {
            root: PathBuf::new(),
            memory_mb: Some(read("memory_mb").parse().unwrap()),
            cpu_count: Some(read("cpu_count").parse().unwrap()),
            hostname: Some(read("hostname")),
            // The reference machine resolved its host name to 127.0.0.1; Kubernetes cases use POD_IP.
            ip: (!kubernetes).then(|| "127.0.0.1".to_string()),
            // The reference machine was dual-stack.
            listen_ip: Some("::".into()),
        };
        out.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            wal_archiving: exit_code.trim_start_matches("exit_code=") == "0",
            dir,
            env,
            args,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        out.len() >= 12,
        "expected at least 12 reference cases in {}, found {}",
        root.display(),
        out.len()
    );
    out
}

/// One documented deviation, applied to Spilo's expected output. Returns how many places it changed.
struct Deviation {
    name: &'static str,
    apply: fn(&mut Expected) -> usize,
}

struct Expected {
    config: Value,
    /// envdir path (relative to the case's `expected/`) → file name → value.
    envdirs: BTreeMap<String, BTreeMap<String, String>>,
    crontab: Vec<String>,
}

fn str_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut String> {
    let mut cur = v;
    for key in path {
        cur = cur.get_mut(*key)?;
    }
    match cur {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Rewrites the string at `path` with `f` if it applies; counts a match.
fn rewrite(e: &mut Expected, path: &[&str], f: impl Fn(&str) -> Option<String>) -> usize {
    match str_at(&mut e.config, path) {
        Some(s) => match f(s) {
            Some(new) => {
                *s = new;
                1
            }
            None => panic!("deviation does not recognise {path:?} = {s:?}"),
        },
        None => 0,
    }
}

/// `envdir "<dir>" timeout "<t>" /scripts/restore_command.sh "%f" "%p"`.
fn restore_command(s: &str) -> Option<String> {
    let rest = s.strip_prefix("envdir \"")?;
    let (dir, rest) = rest.split_once("\" timeout \"")?;
    let (timeout, rest) = rest.split_once('"')?;
    (rest == " /scripts/restore_command.sh \"%f\" \"%p\"").then(|| {
        format!("pgherd-agent restore-command --envdir \"{dir}\" --timeout {timeout} \"%f\" \"%p\"")
    })
}

/// `envdir <dir> bash /scripts/wale_restore.sh` (the directory quoted or not).
fn wale_restore(s: &str) -> Option<String> {
    let dir = s
        .strip_prefix("envdir ")?
        .strip_suffix(" bash /scripts/wale_restore.sh")?
        .trim_matches('"');
    Some(format!("pgherd-agent wale-restore --envdir \"{dir}\""))
}

const DEVIATIONS: &[Deviation] = &[
    Deviation {
        name: "post_init calls pgherd-agent post-init",
        apply: |e| {
            rewrite(e, &["bootstrap", "post_init"], |s| {
                Some(s.strip_prefix("/scripts/post_init.sh ")?.to_string())
                    .map(|r| format!("pgherd-agent post-init {r}"))
            })
        },
    },
    Deviation {
        name: "on_role_change calls pgherd-agent on-role-change",
        apply: |e| {
            rewrite(e, &["postgresql", "callbacks", "on_role_change"], |s| {
                Some(format!(
                    "pgherd-agent on-role-change {}",
                    s.strip_prefix("/scripts/on_role_change.sh ")?
                ))
            })
        },
    },
    Deviation {
        name: "S3 archiving without WAL-G uses the native engine (replaces WAL-E)",
        apply: |e| {
            let s3 = e
                .envdirs
                .get("etc/wal-e.d/env")
                .is_some_and(|f| f.contains_key("WALE_S3_PREFIX"));
            match str_at(
                &mut e.config,
                &["postgresql", "parameters", "archive_command"],
            ) {
                Some(s) if s3 && s.ends_with(" wal-e wal-push \"%p\"") => {
                    let dir = s
                        .strip_prefix("envdir ")
                        .and_then(|r| r.strip_suffix(" wal-e wal-push \"%p\""))
                        .unwrap();
                    *s = format!("pgherd-agent wal-push --envdir {dir} \"%p\"");
                    1
                }
                _ => 0,
            }
        },
    },
    Deviation {
        name: "the native engine archives on replicas too (archive_mode always, docs/backup.md)",
        apply: |e| {
            let native = str_at(
                &mut e.config,
                &["postgresql", "parameters", "archive_command"],
            )
            .is_some_and(|s| s.starts_with("pgherd-agent wal-push "));
            match e.config["postgresql"]["parameters"].as_object_mut() {
                Some(p) if native => {
                    p.insert("archive_mode".into(), Value::String("always".into()));
                    1
                }
                _ => 0,
            }
        },
    },
    Deviation {
        name: "every WAL envdir records its engine in PGHERD_BACKUP_ENGINE",
        apply: |e| {
            let mut n = 0;
            for (rel, files) in e
                .envdirs
                .iter_mut()
                .filter(|(rel, _)| rel.starts_with("etc/wal-e.d/"))
            {
                let main = rel == "etc/wal-e.d/env";
                let walg_backup = files.get("USE_WALG_BACKUP").map(String::as_str) == Some("true");
                let engine = match (
                    files.contains_key("WALE_S3_PREFIX"),
                    main && walg_backup,
                    walg_backup,
                ) {
                    (true, false, _) => "native",
                    (_, true, _) | (false, _, true) => "wal-g",
                    _ => "wal-e",
                };
                files.insert("PGHERD_BACKUP_ENGINE".into(), engine.into());
                n += 1;
            }
            n
        },
    },
    Deviation {
        name: "native engine on S3 encrypts server-side by default (WALG_S3_SSE=AES256 unless disabled)",
        apply: |e| {
            let mut n = 0;
            for files in e.envdirs.values_mut() {
                let native = files.get("PGHERD_BACKUP_ENGINE").map(String::as_str) == Some("native");
                let disabled = files.get("WALG_DISABLE_S3_SSE").map(String::as_str) == Some("true");
                if native && !disabled && !files.contains_key("WALG_S3_SSE") {
                    files.insert("WALG_S3_SSE".into(), "AES256".into());
                    n += 1;
                }
            }
            n
        },
    },
    Deviation {
        name: "members announce that local parameters follow the DCS (tag pgherd_follows_dcs, docs/coordinator.md)",
        apply: |e| {
            let tls_api = e.config["restapi"]["certfile"].is_string();
            match e.config.as_object_mut() {
                Some(root) if !tls_api => {
                    let tags = root.entry("tags").or_insert_with(|| Value::Object(Default::default()));
                    match tags.as_object_mut() {
                        Some(t) => {
                            t.insert("pgherd_follows_dcs".into(), Value::Bool(true));
                            1
                        }
                        None => 0,
                    }
                }
                _ => 0,
            }
        },
    },
    Deviation {
        name: "archive_command uses pgherd-agent envdir",
        apply: |e| match str_at(
            &mut e.config,
            &["postgresql", "parameters", "archive_command"],
        ) {
            Some(s) if s.starts_with("envdir \"") => {
                *s = format!("pgherd-agent {s}");
                1
            }
            _ => 0,
        },
    },
    Deviation {
        name: "restore_command is pgherd-agent restore-command",
        apply: |e| {
            rewrite(
                e,
                &["postgresql", "recovery_conf", "restore_command"],
                restore_command,
            ) + rewrite(
                e,
                &[
                    "bootstrap",
                    "clone_with_wale",
                    "recovery_conf",
                    "restore_command",
                ],
                restore_command,
            ) + rewrite(
                e,
                &["bootstrap", "dcs", "standby_cluster", "restore_command"],
                restore_command,
            )
        },
    },
    Deviation {
        name: "wal_e replica method is pgherd-agent wale-restore",
        apply: |e| rewrite(e, &["postgresql", "wal_e", "command"], wale_restore),
    },
    Deviation {
        name: "bootstrap_standby_with_wale is pgherd-agent wale-restore",
        apply: |e| {
            rewrite(
                e,
                &["postgresql", "bootstrap_standby_with_wale", "command"],
                wale_restore,
            )
        },
    },
    Deviation {
        name: "basebackup_fast_xlog is pgherd-agent basebackup",
        apply: |e| {
            rewrite(e, &["postgresql", "basebackup_fast_xlog", "command"], |s| {
                (s == "/scripts/basebackup.sh").then(|| "pgherd-agent basebackup".to_string())
            })
        },
    },
    Deviation {
        name: "clone_with_wale is pgherd-agent clone-with-wale",
        apply: |e| {
            rewrite(e, &["bootstrap", "clone_with_wale", "command"], |s| {
                let rest = s.strip_prefix("envdir \"")?;
                let (dir, rest) = rest.split_once("\" python3 /scripts/clone_with_wale.py ")?;
                Some(format!(
                    "pgherd-agent clone-with-wale --envdir \"{dir}\" {rest}"
                ))
            })
        },
    },
    Deviation {
        name: "clone_with_wale replays WAL itself: recovery_conf becomes command arguments",
        apply: |e| {
            let Some(clone) = e
                .config
                .pointer_mut("/bootstrap/clone_with_wale")
                .and_then(Value::as_object_mut)
            else {
                return 0;
            };
            let Some(Value::Object(recovery)) = clone.remove("recovery_conf") else {
                return 0;
            };
            assert_eq!(recovery["recovery_target_action"], "promote", "pausing stays with Patroni");
            let mut args = String::new();
            for (key, value) in &recovery {
                match (key.as_str(), value.as_str()) {
                    ("recovery_target_timeline", Some("latest")) | ("recovery_target_action", _) => {}
                    // Already an argument of Spilo's command line.
                    ("recovery_target_time", Some(_)) => {}
                    ("recovery_target_timeline", Some(t)) => {
                        args.push_str(&format!(" --recovery-target-timeline=\"{t}\""))
                    }
                    ("recovery_target_inclusive", _) => {
                        args.push_str(" --recovery-target-inclusive=false")
                    }
                    ("restore_command", Some(c)) => {
                        args.push_str(&format!(" --restore-command='{c}'"))
                    }
                    other => panic!("unexpected recovery_conf entry {other:?}"),
                }
            }
            match clone.get_mut("command") {
                Some(Value::String(command)) => command.push_str(&args),
                other => panic!("clone_with_wale.command is {other:?}"),
            }
            1
        },
    },
    Deviation {
        name: "clone_with_basebackup is pgherd-agent clone-with-basebackup",
        apply: |e| {
            rewrite(e, &["bootstrap", "clone_with_basebackup", "command"], |s| {
                Some(format!(
                    "pgherd-agent clone-with-basebackup {}",
                    s.strip_prefix("python3 /scripts/clone_with_basebackup.py ")?
                ))
            })
        },
    },
    Deviation {
        name: "no AWS_REGION guessed from the metadata zone (Spilo: `loca` locally)",
        apply: |e| {
            let mut n = 0;
            for files in e.envdirs.values_mut() {
                if files.get("AWS_REGION").map(String::as_str) == Some("loca") {
                    files.remove("AWS_REGION");
                    n += 1;
                }
            }
            n
        },
    },
    Deviation {
        name: "renice.sh job not carried over (bg_mon not bundled)",
        apply: |e| {
            let before = e.crontab.len();
            e.crontab
                .retain(|l| l != "*/5 * * * * bash /scripts/renice.sh");
            before - e.crontab.len()
        },
    },
];

fn expected_envdirs(expected: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for parent in ["etc/wal-e.d", "etc/log.d"] {
        let Ok(entries) = fs::read_dir(expected.join(parent)) else {
            continue;
        };
        for entry in entries {
            let dir = entry.unwrap().path();
            let files = fs::read_dir(&dir)
                .unwrap()
                .map(|f| {
                    let f = f.unwrap();
                    (
                        f.file_name().to_string_lossy().into_owned(),
                        fs::read_to_string(f.path()).unwrap(),
                    )
                })
                .collect();
            out.insert(
                format!("{parent}/{}", dir.file_name().unwrap().to_string_lossy()),
                files,
            );
        }
    }
    out
}

/// The crontab lines Spilo would have written for this schedule (PATH and renice lines aside).
fn crontab_lines(schedule: &Schedule) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(ssl) = &schedule.ssl_reload {
        let env: Vec<String> = ssl
            .env
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        lines.push(format!(
            "{} {} /scripts/test_reload_ssl.sh {}",
            ssl.schedule,
            env.join(" "),
            ssl.hash_dir.display()
        ));
    }
    if let Some(b) = &schedule.backup {
        lines.push(format!(
            "{} envdir \"{}\" /scripts/postgres_backup.sh \"{}\"",
            b.schedule,
            b.env_dir.display(),
            b.pgdata.display()
        ));
    }
    if let Some(l) = &schedule.log_upload {
        lines.push(format!(
            "{} nice -n 5 envdir \"{}\" /scripts/upload_pg_log_to_s3.py",
            l.schedule,
            l.env_dir.display()
        ));
    }
    lines.extend(schedule.extra.iter().cloned());
    lines
}

#[test]
fn spilo_reference_cases() {
    let mut matched: BTreeMap<&str, usize> = DEVIATIONS.iter().map(|d| (d.name, 0)).collect();
    let mut failures = Vec::new();
    for case in cases() {
        if let Err(msg) = check_case(&case, &mut matched) {
            failures.push(format!("[{}] {msg}", case.name));
        }
    }
    for (name, count) in &matched {
        if *count == 0 {
            failures.push(format!(
                "deviation {name:?} matched nothing in any reference case"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

fn check_case(case: &Case, matched: &mut BTreeMap<&'static str, usize>) -> Result<(), String> {
    let root = tempfile::tempdir().unwrap();
    let args = Args {
        root: root.path().to_path_buf(),
        ..case.args.clone()
    };
    let configured =
        configure::apply(&case.env, &args).map_err(|e| format!("apply failed: {e}"))?;
    let expected_dir = case.dir.join("expected");
    let ours_path = root.path().join("run/postgres.yml");

    let mut expected = Expected {
        config: python_yaml(&expected_dir.join("postgres.yml")),
        envdirs: expected_envdirs(&expected_dir),
        crontab: fs::read_to_string(expected_dir.join("crontab"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect(),
    };
    for d in DEVIATIONS {
        *matched.get_mut(d.name).unwrap() += (d.apply)(&mut expected);
    }

    // postgres.yml: PyYAML (what Patroni uses) and serde read the same data, and it is Spilo's after deviations.
    let ours_text = fs::read_to_string(&ours_path).unwrap();
    let ours_serde: Value = serde_yaml_ng::from_str(&ours_text).unwrap();
    let ours_py = python_yaml(&ours_path);
    if ours_py != ours_serde {
        return Err(format!(
            "PyYAML reads postgres.yml differently:\nPyYAML: {ours_py:#}\nserde:  {ours_serde:#}"
        ));
    }
    if ours_serde != expected.config {
        return Err(format!(
            "postgres.yml differs:\n{}",
            json_diff(&expected.config, &ours_serde, "")
        ));
    }
    expect_mode(&ours_path, SECRET)?;

    // Envdirs: same directories, same files, same values, secret modes.
    for (rel, files) in &expected.envdirs {
        let dir = root.path().join("run").join(rel);
        let ours: BTreeMap<String, String> = files_under(&dir)
            .into_iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        if &ours != files {
            return Err(format!(
                "envdir {rel} differs:\nexpected {files:#?}\nours     {ours:#?}"
            ));
        }
        expect_mode(&dir, 0o700)?;
        for name in files.keys() {
            expect_mode(&dir.join(name), SECRET)?;
        }
    }
    for parent in ["run/etc/wal-e.d", "run/etc/log.d"] {
        let ours: BTreeSet<String> = fs::read_dir(root.path().join(parent))
            .map(|d| {
                d.map(|e| {
                    format!(
                        "{}/{}",
                        &parent[4..],
                        e.unwrap().file_name().to_string_lossy()
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        let theirs: BTreeSet<String> = expected
            .envdirs
            .keys()
            .filter(|k| k.starts_with(&parent[4..]))
            .cloned()
            .collect();
        if ours != theirs {
            return Err(format!(
                "envdirs under {parent}: expected {theirs:?}, ours {ours:?}"
            ));
        }
    }
    if case.wal_archiving != configured.wal_env_dir.is_some() {
        return Err(format!(
            "Spilo exit code says WAL archiving = {}, ours {:?}",
            case.wal_archiving, configured.wal_env_dir
        ));
    }

    // Files under PGHOME (the clone pgpass).
    let theirs_home: BTreeMap<String, String> = files_under(&expected_dir.join("home"))
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    let ours_home_paths = files_under(&root.path().join("home/postgres"));
    let ours_home: BTreeMap<String, String> = ours_home_paths
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    if ours_home != theirs_home {
        return Err(format!(
            "home files differ: expected {theirs_home:?}, ours {ours_home:?}"
        ));
    }
    for p in &ours_home_paths {
        expect_mode(p, SECRET)?;
    }

    // Certificates.
    let theirs_certs: BTreeSet<String> = fs::read_to_string(expected_dir.join("certs.list"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let ours_certs: BTreeSet<String> = files_under(&root.path().join("run/certs"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    if ours_certs != theirs_certs {
        return Err(format!(
            "certificates: expected {theirs_certs:?}, ours {ours_certs:?}"
        ));
    }
    expect_mode(&root.path().join("run/certs/server.key"), SECRET)?;

    // Crontab ⇔ schedule, also as written to schedule.json.
    let ours_lines = crontab_lines(&configured.schedule);
    if ours_lines != expected.crontab {
        return Err(format!(
            "schedule vs crontab:\nexpected {:#?}\nours     {ours_lines:#?}",
            expected.crontab
        ));
    }
    let schedule_file = root.path().join("run/etc/pgherd/schedule.json");
    let written: Schedule =
        serde_json::from_str(&fs::read_to_string(&schedule_file).unwrap()).unwrap();
    if written != configured.schedule {
        return Err("schedule.json differs from the returned schedule".into());
    }

    // Nothing else was written (directories aside): the documented extra is schedule.json.
    let mut allowed: BTreeSet<PathBuf> = BTreeSet::from([ours_path.clone(), schedule_file]);
    for (rel, files) in &expected.envdirs {
        allowed.extend(
            files
                .keys()
                .map(|n| root.path().join("run").join(rel).join(n)),
        );
    }
    allowed.extend(ours_home_paths);
    allowed.extend(
        ours_certs
            .iter()
            .map(|n| root.path().join("run/certs").join(n)),
    );
    let written: BTreeSet<PathBuf> = files_under(root.path()).into_iter().collect();
    let extra: Vec<_> = written.difference(&allowed).collect();
    if !extra.is_empty() {
        return Err(format!("unexpected files written: {extra:?}"));
    }
    for (dir, mode) in [
        ("run/postgresql", 0o2775),
        ("home/postgres/pgdata/tmp", 0o1777),
    ] {
        let path = root.path().join(dir);
        if path.exists() {
            expect_mode(&path, mode)?;
        }
    }
    Ok(())
}

fn expect_mode(path: &Path, mode: u32) -> Result<(), String> {
    let got = file_mode(path);
    (got == mode)
        .then_some(())
        .ok_or_else(|| format!("{} has mode {got:o}, want {mode:o}", path.display()))
}

/// Paths where two JSON values differ, one per line.
fn json_diff(expected: &Value, ours: &Value, path: &str) -> String {
    match (expected, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .map(|k| match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => json_diff(x, y, &format!("{path}.{k}")),
                    (Some(x), None) => format!("{path}.{k}: missing (expected {x})\n"),
                    (None, Some(y)) => format!("{path}.{k}: unexpected {y}\n"),
                    (None, None) => String::new(),
                })
                .collect()
        }
        (a, b) if a == b => String::new(),
        (a, b) => format!("{path}: expected {a}, ours {b}\n"),
    }
}

/// Strings YAML 1.1 (PyYAML, i.e. Patroni) would read as something else, or that need escaping, placed as keys
/// and values through SPILO_CONFIGURATION and through variables that land in the config: Patroni must read back
/// exactly what was given.
#[test]
fn pyyaml_reads_back_exactly_what_was_given() {
    let nasty = [
        "on",
        "off",
        "yes",
        "no",
        "y",
        "n",
        "Y",
        "N",
        "true",
        "False",
        "null",
        "Null",
        "~",
        "",
        "0644",
        "1d",
        "12:30",
        "1:30:00",
        "1_000",
        "0x1F",
        "0b101",
        "0o17",
        ".inf",
        ".NaN",
        "=",
        "<<",
        "+1",
        "-1",
        "1e3",
        "1.5e+3",
        "1.",
        ".5",
        "2026-11-01",
        "2026-11-01T10:00:00+00:00",
        "2026-11-01 10:00:00",
        "*:5432",
        ":8008",
        "%t [%p]",
        "a: b",
        "a #b",
        " x",
        "x ",
        "- x",
        "? x",
        "!tag",
        "&anchor",
        "*alias",
        "|",
        "'quoted'",
        "\"dq\"",
        "back\\slash",
        "multi\nline",
        "tab\there",
        "é ü ✓ 😀",
        "\u{85}nel",
        "ls\u{2028}",
        "\u{feff}bom",
        "a,b",
        "[x]",
        "{y}",
        "#c",
        "@x",
        "`b`",
        "1800s",
        "64MB",
        "0.9",
        "15",
        "9.6",
        "127.0.0.1:5432",
        "::1",
        "fd00::5",
        "a&amp;b<c>",
    ];
    let keys: serde_json::Map<String, Value> = nasty
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), Value::from(format!("v{i}"))))
        .collect();
    let user = serde_json::json!({
        "nasty": {"as_keys": keys, "as_values": nasty.to_vec(), "numbers": {"i": 5, "f": 0.02, "tiny": 1e-7, "b": true, "z": null}},
    });
    let mut env = read_env_file(&fixtures().join("image.env"));
    for (k, v) in [
        ("SPILO_CONFIGURATION", user.to_string()),
        ("PGVERSION", "16".into()),
        ("SCOPE", "0644".into()),
        ("PGPASSWORD_SUPERUSER", "p'w\"d: #x&amp;".into()),
        ("PGUSER_STANDBY", "on".into()),
        ("PGPASSWORD_STANDBY", "12:30".into()),
        ("HUMAN_ROLE", "yes".into()),
        ("ETCD_HOST", "1_000".into()),
    ] {
        env.insert(k.to_string(), v);
    }
    let root = tempfile::tempdir().unwrap();
    let args = Args {
        root: root.path().to_path_buf(),
        memory_mb: Some(1024),
        cpu_count: Some(1),
        hostname: Some("off".into()),
        ip: Some("127.0.0.1".into()),
        listen_ip: Some("::".into()),
    };
    configure::apply(&env, &args).unwrap();
    let path = root.path().join("run/postgres.yml");
    let ours_py = python_yaml(&path);
    let ours_serde: Value = serde_yaml_ng::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(ours_py, ours_serde, "PyYAML and serde disagree");
    assert_eq!(ours_py["nasty"], user["nasty"]);
    assert_eq!(ours_py["scope"], "0644");
    assert_eq!(ours_py["postgresql"]["name"], "off");
    assert_eq!(
        ours_py["postgresql"]["authentication"]["superuser"]["password"],
        "p'w\"d: #x&amp;"
    );
    assert_eq!(
        ours_py["postgresql"]["authentication"]["replication"],
        serde_json::json!({"username": "on", "password": "12:30"})
    );
    assert_eq!(
        ours_py["bootstrap"]["post_init"],
        "pgherd-agent post-init \"yes\""
    );
    assert_eq!(ours_py["etcd"]["host"], "1_000");
}
