//! Logical backups against real components: PostgreSQL 15 under Patroni (the harness's clusters), Garage as
//! S3, and the `pgherd-agent logical-backup` binary run as the CronJob runs it (environment only).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use pgherd_agent::logical_backup::layout::{self, Manifest, Object};
use pgherd_tests::{tools, Cluster, ClusterSpec, Etcd, Garage, Member};

const BOOT: Duration = Duration::from_secs(120);
const PREFIX: &str = "spilo";
const SUFFIX: &str = "/0f1e2d3c";

/// A one-member cluster (no WAL archiving: logical backups need none).
async fn cluster(scope: &str, etcd: &Etcd) -> anyhow::Result<Cluster> {
    let c = Cluster::start(ClusterSpec::new(scope, 1)?, &etcd.host())?;
    c.wait_ready(0, BOOT).await?;
    Ok(c)
}

fn base(scope: &str) -> String {
    layout::base_prefix(PREFIX, scope, SUFFIX)
}

/// The CronJob's environment for cluster `scope`, with libpq pointed at `m` over its socket.
fn job_env(garage: &Garage, scope: &str, m: &Member) -> Vec<(String, String)> {
    [
        ("PATH", "/usr/bin:/bin"),
        ("SCOPE", scope),
        ("CLUSTER_NAME_LABEL", "cluster-name"),
        ("POD_NAMESPACE", "default"),
        ("PG_VERSION", "15"),
        ("PGUSER", "postgres"),
        ("PGDATABASE", "postgres"),
        ("PGSSLMODE", "require"),
        // Trust on the socket: the value is only there to prove that it never reaches the output.
        ("PGPASSWORD", "never-printed-pw"),
        ("LOGICAL_BACKUP_PROVIDER", "s3"),
        ("LOGICAL_BACKUP_S3_BUCKET", &garage.bucket),
        ("LOGICAL_BACKUP_S3_BUCKET_PREFIX", PREFIX),
        ("LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX", SUFFIX),
        ("LOGICAL_BACKUP_S3_REGION", &garage.region),
        ("LOGICAL_BACKUP_S3_ENDPOINT", &garage.endpoint()),
        ("LOGICAL_BACKUP_S3_SSE", ""),
        ("LOGICAL_BACKUP_CONNECT_RETRIES", "2"),
        ("LOGICAL_BACKUP_CONNECT_RETRY_DELAY", "1"),
        ("AWS_ACCESS_KEY_ID", &garage.key_id),
        ("AWS_SECRET_ACCESS_KEY", &garage.secret_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("PGHOST".to_string(), m.socket_dir().display().to_string()),
        ("PGPORT".to_string(), m.pg_port.to_string()),
    ])
    .collect()
}

fn agent(env: &[(String, String)], args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(tools::agent_bin()?);
    cmd.arg("logical-backup")
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// Runs the agent; its output, with stdout and stderr checked for secrets.
fn run(env: &[(String, String)], args: &[&str]) -> anyhow::Result<Output> {
    let out = agent(env, args)?.output()?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("never-printed-pw"),
        "the password leaked: {all}"
    );
    assert!(
        !all.contains(&env_value(env, "AWS_SECRET_ACCESS_KEY")),
        "the S3 secret leaked"
    );
    Ok(out)
}

fn env_value(env: &[(String, String)], key: &str) -> String {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn ok(env: &[(String, String)], args: &[&str]) -> anyhow::Result<String> {
    let out = run(env, args)?;
    anyhow::ensure!(
        out.status.success(),
        "logical-backup {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The one error line of a failed run.
fn fails(env: &[(String, String)], args: &[&str]) -> anyhow::Result<String> {
    let out = run(env, args)?;
    anyhow::ensure!(!out.status.success(), "logical-backup {args:?} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    Ok(errors[0].to_string())
}

fn list(env: &[(String, String)]) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(serde_json::from_str(&ok(env, &["list", "--json"])?)?)
}

fn pgherd_ids(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .filter(|r| r["kind"] == "pgherd")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn put(garage: &Garage, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
    garage
        .s3()
        .put_object()
        .bucket(&garage.bucket)
        .key(key)
        .body(body.into())
        .send()
        .await?;
    Ok(())
}

/// `md5` of every row of every user table of every database (but the templates), keyed `db.schema.table`.
async fn contents(m: &Member, dbs: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for db in dbs {
        let c = m.connect(db).await?;
        let tables = c
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                &[],
            )
            .await?;
        for t in tables {
            let name: String = t.get(0);
            let sum: String = c
                .query_one(
                    &format!(
                        "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), 'empty') FROM {name} t"
                    ),
                    &[],
                )
                .await?
                .get(0);
            out.insert(format!("{db}.{name}"), sum);
        }
    }
    Ok(out)
}

/// Roles (attributes, password hash), memberships and database owners of the test's own objects.
async fn globals(m: &Member) -> anyhow::Result<Vec<String>> {
    let c = m.connect("postgres").await?;
    let rows = c
        .query(
            "SELECT format('role %s login=%s createdb=%s pw=%s', rolname, rolcanlogin, rolcreatedb, rolpassword) \
               FROM pg_authid WHERE rolname IN ('app', 'readers', 'odd \"role\"') \
             UNION ALL SELECT format('member %s of %s', m.rolname, r.rolname) FROM pg_auth_members a \
               JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member \
               WHERE r.rolname IN ('app', 'readers', 'odd \"role\"') \
             UNION ALL SELECT format('database %s owned by %s', datname, pg_get_userbyid(datdba)) \
               FROM pg_database WHERE datname IN ('foo-bar', 'my db', 'plain') ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn superuser_password(m: &Member) -> anyhow::Result<String> {
    let c = m.connect("postgres").await?;
    Ok(c.query_one(
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
        &[],
    )
    .await?
    .get(0))
}

const DATABASES: [&str; 4] = ["foo-bar", "my db", "plain", "postgres"];

async fn populate(m: &Member) -> anyhow::Result<()> {
    let c = m.connect("postgres").await?;
    // One statement each: CREATE DATABASE cannot run in the implicit transaction of a multi-statement batch.
    for sql in [
        "CREATE ROLE app LOGIN PASSWORD 'app-pw' CREATEDB",
        "CREATE ROLE readers",
        "GRANT readers TO app",
        "CREATE ROLE \"odd \"\"role\"\"\"",
        "GRANT readers TO \"odd \"\"role\"\"\"",
        "CREATE DATABASE \"foo-bar\" OWNER app",
        "CREATE DATABASE \"my db\" OWNER \"odd \"\"role\"\"\"",
        "CREATE DATABASE plain",
        "CREATE TABLE in_postgres AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g",
    ] {
        c.batch_execute(sql).await.with_context(|| sql.to_string())?;
    }
    for (db, rows) in [("foo-bar", 20_000), ("my db", 3_000), ("plain", 10)] {
        let d = m.connect(db).await?;
        d.batch_execute(&format!(
            "CREATE SCHEMA s AUTHORIZATION readers; \
             CREATE TABLE s.\"Mixed Case\" (id bigint PRIMARY KEY, v text, j jsonb); \
             INSERT INTO s.\"Mixed Case\" SELECT g, repeat(md5(g::text), 3), jsonb_build_object('k', g) \
               FROM generate_series(1, {rows}) g; \
             CREATE TABLE public.t2 (id serial PRIMARY KEY, note text); \
             INSERT INTO public.t2 (note) SELECT 'row ' || g FROM generate_series(1, 100) g; \
             GRANT SELECT ON s.\"Mixed Case\" TO readers"
        ))
        .await?;
    }
    Ok(())
}

/// A backup of several databases restores identically into a fresh cluster (roles, memberships, owners
/// and every row), one database restores under a new name into the same server, a non-empty target is
/// refused, and a Zalando `pg_dumpall | gzip` file restores with `--all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_restore_identically_elsewhere_and_under_a_new_name() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let src = cluster("lbsrc", &etcd).await?;
    let s = src.member(0);
    populate(s).await?;
    let env = job_env(&garage, "lbsrc", s);

    let line = ok(&env, &["run"])?;
    eprintln!("{line}");
    assert!(line.contains("complete: 4 database(s)"), "{line}");
    let rows = list(&env)?;
    let ids = pgherd_ids(&rows);
    assert_eq!(ids.len(), 1, "{rows:?}");
    let names: BTreeSet<&str> = rows[0]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(names, DATABASES.into_iter().collect());
    let stored = garage.keys(&base("lbsrc")).await?;
    for k in [
        "globals.sql.zst",
        "databases/foo-bar.dump.zst",
        "databases/my%20db.dump.zst",
        "manifest.json",
    ] {
        let key = format!("{}{}/{k}", base("lbsrc"), ids[0]);
        assert!(stored.contains(&key), "{key} in {stored:?}");
    }

    // Into a fresh cluster, through --scope (the backups of another cluster), in parallel from temp files.
    let dst = cluster("lbdst", &etcd).await?;
    let d = dst.member(0);
    let dst_pw = superuser_password(d).await?;
    let mut dst_env = job_env(&garage, "lbdst", d);
    let line = ok(
        &dst_env,
        &[
            "restore",
            "--all",
            "--jobs",
            "2",
            "--scope",
            "lbsrc",
            "--scope-suffix",
            SUFFIX,
        ],
    )?;
    eprintln!("{line}");
    assert!(
        line.contains("left as they are: admin"),
        "existing roles reported: {line}"
    );
    assert_eq!(
        contents(d, &DATABASES).await?,
        contents(s, &DATABASES).await?
    );
    let expected = globals(s).await?;
    assert_eq!(
        expected.len(),
        8,
        "3 roles, 2 memberships, 3 owners: {expected:?}"
    );
    assert_eq!(globals(d).await?, expected);
    assert_eq!(
        superuser_password(d).await?,
        dst_pw,
        "the target's superuser is untouched"
    );

    // One database under a new name into the source itself, streamed into pg_restore.
    ok(
        &env,
        &[
            "restore",
            "--database",
            "foo-bar",
            "--as",
            "foo copy",
            "--no-globals",
        ],
    )?;
    let copy = contents(s, &["foo copy"]).await?;
    let orig = contents(s, &["foo-bar"]).await?;
    assert_eq!(
        copy.values().collect::<Vec<_>>(),
        orig.values().collect::<Vec<_>>()
    );
    assert_eq!(copy.len(), 2);
    let owner: String = s
        .connect("postgres")
        .await?
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'foo copy'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(owner, "app");
    let refused = fails(&env, &["restore", "--database", "foo-bar"])?;
    assert!(
        refused.contains("\"foo-bar\" exists and holds tables") && refused.contains("--as"),
        "{refused}"
    );

    // A dump replaced by another valid one is caught by its checksum: before pg_restore reads the temporary
    // file (--jobs 2), or at the end of the stream (--jobs 1).
    let dir = format!("{}{}/databases/", base("lbsrc"), ids[0]);
    garage
        .s3()
        .copy_object()
        .bucket(&garage.bucket)
        .copy_source(format!("{}/{dir}foo-bar.dump.zst", garage.bucket))
        .key(format!("{dir}plain.dump.zst"))
        .send()
        .await?;
    let args = |name: &'static str, jobs: &'static str| {
        [
            "restore",
            "--database",
            "plain",
            "--as",
            name,
            "--no-globals",
            "--jobs",
            jobs,
        ]
    };
    let line = fails(&env, &args("plain2", "2"))?;
    assert!(
        line.contains("does not match the manifest's") && line.contains("nothing was restored"),
        "{line}"
    );
    let created = |name: &'static str| async move {
        let c = s.connect("postgres").await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await?;
        anyhow::Ok(row.get::<_, i64>(0) == 1)
    };
    assert!(
        !created("plain2").await?,
        "verified before anything was created"
    );
    let line = fails(&env, &args("plain3", "1"))?;
    assert!(line.contains("cannot be trusted, drop it"), "{line}");

    // Zalando's format: pg_dumpall | gzip as {epoch}.sql.gz next to ours.
    let dump = Command::new(tools::pg15_bin()?.join("pg_dumpall"))
        .args([
            "-h",
            &s.socket_dir().display().to_string(),
            "-p",
            &s.pg_port.to_string(),
            "-U",
            "postgres",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let gz = Command::new("gzip")
        .stdin(dump.stdout.context("piped")?)
        .output()?;
    anyhow::ensure!(
        gz.status.success() && gz.stdout.len() > 1000,
        "pg_dumpall | gzip"
    );
    let epoch = Utc::now().timestamp() - 3600;
    put(
        &garage,
        &format!("{}{epoch}.sql.gz", base("lbsrc")),
        gz.stdout,
    )
    .await?;
    let rows = list(&env)?;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1]["id"],
        format!("{epoch}.sql.gz"),
        "newest first: {rows:?}"
    );
    let table = ok(&env, &["list"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "header and two rows: {table}");
    assert!(
        lines[1].starts_with(&ids[0]) && lines[1].ends_with("foo-bar, my db, plain, postgres"),
        "{table}"
    );
    assert!(
        lines[2].starts_with(&format!("{epoch}.sql.gz")) && lines[2].contains("restore with --all"),
        "{table}"
    );
    let one = fails(
        &env,
        &[
            "restore",
            "--backup",
            &epoch.to_string(),
            "--database",
            "plain",
        ],
    )?;
    assert!(one.contains("restores only as a whole (--all)"), "{one}");
    let zal = cluster("lbzal", &etcd).await?;
    let z = zal.member(0);
    dst_env = job_env(&garage, "lbsrc", z);
    let line = ok(
        &dst_env,
        &["restore", "--backup", &format!("{epoch}.sql.gz"), "--all"],
    )?;
    eprintln!("{line}");
    assert!(line.contains("Zalando dump"), "{line}");
    let all = ["foo-bar", "foo copy", "my db", "plain", "postgres"];
    assert_eq!(contents(z, &all).await?, contents(s, &all).await?);
    assert_eq!(globals(z).await?, expected);
    Ok(())
}

/// Writes a complete-looking backup `id` (manifest and globals object) as an older run would have.
async fn fake_backup(garage: &Garage, scope: &str, id: &str) -> anyhow::Result<()> {
    let at = layout::parse_id(id).context("id")?;
    let dir = format!("{}{id}/", base(scope));
    put(garage, &format!("{dir}{}", layout::GLOBALS), b"x".to_vec()).await?;
    let m = Manifest {
        format: layout::FORMAT,
        id: id.into(),
        started_at: at,
        finished_at: at,
        server_version: "15".into(),
        pg_dump_version: "15".into(),
        host: "old".into(),
        compression: "zstd".into(),
        globals: Object {
            key: layout::GLOBALS.into(),
            stored_bytes: 1,
            sha256: String::new(),
            size_bytes: 1,
        },
        databases: vec![],
    };
    put(garage, &format!("{dir}{}", layout::MANIFEST), m.to_json()).await
}

fn days_ago(d: i64) -> String {
    layout::backup_id(Utc::now() - chrono::Duration::days(d))
}

/// Retention keeps exactly what the policy says; a run killed after its first upload leaves no complete
/// backup and the next run succeeds (and removes the leftovers); with S3 down the run fails with one line
/// and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_kills_and_outages_never_lose_a_complete_backup() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut garage = Garage::start().await?;
    let src = cluster("lbret", &etcd).await?;
    let m = src.member(0);
    // Big enough that dumping it takes a while after the globals are stored.
    m.connect("postgres")
        .await?
        .batch_execute("CREATE DATABASE big; ")
        .await?;
    m.connect("big")
        .await?
        .batch_execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS v \
             FROM generate_series(1, 500000) g",
        )
        .await?;
    let mut env = job_env(&garage, "lbret", m);
    env.push(("LOGICAL_BACKUP_S3_RETENTION_TIME".into(), "7 days".into()));
    env.push(("LOGICAL_BACKUP_RETENTION_COUNT".into(), "2".into()));

    let old: Vec<String> = [2, 5, 10, 20].into_iter().map(days_ago).collect();
    for id in &old {
        fake_backup(&garage, "lbret", id).await?;
    }
    let interrupted = days_ago(15);
    put(
        &garage,
        &format!("{}{interrupted}/{}", base("lbret"), layout::GLOBALS),
        b"x".to_vec(),
    )
    .await?;
    let zalando = |days: i64| {
        format!(
            "{}.sql.gz",
            (Utc::now() - chrono::Duration::days(days)).timestamp()
        )
    };
    let (z_new, z_old) = (zalando(3), zalando(30));
    for z in [&z_new, &z_old] {
        put(&garage, &format!("{}{z}", base("lbret")), b"x".to_vec()).await?;
    }

    let out = ok(&env, &["run"])?;
    eprintln!("{out}");
    assert!(out.contains("retention: deleted 3 backup(s)"), "{out}");
    let rows = list(&env)?;
    let ids = pgherd_ids(&rows);
    assert_eq!(ids.len(), 2, "{rows:?}");
    assert_eq!(ids[1], old[0], "count 2: the new one and the 2-day-old one");
    let zal: Vec<&str> = rows
        .iter()
        .filter(|r| r["kind"] == "zalando")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(zal, [z_new.as_str()], "Zalando files older than 7 days go");
    let left = garage.keys(&base("lbret")).await?;
    assert!(
        !left.iter().any(|k| k.contains(&interrupted)),
        "interrupted run removed: {left:?}"
    );
    for gone in &old[1..] {
        assert!(
            !left.iter().any(|k| k.contains(gone.as_str())),
            "{gone} deleted: {left:?}"
        );
    }

    // Killed after its first object is stored.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut child = agent(&env, &["run"])?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let known: BTreeSet<String> = garage.keys(&base("lbret")).await?.into_iter().collect();
    let start = Instant::now();
    let killed_id = loop {
        let now = garage.keys(&base("lbret")).await?;
        if let Some(k) = now
            .iter()
            .find(|k| !known.contains(*k) && k.ends_with(layout::GLOBALS))
        {
            child.kill()?;
            break k
                .trim_start_matches(&base("lbret"))
                .split('/')
                .next()
                .unwrap()
                .to_string();
        }
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "the run ended before it could be killed"
        );
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "no globals object appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.wait()?;
    let after_kill = garage.keys(&base("lbret")).await?;
    assert!(!after_kill.contains(&format!(
        "{}{killed_id}/{}",
        base("lbret"),
        layout::MANIFEST
    )));
    assert_eq!(
        pgherd_ids(&list(&env)?),
        ids,
        "the killed run is not listed"
    );
    let restore = fails(&env, &["restore", "--backup", &killed_id, "--all"])?;
    assert!(restore.contains("has no manifest"), "{restore}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = ok(&env, &["run"])?;
    eprintln!("{out}");
    assert!(
        out.contains(&format!("interrupted run(s) [{killed_id}]")),
        "{out}"
    );
    let ids = pgherd_ids(&list(&env)?);
    assert_eq!(ids.len(), 2);
    let big = format!("{}{}/databases/big.dump.zst", base("lbret"), ids[0]);
    assert!(
        garage.keys(&big).await?.contains(&big),
        "the next run is complete"
    );

    // S3 away: one clear line, nothing deleted.
    let before = garage.keys(&base("lbret")).await?;
    garage.pause();
    let started = Instant::now();
    let line = fails(&env, &["run"])?;
    eprintln!("S3 down, after {:?}: {line}", started.elapsed());
    assert!(
        line.contains("S3 is not usable, nothing was dumped or deleted"),
        "{line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "fails in bounded time"
    );
    garage.resume().await?;
    assert_eq!(garage.keys(&base("lbret")).await?, before);
    Ok(())
}
