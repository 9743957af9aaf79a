//! High availability with real etcd, Patroni 4 and PostgreSQL 15, all driven through `pgherd-agent run`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgherd_shared::proctree;
use pgherd_tests::service::wait_gone;
use pgherd_tests::{wait, Cluster, ClusterSpec, Etcd};

const BOOT: Duration = Duration::from_secs(120);

/// Bootstraps three members; with synchronous_mode on, SIGKILLs the leader's whole process tree while a
/// writer is committing, and checks that a new leader appears within 30 s holding every acknowledged row,
/// and that the old leader, started again, rejoins as a streaming replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_fail_over_without_losing_acknowledged_rows() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut spec = ClusterSpec::new("ha", 3)?;
    spec.synchronous_mode = true;
    let mut cluster = Cluster::start(spec, &etcd.host())?;

    let view = cluster.wait_ready(2, BOOT).await?;
    let leaders: Vec<_> = view.members.iter().filter(|m| m.is_leader()).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {view:?}");
    assert_eq!(
        view.streaming_replicas().count(),
        2,
        "two streaming replicas: {view:?}"
    );
    // Synchronous mode must have picked a synchronous standby before we rely on it.
    wait::until(Duration::from_secs(30), "a sync_standby", || async {
        Ok(cluster
            .view()
            .await?
            .members
            .iter()
            .any(|m| m.role == "sync_standby")
            .then_some(()))
    })
    .await?;

    let old = cluster.leader().await?;
    let old_name = cluster.member(old).name.clone();
    let setup = cluster.member(old).connect("postgres").await?;
    setup
        .batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        .await?;

    // A writer commits one row per transaction and records what the server acknowledged.
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                match setup
                    .execute("INSERT INTO acked (id) VALUES ($1)", &[&id])
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().insert(id);
                    }
                    Err(_) => break,
                }
            }
        })
    };
    wait::until(
        Duration::from_secs(20),
        "the writer to commit rows",
        || async { Ok((acked.lock().unwrap().len() >= 200).then_some(())) },
    )
    .await?;

    let killed = cluster.member_mut(old).kill9();
    let killed_at = Instant::now();
    assert!(
        killed.len() >= 3,
        "agent, Patroni and postgres were killed: {killed:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    assert!(
        wait_gone(&killed, Duration::from_secs(5)).is_empty(),
        "the old leader's tree is gone"
    );

    let new = wait::until(
        Duration::from_secs(30),
        "a new leader after the kill",
        || async {
            let view = cluster.view().await?;
            Ok(view
                .leader()
                .filter(|l| l.name != old_name && l.state == "running")
                .map(|l| l.name.clone()))
        },
    )
    .await?;
    let failover = killed_at.elapsed();
    assert!(
        failover <= Duration::from_secs(30),
        "failover took {failover:?}"
    );

    let new = cluster.index_of(&new)?;
    let c = cluster.member(new).connect("postgres").await?;
    wait::until(
        Duration::from_secs(30),
        "the new leader to accept writes",
        || async {
            Ok((!c
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await?
                .get::<_, bool>(0))
            .then_some(()))
        },
    )
    .await?;
    let present: BTreeSet<i64> = c
        .query("SELECT id FROM acked", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost (of {}): {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "failover in {failover:?}; {} acknowledged rows all present",
        acked.len()
    );

    // The old leader comes back (pg_rewind if needed) as a replica of the new leader.
    cluster.member_mut(old).start()?;
    wait::until(
        Duration::from_secs(90),
        "the old leader to rejoin as a streaming replica",
        || async {
            let view = cluster.view().await?;
            let m = view.members.iter().find(|m| m.name == old_name);
            Ok(m.filter(|m| !m.is_leader() && m.state == "streaming")
                .map(|_| ()))
        },
    )
    .await?;
    let replica = cluster.member(old).connect("postgres").await?;
    let max = *acked.iter().max().unwrap();
    wait::until(
        Duration::from_secs(30),
        "the rejoined replica to have the rows",
        || async {
            let n: i64 = replica
                .query_one("SELECT count(*) FROM acked WHERE id <= $1", &[&max])
                .await?
                .get(0);
            Ok((n as usize >= acked.len()).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// A Patroni killed on its own is restarted by the agent, which adopts the still-running postmaster; a
/// SIGTERM to the agent then stops everything cleanly within the bound and leaves no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarts_crashed_patroni_and_stops_cleanly() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut cluster = Cluster::start(ClusterSpec::new("sup", 2)?, &etcd.host())?;
    cluster.wait_ready(1, BOOT).await?;
    let leader = cluster.leader().await?;
    let m = cluster.member(leader);
    let agent = m.agent_pid().expect("agent runs");
    let patroni = patroni_pid(agent).expect("Patroni is the agent's child");
    let postmaster = postmaster_pid(&m.data_dir())?;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(patroni),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let restarted = wait::until(
        Duration::from_secs(30),
        "the agent to start a new Patroni",
        || async { Ok(patroni_pid(agent).filter(|&p| p != patroni)) },
    )
    .await?;
    assert_ne!(restarted, patroni);
    // The new Patroni answers on the member's own REST API once it has taken the running postmaster over.
    let own = cluster.member(leader).patroni();
    wait::until(
        Duration::from_secs(60),
        "the restarted Patroni to report a running leader",
        || async {
            let s = own.status().await?;
            Ok(
                (s.state == "running" && matches!(s.role.as_str(), "primary" | "master"))
                    .then_some(()),
            )
        },
    )
    .await?;
    cluster.wait_ready(1, Duration::from_secs(60)).await?;
    assert_eq!(
        postmaster_pid(&cluster.member(leader).data_dir())?,
        postmaster,
        "the postmaster was adopted, not restarted"
    );

    // Clean shutdown of every member: exit 0, bounded, nothing left.
    for i in 0..2 {
        let member = cluster.member_mut(i);
        let tree = member.process_tree();
        assert!(
            tree.len() > 3,
            "a running member has a process tree: {tree:?}"
        );
        let started = Instant::now();
        let status = member.sigterm(Duration::from_secs(60))?;
        assert!(status.success(), "{} exited with {status}", member.name);
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "stop took {:?}",
            started.elapsed()
        );
        let leftover = wait_gone(&tree, Duration::from_secs(2));
        assert!(
            leftover.is_empty(),
            "processes left behind by {}: {leftover:?}",
            member.name
        );
        assert!(
            !member.data_dir().join("postmaster.pid").exists(),
            "postgres shut down cleanly"
        );
    }
    Ok(())
}

/// The agent's child whose command line runs Patroni.
fn patroni_pid(agent: i32) -> Option<i32> {
    proctree::descendants(agent).into_iter().find(|&p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("patroni"))
            .unwrap_or(false)
            && std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| proctree::parse_ppid(&s))
                == Some(agent)
    })
}

fn postmaster_pid(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid"))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}
