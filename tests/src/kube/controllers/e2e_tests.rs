//! End-to-end runs of [`Controllers`] on a [`Store`], with the test playing the pod runner (it writes pod
//! status: phase, readiness, IP).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::util;
use super::*;
use crate::kube::store::PatchType;

// End to end: Controllers on a Store; the test plays the kubelet.

struct Env {
    store: Arc<Store>,
    _ctl: Controllers,
}

fn env() -> Env {
    let store = Store::new(10_000);
    let w = WriteOptions {
        manager: "test".into(),
        ..Default::default()
    };
    store
        .create(
            &rt(&store, Kind::Namespace),
            "",
            json!({"metadata": {"name": "ns"}}),
            &w,
        )
        .expect("ns");
    let ctl = Controllers::start(
        store.clone(),
        ControllerOptions {
            ca_pem: "PEM".into(),
            resync: Duration::from_millis(200),
        },
    );
    Env { store, _ctl: ctl }
}

fn rt(store: &Store, k: Kind) -> Arc<crate::kube::resources::ResourceType> {
    let (g, v, p) = k.gvr();
    store.resource(g, v, p).expect("served")
}

fn w() -> WriteOptions {
    WriteOptions {
        manager: "test".into(),
        ..Default::default()
    }
}

impl Env {
    fn create(&self, k: Kind, obj: Value) {
        self.store
            .create(&rt(&self.store, k), "ns", obj, &w())
            .expect("create");
    }
    fn get(&self, k: Kind, name: &str) -> Option<Value> {
        self.store.get(&rt(&self.store, k), "ns", name).ok()
    }
    fn list(&self, k: Kind) -> Vec<Value> {
        self.store
            .list(
                &rt(&self.store, k),
                Some("ns"),
                &Default::default(),
                None,
                None,
            )
            .0
    }
    fn names(&self, k: Kind) -> Vec<String> {
        self.list(k)
            .iter()
            .map(|o| util::name(o).to_string())
            .collect()
    }
    fn patch(&self, k: Kind, name: &str, body: Value, status: bool) {
        self.store
            .patch(
                &rt(&self.store, k),
                "ns",
                name,
                PatchType::Merge,
                &body,
                status,
                &w(),
            )
            .expect("patch");
    }
    fn delete(&self, k: Kind, name: &str) {
        self.store
            .delete(&rt(&self.store, k), "ns", name, &Default::default())
            .expect("delete");
    }
    /// What the pod runner does for a pod that started.
    fn ready(&self, name: &str, ip: &str) {
        self.patch(
            Kind::Pod,
            name,
            json!({"status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}]}}),
            true,
        );
    }
    /// Marks every Pending pod Running and Ready.
    fn ready_all(&self) {
        for (i, p) in self.list(Kind::Pod).iter().enumerate() {
            if util::phase(p) == "Pending" && !util::deleting(p) {
                self.ready(util::name(p), &format!("10.1.0.{}", i + 1));
            }
        }
    }
    async fn until(&self, what: &str, f: impl Fn(&Env) -> bool) {
        for _ in 0..500 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}: pods {:?}",
            self.names(Kind::Pod)
        );
    }
    /// Asserts that the controllers write nothing more (no write loops, resyncs are no-ops).
    async fn settled(&self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rv = self.store.resource_version();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            rv,
            self.store.resource_version(),
            "controllers keep writing"
        );
    }
    /// Runs `ready_all` while waiting.
    /// Waits until pod `name` exists again with a uid other than `old`.
    async fn until_replaced(&self, name: &str, old: &str) {
        self.until(&format!("{name} replaced"), |e| {
            e.get(Kind::Pod, name).is_some_and(|p| util::uid(&p) != old)
        })
        .await;
    }

    async fn until_ready(&self, what: &str, f: impl Fn(&Env) -> bool) {
        for _ in 0..500 {
            self.ready_all();
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}: pods {:?}",
            self.names(Kind::Pod)
        );
    }
}

fn e2e_sts(strategy: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "updateStrategy": {"type": strategy},
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "pg", "image": "v1", "ports": [{"name": "postgresql", "containerPort": 5432}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "pgdata"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

#[tokio::test]
async fn statefulset_end_to_end() {
    let e = env();
    e.create(Kind::Service, json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None",
        "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432, "targetPort": "postgresql"}]}}));
    e.create(Kind::StatefulSet, e2e_sts("OnDelete"));
    e.until("db-0", |e| e.names(Kind::Pod) == ["db-0"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(e.names(Kind::Pod), ["db-0"], "OrderedReady waits");
    e.ready("db-0", "10.1.0.1");
    e.until("db-1", |e| e.names(Kind::Pod).len() == 2).await;
    e.ready("db-1", "10.1.0.2");
    e.until("db-2", |e| e.names(Kind::Pod).len() == 3).await;
    e.ready("db-2", "10.1.0.3");
    e.until("status", |e| {
        e.get(Kind::StatefulSet, "db")
            .is_some_and(|s| s["status"]["readyReplicas"] == 3)
    })
    .await;
    e.until("bound claims", |e| {
        let pvcs = e.list(Kind::Pvc);
        pvcs.len() == 3 && pvcs.iter().all(|p| p["status"]["phase"] == "Bound")
    })
    .await;
    e.until("endpoints", |e| {
        e.get(Kind::Endpoints, "db")
            .is_some_and(|ep| ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(3))
    })
    .await;
    let ep = e.get(Kind::Endpoints, "db").expect("endpoints");
    assert_eq!(ep["subsets"][0]["addresses"][0]["hostname"], "db-0");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 5432);

    // OnDelete: a template change deletes nothing; a deleted pod comes back from the new template.
    e.patch(
        Kind::StatefulSet,
        "db",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "pg", "image": "v2"}]}}}}),
        false,
    );
    e.until("update revision", |e| {
        e.get(Kind::StatefulSet, "db")
            .is_some_and(|s| s["status"]["updateRevision"] != s["status"]["currentRevision"])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(e.names(Kind::Pod).len(), 3);
    let uid1 = util::uid(&e.get(Kind::Pod, "db-1").expect("db-1")).to_string();
    e.delete(Kind::Pod, "db-1");
    e.until_replaced("db-1", &uid1).await;
    let p1 = e.get(Kind::Pod, "db-1").expect("db-1");
    assert_eq!(p1["spec"]["containers"][0]["image"], "v2");
    assert_eq!(e.list(Kind::Pvc).len(), 3, "claims outlive their pods");
    let mut revs: Vec<i64> = e
        .list(Kind::ControllerRevision)
        .iter()
        .map(|r| util::int(r, "/revision", 0))
        .collect();
    revs.sort();
    assert_eq!(revs, [1, 2]);

    // Scale down: highest first, claims stay.
    e.ready("db-1", "10.1.0.2");
    e.patch(
        Kind::StatefulSet,
        "db",
        json!({"spec": {"replicas": 1}}),
        false,
    );
    e.until("scaled down", |e| e.names(Kind::Pod) == ["db-0"])
        .await;
    assert_eq!(e.list(Kind::Pvc).len(), 3);
    e.settled().await;
}

#[tokio::test]
async fn graceful_deletion_is_waited_for() {
    let e = env();
    e.store.set_graceful_pod_deletion(true);
    let mut s = e2e_sts("RollingUpdate");
    s["spec"]["replicas"] = json!(1);
    e.create(Kind::StatefulSet, s);
    e.until_ready("db-0", |e| {
        e.get(Kind::Pod, "db-0")
            .is_some_and(|p| util::pod_healthy(&p))
    })
    .await;
    let uid0 = util::uid(&e.get(Kind::Pod, "db-0").expect("db-0")).to_string();
    e.delete(Kind::Pod, "db-0");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = e.get(Kind::Pod, "db-0").expect("still there");
    assert!(
        util::deleting(&p) && util::uid(&p) == uid0,
        "not replaced while terminating"
    );
    // The kubelet confirms.
    let opts = DeleteOptions {
        grace_period: Some(0),
        ..Default::default()
    };
    e.store
        .delete(&rt(&e.store, Kind::Pod), "ns", "db-0", &opts)
        .expect("confirm");
    e.until_replaced("db-0", &uid0).await;
}

#[tokio::test]
async fn rolling_update_and_failed_pods() {
    let e = env();
    e.create(Kind::StatefulSet, e2e_sts("RollingUpdate"));
    e.until_ready("3 pods", |e| {
        e.list(Kind::Pod)
            .iter()
            .filter(|p| util::pod_healthy(p))
            .count()
            == 3
    })
    .await;
    let uids: Vec<String> = e
        .list(Kind::Pod)
        .iter()
        .map(|p| util::uid(p).to_string())
        .collect();
    e.patch(
        Kind::StatefulSet,
        "db",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "pg", "image": "v2"}]}}}}),
        false,
    );
    // The first replacement is db-2, while db-0 and db-1 are untouched.
    e.until_replaced("db-2", &uids[2]).await;
    assert_eq!(util::uid(&e.get(Kind::Pod, "db-0").expect("db-0")), uids[0]);
    assert_eq!(util::uid(&e.get(Kind::Pod, "db-1").expect("db-1")), uids[1]);
    e.until_ready("rolled out", |e| {
        e.get(Kind::StatefulSet, "db").is_some_and(|s| {
            s["status"]["updatedReplicas"] == 3
                && s["status"]["currentRevision"] == s["status"]["updateRevision"]
        })
    })
    .await;
    assert!(e
        .list(Kind::Pod)
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "v2"));
    // A Failed pod is replaced.
    let uid0 = util::uid(&e.get(Kind::Pod, "db-0").expect("db-0")).to_string();
    e.patch(
        Kind::Pod,
        "db-0",
        json!({"status": {"phase": "Failed"}}),
        true,
    );
    e.until_replaced("db-0", &uid0).await;
}

#[tokio::test]
async fn endpoints_follow_labels_and_readiness() {
    let e = env();
    e.create(
        Kind::Service,
        json!({"metadata": {"name": "demo", "labels": {"cluster-name": "demo"}},
        "spec": {"selector": {"spilo-role": "master"}, "ports": [{"port": 5432}]}}),
    );
    e.create(
        Kind::Service,
        json!({"metadata": {"name": "patroni"}, "spec": {"ports": [{"port": 5432}]}}),
    );
    for n in ["a", "b"] {
        e.create(Kind::Pod, json!({"metadata": {"name": n, "labels": {"spilo-role": if n == "a" { "master" } else { "replica" }}},
            "spec": {"containers": [{"name": "c"}]}}));
    }
    e.ready("a", "10.2.0.1");
    e.ready("b", "10.2.0.2");
    let ips = |e: &Env| -> Vec<String> {
        e.get(Kind::Endpoints, "demo")
            .and_then(|ep| ep["subsets"][0]["addresses"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["ip"].as_str().map(String::from))
            .collect()
    };
    e.until("a is master", |e| ips(e) == ["10.2.0.1"]).await;
    assert_eq!(
        e.get(Kind::Endpoints, "demo").expect("ep")["metadata"]["labels"]["cluster-name"],
        "demo"
    );
    e.patch(
        Kind::Pod,
        "a",
        json!({"metadata": {"labels": {"spilo-role": "replica"}}}),
        false,
    );
    e.patch(
        Kind::Pod,
        "b",
        json!({"metadata": {"labels": {"spilo-role": "master"}}}),
        false,
    );
    e.until("b is master", |e| ips(e) == ["10.2.0.2"]).await;
    e.patch(
        Kind::Pod,
        "b",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        true,
    );
    e.until("b not ready", |e| {
        e.get(Kind::Endpoints, "demo")
            .is_some_and(|ep| ep["subsets"][0]["notReadyAddresses"][0]["ip"] == "10.2.0.2")
    })
    .await;
    assert!(
        e.get(Kind::Endpoints, "patroni").is_none(),
        "no selector: untouched"
    );
    e.delete(Kind::Service, "demo");
    e.until("endpoints gone", |e| {
        e.get(Kind::Endpoints, "demo").is_none()
    })
    .await;
}

#[tokio::test]
async fn deployment_rolls_out() {
    let e = env();
    e.create(Kind::Deployment, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}}}));
    e.until_ready("available", |e| {
        e.get(Kind::Deployment, "web")
            .is_some_and(|d| d["status"]["availableReplicas"] == 2)
    })
    .await;
    let d = e.get(Kind::Deployment, "web").expect("web");
    assert_eq!(d["metadata"]["annotations"][deployment::REVISION], "1");
    let pods = e.list(Kind::Pod);
    assert!(pods.iter().all(|p| util::name(p).starts_with("web-")
        && p["metadata"]["labels"][deployment::HASH_LABEL].is_string()));
    e.patch(
        Kind::Deployment,
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
        false,
    );
    e.until_ready("rolled out", |e| {
        let pods = e.list(Kind::Pod);
        pods.len() == 2
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "v2" && util::pod_healthy(p))
            && e.get(Kind::Deployment, "web").is_some_and(|d| {
                d["status"]["updatedReplicas"] == 2
                    && d["status"]["availableReplicas"] == 2
                    && d["metadata"]["annotations"][deployment::REVISION] == "2"
            })
    })
    .await;
    let d = e.get(Kind::Deployment, "web").expect("web");
    let progressing = util::condition(&d, "Progressing").expect("Progressing");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    assert_eq!(
        e.list(Kind::ReplicaSet).len(),
        2,
        "the old ReplicaSet is kept at 0"
    );
    e.settled().await;
}

#[tokio::test]
async fn jobs_from_cronjobs_complete_and_fail() {
    let e = env();
    e.create(
        Kind::CronJob,
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup"},
        "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"backoffLimit": 1,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}}}}),
    );
    let job = job_from_cronjob(&e.store, "ns", "backup", "backup-manual").expect("job");
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let pod_of = |e: &Env, job: &str| {
        e.list(Kind::Pod)
            .into_iter()
            .find(|p| p["metadata"]["labels"]["job-name"] == job && util::pod_active(p))
    };
    // Plays the kubelet: the job's running pod ends in `phase`.
    let finish = |job: &'static str, phase: &'static str| {
        let e = &e;
        async move {
            e.until("job pod", |e| pod_of(e, job).is_some()).await;
            let p = pod_of(e, job).expect("pod");
            e.patch(
                Kind::Pod,
                util::name(&p),
                json!({"status": {"phase": phase}}),
                true,
            );
        }
    };
    finish("backup-manual", "Succeeded").await;
    e.until("complete", |e| {
        e.get(Kind::Job, "backup-manual")
            .is_some_and(|j| util::condition_true(&j, "Complete"))
    })
    .await;
    assert!(pod_of(&e, "backup-manual").is_none());
    e.until("cronjob status", |e| {
        e.get(Kind::CronJob, "backup")
            .is_some_and(|c| c["status"]["lastSuccessfulTime"].is_string())
    })
    .await;

    job_from_cronjob(&e.store, "ns", "backup", "backup-2").expect("job");
    for _ in 0..2 {
        finish("backup-2", "Failed").await;
    }
    e.until("failed", |e| {
        e.get(Kind::Job, "backup-2").is_some_and(|j| {
            util::condition(&j, "Failed").is_some_and(|c| c["reason"] == "BackoffLimitExceeded")
                && j["status"]["failed"] == 2
        })
    })
    .await;
    e.settled().await;
}

#[tokio::test]
async fn namespaces_get_default_serviceaccount_and_root_ca() {
    let e = env();
    e.until("defaults", |e| {
        e.get(Kind::ServiceAccount, "default").is_some()
            && e.get(Kind::ConfigMap, namespace::CA_CONFIGMAP)
                .is_some_and(|c| c["data"]["ca.crt"] == "PEM")
    })
    .await;
}

#[tokio::test]
async fn on_an_api_server_bootstrap_objects_are_left_alone() {
    let srv = crate::kube::ApiServer::start(crate::kube::Options {
        crds_dir: None,
        ..Default::default()
    })
    .await
    .expect("api server");
    let store = srv.store().clone();
    let ep_rt = rt(&store, Kind::Endpoints);
    let before = store
        .get(&ep_rt, "default", "kubernetes")
        .expect("endpoints");
    let _ctl = Controllers::start(
        store.clone(),
        ControllerOptions {
            ca_pem: srv.ca_pem().into(),
            ..Default::default()
        },
    );
    let cm = rt(&store, Kind::ConfigMap);
    for _ in 0..500 {
        let done = ["default", "kube-system", "kube-public", "kube-node-lease"]
            .iter()
            .all(|ns| {
                store
                    .get(&cm, ns, namespace::CA_CONFIGMAP)
                    .is_ok_and(|c| c["data"]["ca.crt"] == srv.ca_pem())
            });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = store
        .get(&cm, "kube-system", namespace::CA_CONFIGMAP)
        .expect("root CA");
    assert_eq!(c["data"]["ca.crt"], srv.ca_pem());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = store
        .get(&ep_rt, "default", "kubernetes")
        .expect("endpoints");
    assert_eq!(before, after, "the kubernetes Service has no selector");
}

#[tokio::test]
async fn cronjob_runs_a_due_schedule() {
    let e = env();
    e.create(
        Kind::CronJob,
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}}}}),
    );
    // A run two minutes ago makes the last minute due now, without waiting for the clock.
    let now = Time::now();
    e.patch(
        Kind::CronJob,
        "tick",
        json!({"status": {"lastScheduleTime": Time(now.0 - 120).rfc3339()}}),
        true,
    );
    e.until("a job", |e| !e.list(Kind::Job).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let jobs = e.list(Kind::Job);
    assert_eq!(jobs.len(), 1, "Forbid: no second run while one is active");
    let job = jobs[0].clone();
    // No further runs, should the test cross a minute boundary; status is still kept.
    e.patch(
        Kind::CronJob,
        "tick",
        json!({"spec": {"suspend": true}}),
        false,
    );
    let minute: i64 = util::name(&job)
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .expect("tick-<minute>");
    assert!((now.0 / 60 - minute).abs() <= 1);
    assert_eq!(
        job["metadata"]["annotations"][cronjob::SCHEDULED],
        Time(minute * 60).rfc3339()
    );
    e.until("active", |e| {
        e.get(Kind::CronJob, "tick")
            .is_some_and(|c| c["status"]["active"][0]["name"] == util::name(&job))
    })
    .await;
    e.until("job pod", |e| !e.list(Kind::Pod).is_empty()).await;
    let pod = e.list(Kind::Pod).remove(0);
    e.patch(
        Kind::Pod,
        util::name(&pod),
        json!({"status": {"phase": "Succeeded"}}),
        true,
    );
    e.until("finished", |e| {
        e.get(Kind::CronJob, "tick").is_some_and(|c| {
            c["status"].get("active").is_none() && c["status"]["lastSuccessfulTime"].is_string()
        })
    })
    .await;
}

#[tokio::test]
async fn when_scaled_delete_takes_the_claims_and_volumes() {
    let e = env();
    let mut s = e2e_sts("RollingUpdate");
    s["spec"]["podManagementPolicy"] = json!("Parallel");
    s["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Retain", "whenScaled": "Delete"});
    e.create(Kind::StatefulSet, s);
    e.until_ready("3 bound claims", |e| {
        e.list(Kind::Pvc)
            .iter()
            .filter(|p| p["status"]["phase"] == "Bound")
            .count()
            == 3
    })
    .await;
    e.patch(
        Kind::StatefulSet,
        "db",
        json!({"spec": {"replicas": 1}}),
        false,
    );
    e.until("claims gone", |e| e.names(Kind::Pvc) == ["pgdata-db-0"])
        .await;
    let pvs = |e: &Env| {
        let rt = rt(&e.store, Kind::Pv);
        e.store
            .list(&rt, None, &Default::default(), None, None)
            .0
            .len()
    };
    e.until("volumes gone", |e| pvs(e) == 1).await;
    assert_eq!(e.names(Kind::Pod), ["db-0"]);
}
