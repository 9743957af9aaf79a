//! Discovery: `/version`, `/api`, `/apis`, `/apis/{group}` and the group-version resource lists, built
//! from the registry (so CRDs appear as soon as they are created).
//!
//! Only the legacy (unaggregated) format is served. kubectl 1.37 asks for aggregated discovery
//! (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) first; the answer's
//! `Content-Type: application/json` without those parameters makes client-go fall back to the per
//! group-version lists, as against an API server that predates aggregated discovery.

use serde_json::{json, Value};

use super::resources::Registry;

/// The Kubernetes version the stand-in claims: within the +/-1 skew kubectl 1.37 accepts without a warning.
pub const VERSION: (&str, &str) = ("1", "36");

pub fn version() -> Value {
    json!({"major": VERSION.0, "minor": VERSION.1, "gitVersion": format!("v{}.{}.0-pgherd-standin", VERSION.0, VERSION.1),
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
           "platform": "linux/amd64"})
}

pub fn core_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = reg
        .groups()
        .into_iter()
        .find(|(g, _)| g == name && !g.is_empty())?;
    let mut v = group_json(&g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in &types {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                           "kind": t.kind, "verbs": VERBS});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status {
            resources.push(
                json!({"name": format!("{}/status", t.plural), "singularName": "",
                                  "namespaced": t.namespaced, "kind": t.kind, "verbs": SUB_VERBS}),
            );
        }
        if t.scale {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "",
                                  "namespaced": t.namespaced, "group": "autoscaling", "version": "v1",
                                  "kind": "Scale", "verbs": SUB_VERBS}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one document per group-version. kubectl fetches them only to learn that PATCH takes
/// `fieldValidation` (then it leaves validation to the server); the documents carry no schemas.
pub fn openapi_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let kinds: Vec<String> = reg
                .in_group_version(&g, &v)
                .iter()
                .map(|t| t.kind.clone())
                .collect();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&kinds, &mut h);
            let hash = format!("{:016X}", std::hash::Hasher::finish(&h));
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// The OpenAPI v3 document of a group-version: a PATCH operation per resource, with its
/// `x-kubernetes-group-version-kind` and the `fieldValidation` query parameter.
pub fn openapi_gv(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for t in types {
        let base = format!("/{}", gv_path(group, version));
        let path = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}}
        ]);
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", t.kind), "parameters": params,
                   "responses": {"200": {"description": "OK"}}, "x-kubernetes-action": verb,
                   "x-kubernetes-group-version-kind": gvk})
        };
        paths.insert(path, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (pgherd stand-in)", "version": "unversioned"},
                "paths": paths, "components": {}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_groups_and_subresources() {
        let reg = Registry::builtin();
        let groups = group_list(&reg);
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        for g in [
            "apps",
            "batch",
            "policy",
            "rbac.authorization.k8s.io",
            "coordination.k8s.io",
            "events.k8s.io",
        ] {
            assert!(names.contains(&g), "{g}");
        }
        assert!(!names.contains(&""));
        let apps = resource_list(&reg, "apps", "v1").unwrap();
        let res: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            res.contains(&"statefulsets")
                && res.contains(&"statefulsets/status")
                && res.contains(&"statefulsets/scale")
        );
        let core = resource_list(&reg, "", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        assert!(resource_list(&reg, "nope", "v1").is_none());
        assert_eq!(
            group(&reg, "apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }
}
