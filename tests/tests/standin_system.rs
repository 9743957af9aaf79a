//! The whole system on the Kubernetes stand-in (issue 11): pgherd installed from its Helm chart with
//! kubectl, the real coordinator running as a pod of its image, Zalando's minimal manifest turned into
//! database pods of the real image, and Patroni failing over through each DCS Zalando users run: the
//! Kubernetes API with ConfigMaps (Zalando's default), with Endpoints, and etcd (where the agent's
//! `callback-role` labels the pods and points the master Endpoints at the primary).
//!
//! All of it is verified against the stand-in only (docs/kube-standin.md): no authorization, no Service
//! routing (SQL goes to the IP in the master Service's Endpoints, as a client behind kube-proxy would end up).

use std::collections::BTreeMap;
use std::time::Duration;

use pgherd_tests::system::{is_ready, name, pod_ip, psql, System};
use pgherd_tests::{tools, wait, Etcd};
use serde_json::Value;

const CLUSTER: &str = "acid-minimal-cluster";
const SELECTOR: &str = "cluster-name=acid-minimal-cluster";
const BOOT: Duration = Duration::from_secs(240);
const FAILOVER: Duration = Duration::from_secs(120);

fn minimal_manifest() -> String {
    std::fs::read_to_string(
        tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )
    .expect("the minimal manifest")
}

/// Waits until the master Service's Endpoints hold exactly `ip`.
async fn master_endpoints_at(sys: &System, ip: &str) -> anyhow::Result<()> {
    wait::until(FAILOVER, &format!("master Endpoints at {ip}"), || async {
        let ep = sys.get("v1", "Endpoints", "default", CLUSTER);
        let ips: Vec<String> = ep
            .as_ref()
            .and_then(|e| e["subsets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(String::from))
            .collect();
        Ok((ips == [ip]).then_some(()))
    })
    .await
}

/// Deletes the master's pod as a user would and checks what users rely on: another member is promoted
/// and labelled, the master Endpoints follow it, acknowledged rows survive, and the deleted pod comes back
/// (same PVC) as a replica.
async fn fail_over(sys: &System, password: &str, n: usize) -> anyhow::Result<()> {
    let (master, _) = sys.wait_members("default", CLUSTER, n, BOOT).await?;
    let old = name(&master);
    let marker = format!("before-{}", pgherd_tests::service::random_hex(6));
    psql(
        &pod_ip(&master),
        password,
        &format!(
            "CREATE TABLE IF NOT EXISTS failover_marks(m text); INSERT INTO failover_marks VALUES ('{marker}'); \
             SELECT pg_switch_wal(); CHECKPOINT"
        ),
    )?;
    // Patroni replicates asynchronously: wait until every replica has the row before killing the primary.
    wait::until(FAILOVER, "the marker on every replica", || async {
        let (_, replicas) = sys.wait_members("default", CLUSTER, n, BOOT).await?;
        Ok(replicas
            .iter()
            .all(|r| {
                psql(&pod_ip(r), password, "SELECT m FROM failover_marks")
                    .is_ok_and(|s| s.contains(&marker))
            })
            .then_some(()))
    })
    .await?;
    sys.kubectl_ok(&["delete", "pod", &old, "--wait=false"], None)?;
    let new_master = wait::until(FAILOVER, "a new master", || async {
        Ok(sys
            .list(
                "v1",
                "Pod",
                "default",
                &format!("{SELECTOR},spilo-role=master"),
            )
            .into_iter()
            .find(|p| name(p) != old && is_ready(p)))
    })
    .await
    .map_err(|e| {
        // Whether the old primary's Patroni released the leader lock: its writes to the leader ConfigMap
        // and its pod, with the answers it got.
        let writes: Vec<String> = sys
            .api
            .writes()
            .into_iter()
            .filter(|w| w.contains("-leader") || w.contains(&format!("/pods/{old}")))
            .collect();
        anyhow::anyhow!(
            "{e:#}{}\n--- writes to leader objects and to {old}:\n{}",
            sys.describe_pods("default"),
            writes.join("\n")
        )
    })?;
    master_endpoints_at(sys, &pod_ip(&new_master)).await?;
    let rows = psql(
        &pod_ip(&new_master),
        password,
        "SELECT m FROM failover_marks",
    )?;
    anyhow::ensure!(
        rows.contains(&marker),
        "row {marker} lost in the failover: {rows}"
    );
    // The StatefulSet recreates the deleted pod; it rejoins from its volume as a replica.
    let (master, replicas) = sys.wait_members("default", CLUSTER, n, BOOT).await?;
    anyhow::ensure!(name(&master) == name(&new_master), "the master moved again");
    anyhow::ensure!(
        replicas.iter().any(|r| name(r) == old),
        "{old} did not come back as a replica"
    );
    Ok(())
}

/// uid and resourceVersion of everything the coordinator writes for the cluster, and the uid and restart
/// count of its database pods (Patroni writes its member data into pod annotations, so their
/// resourceVersions move on their own).
fn coordinator_objects(sys: &System) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |key: String, o: &Value, what: String| {
        out.insert(
            key,
            format!("{} {what}", o["metadata"]["uid"].as_str().unwrap_or("")),
        );
    };
    for (api, kind) in [
        ("apps/v1", "StatefulSet"),
        ("v1", "Service"),
        ("v1", "Secret"),
        ("policy/v1", "PodDisruptionBudget"),
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("acid.zalan.do/v1", "postgresql"),
    ] {
        for o in sys.list(api, kind, "default", "") {
            let rv = o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            put(format!("{kind}/{}", name(&o)), &o, rv);
        }
    }
    for p in sys.list("v1", "Pod", "default", SELECTOR) {
        let restarts = p["status"]["containerStatuses"][0]["restartCount"].to_string();
        put(format!("Pod/{}", name(&p)), &p, restarts);
    }
    out
}

async fn scale_coordinator(sys: &System, replicas: usize) -> anyhow::Result<()> {
    sys.kubectl_ok(
        &[
            "scale",
            "deployment",
            "pgherd-coordinator",
            &format!("--replicas={replicas}"),
        ],
        None,
    )?;
    sys.wait_deployment("default", "pgherd-coordinator", Duration::from_secs(120))
        .await
}

/// Applies Zalando's minimal manifest as a user would and waits until it runs: a master, a replica, the
/// master Endpoints on the master. Returns the superuser's password from its Secret.
async fn create_minimal_cluster(sys: &System) -> anyhow::Result<(Value, String)> {
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&minimal_manifest()),
    )?;
    let (master, _) = sys.wait_members("default", CLUSTER, 2, BOOT).await?;
    master_endpoints_at(sys, &pod_ip(&master)).await?;
    Ok((master, sys.superuser_password("default", CLUSTER)?))
}

/// Zalando's default topology end to end: the minimal manifest becomes a running cluster reachable with
/// the Secret's password over TLS; deleting the leader's pod fails over, with and without the coordinator;
/// a coordinator restart writes nothing; deleting the manifest removes what the deletion policy says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minimal_manifest_on_kubernetes_dcs_with_configmaps() -> anyhow::Result<()> {
    let sys = System::start("pgh-cm", None).await?;
    sys.install_pgherd(&[]).await?;
    let (master, password) = create_minimal_cluster(&sys).await?;
    let ssl = psql(
        &pod_ip(&master),
        &password,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )?;
    assert_eq!(ssl, "t", "the connection is not TLS");
    wait::until(Duration::from_secs(60), "status Running", || async {
        let pg = sys.get("acid.zalan.do/v1", "postgresql", "default", CLUSTER);
        Ok(pg
            .filter(|pg| pg["status"]["PostgresClusterStatus"] == "Running")
            .map(|_| ()))
    })
    .await?;

    fail_over(&sys, &password, 2).await?;

    // Without the coordinator, Patroni alone fails over and labels the pods.
    scale_coordinator(&sys, 0).await?;
    fail_over(&sys, &password, 2).await?;

    // A coordinator that starts against a cluster in sync writes nothing and restarts no pod.
    let before = coordinator_objects(&sys);
    scale_coordinator(&sys, 1).await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        coordinator_objects(&sys),
        before,
        "the restarted coordinator wrote"
    );

    // Retain (the chart's default): the PVCs and credentials outlive the cluster; nothing else does.
    sys.kubectl_ok(&["delete", "postgresql", CLUSTER, "--wait=false"], None)?;
    wait::until(
        Duration::from_secs(180),
        "the cluster's objects gone",
        || async {
            let left: Vec<String> = [
                ("apps/v1", "StatefulSet"),
                ("v1", "Pod"),
                ("v1", "Service"),
                ("policy/v1", "PodDisruptionBudget"),
                ("v1", "ConfigMap"),
            ]
            .iter()
            .flat_map(|(a, k)| {
                let objects = sys.list(a, k, "default", SELECTOR);
                objects
                    .into_iter()
                    .map(move |o| format!("{k} {}", name(&o)))
            })
            .collect();
            // What is left goes into the timeout's message: a pod that does not stop and an object
            // re-created after the deletion pass fail this wait alike.
            anyhow::ensure!(left.is_empty(), "left: {left:?}");
            Ok(Some(()))
        },
    )
    .await?;
    assert_eq!(
        sys.list("v1", "PersistentVolumeClaim", "default", SELECTOR)
            .len(),
        2
    );
    assert!(sys.list("v1", "Secret", "default", SELECTOR).len() >= 4);
    sys.shutdown().await;
    Ok(())
}

/// Patroni's Endpoints mode: Patroni itself writes the master Endpoints (the Service has no selector).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_kubernetes_dcs_with_endpoints() -> anyhow::Result<()> {
    let sys = System::start("pgh-ep", None).await?;
    sys.install_pgherd(&["configGeneral.kubernetes_use_configmaps=false"])
        .await?;
    let (_, password) = create_minimal_cluster(&sys).await?;
    fail_over(&sys, &password, 2).await?;
    sys.shutdown().await;
    Ok(())
}

/// etcd as Patroni's DCS: nothing in Kubernetes knows the roles unless the agent's `callback-role` labels
/// the pods and points the master Endpoints at the primary, as Spilo's callback does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_on_etcd_labels_pods_through_callback_role() -> anyhow::Result<()> {
    let sys = System::start("pgh-etcd", None).await?;
    let etcd = Etcd::start_on(&sys.network.gateway).await?;
    sys.install_pgherd(&[&format!("configGeneral.etcd_host={}", etcd.host())])
        .await?;
    let (_, password) = create_minimal_cluster(&sys).await?;
    fail_over(&sys, &password, 2).await?;
    sys.shutdown().await;
    Ok(())
}
