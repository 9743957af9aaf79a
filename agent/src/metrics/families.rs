//! Query results turned into metric families: the pure half of the query engine, separate from the
//! database so that value conversion (text protocol values, NULLs, mappings, histograms) is unit-tested.
//!
//! Values arrive as text (the simple query protocol), which lets one code path handle every column type a
//! user's query may return: numerics, booleans (`t`/`f`), and arrays for histograms.

use std::collections::{BTreeMap, BTreeSet};

use super::queries::{Column, Query, Usage};
use super::version::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    /// Cumulative buckets `(upper bound, count)`, ending with `+Inf`.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<(Labels, Value)>,
}

/// Families by name. Sorted, so the exposition is stable between scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Families {
    pub by_name: BTreeMap<String, Family>,
    seen: BTreeSet<(String, Labels)>,
}

/// A result row with values looked up by column name.
pub trait Row {
    /// `None` when the column is absent from the result, `Some(None)` for NULL.
    fn text(&self, column: &str) -> Option<Option<&str>>;
}

/// A row whose columns were missing or whose values did not convert; the query counts as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl Families {
    /// Adds one query's rows. Conversion problems skip the value and are reported (once per problem kind)
    /// so the query's error counter moves; the remaining values are still exported.
    pub fn add_rows<R: Row>(
        &mut self,
        query: &Query,
        server: Version,
        rows: &[R],
    ) -> Vec<ConvertError> {
        let mut problems = BTreeSet::new();
        let active: Vec<&Column> = query
            .columns
            .iter()
            .filter(|c| c.server_versions.as_ref().is_none_or(|r| r.matches(server)))
            .collect();
        for row in rows {
            let mut labels = Labels::new();
            for c in active.iter().filter(|c| c.usage == Usage::Label) {
                match row.text(&c.column) {
                    Some(v) => labels.push((c.metric.clone(), v.unwrap_or_default().to_string())),
                    None => {
                        problems
                            .insert(format!("label column {:?} is not in the result", c.column));
                    }
                }
            }
            for c in &active {
                match value(c, row) {
                    Ok(Some((kind, v))) => self.push(c, kind, labels.clone(), v),
                    Ok(None) => {}
                    Err(e) => {
                        problems.insert(e);
                    }
                }
            }
        }
        problems.into_iter().map(ConvertError).collect()
    }

    fn push(&mut self, c: &Column, kind: Kind, labels: Labels, v: Value) {
        self.set_value(&c.metric, &c.help, kind, labels, v);
    }

    /// Adds one numeric sample to a family defined in code (Patroni, volumes, process).
    pub fn set(&mut self, name: &str, help: &str, kind: Kind, labels: Labels, v: f64) {
        self.set_value(name, help, kind, labels, Value::Number(v));
    }

    /// Adds one sample. The same label set twice (a query run in several databases without a datname
    /// column) would make the exposition invalid; the first one wins.
    pub fn set_value(&mut self, name: &str, help: &str, kind: Kind, labels: Labels, v: Value) {
        if !self.seen.insert((name.to_string(), labels.clone())) {
            return;
        }
        self.by_name
            .entry(name.to_string())
            .or_insert_with(|| Family {
                help: help.to_string(),
                kind,
                samples: Vec::new(),
            })
            .samples
            .push((labels, v));
    }

    /// Number of samples (not families).
    pub fn len(&self) -> usize {
        self.by_name.values().map(|f| f.samples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn value<R: Row>(c: &Column, row: &R) -> Result<Option<(Kind, Value)>, String> {
    let kind = match &c.usage {
        Usage::Label | Usage::Discard => return Ok(None),
        Usage::Counter => Kind::Counter,
        Usage::Histogram => return histogram(c, row),
        _ => Kind::Gauge,
    };
    let text = match row.text(&c.column) {
        None => return Err(format!("column {:?} is not in the result", c.column)),
        Some(None) => return Ok(None),
        Some(Some(t)) => t,
    };
    let number = match &c.usage {
        Usage::Mapped(map) => match map.get(text) {
            Some(v) => *v,
            None => return Ok(None),
        },
        _ => parse_number(text)
            .ok_or_else(|| format!("column {:?}: {text:?} is not a number", c.column))?,
    };
    Ok(Some((kind, Value::Number(number))))
}

/// Numbers and booleans as the text protocol renders them.
pub fn parse_number(text: &str) -> Option<f64> {
    match text {
        "t" | "true" => Some(1.0),
        "f" | "false" => Some(0.0),
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.trim().parse().ok(),
    }
}

/// postgres_exporter's histogram columns: `<col>` bounds, `<col>_bucket` cumulative counts,
/// `<col>_sum`, `<col>_count`.
fn histogram<R: Row>(c: &Column, row: &R) -> Result<Option<(Kind, Value)>, String> {
    let get = |suffix: &str| -> Result<Option<String>, String> {
        let name = format!("{}{suffix}", c.column);
        match row.text(&name) {
            None => Err(format!("histogram column {name:?} is not in the result")),
            Some(v) => Ok(v.map(str::to_string)),
        }
    };
    let (Some(bounds), Some(counts), Some(sum), Some(count)) =
        (get("")?, get("_bucket")?, get("_sum")?, get("_count")?)
    else {
        return Ok(None);
    };
    let bad = |what: &str| format!("histogram column {:?}: {what}", c.column);
    let bounds = parse_array(&bounds).ok_or_else(|| bad("bounds are not a numeric array"))?;
    let counts = parse_array(&counts).ok_or_else(|| bad("buckets are not a numeric array"))?;
    if bounds.len() != counts.len() {
        return Err(bad("bounds and buckets differ in length"));
    }
    let sum = parse_number(&sum).ok_or_else(|| bad("sum is not a number"))?;
    let count = parse_number(&count).ok_or_else(|| bad("count is not a number"))? as u64;
    let mut buckets: Vec<(f64, u64)> = bounds
        .into_iter()
        .zip(counts.into_iter().map(|c| c as u64))
        .collect();
    if buckets.last().is_none_or(|(le, _)| le.is_finite()) {
        buckets.push((f64::INFINITY, count));
    }
    Ok(Some((
        Kind::Histogram,
        Value::Histogram {
            sum,
            count,
            buckets,
        },
    )))
}

/// A one-dimensional array literal such as `{1,2.5,4}`.
fn parse_array(text: &str) -> Option<Vec<f64>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|v| parse_number(v.trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::queries::parse;

    struct R(Vec<(&'static str, Option<&'static str>)>);
    impl Row for R {
        fn text(&self, column: &str) -> Option<Option<&str>> {
            self.0.iter().find(|(c, _)| *c == column).map(|(_, v)| *v)
        }
    }

    fn query(yaml: &str) -> Query {
        parse(yaml, "t.yaml", "p_").unwrap().queries.remove(0)
    }

    #[test]
    fn labels_counters_gauges_booleans_and_nulls() {
        let q = query(
            "q:\n  query: x\n  metrics:\n    - db: {usage: LABEL}\n    - n: {usage: COUNTER}\n    - up: {usage: GAUGE}\n    - gone: {usage: GAUGE}\n    - skip: {usage: DISCARD}\n",
        );
        let rows = [
            R(vec![
                ("db", Some("a")),
                ("n", Some("12")),
                ("up", Some("t")),
                ("gone", None),
                ("skip", Some("x")),
            ]),
            R(vec![
                ("db", None),
                ("n", Some("3.5")),
                ("up", Some("f")),
                ("gone", Some("7")),
                ("skip", None),
            ]),
        ];
        let mut f = Families::default();
        assert!(f.add_rows(&q, (15, 0, 0), &rows).is_empty());
        let n = &f.by_name["p_q_n"];
        assert_eq!(n.kind, Kind::Counter);
        assert_eq!(
            n.samples,
            [
                (vec![("db".into(), "a".into())], Value::Number(12.0)),
                (vec![("db".into(), "".into())], Value::Number(3.5)),
            ]
        );
        assert_eq!(f.by_name["p_q_up"].samples[1].1, Value::Number(0.0));
        assert_eq!(
            f.by_name["p_q_gone"].samples.len(),
            1,
            "NULL gives no sample"
        );
        assert!(!f.by_name.contains_key("p_q_skip"));
    }

    #[test]
    fn bad_values_are_reported_and_the_rest_exported() {
        let q = query("q:\n  query: x\n  metrics:\n    - a: {usage: GAUGE}\n    - b: {usage: GAUGE}\n    - c: {usage: GAUGE}\n");
        let mut f = Families::default();
        let errs = f.add_rows(
            &q,
            (15, 0, 0),
            &[R(vec![("a", Some("1")), ("b", Some("abc"))])],
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(f.by_name["p_q_a"].samples.len(), 1);
    }

    #[test]
    fn mapped_duration_versioned_and_duplicates() {
        let q = query(
            "q:\n  query: x\n  metrics:\n    - m: {usage: MAPPEDMETRIC, metric_mapping: {on: 1, off: 0}}\n    - d: {usage: DURATION}\n    - new: {usage: GAUGE, pg_version: '>=16.0.0'}\n",
        );
        let row = || {
            R(vec![
                ("m", Some("on")),
                ("d", Some("250")),
                ("new", Some("1")),
            ])
        };
        let mut f = Families::default();
        assert!(f.add_rows(&q, (15, 4, 0), &[row(), row()]).is_empty());
        assert_eq!(
            f.by_name["p_q_m"].samples,
            [(vec![], Value::Number(1.0))],
            "duplicates dropped"
        );
        assert_eq!(
            f.by_name["p_q_d_milliseconds"].samples[0].1,
            Value::Number(250.0)
        );
        assert!(!f.by_name.contains_key("p_q_new"), "column gated to 16+");
        f.add_rows(&q, (16, 0, 0), &[row()]);
        assert!(f.by_name.contains_key("p_q_new"));
    }

    #[test]
    fn histograms() {
        let q = query("q:\n  query: x\n  metrics:\n    - h: {usage: HISTOGRAM}\n");
        let mut f = Families::default();
        let rows = [R(vec![
            ("h", Some("{1,2,4}")),
            ("h_bucket", Some("{3,5,9}")),
            ("h_sum", Some("20.5")),
            ("h_count", Some("10")),
        ])];
        assert!(f.add_rows(&q, (15, 0, 0), &rows).is_empty());
        assert_eq!(
            f.by_name["p_q_h"].samples[0].1,
            Value::Histogram {
                sum: 20.5,
                count: 10,
                buckets: vec![(1.0, 3), (2.0, 5), (4.0, 9), (f64::INFINITY, 10)]
            }
        );
        let errs = f.add_rows(&q, (15, 0, 0), &[R(vec![("h", Some("{1}"))])]);
        assert!(errs[0].0.contains("h_bucket"), "{errs:?}");
    }
}
