//! One upgrade process per member at a time, without a window: an exclusive `flock` on
//! `$RW_DIR/pgherd/upgrade.lock`, taken before anything is read and held until the process exits (the
//! kernel drops it when the process dies, also by SIGKILL). The file holds the holder's pid so that a
//! person's run can tell the agent's `--recover` (which it replaces: a recovery that hangs must not hold
//! the cluster hostage) from another person's run (which it waits for).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::member;

/// Held for the life of the upgrade process.
pub struct RunnerLock {
    _lock: Flock<File>,
}

/// Takes the lock. A run that is not itself a recovery stops a recovery holding it (SIGTERM, SIGKILL
/// after `stop_timeout`) and takes over; anything else holding it is refused with its pid.
pub async fn acquire(
    rw_dir: &Path,
    recovering: bool,
    stop_timeout: Duration,
) -> Result<RunnerLock, String> {
    let dir = rw_dir.join("pgherd");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("upgrade.lock");
    let mut stopped = false;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let pid = std::process::id().to_string();
                let written = lock
                    .set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(pid.as_bytes()));
                if let Err(e) = written {
                    tracing::warn!("writing {}: {e}", path.display());
                }
                return Ok(RunnerLock { _lock: lock });
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder: Option<u32> = text.trim().parse().ok();
                let busy = |pid: Option<u32>| {
                    match pid {
                    Some(pid) => format!(
                        "another upgrade process (pid {pid}) is working on this upgrade; wait for it to finish"
                    ),
                    None => "another upgrade process is working on this upgrade; wait for it to finish".into(),
                }
                };
                match holder {
                    Some(pid) if !recovering && !stopped && member::runner_is_recovery(pid) => {
                        tracing::warn!(
                            pid,
                            "stopping the agent's upgrade recovery to take over from it"
                        );
                        if !member::stop_runner(pid, stop_timeout).await {
                            return Err(busy(holder));
                        }
                        stopped = true;
                    }
                    _ => return Err(busy(holder)),
                }
            }
            Err((_, e)) => return Err(format!("locking {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_run_is_refused_with_the_holders_pid_and_the_lock_dies_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), false, Duration::from_secs(1))
            .await
            .unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let refused = acquire(dir.path(), false, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        acquire(dir.path(), true, Duration::from_secs(1))
            .await
            .unwrap();
    }
}
