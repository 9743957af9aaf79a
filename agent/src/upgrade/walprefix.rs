//! WAL storage prefixes carry the major version (`…/spilo/<scope>/wal/15`): WAL and base backups of
//! different majors must not mix. `configure` renders the new version on the next start; until then the
//! envdir written at the last start still names the old one, so the upgrade switches it, as Spilo's
//! `update_configs` did, before the new major archives its first segment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::StepResult;

/// The main WAL envdir of the member whose environment is `env`.
pub fn envdir(env: &BTreeMap<String, String>) -> PathBuf {
    crate::backup::settings::main_envdir(|k| env.get(k).cloned())
}

/// The new value of a `WALE_*_PREFIX`/`WALG_*_PREFIX` file, if it names the old version.
pub fn switched(name: &str, value: &str, from: &str, to: &str) -> Option<String> {
    let is_prefix =
        (name.starts_with("WALE_") || name.starts_with("WALG_")) && name.ends_with("_PREFIX");
    let base = value.trim_end().strip_suffix(&format!("/wal/{from}"))?;
    is_prefix.then(|| format!("{base}/wal/{to}"))
}

/// Rewrites the prefixes in `dir`; returns the files changed. A missing envdir (no WAL storage) is fine.
pub fn switch(dir: &Path, from: &str, to: &str) -> StepResult<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut changed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(value) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(new) = switched(&name, &value, from, to) {
            super::member::write_like(&entry.path(), new.as_bytes())?;
            changed.push(name);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versioned_prefixes_change() {
        assert_eq!(
            switched("WALG_S3_PREFIX", "s3://b/spilo/demo/wal/15", "15", "16").as_deref(),
            Some("s3://b/spilo/demo/wal/16")
        );
        assert_eq!(
            switched("WALE_S3_PREFIX", "s3://b/spilo/demo/wal/15\n", "15", "16").as_deref(),
            Some("s3://b/spilo/demo/wal/16")
        );
        assert_eq!(
            switched("WALG_S3_PREFIX", "s3://b/x/wal/14", "15", "16"),
            None
        );
        assert_eq!(
            switched("AWS_ENDPOINT", "http://h/wal/15", "15", "16"),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("WALG_S3_PREFIX"), "s3://b/spilo/c/wal/15").unwrap();
        std::fs::write(dir.path().join("AWS_REGION"), "eu").unwrap();
        assert_eq!(switch(dir.path(), "15", "16").unwrap(), ["WALG_S3_PREFIX"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("WALG_S3_PREFIX")).unwrap(),
            "s3://b/spilo/c/wal/16"
        );
        assert!(switch(&dir.path().join("missing"), "15", "16")
            .unwrap()
            .is_empty());
    }
}
