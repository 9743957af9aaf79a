//! Containers of pgherd's images under Debian's rootful podman, with the project's `.config/containers.conf`
//! (runc, cgroupfs, file events, ulimits that fit these machines). A user-defined network gives every
//! container its own address, reachable from the host; services the containers need (etcd, Garage) run on
//! the host bound to the network's gateway. Every network and container is removed when its guard drops.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;

use crate::service::random_hex;
use crate::tools;

/// The database image `scripts/build-images.sh` builds (`PGHERD_IMAGE_PROFILE=debug` in the test suite).
pub const POSTGRES_IMAGE: &str = "localhost/pgherd-postgres:dev";
pub const COORDINATOR_IMAGE: &str = "localhost/pgherd-coordinator:dev";
/// The base both images build on (imported by `scripts/build-images.sh`).
pub const BASE_IMAGE: &str = "docker.io/library/debian:bookworm-slim";

/// `podman` with the project's configuration.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env(
        "CONTAINERS_CONF",
        tools::repo_root().join(".config/containers.conf"),
    );
    cmd
}

/// Runs podman to completion; a failure carries podman's stderr.
pub fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = podman().args(args).output().with_context(|| {
        format!("running podman {args:?} (scripts/build-images.sh installs it)")
    })?;
    anyhow::ensure!(
        out.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fails with the command that builds it when `image` is missing.
pub fn require_image(image: &str) -> anyhow::Result<()> {
    run(&["image", "exists", image]).map(drop).with_context(|| {
        format!("{image} is missing: PGHERD_IMAGE_PROFILE=debug scripts/build-images.sh")
    })
}

pub struct Network {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
}

impl Network {
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", random_hex(4));
        run(&["network", "create", &name])?;
        let inspect = |format: &str| {
            run(&[
                "network",
                "inspect",
                &name,
                "--format",
                &format!("{{{{range .Subnets}}}}{{{{.{format}}}}}{{{{end}}}}"),
            ])
        };
        let network = Self {
            subnet: inspect("Subnet")?,
            gateway: inspect("Gateway")?,
            name: name.clone(),
        };
        anyhow::ensure!(!network.gateway.is_empty(), "network {name} has no gateway");
        // netavark creates the bridge, and with it the gateway address host services bind to, only when
        // the first container joins: an idle one holds it up for the network's lifetime.
        run(&[
            "run",
            "-d",
            "--name",
            &network.holder(),
            "--network",
            &name,
            BASE_IMAGE,
            "sleep",
            "infinity",
        ])?;
        network.pin_bridge_address()?;
        Ok(network)
    }

    /// Fixes the bridge's MAC address. A Linux bridge without one set takes the lowest MAC of its ports,
    /// so a container joining or leaving can change the gateway's MAC under every other container, whose
    /// ARP entry then points nowhere until it expires: 10 to 20 s in which nothing reaches the host (the
    /// stand-in's API server, etcd, Garage). Seen as a deleted primary's Patroni that could not release
    /// its leader lock while other pods were removed; netavark 1.4 (Debian 12) does not set one itself.
    fn pin_bridge_address(&self) -> anyhow::Result<()> {
        let bridge = run(&[
            "network",
            "inspect",
            &self.name,
            "--format",
            "{{.NetworkInterface}}",
        ])?;
        let mac = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address"))
            .with_context(|| format!("reading the MAC address of bridge {bridge}"))?;
        let out = std::process::Command::new("ip")
            .args(["link", "set", "dev", &bridge, "address", mac.trim()])
            .output()
            .context("running ip (iproute2)")?;
        anyhow::ensure!(
            out.status.success(),
            "ip link set dev {bridge} address {}: {}",
            mac.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    fn holder(&self) -> String {
        format!("{}-bridge", self.name)
    }

    /// Address `host` (the last octet) in this network's /24: containers get fixed addresses so that POD_IP
    /// can be given at start, as the kubelet does through the downward API.
    pub fn address(&self, host: u8) -> String {
        let prefix = self.gateway.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        format!("{prefix}.{host}")
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "-f", "-t", "0", &self.holder()])
            .output();
        let _ = podman().args(["network", "rm", "-f", &self.name]).output();
    }
}

/// What to start: image, name, address, environment, memory limit.
pub struct ContainerSpec {
    pub image: String,
    pub name: String,
    pub ip: String,
    pub env: BTreeMap<String, String>,
    pub memory: Option<String>,
    pub volumes: Vec<String>,
}

pub struct Container {
    pub name: String,
    pub ip: String,
}

impl Container {
    /// Starts the container detached. The environment goes through a 0600 env file, never argv.
    pub fn start(network: &Network, spec: &ContainerSpec) -> anyhow::Result<Self> {
        let env_file = tempfile::NamedTempFile::new()?;
        let mut text = String::new();
        for (k, v) in &spec.env {
            anyhow::ensure!(!v.contains('\n'), "{k}: an env file cannot carry newlines");
            text.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(env_file.path(), text)?;
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &spec.name,
            "--hostname",
            &spec.name,
            "--network",
            &network.name,
            "--ip",
            &spec.ip,
            "--env-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(env_file.path().display().to_string());
        if let Some(m) = &spec.memory {
            args.extend(["--memory".into(), m.clone()]);
        }
        for v in &spec.volumes {
            args.extend(["--volume".into(), v.clone()]);
        }
        args.push(spec.image.clone());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)?;
        Ok(Self {
            name: spec.name.clone(),
            ip: spec.ip.clone(),
        })
    }

    /// Runs a command inside the container.
    pub fn exec(&self, cmd: &[&str]) -> anyhow::Result<Output> {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(cmd);
        Ok(podman().args(&args).output()?)
    }

    /// `podman kill` (SIGKILL to PID 1 and so to the whole container).
    pub fn kill(&self) -> anyhow::Result<()> {
        run(&["kill", &self.name]).map(drop)
    }

    /// `podman stop -t <grace>` (SIGTERM to PID 1, SIGKILL after the grace period); returns the exit code.
    pub fn stop(&self, grace: Duration) -> anyhow::Result<i32> {
        run(&["stop", "-t", &grace.as_secs().to_string(), &self.name])?;
        self.exit_code()
    }

    pub fn start_again(&self) -> anyhow::Result<()> {
        run(&["start", &self.name]).map(drop)
    }

    pub fn exit_code(&self) -> anyhow::Result<i32> {
        Ok(run(&["inspect", &self.name, "--format", "{{.State.ExitCode}}"])?.parse()?)
    }

    pub fn running(&self) -> bool {
        run(&["inspect", &self.name, "--format", "{{.State.Running}}"]).is_ok_and(|s| s == "true")
    }

    /// The container's output (the agent's and Patroni's log).
    pub fn logs(&self) -> String {
        logs(&self.name, None)
    }

    pub fn log_tail(&self, n: usize) -> String {
        logs(&self.name, Some(n))
    }
}

/// What a container wrote to stdout and stderr; only the last `tail` lines when given.
pub fn logs(container: &str, tail: Option<usize>) -> String {
    let mut cmd = podman();
    cmd.arg("logs");
    if let Some(n) = tail {
        cmd.args(["--tail", &n.to_string()]);
    }
    cmd.arg(container)
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
}

/// `psql -Atc sql` against `ip` as the superuser over TLS, as a client outside the pod connects (Spilo's
/// pg_hba rejects non-TLS connections from the network); the password goes through the environment.
pub fn psql(ip: &str, password: &str, db: &str, sql: &str) -> anyhow::Result<String> {
    psql_as(ip, "postgres", password, db, sql)
}

/// [`psql`] as `user`; user and database go through the environment, so any name works unquoted.
pub fn psql_as(
    ip: &str,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> anyhow::Result<String> {
    let out = Command::new(tools::pg15_bin()?.join("psql"))
        .arg(format!(
            "host={ip} port=5432 sslmode=require connect_timeout=5"
        ))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGUSER", user)
        .env("PGDATABASE", db)
        .env("PGPASSWORD", password)
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql on {ip}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}
