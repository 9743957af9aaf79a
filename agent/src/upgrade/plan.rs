//! The upgrade as an explicit state machine, as pure data and pure decisions (no I/O), so the rules that
//! matter — where the point of no return is, what a crashed run resumes or rolls back, what each replica does
//! for a given leader phase — are unit-tested without a cluster.
//!
//! The leader publishes an [`Instruction`] in the DCS (a key of Patroni's dynamic configuration); every
//! member's agent reads it from its local Patroni and reports back under `members.<name>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Key of Patroni's dynamic configuration that carries the instruction (and is the coordinator's view).
pub const DCS_KEY: &str = "pgherd_upgrade";

/// Phases in the order the leader runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Read-only checks; nothing has changed.
    Precheck,
    /// Patroni is in maintenance mode so it does not fight the stopped servers.
    Pause,
    /// The primary is being stopped cleanly (downtime starts).
    StopPrimary,
    /// Replicas replay up to the primary's shutdown checkpoint and stop.
    StopReplicas,
    /// `pg_upgrade --link` on the primary; the old cluster's `pg_control` is renamed while linking.
    PgUpgrade,
    /// Replicas copy the changed files from the primary with rsync, hard-linking the rest.
    SyncReplicas,
    /// The new major is started on the primary: from here on the old cluster is gone.
    StartPrimary,
    /// Replicas restart Patroni on the new major (or are emptied to be re-cloned).
    RestartReplicas,
    /// Maintenance mode is lifted.
    Resume,
    Analyze,
    UpdateExtensions,
    Backup,
    Cleanup,
    Done,
}

impl Phase {
    /// Starting the new server writes to files shared with the old one through hard links; after that the
    /// old cluster must never be started again (PostgreSQL's pg_upgrade documentation, "Reverting to old
    /// cluster"). Everything before can be undone.
    pub const POINT_OF_NO_RETURN: Phase = Phase::StartPrimary;

    pub fn past_point_of_no_return(self) -> bool {
        self >= Self::POINT_OF_NO_RETURN
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Precheck => "precheck",
            Phase::Pause => "pause",
            Phase::StopPrimary => "stop_primary",
            Phase::StopReplicas => "stop_replicas",
            Phase::PgUpgrade => "pg_upgrade",
            Phase::SyncReplicas => "sync_replicas",
            Phase::StartPrimary => "start_primary",
            Phase::RestartReplicas => "restart_replicas",
            Phase::Resume => "resume",
            Phase::Analyze => "analyze",
            Phase::UpdateExtensions => "update_extensions",
            Phase::Backup => "backup",
            Phase::Cleanup => "cleanup",
            Phase::Done => "done",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a run ended (absent while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// A pre-check failed; nothing was changed.
    PrecheckFailed,
    /// Failed before the point of no return; the old major runs again.
    RolledBack,
    /// Failed after the point of no return; run `pgherd-agent upgrade` again to resume.
    Interrupted,
}

/// What a replica reports under `members.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Stopped cleanly at the primary's shutdown checkpoint: eligible for the rsync.
    Stopped,
    /// Could not reach that state; will be re-cloned.
    StopFailed,
    Synced,
    SyncFailed,
    /// Patroni restarted on the new major with the synced data.
    Restarted,
    /// Data removed; Patroni re-clones it from the new primary once the cluster is resumed.
    Recloning,
    /// Back on the old major after the leader rolled back.
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    pub state: ReplicaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where replicas fetch the upgraded files from (the primary's rsync daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsyncSource {
    pub host: String,
    pub port: u16,
    /// Name of the data directory inside the module (`data`); the old one is `<name>_old`.
    pub data_name: String,
}

/// The leader's instruction, stored as [`DCS_KEY`] in the dynamic configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    pub id: String,
    pub from: String,
    pub to: String,
    pub leader: String,
    /// Members expected to take part (the leader excluded).
    pub replicas: Vec<String>,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The primary's shutdown checkpoint; replicas must have replayed it before they stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync: Option<RsyncSource>,
    /// The old system identifier, still in the DCS `initialize` key until the new primary replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_sysid: Option<String>,
    #[serde(default)]
    pub members: BTreeMap<String, MemberReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `pgherd-agent upgrade` process driving this instruction, and its `--members`: if it dies, the
    /// leader's watcher finishes what it started ([`orphaned`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub pid: u32,
    pub members: usize,
}

/// An unfinished upgrade led by `me` whose runner is no longer alive must not leave the cluster paused and
/// (before the point of no return) down until someone notices: the leader's watcher runs
/// `upgrade --recover` with the runner's `--members`, which rolls back or resumes as a re-run would.
pub fn orphaned<'a>(instr: &'a Instruction, me: &str, runner_alive: bool) -> Option<&'a Runner> {
    let runner = instr.runner.as_ref()?;
    let unfinished = instr.outcome.is_none() && instr.phase > Phase::Precheck;
    (instr.leader == me && unfinished && !runner_alive).then_some(runner)
}

impl Instruction {
    /// A new run's instruction, at its pre-checks, with no replicas enrolled yet and nothing recorded.
    pub fn fresh(id: String, from: String, to: String, leader: String) -> Self {
        Self {
            id,
            from,
            to,
            leader,
            replicas: Vec::new(),
            phase: Phase::Precheck,
            outcome: None,
            checkpoint_lsn: None,
            rsync: None,
            old_sysid: None,
            members: BTreeMap::new(),
            message: None,
            runner: None,
        }
    }

    pub fn report(&self, name: &str) -> Option<ReplicaState> {
        self.members.get(name).map(|r| r.state)
    }

    /// Replicas that have not yet reported one of `states`.
    pub fn waiting_for<'a>(&'a self, states: &[ReplicaState]) -> Vec<&'a str> {
        self.replicas
            .iter()
            .filter(|r| !self.report(r).is_some_and(|s| states.contains(&s)))
            .map(String::as_str)
            .collect()
    }
}

/// What one replica's agent does next for the instruction it sees. Every action is idempotent and is
/// chosen from the leader's phase and the replica's own last report, so a restarted agent picks up where it
/// left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAction {
    Nothing,
    /// Replay up to the checkpoint, stop Postgres, verify the checkpoint.
    Stop,
    /// Move the data directory aside and rsync the new one from the primary.
    Sync,
    /// Point Patroni at the new major and restart it; remove the old data.
    Restart,
    /// Remove the data directories (Patroni re-clones after resume), point Patroni at the new major,
    /// restart it.
    Reclone,
    /// The leader rolled back: data untouched, report it.
    KeepOld,
    /// The leader rolled back after this replica's old copy was modified by rsync: re-clone on the old major.
    RecloneOld,
}

pub fn replica_action(instr: &Instruction, me: &str) -> ReplicaAction {
    use ReplicaAction as A;
    use ReplicaState as S;
    if instr.leader == me || !instr.replicas.iter().any(|r| r == me) {
        return A::Nothing;
    }
    let mine = instr.report(me);
    if instr.outcome == Some(Outcome::RolledBack) {
        return match mine {
            None | Some(S::Stopped) | Some(S::StopFailed) => A::KeepOld,
            Some(S::Synced) | Some(S::SyncFailed) => A::RecloneOld,
            Some(S::RolledBack) | Some(S::Restarted) | Some(S::Recloning) => A::Nothing,
        };
    }
    match (instr.phase, mine) {
        (Phase::StopReplicas | Phase::PgUpgrade | Phase::SyncReplicas, None) => A::Stop,
        (Phase::SyncReplicas, Some(S::Stopped)) => A::Sync,
        (p, Some(S::Synced)) if p >= Phase::RestartReplicas => A::Restart,
        (p, None | Some(S::Stopped | S::StopFailed | S::SyncFailed))
            if p >= Phase::RestartReplicas =>
        {
            A::Reclone
        }
        _ => A::Nothing,
    }
}

/// What the data directory looks like on the leader, read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderFacts {
    /// `PG_VERSION` of the data directory.
    pub data_version: String,
    /// `<data>_new` exists (an initdb'ed target, maybe upgraded).
    pub new_exists: bool,
    /// `<data>_old` exists (the data directories were switched).
    pub old_exists: bool,
}

/// What `pgherd-agent upgrade` does when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Already on the target major and nothing is pending.
    NotRequired,
    /// A clean start.
    Fresh,
    /// An earlier run stopped before the point of no return: undo its changes, then start fresh.
    RollBackThenFresh,
    /// An earlier run passed the point of no return: continue from this phase.
    Resume(Phase),
    /// The data directory is newer than the target.
    Refuse(String),
}

pub fn decide_start(target: &str, facts: &LeaderFacts, pending: Option<&Instruction>) -> Start {
    let pending = pending.filter(|i| i.to == target && i.outcome != Some(Outcome::Succeeded));
    if let Some(i) = pending {
        if i.phase.past_point_of_no_return() && i.outcome != Some(Outcome::RolledBack) {
            return Start::Resume(i.phase);
        }
    }
    let (data, want) = (version_key(&facts.data_version), version_key(target));
    if data > want {
        return Start::Refuse(format!(
            "the data directory is PostgreSQL {} and cannot be downgraded to {target}",
            facts.data_version
        ));
    }
    // Switched but not started: the data directory already holds the (unstarted) new cluster.
    let half_done = facts.new_exists || facts.old_exists;
    let unfinished = pending.is_some_and(|i| i.outcome.is_none() && i.phase > Phase::Precheck);
    if half_done || unfinished {
        if data == want
            && facts.old_exists
            && pending.is_none_or(|i| i.phase >= Phase::SyncReplicas)
        {
            // The data directories were switched and no instruction says otherwise: that only happens
            // right before the point of no return; continuing is safe and cheaper than undoing.
            return Start::Resume(Phase::StartPrimary);
        }
        return Start::RollBackThenFresh;
    }
    if data == want {
        Start::NotRequired
    } else {
        Start::Fresh
    }
}

/// `9.6` → (9, 6), `16` → (16, 0), unparsable → (0, 0).
fn version_key(v: &str) -> (u32, u32) {
    let mut parts = v.trim().split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instr(phase: Phase) -> Instruction {
        Instruction {
            replicas: vec!["b".into(), "c".into()],
            phase,
            checkpoint_lsn: Some("0/3000028".into()),
            runner: Some(Runner {
                pid: 4242,
                members: 3,
            }),
            ..Instruction::fresh("x".into(), "15".into(), "16".into(), "a".into())
        }
    }

    fn with(mut i: Instruction, name: &str, state: ReplicaState) -> Instruction {
        i.members
            .insert(name.into(), MemberReport { state, error: None });
        i
    }

    #[test]
    fn point_of_no_return_is_starting_the_new_server() {
        assert!(!Phase::SyncReplicas.past_point_of_no_return());
        assert!(!Phase::PgUpgrade.past_point_of_no_return());
        assert!(Phase::StartPrimary.past_point_of_no_return());
        assert!(Phase::Done.past_point_of_no_return());
    }

    #[test]
    fn replica_follows_the_leader_phase() {
        use ReplicaAction as A;
        use ReplicaState as S;
        assert_eq!(replica_action(&instr(Phase::Pause), "b"), A::Nothing);
        assert_eq!(replica_action(&instr(Phase::StopReplicas), "b"), A::Stop);
        assert_eq!(
            replica_action(&instr(Phase::StopReplicas), "a"),
            A::Nothing,
            "leader"
        );
        assert_eq!(
            replica_action(&instr(Phase::StopReplicas), "z"),
            A::Nothing,
            "stranger"
        );
        let stopped = with(instr(Phase::PgUpgrade), "b", S::Stopped);
        assert_eq!(
            replica_action(&stopped, "b"),
            A::Nothing,
            "waits for the rsync source"
        );
        let sync = with(instr(Phase::SyncReplicas), "b", S::Stopped);
        assert_eq!(replica_action(&sync, "b"), A::Sync);
        let failed = with(instr(Phase::SyncReplicas), "b", S::StopFailed);
        assert_eq!(replica_action(&failed, "b"), A::Nothing);
        let synced = with(instr(Phase::RestartReplicas), "b", S::Synced);
        assert_eq!(replica_action(&synced, "b"), A::Restart);
        for s in [S::StopFailed, S::SyncFailed, S::Stopped] {
            assert_eq!(
                replica_action(&with(instr(Phase::RestartReplicas), "b", s), "b"),
                A::Reclone
            );
        }
        assert_eq!(
            replica_action(&instr(Phase::Resume), "b"),
            A::Reclone,
            "never reported"
        );
        let done = with(instr(Phase::Resume), "b", S::Restarted);
        assert_eq!(replica_action(&done, "b"), A::Nothing);
    }

    #[test]
    fn replica_after_a_rollback() {
        use ReplicaAction as A;
        use ReplicaState as S;
        let mut i = with(instr(Phase::SyncReplicas), "b", S::Synced);
        i.outcome = Some(Outcome::RolledBack);
        assert_eq!(replica_action(&i, "b"), A::RecloneOld);
        assert_eq!(replica_action(&i, "c"), A::KeepOld);
        let i = with(i, "c", S::RolledBack);
        assert_eq!(replica_action(&i, "c"), A::Nothing);
    }

    fn facts(v: &str, new: bool, old: bool) -> LeaderFacts {
        LeaderFacts {
            data_version: v.into(),
            new_exists: new,
            old_exists: old,
        }
    }

    #[test]
    fn start_decisions() {
        assert_eq!(
            decide_start("16", &facts("16", false, false), None),
            Start::NotRequired
        );
        assert_eq!(
            decide_start("16", &facts("15", false, false), None),
            Start::Fresh
        );
        assert!(matches!(
            decide_start("15", &facts("16", false, false), None),
            Start::Refuse(_)
        ));
        // A leftover target directory from an interrupted pre-check or pg_upgrade.
        assert_eq!(
            decide_start("16", &facts("15", true, false), None),
            Start::RollBackThenFresh
        );
        let mut i = instr(Phase::PgUpgrade);
        assert_eq!(
            decide_start("16", &facts("15", true, false), Some(&i)),
            Start::RollBackThenFresh
        );
        // Past the point of no return: resume from the recorded phase, whatever the disk says.
        i.phase = Phase::Analyze;
        i.outcome = Some(Outcome::Interrupted);
        assert_eq!(
            decide_start("16", &facts("16", false, true), Some(&i)),
            Start::Resume(Phase::Analyze)
        );
        // Switched directories, instruction says syncing: continuing is safe.
        i.phase = Phase::SyncReplicas;
        i.outcome = None;
        assert_eq!(
            decide_start("16", &facts("16", false, true), Some(&i)),
            Start::Resume(Phase::StartPrimary)
        );
        // Rolled back earlier and directories clean: a fresh start.
        i.outcome = Some(Outcome::RolledBack);
        assert_eq!(
            decide_start("16", &facts("15", false, false), Some(&i)),
            Start::Fresh
        );
        // A finished upgrade to another target does not count.
        let mut done = instr(Phase::Done);
        done.outcome = Some(Outcome::Succeeded);
        assert_eq!(
            decide_start("16", &facts("16", false, false), Some(&done)),
            Start::NotRequired
        );
        assert_eq!(version_key("9.6"), (9, 6));
    }

    #[test]
    fn instruction_round_trips_and_lists_waiting_replicas() {
        let i = with(instr(Phase::SyncReplicas), "b", ReplicaState::Synced);
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(json["phase"], "sync_replicas");
        assert_eq!(json["members"]["b"]["state"], "synced");
        let back: Instruction = serde_json::from_value(json).unwrap();
        assert_eq!(back, i);
        assert_eq!(back.waiting_for(&[ReplicaState::Synced]), ["c"]);
    }

    #[test]
    fn a_dead_runner_is_taken_over_by_the_leaders_watcher() {
        for phase in [
            Phase::Pause,
            Phase::PgUpgrade,
            Phase::SyncReplicas,
            Phase::StartPrimary,
            Phase::Backup,
        ] {
            assert_eq!(
                orphaned(&instr(phase), "a", false).map(|r| r.members),
                Some(3),
                "{phase}"
            );
        }
        // Alive, not the leader, nothing changed yet, finished, or an instruction without a runner.
        assert_eq!(orphaned(&instr(Phase::PgUpgrade), "a", true), None);
        assert_eq!(orphaned(&instr(Phase::PgUpgrade), "b", false), None);
        assert_eq!(orphaned(&instr(Phase::Precheck), "a", false), None);
        let mut done = instr(Phase::PgUpgrade);
        done.outcome = Some(Outcome::RolledBack);
        assert_eq!(orphaned(&done, "a", false), None);
        let mut old = instr(Phase::PgUpgrade);
        old.runner = None;
        assert_eq!(orphaned(&old, "a", false), None);
    }
}
