//! The archive continuity monitor inside `pgherd-agent run`: the leader lists the WAL archive every
//! `PGHERD_ARCHIVE_CHECK_INTERVAL` seconds (default 300) and publishes what a restore to the latest state
//! would find (`pgherd_wal_archive_*`, `pgherd-agent status`). Push failures alone cannot show a gap: a
//! segment nobody tried to archive fails nothing.
//!
//! Cost: one LIST request per 1000 WAL objects per interval, plus one GET per timeline history file, once.
//! Only the leader checks, so a cluster pays this once and alerts fire once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{cli, continuity, scheduler};
use crate::local::Local;

pub const INTERVAL_VAR: &str = "PGHERD_ARCHIVE_CHECK_INTERVAL";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// The check interval from the environment; an unusable value is reported and the default used.
pub fn interval(env: &BTreeMap<String, String>) -> Duration {
    match env.get(INTERVAL_VAR) {
        None => DEFAULT_INTERVAL,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_secs(n),
            _ => {
                tracing::warn!(
                    "{INTERVAL_VAR}={v:?} is not a positive number of seconds; checking every {} s",
                    DEFAULT_INTERVAL.as_secs()
                );
                DEFAULT_INTERVAL
            }
        },
    }
}

/// Starts the monitor on the current runtime.
pub fn spawn(envdir: PathBuf, local: &Local, every: Duration) {
    let Some(api) = local.api_url.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut histories = BTreeMap::new();
        let mut last_logged = None;
        // Soon after start (once this member leads), then every interval.
        let mut wait = every.min(Duration::from_secs(15));
        loop {
            tokio::time::sleep(wait).await;
            let leader = pgherd_shared::patroni::Client::new(api.clone())
                .status()
                .await
                .is_ok_and(|s| scheduler::should_run(&s.role, false));
            if !leader {
                continue;
            }
            let store = match cli::store_for(&envdir).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("archive continuity not checked: {e:#}");
                    continue;
                }
            };
            match continuity::verify(&store, &mut histories).await {
                Ok(report) => {
                    crate::metrics::backup().archive_continuity(&report);
                    let line = report.describe();
                    if !report.complete() && last_logged.as_ref() != Some(&line) {
                        tracing::error!("WAL archive gap: {line}");
                    }
                    last_logged = Some(line);
                    wait = every;
                }
                Err(e) => tracing::warn!("archive continuity not checked: {e}"),
            }
        }
    });
}
