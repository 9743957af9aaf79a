//! A process the harness started, with its output in a log file and a guard that kills its whole tree.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_shared::proctree;

pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `cmd` in its own process group with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = open_log(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("process is not running")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("sending {sig} to {}", self.name))
    }

    /// The process and all its descendants right now.
    pub fn tree(&self) -> Vec<i32> {
        match self.pid() {
            Some(pid) => std::iter::once(pid)
                .chain(proctree::descendants(pid))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Sends `sig` and waits up to `timeout` for the process to exit. Returns its status, or `None` on timeout.
    pub fn stop_with(
        &mut self,
        sig: Signal,
        timeout: Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            return Ok(Some(status));
        }
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// SIGKILL the process and every descendant at once (collected first, so nothing is re-parented away
    /// before it is hit). Returns the pids that were signalled.
    pub fn kill_tree(&mut self) -> Vec<i32> {
        let pids = self.tree();
        for &p in &pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        wait_gone(&pids, Duration::from_secs(10));
        pids
    }

    /// Last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Graceful first: a SIGKILLed postmaster leaves its SysV shared memory segment behind.
            if !matches!(
                self.stop_with(Signal::SIGTERM, Duration::from_secs(20)),
                Ok(Some(_))
            ) {
                self.kill_tree();
            }
        }
    }
}

/// Waits until none of `pids` is alive; returns those still alive at the deadline.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&p| proctree::alive(p))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback port nobody listens on right now. Ports handed out in this process are not handed out again,
/// so members started together never collide with each other.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port != 0 && GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Hex of `n` random bytes from the kernel (keys, secrets, passwords in tests).
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
