//! Exporter settings from the pod environment, and the few facts read from the rendered Patroni config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// postgres_exporter's port, so existing PodMonitors and NetworkPolicies keep working.
pub const DEFAULT_PORT: u16 = 9187;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{var}={value:?}: {problem}")]
    Setting {
        var: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("custom queries {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Queries(#[from] super::queries::Error),
    #[error("listening on port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `PGHERD_METRICS_PORT` (0 disables the exporter).
    pub port: u16,
    /// `PGHERD_METRICS_CACHE_TTL` seconds: SQL results younger than this are served again (0: never).
    pub cache_ttl: Duration,
    /// `PGHERD_METRICS_QUERY_TIMEOUT` seconds per query.
    pub query_timeout: Duration,
    /// `PGHERD_METRICS_QUERIES`: a postgres_exporter query file, or a directory of `*.yaml`/`*.yml`.
    pub custom_queries: Option<PathBuf>,
    /// `PGHERD_METRICS_DEFAULT_QUERIES=false` turns the built-in set off.
    pub default_queries: bool,
    /// `PGHERD_METRICS_DATABASE`: where queries without `target_databases` run.
    pub database: String,
    /// `PGHERD_METRICS_RELOAD_INTERVAL` seconds between checks of the custom query file.
    pub reload_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            // Shorter than the usual 15–30 s scrape interval, so every scrape of one Prometheus sees fresh
            // values, while an HA pair of Prometheus servers scraping the same pod shares one collection.
            cache_ttl: Duration::from_secs(10),
            query_timeout: Duration::from_secs(5),
            custom_queries: None,
            default_queries: true,
            database: "postgres".into(),
            reload_interval: Duration::from_secs(5),
        }
    }
}

impl Settings {
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, Error> {
        let mut s = Self::default();
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(v) = get("PGHERD_METRICS_PORT") {
            s.port = v.parse().map_err(|_| Error::Setting {
                var: "PGHERD_METRICS_PORT",
                value: v.into(),
                problem: "is not a port number (0 disables the exporter)",
            })?;
        }
        let secs = |var: &'static str, allow_zero: bool| -> Result<Option<Duration>, Error> {
            let Some(v) = get(var) else { return Ok(None) };
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 && (allow_zero || x > 0.0) => {
                    Ok(Some(Duration::from_secs_f64(x)))
                }
                _ => Err(Error::Setting {
                    var,
                    value: v.into(),
                    problem: if allow_zero {
                        "is not a number of seconds (>= 0)"
                    } else {
                        "is not a positive number of seconds"
                    },
                }),
            }
        };
        if let Some(d) = secs("PGHERD_METRICS_CACHE_TTL", true)? {
            s.cache_ttl = d;
        }
        if let Some(d) = secs("PGHERD_METRICS_QUERY_TIMEOUT", false)? {
            s.query_timeout = d;
        }
        if let Some(d) = secs("PGHERD_METRICS_RELOAD_INTERVAL", false)? {
            s.reload_interval = d;
        }
        s.custom_queries = get("PGHERD_METRICS_QUERIES").map(PathBuf::from);
        if let Some(v) = get("PGHERD_METRICS_DEFAULT_QUERIES") {
            s.default_queries = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(Error::Setting {
                        var: "PGHERD_METRICS_DEFAULT_QUERIES",
                        value: v.into(),
                        problem: "is not true or false",
                    })
                }
            };
        }
        if let Some(v) = get("PGHERD_METRICS_DATABASE") {
            s.database = v.into();
        }
        Ok(s)
    }
}

/// The query files at `path` as `(name, text)`: the file itself, or a directory's `*.yaml`/`*.yml` in name
/// order (hidden entries skipped: a mounted ConfigMap keeps its `..data` machinery there).
pub fn read_query_files(path: &Path) -> Result<Vec<(String, String)>, Error> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| Error::Read {
            path: p.into(),
            source,
        })
    };
    let meta = std::fs::metadata(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![(path.display().to_string(), read(path)?)]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect()
}

/// Patroni's REST API on loopback, from the rendered config (see [`crate::local::Local::api_url`]). `None`
/// when the config cannot be read or the API uses TLS (the agent's HTTP client is built without TLS).
pub fn patroni_api(config: &Path) -> Option<String> {
    let local = crate::local::Local::load(config).ok()?;
    if local.api_url.is_none() {
        tracing::warn!("Patroni's REST API uses TLS: the pgherd_patroni_* series are not exported");
    }
    local.api_url
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::map as env;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Settings::from_env(&env(&[])).unwrap(), Settings::default());
        let s = Settings::from_env(&env(&[
            ("PGHERD_METRICS_PORT", "9999"),
            ("PGHERD_METRICS_CACHE_TTL", "0"),
            ("PGHERD_METRICS_QUERY_TIMEOUT", "2.5"),
            ("PGHERD_METRICS_QUERIES", "/etc/q.yaml"),
            ("PGHERD_METRICS_DEFAULT_QUERIES", "false"),
        ]))
        .unwrap();
        assert_eq!(s.port, 9999);
        assert!(s.cache_ttl.is_zero());
        assert_eq!(s.query_timeout, Duration::from_millis(2500));
        assert_eq!(s.custom_queries.as_deref(), Some(Path::new("/etc/q.yaml")));
        assert!(!s.default_queries);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("PGHERD_METRICS_PORT", "http"),
            ("PGHERD_METRICS_CACHE_TTL", "-1"),
            ("PGHERD_METRICS_QUERY_TIMEOUT", "0"),
            ("PGHERD_METRICS_DEFAULT_QUERIES", "maybe"),
        ] {
            let e = Settings::from_env(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{k}=")), "{e}");
        }
    }

    #[test]
    fn query_directory_skips_hidden_and_other_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.yml"), "b").unwrap();
        std::fs::write(d.path().join("a.yaml"), "a").unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(d.path().join("..data")).unwrap();
        let files = read_query_files(d.path()).unwrap();
        let texts: Vec<&str> = files.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert!(read_query_files(&d.path().join("missing")).is_err());
    }
}
