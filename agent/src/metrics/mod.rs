//! The built-in Prometheus exporter of `pgherd-agent run` (`GET /metrics` on `PGHERD_METRICS_PORT`, 9187).
//!
//! Zalando's operator never shipped metrics; users bolted a postgres_exporter sidecar onto every manifest.
//! Here the agent exports Postgres statistics (a built-in query set modelled on CloudNativePG's, plus the
//! user's postgres_exporter-format query file, reloaded on change), Patroni's view, backup progress from
//! the native engine, volume usage and its own cost, from one registry (prometheus-client).
//!
//! Nothing in here can stop `run`: a bad setting, a busy port or a broken query file is logged and the
//! supervisor carries on. See docs/metrics.md for every series and setting.

pub mod backup;
mod collect;
mod encode;
mod families;
mod node;
pub mod queries;
mod server;
mod settings;
pub mod version;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use backup::{backup, BackupMetrics};
pub use collect::{Target, MONITOR_ROLE};
pub use server::{main as standalone_main, StandaloneArgs};
pub use settings::{patroni_api, Error, Settings, DEFAULT_PORT};

use encode::Published;
use families::Families;
use queries::QuerySet;

/// The built-in query set (postgres_exporter format, `pgherd_` prefix).
pub const DEFAULT_QUERIES: &str = include_str!("default_queries.yaml");

/// Parses the built-in set. Part of the test suite, so this cannot fail at run time.
pub fn default_queries() -> QuerySet {
    queries::parse(DEFAULT_QUERIES, "built-in queries", "pgherd_")
        .expect("the built-in query set is validated by the unit tests")
}

type QueryLabel = Vec<(String, String)>;

/// Exporter self-observation (prometheus-client's own metric types).
#[derive(Default)]
struct Stats {
    up: Gauge,
    query_errors: Family<QueryLabel, Counter>,
    query_duration: Family<QueryLabel, Gauge<f64, AtomicU64>>,
    collections: Counter,
    cache_hits: Counter,
    collection_duration: Gauge<f64, AtomicU64>,
    custom_queries: Gauge,
    custom_valid: Gauge,
    custom_reload_failures: Counter,
}

struct EngineState {
    engine: collect::Engine,
    last: Option<Instant>,
    /// Last error per query, so a persistent failure is logged once, not at every collection.
    failing: HashMap<String, String>,
    down: Option<String>,
}

/// Everything the HTTP handler needs; shared by the server and the reload task.
pub struct Exporter {
    settings: Settings,
    registry: Registry,
    stats: Arc<Stats>,
    engine: tokio::sync::Mutex<EngineState>,
    active: RwLock<Arc<QuerySet>>,
    defaults: QuerySet,
    query_families: Published,
    live: Published,
    patroni: Option<pgherd_shared::patroni::Client>,
    data_dir: Option<PathBuf>,
    started: SystemTime,
    /// Text of the custom query files last looked at (accepted or not), to notice changes.
    custom_seen: Mutex<Option<String>>,
}

impl Exporter {
    pub fn new(
        settings: Settings,
        target: Target,
        patroni: Option<pgherd_shared::patroni::Client>,
        data_dir: Option<PathBuf>,
        backups: BackupMetrics,
    ) -> Arc<Self> {
        let stats = Arc::new(Stats::default());
        let mut registry = Registry::default();
        let s = &stats;
        registry.register(
            "pgherd_up",
            "1 when Postgres answered the last collection as the monitoring role",
            s.up.clone(),
        );
        registry.register(
            "pgherd_exporter_query_errors",
            "Failed query executions (and result conversion problems) by query",
            s.query_errors.clone(),
        );
        registry.register(
            "pgherd_exporter_query_duration_seconds",
            "Duration of each query in the last collection, summed over databases",
            s.query_duration.clone(),
        );
        registry.register(
            "pgherd_exporter_collections",
            "Query collections run (scrapes served from the cache excluded)",
            s.collections.clone(),
        );
        registry.register(
            "pgherd_exporter_cache_hits",
            "Scrapes answered from the query cache (PGHERD_METRICS_CACHE_TTL)",
            s.cache_hits.clone(),
        );
        registry.register(
            "pgherd_exporter_collection_duration_seconds",
            "Duration of the last query collection",
            s.collection_duration.clone(),
        );
        registry.register(
            "pgherd_exporter_custom_queries",
            "Custom queries currently in use",
            s.custom_queries.clone(),
        );
        registry.register("pgherd_exporter_custom_queries_valid", "1 when the custom query file last read was accepted; 0 while a rejected file is ignored", s.custom_valid.clone());
        registry.register(
            "pgherd_exporter_custom_queries_reload_failures",
            "Custom query files rejected",
            s.custom_reload_failures.clone(),
        );
        let query_families = Published::default();
        let live = Published::default();
        registry.register_collector(Box::new(query_families.clone()));
        registry.register_collector(Box::new(live.clone()));
        registry.register_collector(Box::new(backups));
        let defaults = if settings.default_queries {
            default_queries()
        } else {
            QuerySet::default()
        };
        stats.custom_valid.set(1);
        Arc::new(Self {
            registry,
            stats,
            engine: tokio::sync::Mutex::new(EngineState {
                engine: collect::Engine::new(target),
                last: None,
                failing: HashMap::new(),
                down: None,
            }),
            active: RwLock::new(Arc::new(defaults.clone())),
            defaults,
            query_families,
            live,
            patroni,
            data_dir,
            started: SystemTime::now(),
            custom_seen: Mutex::new(None),
            settings,
        })
    }

    /// One scrape: refresh the SQL series unless the cache is fresh, read the live series, encode.
    pub async fn scrape(&self) -> String {
        self.refresh_queries().await;
        let mut live = Families::default();
        if let Some(p) = &self.patroni {
            node::patroni(p, &mut live).await;
        }
        if let Some(d) = &self.data_dir {
            node::volumes(d, &mut live);
        }
        node::process(self.started, &mut live);
        self.live.replace(live);
        let mut out = String::with_capacity(64 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    async fn refresh_queries(&self) {
        let mut st = self.engine.lock().await;
        let ttl = self.settings.cache_ttl;
        if st
            .last
            .is_some_and(|at| !ttl.is_zero() && at.elapsed() < ttl)
        {
            self.stats.cache_hits.inc();
            return;
        }
        let set = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let started = Instant::now();
        let out = st.engine.collect(&set).await;
        st.last = Some(Instant::now());
        self.stats.collections.inc();
        self.stats
            .collection_duration
            .set(started.elapsed().as_secs_f64());
        self.stats.up.set(out.up as i64);
        if out.down_reason != st.down {
            match &out.down_reason {
                Some(r) => tracing::warn!("metrics: Postgres not reachable as {MONITOR_ROLE}: {r}"),
                None => tracing::info!("metrics: Postgres reachable as {MONITOR_ROLE}"),
            }
            st.down = out.down_reason.clone();
        }
        let mut failing = HashMap::new();
        for (query, message) in out.errors {
            self.stats
                .query_errors
                .get_or_create(&vec![("query".into(), query.clone())])
                .inc();
            if st.failing.get(&query) != Some(&message) {
                tracing::warn!(
                    query,
                    "metrics: query failed (counted, other series unaffected): {message}"
                );
            }
            failing.insert(query, message);
        }
        for query in st.failing.keys().filter(|q| !failing.contains_key(*q)) {
            if out.up {
                tracing::info!(query, "metrics: query succeeds again");
            }
        }
        st.failing = failing;
        for (query, secs) in out.durations {
            self.stats
                .query_duration
                .get_or_create(&vec![("query".into(), query)])
                .set(secs);
        }
        self.query_families.replace(out.families);
    }

    /// Reads the custom query file(s) and, when their text changed, validates and activates them. A
    /// rejected file leaves the previous queries serving. Returns whether a new set was activated.
    pub async fn reload_custom(&self) -> bool {
        let Some(path) = &self.settings.custom_queries else {
            return false;
        };
        let text = settings::read_query_files(path);
        let fingerprint = match &text {
            Ok(files) => files.iter().map(|(n, t)| format!("{n}\0{t}\0")).collect(),
            Err(e) => e.to_string(),
        };
        {
            let mut seen = self.custom_seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.as_deref() == Some(fingerprint.as_str()) {
                return false;
            }
            *seen = Some(fingerprint);
        }
        let parsed = text.and_then(|files| {
            let mut all = self.defaults.clone();
            let mut custom = 0;
            for (name, body) in files {
                let set = queries::parse(&body, &name, "")?;
                custom += set.queries.len();
                all.merge(set, &name)?;
            }
            Ok((all, custom))
        });
        match parsed {
            Ok((set, custom)) => {
                *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                self.stats.custom_queries.set(custom as i64);
                self.stats.custom_valid.set(1);
                self.engine.lock().await.last = None;
                tracing::info!(path = %path.display(), queries = custom, "metrics: custom queries loaded");
                true
            }
            Err(e) => {
                self.stats.custom_valid.set(0);
                self.stats.custom_reload_failures.inc();
                tracing::error!(
                    "metrics: custom queries rejected, the previous set keeps serving: {e}"
                );
                false
            }
        }
    }

    /// Polls the custom query path. Polling (not inotify) because Kubernetes updates a mounted ConfigMap by
    /// swapping a symlink, which file watches on the old target miss; reading a few KiB every few seconds
    /// costs nothing.
    async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.reload_interval).await;
            self.reload_custom().await;
        }
    }
}

/// Starts the exporter on the current tokio runtime for `pgherd-agent run`. Never fails the caller: every
/// problem is logged, and the supervisor runs on without metrics.
pub fn spawn(env: &BTreeMap<String, String>, patroni_config: &Path, local: &crate::local::Local) {
    let settings = match Settings::from_env(env) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("metrics exporter disabled: {e}");
            return;
        }
    };
    if settings.port == 0 {
        tracing::info!("metrics exporter disabled (PGHERD_METRICS_PORT=0)");
        return;
    }
    let target = Target {
        socket_dirs: local.socket_dirs.clone(),
        port: local.port,
        superuser: local.superuser.clone(),
        database: settings.database.clone(),
        query_timeout: settings.query_timeout,
    };
    let patroni = settings::patroni_api(patroni_config).map(pgherd_shared::patroni::Client::new);
    let exporter = Exporter::new(
        settings,
        target,
        patroni,
        Some(local.data_dir.clone()),
        backup(),
    );
    if let Err(e) = server::start(exporter) {
        tracing::error!("metrics exporter not started: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_set_parses_and_covers_the_cloudnative_pg_defaults() {
        let set = default_queries();
        let names: Vec<&str> = set.metric_names().map(|(m, _)| m).collect();
        for expected in [
            "pgherd_backends_total",
            "pgherd_backends_max_tx_duration_seconds",
            "pgherd_backends_waiting_total",
            "pgherd_pg_database_size_bytes",
            "pgherd_pg_database_xid_age",
            "pgherd_pg_database_mxid_age",
            "pgherd_pg_replication_lag",
            "pgherd_pg_replication_in_recovery",
            "pgherd_pg_replication_is_wal_receiver_up",
            "pgherd_pg_replication_streaming_replicas",
            "pgherd_pg_replication_slots_pg_wal_lsn_diff",
            "pgherd_pg_stat_archiver_failed_count",
            "pgherd_pg_stat_bgwriter_buffers_clean",
            "pgherd_pg_stat_checkpointer_checkpoints_timed",
            "pgherd_pg_stat_database_xact_commit",
            "pgherd_pg_stat_replication_replay_diff_bytes",
            "pgherd_pg_settings_setting",
            "pgherd_pg_extensions_update_available",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
        let bgwriter: Vec<_> = set
            .queries
            .iter()
            .filter(|q| q.name.starts_with("pg_stat_bgwriter"))
            .collect();
        assert_eq!(bgwriter.len(), 2);
        let v16 = (16, 0, 0);
        let v17 = (17, 0, 0);
        let runs = |v| {
            bgwriter
                .iter()
                .filter(|q| q.server_versions.as_ref().unwrap().matches(v))
                .count()
        };
        assert_eq!(
            (runs(v16), runs(v17)),
            (1, 1),
            "exactly one variant per version"
        );
    }
}
