//! What the native backup engine reports to the exporter.
//!
//! The engine calls these methods as things happen; the exporter only reads. Nothing here is derived or
//! guessed: a timestamp or size appears on `/metrics` only after the engine reported it, counters start at
//! zero (which is the truth for this process), and a restart of the agent starts them again (Prometheus'
//! `rate()`/`increase()` handle counter resets). For archive failures independent of the engine (and for
//! WAL-G mode) see `pgherd_pg_stat_archiver_*`, which comes from Postgres itself.
//!
//! Usage from the engine:
//! ```no_run
//! let m = pgherd_agent::metrics::backup();
//! m.backup_succeeded(std::time::SystemTime::now(), 1 << 30, 300 << 20);
//! m.catalog(7, Some(std::time::SystemTime::now()));
//! m.wal_pushed();
//! ```

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::encode::encode_families;
use super::families::{Families, Kind};

/// A cheap, cloneable handle; every clone updates the same state.
#[derive(Debug, Clone, Default)]
pub struct BackupMetrics(Arc<Mutex<State>>);

#[derive(Debug, Default, Clone, PartialEq)]
struct State {
    last_success: Option<Success>,
    last_failure: Option<f64>,
    successes: u64,
    failures: u64,
    count: Option<u64>,
    oldest_restorable: Option<f64>,
    wal_pushed: u64,
    wal_push_failed: u64,
    continuity: Option<Continuity>,
}

/// The archive's continuity as last checked.
#[derive(Debug, Clone, PartialEq)]
struct Continuity {
    checked_at: f64,
    found: ArchiveCheck,
}

/// What the continuity monitor (`backup::monitor`) found, in the terms the metrics publish; the engine
/// builds it, so the metrics do not depend on the engine's types.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveCheck {
    /// Files missing on the restore path; a path that cannot be followed at all counts as one.
    pub missing: u64,
    pub first_missing: Option<String>,
    /// Per timeline: end LSN (bytes) of the newest archived segment.
    pub newest: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Success {
    finished_at: f64,
    size_bytes: u64,
    stored_bytes: u64,
}

/// The process-wide handle the exporter publishes. The engine may also create its own and pass it to
/// [`super::Exporter`], but using this one needs no wiring.
pub fn backup() -> BackupMetrics {
    static GLOBAL: OnceLock<BackupMetrics> = OnceLock::new();
    GLOBAL.get_or_init(BackupMetrics::default).clone()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl BackupMetrics {
    fn with(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A base backup completed. `size_bytes` is the database size copied, `stored_bytes` what the object
    /// store holds after compression.
    pub fn backup_succeeded(&self, finished_at: SystemTime, size_bytes: u64, stored_bytes: u64) {
        self.with(|s| {
            s.successes += 1;
            s.last_success = Some(Success {
                finished_at: unix(finished_at),
                size_bytes,
                stored_bytes,
            });
        });
    }

    /// A base backup attempt failed.
    pub fn backup_failed(&self) {
        self.with(|s| {
            s.failures += 1;
            s.last_failure = Some(unix(SystemTime::now()));
        });
    }

    /// The backup catalog as last listed: how many base backups exist, and the earliest point in time a
    /// restore can reach (`None` when there is no complete backup).
    pub fn catalog(&self, count: u64, oldest_restorable: Option<SystemTime>) {
        self.with(|s| {
            s.count = Some(count);
            s.oldest_restorable = oldest_restorable.map(unix);
        });
    }

    /// The archive's continuity from the oldest backup to the newest archived segment, checked now.
    pub fn archive_continuity(&self, found: ArchiveCheck) {
        let c = Continuity {
            checked_at: unix(SystemTime::now()),
            found,
        };
        self.with(|s| s.continuity = Some(c));
    }

    /// One WAL file archived by the engine.
    pub fn wal_pushed(&self) {
        self.with(|s| s.wal_pushed += 1);
    }

    /// One WAL archiving attempt failed.
    pub fn wal_push_failed(&self) {
        self.with(|s| s.wal_push_failed += 1);
    }

    pub fn families(&self) -> Families {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut f = Families::default();
        let c = Kind::Counter;
        let g = Kind::Gauge;
        f.set(
            "pgherd_backup_succeeded_total",
            "Base backups completed by the native engine since the agent started",
            c,
            vec![],
            s.successes as f64,
        );
        f.set(
            "pgherd_backup_failed_total",
            "Base backups that failed since the agent started",
            c,
            vec![],
            s.failures as f64,
        );
        f.set(
            "pgherd_wal_push_total",
            "WAL files archived by the native engine since the agent started",
            c,
            vec![],
            s.wal_pushed as f64,
        );
        f.set(
            "pgherd_wal_push_failed_total",
            "WAL archiving attempts by the native engine that failed",
            c,
            vec![],
            s.wal_push_failed as f64,
        );
        if let Some(ok) = &s.last_success {
            f.set(
                "pgherd_backup_last_success_timestamp_seconds",
                "When the last successful base backup finished (Unix seconds)",
                g,
                vec![],
                ok.finished_at,
            );
            f.set(
                "pgherd_backup_last_size_bytes",
                "Database size copied by the last successful base backup",
                g,
                vec![],
                ok.size_bytes as f64,
            );
            f.set(
                "pgherd_backup_last_stored_bytes",
                "Bytes stored for the last successful base backup (compressed)",
                g,
                vec![],
                ok.stored_bytes as f64,
            );
        }
        if let Some(t) = s.last_failure {
            f.set(
                "pgherd_backup_last_failure_timestamp_seconds",
                "When the last base backup failed (Unix seconds)",
                g,
                vec![],
                t,
            );
        }
        if let Some(n) = s.count {
            f.set(
                "pgherd_backup_count",
                "Base backups in the catalog",
                g,
                vec![],
                n as f64,
            );
        }
        if let Some(t) = s.oldest_restorable {
            f.set(
                "pgherd_backup_oldest_restorable_timestamp_seconds",
                "Earliest point in time a restore can reach (Unix seconds)",
                g,
                vec![],
                t,
            );
        }
        if let Some(c) = &s.continuity {
            f.set(
                "pgherd_wal_archive_continuity_check_timestamp_seconds",
                "When the leader last checked the WAL archive for gaps (Unix seconds)",
                g,
                vec![],
                c.checked_at,
            );
            f.set(
                "pgherd_wal_archive_gap_files",
                "WAL files missing from the archive between the oldest backup and the newest archived \
                 segment; a restore to the latest state would stop at the first",
                g,
                vec![],
                c.found.missing as f64,
            );
            if let Some(first) = &c.found.first_missing {
                f.set(
                    "pgherd_wal_archive_first_gap_info",
                    "The first WAL file missing from the archive",
                    g,
                    vec![("file".into(), first.clone())],
                    1.0,
                );
            }
            for (tli, end) in &c.found.newest {
                f.set(
                    "pgherd_wal_archive_newest_end_lsn_bytes",
                    "End of the newest WAL segment archived per timeline (LSN as bytes)",
                    g,
                    vec![("timeline".into(), tli.to_string())],
                    *end as f64,
                );
            }
        }
        f
    }
}

impl Collector for BackupMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_families(&self.families(), &mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::families::Value;
    use std::time::Duration;

    #[test]
    fn only_reported_facts_appear() {
        let m = BackupMetrics::default();
        let f = m.families();
        assert_eq!(
            f.by_name.len(),
            4,
            "only the counters: {:?}",
            f.by_name.keys()
        );
        assert!(f
            .by_name
            .values()
            .all(|fam| fam.samples[0].1 == Value::Number(0.0)));

        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        m.clone().backup_succeeded(at, 100, 40);
        m.backup_failed();
        m.catalog(3, Some(at));
        m.wal_pushed();
        m.wal_pushed();
        let f = m.families();
        let v = |n: &str| f.by_name[n].samples[0].1.clone();
        assert_eq!(
            v("pgherd_backup_last_success_timestamp_seconds"),
            Value::Number(1.7e9)
        );
        assert_eq!(v("pgherd_backup_last_stored_bytes"), Value::Number(40.0));
        assert_eq!(v("pgherd_backup_count"), Value::Number(3.0));
        assert_eq!(v("pgherd_wal_push_total"), Value::Number(2.0));
        assert_eq!(v("pgherd_backup_failed_total"), Value::Number(1.0));
        m.catalog(0, None);
        assert!(!m
            .families()
            .by_name
            .contains_key("pgherd_backup_oldest_restorable_timestamp_seconds"));
    }
}
