//! Pod status as the kubelet reports it, computed (purely) from what podman says about each container and
//! what the pod worker remembers (restarts, readiness, the last termination, why it waits): `phase` by
//! upstream's `getPhase` rules, the four conditions with `lastTransitionTime` kept while their status
//! holds, and `containerStatuses`/`initContainerStatuses`.

use serde_json::{json, Map, Value};

use super::runtime::PsEntry;

#[derive(Clone, Debug, PartialEq)]
pub enum CState {
    Waiting { reason: String, message: String },
    Running { started_at: String },
    Terminated(Term),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub exit_code: i64,
    pub reason: String,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

impl Term {
    pub fn to_json(&self) -> Value {
        json!({"terminated": {"exitCode": self.exit_code, "reason": self.reason,
            "startedAt": self.started_at, "finishedAt": self.finished_at,
            "containerID": self.container_id}})
    }
}

/// What the status says about one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Ctr {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: CState,
    pub last: Option<Term>,
    pub restarts: u32,
    pub ready: bool,
    pub started: bool,
}

pub fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A container's state from `podman ps`.
pub fn state_of(e: &PsEntry) -> CState {
    match e.state.as_str() {
        "running" | "paused" | "stopping" => CState::Running {
            started_at: time(e.started_at),
        },
        "exited" | "stopped" => CState::Terminated(Term {
            exit_code: e.exit_code,
            reason: match (e.exit_code, e.started_at) {
                (_, 0) => "StartError",
                (0, _) => "Completed",
                _ => "Error",
            }
            .into(),
            started_at: time(if e.started_at > 0 {
                e.started_at
            } else {
                e.exited_at
            }),
            finished_at: time(e.exited_at.max(e.started_at)),
            container_id: format!("podman://{}", e.id),
        }),
        _ => CState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
    }
}

pub fn container_status(c: &Ctr) -> Value {
    let state = match &c.state {
        CState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        }
        CState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        CState::Terminated(t) => t.to_json(),
    };
    let mut v = json!({"name": c.name, "image": c.image, "imageID": c.image_id,
        "ready": c.ready, "started": c.started, "restartCount": c.restarts, "state": state,
        "lastState": c.last.as_ref().map(Term::to_json).unwrap_or(json!({}))});
    if let Some(id) = &c.container_id {
        v["containerID"] = json!(id);
    }
    v
}

/// Upstream's `getPhase`, with init containers.
pub fn phase(restart_policy: &str, init: &[Ctr], initialized: bool, ctrs: &[Ctr]) -> &'static str {
    if !initialized {
        let failed = init
            .iter()
            .any(|c| matches!(&c.state, CState::Terminated(t) if t.exit_code != 0));
        return if failed && restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in ctrs {
        match &c.state {
            CState::Running { .. } => running += 1,
            CState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            CState::Waiting { .. } if c.last.is_some() => stopped += 1,
            CState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// The input of [`pod_status`].
pub struct Input<'a> {
    pub pod_ip: Option<&'a str>,
    pub host_ip: &'a str,
    pub start_time: Option<&'a str>,
    pub restart_policy: &'a str,
    pub init: Vec<Ctr>,
    pub initialized: bool,
    pub ctrs: Vec<Ctr>,
    pub now: &'a str,
}

fn condition(old: &Value, type_: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_));
    let since = prev
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or(json!(now));
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// The whole `status`; `old` is the current one (for transition times and what the kubelet does not own).
pub fn pod_status(old: &Value, i: &Input<'_>) -> Value {
    let phase = phase(i.restart_policy, &i.init, i.initialized, &i.ctrs);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let all_ready = !i.ctrs.is_empty() && i.ctrs.iter().all(|c| c.ready) && !terminal;
    let not_ready = (!all_ready).then_some(if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    });
    let conditions = vec![
        condition(
            old,
            "Initialized",
            i.initialized,
            (!i.initialized).then_some("ContainersNotInitialized"),
            i.now,
        ),
        condition(old, "Ready", all_ready, not_ready, i.now),
        condition(old, "ContainersReady", all_ready, not_ready, i.now),
        condition(old, "PodScheduled", true, None, i.now),
    ];
    let mut s = Map::new();
    s.insert("phase".into(), json!(phase));
    s.insert("conditions".into(), json!(conditions));
    s.insert("hostIP".into(), json!(i.host_ip));
    s.insert("hostIPs".into(), json!([{"ip": i.host_ip}]));
    if let Some(ip) = i.pod_ip {
        s.insert("podIP".into(), json!(ip));
        s.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    if let Some(t) = i.start_time {
        s.insert("startTime".into(), json!(t));
    }
    if !i.init.is_empty() {
        s.insert(
            "initContainerStatuses".into(),
            json!(i.init.iter().map(container_status).collect::<Vec<_>>()),
        );
    }
    s.insert(
        "containerStatuses".into(),
        json!(i.ctrs.iter().map(container_status).collect::<Vec<_>>()),
    );
    if let Some(q) = old.get("qosClass") {
        s.insert("qosClass".into(), q.clone());
    }
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(state: CState, last: bool) -> Ctr {
        Ctr {
            name: "c".into(),
            image: "img".into(),
            image_id: "id".into(),
            container_id: Some("podman://x".into()),
            state,
            last: last.then(|| Term {
                exit_code: 1,
                reason: "Error".into(),
                started_at: time(0),
                finished_at: time(1),
                container_id: "podman://x".into(),
            }),
            restarts: 0,
            ready: false,
            started: false,
        }
    }

    fn entry(state: &str, exit: i64) -> PsEntry {
        PsEntry {
            id: "abc".into(),
            state: state.into(),
            exit_code: exit,
            started_at: 1796417578,
            exited_at: 1796417580,
            ..Default::default()
        }
    }

    #[test]
    fn states_from_ps() {
        assert_eq!(
            state_of(&entry("running", 0)),
            CState::Running {
                started_at: "2026-12-04T20:52:58Z".into()
            }
        );
        let CState::Terminated(t) = state_of(&entry("exited", 3)) else {
            panic!()
        };
        assert_eq!(
            (t.exit_code, t.reason.as_str(), t.finished_at.as_str()),
            (3, "Error", "2026-12-04T20:53:00Z")
        );
        assert!(matches!(
            state_of(&entry("created", 0)),
            CState::Waiting { .. }
        ));
    }

    #[test]
    fn phases() {
        let run = || CState::Running {
            started_at: time(0),
        };
        let term = |code| {
            CState::Terminated(Term {
                exit_code: code,
                reason: String::new(),
                started_at: time(0),
                finished_at: time(1),
                container_id: String::new(),
            })
        };
        let wait = || CState::Waiting {
            reason: "ErrImagePull".into(),
            message: String::new(),
        };
        assert_eq!(phase("Always", &[], true, &[ctr(wait(), false)]), "Pending");
        assert_eq!(phase("Always", &[], true, &[ctr(wait(), true)]), "Running");
        assert_eq!(phase("Always", &[], true, &[ctr(run(), false)]), "Running");
        assert_eq!(
            phase("Never", &[], true, &[ctr(term(0), false)]),
            "Succeeded"
        );
        assert_eq!(
            phase(
                "Never",
                &[],
                true,
                &[ctr(term(0), false), ctr(term(3), false)]
            ),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", &[], true, &[ctr(term(3), false)]),
            "Running"
        );
        assert_eq!(
            phase("OnFailure", &[], true, &[ctr(term(0), false)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Always", &[], true, &[ctr(term(0), false)]),
            "Running"
        );
        assert_eq!(
            phase(
                "Never",
                &[ctr(term(1), false)],
                false,
                &[ctr(wait(), false)]
            ),
            "Failed"
        );
        assert_eq!(
            phase("Always", &[ctr(run(), false)], false, &[ctr(wait(), false)]),
            "Pending"
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut c = ctr(
            CState::Running {
                started_at: time(0),
            },
            false,
        );
        c.ready = true;
        let input = |now, c: &Ctr| Input {
            pod_ip: Some("10.0.0.5"),
            host_ip: "10.0.0.1",
            start_time: Some("t0"),
            restart_policy: "Always",
            init: vec![],
            initialized: true,
            ctrs: vec![c.clone()],
            now,
        };
        let s1 = pod_status(&json!({}), &input("t1", &c));
        assert_eq!(s1["phase"], "Running");
        assert_eq!(s1["podIP"], "10.0.0.5");
        assert_eq!(
            s1["containerStatuses"][0]["state"]["running"]["startedAt"],
            time(0)
        );
        let s2 = pod_status(&s1, &input("t2", &c));
        assert_eq!(s1, s2, "nothing changed, so no write");
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&s2)["lastTransitionTime"], "t1");
        c.ready = false;
        let s3 = pod_status(&s2, &input("t3", &c));
        assert_eq!(ready(&s3)["status"], "False");
        assert_eq!(ready(&s3)["lastTransitionTime"], "t3");
    }
}
