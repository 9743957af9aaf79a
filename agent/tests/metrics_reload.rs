//! Custom query reloading at the exporter level, without a server: a valid file is activated, a malformed
//! one is rejected (counted once, not at every poll) while the previous set stays active, and a fixed file
//! is picked up again. The scrape still answers while Postgres is unreachable (`pgherd_up 0`).

use std::time::Duration;

use pgherd_agent::metrics::{BackupMetrics, Exporter, Settings, Target};

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn bad_files_are_rejected_and_the_previous_set_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.yaml");
    let settings = Settings {
        custom_queries: Some(file.clone()),
        ..Settings::default()
    };
    let target = Target {
        socket_dirs: vec![dir.path().join("no-server")],
        port: 1,
        superuser: "postgres".into(),
        database: "postgres".into(),
        query_timeout: Duration::from_secs(1),
    };
    let ex = Exporter::new(settings, target, None, None, BackupMetrics::default());

    std::fs::write(
        &file,
        "q:\n  query: SELECT 1 AS x\n  metrics: [{x: {usage: GAUGE}}]\n",
    )
    .unwrap();
    assert!(ex.reload_custom().await, "a valid file is activated");
    assert!(
        !ex.reload_custom().await,
        "an unchanged file is not reloaded"
    );
    let s = ex.scrape().await;
    assert_eq!(
        value(&s, "pgherd_exporter_custom_queries"),
        Some(1.0),
        "{s}"
    );
    assert_eq!(value(&s, "pgherd_exporter_custom_queries_valid"), Some(1.0));
    assert_eq!(
        value(&s, "pgherd_up"),
        Some(0.0),
        "no server: up is 0 and the scrape still answers"
    );
    assert!(s.ends_with("# EOF\n"));

    std::fs::write(
        &file,
        "q:\n  query: SELECT 1 AS x\n  metrics: [{x: {usage: GAUGES}}]\n",
    )
    .unwrap();
    assert!(!ex.reload_custom().await, "a malformed file is rejected");
    assert!(!ex.reload_custom().await);
    let s = ex.scrape().await;
    assert_eq!(value(&s, "pgherd_exporter_custom_queries_valid"), Some(0.0));
    assert_eq!(
        value(&s, "pgherd_exporter_custom_queries_reload_failures_total"),
        Some(1.0),
        "counted once"
    );
    assert_eq!(
        value(&s, "pgherd_exporter_custom_queries"),
        Some(1.0),
        "the previous set is still active"
    );

    std::fs::remove_file(&file).unwrap();
    assert!(!ex.reload_custom().await, "a missing file is an error too");
    std::fs::write(
        &file,
        "q:\n  query: SELECT 1 AS x\n  metrics: [{x: {usage: GAUGE}}]\nr:\n  query: SELECT 2 AS y\n  metrics: [{y: {usage: COUNTER}}]\n",
    )
    .unwrap();
    assert!(ex.reload_custom().await, "a fixed file is activated");
    let s = ex.scrape().await;
    assert_eq!(value(&s, "pgherd_exporter_custom_queries"), Some(2.0));
    assert_eq!(value(&s, "pgherd_exporter_custom_queries_valid"), Some(1.0));
}
