//! The logical backup CronJob against upstream's `TestGenerateLogicalBackupJob` and
//! `TestGenerateLogicalBackupPodEnvVars` expectations (names, labels, schedule precedence,
//! per-provider env), plus pgherd's rule that no storage key appears in the CronJob.

use pgherd_shared::crd::operator_configuration::LogicalBackupConfiguration;
use pgherd_shared::crd::Postgresql;
use serde_json::{json, Value};

use super::*;
use crate::builders::ExternalInputs;

const UID: &str = "3f2a1b8e-0000-4000-8000-000000000001";

/// Zalando's minimal manifest with logical backups on, as the API server hands it over.
fn minimal(extra: Value) -> Postgresql {
    let mut v: Value = serde_yaml_ng::from_str(include_str!(
        "../../tests/fixtures/zalando/minimal-postgres-manifest.yaml"
    ))
    .unwrap();
    v["metadata"]["namespace"] = json!("db");
    v["metadata"]["uid"] = json!(UID);
    v["spec"]["enableLogicalBackup"] = json!(true);
    for (k, val) in extra.as_object().into_iter().flatten() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn config(lb: LogicalBackupConfiguration) -> OperatorConfig {
    let mut cfg = OperatorConfig::default();
    cfg.raw.logical_backup = Some(lb);
    cfg
}

fn build(pg: &Postgresql, cfg: &OperatorConfig) -> Option<LogicalBackup> {
    logical_backup(&Cluster::new(
        pg,
        cfg,
        "default",
        &ExternalInputs::default(),
    ))
    .unwrap()
}

fn cronjob_json(pg: &Postgresql, cfg: &OperatorConfig) -> Value {
    serde_json::to_value(build(pg, cfg).unwrap().cronjob).unwrap()
}

fn container(cj: &Value) -> &Value {
    &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
}

fn env_names(cj: &Value) -> Vec<String> {
    container(cj)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn env_of<'a>(cj: &'a Value, name: &str) -> &'a Value {
    container(cj)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name}"))
}

#[test]
fn zalandos_minimal_manifest_gets_zalandos_cronjob() {
    let cj = cronjob_json(&minimal(json!({})), &OperatorConfig::default());
    assert_eq!(cj["apiVersion"], "batch/v1");
    assert_eq!(cj["kind"], "CronJob");
    assert_eq!(
        cj["metadata"]["name"],
        "logical-backup-acid-minimal-cluster"
    );
    assert_eq!(cj["metadata"]["namespace"], "db");
    let labels = json!({"application": "spilo-logical-backup", "cluster-name": "acid-minimal-cluster", "team": "acid"});
    assert_eq!(cj["metadata"]["labels"], labels);
    assert_eq!(
        cj["metadata"]["ownerReferences"],
        json!([{"apiVersion": "acid.zalan.do/v1",
        "kind": "postgresql", "name": "acid-minimal-cluster", "uid": UID, "controller": true}])
    );
    let spec = &cj["spec"];
    assert_eq!(spec["schedule"], "30 00 * * *");
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 3);
    let job = &spec["jobTemplate"];
    assert_eq!(job["metadata"]["labels"], labels);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 86400);
    assert_eq!(job["spec"]["backoffLimit"], BACKOFF_LIMIT);
    let pod = &job["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"], labels);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["serviceAccountName"], "postgres-pod");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 300);
    assert!(pod["spec"].get("affinity").is_none());
    let c = container(&cj);
    assert_eq!(c["name"], "logical-backup");
    // The database image, the same one the StatefulSet runs.
    assert_eq!(c["image"], OperatorConfig::default().docker_image);
    assert_eq!(
        c["command"],
        json!(["/usr/local/bin/pgherd-agent", "logical-backup", "run"])
    );
    assert!(c.get("ports").is_none() && c.get("envFrom").is_none());
    assert_eq!(
        env_names(&cj),
        [
            "SCOPE",
            "CLUSTER_NAME_LABEL",
            "POD_NAMESPACE",
            "NODE_NAME",
            "PG_VERSION",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
            "PGPASSWORD",
            "LOGICAL_BACKUP_PROVIDER",
            "LOGICAL_BACKUP_S3_BUCKET",
            "LOGICAL_BACKUP_S3_BUCKET_PREFIX",
            "LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX",
            "LOGICAL_BACKUP_S3_REGION",
            "LOGICAL_BACKUP_S3_ENDPOINT",
            "LOGICAL_BACKUP_S3_SSE",
            "LOGICAL_BACKUP_S3_RETENTION_TIME",
        ]
    );
    let value = |n: &str| env_of(&cj, n)["value"].clone();
    assert_eq!(value("SCOPE"), "acid-minimal-cluster");
    assert_eq!(value("CLUSTER_NAME_LABEL"), "cluster-name");
    assert_eq!(value("PG_VERSION"), "18");
    assert_eq!(value("PGPORT"), "5432");
    assert_eq!(value("PGUSER"), "postgres");
    assert_eq!(value("PGDATABASE"), "postgres");
    assert_eq!(value("PGSSLMODE"), "require");
    assert_eq!(value("LOGICAL_BACKUP_PROVIDER"), "s3");
    assert_eq!(value("LOGICAL_BACKUP_S3_BUCKET_PREFIX"), "spilo");
    assert_eq!(
        value("LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX"),
        format!("/{UID}")
    );
    assert_eq!(
        env_of(&cj, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_of(&cj, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env_of(&cj, "PGPASSWORD")["valueFrom"]["secretKeyRef"],
        json!({"name": "postgres.acid-minimal-cluster.credentials.postgresql.acid.zalan.do", "key": "password"})
    );
    assert!(build(&minimal(json!({})), &OperatorConfig::default())
        .unwrap()
        .secret
        .is_none());
}

#[test]
fn literal_keys_go_to_a_secret_and_never_into_the_cronjob() {
    let cfg = config(LogicalBackupConfiguration {
        logical_backup_s3_bucket: Some("backups".into()),
        logical_backup_s3_access_key_id: Some("AKIDLITERALKEY".into()),
        logical_backup_s3_secret_access_key: Some("literal-secret-value".into()),
        ..Default::default()
    });
    let built = build(&minimal(json!({})), &cfg).unwrap();
    let cj = serde_json::to_value(&built.cronjob).unwrap();
    let text = cj.to_string();
    assert!(!text.contains("AKIDLITERALKEY") && !text.contains("literal-secret-value"));
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert_eq!(
            env_of(&cj, key)["valueFrom"]["secretKeyRef"],
            json!({"name": "logical-backup-acid-minimal-cluster", "key": key})
        );
    }
    let secret = serde_json::to_value(built.secret.expect("a Secret")).unwrap();
    assert_eq!(
        secret["metadata"]["name"],
        "logical-backup-acid-minimal-cluster"
    );
    assert_eq!(secret["metadata"]["namespace"], "db");
    assert_eq!(secret["metadata"]["labels"], cj["metadata"]["labels"]);
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        cj["metadata"]["ownerReferences"]
    );
    // base64 of the two values.
    assert_eq!(
        secret["data"],
        json!({"AWS_ACCESS_KEY_ID": "QUtJRExJVEVSQUxLRVk=", "AWS_SECRET_ACCESS_KEY": "bGl0ZXJhbC1zZWNyZXQtdmFsdWU="})
    );

    // Only the key that is set; none for GCS.
    let one = config(LogicalBackupConfiguration {
        logical_backup_s3_access_key_id: Some("AKIDLITERALKEY".into()),
        ..Default::default()
    });
    let cj = cronjob_json(&minimal(json!({})), &one);
    assert!(env_names(&cj).contains(&"AWS_ACCESS_KEY_ID".to_string()));
    assert!(!env_names(&cj).contains(&"AWS_SECRET_ACCESS_KEY".to_string()));
    let gcs = config(LogicalBackupConfiguration {
        logical_backup_provider: Some("gcs".into()),
        logical_backup_s3_access_key_id: Some("AKIDLITERALKEY".into()),
        logical_backup_google_application_credentials: Some("/var/secrets/gcs.json".into()),
        ..Default::default()
    });
    let built = build(&minimal(json!({})), &gcs).unwrap();
    assert!(built.secret.is_none());
    let cj = serde_json::to_value(&built.cronjob).unwrap();
    assert_eq!(
        env_names(&cj)[14..],
        ["LOGICAL_BACKUP_GOOGLE_APPLICATION_CREDENTIALS"]
    );
}

#[test]
fn azure_key_goes_to_the_secret_too() {
    let cfg = config(LogicalBackupConfiguration {
        logical_backup_provider: Some("az".into()),
        logical_backup_azure_storage_account_name: Some("acct".into()),
        logical_backup_azure_storage_container: Some("backups".into()),
        logical_backup_azure_storage_account_key: Some("azure-literal-key".into()),
        ..Default::default()
    });
    let built = build(&minimal(json!({})), &cfg).unwrap();
    let cj = serde_json::to_value(&built.cronjob).unwrap();
    assert!(!cj.to_string().contains("azure-literal-key"));
    assert_eq!(
        env_names(&cj)[14..],
        [
            "LOGICAL_BACKUP_AZURE_STORAGE_ACCOUNT_NAME",
            "LOGICAL_BACKUP_AZURE_STORAGE_CONTAINER",
            "LOGICAL_BACKUP_AZURE_STORAGE_ACCOUNT_KEY",
        ]
    );
    let data = built.secret.unwrap().data.unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["LOGICAL_BACKUP_AZURE_STORAGE_ACCOUNT_KEY"]
    );
}

#[test]
fn environment_secret_is_passed_whole() {
    let cfg = config(LogicalBackupConfiguration {
        logical_backup_cronjob_environment_secret: Some("backup-env".into()),
        ..Default::default()
    });
    let cj = cronjob_json(&minimal(json!({})), &cfg);
    assert_eq!(
        container(&cj)["envFrom"],
        json!([{"secretRef": {"name": "backup-env"}}])
    );
}

#[test]
fn schedule_and_retention_precedence() {
    let cfg = config(LogicalBackupConfiguration {
        logical_backup_schedule: Some("15 3 * * *".into()),
        logical_backup_s3_retention_time: Some("1 month".into()),
        ..Default::default()
    });
    let spec = json!({"logicalBackupSchedule": "*/5 * * * *", "logicalBackupRetention": "2 weeks"});
    let cj = cronjob_json(&minimal(spec), &cfg);
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(
        env_of(&cj, "LOGICAL_BACKUP_S3_RETENTION_TIME")["value"],
        "2 weeks"
    );
    let cj = cronjob_json(&minimal(json!({"logicalBackupSchedule": ""})), &cfg);
    assert_eq!(cj["spec"]["schedule"], "15 3 * * *");
    assert_eq!(
        env_of(&cj, "LOGICAL_BACKUP_S3_RETENTION_TIME")["value"],
        "1 month"
    );
    let cj = cronjob_json(&minimal(json!({})), &OperatorConfig::default());
    assert_eq!(cj["spec"]["schedule"], "30 00 * * *");
    assert_eq!(env_of(&cj, "LOGICAL_BACKUP_S3_RETENTION_TIME")["value"], "");
}

#[test]
fn names_follow_the_prefix_and_stay_short() {
    let cfg = OperatorConfig::default();
    assert_eq!(name(&cfg, "acid-test"), "logical-backup-acid-test");
    let prefixed = config(LogicalBackupConfiguration {
        logical_backup_job_prefix: Some("lb-".into()),
        ..Default::default()
    });
    assert_eq!(name(&prefixed, "acid-test"), "lb-acid-test");
    // 15 + 38 characters: cut to 52, and the `-` that would end it dropped.
    let long = format!("{}-x", "a".repeat(36));
    assert_eq!(
        name(&cfg, &long),
        format!("logical-backup-{}", "a".repeat(36))
    );
    assert_eq!(name(&cfg, &"b".repeat(58)).len(), 52);
}

#[test]
fn resources_fall_back_to_the_database_defaults() {
    let mut cfg = config(LogicalBackupConfiguration {
        logical_backup_memory_limit: Some("1Gi".into()),
        logical_backup_cpu_request: Some("".into()),
        ..Default::default()
    });
    cfg.default_cpu_request = "100m".into();
    cfg.default_memory_request = "100Mi".into();
    cfg.default_memory_limit = "500Mi".into();
    let cj = cronjob_json(&minimal(json!({})), &cfg);
    assert_eq!(
        container(&cj)["resources"],
        json!({"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "1Gi"}})
    );
    let bad = config(LogicalBackupConfiguration {
        logical_backup_cpu_limit: Some("lots".into()),
        ..Default::default()
    });
    let pg = minimal(json!({}));
    let err = logical_backup(&Cluster::new(
        &pg,
        &bad,
        "default",
        &ExternalInputs::default(),
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("logical_backup.limits.cpu"),
        "{err}"
    );
}

#[test]
fn pod_follows_the_clusters_scheduling() {
    let cfg = OperatorConfig {
        node_readiness_label: [("ready".to_string(), "yes".to_string())].into(),
        ..Default::default()
    };
    let spec = json!({
        "tolerations": [{"key": "db", "operator": "Exists", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}],
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}},
        "podAnnotations": {"team": "data"},
        "dockerImage": "registry.example/pgherd-postgres:1",
    });
    let cj = cronjob_json(&minimal(spec), &cfg);
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "db");
    let tsc = &pod["spec"]["topologySpreadConstraints"][0];
    assert_eq!(
        tsc["labelSelector"]["matchLabels"]["application"],
        "spilo-logical-backup"
    );
    // Only the readiness label, as upstream: the manifest's node affinity is the database pods'.
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "ready", "operator": "In", "values": ["yes"]}]}])
    );
    assert_eq!(pod["metadata"]["annotations"]["team"], "data");
    assert_eq!(cj["metadata"]["annotations"]["team"], "data");
    assert_eq!(
        container(&cj)["image"],
        "registry.example/pgherd-postgres:1"
    );
}

#[test]
fn disabled_builds_nothing() {
    let cfg = OperatorConfig::default();
    let mut pg = minimal(json!({}));
    pg.spec.enable_logical_backup = Some(false);
    assert_eq!(build(&pg, &cfg), None);
    pg.spec.enable_logical_backup = None;
    assert_eq!(build(&pg, &cfg), None);
}

#[test]
fn selector_matches_the_labels() {
    let cj = cronjob_json(&minimal(json!({})), &OperatorConfig::default());
    let sel = selector(&OperatorConfig::default(), "acid-minimal-cluster");
    for (k, v) in &sel {
        assert_eq!(cj["metadata"]["labels"][k], v.as_str(), "{k}");
    }
    assert_eq!(sel.len(), 2);
}

#[test]
fn the_legacy_configmap_works_the_same() {
    let data = [
        ("logical_backup_s3_bucket", "cm-bucket"),
        ("logical_backup_job_prefix", "lb-"),
        ("logical_backup_successful_jobs_history_limit", "5"),
        ("logical_backup_ttl_seconds_after_finished", "3600"),
        ("logical_backup_s3_secret_access_key", "cm-literal-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (cfg, unknown) = OperatorConfig::from_configmap(&data).unwrap();
    assert_eq!(unknown, Vec::<String>::new());
    let built = build(&minimal(json!({})), &cfg).unwrap();
    let cj = serde_json::to_value(&built.cronjob).unwrap();
    assert_eq!(cj["metadata"]["name"], "lb-acid-minimal-cluster");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 5);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 3);
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"],
        3600
    );
    assert_eq!(
        env_of(&cj, "LOGICAL_BACKUP_S3_BUCKET")["value"],
        "cm-bucket"
    );
    assert!(!cj.to_string().contains("cm-literal-key"));
    assert_eq!(
        built.secret.unwrap().metadata.name.as_deref(),
        Some("lb-acid-minimal-cluster")
    );
}
