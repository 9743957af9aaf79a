//! Query files in postgres_exporter's YAML format (the `queries.yaml` users already keep for their sidecars),
//! with CloudNativePG's additions (`primary`, `target_databases`, `predicate_query`, `name`).
//!
//! Parsing is strict: an unknown key, a usage that does not exist or two queries producing the same metric
//! name reject the whole file, because a silently ignored typo (`primray: true`) is a monitoring gap nobody
//! notices. The caller keeps serving the previous set when a reload is rejected.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::version::VersionRange;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source_name}: not valid query YAML: {message}")]
    Yaml {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: query {query:?}: {problem}")]
    Query {
        source_name: String,
        query: String,
        problem: String,
    },
    #[error(
        "{source_name}: metric {metric:?} is produced by both query {first:?} and query {second:?}"
    )]
    Duplicate {
        source_name: String,
        metric: String,
        first: String,
        second: String,
    },
}

/// How a result column is exported (postgres_exporter's `usage`).
#[derive(Debug, Clone, PartialEq)]
pub enum Usage {
    Label,
    Counter,
    Gauge,
    /// A text column mapped to numbers through `metric_mapping`.
    Mapped(BTreeMap<String, f64>),
    /// Milliseconds; exported as `<name>_milliseconds`, as postgres_exporter does.
    Duration,
    /// `<col>` holds the bucket upper bounds, `<col>_bucket` the cumulative counts, `<col>_sum`, `<col>_count`.
    Histogram,
    Discard,
}

/// One result column and how it is exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub column: String,
    /// Exported family name (prefix, query name and column already joined); the label name for LABEL.
    pub metric: String,
    pub usage: Usage,
    pub help: String,
    /// postgres_exporter's per-column `pg_version`: the column is discarded on other servers.
    pub server_versions: Option<VersionRange>,
}

/// One validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The key in the file; used in error counters and logs.
    pub name: String,
    pub sql: String,
    pub primary_only: bool,
    pub server_versions: Option<VersionRange>,
    /// Shell patterns of databases to run in; empty means the exporter's default database.
    pub target_databases: Vec<String>,
    pub predicate: Option<String>,
    pub columns: Vec<Column>,
}

impl Query {
    pub fn label_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.usage == Usage::Label)
    }
}

/// An ordered, validated set of queries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySet {
    pub queries: Vec<Query>,
}

impl QuerySet {
    /// Every exported family name with the query producing it, for collision checks between sets.
    pub fn metric_names(&self) -> impl Iterator<Item = (&str, &Query)> {
        self.queries.iter().flat_map(|q| {
            q.columns
                .iter()
                .filter(|c| !matches!(c.usage, Usage::Label | Usage::Discard))
                .map(move |c| (c.metric.as_str(), q))
        })
    }

    /// Appends `other`, refusing metric names that already exist. Two queries may share a name only when
    /// both are gated by `runonserver` (the version-specific variants of one view, such as
    /// pg_stat_bgwriter before and after PostgreSQL 17).
    pub fn merge(&mut self, other: QuerySet, source_name: &str) -> Result<(), Error> {
        let mut seen: BTreeMap<String, (String, bool)> = self
            .metric_names()
            .map(|(m, q)| (m.to_string(), (q.name.clone(), q.server_versions.is_some())))
            .collect();
        for (metric, query) in other.metric_names() {
            let versioned = query.server_versions.is_some();
            if let Some((first, first_versioned)) =
                seen.insert(metric.to_string(), (query.name.clone(), versioned))
            {
                if versioned && first_versioned {
                    continue;
                }
                return Err(Error::Duplicate {
                    source_name: source_name.into(),
                    metric: metric.into(),
                    first,
                    second: query.name.clone(),
                });
            }
        }
        self.queries.extend(other.queries);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    query: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    primary: Option<bool>,
    /// postgres_exporter's spelling of `primary`.
    #[serde(default)]
    master: Option<bool>,
    /// postgres_exporter's per-query cache; pgherd caches every query for PGHERD_METRICS_CACHE_TTL instead.
    #[serde(default)]
    #[allow(dead_code)]
    cache_seconds: Option<u64>,
    #[serde(default)]
    runonserver: Option<String>,
    #[serde(default)]
    target_databases: Option<StringOrList>,
    #[serde(default)]
    predicate_query: Option<String>,
    metrics: Vec<BTreeMap<String, RawColumn>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    usage: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, alias = "metrics_mapping")]
    metric_mapping: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pg_version: Option<String>,
}

/// Parses and validates a query file. `prefix` goes in front of every family name (`pgherd_` for the
/// built-in set, empty for user files so that postgres_exporter dashboards keep their series names).
pub fn parse(text: &str, source_name: &str, prefix: &str) -> Result<QuerySet, Error> {
    let raw: Option<BTreeMap<String, RawQuery>> =
        serde_yaml_ng::from_str(text).map_err(|e| Error::Yaml {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
    let mut set = QuerySet::default();
    // Keep file order stable regardless of map order: sorted by key, as postgres_exporter effectively does.
    for (key, q) in raw.unwrap_or_default() {
        let one = validate(&key, q, prefix).map_err(|problem| Error::Query {
            source_name: source_name.into(),
            query: key.clone(),
            problem,
        })?;
        set.merge(QuerySet { queries: vec![one] }, source_name)?;
    }
    Ok(set)
}

fn validate(key: &str, q: RawQuery, prefix: &str) -> Result<Query, String> {
    let base = q.name.unwrap_or_else(|| key.to_string());
    check_name(&base)?;
    if q.query.trim().is_empty() {
        return Err("query is empty".into());
    }
    if q.metrics.is_empty() {
        return Err("metrics is empty".into());
    }
    let server_versions = q
        .runonserver
        .as_deref()
        .map(|r| VersionRange::parse(r).map_err(|e| format!("runonserver: {e}")))
        .transpose()?;
    let target_databases = match q.target_databases {
        None => Vec::new(),
        Some(StringOrList::One(s)) => vec![s],
        Some(StringOrList::Many(v)) => v,
    };
    let mut columns = Vec::new();
    for entry in q.metrics {
        let mut it = entry.into_iter();
        let (Some((column, raw)), None) = (it.next(), it.next()) else {
            return Err("each metrics entry must be a map with exactly one column name".into());
        };
        columns.push(validate_column(prefix, &base, column, raw)?);
    }
    if !columns
        .iter()
        .any(|c| !matches!(c.usage, Usage::Label | Usage::Discard))
    {
        return Err("no column has a metric usage (COUNTER, GAUGE, …)".into());
    }
    Ok(Query {
        name: key.to_string(),
        sql: q.query,
        primary_only: q.primary.or(q.master).unwrap_or(false),
        server_versions,
        target_databases,
        predicate: q.predicate_query.filter(|p| !p.trim().is_empty()),
        columns,
    })
}

fn validate_column(
    prefix: &str,
    base: &str,
    column: String,
    raw: RawColumn,
) -> Result<Column, String> {
    let usage = match raw.usage.to_ascii_uppercase().as_str() {
        "LABEL" => Usage::Label,
        "COUNTER" => Usage::Counter,
        "GAUGE" => Usage::Gauge,
        "DURATION" => Usage::Duration,
        "HISTOGRAM" => Usage::Histogram,
        "DISCARD" => Usage::Discard,
        "MAPPEDMETRIC" => Usage::Mapped(raw.metric_mapping.clone().ok_or_else(|| {
            format!("column {column:?}: MAPPEDMETRIC needs metric_mapping")
        })?),
        other => {
            return Err(format!(
                "column {column:?}: unknown usage {other:?} (LABEL, COUNTER, GAUGE, MAPPEDMETRIC, DURATION, HISTOGRAM, DISCARD)"
            ))
        }
    };
    let leaf = raw.name.unwrap_or_else(|| column.clone());
    check_name(&leaf).map_err(|e| format!("column {column:?}: {e}"))?;
    // A label keeps its own (column) name; every other usage becomes a family `<prefix><query>_<column>`.
    let mut metric = if usage == Usage::Label {
        leaf
    } else {
        format!("{prefix}{base}_{leaf}")
    };
    if usage == Usage::Duration {
        metric.push_str("_milliseconds");
    }
    let server_versions = raw
        .pg_version
        .as_deref()
        .map(|r| VersionRange::parse(r).map_err(|e| format!("column {column:?}: pg_version: {e}")))
        .transpose()?;
    Ok(Column {
        help: raw
            .description
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| format!("{base}.{column}")),
        column,
        metric,
        usage,
        server_versions,
    })
}

/// Prometheus metric and label names: `[a-zA-Z_][a-zA-Z0-9_]*` (colons are reserved for recording rules).
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ))
    }
}

/// Shell-style pattern match (`*`, `?`) for `target_databases`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Usage::Label => "LABEL",
            Usage::Counter => "COUNTER",
            Usage::Gauge => "GAUGE",
            Usage::Mapped(_) => "MAPPEDMETRIC",
            Usage::Duration => "DURATION",
            Usage::Histogram => "HISTOGRAM",
            Usage::Discard => "DISCARD",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORTER_STYLE: &str = r#"
pg_replication:
  query: "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 ELSE 1 END AS lag"
  master: true
  cache_seconds: 30
  metrics:
    - lag:
        usage: "GAUGE"
        description: "Replication lag behind master in seconds"
pg_locks:
  query: "SELECT mode, count(*) AS count, 'x' AS state FROM pg_locks GROUP BY mode"
  runonserver: ">=12.0.0 <18.0.0"
  target_databases: ["app*", "postgres"]
  metrics:
    - mode: {usage: LABEL, description: "Lock mode"}
    - count: {usage: counter, name: total}
    - state:
        usage: MAPPEDMETRIC
        metric_mapping: {x: 1, y: 2}
    - waited: {usage: DURATION}
"#;

    #[test]
    fn parses_postgres_exporter_and_cnpg_keys() {
        let set = parse(EXPORTER_STYLE, "q.yaml", "").unwrap();
        assert_eq!(set.queries.len(), 2);
        let locks = &set.queries[0];
        assert_eq!(locks.name, "pg_locks");
        assert_eq!(locks.target_databases, ["app*", "postgres"]);
        assert!(!locks.primary_only);
        let names: Vec<_> = locks.columns.iter().map(|c| c.metric.as_str()).collect();
        assert_eq!(
            names,
            [
                "mode",
                "pg_locks_total",
                "pg_locks_state",
                "pg_locks_waited_milliseconds"
            ]
        );
        assert_eq!(locks.columns[1].usage, Usage::Counter);
        assert_eq!(locks.columns[0].help, "Lock mode");
        assert_eq!(locks.columns[3].help, "pg_locks.waited");
        assert!(locks.server_versions.as_ref().unwrap().matches((15, 4, 0)));
        assert!(!locks.server_versions.as_ref().unwrap().matches((18, 0, 0)));
        let repl = &set.queries[1];
        assert!(repl.primary_only, "master: true is primary-only");
        assert_eq!(repl.columns[0].metric, "pg_replication_lag");
    }

    #[test]
    fn prefix_applies_to_every_family() {
        let set = parse(EXPORTER_STYLE, "q.yaml", "pgherd_").unwrap();
        assert!(set.metric_names().all(|(m, _)| m.starts_with("pgherd_pg_")));
    }

    #[test]
    fn malformed_files_are_rejected_with_the_reason() {
        let cases = [
            ("a: [", "not valid query YAML"),
            ("q:\n  query: SELECT 1\n  metrics: []\n", "metrics is empty"),
            (
                "q:\n  query: SELECT 1 AS x\n  primray: true\n  metrics: [{x: {usage: GAUGE}}]\n",
                "unknown field `primray`",
            ),
            (
                "q:\n  query: SELECT 1 AS x\n  metrics: [{x: {usage: GAUGES}}]\n",
                "unknown usage \"GAUGES\"",
            ),
            (
                "q:\n  query: SELECT 1 AS x\n  metrics: [{x: {usage: MAPPEDMETRIC}}]\n",
                "needs metric_mapping",
            ),
            (
                "q:\n  query: SELECT 'a' AS x\n  metrics: [{x: {usage: LABEL}}]\n",
                "no column has a metric usage",
            ),
            (
                "q:\n  query: SELECT 1 AS x\n  runonserver: '>=abc'\n  metrics: [{x: {usage: GAUGE}}]\n",
                "runonserver",
            ),
            (
                "q-1:\n  query: SELECT 1 AS x\n  metrics: [{x: {usage: GAUGE}}]\n",
                "not a valid Prometheus name",
            ),
            (
                "a:\n  query: SELECT 1 AS x\n  name: b_x\n  metrics: [{y: {usage: GAUGE}}]\nb_x:\n  query: SELECT 1 AS y\n  metrics: [{y: {usage: GAUGE}}]\n",
                "is produced by both",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text, "custom.yaml", "").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.starts_with("custom.yaml"), "names the file: {err}");
        }
    }

    #[test]
    fn empty_file_is_an_empty_set() {
        assert_eq!(parse("", "e.yaml", "").unwrap(), QuerySet::default());
        assert_eq!(
            parse("# nothing\n", "e.yaml", "").unwrap(),
            QuerySet::default()
        );
    }

    #[test]
    fn merge_refuses_collisions_across_sets() {
        let mut a = parse(EXPORTER_STYLE, "a.yaml", "").unwrap();
        let b = parse(EXPORTER_STYLE, "b.yaml", "").unwrap();
        // pg_locks is gated by runonserver in both sets (version variants may share names);
        // pg_replication is not.
        let err = a.merge(b, "b.yaml").unwrap_err().to_string();
        assert!(
            err.contains("\"pg_replication_lag\" is produced by both"),
            "{err}"
        );
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("*", "app"));
        assert!(glob_match("app*", "app_prod"));
        assert!(glob_match("a?p", "app"));
        assert!(!glob_match("app", "apps"));
        assert!(!glob_match("b*", "app"));
    }
}
