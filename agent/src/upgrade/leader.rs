//! The leader's side: runs the phases of [`Phase`] in order, publishes each in the DCS and the status
//! file, rolls back on any failure before the point of no return and records where to resume after it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::member::Member;
use super::pg::{self, Pg};
use super::plan::{Instruction, Outcome, Phase, ReplicaState, RsyncSource, Runner};
use super::status::StatusFile;
use super::StepResult;
use super::{dcs, failpoint, rsync, Error};

pub struct Leader {
    pub pg: Pg,
    pub member: Member,
    pub env: BTreeMap<String, String>,
    pub status: StatusFile,
    pub instr: Instruction,
    pub expected_members: usize,
    pub rsyncd: Option<rsync::Daemon>,
    /// Set once Postgres on the leader was stopped (a rollback must start it again).
    stopped: bool,
}

impl Leader {
    pub fn new(
        pg: Pg,
        member: Member,
        env: BTreeMap<String, String>,
        status: StatusFile,
        instr: Instruction,
        expected_members: usize,
    ) -> Self {
        Self {
            pg,
            member,
            env,
            status,
            instr,
            expected_members,
            rsyncd: None,
            stopped: false,
        }
    }

    /// Marks this process as the one driving the instruction (see [`super::plan::orphaned`]).
    pub fn claim(&mut self) {
        self.instr.runner = Some(Runner {
            pid: std::process::id(),
            members: self.expected_members,
        });
        self.status.status.runner = self.instr.runner.clone();
    }

    /// Undoes an attempt whose process died before the point of no return: servers pg_upgrade left
    /// running are stopped, the directories switched back, the old primary started, Patroni resumed.
    pub async fn recover_interrupted(&mut self, why: &str) -> std::result::Result<(), Error> {
        self.claim();
        dcs::publish(&self.member.api, &self.instr)
            .await
            .map_err(Error::Setup)?;
        self.pg.stop_leftovers_of_pg_upgrade();
        self.stopped = true;
        let phase = self.instr.phase;
        self.rollback(why)
            .await
            .map_err(|rollback| Error::RollbackFailed {
                phase,
                message: why.to_string(),
                rollback,
            })?;
        tracing::info!(%phase, "interrupted upgrade rolled back; PostgreSQL {} is running again", self.instr.from);
        Ok(())
    }

    async fn enter(&mut self, phase: Phase, message: &str) -> StepResult<()> {
        self.instr.phase = phase;
        self.status.phase(phase, message);
        dcs::publish(&self.member.api, &self.instr).await?;
        failpoint::reached(phase.name());
        Ok(())
    }

    /// A run from the beginning: pre-checks (nothing changes if they fail), then the reversible part, then
    /// the point of no return and the rest.
    pub async fn fresh(&mut self) -> std::result::Result<(), Error> {
        self.status.phase(
            Phase::Precheck,
            format!(
                "checking the cluster for an upgrade from {} to {}",
                self.instr.from, self.instr.to
            ),
        );
        let facts = super::checks::gather(
            &self.pg,
            &self.member.api,
            &self.member.name,
            self.expected_members,
            &self.instr.to,
        )
        .await;
        let mut problems = super::checks::evaluate(&facts);
        if problems.is_empty() {
            self.instr.replicas = facts
                .cluster
                .iter()
                .flat_map(|c| &c.members)
                .filter(|m| m.name != self.member.name)
                .map(|m| m.name.clone())
                .collect();
            if let Err(e) = self.prepare_new_cluster().await {
                problems.push(e);
            }
        }
        if !problems.is_empty() {
            let _ = self.pg.remove_dir(&self.pg.new_data());
            let _ = self.pg.remove_dir(&self.pg.work_dir());
            let message = format!(
                "pre-check failed, nothing was changed: {}",
                problems.join("; ")
            );
            self.status.finish(Outcome::PrecheckFailed, &message);
            return Err(Error::Precheck(problems.join("; ")));
        }
        dcs::replace(&self.member.api, &self.instr)
            .await
            .map_err(|e| self.precheck_failed(e))?;
        match self.reversible().await {
            Ok(()) => self.forward(Phase::StartPrimary).await,
            Err(e) => {
                let phase = self.instr.phase;
                match self.rollback(&e).await {
                    Ok(()) => Err(Error::RolledBack {
                        phase,
                        from: self.instr.from.clone(),
                        message: e,
                    }),
                    Err(r) => Err(Error::RollbackFailed {
                        phase,
                        message: e,
                        rollback: r,
                    }),
                }
            }
        }
    }

    fn precheck_failed(&mut self, e: String) -> Error {
        let _ = self.pg.remove_dir(&self.pg.new_data());
        self.status.finish(
            Outcome::PrecheckFailed,
            format!("pre-check failed, nothing was changed: {e}"),
        );
        Error::Precheck(e)
    }

    /// initdb of the new cluster with the old one's locale, encoding, checksums and WAL segment size, then
    /// `pg_upgrade --check` against the running old server. The only files written are `<data>_new`.
    async fn prepare_new_cluster(&mut self) -> StepResult<()> {
        let c = self.pg.connect("postgres").await?;
        let settings = pg::ClusterSettings::read(&c).await?;
        self.pg.local.superuser = settings.superuser.clone();
        self.pg.init_new_cluster(&settings)?;
        self.pg
            .pg_upgrade(true, "")
            .await
            .map_err(|e| format!("pg_upgrade --check failed: {e}"))
    }

    /// Everything up to the point of no return; any error is rolled back by the caller.
    async fn reversible(&mut self) -> StepResult<()> {
        self.enter(Phase::Pause, "pausing Patroni (maintenance mode)")
            .await?;
        dcs::set_pause(&self.member.api, true).await?;
        self.wait_members_paused(Duration::from_secs(60)).await?;

        self.enter(
            Phase::StopPrimary,
            "stopping the primary cleanly (downtime starts)",
        )
        .await?;
        if let Ok(c) = self.pg.connect("postgres").await {
            let _ = c.batch_execute("CHECKPOINT").await;
        }
        self.stopped = true;
        self.pg
            .stop(&self.pg.old_bin, self.pg.data(), Duration::from_secs(600))?;
        let cd = self.pg.controldata(&self.pg.old_bin, self.pg.data())?;
        let state = cd
            .get("Database cluster state")
            .cloned()
            .unwrap_or_default();
        if state != "shut down" {
            return Err(format!(
                "the primary is not shut down cleanly (pg_controldata: {state:?})"
            ));
        }
        self.instr.checkpoint_lsn = cd.get("Latest checkpoint location").cloned();
        self.instr.old_sysid = cd.get("Database system identifier").cloned();

        self.enter(
            Phase::StopReplicas,
            "replicas replay up to the shutdown checkpoint and stop",
        )
        .await?;
        self.enter(Phase::PgUpgrade, "running pg_upgrade --link on the primary")
            .await?;
        self.pg.pg_upgrade(false, "").await?;
        failpoint::reached(failpoint::PG_UPGRADE_LINKED);
        let deadline = Duration::from_secs(180);
        let waiting = self
            .wait_reports(&[ReplicaState::Stopped, ReplicaState::StopFailed], deadline)
            .await?;
        if !waiting.is_empty() {
            self.status.warn(format!(
                "replicas {} did not stop in time; they will be re-cloned",
                waiting.join(", ")
            ));
        }

        pg::rename(self.pg.data(), &self.pg.old_data())?;
        pg::rename(&self.pg.new_data(), self.pg.data())?;
        for (name, report) in &self.instr.members {
            if report.state == ReplicaState::StopFailed {
                let why = report.error.clone().unwrap_or_default();
                self.status.warn(format!(
                    "replica {name} could not stop at the checkpoint ({why}); it will be re-cloned"
                ));
            }
        }
        let syncing: Vec<String> = self
            .instr
            .replicas
            .iter()
            .filter(|r| self.instr.report(r) == Some(ReplicaState::Stopped))
            .cloned()
            .collect();
        if !syncing.is_empty() {
            let hosts = self.replica_hosts().await;
            self.rsyncd = Some(rsync::Daemon::start(
                &self.pg,
                &self.member,
                &self.status_dir(),
                &hosts,
            )?);
            let host = self.member_host().await?;
            self.instr.rsync = Some(RsyncSource {
                host,
                port: self.pg.local.port,
                data_name: self.pg.data_name(),
            });
            self.enter(
                Phase::SyncReplicas,
                &format!(
                    "replicas {} copy the new cluster with rsync (hard links)",
                    syncing.join(", ")
                ),
            )
            .await?;
            // Changed files only (catalogs, visibility maps …); the rest becomes hard links.
            let budget = Duration::from_secs(
                300 + super::checks::dir_size(&self.pg.old_data()) / (20 << 20),
            );
            self.wait_reports(&[ReplicaState::Synced, ReplicaState::SyncFailed], budget)
                .await?;
            failpoint::reached(failpoint::REPLICAS_SYNCED);
            if let Some(d) = self.rsyncd.take() {
                d.stop();
            }
            for r in &syncing {
                if self.instr.report(r) != Some(ReplicaState::Synced) {
                    let why = self
                        .instr
                        .members
                        .get(r)
                        .and_then(|m| m.error.clone())
                        .unwrap_or("no report".into());
                    self.status.warn(format!(
                        "replica {r} could not be synced ({why}); it will be re-cloned"
                    ));
                }
            }
        }
        Ok(())
    }

    /// From `from` to the end. Errors here leave the cluster resumable: the phase is recorded and a new run
    /// continues from it.
    pub async fn forward(&mut self, from: Phase) -> std::result::Result<(), Error> {
        match self.forward_inner(from).await {
            Ok(()) => Ok(()),
            Err(message) => {
                let phase = self.instr.phase;
                self.instr.outcome = Some(Outcome::Interrupted);
                self.instr.message = Some(message.clone());
                let _ = dcs::publish(&self.member.api, &self.instr).await;
                self.status.finish(
                    Outcome::Interrupted,
                    format!("{phase} failed after the point of no return: {message}"),
                );
                Err(Error::Interrupted { phase, message })
            }
        }
    }

    async fn forward_inner(&mut self, from: Phase) -> StepResult<()> {
        self.instr.outcome = None;
        self.instr.message = None;
        if from <= Phase::StartPrimary {
            self.enter(
                Phase::StartPrimary,
                &format!(
                    "point of no return: starting PostgreSQL {} on the primary",
                    self.instr.to
                ),
            )
            .await?;
            self.start_new_primary().await?;
        }
        if from <= Phase::RestartReplicas {
            self.enter(
                Phase::RestartReplicas,
                "replicas restart Patroni on the new major",
            )
            .await?;
            let waiting = self
                .wait_reports(
                    &[ReplicaState::Restarted, ReplicaState::Recloning],
                    Duration::from_secs(180),
                )
                .await?;
            if !waiting.is_empty() {
                self.status.warn(format!(
                    "replicas {} did not report; they act when their agent sees the instruction",
                    waiting.join(", ")
                ));
            }
        }
        if from <= Phase::Resume {
            self.enter(Phase::Resume, "leaving maintenance mode")
                .await?;
            self.ensure_new_sysid_recorded().await?;
            dcs::set_pause(&self.member.api, false).await?;
            self.wait_replicas_streaming(Duration::from_secs(300)).await;
        }
        if from <= Phase::Analyze {
            self.enter(
                Phase::Analyze,
                "vacuumdb --analyze-in-stages on every database",
            )
            .await?;
            if let Err(e) = self.pg.analyze(true) {
                self.status.warn(e);
            }
        }
        if from <= Phase::UpdateExtensions {
            self.enter(
                Phase::UpdateExtensions,
                "updating extensions to the versions of the new major",
            )
            .await?;
            for warning in self.pg.update_extensions().await? {
                self.status.warn(warning);
            }
        }
        if from <= Phase::Backup {
            self.enter(Phase::Backup, "taking a base backup on the new major")
                .await?;
            let result = match super::backup::push(&self.pg, &self.env, &self.member.config_path) {
                Ok(pushed) => pushed.to_string(),
                Err(e) => {
                    self.status.warn(format!("new base backup: {e}"));
                    e.to_string()
                }
            };
            self.status.status.backup = Some(result);
        }
        if from <= Phase::Cleanup {
            self.enter(Phase::Cleanup, "removing the old data directory")
                .await?;
            self.pg.remove_dir(&self.pg.old_data())?;
            self.pg.remove_dir(&self.pg.work_dir())?;
        }
        self.instr.outcome = Some(Outcome::Succeeded);
        self.enter(
            Phase::Done,
            &format!("upgraded to PostgreSQL {}", self.instr.to),
        )
        .await?;
        let message = format!("upgrade from {} to {} done", self.instr.from, self.instr.to);
        self.status.finish(Outcome::Succeeded, message);
        Ok(())
    }

    /// Until the DCS `initialize` key holds the new system identifier, replicas restarted on the new data
    /// refuse to run ("belongs to a different cluster"). The old Patroni, still running with the old
    /// identifier cached, can write the old value back between the reset and its own restart, and a run
    /// resumed after the point of no return never passed the reset: so reset again until the new primary
    /// has recorded its identifier.
    async fn ensure_new_sysid_recorded(&mut self) -> StepResult<()> {
        let Some(old) = self.instr.old_sysid.clone() else {
            return Ok(());
        };
        let program = crate::supervise::patroni::program(&self.env);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let new = self
                .member
                .api
                .status()
                .await
                .ok()
                .and_then(|s| s.database_system_identifier);
            let said = dcs::cancel_initialization(
                &program,
                &self.member.config_path,
                &old,
                self.pg.run_as,
            )?;
            match (&new, said.strip_prefix("kept ")) {
                (Some(new), Some(kept)) if kept == new => return Ok(()),
                _ => tracing::info!(
                    ?new,
                    "waiting for the new system identifier in the DCS ({said})"
                ),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the DCS initialize key does not hold the new system identifier {new:?} ({said})"
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn start_new_primary(&mut self) -> StepResult<()> {
        let pkglib = self.pg.new_config("pkglibdir").ok().map(PathBuf::from);
        self.member
            .switch_config(&self.pg.new_bin, pkglib.as_deref())?;
        let envdir = super::walprefix::envdir(&self.env);
        let changed = super::walprefix::switch(&envdir, &self.instr.from, &self.instr.to)?;
        if !changed.is_empty() {
            tracing::info!(?changed, "WAL storage prefixes now name {}", self.instr.to);
        }
        if let Some(old) = self.instr.old_sysid.clone() {
            let program = crate::supervise::patroni::program(&self.env);
            let said = dcs::cancel_initialization(
                &program,
                &self.member.config_path,
                &old,
                self.pg.run_as,
            )?;
            tracing::info!("DCS initialize key: {said}");
        }
        self.member
            .restart_patroni(Duration::from_secs(120))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last;
        loop {
            match self.member.api.status().await {
                Ok(s)
                    if s.state == "running"
                        && pgherd_shared::patroni::Role::of(&s.role).is_primary() =>
                {
                    break
                }
                Ok(s) if s.state == "starting" || s.state == "running" => {
                    last = format!("state {} role {}", s.state, s.role)
                }
                Ok(s) => {
                    last = format!("state {}", s.state);
                    if let Err(e) = self.member.api.restart().await {
                        last = e.to_string();
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL {} did not start on the primary: {last}",
                    self.instr.to
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        // Holding the leader lock again is what lets Patroni write the new system identifier.
        let me = self.member.name.clone();
        wait_until(
            Duration::from_secs(120),
            "the primary to hold the leader lock",
            || async {
                Ok(self
                    .member
                    .api
                    .cluster()
                    .await
                    .ok()
                    .and_then(|c| c.leader().map(|l| l.name == me))
                    .unwrap_or(false))
            },
        )
        .await
    }

    /// Undo everything before the point of no return and bring the old major back.
    async fn rollback(&mut self, why: &str) -> StepResult<()> {
        tracing::error!("rolling back: {why}");
        if let Some(d) = self.rsyncd.take() {
            d.stop();
        }
        let (data, old, new) = (
            self.pg.data().to_path_buf(),
            self.pg.old_data(),
            self.pg.new_data(),
        );
        if old.exists() {
            if pg::data_version(&data).as_deref() == Some(self.instr.from.as_str()) {
                return Err(format!(
                    "both {} and {} hold PostgreSQL {}; keep the current one and move the other aside",
                    data.display(),
                    old.display(),
                    self.instr.from
                ));
            }
            self.pg.remove_dir(&data)?;
            pg::rename(&old, &data)?;
        }
        self.pg.remove_dir(&new)?;
        let control = data.join("global/pg_control");
        let renamed = data.join("global/pg_control.old");
        if renamed.exists() && !control.exists() {
            pg::rename(&renamed, &control)?;
        }
        self.pg.remove_dir(&self.pg.work_dir())?;
        self.instr.outcome = Some(Outcome::RolledBack);
        self.instr.message = Some(why.to_string());
        self.status.phase(
            self.instr.phase,
            format!("rolling back to PostgreSQL {}: {why}", self.instr.from),
        );
        dcs::publish(&self.member.api, &self.instr).await?;
        if self.stopped {
            wait_until(
                Duration::from_secs(120),
                "the old primary to start",
                || async {
                    match self.member.api.status().await {
                        Ok(s)
                            if s.state == "running"
                                && pgherd_shared::patroni::Role::of(&s.role).is_primary() =>
                        {
                            Ok(true)
                        }
                        Ok(s) if s.state != "starting" => {
                            let _ = self.member.api.restart().await;
                            Ok(false)
                        }
                        _ => Ok(false),
                    }
                },
            )
            .await?;
        }
        let told: Vec<String> = self.instr.members.keys().cloned().collect();
        if !told.is_empty() {
            let _ = self
                .wait_reports(
                    &[ReplicaState::RolledBack, ReplicaState::Recloning],
                    Duration::from_secs(120),
                )
                .await;
        }
        dcs::set_pause(&self.member.api, false).await?;
        self.wait_replicas_streaming(Duration::from_secs(180)).await;
        self.status.finish(
            Outcome::RolledBack,
            format!("rolled back to PostgreSQL {}: {why}", self.instr.from),
        );
        Ok(())
    }

    /// Waits until every replica reported one of `states`, refreshing the instruction; returns those that
    /// did not in time.
    async fn wait_reports(
        &mut self,
        states: &[ReplicaState],
        timeout: Duration,
    ) -> StepResult<Vec<String>> {
        let all = self.instr.replicas.clone();
        self.wait_reports_of(&all, states, timeout).await
    }

    /// Waits until each of `names` reported one of `states`, refreshing the instruction; returns those that
    /// did not in time.
    async fn wait_reports_of(
        &mut self,
        names: &[String],
        states: &[ReplicaState],
        timeout: Duration,
    ) -> StepResult<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(current)) = dcs::read(&self.member.api).await {
                self.instr.members = current.members;
            }
            let waiting: Vec<String> = names
                .iter()
                .filter(|r| !self.instr.report(r).is_some_and(|s| states.contains(&s)))
                .cloned()
                .collect();
            if waiting.is_empty() || Instant::now() > deadline {
                self.status.status.replicas = self.instr.members.clone();
                self.status.write();
                return Ok(waiting);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn wait_members_paused(&self, timeout: Duration) -> StepResult<()> {
        wait_until(timeout, "every member to see the pause", || async {
            let c = self.member.api.cluster().await.map_err(|e| e.to_string())?;
            for m in &c.members {
                let Some(url) = &m.api_url else {
                    return Ok(false);
                };
                let base = url.trim_end_matches("/patroni");
                match pgherd_shared::patroni::Client::new(base).status().await {
                    Ok(s) if s.pause => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        })
        .await
    }

    /// Best effort: a replica still re-cloning is reported, not waited for forever.
    async fn wait_replicas_streaming(&mut self, timeout: Duration) {
        let want = self.instr.replicas.len();
        let r = wait_until(timeout, "replicas to stream", || async {
            let c = self.member.api.cluster().await.map_err(|e| e.to_string())?;
            Ok(c.streaming_replicas().count() >= want)
        })
        .await;
        if let Err(e) = r {
            self.status.warn(e);
        }
    }

    async fn replica_hosts(&self) -> Vec<String> {
        let c = self.member.api.cluster().await.ok();
        c.iter()
            .flat_map(|c| &c.members)
            .filter(|m| m.name != self.member.name)
            .filter_map(|m| m.host.clone())
            .collect()
    }

    async fn member_host(&self) -> StepResult<String> {
        let c = self.member.api.cluster().await.map_err(|e| e.to_string())?;
        c.members
            .iter()
            .find(|m| m.name == self.member.name)
            .and_then(|m| m.host.clone())
            .ok_or_else(|| "the leader has no host in /cluster".into())
    }

    fn status_dir(&self) -> PathBuf {
        self.status
            .path()
            .parent()
            .map(|p| p.join("rsync"))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
    }
}

/// Polls `check` until it says true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> StepResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StepResult<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e})"),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}{last}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
