//! The agent's built-in exporter on a real 2-member cluster (etcd, Patroni 4, PostgreSQL 15, Garage S3 with
//! the native backup engine): the scrape carries the expected series with values checked against the
//! cluster itself, replication lag grows while a replica's replay is paused, archiver failures are counted
//! while S3 is down, and a malformed custom query file is rejected while the previous queries keep serving.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pgherd_tests::{wait, Cluster, ClusterSpec, Etcd, Garage, Member};

const BOOT: Duration = Duration::from_secs(120);

/// Custom queries in postgres_exporter's format: a labelled gauge, a primary-only query and one that
/// always fails (its failure must be counted without hiding anything else).
const CUSTOM_V1: &str = r#"
custom_probe:
  query: "SELECT 'x' AS tag, 42 AS answer"
  metrics:
    - tag: {usage: LABEL, description: "A label"}
    - answer: {usage: GAUGE, description: "The answer"}
primary_probe:
  primary: true
  query: "SELECT 1 AS one"
  metrics:
    - one: {usage: GAUGE}
broken_probe:
  query: "SELECT n FROM no_such_table"
  metrics:
    - n: {usage: GAUGE}
"#;

/// A parsed exposition: `(name, labels) -> value`.
struct Scrape(BTreeMap<(String, BTreeMap<String, String>), f64>, String);

impl Scrape {
    fn parse(text: String) -> Self {
        let mut map = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label=\"value\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("numeric sample value"),
            };
            map.insert((name, labels), value);
        }
        Self(map, text)
    }

    /// The value of the series `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.iter().find_map(|((n, l), v)| {
            (n == name
                && labels
                    .iter()
                    .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want)))
            .then_some(*v)
        })
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape:\n{}", self.1))
    }
}

async fn scrape(m: &Member) -> anyhow::Result<Scrape> {
    let url = format!("http://127.0.0.1:{}/metrics", m.metrics_port);
    let resp = reqwest::get(&url).await?;
    anyhow::ensure!(resp.status().is_success(), "{url}: HTTP {}", resp.status());
    let ct = resp.headers()["content-type"].to_str()?.to_string();
    anyhow::ensure!(
        ct.starts_with("application/openmetrics-text"),
        "content type {ct}"
    );
    Ok(Scrape::parse(resp.text().await?))
}

/// Scrapes until `pred` holds, returning that scrape.
async fn scrape_until(
    cluster: &Cluster,
    i: usize,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Scrape) -> bool,
) -> anyhow::Result<Scrape> {
    let m = cluster.member(i);
    wait::until(timeout, what, || async {
        let s = scrape(m).await?;
        Ok(pred(&s).then_some(s))
    })
    .await
    .map_err(|e| e.context(format!("member logs:\n{}", cluster.logs(40))))
}

fn status_json(m: &Member) -> anyhow::Result<serde_json::Value> {
    let bin = m.dir().parent().unwrap().join("bin/pgherd-agent");
    let out = std::process::Command::new(bin)
        .args(["status", "--json", "--api"])
        .arg(format!("http://127.0.0.1:{}", m.api_port))
        .arg("--metrics")
        .arg(format!("http://127.0.0.1:{}/metrics", m.metrics_port))
        .env_clear()
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn write_queries(path: &Path, text: &str) -> anyhow::Result<()> {
    // Written beside and renamed, as a ConfigMap update would appear: never half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_tracks_replication_archiving_and_custom_queries() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut garage = Garage::start().await?;
    let qdir = tempfile::tempdir()?;
    let queries = qdir.path().join("queries.yaml");
    write_queries(&queries, CUSTOM_V1)?;

    let mut spec = ClusterSpec::new("metrics", 2)?;
    spec.extra_env.extend(garage.spilo_env());
    spec.extra_env.extend(
        [
            ("BACKUP_SCHEDULE", "0 0 1 1 *".to_string()),
            ("PGHERD_METRICS_CACHE_TTL", "0".into()),
            ("PGHERD_METRICS_RELOAD_INTERVAL", "0.5".into()),
            ("PGHERD_METRICS_QUERIES", queries.display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let cluster = Cluster::start(spec, &etcd.host())?;
    let view = cluster.wait_ready(1, BOOT).await?;
    let leader = cluster.leader().await?;
    let replica = 1 - leader;
    let replica_name = cluster.member(replica).name.clone();
    let timeline = view.leader().unwrap().timeline.unwrap() as f64;

    // --- The expected series, with values checked against the cluster. -------------------------------
    let ls = scrape_until(
        &cluster,
        leader,
        Duration::from_secs(60),
        "leader metrics with a streaming replica",
        |s| {
            s.get("pgherd_up", &[]) == Some(1.0)
                && s.get("pgherd_pg_replication_streaming_replicas", &[]) == Some(1.0)
                && s.get("pgherd_patroni_cluster_members", &[]) == Some(2.0)
        },
    )
    .await?;
    let rs = scrape_until(
        &cluster,
        replica,
        Duration::from_secs(60),
        "replica metrics with a WAL receiver",
        |s| {
            s.get("pgherd_up", &[]) == Some(1.0)
                && s.get("pgherd_pg_replication_is_wal_receiver_up", &[]) == Some(1.0)
        },
    )
    .await?;
    assert_eq!(ls.must("pgherd_patroni_primary", &[]), 1.0);
    assert_eq!(rs.must("pgherd_patroni_primary", &[]), 0.0);
    assert_eq!(ls.must("pgherd_patroni_role", &[("role", "primary")]), 1.0);
    assert_eq!(rs.must("pgherd_patroni_role", &[("role", "replica")]), 1.0);
    assert_eq!(
        rs.must("pgherd_patroni_state", &[("state", "running")]),
        1.0
    );
    assert_eq!(ls.must("pgherd_patroni_timeline", &[]), timeline);
    assert_eq!(ls.must("pgherd_patroni_pending_restart", &[]), 0.0);
    assert_eq!(rs.must("pgherd_patroni_cluster_leaders", &[]), 1.0);
    assert_eq!(ls.must("pgherd_pg_replication_in_recovery", &[]), 0.0);
    assert_eq!(rs.must("pgherd_pg_replication_in_recovery", &[]), 1.0);
    assert_eq!(rs.must("pgherd_pg_replication_replay_paused", &[]), 0.0);
    assert!(
        ls.must(
            "pgherd_pg_stat_replication_replay_diff_bytes",
            &[("application_name", &replica_name)]
        ) >= 0.0
    );
    let slot = replica_name.replace('-', "_");
    assert_eq!(
        ls.must(
            "pgherd_pg_replication_slots_active",
            &[("slot_name", &slot), ("slot_type", "physical")]
        ),
        1.0
    );
    let c = cluster.member(leader).connect("postgres").await?;
    let size: i64 = c
        .query_one("SELECT pg_database_size('postgres')", &[])
        .await?
        .get(0);
    let scraped = ls.must("pgherd_pg_database_size_bytes", &[("datname", "postgres")]);
    assert!(
        (scraped - size as f64).abs() < 1e6,
        "database size {scraped} vs {size}"
    );
    let xid_age = ls.must("pgherd_pg_database_xid_age", &[("datname", "postgres")]);
    assert!(
        xid_age > 0.0 && xid_age < 2f64.powi(31),
        "xid age {xid_age}"
    );
    assert_eq!(
        ls.must("pgherd_pg_settings_setting", &[("name", "max_connections")]),
        40.0,
        "the harness sets 40"
    );
    assert_eq!(
        ls.must(
            "pgherd_pg_extensions_update_available",
            &[("datname", "postgres"), ("extname", "plpgsql")]
        ),
        0.0
    );
    assert!(
        ls.must(
            "pgherd_backends_total",
            &[
                ("application_name", "pgherd_metrics_exporter"),
                ("state", "active")
            ]
        ) >= 1.0
    );
    assert!(
        ls.must(
            "pgherd_pg_stat_database_xact_commit_total",
            &[("datname", "postgres")]
        ) > 0.0
    );
    assert!(
        ls.must("pgherd_pg_stat_bgwriter_buffers_alloc_total", &[]) > 0.0,
        "PG15: pre-17 bgwriter variant"
    );
    assert!(
        ls.get("pgherd_pg_stat_checkpointer_checkpoints_timed_total", &[])
            .is_none(),
        "PG17 view not queried on 15"
    );
    let (size, used) = (
        ls.must("pgherd_volume_size_bytes", &[("volume", "data")]),
        ls.must("pgherd_volume_used_bytes", &[("volume", "wal")]),
    );
    assert!(
        size > 0.0 && used > 0.0 && used <= size,
        "volume {used}/{size}"
    );
    assert_eq!(ls.must("pgherd_agent_build_info", &[]), 1.0);
    assert!(ls.must("process_resident_memory_bytes", &[]) > 1e6);
    assert_eq!(ls.must("pgherd_backup_failed_total", &[]), 0.0);
    // Custom queries: labels, primary-only, and a failing query that is counted and hides nothing.
    assert_eq!(ls.must("custom_probe_answer", &[("tag", "x")]), 42.0);
    assert_eq!(rs.must("custom_probe_answer", &[("tag", "x")]), 42.0);
    assert_eq!(ls.must("primary_probe_one", &[]), 1.0);
    assert!(
        rs.get("primary_probe_one", &[]).is_none(),
        "primary-only query ran on the replica"
    );
    assert!(
        ls.must(
            "pgherd_exporter_query_errors_total",
            &[("query", "broken_probe")]
        ) >= 1.0
    );
    assert!(ls
        .get(
            "pgherd_exporter_query_errors_total",
            &[("query", "pg_database")]
        )
        .is_none());
    assert_eq!(ls.must("pgherd_exporter_custom_queries", &[]), 3.0);
    assert_eq!(ls.must("pgherd_exporter_custom_queries_valid", &[]), 1.0);

    // --- Lag grows while the replica's replay is paused. ---------------------------------------------
    // Patroni resumes a paused replay within a loop; its maintenance mode keeps it hands-off meanwhile.
    cluster
        .member(leader)
        .patroni()
        .patch_config(&serde_json::json!({"pause": true}))
        .await?;
    scrape_until(
        &cluster,
        replica,
        Duration::from_secs(30),
        "maintenance mode",
        |s| s.get("pgherd_patroni_cluster_paused", &[]) == Some(1.0),
    )
    .await?;
    let rc = cluster.member(replica).connect("postgres").await?;
    rc.batch_execute("SELECT pg_wal_replay_pause()").await?;
    c.batch_execute("CREATE TABLE IF NOT EXISTS lag_probe (id serial PRIMARY KEY, at timestamptz DEFAULT now())").await?;
    let write = || async {
        for _ in 0..20 {
            c.batch_execute("INSERT INTO lag_probe DEFAULT VALUES")
                .await?;
        }
        anyhow::Ok(())
    };
    write().await?;
    let first = scrape_until(
        &cluster,
        replica,
        Duration::from_secs(30),
        "replay paused with WAL waiting",
        |s| {
            s.get("pgherd_pg_replication_replay_paused", &[]) == Some(1.0)
                && s.get("pgherd_pg_replication_replay_lag_bytes", &[])
                    .is_some_and(|b| b > 0.0)
                && s.get("pgherd_pg_replication_lag", &[])
                    .is_some_and(|l| l > 0.0)
        },
    )
    .await?;
    let (lag1, bytes1) = (
        first.must("pgherd_pg_replication_lag", &[]),
        first.must("pgherd_pg_replication_replay_lag_bytes", &[]),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    write().await?;
    let second = scrape_until(
        &cluster,
        replica,
        Duration::from_secs(30),
        "more received-but-unreplayed WAL",
        |s| {
            s.get("pgherd_pg_replication_replay_lag_bytes", &[])
                .is_some_and(|b| b > bytes1)
        },
    )
    .await?;
    let lag2 = second.must("pgherd_pg_replication_lag", &[]);
    assert!(
        lag2 >= lag1 + 2.5,
        "lag must grow with wall time while paused: {lag1} then {lag2}"
    );
    let ls = scrape(cluster.member(leader)).await?;
    assert!(
        ls.must(
            "pgherd_pg_stat_replication_replay_diff_bytes",
            &[("application_name", &replica_name)]
        ) > 0.0
    );
    rc.batch_execute("SELECT pg_wal_replay_resume()").await?;
    cluster
        .member(leader)
        .patroni()
        .patch_config(&serde_json::json!({"pause": false}))
        .await?;
    scrape_until(
        &cluster,
        replica,
        Duration::from_secs(30),
        "lag back to 0 after resume",
        |s| {
            s.get("pgherd_pg_replication_lag", &[]) == Some(0.0)
                && s.get("pgherd_pg_replication_replay_paused", &[]) == Some(0.0)
        },
    )
    .await?;

    // --- Archiver failures are counted while S3 is down. ---------------------------------------------
    c.batch_execute("INSERT INTO lag_probe DEFAULT VALUES; SELECT pg_switch_wal()")
        .await?;
    let before = scrape_until(
        &cluster,
        leader,
        Duration::from_secs(60),
        "WAL archived to S3",
        |s| {
            s.get("pgherd_pg_stat_archiver_archived_count_total", &[])
                .is_some_and(|n| n >= 1.0)
                && s.get("pgherd_pg_wal_archive_status_ready", &[]) == Some(0.0)
        },
    )
    .await?;
    let failed0 = before.must("pgherd_pg_stat_archiver_failed_count_total", &[]);
    assert_eq!(
        status_json(cluster.member(leader))?["archive"]["health"],
        if failed0 > 0.0 { "failing" } else { "healthy" }
    );
    garage.pause();
    c.batch_execute("INSERT INTO lag_probe DEFAULT VALUES; SELECT pg_switch_wal()")
        .await?;
    let down = scrape_until(
        &cluster,
        leader,
        Duration::from_secs(120),
        "archive failures counted",
        |s| {
            s.get("pgherd_pg_stat_archiver_failed_count_total", &[])
                .is_some_and(|n| n >= failed0 + 2.0)
        },
    )
    .await?;
    assert!(
        down.must("pgherd_pg_wal_archive_status_ready", &[]) >= 1.0,
        "the segment waits"
    );
    assert!(
        down.must("pgherd_pg_stat_archiver_last_failed_time", &[])
            > down.must("pgherd_pg_stat_archiver_last_archived_time", &[])
    );
    let status = status_json(cluster.member(leader))?;
    assert_eq!(status["archive"]["health"], "failing", "{status}");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let age1 = down.must("pgherd_pg_stat_archiver_seconds_since_last_archival", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = scrape(cluster.member(leader)).await?;
    let age2 = later.must("pgherd_pg_stat_archiver_seconds_since_last_archival", &[]);
    assert!(
        age2 >= age1 + 1.5,
        "archive age grows while S3 is down: {age1} then {age2}"
    );
    let archived_down = down.must("pgherd_pg_stat_archiver_archived_count_total", &[]);
    assert_eq!(
        later.must("pgherd_pg_stat_archiver_archived_count_total", &[]),
        archived_down,
        "nothing archived while S3 is down"
    );
    assert!(
        later.must("pgherd_pg_stat_archiver_failed_count_total", &[])
            >= down.must("pgherd_pg_stat_archiver_failed_count_total", &[])
    );
    garage.resume().await?;
    scrape_until(
        &cluster,
        leader,
        Duration::from_secs(120),
        "archiving to recover",
        |s| {
            s.get("pgherd_pg_stat_archiver_archived_count_total", &[])
                .is_some_and(|n| n > archived_down)
                && s.get("pgherd_pg_wal_archive_status_ready", &[]) == Some(0.0)
        },
    )
    .await?;
    assert_eq!(
        status_json(cluster.member(leader))?["archive"]["health"],
        "healthy"
    );

    // --- A malformed custom query file is rejected; the previous queries keep serving. ---------------
    write_queries(
        &queries,
        &CUSTOM_V1.replace("usage: GAUGE, description: \"The answer\"", "usage: GAUGES"),
    )?;
    let bad = scrape_until(
        &cluster,
        leader,
        Duration::from_secs(30),
        "the malformed file to be rejected",
        |s| s.get("pgherd_exporter_custom_queries_valid", &[]) == Some(0.0),
    )
    .await?;
    assert_eq!(
        bad.must("custom_probe_answer", &[("tag", "x")]),
        42.0,
        "previous queries keep serving"
    );
    assert!(bad.must("pgherd_exporter_custom_queries_reload_failures_total", &[]) >= 1.0);
    assert_eq!(bad.must("pgherd_up", &[]), 1.0);
    let log = cluster.member(leader).log_tail(400);
    assert!(
        log.contains("custom queries rejected") && log.contains("unknown usage \\\"GAUGES\\\"")
            || log.contains("unknown usage \"GAUGES\""),
        "the log names the problem:\n{log}"
    );
    write_queries(&queries, &CUSTOM_V1.replace("42 AS answer", "43 AS answer"))?;
    scrape_until(
        &cluster,
        leader,
        Duration::from_secs(30),
        "the fixed file to be loaded",
        |s| {
            s.get("pgherd_exporter_custom_queries_valid", &[]) == Some(1.0)
                && s.get("custom_probe_answer", &[("tag", "x")]) == Some(43.0)
        },
    )
    .await?;
    Ok(())
}
