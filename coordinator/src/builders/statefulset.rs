//! The cluster's StatefulSet (upstream's `generateStatefulSet` in
//! `pkg/cluster/k8sres.go`), with pgherd-agent as the database container's entrypoint.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SecurityContext, Toleration, TopologySpreadConstraint,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pgherd_shared::naming;

use super::env::{append_env_vars, field_ref, lit, secret_ref, spilo_env};
use super::resources::{requirements, Defaults};
use super::spilo_configuration::spilo_configuration;
use super::volumes::{self, POSTGRES_CONTAINER};
use super::{BuildError, Cluster};

/// The agent replaces Spilo's `/launch.sh` as PID 1.
pub const AGENT_COMMAND: [&str; 2] = ["pgherd-agent", "run"];

fn tcp_port(port: i32) -> ContainerPort {
    ContainerPort {
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Port of the agent's Prometheus exporter when nothing overrides it
/// (docs/metrics.md; postgres_exporter's port, so scrape configs fit).
pub const METRICS_PORT: i32 = 9187;

/// The exporter's port as the agent will see it: `PGHERD_METRICS_PORT` from
/// the final env (manifest `env` or the pod environment ConfigMap), `None`
/// when it is `0` (exporter disabled). A value only known at run time (a
/// secret reference) or one the agent would reject keeps the default, so a
/// scrape target is still declared.
fn metrics_port(env: &[EnvVar]) -> Option<i32> {
    let value = env
        .iter()
        .find(|e| e.name == "PGHERD_METRICS_PORT")
        .and_then(|e| e.value.as_deref())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match value.map(str::parse::<u16>) {
        Some(Ok(0)) => None,
        Some(Ok(port)) => Some(i32::from(port)),
        _ => Some(METRICS_PORT),
    }
}

/// Zalando's three unnamed ports (Patroni, Postgres, Spilo's API) plus the
/// agent's exporter, named `metrics` so a PodMonitor can select it by name.
fn container_ports(env: &[EnvVar]) -> Vec<ContainerPort> {
    let mut ports = vec![tcp_port(8008), tcp_port(5432), tcp_port(8080)];
    if let Some(port) = metrics_port(env) {
        ports.push(ContainerPort {
            name: Some("metrics".into()),
            ..tcp_port(port)
        });
    }
    ports
}

fn postgres_container(c: &Cluster) -> Result<Container, BuildError> {
    let cfg = c.cfg;
    let spec = &c.pg.spec;
    let enforce = c.annotation(&cfg.ignore_resources_limits_annotation_key) != Some("true");
    let resources = requirements(
        "spec.resources",
        spec.resources.as_ref(),
        &Defaults::postgres(cfg),
        cfg,
        true,
        enforce,
    )?;
    let spilo_config = spilo_configuration(&spec.postgresql, spec.patroni.as_ref(), cfg);
    let mut env = spilo_env(c, &spilo_config);
    let (tls_env, _) = volumes::tls(spec);
    append_env_vars(&mut env, tls_env);

    let capabilities: Vec<String> = cfg
        .additional_pod_capabilities
        .iter()
        .map(|c| c.to_uppercase())
        .collect();
    let readiness = cfg.enable_readiness_probe.then(|| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readiness".into()),
            port: IntOrString::Int(8008),
            ..Default::default()
        }),
        initial_delay_seconds: Some(6),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        ..Default::default()
    });
    Ok(Container {
        name: POSTGRES_CONTAINER.into(),
        image: Some(c.docker_image()),
        command: Some(AGENT_COMMAND.iter().map(|s| s.to_string()).collect()),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: Some(resources),
        ports: Some(container_ports(&env)),
        volume_mounts: Some(vec![volumes::data_mount(spec)]),
        env: Some(env),
        env_from: spec.env_from.clone().filter(|e| !e.is_empty()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(cfg.spilo_allow_privilege_escalation),
            privileged: Some(cfg.spilo_privileged),
            read_only_root_filesystem: Some(false),
            capabilities: (!capabilities.is_empty()).then_some(Capabilities {
                add: Some(capabilities),
                drop: None,
            }),
            ..Default::default()
        }),
        readiness_probe: readiness,
        liveness_probe: spec
            .liveness_probe
            .clone()
            .or_else(|| cfg.liveness_probe.clone()),
        ..Default::default()
    })
}

/// Sidecars by precedence: manifest, then config `sidecars`, then the
/// deprecated `sidecar_docker_images` (sorted); later duplicates are dropped.
fn sidecars(c: &Cluster) -> Result<Vec<Container>, BuildError> {
    let cfg = c.cfg;
    let mut out: Vec<Container> = Vec::new();
    for (i, sc) in c.pg.spec.sidecars.iter().flatten().enumerate() {
        let resources = requirements(
            &format!("spec.sidecars[{i}].resources"),
            sc.resources.as_ref(),
            &Defaults::postgres(cfg),
            cfg,
            false,
            false,
        )?;
        out.push(Container {
            name: sc
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("sidecar-{i}")),
            image: sc.image.clone(),
            image_pull_policy: Some("IfNotPresent".into()),
            ports: sc.ports.clone(),
            env: sc.env.clone(),
            command: sc.command.clone(),
            resources: Some(resources),
            ..Default::default()
        });
    }
    let mut candidates: Vec<Container> = cfg.sidecars.clone();
    for (name, image) in &cfg.sidecar_docker_images {
        let resources = requirements(
            "sidecar_docker_images",
            None,
            &Defaults::postgres(cfg),
            cfg,
            false,
            false,
        )?;
        candidates.push(Container {
            name: name.clone(),
            image: Some(image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            resources: Some(resources),
            ..Default::default()
        });
    }
    for cand in candidates {
        if !out.iter().any(|o| o.name == cand.name) {
            out.push(cand);
        }
    }
    let data_mount = volumes::data_mount(&c.pg.spec);
    let superuser_secret = c.secret_name(&cfg.super_username);
    for sc in &mut out {
        let mut env = vec![
            field_ref("POD_NAME", "metadata.name"),
            field_ref("POD_NAMESPACE", "metadata.namespace"),
            lit("POSTGRES_USER", &cfg.super_username),
            secret_ref("POSTGRES_PASSWORD", &superuser_secret, "password"),
        ];
        append_env_vars(&mut env, sc.env.take().unwrap_or_default());
        sc.env = Some(env);
        sc.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(data_mount.clone());
    }
    Ok(out)
}

/// The manifest's tolerations, else the configured one (also the logical backup pod's).
pub(super) fn tolerations(c: &Cluster) -> Vec<Toleration> {
    if let Some(t) = c.pg.spec.tolerations.as_ref().filter(|t| !t.is_empty()) {
        return t.clone();
    }
    let t = &c.cfg.toleration;
    let get = |k: &str| t.get(k).cloned().filter(|v| !v.is_empty());
    if ["key", "operator", "value", "effect"]
        .iter()
        .any(|k| get(k).is_some())
    {
        return vec![Toleration {
            key: get("key"),
            operator: get("operator"),
            value: get("value"),
            effect: get("effect"),
            toleration_seconds: None,
        }];
    }
    Vec::new()
}

/// `spec` merged with the configured node readiness label (OR/AND); the
/// logical backup pod passes no `spec`, as upstream.
pub(super) fn node_affinity(c: &Cluster, spec: Option<NodeAffinity>) -> Option<NodeAffinity> {
    let readiness = &c.cfg.node_readiness_label;
    if readiness.is_empty() {
        return spec;
    }
    let expressions: Vec<NodeSelectorRequirement> = readiness
        .iter()
        .map(|(k, v)| NodeSelectorRequirement {
            key: k.clone(),
            operator: "In".into(),
            values: Some(vec![v.clone()]),
        })
        .collect();
    let term = NodeSelectorTerm {
        match_expressions: Some(expressions.clone()),
        match_fields: None,
    };
    let mut affinity = spec.unwrap_or_default();
    match affinity
        .required_during_scheduling_ignored_during_execution
        .as_mut()
    {
        None => {
            affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
                node_selector_terms: vec![term],
            });
        }
        Some(sel) if c.cfg.node_readiness_label_merge == "AND" => {
            for t in &mut sel.node_selector_terms {
                t.match_expressions
                    .get_or_insert_with(Vec::new)
                    .extend(expressions.iter().cloned());
            }
        }
        Some(sel) => sel.node_selector_terms.push(term),
    }
    Some(affinity)
}

fn affinity(c: &Cluster, labels: &BTreeMap<String, String>) -> Option<Affinity> {
    let node = node_affinity(c, c.pg.spec.node_affinity.clone());
    if !c.cfg.enable_pod_antiaffinity {
        return node.map(|n| Affinity {
            node_affinity: Some(n),
            ..Default::default()
        });
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        }),
        topology_key: c.cfg.pod_antiaffinity_topology_key.clone(),
        ..Default::default()
    };
    let anti = if c.cfg.pod_antiaffinity_preferred_during_scheduling {
        PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 1,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        }
    } else {
        PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        }
    };
    Some(Affinity {
        node_affinity: node,
        pod_anti_affinity: Some(anti),
        pod_affinity: None,
    })
}

/// Configured and manifest pod annotations, inherited ones and the IAM role
/// (also the logical backup pod's, as upstream).
pub(super) fn pod_annotations(c: &Cluster) -> Option<BTreeMap<String, String>> {
    let mut a = c.cfg.custom_pod_annotations.clone();
    a.extend(c.pg.spec.pod_annotations.clone().unwrap_or_default());
    let mut a = c.annotations(a).unwrap_or_default();
    if !c.cfg.kube_iam_role.is_empty() {
        a.insert("iam.amazonaws.com/role".into(), c.cfg.kube_iam_role.clone());
    }
    (!a.is_empty()).then_some(a)
}

/// StatefulSet annotations: inherited ones plus CR annotations matching a
/// `downscaler_annotations` pattern (upstream: unanchored regex).
fn statefulset_annotations(c: &Cluster) -> Result<Option<BTreeMap<String, String>>, BuildError> {
    let mut a = c.annotations(BTreeMap::new()).unwrap_or_default();
    let patterns = c
        .cfg
        .downscaler_annotations
        .iter()
        .map(|p| {
            regex::Regex::new(p)
                .map_err(|e| BuildError::field("downscaler_annotations", format!("{p:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (k, v) in c.pg.metadata.annotations.iter().flatten() {
        if patterns.iter().any(|p| p.is_match(k)) {
            a.insert(k.clone(), v.clone());
        }
    }
    Ok((!a.is_empty()).then_some(a))
}

/// The manifest's topology spread constraints, selecting `labels` where they select nothing. Upstream
/// documents that selector but never sets it: its loop in `pkg/cluster/k8sres.go` mutates a copy.
pub(super) fn topology_spread_constraints(
    c: &Cluster,
    labels: &BTreeMap<String, String>,
) -> Option<Vec<TopologySpreadConstraint>> {
    c.pg.spec.topology_spread_constraints.clone().map(|tscs| {
        tscs.into_iter()
            .map(|mut t| {
                t.label_selector.get_or_insert_with(|| LabelSelector {
                    match_labels: Some(labels.clone()),
                    match_expressions: None,
                });
                t
            })
            .collect()
    })
}

/// User, group and fs group: the manifest's, else the configured ones (also the logical backup pod's, as
/// upstream).
pub(super) fn pod_security_context(c: &Cluster) -> PodSecurityContext {
    let (spec, cfg) = (&c.pg.spec, c.cfg);
    PodSecurityContext {
        run_as_user: spec.spilo_run_as_user.or(cfg.spilo_runasuser),
        run_as_group: spec.spilo_run_as_group.or(cfg.spilo_runasgroup),
        fs_group: spec.spilo_fs_group.or(cfg.spilo_fsgroup),
        ..Default::default()
    }
}

fn volume_claim_template(c: &Cluster) -> Result<PersistentVolumeClaim, BuildError> {
    let v = &c.pg.spec.volume;
    if crate::quantity::parse(&v.size).is_none() {
        return Err(BuildError::field(
            "spec.volume.size",
            format!("could not parse volume size {:?}", v.size),
        ));
    }
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(naming::DATA_VOLUME.into()),
            labels: Some(c.labels()),
            annotations: c.annotations(BTreeMap::new()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(v.size.clone()),
                )])),
                limits: None,
            }),
            storage_class_name: v.storage_class.clone().filter(|s| !s.is_empty()),
            volume_mode: Some("Filesystem".into()),
            selector: v.selector.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

pub fn statefulset(c: &Cluster) -> Result<StatefulSet, BuildError> {
    let cfg = c.cfg;
    let spec = &c.pg.spec;
    let init_containers = spec.init_containers.clone().filter(|i| !i.is_empty());
    if init_containers.is_some() && !cfg.enable_init_containers {
        return Err(BuildError::field(
            "spec.initContainers",
            "init containers are disabled by the operator setting enable_init_containers",
        ));
    }
    if spec.sidecars.as_ref().is_some_and(|s| !s.is_empty()) && !cfg.enable_sidecars {
        return Err(BuildError::field(
            "spec.sidecars",
            "sidecars are disabled by the operator setting enable_sidecars",
        ));
    }

    let labels = c.labels();
    let mut containers = vec![postgres_container(c)?];
    containers.extend(sidecars(c)?);

    let mut pod = PodSpec {
        service_account_name: Some(cfg.pod_service_account_name.clone()),
        termination_grace_period_seconds: Some(cfg.pod_terminate_grace_period.as_secs() as i64),
        containers,
        init_containers,
        tolerations: Some(tolerations(c)),
        security_context: Some(pod_security_context(c)),
        scheduler_name: spec.scheduler_name.clone(),
        priority_class_name: spec
            .pod_priority_class_name
            .clone()
            .filter(|p| !p.is_empty())
            .or_else(|| Some(cfg.pod_priority_class_name.clone()).filter(|p| !p.is_empty())),
        affinity: affinity(c, &labels),
        topology_spread_constraints: topology_spread_constraints(c, &labels),
        ..Default::default()
    };

    // A manifest's `enableShmVolume: false` wins over the global default (upstream falls back to the
    // configuration's `true`, contrary to its docs).
    if spec.enable_shm_volume.unwrap_or(cfg.enable_shm_volume) {
        volumes::add_shm(&mut pod);
    }
    if cfg.share_pgsocket_with_sidecars {
        volumes::add_var_run(&mut pod);
    }
    if !cfg.additional_secret_mount.is_empty() {
        volumes::add_secret_mount(
            &mut pod,
            &cfg.additional_secret_mount,
            &cfg.additional_secret_mount_path,
        );
    }
    let mut extra = volumes::resolve_additional(spec.additional_volumes.as_deref().unwrap_or(&[]))?;
    extra.extend(volumes::tls(spec).1);
    volumes::add_additional(&mut pod, &extra);

    let policy = |v: &str| if v == "delete" { "Delete" } else { "Retain" };
    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(naming::master_service(&c.name)),
            namespace: Some(c.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: statefulset_annotations(c)?,
            owner_references: c.owner_references(),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(c.number_of_instances()),
            selector: LabelSelector {
                match_labels: Some(c.selector_labels()),
                match_expressions: None,
            },
            service_name: Some(naming::master_service(&c.name)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: pod_annotations(c),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![volume_claim_template(c)?]),
            // pgherd rolls pods itself (switchover first), like upstream.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            pod_management_policy: Some(
                if cfg.pod_management_policy == "parallel" {
                    "Parallel"
                } else {
                    "OrderedReady"
                }
                .into(),
            ),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(policy(&cfg.pvc_retention_when_deleted).into()),
                    when_scaled: Some(policy(&cfg.pvc_retention_when_scaled).into()),
                },
            ),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::env::lit;

    fn metrics(env: &[EnvVar]) -> Vec<(i32, Option<String>)> {
        container_ports(env)
            .into_iter()
            .filter(|p| p.name.is_some())
            .map(|p| (p.container_port, p.name))
            .collect()
    }

    #[test]
    fn metrics_port_follows_the_agents_setting() {
        let named = |port| vec![(port, Some("metrics".to_string()))];
        assert_eq!(metrics(&[]), named(9187));
        assert_eq!(metrics(&[lit("PGHERD_METRICS_PORT", "9300")]), named(9300));
        assert_eq!(metrics(&[lit("PGHERD_METRICS_PORT", " 0 ")]), vec![]);
        // The agent rejects these; the default keeps a scrape target declared.
        assert_eq!(metrics(&[lit("PGHERD_METRICS_PORT", "x")]), named(9187));
        assert_eq!(metrics(&[lit("PGHERD_METRICS_PORT", "")]), named(9187));
        assert_eq!(
            container_ports(&[])
                .iter()
                .map(|p| p.container_port)
                .collect::<Vec<_>>(),
            [8008, 5432, 8080, 9187]
        );
    }
}
