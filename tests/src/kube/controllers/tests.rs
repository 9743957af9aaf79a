//! Unit tests of the controllers' decisions: snapshots in, actions out, no store and no clock.

use serde_json::{json, Value};

use super::util::{self, Time};
use super::*;

fn sts(name: &str, replicas: i64, policy: &str, strategy: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1,
            "resourceVersion": "1"},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": policy,
            "updateStrategy": {"type": strategy},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"l": "v"}},
                "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}})
}

fn sts_pod(s: &Value, i: i64, ready: bool) -> Value {
    let name = util::name(s);
    let hash = util::hash(&s["spec"]["template"], 0);
    let mut p = json!({"metadata": {"name": format!("{name}-{i}"), "namespace": "ns", "uid": format!("p{i}"),
        "labels": {"app": name, "controller-revision-hash": hash},
        "ownerReferences": [util::controller_ref(s)]}, "status": {"phase": "Pending"}});
    if ready {
        p["status"] = json!({"phase": "Running", "podIP": format!("10.0.0.{i}"),
            "conditions": [{"type": "Ready", "status": "True"}]});
    }
    p
}

fn creates(actions: &[Action], kind: Kind) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { kind: k, obj, .. } if *k == kind => Some(util::name(obj).to_string()),
            _ => None,
        })
        .collect()
}

/// Index and object of the first create of `kind`.
fn first_create(actions: &[Action], kind: Kind) -> Option<(usize, &Value)> {
    actions.iter().enumerate().find_map(|(i, a)| match a {
        Action::Create { kind: k, obj, .. } if *k == kind => Some((i, obj)),
        _ => None,
    })
}

fn deletes(actions: &[Action], kind: Kind) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { kind: k, name, .. } if *k == kind => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn revision_of(s: &Value) -> Value {
    let hash = util::hash(&s["spec"]["template"], 0);
    json!({"metadata": {"name": format!("{}-{hash}", util::name(s)), "namespace": "ns"}, "revision": 1,
        "data": {"spec": {"template": s["spec"]["template"]}}})
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_claims_first() {
    let s = sts("db", 3, "OrderedReady", "RollingUpdate");
    let a = statefulset::reconcile(&s, &[], &[], &[]);
    assert_eq!(creates(&a, Kind::ControllerRevision).len(), 1);
    assert_eq!(creates(&a, Kind::Pvc), ["data-db-0"]);
    assert_eq!(creates(&a, Kind::Pod), ["db-0"]);
    let pvc_at = first_create(&a, Kind::Pvc).map(|(i, _)| i);
    let pod_at = first_create(&a, Kind::Pod).map(|(i, _)| i);
    assert!(pvc_at < pod_at);
    let (_, pod) = first_create(&a, Kind::Pod).expect("a create");
    assert_eq!(pod["spec"]["hostname"], "db-0");
    assert_eq!(pod["spec"]["subdomain"], "db");
    assert_eq!(
        pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "0"
    );
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-0"
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-db-0"
    );

    let rev = revision_of(&s);
    let p0 = sts_pod(&s, 0, false);
    let a = statefulset::reconcile(&s, &[&p0], &[], &[&rev]);
    assert!(
        creates(&a, Kind::Pod).is_empty(),
        "waits for db-0 to be Ready"
    );
    let p0 = sts_pod(&s, 0, true);
    let a = statefulset::reconcile(&s, &[&p0], &[], &[&rev]);
    assert_eq!(creates(&a, Kind::Pod), ["db-1"]);
}

#[test]
fn parallel_creates_all() {
    let s = sts("db", 3, "Parallel", "RollingUpdate");
    let a = statefulset::reconcile(&s, &[], &[], &[]);
    assert_eq!(creates(&a, Kind::Pod), ["db-0", "db-1", "db-2"]);
}

#[test]
fn scale_down_highest_first_one_at_a_time() {
    let s = sts("db", 1, "OrderedReady", "RollingUpdate");
    let rev = revision_of(&s);
    let pods: Vec<Value> = (0..3).map(|i| sts_pod(&s, i, true)).collect();
    let refs: Vec<&Value> = pods.iter().collect();
    let a = statefulset::reconcile(&s, &refs, &[], &[&rev]);
    assert_eq!(deletes(&a, Kind::Pod), ["db-2"]);
    assert!(deletes(&a, Kind::Pvc).is_empty());
}

#[test]
fn when_scaled_delete_hands_claims_to_the_condemned_pod() {
    let mut s = sts("db", 1, "OrderedReady", "RollingUpdate");
    s["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Retain", "whenScaled": "Delete"});
    let rev = revision_of(&s);
    let pods: Vec<Value> = (0..2).map(|i| sts_pod(&s, i, true)).collect();
    let refs: Vec<&Value> = pods.iter().collect();
    let pvcs: Vec<Value> = (0..2)
        .map(|i| json!({"metadata": {"name": format!("data-db-{i}"), "namespace": "ns"}}))
        .collect();
    let prefs: Vec<&Value> = pvcs.iter().collect();
    let a = statefulset::reconcile(&s, &refs, &prefs, &[&rev]);
    let patch = a.iter().position(|x| {
        matches!(x, Action::Patch { kind: Kind::Pvc, name, patch, .. }
        if name == "data-db-1" && patch["metadata"]["ownerReferences"][0]["uid"] == "p1")
    });
    let delete = a
        .iter()
        .position(|x| matches!(x, Action::Delete { kind: Kind::Pod, name, .. } if name == "db-1"));
    assert!(patch.is_some() && patch < delete, "{a:?}");
}

#[test]
fn rolling_update_replaces_highest_ordinal_first_and_respects_partition() {
    let old = sts("db", 3, "OrderedReady", "RollingUpdate");
    let pods: Vec<Value> = (0..3).map(|i| sts_pod(&old, i, true)).collect();
    let refs: Vec<&Value> = pods.iter().collect();
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i2");
    let revs = [revision_of(&old), revision_of(&new)];
    let rrefs: Vec<&Value> = revs.iter().collect();
    let a = statefulset::reconcile(&new, &refs, &[], &rrefs);
    assert_eq!(deletes(&a, Kind::Pod), ["db-2"]);
    // Not while another pod is unready.
    let mut pods2 = pods.clone();
    pods2[0] = sts_pod(&old, 0, false);
    let refs2: Vec<&Value> = pods2.iter().collect();
    assert!(deletes(
        &statefulset::reconcile(&new, &refs2, &[], &rrefs),
        Kind::Pod
    )
    .is_empty());
    // Partition 3: nothing.
    new["spec"]["updateStrategy"]["rollingUpdate"] = json!({"partition": 3});
    assert!(deletes(&statefulset::reconcile(&new, &refs, &[], &rrefs), Kind::Pod).is_empty());
    // OnDelete: nothing.
    new["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    assert!(deletes(&statefulset::reconcile(&new, &refs, &[], &rrefs), Kind::Pod).is_empty());
}

#[test]
fn terminating_pod_is_waited_for_failed_pod_replaced() {
    let s = sts("db", 2, "OrderedReady", "RollingUpdate");
    let rev = revision_of(&s);
    let mut p0 = sts_pod(&s, 0, true);
    p0["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let a = statefulset::reconcile(&s, &[&p0], &[], &[&rev]);
    assert!(creates(&a, Kind::Pod).is_empty() && deletes(&a, Kind::Pod).is_empty());
    let mut p0 = sts_pod(&s, 0, false);
    p0["status"]["phase"] = json!("Failed");
    let a = statefulset::reconcile(&s, &[&p0], &[], &[&rev]);
    assert_eq!(deletes(&a, Kind::Pod), ["db-0"]);
}

#[test]
fn claim_retention_policy() {
    let mut s = sts("db", 1, "OrderedReady", "RollingUpdate");
    let a = statefulset::reconcile(&s, &[], &[], &[]);
    let (_, pvc) = first_create(&a, Kind::Pvc).expect("a create");
    assert!(pvc["metadata"].get("ownerReferences").is_none());
    assert_eq!(pvc["metadata"]["labels"], json!({"l": "v", "app": "db"}));
    s["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
    let a = statefulset::reconcile(&s, &[], &[], &[]);
    let (_, pvc) = first_create(&a, Kind::Pvc).expect("a create");
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["uid"], "uid-db");
}

fn pod(name: &str, labels: Value, ip: Option<&str>, ready: bool) -> Value {
    let mut p = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": labels},
        "spec": {"nodeName": "n1", "hostname": name, "subdomain": "db",
            "containers": [{"name": "c", "ports": [{"name": "postgresql", "containerPort": 5432}]}]},
        "status": {"phase": "Running"}});
    if let Some(ip) = ip {
        p["status"]["podIP"] = json!(ip);
    }
    if ready {
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    }
    p
}

#[test]
fn endpoints_split_ready_and_resolve_named_ports() {
    let svc = json!({"metadata": {"name": "db", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {"clusterIP": "None", "selector": {"app": "db"},
            "ports": [{"name": "pg", "port": 5432, "targetPort": "postgresql"}]}});
    let p1 = pod("db-0", json!({"app": "db"}), Some("10.0.0.2"), true);
    let p2 = pod("db-1", json!({"app": "db"}), Some("10.0.0.1"), false);
    let p3 = pod("db-2", json!({"app": "db"}), None, true);
    let mut p4 = pod("db-3", json!({"app": "db"}), Some("10.0.0.4"), true);
    p4["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let p5 = pod("other", json!({"app": "x"}), Some("10.0.0.5"), true);
    let Some(Action::Create { obj, .. }) =
        endpoints::reconcile(&svc, &[&p1, &p2, &p3, &p4, &p5], None)
    else {
        panic!()
    };
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"a": "b", "service.kubernetes.io/headless": ""})
    );
    let s = &obj["subsets"][0];
    assert_eq!(s["addresses"][0]["ip"], "10.0.0.2");
    assert_eq!(s["addresses"][0]["hostname"], "db-0");
    assert_eq!(s["addresses"][0]["nodeName"], "n1");
    assert_eq!(s["addresses"][0]["targetRef"]["name"], "db-0");
    assert_eq!(s["notReadyAddresses"][0]["ip"], "10.0.0.1");
    assert_eq!(
        s["ports"],
        json!([{"name": "pg", "port": 5432, "protocol": "TCP"}])
    );
    assert_eq!(obj["subsets"].as_array().map(Vec::len), Some(1));
    // Unchanged → no write; nothing selected → no subsets.
    let mut ep = obj.clone();
    ep["metadata"]["namespace"] = json!("ns");
    assert_eq!(endpoints::reconcile(&svc, &[&p1, &p2], Some(&ep)), None);
    let Some(Action::Update { obj, .. }) = endpoints::reconcile(&svc, &[&p5], Some(&ep)) else {
        panic!()
    };
    assert!(obj.get("subsets").is_none());
    // Without a selector: never touched.
    let plain = json!({"metadata": {"name": "db", "namespace": "ns"}, "spec": {}});
    assert_eq!(endpoints::reconcile(&plain, &[&p1], None), None);
}

#[test]
fn cron_schedules_convert_to_the_cron_crate() {
    let t = |s: &str| Time::parse(s).expect("time");
    let hourly = cronjob::parse_schedule("@hourly", None).expect("parse");
    assert_eq!(
        cronjob::most_recent(
            &hourly,
            t("2026-01-01T00:30:00Z"),
            t("2026-01-01T03:10:00Z")
        ),
        Some(t("2026-01-01T03:00:00Z"))
    );
    // 2026-01-04 is a Sunday: weekday 0 in Kubernetes.
    let sunday = cronjob::parse_schedule("CRON_TZ=UTC 15 4 * * 0", None).expect("parse");
    assert_eq!(
        cronjob::most_recent(
            &sunday,
            t("2026-01-01T00:00:00Z"),
            t("2026-01-10T00:00:00Z")
        ),
        Some(t("2026-01-04T04:15:00Z"))
    );
    let weekdays = cronjob::parse_schedule("0 12 * * 1-5", None).expect("parse");
    assert_eq!(
        cronjob::most_recent(
            &weekdays,
            t("2026-01-02T13:00:00Z"),
            t("2026-01-05T00:00:00Z")
        ),
        None,
        "Saturday and Sunday are skipped"
    );
    assert!(cronjob::parse_schedule("* * * *", None).is_err());
    assert!(cronjob::parse_schedule("* * * * *", Some("Europe/Berlin")).is_err());
    assert!(cronjob::parse_schedule("*/5 * * * *", Some("Etc/UTC")).is_ok());
}

fn cronjob_obj(policy: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup", "namespace": "ns", "uid": "cj", "resourceVersion": "5",
            "creationTimestamp": "2026-01-01T00:00:30Z"},
        "spec": {"schedule": "* * * * *", "concurrencyPolicy": policy, "suspend": false,
            "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"x": "y"}}, "spec": {"template": {"spec": {}}}}}})
}

fn cj_job(cj: &Value, name: &str, state: Option<&str>, done: &str) -> Value {
    let mut j = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
        "ownerReferences": [util::controller_ref(cj)]}, "status": {}});
    if let Some(s) = state {
        j["status"] =
            json!({"conditions": [{"type": s, "status": "True"}], "completionTime": done});
    }
    j
}

#[test]
fn cronjob_runs_at_the_scheduled_minute() {
    let cj = cronjob_obj("Allow");
    let now = Time::parse("2026-01-01T00:02:10Z").expect("time");
    let a = cronjob::reconcile(&cj, &[], now);
    let minute = now.0 / 60;
    assert_eq!(creates(&a, Kind::Job), [format!("backup-{minute}")]);
    let Some(Action::Create { obj: job, .. }) =
        a.iter().find(|x| matches!(x, Action::Create { .. }))
    else {
        panic!()
    };
    assert_eq!(
        job["metadata"]["annotations"][cronjob::SCHEDULED],
        "2026-01-01T00:02:00Z"
    );
    assert_eq!(job["metadata"]["labels"]["x"], "y");
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "cj");
    let Some(Action::Status { status, .. }) = a.iter().find(|x| matches!(x, Action::Status { .. }))
    else {
        panic!()
    };
    assert_eq!(status["lastScheduleTime"], "2026-01-01T00:02:00Z");
    // Already scheduled: nothing new before the next minute.
    let mut cj2 = cj.clone();
    cj2["status"] = json!({"lastScheduleTime": "2026-01-01T00:02:00Z"});
    assert!(creates(&cronjob::reconcile(&cj2, &[], now), Kind::Job).is_empty());
    // Suspended: nothing.
    let mut cj3 = cj.clone();
    cj3["spec"]["suspend"] = json!(true);
    assert!(creates(&cronjob::reconcile(&cj3, &[], now), Kind::Job).is_empty());
    // A missed start beyond startingDeadlineSeconds: nothing.
    let mut cj4 = cj.clone();
    cj4["spec"]["startingDeadlineSeconds"] = json!(5);
    assert!(creates(&cronjob::reconcile(&cj4, &[], now), Kind::Job).is_empty());
}

#[test]
fn cronjob_concurrency_and_history() {
    let now = Time::parse("2026-01-01T00:02:10Z").expect("time");
    let cj = cronjob_obj("Forbid");
    let running = cj_job(&cj, "backup-1", None, "");
    assert!(creates(&cronjob::reconcile(&cj, &[&running], now), Kind::Job).is_empty());
    let cj = cronjob_obj("Replace");
    let a = cronjob::reconcile(&cj, &[&running], now);
    assert_eq!(deletes(&a, Kind::Job), ["backup-1"]);
    assert_eq!(creates(&a, Kind::Job).len(), 1);
    let cj = cronjob_obj("Allow");
    let a = cronjob::reconcile(&cj, &[&running], now);
    assert_eq!(creates(&a, Kind::Job).len(), 1);
    let s1 = cj_job(&cj, "s1", Some("Complete"), "2026-01-01T00:00:40Z");
    let s2 = cj_job(&cj, "s2", Some("Complete"), "2026-01-01T00:01:40Z");
    let f1 = cj_job(&cj, "f1", Some("Failed"), "2026-01-01T00:00:40Z");
    let a = cronjob::reconcile(&cj, &[&s2, &s1, &f1], now);
    assert_eq!(deletes(&a, Kind::Job), ["s1"]);
    let Some(Action::Status { status, .. }) = a.iter().find(|x| matches!(x, Action::Status { .. }))
    else {
        panic!()
    };
    assert_eq!(status["lastSuccessfulTime"], "2026-01-01T00:01:40Z");
}

fn job_obj(parallelism: i64, completions: i64, backoff: i64) -> Value {
    json!({"metadata": {"name": "j", "namespace": "ns", "uid": "ju", "resourceVersion": "3"},
        "spec": {"parallelism": parallelism, "completions": completions, "backoffLimit": backoff,
            "template": {"metadata": {"labels": {"job-name": "j"}}, "spec": {"restartPolicy": "Never"}}}})
}

fn job_pod(n: usize, phase: &str) -> Value {
    json!({"metadata": {"name": format!("j-{n}"), "namespace": "ns", "uid": format!("jp{n}")},
        "status": {"phase": phase}})
}

#[test]
fn job_runs_parallel_pods_and_completes() {
    let now = Time(1_800_000_000);
    let j = job_obj(2, 3, 6);
    let a = job::reconcile(&j, &[], now);
    let prefixes: Vec<&Value> = a
        .iter()
        .filter_map(|x| match x {
            Action::Create {
                kind: Kind::Pod,
                obj,
                ..
            } => Some(&obj["metadata"]["generateName"]),
            _ => None,
        })
        .collect();
    assert_eq!(prefixes, [&json!("j-"), &json!("j-")]);
    let Action::Status { status, .. } = &a[0] else {
        panic!("status first")
    };
    assert_eq!(status["active"], 2);
    assert_eq!(status["startTime"], now.rfc3339());
    let (p0, p1, p2) = (
        job_pod(0, "Succeeded"),
        job_pod(1, "Succeeded"),
        job_pod(2, "Running"),
    );
    let a = job::reconcile(&j, &[&p0, &p1, &p2], now);
    assert!(first_create(&a, Kind::Pod).is_none());
    let p2 = job_pod(2, "Succeeded");
    let a = job::reconcile(&j, &[&p0, &p1, &p2], now);
    let Action::Status { status, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(status["succeeded"], 3);
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    assert!(status.get("completionTime").is_some());
}

#[test]
fn job_fails_after_backoff_limit_and_deadline() {
    let now = Time(1_800_000_000);
    let j = job_obj(1, 1, 1);
    let (f0, f1, r) = (
        job_pod(0, "Failed"),
        job_pod(1, "Failed"),
        job_pod(2, "Running"),
    );
    let a = job::reconcile(&j, &[&f0, &r], now);
    assert!(
        deletes(&a, Kind::Pod).is_empty(),
        "one failure is within the limit"
    );
    let a = job::reconcile(&j, &[&f0, &f1, &r], now);
    let Action::Status { status, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(status["conditions"][1]["type"], "Failed");
    assert_eq!(status["conditions"][1]["reason"], "BackoffLimitExceeded");
    assert_eq!(deletes(&a, Kind::Pod), ["j-2"]);
    let mut j = job_obj(1, 1, 6);
    j["spec"]["activeDeadlineSeconds"] = json!(10);
    j["status"] = json!({"startTime": Time(now.0 - 11).rfc3339()});
    let a = job::reconcile(&j, &[&r], now);
    let Action::Status { status, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(status["conditions"][1]["reason"], "DeadlineExceeded");
}

fn deploy(strategy: Value, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": "du", "generation": 1, "resourceVersion": "1"},
        "spec": {"replicas": 4, "strategy": strategy, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

fn rs_of(d: &Value, replicas: i64, revision: i64) -> Value {
    let hash = util::hash(&d["spec"]["template"], 0);
    json!({"metadata": {"name": format!("web-{hash}"), "namespace": "ns", "uid": format!("rs-{hash}"),
        "annotations": {deployment::REVISION: revision.to_string()}, "ownerReferences": [util::controller_ref(d)]},
        "spec": {"replicas": replicas}})
}

fn ready_pods(n: usize, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"metadata": {"name": format!("{prefix}-{i}"), "namespace": "ns", "uid": format!("{prefix}{i}")},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
        .collect()
}

fn rs_replicas(a: &[Action], name: &str) -> Option<i64> {
    a.iter().find_map(|x| match x {
        Action::Update {
            kind: Kind::ReplicaSet,
            name: n,
            obj,
            ..
        } if n == name => obj["spec"]["replicas"].as_i64(),
        Action::Create {
            kind: Kind::ReplicaSet,
            obj,
            ..
        } if util::name(obj) == name => obj["spec"]["replicas"].as_i64(),
        _ => None,
    })
}

#[test]
fn rolling_update_surges_then_scales_old_down() {
    let now = Time(1_800_000_000);
    let old_d = deploy(json!({"type": "RollingUpdate"}), "v1");
    let new_d = deploy(json!({"type": "RollingUpdate"}), "v2");
    let a = deployment::reconcile(&old_d, &[], &[], now);
    let old_name = util::name(&rs_of(&old_d, 0, 1)).to_string();
    assert_eq!(rs_replicas(&a, &old_name), Some(4));
    let old_rs = rs_of(&old_d, 4, 1);
    let old_pods = ready_pods(4, "old");
    let op: Vec<&Value> = old_pods.iter().collect();
    // maxSurge 25% of 4 = 1: the new ReplicaSet starts with 1.
    let a = deployment::reconcile(&new_d, &[&old_rs], std::slice::from_ref(&op), now);
    let new_name = util::name(&rs_of(&new_d, 0, 2)).to_string();
    assert_eq!(rs_replicas(&a, &new_name), Some(1));
    let Some(Action::Create { obj, .. }) = a.iter().find(|x| matches!(x, Action::Create { .. }))
    else {
        panic!()
    };
    assert_eq!(obj["metadata"]["annotations"][deployment::REVISION], "2");
    assert!(obj["spec"]["selector"]["matchLabels"][deployment::HASH_LABEL].is_string());
    // New at 1 (unready): old goes down by maxUnavailable (1).
    let new_rs = rs_of(&new_d, 1, 2);
    let a = deployment::reconcile(&new_d, &[&old_rs, &new_rs], &[op.clone(), vec![]], now);
    assert_eq!(rs_replicas(&a, &old_name), Some(3));
}

#[test]
fn recreate_waits_for_old_pods() {
    let now = Time(1_800_000_000);
    let old_d = deploy(json!({"type": "Recreate"}), "v1");
    let new_d = deploy(json!({"type": "Recreate"}), "v2");
    let old_name = util::name(&rs_of(&old_d, 0, 1)).to_string();
    let new_name = util::name(&rs_of(&new_d, 0, 2)).to_string();
    let old_pods = ready_pods(4, "old");
    let op: Vec<&Value> = old_pods.iter().collect();
    let a = deployment::reconcile(
        &new_d,
        &[&rs_of(&old_d, 4, 1)],
        std::slice::from_ref(&op),
        now,
    );
    assert_eq!(rs_replicas(&a, &old_name), Some(0));
    assert_eq!(rs_replicas(&a, &new_name), Some(0));
    let a = deployment::reconcile(&new_d, &[&rs_of(&old_d, 0, 1)], &[op], now);
    assert_eq!(rs_replicas(&a, &new_name), Some(0), "old pods still there");
    let a = deployment::reconcile(&new_d, &[&rs_of(&old_d, 0, 1)], &[vec![]], now);
    assert_eq!(rs_replicas(&a, &new_name), Some(4));
}

#[test]
fn pvc_binding_and_namespace_defaults() {
    let pvc = json!({"metadata": {"name": "data-db-0", "namespace": "ns", "uid": "pu", "resourceVersion": "2"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Pending"}});
    let a = pvc::bind(&pvc, None);
    assert_eq!(creates(&a, Kind::Pv), ["pvc-pu"]);
    assert!(a.iter().any(|x| matches!(x, Action::Status { status, .. }
        if status == &json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"}}))));
    let snap = Snapshot::of([(
        Kind::Namespace,
        json!({"metadata": {"name": "ns"}, "status": {"phase": "Active"}}),
    )]);
    assert_eq!(
        creates(
            &namespace::decide_serviceaccounts(&snap, Time(0)),
            Kind::ServiceAccount
        ),
        ["default"]
    );
    assert_eq!(
        creates(&namespace::decide_root_ca(&snap, "PEM"), Kind::ConfigMap),
        [namespace::CA_CONFIGMAP]
    );
}

#[test]
fn finished_jobs_expire_and_suspended_jobs_stop() {
    let now = Time(1_800_000_000);
    let mut j = job_obj(1, 1, 6);
    j["spec"]["ttlSecondsAfterFinished"] = json!(60);
    j["status"] = json!({"completionTime": Time(now.0 - 61).rfc3339(), "succeeded": 1, "ready": 0,
        "conditions": [{"type": "Complete", "status": "True"}]});
    assert_eq!(
        job::reconcile(&j, &[], now),
        [super::util::delete(
            Kind::Job,
            &j,
            crate::kube::store::Propagation::Background
        )]
    );
    j["status"]["completionTime"] = json!(Time(now.0 - 59).rfc3339());
    assert!(job::reconcile(&j, &[], now).is_empty());
    let mut j = job_obj(1, 1, 6);
    j["spec"]["suspend"] = json!(true);
    let r = job_pod(0, "Running");
    let a = job::reconcile(&j, &[&r], now);
    assert_eq!(deletes(&a, Kind::Pod), ["j-0"]);
    assert!(a.iter().all(|x| !matches!(x, Action::Create { .. })));
}
