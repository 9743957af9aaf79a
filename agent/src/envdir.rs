//! `pgherd-agent envdir DIR PROGRAM [ARGS…]`: run a program with variables from an envdir.
//!
//! Spilo's archive and restore commands are `envdir DIR wal-g …`, relying on runit's envdir (chpst -e).
//! pgherd images do not ship runit, so the agent provides the same semantics: one file per variable, the
//! first line of the file is the value (NUL bytes become newlines, trailing whitespace is trimmed), an
//! empty file removes the variable. The program replaces this process (exec), so exit codes and signals are
//! exactly those of the program.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory with one file per variable.
    pub dir: PathBuf,
    /// Program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// What an envdir does to the environment: `Some(value)` sets, `None` removes.
pub fn read(dir: &Path) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("reading envdir {}", dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.contains('=') || !entry.file_type()?.is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.insert(name, value_of(&bytes));
    }
    Ok(out)
}

fn value_of(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    let first = text
        .split('\n')
        .next()
        .unwrap_or_default()
        .replace('\0', "\n");
    Some(first.trim_end().to_string())
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let vars = read(&args.dir)?;
    let (program, rest) = args
        .command
        .split_first()
        .context("envdir needs a program to run")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("running {}", program.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runit_semantics() {
        assert_eq!(value_of(b"abc"), Some("abc".into()));
        assert_eq!(value_of(b"abc  \nsecond line"), Some("abc".into()));
        assert_eq!(value_of(b"a\0b"), Some("a\nb".into()));
        assert_eq!(value_of(b""), None);
        assert_eq!(value_of(b"\n"), Some(String::new()));
    }

    #[test]
    fn reads_a_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("A"), "1\n").unwrap();
        std::fs::write(d.path().join("EMPTY"), "").unwrap();
        std::fs::write(d.path().join(".hidden"), "x").unwrap();
        let v = read(d.path()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v["A"].as_deref(), Some("1"));
        assert_eq!(v["EMPTY"], None);
        assert!(read(&d.path().join("missing")).is_err());
    }
}
