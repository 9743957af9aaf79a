//! Commands Patroni runs to create a data directory from somewhere else: a clone or point-in-time restore
//! from backups (`clone-with-wale`), a replica from the latest backup (`wale-restore`), and a clone from a
//! running cluster (`clone-with-basebackup`).
//!
//! Spilo fell back to initdb when a clone was misconfigured or found nothing, producing an empty cluster
//! where data was expected. Every failure here exits non-zero with the reason, and Patroni's bootstrap
//! fails with it; nothing here ever initialises an empty cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio_postgres::NoTls;

use crate::backup::catalog::{self, Manifest, Target};
use crate::backup::settings::Settings;
use crate::backup::store::{ObjectStore, Store};
use crate::backup::{continuity, restore};
use crate::configure::engine::Engine;
use clone::Restored;
use private::Recovery;

pub mod clone;
pub mod private;

#[derive(Debug, Clone, clap::Args)]
pub struct CloneArgs {
    #[arg(long)]
    pub envdir: PathBuf,
    /// PITR target time (must include a time zone); empty: the latest state.
    #[arg(long, default_value = "")]
    pub recovery_target_time: String,
    #[arg(long)]
    pub recovery_target_lsn: Option<String>,
    #[arg(long)]
    pub recovery_target_xid: Option<u64>,
    #[arg(long, default_value = "latest")]
    pub recovery_target_timeline: String,
    /// Stop just after (true) or just before (false) the target.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub recovery_target_inclusive: bool,
    /// restore_command for the replay; default: this agent's `restore-command` on `--envdir`.
    #[arg(long)]
    pub restore_command: Option<String>,
    /// Patroni replays the WAL after this command (pause at the target, or a recovery_conf from
    /// SPILO_CONFIGURATION): restore only. Not possible across majors.
    #[arg(long)]
    pub recovery_by_patroni: bool,
    #[arg(long)]
    pub scope: Option<String>,
    #[arg(long)]
    pub datadir: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplicaArgs {
    #[arg(long)]
    pub envdir: PathBuf,
    #[command(flatten)]
    pub patroni: crate::replica::MethodArgs,
    #[arg(long = "threshold_megabytes", default_value_t = 10240)]
    pub threshold_megabytes: u64,
    #[arg(long = "threshold_backup_size_percentage", default_value_t = 30)]
    pub threshold_backup_size_percentage: u64,
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    #[arg(long = "no_leader", alias = "no-master")]
    pub no_leader: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BasebackupCloneArgs {
    #[arg(long)]
    pub pgpass: PathBuf,
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value = "5432")]
    pub port: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub scope: Option<String>,
    #[arg(long)]
    pub datadir: PathBuf,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The restore target from the clone arguments (at most one kind).
pub fn target(args: &CloneArgs) -> anyhow::Result<Target> {
    let time = (!args.recovery_target_time.trim().is_empty()).then_some(&args.recovery_target_time);
    match (time, &args.recovery_target_lsn, args.recovery_target_xid) {
        (None, None, None) => Ok(Target::Latest),
        (Some(t), None, None) => Ok(Target::Time(
            catalog::parse_time(t).map_err(|e| anyhow::anyhow!("CLONE_TARGET_TIME: {e}"))?,
        )),
        (None, Some(l), None) => Ok(Target::Lsn(
            l.parse()
                .map_err(|e| anyhow::anyhow!("CLONE_TARGET_LSN: {e}"))?,
        )),
        (None, None, Some(x)) => Ok(Target::Xid(x)),
        _ => anyhow::bail!(
            "set only one of CLONE_TARGET_TIME, CLONE_TARGET_LSN and CLONE_TARGET_XID"
        ),
    }
}

/// A source prefix generated without CLONE_PGVERSION ends in `/wal` and holds one directory per major.
fn versionless(prefix: &str) -> bool {
    prefix.trim_end_matches('/').ends_with("/wal") || prefix.trim_end_matches('/') == "wal"
}

/// Backups of every major version under a version-less prefix, as (version, store), newest major first.
async fn candidate_stores(settings: &Settings) -> anyhow::Result<Vec<(Option<String>, Store)>> {
    if !versionless(&settings.prefix) {
        return Ok(vec![(None, Store::new(settings.clone()).await)]);
    }
    let base = settings.prefix.trim_end_matches('/').to_string();
    let probe = Store::new(settings.clone()).await;
    let keys = probe.list(&format!("{base}/")).await?;
    let mut versions: Vec<String> = keys
        .iter()
        .filter_map(|l| {
            let rest = l.key.strip_prefix(&format!("{base}/"))?;
            let (ver, tail) = rest.split_once('/')?;
            tail.starts_with("pgherd/basebackups/")
                .then(|| ver.to_string())
        })
        .collect();
    versions.sort_by(|a, b| {
        b.parse::<f64>()
            .unwrap_or(0.0)
            .total_cmp(&a.parse::<f64>().unwrap_or(0.0))
    });
    versions.dedup();
    let mut out = Vec::new();
    for v in versions {
        let mut s = settings.clone();
        s.prefix = format!("{base}/{v}");
        out.push((Some(v), Store::new(s).await));
    }
    Ok(out)
}

/// Finds the backup to restore for `target` across the candidate locations.
async fn find(
    settings: &Settings,
    target: &Target,
) -> anyhow::Result<(Option<String>, Store, Manifest)> {
    let location = format!("s3://{}/{}", settings.bucket, settings.prefix);
    let mut last_err = None;
    for (version, store) in candidate_stores(settings).await? {
        let all = catalog::list(&store).await?;
        match catalog::choose(
            &all,
            target,
            &format!("s3://{}/{}", settings.bucket, store.settings().prefix),
        ) {
            Ok(m) => {
                let m = m.clone();
                return Ok((version, store, m));
            }
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e.into()),
        None => Err(catalog::ChooseError::Empty { location }.into()),
    }
}

pub fn clone_with_wale(args: CloneArgs) -> anyhow::Result<ExitCode> {
    let vars = crate::envdir::read(&args.envdir)?;
    let engine = Engine::for_restore(&vars);
    if engine != Engine::Native {
        anyhow::bail!(
            "the clone source in {} is configured for {} (compatibility mode), which is not installed in this image; \
             clone from a pgherd-native source or provide the tool on PATH",
            args.envdir.display(),
            engine.name()
        );
    }
    let target = target(&args)?;
    let settings = Settings::from_envdir(&args.envdir)?;
    runtime()?.block_on(async {
        let (version, store, manifest) = find(&settings, &target).await.context("clone failed")?;
        let must_reach = if target == Target::Latest {
            require_complete_archive(&store, &manifest, &args.recovery_target_timeline)
                .await
                .context("clone failed")?
        } else {
            // Postgres itself fails a recovery that ends before its target.
            None
        };
        tracing::info!(backup = %manifest.name, pg = %manifest.pg_version, %target, "restoring base backup");
        restore::restore(&store, &manifest, &args.datadir).await.context("clone failed")?;
        if let Some(v) = version {
            pin_version(&args.envdir, &v)?;
        }
        println!("restored {} ({} bytes) for {target}", manifest.name, manifest.size_bytes);
        let recovery = Recovery {
            must_reach,
            ..recovery(&args)
        };
        clone::finish(&args.datadir, Restored::Backup(recovery), args.recovery_by_patroni)
            .await
            .context("clone failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A restore to the latest state stops quietly at the first WAL file the archive lacks, so a gap between
/// the backup and the end of the newest timeline fails the clone before anything is restored. Returns
/// how far the replay must get.
async fn require_complete_archive(
    store: &Store,
    manifest: &Manifest,
    timeline: &str,
) -> anyhow::Result<Option<catalog::Lsn>> {
    let choice = continuity::TimelineChoice::parse(timeline)
        .map_err(|e| anyhow::anyhow!("CLONE_TARGET_TIMELINE: {e}"))?;
    let archive =
        continuity::load(store, manifest.wal_segment_size, &mut Default::default()).await?;
    let report = archive.check(continuity::Start::of_backup(manifest), choice);
    anyhow::ensure!(
        report.complete(),
        "the WAL archive at s3://{}/{} cannot replay backup {} to the latest state: {}; a restore would stop \
         at the gap and lose what follows. Restore to a target before it (CLONE_TARGET_TIME or CLONE_TARGET_LSN) \
         or put the missing file back",
        store.settings().bucket,
        store.settings().root(),
        manifest.name,
        report.describe()
    );
    Ok(report.must_reach(manifest.wal_segment_size))
}

/// The replay the clone needs after its base backup, from the command line.
fn recovery(args: &CloneArgs) -> Recovery {
    let time = args.recovery_target_time.trim();
    Recovery {
        restore_command: args
            .restore_command
            .clone()
            .unwrap_or_else(|| crate::configure::restore_command(&args.envdir, "0")),
        target_time: (!time.is_empty()).then(|| time.to_string()),
        target_lsn: args.recovery_target_lsn.clone(),
        target_xid: args.recovery_target_xid.map(|x| x.to_string()),
        target_timeline: args.recovery_target_timeline.clone(),
        inclusive: args.recovery_target_inclusive,
        must_reach: None,
    }
}

/// After choosing a backup under a version-less prefix, point the envdir (read by restore_command for the
/// rest of recovery) at that version's WAL, as Spilo's clone_with_wale.py did.
fn pin_version(envdir: &Path, version: &str) -> anyhow::Result<()> {
    for var in ["WALG_S3_PREFIX", "WALE_S3_PREFIX"] {
        let file = envdir.join(var);
        if let Ok(value) = std::fs::read_to_string(&file) {
            let pinned = format!("{}/{version}", value.trim().trim_end_matches('/'));
            let tmp = envdir.join(format!(".{var}.tmp"));
            std::fs::write(&tmp, pinned).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &file).with_context(|| format!("updating {}", file.display()))?;
        }
    }
    Ok(())
}

pub fn wale_restore(args: ReplicaArgs) -> anyhow::Result<ExitCode> {
    let vars = crate::envdir::read(&args.envdir)?;
    if Engine::for_restore(&vars) != Engine::Native {
        anyhow::bail!("{} selects a compatibility-mode engine; creating a replica from its backups needs that tool", args.envdir.display());
    }
    let settings = Settings::from_envdir(&args.envdir)?;
    runtime()?.block_on(async {
        let store = Store::new(settings).await;
        let all = catalog::list(&store).await?;
        let latest = catalog::choose(
            &all,
            &Target::Latest,
            &format!(
                "s3://{}/{}",
                store.settings().bucket,
                store.settings().prefix
            ),
        )?
        .clone();
        if let Some(conn) = args
            .patroni
            .connstring
            .as_deref()
            .filter(|_| args.no_leader.is_none())
        {
            refuse_if_too_far_behind(conn, &latest, &args).await?;
        }
        restore::restore(&store, &latest, &args.patroni.datadir).await?;
        println!("replica data restored from {}", latest.name);
        Ok(ExitCode::SUCCESS)
    })
}

/// Spilo's thresholds: replaying more WAL than `threshold_megabytes`, or more than
/// `threshold_backup_size_percentage` of the cluster size, is slower than copying from the leader, so
/// the method declines (Patroni then tries the next one, pg_basebackup).
async fn refuse_if_too_far_behind(
    connstring: &str,
    backup: &Manifest,
    args: &ReplicaArgs,
) -> anyhow::Result<()> {
    let (client, conn) = connstring
        .parse::<tokio_postgres::Config>()?
        .connect(NoTls)
        .await
        .context("connecting to the leader")?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
                    ELSE pg_current_wal_lsn() END::text, (SELECT sum(pg_database_size(oid))::bigint FROM pg_database)",
            &[],
        )
        .await?;
    let current: catalog::Lsn = row
        .get::<_, String>(0)
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let size: i64 = row.get(1);
    let behind = current.0.saturating_sub(backup.start_lsn.0);
    let limit_mb = args.threshold_megabytes << 20;
    let limit_pct =
        (size.max(0) as u64).saturating_mul(args.threshold_backup_size_percentage) / 100;
    anyhow::ensure!(
        behind <= limit_mb && behind <= limit_pct,
        "backup {} is {behind} bytes of WAL behind the leader (limits: {limit_mb} bytes, {limit_pct} bytes = {}% of {size}); \
         use pg_basebackup instead",
        backup.name,
        args.threshold_backup_size_percentage
    );
    Ok(())
}

pub fn clone_with_basebackup(args: BasebackupCloneArgs) -> anyhow::Result<ExitCode> {
    let program = crate::local::Local::from_env()
        .map(|l| l.program("pg_basebackup"))
        .unwrap_or_else(|_| "pg_basebackup".into());
    let quote = |v: &str| {
        if v.chars().any(char::is_whitespace) || v.is_empty() {
            format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
        } else {
            v.to_string()
        }
    };
    let dsn = format!(
        "host={} port={} user={} dbname=postgres",
        quote(&args.host),
        quote(&args.port),
        quote(&args.user)
    );
    let status = std::process::Command::new(&program)
        .args(["--pgdata"])
        .arg(&args.datadir)
        .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"])
        .arg(format!("--dbname={dsn}"))
        .env_clear()
        .env("PGPASSFILE", &args.pgpass)
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        status.success(),
        "clone failed: pg_basebackup from {}:{} exited with {status}",
        args.host,
        args.port
    );
    runtime()?
        .block_on(clone::finish(&args.datadir, Restored::Basebackup, false))
        .context("clone failed")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone(time: &str, lsn: Option<&str>, xid: Option<u64>) -> CloneArgs {
        CloneArgs {
            envdir: "/e".into(),
            recovery_target_time: time.into(),
            recovery_target_lsn: lsn.map(str::to_string),
            recovery_target_xid: xid,
            recovery_target_timeline: "latest".into(),
            recovery_target_inclusive: true,
            restore_command: None,
            recovery_by_patroni: false,
            scope: None,
            datadir: "/d".into(),
        }
    }

    #[test]
    fn one_target_kind_at_most() {
        assert_eq!(target(&clone("", None, None)).unwrap(), Target::Latest);
        assert!(matches!(
            target(&clone("2026-11-21 06:00:00+00", None, None)).unwrap(),
            Target::Time(_)
        ));
        assert_eq!(
            target(&clone("", Some("0/3000000"), None)).unwrap(),
            Target::Lsn("0/3000000".parse().unwrap())
        );
        assert_eq!(
            target(&clone("", None, Some(742))).unwrap(),
            Target::Xid(742)
        );
        assert!(target(&clone("2026-11-21 06:00:00+00", Some("0/1"), None))
            .unwrap_err()
            .to_string()
            .contains("only one"));
        assert!(target(&clone("2026-11-21 06:00:00", None, None))
            .unwrap_err()
            .to_string()
            .starts_with("CLONE_TARGET_TIME: "));
    }

    #[test]
    fn version_less_prefixes() {
        assert!(versionless("spilo/src/uid/wal/"));
        assert!(versionless("spilo/src/wal"));
        assert!(!versionless("spilo/src/uid/wal/15"));
    }
}
