//! The archive continuity monitor inside `pgherd-agent run`: the leader lists the WAL archive every
//! `PGHERD_ARCHIVE_CHECK_INTERVAL` seconds (default 300) and publishes what a restore to the latest state
//! would find (`pgherd_wal_archive_*`, `pgherd-agent status`). Push failures alone cannot show a gap: a
//! segment nobody tried to archive fails nothing.
//!
//! Cost: one LIST request per 1000 WAL objects per interval, plus one GET per timeline history file, once.
//! Only the leader checks, so a cluster pays this once and alerts fire once. Every 15 s the leader also
//! marks for archiving the segments of earlier timelines nobody would archive ([`orphans`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::store::Store;
use super::{continuity, orphans, scheduler};
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

/// How often the leader looks for orphaned segments of earlier timelines ([`orphans`]): cheap (two
/// directory listings), and soon after a promotion is when they appear.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Starts the monitor on the current runtime.
pub fn spawn(envdir: PathBuf, local: &Local, every: Duration) {
    let Some(api) = local.api_url.clone() else {
        return;
    };
    let data_dir = local.data_dir.clone();
    tokio::spawn(async move {
        let mut histories = BTreeMap::new();
        let mut last_logged = None;
        let tick = every.min(SWEEP_EVERY);
        // The first check soon after this member leads, then every interval.
        let mut next_check = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let Ok(status) = pgherd_shared::patroni::Client::new(api.clone())
                .status()
                .await
            else {
                continue;
            };
            if !scheduler::should_run(&status.role, false) {
                continue;
            }
            if let Some(timeline) = status.timeline.and_then(|t| u32::try_from(t).ok()) {
                sweep(&data_dir, timeline);
            }
            if tokio::time::Instant::now() < next_check {
                continue;
            }
            let store = match Store::from_envdir(&envdir).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("archive continuity not checked: {e:#}");
                    continue;
                }
            };
            match continuity::verify(&store, &mut histories).await {
                Ok(report) => {
                    crate::metrics::backup().archive_continuity(report.metrics());
                    let line = report.describe();
                    if !report.complete() && last_logged.as_ref() != Some(&line) {
                        tracing::error!("WAL archive gap: {line}");
                    }
                    last_logged = Some(line);
                    next_check = tokio::time::Instant::now() + every;
                }
                Err(e) => tracing::warn!("archive continuity not checked: {e}"),
            }
        }
    });
}

fn sweep(data_dir: &std::path::Path, timeline: u32) {
    match orphans::mark(data_dir, timeline) {
        Ok(names) if names.is_empty() => {}
        Ok(names) => tracing::warn!(
            "{} segment(s) of an earlier timeline were never marked for archiving; marked now: {}",
            names.len(),
            names.join(", ")
        ),
        Err(e) => tracing::warn!(
            "looking for unarchived segments of earlier timelines in {}: {e}",
            data_dir.display()
        ),
    }
}
