//! The local member as the upgrade sees it: identity and REST API from the rendered Patroni configuration,
//! switching that configuration to the new major, and restarting Patroni so it re-reads it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_shared::patroni;
use serde_json::Value;

use super::StepResult;
use crate::configure::yaml::to_yaml;
use crate::local::Local;

/// What the upgrade needs from `postgres.yml` besides [`Local`].
#[derive(Debug, Clone)]
pub struct Member {
    pub config_path: PathBuf,
    pub name: String,
    pub api: patroni::Client,
    pub local: Local,
    pub replication_user: String,
    /// Never logged: it authenticates replicas to the primary's rsync daemon.
    pub replication_password: String,
}

impl Member {
    pub fn load(config_path: &Path) -> StepResult<Self> {
        let local = Local::load(config_path).map_err(|e| e.to_string())?;
        let doc = read_yaml(config_path)?;
        // Spilo (and configure) put the member name in postgresql.name; Patroni falls back to it.
        let name = doc["name"]
            .as_str()
            .or(doc["postgresql"]["name"].as_str())
            .ok_or_else(|| format!("{}: name is missing", config_path.display()))?
            .to_string();
        let address = doc["restapi"]["connect_address"]
            .as_str()
            .or(doc["restapi"]["listen"].as_str())
            .ok_or_else(|| {
                format!(
                    "{}: restapi.connect_address is missing",
                    config_path.display()
                )
            })?;
        let scheme = if doc["restapi"]["certfile"].is_string() {
            "https"
        } else {
            "http"
        };
        let repl = &doc["postgresql"]["authentication"]["replication"];
        Ok(Self {
            config_path: config_path.to_path_buf(),
            name,
            api: patroni::Client::new(format!("{scheme}://{address}")),
            local,
            replication_user: repl["username"].as_str().unwrap_or("standby").to_string(),
            replication_password: repl["password"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Points `postgresql.bin_dir` at the new major and drops preload libraries it does not have (the
    /// pre-check refused libraries in use; this covers entries Postgres never loaded). Written atomically
    /// with the original mode and owner. `configure` renders the same on the next start, because the data
    /// directory's PG_VERSION then names the new major.
    pub fn switch_config(&self, new_bin: &Path, pkglibdir: Option<&Path>) -> StepResult<()> {
        let mut doc = read_yaml(&self.config_path)?;
        switch_bin_dir(&mut doc, new_bin, pkglibdir);
        write_like(&self.config_path, to_yaml(&doc).as_bytes())
    }

    /// Restarts Patroni so it reads the switched configuration and the new system identifier (Patroni caches
    /// both for its lifetime). SIGTERM, never SIGKILL: a paused Patroni exits without touching Postgres, and
    /// `pgherd-agent run` starts it again after its one-second backoff.
    pub async fn restart_patroni(&self, timeout: Duration) -> StepResult<()> {
        let pid = patroni_pid(&self.config_path).ok_or_else(|| {
            format!(
                "no Patroni process with {} found",
                self.config_path.display()
            )
        })?;
        tracing::info!(
            pid,
            "restarting Patroni (SIGTERM; pgherd-agent run starts it again)"
        );
        if let Err(e) = crate::supervise::patroni::request_restart(
            &self.config_path,
            "major upgrade: loading the new configuration",
        ) {
            tracing::warn!(
                "cannot tell the supervisor about the restart ({e}); it will report a crash"
            );
        }
        kill(Pid::from_raw(pid), Signal::SIGTERM)
            .map_err(|e| format!("signalling Patroni {pid}: {e}"))?;
        let deadline = Instant::now() + timeout;
        while pgherd_shared::proctree::alive(pid) {
            if Instant::now() > deadline {
                return Err(format!(
                    "Patroni {pid} did not exit within {timeout:?} after SIGTERM"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            if patroni_pid(&self.config_path).is_some() && self.api.status().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("Patroni did not come back within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

pub fn read_yaml(path: &Path) -> StepResult<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Pure part of [`Member::switch_config`].
pub fn switch_bin_dir(doc: &mut Value, new_bin: &Path, pkglibdir: Option<&Path>) {
    let pg = &mut doc["postgresql"];
    pg["bin_dir"] = Value::String(new_bin.display().to_string());
    let Some(libdir) = pkglibdir else { return };
    if let Some(list) = pg["parameters"]["shared_preload_libraries"].as_str() {
        let kept: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty() && libdir.join(format!("{l}.so")).exists())
            .collect();
        pg["parameters"]["shared_preload_libraries"] = Value::String(kept.join(","));
    }
}

/// Replaces `path` atomically, keeping its mode and owner.
pub fn write_like(path: &Path, contents: &[u8]) -> StepResult<()> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = path.with_extension("upgrade.tmp");
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    std::fs::write(&tmp, contents).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io)?;
    let _ = nix::unistd::chown(
        &tmp,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
    );
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The Patroni process serving `config`: its command line names the config file and a `patroni` program.
pub fn patroni_pid(config: &Path) -> Option<i32> {
    let config = config.as_os_str().to_string_lossy().into_owned();
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_patroni = args
            .iter()
            .take(2)
            .any(|a| a.ends_with("/patroni") || a == "patroni");
        (is_patroni && args.contains(&config)).then_some(pid)
    })
}

/// Whether `pid` is still a `pgherd-agent upgrade` process (not a zombie, not a reused pid).
pub fn runner_alive(pid: u32) -> bool {
    runner_args(pid).is_some()
}

/// Whether `pid` is a `pgherd-agent upgrade --recover` (the watcher's, not a person's).
pub fn runner_is_recovery(pid: u32) -> bool {
    runner_args(pid).is_some_and(|args| args.iter().any(|a| a == b"--recover"))
}

fn runner_args(pid: u32) -> Option<Vec<Vec<u8>>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<Vec<u8>> = cmdline.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    args.iter().any(|a| a == b"upgrade").then_some(args)
}

/// Stops a recovery runner with SIGTERM (SIGKILL after `timeout`); true once it is gone. What it started
/// dies with it (parent-death signals) or is stopped by the run that takes over.
pub async fn stop_runner(pid: u32, timeout: std::time::Duration) -> bool {
    use nix::sys::signal::{kill, Signal};
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(target, Signal::SIGTERM);
    // A stopped process (SIGSTOP, a debugger) only acts on SIGTERM once it runs again.
    let _ = kill(target, Signal::SIGCONT);
    let deadline = tokio::time::Instant::now() + timeout;
    while runner_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            let _ = kill(target, Signal::SIGKILL);
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            return !runner_alive(pid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    true
}

/// Environment of this process as a map (the pod's environment for `run` and `kubectl exec`).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// `$RW_DIR/postgres.yml`, where `configure` writes Patroni's configuration.
pub fn config_path(env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(p) = env.get(crate::local::CONFIG_VAR) {
        return PathBuf::from(p);
    }
    rw_dir(env).join("postgres.yml")
}

/// Spilo's `RW_DIR` (default `/run`), where the status file and Patroni's configuration live.
pub fn rw_dir(env: &BTreeMap<String, String>) -> PathBuf {
    PathBuf::from(env.get("RW_DIR").map(String::as_str).unwrap_or("/run"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn switching_points_at_the_new_bin_dir_and_drops_missing_libraries() {
        let lib = tempfile::tempdir().unwrap();
        std::fs::write(lib.path().join("pg_cron.so"), "").unwrap();
        let mut doc = json!({"postgresql": {"bin_dir": "/usr/lib/postgresql/15/bin",
            "parameters": {"shared_preload_libraries": "pg_stat_statements, pg_cron"}}});
        switch_bin_dir(&mut doc, Path::new("/opt/pg16/bin"), Some(lib.path()));
        assert_eq!(doc["postgresql"]["bin_dir"], "/opt/pg16/bin");
        assert_eq!(
            doc["postgresql"]["parameters"]["shared_preload_libraries"],
            "pg_cron"
        );
    }

    #[test]
    fn atomic_rewrite_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("postgres.yml");
        std::fs::write(&p, "a: 1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_like(&p, b"a: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a: 2\n");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }
}
