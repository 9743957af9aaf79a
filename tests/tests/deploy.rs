//! The deployment artefacts, checked offline (docs/deploy.md):
//! - the Helm chart `deploy/helm/pgherd` passes `helm lint --strict` and renders;
//! - everything it renders, and the plain YAML in `deploy/` and `crds/`, validates against the bundled
//!   Kubernetes JSON schemas (`kubernetes-validate --strict`); `acid.zalan.do` objects validate against the
//!   openAPIV3Schema of their CRD;
//! - the chart cannot drift from `deploy/*.yaml`, `crds/` and `deploy/monitoring/`;
//! - the coordinator accepts the configuration the chart renders, in both formats, and acts on it;
//! - hadolint passes on the two Dockerfiles.
//!
//! Nothing is installed into an API server here: none can run on these machines. The tools come from
//! `scripts/install-tools.sh`. `PGHERD_BLESS=1` refreshes the chart's copies of `crds/` and
//! `deploy/monitoring/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pgherd_tests::deploy_check::*;
use pgherd_tests::tools;
use serde_json::{json, Value};

#[test]
fn chart_and_deploy_images_follow_the_workspace_version() {
    let version = workspace_version();
    let chart = &documents(&read(&chart().join("Chart.yaml")))[0];
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "pgherd");
    assert_eq!(chart["version"], version, "Chart.yaml version");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");
    let deployment = find_kind(&file_documents("deploy/coordinator.yaml"), "Deployment").clone();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("localhost/pgherd-coordinator:{version}"),
        "deploy/coordinator.yaml names the image scripts/build-images.sh builds"
    );
    let config = file_documents("deploy/operatorconfiguration.yaml");
    assert_eq!(
        config[0]["configuration"]["docker_image"],
        format!("localhost/pgherd-postgres:{version}"),
        "deploy/operatorconfiguration.yaml names the database image scripts/build-images.sh builds"
    );
}

#[test]
fn helm_lint_strict() {
    for extra in [
        &[][..],
        &["--set", "configTarget=ConfigMap"],
        &[
            "--set",
            "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        ],
    ] {
        let out = output(
            helm().args(["lint", "--strict"]).arg(chart()).args(extra),
            None,
        );
        assert!(
            out.status.success(),
            "helm lint --strict {extra:?}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Each way of rendering the chart validates, and holds the objects it should.
#[test]
fn rendered_chart_validates() {
    let default = render(&[]);
    validate_all("default values", &default);
    let docs = documents(&default);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "OperatorConfiguration",
    ] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "default: no {kind}");
    }
    for kind in ["ConfigMap", "PodMonitor", "PrometheusRule", "PriorityClass"] {
        assert!(
            !docs.iter().any(|d| d["kind"] == kind),
            "default: unexpected {kind}"
        );
    }

    let monitoring = render(&[
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        "--set",
        "podPriorityClassName.create=true",
    ]);
    validate_all("monitoring enabled", &monitoring);
    let docs = documents(&monitoring);
    for kind in ["PodMonitor", "PrometheusRule", "PriorityClass"] {
        find_kind(&docs, kind);
    }
    assert_eq!(
        find_kind(&docs, "OperatorConfiguration")["configuration"]["kubernetes"]
            ["pod_priority_class_name"],
        find_kind(&docs, "PriorityClass")["metadata"]["name"],
        "the database pods get the PriorityClass the chart creates"
    );

    let configmap = render(&["--set", "configTarget=ConfigMap"]);
    validate_all("configTarget=ConfigMap", &configmap);
    let docs = documents(&configmap);
    assert!(!docs.iter().any(|d| d["kind"] == "OperatorConfiguration"));
    let cm = find_kind(&docs, "ConfigMap");
    let env = &find_kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "CONFIG_MAP_NAME" && e["value"] == cm["metadata"]["name"]),
        "CONFIG_MAP_NAME names the ConfigMap: {env}"
    );
    assert!(!env
        .to_string()
        .contains("POSTGRES_OPERATOR_CONFIGURATION_OBJECT"));

    // Zalando's chart spells the CRD target OperatorConfigurationCRD (the default); the plain kind is
    // accepted as the same thing.
    for target in ["OperatorConfiguration", "OperatorConfigurationCRD"] {
        let rendered = render(&["--set", &format!("configTarget={target}")]);
        validate_all(&format!("configTarget={target}"), &rendered);
        assert_eq!(rendered, default, "configTarget={target}");
    }
}

/// Values the chart cannot honour fail the rendering with a message saying why.
#[test]
fn unsupported_values_fail_with_a_reason() {
    for (set, says) in [
        ("configTarget=Secret", "configTarget"),
        ("controllerID.create=true", "controller ID"),
        ("enableStreams=true", "FabricEventStreams"),
        (
            "configKubernetes.pod_service_account_name=other",
            "podServiceAccount.name",
        ),
        // The ConfigMap format has no form for nested settings (coordinator/src/config/configmap.rs).
        (
            "configTarget=ConfigMap,configKubernetes.liveness_probe.httpGet.port=8008",
            "liveness_probe",
        ),
    ] {
        let err = render_error(&["--set", set]);
        assert!(err.contains(says), "--set {set}: {err}");
    }
    // Helm cannot know every setting, so a misspelt one renders; the CRD check catches it before any
    // cluster would have silently dropped it.
    let docs = documents(&render(&["--set", "configKubernetes.watched_namespaces=*"]));
    assert_eq!(
        validate_custom_resource(find_kind(&docs, "OperatorConfiguration")),
        Err(vec![
            ".configuration.kubernetes.watched_namespaces: unknown field".to_string()
        ])
    );
}

/// The plain YAML in deploy/ and crds/, the way it is applied with kubectl.
#[test]
fn plain_deploy_yaml_validates() {
    for file in [
        "deploy/rbac.yaml",
        "deploy/coordinator.yaml",
        "deploy/operatorconfiguration.yaml",
        "deploy/monitoring/podmonitor.yaml",
        "deploy/monitoring/alerts.yaml",
        "crds/postgresql.crd.yaml",
        "crds/operatorconfiguration.crd.yaml",
        "crds/postgresteam.crd.yaml",
    ] {
        validate_all(file, &read(&repo().join(file)));
    }
}

/// The chart's crds/ and files/ are copies (Helm reads nothing outside the chart), byte for byte.
/// `PGHERD_BLESS=1` refreshes them.
#[test]
fn chart_copies_are_identical() {
    let bless = std::env::var_os("PGHERD_BLESS").is_some();
    let mut pairs = Vec::new();
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        let name = entry.unwrap().file_name();
        names.insert(name.to_string_lossy().into_owned());
        pairs.push((
            repo().join("crds").join(&name),
            chart().join("crds").join(&name),
        ));
    }
    let chart_names: BTreeSet<String> = std::fs::read_dir(chart().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in ["alerts.yaml", "podmonitor.yaml"] {
        pairs.push((
            repo().join("deploy/monitoring").join(name),
            chart().join("files").join(name),
        ));
    }
    let mut stale = Vec::new();
    for (source, copy) in &pairs {
        if bless {
            std::fs::copy(source, copy).unwrap();
        } else if std::fs::read(source).unwrap() != std::fs::read(copy).unwrap_or_default() {
            stale.push(copy.strip_prefix(repo()).unwrap().display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from their source; run PGHERD_BLESS=1 cargo nextest run -p pgherd-tests --test deploy"
    );
    assert_eq!(
        chart_names, names,
        "the chart's crds/ holds exactly the files of crds/"
    );
}

/// The Deployment's spec with what legitimately differs between the chart and deploy/ taken out:
/// - pod labels and selector: the chart adds `app.kubernetes.io/instance`, so two releases can coexist
///   (the selector is checked against the labels separately); annotations hold the chart's checksum;
/// - the configuration object's name (the release's full name, `pgherd-default-configuration` in
///   deploy/): replaced by a placeholder once it is checked to name the object of its own files;
/// - `imagePullPolicy: IfNotPresent`, which the API server defaults for a tagged image.
fn deployment_substance(deployment: &Value, config_name: &str) -> Value {
    let mut spec = deployment["spec"].clone();
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the selector matches the pod labels");
    }
    spec.as_object_mut().unwrap().remove("selector");
    spec["template"].as_object_mut().unwrap().remove("metadata");
    let container = &mut spec["template"]["spec"]["containers"][0];
    if container["imagePullPolicy"].is_null() {
        container["imagePullPolicy"] = json!("IfNotPresent");
    }
    for env in container["env"].as_array_mut().unwrap() {
        if env["name"] == "POSTGRES_OPERATOR_CONFIGURATION_OBJECT"
            || env["name"] == "CONFIG_MAP_NAME"
        {
            assert_eq!(
                env["value"], config_name,
                "{} names the configuration",
                env["name"]
            );
            env["value"] = json!("<configuration object>");
        }
    }
    spec
}

fn rules(docs: &[Value], name: &str) -> Value {
    find(docs, "ClusterRole", name)["rules"].clone()
}

/// The chart renders deploy/*.yaml in substance, so the two cannot drift apart.
#[test]
fn chart_matches_plain_deploy() {
    let chart = documents(&render(&[
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
    ]));
    let rbac = file_documents("deploy/rbac.yaml");

    for role in ["pgherd-coordinator", "postgres-pod"] {
        let (want, got) = (rules(&rbac, role), rules(&chart, role));
        assert_eq!(
            got,
            want,
            "ClusterRole {role}: chart\n{}\ndeploy/rbac.yaml\n{}",
            pretty(&got),
            pretty(&want)
        );
    }
    let (want, got) = (
        find(&rbac, "ClusterRoleBinding", RELEASE),
        find(&chart, "ClusterRoleBinding", RELEASE),
    );
    assert_eq!(got["roleRef"], want["roleRef"]);
    assert_eq!(got["subjects"], want["subjects"]);
    // Leader election: the same Role and RoleBinding in the operator namespace.
    let (want, got) = (find(&rbac, "Role", RELEASE), find(&chart, "Role", RELEASE));
    assert_eq!(
        got["rules"],
        want["rules"],
        "Role {RELEASE}: chart\n{}\ndeploy/rbac.yaml\n{}",
        pretty(&got["rules"]),
        pretty(&want["rules"])
    );
    assert_eq!(got["metadata"]["namespace"], want["metadata"]["namespace"]);
    let (want, got) = (
        find(&rbac, "RoleBinding", RELEASE),
        find(&chart, "RoleBinding", RELEASE),
    );
    assert_eq!(got["roleRef"], want["roleRef"]);
    assert_eq!(got["subjects"], want["subjects"]);
    assert_eq!(got["metadata"]["namespace"], want["metadata"]["namespace"]);
    assert_eq!(
        find(&chart, "ServiceAccount", RELEASE)["metadata"]["namespace"],
        find(&rbac, "ServiceAccount", RELEASE)["metadata"]["namespace"]
    );

    let plain_config = find_kind(
        &file_documents("deploy/operatorconfiguration.yaml"),
        "OperatorConfiguration",
    )
    .clone();
    let chart_config = find_kind(&chart, "OperatorConfiguration");
    assert_eq!(
        chart_config["configuration"],
        plain_config["configuration"],
        "configuration: chart\n{}\ndeploy/operatorconfiguration.yaml\n{}",
        pretty(&chart_config["configuration"]),
        pretty(&plain_config["configuration"])
    );

    let got = deployment_substance(
        find(&chart, "Deployment", RELEASE),
        chart_config["metadata"]["name"].as_str().unwrap(),
    );
    let want = deployment_substance(
        find(
            &file_documents("deploy/coordinator.yaml"),
            "Deployment",
            RELEASE,
        ),
        plain_config["metadata"]["name"].as_str().unwrap(),
    );
    assert_eq!(
        got,
        want,
        "Deployment: chart\n{}\ndeploy/coordinator.yaml\n{}",
        pretty(&got),
        pretty(&want)
    );

    let podmonitor = file_documents("deploy/monitoring/podmonitor.yaml").remove(0);
    let got = find_kind(&chart, "PodMonitor");
    assert_eq!(
        got["spec"]["podMetricsEndpoints"],
        podmonitor["spec"]["podMetricsEndpoints"]
    );
    assert_eq!(got["spec"]["selector"], podmonitor["spec"]["selector"]);
    let alerts = file_documents("deploy/monitoring/alerts.yaml").remove(0);
    assert_eq!(find_kind(&chart, "PrometheusRule")["spec"], alerts["spec"]);
}

/// The flat keys the coordinator's ConfigMap parser knows: the CRD's top-level settings and the settings
/// of each group (coordinator/src/config/configmap.rs derives them from the same schema).
fn configmap_keys() -> BTreeSet<String> {
    let crd = crds()
        .into_iter()
        .find(|c| c["spec"]["names"]["kind"] == "OperatorConfiguration")
        .unwrap();
    let settings = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["configuration"]["properties"];
    let mut keys = BTreeSet::new();
    for (key, schema) in settings.as_object().unwrap() {
        match schema["properties"].as_object() {
            Some(group) if schema["type"] == "object" => keys.extend(group.keys().cloned()),
            _ => {
                keys.insert(key.clone());
            }
        }
    }
    keys
}

/// `pgherd-coordinator render` of Zalando's minimal manifest with a configuration file.
fn coordinator_render(config_yaml: &str, label: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let config = dir.join(format!("deploy-{label}.yaml"));
    std::fs::write(&config, config_yaml).unwrap();
    let out = output(
        Command::new(tools::coordinator_bin().unwrap())
            .arg("render")
            .arg("-f")
            .arg(repo().join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"))
            .arg("--config")
            .arg(&config)
            .args(["-n", "db"]),
        None,
    );
    assert!(
        out.status.success(),
        "pgherd-coordinator render --config ({label}): {}\n{config_yaml}",
        text(&out.stderr)
    );
    documents(&text(&out.stdout))
}

/// The coordinator loads the configuration the chart renders, in both formats, to the same effect, and
/// acts on values of every shape (string, number, boolean, list, map; as a values file gives them).
#[test]
fn coordinator_honours_the_chart_configuration() {
    let values = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-values.yaml");
    std::fs::write(
        &values,
        "podServiceAccount: {name: pg-pods}\n\
         configGeneral: {docker_image: registry.example/pgherd-postgres:1, enable_shm_volume: false}\n\
         configKubernetes:\n\
         \x20 cluster_labels: {application: spilo, team: acid}\n\
         \x20 custom_pod_annotations: {example.com/owner: dba, example.com/tier: gold}\n\
         \x20 spilo_runasuser: 101\n\
         \x20 additional_pod_capabilities: [SYS_NICE, SYS_PTRACE]\n\
         \x20 pod_terminate_grace_period: 7m\n",
    )
    .unwrap();

    let mut outputs = Vec::new();
    for target in ["OperatorConfigurationCRD", "ConfigMap"] {
        let yaml = render(&[
            "-f",
            values.to_str().unwrap(),
            "--set",
            &format!("configTarget={target}"),
        ]);
        validate_all(target, &yaml);
        let docs = documents(&yaml);
        let config = docs
            .iter()
            .find(|d| d["kind"] == "OperatorConfiguration" || d["kind"] == "ConfigMap")
            .unwrap();
        if target == "ConfigMap" {
            // The coordinator ignores unknown ConfigMap keys (upstream does too), so check them here.
            let known = configmap_keys();
            for (key, value) in config["data"].as_object().unwrap() {
                assert!(known.contains(key), "ConfigMap key {key} is no setting");
                assert!(
                    value.is_string(),
                    "ConfigMap {key}: {value} is not a string"
                );
            }
        }
        let rendered = coordinator_render(&serde_yaml_ng::to_string(config).unwrap(), target);
        let sts = find_kind(&rendered, "StatefulSet");
        let pod = &sts["spec"]["template"];
        let postgres = &pod["spec"]["containers"][0];
        assert_eq!(
            postgres["image"], "registry.example/pgherd-postgres:1",
            "{target}"
        );
        assert_eq!(sts["metadata"]["labels"]["team"], "acid", "{target}");
        assert_eq!(
            pod["metadata"]["annotations"]["example.com/tier"], "gold",
            "{target}"
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 101, "{target}");
        assert_eq!(
            postgres["securityContext"]["capabilities"]["add"],
            json!(["SYS_NICE", "SYS_PTRACE"]),
            "{target}"
        );
        assert_eq!(
            pod["spec"]["terminationGracePeriodSeconds"], 420,
            "{target}"
        );
        assert!(
            !pod["spec"]["volumes"].to_string().contains("dshm"),
            "{target}: enable_shm_volume false"
        );
        assert_eq!(pod["spec"]["serviceAccountName"], "pg-pods", "{target}");
        // The coordinator binds the ClusterRole named like the pods' ServiceAccount; the chart must
        // install that ClusterRole and let the coordinator bind it.
        let binding = find_kind(&rendered, "RoleBinding");
        let role = binding["roleRef"]["name"].as_str().unwrap();
        find(&docs, "ClusterRole", role);
        let bind = rules(&docs, RELEASE)
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verbs"] == json!(["bind"]))
            .cloned()
            .unwrap();
        assert_eq!(bind["resourceNames"], json!([role]), "{target}");
        outputs.push(rendered);
    }
    // The same values give the same objects through either configuration format.
    let (crd, configmap) = (&outputs[0], &outputs[1]);
    assert_eq!(kinds(crd), kinds(configmap));
    for (a, b) in crd.iter().zip(configmap) {
        assert!(
            a == b,
            "{} {} differs by configuration format: OperatorConfiguration\n{}\nConfigMap\n{}",
            a["kind"],
            a["metadata"]["name"],
            pretty(a),
            pretty(b)
        );
    }
}

/// The validation helpers report what they must (so the tests above can fail).
#[test]
fn validators_reject_broken_objects() {
    let deployment = read(&repo().join("deploy/coordinator.yaml"))
        .replace("  replicas: 2\n", "  replicas: 2\n  replica: 2\n");
    let err = kubernetes_validate("broken", &deployment).unwrap_err();
    assert!(err.contains("kubernetes-validate failed"), "{err}");
    let err = kubernetes_validate(
        "unknown kind",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    )
    .unwrap_err();
    assert!(err.contains("Widget"), "{err}");

    let mut config = file_documents("deploy/operatorconfiguration.yaml")[0].clone();
    config["configuration"]["kubernetes"]["watched_namespaces"] = json!("*");
    config["configuration"]["users"]["super_username"] = json!(5);
    config["configuration"]["min_instances"] = json!("two");
    let mut errs = validate_custom_resource(&config).unwrap_err();
    errs.sort();
    assert_eq!(
        errs,
        [
            ".configuration.kubernetes.watched_namespaces: unknown field",
            ".configuration.min_instances: \"two\" is not an integer",
            ".configuration.users.super_username: 5 is not a string",
        ]
    );
    let mut cluster = documents(&read(
        &repo().join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    ))[0]
        .clone();
    validate_custom_resource(&cluster).unwrap();
    cluster["spec"]["postgresql"]["version"] = json!("9");
    cluster["spec"]["standby"] = json!({"s3_wal_path": "s3://a", "gs_wal_path": "gs://b"});
    let errs = validate_custom_resource(&cluster).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
}

#[test]
fn hadolint_passes_on_the_dockerfiles() {
    for file in [
        "images/postgres/Dockerfile",
        "images/coordinator/Dockerfile",
    ] {
        let out = output(
            Command::new(tools::hadolint().unwrap()).arg(repo().join(file)),
            None,
        );
        assert!(
            out.status.success(),
            "hadolint {file}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
