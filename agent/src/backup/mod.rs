//! pgherd's backup engine: WAL archiving, base backups, retention, restore and clone on S3, plus the
//! WAL-G/WAL-E compatibility mode for clusters that keep Spilo's tools.
//!
//! Layout (one prefix per cluster, Spilo's `spilo/<prefix><scope><suffix>/wal/<major>`, with pgherd's
//! objects under `pgherd/` so WAL-G's `basebackups_005`/`wal_005` can live beside them):
//! `<prefix>/pgherd/wal/<WAL file>` and `<prefix>/pgherd/basebackups/<name>/{data.tar.<codec>,manifest.json}`.

pub mod catalog;
pub mod cli;
pub mod codec;
pub mod compat;
pub mod continuity;
#[cfg(test)]
pub mod memory;
pub mod monitor;
pub mod orphans;
pub mod prune;
pub mod push;
pub mod restore;
pub mod retention;
pub mod scheduler;
pub mod settings;
pub mod socket;
pub mod store;
pub mod wal;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::configure::engine::Engine;

/// Starts the engine's background services inside `run`: the archive hand-off socket (native engine) and
/// the backup scheduler. Returns the socket path for Postgres's environment.
pub fn spawn(
    configured: &crate::configure::Configured,
    local: &crate::local::Local,
    env: &BTreeMap<String, String>,
    owner: Option<(u32, u32)>,
) -> Option<PathBuf> {
    scheduler::spawn(
        configured.schedule.backup.as_ref(),
        &configured.patroni_config,
        local,
        env,
    );
    let envdir = configured.wal_env_dir.as_ref()?;
    let native = crate::envdir::read(envdir).map(|v| Engine::for_backup(&v) == Engine::Native);
    if !matches!(native, Ok(true)) {
        return None;
    }
    monitor::spawn(envdir.clone(), local, monitor::interval(env));
    let path = scheduler::socket_path(&configured.rw_dir);
    let server = socket::Server::new(configured.data_dir.clone(), owner);
    let serve_path = path.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(serve_path, owner).await {
            tracing::error!(
                "archive hand-off socket stopped (archive commands upload directly): {e:#}"
            );
        }
    });
    Some(path)
}
