//! Golden expectations from Zalando's unit tests (`pkg/cluster/*_test.go`):
//! for the same inputs, names, labels and env order must match upstream.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use pgherd_coordinator::builders::{
    self, env::spilo_env, pdb, Cluster, ExternalInputs, PlaceholderPasswords,
};
use pgherd_coordinator::config::OperatorConfig;
use pgherd_shared::crd::postgresql::{CloneDescription, StandbyDescription};
use pgherd_shared::crd::Postgresql;

const UID: &str = "efd12e58-5786-11e8-b5a7-06148230260c";
const SPILO_CONFIG: &str = r#"{"postgresql":{"bin_dir":"/usr/lib/postgresql/12/bin"}}"#;

/// Upstream's tests build `config.Config{}` literals: every unset field is
/// Go's zero value, which differs from the operator's runtime defaults.
fn go_zero() -> OperatorConfig {
    OperatorConfig {
        enable_pgversion_env_var: false,
        enable_pod_disruption_budget: false,
        cluster_labels: BTreeMap::new(),
        cluster_name_label: String::new(),
        pod_role_label: String::new(),
        pam_configuration: String::new(),
        pam_role_name: String::new(),
        super_username: String::new(),
        replication_username: String::new(),
        ..Default::default()
    }
}

fn pg(name: &str, ns: &str) -> Postgresql {
    let mut p = Postgresql::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some(ns.into());
    p.metadata.uid = Some(UID.into());
    p.spec.postgresql.version = "17".into();
    p.spec.volume.size = "1Gi".into();
    p
}

fn env_of(cfg: &OperatorConfig, p: &Postgresql, inputs: &ExternalInputs) -> Vec<EnvVar> {
    let c = Cluster::new(p, cfg, "default", inputs);
    spilo_env(&c, SPILO_CONFIG)
}

fn expect(env: &[EnvVar], index: usize, name: &str, value: &str) {
    let e = &env[index];
    assert_eq!(e.name, name, "env[{index}] in {:?}", names(env));
    assert_eq!(
        e.value.as_deref().unwrap_or(""),
        value,
        "env[{index}] {name}"
    );
}

fn expect_secret_ref(env: &[EnvVar], index: usize, name: &str, secret: &str, key: &str) {
    let e = &env[index];
    assert_eq!(e.name, name, "env[{index}] in {:?}", names(env));
    let r = e
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((r.name.as_str(), r.key.as_str()), (secret, key));
}

fn names(env: &[EnvVar]) -> Vec<&str> {
    env.iter().map(|e| e.name.as_str()).collect()
}

/// The pod environment ConfigMap and Secret of upstream's mock client.
fn mock_configmap() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "clone_aws_endpoint".into(),
            "s3.eu-west-1.amazonaws.com".into(),
        ),
        ("custom_variable".into(), "configmap-test".into()),
        ("kubernetes_scope_label".into(), "pgaas".into()),
        ("wal_s3_bucket".into(), "global-s3-bucket-configmap".into()),
    ])
}

fn mock_secret_keys() -> Vec<String> {
    vec![
        "clone_aws_access_key_id".into(),
        "custom_variable".into(),
        "standby_google_application_credentials".into(),
    ]
}

#[test]
fn core_env_order_matches_upstream() {
    let cfg = OperatorConfig {
        cluster_name_label: "cluster-name".into(),
        ..go_zero()
    };
    let p = pg("acid-test", "default");
    let env = env_of(&cfg, &p, &ExternalInputs::default());
    assert_eq!(
        names(&env)[..16],
        [
            "SCOPE",
            "PGROOT",
            "POD_IP",
            "POD_NAMESPACE",
            "PGUSER_SUPERUSER",
            "KUBERNETES_SCOPE_LABEL",
            "KUBERNETES_ROLE_LABEL",
            "PGPASSWORD_SUPERUSER",
            "PGUSER_STANDBY",
            "PGPASSWORD_STANDBY",
            "PAM_OAUTH2",
            "HUMAN_ROLE",
            "KUBERNETES_LABELS",
            "SPILO_CONFIGURATION",
            "DCS_ENABLE_KUBERNETES_API",
            "KUBERNETES_USE_CONFIGMAPS",
        ]
    );
    expect(&env, 5, "KUBERNETES_SCOPE_LABEL", "cluster-name");
}

#[test]
fn wal_path_compat_is_index_12() {
    let cfg = OperatorConfig {
        enable_spilo_wal_path_compat: true,
        ..go_zero()
    };
    let env = env_of(
        &cfg,
        &pg("acid-test", "default"),
        &ExternalInputs::default(),
    );
    expect(&env, 12, "ENABLE_WAL_PATH_COMPAT", "true");
}

#[test]
fn global_buckets_follow_user_variables() {
    let cfg = OperatorConfig {
        wal_s3_bucket: "global-s3-bucket".into(),
        ..go_zero()
    };
    let env = env_of(
        &cfg,
        &pg("acid-test", "default"),
        &ExternalInputs::default(),
    );
    expect(&env, 16, "WAL_S3_BUCKET", "global-s3-bucket");
    expect(&env, 17, "WAL_BUCKET_SCOPE_SUFFIX", &format!("/{UID}"));
    expect(&env, 18, "WAL_BUCKET_SCOPE_PREFIX", "");

    let cfg = OperatorConfig {
        wal_gs_bucket: "global-gs-bucket".into(),
        gcp_credentials: "some-path-to-credentials".into(),
        ..go_zero()
    };
    let env = env_of(
        &cfg,
        &pg("acid-test", "default"),
        &ExternalInputs::default(),
    );
    expect(&env, 16, "WAL_GS_BUCKET", "global-gs-bucket");
    expect(&env, 17, "WAL_BUCKET_SCOPE_SUFFIX", &format!("/{UID}"));
    expect(&env, 18, "WAL_BUCKET_SCOPE_PREFIX", "");
    expect(
        &env,
        19,
        "GOOGLE_APPLICATION_CREDENTIALS",
        "some-path-to-credentials",
    );
}

#[test]
fn precedence_core_over_spec_over_secret_over_configmap_over_globals() {
    let inputs = ExternalInputs {
        pod_env_configmap: Some(mock_configmap()),
        pod_env_secret_keys: None,
    };
    // A manifest cannot override core variables.
    let cfg = OperatorConfig {
        cluster_name_label: "cluster-name".into(),
        ..go_zero()
    };
    let mut p = pg("acid-test", "default");
    p.spec.env = Some(vec![EnvVar {
        name: "KUBERNETES_SCOPE_LABEL".into(),
        value: Some("my-scope-label".into()),
        value_from: None,
    }]);
    let env = env_of(&cfg, &p, &inputs);
    expect(&env, 5, "KUBERNETES_SCOPE_LABEL", "cluster-name");

    // The ConfigMap overrides the global bucket.
    let cfg = OperatorConfig {
        wal_s3_bucket: "global-s3-bucket".into(),
        ..go_zero()
    };
    let env = env_of(&cfg, &pg("acid-test", "default"), &inputs);
    expect(&env, 18, "wal_s3_bucket", "global-s3-bucket-configmap");

    // The manifest's env overrides the global bucket.
    let cfg = OperatorConfig {
        wal_gs_bucket: "global-s3-bucket".into(),
        ..go_zero()
    };
    let mut p = pg("acid-test", "default");
    p.spec.env = Some(vec![EnvVar {
        name: "WAL_S3_BUCKET".into(),
        value: Some("custom-s3-bucket".into()),
        value_from: None,
    }]);
    let env = env_of(&cfg, &p, &ExternalInputs::default());
    expect(&env, 16, "WAL_S3_BUCKET", "custom-s3-bucket");

    // The Secret wins over the ConfigMap.
    let cfg = OperatorConfig {
        pod_environment_secret: "pod_env_sc".into(),
        ..go_zero()
    };
    let both = ExternalInputs {
        pod_env_configmap: Some(mock_configmap()),
        pod_env_secret_keys: Some(mock_secret_keys()),
    };
    let env = env_of(&cfg, &pg("acid-test", "default"), &both);
    expect_secret_ref(&env, 17, "custom_variable", "pod_env_sc", "custom_variable");

    let env = env_of(&go_zero(), &pg("acid-test", "default"), &inputs);
    expect(&env, 17, "custom_variable", "configmap-test");

    // And the manifest wins over both.
    let mut p = pg("acid-test", "default");
    p.spec.env = Some(vec![EnvVar {
        name: "CUSTOM_VARIABLE".into(),
        value: Some("spec-env-test".into()),
        value_from: None,
    }]);
    let env = env_of(&cfg, &p, &both);
    expect(&env, 16, "CUSTOM_VARIABLE", "spec-env-test");
}

fn wal_clone(s3_wal_path: Option<&str>, endpoint: Option<&str>) -> CloneDescription {
    CloneDescription {
        cluster: "test-cluster".into(),
        timestamp: Some("somewhen".into()),
        uid: Some(UID.into()),
        s3_wal_path: s3_wal_path.map(String::from),
        s3_endpoint: endpoint.map(String::from),
        ..Default::default()
    }
}

#[test]
fn clone_environment_order() {
    let inputs = ExternalInputs {
        pod_env_configmap: Some(mock_configmap()),
        pod_env_secret_keys: None,
    };
    let cfg = OperatorConfig {
        wal_s3_bucket: "global-s3-bucket".into(),
        ..go_zero()
    };
    let mut p = pg("acid-test", "default");
    p.spec.clone = Some(wal_clone(
        Some("s3://another-bucket"),
        Some("s3.eu-central-1.amazonaws.com"),
    ));
    let env = env_of(&cfg, &p, &inputs);
    expect(&env, 17, "CLONE_WALE_S3_PREFIX", "s3://another-bucket");
    expect(&env, 20, "CLONE_WAL_BUCKET_SCOPE_PREFIX", "");
    expect(
        &env,
        21,
        "CLONE_AWS_ENDPOINT",
        "s3.eu-central-1.amazonaws.com",
    );

    // A manifest variable comes first; clone variables are appended verbatim.
    p.spec.env = Some(vec![EnvVar {
        name: "CLONE_WAL_BUCKET_SCOPE_PREFIX".into(),
        value: Some("test-cluster".into()),
        value_from: None,
    }]);
    let env = env_of(&cfg, &p, &inputs);
    expect(&env, 16, "CLONE_WAL_BUCKET_SCOPE_PREFIX", "test-cluster");
    expect(&env, 18, "CLONE_WALE_S3_PREFIX", "s3://another-bucket");
    expect(
        &env,
        22,
        "CLONE_AWS_ENDPOINT",
        "s3.eu-central-1.amazonaws.com",
    );

    // Without a WAL path the global bucket is used; the ConfigMap fills gaps.
    let mut p = pg("acid-test", "default");
    p.spec.clone = Some(wal_clone(None, None));
    let env = env_of(&cfg, &p, &inputs);
    expect(&env, 17, "CLONE_WAL_S3_BUCKET", "global-s3-bucket");
    expect(
        &env,
        18,
        "CLONE_WAL_BUCKET_SCOPE_SUFFIX",
        &format!("/{UID}"),
    );
    expect(&env, 22, "clone_aws_endpoint", "s3.eu-west-1.amazonaws.com");

    let cfg = OperatorConfig {
        wal_s3_bucket: "global-s3-bucket".into(),
        pod_environment_secret: "pod_env_sc".into(),
        ..go_zero()
    };
    let secret_only = ExternalInputs {
        pod_env_configmap: None,
        pod_env_secret_keys: Some(mock_secret_keys()),
    };
    let env = env_of(&cfg, &p, &secret_only);
    expect_secret_ref(
        &env,
        22,
        "clone_aws_access_key_id",
        "pod_env_sc",
        "clone_aws_access_key_id",
    );
}

#[test]
fn standby_environment_order() {
    let cfg = OperatorConfig {
        wal_s3_bucket: "global-s3-bucket".into(),
        pod_environment_secret: "pod_env_sc".into(),
        ..go_zero()
    };
    let mut p = pg("acid-test", "default");
    p.spec.standby = Some(StandbyDescription {
        gs_wal_path: Some("gs://some/path/".into()),
        ..Default::default()
    });
    let inputs = ExternalInputs {
        pod_env_configmap: None,
        pod_env_secret_keys: Some(mock_secret_keys()),
    };
    let env = env_of(&cfg, &p, &inputs);
    expect(&env, 16, "STANDBY_WALE_GS_PREFIX", "gs://some/path/");
    expect_secret_ref(
        &env,
        21,
        "standby_google_application_credentials",
        "pod_env_sc",
        "standby_google_application_credentials",
    );
}

/// TestGeneratePodDisruptionBudget: names, minAvailable, labels, selectors.
#[test]
fn pod_disruption_budgets() {
    let base = OperatorConfig {
        cluster_labels: BTreeMap::new(),
        cluster_name_label: "cluster-name".into(),
        pod_role_label: "spilo-role".into(),
        pdb_name_format: "postgres-{cluster}-pdb".into(),
        ..Default::default()
    };
    let mut p = pg("myapp-database", "myapp");
    p.spec.team_id = "myapp".into();
    let inputs = ExternalInputs::default();
    let labels = BTreeMap::from([
        ("team".to_string(), "myapp".to_string()),
        ("cluster-name".to_string(), "myapp-database".to_string()),
    ]);

    let check = |cfg: &OperatorConfig, instances: i32, name: &str, min: i32| {
        let mut p = p.clone();
        p.spec.number_of_instances = instances;
        let c = Cluster::new(&p, cfg, "default", &inputs);
        let pdb = pdb::primary(&c);
        assert_eq!(pdb.metadata.name.as_deref(), Some(name));
        assert_eq!(pdb.metadata.namespace.as_deref(), Some("myapp"));
        assert_eq!(pdb.metadata.labels.as_ref(), Some(&labels));
        let spec = pdb.spec.unwrap();
        assert_eq!(
            spec.min_available,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(min))
        );
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap(),
            BTreeMap::from([
                ("spilo-role".to_string(), "master".to_string()),
                ("cluster-name".to_string(), "myapp-database".to_string()),
            ])
        );
    };
    check(&base, 3, "postgres-myapp-database-pdb", 1);
    check(&base, 0, "postgres-myapp-database-pdb", 0);
    let disabled = OperatorConfig {
        enable_pod_disruption_budget: false,
        ..base.clone()
    };
    check(&disabled, 3, "postgres-myapp-database-pdb", 0);
    let renamed = OperatorConfig {
        pdb_name_format: "postgres-{cluster}-databass-budget".into(),
        ..base.clone()
    };
    check(&renamed, 3, "postgres-myapp-database-databass-budget", 1);

    let mut p3 = p.clone();
    p3.spec.number_of_instances = 3;
    let c = Cluster::new(&p3, &base, "default", &inputs);
    let critical = pdb::critical_op(&c);
    assert_eq!(
        critical.metadata.name.as_deref(),
        Some("postgres-myapp-database-critical-op-pdb")
    );
    let spec = critical.spec.unwrap();
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap(),
        BTreeMap::from([
            ("cluster-name".to_string(), "myapp-database".to_string()),
            ("critical-operation".to_string(), "true".to_string()),
        ])
    );
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
}

/// Names and labels of every object for the minimal example (§2.2).
#[test]
fn object_names_and_labels() {
    let mut p = pg("acid-minimal-cluster", "default");
    p.spec.team_id = "acid".into();
    p.spec.number_of_instances = 2;
    p.spec.users = Some(BTreeMap::from([("foo_user".to_string(), vec![])]));
    let cfg = OperatorConfig::default();
    let d = builders::build_all(
        &p,
        &cfg,
        "default",
        &ExternalInputs::default(),
        &mut PlaceholderPasswords,
    )
    .unwrap();
    let sts = &d.statefulset;
    assert_eq!(sts.metadata.name.as_deref(), Some("acid-minimal-cluster"));
    let labels = BTreeMap::from([
        ("application".to_string(), "spilo".to_string()),
        (
            "cluster-name".to_string(),
            "acid-minimal-cluster".to_string(),
        ),
        ("team".to_string(), "acid".to_string()),
    ]);
    assert_eq!(sts.metadata.labels.as_ref(), Some(&labels));
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.service_name.as_deref(), Some("acid-minimal-cluster"));
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    assert_eq!(
        spec.volume_claim_templates.as_ref().unwrap()[0]
            .metadata
            .name
            .as_deref(),
        Some("pgdata")
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("postgres-pod"));
    assert_eq!(pod.termination_grace_period_seconds, Some(300));
    let postgres = &pod.containers[0];
    assert_eq!(postgres.name, "postgres");
    assert_eq!(
        postgres.image.as_deref(),
        Some("ghcr.io/zalando/spilo-18:4.1-p2")
    );
    assert_eq!(
        postgres.command.as_deref(),
        Some(&["pgherd-agent".to_string(), "run".to_string()][..])
    );
    let ports: Vec<(i32, Option<&str>)> = postgres
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.container_port, p.name.as_deref()))
        .collect();
    // Zalando's three unnamed ports, plus pgherd-agent's exporter (docs/metrics.md).
    assert_eq!(
        ports,
        [
            (8008, None),
            (5432, None),
            (8080, None),
            (9187, Some("metrics"))
        ]
    );
    let mounts: Vec<&str> = postgres
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/home/postgres/pgdata", "/dev/shm"]);

    let services: Vec<&str> = d
        .services
        .iter()
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        services,
        ["acid-minimal-cluster", "acid-minimal-cluster-repl"]
    );
    let secrets: Vec<&str> = d
        .secrets
        .iter()
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        secrets,
        [
            "foo-user.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
            "postgres.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
            "standby.acid-minimal-cluster.credentials.postgresql.acid.zalan.do",
        ]
    );
    let pdbs: Vec<&str> = d
        .pdbs
        .iter()
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        pdbs,
        [
            "postgres-acid-minimal-cluster-pdb",
            "postgres-acid-minimal-cluster-critical-op-pdb"
        ]
    );
    assert_eq!(d.role_binding.role_ref.name, "postgres-pod");
    assert!(d.endpoints.is_empty(), "ConfigMap DCS needs no Endpoints");

    // Endpoints DCS: selector-less master service, Endpoints, -config service.
    let ep_cfg = OperatorConfig {
        kubernetes_use_configmaps: false,
        ..Default::default()
    };
    let d = builders::build_all(
        &p,
        &ep_cfg,
        "default",
        &ExternalInputs::default(),
        &mut PlaceholderPasswords,
    )
    .unwrap();
    assert!(d.services[0].spec.as_ref().unwrap().selector.is_none());
    assert_eq!(
        d.endpoints[0].metadata.name.as_deref(),
        Some("acid-minimal-cluster")
    );
    assert_eq!(
        d.services[2].metadata.name.as_deref(),
        Some("acid-minimal-cluster-config")
    );

    // etcd DCS: selector-less master service and its Endpoints (the agent's callback-role fills them),
    // no -config service (Patroni keeps nothing in Kubernetes).
    let etcd_cfg = OperatorConfig {
        etcd_host: "etcd.default.svc:2379".into(),
        ..Default::default()
    };
    let d = builders::build_all(
        &p,
        &etcd_cfg,
        "default",
        &ExternalInputs::default(),
        &mut PlaceholderPasswords,
    )
    .unwrap();
    assert!(d.services[0].spec.as_ref().unwrap().selector.is_none());
    assert!(d.services[1].spec.as_ref().unwrap().selector.is_some());
    assert_eq!(d.services.len(), 2, "no -config service with etcd");
    assert_eq!(
        d.endpoints[0].metadata.name.as_deref(),
        Some("acid-minimal-cluster")
    );
}

#[test]
fn load_balancer_and_instance_limits() {
    let mut p = pg("acid-test", "ns");
    p.spec.team_id = "acid".into();
    p.spec.number_of_instances = 5;
    p.spec.enable_master_load_balancer = Some(true);
    let cfg = OperatorConfig {
        max_instances: 3,
        ..Default::default()
    };
    let d = builders::build_all(
        &p,
        &cfg,
        "default",
        &ExternalInputs::default(),
        &mut PlaceholderPasswords,
    )
    .unwrap();
    assert_eq!(d.statefulset.spec.as_ref().unwrap().replicas, Some(3));
    let master = d.services[0].spec.as_ref().unwrap();
    assert_eq!(master.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        master.load_balancer_source_ranges.as_deref(),
        Some(&["127.0.0.1/32".to_string()][..])
    );
    assert_eq!(
        d.services[0].metadata.annotations.as_ref().unwrap()
            ["external-dns.alpha.kubernetes.io/hostname"],
        "acid-test.ns.db.example.com,test.acid.db.example.com"
    );
    assert_eq!(
        d.services[1].spec.as_ref().unwrap().type_.as_deref(),
        Some("ClusterIP")
    );
}
