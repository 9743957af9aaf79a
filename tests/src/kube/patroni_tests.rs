//! Patroni's Kubernetes DCS (the `patroni` package of `.venv`, and Patroni 3 of `.venv-patroni3`, unchanged) against the stand-in, in both of
//! Zalando's modes: leader lock on Endpoints (with subsets and the `-config` Service) and on ConfigMaps.
//! No PostgreSQL: the script drives the DCS object the way Patroni's HA loop does.

use std::time::Duration;

use serde_json::{json, Value};

use super::{ApiServer, Options, WriteOptions};

const SCRIPT: &str = r#"
import json, sys, time
from patroni.dcs import get_dcs

mode = sys.argv[1]

def dcs(name, ip):
    return get_dcs({'scope': 'demo', 'name': name, 'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10,
                    'kubernetes': {'namespace': 'default', 'labels': {'application': 'spilo'},
                                   'role_label': 'spilo-role', 'leader_label_value': 'master',
                                   'follower_label_value': 'replica', 'use_endpoints': mode == 'endpoints',
                                   'pod_ip': ip, 'ports': [{'name': 'postgresql', 'port': 5432}],
                                   'context': 'pgherd-standin'}})

def wait(pred, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    sys.exit('timed out waiting for ' + what + ': ' + json.dumps(out))

a, b = dcs('demo-0', '10.0.0.10'), dcs('demo-1', '10.0.0.11')
out = {}
out['a_initialize'] = bool(a.initialize(create_new=True, sysid='7000000000000000001'))
out['a_acquire'] = bool(a.attempt_to_acquire_leader())
out['b_acquire_while_held'] = bool(b.attempt_to_acquire_leader())
wait(lambda: b.get_cluster().leader is not None and b.get_cluster().leader.name == 'demo-0', 'b to see leader demo-0')
cluster = a.get_cluster()
out['a_update_leader'] = bool(a.update_leader(cluster, last_lsn=100))
member = {'conn_url': 'postgres://x', 'api_url': 'http://x:8008/patroni', 'state': 'running'}
out['a_touch'] = bool(a.touch_member(dict(member, role='primary')))
out['b_touch'] = bool(b.touch_member(dict(member, role='replica')))
wait(lambda: len(b.get_cluster().members) == 2, 'two members')
out['members'] = sorted(m.name for m in b.get_cluster().members)
out['sysid'] = b.get_cluster().initialize
out['a_delete_leader'] = bool(a.delete_leader(a.get_cluster().leader, 200))
# The leader object stays, without a holder: Patroni reads that as a leader named ''.
wait(lambda: not b.get_cluster().leader or not b.get_cluster().leader.name, 'b to see no leader')
out['b_acquire_after'] = bool(b.attempt_to_acquire_leader())
wait(lambda: a.get_cluster().leader is not None and a.get_cluster().leader.name == 'demo-1', 'a to see leader demo-1')
out['leader_after'] = a.get_cluster().leader.name
print(json.dumps(out))
"#;

async fn run(mode: &str, python: std::path::PathBuf) {
    let srv = ApiServer::start(Options::default()).await.unwrap();
    let store = srv.store();
    let pods = store.resource("", "v1", "pods").unwrap();
    let w = WriteOptions {
        manager: "test".into(),
        ..Default::default()
    };
    for (name, ip) in [("demo-0", "10.0.0.10"), ("demo-1", "10.0.0.11")] {
        let pod = json!({"metadata": {"name": name, "labels": {"application": "spilo", "cluster-name": "demo"}},
                         "spec": {"containers": [{"name": "postgres", "image": "x"}]}});
        store.create(&pods, "default", pod, &w).unwrap();
        let status = json!({"status": {"phase": "Running", "podIP": ip}});
        store
            .patch(
                &pods,
                "default",
                name,
                super::PatchType::Merge,
                &status,
                true,
                &w,
            )
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("dcs.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(&script)
            .arg(mode)
            .env("KUBECONFIG", srv.kubeconfig())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "patroni script failed:\n{stdout}\n{stderr}"
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("{mode}: {r}");
    for k in [
        "a_initialize",
        "a_acquire",
        "a_update_leader",
        "a_touch",
        "b_touch",
        "a_delete_leader",
        "b_acquire_after",
    ] {
        assert_eq!(r[k], true, "{k}: {r}");
    }
    assert_eq!(r["b_acquire_while_held"], false, "{r}");
    assert_eq!(r["members"], json!(["demo-0", "demo-1"]));
    assert_eq!(r["sysid"], "7000000000000000001");
    assert_eq!(r["leader_after"], "demo-1");

    let kind = store
        .resource(
            "",
            "v1",
            if mode == "endpoints" {
                "endpoints"
            } else {
                "configmaps"
            },
        )
        .unwrap();
    let leader_name = if mode == "endpoints" {
        "demo"
    } else {
        "demo-leader"
    };
    let leader = store.get(&kind, "default", leader_name).unwrap();
    assert_eq!(leader["metadata"]["annotations"]["leader"], "demo-1");
    assert_eq!(leader["metadata"]["labels"]["cluster-name"], "demo");
    let role = |n: &str| {
        store.get(&pods, "default", n).unwrap()["metadata"]["labels"]["spilo-role"].clone()
    };
    assert_eq!(
        (role("demo-0"), role("demo-1")),
        (json!("master"), json!("replica"))
    );
    if mode == "endpoints" {
        assert_eq!(
            leader["subsets"][0]["addresses"][0]["ip"], "10.0.0.11",
            "{leader}"
        );
        let svc = store.resource("", "v1", "services").unwrap();
        assert_eq!(
            store.get(&svc, "default", "demo-config").unwrap()["spec"]["clusterIP"],
            "None"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_kubernetes_dcs_endpoints() {
    run("endpoints", crate::tools::python().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_kubernetes_dcs_configmaps() {
    run("configmaps", crate::tools::python().unwrap()).await;
}

/// Patroni 3.3 (`.venv-patroni3`), which pgherd also supports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni3_kubernetes_dcs_endpoints() {
    let python = crate::tools::patroni3().unwrap().with_file_name("python3");
    run("endpoints", python).await;
}
