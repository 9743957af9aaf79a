//! Rolling updates and Patroni configuration sync through the whole
//! reconcile, against the in-memory API and Patroni. A small model of the
//! StatefulSet controller and of Patroni (`settle`) reacts to each pass the
//! way the real ones would: a deleted pod comes back from the current
//! template and rejoins as a streaming replica, Patroni labels pods by role.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use jiff::Timestamp;
use pgherd_shared::crd::Postgresql;
use pgherd_shared::patroni::Member;
use serde_json::{json, Value};

use super::tests::Counter;
use super::*;
use crate::fake::{FakeApi, Write};
use crate::fake_patroni::{FakePatroni, PatroniCall};
use crate::fake_postgres::FakePostgres;
use crate::kube_api::Propagation;
use crate::rolling::plan::FLAG_ANNOTATION;

const NAME: &str = "acid-minimal-cluster";
const T0: i64 = 1_785_578_400; // 2026-08-01T10:00:00Z, a Saturday

fn manifest(instances: i32) -> Postgresql {
    let mut pg: Postgresql = serde_yaml_ng::from_str(&format!(
        r#"
apiVersion: acid.zalan.do/v1
kind: postgresql
metadata:
  name: {NAME}
  namespace: db
  uid: 3f2a1b8e-0000-4000-8000-000000000001
spec:
  teamId: acid
  volume: {{size: 1Gi}}
  numberOfInstances: {instances}
  postgresql: {{version: "17"}}
  dockerImage: spilo:1
"#
    ))
    .unwrap();
    pg.metadata.generation = Some(1);
    pg
}

fn pod_name(i: usize) -> String {
    format!("{NAME}-{i}")
}

struct Harness {
    ctx: Context<FakeApi>,
    patroni: Arc<FakePatroni>,
    now: Arc<AtomicI64>,
    instances: usize,
    /// Pods that come back broken (not ready, not a member) when recreated.
    broken: Vec<String>,
}

/// Patroni's dynamic configuration after bootstrap from the manifest.
fn bootstrapped_config() -> Value {
    json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
        "maximum_lag_on_failover": 33554432,
        "postgresql": {"parameters": {"max_connections": 100}, "use_pg_rewind": true}})
}

impl Harness {
    async fn new(instances: usize) -> (Harness, Postgresql) {
        let names: Vec<String> = (0..instances).map(pod_name).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let patroni = Arc::new(FakePatroni::healthy(&refs, &names[0]));
        patroni.set_config(bootstrapped_config());
        let now = Arc::new(AtomicI64::new(T0));
        let mut ctx = Context::new(
            FakeApi::default(),
            OperatorConfig::default(),
            Box::new(Counter(0)),
        );
        let clock = now.clone();
        ctx.clock = Box::new(move || Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap());
        ctx.patroni = patroni.clone();
        ctx.postgres = Arc::new(FakePostgres::default());
        let h = Harness {
            ctx,
            patroni,
            now,
            instances,
            broken: vec![],
        };
        let pg = manifest(instances as i32);
        h.ctx.api.put_postgresql(&pg);
        // Created: the pods start and form the cluster FakePatroni describes.
        reconcile(&pg, &h.ctx).await.unwrap();
        h.settle(false);
        h.pass(&pg).await;
        h.ctx.api.reset_counters();
        h.patroni.reset_calls();
        (h, pg)
    }

    fn statefulset(&self) -> Value {
        self.ctx
            .api
            .object(&ObjectKey {
                kind: Kind::StatefulSet,
                namespace: "db".into(),
                name: NAME.into(),
            })
            .expect("statefulset")
    }

    fn pod_key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::Pod,
            namespace: "db".into(),
            name: name.into(),
        }
    }

    /// The StatefulSet controller (missing pods come back from the current
    /// template), Patroni (members rejoin; it labels pods by role) and the
    /// kubelet (readiness). `rejoin`: a recreated pod's member rejoins (off
    /// while the cluster is first created with the members it was given).
    fn settle(&self, rejoin: bool) {
        let template = self.statefulset()["spec"]["template"].clone();
        let now = Timestamp::from_second(self.now.load(Ordering::SeqCst)).unwrap();
        for i in 0..self.instances {
            let name = pod_name(i);
            if self.ctx.api.object(&Self::pod_key(&name)).is_some() {
                continue;
            }
            let broken = self.broken.contains(&name);
            let mut pod = template.clone();
            pod["kind"] = json!("Pod");
            pod["metadata"]["name"] = json!(name);
            pod["metadata"]["namespace"] = json!("db");
            pod["metadata"]["creationTimestamp"] = json!(now.to_string());
            pod["status"] = json!({"podIP": format!("10.0.0.{i}"),
                "conditions": [{"type": "Ready", "status": if broken { "False" } else { "True" }}]});
            self.ctx.api.put(pod);
            if !rejoin {
                continue;
            }
            self.patroni.edit(|c| {
                let was_leader = c.members.iter().any(|m| m.name == name && m.is_leader());
                c.members.retain(|m| m.name != name);
                if broken {
                    return;
                }
                let alone = c.members.is_empty();
                c.members.push(Member {
                    name: name.clone(),
                    role: if was_leader && alone {
                        "leader"
                    } else {
                        "replica"
                    }
                    .into(),
                    state: if was_leader && alone {
                        "running"
                    } else {
                        "streaming"
                    }
                    .into(),
                    api_url: None,
                    host: None,
                    port: None,
                    timeline: Some(1),
                    lag: (!(was_leader && alone)).then(|| 0.into()),
                    pending_restart: None,
                    tags: Default::default(),
                });
                c.members.sort_by(|a, b| a.name.cmp(&b.name));
            });
        }
        let members = self.patroni.cluster_now().map(|c| c.members);
        for m in members.iter().flatten() {
            let role = if m.is_leader() { "master" } else { "replica" };
            self.ctx.api.edit(&Self::pod_key(&m.name), |p| {
                p["metadata"]["labels"]["spilo-role"] = json!(role);
            });
        }
    }

    /// One reconcile, 5 s after the previous one (the in-progress requeue).
    async fn pass(&self, pg: &Postgresql) -> Done {
        self.now.fetch_add(5, Ordering::SeqCst);
        let current = self.ctx.api.postgresql(pg);
        let done = reconcile(&current, &self.ctx).await.unwrap();
        self.settle(true);
        done
    }

    /// Passes until the reconcile says the cluster is synced; the pod
    /// writes and Patroni calls of each pass, in order.
    async fn run(&self, pg: &Postgresql) -> Vec<String> {
        let mut log = vec![];
        for _ in 0..30 {
            let (w0, c0) = (self.ctx.api.writes().len(), self.patroni.calls().len());
            let done = self.pass(pg).await;
            log.extend(self.ctx.api.writes()[w0..].iter().filter_map(short_write));
            log.extend(self.patroni.calls()[c0..].iter().map(short_call));
            if done == Done::Synced {
                return log;
            }
        }
        panic!("no end after 30 passes: {log:?}");
    }

    /// What Patroni reports once it has applied a restart-only change: every member pending a restart.
    fn all_pending_restart(&self) {
        self.patroni.edit(|c| {
            for m in &mut c.members {
                m.pending_restart = Some(true);
            }
        });
    }

    fn set_manifest(&self, pg: &Postgresql, edit: impl FnOnce(&mut Postgresql)) -> Postgresql {
        let mut next = self.ctx.api.postgresql(pg);
        edit(&mut next);
        next.metadata.generation = Some(next.metadata.generation.unwrap_or(1) + 1);
        self.ctx.api.put_postgresql(&next);
        next
    }

    fn pod(&self, name: &str) -> Value {
        self.ctx.api.object(&Self::pod_key(name)).unwrap()
    }
}

fn short_write(w: &Write) -> Option<String> {
    match w {
        Write::Patch(k, body) if k.kind == Kind::Pod => {
            assert_eq!(
                body,
                &json!({"metadata": {"annotations": {FLAG_ANNOTATION: "true"}}})
            );
            Some(format!("flag {}", k.name))
        }
        Write::Delete(k, _) if k.kind == Kind::Pod => Some(format!("delete {}", k.name)),
        _ => None,
    }
}

fn short_call(c: &PatroniCall) -> String {
    match c {
        PatroniCall::PatchConfig(body) => format!("patch {body}"),
        PatroniCall::Restart(pod) => format!("restart {pod}"),
        PatroniCall::Switchover { leader, candidate } => {
            format!("switchover {leader} -> {candidate}")
        }
    }
}

fn notes(ctx: &Context<FakeApi>) -> Vec<String> {
    ctx.api
        .events()
        .iter()
        .map(|e| format!("{:?} {}: {}", e.type_, e.reason, e.note))
        .collect()
}

fn rolling_condition(h: &Harness, pg: &Postgresql) -> (String, String, String) {
    let stored = h.ctx.api.postgresql(pg);
    let c = stored
        .status
        .unwrap()
        .condition(status::ROLLING_UPDATE)
        .unwrap()
        .clone();
    (c.status, c.reason, c.message)
}

#[tokio::test]
async fn a_settled_cluster_costs_no_write_no_event_and_no_patroni_call() {
    let (h, pg) = Harness::new(3).await;
    for _ in 0..10 {
        assert_eq!(h.pass(&pg).await, Done::Synced);
    }
    assert_eq!(h.ctx.api.writes(), vec![]);
    assert_eq!(h.ctx.api.events(), vec![]);
    assert_eq!(h.patroni.calls(), vec![]);
    let (status, reason, _) = rolling_condition(&h, &pg);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "UpToDate"));
}

#[tokio::test]
async fn an_image_change_replaces_replicas_one_at_a_time_then_switches_over() {
    let (h, pg) = Harness::new(3).await;
    let pg = h.set_manifest(&pg, |p| p.spec.docker_image = Some("spilo:2".into()));
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            "flag acid-minimal-cluster-0",
            "flag acid-minimal-cluster-1",
            "flag acid-minimal-cluster-2",
            "delete acid-minimal-cluster-1",
            "delete acid-minimal-cluster-2",
            "switchover acid-minimal-cluster-0 -> acid-minimal-cluster-1",
            "delete acid-minimal-cluster-0",
        ]
    );
    for i in 0..3 {
        let pod = h.pod(&pod_name(i));
        assert_eq!(pod["spec"]["containers"][0]["image"], json!("spilo:2"));
        assert!(pod["metadata"]["annotations"]
            .get(FLAG_ANNOTATION)
            .is_none());
    }
    let events = notes(&h.ctx);
    let updates: Vec<&String> = events
        .iter()
        .filter(|e| e.contains("Performing rolling update"))
        .collect();
    assert_eq!(
        updates,
        [
            "Normal Update: Performing rolling update: pod acid-minimal-cluster-1 (step 1 of 3, image spilo:1 -> spilo:2)",
            "Normal Update: Performing rolling update: pod acid-minimal-cluster-2 (step 2 of 3, image spilo:1 -> spilo:2)",
            "Normal Update: Performing rolling update: pod acid-minimal-cluster-0 (step 3 of 3, image spilo:1 -> spilo:2)",
        ]
    );
    assert!(events.iter().any(|e| e
        == "Normal Switchover: Switched over from acid-minimal-cluster-0 to acid-minimal-cluster-1 for the rolling update"));
    assert!(
        events.last().unwrap().contains("Rolling update done"),
        "{events:?}"
    );

    // And then nothing.
    h.ctx.api.reset_counters();
    h.patroni.reset_calls();
    for _ in 0..5 {
        assert_eq!(h.pass(&pg).await, Done::Synced);
    }
    assert_eq!(h.ctx.api.writes(), vec![]);
    assert_eq!(h.patroni.calls(), vec![]);
}

#[tokio::test]
async fn a_restart_only_parameter_is_patched_and_restarted_without_replacing_pods() {
    let (h, pg) = Harness::new(3).await;
    let pg = h.set_manifest(&pg, |p| {
        p.spec.postgresql.parameters =
            Some(BTreeMap::from([("max_connections".into(), "200".into())]))
    });
    let done = h.pass(&pg).await;
    assert_eq!(done, Done::InProgress(std::time::Duration::from_secs(15)));
    // A watch event can start the next pass at once: before Patroni has
    // applied the change, no missing pending_restart may end the update.
    let current = h.ctx.api.postgresql(&pg);
    assert!(matches!(
        reconcile(&current, &h.ctx).await.unwrap(),
        Done::InProgress(_)
    ));
    // Patroni applies the change on its next loop and asks for restarts.
    h.all_pending_restart();
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            "restart acid-minimal-cluster-1",
            "restart acid-minimal-cluster-2",
            "restart acid-minimal-cluster-0",
        ]
    );
    assert_eq!(
        h.patroni.calls()[0],
        PatroniCall::PatchConfig(json!({
            "postgresql": {"parameters": {"max_connections": "200"}},
            "pgherd": {"restart_order": "replicas_first",
                "settle_until": "2026-08-01T10:00:25Z"}
        }))
    );
    let deletes = h
        .ctx
        .api
        .writes()
        .into_iter()
        .filter(|w| matches!(w, Write::Delete(..) | Write::Patch(..)))
        .count();
    assert_eq!(deletes, 0, "no pod is flagged or replaced");
}

#[tokio::test]
async fn a_decreased_max_connections_restarts_the_primary_first() {
    let (h, pg) = Harness::new(3).await;
    let pg = h.set_manifest(&pg, |p| {
        p.spec.postgresql.parameters =
            Some(BTreeMap::from([("max_connections".into(), "50".into())]))
    });
    h.pass(&pg).await;
    h.all_pending_restart();
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            "restart acid-minimal-cluster-0",
            "restart acid-minimal-cluster-1",
            "restart acid-minimal-cluster-2",
        ]
    );
    assert!(notes(&h.ctx).iter().any(|e| e.contains(
        "Restarting primary acid-minimal-cluster-0 for changed parameters (primary first: a setting was lowered)"
    )));
}

#[tokio::test]
async fn a_reload_only_parameter_restarts_nothing() {
    let (h, pg) = Harness::new(3).await;
    let pg = h.set_manifest(&pg, |p| {
        p.spec.postgresql.parameters = Some(BTreeMap::from([("work_mem".into(), "8MB".into())]))
    });
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            r#"patch {"pgherd":{"restart_order":"replicas_first","settle_until":"2026-08-01T10:00:25Z"},"postgresql":{"parameters":{"work_mem":"8MB"}}}"#
        ]
    );
    assert_eq!(
        h.patroni.config_now()["postgresql"]["parameters"]["work_mem"],
        json!("8MB")
    );
}

#[tokio::test]
async fn a_replica_that_does_not_come_back_blocks_before_the_primary() {
    let (mut h, pg) = Harness::new(3).await;
    h.broken = vec![pod_name(1)];
    let pg = h.set_manifest(&pg, |p| p.spec.docker_image = Some("spilo:bad".into()));
    h.pass(&pg).await; // flag
    h.pass(&pg).await; // delete -1, which comes back broken
    for _ in 0..3 {
        assert!(matches!(h.pass(&pg).await, Done::InProgress(_)));
    }
    let (status, reason, message) = rolling_condition(&h, &pg);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InProgress"));
    assert_eq!(message, "pod acid-minimal-cluster-1 is not ready");

    h.now.fetch_add(601, Ordering::SeqCst);
    h.ctx.api.reset_counters();
    for _ in 0..5 {
        h.pass(&pg).await;
    }
    let (status, reason, message) = rolling_condition(&h, &pg);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Blocked"));
    assert!(message.contains("before the primary"), "{message}");
    let warnings: Vec<String> = notes(&h.ctx)
        .into_iter()
        .filter(|n| n.starts_with("Warning RollingUpdateBlocked"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one event, not one per sync: {warnings:?}"
    );
    // Neither the primary nor the other replica was touched.
    let pod_writes: Vec<Write> = h
        .ctx
        .api
        .writes()
        .into_iter()
        .filter(|w| matches!(w, Write::Delete(..) | Write::Patch(..)))
        .collect();
    assert_eq!(pod_writes, vec![]);
    assert!(!h
        .patroni
        .calls()
        .iter()
        .any(|c| matches!(c, PatroniCall::Switchover { .. })));

    // Fixed by hand (a good image on the pod): the next sync carries on.
    h.broken.clear();
    h.ctx
        .api
        .delete(&Harness::pod_key(&pod_name(1)), Propagation::Background)
        .await
        .unwrap();
    h.settle(true);
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            "delete acid-minimal-cluster-2",
            "switchover acid-minimal-cluster-0 -> acid-minimal-cluster-1",
            "delete acid-minimal-cluster-0",
        ]
    );
}

#[tokio::test]
async fn a_new_coordinator_resumes_without_deleting_a_pod_twice() {
    let (h, pg) = Harness::new(3).await;
    let pg = h.set_manifest(&pg, |p| p.spec.docker_image = Some("spilo:2".into()));
    let mut log = vec![];
    for _ in 0..2 {
        let w0 = h.ctx.api.writes().len();
        h.pass(&pg).await;
        log.extend(h.ctx.api.writes()[w0..].iter().filter_map(short_write));
    }
    assert_eq!(log.last().unwrap(), "delete acid-minimal-cluster-1");

    // A fresh process: a new context over the same stored objects.
    let mut ctx2 = Context::new(
        FakeApi::default(),
        OperatorConfig::default(),
        Box::new(Counter(100)),
    );
    ctx2.postgres = Arc::new(FakePostgres::default());
    for key in h.ctx.api.keys() {
        ctx2.api.put(h.ctx.api.object(&key).unwrap());
    }
    ctx2.api.put_postgresql(&h.ctx.api.postgresql(&pg));
    let clock = h.now.clone();
    ctx2.clock = Box::new(move || Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap());
    ctx2.patroni = h.patroni.clone();
    let h2 = Harness {
        ctx: ctx2,
        patroni: h.patroni.clone(),
        now: h.now.clone(),
        instances: 3,
        broken: vec![],
    };
    log.extend(
        h2.run(&pg)
            .await
            .into_iter()
            .filter(|l| !l.starts_with("switchover")),
    );
    assert_eq!(
        log,
        [
            "flag acid-minimal-cluster-0",
            "flag acid-minimal-cluster-1",
            "flag acid-minimal-cluster-2",
            "delete acid-minimal-cluster-1",
            "delete acid-minimal-cluster-2",
            "delete acid-minimal-cluster-0",
        ]
    );
}

#[tokio::test]
async fn a_single_member_is_replaced_with_a_downtime_warning() {
    let (h, pg) = Harness::new(1).await;
    let pg = h.set_manifest(&pg, |p| p.spec.docker_image = Some("spilo:2".into()));
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            "flag acid-minimal-cluster-0",
            "delete acid-minimal-cluster-0"
        ]
    );
    assert!(notes(&h.ctx).iter().any(|e| e.starts_with("Warning Update: Performing rolling update: pod acid-minimal-cluster-0 (step 1 of 1, image spilo:1 -> spilo:2); it is the only member")));
}

#[tokio::test]
async fn the_primary_waits_for_a_maintenance_window() {
    let (h, pg) = Harness::new(2).await;
    // T0 is Saturday 10:00 UTC.
    let pg = h.set_manifest(&pg, |p| {
        p.spec.docker_image = Some("spilo:2".into());
        p.spec.maintenance_windows = Some(vec!["Sat:23:00-01:00".into()]);
    });
    for _ in 0..4 {
        h.pass(&pg).await;
    }
    let (_, _, message) = rolling_condition(&h, &pg);
    assert_eq!(
        message,
        "primary acid-minimal-cluster-0 is replaced only inside a maintenance window"
    );
    // Sunday 00:30, inside the window that crossed midnight.
    h.now.store(T0 + 14 * 3600 + 1800, Ordering::SeqCst);
    let log = h.run(&pg).await;
    assert_eq!(
        log,
        [
            "switchover acid-minimal-cluster-0 -> acid-minimal-cluster-1",
            "delete acid-minimal-cluster-0",
        ]
    );
}

#[tokio::test]
async fn patroni_unreachable_is_not_an_error_when_nothing_is_due() {
    let (mut h, pg) = Harness::new(2).await;
    let silent = Arc::new(FakePatroni::default());
    h.ctx.patroni = silent.clone();
    h.patroni = silent;
    assert_eq!(h.pass(&pg).await, Done::Synced);
    assert_eq!(h.ctx.api.writes(), vec![]);
}
