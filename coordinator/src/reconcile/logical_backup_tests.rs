//! The logical backup duty against the in-memory API: what it writes, and that
//! an unchanged cluster costs nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pgherd_shared::crd::operator_configuration::LogicalBackupConfiguration;
use pgherd_shared::crd::Postgresql;
use serde_json::json;

use super::super::{reconcile, Context, Done};
use crate::builders::PlaceholderPasswords;
use crate::config::OperatorConfig;
use crate::fake::{FakeApi, Write};
use crate::kube_api::{Kind, ObjectKey, Propagation};

const NAME: &str = "logical-backup-acid-minimal-cluster";

fn manifest(enabled: bool) -> Postgresql {
    let mut pg: Postgresql = serde_yaml_ng::from_str(
        r#"
metadata:
  name: acid-minimal-cluster
  namespace: db
  uid: 3f2a1b8e-0000-4000-8000-000000000001
  generation: 1
spec:
  teamId: acid
  volume: {size: 1Gi}
  numberOfInstances: 1
  postgresql: {version: "17"}
  logicalBackupSchedule: "* * * * *"
"#,
    )
    .unwrap();
    pg.spec.enable_logical_backup = Some(enabled);
    pg
}

fn config(secret_key: &str) -> OperatorConfig {
    let mut cfg = OperatorConfig::default();
    cfg.raw.logical_backup = Some(LogicalBackupConfiguration {
        logical_backup_s3_bucket: Some("backups".into()),
        logical_backup_s3_access_key_id: Some("AKIDEXAMPLE".into()),
        logical_backup_s3_secret_access_key: Some(secret_key.into()),
        ..Default::default()
    });
    cfg
}

fn context(cfg: OperatorConfig) -> Context<FakeApi> {
    let mut ctx = Context::new(FakeApi::default(), cfg, Box::new(PlaceholderPasswords));
    ctx.clock = Box::new(|| "2026-08-01T10:00:00Z".parse::<Timestamp>().unwrap());
    ctx.postgres = std::sync::Arc::new(crate::fake_postgres::FakePostgres::default());
    ctx
}

/// Stores `pg` as a user's apply would and reconciles the stored version.
async fn apply_and_sync(ctx: &Context<FakeApi>, pg: &Postgresql) -> Done {
    let mut stored = ctx.api.postgresql(pg);
    stored.spec = pg.spec.clone();
    ctx.api.put_postgresql(&stored);
    reconcile(&ctx.api.postgresql(pg), ctx).await.unwrap()
}

fn key(kind: Kind) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "db".into(),
        name: NAME.into(),
    }
}

/// Writes other than the status.
fn object_writes(ctx: &Context<FakeApi>) -> Vec<Write> {
    ctx.api
        .writes()
        .into_iter()
        .filter(|w| !matches!(w, Write::Status(_)))
        .collect()
}

#[tokio::test]
async fn created_once_then_resyncs_write_nothing() {
    let ctx = context(config("secret-1"));
    let pg = manifest(true);
    apply_and_sync(&ctx, &pg).await;
    let cronjob = ctx.api.object(&key(Kind::CronJob)).expect("the CronJob");
    assert_eq!(cronjob["spec"]["schedule"], "* * * * *");
    let secret = ctx.api.object(&key(Kind::Secret)).expect("the Secret");
    assert_eq!(
        secret["data"]["AWS_SECRET_ACCESS_KEY"], "c2VjcmV0LTE=",
        "base64 of secret-1"
    );
    assert!(!cronjob.to_string().contains("secret-1"));
    let notes: Vec<String> = ctx.api.events().into_iter().map(|e| e.note).collect();
    assert!(
        notes.contains(&format!("created Secret db/{NAME}")),
        "{notes:?}"
    );
    assert!(
        notes.contains(&format!("created CronJob db/{NAME}")),
        "{notes:?}"
    );

    ctx.api.reset_counters();
    for _ in 0..5 {
        apply_and_sync(&ctx, &pg).await;
    }
    assert_eq!(
        ctx.api.writes(),
        vec![],
        "an unchanged cluster costs zero writes"
    );
    assert_eq!(ctx.api.events(), vec![]);
}

#[tokio::test]
async fn a_changed_key_recreates_the_secret_and_leaves_the_cronjob() {
    let ctx = context(config("secret-1"));
    let pg = manifest(true);
    apply_and_sync(&ctx, &pg).await;
    ctx.api.reset_counters();
    ctx.set_config(config("secret-2"));
    apply_and_sync(&ctx, &pg).await;
    assert_eq!(
        object_writes(&ctx),
        vec![
            Write::Delete(key(Kind::Secret), Propagation::Background),
            Write::Create(key(Kind::Secret)),
        ]
    );
    let secret = ctx.api.object(&key(Kind::Secret)).unwrap();
    assert_eq!(secret["data"]["AWS_SECRET_ACCESS_KEY"], "c2VjcmV0LTI=");
    let notes: Vec<String> = ctx.api.events().into_iter().map(|e| e.note).collect();
    assert_eq!(
        notes,
        [format!(
            "updated Secret db/{NAME}: .data.AWS_SECRET_ACCESS_KEY"
        )]
    );
}

#[tokio::test]
async fn a_changed_schedule_applies_the_cronjob_only() {
    let ctx = context(config("secret-1"));
    let mut pg = manifest(true);
    apply_and_sync(&ctx, &pg).await;
    ctx.api.reset_counters();
    pg.spec.logical_backup_schedule = Some("0 3 * * *".into());
    apply_and_sync(&ctx, &pg).await;
    assert_eq!(object_writes(&ctx), vec![Write::Apply(key(Kind::CronJob))]);
    assert_eq!(
        ctx.api.object(&key(Kind::CronJob)).unwrap()["spec"]["schedule"],
        "0 3 * * *"
    );
}

#[tokio::test]
async fn disabling_removes_cronjob_and_secret() {
    let ctx = context(config("secret-1"));
    apply_and_sync(&ctx, &manifest(true)).await;
    ctx.api.reset_counters();
    apply_and_sync(&ctx, &manifest(false)).await;
    assert_eq!(
        object_writes(&ctx),
        vec![
            Write::Delete(key(Kind::CronJob), Propagation::Background),
            Write::Delete(key(Kind::Secret), Propagation::Background),
        ]
    );
    assert!(ctx.api.object(&key(Kind::CronJob)).is_none());
    assert!(ctx.api.object(&key(Kind::Secret)).is_none());
    // Keys gone from the configuration remove the Secret alone.
    apply_and_sync(&ctx, &manifest(true)).await;
    ctx.api.reset_counters();
    ctx.set_config(OperatorConfig::default());
    apply_and_sync(&ctx, &manifest(true)).await;
    let writes = object_writes(&ctx);
    assert!(writes.contains(&Write::Delete(key(Kind::Secret), Propagation::Background)));
    assert!(ctx.api.object(&key(Kind::CronJob)).is_some());
    // A Secret someone else labelled like pgherd's is not touched.
    let foreign = ObjectKey {
        name: "backup-env".into(),
        ..key(Kind::Secret)
    };
    ctx.api.put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "backup-env", "namespace": "db",
            "labels": {"application": "spilo-logical-backup", "cluster-name": "acid-minimal-cluster"}}}));
    apply_and_sync(&ctx, &manifest(false)).await;
    assert!(ctx.api.object(&foreign).is_some());
}

#[tokio::test]
async fn the_last_success_reaches_the_status_once() {
    let ctx = context(config("secret-1"));
    let pg = manifest(true);
    apply_and_sync(&ctx, &pg).await;
    assert_eq!(
        ctx.api.postgresql(&pg).status.unwrap().last_logical_backup,
        None
    );
    ctx.api.edit(&key(Kind::CronJob), |o| {
        o["status"] = json!({"lastScheduleTime": "2026-08-01T09:59:00Z",
            "lastSuccessfulTime": "2026-08-01T09:59:41Z"});
    });
    ctx.api.reset_counters();
    apply_and_sync(&ctx, &pg).await;
    assert_eq!(
        ctx.api.writes(),
        vec![Write::Status("acid-minimal-cluster".into())]
    );
    assert_eq!(
        ctx.api.postgresql(&pg).status.unwrap().last_logical_backup,
        Some(Time("2026-08-01T09:59:41Z".parse().unwrap()))
    );
    ctx.api.reset_counters();
    apply_and_sync(&ctx, &pg).await;
    assert_eq!(ctx.api.writes(), vec![]);
}

#[tokio::test]
async fn zalandos_cronjob_is_replaced() {
    let ctx = context(config("secret-1"));
    // What Zalando's operator leaves: same name and labels, its image, literal keys, no pgherd hash.
    ctx.api.put(json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": NAME, "namespace": "db",
            "labels": {"application": "spilo-logical-backup", "cluster-name": "acid-minimal-cluster", "team": "acid"}},
        "spec": {"schedule": "30 00 * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{
            "name": "logical-backup", "image": "ghcr.io/zalando/postgres-operator/logical-backup:v2.0.1",
            "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "literal"}]}]}}}}}}));
    apply_and_sync(&ctx, &manifest(true)).await;
    let writes = object_writes(&ctx);
    let at = |w: &Write| writes.iter().position(|x| x == w).unwrap();
    assert!(
        at(&Write::Delete(key(Kind::CronJob), Propagation::Orphan))
            < at(&Write::Apply(key(Kind::CronJob)))
    );
    let cronjob = ctx.api.object(&key(Kind::CronJob)).unwrap();
    assert!(!cronjob.to_string().contains("literal"));
    assert!(!cronjob.to_string().contains("logical-backup:v2.0.1"));
}

#[tokio::test]
async fn cluster_deletion_removes_both_under_retain() {
    let ctx = context(config("secret-1"));
    let pg = manifest(true);
    apply_and_sync(&ctx, &pg).await;
    let mut deleting = ctx.api.postgresql(&pg);
    deleting.metadata.deletion_timestamp = Some(Time("2026-08-01T09:59:00Z".parse().unwrap()));
    ctx.api.put_postgresql(&deleting);
    ctx.api.reset_counters();
    assert_eq!(
        reconcile(&ctx.api.postgresql(&pg), &ctx).await.unwrap(),
        Done::Deleted
    );
    // Deleted by the coordinator, not only by the fake's garbage collector after the finalizer.
    let writes = ctx.api.writes();
    for kind in [Kind::CronJob, Kind::Secret] {
        assert!(writes.contains(&Write::Delete(key(kind), Propagation::Background)));
    }
    assert!(ctx.api.object(&key(Kind::CronJob)).is_none());
    assert!(ctx.api.object(&key(Kind::Secret)).is_none());
    // The credentials Secrets stay (Retain).
    assert!(ctx
        .api
        .keys()
        .iter()
        .any(|k| k.kind == Kind::Secret && k.name.starts_with("postgres.")));
}
