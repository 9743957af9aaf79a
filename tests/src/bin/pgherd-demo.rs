//! `pgherd-demo`: the whole system on this machine, in the foreground. The Kubernetes stand-in (API server,
//! controllers, pod runner on podman) starts; pgherd is installed from its Helm chart with kubectl, as a
//! user installs it; Zalando's minimal manifest is applied; and the demo prints what a user types next.
//!
//! `pgherd-demo up` tears everything down on Ctrl-C or SIGTERM. `pgherd-demo stop` (from another terminal)
//! sends that SIGTERM to a running demo, waits until it is gone, and removes whatever a killed demo left
//! behind (its containers and network).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pgherd_tests::podman::{podman, run};
use pgherd_tests::system::{kubectl_bin, pod_ip, System};
use pgherd_tests::tools;
use tokio::signal::unix::{signal, SignalKind};

const NETWORK_PREFIX: &str = "pgherd-demo";
const CLUSTER: &str = "acid-minimal-cluster";
/// The member table, without an AGE column, so it is printed again only when something changed.
const MEMBER_COLUMNS: &str = "custom-columns=NAME:.metadata.name,STATUS:.status.phase,\
    READY:.status.conditions[?(@.type==\"Ready\")].status,RESTARTS:.status.containerStatuses[0].restartCount,\
    IP:.status.podIP,ROLE:.metadata.labels.spilo-role";
const MANIFEST: &str = "coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml";

fn pid_file() -> PathBuf {
    tools::repo_root().join(".demo.pid")
}

/// Kubeconfig, CA and volumes of the running demo.
fn demo_dir() -> PathBuf {
    tools::repo_root().join(".demo")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None | Some("up") => up().await,
        Some("stop") => stop(),
        Some(other) => anyhow::bail!("unknown command {other:?}; use `up` or `stop`"),
    }
}

async fn up() -> anyhow::Result<()> {
    if let Some(pid) = running_demo() {
        anyhow::bail!("a demo is already running (pid {pid}); stop it with scripts/demo.sh stop");
    }
    sweep_leftovers();
    std::fs::write(pid_file(), std::process::id().to_string())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let result = tokio::select! {
        r = start() => r,
        _ = term.recv() => Err(anyhow::anyhow!("stopped before the cluster was ready")),
        _ = int.recv() => Err(anyhow::anyhow!("interrupted before the cluster was ready")),
    };
    let sys = match result {
        Ok(sys) => sys,
        Err(e) => {
            // Dropping the futures above dropped the system with them; sweep what a half start left.
            sweep_leftovers();
            let _ = std::fs::remove_file(pid_file());
            return Err(e);
        }
    };
    let mut last = String::new();
    loop {
        let table = sys
            .kubectl_ok(&["get", "pods", "-o", MEMBER_COLUMNS], None)
            .unwrap_or_else(|e| format!("{e:#}"));
        if table != last {
            println!("{table}\n");
            last = table;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    println!("stopping the pods (with their grace periods), the stand-in and the network…");
    sys.shutdown().await;
    let _ = std::fs::remove_file(pid_file());
    println!("stopped; nothing left running");
    Ok(())
}

async fn start() -> anyhow::Result<System> {
    let dir = demo_dir();
    let _ = std::fs::remove_dir_all(&dir);
    println!("starting the Kubernetes stand-in: API server, controllers, pod runner on a podman network…");
    let sys = System::start(NETWORK_PREFIX, Some(dir)).await?;
    println!(
        "installing pgherd: helm template deploy/helm/pgherd | kubectl apply --server-side -f -"
    );
    sys.install_pgherd(&[]).await?;
    println!("kubectl apply --server-side -f {MANIFEST}");
    let manifest = std::fs::read_to_string(tools::repo_root().join(MANIFEST))?;
    sys.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest))?;
    println!("waiting for Zalando's minimal cluster: 2 pods of localhost/pgherd-postgres, Patroni on the Kubernetes API…");
    let (master, _) = sys
        .wait_members("default", CLUSTER, 2, Duration::from_secs(300))
        .await?;
    let kubeconfig = sys.kubeconfig().display().to_string();
    let kubectl = kubectl_bin().display().to_string();
    let secret = format!("postgres.{CLUSTER}.credentials.postgresql.acid.zalan.do");
    println!();
    println!("the cluster runs. In another terminal:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  alias kubectl={kubectl}");
    println!("  kubectl get postgresql");
    println!("  kubectl get pods -L spilo-role");
    println!("connect to the primary (no kube-proxy here: the master Service's Endpoints give its pod IP):");
    println!(
        "  PGPASSWORD=$(kubectl get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d) \\\n    \
         psql \"host=$(kubectl get endpoints {CLUSTER} -o jsonpath='{{.subsets[0].addresses[0].ip}}') \
         user=postgres dbname=postgres sslmode=require\""
    );
    println!(
        "fail over: kubectl delete pod {} (now the master, at {})",
        master["metadata"]["name"].as_str().unwrap_or(""),
        pod_ip(&master)
    );
    println!("logs: kubectl logs {CLUSTER}-0; kubectl logs deploy/pgherd-coordinator");
    println!("stop: Ctrl-C here, or `scripts/demo.sh stop` from another terminal");
    println!();
    Ok(sys)
}

/// Pid of a demo that is still alive, from the pid file.
fn running_demo() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    pgherd_shared::proctree::alive(pid).then_some(pid)
}

/// Removes the pods, containers and network of a demo that was killed before it could clean up.
fn sweep_leftovers() {
    pgherd_tests::kube::kubelet::remove_leftovers();
    if let Ok(names) = run(&["network", "ls", "--format", "{{.Name}}"]) {
        for net in names.lines().filter(|n| n.starts_with(NETWORK_PREFIX)) {
            let _ = podman()
                .args(["rm", "-f", "-t", "0", &format!("{net}-bridge")])
                .output();
            let _ = podman().args(["network", "rm", "-f", net]).output();
        }
    }
}

fn stop() -> anyhow::Result<()> {
    if let Some(pid) = running_demo() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .context("signalling the demo")?;
        // Pods get their grace periods (the database pods' is 300 s; Patroni stops far sooner).
        let left = pgherd_tests::service::wait_gone(&[pid], Duration::from_secs(330));
        anyhow::ensure!(left.is_empty(), "the demo (pid {pid}) is still running");
    } else {
        println!("no demo is running");
    }
    sweep_leftovers();
    let _ = std::fs::remove_file(pid_file());
    println!("demo stopped; no container, process or network left");
    Ok(())
}
