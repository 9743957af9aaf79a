//! Starting Patroni as a child: who it runs as, what it sees, and where its output goes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::RunAs;
use anyhow::Context;

/// How to start Patroni.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The patroni executable: `PGHERD_PATRONI` or `patroni` from PATH.
    pub program: PathBuf,
    pub config: PathBuf,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub run_as: Option<RunAs>,
}

/// Spawns Patroni in its own process group (so a terminal's Ctrl-C or a group kill aimed at the agent
/// reaches Patroni only through the agent's forwarding) with parent-death SIGTERM, so that even an agent
/// killed with SIGKILL outside a container does not leave Patroni and Postgres running unsupervised.
pub fn spawn(launch: &Launch) -> anyhow::Result<u32> {
    let mut cmd = Command::new(&launch.program);
    cmd.arg(&launch.config)
        .env_clear()
        .envs(&launch.env)
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(r) = launch.run_as {
        cmd.uid(r.uid.as_raw()).gid(r.gid.as_raw());
    }
    crate::process::children::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting Patroni ({})", launch.program.display()))?;
    let pid = child.id();
    if let Some(out) = child.stdout.take() {
        forward_lines(out);
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err);
    }
    // The child is reaped by the supervisor's waitpid(-1) loop, never through `child`.
    drop(child);
    Ok(pid)
}

/// Re-emits Patroni's output through tracing so that it follows the agent's format (JSON in pods).
fn forward_lines(stream: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            // pgherd-agent subcommands run by Patroni already log in the agent's JSON format: pass through.
            if line.starts_with('{') && line.contains("\"level\"") {
                eprintln!("{line}");
                continue;
            }
            let (level, msg) = classify(&line);
            match level {
                Level::Error => tracing::error!(target: "patroni", "{msg}"),
                Level::Warn => tracing::warn!(target: "patroni", "{msg}"),
                Level::Debug => tracing::debug!(target: "patroni", "{msg}"),
                Level::Info => tracing::info!(target: "patroni", "{msg}"),
            }
        }
    });
}

#[derive(Debug, PartialEq, Eq)]
enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Splits Patroni's `2024-01-02 03:04:05,678 INFO: message` into a level and the message (the timestamp
/// is dropped: tracing adds its own). Lines in other shapes (tracebacks) are kept whole at INFO, except
/// Python tracebacks, which are errors.
fn classify(line: &str) -> (Level, &str) {
    const LEVELS: [(&str, Level); 6] = [
        (" CRITICAL: ", Level::Error),
        (" ERROR: ", Level::Error),
        (" WARNING: ", Level::Warn),
        (" INFO: ", Level::Info),
        (" DEBUG: ", Level::Debug),
        (" FATAL: ", Level::Error),
    ];
    let looks_timestamped =
        line.len() > 23 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b' ';
    if looks_timestamped {
        for (tag, level) in LEVELS {
            if let Some(i) = line[19..].find(tag) {
                return (level, &line[19 + i + tag.len()..]);
            }
        }
    }
    if line.starts_with("Traceback") {
        return (Level::Error, line);
    }
    (Level::Info, line)
}

/// A file next to Patroni's configuration saying that the next exit of Patroni was asked for (the upgrade
/// restarts it to load a new `bin_dir`), with the reason: the supervisor then restarts it at once and
/// does not report a crash.
pub fn restart_request(config: &Path) -> PathBuf {
    config.with_file_name("pgherd-patroni-restart")
}

/// Asks for the restart that the next exit of Patroni is (see [`restart_request`]).
pub fn request_restart(config: &Path, reason: &str) -> std::io::Result<()> {
    std::fs::write(restart_request(config), reason)
}

/// Takes a recent restart request, if any (an old one is stale and means nothing).
pub fn take_restart_request(config: &Path) -> Option<String> {
    let path = restart_request(config);
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| {
            t.elapsed()
                .is_ok_and(|age| age < std::time::Duration::from_secs(600))
        });
    let reason = std::fs::read_to_string(&path).ok();
    let _ = std::fs::remove_file(&path);
    reason.filter(|_| fresh)
}

/// The Patroni executable to run.
pub fn program(env: &BTreeMap<String, String>) -> PathBuf {
    env.get("PGHERD_PATRONI")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "patroni".into())
}

/// Directory of the running agent binary, put first on Patroni's PATH.
pub fn agent_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the pgherd-agent binary")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "/".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_request_is_taken_once() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("postgres.yml");
        assert_eq!(take_restart_request(&config), None);
        request_restart(&config, "upgrade to 16").unwrap();
        assert_eq!(
            take_restart_request(&config).as_deref(),
            Some("upgrade to 16")
        );
        assert_eq!(take_restart_request(&config), None);
    }

    #[test]
    fn patroni_levels_are_mapped() {
        assert_eq!(
            classify(
                "2024-01-02 03:04:05,678 INFO: no action. I am (pg-0), the leader with the lock"
            ),
            (
                Level::Info,
                "no action. I am (pg-0), the leader with the lock"
            )
        );
        assert_eq!(
            classify("2024-01-02 03:04:05,678 ERROR: boom").0,
            Level::Error
        );
        assert_eq!(
            classify("2024-01-02 03:04:05,678 WARNING: hm").0,
            Level::Warn
        );
        assert_eq!(
            classify("Traceback (most recent call last):").0,
            Level::Error
        );
        assert_eq!(
            classify("  File \"x.py\", line 1"),
            (Level::Info, "  File \"x.py\", line 1")
        );
    }
}
