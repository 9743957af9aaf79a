//! Which tool serves an envdir: pgherd's native engine, or WAL-G / WAL-E in compatibility mode.
//!
//! `configure` records the choice in the envdir itself (`PGHERD_BACKUP_ENGINE`), so every command that
//! receives `--envdir` (archive, restore, clone, replica creation, scheduled backups) agrees with the others.
//! Envdirs written before that file existed fall back to Spilo's own switches.

use std::collections::BTreeMap;
use std::path::Path;

pub const ENGINE_FILE: &str = "PGHERD_BACKUP_ENGINE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Native,
    WalG,
    WalE,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::WalG => "wal-g",
            Engine::WalE => "wal-e",
        }
    }

    pub fn parse(s: &str) -> Option<Engine> {
        match s.to_ascii_lowercase().as_str() {
            "native" | "pgherd" => Some(Engine::Native),
            "wal-g" | "walg" => Some(Engine::WalG),
            "wal-e" | "wale" => Some(Engine::WalE),
            _ => None,
        }
    }

    /// The engine for restoring WAL from this envdir.
    pub fn for_restore(vars: &BTreeMap<String, Option<String>>) -> Engine {
        Self::recorded(vars).unwrap_or_else(|| {
            if is_true(vars, "USE_WALG_RESTORE") {
                Engine::WalG
            } else {
                Engine::WalE
            }
        })
    }

    /// The engine for archiving and base backups from this envdir.
    pub fn for_backup(vars: &BTreeMap<String, Option<String>>) -> Engine {
        Self::recorded(vars).unwrap_or_else(|| {
            if is_true(vars, "USE_WALG_BACKUP") {
                Engine::WalG
            } else {
                Engine::WalE
            }
        })
    }

    fn recorded(vars: &BTreeMap<String, Option<String>>) -> Option<Engine> {
        vars.get(ENGINE_FILE)
            .cloned()
            .flatten()
            .as_deref()
            .and_then(Engine::parse)
    }

    /// The binary of a compatibility-mode engine.
    pub fn binary(self) -> &'static str {
        match self {
            Engine::Native => "pgherd-agent",
            Engine::WalG => "wal-g",
            Engine::WalE => "wal-e",
        }
    }
}

fn is_true(vars: &BTreeMap<String, Option<String>>, k: &str) -> bool {
    vars.get(k)
        .cloned()
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Reads an envdir (runit semantics) for engine decisions and for the environment of WAL-G/WAL-E.
pub fn read_envdir(dir: &Path) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    crate::envdir::read(dir)
}

/// The command line WAL-G/WAL-E get for `wal-fetch` in Spilo's restore_command.sh, as (program, args, env).
/// Patroni fetching for pg_rewind passes a destination ending in the file name; Spilo downloads those one
/// at a time (no prefetch into a directory pg_rewind does not expect).
pub fn compat_fetch(
    engine: Engine,
    name: &str,
    dest: &str,
) -> (String, Vec<String>, Vec<(String, String)>) {
    let for_rewind = dest.ends_with(&format!("/{name}"));
    match engine {
        Engine::WalG => {
            let env = if for_rewind {
                vec![("WALG_DOWNLOAD_CONCURRENCY".into(), "1".into())]
            } else {
                vec![]
            };
            (
                "wal-g".into(),
                vec!["wal-fetch".into(), name.into(), dest.into()],
                env,
            )
        }
        _ => {
            let pool = if for_rewind { "0" } else { "8" };
            (
                "wal-e".into(),
                vec![
                    "wal-fetch".into(),
                    "-p".into(),
                    pool.into(),
                    name.into(),
                    dest.into(),
                ],
                vec![],
            )
        }
    }
}

/// WAL-G/WAL-E `backup-push` as postgres_backup.sh ran it (without its bugs: the caller checks the exit
/// status and runs retention only after success).
pub fn compat_backup_push(
    engine: Engine,
    pgdata: &str,
    vars: &BTreeMap<String, Option<String>>,
    cpus: usize,
) -> (String, Vec<String>, Vec<(String, String)>) {
    match engine {
        Engine::WalG => {
            let mut env = vec![];
            if let Some(Some(m)) = vars.get("WALG_BACKUP_COMPRESSION_METHOD") {
                env.push(("WALG_COMPRESSION_METHOD".to_string(), m.clone()));
            }
            (
                "wal-g".into(),
                vec!["backup-push".into(), pgdata.into()],
                env,
            )
        }
        _ => {
            let pool = cpus.clamp(1, 4).to_string();
            (
                "wal-e".into(),
                vec![
                    "backup-push".into(),
                    pgdata.into(),
                    "--pool-size".into(),
                    pool,
                ],
                vec![],
            )
        }
    }
}

/// WAL-G retention after a successful scheduled backup: keep the newest `keep` full backups (at least 2,
/// as postgres_backup.sh enforced) and the WAL they need.
pub fn compat_retention(keep: usize) -> Vec<String> {
    [
        "delete",
        "retain",
        "FULL",
        &keep.max(2).to_string(),
        "--confirm",
    ]
    .map(str::to_string)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(p: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
        p.iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn recorded_choice_wins_then_spilo_switches() {
        assert_eq!(
            Engine::for_restore(&vars(&[
                ("PGHERD_BACKUP_ENGINE", "native"),
                ("USE_WALG_RESTORE", "true")
            ])),
            Engine::Native
        );
        assert_eq!(
            Engine::for_restore(&vars(&[("USE_WALG_RESTORE", "true")])),
            Engine::WalG
        );
        assert_eq!(Engine::for_restore(&vars(&[])), Engine::WalE);
        assert_eq!(
            Engine::for_backup(&vars(&[("USE_WALG_BACKUP", "TRUE")])),
            Engine::WalG
        );
        assert_eq!(
            Engine::for_backup(&vars(&[("PGHERD_BACKUP_ENGINE", "wal-g")])),
            Engine::WalG
        );
    }

    #[test]
    fn compat_command_lines_match_spilo_scripts() {
        let (p, a, e) = compat_fetch(
            Engine::WalG,
            "000000010000000000000003",
            "pg_wal/RECOVERYXLOG",
        );
        assert_eq!(
            (p.as_str(), a.join(" ")),
            (
                "wal-g",
                "wal-fetch 000000010000000000000003 pg_wal/RECOVERYXLOG".into()
            )
        );
        assert!(e.is_empty());
        let (_, _, e) = compat_fetch(
            Engine::WalG,
            "000000010000000000000003",
            "/d/pg_wal/000000010000000000000003",
        );
        assert_eq!(
            e,
            [("WALG_DOWNLOAD_CONCURRENCY".to_string(), "1".to_string())]
        );
        let (p, a, _) = compat_fetch(Engine::WalE, "00000002.history", "pg_wal/RECOVERYHISTORY");
        assert_eq!(
            (p.as_str(), a.join(" ")),
            (
                "wal-e",
                "wal-fetch -p 8 00000002.history pg_wal/RECOVERYHISTORY".into()
            )
        );
        let (p, a, e) = compat_backup_push(
            Engine::WalG,
            "/pgdata",
            &vars(&[("WALG_BACKUP_COMPRESSION_METHOD", "brotli")]),
            8,
        );
        assert_eq!(
            (p.as_str(), a.join(" ")),
            ("wal-g", "backup-push /pgdata".into())
        );
        assert_eq!(
            e,
            [("WALG_COMPRESSION_METHOD".to_string(), "brotli".to_string())]
        );
        assert_eq!(
            compat_retention(5).join(" "),
            "delete retain FULL 5 --confirm"
        );
        assert_eq!(
            compat_retention(1).join(" "),
            "delete retain FULL 2 --confirm"
        );
        let (p, a, _) = compat_backup_push(Engine::WalE, "/pgdata", &vars(&[]), 8);
        assert_eq!(
            (p.as_str(), a.join(" ")),
            ("wal-e", "backup-push /pgdata --pool-size 4".into())
        );
    }
}
