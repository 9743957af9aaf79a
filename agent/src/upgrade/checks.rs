//! Pre-checks: everything is read, nothing is changed. [`evaluate`] is pure over [`Facts`], so every rule
//! is tested without a cluster; [`gather`] reads the facts from Patroni, the local server and the disk.

use std::path::Path;

use pgherd_shared::patroni;

use super::pg::{self, Pg};

/// Replicas further behind than this are not considered in sync (Spilo's and the operator's limit).
pub const MAX_LAG_BYTES: u64 = 16 * 1024 * 1024;

/// Programs the procedure runs from the new installation.
pub const TARGET_PROGRAMS: [&str; 7] = [
    "postgres",
    "pg_upgrade",
    "initdb",
    "pg_ctl",
    "pg_controldata",
    "pg_config",
    "vacuumdb",
];

#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub expected_members: usize,
    pub cluster: Option<patroni::Cluster>,
    pub me: String,
    pub in_recovery: bool,
    /// `application_name`s of walsenders in state `streaming`.
    pub streaming: Vec<String>,
    pub target: String,
    pub target_bin: String,
    pub target_missing: Vec<String>,
    /// Major reported by the target's `postgres --version`.
    pub target_version: Option<String>,
    /// `name (database)` of installed extensions without a control file in the target.
    pub extensions_missing: Vec<String>,
    pub libraries_missing: Vec<String>,
    pub ssl_problem: Option<String>,
    pub free_bytes: u64,
    pub data_bytes: u64,
    pub rsync_available: bool,
}

/// Space the upgrade needs next to the data: link mode copies only the catalogs and writes new WAL, so a
/// tenth of the data plus a margin for WAL and the pg_upgrade logs is ample.
pub fn required_bytes(data_bytes: u64) -> u64 {
    data_bytes / 10 + 256 * 1024 * 1024
}

/// Every problem found, each a sentence that says what to do. Empty means go.
pub fn evaluate(f: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    match &f.cluster {
        None => out.push("the local Patroni REST API did not answer".into()),
        Some(c) => {
            if c.pause {
                out.push("the cluster is in maintenance mode (paused); resume it first".into());
            }
            if c.members.len() != f.expected_members {
                out.push(format!(
                    "expected {} members but the cluster has {} ({})",
                    f.expected_members,
                    c.members.len(),
                    c.members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            match c.leader() {
                Some(l) if l.name == f.me => {}
                Some(l) => out.push(format!(
                    "run the upgrade on the leader {}, not on {}",
                    l.name, f.me
                )),
                None => out.push("the cluster has no leader".into()),
            }
            for m in c.members.iter().filter(|m| m.name != f.me) {
                if m.is_leader() {
                    continue;
                }
                if !f.streaming.contains(&m.name) {
                    out.push(format!(
                        "replica {} is not streaming from the primary (state {})",
                        m.name, m.state
                    ));
                } else if m.lag_bytes().is_none_or(|lag| lag > MAX_LAG_BYTES) {
                    out.push(format!(
                        "replica {} lags by {} (at most {MAX_LAG_BYTES} bytes allowed)",
                        m.name,
                        m.lag
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or("unknown".into())
                    ));
                }
            }
        }
    }
    if f.in_recovery {
        out.push("the local PostgreSQL is in recovery; run the upgrade on the primary".into());
    }
    if !f.target_missing.is_empty() {
        out.push(format!(
            "PostgreSQL {} binaries missing in {}: {} (install them, or map the version in PGHERD_PG_BIN_DIRS)",
            f.target,
            f.target_bin,
            f.target_missing.join(", ")
        ));
    } else if f.target_version.as_deref() != Some(f.target.as_str()) {
        out.push(format!(
            "{}/postgres is version {}, not {}",
            f.target_bin,
            f.target_version.as_deref().unwrap_or("unknown"),
            f.target
        ));
    }
    if !f.extensions_missing.is_empty() {
        out.push(format!(
            "extensions not available for PostgreSQL {}: {} (install them for the new major or drop them)",
            f.target,
            f.extensions_missing.join(", ")
        ));
    }
    if !f.libraries_missing.is_empty() {
        out.push(format!(
            "shared_preload_libraries not available for PostgreSQL {}: {} (install them or remove them from the configuration)",
            f.target,
            f.libraries_missing.join(", ")
        ));
    }
    if let Some(p) = &f.ssl_problem {
        out.push(p.clone());
    }
    let need = required_bytes(f.data_bytes);
    if f.free_bytes < need {
        out.push(format!(
            "not enough disk space next to the data directory: {} MiB free, {} MiB needed",
            f.free_bytes >> 20,
            need >> 20
        ));
    }
    if !f.rsync_available && f.expected_members > 1 {
        out.push("rsync is not installed (needed to bring replicas to the new major)".into());
    }
    out
}

/// Reads the facts. Errors reading one fact become a problem in it (e.g. no cluster view), not an abort,
/// so the report lists everything at once.
pub async fn gather(
    pg: &Pg,
    api: &patroni::Client,
    me: &str,
    members: usize,
    target: &str,
) -> Facts {
    let mut f = Facts {
        expected_members: members,
        me: me.into(),
        target: target.into(),
        target_bin: pg.new_bin.display().to_string(),
        cluster: api.cluster().await.ok(),
        ..Facts::default()
    };
    f.target_missing = TARGET_PROGRAMS
        .iter()
        .filter(|p| !pg.new_program(p).is_file())
        .map(|p| p.to_string())
        .collect();
    if f.target_missing.is_empty() {
        f.target_version = postgres_major(&pg.new_program("postgres"));
    }
    f.rsync_available = std::process::Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let stat = nix::sys::statvfs::statvfs(&pg.root());
    f.free_bytes = stat.map_or(0, |s| s.blocks_available() * s.fragment_size());
    f.data_bytes = dir_size(pg.data());
    match pg.connect("postgres").await {
        Err(e) => f.ssl_problem = Some(e.to_string()),
        Ok(c) => {
            if let Err(e) = sql_facts(pg, &c, &mut f).await {
                f.ssl_problem = Some(e);
            }
        }
    }
    f
}

async fn sql_facts(pg: &Pg, c: &tokio_postgres::Client, f: &mut Facts) -> super::StepResult<()> {
    let q =
        |e: tokio_postgres::Error| format!("querying the local PostgreSQL: {}", pg::db_error(&e));
    f.in_recovery = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(q)?
        .get(0);
    f.streaming = c
        .query(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        )
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !f.target_missing.is_empty() {
        return Ok(());
    }
    let sharedir = pg.new_config("sharedir")?;
    let pkglibdir = pg.new_config("pkglibdir")?;
    for db in pg.databases(c).await? {
        let dc = pg.connect(&db).await?;
        for row in dc
            .query(
                "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
                &[],
            )
            .await
            .map_err(q)?
        {
            let name: String = row.get(0);
            if !Path::new(&sharedir)
                .join(format!("extension/{name}.control"))
                .exists()
            {
                f.extensions_missing.push(format!("{name} ({db})"));
            }
        }
    }
    let preload: String = c
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await
        .map_err(q)?
        .get(0);
    f.libraries_missing = preload
        .split(',')
        .map(|l| l.trim().trim_matches('"'))
        .filter(|l| !l.is_empty() && !Path::new(&pkglibdir).join(format!("{l}.so")).exists())
        .map(str::to_string)
        .collect();
    let ssl: String = c.query_one("SHOW ssl", &[]).await.map_err(q)?.get(0);
    let hostssl: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_hba_file_rules WHERE type = 'hostssl'",
            &[],
        )
        .await
        .map_err(q)?
        .get(0);
    let configure = pg.new_config("configure")?;
    let target_has_ssl = configure.contains("--with-openssl") || configure.contains("--with-ssl");
    if !target_has_ssl && (ssl == "on" || hostssl > 0) {
        f.ssl_problem = Some(format!(
            "PostgreSQL {} in {} is built without SSL but the cluster uses ssl=on or hostssl lines in pg_hba",
            f.target, f.target_bin
        ));
    }
    Ok(())
}

/// Major of `postgres --version` (`postgres (PostgreSQL) 16.4` → `16`).
pub fn postgres_major(postgres: &Path) -> Option<String> {
    let out = std::process::Command::new(postgres)
        .arg("--version")
        .output()
        .ok()?;
    parse_version_output(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_version_output(text: &str) -> Option<String> {
    let v = text.split_whitespace().nth(2)?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?;
    let major_n: u32 = major.parse().ok()?;
    Some(if major_n < 10 {
        format!("{major}.{}", parts.next()?)
    } else {
        major.to_string()
    })
}

pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn healthy() -> Facts {
        let cluster: patroni::Cluster = serde_json::from_value(json!({"members": [
            {"name": "a", "role": "leader", "state": "running"},
            {"name": "b", "role": "replica", "state": "streaming", "lag": 0},
            {"name": "c", "role": "replica", "state": "streaming", "lag": 1024}]}))
        .unwrap();
        Facts {
            expected_members: 3,
            cluster: Some(cluster),
            me: "a".into(),
            streaming: vec!["b".into(), "c".into()],
            target: "16".into(),
            target_bin: "/pg16/bin".into(),
            target_version: Some("16".into()),
            free_bytes: 10 << 30,
            data_bytes: 1 << 30,
            rsync_available: true,
            ..Facts::default()
        }
    }

    #[test]
    fn a_healthy_cluster_passes() {
        assert_eq!(evaluate(&healthy()), Vec::<String>::new());
    }

    #[test]
    fn each_problem_is_reported_with_what_to_do() {
        let mut f = healthy();
        f.streaming = vec!["b".into()];
        f.target_missing = vec!["pg_upgrade".into()];
        f.extensions_missing = vec!["pg_stat_statements (postgres)".into()];
        f.libraries_missing = vec!["pg_stat_statements".into()];
        f.free_bytes = 1;
        let problems = evaluate(&f);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("replica c is not streaming"));
        assert!(problems[1].contains("binaries missing in /pg16/bin: pg_upgrade"));
        assert!(problems[1].contains("PGHERD_PG_BIN_DIRS"));
        assert!(problems[2].contains("pg_stat_statements (postgres)"));
        assert!(problems[4].contains("disk space"));
    }

    #[test]
    fn membership_leadership_lag_and_pause() {
        let mut f = healthy();
        f.expected_members = 4;
        f.me = "b".into();
        let c = f.cluster.as_mut().unwrap();
        c.pause = true;
        c.members[2].lag = Some(json!(MAX_LAG_BYTES + 1));
        let problems = evaluate(&f).join("\n");
        for want in [
            "maintenance mode",
            "expected 4 members but the cluster has 3",
            "run the upgrade on the leader a",
            "replica c lags",
        ] {
            assert!(problems.contains(want), "{want}: {problems}");
        }
        let mut f = healthy();
        f.target_version = Some("17".into());
        assert!(evaluate(&f)[0].contains("is version 17, not 16"));
    }

    #[test]
    fn versions_and_sizes() {
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 16.4\n").as_deref(),
            Some("16")
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)").as_deref(),
            Some("15")
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6")
        );
        assert_eq!(required_bytes(0), 256 << 20);
    }
}
