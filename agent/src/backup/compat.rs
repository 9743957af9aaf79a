//! WAL-G / WAL-E in compatibility mode: the command lines Spilo's scripts ran, for envdirs whose recorded
//! engine (`configure::engine`) is not the native one.

use std::collections::BTreeMap;

use crate::configure::engine::Engine;

/// The command line WAL-G/WAL-E get for `wal-fetch` in Spilo's restore_command.sh, as (program, args, env).
/// Patroni fetching for pg_rewind passes a destination ending in the file name; Spilo downloads those one
/// at a time (no prefetch into a directory pg_rewind does not expect).
pub fn fetch(
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
pub fn backup_push(
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
pub fn retention(keep: usize) -> Vec<String> {
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
    use crate::testutil::envdir_vars as vars;

    #[test]
    fn command_lines_match_spilo_scripts() {
        let (p, a, e) = fetch(
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
        let (_, _, e) = fetch(
            Engine::WalG,
            "000000010000000000000003",
            "/d/pg_wal/000000010000000000000003",
        );
        assert_eq!(
            e,
            [("WALG_DOWNLOAD_CONCURRENCY".to_string(), "1".to_string())]
        );
        let (p, a, _) = fetch(Engine::WalE, "00000002.history", "pg_wal/RECOVERYHISTORY");
        assert_eq!(
            (p.as_str(), a.join(" ")),
            (
                "wal-e",
                "wal-fetch -p 8 00000002.history pg_wal/RECOVERYHISTORY".into()
            )
        );
        let (p, a, e) = backup_push(
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
        assert_eq!(retention(5).join(" "), "delete retain FULL 5 --confirm");
        assert_eq!(retention(1).join(" "), "delete retain FULL 2 --confirm");
        let (p, a, _) = backup_push(Engine::WalE, "/pgdata", &vars(&[]), 8);
        assert_eq!(
            (p.as_str(), a.join(" ")),
            ("wal-e", "backup-push /pgdata --pool-size 4".into())
        );
    }
}
