//! A single-node etcd on loopback (or a container network's gateway), as Patroni's DCS.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::service::{free_port, Service};
use crate::{tools, wait};

pub struct Etcd {
    svc: Service,
    addr: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1").await
    }

    /// Listening on `addr` (a container network's gateway, for members in containers).
    pub async fn start_on(addr: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("pgherd-etcd-").tempdir()?;
        let (port, peer) = (free_port(), free_port());
        let client = format!("http://{addr}:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(tools::etcd()?);
        cmd.args(["--name", "pgherd"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("pgherd={peer_url}")])
            .args(["--log-level", "warn"])
            // Zalando's `etcd_host` becomes Spilo's ETCD_HOST, Patroni's etcd v2 client, which etcd 3.4
            // serves only when asked.
            .arg("--enable-v2=true");
        let svc = Service::spawn("etcd", cmd, &dir.path().join("etcd.log"))?;
        let etcd = Self {
            svc,
            addr: addr.to_string(),
            port,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let url = format!("{client}/health");
        wait::until(Duration::from_secs(30), "etcd to become healthy", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body: serde_json::Value = http.get(&url).send().await?.json().await?;
                Ok((body["health"] == "true").then_some(()))
            }
        })
        .await?;
        Ok(etcd)
    }

    /// `host:port` as Spilo's ETCD_HOST and ETCD3_HOST want it.
    pub fn host(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    pub fn log(&self) -> &Path {
        self.svc.log_path()
    }
}
