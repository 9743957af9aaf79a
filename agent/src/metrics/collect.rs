//! Runs a [`QuerySet`] against the local server: the database half of the query engine.
//!
//! Execution model (CloudNativePG's, which users trust): every query runs in its own read-only transaction
//! as the dedicated role `pgherd_monitor` (member of pg_monitor) over the local Unix socket, with
//! `search_path` pinned so a user-created function cannot shadow a catalog one, and with a server-side
//! statement_timeout backed by a client-side deadline. A failing query is recorded and skipped; it never
//! fails the scrape. Connections are kept between collections (one per database) and re-opened on failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage, SimpleQueryRow};

use super::families::{Families, Row};
use super::queries::{glob_match, Query, QuerySet};
use super::version::{self, Version};

/// The role the exporter connects as.
pub const MONITOR_ROLE: &str = "pgherd_monitor";
const MONITOR_ROLE_SQL: &str = include_str!("monitor_role.sql");
const APPLICATION_NAME: &str = "pgherd_metrics_exporter";

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub socket_dirs: Vec<PathBuf>,
    pub port: u16,
    /// Used only to create [`MONITOR_ROLE`] on a primary that lacks it.
    pub superuser: String,
    /// Database for queries without `target_databases`.
    pub database: String,
    pub query_timeout: Duration,
}

/// What one collection produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub families: Families,
    /// The server answered as the monitoring role.
    pub up: bool,
    pub server_version: Option<Version>,
    pub in_recovery: Option<bool>,
    /// `(query, message)` for every failed query or conversion problem.
    pub errors: Vec<(String, String)>,
    /// `(query, seconds)` for every executed query (summed over databases).
    pub durations: Vec<(String, f64)>,
    /// Why the server could not be reached, when `up` is false.
    pub down_reason: Option<String>,
}

pub struct Engine {
    target: Target,
    conns: HashMap<String, Arc<Client>>,
}

impl Row for SimpleQueryRow {
    fn text(&self, column: &str) -> Option<Option<&str>> {
        let idx = self.columns().iter().position(|c| c.name() == column)?;
        Some(self.get(idx))
    }
}

impl Engine {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            conns: HashMap::new(),
        }
    }

    pub async fn collect(&mut self, set: &QuerySet) -> Outcome {
        let mut out = Outcome::default();
        let default_db = self.target.database.clone();
        let (version, in_recovery) = match self.server_facts(&default_db).await {
            Ok(facts) => facts,
            Err(e) => {
                out.down_reason = Some(e);
                return out;
            }
        };
        out.up = true;
        out.server_version = Some(version);
        out.in_recovery = Some(in_recovery);
        let wants_dbs = set.queries.iter().any(|q| !q.target_databases.is_empty());
        let databases = if wants_dbs {
            match self.databases(&default_db).await {
                Ok(d) => d,
                Err(e) => {
                    out.errors.push(("target_databases".into(), e));
                    vec![default_db.clone()]
                }
            }
        } else {
            vec![default_db.clone()]
        };
        // Connections to databases that no longer exist are dropped.
        self.conns
            .retain(|db, c| !c.is_closed() && (db == &default_db || databases.contains(db)));
        for q in &set.queries {
            if q.server_versions
                .as_ref()
                .is_some_and(|r| !r.matches(version))
                || (q.primary_only && in_recovery)
            {
                continue;
            }
            let dbs: Vec<&String> = if q.target_databases.is_empty() {
                vec![&default_db]
            } else {
                databases
                    .iter()
                    .filter(|d| q.target_databases.iter().any(|p| glob_match(p, d)))
                    .collect()
            };
            let started = Instant::now();
            for db in dbs {
                match self.run(db, q).await {
                    Ok(rows) => {
                        for e in out.families.add_rows(q, version, &rows) {
                            out.errors.push((q.name.clone(), e.0));
                        }
                    }
                    Err(e) => out
                        .errors
                        .push((q.name.clone(), format!("database {db}: {e}"))),
                }
            }
            out.durations
                .push((q.name.clone(), started.elapsed().as_secs_f64()));
        }
        out
    }

    async fn server_facts(&mut self, db: &str) -> Result<(Version, bool), String> {
        let client = self.client(db).await?;
        let rows = self
            .deadline(
                client.simple_query(
                    "SELECT current_setting('server_version_num'), pg_catalog.pg_is_in_recovery()",
                ),
                db,
            )
            .await?;
        let row = first_row(&rows).ok_or("the server returned no version row")?;
        let num: u64 = row
            .get(0)
            .and_then(|v| v.parse().ok())
            .ok_or("server_version_num is not a number")?;
        Ok((
            version::from_server_version_num(num),
            row.get(1) == Some("t"),
        ))
    }

    async fn databases(&mut self, db: &str) -> Result<Vec<String>, String> {
        let client = self.client(db).await?;
        let rows = self
            .deadline(
                client.simple_query(
                    "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate \
                     AND has_database_privilege(datname, 'CONNECT') ORDER BY 1",
                ),
                db,
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect())
    }

    /// Runs one query (and its predicate) in a read-only transaction: one round trip when it succeeds.
    async fn run(&mut self, db: &str, q: &Query) -> Result<Vec<SimpleQueryRow>, String> {
        let client = self.client(db).await?;
        let sql = &q.sql;
        let result = async {
            if let Some(predicate) = &q.predicate {
                let msgs = client
                    .simple_query(&format!("BEGIN READ ONLY;\n{predicate}\n"))
                    .await?;
                if first_row(&msgs).and_then(|r| r.get(0)) != Some("t") {
                    client.simple_query("ROLLBACK").await?;
                    return Ok(Vec::new());
                }
                client.simple_query(&format!("{sql}\n;COMMIT")).await
            } else {
                client
                    .simple_query(&format!("BEGIN READ ONLY;\n{sql}\n;COMMIT"))
                    .await
            }
        };
        match self.deadline(result, db).await {
            Ok(msgs) => Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .collect()),
            Err(e) => {
                // The transaction is aborted (or still open after a client-side timeout): clear it so the
                // connection is usable by the next query.
                if let Some(c) = self.conns.get(db) {
                    if c.simple_query("ROLLBACK").await.is_err() {
                        self.conns.remove(db);
                    }
                }
                Err(e)
            }
        }
    }

    /// Applies the client-side deadline. On expiry the connection is dropped (its backend is cancelled),
    /// because a server that ignored statement_timeout is not one to reuse.
    async fn deadline<T>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
        db: &str,
    ) -> Result<T, String> {
        let limit = self.target.query_timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => {
                if let Some(c) = self.conns.remove(db) {
                    let token = c.cancel_token();
                    tokio::spawn(async move {
                        let _ = token.cancel_query(NoTls).await;
                    });
                }
                Err(format!("no answer within {limit:?}"))
            }
        }
    }

    /// The cached connection to `db`, opened (and the monitoring role created on a primary) when needed.
    async fn client(&mut self, db: &str) -> Result<Arc<Client>, String> {
        if let Some(c) = self.conns.get(db).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = Arc::new(match self.connect(MONITOR_ROLE, db).await {
            Ok(c) => c,
            Err(e) if is_missing_role(&e) => {
                self.create_monitor_role(db).await?;
                self.connect(MONITOR_ROLE, db)
                    .await
                    .map_err(|e| describe(&e))?
            }
            Err(e) => return Err(describe(&e)),
        });
        self.conns.insert(db.to_string(), client.clone());
        Ok(client)
    }

    async fn connect(&self, user: &str, db: &str) -> Result<Client, tokio_postgres::Error> {
        let t = &self.target;
        let socket_dir = t
            .socket_dirs
            .iter()
            .find(|d| d.join(format!(".s.PGSQL.{}", t.port)).exists())
            .or(t.socket_dirs.first())
            .cloned()
            .unwrap_or_else(|| PathBuf::from("/var/run/postgresql"));
        let ms = t.query_timeout.as_millis().max(1);
        let mut cfg = Config::new();
        cfg.host_path(socket_dir)
            .port(t.port)
            .user(user)
            .dbname(db)
            .application_name(APPLICATION_NAME)
            .connect_timeout(t.query_timeout)
            .options(format!(
                "-c statement_timeout={ms} -c lock_timeout={ms} -c search_path=pg_catalog,public,pg_temp"
            ));
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Creates the monitoring role when this server is a primary; on a replica it arrives by replication.
    async fn create_monitor_role(&self, db: &str) -> Result<(), String> {
        let su = self
            .connect(&self.target.superuser, db)
            .await
            .map_err(|e| {
                format!(
                    "role {MONITOR_ROLE} is missing and the superuser cannot connect: {}",
                    describe(&e)
                )
            })?;
        let rows = su
            .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
            .await
            .map_err(|e| describe(&e))?;
        if first_row(&rows).and_then(|r| r.get(0)) != Some("f") {
            return Err(format!(
                "role {MONITOR_ROLE} does not exist yet on this replica (the primary creates it)"
            ));
        }
        // A promotion must not wait for a synchronous standby that may not exist yet.
        su.batch_execute("SET synchronous_commit = local")
            .await
            .map_err(|e| describe(&e))?;
        su.batch_execute(MONITOR_ROLE_SQL)
            .await
            .map_err(|e| format!("creating role {MONITOR_ROLE}: {}", describe(&e)))?;
        tracing::info!(role = MONITOR_ROLE, "created the metrics role");
        Ok(())
    }
}

fn first_row(msgs: &[SimpleQueryMessage]) -> Option<&SimpleQueryRow> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })
}

fn is_missing_role(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
}

/// The server's message (tokio-postgres' Display of a DbError is just "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}
