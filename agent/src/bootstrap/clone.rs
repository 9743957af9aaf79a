//! The end of a clone, run by the clone commands inside Patroni's bootstrap: replay WAL to the target with
//! a private server, and when the source ran an older major, upgrade the promoted result with
//! `pg_upgrade --link` (Spilo's `maybe_pg_upgrade.py`).
//!
//! Spilo let Patroni write the recovery configuration and, on an upgrade, left the new server running for
//! Patroni to adopt. Here the data directory is handed back promoted and cleanly shut down, so Patroni
//! starts it as a fresh primary with its own configuration, and a recovery that cannot reach its target
//! fails the clone with PostgreSQL's own reason instead of a bootstrap that never ends.

use std::path::Path;

use crate::backup::catalog::Lsn;
use crate::backup::continuity;
use crate::configure::version::{bin_dir_for, Major};
use crate::local::Local;
use crate::process::RunAs;
use crate::upgrade::checks;
use crate::upgrade::pg::{self, ClusterSettings, Pg};

use super::private::{PrivateDir, PrivateServer, Recovery};

/// Why a clone could not be finished; each names what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read PostgreSQL's configuration: {0}")]
    Config(String),
    #[error("the restored data directory {0} has no readable PG_VERSION")]
    NoVersion(String),
    #[error("the backup is from PostgreSQL {from}, newer than the configured {to}; clone into a cluster of version {from} or newer")]
    Newer { from: String, to: String },
    #[error("the backup is from PostgreSQL {version}, whose binaries are not installed ({missing}); install them or map the version in PGHERD_PG_BIN_DIRS")]
    Binaries { version: String, missing: String },
    #[error("the backup is from PostgreSQL {0}; clones of backups older than PostgreSQL 12 are not supported")]
    TooOld(String),
    #[error("USE_PAUSE_AT_RECOVERY_TARGET cannot be used when the backup is from PostgreSQL {from} and the cluster runs {to}: the upgrade needs a promoted server")]
    PauseAcrossMajors { from: String, to: String },
    #[error(
        "the replay ended at {reached}, before {must} where the archive's newest segment on the restored \
         timeline starts: a WAL file in between could not be fetched or replayed (see the messages above); \
         the clone is not handed to Patroni"
    )]
    ShortReplay { reached: Lsn, must: Lsn },
    #[error("{phase}: {message}")]
    Step {
        phase: &'static str,
        message: String,
    },
}

fn step<E: Into<String>>(phase: &'static str) -> impl Fn(E) -> Error {
    move |message| Error::Step {
        phase,
        message: message.into(),
    }
}

/// How the data directory got here, which decides what is left to do.
#[derive(Debug, Clone)]
pub enum Restored {
    /// From a base backup: replay archived WAL to the target (unless Patroni is to do it, see
    /// `recovered_by_patroni`).
    Backup(Recovery),
    /// Copied from a running cluster with its WAL (`pg_basebackup -X stream`): crash recovery suffices.
    Basebackup,
}

/// Brings a restored `data` directory to a promoted, cleanly stopped cluster of the configured major.
/// `recovered_by_patroni`: Patroni will run the recovery itself (`USE_PAUSE_AT_RECOVERY_TARGET`, or a
/// user-supplied `recovery_conf`), which only works within one major.
pub async fn finish(
    data: &Path,
    restored: Restored,
    recovered_by_patroni: bool,
) -> Result<(), Error> {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let mut local = Local::from_env().map_err(|e| Error::Config(e.to_string()))?;
    local.data_dir = data.to_path_buf();
    let new_bin = local
        .bin_dir
        .clone()
        .ok_or_else(|| Error::Config("postgresql.bin_dir is not set".into()))?;
    let to = checks::postgres_major(&new_bin.join("postgres"))
        .ok_or_else(|| Error::Config(format!("{}/postgres does not run", new_bin.display())))?;
    let from =
        pg::data_version(data).ok_or_else(|| Error::NoVersion(data.display().to_string()))?;
    let (from_major, to_major) = match (Major::parse(&from), Major::parse(&to)) {
        (Some(f), Some(t)) => (f, t),
        _ => return Err(Error::NoVersion(data.display().to_string())),
    };
    if from_major > to_major {
        return Err(Error::Newer { from, to });
    }
    if from_major < Major::parse("12").expect("a major") {
        // recovery.conf (before 12) is not written here; Spilo images of that age still have Spilo's clone.
        return Err(Error::TooOld(from));
    }
    let upgrade = from_major < to_major;
    if upgrade && recovered_by_patroni {
        return Err(Error::PauseAcrossMajors { from, to });
    }
    let old_bin = if upgrade {
        bin_dir_for(&env, &from_major)
    } else {
        new_bin.clone()
    };
    let mut required: Vec<(&str, &Path)> =
        vec![("postgres", &old_bin), ("pg_controldata", &old_bin)];
    if upgrade {
        required.extend(
            checks::TARGET_PROGRAMS
                .iter()
                .map(|p| (*p, new_bin.as_path())),
        );
    }
    let missing: Vec<String> = required
        .iter()
        .filter(|(p, bin)| !bin.join(p).is_file())
        .map(|(p, bin)| bin.join(p).display().to_string())
        .collect();
    if !missing.is_empty() {
        let version = if upgrade && !old_bin.join("postgres").is_file() {
            from.clone()
        } else {
            to.clone()
        };
        return Err(Error::Binaries {
            version,
            missing: missing.join(", "),
        });
    }
    let recovery = match restored {
        Restored::Backup(r) if !recovered_by_patroni => Some(r),
        Restored::Backup(_) => return Ok(()),
        // Patroni's start does the crash recovery; only an upgrade needs the server up before.
        Restored::Basebackup if !upgrade => return Ok(()),
        Restored::Basebackup => None,
    };
    let pg = Pg {
        run_as: RunAs::postgres_if_root().map_err(|e| Error::Config(e.to_string()))?,
        local,
        old_bin: old_bin.clone(),
        new_bin,
    };
    let dir = PrivateDir::new(&pg).map_err(step("preparing the private server"))?;

    let what = if recovery.is_some() {
        "replaying archived WAL to the clone target"
    } else {
        "recovering the copied cluster"
    };
    tracing::info!(version = %from, "{what}");
    let mut server =
        PrivateServer::start(&pg, &old_bin, &dir, recovery.as_ref()).map_err(step(what))?;
    let client = server.wait_ready(what).await.map_err(step(what))?;
    if let Some(must) = recovery.as_ref().and_then(|r| r.must_reach) {
        let reached = replay_end(&client, data).await.map_err(step(what))?;
        if reached < must {
            drop(client);
            let _ = server.stop();
            return Err(Error::ShortReplay { reached, must });
        }
    }
    if !upgrade {
        drop(client);
        server.stop().map_err(step("stopping after recovery"))?;
        archive_history(data).map_err(step("marking the new timeline for archiving"))?;
        tracing::info!("clone recovered and promoted; Patroni starts it");
        return Ok(());
    }
    let settings = ClusterSettings::read(&client)
        .await
        .map_err(step("reading the cluster's settings"))?;
    drop(client);
    server.stop().map_err(step("stopping after recovery"))?;
    upgrade_stopped(pg, &dir, &settings, &from, &to).await
}

/// pg_upgrade of the recovered, stopped clone, then statistics and extension updates on the new major.
async fn upgrade_stopped(
    mut pg: Pg,
    dir: &PrivateDir,
    settings: &ClusterSettings,
    from: &str,
    to: &str,
) -> Result<(), Error> {
    pg.local.superuser = settings.superuser.clone();
    tracing::info!("upgrading the clone from PostgreSQL {from} to {to} (pg_upgrade --link)");
    // What an earlier attempt of this bootstrap may have left (Patroni retries with a fresh copy).
    pg.stop_leftovers_of_pg_upgrade();
    pg.remove_dir(&pg.old_data())
        .map_err(step("removing an earlier attempt's directory"))?;
    // ALTER SYSTEM settings belong to the cluster, as they would in a clone within one major.
    let altered =
        std::fs::read_to_string(pg.data().join("postgresql.auto.conf")).unwrap_or_default();
    let result = async {
        pg.init_new_cluster(settings)
            .map_err(step("initdb of the new major"))?;
        pg.pg_upgrade(false, &dir.isolation_options())
            .await
            .map_err(step("pg_upgrade"))?;
        pg::rename(pg.data(), &pg.old_data()).map_err(step("switching data directories"))?;
        pg::rename(&pg.new_data(), pg.data()).map_err(step("switching data directories"))?;
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = result {
        let _ = pg.remove_dir(&pg.new_data());
        let _ = pg.remove_dir(&pg.work_dir());
        return Err(e);
    }
    // Link mode: the old directory shares the files and can never be started again.
    pg.remove_dir(&pg.old_data())
        .map_err(step("removing the old data directory"))?;
    pg.remove_dir(&pg.work_dir())
        .map_err(step("removing pg_upgrade's work directory"))?;

    let new_bin = pg.new_bin.clone();
    let what = "starting the new major privately";
    let mut server = PrivateServer::start(&pg, &new_bin, dir, None).map_err(step(what))?;
    drop(server.wait_ready(what).await.map_err(step(what))?);
    for warning in reapply_altered_settings(&server.pg, &altered, to).await {
        tracing::warn!("{warning}");
    }
    tracing::info!("updating extensions and collecting statistics on PostgreSQL {to}");
    for warning in server
        .pg
        .update_extensions()
        .await
        .map_err(step("updating extensions"))?
    {
        tracing::warn!("{warning}");
    }
    // Nobody queries the clone before it is handed to Patroni: one full pass, in parallel.
    server
        .pg
        .analyze(false)
        .map_err(step("collecting statistics (vacuumdb --analyze-only)"))?;
    server.stop().map_err(step("stopping the new major"))?;
    tracing::info!("clone upgraded to PostgreSQL {to}; Patroni starts it");
    Ok(())
}

/// `name = 'value'` lines of a `postgresql.auto.conf`.
pub fn altered_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Re-applies the old cluster's ALTER SYSTEM settings that the new major still has (copying the file
/// would stop the server at the first removed setting, e.g. `wal_keep_segments`); returns what was left out.
async fn reapply_altered_settings(pg: &Pg, text: &str, to: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let c = match pg.connect("postgres").await {
        Ok(c) => c,
        Err(e) => return vec![format!("postgresql.auto.conf not carried over: {e}")],
    };
    for (name, value) in altered_settings(text) {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        // Extension settings (with a dot) are unknown until their library loads; try them anyway.
        let known = name.contains('.')
            || c.query_opt("SELECT 1 FROM pg_settings WHERE name = $1", &[&name])
                .await
                .is_ok_and(|r| r.is_some());
        if !plain || !known {
            warnings.push(format!(
                "ALTER SYSTEM setting {name} = {value} not carried over: PostgreSQL {to} has no such setting"
            ));
            continue;
        }
        if let Err(e) = c
            .batch_execute(&format!("ALTER SYSTEM SET {name} = {value}"))
            .await
        {
            warnings.push(format!(
                "ALTER SYSTEM setting {name} = {value} not carried over: {}",
                pg::db_error(&e)
            ));
        }
    }
    warnings
}

/// Where the replay ended: the switch point the promotion recorded in the new timeline's history file.
async fn replay_end(client: &tokio_postgres::Client, data: &Path) -> Result<Lsn, String> {
    // The checkpoint after a promotion is asynchronous, so the control file may still show the old
    // timeline; the current WAL file's name shows the new one.
    let tli: String = client
        .query_one(
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            &[],
        )
        .await
        .map_err(|e| pg::db_error(&e))?
        .get(0);
    let file = data.join(format!("pg_wal/{tli}.history"));
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("reading {} after promotion: {e}", file.display()))?;
    continuity::parse_history(&text)?
        .last()
        .map(|f| f.switchpoint)
        .ok_or_else(|| format!("{} records no switch point", file.display()))
}

/// Promotion wrote a timeline history file, but with archiving off nobody marked it: mark it so the
/// cluster's archiver stores it with its first WAL.
fn archive_history(data: &Path) -> std::result::Result<(), String> {
    let wal = data.join("pg_wal");
    let status = wal.join("archive_status");
    let entries = std::fs::read_dir(&wal).map_err(|e| format!("reading {}: {e}", wal.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".history") {
            continue;
        }
        let done = status.join(format!("{name}.done"));
        let ready = status.join(format!("{name}.ready"));
        if !done.exists() && !ready.exists() {
            std::fs::write(&ready, "").map_err(|e| format!("writing {}: {e}", ready.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_conf_lines() {
        let text = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n\
                    wal_keep_segments = '64'\nwork_mem = '8MB'\npg_stat_statements.track = 'all'\n";
        assert_eq!(
            altered_settings(text),
            [
                ("wal_keep_segments".to_string(), "'64'".to_string()),
                ("work_mem".into(), "'8MB'".into()),
                ("pg_stat_statements.track".into(), "'all'".into()),
            ]
        );
    }

    #[test]
    fn history_files_are_marked_once() {
        let d = tempfile::tempdir().unwrap();
        let status = d.path().join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap();
        std::fs::write(
            d.path().join("pg_wal/00000002.history"),
            "1\t0/3000000\tno reason\n",
        )
        .unwrap();
        std::fs::write(d.path().join("pg_wal/00000003.history"), "").unwrap();
        std::fs::write(status.join("00000003.history.done"), "").unwrap();
        std::fs::write(d.path().join("pg_wal/000000020000000000000003"), "").unwrap();
        archive_history(d.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&status)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["00000002.history.ready", "00000003.history.done"]);
    }
}
