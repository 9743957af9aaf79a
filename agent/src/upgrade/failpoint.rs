//! Named moments at which a test can kill the upgrade process exactly (docs/upgrade.md, "Kill tests").
//!
//! Killing by polling the status file misses short phases and cannot tell "before the link" from "after
//! the link". With `PGHERD_UPGRADE_STOP_AT=<moment>` in its environment, the process stops itself
//! (SIGSTOP) on reaching that moment: to the rest of the cluster it is a live runner that makes no
//! progress, and the test's SIGKILL then lands at a known point. The variable is read from this process's
//! own environment only; the agent's watcher never passes it to the recovery it starts.

/// The variable naming the moment.
pub const VAR: &str = "PGHERD_UPGRADE_STOP_AT";

/// Moments besides the phase entries ([`super::plan::Phase::name`]).
pub const PG_UPGRADE_LINKED: &str = "pg_upgrade_linked";
pub const REPLICAS_SYNCED: &str = "replicas_synced";

/// Stops this process if `moment` is the one [`VAR`] names.
pub fn reached(moment: &str) {
    if std::env::var(VAR).is_ok_and(|m| m == moment) {
        tracing::warn!(moment, "{VAR}: stopping here until killed");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}
