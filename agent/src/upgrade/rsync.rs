//! Bringing replicas to the new major without a re-clone, as PostgreSQL's pg_upgrade documentation
//! describes for standbys: the stopped primary serves its data root (`<data>` now upgraded with hard links
//! into `<data>_old`) with an rsync daemon; each stopped replica moves its data to `<data>_old` and runs
//! `rsync --hard-links --size-only`, so files that pg_upgrade linked become local hard links to the
//! replica's own identical files and only the catalogs travel.
//!
//! The daemon listens on the primary's PostgreSQL port (free while it is stopped, and already open between
//! members), accepts only the replicas' addresses and the replication user with the replication password
//! (every member has them; nothing new is put in the DCS), read-only.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::member::Member;
use super::pg::Pg;
use super::plan::RsyncSource;
use super::StepResult;

pub const MODULE: &str = "pgroot";

pub struct Daemon {
    child: Child,
}

/// rsyncd.conf for the primary (pure, tested).
pub fn daemon_config(
    port: u16,
    root: &Path,
    user: &str,
    secrets: &Path,
    pid: &Path,
    hosts: &[String],
) -> String {
    format!(
        "port = {port}\npid file = {}\nuse chroot = false\n\n[{MODULE}]\npath = {}\nread only = true\ntimeout = 600\n\
         auth users = {user}\nsecrets file = {}\nhosts allow = {}\nhosts deny = *\n",
        pid.display(),
        root.display(),
        secrets.display(),
        hosts.join(" ")
    )
}

impl Daemon {
    pub fn start(pg: &Pg, member: &Member, dir: &Path, hosts: &[String]) -> StepResult<Self> {
        let io =
            |e: std::io::Error| format!("preparing the rsync daemon in {}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(io)?;
        pg.chown(dir)?;
        let secrets = dir.join("rsyncd.secrets");
        let conf = dir.join("rsyncd.conf");
        let mut f = std::fs::File::create(&secrets).map_err(io)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        writeln!(
            f,
            "{}:{}",
            member.replication_user, member.replication_password
        )
        .map_err(io)?;
        pg.chown(&secrets)?;
        let text = daemon_config(
            pg.local.port,
            &pg.root(),
            &member.replication_user,
            &secrets,
            &dir.join("rsyncd.pid"),
            hosts,
        );
        std::fs::write(&conf, text).map_err(io)?;
        pg.chown(&conf)?;
        let mut cmd = pg.command("rsync");
        // It holds the primary's PostgreSQL port: it must not outlive an upgrade process that is killed.
        crate::process::children::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
        cmd.args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", conf.display()))
            .arg(format!("--log-file={}", dir.join("rsyncd.log").display()))
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the rsync daemon: {e}"))?;
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("rsyncd.log")).unwrap_or_default();
            return Err(format!(
                "the rsync daemon exited at once ({status}): {}",
                log.trim()
            ));
        }
        tracing::info!(
            port = pg.local.port,
            "rsync daemon serving {}",
            pg.root().display()
        );
        Ok(Self { child })
    }

    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a command line is the daemon [`Daemon::start`] runs with `conf` (pure, tested): a pid alone
/// may have been reused by an unrelated process.
pub fn is_daemon_of(cmdline: &[String], conf: &Path) -> bool {
    let config = format!("--config={}", conf.display());
    cmdline
        .first()
        .is_some_and(|p| Path::new(p).file_name().is_some_and(|n| n == "rsync"))
        && cmdline.iter().any(|a| a == "--daemon")
        && cmdline.contains(&config)
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Stops an rsync daemon that an earlier, killed upgrade process started from `dir` (found by its pid
/// file, else by scanning for its command line), before anything needs the port it holds. Returns the
/// pids stopped.
pub fn stop_leftover(dir: &Path) -> Vec<i32> {
    let conf = dir.join("rsyncd.conf");
    let recorded = std::fs::read_to_string(dir.join("rsyncd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let mut pids: Vec<i32> = recorded
        .into_iter()
        .filter(|p| cmdline(*p).is_some_and(|c| is_daemon_of(&c, &conf)))
        .collect();
    if pids.is_empty() {
        pids = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| cmdline(*p).is_some_and(|c| is_daemon_of(&c, &conf)))
            .collect();
    }
    for &pid in &pids {
        tracing::warn!(
            pid,
            "stopping the rsync daemon an interrupted upgrade left running"
        );
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && cmdline(pid.as_raw()).is_some_and(|c| is_daemon_of(&c, &conf))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if cmdline(pid.as_raw()).is_some_and(|c| is_daemon_of(&c, &conf)) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    pids
}

/// The replica side: the arguments Spilo used, with the directory names taken from the primary.
pub fn client_args(src: &RsyncSource, user: &str, dest_root: &Path) -> Vec<String> {
    let d = &src.data_name;
    let mut args: Vec<String> = [
        "--archive",
        "--delete",
        "--hard-links",
        "--size-only",
        "--omit-dir-times",
        "--no-inc-recursive",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dir in [d.clone(), format!("{d}_old")] {
        args.push(format!("--include=/{dir}/***"));
    }
    for dir in [d.clone(), format!("{d}_old")] {
        args.push(format!("--exclude=/{dir}/pg_wal/*"));
    }
    args.push("--exclude=*".into());
    args.push(format!(
        "rsync://{user}@{}:{}/{MODULE}/",
        src.host, src.port
    ));
    args.push(format!("{}/", dest_root.display()));
    args
}

pub fn pull(pg: &Pg, member: &Member, src: &RsyncSource) -> StepResult<()> {
    let mut cmd: Command = pg.command("rsync");
    cmd.args(client_args(src, &member.replication_user, &pg.root()))
        .env("RSYNC_PASSWORD", &member.replication_password);
    Ok(pg.run("rsync from the primary", cmd).map(drop)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_daemons_are_recognised_by_their_command_line() {
        let conf = Path::new("/run/pgherd/rsync/rsyncd.conf");
        let args = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(is_daemon_of(
            &args(&[
                "/usr/bin/rsync",
                "--daemon",
                "--no-detach",
                "--config=/run/pgherd/rsync/rsyncd.conf"
            ]),
            conf
        ));
        assert!(!is_daemon_of(
            &args(&["rsync", "--daemon", "--config=/other/rsyncd.conf"]),
            conf
        ));
        assert!(!is_daemon_of(
            &args(&[
                "postgres",
                "--daemon",
                "--config=/run/pgherd/rsync/rsyncd.conf"
            ]),
            conf
        ));
        assert!(!is_daemon_of(&args(&["rsync", "--archive"]), conf));
        assert!(stop_leftover(Path::new("/nonexistent-pgherd-dir")).is_empty());
    }

    #[test]
    fn daemon_and_client_agree_on_module_and_directories() {
        let conf = daemon_config(
            5432,
            Path::new("/pg/root"),
            "standby",
            Path::new("/s"),
            Path::new("/p"),
            &["10.0.0.2".into(), "10.0.0.3".into()],
        );
        assert!(conf.contains("port = 5432\n"));
        assert!(conf.contains("[pgroot]\npath = /pg/root\nread only = true"));
        assert!(conf.contains("hosts allow = 10.0.0.2 10.0.0.3\nhosts deny = *"));
        let src = RsyncSource {
            host: "10.0.0.1".into(),
            port: 5432,
            data_name: "data".into(),
        };
        let args = client_args(&src, "standby", Path::new("/pg/root"));
        assert!(args.contains(&"--hard-links".to_string()));
        assert!(args.contains(&"--include=/data_old/***".to_string()));
        assert!(args.contains(&"--exclude=/data/pg_wal/*".to_string()));
        assert_eq!(
            args[args.len() - 2],
            "rsync://standby@10.0.0.1:5432/pgroot/"
        );
        assert_eq!(args[args.len() - 1], "/pg/root/");
    }
}
