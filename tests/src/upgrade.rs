//! Shared steps of the in-place upgrade tests (`tests/upgrade.rs`, `tests/upgrade_kills.rs`): a 3-member
//! PostgreSQL 15 cluster prepared for 16 (the `pgserver` wheel), the operator's `pgherd-agent upgrade`
//! command line, the data whose checksum must survive, and what "healthy on one major" means.
//!
//! The 16 build has neither SSL nor contrib, so these clusters run with ssl=off, a pg_hba without hostssl
//! lines and no preloaded pg_stat_statements; that is what the pre-checks require for this target.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{tools, wait, Cluster, ClusterSpec};

pub const BOOT: Duration = Duration::from_secs(180);

pub fn spec(scope: &str) -> anyhow::Result<ClusterSpec> {
    spec_of(scope, 3)
}

pub fn spec_of(scope: &str, members: usize) -> anyhow::Result<ClusterSpec> {
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

pub struct Run {
    pub ok: bool,
    pub last_line: String,
    pub output: String,
    pub took: Duration,
}

/// `pgherd-agent upgrade --members 3` with the leader's environment plus the operator's new PGVERSION, as
/// `kubectl exec` in a rotated pod would.
pub fn upgrade_command(cluster: &Cluster, leader: usize, overrides: &[(&str, &str)]) -> Command {
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
pub fn upgrade(
    cluster: &Cluster,
    leader: usize,
    overrides: &[(&str, &str)],
) -> anyhow::Result<Run> {
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

pub async fn data_checksum(cluster: &Cluster, i: usize) -> anyhow::Result<String> {
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
pub async fn runs_16_with(cluster: &Cluster, sum: &str, why: &str) -> anyhow::Result<usize> {
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

pub async fn server_versions(cluster: &Cluster) -> anyhow::Result<Vec<i32>> {
    let mut out = Vec::new();
    for m in cluster.members() {
        let c = m.connect("postgres").await?;
        let v: String = c.query_one("SHOW server_version_num", &[]).await?.get(0);
        out.push(v.parse()?);
    }
    Ok(out)
}

pub fn status_file(cluster: &Cluster, i: usize) -> anyhow::Result<Value> {
    let path = cluster.member(i).dir().join("run/pgherd/upgrade.json");
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

pub async fn setup_data(cluster: &Cluster, leader: usize) -> anyhow::Result<String> {
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
pub async fn intact(cluster: &Cluster, sum: &str) -> anyhow::Result<()> {
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

/// The 16 installation with `program` replaced by a shell script (`body`, which finds the real program in
/// `$REAL`): the way to inject what happens inside pg_upgrade. Returns the directory (keep it alive) and
/// its PGHERD_PG_BIN_DIRS mapping.
pub fn pg16_wrapping(program: &str, body: &str) -> anyhow::Result<(tempfile::TempDir, String)> {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = tempfile::Builder::new().prefix("pg16-wrapped-").tempdir()?;
    std::fs::set_permissions(wrapper.path(), std::fs::Permissions::from_mode(0o755))?;
    let real = tools::pg16_bin()?;
    for entry in std::fs::read_dir(&real)? {
        let entry = entry?;
        if entry.file_name() != program {
            std::os::unix::fs::symlink(entry.path(), wrapper.path().join(entry.file_name()))?;
        }
    }
    let script = wrapper.path().join(program);
    std::fs::write(
        &script,
        format!("#!/bin/sh\nREAL='{}'\n{body}", real.join(program).display()),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let map = format!("16={}", wrapper.path().display());
    Ok((wrapper, map))
}

/// [`pg16_wrapping`] of a `pg_upgrade` that runs the real one and then `tail`: what happens after the link
/// phase.
pub fn pg16_with_pg_upgrade_then(tail: &str) -> anyhow::Result<(tempfile::TempDir, String)> {
    pg16_wrapping(
        "pg_upgrade",
        &format!("\"$REAL\" \"$@\" || exit $?\n{tail}"),
    )
}
