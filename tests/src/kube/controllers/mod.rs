//! The controllers of the stand-in: what kube-controller-manager does for the kinds pgherd uses
//! (StatefulSets, PVC binding, Endpoints, Deployments and ReplicaSets, CronJobs and Jobs, the `default`
//! ServiceAccount and `kube-root-ca.crt`). docs/kube-standin.md lists what each simplifies.
//!
//! Each controller is a pure function from a [`Snapshot`] of the kinds it reads (and the time) to a list
//! of [`Action`]s, so its decisions are unit-tested without a store or a clock. The shell here lists,
//! calls it, and applies the actions through the [`Store`]. A loop wakes on watch events of the kinds it
//! reads and on a periodic tick, so a missed event or a failed write (`409`, `404`) heals on the next
//! round: every controller is level-triggered and idempotent, as upstream's are.

pub mod cronjob;
pub mod deployment;
pub mod endpoints;
pub mod job;
pub mod namespace;
pub mod pvc;
pub mod statefulset;
mod util;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::select::Selectors;
use super::store::{DeleteOptions, Propagation, Store, WriteOptions};
use super::watch::WatchEvent;

pub use cronjob::job_from_cronjob;
pub use util::Time;

/// The kinds controllers read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    ServiceAccount,
    Pvc,
    Pv,
    StatefulSet,
    ControllerRevision,
    Deployment,
    ReplicaSet,
    Job,
    CronJob,
}

impl Kind {
    /// Group, version and plural.
    pub fn gvr(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Namespace => ("", "v1", "namespaces"),
            Kind::Pod => ("", "v1", "pods"),
            Kind::Service => ("", "v1", "services"),
            Kind::Endpoints => ("", "v1", "endpoints"),
            Kind::ConfigMap => ("", "v1", "configmaps"),
            Kind::ServiceAccount => ("", "v1", "serviceaccounts"),
            Kind::Pvc => ("", "v1", "persistentvolumeclaims"),
            Kind::Pv => ("", "v1", "persistentvolumes"),
            Kind::StatefulSet => ("apps", "v1", "statefulsets"),
            Kind::ControllerRevision => ("apps", "v1", "controllerrevisions"),
            Kind::Deployment => ("apps", "v1", "deployments"),
            Kind::ReplicaSet => ("apps", "v1", "replicasets"),
            Kind::Job => ("batch", "v1", "jobs"),
            Kind::CronJob => ("batch", "v1", "cronjobs"),
        }
    }
}

/// A write a controller wants. Updates carry the resourceVersion they were computed from, so a write based
/// on a stale read gets `409` and is recomputed on the next round.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create {
        kind: Kind,
        ns: String,
        obj: Value,
    },
    /// PUT of the whole object (`obj` carries its resourceVersion).
    Update {
        kind: Kind,
        ns: String,
        name: String,
        obj: Value,
    },
    /// PUT of the status subresource.
    Status {
        kind: Kind,
        ns: String,
        name: String,
        resource_version: String,
        status: Value,
    },
    /// JSON merge patch of the main resource.
    Patch {
        kind: Kind,
        ns: String,
        name: String,
        patch: Value,
    },
    /// Delete with a uid precondition, so a recreated object of the same name is not hit.
    Delete {
        kind: Kind,
        ns: String,
        name: String,
        uid: String,
        propagation: Propagation,
    },
}

/// The objects of the kinds a controller reads, every namespace.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub objects: HashMap<Kind, Vec<Value>>,
}

impl Snapshot {
    pub fn take(store: &Store, kinds: &[Kind]) -> Snapshot {
        let mut objects = HashMap::new();
        for k in kinds {
            let (g, v, p) = k.gvr();
            let Some(rt) = store.resource(g, v, p) else {
                continue;
            };
            let (items, _, _) = store.list(&rt, None, &Selectors::default(), None, None);
            objects.insert(*k, items);
        }
        Snapshot { objects }
    }

    /// For tests: a snapshot of the given objects.
    pub fn of(items: impl IntoIterator<Item = (Kind, Value)>) -> Snapshot {
        let mut s = Snapshot::default();
        for (k, o) in items {
            s.objects.entry(k).or_default().push(o);
        }
        s
    }

    pub fn all(&self, kind: Kind) -> &[Value] {
        self.objects.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn in_ns<'a>(&'a self, kind: Kind, ns: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.all(kind).iter().filter(move |o| util::ns(o) == ns)
    }

    /// The objects of `kind` whose controller owner reference has `owner`'s uid.
    pub fn owned_by<'a>(&'a self, kind: Kind, owner: &'a Value) -> Vec<&'a Value> {
        let (ns, uid) = (util::ns(owner), util::uid(owner));
        self.in_ns(kind, ns)
            .filter(|o| util::controller_uid(o) == Some(uid))
            .collect()
    }
}

/// A controller's decision: what to write, given what it reads and the time.
pub type Decide = Box<dyn Fn(&Snapshot, Time) -> Vec<Action> + Send + Sync>;

/// A controller: its field manager, the kinds it reads (and wakes on), its pure decision.
pub struct Controller {
    pub name: &'static str,
    pub reads: &'static [Kind],
    pub decide: Decide,
}

/// How to start [`Controllers`].
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// The cluster CA (`ApiServer::ca_pem()`), published as `kube-root-ca.crt` in every namespace.
    pub ca_pem: String,
    /// The periodic resync, for clocks (CronJobs, deadlines) and missed events.
    pub resync: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            ca_pem: String::new(),
            resync: Duration::from_secs(1),
        }
    }
}

/// The running controllers; dropping this stops them.
pub struct Controllers {
    tasks: JoinSet<()>,
}

impl Controllers {
    /// Every controller, on `store` directly (not over HTTP).
    pub fn start(store: Arc<Store>, opts: ControllerOptions) -> Controllers {
        let mut tasks = JoinSet::new();
        for c in all(&opts) {
            tasks.spawn(run(store.clone(), c, opts.resync));
        }
        Controllers { tasks }
    }

    /// The number of controller loops still running (they end only on a panic).
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

/// The controllers `Controllers::start` runs.
pub fn all(opts: &ControllerOptions) -> Vec<Controller> {
    vec![
        statefulset::controller(),
        pvc::controller(),
        endpoints::controller(),
        deployment::controller(),
        deployment::replicaset_controller(),
        job::controller(),
        cronjob::controller(),
        namespace::serviceaccount_controller(),
        namespace::root_ca_controller(opts.ca_pem.clone()),
    ]
}

/// One controller's loop: decide, apply, wait for an event or the tick.
async fn run(store: Arc<Store>, c: Controller, resync: Duration) {
    let wake = Arc::new(Notify::new());
    let mut watches = JoinSet::new();
    for k in c.reads {
        watches.spawn(forward(store.clone(), *k, wake.clone()));
    }
    loop {
        let snap = Snapshot::take(&store, c.reads);
        let actions = (c.decide)(&snap, Time::now());
        for a in actions {
            if let Err(e) = apply(&store, c.name, &a) {
                tracing::debug!(controller = c.name, "{e:#}");
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(resync) => {}
        }
        // Coalesces the burst of events one write of a client tends to cause.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wakes the loop on every change of `kind`; re-watches when a watch ends (fell behind).
async fn forward(store: Arc<Store>, kind: Kind, wake: Arc<Notify>) {
    let (g, v, p) = kind.gvr();
    let Some(rt) = store.resource(g, v, p) else {
        return;
    };
    loop {
        let rv = store.resource_version();
        let mut w = store.watch(&rt, None, Selectors::default(), Some(rv), false, None);
        while let Some(e) = w.next().await {
            if let WatchEvent::Object(..) = e {
                wake.notify_one();
            }
        }
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies one action as `manager`.
pub fn apply(store: &Store, manager: &str, a: &Action) -> anyhow::Result<()> {
    let w = WriteOptions {
        manager: manager.into(),
        ..Default::default()
    };
    let rt = |k: Kind| {
        let (g, v, p) = k.gvr();
        store
            .resource(g, v, p)
            .ok_or_else(|| anyhow::anyhow!("{p} not served"))
    };
    match a {
        Action::Create { kind, ns, obj } => {
            store
                .create(rt(*kind)?.as_ref(), ns, obj.clone(), &w)
                .map_err(|e| {
                    anyhow::anyhow!("creating {:?} {ns}/{}: {e}", kind, util::name(obj))
                })?;
        }
        Action::Update {
            kind,
            ns,
            name,
            obj,
        } => {
            store
                .update(rt(*kind)?.as_ref(), ns, name, obj.clone(), false, &w)
                .map_err(|e| anyhow::anyhow!("updating {kind:?} {ns}/{name}: {e}"))?;
        }
        Action::Status {
            kind,
            ns,
            name,
            resource_version,
            status,
        } => {
            let body = json!({"metadata": {"name": name, "resourceVersion": resource_version}, "status": status});
            store
                .update(rt(*kind)?.as_ref(), ns, name, body, true, &w)
                .map_err(|e| anyhow::anyhow!("writing the status of {kind:?} {ns}/{name}: {e}"))?;
        }
        Action::Patch {
            kind,
            ns,
            name,
            patch,
        } => {
            store
                .patch(
                    rt(*kind)?.as_ref(),
                    ns,
                    name,
                    super::store::PatchType::Merge,
                    patch,
                    false,
                    &w,
                )
                .map_err(|e| anyhow::anyhow!("patching {kind:?} {ns}/{name}: {e}"))?;
        }
        Action::Delete {
            kind,
            ns,
            name,
            uid,
            propagation,
        } => {
            let opts = DeleteOptions {
                propagation: *propagation,
                uid: (!uid.is_empty()).then(|| uid.clone()),
                ..Default::default()
            };
            store
                .delete(rt(*kind)?.as_ref(), ns, name, &opts)
                .map_err(|e| anyhow::anyhow!("deleting {kind:?} {ns}/{name}: {e}"))?;
        }
    }
    Ok(())
}
