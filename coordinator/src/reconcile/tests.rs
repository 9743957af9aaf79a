//! The reconcile loop against the in-memory API: what it writes, and above
//! all what it does not write.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pgherd_shared::crd::Postgresql;
use serde_json::json;

use super::*;
use crate::builders::PasswordSource;
use crate::config::DeletionPolicy;
use crate::fake::{FakeApi, Write};

/// Deterministic passwords so tests can tell secrets apart (`pw1`, `pw2`, …); shared by the reconcile tests.
pub(super) struct Counter(pub(super) u32);
impl PasswordSource for Counter {
    fn password(&mut self) -> String {
        self.0 += 1;
        format!("pw{}", self.0)
    }
}

fn manifest() -> Postgresql {
    let mut pg: Postgresql = serde_yaml_ng::from_str(
        r#"
apiVersion: acid.zalan.do/v1
kind: postgresql
metadata:
  name: acid-minimal-cluster
  namespace: db
  uid: 3f2a1b8e-0000-4000-8000-000000000001
  generation: 1
spec:
  teamId: acid
  volume: {size: 1Gi}
  numberOfInstances: 2
  users:
    zalando: [superuser, createdb]
    foo_user: []
  databases: {foo: zalando}
  postgresql: {version: "17"}
  resources:
    requests: {cpu: 100m, memory: 100Mi}
    limits: {cpu: "1", memory: 500Mi}
"#,
    )
    .unwrap();
    pg.metadata.generation = Some(1);
    pg
}

fn context(cfg: OperatorConfig) -> Context<FakeApi> {
    let mut ctx = Context::new(FakeApi::default(), cfg, Box::new(Counter(0)));
    ctx.clock = Box::new(|| "2026-08-01T10:00:00Z".parse::<Timestamp>().unwrap());
    ctx.postgres = std::sync::Arc::new(crate::fake_postgres::FakePostgres::default());
    ctx
}

/// Reconciles the stored version, as the controller would after a watch event.
async fn resync(ctx: &Context<FakeApi>, pg: &Postgresql) -> Result<Done, ReconcileError> {
    let current = ctx.api.postgresql(pg);
    reconcile(&current, ctx).await
}

fn kinds(ctx: &Context<FakeApi>) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for k in ctx.api.keys() {
        *m.entry(k.kind.name()).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn create_makes_all_objects_then_ten_resyncs_write_nothing() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::Synced);

    assert_eq!(
        kinds(&ctx),
        BTreeMap::from([
            ("PodDisruptionBudget", 2),
            ("RoleBinding", 1),
            ("Secret", 4),
            ("Service", 2),
            ("ServiceAccount", 1),
            ("StatefulSet", 1),
        ])
    );
    let stored = ctx.api.postgresql(&pg);
    assert_eq!(
        stored.metadata.finalizers.as_deref(),
        Some(&[finalizer::FINALIZER.to_string()][..])
    );
    let st = stored.status.unwrap();
    assert_eq!(st.cluster_status, "Running");
    assert_eq!(st.observed_generation, Some(1));
    assert!(ctx.api.events().iter().any(|e| e
        .note
        .contains("created StatefulSet db/acid-minimal-cluster")));

    ctx.api.reset_counters();
    for _ in 0..10 {
        assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::Synced);
    }
    assert_eq!(
        ctx.api.writes(),
        vec![],
        "an unchanged cluster must cost zero writes"
    );
    assert_eq!(ctx.api.events(), vec![]);
}

#[tokio::test]
async fn server_defaults_and_foreign_annotations_cause_no_write() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    let sts = ObjectKey {
        kind: Kind::StatefulSet,
        namespace: "db".into(),
        name: "acid-minimal-cluster".into(),
    };
    let svc = ObjectKey {
        kind: Kind::Service,
        namespace: "db".into(),
        name: "acid-minimal-cluster".into(),
    };
    // What the API server, a webhook and a cloud controller would add.
    ctx.api.edit(&sts, |o| {
        let c = &mut o["spec"]["template"]["spec"]["containers"][0];
        c["terminationMessagePath"] = json!("/dev/termination-log");
        c["resources"]["limits"]["cpu"] = json!("1000m");
        o["spec"]["revisionHistoryLimit"] = json!(10);
        o["metadata"]["annotations"]["webhook.example.com/injected"] = json!("yes");
        o["spec"]["template"]["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "x"});
        o["status"] = json!({"replicas": 2, "readyReplicas": 2});
        // Empty values are not stored, nor fields of a disabled feature gate.
        o["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("tolerations");
        o["spec"]
            .as_object_mut()
            .unwrap()
            .remove("persistentVolumeClaimRetentionPolicy");
        o["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] =
            json!("104857600");
    });
    ctx.api.edit(&svc, |o| {
        o["metadata"]["annotations"]["cloud.google.com/neg"] = json!("{\"ingress\":true}");
        o["spec"]["clusterIP"] = json!("10.0.0.12");
    });
    ctx.api.reset_counters();
    for _ in 0..10 {
        resync(&ctx, &pg).await.unwrap();
    }
    // Readiness changed, so the status is written exactly once; nothing else.
    assert_eq!(
        ctx.api.writes(),
        vec![Write::Status("acid-minimal-cluster".into())]
    );
    let status = ctx.api.postgresql(&pg).status.unwrap();
    assert_eq!(status.condition(status::READY).unwrap().status, "True");
    assert_eq!(
        ctx.api.object(&svc).unwrap()["metadata"]["annotations"]["cloud.google.com/neg"],
        json!("{\"ingress\":true}")
    );
}

fn statefulset_key() -> ObjectKey {
    ObjectKey {
        kind: Kind::StatefulSet,
        namespace: "db".into(),
        name: "acid-minimal-cluster".into(),
    }
}

#[tokio::test]
async fn a_foreign_change_to_an_owned_field_is_reverted_once() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    let sts = statefulset_key();
    // `kubectl edit` / `kubectl scale`: the hash annotation is left alone.
    ctx.api.edit(&sts, |o| {
        o["spec"]["replicas"] = json!(0);
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("someone/else:1");
    });
    ctx.api.reset_counters();
    for _ in 0..10 {
        resync(&ctx, &pg).await.unwrap();
    }
    assert_eq!(ctx.api.writes(), vec![Write::Apply(sts.clone())]);
    let live = ctx.api.object(&sts).unwrap();
    assert_eq!(live["spec"]["replicas"], json!(2));
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        json!(OperatorConfig::default().docker_image)
    );
    let events = ctx.api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].note,
        "reverted StatefulSet db/acid-minimal-cluster: \
         .spec.replicas, .spec.template.spec.containers[postgres].image \
         had been changed outside pgherd"
    );
}

#[tokio::test]
async fn changed_resource_request_updates_only_the_statefulset() {
    let ctx = context(OperatorConfig::default());
    let mut pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    let before = ctx.api.postgresql(&pg);

    pg = before.clone();
    pg.spec
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .cpu = Some("250m".into());
    pg.metadata.generation = Some(2);
    ctx.api.put_postgresql(&pg);
    ctx.api.reset_counters();
    resync(&ctx, &pg).await.unwrap();

    let writes = ctx.api.writes();
    let applies: Vec<&Write> = writes
        .iter()
        .filter(|w| matches!(w, Write::Apply(_)))
        .collect();
    assert_eq!(
        applies,
        vec![&Write::Apply(ObjectKey {
            kind: Kind::StatefulSet,
            namespace: "db".into(),
            name: "acid-minimal-cluster".into(),
        })]
    );
    // Plus the status write for the new observedGeneration, nothing else.
    assert_eq!(writes.len(), 2, "{writes:?}");
    let events = ctx.api.events();
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .note
            .contains("containers[postgres].resources.requests.cpu"),
        "{}",
        events[0].note
    );
    // Passwords of existing secrets are untouched.
    let secret = ctx
        .api
        .object(&ObjectKey {
            kind: Kind::Secret,
            namespace: "db".into(),
            name: "postgres.acid-minimal-cluster.credentials.postgresql.acid.zalan.do".into(),
        })
        .unwrap();
    assert_eq!(secret["data"]["username"], json!("cG9zdGdyZXM="));
}

#[tokio::test]
async fn an_existing_secret_is_never_overwritten() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    let name = "postgres.acid-minimal-cluster.credentials.postgresql.acid.zalan.do";
    ctx.api.put(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "db"},
        "data": {"username": "cG9zdGdyZXM=", "password": "dXNlci1jaG9zZW4="}
    }));
    resync(&ctx, &pg).await.unwrap();
    let key = ObjectKey {
        kind: Kind::Secret,
        namespace: "db".into(),
        name: name.into(),
    };
    assert_eq!(
        ctx.api.object(&key).unwrap()["data"]["password"],
        json!("dXNlci1jaG9zZW4=")
    );
    assert!(!ctx.api.writes().contains(&Write::Create(key.clone())));
    assert!(!ctx.api.writes().contains(&Write::Apply(key)));
}

fn seed_runtime_objects(ctx: &Context<FakeApi>) {
    let labels = json!({"application": "spilo", "cluster-name": "acid-minimal-cluster"});
    for (kind, name) in [
        ("Pod", "acid-minimal-cluster-0"),
        ("Pod", "acid-minimal-cluster-1"),
        ("PersistentVolumeClaim", "pgdata-acid-minimal-cluster-0"),
        ("PersistentVolumeClaim", "pgdata-acid-minimal-cluster-1"),
        ("ConfigMap", "acid-minimal-cluster-leader"),
        ("ConfigMap", "acid-minimal-cluster-config"),
    ] {
        ctx.api.put(
            json!({"kind": kind, "metadata": {"name": name, "namespace": "db", "labels": labels}}),
        );
    }
    // Another cluster's object in the same namespace must survive.
    ctx.api.put(json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "pgdata-other-0", "namespace": "db",
        "labels": {"application": "spilo", "cluster-name": "other"}}}));
}

/// Creates the cluster, lets `before` change the world, deletes the
/// postgresql and reconciles once; returns `kind/name` of what is left.
async fn delete_under(
    cfg: OperatorConfig,
    before: impl FnOnce(&Context<FakeApi>),
) -> (Context<FakeApi>, Vec<String>) {
    let ctx = context(cfg);
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    seed_runtime_objects(&ctx);
    before(&ctx);
    let mut deleting = ctx.api.postgresql(&pg);
    deleting.metadata.deletion_timestamp = Some(Time("2026-08-01T09:59:00Z".parse().unwrap()));
    ctx.api.put_postgresql(&deleting);
    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::Deleted);
    let left = ctx
        .api
        .keys()
        .iter()
        .map(|k| format!("{}/{}", k.kind.name(), k.name))
        .collect();
    (ctx, left)
}

/// A pod in its grace period keeps the finalizer: Patroni in it can still recreate its objects, which
/// the next pass deletes; the finalizer goes once no pod is left.
#[tokio::test]
async fn deletion_waits_for_the_pods_and_deletes_what_patroni_recreated() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    let mut deleting = ctx.api.postgresql(&pg);
    deleting.metadata.deletion_timestamp = Some(Time("2026-08-01T09:59:00Z".parse().unwrap()));
    ctx.api.put_postgresql(&deleting);
    let labels = json!({"application": "spilo", "cluster-name": "acid-minimal-cluster"});
    let stopping = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "acid-minimal-cluster-0", "namespace": "db", "labels": labels,
                     "deletionTimestamp": "2026-08-01T09:59:30Z"}});
    ctx.api.put(stopping.clone());
    assert_eq!(
        resync(&ctx, &pg).await.unwrap(),
        Done::InProgress(DELETION_WAIT)
    );
    assert!(
        ctx.api
            .postgresql(&pg)
            .metadata
            .finalizers
            .is_some_and(|f| !f.is_empty()),
        "the finalizer stays while a pod is stopping"
    );
    // Patroni, still running, writes its leader ConfigMap again.
    let leader = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "acid-minimal-cluster-leader", "namespace": "db", "labels": labels}});
    ctx.api.put(leader.clone());
    ctx.api.reset_counters();
    assert_eq!(
        resync(&ctx, &pg).await.unwrap(),
        Done::InProgress(DELETION_WAIT)
    );
    let leader_key = ObjectKey::of(&leader).unwrap();
    assert!(ctx.api.object(&leader_key).is_none(), "deleted again");
    assert!(
        !ctx.api
            .writes()
            .iter()
            .any(|w| format!("{w:?}").contains("Pod")),
        "a stopping pod is not deleted again: {:?}",
        ctx.api.writes()
    );
    ctx.api
        .delete(
            &ObjectKey::of(&stopping).unwrap(),
            crate::kube_api::Propagation::Background,
        )
        .await
        .unwrap();
    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::Deleted);
}

async fn delete_with(policy: DeletionPolicy) -> (Context<FakeApi>, Vec<String>) {
    let cfg = OperatorConfig {
        deletion_policy: policy,
        ..Default::default()
    };
    delete_under(cfg, |_| {}).await
}

/// What `Retain` leaves: the namespace's pod ServiceAccount and RoleBinding,
/// the credentials and the volumes (and another cluster's volume).
const RETAINED: [&str; 9] = [
    "ServiceAccount/postgres-pod",
    "RoleBinding/postgres-pod",
    "Secret/foo-user.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
    "Secret/postgres.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
    "Secret/standby.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
    "Secret/zalando.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
    "PersistentVolumeClaim/pgdata-acid-minimal-cluster-0",
    "PersistentVolumeClaim/pgdata-acid-minimal-cluster-1",
    "PersistentVolumeClaim/pgdata-other-0",
];

#[tokio::test]
async fn deletion_with_retain_keeps_volumes_and_secrets() {
    let (_, left) = delete_with(DeletionPolicy::Retain).await;
    assert_eq!(left, RETAINED);
}

/// Owner references must not undo `Retain`: the postgresql's (with
/// `enable_owner_references`) and the StatefulSet's on its PVCs (which the
/// StatefulSet controller adds with `when_deleted: delete`).
#[tokio::test]
async fn retain_survives_owner_references_and_pvc_retention_delete() {
    use pgherd_shared::crd::operator_configuration::{
        KubernetesConfiguration, OperatorConfigurationData,
    };
    let data = OperatorConfigurationData {
        kubernetes: Some(KubernetesConfiguration {
            enable_owner_references: Some(true),
            persistent_volume_claim_retention_policy: Some(BTreeMap::from([(
                "when_deleted".to_string(),
                "delete".to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cfg =
        OperatorConfig::from_data(&data, crate::config::Source::OperatorConfiguration).unwrap();
    assert!(cfg.enable_owner_references);
    let (ctx, left) = delete_under(cfg, |ctx| {
        let sts_uid = ctx.api.object(&statefulset_key()).unwrap()["metadata"]["uid"].clone();
        for i in 0..2 {
            let key = ObjectKey {
                kind: Kind::PersistentVolumeClaim,
                namespace: "db".into(),
                name: format!("pgdata-acid-minimal-cluster-{i}"),
            };
            ctx.api.edit(&key, |o| {
                o["metadata"]["ownerReferences"] =
                    json!([{"apiVersion": "apps/v1", "kind": "StatefulSet",
                            "name": "acid-minimal-cluster", "uid": sts_uid}]);
            });
        }
    })
    .await;
    assert!(ctx.api.writes().contains(&Write::Delete(
        statefulset_key(),
        crate::kube_api::Propagation::Orphan
    )));
    assert_eq!(left, RETAINED);
}

#[tokio::test]
async fn deletion_with_delete_leaves_nothing_labelled() {
    let (ctx, left) = delete_with(DeletionPolicy::Delete).await;
    assert_eq!(
        left,
        [
            "ServiceAccount/postgres-pod",
            "RoleBinding/postgres-pod",
            "PersistentVolumeClaim/pgdata-other-0",
        ]
    );
    let pg = manifest();
    // The finalizer is gone, so the object is gone.
    assert!(ctx
        .api
        .postgresql(&pg)
        .metadata
        .deletion_timestamp
        .is_none());
}

#[tokio::test]
async fn delete_protection_blocks_until_annotated() {
    let ctx = context(OperatorConfig {
        delete_annotation_date_key: "delete-date".into(),
        delete_annotation_name_key: "delete-clustername".into(),
        deletion_policy: DeletionPolicy::Delete,
        ..Default::default()
    });
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    let objects_before = ctx.api.keys();
    let mut deleting = ctx.api.postgresql(&pg);
    deleting.metadata.deletion_timestamp = Some(Time("2026-08-01T09:59:00Z".parse().unwrap()));
    ctx.api.put_postgresql(&deleting);
    ctx.api.reset_counters();

    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::DeletionBlocked);
    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::DeletionBlocked);
    assert_eq!(ctx.api.keys(), objects_before, "nothing may be deleted");
    assert_eq!(ctx.api.events().len(), 1, "the warning is emitted once");
    assert!(ctx.api.events()[0]
        .note
        .contains("delete-date: \"2026-08-01\""));

    let mut annotated = ctx.api.postgresql(&pg);
    annotated.metadata.annotations = Some(BTreeMap::from([
        ("delete-date".to_string(), "2026-08-01".to_string()),
        (
            "delete-clustername".to_string(),
            "acid-minimal-cluster".to_string(),
        ),
    ]));
    ctx.api.put_postgresql(&annotated);
    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::Deleted);
    assert_eq!(
        ctx.api.keys().len(),
        2,
        "only the namespace's SA and RoleBinding remain"
    );
}

#[tokio::test]
async fn invalid_manifest_touches_nothing_and_names_the_field() {
    let ctx = context(OperatorConfig::default());
    let mut pg = manifest();
    pg.spec.number_of_instances = -1;
    ctx.api.put_postgresql(&pg);
    assert_eq!(resync(&ctx, &pg).await.unwrap(), Done::Invalid);
    assert!(ctx.api.keys().is_empty());
    let st = ctx.api.postgresql(&pg).status.unwrap();
    assert_eq!(st.cluster_status, "Invalid");
    assert!(st
        .condition(status::RECONCILE_ERROR)
        .unwrap()
        .message
        .contains("spec.numberOfInstances"));
    ctx.api.reset_counters();
    resync(&ctx, &pg).await.unwrap();
    assert_eq!(
        ctx.api.writes(),
        vec![],
        "an unchanged invalid manifest is reported once"
    );
}

#[tokio::test]
async fn api_failure_is_reported_and_clears_itself() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    ctx.api.fail_apply_of(Some(Kind::StatefulSet));
    assert!(resync(&ctx, &pg).await.is_err());
    let st = ctx.api.postgresql(&pg).status.unwrap();
    assert_eq!(st.cluster_status, "CreateFailed");
    assert_eq!(
        st.condition(status::RECONCILE_ERROR).unwrap().status,
        "True"
    );
    ctx.api.fail_apply_of(None);
    resync(&ctx, &pg).await.unwrap();
    let st = ctx.api.postgresql(&pg).status.unwrap();
    assert_eq!(st.cluster_status, "Running");
    assert_eq!(
        st.condition(status::RECONCILE_ERROR).unwrap().status,
        "False"
    );
}

#[tokio::test]
async fn configuration_change_applies_without_restart() {
    let ctx = context(OperatorConfig::default());
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    resync(&ctx, &pg).await.unwrap();
    ctx.api.reset_counters();
    ctx.set_config(OperatorConfig {
        docker_image: "registry.example.com/spilo:new".into(),
        ..Default::default()
    });
    resync(&ctx, &pg).await.unwrap();
    let sts = ctx
        .api
        .object(&ObjectKey {
            kind: Kind::StatefulSet,
            namespace: "db".into(),
            name: "acid-minimal-cluster".into(),
        })
        .unwrap();
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("registry.example.com/spilo:new")
    );
    assert_eq!(ctx.api.writes().len(), 1);
}
