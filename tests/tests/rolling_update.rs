//! Rolling updates on the Kubernetes stand-in with the real images (issue 12): a 3-member cluster
//! from Zalando's minimal manifest under continuous writes gets a pod-template change; the
//! coordinator replaces the replicas one at a time, switches over, then replaces the old primary.
//!
//! What "a switchover, not a failover" means here: the old primary's pod (same uid) is seen
//! labelled `replica` before it is deleted, so Patroni demoted it while it was alive; a deleted
//! primary would never be seen demoted. Patroni's `/history` gains exactly one timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgherd_tests::system::{is_ready, label, name, pod_ip, psql, System};
use pgherd_tests::{tools, wait};
use serde_json::Value;

const CLUSTER: &str = "acid-minimal-cluster";
const SELECTOR: &str = "cluster-name=acid-minimal-cluster";
const BOOT: Duration = Duration::from_secs(300);
const ROLL: Duration = Duration::from_secs(600);

fn manifest(instances: usize) -> String {
    std::fs::read_to_string(
        tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )
    .expect("the minimal manifest")
    .replace(
        "numberOfInstances: 2",
        &format!("numberOfInstances: {instances}"),
    )
}

/// The IP the master Service's Endpoints point at, as a client behind kube-proxy would reach.
fn master_endpoint(sys: &System) -> Option<String> {
    sys.get("v1", "Endpoints", "default", CLUSTER)?["subsets"][0]["addresses"][0]["ip"]
        .as_str()
        .map(String::from)
}

/// Inserts numbered rows through the master Endpoints every 100 ms; keeps the acknowledged numbers
/// and the longest time without a successful write.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    longest_gap: Arc<Mutex<Duration>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(master: Arc<Mutex<String>>, password: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let (s, a, g) = (stop.clone(), acked.clone(), longest_gap.clone());
        let thread = std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let ip = master.lock().unwrap().clone();
                let sql = format!("INSERT INTO rolling_writes VALUES ({n})");
                if psql(&ip, &password, &sql).is_ok() {
                    a.lock().unwrap().push(n);
                    let gap = last_ok.elapsed();
                    let mut longest = g.lock().unwrap();
                    *longest = (*longest).max(gap);
                    last_ok = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Writer {
            stop,
            acked,
            longest_gap,
            thread,
        }
    }

    fn finish(self) -> (Vec<u64>, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let gap = *self.longest_gap.lock().unwrap();
        (acked, gap)
    }
}

/// (name, uid, role label, ready) of each database pod.
fn snapshot(sys: &System) -> Vec<(String, String, String, bool)> {
    sys.list("v1", "Pod", "default", SELECTOR)
        .iter()
        .map(|p| {
            (
                name(p),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                label(p, "spilo-role").unwrap_or("").to_string(),
                is_ready(p),
            )
        })
        .collect()
}

async fn patroni_history(ip: &str) -> anyhow::Result<Vec<Value>> {
    let body: Value = reqwest::get(format!("http://{ip}:8008/history"))
        .await?
        .json()
        .await?;
    Ok(body.as_array().cloned().unwrap_or_default())
}

fn rolling_condition(sys: &System) -> Option<(String, String, String)> {
    let pg = sys.get("acid.zalan.do/v1", "postgresql", "default", CLUSTER)?;
    let c = pg["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "RollingUpdate")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Some((s("status"), s("reason"), s("message")))
}

/// A resource change on a 3-member cluster under writes: each pod replaced once, replicas first, a
/// switchover (not a failover) before the old primary, no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_change_rolls_three_members_with_a_switchover() -> anyhow::Result<()> {
    roll_under_writes("pgh-roll", false).await
}

/// The same with the leading coordinator killed (SIGKILL, no lease release) right after the first
/// replica was replaced: the standby takes over and finishes from the flags on the pods, and no
/// pod is replaced twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_killed_mid_update_hands_over_without_a_second_replacement(
) -> anyhow::Result<()> {
    roll_under_writes("pgh-kill", true).await
}

/// Deletes the pod holding the coordinator's Lease at once (grace period 0); returns its name.
fn kill_leading_coordinator(sys: &System) -> anyhow::Result<String> {
    let lease = sys
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "default",
            "pgherd-coordinator-leader",
        )
        .ok_or_else(|| anyhow::anyhow!("no coordinator Lease"))?;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the Lease has no holder: {lease}"))?
        .to_string();
    sys.kubectl_ok(
        &[
            "delete",
            "pod",
            &holder,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    )?;
    Ok(holder)
}

/// pgherd installed from its chart and a running 3-member cluster; the system and the master's pod.
async fn three_members(prefix: &str) -> anyhow::Result<(System, Value)> {
    let sys = System::start(prefix, None).await?;
    sys.install_pgherd(&[]).await?;
    sys.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest(3)))?;
    let (master, _) = sys.wait_members("default", CLUSTER, 3, BOOT).await?;
    Ok((sys, master))
}

async fn roll_under_writes(prefix: &str, kill_coordinator: bool) -> anyhow::Result<()> {
    let (sys, master) = three_members(prefix).await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    let old_master = name(&master);
    psql(
        &pod_ip(&master),
        &password,
        "CREATE TABLE rolling_writes(n bigint PRIMARY KEY)",
    )?;
    wait::until(
        Duration::from_secs(60),
        "RollingUpdate UpToDate",
        || async {
            Ok(rolling_condition(&sys)
                .filter(|(s, r, _)| s == "False" && r == "UpToDate")
                .map(|_| ()))
        },
    )
    .await?;
    let history_before = patroni_history(&pod_ip(&master)).await?;
    let before: BTreeMap<String, String> = snapshot(&sys)
        .into_iter()
        .map(|(n, uid, _, _)| (n, uid))
        .collect();

    let endpoint = Arc::new(Mutex::new(pod_ip(&master)));
    let writer = Writer::start(endpoint.clone(), password.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    sys.kubectl_ok(
        &[
            "patch",
            "postgresql",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"resources":{"requests":{"cpu":"20m","memory":"100Mi"}}}}"#,
        ],
        None,
    )?;

    // Watch until every pod has been replaced and the cluster is whole again.
    let mut seen: Vec<Vec<(String, String, String, bool)>> = Vec::new();
    let mut killed: Option<String> = None;
    let started = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < ROLL,
            "rolling update not done in {ROLL:?}; last {:?}; condition {:?}{}",
            seen.last(),
            rolling_condition(&sys),
            sys.describe_pods("default")
        );
        if let Some(ip) = master_endpoint(&sys) {
            *endpoint.lock().unwrap() = ip;
        }
        let now = snapshot(&sys);
        let replaced = now
            .iter()
            .filter(|(n, uid, _, _)| before.get(n).is_some_and(|old| old != uid))
            .count();
        let whole = now.len() == 3
            && now.iter().all(|(_, _, _, ready)| *ready)
            && now.iter().filter(|(_, _, r, _)| r == "master").count() == 1;
        let done = rolling_condition(&sys).is_some_and(|(s, _, _)| s == "False");
        seen.push(now);
        if kill_coordinator && replaced >= 1 && killed.is_none() {
            killed = Some(kill_leading_coordinator(&sys)?);
            println!("killed the leading coordinator {killed:?}");
        }
        if replaced == 3 && whole && done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acked, longest_gap) = writer.finish();

    let mut shown: Vec<&Vec<(String, String, String, bool)>> = Vec::new();
    for s in &seen {
        if shown.last() != Some(&s) {
            shown.push(s);
        }
    }
    for s in &shown {
        let line: Vec<String> = s
            .iter()
            .map(|(n, uid, role, ready)| format!("{n}:{}:{role}:{ready}", &uid[..8.min(uid.len())]))
            .collect();
        println!("pods {}", line.join(" "));
    }
    for e in sys.list("events.k8s.io/v1", "Event", "default", "") {
        println!("event {} {}", e["reason"], e["note"]);
    }
    // Each pod replaced exactly once: two uids per name over the whole update.
    let mut uids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (n, uid, _, _) in seen.iter().flatten() {
        uids.entry(n.clone()).or_default().insert(uid.clone());
    }
    for (n, set) in &uids {
        assert_eq!(set.len(), 2, "{n} had uids {set:?}");
    }
    // The old primary was demoted while alive and ready (a switchover), then replaced: its pod, same
    // uid, ready and no longer labelled master while another pod is. Patroni drops the role label
    // while Postgres restarts as a replica, so `replica` itself may not be seen before the delete.
    let old_uid = &before[&old_master];
    assert!(
        seen.iter().any(|s| {
            let demoted = s.iter().any(|(n, uid, role, ready)| {
                n == &old_master && uid == old_uid && role != "master" && *ready
            });
            let other_master = s
                .iter()
                .any(|(n, _, role, _)| n != &old_master && role == "master");
            demoted && other_master
        }),
        "{old_master} was never seen demoted before its replacement: a failover, not a switchover"
    );
    let events: Vec<String> = sys
        .list("events.k8s.io/v1", "Event", "default", "")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with(&format!("Switchover Switched over from {old_master} to "))),
        "{events:?}"
    );
    for step in 1..=3 {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("Update Performing rolling update: pod ")
                    && e.contains(&format!("(step {step} of 3, pod template changed)"))),
            "step {step} of 3 missing: {events:?}"
        );
    }
    // Replicas first: the old primary's pod was the last one replaced.
    let first_new = |pod: &str| {
        seen.iter()
            .position(|s| {
                s.iter()
                    .any(|(n, uid, _, _)| n == pod && uid != &before[pod])
            })
            .unwrap()
    };
    let last_replica = before
        .keys()
        .filter(|n| **n != old_master)
        .map(|n| first_new(n))
        .max()
        .unwrap();
    assert!(
        first_new(&old_master) > last_replica,
        "the primary was not last"
    );

    let master = wait::until(BOOT, "a master", || async { Ok(master_endpoint(&sys)) }).await?;
    let history_after = patroni_history(&master).await?;
    assert_eq!(
        history_after.len(),
        history_before.len() + 1,
        "exactly one leader change: {history_after:?}"
    );
    let rows = psql(&master, &password, "SELECT n FROM rolling_writes")?;
    let present: BTreeSet<u64> = rows.lines().filter_map(|l| l.parse().ok()).collect();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|n| !present.contains(n))
        .copied()
        .collect();
    println!(
        "rolling update: {} writes acknowledged, longest gap {longest_gap:?}, lost {lost:?}",
        acked.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(!acked.is_empty());
    if let Some(killed) = &killed {
        // The rest of the update was the other coordinator's work.
        let lease = sys
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                "default",
                "pgherd-coordinator-leader",
            )
            .expect("the Lease");
        assert_ne!(
            lease["spec"]["holderIdentity"].as_str(),
            Some(killed.as_str())
        );
    } else {
        anyhow::ensure!(!kill_coordinator, "the coordinator was never killed");
    }
    sys.shutdown().await;
    Ok(())
}

/// `SHOW name` on every pod, by pod name.
fn show_everywhere(sys: &System, password: &str, setting: &str) -> BTreeMap<String, String> {
    sys.list("v1", "Pod", "default", SELECTOR)
        .iter()
        .map(|p| {
            let v = psql(&pod_ip(p), password, &format!("SHOW {setting}")).unwrap_or_default();
            (name(p), v)
        })
        .collect()
}

fn start_times(sys: &System, password: &str) -> BTreeMap<String, String> {
    sys.list("v1", "Pod", "default", SELECTOR)
        .iter()
        .map(|p| {
            let v =
                psql(&pod_ip(p), password, "SELECT pg_postmaster_start_time()").unwrap_or_default();
            (name(p), v)
        })
        .collect()
}

async fn patch_parameters(sys: &System, json: &str) -> anyhow::Result<()> {
    sys.kubectl_ok(
        &[
            "patch",
            "postgresql",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"postgresql":{{"parameters":{json}}}}}}}"#),
        ],
        None,
    )?;
    Ok(())
}

/// Parameters go through Patroni: a restart-only one (`max_connections`) is applied by `PATCH
/// /config` and restarts of every member with no pod recreated; a reload-only one (`work_mem`)
/// restarts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parameters_change_through_patroni_without_new_pods() -> anyhow::Result<()> {
    let (sys, master) = three_members("pgh-param").await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    let uids = |s: &System| -> BTreeMap<String, String> {
        snapshot(s)
            .into_iter()
            .map(|(n, uid, _, _)| (n, uid))
            .collect()
    };
    let before = uids(&sys);
    let current = show_everywhere(&sys, &password, "max_connections");
    let base: u32 = current.values().next().unwrap().parse()?;
    let wanted = (base + 17).to_string();

    patch_parameters(&sys, &format!(r#"{{"max_connections":"{wanted}"}}"#)).await?;
    wait::until(ROLL, "max_connections on every member", || async {
        let now = show_everywhere(&sys, &password, "max_connections");
        Ok((now.len() == 3 && now.values().all(|v| *v == wanted)).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}{}", sys.describe_pods("default")))?;
    assert_eq!(uids(&sys), before, "a pod was recreated for a parameter");
    let config: Value = reqwest::get(format!("http://{}:8008/config", pod_ip(&master)))
        .await?
        .json()
        .await?;
    println!("Patroni /config after the change: {config}");
    assert_eq!(
        config["postgresql"]["parameters"]["max_connections"]
            .to_string()
            .trim_matches('"'),
        wanted
    );
    wait::until(
        Duration::from_secs(120),
        "RollingUpdate UpToDate",
        || async {
            Ok(rolling_condition(&sys)
                .filter(|(s, _, _)| s == "False")
                .map(|_| ()))
        },
    )
    .await?;

    let started = start_times(&sys, &password);
    patch_parameters(
        &sys,
        &format!(r#"{{"max_connections":"{wanted}","work_mem":"9MB"}}"#),
    )
    .await?;
    wait::until(
        Duration::from_secs(120),
        "work_mem on every member",
        || async {
            let now = show_everywhere(&sys, &password, "work_mem");
            Ok((now.len() == 3 && now.values().all(|v| v == "9MB")).then_some(()))
        },
    )
    .await?;
    // Give a wrong restart time to show up, then compare.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        start_times(&sys, &password),
        started,
        "a reload-only parameter restarted Postgres"
    );
    assert_eq!(uids(&sys), before);

    let events: Vec<String> = sys
        .list("events.k8s.io/v1", "Event", "default", "")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect();
    for e in &events {
        println!("event {e}");
    }
    let restarts = events.iter().filter(|e| e.starts_with("Restart ")).count();
    assert_eq!(restarts, 3, "one restart per member: {events:?}");
    sys.shutdown().await;
    Ok(())
}

/// An image that cannot run stops the update at the first replica: it never comes back, so no
/// other pod is touched, the primary least of all, and the status says what it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_image_stops_the_update_before_the_primary() -> anyhow::Result<()> {
    let (sys, master) = three_members("pgh-bad").await?;
    let before: BTreeMap<String, String> = snapshot(&sys)
        .into_iter()
        .map(|(n, uid, _, _)| (n, uid))
        .collect();
    sys.kubectl_ok(
        &[
            "patch",
            "postgresql",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"dockerImage":"localhost/pgherd-postgres:does-not-exist"}}"#,
        ],
        None,
    )?;
    let replaced = |s: &System| -> Vec<String> {
        snapshot(s)
            .into_iter()
            .filter(|(n, uid, _, _)| before.get(n).is_some_and(|old| old != uid))
            .map(|(n, _, _, _)| n)
            .collect()
    };
    let first = wait::until(Duration::from_secs(120), "a replica replaced", || async {
        Ok(replaced(&sys).first().cloned())
    })
    .await?;
    assert_ne!(first, name(&master), "the primary went first");
    // Long enough for several passes (5 s apart) to have gone on, had they not stopped.
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(
        replaced(&sys),
        std::slice::from_ref(&first),
        "more than one pod replaced"
    );
    let now = snapshot(&sys);
    assert!(
        now.iter()
            .any(|(n, uid, role, _)| *n == name(&master) && uid == &before[n] && role == "master"),
        "the primary was touched: {now:?}"
    );
    let (status, reason, message) = rolling_condition(&sys).expect("a RollingUpdate condition");
    println!("RollingUpdate {status} {reason}: {message}");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InProgress"));
    assert!(message.contains(&first), "{message}");
    let switchovers = sys
        .list("events.k8s.io/v1", "Event", "default", "")
        .iter()
        .filter(|e| e["reason"] == "Switchover")
        .count();
    assert_eq!(switchovers, 0);
    sys.shutdown().await;
    Ok(())
}
