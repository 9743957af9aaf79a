//! `pgherd-agent upgrade --members N`: in-place major version upgrade of the whole cluster, started on the
//! leader (the operator's `inplace_upgrade.py N` contract), with replicas following through an instruction
//! in the DCS that every member's `pgherd-agent run` watches ([`replica::spawn_watcher`]).
//!
//! Unlike Spilo's script it changes nothing before every pre-check passed (including `pg_upgrade --check`),
//! drops nothing on the live primary, rolls back to the old major on any failure before the new server is
//! first started, can be resumed after that, restarts Patroni with SIGTERM instead of SIGKILL, and reports
//! every phase in `$RW_DIR/pgherd/upgrade.json` and the DCS. See docs/upgrade.md.

mod backup;
pub mod checks;
mod dcs;
mod failpoint;
mod leader;
mod lock;
pub mod member;
pub mod pg;
pub mod plan;
pub mod replica;
mod rsync;
pub mod status;
pub mod walprefix;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::configure::version::{bin_dir_for, Major};
use crate::process::RunAs;
pub use failpoint::VAR as STOP_AT_VAR;
use leader::Leader;
use plan::{Instruction, LeaderFacts, Phase, Start};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Expected number of cluster members (leader included), as the operator passes it.
    #[arg(long, value_name = "N")]
    pub members: usize,
    /// Only deal with an interrupted attempt: roll it back before the point of no return, finish it after;
    /// never start a new upgrade (what the leader's watcher runs when the upgrade process died).
    #[arg(long)]
    pub recover: bool,
    /// Target major version; default: the major of SPILO_CONFIGURATION's postgresql.bin_dir, else PGVERSION.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

/// A step's result: on failure one line saying what was attempted, typed at the phase boundary
/// ([`Error`]).
pub type StepResult<T> = std::result::Result<T, String>;

/// Why an upgrade did not complete; the message is the one line the operator shows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upgrade not started, the cluster is unchanged: {0}")]
    Precheck(String),
    #[error("upgrade failed during {phase} and was rolled back; PostgreSQL {from} is running again: {message}")]
    RolledBack {
        phase: Phase,
        from: String,
        message: String,
    },
    #[error("upgrade failed during {phase} and the rollback failed too ({rollback}); first error: {message}")]
    RollbackFailed {
        phase: Phase,
        message: String,
        rollback: String,
    },
    #[error("upgrade interrupted during {phase}, after the point of no return; run `pgherd-agent upgrade` again to resume: {message}")]
    Interrupted { phase: Phase, message: String },
    #[error("{0}")]
    Setup(String),
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(locked_run(args))?;
    Ok(ExitCode::SUCCESS)
}

/// The target major: `--to`, else Spilo's rule (SPILO_CONFIGURATION bin_dir, then PGVERSION).
pub fn desired_version(
    args_to: Option<&str>,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    if let Some(v) = args_to {
        return Some(v.to_string());
    }
    let from_config = env
        .get("SPILO_CONFIGURATION")
        .and_then(|c| serde_yaml_ng::from_str::<serde_json::Value>(c).ok())
        .and_then(|c| {
            c["postgresql"]["bin_dir"]
                .as_str()
                .and_then(Major::from_bin_dir)
        })
        .map(|m| m.to_string());
    from_config.or_else(|| env.get("PGVERSION").cloned())
}

/// Before anything is read: whatever a run decides must not race another runner on this member.
/// Outside a pod (no rendered configuration) nothing is written, not even the lock.
async fn locked_run(args: Args) -> Result<(), Error> {
    let env = member::process_env();
    let rw_dir = member::rw_dir(&env);
    load_member(&env)?;
    let _lock = lock::acquire(&rw_dir, args.recover, std::time::Duration::from_secs(60))
        .await
        .map_err(Error::Setup)?;
    run(args).await
}

fn load_member(env: &std::collections::BTreeMap<String, String>) -> Result<member::Member, Error> {
    member::Member::load(&member::config_path(env))
        .map_err(|e| Error::Setup(format!("{e} (is this a pgherd pod?)")))
}

async fn run(args: Args) -> Result<(), Error> {
    let setup = |e: String| Error::Setup(e);
    let env = member::process_env();
    let me = load_member(&env)?;
    let target = desired_version(args.to.as_deref(), &env)
        .ok_or_else(|| setup("no target version: pass --to or set PGVERSION".into()))?;
    let target_major =
        Major::parse(&target).ok_or_else(|| setup(format!("{target:?} is not a major version")))?;
    let pending = dcs::read(&me.api).await.map_err(setup)?;
    let data = me.local.data_dir.clone();
    let root = data.parent().map(PathBuf::from).unwrap_or_default();
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let facts = LeaderFacts {
        data_version: pg::data_version(&data).unwrap_or_default(),
        new_exists: root.join(format!("{name}_new")).exists(),
        old_exists: root.join(format!("{name}_old")).exists(),
    };
    let rw_dir = member::rw_dir(&env);
    let earlier = status::StatusFile::read(&rw_dir);
    let mut decision = plan::decide_start(&target, &facts, pending.as_ref());
    let unfinished = pending
        .as_ref()
        .is_some_and(|i| i.outcome.is_none() && i.phase > Phase::Precheck && i.leader == me.name);
    // Only a scratch `<data>_new` from an interrupted pre-check: nothing to undo, removed below.
    let scratch_only = decision == Start::RollBackThenFresh && !facts.old_exists && !unfinished;
    if scratch_only {
        decision = Start::Fresh;
    }
    tracing::info!(target = %target, data_version = %facts.data_version, ?decision, "upgrade");
    // This leader's own attempt, killed before the point of no return: undone from its instruction.
    let interrupted = decision == Start::RollBackThenFresh && unfinished;
    // Resuming or undoing works on the pending instruction (the directories may already be switched:
    // it knows what the old major was); anything else starts a new one.
    let recorded = pending.clone();
    let pending = pending.filter(|_| matches!(decision, Start::Resume(_)) || interrupted);
    let from = match &pending {
        Some(i) => i.from.clone(),
        None => facts.data_version.clone(),
    };
    let from_major = Major::parse(&from).ok_or_else(|| {
        setup(format!(
            "cannot read the data directory's version ({from:?})"
        ))
    })?;
    let pg = pg::Pg {
        run_as: RunAs::postgres_if_root().map_err(|e| setup(e.to_string()))?,
        local: me.local.clone(),
        old_bin: bin_dir_for(&env, &from_major),
        new_bin: bin_dir_for(&env, &target_major),
    };
    // No live runner is left (checked above), so whatever a killed one started is stopped before anything
    // starts: an rsync daemon holds the port the new primary needs, a `pg_upgrade` server holds the
    // directories a rollback moves.
    rsync::stop_leftover(&rw_dir.join("pgherd/rsync"));
    pg.stop_leftovers_of_pg_upgrade();
    if let Some(earlier) = earlier.filter(|s| s.open_in_precheck()) {
        let removed = if scratch_only {
            remove_scratch(&pg)
        } else {
            Vec::new()
        };
        close_abandoned_precheck(&me.api, recorded.as_ref(), &rw_dir, earlier, &removed).await;
    } else if scratch_only {
        remove_scratch(&pg);
    }
    let id = pending
        .as_ref()
        .map(|i| i.id.clone())
        .unwrap_or_else(|| format!("{}-{}", status::now(), std::process::id()));
    let status = status::StatusFile::resume_or_new(&rw_dir, &id, &from, &target);
    let instr = match pending {
        Some(i) => i,
        None => Instruction::fresh(id, from.clone(), target.clone(), me.name.clone()),
    };
    let mut leader = Leader::new(pg, me, env, status, instr, args.members);
    if interrupted {
        let id = leader.instr.id.clone();
        leader
            .recover_interrupted(
                "the upgrade process was interrupted before the point of no return",
            )
            .await?;
        if args.recover {
            return Ok(());
        }
        // The operator asked for the upgrade: with the old major running again, try once more.
        tracing::info!(previous = %id, "starting a new attempt");
        return Box::pin(run(args)).await;
    }
    if args.recover && !matches!(decision, Start::Resume(_)) {
        tracing::info!(?decision, "no interrupted upgrade to recover");
        return Ok(());
    }
    leader.claim();
    match decision {
        Start::NotRequired => {
            tracing::info!("current version {from}, desired version {target}: upgrade is not required");
            Ok(())
        }
        Start::Refuse(why) => Err(Error::Precheck(why)),
        Start::Fresh => leader.fresh().await,
        Start::Resume(phase) => {
            tracing::info!(%phase, "resuming an upgrade that passed the point of no return");
            leader.forward(phase).await
        }
        Start::RollBackThenFresh => Err(Error::Precheck(format!(
            "an earlier upgrade attempt left {name}_new or {name}_old in {} without passing the point of no \
             return; remove {name}_new (and move {name}_old back if {name} is not version {from}) after checking, then run again",
            root.display()
        ))),
    }
}

/// Removes what an interrupted pre-check wrote (`<data>_new` from initdb, pg_upgrade's work directory)
/// and returns what was there.
fn remove_scratch(pg: &pg::Pg) -> Vec<String> {
    let mut removed = Vec::new();
    for dir in [pg.new_data(), pg.work_dir()] {
        if dir.exists() {
            match pg.remove_dir(&dir) {
                Ok(()) => removed.push(dir.display().to_string()),
                Err(e) => tracing::warn!("removing {}: {e}", dir.display()),
            }
        }
    }
    removed
}

/// Closes the record of a run whose process died during its pre-checks, so that neither the status file
/// nor the DCS reads "still running" forever.
async fn close_abandoned_precheck(
    api: &pgherd_shared::patroni::Client,
    recorded: Option<&Instruction>,
    rw_dir: &std::path::Path,
    earlier: status::Status,
    removed: &[String],
) {
    let mut message =
        "the upgrade process was interrupted during the pre-checks; nothing was changed"
            .to_string();
    if !removed.is_empty() {
        message.push_str(&format!(" (removed {})", removed.join(", ")));
    }
    tracing::warn!(id = %earlier.id, "{message}");
    if let Some(i) = recorded.filter(|i| i.id == earlier.id && i.outcome.is_none()) {
        let mut closed = i.clone();
        closed.outcome = Some(plan::Outcome::PrecheckFailed);
        closed.message = Some(message.clone());
        if let Err(e) = dcs::publish(api, &closed).await {
            tracing::warn!("recording the interrupted pre-check in the DCS: {e}");
        }
    }
    status::StatusFile::of(rw_dir, earlier).finish(plan::Outcome::PrecheckFailed, message);
}
