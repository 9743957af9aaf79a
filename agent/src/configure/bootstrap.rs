//! How a new cluster comes into being: initdb, a clone (from WAL storage or another cluster via basebackup), or a
//! standby of a remote cluster. Spilo fell back to an empty `initdb` cluster when a clone was misconfigured,
//! which looks like data loss to whoever asked for the clone; here that is an error.

use std::path::PathBuf;

use super::env::{Env, Legacy};
use super::layout::Layout;
use super::walenv::{self, Role, Storage};
use super::Error;

#[derive(Debug, Clone)]
pub enum CloneSource {
    None,
    FromStorage(CloneFromStorage),
    Basebackup(CloneBasebackup),
}

#[derive(Debug, Clone)]
pub struct CloneFromStorage {
    pub storage: Storage,
    /// `CLONE_TARGET_TIME` (empty: latest backup, no recovery target).
    pub target_time: String,
    /// `CLONE_TARGET_LSN` / `CLONE_TARGET_XID` (pgherd additions; at most one target kind is set).
    pub target_lsn: Option<String>,
    pub target_xid: Option<u64>,
    pub target_timeline: String,
    pub pause_at_target: bool,
    pub target_inclusive: bool,
}

#[derive(Debug, Clone)]
pub struct CloneBasebackup {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub pgpass: PathBuf,
}

pub fn clone_plan(env: &Env, layout: &Layout) -> Result<CloneSource, Error> {
    match env.get("CLONE_METHOD") {
        None => Ok(CloneSource::None),
        Some("CLONE_WITH_WALE") => {
            let storage = walenv::detect(env, Role::Clone, layout)?.ok_or_else(|| {
                Error::invalid(
                    "CLONE_METHOD=CLONE_WITH_WALE",
                    "no source configured (set CLONE_WAL_S3_BUCKET+CLONE_SCOPE or CLONE_WALE_S3_PREFIX/\
                     CLONE_WALG_S3_PREFIX, or the GS/SWIFT/AZ equivalents)",
                )
            })?;
            let target_time = env.str_or("CLONE_TARGET_TIME", "");
            let target_lsn = env.get("CLONE_TARGET_LSN").map(str::to_string);
            if let Some(lsn) = &target_lsn {
                let valid = lsn.split_once('/').is_some_and(|(a, b)| {
                    [a, b].iter().all(|x| !x.is_empty() && x.len() <= 8 && x.bytes().all(|c| c.is_ascii_hexdigit()))
                });
                if !valid {
                    return Err(Error::invalid("CLONE_TARGET_LSN", format!("{lsn:?} is not an LSN such as 0/3000060")));
                }
            }
            let target_xid = match env.get("CLONE_TARGET_XID") {
                Some(x) => Some(x.parse::<u64>().map_err(|_| {
                    Error::invalid("CLONE_TARGET_XID", format!("{x:?} is not a transaction id"))
                })?),
                None => None,
            };
            let kinds = [!target_time.is_empty(), target_lsn.is_some(), target_xid.is_some()];
            if kinds.iter().filter(|k| **k).count() > 1 {
                return Err(Error::invalid(
                    "CLONE_TARGET_TIME, CLONE_TARGET_LSN and CLONE_TARGET_XID",
                    "set only one recovery target",
                ));
            }
            Ok(CloneSource::FromStorage(CloneFromStorage {
                storage,
                target_time,
                target_lsn,
                target_xid,
                target_timeline: env.str_or("CLONE_TARGET_TIMELINE", "latest"),
                pause_at_target: env.bool("USE_PAUSE_AT_RECOVERY_TARGET", false, Legacy::NonEmpty)?,
                target_inclusive: env.bool("CLONE_TARGET_INCLUSIVE", true, Legacy::NonEmpty)?,
            }))
        }
        Some("CLONE_WITH_BASEBACKUP") => {
            let required = |name: &str| {
                env.get(name).map(str::to_string).ok_or_else(|| {
                    Error::invalid("CLONE_METHOD=CLONE_WITH_BASEBACKUP", format!("{name} is required"))
                })
            };
            let scope = required("CLONE_SCOPE")?;
            let host = required("CLONE_HOST")?;
            let user = required("CLONE_USER")?;
            let password = required("CLONE_PASSWORD")?;
            Ok(CloneSource::Basebackup(CloneBasebackup {
                host,
                port: env.port("CLONE_PORT", 5432)?,
                user,
                password,
                pgpass: env.path_or("CLONE_PGPASS", &layout.pg_home.join(format!(".pgpass_{scope}")))?,
            }))
        }
        Some(other) => Err(Error::invalid(
            "CLONE_METHOD",
            format!("{other:?} is not CLONE_WITH_WALE or CLONE_WITH_BASEBACKUP (leave it empty for a new cluster)"),
        )),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Standby {
    /// Restore WAL from the remote cluster's archive.
    pub storage: Option<Storage>,
    /// Stream from the remote primary.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub primary_slot_name: Option<String>,
}

impl Standby {
    pub fn is_standby(&self) -> bool {
        self.storage.is_some() || self.host.is_some()
    }
}

/// Spilo only looks for a standby archive when no clone is requested (the streaming source is always used).
pub fn standby_plan(env: &Env, layout: &Layout, cloning: bool) -> Result<Standby, Error> {
    let storage = if cloning {
        if env
            .vars()
            .keys()
            .any(|k| k.starts_with("STANDBY_WAL") && env.has(k))
        {
            env.warn("STANDBY_WAL* variables are ignored while CLONE_METHOD is set (as in Spilo)");
        }
        None
    } else {
        walenv::detect(env, Role::Standby, layout)?
    };
    Ok(Standby {
        storage,
        host: env.get("STANDBY_HOST").map(str::to_string),
        port: match env.get("STANDBY_PORT") {
            Some(_) => Some(env.port("STANDBY_PORT", 5432)?),
            None => None,
        },
        primary_slot_name: env.get("STANDBY_PRIMARY_SLOT_NAME").map(str::to_string),
    })
}

/// The clone source's pgpass line: `host:port:*:user:password` with `\` and `:` escaped.
pub fn pgpass_line(clone: &CloneBasebackup) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!(
        "{}:{}:*:{}:{}",
        escape(&clone.host),
        clone.port,
        escape(&clone.user),
        escape(&clone.password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = [("PGHOME", "/home/postgres")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    fn plan(pairs: &[(&str, &str)]) -> Result<CloneSource, Error> {
        let v = vars(pairs);
        let env = Env::new(&v);
        clone_plan(&env, &Layout::from_env(&env).unwrap())
    }

    #[test]
    fn unknown_method() {
        let err = plan(&[("CLONE_METHOD", "CLONE_WITH_MAGIC")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("CLONE_METHOD: \"CLONE_WITH_MAGIC\" is not CLONE_WITH_WALE"),
            "{err}"
        );
    }

    #[test]
    fn wale_without_source() {
        let err = plan(&[("CLONE_METHOD", "CLONE_WITH_WALE")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("CLONE_METHOD=CLONE_WITH_WALE: no source configured (set CLONE_WAL_S3_BUCKET+CLONE_SCOPE"));
    }

    #[test]
    fn basebackup_requires_host() {
        let err = plan(&[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_SCOPE", "s"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CLONE_METHOD=CLONE_WITH_BASEBACKUP: CLONE_HOST is required"
        );
    }

    #[test]
    fn basebackup_pgpass() {
        let CloneSource::Basebackup(c) = plan(&[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_SCOPE", "src"),
            ("CLONE_HOST", "h"),
            ("CLONE_USER", "u:1"),
            ("CLONE_PASSWORD", "pa:ss\\word"),
        ])
        .unwrap() else {
            panic!("basebackup expected")
        };
        assert_eq!(c.pgpass, PathBuf::from("/home/postgres/.pgpass_src"));
        assert_eq!(pgpass_line(&c), "h:5432:*:u\\:1:pa\\:ss\\\\word");
    }

    #[test]
    fn target_inclusive_false_is_finally_possible() {
        let CloneSource::FromStorage(c) = plan(&[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_WALE_S3_PREFIX", "s3://b/p"),
            ("CLONE_TARGET_INCLUSIVE", "false"),
            ("USE_PAUSE_AT_RECOVERY_TARGET", "false"),
        ])
        .unwrap() else {
            panic!("storage clone expected")
        };
        assert!(!c.target_inclusive && !c.pause_at_target);
        assert_eq!(c.target_timeline, "latest");
    }

    #[test]
    fn standby_port_validated() {
        let v = vars(&[("STANDBY_HOST", "h"), ("STANDBY_PORT", "x")]);
        let env = Env::new(&v);
        let err = standby_plan(&env, &Layout::from_env(&env).unwrap(), false).unwrap_err();
        assert_eq!(err.to_string(), "STANDBY_PORT: \"x\" is not a port number");
    }
}
