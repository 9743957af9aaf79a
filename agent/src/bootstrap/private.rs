//! A PostgreSQL server only this process can reach: no TCP listener, a socket in a private 0700 directory,
//! its own pg_hba (trust on that socket only) and every setting that matters given on the command line.
//!
//! A clone's data directory carries the *source* cluster's configuration: its postgresql.conf with paths to
//! certificates and include files of another pod, preload libraries that may not exist for this major,
//! archiving to the source's storage. Starting it as it is could fail, or worse, archive into the source's
//! WAL location. So clones replay WAL and upgrade with this server, and Patroni starts the result with its
//! own configuration afterwards. Settings on the command line also beat `postgresql.auto.conf`.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::backup::catalog::Lsn;
use crate::upgrade::pg::{self, Pg};
use crate::upgrade::StepResult;

/// Where and how far to replay archived WAL (the clone's recovery target).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub restore_command: String,
    pub target_time: Option<String>,
    pub target_lsn: Option<String>,
    pub target_xid: Option<String>,
    pub target_timeline: String,
    pub inclusive: bool,
    /// A replay to the end of the archive must get at least this far (the start of the newest archived
    /// segment on its path); stopping earlier means a file could not be fetched or replayed.
    pub must_reach: Option<Lsn>,
}

/// `pg_controldata` lines naming the source's limits, and the settings that must be at least as high
/// for WAL replay (prepared transactions, locks) to succeed.
const LIMITS: [(&str, &str); 5] = [
    ("max_connections setting", "max_connections"),
    ("max_worker_processes setting", "max_worker_processes"),
    ("max_wal_senders setting", "max_wal_senders"),
    ("max_prepared_xacts setting", "max_prepared_transactions"),
    ("max_locks_per_xact setting", "max_locks_per_transaction"),
];

/// The private directory: socket, an empty main configuration file, pg_hba and pg_ident.
pub struct PrivateDir {
    dir: tempfile::TempDir,
}

impl PrivateDir {
    pub fn new(pg: &Pg) -> StepResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pgherd-pg-")
            .tempdir()
            .map_err(|e| format!("creating a private directory: {e}"))?;
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            pg.chown(&path).map_err(String::from)
        };
        write("postgresql.conf", "")?;
        write("pg_ident.conf", "")?;
        write("pg_hba.conf", "local all all trust\n")?;
        pg.chown(dir.path())?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Settings that keep the data directory's own configuration out of the way (also used for the old
    /// server pg_upgrade starts).
    pub fn isolation(&self) -> Vec<(String, String)> {
        let at = |f: &str| self.path().join(f).display().to_string();
        vec![
            ("config_file".into(), at("postgresql.conf")),
            ("hba_file".into(), at("pg_hba.conf")),
            ("ident_file".into(), at("pg_ident.conf")),
            ("shared_preload_libraries".into(), String::new()),
            ("ssl".into(), "off".into()),
            ("archive_mode".into(), "off".into()),
            ("logging_collector".into(), "off".into()),
            ("log_destination".into(), "stderr".into()),
        ]
    }

    /// [`Self::isolation`] as one option string for `pg_upgrade -o` (which hands it to a shell).
    pub fn isolation_options(&self) -> String {
        self.isolation()
            .iter()
            .map(|(k, v)| format!("-c {k}='{}'", v.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Every `-c` setting of a private server: isolation, no TCP, the private socket, and for a recovery the
/// source's limits (from its control file) and the target.
pub fn settings(
    dir: &PrivateDir,
    port: u16,
    controldata: &BTreeMap<String, String>,
    recovery: Option<&Recovery>,
) -> Vec<(String, String)> {
    let mut out = dir.isolation();
    out.extend([
        ("listen_addresses".to_string(), String::new()),
        ("port".into(), port.to_string()),
        (
            "unix_socket_directories".into(),
            dir.path().display().to_string(),
        ),
        ("unix_socket_permissions".into(), "0700".into()),
        // A backup of a standby carries its streaming and cleanup settings in postgresql.auto.conf.
        ("primary_conninfo".into(), String::new()),
        ("primary_slot_name".into(), String::new()),
        ("recovery_end_command".into(), String::new()),
        ("archive_cleanup_command".into(), String::new()),
    ]);
    // Crash recovery replays prepared transactions and locks too, not only archive recovery.
    for (line, name) in LIMITS {
        if let Some(v) = controldata.get(line).filter(|v| !v.is_empty()) {
            out.push((name.into(), v.clone()));
        }
    }
    let Some(r) = recovery else {
        return out;
    };
    // Nobody needs to query during replay; without hot standby the limits above are not compared to
    // the source's either.
    out.push(("hot_standby".into(), "off".into()));
    out.push(("restore_command".into(), r.restore_command.clone()));
    out.push(("recovery_target_timeline".into(), r.target_timeline.clone()));
    let target = [
        ("recovery_target_time", &r.target_time),
        ("recovery_target_lsn", &r.target_lsn),
        ("recovery_target_xid", &r.target_xid),
    ];
    for (name, value) in target {
        if let Some(v) = value {
            out.push((name.into(), v.clone()));
            out.push(("recovery_target_action".into(), "promote".into()));
            out.push(("recovery_target_inclusive".into(), r.inclusive.to_string()));
        }
    }
    out
}

/// A running private server; stopped (fast) by [`PrivateServer::stop`], killed if dropped running.
pub struct PrivateServer {
    child: Child,
    /// The same installation, with `local` pointing at the private socket.
    pub pg: Pg,
    bin: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl PrivateServer {
    /// Starts `<bin>/postgres` on `pg.data()`; with `recovery`, as a targeted archive recovery that
    /// promotes at the end.
    pub fn start(
        pg: &Pg,
        bin: &Path,
        dir: &PrivateDir,
        recovery: Option<&Recovery>,
    ) -> StepResult<Self> {
        let data = pg.data().to_path_buf();
        let controldata = pg.controldata(bin, &data)?;
        // A backup taken from a standby holds standby.signal, which would win over recovery.signal and
        // never promote; without a recovery, recovery.signal would ask for a restore_command.
        let mut signals = vec!["standby.signal"];
        if recovery.is_none() {
            signals.push("recovery.signal");
        }
        for name in signals {
            let file = data.join(name);
            if file.exists() {
                tracing::info!("removing {name} from the copy: the clone is promoted");
                std::fs::remove_file(&file)
                    .map_err(|e| format!("removing {}: {e}", file.display()))?;
            }
        }
        if recovery.is_some() {
            let signal = data.join("recovery.signal");
            std::fs::write(&signal, "")
                .map_err(|e| format!("writing {}: {e}", signal.display()))?;
            pg.chown(&signal)?;
        }
        let mut cmd = pg.command(bin.join("postgres"));
        cmd.arg("-D").arg(&data);
        for (k, v) in settings(dir, pg.local.port, &controldata, recovery) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Patroni cancelling the bootstrap must not leave a postmaster on a directory it then removes.
        crate::process::children::die_with_parent(&mut cmd, Signal::SIGQUIT);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}/postgres: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(|l| l.ok())
                {
                    // Patroni logs what its bootstrap command prints: replay progress stays visible.
                    eprintln!("{line}");
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() == 20 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let mut private = pg.clone();
        private.local.socket_dirs = vec![dir.path().to_path_buf()];
        Ok(Self {
            child,
            pg: private,
            bin: bin.to_path_buf(),
            log,
        })
    }

    /// The server's last log lines that say why it stopped (FATAL/PANIC first).
    fn why(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let severe: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
            .collect();
        let lines: Vec<&String> = if severe.is_empty() {
            log.iter().rev().take(3).rev().collect()
        } else {
            severe
        };
        lines
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Waits until the server accepts connections out of recovery (after a targeted recovery: promoted).
    /// Replay can take hours, so there is no deadline; a server that exits ends the wait with its reason.
    pub async fn wait_ready(&mut self, what: &str) -> StepResult<tokio_postgres::Client> {
        let started = Instant::now();
        let mut reported = Instant::now();
        let mut last;
        let conninfo = format!("{} connect_timeout=5", self.pg.local.conninfo("postgres"));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the log reader a moment to drain the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(format!(
                    "{what}: PostgreSQL exited ({status}): {}",
                    self.why()
                ));
            }
            match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                        Ok(row) if !row.get::<_, bool>(0) => return Ok(c),
                        Ok(_) => last = "in recovery".into(),
                        Err(e) => last = pg::db_error(&e),
                    }
                }
                Err(e) => {
                    use tokio_postgres::error::SqlState;
                    let fatal = [
                        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                        SqlState::INVALID_PASSWORD,
                        SqlState::INVALID_CATALOG_NAME,
                    ];
                    if e.code().is_some_and(|c| fatal.contains(c)) {
                        return Err(format!(
                            "{what}: the server runs but refuses {:?}: {}",
                            self.pg.local.superuser,
                            pg::db_error(&e)
                        ));
                    }
                    last = pg::db_error(&e);
                }
            }
            if reported.elapsed() > Duration::from_secs(60) {
                tracing::info!(
                    "{what}: still in progress after {} s ({last})",
                    started.elapsed().as_secs()
                );
                reported = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Fast shutdown and a check that the control file says so (pg_upgrade and Patroni need a clean stop).
    pub fn stop(mut self) -> StepResult<()> {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for PostgreSQL to stop: {e}"))?;
        let state = self
            .pg
            .controldata(&self.bin, self.pg.data())?
            .get("Database cluster state")
            .cloned()
            .unwrap_or_default();
        if state != "shut down" {
            return Err(format!(
                "PostgreSQL did not shut down cleanly ({status}, pg_controldata: {state:?}): {}",
                self.why()
            ));
        }
        Ok(())
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT);
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PrivateDir {
        PrivateDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn get<'a>(s: &'a [(String, String)], k: &str) -> Vec<&'a str> {
        s.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn isolated_from_the_data_directory_and_the_network() {
        let d = dir();
        let s = settings(&d, 5433, &BTreeMap::new(), None);
        assert_eq!(get(&s, "listen_addresses"), [""]);
        assert_eq!(get(&s, "shared_preload_libraries"), [""]);
        assert_eq!(get(&s, "archive_mode"), ["off"]);
        assert_eq!(
            get(&s, "config_file"),
            [d.path().join("postgresql.conf").to_str().unwrap()]
        );
        assert_eq!(
            get(&s, "unix_socket_directories"),
            [d.path().to_str().unwrap()]
        );
        assert!(get(&s, "restore_command").is_empty());
        assert!(get(&s, "hot_standby").is_empty());
        assert_eq!(get(&s, "primary_conninfo"), [""]);
    }

    #[test]
    fn recovery_carries_the_sources_limits_and_one_target() {
        let d = dir();
        let cd: BTreeMap<String, String> = [
            ("max_prepared_xacts setting", "7"),
            ("max_connections setting", "300"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = Recovery {
            restore_command: "pgherd-agent restore-command --envdir \"/e\" \"%f\" \"%p\"".into(),
            target_lsn: Some("0/3000060".into()),
            target_timeline: "latest".into(),
            inclusive: false,
            ..Recovery::default()
        };
        let s = settings(&d, 5432, &cd, Some(&r));
        assert_eq!(get(&s, "max_prepared_transactions"), ["7"]);
        assert_eq!(get(&s, "max_connections"), ["300"]);
        assert_eq!(get(&s, "hot_standby"), ["off"]);
        assert_eq!(get(&s, "recovery_target_lsn"), ["0/3000060"]);
        assert_eq!(get(&s, "recovery_target_action"), ["promote"]);
        assert_eq!(get(&s, "recovery_target_inclusive"), ["false"]);
        assert!(get(&s, "recovery_target_time").is_empty());
        // The latest state: replay to the end of the archive, no target and no action.
        let latest = settings(
            &d,
            5432,
            &cd,
            Some(&Recovery {
                target_lsn: None,
                ..r
            }),
        );
        assert!(get(&latest, "recovery_target_action").is_empty());
        assert_eq!(get(&latest, "restore_command").len(), 1);
    }

    #[test]
    fn pg_upgrade_options_survive_the_shell() {
        let d = dir();
        let opts = d.isolation_options();
        assert!(opts.contains("-c shared_preload_libraries=''"));
        assert!(opts.contains(&format!(
            "-c hba_file='{}'",
            d.path().join("pg_hba.conf").display()
        )));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {opts}; do echo \"$a\"; done"))
            .output()
            .unwrap();
        let words = String::from_utf8(out.stdout).unwrap();
        assert!(words.lines().any(|l| l == "shared_preload_libraries="));
        assert_eq!(words.lines().filter(|l| *l == "-c").count(), 8);
    }
}
