//! In-memory [`Patroni`] for reconcile tests: one cluster view and one
//! dynamic configuration, shared by all members as the DCS would be, and a
//! log of every call that changes something.

use std::sync::Mutex;

use async_trait::async_trait;
use pgherd_shared::patroni::{Cluster, Member, FOLLOWS_DCS_TAG};
use serde_json::Value;

use crate::rolling::{MemberAddr, Patroni, PatroniError};

/// One mutating call, by the pod it was sent to.
#[derive(Clone, Debug, PartialEq)]
pub enum PatroniCall {
    PatchConfig(Value),
    Restart(String),
    Switchover { leader: String, candidate: String },
}

#[derive(Default)]
struct State {
    cluster: Option<Cluster>,
    config: Value,
    calls: Vec<PatroniCall>,
    refuse_switchover: Option<String>,
}

#[derive(Default)]
pub struct FakePatroni {
    state: Mutex<State>,
}

/// `PATCH /config` semantics: objects merge, `null` removes.
pub fn merge_patch(into: &mut Value, patch: &Value) {
    match (into.as_object_mut(), patch) {
        (Some(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge_patch(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => {
            *into = patch.clone();
            if let Value::Object(m) = into {
                m.retain(|_, v| !v.is_null());
            }
        }
    }
}

impl FakePatroni {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake patroni lock")
    }

    /// A healthy cluster: `leader` running, the others streaming, no lag.
    pub fn healthy(names: &[&str], leader: &str) -> Self {
        let members = names
            .iter()
            .map(|n| Member {
                name: n.to_string(),
                role: if *n == leader { "leader" } else { "replica" }.into(),
                state: if *n == leader { "running" } else { "streaming" }.into(),
                api_url: None,
                host: None,
                port: None,
                timeline: Some(1),
                lag: (*n != leader).then(|| 0.into()),
                pending_restart: None,
                tags: [(FOLLOWS_DCS_TAG.to_string(), true.into())]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let fake = FakePatroni::default();
        fake.lock().cluster = Some(Cluster {
            members,
            pause: false,
            scope: None,
        });
        fake
    }

    pub fn set_config(&self, config: Value) {
        self.lock().config = config;
    }

    pub fn config_now(&self) -> Value {
        self.lock().config.clone()
    }

    pub fn calls(&self) -> Vec<PatroniCall> {
        self.lock().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Changes the cluster view (a member failing, lagging, restarting).
    pub fn edit(&self, f: impl FnOnce(&mut Cluster)) {
        if let Some(c) = self.lock().cluster.as_mut() {
            f(c)
        }
    }

    /// The cluster view; `None` while no member answers.
    pub fn cluster_now(&self) -> Option<Cluster> {
        self.lock().cluster.clone()
    }

    /// Makes switchovers fail with `message` (as Patroni's 412/503 would).
    pub fn refuse_switchover(&self, message: Option<&str>) {
        self.lock().refuse_switchover = message.map(String::from);
    }

    fn view(&self, at: &MemberAddr) -> Result<Cluster, PatroniError> {
        self.lock().cluster.clone().ok_or(PatroniError::Refused {
            pod: at.pod.clone(),
            message: "connection refused".into(),
        })
    }
}

#[async_trait]
impl Patroni for FakePatroni {
    async fn cluster(&self, at: &MemberAddr) -> Result<Cluster, PatroniError> {
        self.view(at)
    }

    async fn config(&self, at: &MemberAddr) -> Result<Value, PatroniError> {
        self.view(at)?;
        Ok(self.lock().config.clone())
    }

    async fn patch_config(&self, at: &MemberAddr, patch: &Value) -> Result<(), PatroniError> {
        self.view(at)?;
        let mut s = self.lock();
        s.calls.push(PatroniCall::PatchConfig(patch.clone()));
        merge_patch(&mut s.config, patch);
        Ok(())
    }

    async fn restart_pending(&self, at: &MemberAddr) -> Result<(), PatroniError> {
        self.view(at)?;
        let mut s = self.lock();
        s.calls.push(PatroniCall::Restart(at.pod.clone()));
        if let Some(m) = s
            .cluster
            .as_mut()
            .and_then(|c| c.members.iter_mut().find(|m| m.name == at.pod))
        {
            m.pending_restart = None;
        }
        Ok(())
    }

    async fn switchover(
        &self,
        at: &MemberAddr,
        leader: &str,
        candidate: &str,
    ) -> Result<(), PatroniError> {
        self.view(at)?;
        let mut s = self.lock();
        if let Some(message) = s.refuse_switchover.clone() {
            return Err(PatroniError::Refused {
                pod: at.pod.clone(),
                message,
            });
        }
        s.calls.push(PatroniCall::Switchover {
            leader: leader.into(),
            candidate: candidate.into(),
        });
        for m in s.cluster.iter_mut().flat_map(|c| c.members.iter_mut()) {
            if m.name == leader {
                m.role = "replica".into();
                m.state = "streaming".into();
                m.lag = Some(0.into());
            } else if m.name == candidate {
                m.role = "leader".into();
                m.state = "running".into();
                m.lag = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_keeps_the_rest() {
        let mut c = json!({"ttl": 30, "slots": {"a": {"type": "physical"}, "b": {}},
            "postgresql": {"parameters": {"x": "1"}, "use_pg_rewind": true}});
        merge_patch(
            &mut c,
            &json!({"slots": {"a": null}, "postgresql": {"parameters": {"y": "2"}}}),
        );
        assert_eq!(
            c,
            json!({"ttl": 30, "slots": {"b": {}},
                "postgresql": {"parameters": {"x": "1", "y": "2"}, "use_pg_rewind": true}})
        );
    }
}
