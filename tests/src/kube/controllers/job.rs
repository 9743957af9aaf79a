//! The Job controller (NonIndexed): pods from the template until `completions` succeeded, at most
//! `parallelism` at a time; `backoffLimit` failed pods or `activeDeadlineSeconds` fail the Job. pgherd's
//! backups and restore checks run as Jobs from CronJobs.

use serde_json::{json, Value};

use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};
use crate::kube::store::Propagation;

pub const NAME: &str = "job-controller";

pub fn controller() -> Controller {
    Controller {
        name: NAME,
        reads: &[Kind::Job, Kind::Pod],
        decide: Box::new(decide),
    }
}

pub fn decide(snap: &Snapshot, now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for job in snap.all(Kind::Job) {
        let pods = snap.owned_by(Kind::Pod, job);
        out.extend(reconcile(job, &pods, now));
    }
    out
}

/// Whether the Job has its `Complete` or `Failed` condition.
pub fn finished(job: &Value) -> Option<&'static str> {
    if util::condition_true(job, "Complete") {
        Some("Complete")
    } else if util::condition_true(job, "Failed") {
        Some("Failed")
    } else {
        None
    }
}

fn cond(type_: &str, reason: &str, message: &str, now: Time) -> Value {
    json!({"type": type_, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now.rfc3339(), "lastTransitionTime": now.rfc3339()})
}

/// One Job and its pods → actions.
pub fn reconcile(job: &Value, pods: &[&Value], now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    let active: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| util::pod_active(p))
        .collect();
    let count = |ph: &str| pods.iter().filter(|p| util::phase(p) == ph).count() as i64;
    // Counts never go down, also when someone deletes a finished pod.
    let succeeded = count("Succeeded").max(util::int(job, "/status/succeeded", 0));
    let failed = count("Failed").max(util::int(job, "/status/failed", 0));
    let ready = active.iter().filter(|p| util::pod_ready(p)).count();
    let old = job.get("status").cloned().unwrap_or(json!({}));
    let mut status = old.clone();
    let mut set = |k: &str, v: i64| {
        if v > 0 || old.get(k).is_some() {
            status[k] = json!(v);
        }
    };
    set("succeeded", succeeded);
    set("failed", failed);
    status["ready"] = json!(ready);

    if let Some(state) = finished(job) {
        for p in &active {
            out.push(util::delete(Kind::Pod, p, Propagation::Background));
        }
        status.as_object_mut().map(|m| m.remove("active"));
        out.extend(util::status_action(Kind::Job, job, status));
        let ttl = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_i64);
        let done = util::str_at(job, "/status/completionTime")
            .or_else(|| {
                util::condition(job, state)?
                    .get("lastTransitionTime")?
                    .as_str()
            })
            .and_then(Time::parse);
        if let (Some(ttl), Some(done)) = (ttl, done) {
            if done.0 + ttl <= now.0 && !util::deleting(job) {
                out.push(util::delete(Kind::Job, job, Propagation::Background));
            }
        }
        return out;
    }
    if util::deleting(job) {
        return out;
    }
    let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
    let start = util::str_at(job, "/status/startTime").and_then(Time::parse);
    if start.is_none() && !suspended {
        status["startTime"] = json!(now.rfc3339());
    }
    let start = start.unwrap_or(now);
    let completions = util::int(job, "/spec/completions", 1);
    let parallelism = util::int(job, "/spec/parallelism", 1);
    let backoff = util::int(job, "/spec/backoffLimit", 6);
    let deadline = job
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64);

    let failure = if failed > backoff {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| !suspended && now.0 - start.0 >= d) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    let mut conds: Vec<Value> = old
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some((reason, msg)) = failure {
        for p in &active {
            out.push(util::delete(Kind::Pod, p, Propagation::Background));
        }
        conds.push(cond("FailureTarget", reason, msg, now));
        conds.push(cond("Failed", reason, msg, now));
        status["conditions"] = json!(conds);
        status.as_object_mut().map(|m| m.remove("active"));
    } else if succeeded >= completions {
        for p in &active {
            out.push(util::delete(Kind::Pod, p, Propagation::Background));
        }
        conds.push(cond(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        ));
        conds.push(cond(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        ));
        status["conditions"] = json!(conds);
        status["completionTime"] = json!(now.rfc3339());
        status.as_object_mut().map(|m| m.remove("active"));
    } else {
        let want = if suspended {
            0
        } else {
            parallelism.min(completions - succeeded).max(0)
        };
        let have = active.len() as i64;
        let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in have..want {
            out.push(Action::Create {
                kind: Kind::Pod,
                ns: util::ns(job).into(),
                obj: util::pod_from_template(
                    &template,
                    job,
                    None,
                    &format!("{}-", util::name(job)),
                ),
            });
        }
        if have > want {
            for p in &active[..(have - want) as usize] {
                out.push(util::delete(Kind::Pod, p, Propagation::Background));
            }
        }
        if want > 0 {
            status["active"] = json!(want);
        } else {
            status.as_object_mut().map(|m| m.remove("active"));
        }
    }
    // The status goes first, so a Job is never seen finished with its pods still counted as active.
    let mut actions: Vec<Action> = util::status_action(Kind::Job, job, status)
        .into_iter()
        .collect();
    actions.extend(out);
    actions
}
