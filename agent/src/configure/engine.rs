//! Which tool serves an envdir: pgherd's native engine, or WAL-G / WAL-E in compatibility mode.
//!
//! `configure` records the choice in the envdir itself (`PGHERD_BACKUP_ENGINE`), so every command that
//! receives `--envdir` (archive, restore, clone, replica creation, scheduled backups) agrees with the others.
//! Envdirs written before that file existed fall back to Spilo's own switches.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::envdir_vars as vars;

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
}
