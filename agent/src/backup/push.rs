//! `pgherd-agent backup push`: a base backup streamed from Postgres to S3.
//!
//! `pg_basebackup -D - -Ft -X fetch` writes one tar with the data directory and the WAL needed to make it
//! consistent; the stream is hashed, compressed and uploaded by multipart upload while it is produced, so
//! memory stays at one upload part whatever the database size. The manifest is written only after the data
//! object is complete and pg_basebackup has succeeded: it is the commit point.

use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio_postgres::NoTls;

use super::catalog::{self, backup_name, Lsn, Manifest, MANIFEST};
use super::store::{self, Store};
use crate::local::Local;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this member is a replica (in recovery); base backups are taken on the leader")]
    NotLeader,
    #[error("querying the local server: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("running pg_basebackup: {0}")]
    Spawn(std::io::Error),
    #[error("pg_basebackup failed ({status}): {stderr}")]
    Basebackup { status: String, stderr: String },
    #[error("pg_basebackup output lacks the {0} (stderr: {1})")]
    Output(&'static str, String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Facts about the server recorded in the manifest, read before the backup starts.
struct ServerFacts {
    server_version_num: u32,
    system_identifier: String,
    wal_segment_size: u64,
    next_xid: u64,
}

async fn facts(local: &Local, allow_replica: bool) -> Result<ServerFacts, Error> {
    let (client, conn) = local
        .conninfo("postgres")
        .parse::<tokio_postgres::Config>()?
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('server_version_num')::int, \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                    txid_snapshot_xmax(txid_current_snapshot())",
            &[],
        )
        .await?;
    if row.get::<_, bool>(0) && !allow_replica {
        return Err(Error::NotLeader);
    }
    Ok(ServerFacts {
        server_version_num: row.get::<_, i32>(1) as u32,
        system_identifier: row.get(2),
        wal_segment_size: row.get::<_, i64>(3) as u64,
        next_xid: row.get::<_, i64>(4) as u64,
    })
}

/// Takes a base backup of the local server. `member` is recorded in the manifest.
pub async fn push(
    store: &Store,
    local: &Local,
    member: &str,
    allow_replica: bool,
) -> Result<Manifest, Error> {
    let facts = facts(local, allow_replica).await?;
    let started_at = Utc::now();
    let name = backup_name(started_at);
    let codec = store.settings().codec;
    let dir = format!("{}{name}", store.settings().backups_prefix());
    let data_name = format!("data.tar.{}", codec.name());
    let data_key = format!("{dir}/{data_name}");

    let mut child = tokio::process::Command::new(local.program("pg_basebackup"))
        .args([
            "--pgdata=-",
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
            "--verbose",
            "--no-password",
        ])
        .arg(format!("--dbname={}", local.replication_conninfo()))
        .env("LC_ALL", "C")
        .env("PGAPPNAME", "pgherd_basebackup")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let (hashing, digest) = hashing(stdout);
    let meta = [("codec".to_string(), codec.name().to_string())]
        .into_iter()
        .collect();
    let upload = store
        .put_stream(&data_key, codec.encoder(BufReader::new(hashing)), &meta)
        .await;
    let status = child.wait().await.map_err(Error::Spawn)?;
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() {
        // The data object may be complete but truncated: delete it (best effort); without a manifest it
        // is never listed either way.
        let _ = store.delete(std::slice::from_ref(&data_key)).await;
        return Err(Error::Basebackup {
            status: status.to_string(),
            stderr: tail(&stderr),
        });
    }
    let stored_bytes = upload?;
    let (start_lsn, timeline) =
        parse_start(&stderr).ok_or_else(|| Error::Output("start point", tail(&stderr)))?;
    let end_lsn = parse_end(&stderr).ok_or_else(|| Error::Output("end point", tail(&stderr)))?;
    let (hasher, size_bytes) = std::mem::take(&mut *digest.lock().expect("digest lock"));
    let manifest = Manifest {
        format: 1,
        name: name.clone(),
        pg_version: (facts.server_version_num / 10000).to_string(),
        server_version_num: facts.server_version_num,
        system_identifier: facts.system_identifier,
        timeline,
        start_lsn,
        end_lsn,
        start_wal: catalog::wal_file_name(timeline, start_lsn, facts.wal_segment_size),
        wal_segment_size: facts.wal_segment_size,
        started_at,
        finished_at: Utc::now(),
        next_xid: facts.next_xid,
        data: data_name,
        codec: codec.name().into(),
        size_bytes,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        stored_bytes,
        member: member.into(),
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
    store
        .put(&format!("{dir}/{MANIFEST}"), body, &Default::default())
        .await?;
    Ok(manifest)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// `pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1`
pub fn parse_start(stderr: &str) -> Option<(Lsn, u32)> {
    let line = stderr.lines().find_map(|l| {
        l.split_once("write-ahead log start point: ")
            .map(|(_, r)| r)
    })?;
    let (lsn, tl) = line.split_once(" on timeline ")?;
    Some((lsn.trim().parse().ok()?, tl.trim().parse().ok()?))
}

/// `pg_basebackup: write-ahead log end point: 0/2000100`
pub fn parse_end(stderr: &str) -> Option<Lsn> {
    let rest = stderr
        .lines()
        .find_map(|l| l.split_once("write-ahead log end point: ").map(|(_, r)| r))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A reader that shows every chunk it passes on to `tap`: counting and hashing a stream on its way
/// (to the uploader, or to pg_restore) without a second pass over the data.
pub struct Tap<R, F> {
    inner: R,
    tap: F,
}

impl<R, F> Tap<R, F> {
    pub fn new(inner: R, tap: F) -> Self {
        Tap { inner, tap }
    }
}

impl<R: AsyncRead + Unpin, F: FnMut(&[u8]) + Unpin> AsyncRead for Tap<R, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let this = &mut *self;
            (this.tap)(&buf.filled()[before..]);
        }
        res
    }
}

/// A reader that hashes into shared state (used by restore to verify the stream it unpacks).
pub fn hashing<R: AsyncRead + Unpin>(
    inner: R,
) -> (impl AsyncRead + Unpin, Arc<Mutex<(Sha256, u64)>>) {
    let state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let shared = state.clone();
    let tap = Tap::new(inner, move |chunk: &[u8]| {
        let mut st = shared.lock().expect("digest lock");
        st.0.update(chunk);
        st.1 += chunk.len() as u64;
    });
    (tap, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pg_basebackup_verbose_output() {
        let err = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: checkpoint completed\n\
                   pg_basebackup: write-ahead log start point: 0/4000028 on timeline 3\n\
                   pg_basebackup: write-ahead log end point: 0/4000100\n\
                   pg_basebackup: base backup completed\n";
        assert_eq!(parse_start(err), Some(("0/4000028".parse().unwrap(), 3)));
        assert_eq!(parse_end(err), Some("0/4000100".parse().unwrap()));
        assert_eq!(parse_start("nothing"), None);
    }

    #[tokio::test]
    async fn hashing_reader_counts_and_hashes() {
        let data = vec![7u8; 100_000];
        let (mut r, st) = hashing(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        let (h, n) = std::mem::take(&mut *st.lock().unwrap());
        assert_eq!(n, 100_000);
        assert_eq!(h.finalize().as_slice(), Sha256::digest(&data).as_slice());
    }
}
