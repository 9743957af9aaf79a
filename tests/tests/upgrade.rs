//! In-place major upgrade, PostgreSQL 15 (Debian) → 16 (the `pgserver` wheel), on a real 3-member cluster
//! with data checksums, driven by `pgherd-agent upgrade --members 3` on the leader as the operator runs it.
//! Kills at every phase are in `upgrade_kills.rs`; the shared steps in `pgherd_tests::upgrade`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgherd_tests::upgrade::*;
use pgherd_tests::{archive_now, tools, Cluster, ClusterSpec, Etcd, Garage};

/// Failed pre-checks (target binaries missing, a replica down, an extension missing for 16) change
/// nothing: the 15 cluster keeps running unpaused with its data, and the one-line error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_prechecks_leave_a_running_15_cluster() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut cluster = Cluster::start(spec("upgfail")?, &etcd.host())?;
    cluster.wait_ready(2, BOOT).await?;
    let leader = cluster.leader().await?;
    let sum = setup_data(&cluster, leader).await?;

    // 1. Target binaries missing.
    let run = upgrade(
        &cluster,
        leader,
        &[("PGHERD_PG_BIN_DIRS", "16=/nonexistent/pg16/bin")],
    )?;
    eprintln!("missing binaries ({:?}): {}", run.took, run.last_line);
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.last_line
            .contains("binaries missing in /nonexistent/pg16/bin"),
        "{}",
        run.output
    );
    assert!(
        run.last_line.contains("the cluster is unchanged"),
        "{}",
        run.last_line
    );
    assert_eq!(status_file(&cluster, leader)?["outcome"], "precheck_failed");
    intact(&cluster, &sum).await?;

    // 2. A replica down.
    let down = (leader + 1) % 3;
    let down_name = cluster.member(down).name.clone();
    cluster.member_mut(down).sigterm(Duration::from_secs(60))?;
    let run = upgrade(&cluster, leader, &[])?;
    eprintln!("replica down ({:?}): {}", run.took, run.last_line);
    assert!(!run.ok, "{}", run.output);
    assert!(run.last_line.contains(&down_name), "{}", run.last_line);
    cluster.member_mut(down).start()?;
    intact(&cluster, &sum).await?;

    // 3. An extension the new major does not have.
    let app = cluster.member(leader).connect("app").await?;
    app.batch_execute("CREATE EXTENSION pg_stat_statements")
        .await?;
    let run = upgrade(&cluster, leader, &[])?;
    eprintln!("extension missing ({:?}): {}", run.took, run.last_line);
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.last_line.contains("pg_stat_statements (app)"),
        "{}",
        run.last_line
    );
    intact(&cluster, &sum).await?;
    app.batch_execute("DROP EXTENSION pg_stat_statements")
        .await?;
    Ok(())
}

/// The whole procedure with WAL archiving to S3 (Garage): every member ends on 16 with the same data,
/// checksums still on, replicas streaming (brought over with rsync, not re-cloned), the WAL prefix
/// switched to `/wal/16`, a base backup of 16 taken, the status file complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_15_to_16_keeping_data_and_replicas() -> anyhow::Result<()> {
    whole_cluster_upgrade("upg", tools::patroni4()?).await
}

/// The same with Patroni 3 (`master` role, older REST API): only the REST API and Patroni's public DCS
/// module are used, so both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_15_to_16_with_patroni3() -> anyhow::Result<()> {
    whole_cluster_upgrade("upgp3", tools::patroni3()?).await
}

async fn whole_cluster_upgrade(scope: &str, patroni: PathBuf) -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let mut spec = spec(scope)?;
    spec.patroni = patroni;
    spec.extra_env.extend(garage.spilo_env());
    // No scheduled backups during the test: the only backup of 16 must come from the upgrade.
    spec.extra_env
        .insert("BACKUP_SCHEDULE".into(), "0 0 1 1 *".into());
    let cluster = Cluster::start(spec, &etcd.host())?;
    cluster.wait_ready(2, BOOT).await?;
    let leader = cluster.leader().await?;
    let sum = setup_data(&cluster, leader).await?;

    let run = upgrade(&cluster, leader, &[])?;
    eprintln!("upgrade took {:?}; last line: {}", run.took, run.last_line);
    assert!(
        run.ok,
        "upgrade failed:\n{}\n{}",
        run.output,
        cluster.logs(80)
    );

    let view = cluster.wait_ready(2, BOOT).await?;
    assert!(!view.pause, "left paused: {view:?}");
    let new_leader = runs_16_with(&cluster, &sum, "data changed").await?;
    // Patroni was restarted on every member on purpose: no member reports a crash.
    for m in cluster.members() {
        let log = std::fs::read_to_string(m.dir().join("agent.log"))?;
        assert!(
            !log.contains("exited unexpectedly"),
            "{}: Patroni restart reported as a crash",
            m.name
        );
        assert!(
            log.contains("Patroni stopped on request"),
            "{}: no requested restart",
            m.name
        );
    }
    let status = status_file(&cluster, leader)?;
    eprintln!("status: {status:#}");
    assert_eq!(status["outcome"], "succeeded");
    assert_eq!(status["point_of_no_return_passed"], true);
    assert_eq!(status["backup"], "taken", "{status:#}");
    let list = cluster.member(new_leader).backups()?;
    eprintln!("backups after the upgrade: {list:#?}");
    assert!(
        list.iter().any(|b| b["pg_version"] == "16"
            || b["server_version_num"]
                .as_u64()
                .is_some_and(|v| v / 10000 == 16)),
        "no backup of 16: {list:?}"
    );
    let env = cluster.member(new_leader).dir().join("run/etc/wal-e.d/env");
    let prefix = std::fs::read_to_string(env.join("WALG_S3_PREFIX"))
        .or_else(|_| std::fs::read_to_string(env.join("WALE_S3_PREFIX")))?;
    assert!(prefix.trim_end().ends_with("/wal/16"), "{prefix}");
    let warnings = status["warnings"].to_string();
    assert!(
        !warnings.contains("re-cloned"),
        "replicas were not rsynced: {warnings}"
    );
    assert!(!cluster
        .member(leader)
        .data_dir()
        .with_file_name("data_old")
        .exists());
    Ok(())
}

/// A failure after pg_upgrade linked the files (the case Spilo could not undo: the old cluster's
/// pg_control is renamed) rolls back: PostgreSQL 15 runs again on every member with the same data.
/// Injected with a target installation whose pg_upgrade does its work and then reports failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_the_link_phase_rolls_back_to_15() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let cluster = Cluster::start(spec("upgrb")?, &etcd.host())?;
    cluster.wait_ready(2, BOOT).await?;
    let leader = cluster.leader().await?;
    let sum = setup_data(&cluster, leader).await?;

    let (_wrapper, map) = pg16_with_pg_upgrade_then(
        "case \" $* \" in *\" --check \"*) exit 0;; esac\n\
         echo 'injected failure after the link phase' >&2\nexit 1\n",
    )?;

    let run = upgrade(&cluster, leader, &[("PGHERD_PG_BIN_DIRS", &map)])?;
    eprintln!("injected failure ({:?}): {}", run.took, run.last_line);
    assert!(!run.ok, "{}", run.output);
    assert!(run.last_line.contains("rolled back"), "{}", run.output);
    assert!(
        run.last_line.contains("PostgreSQL 15 is running again"),
        "{}",
        run.last_line
    );
    assert!(
        run.last_line.contains("injected failure"),
        "{}",
        run.last_line
    );
    let status = status_file(&cluster, leader)?;
    assert_eq!(status["outcome"], "rolled_back", "{status:#}");
    assert_eq!(status["point_of_no_return_passed"], false);
    intact(&cluster, &sum).await?;
    let old = cluster.member(leader).data_dir().with_file_name("data_old");
    assert!(!old.exists(), "{} left behind", old.display());
    Ok(())
}

/// Upgrade-on-clone: a point-in-time clone of a 15 cluster's backups into a cluster configured for 16. The
/// clone command replays the archive to the target with the 15 binaries, upgrades the result with
/// pg_upgrade and hands Patroni a 16 primary: the data is exactly the state at the target, checksums are
/// on, statistics exist, a replica streams and the new cluster's first backup is of 16. A clone whose 15
/// binaries are missing fails with a message naming them and never initialises an empty cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_backup_is_cloned_into_a_16_cluster() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let garage = Garage::start().await?;
    let mut src_spec = spec_of("cusrc", 1)?;
    src_spec.extra_env.extend(garage.spilo_env());
    src_spec
        .extra_env
        .insert("BACKUP_SCHEDULE".into(), "0 0 1 1 *".into());
    let src = Cluster::start(src_spec, &etcd.host())?;
    src.wait_ready(0, BOOT).await?;
    let sum = setup_data(&src, 0).await?;
    // The automatic first backup may predate the data: the clone has to replay WAL to get it.
    src.until(BOOT, "the first base backup", || async {
        Ok((!src.member(0).backups()?.is_empty()).then_some(()))
    })
    .await?;
    // ALTER SYSTEM lives in a file, not in WAL: a backup taken after it carries it. vacuum_defer_cleanup_age
    // is gone in 16 and must be left out rather than stop the new server.
    let admin = src.member(0).connect("postgres").await?;
    // One statement per call: ALTER SYSTEM refuses the implicit transaction of a multi-statement batch.
    for sql in [
        "ALTER SYSTEM SET work_mem = '7MB'",
        "ALTER SYSTEM SET vacuum_defer_cleanup_age = 5",
    ] {
        admin.batch_execute(sql).await?;
    }
    let envdir = src.member(0).envdir().display().to_string();
    let pushed = src
        .member(0)
        .agent(&["backup", "push", "--envdir", &envdir])?;
    anyhow::ensure!(
        pushed.status.success(),
        "backup push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let c = src.member(0).connect("app").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let target: String = c
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .await?
        .get(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.batch_execute(
        "INSERT INTO items SELECT g, 'after the target' FROM generate_series(50001, 50100) g",
    )
    .await?;
    archive_now(&c).await?;

    let clone_spec = |scope: &str| -> anyhow::Result<ClusterSpec> {
        let mut spec = spec_of(scope, 2)?;
        spec.extra_env.extend(garage.spilo_env());
        spec.extra_env.extend(garage.clone_env("cusrc"));
        spec.extra_env.insert("PGVERSION".into(), "16".into());
        spec.extra_env
            .insert("CLONE_TARGET_TIME".into(), target.clone());
        Ok(spec)
    };
    let started = Instant::now();
    let clone = Cluster::start(clone_spec("cu16")?, &etcd.host())?;
    clone
        .wait_ready(1, BOOT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", clone.logs(80)))?;
    eprintln!("15 → 16 clone ready in {:?}", started.elapsed());
    let leader = runs_16_with(&clone, &sum, &format!("not the state at {target}")).await?;
    let lc = clone.member(leader).connect("app").await?;
    let stats: i64 = lc
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'items'",
            &[],
        )
        .await?
        .get(0);
    assert!(stats > 0, "no statistics after the upgrade");
    let work_mem: String = lc.query_one("SHOW work_mem", &[]).await?.get(0);
    assert_eq!(work_mem, "7MB", "ALTER SYSTEM settings not carried over");
    clone
        .until(
            BOOT,
            "a base backup of 16 in the clone's storage",
            || async {
                let list = clone.member(leader).backups()?;
                Ok(list.iter().any(|b| b["pg_version"] == "16").then_some(()))
            },
        )
        .await?;
    // The source is untouched.
    let v: String = c.query_one("SHOW server_version_num", &[]).await?.get(0);
    assert_eq!(v.parse::<i32>()? / 10000, 15);

    // Without the 15 binaries the clone fails, says why, and never becomes an (empty) cluster.
    let mut broken = clone_spec("cunobin")?;
    broken.start_first = Some(1);
    broken.extra_env.insert(
        "PGHERD_PG_BIN_DIRS".into(),
        format!("15=/nonexistent/15/bin,16={}", tools::pg16_bin()?.display()),
    );
    let failed = Cluster::start(broken, &etcd.host())?;
    let log = failed.member(0).dir().join("agent.log");
    failed
        .until(BOOT, "the clone to fail naming the missing binaries", || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text
                .contains("the backup is from PostgreSQL 15, whose binaries are not installed (/nonexistent/15/bin/postgres")
                .then_some(()))
        })
        .await?;
    // Patroni gives up on a failed bootstrap (the agent restarts it to try again); nothing was initialised.
    let text = std::fs::read_to_string(&log)?;
    assert!(!text.contains("initialized a new cluster"), "{text}");
    assert!(failed.member(0).connect("postgres").await.is_err());
    Ok(())
}
