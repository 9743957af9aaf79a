//! The HTTP side: a minimal HTTP/1 server (hyper) answering `GET /metrics`, and the standalone
//! `pgherd-agent metrics-exporter` command that runs the same exporter without Patroni (benchmarks, or a
//! Postgres that `run` does not manage).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::settings::{Error, Settings};
use super::{backup, Exporter, Target};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the port (all interfaces: Prometheus scrapes the pod IP) and serves in the background; the
/// custom query file is loaded first and then watched.
pub fn start(exporter: Arc<Exporter>) -> Result<SocketAddr, Error> {
    let port = exporter.settings.port;
    let std_listener = bind(port).map_err(|source| Error::Listen { port, source })?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|source| Error::Listen { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Listen { port, source })?;
    tracing::info!(%addr, "metrics exporter listening (GET /metrics)");
    if exporter.settings.custom_queries.is_some() {
        let ex = exporter.clone();
        tokio::spawn(async move {
            ex.reload_custom().await;
            ex.watch().await;
        });
    }
    tokio::spawn(serve(exporter, listener));
    Ok(addr)
}

/// Dual-stack `[::]` when the host has IPv6, else `0.0.0.0`.
fn bind(port: u16) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        .or_else(|_| std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn serve(exporter: Arc<Exporter>, listener: tokio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let ex = exporter.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(ex.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // A client that never finishes its request head must not hold a task forever.
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    exporter: Arc<Exporter>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS, exporter.scrape().await),
        (&Method::GET, "/") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "pgherd-agent metrics exporter: GET /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found (GET /metrics)\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// `pgherd-agent metrics-exporter`: the exporter on its own, against any local Postgres.
#[derive(Debug, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// Unix socket directory of the server.
    #[arg(long, default_value = "/var/run/postgresql")]
    pub socket_dir: PathBuf,
    /// Server port (selects the socket file).
    #[arg(long, default_value_t = 5432)]
    pub pg_port: u16,
    /// Superuser that creates the monitoring role when it is missing.
    #[arg(long, default_value = "postgres")]
    pub superuser: String,
    /// PGDATA, for the volume series.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Patroni REST API base URL, for the Patroni series.
    #[arg(long)]
    pub patroni_api: Option<String>,
}

/// Runs until killed. Settings come from the same PGHERD_METRICS_* variables as under `run`.
pub fn main(args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let settings = Settings::from_env(&env)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let target = Target {
            socket_dirs: vec![args.socket_dir],
            port: args.pg_port,
            superuser: args.superuser,
            database: settings.database.clone(),
            query_timeout: settings.query_timeout,
        };
        let patroni = args.patroni_api.map(pgherd_shared::patroni::Client::new);
        let exporter = Exporter::new(settings, target, patroni, args.data_dir, backup());
        start(exporter)?;
        std::future::pending::<()>().await;
        Ok(ExitCode::SUCCESS)
    })
}
