//! PodDisruptionBudgets (§2.10): one keeps the primary up during drains,
//! one blocks evictions while pods carry `critical-operation=true`.
//! Zalando deletes and recreates PDBs to change them; pgherd applies them
//! server-side like everything else, so there is no unprotected gap.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pgherd_shared::naming;

use super::{Cluster, Role};

fn pdb(
    c: &Cluster,
    name: String,
    selector: LabelSelector,
    spec: PodDisruptionBudgetSpec,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(c.namespace.clone()),
            labels: Some(c.labels()),
            annotations: c.annotations(Default::default()),
            owner_references: c.owner_references(),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(selector),
            ..spec
        }),
        status: None,
    }
}

pub fn primary(c: &Cluster) -> PodDisruptionBudget {
    let cfg = c.cfg;
    let disabled = !cfg.enable_pod_disruption_budget || c.pg.spec.number_of_instances <= 0;
    let mut min_available = if disabled { 0 } else { 1 };
    let labels = if cfg.pdb_master_label_selector {
        c.role_labels(false, Role::Master)
    } else {
        let strict =
            c.pg.spec
                .patroni
                .as_ref()
                .and_then(|p| p.synchronous_mode_strict)
                .unwrap_or(false);
        if strict && !disabled {
            let n =
                c.pg.spec
                    .patroni
                    .as_ref()
                    .and_then(|p| p.synchronous_node_count)
                    .unwrap_or(1) as i32;
            min_available = n + 1;
        }
        c.selector_labels()
    };
    pdb(
        c,
        naming::primary_pdb(&cfg.pdb_name_format, &c.name),
        LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        },
        PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            ..Default::default()
        },
    )
}

pub fn critical_op(c: &Cluster) -> PodDisruptionBudget {
    let disabled = !c.cfg.enable_pod_disruption_budget || c.pg.spec.number_of_instances <= 0;
    let mut labels = c.selector_labels();
    labels.insert("critical-operation".into(), "true".into());
    pdb(
        c,
        naming::critical_op_pdb(&c.name),
        LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        },
        PodDisruptionBudgetSpec {
            max_unavailable: Some(if disabled {
                IntOrString::String("100%".into())
            } else {
                IntOrString::Int(0)
            }),
            ..Default::default()
        },
    )
}

pub fn pod_disruption_budgets(c: &Cluster) -> Vec<PodDisruptionBudget> {
    vec![primary(c), critical_op(c)]
}
