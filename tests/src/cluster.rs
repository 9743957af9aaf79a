//! N `pgherd-agent run` members forming one Patroni cluster, each with its own PGDATA, ports and runtime
//! directory, driven by the same Spilo environment contract a Zalando pod gets.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use pgherd_shared::patroni;

use crate::service::{free_port, random_hex, Service};
use crate::{tools, wait};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub scope: String,
    pub members: usize,
    pub synchronous_mode: bool,
    /// Patroni executable (4.x by default).
    pub patroni: PathBuf,
    /// Extra or overriding environment for every member (e.g. WAL_S3_BUCKET and AWS_*).
    pub extra_env: BTreeMap<String, String>,
    /// Deep-merged over each member's default SPILO_CONFIGURATION (which carries per-member paths, so
    /// replacing it through `extra_env` would lose them).
    pub spilo_configuration: Option<serde_json::Value>,
    /// Start only the first N members; the others are started later with [`Member::start`].
    pub start_first: Option<usize>,
}

impl ClusterSpec {
    pub fn new(scope: &str, members: usize) -> anyhow::Result<Self> {
        Ok(Self {
            scope: scope.into(),
            members,
            synchronous_mode: false,
            patroni: tools::patroni4()?,
            extra_env: BTreeMap::new(),
            spilo_configuration: None,
            start_first: None,
        })
    }
}

pub struct Member {
    pub name: String,
    pub pg_port: u16,
    pub api_port: u16,
    /// The agent's metrics exporter (PGHERD_METRICS_PORT), unique per member.
    pub metrics_port: u16,
    dir: PathBuf,
    env: BTreeMap<String, String>,
    agent: PathBuf,
    svc: Option<Service>,
}

impl Member {
    /// Starts (or restarts) this member's agent with its unchanged environment and directories.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.svc.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(&self.agent);
        cmd.args(["run", "--ip", "127.0.0.1"]);
        // 30 s unless the spec sets PGHERD_STOP_TIMEOUT (the agent's own default is 90 s).
        if !self.env.contains_key("PGHERD_STOP_TIMEOUT") {
            cmd.args(["--stop-timeout", "30"]);
        }
        cmd.env_clear().envs(&self.env);
        self.svc = Some(Service::spawn(
            &self.name,
            cmd,
            &self.dir.join("agent.log"),
        )?);
        Ok(())
    }

    pub fn patroni(&self) -> patroni::Client {
        patroni::Client::new(format!("http://127.0.0.1:{}", self.api_port))
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run/postgresql")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pgroot/data")
    }

    /// Root of this member's files (what the pod's volumes would hold).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The member's WAL envdir (`WALE_ENV_DIR`).
    pub fn envdir(&self) -> PathBuf {
        self.dir.join("run/etc/wal-e.d/env")
    }

    /// Runs `pgherd-agent <args>` as the member's Patroni children would (same config, same envdir).
    pub fn agent(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(
            Command::new(self.dir.parent().unwrap().join("bin/pgherd-agent"))
                .args(args)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("PGHERD_PATRONI_CONFIG", self.dir.join("run/postgres.yml"))
                .env("HOSTNAME", &self.name)
                .output()?,
        )
    }

    /// `pgherd-agent backup list --json` on the member's envdir.
    pub fn backups(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let envdir = self.envdir().display().to_string();
        let out = self.agent(&["backup", "list", "--json", "--envdir", &envdir])?;
        anyhow::ensure!(
            out.status.success(),
            "backup list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// A superuser connection over the member's Unix socket (`local all all trust`, as in Spilo).
    pub async fn connect(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self.socket_dir())
            .port(self.pg_port)
            .user("postgres")
            .dbname(db);
        cfg.connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}", self.name))?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub fn agent_pid(&self) -> Option<i32> {
        self.svc.as_ref().and_then(Service::pid)
    }

    pub fn is_running(&mut self) -> bool {
        self.svc.as_mut().is_some_and(Service::is_running)
    }

    /// The agent and everything below it.
    pub fn process_tree(&self) -> Vec<i32> {
        self.svc.as_ref().map(Service::tree).unwrap_or_default()
    }

    /// SIGKILL the whole tree (agent, Patroni, postgres and its backends) at once: a node dying.
    pub fn kill9(&mut self) -> Vec<i32> {
        self.svc
            .take()
            .map(|mut s| s.kill_tree())
            .unwrap_or_default()
    }

    /// Sends SIGTERM to the agent only (what the kubelet does) and waits for it to exit.
    pub fn sigterm(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let svc = self.svc.as_mut().context("member is not running")?;
        let status = svc.stop_with(Signal::SIGTERM, timeout)?;
        let status = status.with_context(|| {
            format!(
                "{} did not exit within {timeout:?} after SIGTERM",
                self.name
            )
        })?;
        self.svc = None;
        Ok(status)
    }

    pub fn log_tail(&self, n: usize) -> String {
        crate::service::tail(&self.dir.join("agent.log"), n)
    }

    /// The agent's `/metrics` exposition.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        Ok(reqwest::get(&url).await?.text().await?)
    }

    /// WAL files waiting for archive_command (`.ready` in `pg_wal/archive_status`).
    pub fn ready_files(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("pg_wal/archive_status"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// The value of an unlabelled series in a Prometheus exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub struct Cluster {
    pub spec: ClusterSpec,
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts every member against `etcd_host` (`host:port`). Returns once the processes are spawned;
    /// use [`Cluster::wait_ready`] to wait for a leader and streaming replicas.
    pub fn start(spec: ClusterSpec, etcd_host: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgherd-{}-", spec.scope))
            .tempdir()?;
        // Patroni and Postgres run as `postgres` when the harness is root: they must traverse the temp dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        // Patroni (running as postgres) calls `pgherd-agent …` subcommands from the agent's directory; the
        // build tree may sit where postgres cannot reach it, so each cluster runs its own copy.
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        let agent = bin.join("pgherd-agent");
        std::fs::copy(tools::agent_bin()?, &agent).context("copying the agent binary")?;
        let superuser_pw = random_hex(12);
        let standby_pw = random_hex(12);
        let mut members = Vec::new();
        for i in 0..spec.members {
            let name = format!("{}-{i}", spec.scope);
            let mdir = dir.path().join(&name);
            std::fs::create_dir_all(&mdir)?;
            std::fs::set_permissions(&mdir, std::fs::Permissions::from_mode(0o755))?;
            let (pg_port, api_port, metrics_port) = (free_port(), free_port(), free_port());
            let mut env = member_env(
                &spec,
                &name,
                &mdir,
                pg_port,
                api_port,
                etcd_host,
                &superuser_pw,
                &standby_pw,
            );
            env.entry("PGHERD_METRICS_PORT".into())
                .or_insert_with(|| metrics_port.to_string());
            members.push(Member {
                name,
                pg_port,
                api_port,
                metrics_port,
                dir: mdir,
                env,
                agent: agent.clone(),
                svc: None,
            });
        }
        let mut cluster = Self {
            spec,
            members,
            _dir: dir,
        };
        let first = cluster.spec.start_first.unwrap_or(cluster.members.len());
        for m in cluster.members.iter_mut().take(first) {
            m.start()?;
        }
        Ok(cluster)
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    pub fn member_mut(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    pub fn index_of(&self, name: &str) -> anyhow::Result<usize> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .with_context(|| format!("no member named {name}"))
    }

    /// The cluster view from the first member whose REST API answers.
    pub async fn view(&self) -> anyhow::Result<patroni::Cluster> {
        let mut last = None;
        for m in &self.members {
            match m.patroni().cluster().await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("cluster has no members")))
    }

    /// Waits until there is a leader that accepts writes and `replicas` members stream from it.
    pub async fn wait_ready(
        &self,
        replicas: usize,
        timeout: Duration,
    ) -> anyhow::Result<patroni::Cluster> {
        let what = format!(
            "a leader and {replicas} streaming replicas in {}",
            self.spec.scope
        );
        wait::until(timeout, &what, || async {
            let view = self.view().await?;
            let Some(leader) = view.leader() else {
                return Ok(None);
            };
            if leader.state != "running" || view.streaming_replicas().count() < replicas {
                return Ok(None);
            }
            let i = self.index_of(&leader.name)?;
            let c = self.members[i].connect("postgres").await?;
            let in_recovery: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
            Ok((!in_recovery).then_some(view))
        })
        .await
        .map_err(|e| e.context(format!("member logs:\n{}", self.logs(60))))
    }

    /// Waits until Patroni's synchronous mode has picked a synchronous standby.
    pub async fn wait_sync_standby(&self, timeout: Duration) -> anyhow::Result<()> {
        self.until(timeout, "a sync_standby", || async {
            Ok(self
                .view()
                .await?
                .members
                .iter()
                .any(|m| m.role == "sync_standby")
                .then_some(()))
        })
        .await
    }

    /// [`wait::until`] that attaches every member's recent log to a timeout, for diagnosable failures.
    pub async fn until<T, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        probe: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        wait::until(timeout, what, probe)
            .await
            .map_err(|e| e.context(format!("member logs:\n{}", self.logs(60))))
    }

    /// Index of the current leader.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let view = self.view().await?;
        let leader = view.leader().context("the cluster has no leader")?;
        self.index_of(&leader.name)
    }

    /// Every member's recent agent log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("===== {} =====\n{}\n", m.name, m.log_tail(lines)))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(80));
        }
        // Dropping each member's Service stops it (SIGTERM, then SIGKILL of the whole tree).
        for m in &mut self.members {
            m.svc.take();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn member_env(
    spec: &ClusterSpec,
    name: &str,
    dir: &Path,
    pg_port: u16,
    api_port: u16,
    etcd_host: &str,
    superuser_pw: &str,
    standby_pw: &str,
) -> BTreeMap<String, String> {
    let d = |p: &str| dir.join(p).display().to_string();
    let mut spilo_configuration = serde_json::json!({
        "bootstrap": {"dcs": {
            "ttl": 20, "loop_wait": 2, "retry_timeout": 5,
            "synchronous_mode": spec.synchronous_mode,
            "postgresql": {"parameters": {"max_connections": 40, "wal_keep_size": "128MB"}}
        }},
        "postgresql": {"parameters": {
            "shared_buffers": "32MB",
            "unix_socket_directories": d("run/postgresql"),
            // The Spilo image's extensions (bg_mon, pg_auth_mon, timescaledb, …) are not in Debian's package.
            "shared_preload_libraries": "pg_stat_statements"
        }}
    });
    if let Some(patch) = &spec.spilo_configuration {
        merge_json(&mut spilo_configuration, patch);
    }
    let mut env: BTreeMap<String, String> = [
        ("SCOPE", spec.scope.clone()),
        ("PGVERSION", "15".into()),
        ("HOSTNAME", name.into()),
        ("PGHOME", d("home")),
        ("PGROOT", d("pgroot")),
        ("PGDATA", d("pgroot/data")),
        ("PGLOG", d("pgroot/pg_log")),
        ("RW_DIR", d("run")),
        ("WALE_ENV_DIR", d("run/etc/wal-e.d/env")),
        ("LOG_ENV_DIR", d("run/etc/log.d/env")),
        ("PGPORT", pg_port.to_string()),
        ("APIPORT", api_port.to_string()),
        ("PG_CONNECT_ADDRESS", format!("127.0.0.1:{pg_port}")),
        ("RESTAPI_CONNECT_ADDRESS", format!("127.0.0.1:{api_port}")),
        ("ETCD3_HOST", etcd_host.into()),
        ("PGUSER_SUPERUSER", "postgres".into()),
        ("PGPASSWORD_SUPERUSER", superuser_pw.into()),
        ("PGUSER_STANDBY", "standby".into()),
        ("PGPASSWORD_STANDBY", standby_pw.into()),
        ("SPILO_PROVIDER", "local".into()),
        ("LC_ALL", "C.UTF-8".into()),
        ("INITDB_LOCALE", "C".into()),
        ("DEMO", "false".into()),
        ("USE_OLD_LOCALES", "false".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("PGHERD_PATRONI", spec.patroni.display().to_string()),
        ("SPILO_CONFIGURATION", spilo_configuration.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(spec.extra_env.clone());
    env
}

/// Objects are merged key by key; anything else replaces.
fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge_json(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Switches to a new WAL segment and waits until the archiver has stored it, so everything written before
/// is in the archive.
pub async fn archive_now(c: &tokio_postgres::Client) -> anyhow::Result<()> {
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .get(0);
    wait::until(
        Duration::from_secs(60),
        "the switched WAL segment to be archived",
        || async {
            let row = c
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver",
                    &[],
                )
                .await?;
            let last: String = row.get(0);
            Ok((last.as_str() >= seg.as_str()).then_some(()))
        },
    )
    .await
}
