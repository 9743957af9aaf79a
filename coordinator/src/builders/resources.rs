//! Container resources with upstream's defaulting and clamping rules
//! (`generateResourceRequirements` in `pkg/cluster/k8sres.go`), in the same
//! order: defaults, minimum limits, limit >= request, memory request =
//! limit, maximum requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pgherd_shared::crd::postgresql::{ResourceDescription, Resources};
use pgherd_shared::crd::validate::is_empty_resource;

use super::BuildError;
use crate::config::OperatorConfig;
use crate::quantity::{less, parse};

/// Defaults for requests and limits (`cpu`, `memory`).
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Defaults {
    pub fn postgres(cfg: &OperatorConfig) -> Self {
        Defaults {
            cpu_request: cfg.default_cpu_request.clone(),
            memory_request: cfg.default_memory_request.clone(),
            cpu_limit: cfg.default_cpu_limit.clone(),
            memory_limit: cfg.default_memory_limit.clone(),
        }
    }
}

fn pick(spec: Option<&String>, default: &str) -> Option<String> {
    match spec {
        Some(v) if !is_empty_resource(v) => Some(v.clone()),
        _ if !is_empty_resource(default) => Some(default.to_string()),
        _ => None,
    }
}

fn fill(
    field: &str,
    spec: Option<&ResourceDescription>,
    cpu_default: &str,
    memory_default: &str,
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut out = BTreeMap::new();
    let cpu = pick(spec.and_then(|s| s.cpu.as_ref()), cpu_default);
    let memory = pick(spec.and_then(|s| s.memory.as_ref()), memory_default);
    for (name, v) in [("cpu", cpu), ("memory", memory)] {
        if let Some(v) = v {
            if parse(&v).is_none() {
                return Err(BuildError::field(
                    format!("{field}.{name}"),
                    format!("could not parse quantity {v:?}"),
                ));
            }
            out.insert(name.to_string(), v);
        }
    }
    if let Some(spec) = spec {
        for (name, v) in [
            ("hugepages-2Mi", &spec.hugepages_2mi),
            ("hugepages-1Gi", &spec.hugepages_1gi),
        ] {
            if let Some(v) = v {
                out.insert(name.to_string(), v.clone());
            }
        }
    }
    Ok(out)
}

/// Builds requirements; `postgres` enables the min/max thresholds, which
/// upstream applies to the database container only.
pub fn requirements(
    field: &str,
    spec: Option<&Resources>,
    defaults: &Defaults,
    cfg: &OperatorConfig,
    postgres: bool,
    enforce_thresholds: bool,
) -> Result<ResourceRequirements, BuildError> {
    let mut requests = fill(
        &format!("{field}.requests"),
        spec.and_then(|r| r.requests.as_ref()),
        &defaults.cpu_request,
        &defaults.memory_request,
    )?;
    let mut limits = fill(
        &format!("{field}.limits"),
        spec.and_then(|r| r.limits.as_ref()),
        &defaults.cpu_limit,
        &defaults.memory_limit,
    )?;
    let thresholds = postgres && enforce_thresholds;

    if thresholds {
        for (name, min) in [
            ("cpu", &cfg.min_cpu_limit),
            ("memory", &cfg.min_memory_limit),
        ] {
            if !min.is_empty() && less(limits.get(name).map(String::as_str), min) {
                limits.insert(name.into(), min.clone());
            }
        }
    }
    for name in ["cpu", "memory"] {
        if let (Some(req), Some(lim)) = (requests.get(name), limits.get(name)) {
            if less(Some(lim), req) {
                limits.insert(name.into(), req.clone());
            }
        }
    }
    if cfg.set_memory_request_to_limit {
        if let Some(lim) = limits.get("memory").cloned() {
            if less(requests.get("memory").map(String::as_str), &lim) {
                requests.insert("memory".into(), lim);
            }
        }
    }
    if thresholds {
        for (name, max) in [
            ("cpu", &cfg.max_cpu_request),
            ("memory", &cfg.max_memory_request),
        ] {
            if let Some(req) = requests.get(name) {
                if !max.is_empty() && less(Some(max), req) {
                    requests.insert(name.into(), max.clone());
                }
            }
        }
    }

    let to_list = |m: BTreeMap<String, String>| {
        (!m.is_empty()).then(|| m.into_iter().map(|(k, v)| (k, Quantity(v))).collect())
    };
    Ok(ResourceRequirements {
        requests: to_list(requests),
        limits: to_list(limits),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(cpu: &str, mem: &str) -> Option<ResourceDescription> {
        Some(ResourceDescription {
            cpu: (!cpu.is_empty()).then(|| cpu.into()),
            memory: (!mem.is_empty()).then(|| mem.into()),
            ..Default::default()
        })
    }

    fn q(r: &Option<std::collections::BTreeMap<String, Quantity>>, k: &str) -> Option<String> {
        r.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    }

    fn cfg() -> OperatorConfig {
        OperatorConfig {
            default_cpu_request: "100m".into(),
            default_memory_request: "100Mi".into(),
            default_cpu_limit: "1".into(),
            default_memory_limit: "500Mi".into(),
            ..Default::default()
        }
    }

    // Cases from upstream's TestGenerateResourceRequirements.
    #[test]
    fn defaults_fill_missing_values() {
        let c = cfg();
        let r = requirements(
            "spec.resources",
            None,
            &Defaults::postgres(&c),
            &c,
            true,
            true,
        )
        .unwrap();
        assert_eq!(q(&r.requests, "cpu").as_deref(), Some("100m"));
        assert_eq!(q(&r.limits, "memory").as_deref(), Some("500Mi"));
    }

    #[test]
    fn limit_raised_to_request() {
        let c = cfg();
        let spec = Resources {
            requests: rd("", "750Mi"),
            limits: rd("", "300Mi"),
        };
        let r = requirements(
            "spec.resources",
            Some(&spec),
            &Defaults::postgres(&c),
            &c,
            true,
            true,
        )
        .unwrap();
        assert_eq!(q(&r.limits, "memory").as_deref(), Some("750Mi"));
    }

    #[test]
    fn min_limits_and_max_requests() {
        let c = OperatorConfig {
            min_cpu_limit: "250m".into(),
            min_memory_limit: "250Mi".into(),
            max_memory_request: "1Gi".into(),
            set_memory_request_to_limit: true,
            ..cfg()
        };
        let spec = Resources {
            requests: rd("10m", "100Mi"),
            limits: rd("100m", "2Gi"),
        };
        let r = requirements(
            "spec.resources",
            Some(&spec),
            &Defaults::postgres(&c),
            &c,
            true,
            true,
        )
        .unwrap();
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("250m"));
        // set-to-limit gives 2Gi, then the maximum caps it at 1Gi.
        assert_eq!(q(&r.requests, "memory").as_deref(), Some("1Gi"));
        // Thresholds are skipped for sidecars and with the ignore annotation.
        let r = requirements(
            "spec.resources",
            Some(&spec),
            &Defaults::postgres(&c),
            &c,
            true,
            false,
        )
        .unwrap();
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("100m"));
    }

    #[test]
    fn empty_markers_mean_unset() {
        let c = OperatorConfig::default();
        let spec = Resources {
            requests: rd("0", "null"),
            limits: None,
        };
        let r = requirements(
            "spec.resources",
            Some(&spec),
            &Defaults::postgres(&c),
            &c,
            true,
            true,
        )
        .unwrap();
        assert_eq!(r.requests, None);
    }
}
