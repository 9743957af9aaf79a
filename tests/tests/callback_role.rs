//! `pgherd-agent callback-role` (Spilo's callback_role.py) end to end: the freshly built agent runs in a
//! container of the database image with a service account directory mounted where the kubelet mounts it,
//! and patches the pod's role label and the master Endpoints in the Kubernetes API stand-in
//! (docs/kube-standin.md, docs/spilo-compatibility.md "Role labels without the Kubernetes DCS").

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use pgherd_tests::kube::{ApiServer, Options, WriteOptions};
use pgherd_tests::podman::{podman, require_image, Network, POSTGRES_IMAGE};
use serde_json::{json, Value};

const NS: &str = "team-a";
const POD: &str = "demo-0";
const CLUSTER: &str = "demo";

struct Run {
    code: i32,
    output: String,
}

/// `podman run --rm` of the agent with `args`; the token stays in the mounted file, never in argv.
fn agent(
    net: &Network,
    port: u16,
    bin: &Path,
    sa: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<Run> {
    let mut cmd = podman();
    cmd.args(["run", "--rm", "--network", &net.name, "--hostname", POD])
        .arg("-v")
        .arg(format!("{}:/usr/local/bin/pgherd-agent:ro", bin.display()))
        .arg("-v")
        .arg(format!(
            "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
            sa.display()
        ))
        .args(["-e", &format!("KUBERNETES_SERVICE_HOST={}", net.gateway)])
        .args(["-e", &format!("KUBERNETES_SERVICE_PORT={port}")]);
    for (k, v) in env {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    cmd.args(["--entrypoint", "pgherd-agent", POSTGRES_IMAGE]);
    cmd.args(args);
    let out = cmd.output().context("running podman")?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn labels(srv: &ApiServer) -> Value {
    let pods = srv.store().resource("", "v1", "pods").unwrap();
    let pod = srv.store().get(&pods, NS, POD).unwrap();
    pod["metadata"]["labels"].clone()
}

fn endpoints(srv: &ApiServer) -> Value {
    let eps = srv.store().resource("", "v1", "endpoints").unwrap();
    srv.store().get(&eps, NS, CLUSTER).unwrap()["subsets"].clone()
}

fn write_sa(dir: &Path, token: &str, ca: &str) -> anyhow::Result<()> {
    for (name, text) in [("token", token), ("ca.crt", ca), ("namespace", NS)] {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[test]
fn callback_role_labels_the_pod_and_points_the_master_endpoints() -> anyhow::Result<()> {
    require_image(POSTGRES_IMAGE)?;
    let bin = pgherd_tests::tools::agent_bin()?;
    let net = Network::create("pgherd-cbrole")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let gateway: std::net::IpAddr = net.gateway.parse()?;
    let srv = rt.block_on(ApiServer::start(Options {
        listen: (gateway, 0).into(),
        advertise: Some(gateway),
        crds_dir: None,
        ..Options::default()
    }))?;
    let port = srv.addr().port();
    let token = format!("sa-token-{}", std::process::id());
    srv.add_token(&token, "system:serviceaccount:team-a:postgres-pod");

    let store = srv.store();
    let w = WriteOptions {
        manager: "test".into(),
        ..Default::default()
    };
    let rt_of = |plural: &str| store.resource("", "v1", plural).unwrap();
    store.create(
        &rt_of("namespaces"),
        "",
        json!({"metadata": {"name": NS}}),
        &w,
    )?;
    store.create(
        &rt_of("pods"),
        NS,
        json!({"metadata": {"name": POD, "labels": {"application": "spilo", "cluster-name": CLUSTER}},
               "spec": {"containers": [{"name": "postgres", "image": POSTGRES_IMAGE}]}}),
        &w,
    )?;
    store.create(
        &rt_of("endpoints"),
        NS,
        json!({"metadata": {"name": CLUSTER, "labels": {"application": "spilo", "spilo-role": "master"}}}),
        &w,
    )?;

    let sa = tempfile::tempdir()?;
    std::fs::set_permissions(sa.path(), std::fs::Permissions::from_mode(0o755))?;
    write_sa(sa.path(), &token, srv.ca_pem())?;
    let run = |env: &[(&str, &str)], args: &[&str]| -> anyhow::Result<Run> {
        let r = agent(&net, port, &bin, sa.path(), env, args)?;
        assert!(
            !r.output.contains(&token),
            "the token leaked into the output:\n{}",
            r.output
        );
        Ok(r)
    };

    // A replica starts: label `replica`; the namespace comes from the service account's file.
    let r = run(&[], &["callback-role", "on_start", "replica", CLUSTER])?;
    assert_eq!(r.code, 0, "{}", r.output);
    assert_eq!(
        labels(&srv),
        json!({"application": "spilo", "cluster-name": CLUSTER, "spilo-role": "replica"}),
        "{}",
        r.output
    );
    assert_eq!(
        endpoints(&srv),
        Value::Null,
        "a replica leaves the endpoints"
    );

    // Patroni 4 promotes with `primary`: the Services' value `master`, and the endpoints at POD_IP.
    let env = [("POD_NAMESPACE", NS), ("POD_IP", "10.244.0.7")];
    let r = run(
        &env,
        &["callback-role", "on_role_change", "primary", CLUSTER],
    )?;
    assert_eq!(r.code, 0, "{}", r.output);
    assert_eq!(labels(&srv)["spilo-role"], "master", "{}", r.output);
    assert_eq!(
        endpoints(&srv),
        json!([{"addresses": [{"ip": "10.244.0.7"}],
                "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}]}]),
        "{}",
        r.output
    );

    // Demoted through the on-role-change wrapper, exactly as render.rs configures it.
    let r = run(
        &env,
        &[
            "on-role-change",
            "admin",
            "pgherd-agent",
            "callback-role",
            "on_role_change",
            "replica",
            CLUSTER,
        ],
    )?;
    assert_eq!(r.code, 0, "{}", r.output);
    assert_eq!(labels(&srv)["spilo-role"], "replica", "{}", r.output);

    // Stopping removes the label and keeps the others.
    let r = run(&env, &["callback-role", "on_stop", "replica", CLUSTER])?;
    assert_eq!(r.code, 0, "{}", r.output);
    assert_eq!(
        labels(&srv),
        json!({"application": "spilo", "cluster-name": CLUSTER}),
        "{}",
        r.output
    );

    let patches: Vec<String> = srv
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("PATCH "))
        .collect();
    assert_eq!(patches.len(), 5, "{patches:#?}");
    assert!(
        patches
            .iter()
            .all(|l| l.contains("application/merge-patch+json")
                && l.contains("system:serviceaccount:team-a:postgres-pod")),
        "{patches:#?}"
    );

    // A pod that does not exist: one line with the API's answer, exit 0.
    let r = run(
        &[("POD_NAMESPACE", NS), ("HOSTNAME", "ghost-0")],
        &["callback-role", "on_start", "replica", CLUSTER],
    )?;
    assert_eq!(r.code, 0, "{}", r.output);
    assert!(
        r.output.contains("HTTP 404") && r.output.contains("ghost-0"),
        "{}",
        r.output
    );

    // A rejected token: no retries, one error line naming the cause, exit 0, labels unchanged.
    write_sa(sa.path(), "not-the-token", srv.ca_pem())?;
    let r = run(&env, &["callback-role", "on_start", "replica", CLUSTER])?;
    assert_eq!(r.code, 0, "{}", r.output);
    let lines: Vec<&str> = r.output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", r.output);
    assert!(
        lines[0].contains("ERROR")
            && lines[0].contains("pods/demo-0")
            && lines[0].contains("not labelled spilo-role=replica")
            && lines[0].contains("HTTP 401")
            && lines[0].contains("token was rejected"),
        "{}",
        r.output
    );
    assert!(!r.output.contains("not-the-token"), "{}", r.output);
    assert_eq!(
        labels(&srv),
        json!({"application": "spilo", "cluster-name": CLUSTER})
    );

    // An unknown action is a usage error (Patroni configured wrongly), not an API failure.
    let r = run(&env, &["callback-role", "on_reload", "replica", CLUSTER])?;
    assert_ne!(r.code, 0, "{}", r.output);
    assert!(r.output.contains("unknown callback action"), "{}", r.output);

    drop(srv);
    Ok(())
}
