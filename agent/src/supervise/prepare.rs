//! What Spilo's launch.sh did before starting anything: directories with the right owners and modes.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

use anyhow::Context;

use crate::configure::Configured;
use crate::process::RunAs;

/// Creates the data, log and runtime directories and hands PGROOT to the postgres user.
/// PGDATA must be 0700 or postgres refuses to start; RW_DIR/tmp is shared scratch space (1777).
pub fn directories(c: &Configured, run_as: Option<RunAs>) -> anyhow::Result<()> {
    for dir in [
        &c.pg_log,
        &c.data_dir,
        &c.rw_dir.join("postgresql"),
        &c.rw_dir.join("certs"),
    ] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = c.rw_dir.join("tmp");
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    if let Some(r) = run_as {
        for dir in [&c.rw_dir.join("postgresql"), &c.rw_dir.join("certs")] {
            chown(dir, Some(r.uid.as_raw()), Some(r.gid.as_raw()))
                .with_context(|| format!("chown {}", dir.display()))?;
        }
        chown_tree(&c.pg_root, r)?;
    }
    fs::set_permissions(&c.data_dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", c.data_dir.display()))?;
    Ok(())
}

/// Recursive chown that only writes where the owner differs, so a restart of a large, already-owned data
/// directory costs a walk and no writes. Symlinks are not followed.
fn chown_tree(root: &Path, r: RunAs) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if meta.uid() != r.uid.as_raw() || meta.gid() != r.gid.as_raw() {
        std::os::unix::fs::lchown(root, Some(r.uid.as_raw()), Some(r.gid.as_raw()))
            .with_context(|| format!("chown {}", root.display()))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
            chown_tree(&entry?.path(), r)?;
        }
    }
    Ok(())
}
