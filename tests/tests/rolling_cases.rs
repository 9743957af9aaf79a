//! Rolling updates on the Kubernetes stand-in with the real images, the cases
//! `rolling_update.rs` leaves out (issue 12): synchronous mode with an image change under writes,
//! restart-only parameters lowered and raised, and the lazy upgrade together with maintenance
//! windows. Each starts pgherd from its chart and a 3-member cluster from Zalando's minimal
//! manifest; what is checked is what a user would see (pods, their uids and role labels, Patroni's
//! REST API, the `RollingUpdate` condition, events), never the coordinator's internals.

use std::collections::BTreeMap;
use std::time::Duration;

use pgherd_tests::podman::POSTGRES_IMAGE;
use pgherd_tests::rolling::{
    events, lost_writes, master_endpoint, patch_parameters, patch_spec, patroni_get,
    patroni_history, pods, rolling_condition, show, show_everywhere, start_times, three_members,
    uids, wait_up_to_date, Watch, Writer, CLUSTER, ROLL, SELECTOR,
};
use pgherd_tests::system::{name, pod_ip, System};
use pgherd_tests::wait;
use serde_json::{json, Value};

/// Zalando's pod annotation for a pending replacement, which the coordinator sets.
const FLAG: &str = "zalando-postgres-operator-rolling-update-required";

/// The test image under a second name: an image change that replaces pods with the same content,
/// so what is measured is the update, not a different build.
fn second_image() -> anyhow::Result<String> {
    let (repo, tag) = POSTGRES_IMAGE.rsplit_once(':').expect("a tagged image");
    let other = format!("{repo}:{tag}-rolling");
    pgherd_tests::podman::run(&["tag", POSTGRES_IMAGE, &other])?;
    Ok(other)
}

/// Members with a synchronous role in a `GET /cluster` body.
fn sync_standbys(cluster: &Value) -> Vec<String> {
    cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| matches!(m["role"].as_str(), Some("sync_standby" | "quorum_standby")))
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect()
}

fn leader(cluster: &Value) -> Option<String> {
    cluster["members"]
        .as_array()?
        .iter()
        .find(|m| matches!(m["role"].as_str(), Some("leader" | "standby_leader")))?["name"]
        .as_str()
        .map(String::from)
}

fn print_events(sys: &System) -> Vec<String> {
    let events = events(sys);
    for e in &events {
        println!("event {e}");
    }
    events
}

/// `synchronous_mode: true` and an image change under writes: every pod replaced once, replicas
/// first, one switchover, to the member Patroni named synchronous standby, no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synchronous_mode_image_change_switches_over_to_the_sync_standby() -> anyhow::Result<()> {
    let spec = json!({"patroni": {"synchronous_mode": true}});
    let (sys, master) = three_members("pgh-sync", &[], &spec).await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    let old_master = name(&master);
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;
    let sync = wait::until(
        Duration::from_secs(120),
        "a synchronous standby",
        || async {
            let c = patroni_get(&pod_ip(&master), "cluster").await?;
            Ok(sync_standbys(&c).first().cloned())
        },
    )
    .await?;
    println!("synchronous standby before the update: {sync}");
    let history_before = patroni_history(&pod_ip(&master)).await?;
    let image = second_image()?;

    let mut watch = Watch::new(&sys);
    let writer = Writer::start(&sys, &password, "sync_writes", Duration::from_millis(100)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    patch_spec(&sys, &json!({"dockerImage": image}))?;
    watch.until_rolled(&sys, 3).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = writer.finish().await;

    watch.print();
    let events = print_events(&sys);
    watch.assert_each_replaced_once();
    watch.assert_switchover_then_primary_last(&old_master);
    for p in watch.last() {
        assert_eq!(
            p.image,
            image,
            "{} runs another image: {}",
            p.name,
            show(watch.last())
        );
    }
    let reason = format!("image {POSTGRES_IMAGE} -> {image}");
    for step in 1..=3 {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("Update Performing rolling update: pod ")
                    && e.contains(&format!("(step {step} of 3, {reason})"))),
            "step {step} of 3 ({reason}) missing: {events:?}"
        );
    }
    let switchovers: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("Switchover "))
        .collect();
    assert_eq!(
        switchovers.len(),
        1,
        "exactly one switchover: {switchovers:?}"
    );
    let target = switchovers[0]
        .strip_prefix(&format!("Switchover Switched over from {old_master} to "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a switchover from {old_master}: {}", switchovers[0]))
        .to_string();
    // Patroni's view just before the leader changed: the target was its synchronous standby.
    let last_under_old = watch
        .clusters
        .iter()
        .rev()
        .find(|c| leader(c).as_deref() == Some(old_master.as_str()))
        .expect("a /cluster view with the old leader");
    assert!(
        sync_standbys(last_under_old).contains(&target),
        "switched over to {target}, not to the synchronous standby: {}",
        last_under_old["members"]
    );
    let ip = master_endpoint(&sys).expect("a master");
    let now = patroni_get(&ip, "cluster").await?;
    assert_eq!(
        leader(&now).as_deref(),
        Some(target.as_str()),
        "{}",
        now["members"]
    );
    let history = patroni_history(&ip).await?;
    assert_eq!(
        history.len(),
        history_before.len() + 1,
        "exactly one leader change: {history:?}"
    );
    if let Some(new_leader) = history
        .last()
        .and_then(|h| h.get(4))
        .and_then(Value::as_str)
    {
        assert_eq!(new_leader, target, "{history:?}");
    }

    let lost = lost_writes(&sys, &password, "sync_writes", &stats.acked)?;
    println!(
        "synchronous mode: {} writes acknowledged, {} failed, longest gap {:?}, lost {lost:?}",
        stats.acked.len(),
        stats.failed,
        stats.longest_gap
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(stats.acked.len() > 10, "too few writes: {stats:?}");
    sys.shutdown().await;
    Ok(())
}

/// Who holds the master label now.
fn current_master(sys: &System) -> String {
    pods(sys)
        .into_iter()
        .find(|p| p.role == "master")
        .map(|p| p.name)
        .unwrap_or_default()
}

/// Sets `max_connections` and waits until every member runs it and nothing is due; the postmaster
/// start times then.
async fn set_max_connections(
    sys: &System,
    password: &str,
    value: u32,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let wanted = value.to_string();
    patch_parameters(sys, &json!({ "max_connections": wanted }))?;
    wait::until(ROLL, "max_connections on every member", || async {
        let now = show_everywhere(sys, password, "max_connections");
        Ok((now.len() == 3 && now.values().all(|v| *v == wanted)).then_some(()))
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e:#}; condition {:?}; events {:?}{}",
            rolling_condition(sys),
            events(sys),
            sys.describe_pods("default")
        )
    })?;
    wait_up_to_date(sys, Duration::from_secs(120)).await?;
    Ok(start_times(sys, password))
}

/// Every member restarted between `from` and `to` with no pod recreated and the primary unchanged; the
/// primary before every replica when `primary_first`, after all of them otherwise.
fn restarted_in_place(
    sys: &System,
    before: &BTreeMap<String, String>,
    primary: &str,
    from: &BTreeMap<String, f64>,
    to: &BTreeMap<String, f64>,
    primary_first: bool,
) {
    assert_eq!(
        &uids(sys),
        before,
        "a pod was recreated: {}",
        show(&pods(sys))
    );
    assert_eq!(current_master(sys), primary, "the primary changed");
    for (pod, t) in to {
        assert!(
            *t > from[pod],
            "{pod} was not restarted: {from:?} -> {to:?}"
        );
        if pod != primary {
            if primary_first {
                assert!(
                    to[primary] < *t,
                    "replica {pod} restarted before the primary {primary}: {to:?}"
                );
            } else {
                assert!(
                    *t < to[primary],
                    "the primary {primary} restarted before replica {pod}: {to:?}"
                );
            }
        }
    }
}

/// A lowered `max_connections` goes through Patroni with no pod recreated and the primary restarted
/// first (a standby refuses a value below its primary's); raised again, the replicas go first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lowered_max_connections_restarts_the_primary_first_raised_the_replicas_first(
) -> anyhow::Result<()> {
    let (sys, master) = three_members("pgh-maxconn", &[], &json!({})).await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;
    let primary = name(&master);
    let before = uids(&sys);
    let current = show_everywhere(&sys, &password, "max_connections");
    let base: u32 = current[&primary].parse()?;
    anyhow::ensure!(
        base > 40,
        "max_connections {base} leaves no room to lower it"
    );
    let t0 = start_times(&sys, &password);

    let t1 = set_max_connections(&sys, &password, base - 20).await?;
    let events_lowered = print_events(&sys);
    println!("start times before {t0:?}, after lowering {t1:?}");
    restarted_in_place(&sys, &before, &primary, &t0, &t1, true);
    let lowered: Vec<&String> = events_lowered
        .iter()
        .filter(|e| e.starts_with("Restart "))
        .collect();
    assert_eq!(lowered.len(), 3, "one restart per member: {lowered:?}");
    assert!(
        lowered
            .iter()
            .all(|e| e.contains("primary first: a setting was lowered")),
        "{lowered:?}"
    );

    let t2 = set_max_connections(&sys, &password, base).await?;
    println!("start times after raising {t2:?}");
    let raised: Vec<String> = print_events(&sys)
        .into_iter()
        .filter(|e| e.starts_with("Restart ") && !events_lowered.contains(e))
        .collect();
    restarted_in_place(&sys, &before, &primary, &t1, &t2, false);
    assert_eq!(raised.len(), 3, "one restart per member: {raised:?}");
    assert!(
        raised.iter().all(|e| e.contains("replicas first")),
        "{raised:?}"
    );
    let replaced = events(&sys)
        .into_iter()
        .filter(|e| e.starts_with("Update Performing rolling update"))
        .count();
    assert_eq!(replaced, 0, "a parameter replaced a pod");
    sys.shutdown().await;
    Ok(())
}

/// A daily window `from`..`from + hours` (UTC hours from now), in the manifest's format.
fn window(from: i64, hours: i64) -> String {
    let hour = jiff::Timestamp::now().as_second().div_euclid(3600);
    let at = |h: i64| (hour + h).rem_euclid(24);
    format!("{:02}:00-{:02}:00", at(from), at(from + hours))
}

/// The lazy upgrade (`enable_lazy_spilo_upgrade`) and maintenance windows on one cluster, whose
/// steps follow each other as they would for a user: an image-only change reaches the StatefulSet
/// and replaces nothing; a resource change then replaces the replicas, with the new image, but the
/// primary waits for the maintenance window (which excludes now) and says so; once the window
/// includes now, a switchover and the old primary's replacement finish the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lazy_upgrade_waits_for_another_change_and_the_primary_for_its_window() -> anyhow::Result<()>
{
    let spec = json!({"maintenanceWindows": [window(12, 1)]});
    let (sys, master) = three_members(
        "pgh-lazy",
        &["configGeneral.enable_lazy_spilo_upgrade=true"],
        &spec,
    )
    .await?;
    let old_master = name(&master);
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;
    let history_before = patroni_history(&pod_ip(&master)).await?;
    let before = uids(&sys);
    let image = second_image()?;

    // An image-only change: the template takes it, no pod is flagged or replaced.
    patch_spec(&sys, &json!({"dockerImage": image}))?;
    let sts_image = |s: &System| {
        s.get("apps/v1", "StatefulSet", "default", CLUSTER)
            .and_then(|sts| pgherd_tests::rolling::postgres_image(&sts["spec"]["template"]["spec"]))
    };
    wait::until(
        Duration::from_secs(60),
        "the new image in the StatefulSet",
        || async { Ok((sts_image(&sys).as_deref() == Some(image.as_str())).then_some(())) },
    )
    .await?;
    // Several passes (5 s apart while anything is due) would have flagged and deleted by now.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let now = pods(&sys);
    assert_eq!(uids(&sys), before, "a pod was replaced: {}", show(&now));
    assert!(
        now.iter().all(|p| p.image == POSTGRES_IMAGE),
        "a pod runs another image: {now:?}"
    );
    let flagged: Vec<String> = sys
        .list("v1", "Pod", "default", SELECTOR)
        .iter()
        .filter(|p| !p["metadata"]["annotations"][FLAG].is_null())
        .map(name)
        .collect();
    assert!(flagged.is_empty(), "flagged for replacement: {flagged:?}");
    let condition = rolling_condition(&sys);
    assert!(
        condition.as_ref().is_some_and(|(s, _, _)| s == "False"),
        "{condition:?}"
    );

    // A resource change: the replicas are replaced (with the new image), the primary waits.
    let mut watch = Watch::new(&sys);
    patch_spec(
        &sys,
        &json!({"resources": {"requests": {"cpu": "20m", "memory": "100Mi"}}}),
    )?;
    let waiting = format!("primary {old_master} is replaced only inside a maintenance window");
    watch
        .until(
            &sys,
            ROLL,
            "the replicas replaced, the primary waiting",
            |w| {
                Ok(w.replaced().len() == 2
                    && w.whole(3)
                    && rolling_condition(&sys).is_some_and(|(s, _, m)| s == "True" && m == waiting))
            },
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    watch.until(&sys, ROLL, "a look", |_| Ok(true)).await?;
    let last = watch.last().to_vec();
    let primary_pod = last
        .iter()
        .find(|p| p.name == old_master)
        .expect("the primary's pod");
    assert!(
        primary_pod.uid == before[&old_master] && primary_pod.role == "master",
        "the primary was touched outside its window: {}",
        show(&last)
    );
    let replaced = watch.replaced();
    assert_eq!(replaced.len(), 2, "{}", show(&last));
    for p in last.iter().filter(|p| p.name != old_master) {
        assert_eq!(
            p.image, image,
            "replica {} came back with another image",
            p.name
        );
    }
    let (status, reason, message) = rolling_condition(&sys).expect("a RollingUpdate condition");
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        ("True", "InProgress", waiting.as_str())
    );
    let switchovers = |s: &System| {
        events(s)
            .into_iter()
            .filter(|e| e.starts_with("Switchover "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        switchovers(&sys),
        Vec::<String>::new(),
        "outside the window"
    );

    // The window opens: a switchover, then the old primary.
    patch_spec(&sys, &json!({"maintenanceWindows": [window(-1, 3)]}))?;
    watch.until_rolled(&sys, 3).await?;
    watch.print();
    print_events(&sys);
    watch.assert_each_replaced_once();
    watch.assert_switchover_then_primary_last(&old_master);
    for p in watch.last() {
        assert_eq!(
            p.image,
            image,
            "{} runs another image: {}",
            p.name,
            show(watch.last())
        );
    }
    let done = switchovers(&sys);
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        done[0].starts_with(&format!("Switchover Switched over from {old_master} to ")),
        "{done:?}"
    );
    let ip = master_endpoint(&sys).expect("a master");
    let history = patroni_history(&ip).await?;
    assert_eq!(
        history.len(),
        history_before.len() + 1,
        "exactly one leader change: {history:?}"
    );
    sys.shutdown().await;
    Ok(())
}
