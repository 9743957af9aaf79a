//! `pgherd-agent upgrade --members 3` SIGKILLed at every moment its status file reports, and twice together
//! with the leader's whole process tree (a node dying mid-upgrade). Nobody intervenes: each kill must end
//! on one major on every member, with one writable leader, two streaming replicas, Patroni unpaused, the
//! data unchanged, the status file closed, and no process or directory of the killed run left behind.
//!
//! The process is stopped at an exact moment with `PGHERD_UPGRADE_STOP_AT` (it SIGSTOPs itself there; see
//! docs/upgrade.md, "Kill tests") and then SIGKILLed; the pre-check moment is reached through a `pg_ctl`
//! wrapper that holds `pg_upgrade --check`'s server up. Kills before the point of no return roll back to
//! 15, so they share one cluster; each kill after it finishes on 16 and needs a cluster of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use pgherd_tests::upgrade::*;
use pgherd_tests::{Cluster, Etcd};

/// How the upgrade process is brought to its moment.
enum Reach {
    /// `PGHERD_UPGRADE_STOP_AT=<moment>`: a phase entry or a named point inside one.
    StopAt(&'static str),
    /// While `pg_upgrade --check` has the new server up on the scratch cluster.
    CheckServerUp,
}

struct Kill {
    reach: Reach,
    /// Also SIGKILL the leader's agent with Patroni and PostgreSQL, then start it again (the kubelet).
    with_leader_tree: bool,
}

impl Kill {
    /// The upgrade process alone, at `moment`.
    fn at(moment: &'static str) -> Self {
        Self {
            reach: Reach::StopAt(moment),
            with_leader_tree: false,
        }
    }

    /// The upgrade process and the leader's whole process tree, at `moment`.
    fn with_leader_tree_at(moment: &'static str) -> Self {
        Self {
            with_leader_tree: true,
            ..Self::at(moment)
        }
    }
}

/// Starts the upgrade on `leader`, brings it to its moment, kills it there; returns when it was killed
/// and the name of the moment.
async fn kill_upgrade(
    cluster: &mut Cluster,
    leader: usize,
    kill: &Kill,
) -> anyhow::Result<(Instant, String)> {
    let dir = cluster.member(leader).dir().to_path_buf();
    let log = std::fs::File::create(dir.join("upgrade-killed.log"))?;
    let (held, map, name) = match kill.reach {
        Reach::StopAt(moment) => (None, None, moment.to_string()),
        Reach::CheckServerUp => {
            // The wrapper runs as postgres: its signals live in a directory that user can write.
            let signals = tempfile::Builder::new().prefix("pgherd-check-").tempdir()?;
            std::fs::set_permissions(signals.path(), std::fs::Permissions::from_mode(0o777))?;
            let hold = signals.path().join("hold");
            let up = signals.path().join("up");
            std::fs::write(&hold, "")?;
            // pg_upgrade runs `pg_ctl … start` for the new cluster during --check; this one reports it
            // and keeps pg_upgrade waiting until the test lets go.
            let (wrapper, map) = pg16_wrapping(
                "pg_ctl",
                &format!(
                    "\"$REAL\" \"$@\"; rc=$?\ncase \" $* \" in *\" start \"*) touch '{}'; while [ -e '{}' ]; do sleep 0.2; done;; esac\nexit $rc\n",
                    up.display(),
                    hold.display()
                ),
            )?;
            (
                Some((wrapper, signals, hold, up)),
                Some(map),
                "precheck".to_string(),
            )
        }
    };
    let mut overrides = Vec::new();
    if let Reach::StopAt(moment) = kill.reach {
        overrides.push((pgherd_agent::upgrade::STOP_AT_VAR, moment));
    }
    if let Some(map) = &map {
        overrides.push(("PGHERD_PG_BIN_DIRS", map.as_str()));
    }
    let mut child = upgrade_command(cluster, leader, &overrides)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(status) = child.try_wait()? {
            let out = std::fs::read_to_string(dir.join("upgrade-killed.log"))?;
            anyhow::bail!("the upgrade exited ({status}) before {name}:\n{out}");
        }
        let there = match &held {
            Some((_, _, _, up)) => up.exists(),
            None => stopped(&child),
        };
        if there {
            break;
        }
        if Instant::now() > deadline {
            kill9(&mut child)?;
            anyhow::bail!("the upgrade did not reach {name} within 240 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let phase = status_file(cluster, leader)?["phase"].clone();
    eprintln!("[{name}] reached; status phase {phase}");
    kill9(&mut child)?;
    if kill.with_leader_tree {
        cluster.member_mut(leader).kill9();
    }
    let killed = Instant::now();
    if let Some((wrapper, signals, hold, _)) = held {
        std::fs::remove_file(hold)?;
        drop((wrapper, signals));
    }
    if kill.with_leader_tree {
        cluster.member_mut(leader).start()?;
    }
    Ok((killed, name))
}

/// Whether the process stopped itself (state `T` in /proc/<pid>/stat).
fn stopped(child: &Child) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        == Some('T')
}

fn kill9(child: &mut Child) -> anyhow::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// What a finished kill must leave: the status closed with `outcome`, every member on `major` with the
/// data of checksum `sum`, one writable leader, two streaming replicas, Patroni unpaused, and nothing of
/// the killed run (processes or directories). Returns the time from the kill to all of that.
async fn settles(
    cluster: &Cluster,
    leader: usize,
    killed: Instant,
    outcome: &str,
    major: i32,
    sum: &str,
) -> anyhow::Result<Duration> {
    cluster
        .until(
            BOOT,
            &format!("the upgrade status to say {outcome}"),
            || async {
                let status = status_file(cluster, leader)?;
                anyhow::ensure!(
                    status["outcome"].is_null() || status["outcome"] == outcome,
                    "outcome {} instead of {outcome}: {}",
                    status["outcome"],
                    status["message"]
                );
                Ok((status["outcome"] == outcome).then_some(()))
            },
        )
        .await?;
    let view = cluster.wait_ready(2, BOOT).await?;
    anyhow::ensure!(!view.pause, "Patroni left paused");
    let took = killed.elapsed();
    // The DCS record tells the same story; a run killed in its pre-checks never wrote one, so there the
    // record (of an earlier run, if any) must at least not read "in progress".
    // Patroni answers `GET /config` from the cluster view of its last loop, so the record written just
    // before the status file may take a loop to show.
    let api = format!("http://127.0.0.1:{}", cluster.member(leader).api_port);
    let client = pgherd_shared::patroni::Client::new(api);
    let tells = |record: &serde_json::Value| {
        if outcome == "precheck_failed" {
            record.is_null() || !record["outcome"].is_null()
        } else {
            record["outcome"] == outcome
        }
    };
    let mut record = serde_json::Value::Null;
    for _ in 0..30 {
        record = client.config().await?["pgherd_upgrade"].clone();
        if tells(&record) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::ensure!(
        tells(&record),
        "the DCS record says {record} where the status file says {outcome}"
    );
    let versions = server_versions(cluster).await?;
    anyhow::ensure!(
        versions.iter().all(|v| *v / 10000 == major),
        "members run {versions:?}, expected {major}"
    );
    let now_leader = cluster.leader().await?;
    anyhow::ensure!(
        data_checksum(cluster, now_leader).await? == sum,
        "the data changed"
    );
    let strays = leftovers(cluster);
    anyhow::ensure!(
        strays.is_empty(),
        "left behind: {strays:#?}\nmember logs:\n{}",
        cluster.logs(60)
    );
    Ok(took)
}

/// Directories and processes of an upgrade that must not outlive it: `<data>_new`, `<data>_old`,
/// `<data>_upgrade` on any member, an `upgrade` process, pg_upgrade, an rsync daemon or a server of one
/// of those directories.
fn leftovers(cluster: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    let mut scratch: Vec<PathBuf> = Vec::new();
    for m in cluster.members() {
        let data = m.data_dir();
        for suffix in ["_new", "_old", "_upgrade"] {
            let dir = data.with_file_name(format!("data{suffix}"));
            if dir.exists() {
                found.push(format!("directory {}", dir.display()));
            }
            scratch.push(dir);
        }
    }
    for (pid, args) in processes_of(cluster) {
        let line = args.join(" ");
        let program = args.first().map(|a| a.rsplit('/').next().unwrap_or(a));
        let stray = args.iter().any(|a| a == "upgrade")
            || program == Some("pg_upgrade")
            || (program == Some("rsync") && args.iter().any(|a| a == "--daemon"))
            || scratch
                .iter()
                .any(|d| line.contains(d.to_string_lossy().as_ref()));
        if stray {
            found.push(format!("process {pid}: {line}"));
        }
    }
    found
}

/// Processes whose command line mentions the cluster's directory, with their arguments.
fn processes_of(cluster: &Cluster) -> Vec<(i32, Vec<String>)> {
    let base = cluster.member(0).dir().parent().unwrap_or(Path::new("/"));
    let base = base.to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a.contains(base.as_ref())) {
            found.push((pid, args));
        }
    }
    found
}

/// A 3-member 15 cluster with its etcd, ready and holding the test data: the leader and the data's
/// checksum.
async fn ready_cluster(scope: &str) -> anyhow::Result<(Etcd, Cluster, usize, String)> {
    let etcd = Etcd::start().await?;
    let cluster = Cluster::start(spec(scope)?, &etcd.host())?;
    cluster.wait_ready(2, BOOT).await?;
    let leader = cluster.leader().await?;
    let sum = setup_data(&cluster, leader).await?;
    Ok((etcd, cluster, leader, sum))
}

/// One kill on a cluster of its own (kills after the point of no return end on 16). Returns the cluster
/// (with its etcd) and the member that ran the upgrade, for further checks.
async fn kill_on_a_new_cluster(scope: &str, kill: Kill) -> anyhow::Result<(Etcd, Cluster, usize)> {
    let (etcd, mut cluster, leader, sum) = ready_cluster(scope).await?;
    let (killed, name) = kill_upgrade(&mut cluster, leader, &kill).await?;
    let took = settles(&cluster, leader, killed, "succeeded", 16, &sum).await?;
    let tree = if kill.with_leader_tree {
        " (with the leader's tree)"
    } else {
        ""
    };
    eprintln!("[{name}{tree}] finished on 16 {took:?} after the kill");
    Ok((etcd, cluster, leader))
}

/// Every moment before the point of no return, one after the other on the same cluster: each is rolled
/// back by the leader's agent, and the next attempt starts from the 15 cluster the last one left. The
/// last kill also takes the leader's whole process tree after pg_upgrade linked the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_point_of_no_return_rolls_back_at_every_moment() -> anyhow::Result<()> {
    let (_etcd, mut cluster, _, sum) = ready_cluster("kills15").await?;
    let kills = [
        Kill {
            reach: Reach::CheckServerUp,
            with_leader_tree: false,
        },
        Kill::at("pause"),
        Kill::at("stop_primary"),
        Kill::at("stop_replicas"),
        Kill::at("pg_upgrade"),
        Kill::at("pg_upgrade_linked"),
        Kill::with_leader_tree_at("pg_upgrade_linked"),
    ];
    let mut times = Vec::new();
    for kill in kills {
        let leader = cluster.leader().await?;
        let (killed, name) = kill_upgrade(&mut cluster, leader, &kill).await?;
        let outcome = match kill.reach {
            Reach::CheckServerUp => "precheck_failed",
            Reach::StopAt(_) => "rolled_back",
        };
        let took = settles(&cluster, leader, killed, outcome, 15, &sum)
            .await
            .map_err(|e| e.context(format!("killed at {name}")))?;
        let tree = if kill.with_leader_tree {
            " (with the leader's tree)"
        } else {
            ""
        };
        eprintln!("[{name}{tree}] back on 15 {took:?} after the kill");
        times.push(format!("{name}{tree}: {took:?}"));
    }
    eprintln!("time to healthy per kill moment: {times:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_as_replicas_start_to_sync_finishes_on_16() -> anyhow::Result<()> {
    kill_on_a_new_cluster("killsync", Kill::at("sync_replicas"))
        .await
        .map(drop)
}

/// The chaos finding: replicas synced, the rsync daemon still holding the primary's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_replicas_synced_finishes_on_16() -> anyhow::Result<()> {
    kill_on_a_new_cluster("killsynced", Kill::at("replicas_synced"))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_the_point_of_no_return_finishes_on_16() -> anyhow::Result<()> {
    kill_on_a_new_cluster("killstart", Kill::at("start_primary"))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_leaders_tree_at_the_point_of_no_return_finishes_on_16(
) -> anyhow::Result<()> {
    kill_on_a_new_cluster("killtree", Kill::with_leader_tree_at("start_primary"))
        .await
        .map(drop)
}

/// Also: the status file keeps one history across the killed run and the agent's, and the operator's
/// re-run afterwards finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_replicas_restart_finishes_on_16() -> anyhow::Result<()> {
    let (_etcd, cluster, leader) =
        kill_on_a_new_cluster("killrestart", Kill::at("restart_replicas")).await?;
    let log = std::fs::read_to_string(cluster.member(leader).dir().join("agent.log"))?;
    assert!(log.contains("resuming an upgrade that passed the point of no return"));
    let status = status_file(&cluster, leader)?;
    let phases = status["phases"].as_array().unwrap();
    assert_eq!(phases[0]["phase"], "precheck");
    assert_eq!(phases[phases.len() - 1]["phase"], "done");
    let run = upgrade(&cluster, leader, &[])?;
    assert!(run.ok, "{}", run.output);
    assert!(
        run.output.contains("upgrade is not required"),
        "{}",
        run.output
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_analyze_finishes_on_16() -> anyhow::Result<()> {
    kill_on_a_new_cluster("killanalyze", Kill::at("analyze"))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_backup_finishes_on_16() -> anyhow::Result<()> {
    kill_on_a_new_cluster("killbackup", Kill::at("backup"))
        .await
        .map(drop)
}

/// A recovery that hangs must not hold the cluster hostage: the agent's `upgrade --recover` for a run
/// killed at the point of no return is frozen (SIGSTOP) as soon as it appears, and the operator's
/// `pgherd-agent upgrade` stops it, takes over and finishes on 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_run_takes_over_from_a_hung_recovery() -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (_etcd, mut cluster, leader, sum) = ready_cluster("killhung").await?;
    let kill_at = Kill::at("start_primary");
    let (killed, _) = kill_upgrade(&mut cluster, leader, &kill_at).await?;
    let recovery = cluster
        .until(
            Duration::from_secs(60),
            "the agent's recovery to hold the runner lock",
            || async {
                // Frozen only once it holds the lock (its pid in the lock file): frozen earlier, it would
                // be a process that never started the recovery, and the operator's run rightly ignores it.
                let lock = cluster.member(leader).dir().join("run/pgherd/upgrade.lock");
                let holder = std::fs::read_to_string(lock).unwrap_or_default();
                Ok(processes_of(&cluster)
                    .into_iter()
                    .find(|(pid, args)| {
                        args.iter().any(|a| a == "--recover") && holder.trim() == pid.to_string()
                    })
                    .map(|(pid, _)| pid))
            },
        )
        .await?;
    kill(Pid::from_raw(recovery), Signal::SIGSTOP)?;
    let run = upgrade(&cluster, leader, &[])?;
    assert!(run.ok, "{}", run.output);
    assert!(
        run.output.contains("stopping the agent's upgrade recovery"),
        "{}",
        run.output
    );
    assert!(
        !Path::new(&format!("/proc/{recovery}/cmdline")).exists()
            || std::fs::read(format!("/proc/{recovery}/cmdline"))?.is_empty(),
        "the hung recovery is still there"
    );
    let took = settles(&cluster, leader, killed, "succeeded", 16, &sum).await?;
    eprintln!("[hung recovery] the operator's run finished on 16 {took:?} after the kill");
    Ok(())
}
