//! Small I/O helpers around PostgreSQL programs: running them as the database owner, reading
//! `pg_controldata`, talking SQL over the local socket.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::local::Local;
use crate::process::RunAs;

/// What went wrong running a PostgreSQL program or query. Each message names what was attempted, so the
/// one line the upgrade reports (docs/upgrade.md) says where it stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: cannot run {program:?}: {source}")]
    Spawn {
        what: String,
        program: OsString,
        source: std::io::Error,
    },
    /// The last lines of its output: what pg_upgrade, initdb and pg_ctl say about why.
    #[error("{what} failed ({status}): {output}")]
    Failed {
        what: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{what}: {}", db_error(source))]
    Sql {
        what: String,
        source: tokio_postgres::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("chown {}: {source}", path.display())]
    Chown { path: PathBuf, source: nix::Error },
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The upgrade's steps still carry one-line messages ([`super::StepResult`]); this is where a typed
/// failure becomes one.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Runs PostgreSQL programs as the account that owns the data (root is refused by initdb, pg_ctl and
/// pg_upgrade), and knows the old and new installations.
#[derive(Debug, Clone)]
pub struct Pg {
    pub run_as: Option<RunAs>,
    pub local: Local,
    pub old_bin: PathBuf,
    pub new_bin: PathBuf,
}

impl Pg {
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new(program.as_ref());
        if let Some(r) = self.run_as {
            // std drops root's supplementary groups when it changes the uid.
            cmd.uid(r.uid.as_raw()).gid(r.gid.as_raw());
        }
        cmd.env("LC_ALL", "C.UTF-8");
        cmd
    }

    /// Runs a command to completion; on failure the error carries the last lines of its output.
    pub fn run(&self, what: &str, mut cmd: Command) -> Result<Output> {
        tracing::debug!(?cmd, "running");
        // A killed upgrade must not leave pg_upgrade linking files behind the rollback's back.
        crate::process::children::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
        let out = cmd.output().map_err(|source| Error::Spawn {
            what: what.into(),
            program: cmd.get_program().to_owned(),
            source,
        })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(Error::Failed {
                what: what.into(),
                status: out.status,
                output: tail_of(&out, 6),
            })
        }
    }

    pub fn new_program(&self, name: &str) -> PathBuf {
        self.new_bin.join(name)
    }

    pub fn data(&self) -> &Path {
        &self.local.data_dir
    }

    /// `<PGROOT>`: the data directory's parent, where `<data>_new` and `<data>_old` live.
    pub fn root(&self) -> PathBuf {
        self.data()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    pub fn data_name(&self) -> String {
        self.data()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into())
    }

    pub fn new_data(&self) -> PathBuf {
        self.root().join(format!("{}_new", self.data_name()))
    }

    pub fn old_data(&self) -> PathBuf {
        self.root().join(format!("{}_old", self.data_name()))
    }

    pub fn controldata(&self, bin: &Path, data: &Path) -> Result<BTreeMap<String, String>> {
        let mut cmd = self.command(bin.join("pg_controldata"));
        cmd.arg("-D").arg(data).env("LC_ALL", "C");
        let out = self.run("pg_controldata", cmd)?;
        Ok(parse_controldata(&String::from_utf8_lossy(&out.stdout)))
    }

    /// `pg_ctl stop -m fast` and wait; a server that is not running is fine.
    pub fn stop(&self, bin: &Path, data: &Path, timeout: Duration) -> Result<()> {
        if !data.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut cmd = self.command(bin.join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(data)
            .args(["-m", "fast", "-w", "-t"])
            .arg(timeout.as_secs().to_string());
        self.run("pg_ctl stop", cmd).map(drop)
    }

    /// Stops servers a killed `pg_upgrade` left running (their socket is in its work directory); a
    /// rollback must not move directories under a live postmaster.
    pub fn stop_leftovers_of_pg_upgrade(&self) {
        let work = self.work_dir();
        for (bin, dir) in [
            (&self.new_bin, self.new_data()),
            (&self.old_bin, self.data().to_path_buf()),
        ] {
            let Ok(pid_file) = std::fs::read_to_string(dir.join("postmaster.pid")) else {
                continue;
            };
            if pid_file.lines().nth(4).map(Path::new) == Some(work.as_path()) {
                if let Err(e) = self.stop(bin, &dir, Duration::from_secs(120)) {
                    tracing::warn!(
                        "stopping the server pg_upgrade left in {}: {e}",
                        dir.display()
                    );
                }
            }
        }
    }

    /// A connection over the local socket as the superuser.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let conninfo = format!("{} connect_timeout=5", self.local.conninfo(db));
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .map_err(|source| Error::Sql {
                what: format!("connecting to the local PostgreSQL ({db})"),
                source,
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Databases that accept connections.
    pub async fn databases(&self, c: &tokio_postgres::Client) -> Result<Vec<String>> {
        let rows = c
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
                &[],
            )
            .await
            .map_err(sql("listing databases"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// `pg_config --<what>` of the new installation (`sharedir`, `pkglibdir`, `configure`).
    pub fn new_config(&self, what: &str) -> Result<String> {
        let mut cmd = Command::new(self.new_program("pg_config"));
        cmd.arg(format!("--{what}"));
        let out = self.run("pg_config", cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `<PGROOT>/<data>` of files this run owns, as the data owner (so root-run steps leave nothing
    /// postgres cannot remove later).
    pub fn remove_dir(&self, dir: &Path) -> Result<()> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                what: format!("removing {}", dir.display()),
                source,
            }),
        }
    }

    pub fn chown(&self, path: &Path) -> Result<()> {
        if let Some(r) = self.run_as {
            nix::unistd::chown(path, Some(r.uid), Some(r.gid)).map_err(|source| Error::Chown {
                path: path.into(),
                source,
            })?;
        }
        Ok(())
    }
}

/// What the new cluster must share with the old one for `pg_upgrade` to accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub collate: String,
    pub ctype: String,
    pub encoding: String,
    pub checksums: bool,
    pub wal_segment_bytes: i64,
    /// The bootstrap superuser (OID 10), which pg_upgrade requires to have the same name on both sides.
    pub superuser: String,
}

impl ClusterSettings {
    pub async fn read(c: &tokio_postgres::Client) -> Result<Self> {
        let row = c
            .query_one(
                "SELECT datcollate::text, datctype::text, pg_encoding_to_char(encoding)::text, current_setting('data_checksums'), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), (SELECT rolname FROM pg_authid WHERE oid = 10)::text \
                 FROM pg_database WHERE datname = 'template1'",
                &[],
            )
            .await
            .map_err(sql("reading the cluster's settings"))?;
        Ok(Self {
            collate: row.get(0),
            ctype: row.get(1),
            encoding: row.get(2),
            checksums: row.get::<_, String>(3) == "on",
            wal_segment_bytes: row.get(4),
            superuser: row.get(5),
        })
    }
}

impl Pg {
    /// `<PGROOT>/<data>_upgrade`: pg_upgrade's working directory (its sockets and logs).
    pub fn work_dir(&self) -> PathBuf {
        self.root().join(format!("{}_upgrade", self.data_name()))
    }

    /// initdb of `<data>_new` with the new binaries and the old cluster's locale, encoding, checksums and
    /// WAL segment size; an earlier `<data>_new` and work directory are removed first.
    pub fn init_new_cluster(&self, s: &ClusterSettings) -> Result<()> {
        let new = self.new_data();
        self.remove_dir(&new)?;
        let work = self.work_dir();
        self.remove_dir(&work)?;
        std::fs::create_dir_all(&work).map_err(|source| Error::Io {
            what: format!("creating {}", work.display()),
            source,
        })?;
        self.chown(&work)?;
        let mut initdb = self.command(self.new_program("initdb"));
        initdb
            .arg("-D")
            .arg(&new)
            .args([
                "-U",
                &s.superuser,
                "--encoding",
                &s.encoding,
                "--lc-collate",
                &s.collate,
                "--lc-ctype",
                &s.ctype,
            ])
            .arg(format!("--wal-segsize={}", s.wal_segment_bytes >> 20))
            .current_dir(&work);
        if s.checksums {
            initdb.arg("--data-checksums");
        }
        self.run("initdb of the new cluster", initdb).map(drop)
    }

    /// `pg_upgrade --link` (or `--check`) from the data directory to `<data>_new`. `old_options` are
    /// extra server options for the old cluster (`-c name=value …`).
    pub async fn pg_upgrade(&self, check: bool, old_options: &str) -> Result<()> {
        let port = self.local.port;
        let jobs = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string();
        let mut cmd = self.command(self.new_program("pg_upgrade"));
        cmd.arg("-b")
            .arg(&self.old_bin)
            .arg("-B")
            .arg(&self.new_bin)
            .arg("-d")
            .arg(self.data())
            .arg("-D")
            .arg(self.new_data())
            .args(["-U", &self.local.superuser, "-j", &jobs, "--link"])
            .arg("-s")
            .arg(self.work_dir())
            .args(["-p", &port.to_string(), "-P", &(port + 1).to_string()])
            .arg("-o")
            .arg(format!("-c archive_mode=off {old_options}").trim_end())
            .args(["-O", "-c archive_mode=off"])
            .current_dir(self.work_dir());
        if check {
            cmd.arg("--check");
        }
        let pg = self.clone();
        tokio::task::spawn_blocking(move || pg.run("pg_upgrade", cmd).map(drop)).await?
    }

    /// `ALTER EXTENSION … UPDATE` wherever the new major ships a newer default version. Failures of single
    /// extensions are returned as warnings (the data is fine; the extension keeps its old version).
    pub async fn update_extensions(&self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let c = self.connect("postgres").await?;
        for db in self.databases(&c).await? {
            let dc = self.connect(&db).await?;
            let rows = dc
                .query("SELECT e.extname FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname \
                        WHERE a.default_version IS DISTINCT FROM e.extversion", &[])
                .await
                .map_err(sql(&format!("listing extensions in {db}")))?;
            for row in rows {
                let name: String = row.get(0);
                let sql = format!("ALTER EXTENSION \"{}\" UPDATE", name.replace('"', "\"\""));
                if let Err(e) = dc.batch_execute(&sql).await {
                    warnings.push(format!("{sql} in {db}: {}", db_error(&e)));
                }
            }
        }
        Ok(warnings)
    }

    /// `vacuumdb --all` collecting statistics, which pg_upgrade does not carry over. In stages when the
    /// cluster already serves queries (rough statistics first), in one pass when nobody is waiting.
    pub fn analyze(&self, in_stages: bool) -> Result<()> {
        let mut cmd = self.command(self.new_program("vacuumdb"));
        cmd.args([
            "--all",
            if in_stages {
                "--analyze-in-stages"
            } else {
                "--analyze-only"
            },
            "-U",
            &self.local.superuser,
            "-p",
            &self.local.port.to_string(),
        ])
        .arg("-h")
        .arg(self.local.socket_dir());
        if !in_stages {
            let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
            cmd.arg(format!("--jobs={jobs}"));
        }
        self.run("vacuumdb", cmd).map(drop)
    }
}

/// tokio-postgres prints server errors as just "db error"; the server's message is what helps.
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

/// Attaches what was being done to a failed query.
fn sql(what: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |source| Error::Sql {
        what: what.into(),
        source,
    }
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| Error::Io {
        what: format!("renaming {} to {}", from.display(), to.display()),
        source,
    })
}

pub fn tail_of(out: &Output, n: usize) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// `Key:   value` lines of `pg_controldata` (run with LC_ALL=C).
pub fn parse_controldata(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `16/B374D848` → bytes.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// PostgreSQL's data directory `PG_VERSION`.
pub fn data_version(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join("PG_VERSION"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_and_lsn() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/3000028\n\
                    Database system identifier:           7311111111111111111\n";
        let c = parse_controldata(text);
        assert_eq!(c["Database cluster state"], "shut down");
        assert_eq!(parse_lsn(&c["Latest checkpoint location"]), Some(0x3000028));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn failures_read_as_one_line_naming_the_step() {
        let status = Command::new("false").status().unwrap();
        let failed = Error::Failed {
            what: "pg_upgrade".into(),
            status,
            output: "a | b".into(),
        };
        assert_eq!(
            failed.to_string(),
            "pg_upgrade failed (exit status: 1): a | b"
        );
        let missing = Error::Spawn {
            what: "initdb".into(),
            program: "/nope/initdb".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(
            String::from(missing),
            "initdb: cannot run \"/nope/initdb\": entity not found"
        );
        let e = rename(Path::new("/nonexistent/a"), Path::new("/nonexistent/b")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("renaming /nonexistent/a to /nonexistent/b: "),
            "{e}"
        );
    }
}
