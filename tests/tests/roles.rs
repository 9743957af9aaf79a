//! Roles and databases on the Kubernetes stand-in with the real image (issue 13): the coordinator, as a pod
//! of its image, creates the manifest's users, databases and prepared databases in the running Postgres;
//! every generated login works with its Secret's password; names that need quoting work; a sync with
//! nothing to do issues no DDL (counted in the server's own log, `log_statement = ddl`); a password changed
//! in the Secret reaches the role without a restart; a rotating user gets a new rotation user and expired
//! ones are dropped, without a restart; two users whose Secrets would share a name are refused.

use std::time::Duration;

use base64::Engine;
use pgherd_tests::podman::psql_as;
use pgherd_tests::rolling::patch_spec;
use pgherd_tests::system::{name, pod_ip, psql, System};
use pgherd_tests::wait;
use serde_json::{json, Value};

const CLUSTER: &str = "acid-minimal-cluster";
const BOOT: Duration = Duration::from_secs(300);
const SYNC: Duration = Duration::from_secs(120);

/// Zalando's minimal manifest, one member, with upstream's complete example's users, databases and
/// prepared database (extensions this image has), plus names that need quoting.
fn manifest() -> String {
    pgherd_tests::rolling::manifest(
        1,
        &json!({
        "users": {
            "zalando": ["superuser", "createdb"],
            "foo_user": [],
            "Data.Team": ["createdb"],
        },
        "databases": {"foo": "zalando", "foo-bar": "Data.Team"},
        "preparedDatabases": {"bar": {
            "defaultUsers": true,
            "extensions": {"pgcrypto": "public", "pg_trgm": "my schema"},
            "schemas": {"data": {}, "history": {"defaultRoles": true, "defaultUsers": false}, "my schema": {}},
        }},
        }),
    )
}

fn secret_password(sys: &System, user: &str) -> anyhow::Result<String> {
    let secret = format!(
        "{}.{CLUSTER}.credentials.postgresql.acid.zalan.do",
        user.to_lowercase().replace('_', "-")
    );
    let out = sys.kubectl_ok(
        &["get", "secret", &secret, "-o", "jsonpath={.data.password}"],
        None,
    )?;
    let raw = base64::engine::general_purpose::STANDARD.decode(out.trim())?;
    Ok(String::from_utf8(raw)?)
}

fn roles_condition(sys: &System) -> Option<(String, String, String)> {
    let pg = sys.get("acid.zalan.do/v1", "postgresql", "default", CLUSTER)?;
    let c = pg["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "RolesSynced")?
        .clone();
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str()?.into(),
    ))
}

/// DDL statements the server logged (`log_statement = ddl`, Spilo's default) in all its csv logs.
fn ddl_count(ip: &str, password: &str) -> anyhow::Result<u64> {
    let n = psql(
        ip,
        password,
        "SELECT coalesce(sum((SELECT count(*) FROM regexp_matches(pg_read_file(current_setting('log_directory') || '/' || name), \
         'statement: (CREATE|ALTER|GRANT|REVOKE|DROP) ', 'g'))), 0) FROM pg_ls_logdir() WHERE name LIKE '%.csv'",
    )?;
    Ok(n.parse()?)
}

/// One reconcile of the cluster, as any change of the resource causes, then time for it to finish.
async fn poke(sys: &System, n: u32) -> anyhow::Result<()> {
    sys.kubectl_ok(
        &[
            "annotate",
            "--overwrite",
            "postgresql",
            CLUSTER,
            &format!("pgherd-test/poke={n}"),
        ],
        None,
    )?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_manifests_roles_and_databases_exist_and_log_in() -> anyhow::Result<()> {
    let sys = System::start("pgh-roles", None).await?;
    sys.install_pgherd(&[]).await?;
    sys.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest()))?;
    let (master, _) = sys.wait_members("default", CLUSTER, 1, BOOT).await?;
    let ip = pod_ip(&master);
    let password = sys.superuser_password("default", CLUSTER)?;
    wait::until(SYNC, "RolesSynced", || async {
        Ok(roles_condition(&sys)
            .filter(|(s, _, _)| s == "True")
            .map(|_| ()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}; condition {:?}", roles_condition(&sys)))?;

    // Roles with upstream's flags and memberships (the whole prepared layout is a unit test).
    let q = |sql: &str| psql(&ip, &password, sql);
    let role = |r: &str| {
        q(&format!(
            "SELECT rolsuper, rolcreatedb, rolcanlogin, ARRAY(SELECT b.rolname FROM pg_auth_members m \
             JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid AND NOT m.admin_option ORDER BY 1) \
             FROM pg_roles r WHERE rolname = {}",
            literal(r)
        ))
    };
    assert_eq!(role("zalando")?, "t|t|t|{}");
    assert_eq!(role("foo_user")?, "f|f|t|{}");
    assert_eq!(role("Data.Team")?, "f|t|t|{}");
    assert_eq!(role("bar_owner")?, "f|f|f|{}");
    // The database owner administers the roles of its database (`ADMIN` at creation, as upstream).
    assert_eq!(
        q(
            "SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY pg_get_userbyid(m.roleid)) FROM pg_auth_members m \
           WHERE m.member = 'bar_owner'::regrole AND m.admin_option"
        )?,
        r#"bar_data_owner,bar_history_owner,"bar_my schema_owner",bar_reader,bar_reader_user,bar_writer,bar_writer_user"#
    );
    assert_eq!(role("bar_writer")?, "f|f|f|{bar_reader}");
    assert_eq!(role("bar_owner_user")?, "f|f|t|{bar_owner}");
    assert_eq!(role("bar_writer_user")?, "f|f|t|{bar_writer}");
    assert_eq!(role("bar_data_writer")?, "f|f|f|{bar_data_reader}");
    assert_eq!(role("bar_my schema_owner")?, "f|f|f|{}");
    assert_eq!(
        q("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE rolname = 'bar_owner'")?,
        r#"{"search_path=\"$user\", data, history, \"my schema\""}"#
    );
    // Databases and their owners; never `foo-bar` refused for its dash.
    assert_eq!(
        q("SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database \
           WHERE datname IN ('foo', 'foo-bar', 'bar')")?,
        "bar:bar_owner,foo:zalando,foo-bar:Data.Team"
    );
    let in_bar = |sql: &str| pgherd_tests::podman::psql(&ip, &password, "bar", sql);
    assert_eq!(
        in_bar("SELECT string_agg(nspname || ':' || pg_get_userbyid(nspowner), ',' ORDER BY nspname) FROM pg_namespace \
                WHERE nspname IN ('data', 'history', 'my schema')")?,
        "data:bar_data_owner,history:bar_history_owner,my schema:bar_my schema_owner"
    );
    assert_eq!(
        in_bar("SELECT string_agg(extname || ':' || extnamespace::regnamespace, ',' ORDER BY extname) FROM pg_extension \
                WHERE extname IN ('pgcrypto', 'pg_trgm')")?,
        r#"pg_trgm:"my schema",pgcrypto:public"#
    );
    // Default privileges: what bar_owner creates, bar_reader may read.
    let owner_pw = secret_password(&sys, "bar_owner_user")?;
    psql_as(
        &ip,
        "bar_owner_user",
        &owner_pw,
        "bar",
        "SET ROLE bar_owner; CREATE TABLE data.t(x int); INSERT INTO data.t VALUES (1)",
    )?;
    let reader_pw = secret_password(&sys, "bar_reader_user")?;
    assert_eq!(
        psql_as(
            &ip,
            "bar_reader_user",
            &reader_pw,
            "bar",
            "SELECT x FROM data.t"
        )?,
        "1"
    );
    // Every generated login works with its Secret's password.
    for user in [
        "zalando",
        "foo_user",
        "Data.Team",
        "bar_owner_user",
        "bar_reader_user",
        "bar_writer_user",
    ] {
        let pw = secret_password(&sys, user)?;
        let me = psql_as(&ip, user, &pw, "postgres", "SELECT current_user")?;
        assert_eq!(me, user);
    }
    // The password is stored hashed with the server's method.
    assert!(
        q("SELECT rolpassword FROM pg_authid WHERE rolname = 'foo_user'")?
            .starts_with("SCRAM-SHA-256$4096:")
    );

    // A sync with nothing to do: zero DDL.
    let before = ddl_count(&ip, &password)?;
    poke(&sys, 1).await?;
    poke(&sys, 2).await?;
    assert_eq!(
        ddl_count(&ip, &password)?,
        before,
        "a no-op sync issued DDL"
    );

    // A password changed in the Secret (quotes and dollars) reaches the role; nothing restarts.
    let started = q("SELECT pg_postmaster_start_time()")?;
    let new_pw = r#"it's $$ "quoted" \ ok"#;
    let secret = format!("foo-user.{CLUSTER}.credentials.postgresql.acid.zalan.do");
    let patch = json!({"stringData": {"password": new_pw}}).to_string();
    sys.kubectl_ok(&["patch", "secret", &secret, "-p", &patch], None)?;
    poke(&sys, 3).await?;
    wait::until(SYNC, "foo_user logs in with the new password", || async {
        Ok(psql_as(&ip, "foo_user", new_pw, "postgres", "SELECT 1")
            .ok()
            .map(|_| ()))
    })
    .await?;
    assert_eq!(
        ddl_count(&ip, &password)?,
        before + 1,
        "one ALTER ROLE for one password"
    );
    assert_eq!(q("SELECT pg_postmaster_start_time()")?, started);
    assert_eq!(
        name(&master),
        name(&sys.wait_members("default", CLUSTER, 1, BOOT).await?.0)
    );

    // Rotation (usersWithSecretRotation), its clock moved by the Secret's date and the rotation roles' names.
    rotation(&sys, &ip, &password, new_pw, &started).await?;
    assert_eq!(
        name(&master),
        name(&sys.wait_members("default", CLUSTER, 1, BOOT).await?.0)
    );

    // Two users whose Secrets would share a name: refused, naming both.
    let mut clash: Value = serde_json::from_str(&manifest())?;
    clash["metadata"]["name"] = json!("acid-clash");
    clash["spec"]["users"] = json!({"foo_bar": [], "foo-bar": []});
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&clash.to_string()),
    )?;
    let status = wait::until(SYNC, "acid-clash refused", || async {
        let pg = sys.get("acid.zalan.do/v1", "postgresql", "default", "acid-clash");
        Ok(pg
            .map(|p| {
                p["status"]["PostgresClusterStatus"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .filter(|s| s == "Invalid"))
    })
    .await?;
    assert_eq!(status, "Invalid");
    let pg = sys
        .get("acid.zalan.do/v1", "postgresql", "default", "acid-clash")
        .unwrap();
    let text = pg["status"].to_string();
    assert!(
        text.contains("foo_bar") && text.contains("foo-bar"),
        "{text}"
    );
    sys.shutdown().await;
    Ok(())
}

fn secret_field(sys: &System, user: &str, field: &str) -> anyhow::Result<String> {
    let secret = format!("{user}.{CLUSTER}.credentials.postgresql.acid.zalan.do");
    let out = sys.kubectl_ok(
        &[
            "get",
            "secret",
            &secret,
            "-o",
            &format!("jsonpath={{.data.{field}}}"),
        ],
        None,
    )?;
    let raw = base64::engine::general_purpose::STANDARD.decode(out.trim())?;
    Ok(String::from_utf8(raw)?)
}

/// `foo_user` rotates as a new user. The coordinator's clock cannot be moved from outside, so the test
/// moves what it compares the clock with: the Secret's `nextRotation` (set into the past) and the dates in
/// rotation roles' names (one from 2001, past any retention; one from yesterday, within it).
async fn rotation(
    sys: &System,
    ip: &str,
    password: &str,
    old_pw: &str,
    started: &str,
) -> anyhow::Result<()> {
    let q = |sql: &str| psql(ip, password, sql);
    let yesterday = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .yesterday()?
        .strftime("%y%m%d")
        .to_string();
    let recent = format!("foo_user{yesterday}");
    q(&format!(
        "CREATE ROLE foo_user010101 LOGIN IN ROLE foo_user; CREATE ROLE {recent} LOGIN IN ROLE foo_user"
    ))?;
    patch_spec(sys, &json!({"usersWithSecretRotation": ["foo_user"]}))?;
    let first = wait::until(SYNC, "foo_user's Secret gets a rotation date", || async {
        Ok(secret_field(sys, "foo-user", "nextRotation")
            .ok()
            .filter(|s| !s.is_empty()))
    })
    .await?;
    assert!(first.parse::<jiff::Timestamp>()? > jiff::Timestamp::now());
    assert_eq!(secret_field(sys, "foo-user", "username")?, "foo_user");

    let patch = json!({"stringData": {"nextRotation": "2001-01-01T00:00:00Z"}}).to_string();
    let secret = format!("foo-user.{CLUSTER}.credentials.postgresql.acid.zalan.do");
    sys.kubectl_ok(&["patch", "secret", &secret, "-p", &patch], None)?;
    poke(sys, 4).await?;
    let user = wait::until(SYNC, "foo_user rotated to a new user", || async {
        Ok(secret_field(sys, "foo-user", "username")
            .ok()
            .filter(|u| u != "foo_user"))
    })
    .await?;
    let suffix = user.strip_prefix("foo_user").unwrap_or_default();
    assert!(
        suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_digit()) && user != recent,
        "{user}"
    );
    let new_pw = secret_field(sys, "foo-user", "password")?;
    // The application's new login works and has foo_user's rights; the old login still works.
    assert_eq!(
        psql_as(
            ip,
            &user,
            &new_pw,
            "postgres",
            "SELECT pg_has_role('foo_user', 'USAGE')"
        )?,
        "t"
    );
    assert_eq!(
        psql_as(ip, "foo_user", old_pw, "postgres", "SELECT 1")?,
        "1"
    );
    assert!(
        secret_field(sys, "foo-user", "nextRotation")?.parse::<jiff::Timestamp>()?
            > jiff::Timestamp::now()
    );
    // Past the retention period: dropped; within it: kept.
    wait::until(SYNC, "foo_user010101 dropped", || async {
        Ok((!role_exists(ip, password, "foo_user010101")).then_some(()))
    })
    .await?;
    assert!(role_exists(ip, password, &recent));
    assert_eq!(q("SELECT pg_postmaster_start_time()")?, started);
    Ok(())
}

/// A Teams API served by the test on the network's gateway, as upstream's client calls it: `GET
/// /teams/{team}` with a bearer token; answers 503 while `down`.
struct TeamsApi {
    url: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl TeamsApi {
    async fn start(gateway: &str, teams: Value) -> anyhow::Result<TeamsApi> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((gateway, 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let down = std::sync::Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let team = path.strip_prefix("/teams/").unwrap_or("");
                let authorized = req
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case("authorization: bearer team-token"));
                let (status, body) = if d.load(Ordering::SeqCst) {
                    (
                        "503 Service Unavailable",
                        json!({"error": "down for the test"}),
                    )
                } else if !authorized {
                    ("401 Unauthorized", json!({"error": "no token"}))
                } else {
                    match teams.get(team) {
                        Some(members) => ("200 OK", json!({"id": team, "member": members})),
                        None => ("404 Not Found", json!({"error": "no such team"})),
                    }
                };
                let body = body.to_string();
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        Ok(TeamsApi { url, down, task })
    }
}

impl Drop for TeamsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn role_exists(ip: &str, password: &str, name: &str) -> bool {
    psql(
        ip,
        password,
        &format!("SELECT 1 FROM pg_roles WHERE rolname = {}", literal(name)),
    )
    .is_ok_and(|v| v == "1")
}

/// Human users: the cluster team's members from the Teams API, and a member a `PostgresTeam` adds while
/// the cluster runs; they log in through PAM only (no password), and a Teams API outage keeps them. And an
/// infrastructure role from the configuration's Secret, which logs in with its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn human_users_come_from_the_teams_api_and_postgres_teams() -> anyhow::Result<()> {
    let sys = System::start("pgh-teams", None).await?;
    let api = TeamsApi::start(
        &sys.network.gateway,
        json!({"acid": ["alice"], "friends": ["bob"]}),
    )
    .await?;
    // `kubectl create secret` sends protobuf, which the stand-in does not speak: apply it instead.
    let token = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgresql-operator", "namespace": "default"},
        "stringData": {"read-only-token-type": "Bearer", "read-only-token-secret": "team-token"}});
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&token.to_string()),
    )?;
    // An infrastructure role (a monitoring user), in upstream's one-role-per-Secret format.
    let monitor_pw = "m0n'it$$or";
    let infra = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "pgherd-infrastructure-roles", "namespace": "default"},
        "stringData": {"user": "monitor", "password": monitor_pw, "inrole": "pg_monitor"}});
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&infra.to_string()),
    )?;
    let url = format!("configTeamsApi.teams_api_url={}", api.url);
    sys.install_pgherd(&[
        "configTeamsApi.enable_teams_api=true",
        &url,
        "configTeamsApi.enable_postgres_team_crd=true",
        "configKubernetes.infrastructure_roles_secrets[0].secretname=pgherd-infrastructure-roles",
    ])
    .await?;
    sys.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest()))?;
    let (master, _) = sys.wait_members("default", CLUSTER, 1, BOOT).await?;
    let ip = pod_ip(&master);
    let password = sys.superuser_password("default", CLUSTER)?;
    wait::until(SYNC, "alice from the Teams API", || async {
        Ok(role_exists(&ip, &password, "alice").then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}; condition {:?}", roles_condition(&sys)))?;
    assert_eq!(
        psql(&ip, &password, "SELECT rolcanlogin, rolpassword IS NULL, pg_has_role('alice', 'zalandos', 'member'), \
              (SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'alice'::regrole) FROM pg_authid WHERE rolname = 'alice'")?,
        "t|t|t|{log_statement=all}"
    );
    // No password, so no password login (PAM is the way in for people).
    assert!(psql_as(&ip, "alice", "", "postgres", "SELECT 1").is_err());
    // The infrastructure role logs in with its Secret's password and has its membership.
    assert_eq!(
        psql_as(
            &ip,
            "monitor",
            monitor_pw,
            "postgres",
            "SELECT pg_has_role('pg_monitor', 'MEMBER')"
        )?,
        "t"
    );

    // A PostgresTeam adds a team: its member appears without a restart.
    let started = psql(&ip, &password, "SELECT pg_postmaster_start_time()")?;
    let team = json!({"apiVersion": "acid.zalan.do/v1", "kind": "PostgresTeam",
        "metadata": {"name": "custom-team-membership"},
        "spec": {"additionalTeams": {"acid": ["friends"]}, "additionalMembers": {"acid": ["virtual.jane"]}}});
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&team.to_string()),
    )?;
    wait::until(
        SYNC,
        "bob and virtual.jane from the PostgresTeam",
        || async {
            Ok(
                (role_exists(&ip, &password, "bob") && role_exists(&ip, &password, "virtual.jane"))
                    .then_some(()),
            )
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}; condition {:?}", roles_condition(&sys)))?;
    assert_eq!(
        psql(&ip, &password, "SELECT pg_postmaster_start_time()")?,
        started
    );

    // The Teams API down: the last good answer is kept, and the condition says so.
    api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    poke(&sys, 10).await?;
    let (status, _, message) = roles_condition(&sys).unwrap_or_default();
    assert_eq!(status, "True", "{message}");
    assert!(
        message.contains("503") && message.contains("last good answer"),
        "{message}"
    );
    assert!(role_exists(&ip, &password, "alice"));
    drop(api);
    sys.shutdown().await;
    Ok(())
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
