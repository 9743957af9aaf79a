//! Scheduled base backups inside `pgherd-agent run`, replacing Spilo's cron job and its boot-time backup.
//!
//! Spilo ran `postgres_backup.sh` from cron on every member (replicas skipped after a psql round trip),
//! ignored the backup's exit status, ran retention even after a failed backup, and mailed output to an MTA
//! the image did not have. Here the job runs only where it should (the leader, or replicas with
//! `WALG_BACKUP_FROM_REPLICA=true`), logs its outcome, and applies retention only after a successful backup.
//! A new leader with no backup at all takes one right away, so a fresh cluster is restorable from the start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;

use super::compat;
use super::store::Store;
use super::{catalog, prune};
use crate::configure::engine::Engine;
use crate::configure::schedule::{parse_cron, BackupJob};
use crate::local::Local;

/// Whether this member should take the scheduled backup. Pure.
pub fn should_run(role: &str, from_replica: bool) -> bool {
    let role = pgherd_shared::patroni::Role::of(role);
    if from_replica {
        role.is_replica()
    } else {
        role.is_primary()
    }
}

struct Job {
    job: BackupJob,
    /// The rendered Patroni configuration, for the `backup push` child.
    config: PathBuf,
    local: Local,
    member: String,
    engine: Engine,
    from_replica: bool,
    vars: BTreeMap<String, Option<String>>,
}

/// Starts the scheduler on the current runtime when a backup job is configured.
pub fn spawn(
    job: Option<&BackupJob>,
    config: &std::path::Path,
    local: &Local,
    env: &BTreeMap<String, String>,
) {
    let Some(job) = job.cloned() else { return };
    let vars = match crate::envdir::read(&job.env_dir) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("backup scheduler disabled: {e:#}");
            return;
        }
    };
    let engine = Engine::for_backup(&vars);
    let from_replica = vars
        .get("WALG_BACKUP_FROM_REPLICA")
        .cloned()
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let schedule = match parse_cron("BACKUP_SCHEDULE", &job.schedule) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("backup scheduler disabled: {e}");
            return;
        }
    };
    let member = env.get("HOSTNAME").cloned().unwrap_or_default();
    let job = Job {
        job,
        config: config.to_path_buf(),
        local: local.clone(),
        member,
        engine,
        from_replica,
        vars,
    };
    tokio::spawn(async move {
        job.first_backup_when_leader().await;
        for next in schedule.upcoming(Utc) {
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            if job.eligible().await {
                job.run().await;
            }
        }
    });
}

impl Job {
    async fn role(&self) -> Option<String> {
        let api = self.local.api_url.as_ref()?;
        pgherd_shared::patroni::Client::new(api.clone())
            .status()
            .await
            .ok()
            .map(|s| s.role)
    }

    async fn eligible(&self) -> bool {
        match self.role().await {
            Some(role) => should_run(&role, self.from_replica),
            None => {
                tracing::warn!(
                    "scheduled backup skipped: the local Patroni REST API did not answer"
                );
                false
            }
        }
    }

    /// Waits until this member leads; then, with the native engine, backs up at once if there is no backup.
    async fn first_backup_when_leader(&self) {
        if self.engine != Engine::Native || self.from_replica {
            return;
        }
        loop {
            if self.eligible_quietly().await {
                match Store::from_envdir(&self.job.env_dir).await {
                    Ok(store) => match catalog::list(&store).await {
                        Ok(list) if list.is_empty() => {
                            tracing::info!("no base backup exists yet; taking the first one");
                            if self.run().await {
                                return;
                            }
                            // Without any backup the cluster is not restorable: retry soon, not next schedule.
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            continue;
                        }
                        Ok(list) => {
                            report_catalog(&list);
                            return;
                        }
                        Err(e) => tracing::warn!("listing backups failed (retrying): {e}"),
                    },
                    Err(e) => {
                        tracing::error!("backup storage unusable: {e:#}");
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
    }

    async fn eligible_quietly(&self) -> bool {
        self.role()
            .await
            .is_some_and(|r| should_run(&r, self.from_replica))
    }

    /// Runs one backup (and retention after success); returns whether the backup succeeded.
    async fn run(&self) -> bool {
        let started = std::time::Instant::now();
        let result = match self.engine {
            Engine::Native => self.native().await,
            compat => self.compat(compat).await,
        };
        match result {
            Ok(summary) => {
                tracing::info!(
                    took_s = started.elapsed().as_secs(),
                    "scheduled backup done: {summary}"
                );
                true
            }
            Err(e) => {
                crate::metrics::backup().backup_failed();
                tracing::error!(
                    took_s = started.elapsed().as_secs(),
                    "scheduled backup failed (retention skipped): {e:#}"
                );
                false
            }
        }
    }

    /// The backup runs as a child `pgherd-agent backup push` (one process per backup: its memory is returned
    /// when it ends, and a crash cannot take the supervisor down), reporting its manifest as JSON.
    async fn native(&self) -> anyhow::Result<String> {
        let exe = std::env::current_exe()?;
        let mut args = vec![
            "backup".to_string(),
            "push".into(),
            "--retain".into(),
            "--json".into(),
        ];
        args.extend([
            "--envdir".to_string(),
            self.job.env_dir.display().to_string(),
        ]);
        if self.from_replica {
            args.push("--from-replica".into());
        }
        let env = [
            (
                crate::local::CONFIG_VAR.to_string(),
                self.config.display().to_string(),
            ),
            ("HOSTNAME".to_string(), self.member.clone()),
        ];
        let out = self
            .compat_run(&exe.display().to_string(), &args, &env)
            .await?;
        let m: catalog::Manifest = serde_json::from_slice(&out)
            .map_err(|e| anyhow::anyhow!("backup push printed no manifest: {e}"))?;
        crate::metrics::backup().backup_succeeded(
            m.finished_at.into(),
            m.size_bytes,
            m.stored_bytes,
        );
        self.refresh_catalog().await;
        Ok(format!(
            "{} ({} bytes, {} stored)",
            m.name, m.size_bytes, m.stored_bytes
        ))
    }

    /// WAL-G/WAL-E `backup-push` with the envdir's variables; retention stays Spilo's (`wal-g delete`) and
    /// runs only after a successful push.
    async fn compat(&self, engine: Engine) -> anyhow::Result<String> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let pgdata = self.job.pgdata.display().to_string();
        let (program, args, extra) = compat::backup_push(engine, &pgdata, &self.vars, cpus);
        self.compat_run(&program, &args, &extra).await?;
        if engine == Engine::WalG {
            let keep = prune::policy(&self.job.env_dir)?.keep_last;
            self.compat_run("wal-g", &compat::retention(keep), &[])
                .await?;
        }
        Ok(format!("{program} backup-push of {pgdata}"))
    }

    /// Publishes the catalog (count, oldest restorable point) to the metrics.
    async fn refresh_catalog(&self) {
        match Store::from_envdir(&self.job.env_dir).await {
            Ok(store) => match catalog::list(&store).await {
                Ok(list) => report_catalog(&list),
                Err(e) => tracing::warn!("listing backups for metrics failed: {e}"),
            },
            Err(e) => tracing::warn!("backup storage unusable: {e:#}"),
        }
    }

    /// Runs a child with the envdir's variables (and the local socket as PGHOST), logging its stderr;
    /// returns its stdout.
    async fn compat_run(
        &self,
        program: &str,
        args: &[String],
        extra: &[(String, String)],
    ) -> anyhow::Result<Vec<u8>> {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env("PGHOST", self.local.socket_dir())
            .env("PGPORT", self.local.port.to_string());
        for (k, v) in &self.vars {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.envs(extra.iter().cloned());
        let out = crate::process::children::output(cmd)
            .await
            .map_err(|e| anyhow::anyhow!("running {program}: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "backup", "{program}: {line}");
        }
        anyhow::ensure!(
            out.status.success(),
            "{program} {} exited with {}",
            args.join(" "),
            out.status
        );
        Ok(out.stdout)
    }
}

/// The oldest point a restore can reach is the end of the oldest complete backup.
fn report_catalog(list: &[catalog::Manifest]) {
    let oldest = list.iter().map(|m| m.finished_at).min().map(Into::into);
    crate::metrics::backup().catalog(list.len() as u64, oldest);
}

/// Path of the agent's socket for archive hand-off under RW_DIR.
pub fn socket_path(rw_dir: &std::path::Path) -> PathBuf {
    rw_dir.join("pgherd").join("agent.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_the_right_member() {
        assert!(should_run("primary", false) && should_run("master", false));
        assert!(!should_run("replica", false) && !should_run("standby_leader", false));
        assert!(should_run("replica", true) && should_run("sync_standby", true));
        assert!(!should_run("primary", true));
    }
}
