//! Replica-creation methods Patroni calls (`create_replica_methods`).

pub mod basebackup;

use std::path::PathBuf;

/// What Patroni passes to every replica-creation method: `--scope --role --datadir --connstring`, followed
/// by the method's own keys from the configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct MethodArgs {
    #[arg(long)]
    pub scope: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub datadir: PathBuf,
    /// Connection to the leader (absent when the method runs with `no_leader`).
    #[arg(long)]
    pub connstring: Option<String>,
}
