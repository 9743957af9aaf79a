//! The WAL archive stays complete across failovers and switchovers, and a restore to the latest state
//! never stops silently short: real PostgreSQL 15, Patroni 4, etcd and Garage.
//!
//! Each scenario is one an operator meets: the leader dies while S3 is down with segments waiting; the
//! leader dies holding a complete segment it never archived; a segment goes missing or rots in the bucket.

use std::time::Duration;

use pgherd_tests::{archive_now, garage_spec, sample, Cluster, ClusterSpec, Etcd, Garage, Member};
use sha2::{Digest, Sha256};

const BOOT: Duration = Duration::from_secs(120);

fn spec(scope: &str, members: usize, garage: &Garage) -> anyhow::Result<ClusterSpec> {
    let mut spec = garage_spec(scope, members, garage)?;
    spec.synchronous_mode = members > 1;
    spec.extra_env
        .insert("PGHERD_ARCHIVE_CHECK_INTERVAL".into(), "5".into());
    Ok(spec)
}

/// `backup verify --json` on the member's envdir: (exit 0, report).
fn verify(m: &Member) -> anyhow::Result<(bool, serde_json::Value)> {
    let envdir = m.envdir().display().to_string();
    let out = m.agent(&["backup", "verify", "--json", "--envdir", &envdir])?;
    let report = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "backup verify printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.success(), report))
}

/// Waits until the archive is complete up to a segment on timeline `timeline` or later.
async fn until_complete_on(
    cluster: &Cluster,
    m: &Member,
    timeline: u64,
) -> anyhow::Result<serde_json::Value> {
    cluster
        .until(
            Duration::from_secs(240),
            &format!("a complete archive through timeline {timeline}"),
            || async {
                let (ok, r) = verify(m)?;
                // The newest segment itself is on the new timeline, not only its history file.
                let end_tli = r["end"]
                    .as_str()
                    .and_then(|e| u64::from_str_radix(e.get(..8)?, 16).ok());
                if ok && end_tli.is_some_and(|t| t >= timeline) {
                    return Ok(Some(r));
                }
                // Kept as the reason if the wait times out.
                anyhow::bail!("backup verify says: {r}")
            },
        )
        .await
}

async fn wait_first_backup(cluster: &Cluster, m: &Member) -> anyhow::Result<()> {
    cluster
        .until(
            Duration::from_secs(120),
            "the first base backup",
            || async { Ok((!m.backups()?.is_empty()).then_some(())) },
        )
        .await
}

/// Waits until member `i` leads and accepts writes.
async fn until_leader(cluster: &Cluster, i: usize) -> anyhow::Result<tokio_postgres::Client> {
    let name = cluster.member(i).name.clone();
    cluster
        .until(
            Duration::from_secs(120),
            &format!("{name} to lead"),
            || async {
                let view = cluster.view().await?;
                if view.leader().map(|l| l.name.as_str()) != Some(name.as_str()) {
                    return Ok(None);
                }
                let c = cluster.member(i).connect("postgres").await?;
                let in_recovery: bool =
                    c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
                Ok((!in_recovery).then_some(c))
            },
        )
        .await
}

/// Inserts `n` rows after `next`, one transaction each (every one acknowledged), and returns their ids.
async fn insert(c: &tokio_postgres::Client, next: &mut i64, n: usize) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        *next += 1;
        c.execute(
            "INSERT INTO acked VALUES ($1::bigint, repeat(md5($1::bigint::text), 8))",
            &[&*next],
        )
        .await?;
        ids.push(*next);
    }
    Ok(ids)
}

/// Clones `source` to the latest state and checks it holds exactly the acknowledged rows.
async fn clone_has_every_row(
    etcd: &Etcd,
    garage: &Garage,
    source: &str,
    acked: &[i64],
) -> anyhow::Result<()> {
    let mut spec = garage_spec(&format!("{source}-clone"), 1, garage)?;
    spec.extra_env.extend(garage.clone_env(source));
    let clone = Cluster::start(spec, &etcd.host())?;
    clone.wait_ready(0, BOOT).await?;
    let c = clone.member(0).connect("postgres").await?;
    let ids: Vec<i64> = c
        .query("SELECT id FROM acked ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&i64> = acked
        .iter()
        .filter(|i| ids.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "the clone to latest lacks {} of {} acknowledged rows (first {:?})",
        missing.len(),
        acked.len(),
        missing.first()
    );
    eprintln!(
        "clone to latest holds all {} acknowledged rows",
        acked.len()
    );
    Ok(())
}

fn sha256_file(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(format!("{:x}", Sha256::digest(std::fs::read(path)?)))
}

/// The scenario: S3 refuses connections while the leader completes segments, the leader's whole
/// process tree is killed, the synchronous replica takes over, S3 returns. The promoted member had
/// received those segments by streaming and archives them itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_during_an_s3_outage_leaves_no_gap_and_a_clone_has_every_row() -> anyhow::Result<()>
{
    let etcd = Etcd::start().await?;
    let mut garage = Garage::start().await?;
    let mut cluster = Cluster::start(spec("outage", 2, &garage)?, &etcd.host())?;
    cluster.wait_ready(1, BOOT).await?;
    cluster.wait_sync_standby(Duration::from_secs(60)).await?;
    let old = cluster.leader().await?;
    wait_first_backup(&cluster, cluster.member(old)).await?;
    let c = cluster.member(old).connect("postgres").await?;
    c.batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY, pad text)")
        .await?;
    archive_now(&c).await?;

    garage.pause();
    let (mut next, mut acked) = (0, Vec::new());
    for _ in 0..6 {
        acked.extend(insert(&c, &mut next, 300).await?);
        c.query_one("SELECT pg_switch_wal()", &[]).await?;
    }
    let waiting = cluster.member(old).ready_files();
    assert!(waiting >= 6, "{waiting} segments wait on the leader");
    let new = 1 - old;
    drop(c);
    cluster.member_mut(old).kill9();
    let c = until_leader(&cluster, new).await?;
    garage.resume().await?;
    acked.extend(insert(&c, &mut next, 10).await?);
    c.query_one("SELECT pg_switch_wal()", &[]).await?;
    let report = until_complete_on(&cluster, cluster.member(new), 2).await?;
    let swept = cluster
        .member(new)
        .log_tail(2000)
        .contains("never marked for archiving");
    eprintln!(
        "{waiting} segments were waiting at the failover; archive: {}; orphaned segment marked by the agent: {swept}",
        report["end"]
    );
    // The leader's monitor agrees, so the alert stays quiet.
    cluster
        .until(Duration::from_secs(60), "gap metric 0", || async {
            let text = cluster.member(new).scrape().await?;
            Ok((sample(&text, "pgherd_wal_archive_gap_files") == Some(0.0)).then_some(()))
        })
        .await?;
    clone_has_every_row(&etcd, &garage, "outage", &acked).await
}

/// The leader is killed with S3 healthy while it holds complete segments it has not archived (its
/// archive_command is made to fail); the replica archives them byte-identically. The old leader rejoins,
/// a switchover hands leadership back, and the archive still has no gap; no member ever saw a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unarchived_segment_at_failover_and_a_switchover_leave_no_gap() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let mut cluster = Cluster::start(spec("unarchived", 2, &garage)?, &etcd.host())?;
    cluster.wait_ready(1, BOOT).await?;
    cluster.wait_sync_standby(Duration::from_secs(60)).await?;
    let old = cluster.leader().await?;
    let new = 1 - old;
    wait_first_backup(&cluster, cluster.member(old)).await?;
    let c = cluster.member(old).connect("postgres").await?;
    c.batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY, pad text)")
        .await?;
    archive_now(&c).await?;
    // postgresql.auto.conf wins over Patroni's postgresql.conf and is not replicated.
    c.batch_execute("ALTER SYSTEM SET archive_command = '/bin/false'")
        .await?;
    c.batch_execute("SELECT pg_reload_conf()").await?;
    let (mut next, mut acked) = (0, Vec::new());
    acked.extend(insert(&c, &mut next, 300).await?);
    let segment: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    acked.extend(insert(&c, &mut next, 20).await?);

    // The replica's copy of the segment is the leader's, byte for byte.
    let (leader_copy, replica_copy) = (
        cluster.member(old).data_dir().join("pg_wal").join(&segment),
        cluster.member(new).data_dir().join("pg_wal").join(&segment),
    );
    let status = cluster.member(new).data_dir().join("pg_wal/archive_status");
    cluster
        .until(
            Duration::from_secs(60),
            "the replica to archive the segment",
            || async {
                Ok(status
                    .join(format!("{segment}.done"))
                    .exists()
                    .then_some(()))
            },
        )
        .await?;
    assert_eq!(
        sha256_file(&leader_copy)?,
        sha256_file(&replica_copy)?,
        "{segment}"
    );
    assert!(
        cluster
            .member(old)
            .data_dir()
            .join(format!("pg_wal/archive_status/{segment}.ready"))
            .exists(),
        "the leader never archived {segment}"
    );
    drop(c);
    cluster.member_mut(old).kill9();
    let c = until_leader(&cluster, new).await?;
    acked.extend(insert(&c, &mut next, 20).await?);
    c.query_one("SELECT pg_switch_wal()", &[]).await?;
    until_complete_on(&cluster, cluster.member(new), 2).await?;

    // The old leader rejoins without the broken archive_command, then takes over again by switchover.
    let auto = cluster.member(old).data_dir().join("postgresql.auto.conf");
    let kept: String = std::fs::read_to_string(&auto)?
        .lines()
        .filter(|l| !l.starts_with("archive_command"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&auto, kept)?;
    cluster.member_mut(old).start()?;
    cluster.wait_ready(1, BOOT).await?;
    cluster.wait_sync_standby(Duration::from_secs(60)).await?;
    let (new_name, old_name) = (
        cluster.member(new).name.clone(),
        cluster.member(old).name.clone(),
    );
    cluster
        .member(new)
        .patroni()
        .switchover(&new_name, Some(&old_name))
        .await?;
    let c = until_leader(&cluster, old).await?;
    acked.extend(insert(&c, &mut next, 20).await?);
    c.query_one("SELECT pg_switch_wal()", &[]).await?;
    let report = until_complete_on(&cluster, cluster.member(old), 3).await?;
    eprintln!(
        "after failover and switchover: complete through {}",
        report["end"]
    );
    // Replicas and leaders pushed the same names throughout: an identical copy is accepted, a different
    // one would have failed the push.
    let text = cluster.member(new).scrape().await?;
    assert_eq!(
        sample(&text, "pgherd_wal_push_failed_total"),
        Some(0.0),
        "no push of {new_name} was refused"
    );
    assert!(sample(&text, "pgherd_wal_push_total").unwrap_or(0.0) > 0.0);
    clone_has_every_row(&etcd, &garage, "unarchived", &acked).await
}

/// S3 key of archived WAL file `name` in the test bucket.
async fn wal_key(garage: &Garage, name: &str) -> anyhow::Result<String> {
    let out = garage
        .s3()
        .list_objects_v2()
        .bucket(&garage.bucket)
        .send()
        .await?;
    out.contents()
        .iter()
        .filter_map(|o| o.key())
        .find(|k| k.ends_with(&format!("/pgherd/wal/{name}")))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{name} is not archived"))
}

/// Starts a clone of `source` to the latest state and waits for its log to show `expected`; the clone
/// never gets a leader or a data directory Patroni starts.
async fn clone_fails_with(
    etcd: &Etcd,
    garage: &Garage,
    source: &str,
    name: &str,
    expected: &str,
) -> anyhow::Result<()> {
    let mut spec = garage_spec(name, 1, garage)?;
    spec.extra_env.extend(garage.clone_env(source));
    let clone = Cluster::start(spec, &etcd.host())?;
    let m = clone.member(0);
    let line = clone
        .until(Duration::from_secs(120), expected, || async {
            Ok(m.log_tail(600)
                .lines()
                .find(|l| l.contains(expected))
                .map(str::to_string))
        })
        .await?;
    eprintln!("{name}: {line}");
    assert!(
        clone
            .view()
            .await
            .map(|v| v.leader().is_none())
            .unwrap_or(true),
        "the clone never got a leader"
    );
    Ok(())
}

/// A segment in the middle of the archive rots (replaced by garbage), then disappears. A clone to the
/// latest state fails in both cases, naming why, instead of coming up without what follows; `backup
/// verify`, `backup list`, the metrics and `status` show the missing segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_corrupt_segment_fails_a_clone_to_latest_and_shows_as_a_gap(
) -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let cluster = Cluster::start(spec("holes", 1, &garage)?, &etcd.host())?;
    cluster.wait_ready(0, BOOT).await?;
    let m = cluster.member(0);
    wait_first_backup(&cluster, m).await?;
    let c = m.connect("postgres").await?;
    c.batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY, pad text)")
        .await?;
    let mut next = 0;
    let mut segments = Vec::new();
    for _ in 0..4 {
        insert(&c, &mut next, 100).await?;
        segments.push(
            c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
                .await?
                .get::<_, String>(0),
        );
        archive_now(&c).await?;
    }
    let hole = segments[1].clone();
    let key = wal_key(&garage, &hole).await?;
    let s3 = garage.s3();

    // Rotten: the name is there, so only the replay can tell.
    let head = s3
        .head_object()
        .bucket(&garage.bucket)
        .key(&key)
        .send()
        .await?;
    s3.put_object()
        .bucket(&garage.bucket)
        .key(&key)
        .set_metadata(head.metadata().cloned())
        .body(b"not a WAL segment".to_vec().into())
        .send()
        .await?;
    clone_fails_with(
        &etcd,
        &garage,
        "holes",
        "holes-rotten",
        "the replay ended at",
    )
    .await?;

    // Missing: found before anything is restored.
    s3.delete_object()
        .bucket(&garage.bucket)
        .key(&key)
        .send()
        .await?;
    let (ok, report) = verify(m)?;
    assert!(!ok, "verify exits non-zero on a gap");
    assert_eq!(report["missing"][0], hole.as_str(), "{report}");
    let envdir = m.envdir().display().to_string();
    let list = m.agent(&["backup", "list", "--envdir", &envdir])?;
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("WAL archive: missing 1 WAL file before") && list.contains(&hole),
        "{list}"
    );
    let gap_info = format!("pgherd_wal_archive_first_gap_info{{file=\"{hole}\"}} 1");
    cluster
        .until(
            Duration::from_secs(60),
            "the gap in the metrics",
            || async {
                let text = m.scrape().await?;
                Ok((sample(&text, "pgherd_wal_archive_gap_files") == Some(1.0)
                    && text.contains(&gap_info))
                .then_some(()))
            },
        )
        .await?;
    let metrics = format!("--metrics=http://127.0.0.1:{}/metrics", m.metrics_port);
    let status = m.agent(&["status", &metrics])?;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("WAL archiving: GAP") && status.contains(&format!("first {hole}")),
        "{status}"
    );
    clone_fails_with(
        &etcd,
        &garage,
        "holes",
        "holes-missing",
        "missing 1 WAL file before",
    )
    .await?;
    Ok(())
}
