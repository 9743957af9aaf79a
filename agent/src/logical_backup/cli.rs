//! `pgherd-agent logical-backup …`: arguments and output. Settings come from the CronJob's environment
//! (config.rs); the libpq variables go to the Postgres programs unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::backup::store::Store;

use super::config::{Config, Overrides};
use super::{catalog, in_cluster, pg, report, restore};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Take a logical backup now (what the CronJob runs) and apply retention.
    Run {
        /// Databases dumped at the same time.
        #[arg(long, env = "LOGICAL_BACKUP_JOBS", default_value_t = 2)]
        jobs: usize,
    },
    /// Complete backups and Zalando dumps under the cluster's prefix, newest first.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Restore into the server the libpq environment names (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE).
    Restore(RestoreArgs),
}

/// Another cluster's prefix in the same bucket.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// Cluster name whose backups to use (default: SCOPE).
    #[arg(long)]
    scope: Option<String>,
    /// Its `/{uid}` suffix (default: LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX; pass "" for none).
    #[arg(long)]
    scope_suffix: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["database", "all"])))]
pub struct RestoreArgs {
    /// Backup id, Zalando file (`1733370000.sql.gz`), or `latest`.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// Restore this database only.
    #[arg(long)]
    database: Option<String>,
    /// Under this name instead (the same cluster can hold both).
    #[arg(long = "as", requires = "database")]
    rename: Option<String>,
    /// Every database of the backup.
    #[arg(long)]
    all: bool,
    /// Do not apply roles and memberships first.
    #[arg(long)]
    no_globals: bool,
    /// Restore into an existing database that holds tables, replacing the objects the dump contains.
    #[arg(long)]
    clean: bool,
    /// pg_restore --jobs; above 1 each dump is downloaded to --work-dir first (pg_restore seeks in it).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Directory for those downloads (default: $TMPDIR, else /tmp).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    scope: ScopeArgs,
}

fn env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn config(scope: Option<&ScopeArgs>) -> anyhow::Result<Config> {
    let overrides = scope
        .map(|s| Overrides {
            scope: s.scope.clone(),
            scope_suffix: s.scope_suffix.clone(),
        })
        .unwrap_or_default();
    Ok(Config::from_env(&env(), &overrides)?)
}

pub fn main(cmd: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            Command::Run { jobs } => run(jobs).await,
            Command::List { json, scope } => list(json, &scope).await,
            Command::Restore(args) => restore_main(args).await,
        }
    })
}

async fn run(jobs: usize) -> anyhow::Result<ExitCode> {
    let config = config(None)?;
    let api = in_cluster();
    match super::run(&config, api.as_ref(), jobs).await {
        Ok(outcome) => {
            let line = report::success(&outcome.manifest, outcome.took, &config.location());
            println!("{line}");
            if let Some(r) = report::retention(&outcome.retention) {
                println!("{r}");
            }
            report::post(api.as_ref(), &config, report::REASON_OK, &line).await;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let line = format!("logical backup failed: {e:#}");
            report::post(api.as_ref(), &config, report::REASON_FAILED, &line).await;
            Err(e.context("logical backup failed"))
        }
    }
}

async fn list(as_json: bool, scope: &ScopeArgs) -> anyhow::Result<ExitCode> {
    let config = config(Some(scope))?;
    let store = Store::new(config.store.clone()).await;
    let listing = catalog::load(&store, &config.base).await?;
    let mut rows = Vec::new();
    for id in &listing.complete {
        let m = catalog::manifest(&store, &config.base, id).await?;
        rows.push(json!({
            "kind": "pgherd",
            "id": m.id,
            "time": m.started_at,
            "finished": m.finished_at,
            "stored_bytes": m.stored_bytes(),
            "size_bytes": m.size_bytes(),
            "server_version": m.server_version,
            "databases": m.databases.iter().map(|d| &d.name).collect::<Vec<_>>(),
        }));
    }
    for z in &listing.zalando {
        rows.push(json!({
            "kind": "zalando",
            "id": z.name,
            "time": z.at,
            "stored_bytes": z.size,
        }));
    }
    // RFC 3339 UTC times sort as text.
    rows.sort_by(|a, b| b["time"].as_str().cmp(&a["time"].as_str()));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no logical backups under {}", config.location());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<21} {:>10}  DATABASES",
        "ID", "TIME (UTC)", "SIZE"
    );
    for r in &rows {
        let time = r["time"].as_str().unwrap_or_default().replace('T', " ");
        let dbs = match r["databases"].as_array() {
            Some(names) => names
                .iter()
                .filter_map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            None => "(Zalando pg_dumpall: restore with --all)".into(),
        };
        println!(
            "{:<20} {:<21} {:>10}  {dbs}",
            r["id"].as_str().unwrap_or_default(),
            time.trim_end_matches('Z'),
            report::bytes(r["stored_bytes"].as_u64().unwrap_or(0)),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore_main(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = config(Some(&args.scope))?;
    let store = Store::new(config.store.clone()).await;
    let tools = pg::Tools::new(config.pg_version.as_deref(), None);
    let opts = restore::Options {
        backup: args.backup,
        database: if args.all { None } else { args.database },
        rename: args.rename,
        globals: !args.no_globals,
        clean: args.clean,
        jobs: args.jobs.max(1),
        work_dir: args.work_dir.unwrap_or_else(std::env::temp_dir),
    };
    let r = restore::restore(&store, &config.base, &tools, &opts)
        .await
        .context("restore failed")?;
    let kept = if r.roles_kept.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = r.roles_kept.iter().map(String::as_str).collect();
        format!(
            "; {} role(s) already existed and were left as they are: {}",
            names.len(),
            names.join(", ")
        )
    };
    let existed = if r.already_existed > 0 {
        format!(
            "; {} statement(s) skipped: object already exists",
            r.already_existed
        )
    } else {
        String::new()
    };
    println!(
        "restored {} into {}: {} ({} read){kept}{existed}",
        r.source,
        tools.host(),
        r.databases.join(", "),
        report::bytes(r.bytes),
    );
    Ok(ExitCode::SUCCESS)
}
