//! Typed access to the Spilo environment contract.
//!
//! Spilo handed every variable to a mustache template as a string, so `ALLOW_NOSSL=false` meant *true* and a port
//! of `abc` surfaced as a Patroni crash much later. Here every read states its type; a value that does not parse
//! is an error naming the variable, before anything is written. Where the proper reading of a boolean differs
//! from what Spilo would have done, a warning is collected so upgrades from Spilo are not silently different.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::Error;

/// How Spilo interpreted a boolean-ish variable; used only to warn when our proper parse disagrees.
#[derive(Debug, Clone, Copy)]
pub enum Legacy {
    /// Mustache section: any non-empty string (including `false`) is true.
    NonEmpty,
    /// `str(value).lower() == 'true'`.
    EqTrueIgnoreCase,
    /// Shell `[ "$X" = "true" ]` or Python `== 'true'`.
    EqTrue,
}

impl Legacy {
    fn interpret(self, raw: &str) -> bool {
        match self {
            Legacy::NonEmpty => !raw.is_empty(),
            Legacy::EqTrueIgnoreCase => raw.eq_ignore_ascii_case("true"),
            Legacy::EqTrue => raw == "true",
        }
    }
}

pub struct Env<'a> {
    vars: &'a BTreeMap<String, String>,
    warnings: RefCell<Vec<String>>,
}

impl<'a> Env<'a> {
    pub fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Env {
            vars,
            warnings: RefCell::new(Vec::new()),
        }
    }

    pub fn vars(&self) -> &'a BTreeMap<String, String> {
        self.vars
    }

    /// The value if the variable is set, even when empty. Spilo's `setdefault` semantics: the operator sets
    /// e.g. `WAL_BUCKET_SCOPE_PREFIX=""` precisely to suppress the default.
    pub fn raw(&self, name: &str) -> Option<&'a str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The value if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Non-empty value or `default`.
    pub fn str_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    /// Value if set (even empty), else `default`: for variables where an explicit empty value is meaningful.
    pub fn setdefault(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_string()
    }

    /// An absolute path; relative ones are rejected because every path is re-rooted under `--root`.
    pub fn path_or(&self, name: &str, default: &Path) -> Result<PathBuf, Error> {
        match self.get(name) {
            None => Ok(normalize(default)),
            Some(v) if Path::new(v).is_absolute() => Ok(normalize(Path::new(v))),
            Some(v) => Err(Error::invalid(
                name,
                format!("{v:?} is not an absolute path"),
            )),
        }
    }

    /// A boolean: `true/false/1/0/yes/no/on/off` (any case); empty or unset gives `default`.
    pub fn bool(&self, name: &str, default: bool, legacy: Legacy) -> Result<bool, Error> {
        let Some(raw) = self.raw(name) else {
            return Ok(default);
        };
        let value = if raw.trim().is_empty() {
            default
        } else {
            parse_bool(raw).ok_or_else(|| {
                Error::invalid(
                    name,
                    format!("{raw:?} is not a boolean (use true/false, 1/0, yes/no, on/off)"),
                )
            })?
        };
        if legacy.interpret(raw) != value {
            self.warn(format!(
                "{name}={raw:?} is read as {value}; Spilo would have read it as {}",
                legacy.interpret(raw)
            ));
        }
        Ok(value)
    }

    pub fn port(&self, name: &str, default: u16) -> Result<u16, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(Error::invalid(name, format!("{v:?} is not a port number"))),
            },
        }
    }

    pub fn uint(&self, name: &str, default: u64) -> Result<u64, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::invalid(name, format!("{v:?} is not a non-negative integer"))),
        }
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.warnings.borrow_mut().push(message.into());
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }
}

pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Lexical normalisation like Python's `os.path.abspath` on an absolute path (`..` pops, `.` vanishes), so
/// `$PGROOT/../tmp` yields the same string Spilo wrote.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Renders a parse error position the way every message in this module does.
pub fn yaml_error(err: &serde_yaml_ng::Error) -> String {
    match err.location() {
        Some(loc) => format!(
            "not valid YAML/JSON at line {} column {}: {err}",
            loc.line(),
            loc.column()
        ),
        None => format!("not valid YAML/JSON: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn booleans_accept_the_usual_spellings_in_any_case() {
        for (raw, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("on", true),
        ] {
            assert_eq!(parse_bool(raw), Some(want), "{raw}");
        }
        for (raw, want) in [
            ("false", false),
            ("False", false),
            ("0", false),
            ("NO", false),
            ("off", false),
        ] {
            assert_eq!(parse_bool(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_bool("2"), None);
    }

    #[test]
    fn empty_or_unset_boolean_is_the_default() {
        let vars = env(&[("A", ""), ("B", "  ")]);
        let e = Env::new(&vars);
        assert!(e.bool("A", true, Legacy::EqTrueIgnoreCase).unwrap());
        assert!(!e.bool("B", false, Legacy::EqTrueIgnoreCase).unwrap());
        assert!(e.bool("UNSET", true, Legacy::NonEmpty).unwrap());
    }

    #[test]
    fn bad_boolean_names_the_variable() {
        let vars = env(&[("ALLOW_NOSSL", "sometimes")]);
        let err = Env::new(&vars)
            .bool("ALLOW_NOSSL", false, Legacy::NonEmpty)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ALLOW_NOSSL: \"sometimes\" is not a boolean (use true/false, 1/0, yes/no, on/off)"
        );
    }

    #[test]
    fn warns_where_spilo_string_truthiness_differs() {
        let vars = env(&[("ALLOW_NOSSL", "false"), ("USE_WALG", "1"), ("X", "true")]);
        let e = Env::new(&vars);
        assert!(!e.bool("ALLOW_NOSSL", false, Legacy::NonEmpty).unwrap());
        assert!(e.bool("USE_WALG", false, Legacy::EqTrueIgnoreCase).unwrap());
        assert!(e.bool("X", false, Legacy::NonEmpty).unwrap());
        let warnings = e.take_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("ALLOW_NOSSL=\"false\" is read as false"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("USE_WALG=\"1\" is read as true"),
            "{warnings:?}"
        );
    }

    #[test]
    fn ports_and_integers_are_validated() {
        let vars = env(&[
            ("PGPORT", "abc"),
            ("APIPORT", "70000"),
            ("N", "-1"),
            ("OK", " 5433 "),
        ]);
        let e = Env::new(&vars);
        assert_eq!(
            e.port("PGPORT", 5432).unwrap_err().to_string(),
            "PGPORT: \"abc\" is not a port number"
        );
        assert!(e.port("APIPORT", 8008).is_err());
        assert!(e.uint("N", 5).is_err());
        assert_eq!(e.port("OK", 1).unwrap(), 5433);
        assert_eq!(e.port("UNSET", 5432).unwrap(), 5432);
    }

    #[test]
    fn normalize_matches_python_abspath() {
        assert_eq!(
            normalize(Path::new("/home/postgres/pgdata/pgroot/../tmp")),
            Path::new("/home/postgres/pgdata/tmp")
        );
        assert_eq!(normalize(Path::new("/a/./b//c/")), Path::new("/a/b/c"));
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
    }

    #[test]
    fn relative_paths_are_rejected() {
        let vars = env(&[("RW_DIR", "run")]);
        let err = Env::new(&vars)
            .path_or("RW_DIR", Path::new("/run"))
            .unwrap_err();
        assert_eq!(err.to_string(), "RW_DIR: \"run\" is not an absolute path");
    }
}
