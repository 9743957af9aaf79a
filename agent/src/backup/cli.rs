//! Command-line entry points of the backup engine: archive/restore commands Postgres runs, and the
//! `backup` maintenance commands. Each prints one actionable line on failure.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use super::engine::{self, Engine};
use super::store::{ObjectStore, Store};
use super::{catalog, continuity, push, retention, settings, socket, wal};
use crate::local::Local;

/// The envdir: `--envdir`, else the main envdir (`settings::main_envdir`).
#[derive(Debug, Clone, clap::Args)]
pub struct EnvdirArg {
    /// Envdir with the storage settings (Spilo's /run/etc/wal-e.d/env).
    #[arg(long, env = settings::ENVDIR_VAR, default_value_os_t = settings::main_envdir(|k| std::env::var(k).ok()))]
    pub envdir: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WalPushArgs {
    #[command(flatten)]
    pub envdir: EnvdirArg,
    /// The WAL file (%p: relative to the data directory, where Postgres runs the command).
    pub path: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WalFetchArgs {
    #[command(flatten)]
    pub envdir: EnvdirArg,
    /// WAL file name (%f).
    pub name: String,
    /// Destination (%p).
    pub dest: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreCommandArgs {
    #[command(flatten)]
    pub envdir: EnvdirArg,
    /// Seconds before giving up on one file (0: no limit), Spilo's WAL_RESTORE_TIMEOUT.
    #[arg(long, default_value = "0")]
    pub timeout: String,
    pub name: String,
    pub dest: PathBuf,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a base backup of this member now (the leader, unless --from-replica).
    Push {
        #[command(flatten)]
        envdir: EnvdirArg,
        #[arg(long)]
        from_replica: bool,
        /// Apply retention after a successful backup.
        #[arg(long)]
        retain: bool,
        /// Print the manifest of the new backup as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List complete backups, oldest first.
    List {
        #[command(flatten)]
        envdir: EnvdirArg,
        #[arg(long)]
        json: bool,
    },
    /// Check that the WAL archive can replay the oldest backup to the newest archived segment; exit 1 and
    /// name the missing files when it cannot.
    Verify {
        #[command(flatten)]
        envdir: EnvdirArg,
        #[arg(long)]
        json: bool,
    },
    /// Delete backups (and WAL) that the retention policy no longer needs.
    Delete {
        #[command(flatten)]
        envdir: EnvdirArg,
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Default bound for one archive or restore operation; Postgres retries a failed archive_command itself.
const WAL_TIMEOUT: Duration = Duration::from_secs(300);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn wal_push(args: WalPushArgs) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(&args.path).context("resolving the WAL path")?;
    runtime()?.block_on(async {
        if let Some(answer) = socket::request(&socket::Request::WalPush {
            envdir: args.envdir.envdir.clone(),
            path: path.clone(),
        })
        .await
        {
            return answer.into_result().map(|_| ExitCode::SUCCESS);
        }
        let store = Store::from_envdir(&args.envdir.envdir).await?;
        let pushed = tokio::time::timeout(WAL_TIMEOUT, wal::push(&store, &path))
            .await
            .with_context(|| {
                format!(
                    "archiving {} timed out after {WAL_TIMEOUT:?}",
                    path.display()
                )
            })??;
        tracing::debug!(?pushed, path = %path.display(), "archived");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn wal_fetch(args: WalFetchArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(fetch_native(
        &args.envdir.envdir,
        &args.name,
        &args.dest,
        WAL_TIMEOUT,
    ))
}

async fn fetch_native(
    envdir: &Path,
    name: &str,
    dest: &Path,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    if let Ok(abs) = std::path::absolute(dest) {
        let req = socket::Request::WalFetch {
            envdir: envdir.to_path_buf(),
            name: name.to_string(),
            dest: abs,
        };
        if let Some(answer) = socket::request(&req).await {
            let found = answer.found;
            answer.into_result()?;
            return Ok(if found == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    let store = Store::from_envdir(envdir).await?;
    let found = tokio::time::timeout(timeout, wal::fetch(&store, name, dest))
        .await
        .with_context(|| format!("fetching {name} timed out after {timeout:?}"))??;
    // Exit 1 without a message is how a restore_command says "not in the archive" (end of recovery).
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What Patroni's restore_command runs: the native fetch, or WAL-G/WAL-E as Spilo's restore_command.sh did.
pub fn restore_command(args: RestoreCommandArgs) -> anyhow::Result<ExitCode> {
    let seconds: f64 = args
        .timeout
        .trim_end_matches('s')
        .parse()
        .with_context(|| format!("--timeout {:?} is not a number of seconds", args.timeout))?;
    let timeout = if seconds > 0.0 {
        Duration::from_secs_f64(seconds)
    } else {
        WAL_TIMEOUT
    };
    let dir = &args.envdir.envdir;
    let vars = engine::read_envdir(dir)?;
    match Engine::for_restore(&vars) {
        Engine::Native => runtime()?.block_on(fetch_native(dir, &args.name, &args.dest, timeout)),
        compat => {
            let (program, argv, extra) =
                engine::compat_fetch(compat, &args.name, &args.dest.to_string_lossy());
            let mut cmd = std::process::Command::new(&program);
            cmd.args(&argv).envs(extra);
            for (k, v) in &vars {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
            let err = cmd.exec();
            Err(err).with_context(|| {
                format!(
                    "running {program} (compatibility mode chosen by {})",
                    dir.display()
                )
            })
        }
    }
}

pub fn backup(cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            BackupCommand::Push {
                envdir,
                from_replica,
                retain,
                json,
            } => {
                let store = Store::from_envdir(&envdir.envdir).await?;
                let local = Local::from_env()?;
                let member = std::env::var("HOSTNAME").unwrap_or_default();
                let m = push::push(&store, &local, &member, from_replica).await?;
                if json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    println!(
                        "{} {} bytes ({} stored) {} .. {}",
                        m.name, m.size_bytes, m.stored_bytes, m.start_lsn, m.end_lsn
                    );
                }
                if retain {
                    let policy = policy_from(&envdir.envdir)?;
                    let decision = apply_retention(&store, &policy, false).await?;
                    eprintln!(
                        "retention: kept {}, deleted {}",
                        decision.keep.len(),
                        decision.delete.len()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            BackupCommand::List { envdir, json } => {
                let store = Store::from_envdir(&envdir.envdir).await?;
                let all = catalog::list(&store).await?;
                let archive = continuity::verify(&store, &mut Default::default()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                    if !archive.complete() {
                        eprintln!("WAL archive: {}", archive.describe());
                    }
                } else {
                    println!(
                        "{:<28} {:<26} {:>14} {:>14} {:<4} start wal",
                        "name", "finished", "size", "stored", "pg"
                    );
                    for m in &all {
                        println!(
                            "{:<28} {:<26} {:>14} {:>14} {:<4} {}",
                            m.name,
                            m.finished_at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
                            m.size_bytes,
                            m.stored_bytes,
                            m.pg_version,
                            m.start_wal
                        );
                    }
                    println!("WAL archive: {}", archive.describe());
                }
                Ok(ExitCode::SUCCESS)
            }
            BackupCommand::Verify { envdir, json } => {
                let store = Store::from_envdir(&envdir.envdir).await?;
                let report = continuity::verify(&store, &mut Default::default()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    for n in &report.newest {
                        println!(
                            "timeline {}: newest archived segment {} (through {})",
                            n.timeline, n.segment, n.end_lsn
                        );
                    }
                    println!("WAL archive: {}", report.describe());
                }
                Ok(if report.complete() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            BackupCommand::Delete { envdir, dry_run } => {
                let store = Store::from_envdir(&envdir.envdir).await?;
                apply_retention(&store, &policy_from(&envdir.envdir)?, dry_run).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Retention policy from the envdir: `BACKUP_NUM_TO_RETAIN` backups (Spilo's variable, default 5) and,
/// with `PGHERD_BACKUP_RETENTION_DAYS`, everything needed to restore to any point in that many days.
pub fn policy_from(envdir: &Path) -> anyhow::Result<retention::Policy> {
    let vars = engine::read_envdir(envdir)?;
    let get = |k: &str| vars.get(k).cloned().flatten().filter(|v| !v.is_empty());
    let keep_last = match get("BACKUP_NUM_TO_RETAIN") {
        Some(v) => v
            .parse()
            .with_context(|| format!("BACKUP_NUM_TO_RETAIN: {v:?} is not a number"))?,
        None => 5,
    };
    let keep_within = match get("PGHERD_BACKUP_RETENTION_DAYS") {
        Some(v) => Some(chrono::Duration::days(v.parse().with_context(|| {
            format!("PGHERD_BACKUP_RETENTION_DAYS: {v:?} is not a number of days")
        })?)),
        None => None,
    };
    Ok(retention::Policy {
        keep_last,
        keep_within,
    })
}

/// Deletes what the policy no longer needs: backups first, then WAL older than every kept backup.
pub async fn apply_retention(
    store: &impl ObjectStore,
    policy: &retention::Policy,
    dry_run: bool,
) -> anyhow::Result<retention::Decision> {
    let all = catalog::list(store).await?;
    let inputs: Vec<retention::Backup> = all
        .iter()
        .map(|m| retention::Backup {
            name: m.name.clone(),
            finished: m.finished_at,
            start_wal: m.start_wal.clone(),
        })
        .collect();
    let decision = retention::decide(&inputs, *policy, Utc::now());
    let prefix = store.settings().backups_prefix();
    let mut doomed: Vec<String> = Vec::new();
    if !decision.delete.is_empty() {
        for key in store.list(&prefix).await? {
            let name = key.key[prefix.len()..]
                .split('/')
                .next()
                .unwrap_or_default();
            if decision.delete.iter().any(|d| d == name) {
                doomed.push(key.key);
            }
        }
    }
    let mut wal_doomed = Vec::new();
    if let Some(horizon) = &decision.wal_horizon {
        let wal_prefix = format!("{}/wal/", store.settings().root());
        for key in store.list(&wal_prefix).await? {
            if retention::wal_deletable(&key.key[wal_prefix.len()..], horizon) {
                wal_doomed.push(key.key);
            }
        }
    }
    for name in &decision.delete {
        eprintln!(
            "{} backup {name}",
            if dry_run { "would delete" } else { "deleting" }
        );
    }
    eprintln!(
        "{} {} WAL objects older than {}; keeping {} backups",
        if dry_run { "would delete" } else { "deleting" },
        wal_doomed.len(),
        decision.wal_horizon.as_deref().unwrap_or("-"),
        decision.keep.len()
    );
    if !dry_run {
        // Manifests go first: a backup interrupted mid-deletion is then simply not listed any more.
        doomed.sort_by_key(|k| !k.ends_with(catalog::MANIFEST));
        store.delete(&doomed).await?;
        store.delete(&wal_doomed).await?;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::tests::m;
    use crate::backup::memory::{MemStore, Op};

    const SEG: u64 = 16 << 20;

    /// A complete backup (data object and manifest) whose WAL starts in segment `seg` of timeline 1.
    fn backup(store: &MemStore, name: &str, finished: &str, seg: u64) {
        let manifest = m(name, finished, seg * SEG + 0x100, 1);
        let dir = format!("{}{name}", store.settings().backups_prefix());
        let body = serde_json::to_vec(&manifest).unwrap();
        store.insert(
            &format!("{dir}/data.tar.zstd"),
            vec![0; 8],
            Default::default(),
        );
        store.insert(
            &format!("{dir}/{}", catalog::MANIFEST),
            body,
            Default::default(),
        );
    }

    fn segment(seg: u64) -> String {
        catalog::wal_file_name(1, catalog::Lsn(seg * SEG), SEG)
    }

    /// Four daily backups starting in segments 2, 4, 6 and 8; WAL segments 1 to 9 and a history file.
    fn archive() -> MemStore {
        let store = MemStore::new();
        for (name, day, seg) in [("a", 1, 2), ("b", 2, 4), ("c", 3, 6), ("d", 4, 8)] {
            backup(&store, name, &format!("2026-11-0{day} 00:00:00+00"), seg);
        }
        for seg in 1..=9 {
            store.insert(
                &store.settings().wal_key(&segment(seg)),
                vec![1],
                Default::default(),
            );
        }
        store.insert(
            &store.settings().wal_key("00000002.history"),
            vec![1],
            Default::default(),
        );
        store
    }

    /// The names of the backups the catalog lists.
    async fn listed(store: &MemStore) -> Vec<String> {
        let all = catalog::list(store).await.unwrap();
        all.into_iter().map(|m| m.name).collect()
    }

    const KEEP_TWO: retention::Policy = retention::Policy {
        keep_last: 2,
        keep_within: None,
    };

    /// What is left after `KEEP_TWO`: backups c and d, the WAL from c's start on, every history file.
    fn kept(store: &MemStore) -> Vec<String> {
        let s = store.settings();
        let mut keys: Vec<String> = ["c", "d"]
            .iter()
            .flat_map(|n| {
                let dir = format!("{}{n}", s.backups_prefix());
                [
                    format!("{dir}/data.tar.zstd"),
                    format!("{dir}/{}", catalog::MANIFEST),
                ]
            })
            .chain((6..=9).map(|seg| s.wal_key(&segment(seg))))
            .chain([s.wal_key("00000002.history")])
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn retention_deletes_exactly_what_the_policy_says() {
        let store = archive();
        let dry = apply_retention(&store, &KEEP_TWO, true).await.unwrap();
        assert_eq!(
            (dry.keep, dry.delete),
            (
                vec!["d".to_string(), "c".into()],
                vec!["b".to_string(), "a".into()]
            )
        );
        assert!(
            store.calls(Op::Delete).is_empty(),
            "a dry run deletes nothing"
        );

        apply_retention(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(store.keys(), kept(&store));
        let deleted = store.calls(Op::Delete);
        assert!(
            deleted[..2].iter().all(|k| k.ends_with(catalog::MANIFEST)),
            "manifests first: {deleted:?}"
        );
        let names = listed(&store).await;
        assert_eq!(names, ["c", "d"]);

        apply_retention(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(store.keys(), kept(&store), "a second run changes nothing");
    }

    #[tokio::test]
    async fn a_failed_delete_is_reported_and_the_next_run_finishes_the_job() {
        let store = archive();
        let before = store.keys();
        store.fail_next(Op::Delete, 1);
        assert!(apply_retention(&store, &KEEP_TWO, false).await.is_err());
        assert_eq!(
            store.keys(),
            before,
            "no WAL is deleted while the backups needing it remain"
        );
        apply_retention(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(store.keys(), kept(&store));

        let store = archive();
        store.fail_matching(Op::Delete, &format!("{}/wal/", store.settings().root()));
        assert!(apply_retention(&store, &KEEP_TWO, false).await.is_err());
        let names = listed(&store).await;
        assert_eq!(names, ["c", "d"], "the backups went first");
        store.clear_faults();
        apply_retention(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(
            store.keys(),
            kept(&store),
            "the WAL horizon is recomputed, nothing is forgotten"
        );
    }
}
