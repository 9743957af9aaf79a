//! `pgherd-agent configure`: turns the Spilo environment contract into Patroni configuration and envdirs.
//! PLACEHOLDER: the real module replaces this file; the public contract below is what `run` relies on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line arguments of `pgherd-agent configure` (flattened into `pgherd-agent run` too).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Write every file under this directory instead of `/` (tests, dry runs).
    #[arg(long, default_value = "/")]
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
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

pub fn apply(_env: &BTreeMap<String, String>, _args: &Args) -> Result<Configured, Error> {
    Err(Error("configure is not built yet".into()))
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    apply(&env, &args)?;
    Ok(ExitCode::SUCCESS)
}
