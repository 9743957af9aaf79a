//! The instruction channel (a key of Patroni's dynamic configuration, read and written through each
//! member's own REST API) and the one DCS write Patroni's REST API does not offer: resetting the
//! `initialize` key so the new system identifier can be recorded.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use pgherd_shared::patroni::{self, Client};
use serde_json::{json, Value};

use super::plan::{Instruction, MemberReport, DCS_KEY};
use super::StepResult;
use crate::process::RunAs;

/// The two calls the instruction channel makes on Patroni's dynamic configuration. A seam so the channel's
/// rules (conflict retries, which keys a publish clears, reports kept or dropped) are tested in
/// milliseconds against an in-memory twin; the upgrade tests on real Patroni stay the end-to-end proof.
pub trait DynamicConfig: Sync {
    /// `GET /config`.
    fn config(&self) -> impl Future<Output = Result<Value, patroni::Error>> + Send;
    /// `PATCH /config`: Patroni merges the body into what is stored; `null` removes a key.
    fn patch_config(&self, body: &Value)
        -> impl Future<Output = Result<(), patroni::Error>> + Send;
}

impl DynamicConfig for Client {
    async fn config(&self) -> Result<Value, patroni::Error> {
        Client::config(self).await
    }

    async fn patch_config(&self, body: &Value) -> Result<(), patroni::Error> {
        Client::patch_config(self, body).await
    }
}

/// The instruction's optional fields. A publish sets each one it leaves out to `null`: serde skips a `None`,
/// and a merge patch keeps whatever a key it does not mention held before.
const CLEARABLE: [&str; 6] = [
    "outcome",
    "checkpoint_lsn",
    "rsync",
    "old_sysid",
    "message",
    "runner",
];

pub async fn read(api: &impl DynamicConfig) -> StepResult<Option<Instruction>> {
    let config = api.config().await.map_err(|e| e.to_string())?;
    match config.get(DCS_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("{DCS_KEY} in the dynamic configuration is malformed: {e}")),
    }
}

/// How [`patch`] retries: as data, so tests run the loop without its waits.
struct Retry {
    attempts: u32,
    /// A conflict clears as soon as the other writer is done: retry soon, a little later each time.
    conflict_first: Duration,
    conflict_step: Duration,
    /// Anything else (Patroni restarting, the DCS unreachable) takes seconds to clear.
    other: Duration,
}

/// About 12 s of conflicts or 20 s of an unreachable Patroni before a step fails.
const RETRY: Retry = Retry {
    attempts: 20,
    conflict_first: Duration::from_millis(100),
    conflict_step: Duration::from_millis(50),
    other: Duration::from_secs(1),
};

impl Retry {
    fn delay(&self, error: &patroni::Error, attempt: u32) -> Duration {
        match error {
            patroni::Error::Status { status: 409, .. } => {
                self.conflict_first + self.conflict_step * attempt
            }
            _ => self.other,
        }
    }
}

/// `PATCH /config`, retried: Patroni answers 409 when another member changed the configuration between
/// its read and its compare-and-set write (replicas report concurrently).
pub async fn patch(api: &impl DynamicConfig, body: &Value) -> StepResult<()> {
    patch_with(api, body, &RETRY).await
}

async fn patch_with(api: &impl DynamicConfig, body: &Value, retry: &Retry) -> StepResult<()> {
    let mut last = String::new();
    for attempt in 0..retry.attempts {
        match api.patch_config(body).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tokio::time::sleep(retry.delay(&e, attempt)).await;
                last = e.to_string();
            }
        }
    }
    Err(format!("updating the dynamic configuration: {last}"))
}

/// Publishes the leader's fields; replica reports under `members` are left as they are (deep merge).
pub async fn publish(api: &impl DynamicConfig, instr: &Instruction) -> StepResult<()> {
    let mut v = serde_json::to_value(instr).map_err(|e| e.to_string())?;
    if let Some(o) = v.as_object_mut() {
        o.remove("members");
        for key in CLEARABLE {
            o.entry(key).or_insert(Value::Null);
        }
    }
    patch(api, &json!({ DCS_KEY: v })).await
}

/// Starts a new instruction, dropping every report of an earlier run.
pub async fn replace(api: &impl DynamicConfig, instr: &Instruction) -> StepResult<()> {
    patch(api, &json!({ DCS_KEY: null })).await?;
    patch(api, &json!({ DCS_KEY: instr })).await
}

pub async fn report(api: &impl DynamicConfig, me: &str, report: &MemberReport) -> StepResult<()> {
    patch(api, &json!({ DCS_KEY: { "members": { me: report } } })).await
}

pub async fn set_pause(api: &impl DynamicConfig, pause: bool) -> StepResult<()> {
    patch(api, &json!({ "pause": pause })).await
}

/// Removes the DCS `initialize` key if it still holds `old_sysid`, with Patroni's own DCS code (the same
/// `get_dcs(...).cancel_initialization()` patronictl uses), so every DCS Patroni supports works. The leader
/// then records the new system identifier itself once it holds the leader lock again.
pub fn cancel_initialization(
    patroni_program: &Path,
    config: &Path,
    old_sysid: &str,
    run_as: Option<RunAs>,
) -> StepResult<String> {
    let text = std::fs::read_to_string(patroni_program)
        .map_err(|e| format!("reading {}: {e}", patroni_program.display()))?;
    let python = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| format!("{} has no interpreter line", patroni_program.display()))?;
    let mut parts = python.split_whitespace();
    let mut cmd = std::process::Command::new(parts.next().unwrap_or("python3"));
    cmd.args(parts)
        .args(["-c", CANCEL_PY])
        .arg(config)
        .arg(old_sysid);
    if let Some(r) = run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(r.uid.as_raw()).gid(r.gid.as_raw());
    }
    let out = cmd.output().map_err(|e| format!("running {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "resetting the DCS initialize key failed: {}",
            super::pg::tail_of(&out, 4)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

const CANCEL_PY: &str = r#"
import sys
from patroni.config import Config
from patroni.dcs import get_dcs
try:
    config = Config(sys.argv[1], validator=None)
except TypeError:
    config = Config(sys.argv[1])
dcs = get_dcs(config)
cluster = dcs.get_cluster()
if cluster.initialize == sys.argv[2]:
    print("cancelled" if dcs.cancel_initialization() else "failed")
else:
    print("kept %s" % cluster.initialize)
"#;

#[cfg(test)]
#[path = "dcs_tests.rs"]
mod tests;
