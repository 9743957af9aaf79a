//! In-place major upgrade, PostgreSQL 15 (Debian) → 16 (the `pgserver` wheel), on a real 3-member cluster
//! with data checksums, driven by `pgherd-agent upgrade --members 3` on the leader as the operator runs it.
//!
//! The 16 build has neither SSL nor contrib, so these clusters run with ssl=off, a pg_hba without hostssl
//! lines and no preloaded pg_stat_statements; that is what the pre-checks require for this target.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pgherd_tests::{archive_now, tools, wait, Cluster, ClusterSpec, Etcd, Garage};
use serde_json::{json, Value};

const BOOT: Duration = Duration::from_secs(180);

fn spec(scope: &str) -> anyhow::Result<ClusterSpec> {
    spec_of(scope, 3)
}

fn spec_of(scope: &str, members: usize) -> anyhow::Result<ClusterSpec> {
    let mut spec = ClusterSpec::new(scope, members)?;
    spec.extra_env.insert(
        "PGHERD_PG_BIN_DIRS".into(),
        format!("16={}", tools::pg16_bin()?.display()),
    );
    spec.extra_env.insert("ALLOW_NOSSL".into(), "true".into());
    spec.spilo_configuration = Some(json!({"postgresql": {
        "parameters": {"ssl": "off", "shared_preload_libraries": ""},
        "pg_hba": [
            "local all all trust",
            "local replication standby trust",
            "host replication standby 127.0.0.1/32 md5",
            "host all all 127.0.0.1/32 md5"
        ]
    }}));
    Ok(spec)
}

struct Run {
    ok: bool,
    last_line: String,
    output: String,
    took: Duration,
}

/// `pgherd-agent upgrade --members 3` with the leader's environment plus the operator's new PGVERSION, as
/// `kubectl exec` in a rotated pod would.
fn upgrade_command(cluster: &Cluster, leader: usize, overrides: &[(&str, &str)]) -> Command {
    let m = cluster.member(leader);
    let mut env: BTreeMap<String, String> = m.env().clone();
    env.insert("PGVERSION".into(), "16".into());
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let mut cmd = Command::new(m.dir().parent().unwrap().join("bin/pgherd-agent"));
    cmd.args(["upgrade", "--members", "3"])
        .env_clear()
        .envs(&env);
    cmd
}

/// Runs [`upgrade_command`] to completion.
fn upgrade(cluster: &Cluster, leader: usize, overrides: &[(&str, &str)]) -> anyhow::Result<Run> {
    let started = Instant::now();
    let out = upgrade_command(cluster, leader, overrides).output()?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last_line = output.lines().last().unwrap_or_default().to_string();
    Ok(Run {
        ok: out.status.success(),
        last_line,
        output,
        took: started.elapsed(),
    })
}

async fn data_checksum(cluster: &Cluster, i: usize) -> anyhow::Result<String> {
    let c = cluster.member(i).connect("app").await?;
    Ok(c.query_one(
        "SELECT md5(string_agg(id::text || ':' || payload, ',' ORDER BY id)) FROM items",
        &[],
    )
    .await?
    .get(0))
}

/// Every member runs 16, the leader has the data of checksum `sum` with data checksums on, and every
/// replica streams a row written afterwards. Returns the leader.
async fn runs_16_with(cluster: &Cluster, sum: &str, why: &str) -> anyhow::Result<usize> {
    let versions = server_versions(cluster).await?;
    anyhow::ensure!(versions.iter().all(|v| *v / 10000 == 16), "{versions:?}");
    let leader = cluster.leader().await?;
    anyhow::ensure!(data_checksum(cluster, leader).await? == sum, "{why}");
    let c = cluster.member(leader).connect("app").await?;
    let checksums: String = c.query_one("SHOW data_checksums", &[]).await?.get(0);
    anyhow::ensure!(checksums == "on", "data_checksums = {checksums}");
    c.batch_execute("INSERT INTO items VALUES (90001, 'on 16')")
        .await?;
    for i in (0..cluster.members().len()).filter(|i| *i != leader) {
        let m = cluster.member(i);
        wait::until(
            Duration::from_secs(60),
            "the new row on a replica",
            || async {
                let c = m.connect("app").await?;
                let n: i64 = c
                    .query_one("SELECT count(*) FROM items WHERE id = 90001", &[])
                    .await?
                    .get(0);
                Ok((n == 1).then_some(()))
            },
        )
        .await?;
    }
    Ok(leader)
}

async fn server_versions(cluster: &Cluster) -> anyhow::Result<Vec<i32>> {
    let mut out = Vec::new();
    for m in cluster.members() {
        let c = m.connect("postgres").await?;
        let v: String = c.query_one("SHOW server_version_num", &[]).await?.get(0);
        out.push(v.parse()?);
    }
    Ok(out)
}

fn status_file(cluster: &Cluster, i: usize) -> anyhow::Result<Value> {
    let path = cluster.member(i).dir().join("run/pgherd/upgrade.json");
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

async fn setup_data(cluster: &Cluster, leader: usize) -> anyhow::Result<String> {
    // post-init creates pg_stat_statements where Postgres 15 has it; the 16 build has no contrib.
    for db in ["postgres", "template1"] {
        let c = cluster.member(leader).connect(db).await?;
        c.batch_execute("DROP EXTENSION IF EXISTS pg_stat_statements CASCADE")
            .await?;
    }
    let c = cluster.member(leader).connect("postgres").await?;
    c.batch_execute("CREATE DATABASE app").await?;
    let app = cluster.member(leader).connect("app").await?;
    app.batch_execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 50000) g;
         CREATE INDEX ON items (payload);",
    )
    .await?;
    let sum = data_checksum(cluster, leader).await?;
    // Every replica has replayed it before anything starts.
    for i in 0..cluster.members().len() {
        let member = &cluster.member(i);
        wait::until(Duration::from_secs(60), "replicas to catch up", || async {
            let Ok(c) = member.connect("app").await else {
                return Ok(None);
            };
            let n: i64 = match c.query_one("SELECT count(*) FROM items", &[]).await {
                Ok(r) => r.get(0),
                Err(_) => return Ok(None),
            };
            Ok((n == 50000).then_some(()))
        })
        .await?;
    }
    Ok(sum)
}

/// The cluster runs 15 everywhere, unpaused, with unchanged data and no leftover target directory.
async fn intact(cluster: &Cluster, sum: &str) -> anyhow::Result<()> {
    let view = cluster.wait_ready(2, BOOT).await?;
    anyhow::ensure!(!view.pause, "cluster left paused: {view:?}");
    let versions = server_versions(cluster).await?;
    anyhow::ensure!(versions.iter().all(|v| *v / 10000 == 15), "{versions:?}");
    let leader = cluster.leader().await?;
    anyhow::ensure!(data_checksum(cluster, leader).await? == sum, "data changed");
    let new = cluster.member(leader).data_dir().with_file_name("data_new");
    anyhow::ensure!(!new.exists(), "{} left behind", new.display());
    Ok(())
}

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

/// The 16 installation with a `pg_upgrade` that runs the real one and then `tail` (shell): the way to
/// inject what happens after the link phase. Returns the directory (keep it alive) and its
/// PGHERD_PG_BIN_DIRS mapping.
fn pg16_with_pg_upgrade_then(tail: &str) -> anyhow::Result<(tempfile::TempDir, String)> {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = tempfile::Builder::new().prefix("pg16-wrapped-").tempdir()?;
    std::fs::set_permissions(wrapper.path(), std::fs::Permissions::from_mode(0o755))?;
    let real = tools::pg16_bin()?;
    for entry in std::fs::read_dir(&real)? {
        let entry = entry?;
        if entry.file_name() != "pg_upgrade" {
            std::os::unix::fs::symlink(entry.path(), wrapper.path().join(entry.file_name()))?;
        }
    }
    let script = wrapper.path().join("pg_upgrade");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{}/pg_upgrade \"$@\" || exit $?\n{tail}",
            real.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let map = format!("16={}", wrapper.path().display());
    Ok((wrapper, map))
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

/// After the upgrade process was killed: waits until the leader's agent has taken over and the status says
/// `outcome`, and checks that its log says `log_says`.
async fn agent_takes_over(
    cluster: &Cluster,
    leader: usize,
    outcome: &str,
    log_says: &str,
) -> anyhow::Result<()> {
    let killed = Instant::now();
    wait::until(
        BOOT,
        "the agent to settle the upgrade by itself",
        || async {
            let status = status_file(cluster, leader)?;
            Ok((status["outcome"] == outcome).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "outcome {outcome} recorded by the agent {:?} after the kill",
        killed.elapsed()
    );
    let log = std::fs::read_to_string(cluster.member(leader).dir().join("agent.log"))?;
    anyhow::ensure!(
        log.contains(log_says),
        "the agent log does not say {log_says:?}"
    );
    Ok(())
}

/// Before the point of no return, nobody has to come back: the upgrade process is SIGKILLed right after
/// pg_upgrade linked the files (the old cluster's pg_control renamed, replicas stopped, Patroni paused),
/// and the leader's watcher sees its runner gone, rolls back and resumes Patroni by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_killed_before_the_point_of_no_return_is_rolled_back_by_the_agent(
) -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let cluster = Cluster::start(spec("upgkill")?, &etcd.host())?;
    cluster.wait_ready(2, BOOT).await?;
    let leader = cluster.leader().await?;
    let sum = setup_data(&cluster, leader).await?;
    let linked = std::env::temp_dir().join(format!("pgherd-linked-{}", std::process::id()));
    let _ = std::fs::remove_file(&linked);
    let (wrapper, map) = pg16_with_pg_upgrade_then(&format!(
        "case \" $* \" in *\" --check \"*) exit 0;; esac\ntouch '{}'\nsleep 600\n",
        linked.display()
    ))?;

    let mut child = upgrade_command(&cluster, leader, &[("PGHERD_PG_BIN_DIRS", &map)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait::until(
        Duration::from_secs(120),
        "pg_upgrade to link the files",
        || async { Ok(linked.exists().then_some(())) },
    )
    .await?;
    let status = status_file(&cluster, leader)?;
    assert_eq!(status["phase"], "pg_upgrade", "{status:#}");
    child.kill()?;
    child.wait()?;
    agent_takes_over(&cluster, leader, "rolled_back", "taking over its recovery").await?;
    intact(&cluster, &sum).await?;
    drop(wrapper);
    let _ = std::fs::remove_file(&linked);
    Ok(())
}

/// After the point of no return the procedure resumes: the upgrade process is killed (SIGKILL) once the
/// new primary runs, and the leader's watcher finishes the job from the recorded phase (as a second
/// `pgherd-agent upgrade` would); a later run by the operator finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_killed_after_the_point_of_no_return_resumes() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let cluster = Cluster::start(spec("upgres")?, &etcd.host())?;
    cluster.wait_ready(2, BOOT).await?;
    let leader = cluster.leader().await?;
    let sum = setup_data(&cluster, leader).await?;

    let mut child = upgrade_command(&cluster, leader, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let killed_in = wait::until(
        Duration::from_secs(120),
        "the point of no return",
        || async {
            let phase = status_file(&cluster, leader)
                .ok()
                .and_then(|s| s["phase"].as_str().map(String::from));
            Ok(phase.filter(|p| p == "restart_replicas" || p == "resume"))
        },
    )
    .await?;
    child.kill()?;
    child.wait()?;
    eprintln!("killed the upgrade in phase {killed_in}");
    let status = status_file(&cluster, leader)?;
    assert_eq!(status["point_of_no_return_passed"], true);
    assert!(status["outcome"].is_null(), "{status:#}");

    // The leader's watcher sees the runner gone and resumes; an operator re-run meanwhile is refused.
    agent_takes_over(
        &cluster,
        leader,
        "succeeded",
        "resuming an upgrade that passed the point of no return",
    )
    .await?;
    let run = upgrade(&cluster, leader, &[])?;
    assert!(run.ok, "{}", run.output);
    assert!(
        run.output.contains("upgrade is not required"),
        "{}",
        run.output
    );
    let view = cluster.wait_ready(2, BOOT).await?;
    assert!(!view.pause);
    let versions = server_versions(&cluster).await?;
    assert!(versions.iter().all(|v| *v / 10000 == 16), "{versions:?}");
    assert_eq!(data_checksum(&cluster, cluster.leader().await?).await?, sum);
    let status = status_file(&cluster, leader)?;
    assert_eq!(status["outcome"], "succeeded");
    // One history across both runs: the pre-check of the first and the done of the second.
    let phases = status["phases"].as_array().unwrap();
    assert_eq!(phases[0]["phase"], "precheck");
    assert_eq!(phases[phases.len() - 1]["phase"], "done");
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
