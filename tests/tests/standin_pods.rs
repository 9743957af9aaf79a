//! The pod runner (kubelet stand-in) with real podman and pgherd's database image: Pods created in the
//! API stand-in's store run as podman pods on a fresh network, with the environment, volumes,
//! service-account token and status the kubelet gives them, and go away as deleted pods do.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pgherd_tests::kube::kubelet::{Kubelet, KubeletOptions};
use pgherd_tests::kube::{ApiServer, DeleteOptions, Options, Store, WriteOptions};
use pgherd_tests::podman::{self, Network, POSTGRES_IMAGE};
use pgherd_tests::service::random_hex;
use pgherd_tests::wait;

const BOOT: Duration = Duration::from_secs(60);

struct Fixture {
    kubelet: Option<Kubelet>,
    api: ApiServer,
    _net: Network,
}

impl Fixture {
    async fn start() -> anyhow::Result<Fixture> {
        podman::require_image(POSTGRES_IMAGE)?;
        let net = Network::create("pgherd-pods")?;
        let gateway: IpAddr = net.gateway.parse()?;
        let api = ApiServer::start(Options {
            listen: SocketAddr::new(gateway, 0),
            advertise: Some(gateway),
            ..Default::default()
        })
        .await?;
        let kubelet = Kubelet::start(api.store().clone(), KubeletOptions::new(&api, &net)?).await?;
        let f = Fixture {
            kubelet: Some(kubelet),
            api,
            _net: net,
        };
        f.create("serviceaccounts", json!({"metadata": {"name": "default"}}))?;
        Ok(f)
    }

    fn store(&self) -> &Arc<Store> {
        self.api.store()
    }

    fn kubelet(&self) -> &Kubelet {
        self.kubelet.as_ref().expect("kubelet")
    }

    fn create(&self, plural: &str, obj: Value) -> anyhow::Result<Value> {
        let rt = self.store().resource("", "v1", plural).expect("resource");
        let w = WriteOptions {
            manager: "test".into(),
            ..Default::default()
        };
        Ok(self.store().create(&rt, "default", obj, &w)?)
    }

    fn pod(&self, name: &str) -> Option<Value> {
        let rt = self.store().resource("", "v1", "pods").expect("pods");
        self.store().get(&rt, "default", name).ok()
    }

    fn delete_pod(&self, name: &str) -> anyhow::Result<()> {
        let rt = self.store().resource("", "v1", "pods").expect("pods");
        self.store()
            .delete(&rt, "default", name, &DeleteOptions::default())?;
        Ok(())
    }

    /// Waits until `pred` holds for the pod's status.
    async fn wait_status(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        wait::until(BOOT, &format!("{name}: {what}"), || {
            let p = self.pod(name);
            let r = match p {
                None => Err(anyhow::anyhow!("pod {name} is gone")),
                Some(p) if pred(&p["status"]) => Ok(Some(p)),
                Some(p) => Err(anyhow::anyhow!("status: {}", p["status"])),
            };
            async move { r }
        })
        .await
    }

    async fn wait_gone(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        wait::until(timeout, &format!("{name} to be deleted"), || {
            let gone = self.pod(name).is_none();
            async move { Ok(gone.then_some(())) }
        })
        .await
    }

    /// `podman exec` in a pod's container.
    fn exec(&self, pod: &str, container: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let c = self
            .kubelet()
            .container_of("default", pod, container)
            .ok_or_else(|| anyhow::anyhow!("no container {container} in {pod}"))?;
        let mut args = vec!["exec", c.as_str()];
        args.extend_from_slice(cmd);
        podman::run(&args)
    }
}

fn condition(status: &Value, t: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == t && c["status"] == "True")
}

fn running_ready(s: &Value) -> bool {
    s["phase"] == "Running" && condition(s, "Ready")
}

fn sh_pod(name: &str, script: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [
        {"name": "main", "image": POSTGRES_IMAGE, "command": ["sh", "-c"], "args": [script]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gets_env_token_and_reaches_the_api() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let secret = format!("s3cr3t-{}", random_hex(12));
    f.create(
        "secrets",
        json!({"metadata": {"name": "creds"}, "stringData": {"password": secret}}),
    )?;
    f.create(
        "configmaps",
        json!({"metadata": {"name": "cfg"}, "data": {"mode": "fast"}}),
    )?;
    let script = r#"cat > /tmp/probe.py <<'EOF'
import json, os, ssl, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
ns = open(d + "/namespace").read()
url = "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], ns, os.environ["POD_NAME"])
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(d + "/token").read()})
pod = json.load(urllib.request.urlopen(req, context=ctx))
print(pod["metadata"]["name"], pod["status"]["podIP"])
EOF
mkdir -p /tmp/www && echo ok > /tmp/www/index.html && cd /tmp/www && exec python3 -m http.server 8080"#;
    f.create(
        "pods",
        json!({"metadata": {"name": "web", "labels": {"app": "demo"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": POSTGRES_IMAGE,
            "command": ["sh", "-c"], "args": [script],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            "env": [
                {"name": "PLAIN", "value": "plain-$(POD_NAME)"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}]}]}}),
    )?;
    let pod = f
        .wait_status("web", "Running and Ready", running_ready)
        .await?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with(&f._net.gateway.rsplit_once('.').unwrap().0.to_string()));
    assert_eq!(pod["spec"]["nodeName"], f.kubelet().node_name());
    let cs = &pod["status"]["containerStatuses"][0];
    assert!(cs["containerID"].as_str().unwrap().starts_with("podman://"));
    assert_eq!(cs["ready"], true);
    // The host reaches the pod at its address.
    let body = reqwest::get(format!("http://{ip}:8080/"))
        .await?
        .text()
        .await?;
    assert_eq!(body.trim(), "ok");
    let env = f.exec("web", "main", &["env"])?;
    for want in [
        "PLAIN=plain-$(POD_NAME)".to_string(),
        "POD_NAME=web".into(),
        "POD_NAMESPACE=default".into(),
        format!("POD_IP={ip}"),
        "APP=demo".into(),
        format!("PASSWORD={secret}"),
        "MODE=fast".into(),
        format!("KUBERNETES_SERVICE_HOST={}", f._net.gateway),
        format!("KUBERNETES_SERVICE_PORT={}", f.api.addr().port()),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in\n{env}");
    }
    // In-cluster configuration, as Patroni and kube-rs read it, against the stand-in over verified TLS.
    let out = f.exec("web", "main", &["python3", "/tmp/probe.py"])?;
    assert_eq!(out, format!("web {ip}"));
    // `kubectl logs` goes through the API.
    if let Some(log) = kubectl_logs(&f, "web")? {
        assert!(log.contains("GET / HTTP/1.1\" 200"), "{log}");
    }
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()?;
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&secret));
    // No env file is left behind.
    let leftovers: Vec<_> = walk(f.kubelet().state_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "env"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A missing secret keeps a pod waiting until it exists.
    f.create(
        "pods",
        json!({"metadata": {"name": "later"}, "spec": {"containers": [{"name": "main", "image": POSTGRES_IMAGE,
            "command": ["sleep", "1000"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "late", "key": "k"}}}]}]}}),
    )?;
    let p = f
        .wait_status("later", "CreateContainerConfigError", |s| {
            s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await?;
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "secret \"late\" not found"
    );
    f.create(
        "secrets",
        json!({"metadata": {"name": "late"}, "stringData": {"k": "v"}}),
    )?;
    f.wait_status("later", "Running", running_ready).await?;

    // So does a missing ServiceAccount.
    let mut robot = sh_pod("robot", "sleep 1000");
    robot["spec"]["serviceAccountName"] = json!("robot");
    f.create("pods", robot)?;
    f.wait_status("robot", "waiting for its ServiceAccount", |s| {
        s["containerStatuses"][0]["state"]["waiting"]["message"]
            == "serviceaccount \"robot\" not found"
    })
    .await?;
    f.create("serviceaccounts", json!({"metadata": {"name": "robot"}}))?;
    f.wait_status("robot", "Running", running_ready).await?;
    Ok(())
}

/// `kubectl logs` (`GET pods/{name}/log`); `None` without kubectl (`scripts/install-tools.sh` installs it).
fn kubectl_logs(f: &Fixture, pod: &str) -> anyhow::Result<Option<String>> {
    let kubectl = pgherd_tests::tools::repo_root().join(".venv-tools/bin/kubectl");
    if !kubectl.exists() {
        eprintln!("no {}: pods/log not checked", kubectl.display());
        return Ok(None);
    }
    let out = std::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(f.api.kubeconfig())
        .args(["logs", pod, "--tail=5"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvc_outlives_its_pod_and_deletion_honours_the_grace_period() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    f.create(
        "persistentvolumeclaims",
        json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )?;
    let with_pvc = |name: &str, script: &str| {
        let mut p = sh_pod(name, script);
        p["spec"]["restartPolicy"] = json!("Never");
        p["spec"]["securityContext"] = json!({"runAsUser": 101, "runAsGroup": 103, "fsGroup": 103});
        p["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
        p["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        p
    };
    f.create(
        "pods",
        with_pvc("writer", "echo hello > /data/f && id -u && sleep 1000"),
    )?;
    f.wait_status("writer", "Running", running_ready).await?;
    let host = f.kubelet().state_dir().join("pvc/default/data/f");
    wait::until(BOOT, "the file on the host", || {
        let ok = std::fs::read_to_string(&host).is_ok_and(|s| s == "hello\n");
        async move { Ok(ok.then_some(())) }
    })
    .await?;
    f.delete_pod("writer")?;
    f.wait_gone("writer", Duration::from_secs(20)).await?;
    f.create(
        "pods",
        with_pvc("reader", "test \"$(cat /data/f)\" = hello"),
    )?;
    let p = f
        .wait_status("reader", "Succeeded", |s| s["phase"] == "Succeeded")
        .await?;
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );

    // A container that ignores SIGTERM is killed when its grace period ends, then the Pod object goes.
    let mut stubborn = sh_pod(
        "stubborn",
        "trap '' TERM; touch /tmp/trapped; while :; do sleep 1; done",
    );
    stubborn["spec"]["terminationGracePeriodSeconds"] = json!(3);
    // Ready once the trap is set (an exec probe), so the SIGTERM cannot come before it.
    stubborn["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": ["test", "-f", "/tmp/trapped"]}, "periodSeconds": 1});
    f.create("pods", stubborn)?;
    f.wait_status("stubborn", "Running", running_ready).await?;
    let container = f
        .kubelet()
        .container_of("default", "stubborn", "main")
        .expect("container");
    let t0 = Instant::now();
    f.delete_pod("stubborn")?;
    let marked = f.pod("stubborn").expect("still there while terminating");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    f.wait_gone("stubborn", Duration::from_secs(30)).await?;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(20),
        "the pod went after {took:?}, its grace period is 3 s"
    );
    assert!(podman::run(&["container", "exists", &container]).is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_restarts_and_missing_images() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let never = |name: &str, script: &str| {
        let mut p = sh_pod(name, script);
        p["spec"]["restartPolicy"] = json!("Never");
        p
    };
    f.create("pods", never("ok", "exit 0"))?;
    f.create("pods", never("bad", "exit 3"))?;
    f.create("pods", sh_pod("crash", "exit 1"))?;
    let mut ghost = sh_pod("ghost", "true");
    ghost["spec"]["containers"][0]["image"] = json!("localhost/pgherd-no-such-image:1");
    f.create("pods", ghost)?;

    let reason = |s: &Value| {
        s["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let g = f
        .wait_status("ghost", "ErrImagePull", |s| reason(s) == "ErrImagePull")
        .await?;
    assert_eq!(g["status"]["phase"], "Pending");
    f.wait_status("ghost", "ImagePullBackOff", |s| {
        reason(s) == "ImagePullBackOff"
    })
    .await?;

    f.wait_status("ok", "Succeeded", |s| s["phase"] == "Succeeded")
        .await?;
    let bad = f
        .wait_status("bad", "Failed", |s| s["phase"] == "Failed")
        .await?;
    let t = &bad["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error"))
    );

    let crash = f
        .wait_status("crash", "restarted twice", |s| {
            s["containerStatuses"][0]["restartCount"].as_i64() >= Some(2)
        })
        .await?;
    assert_eq!(crash["status"]["phase"], "Running");
    assert_eq!(
        crash["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );
    f.wait_status("crash", "CrashLoopBackOff", |s| {
        s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await?;

    // Deleting pods that never ran (or ended) is quick.
    for name in ["ghost", "ok", "bad", "crash"] {
        f.delete_pod(name)?;
    }
    for name in ["ghost", "ok", "bad", "crash"] {
        f.wait_gone(name, Duration::from_secs(20)).await?;
    }
    let mut f = f;
    if let Some(k) = f.kubelet.take() {
        k.shutdown().await;
    }
    Ok(())
}

/// What `pgherd-coordinator render` makes of Zalando's minimal manifest, with the database image swapped
/// in, run by the controllers and the pod runner: Patroni in the pod finds the API through its in-cluster
/// configuration, takes the leader lock and labels its pod `spilo-role=master`; the second pod, started
/// once the first is Ready, clones it over the pod network and becomes `replica`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_statefulset_runs_patroni_in_cluster() -> anyhow::Result<()> {
    use pgherd_tests::kube::controllers::{ControllerOptions, Controllers};
    use serde::Deserialize;
    let f = Fixture::start().await?;
    let _controllers = Controllers::start(
        f.store().clone(),
        ControllerOptions {
            ca_pem: f.api.ca_pem().into(),
            ..Default::default()
        },
    );
    let manifest = std::fs::read_to_string(
        pgherd_tests::tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )?;
    let rendered = pgherd_coordinator::render::render(
        &manifest,
        &pgherd_coordinator::config::OperatorConfig::default(),
        "default",
    )?
    .replace(
        "<generated by pgherd-coordinator at creation>",
        &random_hex(16),
    );
    let w = WriteOptions {
        manager: "test".into(),
        ..Default::default()
    };
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let mut v = Value::deserialize(doc)?;
        let (api, kind) = (
            v["apiVersion"].as_str().unwrap_or_default().to_string(),
            v["kind"].as_str().unwrap_or_default().to_string(),
        );
        if kind == "StatefulSet" {
            v["spec"]["template"]["spec"]["containers"][0]["image"] = json!(POSTGRES_IMAGE);
        }
        let rt = f.store().kind(&api, &kind).expect("served kind");
        f.store().create(&rt, "default", v, &w)?;
    }
    for (pod, role) in [
        ("acid-minimal-cluster-0", "master"),
        ("acid-minimal-cluster-1", "replica"),
    ] {
        wait_role(&f, pod, role).await?;
    }
    Ok(())
}

async fn wait_role(f: &Fixture, pod: &str, role: &str) -> anyhow::Result<Value> {
    let what = format!("{pod} to be labelled {role}");
    wait::until(Duration::from_secs(240), &what, || {
        let p = f.pod(pod);
        async move {
            match p {
                Some(p) if p["metadata"]["labels"]["spilo-role"] == role => Ok(Some(p)),
                Some(p) => {
                    anyhow::bail!("labels {} status {}", p["metadata"]["labels"], p["status"])
                }
                None => Ok(None),
            }
        }
    })
    .await
}
