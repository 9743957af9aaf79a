//! The CronJob controller: a Job `<cronjob>-<scheduled minute since the epoch>` at each scheduled time,
//! with `concurrencyPolicy`, `suspend`, `startingDeadlineSeconds` and the history limits, as upstream's
//! CronJob controller v2. Schedules are Kubernetes' 5-field cron, evaluated in UTC.

use std::str::FromStr;

use anyhow::Context;
use serde_json::{json, Value};

use super::job::finished;
use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};
use crate::kube::store::{Propagation, Store, WriteOptions};

pub const NAME: &str = "cronjob-controller";
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub fn controller() -> Controller {
    Controller {
        name: NAME,
        reads: &[Kind::CronJob, Kind::Job],
        decide: Box::new(decide),
    }
}

pub fn decide(snap: &Snapshot, now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for cj in snap.all(Kind::CronJob) {
        let jobs = snap.owned_by(Kind::Job, cj);
        out.extend(reconcile(cj, &jobs, now));
    }
    out
}

/// Kubernetes' cron (5 fields, `@hourly`…, optional `CRON_TZ=`/`TZ=` prefix, Sunday = 0 or 7) as the
/// `cron` crate's 6 fields (seconds first, Sunday = 1). Only UTC is supported as a time zone.
pub fn parse_schedule(spec: &str, time_zone: Option<&str>) -> Result<cron::Schedule, String> {
    let mut s = spec.trim();
    let mut tz = time_zone.map(String::from);
    for p in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = s.strip_prefix(p) {
            let (z, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            tz = Some(z.to_string());
            s = rest.trim();
        }
    }
    if let Some(z) = tz.filter(|z| !matches!(z.as_str(), "UTC" | "Etc/UTC" | "Etc/GMT" | "GMT")) {
        return Err(format!(
            "time zone {z:?} is not supported by the stand-in (UTC only)"
        ));
    }
    let expanded = match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {spec:?}",
            fields.len()
        ));
    }
    let dow = shift_weekdays(fields[4]);
    let six = format!(
        "0 {} {} {} {} {dow}",
        fields[0], fields[1], fields[2], fields[3]
    );
    cron::Schedule::from_str(&six).map_err(|e| format!("unparseable schedule {spec:?}: {e}"))
}

/// Day-of-week numbers 0–7 (Sunday 0 or 7) → 1–7 (Sunday 1); step sizes after `/` stay.
fn shift_weekdays(field: &str) -> String {
    let mut out = String::new();
    let mut num = String::new();
    let mut after_slash = false;
    let flush = |num: &mut String, out: &mut String, after_slash: bool| {
        if num.is_empty() {
            return;
        }
        let n: u32 = num.parse().unwrap_or(0);
        if after_slash {
            out.push_str(num);
        } else {
            out.push_str(&(n % 7 + 1).to_string());
        }
        num.clear();
    };
    for c in field.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            flush(&mut num, &mut out, after_slash);
            after_slash = c == '/';
            out.push(c);
        }
    }
    flush(&mut num, &mut out, after_slash);
    out
}

/// The latest scheduled time in (`after`, `now`], if any.
pub fn most_recent(schedule: &cron::Schedule, after: Time, now: Time) -> Option<Time> {
    let start = chrono::DateTime::from_timestamp(after.0, 0)?;
    schedule
        .after(&start)
        .take_while(|t| t.timestamp() <= now.0)
        .take(100_000)
        .last()
        .map(|t| Time(t.timestamp()))
}

/// The Job a CronJob's template makes (without name, owner or schedule annotation).
pub fn job_from_template(cj: &Value) -> Value {
    let t = cj
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or(json!({}));
    let mut meta = json!({});
    for k in ["labels", "annotations"] {
        if let Some(v) = t.pointer(&format!("/metadata/{k}")) {
            meta[k] = v.clone();
        }
    }
    meta["ownerReferences"] = json!([util::controller_ref(cj)]);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": t.get("spec").cloned().unwrap_or(json!({}))})
}

fn job_time(j: &Value) -> String {
    util::str_at(j, "/status/completionTime")
        .or_else(|| util::str_at(j, "/status/startTime"))
        .or_else(|| util::str_at(j, "/metadata/creationTimestamp"))
        .unwrap_or("")
        .to_string()
}

/// One CronJob and the Jobs it controls, at `now` → actions.
pub fn reconcile(cj: &Value, jobs: &[&Value], now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    let name = util::name(cj);
    let active: Vec<&Value> = jobs
        .iter()
        .copied()
        .filter(|j| finished(j).is_none() && !util::deleting(j))
        .collect();
    // History: the oldest finished Jobs beyond each limit.
    for (state, key, default) in [
        ("Complete", "successfulJobsHistoryLimit", 3),
        ("Failed", "failedJobsHistoryLimit", 1),
    ] {
        let limit = util::int(cj, &format!("/spec/{key}"), default).max(0) as usize;
        let mut done: Vec<&Value> = jobs
            .iter()
            .copied()
            .filter(|j| finished(j) == Some(state) && !util::deleting(j))
            .collect();
        done.sort_by_key(|j| job_time(j));
        let excess = done.len().saturating_sub(limit);
        for j in &done[..excess] {
            out.push(util::delete(Kind::Job, j, Propagation::Background));
        }
    }
    let old = cj.get("status").cloned().unwrap_or(json!({}));
    let mut status = old.clone();
    let last_success = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| util::str_at(j, "/status/completionTime"))
        .chain(util::str_at(cj, "/status/lastSuccessfulTime"))
        .max()
        .map(String::from);
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(t);
    }
    let refs = |js: &[&Value]| -> Vec<Value> {
        js.iter()
            .map(|j| {
                json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": util::ns(j),
                "name": util::name(j), "uid": util::uid(j)})
            })
            .collect()
    };
    let set_active = |status: &mut Value, js: &[&Value]| match status.as_object_mut() {
        Some(m) if js.is_empty() => {
            m.remove("active");
        }
        Some(m) => {
            m.insert("active".into(), json!(refs(js)));
        }
        None => {}
    };
    set_active(&mut status, &active);

    let schedule = parse_schedule(
        util::str_at(cj, "/spec/schedule").unwrap_or(""),
        util::str_at(cj, "/spec/timeZone"),
    );
    let suspended = cj.pointer("/spec/suspend") == Some(&json!(true));
    let (Ok(schedule), false, false) = (schedule, suspended, util::deleting(cj)) else {
        out.extend(util::status_action(Kind::CronJob, cj, status));
        return out;
    };
    let deadline = cj
        .pointer("/spec/startingDeadlineSeconds")
        .and_then(Value::as_i64);
    let mut earliest = util::str_at(cj, "/status/lastScheduleTime")
        .and_then(Time::parse)
        .or_else(|| util::created(cj))
        .unwrap_or(now);
    if let Some(d) = deadline {
        earliest = earliest.max(Time(now.0 - d));
    }
    let due =
        most_recent(&schedule, earliest, now).filter(|t| deadline.is_none_or(|d| t.0 + d >= now.0));
    if let Some(t) = due {
        let job_name = format!("{name}-{}", t.0 / 60);
        let exists = jobs.iter().any(|j| util::name(j) == job_name);
        let forbid = util::str_at(cj, "/spec/concurrencyPolicy") == Some("Forbid");
        let replace = util::str_at(cj, "/spec/concurrencyPolicy") == Some("Replace");
        if exists {
            status["lastScheduleTime"] = json!(t.rfc3339());
        } else if !forbid || active.is_empty() {
            if replace {
                for j in &active {
                    out.push(util::delete(Kind::Job, j, Propagation::Background));
                }
                set_active(&mut status, &[]);
            }
            let mut job = job_from_template(cj);
            job["metadata"]["name"] = json!(job_name);
            if !job["metadata"]["annotations"].is_object() {
                job["metadata"]["annotations"] = json!({});
            }
            job["metadata"]["annotations"][SCHEDULED] = json!(t.rfc3339());
            out.push(Action::Create {
                kind: Kind::Job,
                ns: util::ns(cj).into(),
                obj: job,
            });
            status["lastScheduleTime"] = json!(t.rfc3339());
        }
    }
    out.extend(util::status_action(Kind::CronJob, cj, status));
    out
}

/// What `kubectl create job NAME --from=cronjob/CRONJOB` does (kubectl's imperative generators cannot
/// talk to the stand-in, which accepts no protobuf): a Job from the template, annotated as a manual run,
/// owned by the CronJob. Returns the created Job.
pub fn job_from_cronjob(
    store: &Store,
    ns: &str,
    cronjob: &str,
    job_name: &str,
) -> anyhow::Result<Value> {
    let (g, v, p) = Kind::CronJob.gvr();
    let rt = store.resource(g, v, p).context("cronjobs are not served")?;
    let cj = store
        .get(&rt, ns, cronjob)
        .with_context(|| format!("reading cronjob {ns}/{cronjob}"))?;
    let mut job = job_from_template(&cj);
    job["metadata"]["name"] = json!(job_name);
    if !job["metadata"]["annotations"].is_object() {
        job["metadata"]["annotations"] = json!({});
    }
    job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] = json!("manual");
    let (g, v, p) = Kind::Job.gvr();
    let jrt = store.resource(g, v, p).context("jobs are not served")?;
    let w = WriteOptions {
        manager: "kubectl-create".into(),
        ..Default::default()
    };
    store
        .create(&jrt, ns, job, &w)
        .with_context(|| format!("creating job {ns}/{job_name} from cronjob {cronjob}"))
}
