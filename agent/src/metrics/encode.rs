//! Bridges [`Families`] (whose names and label sets are only known at run time: query results, Patroni's
//! view, volumes) into prometheus-client's registry through its `Collector` hook, so one registry and one
//! OpenMetrics encoder serve both the static and the dynamic series.

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::families::{Families, Kind, Value};

/// A set of families replaced wholesale after each collection and encoded on every scrape.
#[derive(Debug, Clone, Default)]
pub struct Published(Arc<RwLock<Families>>);

impl Published {
    pub fn replace(&self, families: Families) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = families;
    }

    pub fn read<T>(&self, f: impl FnOnce(&Families) -> T) -> T {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Collector for Published {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.read(|f| encode_families(f, &mut encoder))
    }
}

/// Writes every family. OpenMetrics appends `_total` to counter samples itself, so a counter already named
/// `…_total` is declared without it (`x_total` stays `x_total` instead of becoming `x_total_total`).
pub fn encode_families(f: &Families, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    for (name, fam) in &f.by_name {
        let (declared, metric_type) = match fam.kind {
            Kind::Counter => (
                name.strip_suffix("_total").unwrap_or(name),
                MetricType::Counter,
            ),
            Kind::Gauge => (name.as_str(), MetricType::Gauge),
            Kind::Histogram => (name.as_str(), MetricType::Histogram),
        };
        let mut metric = encoder.encode_descriptor(declared, &fam.help, None, metric_type)?;
        for (labels, value) in &fam.samples {
            // No braces at all for an unlabelled sample (`x 1`, not `x{} 1`), as every exporter writes it.
            if labels.is_empty() {
                encode_value(&mut metric, fam.kind, value)?;
            } else {
                encode_value(&mut metric.encode_family(labels)?, fam.kind, value)?;
            }
        }
    }
    Ok(())
}

fn encode_value(sample: &mut MetricEncoder, kind: Kind, value: &Value) -> std::fmt::Result {
    match (kind, value) {
        (Kind::Counter, Value::Number(v)) => sample.encode_counter::<NoLabelSet, f64, f64>(v, None),
        (_, Value::Number(v)) => sample.encode_gauge(v),
        (
            _,
            Value::Histogram {
                sum,
                count,
                buckets,
            },
        ) => {
            // Queries deliver cumulative bucket counts (postgres_exporter's convention); the encoder
            // accumulates itself, so it gets per-bucket counts.
            let mut previous = 0;
            let per_bucket: Vec<(f64, u64)> = buckets
                .iter()
                .map(|(le, cumulative)| {
                    let n = cumulative.saturating_sub(previous);
                    previous = previous.max(*cumulative);
                    (*le, n)
                })
                .collect();
            sample.encode_histogram::<NoLabelSet>(*sum, *count, &per_bucket, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn exposition_of_counters_gauges_labels_and_histograms() {
        let mut f = Families::default();
        f.set("a_total", "A counter", Kind::Counter, vec![], 3.0);
        f.set(
            "b",
            "A gauge",
            Kind::Gauge,
            vec![("db".into(), "x\"y".into())],
            1.5,
        );
        f.set_value(
            "h",
            "A histogram",
            Kind::Histogram,
            vec![],
            Value::Histogram {
                sum: 3.0,
                count: 2,
                buckets: vec![(1.0, 1), (f64::INFINITY, 2)],
            },
        );
        let p = Published::default();
        p.replace(f);
        let mut r = Registry::default();
        r.register_collector(Box::new(p));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("# TYPE a counter\na_total 3.0\n"), "{out}");
        assert!(out.contains("b{db=\"x\\\"y\"} 1.5\n"), "{out}");
        assert!(
            out.contains("h_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"));
    }
}
