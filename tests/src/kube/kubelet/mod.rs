//! The pod runner: a kubelet stand-in that runs the Pods of the [`Store`] as podman pods on one network,
//! so pgherd's images, Patroni and kubectl meet real pods (docs/kube-standin.md, "Pod runner", lists what
//! it simplifies). One node; each Pod gets an address of the network chosen before its containers start,
//! its volumes as host directories, a service-account token the API server accepts, and a status written
//! through `/status` whenever it changes.
//!
//! The loop here watches Pods, binds unscheduled ones to the node and hands each Pod to its own worker
//! (worker.rs), as the kubelet's pod workers do, so a slow stop never holds up another pod; one poller
//! asks podman about every container once per tick. Decisions are pure functions in env.rs, volumes.rs,
//! runtime.rs (argument building), status.rs and probes.rs.

mod env;
mod probes;
mod runtime;
mod status;
mod volumes;
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::select::Selectors;
use super::store::{DeleteOptions, Store, WriteOptions};
use super::watch::{EventType, WatchEvent};
use super::{ApiServer, ServerHandle};

pub use runtime::LABEL;

/// How to start a [`Kubelet`]; [`KubeletOptions::new`] fills it from an API server and a network.
#[derive(Clone)]
pub struct KubeletOptions {
    /// The Node's name (`spec.nodeName` of the pods it runs).
    pub node_name: String,
    /// The podman network the pods join, its subnet (a /24) and gateway (the Node's address).
    pub network: String,
    pub subnet: String,
    pub gateway: IpAddr,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT`), and its CA for `ca.crt`.
    pub api_host: IpAddr,
    pub api_port: u16,
    pub ca_pem: String,
    /// Registers the pods' service-account tokens.
    pub server: ServerHandle,
    /// Host directories of PVCs (`pvc/<ns>/<claim>`, kept) and pods (`pods/<uid>`, removed with the pod);
    /// a temporary directory, removed on drop, when `None`.
    pub state_dir: Option<PathBuf>,
    /// The image of the pods' infra containers (it runs `sleep infinity`).
    pub infra_image: String,
    /// How often podman is asked about the containers.
    pub tick: Duration,
    /// The cap of the restart and image back-offs (upstream: 5 minutes).
    pub max_backoff: Duration,
}

impl KubeletOptions {
    /// Options for pods on `network` talking to `api`, which must listen on the network's gateway.
    pub fn new(api: &ApiServer, network: &crate::podman::Network) -> anyhow::Result<Self> {
        let gateway: IpAddr = network.gateway.parse().context("the network's gateway")?;
        Ok(KubeletOptions {
            node_name: "standin-node".into(),
            network: network.name.clone(),
            subnet: network.subnet.clone(),
            gateway,
            api_host: gateway,
            api_port: api.addr().port(),
            ca_pem: api.ca_pem().to_string(),
            server: api.handle(),
            state_dir: None,
            infra_image: crate::podman::BASE_IMAGE.into(),
            tick: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        })
    }
}

/// What podman said at one tick.
pub(crate) struct Snapshot {
    pub taken: Instant,
    pub ps: BTreeMap<String, runtime::PsEntry>,
}

/// Addresses of the network's /24 handed to pods: never the gateway or an address in use when the
/// kubelet started (the network's holder container), and round-robin, so a freed address is not reused
/// at once.
pub(crate) struct IpPool {
    prefix: String,
    taken: HashSet<u8>,
    next: u8,
}

impl IpPool {
    fn new(gateway: &str, reserved: &[String]) -> Self {
        let (prefix, gw) = gateway.rsplit_once('.').unwrap_or(("10.89.0", "1"));
        let mut taken: HashSet<u8> = reserved
            .iter()
            .filter_map(|ip| ip.strip_prefix(&format!("{prefix}.")))
            .filter_map(|h| h.parse().ok())
            .collect();
        taken.insert(gw.parse().unwrap_or(1));
        IpPool {
            prefix: prefix.into(),
            taken,
            next: 2,
        }
    }

    pub fn alloc(&mut self) -> Option<String> {
        for _ in 0..253 {
            let h = self.next;
            self.next = if self.next >= 254 { 2 } else { self.next + 1 };
            if self.taken.insert(h) {
                return Some(format!("{}.{h}", self.prefix));
            }
        }
        None
    }

    pub fn free(&mut self, ip: &str) {
        if let Some(h) = ip.rsplit_once('.').and_then(|(_, h)| h.parse().ok()) {
            self.taken.remove(&h);
        }
    }
}

/// What the loop, the poller and the pod workers share.
pub(crate) struct Ctx {
    pub store: Arc<Store>,
    pub opts: KubeletOptions,
    pub id: String,
    pub state: PathBuf,
    pub ips: Mutex<IpPool>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub node_cpu: f64,
    pub node_memory: f64,
    /// Tokens handed out, removed on drop.
    pub tokens: Mutex<HashSet<String>>,
    pub workers: Mutex<Vec<AbortHandle>>,
    /// (namespace, pod) → container → podman container name, for `pods/log`.
    pub containers: Mutex<HashMap<(String, String), HashMap<String, String>>>,
    /// Log tails of the last containers of deleted pods: the old primary's shutdown is what a failed
    /// failover test needs to show, and its container is gone once the pod is.
    pub terminated: Mutex<VecDeque<String>>,
}

impl Ctx {
    pub fn rt(&self, plural: &str) -> Arc<super::resources::ResourceType> {
        self.store
            .resource("", "v1", plural)
            .expect("built-in resource")
    }

    pub fn writer(&self) -> WriteOptions {
        WriteOptions {
            manager: "kubelet".into(),
            ..Default::default()
        }
    }
}

/// A running pod runner; stops, and removes every podman pod it created, when dropped.
pub struct Kubelet {
    ctx: Arc<Ctx>,
    tasks: Vec<AbortHandle>,
    _tmp: Option<tempfile::TempDir>,
}

fn node_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|k| k * 1024.0)
        .unwrap_or(4e9)
}

/// Addresses on `network` in use now (the holder container's), so pods never get them.
fn addresses_in_use(network: &str) -> Vec<String> {
    let Ok(ids) =
        crate::podman::run(&["ps", "-a", "-q", "--filter", &format!("network={network}")])
    else {
        return vec![];
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return vec![];
    }
    let mut args = vec!["inspect", "--format", "json"];
    args.extend(ids);
    let out = crate::podman::run(&args).unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.pointer(&format!("/NetworkSettings/Networks/{network}/IPAddress"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}

/// Removes the podman pods of pod runners whose process is gone (a killed test or demo).
pub fn remove_leftovers() {
    runtime::remove_pods_now(&runtime::leftover_pods(None));
}

impl Kubelet {
    pub async fn start(store: Arc<Store>, opts: KubeletOptions) -> anyhow::Result<Kubelet> {
        tokio::task::spawn_blocking(remove_leftovers).await?;
        crate::podman::require_image(&opts.infra_image)?;
        let (state, tmp) = match &opts.state_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("pgherd-kubelet-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(state.join("pods"))?;
        let network = opts.network.clone();
        let reserved = tokio::task::spawn_blocking(move || addresses_in_use(&network)).await?;
        store.set_graceful_pod_deletion(true);
        let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot {
            taken: Instant::now(),
            ps: BTreeMap::new(),
        }));
        let ctx = Arc::new(Ctx {
            ips: Mutex::new(IpPool::new(&opts.gateway.to_string(), &reserved)),
            id: super::random_hex(8),
            store,
            state,
            snapshot: snap_rx,
            node_cpu: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            node_memory: node_memory(),
            tokens: Mutex::new(HashSet::new()),
            workers: Mutex::new(Vec::new()),
            containers: Mutex::new(HashMap::new()),
            terminated: Mutex::new(VecDeque::new()),
            opts,
        });
        register_node(&ctx)?;
        ctx.opts.server.set_pod_logs(Some(Arc::new(LogSource {
            ctx: Arc::downgrade(&ctx),
        })));
        let poller = tokio::spawn(poll(ctx.clone(), snap_tx)).abort_handle();
        let main = tokio::spawn(run(ctx.clone())).abort_handle();
        Ok(Kubelet {
            ctx,
            tasks: vec![poller, main],
            _tmp: tmp,
        })
    }

    pub fn node_name(&self) -> &str {
        &self.ctx.opts.node_name
    }

    /// Where PVC and pod directories are.
    pub fn state_dir(&self) -> &Path {
        &self.ctx.state
    }

    /// The podman container of a pod's container, while the pod runs here.
    pub fn container_of(&self, ns: &str, pod: &str, container: &str) -> Option<String> {
        self.ctx
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_string(), pod.to_string()))
            .and_then(|m| m.get(container).cloned())
    }

    /// Log tails of the containers of the most recently deleted pods, oldest first.
    pub fn terminated_logs(&self) -> Vec<String> {
        let t = self
            .ctx
            .terminated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect()
    }

    /// Stops and removes everything, like dropping it, without blocking the runtime.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        let ids = self.ctx.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            runtime::remove_pods_now(&runtime::leftover_pods(Some(&ids)))
        })
        .await;
        self.forget();
    }

    fn stop_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for w in self
            .ctx
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            w.abort();
        }
    }

    fn forget(&self) {
        self.ctx.opts.server.set_pod_logs(None);
        for t in self
            .ctx
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            self.ctx.opts.server.remove_token(&t);
        }
        let _ = std::fs::remove_dir_all(self.ctx.state.join("pods"));
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if self.tasks.is_empty() {
            return;
        }
        self.stop_tasks();
        // A worker aborted inside `podman pod create` may finish creating it a moment later.
        for _ in 0..2 {
            runtime::remove_pods_now(&runtime::leftover_pods(Some(&self.ctx.id)));
            std::thread::sleep(Duration::from_millis(200));
        }
        self.forget();
    }
}

/// `kubectl logs`: `podman logs` of the pod's container. A restarted container is the same podman
/// container started again, so its log holds every run and `previous` gives the same text.
struct LogSource {
    ctx: std::sync::Weak<Ctx>,
}

impl super::rest::PodLogs for LogSource {
    fn logs(
        &self,
        ns: String,
        pod: String,
        q: super::rest::LogQuery,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, super::Error>> + Send>>
    {
        let ctx = self.ctx.upgrade();
        Box::pin(async move {
            let gone = || super::Error::new(404, "NotFound", "the pod runner has stopped");
            let ctx = ctx.ok_or_else(gone)?;
            let obj = ctx.store.get(&ctx.rt("pods"), &ns, &pod)?;
            let names: Vec<String> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect();
            let container = match (q.container, names.as_slice()) {
                (Some(c), _) => c,
                (None, [one]) => one.clone(),
                (None, _) => {
                    return Err(super::Error::bad_request(format!(
                        "a container name must be specified for pod {pod}, choose one of: [{}]",
                        names.join(" ")
                    )))
                }
            };
            let podman = ctx
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(ns.clone(), pod.clone()))
                .and_then(|m| m.get(&container).cloned());
            let Some(podman) = podman else {
                return Err(super::Error::bad_request(format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                )));
            };
            runtime::logs(&podman, q.tail_lines)
                .await
                .map_err(|e| super::Error::new(500, "InternalError", e.to_string()))
        })
    }
}

fn register_node(ctx: &Ctx) -> anyhow::Result<()> {
    let rt = ctx.rt("nodes");
    let name = &ctx.opts.node_name;
    let node = json!({"metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH}},
        "spec": {}});
    let obj = match ctx.store.create(&rt, "", node, &ctx.writer()) {
        Ok(o) => o,
        Err(e) if e.code == 409 => ctx.store.get(&rt, "", name)?,
        Err(e) => return Err(e.into()),
    };
    let now = super::store::now();
    let capacity = json!({"cpu": ctx.node_cpu.to_string(),
        "memory": format!("{}Ki", (ctx.node_memory / 1024.0) as u64), "pods": "250"});
    let mut o = obj;
    o["status"] = json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the pgherd stand-in's kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": ctx.opts.gateway.to_string()},
                      {"type": "Hostname", "address": name}],
        "capacity": capacity, "allocatable": capacity,
        "nodeInfo": {"kubeletVersion": "v1.36.0", "containerRuntimeVersion": "podman://4",
            "operatingSystem": "linux", "architecture": std::env::consts::ARCH}});
    ctx.store
        .update(&rt, "", name, o, true, &ctx.writer())
        .map(drop)
        .map_err(Into::into)
}

/// Asks podman about every container of this kubelet once per tick.
async fn poll(ctx: Arc<Ctx>, tx: watch::Sender<Arc<Snapshot>>) {
    let mut tick = tokio::time::interval(ctx.opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let taken = Instant::now();
        if let Ok(ps) = runtime::ps(&ctx.id).await {
            let _ = tx.send(Arc::new(Snapshot { taken, ps }));
        }
    }
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn uid_of(pod: &Value) -> String {
    pod.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Binds an unscheduled pod to the node (the scheduler's job; there is one node).
fn bind(ctx: &Ctx, pod: &Value) {
    let rt = ctx.rt("pods");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = uid_of(pod);
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        // Never started, so nothing to stop: confirm at once.
        let _ = ctx.store.delete(
            &rt,
            ns,
            name,
            &DeleteOptions {
                grace_period: Some(0),
                uid: Some(uid),
                ..Default::default()
            },
        );
        return;
    }
    let w = WriteOptions {
        manager: "default-scheduler".into(),
        ..Default::default()
    };
    let patch = json!({"spec": {"nodeName": ctx.opts.node_name}});
    if ctx
        .store
        .patch(
            &rt,
            ns,
            name,
            super::store::PatchType::Merge,
            &patch,
            false,
            &w,
        )
        .is_err()
    {
        return;
    }
    let now = super::store::now();
    let status = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "True",
        "lastProbeTime": null, "lastTransitionTime": now}]}});
    let _ = ctx.store.patch(
        &rt,
        ns,
        name,
        super::store::PatchType::Strategic,
        &status,
        true,
        &w,
    );
}

struct WorkerHandle {
    tx: watch::Sender<Option<Value>>,
    task: AbortHandle,
}

/// Watches Pods and keeps one worker per Pod of this node.
async fn run(ctx: Arc<Ctx>) {
    let rt = ctx.rt("pods");
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    // Pods whose worker finished (deleted): stale events never start them again.
    let mut done: HashSet<String> = HashSet::new();
    let mut watcher = ctx
        .store
        .watch(&rt, None, Selectors::default(), None, false, None);
    let mut reap = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            ev = watcher.next() => match ev {
                Some(WatchEvent::Object(t, pod)) => dispatch(&ctx, &mut workers, &mut done, t, pod),
                Some(WatchEvent::Bookmark { .. }) => {}
                _ => {
                    // History overrun: start again from a fresh list, and stop workers of vanished pods.
                    watcher = ctx.store.watch(&rt, None, Selectors::default(), None, false, None);
                    let (items, _, _) = ctx.store.list(&rt, None, &Selectors::default(), None, None);
                    let live: HashSet<String> = items.iter().map(uid_of).collect();
                    for (uid, w) in &workers {
                        if !live.contains(uid) {
                            let _ = w.tx.send(None);
                        }
                    }
                }
            },
            _ = reap.tick() => {
                workers.retain(|uid, w| {
                    if w.task.is_finished() {
                        done.insert(uid.clone());
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
}

fn dispatch(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, WorkerHandle>,
    done: &mut HashSet<String>,
    t: EventType,
    pod: Value,
) {
    let uid = uid_of(&pod);
    if t == EventType::Deleted {
        if let Some(w) = workers.remove(&uid) {
            let _ = w.tx.send(None);
            done.insert(uid);
        }
        return;
    }
    let node = node_of(&pod);
    if node.is_empty() {
        bind(ctx, &pod);
        return;
    }
    if node != ctx.opts.node_name || done.contains(&uid) {
        return;
    }
    if let Some(w) = workers.get(&uid) {
        if !w.task.is_finished() {
            let _ = w.tx.send(Some(pod));
        }
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    let task = tokio::spawn(worker::run(ctx.clone(), rx)).abort_handle();
    ctx.workers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(task.clone());
    workers.insert(uid, WorkerHandle { tx, task });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pool_skips_gateway_and_reserved_and_rotates() {
        let mut p = IpPool::new("10.89.3.1", &["10.89.3.2".into()]);
        assert_eq!(p.alloc().as_deref(), Some("10.89.3.3"));
        assert_eq!(p.alloc().as_deref(), Some("10.89.3.4"));
        p.free("10.89.3.3");
        assert_eq!(p.alloc().as_deref(), Some("10.89.3.5"));
        for _ in 0..249 {
            assert!(p.alloc().is_some());
        }
        assert_eq!(p.alloc().as_deref(), Some("10.89.3.3"));
        assert_eq!(p.alloc(), None);
    }
}
