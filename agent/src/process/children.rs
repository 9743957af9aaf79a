//! Processes the agent starts besides Patroni (scheduled backups, WAL-G in compatibility mode, …).
//!
//! As PID 1 (or child subreaper) the supervisor reaps every child with `waitpid(-1)`: that is how zombies
//! of adopted orphans disappear. The price is that nobody else in the process may wait for its own child
//! (tokio's process API would get ECHILD). So inside `run`, children are started through [`output`], which
//! registers the pid with the reaper and receives the exit status from it; outside `run` (CLI commands)
//! there is no reaper and [`output`] is plain `tokio::process`.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;

use nix::sys::wait::WaitStatus;
use tokio::sync::oneshot;

/// Makes `cmd`'s process receive `signal` when the thread that started it dies, so nothing the agent
/// starts (Patroni, a backup, a private server during a clone) runs on unsupervised after the agent is
/// gone. Call it after setting the uid: changing credentials resets the parent-death signal.
pub fn die_with_parent(cmd: &mut Command, signal: nix::sys::signal::Signal) {
    // SAFETY: only an async-signal-safe prctl between fork and exec; the closure allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)
        });
    }
}

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

impl Registry {
    fn dispatch(&mut self, status: &WaitStatus) -> bool {
        let Some(pid) = status.pid() else {
            return false;
        };
        let raw = match *status {
            WaitStatus::Exited(_, code) => (code & 0xff) << 8,
            WaitStatus::Signaled(_, sig, _) => sig as i32,
            _ => return false,
        };
        match self.waiting.remove(&pid.as_raw()) {
            Some(tx) => {
                let _ = tx.send(ExitStatus::from_raw(raw));
                true
            }
            None => false,
        }
    }
}

/// `None` until the supervisor's reaper runs.
static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Called by the supervisor before it starts reaping.
pub fn enable() {
    *REGISTRY.lock().expect("registry lock") = Some(Registry::default());
}

/// Hands a reaped status to whoever started that child. Returns false for children nobody registered
/// (adopted orphans).
pub fn dispatch(status: &WaitStatus) -> bool {
    REGISTRY
        .lock()
        .expect("registry lock")
        .as_mut()
        .is_some_and(|r| r.dispatch(status))
}

/// Runs `cmd` to completion and collects its output, cooperating with the reaper when one runs.
pub async fn output(mut cmd: Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Registering under the lock: the reaper dispatches under the same lock, so a child that exits
    // immediately cannot be reaped before its waiter exists.
    let registered = {
        let mut guard = REGISTRY.lock().expect("registry lock");
        match guard.as_mut() {
            None => None,
            Some(registry) => {
                // If the agent dies, its children (a backup in progress) must not run on unsupervised.
                die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
                let mut child = cmd.spawn()?;
                let (tx, rx) = oneshot::channel();
                registry.waiting.insert(child.id() as i32, tx);
                let out = child.stdout.take().expect("piped");
                let err = child.stderr.take().expect("piped");
                Some((rx, collect(out), collect(err)))
            }
        }
    };
    let Some(rx) = registered else {
        return tokio::process::Command::from(cmd).output().await;
    };
    let (rx, out, err) = rx;
    let status = rx
        .await
        .map_err(|_| std::io::Error::other("the reaper dropped the child's status"))?;
    let stdout = out.await.unwrap_or_default();
    let stderr = err.await.unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn collect(mut stream: impl Read + Send + 'static) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_reaper_it_is_plain_process_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = output(cmd).await.unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn dispatch_maps_statuses() {
        let mut r = Registry::default();
        let (tx, mut rx) = oneshot::channel();
        r.waiting.insert(4242, tx);
        assert!(r.dispatch(&WaitStatus::Exited(nix::unistd::Pid::from_raw(4242), 7)));
        assert_eq!(rx.try_recv().unwrap().code(), Some(7));
        assert!(
            !r.dispatch(&WaitStatus::Exited(nix::unistd::Pid::from_raw(4243), 0)),
            "unregistered: an orphan"
        );
        let (tx, mut rx) = oneshot::channel();
        r.waiting.insert(9, tx);
        assert!(r.dispatch(&WaitStatus::Signaled(
            nix::unistd::Pid::from_raw(9),
            nix::sys::signal::Signal::SIGKILL,
            false
        )));
        assert_eq!(rx.try_recv().unwrap().signal(), Some(9));
    }
}
