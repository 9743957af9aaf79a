//! A Kubernetes API server stand-in for tests and the demo: **not a Kubernetes distribution**. No real
//! API server can be installed where pgherd's tests run, so this serves, over HTTPS with a bearer token
//! and a kubeconfig it writes, what kubectl, Patroni's Kubernetes DCS, kube-rs and pgherd's binaries use
//! (docs/kube-standin.md lists what it implements, what it simplifies, and what is verified only here).
//!
//! Layers: [`store`] (objects) with [`write`] (write rules), [`gc`] (deletion), [`apply`] and [`fields`]
//! (server-side apply), [`patch`], [`defaults`]; [`watch`]; [`select`]; [`resources`] and [`discovery`];
//! [`table`]; [`events`]; [`http`] (TLS, auth, routing) with [`rest`] (the verbs) and [`tls`]. Controllers
//! (StatefulSet, Endpoints, Deployment, CronJob/Job) and the pod runner are separate modules on top of
//! [`store::Store`], started next to an [`ApiServer`].

pub mod apply;
pub mod controllers;
pub mod counts;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod events;
pub mod fields;
pub mod gc;
pub mod http;
pub mod kubelet;
pub mod patch;
pub mod resources;
pub mod rest;
pub mod select;
pub mod store;
pub mod table;
pub mod tls;
pub mod watch;
pub mod write;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod kube_rs_tests;
#[cfg(test)]
mod patroni_tests;
#[cfg(test)]
mod store_tests;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

pub use error::Error;
pub use store::{DeleteOptions, PatchType, Propagation, Store, WriteOptions};

/// How to start an [`ApiServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The address clients are given (kubeconfig, `kubernetes` Endpoints); the listen address by default.
    pub advertise: Option<IpAddr>,
    /// More names and addresses for the serving certificate.
    pub extra_sans: Vec<String>,
    /// CRD manifests (`*.yaml`) installed at start; `None` installs none.
    pub crds_dir: Option<PathBuf>,
    /// Watch events kept for watches from an older resourceVersion.
    pub history: usize,
    /// Interval of watch bookmarks (upstream: about a minute).
    pub bookmark_every: Duration,
    /// Directory for `kubeconfig` and `ca.crt`; a temporary one (removed on drop) by default.
    pub dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise: None,
            extra_sans: vec![],
            crds_dir: Some(repo_crds_dir()),
            history: 10_000,
            bookmark_every: Duration::from_secs(5),
            dir: None,
        }
    }
}

/// `crds/` of this repository.
pub fn repo_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

fn random_hex(n: usize) -> String {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        s.push_str(&format!("{:016x}", h.finish()));
        i += 1;
    }
    s.truncate(n);
    s
}

/// A running stand-in; stops (with every connection and watch) when dropped.
pub struct ApiServer {
    shared: Arc<http::Shared>,
    addr: SocketAddr,
    url: String,
    token: String,
    ca_pem: String,
    kubeconfig: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    pub async fn start(opts: Options) -> anyhow::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .context("binding the API server")?;
        let addr = listener.local_addr()?;
        let advertise = opts.advertise.unwrap_or(addr.ip());
        let mut sans = vec![
            "localhost".to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            addr.ip().to_string(),
            advertise.to_string(),
            "10.96.0.1".into(),
        ];
        sans.extend(opts.extra_sans.iter().cloned());
        sans.dedup();
        let pki = tls::Pki::generate(&sans)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let store = Store::new(opts.history);
        let server_address = SocketAddr::new(advertise, addr.port()).to_string();
        bootstrap(&store, advertise, addr.port(), opts.crds_dir.as_deref())?;
        let token = random_hex(48);
        let shared = Arc::new(http::Shared {
            store,
            tokens: RwLock::new(HashMap::from([(token.clone(), "admin".to_string())])),
            server_address: server_address.clone(),
            bookmark_every: opts.bookmark_every,
            requests: Mutex::new(VecDeque::new()),
            writes: Mutex::new(VecDeque::new()),
            counts: Default::default(),
            pod_logs: RwLock::new(None),
        });
        let task = tokio::spawn(http::serve(listener, acceptor, shared.clone()));
        let (dir, tmp) = match &opts.dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new().prefix("pgherd-kube-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir)?;
        let url = format!("https://{server_address}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            tls::kubeconfig(&url, &pki.ca_pem, &token, "default"),
        )?;
        std::fs::write(dir.join("ca.crt"), &pki.ca_pem)?;
        Ok(ApiServer {
            shared,
            addr,
            url,
            token,
            ca_pem: pki.ca_pem,
            kubeconfig,
            _tmp: tmp,
            task,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig written at start (context `pgherd-standin`, namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Accepts another bearer token (a pod's service-account token) for `user`. No authorization is
    /// enforced: every known token may do everything.
    pub fn add_token(&self, token: &str, user: &str) {
        self.shared
            .tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.into(), user.into());
    }

    /// A handle for the pod runner: bearer tokens (its pods' service-account tokens) and `pods/log`.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared.clone())
    }

    /// Every request served so far, by user, verb and resource (cheap; `requests()` keeps only the last 2000).
    pub fn request_counts(&self) -> counts::RequestCounts {
        self.shared.counts.snapshot()
    }

    /// The writes served so far with their time and status (`time METHOD path?query by user -> status`),
    /// oldest first, at most 2000.
    pub fn writes(&self) -> Vec<String> {
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The requests served so far (`METHOD path?query [Accept] body: Content-Type by user`), oldest first,
    /// at most 2000.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What the pod runner changes in a running [`ApiServer`]; cloneable, so it can register a pod's token
/// when it starts the pod and forget it when the pod goes.
#[derive(Clone)]
pub struct ServerHandle(Arc<http::Shared>);

impl ServerHandle {
    pub fn add_token(&self, token: &str, user: &str) {
        let mut t = self.0.tokens.write().unwrap_or_else(|e| e.into_inner());
        t.insert(token.into(), user.into());
    }

    pub fn remove_token(&self, token: &str) {
        let mut t = self.0.tokens.write().unwrap_or_else(|e| e.into_inner());
        t.remove(token);
    }

    /// Serves `GET pods/{name}/log` from `logs` (`None`: 404 again).
    pub fn set_pod_logs(&self, logs: Option<Arc<dyn rest::PodLogs>>) {
        *self.0.pod_logs.write().unwrap_or_else(|e| e.into_inner()) = logs;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a fresh cluster has: the usual namespaces, the `kubernetes` Service and its Endpoints (Patroni's
/// `bypass_api_service` reads them), and the CRDs.
fn bootstrap(store: &Store, ip: IpAddr, port: u16, crds: Option<&Path>) -> anyhow::Result<()> {
    let w = WriteOptions {
        manager: "pgherd-standin".into(),
        ..Default::default()
    };
    let r = |g: &str, p: &str| store.resource(g, "v1", p).expect("built-in resource");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        store.create(
            &r("", "namespaces"),
            "",
            json!({"metadata": {"name": ns}}),
            &w,
        )?;
    }
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    store.create(
        &r("", "services"),
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": labels},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}}),
        &w,
    )?;
    store.create(&r("", "endpoints"), "default", json!({"metadata": {"name": "kubernetes", "labels": labels},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}), &w)?;
    let Some(dir) = crds else { return Ok(()) };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let crd = r("apiextensions.k8s.io", "customresourcedefinitions");
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let doc: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        store
            .create(&crd, "", doc, &w)
            .with_context(|| format!("installing {}", f.display()))?;
    }
    Ok(())
}
