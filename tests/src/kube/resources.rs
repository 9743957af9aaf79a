//! The resource types the stand-in serves: the built-in kinds pgherd, Patroni, kubectl and the later
//! controllers use, and custom resources registered from CRDs (from `crds/` at start or created through the API).

use std::sync::Arc;

use serde_json::Value;

/// One printer column of `kubectl get` (a CRD's `additionalPrinterColumns`, or the built-in ones of table.rs).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

/// A served group/version/resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has the `status` subresource: the main resource ignores status changes and vice versa.
    pub status: bool,
    /// Has the `scale` subresource (`.spec.replicas`, `.status.replicas`, `.spec.selector`).
    pub scale: bool,
    /// `metadata.generation` is kept and bumped when anything but metadata and status changes.
    pub generation: bool,
    /// A PUT of a missing object creates it (Endpoints, Events, Leases, as upstream).
    pub create_on_update: bool,
    /// Built into Kubernetes, so strategic merge patch applies (custom resources answer 415).
    pub builtin: bool,
    /// Columns from a CRD; built-in kinds' columns are in table.rs.
    pub printer_columns: Vec<PrinterColumn>,
    /// Objects live in the storage of another resource, converted on the way (events.k8s.io/v1 Events are
    /// stored as core/v1 Events, as upstream).
    pub storage_of: Option<(String, String)>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key: group and plural, shared by all versions of a resource.
    pub fn storage(&self) -> String {
        match &self.storage_of {
            Some((g, p)) => format!("{g}/{p}"),
            None => format!("{}/{}", self.group, self.plural),
        }
    }

    /// `configmaps` or `statefulsets.apps`, as in upstream's error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

struct Builtin {
    gv: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    /// s = status, c = scale, g = generation, u = create on update, a = category "all"
    flags: &'static str,
}

const fn b(
    gv: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    flags: &'static str,
) -> Builtin {
    Builtin {
        gv,
        kind,
        plural,
        namespaced,
        short,
        flags,
    }
}

const BUILTINS: &[Builtin] = &[
    b("v1", "Namespace", "namespaces", false, &["ns"], "s"),
    b("v1", "Node", "nodes", false, &["no"], "s"),
    b("v1", "Pod", "pods", true, &["po"], "sga"),
    b("v1", "Service", "services", true, &["svc"], "sa"),
    b("v1", "Endpoints", "endpoints", true, &["ep"], "u"),
    b("v1", "ConfigMap", "configmaps", true, &["cm"], ""),
    b("v1", "Secret", "secrets", true, &[], ""),
    b("v1", "ServiceAccount", "serviceaccounts", true, &["sa"], ""),
    b(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        "s",
    ),
    b(
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        "s",
    ),
    b("v1", "Event", "events", true, &["ev"], "u"),
    b(
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        "scga",
    ),
    b(
        "apps/v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        "scga",
    ),
    b(
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        "scga",
    ),
    b(
        "apps/v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        &[],
        "",
    ),
    b("batch/v1", "Job", "jobs", true, &[], "sga"),
    b("batch/v1", "CronJob", "cronjobs", true, &["cj"], "sga"),
    b(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        "sg",
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "Role",
        "roles",
        true,
        &[],
        "",
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        "",
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        "",
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        "",
    ),
    b("coordination.k8s.io/v1", "Lease", "leases", true, &[], "u"),
    b("events.k8s.io/v1", "Event", "events", true, &[], "u"),
    b(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        "sg",
    ),
];

/// Every resource type served, built-in first, in discovery order.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    pub fn builtin() -> Self {
        let types = BUILTINS
            .iter()
            .map(|b| {
                let (group, version) = b.gv.rsplit_once('/').unwrap_or(("", b.gv));
                let storage_of =
                    (group == "events.k8s.io").then(|| (String::new(), "events".into()));
                Arc::new(ResourceType {
                    group: group.into(),
                    version: version.into(),
                    kind: b.kind.into(),
                    plural: b.plural.into(),
                    singular: b.kind.to_lowercase(),
                    namespaced: b.namespaced,
                    short_names: b.short.iter().map(|s| s.to_string()).collect(),
                    categories: if b.flags.contains('a') {
                        vec!["all".into()]
                    } else {
                        vec![]
                    },
                    status: b.flags.contains('s'),
                    scale: b.flags.contains('c'),
                    generation: b.flags.contains('g'),
                    create_on_update: b.flags.contains('u'),
                    builtin: true,
                    printer_columns: vec![],
                    storage_of,
                })
            })
            .collect();
        Registry { types }
    }

    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The type of an object by its `apiVersion` and `kind`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    /// The first type registered under a storage key (the one whose form is stored).
    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.storage() == storage && t.storage_of.is_none())
            .cloned()
    }

    /// Groups in discovery order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version.clone()),
                Some(_) => {}
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }

    /// Registers (or re-registers) the served versions of a CRD object.
    pub fn add_crd(&mut self, crd: &Value) -> Result<(), String> {
        let new = crd_types(crd)?;
        self.remove_crd(crd);
        self.types.extend(new.into_iter().map(Arc::new));
        Ok(())
    }

    pub fn remove_crd(&mut self, crd: &Value) {
        let group = crd.pointer("/spec/group").and_then(Value::as_str);
        let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str);
        self.types.retain(|t| {
            t.builtin || Some(t.group.as_str()) != group || Some(t.plural.as_str()) != plural
        });
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// The resource types of a CRD's served versions.
pub fn crd_types(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("CRD without spec")?;
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(String::from);
    let group = s("/group").ok_or("spec.group is required")?;
    let kind = s("/names/kind").ok_or("spec.names.kind is required")?;
    let plural = s("/names/plural").ok_or("spec.names.plural is required")?;
    let singular = s("/names/singular").unwrap_or_else(|| kind.to_lowercase());
    let namespaced = s("/scope").as_deref() != Some("Cluster");
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] == Value::Bool(false) {
            continue;
        }
        let printer_columns = v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c["name"].as_str().unwrap_or_default().into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
                description: c["description"].as_str().unwrap_or_default().into(),
            })
            .collect();
        out.push(ResourceType {
            group: group.clone(),
            version: v["name"].as_str().ok_or("version without name")?.into(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings(spec.pointer("/names/shortNames")),
            categories: strings(spec.pointer("/names/categories")),
            status: v.pointer("/subresources/status").is_some(),
            scale: v.pointer("/subresources/scale").is_some(),
            generation: true,
            create_on_update: false,
            builtin: false,
            printer_columns,
            storage_of: None,
        });
    }
    if out.is_empty() {
        return Err("CRD serves no version".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_and_crds_from_the_repository() {
        let mut r = Registry::builtin();
        let sts = r.find("apps", "v1", "statefulsets").unwrap();
        assert!(sts.status && sts.scale && sts.generation && sts.namespaced);
        assert_eq!(sts.group_resource(), "statefulsets.apps");
        assert_eq!(r.find_kind("v1", "ConfigMap").unwrap().plural, "configmaps");
        let ev = r.find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(ev.storage(), "/events");
        assert_eq!(r.by_storage("/events").unwrap().group, "");

        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/postgresql.crd.yaml");
        let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
        r.add_crd(&crd).unwrap();
        let pg = r.find("acid.zalan.do", "v1", "postgresqls").unwrap();
        assert_eq!(pg.kind, "postgresql");
        assert!(pg.status && pg.namespaced && !pg.builtin);
        assert!(pg.short_names.contains(&"pg".to_string()));
        assert!(pg.printer_columns.iter().any(|c| c.name == "Status"));
        assert!(r
            .groups()
            .iter()
            .any(|(g, v)| g == "acid.zalan.do" && v == &["v1"]));
        r.remove_crd(&crd);
        assert!(r.find("acid.zalan.do", "v1", "postgresqls").is_none());
    }
}
