//! Password rotation through the whole roles duty, against the in-memory API and Postgres, with a clock the
//! test moves: the Secret's dates and users, the roles created and dropped, and no write when nothing is due.

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::{Timestamp, ToSpan};
use pgherd_shared::crd::operator_configuration::UsersConfiguration;
use pgherd_shared::crd::Postgresql;
use serde_json::json;

use super::tests::Counter;
use super::*;
use crate::fake::FakeApi;
use crate::fake_postgres::FakePostgres;
use crate::roles::password::{self, Encryption};

fn manifest() -> Postgresql {
    serde_yaml_ng::from_str(
        r#"
apiVersion: acid.zalan.do/v1
kind: postgresql
metadata: {name: acid-rot, namespace: db, uid: 3f2a1b8e-0000-4000-8000-000000000002, generation: 1}
spec:
  teamId: acid
  volume: {size: 1Gi}
  numberOfInstances: 1
  users: {app: [], inplace: [], owner: [], quiet: []}
  databases: {appdb: owner}
  usersWithInPlaceSecretRotation: [inplace]
  usersIgnoringSecretRotation: [quiet]
  postgresql: {version: "17"}
"#,
    )
    .unwrap()
}

struct World {
    ctx: Context<FakeApi>,
    db: FakePostgres,
    now: Arc<Mutex<Timestamp>>,
}

fn world() -> World {
    let mut cfg = OperatorConfig::default();
    cfg.raw.users = Some(UsersConfiguration {
        enable_password_rotation: Some(true),
        password_rotation_interval: Some(30),
        password_rotation_user_retention: Some(60),
        ..Default::default()
    });
    let mut ctx = Context::new(FakeApi::default(), cfg, Box::new(Counter(0)));
    let db = FakePostgres::default();
    ctx.postgres = Arc::new(db.clone());
    let now = Arc::new(Mutex::new("2026-12-05T10:00:00Z".parse().unwrap()));
    let clock = now.clone();
    ctx.clock = Box::new(move || *clock.lock().unwrap());
    ctx.api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "acid-rot-0", "namespace": "db",
            "labels": {"application": "spilo", "cluster-name": "acid-rot", "spilo-role": "master"}},
        "status": {"podIP": "10.0.0.1"}}));
    World { ctx, db, now }
}

impl World {
    async fn pass(&self, pg: &Postgresql) -> status::RolesStatus {
        reconcile(&self.ctx.api.postgresql(pg), &self.ctx)
            .await
            .unwrap();
        let cfg = self.ctx.config();
        roles::run(&self.ctx.api.postgresql(pg), &self.ctx, &cfg)
            .await
            .unwrap()
    }

    fn advance_days(&self, days: i64) {
        let mut now = self.now.lock().unwrap();
        *now += (days * 24).hours();
    }

    /// `username`, `password` and `nextRotation` of the user's credentials Secret.
    fn secret(&self, user: &str) -> (String, String, Option<String>) {
        let key = ObjectKey {
            kind: Kind::Secret,
            namespace: "db".into(),
            name: format!("{user}.acid-rot.credentials.postgresql.acid.zalan.do"),
        };
        let s = self.ctx.api.object(&key).expect("credentials Secret");
        let field = |k: &str| {
            s.pointer(&format!("/data/{k}"))
                .and_then(|v| v.as_str())
                .map(|b| String::from_utf8(STANDARD.decode(b).unwrap()).unwrap())
        };
        (
            field("username").unwrap(),
            field("password").unwrap(),
            field("nextRotation"),
        )
    }

    fn logs_in(&self, user: &str, pw: &str) -> bool {
        let current = self.db.current();
        let stored = current.roles.get(user).and_then(|r| r.password.clone());
        password::matches(stored.as_deref(), pw, user, Encryption::ScramSha256)
    }
}

#[tokio::test]
async fn users_rotate_on_their_date_and_old_rotation_users_expire() {
    let w = world();
    let pg = manifest();
    w.ctx.api.put_postgresql(&pg);

    // First pass: the roles exist, the rotating users' Secrets get a date one interval away.
    let first = w.pass(&pg).await;
    assert!(
        matches!(first, status::RolesStatus::Synced { .. }),
        "{first:?}"
    );
    let (user, app_pw, next) = w.secret("app");
    assert_eq!(
        (user.as_str(), next.as_deref()),
        ("app", Some("2027-01-04T10:00:00Z"))
    );
    assert_eq!(
        w.secret("inplace").2.as_deref(),
        Some("2027-01-04T10:00:00Z")
    );
    assert_eq!(
        w.secret("owner").2,
        None,
        "database owners rotate only when listed"
    );
    assert_eq!(w.secret("quiet").2, None, "usersIgnoringSecretRotation");
    assert!(w.logs_in("app", &app_pw));

    // Nothing due: no statement, no write.
    w.advance_days(29);
    w.ctx.api.reset_counters();
    let before = w.db.executed().len();
    w.pass(&pg).await;
    assert_eq!(w.db.executed().len(), before);
    assert!(
        !w.ctx
            .api
            .writes()
            .iter()
            .any(|x| format!("{x:?}").contains("credentials")),
        "{:?}",
        w.ctx.api.writes()
    );

    // Due: app gets a rotation user, inplace a new password; the old credentials of app still work.
    w.advance_days(2);
    w.pass(&pg).await;
    let (rotated, rotated_pw, next) = w.secret("app");
    assert_eq!(rotated, "app270105");
    assert_eq!(next.as_deref(), Some("2027-02-04T10:00:00Z"));
    assert!(w.logs_in("app270105", &rotated_pw));
    assert!(w.logs_in("app", &app_pw), "the old login keeps working");
    let current = w.db.current();
    assert!(current.roles["app270105"].member_of.contains("app"));
    let (same, new_pw, _) = w.secret("inplace");
    assert_eq!(same, "inplace");
    assert!(w.logs_in("inplace", &new_pw));

    // The next rotation: a newer rotation user; the first stays for the retention period (60 days).
    w.advance_days(31);
    w.pass(&pg).await;
    assert_eq!(w.secret("app").0, "app270205");
    assert!(w.db.current().roles.contains_key("app270105"));

    // 61 days after app270105 was made it is dropped; the one in use is kept.
    w.advance_days(30);
    w.pass(&pg).await;
    let roles = w.db.current().roles;
    assert!(
        !roles.contains_key("app270105"),
        "expired rotation user dropped"
    );
    assert!(roles.contains_key(&w.secret("app").0));
    assert!(roles.contains_key("app"));
}

#[tokio::test]
async fn switching_rotation_off_returns_the_secret_to_the_user() {
    let w = world();
    let mut pg = manifest();
    pg.spec.users_with_secret_rotation = Some(vec!["owner".into()]);
    w.ctx.api.put_postgresql(&pg);
    w.pass(&pg).await;
    w.advance_days(31);
    w.pass(&pg).await;
    assert_eq!(w.secret("owner").0, "owner270105");

    pg.spec.users_with_secret_rotation = None;
    w.ctx.api.put_postgresql(&pg);
    w.pass(&pg).await;
    let (user, pw, next) = w.secret("owner");
    assert_eq!((user.as_str(), next), ("owner", None));
    assert!(w.logs_in("owner", &pw), "the user's own name logs in again");
}

#[tokio::test]
async fn a_refused_rotation_role_keeps_its_secret_and_does_not_hold_up_others() {
    let w = world();
    let pg = manifest();
    w.ctx.api.put_postgresql(&pg);
    w.pass(&pg).await;
    let (_, inplace_pw, _) = w.secret("inplace");
    w.advance_days(31);
    w.db.refuse(Some("CREATE ROLE \"app270105\""));
    let status = w.pass(&pg).await;
    assert!(
        matches!(&status, status::RolesStatus::Failed { message, .. } if message.contains("app270105")),
        "{status:?}"
    );
    // app's Secret still names app, whose login works; inplace rotated anyway.
    let (user, pw, _) = w.secret("app");
    assert_eq!(user, "app");
    assert!(w.logs_in("app", &pw));
    let (_, new_pw, _) = w.secret("inplace");
    assert_ne!(new_pw, inplace_pw);
    assert!(w.logs_in("inplace", &new_pw));

    // Once the server accepts it, the rotation goes through.
    w.db.refuse(None);
    w.pass(&pg).await;
    let (user, pw, _) = w.secret("app");
    assert_eq!(user, "app270105");
    assert!(w.logs_in("app270105", &pw));
}
