//! Which pods run an outdated template and why.
//!
//! The desired pod template is stamped with a hash of itself before it is
//! applied, and each pod inherits the stamp from the template it was created
//! from. Comparing stamps, never live fields, means API-server defaults,
//! canonicalised quantities and webhook rewrites of the pod cannot cause a
//! roll (postgres-operator#927, #1377, #1955, #2436).
//!
//! What the hash leaves out, so changing it replaces no pod:
//! - `bootstrap.dcs` of `SPILO_CONFIGURATION`: Patroni's dynamic settings are
//!   applied through `PATCH /config` (upstream compares the variable without
//!   `dcs` too, `cluster.go` `compareSpiloConfiguration`);
//! - its local `postgresql.parameters` (`shared_buffers` and the others
//!   Spilo keeps locally): they go to the DCS too, and a member whose agent
//!   copies them into its local configuration (Patroni tag
//!   `pgherd_follows_dcs`) applies them with a restart through Patroni. Their
//!   own stamps still replace a pod when its member cannot (a Spilo image), or
//!   when a name was removed: the member would fall back to the value it
//!   started with, which for a pod created from the manifest with that name
//!   is the removed one;
//! - the template's annotations: pgherd does not roll pods for them;
//! - the postgres container's image, recorded in its own annotation, so the
//!   lazy upgrade can ignore image-only changes.
//!
//! Pods created before templates were stamped (an earlier pgherd, or
//! Zalando's operator) are compared field by field on the fields pgherd sets,
//! tolerating values the API server adds or canonicalises.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::builders::volumes::POSTGRES_CONTAINER;
use crate::diff::drifted_paths;

/// Hash of the pod template without the parts listed in the module docs.
pub const TEMPLATE_HASH_ANNOTATION: &str = "pgherd.io/pod-template-hash";
/// The postgres container's image the template asked for.
pub const IMAGE_ANNOTATION: &str = "pgherd.io/postgres-image";
/// Hash of the local `postgresql.parameters` of `SPILO_CONFIGURATION`.
pub const PARAMETERS_ANNOTATION: &str = "pgherd.io/local-parameters-hash";
/// Their names, comma-separated (names only: values can be secrets).
pub const PARAMETER_NAMES_ANNOTATION: &str = "pgherd.io/local-parameters";

/// Copy of a pod template (or a pod) reduced to what decides a replacement.
fn comparable(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "labels");
    }
    let containers = t
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut);
    for c in containers.into_iter().flatten() {
        if c.get("name").and_then(Value::as_str) != Some(POSTGRES_CONTAINER) {
            continue;
        }
        if let Some(c) = c.as_object_mut() {
            c.remove("image");
        }
        for e in c
            .get_mut("env")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if e.get("name").and_then(Value::as_str) == Some("SPILO_CONFIGURATION") {
                if let Some(v) = e.get("value").and_then(Value::as_str) {
                    e["value"] = Value::String(shape(v));
                }
            }
        }
    }
    t
}

/// `SPILO_CONFIGURATION` without `bootstrap.dcs` and the local parameters;
/// unparsable text is kept as it is, so it still counts as a change.
fn shape(spilo_configuration: &str) -> String {
    match serde_json::from_str::<Value>(spilo_configuration) {
        Ok(mut v) => {
            if let Some(b) = v.get_mut("bootstrap").and_then(Value::as_object_mut) {
                b.remove("dcs");
            }
            if let Some(pg) = v.get_mut("postgresql").and_then(Value::as_object_mut) {
                pg.remove("parameters");
            }
            v.to_string()
        }
        Err(_) => spilo_configuration.to_string(),
    }
}

/// The local `postgresql.parameters` of the postgres container's
/// `SPILO_CONFIGURATION` (empty when there are none).
fn local_parameters(spec: &Value) -> Map<String, Value> {
    let env = spec
        .get("containers")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(POSTGRES_CONTAINER))
        })
        .and_then(|c| c.get("env"))
        .and_then(Value::as_array);
    env.into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("SPILO_CONFIGURATION"))
        .and_then(|e| e.get("value")?.as_str())
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|v| v.pointer("/postgresql/parameters")?.as_object().cloned())
        .unwrap_or_default()
}

/// What the stamps say of the local parameters: their names and a hash of
/// names and values.
#[derive(Debug, PartialEq)]
struct Parameters {
    names: BTreeSet<String>,
    hash: String,
}

impl Parameters {
    fn of_spec(spec: &Value) -> Self {
        let params = local_parameters(spec);
        Parameters {
            names: params.keys().cloned().collect(),
            hash: hash(&Value::Object(params)),
        }
    }

    /// From the stamps of a template or a pod; from its spec when it has
    /// none (pods of an earlier pgherd or of Zalando's operator).
    fn of(obj: &Value) -> Self {
        match (
            annotation(obj, PARAMETER_NAMES_ANNOTATION),
            annotation(obj, PARAMETERS_ANNOTATION),
        ) {
            (Some(names), Some(hash)) => Parameters {
                names: names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect(),
                hash: hash.to_string(),
            },
            _ => Self::of_spec(obj.get("spec").unwrap_or(&Value::Null)),
        }
    }
}

/// Why the local parameters alone need a new pod, or `None`.
fn parameters_reason(pod: &Value, template: &Value, live: bool) -> Option<String> {
    let (have, want) = (Parameters::of(pod), Parameters::of(template));
    let removed: Vec<&str> = have
        .names
        .difference(&want.names)
        .map(String::as_str)
        .collect();
    if !removed.is_empty() {
        return Some(format!(
            "local Postgres parameters removed from the manifest: {}",
            removed.join(", ")
        ));
    }
    (have.hash != want.hash && !live)
        .then(|| "local Postgres parameters changed and this member cannot apply them live".into())
}

fn postgres_image(spec: &Value) -> Option<&str> {
    spec.get("containers")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(POSTGRES_CONTAINER))?
        .get("image")?
        .as_str()
}

fn hash(v: &Value) -> String {
    let digest = Sha256::digest(serde_json::to_vec(v).expect("serialisable"));
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Stamps the StatefulSet's pod template with its hash and image, so every
/// pod created from it carries them.
pub fn stamp_template(statefulset: &mut Value) {
    let Some(template) = statefulset.pointer_mut("/spec/template") else {
        return;
    };
    let h = hash(&comparable(template));
    let parameters = Parameters::of_spec(template.get("spec").unwrap_or(&Value::Null));
    let image = template
        .get("spec")
        .and_then(postgres_image)
        .map(str::to_string);
    let meta = template
        .as_object_mut()
        .expect("pod template is an object")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let annotations = meta
        .as_object_mut()
        .expect("metadata is an object")
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    let a = annotations
        .as_object_mut()
        .expect("annotations are an object");
    a.insert(TEMPLATE_HASH_ANNOTATION.into(), Value::String(h));
    a.insert(PARAMETERS_ANNOTATION.into(), Value::String(parameters.hash));
    let names: Vec<String> = parameters.names.into_iter().collect();
    a.insert(
        PARAMETER_NAMES_ANNOTATION.into(),
        Value::String(names.join(",")),
    );
    if let Some(image) = image {
        a.insert(IMAGE_ANNOTATION.into(), Value::String(image));
    }
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Why `pod` must be replaced to match the (stamped) `template`, or `None`.
/// With `lazy_image`, an image difference alone is no reason; with
/// `live_parameters` (its member follows the DCS), new values of local
/// parameters are none either.
pub fn replacement_reason(
    pod: &Value,
    template: &Value,
    lazy_image: bool,
    live_parameters: bool,
) -> Option<String> {
    let desired_image = template.get("spec").and_then(postgres_image);
    if let Some(reason) = parameters_reason(pod, template, live_parameters) {
        return Some(reason);
    }
    let (changed, pod_image) = match annotation(pod, TEMPLATE_HASH_ANNOTATION) {
        Some(h) => (
            (annotation(template, TEMPLATE_HASH_ANNOTATION) != Some(h))
                .then(|| "pod template changed".to_string()),
            annotation(pod, IMAGE_ANNOTATION),
        ),
        None => {
            let paths = drifted_paths(
                comparable(template).get("spec").unwrap_or(&Value::Null),
                comparable(pod).get("spec").unwrap_or(&Value::Null),
            );
            let changed = (!paths.is_empty()).then(|| {
                let shown: Vec<&str> = paths.iter().take(3).map(|p| p.as_str()).collect();
                format!("pod spec differs at {}", shown.join(", "))
            });
            (changed, pod.get("spec").and_then(postgres_image))
        }
    };
    if changed.is_some() {
        return changed;
    }
    match (desired_image, pod_image) {
        (Some(want), Some(have)) if want != have && !lazy_image => {
            Some(format!("image {have} -> {want}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOT_LIVE: &str =
        "local Postgres parameters changed and this member cannot apply them live";

    fn template(image: &str, cpu: &str, dcs_ttl: u32) -> Value {
        with_parameters(image, cpu, dcs_ttl, r#""shared_buffers":"64MB""#)
    }

    fn with_parameters(image: &str, cpu: &str, dcs_ttl: u32, parameters: &str) -> Value {
        let spilo = format!(
            r#"{{"postgresql":{{"parameters":{{{parameters}}}}},"bootstrap":{{"initdb":[],"dcs":{{"ttl":{dcs_ttl}}}}}}}"#
        );
        let mut sts = json!({"spec": {"template": {
            "metadata": {"labels": {"application": "spilo"}, "annotations": {"team": "a"}},
            "spec": {"containers": [{
                "name": "postgres", "image": image,
                "env": [{"name": "SPILO_CONFIGURATION", "value": spilo}],
                "resources": {"requests": {"cpu": cpu}}}]}}}});
        stamp_template(&mut sts);
        sts["spec"]["template"].take()
    }

    /// A pod as the API server returns it for `template`: defaults added,
    /// quantities canonical, a webhook's annotation, a rewritten image.
    fn pod_of(template: &Value) -> Value {
        let mut pod = template.clone();
        let c = &mut pod["spec"]["containers"][0];
        c["terminationMessagePath"] = json!("/dev/termination-log");
        c["imagePullPolicy"] = json!("IfNotPresent");
        c["image"] = json!("mirror.example.com/rewritten:1");
        pod["metadata"]["annotations"]["sidecar.istio.io/status"] = json!("x");
        pod["metadata"]["name"] = json!("acid-0");
        pod["spec"]["nodeName"] = json!("node-1");
        pod
    }

    #[test]
    fn a_pod_of_the_current_template_needs_nothing_whatever_the_server_added() {
        let t = template("spilo:1", "1", 30);
        assert_eq!(replacement_reason(&pod_of(&t), &t, false, false), None);
    }

    #[test]
    fn table_of_changes() {
        let base = template("spilo:1", "1", 30);
        let pod = pod_of(&base);
        let shared_buffers =
            |v: &str| with_parameters("spilo:1", "1", 30, &format!(r#""shared_buffers":"{v}""#));
        let cases: Vec<(&str, Value, bool, bool, Option<&str>)> = vec![
            ("same", base.clone(), false, false, None),
            (
                "image",
                template("spilo:2", "1", 30),
                false,
                true,
                Some("image spilo:1 -> spilo:2"),
            ),
            (
                "image, lazy",
                template("spilo:2", "1", 30),
                true,
                true,
                None,
            ),
            (
                "resources",
                template("spilo:1", "2", 30),
                false,
                true,
                Some("pod template changed"),
            ),
            (
                "resources, lazy",
                template("spilo:1", "2", 30),
                true,
                true,
                Some("pod template changed"),
            ),
            // Patroni's dynamic configuration goes through PATCH /config.
            ("dcs only", template("spilo:1", "1", 20), false, false, None),
            // A local parameter's value: through the DCS when the member
            // follows it, else a new pod.
            (
                "local value, live",
                shared_buffers("1GB"),
                false,
                true,
                None,
            ),
            (
                "local value",
                shared_buffers("1GB"),
                false,
                false,
                Some(NOT_LIVE),
            ),
            (
                "local name added, live",
                with_parameters("spilo:1", "1", 30, r#""shared_buffers":"64MB","ssl":"on""#),
                false,
                true,
                None,
            ),
            (
                "local name removed",
                with_parameters("spilo:1", "1", 30, ""),
                false,
                true,
                Some("local Postgres parameters removed from the manifest: shared_buffers"),
            ),
        ];
        for (name, desired, lazy, live, want) in cases {
            assert_eq!(
                replacement_reason(&pod, &desired, lazy, live).as_deref(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn template_annotations_do_not_change_the_hash() {
        let a = template("spilo:1", "1", 30);
        let mut sts = json!({"spec": {"template": a.clone()}});
        sts["spec"]["template"]["metadata"]["annotations"]["team"] = json!("b");
        stamp_template(&mut sts);
        assert_eq!(
            annotation(&a, TEMPLATE_HASH_ANNOTATION),
            annotation(&sts["spec"]["template"], TEMPLATE_HASH_ANNOTATION)
        );
    }

    #[test]
    fn unstamped_pods_are_compared_on_the_fields_pgherd_sets() {
        let t = template("spilo:1", "1", 30);
        let mut pod = pod_of(&t);
        pod["metadata"]["annotations"] = json!({});
        pod["spec"]["containers"][0]["image"] = json!("spilo:1");
        // Canonical quantity and a changed dcs section: still current.
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1000m");
        let spilo = r#"{"postgresql":{"parameters":{"shared_buffers":"64MB"}},"bootstrap":{"initdb":[],"dcs":{"ttl":99}}}"#;
        pod["spec"]["containers"][0]["env"][0]["value"] = json!(spilo);
        assert_eq!(replacement_reason(&pod, &t, false, false), None);

        let mut old = pod.clone();
        old["spec"]["containers"][0]["image"] = json!("spilo:0");
        assert_eq!(
            replacement_reason(&old, &t, false, true).as_deref(),
            Some("image spilo:0 -> spilo:1")
        );
        assert_eq!(replacement_reason(&old, &t, true, true), None);

        let mut other = pod.clone();
        other["spec"]["containers"][0]["env"][0]["value"] = json!(
            r#"{"postgresql":{"parameters":{"shared_buffers":"1GB"}},"bootstrap":{"initdb":[]}}"#
        );
        assert_eq!(
            replacement_reason(&other, &t, false, false).as_deref(),
            Some(NOT_LIVE)
        );
        assert_eq!(replacement_reason(&other, &t, false, true), None);
        other["spec"]["containers"][0]["env"][0]["value"] = json!(
            r#"{"postgresql":{"parameters":{"shared_buffers":"64MB","ssl":"on"}},"bootstrap":{"initdb":[]}}"#
        );
        assert_eq!(
            replacement_reason(&other, &t, false, true).as_deref(),
            Some("local Postgres parameters removed from the manifest: ssl")
        );
        other["spec"]["containers"][0]["env"][0]["value"] = json!(
            r#"{"postgresql":{"parameters":{"shared_buffers":"64MB"}},"bootstrap":{"initdb":["x"]}}"#
        );
        assert_eq!(
            replacement_reason(&other, &t, false, true).as_deref(),
            Some("pod spec differs at .containers[postgres].env[SPILO_CONFIGURATION].value")
        );
    }
}
