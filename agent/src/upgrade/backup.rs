//! The fresh base backup after an upgrade: backups of the old major cannot be restored with the new
//! binaries, so until one exists there is no point-in-time recovery. Calls the native backup engine (what
//! `pgherd-agent backup push` runs) and reports honestly what happened.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::backup::push;
use crate::backup::store::Store;
use crate::local::Local;

/// What came of the backup. Its `Display` is what the status file records (docs/upgrade.md).
#[derive(Debug)]
pub enum Outcome {
    Taken,
    /// No WAL storage is configured: nothing to back up to, which is not a problem.
    Skipped {
        envdir: PathBuf,
    },
    Failed(Failure),
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Patroni's configuration names the new binaries only after the switch; it is read again here so
    /// pg_basebackup is the new major's.
    #[error("reading the member's configuration: {0}")]
    Member(#[from] crate::local::Error),
    #[error("{0:#}")]
    Storage(anyhow::Error),
    #[error(transparent)]
    Push(#[from] push::Error),
}

impl Outcome {
    /// Whether the upgrade should warn: a backup was due and none was taken.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Taken => write!(f, "taken"),
            Outcome::Skipped { envdir } => write!(
                f,
                "skipped: no WAL storage configured ({} is empty or missing)",
                envdir.display()
            ),
            Outcome::Failed(e) => write!(f, "failed (backup push): {e}"),
        }
    }
}

/// Takes a base backup of the (new) primary into the main envdir's storage.
pub async fn push(env: &BTreeMap<String, String>, patroni_config: &Path) -> Outcome {
    let envdir = super::walprefix::envdir(env);
    let configured = std::fs::read_dir(&envdir).is_ok_and(|mut d| d.next().is_some());
    if !configured {
        return Outcome::Skipped { envdir };
    }
    let member = env.get("HOSTNAME").cloned().unwrap_or_default();
    match take(&envdir, patroni_config, &member).await {
        Ok(()) => Outcome::Taken,
        Err(e) => Outcome::Failed(e),
    }
}

async fn take(envdir: &Path, patroni_config: &Path, member: &str) -> Result<(), Failure> {
    let store = Store::from_envdir(envdir).await.map_err(Failure::Storage)?;
    let local = Local::load(patroni_config)?;
    push::push(&store, &local, member, false).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_storage_is_skipped_and_a_broken_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let envdir = dir.path().join("env");
        let env: BTreeMap<String, String> =
            [("WALE_ENV_DIR".to_string(), envdir.display().to_string())].into();
        let skipped = push(&env, &dir.path().join("postgres.yml")).await;
        assert!(!skipped.failed());
        assert_eq!(
            skipped.to_string(),
            format!(
                "skipped: no WAL storage configured ({} is empty or missing)",
                envdir.display()
            )
        );
        std::fs::create_dir(&envdir).unwrap();
        std::fs::write(envdir.join("AWS_REGION"), "eu").unwrap();
        let failed = push(&env, &dir.path().join("postgres.yml")).await;
        assert!(failed.failed());
        assert!(
            failed.to_string().starts_with("failed (backup push): "),
            "{failed}"
        );
        assert_eq!(Outcome::Taken.to_string(), "taken");
    }
}
