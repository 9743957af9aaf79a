//! A single-node Garage S3 server on loopback with one bucket and one access key, for backup tests.
//! It can be stopped and started again on the same data (to cut S3 away from a running cluster).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::service::{free_port, random_hex, Service};
use crate::{tools, wait};

pub struct Garage {
    svc: Option<Service>,
    config: PathBuf,
    /// Where the S3 API listens.
    pub addr: String,
    pub s3_port: u16,
    pub bucket: String,
    pub key_id: String,
    pub secret_key: String,
    pub region: String,
    dir: tempfile::TempDir,
}

impl Garage {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1").await
    }

    /// With the S3 API on `addr` (a container network's gateway, for members in containers).
    pub async fn start_on(addr: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pgherd-garage-")
            .tempdir()?;
        let (rpc, s3_port, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let d = dir.path().display();
        let text = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"{addr}:{s3_port}\"\nroot_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{}\"\n",
            random_hex(32),
            random_hex(16)
        );
        write_secret(&config, &text)?;
        let mut garage = Self {
            svc: None,
            config,
            addr: addr.to_string(),
            s3_port,
            bucket: "pgherd-test".into(),
            key_id: format!("GK{}", random_hex(12)),
            secret_key: random_hex(32),
            region: "garage".into(),
            dir,
        };
        garage.start_server().await?;
        let node = garage.cli(&["node", "id", "-q"])?;
        let node = node
            .trim()
            .split('@')
            .next()
            .context("garage node id printed nothing")?
            .to_string();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        garage.cli(&["layout", "apply", "--version", "1"])?;
        garage.cli(&["bucket", "create", &garage.bucket.clone()])?;
        let (id, secret) = (garage.key_id.clone(), garage.secret_key.clone());
        garage.cli(&["key", "import", "--yes", "-n", "pgherd", &id, &secret])?;
        garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &garage.bucket.clone(),
            "--key",
            "pgherd",
        ])?;
        Ok(garage)
    }

    async fn start_server(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(tools::garage()?);
        cmd.arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn");
        self.svc = Some(Service::spawn(
            "garage",
            cmd,
            &self.dir.path().join("garage.log"),
        )?);
        let addr = format!("{}:{}", self.addr, self.s3_port);
        wait::until(
            Duration::from_secs(30),
            "Garage's S3 port to accept connections",
            || {
                let addr = addr.clone();
                async move { Ok(tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())) }
            },
        )
        .await?;
        wait::until(
            Duration::from_secs(30),
            "Garage's RPC to answer",
            || async { Ok(self.cli(&["status"]).ok().map(|_| ())) },
        )
        .await
    }

    /// Stops the server (S3 becomes unreachable); data is kept for [`Garage::resume`].
    pub fn pause(&mut self) {
        self.svc.take();
    }

    /// Starts the server again on the same data and ports.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.svc.is_none(), "garage is already running");
        self.start_server().await
    }

    /// Runs the garage CLI against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(tools::garage()?)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .context("running the garage CLI")?;
        anyhow::ensure!(
            out.status.success(),
            "garage {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.addr, self.s3_port)
    }

    /// The Spilo environment that points a cluster's WAL storage at this server.
    pub fn spilo_env(&self) -> Vec<(String, String)> {
        [
            ("WAL_S3_BUCKET", self.bucket.clone()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The Spilo clone environment (CLONE_WITH_WALE) for restoring from cluster `scope`'s backups here.
    pub fn clone_env(&self, scope: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .spilo_env()
            .into_iter()
            .map(|(k, v)| {
                (
                    if k == "WAL_S3_BUCKET" {
                        "CLONE_WAL_S3_BUCKET".into()
                    } else {
                        format!("CLONE_{k}")
                    },
                    v,
                )
            })
            .collect();
        env.push(("CLONE_METHOD".into(), "CLONE_WITH_WALE".into()));
        env.push(("CLONE_SCOPE".into(), scope.into()));
        env
    }

    /// An S3 client with this server's key.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        self.s3_with(&self.key_id, &self.secret_key)
    }

    /// The keys in the bucket under `prefix` (the first 1000, one listing page).
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .s3()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect())
    }

    /// An S3 client for this server with any credentials (to test refusals).
    pub fn s3_with(&self, key_id: &str, secret: &str) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(key_id, secret, None, None, "pgherd-test");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// Garage refuses configuration files with secrets that others can read.
fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A cluster archiving to `garage`, with scheduled backups far away: tests trigger them, and the first
/// backup of a new leader is automatic.
pub fn garage_spec(
    scope: &str,
    members: usize,
    garage: &Garage,
) -> anyhow::Result<crate::ClusterSpec> {
    let mut spec = crate::ClusterSpec::new(scope, members)?;
    spec.extra_env.extend(garage.spilo_env());
    spec.extra_env
        .insert("BACKUP_SCHEDULE".into(), "0 0 1 1 *".into());
    Ok(spec)
}
