//! Backups that provably restore: the native engine against a real S3 server (Garage), with real
//! PostgreSQL 15, Patroni and etcd.

use std::time::Duration;

use pgherd_tests::{archive_now, garage_spec, sample, Cluster, Etcd, Garage, Member};

const BOOT: Duration = Duration::from_secs(120);

/// Data checksum of table `t` (order-independent of physical layout).
async fn checksum(c: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(c.query_one(
        "SELECT coalesce(md5(string_agg(id::text || ':' || v, ',' ORDER BY id)), 'empty') FROM t",
        &[],
    )
    .await?
    .get(0))
}

/// Switches to a new WAL segment and waits until the archiver has shipped it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitr_restores_the_exact_state_at_each_point() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let src = Cluster::start(garage_spec("pitr", 1, &garage)?, &etcd.host())?;
    src.wait_ready(0, BOOT).await?;
    let leader = src.member(0);
    // The first backup of a new leader is taken automatically.
    src.until(
        Duration::from_secs(90),
        "the automatic first base backup",
        || async { Ok((!leader.backups()?.is_empty()).then_some(())) },
    )
    .await?;

    let c = leader.connect("postgres").await?;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await?;
    let mut points = Vec::new();
    for round in 0..3i32 {
        c.execute("INSERT INTO t SELECT g, md5(g::text || $1) FROM generate_series($2 * 1000 + 1, $2 * 1000 + 1000) g", &[&format!("r{round}"), &round]).await?;
        c.execute(
            "UPDATE t SET v = v || $1 WHERE id % 7 = $2",
            &[&format!("u{round}"), &round],
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let at: String = c.query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[]).await?.get(0);
        points.push((at, checksum(&c).await?));
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    // Postgres confirms a time target only by replaying a commit after it; later activity provides one.
    c.batch_execute("CREATE TABLE later_activity AS SELECT 1 AS x")
        .await?;
    archive_now(&c).await?;

    for (i, (at, expected)) in points.iter().enumerate() {
        let mut spec = garage_spec(&format!("pitr-clone{i}"), 1, &garage)?;
        spec.extra_env.extend(garage.clone_env("pitr"));
        spec.extra_env
            .insert("CLONE_TARGET_TIME".into(), at.clone());
        let clone = Cluster::start(spec, &etcd.host())?;
        clone.wait_ready(0, BOOT).await?;
        let cc = clone.member(0).connect("postgres").await?;
        assert_eq!(&checksum(&cc).await?, expected, "restored to {at}");
        eprintln!("point {i} ({at}): checksum {expected} restored exactly");
    }
    Ok(())
}

fn pgbench(member: &Member, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/pgbench")
        .args([
            "-h",
            &member.socket_dir().display().to_string(),
            "-p",
            &member.pg_port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg("postgres")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Archiving keeps up under pgbench load: afterwards no `.ready` backlog and no archiver failure; then S3
/// goes away for 60 s under load, archiving fails meanwhile and catches up afterwards, and a restore to the
/// latest point has every committed row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_keeps_up_under_load_and_survives_an_s3_outage() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut garage = Garage::start().await?;
    let src = Cluster::start(garage_spec("load", 1, &garage)?, &etcd.host())?;
    src.wait_ready(0, BOOT).await?;
    let m = src.member(0);
    pgbench(m, &["-i", "-s", "10", "-q"])?;
    let load_secs = std::env::var("PGHERD_LOAD_SECONDS").unwrap_or_else(|_| "180".into());
    let c = m.connect("postgres").await?;
    let lsn = "SELECT (pg_current_wal_lsn() - '0/0')::bigint";
    let start: i64 = c.query_one(lsn, &[]).await?.get(0);
    let archived_before: i64 = c
        .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
        .await?
        .get(0);
    let out = pgbench(m, &["-c", "8", "-j", "2", "-T", &load_secs, "-n"])?;
    let tps = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or_default()
        .to_string();
    let end: i64 = c.query_one(lsn, &[]).await?.get(0);
    archive_now(&c).await?;
    src.until(Duration::from_secs(60), "no .ready backlog", || async {
        Ok((m.ready_files() == 0).then_some(()))
    })
    .await?;
    let row = c
        .query_one(
            "SELECT archived_count, failed_count FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let (archived, failed): (i64, i64) = (row.get(0), row.get(1));
    let generated = (end - start) / (16 << 20);
    assert!(generated >= 3, "the load generated {generated} segments");
    assert!(
        archived - archived_before >= generated,
        "archived {} of {generated} segments",
        archived - archived_before
    );
    assert_eq!(failed, 0, "no archive failure under load");
    eprintln!("pgbench {load_secs}s ({tps}): {archived} segments archived, 0 failures, no backlog");
    // Archiving went through the agent (one S3 client, look-ahead uploads), and the backup engine reports
    // into the exporter.
    let metrics = m.scrape().await?;
    let pushed = sample(&metrics, "pgherd_wal_push_total").unwrap_or(0.0);
    assert!(
        pushed >= generated as f64,
        "the agent archived {pushed} segments itself"
    );
    // The first base backup runs in the background from the moment the member leads.
    let metrics = src
        .until(
            Duration::from_secs(180),
            "the backup catalog in the metrics",
            || async {
                let text = m.scrape().await?;
                Ok((sample(&text, "pgherd_backup_count").unwrap_or(0.0) >= 1.0).then_some(text))
            },
        )
        .await?;
    let last = sample(&metrics, "pgherd_backup_last_success_timestamp_seconds")
        .expect("last backup time reported");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(last > 0.0 && last < now, "last backup at {last}, now {now}");

    // S3 outage under load: commits keep being acknowledged, archiving fails and retries.
    c.batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .await?;
    garage.pause();
    let mut id = 0i64;
    let outage = std::time::Instant::now();
    let mut round = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        for _ in 0..200 {
            id += 1;
            c.execute("INSERT INTO acked VALUES ($1)", &[&id]).await?;
        }
        round += 1;
        if round % 10 == 0 {
            c.query_one("SELECT pg_switch_wal()", &[]).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed_during: i64 = c
        .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
        .await?
        .get(0);
    assert!(failed_during > 0, "archiving failed while S3 was down");
    assert!(m.ready_files() > 0, "a backlog built up during the outage");
    garage.resume().await?;
    // Postgres's archiver backs off for up to a minute after repeated failures before it retries.
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    src.until(
        Duration::from_secs(180),
        "archiving to catch up after S3 returns",
        || async {
            let last: String = c
                .query_one(
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await?
                .get(0);
            Ok((last >= seg).then_some(()))
        },
    )
    .await?;
    src.until(
        Duration::from_secs(120),
        "the backlog to drain after S3 returns",
        || async { Ok((m.ready_files() == 0).then_some(())) },
    )
    .await?;
    eprintln!("S3 outage: {failed_during} failed attempts, backlog drained after recovery; {id} rows committed");

    let mut spec = garage_spec("load-restore", 1, &garage)?;
    spec.extra_env.extend(garage.clone_env("load"));
    let clone = Cluster::start(spec, &etcd.host())?;
    clone.wait_ready(0, BOOT).await?;
    let cc = clone.member(0).connect("postgres").await?;
    let n: i64 = cc
        .query_one("SELECT count(*) FROM acked", &[])
        .await?
        .get(0);
    assert_eq!(
        n, id,
        "every committed row is in the restore to the latest point"
    );
    Ok(())
}

/// Retention keeps exactly BACKUP_NUM_TO_RETAIN backups, and each kept backup restores (to its own end LSN).
/// A backup killed with SIGKILL half-way is never listed, and the next one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_n_restorable_backups_and_killed_backups_are_never_listed(
) -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let mut spec = garage_spec("ret", 1, &garage)?;
    spec.extra_env
        .insert("BACKUP_NUM_TO_RETAIN".into(), "2".into());
    let src = Cluster::start(spec, &etcd.host())?;
    src.wait_ready(0, BOOT).await?;
    let m = src.member(0);
    src.until(
        Duration::from_secs(90),
        "the automatic first base backup",
        || async { Ok((!m.backups()?.is_empty()).then_some(())) },
    )
    .await?;
    let c = m.connect("postgres").await?;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await?;
    // Enough data that a backup takes a moment, so it can be killed half-way.
    c.batch_execute(
        "INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g",
    )
    .await?;

    let before = m.backups()?.len();
    let bin = m.dir().parent().unwrap().join("bin/pgherd-agent");
    let mut child = std::process::Command::new(&bin)
        .args([
            "backup",
            "push",
            "--envdir",
            &m.envdir().display().to_string(),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PGHERD_PATRONI_CONFIG", m.dir().join("run/postgres.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait()?.is_none(),
        "the backup was still running when killed"
    );
    let tree: Vec<i32> = std::iter::once(child.id() as i32)
        .chain(pgherd_shared::proctree::descendants(child.id() as i32))
        .collect();
    for p in &tree {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    child.wait()?;
    assert_eq!(
        m.backups()?.len(),
        before,
        "the killed backup is not listed"
    );

    // Four backups with retention 2, recording the row count each one holds.
    let mut rows_at = Vec::new();
    for i in 0..4 {
        c.execute(
            "INSERT INTO t SELECT g, 'x' FROM generate_series($1, $1 + 999) g",
            &[&(1_000_000 + i * 1000)],
        )
        .await?;
        let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
        let out = m.agent(&[
            "backup",
            "push",
            "--retain",
            "--json",
            "--envdir",
            &m.envdir().display().to_string(),
        ])?;
        anyhow::ensure!(
            out.status.success(),
            "backup push {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        rows_at.push((
            manifest["name"].as_str().unwrap().to_string(),
            manifest["end_lsn"].as_str().unwrap().to_string(),
            n,
        ));
    }
    let kept = m.backups()?;
    let kept_names: Vec<&str> = kept.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(
        kept_names,
        [rows_at[2].0.as_str(), rows_at[3].0.as_str()],
        "exactly the 2 newest are kept"
    );
    archive_now(&c).await?;

    for (name, end_lsn, rows) in &rows_at[2..] {
        let mut spec = garage_spec(
            &format!("ret-{}", &name[name.len() - 6..name.len() - 1]),
            1,
            &garage,
        )?;
        spec.extra_env.extend(garage.clone_env("ret"));
        spec.extra_env
            .insert("CLONE_TARGET_LSN".into(), end_lsn.clone());
        let clone = Cluster::start(spec, &etcd.host())?;
        clone.wait_ready(0, BOOT).await?;
        let n: i64 = clone
            .member(0)
            .connect("postgres")
            .await?
            .query_one("SELECT count(*) FROM t", &[])
            .await?
            .get(0);
        assert_eq!(
            n, *rows,
            "backup {name} restores to its own state ({end_lsn})"
        );
    }
    Ok(())
}

/// A clone whose source has no backups fails loudly and never initialises an empty cluster; a replica
/// joining an existing cluster is created from the latest backup and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_without_backups_fails_and_replicas_come_from_backups() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;

    let mut spec = garage_spec("orphan", 1, &garage)?;
    spec.extra_env.extend(garage.clone_env("no-such-cluster"));
    let orphan = Cluster::start(spec, &etcd.host())?;
    let m = orphan.member(0);
    orphan
        .until(
            Duration::from_secs(60),
            "the clone to fail with a clear error",
            || async {
                Ok(m.log_tail(400)
                    .contains(
                        "no complete backup found under s3://pgherd-test/spilo/no-such-cluster/wal",
                    )
                    .then_some(()))
            },
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !m.data_dir().join("PG_VERSION").exists(),
        "no initdb-created data directory"
    );
    assert!(
        orphan
            .view()
            .await
            .map(|v| v.leader().is_none())
            .unwrap_or(true),
        "no leader: nothing was bootstrapped"
    );
    drop(orphan);

    let mut spec = garage_spec("rep", 2, &garage)?;
    spec.start_first = Some(1);
    let mut cluster = Cluster::start(spec, &etcd.host())?;
    cluster.wait_ready(0, BOOT).await?;
    let leader = cluster.member(0);
    cluster
        .until(Duration::from_secs(90), "the first base backup", || async {
            Ok((!leader.backups()?.is_empty()).then_some(()))
        })
        .await?;
    let c = leader.connect("postgres").await?;
    c.batch_execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
        .await?;
    archive_now(&c).await?;
    cluster.member_mut(1).start()?;
    cluster.wait_ready(1, BOOT).await?;
    assert!(
        cluster
            .member(1)
            .log_tail(400)
            .contains("replica has been created using wal_e"),
        "the replica came from the backup:\n{}",
        cluster.member(1).log_tail(60)
    );
    let n: i64 = cluster
        .member(1)
        .connect("postgres")
        .await?
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);
    Ok(())
}

/// Archiving the same segment twice succeeds, different content under the same name is refused, and a
/// tampered object is detected on fetch: real S3, no cluster needed.
#[tokio::test]
async fn wal_push_is_idempotent_refuses_conflicts_and_fetch_verifies() -> anyhow::Result<()> {
    let garage = Garage::start().await?;
    let dir = tempfile::tempdir()?;
    let envdir = dir.path().join("env");
    std::fs::create_dir_all(&envdir)?;
    for (k, v) in [
        (
            "WALG_S3_PREFIX",
            format!("s3://{}/spilo/walpush/wal/15", garage.bucket),
        ),
        ("AWS_ENDPOINT", garage.endpoint()),
        ("AWS_REGION", garage.region.clone()),
        ("AWS_ACCESS_KEY_ID", garage.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", garage.secret_key.clone()),
        ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
        ("PGHERD_BACKUP_ENGINE", "native".into()),
    ] {
        std::fs::write(envdir.join(k), v)?;
    }
    let wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(&wal)?;
    let seg = wal.join("000000010000000000000007");
    let content: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&seg, &content)?;
    let bin = pgherd_tests::tools::agent_bin()?;
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(&bin)
            .args(args)
            .env_clear()
            .output()
    };
    let push = |p: &std::path::Path| {
        run(&[
            "wal-push".as_ref(),
            "--envdir".as_ref(),
            envdir.as_os_str(),
            p.as_os_str(),
        ])
    };

    assert!(push(&seg)?.status.success(), "first push");
    assert!(
        push(&seg)?.status.success(),
        "identical second push succeeds"
    );
    let mut other = content.clone();
    other[100] ^= 1;
    std::fs::write(&seg, &other)?;
    let out = push(&seg)?;
    assert!(
        !out.status.success(),
        "different content under the same name fails"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already archived with different content"),
        "{err}"
    );

    let dest = dir.path().join("RECOVERYXLOG");
    let fetch = |name: &str| {
        run(&[
            "wal-fetch".as_ref(),
            "--envdir".as_ref(),
            envdir.as_os_str(),
            name.as_ref(),
            dest.as_os_str(),
        ])
    };
    assert!(fetch("000000010000000000000007")?.status.success());
    assert_eq!(
        std::fs::read(&dest)?,
        content,
        "fetched content is the first push"
    );
    assert_eq!(
        fetch("000000010000000000000008")?.status.code(),
        Some(1),
        "a missing segment is exit 1"
    );

    // Corrupt the stored object behind the engine's back: the fetch must refuse it and leave no file.
    std::fs::remove_file(&dest)?;
    let key = "spilo/walpush/wal/15/pgherd/wal/000000010000000000000007";
    let s3 = garage.s3();
    let stored = s3
        .get_object()
        .bucket(&garage.bucket)
        .key(key)
        .send()
        .await?;
    let meta = stored.metadata().cloned().unwrap_or_default();
    let mut body = stored.body.collect().await?.into_bytes().to_vec();
    let mid = body.len() / 2;
    body[mid] ^= 0xff;
    s3.put_object()
        .bucket(&garage.bucket)
        .key(key)
        .set_metadata(Some(meta))
        .body(body.into())
        .send()
        .await?;
    let out = fetch("000000010000000000000007")?;
    assert!(!out.status.success(), "a corrupt object is refused");
    assert!(!dest.exists(), "nothing is written for a corrupt object");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");
    Ok(())
}

/// CLONE_WITH_BASEBACKUP copies a running cluster (Spilo's clone_with_basebackup.py contract) and the
/// clone then lives on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_with_basebackup_copies_a_running_cluster() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let src = Cluster::start(garage_spec("bbsrc", 1, &garage)?, &etcd.host())?;
    src.wait_ready(0, BOOT).await?;
    let s = src.member(0);
    let c = s.connect("postgres").await?;
    c.batch_execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    )
    .await?;
    let expected = checksum(&c).await?;

    let mut spec = garage_spec("bbclone", 1, &garage)?;
    for (k, v) in [
        ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP".to_string()),
        ("CLONE_SCOPE", "bbsrc".into()),
        ("CLONE_HOST", "127.0.0.1".into()),
        ("CLONE_PORT", s.pg_port.to_string()),
        ("CLONE_USER", "standby".into()),
        ("CLONE_PASSWORD", s.env()["PGPASSWORD_STANDBY"].clone()),
    ] {
        spec.extra_env.insert(k.into(), v);
    }
    let clone = Cluster::start(spec, &etcd.host())?;
    clone.wait_ready(0, BOOT).await?;
    let cc = clone.member(0).connect("postgres").await?;
    assert_eq!(
        checksum(&cc).await?,
        expected,
        "the clone has the source's data"
    );
    cc.batch_execute("INSERT INTO t VALUES (0, 'clone only')")
        .await?;
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(n, 5000, "the source is unaffected by writes to the clone");
    Ok(())
}
