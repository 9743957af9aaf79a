//! Offline checks of deployment artefacts (`tests/deploy.rs`, docs/deploy.md): rendering the Helm chart,
//! validating YAML streams with `kubernetes-validate --strict` and custom resources against their CRD's
//! openAPIV3Schema. Nothing here talks to an API server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::tools;

/// With this release name in this namespace the chart's objects get the names of `deploy/*.yaml`.
pub const RELEASE: &str = "pgherd-coordinator";
pub const NAMESPACE: &str = "default";

/// The Kubernetes API the coordinator is built against (k8s-openapi feature `v1_33`), and the newest
/// schemas kubernetes-validate 1.37.0 bundles.
pub const K8S_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// Kinds no bundled schema covers; kubernetes-validate only warns about them, so they are expected by
/// name and checked elsewhere: the `acid.zalan.do` kinds against their CRD's schema
/// (`validate_custom_resource`), PodMonitor and PrometheusRule (the Prometheus Operator's CRDs are not
/// available offline) by comparing their content with `deploy/monitoring/`.
pub const CUSTOM_KINDS: [&str; 5] = [
    "postgresql",
    "OperatorConfiguration",
    "PostgresTeam",
    "PodMonitor",
    "PrometheusRule",
];

pub fn repo() -> PathBuf {
    tools::repo_root()
}

pub fn chart() -> PathBuf {
    repo().join("deploy/helm/pgherd")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn output(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Helm with its cache, config and data directories in a temp directory of its own, so nothing of the user's
/// Helm setup (repositories, plugins) is read or written.
pub fn helm() -> Command {
    let home = std::env::temp_dir().join("pgherd-helm-home");
    let mut cmd = Command::new(tools::helm().unwrap());
    for (var, dir) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, home.join(dir));
    }
    cmd
}

/// `helm template` of the chart, CRDs included, with extra arguments (`--set`, `-f`).
pub fn render(extra: &[&str]) -> String {
    let out = output(
        helm()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", NAMESPACE, "--include-crds"])
            .args(extra),
        None,
    );
    assert!(
        out.status.success(),
        "helm template {extra:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The error of a `helm template` that must fail.
pub fn render_error(extra: &[&str]) -> String {
    let out = output(
        helm()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", NAMESPACE])
            .args(extra),
        None,
    );
    assert!(
        !out.status.success(),
        "helm template {extra:?} should fail, rendered:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// The non-empty documents of a YAML stream, as JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn file_documents(rel: &str) -> Vec<Value> {
    documents(&read(&repo().join(rel)))
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {}", kinds(docs)))
}

pub fn find_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut it = docs.iter().filter(|d| d["kind"] == kind);
    let doc = it
        .next()
        .unwrap_or_else(|| panic!("no {kind} among {}", kinds(docs)));
    assert!(it.next().is_none(), "more than one {kind}");
    doc
}

pub fn kinds(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

// --- kubernetes-validate ----------------------------------------------------------------------------------

/// Runs `kubernetes-validate --strict` on a YAML stream (from stdin, as a pipe would) for each version in
/// `K8S_VERSIONS`. The tool exits 0 for kinds it has no schema for, so its report is read: every object
/// must have passed against the requested version, except `CUSTOM_KINDS`, which must be the only ones it
/// warns about.
pub fn kubernetes_validate(label: &str, yaml: &str) -> Result<(), String> {
    let docs = documents(yaml);
    let mut want_passed: Vec<String> = Vec::new();
    let mut want_custom: Vec<String> = Vec::new();
    for d in &docs {
        let kind = d["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: no kind"));
        if CUSTOM_KINDS.contains(&kind) {
            want_custom.push(kind.to_string());
        } else {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            want_passed.push(format!("{}/{name}", kind.to_lowercase()));
        }
    }
    want_passed.sort();
    want_custom.sort();
    for version in K8S_VERSIONS {
        let out = output(
            Command::new(tools::kubernetes_validate().unwrap())
                .args(["--strict", "-k", version, "-"]),
            Some(yaml),
        );
        let report = text(&out.stdout) + &text(&out.stderr);
        let fail = |why: &str| Err(format!("{label} (Kubernetes {version}): {why}\n{report}"));
        if !out.status.success() {
            return fail("kubernetes-validate failed");
        }
        let minor = version.rsplit_once('.').unwrap().0;
        let mut passed = Vec::new();
        let mut custom = Vec::new();
        for line in report.lines() {
            if let Some((_, rest)) = line.split_once(" passed for resource ") {
                let (resource, against) = rest.split_once(" against version ").unwrap();
                if against != minor {
                    return fail(&format!("{resource} was validated against {against}"));
                }
                passed.push(resource.to_string());
            } else if let Some((_, rest)) = line.split_once("Couldn't find schema for kind ") {
                custom.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.trim().is_empty() {
                return fail(&format!("unexpected line {line:?}"));
            }
        }
        passed.sort();
        custom.sort();
        if passed != want_passed {
            return fail(&format!("passed {passed:?}, expected {want_passed:?}"));
        }
        if custom != want_custom {
            return fail(&format!(
                "no schema for {custom:?}, expected exactly {want_custom:?}"
            ));
        }
    }
    Ok(())
}

// --- Custom resources against their CRD -------------------------------------------------------------------

pub fn crds() -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        out.extend(documents(&read(&entry.unwrap().path())));
    }
    out
}

/// Checks a value against an OpenAPI v3 schema of a structural CRD: types, `nullable`, `required`,
/// `enum`, `minimum`/`maximum`, `anyOf`/`not`, `items`, `additionalProperties`,
/// `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`. Unknown fields are errors,
/// as with `kubectl apply --validate=strict`, where an API server would otherwise silently prune them:
/// a misspelt setting must not pass. Not checked: `pattern` and `format` (the API server does; no regex
/// engine is linked here).
pub fn check_schema(s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if v.is_null() {
        if s["nullable"] != true {
            errs.push(format!("{path}: null, but the field is not nullable"));
        }
        return;
    }
    if s["x-kubernetes-int-or-string"] == true {
        if !(v.is_i64() || v.is_u64() || v.is_string()) {
            errs.push(format!("{path}: {v} is neither an integer nor a string"));
        }
        return;
    }
    if let Some(alternatives) = s["anyOf"].as_array() {
        let matches = alternatives.iter().any(|alt| {
            let mut e = Vec::new();
            check_schema(alt, v, path, &mut e);
            e.is_empty()
        });
        if !matches {
            errs.push(format!("{path}: matches none of anyOf {}", s["anyOf"]));
        }
    }
    if let Some(not) = s.get("not") {
        let mut e = Vec::new();
        check_schema(not, v, path, &mut e);
        if e.is_empty() {
            errs.push(format!("{path}: must not match {not}"));
        }
    }
    if let Some(values) = s["enum"].as_array() {
        if !values.contains(v) {
            errs.push(format!("{path}: {v} is not one of {}", s["enum"]));
        }
    }
    if let (Some(map), Some(required)) = (v.as_object(), s["required"].as_array()) {
        for r in required {
            if !map.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{path}: required field {r} missing"));
            }
        }
    }
    let wrong = |errs: &mut Vec<String>, ty: &str| errs.push(format!("{path}: {v} is not {ty}"));
    match s["type"].as_str() {
        Some("object") => {
            let Some(map) = v.as_object() else {
                return wrong(errs, "an object");
            };
            for (k, item) in map {
                let p = format!("{path}.{k}");
                match (s["properties"].get(k), s.get("additionalProperties")) {
                    (Some(prop), _) => check_schema(prop, item, &p, errs),
                    (None, Some(Value::Bool(false))) | (None, None)
                        if s["x-kubernetes-preserve-unknown-fields"] != true =>
                    {
                        errs.push(format!("{p}: unknown field"))
                    }
                    (None, Some(additional)) if additional.is_object() => {
                        check_schema(additional, item, &p, errs)
                    }
                    _ => {}
                }
            }
        }
        Some("array") => {
            let Some(items) = v.as_array() else {
                return wrong(errs, "an array");
            };
            for (i, item) in items.iter().enumerate() {
                check_schema(&s["items"], item, &format!("{path}[{i}]"), errs);
            }
        }
        Some("string") if !v.is_string() => wrong(errs, "a string"),
        Some("boolean") if !v.is_boolean() => wrong(errs, "a boolean"),
        Some("number") if !v.is_number() => wrong(errs, "a number"),
        Some("integer") => {
            if !(v.is_i64() || v.is_u64()) {
                return wrong(errs, "an integer");
            }
            let n = v.as_f64().unwrap();
            if s["minimum"].as_f64().is_some_and(|min| n < min) {
                errs.push(format!("{path}: {v} is below the minimum {}", s["minimum"]));
            }
            if s["maximum"].as_f64().is_some_and(|max| n > max) {
                errs.push(format!("{path}: {v} is above the maximum {}", s["maximum"]));
            }
        }
        Some("string" | "boolean" | "number") | None => {}
        Some(other) => errs.push(format!("{path}: schema type {other} not handled")),
    }
}

/// Validates an `acid.zalan.do` object against the schema of its version in `crds/`.
pub fn validate_custom_resource(obj: &Value) -> Result<(), Vec<String>> {
    let (group, version) = obj["apiVersion"].as_str().unwrap().split_once('/').unwrap();
    let crd = crds()
        .into_iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == obj["kind"])
        .unwrap_or_else(|| panic!("no CRD in crds/ for {} {}", obj["apiVersion"], obj["kind"]));
    let schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("CRD {} has no version {version}", crd["metadata"]["name"]));
    // apiVersion, kind and metadata are the API server's, not the CRD schema's.
    let mut body = obj.clone();
    for key in ["apiVersion", "kind", "metadata"] {
        body.as_object_mut().unwrap().remove(key);
    }
    let mut errs = Vec::new();
    check_schema(&schema, &body, "", &mut errs);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Everything offline validation can say about a YAML stream.
pub fn validate_all(label: &str, yaml: &str) {
    kubernetes_validate(label, yaml).unwrap_or_else(|e| panic!("{e}"));
    for doc in documents(yaml) {
        if doc["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("acid.zalan.do/"))
        {
            validate_custom_resource(&doc).unwrap_or_else(|errs| {
                panic!(
                    "{label}: {} {} does not match its CRD:\n{}",
                    doc["kind"],
                    doc["metadata"]["name"],
                    errs.join("\n")
                )
            });
        }
    }
}

// --- Tests ------------------------------------------------------------------------------------------------

pub fn workspace_version() -> String {
    let cargo = read(&repo().join("Cargo.toml"));
    let section = cargo
        .split("[workspace.package]")
        .nth(1)
        .expect("[workspace.package] in Cargo.toml");
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("version"))
        .expect("workspace version");
    line.split('"').nth(1).unwrap().to_string()
}
