//! The roles duty against the in-memory API, the in-memory Postgres and a Teams API twin: what it runs,
//! and that a carried-out plan leaves nothing to run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pgherd_shared::crd::operator_configuration::TeamsApiConfiguration;
use pgherd_shared::crd::Postgresql;
use serde_json::json;

use super::status::ROLES_SYNCED;
use super::tests::Counter;
use super::*;
use crate::fake::FakeApi;
use crate::fake_postgres::FakePostgres;
use crate::teams::api::{TeamsApi, TeamsError};

#[derive(Default)]
struct Teams {
    down: AtomicBool,
}

#[async_trait]
impl TeamsApi for Teams {
    async fn members(&self, url: &str, team: &str, token: &str) -> Result<Vec<String>, TeamsError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TeamsError::Status {
                url: url.into(),
                status: 503,
                message: None,
            });
        }
        assert_eq!(token, "tok");
        Ok(match team {
            "acid" => vec!["alice".into()],
            _ => vec![],
        })
    }
}

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
  users: {"Data.Team": [createdb]}
  databases: {foo-bar: Data.Team}
  postgresql: {version: "17"}
"#,
    )
    .unwrap()
}

fn world() -> (Context<FakeApi>, FakePostgres, Arc<Teams>) {
    let mut cfg = OperatorConfig::default();
    cfg.raw.teams_api = Some(TeamsApiConfiguration {
        enable_teams_api: Some(true),
        teams_api_url: Some("http://teams".into()),
        ..Default::default()
    });
    let mut ctx = Context::new(FakeApi::default(), cfg, Box::new(Counter(0)));
    let pg = FakePostgres::default();
    let teams = Arc::new(Teams::default());
    ctx.postgres = Arc::new(pg.clone());
    ctx.teams_api = teams.clone();
    ctx.api.put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgresql-operator", "namespace": "default"},
        "data": {"read-only-token-secret": "dG9r"}}));
    ctx.api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "acid-minimal-cluster-0", "namespace": "db",
            "labels": {"application": "spilo", "cluster-name": "acid-minimal-cluster", "spilo-role": "master"}},
        "status": {"podIP": "10.0.0.1"}}));
    (ctx, pg, teams)
}

async fn pass(ctx: &Context<FakeApi>, pg: &Postgresql) -> status::RolesStatus {
    let current = ctx.api.postgresql(pg);
    reconcile(&current, ctx).await.unwrap();
    let cfg = ctx.config();
    roles::run(&ctx.api.postgresql(pg), ctx, &cfg)
        .await
        .unwrap()
}

#[tokio::test]
async fn roles_are_created_once_and_people_survive_a_teams_api_outage() {
    let (ctx, db, teams) = world();
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    let first = pass(&ctx, &pg).await;
    assert!(
        matches!(first, status::RolesStatus::Synced { .. }),
        "{first:?}"
    );
    let sql: Vec<String> = db.executed().into_iter().map(|(_, s)| s).collect();
    let created: Vec<&str> = sql
        .iter()
        .filter_map(|s| s.strip_prefix("CREATE ROLE "))
        .map(|s| s.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            r#""Data.Team""#,
            r#""alice""#,
            r#""postgres""#,
            r#""standby""#
        ]
    );
    let alice = sql
        .iter()
        .find(|s| s.starts_with(r#"CREATE ROLE "alice""#))
        .unwrap();
    assert!(alice.ends_with("PASSWORD NULL"), "{alice}");
    assert!(sql.contains(&r#"CREATE DATABASE "foo-bar" OWNER "Data.Team""#.to_string()));
    let events = ctx.api.events();
    assert!(events.iter().any(|e| e.reason == "Roles"), "{events:?}");

    // Nothing to do: nothing run, no event.
    let n = db.executed().len();
    ctx.api.reset_counters();
    pass(&ctx, &pg).await;
    assert_eq!(db.executed().len(), n);
    assert!(!ctx.api.events().iter().any(|e| e.reason == "Roles"));

    // The Teams API down: alice stays wanted, the condition says why.
    teams.down.store(true, Ordering::SeqCst);
    let status = pass(&ctx, &pg).await;
    assert_eq!(db.executed().len(), n, "no role dropped or changed");
    let status::RolesStatus::Synced { warnings, .. } = status else {
        panic!("{status:?}");
    };
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("503") && w.contains("last good answer")),
        "{warnings:?}"
    );
    let stored = ctx.api.postgresql(&pg);
    let c = stored.status.unwrap();
    let cond = c.condition(ROLES_SYNCED).unwrap();
    assert_eq!(cond.status, "True");
}

#[tokio::test]
async fn without_a_primary_nothing_connects_and_the_duty_waits() {
    let (ctx, db, _) = world();
    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    let pod = ObjectKey {
        kind: Kind::Pod,
        namespace: "db".into(),
        name: "acid-minimal-cluster-0".into(),
    };
    ctx.api.edit(&pod, |p| {
        p["metadata"]["labels"]["spilo-role"] = json!("replica")
    });
    // Ready but not labelled yet: look again soon.
    ctx.api.edit(&pod, |p| {
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}])
    });
    let status = pass(&ctx, &pg).await;
    assert_eq!(
        status,
        status::RolesStatus::Waiting("no pod is labelled master yet".into())
    );
    assert_eq!(status.requeue(), Some(std::time::Duration::from_secs(15)));
    // Not ready: the StatefulSet watch will say when; no requeue meanwhile.
    ctx.api
        .edit(&pod, |p| p["status"]["conditions"] = json!([]));
    let status = pass(&ctx, &pg).await;
    assert_eq!(status, status::RolesStatus::NoPrimary);
    assert_eq!(status.requeue(), None);
    assert!(db.executed().is_empty());
}

#[tokio::test]
async fn standby_clusters_and_disabled_database_access_are_left_alone() {
    let (ctx, db, _) = world();
    let mut pg = manifest();
    pg.spec.standby = Some(
        serde_json::from_value(json!({"s3_wal_path": "s3://bucket/spilo/acid-source/wal/17"}))
            .unwrap(),
    );
    ctx.api.put_postgresql(&pg);
    let status = pass(&ctx, &pg).await;
    assert!(
        matches!(status, status::RolesStatus::Off(r) if r.contains("standby")),
        "{status:?}"
    );
    let condition = ctx.api.postgresql(&pg).status.unwrap();
    let condition = condition.condition(ROLES_SYNCED).unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "NotManaged")
    );

    let pg = manifest();
    ctx.api.put_postgresql(&pg);
    let mut cfg = (*ctx.config()).clone();
    cfg.raw.debug = Some(Default::default());
    cfg.raw.debug.as_mut().unwrap().enable_database_access = Some(false);
    *ctx.config.write().unwrap() = Arc::new(cfg);
    let status = pass(&ctx, &pg).await;
    assert!(matches!(status, status::RolesStatus::Off(_)), "{status:?}");
    assert!(db.executed().is_empty(), "{:?}", db.executed());
}
