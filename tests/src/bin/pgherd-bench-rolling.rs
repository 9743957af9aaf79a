//! Benchmark driver for bench/rolling/run.sh: what a rolling update of a 3-member cluster costs the
//! clients of its primary, pgherd's order against the StatefulSet controller's own, side by side on
//! one cluster on the Kubernetes stand-in (real images, Patroni and PostgreSQL under podman; the
//! stand-in's simplifications are in docs/kube-standin.md).
//!
//! One persistent client (tokio-postgres over TLS) inserts a numbered row every `period` through the
//! master Endpoints and reconnects to whatever they name after any error, as an application behind the
//! master Service does; a process per write would measure connection set-up instead of the gap.
//!
//! 1. pgherd: a resource change in the manifest; the coordinator replaces the replicas, switches over,
//!    then replaces the old primary. Done when every pod was replaced and `RollingUpdate` is `False`.
//! 2. The anchor: the coordinator scaled to 0, the StatefulSet's `updateStrategy` set to
//!    `RollingUpdate` and its template changed (a resource request), so the StatefulSet controller
//!    deletes pods from the highest ordinal down, each once the others are ready, the primary
//!    whenever its turn comes. Done when every pod was replaced and one is labelled master.
//!
//! Usage: pgherd-bench-rolling [period-ms]   (default 20). Prints a Markdown table.

use std::time::{Duration, Instant};

use pgherd_tests::rolling::{
    lost_writes, master_endpoint, patch_spec, patroni_history, pods, three_members,
    wait_up_to_date, Watch, Writer, CLUSTER, ROLL,
};
use pgherd_tests::system::System;
use serde_json::{json, Value};

struct Row {
    what: &'static str,
    longest_gap: Duration,
    attempts: u64,
    failed: u64,
    lost: usize,
    duration: Duration,
    leader_change: String,
}

fn current_master(sys: &System) -> anyhow::Result<String> {
    pods(sys)
        .into_iter()
        .find(|p| p.role == "master")
        .map(|p| p.name)
        .ok_or_else(|| anyhow::anyhow!("no pod labelled master"))
}

/// Writes while `change` runs and the watch waits for `done`; the row for it.
async fn measure(
    sys: &System,
    password: &str,
    what: &'static str,
    period: Duration,
    change: impl FnOnce(&System) -> anyhow::Result<()>,
    pgherd: bool,
) -> anyhow::Result<Row> {
    let ip = master_endpoint(sys).ok_or_else(|| anyhow::anyhow!("no master Endpoints"))?;
    let history_before = patroni_history(&ip).await?;
    let old_master = current_master(sys)?;
    let table = format!("bench_{}", what.split_whitespace().next().unwrap_or("x"));
    let mut watch = Watch::new(sys);
    let writer = Writer::start(sys, password, &table, period).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = Instant::now();
    change(sys)?;
    if pgherd {
        watch.until_rolled(sys, 3).await?;
    } else {
        watch
            .until(sys, ROLL, what, |w| {
                Ok(w.replaced().len() == 3 && w.whole(3))
            })
            .await?;
    }
    let duration = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = writer.finish().await;
    watch.print();

    let lost = lost_writes(sys, password, &table, &stats.acked)?;
    let ip = master_endpoint(sys).ok_or_else(|| anyhow::anyhow!("no master Endpoints"))?;
    let history = patroni_history(&ip).await?;
    let new: Vec<&Value> = history.iter().skip(history_before.len()).collect();
    println!("{what}: Patroni /history gained {new:?}; lost {lost:?}");
    // Patroni's history records a new timeline either way; whether the old primary was demoted
    // while alive is what tells a switchover from a failover.
    let kind = if watch.demoted_alive(&old_master) {
        "switchover"
    } else {
        "failover"
    };
    Ok(Row {
        what,
        longest_gap: stats.longest_gap,
        attempts: stats.attempts,
        failed: stats.failed,
        lost: lost.len(),
        duration,
        leader_change: format!(
            "{} timeline(s), {kind} ({old_master} → {})",
            new.len(),
            current_master(sys)?
        ),
    })
}

/// The StatefulSet controller's own rolling update, with nothing coordinating it.
fn naive_roll(sys: &System) -> anyhow::Result<()> {
    let sts = sys
        .get("apps/v1", "StatefulSet", "default", CLUSTER)
        .ok_or_else(|| anyhow::anyhow!("no StatefulSet"))?;
    let index = sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().position(|c| c["name"] == "postgres"))
        .ok_or_else(|| anyhow::anyhow!("no postgres container"))?;
    let patch = json!([
        {"op": "replace", "path": "/spec/updateStrategy", "value": {"type": "RollingUpdate"}},
        {"op": "add",
         "path": format!("/spec/template/spec/containers/{index}/resources/requests/cpu"),
         "value": "30m"},
    ]);
    sys.kubectl_ok(
        &[
            "patch",
            "statefulset",
            CLUSTER,
            "--type",
            "json",
            "-p",
            &patch.to_string(),
        ],
        None,
    )?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let period = Duration::from_millis(
        std::env::args()
            .nth(1)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(20),
    );
    let (sys, _) = three_members("pgh-bench", &[], &json!({})).await?;
    let password = sys.superuser_password("default", CLUSTER)?;
    wait_up_to_date(&sys, Duration::from_secs(120)).await?;

    let pgherd = measure(
        &sys,
        &password,
        "pgherd rolling update",
        period,
        |sys| {
            patch_spec(
                sys,
                &json!({"resources": {"requests": {"cpu": "20m", "memory": "100Mi"}}}),
            )
        },
        true,
    )
    .await?;

    // Nothing may undo the anchor's changes to the StatefulSet.
    sys.kubectl_ok(
        &["scale", "deployment", "pgherd-coordinator", "--replicas=0"],
        None,
    )?;
    sys.wait_deployment("default", "pgherd-coordinator", Duration::from_secs(120))
        .await?;
    pgherd_tests::wait::until(Duration::from_secs(120), "no coordinator pod", || async {
        let left = sys
            .list("v1", "Pod", "default", "")
            .iter()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("pgherd-coordinator"))
            })
            .count();
        Ok((left == 0).then_some(()))
    })
    .await?;
    let naive = measure(
        &sys,
        &password,
        "StatefulSet RollingUpdate (anchor)",
        period,
        naive_roll,
        false,
    )
    .await?;
    sys.shutdown().await;

    println!();
    println!(
        "| update | longest write gap | failed writes / attempts | lost acknowledged writes | total duration | leader change (Patroni history) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for r in [pgherd, naive] {
        println!(
            "| {} | {:.2} s | {} / {} | {} | {:.0} s | {} |",
            r.what,
            r.longest_gap.as_secs_f64(),
            r.failed,
            r.attempts,
            r.lost,
            r.duration.as_secs_f64(),
            r.leader_change
        );
    }
    Ok(())
}
