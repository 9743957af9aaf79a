//! pgherd-agent: the per-pod entrypoint that replaces Spilo's launch script, configure_spilo.py and runit.
//!
//! The library half exists so that integration tests and the demo can call the same pure functions the
//! binary uses (configuration rendering, restart backoff) without shelling out.

pub mod backup;
pub mod bootstrap;
pub mod callbacks;
pub mod configure;
pub mod envdir;
pub mod exit;
pub mod incluster;
pub mod live_parameters;
pub mod local;
pub mod logging;
pub mod logical_backup;
pub mod metrics;
pub mod process;
pub mod replica;
pub mod status;
pub mod supervise;
#[cfg(test)]
pub(crate) mod testutil;
pub mod upgrade;
