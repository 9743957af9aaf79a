//! `pgherd-agent on-role-change HUMAN_ROLE CALLBACK… ACTION ROLE SCOPE`: Spilo's on_role_change.sh.
//!
//! Runs the wrapped callback (unless it is `true`), and after a promotion re-applies the post-init SQL once
//! the server accepts writes, so roles and helpers exist even on clusters restored from old backups.
//! Spilo also started `vacuumdb -aZ` here; pgherd does not: optimizer statistics (pg_statistic) are
//! replicated physically and are already current on the new primary, while an ANALYZE of every database
//! right after a failover is I/O at the worst moment (docs/spilo-compatibility.md).

use std::ffi::OsString;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::NoTls;

use super::post_init;
use crate::local::Local;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    pub human_role: String,
    /// The wrapped callback followed by Patroni's ACTION ROLE SCOPE.
    #[arg(required = true, num_args = 4.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<OsString>,
}

/// The parts of the argument list: wrapped command, then Patroni's three arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation<'a> {
    pub callback: &'a [OsString],
    pub action: String,
    pub role: String,
    pub scope: String,
}

pub fn split(rest: &[OsString]) -> anyhow::Result<Invocation<'_>> {
    anyhow::ensure!(
        rest.len() >= 4,
        "expected CALLBACK… ACTION ROLE SCOPE, got {} arguments",
        rest.len()
    );
    let (callback, tail) = rest.split_at(rest.len() - 3);
    let s = |i: usize| tail[i].to_string_lossy().into_owned();
    Ok(Invocation {
        callback,
        action: s(0),
        role: s(1),
        scope: s(2),
    })
}

/// Whether this invocation is a promotion to primary (Patroni 4 says `primary`, 3 says `master`).
pub fn is_promotion(inv: &Invocation) -> bool {
    inv.action == "on_role_change" && pgherd_shared::patroni::Role::of(&inv.role).is_primary()
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let inv = split(&args.rest)?;
    let mut code = ExitCode::SUCCESS;
    if inv.callback != [OsString::from("true")] {
        let status = Command::new(&inv.callback[0])
            .args(&inv.callback[1..])
            .args([&inv.action, &inv.role, &inv.scope])
            .status()
            .with_context(|| format!("running callback {:?}", inv.callback[0]))?;
        if !status.success() {
            tracing::error!(%status, "wrapped callback failed");
            code = ExitCode::FAILURE;
        }
    }
    if is_promotion(&inv) {
        let local = Local::from_env()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            wait_writable(&local).await?;
            post_init::run(&args.human_role, &local.conninfo("postgres")).await
        })?;
    }
    Ok(code)
}

/// Patroni calls on_role_change just before the promotion completes; wait (up to 30 s, as Spilo) until
/// the server has left recovery.
async fn wait_writable(local: &Local) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = local.conninfo("postgres").parse()?;
    for _ in 0..30 {
        if let Ok((client, conn)) = config.connect(NoTls).await {
            tokio::spawn(conn);
            if let Ok(row) = client
                .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
                .await
            {
                if !row.get::<_, bool>(0) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("the server was still in recovery 30 s after promotion; post-init skipped")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn splits_wrapped_command_from_patroni_args() {
        let a = os(&[
            "pgherd-agent",
            "callback-role",
            "on_role_change",
            "primary",
            "demo",
        ]);
        let inv = split(&a).unwrap();
        assert_eq!(inv.callback, &os(&["pgherd-agent", "callback-role"])[..]);
        assert!(is_promotion(&inv));
        let b = os(&["true", "on_role_change", "replica", "demo"]);
        assert!(!is_promotion(&split(&b).unwrap()));
        let c = os(&["true", "on_start", "master", "demo"]);
        assert!(!is_promotion(&split(&c).unwrap()));
        assert!(split(&os(&["a", "b", "c"])).is_err());
    }
}
