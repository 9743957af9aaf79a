//! The replica's side, run by every member's `pgherd-agent run` in a background thread: poll the local
//! Patroni for the leader's instruction and do this member's part (the leader cannot run commands in other
//! pods; Spilo reached them with `COPY … TO PROGRAM` as superuser). Each action is chosen by
//! [`plan::replica_action`] and reported back in the DCS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::dcs;
use super::member::{self, Member};
use super::pg::{self, Pg};
use super::plan::{self, Instruction, MemberReport, ReplicaAction, ReplicaState};
use super::status::StatusFile;
use super::StepResult;
use crate::configure::version::{bin_dir_for, Major};
use crate::process::RunAs;

/// Starts the watcher as a child process (`pgherd-agent upgrade-watch`). Not a thread: `run` reaps every
/// child of its own process as PID 1 must, which would steal the exit status of the commands the watcher
/// runs (pg_ctl, rsync …); a process of its own waits for its own children. It gets SIGTERM when the agent
/// dies and is stopped with the agent's other descendants on shutdown.
pub fn spawn_watcher() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return tracing::error!("cannot start the upgrade watcher: {e}"),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("upgrade-watch").stdin(std::process::Stdio::null());
    crate::process::children::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
    if let Err(e) = cmd.spawn() {
        tracing::error!("cannot start the upgrade watcher: {e}");
    }
}

/// `pgherd-agent upgrade-watch`: polls forever.
pub fn watch_main() -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(watch(member::process_env()));
    Ok(std::process::ExitCode::SUCCESS)
}

async fn watch(env: BTreeMap<String, String>) {
    let config = member::config_path(&env);
    let mut done: Option<(String, ReplicaAction)> = None;
    let mut taken_over: Option<(String, plan::Phase)> = None;
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !config.exists() {
            continue;
        }
        match tick(&env, &config, &mut done, &mut taken_over).await {
            Ok(()) => last_error.clear(),
            // Logged once per distinct error: Patroni being down for a while is not news every 2 s.
            Err(e) if e != last_error => {
                tracing::warn!("upgrade watcher: {e}");
                last_error = e;
            }
            Err(_) => {}
        }
    }
}

async fn tick(
    env: &BTreeMap<String, String>,
    config: &std::path::Path,
    done: &mut Option<(String, ReplicaAction)>,
    taken_over: &mut Option<(String, plan::Phase)>,
) -> StepResult<()> {
    let member = Member::load(config)?;
    // A run that died in its pre-checks is known only to this member's status file: a pg_upgrade --check
    // server may still run on the scratch cluster, and the file reads "in progress".
    if let Some(s) = StatusFile::read(&member::rw_dir(env)).filter(|s| s.open_in_precheck()) {
        if let Some(r) = s.runner.as_ref().filter(|r| !member::runner_alive(r.pid)) {
            let key = (s.id.clone(), plan::Phase::Precheck);
            if taken_over.as_ref() != Some(&key) {
                *taken_over = Some(key);
                take_over(&s.id, plan::Phase::Precheck, &s.to, r.members).await;
            }
            return Ok(());
        }
    }
    let Ok(Some(instr)) = dcs::read(&member.api).await else {
        return Ok(());
    };
    let alive = instr
        .runner
        .as_ref()
        .is_some_and(|r| member::runner_alive(r.pid));
    if let Some(runner) = plan::orphaned(&instr, &member.name, alive) {
        // Read after the runner was found gone, so whatever it recorded before exiting is there.
        if StatusFile::read(&member::rw_dir(env)).is_some_and(|s| s.records_end_of(&instr)) {
            return Ok(());
        }
        // Once per phase: if taking over fails, the next attempt is a person's (the status says why).
        let key = (instr.id.clone(), instr.phase);
        if taken_over.as_ref() != Some(&key) {
            *taken_over = Some(key);
            take_over(&instr.id, instr.phase, &instr.to, runner.members).await;
        }
        return Ok(());
    }
    let action = plan::replica_action(&instr, &member.name);
    if action == ReplicaAction::Nothing
        || done.as_ref() == Some(&(instr.id.clone(), action.clone()))
    {
        return Ok(());
    }
    tracing::info!(id = %instr.id, phase = %instr.phase, ?action, "upgrade: acting on the leader's instruction");
    let pg = replica_pg(env, &member, &instr)?;
    let report = perform(&pg, &member, &instr, &action, env).await;
    match &report.error {
        Some(e) => tracing::error!(state = ?report.state, "upgrade: {e}"),
        None => tracing::info!(state = ?report.state, "upgrade: done"),
    }
    dcs::report(&member.api, &member.name, &report).await?;
    *done = Some((instr.id.clone(), action));
    Ok(())
}

/// Runs `pgherd-agent upgrade --recover` for an upgrade whose process died: it rolls back before the
/// point of no return and finishes after it, exactly as a re-run by the operator would.
async fn take_over(id: &str, phase: plan::Phase, to: &str, members: usize) {
    tracing::warn!(%id, %phase, "the upgrade process is gone; taking over its recovery");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return tracing::error!("cannot locate pgherd-agent: {e}"),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["upgrade", "--recover", "--members"])
        .arg(members.to_string())
        .arg("--to")
        .arg(to)
        .env_remove(super::failpoint::VAR)
        .stdin(std::process::Stdio::null());
    match tokio::task::spawn_blocking(move || cmd.status()).await {
        Ok(Ok(status)) if status.success() => tracing::info!("upgrade recovery finished"),
        Ok(Ok(status)) => {
            tracing::error!("upgrade recovery failed ({status}); see the status file")
        }
        Ok(Err(e)) => tracing::error!("cannot run the upgrade recovery: {e}"),
        Err(e) => tracing::error!("upgrade recovery: {e}"),
    }
}

fn replica_pg(
    env: &BTreeMap<String, String>,
    member: &Member,
    instr: &Instruction,
) -> StepResult<Pg> {
    let major = |v: &str| Major::parse(v).ok_or_else(|| format!("{v:?} is not a major version"));
    Ok(Pg {
        run_as: RunAs::postgres_if_root().map_err(|e| e.to_string())?,
        local: member.local.clone(),
        old_bin: bin_dir_for(env, &major(&instr.from)?),
        new_bin: bin_dir_for(env, &major(&instr.to)?),
    })
}

async fn perform(
    pg: &Pg,
    member: &Member,
    instr: &Instruction,
    action: &ReplicaAction,
    env: &BTreeMap<String, String>,
) -> MemberReport {
    let (ok, fail, result) = match action {
        ReplicaAction::Stop => (
            ReplicaState::Stopped,
            ReplicaState::StopFailed,
            stop(pg, instr).await,
        ),
        ReplicaAction::Sync => (
            ReplicaState::Synced,
            ReplicaState::SyncFailed,
            sync(pg, member, instr),
        ),
        // A failed restart reports sync_failed: the next poll then chooses Reclone (empty data, retry).
        ReplicaAction::Restart => (
            ReplicaState::Restarted,
            ReplicaState::SyncFailed,
            restart(pg, member, false, (env, &instr.from, &instr.to)).await,
        ),
        ReplicaAction::Reclone => (
            ReplicaState::Recloning,
            ReplicaState::Recloning,
            restart(pg, member, true, (env, &instr.from, &instr.to)).await,
        ),
        ReplicaAction::KeepOld => (ReplicaState::RolledBack, ReplicaState::RolledBack, Ok(())),
        ReplicaAction::RecloneOld => (ReplicaState::Recloning, ReplicaState::Recloning, wipe(pg)),
        ReplicaAction::Nothing => (ReplicaState::Stopped, ReplicaState::Stopped, Ok(())),
    };
    match result {
        Ok(()) => MemberReport {
            state: ok,
            error: None,
        },
        Err(e) => MemberReport {
            state: fail,
            error: Some(e),
        },
    }
}

/// Replays up to the primary's shutdown checkpoint, stops, and checks that the standby's last restartpoint
/// is exactly that checkpoint — the condition for the rsync to produce a consistent copy.
async fn stop(pg: &Pg, instr: &Instruction) -> StepResult<()> {
    let want_text = instr
        .checkpoint_lsn
        .clone()
        .ok_or("the instruction has no checkpoint LSN")?;
    let want = pg::parse_lsn(&want_text).ok_or_else(|| format!("bad LSN {want_text:?}"))?;
    let c = pg.connect("postgres").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = c
            .query_one(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text",
                &[],
            )
            .await
            .map_err(|e| format!("reading the replay position: {}", pg::db_error(&e)))?;
        if !row.get::<_, bool>(0) {
            return Err("this member is not a replica".into());
        }
        let at: Option<String> = row.get(1);
        if at
            .as_deref()
            .and_then(pg::parse_lsn)
            .is_some_and(|lsn| lsn >= want)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("replay did not reach {want_text} (at {at:?})"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.batch_execute("CHECKPOINT")
        .await
        .map_err(|e| format!("CHECKPOINT: {}", pg::db_error(&e)))?;
    drop(c);
    pg.stop(&pg.old_bin, pg.data(), Duration::from_secs(600))?;
    let cd = pg.controldata(&pg.old_bin, pg.data())?;
    let at = cd
        .get("Latest checkpoint location")
        .cloned()
        .unwrap_or_default();
    if pg::parse_lsn(&at) != Some(want) {
        return Err(format!(
            "stopped at checkpoint {at}, not the primary's {want_text}"
        ));
    }
    Ok(())
}

fn sync(pg: &Pg, member: &Member, instr: &Instruction) -> StepResult<()> {
    let src = instr
        .rsync
        .as_ref()
        .ok_or("the instruction has no rsync source")?;
    let (data, old) = (pg.data().to_path_buf(), pg.old_data());
    if !old.exists() {
        pg::rename(&data, &old)?;
    } else {
        // An interrupted earlier attempt: the old copy is kept, the partial new one goes.
        pg.remove_dir(&data)?;
    }
    rsync_pull(pg, member, src)?;
    match pg::data_version(&data) {
        Some(v) if v == instr.to => Ok(()),
        other => Err(format!(
            "after rsync the data directory is version {other:?}, not {}",
            instr.to
        )),
    }
}

fn rsync_pull(pg: &Pg, member: &Member, src: &plan::RsyncSource) -> StepResult<()> {
    super::rsync::pull(pg, member, src)
}

/// Points Patroni at the new major and restarts it; `reclone` first empties the data directory so Patroni
/// re-creates the replica from the new primary once the cluster is resumed.
async fn restart(
    pg: &Pg,
    member: &Member,
    reclone: bool,
    (env, from, to): (&BTreeMap<String, String>, &str, &str),
) -> StepResult<()> {
    if reclone {
        wipe(pg)?;
    }
    let pkglib = pg
        .new_config("pkglibdir")
        .ok()
        .map(std::path::PathBuf::from);
    member.switch_config(&pg.new_bin, pkglib.as_deref())?;
    super::walprefix::switch(&super::walprefix::envdir(env), from, to)?;
    member.restart_patroni(Duration::from_secs(120)).await?;
    Ok(pg.remove_dir(&pg.old_data())?)
}

fn wipe(pg: &Pg) -> StepResult<()> {
    pg.stop(&pg.old_bin, pg.data(), Duration::from_secs(120))?;
    pg.remove_dir(pg.data())?;
    Ok(pg.remove_dir(&pg.old_data())?)
}
