//! Command-line entry points of the backup engine: archive/restore commands Postgres runs, and the
//! `backup` maintenance commands. Each prints one actionable line on failure.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use super::engine::{self, Engine};
use super::settings::Settings;
use super::store::Store;
use super::{catalog, continuity, push, retention, socket, wal};
use crate::local::Local;

/// The envdir: `--envdir`, else `WALE_ENV_DIR`, else Spilo's default.
#[derive(Debug, Clone, clap::Args)]
pub struct EnvdirArg {
    /// Envdir with the storage settings (Spilo's /run/etc/wal-e.d/env).
    #[arg(long, env = "WALE_ENV_DIR", default_value = "/run/etc/wal-e.d/env")]
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

pub async fn store_for(envdir: &Path) -> anyhow::Result<Store> {
    let settings =
        Settings::from_envdir(envdir).with_context(|| format!("envdir {}", envdir.display()))?;
    Ok(Store::new(settings).await)
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
        let store = store_for(&args.envdir.envdir).await?;
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
    let store = store_for(envdir).await?;
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
                let store = store_for(&envdir.envdir).await?;
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
                let store = store_for(&envdir.envdir).await?;
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
                let store = store_for(&envdir.envdir).await?;
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
                let store = store_for(&envdir.envdir).await?;
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
    store: &Store,
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
