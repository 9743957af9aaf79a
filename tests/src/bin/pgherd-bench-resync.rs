//! Benchmark driver for bench/coordinator/run.sh: what one full resync of N clusters that are already in
//! sync costs the real `pgherd-coordinator` binary, against the Kubernetes API stand-in in this process
//! (not a real API server: no etcd, no admission, no authorization; docs/kube-standin.md).
//!
//! For each N: N clusters from Zalando's minimal manifest are created and a first coordinator reconciles
//! them (pods never start: there is no kubelet, and none is needed for the coordinator's objects). It is
//! stopped (releasing its Lease), and a second one is started: its startup pass (list and watch, then one
//! reconcile per cluster) is the full resync measured, the pass a restart or a failover to another
//! replica makes; the periodic `resync_period` pass reconciles the same clusters without the list.
//!
//! Usage: pgherd-bench-resync [N ...]   (default 1 100 1000). Prints a Markdown table.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgherd_tests::coordinator::{create_cluster, in_sync, install_config, memory_kib, Coordinator};
use pgherd_tests::kube::counts::RequestCounts;
use pgherd_tests::kube::{ApiServer, Options};

struct Row {
    n: usize,
    create: Duration,
    create_requests: u64,
    create_writes: u64,
    create_hwm_kib: u64,
    resync: Duration,
    requests: u64,
    gets: u64,
    lists_watches: u64,
    writes: u64,
    lease_writes: u64,
    cpu: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    standin_cpu: Duration,
}

/// utime + stime of a process (`self` or a pid).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Waits until `count` stops changing for `still`; returns when it last changed.
async fn settle(
    count: impl Fn() -> u64,
    still: Duration,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let (mut last, mut changed) = (count(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now != last {
            (last, changed) = (now, Instant::now());
        }
        if changed.elapsed() >= still {
            return Ok(changed);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "requests did not settle within {timeout:?}"
        );
    }
}

fn of(srv: &ApiServer, user: &str, before: &RequestCounts) -> RequestCounts {
    srv.request_counts().since(before).user(user)
}

async fn run(n: usize) -> anyhow::Result<Row> {
    let srv = ApiServer::start(Options {
        history: 200_000,
        ..Options::default()
    })
    .await?;
    install_config(&srv, "30m")?;
    let dir = tempfile::Builder::new()
        .prefix("pgherd-bench-resync-")
        .tempdir()?;
    let names: Vec<String> = (0..n).map(|i| format!("acid-bench-{i:04}")).collect();
    for name in &names {
        create_cluster(&srv, name)?;
    }

    // First coordinator: creates every object.
    let start = Instant::now();
    let before = srv.request_counts();
    let mut first = Coordinator::start(&srv, "bench-create", dir.path(), &[])?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut pending: Vec<&String> = names.iter().collect();
    while !pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} clusters never got in sync",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        pending.retain(|name| !in_sync(&srv, name));
    }
    let create = start.elapsed();
    settle(
        || of(&srv, "bench-create", &before).except("leases").total(),
        Duration::from_secs(3),
        Duration::from_secs(600),
    )
    .await?;
    let created = of(&srv, "bench-create", &before).except("leases");
    let (_, create_hwm_kib) = memory_kib(first.pid().unwrap_or(0))?;
    first
        .service
        .stop_with(Signal::SIGTERM, Duration::from_secs(60))?;

    // Second coordinator: the resync of N clusters in sync.
    let before = srv.request_counts();
    let standin_before = cpu_time("self");
    let start = Instant::now();
    let mut second = Coordinator::start(&srv, "bench-resync", dir.path(), &[])?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    // Every reconcile reads the cluster's StatefulSet.
    while of(&srv, "bench-resync", &before)
        .resource("statefulsets")
        .verb("get")
        < n as u64
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the resync did not reach every cluster"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = settle(
        || of(&srv, "bench-resync", &before).except("leases").total(),
        Duration::from_secs(3),
        Duration::from_secs(600),
    )
    .await?;
    let resync = last.duration_since(start);
    let standin_cpu = cpu_time("self").saturating_sub(standin_before);
    let pid = second.pid().unwrap_or(0);
    let (rss_kib, hwm_kib) = memory_kib(pid)?;
    let cpu = cpu_time(&pid.to_string());
    let d = of(&srv, "bench-resync", &before);
    let work = d.except("leases");
    let row = Row {
        n,
        create,
        create_requests: created.total(),
        create_writes: created.writes(),
        create_hwm_kib,
        resync,
        requests: work.total(),
        gets: work.verb("get"),
        lists_watches: work.verb("list") + work.verb("watch"),
        writes: work.writes(),
        lease_writes: d.resource("leases").writes(),
        cpu,
        rss_kib,
        hwm_kib,
        standin_cpu,
    };
    second
        .service
        .stop_with(Signal::SIGTERM, Duration::from_secs(60))?;
    Ok(row)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let ns = if ns.is_empty() {
        vec![1, 100, 1000]
    } else {
        ns
    };
    let mut rows = Vec::new();
    for n in ns {
        eprintln!("N = {n} …");
        let row = run(n).await?;
        eprintln!(
            "N = {n}: resync {:.2} s, {} requests, {} writes",
            row.resync.as_secs_f64(),
            row.requests,
            row.writes
        );
        rows.push(row);
    }
    println!("| clusters | resync wall time | requests (get / list+watch) | requests per cluster | writes | Lease writes | coordinator CPU | coordinator RSS / peak | stand-in CPU | first pass (creates) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} s | {} ({} / {}) | {:.1} | {} | {} | {:.2} s | {} / {} MiB | {:.2} s | {:.1} s, {} requests, {} writes, peak {} MiB |",
            r.n,
            r.resync.as_secs_f64(),
            r.requests,
            r.gets,
            r.lists_watches,
            r.requests as f64 / r.n as f64,
            r.writes,
            r.lease_writes,
            r.cpu.as_secs_f64(),
            mib(r.rss_kib),
            mib(r.hwm_kib),
            r.standin_cpu.as_secs_f64(),
            r.create.as_secs_f64(),
            r.create_requests,
            r.create_writes,
            mib(r.create_hwm_kib),
        );
    }
    Ok(())
}
