//! SIGTERM (what the kubelet sends) stops a member promptly and cleanly while the agent's backup services
//! are busy: WAL archiving through the agent socket, the backup scheduler and the continuity monitor, with
//! S3 answering and with S3 gone. A pod whose agent does not exit holds its deletion for the whole grace
//! period.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherd_tests::service::wait_gone;
use pgherd_tests::{garage_spec, sample, Cluster, Etcd, Garage};

const BOOT: Duration = Duration::from_secs(120);

/// Writes and switches WAL segments over its own connection, four a second (a pace archiving keeps up
/// with), until `stop` is set or the server goes away, so archive commands are running when the member is
/// stopped. Postgres archives every `.ready` segment before its shutdown completes, so an unbounded
/// backlog would measure the archive, not the agent. The counter is how many segments it has switched.
fn spawn_wal_writer(
    c: tokio_postgres::Client,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let switched = Arc::new(AtomicU64::new(0));
    let count = switched.clone();
    let writer = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let wrote = c
                .batch_execute(
                    "INSERT INTO w SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 2000) g; \
                     SELECT pg_switch_wal()",
                )
                .await;
            if wrote.is_err() {
                break;
            }
            count.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (writer, switched)
}

/// Stops member 0 with SIGTERM and checks what the kubelet needs: exit 0 (Patroni stopped Postgres within
/// the agent's stop timeout) within `within`, no process left behind, Postgres shut down cleanly.
fn stop_cleanly(cluster: &mut Cluster, what: &str, within: Duration) -> anyhow::Result<()> {
    let member = cluster.member_mut(0);
    let tree = member.process_tree();
    assert!(
        tree.len() > 3,
        "a running member has a process tree: {tree:?}"
    );
    let backlog = member.ready_files();
    let started = Instant::now();
    let status = member.sigterm(Duration::from_secs(120))?;
    let took = started.elapsed();
    eprintln!(
        "{what}: the agent exited with {status} after {took:?} ({backlog} segments waiting)\n{}",
        member.log_tail(12)
    );
    assert!(
        status.success(),
        "{what}: exited with {status}: {}",
        member.log_tail(30)
    );
    assert!(took < within, "{what}: stop took {took:?}");
    let leftover = wait_gone(&tree, Duration::from_secs(2));
    assert!(
        leftover.is_empty(),
        "{what}: processes left behind: {leftover:?}"
    );
    assert!(
        !member.data_dir().join("postmaster.pid").exists(),
        "{what}: postgres shut down cleanly"
    );
    assert!(
        member.log_tail(20).contains("pgherd-agent stopped"),
        "{what}: {}",
        member.log_tail(20)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly_while_archiving_and_backing_up() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut garage = Garage::start().await?;
    let mut spec = garage_spec("stop", 1, &garage)?;
    // The continuity monitor lists the archive every second, so it is busy too.
    spec.extra_env
        .insert("PGHERD_ARCHIVE_CHECK_INTERVAL".into(), "1".into());
    // The agent's default, not the harness's 30 s: with S3 gone, the stop takes 20-28 s
    // here (three attempts at the first waiting segment, each waiting out the S3 client's retries).
    spec.extra_env
        .insert("PGHERD_STOP_TIMEOUT".into(), "90".into());
    let mut cluster = Cluster::start(spec, &etcd.host())?;
    cluster.wait_ready(0, BOOT).await?;
    let m = cluster.member(0);
    // The scheduler's first backup of a new leader, through a `backup push` child of the agent.
    cluster
        .until(
            Duration::from_secs(90),
            "the automatic first base backup",
            || async { Ok((!m.backups()?.is_empty()).then_some(())) },
        )
        .await?;
    let c = m.connect("postgres").await?;
    c.batch_execute("CREATE TABLE w (id int, v text)").await?;

    // Archiving through the socket, under way when SIGTERM arrives.
    let stop = Arc::new(AtomicBool::new(false));
    let (writer, switched) = spawn_wal_writer(m.connect("postgres").await?, stop.clone());
    // Both: the push count includes segments from before the writer (the first backup's), which the
    // agent compresses in parallel, so three pushes alone do not mean the writer has switched three.
    cluster
        .until(
            Duration::from_secs(60),
            "the writer's segments archived through the agent",
            || async {
                let pushed = sample(&m.scrape().await?, "pgherd_wal_push_total").unwrap_or(0.0);
                let switched = switched.load(Ordering::Relaxed);
                Ok((pushed >= 3.0 && switched >= 3).then_some(()))
            },
        )
        .await?;
    stop_cleanly(&mut cluster, "archiving to S3", Duration::from_secs(15))?;
    stop.store(true, Ordering::Relaxed);
    writer.await?;

    // Again with S3 gone: archive commands fail and retry while the member stops.
    cluster.member_mut(0).start()?;
    cluster.wait_ready(0, BOOT).await?;
    garage.pause();
    let m = cluster.member(0);
    let stop = Arc::new(AtomicBool::new(false));
    let (writer, _) = spawn_wal_writer(m.connect("postgres").await?, stop.clone());
    cluster
        .until(
            Duration::from_secs(60),
            "archiving to fail while S3 is gone",
            || async {
                let c = m.connect("postgres").await?;
                let failed: i64 = c
                    .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
                    .await?
                    .get(0);
                Ok((failed > 0).then_some(()))
            },
        )
        .await?;
    // Postgres's archiver tries the first waiting segment three times before its shutdown completes.
    stop_cleanly(&mut cluster, "S3 unreachable", Duration::from_secs(60))?;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    Ok(())
}
