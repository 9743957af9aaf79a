//! Series that are not SQL: Patroni's view of this member and the cluster, the data and WAL volumes, and
//! the agent process itself. All are cheap (one loopback HTTP call pair, two statvfs, two /proc reads), so
//! they are read on every scrape rather than cached: during a failover the role must not be stale.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgherd_shared::patroni::{self, Client};

use super::families::{Families, Kind};

/// Patroni's REST API can hang while it is busy with the DCS; a scrape must not.
const PATRONI_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn patroni(client: &Client, f: &mut Families) {
    let g = Kind::Gauge;
    let status = tokio::time::timeout(PATRONI_TIMEOUT, client.status()).await;
    let status = match status {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!("metrics: Patroni status: {e}");
            None
        }
        Err(_) => None,
    };
    f.set(
        "pgherd_patroni_up",
        "1 when Patroni's REST API answered",
        g,
        vec![],
        if status.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(s) = &status {
        add_status(s, f);
    }
    if let Ok(Ok(c)) = tokio::time::timeout(PATRONI_TIMEOUT, client.cluster()).await {
        add_cluster(&c, f);
    }
}

fn add_status(s: &patroni::Status, f: &mut Families) {
    let g = Kind::Gauge;
    if let Some(info) = &s.patroni {
        let labels = vec![
            ("scope".into(), info.scope.clone()),
            ("name".into(), info.name.clone().unwrap_or_default()),
            ("version".into(), info.version.clone()),
        ];
        f.set(
            "pgherd_patroni_info",
            "Patroni scope, member name and version",
            g,
            labels,
            1.0,
        );
    }
    f.set(
        "pgherd_patroni_primary",
        "1 when this member holds the leader key (primary or standby leader)",
        g,
        vec![],
        pgherd_shared::patroni::Role::of(&s.role).is_leader() as u8 as f64,
    );
    f.set(
        "pgherd_patroni_role",
        "This member's role as Patroni reports it",
        g,
        vec![("role".into(), s.role.clone())],
        1.0,
    );
    f.set(
        "pgherd_patroni_state",
        "This member's Postgres state as Patroni reports it",
        g,
        vec![("state".into(), s.state.clone())],
        1.0,
    );
    if let Some(t) = s.timeline {
        f.set(
            "pgherd_patroni_timeline",
            "Timeline of this member",
            g,
            vec![],
            t as f64,
        );
    }
    f.set(
        "pgherd_patroni_pending_restart",
        "1 when a changed parameter needs a Postgres restart",
        g,
        vec![],
        s.pending_restart.unwrap_or(false) as u8 as f64,
    );
}

fn add_cluster(c: &patroni::Cluster, f: &mut Families) {
    let g = Kind::Gauge;
    f.set(
        "pgherd_patroni_cluster_members",
        "Members registered in the DCS, as this member sees it",
        g,
        vec![],
        c.members.len() as f64,
    );
    f.set(
        "pgherd_patroni_cluster_leaders",
        "Members holding the leader key, as this member sees it (0 means no leader)",
        g,
        vec![],
        c.members.iter().filter(|m| m.is_leader()).count() as f64,
    );
    f.set(
        "pgherd_patroni_cluster_paused",
        "1 when Patroni's maintenance mode is on",
        g,
        vec![],
        c.pause as u8 as f64,
    );
}

/// Size, used and available bytes of the file systems holding `PGDATA` and `pg_wal` (which may be a
/// separate volume through a symlink; statvfs follows it).
pub fn volumes(data_dir: &Path, f: &mut Families) {
    let wal: PathBuf = data_dir.join("pg_wal");
    for (name, path) in [("data", data_dir), ("wal", wal.as_path())] {
        let Ok(st) = nix::sys::statvfs::statvfs(path) else {
            continue;
        };
        let frsize = st.fragment_size() as f64;
        let size = st.blocks() as f64 * frsize;
        let free = st.blocks_free() as f64 * frsize;
        let avail = st.blocks_available() as f64 * frsize;
        let labels = || vec![("volume".to_string(), name.to_string())];
        let g = Kind::Gauge;
        f.set(
            "pgherd_volume_size_bytes",
            "Size of the file system holding the volume",
            g,
            labels(),
            size,
        );
        f.set(
            "pgherd_volume_used_bytes",
            "Bytes in use on the file system holding the volume",
            g,
            labels(),
            size - free,
        );
        f.set(
            "pgherd_volume_available_bytes",
            "Bytes available to unprivileged users (Postgres) on the volume",
            g,
            labels(),
            avail,
        );
    }
}

/// The agent's own build, uptime, CPU and memory (the exporter's cost is part of the agent's).
pub fn process(started: SystemTime, f: &mut Families) {
    let g = Kind::Gauge;
    f.set(
        "pgherd_agent_build_info",
        "pgherd-agent version",
        g,
        vec![("version".into(), env!("CARGO_PKG_VERSION").into())],
        1.0,
    );
    let start = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default()
        .as_secs_f64();
    f.set(
        "pgherd_agent_start_time_seconds",
        "When the agent started (Unix seconds)",
        g,
        vec![],
        start,
    );
    f.set(
        "pgherd_agent_uptime_seconds",
        "Seconds since the agent started",
        g,
        vec![],
        uptime,
    );
    if let Some((cpu, rss)) = self_usage() {
        f.set(
            "process_cpu_seconds_total",
            "User and system CPU time of the agent process",
            Kind::Counter,
            vec![],
            cpu,
        );
        f.set(
            "process_resident_memory_bytes",
            "Resident memory of the agent process",
            g,
            vec![],
            rss,
        );
    }
}

/// CPU seconds (utime + stime) and resident bytes of this process, from /proc.
pub fn self_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let (cpu_ticks, rss_pages) = parse_proc(&stat, &statm)?;
    // SAFETY: sysconf has no preconditions.
    let (tck, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    Some((
        cpu_ticks as f64 / tck.max(1) as f64,
        (rss_pages * page.max(1) as u64) as f64,
    ))
}

/// Pure part of [`self_usage`]: utime+stime ticks (fields 14 and 15, counted after the parenthesised
/// command name, which may contain spaces) and the resident page count.
fn parse_proc(stat: &str, statm: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((utime + stime, rss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::families::Value;

    #[test]
    fn proc_parsing_handles_spaces_in_the_command() {
        let stat = "42 (my agent) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 100 1000 50";
        assert_eq!(parse_proc(stat, "1000 250 10 1 0 20 0"), Some((22, 250)));
        assert!(self_usage().is_some_and(|(_, rss)| rss > 0.0));
    }

    #[test]
    fn volumes_report_consistent_sizes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pg_wal")).unwrap();
        let mut f = Families::default();
        volumes(dir.path(), &mut f);
        let get = |n: &str, i: usize| match f.by_name[n].samples[i].1 {
            Value::Number(v) => v,
            _ => unreachable!(),
        };
        for i in 0..2 {
            let (size, used) = (
                get("pgherd_volume_size_bytes", i),
                get("pgherd_volume_used_bytes", i),
            );
            assert!(size > 0.0 && used > 0.0 && used <= size, "{size} {used}");
        }
    }

    #[test]
    fn status_and_cluster_views() {
        let s: patroni::Status = serde_json::from_str(
            r#"{"state":"running","role":"replica","timeline":3,"pending_restart":true,
                "patroni":{"version":"4.0.4","scope":"demo","name":"demo-1"}}"#,
        )
        .unwrap();
        let c: patroni::Cluster = serde_json::from_str(
            r#"{"members":[{"name":"a","role":"replica","state":"streaming"},{"name":"b","role":"replica","state":"running"}]}"#,
        )
        .unwrap();
        let mut f = Families::default();
        add_status(&s, &mut f);
        add_cluster(&c, &mut f);
        let v = |n: &str| f.by_name[n].samples[0].1.clone();
        assert_eq!(v("pgherd_patroni_primary"), Value::Number(0.0));
        assert_eq!(v("pgherd_patroni_timeline"), Value::Number(3.0));
        assert_eq!(v("pgherd_patroni_pending_restart"), Value::Number(1.0));
        assert_eq!(v("pgherd_patroni_cluster_leaders"), Value::Number(0.0));
        assert_eq!(
            f.by_name["pgherd_patroni_role"].samples[0].0[0].1,
            "replica"
        );
    }
}
