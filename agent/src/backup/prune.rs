//! Applying retention to an object store: the pure decision (`retention`) turned into the object keys to
//! delete, and their deletion in an order that never leaves a listed backup without its data.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;

use super::catalog;
use super::retention::{self, Decision, Policy};
use super::store::ObjectStore;

/// Retention policy from the envdir: `BACKUP_NUM_TO_RETAIN` backups (Spilo's variable, default 5) and,
/// with `PGHERD_BACKUP_RETENTION_DAYS`, everything needed to restore to any point in that many days.
pub fn policy(envdir: &Path) -> anyhow::Result<Policy> {
    let vars = crate::envdir::read(envdir)?;
    let get = |k: &str| vars.get(k).cloned().flatten().filter(|v| !v.is_empty());
    let keep_last = match get("BACKUP_NUM_TO_RETAIN") {
        Some(v) => v
            .parse()
            .with_context(|| format!("BACKUP_NUM_TO_RETAIN: {v:?} is not a number"))?,
        None => 5,
    };
    let keep_within = match get("PGHERD_BACKUP_RETENTION_DAYS") {
        Some(v) => Some(chrono::Duration::days(v.parse().with_context(|| {
            format!("PGHERD_BACKUP_RETENTION_DAYS: {v:?} is not a number of days")
        })?)),
        None => None,
    };
    Ok(Policy {
        keep_last,
        keep_within,
    })
}

/// What retention will delete: the decision and the objects it means.
#[derive(Debug)]
pub struct Plan {
    pub decision: Decision,
    /// Every object of the backups to delete.
    pub backup_keys: Vec<String>,
    /// WAL older than every kept backup.
    pub wal_keys: Vec<String>,
}

/// Lists the catalog and the archive and decides, deleting nothing.
pub async fn plan(store: &impl ObjectStore, policy: &Policy) -> anyhow::Result<Plan> {
    let all = catalog::list(store).await?;
    let inputs: Vec<retention::Backup> = all
        .iter()
        .map(|m| retention::Backup {
            name: m.name.clone(),
            finished: m.finished_at,
            start_wal: m.start_wal.clone(),
        })
        .collect();
    let decision = retention::decide(&inputs, *policy, Utc::now());
    let prefix = store.settings().backups_prefix();
    let mut backup_keys: Vec<String> = Vec::new();
    if !decision.delete.is_empty() {
        for key in store.list(&prefix).await? {
            let name = key.key[prefix.len()..]
                .split('/')
                .next()
                .unwrap_or_default();
            if decision.delete.iter().any(|d| d == name) {
                backup_keys.push(key.key);
            }
        }
    }
    let mut wal_keys = Vec::new();
    if let Some(horizon) = &decision.wal_horizon {
        let wal_prefix = format!("{}/wal/", store.settings().root());
        for key in store.list(&wal_prefix).await? {
            if retention::wal_deletable(&key.key[wal_prefix.len()..], horizon) {
                wal_keys.push(key.key);
            }
        }
    }
    Ok(Plan {
        decision,
        backup_keys,
        wal_keys,
    })
}

/// Deletes what the plan says: the backups' manifests first, so a backup interrupted mid-deletion is simply
/// not listed any more, then their data, then the WAL. A failure stops before the WAL, which the next
/// run's plan recomputes from the backups that are still listed.
pub async fn execute(store: &impl ObjectStore, plan: &Plan) -> anyhow::Result<()> {
    let mut backups = plan.backup_keys.clone();
    backups.sort_by_key(|k| !k.ends_with(catalog::MANIFEST));
    store.delete(&backups).await?;
    store.delete(&plan.wal_keys).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::tests::m;
    use crate::backup::memory::{MemStore, Op};

    const SEG: u64 = 16 << 20;

    /// A complete backup (data object and manifest) whose WAL starts in segment `seg` of timeline 1.
    fn backup(store: &MemStore, name: &str, finished: &str, seg: u64) {
        let manifest = m(name, finished, seg * SEG + 0x100, 1);
        let dir = format!("{}{name}", store.settings().backups_prefix());
        let body = serde_json::to_vec(&manifest).unwrap();
        store.insert(
            &format!("{dir}/data.tar.zstd"),
            vec![0; 8],
            Default::default(),
        );
        store.insert(
            &format!("{dir}/{}", catalog::MANIFEST),
            body,
            Default::default(),
        );
    }

    fn segment(seg: u64) -> String {
        catalog::wal_file_name(1, catalog::Lsn(seg * SEG), SEG)
    }

    /// Four daily backups starting in segments 2, 4, 6 and 8; WAL segments 1 to 9 and a history file.
    fn archive() -> MemStore {
        let store = MemStore::new();
        for (name, day, seg) in [("a", 1, 2), ("b", 2, 4), ("c", 3, 6), ("d", 4, 8)] {
            backup(&store, name, &format!("2026-11-0{day} 00:00:00+00"), seg);
        }
        for seg in 1..=9 {
            store.insert(
                &store.settings().wal_key(&segment(seg)),
                vec![1],
                Default::default(),
            );
        }
        store.insert(
            &store.settings().wal_key("00000002.history"),
            vec![1],
            Default::default(),
        );
        store
    }

    /// The names of the backups the catalog lists.
    async fn listed(store: &MemStore) -> Vec<String> {
        let all = catalog::list(store).await.unwrap();
        all.into_iter().map(|m| m.name).collect()
    }

    /// Plans and, unless it is a dry run, executes retention, as the CLI does.
    async fn apply(store: &MemStore, policy: &Policy, dry_run: bool) -> anyhow::Result<Decision> {
        let plan = plan(store, policy).await?;
        if !dry_run {
            execute(store, &plan).await?;
        }
        Ok(plan.decision)
    }

    const KEEP_TWO: Policy = Policy {
        keep_last: 2,
        keep_within: None,
    };

    /// What is left after `KEEP_TWO`: backups c and d, the WAL from c's start on, every history file.
    fn kept(store: &MemStore) -> Vec<String> {
        let s = store.settings();
        let mut keys: Vec<String> = ["c", "d"]
            .iter()
            .flat_map(|n| {
                let dir = format!("{}{n}", s.backups_prefix());
                [
                    format!("{dir}/data.tar.zstd"),
                    format!("{dir}/{}", catalog::MANIFEST),
                ]
            })
            .chain((6..=9).map(|seg| s.wal_key(&segment(seg))))
            .chain([s.wal_key("00000002.history")])
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn retention_deletes_exactly_what_the_policy_says() {
        let store = archive();
        let dry = apply(&store, &KEEP_TWO, true).await.unwrap();
        assert_eq!(
            (dry.keep, dry.delete),
            (
                vec!["d".to_string(), "c".into()],
                vec!["b".to_string(), "a".into()]
            )
        );
        assert!(
            store.calls(Op::Delete).is_empty(),
            "a dry run deletes nothing"
        );

        apply(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(store.keys(), kept(&store));
        let deleted = store.calls(Op::Delete);
        assert!(
            deleted[..2].iter().all(|k| k.ends_with(catalog::MANIFEST)),
            "manifests first: {deleted:?}"
        );
        let names = listed(&store).await;
        assert_eq!(names, ["c", "d"]);

        apply(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(store.keys(), kept(&store), "a second run changes nothing");
    }

    #[tokio::test]
    async fn a_failed_delete_is_reported_and_the_next_run_finishes_the_job() {
        let store = archive();
        let before = store.keys();
        store.fail_next(Op::Delete, 1);
        assert!(apply(&store, &KEEP_TWO, false).await.is_err());
        assert_eq!(
            store.keys(),
            before,
            "no WAL is deleted while the backups needing it remain"
        );
        apply(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(store.keys(), kept(&store));

        let store = archive();
        store.fail_matching(Op::Delete, &format!("{}/wal/", store.settings().root()));
        assert!(apply(&store, &KEEP_TWO, false).await.is_err());
        let names = listed(&store).await;
        assert_eq!(names, ["c", "d"], "the backups went first");
        store.clear_faults();
        apply(&store, &KEEP_TWO, false).await.unwrap();
        assert_eq!(
            store.keys(),
            kept(&store),
            "the WAL horizon is recomputed, nothing is forgotten"
        );
    }
}
