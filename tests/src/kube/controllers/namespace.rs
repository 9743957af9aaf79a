//! What every namespace gets from controllers upstream: the `default` ServiceAccount (the
//! serviceaccount-controller) and the `kube-root-ca.crt` ConfigMap with the cluster CA
//! (the root-ca-cert-publisher), which pods' projected service-account volumes read.

use serde_json::{json, Value};

use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};

pub const SA_NAME: &str = "serviceaccount-controller";
pub const CA_NAME: &str = "root-ca-cert-publisher";
pub const CA_CONFIGMAP: &str = "kube-root-ca.crt";

pub fn serviceaccount_controller() -> Controller {
    Controller {
        name: SA_NAME,
        reads: &[Kind::Namespace, Kind::ServiceAccount],
        decide: Box::new(decide_serviceaccounts),
    }
}

pub fn root_ca_controller(ca_pem: String) -> Controller {
    Controller {
        name: CA_NAME,
        reads: &[Kind::Namespace, Kind::ConfigMap],
        decide: Box::new(move |snap, _| decide_root_ca(snap, &ca_pem)),
    }
}

fn active(n: &Value) -> bool {
    !util::deleting(n) && util::str_at(n, "/status/phase") != Some("Terminating")
}

pub fn decide_serviceaccounts(snap: &Snapshot, _now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for n in snap.all(Kind::Namespace).iter().filter(|n| active(n)) {
        let ns = util::name(n);
        if !snap
            .in_ns(Kind::ServiceAccount, ns)
            .any(|s| util::name(s) == "default")
        {
            out.push(Action::Create {
                kind: Kind::ServiceAccount,
                ns: ns.into(),
                obj: json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            });
        }
    }
    out
}

pub fn decide_root_ca(snap: &Snapshot, ca_pem: &str) -> Vec<Action> {
    let mut out = Vec::new();
    let data = json!({"ca.crt": ca_pem});
    for n in snap.all(Kind::Namespace).iter().filter(|n| active(n)) {
        let ns = util::name(n);
        match snap.in_ns(Kind::ConfigMap, ns).find(|c| util::name(c) == CA_CONFIGMAP) {
            None => out.push(Action::Create {
                kind: Kind::ConfigMap,
                ns: ns.into(),
                obj: json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": CA_CONFIGMAP, "annotations": {"kubernetes.io/description":
                        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": data}),
            }),
            Some(c) if c.get("data") != Some(&data) => {
                let mut obj = c.clone();
                obj["data"] = data.clone();
                out.push(Action::Update {
                    kind: Kind::ConfigMap,
                    ns: ns.into(),
                    name: CA_CONFIGMAP.into(),
                    obj,
                });
            }
            Some(_) => {}
        }
    }
    out
}
