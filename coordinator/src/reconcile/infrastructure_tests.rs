//! Infrastructure roles through the roles duty, on the in-memory API and the in-memory Postgres.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgherd_shared::crd::operator_configuration::KubernetesConfiguration;
use pgherd_shared::crd::Postgresql;
use serde_json::{json, Value};

use crate::config::OperatorConfig;
use crate::fake::FakeApi;
use crate::fake_postgres::FakePostgres;
use crate::kube_api::{Kind, ObjectKey};
use crate::reconcile::roles::run;
use crate::reconcile::status::RolesStatus;
use crate::reconcile::tests::Counter;
use crate::reconcile::{reconcile, Context};
use crate::roles::catalog::{Current, CurrentRole, Postgres};
use crate::roles::model::Flag;
use crate::roles::password::{matches, Encryption};

fn manifest() -> Postgresql {
    serde_yaml_ng::from_str(
        r#"
apiVersion: acid.zalan.do/v1
kind: postgresql
metadata: {name: acid-minimal-cluster, namespace: db, uid: 3f2a1b8e-0000-4000-8000-000000000001, generation: 1}
spec:
  teamId: acid
  volume: {size: 1Gi}
  numberOfInstances: 1
  users: {zmon: [], robot_zmon: [createdb]}
  postgresql: {version: "17"}
"#,
    )
    .unwrap()
}

fn b64(s: &str) -> Value {
    Value::String(STANDARD.encode(s))
}

/// The configuration's `kubernetes` group, the cluster's master pod and an `admin` role; the fake
/// context's operator namespace is `default`.
fn world(kubernetes: KubernetesConfiguration) -> (Context<FakeApi>, FakePostgres) {
    let mut cfg = OperatorConfig::default();
    cfg.raw.kubernetes = Some(kubernetes);
    let mut ctx = Context::new(FakeApi::default(), cfg, Box::new(Counter(0)));
    let db = FakePostgres::default();
    // `team_admin_role`, which the manifest users get as ADMIN; Spilo creates it.
    db.set_current(Current {
        roles: BTreeMap::from([("admin".to_string(), CurrentRole::default())]),
        ..Default::default()
    });
    ctx.postgres = std::sync::Arc::new(db.clone());
    ctx.api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "acid-minimal-cluster-0", "namespace": "db",
            "labels": {"application": "spilo", "cluster-name": "acid-minimal-cluster", "spilo-role": "master"}},
        "status": {"podIP": "10.0.0.1"}}));
    (ctx, db)
}

fn monitoring_secret(password: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "monitoring-roles", "namespace": "default"},
        "data": {"user": b64("robot_zmon"), "password": b64(password), "inrole": b64("zmon")}})
}

async fn pass(ctx: &Context<FakeApi>, pg: &Postgresql) -> RolesStatus {
    reconcile(&ctx.api.postgresql(pg), ctx).await.unwrap();
    let cfg = ctx.config();
    run(&ctx.api.postgresql(pg), ctx, &cfg).await.unwrap()
}

async fn catalog(db: &FakePostgres) -> Current {
    db.read(&BTreeSet::new()).await.unwrap()
}

#[tokio::test]
async fn an_infrastructure_secret_becomes_a_role_that_shadows_the_manifest_user() {
    let (ctx, db) = world(
        serde_yaml_ng::from_str("infrastructure_roles_secrets: [{secretname: monitoring-roles}]")
            .unwrap(),
    );
    ctx.api.put(monitoring_secret("s3cret"));
    let pg = manifest();
    ctx.api.put_postgresql(&pg);

    let status = pass(&ctx, &pg).await;
    let RolesStatus::Synced { warnings, .. } = &status else {
        panic!("{status:?}");
    };
    assert_eq!(
        warnings,
        &[
            r#"role "robot_zmon": the manifest user is ignored, the infrastructure role of the same name wins"#
        ]
    );
    let current = catalog(&db).await;
    let robot = &current.roles["robot_zmon"];
    assert_eq!(robot.member_of, BTreeSet::from(["zmon".to_string()]));
    // The infrastructure role's flags, not the manifest user's CREATEDB.
    assert_eq!(robot.flags, BTreeSet::from([Flag::Login]));
    let stored = robot.password.as_deref();
    assert!(matches(
        stored,
        "s3cret",
        "robot_zmon",
        Encryption::ScramSha256
    ));
    // Not the password of the manifest user's credentials Secret, which the builders still make.
    let manifest_secret = ctx
        .api
        .object(&ObjectKey {
            kind: Kind::Secret,
            namespace: "db".into(),
            name: "robot-zmon.acid-minimal-cluster.credentials.postgresql.acid.zalan.do".into(),
        })
        .unwrap();
    let manifest_password = STANDARD
        .decode(manifest_secret["data"]["password"].as_str().unwrap())
        .unwrap();
    let manifest_password = String::from_utf8(manifest_password).unwrap();
    assert!(!matches(
        stored,
        &manifest_password,
        "robot_zmon",
        Encryption::ScramSha256
    ));
    let sql: Vec<String> = db.executed().into_iter().map(|(_, s)| s).collect();
    assert!(sql.iter().all(|s| !s.contains("s3cret")), "{sql:?}");

    // Nothing changed: no statement.
    let n = db.executed().len();
    pass(&ctx, &pg).await;
    assert_eq!(db.executed().len(), n);

    // A password changed in the Secret reaches the role on the next sync, no restart.
    ctx.api.put(monitoring_secret("n3w"));
    pass(&ctx, &pg).await;
    let stored = catalog(&db).await.roles["robot_zmon"].password.clone();
    assert!(matches(
        stored.as_deref(),
        "n3w",
        "robot_zmon",
        Encryption::ScramSha256
    ));
    assert_eq!(db.executed().len(), n + 1, "{:?}", db.executed());
}

#[tokio::test]
async fn legacy_template_and_configmap_roles_and_a_missing_secret_as_a_warning() {
    let (ctx, db) = world(
        serde_yaml_ng::from_str(
            "{infrastructure_roles_secret_name: postgresql-infrastructure-roles, \
              infrastructure_roles_secrets: [{secretname: elsewhere/absent}]}",
        )
        .unwrap(),
    );
    ctx.api.put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgresql-infrastructure-roles", "namespace": "default"},
        "data": {"user1": b64("testuser"), "password1": b64("t3st"), "batman": b64("justice")}}));
    ctx.api.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "postgresql-infrastructure-roles", "namespace": "default"},
        "data": {"batman": "inrole: [zmon]\nuser_flags: [createdb]\ndb_parameters: {log_statement: all}\n"}}));
    let pg = manifest();
    ctx.api.put_postgresql(&pg);

    let status = pass(&ctx, &pg).await;
    let RolesStatus::Synced { warnings, .. } = &status else {
        panic!("{status:?}");
    };
    assert_eq!(
        warnings,
        &[
            r#"infrastructure roles: infrastructure_roles_secrets[0]: Secret elsewhere/absent not found, its roles are skipped"#
        ]
    );
    let current = catalog(&db).await;
    let batman = &current.roles["batman"];
    assert_eq!(batman.member_of, BTreeSet::from(["zmon".to_string()]));
    assert_eq!(batman.flags, BTreeSet::from([Flag::CreateDb, Flag::Login]));
    assert_eq!(batman.parameters["log_statement"], "all");
    assert!(matches(
        batman.password.as_deref(),
        "justice",
        "batman",
        Encryption::ScramSha256
    ));
    assert!(matches(
        current.roles["testuser"].password.as_deref(),
        "t3st",
        "testuser",
        Encryption::ScramSha256
    ));
    // No credentials Secret for the infrastructure roles in the cluster's namespace: only the
    // manifest's and the system users'.
    let secrets: Vec<String> = ctx
        .api
        .keys()
        .into_iter()
        .filter(|k| k.kind == Kind::Secret && k.namespace == "db")
        .map(|k| k.name.split('.').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(secrets, ["postgres", "robot-zmon", "standby", "zmon"]);
}
