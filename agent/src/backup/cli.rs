//! Command-line entry points of the backup engine: archive/restore commands Postgres runs, and the
//! `backup` maintenance commands. Each prints one actionable line on failure.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::compat;
use super::store::Store;
use super::{catalog, continuity, prune, push, settings, socket, wal};
use crate::configure::engine::Engine;
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
    let vars = crate::envdir::read(dir)?;
    match Engine::for_restore(&vars) {
        Engine::Native => runtime()?.block_on(fetch_native(dir, &args.name, &args.dest, timeout)),
        compat => {
            let (program, argv, extra) =
                compat::fetch(compat, &args.name, &args.dest.to_string_lossy());
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
                    let plan = prune::plan(&store, &prune::policy(&envdir.envdir)?).await?;
                    print_plan(&plan, false);
                    prune::execute(&store, &plan).await?;
                    eprintln!(
                        "retention: kept {}, deleted {}",
                        plan.decision.keep.len(),
                        plan.decision.delete.len()
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
                let plan = prune::plan(&store, &prune::policy(&envdir.envdir)?).await?;
                print_plan(&plan, dry_run);
                if !dry_run {
                    prune::execute(&store, &plan).await?;
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// What retention is about to delete (or would, on a dry run), before anything is deleted.
fn print_plan(plan: &prune::Plan, dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleting" };
    for name in &plan.decision.delete {
        eprintln!("{verb} backup {name}");
    }
    eprintln!(
        "{verb} {} WAL objects older than {}; keeping {} backups",
        plan.wal_keys.len(),
        plan.decision.wal_horizon.as_deref().unwrap_or("-"),
        plan.decision.keep.len()
    );
}
