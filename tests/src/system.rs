//! The whole system on one machine: the Kubernetes API stand-in with its controllers and pod runner on a
//! podman network, pgherd installed the way a user installs it (`helm template | kubectl apply`), and the
//! real images running as pods. The tests of issue 11 and `scripts/demo.sh` both start it from here.
//!
//! Everything verified through it carries the stand-in's simplifications (docs/kube-standin.md): no
//! authorization, no Service routing (clients reach pods by their IPs from Endpoints), no cgroup limits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::kube::controllers::{ControllerOptions, Controllers};
use crate::kube::kubelet::{Kubelet, KubeletOptions};
use crate::kube::{ApiServer, Options};
use crate::podman::{Network, COORDINATOR_IMAGE, POSTGRES_IMAGE};
use crate::{deploy_check, tools, wait};

/// The stand-in, its controllers and its pod runner on one podman network.
pub struct System {
    // Field order is drop order: the pod runner removes its containers before the network goes.
    kubelet: Option<Kubelet>,
    _controllers: Controllers,
    pub api: ApiServer,
    pub network: Network,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// kubectl 1.37 from the tools venv (scripts/install-tools.sh).
pub fn kubectl_bin() -> PathBuf {
    tools::repo_root().join(".venv-tools/bin/kubectl")
}

impl System {
    /// Starts everything; `dir` keeps the kubeconfig, CA and volumes (a temporary directory when `None`).
    pub async fn start(prefix: &str, dir: Option<PathBuf>) -> anyhow::Result<System> {
        crate::podman::require_image(POSTGRES_IMAGE)?;
        crate::podman::require_image(COORDINATOR_IMAGE)?;
        let (dir, tmp) = match dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("pgherd-system-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir)?;
        let network = Network::create(prefix)?;
        let gateway: std::net::IpAddr = network.gateway.parse().context("network gateway")?;
        let api = ApiServer::start(Options {
            listen: std::net::SocketAddr::new(gateway, 0),
            advertise: Some(gateway),
            dir: Some(dir.join("kube")),
            // The chart installs the CRDs, as it does for users.
            crds_dir: None,
            ..Options::default()
        })
        .await?;
        let controllers = Controllers::start(
            api.store().clone(),
            ControllerOptions {
                ca_pem: api.ca_pem().into(),
                ..Default::default()
            },
        );
        let mut opts = KubeletOptions::new(&api, &network)?;
        opts.state_dir = Some(dir.join("kubelet"));
        let kubelet = Kubelet::start(api.store().clone(), opts).await?;
        Ok(System {
            kubelet: Some(kubelet),
            _controllers: controllers,
            api,
            network,
            dir,
            _tmp: tmp,
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        self.api.kubeconfig()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// kubectl against the stand-in.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(kubectl_bin());
        cmd.env("KUBECONFIG", self.kubeconfig());
        cmd
    }

    /// Runs kubectl, feeding `stdin`; fails with its stderr.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = deploy_check::output(self.kubectl().args(args), stdin);
        anyhow::ensure!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            deploy_check::text(&out.stderr)
        );
        Ok(deploy_check::text(&out.stdout))
    }

    /// Installs pgherd as a user would: the chart rendered with `helm template` (the test images, and `set`
    /// on top) and applied server-side with kubectl; then waits for the coordinator pod to be ready.
    pub async fn install_pgherd(&self, set: &[&str]) -> anyhow::Result<()> {
        let mut args = vec![
            "--set".to_string(),
            format!("image.tag={}", tag(COORDINATOR_IMAGE)),
            "--set".to_string(),
            format!("configGeneral.docker_image={POSTGRES_IMAGE}"),
        ];
        for s in set {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // CRDs first, as `helm install` does: kubectl cannot map a custom resource whose CRD is created by
        // the same apply.
        let (crds, rest): (Vec<Value>, Vec<Value>) =
            deploy_check::documents(&deploy_check::render(&refs))
                .into_iter()
                .partition(|d| d["kind"] == "CustomResourceDefinition");
        for docs in [crds, rest] {
            let yaml: String = docs
                .iter()
                .map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).expect("YAML")))
                .collect();
            self.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&yaml))?;
        }
        self.wait_deployment("default", "pgherd-coordinator", Duration::from_secs(120))
            .await
    }

    /// Waits until every replica of a Deployment is ready and up to date.
    pub async fn wait_deployment(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait::until(timeout, &format!("deployment {name} ready"), || async {
            let d = self.get("apps/v1", "Deployment", ns, name);
            Ok(d.filter(|d| {
                let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                d["status"]["observedGeneration"] == d["metadata"]["generation"]
                    && d["status"]["updatedReplicas"].as_i64().unwrap_or(0) == want
                    && d["status"]["readyReplicas"].as_i64().unwrap_or(0) == want
                    && d["status"]["replicas"].as_i64().unwrap_or(0) == want
            })
            .map(|_| ()))
        })
        .await
        .with_context(|| self.describe_pods(ns))
    }

    /// A object as the API serves it, `None` when absent.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = self.api.store().kind(api_version, kind)?;
        self.api.store().get(&rt, ns, name).ok()
    }

    /// Objects of a kind matching a label selector.
    pub fn list(&self, api_version: &str, kind: &str, ns: &str, selector: &str) -> Vec<Value> {
        let Some(rt) = self.api.store().kind(api_version, kind) else {
            return vec![];
        };
        let sel = crate::kube::select::Selectors::parse(Some(selector), None).unwrap_or_default();
        self.api.store().list(&rt, Some(ns), &sel, None, None).0
    }

    /// Waits until `n` pods matching `selector` are Running and Ready; returns them.
    pub async fn wait_ready_pods(
        &self,
        ns: &str,
        selector: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        wait::until(timeout, &format!("{n} ready pods {selector}"), || async {
            let pods: Vec<Value> = self
                .list("v1", "Pod", ns, selector)
                .into_iter()
                .filter(is_ready)
                .collect();
            Ok((pods.len() == n).then_some(pods))
        })
        .await
        .with_context(|| self.describe_pods(ns))
    }

    /// The superuser's password of `cluster`, read as a user reads it: from its credentials Secret.
    pub fn superuser_password(&self, ns: &str, cluster: &str) -> anyhow::Result<String> {
        let secret = format!("postgres.{cluster}.credentials.postgresql.acid.zalan.do");
        let out = self.kubectl_ok(
            &[
                "-n",
                ns,
                "get",
                "secret",
                &secret,
                "-o",
                "jsonpath={.data.password}",
            ],
            None,
        )?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(out.trim())?;
        Ok(String::from_utf8(raw)?)
    }

    /// Once `cluster` has `n` ready pods, exactly one labelled master and the rest replica: the master's
    /// pod and the replicas' pods.
    pub async fn wait_members(
        &self,
        ns: &str,
        cluster: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Value, Vec<Value>)> {
        let selector = format!("cluster-name={cluster}");
        wait::until(timeout, "one master and ready replicas", || async {
            let ready: Vec<Value> = self
                .list("v1", "Pod", ns, &selector)
                .into_iter()
                .filter(is_ready)
                .collect();
            let role = |r: &str| -> Vec<Value> {
                ready
                    .iter()
                    .filter(|p| label(p, "spilo-role") == Some(r))
                    .cloned()
                    .collect()
            };
            let (masters, replicas) = (role("master"), role("replica"));
            Ok(
                (ready.len() == n && masters.len() == 1 && replicas.len() == n - 1)
                    .then(|| (masters[0].clone(), replicas)),
            )
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}{}", self.describe_pods(ns)))
    }

    /// Pods' phases, conditions and the tails of their logs, then those of recently deleted pods, for
    /// failure messages.
    pub fn describe_pods(&self, ns: &str) -> String {
        let mut out = String::new();
        for p in self.list("v1", "Pod", ns, "") {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            out.push_str(&format!(
                "\n--- pod {name}: phase {} labels {} statuses {}\n",
                p["status"]["phase"], p["metadata"]["labels"], p["status"]["containerStatuses"]
            ));
            let containers = p["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in containers {
                let cname = c["name"].as_str().unwrap_or("");
                if let Some(id) = self
                    .kubelet
                    .as_ref()
                    .and_then(|k| k.container_of(ns, name, cname))
                {
                    out.push_str(&format!(
                        "  [{cname}]\n{}\n",
                        crate::podman::logs(&id, Some(30))
                    ));
                }
            }
        }
        for log in self
            .kubelet
            .as_ref()
            .map(|k| k.terminated_logs())
            .unwrap_or_default()
        {
            out.push_str(&format!("\n{log}\n"));
        }
        out
    }

    /// Stops every pod (with its grace period) and removes containers, network and, unless kept, the directory.
    pub async fn shutdown(mut self) {
        if let Some(k) = self.kubelet.take() {
            k.shutdown().await;
        }
    }
}

fn tag(image: &str) -> &str {
    image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest")
}

/// Running, with condition Ready=True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The label `key` of an object.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["labels"][key].as_str()
}

/// `status.podIP` of a pod.
pub fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `metadata.name` of an object.
pub fn name(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `psql -Atc sql` as the superuser over TLS, in the `postgres` database.
pub fn psql(ip: &str, password: &str, sql: &str) -> anyhow::Result<String> {
    crate::podman::psql(ip, password, "postgres", sql)
}
