//! `deploy/rbac.yaml` grants the coordinator exactly the verbs its code
//! uses, derived from the same lists the reconciler uses: nothing missing
//! (a 403 would only show on a real cluster) and nothing extra (least
//! privilege). Whether the API server agrees is verified only on a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pgherd_coordinator::builders::{build_all, ExternalInputs, PlaceholderPasswords};
use pgherd_coordinator::config::{DeletionPolicy, OperatorConfig};
use pgherd_coordinator::kube_api::client::KubeClientApi;
use pgherd_coordinator::kube_api::Kind;
use pgherd_coordinator::reconcile::apply::desired_list;
use pgherd_coordinator::reconcile::finalizer::kinds_to_delete;
use pgherd_shared::crd::Postgresql;
use serde::Deserialize;
use serde_json::Value;

type Grants = BTreeMap<(String, String), BTreeSet<String>>;

fn deploy_object(file: &str, kind: &str, name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let object = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name);
    object.unwrap_or_else(|| panic!("{kind} {name} in deploy/{file}"))
}

fn cluster_role(name: &str) -> Value {
    deploy_object("rbac.yaml", "ClusterRole", name)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Verbs per (group, resource) of rules without `resourceNames`.
fn grants(role: &Value) -> Grants {
    let mut out = Grants::new();
    for rule in role["rules"].as_array().unwrap() {
        if rule.get("resourceNames").is_some() {
            continue;
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.entry((group.clone(), resource))
                    .or_default()
                    .extend(strings(&rule["verbs"]));
            }
        }
    }
    out
}

fn need(n: &mut Grants, kind: Kind, verbs: &[&str]) {
    let r = KubeClientApi::resource(kind);
    n.entry((r.group, r.plural))
        .or_default()
        .extend(verbs.iter().map(|v| v.to_string()));
}

/// What the coordinator's code calls.
fn needed() -> Grants {
    let mut n = Grants::new();
    let pg: Postgresql = serde_yaml_ng::from_str(
        "metadata: {name: acid-x, namespace: db}\nspec: {teamId: acid, volume: {size: 1Gi}, numberOfInstances: 1, postgresql: {version: '17'}}",
    )
    .unwrap();
    // Endpoints DCS, so the Endpoints and the -config Service are built too.
    let cfg = OperatorConfig {
        kubernetes_use_configmaps: false,
        ..Default::default()
    };
    let built = build_all(
        &pg,
        &cfg,
        "db",
        &ExternalInputs::default(),
        &mut PlaceholderPasswords,
    )
    .unwrap();
    for d in desired_list(&built) {
        // Every object is read first; Secrets are only created, the rest
        // applied server-side (PATCH, which needs create for a new object).
        let verbs: &[&str] = if d.create_only {
            &["get", "create"]
        } else {
            &["get", "create", "patch"]
        };
        need(&mut n, d.key.kind, verbs);
    }
    for kind in kinds_to_delete(DeletionPolicy::Delete) {
        need(&mut n, kind, &["list", "delete"]);
    }
    // Password rotation: a credentials Secret's data merge-patched.
    need(&mut n, Kind::Secret, &["patch"]);
    // Rolling updates: pods listed, flagged by a merge patch, deleted.
    need(&mut n, Kind::Pod, &["list", "patch", "delete"]);
    // Watches: the StatefulSets of the clusters and the legacy ConfigMap
    // (which, like pod_environment_configmap, is also read with get).
    need(&mut n, Kind::StatefulSet, &["list", "watch"]);
    need(&mut n, Kind::ConfigMap, &["get", "list", "watch"]);
    // pod_environment_secret is read with get (covered above).
    // Logical backups (reconcile/logical_backup.rs): the cluster's CronJobs and
    // Secrets are listed by label, the CronJob applied server-side, the Secret
    // deleted and created again when its keys change; the controller watches
    // the CronJobs.
    need(
        &mut n,
        Kind::CronJob,
        &["list", "watch", "create", "patch", "delete"],
    );
    need(&mut n, Kind::Secret, &["list", "create", "delete"]);
    let acid = |r: &str, verbs: &[&str]| {
        (
            ("acid.zalan.do".to_string(), r.to_string()),
            verbs.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>(),
        )
    };
    n.extend([
        // Controller watch, finalizer patch.
        acid("postgresqls", &["get", "list", "watch", "patch"]),
        acid("postgresqls/status", &["get", "patch"]),
        acid("operatorconfigurations", &["get", "list", "watch"]),
        // Human users: the PostgresTeam watch (a reflector lists, then watches).
        acid("postgresteams", &["get", "list", "watch"]),
        (
            ("events.k8s.io".into(), "events".into()),
            ["create", "patch"].map(String::from).into(),
        ),
    ]);
    n
}

#[test]
fn coordinator_role_grants_exactly_what_the_code_uses() {
    let granted = grants(&cluster_role("pgherd-coordinator"));
    let needed = needed();
    for (resource, verbs) in &needed {
        let have = granted.get(resource).cloned().unwrap_or_default();
        let missing: Vec<&String> = verbs.difference(&have).collect();
        assert!(missing.is_empty(), "{resource:?} lacks {missing:?}");
    }
    for (resource, verbs) in &granted {
        let used = needed.get(resource).cloned().unwrap_or_default();
        let extra: Vec<&String> = verbs.difference(&used).collect();
        assert!(extra.is_empty(), "{resource:?} grants unused {extra:?}");
    }
    // Credentials are never replaced wholesale (rotation patches their data), and the role could not if it
    // tried.
    let secrets = &granted[&(String::new(), "secrets".to_string())];
    assert!(!secrets.contains("update"));
}

/// The logical backup job runs as the pods' ServiceAccount: it lists the
/// cluster's pods to pick a replica and posts an Event on the postgresql.
#[test]
fn pod_role_lets_the_logical_backup_job_pick_a_pod_and_report() {
    let granted = grants(&cluster_role("postgres-pod"));
    let has = |resource: &str, verb: &str| {
        granted
            .get(&(String::new(), resource.to_string()))
            .is_some_and(|v| v.contains(verb))
    };
    assert!(has("pods", "list"));
    assert!(has("events", "create"));
}

#[test]
fn binding_the_pod_role_needs_only_bind_on_it() {
    let role = cluster_role("pgherd-coordinator");
    let named: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("resourceNames").is_some())
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(strings(&named[0]["resources"]), ["clusterroles"]);
    assert_eq!(strings(&named[0]["resourceNames"]), ["postgres-pod"]);
    assert_eq!(strings(&named[0]["verbs"]), ["bind"]);
    // The RoleBinding the builders make refers to that ClusterRole.
    let pg: Postgresql = serde_yaml_ng::from_str(
        "metadata: {name: acid-x}\nspec: {teamId: acid, volume: {size: 1Gi}, numberOfInstances: 1, postgresql: {version: '17'}}",
    )
    .unwrap();
    let built = build_all(
        &pg,
        &OperatorConfig::default(),
        "db",
        &ExternalInputs::default(),
        &mut PlaceholderPasswords,
    )
    .unwrap();
    assert_eq!(built.role_binding.role_ref.kind, "ClusterRole");
    assert_eq!(built.role_binding.role_ref.name, "postgres-pod");
}

/// Leader election needs the Lease in the coordinator's own namespace only:
/// a Role, not a ClusterRole rule, with `create` (which cannot name the
/// object) and `get`/`update` of exactly the Lease the Deployment names.
#[test]
fn leader_election_role_grants_only_the_lease() {
    let role = deploy_object("rbac.yaml", "Role", "pgherd-coordinator");
    let sa = deploy_object("rbac.yaml", "ServiceAccount", "pgherd-coordinator");
    let binding = deploy_object("rbac.yaml", "RoleBinding", "pgherd-coordinator");
    let deployment = deploy_object("coordinator.yaml", "Deployment", "pgherd-coordinator");
    let namespace = &sa["metadata"]["namespace"];
    assert_eq!(&role["metadata"]["namespace"], namespace);
    assert_eq!(&binding["metadata"]["namespace"], namespace);
    assert_eq!(&deployment["metadata"]["namespace"], namespace);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], "pgherd-coordinator");
    assert_eq!(binding["subjects"][0]["name"], "pgherd-coordinator");

    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let lease = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEADER_ELECTION_LEASE")
        .map(|e| e["value"].as_str().unwrap().to_string())
        .expect("coordinator.yaml sets LEADER_ELECTION_LEASE");
    assert_eq!(lease, pgherd_coordinator::leader::DEFAULT_LEASE);

    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    for rule in rules {
        assert_eq!(strings(&rule["apiGroups"]), ["coordination.k8s.io"]);
        assert_eq!(strings(&rule["resources"]), ["leases"]);
    }
    assert_eq!(strings(&rules[0]["verbs"]), ["create"]);
    assert!(rules[0].get("resourceNames").is_none());
    assert_eq!(strings(&rules[1]["resourceNames"]), [lease]);
    assert_eq!(strings(&rules[1]["verbs"]), ["get", "update"]);

    // Nothing cluster-wide about Leases.
    let granted = grants(&cluster_role("pgherd-coordinator"));
    assert!(!granted
        .keys()
        .any(|(g, r)| g == "coordination.k8s.io" || r == "leases"));
}
