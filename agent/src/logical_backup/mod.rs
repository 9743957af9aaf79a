//! Logical backups (`pgherd-agent logical-backup run|list|restore`): the program the per-cluster CronJob
//! runs in place of Zalando's `logical-backup/dump.sh`, and the restore tooling Zalando never had.
//!
//! One directory per backup under Zalando's prefix, the globals and each database dumped separately in
//! pg_dump's custom format, streamed through zstd into multipart uploads, and a manifest written last
//! (layout.rs); retention after a success (retention.rs); list and restore, including Zalando's own
//! `{epoch}.sql.gz` dumps (restore.rs). User documentation: docs/logical-backup.md.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod dump;
pub mod globals;
pub mod layout;
pub mod pg;
pub mod report;
pub mod restore;
pub mod retention;
pub mod target;

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;

use crate::backup::store::{ObjectStore, Store};
use crate::incluster::InCluster;

use config::Config;
use layout::Manifest;
use retention::Decision;

/// The in-cluster API client when this runs in a pod (a service account is mounted), else `None`.
pub fn in_cluster() -> Option<InCluster> {
    let api = InCluster::from_env(|k| std::env::var(k).ok());
    (std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && api.service_account.join("token").exists())
    .then_some(api)
}

/// What a successful run did.
pub struct Outcome {
    pub manifest: Manifest,
    pub took: std::time::Duration,
    pub retention: Decision,
}

/// One scheduled run: check S3, choose the host, dump, then apply retention. `jobs`: databases dumped at
/// the same time.
pub async fn run(config: &Config, api: Option<&InCluster>, jobs: usize) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let store = Store::new(config.store.clone()).await;
    // Fail before loading the database when the bucket cannot be reached or read.
    catalog::load(&store, &config.base)
        .await
        .context("S3 is not usable, nothing was dumped or deleted")?;
    let host = match (&config.pghost, api) {
        (Some(_), _) => None,
        (None, Some(api)) => {
            let t = target::find(config, api).await?;
            tracing::info!(pod = t.pod, ip = t.ip, "dumping from this pod");
            Some(t.ip)
        }
        (None, None) => anyhow::bail!(
            "PGHOST is not set and this is not a Kubernetes pod (no service account): set PGHOST to the server to dump"
        ),
    };
    let tools = pg::Tools::new(config.pg_version.as_deref(), host);
    tools
        .wait_ready(config.connect_retries, config.connect_delay)
        .await?;
    let manifest = dump::run(&store, &config.base, &tools, jobs).await?;
    let took = started.elapsed();
    let retention = apply_retention(&store, config, &manifest.id)
        .await
        .with_context(|| format!("backup {} is complete, but retention failed", manifest.id))?;
    Ok(Outcome {
        manifest,
        took,
        retention,
    })
}

async fn apply_retention(store: &Store, config: &Config, keep: &str) -> anyhow::Result<Decision> {
    let listing = catalog::load(store, &config.base).await?;
    let incomplete: Vec<String> = listing.incomplete.keys().cloned().collect();
    let decision = retention::decide(
        &listing.complete,
        &incomplete,
        &listing.zalando,
        config.retention,
        Utc::now(),
        keep,
    );
    // Manifests first: a backup whose deletion is cut short is then merely incomplete, never half-there.
    let mut manifests = Vec::new();
    let mut rest = Vec::new();
    for id in decision.backups.iter().chain(&decision.incomplete) {
        for key in catalog::keys_of(&listing, &config.base, id) {
            if key.ends_with(&format!("/{}", layout::MANIFEST)) {
                manifests.push(key);
            } else {
                rest.push(key);
            }
        }
    }
    rest.extend(
        decision
            .zalando
            .iter()
            .map(|z| format!("{}{z}", config.base)),
    );
    store.delete(&manifests).await?;
    store.delete(&rest).await?;
    Ok(decision)
}
