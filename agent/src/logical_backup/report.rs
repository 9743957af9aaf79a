//! Telling users what a run did where they look: one line in the Job's log, and a core/v1 Event on their
//! `postgresql` object (`kubectl describe postgresql NAME`). The texts and the Event are pure; posting
//! is best effort, since a missing `create events` permission must not fail a backup that worked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::incluster::{self, InCluster};

use super::config::Config;
use super::layout::Manifest;
use super::retention::Decision;

pub const REASON_OK: &str = "LogicalBackup";
pub const REASON_FAILED: &str = "LogicalBackupFailed";

/// `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The success line (Job log and Event message).
pub fn success(m: &Manifest, took: Duration, location: &str) -> String {
    format!(
        "logical backup {} complete: {} database(s) ({}), {} stored ({} dumped) in {:.1} s from {}, {location}{}/",
        m.id,
        m.databases.len(),
        m.databases.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", "),
        bytes(m.stored_bytes()),
        bytes(m.size_bytes()),
        took.as_secs_f64(),
        m.host,
        m.id,
    )
}

/// What retention removed, or `None` when it removed nothing.
pub fn retention(d: &Decision) -> Option<String> {
    (!d.is_empty()).then(|| {
        format!(
            "retention: deleted {} backup(s) [{}], {} Zalando dump(s) [{}], {} interrupted run(s) [{}]",
            d.backups.len(),
            d.backups.join(" "),
            d.zalando.len(),
            d.zalando.join(" "),
            d.incomplete.len(),
            d.incomplete.join(" "),
        )
    })
}

/// A core/v1 Event about the cluster's `postgresql` object.
pub fn event(
    config: &Config,
    namespace: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Value {
    let time = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut involved = json!({
        "apiVersion": "acid.zalan.do/v1",
        "kind": "postgresql",
        "name": config.scope,
        "namespace": namespace,
    });
    if let Some(uid) = &config.uid {
        involved["uid"] = json!(uid);
    }
    // Event messages are limited to 1 KiB by the API server.
    let message: String = message.chars().take(1000).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", config.scope), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": if reason == REASON_OK { "Normal" } else { "Warning" },
        "source": {"component": "pgherd-logical-backup"},
        "reportingComponent": "pgherd-logical-backup",
        "reportingInstance": std::env::var("HOSTNAME").unwrap_or_default(),
        "firstTimestamp": time,
        "lastTimestamp": time,
        "count": 1,
    })
}

/// Posts the Event; a failure is only a warning in the log.
pub async fn post(api: Option<&InCluster>, config: &Config, reason: &str, message: &str) {
    let (Some(api), Some(namespace)) = (api, config.namespace.as_deref()) else {
        return;
    };
    if !incluster::valid_name(namespace) {
        return;
    }
    let body = event(config, namespace, reason, message, Utc::now());
    let path = format!("/api/v1/namespaces/{namespace}/events");
    if let Err(e) = api.post(&path, &body).await {
        tracing::warn!(
            "could not record the {reason} Event on postgresql {}: {e}",
            config.scope
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical_backup::config::Overrides;
    use crate::testutil::map;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn event_on_the_postgresql_object() {
        let env = map(&[
            ("SCOPE", "acid-x"),
            ("LOGICAL_BACKUP_S3_BUCKET", "b"),
            ("LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX", "/0a1b-2c"),
        ]);
        let config = Config::from_env(&env, &Overrides::default()).unwrap();
        let now = "2026-12-05T03:15:00Z".parse().unwrap();
        let e = event(&config, "team", REASON_FAILED, &"x".repeat(5000), now);
        assert_eq!(e["involvedObject"]["kind"], "postgresql");
        assert_eq!(e["involvedObject"]["apiVersion"], "acid.zalan.do/v1");
        assert_eq!(e["involvedObject"]["name"], "acid-x");
        assert_eq!(e["involvedObject"]["uid"], "0a1b-2c");
        assert_eq!(e["metadata"]["namespace"], "team");
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["lastTimestamp"], "2026-12-05T03:15:00Z");
        assert_eq!(e["message"].as_str().unwrap().len(), 1000);
        assert_eq!(
            event(&config, "team", REASON_OK, "m", now)["type"],
            "Normal"
        );
    }

    #[test]
    fn retention_line_only_when_something_went() {
        assert_eq!(retention(&Decision::default()), None);
        let d = Decision {
            backups: vec!["20261201T000000Z".into()],
            incomplete: vec![],
            zalando: vec!["1.sql.gz".into()],
        };
        assert_eq!(
            retention(&d).unwrap(),
            "retention: deleted 1 backup(s) [20261201T000000Z], 1 Zalando dump(s) [1.sql.gz], 0 interrupted run(s) []"
        );
    }
}
