//! Where things live: the directory variables of the Spilo image and the paths derived from them.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::env::{normalize, Env};
use super::Error;

#[derive(Debug, Clone)]
pub struct Layout {
    pub rw_dir: PathBuf,
    pub pg_home: PathBuf,
    pub pg_root: PathBuf,
    /// `PGDATA` as given; the Patroni config may still override `postgresql.data_dir`.
    pub pg_data: PathBuf,
    pub pg_log: PathBuf,
    pub wale_tmpdir: PathBuf,
    pub log_tmpdir: PathBuf,
    pub patroni_config: PathBuf,
    pub schedule_file: PathBuf,
    pub certs_dir: PathBuf,
    /// Unix socket directory and home of Patroni's pgpass. Spilo hard-coded `/run/postgresql` here while its
    /// launch script created `$RW_DIR/postgresql`; following RW_DIR is the same path in the image and lets
    /// several members share a machine.
    pub socket_dir: PathBuf,
}

impl Layout {
    /// `postgresql.data_dir` as the merged configuration will have it.
    pub fn data_dir(&self, user: &Map<String, Value>) -> Result<PathBuf, Error> {
        match user
            .get("postgresql")
            .and_then(|p| p.get("data_dir"))
            .and_then(Value::as_str)
        {
            Some(dir) if Path::new(dir).is_absolute() => Ok(PathBuf::from(dir)),
            Some(dir) => Err(Error::invalid(
                "SPILO_CONFIGURATION",
                format!("postgresql.data_dir {dir:?} is not absolute"),
            )),
            None => Ok(self.pg_data.clone()),
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, Error> {
        // Spilo's `~` is the home of whoever runs it; the image always sets PGHOME, so this only matters outside it.
        let home = env
            .get("HOME")
            .filter(|h| Path::new(h).is_absolute())
            .unwrap_or("/home/postgres");
        let pg_home = env.path_or("PGHOME", Path::new(home))?;
        let rw_dir = env.path_or("RW_DIR", Path::new("/run"))?;
        let pg_root = env.path_or("PGROOT", &pg_home.join("pgroot"))?;
        let pg_data = env.path_or("PGDATA", &pg_root.join("pgdata"))?;
        let pg_log = env.path_or("PGLOG", &pg_root.join("pg_log"))?;
        let tmp = normalize(&pg_root.join("../tmp"));
        Ok(Layout {
            wale_tmpdir: env.path_or("WALE_TMPDIR", &tmp)?,
            log_tmpdir: env.path_or("LOG_TMPDIR", &tmp)?,
            patroni_config: rw_dir.join("postgres.yml"),
            schedule_file: rw_dir.join("etc/pgherd/schedule.json"),
            certs_dir: rw_dir.join("certs"),
            socket_dir: rw_dir.join("postgresql"),
            rw_dir,
            pg_home,
            pg_root,
            pg_data,
            pg_log,
        })
    }

    /// Directory holding all WAL envdirs (`$RW_DIR/etc/wal-e.d`).
    pub fn wale_dir(&self) -> PathBuf {
        self.rw_dir.join("etc/wal-e.d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn image_defaults() {
        let vars: BTreeMap<String, String> = [
            ("PGHOME", "/home/postgres"),
            ("RW_DIR", "/run"),
            ("PGROOT", "/home/postgres/pgdata/pgroot"),
            ("PGDATA", "/home/postgres/pgdata/pgroot/data"),
            ("PGLOG", "/home/postgres/pgdata/pgroot/pg_log"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l = Layout::from_env(&Env::new(&vars)).unwrap();
        assert_eq!(l.wale_tmpdir, Path::new("/home/postgres/pgdata/tmp"));
        assert_eq!(l.log_tmpdir, Path::new("/home/postgres/pgdata/tmp"));
        assert_eq!(l.patroni_config, Path::new("/run/postgres.yml"));
        assert_eq!(l.wale_dir(), Path::new("/run/etc/wal-e.d"));
    }

    #[test]
    fn spilo_fallbacks_without_image_env() {
        let vars: BTreeMap<String, String> = [("PGHOME", "/var/lib/pg")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let l = Layout::from_env(&Env::new(&vars)).unwrap();
        assert_eq!(l.pg_root, Path::new("/var/lib/pg/pgroot"));
        assert_eq!(l.pg_data, Path::new("/var/lib/pg/pgroot/pgdata"));
        assert_eq!(l.wale_tmpdir, Path::new("/var/lib/pg/tmp"));
        assert_eq!(l.rw_dir, Path::new("/run"));
    }
}
