//! The status file the coordinator (and a human) reads: `$RW_DIR/pgherd/upgrade.json`, rewritten
//! atomically after every phase. Format documented in docs/upgrade.md.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::plan::{Instruction, MemberReport, Outcome, Phase, Runner};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub from: String,
    pub to: String,
    pub phase: Option<Phase>,
    pub outcome: Option<Outcome>,
    /// True once the new major was started on the primary (no rollback after that, only resume).
    pub point_of_no_return_passed: bool,
    /// The last thing that happened, or why it failed.
    pub message: String,
    pub started_at: u64,
    pub updated_at: u64,
    pub phases: Vec<PhaseRecord>,
    /// Non-fatal problems (an extension that could not be updated, a backup that could not be taken …).
    pub warnings: Vec<String>,
    /// `taken`, `skipped: …`, `could not run: …` or `failed (…): …`.
    pub backup: Option<String>,
    /// The replicas' last reports (state and error), as in the DCS.
    #[serde(default)]
    pub replicas: BTreeMap<String, MemberReport>,
    /// The process working on this run. The DCS instruction names it too, but only from the end of the
    /// pre-checks: until then this file is the only trace of a run whose process may have died.
    #[serde(default)]
    pub runner: Option<Runner>,
}

impl Status {
    /// A run still marked in progress while it has not left the pre-checks (nothing was changed yet).
    pub fn open_in_precheck(&self) -> bool {
        self.outcome.is_none() && self.phase.is_none_or(|p| p == Phase::Precheck)
    }

    /// Whether this file records that the process `instr` names ended its run. Patroni answers
    /// `GET /config` from its last loop's view of the DCS, so for a moment after a runner exits the
    /// instruction can still read unfinished there; this file is written before the runner exits. The
    /// runner must match: a resumed run has the same id, and its file still holds the earlier run's outcome
    /// until its first phase is written.
    pub fn records_end_of(&self, instr: &Instruction) -> bool {
        self.id == instr.id
            && self.outcome.is_some()
            && instr.runner.is_some()
            && self.runner == instr.runner
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub at: u64,
    pub message: String,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct StatusFile {
    path: PathBuf,
    pub status: Status,
}

impl StatusFile {
    pub fn new(rw_dir: &Path, id: &str, from: &str, to: &str) -> Self {
        let t = now();
        Self {
            path: rw_dir.join("pgherd/upgrade.json"),
            status: Status {
                id: id.into(),
                from: from.into(),
                to: to.into(),
                started_at: t,
                updated_at: t,
                ..Status::default()
            },
        }
    }

    /// The file of run `id` if it exists (a resumed run keeps the history), else a new one.
    pub fn resume_or_new(rw_dir: &Path, id: &str, from: &str, to: &str) -> Self {
        let mut file = Self::new(rw_dir, id, from, to);
        let earlier = Self::read(rw_dir).filter(|s| s.id == id);
        if let Some(mut s) = earlier {
            s.outcome = None;
            file.status = s;
        }
        file
    }

    /// The last run's status in `rw_dir`, if there is a readable one.
    pub fn read(rw_dir: &Path) -> Option<Status> {
        let bytes = std::fs::read(rw_dir.join("pgherd/upgrade.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Takes the file of an earlier run to close it (its history is kept).
    pub fn of(rw_dir: &Path, status: Status) -> Self {
        Self {
            path: rw_dir.join("pgherd/upgrade.json"),
            status,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records entering a phase, logs it, and writes the file (a write failure is logged, not fatal: the
    /// DCS key carries the same phase).
    pub fn phase(&mut self, phase: Phase, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(phase = %phase, "{message}");
        self.status.phase = Some(phase);
        self.status.point_of_no_return_passed |= phase.past_point_of_no_return();
        self.status.phases.push(PhaseRecord {
            phase,
            at: now(),
            message: message.clone(),
        });
        self.status.message = message;
        self.write();
    }

    pub fn warn(&mut self, warning: impl Into<String>) {
        let w = warning.into();
        tracing::warn!("{w}");
        self.status.warnings.push(w);
        self.write();
    }

    pub fn finish(&mut self, outcome: Outcome, message: impl Into<String>) {
        self.status.outcome = Some(outcome);
        self.status.message = message.into();
        self.write();
    }

    pub fn write(&mut self) {
        self.status.updated_at = now();
        let result = (|| -> std::io::Result<()> {
            let dir = self.path.parent().expect("status path has a parent");
            std::fs::create_dir_all(dir)?;
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.status)?)?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_recorded_and_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StatusFile::new(dir.path(), "id1", "15", "16");
        s.phase(Phase::Pause, "pausing");
        s.phase(Phase::StartPrimary, "starting 16");
        s.finish(Outcome::Succeeded, "done");
        let back: Status =
            serde_json::from_slice(&std::fs::read(dir.path().join("pgherd/upgrade.json")).unwrap())
                .unwrap();
        assert_eq!(back.phases.len(), 2);
        assert!(back.point_of_no_return_passed);
        assert_eq!(back.outcome, Some(Outcome::Succeeded));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.path()).unwrap()).unwrap();
        assert_eq!(json["phase"], "start_primary");
        assert_eq!(json["outcome"], "succeeded");
    }

    #[test]
    fn a_finished_run_is_told_from_a_stale_instruction_but_not_from_a_resumed_one() {
        let runner = |pid| Some(Runner { pid, members: 3 });
        let mut instr = Instruction::fresh("id1".into(), "15".into(), "16".into(), "demo-0".into());
        instr.phase = Phase::Analyze;
        instr.runner = runner(42);
        let mut status = Status {
            id: "id1".into(),
            outcome: Some(Outcome::Succeeded),
            runner: runner(42),
            ..Status::default()
        };
        assert!(
            status.records_end_of(&instr),
            "the DCS view predates the end"
        );

        instr.runner = runner(43);
        assert!(
            !status.records_end_of(&instr),
            "a resumed run killed before it wrote its first phase"
        );

        instr.runner = runner(42);
        status.outcome = None;
        assert!(!status.records_end_of(&instr), "still running, or killed");

        status.outcome = Some(Outcome::Succeeded);
        status.id = "id0".into();
        assert!(!status.records_end_of(&instr), "another run's file");

        status.id = "id1".into();
        status.runner = None;
        instr.runner = None;
        assert!(!status.records_end_of(&instr), "no runner to match");
    }

    #[test]
    fn a_run_left_in_its_pre_checks_is_recognised_and_closed_by_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StatusFile::new(dir.path(), "id1", "15", "16");
        s.status.runner = Some(Runner {
            pid: 42,
            members: 3,
        });
        s.phase(Phase::Precheck, "checking");
        let back = StatusFile::read(dir.path()).unwrap();
        assert!(back.open_in_precheck());
        assert_eq!(
            back.runner,
            Some(Runner {
                pid: 42,
                members: 3
            })
        );
        StatusFile::of(dir.path(), back).finish(Outcome::PrecheckFailed, "interrupted");
        let closed = StatusFile::read(dir.path()).unwrap();
        assert!(!closed.open_in_precheck());
        assert_eq!(closed.phases.len(), 1, "the history is kept");
        // Past the pre-checks the DCS instruction is the record; files written before `runner` existed
        // still parse.
        let mut later = closed.clone();
        later.outcome = None;
        later.phase = Some(Phase::Pause);
        assert!(!later.open_in_precheck());
        let mut json = serde_json::to_value(&later).unwrap();
        json.as_object_mut().unwrap().remove("runner");
        assert_eq!(serde_json::from_value::<Status>(json).unwrap().runner, None);
    }
}
