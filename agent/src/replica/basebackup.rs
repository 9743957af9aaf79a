//! `pgherd-agent basebackup`: the `basebackup_fast_xlog` replica method (Spilo's basebackup.sh).
//!
//! Spilo streamed WAL with a separate pg_receivewal into `wal_fast/`, pre-creating a zeroed segment and
//! assuming 16 MiB segments, and detected the hand-over to the walreceiver by grepping process titles.
//! `pg_basebackup -X stream` gives the same guarantee (the copy is consistent without the archive) with one
//! process and no segment-size assumptions, so that is what this runs, with Spilo's retry contract.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;

use crate::local::Local;

/// Arguments as Patroni passes them, plus the method's `retries`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub patroni: super::MethodArgs,
    /// Extra attempts after the first (Spilo accepts 1–9).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub retries: u32,
}

/// The pg_basebackup invocation, separate so the command line is testable.
pub fn command(program: &Path, args: &Args) -> anyhow::Result<Command> {
    let connstring = args
        .patroni
        .connstring
        .as_deref()
        .context("--connstring is required: pg_basebackup copies from the leader")?;
    let mut cmd = Command::new(program);
    cmd.arg(format!("--pgdata={}", args.patroni.datadir.display()))
        .arg("--wal-method=stream")
        .arg("--checkpoint=fast")
        .arg("--no-password")
        .arg(format!("--dbname={connstring}"));
    Ok(cmd)
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let program = Local::from_env()
        .map(|l| l.program("pg_basebackup"))
        .unwrap_or_else(|_| "pg_basebackup".into());
    for attempt in 0..=args.retries {
        if attempt > 0 {
            let pause = Duration::from_secs(5 * u64::from(attempt));
            tracing::warn!(attempt, ?pause, "pg_basebackup failed; retrying");
            std::thread::sleep(pause);
        }
        remove_data_dir(&args.patroni.datadir)?;
        let mut cmd = command(&program, &args)?;
        // If Patroni cancels us, pg_basebackup must not keep copying into a directory nobody owns.
        crate::process::children::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
        let status = cmd
            .status()
            .with_context(|| format!("running {}", program.display()))?;
        if status.success() {
            tracing::info!(datadir = %args.patroni.datadir.display(), "base backup copied");
            return Ok(ExitCode::SUCCESS);
        }
        tracing::error!(%status, attempt, "pg_basebackup failed");
    }
    remove_data_dir(&args.patroni.datadir)?;
    anyhow::bail!(
        "pg_basebackup failed {} times; see the errors above",
        args.retries + 1
    )
}

/// pg_basebackup wants an empty or missing target; a failed attempt leaves a partial copy behind.
fn remove_data_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn parses_what_patroni_passes() {
        let cli = Cli::try_parse_from([
            "x",
            "--scope=demo",
            "--role=replica",
            "--datadir=/d",
            "--connstring=dbname=postgres user=standby host=10.0.0.1 port=5432",
            "--retries=2",
        ])
        .unwrap();
        let cmd = command(Path::new("/bin/pg_basebackup"), &cli.args).unwrap();
        let argv: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "--pgdata=/d",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-password",
                "--dbname=dbname=postgres user=standby host=10.0.0.1 port=5432"
            ]
        );
        assert!(
            Cli::try_parse_from(["x", "--datadir=/d", "--connstring=c", "--retries=10"]).is_err()
        );
    }
}
