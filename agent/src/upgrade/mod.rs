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
pub mod clone;
mod dcs;
mod leader;
pub mod member;
pub mod pg;
pub mod plan;
pub mod private;
pub mod replica;
mod rsync;
pub mod status;
pub mod walprefix;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::configure::version::{bin_dir_for, Major};
use crate::supervise::patroni::RunAs;
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
    rt.block_on(run(args))?;
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

async fn run(args: Args) -> Result<(), Error> {
    let setup = |e: String| Error::Setup(e);
    let env = member::process_env();
    let config = member::config_path(&env);
    let me =
        member::Member::load(&config).map_err(|e| setup(format!("{e} (is this a pgherd pod?)")))?;
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
    if let Some(r) = pending
        .as_ref()
        .filter(|i| i.outcome.is_none())
        .and_then(|i| i.runner.as_ref())
        .filter(|r| r.pid != std::process::id() && member::runner_alive(r.pid))
    {
        return Err(setup(format!(
            "another upgrade process (pid {}) is working on this upgrade; wait for it to finish",
            r.pid
        )));
    }
    let mut decision = plan::decide_start(&target, &facts, pending.as_ref());
    let unfinished = pending
        .as_ref()
        .is_some_and(|i| i.outcome.is_none() && i.phase > Phase::Precheck && i.leader == me.name);
    if decision == Start::RollBackThenFresh && !facts.old_exists && !unfinished {
        // Only a scratch `<data>_new` from an interrupted pre-check: nothing to undo.
        let _ = std::fs::remove_dir_all(root.join(format!("{name}_new")));
        decision = Start::Fresh;
    }
    tracing::info!(target = %target, data_version = %facts.data_version, ?decision, "upgrade");
    // This leader's own attempt, killed before the point of no return: undone from its instruction.
    let interrupted = decision == Start::RollBackThenFresh && unfinished;
    // Resuming or undoing works on the pending instruction (the directories may already be switched:
    // it knows what the old major was); anything else starts a new one.
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
    let rw_dir = PathBuf::from(env.get("RW_DIR").map(String::as_str).unwrap_or("/run"));
    // No live runner is left (checked above): an rsync daemon of a killed one would hold the port the
    // new primary needs.
    rsync::stop_leftover(&rw_dir.join("pgherd/rsync"));
    let id = pending
        .as_ref()
        .map(|i| i.id.clone())
        .unwrap_or_else(|| format!("{}-{}", status::now(), std::process::id()));
    let status = status::StatusFile::resume_or_new(&rw_dir, &id, &from, &target);
    let instr = match pending {
        Some(i) => i,
        None => Instruction {
            id,
            from: from.clone(),
            to: target.clone(),
            leader: me.name.clone(),
            replicas: Vec::new(),
            phase: Phase::Precheck,
            outcome: None,
            checkpoint_lsn: None,
            rsync: None,
            old_sysid: None,
            members: Default::default(),
            message: None,
            runner: None,
        },
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
