//! Running the PostgreSQL client programs. Connection settings reach them only through the libpq
//! environment the job inherited (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, …), so a
//! password never appears in an argument list or a log line; only `PGHOST` may be replaced by the pod the
//! job chose.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{program} printed no JSON: {output}")]
    Output { program: String, output: String },
    #[error("PostgreSQL at {host} did not accept connections after {attempts} attempts ({last}); check PGHOST/PGPORT and LOGICAL_BACKUP_CONNECT_RETRIES")]
    NotReady {
        host: String,
        attempts: u32,
        last: String,
    },
}

/// Where the programs are and which host they connect to.
#[derive(Debug, Clone)]
pub struct Tools {
    bin_dir: Option<PathBuf>,
    host: Option<String>,
}

/// `/usr/lib/postgresql/{major}/bin` when it holds pg_dump (Zalando's dump.sh does the same with
/// PG_VERSION, so an image with several majors dumps with the server's own), else `PATH`.
pub fn bin_dir(pg_version: Option<&str>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", pg_version?));
    exists(&dir.join("pg_dump")).then_some(dir)
}

impl Tools {
    /// `host`: replaces `PGHOST` for every program (the pod chosen through the API); `None` keeps the
    /// inherited libpq environment as it is.
    pub fn new(pg_version: Option<&str>, host: Option<String>) -> Self {
        Tools {
            bin_dir: bin_dir(pg_version, Path::exists),
            host,
        }
    }

    pub fn host(&self) -> String {
        self.host
            .clone()
            .or_else(|| std::env::var("PGHOST").ok())
            .unwrap_or_else(|| "the default socket".into())
    }

    pub fn command(&self, program: &str) -> Command {
        let path = match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = Command::new(path);
        if let Some(host) = &self.host {
            cmd.env("PGHOST", host);
        }
        cmd.env("PGAPPNAME", "pgherd_logical_backup")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    pub fn spawn(&self, mut cmd: Command) -> Result<Child, Error> {
        let program = program_name(&cmd);
        cmd.spawn()
            .map_err(|source| Error::Spawn { program, source })
    }

    /// Runs `sql` (one statement returning one JSON value) with psql, in `database` or else the one the
    /// libpq environment names (`PGDATABASE`).
    pub async fn query_json(&self, database: Option<&str>, sql: &str) -> Result<Value, Error> {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        if let Some(db) = database {
            cmd.arg(format!("--dbname={}", conninfo_dbname(db)));
        }
        let out = self.output(cmd).await?;
        let text = String::from_utf8_lossy(&out);
        serde_json::from_str(text.trim()).map_err(|_| Error::Output {
            program: "psql".into(),
            output: text.chars().take(200).collect(),
        })
    }

    /// Runs a command to completion; its stdout, or an error with the end of its stderr.
    pub async fn output(&self, mut cmd: Command) -> Result<Vec<u8>, Error> {
        let program = program_name(&cmd);
        let out = cmd.output().await.map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::Failed {
                program,
                status: out.status.to_string(),
                stderr: tail(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(out.stdout)
    }

    /// `pg_isready` until it answers, `attempts` times `delay` apart (Zalando's wait_for_pg).
    pub async fn wait_ready(&self, attempts: u32, delay: Duration) -> Result<(), Error> {
        let mut last = String::new();
        for attempt in 1..=attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
            }
            let mut cmd = self.command("pg_isready");
            cmd.args(["-t", "5"]);
            match self.output(cmd).await {
                Ok(_) => return Ok(()),
                Err(e @ Error::Spawn { .. }) => return Err(e),
                Err(Error::Failed { status, .. }) => last = format!("pg_isready: {status}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::NotReady {
            host: self.host(),
            attempts,
            last,
        })
    }
}

fn program_name(cmd: &Command) -> String {
    Path::new(cmd.as_std().get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Collects a child's stderr in the background (so a chatty program never blocks on a full pipe).
pub fn collect_stderr(stderr: Option<ChildStderr>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_string(&mut text).await;
        }
        text
    })
}

/// The last lines of a program's stderr, on one line (errors are printed as one line).
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// `dbname='…'` for `--dbname`: a bare name containing `=` would be read as a connection string.
pub fn conninfo_dbname(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// An SQL identifier, always quoted (`foo-bar`, spaces, quotes and upper case all survive).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (standard_conforming_strings is on in every supported version).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conninfo_dbname("foo-bar"), "dbname='foo-bar'");
        assert_eq!(conninfo_dbname(r"a'b\c=d"), r"dbname='a\'b\\c=d'");
        assert_eq!(ident(r#"my "db""#), r#""my ""db""""#);
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn bin_dir_of_the_major_when_installed() {
        let yes = |_: &Path| true;
        assert_eq!(
            bin_dir(Some("15"), yes),
            Some(PathBuf::from("/usr/lib/postgresql/15/bin"))
        );
        assert_eq!(bin_dir(Some("17"), |_| false), None);
        assert_eq!(bin_dir(None, yes), None);
    }

    #[test]
    fn tail_is_one_line() {
        let t = tail("a\n\nb\nc\nd\ne\n");
        assert_eq!(t, "b | c | d | e");
    }
}
