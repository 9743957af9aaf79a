//! Which base backups and WAL segments to keep: a pure decision, so it can be tested exhaustively.
//!
//! Spilo's postgres_backup.sh used one number as both a count and a number of days, ran retention even when
//! the backup that preceded it had failed, and parsed `wal-g backup-list` text. Here the caller passes only
//! complete backups (those with a manifest), calls this only after a successful backup, and gets back the
//! backups to delete and the oldest WAL segment any kept backup needs.

use chrono::{DateTime, Duration, Utc};

/// A complete backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub name: String,
    pub finished: DateTime<Utc>,
    /// WAL file name (24 hex digits) of the segment holding the backup's start LSN.
    pub start_wal: String,
}

/// Retention policy: keep the `keep_last` newest backups, and, with `keep_within`, everything needed to
/// restore to any point inside that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// At least 1: the newest successful backup is never deleted.
    pub keep_last: usize,
    pub keep_within: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Newest first.
    pub keep: Vec<String>,
    pub delete: Vec<String>,
    /// WAL segments strictly older than this position (log/segment part of the name, timeline ignored)
    /// are needed by no kept backup. `None` when nothing is kept (no backups at all).
    pub wal_horizon: Option<String>,
}

pub fn decide(backups: &[Backup], policy: Policy, now: DateTime<Utc>) -> Decision {
    let mut sorted: Vec<&Backup> = backups.iter().collect();
    sorted.sort_by(|a, b| {
        b.finished
            .cmp(&a.finished)
            .then_with(|| b.name.cmp(&a.name))
    });
    let keep_last = policy.keep_last.max(1);
    let mut keep = vec![false; sorted.len()];
    for k in keep.iter_mut().take(keep_last) {
        *k = true;
    }
    if let Some(window) = policy.keep_within {
        let cutoff = now - window;
        let mut anchored = false;
        for (i, b) in sorted.iter().enumerate() {
            if b.finished > cutoff {
                keep[i] = true;
            } else if !anchored {
                // The newest backup from before the window: restoring to the window's first moment
                // starts from it.
                keep[i] = true;
                anchored = true;
            }
        }
    }
    let mut decision = Decision::default();
    for (b, k) in sorted.iter().zip(&keep) {
        if *k {
            decision.keep.push(b.name.clone());
        } else {
            decision.delete.push(b.name.clone());
        }
    }
    decision.wal_horizon = sorted
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(b, _)| position(&b.start_wal).to_string())
        .min();
    decision
}

/// The log/segment part of a WAL file name (drops the 8-digit timeline), which orders segments across
/// timelines.
pub fn position(wal_name: &str) -> &str {
    wal_name.get(8..24).unwrap_or(wal_name)
}

/// Whether an archived WAL object may be deleted under `horizon`. Timeline history files are tiny and
/// needed to follow timeline switches during any restore, so they are always kept.
pub fn wal_deletable(object_name: &str, horizon: &str) -> bool {
    if object_name.contains(".history") {
        return false;
    }
    let base = object_name.split('.').next().unwrap_or(object_name);
    base.len() >= 24
        && base[..24].bytes().all(|c| c.is_ascii_hexdigit())
        && position(base) < horizon
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(days_ago: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::days(days_ago)
    }

    fn b(name: &str, finished: DateTime<Utc>, seg: u32) -> Backup {
        Backup {
            name: name.into(),
            finished,
            start_wal: format!("00000001{:016X}", seg),
        }
    }

    #[test]
    fn keeps_the_newest_n() {
        let now = Utc::now();
        let all = [
            b("a", at(4, now), 1),
            b("b", at(3, now), 5),
            b("c", at(2, now), 9),
            b("d", at(1, now), 12),
        ];
        let d = decide(
            &all,
            Policy {
                keep_last: 2,
                keep_within: None,
            },
            now,
        );
        assert_eq!(d.keep, ["d", "c"]);
        assert_eq!(d.delete, ["b", "a"]);
        assert_eq!(d.wal_horizon.as_deref(), Some("0000000000000009"));
        assert!(wal_deletable(
            "000000010000000000000008.zst",
            "0000000000000009"
        ));
        assert!(!wal_deletable(
            "000000020000000000000009.zst",
            "0000000000000009"
        ));
        assert!(!wal_deletable("00000002.history.zst", "0000000000000009"));
    }

    #[test]
    fn window_keeps_its_anchor() {
        let now = Utc::now();
        let all = [
            b("a", at(10, now), 1),
            b("b", at(8, now), 2),
            b("c", at(5, now), 3),
            b("d", at(1, now), 4),
        ];
        let d = decide(
            &all,
            Policy {
                keep_last: 1,
                keep_within: Some(Duration::days(7)),
            },
            now,
        );
        assert_eq!(
            d.keep,
            ["d", "c", "b"],
            "b (8 days) is the base for restoring to 7 days ago"
        );
        assert_eq!(d.delete, ["a"]);
    }

    #[test]
    fn nothing_to_decide_without_backups() {
        let d = decide(
            &[],
            Policy {
                keep_last: 2,
                keep_within: None,
            },
            Utc::now(),
        );
        assert_eq!(d, Decision::default());
    }

    proptest! {
        #[test]
        fn invariants(ages in proptest::collection::vec(0i64..1000, 0..30), keep_last in 0usize..6, window in proptest::option::of(0i64..500)) {
            let now = Utc::now();
            let all: Vec<Backup> = ages.iter().enumerate()
                .map(|(i, &h)| b(&format!("b{i}"), now - Duration::hours(h), 1000 - h as u32))
                .collect();
            let policy = Policy { keep_last, keep_within: window.map(Duration::hours) };
            let d = decide(&all, policy, now);
            // Every backup is decided exactly once.
            prop_assert_eq!(d.keep.len() + d.delete.len(), all.len());
            if let Some(newest) = all.iter().max_by(|x, y| x.finished.cmp(&y.finished).then_with(|| x.name.cmp(&y.name))) {
                prop_assert!(d.keep.contains(&newest.name), "newest backup kept");
            }
            prop_assert!(d.keep.len() >= keep_last.max(1).min(all.len()));
            // No kept backup needs WAL older than the horizon.
            for k in &d.keep {
                let kb = all.iter().find(|x| &x.name == k).unwrap();
                prop_assert!(!wal_deletable(&kb.start_wal, d.wal_horizon.as_deref().unwrap()));
            }
            // Inside the window everything is kept.
            if let Some(h) = window {
                for x in &all {
                    if x.finished > now - Duration::hours(h) {
                        prop_assert!(d.keep.contains(&x.name));
                    }
                }
            }
        }
    }
}
