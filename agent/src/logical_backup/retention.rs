//! Which logical backups to delete after a successful one. Pure: the caller lists, this decides, the caller
//! deletes.
//!
//! Rules (docs/logical-backup.md):
//! - a complete backup goes when it is older than the age limit (`LOGICAL_BACKUP_S3_RETENTION_TIME`) or is
//!   not among the newest `LOGICAL_BACKUP_RETENTION_COUNT`; the newest complete backup and the one just
//!   written are always kept;
//! - Zalando's `{epoch}.sql.gz` files under the same prefix follow the age limit only. Zalando's own rule
//!   keeps the newest file older than the cutoff so that a job failing for weeks never empties the prefix;
//!   here a newer complete pgherd backup always exists (retention runs only after a success), so every
//!   expired Zalando file goes, unless no complete pgherd backup exists at all;
//! - a directory without a manifest that is older than the newest complete backup is an interrupted run and
//!   goes; a newer one may be a run in progress and stays.

use chrono::{DateTime, Months, Utc};

use super::layout::{parse_id, ZalandoDump};

pub use pgherd_shared::age::{parse as parse_age, Age as MaxAge};

/// Backups started before this instant are expired: calendar months and years count as such, everything
/// else is a fixed number of seconds (`date -d` terms).
pub fn cutoff_of(age: MaxAge, now: DateTime<Utc>) -> DateTime<Utc> {
    let t = now
        .checked_sub_months(Months::new(age.months))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    t - chrono::Duration::seconds(age.seconds)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub max_age: Option<MaxAge>,
    pub max_count: Option<usize>,
}

/// What to delete, by backup id (whole directories) and Zalando file name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub backups: Vec<String>,
    pub incomplete: Vec<String>,
    pub zalando: Vec<String>,
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty() && self.incomplete.is_empty() && self.zalando.is_empty()
    }
}

/// `complete` and `incomplete` are backup ids (any order); `keep` is the backup just written.
pub fn decide(
    complete: &[String],
    incomplete: &[String],
    zalando: &[ZalandoDump],
    policy: Policy,
    now: DateTime<Utc>,
    keep: &str,
) -> Decision {
    let cutoff = policy.max_age.map(|a| cutoff_of(a, now));
    let mut complete: Vec<&String> = complete.iter().collect();
    complete.sort_by(|a, b| b.cmp(a));
    let newest = complete.first().map(|s| s.as_str());
    let expired = |id: &str| match (cutoff, parse_id(id)) {
        (Some(c), Some(t)) => t < c,
        _ => false,
    };
    let backups = complete
        .iter()
        .enumerate()
        .filter(|(i, id)| {
            let over_count = policy.max_count.is_some_and(|n| *i >= n);
            Some(id.as_str()) != newest && id.as_str() != keep && (over_count || expired(id))
        })
        .map(|(_, id)| id.to_string())
        .collect();
    let incomplete = incomplete
        .iter()
        .filter(|id| newest.is_some_and(|n| id.as_str() < n) && id.as_str() != keep)
        .cloned()
        .collect();
    let newest_zalando = zalando.iter().map(|z| z.at).max();
    let zalando = zalando
        .iter()
        .filter(|z| cutoff.is_some_and(|c| z.at < c))
        .filter(|z| newest.is_some() || Some(z.at) != newest_zalando)
        .map(|z| z.name.clone())
        .collect();
    Decision {
        backups,
        incomplete,
        zalando,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical_backup::layout::backup_id;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 3, 0, 0).unwrap()
    }

    fn days_ago(d: i64) -> String {
        backup_id(now() - chrono::Duration::days(d))
    }

    fn zalando(days: i64) -> ZalandoDump {
        let at = now() - chrono::Duration::days(days);
        ZalandoDump {
            name: format!("{}.sql.gz", at.timestamp()),
            at,
            size: 1,
        }
    }

    #[test]
    fn ages_as_date_reads_them() {
        let a = |s: &str| parse_age(s).unwrap().unwrap();
        assert_eq!(
            a("7 days"),
            MaxAge {
                months: 0,
                seconds: 7 * 86400
            }
        );
        assert_eq!(
            a("1 month"),
            MaxAge {
                months: 1,
                seconds: 0
            }
        );
        assert_eq!(a("2 weeks"), a("14 days"));
        assert_eq!(
            a("12 hours"),
            MaxAge {
                months: 0,
                seconds: 43200
            }
        );
        assert_eq!(
            a("1 year 2 days ago"),
            MaxAge {
                months: 12,
                seconds: 2 * 86400
            }
        );
        assert_eq!(a("3days"), a("3 days"));
        assert_eq!(parse_age("  ").unwrap(), None);
        for bad in ["days", "7", "7 parsecs", "-1 day", "1.5 days"] {
            assert!(parse_age(bad).unwrap_err().contains("e.g."), "{bad:?}");
        }
        // A calendar month, as `date -d "1 month ago"`.
        let cut = cutoff_of(
            a("1 month"),
            Utc.with_ymd_and_hms(2026, 3, 31, 0, 0, 0).unwrap(),
        );
        assert_eq!(cut, Utc.with_ymd_and_hms(2026, 2, 28, 0, 0, 0).unwrap());
    }

    #[test]
    fn age_and_count_with_the_newest_and_the_new_one_kept() {
        let ids: Vec<String> = [0, 3, 6, 9, 12].map(days_ago).to_vec();
        let week = parse_age("7 days").unwrap();
        let d = decide(
            &ids,
            &[],
            &[],
            Policy {
                max_age: week,
                max_count: None,
            },
            now(),
            &ids[0],
        );
        assert_eq!(d.backups, [days_ago(9), days_ago(12)]);
        let d = decide(
            &ids,
            &[],
            &[],
            Policy {
                max_age: None,
                max_count: Some(2),
            },
            now(),
            &ids[0],
        );
        assert_eq!(d.backups, [days_ago(6), days_ago(9), days_ago(12)]);
        // Everything expired: the newest complete backup stays.
        let old: Vec<String> = [20, 30].map(days_ago).to_vec();
        let d = decide(
            &old,
            &[],
            &[],
            Policy {
                max_age: week,
                max_count: Some(1),
            },
            now(),
            "x",
        );
        assert_eq!(d.backups, [days_ago(30)]);
        assert!(decide(&ids, &[], &[], Policy::default(), now(), &ids[0]).is_empty());
    }

    #[test]
    fn interrupted_runs_older_than_the_newest_complete_one_go() {
        let complete = [days_ago(1)];
        let incomplete = [days_ago(2), days_ago(0)];
        let d = decide(
            &complete,
            &incomplete,
            &[],
            Policy::default(),
            now(),
            &complete[0],
        );
        assert_eq!(d.incomplete, [days_ago(2)], "a newer one may be running");
        assert!(decide(&[], &incomplete, &[], Policy::default(), now(), "x")
            .incomplete
            .is_empty());
    }

    #[test]
    fn zalando_files_follow_the_age_limit() {
        let z = [zalando(1), zalando(10), zalando(20)];
        let week = parse_age("1 week").unwrap();
        let p = Policy {
            max_age: week,
            max_count: Some(1),
        };
        let d = decide(&[days_ago(0)], &[], &z, p, now(), &days_ago(0));
        assert_eq!(d.zalando, [z[1].name.clone(), z[2].name.clone()]);
        // Without any complete pgherd backup, the newest Zalando file stays (Zalando's own guarantee).
        let all_old = [zalando(10), zalando(20)];
        let d = decide(&[], &[], &all_old, p, now(), "x");
        assert_eq!(d.zalando, [all_old[1].name.clone()]);
        assert!(decide(&[], &[], &z, Policy::default(), now(), "x")
            .zalando
            .is_empty());
    }

    proptest! {
        #[test]
        fn invariants(
            ages in proptest::collection::btree_set(0i64..400, 1..20),
            broken in proptest::collection::btree_set(0i64..400, 0..5),
            zal in proptest::collection::btree_set(0i64..400, 0..5),
            count in proptest::option::of(1usize..6),
            age_days in proptest::option::of(0u32..200),
        ) {
            let ids: Vec<String> = ages.iter().map(|d| days_ago(*d)).collect();
            let broken: Vec<String> = broken.iter().map(|d| days_ago(*d) ).filter(|b| !ids.contains(b)).collect();
            let zal: Vec<ZalandoDump> = zal.iter().map(|d| zalando(*d)).collect();
            let max_age = age_days.map(|d| MaxAge { months: 0, seconds: i64::from(d) * 86400 });
            let policy = Policy { max_age, max_count: count };
            let newest = ids.iter().max().unwrap().clone();
            let keep = ids[ids.len() / 2].clone();
            let d = decide(&ids, &broken, &zal, policy, now(), &keep);
            prop_assert!(!d.backups.contains(&newest));
            prop_assert!(!d.backups.contains(&keep));
            let cutoff = max_age.map(|a| cutoff_of(a, now()));
            let mut sorted = ids.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            for (i, id) in sorted.iter().enumerate() {
                let violates = count.is_some_and(|n| i >= n)
                    || cutoff.is_some_and(|c| parse_id(id).unwrap() < c);
                let protected = *id == newest || *id == keep;
                prop_assert_eq!(d.backups.contains(id), violates && !protected, "{}", id);
            }
            for b in &broken {
                prop_assert_eq!(d.incomplete.contains(b), *b < newest);
            }
            for z in &zal {
                prop_assert_eq!(d.zalando.contains(&z.name), cutoff.is_some_and(|c| z.at < c));
            }
        }
    }
}
