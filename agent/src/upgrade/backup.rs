//! The fresh base backup after an upgrade: backups of the old major cannot be restored with the new
//! binaries, so until one exists there is no point-in-time recovery. Runs the native backup engine
//! (`pgherd-agent backup push`) as a subprocess and reports honestly what happened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::pg::{tail_of, Pg};

/// A backup that was taken, or that had nothing to be taken to. The text is the status file's `backup`.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Taken,
    Skipped { envdir: PathBuf },
}

impl std::fmt::Display for Pushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Taken => f.write_str("taken"),
            Self::Skipped { envdir } => write!(
                f,
                "skipped: no WAL storage configured ({} is empty or missing)",
                envdir.display()
            ),
        }
    }
}

/// A backup that should have been taken and was not: the upgrade warns about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not run: locating pgherd-agent: {0}")]
    Locate(#[source] std::io::Error),
    #[error("could not run: {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    /// Nothing was tried: the binary does not take the command line, as agents before the backup engine.
    #[error("could not run: this pgherd-agent has no `backup push` ({tail})")]
    Refused { tail: String },
    #[error("failed ({status}): {tail}")]
    Failed { status: ExitStatus, tail: String },
}

pub fn push(
    pg: &Pg,
    env: &BTreeMap<String, String>,
    patroni_config: &Path,
) -> Result<Pushed, Error> {
    let envdir = super::walprefix::envdir(env);
    let configured = std::fs::read_dir(&envdir).is_ok_and(|mut d| d.next().is_some());
    if !configured {
        return Ok(Pushed::Skipped { envdir });
    }
    let exe = std::env::current_exe().map_err(Error::Locate)?;
    let mut cmd = pg.command(&exe);
    cmd.args(["backup", "push", "--envdir"])
        .arg(&envdir)
        .env(crate::local::CONFIG_VAR, patroni_config);
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: exe.clone(),
        source,
    })?;
    outcome(out.status, || tail_of(&out, 3))
}

/// Reads the child's exit status by the contract in [`crate::exit`]; the output's tail only explains.
fn outcome(status: ExitStatus, tail: impl FnOnce() -> String) -> Result<Pushed, Error> {
    if status.success() {
        Ok(Pushed::Taken)
    } else if status.code() == Some(crate::exit::USAGE.into()) {
        Err(Error::Refused { tail: tail() })
    } else {
        Err(Error::Failed {
            status,
            tail: tail(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exited(code: u8) -> ExitStatus {
        ExitStatus::from_raw(i32::from(code) << 8)
    }

    #[test]
    fn the_exit_status_alone_tells_taken_refused_and_failed_apart() {
        assert_eq!(outcome(exited(0), String::new).unwrap(), Pushed::Taken);
        let refused = outcome(exited(crate::exit::USAGE), || "usage".into()).unwrap_err();
        assert!(matches!(refused, Error::Refused { .. }), "{refused:?}");
        assert_eq!(
            refused.to_string(),
            "could not run: this pgherd-agent has no `backup push` (usage)"
        );
        // Whatever the output says, a run that failed is a failed backup.
        let failed = outcome(exited(crate::exit::FAILURE), || {
            "error: unrecognized subcommand".into()
        })
        .unwrap_err();
        assert!(matches!(failed, Error::Failed { .. }), "{failed:?}");
        assert!(failed.to_string().starts_with("failed (exit status: 1): "));
        let killed = outcome(ExitStatus::from_raw(9), || "killed".into()).unwrap_err();
        assert!(matches!(killed, Error::Failed { .. }), "{killed:?}");
    }
}
