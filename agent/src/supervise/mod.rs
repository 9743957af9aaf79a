//! `pgherd-agent run`: PID 1 duties and Patroni supervision.

use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub configure: crate::configure::Args,
}

pub fn main(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("run is not built yet")
}
