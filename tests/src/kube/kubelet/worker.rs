//! One Pod's worker, as the kubelet's pod workers: it prepares the pod (ServiceAccount and token, address,
//! volumes, the podman pod), runs the init containers in order and then the containers, restarts them by
//! `restartPolicy` with a capped back-off, probes them, writes the status when it changes, and on
//! deletion runs preStop hooks, stops the containers within the grace period, removes everything and
//! confirms the deletion with a zero grace period.
//!
//! It acts only on podman snapshots taken after its own last action on a container, so a container it
//! just started is never mistaken for the exited run before it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::env::{self, Lookup, PodFacts};
use super::probes::{self, Counter};
use super::runtime;
use super::status::{self, CState, Term};
use super::volumes::{self, Volume};
use super::{Ctx, Snapshot};
use crate::kube::store::DeleteOptions;

struct StoreLookup<'a> {
    ctx: &'a Ctx,
    ns: &'a str,
}

impl Lookup for StoreLookup<'_> {
    fn secret(&self, name: &str) -> Option<Value> {
        self.ctx
            .store
            .get(&self.ctx.rt("secrets"), self.ns, name)
            .ok()
    }
    fn config_map(&self, name: &str) -> Option<Value> {
        self.ctx
            .store
            .get(&self.ctx.rt("configmaps"), self.ns, name)
            .ok()
    }
    fn pvc(&self, name: &str) -> Option<Value> {
        self.ctx
            .store
            .get(&self.ctx.rt("persistentvolumeclaims"), self.ns, name)
            .ok()
    }
}

fn waiting(reason: &str, message: impl Into<String>) -> CState {
    CState::Waiting {
        reason: reason.into(),
        message: message.into(),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// One container's runtime record.
struct Slot {
    name: String,
    podman: String,
    id: Option<String>,
    created: bool,
    restarts: u32,
    /// The run (by restart count) whose exit was already handled.
    handled: Option<u32>,
    last: Option<Term>,
    state: CState,
    image_id: String,
    backoff: Duration,
    retry_at: Option<Instant>,
    image_failures: u32,
    acted_at: Instant,
    run_started: Instant,
    readiness: Counter,
    liveness: Counter,
    startup: Counter,
    ready: bool,
    started: bool,
    /// An init container that completed.
    done: bool,
}

impl Slot {
    fn new(podman_pod: &str, name: &str) -> Self {
        let now = Instant::now();
        Slot {
            name: name.into(),
            podman: format!("{podman_pod}-{name}"),
            id: None,
            created: false,
            restarts: 0,
            handled: None,
            last: None,
            state: waiting("ContainerCreating", ""),
            image_id: String::new(),
            backoff: Duration::ZERO,
            retry_at: None,
            image_failures: 0,
            acted_at: now,
            run_started: now,
            readiness: Counter::default(),
            liveness: Counter::default(),
            startup: Counter::default(),
            ready: false,
            started: false,
            done: false,
        }
    }

    /// 1 s, then doubling up to `max`.
    fn next_backoff(&mut self, max: Duration) -> Duration {
        self.backoff = if self.backoff.is_zero() {
            Duration::from_secs(1)
        } else {
            (self.backoff * 2).min(max)
        };
        self.backoff
    }

    fn began_run(&mut self) {
        let now = Instant::now();
        self.acted_at = now;
        self.run_started = now;
        self.readiness = Counter::default();
        self.liveness = Counter::default();
        self.startup = Counter::default();
        self.ready = false;
        self.started = false;
        self.retry_at = None;
        self.state = CState::Running {
            started_at: crate::kube::store::now(),
        };
    }

    fn view(&self, c: &Value) -> status::Ctr {
        status::Ctr {
            name: self.name.clone(),
            image: s(c, "image").into(),
            image_id: self.image_id.clone(),
            container_id: self.id.as_ref().map(|i| format!("podman://{i}")),
            state: self.state.clone(),
            last: self.last.clone(),
            restarts: self.restarts,
            ready: self.ready,
            started: self.started,
        }
    }
}

/// What the containers need from the pod, set up before any of them starts.
struct Info {
    ctx: Arc<Ctx>,
    uid: String,
    ns: String,
    name: String,
    podman_pod: String,
    ip: Option<String>,
    token: Option<String>,
    volumes: Option<Vec<Volume>>,
    sandbox: bool,
    start_time: Option<String>,
}

struct Worker {
    info: Info,
    init: Vec<Slot>,
    ctrs: Vec<Slot>,
    initialized: bool,
}

fn containers<'a>(pod: &'a Value, field: &str) -> Vec<&'a Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn grace_of(pod: &Value) -> u64 {
    pod.pointer("/metadata/deletionGracePeriodSeconds")
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(30)
        .max(0) as u64
}

/// The pod without what changes on every status write.
fn spec_key(pod: &Value) -> Value {
    let mut k = pod.clone();
    if let Some(o) = k.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = k.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    k
}

pub(super) async fn run(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Value>>) {
    let Some(first) = rx.borrow().clone() else {
        return;
    };
    let podman_pod = runtime::pod_name(&first);
    let slots = |f| {
        containers(&first, f)
            .iter()
            .map(|c| Slot::new(&podman_pod, s(c, "name")))
            .collect()
    };
    let mut w = Worker {
        init: slots("initContainers"),
        ctrs: slots("containers"),
        initialized: false,
        info: Info {
            ctx: ctx.clone(),
            uid: s(&first["metadata"], "uid").into(),
            ns: s(&first["metadata"], "namespace").into(),
            name: s(&first["metadata"], "name").into(),
            podman_pod,
            ip: None,
            token: None,
            volumes: None,
            sandbox: false,
            start_time: None,
        },
    };
    let mut snap = ctx.snapshot.clone();
    let mut last = first;
    loop {
        let cur = rx.borrow_and_update().clone();
        match cur {
            None => {
                w.terminate(&last, grace_of(&last)).await;
                w.release();
                return;
            }
            Some(pod) if pod.pointer("/metadata/deletionTimestamp").is_some() => {
                w.terminate(&pod, grace_of(&pod)).await;
                w.release();
                w.confirm();
                return;
            }
            Some(pod) => {
                w.sync(&pod).await;
                last = pod;
            }
        }
        let synced = spec_key(&last);
        loop {
            tokio::select! {
                r = rx.changed() => {
                    // The loop dropped the sender: the kubelet is stopping (unless it said the pod is gone).
                    if r.is_err() && rx.borrow().is_some() {
                        return;
                    }
                    // The worker's own status writes come back as updates: they wait for the tick, so a
                    // state such as ErrImagePull stays visible for one.
                    if rx.borrow().as_ref().map(spec_key) == Some(synced.clone()) {
                        continue;
                    }
                }
                _ = snap.changed() => {}
                _ = tokio::time::sleep(ctx.opts.tick) => {}
            }
            break;
        }
    }
}

impl Worker {
    async fn sync(&mut self, pod: &Value) {
        let snap = self.info.ctx.snapshot.borrow().clone();
        let policy = match s(&pod["spec"], "restartPolicy") {
            "" => "Always",
            p => p,
        }
        .to_string();
        match self.info.prepare(pod).await {
            Err((reason, msg)) => {
                for sl in self.init.iter_mut().chain(self.ctrs.iter_mut()) {
                    if !sl.created {
                        sl.state = waiting(&reason, msg.clone());
                    }
                }
            }
            Ok(()) => {
                let init_specs = containers(pod, "initContainers");
                let init_policy = if policy == "Never" {
                    "Never"
                } else {
                    "OnFailure"
                };
                self.initialized = true;
                for (sl, c) in self.init.iter_mut().zip(init_specs) {
                    if sl.done {
                        continue;
                    }
                    ensure(&self.info, pod, c, sl, init_policy, &snap).await;
                    if matches!(&sl.state, CState::Terminated(t) if t.exit_code == 0) {
                        sl.done = true;
                        continue;
                    }
                    self.initialized = false;
                    break;
                }
                if self.initialized {
                    for (sl, c) in self.ctrs.iter_mut().zip(containers(pod, "containers")) {
                        ensure(&self.info, pod, c, sl, &policy, &snap).await;
                        probe(&self.info, pod, c, sl).await;
                    }
                }
            }
        }
        self.write_status(pod, &policy);
    }

    fn write_status(&self, pod: &Value, policy: &str) {
        let ctx = &self.info.ctx;
        let rt = ctx.rt("pods");
        let Ok(mut fresh) = ctx.store.get(&rt, &self.info.ns, &self.info.name) else {
            return;
        };
        if s(&fresh["metadata"], "uid") != self.info.uid {
            return;
        }
        let now = crate::kube::store::now();
        let gateway = ctx.opts.gateway.to_string();
        let view = |slots: &[Slot], field| {
            slots
                .iter()
                .zip(containers(pod, field))
                .map(|(sl, c)| sl.view(c))
                .collect()
        };
        let input = status::Input {
            pod_ip: self.info.ip.as_deref().filter(|_| self.info.sandbox),
            host_ip: &gateway,
            start_time: self.info.start_time.as_deref(),
            restart_policy: policy,
            init: view(&self.init, "initContainers"),
            initialized: self.initialized,
            ctrs: view(&self.ctrs, "containers"),
            now: &now,
        };
        let old = fresh.get("status").cloned().unwrap_or(json!({}));
        let new = status::pod_status(&old, &input);
        if new != old {
            fresh["status"] = new;
            let _ = ctx.store.update(
                &rt,
                &self.info.ns,
                &self.info.name,
                fresh,
                true,
                &ctx.writer(),
            );
        }
    }

    /// preStop hooks, then SIGTERM and SIGKILL after what is left of the grace period, then removal.
    async fn terminate(&mut self, pod: &Value, grace: u64) {
        let deadline = Instant::now() + Duration::from_secs(grace);
        let ip = self.info.ip.clone().unwrap_or_default();
        for (sl, c) in self.ctrs.iter().zip(containers(pod, "containers")) {
            let Some(hook) = c.pointer("/lifecycle/preStop") else {
                continue;
            };
            if !matches!(sl.state, CState::Running { .. }) {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(secs) = hook.pointer("/sleep/seconds").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_secs(secs).min(left)).await;
                continue;
            }
            let mut h = hook.clone();
            h["timeoutSeconds"] = json!(left.as_secs().max(1));
            let _ = tokio::time::timeout(left, probes::run(&h, c, &ip, &sl.podman)).await;
        }
        // Rounded up: podman takes whole seconds, and truncating 2.99 s to 2 would cut the grace short.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .div_ceil(1000)
            .to_string();
        let mut args: Vec<String> = vec!["stop".into(), "-t".into(), left];
        args.extend(
            self.init
                .iter()
                .chain(self.ctrs.iter())
                .filter(|sl| sl.created)
                .map(|sl| sl.podman.clone()),
        );
        if args.len() > 3 {
            let _ = runtime::podman(&args, &[]).await;
        }
        self.keep_logs().await;
        let _ = runtime::run(&["pod", "rm", "-f", "-t", "0", &self.info.podman_pod]).await;
    }

    /// Keeps the log tails of the stopped containers (the last [`KEPT_LOGS`] of them), so a test that fails
    /// after a pod's deletion can still show how that pod shut down.
    async fn keep_logs(&self) {
        for sl in self.ctrs.iter().filter(|sl| sl.created) {
            let log = runtime::logs(&sl.podman, Some(KEPT_LOG_LINES))
                .await
                .unwrap_or_else(|e| format!("(no logs: {e:#})"));
            let entry = format!(
                "--- deleted pod {}/{} (uid {}) [{}]\n{log}",
                self.info.ns, self.info.name, self.info.uid, sl.name
            );
            let mut kept = self
                .info
                .ctx
                .terminated
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if kept.len() == KEPT_LOGS {
                kept.pop_front();
            }
            kept.push_back(entry);
        }
    }

    fn release(&mut self) {
        let ctx = &self.info.ctx;
        let _ = std::fs::remove_dir_all(volumes::pod_dir(&ctx.state, &self.info.uid));
        if let Some(t) = self.info.token.take() {
            ctx.opts.server.remove_token(&t);
            ctx.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&t);
        }
        if let Some(ip) = self.info.ip.take() {
            ctx.ips.lock().unwrap_or_else(|e| e.into_inner()).free(&ip);
        }
        ctx.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.info.ns.clone(), self.info.name.clone()));
    }

    /// The kubelet's confirmation: delete with a zero grace period (only this pod, by uid).
    fn confirm(&self) {
        let ctx = &self.info.ctx;
        let _ = ctx.store.delete(
            &ctx.rt("pods"),
            &self.info.ns,
            &self.info.name,
            &DeleteOptions {
                grace_period: Some(0),
                uid: Some(self.info.uid.clone()),
                ..Default::default()
            },
        );
    }
}

type Why = (String, String);

/// How many deleted containers' log tails the kubelet keeps, and how long each tail is.
const KEPT_LOGS: usize = 6;
const KEPT_LOG_LINES: i64 = 60;

impl Info {
    /// ServiceAccount and token, address, volumes and the podman pod; an error says why the pod waits.
    async fn prepare(&mut self, pod: &Value) -> Result<(), Why> {
        let ctx = self.ctx.clone();
        let sa_name = match s(&pod["spec"], "serviceAccountName") {
            "" => "default",
            n => n,
        };
        let pod_automount = pod
            .pointer("/spec/automountServiceAccountToken")
            .and_then(Value::as_bool);
        let sa = if pod_automount == Some(false) {
            None
        } else {
            Some(
                ctx.store
                    .get(&ctx.rt("serviceaccounts"), &self.ns, sa_name)
                    .map_err(|_| {
                        (
                            "CreateContainerConfigError".to_string(),
                            format!("serviceaccount {sa_name:?} not found"),
                        )
                    })?,
            )
        };
        let automount = volumes::automount(pod, sa.as_ref());
        if automount && self.token.is_none() {
            let token = format!("standin-sa-{}", crate::kube::random_hex(40));
            ctx.opts.server.add_token(
                &token,
                &format!("system:serviceaccount:{}:{sa_name}", self.ns),
            );
            ctx.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.clone());
            self.token = Some(token);
        }
        if self.ip.is_none() {
            let ip = ctx.ips.lock().unwrap_or_else(|e| e.into_inner()).alloc();
            self.ip = Some(ip.ok_or_else(|| {
                (
                    "ContainerCreating".to_string(),
                    "no free address in the network".to_string(),
                )
            })?);
        }
        if self.volumes.is_none() {
            let lookup = StoreLookup {
                ctx: &ctx,
                ns: &self.ns,
            };
            let facts = self.facts();
            let sa_files = automount.then(|| volumes::SaFiles {
                token: self.token.as_deref().unwrap_or_default(),
                ca_pem: &ctx.opts.ca_pem,
            });
            let vols = volumes::plan(pod, &ctx.state, &facts, &lookup, sa_files)
                .map_err(|e| ("ContainerCreating".to_string(), e.0))?;
            let fs_group = pod
                .pointer("/spec/securityContext/fsGroup")
                .and_then(Value::as_u64)
                .map(|g| g as u32);
            volumes::materialize(&ctx.state, &self.uid, &vols, fs_group).map_err(|e| {
                (
                    "ContainerCreating".to_string(),
                    format!("MountVolume.SetUp failed: {e}"),
                )
            })?;
            self.volumes = Some(vols);
        }
        if !self.sandbox {
            self.create_sandbox(pod).await?;
        }
        Ok(())
    }

    fn facts(&self) -> PodFacts {
        PodFacts {
            pod_ip: self.ip.clone().unwrap_or_default(),
            host_ip: self.ctx.opts.gateway.to_string(),
            node_cpu: self.ctx.node_cpu,
            node_memory: self.ctx.node_memory,
        }
    }

    async fn create_sandbox(&mut self, pod: &Value) -> Result<(), Why> {
        let ctx = self.ctx.clone();
        let hostname: String = match s(&pod["spec"], "hostname") {
            "" => self.name.clone(),
            h => h.to_string(),
        }
        .chars()
        .take(63)
        .collect();
        let shm = volumes::shm_size(pod, self.volumes.as_deref().unwrap_or_default());
        let labels = runtime::labels(&ctx.id, &self.uid);
        let mut err = String::new();
        for _ in 0..3 {
            let _ = runtime::run(&["pod", "rm", "-f", "-t", "0", &self.podman_pod]).await;
            let ip = self.ip.clone().unwrap_or_default();
            let args = runtime::pod_create_args(
                &self.podman_pod,
                &ctx.opts.network,
                &ip,
                &hostname,
                &ctx.opts.infra_image,
                shm.as_deref(),
                pod.pointer("/spec/hostAliases").unwrap_or(&Value::Null),
                &labels,
            );
            let created = runtime::podman(&args, &[]).await;
            let started = match created {
                Ok(_) => runtime::run(&["pod", "start", &self.podman_pod]).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(_) => {
                    self.sandbox = true;
                    self.start_time = Some(crate::kube::store::now());
                    return Ok(());
                }
                Err(e) => {
                    err = e.to_string();
                    // Most likely the address is in use by something this kubelet does not know.
                    let mut ips = ctx.ips.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(new) = ips.alloc() {
                        self.ip = Some(new);
                    }
                }
            }
        }
        Err((
            "ContainerCreating".into(),
            format!("creating the pod sandbox: {err}"),
        ))
    }
}

/// Creates and starts one container: env (values only in a 0600 env file, removed once podman has read
/// it), `$(VAR)`-expanded command and args, mounts.
async fn create(info: &Info, pod: &Value, c: &Value, sl: &mut Slot) -> Result<(), Why> {
    let ctx = &info.ctx;
    let cfg = |e: env::ConfigError| ("CreateContainerConfigError".to_string(), e.0);
    let lookup = StoreLookup { ctx, ns: &info.ns };
    let service = env::service_env(&ctx.opts.api_host.to_string(), ctx.opts.api_port);
    let envs = env::container_env(pod, c, &info.facts(), &service, &lookup).map_err(cfg)?;
    let command = env::expand_list(c, "command", &envs);
    let args = env::expand_list(c, "args", &envs);
    let mounts = volumes::mounts(c, info.volumes.as_deref().unwrap_or_default()).map_err(cfg)?;
    for m in &mounts {
        if !m.host.exists() {
            std::fs::create_dir_all(&m.host)
                .and_then(|_| {
                    std::fs::set_permissions(&m.host, std::fs::Permissions::from_mode(0o777))
                })
                .map_err(|e| ("CreateContainerConfigError".to_string(), e.to_string()))?;
        }
    }
    let (text, apart) = runtime::env_file(&envs);
    let dir = volumes::pod_dir(&ctx.state, &info.uid);
    let file: PathBuf = dir.join(format!("{}.env", sl.name));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
    let names: Vec<String> = apart.iter().map(|(k, _)| k.clone()).collect();
    let labels = runtime::labels(&ctx.id, &info.uid);
    let create = runtime::container_create_args(
        pod,
        c,
        &info.podman_pod,
        &sl.podman,
        command.as_deref(),
        args.as_deref(),
        &mounts,
        &file,
        &names,
        &labels,
    );
    let _ = runtime::run(&["rm", "-f", "-t", "0", &sl.podman]).await;
    let created = runtime::podman(&create, &apart).await;
    let _ = std::fs::remove_file(&file);
    created.map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
    sl.created = true;
    ctx.containers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((info.ns.clone(), info.name.clone()))
        .or_default()
        .insert(sl.name.clone(), sl.podman.clone());
    start(sl).await;
    Ok(())
}

/// `podman start`; a failure shows as the exited container in the next snapshot (StartError).
async fn start(sl: &mut Slot) {
    match runtime::run(&["start", &sl.podman]).await {
        Ok(_) => sl.began_run(),
        Err(e) => {
            sl.acted_at = Instant::now();
            sl.state = waiting("RunContainerError", e.to_string());
        }
    }
}

/// Brings one container towards running (or completed), by its restart policy.
async fn ensure(info: &Info, pod: &Value, c: &Value, sl: &mut Slot, policy: &str, snap: &Snapshot) {
    let max = info.ctx.opts.max_backoff;
    let now = Instant::now();
    let image = s(c, "image");
    if !sl.created {
        if sl.retry_at.is_some_and(|t| now < t) {
            if sl.image_failures > 0 {
                sl.state = waiting(
                    "ImagePullBackOff",
                    format!("Back-off pulling image {image:?}"),
                );
            }
            return;
        }
        if !runtime::image_exists(image).await {
            sl.image_failures += 1;
            sl.state = waiting(
                "ErrImagePull",
                format!("image {image:?} is not present locally, and the pgherd stand-in's kubelet never pulls"),
            );
            sl.retry_at = Some(now + sl.next_backoff(max));
            return;
        }
        if sl.image_failures > 0 {
            sl.image_failures = 0;
            sl.backoff = Duration::ZERO;
        }
        if let Err((reason, msg)) = create(info, pod, c, sl).await {
            sl.state = waiting(&reason, msg);
            sl.retry_at = Some(now + Duration::from_secs(1));
        }
        return;
    }
    if snap.taken <= sl.acted_at {
        return;
    }
    let Some(e) = snap.ps.get(&sl.podman) else {
        // Removed behind the kubelet's back: create it again.
        sl.created = false;
        sl.id = None;
        return;
    };
    sl.image_id = e.image_id.clone();
    sl.id = Some(e.id.clone());
    match status::state_of(e) {
        st @ CState::Running { .. } => sl.state = st,
        CState::Terminated(t) => {
            let restart = match policy {
                "Always" => true,
                "OnFailure" => t.exit_code != 0,
                _ => false,
            };
            if !restart {
                sl.ready = false;
                sl.state = CState::Terminated(t);
                return;
            }
            if sl.handled != Some(sl.restarts) {
                sl.handled = Some(sl.restarts);
                if e.exited_at - e.started_at > 60 {
                    sl.backoff = Duration::ZERO;
                }
                sl.retry_at = Some(now + sl.next_backoff(max));
                sl.last = Some(t);
                sl.ready = false;
                sl.started = false;
            }
            if sl.retry_at.is_some_and(|r| now < r) {
                sl.state = waiting(
                    "CrashLoopBackOff",
                    format!(
                        "back-off {}s restarting failed container={} pod={}",
                        sl.backoff.as_secs(),
                        sl.name,
                        info.name
                    ),
                );
                return;
            }
            sl.restarts += 1;
            start(sl).await;
        }
        CState::Waiting { .. } => {
            // Created but not started (a start that failed before runc ran): try again.
            if now.duration_since(sl.acted_at) > Duration::from_secs(2) {
                start(sl).await;
            }
        }
    }
}

/// Startup, liveness and readiness probes of a running container; a failed liveness or startup probe
/// stops it, and the restart policy decides the rest.
async fn probe(info: &Info, pod: &Value, c: &Value, sl: &mut Slot) {
    if !matches!(sl.state, CState::Running { .. }) {
        sl.ready = false;
        sl.started = false;
        return;
    }
    let ip = info.ip.clone().unwrap_or_default();
    let mut kill = false;
    if let Some(p) = c.get("startupProbe") {
        if sl.startup.result != Some(true) {
            if sl.startup.due(p, sl.run_started, Instant::now()) {
                let ok = probes::run(p, c, &ip, &sl.podman).await;
                sl.startup.record(p, ok, Instant::now());
            }
            kill = sl.startup.result == Some(false);
            if sl.startup.result != Some(true) && !kill {
                return;
            }
        }
    }
    if !kill {
        sl.started = true;
        if let Some(p) = c.get("livenessProbe") {
            if sl.liveness.due(p, sl.run_started, Instant::now()) {
                let ok = probes::run(p, c, &ip, &sl.podman).await;
                sl.liveness.record(p, ok, Instant::now());
            }
            kill = sl.liveness.result == Some(false);
        }
    }
    if kill {
        let grace = pod
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30)
            .to_string();
        let _ = runtime::run(&["stop", "-t", &grace, &sl.podman]).await;
        sl.acted_at = Instant::now();
        sl.ready = false;
        sl.liveness = Counter::default();
        sl.startup = Counter::default();
        return;
    }
    match c.get("readinessProbe") {
        None => sl.ready = true,
        Some(p) => {
            if sl.readiness.due(p, sl.run_started, Instant::now()) {
                let ok = probes::run(p, c, &ip, &sl.podman).await;
                sl.readiness.record(p, ok, Instant::now());
            }
            sl.ready = sl.readiness.result == Some(true);
        }
    }
}
