//! Master and replica Services (`generateService`, §2.7), the master
//! Endpoints for Endpoints-based DCS, and the `-config` Service Patroni
//! expects in that mode.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pgherd_shared::naming;

use super::{Cluster, Role};

const DNS_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";

fn node_port(c: &Cluster, role: Role) -> Option<i32> {
    let s = &c.pg.spec;
    let (enabled, port) = match role {
        Role::Master => (
            s.enable_master_node_port
                .unwrap_or(c.cfg.enable_master_node_port),
            s.master_node_port,
        ),
        Role::Replica => (
            s.enable_replica_node_port
                .unwrap_or(c.cfg.enable_replica_node_port),
            s.replica_node_port,
        ),
    };
    enabled.then(|| port.unwrap_or(0))
}

fn load_balancer(c: &Cluster, role: Role) -> bool {
    let s = &c.pg.spec;
    match role {
        Role::Master => s
            .enable_master_load_balancer
            .unwrap_or(c.cfg.enable_master_load_balancer),
        Role::Replica => s
            .enable_replica_load_balancer
            .unwrap_or(c.cfg.enable_replica_load_balancer),
    }
}

fn dns_name(c: &Cluster, role: Role) -> String {
    let (fmt, legacy) = match role {
        Role::Master => (
            &c.cfg.master_dns_name_format,
            &c.cfg.master_legacy_dns_name_format,
        ),
        Role::Replica => (
            &c.cfg.replica_dns_name_format,
            &c.cfg.replica_legacy_dns_name_format,
        ),
    };
    let team = c.pg.spec.team_id.to_lowercase();
    let values = |cluster: &str| {
        naming::format_template(
            fmt,
            &[
                ("cluster", cluster),
                ("namespace", &c.namespace),
                ("team", &team),
                ("hostedzone", &c.cfg.db_hosted_zone),
            ],
        )
    };
    let mut name = values(&c.name).to_lowercase();
    // Clusters named `{team}-...` also keep their old team-based DNS name.
    if let Some(short) = c.name.strip_prefix(&format!("{team}-")) {
        let old = naming::format_template(
            legacy,
            &[
                ("cluster", short),
                ("namespace", &c.namespace),
                ("team", &team),
                ("hostedzone", &c.cfg.db_hosted_zone),
            ],
        );
        name = format!("{name},{}", old.to_lowercase());
    }
    name
}

fn service(c: &Cluster, role: Role) -> Service {
    let s = &c.pg.spec;
    let mut spec = ServiceSpec {
        ports: Some(vec![ServicePort {
            name: Some("postgresql".into()),
            port: 5432,
            target_port: Some(IntOrString::Int(5432)),
            ..Default::default()
        }]),
        type_: Some("ClusterIP".into()),
        ..Default::default()
    };
    // With Endpoints DCS Patroni writes the master Endpoints itself (#340).
    if role == Role::Replica || c.patroni_uses_configmaps() {
        spec.selector = Some(c.role_labels(false, role));
    }
    let mut annotations: BTreeMap<String, String> = c.cfg.custom_service_annotations.clone();
    annotations.extend(s.service_annotations.clone().unwrap_or_default());
    let role_specific = match role {
        Role::Master => &s.master_service_annotations,
        Role::Replica => &s.replica_service_annotations,
    };
    annotations.extend(role_specific.clone().unwrap_or_default());

    if let Some(port) = node_port(c, role) {
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some(c.cfg.external_traffic_policy.clone());
        if port != 0 {
            if let Some(p) = spec.ports.as_mut().and_then(|p| p.first_mut()) {
                p.node_port = Some(port);
            }
        }
    } else if load_balancer(c, role) {
        spec.type_ = Some("LoadBalancer".into());
        spec.external_traffic_policy = Some(c.cfg.external_traffic_policy.clone());
        spec.load_balancer_source_ranges = Some(
            s.allowed_source_ranges
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| vec!["127.0.0.1/32".into()]),
        );
        annotations.insert(DNS_ANNOTATION.into(), dns_name(c, role));
    }

    let name = match role {
        Role::Master => naming::master_service(&c.name),
        Role::Replica => naming::replica_service(&c.name),
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(c.namespace.clone()),
            labels: Some(c.role_labels(true, role)),
            annotations: c.annotations(annotations),
            owner_references: c.owner_references(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Headless, selector-less Service that keeps Patroni's `-config` Endpoints
/// from being garbage-collected in Endpoints mode.
fn config_service(c: &Cluster) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(naming::config_service(&c.name)),
            namespace: Some(c.namespace.clone()),
            labels: Some(c.labels()),
            annotations: c.annotations(BTreeMap::new()),
            owner_references: c.owner_references(),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn services(c: &Cluster) -> Vec<Service> {
    let mut out = vec![service(c, Role::Master), service(c, Role::Replica)];
    if c.patroni_uses_kubernetes() && !c.patroni_uses_configmaps() {
        out.push(config_service(c));
    }
    out
}

/// The master Endpoints whenever the master Service has no selector: with
/// Endpoints-based DCS Patroni fills its subsets, with etcd the agent's
/// `callback-role` does (as Spilo's callback does; upstream creates it in
/// both cases, `patroniKubernetesUseConfigMaps` in pkg/cluster/cluster.go).
/// It carries no subsets, and since pgherd never applies that field it never
/// fights the writer over it.
pub fn endpoints(c: &Cluster) -> Vec<Endpoints> {
    if c.patroni_uses_configmaps() {
        return Vec::new();
    }
    vec![Endpoints {
        metadata: ObjectMeta {
            name: Some(naming::master_service(&c.name)),
            namespace: Some(c.namespace.clone()),
            labels: Some(c.role_labels(true, Role::Master)),
            annotations: c.annotations(BTreeMap::new()),
            owner_references: c.owner_references(),
            ..Default::default()
        },
        subsets: None,
    }]
}
