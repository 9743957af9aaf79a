//! `logical-backup restore`: globals, then one database or all of them, into whatever cluster the libpq
//! environment points at (the same one under a new name, or another one). Zalando's `{epoch}.sql.gz` dumps
//! are replayed as a whole with psql.
//!
//! Every object's SHA-256 from the manifest is checked: before use when it goes through a temporary file
//! (`--jobs` > 1, which `pg_restore --jobs` needs because it seeks), or at the end of the stream when it is
//! piped straight into `pg_restore` (`--jobs 1`), in which case a mismatch fails the restore loudly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

use crate::backup::push::hashing;
use crate::backup::store::{self, ObjectStore, Store};

use super::catalog;
use super::dump::hex;
use super::globals::{self, Filter};
use super::layout::{Database, Listing, Manifest, Object};
use super::pg::{self, Tools};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Catalog(#[from] catalog::Error),
    #[error(transparent)]
    Pg(#[from] pg::Error),
    #[error("no logical backup under {location}")]
    NoBackups { location: String },
    #[error("no backup {backup:?} under {location}; `pgherd-agent logical-backup list` shows what is there")]
    NotFound { backup: String, location: String },
    #[error(
        "backup {0} has no manifest (the run that wrote it was interrupted): it is never restored"
    )]
    Incomplete(String),
    #[error("{0} is a Zalando pg_dumpall script: it restores only as a whole (--all); restore it into a scratch cluster and pg_dump the database from there")]
    ZalandoNeedsAll(String),
    #[error("backup {id} has no database {database:?}; it has: {available}")]
    NoSuchDatabase {
        id: String,
        database: String,
        available: String,
    },
    #[error("database {0:?} exists and holds tables; restore under another name (--as NEWNAME) or pass --clean to replace the objects the dump contains")]
    NotEmpty(String),
    #[error("s3://{bucket}/{key} is listed in the manifest but missing")]
    Missing { bucket: String, key: String },
    #[error("s3://{bucket}/{key}: SHA-256 {actual} does not match the manifest's {expected}{}", if *.streamed { "; what was restored from it cannot be trusted, drop it" } else { "; nothing was restored from it" })]
    Checksum {
        bucket: String,
        key: String,
        expected: String,
        actual: String,
        streamed: bool,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("restoring database {database:?} failed ({status}): {stderr}")]
    Restore {
        database: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {count} statement(s) failed: {first}")]
    Statements {
        what: String,
        count: usize,
        first: String,
    },
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// A backup id, a Zalando file (`1733370000.sql.gz` or `1733370000`), or `latest`.
    pub backup: String,
    /// `None`: every database.
    pub database: Option<String>,
    pub rename: Option<String>,
    pub globals: bool,
    pub clean: bool,
    pub jobs: usize,
    pub work_dir: PathBuf,
}

/// What was done, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub source: String,
    pub databases: Vec<String>,
    /// Roles that existed in the target and were left as they were.
    pub roles_kept: BTreeSet<String>,
    /// `already exists` errors of a Zalando script (expected in a cluster with objects of its own).
    pub already_existed: usize,
    pub bytes: u64,
}

enum Source {
    Pgherd(String),
    Zalando(String),
}

fn resolve(listing: &Listing, backup: &str, location: &str) -> Result<Source, Error> {
    if backup == "latest" {
        return match (listing.complete.first(), listing.zalando.first()) {
            (Some(id), _) => Ok(Source::Pgherd(id.clone())),
            (None, Some(z)) => Ok(Source::Zalando(z.name.clone())),
            (None, None) => Err(Error::NoBackups {
                location: location.into(),
            }),
        };
    }
    if listing.complete.iter().any(|id| id == backup) {
        return Ok(Source::Pgherd(backup.into()));
    }
    if listing.incomplete.contains_key(backup) {
        return Err(Error::Incomplete(backup.into()));
    }
    let file = if backup.ends_with(".sql.gz") {
        backup.to_string()
    } else {
        format!("{backup}.sql.gz")
    };
    match listing.zalando.iter().find(|z| z.name == file) {
        Some(z) => Ok(Source::Zalando(z.name.clone())),
        None => Err(Error::NotFound {
            backup: backup.into(),
            location: location.into(),
        }),
    }
}

pub async fn restore(
    store: &Store,
    base: &str,
    tools: &Tools,
    opts: &Options,
) -> Result<Report, Error> {
    let location = format!("s3://{}/{base}", store.settings().bucket);
    let listing = catalog::load(store, base).await?;
    match resolve(&listing, &opts.backup, &location)? {
        Source::Zalando(name) if opts.database.is_some() => Err(Error::ZalandoNeedsAll(name)),
        Source::Zalando(name) => zalando(store, base, tools, &name).await,
        Source::Pgherd(id) => {
            let manifest = catalog::manifest(store, base, &id).await?;
            pgherd(store, base, tools, opts, &manifest).await
        }
    }
}

async fn existing_roles(tools: &Tools) -> Result<BTreeSet<String>, Error> {
    let v = tools
        .query_json(
            None,
            "SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles",
        )
        .await?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

async fn object_stream(store: &Store, key: &str) -> Result<impl AsyncRead + Send + Unpin, Error> {
    store
        .get(key)
        .await?
        .map(|(_, body)| body)
        .ok_or_else(|| Error::Missing {
            bucket: store.settings().bucket.clone(),
            key: key.into(),
        })
}

/// Feeds a SQL script through the globals filter into psql; returns psql's stderr.
async fn psql_script(
    tools: &Tools,
    script: impl AsyncRead + Unpin,
    filter: &mut Filter,
    what: &str,
) -> Result<String, Error> {
    let mut cmd = tools.command("psql");
    // A pg_dumpall script prints query results (set_config): nobody reads them.
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = tools.spawn(cmd)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stderr = pg::collect_stderr(child.stderr.take());
    let mut lines = BufReader::with_capacity(256 * 1024, script);
    let mut line = Vec::new();
    let io = |source| Error::Io {
        what: what.into(),
        source,
    };
    let fed: Result<(), Error> = async {
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).await.map_err(io)? == 0 {
                break;
            }
            if filter.keep(&String::from_utf8_lossy(&line)) {
                stdin.write_all(&line).await.map_err(io)?;
            }
        }
        stdin.shutdown().await.map_err(io)
    }
    .await;
    drop(stdin);
    let status = child.wait().await.map_err(io)?;
    let stderr = stderr.await.unwrap_or_default();
    fed?;
    if !status.success() {
        return Err(pg::Error::Failed {
            program: "psql".into(),
            status: status.to_string(),
            stderr: pg::tail(&stderr),
        }
        .into());
    }
    Ok(stderr)
}

async fn zalando(store: &Store, base: &str, tools: &Tools, name: &str) -> Result<Report, Error> {
    let key = format!("{base}{name}");
    let (hashed, state) = hashing(object_stream(store, &key).await?);
    let script = GzipDecoder::new(BufReader::with_capacity(256 * 1024, hashed));
    let mut filter = Filter::new(existing_roles(tools).await?);
    let stderr = psql_script(tools, script, &mut filter, &format!("replaying {name}")).await?;
    let (already_existed, others) = globals::errors(&stderr);
    if let Some(first) = others.first() {
        return Err(Error::Statements {
            what: format!("replaying the Zalando dump {name} with psql"),
            count: others.len(),
            first: first.clone(),
        });
    }
    let bytes = state.lock().expect("digest lock").1;
    Ok(Report {
        source: format!("Zalando dump {name}"),
        databases: vec!["(every database in the pg_dumpall script)".into()],
        roles_kept: filter.kept,
        already_existed,
        bytes,
    })
}

async fn pgherd(
    store: &Store,
    base: &str,
    tools: &Tools,
    opts: &Options,
    m: &Manifest,
) -> Result<Report, Error> {
    let dir = format!("{base}{}/", m.id);
    let selected: Vec<&Database> = match &opts.database {
        None => m.databases.iter().collect(),
        Some(name) => vec![m
            .databases
            .iter()
            .find(|d| &d.name == name)
            .ok_or_else(|| Error::NoSuchDatabase {
                id: m.id.clone(),
                database: name.clone(),
                available: m
                    .databases
                    .iter()
                    .map(|d| format!("{:?}", d.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?],
    };
    let mut report = Report {
        source: format!("backup {}", m.id),
        ..Default::default()
    };
    // Refuse before touching anything when a target database holds data.
    let mut plans = Vec::new();
    for db in selected {
        let target = opts.rename.clone().unwrap_or_else(|| db.name.clone());
        let exists = database_exists(tools, &target).await?;
        if exists && !opts.clean && has_tables(tools, &target).await? {
            return Err(Error::NotEmpty(target));
        }
        plans.push((db, target, exists));
    }
    if opts.globals {
        let key = format!("{dir}{}", m.globals.key);
        let bytes = fetch_verified(store, &key, &m.globals).await?;
        let mut filter = Filter::new(existing_roles(tools).await?);
        let script = ZstdDecoder::new(&bytes[..]);
        let stderr = psql_script(tools, script, &mut filter, "applying the globals").await?;
        let (_, errors) = globals::errors(&stderr);
        if let Some(first) = errors.first() {
            return Err(Error::Statements {
                what: "applying the globals (use --no-globals to skip them)".into(),
                count: errors.len(),
                first: first.clone(),
            });
        }
        report.roles_kept = filter.kept;
        report.bytes += m.globals.stored_bytes;
    }
    for (db, target, exists) in plans {
        restore_database(store, &dir, tools, opts, db, &target, exists).await?;
        tracing::info!(database = db.name, target, "database restored");
        report.bytes += db.object.stored_bytes;
        report.databases.push(if target == db.name {
            target
        } else {
            format!("{} as {target}", db.name)
        });
    }
    Ok(report)
}

async fn database_exists(tools: &Tools, name: &str) -> Result<bool, Error> {
    let sql = format!(
        "SELECT to_json(EXISTS (SELECT 1 FROM pg_database WHERE datname = {}))",
        pg::literal(name)
    );
    Ok(tools
        .query_json(None, &sql)
        .await?
        .as_bool()
        .unwrap_or(false))
}

/// Tables, views, sequences outside the system schemas that no extension owns: what a restore would
/// collide with. Functions and schemas an image installs everywhere (Spilo's `user_management`) do not
/// count; `pg_restore --clean --if-exists` replaces those.
async fn has_tables(tools: &Tools, name: &str) -> Result<bool, Error> {
    const SQL: &str = "SELECT to_json(EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')))";
    Ok(tools
        .query_json(Some(name), SQL)
        .await?
        .as_bool()
        .unwrap_or(true))
}

async fn restore_database(
    store: &Store,
    dir: &str,
    tools: &Tools,
    opts: &Options,
    db: &Database,
    target: &str,
    exists: bool,
) -> Result<(), Error> {
    let key = format!("{dir}{}", db.object.key);
    // Downloaded and verified before anything is created in the target.
    let file = match opts.jobs {
        1 => None,
        _ => Some(download(store, &key, &db.object, &opts.work_dir).await?),
    };
    let mut cmd = tools.command("pg_restore");
    cmd.args(["--no-password", "--exit-on-error"])
        .stdout(std::process::Stdio::null());
    if exists {
        // Only the objects in the dump are dropped and recreated; the database itself stays.
        cmd.args(["--clean", "--if-exists"])
            .arg(format!("--dbname={}", pg::conninfo_dbname(target)));
    } else if target == db.name {
        // pg_restore creates it as it was: owner, encoding, locale, settings and privileges. It connects
        // to the maintenance database to do that.
        let maintenance = std::env::var("PGDATABASE").unwrap_or_else(|_| "postgres".into());
        cmd.arg("--create")
            .arg(format!("--dbname={}", pg::conninfo_dbname(&maintenance)));
    } else {
        let sql = format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0",
            pg::ident(target),
            pg::ident(&db.owner)
        );
        let mut create = tools.command("psql");
        create.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql]);
        tools.output(create).await?;
        cmd.arg(format!("--dbname={}", pg::conninfo_dbname(target)));
    }
    let failed = |status: std::process::ExitStatus, stderr: &str| Error::Restore {
        database: target.into(),
        status: status.to_string(),
        stderr: pg::tail(stderr),
    };
    if let Some(file) = file {
        cmd.arg(format!("--jobs={}", opts.jobs)).arg(file.path());
        let mut child = tools.spawn(cmd)?;
        let stderr = pg::collect_stderr(child.stderr.take());
        let status = child.wait().await.map_err(|source| Error::Io {
            what: "pg_restore".into(),
            source,
        })?;
        let stderr = stderr.await.unwrap_or_default();
        return if status.success() {
            Ok(())
        } else {
            Err(failed(status, &stderr))
        };
    }
    cmd.stdin(std::process::Stdio::piped());
    let (hashed, state) = hashing(object_stream(store, &key).await?);
    let mut decoded = ZstdDecoder::new(BufReader::with_capacity(256 * 1024, hashed));
    let mut child = tools.spawn(cmd)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stderr = pg::collect_stderr(child.stderr.take());
    let copied = tokio::io::copy(&mut decoded, &mut stdin).await;
    let closed = stdin.shutdown().await;
    drop(stdin);
    let status = child.wait().await.map_err(|source| Error::Io {
        what: "pg_restore".into(),
        source,
    })?;
    let stderr = stderr.await.unwrap_or_default();
    if !status.success() {
        // pg_restore's own error explains a broken pipe on our side.
        return Err(failed(status, &stderr));
    }
    copied.and(closed).map_err(|source| Error::Io {
        what: format!(
            "streaming s3://{}/{key} into pg_restore",
            store.settings().bucket
        ),
        source,
    })?;
    let (hasher, _) = std::mem::take(&mut *state.lock().expect("digest lock"));
    check(store, &key, &db.object, &hasher.finalize(), true)
}

fn check(
    store: &Store,
    key: &str,
    object: &Object,
    digest: &[u8],
    streamed: bool,
) -> Result<(), Error> {
    let actual = hex(digest);
    if actual == object.sha256 {
        return Ok(());
    }
    Err(Error::Checksum {
        bucket: store.settings().bucket.clone(),
        key: key.into(),
        expected: object.sha256.clone(),
        actual,
        streamed,
    })
}

/// A small object (the globals) into memory, checked.
async fn fetch_verified(store: &Store, key: &str, object: &Object) -> Result<Vec<u8>, Error> {
    let mut body = object_stream(store, key).await?;
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut bytes)
        .await
        .map_err(|source| Error::Io {
            what: format!("reading s3://{}/{key}", store.settings().bucket),
            source,
        })?;
    check(store, key, object, &sha2::Sha256::digest(&bytes), false)?;
    Ok(bytes)
}

/// A database dump, decompressed into a temporary file in `work_dir` and checked before anyone reads it.
async fn download(
    store: &Store,
    key: &str,
    object: &Object,
    work_dir: &Path,
) -> Result<tempfile::NamedTempFile, Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    let file = tempfile::Builder::new()
        .prefix("pgherd-restore-")
        .suffix(".dump")
        .tempfile_in(work_dir)
        .map_err(io(format!(
            "creating a temporary file in {} (--work-dir)",
            work_dir.display()
        )))?;
    let (hashed, state) = hashing(object_stream(store, key).await?);
    let mut decoded = ZstdDecoder::new(BufReader::with_capacity(256 * 1024, hashed));
    let mut out = tokio::fs::File::from_std(
        file.reopen()
            .map_err(io("reopening the temporary file".into()))?,
    );
    tokio::io::copy(&mut decoded, &mut out)
        .await
        .map_err(io(format!(
            "downloading s3://{}/{key} to {}",
            store.settings().bucket,
            file.path().display()
        )))?;
    out.flush()
        .await
        .map_err(io("writing the temporary file".into()))?;
    let (hasher, _) = std::mem::take(&mut *state.lock().expect("digest lock"));
    check(store, key, object, &hasher.finalize(), false)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical_backup::layout;

    #[test]
    fn which_backup_a_name_means() {
        let l = layout::classify([
            ("20261201T000000Z/manifest.json", 1),
            ("20261202T000000Z/manifest.json", 1),
            ("20261203T000000Z/globals.sql.zst", 1),
            ("1733370000.sql.gz", 1),
        ]);
        let id = |b: &str| match resolve(&l, b, "s3://b/p/") {
            Ok(Source::Pgherd(id)) => id,
            Ok(Source::Zalando(z)) => format!("zalando {z}"),
            Err(e) => format!("error {e}"),
        };
        assert_eq!(id("latest"), "20261202T000000Z");
        assert_eq!(id("20261201T000000Z"), "20261201T000000Z");
        assert_eq!(id("1733370000"), "zalando 1733370000.sql.gz");
        assert_eq!(id("1733370000.sql.gz"), "zalando 1733370000.sql.gz");
        assert!(id("20261203T000000Z").contains("has no manifest"));
        assert!(id("20261204T000000Z").contains("logical-backup list"));
        let only_zalando = layout::classify([("1733370000.sql.gz", 1)]);
        assert!(matches!(
            resolve(&only_zalando, "latest", ""),
            Ok(Source::Zalando(_))
        ));
        assert!(matches!(
            resolve(&Listing::default(), "latest", ""),
            Err(Error::NoBackups { .. })
        ));
    }
}
