//! `pgherd-agent run`: the container entrypoint.
//!
//! Replaces Spilo's dumb-init + launch.sh + runsvdir + runit `patroni/run` and `finish`: configure, start
//! Patroni as the only supervised child, reap every zombie (as PID 1, or as a child subreaper elsewhere),
//! forward SIGTERM/SIGINT/SIGHUP, restart a crashed Patroni with a backoff that resets after a stable run,
//! and on shutdown stop Postgres cleanly within a bounded time, leaving no process behind.

pub mod backoff;
pub mod env;
pub mod patroni;
mod prepare;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::configure::{self, Configured};
use crate::process::{children, RunAs};
use backoff::Backoff;
use patroni::Launch;
use pgherd_shared::proctree;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub configure: configure::Args,
    /// Seconds to wait for Patroni to stop Postgres after SIGTERM before forcing it
    /// (keep below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "PGHERD_STOP_TIMEOUT", default_value_t = 90)]
    pub stop_timeout: u64,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    become_subreaper();
    children::enable();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let configured = configure::apply(&env, &args.configure)?;
    let run_as = RunAs::postgres_if_root()?;
    prepare::directories(&configured, run_as)?;
    let local = crate::local::Local::load(&configured.patroni_config)?;
    crate::metrics::spawn(&env, &configured.patroni_config, &local);
    crate::live_parameters::spawn(&configured.patroni_config, local.api_url.as_deref());
    let owner = run_as.map(|r| (r.uid.as_raw(), r.gid.as_raw()));
    let socket = crate::backup::spawn(&configured, &local, &env, owner);
    let agent_dir = patroni::agent_dir()?;
    let at = env::Locations {
        home: &configured.pg_home,
        agent_dir: &agent_dir,
        bin_dir: local.bin_dir.as_deref(),
        config: &configured.patroni_config,
        socket: socket.as_deref(),
    };
    let launch = Launch {
        program: patroni::program(&env),
        config: configured.patroni_config.clone(),
        env: env::patroni_env(&env, &at),
        cwd: configured.pg_home.clone(),
        run_as,
    };
    std::fs::create_dir_all(&launch.cwd)
        .with_context(|| format!("creating {}", launch.cwd.display()))?;
    let mut signals = Signals::new()?;
    let supervisor = Supervisor {
        configured,
        stop_timeout: Duration::from_secs(args.stop_timeout),
    };
    supervisor.supervise(&launch, &mut signals).await
}

/// Outside a container the agent is not PID 1: become a subreaper so that a postmaster orphaned by a
/// Patroni crash is re-parented to us (and reaped and stopped by us) rather than to the host's init.
fn become_subreaper() {
    if std::process::id() != 1 {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                "cannot become a child subreaper ({e}); orphaned postgres processes go to init"
            );
        }
    }
}

enum Event {
    Stop(Signal),
    Reload,
    Child,
}

/// The signals PID 1 must handle itself (the kernel drops default-action signals sent to PID 1).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    chld: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            chld: signal(SignalKind::child())?,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop(Signal::SIGTERM),
            _ = self.int.recv() => Event::Stop(Signal::SIGINT),
            _ = self.quit.recv() => Event::Stop(Signal::SIGTERM),
            _ = self.hup.recv() => Event::Reload,
            _ = self.chld.recv() => Event::Child,
        }
    }
}

struct Supervisor {
    configured: Configured,
    stop_timeout: Duration,
}

impl Supervisor {
    async fn supervise(&self, launch: &Launch, signals: &mut Signals) -> anyhow::Result<ExitCode> {
        let mut backoff = Backoff::default();
        loop {
            let pid = Pid::from_raw(patroni::spawn(launch)? as i32);
            let started = Instant::now();
            tracing::info!(pid = pid.as_raw(), config = %launch.config.display(), "started Patroni");
            let status = loop {
                match signals.next().await {
                    Event::Stop(sig) => return Ok(self.shutdown(Some(pid), sig, signals).await),
                    Event::Reload => {
                        tracing::info!("forwarding SIGHUP to Patroni (reload)");
                        let _ = kill(pid, Signal::SIGHUP);
                    }
                    Event::Child => {
                        if let Some(status) = reap(Some(pid)) {
                            break status;
                        }
                    }
                }
            };
            if let Some(reason) = patroni::take_restart_request(&launch.config) {
                tracing::info!(status = %describe(&status), "Patroni stopped on request ({reason}); starting it again");
                continue;
            }
            let delay = backoff.on_exit(started.elapsed());
            tracing::error!(
                status = %describe(&status),
                ran_for_s = started.elapsed().as_secs(),
                restart_in_s = delay.as_secs_f64(),
                consecutive_failures = backoff.consecutive_failures(),
                "Patroni exited unexpectedly; restarting it (a running postmaster is adopted again)"
            );
            let wake = tokio::time::sleep(delay);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    ev = signals.next() => match ev {
                        Event::Stop(sig) => return Ok(self.shutdown(None, sig, signals).await),
                        Event::Reload => {}
                        Event::Child => { reap(None); }
                    }
                }
            }
        }
    }

    /// Stops Patroni (which stops Postgres and, on the leader, releases the leader key so a replica takes
    /// over at once), then makes sure nothing below the agent survives. Bounded by `stop_timeout` plus a few
    /// seconds for forced steps.
    async fn shutdown(&self, patroni: Option<Pid>, sig: Signal, signals: &mut Signals) -> ExitCode {
        let mut clean = true;
        if let Some(pid) = patroni {
            tracing::info!(signal = %sig, timeout_s = self.stop_timeout.as_secs(), "stopping Patroni");
            let _ = kill(pid, sig);
            if !wait_for_exit(pid, self.stop_timeout, signals).await {
                tracing::error!(
                    "Patroni did not stop within {:?}; killing it",
                    self.stop_timeout
                );
                let _ = kill(pid, Signal::SIGKILL);
                wait_for_exit(pid, Duration::from_secs(5), signals).await;
                clean = false;
            }
        }
        // Patroni normally stops Postgres itself. It does not when it had crashed, or when the signal
        // arrived before it had installed its handlers; then a fast shutdown here is still a clean one.
        if let Some(pm) = self.running_postmaster() {
            tracing::warn!(
                pid = pm.as_raw(),
                "postmaster still running without Patroni; fast shutdown"
            );
            let _ = kill(pm, Signal::SIGINT);
            if !wait_gone(pm, Duration::from_secs(20), signals).await {
                tracing::error!("postmaster ignored fast shutdown; immediate shutdown");
                let _ = kill(pm, Signal::SIGQUIT);
                wait_gone(pm, Duration::from_secs(5), signals).await;
                clean = false;
            }
        }
        let me = std::process::id() as i32;
        // What the agent itself started besides Patroni (the upgrade watcher, a scheduled backup) is asked
        // to stop first; only what ignores that is killed, and only that is worth a warning.
        for p in proctree::descendants(me) {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
        for p in proctree::descendants(me) {
            wait_gone(Pid::from_raw(p), Duration::from_secs(5), signals).await;
        }
        let leftovers = proctree::descendants(me);
        if !leftovers.is_empty() {
            tracing::warn!(pids = ?leftovers, "killing leftover processes that ignored SIGTERM");
            for p in leftovers {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            reap(None);
        }
        tracing::info!(clean, "pgherd-agent stopped");
        if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// The postmaster recorded in PGDATA/postmaster.pid, if that process is still alive.
    fn running_postmaster(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.configured.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        proctree::alive(pid).then(|| Pid::from_raw(pid))
    }
}

/// Waits until `pid` (our child) has been reaped.
async fn wait_for_exit(pid: Pid, timeout: Duration, signals: &mut Signals) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    if reap(Some(pid)).is_some() {
        return true;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return reap(Some(pid)).is_some(),
            ev = signals.next() => if let Event::Child = ev {
                if reap(Some(pid)).is_some() { return true; }
            },
        }
    }
}

/// Waits until a process that may not be our child is gone (polling /proc).
async fn wait_gone(pid: Pid, timeout: Duration, signals: &mut Signals) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        reap(None);
        if !proctree::alive(pid.as_raw()) {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = signals.next() => {}
        }
    }
    !proctree::alive(pid.as_raw())
}

/// Reaps every exited child (zombies included: that is PID 1's job). Returns the status of `watch`
/// if it was among them.
fn reap(watch: Option<Pid>) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == watch {
                    found = Some(status);
                } else if !children::dispatch(&status) {
                    tracing::debug!(status = %describe(&status), "reaped a child");
                }
            }
        }
    }
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(pid, code) => format!("pid {pid} exited with code {code}"),
        WaitStatus::Signaled(pid, sig, _) => format!("pid {pid} killed by {sig}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod archiving_load;
