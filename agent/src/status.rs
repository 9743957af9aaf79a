//! `pgherd-agent status [--json]`: what an operator wants to see after `kubectl exec`: the member table
//! from Patroni, the last base backup, and whether WAL archiving works.
//!
//! Backup and archive facts come from the agent's own exporter (`/metrics` on loopback) rather than a second
//! code path: the backup engine reports into the running agent's memory, and the exporter already reads
//! pg_stat_archiver as the least-privileged role. The output is therefore as fresh as the exporter's cache
//! (PGHERD_METRICS_CACHE_TTL, 10 s by default).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use pgherd_shared::patroni;
use serde::Serialize;

use crate::metrics::{self, DEFAULT_PORT};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Patroni REST API base URL [default: from the Patroni config, else http://127.0.0.1:$APIPORT].
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// The agent's metrics endpoint [default: http://127.0.0.1:$PGHERD_METRICS_PORT/metrics].
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Report {
    pub scope: Option<String>,
    pub paused: bool,
    pub members: Vec<MemberRow>,
    pub backup: BackupReport,
    pub archive: ArchiveReport,
    /// Why backup/archive facts are missing, when the exporter could not be read.
    pub exporter_error: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MemberRow {
    pub name: String,
    pub host: Option<String>,
    pub role: String,
    pub state: String,
    pub timeline: Option<u64>,
    /// Bytes behind the leader; `None` for the leader or when Patroni does not know.
    pub lag_bytes: Option<u64>,
    pub pending_restart: bool,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct BackupReport {
    pub last_success_unix: Option<f64>,
    pub last_size_bytes: Option<f64>,
    pub last_stored_bytes: Option<f64>,
    pub count: Option<f64>,
    pub oldest_restorable_unix: Option<f64>,
    pub failed_since_start: Option<f64>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ArchiveReport {
    pub archived_count: Option<f64>,
    pub failed_count: Option<f64>,
    pub last_archived_unix: Option<f64>,
    pub last_failed_unix: Option<f64>,
    /// WAL files waiting for archive_command.
    pub waiting: Option<f64>,
    /// `healthy`, `failing`, `gap` (a WAL file is missing from the archive), `idle` (nothing archived or
    /// failed yet) or `unknown`.
    pub health: String,
    /// The leader's last continuity check of the archive (absent on other members).
    pub continuity: Option<ContinuityReport>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ContinuityReport {
    pub checked_unix: f64,
    /// Files missing between the oldest backup and the newest archived segment.
    pub gap_files: f64,
    pub first_gap: Option<String>,
    /// Per timeline, the end of its newest archived segment (`X/Y`).
    pub newest: Vec<(u32, String)>,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let api = args.api.clone().unwrap_or_else(|| default_api(&env));
    let metrics_url = args.metrics.clone().unwrap_or_else(|| {
        let port = env
            .get("PGHERD_METRICS_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PORT);
        format!("http://127.0.0.1:{port}/metrics")
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cluster, scrape) = rt.block_on(async {
        let cluster = patroni::Client::new(&api)
            .cluster()
            .await
            .with_context(|| format!("reading the member table from Patroni at {api} (is `pgherd-agent run` up? override with --api)"));
        (cluster, fetch(&metrics_url).await)
    });
    let report = build(&cluster?, scrape.map_err(|e| format!("{metrics_url}: {e}")));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Patroni's port from the rendered config (`PGHERD_PATRONI_CONFIG`, else `$RW_DIR/postgres.yml`, else
/// `/run/postgres.yml`), else `$APIPORT`, else 8008.
fn default_api(env: &BTreeMap<String, String>) -> String {
    let config = crate::upgrade::member::config_path(env);
    metrics::patroni_api(&config).unwrap_or_else(|| {
        let port = env.get("APIPORT").map(String::as_str).unwrap_or("8008");
        format!("http://127.0.0.1:{port}")
    })
}

async fn fetch(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

/// Unlabelled samples of an exposition, by name (labelled series are not needed here).
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

/// Samples of a labelled series as (labels, value); labels as `name="value"` pairs.
fn labelled(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once('}')?;
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

fn continuity(text: &str, samples: &BTreeMap<String, f64>) -> Option<ContinuityReport> {
    let checked_unix = *samples.get("pgherd_wal_archive_continuity_check_timestamp_seconds")?;
    let mut newest: Vec<(u32, String)> = labelled(text, "pgherd_wal_archive_newest_end_lsn_bytes")
        .into_iter()
        .filter_map(|(l, v)| {
            let tli = l.get("timeline")?.parse().ok()?;
            Some((tli, crate::backup::catalog::Lsn(v as u64).to_string()))
        })
        .collect();
    newest.sort();
    Some(ContinuityReport {
        checked_unix,
        gap_files: samples
            .get("pgherd_wal_archive_gap_files")
            .copied()
            .unwrap_or(0.0),
        first_gap: labelled(text, "pgherd_wal_archive_first_gap_info")
            .into_iter()
            .find_map(|(l, _)| l.get("file").cloned()),
        newest,
    })
}

pub fn build(cluster: &patroni::Cluster, scrape: Result<String, String>) -> Report {
    let members = cluster
        .members
        .iter()
        .map(|m| MemberRow {
            name: m.name.clone(),
            host: m.host.clone(),
            role: m.role.clone(),
            state: m.state.clone(),
            timeline: m.timeline,
            lag_bytes: if m.is_leader() { None } else { m.lag_bytes() },
            pending_restart: m.pending_restart.unwrap_or(false),
        })
        .collect();
    let (samples, text, exporter_error) = match scrape {
        Ok(text) => (parse_exposition(&text), text, None),
        Err(e) => (BTreeMap::new(), String::new(), Some(e)),
    };
    let get = |n: &str| samples.get(n).copied();
    let backup = BackupReport {
        last_success_unix: get("pgherd_backup_last_success_timestamp_seconds"),
        last_size_bytes: get("pgherd_backup_last_size_bytes"),
        last_stored_bytes: get("pgherd_backup_last_stored_bytes"),
        count: get("pgherd_backup_count"),
        oldest_restorable_unix: get("pgherd_backup_oldest_restorable_timestamp_seconds"),
        failed_since_start: get("pgherd_backup_failed_total"),
    };
    let mut archive = ArchiveReport {
        archived_count: get("pgherd_pg_stat_archiver_archived_count_total"),
        failed_count: get("pgherd_pg_stat_archiver_failed_count_total"),
        last_archived_unix: get("pgherd_pg_stat_archiver_last_archived_time"),
        last_failed_unix: get("pgherd_pg_stat_archiver_last_failed_time"),
        waiting: get("pgherd_pg_wal_archive_status_ready"),
        health: String::new(),
        continuity: continuity(&text, &samples),
    };
    let gap = archive
        .continuity
        .as_ref()
        .is_some_and(|c| c.gap_files > 0.0);
    archive.health = match (
        &archive.archived_count,
        archive.last_archived_unix,
        archive.last_failed_unix,
    ) {
        _ if gap => "gap",
        (None, _, _) => "unknown",
        (Some(_), _, Some(failed)) if archive.last_archived_unix.is_none_or(|ok| failed > ok) => {
            "failing"
        }
        (Some(_), None, None) => "idle",
        _ => "healthy",
    }
    .into();
    Report {
        scope: cluster.scope.clone(),
        paused: cluster.pause,
        members,
        backup,
        archive,
        exporter_error,
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The human-readable report. `now` is a parameter so the rendering is testable.
pub fn render(r: &Report, now: f64) -> String {
    let mut out = String::new();
    let scope = r.scope.as_deref().unwrap_or("?");
    out.push_str(&format!(
        "Cluster {scope}{}\n\n",
        if r.paused {
            " (maintenance mode: Patroni paused)"
        } else {
            ""
        }
    ));
    let header = [
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Lag",
        "Pending restart",
    ];
    let rows: Vec<[String; 7]> = r
        .members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.host.clone().unwrap_or_default(),
                m.role.clone(),
                m.state.clone(),
                m.timeline.map(|t| t.to_string()).unwrap_or_default(),
                m.lag_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                if m.pending_restart {
                    "*".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    out.push_str(&line(header.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push('\n');
    if let Some(e) = &r.exporter_error {
        out.push_str(&format!(
            "Backups and archiving: unknown (exporter not readable: {e})\n"
        ));
        return out;
    }
    let b = &r.backup;
    out.push_str("Last backup:   ");
    match b.last_success_unix {
        Some(t) => {
            out.push_str(&format!("{} ({} ago)", utc(t), age(now - t)));
            if let Some(s) = b.last_size_bytes {
                out.push_str(&format!(", {}", bytes(s as u64)));
            }
            if let Some(s) = b.last_stored_bytes {
                out.push_str(&format!(" ({} stored)", bytes(s as u64)));
            }
        }
        None => out.push_str("none reported by the native backup engine since the agent started"),
    }
    out.push('\n');
    if let Some(n) = b.count {
        out.push_str(&format!("Catalog:       {n} base backups"));
        if let Some(t) = b.oldest_restorable_unix {
            out.push_str(&format!(", restorable back to {}", utc(t)));
        }
        out.push('\n');
    }
    let a = &r.archive;
    let since = |t: Option<f64>| {
        t.map(|t| format!("{} ago", age(now - t)))
            .unwrap_or_else(|| "never".into())
    };
    out.push_str(&format!(
        "WAL archiving: {} ({} archived, last {}; {} failed, last {}; {} waiting)\n",
        a.health.to_uppercase(),
        a.archived_count.unwrap_or(0.0),
        since(a.last_archived_unix),
        a.failed_count.unwrap_or(0.0),
        since(a.last_failed_unix),
        a.waiting
            .map(|w| w.to_string())
            .unwrap_or_else(|| "?".into()),
    ));
    if let Some(c) = &a.continuity {
        let newest: Vec<String> = c
            .newest
            .iter()
            .map(|(tli, lsn)| format!("timeline {tli} through {lsn}"))
            .collect();
        let state = if c.gap_files > 0.0 {
            format!(
                "GAP: {} WAL file(s) missing{}; a restore to the latest state stops there",
                c.gap_files,
                c.first_gap
                    .as_ref()
                    .map(|f| format!(", first {f}"))
                    .unwrap_or_default()
            )
        } else {
            "complete".into()
        };
        out.push_str(&format!(
            "WAL archive:   {state} ({}; checked {} ago)\n",
            if newest.is_empty() {
                "nothing archived".into()
            } else {
                newest.join(", ")
            },
            age(now - c.checked_unix)
        ));
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (Howard Hinnant's civil-from-days; no date crate needed for one format).
fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> patroni::Cluster {
        serde_json::from_str(
            r#"{"scope":"demo","members":[
                {"name":"demo-0","role":"leader","state":"running","host":"10.0.0.1","timeline":2},
                {"name":"demo-1","role":"replica","state":"streaming","host":"10.0.0.2","timeline":2,"lag":2048,"pending_restart":true}]}"#,
        )
        .unwrap()
    }

    const SCRAPE: &str = "# TYPE x gauge\n\
        pgherd_pg_stat_archiver_archived_count_total 10.0\n\
        pgherd_pg_stat_archiver_failed_count_total 3.0\n\
        pgherd_pg_stat_archiver_last_archived_time 1000.0\n\
        pgherd_pg_stat_archiver_last_failed_time 1500.0\n\
        pgherd_pg_wal_archive_status_ready 4\n\
        pgherd_backup_last_success_timestamp_seconds 1700000000\n\
        pgherd_backup_last_size_bytes 1073741824\n\
        pgherd_backend_total{state=\"idle\"} 5\n";

    #[test]
    fn report_from_patroni_and_the_exporter() {
        let r = build(&cluster(), Ok(SCRAPE.into()));
        assert_eq!(r.members[0].lag_bytes, None, "the leader has no lag");
        assert_eq!(r.members[1].lag_bytes, Some(2048));
        assert!(r.members[1].pending_restart);
        assert_eq!(
            r.archive.health, "failing",
            "last failure after last success"
        );
        assert_eq!(r.archive.waiting, Some(4.0));
        assert_eq!(r.backup.last_size_bytes, Some(1073741824.0));
        let text = render(&r, 1_700_003_600.0);
        assert!(
            text.contains("demo-1  10.0.0.2  replica  streaming  2   2.0 KiB  *"),
            "{text}"
        );
        assert!(
            text.contains("Last backup:   2023-11-14 22:13:20 UTC (60m ago), 1.0 GiB"),
            "{text}"
        );
        assert!(
            text.contains("WAL archiving: FAILING (10 archived"),
            "{text}"
        );
    }

    #[test]
    fn archive_gaps_are_reported() {
        let scrape = format!(
            "{SCRAPE}pgherd_wal_archive_continuity_check_timestamp_seconds 1700003500\n\
             pgherd_wal_archive_gap_files 2\n\
             pgherd_wal_archive_first_gap_info{{file=\"000000010000000000000005\"}} 1\n\
             pgherd_wal_archive_newest_end_lsn_bytes{{timeline=\"2\"}} 167772160\n\
             pgherd_wal_archive_newest_end_lsn_bytes{{timeline=\"1\"}} 83886080\n"
        );
        let r = build(
            &cluster(),
            Ok(scrape.replace("last_failed_time 1500.0", "last_failed_time 500.0")),
        );
        assert_eq!(r.archive.health, "gap");
        let c = r.archive.continuity.as_ref().unwrap();
        assert_eq!(
            c.newest,
            [(1, "0/5000000".to_string()), (2, "0/A000000".to_string())]
        );
        let text = render(&r, 1_700_003_600.0);
        assert!(
            text.contains("WAL archive:   GAP: 2 WAL file(s) missing, first 000000010000000000000005; a restore to the latest state stops there (timeline 1 through 0/5000000, timeline 2 through 0/A000000; checked 100s ago)"),
            "{text}"
        );
        assert!(text.contains("WAL archiving: GAP"), "{text}");
    }

    #[test]
    fn archive_health_states_and_missing_exporter() {
        let healthy = SCRAPE.replace("last_failed_time 1500.0", "last_failed_time 500.0");
        assert_eq!(build(&cluster(), Ok(healthy)).archive.health, "healthy");
        let idle = "pgherd_pg_stat_archiver_archived_count_total 0\n";
        assert_eq!(build(&cluster(), Ok(idle.into())).archive.health, "idle");
        let r = build(&cluster(), Err("connection refused".into()));
        assert_eq!(r.archive.health, "unknown");
        assert!(render(&r, 0.0).contains("exporter not readable: connection refused"));
        assert!(render(&build(&cluster(), Ok(String::new())), 0.0).contains("none reported"));
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(age(90.0), "90s");
        assert_eq!(age(90_000.0), "25h 0m");
        assert_eq!(age(200_000.0), "2d 7h");
    }
}
