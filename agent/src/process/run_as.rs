//! The account PostgreSQL and its tools run as.

use anyhow::Context;
use nix::unistd::{Gid, Uid, User};

/// The account Postgres runs as. PostgreSQL refuses to run as root, so a root agent (the default in
/// Zalando's pods) drops Patroni to `postgres`, as Spilo's `chpst -u postgres` did.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    /// `None` when the agent is not root: Patroni then runs as the agent's own user.
    pub fn postgres_if_root() -> anyhow::Result<Option<RunAs>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let user = User::from_name("postgres")
            .context("looking up user 'postgres'")?
            .context("running as root but there is no 'postgres' user to run PostgreSQL as (PostgreSQL refuses to run as root)")?;
        Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        }))
    }
}
