//! The instruction channel (a key of Patroni's dynamic configuration, read and written through each
//! member's own REST API) and the one DCS write Patroni's REST API does not offer: resetting the
//! `initialize` key so the new system identifier can be recorded.

use std::path::Path;
use std::time::Duration;

use pgherd_shared::patroni::{self, Client};
use serde_json::{json, Value};

use super::plan::{Instruction, MemberReport, DCS_KEY};
use super::StepResult;
use crate::process::RunAs;

pub async fn read(api: &Client) -> StepResult<Option<Instruction>> {
    let config = api.config().await.map_err(|e| e.to_string())?;
    match config.get(DCS_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("{DCS_KEY} in the dynamic configuration is malformed: {e}")),
    }
}

/// `PATCH /config`, retried: Patroni answers 409 when another member changed the configuration between
/// its read and its compare-and-set write (replicas report concurrently).
pub async fn patch(api: &Client, body: &Value) -> StepResult<()> {
    let mut last = String::new();
    for attempt in 0..20u64 {
        match api.patch_config(body).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                let conflict = matches!(e, patroni::Error::Status { status: 409, .. });
                tokio::time::sleep(Duration::from_millis(if conflict {
                    100 + 50 * attempt
                } else {
                    1000
                }))
                .await;
            }
        }
    }
    Err(format!("updating the dynamic configuration: {last}"))
}

/// Publishes the leader's fields; replica reports under `members` are left as they are (deep merge).
pub async fn publish(api: &Client, instr: &Instruction) -> StepResult<()> {
    let mut v = serde_json::to_value(instr).map_err(|e| e.to_string())?;
    if let Some(o) = v.as_object_mut() {
        o.remove("members");
        // Keys that became None must be removed, not left at their previous value.
        for key in ["outcome", "checkpoint_lsn", "rsync", "old_sysid", "message"] {
            o.entry(key).or_insert(Value::Null);
        }
    }
    patch(api, &json!({ DCS_KEY: v })).await
}

/// Starts a new instruction, dropping every report of an earlier run.
pub async fn replace(api: &Client, instr: &Instruction) -> StepResult<()> {
    patch(api, &json!({ DCS_KEY: null })).await?;
    patch(api, &json!({ DCS_KEY: instr })).await
}

pub async fn report(api: &Client, me: &str, report: &MemberReport) -> StepResult<()> {
    patch(api, &json!({ DCS_KEY: { "members": { me: report } } })).await
}

pub async fn set_pause(api: &Client, pause: bool) -> StepResult<()> {
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
