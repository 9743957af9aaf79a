//! What the rolling-update tests (`tests/tests/rolling_update.rs`, `rolling_cases.rs`) and the
//! rolling-update benchmark (`bin/pgherd-bench-rolling.rs`) share: a 3-member cluster from Zalando's
//! minimal manifest on the stand-in, a client writing through the master Endpoints, and a watch of the
//! pods that keeps every change it saw, so an order (replicas first, the primary demoted while alive)
//! can be checked afterwards and shown when it is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kube::store::Store;
use crate::system::{is_ready, label, name, pod_ip, psql, System};
use crate::{tools, wait};
use pgherd_shared::pgtls::require as require_tls;
use tokio_postgres_rustls::MakeRustlsConnect;

pub const CLUSTER: &str = "acid-minimal-cluster";
pub const SELECTOR: &str = "cluster-name=acid-minimal-cluster";
pub const BOOT: Duration = Duration::from_secs(300);
pub const ROLL: Duration = Duration::from_secs(600);

/// Zalando's minimal manifest with `instances` members, as JSON, with `spec` merged into its spec.
pub fn manifest(instances: usize, spec: &Value) -> String {
    let yaml = std::fs::read_to_string(
        tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )
    .expect("the minimal manifest");
    let mut m: Value = serde_yaml_ng::from_str(&yaml).expect("the minimal manifest parses");
    m["spec"]["numberOfInstances"] = instances.into();
    merge_patch(&mut m["spec"], spec);
    m.to_string()
}

/// JSON merge patch (RFC 7386), as `kubectl patch --type merge` applies it: nested mappings merge,
/// `null` removes.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// pgherd installed from its chart (`set` on top of the test values), a running 3-member cluster with
/// `spec` merge-patched into the minimal manifest; the system and the master's pod.
pub async fn three_members(
    prefix: &str,
    set: &[&str],
    spec: &Value,
) -> anyhow::Result<(System, Value)> {
    let sys = System::start(prefix, None).await?;
    sys.install_pgherd(set).await?;
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&manifest(3, spec)),
    )?;
    let (master, _) = sys.wait_members("default", CLUSTER, 3, BOOT).await?;
    Ok((sys, master))
}

/// `kubectl patch postgresql --type merge` of the cluster's spec.
pub fn patch_spec(sys: &System, spec: &Value) -> anyhow::Result<()> {
    let body = serde_json::json!({ "spec": spec }).to_string();
    sys.kubectl_ok(
        &[
            "patch",
            "postgresql",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            &body,
        ],
        None,
    )?;
    Ok(())
}

/// The IP the master Service's Endpoints point at, as a client behind kube-proxy would reach.
pub fn master_endpoint(sys: &System) -> Option<String> {
    master_endpoint_in(sys.api.store())
}

fn master_endpoint_in(store: &Store) -> Option<String> {
    let rt = store.kind("v1", "Endpoints")?;
    let ep = store.get(&rt, "default", CLUSTER).ok()?;
    ep["subsets"][0]["addresses"][0]["ip"]
        .as_str()
        .map(String::from)
}

/// What a writer saw: the numbers of the acknowledged inserts, and how it went.
#[derive(Clone, Debug, Default)]
pub struct WriteStats {
    pub acked: Vec<u64>,
    pub attempts: u64,
    pub failed: u64,
    pub longest_gap: Duration,
}

/// One persistent client inserting numbered rows every `period` through the master Endpoints. On any
/// error (the connection closed by a demotion, a read-only standby, a timeout) it drops the connection
/// and connects to whatever the Endpoints say on the next attempt, as an application behind the
/// master Service does; a connection per write would measure connection set-up instead of the gap.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WriteStats>,
}

/// Longer than any commit takes here, shorter than a gap worth measuring.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);

impl Writer {
    /// Creates `table` on the current master and starts writing into it.
    pub async fn start(
        sys: &System,
        password: &str,
        table: &str,
        period: Duration,
    ) -> anyhow::Result<Writer> {
        let ip = master_endpoint(sys).ok_or_else(|| anyhow::anyhow!("no master Endpoints"))?;
        psql(
            &ip,
            password,
            &format!("CREATE TABLE {table}(n bigint PRIMARY KEY)"),
        )?;
        let store = sys.api.store().clone();
        let (password, table) = (password.to_string(), table.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let tls = require_tls();
        let task = tokio::spawn(async move {
            let mut stats = WriteStats::default();
            let mut client: Option<tokio_postgres::Client> = None;
            let mut last_ok = Instant::now();
            let mut next = tokio::time::Instant::now();
            while !s.load(Ordering::SeqCst) {
                stats.attempts += 1;
                let n = stats.attempts;
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = match master_endpoint_in(&store) {
                        Some(ip) => connect(&ip, &password, tls.clone()).await.ok(),
                        None => None,
                    };
                }
                let sql = format!("INSERT INTO {table} VALUES ({n})");
                let ok = match &client {
                    Some(c) => matches!(
                        tokio::time::timeout(STATEMENT_TIMEOUT, c.execute(sql.as_str(), &[])).await,
                        Ok(Ok(1))
                    ),
                    None => false,
                };
                if ok {
                    stats.acked.push(n);
                    stats.longest_gap = stats.longest_gap.max(last_ok.elapsed());
                    last_ok = Instant::now();
                } else {
                    stats.failed += 1;
                    client = None;
                }
                next += period;
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now;
                }
                tokio::time::sleep_until(next).await;
            }
            stats.longest_gap = stats.longest_gap.max(last_ok.elapsed());
            stats
        });
        Ok(Writer { stop, task })
    }

    pub async fn finish(self) -> WriteStats {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer task")
    }
}

async fn connect(
    ip: &str,
    password: &str,
    tls: MakeRustlsConnect,
) -> anyhow::Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(ip)
        .port(5432)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = tokio::time::timeout(STATEMENT_TIMEOUT, cfg.connect(tls)).await??;
    tokio::spawn(conn);
    Ok(client)
}

/// Acknowledged numbers that are not in `table` on the current master.
pub fn lost_writes(
    sys: &System,
    password: &str,
    table: &str,
    acked: &[u64],
) -> anyhow::Result<Vec<u64>> {
    let ip = master_endpoint(sys).ok_or_else(|| anyhow::anyhow!("no master Endpoints"))?;
    let rows = psql(&ip, password, &format!("SELECT n FROM {table}"))?;
    let present: BTreeSet<u64> = rows.lines().filter_map(|l| l.parse().ok()).collect();
    Ok(acked
        .iter()
        .filter(|n| !present.contains(n))
        .copied()
        .collect())
}

/// A database pod as the watch keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub uid: String,
    pub role: String,
    pub ready: bool,
    pub terminating: bool,
    /// The postgres container's image in the pod's spec.
    pub image: String,
}

impl fmt::Display for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}{}",
            self.name,
            &self.uid[..8.min(self.uid.len())],
            if self.role.is_empty() {
                "-"
            } else {
                &self.role
            },
            if self.ready { "ready" } else { "unready" },
            if self.terminating { ":terminating" } else { "" }
        )
    }
}

pub fn pods(sys: &System) -> Vec<Pod> {
    sys.list("v1", "Pod", "default", SELECTOR)
        .iter()
        .map(|p| Pod {
            name: name(p),
            uid: p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            role: label(p, "spilo-role").unwrap_or("").to_string(),
            ready: is_ready(p),
            terminating: p["metadata"]["deletionTimestamp"].is_string(),
            image: postgres_image(&p["spec"]).unwrap_or_default(),
        })
        .collect()
}

/// The image of the `postgres` container in a pod spec or pod template spec.
pub fn postgres_image(spec: &Value) -> Option<String> {
    spec["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "postgres")?["image"]
        .as_str()
        .map(String::from)
}

/// Pod name to uid.
pub fn uids(sys: &System) -> BTreeMap<String, String> {
    pods(sys).into_iter().map(|p| (p.name, p.uid)).collect()
}

pub fn show(pods: &[Pod]) -> String {
    pods.iter()
        .map(Pod::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every snapshot of the pods (and of Patroni's `/cluster`, from the master Endpoints) taken while a
/// rolling update ran, from the uids before it.
pub struct Watch {
    pub before: BTreeMap<String, String>,
    pub seen: Vec<Vec<Pod>>,
    /// `GET /cluster` whenever it changed.
    pub clusters: Vec<Value>,
    http: reqwest::Client,
}

impl Watch {
    pub fn new(sys: &System) -> Watch {
        Watch {
            before: uids(sys),
            seen: Vec::new(),
            clusters: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn last(&self) -> &[Pod] {
        self.seen.last().map(Vec::as_slice).unwrap_or_default()
    }

    /// Pods whose uid differs from the one before, in the last snapshot.
    pub fn replaced(&self) -> Vec<String> {
        self.last()
            .iter()
            .filter(|p| self.before.get(&p.name).is_some_and(|u| *u != p.uid))
            .map(|p| p.name.clone())
            .collect()
    }

    /// `n` pods, all ready, exactly one labelled master.
    pub fn whole(&self, n: usize) -> bool {
        let last = self.last();
        last.len() == n
            && last.iter().all(|p| p.ready && !p.terminating)
            && last.iter().filter(|p| p.role == "master").count() == 1
    }

    /// Takes a snapshot every 500 ms until `done` says so; fails after `timeout` with the last
    /// snapshot, the RollingUpdate condition and the pods' logs.
    pub async fn until(
        &mut self,
        sys: &System,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Watch) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.seen.push(pods(sys));
            if let Some(ip) = master_endpoint(sys) {
                if let Ok(c) = self.cluster(&ip).await {
                    if self.clusters.last() != Some(&c) {
                        self.clusters.push(c);
                    }
                }
            }
            if done(self)? {
                return Ok(());
            }
            if started.elapsed() > timeout {
                self.print();
                anyhow::bail!(
                    "{what}: not within {timeout:?}; last pods {}; condition {:?}{}",
                    show(self.last()),
                    rolling_condition(sys),
                    sys.describe_pods("default")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Until all `n` pods were replaced, the cluster is whole and RollingUpdate is False again.
    pub async fn until_rolled(&mut self, sys: &System, n: usize) -> anyhow::Result<()> {
        self.until_rolled_with(sys, n, |_| Ok(())).await
    }

    /// The same, calling `each` on every snapshot (to act in the middle of the update).
    pub async fn until_rolled_with(
        &mut self,
        sys: &System,
        n: usize,
        mut each: impl FnMut(&Watch) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.until(sys, ROLL, "rolling update", |w| {
            each(w)?;
            Ok(w.replaced().len() == n
                && w.whole(n)
                && rolling_condition(sys).is_some_and(|(s, _, _)| s == "False"))
        })
        .await
    }

    async fn cluster(&self, ip: &str) -> anyhow::Result<Value> {
        let mut c: Value = self
            .http
            .get(format!("http://{ip}:8008/cluster"))
            .send()
            .await?
            .json()
            .await?;
        // Lag and timestamps change all the time; keep who is what.
        for m in c["members"].as_array_mut().into_iter().flatten() {
            if let Some(m) = m.as_object_mut() {
                m.retain(|k, _| matches!(k.as_str(), "name" | "role" | "state" | "timeline"));
            }
        }
        Ok(c)
    }

    /// Prints each distinct snapshot, the `/cluster` views and the events, for a failing test's log.
    pub fn print(&self) {
        let mut shown: Option<&Vec<Pod>> = None;
        for s in &self.seen {
            if shown != Some(s) {
                println!("pods {}", show(s));
                shown = Some(s);
            }
        }
        for c in &self.clusters {
            println!("cluster {}", c["members"]);
        }
    }

    /// Every uid each pod name had over the watch, the one before included.
    pub fn uids_by_name(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut uids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (n, u) in &self.before {
            uids.entry(n.clone()).or_default().insert(u.clone());
        }
        for p in self.seen.iter().flatten() {
            uids.entry(p.name.clone())
                .or_default()
                .insert(p.uid.clone());
        }
        uids
    }

    pub fn assert_each_replaced_once(&self) {
        for (n, set) in self.uids_by_name() {
            assert_eq!(
                set.len(),
                2,
                "{n} had uids {set:?}, not two (replaced once)"
            );
        }
    }

    /// Index of the first snapshot in which `pod` has a new uid.
    pub fn first_new(&self, pod: &str) -> Option<usize> {
        self.seen.iter().position(|s| {
            s.iter()
                .any(|p| p.name == pod && self.before.get(pod) != Some(&p.uid))
        })
    }

    /// The pod `old_master` had before, seen ready, not terminating and not labelled master while
    /// another pod is: Patroni demoted it while it was alive, a switchover. A deleted primary is never
    /// seen demoted. Patroni drops the role label while Postgres restarts as a replica, so `replica`
    /// itself may not be seen before the delete.
    pub fn demoted_alive(&self, old_master: &str) -> bool {
        let old_uid = &self.before[old_master];
        self.seen.iter().any(|s| {
            let demoted = s.iter().any(|p| {
                p.name == old_master
                    && p.uid == *old_uid
                    && p.role != "master"
                    && p.ready
                    && !p.terminating
            });
            demoted && s.iter().any(|p| p.name != old_master && p.role == "master")
        })
    }

    /// A switchover, not a failover, and the old primary's pod replaced after every replica.
    pub fn assert_switchover_then_primary_last(&self, old_master: &str) {
        assert!(
            self.demoted_alive(old_master),
            "{old_master} was never seen demoted before its replacement: a failover, not a switchover"
        );
        let last_replica = self
            .before
            .keys()
            .filter(|n| *n != old_master)
            .map(|n| self.first_new(n).expect("every replica replaced"))
            .max()
            .expect("replicas");
        let primary = self.first_new(old_master).expect("the primary replaced");
        assert!(
            primary > last_replica,
            "the primary {old_master} was replaced at snapshot {primary}, before a replica (at {last_replica})"
        );
    }
}

/// Events of the namespace as "reason note".
pub fn events(sys: &System) -> Vec<String> {
    sys.list("events.k8s.io/v1", "Event", "default", "")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The cluster's `RollingUpdate` condition: status, reason, message.
pub fn rolling_condition(sys: &System) -> Option<(String, String, String)> {
    let pg = sys.get("acid.zalan.do/v1", "postgresql", "default", CLUSTER)?;
    let c = pg["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "RollingUpdate")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Some((s("status"), s("reason"), s("message")))
}

/// Until `RollingUpdate` is `False` (nothing due).
pub async fn wait_up_to_date(sys: &System, timeout: Duration) -> anyhow::Result<()> {
    wait::until(timeout, "RollingUpdate False", || async {
        Ok(rolling_condition(sys)
            .filter(|(s, _, _)| s == "False")
            .map(|_| ()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}; condition {:?}", rolling_condition(sys)))
}

/// `GET http://ip:8008/path` of a member's Patroni.
pub async fn patroni_get(ip: &str, path: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("http://{ip}:8008/{path}"))
        .await?
        .json()
        .await?)
}

/// Patroni's `/history`: one entry per timeline switch (timeline, LSN, reason, time, new leader).
pub async fn patroni_history(ip: &str) -> anyhow::Result<Vec<Value>> {
    Ok(patroni_get(ip, "history")
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// `SHOW name` on every pod, by pod name.
pub fn show_everywhere(sys: &System, password: &str, setting: &str) -> BTreeMap<String, String> {
    sys.list("v1", "Pod", "default", SELECTOR)
        .iter()
        .map(|p| {
            let v = psql(&pod_ip(p), password, &format!("SHOW {setting}")).unwrap_or_default();
            (name(p), v)
        })
        .collect()
}

/// `pg_postmaster_start_time()` of every pod as seconds since the epoch, by pod name (`NaN` when it
/// did not answer, so it equals nothing).
pub fn start_times(sys: &System, password: &str) -> BTreeMap<String, f64> {
    sys.list("v1", "Pod", "default", SELECTOR)
        .iter()
        .map(|p| {
            let v = psql(
                &pod_ip(p),
                password,
                "SELECT extract(epoch FROM pg_postmaster_start_time())",
            )
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
            (name(p), v)
        })
        .collect()
}

/// Merges `parameters` (a JSON object) into the manifest's `postgresql.parameters`.
pub fn patch_parameters(sys: &System, parameters: &Value) -> anyhow::Result<()> {
    patch_spec(
        sys,
        &serde_json::json!({ "postgresql": { "parameters": parameters } }),
    )
}
