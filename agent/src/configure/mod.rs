//! `pgherd-agent configure`: turns Spilo's environment contract into the Patroni configuration, the WAL and log
//! envdirs, TLS material and the job schedule — the replacement for Spilo's `configure_spilo.py`.
//!
//! Split as a functional core and an imperative shell: [`probe`] reads the machine, [`render::render`] computes
//! every file from the environment without side effects (so bad input fails before anything is written), and
//! [`write`] puts the files in place atomically. Where behaviour deliberately differs from Spilo, the reason is
//! next to the code and listed in `docs/spilo-compatibility.md`.

mod bootstrap;
mod certs;
mod dcs;
pub mod engine;
mod env;
mod error;
mod layout;
mod logenv;
mod merge;
mod patroni;
pub mod probe;
pub mod render;
pub mod schedule;
mod services;
mod sizing;
pub mod version;
mod walenv;
pub mod write;
pub mod yaml;

pub use patroni::restore_command;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

pub use error::Error;
pub use probe::{Machine, Probe};
pub use render::{render, Rendered};
pub use schedule::Schedule;

/// Command-line arguments of `pgherd-agent configure` (flattened into `pgherd-agent run` too).
#[derive(Debug, Clone, clap::Args)]
// clap names a derived argument group after the struct; `run`'s own `Args` would collide with it when flattened.
#[group(id = "configure")]
pub struct Args {
    /// Treat DIR as `/`: every file is written under it, and the data directory, the PostgreSQL installations
    /// and an existing TLS key are looked up under it (tests, dry runs).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Memory in MiB used for sizing instead of the cgroup limit.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// CPU count used for sizing instead of the machine's.
    #[arg(long)]
    pub cpu_count: Option<u32>,
    /// Member name instead of HOSTNAME / the host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Member IP instead of POD_IP / resolving the host name.
    #[arg(long)]
    pub ip: Option<String>,
    /// Wildcard listen address (bg_mon) instead of probing for IPv6: `::` or `0.0.0.0`.
    #[arg(long)]
    pub listen_ip: Option<String>,
}

/// What `run` needs to know after configuration: un-rooted absolute paths as written into the config.
#[derive(Debug, Clone)]
pub struct Configured {
    pub patroni_config: PathBuf,
    pub data_dir: PathBuf,
    pub rw_dir: PathBuf,
    pub pg_home: PathBuf,
    pub pg_root: PathBuf,
    pub pg_log: PathBuf,
    /// `postgresql.bin_dir` of the rendered config.
    pub bin_dir: PathBuf,
    /// Major version of `bin_dir` (`15`, `9.6`); also the last component of generated WAL paths.
    pub pg_version: String,
    /// The main WAL envdir when WAL archiving is configured (Spilo's "exit code 0"): base backups are wanted.
    pub wal_env_dir: Option<PathBuf>,
    /// Where [`Configured::schedule`] was written (`$RW_DIR/etc/pgherd/schedule.json`).
    pub schedule_file: PathBuf,
    /// Periodic jobs that Spilo installed as a crontab.
    pub schedule: Schedule,
    /// No DCS configured and provider `local`: Spilo started a local etcd and pointed Patroni at 127.0.0.1:2379.
    pub start_local_etcd: bool,
    /// `PGBOUNCER_CONFIGURATION` was given: pgbouncer should run with this config.
    pub pgbouncer_config: Option<PathBuf>,
}

/// Renders and writes everything; nothing is written when the input is invalid.
pub fn apply(env: &BTreeMap<String, String>, args: &Args) -> Result<Configured, Error> {
    let machine = probe::machine(env, args)?;
    let probe = probe::disk(env, &args.root)?;
    let rendered = render(env, &machine, &probe)?;
    for warning in &rendered.warnings {
        tracing::warn!("{warning}");
    }
    write::write_all(&args.root, &rendered.dirs, &rendered.files)?;
    Ok(rendered.configured)
}

/// Exit 0 whenever the configuration was written; unlike Spilo, a cluster without WAL storage is not an error
/// (that is [`Configured::wal_env_dir`]).
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let configured = apply(&env, &args)?;
    tracing::info!(
        patroni_config = %configured.patroni_config.display(),
        pg_version = %configured.pg_version,
        wal_archiving = configured.wal_env_dir.is_some(),
        "configuration written"
    );
    Ok(ExitCode::SUCCESS)
}
