//! `pgherd-agent post-init HUMAN_ROLE [CONNSTRING]`: Spilo's post_init.sh, the idempotent SQL that gives
//! every cluster the roles and helper functions Zalando users rely on.
//!
//! Carried over: roles `admin`, `cron_admin`, HUMAN_ROLE and `robot_zmon`; the `user_management` functions
//! in every database that accepts connections (template1 included, so new databases inherit them);
//! pg_stat_statements where the server has it, with its reset function granted to admin; pg_switch_wal
//! for admin. Not carried over (their extensions are not part of pgherd's images; see
//! docs/spilo-compatibility.md): pg_auth_mon, pg_cron policies, set_user, file_fdw log tables, zmon_utils,
//! metric_helpers, timescaledb/postgis updates.

use std::process::ExitCode;

use anyhow::Context;
use tokio_postgres::{Client, Config, NoTls};

use crate::local::Local;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Role for human users (HUMAN_ROLE).
    pub human_role: String,
    /// libpq connection string Patroni appends; defaults to the local socket.
    pub connstring: Option<String>,
}

const ROLES_SQL: &str = include_str!("roles.sql");
const USER_MANAGEMENT_SQL: &str = include_str!("user_management.sql");

/// Patroni's connection string, with `socket_dir` as host when it has none: Patroni leaves the host out
/// when Postgres uses its compiled-in socket directory (no unix_socket_directories, as in Zalando's pods),
/// relying on libpq's default, which tokio-postgres does not have (every bootstrap failed and was retried).
fn connection_config(
    conninfo: &str,
    socket_dir: impl FnOnce() -> std::path::PathBuf,
) -> anyhow::Result<Config> {
    let mut config: Config = conninfo
        .parse()
        .context("parsing the post_init connection string")?;
    if config.get_hosts().is_empty() {
        config.host_path(socket_dir());
    }
    Ok(config)
}

/// SQL string literal (standard_conforming_strings is on in every supported version).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The per-cluster SQL with HUMAN_ROLE substituted. Pure, for tests.
pub fn roles_sql(human_role: &str) -> String {
    ROLES_SQL.replace("{human_role_literal}", &literal(human_role))
}

/// The per-database SQL with HUMAN_ROLE substituted.
pub fn database_sql(human_role: &str) -> String {
    USER_MANAGEMENT_SQL.replace("{human_role_literal}", &literal(human_role))
}

const PG_STAT_STATEMENTS_SQL: &str = r#"
DO $$
DECLARE
    f regprocedure;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_stat_statements') THEN
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public;
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 JOIN pg_catalog.pg_extension e ON e.extname = 'pg_stat_statements'
                 JOIN pg_catalog.pg_depend d ON d.objid = p.oid AND d.refobjid = e.oid AND d.deptype = 'e'
                 WHERE p.proname = 'pg_stat_statements_reset' LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO admin', f);
        END LOOP;
    END IF;
END
$$;
"#;

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let conninfo = match args.connstring {
        Some(c) => c,
        None => Local::from_env()?.conninfo("postgres"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args.human_role, &conninfo))?;
    Ok(ExitCode::SUCCESS)
}

/// Applies the post-init SQL to the cluster reachable through `conninfo`.
pub async fn run(human_role: &str, conninfo: &str) -> anyhow::Result<()> {
    let config = connection_config(conninfo, || {
        Local::from_env()
            .map(|l| l.socket_dir().to_path_buf())
            .unwrap_or_else(|_| "/var/run/postgresql".into())
    })?;
    let client = connect(&config).await?;
    client
        .batch_execute(&roles_sql(human_role))
        .await
        .context("creating the standard roles")?;
    let dbs: Vec<String> = client
        .query(
            "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname",
            &[],
        )
        .await
        .context("listing databases")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for db in dbs {
        let mut per_db = config.clone();
        per_db.dbname(&db);
        let c = connect(&per_db).await?;
        c.batch_execute(&database_sql(human_role))
            .await
            .with_context(|| format!("installing user_management in database {db}"))?;
        c.batch_execute(PG_STAT_STATEMENTS_SQL)
            .await
            .with_context(|| format!("installing pg_stat_statements in database {db}"))?;
    }
    tracing::info!(human_role, "post-init SQL applied");
    Ok(())
}

/// Connects with Spilo's session settings: local commit (a promotion must not wait for a synchronous
/// standby that may not exist yet) and a pinned search_path.
async fn connect(config: &Config) -> anyhow::Result<Client> {
    let (client, conn) = config.connect(NoTls).await.with_context(|| {
        format!(
            "connecting to database {:?}",
            config.get_dbname().unwrap_or("postgres")
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("post-init connection ended: {e}");
        }
    });
    client
        .batch_execute("SET synchronous_commit = local; SET search_path = pg_catalog")
        .await?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_string_without_host_uses_the_local_socket_directory() {
        use tokio_postgres::config::Host;
        let config = connection_config("dbname=postgres user=postgres port=5432", || {
            "/var/run/postgresql".into()
        })
        .unwrap();
        assert_eq!(
            config.get_hosts(),
            [Host::Unix("/var/run/postgresql".into())]
        );
        let config = connection_config("host=/tmp/sock port=5432", || unreachable!()).unwrap();
        assert_eq!(config.get_hosts(), [Host::Unix("/tmp/sock".into())]);
    }

    #[test]
    fn human_role_is_quoted_not_interpolated() {
        let sql = roles_sql("zalan'dos\"; DROP TABLE x; --");
        assert!(sql.contains("ARRAY['zalan''dos\"; DROP TABLE x; --', 'robot_zmon']"));
        assert!(!sql.contains("{human_role"));
        assert!(database_sql("x").contains("IN ROLE %I, admin', username, 'x')"));
        assert!(!database_sql("x").contains("{human_role"));
    }
}
