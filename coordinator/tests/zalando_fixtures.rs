//! Zalando's own example manifests load unchanged, round-trip without
//! losing a field, and render; invalid manifests name the bad field.

use std::path::PathBuf;

use pgherd_coordinator::config::OperatorConfig;
use pgherd_shared::crd::{
    from_value, load_postgresql, OperatorConfiguration, PostgresTeam, Postgresql,
};
use serde::Deserialize;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zalando")
}

/// Every YAML document of every fixture file, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    out
}

fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// Deserialise, serialise, compare as JSON: any field we do not model is lost.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, v: &Value) {
    let typed: T = from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, v, "{file}: round trip changed the document");
}

#[test]
fn every_example_round_trips() {
    let mut seen = std::collections::BTreeMap::new();
    for (file, v) in documents() {
        match kind(&v) {
            "postgresql" => round_trip::<Postgresql>(&file, &v),
            "OperatorConfiguration" => round_trip::<OperatorConfiguration>(&file, &v),
            "PostgresTeam" => round_trip::<PostgresTeam>(&file, &v),
            _ => continue,
        }
        *seen.entry(kind(&v).to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("postgresql"), Some(&5));
    assert_eq!(seen.get("OperatorConfiguration"), Some(&1));
    assert_eq!(seen.get("PostgresTeam"), Some(&1));
}

#[test]
fn every_example_postgresql_is_valid_and_renders() {
    for (file, v) in documents() {
        if kind(&v) != "postgresql" {
            continue;
        }
        let pg = load_postgresql(v).unwrap_or_else(|e| panic!("{file}: {e}"));
        pgherd_coordinator::builders::build_all(
            &pg,
            &OperatorConfig::default(),
            "default",
            &Default::default(),
            &mut pgherd_coordinator::builders::PlaceholderPasswords,
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn both_configuration_formats_load_with_the_same_meaning() {
    let read = |f: &str| std::fs::read_to_string(fixtures().join(f)).unwrap();
    let from_crd =
        OperatorConfig::from_yaml(&read("postgresql-operator-default-configuration.yaml")).unwrap();
    let from_cm = OperatorConfig::from_yaml(&read("configmap.yaml")).unwrap();
    for cfg in [&from_crd, &from_cm] {
        assert_eq!(cfg.docker_image, "ghcr.io/zalando/spilo-18:4.1-p2");
        assert_eq!(cfg.cluster_name_label, "cluster-name");
        assert_eq!(cfg.default_cpu_request, "100m");
        assert_eq!(cfg.default_memory_limit, "500Mi");
        assert_eq!(cfg.pdb_name_format, "postgres-{cluster}-pdb");
        assert_eq!(cfg.pod_terminate_grace_period.as_secs(), 300);
    }
    // The sample ConfigMap differs from the CRD sample on these.
    assert!(!from_cm.kubernetes_use_configmaps);
    assert!(from_crd.kubernetes_use_configmaps);
    assert_eq!(from_cm.min_cpu_limit, "250m");
    assert_eq!(from_cm.watched_namespace, "*");
}

fn minimal() -> Value {
    serde_json::json!({
        "apiVersion": "acid.zalan.do/v1",
        "kind": "postgresql",
        "metadata": {"name": "acid-minimal-cluster"},
        "spec": {
            "teamId": "acid",
            "volume": {"size": "1Gi"},
            "numberOfInstances": 2,
            "postgresql": {"version": "17"}
        }
    })
}

fn error_fields(mutate: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = minimal();
    mutate(&mut v);
    load_postgresql(v).expect_err("must be rejected").fields()
}

#[test]
fn invalid_manifests_name_the_field() {
    assert_eq!(
        error_fields(|v| v["spec"]["numberOfInstances"] = (-1).into()),
        ["spec.numberOfInstances"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["postgresql"]["version"] = "9.6".into()),
        ["spec.postgresql.version"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["volume"]["size"] = "ten gigs".into()),
        ["spec.volume.size"]
    );
    assert_eq!(
        error_fields(|v| {
            v["spec"]["clone"] = serde_json::json!({"cluster": "acid-source"});
            v["spec"]["standby"] = serde_json::json!({"standby_host": "acid-source.default"});
        }),
        ["spec.standby"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["numberOfInstances"] = "two".into()),
        ["spec.numberOfInstances"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["resources"] = serde_json::json!({"limits": {"cpu": "lots"}})),
        ["spec.resources.limits.cpu"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["maintenanceWindows"] = serde_json::json!(["Sat:23:00-1:00"])),
        ["spec.maintenanceWindows[0]"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["clone"] =
            serde_json::json!({"cluster": "acid-source", "timestamp": "yesterday"})),
        ["spec.clone.timestamp"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["standby"] =
            serde_json::json!({"s3_wal_path": "s3://a", "gs_wal_path": "gs://b"})),
        ["spec.standby.gs_wal_path"]
    );
    assert_eq!(
        error_fields(
            |v| v["spec"]["users"] = serde_json::json!({"app": ["superuser", "nosuperuser"]})
        ),
        ["spec.users.app"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]["allowedSourceRanges"] = serde_json::json!(["10.0.0.1"])),
        ["spec.allowedSourceRanges[0]"]
    );
    assert_eq!(
        error_fields(|v| v["spec"]
            .as_object_mut()
            .unwrap()
            .remove("teamId")
            .map(|_| ())
            .unwrap()),
        ["spec"]
    );
    // Several problems are reported together.
    assert_eq!(
        error_fields(|v| {
            v["spec"]["numberOfInstances"] = (-3).into();
            v["spec"]["volume"]["size"] = "1GB".into();
        }),
        ["spec.numberOfInstances", "spec.volume.size"]
    );
}

#[test]
fn render_prints_every_object_of_every_postgresql_document() {
    let text =
        std::fs::read_to_string(fixtures().join("minimal-master-replica-svcmonitor.yaml")).unwrap();
    let out =
        pgherd_coordinator::render::render(&text, &OperatorConfig::default(), "default").unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "RoleBinding",
            "Service",
            "Service",
            "Secret",
            "Secret",
            "Secret",
            "Secret",
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "StatefulSet"
        ]
    );
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "test-pg"));
    // No real password is ever printed.
    for secret in docs.iter().filter(|d| kind(d) == "Secret") {
        assert_eq!(
            secret["stringData"]["password"],
            pgherd_coordinator::builders::secrets::PASSWORD_PLACEHOLDER
        );
        assert!(secret.get("data").is_none());
    }
    // Rendering is deterministic.
    let again =
        pgherd_coordinator::render::render(&text, &OperatorConfig::default(), "default").unwrap();
    assert_eq!(out, again);

    let two = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(fixtures().join("minimal-postgres-manifest.yaml")).unwrap(),
        std::fs::read_to_string(fixtures().join("standby-manifest.yaml")).unwrap()
    );
    let out =
        pgherd_coordinator::render::render(&two, &OperatorConfig::default(), "default").unwrap();
    assert_eq!(out.matches("kind: StatefulSet").count(), 2);

    let err = pgherd_coordinator::render::render(
        "apiVersion: acid.zalan.do/v1\nkind: postgresql\nmetadata: {name: acid-x}\nspec: {teamId: acid, numberOfInstances: -1, volume: {size: 1Gi}, postgresql: {version: \"17\"}}\n",
        &OperatorConfig::default(),
        "default",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "document 1 (acid-x): spec.numberOfInstances: must be 0 or more, got -1"
    );
}

#[test]
fn deploy_example_configuration_loads() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/operatorconfiguration.yaml");
    let cfg = OperatorConfig::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        cfg.deletion_policy,
        pgherd_coordinator::config::DeletionPolicy::Retain
    );
    assert_eq!(cfg.watched_namespace, "*");
}
