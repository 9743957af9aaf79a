//! How subcommands started by Patroni find the local Postgres.
//!
//! Patroni runs callbacks and replica-creation commands with its stripped environment, which carries no
//! port, socket directory or user. `pgherd-agent run` puts the path of the rendered Patroni configuration
//! into that environment as `PGHERD_PATRONI_CONFIG`; this module reads the few facts subcommands need
//! from it, so there is a single source of truth instead of a second set of variables.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Variable through which `run` tells its descendants where the Patroni configuration is.
pub const CONFIG_VAR: &str = "PGHERD_PATRONI_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{CONFIG_VAR} is not set: this command is meant to be started by Patroni under `pgherd-agent run`")]
    NotSet,
    #[error("reading the Patroni configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the Patroni configuration {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("Patroni configuration {path}: {field} {problem}")]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
}

/// The facts about the local member that maintenance subcommands need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub port: u16,
    /// Unix socket directories to try, in order.
    pub socket_dirs: Vec<PathBuf>,
    pub superuser: String,
    /// The replication user (the one `local replication` trusts in Spilo's pg_hba).
    pub replication_user: String,
    pub data_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    /// This member's Patroni REST API on loopback (`restapi.listen`); `None` when it serves TLS only.
    pub api_url: Option<String>,
}

impl Local {
    /// Loads from the path in `PGHERD_PATRONI_CONFIG`.
    pub fn from_env() -> Result<Self, Error> {
        let path = std::env::var_os(CONFIG_VAR).ok_or(Error::NotSet)?;
        Self::load(Path::new(&path))
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|source| Error::Parse {
            path: path.into(),
            source,
        })?;
        Self::from_value(&doc).map_err(|(field, problem)| Error::Field {
            path: path.into(),
            field,
            problem,
        })
    }

    /// Pure extraction, separate from I/O for tests.
    pub fn from_value(doc: &Value) -> Result<Self, (&'static str, String)> {
        let pg = &doc["postgresql"];
        let listen = pg["listen"]
            .as_str()
            .ok_or(("postgresql.listen", "is missing".to_string()))?;
        let port_text = listen.rsplit(':').next().unwrap_or_default();
        let port = port_text
            .parse()
            .map_err(|_| ("postgresql.listen", format!("{listen:?} has no port")))?;
        let configured: Vec<PathBuf> = pg["parameters"]["unix_socket_directories"]
            .as_str()
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        // Without an explicit setting the server uses its compiled-in default: /var/run/postgresql for
        // Debian's packages, /tmp for upstream builds such as the pgserver wheel.
        let socket_dirs = if configured.is_empty() {
            vec![PathBuf::from("/var/run/postgresql"), PathBuf::from("/tmp")]
        } else {
            configured
        };
        let superuser = pg["authentication"]["superuser"]["username"]
            .as_str()
            .unwrap_or("postgres")
            .to_string();
        let replication_user = pg["authentication"]["replication"]["username"]
            .as_str()
            .unwrap_or("standby")
            .to_string();
        let data_dir = pg["data_dir"]
            .as_str()
            .map(PathBuf::from)
            .ok_or(("postgresql.data_dir", "is missing".to_string()))?;
        let bin_dir = pg["bin_dir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let restapi = &doc["restapi"];
        let api_url = restapi["listen"]
            .as_str()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|_| !restapi["certfile"].is_string())
            .map(|p| format!("http://127.0.0.1:{p}"));
        Ok(Self {
            port,
            socket_dirs,
            superuser,
            replication_user,
            data_dir,
            bin_dir,
            api_url,
        })
    }

    /// The socket directory that has this member's socket, falling back to the first candidate.
    pub fn socket_dir(&self) -> &Path {
        self.socket_dirs
            .iter()
            .find(|d| d.join(format!(".s.PGSQL.{}", self.port)).exists())
            .unwrap_or(&self.socket_dirs[0])
    }

    /// A libpq-style key/value connection string over the local socket.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={dbname}",
            self.socket_dir().display(),
            self.port,
            self.superuser
        )
    }

    /// A replication connection string over the local socket (for pg_basebackup).
    pub fn replication_conninfo(&self) -> String {
        format!(
            "host={} port={} user={}",
            self.socket_dir().display(),
            self.port,
            self.replication_user
        )
    }

    /// Path of a PostgreSQL program: bin_dir when configured, else PATH lookup by name.
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_port_socket_user_and_dirs() {
        let doc = json!({"restapi": {"listen": ":8009"}, "postgresql": {
            "listen": "*:5433", "data_dir": "/d", "bin_dir": "/usr/lib/postgresql/15/bin",
            "parameters": {"unix_socket_directories": "/run/pg, /tmp"},
            "authentication": {"superuser": {"username": "zalando"}}}});
        let l = Local::from_value(&doc).unwrap();
        assert_eq!(l.port, 5433);
        assert_eq!(
            l.socket_dirs,
            [PathBuf::from("/run/pg"), PathBuf::from("/tmp")]
        );
        assert_eq!(l.superuser, "zalando");
        assert_eq!(l.api_url.as_deref(), Some("http://127.0.0.1:8009"));
        let tls = json!({"restapi": {"listen": ":8008", "certfile": "/c"}, "postgresql": {"listen": "*:1", "data_dir": "/d"}});
        assert_eq!(
            Local::from_value(&tls).unwrap().api_url,
            None,
            "the agent's client speaks no TLS"
        );
        assert_eq!(
            l.program("pg_basebackup"),
            PathBuf::from("/usr/lib/postgresql/15/bin/pg_basebackup")
        );
        assert_eq!(
            l.conninfo("postgres"),
            "host=/run/pg port=5433 user=zalando dbname=postgres"
        );
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        let l =
            Local::from_value(&json!({"postgresql": {"listen": "[::]:5432", "data_dir": "/d"}}))
                .unwrap();
        assert_eq!(l.port, 5432);
        assert_eq!(l.superuser, "postgres");
        assert_eq!(l.program("psql"), PathBuf::from("psql"));
        assert_eq!(
            Local::from_value(&json!({"postgresql": {}})).unwrap_err().0,
            "postgresql.listen"
        );
        assert_eq!(
            Local::from_value(&json!({"postgresql": {"listen": "*:x", "data_dir": "/d"}}))
                .unwrap_err()
                .0,
            "postgresql.listen"
        );
    }
}
