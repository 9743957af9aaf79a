//! [`Postgres`] on a real server: the primary, as the superuser, over TLS (`sslmode=require`, as upstream's
//! operator connects), one connection per database, opened on first use and kept for the sync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;

use super::catalog::{
    flags_of, parameters_of, Current, CurrentDatabase, CurrentRole, PgError, Postgres,
    DATABASES_SQL, DEFAULT_ACL_SQL, EXTENSIONS_SQL, ROLES_SQL, SCHEMAS_SQL,
};
use super::sql::{Statement, POSTGRES_DB};

pub struct Server {
    host: String,
    port: u16,
    user: String,
    password: String,
    clients: Mutex<BTreeMap<String, Arc<Client>>>,
}

impl Server {
    pub fn new(host: &str, port: u16, user: &str, password: &str) -> Self {
        Server {
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: password.to_string(),
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    fn target(&self, database: &str) -> String {
        format!("{}@{}:{}/{database}", self.user, self.host, self.port)
    }

    async fn client(&self, database: &str) -> Result<Arc<Client>, PgError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(database).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(database)
            .ssl_mode(SslMode::Require)
            .connect_timeout(Duration::from_secs(15))
            .application_name("pgherd-coordinator");
        let (client, connection) = config
            .connect(pgherd_shared::pgtls::require())
            .await
            .map_err(|e| PgError::Connect {
                target: self.target(database),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Postgres connection ended");
            }
        });
        let client = Arc::new(client);
        clients.insert(database.to_string(), client.clone());
        Ok(client)
    }

    async fn rows(
        &self,
        database: &str,
        sql: &str,
        what: &str,
    ) -> Result<Vec<tokio_postgres::Row>, PgError> {
        self.client(database)
            .await?
            .query(sql, &[])
            .await
            .map_err(|e| PgError::Query {
                what: format!("{what} in {database}"),
                message: error_text(&e),
            })
    }

    async fn pairs(
        &self,
        database: &str,
        sql: &str,
        what: &str,
    ) -> Result<Vec<(String, String)>, PgError> {
        Ok(self
            .rows(database, sql, what)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

/// The server's message with its detail, not tokio-postgres's bare "db error".
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

#[async_trait]
impl Postgres for Server {
    async fn read(&self, databases: &BTreeSet<String>) -> Result<Current, PgError> {
        let mut current = Current::default();
        for r in self.rows(POSTGRES_DB, ROLES_SQL, "reading roles").await? {
            let setconfig: Vec<String> = r.get(9);
            current.roles.insert(
                r.get(0),
                CurrentRole {
                    password: r.get(1),
                    flags: flags_of(
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                        r.get(7),
                        r.get(8),
                    ),
                    member_of: r.get::<_, Vec<String>>(10).into_iter().collect(),
                    parameters: parameters_of(&setconfig),
                },
            );
        }
        let owners = self
            .pairs(POSTGRES_DB, DATABASES_SQL, "reading databases")
            .await?;
        for (name, owner) in owners {
            let mut db = CurrentDatabase {
                owner,
                ..Default::default()
            };
            if databases.contains(&name) {
                db.schemas = self
                    .pairs(&name, SCHEMAS_SQL, "reading schemas")
                    .await?
                    .into_iter()
                    .collect();
                db.extensions = self
                    .pairs(&name, EXTENSIONS_SQL, "reading extensions")
                    .await?
                    .into_iter()
                    .collect();
                db.default_privileges = self
                    .pairs(&name, DEFAULT_ACL_SQL, "reading default privileges")
                    .await?
                    .into_iter()
                    .collect();
            }
            current.databases.insert(name, db);
        }
        let pe = self
            .rows(POSTGRES_DB, "SHOW password_encryption", "reading settings")
            .await?;
        current.password_encryption = pe.first().map(|r| r.get(0)).unwrap_or_default();
        Ok(current)
    }

    async fn execute(&self, statement: &Statement) -> Result<(), PgError> {
        self.client(&statement.database)
            .await?
            .batch_execute(&statement.sql)
            .await
            .map_err(|e| PgError::Query {
                what: format!("in {}", statement.database),
                message: error_text(&e),
            })
    }
}
