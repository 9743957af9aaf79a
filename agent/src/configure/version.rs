//! Which PostgreSQL binaries to run, and the extension lists that depend on the version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::env::Env;
use super::Error;

pub const LIB_DIR: &str = "/usr/lib/postgresql";

/// Installations outside [`LIB_DIR`], as `<major>=<bin dir>[,<major>=<bin dir>…]` (e.g.
/// `16=/opt/pg16/bin`). A major upgrade needs the old and the new major side by side; where the second one
/// cannot live under `/usr/lib/postgresql` (tests, custom images), this names it without replacing the
/// system-wide layout. A mapped major wins over `/usr/lib/postgresql/<major>/bin`.
pub const BIN_DIRS_VAR: &str = "PGHERD_PG_BIN_DIRS";

/// Parses [`BIN_DIRS_VAR`]; an empty or absent value maps nothing.
pub fn extra_bin_dirs(raw: Option<&str>) -> Result<BTreeMap<Major, PathBuf>, String> {
    let mut out = BTreeMap::new();
    for item in raw.unwrap_or_default().split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let (v, dir) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not <major>=<bin dir>"))?;
        let major = Major::parse(v).ok_or_else(|| format!("{v:?} is not a major version"))?;
        if !Path::new(dir.trim()).is_absolute() {
            return Err(format!("{dir:?} is not an absolute path"));
        }
        out.insert(major, PathBuf::from(dir.trim()));
    }
    Ok(out)
}

/// Where the binaries of `version` live: the [`BIN_DIRS_VAR`] mapping, else `/usr/lib/postgresql/<v>/bin`.
/// An unparsable mapping is ignored here; `configure` rejects it with a message naming the variable.
pub fn bin_dir_for(vars: &BTreeMap<String, String>, version: &Major) -> PathBuf {
    extra_bin_dirs(vars.get(BIN_DIRS_VAR).map(String::as_str))
        .ok()
        .and_then(|mut m| m.remove(version))
        .unwrap_or_else(|| version.bin_dir())
}

/// A major version as it appears in paths: `9.6` below 10, `15` from 10 on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Major {
    major: u32,
    minor: u32,
}

impl Major {
    pub fn parse(text: &str) -> Option<Major> {
        let text = text.trim();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match text.split_once('.') {
            None if digits(text) => text
                .parse()
                .ok()
                .filter(|&m| m >= 10)
                .map(|major| Major { major, minor: 0 }),
            Some((a, b)) if digits(a) && digits(b) => {
                let major: u32 = a.parse().ok()?;
                (major < 10).then_some(Major {
                    major,
                    minor: b.parse().ok()?,
                })
            }
            _ => None,
        }
    }

    /// Spilo compares versions as floats (`9.6`, `15.0`); so do the extension bounds below.
    fn as_f64(&self) -> f64 {
        format!("{}.{}", self.major, self.minor)
            .parse()
            .unwrap_or(0.0)
    }

    pub fn bin_dir(&self) -> PathBuf {
        Path::new(LIB_DIR).join(self.to_string()).join("bin")
    }

    /// Reads the version back out of `/usr/lib/postgresql/<v>/bin`.
    pub fn from_bin_dir(bin_dir: &str) -> Option<Major> {
        let rest = bin_dir
            .trim_end_matches('/')
            .strip_prefix(LIB_DIR)?
            .strip_prefix('/')?;
        let (version, bin) = rest.split_once('/')?;
        (bin == "bin").then(|| Major::parse(version)).flatten()
    }
}

impl std::fmt::Display for Major {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.major < 10 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}", self.major)
        }
    }
}

/// Installed PostgreSQL versions (`/usr/lib/postgresql/<v>/bin/postgres` executable), each with the shared
/// libraries found next to it (None when the lib directory could not be read).
pub type Installed = BTreeMap<Major, Option<BTreeSet<String>>>;

/// Spilo's rule for `postgresql.bin_dir`: an existing data directory pins its own version (so a cluster is not
/// started by a newer major before it is upgraded); else the user's `bin_dir`; else `PGVERSION`; else the newest
/// installed version (Spilo ran `postgres --version` from PATH, which in its image is the newest).
pub fn resolve_bin_dir(
    env: &Env,
    data_dir_version: Option<&str>,
    user_bin_dir: Option<&str>,
    installed: &Installed,
) -> Result<(String, Major), Error> {
    if let Some(text) = data_dir_version {
        match Major::parse(text) {
            Some(v) if installed.contains_key(&v) => {
                return Ok((bin_dir_for(env.vars(), &v).display().to_string(), v))
            }
            _ => env.warn(format!(
                "the data directory is PostgreSQL {text:?} but {LIB_DIR}/{text}/bin/postgres is not installed"
            )),
        }
    }
    let pgversion = match env.get("PGVERSION") {
        Some(text) => Some(Major::parse(text).ok_or_else(|| {
            Error::invalid(
                "PGVERSION",
                format!("{text:?} is not a PostgreSQL major version"),
            )
        })?),
        None => None,
    };
    if let Some(bin_dir) = user_bin_dir {
        let version = Major::from_bin_dir(bin_dir).or(pgversion).ok_or_else(|| {
            Error::invalid(
                "SPILO_CONFIGURATION",
                format!("cannot tell the PostgreSQL version of postgresql.bin_dir {bin_dir:?}; set PGVERSION"),
            )
        })?;
        return Ok((bin_dir.to_string(), version));
    }
    let newest = installed.keys().next_back();
    let version = match (pgversion, newest) {
        (Some(v), _) if installed.is_empty() || installed.contains_key(&v) => v,
        (Some(v), Some(newest)) => {
            env.warn(format!(
                "PGVERSION={v} is not installed under {LIB_DIR}; using {newest}"
            ));
            newest.clone()
        }
        (None, Some(newest)) => newest.clone(),
        (_, None) => {
            return Err(Error::invalid(
                "PGVERSION",
                format!("not set and no PostgreSQL found under {LIB_DIR}/<version>/bin"),
            ))
        }
    };
    Ok((
        bin_dir_for(env.vars(), &version).display().to_string(),
        version,
    ))
}

/// (name, min, max, in shared_preload_libraries, in extwlist.extensions) — Spilo's table, upper bound included.
const EXTENSIONS: [(&str, f64, f64, bool, bool); 5] = [
    ("timescaledb", 9.6, 17.0, true, true),
    ("pg_cron", 9.5, 17.0, true, false),
    ("pg_stat_kcache", 9.4, 17.0, true, false),
    ("pg_partman", 9.4, 17.0, false, true),
    ("pg_mon", 11.0, 17.0, true, false),
];

/// Spilo's `append_extensions`: keep `base` (dropping known extensions not applicable to `version`) and append
/// the applicable ones. `pg_mon` only with `ENABLE_PG_MON`.
pub fn append_extensions(base: &str, version: &Major, extwlist: bool, pg_mon: bool) -> String {
    let v = version.as_f64();
    let table: Vec<_> = EXTENSIONS
        .iter()
        .filter(|e| pg_mon || e.0 != "pg_mon")
        .collect();
    let applicable = |name: &str| match table.iter().find(|e| e.0 == name) {
        None => true,
        Some(&&(_, min, max, preload, whitelisted)) => {
            min <= v && v <= max && if extwlist { whitelisted } else { preload }
        }
    };
    let mut out: Vec<&str> = Vec::new();
    for name in base
        .split(',')
        .map(str::trim)
        .chain(table.iter().map(|e| e.0))
    {
        if !out.contains(&name) && applicable(name) {
            out.push(name);
        }
    }
    out.join(",")
}

/// Drops preload libraries whose `.so` is not installed next to the binaries: Postgres refuses to start with a
/// missing preload library, and Spilo's list assumes Spilo's image. `libraries` None means "cannot tell", and
/// then nothing is dropped.
pub fn drop_missing_libraries(
    env: &Env,
    list: &str,
    libraries: Option<&BTreeSet<String>>,
) -> String {
    let Some(libraries) = libraries.filter(|l| !l.is_empty()) else {
        return list.to_string();
    };
    let (kept, dropped): (Vec<&str>, Vec<&str>) =
        list.split(',').partition(|name| libraries.contains(*name));
    if !dropped.is_empty() {
        env.warn(format!(
            "shared_preload_libraries: {} not installed, left out (set it in SPILO_CONFIGURATION to override)",
            dropped.join(", ")
        ));
    }
    kept.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(versions: &[&str]) -> Installed {
        versions
            .iter()
            .map(|v| (Major::parse(v).unwrap(), None))
            .collect()
    }

    use crate::testutil::map as vars;

    #[test]
    fn major_versions() {
        assert_eq!(Major::parse("15").unwrap().to_string(), "15");
        assert_eq!(Major::parse("9.6").unwrap().to_string(), "9.6");
        for bad in ["abc", "15.2", "9", "", "1 5", "-15", "10.1"] {
            assert!(Major::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            Major::from_bin_dir("/usr/lib/postgresql/16/bin/")
                .unwrap()
                .to_string(),
            "16"
        );
        assert!(Major::from_bin_dir("/opt/pg/bin").is_none());
    }

    #[test]
    fn data_directory_pins_the_version() {
        let v = vars(&[("PGVERSION", "17")]);
        let env = Env::new(&v);
        let (dir, ver) = resolve_bin_dir(
            &env,
            Some("15\n"),
            Some("/usr/lib/postgresql/17/bin"),
            &installed(&["15", "17"]),
        )
        .unwrap();
        assert_eq!(
            (dir.as_str(), ver.to_string().as_str()),
            ("/usr/lib/postgresql/15/bin", "15")
        );
    }

    #[test]
    fn user_bin_dir_then_pgversion_then_newest() {
        let v = vars(&[("PGVERSION", "16")]);
        let env = Env::new(&v);
        let all = installed(&["15", "16", "17"]);
        assert_eq!(
            resolve_bin_dir(&env, None, Some("/usr/lib/postgresql/17/bin"), &all)
                .unwrap()
                .1
                .to_string(),
            "17"
        );
        assert_eq!(
            resolve_bin_dir(&env, None, None, &all)
                .unwrap()
                .1
                .to_string(),
            "16"
        );
        let none = vars(&[]);
        assert_eq!(
            resolve_bin_dir(&Env::new(&none), None, None, &all)
                .unwrap()
                .1
                .to_string(),
            "17"
        );
        // Nothing installed (a dry run under --root): trust PGVERSION.
        assert_eq!(
            resolve_bin_dir(&env, None, None, &Installed::new())
                .unwrap()
                .0,
            "/usr/lib/postgresql/16/bin"
        );
        // Not installed but others are: the newest, with a warning.
        let v = vars(&[("PGVERSION", "18")]);
        let env = Env::new(&v);
        assert_eq!(
            resolve_bin_dir(&env, None, None, &all)
                .unwrap()
                .1
                .to_string(),
            "17"
        );
        assert_eq!(env.take_warnings().len(), 1);
    }

    #[test]
    fn mapped_installation_outside_usr_lib() {
        let v = vars(&[
            ("PGVERSION", "15"),
            (BIN_DIRS_VAR, "16=/opt/pg16/bin, 9.6=/opt/old/bin"),
        ]);
        let env = Env::new(&v);
        let (dir, ver) =
            resolve_bin_dir(&env, Some("16"), None, &installed(&["15", "16"])).unwrap();
        assert_eq!(
            (dir.as_str(), ver.to_string().as_str()),
            ("/opt/pg16/bin", "16")
        );
        let (dir, _) = resolve_bin_dir(&env, None, None, &installed(&["15", "16"])).unwrap();
        assert_eq!(dir, "/usr/lib/postgresql/15/bin");
        assert_eq!(
            extra_bin_dirs(v.get(BIN_DIRS_VAR).map(String::as_str))
                .unwrap()
                .len(),
            2
        );
        for bad in ["16", "x=/a", "16=relative/bin"] {
            assert!(extra_bin_dirs(Some(bad)).is_err(), "{bad}");
        }
        assert!(extra_bin_dirs(None).unwrap().is_empty());
    }

    #[test]
    fn bad_pgversion() {
        let v = vars(&[("PGVERSION", "abc")]);
        let err = resolve_bin_dir(&Env::new(&v), None, None, &installed(&["15"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PGVERSION: \"abc\" is not a PostgreSQL major version"
        );
        let err =
            resolve_bin_dir(&Env::new(&vars(&[])), None, None, &Installed::new()).unwrap_err();
        assert!(err.to_string().starts_with("PGVERSION: not set"), "{err}");
        let err = resolve_bin_dir(
            &Env::new(&vars(&[])),
            None,
            Some("/opt/pg/bin"),
            &Installed::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("set PGVERSION"), "{err}");
    }

    #[test]
    fn extensions_like_spilo() {
        let base = "bg_mon,pg_stat_statements,pgextwlist,pg_auth_mon,set_user";
        let v15 = Major::parse("15").unwrap();
        assert_eq!(
            append_extensions(base, &v15, false, false),
            "bg_mon,pg_stat_statements,pgextwlist,pg_auth_mon,set_user,timescaledb,pg_cron,pg_stat_kcache"
        );
        assert_eq!(
            append_extensions(base, &v15, false, true),
            "bg_mon,pg_stat_statements,pgextwlist,pg_auth_mon,set_user,timescaledb,pg_cron,pg_stat_kcache,pg_mon"
        );
        assert_eq!(
            append_extensions("a,b", &v15, true, true),
            "a,b,timescaledb,pg_partman"
        );
        // Spilo's hard upper bound: nothing is appended past 17.
        assert_eq!(
            append_extensions("a", &Major::parse("18").unwrap(), false, false),
            "a"
        );
        assert_eq!(
            append_extensions("a", &Major::parse("9.5").unwrap(), false, false),
            "a,pg_cron,pg_stat_kcache"
        );
    }

    #[test]
    fn missing_libraries_are_dropped_only_when_known() {
        let env_vars = vars(&[]);
        let env = Env::new(&env_vars);
        let libs: BTreeSet<String> = ["pg_stat_statements", "plpgsql"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            drop_missing_libraries(&env, "bg_mon,pg_stat_statements", Some(&libs)),
            "pg_stat_statements"
        );
        assert!(env.take_warnings()[0].contains("bg_mon not installed"));
        assert_eq!(drop_missing_libraries(&env, "bg_mon", None), "bg_mon");
    }
}
