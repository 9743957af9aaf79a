//! Rolling updates on the Kubernetes stand-in with the real images (issue 12): a 3-member cluster
//! from Zalando's minimal manifest under continuous writes gets a pod-template change; the
//! coordinator replaces the replicas one at a time, switches over, then replaces the old primary.
//!
//! What "a switchover, not a failover" means here: the old primary's pod (same uid) is seen
//! labelled `replica` before it is deleted, so Patroni demoted it while it was alive; a deleted
//! primary would never be seen demoted. Patroni's `/history` gains exactly one timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgherd_tests::rolling::{
    events, master_endpoint, patch_parameters, patch_spec, patroni_get, patroni_history,
    rolling_condition, show_everywhere, start_times, three_members, uids, wait_up_to_date, Watch,
    Writer, BOOT, CLUSTER, ROLL,
};
use pgherd_tests::system::{name, pod_ip, System};
use pgherd_tests::wait;
use serde_json::json;

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

async fn roll_under_writes(prefix: &str, kill_coordinator: bool) -> anyhow::Result<()> {
    let (sys, master) = three_members(prefix, &[], &json!({})).await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    let old_master = name(&master);
    wait_up_to_date(&sys, Duration::from_secs(60)).await?;
    let history_before = patroni_history(&pod_ip(&master)).await?;
    let mut watch = Watch::new(&sys);

    let writer = Writer::start(
        &sys,
        &password,
        "rolling_writes",
        Duration::from_millis(100),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    patch_spec(
        &sys,
        &json!({"resources": {"requests": {"cpu": "20m", "memory": "100Mi"}}}),
    )?;

    // Watch until every pod has been replaced and the cluster is whole again.
    let mut killed: Option<String> = None;
    watch
        .until_rolled_with(&sys, 3, |w| {
            if kill_coordinator && !w.replaced().is_empty() && killed.is_none() {
                killed = Some(kill_leading_coordinator(&sys)?);
                println!("killed the leading coordinator {killed:?}");
            }
            Ok(())
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = writer.finish().await;

    watch.print();
    let events = events(&sys);
    for e in &events {
        println!("event {e}");
    }
    watch.assert_each_replaced_once();
    watch.assert_switchover_then_primary_last(&old_master);
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

    let master = wait::until(BOOT, "a master", || async { Ok(master_endpoint(&sys)) }).await?;
    let history_after = patroni_history(&master).await?;
    assert_eq!(
        history_after.len(),
        history_before.len() + 1,
        "exactly one leader change: {history_after:?}"
    );
    let lost = pgherd_tests::rolling::lost_writes(&sys, &password, "rolling_writes", &stats.acked)?;
    println!(
        "rolling update: {} writes acknowledged, {} failed, longest gap {:?}, lost {lost:?}",
        stats.acked.len(),
        stats.failed,
        stats.longest_gap
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(!stats.acked.is_empty());
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

/// Parameters go through Patroni: a restart-only one (`max_connections`) is applied by `PATCH
/// /config` and restarts of every member with no pod recreated; a reload-only one (`work_mem`)
/// restarts nothing; `shared_buffers`, which Spilo keeps in each member's local configuration,
/// is restarted into place too, with no pod recreated (the agent copies it from the DCS).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parameters_change_through_patroni_without_new_pods() -> anyhow::Result<()> {
    let spec = json!({"postgresql": {"parameters": {"shared_buffers": "32MB"}}});
    let (sys, master) = three_members("pgh-param", &[], &spec).await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    let before = uids(&sys);
    let current = show_everywhere(&sys, &password, "max_connections");
    let base: u32 = current.values().next().unwrap().parse()?;
    let wanted = (base + 17).to_string();

    patch_parameters(
        &sys,
        &json!({"max_connections": wanted, "shared_buffers": "32MB"}),
    )?;
    wait::until(ROLL, "max_connections on every member", || async {
        let now = show_everywhere(&sys, &password, "max_connections");
        Ok((now.len() == 3 && now.values().all(|v| *v == wanted)).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}{}", sys.describe_pods("default")))?;
    assert_eq!(uids(&sys), before, "a pod was recreated for a parameter");
    let config = patroni_get(&pod_ip(&master), "config").await?;
    println!("Patroni /config after the change: {config}");
    assert_eq!(
        config["postgresql"]["parameters"]["max_connections"]
            .to_string()
            .trim_matches('"'),
        wanted
    );
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;

    let started = start_times(&sys, &password);
    patch_parameters(
        &sys,
        &json!({"max_connections": wanted, "work_mem": "9MB", "shared_buffers": "32MB"}),
    )?;
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

    let events = events(&sys);
    for e in &events {
        println!("event {e}");
    }
    let restarts = events.iter().filter(|e| e.starts_with("Restart ")).count();
    assert_eq!(restarts, 3, "one restart per member: {events:?}");
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;

    assert_eq!(
        show_everywhere(&sys, &password, "shared_buffers")
            .values()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([&"32MB".to_string()])
    );
    let started = start_times(&sys, &password);
    patch_parameters(
        &sys,
        &json!({"max_connections": wanted, "work_mem": "9MB", "shared_buffers": "48MB"}),
    )?;
    wait::until(ROLL, "shared_buffers on every member", || async {
        let now = show_everywhere(&sys, &password, "shared_buffers");
        Ok((now.len() == 3 && now.values().all(|v| v == "48MB")).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}{}", sys.describe_pods("default")))?;
    assert_eq!(uids(&sys), before, "a pod was recreated for shared_buffers");
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;
    let restarted = start_times(&sys, &password);
    assert!(
        started.iter().all(|(pod, t)| restarted[pod] > *t),
        "every member restarted once more: {started:?} -> {restarted:?}"
    );
    sys.shutdown().await;
    Ok(())
}

/// An image that cannot run stops the update at the first replica: it never comes back, so no
/// other pod is touched, the primary least of all, and the status says what it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_image_stops_the_update_before_the_primary() -> anyhow::Result<()> {
    let (sys, master) = three_members("pgh-bad", &[], &json!({})).await?;
    let before: BTreeMap<String, String> = uids(&sys);
    patch_spec(
        &sys,
        &json!({"dockerImage": "localhost/pgherd-postgres:does-not-exist"}),
    )?;
    let replaced = |s: &System| -> Vec<String> {
        uids(s)
            .into_iter()
            .filter(|(n, uid)| before.get(n).is_some_and(|old| old != uid))
            .map(|(n, _)| n)
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
    let now = pgherd_tests::rolling::pods(&sys);
    assert!(
        now.iter()
            .any(|p| p.name == name(&master) && p.uid == before[&p.name] && p.role == "master"),
        "the primary was touched: {}",
        pgherd_tests::rolling::show(&now)
    );
    let (status, reason, message) = rolling_condition(&sys).expect("a RollingUpdate condition");
    println!("RollingUpdate {status} {reason}: {message}");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InProgress"));
    assert!(message.contains(&first), "{message}");
    let switchovers = events(&sys)
        .iter()
        .filter(|e| e.starts_with("Switchover "))
        .count();
    assert_eq!(switchovers, 0);
    sys.shutdown().await;
    Ok(())
}
