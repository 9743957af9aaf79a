//! Local Postgres parameters that follow Patroni's dynamic configuration.
//!
//! Spilo keeps `shared_buffers`, `shared_preload_libraries`, the logging and TLS settings and a few more in
//! Patroni's *local* configuration, and Patroni lets a local value override the DCS's. Zalando's operator puts
//! the manifest's values for those into `SPILO_CONFIGURATION`, so changing one meant recreating every pod
//! (postgres-operator `pkg/cluster/k8sres.go`, `isBootstrapOnlyParameter`). pgherd's coordinator writes the
//! manifest's values to the DCS as well (`PATCH /config`); this task copies a DCS value over the local value of
//! the same name, rewrites the Patroni configuration and has Patroni reload it. Patroni then marks the member
//! `pending_restart` where Postgres needs a restart, and the coordinator restarts the members in a safe order
//! instead of replacing pods.
//!
//! A member announces that it does this with the Patroni tag [`TAG`], so a coordinator facing a member without
//! it (a Spilo image, or a REST API that serves TLS only) still replaces the pod. Without a DCS value a local
//! parameter keeps what `configure` rendered at start, so under Zalando's operator, which never writes these
//! names to the DCS, nothing changes. See docs/coordinator.md, "What needs a new pod".

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// The Patroni tag saying "this member's local parameters follow the DCS".
pub use pgherd_shared::patroni::FOLLOWS_DCS_TAG as TAG;

/// How often the DCS is compared with the local configuration. Short against Patroni's `loop_wait`, which
/// delays the reload anyway.
const INTERVAL: Duration = Duration::from_secs(3);

/// Local parameters the agent decides itself, whatever the DCS says: `archive_mode` is in the DCS by default
/// (`on`), and the local value exists precisely to override that.
const AGENT_OWNED: &[&str] = &["archive_mode"];

/// The local parameters to run with: each one rendered at start takes the DCS's value when the DCS has one.
pub fn follow(start: &Map<String, Value>, dynamic: &Value) -> Map<String, Value> {
    let dcs = dynamic.pointer("/postgresql/parameters");
    start
        .iter()
        .map(|(name, rendered)| {
            let from_dcs = dcs
                .and_then(|p| p.get(name))
                .filter(|v| !v.is_null() && !AGENT_OWNED.contains(&name.as_str()));
            (name.clone(), from_dcs.unwrap_or(rendered).clone())
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn load(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|source| Error::Parse {
        path: path.into(),
        source,
    })
}

fn local_parameters(doc: &Value) -> Map<String, Value> {
    doc.pointer("/postgresql/parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Replaces the file's `postgresql.parameters` with `parameters`, keeping its mode and owner (it holds
/// passwords: 0600, the postgres user). Written beside it and renamed, so Patroni never reads half a file.
fn store(path: &Path, mut doc: Value, parameters: Map<String, Value>) -> Result<(), Error> {
    let write_err = |source| Error::Write {
        path: path.into(),
        source,
    };
    doc["postgresql"]["parameters"] = Value::Object(parameters);
    let meta = std::fs::metadata(path).map_err(write_err)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    std::fs::write(tmp.path(), crate::configure::yaml::to_yaml(&doc)).map_err(write_err)?;
    std::fs::set_permissions(
        tmp.path(),
        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
    )
    .map_err(write_err)?;
    std::os::unix::fs::chown(tmp.path(), Some(meta.uid()), Some(meta.gid())).map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// One comparison; `true` when the configuration was rewritten and Patroni must reload it.
async fn step(
    client: &reqwest::Client,
    api: &str,
    path: &Path,
    start: &Map<String, Value>,
) -> anyhow::Result<bool> {
    let dynamic: Value = client
        .get(format!("{api}/config"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let doc = load(path)?;
    let want = follow(start, &dynamic);
    if want == local_parameters(&doc) {
        return Ok(false);
    }
    let changed: Vec<&String> = want
        .iter()
        .filter(|(k, v)| local_parameters(&doc).get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    tracing::info!(parameters = ?changed, "local Postgres parameters follow the DCS; Patroni reloads");
    store(path, doc, want)?;
    Ok(true)
}

/// Starts the task on the supervisor's runtime. `api` is the member's plain-HTTP REST API on loopback; without
/// one the configuration never carries [`TAG`] and nothing is started. The reload is a SIGHUP to the agent
/// itself, which the supervisor forwards to Patroni like any other.
pub fn spawn(path: &Path, api: Option<&str>) {
    let Some(api) = api.map(str::to_string) else {
        return;
    };
    let start = match load(path) {
        Ok(doc) => local_parameters(&doc),
        Err(e) => {
            tracing::warn!(error = %e, "local parameters will not follow the DCS");
            return;
        }
    };
    let path = path.to_path_buf();
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "local parameters will not follow the DCS");
                return;
            }
        };
        loop {
            tokio::time::sleep(INTERVAL).await;
            match step(&client, &api, &path, &start).await {
                Ok(true) => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::this(),
                        nix::sys::signal::Signal::SIGHUP,
                    );
                }
                Ok(false) => {}
                // Patroni not up yet, or restarting: the next round tries again.
                Err(e) => tracing::debug!(error = %e, "comparing local parameters with the DCS"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_dcs_value_replaces_the_local_one_of_the_same_name_only() {
        let start = map(json!({"shared_buffers": "819MB", "ssl": "on", "archive_mode": "always"}));
        let dynamic = json!({"postgresql": {"parameters": {
            "shared_buffers": "2GB", "work_mem": "8MB", "archive_mode": "on", "ssl": null}}});
        assert_eq!(
            follow(&start, &dynamic),
            map(json!({"shared_buffers": "2GB", "ssl": "on", "archive_mode": "always"}))
        );
    }

    #[test]
    fn without_a_dcs_value_the_rendered_one_comes_back() {
        let start = map(json!({"shared_buffers": "819MB"}));
        assert_eq!(follow(&start, &json!({})), start);
        assert_eq!(follow(&start, &json!({"postgresql": {}})), start);
    }

    #[test]
    fn store_keeps_mode_and_everything_but_the_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgres.yml");
        let doc = json!({"scope": "c", "postgresql": {"listen": "*:5432",
            "parameters": {"shared_buffers": "1MB"},
            "authentication": {"superuser": {"password": "on"}}}});
        std::fs::write(&path, crate::configure::yaml::to_yaml(&doc)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        store(
            &path,
            load(&path).unwrap(),
            map(json!({"shared_buffers": "2GB", "log_truncate_on_rotation": "on"})),
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&path).unwrap();
        assert_eq!(back["postgresql"]["parameters"]["shared_buffers"], "2GB");
        // Still a string for PyYAML (YAML 1.1), not a boolean.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("log_truncate_on_rotation: 'on'"), "{text}");
        assert_eq!(
            back["postgresql"]["authentication"]["superuser"]["password"],
            "on"
        );
        assert_eq!(back["scope"], "c");
    }
}
